//! Reading log files page by page, for job logs and the Logs view.
//!
//! A reader follows a log by asking again from the offset the last page
//! ended at (`?offset=N`), so following needs no open connection and no
//! server state; a page never ends inside a UTF-8 character.

use serde::{Deserialize, Serialize};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

/// Most bytes one page holds, so a huge log is paged.
const MAX_PAGE: u64 = 1 << 20;

/// A page of a log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogChunk {
    pub logs: String,
    /// Where the next page starts (pass it back as `offset` to follow).
    pub offset: u64,
}

/// The log at `path` from byte `offset` on; a log not written yet is empty.
pub fn read_chunk(path: &Path, offset: u64) -> std::io::Result<LogChunk> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LogChunk {
                logs: String::new(),
                offset,
            })
        }
        Err(e) => return Err(e),
    };
    file.seek(std::io::SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.take(MAX_PAGE).read_to_end(&mut bytes)?;
    let whole = match std::str::from_utf8(&bytes) {
        Ok(_) => bytes.len(),
        // A character cut at the end waits for the next page; invalid bytes
        // elsewhere are shown replaced.
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => bytes.len(),
    };
    Ok(LogChunk {
        logs: String::from_utf8_lossy(&bytes[..whole]).into_owned(),
        offset: offset + whole as u64,
    })
}

/// The plain files directly in `dir`, by name.
pub fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `dir/name` if `name` is a plain file name (no path separators, no `..`),
/// so a request cannot read outside the logs directory.
pub fn resolve(dir: &Path, name: &str) -> Option<PathBuf> {
    let plain = !name.is_empty() && !name.contains('/') && name != "." && name != "..";
    plain.then(|| dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_a_growing_log_and_never_split_a_character() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.log");
        assert_eq!(read_chunk(&path, 0).unwrap().logs, "");
        // "é" is two bytes; write only its first one.
        std::fs::write(&path, b"step 1\n\xc3").unwrap();
        let first = read_chunk(&path, 0).unwrap();
        assert_eq!((first.logs.as_str(), first.offset), ("step 1\n", 7));
        std::fs::write(&path, "step 1\né done\n").unwrap();
        let second = read_chunk(&path, first.offset).unwrap();
        assert_eq!(second.logs, "é done\n");
        assert_eq!(read_chunk(&path, second.offset).unwrap().logs, "");
    }

    #[test]
    fn names_that_leave_the_directory_are_refused() {
        let dir = Path::new("/tmp/session/logs");
        assert!(resolve(dir, "job-1.log").is_some());
        for name in ["", "..", "../token", "a/b"] {
            assert!(resolve(dir, name).is_none(), "{name}");
        }
    }
}
