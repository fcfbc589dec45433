//! DQN's loss (Mnih et al. 2015) with Rainbow's parts, readable top to bottom:
//!
//! - Q_θ(s_t, a_t), the online network's value of the action taken;
//! - the target y_t = R_t^(n) + γ^n·(1 − done_t)·Q_θ⁻(s_{t+n}, a*), where
//!   a* = argmax_a Q_θ(s_{t+n}, a) with double Q-learning (the online network
//!   picks, the target network values) and argmax_a Q_θ⁻(s_{t+n}, a) without;
//! - the TD error δ_t = Q_θ(s_t, a_t) − y_t, and the loss
//!   L = mean_t w_t·ℓ(δ_t) with ℓ Huber or squared error and w_t the
//!   importance weights of prioritized replay (1 for uniform replay).

use tch::{Kind, Tensor};

use super::config::TdErrorLoss;

/// One minibatch of transitions, already on the Learner's device.
pub struct Minibatch {
    pub obs: Tensor,
    /// Action indices, int64 `[B]`.
    pub actions: Tensor,
    /// R_t^(n).
    pub rewards: Tensor,
    pub next_obs: Tensor,
    /// 1 where the episode terminated within the n steps, else 0.
    pub terminateds: Tensor,
    /// γ^k for the k steps summed into the reward.
    pub discounts: Tensor,
    pub weights: Tensor,
}

pub struct DqnLoss {
    pub total: Tensor,
    /// δ_t, detached, for the replay priorities.
    pub td_errors: Tensor,
    /// Mean Q_θ(s_t, a_t).
    pub q_mean: Tensor,
}

/// L from the online network's Q-values of `obs` (`q_values`) and of
/// `next_obs` (`next_online_q`, used to pick a* with double Q), and the
/// target network's of `next_obs` (`next_target_q`).
pub fn dqn_loss(
    q_values: &Tensor,
    next_online_q: &Tensor,
    next_target_q: &Tensor,
    mb: &Minibatch,
    double_q: bool,
    loss_fn: TdErrorLoss,
) -> DqnLoss {
    // Q_θ(s_t, a_t)
    let q_taken = q_values
        .gather(1, &mb.actions.unsqueeze(1), false)
        .squeeze_dim(1);
    // y_t = R_t^(n) + γ^n (1 − done_t) Q_θ⁻(s_{t+n}, a*)
    let target = tch::no_grad(|| {
        let best_next = if double_q {
            next_online_q.argmax(1, true)
        } else {
            next_target_q.argmax(1, true)
        };
        let q_next = next_target_q.gather(1, &best_next, false).squeeze_dim(1);
        &mb.rewards + &mb.discounts * (1.0 - &mb.terminateds) * q_next
    });
    // δ_t = Q_θ(s_t, a_t) − y_t
    let td_errors = &q_taken - &target;
    let per_sample = match loss_fn {
        TdErrorLoss::Huber => q_taken.huber_loss(&target, tch::Reduction::None, 1.0),
        TdErrorLoss::Mse => td_errors.square(),
    };
    DqnLoss::weighted(&per_sample, &mb.weights, &td_errors, &q_taken)
}

impl DqnLoss {
    /// L = mean_t w_t·`per_sample`_t, with what the replay priorities
    /// (`td_errors`) and the metrics (the mean of `q_taken`) read.
    pub(super) fn weighted(
        per_sample: &Tensor,
        weights: &Tensor,
        td_errors: &Tensor,
        q_taken: &Tensor,
    ) -> DqnLoss {
        DqnLoss {
            total: (weights * per_sample).mean(Kind::Float),
            td_errors: td_errors.detach(),
            q_mean: q_taken.mean(Kind::Float).detach(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(values: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(values).view(shape)
    }

    /// Two transitions, two actions, every term by hand. The online network
    /// prefers action 0 in the first next state, the target network action 1,
    /// so double Q and plain Q give different targets.
    #[test]
    fn targets_and_td_errors_match_hand_computed_values() {
        let mb = Minibatch {
            obs: t(&[0.0, 0.0], &[2, 1]),
            actions: Tensor::from_slice(&[1i64, 0]),
            rewards: t(&[1.0, 2.0], &[2]),
            next_obs: t(&[0.0, 0.0], &[2, 1]),
            terminateds: t(&[0.0, 1.0], &[2]),
            discounts: t(&[0.5, 0.5], &[2]),
            weights: t(&[1.0, 0.5], &[2]),
        };
        let q = t(&[3.0, 4.0, 5.0, 6.0], &[2, 2]);
        let next_online = t(&[9.0, 1.0, 0.0, 0.0], &[2, 2]);
        let next_target = t(&[2.0, 8.0, 7.0, 7.0], &[2, 2]);
        let scalar = |x: &Tensor| x.double_value(&[]);
        let values = |x: &Tensor| Vec::<f32>::try_from(x).unwrap();

        // Double Q: a* = 0 → y = 1 + 0.5·2 = 2; δ = 4 − 2 = 2. Terminal:
        // y = 2, δ = 5 − 2 = 3.
        let double = dqn_loss(&q, &next_online, &next_target, &mb, true, TdErrorLoss::Mse);
        assert_eq!(values(&double.td_errors), [2.0, 3.0]);
        assert!((scalar(&double.total) - (4.0 + 0.5 * 9.0) / 2.0).abs() < 1e-6);
        assert!((scalar(&double.q_mean) - 4.5).abs() < 1e-6);

        // Plain: a* = 1 → y = 1 + 0.5·8 = 5; δ = −1.
        let plain = dqn_loss(&q, &next_online, &next_target, &mb, false, TdErrorLoss::Mse);
        assert_eq!(values(&plain.td_errors), [-1.0, 3.0]);

        // Huber: ½δ² within 1, |δ| − ½ beyond.
        let huber = dqn_loss(&q, &next_online, &next_target, &mb, true, TdErrorLoss::Huber);
        assert!((scalar(&huber.total) - (1.5 + 0.5 * 2.5) / 2.0).abs() < 1e-6);
    }
}
