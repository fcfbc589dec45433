//! Epochs of shuffled minibatch steps over one batch, the update loop PPO
//! and APPO share: the algorithm supplies only the loss of a minibatch.
//!
//! With several data-parallel Learners each computes the loss on its own
//! slice of every minibatch (weighted so the group's mean gradient is the
//! whole minibatch's) and a Learner whose slice is empty still joins the
//! group's all-reduce with a zero gradient. The shuffling is seeded per
//! update, so every Learner draws the same minibatches and no RNG state
//! needs saving.

use std::ops::Range;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

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
    let mut rng = ChaCha8Rng::seed_from_u64(plan.shuffle_seed);
    let mut order: Vec<i64> = (0..len as i64).collect();
    let (mut total_sum, mut term_sums, mut norm_sum) = (0.0, [0.0; N], 0.0);
    let mut steps = 0u32;
    for _ in 0..plan.num_epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(plan.minibatch_size) {
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
            let (total, grad_norm) = match step {
                Ok(Step::Applied { loss, grad_norm }) => (loss, grad_norm),
                Ok(Step::NonFiniteLoss(total)) => {
                    return Err(UpdateOutcome::NonFiniteLoss(format!(
                        "loss is {total} at minibatch step {steps}"
                    )))
                }
                Err(e) => {
                    return Err(UpdateOutcome::Failed(format!(
                        "minibatch step {steps} failed: {e}"
                    )))
                }
            };
            total_sum += total;
            norm_sum += grad_norm;
            for (sum, term) in term_sums.iter_mut().zip(terms) {
                *sum += term;
            }
            steps += 1;
        }
    }
    let n = f64::from(steps.max(1));
    Ok(SgdMeans {
        total_loss: total_sum / n,
        terms: term_sums.map(|sum| sum / n),
        grad_norm: norm_sum / n,
    })
}
