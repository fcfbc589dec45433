//! The node's pool of freed object files, shared by all its processes.
//!
//! A worker writes its large values into files the node frees later, in
//! another process. Deleting such a file and creating the next one makes the
//! kernel free and then allocate and zero every page again, which costs more
//! than writing the bytes. So when the node frees a file nobody maps any more
//! it renames it into the pool (`oxray-SESSION-free-LEN-NAME`, the length in
//! the name so a claim needs no `stat`), pages and all, and the next write of
//! a similar size — by any process of the node — claims it by renaming it to
//! its own object path. `rename` is atomic, so two claimers never get the
//! same file, and eviction (making room, a full pool) races with a claim
//! harmlessly: whichever comes first wins and the other finds nothing.
//!
//! A claimed file can be longer than the value written into it (at most
//! twice, as with the mapped pool); its tail still holds freed bytes, but
//! every reader reads exactly the value's length after checking the
//! generation in the header, so nothing of an old value is ever read as part
//! of a new one.

use super::shm_dir;
use std::path::{Path, PathBuf};

/// Names of the session's pooled files start with this.
pub(super) fn prefix(session: &str) -> String {
    format!("oxray-{session}-free-")
}

/// The length of the pooled file called `name`, if `name` is one of the
/// session's pooled files.
pub(super) fn pooled_len(name: &str, session: &str) -> Option<usize> {
    let rest = name.strip_prefix(&prefix(session))?;
    let (len, _) = rest.split_once('-')?;
    usize::from_str_radix(len, 16).ok()
}

/// The session's pooled files and their lengths.
fn pooled(session: &str) -> Vec<(PathBuf, usize)> {
    let Ok(entries) = std::fs::read_dir(shm_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let len = pooled_len(name.to_str()?, session)?;
            Some((entry.path(), len))
        })
        .collect()
}

/// Moves the freed object file at `path`, `file_len` bytes long, into the
/// pool if the pool stays within `limit` bytes. Returns whether it did.
pub(super) fn put(session: &str, path: &Path, file_len: usize, limit: usize) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let Some(unique) = name.strip_prefix(&format!("oxray-{session}-")) else {
        return false;
    };
    let pooled: usize = pooled(session).iter().map(|(_, len)| len).sum();
    if pooled + file_len > limit {
        return false;
    }
    // An object file's name is unique among the session's files, so the
    // pooled name made from it is too.
    let target = shm_dir().join(format!("{}{file_len:x}-{unique}", prefix(session)));
    std::fs::rename(path, target).is_ok()
}

/// Claims a pooled file that holds `file_len` bytes without wasting more
/// than half, renaming it to `path`. Returns whether it did; the file keeps
/// its old length and its pages.
pub(super) fn claim(session: &str, file_len: usize, path: &Path) -> bool {
    let mut fitting: Vec<_> = pooled(session)
        .into_iter()
        .filter(|(_, len)| *len >= file_len && *len <= file_len.saturating_mul(2))
        .collect();
    fitting.sort_by_key(|(_, len)| *len);
    // A file another process claimed (or evicted) first is simply gone.
    fitting
        .into_iter()
        .any(|(pooled, _)| std::fs::rename(pooled, path).is_ok())
}
