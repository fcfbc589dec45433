//! `progress.csv`: one row per iteration, Tune's CSV logger.
//!
//! The columns are fixed by the first row ever written (read back from the
//! header on resume); keys that are missing in a later row are written empty.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use super::output_file::OutputFile;
use crate::metrics::Metrics;

pub const FILE_NAME: &str = "progress.csv";

pub struct CsvLogger {
    file: OutputFile,
    columns: Option<Vec<String>>,
}

impl CsvLogger {
    /// Opens (or continues) `progress.csv` in `dir`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let path = dir.join(FILE_NAME);
        let columns = match File::open(&path) {
            Ok(file) => BufReader::new(file)
                .lines()
                .next()
                .transpose()?
                .map(|header| header.split(',').map(str::to_string).collect()),
            Err(_) => None,
        };
        Ok(CsvLogger {
            file: OutputFile::append(&path)?,
            columns,
        })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn log(&mut self, result: &Metrics) -> io::Result<()> {
        if self.columns.is_none() {
            let columns: Vec<String> = result.keys().cloned().collect();
            self.file
                .write_all(format!("{}\n", columns.join(",")).as_bytes())?;
            self.columns = Some(columns);
        }
        let row: Vec<String> = self
            .columns
            .iter()
            .flatten()
            .map(|key| result.get(key).map(f64::to_string).unwrap_or_default())
            .collect();
        self.file
            .write_all(format!("{}\n", row.join(",")).as_bytes())?;
        self.file.flush()
    }
}
