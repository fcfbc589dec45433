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
//! - `distributions`, `host_distribution`: action distributions (on libtorch
//!   tensors, and on host vectors with their gradients),
//! - `sample_batch`, `obs_buffer`, `gae`, `vtrace`, `schedule`,
//!   `replay_buffer`: data and its processing (observation columns keep
//!   image bytes as bytes),
//! - `offline_data`: recorded episodes (JSON Lines) and the rows offline
//!   algorithms learn from,
//! - `env_runner`, `env_runner_group`: sampling,
//! - `learner`, `learner_group`, `minibatch_sgd`, `target_network`, `optim`,
//!   `host_threads` (on a `thread_team`), `collective`: learning; `partwise_learner`: a Learner
//!   whose losses each train one part of the module (SAC, CQL, IQL),
//! - `metrics`, `loggers`, `checkpoint`: results and state.

pub mod checkpoint;
pub mod collective;
pub mod distributions;
pub mod env_runner;
pub mod env_runner_group;
pub mod gae;
pub mod host_distribution;
pub mod host_threads;
pub mod learner;
pub mod learner_group;
pub mod loggers;
pub mod metrics;
pub mod minibatch_sgd;
pub mod obs_buffer;
pub mod offline_data;
pub mod optim;
pub mod partwise_learner;
pub mod replay_buffer;
pub mod rl_module;
pub mod sample_batch;
pub mod schedule;
pub mod target_network;
pub mod thread_team;
pub mod vtrace;

use std::path::{Path, PathBuf};

pub use metrics::Metrics;
pub use obs_buffer::{ObsBuffer, ObsDType};
pub use sample_batch::SampleBatch;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("libtorch: {}", torch_message(.0))]
    Torch(tch::TchError),
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
    EnvFailed(oxray_envs::EnvError),
    /// Recorded episodes that cannot be read or written (the message
    /// carries the inner error whole, so it is not also a source).
    #[error("offline data: {0}")]
    OfflineData(offline_data::OfflineDataError),
    #[error("cluster: {0}")]
    Cluster(oxray_core::Error),
    /// What a remote EnvRunner's worker ran into, as it told it.
    #[error("{0} (on an EnvRunner's worker)")]
    OnEnvRunner(String),
    #[error("collective: {0}")]
    Collective(oxray_collective::CollectiveError),
    /// `learners.num_gpus_per_learner` > 0 where libtorch finds no CUDA
    /// device (RLlib refuses too rather than train on the CPU unasked).
    #[error(
        "learners.num_gpus_per_learner is {num_gpus}, but libtorch finds no CUDA device {place}: \
         set it to 0 to train on the CPU"
    )]
    NoGpu { num_gpus: f64, place: String },
}

// The conversions are written out rather than `#[from]`, which would also
// make the inner error the source: each variant's message already carries
// it, and a chain printed whole (`{:#}`, as the CLI does) would say it twice.
macro_rules! wrap_error {
    ($($inner:ty => $variant:ident),* $(,)?) => {$(
        impl From<$inner> for Error {
            fn from(error: $inner) -> Self {
                Error::$variant(error)
            }
        }
    )*};
}

wrap_error! {
    tch::TchError => Torch,
    oxray_envs::EnvError => EnvFailed,
    oxray_core::Error => Cluster,
    oxray_collective::CollectiveError => Collective,
}

/// libtorch's message without the C++ stack trace it appends ("Exception
/// raised from ..." and a frame per line), which says nothing to a user.
fn torch_message(error: &tch::TchError) -> String {
    let message = error.to_string();
    match message.find("Exception raised from") {
        Some(trace) => message[..trace].trim_end().to_string(),
        None => message,
    }
}

impl From<offline_data::OfflineDataError> for Error {
    fn from(error: offline_data::OfflineDataError) -> Self {
        Error::OfflineData(error)
    }
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

/// The largest element-wise difference between `a` and `b`, for the tests
/// that hold a host computation to libtorch's.
#[cfg(test)]
pub(crate) fn max_abs_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Sets up a process that runs libtorch (a Learner, an EnvRunner), once:
///
/// - every such process shares the machine's cores with the others
///   (EnvRunners, Learners, the driver): one intra-op and one inter-op thread
///   each keeps them from oversubscribing it, unless its Learner reserved
///   more CPUs ([`use_torch_threads`]);
/// - a gradient step on a small network makes dozens of temporaries of a few
///   hundred KB (a 64×256 activation, its gradient, Adam's buffers). Those lie
///   above glibc's default mmap threshold (128 KB, raised only now and then by
///   its heuristic), so each one was mmapped and unmapped again, and every
///   touch of its pages was a page fault: ~45 faults and their zeroing per DQN
///   gradient step. A fixed 32 MiB threshold (glibc's own upper limit for its
///   heuristic) serves them from the heap instead, and a 256 MiB trim
///   threshold keeps freed heap memory for the next step rather than handing
///   it back to the kernel at the end of every step. Memory use stays bounded
///   by the process's peak; only allocations above 32 MiB are still mapped
///   one by one.
///
/// Safe to call more than once.
pub fn setup_torch_process() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tch::set_num_threads(1);
        tch::set_num_interop_threads(1);
        keep_freed_memory_for_reuse();
    });
}

/// The libtorch intra-op threads of a Learner that reserved `num_cpus` CPUs:
/// one per whole CPU, at least one (as Ray sets `OMP_NUM_THREADS` from an
/// actor's `num_cpus`), so a Learner given the cores for a larger model
/// uses them and one given a fraction of a core does not take more.
pub fn torch_threads_for(num_cpus: f64) -> usize {
    (num_cpus.floor() as usize).max(1)
}

/// [`setup_torch_process`], then `threads` intra-op threads for this
/// process's libtorch.
pub fn use_torch_threads(threads: usize) {
    setup_torch_process();
    tch::set_num_threads(i32::try_from(threads).unwrap_or(i32::MAX));
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory_for_reuse() {
    const MMAP_THRESHOLD: libc::c_int = 32 << 20;
    const TRIM_THRESHOLD: libc::c_int = 256 << 20;
    // SAFETY: mallopt only changes glibc's allocation policy; it returns 0
    // (and changes nothing) for a value it rejects, which leaves the default
    // policy: slower, never wrong, so the result is not checked.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Other C libraries have their own allocation policies; nothing to tune.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory_for_reuse() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_libtorch_error_reads_without_its_cpp_stack_trace() {
        let shapes = tch::Tensor::zeros([2], (tch::Kind::Float, tch::Device::Cpu))
            .f_view([3])
            .expect_err("a view of 2 elements as 3 fails");
        assert!(shapes.to_string().contains("Exception raised from"));
        let shown = Error::Torch(shapes).to_string();
        assert!(shown.starts_with("libtorch: "), "{shown}");
        assert!(shown.contains("[3]"), "the message stays: {shown}");
        assert!(!shown.contains("Exception raised from"), "{shown}");
        assert!(!shown.contains("frame #"), "{shown}");
    }
}
