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

#[cfg(test)]
mod tests {
    use super::*;

    /// A session of its own for one test, whose files are all removed when
    /// it ends, passed or not.
    struct Session(String);

    impl Session {
        fn new(test: &str) -> Self {
            Session(format!("pooltest{}{test}", std::process::id()))
        }

        /// A freed object file of `len` bytes, all `byte`.
        fn object(&self, name: &str, len: usize, byte: u8) -> PathBuf {
            let path = self.path(name);
            std::fs::write(&path, vec![byte; len]).unwrap();
            path
        }

        fn path(&self, name: &str) -> PathBuf {
            shm_dir().join(format!("oxray-{}-{name}", self.0))
        }

        fn pooled_lens(&self) -> Vec<usize> {
            let mut lens: Vec<usize> = pooled(&self.0).into_iter().map(|(_, len)| len).collect();
            lens.sort_unstable();
            lens
        }
    }

    impl Drop for Session {
        fn drop(&mut self) {
            let mine = format!("oxray-{}-", self.0);
            for entry in std::fs::read_dir(shm_dir()).unwrap().flatten() {
                if entry.file_name().to_string_lossy().starts_with(&mine) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    #[test]
    fn a_freed_file_is_pooled_while_the_pool_stays_within_its_limit() {
        let session = Session::new("limit");
        let first = session.object("a", 4096, 1);
        assert!(put(&session.0, &first, 4096, 10_000));
        assert!(!first.exists(), "moved into the pool, not copied");
        let second = session.object("b", 8192, 2);
        assert!(
            !put(&session.0, &second, 8192, 10_000),
            "4096 + 8192 bytes would pass the limit"
        );
        assert!(
            second.exists(),
            "a file the pool refuses stays for its owner to delete"
        );
        assert_eq!(session.pooled_lens(), [4096]);
        let other_session = shm_dir().join(format!("oxray-other{}-c", std::process::id()));
        assert!(
            !put(&session.0, &other_session, 1, 10_000),
            "only this session's files are pooled"
        );
    }

    /// A claim takes the smallest pooled file that holds the value without
    /// wasting more than half of it, pages and bytes as they were, and
    /// nothing when none fits.
    #[test]
    fn a_claim_takes_the_smallest_file_that_fits_within_twice_the_length() {
        let session = Session::new("claim");
        for (name, len, byte) in [("a", 4096, 1), ("b", 6000, 2), ("c", 20_000, 3)] {
            let path = session.object(name, len, byte);
            assert!(put(&session.0, &path, len, usize::MAX));
        }
        let claimed = session.path("new");
        assert!(claim(&session.0, 3000, &claimed));
        assert_eq!(std::fs::metadata(&claimed).unwrap().len(), 4096);
        assert_eq!(session.pooled_lens(), [6000, 20_000]);
        assert!(
            !claim(&session.0, 2900, &session.path("small")),
            "6000 bytes would waste more than half of a 2900-byte value's file"
        );
        assert!(claim(&session.0, 5000, &session.path("mid")));
        assert_eq!(std::fs::read(session.path("mid")).unwrap(), vec![2; 6000]);
        assert!(
            !claim(&session.0, 30_000, &session.path("big")),
            "none is large enough"
        );
        assert_eq!(session.pooled_lens(), [20_000]);
    }
}
