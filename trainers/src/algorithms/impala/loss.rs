//! IMPALA's loss (Espeholt et al. 2018), readable top to bottom: the V-trace
//! advantages A_t (computed beforehand, see [`oxray_rl::vtrace`]) weight the
//! log-probability of the action taken, a plain policy gradient with no
//! ratio and no clipping; the value function regresses on the V-trace
//! targets v_t; an entropy bonus. APPO replaces the policy-gradient term
//! with its clipped surrogate and keeps the other two.
//!
//! Terms are means over the minibatch. RLlib's IMPALA sums them over the
//! batch instead; Adam's step does not depend on that constant factor, only
//! `grad_clip` does (here it bounds the mean's gradient).

use oxray_rl::distributions::ActionDistribution;
use tch::{Kind, Tensor};

use super::config::ImpalaConfig;

/// One minibatch, already on the Learner's device.
pub struct Minibatch {
    pub actions: Tensor,
    /// V-trace's policy-gradient advantages A_t.
    pub pg_advantages: Tensor,
    /// V-trace's value targets v_t.
    pub value_targets: Tensor,
}

/// The loss and its terms (scalars).
pub struct ImpalaLoss {
    pub total: Tensor,
    pub policy_loss: Tensor,
    pub vf_loss: Tensor,
    pub entropy: Tensor,
}

/// L = L^PG + c_vf·L^VF − c_ent·S, from the current policy's distribution
/// `dist` and values `values` on minibatch `mb`.
pub fn impala_loss(
    dist: &ActionDistribution,
    values: &Tensor,
    mb: &Minibatch,
    config: &ImpalaConfig,
) -> ImpalaLoss {
    // L^PG = −E_t[A_t · log π_θ(a_t|s_t)], where
    // A_t = min(ρ̄_pg, π/μ)·(r_t + γ v_{t+1} − V(s_t)) is a constant here.
    let policy_loss = -(dist.log_prob(&mb.actions) * &mb.pg_advantages).mean(Kind::Float);
    let ValueAndEntropy { vf_loss, entropy } = value_and_entropy(dist, values, &mb.value_targets);
    let total = &policy_loss + &vf_loss * config.vf_loss_coeff - &entropy * config.entropy_coeff;
    ImpalaLoss {
        total,
        policy_loss,
        vf_loss,
        entropy,
    }
}

/// The terms IMPALA and APPO share besides their policy term.
pub struct ValueAndEntropy {
    pub vf_loss: Tensor,
    pub entropy: Tensor,
}

/// L^VF and S from the current policy's `dist` and `values` and the
/// V-trace targets.
pub fn value_and_entropy(
    dist: &ActionDistribution,
    values: &Tensor,
    value_targets: &Tensor,
) -> ValueAndEntropy {
    ValueAndEntropy {
        // L^VF = ½ E_t[(V_θ(s_t) − v_t)²]
        vf_loss: (values - value_targets).square().mean(Kind::Float) * 0.5,
        // S = E_t[H(π_θ(·|s_t))]
        entropy: dist.entropy().mean(Kind::Float),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    /// Two samples, two actions; every term worked out by hand.
    #[test]
    fn loss_terms_match_hand_computed_values() {
        // π_θ(a=0) = 0.5 and 0.8; the first sample took action 0, the second 1.
        let p = [0.5f32, 0.5, 0.8, 0.2];
        let dist = ActionDistribution::categorical(Tensor::from_slice(&p).log().view([2, 2]));
        let mb = Minibatch {
            actions: Tensor::from_slice(&[0.0f32, 1.0]).view([2, 1]),
            pg_advantages: Tensor::from_slice(&[2.0f32, -1.0]),
            value_targets: Tensor::from_slice(&[1.0f32, 3.0]),
        };
        let values = Tensor::from_slice(&[0.0f32, 1.0]);
        let config = ImpalaConfig {
            vf_loss_coeff: 0.25,
            entropy_coeff: 0.1,
            ..ImpalaConfig::default()
        };
        let loss = impala_loss(&dist, &values, &mb, &config);
        // −mean(2·ln 0.5, −1·ln 0.2)
        let policy = -(2.0 * 0.5f64.ln() - 0.2f64.ln()) / 2.0;
        assert!((scalar(&loss.policy_loss) - policy).abs() < 1e-5);
        // ½·mean(1², 2²) = 1.25
        assert!((scalar(&loss.vf_loss) - 1.25).abs() < 1e-5);
        let h = |p: f64| -(p * p.ln() + (1.0 - p) * (1.0 - p).ln());
        let entropy = (h(0.5) + h(0.8)) / 2.0;
        assert!((scalar(&loss.entropy) - entropy).abs() < 1e-5);
        let total = policy + 0.25 * 1.25 - 0.1 * entropy;
        assert!((scalar(&loss.total) - total).abs() < 1e-5);
    }

    /// The policy term's gradient is A_t·∇log π(a_t|s_t): a positive
    /// advantage raises the logit of the action taken.
    #[test]
    fn a_positive_advantage_raises_the_action_taken() {
        let logits = Tensor::zeros([1, 2], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let dist = ActionDistribution::categorical(logits.shallow_clone());
        let mb = Minibatch {
            actions: Tensor::from_slice(&[1.0f32]).view([1, 1]),
            pg_advantages: Tensor::from_slice(&[3.0f32]),
            value_targets: Tensor::from_slice(&[0.0f32]),
        };
        let config = ImpalaConfig {
            entropy_coeff: 0.0,
            ..ImpalaConfig::default()
        };
        let loss = impala_loss(&dist, &Tensor::from_slice(&[0.0f32]), &mb, &config);
        loss.total.backward();
        // ∂(−3·log softmax(z)_1)/∂z = −3·(onehot(1) − softmax(z)) = [1.5, −1.5]
        let grad = Vec::<f32>::try_from(&logits.grad().view(-1)).unwrap();
        assert!((grad[0] - 1.5).abs() < 1e-5 && (grad[1] + 1.5).abs() < 1e-5, "{grad:?}");
    }
}
