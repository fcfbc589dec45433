//! Object spilling (Ray's object spilling): a node's object store has a
//! capacity (`--object-store-memory`, `InitOptions::object_store_memory`;
//! default 30% of RAM, as Ray's), and when the primary copies in its shared
//! memory would exceed it, the head picks the oldest ones and the node moves
//! them to files under the session directory (`spill/`), freeing the memory.
//!
//! A spilled object keeps its shared-memory path as its name: the spill file
//! is that file name in the node's spill directory, so every reader — the
//! node's workers, its object server answering a pull from another node —
//! finds it from the value's blob alone, and nothing has to tell the readers
//! it moved. A `get` reads (restores) it from there, checking the
//! generation as for any object file. The file is written under a temporary
//! name and renamed into place before the shared-memory file is unlinked, so
//! a reader always finds one of the two. A reader that mapped the object
//! before it was spilled keeps its mapping (the memory goes when it is done),
//! so spilling never takes bytes from under a reader.
//!
//! Spill files are private (0600, in the 0700 session directory), removed
//! when the object is freed and when the node stops; `oxray stop` removes
//! those of nodes that died (their names start with the node's pid, as
//! shared-memory files do).

use crate::error::{Error, Result};
use crate::shm;
use parking_lot::RwLock;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A worker learns its node's store from these.
pub(crate) const SPILL_DIR_ENV: &str = "OXRAY_SPILL_DIR";
pub(crate) const OBJECT_STORE_MEMORY_ENV: &str = "OXRAY_OBJECT_STORE_MEMORY";

/// The smallest store a node may be given.
pub const MIN_OBJECT_STORE_MEMORY: u64 = 1 << 20;

/// The object store of the node this process belongs to.
#[derive(Debug, Clone)]
pub(crate) struct StoreSettings {
    /// Bytes of primary copies the node keeps in shared memory.
    pub capacity: u64,
    /// Where its spilled objects go.
    pub spill_dir: PathBuf,
}

static SETTINGS: RwLock<Option<StoreSettings>> = RwLock::new(None);

/// Sets this process's node store (a node process at start, a worker from
/// its environment).
pub(crate) fn configure(settings: StoreSettings) {
    *SETTINGS.write() = Some(settings);
}

/// A worker's store settings, as its node passed them.
pub(crate) fn configure_from_env() {
    let capacity = std::env::var(OBJECT_STORE_MEMORY_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    if let (Some(capacity), Some(dir)) = (capacity, std::env::var_os(SPILL_DIR_ENV)) {
        configure(StoreSettings {
            capacity,
            spill_dir: PathBuf::from(dir),
        });
    }
}

pub(crate) fn settings() -> Option<StoreSettings> {
    SETTINGS.read().clone()
}

/// Ray's default: 30% of the machine's memory, and no more than the shared
/// memory filesystem holds.
pub(crate) fn default_capacity() -> u64 {
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(2 << 30, |kib| kib * 1024);
    let mut capacity = ram / 10 * 3;
    // SAFETY: statvfs writes into the zeroed struct; the path is a valid C string.
    unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c"/dev/shm".as_ptr(), &mut stat) == 0 {
            let shm_bytes = stat.f_blocks as u64 * stat.f_frsize as u64;
            if shm_bytes > 0 {
                capacity = capacity.min(shm_bytes / 100 * 95);
            }
        }
    }
    capacity.max(MIN_OBJECT_STORE_MEMORY)
}

/// Refuses a value that could never fit in this node's store, however much
/// is spilled (Ray's `ObjectStoreFullError`).
pub(crate) fn check_fits(bytes: u64) -> Result<()> {
    match settings() {
        Some(store) if bytes > store.capacity => Err(Error::ObjectStoreFull {
            bytes,
            capacity: store.capacity,
        }),
        _ => Ok(()),
    }
}

/// Where the object whose shared-memory file is `shm_path` goes when spilled.
fn spill_path(shm_path: &Path) -> Option<PathBuf> {
    let name = shm_path.file_name()?;
    Some(settings()?.spill_dir.join(name))
}

/// Opens an object's file: in shared memory, or its spill file if it was
/// spilled (never through a link).
pub(crate) fn open_object_file(path: &Path) -> std::io::Result<File> {
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(p)
    };
    match open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match spill_path(path) {
            Some(spilled) => open(&spilled).map_err(|_| e),
            None => Err(e),
        },
        other => other,
    }
}

/// Moves the object of `generation` (`len` bytes) at `path` from shared
/// memory to its spill file. Returns whether it was spilled: a file that no
/// longer holds that value (already freed) is left alone.
pub(crate) fn spill(path: &str, generation: u64, len: u64) -> Result<bool> {
    let shm_path = Path::new(path);
    let Some(target) = spill_path(shm_path) else {
        return Ok(false);
    };
    let file_len = len as usize + shm::HEADER_BYTES;
    let dir = target.parent().expect("a spill path has a directory");
    crate::session::ensure_private_dir(dir)?;
    let partial = target.with_extension("partial");
    let io = |e: std::io::Error| Error::runtime(&format!("spilling to {}", partial.display()), e);
    let copy = || -> Result<()> {
        let mut out = shm::create_private(&partial)?;
        match shm::release_mapping(shm_path, generation) {
            // This process wrote it and still maps it: write from the mapping.
            Some(map) => out.write_all(&map[..file_len.min(map.len())]).map_err(io),
            None => {
                let mut file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(shm_path)
                    .map_err(|_| stale(path))?;
                if shm::generation_of(&mut file) != Some(generation) {
                    return Err(stale(path));
                }
                file.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
                std::io::copy(&mut file.take(file_len as u64), &mut out)
                    .map(|_| ())
                    .map_err(io)
            }
        }
    };
    let written = copy();
    let published = written.and_then(|()| {
        std::fs::rename(&partial, &target)
            .map_err(|e| Error::runtime(&format!("spilling to {}", target.display()), e))
    });
    match published {
        Ok(()) => {
            let _ = std::fs::remove_file(shm_path);
            Ok(true)
        }
        Err(Error::ObjectLost { .. }) => {
            let _ = std::fs::remove_file(&partial);
            Ok(false)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

fn stale(path: &str) -> Error {
    Error::ObjectLost {
        id: path.to_string(),
        message: "freed before it was spilled".into(),
    }
}

/// The object at `path` was freed: removes its spill file, if any.
pub(crate) fn remove(path: &Path) {
    if let Some(spilled) = spill_path(path) {
        let _ = std::fs::remove_file(spilled);
    }
}

/// Removes every spill file of a node's session (the node stops).
pub(crate) fn remove_session(session: &str) {
    if let Some(store) = settings() {
        let prefix = format!("oxray-{session}-");
        remove_where(&store.spill_dir, |name| name.starts_with(&prefix));
    }
}

/// Removes the spill files under `dir` whose node process is gone, as
/// [`shm::remove_orphans`] does for shared memory. Returns how many.
pub fn remove_orphans(dir: &Path) -> usize {
    remove_where(dir, |name| {
        shm::owner_pid(name).is_some_and(|pid| !crate::worker::process_alive(pid))
    })
}

fn remove_where(dir: &Path, doomed: impl Fn(&str) -> bool) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| doomed(&e.file_name().to_string_lossy()))
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}
