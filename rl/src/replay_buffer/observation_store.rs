//! How a replay buffer keeps its transitions' observations.
//!
//! A transition's next observation is, most of the time, the observation of
//! the same env's next transition, and in a stack of frames (Atari's
//! `[4, 84, 84]`) each frame is part of four successive observations: kept
//! per transition, every frame is stored eight times (SB3's
//! `optimize_memory_usage` halves that; RLlib's episode buffers and
//! Dopamine's keep each frame once). So large observations are split into
//! planes (a stack's frames, or the whole observation) and each distinct
//! plane is stored once, found again by its content's hash (compared in full
//! before it is shared), with a count of the stored observations using it;
//! a plane no transition uses any more is freed for the next one. Matching
//! by content needs no knowledge of which env or step a transition came from,
//! so several envs, n-step transitions and episode ends need no bookkeeping.
//!
//! Small observations (CartPole's 16 bytes) stay in place, two per
//! transition: a plane's slot, count and index entry would cost more than
//! the repeats they save.

use std::hash::Hasher;

use rustc_hash::{FxHashMap, FxHasher};

use serde::{Deserialize, Serialize};

use super::snapshot::SnapshotError;
use crate::obs_buffer::{ObsBuffer, ObsDType};

/// Planes of at least this many bytes are stored once.
const SHARED_PLANE_MIN_BYTES: usize = 512;

pub(super) enum ObservationColumns {
    /// Each transition's observation and next observation, in place.
    Inline { obs: ObsBuffer, next_obs: ObsBuffer },
    /// Each transition's planes' slots in `planes`.
    Shared {
        planes: PlaneStore,
        planes_per_obs: usize,
        obs: Vec<u32>,
        next_obs: Vec<u32>,
    },
}

impl ObservationColumns {
    /// Columns for `capacity` transitions of `obs_dim` values of `dtype`,
    /// each observation `planes_per_obs` planes along its first axis.
    pub(super) fn new(
        capacity: usize,
        obs_dim: usize,
        dtype: ObsDType,
        planes_per_obs: usize,
    ) -> Self {
        let planes_per_obs = match planes_per_obs {
            k if k > 0 && obs_dim.is_multiple_of(k) => k,
            _ => 1,
        };
        let plane_len = obs_dim / planes_per_obs;
        if plane_len * element_size(dtype) < SHARED_PLANE_MIN_BYTES {
            return ObservationColumns::Inline {
                obs: ObsBuffer::zeros(dtype, capacity * obs_dim),
                next_obs: ObsBuffer::zeros(dtype, capacity * obs_dim),
            };
        }
        ObservationColumns::Shared {
            planes: PlaneStore::new(plane_len, dtype),
            planes_per_obs,
            obs: vec![0; capacity * planes_per_obs],
            next_obs: vec![0; capacity * planes_per_obs],
        }
    }

    /// Stores transition `slot`'s observations; `occupied` when the slot
    /// still holds an older transition, whose planes it lets go.
    pub(super) fn store(&mut self, slot: usize, occupied: bool, obs: &[f32], next_obs: &[f32]) {
        match self {
            ObservationColumns::Inline {
                obs: obs_column,
                next_obs: next_column,
            } => {
                obs_column.write(slot * obs.len(), obs);
                next_column.write(slot * next_obs.len(), next_obs);
            }
            ObservationColumns::Shared {
                planes,
                planes_per_obs,
                obs: obs_slots,
                next_obs: next_slots,
            } => {
                let k = *planes_per_obs;
                let rows = slot * k..(slot + 1) * k;
                // Inserted before the old ones go, so a plane both use is
                // kept rather than freed and written again.
                let old: Vec<u32> = if occupied {
                    obs_slots[rows.clone()]
                        .iter()
                        .chain(&next_slots[rows.clone()])
                        .copied()
                        .collect()
                } else {
                    Vec::new()
                };
                for (column, values) in [(&mut *obs_slots, obs), (&mut *next_slots, next_obs)] {
                    for (plane_slot, plane) in column[rows.clone()]
                        .iter_mut()
                        .zip(values.chunks_exact(planes.plane_len))
                    {
                        *plane_slot = planes.insert(plane);
                    }
                }
                for plane_slot in old {
                    planes.release(plane_slot);
                }
            }
        }
    }

    /// The observations (or, with `next`, next observations) of
    /// transitions `indices`, rows of `obs_dim` values.
    pub(super) fn gather(&self, indices: &[usize], obs_dim: usize, next: bool) -> Vec<f32> {
        let mut rows = Vec::with_capacity(indices.len() * obs_dim);
        match self {
            ObservationColumns::Inline { obs, next_obs } => {
                let column = if next { next_obs } else { obs };
                for &i in indices {
                    rows.extend(column.to_f32(i * obs_dim..(i + 1) * obs_dim));
                }
            }
            ObservationColumns::Shared {
                planes,
                planes_per_obs,
                obs,
                next_obs,
            } => {
                let column = if next { next_obs } else { obs };
                let k = *planes_per_obs;
                for &i in indices {
                    for &plane_slot in &column[i * k..(i + 1) * k] {
                        planes.append_to(plane_slot, &mut rows);
                    }
                }
            }
        }
        rows
    }

    /// The observations of transitions `0..len` (the occupied slots), as
    /// a checkpoint keeps them: in place, or each distinct plane once with
    /// the transitions' plane numbers.
    pub(super) fn snapshot(&self, len: usize, obs_dim: usize) -> ObservationsSnapshot {
        match self {
            ObservationColumns::Inline { obs, next_obs } => {
                let rows = |column: &ObsBuffer| {
                    let mut kept = ObsBuffer::zeros(column.dtype(), 0);
                    kept.extend_from(column, 0..len * obs_dim);
                    kept
                };
                ObservationsSnapshot::Inline {
                    obs: rows(obs),
                    next_obs: rows(next_obs),
                }
            }
            ObservationColumns::Shared {
                planes,
                planes_per_obs,
                obs,
                next_obs,
            } => ObservationsSnapshot::Shared {
                planes: planes.values.clone(),
                obs: obs[..len * planes_per_obs].to_vec(),
                next_obs: next_obs[..len * planes_per_obs].to_vec(),
            },
        }
    }

    /// Puts `snapshot`'s observations of transitions `0..len` into these
    /// (empty) columns, checking that it fits them first.
    pub(super) fn restore(
        &mut self,
        snapshot: ObservationsSnapshot,
        len: usize,
        obs_dim: usize,
    ) -> Result<(), SnapshotError> {
        match (self, snapshot) {
            (
                ObservationColumns::Inline { obs, next_obs },
                ObservationsSnapshot::Inline {
                    obs: saved_obs,
                    next_obs: saved_next,
                },
            ) => {
                for (column, saved) in [(obs, saved_obs), (next_obs, saved_next)] {
                    if saved.dtype() != column.dtype() || saved.len() != len * obs_dim {
                        return Err(SnapshotError::Inconsistent(format!(
                            "{} {:?} observation values for {len} transitions of {obs_dim} {:?} values",
                            saved.len(),
                            saved.dtype(),
                            column.dtype()
                        )));
                    }
                    column.copy_from(0, &saved, 0..saved.len());
                }
                Ok(())
            }
            (
                ObservationColumns::Shared {
                    planes,
                    planes_per_obs,
                    obs,
                    next_obs,
                },
                ObservationsSnapshot::Shared {
                    planes: values,
                    obs: saved_obs,
                    next_obs: saved_next,
                },
            ) => {
                let slots = len * *planes_per_obs;
                if saved_obs.len() != slots || saved_next.len() != slots {
                    return Err(SnapshotError::Inconsistent(format!(
                        "{} and {} plane numbers for {len} transitions of {planes_per_obs} planes",
                        saved_obs.len(),
                        saved_next.len()
                    )));
                }
                planes.restore(values, saved_obs.iter().chain(&saved_next))?;
                obs[..slots].copy_from_slice(&saved_obs);
                next_obs[..slots].copy_from_slice(&saved_next);
                Ok(())
            }
            _ => Err(SnapshotError::Inconsistent(
                "its observations are stored differently from this config's (in place against shared planes)".into(),
            )),
        }
    }

    /// Bytes the observation values take (allocated, not only in use).
    #[cfg(test)]
    pub(super) fn value_bytes(&self) -> usize {
        match self {
            ObservationColumns::Inline { obs, next_obs } => {
                (obs.len() + next_obs.len()) * element_size(obs.dtype())
            }
            ObservationColumns::Shared { planes, .. } => planes.values.capacity(),
        }
    }
}

fn element_size(dtype: ObsDType) -> usize {
    match dtype {
        ObsDType::F32 => 4,
        ObsDType::U8 => 1,
    }
}

/// The observations a replay buffer snapshot keeps: as its columns do.
#[derive(Serialize, Deserialize)]
pub(super) enum ObservationsSnapshot {
    Inline {
        obs: ObsBuffer,
        next_obs: ObsBuffer,
    },
    Shared {
        #[serde(with = "serde_bytes")]
        planes: Vec<u8>,
        obs: Vec<u32>,
        next_obs: Vec<u32>,
    },
}

/// Distinct planes, each in a slot of `plane_len` values stored as bytes
/// (`u8` values, or `f32` in little-endian order) with how many stored
/// observations use it.
pub(super) struct PlaneStore {
    plane_len: usize,
    dtype: ObsDType,
    values: Vec<u8>,
    uses: Vec<u32>,
    hashes: Vec<u64>,
    free: Vec<u32>,
    /// A live slot for each content hash stored (one of them when unequal
    /// planes share a hash: the others are simply not shared).
    by_hash: FxHashMap<u64, u32>,
    /// The plane being inserted, as bytes.
    scratch: Vec<u8>,
}

impl PlaneStore {
    fn new(plane_len: usize, dtype: ObsDType) -> Self {
        PlaneStore {
            plane_len,
            dtype,
            values: Vec::new(),
            uses: Vec::new(),
            hashes: Vec::new(),
            free: Vec::new(),
            by_hash: FxHashMap::default(),
            scratch: Vec::with_capacity(plane_len * element_size(dtype)),
        }
    }

    fn slot_bytes(&self) -> usize {
        self.plane_len * element_size(self.dtype)
    }

    fn bytes_of(&self, slot: u32) -> &[u8] {
        let width = self.slot_bytes();
        &self.values[slot as usize * width..(slot as usize + 1) * width]
    }

    /// The slot holding `plane`'s values (an env's values: a `uint8`
    /// space's are whole numbers in range, so the cast is exact), counted
    /// as used once more.
    fn insert(&mut self, plane: &[f32]) -> u32 {
        self.scratch.clear();
        match self.dtype {
            ObsDType::U8 => self.scratch.extend(plane.iter().map(|&x| x as u8)),
            ObsDType::F32 => self
                .scratch
                .extend(plane.iter().flat_map(|x| x.to_le_bytes())),
        }
        let mut hasher = FxHasher::default();
        hasher.write(&self.scratch);
        let hash = hasher.finish();
        if let Some(&slot) = self.by_hash.get(&hash) {
            if self.bytes_of(slot) == self.scratch.as_slice() {
                self.uses[slot as usize] += 1;
                return slot;
            }
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => self.grow(),
        };
        let width = self.slot_bytes();
        let start = slot as usize * width;
        self.values[start..start + width].copy_from_slice(&self.scratch);
        self.uses[slot as usize] = 1;
        self.hashes[slot as usize] = hash;
        self.by_hash.entry(hash).or_insert(slot);
        slot
    }

    /// One use of `slot` fewer; freed when that was the last.
    fn release(&mut self, slot: u32) {
        let uses = &mut self.uses[slot as usize];
        *uses -= 1;
        if *uses == 0 {
            let hash = self.hashes[slot as usize];
            if self.by_hash.get(&hash) == Some(&slot) {
                self.by_hash.remove(&hash);
            }
            self.free.push(slot);
        }
    }

    /// A new slot at the end. Room grows by an eighth at a time, not
    /// doubling: at Atari sizes a doubled allocation would be gigabytes
    /// that are never used.
    fn grow(&mut self) -> u32 {
        let slot = self.uses.len();
        let width = self.slot_bytes();
        if self.values.len() == self.values.capacity() {
            self.values.reserve_exact(width * (slot / 8).max(64));
        }
        self.values.resize((slot + 1) * width, 0);
        self.uses.push(0);
        self.hashes.push(0);
        u32::try_from(slot).expect("fewer than 2^32 planes in a replay buffer")
    }

    /// Appends `slot`'s values to `rows` as `f32`.
    fn append_to(&self, slot: u32, rows: &mut Vec<f32>) {
        let bytes = self.bytes_of(slot);
        match self.dtype {
            ObsDType::U8 => rows.extend(bytes.iter().map(|&b| f32::from(b))),
            ObsDType::F32 => rows.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
        }
    }

    /// Takes `values` (whole planes) as the store's slots, each used as
    /// often as `uses` names it; unnamed slots are free.
    fn restore<'a>(
        &mut self,
        values: Vec<u8>,
        uses: impl Iterator<Item = &'a u32>,
    ) -> Result<(), SnapshotError> {
        let width = self.slot_bytes();
        if !values.len().is_multiple_of(width) {
            return Err(SnapshotError::Inconsistent(format!(
                "{} bytes of planes are not whole planes of {width} bytes",
                values.len()
            )));
        }
        let count = values.len() / width;
        let mut counts = vec![0u32; count];
        for &slot in uses {
            let used = counts.get_mut(slot as usize).ok_or_else(|| {
                SnapshotError::Inconsistent(format!("a transition names plane {slot} of {count}"))
            })?;
            *used += 1;
        }
        self.values = values;
        self.hashes = vec![0; count];
        self.free.clear();
        self.by_hash.clear();
        for (slot, &used) in counts.iter().enumerate() {
            let slot = slot as u32;
            if used == 0 {
                self.free.push(slot);
                continue;
            }
            let mut hasher = FxHasher::default();
            hasher.write(self.bytes_of(slot));
            let hash = hasher.finish();
            self.hashes[slot as usize] = hash;
            self.by_hash.entry(hash).or_insert(slot);
        }
        self.uses = counts;
        Ok(())
    }

    /// Slots holding a plane now.
    #[cfg(test)]
    fn live(&self) -> usize {
        self.uses.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frame `f` of env `env`: 1,024 bytes no other frame has.
    fn frame(env: usize, f: usize) -> Vec<f32> {
        (0..1024)
            .map(|k| ((k * 7 + f * 13 + env * 101) % 256) as f32)
            .collect()
    }

    /// A stack of four frames ending at frame `f`.
    fn stack(env: usize, f: usize) -> Vec<f32> {
        (f..f + 4).flat_map(|g| frame(env, g)).collect()
    }

    fn shared_planes(columns: &ObservationColumns) -> &PlaneStore {
        match columns {
            ObservationColumns::Shared { planes, .. } => planes,
            ObservationColumns::Inline { .. } => panic!("observations stored in place"),
        }
    }

    /// Two envs' frame stacks, interleaved as a vector env's steps arrive:
    /// every frame is stored once however many observations use it, the
    /// observations come back whole, and once the ring wraps the frames
    /// only the overwritten transitions used are freed and reused, so the
    /// store stays at one frame per transition.
    #[test]
    fn each_frame_of_a_stack_is_stored_once() {
        let capacity = 40;
        let mut columns = ObservationColumns::new(capacity, 4 * 1024, ObsDType::U8, 4);
        let mut written = Vec::new();
        for step in 0..100 {
            for env in 0..2 {
                let slot = written.len() % capacity;
                columns.store(
                    slot,
                    written.len() >= capacity,
                    &stack(env, step),
                    &stack(env, step + 1),
                );
                written.push((env, step));
            }
            if written.len() == capacity {
                // 20 steps of 2 envs: frames 0..=23 of each.
                assert_eq!(shared_planes(&columns).live(), 2 * 24);
            }
        }
        let planes = shared_planes(&columns);
        assert_eq!(planes.live(), 2 * 24, "the last 20 steps' frames");
        assert!(
            planes.uses.len() <= 2 * 24 + 8,
            "{} slots",
            planes.uses.len()
        );
        let slots: Vec<usize> = (0..capacity).collect();
        let obs = columns.gather(&slots, 4 * 1024, false);
        let next_obs = columns.gather(&slots, 4 * 1024, true);
        for (slot, (obs, next_obs)) in obs
            .chunks_exact(4096)
            .zip(next_obs.chunks_exact(4096))
            .enumerate()
        {
            let (env, step) = written[written.len() - capacity + slot];
            assert_eq!(obs, stack(env, step), "slot {slot}");
            assert_eq!(next_obs, stack(env, step + 1), "slot {slot}");
        }
    }

    /// Float observations are compared bit for bit: a value that differs
    /// in its last bit is a plane of its own.
    #[test]
    fn float_planes_are_shared_only_when_bit_equal() {
        let mut columns = ObservationColumns::new(2, 256, ObsDType::F32, 1);
        let obs: Vec<f32> = (0..256).map(|k| k as f32 * 0.1).collect();
        let mut nudged = obs.clone();
        nudged[255] = f32::from_bits(nudged[255].to_bits() + 1);
        columns.store(0, false, &obs, &nudged);
        columns.store(1, false, &nudged, &nudged);
        assert_eq!(shared_planes(&columns).live(), 2);
        assert_eq!(columns.gather(&[0], 256, false), obs);
        assert_eq!(
            columns.gather(&[0, 1], 256, true),
            [&nudged[..], &nudged].concat()
        );
    }

    /// CartPole-sized observations stay in place, two per transition.
    #[test]
    fn small_observations_stay_in_place() {
        let columns = ObservationColumns::new(100, 4, ObsDType::F32, 1);
        assert!(matches!(columns, ObservationColumns::Inline { .. }));
        assert_eq!(columns.value_bytes(), 2 * 100 * 4 * 4);
    }
}
