//! BC's loss: the negative log-likelihood of the recorded actions under the
//! policy, −E[log π_θ(a|s)], whose minimum is the policy that takes the
//! actions the recording took (maximum likelihood). The entropy of π_θ is
//! reported, not optimised: it shows how sure the cloned policy has become.

use oxray_rl::distributions::ActionDistribution;
use tch::Tensor;

pub struct BcLoss {
    /// −mean log π_θ(a|s): what the gradient step minimises.
    pub policy_loss: Tensor,
    pub entropy: Tensor,
}

pub fn bc_loss(dist: &ActionDistribution, actions: &Tensor) -> BcLoss {
    let log_likelihood = dist.log_prob(actions);
    BcLoss {
        policy_loss: -log_likelihood.mean(tch::Kind::Float),
        entropy: tch::no_grad(|| dist.entropy().mean(tch::Kind::Float)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// π(a|s) of 0.8 and 0.25 for the two recorded actions: the loss is
    /// −(ln 0.8 + ln 0.25)/2, and its gradient raises the logit of each
    /// recorded action (descent lowers the loss).
    #[test]
    fn the_loss_is_the_negative_log_likelihood_of_the_recorded_actions() {
        let logits = Tensor::from_slice(&[0.8f32, 0.2, 0.75, 0.25])
            .log()
            .view([2, 2])
            .set_requires_grad(true);
        let dist = ActionDistribution::categorical(logits.shallow_clone());
        let actions = Tensor::from_slice(&[0.0f32, 1.0]).view([2, 1]);
        let loss = bc_loss(&dist, &actions);
        let expected = -(0.8f64.ln() + 0.25f64.ln()) / 2.0;
        assert!((loss.policy_loss.double_value(&[]) - expected).abs() < 1e-6);
        let h = |p: f64| -(p * p.ln() + (1.0 - p) * (1.0 - p).ln());
        let entropy = (h(0.8) + h(0.75)) / 2.0;
        assert!((loss.entropy.double_value(&[]) - entropy).abs() < 1e-6);

        loss.policy_loss.backward();
        let grad = Vec::<f32>::try_from(logits.grad().view(-1)).unwrap();
        // ∂/∂logit of −ln softmax, halved by the mean: (π − 1[a])/2.
        let expected = [(0.8 - 1.0) / 2.0, 0.2 / 2.0, 0.75 / 2.0, (0.25 - 1.0) / 2.0];
        for (g, e) in grad.iter().zip(expected) {
            assert!((f64::from(*g) - e).abs() < 1e-6, "{grad:?}");
        }
    }
}
