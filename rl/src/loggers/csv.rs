//! `progress.csv`: one row per iteration, Tune's CSV logger.
//!
//! The header is the union of the keys seen so far (read back from the file
//! on resume). When a row brings a new key (the episode metrics appear only
//! once an episode has ended, which may take several iterations), the file is
//! rewritten with the wider header and empty cells in the earlier rows,
//! through a temporary file renamed over it. Keys missing in a row are
//! written empty.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use super::output_file::OutputFile;
use crate::metrics::Metrics;

pub const FILE_NAME: &str = "progress.csv";

pub struct CsvLogger {
    file: OutputFile,
    columns: Vec<String>,
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
                .map(|header| header.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
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
        let new_keys: Vec<String> = result
            .keys()
            .filter(|key| !self.columns.contains(key))
            .cloned()
            .collect();
        if !new_keys.is_empty() {
            self.widen(new_keys)?;
        }
        let row: Vec<String> = self
            .columns
            .iter()
            .map(|key| result.get(key).map(f64::to_string).unwrap_or_default())
            .collect();
        self.file
            .write_all(format!("{}\n", row.join(",")).as_bytes())?;
        self.file.flush()
    }

    /// Adds `new_keys` to the header, rewriting the rows written so far with
    /// empty cells for them.
    fn widen(&mut self, new_keys: Vec<String>) -> io::Result<()> {
        self.file.flush()?;
        let path = self.file.path().to_path_buf();
        let old = std::fs::read_to_string(&path)?;
        let padding = ",".repeat(new_keys.len());
        let had_columns = !self.columns.is_empty();
        self.columns.extend(new_keys);
        let mut text = self.columns.join(",") + "\n";
        for row in old.lines().skip(1) {
            text.push_str(row);
            if had_columns {
                text.push_str(&padding);
            }
            text.push('\n');
        }
        let staging = path.with_file_name(format!(".{FILE_NAME}.tmp"));
        std::fs::write(&staging, text)?;
        std::fs::rename(&staging, &path)?;
        self.file = OutputFile::append(&path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Iteration 1 ends no episode, iteration 2 does: the episode column
    /// appears in the header and iteration 1's cell is empty. A resumed run
    /// keeps the widened header.
    #[test]
    fn header_grows_when_a_key_first_appears() {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = CsvLogger::open(dir.path()).unwrap();
        let first = Metrics::from([("a".to_string(), 1.0), ("z".to_string(), 2.0)]);
        csv.log(&first).unwrap();
        let mut second = first.clone();
        second.insert("m".to_string(), 3.0);
        csv.log(&second).unwrap();
        drop(csv);
        let mut resumed = CsvLogger::open(dir.path()).unwrap();
        resumed.log(&second).unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(text, "a,z,m\n1,2,\n1,2,3\n1,2,3\n");
    }
}
