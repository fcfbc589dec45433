//! Shared-memory files for large objects.
//!
//! A value of 100 KiB or more is written once into a file under `/dev/shm`
//! (a tmpfs on Linux) and every process of the node maps it instead of copying
//! it through a socket. The file name carries the cluster session, so a node
//! removes exactly its own files at shutdown.
//!
//! Creating, faulting in and deleting a fresh file per object costs more than
//! copying the bytes (page faults, zeroing, page-cache churn), so the process
//! that hosts the node keeps the files it wrote mapped, and when the node frees
//! one it goes to a pool that later writes of a similar size reuse, already
//! mapped and faulted in — the same idea as a plasma arena, with files as the
//! unit. Worker processes never see frees, so they write and forget.

use crate::error::{Error, Result};
use crate::ids::ObjectId;
use memmap2::{Mmap, MmapMut};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Values at least this large go to shared memory instead of inline.
pub const INLINE_LIMIT: usize = 100 * 1024;

/// Most bytes of freed files kept for reuse.
const RECYCLE_LIMIT_BYTES: usize = 2 << 30;

struct Segment {
    path: PathBuf,
    map: Arc<MmapMut>,
}

/// Files this process wrote and keeps mapped, by path.
static LIVE: Mutex<Option<HashMap<PathBuf, Segment>>> = Mutex::new(None);
/// Freed files ready for reuse.
static RECYCLED: Mutex<Vec<Segment>> = Mutex::new(Vec::new());

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

/// Whether `path` is an object file of `session` (what an object server may
/// hand out).
pub fn belongs_to_session(path: &str, session: &str) -> bool {
    let path = Path::new(path);
    path.parent() == Some(shm_dir().as_path())
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&format!("oxray-{session}-")) && !n.contains('/'))
}

/// Where this node keeps its copy of an object pulled from another node.
pub fn pulled_path(session: &str, server: &str, remote_path: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (server, remote_path).hash(&mut hasher);
    shm_dir().join(format!("oxray-{session}-pulled-{:016x}", hasher.finish()))
}

/// A recycled file that holds `len` bytes without wasting more than half.
fn take_recycled(len: usize) -> Option<Segment> {
    let mut recycled = RECYCLED.lock();
    let index = recycled
        .iter()
        .position(|s| s.map.len() >= len && s.map.len() <= len.saturating_mul(2))?;
    Some(recycled.swap_remove(index))
}

/// Creates the file for `id` with `len` bytes and lets `fill` write them.
/// With `keep_mapped` (the node's own process) the file stays mapped for reads
/// and reuse; the returned path names the bytes either way.
pub fn create(
    session: &str,
    id: ObjectId,
    len: usize,
    keep_mapped: bool,
    fill: impl FnOnce(&mut [u8]) -> Result<()>,
) -> Result<PathBuf> {
    if keep_mapped {
        if let Some(mut segment) = take_recycled(len) {
            let map = Arc::get_mut(&mut segment.map).expect("recycled segments are unshared");
            fill(&mut map[..len])?;
            let path = segment.path.clone();
            LIVE.lock()
                .get_or_insert_with(HashMap::new)
                .insert(path.clone(), segment);
            return Ok(path);
        }
    }
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
    // SAFETY: the file was just created by this process under a unique name;
    // nobody else maps it until its path is published after this returns.
    let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(io)?;
    if let Err(e) = fill(&mut map) {
        drop(map);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    if keep_mapped {
        let segment = Segment {
            path: path.clone(),
            map: Arc::new(map),
        };
        LIVE.lock()
            .get_or_insert_with(HashMap::new)
            .insert(path.clone(), segment);
    }
    Ok(path)
}

/// The bytes of an object file, mapped.
pub enum SharedBytes {
    Mapped(Mmap),
    Live(Arc<MmapMut>),
}

impl Deref for SharedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            SharedBytes::Mapped(map) => map,
            SharedBytes::Live(map) => map,
        }
    }
}

/// Maps an object's file read-only (or shares this process's own mapping).
pub fn open(path: &str) -> Result<SharedBytes> {
    if let Some(segment) = LIVE
        .lock()
        .as_ref()
        .and_then(|live| live.get(Path::new(path)))
    {
        return Ok(SharedBytes::Live(segment.map.clone()));
    }
    let io = |e: std::io::Error| Error::ObjectLost {
        id: path.to_string(),
        message: format!("cannot map shared memory: {e}"),
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: object files are written once before their path is published and
    // are only rewritten after the node freed the object, when no reference to
    // it — and so no reader — is left.
    unsafe { Mmap::map(&file) }
        .map(SharedBytes::Mapped)
        .map_err(io)
}

/// The node freed the object stored at `path`: keep the file for reuse if this
/// process wrote it and the pool has room, else remove it.
pub fn free(path: &str) {
    let segment = LIVE
        .lock()
        .as_mut()
        .and_then(|live| live.remove(Path::new(path)));
    match segment {
        Some(segment) if Arc::strong_count(&segment.map) == 1 => {
            let mut recycled = RECYCLED.lock();
            let pooled: usize = recycled.iter().map(|s| s.map.len()).sum();
            if pooled + segment.map.len() <= RECYCLE_LIMIT_BYTES {
                recycled.push(segment);
                return;
            }
            drop(recycled);
            let _ = std::fs::remove_file(&segment.path);
        }
        _ => {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Removes every file of a session (node shutdown) and forgets the mappings.
pub fn remove_session(session: &str) {
    LIVE.lock().take();
    RECYCLED.lock().clear();
    let prefix = format!("oxray-{session}-");
    if let Ok(entries) = std::fs::read_dir(shm_dir()) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
