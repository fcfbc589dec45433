//! V-trace (Espeholt et al. 2018, IMPALA): off-policy value targets and
//! policy-gradient advantages for trajectories sampled with a behaviour
//! policy μ that lags the policy π being learned, as with asynchronous
//! EnvRunners.
//!
//! Works on one batch laid out env-major like [`crate::gae`]: each fragment
//! is a contiguous slice scanned backwards. Truncated steps have already had
//! γ·V(final observation) folded into their reward by the caller, so every
//! episode end stops the recursion (its discount is 0).

/// V-trace targets `v_s` and advantages for every step.
pub struct VTrace {
    pub value_targets: Vec<f32>,
    pub pg_advantages: Vec<f32>,
}

/// The discount γ and the importance-weight clipping thresholds ρ̄ and
/// ρ̄_pg (c̄ is 1, as in the paper and RLlib).
#[derive(Clone, Copy, Debug)]
pub struct VTraceParams {
    pub gamma: f32,
    pub clip_rho: f32,
    pub clip_pg_rho: f32,
}

/// Computes V-trace per fragment.
///
/// `log_rhos[i]` is log π(a_i|s_i) − log μ(a_i|s_i); `values[i]` is V(s_i);
/// `bootstrap_values[f]` is V of the observation after fragment `f`'s last
/// step; `episode_ends[i]` marks the last step of an episode.
///
/// With ρ_t = min(ρ̄, π/μ), c_t = min(1, π/μ), γ_t = γ·(1 − end_t):
/// δ_t = ρ_t (r_t + γ_t V(s_{t+1}) − V(s_t)),
/// v_s − V(s_s) = δ_s + γ_s c_s (v_{s+1} − V(s_{s+1})),
/// A_s = min(ρ̄_pg, π/μ) (r_s + γ_s v_{s+1} − V(s_s)).
pub fn compute_vtrace(
    log_rhos: &[f32],
    rewards: &[f32],
    values: &[f32],
    episode_ends: &[bool],
    bootstrap_values: &[f32],
    fragment_len: usize,
    params: VTraceParams,
) -> VTrace {
    let VTraceParams {
        gamma,
        clip_rho,
        clip_pg_rho,
    } = params;
    let mut value_targets = vec![0.0; rewards.len()];
    let mut pg_advantages = vec![0.0; rewards.len()];
    for (fragment, &bootstrap) in bootstrap_values.iter().enumerate() {
        let start = fragment * fragment_len;
        // V(s_{t+1}) and v_{t+1} − V(s_{t+1}); past the fragment, v = V.
        let mut next_value = bootstrap;
        let mut next_correction = 0.0;
        for i in (start..start + fragment_len).rev() {
            let discount = if episode_ends[i] { 0.0 } else { gamma };
            let ratio = log_rhos[i].exp();
            let rho = ratio.min(clip_rho);
            let c = ratio.min(1.0);
            let delta = rho * (rewards[i] + discount * next_value - values[i]);
            let correction = delta + discount * c * next_correction;
            let next_target = next_value + next_correction;
            value_targets[i] = values[i] + correction;
            pg_advantages[i] =
                ratio.min(clip_pg_rho) * (rewards[i] + discount * next_target - values[i]);
            next_value = values[i];
            next_correction = correction;
        }
    }
    VTrace {
        value_targets,
        pg_advantages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gae::compute_gae;

    /// On-policy (π = μ) V-trace is the λ = 1 return: its targets and
    /// advantages are GAE(γ, 1)'s.
    #[test]
    fn on_policy_vtrace_is_gae_with_lambda_one() {
        let rewards = [1.0, 0.0, 2.0, 1.0, 1.0, 1.0];
        let values = [0.5, 1.0, 1.5, 2.0, 0.0, 1.0];
        let ends = [false, true, false, false, false, false];
        let bootstrap = [3.0, 4.0];
        let params = VTraceParams {
            gamma: 0.9,
            clip_rho: 1.0,
            clip_pg_rho: 1.0,
        };
        let vtrace = compute_vtrace(&[0.0; 6], &rewards, &values, &ends, &bootstrap, 3, params);
        let gae = compute_gae(&rewards, &values, &ends, &bootstrap, 3, 0.9, 1.0);
        for i in 0..6 {
            assert!((vtrace.value_targets[i] - gae.value_targets[i]).abs() < 1e-5);
            assert!((vtrace.pg_advantages[i] - gae.advantages[i]).abs() < 1e-5);
        }
    }

    /// Two steps, γ = 0.5, V = 0 everywhere, bootstrap V = 4; π/μ = 2 at
    /// step 0 (clipped to ρ̄ = 1 and c̄ = 1, but ρ̄_pg = 1.5) and 0.5 at
    /// step 1, worked by hand.
    #[test]
    fn clipped_importance_weights_match_hand_computed_values() {
        let log_rhos = [2.0f32.ln(), 0.5f32.ln()];
        let params = VTraceParams {
            gamma: 0.5,
            clip_rho: 1.0,
            clip_pg_rho: 1.5,
        };
        let vtrace = compute_vtrace(
            &log_rhos,
            &[1.0, 1.0],
            &[0.0, 0.0],
            &[false, false],
            &[4.0],
            2,
            params,
        );
        // t=1: ρ = c = 0.5; δ = 0.5·(1 + 0.5·4 − 0) = 1.5; v_1 = 1.5;
        //      A_1 = 0.5·(1 + 0.5·4) = 1.5 (v_2 = V = 4 past the fragment)
        // t=0: ρ = c = 1;  δ = 1 + 0.5·0 − 0 = 1; v_0 = 1 + 0.5·1·1.5 = 1.75;
        //      A_0 = 1.5·(1 + 0.5·1.5) = 2.625
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        assert!(
            close(&vtrace.value_targets, &[1.75, 1.5]),
            "{:?}",
            vtrace.value_targets
        );
        assert!(
            close(&vtrace.pg_advantages, &[2.625, 1.5]),
            "{:?}",
            vtrace.pg_advantages
        );
    }
}
