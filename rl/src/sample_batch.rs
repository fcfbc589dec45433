//! Columnar sample batches: what an EnvRunner returns and a Learner trains on.
//!
//! Each column is one flat `Vec` laid out env-major: all `fragment_len` steps of
//! the first env, then the second, and so on. That layout keeps every env's
//! trajectory contiguous, so GAE is a reverse scan over a slice, and batches
//! from several EnvRunners concatenate by appending.
//!
//! Values are not recorded while sampling: the Learner evaluates the value
//! function once over the whole batch (plus the bootstrap observations), which
//! is one batched forward instead of one per step.
//!
//! Next observations are not a column of their own (that would double the
//! batch): within a trajectory the next observation is the next row's, after a
//! fragment's last step it is the bootstrap observation, and at an episode end
//! it is the final observation the env reported before resetting, which the
//! batch keeps for every end. [`SampleBatch::next_obs`] puts them together.
//!
//! Observation columns are [`ObsBuffer`]s: bytes for `uint8` (image)
//! observations, which stay bytes until the Learner's module reads them.

use serde::{Deserialize, Serialize};

use crate::obs_buffer::{ObsBuffer, ObsDType};

/// A block of `num_fragments` trajectories of `fragment_len` steps each.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SampleBatch {
    pub obs_dim: usize,
    pub action_dim: usize,
    pub fragment_len: usize,
    pub num_fragments: usize,
    /// `[fragment, step, obs_dim]`
    pub obs: ObsBuffer,
    /// `[fragment, step, action_dim]`; a Discrete action is its index as f32.
    pub actions: Vec<f32>,
    /// Log-probability of each action under the policy that sampled it.
    pub action_logp: Vec<f32>,
    pub rewards: Vec<f32>,
    /// The episode ended in a terminal state: no value to bootstrap.
    pub terminateds: Vec<bool>,
    /// The episode was cut off (time limit): bootstrap from its final
    /// observation.
    pub truncateds: Vec<bool>,
    /// `[fragment, obs_dim]`: the observation after each fragment's last step.
    pub bootstrap_obs: ObsBuffer,
    /// Flat step indices of the steps that ended an episode (terminated or
    /// truncated), in sampling order, and the final observation each one reached
    /// before the env reset (`[len, obs_dim]`).
    pub final_index: Vec<u32>,
    pub final_obs: ObsBuffer,
}

impl SampleBatch {
    /// An empty batch with room for `num_fragments` trajectories, keeping
    /// observations as `obs_dtype`.
    pub fn with_capacity(
        obs_dtype: ObsDType,
        obs_dim: usize,
        action_dim: usize,
        fragment_len: usize,
        num_fragments: usize,
    ) -> Self {
        let steps = fragment_len * num_fragments;
        SampleBatch {
            obs_dim,
            action_dim,
            fragment_len,
            num_fragments,
            obs: ObsBuffer::zeros(obs_dtype, steps * obs_dim),
            actions: vec![0.0; steps * action_dim],
            action_logp: vec![0.0; steps],
            rewards: vec![0.0; steps],
            terminateds: vec![false; steps],
            truncateds: vec![false; steps],
            bootstrap_obs: ObsBuffer::zeros(obs_dtype, num_fragments * obs_dim),
            final_index: Vec::new(),
            final_obs: ObsBuffer::zeros(obs_dtype, 0),
        }
    }

    /// Number of env steps in the batch.
    pub fn len(&self) -> usize {
        self.fragment_len * self.num_fragments
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `other`'s trajectories after this batch's.
    ///
    /// # Panics
    /// If the batches disagree on shapes; EnvRunners of one algorithm never do.
    pub fn append(&mut self, other: &SampleBatch) {
        if self.num_fragments == 0 {
            *self = other.clone();
            return;
        }
        assert_eq!(
            (self.obs_dim, self.action_dim, self.fragment_len),
            (other.obs_dim, other.action_dim, other.fragment_len),
            "sample batches of different shapes"
        );
        let offset = self.len() as u32;
        self.num_fragments += other.num_fragments;
        self.obs.append(&other.obs);
        self.actions.extend_from_slice(&other.actions);
        self.action_logp.extend_from_slice(&other.action_logp);
        self.rewards.extend_from_slice(&other.rewards);
        self.terminateds.extend_from_slice(&other.terminateds);
        self.truncateds.extend_from_slice(&other.truncateds);
        self.bootstrap_obs.append(&other.bootstrap_obs);
        self.final_index
            .extend(other.final_index.iter().map(|i| i + offset));
        self.final_obs.append(&other.final_obs);
    }

    /// The observation each step led to, `[len, obs_dim]`.
    pub fn next_obs(&self) -> ObsBuffer {
        let d = self.obs_dim;
        let mut next = ObsBuffer::zeros(self.obs.dtype(), self.len() * d);
        for fragment in 0..self.num_fragments {
            let start = fragment * self.fragment_len;
            let end = start + self.fragment_len;
            next.copy_from(start * d, &self.obs, (start + 1) * d..end * d);
            next.copy_from(
                (end - 1) * d,
                &self.bootstrap_obs,
                fragment * d..(fragment + 1) * d,
            );
        }
        for (k, &i) in self.final_index.iter().enumerate() {
            next.copy_from(i as usize * d, &self.final_obs, k * d..(k + 1) * d);
        }
        next
    }

    /// The final observations of truncated (not terminated) steps, with
    /// their flat step indices: the states to bootstrap cut-off episodes from.
    pub fn truncations(&self) -> (Vec<u32>, ObsBuffer) {
        let d = self.obs_dim;
        let mut index = Vec::new();
        let mut obs = ObsBuffer::zeros(self.obs.dtype(), 0);
        for (k, &i) in self.final_index.iter().enumerate() {
            if !self.terminateds[i as usize] {
                index.push(i);
                obs.extend_from(&self.final_obs, k * d..(k + 1) * d);
            }
        }
        (index, obs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(fragments: usize, first_obs: f32) -> SampleBatch {
        let mut b = SampleBatch::with_capacity(ObsDType::F32, 1, 1, 3, fragments);
        let obs: Vec<f32> = (0..3 * fragments).map(|i| first_obs + i as f32).collect();
        b.obs.write(0, &obs);
        b.truncateds[1] = true;
        b.final_index.push(1);
        b.final_obs.extend_from_f32([first_obs + 100.0]);
        let bootstrap: Vec<f32> = (0..fragments)
            .map(|f| first_obs + 50.0 + f as f32)
            .collect();
        b.bootstrap_obs.write(0, &bootstrap);
        b
    }

    fn f32s(values: &[f32]) -> ObsBuffer {
        ObsBuffer::F32(values.to_vec())
    }

    #[test]
    fn append_concatenates_columns_and_offsets_final_indices() {
        let (a, b) = (batch(2, 0.0), batch(1, 10.0));
        let mut all = a.clone();
        all.append(&b);
        assert_eq!(all.num_fragments, 3);
        assert_eq!(
            all.obs.to_f32(0..9),
            [a.obs.to_f32(0..6), b.obs.to_f32(0..3)].concat()
        );
        assert_eq!(all.final_index, vec![1, 7]);
        assert_eq!(all.final_obs, f32s(&[100.0, 110.0]));
    }

    #[test]
    fn next_obs_follows_rows_then_bootstrap_and_final_observations() {
        let mut b = batch(2, 0.0);
        b.terminateds[4] = true;
        b.final_index.push(4);
        b.final_obs.extend_from_f32([-4.0]);
        // obs 0..6 in fragments [0, 1, 2] and [3, 4, 5]; step 1 truncated
        // (final 100), step 4 terminated (final −4); bootstraps 50 and 51.
        assert_eq!(b.next_obs(), f32s(&[1.0, 100.0, 50.0, 4.0, -4.0, 51.0]));
        assert_eq!(b.truncations(), (vec![1], f32s(&[100.0])));
    }
}
