//! Per-iteration result outputs of a run directory: `progress.csv`,
//! `result.json` (one JSON object per line) and TensorBoard event files with
//! one scalar per numeric key, stepped by env steps sampled.
//!
//! All three append, so a resumed run continues the same files and the same
//! TensorBoard curve. The CSV columns are fixed by the first row ever written
//! (read back from the header on resume); keys that are missing in a later row
//! are written empty.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use tensorboard_rs::summary_writer::SummaryWriter;

use crate::metrics::{Metrics, NUM_ENV_STEPS_SAMPLED_LIFETIME};
use crate::Error;

pub struct ResultLoggers {
    dir: PathBuf,
    csv: File,
    csv_columns: Option<Vec<String>>,
    json: File,
    tensorboard: SummaryWriter,
}

impl ResultLoggers {
    /// Opens (or continues) the outputs in `dir`.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let io = |source| Error::io(dir, source);
        std::fs::create_dir_all(dir).map_err(io)?;
        let csv_path = dir.join("progress.csv");
        let csv_columns = match File::open(&csv_path) {
            Ok(file) => BufReader::new(file)
                .lines()
                .next()
                .transpose()
                .map_err(|e| Error::io(&csv_path, e))?
                .map(|header| header.split(',').map(str::to_string).collect()),
            Err(_) => None,
        };
        let append = |name: &str| {
            let path = dir.join(name);
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))
        };
        Ok(ResultLoggers {
            dir: dir.to_path_buf(),
            csv: append("progress.csv")?,
            csv_columns,
            json: append("result.json")?,
            tensorboard: SummaryWriter::new(dir),
        })
    }

    pub fn log(&mut self, result: &Metrics) -> Result<(), Error> {
        let io = |source| Error::io(&self.dir, source);
        if self.csv_columns.is_none() {
            let columns: Vec<String> = result.keys().cloned().collect();
            writeln!(self.csv, "{}", columns.join(",")).map_err(io)?;
            self.csv_columns = Some(columns);
        }
        let row: Vec<String> = self
            .csv_columns
            .iter()
            .flatten()
            .map(|key| result.get(key).map(f64::to_string).unwrap_or_default())
            .collect();
        writeln!(self.csv, "{}", row.join(",")).map_err(io)?;
        let finite: serde_json::Map<String, serde_json::Value> = result
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
            .collect();
        writeln!(self.json, "{}", serde_json::Value::Object(finite)).map_err(io)?;
        let step = result
            .get(NUM_ENV_STEPS_SAMPLED_LIFETIME)
            .copied()
            .unwrap_or_default() as usize;
        for (key, value) in result {
            self.tensorboard.add_scalar(key, *value as f32, step);
        }
        self.tensorboard.flush();
        Ok(())
    }
}
