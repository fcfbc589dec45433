//! DQN's loss on the host, with its gradient: the same terms as
//! [`super::dqn_loss`] (Q_θ(s_t, a_t), the target y_t with or without double
//! Q, the TD error δ_t, the weighted Huber or squared loss), computed on a
//! [`HostQNetwork`]'s forward passes, then ∂L/∂Q_θ(s_t, a_t) taken back
//! through the network into the flat gradient. A CPU Learner of a small MLP
//! Q-network takes its gradient steps through this instead of libtorch's
//! autograd (DQN pays libtorch's per-op dispatch on every step, one
//! minibatch each); the parity test below holds it to the libtorch loss.

use oxray_rl::distributions::argmax;
use oxray_rl::host_threads::Share;
use oxray_rl::replay_buffer::ReplayBatch;
use oxray_rl::rl_module::{HeadNoise, HostQNetwork};

use super::config::TdErrorLoss;

pub struct HostDqnLoss {
    /// L = mean_t w_t·ℓ(δ_t).
    pub total: f64,
    /// δ_t, for the replay priorities.
    pub td_errors: Vec<f32>,
    /// Mean Q_θ(s_t, a_t).
    pub q_mean: f64,
}

impl HostDqnLoss {
    /// The loss over a whole batch from its shares' losses
    /// ([`oxray_rl::host_threads::HostThreads::mean_over_rows`]): the means weighted by the
    /// shares' row counts, the TD errors in row order.
    pub fn mean_of(shares: Vec<(Share, HostDqnLoss)>) -> HostDqnLoss {
        let mut whole = HostDqnLoss {
            total: 0.0,
            td_errors: Vec::new(),
            q_mean: 0.0,
        };
        for (share, part) in shares {
            let weight = f64::from(share.weight);
            whole.total += weight * part.total;
            whole.q_mean += weight * part.q_mean;
            whole.td_errors.extend(part.td_errors);
        }
        whole
    }
}

/// One network's parameters (laid out as the [`HostQNetwork`]'s flat
/// vector) and, with NoisyNets, the noise its head computes under.
#[derive(Clone, Copy)]
pub struct NetworkParams<'a> {
    pub theta: &'a [f32],
    pub noise: Option<&'a HeadNoise>,
}

/// L over the replayed `batch` at the `online` and `target` networks'
/// parameters, adding ∂L/∂θ into `grad`.
pub fn host_dqn_loss(
    network: &HostQNetwork,
    online: NetworkParams,
    target: NetworkParams,
    batch: &ReplayBatch,
    double_q: bool,
    loss_fn: TdErrorLoss,
    grad: &mut [f32],
) -> HostDqnLoss {
    let (rows, n) = (batch.len(), network.num_actions());
    let pass = |params: NetworkParams, obs: &[f32]| {
        network.forward(params.theta, params.noise, obs, rows)
    };
    // Q_θ(s_t, ·), Q_θ⁻(s_{t+n}, ·), and Q_θ(s_{t+n}, ·) to pick a* with
    // double Q (the online network picks, the target network values).
    let next_target = pass(target, &batch.next_obs);
    let next_online = double_q.then(|| pass(online, &batch.next_obs));
    let online_pass = pass(online, &batch.obs);
    let next_target_q = next_target.q_values();
    let picking_q = next_online.as_ref().unwrap_or(&next_target).q_values();

    let mut td_errors = Vec::with_capacity(rows);
    let mut d_q = vec![0.0; rows * n];
    let (mut total, mut q_sum) = (0.0, 0.0);
    for t in 0..rows {
        let action = batch.actions[t] as usize;
        // Q_θ(s_t, a_t)
        let q_taken = row(online_pass.q_values(), t, n)[action];
        // y_t = R_t^(n) + γ^n (1 − done_t) Q_θ⁻(s_{t+n}, a*)
        let best_next = argmax(row(picking_q, t, n));
        let not_done = if batch.terminateds[t] { 0.0 } else { 1.0 };
        let target = batch.rewards[t] + batch.discounts[t] * not_done * row(next_target_q, t, n)[best_next];
        // δ_t = Q_θ(s_t, a_t) − y_t, and ℓ(δ_t) with its derivative.
        let delta = q_taken - target;
        let (loss, d_loss) = match loss_fn {
            TdErrorLoss::Huber if delta.abs() < 1.0 => (0.5 * delta * delta, delta),
            TdErrorLoss::Huber => (delta.abs() - 0.5, delta.signum()),
            TdErrorLoss::Mse => (delta * delta, 2.0 * delta),
        };
        let weight = batch.weights[t];
        total += f64::from(weight * loss);
        q_sum += f64::from(q_taken);
        d_q[t * n + action] = weight * d_loss / rows as f32;
        td_errors.push(delta);
    }
    network.backward(online.theta, &online_pass, &d_q, grad);
    HostDqnLoss {
        total: total / rows as f64,
        td_errors,
        q_mean: q_sum / rows as f64,
    }
}

/// Row `t` of `[B, n]` Q-values.
fn row(q: &[f32], t: usize, n: usize) -> &[f32] {
    &q[t * n..(t + 1) * n]
}

#[cfg(test)]
pub(super) mod tests {
    use oxray_rl::host_threads::HostThreads;
    use oxray_rl::learner::{Learner, LearnerConfig};
    use oxray_rl::optim::flat_gradient;
    use oxray_rl::rl_module::{
        ActionSpace, ModelConfig, ModuleKind, ModuleSpec, QNetwork, ValueSupport,
    };
    use oxray_rl::rl_module::RLModule;
    use oxray_rl::schedule::Schedule;
    use oxray_rl::to_host;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use tch::{Kind, Tensor};

    use super::*;
    use crate::algorithms::dqn::{dqn_loss, DqnLoss, Minibatch};

    /// A Learner of a small Q-network over 3 actions: dueling or not, noisy
    /// or not, C51's with `distributional`.
    fn head_learner(
        dueling: bool,
        noisy: bool,
        distributional: Option<ValueSupport>,
        seed: u64,
    ) -> Learner<QNetwork> {
        Learner::new(&LearnerConfig {
            module: ModuleSpec {
                observation_shape: vec![3],
                observation_dtype: Default::default(),
                action_space: ActionSpace::Discrete { n: 3 },
                model: ModelConfig {
                    fcnet_hiddens: vec![32, 32],
                    ..ModelConfig::default()
                },
                kind: ModuleKind::QNetwork {
                    dueling,
                    epsilon: Schedule(vec![(0, 0.1)]),
                    distributional,
                    noisy_sigma0: noisy.then_some(0.5),
                },
            },
            lr: 1e-3,
            grad_clip: None,
            use_gpu: false,
            seed,
        })
    }

    /// A replayed batch whose rewards are large enough that some TD errors
    /// fall beyond Huber's quadratic part and some within it, with some
    /// terminal rows and uneven importance weights.
    pub(in crate::algorithms::dqn) fn batch(rows: usize) -> ReplayBatch {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut column = |len: usize, scale: f32| -> Vec<f32> {
            (0..len).map(|_| rng.gen_range(-scale..scale)).collect()
        };
        ReplayBatch {
            obs_dim: 3,
            action_dim: 1,
            obs: column(rows * 3, 2.0),
            next_obs: column(rows * 3, 2.0),
            rewards: column(rows, 3.0),
            discounts: vec![0.99; rows],
            weights: column(rows, 1.0).iter().map(|w| 1.0 + w.abs()).collect(),
            actions: (0..rows).map(|t| (t % 3) as f32).collect(),
            terminateds: (0..rows).map(|t| t % 4 == 0).collect(),
            indices: (0..rows as u32).collect(),
        }
    }

    /// `batch` as libtorch's loss takes it.
    pub(in crate::algorithms::dqn) fn minibatch(batch: &ReplayBatch) -> Minibatch {
        let tensor = |v: &[f32]| Tensor::from_slice(v);
        Minibatch {
            obs: tensor(&batch.obs).view([-1, 3]),
            actions: tensor(&batch.actions).to_kind(Kind::Int64),
            rewards: tensor(&batch.rewards),
            next_obs: tensor(&batch.next_obs).view([-1, 3]),
            terminateds: Tensor::from_slice(&batch.terminateds).to_kind(Kind::Float),
            discounts: tensor(&batch.discounts),
            weights: tensor(&batch.weights),
        }
    }

    /// An online and a target network (Learner seeds 1 and 2, so that
    /// double Q and plain Q pick different actions), each under noise of
    /// its own (seeds 5 and 6) when noisy, drawn alike on libtorch and on
    /// the host (so σ gets a gradient and both sides must draw in the same
    /// order).
    pub(in crate::algorithms::dqn) struct Networks {
        pub online: Learner<QNetwork>,
        pub target: Learner<QNetwork>,
        pub host: HostQNetwork,
        theta: Vec<f32>,
        target_theta: Vec<f32>,
        online_noise: Option<HeadNoise>,
        target_noise: Option<HeadNoise>,
    }

    impl Networks {
        pub fn new(dueling: bool, noisy: bool, distributional: Option<ValueSupport>) -> Self {
            let online = head_learner(dueling, noisy, distributional.clone(), 1);
            let target = head_learner(dueling, noisy, distributional, 2);
            let host = HostQNetwork::of(online.module()).expect("a small MLP");
            let rng = |seed| ChaCha8Rng::seed_from_u64(seed);
            online.module().resample_noise(&mut rng(5));
            target.module().resample_noise(&mut rng(6));
            let (online_noise, target_noise) =
                (host.draw_noise(&mut rng(5)), host.draw_noise(&mut rng(6)));
            assert_eq!(online_noise.is_some(), noisy);
            Networks {
                theta: online.flat_weights(),
                target_theta: target.module().flat_weights(),
                online,
                target,
                host,
                online_noise,
                target_noise,
            }
        }

        /// The online and the target network's parameters and noise.
        pub fn host_params(&self) -> (NetworkParams<'_>, NetworkParams<'_>) {
            let online = NetworkParams {
                theta: &self.theta,
                noise: self.online_noise.as_ref(),
            };
            let target = NetworkParams {
                theta: &self.target_theta,
                noise: self.target_noise.as_ref(),
            };
            (online, target)
        }

        /// libtorch's [`dqn_loss`] over `batch` at the two networks.
        pub fn torch_loss(&self, batch: &ReplayBatch, double_q: bool, loss_fn: TdErrorLoss) -> DqnLoss {
            let (online, target) = (self.online.module(), self.target.module());
            let mb = minibatch(batch);
            dqn_loss(
                &online.q_values(&mb.obs),
                &online.q_values(&mb.next_obs),
                &target.q_values(&mb.next_obs),
                &mb,
                double_q,
                loss_fn,
            )
        }

        /// A zeroed gradient of the online network's layout.
        pub fn zero_gradient(&self) -> Vec<f32> {
            vec![0.0; self.theta.len()]
        }

        /// `torch`'s loss, priorities, mean Q and gradient match `host`'s
        /// and `grad`.
        pub fn assert_matches(&self, case: &str, torch: &DqnLoss, host: HostDqnLoss, grad: Vec<f32>) {
            let params = self.online.module().var_store().trainable_variables();
            let torch_grad = to_host(&flat_gradient(&torch.total, &params));
            let close = |a: f64, b: f64, what: &str| {
                assert!((a - b).abs() < 1e-5 * a.abs().max(1.0), "{case}: {what} {a} vs {b}")
            };
            close(torch.total.double_value(&[]), host.total, "loss");
            close(torch.q_mean.double_value(&[]), host.q_mean, "mean Q");
            for (what, a, b) in [
                ("priorities", to_host(&torch.td_errors), host.td_errors),
                ("gradient", torch_grad, grad),
            ] {
                let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
                assert!(a.len() == b.len() && worst < 1e-5, "{case}: {what} off by {worst}");
            }
        }
    }

    /// Loss, TD errors, mean Q and gradient match libtorch's [`dqn_loss`]
    /// for each head, plain and noisy, with and without double Q, Huber and
    /// squared error.
    #[test]
    fn loss_and_gradient_match_libtorch() {
        let batch = batch(24);
        for (dueling, noisy, double_q, loss_fn) in [
            (false, false, false, TdErrorLoss::Huber),
            (false, false, true, TdErrorLoss::Mse),
            (true, false, true, TdErrorLoss::Huber),
            (true, false, false, TdErrorLoss::Mse),
            (false, true, true, TdErrorLoss::Huber),
            (true, true, true, TdErrorLoss::Mse),
            (true, true, false, TdErrorLoss::Huber),
        ] {
            let networks = Networks::new(dueling, noisy, None);
            let torch = networks.torch_loss(&batch, double_q, loss_fn);
            let mut grad = networks.zero_gradient();
            let (online, target) = networks.host_params();
            let host = host_dqn_loss(
                &networks.host,
                online,
                target,
                &batch,
                double_q,
                loss_fn,
                &mut grad,
            );
            let case = format!("dueling {dueling}, noisy {noisy}, double Q {double_q}, {loss_fn:?}");
            let beyond_one = host.td_errors.iter().filter(|d| d.abs() > 1.0).count();
            assert!(0 < beyond_one && beyond_one < batch.len(), "{case}: both Huber parts");
            networks.assert_matches(&case, &torch, host, grad);
        }
    }

    /// Split by rows over two threads, as a Learner with two CPUs takes its
    /// steps, the loss, the TD errors (in row order), mean Q and gradient
    /// are still libtorch's over the whole batch.
    #[test]
    fn a_loss_split_over_threads_is_the_loss_over_the_whole_batch() {
        let batch = batch(25);
        let mut threads = HostThreads::new(2);
        for (dueling, noisy) in [(false, false), (true, true)] {
            let networks = Networks::new(dueling, noisy, None);
            let torch = networks.torch_loss(&batch, true, TdErrorLoss::Huber);
            let mut grad = networks.zero_gradient();
            let (online, target) = networks.host_params();
            let shares = threads.mean_over_rows(batch.len(), usize::MAX / batch.len(), &mut grad, |rows, grad| {
                let share = batch.rows(rows);
                host_dqn_loss(&networks.host, online, target, &share, true, TdErrorLoss::Huber, grad)
            });
            assert_eq!(shares.len(), 2, "the rows split");
            let case = format!("dueling {dueling}, noisy {noisy}, split over two threads");
            networks.assert_matches(&case, &torch, HostDqnLoss::mean_of(shares), grad);
        }
    }
}
