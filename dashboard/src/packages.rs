//! Working directories uploaded for jobs (Ray's job packages: `ray job
//! submit --working-dir` uploads one, and the job's `runtime_env` names it
//! by URI). `oxray job submit --working-dir DIR` packs DIR into oxray-core's
//! runtime-env archive and `PUT`s it to `/api/packages/DIGEST`; the head
//! checks the digest and unpacks it once under its session, and a job whose
//! `runtime_env.working_dir` is `package://DIGEST` runs its driver in that
//! copy, which the driver ships on to its workers on every node. So a job
//! can be submitted from a machine that shares no file system with the
//! cluster. The copies stay when the head stops, with what the jobs wrote
//! there (`oxray train`'s `results/`), as Ray's session directory keeps its
//! runtime resources.

use crate::error::{DashboardError, Result};
use parking_lot::Mutex;
use std::path::PathBuf;

/// How a job's `runtime_env.working_dir` names an uploaded package.
pub const PACKAGE_SCHEME: &str = "package://";

/// The packages the head holds, unpacked, by digest.
#[derive(Debug)]
pub struct Packages {
    dir: PathBuf,
    /// Serialises unpacking, so two uploads of one package unpack it once.
    unpacking: Mutex<()>,
}

impl Packages {
    pub fn new(dir: PathBuf) -> Self {
        Packages {
            dir,
            unpacking: Mutex::new(()),
        }
    }

    /// The unpacked copy of `digest`, if the head holds it.
    pub fn get(&self, digest: &str) -> Option<PathBuf> {
        let path = self.dir.join(valid_digest(digest).ok()?);
        path.is_dir().then_some(path)
    }

    /// Checks `archive` against `digest` and unpacks it, unless the head
    /// holds that package already.
    pub fn store(&self, digest: &str, archive: &[u8]) -> Result<PathBuf> {
        let digest = valid_digest(digest)?;
        let _unpacking = self.unpacking.lock();
        if let Some(path) = self.get(digest) {
            return Ok(path);
        }
        let unpack_error = |source: oxray_core::Error| DashboardError::Package {
            digest: digest.to_string(),
            problem: source.to_string(),
        };
        oxray_core::daemon::ensure_private_dir(&self.dir).map_err(unpack_error)?;
        let partial = self.dir.join(format!("{digest}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        oxray_core::unpack_working_dir(archive, digest, &partial).map_err(unpack_error)?;
        let path = self.dir.join(digest);
        std::fs::rename(&partial, &path).map_err(|e| DashboardError::Package {
            digest: digest.to_string(),
            problem: e.to_string(),
        })?;
        Ok(path)
    }

    /// Where a job's driver runs for `working_dir` when it names a package
    /// (`Some`): its copy, or the error naming the unknown package.
    pub fn resolve(&self, working_dir: &str) -> Option<Result<PathBuf>> {
        let digest = working_dir.strip_prefix(PACKAGE_SCHEME)?;
        Some(self.get(digest).ok_or_else(|| DashboardError::Package {
            digest: digest.to_string(),
            problem:
                "no such package was uploaded to this head (PUT /api/packages/DIGEST first)".into(),
        }))
    }
}

/// A digest is 64 lowercase hex digits: anything else could name a path.
fn valid_digest(digest: &str) -> Result<&str> {
    if digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(digest)
    } else {
        Err(DashboardError::Package {
            digest: digest.to_string(),
            problem: "not a SHA-256 digest (64 lowercase hex digits)".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed() -> (tempfile::TempDir, String, Vec<u8>) {
        let tree = tempfile::tempdir().unwrap();
        std::fs::write(tree.path().join("env.py"), "X = 1\n").unwrap();
        let (digest, archive) = oxray_core::pack_working_dir(tree.path(), &[]).unwrap();
        (tree, digest, archive)
    }

    #[test]
    fn a_package_is_stored_once_under_its_digest_and_resolved_by_uri() {
        let (_tree, digest, archive) = packed();
        let root = tempfile::tempdir().unwrap();
        let packages = Packages::new(root.path().join("packages"));
        assert!(packages.get(&digest).is_none());
        let copy = packages.store(&digest, &archive).unwrap();
        assert_eq!(
            std::fs::read_to_string(copy.join("env.py")).unwrap(),
            "X = 1\n"
        );
        std::fs::write(copy.join("marker"), "").unwrap();
        assert_eq!(packages.store(&digest, &archive).unwrap(), copy);
        assert!(copy.join("marker").exists(), "not unpacked twice");
        let uri = format!("{PACKAGE_SCHEME}{digest}");
        assert_eq!(packages.resolve(&uri).unwrap().unwrap(), copy);
        assert!(packages.resolve("/srv/plain/path").is_none());
        let unknown = format!("{PACKAGE_SCHEME}{}", "0".repeat(64));
        assert!(packages.resolve(&unknown).unwrap().is_err());
    }

    #[test]
    fn a_package_that_does_not_match_its_digest_or_names_a_path_is_refused() {
        let (_tree, digest, mut archive) = packed();
        let root = tempfile::tempdir().unwrap();
        let packages = Packages::new(root.path().join("packages"));
        *archive.last_mut().unwrap() ^= 1;
        let refused = packages.store(&digest, &archive).unwrap_err().to_string();
        assert!(refused.contains("SHA-256"), "{refused}");
        assert!(packages.get(&digest).is_none());
        for name in ["../../etc", "ABC", &"g".repeat(64)] {
            assert!(packages.store(name, b"").is_err(), "{name}");
            assert!(packages.get(name).is_none());
        }
        assert_eq!(
            std::fs::read_dir(root.path().join("packages"))
                .map(|d| d.count())
                .unwrap_or(0),
            0,
            "nothing left behind"
        );
    }
}
