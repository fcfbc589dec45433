//! `result.json`: one JSON object per iteration and line, Tune's JSON logger.
//! Non-finite values are left out (JSON has no NaN).

use std::io;
use std::path::Path;

use super::output_file::OutputFile;
use crate::metrics::Metrics;

pub const FILE_NAME: &str = "result.json";

pub struct JsonLogger {
    file: OutputFile,
}

impl JsonLogger {
    /// Opens (or continues) `result.json` in `dir`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Ok(JsonLogger {
            file: OutputFile::append(&dir.join(FILE_NAME))?,
        })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn log(&mut self, result: &Metrics) -> io::Result<()> {
        let finite: serde_json::Map<String, serde_json::Value> = result
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
            .collect();
        let line = format!("{}\n", serde_json::Value::Object(finite));
        self.file.write_all(line.as_bytes())?;
        self.file.flush()
    }
}
