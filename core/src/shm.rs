//! Shared-memory files for large objects.
//!
//! A value of 100 KiB or more is written once into a file under `/dev/shm`
//! (a tmpfs on Linux) and every process of the node maps it instead of copying
//! it through a socket. The file name carries the cluster session, so a node
//! removes exactly its own files at shutdown.

use crate::error::{Error, Result};
use crate::ids::ObjectId;
use memmap2::{Mmap, MmapMut};
use std::fs::OpenOptions;
use std::path::PathBuf;

/// Values at least this large go to shared memory instead of inline.
pub const INLINE_LIMIT: usize = 100 * 1024;

fn shm_dir() -> PathBuf {
    let dev_shm = PathBuf::from("/dev/shm");
    if dev_shm.is_dir() {
        dev_shm
    } else {
        std::env::temp_dir()
    }
}

/// The path of an object's file in `session`.
pub fn object_path(session: &str, id: ObjectId) -> PathBuf {
    shm_dir().join(format!("oxray-{session}-{:x}", id.0))
}

/// Creates the file for `id` with `len` bytes and lets `fill` write them.
pub fn create(
    session: &str,
    id: ObjectId,
    len: usize,
    fill: impl FnOnce(&mut [u8]) -> Result<()>,
) -> Result<PathBuf> {
    let path = object_path(session, id);
    let io = |e: std::io::Error| Error::runtime(&format!("shared memory {}", path.display()), e);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(io)?;
    file.set_len(len as u64).map_err(io)?;
    if len > 0 {
        // SAFETY: the file was just created by this process under a unique name;
        // nobody else maps it until its path is published after this returns.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(io)?;
        if let Err(e) = fill(&mut map) {
            drop(map);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    }
    Ok(path)
}

/// Maps an object's file read-only.
pub fn open(path: &str) -> Result<Mmap> {
    let io = |e: std::io::Error| Error::ObjectLost {
        id: path.to_string(),
        message: format!("cannot map shared memory: {e}"),
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: object files are written once before their path is published and
    // never modified afterwards; removal only unlinks the name.
    unsafe { Mmap::map(&file) }.map_err(io)
}

/// Removes every file of a session (node shutdown).
pub fn remove_session(session: &str) {
    let prefix = format!("oxray-{session}-");
    if let Ok(entries) = std::fs::read_dir(shm_dir()) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
