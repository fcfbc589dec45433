//! Epochs of shuffled minibatch steps over one batch, the update loop PPO
//! and APPO share: the algorithm supplies only the loss of a minibatch.
//!
//! With several data-parallel Learners each computes the loss on its own
//! slice of every minibatch (weighted so the group's mean gradient is the
//! whole minibatch's) and a Learner whose slice is empty still joins the
//! group's all-reduce with a zero gradient. The shuffling is seeded per
//! update, so every Learner draws the same minibatches and no RNG state
//! needs saving.
//!
//! [`host_minibatch_sgd`] walks the same minibatches with every step in
//! plain Rust, for CPU Learners of small MLP modules whose algorithm has a
//! host loss.

use std::ops::Range;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

use crate::host_threads::HostThreads;
use crate::learner::{Learner, Step};
use crate::learner_group::UpdateOutcome;
use crate::rl_module::RLModule;

/// How one batch is cut and walked.
#[derive(Clone, Copy, Debug)]
pub struct MinibatchPlan {
    pub num_epochs: usize,
    pub minibatch_size: usize,
    pub shuffle_seed: u64,
}

/// A minibatch as the loss sees it: `index` selects all of its rows from
/// the batch's tensors (on the Learner's device), `rows` is the part of
/// `index` this Learner computes its loss on (never empty).
pub struct MinibatchRows<'a> {
    pub index: &'a Tensor,
    pub rows: Range<usize>,
}

impl MinibatchRows<'_> {
    /// This Learner's rows of `column` (a tensor over the minibatch).
    pub fn own(&self, column: &Tensor) -> Tensor {
        column.narrow(0, self.rows.start as i64, self.rows.len() as i64)
    }

    /// This Learner's rows of a tensor over the whole batch.
    pub fn select(&self, batch_column: &Tensor) -> Tensor {
        batch_column.index_select(0, &self.own(self.index))
    }
}

/// Means over the steps taken: the total loss, the loss's `N` terms (as the
/// loss reported them) and the gradient norm before clipping.
pub struct SgdMeans<const N: usize> {
    pub total_loss: f64,
    pub terms: [f64; N],
    pub grad_norm: f64,
}

impl MinibatchPlan {
    /// Calls `step` with the batch rows of every minibatch, epoch after
    /// epoch, each epoch in a new shuffled order (the same on every
    /// Learner); stops at the first error.
    fn walk<E>(&self, len: usize, mut step: impl FnMut(&[i64]) -> Result<(), E>) -> Result<(), E> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.shuffle_seed);
        let mut order: Vec<i64> = (0..len as i64).collect();
        for _ in 0..self.num_epochs {
            order.shuffle(&mut rng);
            for chunk in order.chunks(self.minibatch_size) {
                step(chunk)?;
            }
        }
        Ok(())
    }
}

/// Sums of what the steps reported, for [`SgdMeans`].
struct Sums<const N: usize> {
    total: f64,
    terms: [f64; N],
    grad_norm: f64,
    steps: u32,
}

impl<const N: usize> Sums<N> {
    fn new() -> Self {
        Sums {
            total: 0.0,
            terms: [0.0; N],
            grad_norm: 0.0,
            steps: 0,
        }
    }

    fn add(&mut self, total: f64, terms: [f64; N], grad_norm: f64) {
        self.total += total;
        self.grad_norm += grad_norm;
        for (sum, term) in self.terms.iter_mut().zip(terms) {
            *sum += term;
        }
        self.steps += 1;
    }

    fn non_finite(&self, total: f64) -> UpdateOutcome {
        UpdateOutcome::NonFiniteLoss(format!("loss is {total} at minibatch step {}", self.steps))
    }

    fn means(&self) -> SgdMeans<N> {
        let n = f64::from(self.steps.max(1));
        SgdMeans {
            total_loss: self.total / n,
            terms: self.terms.map(|sum| sum / n),
            grad_norm: self.grad_norm / n,
        }
    }
}

/// Runs `plan` over a batch of `len` rows; `loss` returns a minibatch's loss
/// (a mean over this Learner's rows) and its `N` reported terms. Stops at
/// the first non-finite loss or failed step with the outcome to report.
pub fn minibatch_sgd<M: RLModule, const N: usize>(
    learner: &mut Learner<M>,
    len: usize,
    plan: MinibatchPlan,
    mut loss: impl FnMut(&Learner<M>, &MinibatchRows) -> (Tensor, [Tensor; N]),
) -> Result<SgdMeans<N>, UpdateOutcome> {
    let device = learner.device();
    let mut sums = Sums::new();
    plan.walk(len, |chunk| {
        let rows = learner.slice_of(chunk.len());
        let (step, terms) = if rows.is_empty() {
            (learner.apply_no_loss(), [0.0; N])
        } else {
            let index = Tensor::from_slice(chunk).to_device(device);
            // Averaged over the Learners, weighted slice means are the
            // whole minibatch's means.
            let weight = learner.slice_weight(rows.len(), chunk.len());
            let (total, terms) = loss(
                learner,
                &MinibatchRows {
                    index: &index,
                    rows,
                },
            );
            let terms = terms.map(|term| term.double_value(&[]) * weight);
            (learner.apply_loss(&(total * weight)), terms)
        };
        match step {
            Ok(Step::Applied { loss, grad_norm }) => {
                sums.add(loss, terms, grad_norm);
                Ok(())
            }
            Ok(Step::NonFiniteLoss(total)) => Err(sums.non_finite(total)),
            Err(e) => Err(UpdateOutcome::Failed(format!(
                "minibatch step {} failed: {e}",
                sums.steps
            ))),
        }
    })?;
    Ok(sums.means())
}

/// [`minibatch_sgd`] with every step's gradient computed on the host:
/// `loss` gets the flat parameters, a minibatch's batch rows and a zeroed
/// flat gradient, and the Learner's threads to split the rows over
/// ([`HostThreads::mean_over_rows`]); it adds the gradient of the
/// minibatch's mean loss into the gradient and returns the loss and its `N`
/// terms; clipping and Adam run in place on the Learner's buffers
/// ([`Learner::host_step`]). The same minibatches as
/// [`minibatch_sgd`].
///
/// # Panics
/// Unless the Learner [`Learner::trains_on_host`].
pub fn host_minibatch_sgd<M: RLModule, const N: usize>(
    learner: &mut Learner<M>,
    len: usize,
    plan: MinibatchPlan,
    mut loss: impl FnMut(&[f32], &[i64], &mut [f32], &mut HostThreads) -> (f64, [f64; N]),
) -> Result<SgdMeans<N>, UpdateOutcome> {
    let mut sums = Sums::new();
    plan.walk(len, |chunk| {
        let mut terms = [0.0; N];
        let step = learner.host_step(|theta, grad, threads| {
            let (total, step_terms) = loss(theta, chunk, grad, threads);
            terms = step_terms;
            total
        });
        match step.expect("a Learner that trains on the host") {
            Step::Applied { loss, grad_norm } => {
                sums.add(loss, terms, grad_norm);
                Ok(())
            }
            Step::NonFiniteLoss(total) => Err(sums.non_finite(total)),
        }
    })?;
    Ok(sums.means())
}

/// Rows `rows` of a host column of `width` values per row, in that order.
pub fn gather_rows(column: &[f32], width: usize, rows: &[i64]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * width);
    for &row in rows {
        let row = row as usize;
        out.extend_from_slice(&column[row * width..(row + 1) * width]);
    }
    out
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind};

    use super::*;
    use crate::host_distribution::TermGrads;
    use crate::learner::LearnerConfig;
    use crate::rl_module::{ActionSpace, ActorCritic, HostActorCritic, ModelConfig, ModuleKind};
    use crate::rl_module::{ModuleSpec, RLModule};

    /// A whole update on the host ends where the libtorch loop ends: the same
    /// minibatches in the same order, gradients, clipping and Adam steps, and
    /// the parameters and moments written back into the Learner (what its
    /// module, checkpoints and EnvRunners then read). The loss is
    /// E[V(s)²] − 0.1·E[H(π(·|s))], which trains every parameter.
    #[test]
    fn host_update_ends_where_the_libtorch_update_ends() {
        let config = LearnerConfig {
            module: ModuleSpec {
                observation_shape: vec![3],
                observation_dtype: Default::default(),
                action_space: ActionSpace::Discrete { n: 2 },
                model: ModelConfig {
                    fcnet_hiddens: vec![16, 16],
                    ..ModelConfig::default()
                },
                kind: ModuleKind::ActorCritic,
            },
            lr: 1e-2,
            grad_clip: Some(0.5),
            use_gpu: false,
            seed: 9,
        };
        let plan = MinibatchPlan {
            num_epochs: 3,
            minibatch_size: 16,
            shuffle_seed: 4,
        };
        tch::manual_seed(5);
        let obs = Tensor::randn([40, 3], (Kind::Float, Device::Cpu)) * 2.0;
        let host_obs = crate::to_host(&obs);

        let mut torch = Learner::<ActorCritic>::new(&config);
        let torch_means = minibatch_sgd(&mut torch, 40, plan, |learner, mb| {
            let (dist, values) = learner.module().forward(&mb.select(&obs));
            let loss = values.square().mean(Kind::Float) - dist.entropy().mean(Kind::Float) * 0.1;
            (loss, [])
        })
        .unwrap_or_else(|_| panic!("a finite loss"));

        let mut host = Learner::<ActorCritic>::new(&config);
        assert_eq!(
            host.flat_weights(),
            Learner::<ActorCritic>::new(&config).flat_weights()
        );
        let module = HostActorCritic::of(host.module()).expect("a small MLP");
        let host_means = host_minibatch_sgd(&mut host, 40, plan, |theta, rows, grad, _| {
            let b = rows.len();
            let forward = module.forward(theta, &gather_rows(&host_obs, 3, rows), b);
            let pi = &forward.distribution;
            let entropy = pi.entropy(b).iter().map(|&h| f64::from(h)).sum::<f64>() / b as f64;
            let loss = forward.values.iter().map(|v| f64::from(v * v)).sum::<f64>() / b as f64
                - 0.1 * entropy;
            let d_values: Vec<f32> = forward.values.iter().map(|v| 2.0 * v / b as f32).collect();
            let d_distribution = pi.backward(
                &vec![0.0; b],
                &TermGrads {
                    log_prob: &vec![0.0; b],
                    entropy: &vec![-0.1 / b as f32; b],
                    kl: None,
                },
            );
            module.backward(theta, &forward, d_distribution, &d_values, grad);
            (loss, [])
        })
        .unwrap_or_else(|_| panic!("a finite loss"));

        let (t, h) = (torch_means.total_loss, host_means.total_loss);
        assert!((t - h).abs() < 1e-5 * t.abs().max(1.0), "loss {t} vs {h}");
        let (t, h) = (torch_means.grad_norm, host_means.grad_norm);
        assert!((t - h).abs() < 1e-4 * t, "gradient norm {t} vs {h}");
        let close = |a: &[f32], b: &[f32], what: &str| {
            let worst = crate::max_abs_difference(a, b);
            assert!(worst < 1e-5, "{what}: off by {worst}");
        };
        let (before, after) = (
            Learner::<ActorCritic>::new(&config).flat_weights(),
            host.flat_weights(),
        );
        assert!(
            before.iter().zip(&after).any(|(x, y)| x != y),
            "the host steps reached the Learner"
        );
        close(&torch.flat_weights(), &after, "parameters");
        close(
            &torch.module().flat_weights(),
            &host.module().flat_weights(),
            "module weights",
        );
        let moments = |learner: &Learner<ActorCritic>| {
            let state = learner.state().unwrap();
            Tensor::load_multi_from_stream(std::io::Cursor::new(&state.optimizer)).unwrap()
        };
        for ((name, t), (_, h)) in moments(&torch).iter().zip(&moments(&host)) {
            close(
                &crate::to_host(&t.to_kind(Kind::Float)),
                &crate::to_host(&h.to_kind(Kind::Float)),
                name,
            );
        }
    }
}
