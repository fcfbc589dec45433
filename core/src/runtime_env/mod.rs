//! A job's runtime environment (Ray's `runtime_env`): a working directory
//! that every worker of the job starts in, on every node, and environment
//! variables every worker gets.
//!
//! The driver packs the directory into one archive named by the SHA-256 of
//! its bytes, which travels the way the job's executable does (an upload to
//! the head, a verified fetch into each node's bounded cache,
//! `packaging/`). A node unpacks it once per digest beside the archive and
//! starts the job's workers there, with the directory first on `PYTHONPATH`
//! so Python envs and wrappers in it import. Jobs with other directories or
//! variables never share a worker (the digest is part of the worker pool's
//! key), as Ray keys its worker pools by runtime env.
//!
//! The archive's format is in `archive.rs`; what stays home (the job's
//! `excludes` and the directory's `.gitignore` files) in `excludes.rs`.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod archive;
mod excludes;

use archive::hex;
pub(crate) use archive::{hex_digest, pack, unpack};
pub use archive::{pack_working_dir, unpack_working_dir};
use excludes::Excludes;
pub use excludes::IGNORE_GITIGNORE_ENV;

/// Environment variable through which a job submitted to the Jobs API hands
/// its runtime env (JSON, Ray's shape) to its driver, so its workers get it.
pub const RUNTIME_ENV_ENV: &str = "OXRAY_RUNTIME_ENV";

/// The most bytes of files a working directory may hold: it is code and
/// small files, read into memory and copied to every node (datasets belong on
/// storage every node reads).
pub const MAX_WORKING_DIR_BYTES: u64 = 512 << 20;

/// What a job's workers get besides its executable
/// ([`InitOptions::runtime_env`](crate::InitOptions::runtime_env)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeEnv {
    /// A directory on the driver's machine: copied to every node, and the
    /// working directory (and first `PYTHONPATH` entry) of the job's workers.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// Set in every worker of the job, over the node's own environment.
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    /// Paths of the working directory left out of its copy (Ray's
    /// `excludes`, in gitignore's pattern language, on top of the
    /// directory's own `.gitignore` files), e.g. `.git`, `results/`,
    /// `*.ckpt`.
    #[serde(default)]
    pub excludes: Vec<String>,
}

impl RuntimeEnv {
    pub fn working_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    pub fn env_var(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env_vars.insert(key.into(), value.into());
        self
    }

    pub fn exclude(mut self, pattern: impl Into<String>) -> Self {
        self.excludes.push(pattern.into());
        self
    }

    /// The runtime env a job submission handed this driver, if any.
    pub(crate) fn from_process_env() -> Result<Option<RuntimeEnv>> {
        let Ok(json) = std::env::var(RUNTIME_ENV_ENV) else {
            return Ok(None);
        };
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| Error::WorkingDir {
                path: RUNTIME_ENV_ENV.into(),
                problem: format!("not a runtime env as JSON: {e}"),
            })
    }

    /// The JSON that [`RUNTIME_ENV_ENV`] holds; a working directory whose
    /// path is not UTF-8 cannot be written so.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::WorkingDir {
            path: self
                .working_dir
                .as_deref()
                .map_or_else(String::new, |dir| dir.display().to_string()),
            problem: format!("cannot be written as JSON: {e}"),
        })
    }

    /// Packs the working directory and checks the variables: what the
    /// job's workers are told, and the archive the head serves.
    pub(crate) fn prepare(&self) -> Result<PreparedRuntimeEnv> {
        for key in self.env_vars.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(Error::WorkingDir {
                    path: "env_vars".into(),
                    problem: format!("{key:?} is not a variable name"),
                });
            }
        }
        let excludes = Excludes::new(&self.excludes)?;
        let archive = self
            .working_dir
            .as_deref()
            .map(|dir| pack(dir, &excludes))
            .transpose()?;
        let spec = JobRuntimeEnv {
            working_dir: archive.as_ref().map(|bytes| WorkingDirArchive {
                digest: hex_digest(bytes),
                size: bytes.len() as u64,
            }),
            env_vars: self.env_vars.clone().into_iter().collect(),
        };
        Ok(PreparedRuntimeEnv {
            spec,
            archive: archive.map(Arc::new),
        })
    }
}

/// A runtime env ready to ship: what the job's workers are told, and the
/// working directory's archive.
#[derive(Clone, Default)]
pub(crate) struct PreparedRuntimeEnv {
    pub spec: JobRuntimeEnv,
    pub archive: Option<Arc<Vec<u8>>>,
}

impl std::fmt::Debug for PreparedRuntimeEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedRuntimeEnv")
            .field("spec", &self.spec)
            .field("archive_bytes", &self.archive.as_ref().map(|a| a.len()))
            .finish()
    }
}

/// This process's `PYTHONPATH` with `dir` first: what a job's working
/// directory makes of it, in its workers and in its driver, so Python envs
/// and wrappers in the directory import (as Ray puts its working_dir on
/// `sys.path`).
pub fn python_path_with(
    dir: &Path,
) -> std::result::Result<std::ffi::OsString, std::env::JoinPathsError> {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(inherited) = std::env::var_os("PYTHONPATH").filter(|p| !p.is_empty()) {
        paths.extend(std::env::split_paths(&inherited));
    }
    std::env::join_paths(paths)
}

/// A job's runtime env as nodes see it: the working directory by its
/// archive's digest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobRuntimeEnv {
    pub working_dir: Option<WorkingDirArchive>,
    pub env_vars: Vec<(String, String)>,
}

impl JobRuntimeEnv {
    /// A short name for worker pools: empty for no runtime env, so jobs
    /// without one share workers as before.
    pub(crate) fn key(&self) -> String {
        if *self == JobRuntimeEnv::default() {
            return String::new();
        }
        let mut hasher = Sha256::new();
        if let Some(archive) = &self.working_dir {
            hasher.update(archive.digest.as_bytes());
        }
        for (key, value) in &self.env_vars {
            hasher.update((key.len() as u64).to_le_bytes());
            hasher.update(key.as_bytes());
            hasher.update((value.len() as u64).to_le_bytes());
            hasher.update(value.as_bytes());
        }
        hex(&hasher.finalize()[..8])
    }
}

/// A packed working directory, named by content.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WorkingDirArchive {
    /// SHA-256 of the archive, lowercase hex.
    pub digest: String,
    pub size: u64,
}

/// What a worker is started with on its node: the unpacked directory and
/// the variables.
#[derive(Debug, Clone, Default)]
pub(crate) struct WorkerEnvironment {
    pub dir: Option<PathBuf>,
    pub vars: Vec<(String, String)>,
}

#[cfg(test)]
pub(super) mod tests {
    use super::archive::unpack;
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A small tree: a package with a module and an empty directory, an
    /// executable script, a link.
    pub(crate) fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("pkg/empty")).unwrap();
        std::fs::write(root.join("pkg/env.py"), "SIZE = 7\n").unwrap();
        std::fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("pkg/env.py", root.join("link.py")).unwrap();
        dir
    }

    #[test]
    fn excludes_leave_out_names_anywhere_and_paths_from_the_root() {
        let source = tree();
        let root = source.path();
        std::fs::create_dir_all(root.join(".git/objects")).unwrap();
        std::fs::write(root.join(".git/objects/ab"), "blob").unwrap();
        std::fs::create_dir_all(root.join("results/run-1")).unwrap();
        std::fs::write(root.join("results/run-1/model.ckpt"), "weights").unwrap();
        std::fs::write(root.join("pkg/old.ckpt"), "weights").unwrap();
        std::fs::write(root.join("pkg/results"), "a file named results").unwrap();
        let prepared = RuntimeEnv::default()
            .working_dir(root)
            .exclude(".git")
            .exclude("/results/")
            .exclude("*.ckpt")
            .exclude("pkg/emp?y")
            .prepare()
            .unwrap();
        let target = tempfile::tempdir().unwrap();
        let copy = target.path().join("copy");
        unpack(&prepared.archive.unwrap(), &copy).unwrap();
        assert!(!copy.join(".git").exists());
        assert!(!copy.join("results").exists());
        assert!(!copy.join("pkg/old.ckpt").exists());
        assert!(!copy.join("pkg/empty").exists());
        // An anchored pattern matches only from the root.
        assert!(copy.join("pkg/results").is_file());
        assert!(copy.join("pkg/env.py").is_file() && copy.join("run.sh").is_file());

        for bad in ["../up", "a//b", ""] {
            let error = RuntimeEnv::default()
                .working_dir(root)
                .exclude(bad)
                .prepare()
                .unwrap_err()
                .to_string();
            assert!(error.contains("excludes"), "{bad}: {error}");
        }
    }

    #[test]
    fn gitignore_files_leave_out_what_they_name() {
        let source = tree();
        let root = source.path();
        std::fs::write(root.join(".gitignore"), ".venv/\n*.ckpt\n").unwrap();
        std::fs::create_dir_all(root.join(".venv/lib")).unwrap();
        std::fs::write(root.join(".venv/lib/torch.so"), "big").unwrap();
        std::fs::write(root.join("pkg/.gitignore"), "!best.ckpt\n/scratch\n").unwrap();
        std::fs::write(root.join("pkg/best.ckpt"), "kept").unwrap();
        std::fs::write(root.join("pkg/last.ckpt"), "left").unwrap();
        std::fs::write(root.join("pkg/scratch"), "left").unwrap();
        std::fs::write(root.join("scratch"), "kept").unwrap();
        let prepared = RuntimeEnv::default().working_dir(root).prepare().unwrap();
        let target = tempfile::tempdir().unwrap();
        let copy = target.path().join("copy");
        unpack(&prepared.archive.unwrap(), &copy).unwrap();
        assert!(!copy.join(".venv").exists());
        assert!(!copy.join("pkg/last.ckpt").exists() && !copy.join("pkg/scratch").exists());
        assert!(copy.join("pkg/best.ckpt").is_file() && copy.join("scratch").is_file());
        // The `.gitignore` files travel, as git keeps them.
        assert!(copy.join(".gitignore").is_file() && copy.join("pkg/.gitignore").is_file());
        assert!(copy.join("pkg/env.py").is_file());
    }

    #[test]
    fn a_missing_directory_and_bad_variable_names_are_named() {
        let missing = RuntimeEnv::default().working_dir("/no/such/dir");
        let error = missing.prepare().unwrap_err().to_string();
        assert!(error.contains("/no/such/dir"), "{error}");
        let file = tempfile::NamedTempFile::new().unwrap();
        let error = RuntimeEnv::default()
            .working_dir(file.path())
            .prepare()
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a directory"), "{error}");
        let error = RuntimeEnv::default()
            .env_var("A=B", "1")
            .prepare()
            .unwrap_err()
            .to_string();
        assert!(error.contains("\"A=B\""), "{error}");
    }

    /// Jobs without a runtime env keep sharing workers; any difference in
    /// directory or variables gives another pool.
    #[test]
    fn pool_keys_tell_runtime_envs_apart() {
        let source = tree();
        let plain = RuntimeEnv::default().prepare().unwrap().spec;
        assert_eq!(plain.key(), "");
        let prepared = RuntimeEnv::default()
            .working_dir(source.path())
            .prepare()
            .unwrap();
        let with_dir = prepared.spec;
        assert_eq!(
            with_dir.working_dir.as_ref().unwrap().digest,
            hex_digest(&prepared.archive.unwrap())
        );
        let with_var = RuntimeEnv::default()
            .working_dir(source.path())
            .env_var("SEED", "3")
            .prepare()
            .unwrap()
            .spec;
        let keys = [plain.key(), with_dir.key(), with_var.key()];
        assert!(keys[1] != keys[2] && !keys[1].is_empty());
        assert_eq!(with_dir.key(), with_dir.clone().key());
    }

    #[test]
    fn the_json_form_round_trips() {
        let env = RuntimeEnv::default()
            .working_dir("/srv/exp")
            .env_var("SEED", "3");
        let parsed: RuntimeEnv = serde_json::from_str(&env.to_json().unwrap()).unwrap();
        assert_eq!(parsed, env);
        let ray_shaped: RuntimeEnv = serde_json::from_str(r#"{"env_vars": {"A": "1"}}"#).unwrap();
        assert_eq!(ray_shaped.env_vars["A"], "1");
    }
}
