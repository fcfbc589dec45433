//! Observation encoders: the trunk that turns an observation into features
//! for a module's heads. Which one a module gets depends on the observation
//! space ([`EncoderSpec::for_observations`]); heads only see
//! [`Encoder::output_dim`] features, so adding an encoder (a CNN for image
//! observations) changes no head.

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::Tensor;

use super::{linear, Activation, ModelConfig};

/// An encoder's shape, serialisable so every process builds the same one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EncoderSpec {
    /// Fully connected layers over the flattened observation (RLlib's
    /// `fcnet_hiddens`, `fcnet_activation`).
    Mlp {
        input_dim: i64,
        hiddens: Vec<i64>,
        activation: Activation,
    },
}

impl EncoderSpec {
    /// The encoder for observations of `shape`: an MLP over the flattened
    /// observation. (Image observations, rank 3, are where a CNN encoder
    /// belongs; until one exists they are flattened too.)
    pub fn for_observations(shape: &[usize], model: &ModelConfig) -> Self {
        EncoderSpec::Mlp {
            input_dim: shape.iter().product::<usize>() as i64,
            hiddens: model.fcnet_hiddens.clone(),
            activation: model.fcnet_activation,
        }
    }

    /// The same encoder over `extra` more inputs concatenated to the
    /// flattened observation (SAC's Q(s, a) reads the action too).
    pub fn with_extra_inputs(self, extra: i64) -> Self {
        match self {
            EncoderSpec::Mlp {
                input_dim,
                hiddens,
                activation,
            } => EncoderSpec::Mlp {
                input_dim: input_dim + extra,
                hiddens,
                activation,
            },
        }
    }
}

pub struct Encoder {
    net: nn::Sequential,
    output_dim: i64,
}

impl Encoder {
    /// Hidden layers get orthogonal init with gain √2, as CleanRL's agents.
    pub fn new(path: nn::Path, spec: &EncoderSpec) -> Self {
        match spec {
            EncoderSpec::Mlp {
                input_dim,
                hiddens,
                activation,
            } => {
                let mut net = nn::seq();
                let mut width = *input_dim;
                for (i, &size) in hiddens.iter().enumerate() {
                    net = net.add(linear(&path / i, width, size, 2f64.sqrt()));
                    net = match activation {
                        Activation::Tanh => net.add_fn(Tensor::tanh),
                        Activation::Relu => net.add_fn(Tensor::relu),
                        Activation::Linear => net,
                    };
                    width = size;
                }
                Encoder {
                    net,
                    output_dim: width,
                }
            }
        }
    }

    /// Features for a batch of flattened observations `[B, obs_dim]`.
    pub fn forward(&self, obs: &Tensor) -> Tensor {
        self.net.forward(obs)
    }

    /// Width of the features.
    pub fn output_dim(&self) -> i64 {
        self.output_dim
    }
}
