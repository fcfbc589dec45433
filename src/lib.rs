//! oxray: a reinforcement-learning rollout and training cluster.
//!
//! This facade re-exports the workspace crates so a user depends on one crate:
//! [`core`] (tasks, actors, objects, scheduling) and [`envs`] (Gymnasium-style
//! environments).

pub use oxray_core as core;
pub use oxray_envs as envs;
