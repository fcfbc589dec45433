//! IQL's losses (Kostrikov et al. 2021, "Offline Reinforcement Learning
//! with Implicit Q-Learning"; RLlib's IQL), readable top to bottom. IQL
//! never asks Q about an action the recording did not take: V learns an
//! upper expectile of Q over the recorded actions, Q bootstraps from V, and
//! the policy is extracted by advantage-weighted regression onto the
//! recorded actions.
//!
//! - L_V(ψ) = mean L₂^τ(Q̂(s, a) − V_ψ(s)), the expectile loss
//!   L₂^τ(u) = |τ − 1(u < 0)|·u², where Q̂ = min_i Q_θ⁻ᵢ is the target
//!   networks' (no gradient); τ → 1 makes V the best recorded action's
//!   value rather than the average one's;
//! - L_Q(θ) = Σ_i ½·mean (r + γ(1 − done)·V_ψ(s') − Q_θᵢ(s, a))², V(s')
//!   held fixed (RLlib's halving of each twin's loss);
//! - L_π(φ) = −mean exp(β·(Q̂(s, a) − V_ψ(s)))·log π_φ(a|s), the weight
//!   held fixed and capped at 100 (the paper's code and RLlib).
//!
//! τ is `expectile`, β `beta`; each loss trains only its own network.

use tch::{Kind, Tensor};

use crate::algorithms::sac::Minibatch;

/// exp(β·A) above this is cut to it, so one large advantage cannot swamp
/// the minibatch.
const MAX_ADVANTAGE_WEIGHT: f64 = 100.0;

/// The network outputs IQL's losses are built from, at the recorded
/// transitions, `[B]` each.
pub struct Evaluations {
    /// Q̂(s, a) = min_i Q_θ⁻ᵢ(s, a), the target networks', no gradient.
    pub target_q: Tensor,
    /// (Q_θ₁, Q_θ₂)(s, a).
    pub q: (Tensor, Tensor),
    /// V_ψ(s).
    pub value: Tensor,
    /// V_ψ(s'), no gradient.
    pub next_value: Tensor,
    /// log π_φ(a|s) of the recorded actions.
    pub recorded_logp: Tensor,
}

pub struct Coefficients {
    pub expectile: f64,
    pub beta: f64,
}

pub struct IqlLoss {
    pub value: Tensor,
    pub critic: Tensor,
    pub actor: Tensor,
    /// ½(|δ₁| + |δ₂|), detached.
    pub td_errors: Tensor,
    /// Mean Q_θ₁(s, a), detached.
    pub q_mean: Tensor,
    /// Mean Q̂(s, a) − V_ψ(s), detached.
    pub advantage_mean: Tensor,
}

pub fn iql_loss(e: &Evaluations, mb: &Minibatch, c: &Coefficients) -> IqlLoss {
    // L_V = mean |τ − 1(u < 0)| u², u = Q̂(s, a) − V(s)
    let u = &e.target_q - &e.value;
    let below = u.lt(0.0).to_kind(Kind::Float);
    let expectile_weight = (c.expectile - below).abs();
    let value = (expectile_weight * u.square()).mean(Kind::Float);
    // L_Q = Σ_i ½ mean (y − Q_θᵢ(s, a))², y = r + γ(1 − done) V(s')
    let target = &mb.rewards + &mb.discounts * (1.0 - &mb.terminateds) * &e.next_value;
    let delta_1 = &e.q.0 - &target;
    let delta_2 = &e.q.1 - &target;
    let critic = (delta_1.square().mean(Kind::Float) + delta_2.square().mean(Kind::Float)) * 0.5;
    // L_π = −mean min(exp(β A), 100) log π(a|s), A = Q̂(s, a) − V(s) fixed
    let advantage = u.detach();
    let weight = (&advantage * c.beta).exp().clamp_max(MAX_ADVANTAGE_WEIGHT);
    let actor = -(weight * &e.recorded_logp).mean(Kind::Float);
    IqlLoss {
        value,
        critic,
        actor,
        td_errors: ((delta_1.abs() + delta_2.abs()) * 0.5).detach(),
        q_mean: e.q.0.mean(Kind::Float).detach(),
        advantage_mean: advantage.mean(Kind::Float),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::sac::fixtures::{scalar, t};

    /// Two transitions (the second terminal), τ = 0.8, β = 2: every term
    /// by hand, one advantage above V and one below it.
    #[test]
    fn losses_match_the_paper_by_hand() {
        let e = Evaluations {
            target_q: t(&[3.0, 1.0]),
            q: (t(&[2.0, 0.5]), t(&[4.0, 1.5])),
            value: t(&[2.5, 2.0]),
            next_value: t(&[10.0, 7.0]),
            recorded_logp: t(&[-1.0, -2.0]),
        };
        let mb = Minibatch {
            rewards: t(&[1.0, -1.0]),
            terminateds: t(&[0.0, 1.0]),
            discounts: t(&[0.9, 0.9]),
            weights: t(&[1.0, 1.0]),
        };
        let loss = iql_loss(&e, &mb, &Coefficients { expectile: 0.8, beta: 2.0 });
        // u = (0.5, −1): 0.8·0.25 and 0.2·1.
        assert!((scalar(&loss.value) - (0.8 * 0.25 + 0.2 * 1.0) / 2.0).abs() < 1e-6);
        // y = (1 + 0.9·10, −1) = (10, −1); δ₁ = (−8, 1.5), δ₂ = (−6, 2.5).
        let critic = 0.5 * ((64.0 + 2.25) / 2.0 + (36.0 + 6.25) / 2.0);
        assert!((scalar(&loss.critic) - critic).abs() < 1e-5);
        // −mean exp(β u) log π: exp(2·0.5) = e times −1, exp(2·(−1)) = e⁻²
        // times −2.
        let actor = (std::f64::consts::E * 1.0 + (-2f64).exp() * 2.0) / 2.0;
        assert!((scalar(&loss.actor) - actor).abs() < 1e-5);
        assert!((scalar(&loss.advantage_mean) - (-0.25)).abs() < 1e-6);
        let td: Vec<f64> = (0..2).map(|i| loss.td_errors.double_value(&[i])).collect();
        assert!((td[0] - 7.0).abs() < 1e-5 && (td[1] - 2.0).abs() < 1e-5);
    }

    /// A large advantage's weight stops at 100, and the expectile loss
    /// with τ = 0.5 is half the squared error.
    #[test]
    fn advantage_weights_are_capped_and_the_median_expectile_is_half_the_mse() {
        let e = Evaluations {
            target_q: t(&[50.0, 0.0]),
            q: (t(&[0.0, 0.0]), t(&[0.0, 0.0])),
            value: t(&[0.0, 2.0]),
            next_value: t(&[0.0, 0.0]),
            recorded_logp: t(&[-1.0, 0.0]),
        };
        let mb = Minibatch {
            rewards: t(&[0.0, 0.0]),
            terminateds: t(&[1.0, 1.0]),
            discounts: t(&[1.0, 1.0]),
            weights: t(&[1.0, 1.0]),
        };
        let loss = iql_loss(&e, &mb, &Coefficients { expectile: 0.5, beta: 1.0 });
        assert!((scalar(&loss.actor) - 100.0 / 2.0).abs() < 1e-4);
        assert!((scalar(&loss.value) - 0.5 * (2500.0 + 4.0) / 2.0).abs() < 1e-3);
    }

    /// Each loss reaches only its own network's outputs: V(s') and Q̂ give
    /// no gradient, the actor's weights none to V.
    #[test]
    fn each_loss_differentiates_only_its_own_network() {
        let grad = |x: &[f32]| t(x).set_requires_grad(true);
        let (value, q_1, logp) = (grad(&[1.0]), grad(&[0.0]), grad(&[-1.0]));
        let e = Evaluations {
            target_q: t(&[2.0]),
            q: (q_1.shallow_clone(), t(&[0.0])),
            value: value.shallow_clone(),
            next_value: t(&[1.0]),
            recorded_logp: logp.shallow_clone(),
        };
        let mb = Minibatch {
            rewards: t(&[0.0]),
            terminateds: t(&[0.0]),
            discounts: t(&[1.0]),
            weights: t(&[1.0]),
        };
        let loss = iql_loss(&e, &mb, &Coefficients { expectile: 0.7, beta: 1.0 });
        let reaches = |loss: &Tensor, x: &Tensor| {
            let g = Tensor::run_backward(&[loss], &[x], true, false);
            g[0].defined() && g[0].abs().sum(Kind::Float).double_value(&[]) > 0.0
        };
        assert!(reaches(&loss.value, &value) && !reaches(&loss.actor, &value));
        assert!(!reaches(&loss.critic, &value) && reaches(&loss.critic, &q_1));
        assert!(reaches(&loss.actor, &logp));
    }
}
