//! The fast path for the built-in envs: all copies' states stored
//! structure-of-arrays (one contiguous array per state field), stepped by one
//! loop over the shared [`Dynamics::step`].
//!
//! The loop body is the scalar dynamics inlined with the env's
//! [`Dynamics::VectorMath`]; with [`crate::classic::Poly`] it has no calls and
//! no branches the optimizer cannot turn into selects, so LLVM vectorizes it
//! across environments (see `kernel`). Time limits and running returns are
//! updated in a second, branch-free pass; episode ends and resets, which are
//! rare, are then handled copy by copy.
//! Each copy has its own generator seeded with `seed + i`, exactly as the
//! scalar envs are, so both paths start the same episodes.

use super::episodes::EpisodeTracker;
use super::kernel::{self, Batch, InstructionSet, MAX_FIELDS};
use super::{
    invalid_sub_action, no_such_sub_env, wrong_action_count, Actions, AutoresetMode, VectorEnv,
    VectorStep,
};
use crate::classic::{check_physical_state, Dynamics};
use crate::error::EnvError;
use crate::rng::{seeded_rng, EnvRng};
use crate::spaces::Space;
use ndarray::{Array2, ArrayView2};

/// `num_envs` copies of a built-in env, time-limited to `max_episode_steps`.
pub struct SoaVectorEnv<D: Dynamics> {
    dynamics: D,
    observation_space: Space,
    action_space: Space,
    mode: AutoresetMode,
    max_episode_steps: u64,
    /// Field `k` of copy `i` at `k * num_envs + i`.
    states: Vec<f64>,
    actions: Vec<D::Action>,
    rngs: Vec<EnvRng>,
    elapsed: Vec<u64>,
    obs: Array2<f32>,
    final_obs: Array2<f32>,
    rewards: Vec<f64>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    episodes: EpisodeTracker,
    isa: InstructionSet,
}

impl<D: Dynamics> SoaVectorEnv<D> {
    /// # Panics
    /// If the env's state has more than four fields (no built-in env does).
    pub fn new(dynamics: D, num_envs: usize, max_episode_steps: u64, mode: AutoresetMode) -> Self {
        assert!(
            D::State::default().as_ref().len() <= MAX_FIELDS,
            "{}: the vector fast path holds at most {MAX_FIELDS} state fields",
            D::ID
        );
        Self {
            observation_space: dynamics.observation_space(),
            action_space: dynamics.action_space(),
            dynamics,
            mode,
            max_episode_steps,
            states: vec![0.0; MAX_FIELDS * num_envs],
            actions: vec![D::Action::default(); num_envs],
            rngs: (0..num_envs).map(|_| seeded_rng(None)).collect(),
            elapsed: vec![0; num_envs],
            obs: Array2::zeros((num_envs, D::OBS_LEN)),
            final_obs: Array2::zeros((num_envs, D::OBS_LEN)),
            rewards: vec![0.0; num_envs],
            terminated: vec![false; num_envs],
            truncated: vec![false; num_envs],
            episodes: EpisodeTracker::new(num_envs),
            isa: InstructionSet::detect(),
        }
    }

    /// The physical state of copy `index` (Gymnasium's `env.unwrapped.state`).
    pub fn state(&self, index: usize) -> Option<Vec<f64>> {
        (index < self.num_envs()).then(|| self.load(index).as_ref()[..D::STATE_LEN].to_vec())
    }

    /// Copy `index`'s state, gathered from its fields.
    fn load(&self, index: usize) -> D::State {
        let mut state = D::State::default();
        let fields = self.states.chunks_exact(self.actions.len());
        for (value, field) in state.as_mut().iter_mut().zip(fields) {
            *value = field[index];
        }
        state
    }

    /// Scatters `state` into copy `index`'s fields.
    fn store(&mut self, index: usize, state: &D::State) {
        let fields = self.states.chunks_exact_mut(self.actions.len());
        for (value, field) in state.as_ref().iter().zip(fields) {
            field[index] = *value;
        }
    }

    fn reset_copy(&mut self, index: usize) -> Result<(), EnvError> {
        let state = self.dynamics.initial_state(&mut self.rngs[index], None)?;
        let row = self
            .obs
            .row_mut(index)
            .into_slice()
            .expect("rows are contiguous");
        self.dynamics.observe::<D::VectorMath>(&state, row);
        self.store(index, &state);
        self.elapsed[index] = 0;
        self.episodes.restart(index);
        Ok(())
    }

    /// Validates and decodes every copy's action into `self.actions`.
    fn decode_actions(&mut self, actions: Actions<'_>) -> Result<(), EnvError> {
        let n = self.actions.len();
        let id = D::ID;
        match actions {
            Actions::Discrete(a) if a.len() == n => {
                for (index, (slot, action)) in self.actions.iter_mut().zip(a).enumerate() {
                    *slot = self.dynamics.discrete_action(*action).ok_or_else(|| {
                        invalid_sub_action(id, &self.action_space, index, action.to_string())
                    })?;
                }
            }
            Actions::Continuous(a) if !a.is_empty() && a.len().is_multiple_of(n) => {
                let dim = a.len() / n;
                for (index, (slot, action)) in
                    self.actions.iter_mut().zip(a.chunks_exact(dim)).enumerate()
                {
                    *slot = self.dynamics.continuous_action(action).ok_or_else(|| {
                        invalid_sub_action(id, &self.action_space, index, format!("{action:?}"))
                    })?;
                }
            }
            _ => return Err(wrong_action_count(id, &self.action_space, actions.len(), n)),
        }
        Ok(())
    }

    /// The hot loop: every copy advances one step.
    fn advance_all(&mut self) {
        let batch = Batch {
            dynamics: &self.dynamics,
            states: &mut self.states,
            actions: &self.actions,
            obs: self.obs.as_slice_mut().expect("standard layout"),
            rewards: &mut self.rewards,
            terminated: &mut self.terminated,
        };
        kernel::advance(self.isa, batch);
    }
}

impl<D: Dynamics> VectorEnv for SoaVectorEnv<D> {
    fn id(&self) -> &str {
        D::ID
    }

    fn num_envs(&self) -> usize {
        self.actions.len()
    }

    fn single_observation_space(&self) -> &Space {
        &self.observation_space
    }

    fn single_action_space(&self) -> &Space {
        &self.action_space
    }

    fn autoreset_mode(&self) -> AutoresetMode {
        self.mode
    }

    fn observations(&self) -> ArrayView2<'_, f32> {
        self.obs.view()
    }

    fn reset(&mut self, seed: Option<u64>) -> Result<ArrayView2<'_, f32>, EnvError> {
        self.episodes.reset_all();
        for index in 0..self.actions.len() {
            if let Some(seed) = seed {
                self.rngs[index] = seeded_rng(Some(seed.wrapping_add(index as u64)));
            }
            self.reset_copy(index)?;
        }
        Ok(self.obs.view())
    }

    fn set_state(&mut self, index: usize, state: &[f64]) -> Result<(), EnvError> {
        let n = self.actions.len();
        if index >= n {
            return Err(no_such_sub_env(D::ID, index, n));
        }
        check_physical_state(D::ID, D::STATE_LEN, state)?;
        let state = self.dynamics.state_from_physical(state);
        self.store(index, &state);
        self.episodes.needs_reset[index] = false;
        Ok(())
    }

    fn step(&mut self, actions: Actions<'_>) -> Result<VectorStep<'_>, EnvError> {
        self.decode_actions(actions)?;
        self.advance_all();
        self.episodes.finished.clear();
        // Time limits and running returns for every copy, branch-free; the
        // copies with something to do are handled one by one below.
        for (elapsed, truncated) in self.elapsed.iter_mut().zip(&mut self.truncated) {
            *elapsed += 1;
            *truncated = *elapsed >= self.max_episode_steps;
        }
        self.episodes.add_all(&self.rewards);
        for index in 0..self.actions.len() {
            if self.episodes.needs_reset[index] {
                self.reset_copy(index)?;
                self.rewards[index] = 0.0;
                self.terminated[index] = false;
                self.truncated[index] = false;
            } else if self.terminated[index] || self.truncated[index] {
                self.episodes.finish(index);
                match self.mode {
                    AutoresetMode::NextStep => self.episodes.needs_reset[index] = true,
                    AutoresetMode::SameStep => {
                        self.final_obs.row_mut(index).assign(&self.obs.row(index));
                        self.reset_copy(index)?;
                    }
                }
            }
        }
        Ok(VectorStep {
            obs: self.obs.view(),
            rewards: &self.rewards,
            terminated: &self.terminated,
            truncated: &self.truncated,
            final_obs: (self.mode == AutoresetMode::SameStep).then(|| self.final_obs.view()),
            episodes: &self.episodes.finished,
        })
    }
}
