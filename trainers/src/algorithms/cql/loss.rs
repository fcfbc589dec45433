//! CQL's losses (Kumar et al. 2020, CQL(H) with importance-sampled
//! log-sum-exp, as the paper's code and RLlib), readable top to bottom.
//! They are SAC's ([`sac_loss`]) with two changes:
//!
//! - the critic loss gains the conservative term, per Q-function
//!   L_CQL,i = w·(T·mean_t log Σ_k exp(X_ik(s_t)/T) − mean_t Q_θᵢ(s_t, a_t)),
//!   where the X_ik are Q_θᵢ(s_t, a_k) − log μ(a_k) for N actions from each
//!   of three proposals μ: uniform over (−1, 1)^d (log μ = d·ln ½), π(·|s_t)
//!   and π(·|s_{t+1}) (log μ = log π, detached). The log-sum-exp is a soft
//!   maximum of Q over actions, so minimising it pushes down the values of
//!   actions the recording never took, while −Q(s_t, a_t) holds up the
//!   recorded ones: Q stays a lower bound where the data says nothing;
//! - with the deterministic backup the target drops the entropy bonus:
//!   y = R^(n) + γ^n·(1 − done)·min_i Q_θ⁻ᵢ(s', a'), a' ~ π(·|s');
//!
//! and, for the first `bc_iters` gradient steps, the actor loss is
//! behaviour cloning, L_π = mean_t[α·log π(ã|s_t) − log π(a_t|s_t)], so the
//! policy starts near the recording's before the Q-functions mean anything.
//! w is `min_q_weight`, T `temperature`.

use tch::{Kind, Tensor};

use crate::algorithms::sac::{sac_loss, Evaluations as SacEvaluations, Minibatch, SacLoss};

/// Q_θᵢ at s_t of N actions from one proposal, with log μ of each.
pub struct Proposal {
    /// (Q₁, Q₂), `[B, N]` each.
    pub q: (Tensor, Tensor),
    /// log μ(a_k), `[B, N]` (or a scalar for the uniform proposal).
    pub log_density: Tensor,
}

/// The network outputs CQL's losses are built from.
pub struct Evaluations {
    /// SAC's: Q of the recorded actions, π at s_t, π at s' with the target
    /// Q-functions, log α.
    pub sac: SacEvaluations,
    /// The three proposals: uniform, π(·|s_t), π(·|s_{t+1}).
    pub proposals: [Proposal; 3],
    /// log π(a_t|s_t) of the recorded actions, `[B]`; present while the
    /// policy learns by behaviour cloning.
    pub recorded_logp: Option<Tensor>,
}

pub struct Coefficients {
    pub target_entropy: f64,
    pub min_q_weight: f64,
    pub temperature: f64,
    pub deterministic_backup: bool,
}

pub struct CqlLoss {
    /// SAC's losses, the critic's with the conservative term added and the
    /// actor's behaviour cloning while `recorded_logp` is given.
    pub sac: SacLoss,
    /// Σ_i L_CQL,i, detached.
    pub conservative: Tensor,
}

pub fn cql_loss(mut e: Evaluations, mb: &Minibatch, c: &Coefficients) -> CqlLoss {
    if c.deterministic_backup {
        // y without −α·log π(a'|s'): the soft target with those taken as 0.
        e.sac.next.logp = e.sac.next.logp.zeros_like();
    }
    let mut loss = sac_loss(&e.sac, mb, c.target_entropy);
    // L_CQL,i = w (T mean log Σ_k exp(X_ik / T) − mean Q_θᵢ(s, a))
    let conservative_term = |q_of: fn(&(Tensor, Tensor)) -> &Tensor| {
        let x: Vec<Tensor> = e
            .proposals
            .iter()
            .map(|p| q_of(&p.q) - p.log_density.detach())
            .collect();
        let soft_maximum = (Tensor::cat(&x, 1) / c.temperature)
            .logsumexp([1], false)
            .mean(Kind::Float)
            * c.temperature;
        (soft_maximum - q_of(&e.sac.q).mean(Kind::Float)) * c.min_q_weight
    };
    let conservative = conservative_term(|q| &q.0) + conservative_term(|q| &q.1);
    loss.critic = &loss.critic + &conservative;
    if let Some(recorded_logp) = &e.recorded_logp {
        // L_π = mean[α log π(ã|s) − log π(a_t|s_t)]
        let alpha = e.sac.log_alpha.detach().exp();
        let policy = &e.sac.policy;
        loss.actor = (policy.logp.squeeze_dim(-1) * alpha - recorded_logp).mean(Kind::Float);
    }
    CqlLoss {
        sac: loss,
        conservative: conservative.detach(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::sac::fixtures::{scalar, t};
    use crate::algorithms::sac::Expectation;

    /// One transition, α = 2, one draw per proposal (N = 1), T = 0.5,
    /// w = 3: every term by hand.
    fn evaluations(recorded_logp: Option<Tensor>) -> Evaluations {
        let drawn = |logp: f32, q_1: f32, q_2: f32| Expectation {
            weights: t(&[1.0]).view([1, 1]),
            logp: t(&[logp]).view([1, 1]),
            q: (t(&[q_1]).view([1, 1]), t(&[q_2]).view([1, 1])),
        };
        let proposal = |q_1: f32, q_2: f32, log_density: f32| Proposal {
            q: (t(&[q_1]).view([1, 1]), t(&[q_2]).view([1, 1])),
            log_density: t(&[log_density]).view([1, 1]),
        };
        Evaluations {
            sac: SacEvaluations {
                q: (t(&[3.0]), t(&[2.0])),
                policy: drawn(-1.0, 4.0, 5.0),
                next: drawn(-0.5, 6.0, 4.0),
                log_alpha: t(&[2f32.ln()]),
            },
            proposals: [
                proposal(1.0, 0.0, 0.5f32.ln()),
                proposal(2.0, 1.0, -1.0),
                proposal(0.0, 3.0, 0.5),
            ],
            recorded_logp,
        }
    }

    fn minibatch() -> Minibatch {
        Minibatch {
            rewards: t(&[1.0]),
            terminateds: t(&[0.0]),
            discounts: t(&[0.5]),
            weights: t(&[1.0]),
        }
    }

    fn coefficients(deterministic_backup: bool) -> Coefficients {
        Coefficients {
            target_entropy: -1.0,
            min_q_weight: 3.0,
            temperature: 0.5,
            deterministic_backup,
        }
    }

    /// T·log Σ_k exp(x_k / T), by hand.
    fn soft_maximum(x: [f64; 3], temperature: f64) -> f64 {
        temperature * x.iter().map(|v| (v / temperature).exp()).sum::<f64>().ln()
    }

    #[test]
    fn the_critic_loss_adds_the_conservative_term_by_hand() {
        let loss = cql_loss(evaluations(None), &minibatch(), &coefficients(true));
        // Deterministic backup: y = 1 + 0.5·min(6, 4) = 3; SAC's critic
        // loss ½(3 − 3)² + ½(2 − 3)².
        let sac_critic = 0.5;
        // X₁ = (1 + ln 2, 2 + 1, 0 − 0.5), X₂ = (0 + ln 2, 1 + 1, 3 − 0.5).
        let ln_2 = 2f64.ln();
        let term_1 = 3.0 * (soft_maximum([1.0 + ln_2, 3.0, -0.5], 0.5) - 3.0);
        let term_2 = 3.0 * (soft_maximum([ln_2, 2.0, 2.5], 0.5) - 2.0);
        assert!((scalar(&loss.conservative) - (term_1 + term_2)).abs() < 1e-5);
        assert!((scalar(&loss.sac.critic) - (sac_critic + term_1 + term_2)).abs() < 1e-5);
        // The actor's loss is SAC's: 2·(−1) − min(4, 5).
        assert!((scalar(&loss.sac.actor) + 6.0).abs() < 1e-6);
    }

    /// Without the deterministic backup the target keeps SAC's entropy
    /// bonus: y = 1 + 0.5·(4 − 2·(−0.5)) = 3.5.
    #[test]
    fn the_soft_backup_keeps_the_entropy_bonus() {
        let deterministic = cql_loss(evaluations(None), &minibatch(), &coefficients(true));
        let soft = cql_loss(evaluations(None), &minibatch(), &coefficients(false));
        let sac_critic = |y: f64| 0.5 * (3.0 - y).powi(2) + 0.5 * (2.0 - y).powi(2);
        let difference = scalar(&soft.sac.critic) - scalar(&deterministic.sac.critic);
        assert!((difference - (sac_critic(3.5) - sac_critic(3.0))).abs() < 1e-5);
    }

    /// While the policy clones the recording, its loss is
    /// α·log π(ã|s) − log π(a_t|s_t) = 2·(−1) − (−0.25), and its gradient
    /// reaches log π(a_t|s_t).
    #[test]
    fn behaviour_cloning_replaces_the_actor_loss() {
        let recorded_logp = t(&[-0.25]).set_requires_grad(true);
        let loss = cql_loss(
            evaluations(Some(recorded_logp.shallow_clone())),
            &minibatch(),
            &coefficients(true),
        );
        assert!((scalar(&loss.sac.actor) + 1.75).abs() < 1e-6);
        loss.sac.actor.backward();
        assert_eq!(Vec::<f32>::try_from(&recorded_logp.grad()).unwrap(), [-1.0]);
    }
}
