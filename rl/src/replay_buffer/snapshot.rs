//! A replay buffer's contents as bytes, for the checkpoints of runs that
//! keep their buffer (`store_buffer_in_checkpoints`, RLlib's key): a resumed
//! run then samples the same transitions with the same priorities and the
//! same random stream, instead of refilling the buffer before it learns
//! again.
//!
//! Only the occupied slots are kept, in place (the ring's order and the
//! next slot to write are part of the state), with observations as the
//! buffer stores them: an image buffer's distinct planes once each. Reading
//! one back checks every length and plane number against the config the
//! run builds, so a snapshot that does not fit is an error naming what
//! differs, never an index out of bounds; the checkpoint's checksum already
//! caught damage on disk.

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::observation_store::ObservationsSnapshot;
use super::{ReplayBuffer, ReplayBufferConfig};

/// Bumped when the layout below changes.
const VERSION: u32 = 1;

/// Why a snapshot cannot become this run's replay buffer.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot be read ({0})")]
    Unreadable(postcard::Error),
    #[error("is version {found} of the replay buffer format, this build reads {VERSION}")]
    Version { found: u32 },
    #[error("was made with {key} {saved}, this run's config has {configured}")]
    Mismatch {
        key: &'static str,
        saved: String,
        configured: String,
    },
    #[error("is inconsistent: {0}")]
    Inconsistent(String),
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    config: ReplayBufferConfig,
    /// The occupied slots `0..len`, each column's rows.
    observations: ObservationsSnapshot,
    actions: Vec<f32>,
    rewards: Vec<f32>,
    terminateds: Vec<bool>,
    discounts: Vec<f32>,
    /// Each occupied slot's priority after α (the trees' leaves).
    priorities: Vec<f64>,
    next: usize,
    max_priority: f64,
    rng: ChaCha8Rng,
    added_lifetime: u64,
}

impl ReplayBuffer {
    /// The buffer's whole state as bytes ([`ReplayBuffer::from_snapshot`]
    /// reads them back).
    pub fn snapshot(&self) -> Vec<u8> {
        let (len, a) = (self.len, self.config.action_dim);
        let snapshot = Snapshot {
            version: VERSION,
            config: self.config.clone(),
            observations: self.observations.snapshot(len, self.config.obs_dim),
            actions: self.actions[..len * a].to_vec(),
            rewards: self.rewards[..len].to_vec(),
            terminateds: self.terminateds[..len].to_vec(),
            discounts: self.discounts[..len].to_vec(),
            priorities: (0..len).map(|i| self.sum_tree.get(i)).collect(),
            next: self.next,
            max_priority: self.max_priority,
            rng: self.rng.clone(),
            added_lifetime: self.added_lifetime,
        };
        postcard::to_allocvec(&snapshot).expect("a replay buffer serializes into memory")
    }

    /// The buffer `bytes` (a [`ReplayBuffer::snapshot`]) holds, provided it
    /// was made with `config` (all but the seed: the saved random stream
    /// goes on).
    pub fn from_snapshot(config: ReplayBufferConfig, bytes: &[u8]) -> Result<Self, SnapshotError> {
        let saved: Snapshot = postcard::from_bytes(bytes).map_err(SnapshotError::Unreadable)?;
        if saved.version != VERSION {
            return Err(SnapshotError::Version {
                found: saved.version,
            });
        }
        let mut buffer = ReplayBuffer::new(config);
        check_same_shape(&saved.config, &buffer.config)?;
        let (len, a) = (saved.rewards.len(), buffer.config.action_dim);
        let capacity = buffer.config.capacity;
        let consistent = len <= capacity
            && saved.actions.len() == len * a
            && saved.terminateds.len() == len
            && saved.discounts.len() == len
            && saved.priorities.len() == len
            && saved.priorities.iter().all(|p| p.is_finite() && *p >= 0.0)
            && saved.max_priority.is_finite()
            && saved.next < capacity
            && (len == capacity || saved.next == len);
        if !consistent {
            return Err(SnapshotError::Inconsistent(format!(
                "{len} transitions with {} action values, {} priorities and next slot {} \
                 in a buffer of capacity {capacity}",
                saved.actions.len(),
                saved.priorities.len(),
                saved.next
            )));
        }
        buffer
            .observations
            .restore(saved.observations, len, buffer.config.obs_dim)?;
        buffer.actions[..len * a].copy_from_slice(&saved.actions);
        buffer.rewards[..len].copy_from_slice(&saved.rewards);
        buffer.terminateds[..len].copy_from_slice(&saved.terminateds);
        buffer.discounts[..len].copy_from_slice(&saved.discounts);
        for (i, &priority) in saved.priorities.iter().enumerate() {
            buffer.sum_tree.set(i, priority);
            buffer.min_tree.set(i, priority);
        }
        buffer.len = len;
        buffer.next = saved.next;
        buffer.max_priority = saved.max_priority;
        buffer.rng = saved.rng;
        buffer.added_lifetime = saved.added_lifetime;
        Ok(buffer)
    }
}

/// Every key of the two configs but the seed agrees.
fn check_same_shape(
    saved: &ReplayBufferConfig,
    configured: &ReplayBufferConfig,
) -> Result<(), SnapshotError> {
    let keys: [(&'static str, String, String); 9] = [
        (
            "capacity",
            saved.capacity.to_string(),
            configured.capacity.to_string(),
        ),
        (
            "prioritized replay",
            saved.prioritized.to_string(),
            configured.prioritized.to_string(),
        ),
        (
            "alpha",
            saved.alpha.to_string(),
            configured.alpha.to_string(),
        ),
        ("beta", saved.beta.to_string(), configured.beta.to_string()),
        (
            "epsilon",
            saved.epsilon.to_string(),
            configured.epsilon.to_string(),
        ),
        (
            "observation size",
            saved.obs_dim.to_string(),
            configured.obs_dim.to_string(),
        ),
        (
            "observation type",
            format!("{:?}", saved.obs_dtype),
            format!("{:?}", configured.obs_dtype),
        ),
        (
            "planes per observation",
            saved.obs_planes.to_string(),
            configured.obs_planes.to_string(),
        ),
        (
            "action size",
            saved.action_dim.to_string(),
            configured.action_dim.to_string(),
        ),
    ];
    match keys
        .into_iter()
        .find(|(_, saved, configured)| saved != configured)
    {
        Some((key, saved, configured)) => Err(SnapshotError::Mismatch {
            key,
            saved,
            configured,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obs_buffer::ObsDType;
    use crate::replay_buffer::Transition;

    fn config(
        capacity: usize,
        obs_dim: usize,
        dtype: ObsDType,
        planes: usize,
    ) -> ReplayBufferConfig {
        ReplayBufferConfig {
            capacity,
            prioritized: true,
            alpha: 0.6,
            beta: 0.4,
            epsilon: 1e-6,
            obs_dim,
            obs_dtype: dtype,
            obs_planes: planes,
            action_dim: 2,
            seed: 3,
        }
    }

    /// Transition `t` of an env whose observations are `obs_dim` values,
    /// consecutive ones sharing all but their newest plane when planes > 1.
    fn transitions(
        range: std::ops::Range<usize>,
        obs_dim: usize,
        planes: usize,
    ) -> Vec<Transition> {
        let plane = obs_dim / planes;
        let observation = |t: usize| -> Vec<f32> {
            (t..t + planes)
                .flat_map(|frame| (0..plane).map(move |k| ((frame * 31 + k * 7) % 251) as f32))
                .collect()
        };
        range
            .map(|t| Transition {
                obs: observation(t),
                action: vec![t as f32, -(t as f32)],
                reward: t as f32 * 0.5,
                next_obs: observation(t + 1),
                terminated: t % 7 == 6,
                discount: 0.99,
            })
            .collect()
    }

    /// A buffer and its restored copy sample the same minibatches, take
    /// the same priority updates and overwrite the same slots from then on.
    fn assert_restored_buffer_behaves_alike(config: ReplayBufferConfig, filled: usize) {
        let (d, k) = (config.obs_dim, config.obs_planes);
        let mut original = ReplayBuffer::new(config.clone());
        original.add(transitions(0..filled, d, k));
        let sampled = original.sample(16);
        original.update_priorities(sampled.indices, (0..16).map(|i| i as f32).collect());

        let mut restored = ReplayBuffer::from_snapshot(config, &original.snapshot()).unwrap();
        assert_eq!(
            (restored.len(), restored.added_lifetime()),
            (original.len(), original.added_lifetime())
        );
        for round in 0..3 {
            let batch = original.sample(32);
            assert_eq!(restored.sample(32), batch, "round {round}");
            let errors: Vec<f32> = (0..32).map(|i| (i * round) as f32 * 0.1).collect();
            original.update_priorities(batch.indices.clone(), errors.clone());
            restored.update_priorities(batch.indices, errors);
            let more = filled + round * 5..filled + round * 5 + 5;
            original.add(transitions(more.clone(), d, k));
            restored.add(transitions(more, d, k));
        }
    }

    #[test]
    fn a_partly_filled_buffer_comes_back_alike() {
        assert_restored_buffer_behaves_alike(config(64, 3, ObsDType::F32, 1), 20);
    }

    #[test]
    fn a_full_ring_comes_back_with_its_next_slot() {
        assert_restored_buffer_behaves_alike(config(16, 3, ObsDType::F32, 1), 37);
    }

    /// Image buffers keep each distinct plane once, in the snapshot too: a
    /// stack of four 1,024-byte frames per observation takes about one
    /// frame per transition, not eight.
    #[test]
    fn frame_stacks_come_back_with_their_planes_shared() {
        let config = config(32, 4 * 1024, ObsDType::U8, 4);
        assert_restored_buffer_behaves_alike(config.clone(), 50);
        let mut buffer = ReplayBuffer::new(config);
        buffer.add(transitions(0..50, 4 * 1024, 4));
        let bytes = buffer.snapshot().len();
        assert!(bytes < 32 * 2 * 1024, "{bytes} bytes for 32 transitions");
    }

    #[test]
    fn a_buffer_of_another_shape_is_refused_naming_the_key() {
        let mut buffer = ReplayBuffer::new(config(16, 3, ObsDType::F32, 1));
        buffer.add(transitions(0..5, 3, 1));
        let error =
            ReplayBuffer::from_snapshot(config(32, 3, ObsDType::F32, 1), &buffer.snapshot())
                .err()
                .unwrap()
                .to_string();
        assert_eq!(error, "was made with capacity 16, this run's config has 32");
        let uniform = ReplayBufferConfig {
            prioritized: false,
            ..config(16, 3, ObsDType::F32, 1)
        };
        let error = ReplayBuffer::from_snapshot(uniform, &buffer.snapshot())
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("prioritized replay true"), "{error}");
    }

    /// Truncated bytes, and a snapshot whose numbers disagree with its
    /// columns (one written by hand), are errors, not panics.
    #[test]
    fn damaged_snapshots_are_errors() {
        let config = config(32, 4 * 1024, ObsDType::U8, 4);
        let mut buffer = ReplayBuffer::new(config.clone());
        buffer.add(transitions(0..10, 4 * 1024, 4));
        let bytes = buffer.snapshot();
        let truncated = ReplayBuffer::from_snapshot(config.clone(), &bytes[..bytes.len() / 2]);
        assert!(matches!(truncated, Err(SnapshotError::Unreadable(_))));

        let mut saved: Snapshot = postcard::from_bytes(&bytes).unwrap();
        if let ObservationsSnapshot::Shared { obs, .. } = &mut saved.observations {
            obs[3] = 1_000_000;
        }
        let error =
            ReplayBuffer::from_snapshot(config.clone(), &postcard::to_allocvec(&saved).unwrap())
                .err()
                .unwrap()
                .to_string();
        assert!(error.contains("names plane 1000000"), "{error}");

        let mut saved: Snapshot = postcard::from_bytes(&bytes).unwrap();
        saved.next = 3;
        let error = ReplayBuffer::from_snapshot(config, &postcard::to_allocvec(&saved).unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("next slot 3"), "{error}");
    }
}
