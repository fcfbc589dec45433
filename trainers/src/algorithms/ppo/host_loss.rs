//! PPO's loss on the host, with its gradient: the same terms as
//! [`super::ppo_loss`] (the ratio r_t(θ), the clipped surrogate L^CLIP, the
//! value loss L^VF, the entropy bonus S, RLlib's optional KL penalty β·KL),
//! computed on a [`HostActorCritic`]'s forward pass, then each term's
//! derivative taken back through the distribution and the network into the
//! flat gradient. A CPU Learner of a small MLP module runs its minibatch
//! steps through this instead of libtorch's autograd (see
//! `oxray_rl::rl_module::flat_mlp` for why); the parity tests below hold it
//! to the libtorch loss and gradient.

use std::borrow::Cow;
use std::ops::Range;

use oxray_rl::host_distribution::{HostDistribution, TermGrads};
use oxray_rl::host_threads::{HostThreads, Share};
use oxray_rl::minibatch_sgd::gather_rows;
use oxray_rl::rl_module::HostActorCritic;

use super::config::PpoConfig;

/// One minibatch's rows, on the host.
#[derive(Clone)]
pub struct HostMinibatch {
    pub rows: usize,
    pub obs: Vec<f32>,
    pub actions: Vec<f32>,
    /// log π_θold(a_t|s_t), as recorded while sampling.
    pub old_logp: Vec<f32>,
    /// π_θold(·|s_t) before this update, for the KL term; `None` without one.
    pub old_dist: Option<HostDistribution>,
    /// Already normalised when the config asks for it.
    pub advantages: Vec<f32>,
    pub value_targets: Vec<f32>,
}

/// The batch's columns on the host, as the minibatches are cut from them.
pub struct HostBatch<'a> {
    pub obs: &'a [f32],
    pub obs_dim: usize,
    pub actions: &'a [f32],
    pub action_dim: usize,
    pub old_logp: &'a [f32],
    pub old_dist: Option<&'a HostDistribution>,
    pub advantages: &'a [f32],
    pub value_targets: &'a [f32],
}

impl HostBatch<'_> {
    /// Batch rows `rows`, advantages normalised over them when `normalize`.
    pub fn minibatch(&self, rows: &[i64], normalize: bool) -> HostMinibatch {
        let mut advantages = gather_rows(self.advantages, 1, rows);
        if normalize {
            normalize_advantages(&mut advantages);
        }
        HostMinibatch {
            rows: rows.len(),
            obs: gather_rows(self.obs, self.obs_dim, rows),
            actions: gather_rows(self.actions, self.action_dim, rows),
            old_logp: gather_rows(self.old_logp, 1, rows),
            old_dist: self.old_dist.map(|dist| dist.select(rows)),
            advantages,
            value_targets: gather_rows(self.value_targets, 1, rows),
        }
    }
}

impl HostMinibatch {
    /// Rows `rows` of the minibatch, its advantages as they are (already
    /// normalised over all its rows); borrowed when that is all of it.
    pub fn rows(&self, rows: Range<usize>) -> Cow<'_, HostMinibatch> {
        if rows == (0..self.rows) {
            return Cow::Borrowed(self);
        }
        let wide = |column: &[f32]| {
            let width = column.len() / self.rows;
            column[rows.start * width..rows.end * width].to_vec()
        };
        let indices: Vec<i64> = rows.clone().map(|row| row as i64).collect();
        Cow::Owned(HostMinibatch {
            rows: rows.len(),
            obs: wide(&self.obs),
            actions: wide(&self.actions),
            old_logp: wide(&self.old_logp),
            old_dist: self.old_dist.as_ref().map(|dist| dist.select(&indices)),
            advantages: wide(&self.advantages),
            value_targets: wide(&self.value_targets),
        })
    }
}

/// The loss and its terms.
#[derive(Clone, Copy, Debug)]
pub struct HostPpoLoss {
    pub total: f64,
    pub policy_loss: f64,
    pub vf_loss: f64,
    pub entropy: f64,
    /// E_t[KL(π_θold ‖ π_θ)], when the minibatch carries π_θold.
    pub mean_kl: Option<f64>,
}

impl HostPpoLoss {
    /// The loss over a whole minibatch from its shares' losses
    /// ([`HostThreads::mean_over_rows`]): each term the mean of the shares'
    /// weighted by their row counts.
    pub fn mean_of(shares: Vec<(Share, HostPpoLoss)>) -> HostPpoLoss {
        let mut whole = HostPpoLoss {
            total: 0.0,
            policy_loss: 0.0,
            vf_loss: 0.0,
            entropy: 0.0,
            mean_kl: None,
        };
        for (share, part) in shares {
            let weight = f64::from(share.weight);
            whole.total += weight * part.total;
            whole.policy_loss += weight * part.policy_loss;
            whole.vf_loss += weight * part.vf_loss;
            whole.entropy += weight * part.entropy;
            whole.mean_kl = part
                .mean_kl
                .map(|kl| whole.mean_kl.unwrap_or(0.0) + weight * kl);
        }
        whole
    }
}

/// The network PPO's loss is taken at, its parameters, the config's
/// coefficients and the KL coefficient β of this update.
#[derive(Clone, Copy)]
pub struct HostPpoPolicy<'a> {
    pub module: &'a HostActorCritic,
    pub params: &'a [f32],
    pub config: &'a PpoConfig,
    pub kl_coeff: f64,
}

/// The loss over a minibatch split by rows over the Learner's `threads`
/// (its advantages normalised over all of it first, so each row's term is
/// the same wherever it runs): [`host_ppo_loss`] on each share, combined.
pub fn host_ppo_loss_split(
    policy: HostPpoPolicy,
    mb: &HostMinibatch,
    grad: &mut [f32],
    threads: &mut HostThreads,
) -> HostPpoLoss {
    // Per row: both encoders' forward and backward passes.
    let work_per_row = 3 * policy.params.len();
    let shares = threads.mean_over_rows(mb.rows, work_per_row, grad, |rows, grad| {
        host_ppo_loss(policy, &mb.rows(rows), grad)
    });
    HostPpoLoss::mean_of(shares)
}

/// L = −L^CLIP + c_vf·L^VF − c_ent·S + β·KL on minibatch `mb` at the
/// policy's parameters; adds ∂L/∂θ into `grad` (laid out as the parameters).
pub fn host_ppo_loss(policy: HostPpoPolicy, mb: &HostMinibatch, grad: &mut [f32]) -> HostPpoLoss {
    let HostPpoPolicy {
        module,
        params,
        config,
        kl_coeff,
    } = policy;
    let b = mb.rows as f32;
    let forward = module.forward(params, &mb.obs, mb.rows);
    let pi = &forward.distribution;
    let log_pi = pi.log_prob(&mb.actions);
    let entropy = pi.entropy(mb.rows);
    let kl = mb.old_dist.as_ref().map(|old| pi.kl_from(old));
    let (low, high) = ((1.0 - config.clip_param) as f32, (1.0 + config.clip_param) as f32);

    // Each term of the mean, and ∂L/∂(its input) for the backward pass.
    let (mut surrogate_sum, mut vf_sum) = (0.0f64, 0.0f64);
    let mut d_log_pi = vec![0.0f32; mb.rows];
    let mut d_values = vec![0.0f32; mb.rows];
    for t in 0..mb.rows {
        // r_t(θ) = π_θ(a_t|s_t) / π_θold(a_t|s_t)
        let ratio = (log_pi[t] - mb.old_logp[t]).exp();
        // L^CLIP_t = min(r_t Â_t, clip(r_t, 1−ε, 1+ε) Â_t); the gradient
        // flows where the unclipped term is the minimum (where the two are
        // equal the ratio is inside the clip range, so both paths give
        // Â_t), and is zero where the clip holds the ratio.
        let advantage = mb.advantages[t];
        let unclipped = ratio * advantage;
        let clipped = ratio.clamp(low, high) * advantage;
        surrogate_sum += f64::from(unclipped.min(clipped));
        // ∂(−L^CLIP)/∂log π_t = −Â_t·r_t/B (∂r_t/∂log π_t = r_t)
        if unclipped <= clipped {
            d_log_pi[t] = -advantage * ratio / b;
        }
        // L^VF_t = (V_θ(s_t) − V_t^targ)², clipped at vf_clip_param (no
        // gradient where the clip holds it)
        let error = forward.values[t] - mb.value_targets[t];
        let squared_error = error * error;
        match config.vf_clip_param {
            Some(clip) if f64::from(squared_error) > clip => vf_sum += clip,
            _ => {
                vf_sum += f64::from(squared_error);
                d_values[t] = config.vf_loss_coeff as f32 * 2.0 * error / b;
            }
        }
    }
    let policy_loss = -surrogate_sum / f64::from(b);
    let vf_loss = vf_sum / f64::from(b);
    // S = E_t[H(π_θ(·|s_t))]
    let mean_entropy = entropy.iter().map(|&h| f64::from(h)).sum::<f64>() / f64::from(b);
    let d_entropy = vec![-config.entropy_coeff as f32 / b; mb.rows];
    let mean_kl = kl
        .as_ref()
        .map(|kl| kl.iter().map(|&k| f64::from(k)).sum::<f64>() / f64::from(b));
    let mut total = policy_loss + vf_loss * config.vf_loss_coeff - mean_entropy * config.entropy_coeff;
    let d_kl = vec![kl_coeff as f32 / b; mb.rows];
    let kl_term = match (config.use_kl_loss, &mb.old_dist, mean_kl) {
        (true, Some(old), Some(mean_kl)) => {
            total += mean_kl * kl_coeff;
            Some((old, d_kl.as_slice()))
        }
        _ => None,
    };

    // Backward: through the distribution, then the network.
    let d_distribution = pi.backward(
        &mb.actions,
        &TermGrads {
            log_prob: &d_log_pi,
            entropy: &d_entropy,
            kl: kl_term,
        },
    );
    module.backward(params, &forward, d_distribution, &d_values, grad);
    HostPpoLoss {
        total,
        policy_loss,
        vf_loss,
        entropy: mean_entropy,
        mean_kl,
    }
}

/// [`super::normalize_advantages`] on the host, in place: zero mean and
/// unit (unbiased) standard deviation over the minibatch.
pub fn normalize_advantages(advantages: &mut [f32]) {
    let n = advantages.len();
    if n < 2 {
        return;
    }
    let mean = advantages.iter().map(|&a| f64::from(a)).sum::<f64>() / n as f64;
    let variance = advantages
        .iter()
        .map(|&a| (f64::from(a) - mean).powi(2))
        .sum::<f64>()
        / (n - 1) as f64;
    let (mean, scale) = (mean as f32, (variance.sqrt() + 1e-8) as f32);
    advantages.iter_mut().for_each(|a| *a = (*a - mean) / scale);
}

#[cfg(test)]
mod tests {
    use oxray_rl::optim::flat_gradient;
    use oxray_rl::rl_module::{
        ActionSpace, Activation, ActorCritic, ModelConfig, ModuleKind, ModuleSpec, RLModule,
    };
    use oxray_rl::to_host;
    use tch::{Device, Kind, Tensor};

    use super::*;
    use crate::algorithms::ppo::loss::{normalize_advantages as torch_normalize, ppo_loss, Minibatch};

    const ROWS: i64 = 64;
    const OBS_DIM: i64 = 5;

    fn module(space: &ActionSpace, activation: Activation, hiddens: Vec<i64>, shared: bool) -> ActorCritic {
        let spec = ModuleSpec {
            observation_shape: vec![OBS_DIM as usize],
            observation_dtype: Default::default(),
            action_space: space.clone(),
            model: ModelConfig {
                fcnet_hiddens: hiddens,
                fcnet_activation: activation,
                vf_share_layers: shared,
                ..ModelConfig::default()
            },
            kind: ModuleKind::ActorCritic,
        };
        ActorCritic::new(&spec, Device::Cpu)
    }

    fn randn(shape: &[i64], scale: f64) -> Tensor {
        Tensor::randn(shape, (Kind::Float, Device::Cpu)) * scale
    }

    /// The host loss terms and gradient are libtorch's (`ppo_loss` through
    /// autograd, as the libtorch Learner computes them) on random weights
    /// far from the initial near-uniform policy and a random minibatch
    /// whose ratios and value errors fall on both sides of their clips:
    /// Categorical and Gaussian heads, tanh and relu, separate and shared
    /// encoders, with and without value clipping and the KL term.
    #[test]
    fn host_loss_and_gradient_are_libtorchs() {
        tch::manual_seed(3);
        let spaces = [
            ActionSpace::Discrete { n: 3 },
            ActionSpace::Box {
                low: vec![-1.0; 2],
                high: vec![1.0; 2],
            },
        ];
        let mut cases = 0;
        for space in &spaces {
            for (activation, hiddens) in [(Activation::Tanh, vec![64, 64]), (Activation::Relu, vec![33, 17])] {
                for shared in [false, true] {
                    for (vf_clip_param, use_kl_loss) in [(None, false), (Some(1.0), true)] {
                        let what = format!("{space:?} {activation:?} shared {shared} vf_clip {vf_clip_param:?} kl {use_kl_loss}");
                        let mut net = module(space, activation, hiddens.clone(), shared);
                        let n = net.flat_weights().len() as i64;
                        let theta = to_host(&randn(&[n], 0.3));
                        net.set_flat_weights(&theta).unwrap();
                        let mut old_net = module(space, activation, hiddens.clone(), shared);
                        let theta_old: Vec<f32> = theta
                            .iter()
                            .zip(to_host(&randn(&[n], 0.05)))
                            .map(|(t, d)| t + d)
                            .collect();
                        old_net.set_flat_weights(&theta_old).unwrap();

                        let obs = randn(&[ROWS, OBS_DIM], 1.5);
                        let (dist, values) = net.forward(&obs);
                        let actions = match space {
                            ActionSpace::Discrete { n } => Tensor::randint(*n as i64, [ROWS, 1], (Kind::Float, Device::Cpu)),
                            ActionSpace::Box { low, .. } => randn(&[ROWS, low.len() as i64], 1.0),
                        };
                        // Ratios spread over [e^-0.6, e^0.6], across 1 ± 0.2.
                        let old_logp = tch::no_grad(|| dist.log_prob(&actions)).detach()
                            + (Tensor::rand([ROWS], (Kind::Float, Device::Cpu)) - 0.5) * 1.2;
                        let advantages = torch_normalize(&randn(&[ROWS], 2.0));
                        let value_targets = tch::no_grad(|| values.detach()) + randn(&[ROWS], 1.5);
                        let old_dist = tch::no_grad(|| old_net.distribution(&obs));
                        let config = PpoConfig {
                            clip_param: 0.2,
                            vf_clip_param,
                            vf_loss_coeff: 0.5,
                            entropy_coeff: 0.01,
                            use_kl_loss,
                            ..PpoConfig::default()
                        };
                        let minibatch = Minibatch {
                            obs: obs.shallow_clone(),
                            actions: actions.shallow_clone(),
                            old_logp: old_logp.shallow_clone(),
                            old_dist: use_kl_loss.then_some(old_dist),
                            advantages: advantages.shallow_clone(),
                            value_targets: value_targets.shallow_clone(),
                        };
                        let torch = ppo_loss(&dist, &values, &minibatch, &config, 0.3);
                        let torch_grad = to_host(&flat_gradient(&torch.total, &net.var_store().trainable_variables()));

                        let host_net = HostActorCritic::of(&net).expect("a small MLP module");
                        let host_mb = HostMinibatch {
                            rows: ROWS as usize,
                            obs: to_host(&obs),
                            actions: to_host(&actions),
                            old_logp: to_host(&old_logp),
                            old_dist: use_kl_loss.then(|| {
                                host_net.forward(&theta_old, &to_host(&obs), ROWS as usize).distribution
                            }),
                            advantages: to_host(&advantages),
                            value_targets: to_host(&value_targets),
                        };
                        let mut host_grad = vec![0.0; n as usize];
                        let policy = HostPpoPolicy {
                            module: &host_net,
                            params: &theta,
                            config: &config,
                            kl_coeff: 0.3,
                        };
                        let host = host_ppo_loss(policy, &host_mb, &mut host_grad);

                        let scalar = |t: &Tensor| t.double_value(&[]);
                        for (name, t, h) in [
                            ("total", scalar(&torch.total), host.total),
                            ("policy", scalar(&torch.policy_loss), host.policy_loss),
                            ("vf", scalar(&torch.vf_loss), host.vf_loss),
                            ("entropy", scalar(&torch.entropy), host.entropy),
                            ("kl", torch.mean_kl.as_ref().map_or(0.0, scalar), host.mean_kl.unwrap_or(0.0)),
                        ] {
                            assert!((t - h).abs() <= 1e-5 * t.abs().max(1.0), "{what}: {name} {t} vs {h}");
                        }
                        let scale = torch_grad.iter().fold(0.0f32, |m, g| m.max(g.abs()));
                        assert!(scale > 1e-3, "{what}: a gradient to compare");
                        let worst = torch_grad
                            .iter()
                            .zip(&host_grad)
                            .map(|(t, h)| (t - h).abs())
                            .fold(0.0f32, f32::max);
                        assert!(worst <= 1e-4 * scale, "{what}: gradient off by {worst} (largest {scale})");
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 16);
    }

    /// Split by rows over two threads, as a Learner with two CPUs takes its
    /// steps, the loss terms and gradient are those over the whole
    /// minibatch: advantages are normalised over all of it before it
    /// splits, and each share's mean weighs by its rows.
    #[test]
    fn a_loss_split_over_threads_is_the_loss_over_the_whole_minibatch() {
        tch::manual_seed(5);
        let mut threads = HostThreads::new(2);
        let spaces = [
            ActionSpace::Discrete { n: 3 },
            ActionSpace::Box {
                low: vec![-1.0; 2],
                high: vec![1.0; 2],
            },
        ];
        for space in &spaces {
            let net = module(space, Activation::Tanh, vec![128, 128], false);
            let host_net = HostActorCritic::of(&net).expect("a small MLP module");
            let n = net.flat_weights().len();
            assert_eq!(threads.shares(ROWS as usize, 3 * n).len(), 2, "the rows split");
            let theta = to_host(&randn(&[n as i64], 0.3));
            let theta_old: Vec<f32> = theta.iter().zip(to_host(&randn(&[n as i64], 0.05))).map(|(t, d)| t + d).collect();
            let obs = to_host(&randn(&[ROWS, OBS_DIM], 1.5));
            let actions = to_host(&match space {
                ActionSpace::Discrete { n } => Tensor::randint(*n as i64, [ROWS, 1], (Kind::Float, Device::Cpu)),
                ActionSpace::Box { low, .. } => randn(&[ROWS, low.len() as i64], 1.0),
            });
            let old = host_net.forward(&theta_old, &obs, ROWS as usize).distribution;
            let mut advantages = to_host(&randn(&[ROWS], 2.0));
            normalize_advantages(&mut advantages);
            let mb = HostMinibatch {
                rows: ROWS as usize,
                old_logp: old.log_prob(&actions),
                old_dist: Some(old),
                value_targets: to_host(&randn(&[ROWS], 1.5)),
                obs,
                actions,
                advantages,
            };
            let config = PpoConfig {
                vf_clip_param: Some(1.0),
                use_kl_loss: true,
                ..PpoConfig::default()
            };
            let mut whole_grad = vec![0.0; n];
            let policy = HostPpoPolicy {
                module: &host_net,
                params: &theta,
                config: &config,
                kl_coeff: 0.3,
            };
            let whole = host_ppo_loss(policy, &mb, &mut whole_grad);
            let mut split_grad = vec![0.0; n];
            let split = host_ppo_loss_split(policy, &mb, &mut split_grad, &mut threads);
            for (name, w, s) in [
                ("total", whole.total, split.total),
                ("policy", whole.policy_loss, split.policy_loss),
                ("vf", whole.vf_loss, split.vf_loss),
                ("entropy", whole.entropy, split.entropy),
                ("kl", whole.mean_kl.unwrap(), split.mean_kl.unwrap()),
            ] {
                assert!((w - s).abs() <= 1e-6 * w.abs().max(1.0), "{space:?}: {name} {w} vs {s}");
            }
            let scale = whole_grad.iter().fold(0.0f32, |m, g| m.max(g.abs()));
            assert!(scale > 1e-3, "{space:?}: a gradient to compare");
            let worst = whole_grad.iter().zip(&split_grad).map(|(w, s)| (w - s).abs()).fold(0.0f32, f32::max);
            assert!(worst <= 1e-5 * scale, "{space:?}: gradient off by {worst} (largest {scale})");
        }
    }

    /// A minibatch cut on the host holds the batch rows the libtorch
    /// Learner selects, with advantages normalised as it normalises them.
    #[test]
    fn host_minibatches_are_the_libtorch_learners() {
        tch::manual_seed(4);
        let rows = [7i64, 0, 19, 3, 3, 12, 5, 18];
        let column = |width: i64| randn(&[20, width], 1.0);
        let (obs, actions, logp, advantages, targets) = (column(3), column(2), column(1), column(1) * 4.0 + 1.0, column(1));
        let host = (to_host(&obs), to_host(&actions), to_host(&logp), to_host(&advantages), to_host(&targets));
        let batch = HostBatch {
            obs: &host.0,
            obs_dim: 3,
            actions: &host.1,
            action_dim: 2,
            old_logp: &host.2,
            old_dist: None,
            advantages: &host.3,
            value_targets: &host.4,
        };
        let index = Tensor::from_slice(&rows);
        let select = |t: &Tensor| to_host(&t.index_select(0, &index));
        let mb = batch.minibatch(&rows, true);
        assert_eq!(mb.rows, rows.len());
        assert_eq!(mb.obs, select(&obs));
        assert_eq!(mb.actions, select(&actions));
        assert_eq!(mb.old_logp, select(&logp));
        assert_eq!(mb.value_targets, select(&targets));
        let normalised = to_host(&torch_normalize(&advantages.view(-1).index_select(0, &index)));
        for (t, h) in normalised.iter().zip(&mb.advantages) {
            assert!((t - h).abs() < 1e-5, "{normalised:?} vs {:?}", mb.advantages);
        }
        assert_eq!(batch.minibatch(&rows, false).advantages, select(&advantages));
    }
}
