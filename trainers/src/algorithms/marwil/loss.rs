//! MARWIL's loss (Wang et al. 2018, "Exponentially Weighted Imitation
//! Learning for Batched Historical Data"), as RLlib computes it:
//!
//! - the advantage of a recorded step is its value target (the discounted
//!   return to the episode's end, bootstrapped where the episode was cut
//!   off) less the current value: A = R − V_θ(s);
//! - a running mean of A², c², normalises it, and each step's
//!   log-likelihood is weighted by exp(β · A / c): the policy imitates the
//!   recorded actions that did better than the value function expected
//!   more than those that did worse, L^π = −mean(exp(β·A/c) · log π_θ(a|s))
//!   (the weight is a constant of the gradient);
//! - the value function regresses on the targets, L^V = ½·mean(A²), and the
//!   loss is L^π + vf_coeff · L^V.
//!
//! With β = 0 every weight is 1 and L^π alone is behaviour cloning's
//! negative log-likelihood (RLlib's BC); no value function is trained.

use oxray_rl::distributions::ActionDistribution;
use tch::{Kind, Tensor};

/// A minibatch of recorded steps as the loss reads them.
pub struct Minibatch {
    pub actions: Tensor,
    /// R: the value target of each step.
    pub value_targets: Tensor,
}

/// The loss's constants.
#[derive(Clone, Copy, Debug)]
pub struct MarwilCoefficients {
    pub beta: f64,
    pub vf_coeff: f64,
    /// c², the running mean of the squared advantage.
    pub sqd_adv_norm: f64,
}

pub struct MarwilLoss {
    pub total: Tensor,
    pub policy_loss: Tensor,
    pub vf_loss: Tensor,
    /// mean(A²), which moves c² (zero with β = 0).
    pub mean_sqd_advantage: Tensor,
    pub entropy: Tensor,
}

pub fn marwil_loss(
    dist: &ActionDistribution,
    values: &Tensor,
    mb: &Minibatch,
    coefficients: MarwilCoefficients,
) -> MarwilLoss {
    let log_likelihood = dist.log_prob(&mb.actions);
    let entropy = tch::no_grad(|| dist.entropy().mean(Kind::Float));
    if coefficients.beta == 0.0 {
        let policy_loss = -log_likelihood.mean(Kind::Float);
        return MarwilLoss {
            total: policy_loss.shallow_clone(),
            policy_loss,
            vf_loss: Tensor::from(0.0f32),
            mean_sqd_advantage: Tensor::from(0.0f32),
            entropy,
        };
    }
    let advantages = &mb.value_targets - values;
    let mean_sqd_advantage = advantages.square().mean(Kind::Float);
    let vf_loss = 0.5 * &mean_sqd_advantage;
    let weights = tch::no_grad(|| {
        (coefficients.beta * advantages.detach() / (1e-8 + coefficients.sqd_adv_norm.sqrt()))
            .exp()
    });
    let policy_loss = -(weights * log_likelihood).mean(Kind::Float);
    MarwilLoss {
        total: &policy_loss + coefficients.vf_coeff * &vf_loss,
        policy_loss,
        vf_loss,
        mean_sqd_advantage: mean_sqd_advantage.detach(),
        entropy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    /// π(a|s) of 0.8 and 0.25 for the two recorded actions.
    fn two_steps() -> (Tensor, ActionDistribution, Minibatch) {
        let logits = Tensor::from_slice(&[0.8f32, 0.2, 0.75, 0.25])
            .log()
            .view([2, 2])
            .set_requires_grad(true);
        let dist = ActionDistribution::categorical(logits.shallow_clone());
        let mb = Minibatch {
            actions: Tensor::from_slice(&[0.0f32, 1.0]).view([2, 1]),
            value_targets: Tensor::from_slice(&[3.0f32, -1.0]),
        };
        (logits, dist, mb)
    }

    /// β = 0 is behaviour cloning: −(ln 0.8 + ln 0.25)/2, and the gradient
    /// raises the logit of each recorded action (descent lowers the loss).
    #[test]
    fn without_beta_the_loss_is_the_negative_log_likelihood() {
        let (logits, dist, mb) = two_steps();
        let values = Tensor::from_slice(&[0.0f32, 0.0]);
        let coefficients = MarwilCoefficients {
            beta: 0.0,
            vf_coeff: 1.0,
            sqd_adv_norm: 100.0,
        };
        let loss = marwil_loss(&dist, &values, &mb, coefficients);
        let expected = -(0.8f64.ln() + 0.25f64.ln()) / 2.0;
        assert!((scalar(&loss.total) - expected).abs() < 1e-6);
        let h = |p: f64| -(p * p.ln() + (1.0 - p) * (1.0 - p).ln());
        assert!((scalar(&loss.entropy) - (h(0.8) + h(0.75)) / 2.0).abs() < 1e-6);
        loss.total.backward();
        let grad = Vec::<f32>::try_from(logits.grad().view(-1)).unwrap();
        // ∂/∂logit of −ln softmax, halved by the mean: (π − 1[a])/2.
        let expected = [(0.8 - 1.0) / 2.0, 0.2 / 2.0, 0.75 / 2.0, (0.25 - 1.0) / 2.0];
        for (g, e) in grad.iter().zip(expected) {
            assert!((f64::from(*g) - e).abs() < 1e-6, "{grad:?}");
        }
    }

    /// Values 1 and 1 against targets 3 and −1: A = 2 and −2, mean(A²) = 4,
    /// with c² = 4 and β = 0.5 the weights are e^{0.5} and e^{−0.5}, and
    /// L = −(e^{0.5} ln 0.8 + e^{−0.5} ln 0.25)/2 + 0.5 · ½ · 4.
    #[test]
    fn advantages_weight_the_log_likelihood_exponentially() {
        let (_, dist, mb) = two_steps();
        let values = Tensor::from_slice(&[1.0f32, 1.0]).set_requires_grad(true);
        let coefficients = MarwilCoefficients {
            beta: 0.5,
            vf_coeff: 0.5,
            sqd_adv_norm: 4.0,
        };
        let loss = marwil_loss(&dist, &values, &mb, coefficients);
        let policy = -(0.5f64.exp() * 0.8f64.ln() + (-0.5f64).exp() * 0.25f64.ln()) / 2.0;
        assert!((scalar(&loss.policy_loss) - policy).abs() < 1e-5);
        assert!((scalar(&loss.vf_loss) - 2.0).abs() < 1e-6);
        assert!((scalar(&loss.mean_sqd_advantage) - 4.0).abs() < 1e-6);
        assert!((scalar(&loss.total) - (policy + 1.0)).abs() < 1e-5);
        // The weights are constants: the values' gradient is the value
        // loss's alone, vf_coeff · ½ · 2(V − R) / 2 rows = (V − R)/4.
        loss.total.backward();
        let grad = Vec::<f32>::try_from(values.grad()).unwrap();
        assert!((grad[0] + 0.5).abs() < 1e-6 && (grad[1] - 0.5).abs() < 1e-6, "{grad:?}");
    }
}
