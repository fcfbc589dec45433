//! An append-only result file that notices when it is gone.
//!
//! On Linux, writes to a file whose directory was removed still succeed: they
//! land in an unlinked inode and vanish with the process. A logger that only
//! looked at write errors would keep "logging" into nothing. So every flush
//! also checks that the path still names the file that was opened (same device
//! and inode), and reports a removed or replaced file as an error like any
//! other I/O failure.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub struct OutputFile {
    path: PathBuf,
    writer: BufWriter<File>,
    /// `(device, inode)` of the file opened.
    identity: (u64, u64),
}

impl OutputFile {
    /// Opens `path` for appending, creating it if needed.
    pub fn append(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let metadata = file.metadata()?;
        Ok(OutputFile {
            path: path.to_path_buf(),
            writer: BufWriter::new(file),
            identity: (metadata.dev(), metadata.ino()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Buffers `bytes`; they reach the file at the next [`Self::flush`] (or
    /// earlier, when the buffer fills).
    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// Writes out what is buffered and checks that the file is still there.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()?;
        match std::fs::metadata(&self.path) {
            Ok(now) if (now.dev(), now.ino()) == self.identity => Ok(()),
            Ok(_) => Err(io::Error::other("the file was replaced by another one")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the file was removed",
            )),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_reports_a_removed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("progress.csv");
        let mut file = OutputFile::append(&path).unwrap();
        file.write_all(b"a\n").unwrap();
        file.flush().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"a\n");
        std::fs::remove_file(&path).unwrap();
        file.write_all(b"b\n").unwrap();
        let error = file.flush().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn flush_reports_a_replaced_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("result.json");
        let mut file = OutputFile::append(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"someone else's\n").unwrap();
        assert!(file.flush().unwrap_err().to_string().contains("replaced"));
    }
}
