//! RLlib-style building blocks for oxray: RLModules over shared encoders and
//! action distributions, columnar sample batches, GAE, replay buffers, the
//! EnvRunner and Learner (plain structs that also serve as oxray-core actors),
//! the generic LearnerGroup, metrics, result loggers and checkpoints.
//!
//! Nothing here knows a particular algorithm; `oxray-trainers` composes these
//! pieces into PPO, DQN and friends.
//!
//! # Layout
//! - `rl_module`: RLModule trait, encoders, actor-critic and Q-network modules,
//! - `distributions`: action distributions,
//! - `sample_batch`, `obs_buffer`, `gae`, `vtrace`, `schedule`,
//!   `replay_buffer`: data and its processing (observation columns keep
//!   image bytes as bytes),
//! - `env_runner`, `env_runner_group`: sampling,
//! - `learner`, `learner_group`, `minibatch_sgd`, `target_network`, `optim`,
//!   `collective`: learning,
//! - `metrics`, `loggers`, `checkpoint`: results and state.

pub mod checkpoint;
pub mod collective;
pub mod distributions;
pub mod env_runner;
pub mod env_runner_group;
pub mod gae;
pub mod learner;
pub mod learner_group;
pub mod loggers;
pub mod metrics;
pub mod minibatch_sgd;
pub mod obs_buffer;
pub mod optim;
pub mod replay_buffer;
pub mod rl_module;
pub mod sample_batch;
pub mod schedule;
pub mod target_network;
pub mod vtrace;

use std::path::{Path, PathBuf};

pub use metrics::Metrics;
pub use obs_buffer::{ObsBuffer, ObsDType};
pub use sample_batch::SampleBatch;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint { path: PathBuf, reason: String },
    #[error("{0}")]
    Incompatible(String),
    /// The `model:` config does not fit the env's observations.
    #[error("model for {env}: {error}")]
    Model {
        env: String,
        error: crate::rl_module::EncoderError,
    },
    #[error("non-finite loss: {0}")]
    NonFiniteLoss(String),
    #[error("learner: {0}")]
    Learner(String),
    #[error("environment: {0}")]
    Env(String),
    /// An env failed to build, reset or step (a Python env's exception
    /// included, with its traceback).
    #[error("environment: {0}")]
    EnvFailed(#[from] oxray_envs::EnvError),
    #[error("cluster: {0}")]
    Cluster(#[from] oxray_core::Error),
    #[error("collective: {0}")]
    Collective(#[from] oxray_collective::CollectiveError),
}

impl Error {
    pub fn io(path: &Path, error: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}

/// A float tensor's values on the host, flattened.
///
/// # Panics
/// If `t` is not an f32 tensor; callers only pass model outputs.
pub fn to_host(t: &tch::Tensor) -> Vec<f32> {
    let flat = t.to_device(tch::Device::Cpu).contiguous().view(-1);
    Vec::<f32>::try_from(&flat).expect("f32 tensor")
}

/// Every libtorch process shares the machine's cores with the others (EnvRunners,
/// Learners, the driver): one intra-op and one inter-op thread each keeps them
/// from oversubscribing it. Safe to call more than once.
pub fn single_threaded_torch() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tch::set_num_threads(1);
        tch::set_num_interop_threads(1);
    });
}
