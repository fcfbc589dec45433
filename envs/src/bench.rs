//! Step-rate measurement for `oxray envs bench`: steps per second of a
//! registered env alone (behind its registry wrappers) and of any vector env
//! (native, or a Python env behind the Gymnasium bridge).
//!
//! Actions are sampled up front and cycled through, so the figures measure
//! stepping, not sampling; each measurement runs for a wall-clock budget.

use crate::registry::make;
use crate::rng::seeded_rng;
use crate::spaces::Value;
use crate::vector::{Actions, VectorEnv};
use crate::EnvError;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Distinct pre-sampled actions cycled through.
const ACTION_TABLE_LEN: usize = 1024;

/// Steps per second of `make(id)` (its `TimeLimit` included), resetting at
/// each episode end.
pub fn single_env_rate(id: &str, budget: Duration) -> Result<f64, EnvError> {
    let mut env = make(id)?;
    let mut rng = seeded_rng(Some(0));
    let actions: Vec<Value> = (0..ACTION_TABLE_LEN)
        .map(|_| env.action_space().sample(&mut rng))
        .collect();
    env.reset(Some(0), None)?;
    let mut steps = 0u64;
    let start = Instant::now();
    while start.elapsed() < budget {
        for action in &actions {
            let step = env.step(action)?;
            let done = step.terminated || step.truncated;
            black_box(step.obs);
            if done {
                env.reset(None, None)?;
            }
        }
        steps += ACTION_TABLE_LEN as u64;
    }
    Ok(steps as f64 / start.elapsed().as_secs_f64())
}

/// Sub-env steps per second of a vector env, reset with seed 0 first.
pub fn vector_env_rate(mut env: Box<dyn VectorEnv>, budget: Duration) -> Result<f64, EnvError> {
    let num_envs = env.num_envs();
    env.reset(Some(0))?;
    let table = ActionTable::sample(env.as_ref(), ACTION_TABLE_LEN)?;
    let mut steps = 0u64;
    let start = Instant::now();
    while start.elapsed() < budget {
        for k in 0..ACTION_TABLE_LEN {
            black_box(env.step(table.batch(k))?.rewards);
        }
        steps += (ACTION_TABLE_LEN * num_envs) as u64;
    }
    Ok(steps as f64 / start.elapsed().as_secs_f64())
}

/// `len` batches of sampled actions for a vector env, stored contiguously.
enum ActionTable {
    Discrete { actions: Vec<i64>, batch: usize },
    Continuous { actions: Vec<f32>, batch: usize },
}

impl ActionTable {
    fn sample(env: &dyn VectorEnv, len: usize) -> Result<Self, EnvError> {
        let space = env.single_action_space();
        let mut rng = seeded_rng(Some(0));
        let count = len * env.num_envs();
        let mut discrete = Vec::new();
        let mut continuous = Vec::new();
        for _ in 0..count {
            match space.sample(&mut rng) {
                Value::Int(a) => discrete.push(a),
                Value::Floats(a) => continuous.extend(a.iter().map(|x| *x as f32)),
                other => {
                    return Err(EnvError::Unsupported {
                        env: env.id().to_string(),
                        operation: format!("benchmarking with actions like {other}"),
                    })
                }
            }
        }
        Ok(if discrete.is_empty() {
            let batch = continuous.len() / len;
            ActionTable::Continuous {
                actions: continuous,
                batch,
            }
        } else {
            ActionTable::Discrete {
                actions: discrete,
                batch: env.num_envs(),
            }
        })
    }

    fn batch(&self, k: usize) -> Actions<'_> {
        match self {
            ActionTable::Discrete { actions, batch } => {
                Actions::Discrete(&actions[k * batch..(k + 1) * batch])
            }
            ActionTable::Continuous { actions, batch } => {
                Actions::Continuous(&actions[k * batch..(k + 1) * batch])
            }
        }
    }
}
