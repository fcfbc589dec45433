//! `SyncVectorEnv`: any [`Env`]s stepped one after another in the calling
//! thread, with Gymnasium's autoreset semantics. The general path; the
//! built-in envs have the faster [`super::SoaVectorEnv`].

use super::step_buffers::StepBuffers;
use super::{
    invalid_sub_action, no_such_sub_env, wrong_action_count, Actions, AutoresetMode, VectorEnv,
    VectorStep,
};
use crate::env::Env;
use crate::error::EnvError;
use crate::spaces::{Space, Value};
use ndarray::ArrayView2;

/// Sub-envs stepped sequentially, observations gathered into one array.
pub struct SyncVectorEnv {
    envs: Vec<Box<dyn Env>>,
    id: String,
    observation_space: Space,
    action_space: Space,
    mode: AutoresetMode,
    out: StepBuffers,
    /// Reused so continuous actions do not allocate per step.
    action: Value,
}

impl SyncVectorEnv {
    /// Vectorizes `envs`, which must share their spaces (at least one env).
    pub fn new(envs: Vec<Box<dyn Env>>, mode: AutoresetMode) -> Result<Self, EnvError> {
        let first = envs.first().ok_or_else(|| EnvError::InvalidOption {
            env: "SyncVectorEnv".into(),
            name: "num_envs".into(),
            reason: "at least one env is needed".into(),
        })?;
        let id = first.id().to_string();
        let observation_space = first.observation_space().clone();
        let action_space = first.action_space().clone();
        if let Some(other) = envs.iter().find(|e| {
            e.observation_space() != &observation_space || e.action_space() != &action_space
        }) {
            return Err(EnvError::InvalidOption {
                env: id,
                name: "envs".into(),
                reason: format!("sub-env {} has different spaces", other.id()),
            });
        }
        let n = envs.len();
        let dim = observation_space.flatdim();
        Ok(Self {
            envs,
            id,
            observation_space,
            action_space,
            mode,
            out: StepBuffers::new(n, dim),
            action: Value::Int(0),
        })
    }

    /// The sub-envs, e.g. to read a sub-env's physical state.
    pub fn envs(&self) -> &[Box<dyn Env>] {
        &self.envs
    }

    /// Loads sub-env `index`'s action into the reused `self.action`.
    fn load_action(&mut self, actions: Actions<'_>, index: usize) {
        match actions {
            Actions::Discrete(a) => self.action = Value::Int(a[index]),
            Actions::Continuous(a) => {
                let dim = a.len() / self.envs.len();
                if !matches!(self.action, Value::Floats(_)) {
                    self.action = Value::Floats(Vec::with_capacity(dim));
                }
                if let Value::Floats(values) = &mut self.action {
                    values.clear();
                    values.extend(
                        a[index * dim..(index + 1) * dim]
                            .iter()
                            .map(|x| f64::from(*x)),
                    );
                }
            }
        }
    }

    fn reset_sub_env(&mut self, index: usize, seed: Option<u64>) -> Result<(), EnvError> {
        let reset = self.envs[index].reset(seed, None)?;
        self.out
            .obs
            .row_mut(index)
            .as_slice_mut()
            .expect("rows are contiguous")
            .copy_from_slice(reset.obs);
        self.out.episodes.restart(index);
        Ok(())
    }
}

impl VectorEnv for SyncVectorEnv {
    fn id(&self) -> &str {
        &self.id
    }

    fn num_envs(&self) -> usize {
        self.envs.len()
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
        self.out.obs.view()
    }

    fn reset(&mut self, seed: Option<u64>) -> Result<ArrayView2<'_, f32>, EnvError> {
        self.out.episodes.reset_all();
        for index in 0..self.envs.len() {
            self.reset_sub_env(index, seed.map(|s| s.wrapping_add(index as u64)))?;
        }
        Ok(self.out.obs.view())
    }

    fn set_state(&mut self, index: usize, state: &[f64]) -> Result<(), EnvError> {
        let n = self.envs.len();
        let env = self
            .envs
            .get_mut(index)
            .ok_or_else(|| no_such_sub_env(&self.id, index, n))?;
        env.set_state(state)?;
        self.out.episodes.needs_reset[index] = false;
        Ok(())
    }

    fn step(&mut self, actions: Actions<'_>) -> Result<VectorStep<'_>, EnvError> {
        let n = self.envs.len();
        let one_per_env = match actions {
            Actions::Discrete(a) => a.len() == n,
            Actions::Continuous(a) => !a.is_empty() && a.len().is_multiple_of(n),
        };
        if !one_per_env {
            return Err(wrong_action_count(
                &self.id,
                &self.action_space,
                actions.len(),
                n,
            ));
        }
        self.out.episodes.finished.clear();
        for index in 0..n {
            if self.out.episodes.needs_reset[index] {
                self.reset_sub_env(index, None)?;
                self.out.rewards[index] = 0.0;
                self.out.terminated[index] = false;
                self.out.truncated[index] = false;
                continue;
            }
            self.load_action(actions, index);
            let step = self.envs[index].step(&self.action).map_err(|e| match e {
                EnvError::InvalidAction { action, .. } => {
                    invalid_sub_action(&self.id, &self.action_space, index, action)
                }
                other => other,
            })?;
            let (reward, terminated, truncated) = (step.reward, step.terminated, step.truncated);
            let row = self
                .out
                .obs
                .row_mut(index)
                .into_slice()
                .expect("rows are contiguous");
            row.copy_from_slice(step.obs);
            self.out.rewards[index] = reward;
            self.out.terminated[index] = terminated;
            self.out.truncated[index] = truncated;
            self.out.episodes.add(index, reward);
            if terminated || truncated {
                self.out.episodes.finish(index);
                match self.mode {
                    AutoresetMode::NextStep => self.out.episodes.needs_reset[index] = true,
                    AutoresetMode::SameStep => {
                        self.out
                            .final_obs
                            .row_mut(index)
                            .assign(&self.out.obs.row(index));
                        self.reset_sub_env(index, None)?;
                    }
                }
            }
        }
        Ok(self.out.step(self.mode))
    }
}
