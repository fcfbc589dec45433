//! The `Algorithm` trait every trainer implements (RLlib's `Algorithm`):
//! `train()` runs one iteration and returns one result; `save` and `restore`
//! move the whole training state through a checkpoint (by default through the
//! algorithm's [`Trainer`](crate::algorithms::Trainer), so an algorithm
//! writes only its training step). Everything around it
//! (run directories, loggers, stop criteria) lives in [`crate::run`] and works
//! for any algorithm; the registry of algorithms is [`crate::algorithms`].

use std::path::{Path, PathBuf};

use oxray_rl::checkpoint::Checkpoint;
use oxray_rl::metrics::{Histograms, Metrics};

use crate::algorithms::TrainerCore;
use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Rl(#[from] oxray_rl::Error),
    #[error("cluster: {0}")]
    Cluster(oxray_core::Error),
    #[error("learner: {0}")]
    Learner(String),
    #[error("non-finite loss in iteration {iteration}: {reason}")]
    NonFiniteLoss { iteration: u64, reason: String },
    #[error("training diverged: {cause}; the last good weights are in {}", checkpoint.display())]
    Diverged {
        cause: Box<TrainError>,
        checkpoint: PathBuf,
    },
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
    #[error("cannot restore checkpoint: {0}")]
    Restore(String),
    #[error("unsupported setup: {0}")]
    Unsupported(String),
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl TrainError {
    /// A LearnerGroup's error in iteration `iteration`, with a non-finite
    /// loss told apart so the run can save the last good state.
    pub fn from_learner(error: oxray_rl::Error, iteration: u64) -> Self {
        match error {
            oxray_rl::Error::NonFiniteLoss(reason) => {
                TrainError::NonFiniteLoss { iteration, reason }
            }
            other => TrainError::Rl(other),
        }
    }
}

// Not `#[from]`, which would also make it the source: the message carries
// it already, and the CLI prints an error's whole chain.
impl From<oxray_core::Error> for TrainError {
    fn from(error: oxray_core::Error) -> Self {
        TrainError::Cluster(error)
    }
}

pub trait Algorithm {
    /// One training iteration: sample, learn, report.
    fn train(&mut self) -> Result<Metrics, TrainError>;

    /// The EnvRunners, Learners and training state the methods below move
    /// around.
    fn trainer(&self) -> &dyn TrainerCore;

    fn trainer_mut(&mut self) -> &mut dyn TrainerCore;

    /// Writes a checkpoint of the whole training state under `checkpoint_dir`
    /// and returns its path.
    fn save(&self, checkpoint_dir: &Path) -> Result<PathBuf, TrainError> {
        let checkpoint = self.trainer().checkpoint()?;
        crate::algorithms::write_checkpoint(checkpoint_dir, self.iteration(), &checkpoint)
    }

    /// Continues from `checkpoint` (weights, optimizer, counters).
    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), TrainError> {
        self.trainer_mut().restore(checkpoint)
    }

    /// Value distributions of the latest iteration for TensorBoard: the
    /// sampled actions, the quantities the loss is built from (advantages,
    /// TD errors, ...) and the policy's weights. The run asks for them every
    /// `reporting.histogram_frequency` iterations.
    fn histograms(&self) -> Result<Histograms, TrainError> {
        self.trainer().histograms()
    }

    /// Iterations completed so far.
    fn iteration(&self) -> u64 {
        self.trainer().iteration()
    }

    /// The Learner's current weights as the EnvRunners take them (flat
    /// trainable parameters), for evaluation.
    fn flat_weights(&self) -> Result<Vec<f32>, TrainError> {
        self.trainer().flat_weights()
    }

    /// Where each Learner trains (`cpu`, `cuda:0`).
    fn learner_devices(&self) -> Result<Vec<String>, TrainError> {
        self.trainer().learner_devices()
    }
}
