//! The PPO Learner: GAE(γ, λ) over the batch (truncated episodes bootstrapped
//! from the value of the state they were cut off in), then `num_epochs`
//! passes of shuffled minibatches through [`ppo_loss`]. With several Learners
//! each takes its slice of every minibatch and the gradients are averaged
//! between them.

use oxray_rl::gae::compute_gae;
use oxray_rl::learner::{Learner, LearnerConfig, Step};
use oxray_rl::learner_group::{AlgorithmLearner, LearnerCore, Trained, UpdateOutcome};
use oxray_rl::metrics::{self, Histograms, Metrics};
use oxray_rl::rl_module::ActorCritic;
use oxray_rl::{to_host, ObsBuffer, SampleBatch};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::config::PpoConfig;
use super::loss::{normalize_advantages, ppo_loss, Minibatch};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PpoLearnerConfig {
    pub learner: LearnerConfig,
    pub training: PpoConfig,
}

/// What the driver sends with each batch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateParams {
    pub lr: f64,
    pub kl_coeff: f64,
    /// Seeds this update's minibatch shuffling, so no RNG state needs saving.
    pub shuffle_seed: u64,
}

/// A [`Learner`] that knows PPO's update.
pub struct PpoLearner {
    learner: Learner<ActorCritic>,
    training: PpoConfig,
}

oxray_rl::learner_actor!(PpoLearner);

impl AlgorithmLearner for PpoLearner {
    type Config = PpoLearnerConfig;
    type Batch = SampleBatch;
    type Params = UpdateParams;
    const ALGORITHM: &'static str = "PPO";

    fn build(config: PpoLearnerConfig) -> Self {
        PpoLearner {
            learner: Learner::new(&config.learner),
            training: config.training,
        }
    }

    /// GAE over `batch`, then `num_epochs` epochs of minibatch steps.
    fn learn(&mut self, batch: SampleBatch, params: UpdateParams) -> UpdateOutcome {
        let cfg = &self.training;
        self.learner.set_lr(params.lr);
        let l = &self.learner;
        let obs = l.obs_tensor(&batch.obs, batch.obs_dim);
        let (truncation_index, truncation_obs) = batch.truncations();
        let actions = l.tensor(&batch.actions, batch.action_dim);
        let old_logp = l.tensor(&batch.action_logp, 1).view(-1);

        // One forward without gradients: V(s) for GAE (plus the bootstrap and
        // truncation observations) and π_θold for the KL term.
        let (old_dist, values, bootstrap_values, truncation_values) = tch::no_grad(|| {
            let (dist, values) = l.module().forward(&obs);
            let value_of =
                |o: &ObsBuffer| to_host(&l.module().value(&l.obs_tensor(o, batch.obs_dim)));
            (
                dist,
                to_host(&values),
                value_of(&batch.bootstrap_obs),
                value_of(&truncation_obs),
            )
        });
        // A truncated episode continues in principle: its last reward gets the
        // discounted value of the state it was cut off in.
        let rewards = bootstrap_truncated(
            &batch.rewards,
            &truncation_index,
            &truncation_values,
            cfg.gamma as f32,
        );
        let ends: Vec<bool> = batch
            .terminateds
            .iter()
            .zip(&batch.truncateds)
            .map(|(t, u)| t | u)
            .collect();
        let gae = compute_gae(
            &rewards,
            &values,
            &ends,
            &bootstrap_values,
            batch.fragment_len,
            cfg.gamma as f32,
            cfg.lambda as f32,
        );
        let advantages = l.tensor(&gae.advantages, 1).view(-1);
        let value_targets = l.tensor(&gae.value_targets, 1).view(-1);

        let device = l.device();
        let mut rng = ChaCha8Rng::seed_from_u64(params.shuffle_seed);
        let mut order: Vec<i64> = (0..batch.len() as i64).collect();
        let mut sums = [0.0f64; 5];
        let mut steps = 0;
        for _ in 0..cfg.num_epochs {
            order.shuffle(&mut rng);
            for chunk in order.chunks(cfg.minibatch_size) {
                let index = Tensor::from_slice(chunk).to_device(device);
                let mut mb_advantages = advantages.index_select(0, &index);
                if cfg.normalize_advantages {
                    mb_advantages = normalize_advantages(&mb_advantages);
                }
                let rows = self.learner.slice_of(chunk.len());
                let (step, terms) = if rows.is_empty() {
                    (self.learner.apply_no_loss(), [0.0; 3])
                } else {
                    let (start, len) = (rows.start as i64, rows.len() as i64);
                    let index = index.narrow(0, start, len);
                    let mb = Minibatch {
                        obs: obs.index_select(0, &index),
                        actions: actions.index_select(0, &index),
                        old_logp: old_logp.index_select(0, &index),
                        old_dist: old_dist.select(&index),
                        advantages: mb_advantages.narrow(0, start, len),
                        value_targets: value_targets.index_select(0, &index),
                    };
                    let (dist, values) = self.learner.module().forward(&mb.obs);
                    let loss = ppo_loss(&dist, &values, &mb, cfg, params.kl_coeff);
                    // Averaged over the Learners, weighted slice means are the
                    // whole minibatch's means.
                    let weight = self.learner.slice_weight(rows.len(), chunk.len());
                    let terms = [&loss.policy_loss, &loss.vf_loss, &loss.entropy]
                        .map(|term| term.double_value(&[]) * weight);
                    (self.learner.apply_loss(&(loss.total * weight)), terms)
                };
                let (total, grad_norm) = match step {
                    Ok(Step::Applied { loss, grad_norm }) => (loss, grad_norm),
                    Ok(Step::NonFiniteLoss(total)) => {
                        return UpdateOutcome::NonFiniteLoss(format!(
                            "loss is {total} at minibatch step {steps}"
                        ))
                    }
                    Err(e) => {
                        return UpdateOutcome::Failed(format!("minibatch step {steps} failed: {e}"))
                    }
                };
                for (sum, term) in sums
                    .iter_mut()
                    .zip([total, terms[0], terms[1], terms[2], grad_norm])
                {
                    *sum += term;
                }
                steps += 1;
            }
        }
        let mean_kl = tch::no_grad(|| {
            let new_dist = self.learner.module().distribution(&obs);
            old_dist.kl(&new_dist).mean(Kind::Float).double_value(&[])
        });
        let explained_var = explained_variance(&values, &gae.value_targets);
        let n = f64::from(steps);
        UpdateOutcome::Trained(Trained {
            metrics: Metrics::from([
            (metrics::TOTAL_LOSS.into(), sums[0] / n),
            (metrics::POLICY_LOSS.into(), sums[1] / n),
            (metrics::VF_LOSS.into(), sums[2] / n),
            (metrics::ENTROPY.into(), sums[3] / n),
            (metrics::GRADIENTS_GLOBAL_NORM.into(), sums[4] / n),
            (metrics::MEAN_KL_LOSS.into(), mean_kl),
            (metrics::VF_EXPLAINED_VAR.into(), explained_var),
            (metrics::CURR_KL_COEFF.into(), params.kl_coeff),
                (metrics::LEARNING_RATE.into(), params.lr),
            ]),
            histograms: Histograms::from([(metrics::ADVANTAGES.into(), gae.advantages)]),
            td_errors: Vec::new(),
        })
    }

    fn learner(&self) -> &dyn LearnerCore {
        &self.learner
    }

    fn learner_mut(&mut self) -> &mut dyn LearnerCore {
        &mut self.learner
    }
}

/// Rewards with γ·V(final observation) added at truncated steps: a truncated
/// episode continues in principle, so its last reward gets the discounted
/// value of the state it was cut off in. Terminated steps get nothing.
pub fn bootstrap_truncated(
    rewards: &[f32],
    truncation_index: &[u32],
    truncation_values: &[f32],
    gamma: f32,
) -> Vec<f32> {
    let mut rewards = rewards.to_vec();
    for (&i, v) in truncation_index.iter().zip(truncation_values) {
        rewards[i as usize] += gamma * v;
    }
    rewards
}

/// 1 − Var[targets − values] / Var[targets]: how much of the return the value
/// function explains.
fn explained_variance(values: &[f32], targets: &[f32]) -> f64 {
    let var = |xs: &mut dyn Iterator<Item = f64>| {
        let xs: Vec<f64> = xs.collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64
    };
    let target_var = var(&mut targets.iter().map(|&t| f64::from(t)));
    let residual_var = var(&mut targets.iter().zip(values).map(|(&t, &v)| f64::from(t - v)));
    if target_var == 0.0 {
        f64::NAN
    } else {
        1.0 - residual_var / target_var
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxray_rl::gae::compute_gae;

    /// One fragment of 3 steps: the episode is truncated at step 1 (final
    /// observation worth V = 10) and the next one runs on. Without the
    /// bootstrap, step 1's advantage would treat the cut-off as a terminal
    /// state worth 0.
    #[test]
    fn truncated_steps_bootstrap_from_the_final_observation_value() {
        let mut batch = SampleBatch::with_capacity(oxray_rl::ObsDType::F32, 1, 1, 3, 1);
        batch.rewards = vec![1.0, 1.0, 1.0];
        batch.truncateds[1] = true;
        batch.terminateds[2] = true;
        batch.final_index = vec![1, 2];
        batch.final_obs = ObsBuffer::F32(vec![7.0, 8.0]);
        let (index, obs) = batch.truncations();
        // Only the truncated step is bootstrapped; the terminated one is not.
        assert_eq!((index.clone(), obs), (vec![1], ObsBuffer::F32(vec![7.0])));
        let gamma = 0.5;
        let rewards = bootstrap_truncated(&batch.rewards, &index, &[10.0], gamma);
        assert_eq!(rewards, vec![1.0, 6.0, 1.0]);
        let ends = [false, true, true];
        let gae = compute_gae(&rewards, &[0.0; 3], &ends, &[0.0], 3, gamma, 1.0);
        // Step 1: 1 + 0.5·10 = 6; step 0: 1 + 0.5·6 = 4.
        assert_eq!(gae.advantages, vec![4.0, 6.0, 1.0]);
    }

    #[test]
    fn explained_variance_is_one_for_perfect_values_and_zero_for_the_mean() {
        let targets = [1.0, 2.0, 3.0];
        assert_eq!(explained_variance(&targets, &targets), 1.0);
        assert!(explained_variance(&[2.0; 3], &targets).abs() < 1e-12);
    }
}
