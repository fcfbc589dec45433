//! The training half of a small MLP [`ActorCritic`] on the host: forward and
//! backward passes over a Learner's flat parameter vector, so that a CPU
//! Learner can run its minibatch steps without libtorch's per-op dispatch
//! (see [`super::flat_mlp`]). It holds no weights, only where each layer
//! sits in the flat vector, so it stays valid while the Learner updates the
//! parameters; the libtorch module remains the model of record.
//!
//! The same network as the module: policy and value encoders (or one shared
//! encoder with `vf_share_layers`), a policy head giving logits or the
//! Gaussian mean, the state-independent log σ for Box actions, and a value
//! head.

use super::flat_mlp::{FlatDense, FlatLayout, FlatMlp};
use super::{ActorCritic, Encoder, RLModule};
use crate::host_distribution::{DistributionGrad, HostDistribution};

/// Above this many parameters the module trains on libtorch: its matrix
/// kernels then outrun the plain loops by more than its dispatch costs
/// (the bound of [`super::HOST_FORWARD_MAX_MULTIPLY_ADDS`], per row).
pub const HOST_TRAIN_MAX_PARAMETERS: usize = super::HOST_FORWARD_MAX_MULTIPLY_ADDS;

pub struct HostActorCritic {
    policy_encoder: FlatMlp,
    /// `None` when `vf_share_layers`: the value head reads the policy features.
    value_encoder: Option<FlatMlp>,
    policy_head: FlatDense,
    value_head: FlatDense,
    /// Offset of log σ, for Box action spaces.
    log_std: Option<usize>,
    parameters: usize,
}

/// A forward pass: the distribution and values, and what the backward pass
/// reads (every encoder layer's output).
pub struct ActorCriticForward {
    pub distribution: HostDistribution,
    /// V(s_t), `[B]`.
    pub values: Vec<f32>,
    policy_outputs: Vec<Vec<f32>>,
    value_outputs: Option<Vec<Vec<f32>>>,
    rows: usize,
}

impl HostActorCritic {
    /// `module`'s layers located in its flat parameter vector; `None` for a
    /// CNN encoder or a module above [`HOST_TRAIN_MAX_PARAMETERS`].
    pub fn of(module: &ActorCritic) -> Option<Self> {
        let layout = FlatLayout::of(module.var_store());
        let (policy_encoder, value_encoder, policy_head, value_head, log_std) = module.parts();
        let encoder = |encoder: &Encoder| FlatMlp::locate(encoder, &layout);
        let host = HostActorCritic {
            policy_encoder: encoder(policy_encoder)?,
            value_encoder: match value_encoder {
                Some(value_encoder) => Some(encoder(value_encoder)?),
                None => None,
            },
            policy_head: FlatDense::locate(policy_head, &layout)?,
            value_head: FlatDense::locate(value_head, &layout)?,
            log_std: match log_std {
                Some(log_std) => Some(layout.offset(log_std)?),
                None => None,
            },
            parameters: layout.len(),
        };
        let located = host.policy_encoder.parameters()
            + host.value_encoder.as_ref().map_or(0, FlatMlp::parameters)
            + host.policy_head.parameters()
            + host.value_head.parameters()
            + host.log_std.map_or(0, |_| host.policy_head.outputs());
        // Every parameter accounted for, or the gradient would miss some.
        (located == host.parameters && host.parameters <= HOST_TRAIN_MAX_PARAMETERS).then_some(host)
    }

    /// Length of the flat parameter (and gradient) vector.
    pub fn parameters(&self) -> usize {
        self.parameters
    }

    /// π(·|s) and V(s) for `rows` flattened observations `obs`.
    pub fn forward(&self, params: &[f32], obs: &[f32], rows: usize) -> ActorCriticForward {
        let policy_outputs = self.policy_encoder.forward(params, obs, rows);
        let value_outputs = self
            .value_encoder
            .as_ref()
            .map(|encoder| encoder.forward(params, obs, rows));
        let policy_features = features(&policy_outputs);
        let value_features = value_outputs.as_deref().map_or(policy_features, features);
        let values = self.value_head.forward(params, value_features, rows);
        let head = self.policy_head.forward(params, policy_features, rows);
        let distribution = match self.log_std {
            None => HostDistribution::categorical(head, self.policy_head.outputs()),
            Some(offset) => {
                let log_std = params[offset..offset + self.policy_head.outputs()].to_vec();
                HostDistribution::diag_gaussian(head, log_std)
            }
        };
        ActorCriticForward {
            distribution,
            values,
            policy_outputs,
            value_outputs,
            rows,
        }
    }

    /// Adds into `grad` the gradient of a loss whose gradient with respect to
    /// the distribution's inputs is `d_distribution` and with respect to the
    /// values `d_values`, at the forward pass `forward`.
    pub fn backward(
        &self,
        params: &[f32],
        forward: &ActorCriticForward,
        d_distribution: DistributionGrad,
        d_values: &[f32],
        grad: &mut [f32],
    ) {
        let rows = forward.rows;
        let policy_features = features(&forward.policy_outputs);
        let value_features = forward
            .value_outputs
            .as_deref()
            .map_or(policy_features, features);
        let mut d_policy_features = self
            .policy_head
            .backward(
                params,
                policy_features,
                &d_distribution.d_head,
                rows,
                grad,
                true,
            )
            .expect("asked for");
        let d_value_features = self
            .value_head
            .backward(params, value_features, d_values, rows, grad, true)
            .expect("asked for");
        if let Some(offset) = self.log_std {
            let d_log_std = &d_distribution.d_log_std;
            grad[offset..offset + d_log_std.len()]
                .iter_mut()
                .zip(d_log_std)
                .for_each(|(g, d)| *g += d);
        }
        match (&self.value_encoder, &forward.value_outputs) {
            (Some(encoder), Some(outputs)) => {
                encoder.backward(params, outputs, d_value_features, rows, grad)
            }
            _ => d_policy_features
                .iter_mut()
                .zip(&d_value_features)
                .for_each(|(d, v)| *d += v),
        }
        self.policy_encoder.backward(
            params,
            &forward.policy_outputs,
            d_policy_features,
            rows,
            grad,
        );
    }
}

/// The features of an encoder's forward pass: its last layer's output.
fn features(outputs: &[Vec<f32>]) -> &[f32] {
    outputs.last().expect("at least the input")
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor};

    use super::*;
    use crate::distributions::ActionDistribution;
    use crate::learner::{Learner, LearnerConfig};
    use crate::rl_module::{ActionSpace, ModelConfig, ModuleKind, ModuleSpec};
    use crate::ObsDType;

    fn spec(action_space: ActionSpace, model: ModelConfig) -> ModuleSpec {
        ModuleSpec {
            observation_shape: vec![4],
            observation_dtype: ObsDType::F32,
            action_space,
            model,
            kind: ModuleKind::ActorCritic,
        }
    }

    /// In a Learner the parameters view one flat buffer; the layout found
    /// there is the one the buffer has, so the host forward pass over the
    /// Learner's flat weights gives the module's distribution and values.
    #[test]
    fn layout_of_a_learners_module_is_its_flat_buffer() {
        for space in [
            ActionSpace::Discrete { n: 2 },
            ActionSpace::Box {
                low: vec![-2.0],
                high: vec![2.0],
            },
        ] {
            let config = LearnerConfig {
                module: spec(space.clone(), ModelConfig::default()),
                lr: 1e-3,
                grad_clip: None,
                use_gpu: false,
                seed: 1,
            };
            let learner = Learner::<ActorCritic>::new(&config);
            let host = HostActorCritic::of(learner.module()).expect("a small MLP");
            let theta = learner.flat_weights();
            assert_eq!(host.parameters(), theta.len());
            let obs = Tensor::randn([9, 4], (Kind::Float, Device::Cpu));
            let (dist, values) = tch::no_grad(|| learner.module().forward(&obs));
            let forward = host.forward(&theta, &crate::to_host(&obs), 9);
            let close = |a: &[f32], b: &[f32]| {
                assert_eq!(a.len(), b.len());
                for (x, y) in a.iter().zip(b) {
                    assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
                }
            };
            close(&crate::to_host(&values), &forward.values);
            match (&dist, &forward.distribution) {
                (
                    ActionDistribution::Categorical { log_probs },
                    HostDistribution::Categorical {
                        log_probs: host, ..
                    },
                ) => close(&crate::to_host(log_probs), host),
                (
                    ActionDistribution::DiagGaussian { mean, .. },
                    HostDistribution::DiagGaussian { mean: host, .. },
                ) => close(&crate::to_host(mean), host),
                _ => panic!("{space:?}: distributions of different kinds"),
            }
        }
    }

    /// Large MLPs and CNN encoders train on libtorch.
    #[test]
    fn large_and_convolutional_modules_train_on_libtorch() {
        let discrete = ActionSpace::Discrete { n: 2 };
        let build = |spec: ModuleSpec| ActorCritic::new(&spec, Device::Cpu);
        assert!(
            HostActorCritic::of(&build(spec(discrete.clone(), ModelConfig::default()))).is_some()
        );
        let large = ModelConfig {
            fcnet_hiddens: vec![512, 512],
            ..ModelConfig::default()
        };
        assert!(HostActorCritic::of(&build(spec(discrete.clone(), large))).is_none());
        let image = ModuleSpec {
            observation_shape: vec![10, 10, 3],
            observation_dtype: ObsDType::U8,
            ..spec(discrete, ModelConfig::default())
        };
        assert!(HostActorCritic::of(&build(image)).is_none());
    }
}
