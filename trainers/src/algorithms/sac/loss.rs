//! SAC's losses (Haarnoja et al. 2018, with automatic entropy tuning from
//! "Soft Actor-Critic Algorithms and Applications"; for Discrete action
//! spaces Christodoulou 2019), readable top to bottom. E_π below is an
//! expectation over the policy's actions at a state: over one
//! reparameterised draw ã ~ π(·|s) for a Box space, so its gradient flows
//! through ã, and exactly over every action weighted by π(a|s) for a
//! Discrete one, so its gradient flows through the weights
//! ([`oxray_rl::rl_module::PolicyExpectation`]):
//!
//! - the soft target y = R^(n) + γ^n·(1 − done)·E_π(·|s')[min_i Q_θ⁻ᵢ(s', a') − α·log π(a'|s')],
//!   the minimum of the twin target Q-functions countering overestimation;
//! - the critic loss L_Q = Σ_i mean_t w_t·½(Q_θᵢ(s_t, a_t) − y_t)², w_t the
//!   importance weights of prioritized replay (1 for uniform replay);
//! - the actor loss L_π = mean_t E_π(·|s_t)[α·log π(a|s_t) − min_i Q_θᵢ(s_t, a)];
//! - the temperature loss L_α = −mean_t log α·E_π(·|s_t)[log π(a|s_t) + H̄],
//!   which raises α when the policy's entropy falls below the target H̄.
//!
//! α is held fixed (detached) in L_Q and L_π, and π in L_α; each loss trains
//! only its own part of the module (the Learner takes each one's gradient
//! with respect to that part alone).

use tch::{Kind, Tensor};

/// One minibatch of transitions, already on the Learner's device.
pub struct Minibatch {
    /// R_t^(n), `[B]`.
    pub rewards: Tensor,
    /// 1 where the episode terminated within the n steps, else 0.
    pub terminateds: Tensor,
    /// γ^k for the k steps summed into the reward.
    pub discounts: Tensor,
    pub weights: Tensor,
}

/// E_π over K actions per state: their weights and the values to average,
/// `[B, K]` each.
pub struct Expectation {
    /// 1 for a draw, π(a|s) for every action of a Discrete space.
    pub weights: Tensor,
    /// log π of the K actions.
    pub logp: Tensor,
    /// (Q₁, Q₂) of the K actions.
    pub q: (Tensor, Tensor),
}

impl Expectation {
    /// E_π[x] per state, `[B]`, for `x` laid out `[B, K]`.
    fn of(&self, x: &Tensor) -> Tensor {
        (&self.weights * x).sum_dim_intlist(-1, false, Kind::Float)
    }
}

/// The network outputs the losses are built from.
pub struct Evaluations {
    /// (Q_θ₁, Q_θ₂)(s_t, a_t) for the replayed actions, `[B]` each.
    pub q: (Tensor, Tensor),
    /// π(·|s_t) with the online Q-functions.
    pub policy: Expectation,
    /// π(·|s') with the target Q-functions, computed without gradients.
    pub next: Expectation,
    /// log α, `[1]`.
    pub log_alpha: Tensor,
}

pub struct SacLoss {
    pub critic: Tensor,
    pub actor: Tensor,
    pub alpha: Tensor,
    /// ½(|δ₁| + |δ₂|), detached, for the replay priorities.
    pub td_errors: Tensor,
    /// Mean Q_θ₁(s_t, a_t).
    pub q_mean: Tensor,
    /// −mean E_π log π(a|s_t), the policy's entropy (an estimate for a Box).
    pub entropy: Tensor,
}

pub fn sac_loss(e: &Evaluations, mb: &Minibatch, target_entropy: f64) -> SacLoss {
    let alpha = e.log_alpha.detach().exp();
    // y = R + γ^n (1 − done) E_π(·|s')[min_i Q_θ⁻ᵢ(s', a') − α log π(a'|s')]
    let target = tch::no_grad(|| {
        let next = &e.next;
        let soft_value = next.of(&(next.q.0.minimum(&next.q.1) - &alpha * &next.logp));
        &mb.rewards + &mb.discounts * (1.0 - &mb.terminateds) * soft_value
    });
    // L_Q = Σ_i mean w ½ (Q_θᵢ(s, a) − y)²
    let delta_1 = &e.q.0 - &target;
    let delta_2 = &e.q.1 - &target;
    let weighted_mse = |delta: &Tensor| (&mb.weights * delta.square() * 0.5).mean(Kind::Float);
    let critic = weighted_mse(&delta_1) + weighted_mse(&delta_2);
    // L_π = mean E_π[α log π(a|s) − min_i Q_θᵢ(s, a)]
    let policy = &e.policy;
    let q_policy = policy.q.0.minimum(&policy.q.1);
    let actor = policy
        .of(&(&alpha * &policy.logp - q_policy))
        .mean(Kind::Float);
    // L_α = −mean log α E_π[log π(a|s) + H̄], π held fixed
    let alpha_loss = -(&e.log_alpha
        * (policy.weights.detach() * (policy.logp.detach() + target_entropy))
            .sum_dim_intlist(-1, false, Kind::Float))
    .mean(Kind::Float);
    SacLoss {
        critic,
        actor,
        alpha: alpha_loss,
        td_errors: ((delta_1.abs() + delta_2.abs()) * 0.5).detach(),
        q_mean: e.q.0.mean(Kind::Float).detach(),
        entropy: -policy.of(&policy.logp).mean(Kind::Float).detach(),
    }
}

/// Small tensors for hand-computed loss tests (SAC's and CQL's).
#[cfg(test)]
pub(crate) mod fixtures {
    use tch::Tensor;

    pub fn t(values: &[f32]) -> Tensor {
        Tensor::from_slice(values)
    }

    pub fn scalar(x: &Tensor) -> f64 {
        x.double_value(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{scalar, t};
    use super::*;

    /// Two transitions (the second terminal), every term by hand with α = 2.
    #[test]
    fn losses_match_hand_computed_values() {
        let mb = Minibatch {
            rewards: t(&[1.0, -1.0]),
            terminateds: t(&[0.0, 1.0]),
            discounts: t(&[0.5, 0.5]),
            weights: t(&[1.0, 0.5]),
        };
        // One draw per state: K = 1, weight 1.
        let drawn = |logp: &[f32], q_1: &[f32], q_2: &[f32]| Expectation {
            weights: t(&[1.0, 1.0]).view([2, 1]),
            logp: t(logp).view([2, 1]),
            q: (t(q_1).view([2, 1]), t(q_2).view([2, 1])),
        };
        let e = Evaluations {
            q: (t(&[3.0, 0.0]), t(&[2.0, -2.0])),
            policy: drawn(&[-1.0, 0.5], &[4.0, 1.0], &[5.0, 0.0]),
            next: drawn(&[-0.5, 0.0], &[6.0, 9.0], &[4.0, 9.0]),
            log_alpha: t(&[2f32.ln()]),
        };
        let loss = sac_loss(&e, &mb, -1.0);
        // y₁ = 1 + 0.5·(min(6, 4) − 2·(−0.5)) = 1 + 0.5·5 = 3.5; y₂ = −1 (terminal).
        // δ(Q₁) = (−0.5, 1), δ(Q₂) = (−1.5, −1).
        let critic = (0.5 * 0.25 + 0.5 * 0.5 * 1.0) / 2.0 + (0.5 * 2.25 + 0.5 * 0.5 * 1.0) / 2.0;
        assert!((scalar(&loss.critic) - critic).abs() < 1e-6);
        assert_eq!(Vec::<f32>::try_from(&loss.td_errors).unwrap(), [1.0, 1.0]);
        // L_π = mean(2·(−1) − 4, 2·0.5 − 0) = (−6 + 1)/2.
        assert!((scalar(&loss.actor) + 2.5).abs() < 1e-6);
        // L_α = −ln 2 · mean(−1 − 1, 0.5 − 1) = −ln 2 · (−1.25).
        assert!((scalar(&loss.alpha) - 1.25 * 2f64.ln()).abs() < 1e-6);
        assert!((scalar(&loss.entropy) - 0.25).abs() < 1e-6);
        assert!((scalar(&loss.q_mean) - 1.5).abs() < 1e-6);
    }

    /// One state of a two-action Discrete space, α = 2: the expectations
    /// are exact sums over both actions, and the actor's gradient reaches
    /// the policy through the probabilities.
    #[test]
    fn discrete_losses_sum_over_every_action_by_hand() {
        let mb = Minibatch {
            rewards: t(&[1.0]),
            terminateds: t(&[0.0]),
            discounts: t(&[0.5]),
            weights: t(&[1.0]),
        };
        let probs = |p: f32| t(&[p, 1.0 - p]).view([1, 2]);
        let logits = t(&[0.0, 0.0]).view([1, 2]).set_requires_grad(true);
        let logp = logits.log_softmax(-1, Kind::Float);
        let e = Evaluations {
            q: (t(&[2.0]), t(&[3.0])),
            policy: Expectation {
                weights: logp.exp(),
                logp: logp.shallow_clone(),
                q: (t(&[1.0, 3.0]).view([1, 2]), t(&[2.0, 2.0]).view([1, 2])),
            },
            next: Expectation {
                weights: probs(0.25),
                logp: probs(0.25).log(),
                q: (t(&[4.0, 0.0]).view([1, 2]), t(&[5.0, 2.0]).view([1, 2])),
            },
            log_alpha: t(&[2f32.ln()]),
        };
        let loss = sac_loss(&e, &mb, 0.5);
        // V(s') = ¼(4 − 2 ln ¼) + ¾(0 − 2 ln ¾); y = 1 + ½ V(s').
        let (ln_quarter, ln_three_quarters) = (0.25f64.ln(), 0.75f64.ln());
        let soft_value = 0.25 * (4.0 - 2.0 * ln_quarter) + 0.75 * (0.0 - 2.0 * ln_three_quarters);
        let y = 1.0 + 0.5 * soft_value;
        let critic = 0.5 * (2.0 - y).powi(2) + 0.5 * (3.0 - y).powi(2);
        assert!((scalar(&loss.critic) - critic).abs() < 1e-5);
        // Uniform π: L_π = ½(2 ln ½ − 1) + ½(2 ln ½ − 2).
        let ln_half = 0.5f64.ln();
        let actor = 0.5 * (2.0 * ln_half - 1.0) + 0.5 * (2.0 * ln_half - 2.0);
        assert!((scalar(&loss.actor) - actor).abs() < 1e-5);
        // L_α = −ln 2 · (ln ½ + 0.5); the entropy is ln 2.
        assert!((scalar(&loss.alpha) + 2f64.ln() * (ln_half + 0.5)).abs() < 1e-5);
        assert!((scalar(&loss.entropy) + ln_half).abs() < 1e-5);
        // dL_π/dlogit₀ = ½·(x₀ − x₁)·½ with x = α log π − min Q = (2 ln ½ − 1,
        // 2 ln ½ − 2) (the log π terms' own gradient sums to zero at uniform π).
        loss.actor.backward();
        let grad = Vec::<f32>::try_from(&logits.grad().view([-1])).unwrap();
        assert!((f64::from(grad[0]) - 0.25).abs() < 1e-5, "{grad:?}");
        assert!((f64::from(grad[1]) + 0.25).abs() < 1e-5, "{grad:?}");
    }
}
