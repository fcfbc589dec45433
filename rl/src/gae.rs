//! Generalized Advantage Estimation (Schulman et al. 2016).
//!
//! Works on one batch laid out env-major (see [`crate::sample_batch`]): each
//! trajectory is a contiguous slice scanned backwards. Truncated steps have
//! already had γ·V(final observation) folded into their reward by the caller,
//! so here every episode end, terminated or truncated, simply stops the
//! recursion.

use crate::{ObsBuffer, SampleBatch};

/// Advantages `Â_t` and value targets `Â_t + V(s_t)` for every step.
pub struct Gae {
    pub advantages: Vec<f32>,
    pub value_targets: Vec<f32>,
}

/// Computes GAE(γ, λ) per trajectory.
///
/// `values[i]` is V(s_i); `bootstrap_values[f]` is V of the observation after
/// fragment `f`'s last step; `episode_ends[i]` marks the last step of an
/// episode (terminated or truncated).
///
/// δ_t = r_t + γ·V(s_{t+1})·(1 − end_t) − V(s_t),
/// Â_t = δ_t + γλ·(1 − end_t)·Â_{t+1}.
pub fn compute_gae(
    rewards: &[f32],
    values: &[f32],
    episode_ends: &[bool],
    bootstrap_values: &[f32],
    fragment_len: usize,
    gamma: f32,
    lambda: f32,
) -> Gae {
    let mut advantages = vec![0.0; rewards.len()];
    for (fragment, &bootstrap) in bootstrap_values.iter().enumerate() {
        let start = fragment * fragment_len;
        let mut next_value = bootstrap;
        let mut next_advantage = 0.0;
        for i in (start..start + fragment_len).rev() {
            let continues = if episode_ends[i] { 0.0 } else { 1.0 };
            let delta = rewards[i] + gamma * next_value * continues - values[i];
            next_advantage = delta + gamma * lambda * continues * next_advantage;
            advantages[i] = next_advantage;
            next_value = values[i];
        }
    }
    let value_targets = advantages.iter().zip(values).map(|(a, v)| a + v).collect();
    Gae {
        advantages,
        value_targets,
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

/// What GAE and V-trace read of a batch besides its log-probabilities.
pub struct ValueInputs {
    /// Rewards with truncated steps bootstrapped ([`bootstrap_truncated`]).
    pub rewards: Vec<f32>,
    /// The last step of each episode, terminated or truncated.
    pub episode_ends: Vec<bool>,
    /// V(s) of every step.
    pub values: Vec<f32>,
    /// V of the observation after each fragment's last step.
    pub bootstrap_values: Vec<f32>,
}

impl ValueInputs {
    /// The inputs for `batch` given V(s) of its steps (`values`) and the
    /// value function `value_of` (a column of observations to V), which
    /// values the fragments' next observations and the truncated episodes'
    /// final ones.
    pub fn of(
        batch: &SampleBatch,
        values: Vec<f32>,
        value_of: impl Fn(&ObsBuffer) -> Vec<f32>,
        gamma: f32,
    ) -> Self {
        let (truncation_index, truncation_obs) = batch.truncations();
        let rewards = bootstrap_truncated(
            &batch.rewards,
            &truncation_index,
            &value_of(&truncation_obs),
            gamma,
        );
        ValueInputs {
            rewards,
            episode_ends: batch
                .terminateds
                .iter()
                .zip(&batch.truncateds)
                .map(|(terminated, truncated)| terminated | truncated)
                .collect(),
            values,
            bootstrap_values: value_of(&batch.bootstrap_obs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two fragments of three steps, γ = 0.9, λ = 0.5, worked by hand.
    #[test]
    fn matches_hand_computed_case() {
        let rewards = [1.0, 0.0, 2.0, 1.0, 1.0, 1.0];
        let values = [0.5, 1.0, 1.5, 2.0, 0.0, 1.0];
        // Fragment 0 ends an episode at step 1; fragment 1 runs on.
        let ends = [false, true, false, false, false, false];
        let bootstrap = [3.0, 4.0];
        let gae = compute_gae(&rewards, &values, &ends, &bootstrap, 3, 0.9, 0.5);
        // Fragment 0, backwards:
        // t=2: δ = 2 + 0.9·3 − 1.5 = 3.2; Â = 3.2
        // t=1 (end): δ = 0 − 1 = −1; Â = −1
        // t=0: δ = 1 + 0.9·1 − 0.5 = 1.4; Â = 1.4 + 0.45·(−1) = 0.95
        // Fragment 1:
        // t=2: δ = 1 + 0.9·4 − 1 = 3.6; Â = 3.6
        // t=1: δ = 1 + 0.9·1 − 0 = 1.9; Â = 1.9 + 0.45·3.6 = 3.52
        // t=0: δ = 1 + 0.9·0 − 2 = −1; Â = −1 + 0.45·3.52 = 0.584
        let expected = [0.95, -1.0, 3.2, 0.584, 3.52, 3.6];
        for (got, want) in gae.advantages.iter().zip(expected) {
            assert!((got - want).abs() < 1e-5, "{:?}", gae.advantages);
        }
        for i in 0..6 {
            assert!((gae.value_targets[i] - (expected[i] + values[i])).abs() < 1e-5);
        }
    }

    /// One fragment of 3 steps: the episode is truncated at step 1 (final
    /// observation worth V = 10) and the next one runs on. Without the
    /// bootstrap, step 1's advantage would treat the cut-off as a terminal
    /// state worth 0.
    #[test]
    fn truncated_steps_bootstrap_from_the_final_observation_value() {
        let mut batch = SampleBatch::with_capacity(crate::ObsDType::F32, 1, 1, 3, 1);
        batch.rewards = vec![1.0, 1.0, 1.0];
        batch.truncateds[1] = true;
        batch.terminateds[2] = true;
        batch.final_index = vec![1, 2];
        batch.final_obs = ObsBuffer::F32(vec![7.0, 8.0]);
        let (index, obs) = batch.truncations();
        // Only the truncated step is bootstrapped; the terminated one is not.
        assert_eq!((index, obs), (vec![1], ObsBuffer::F32(vec![7.0])));
        // V is 10 at the truncated episode's final observation, 0 elsewhere.
        let value_of = |o: &ObsBuffer| {
            let xs = o.to_f32(0..o.len());
            xs.iter()
                .map(|&x| if x == 7.0 { 10.0 } else { 0.0 })
                .collect()
        };
        let gamma = 0.5;
        let inputs = ValueInputs::of(&batch, vec![0.0; 3], value_of, gamma);
        assert_eq!(inputs.rewards, vec![1.0, 6.0, 1.0]);
        assert_eq!(inputs.episode_ends, vec![false, true, true]);
        let gae = compute_gae(
            &inputs.rewards,
            &inputs.values,
            &inputs.episode_ends,
            &inputs.bootstrap_values,
            3,
            gamma,
            1.0,
        );
        // Step 1: 1 + 0.5·10 = 6; step 0: 1 + 0.5·6 = 4.
        assert_eq!(gae.advantages, vec![4.0, 6.0, 1.0]);
    }
}
