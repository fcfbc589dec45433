//! Training algorithms for oxray, RLlib style: the experiment config schema,
//! the [`Algorithm`] trait and its implementations, the training loop with its
//! run directory, loggers, checkpoints and stop criteria, policy
//! evaluation from a checkpoint and policy export.
//!
//! # Layout
//! - `config`: the YAML schema (`algorithm:` selects the `training:` section),
//! - `algorithm`: the `Algorithm` trait and `TrainError`,
//! - `algorithms`: the registry, and one folder per algorithm (`ppo/`),
//! - `progress`: counters every algorithm keeps and reports,
//! - `run`: the training loop; `checkpoint_retention`: which checkpoints
//!   stay on disk (`num_to_keep`); `evaluation`: evaluation during training
//!   (`evaluation:` section); `evaluate`: policy evaluation from a
//!   checkpoint; `export`: the policy as TorchScript,
//! - `search_space`: grid search and sampled values (Tune's `param_space`),
//!   one config per trial; `trial_scheduler`: what a search's trials do
//!   after each result (Tune's ASHA and PBT).

pub mod algorithm;
pub mod algorithms;
pub mod checkpoint_retention;
pub mod config;
pub mod evaluate;
pub mod evaluation;
pub mod export;
pub mod progress;
pub mod run;
pub mod search_space;
pub mod trial_scheduler;

pub use algorithm::{Algorithm, TrainError};
pub use algorithms::build;
pub use config::ExperimentConfig;
