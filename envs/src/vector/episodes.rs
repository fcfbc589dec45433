//! Per-sub-env episode bookkeeping shared by the vector envs: running
//! returns and lengths, which sub-envs await a `NextStep` reset, and the list
//! of episodes that finished in the current step. Public so vector envs
//! outside this crate (the Python bridge) report episodes the same way.

use super::FinishedEpisode;

#[derive(Debug, Clone, Default)]
pub struct EpisodeTracker {
    returns: Vec<f64>,
    lengths: Vec<u64>,
    pub needs_reset: Vec<bool>,
    pub finished: Vec<FinishedEpisode>,
}

impl EpisodeTracker {
    pub fn new(num_envs: usize) -> Self {
        Self {
            returns: vec![0.0; num_envs],
            lengths: vec![0; num_envs],
            needs_reset: vec![false; num_envs],
            finished: Vec::new(),
        }
    }

    /// Forgets all episodes (after a full reset).
    pub fn reset_all(&mut self) {
        self.returns.fill(0.0);
        self.lengths.fill(0);
        self.needs_reset.fill(false);
        self.finished.clear();
    }

    /// Starts sub-env `index`'s next episode.
    #[inline]
    pub fn restart(&mut self, index: usize) {
        self.returns[index] = 0.0;
        self.lengths[index] = 0;
        self.needs_reset[index] = false;
    }

    /// Adds one step's reward to sub-env `index`'s running episode.
    #[inline]
    pub fn add(&mut self, index: usize, reward: f64) {
        self.returns[index] += reward;
        self.lengths[index] += 1;
    }

    /// Adds one step's reward to every sub-env's running episode.
    pub fn add_all(&mut self, rewards: &[f64]) {
        for ((total, length), reward) in self.returns.iter_mut().zip(&mut self.lengths).zip(rewards)
        {
            *total += reward;
            *length += 1;
        }
    }

    /// Records sub-env `index`'s episode as finished in this step.
    pub fn finish(&mut self, index: usize) {
        self.finished.push(FinishedEpisode {
            env_index: index,
            episode_return: self.returns[index],
            length: self.lengths[index],
        });
    }
}
