//! The actor-critic module (RLlib's default PPO module): a policy head and a
//! value head on separate encoders, or on one shared encoder with
//! `vf_share_layers`. Heads get orthogonal init with CleanRL's gains: 0.01
//! for the policy head, so the initial policy is near uniform, and 1 for the
//! value head.

use rand_chacha::ChaCha8Rng;
use tch::nn::{self, Module};
use tch::{Device, Tensor};

use super::{linear, ActionSpace, DenseLayer, Encoder, HostPolicy, ModuleSpec, RLModule};
use crate::distributions::ActionDistribution;

pub struct ActorCritic {
    var_store: nn::VarStore,
    policy_encoder: Encoder,
    /// `None` when `vf_share_layers`: the value head reads the policy encoder.
    value_encoder: Option<Encoder>,
    policy_head: nn::Linear,
    value_head: nn::Linear,
    /// State-independent log standard deviation, for Box action spaces.
    log_std: Option<Tensor>,
    spec: ModuleSpec,
}

impl ActorCritic {
    /// The action distribution for a batch of observations `[B, obs_dim]`.
    pub fn distribution(&self, obs: &Tensor) -> ActionDistribution {
        self.distribution_from_features(&self.policy_encoder.forward(obs))
    }

    /// V(s) for a batch of observations, shape `[B]`.
    pub fn value(&self, obs: &Tensor) -> Tensor {
        let features = match &self.value_encoder {
            Some(encoder) => encoder.forward(obs),
            None => self.policy_encoder.forward(obs),
        };
        self.value_head.forward(&features).squeeze_dim(-1)
    }

    /// Distribution and value together, running a shared encoder only once.
    pub fn forward(&self, obs: &Tensor) -> (ActionDistribution, Tensor) {
        let policy_features = self.policy_encoder.forward(obs);
        let value_features = match &self.value_encoder {
            Some(encoder) => encoder.forward(obs),
            None => policy_features.shallow_clone(),
        };
        let value = self.value_head.forward(&value_features).squeeze_dim(-1);
        (self.distribution_from_features(&policy_features), value)
    }

    /// The encoders, heads and log σ, for [`super::HostActorCritic::of`].
    pub(crate) fn parts(
        &self,
    ) -> (
        &Encoder,
        Option<&Encoder>,
        &nn::Linear,
        &nn::Linear,
        Option<&Tensor>,
    ) {
        (
            &self.policy_encoder,
            self.value_encoder.as_ref(),
            &self.policy_head,
            &self.value_head,
            self.log_std.as_ref(),
        )
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
}

impl RLModule for ActorCritic {
    fn new(spec: &ModuleSpec, device: Device) -> Self {
        let var_store = nn::VarStore::new(device);
        let root = var_store.root();
        let encoder = spec.encoder().expect("module spec with a valid encoder");
        let policy_encoder = Encoder::new(&root / "pi", &encoder);
        let value_encoder =
            (!spec.model.vf_share_layers).then(|| Encoder::new(&root / "vf", &encoder));
        let width = policy_encoder.output_dim();
        let outputs = match &spec.action_space {
            ActionSpace::Discrete { n } => *n as i64,
            ActionSpace::Box { low, .. } => low.len() as i64,
        };
        let policy_head = linear(&root / "pi_head", width, outputs, 0.01);
        let value_head = linear(&root / "vf_head", width, 1, 1.0);
        let log_std = matches!(spec.action_space, ActionSpace::Box { .. })
            .then(|| root.zeros("log_std", &[outputs]));
        ActorCritic {
            var_store,
            policy_encoder,
            value_encoder,
            policy_head,
            value_head,
            log_std,
            spec: spec.clone(),
        }
    }

    module_fields!();

    fn compute_actions(
        &self,
        obs: &Tensor,
        explore: bool,
        _env_steps: u64,
        rng: &mut ChaCha8Rng,
        actions: &mut [f32],
        logp: &mut [f32],
    ) {
        self.distribution(obs)
            .sample_into(rng, explore, actions, logp);
    }

    fn host_policy(&self) -> Option<HostPolicy> {
        let encoder = self.policy_encoder.host_mlp()?;
        let head = DenseLayer::of(&self.policy_head);
        Some(match &self.log_std {
            None => HostPolicy::Categorical { encoder, head },
            Some(log_std) => HostPolicy::Gaussian {
                encoder,
                head,
                log_std: crate::to_host(log_std),
            },
        })
    }
}
