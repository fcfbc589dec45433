//! The threads a Learner's host steps run on ([`crate::Learner::host_step`]),
//! as many as its libtorch intra-op threads: one per whole CPU it reserved
//! (`learners.num_cpus_per_learner`). A loss that is a mean over a
//! minibatch's rows (DQN's) splits by rows: each thread takes the mean over
//! its share of the rows into a gradient buffer of its own, and the shares
//! combine weighted by their row counts ([`HostThreads::mean_over_rows`]);
//! Adam's per-element update splits the parameter vector
//! ([`HostThreads::run_each`]). That is what libtorch's intra-op threads do
//! inside each op, done once per step instead, so the threads meet once per
//! gradient instead of once per matrix product.
//!
//! The threads are a [`ThreadTeam`]: its helpers spin between the jobs of
//! a step and sleep between iterations, so a hand-off within a step costs
//! well under a microsecond, while the first of an iteration wakes a
//! sleeping thread (tens of microseconds). A share must carry enough work
//! to pay for that, so small minibatches of small networks stay on the
//! calling thread.

use std::ops::Range;
use std::sync::{Mutex, OnceLock};

use crate::optim::squared_norm;
use crate::thread_team::ThreadTeam;

/// Multiply-adds below which a share of rows is not worth another thread:
/// about 60 µs of matrix products on one core here, a few times a sleeping
/// helper's wake-up.
const MIN_SHARE_MULTIPLY_ADDS: usize = 1 << 20;

pub struct HostThreads {
    /// The caller's team, its helpers started when work first splits (a
    /// Learner that trains through libtorch never starts them); `None`
    /// inside when they could not be started.
    helpers: OnceLock<Option<ThreadTeam>>,
    threads: usize,
    /// One gradient buffer per helper, kept from step to step.
    scratch: Vec<Vec<f32>>,
}

/// A share of a minibatch's rows: its rows and its weight in the mean over
/// all of them (its row count over theirs).
#[derive(Clone, Debug, PartialEq)]
pub struct Share {
    pub rows: Range<usize>,
    pub weight: f32,
}

impl HostThreads {
    /// `threads` threads in all, the calling one included (at least one).
    /// Helpers that cannot be started leave the work on the caller.
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        HostThreads {
            helpers: OnceLock::new(),
            threads,
            scratch: vec![Vec::new(); threads - 1],
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// How `rows` rows of `multiply_adds_per_row` each split: one share per
    /// thread, fewer where a share would be too small to pay for its
    /// thread, contiguous and in order.
    pub fn shares(&self, rows: usize, multiply_adds_per_row: usize) -> Vec<Share> {
        let work = rows.saturating_mul(multiply_adds_per_row);
        let count = self.parts(work, MIN_SHARE_MULTIPLY_ADDS).min(rows).max(1);
        (0..count)
            .map(|i| {
                let range = i * rows / count..(i + 1) * rows / count;
                Share {
                    weight: range.len() as f32 / rows.max(1) as f32,
                    rows: range,
                }
            })
            .collect()
    }

    /// How many parts `elements` elements split into so that each part
    /// has at least `min_per_part` of them: one per thread at most.
    pub fn parts(&self, elements: usize, min_per_part: usize) -> usize {
        self.threads.min(elements / min_per_part.max(1)).max(1)
    }

    /// The length of each contiguous part of a vector of `elements` split
    /// into [`HostThreads::parts`] (the last may be shorter; at least 1,
    /// so an empty vector is no parts).
    pub fn part_len(&self, elements: usize, min_per_part: usize) -> usize {
        elements.div_ceil(self.parts(elements, min_per_part)).max(1)
    }

    /// Runs `work` on each of `parts`, the first on the calling thread and
    /// the others on the helpers, and returns when all have run (a panic in
    /// any is raised here).
    pub fn run_each<T: Send>(&self, parts: Vec<T>, work: impl Fn(T) + Sync) {
        let helpers = (parts.len() > 1)
            .then(|| started(&self.helpers, self.threads))
            .flatten();
        run_each(helpers, parts, work)
    }

    /// The mean over `rows` rows of a loss whose gradient `share` computes
    /// for some of them: `share(rows, grad)` adds the gradient of the mean
    /// over `rows` into a zeroed `grad` and returns what else it computed.
    /// `grad` (zero on entry) ends as the gradient of the mean over all
    /// rows; the shares' results come back in row order with their
    /// weights. With one share this is `share(0..rows, grad)` exactly.
    pub fn mean_over_rows<R: Send>(
        &mut self,
        rows: usize,
        multiply_adds_per_row: usize,
        grad: &mut [f32],
        share: impl Fn(Range<usize>, &mut [f32]) -> R + Sync,
    ) -> Vec<(Share, R)> {
        let shares = self.shares(rows, multiply_adds_per_row);
        let helpers = (shares.len() > 1)
            .then(|| started(&self.helpers, self.threads))
            .flatten();
        let mut results: Vec<Option<R>> = shares.iter().map(|_| None).collect();
        let len = grad.len();
        let (first_grad, scratch) = (&mut *grad, &mut self.scratch[..shares.len() - 1]);
        let mut buffers = vec![first_grad];
        for buffer in scratch.iter_mut() {
            buffer.resize(len, 0.0);
            buffers.push(buffer);
        }
        let parts = shares.iter().zip(buffers).zip(&mut results).enumerate();
        run_each(helpers, parts.collect(), |(i, ((part, buffer), result))| {
            // A helper zeroes its own buffer, in parallel with the others
            // (the caller's, `grad`, is zero on entry).
            if i > 0 {
                buffer.fill(0.0);
            }
            *result = Some(share(part.rows.clone(), buffer));
        });
        if shares.len() > 1 {
            let weights: Vec<f32> = shares.iter().map(|share| share.weight).collect();
            self.combine(grad, &weights);
        }
        shares
            .into_iter()
            .zip(results)
            .map(|(share, result)| (share, result.expect("every share ran")))
            .collect()
    }
}

/// The team of the caller and `threads − 1` helpers, started on first use.
fn started(helpers: &OnceLock<Option<ThreadTeam>>, threads: usize) -> Option<&ThreadTeam> {
    helpers
        .get_or_init(|| ThreadTeam::start(threads - 1, "oxray-host-grad").ok())
        .as_ref()
}

/// [`HostThreads::run_each`] on `team`, if any: part `i` on the team's
/// thread `i`.
fn run_each<T: Send>(team: Option<&ThreadTeam>, parts: Vec<T>, work: impl Fn(T) + Sync) {
    match team {
        Some(team) if parts.len() > 1 => {
            let count = parts.len();
            let slots: Vec<Mutex<Option<T>>> = parts
                .into_iter()
                .map(|part| Mutex::new(Some(part)))
                .collect();
            team.run(count, |i| {
                let part = slots[i].lock().expect("part slot").take();
                work(part.expect("each part runs once"));
            });
        }
        _ => parts.into_iter().for_each(work),
    }
}

/// Elements below which a part of [`HostThreads::combine`] or
/// [`HostThreads::norm`] is not worth another thread (as Adam's parts).
const MIN_ELEMENTS_PER_THREAD: usize = 1 << 14;

impl HostThreads {
    /// The L2 norm of `grad`, its parts' squares summed over the threads:
    /// each thread reads the part it last combined, still in its cache.
    pub fn norm(&self, grad: &[f32]) -> f64 {
        let parts: Vec<&[f32]> = grad
            .chunks(self.part_len(grad.len(), MIN_ELEMENTS_PER_THREAD))
            .collect();
        let mut sums = vec![0.0; parts.len()];
        self.run_each(parts.into_iter().zip(&mut sums).collect(), |(part, sum)| {
            *sum = squared_norm(part)
        });
        sums.iter().sum::<f64>().sqrt()
    }

    /// `grad ← w₀·grad + Σ wᵢ·scratchᵢ₋₁` for `weights` w₀, w₁, …, split
    /// over the threads in contiguous parts of the vector.
    fn combine(&self, grad: &mut [f32], weights: &[f32]) {
        let part = self.part_len(grad.len(), MIN_ELEMENTS_PER_THREAD);
        let scratch = &self.scratch[..weights.len() - 1];
        let parts: Vec<(usize, &mut [f32])> = grad.chunks_mut(part).enumerate().collect();
        self.run_each(parts, |(index, grad)| {
            let range = index * part..index * part + grad.len();
            grad.iter_mut().for_each(|g| *g *= weights[0]);
            for (weight, other) in weights[1..].iter().zip(scratch) {
                grad.iter_mut()
                    .zip(&other[range.clone()])
                    .for_each(|(g, o)| *g += weight * o);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Work per row that makes a share of `rows / 2` rows worth a thread.
    fn heavy(rows: usize) -> usize {
        2 * MIN_SHARE_MULTIPLY_ADDS / rows
    }

    #[test]
    fn rows_split_into_one_contiguous_share_per_thread_when_worth_it() {
        let two = HostThreads::new(2);
        assert_eq!(two.threads(), 2);
        let shares = two.shares(65, heavy(65) + 1);
        assert_eq!(
            shares,
            vec![
                Share {
                    rows: 0..32,
                    weight: 32.0 / 65.0
                },
                Share {
                    rows: 32..65,
                    weight: 33.0 / 65.0
                },
            ]
        );
        // Too little work, too few rows, or one thread: all rows in one share.
        let all = |rows| {
            vec![Share {
                rows: 0..rows,
                weight: 1.0,
            }]
        };
        assert_eq!(two.shares(64, heavy(64) / 2), all(64));
        assert_eq!(two.shares(1, usize::MAX), all(1));
        assert_eq!(HostThreads::new(1).shares(64, usize::MAX), all(64));
        assert_eq!(HostThreads::new(0).threads(), 1);
    }

    /// The mean over rows of ½(θ·x_t − y_t)², whose gradient is the mean of
    /// (θ·x_t − y_t)·x_t: split over two threads it is the one-thread
    /// gradient up to rounding, each share ran on a thread of its own, and
    /// the results come back in row order with their weights.
    #[test]
    fn a_mean_over_rows_split_over_threads_is_the_mean_over_all_rows() {
        const WIDTH: usize = 5;
        let rows = 37;
        let x: Vec<f32> = (0..rows * WIDTH)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let y: Vec<f32> = (0..rows).map(|t| (t % 4) as f32 - 1.5).collect();
        let theta = [0.3f32, -0.2, 0.5, 0.1, -0.4];
        let share = |range: Range<usize>, grad: &mut [f32]| {
            let n = range.len() as f32;
            let mut loss = 0.0;
            for t in range.clone() {
                let row = &x[t * WIDTH..(t + 1) * WIDTH];
                let residual: f32 = row.iter().zip(&theta).map(|(a, b)| a * b).sum::<f32>() - y[t];
                loss += 0.5 * residual * residual / n;
                grad.iter_mut()
                    .zip(row)
                    .for_each(|(g, a)| *g += residual * a / n);
            }
            (loss, range, std::thread::current().id())
        };
        let mut one_grad = vec![0.0; WIDTH];
        let one = HostThreads::new(1).mean_over_rows(rows, usize::MAX, &mut one_grad, share);
        let mut two_grad = vec![0.0; WIDTH];
        let two = HostThreads::new(2).mean_over_rows(rows, heavy(rows) + 1, &mut two_grad, share);

        for (a, b) in one_grad.iter().zip(&two_grad) {
            assert!((a - b).abs() < 1e-6, "{one_grad:?} against {two_grad:?}");
        }
        assert_eq!(one.len(), 1);
        assert_eq!(two.len(), 2);
        let (first, second) = (&two[0], &two[1]);
        assert_eq!((first.1 .1.clone(), second.1 .1.clone()), (0..18, 18..37));
        assert_eq!(
            (first.0.rows.clone(), second.0.rows.clone()),
            (0..18, 18..37)
        );
        assert_ne!(first.1 .2, second.1 .2, "both shares ran on one thread");
        assert_eq!(first.1 .2, std::thread::current().id());
        let split_loss: f32 = two
            .iter()
            .map(|(share, (loss, ..))| share.weight * loss)
            .sum();
        assert!((split_loss - one[0].1 .0).abs() < 1e-6);
    }

    /// A gradient long enough that combining the shares splits over the
    /// threads too: step after step (each helper's buffer reused, so it
    /// must start from zero again) three threads give one thread's
    /// gradient.
    #[test]
    fn long_gradients_combine_over_the_threads_step_after_step() {
        const LEN: usize = 3 * MIN_ELEMENTS_PER_THREAD + 5;
        let rows = 30;
        let mut three = HostThreads::new(3);
        for step in 0..3 {
            // Row t adds (t + step)·(i mod 7) to element i, over the rows'
            // count: the mean over all rows is the same however they split.
            let share = |range: Range<usize>, grad: &mut [f32]| {
                let n = range.len() as f32;
                for t in range.clone() {
                    grad.iter_mut()
                        .enumerate()
                        .for_each(|(i, g)| *g += (t + step) as f32 * (i % 7) as f32 / n);
                }
            };
            let mut one_grad = vec![0.0; LEN];
            HostThreads::new(1).mean_over_rows(rows, usize::MAX, &mut one_grad, share);
            let mut three_grad = vec![0.0; LEN];
            let shares = three.mean_over_rows(rows, heavy(rows) * 2, &mut three_grad, share);
            assert_eq!(shares.len(), 3);
            for (i, (a, b)) in one_grad.iter().zip(&three_grad).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * a.abs().max(1.0),
                    "step {step}, element {i}: {a} against {b}"
                );
            }
        }
    }

    /// The norm over three threads' parts is the norm over the whole
    /// vector: every element counted once, the tail after the last whole
    /// part of eight included.
    #[test]
    fn norm_over_the_threads_counts_every_element_once() {
        const LEN: usize = 3 * MIN_ELEMENTS_PER_THREAD + 5;
        let grad: Vec<f32> = (0..LEN).map(|i| (i % 13) as f32 - 6.0).collect();
        let whole: f64 = grad.iter().map(|&g| f64::from(g) * f64::from(g)).sum();
        let three = HostThreads::new(3);
        assert_eq!(three.parts(LEN, MIN_ELEMENTS_PER_THREAD), 3);
        let norm = three.norm(&grad);
        assert!(
            (norm - whole.sqrt()).abs() <= 1e-9 * norm,
            "{norm} against {}",
            whole.sqrt()
        );
    }
}
