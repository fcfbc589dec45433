//! Action wrappers for `Box` action spaces: `ClipAction` accepts any action
//! and clips it into the bounds; `RescaleAction` exposes `[min, max]` and maps
//! it linearly onto the env's bounds (typical for policies emitting [-1, 1]).

use super::forward_env;
use crate::env::{Env, Reset, ResetOptions, Step};
use crate::error::EnvError;
use crate::spaces::{BoxSpace, Space, Value};

/// The inner env's box action space, or an error naming the wrapper.
fn box_action_space(env: &dyn Env, wrapper: &str) -> Result<BoxSpace, EnvError> {
    env.action_space()
        .as_box()
        .cloned()
        .ok_or_else(|| EnvError::Unsupported {
            env: env.id().to_string(),
            operation: format!("{wrapper} on action space {}", env.action_space()),
        })
}

fn invalid_action(env: &dyn Env, action: &Value, space: &Space) -> EnvError {
    EnvError::InvalidAction {
        env: env.id().to_string(),
        action: action.to_string(),
        space: space.to_string(),
    }
}

/// Clips each action element into the inner action space's bounds.
#[derive(Debug, Clone)]
pub struct ClipAction<E> {
    env: E,
    inner_space: BoxSpace,
    action_space: Space,
    clipped: Value,
}

impl<E: Env> ClipAction<E> {
    pub fn new(env: E) -> Result<Self, EnvError> {
        let inner_space = box_action_space(&env, "ClipAction")?;
        let unbounded = BoxSpace::uniform(
            f64::NEG_INFINITY,
            f64::INFINITY,
            inner_space.shape().to_vec(),
            inner_space.dtype(),
        )
        .expect("infinite bounds are ordered");
        Ok(Self {
            env,
            inner_space,
            action_space: Space::Box(unbounded),
            clipped: Value::Floats(Vec::new()),
        })
    }
}

impl<E: Env> Env for ClipAction<E> {
    forward_env!(id, own_action_space, render, state);

    fn reset(
        &mut self,
        seed: Option<u64>,
        options: Option<&ResetOptions>,
    ) -> Result<Reset<'_>, EnvError> {
        self.env.reset(seed, options)
    }

    fn step(&mut self, action: &Value) -> Result<Step<'_>, EnvError> {
        let (Value::Floats(values), Value::Floats(clipped)) = (action, &mut self.clipped) else {
            return Err(invalid_action(&self.env, action, &self.action_space));
        };
        if !self.action_space.contains(action) {
            return Err(invalid_action(&self.env, action, &self.action_space));
        }
        clipped.clear();
        let bounds = self.inner_space.low().iter().zip(self.inner_space.high());
        clipped.extend(
            values
                .iter()
                .zip(bounds)
                .map(|(x, (low, high))| x.clamp(*low, *high)),
        );
        self.env.step(&self.clipped)
    }
}

/// Exposes the action space `[min, max]` and maps it affinely onto the inner
/// env's (finite) bounds.
#[derive(Debug, Clone)]
pub struct RescaleAction<E> {
    env: E,
    inner_space: BoxSpace,
    action_space: Space,
    min_action: f64,
    max_action: f64,
    rescaled: Value,
}

impl<E: Env> RescaleAction<E> {
    pub fn new(env: E, min_action: f64, max_action: f64) -> Result<Self, EnvError> {
        let inner_space = box_action_space(&env, "RescaleAction")?;
        let invalid = |reason: String| EnvError::InvalidOption {
            env: env.id().to_string(),
            name: "RescaleAction".into(),
            reason,
        };
        if !inner_space.is_bounded() {
            return Err(invalid(format!(
                "action space {} is unbounded",
                env.action_space()
            )));
        }
        if min_action.partial_cmp(&max_action) != Some(std::cmp::Ordering::Less) {
            return Err(invalid(format!(
                "min_action {min_action} must be below max_action {max_action}"
            )));
        }
        let outer = BoxSpace::uniform(
            min_action,
            max_action,
            inner_space.shape().to_vec(),
            inner_space.dtype(),
        )?;
        Ok(Self {
            env,
            inner_space,
            action_space: Space::Box(outer),
            min_action,
            max_action,
            rescaled: Value::Floats(Vec::new()),
        })
    }
}

impl<E: Env> Env for RescaleAction<E> {
    forward_env!(id, own_action_space, render, state);

    fn reset(
        &mut self,
        seed: Option<u64>,
        options: Option<&ResetOptions>,
    ) -> Result<Reset<'_>, EnvError> {
        self.env.reset(seed, options)
    }

    fn step(&mut self, action: &Value) -> Result<Step<'_>, EnvError> {
        if !self.action_space.contains(action) {
            return Err(invalid_action(&self.env, action, &self.action_space));
        }
        let (Value::Floats(values), Value::Floats(rescaled)) = (action, &mut self.rescaled) else {
            return Err(invalid_action(&self.env, action, &self.action_space));
        };
        rescaled.clear();
        let span = self.max_action - self.min_action;
        let bounds = self.inner_space.low().iter().zip(self.inner_space.high());
        rescaled.extend(values.iter().zip(bounds).map(|(x, (low, high))| {
            let gradient = (high - low) / span;
            (low + gradient * (x - self.min_action)).clamp(*low, *high)
        }));
        self.env.step(&self.rescaled)
    }
}
