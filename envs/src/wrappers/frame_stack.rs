//! `FrameStack`: the last `stack_size` vector observations side by side,
//! oldest first (Gymnasium's `FrameStackObservation` with reset padding), so a
//! feed-forward model sees a short history.

use super::forward_env;
use crate::env::{Env, Reset, ResetOptions, Step};
use crate::error::EnvError;
use crate::spaces::{BoxSpace, Space, Value};

#[derive(Debug, Clone)]
pub struct FrameStack<E> {
    env: E,
    stack_size: usize,
    observation_space: Space,
    frames: Vec<f32>,
}

impl<E: Env> FrameStack<E> {
    /// Stacks `stack_size >= 1` observations of a `Box` observation space.
    pub fn new(env: E, stack_size: usize) -> Result<Self, EnvError> {
        let invalid = |reason: String| EnvError::InvalidOption {
            env: env.id().to_string(),
            name: "FrameStack".into(),
            reason,
        };
        let Some(single) = env.observation_space().as_box() else {
            return Err(invalid(format!(
                "observation space {} is not a Box",
                env.observation_space()
            )));
        };
        if stack_size == 0 {
            return Err(invalid("stack_size must be at least 1".into()));
        }
        let tile = |bounds: &[f64]| bounds.repeat(stack_size);
        let mut shape = vec![stack_size];
        shape.extend_from_slice(single.shape());
        let stacked = BoxSpace::new(
            tile(single.low()),
            tile(single.high()),
            shape,
            single.dtype(),
        )?;
        let frames = vec![0.0; single.len() * stack_size];
        Ok(Self {
            env,
            stack_size,
            observation_space: Space::Box(stacked),
            frames,
        })
    }

    pub fn stack_size(&self) -> usize {
        self.stack_size
    }
}

impl<E: Env> Env for FrameStack<E> {
    forward_env!(id, own_observation_space, render, state);

    fn reset(
        &mut self,
        seed: Option<u64>,
        options: Option<&ResetOptions>,
    ) -> Result<Reset<'_>, EnvError> {
        let reset = self.env.reset(seed, options)?;
        for frame in self.frames.chunks_exact_mut(reset.obs.len()) {
            frame.copy_from_slice(reset.obs);
        }
        Ok(Reset {
            obs: &self.frames,
            info: reset.info,
        })
    }

    fn step(&mut self, action: &Value) -> Result<Step<'_>, EnvError> {
        let step = self.env.step(action)?;
        let dim = step.obs.len();
        self.frames.copy_within(dim.., 0);
        let newest = self.frames.len() - dim;
        self.frames[newest..].copy_from_slice(step.obs);
        Ok(Step {
            obs: &self.frames,
            ..step
        })
    }
}
