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
//! unit. Worker processes never see frees, so the node moves the files they
//! wrote into a pool of freed files (`pool.rs`) that any process of the node
//! claims from, writing into pages that already exist. A process that does
//! not keep its file mapped writes it with `write` rather than through a
//! mapping: the kernel copies into the pages without a fault per page and
//! without zeroing pages it is about to fill.
//!
//! Because a path is reused, a path does not name bytes: every file starts
//! with the *generation* of the value it holds (an id minted for those bytes
//! alone), and every reader checks it, so a stale path can never be read as
//! another value. Copies pulled from other nodes are named by the holder and
//! the generation, and removed when the head frees the value.
//!
//! `/dev/shm` is shared by every user of the machine, so object files are
//! created 0600 without following links, a file another user placed at an
//! object's path first is refused rather than written into, and only this
//! user's private files are ever mapped as values.

use crate::error::{Error, Result};
use crate::ids::ObjectId;
use memmap2::{Mmap, MmapMut};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::ops::Deref;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod pool;

/// Values at least this large go to shared memory instead of inline.
pub const INLINE_LIMIT: usize = 100 * 1024;

/// Most bytes of freed files kept for reuse, in each of the two pools (and
/// no more than a quarter of the node's object store).
const RECYCLE_LIMIT_BYTES: usize = 2 << 30;

fn recycle_limit() -> usize {
    crate::spill::settings().map_or(RECYCLE_LIMIT_BYTES, |store| {
        RECYCLE_LIMIT_BYTES.min((store.capacity / 4) as usize)
    })
}

/// Bytes before the value: its generation, little-endian.
pub const HEADER_BYTES: usize = 8;

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
        && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            n.starts_with(&format!("oxray-{session}-"))
                && !n.starts_with(&pool::prefix(session))
                && !n.contains('/')
        })
}

/// Where a node keeps its copy of the value of `generation` pulled from the
/// object server at `server`.
pub fn pulled_path(session: &str, server: &str, generation: u64) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    server.hash(&mut hasher);
    shm_dir().join(format!(
        "oxray-{session}-pulled-{:016x}-{generation:x}",
        hasher.finish()
    ))
}

/// The head freed the value of `generation`: drops this node's pulled copy.
/// Readers that still map it keep their mapping; the memory goes with the
/// last one.
pub fn remove_pulled(session: &str, server: &str, generation: u64) {
    let _ = std::fs::remove_file(pulled_path(session, server, generation));
}

/// Makes room in the node's store for a new file of `len` bytes in
/// `session` (an object or a pulled copy) by removing pooled freed files,
/// then the oldest pulled copies: they are secondary copies (their node
/// still holds the object), so a later read pulls again, as Ray evicts
/// secondary copies under pressure.
/// Everything of the session in shared memory counts; primary copies are
/// never removed here (the head has them spilled). Returns whether the new
/// file fits.
pub fn make_room(session: &str, len: u64) -> bool {
    let Some(store) = crate::spill::settings() else {
        return true;
    };
    let prefix = format!("oxray-{session}-");
    let pulled_prefix = format!("oxray-{session}-pulled-");
    let mut used = 0;
    // Pooled files first (rank 0), then pulled copies, oldest first.
    let mut removable = Vec::new();
    for entry in std::fs::read_dir(shm_dir()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(metadata) = name
            .starts_with(&prefix)
            .then(|| entry.metadata().ok())
            .flatten()
        else {
            continue;
        };
        used += metadata.len();
        // Copies still being written belong to a reader in progress.
        let rank = if pool::pooled_len(&name, session).is_some() {
            0
        } else if name.starts_with(&pulled_prefix) && !name.contains(".partial") {
            1
        } else {
            continue;
        };
        let modified = metadata.modified().unwrap_or(std::time::UNIX_EPOCH);
        removable.push((rank, modified, metadata.len(), entry.path()));
    }
    let needed = len + HEADER_BYTES as u64;
    removable.sort();
    for (_, _, bytes, path) in removable {
        if used + needed <= store.capacity {
            break;
        }
        if std::fs::remove_file(path).is_ok() {
            used -= bytes;
        }
    }
    used + needed <= store.capacity
}

/// A recycled file that holds `len` bytes without wasting more than half.
fn take_recycled(len: usize) -> Option<Segment> {
    let mut recycled = RECYCLED.lock();
    let index = recycled
        .iter()
        .position(|s| s.map.len() >= len && s.map.len() <= len.saturating_mul(2))?;
    Some(recycled.swap_remove(index))
}

/// Where [`create`]'s filler writes a value's bytes.
pub enum Sink<'a> {
    /// Mapped memory exactly the value's length.
    Slice(&'a mut [u8]),
    /// The file itself, after the header; the filler writes exactly the
    /// value's length.
    Stream(&'a mut dyn std::io::Write),
}

/// Bytes buffered between a streamed value's small writes; large ones go
/// straight to the file.
const STREAM_BUFFER_BYTES: usize = 64 * 1024;

/// Creates the file for the value of generation `id` with `len` bytes and
/// lets `fill` write them, into a pooled file when one fits. With
/// `keep_mapped` (the node's own process) the file stays mapped for reads
/// and reuse; otherwise it is written with `write`. The returned path names
/// the file either way.
pub fn create(
    session: &str,
    id: ObjectId,
    len: usize,
    keep_mapped: bool,
    fill: impl FnOnce(Sink) -> Result<()>,
) -> Result<PathBuf> {
    crate::spill::check_fits(len as u64)?;
    // Whatever does not fit yet, the head spills once the object is put.
    make_room(session, len as u64);
    let file_len = len + HEADER_BYTES;
    let header = id.0.to_le_bytes();
    if keep_mapped {
        if let Some(mut segment) = take_recycled(file_len) {
            let map = Arc::get_mut(&mut segment.map).expect("recycled segments are unshared");
            map[..HEADER_BYTES].copy_from_slice(&header);
            fill(Sink::Slice(&mut map[HEADER_BYTES..file_len]))?;
            let path = segment.path.clone();
            LIVE.lock()
                .get_or_insert_with(HashMap::new)
                .insert(path.clone(), segment);
            return Ok(path);
        }
    }
    let path = object_path(session, id);
    let io = |e: std::io::Error| Error::runtime(&format!("shared memory {}", path.display()), e);
    let claimed = pool::claim(session, file_len, &path);
    let file = create_private(&path)?;
    let written = (|| {
        if !claimed {
            // What a retried task wrote here before goes.
            file.set_len(0).map_err(io)?;
        }
        if !keep_mapped {
            let mut out = std::io::BufWriter::with_capacity(STREAM_BUFFER_BYTES, &file);
            out.write_all(&header).map_err(io)?;
            fill(Sink::Stream(&mut out))?;
            return out.flush().map_err(io).map(|()| None);
        }
        if !claimed {
            file.set_len(file_len as u64).map_err(io)?;
        }
        // SAFETY: the file was just created (or claimed from the pool) by
        // this process under a unique name; nobody else maps it until its
        // path is published after this returns.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(io)?;
        map[..HEADER_BYTES].copy_from_slice(&header);
        fill(Sink::Slice(&mut map[HEADER_BYTES..file_len]))?;
        Ok(Some(map))
    })();
    match written {
        Ok(Some(map)) => {
            let segment = Segment {
                path: path.clone(),
                map: Arc::new(map),
            };
            LIVE.lock()
                .get_or_insert_with(HashMap::new)
                .insert(path.clone(), segment);
        }
        Ok(None) => {}
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    }
    Ok(path)
}

/// Opens `path` for writing from its start, creating it 0600 without
/// following a link. A file that was already there (a retried task writing
/// the same object) must be this user's own and private, or it is refused
/// rather than written into.
pub fn create_private(path: &Path) -> Result<std::fs::File> {
    let io = |e: std::io::Error| Error::runtime(&format!("shared memory {}", path.display()), e);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    if !is_private(&metadata) {
        return Err(Error::UnsafeLocalState {
            path: path.display().to_string(),
            problem: format!(
                "a file of uid {} with mode {:o} is in the way of an object",
                metadata.uid(),
                metadata.mode() & 0o777
            ),
        });
    }
    Ok(file)
}

/// Whether a file is this user's own and closed to everyone else.
fn is_private(metadata: &std::fs::Metadata) -> bool {
    // SAFETY: geteuid has no preconditions.
    metadata.uid() == unsafe { libc::geteuid() } && metadata.mode() & 0o077 == 0
}

/// Where the bytes of a value are held.
enum Holding {
    Mapped(Mmap),
    Live(Arc<MmapMut>),
    /// Pulled by a process that is no node's (a driver joined by address).
    Owned(Vec<u8>),
}

/// The bytes of one value: its file mapped (or pulled into memory), without
/// the header.
pub struct SharedBytes {
    holding: Holding,
    len: usize,
}

impl Deref for SharedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        let file: &[u8] = match &self.holding {
            Holding::Mapped(map) => map,
            Holding::Live(map) => map,
            Holding::Owned(bytes) => bytes,
        };
        &file[HEADER_BYTES..HEADER_BYTES + self.len]
    }
}

impl SharedBytes {
    /// Bytes pulled into this process's memory: a header and `len` bytes.
    pub fn owned(file: Vec<u8>, len: usize, generation: u64, what: &str) -> Result<Self> {
        SharedBytes::checked(Holding::Owned(file), len, generation, what)
    }

    /// Checks that `holding` holds `len` bytes of the value of `generation`.
    fn checked(holding: Holding, len: usize, generation: u64, what: &str) -> Result<Self> {
        let file: &[u8] = match &holding {
            Holding::Mapped(map) => map,
            Holding::Live(map) => map,
            Holding::Owned(bytes) => bytes,
        };
        let found = file
            .get(..HEADER_BYTES)
            .map(|h| u64::from_le_bytes(h.try_into().expect("eight bytes")));
        let lost = |message: String| Error::ObjectLost {
            id: what.to_string(),
            message,
        };
        if found != Some(generation) {
            return Err(lost(format!(
                "the file holds another value (generation {found:x?}, expected {generation:x}): it was freed"
            )));
        }
        if file.len() < HEADER_BYTES + len {
            return Err(lost(format!(
                "shared memory holds {} bytes, expected {len}",
                file.len().saturating_sub(HEADER_BYTES)
            )));
        }
        Ok(SharedBytes { holding, len })
    }
}

/// Maps the file of the value of `generation`, `len` bytes long, read-only
/// (or shares this process's own mapping), checking that it still holds that
/// value.
pub fn open(path: &str, len: u64, generation: u64) -> Result<SharedBytes> {
    let len = len as usize;
    if let Some(segment) = LIVE
        .lock()
        .as_ref()
        .and_then(|live| live.get(Path::new(path)))
    {
        return SharedBytes::checked(Holding::Live(segment.map.clone()), len, generation, path);
    }
    let io = |e: std::io::Error| Error::ObjectLost {
        id: path.to_string(),
        message: format!("cannot map shared memory: {e}"),
    };
    // A spilled object is read (restored) from its spill file.
    let file = crate::spill::open_object_file(Path::new(path)).map_err(io)?;
    // Another user's file at an object's path (planted before the value was
    // written, or a link) is never taken for the value.
    let metadata = file.metadata().map_err(io)?;
    if !metadata.is_file() || !is_private(&metadata) {
        return Err(Error::ObjectLost {
            id: path.to_string(),
            message: format!(
                "the file is not this user's private object file (uid {}, mode {:o})",
                metadata.uid(),
                metadata.mode() & 0o777
            ),
        });
    }
    // SAFETY: object files are written once before their path is published and
    // are only rewritten after the node freed the object, when no reference to
    // it — and so no reader — is left; the generation check catches a reader
    // that kept a stale path.
    let map = unsafe { Mmap::map(&file) }.map_err(io)?;
    SharedBytes::checked(Holding::Mapped(map), len, generation, path)
}

/// The generation at the start of an object file, if it has one.
pub fn generation_of(file: &mut std::fs::File) -> Option<u64> {
    use std::io::Read;
    let mut header = [0u8; HEADER_BYTES];
    file.read_exact(&mut header).ok()?;
    Some(u64::from_le_bytes(header))
}

/// Stops keeping the file at `path` mapped or pooled, if this process maps it
/// with the value of `generation` (the object is being spilled), and returns
/// the mapping. Readers that share it keep it until they are done.
pub fn release_mapping(path: &Path, generation: u64) -> Option<Arc<MmapMut>> {
    let mut live = LIVE.lock();
    let live = live.as_mut()?;
    let holds = |s: &Segment| s.map.get(..HEADER_BYTES) == Some(&generation.to_le_bytes()[..]);
    if !live.get(path).is_some_and(holds) {
        return None;
    }
    live.remove(path).map(|segment| segment.map)
}

/// The node freed the object stored at `path`: the process that wrote it
/// and still maps it keeps the mapping for reuse if its pool has room;
/// otherwise the file goes to the node's pool of freed files if that has
/// room, or is removed. A spilled copy is removed.
pub fn free(session: &str, path: &str) {
    free_within(session, path, recycle_limit());
}

/// [`free`] with both pools holding at most `limit` bytes.
fn free_within(session: &str, path: &str, limit: usize) {
    crate::spill::remove(Path::new(path));
    let segment = LIVE
        .lock()
        .as_mut()
        .and_then(|live| live.remove(Path::new(path)));
    let file_len = match segment {
        Some(segment) if Arc::strong_count(&segment.map) == 1 => {
            let mut recycled = RECYCLED.lock();
            let pooled: usize = recycled.iter().map(|s| s.map.len()).sum();
            if pooled + segment.map.len() <= limit {
                recycled.push(segment);
                return;
            }
            segment.map.len()
        }
        // A reader in this process still maps it: the file must not be
        // written again while it reads.
        Some(_) => {
            let _ = std::fs::remove_file(path);
            return;
        }
        None => match std::fs::symlink_metadata(path) {
            Ok(metadata) if metadata.is_file() && is_private(&metadata) => metadata.len() as usize,
            Ok(_) => {
                let _ = std::fs::remove_file(path);
                return;
            }
            // Spilled (gone from shared memory) or never written.
            _ => return,
        },
    };
    if !pool::put(session, Path::new(path), file_len, limit) {
        let _ = std::fs::remove_file(path);
    }
}

/// Removes every file of a session (node shutdown), spilled ones too, and
/// forgets the mappings.
pub fn remove_session(session: &str) {
    LIVE.lock().take();
    RECYCLED.lock().clear();
    crate::spill::remove_session(session);
    let prefix = format!("oxray-{session}-");
    if let Ok(entries) = std::fs::read_dir(shm_dir()) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Removes the files of sessions whose node process is gone (a node that was
/// SIGKILLed had no chance to clean up), and of collective groups whose
/// creator is gone. A session's name starts with its node's pid, a collective
/// file's after `collective-`. Returns how many files were removed.
pub fn remove_orphans() -> usize {
    let Ok(entries) = std::fs::read_dir(shm_dir()) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        // A zombie counts as dead: it only waits for its parent to reap it.
        if !crate::worker::process_alive(pid) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The pid of the process whose session (or collective group) an oxray
/// file name carries.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("oxray-")?;
    let rest = rest.strip_prefix("collective-").unwrap_or(rest);
    rest.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests;
