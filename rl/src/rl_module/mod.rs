//! RLModules: the neural networks an algorithm trains and its EnvRunners act
//! with (RLlib's `RLModule`), built from one serialisable [`ModuleSpec`] so
//! the same network exists in every process and weights move as plain bytes.
//!
//! Each module is an [`Encoder`] chosen by the observation space plus the
//! heads its algorithm needs: [`ActorCritic`] (policy and value heads, PPO and
//! APPO), [`QNetwork`] (Q-values with an optional dueling head, DQN),
//! [`SoftActorCritic`] (squashed Gaussian or categorical policy and twin Q,
//! SAC, CQL; with a state-value function, IQL). An EnvRunner only needs [`RLModule::compute_actions`], so it holds
//! any module behind the trait; a Learner is generic over the concrete module type and
//! calls its algorithm-specific forward passes directly.
//!
//! # Layout
//! - `encoder`: observation encoders (MLP, CNN for images),
//! - `actor_critic`: policy and value heads,
//! - `q_network`: Q-value head, dueling or plain, with ε-greedy acting,
//! - `noisy_linear`: NoisyNets' layer, for a Q-network that explores by
//!   weight noise,
//! - `soft_actor_critic`: squashed Gaussian (Box) or categorical (Discrete)
//!   policy, twin Q-functions, log α, and optionally V(s),
//! - `host_mlp`, `host_policy`: a plain-Rust copy of a small MLP module's
//!   policy, which EnvRunners act with instead of libtorch,
//! - `host_activation`: the activations on host vectors, forward and
//!   backward, for both,
//! - `flat_mlp`, `host_actor_critic`, `host_q_network`: forward and
//!   backward passes of a small MLP actor-critic or Q-network over a
//!   Learner's flat parameter vector, which CPU Learners train with instead
//!   of libtorch,
//! - `host_q_head`: a Q-network head's layers, plain or noisy, on the host,
//!   for both acting and training.

/// The [`RLModule`] accessors every module implements alike, over its own
/// `spec` and `var_store` fields.
macro_rules! module_fields {
    () => {
        fn spec(&self) -> &ModuleSpec {
            &self.spec
        }

        fn var_store(&self) -> &nn::VarStore {
            &self.var_store
        }

        fn var_store_mut(&mut self) -> &mut nn::VarStore {
            &mut self.var_store
        }
    };
}

mod actor_critic;
mod encoder;
mod flat_mlp;
mod host_activation;
mod host_actor_critic;
mod host_mlp;
mod host_policy;
mod host_q_head;
mod host_q_network;
mod noisy_linear;
mod q_network;
mod soft_actor_critic;

pub use actor_critic::ActorCritic;
pub use encoder::{ConvFilter, Encoder, EncoderError, EncoderSpec};
pub use flat_mlp::{FlatDense, FlatLayout, FlatMlp};
pub use host_actor_critic::{ActorCriticForward, HostActorCritic, HOST_TRAIN_MAX_PARAMETERS};
pub use host_mlp::{DenseLayer, HostMlp};
pub use host_policy::{combine_dueling, HostPolicy, QHead, HOST_FORWARD_MAX_MULTIPLY_ADDS};
pub use host_q_head::{draw_head_noise, FlatHeadLayer, HeadNoise, HostHeadLayer};
pub use host_q_network::{HostQNetwork, QNetworkForward};
pub use noisy_linear::{FactorisedNoise, NoisyLinear};
pub use q_network::{EpsilonSchedule, HeadLayer, QNetwork, ValueSupport};
pub use soft_actor_critic::{Part, PolicyExpectation, SoftActorCritic};

use std::sync::{Mutex, PoisonError};

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Device, Tensor};

use crate::obs_buffer::ObsDType;

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
    /// The CNN for image observations, `[[out_channels, [kh, kw], stride],
    /// ...]`; RLlib's default for the image size when unset.
    pub conv_filters: Option<Vec<ConvFilter>>,
    pub conv_activation: Activation,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            fcnet_hiddens: vec![64, 64],
            fcnet_activation: Activation::Tanh,
            vf_share_layers: false,
            conv_filters: None,
            conv_activation: Activation::Relu,
        }
    }
}

/// Action space as the modules and the distributions see it.
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
}

/// Which network a [`ModuleSpec`] builds, with the settings only it has.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ModuleKind {
    ActorCritic,
    QNetwork {
        dueling: bool,
        epsilon: EpsilonSchedule,
        /// C51's support; an expected-value head when absent.
        #[serde(default)]
        distributional: Option<ValueSupport>,
        /// σ₀ of NoisyNets' head layers, which then explore instead of ε;
        /// plain layers when absent.
        #[serde(default)]
        noisy_sigma0: Option<f64>,
    },
    SoftActorCritic {
        /// α before any update (log α is learned).
        initial_alpha: f64,
        /// A state-value function V(s) beside the twin Q-functions (IQL's
        /// module, as RLlib's extends its SAC module with one).
        #[serde(default)]
        value_function: bool,
    },
}

impl ModuleKind {
    /// Why this module cannot act in `space`, if it cannot.
    pub fn unsupported(&self, space: &ActionSpace) -> Option<&'static str> {
        match (self, space) {
            (ModuleKind::QNetwork { .. }, ActionSpace::Box { .. }) => {
                Some("needs a Discrete action space")
            }
            (ModuleKind::SoftActorCritic { .. }, ActionSpace::Box { low, high })
                if low.iter().chain(high).any(|b| !b.is_finite()) =>
            {
                Some("needs finite action bounds")
            }
            _ => None,
        }
    }
}

/// Everything needed to build the same module in any process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModuleSpec {
    /// The shape of one observation, as the env's observation space gives it.
    pub observation_shape: Vec<usize>,
    /// `U8` for a `uint8` box (images): its values are bytes.
    #[serde(default)]
    pub observation_dtype: ObsDType,
    pub action_space: ActionSpace,
    pub model: ModelConfig,
    pub kind: ModuleKind,
}

impl ModuleSpec {
    /// Width of a flattened observation.
    pub fn obs_dim(&self) -> usize {
        self.observation_shape.iter().product()
    }

    /// The encoder this observation space calls for; an error when the
    /// model config does not fit it (an image with neither default nor
    /// configured `conv_filters`). Check it before building modules.
    pub fn encoder(&self) -> Result<EncoderSpec, EncoderError> {
        EncoderSpec::for_observations(&self.observation_shape, self.observation_dtype, &self.model)
    }

    /// The element type sample batches keep observations in: bytes for an
    /// image encoder's `uint8` input, `f32` otherwise.
    pub fn batch_obs_dtype(&self) -> ObsDType {
        self.encoder()
            .map_or(ObsDType::F32, |encoder| encoder.input_dtype())
    }

    /// The module for acting, behind the trait (what EnvRunners hold).
    ///
    /// # Panics
    /// If [`ModuleSpec::encoder`] is an error; specs made by
    /// `env_runner::module_spec` have been checked.
    pub fn build(&self, device: Device) -> Box<dyn RLModule> {
        match self.kind {
            ModuleKind::ActorCritic => Box::new(initialise::<ActorCritic>(self, device, None)),
            ModuleKind::QNetwork { .. } => Box::new(initialise::<QNetwork>(self, device, None)),
            ModuleKind::SoftActorCritic { .. } => {
                Box::new(initialise::<SoftActorCritic>(self, device, None))
            }
        }
    }
}

/// libtorch has one random generator per process, and a module's initial
/// weights are drawn from it. Every draw at run time holds this lock, so a
/// Learner's seeded draw is never interleaved with another thread's (trials
/// of a grid search training at once): its weights follow from its seed.
static WEIGHT_DRAWS: Mutex<()> = Mutex::new(());

/// `M` as `spec` describes it on `device`, its weights drawn right after
/// seeding libtorch's generator with `seed` when there is one.
pub fn initialise<M: RLModule>(spec: &ModuleSpec, device: Device, seed: Option<i64>) -> M {
    let _drawing = WEIGHT_DRAWS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(seed) = seed {
        tch::manual_seed(seed);
    }
    M::new(spec, device)
}

/// What every module offers, whatever its heads.
pub trait RLModule: Send {
    /// Builds the module `spec` describes on `device`.
    fn new(spec: &ModuleSpec, device: Device) -> Self
    where
        Self: Sized;

    fn spec(&self) -> &ModuleSpec;

    fn var_store(&self) -> &nn::VarStore;

    fn var_store_mut(&mut self) -> &mut nn::VarStore;

    /// One action per row of `obs` (`[B, obs_dim]`) into `actions`
    /// (`[B, action_dim]`), with its log-probability under the behaviour
    /// policy in `logp` (`[B]`). `explore: false` acts greedily.
    /// `env_steps` is the run's lifetime count of sampled steps, for
    /// exploration schedules.
    fn compute_actions(
        &self,
        obs: &Tensor,
        explore: bool,
        env_steps: u64,
        rng: &mut ChaCha8Rng,
        actions: &mut [f32],
        logp: &mut [f32],
    );

    /// A host copy of the weights that acts as
    /// [`RLModule::compute_actions`] does without libtorch, for modules
    /// whose encoder is an MLP; `None` for the rest. A copy: take a new one
    /// after the weights change.
    fn host_policy(&self) -> Option<HostPolicy> {
        None
    }

    fn device(&self) -> Device {
        self.var_store().device()
    }

    /// Weights as bytes (libtorch's archive format), for shipping and checkpoints.
    fn weights(&self) -> Result<Vec<u8>, tch::TchError> {
        let mut bytes = Vec::new();
        self.var_store().save_to_stream(&mut bytes)?;
        Ok(bytes)
    }

    fn set_weights(&mut self, bytes: &[u8]) -> Result<(), tch::TchError> {
        self.var_store_mut()
            .load_from_stream(std::io::Cursor::new(bytes))
    }

    /// The trainable parameters as one flat vector, in the var store's order.
    fn flat_weights(&self) -> Vec<f32> {
        let params = self.var_store().trainable_variables();
        params.iter().flat_map(crate::to_host).collect()
    }

    /// Takes the trainable parameters from one flat vector in the var
    /// store's order, as a Learner's flat parameter buffer holds them: the
    /// cheap form for syncing EnvRunners (a copy, no archive to parse).
    fn set_flat_weights(&mut self, flat: &[f32]) -> Result<(), crate::Error> {
        let params = self.var_store().trainable_variables();
        let total: i64 = params.iter().map(Tensor::numel).map(|n| n as i64).sum();
        if total != flat.len() as i64 {
            return Err(crate::Error::Incompatible(format!(
                "{} weights for a module of {total} parameters",
                flat.len()
            )));
        }
        let source = Tensor::from_slice(flat);
        tch::no_grad(|| {
            let mut offset = 0;
            for mut param in params {
                let numel = param.numel() as i64;
                let values = source
                    .narrow(0, offset, numel)
                    .view(param.size().as_slice());
                param.copy_(&values.to_device(param.device()));
                offset += numel;
            }
        });
        Ok(())
    }
}

/// A linear layer with orthogonal weights of `gain` and zero bias: CleanRL's
/// `layer_init` (RLlib's default MLP keeps torch's default initialisation).
pub(crate) fn linear(path: nn::Path, inputs: i64, outputs: i64, gain: f64) -> nn::Linear {
    let config = nn::LinearConfig {
        ws_init: nn::Init::Orthogonal { gain },
        bs_init: Some(nn::Init::Const(0.0)),
        bias: true,
    };
    nn::linear(path, inputs, outputs, config)
}

/// Every tensor of `weights` (as [`RLModule::weights`] serialises them) as a
/// histogram named `prefix/<variable>` (`pi.0.weight`, `vf_head.bias`).
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

/// θ⁻ ← τ·θ + (1 − τ)·θ⁻ for every variable of `target` from the
/// same-named one of `source` (τ = 1 copies), for [`crate::target_network`].
pub fn polyak_update(target: &nn::VarStore, source: &nn::VarStore, tau: f64) {
    let source = source.variables();
    tch::no_grad(|| {
        for (name, mut theta_target) in target.variables() {
            let theta = &source[&name];
            if tau >= 1.0 {
                theta_target.copy_(theta);
            } else {
                let _ = theta_target.lerp_(theta, tau);
            }
        }
    });
}
