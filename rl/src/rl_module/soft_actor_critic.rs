//! SAC's module (Haarnoja et al. 2018; RLlib's default SAC RLModule): a
//! tanh-squashed Gaussian policy and twin Q-functions Q(s, a), each on an
//! encoder of its own, plus the entropy temperature log α.
//!
//! The policy acts in (−1, 1)^d and actions are rescaled to the Box's bounds
//! for the env, so the replay buffer holds env-scale actions; the Q-functions
//! read actions back in (−1, 1)^d ([`SoftActorCritic::normalize_actions`]),
//! the same scale the policy's reparameterised samples have. log α is a
//! variable of the module so checkpoints and weight syncs carry it with the
//! networks. Variables are created policy first, then the Q-functions, then
//! log α, so each part is one contiguous range of the flat parameter buffer
//! ([`SoftActorCritic::parts`]), which lets SAC's Learner give each part its
//! own loss and learning rate.

use rand_chacha::ChaCha8Rng;
use tch::nn::{self, Module};
use tch::{Device, Tensor};

use super::{linear, ActionSpace, Encoder, ModuleKind, ModuleSpec, RLModule};
use crate::distributions::SquashedGaussian;

/// Bounds on the policy's log σ (as Stable-Baselines3 and RLlib), so σ
/// neither collapses nor explodes early in training.
const LOG_STD_MIN: f64 = -20.0;
const LOG_STD_MAX: f64 = 2.0;

struct QFunction {
    encoder: Encoder,
    head: nn::Linear,
}

impl QFunction {
    fn new(path: nn::Path, spec: &ModuleSpec, action_dim: i64) -> Self {
        let encoder = Encoder::new(
            &path / "encoder",
            &spec
                .encoder()
                .expect("module spec with a valid encoder")
                .with_extra_inputs(action_dim),
        );
        let head = linear(&path / "head", encoder.output_dim(), 1, 1.0);
        QFunction { encoder, head }
    }

    fn forward(&self, obs_actions: &Tensor) -> Tensor {
        self.head
            .forward(&self.encoder.forward(obs_actions))
            .squeeze_dim(-1)
    }
}

pub struct SoftActorCritic {
    var_store: nn::VarStore,
    policy_encoder: Encoder,
    /// Means then log σ, `2·d` outputs.
    policy_head: nn::Linear,
    qf: QFunction,
    qf_twin: QFunction,
    log_alpha: Tensor,
    /// Trainable variables in each part: policy, Q-functions, log α.
    part_lengths: [usize; 3],
    /// The Box's midpoint and half-width per dimension, on the module's
    /// device (for the Learner's batches) and on the host (for rescaling
    /// sampled actions without a device round trip per step).
    action_center: Tensor,
    action_half_range: Tensor,
    host_center: Vec<f32>,
    host_half_range: Vec<f32>,
    action_dim: i64,
    spec: ModuleSpec,
}

/// One part of the module: its trainable variables, in flat-buffer order.
pub struct Part {
    pub variables: Vec<Tensor>,
}

impl SoftActorCritic {
    /// π(·|s) for a batch of observations, in (−1, 1)^d.
    pub fn policy(&self, obs: &Tensor) -> SquashedGaussian {
        let out = self.policy_head.forward(&self.policy_encoder.forward(obs));
        let halves = out.split(self.action_dim, -1);
        SquashedGaussian {
            mean: halves[0].shallow_clone(),
            log_std: halves[1].clamp(LOG_STD_MIN, LOG_STD_MAX),
        }
    }

    /// (Q₁(s, a), Q₂(s, a)), `[B]` each, for actions in (−1, 1)^d.
    pub fn q_values(&self, obs: &Tensor, actions: &Tensor) -> (Tensor, Tensor) {
        let input = Tensor::cat(&[obs, actions], 1);
        (self.qf.forward(&input), self.qf_twin.forward(&input))
    }

    /// log α, shape `[1]`.
    pub fn log_alpha(&self) -> &Tensor {
        &self.log_alpha
    }

    /// Env-scale actions (as the replay buffer holds them) in (−1, 1)^d.
    pub fn normalize_actions(&self, actions: &Tensor) -> Tensor {
        (actions - &self.action_center) / &self.action_half_range
    }

    /// The policy, the two Q-functions and log α, each with its trainable
    /// variables; together they are the flat parameter buffer, in order.
    pub fn parts(&self) -> [Part; 3] {
        let mut variables = self.var_store.trainable_variables().into_iter();
        self.part_lengths.map(|n| Part {
            variables: variables.by_ref().take(n).collect(),
        })
    }
}

impl RLModule for SoftActorCritic {
    /// # Panics
    /// If `spec` is not a SAC module over a Box with finite bounds; SAC
    /// refuses any other space before a module is built.
    fn new(spec: &ModuleSpec, device: Device) -> Self {
        let ModuleKind::SoftActorCritic { initial_alpha } = spec.kind else {
            panic!("SoftActorCritic built from a {:?} spec", spec.kind);
        };
        let ActionSpace::Box { low, high } = &spec.action_space else {
            panic!("SoftActorCritic needs a Box action space");
        };
        let var_store = nn::VarStore::new(device);
        let root = var_store.root();
        let count = || var_store.trainable_variables().len();
        let action_dim = low.len() as i64;
        let policy_encoder = Encoder::new(
            &root / "pi",
            &spec.encoder().expect("module spec with a valid encoder"),
        );
        let policy_head = linear(
            &root / "pi_head",
            policy_encoder.output_dim(),
            2 * action_dim,
            0.01,
        );
        let policy_len = count();
        let qf = QFunction::new(&root / "qf", spec, action_dim);
        let qf_twin = QFunction::new(&root / "qf_twin", spec, action_dim);
        let critics_len = count() - policy_len;
        let log_alpha = root.var("log_alpha", &[1], nn::Init::Const(initial_alpha.ln()));
        let bound = |values: &[f32]| {
            Tensor::from_slice(values)
                .view([1, action_dim])
                .to_device(device)
        };
        let center: Vec<f32> = low.iter().zip(high).map(|(l, h)| (l + h) / 2.0).collect();
        let half_range: Vec<f32> = low.iter().zip(high).map(|(l, h)| (h - l) / 2.0).collect();
        SoftActorCritic {
            var_store,
            policy_encoder,
            policy_head,
            qf,
            qf_twin,
            log_alpha,
            part_lengths: [policy_len, critics_len, 1],
            action_center: bound(&center),
            action_half_range: bound(&half_range),
            host_center: center,
            host_half_range: half_range,
            action_dim,
            spec: spec.clone(),
        }
    }

    module_fields!();

    /// A squashed-Gaussian draw (tanh of the mean with `explore == false`),
    /// rescaled to the Box; `logp` is its density in (−1, 1)^d.
    fn compute_actions(
        &self,
        obs: &Tensor,
        explore: bool,
        _env_steps: u64,
        rng: &mut ChaCha8Rng,
        actions: &mut [f32],
        logp: &mut [f32],
    ) {
        self.policy(obs).sample_into(rng, explore, actions, logp);
        let d = self.host_center.len();
        for (i, action) in actions.iter_mut().enumerate() {
            *action = self.host_center[i % d] + self.host_half_range[i % d] * *action;
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use tch::Kind;

    use super::*;
    use crate::rl_module::ModelConfig;

    fn module() -> SoftActorCritic {
        SoftActorCritic::new(
            &ModuleSpec {
                observation_shape: vec![3],
                observation_dtype: Default::default(),
                action_space: ActionSpace::Box {
                    low: vec![-2.0, 0.0],
                    high: vec![2.0, 1.0],
                },
                model: ModelConfig::default(),
                kind: ModuleKind::SoftActorCritic { initial_alpha: 0.5 },
            },
            Device::Cpu,
        )
    }

    /// Actions land inside the Box and map back into (−1, 1); the parts
    /// cover the flat buffer in order with log α last, starting at α₀.
    #[test]
    fn acts_within_the_box_and_splits_into_contiguous_parts() {
        let sac = module();
        let obs = Tensor::randn([64, 3], (Kind::Float, Device::Cpu));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (mut actions, mut logp) = (vec![0.0; 128], vec![0.0; 64]);
        sac.compute_actions(&obs, true, 0, &mut rng, &mut actions, &mut logp);
        for pair in actions.chunks(2) {
            assert!((-2.0..=2.0).contains(&pair[0]) && (0.0..=1.0).contains(&pair[1]));
        }
        assert!(logp.iter().all(|l| l.is_finite()));
        let normalized = sac.normalize_actions(&Tensor::from_slice(&actions).view([64, 2]));
        assert!(normalized.abs().max().double_value(&[]) <= 1.0);

        let parts = sac.parts();
        let all = sac.var_store().trainable_variables();
        let lengths: Vec<usize> = parts.iter().map(|p| p.variables.len()).collect();
        assert_eq!(lengths.iter().sum::<usize>(), all.len());
        assert_eq!(lengths[2], 1);
        let alpha = parts[2].variables[0].exp().double_value(&[0]);
        assert!((alpha - 0.5).abs() < 1e-6);
        // Greedy acting is deterministic.
        let (mut first, mut second) = (vec![0.0; 128], vec![0.0; 128]);
        sac.compute_actions(&obs, false, 0, &mut rng, &mut first, &mut logp);
        sac.compute_actions(&obs, false, 0, &mut rng, &mut second, &mut logp);
        assert_eq!(first, second);
    }
}
