//! SAC's module (Haarnoja et al. 2018; RLlib's default SAC RLModule): a
//! policy and twin Q-functions, each on an encoder of its own, plus the
//! entropy temperature log α. For a Box action space the policy is a
//! tanh-squashed Gaussian and each Q-function reads (s, a); for a Discrete
//! one (Christodoulou 2019, as RLlib's SAC for Discrete spaces) the policy
//! is a categorical over the n actions and each Q-function gives Q(s, ·) for
//! all n at once, so the losses take their expectations over π exactly
//! ([`PolicyExpectation`]).
//!
//! A Box policy acts in (−1, 1)^d and actions are rescaled to the Box's
//! bounds for the env, so the replay buffer holds env-scale actions; the
//! Q-functions read actions back in (−1, 1)^d
//! ([`SoftActorCritic::replayed_q`]), the same scale the policy's
//! reparameterised draws have. log α is a
//! variable of the module so checkpoints and weight syncs carry it with the
//! networks.
//!
//! IQL's module is this one with a state-value function V(s) on an encoder
//! of its own (`value_function` in the spec), as RLlib's IQL module extends
//! its SAC module; IQL leaves log α at its initial value.
//!
//! Variables are created policy first, then the Q-functions, then log α,
//! then V, so each part is one contiguous range of the flat parameter buffer
//! ([`SoftActorCritic::parts`]), which lets SAC's and IQL's Learners give
//! each part its own loss and learning rate.

use rand_chacha::ChaCha8Rng;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use super::{linear, ActionSpace, Encoder, ModuleKind, ModuleSpec, RLModule};
use crate::distributions::{sample_categorical_rows, SquashedGaussian};

/// Bounds on the policy's log σ (as Stable-Baselines3 and RLlib), so σ
/// neither collapses nor explodes early in training.
const LOG_STD_MIN: f64 = -20.0;
const LOG_STD_MAX: f64 = 2.0;

/// A Q-function: Q(s, a) from the observation and a Box action, or
/// Q(s, ·) for every action of a Discrete space from the observation alone.
struct QFunction {
    encoder: Encoder,
    head: nn::Linear,
}

impl QFunction {
    fn new(path: nn::Path, spec: &ModuleSpec, actions: &Actions) -> Self {
        let (extra_inputs, outputs) = match actions {
            Actions::Box { dim, .. } => (*dim, 1),
            Actions::Discrete { n } => (0, *n),
        };
        let encoder = Encoder::new(
            &path / "encoder",
            &spec
                .encoder()
                .expect("module spec with a valid encoder")
                .with_extra_inputs(extra_inputs),
        );
        let head = linear(&path / "head", encoder.output_dim(), outputs, 1.0);
        QFunction { encoder, head }
    }

    fn forward(&self, input: &Tensor) -> Tensor {
        self.head.forward(&self.encoder.forward(input))
    }
}

/// V(s) from the observation alone.
struct StateValue {
    encoder: Encoder,
    head: nn::Linear,
}

/// The action space as the module acts in it.
enum Actions {
    /// d dimensions; the Box's midpoint and half-width per dimension on
    /// the module's device (for the Learner's batches) and on the host (for
    /// rescaling sampled actions without a device round trip per step).
    Box {
        dim: i64,
        center: Tensor,
        half_range: Tensor,
        host_center: Vec<f32>,
        host_half_range: Vec<f32>,
    },
    Discrete {
        n: i64,
    },
}

/// What SAC's losses take expectations over the policy π(·|s) with, per
/// state, over K actions: one reparameterised draw ã ~ π(·|s) for a Box
/// (K = 1, weight 1, its gradient flowing through ã), or every action of a
/// Discrete space weighted by its probability (K = n; Christodoulou 2019,
/// "Soft Actor-Critic for Discrete Action Settings"), exact where the Box
/// case samples.
pub struct PolicyExpectation {
    /// The weights of the K actions, `[B, K]`: 1, or π(a|s) (differentiable).
    pub weights: Tensor,
    /// log π of the K actions, `[B, K]`.
    pub logp: Tensor,
    /// The draw ã in (−1, 1)^d, `[B, d]` (Box only).
    draws: Option<Tensor>,
}

pub struct SoftActorCritic {
    var_store: nn::VarStore,
    policy_encoder: Encoder,
    /// A Box policy's means then log σ (`2·d` outputs); a Discrete one's
    /// logits (`n`).
    policy_head: nn::Linear,
    qf: QFunction,
    qf_twin: QFunction,
    log_alpha: Tensor,
    /// V(s), IQL's.
    value_function: Option<StateValue>,
    /// Trainable variables in each part: policy, Q-functions, log α, V (none
    /// without one).
    part_lengths: [usize; 4],
    actions: Actions,
    spec: ModuleSpec,
}

/// One part of the module: its trainable variables, in flat-buffer order.
pub struct Part {
    pub variables: Vec<Tensor>,
}

impl SoftActorCritic {
    /// The policy's output for a batch of observations.
    fn policy_out(&self, obs: &Tensor) -> Tensor {
        self.policy_head.forward(&self.policy_encoder.forward(obs))
    }

    /// A Box policy π(·|s), in (−1, 1)^d.
    fn squashed_gaussian(&self, out: &Tensor, dim: i64) -> SquashedGaussian {
        let halves = out.split(dim, -1);
        SquashedGaussian {
            mean: halves[0].shallow_clone(),
            log_std: halves[1].clamp(LOG_STD_MIN, LOG_STD_MAX),
        }
    }

    /// What π(·|s) is made from, as RLlib's `action_dist_inputs`: a Box
    /// policy's means and clamped log σ side by side, a Discrete one's
    /// logits.
    pub fn action_dist_inputs(&self, obs: &Tensor) -> Tensor {
        let out = self.policy_out(obs);
        match &self.actions {
            Actions::Box { dim, .. } => {
                let policy = self.squashed_gaussian(&out, *dim);
                Tensor::cat(&[&policy.mean, &policy.log_std], -1)
            }
            Actions::Discrete { .. } => out,
        }
    }

    /// The expectation over π(·|s) the losses take at `obs`; a Box
    /// policy's draw uses libtorch's generator.
    pub fn policy_expectation(&self, obs: &Tensor) -> PolicyExpectation {
        let out = self.policy_out(obs);
        match &self.actions {
            Actions::Box { dim, .. } => {
                let policy = self.squashed_gaussian(&out, *dim);
                let (draws, logp) = policy.rsample(&policy.mean.randn_like());
                PolicyExpectation {
                    weights: logp.ones_like().unsqueeze(-1),
                    logp: logp.unsqueeze(-1),
                    draws: Some(draws),
                }
            }
            Actions::Discrete { .. } => {
                let logp = out.log_softmax(-1, Kind::Float);
                PolicyExpectation {
                    weights: logp.exp(),
                    logp,
                    draws: None,
                }
            }
        }
    }

    /// (Q₁, Q₂) of the expectation's K actions at `obs`, `[B, K]` each.
    pub fn expected_q(&self, obs: &Tensor, policy: &PolicyExpectation) -> (Tensor, Tensor) {
        match &policy.draws {
            Some(draws) => {
                let input = Tensor::cat(&[obs, draws], 1);
                (self.qf.forward(&input), self.qf_twin.forward(&input))
            }
            None => (self.qf.forward(obs), self.qf_twin.forward(obs)),
        }
    }

    /// (Q₁(s, a), Q₂(s, a)), `[B]` each, for replayed actions as the
    /// replay buffer holds them: env-scale for a Box (read back into
    /// (−1, 1)^d, the scale of the policy's draws), indices for Discrete.
    pub fn replayed_q(&self, obs: &Tensor, actions: &Tensor) -> (Tensor, Tensor) {
        match &self.actions {
            Actions::Box { .. } => self.box_q(obs, &self.unit_actions(actions)),
            Actions::Discrete { .. } => {
                let index = actions.to_kind(Kind::Int64).view([-1, 1]);
                let q = |f: &QFunction| f.forward(obs).gather(1, &index, false).squeeze_dim(-1);
                (q(&self.qf), q(&self.qf_twin))
            }
        }
    }

    /// Env-scale Box actions `[B, d]` in the policy's (−1, 1)^d.
    ///
    /// # Panics
    /// For a Discrete module.
    pub fn unit_actions(&self, actions: &Tensor) -> Tensor {
        let Actions::Box {
            center, half_range, ..
        } = &self.actions
        else {
            panic!("unit_actions of a Discrete SoftActorCritic");
        };
        (actions - center) / half_range
    }

    /// (Q₁(s, a), Q₂(s, a)), `[B]` each, for Box actions in (−1, 1)^d
    /// (CQL's uniformly drawn ones).
    pub fn box_q(&self, obs: &Tensor, unit_actions: &Tensor) -> (Tensor, Tensor) {
        let input = Tensor::cat(&[obs, unit_actions], 1);
        let q = |f: &QFunction| f.forward(&input).squeeze_dim(-1);
        (q(&self.qf), q(&self.qf_twin))
    }

    /// log π(a|s) `[B]` of env-scale Box actions (CQL's behaviour cloning
    /// of recorded actions).
    ///
    /// # Panics
    /// For a Discrete module.
    pub fn box_log_prob(&self, obs: &Tensor, actions: &Tensor) -> Tensor {
        let Actions::Box { dim, .. } = &self.actions else {
            panic!("box_log_prob of a Discrete SoftActorCritic");
        };
        self.squashed_gaussian(&self.policy_out(obs), *dim)
            .log_prob(&self.unit_actions(actions))
    }

    /// log α, shape `[1]`.
    pub fn log_alpha(&self) -> &Tensor {
        &self.log_alpha
    }

    /// V(s) `[B]`.
    ///
    /// # Panics
    /// For a module built without a value function (SAC's).
    pub fn value(&self, obs: &Tensor) -> Tensor {
        let value = self
            .value_function
            .as_ref()
            .expect("value of a SoftActorCritic without a value function");
        value
            .head
            .forward(&value.encoder.forward(obs))
            .squeeze_dim(-1)
    }

    /// The policy, the two Q-functions, log α and V (empty without one),
    /// each with its trainable variables; together they are the flat
    /// parameter buffer, in order.
    pub fn parts(&self) -> [Part; 4] {
        let mut variables = self.var_store.trainable_variables().into_iter();
        self.part_lengths.map(|n| Part {
            variables: variables.by_ref().take(n).collect(),
        })
    }
}

impl RLModule for SoftActorCritic {
    /// # Panics
    /// If `spec` is not a SAC module over a Discrete space or a Box with
    /// finite bounds; SAC refuses any other space before a module is built.
    fn new(spec: &ModuleSpec, device: Device) -> Self {
        let ModuleKind::SoftActorCritic {
            initial_alpha,
            value_function,
        } = spec.kind
        else {
            panic!("SoftActorCritic built from a {:?} spec", spec.kind);
        };
        let actions = match &spec.action_space {
            ActionSpace::Box { low, high } => {
                let dim = low.len() as i64;
                let bound =
                    |values: &[f32]| Tensor::from_slice(values).view([1, dim]).to_device(device);
                let center: Vec<f32> = low.iter().zip(high).map(|(l, h)| (l + h) / 2.0).collect();
                let half_range: Vec<f32> =
                    low.iter().zip(high).map(|(l, h)| (h - l) / 2.0).collect();
                Actions::Box {
                    dim,
                    center: bound(&center),
                    half_range: bound(&half_range),
                    host_center: center,
                    host_half_range: half_range,
                }
            }
            ActionSpace::Discrete { n } => Actions::Discrete { n: *n as i64 },
        };
        let var_store = nn::VarStore::new(device);
        let root = var_store.root();
        let count = || var_store.trainable_variables().len();
        let policy_encoder = Encoder::new(
            &root / "pi",
            &spec.encoder().expect("module spec with a valid encoder"),
        );
        let policy_outputs = match &actions {
            Actions::Box { dim, .. } => 2 * dim,
            Actions::Discrete { n } => *n,
        };
        let policy_head = linear(
            &root / "pi_head",
            policy_encoder.output_dim(),
            policy_outputs,
            0.01,
        );
        let policy_len = count();
        let qf = QFunction::new(&root / "qf", spec, &actions);
        let qf_twin = QFunction::new(&root / "qf_twin", spec, &actions);
        let critics_len = count() - policy_len;
        let log_alpha = root.var("log_alpha", &[1], nn::Init::Const(initial_alpha.ln()));
        let before_value = count();
        let value_function = value_function.then(|| {
            let encoder = Encoder::new(
                &root / "vf",
                &spec.encoder().expect("module spec with a valid encoder"),
            );
            let head = linear(&root / "vf_head", encoder.output_dim(), 1, 1.0);
            StateValue { encoder, head }
        });
        let value_len = count() - before_value;
        SoftActorCritic {
            var_store,
            policy_encoder,
            policy_head,
            qf,
            qf_twin,
            log_alpha,
            value_function,
            part_lengths: [policy_len, critics_len, 1, value_len],
            actions,
            spec: spec.clone(),
        }
    }

    module_fields!();

    /// A Box policy's squashed-Gaussian draw (tanh of the mean with
    /// `explore == false`) rescaled to the Box, `logp` its density in
    /// (−1, 1)^d; a Discrete policy's categorical draw (the most probable
    /// action with `explore == false`).
    fn compute_actions(
        &self,
        obs: &Tensor,
        explore: bool,
        _env_steps: u64,
        rng: &mut ChaCha8Rng,
        actions: &mut [f32],
        logp: &mut [f32],
    ) {
        let out = tch::no_grad(|| self.policy_out(obs));
        match &self.actions {
            Actions::Box {
                dim,
                host_center,
                host_half_range,
                ..
            } => {
                self.squashed_gaussian(&out, *dim)
                    .sample_into(rng, explore, actions, logp);
                let d = host_center.len();
                for (i, action) in actions.iter_mut().enumerate() {
                    *action = host_center[i % d] + host_half_range[i % d] * *action;
                }
            }
            Actions::Discrete { n } => {
                let log_probs = crate::to_host(&out.log_softmax(-1, Kind::Float));
                sample_categorical_rows(&log_probs, *n as usize, rng, explore, actions, logp);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::rl_module::ModelConfig;

    fn module(action_space: ActionSpace) -> SoftActorCritic {
        module_with(action_space, false)
    }

    fn module_with(action_space: ActionSpace, value_function: bool) -> SoftActorCritic {
        SoftActorCritic::new(
            &ModuleSpec {
                observation_shape: vec![3],
                observation_dtype: Default::default(),
                action_space,
                model: ModelConfig::default(),
                kind: ModuleKind::SoftActorCritic {
                    initial_alpha: 0.5,
                    value_function,
                },
            },
            Device::Cpu,
        )
    }

    fn host(t: &Tensor) -> Vec<f32> {
        crate::to_host(&t.contiguous())
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
    }

    /// Actions land inside the Box; a replayed env-scale action is read
    /// back at the scale of the policy's draws (Q of the rescaled draw is Q
    /// of the draw); the parts cover the flat buffer in order with log α
    /// last, starting at α₀.
    #[test]
    fn acts_within_the_box_and_splits_into_contiguous_parts() {
        let sac = module(ActionSpace::Box {
            low: vec![-2.0, 0.0],
            high: vec![2.0, 1.0],
        });
        let obs = Tensor::randn([64, 3], (Kind::Float, Device::Cpu));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (mut actions, mut logp) = (vec![0.0; 128], vec![0.0; 64]);
        sac.compute_actions(&obs, true, 0, &mut rng, &mut actions, &mut logp);
        for pair in actions.chunks(2) {
            assert!((-2.0..=2.0).contains(&pair[0]) && (0.0..=1.0).contains(&pair[1]));
        }
        assert!(logp.iter().all(|l| l.is_finite()));

        let policy = sac.policy_expectation(&obs);
        assert_eq!(policy.weights.size(), [64, 1]);
        assert!(host(&policy.weights).iter().all(|&w| w == 1.0));
        let draws = policy.draws.as_ref().expect("a Box policy draws");
        let env_scale = draws * Tensor::from_slice(&[2f32, 0.5]) + Tensor::from_slice(&[0f32, 0.5]);
        let (at_draw, _) = sac.expected_q(&obs, &policy);
        let (replayed, _) = sac.replayed_q(&obs, &env_scale);
        assert!(close(&host(&at_draw.squeeze_dim(-1)), &host(&replayed)));

        let parts = sac.parts();
        let all = sac.var_store().trainable_variables();
        let lengths: Vec<usize> = parts.iter().map(|p| p.variables.len()).collect();
        assert_eq!(lengths.iter().sum::<usize>(), all.len());
        assert_eq!((lengths[2], lengths[3]), (1, 0));
        let alpha = parts[2].variables[0].exp().double_value(&[0]);
        assert!((alpha - 0.5).abs() < 1e-6);
        // Greedy acting is deterministic.
        let (mut first, mut second) = (vec![0.0; 128], vec![0.0; 128]);
        sac.compute_actions(&obs, false, 0, &mut rng, &mut first, &mut logp);
        sac.compute_actions(&obs, false, 0, &mut rng, &mut second, &mut logp);
        assert_eq!(first, second);
    }

    /// A Discrete policy acts with action indices (its most probable one
    /// when greedy), its expectation weighs every action by its probability,
    /// and the Q of a replayed action is its column of Q(s, ·).
    #[test]
    fn acts_and_weighs_every_action_of_a_discrete_space() {
        let sac = module(ActionSpace::Discrete { n: 3 });
        let obs = Tensor::randn([32, 3], (Kind::Float, Device::Cpu));
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (mut actions, mut logp) = (vec![0.0; 32], vec![0.0; 32]);
        sac.compute_actions(&obs, true, 0, &mut rng, &mut actions, &mut logp);
        assert!(actions.iter().all(|&a| [0.0, 1.0, 2.0].contains(&a)));

        let policy = sac.policy_expectation(&obs);
        let (weights, log_probs) = (host(&policy.weights), host(&policy.logp));
        assert_eq!(policy.weights.size(), [32, 3]);
        for (row, a) in weights.chunks(3).zip(&actions) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            assert!(row[*a as usize] > 0.0);
        }
        for ((lp, row), a) in logp.iter().zip(log_probs.chunks(3)).zip(&actions) {
            assert!((lp - row[*a as usize]).abs() < 1e-6);
        }
        sac.compute_actions(&obs, false, 0, &mut rng, &mut actions, &mut logp);
        for (row, a) in weights.chunks(3).zip(&actions) {
            assert_eq!(*a as usize, crate::distributions::argmax(row));
        }

        let (q_all, q_twin_all) = sac.expected_q(&obs, &policy);
        assert_eq!(q_all.size(), [32, 3]);
        let replayed_actions = Tensor::from_slice(&actions).view([32, 1]);
        let (q, q_twin) = sac.replayed_q(&obs, &replayed_actions);
        for ((all, twin_all), (a, (q, q_twin))) in host(&q_all)
            .chunks(3)
            .zip(host(&q_twin_all).chunks(3))
            .zip(actions.iter().zip(host(&q).into_iter().zip(host(&q_twin))))
        {
            assert_eq!((all[*a as usize], twin_all[*a as usize]), (q, q_twin));
        }
    }

    /// IQL's module: V(s) is a fifth network after log α, its own part at
    /// the end of the flat buffer, with the first three parts as SAC's.
    #[test]
    fn a_value_function_is_the_last_part() {
        let space = ActionSpace::Box {
            low: vec![-2.0],
            high: vec![2.0],
        };
        let sac = module_with(space.clone(), false);
        let iql = module_with(space, true);
        let obs = Tensor::randn([5, 3], (Kind::Float, Device::Cpu));
        assert_eq!(iql.value(&obs).size(), [5]);
        let lengths = |m: &SoftActorCritic| m.parts().map(|p| p.variables.len());
        let (sac_parts, iql_parts) = (lengths(&sac), lengths(&iql));
        assert_eq!(sac_parts[..3], iql_parts[..3]);
        assert!(iql_parts[3] > 0);
        // V's variables are the var store's last ones, in order.
        let all = iql.var_store().trainable_variables();
        let value = &iql.parts()[3].variables;
        for (v, w) in value.iter().zip(&all[all.len() - value.len()..]) {
            assert_eq!(v.data_ptr(), w.data_ptr());
        }
    }
}
