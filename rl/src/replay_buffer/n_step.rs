//! n-step transitions (Sutton 1988; Rainbow's multi-step returns): each step
//! becomes (s_t, a_t, R_t^(n) = Σ_k γ^k r_{t+k}, s_{t+n}, done, γ^n), waiting
//! per env stream until n later steps have been seen. An episode end cuts the
//! return short: every waiting step is completed with the steps up to the
//! end, and its discount is γ^(steps used), so truncated episodes still
//! bootstrap from their final observation and terminated ones do not.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::SampleBatch;

/// One step of one env, as sampled.
#[derive(Clone, Debug, PartialEq)]
struct Step {
    obs: Vec<f32>,
    action: Vec<f32>,
    reward: f32,
    next_obs: Vec<f32>,
    terminated: bool,
    ended: bool,
}

/// A replayable transition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub obs: Vec<f32>,
    pub action: Vec<f32>,
    /// R_t^(n), the discounted sum of up to n rewards.
    pub reward: f32,
    /// The observation after the last step summed.
    pub next_obs: Vec<f32>,
    /// The last step summed ended the episode in a terminal state.
    pub terminated: bool,
    /// γ^k for the k steps summed: the factor of the bootstrap value.
    pub discount: f32,
}

/// Turns sampled batches into n-step transitions, one stream per fragment
/// position (env `i` of runner `k` fills the same position in every batch).
pub struct NStep {
    n: usize,
    gamma: f32,
    streams: Vec<VecDeque<Step>>,
}

impl NStep {
    pub fn new(n: usize, gamma: f32) -> Self {
        NStep {
            n: n.max(1),
            gamma,
            streams: Vec::new(),
        }
    }

    /// The transitions `batch` completes.
    pub fn add(&mut self, batch: &SampleBatch) -> Vec<Transition> {
        if self.streams.len() != batch.num_fragments {
            // A different set of streams (a runner lost): start over.
            self.streams = vec![VecDeque::new(); batch.num_fragments];
        }
        let next_obs = batch.next_obs();
        let (d, a) = (batch.obs_dim, batch.action_dim);
        let mut out = Vec::new();
        for (fragment, stream) in self.streams.iter_mut().enumerate() {
            for i in fragment * batch.fragment_len..(fragment + 1) * batch.fragment_len {
                let terminated = batch.terminateds[i];
                stream.push_back(Step {
                    obs: batch.obs.to_f32(i * d..(i + 1) * d),
                    action: batch.actions[i * a..(i + 1) * a].to_vec(),
                    reward: batch.rewards[i],
                    next_obs: next_obs.to_f32(i * d..(i + 1) * d),
                    terminated,
                    ended: terminated || batch.truncateds[i],
                });
                if stream.back().is_some_and(|s| s.ended) {
                    while !stream.is_empty() {
                        out.push(transition(stream, self.gamma));
                        stream.pop_front();
                    }
                } else if stream.len() == self.n {
                    out.push(transition(stream, self.gamma));
                    stream.pop_front();
                }
            }
        }
        out
    }
}

/// The transition of the stream's first step over all its waiting steps.
fn transition(steps: &VecDeque<Step>, gamma: f32) -> Transition {
    let mut reward = 0.0;
    let mut discount = 1.0;
    for step in steps {
        reward += discount * step.reward;
        discount *= gamma;
    }
    let (first, last) = (&steps[0], &steps[steps.len() - 1]);
    Transition {
        obs: first.obs.clone(),
        action: first.action.clone(),
        reward,
        next_obs: last.next_obs.clone(),
        terminated: last.terminated,
        discount,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obs_buffer::ObsDType;

    /// One env, fragments of 3 steps with obs 0, 1, 2, ... and reward 1 each;
    /// the episode terminates at step 4.
    fn fragment(start: usize, terminal_at: Option<usize>) -> SampleBatch {
        let mut batch = SampleBatch::with_capacity(ObsDType::F32, 1, 1, 3, 1);
        for k in 0..3 {
            batch.obs.write(k, &[(start + k) as f32]);
            batch.rewards[k] = 1.0;
            if terminal_at == Some(start + k) {
                batch.terminateds[k] = true;
                batch.final_index.push(k as u32);
                batch.final_obs.extend_from_f32([-1.0]);
            }
        }
        batch.bootstrap_obs.write(0, &[(start + 3) as f32]);
        batch
    }

    #[test]
    fn returns_span_fragments_and_stop_at_episode_ends() {
        let gamma = 0.5;
        let mut n_step = NStep::new(2, gamma);
        let first = n_step.add(&fragment(0, None));
        // Steps 0 and 1 are complete (2 steps each); step 2 waits.
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].obs, [0.0]);
        assert_eq!(first[0].reward, 1.5);
        assert_eq!(first[0].next_obs, [2.0]);
        assert_eq!(first[0].discount, 0.25);
        assert!(!first[0].terminated);
        let second = n_step.add(&fragment(3, Some(4)));
        // Step 2 completes across the fragment boundary, then step 3 and
        // the terminal step 4 are flushed at the episode end; step 5 (the
        // next episode's first) waits.
        let obs: Vec<f32> = second.iter().map(|t| t.obs[0]).collect();
        assert_eq!(obs, [2.0, 3.0, 4.0]);
        assert_eq!(second[0].next_obs, [4.0]);
        assert_eq!(second[1].reward, 1.5);
        assert_eq!(second[1].next_obs, [-1.0]);
        assert!(second[1].terminated);
        assert_eq!((second[2].reward, second[2].discount), (1.0, 0.5));
        assert!(second[2].terminated);
    }
}
