//! Training algorithms for oxray, RLlib style: the experiment config schema,
//! the [`Algorithm`] trait with PPO as its first implementation, the training
//! loop with its run directory, loggers, checkpoints and stop criteria, and
//! policy evaluation from a checkpoint.

pub mod algorithm;
pub mod config;
pub mod evaluate;
pub mod ppo;
pub mod run;

pub use algorithm::{build, Algorithm, TrainError};
pub use config::ExperimentConfig;
