//! Replay buffers for off-policy algorithms: a ring of n-step transitions,
//! sampled uniformly or in proportion to priority (prioritized experience
//! replay, Schaul et al. 2016, with sum and min segment trees).
//!
//! Transitions are stored as flat columns, observations in the element type
//! the env gives them ([`ObsDType`]: an Atari frame stays a byte, a quarter
//! of its `f32` size, which decides how many transitions fit in memory) and
//! large ones (images) each distinct frame once (`observation_store`), so a
//! sample is a handful of row copies; sampled minibatches carry `f32` (the
//! module scales by the observation space, not the column's type). The
//! buffer is a plain struct used in
//! the driver; it is also an oxray-core actor (`ReplayBuffer::remote`), for
//! setups that keep it apart from the driver. Checkpoints keep its contents
//! only when asked (`snapshot`; RLlib's `store_buffer_in_checkpoints`, off
//! by default): otherwise a resumed run refills it, and learning waits for
//! `num_steps_sampled_before_learning_starts` again.
//!
//! # Layout
//! - `n_step`: n-step transitions from sample batches,
//! - `observation_store`: observations in place, or each distinct plane once,
//! - `snapshot`: the whole buffer as bytes for a checkpoint, and back,
//! - `device_batch`: a sampled minibatch onto a Learner's device in one copy,
//! - `segment_tree`: sum and min trees for prioritized sampling.

mod device_batch;
mod n_step;
mod observation_store;
mod segment_tree;
mod snapshot;

pub use device_batch::DeviceReplayBatch;
pub use n_step::{NStep, Transition};
pub use segment_tree::SegmentTree;
pub use snapshot::SnapshotError;

use std::borrow::Cow;
use std::ops::Range;

use rand::Rng;
use rand::SeedableRng;

use crate::obs_buffer::ObsDType;
use observation_store::ObservationColumns;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How a buffer is sampled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplayBufferConfig {
    pub capacity: usize,
    /// Prioritized replay; uniform when false.
    pub prioritized: bool,
    /// Priority exponent α: P(i) ∝ p_i^α.
    pub alpha: f64,
    /// Importance-sampling exponent β: w_i = (N·P(i))^−β / max_j w_j.
    pub beta: f64,
    /// Added to |δ| so no transition's priority reaches zero.
    pub epsilon: f64,
    pub obs_dim: usize,
    /// The element type observations are kept in.
    #[serde(default)]
    pub obs_dtype: ObsDType,
    /// Planes an observation is made of along its first axis, each stored
    /// once however many observations share it: a stack of frames' frames
    /// (`EncoderSpec::observation_planes`); 1 for the whole observation.
    #[serde(default = "one")]
    pub obs_planes: usize,
    pub action_dim: usize,
    pub seed: u64,
}

/// A sample of transitions, columns of `len` rows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplayBatch {
    pub obs_dim: usize,
    pub action_dim: usize,
    pub obs: Vec<f32>,
    pub actions: Vec<f32>,
    pub rewards: Vec<f32>,
    pub next_obs: Vec<f32>,
    pub terminateds: Vec<bool>,
    pub discounts: Vec<f32>,
    /// Importance-sampling weights (all 1 for uniform replay).
    pub weights: Vec<f32>,
    /// Buffer slots, for updating priorities.
    pub indices: Vec<u32>,
}

impl ReplayBatch {
    pub fn len(&self) -> usize {
        self.rewards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rewards.is_empty()
    }

    /// Rows `rows` of every column, borrowing the batch when that is all
    /// of it (so a gradient not split over threads copies nothing).
    pub fn rows(&self, rows: Range<usize>) -> Cow<'_, ReplayBatch> {
        if rows == (0..self.len()) {
            return Cow::Borrowed(self);
        }
        let (obs, actions) = (self.obs_dim, self.action_dim);
        let wide =
            |column: &[f32], width: usize| column[rows.start * width..rows.end * width].to_vec();
        Cow::Owned(ReplayBatch {
            obs_dim: obs,
            action_dim: actions,
            obs: wide(&self.obs, obs),
            actions: wide(&self.actions, actions),
            rewards: self.rewards[rows.clone()].to_vec(),
            next_obs: wide(&self.next_obs, obs),
            terminateds: self.terminateds[rows.clone()].to_vec(),
            discounts: self.discounts[rows.clone()].to_vec(),
            weights: self.weights[rows.clone()].to_vec(),
            indices: self.indices[rows].to_vec(),
        })
    }
}

fn one() -> usize {
    1
}

pub struct ReplayBuffer {
    config: ReplayBufferConfig,
    observations: ObservationColumns,
    actions: Vec<f32>,
    rewards: Vec<f32>,
    terminateds: Vec<bool>,
    discounts: Vec<f32>,
    /// Slots filled so far (at most `capacity`), and the next slot to write.
    len: usize,
    next: usize,
    sum_tree: SegmentTree,
    min_tree: SegmentTree,
    /// Largest priority (before α) seen: new transitions get it, so each is
    /// replayed at least once soon.
    max_priority: f64,
    rng: ChaCha8Rng,
    added_lifetime: u64,
}

#[oxray_core::actor]
impl ReplayBuffer {
    pub fn new(config: ReplayBufferConfig) -> Self {
        let capacity = config.capacity.max(1);
        let (d, a) = (config.obs_dim, config.action_dim);
        ReplayBuffer {
            observations: ObservationColumns::new(capacity, d, config.obs_dtype, config.obs_planes),
            actions: vec![0.0; capacity * a],
            rewards: vec![0.0; capacity],
            terminateds: vec![false; capacity],
            discounts: vec![0.0; capacity],
            len: 0,
            next: 0,
            sum_tree: SegmentTree::sum(capacity),
            min_tree: SegmentTree::min(capacity),
            max_priority: 1.0,
            rng: ChaCha8Rng::seed_from_u64(config.seed ^ 0x7e91_a7b0),
            added_lifetime: 0,
            config: ReplayBufferConfig { capacity, ..config },
        }
    }

    /// Transitions stored now.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Transitions ever added.
    pub fn added_lifetime(&self) -> u64 {
        self.added_lifetime
    }

    /// Stores `transitions`, overwriting the oldest once full.
    pub fn add(&mut self, transitions: Vec<Transition>) {
        let a = self.config.action_dim;
        let priority = self.max_priority.powf(self.config.alpha);
        for t in transitions {
            let i = self.next;
            self.observations
                .store(i, i < self.len, &t.obs, &t.next_obs);
            self.actions[i * a..(i + 1) * a].copy_from_slice(&t.action);
            self.rewards[i] = t.reward;
            self.terminateds[i] = t.terminated;
            self.discounts[i] = t.discount;
            self.sum_tree.set(i, priority);
            self.min_tree.set(i, priority);
            self.next = (i + 1) % self.config.capacity;
            self.len = (self.len + 1).min(self.config.capacity);
            self.added_lifetime += 1;
        }
    }

    /// `batch_size` transitions, drawn with replacement: uniformly, or with
    /// P(i) = p_i^α / Σ_j p_j^α and importance weights normalised by the
    /// largest possible weight, (N·P_min)^−β.
    ///
    /// # Panics
    /// If the buffer is empty; callers wait for learning to start.
    pub fn sample(&mut self, batch_size: usize) -> ReplayBatch {
        assert!(self.len > 0, "sampling an empty replay buffer");
        let indices: Vec<usize> = if self.config.prioritized {
            let total = self.sum_tree.root();
            // Stratified: one draw from each of batch_size equal segments.
            (0..batch_size)
                .map(|k| {
                    let mass = (k as f64 + self.rng.gen::<f64>()) * total / batch_size as f64;
                    self.sum_tree
                        .find_prefix_sum(mass.min(total * (1.0 - 1e-12)))
                        .min(self.len - 1)
                })
                .collect()
        } else {
            (0..batch_size)
                .map(|_| self.rng.gen_range(0..self.len))
                .collect()
        };
        let weights = if self.config.prioritized {
            let total = self.sum_tree.root();
            let n = self.len as f64;
            let beta = self.config.beta;
            let max_weight = (n * self.min_tree.root() / total).powf(-beta);
            indices
                .iter()
                .map(|&i| ((n * self.sum_tree.get(i) / total).powf(-beta) / max_weight) as f32)
                .collect()
        } else {
            vec![1.0; batch_size]
        };
        let (d, a) = (self.config.obs_dim, self.config.action_dim);
        let rows = |column: &[f32], width: usize| -> Vec<f32> {
            indices
                .iter()
                .flat_map(|&i| column[i * width..(i + 1) * width].iter().copied())
                .collect()
        };
        ReplayBatch {
            obs_dim: d,
            action_dim: a,
            obs: self.observations.gather(&indices, d, false),
            actions: rows(&self.actions, a),
            rewards: rows(&self.rewards, 1),
            next_obs: self.observations.gather(&indices, d, true),
            terminateds: indices.iter().map(|&i| self.terminateds[i]).collect(),
            discounts: rows(&self.discounts, 1),
            weights,
            indices: indices.iter().map(|&i| i as u32).collect(),
        }
    }

    /// Sets the priorities of sampled slots to |δ| + ε (prioritized replay
    /// only; a no-op for uniform buffers).
    pub fn update_priorities(&mut self, indices: Vec<u32>, td_errors: Vec<f32>) {
        if !self.config.prioritized {
            return;
        }
        for (&i, &td) in indices.iter().zip(&td_errors) {
            let priority = f64::from(td.abs()) + self.config.epsilon;
            self.max_priority = self.max_priority.max(priority);
            let p = priority.powf(self.config.alpha);
            self.sum_tree.set(i as usize, p);
            self.min_tree.set(i as usize, p);
        }
    }
}

/// Read where the buffer is owned, not through an actor handle.
impl ReplayBuffer {
    /// How the buffer was made.
    pub fn config(&self) -> &ReplayBufferConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(capacity: usize, prioritized: bool) -> ReplayBufferConfig {
        ReplayBufferConfig {
            capacity,
            prioritized,
            alpha: 1.0,
            beta: 1.0,
            epsilon: 0.0,
            obs_dim: 1,
            obs_dtype: ObsDType::F32,
            obs_planes: 1,
            action_dim: 1,
            seed: 1,
        }
    }

    fn transition(x: f32) -> Transition {
        Transition {
            obs: vec![x],
            action: vec![0.0],
            reward: x,
            next_obs: vec![x + 1.0],
            terminated: false,
            discount: 0.99,
        }
    }

    #[test]
    fn ring_overwrites_the_oldest_transitions() {
        let mut buffer = ReplayBuffer::new(config(3, false));
        buffer.add((0..5).map(|x| transition(x as f32)).collect());
        assert_eq!((buffer.len(), buffer.added_lifetime()), (3, 5));
        let batch = buffer.sample(200);
        assert!(batch.obs.iter().all(|&o| (2.0..=4.0).contains(&o)));
        assert!(batch
            .rewards
            .iter()
            .zip(&batch.next_obs)
            .all(|(r, n)| n - r == 1.0));
        for x in [2.0, 3.0, 4.0] {
            assert!(batch.obs.contains(&x), "uniform sampling missed {x}");
        }
    }

    /// A share of a batch's rows has those rows of every column, each row's
    /// values together; all the rows borrow the batch.
    #[test]
    fn a_batchs_rows_are_those_rows_of_every_column() {
        let batch = ReplayBatch {
            obs_dim: 2,
            action_dim: 2,
            obs: (0..10).map(|x| x as f32).collect(),
            actions: (10..20).map(|x| x as f32).collect(),
            rewards: vec![0.0, 1.0, 2.0, 3.0, 4.0],
            next_obs: (20..30).map(|x| x as f32).collect(),
            terminateds: vec![false, true, false, false, true],
            discounts: vec![0.9, 0.8, 0.7, 0.6, 0.5],
            weights: vec![1.0, 2.0, 3.0, 4.0, 5.0],
            indices: vec![7, 6, 5, 4, 3],
        };
        let share = batch.rows(1..3);
        assert_eq!(
            *share,
            ReplayBatch {
                obs_dim: 2,
                action_dim: 2,
                obs: vec![2.0, 3.0, 4.0, 5.0],
                actions: vec![12.0, 13.0, 14.0, 15.0],
                rewards: vec![1.0, 2.0],
                next_obs: vec![22.0, 23.0, 24.0, 25.0],
                terminateds: vec![true, false],
                discounts: vec![0.8, 0.7],
                weights: vec![2.0, 3.0],
                indices: vec![6, 5],
            }
        );
        assert!(matches!(batch.rows(0..5), Cow::Borrowed(all) if std::ptr::eq(all, &batch)));
    }

    /// Byte observations (image frames) are kept as bytes, a quarter of
    /// their `f32` size, and come back as the same values in `f32`.
    #[test]
    fn byte_observations_are_kept_as_bytes() {
        let frame = |x: u8| {
            (0..6)
                .map(|k| f32::from(x.wrapping_mul(37).wrapping_add(k)))
                .collect()
        };
        let mut bytes = ReplayBuffer::new(ReplayBufferConfig {
            obs_dim: 6,
            obs_dtype: ObsDType::U8,
            ..config(8, false)
        });
        let transitions: Vec<Transition> = (0..8u8)
            .map(|x| Transition {
                obs: frame(x),
                next_obs: frame(x + 1),
                reward: f32::from(x),
                ..transition(0.0)
            })
            .collect();
        bytes.add(transitions);
        assert_eq!(bytes.observations.value_bytes(), 2 * 8 * 6);
        let batch = bytes.sample(64);
        for ((obs, next_obs), &reward) in batch
            .obs
            .chunks_exact(6)
            .zip(batch.next_obs.chunks_exact(6))
            .zip(&batch.rewards)
        {
            let x = reward as u8;
            assert_eq!(obs, frame(x));
            assert_eq!(next_obs, frame(x + 1));
        }
    }

    /// A buffer of Atari-like frame stacks (`[4, 32, 32]` bytes) keeps
    /// about one frame per transition, not the eight copies that storing
    /// each stack and next stack in place takes, and samples them whole.
    #[test]
    fn frame_stacks_take_about_one_frame_per_transition() {
        let capacity = 500;
        let frame =
            |f: usize| -> Vec<f32> { (0..1024).map(|k| ((k * 3 + f * 11) % 256) as f32).collect() };
        let stack = |f: usize| -> Vec<f32> { (f..f + 4).flat_map(frame).collect() };
        let mut buffer = ReplayBuffer::new(ReplayBufferConfig {
            obs_dim: 4 * 1024,
            obs_dtype: ObsDType::U8,
            obs_planes: 4,
            ..config(capacity, false)
        });
        buffer.add(
            (0..2 * capacity)
                .map(|f| Transition {
                    obs: stack(f),
                    next_obs: stack(f + 1),
                    reward: f as f32,
                    ..transition(0.0)
                })
                .collect(),
        );
        let in_place = 2 * capacity * 4 * 1024;
        let stored = buffer.observations.value_bytes();
        assert!(stored * 6 < in_place, "{stored} bytes against {in_place}");
        let batch = buffer.sample(32);
        for ((obs, next_obs), &reward) in batch
            .obs
            .chunks_exact(4096)
            .zip(batch.next_obs.chunks_exact(4096))
            .zip(&batch.rewards)
        {
            assert_eq!(obs, stack(reward as usize));
            assert_eq!(next_obs, stack(reward as usize + 1));
        }
    }

    /// Priorities 1 and 3 (α = 1): slot 1 is drawn about three times as
    /// often, and its importance weight is a third of slot 0's (β = 1),
    /// normalised so the largest weight is 1.
    #[test]
    fn prioritized_sampling_follows_priorities_with_importance_weights() {
        let mut buffer = ReplayBuffer::new(config(4, true));
        buffer.add(vec![transition(0.0), transition(1.0)]);
        buffer.update_priorities(vec![0, 1], vec![1.0, -3.0]);
        let batch = buffer.sample(4000);
        let ones = batch.indices.iter().filter(|&&i| i == 1).count() as f64;
        let share = ones / 4000.0;
        assert!((share - 0.75).abs() < 0.03, "share of slot 1: {share}");
        for (&i, &w) in batch.indices.iter().zip(&batch.weights) {
            let expected = if i == 0 { 1.0 } else { 1.0 / 3.0 };
            assert!((w - expected).abs() < 1e-5, "slot {i}: weight {w}");
        }
        // A new transition gets the largest priority seen (3).
        buffer.add(vec![transition(2.0)]);
        assert_eq!(buffer.sum_tree.get(2), 3.0);
    }
}
