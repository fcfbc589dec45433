//! Generalized Advantage Estimation (Schulman et al. 2016).
//!
//! Works on one batch laid out env-major (see [`crate::sample_batch`]): each
//! trajectory is a contiguous slice scanned backwards. Truncated steps have
//! already had γ·V(final observation) folded into their reward by the caller,
//! so here every episode end, terminated or truncated, simply stops the
//! recursion.

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
}
