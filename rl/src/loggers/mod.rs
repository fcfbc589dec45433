//! Per-iteration result outputs of a run directory, Tune's three loggers:
//! `progress.csv`, `result.json` (one JSON object per line) and TensorBoard
//! event files (scalars, HParams, config text, histograms).
//!
//! All three append, so a resumed run continues the same files and the same
//! TensorBoard curves. They share one failure policy: losing the result files
//! is no reason to lose the training. The first I/O error (disk full, the run
//! directory removed mid-run) is returned once, as a [`ResultsLost`] for the
//! caller to show as a warning; from then on every call does nothing, so no
//! later write appends to a file whose last record may be cut short.
//!
//! # Layout
//! - [`csv`], [`json`], [`tensorboard`]: one output each;
//! - [`event_file`] and [`summary`]: TensorBoard's event file format;
//! - [`output_file`]: the append-only file they all write through.

pub mod csv;
pub mod event_file;
pub mod json;
pub mod output_file;
pub mod summary;
pub mod tensorboard;

use std::io;
use std::path::{Path, PathBuf};

use crate::metrics::{Histograms, Metrics};
use crate::Error;

/// Why a run's result files stopped being written.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot write {}: {error}; the results of this run are no longer logged \
     (progress.csv, result.json, TensorBoard), training goes on",
    path.display()
)]
pub struct ResultsLost {
    pub path: PathBuf,
    pub error: io::Error,
}

pub struct ResultLoggers {
    /// `None` once an output failed.
    outputs: Option<Outputs>,
}

struct Outputs {
    csv: csv::CsvLogger,
    json: json::JsonLogger,
    tensorboard: tensorboard::TensorBoardLogger,
}

impl ResultLoggers {
    /// Opens (or continues) the outputs in `dir`. Failing to open them is an
    /// error: a run that cannot log should not start.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let io = |source| Error::io(dir, source);
        std::fs::create_dir_all(dir).map_err(io)?;
        Ok(ResultLoggers {
            outputs: Some(Outputs {
                csv: csv::CsvLogger::open(dir).map_err(io)?,
                json: json::JsonLogger::open(dir).map_err(io)?,
                tensorboard: tensorboard::TensorBoardLogger::open(dir).map_err(io)?,
            }),
        })
    }

    /// The run's config, for TensorBoard's HParams and Text tabs: `config` as
    /// JSON (flattened to dotted hparams) and `text` as written to disk.
    pub fn log_config(
        &mut self,
        config: &serde_json::Value,
        text: &str,
    ) -> Result<(), ResultsLost> {
        self.guard(|o| {
            let tb = &mut o.tensorboard;
            tb.log_config(config, text).map_err(|e| (tb.path(), e))
        })
    }

    /// One iteration's result, to all three outputs.
    pub fn log(&mut self, result: &Metrics) -> Result<(), ResultsLost> {
        self.guard(|o| {
            o.csv.log(result).map_err(|e| (o.csv.path(), e))?;
            o.json.log(result).map_err(|e| (o.json.path(), e))?;
            let tb = &mut o.tensorboard;
            tb.log_result(result).map_err(|e| (tb.path(), e))
        })
    }

    /// Value distributions of the iteration that produced `result`, as
    /// TensorBoard histograms.
    pub fn log_histograms(
        &mut self,
        result: &Metrics,
        histograms: &Histograms,
    ) -> Result<(), ResultsLost> {
        self.guard(|o| {
            let tb = &mut o.tensorboard;
            tb.log_histograms(result, histograms)
                .map_err(|e| (tb.path(), e))
        })
    }

    /// Runs `write` while the outputs are intact; its first failure closes
    /// them all.
    fn guard(
        &mut self,
        write: impl FnOnce(&mut Outputs) -> Result<(), (&Path, io::Error)>,
    ) -> Result<(), ResultsLost> {
        let Some(outputs) = self.outputs.as_mut() else {
            return Ok(());
        };
        let lost = match write(outputs) {
            Ok(()) => return Ok(()),
            Err((path, error)) => ResultsLost {
                path: path.to_path_buf(),
                error,
            },
        };
        self.outputs = None;
        Err(lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::NUM_ENV_STEPS_SAMPLED_LIFETIME;

    fn result(steps: f64) -> Metrics {
        Metrics::from([
            (NUM_ENV_STEPS_SAMPLED_LIFETIME.into(), steps),
            ("env_runners/episode_return_mean".into(), 9.5),
        ])
    }

    #[test]
    fn a_removed_run_directory_is_reported_once_and_writes_stop() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("run");
        let mut loggers = ResultLoggers::open(&dir).unwrap();
        loggers.log(&result(100.0)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let lost = loggers.log(&result(200.0)).unwrap_err();
        assert_eq!(lost.path, dir.join("progress.csv"));
        assert!(lost.to_string().contains("was removed"), "{lost}");
        assert!(loggers.log(&result(300.0)).is_ok(), "reported once");
        let histograms = Histograms::from([("h".into(), vec![1.0])]);
        assert!(loggers.log_histograms(&result(300.0), &histograms).is_ok());
        assert!(!dir.exists(), "nothing recreates the directory");
    }

    #[test]
    fn a_resumed_run_appends_to_the_same_files() {
        let dir = tempfile::tempdir().unwrap();
        ResultLoggers::open(dir.path())
            .unwrap()
            .log(&result(100.0))
            .unwrap();
        let mut resumed = ResultLoggers::open(dir.path()).unwrap();
        resumed.log(&result(200.0)).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("progress.csv")).unwrap();
        assert_eq!(
            csv,
            "env_runners/episode_return_mean,num_env_steps_sampled_lifetime\n9.5,100\n9.5,200\n"
        );
        let json = std::fs::read_to_string(dir.path().join("result.json")).unwrap();
        assert_eq!(json.lines().count(), 2);
        let event_files = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("events.out.tfevents.")
            })
            .count();
        assert_eq!(event_files, 2, "one event file per session of the run");
    }
}
