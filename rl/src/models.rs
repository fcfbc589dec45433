//! Policy and value networks (RLlib's default fully connected model).
//!
//! One [`ActorCritic`] per process: the EnvRunner uses it for inference, the
//! Learner trains it. Both build it from the same serialisable [`PolicySpec`],
//! so weights move between them as plain bytes. Layers get orthogonal init with
//! the gains CleanRL and RLlib use (√2 for hidden layers, 0.01 for the policy
//! head so the initial policy is near uniform, 1 for the value head).

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Device, Tensor};

use crate::distributions::ActionDistribution;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Tanh,
    Relu,
    Linear,
}

/// The `model:` section of a config, with RLlib's key names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub fcnet_hiddens: Vec<i64>,
    pub fcnet_activation: Activation,
    /// One trunk for policy and value heads instead of two.
    pub vf_share_layers: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            fcnet_hiddens: vec![64, 64],
            fcnet_activation: Activation::Tanh,
            vf_share_layers: false,
        }
    }
}

/// Action space as the model and the distributions see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ActionSpace {
    Discrete {
        n: usize,
    },
    /// Actions are clipped to `[low, high]` before they reach the env; the
    /// Gaussian itself is unbounded, as in RLlib.
    Box {
        low: Vec<f32>,
        high: Vec<f32>,
    },
}

impl ActionSpace {
    /// Columns one action takes in a [`crate::SampleBatch`].
    pub fn action_dim(&self) -> usize {
        match self {
            ActionSpace::Discrete { .. } => 1,
            ActionSpace::Box { low, .. } => low.len(),
        }
    }

    /// Width of the policy head's output.
    fn policy_outputs(&self) -> i64 {
        match self {
            ActionSpace::Discrete { n } => *n as i64,
            ActionSpace::Box { low, .. } => low.len() as i64,
        }
    }
}

/// Everything needed to build the same network in any process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicySpec {
    pub obs_dim: usize,
    pub action_space: ActionSpace,
    pub model: ModelConfig,
}

/// MLP policy and value heads on separate or shared trunks.
pub struct ActorCritic {
    var_store: nn::VarStore,
    policy_trunk: nn::Sequential,
    /// `None` when `vf_share_layers`: the value head reads the policy trunk.
    value_trunk: Option<nn::Sequential>,
    policy_head: nn::Linear,
    value_head: nn::Linear,
    /// State-independent log standard deviation, for Box action spaces.
    log_std: Option<Tensor>,
    spec: PolicySpec,
}

impl ActorCritic {
    pub fn new(spec: &PolicySpec, device: Device) -> Self {
        let var_store = nn::VarStore::new(device);
        let root = var_store.root();
        let hidden_gain = 2f64.sqrt();
        let trunk = |path: nn::Path| {
            let mut seq = nn::seq();
            let mut width = spec.obs_dim as i64;
            for (i, &size) in spec.model.fcnet_hiddens.iter().enumerate() {
                seq = seq.add(linear(&path / i, width, size, hidden_gain));
                seq = match spec.model.fcnet_activation {
                    Activation::Tanh => seq.add_fn(Tensor::tanh),
                    Activation::Relu => seq.add_fn(Tensor::relu),
                    Activation::Linear => seq,
                };
                width = size;
            }
            seq
        };
        let last_width = spec
            .model
            .fcnet_hiddens
            .last()
            .copied()
            .unwrap_or(spec.obs_dim as i64);
        let policy_trunk = trunk(&root / "pi");
        let value_trunk = (!spec.model.vf_share_layers).then(|| trunk(&root / "vf"));
        let outputs = spec.action_space.policy_outputs();
        let policy_head = linear(&root / "pi_head", last_width, outputs, 0.01);
        let value_head = linear(&root / "vf_head", last_width, 1, 1.0);
        let log_std = matches!(spec.action_space, ActionSpace::Box { .. })
            .then(|| root.zeros("log_std", &[outputs]));
        ActorCritic {
            var_store,
            policy_trunk,
            value_trunk,
            policy_head,
            value_head,
            log_std,
            spec: spec.clone(),
        }
    }

    pub fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    pub fn device(&self) -> Device {
        self.var_store.device()
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.var_store
    }

    /// The action distribution for a batch of observations `[B, obs_dim]`.
    pub fn distribution(&self, obs: &Tensor) -> ActionDistribution {
        self.distribution_from_features(&self.policy_trunk.forward(obs))
    }

    /// V(s) for a batch of observations, shape `[B]`.
    pub fn value(&self, obs: &Tensor) -> Tensor {
        let features = match &self.value_trunk {
            Some(trunk) => trunk.forward(obs),
            None => self.policy_trunk.forward(obs),
        };
        self.value_head.forward(&features).squeeze_dim(-1)
    }

    /// Distribution and value together, running a shared trunk only once.
    pub fn forward(&self, obs: &Tensor) -> (ActionDistribution, Tensor) {
        let policy_features = self.policy_trunk.forward(obs);
        let value_features = match &self.value_trunk {
            Some(trunk) => trunk.forward(obs),
            None => policy_features.shallow_clone(),
        };
        let value = self.value_head.forward(&value_features).squeeze_dim(-1);
        (self.distribution_from_features(&policy_features), value)
    }

    fn distribution_from_features(&self, features: &Tensor) -> ActionDistribution {
        let out = self.policy_head.forward(features);
        match &self.log_std {
            None => ActionDistribution::categorical(out),
            Some(log_std) => {
                // Materialised rather than a view of the parameter: a
                // distribution kept across optimizer steps (PPO's π_θold)
                // must not alias weights that Adam updates in place.
                let log_std = log_std.expand_as(&out).contiguous();
                ActionDistribution::diag_gaussian(out, log_std)
            }
        }
    }

    /// Weights as bytes (libtorch's archive format), for shipping and checkpoints.
    pub fn weights(&self) -> Result<Vec<u8>, tch::TchError> {
        let mut bytes = Vec::new();
        self.var_store.save_to_stream(&mut bytes)?;
        Ok(bytes)
    }

    pub fn set_weights(&mut self, bytes: &[u8]) -> Result<(), tch::TchError> {
        self.var_store.load_from_stream(std::io::Cursor::new(bytes))
    }
}

/// Every tensor of `weights` (as [`ActorCritic::weights`] serialises them)
/// as a histogram named `prefix/<variable>` (`pi.0.weight`, `vf_head.bias`).
pub fn add_weight_histograms(
    weights: &[u8],
    prefix: &str,
    out: &mut crate::metrics::Histograms,
) -> Result<(), tch::TchError> {
    for (name, tensor) in Tensor::load_multi_from_stream(std::io::Cursor::new(weights))? {
        out.insert(format!("{prefix}/{name}"), crate::to_host(&tensor));
    }
    Ok(())
}

fn linear(path: nn::Path, inputs: i64, outputs: i64, gain: f64) -> nn::Linear {
    let config = nn::LinearConfig {
        ws_init: nn::Init::Orthogonal { gain },
        bs_init: Some(nn::Init::Const(0.0)),
        bias: true,
    };
    nn::linear(path, inputs, outputs, config)
}
