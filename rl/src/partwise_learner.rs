//! A Learner that trains its module part by part: SAC's module (policy,
//! twin Q-functions, log α, and IQL's V) under SAC's, CQL's and IQL's
//! losses, each differentiated with respect to its own part only (SAC's
//! actor loss reaches the critics' weights through Q(s, ã), and that
//! gradient must not train them), the parts' gradients laid end to end as
//! the flat buffer, and one Adam step with each part's learning rate: RLlib
//! gives each part an optimizer of its own; one Adam over the flat buffer
//! with a rate per parameter is the same update. Target networks beside it
//! follow by Polyak averaging.
//!
//! Checkpoints hold the module and Adam's state; a restored Learner starts
//! its target networks as copies of the online ones.

use tch::{Kind, Tensor};

use crate::learner::{Learner, LearnerConfig, LearnerState, Step};
use crate::learner_group::{LearnerCore, Trained, UpdateOutcome};
use crate::metrics::{self, Metrics};
use crate::optim::flat_gradient;
use crate::rl_module::{Part, RLModule, SoftActorCritic};
use crate::target_network::TargetNetwork;
use crate::{to_host, Error};

/// A loss of one part: the metric it is reported as, and the loss.
pub type PartLoss<'a> = (&'static str, &'a Tensor);

pub struct PartwiseLearner {
    learner: Learner<SoftActorCritic>,
    target: TargetNetwork<SoftActorCritic>,
}

impl PartwiseLearner {
    /// The Learner `config` describes, each part (policy, critics, log α,
    /// V) learning at its rate in `lrs` (a part no loss trains: any).
    pub fn new(config: &LearnerConfig, lrs: [f64; 4]) -> Self {
        let mut learner = Learner::<SoftActorCritic>::new(config);
        let target = TargetNetwork::of(&learner);
        let module = learner.module();
        let lr_per_parameter: Vec<Tensor> = module
            .parts()
            .iter()
            .zip(lrs)
            .map(|(part, lr)| Tensor::full([part_size(part)], lr, (Kind::Float, tch::Device::Cpu)))
            .collect();
        learner.set_lr_per_parameter(Tensor::cat(&lr_per_parameter, 0));
        PartwiseLearner { learner, target }
    }

    /// The online module.
    pub fn module(&self) -> &SoftActorCritic {
        self.learner.module()
    }

    /// The target networks.
    pub fn target(&self) -> &SoftActorCritic {
        &self.target
    }

    pub fn device(&self) -> tch::Device {
        self.learner.device()
    }

    /// One gradient step: each part's loss (policy, critics, log α, V;
    /// none: a zero gradient, so a part that never has a loss never moves)
    /// with respect to that part alone,
    /// then, with `target_tau`, the target networks' Polyak step. Reports
    /// each loss under its metric, their sum as the total, the mean of
    /// `td_errors` and the gradient's norm; a non-finite loss names each.
    pub fn step(
        &mut self,
        losses: [Option<PartLoss>; 4],
        td_errors: &Tensor,
        target_tau: Option<f64>,
    ) -> UpdateOutcome {
        let values: Vec<(&str, f64)> = losses
            .iter()
            .flatten()
            .map(|(metric, loss)| (*metric, loss.double_value(&[])))
            .collect();
        let total: f64 = values.iter().map(|(_, value)| value).sum();
        if !total.is_finite() {
            let named: Vec<String> = values
                .iter()
                .map(|(metric, value)| format!("{} {value}", short_name(metric)))
                .collect();
            return UpdateOutcome::NonFiniteLoss(named.join(", "));
        }
        let module = self.learner.module();
        let grads: Vec<Tensor> = losses
            .iter()
            .zip(module.parts())
            .map(|(loss, part)| match loss {
                Some((_, loss)) => flat_gradient(loss, &part.variables),
                None => Tensor::zeros([part_size(&part)], (Kind::Float, module.device())),
            })
            .collect();
        let td_errors = to_host(td_errors);
        let grad_norm = match self.learner.apply_gradient(total, Tensor::cat(&grads, 0)) {
            Ok(Step::Applied { grad_norm, .. }) => grad_norm,
            Ok(Step::NonFiniteLoss(total)) => {
                return UpdateOutcome::NonFiniteLoss(format!("loss is {total}"))
            }
            Err(e) => return UpdateOutcome::Failed(format!("gradient step failed: {e}")),
        };
        if let Some(tau) = target_tau {
            self.target.follow(&self.learner, tau);
        }
        let td_error_mean =
            td_errors.iter().map(|&d| f64::from(d)).sum::<f64>() / td_errors.len() as f64;
        let mut reported: Metrics = values
            .into_iter()
            .map(|(metric, value)| (metric.to_string(), value))
            .collect();
        reported.extend([
            (metrics::TOTAL_LOSS.to_string(), total),
            (metrics::TD_ERROR_MEAN.to_string(), td_error_mean),
            (metrics::GRADIENTS_GLOBAL_NORM.to_string(), grad_norm),
        ]);
        UpdateOutcome::Trained(Trained {
            metrics: reported,
            histograms: Default::default(),
            td_errors,
        })
    }

    pub fn learner(&self) -> &dyn LearnerCore {
        &self.learner
    }

    pub fn learner_mut(&mut self) -> &mut dyn LearnerCore {
        &mut self.learner
    }

    pub fn restore_state(&mut self, state: &LearnerState) -> Result<(), Error> {
        self.learner.set_state(state)?;
        self.target.follow(&self.learner, 1.0);
        Ok(())
    }
}

fn part_size(part: &Part) -> i64 {
    part.variables.iter().map(|v| v.numel() as i64).sum()
}

/// `qf_loss` of `learners/default_policy/qf_loss`.
fn short_name(metric: &str) -> &str {
    metric.rsplit('/').next().unwrap_or(metric)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rl_module::{ActionSpace, ModelConfig, ModuleKind, ModuleSpec};

    fn learner(value_function: bool, lrs: [f64; 4]) -> PartwiseLearner {
        let module = ModuleSpec {
            observation_shape: vec![3],
            observation_dtype: Default::default(),
            action_space: ActionSpace::Box {
                low: vec![-1.0],
                high: vec![1.0],
            },
            model: ModelConfig {
                fcnet_hiddens: vec![8],
                ..ModelConfig::default()
            },
            kind: ModuleKind::SoftActorCritic {
                initial_alpha: 1.0,
                value_function,
            },
        };
        let config = LearnerConfig {
            module,
            lr: 1e-2,
            grad_clip: None,
            use_gpu: false,
            seed: 7,
        };
        PartwiseLearner::new(&config, lrs)
    }

    /// Each part's trainable values, flattened, in order.
    fn parts(learner: &PartwiseLearner) -> Vec<Vec<f32>> {
        learner
            .module()
            .parts()
            .iter()
            .map(|part| part.variables.iter().flat_map(to_host).collect())
            .collect()
    }

    /// A loss that reaches the critics' weights through Q(s, ã) (as SAC's
    /// actor loss does) moves only the policy; a part without a loss or
    /// with a rate of 0 stays; the target networks follow only when told.
    #[test]
    fn each_loss_trains_only_its_own_part() {
        let mut learner = learner(true, [1e-2, 1e-2, 1e-2, 0.0]);
        let obs = Tensor::randn([16, 3], (Kind::Float, tch::Device::Cpu));
        let module = learner.module();
        let policy = module.policy_expectation(&obs);
        let (q, _) = module.expected_q(&obs, &policy);
        let actor = -q.mean(Kind::Float);
        let (q_1, q_2) = module.box_q(&obs, &obs.narrow(1, 0, 1).tanh());
        let critic = (q_1.square() + q_2.square()).mean(Kind::Float);
        let value = module.value(&obs).square().mean(Kind::Float);
        let before = parts(&learner);
        let target_before: Vec<f32> = learner.target().flat_weights();

        // The actor loss alone: its gradient reaches the critics' weights,
        // which must not move.
        let losses = [Some((metrics::POLICY_LOSS, &actor)), None, None, None];
        let outcome = learner.step(losses, &Tensor::from_slice(&[0f32]), None);
        assert!(matches!(outcome, UpdateOutcome::Trained(_)));
        let after_actor = parts(&learner);
        assert_ne!(before[0], after_actor[0], "the policy learns");
        assert_eq!(before[1..], after_actor[1..], "only the policy moves");

        let losses = [
            None,
            Some((metrics::QF_LOSS, &critic)),
            None,
            Some((metrics::VALUE_LOSS, &value)),
        ];
        let outcome = learner.step(losses, &Tensor::from_slice(&[1f32, 3.0]), None);
        let UpdateOutcome::Trained(trained) = outcome else {
            panic!("the step failed");
        };
        let after = parts(&learner);
        assert_ne!(after_actor[1], after[1], "the critics learn");
        assert_eq!(before[2], after[2], "log α has no loss");
        assert_eq!(before[3], after[3], "V's rate is 0");
        assert_eq!(learner.target().flat_weights(), target_before);
        let reported = |key: &str| trained.metrics[key];
        let total = reported(metrics::QF_LOSS) + reported(metrics::VALUE_LOSS);
        assert!((reported(metrics::TOTAL_LOSS) - total).abs() < 1e-9);
        assert_eq!(reported(metrics::TD_ERROR_MEAN), 2.0);

        // With a target step, the target networks move towards the online
        // ones (τ = 1 copies them).
        let critic = learner
            .module()
            .box_q(&obs, &obs.narrow(1, 0, 1))
            .0
            .mean(Kind::Float);
        let losses = [None, Some((metrics::QF_LOSS, &critic)), None, None];
        learner.step(losses, &Tensor::from_slice(&[0f32]), Some(1.0));
        assert_eq!(
            learner.target().flat_weights(),
            learner.module().flat_weights()
        );
    }

    /// A non-finite loss names each loss and changes nothing.
    #[test]
    fn a_non_finite_loss_is_named_and_not_applied() {
        let mut learner = learner(false, [1e-2; 4]);
        let before = parts(&learner);
        let (finite, nan) = (Tensor::from(1.5f32), Tensor::from(f32::NAN));
        let losses = [
            Some((metrics::POLICY_LOSS, &finite)),
            Some((metrics::QF_LOSS, &nan)),
            None,
            None,
        ];
        match learner.step(losses, &Tensor::from_slice(&[0f32]), Some(1.0)) {
            UpdateOutcome::NonFiniteLoss(message) => {
                assert_eq!(message, "policy_loss 1.5, qf_loss NaN")
            }
            _ => panic!("a NaN loss was applied"),
        }
        assert_eq!(parts(&learner), before);
    }
}
