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

use serde::{Deserialize, Serialize};

/// A block of `num_fragments` trajectories of `fragment_len` steps each.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SampleBatch {
    pub obs_dim: usize,
    pub action_dim: usize,
    pub fragment_len: usize,
    pub num_fragments: usize,
    /// `[fragment, step, obs_dim]`
    pub obs: Vec<f32>,
    /// `[fragment, step, action_dim]`; a Discrete action is its index as f32.
    pub actions: Vec<f32>,
    /// Log-probability of each action under the policy that sampled it.
    pub action_logp: Vec<f32>,
    pub rewards: Vec<f32>,
    /// The episode ended in a terminal state: no value to bootstrap.
    pub terminateds: Vec<bool>,
    /// The episode was cut off (time limit): bootstrap from `truncation_obs`.
    pub truncateds: Vec<bool>,
    /// `[fragment, obs_dim]`: the observation after each fragment's last step.
    pub bootstrap_obs: Vec<f32>,
    /// Flat step indices of truncated steps, and the final observation each one
    /// reached before the env reset (`[len, obs_dim]`).
    pub truncation_index: Vec<u32>,
    pub truncation_obs: Vec<f32>,
}

impl SampleBatch {
    /// An empty batch with room for `num_fragments` trajectories.
    pub fn with_capacity(
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
            obs: vec![0.0; steps * obs_dim],
            actions: vec![0.0; steps * action_dim],
            action_logp: vec![0.0; steps],
            rewards: vec![0.0; steps],
            terminateds: vec![false; steps],
            truncateds: vec![false; steps],
            bootstrap_obs: vec![0.0; num_fragments * obs_dim],
            truncation_index: Vec::new(),
            truncation_obs: Vec::new(),
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
        self.obs.extend_from_slice(&other.obs);
        self.actions.extend_from_slice(&other.actions);
        self.action_logp.extend_from_slice(&other.action_logp);
        self.rewards.extend_from_slice(&other.rewards);
        self.terminateds.extend_from_slice(&other.terminateds);
        self.truncateds.extend_from_slice(&other.truncateds);
        self.bootstrap_obs.extend_from_slice(&other.bootstrap_obs);
        self.truncation_index
            .extend(other.truncation_index.iter().map(|i| i + offset));
        self.truncation_obs.extend_from_slice(&other.truncation_obs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(fragments: usize, first_obs: f32) -> SampleBatch {
        let mut b = SampleBatch::with_capacity(1, 1, 3, fragments);
        for (i, o) in b.obs.iter_mut().enumerate() {
            *o = first_obs + i as f32;
        }
        b.truncateds[1] = true;
        b.truncation_index.push(1);
        b.truncation_obs.push(first_obs + 100.0);
        b
    }

    #[test]
    fn append_concatenates_columns_and_offsets_truncation_indices() {
        let (a, b) = (batch(2, 0.0), batch(1, 10.0));
        let mut all = a.clone();
        all.append(&b);
        assert_eq!(all.num_fragments, 3);
        assert_eq!(all.obs, [&a.obs[..], &b.obs[..]].concat());
        assert_eq!(all.truncation_index, vec![1, 7]);
        assert_eq!(all.truncation_obs, vec![100.0, 110.0]);
    }
}
