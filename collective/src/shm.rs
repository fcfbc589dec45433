//! Shared-memory links between ranks on the same node.
//!
//! Over loopback TCP every byte is copied twice by the kernel and every chunk
//! costs system calls; between processes on one machine a ring buffer in a
//! shared file moves the same bytes with one copy in and one copy out, no
//! system call on the data path. Each pair of ranks on a node shares one
//! [`PairSegment`] (a ring per direction); each rank owns a [`Mailbox`] whose
//! doorbell its peers ring after they write to it or read from it, and sleeps
//! on that doorbell with a futex when it has nothing to do. The TCP socket of
//! the pair stays open beside the ring: it carries no data, so the moment it
//! reads end-of-file is the moment the peer process went away.
//!
//! The files live in `/dev/shm` only while the group forms; every rank maps
//! them and the creator removes them once all ranks have joined.
//!
//! A rank maps only what a peer names, so a name is checked before anything
//! is opened: it must be one of this group's files (its name carries the
//! group's tag, see `handshake`) of the expected kind, directly in
//! `/dev/shm`, not a symbolic link, a regular file of this user that nobody
//! else can read or write (files are created 0600 with `O_EXCL`), and of the
//! exact size. Anything else is refused rather than mapped read-write.

use parking_lot::Mutex;
use std::fs::OpenOptions;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Bytes of each ring: large enough to keep a pipeline chunk in flight, small
/// enough to stay in cache between the writer's copy and the reader's.
const RING_BYTES: usize = 1024 * 1024;
/// Where the rings start: the control words sit on their own cache lines
/// before them.
const DATA_OFFSET: usize = 4096;
const SEGMENT_BYTES: usize = DATA_OFFSET + 2 * RING_BYTES;
const MAILBOX_BYTES: usize = 128;
const CLOSED_AT: usize = 0;
/// Control words of ring `i`: its write count, then its read count.
const RING_CONTROL_AT: [(usize, usize); 2] = [(64, 128), (192, 256)];
const DOORBELL_AT: usize = 0;
const SLEEPING_AT: usize = 64;

const SHM_DIR: &str = "/dev/shm";
const MAILBOX_KIND: &str = "mailbox";
const PAIR_KIND: &str = "pair";

/// Why a file a peer named could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// Not one of this group's files: never to be mapped.
    #[error("{0}")]
    Foreign(String),
    /// The file may be fine but is not reachable from here (another machine
    /// under the same node label, say): the pair falls back to TCP.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A file in `/dev/shm` mapped into this process, removed when its creator
/// says so or drops it.
struct SharedFile {
    map: memmap2::MmapMut,
    created: Mutex<Option<PathBuf>>,
}

/// Whether `name` is a `kind` file of the group tagged `tag`:
/// `oxray-collective-PID-TAG-NANOS-COUNT-KIND`.
fn is_group_file_name(name: &str, tag: &str, kind: &str) -> bool {
    let Some(rest) = name.strip_prefix("oxray-collective-") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('-').collect();
    let number = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    matches!(parts.as_slice(), [pid, found_tag, nanos, count, found_kind]
        if number(pid) && *found_tag == tag && number(nanos) && number(count) && *found_kind == kind)
}

impl SharedFile {
    fn create(tag: &str, kind: &str, len: usize) -> std::io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or(0);
        // The creator's pid comes first: `oxray stop` removes the files of
        // creators that died without cleaning up.
        let path = Path::new(SHM_DIR).join(format!(
            "oxray-collective-{}-{tag}-{nanos}-{unique}-{kind}",
            std::process::id()
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)?;
        file.set_len(len as u64)?;
        // SAFETY: the file was just created with this length; all shared
        // access to it goes through atomics or through ring regions that the
        // ring protocol hands to one side at a time.
        let map = unsafe { memmap2::MmapMut::map_mut(&file)? };
        Ok(SharedFile {
            map,
            created: Mutex::new(Some(path)),
        })
    }

    /// Maps the file a peer named, after checking it is a `kind` file of
    /// the group tagged `tag` (see the module doc).
    fn open(path: &Path, tag: &str, kind: &str, len: usize) -> Result<Self, OpenError> {
        let foreign = |detail: &str| Err(OpenError::Foreign(detail.to_string()));
        let name = path.file_name().and_then(|name| name.to_str());
        let named_right = path.parent() == Some(Path::new(SHM_DIR))
            && name.is_some_and(|name| is_group_file_name(name, tag, kind));
        if !named_right {
            return foreign(&format!("not a {kind} file of this group in {SHM_DIR}"));
        }
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(file) => file,
            Err(error) if error.raw_os_error() == Some(libc::ELOOP) => {
                return foreign("it is a symbolic link")
            }
            Err(error) => return Err(OpenError::Io(error)),
        };
        let metadata = file.metadata()?;
        // SAFETY: geteuid has no preconditions.
        let user = unsafe { libc::geteuid() };
        if !metadata.is_file() {
            return foreign("not a regular file");
        }
        if metadata.uid() != user {
            return foreign(&format!(
                "owned by uid {}, not by this process's uid {user}",
                metadata.uid()
            ));
        }
        if metadata.mode() & 0o077 != 0 {
            return foreign(&format!(
                "mode {:o} lets other users in (oxray creates 0600)",
                metadata.mode() & 0o777
            ));
        }
        if metadata.len() != len as u64 {
            return foreign(&format!(
                "{} bytes, not the {len} of a {kind} file",
                metadata.len()
            ));
        }
        // SAFETY: as in `create`; the creator sized the file.
        let map = unsafe { memmap2::MmapMut::map_mut(&file)? };
        Ok(SharedFile {
            map,
            created: Mutex::new(None),
        })
    }

    fn path(&self) -> Option<PathBuf> {
        self.created.lock().clone()
    }

    fn remove(&self) {
        if let Some(path) = self.created.lock().take() {
            // Already gone (e.g. /dev/shm cleaned) is fine: nobody needs it.
            let _ = std::fs::remove_file(path);
        }
    }

    fn u32_at(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: offsets are constants inside the mapping, 4-aligned (the
        // mapping is page-aligned), and the memory is only used atomically.
        unsafe { &*(self.map.as_ptr().add(offset) as *const AtomicU32) }
    }

    fn u64_at(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: as in `u32_at`, 8-aligned.
        unsafe { &*(self.map.as_ptr().add(offset) as *const AtomicU64) }
    }

    fn data(&self) -> *mut u8 {
        self.map.as_ptr() as *mut u8
    }
}

impl Drop for SharedFile {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A rank's doorbell: peers bump it and wake the rank if it sleeps.
pub(crate) struct Mailbox {
    file: SharedFile,
}

impl Mailbox {
    pub(crate) fn create(tag: &str) -> std::io::Result<Self> {
        Ok(Mailbox {
            file: SharedFile::create(tag, MAILBOX_KIND, MAILBOX_BYTES)?,
        })
    }

    pub(crate) fn open(path: &Path, tag: &str) -> Result<Self, OpenError> {
        Ok(Mailbox {
            file: SharedFile::open(path, tag, MAILBOX_KIND, MAILBOX_BYTES)?,
        })
    }

    pub(crate) fn path(&self) -> Option<PathBuf> {
        self.file.path()
    }

    pub(crate) fn remove_file(&self) {
        self.file.remove();
    }

    fn doorbell(&self) -> &AtomicU32 {
        self.file.u32_at(DOORBELL_AT)
    }

    fn sleeping(&self) -> &AtomicU32 {
        self.file.u32_at(SLEEPING_AT)
    }

    /// The doorbell's count now; pass it to [`Mailbox::sleep`] so a ring
    /// that happens in between is not missed.
    pub(crate) fn observe(&self) -> u32 {
        self.doorbell().load(Ordering::SeqCst)
    }

    /// Sleeps until the doorbell moves past `observed` or `timeout` passes.
    pub(crate) fn sleep(&self, observed: u32, timeout: Duration) {
        self.sleeping().store(1, Ordering::SeqCst);
        if self.doorbell().load(Ordering::SeqCst) == observed {
            futex_wait(self.doorbell(), observed, timeout);
        }
        self.sleeping().store(0, Ordering::SeqCst);
    }

    /// Tells the owner something changed; a system call only if it sleeps.
    fn ring(&self) {
        self.doorbell().fetch_add(1, Ordering::SeqCst);
        if self.sleeping().load(Ordering::SeqCst) != 0 {
            futex_wake(self.doorbell());
        }
    }
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `word` is a live 4-byte-aligned word (shared mapping, so the
    // non-private futex); spurious and early returns are handled by callers,
    // which re-check their state.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &timeout as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: as in `futex_wait`.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// The two rings shared by a pair of ranks; the lower rank writes ring 0.
pub(crate) struct PairSegment {
    file: SharedFile,
}

impl PairSegment {
    pub(crate) fn create(tag: &str) -> std::io::Result<Self> {
        Ok(PairSegment {
            file: SharedFile::create(tag, PAIR_KIND, SEGMENT_BYTES)?,
        })
    }

    pub(crate) fn open(path: &Path, tag: &str) -> Result<Self, OpenError> {
        Ok(PairSegment {
            file: SharedFile::open(path, tag, PAIR_KIND, SEGMENT_BYTES)?,
        })
    }

    pub(crate) fn path(&self) -> Option<PathBuf> {
        self.file.path()
    }

    pub(crate) fn remove_file(&self) {
        self.file.remove();
    }
}

/// One rank's end of a shared-memory link.
pub(crate) struct SharedLink {
    segment: PairSegment,
    /// The ring this end writes; it reads the other one.
    outgoing: usize,
    peer_mailbox: Mailbox,
}

impl SharedLink {
    pub(crate) fn new(segment: PairSegment, is_lower_rank: bool, peer_mailbox: Mailbox) -> Self {
        SharedLink {
            segment,
            outgoing: if is_lower_rank { 0 } else { 1 },
            peer_mailbox,
        }
    }

    pub(crate) fn segment(&self) -> &PairSegment {
        &self.segment
    }

    fn counts(&self, ring: usize) -> (&AtomicU64, &AtomicU64) {
        let (written, read) = RING_CONTROL_AT[ring];
        (
            self.segment.file.u64_at(written),
            self.segment.file.u64_at(read),
        )
    }

    fn ring_data(&self, ring: usize) -> *mut u8 {
        // SAFETY: both rings lie inside the mapping (SEGMENT_BYTES).
        unsafe {
            self.segment
                .file
                .data()
                .add(DATA_OFFSET + ring * RING_BYTES)
        }
    }

    fn closed(&self) -> bool {
        self.segment.file.u32_at(CLOSED_AT).load(Ordering::Acquire) != 0
    }

    /// Marks the link closed and wakes the peer, so it fails at once.
    pub(crate) fn close(&self) {
        self.segment
            .file
            .u32_at(CLOSED_AT)
            .store(1, Ordering::Release);
        self.peer_mailbox.ring();
    }

    /// Copies as much of `bytes` as fits into the outgoing ring; 0 when full.
    pub(crate) fn send(&self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.closed() {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        let (written_count, read_count) = self.counts(self.outgoing);
        let written = written_count.load(Ordering::Relaxed);
        let free = RING_BYTES - (written - read_count.load(Ordering::Acquire)) as usize;
        let count = free.min(bytes.len());
        if count == 0 {
            return Ok(0);
        }
        let start = (written % RING_BYTES as u64) as usize;
        let first = count.min(RING_BYTES - start);
        let data = self.ring_data(self.outgoing);
        // SAFETY: [start, start+first) and [0, count-first) lie in the ring
        // and are free: the reader has consumed them (read count checked
        // above) and will not touch them until the write count says so.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), data.add(start), first);
            std::ptr::copy_nonoverlapping(bytes.as_ptr().add(first), data, count - first);
        }
        written_count.store(written + count as u64, Ordering::Release);
        self.peer_mailbox.ring();
        Ok(count)
    }

    /// Copies what the incoming ring holds into `bytes`; 0 when empty,
    /// end-of-file once empty and closed.
    pub(crate) fn receive(&self, bytes: &mut [u8]) -> std::io::Result<usize> {
        let incoming = 1 - self.outgoing;
        let (written_count, read_count) = self.counts(incoming);
        let read = read_count.load(Ordering::Relaxed);
        let available = (written_count.load(Ordering::Acquire) - read) as usize;
        let count = available.min(bytes.len());
        if count == 0 {
            if available == 0 && self.closed() {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            return Ok(0);
        }
        let start = (read % RING_BYTES as u64) as usize;
        let first = count.min(RING_BYTES - start);
        let data = self.ring_data(incoming);
        // SAFETY: the writer published these bytes (write count loaded with
        // Acquire) and will not overwrite them until the read count moves.
        unsafe {
            std::ptr::copy_nonoverlapping(data.add(start), bytes.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(data, bytes.as_mut_ptr().add(first), count - first);
        }
        read_count.store(read + count as u64, Ordering::Release);
        self.peer_mailbox.ring();
        Ok(count)
    }

    /// Shows `consume` the next contiguous readable bytes of the incoming
    /// ring (at most `limit`) and takes the ones it reports used; `None`
    /// when the ring is empty, end-of-file once empty and closed.
    pub(crate) fn receive_in_place(
        &self,
        limit: usize,
        consume: impl FnOnce(&[u8]) -> usize,
    ) -> std::io::Result<Option<usize>> {
        let incoming = 1 - self.outgoing;
        let (written_count, read_count) = self.counts(incoming);
        let read = read_count.load(Ordering::Relaxed);
        let available = (written_count.load(Ordering::Acquire) - read) as usize;
        if available == 0 {
            if self.closed() {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            return Ok(None);
        }
        let start = (read % RING_BYTES as u64) as usize;
        let count = available.min(RING_BYTES - start).min(limit);
        // SAFETY: the writer published these bytes (Acquire above) and will
        // not overwrite them until the read count moves past them, which
        // happens only after `consume` returns.
        let bytes =
            unsafe { std::slice::from_raw_parts(self.ring_data(incoming).add(start), count) };
        let used = consume(bytes).min(count);
        if used > 0 {
            read_count.store(read + used as u64, Ordering::Release);
            self.peer_mailbox.ring();
        }
        Ok(Some(used))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const TAG: &str = "5eC0ffee5eC0ffee";

    fn refused(path: &Path) -> String {
        match Mailbox::open(path, TAG) {
            Err(OpenError::Foreign(detail)) => detail,
            Err(OpenError::Io(error)) => {
                panic!("{}: expected a refusal, got {error}", path.display())
            }
            Ok(_) => panic!("{} must not be mapped", path.display()),
        }
    }

    #[test]
    fn created_files_are_private_and_open_for_the_group() {
        let mailbox = Mailbox::create(TAG).unwrap();
        let path = mailbox.path().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        assert!(Mailbox::open(&path, TAG).is_ok());
        let other_group = Mailbox::open(&path, "0000000000000000");
        assert!(
            matches!(&other_group, Err(OpenError::Foreign(detail)) if detail.contains("not a mailbox file of this group")),
            "another group's tag is refused"
        );
        assert!(matches!(
            PairSegment::open(&path, TAG),
            Err(OpenError::Foreign(_))
        ));
    }

    #[test]
    fn links_shared_files_and_wrong_sizes_are_refused() {
        let name = |what: u32| {
            Path::new(SHM_DIR).join(format!(
                "oxray-collective-{}-{TAG}-{what}-0-mailbox",
                std::process::id()
            ))
        };
        let target = Mailbox::create(TAG).unwrap();
        let link = name(1);
        std::os::unix::fs::symlink(target.path().unwrap(), &link).unwrap();
        let readable = name(2);
        std::fs::write(&readable, [0u8; MAILBOX_BYTES]).unwrap();
        std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
        let short = name(3);
        std::fs::write(&short, [0u8; 8]).unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        let details = [refused(&link), refused(&readable), refused(&short)];
        for path in [&link, &readable, &short] {
            std::fs::remove_file(path).unwrap();
        }
        assert!(details[0].contains("symbolic link"), "{}", details[0]);
        assert!(details[1].contains("mode 644"), "{}", details[1]);
        assert!(details[2].contains("8 bytes"), "{}", details[2]);
    }
}
