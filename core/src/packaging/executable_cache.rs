//! One node's cache of shipped executables and unpacked working
//! directories, under the session directory by digest.
//!
//! Bounded in bytes: the least recently used copies go first (a use touches
//! the file's mtime), and an executable larger than the bound is refused
//! before anything is fetched. A copy becomes visible only under its digest,
//! renamed from a partial file once its size and SHA-256 match, so a fetch
//! cut short or corrupted never runs; stores and unpacks are serialised so
//! workers of one job starting together fetch and unpack once.

use super::{check_path, hex, AtPath, JobExecutable, ShipExecutable};
use crate::error::ExecutableProblem;
use crate::protocol::Chunk;
use crate::runtime_env::{JobRuntimeEnv, WorkerEnvironment, WorkingDirArchive};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio_stream::StreamExt;

/// What a node does for an executable before fetching anything: run the path,
/// use its cache, fetch, or fail with the reason.
pub(crate) enum Plan {
    Run(PathBuf),
    Fetch,
}

/// One node's cache of shipped executables: `DIR/DIGEST`, bounded in bytes.
pub(crate) struct ExecutableCache {
    node_id: String,
    /// `SESSION/executables/NODE`, found (and created) when first needed, so
    /// a node that never caches anything leaves nothing behind.
    dir: std::sync::OnceLock<PathBuf>,
    limit: u64,
    /// Serialises stores, so two workers of one job fetch it once.
    storing: tokio::sync::Mutex<()>,
    /// Serialises unpacking working directories, so each is unpacked once.
    unpacking: Mutex<()>,
}

impl ExecutableCache {
    pub fn new(node_id: &str, limit: u64) -> Self {
        ExecutableCache {
            node_id: node_id.to_string(),
            dir: std::sync::OnceLock::new(),
            limit,
            storing: tokio::sync::Mutex::new(()),
            unpacking: Mutex::new(()),
        }
    }

    /// A cache in `dir` instead of the session directory.
    #[cfg(test)]
    fn at(dir: PathBuf, limit: u64) -> Self {
        let cache = ExecutableCache::new("test", limit);
        let _ = cache.dir.set(dir);
        cache
    }

    /// Where nodes keep shipped executables: per node, so nodes sharing a
    /// machine never evict each other's files; private like the session.
    fn dir(&self) -> Result<&PathBuf, ExecutableProblem> {
        if let Some(dir) = self.dir.get() {
            return Ok(dir);
        }
        let dir = crate::session::session_subdir("executables")
            .map_err(|e| ExecutableProblem::Store {
                message: e.to_string(),
            })?
            .join(&self.node_id);
        Ok(self.dir.get_or_init(|| dir))
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The cached copy of `digest`, marked as just used.
    pub fn get(&self, digest: &str) -> Option<PathBuf> {
        let path = self.dir().ok()?.join(digest);
        let file = std::fs::File::open(&path).ok()?;
        let _ = file.set_modified(std::time::SystemTime::now());
        Some(path)
    }

    /// Decides how this node runs `executable` without fetching: from its
    /// path, from the cache, or not at all (the typed reason).
    pub fn plan(&self, executable: &JobExecutable) -> Result<Plan, ExecutableProblem> {
        if executable.ship != ShipExecutable::Always {
            match check_path(executable) {
                AtPath::Same => return Ok(Plan::Run(PathBuf::from(&executable.path))),
                AtPath::Missing if executable.ship == ShipExecutable::Never => {
                    return Err(ExecutableProblem::Missing {
                        path: executable.path.clone(),
                    })
                }
                AtPath::Different(found) if executable.ship == ShipExecutable::Never => {
                    return Err(ExecutableProblem::DigestMismatch {
                        path: executable.path.clone(),
                        expected: executable.digest.clone(),
                        found,
                    })
                }
                AtPath::Missing | AtPath::Different(_) => {}
            }
        }
        if executable.size > self.limit {
            return Err(ExecutableProblem::TooLarge {
                size: executable.size,
                limit: self.limit,
            });
        }
        Ok(match self.get(&executable.digest) {
            Some(path) => Plan::Run(path),
            None => Plan::Fetch,
        })
    }

    /// Writes a copy of `executable` from `chunks` into the cache, verifying
    /// its size and digest before it becomes visible, and returns its path.
    pub async fn store<S>(
        &self,
        executable: &JobExecutable,
        mut chunks: S,
    ) -> Result<PathBuf, ExecutableProblem>
    where
        S: tokio_stream::Stream<Item = Result<Chunk, String>> + Unpin,
    {
        use std::io::Write;
        let _storing = self.storing.lock().await;
        if let Some(path) = self.get(&executable.digest) {
            return Ok(path);
        }
        if executable.size > self.limit {
            return Err(ExecutableProblem::TooLarge {
                size: executable.size,
                limit: self.limit,
            });
        }
        let dir = self.dir()?;
        let store_error = |e: std::io::Error| ExecutableProblem::Store {
            message: format!("{}: {e}", dir.display()),
        };
        std::fs::create_dir_all(dir).map_err(store_error)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(store_error)?;
        self.make_room(executable.size);
        let partial = dir.join(format!(
            "{}.partial-{}",
            executable.digest,
            std::process::id()
        ));
        let mut file = std::fs::File::create(&partial).map_err(store_error)?;
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        let outcome = async {
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(|message| ExecutableProblem::FetchFailed { message })?;
                received += chunk.data.len() as u64;
                if received > executable.size {
                    break;
                }
                hasher.update(&chunk.data);
                file.write_all(&chunk.data).map_err(store_error)?;
            }
            let found = hex(&hasher.finalize());
            if received != executable.size || found != executable.digest {
                return Err(ExecutableProblem::CorruptCopy {
                    expected: format!("{} ({} bytes)", executable.digest, executable.size),
                    found: format!("{found} ({received} bytes)"),
                });
            }
            file.set_permissions(std::fs::Permissions::from_mode(0o755))
                .map_err(store_error)?;
            drop(file);
            let path = dir.join(&executable.digest);
            std::fs::rename(&partial, &path).map_err(store_error)?;
            Ok(path)
        }
        .await;
        if outcome.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        outcome
    }

    /// Where this node unpacked the working directory `archive`, if it did.
    pub fn unpacked(&self, archive: &WorkingDirArchive) -> Option<PathBuf> {
        let dir = self.dir().ok()?.join(format!("{}.d", archive.digest));
        dir.is_dir().then_some(dir)
    }

    /// Unpacks the archive in the file `packed` beside the cached copies,
    /// once per digest, after checking its bytes against the digest.
    pub fn unpack(
        &self,
        archive: &WorkingDirArchive,
        packed: &Path,
    ) -> Result<PathBuf, ExecutableProblem> {
        let _unpacking = self.unpacking.lock();
        if let Some(dir) = self.unpacked(archive) {
            return Ok(dir);
        }
        let failed = |message: String| ExecutableProblem::WorkingDir { message };
        let bytes =
            std::fs::read(packed).map_err(|e| failed(format!("{}: {e}", packed.display())))?;
        let found = crate::runtime_env::hex_digest(&bytes);
        if found != archive.digest {
            return Err(ExecutableProblem::CorruptCopy {
                expected: archive.digest.clone(),
                found,
            });
        }
        let dir = self.dir()?;
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| failed(format!("{}: {e}", dir.display())))?;
        let partial = dir.join(format!(
            "{}.d.partial-{}",
            archive.digest,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&partial);
        let unpacked = crate::runtime_env::unpack(&bytes, &partial).and_then(|()| {
            let done = dir.join(format!("{}.d", archive.digest));
            std::fs::rename(&partial, &done)
                .map(|()| done)
                .map_err(|e| e.to_string())
        });
        if unpacked.is_err() {
            let _ = std::fs::remove_dir_all(&partial);
        }
        unpacked.map_err(failed)
    }

    /// The environment a worker of `runtime_env` starts with: its working
    /// directory unpacked from the cached archive, or from `packed` (a copy
    /// just fetched, the head's own source) when the cache has none.
    pub fn environment(
        &self,
        runtime_env: &JobRuntimeEnv,
        packed: Option<PathBuf>,
    ) -> Result<WorkerEnvironment, ExecutableProblem> {
        let vars = runtime_env.env_vars.clone();
        let Some(archive) = &runtime_env.working_dir else {
            return Ok(WorkerEnvironment { dir: None, vars });
        };
        let dir = match self.unpacked(archive) {
            Some(dir) => dir,
            None => {
                let packed = self.get(&archive.digest).or(packed).ok_or_else(|| {
                    ExecutableProblem::FetchFailed {
                        message: "the head holds no copy of the working directory".into(),
                    }
                })?;
                self.unpack(archive, &packed)?
            }
        };
        Ok(WorkerEnvironment {
            dir: Some(dir),
            vars,
        })
    }

    /// Whether a worker of `runtime_env` needs its working directory
    /// fetched first.
    pub fn lacks_working_dir(&self, runtime_env: &JobRuntimeEnv) -> Option<WorkingDirArchive> {
        runtime_env
            .working_dir
            .as_ref()
            .filter(|a| self.unpacked(a).is_none() && self.get(&a.digest).is_none())
            .cloned()
    }

    /// Removes the least recently used copies until `incoming` more bytes fit.
    fn make_room(&self, incoming: u64) {
        let Some(entries) = self.dir.get().and_then(|d| std::fs::read_dir(d).ok()) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        let mut used: u64 = files.iter().map(|(_, len, _)| len).sum();
        files.sort();
        for (_, len, path) in files {
            if used + incoming <= self.limit {
                break;
            }
            // A running worker keeps its image: Linux frees it at exit.
            if std::fs::remove_file(&path).is_ok() {
                used -= len;
            }
        }
    }

    /// Removes the whole cache (the node is stopping).
    pub fn remove_all(&self) {
        if let Some(dir) = self.dir.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executable(bytes: &[u8], ship: ShipExecutable, path: &Path) -> JobExecutable {
        JobExecutable {
            path: path.to_string_lossy().into_owned(),
            digest: hex(&Sha256::digest(bytes)),
            size: bytes.len() as u64,
            ship,
            runtime_env: JobRuntimeEnv::default(),
        }
    }

    fn chunks(bytes: &[u8]) -> impl tokio_stream::Stream<Item = Result<Chunk, String>> + Unpin {
        let pieces: Vec<Result<Chunk, String>> = bytes
            .chunks(3)
            .map(|c| Ok(Chunk { data: c.to_vec() }))
            .collect();
        tokio_stream::iter(pieces)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn plans_follow_the_ship_mode_and_what_the_path_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app");
        std::fs::write(&path, b"the driver's bytes").unwrap();
        let cache = ExecutableCache::at(dir.path().join("cache"), 1 << 20);
        let same = executable(b"the driver's bytes", ShipExecutable::IfMissing, &path);
        assert!(matches!(cache.plan(&same), Ok(Plan::Run(p)) if p == path));
        let always = JobExecutable {
            ship: ShipExecutable::Always,
            ..same.clone()
        };
        assert!(matches!(cache.plan(&always), Ok(Plan::Fetch)));
        let other = executable(b"other bytes", ShipExecutable::Never, &path);
        assert!(matches!(
            cache.plan(&other),
            Err(ExecutableProblem::DigestMismatch { found, .. }) if found == same.digest
        ));
        let gone = executable(b"x", ShipExecutable::Never, &dir.path().join("gone"));
        assert!(matches!(
            cache.plan(&gone),
            Err(ExecutableProblem::Missing { .. })
        ));
        let fetch = executable(b"other bytes", ShipExecutable::IfMissing, &path);
        assert!(matches!(cache.plan(&fetch), Ok(Plan::Fetch)));
    }

    #[test]
    fn store_verifies_the_digest_and_bounds_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ExecutableCache::at(dir.path().join("cache"), 20);
        let nowhere = dir.path().join("nowhere");
        let first = executable(b"0123456789ab", ShipExecutable::IfMissing, &nowhere);
        let stored = runtime()
            .block_on(cache.store(&first, chunks(b"0123456789ab")))
            .unwrap();
        assert_eq!(std::fs::read(&stored).unwrap(), b"0123456789ab");
        assert!(matches!(cache.plan(&first), Ok(Plan::Run(p)) if p == stored));

        let corrupt = runtime().block_on(cache.store(
            &executable(b"abcdefgh", ShipExecutable::IfMissing, &nowhere),
            chunks(b"abcdefgX"),
        ));
        assert!(matches!(
            corrupt,
            Err(ExecutableProblem::CorruptCopy { .. })
        ));

        // A second copy that does not fit with the first evicts it.
        let second = executable(b"second-copy!", ShipExecutable::IfMissing, &nowhere);
        runtime()
            .block_on(cache.store(&second, chunks(b"second-copy!")))
            .unwrap();
        assert!(cache.get(&first.digest).is_none());
        assert!(cache.get(&second.digest).is_some());
        let partials = std::fs::read_dir(dir.path().join("cache")).unwrap().count();
        assert_eq!(partials, 1, "only the second copy remains");

        let huge = executable(&[7u8; 21], ShipExecutable::IfMissing, &nowhere);
        assert!(matches!(
            cache.plan(&huge),
            Err(ExecutableProblem::TooLarge {
                size: 21,
                limit: 20
            })
        ));
    }

    /// A working directory is unpacked once per digest from a cached or
    /// given archive whose bytes match it; a node without any copy, or with
    /// other bytes, gets a typed reason and nothing unpacked.
    #[test]
    fn working_directories_unpack_once_from_a_matching_archive() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        std::fs::write(tree.join("env.py"), "X = 1\n").unwrap();
        let prepared = crate::runtime_env::RuntimeEnv::default()
            .working_dir(&tree)
            .env_var("SEED", "3")
            .prepare()
            .unwrap();
        let archive = prepared.archive.unwrap();
        let spec = prepared.spec;
        let cache = ExecutableCache::at(dir.path().join("cache"), 1 << 20);

        let none = cache.environment(&spec, None).unwrap_err();
        assert!(
            matches!(none, ExecutableProblem::FetchFailed { .. }),
            "{none}"
        );
        assert!(cache.lacks_working_dir(&spec).is_some());

        let tampered = dir.path().join("tampered");
        let mut bytes = archive.to_vec();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&tampered, &bytes).unwrap();
        let corrupt = cache.environment(&spec, Some(tampered)).unwrap_err();
        assert!(
            matches!(corrupt, ExecutableProblem::CorruptCopy { .. }),
            "{corrupt}"
        );

        let packed = dir.path().join("packed");
        std::fs::write(&packed, archive.as_slice()).unwrap();
        let environment = cache.environment(&spec, Some(packed.clone())).unwrap();
        let copy = environment.dir.unwrap();
        assert_eq!(
            std::fs::read_to_string(copy.join("env.py")).unwrap(),
            "X = 1\n"
        );
        assert_eq!(environment.vars, [("SEED".to_string(), "3".to_string())]);
        assert!(cache.lacks_working_dir(&spec).is_none());
        // Later workers find the copy without any archive.
        std::fs::write(copy.join("touched"), "").unwrap();
        let again = cache.environment(&spec, None).unwrap();
        assert_eq!(again.dir.as_deref(), Some(copy.as_path()));
        assert!(copy.join("touched").exists(), "not unpacked a second time");

        let plain = cache
            .environment(&crate::runtime_env::JobRuntimeEnv::default(), None)
            .unwrap();
        assert!(plain.dir.is_none() && plain.vars.is_empty());
    }
}
