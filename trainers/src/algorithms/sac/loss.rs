//! SAC's losses (Haarnoja et al. 2018, with automatic entropy tuning from
//! "Soft Actor-Critic Algorithms and Applications"), readable top to bottom:
//!
//! - the soft target y = R^(n) + γ^n·(1 − done)·(min_i Q_θ⁻ᵢ(s', ã') − α·log π(ã'|s'))
//!   with ã' ~ π(·|s'), the minimum of the twin target Q-functions
//!   countering overestimation;
//! - the critic loss L_Q = Σ_i mean_t w_t·½(Q_θᵢ(s_t, a_t) − y_t)², w_t the
//!   importance weights of prioritized replay (1 for uniform replay);
//! - the actor loss L_π = mean_t (α·log π(ã_t|s_t) − min_i Q_θᵢ(s_t, ã_t)) with
//!   ã_t ~ π(·|s_t) reparameterised, so its gradient flows through ã_t;
//! - the temperature loss L_α = −mean_t log α·(log π(ã_t|s_t) + H̄), which
//!   raises α when the policy's entropy falls below the target H̄.
//!
//! α is held fixed (detached) in L_Q and L_π; each loss trains only its own
//! part of the module (the Learner takes each one's gradient with respect to
//! that part alone).

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

/// The network outputs the losses are built from, `[B]` each.
pub struct Evaluations {
    /// (Q_θ₁, Q_θ₂)(s_t, a_t) for the replayed actions.
    pub q: (Tensor, Tensor),
    /// (Q_θ₁, Q_θ₂)(s_t, ã_t) for fresh policy actions.
    pub q_policy: (Tensor, Tensor),
    /// log π(ã_t|s_t).
    pub logp_policy: Tensor,
    /// (Q_θ⁻₁, Q_θ⁻₂)(s', ã') from the target networks.
    pub next_target_q: (Tensor, Tensor),
    /// log π(ã'|s').
    pub next_logp: Tensor,
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
    /// −mean log π(ã_t|s_t), an estimate of the policy's entropy.
    pub entropy: Tensor,
}

pub fn sac_loss(e: &Evaluations, mb: &Minibatch, target_entropy: f64) -> SacLoss {
    let alpha = e.log_alpha.detach().exp();
    // y = R + γ^n (1 − done) (min_i Q_θ⁻ᵢ(s', ã') − α log π(ã'|s'))
    let target = tch::no_grad(|| {
        let soft_value = e.next_target_q.0.minimum(&e.next_target_q.1) - &alpha * &e.next_logp;
        &mb.rewards + &mb.discounts * (1.0 - &mb.terminateds) * soft_value
    });
    // L_Q = Σ_i mean w ½ (Q_θᵢ(s, a) − y)²
    let delta_1 = &e.q.0 - &target;
    let delta_2 = &e.q.1 - &target;
    let weighted_mse = |delta: &Tensor| (&mb.weights * delta.square() * 0.5).mean(Kind::Float);
    let critic = weighted_mse(&delta_1) + weighted_mse(&delta_2);
    // L_π = mean (α log π(ã|s) − min_i Q_θᵢ(s, ã))
    let q_policy = e.q_policy.0.minimum(&e.q_policy.1);
    let actor = (&alpha * &e.logp_policy - q_policy).mean(Kind::Float);
    // L_α = −mean log α (log π(ã|s) + H̄)
    let alpha_loss =
        -(&e.log_alpha * (e.logp_policy.detach() + target_entropy)).mean(Kind::Float);
    SacLoss {
        critic,
        actor,
        alpha: alpha_loss,
        td_errors: ((delta_1.abs() + delta_2.abs()) * 0.5).detach(),
        q_mean: e.q.0.mean(Kind::Float).detach(),
        entropy: -e.logp_policy.mean(Kind::Float).detach(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(values: &[f32]) -> Tensor {
        Tensor::from_slice(values)
    }

    fn scalar(x: &Tensor) -> f64 {
        x.double_value(&[])
    }

    /// Two transitions (the second terminal), every term by hand with α = 2.
    #[test]
    fn losses_match_hand_computed_values() {
        let mb = Minibatch {
            rewards: t(&[1.0, -1.0]),
            terminateds: t(&[0.0, 1.0]),
            discounts: t(&[0.5, 0.5]),
            weights: t(&[1.0, 0.5]),
        };
        let e = Evaluations {
            q: (t(&[3.0, 0.0]), t(&[2.0, -2.0])),
            q_policy: (t(&[4.0, 1.0]), t(&[5.0, 0.0])),
            logp_policy: t(&[-1.0, 0.5]),
            next_target_q: (t(&[6.0, 9.0]), t(&[4.0, 9.0])),
            next_logp: t(&[-0.5, 0.0]),
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
}
