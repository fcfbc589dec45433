//! GridWorld-v0: a user's own Rust env, registered at link time.
//!
//! The agent starts in one corner of a `size x size` grid and must walk to
//! the opposite one: actions 0-3 move up, right, down, left (walls stop it),
//! each step costs 0.01 and reaching the goal pays 1 and ends the episode.
//! The observation is the position scaled to [0, 1]. A walk of random moves
//! rarely arrives within the 50-step limit; the shortest path returns
//! 1 - 0.01 · (2 · (size - 1) - 1).
//!
//! `#[register_env]` puts the constructor in a link-time table, so every
//! process of the binary that links this file can build `GridWorld-v0` —
//! the driver and each EnvRunner worker it starts alike.

use oxray_envs::{
    BoxSpace, DType, Env, EnvError, Info, Kwargs, Reset, ResetOptions, Space, Step, Value,
};

pub struct GridWorld {
    size: i64,
    position: (i64, i64),
    obs: [f32; 2],
    observation_space: Space,
    action_space: Space,
}

/// Reads the optional `size` keyword argument (the `env.config` section).
#[oxray_envs::register_env("GridWorld-v0", max_episode_steps = 50, reward_threshold = 0.8)]
pub fn grid_world(kwargs: &Kwargs) -> Result<GridWorld, EnvError> {
    let invalid = |name: &str, reason: String| EnvError::InvalidOption {
        env: "GridWorld-v0".into(),
        name: name.into(),
        reason,
    };
    if let Some(unknown) = kwargs.keys().find(|k| *k != "size") {
        return Err(invalid(
            unknown,
            "unknown keyword argument (accepted: size)".into(),
        ));
    }
    let size = match kwargs.get("size") {
        None => 5,
        Some(value) => value
            .as_i64()
            .filter(|&s| s >= 2)
            .ok_or_else(|| invalid("size", format!("{value} is not an integer >= 2")))?,
    };
    Ok(GridWorld {
        size,
        position: (0, 0),
        obs: [0.0; 2],
        observation_space: Space::Box(BoxSpace::uniform(0.0, 1.0, vec![2], DType::F32)?),
        action_space: Space::discrete(4),
    })
}

impl GridWorld {
    fn observe(&mut self) -> &[f32] {
        let scale = (self.size - 1) as f32;
        self.obs = [
            self.position.0 as f32 / scale,
            self.position.1 as f32 / scale,
        ];
        &self.obs
    }
}

impl Env for GridWorld {
    fn id(&self) -> &str {
        "GridWorld-v0"
    }

    fn observation_space(&self) -> &Space {
        &self.observation_space
    }

    fn action_space(&self) -> &Space {
        &self.action_space
    }

    fn reset(
        &mut self,
        _seed: Option<u64>,
        _options: Option<&ResetOptions>,
    ) -> Result<Reset<'_>, EnvError> {
        self.position = (0, 0);
        Ok(Reset {
            obs: self.observe(),
            info: Info::default(),
        })
    }

    fn step(&mut self, action: &Value) -> Result<Step<'_>, EnvError> {
        let (dx, dy) = match action {
            Value::Int(0) => (0, 1),
            Value::Int(1) => (1, 0),
            Value::Int(2) => (0, -1),
            Value::Int(3) => (-1, 0),
            other => {
                return Err(EnvError::InvalidAction {
                    env: self.id().into(),
                    action: other.to_string(),
                    space: self.action_space.to_string(),
                })
            }
        };
        let last = self.size - 1;
        self.position = (
            (self.position.0 + dx).clamp(0, last),
            (self.position.1 + dy).clamp(0, last),
        );
        let arrived = self.position == (last, last);
        Ok(Step {
            reward: if arrived { 1.0 } else { -0.01 },
            terminated: arrived,
            truncated: false,
            info: Info::default(),
            obs: self.observe(),
        })
    }
}
