//! A job's runtime environment (Ray's `runtime_env`): a working directory
//! that every worker of the job starts in, on every node, and environment
//! variables every worker gets.
//!
//! The driver packs the directory into one archive named by the SHA-256 of
//! its bytes, which travels the way the job's executable does (an upload to
//! the head, a verified fetch into each node's bounded cache,
//! `packaging.rs`). A node unpacks it once per digest beside the archive and
//! starts the job's workers there, with the directory first on `PYTHONPATH`
//! so Python envs and wrappers in it import. Jobs with other directories or
//! variables never share a worker (the digest is part of the worker pool's
//! key), as Ray keys its worker pools by runtime env.
//!
//! The archive is this module's own format (the entries, sorted by path,
//! encoded with the wire codec) rather than tar or zip: its bytes depend only
//! on the tree's names, contents, executable bits and links, so the same
//! directory gives the same digest on every machine and run, and unpacking it
//! has only the four entry kinds below to check.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

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
    /// `excludes`; see [`Excludes`]), e.g. `.git`, `results/`, `*.ckpt`.
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

/// One entry of an archive; paths are relative, `/`-separated, without `.`
/// or `..`.
#[derive(Debug, Serialize, Deserialize)]
enum Entry {
    Dir {
        path: String,
    },
    File {
        path: String,
        executable: bool,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
}

/// Packs `dir` as a job's working directory, less `excludes`: its digest
/// and archive (what `oxray job submit --working-dir` uploads to the Jobs
/// API, which unpacks it with [`unpack_working_dir`]).
pub fn pack_working_dir(dir: &Path, excludes: &[String]) -> Result<(String, Vec<u8>)> {
    let archive = pack(dir, &Excludes::new(excludes)?)?;
    Ok((hex_digest(&archive), archive))
}

/// Unpacks an archive of [`pack_working_dir`] into `into`, which must not
/// exist yet; bytes that do not hash to `digest`, or entries that would land
/// outside `into`, are refused and nothing is left behind.
pub fn unpack_working_dir(archive: &[u8], digest: &str, into: &Path) -> Result<()> {
    let refused = |problem: String| Error::WorkingDir {
        path: into.display().to_string(),
        problem,
    };
    let found = hex_digest(archive);
    if found != digest {
        return Err(refused(format!(
            "the archive has SHA-256 {found}, not {digest}"
        )));
    }
    unpack(archive, into).map_err(|problem| {
        let _ = std::fs::remove_dir_all(into);
        refused(problem)
    })
}

pub(crate) fn hex_digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Packs the tree under `dir` (every file, directory and symbolic link that
/// `excludes` leaves in, in name order; links are kept as links, not
/// followed).
pub(crate) fn pack(dir: &Path, excludes: &Excludes) -> Result<Vec<u8>> {
    let problem = |path: &Path, problem: String| Error::WorkingDir {
        path: path.display().to_string(),
        problem,
    };
    match std::fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => return Err(problem(dir, "not a directory".into())),
        Err(e) => return Err(problem(dir, e.to_string())),
    }
    let mut entries = Vec::new();
    let mut total_bytes = 0u64;
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((on_disk, relative)) = pending.pop() {
        let mut children: Vec<(String, PathBuf)> = std::fs::read_dir(&on_disk)
            .map_err(|e| problem(&on_disk, e.to_string()))?
            .map(|entry| {
                let entry = entry.map_err(|e| problem(&on_disk, e.to_string()))?;
                let name = entry.file_name().into_string().map_err(|name| {
                    problem(
                        &on_disk.join(&name),
                        "the name is not UTF-8, which the archive cannot carry".into(),
                    )
                })?;
                Ok((name, entry.path()))
            })
            .collect::<Result<_>>()?;
        // Reversed onto the stack so the tree is walked in name order.
        children.sort();
        for (name, path) in children.into_iter().rev() {
            let relative = if relative.is_empty() {
                name
            } else {
                format!("{relative}/{name}")
            };
            if excludes.excludes(&relative) {
                continue;
            }
            let metadata =
                std::fs::symlink_metadata(&path).map_err(|e| problem(&path, e.to_string()))?;
            let kind = metadata.file_type();
            if kind.is_symlink() {
                let target =
                    std::fs::read_link(&path).map_err(|e| problem(&path, e.to_string()))?;
                let target = target
                    .into_os_string()
                    .into_string()
                    .map_err(|_| problem(&path, "the link's target is not UTF-8".into()))?;
                entries.push(Entry::Symlink {
                    path: relative,
                    target,
                });
            } else if kind.is_dir() {
                entries.push(Entry::Dir {
                    path: relative.clone(),
                });
                pending.push((path, relative));
            } else if kind.is_file() {
                total_bytes += metadata.len();
                if total_bytes > MAX_WORKING_DIR_BYTES {
                    return Err(problem(
                        dir,
                        format!(
                            "its files hold more than {} MiB (at {}); ship code and small files, leave the rest out with excludes (`--exclude results/`), and keep datasets where every node can read them",
                            MAX_WORKING_DIR_BYTES >> 20,
                            path.display()
                        ),
                    ));
                }
                let data = std::fs::read(&path).map_err(|e| problem(&path, e.to_string()))?;
                entries.push(Entry::File {
                    path: relative,
                    executable: metadata.permissions().mode() & 0o111 != 0,
                    data,
                });
            } else {
                return Err(problem(
                    &path,
                    "neither a file, a directory nor a symbolic link (a socket or device cannot be shipped)".into(),
                ));
            }
        }
    }
    // The walk is depth-first; sorting by path makes the order independent
    // of how it went.
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    postcard::to_stdvec(&entries).map_err(|e| problem(dir, format!("cannot encode it: {e}")))
}

/// Ray's `excludes`: paths of the working directory left out of its
/// archive, in gitignore's simple forms. A pattern without a `/` matches an
/// entry of that name at any depth (`.git`, `*.ckpt`); one with a `/` matches
/// the path from the working directory (`results/`, `data/raw/*.csv`, a
/// leading `/` allowed). `*` and `?` match within one name. A directory
/// that matches is left out with everything under it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Excludes {
    patterns: Vec<(bool, Vec<String>)>,
}

impl Excludes {
    pub(crate) fn new(patterns: &[String]) -> Result<Self> {
        let patterns = patterns
            .iter()
            .map(|pattern| {
                let trimmed = pattern.trim_end_matches('/');
                let anchored = trimmed.contains('/');
                let components: Vec<String> = trimmed
                    .trim_start_matches('/')
                    .split('/')
                    .map(str::to_string)
                    .collect();
                if components
                    .iter()
                    .any(|c| c.is_empty() || c == "." || c == "..")
                {
                    return Err(Error::WorkingDir {
                        path: format!("excludes: {pattern:?}"),
                        problem: "not a pattern of names under the working directory".into(),
                    });
                }
                Ok((anchored, components))
            })
            .collect::<Result<_>>()?;
        Ok(Excludes { patterns })
    }

    /// Whether the entry at `relative` (`/`-separated) is left out.
    fn excludes(&self, relative: &str) -> bool {
        let names: Vec<&str> = relative.split('/').collect();
        self.patterns.iter().any(|(anchored, pattern)| {
            if *anchored {
                names.len() == pattern.len()
                    && names.iter().zip(pattern).all(|(n, p)| wildcard_match(p, n))
            } else {
                wildcard_match(&pattern[0], names[names.len() - 1])
            }
        })
    }
}

/// `*` (any run of characters) and `?` (any one) within one name.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (pattern, name): (Vec<char>, Vec<char>) =
        (pattern.chars().collect(), name.chars().collect());
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((star_p, star_n)) = star {
            p = star_p + 1;
            n = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

impl Entry {
    fn path(&self) -> &str {
        match self {
            Entry::Dir { path } | Entry::File { path, .. } | Entry::Symlink { path, .. } => path,
        }
    }
}

/// Unpacks `archive` into `into` (which must not exist yet). Refuses entries
/// that would land outside it: absolute paths, `..`, or a path through one
/// of the archive's own links.
pub(crate) fn unpack(archive: &[u8], into: &Path) -> std::result::Result<(), String> {
    let entries: Vec<Entry> = postcard::from_bytes(archive)
        .map_err(|e| format!("not a working-directory archive: {e}"))?;
    std::fs::create_dir(into).map_err(|e| format!("{}: {e}", into.display()))?;
    let mut links: Vec<&str> = Vec::new();
    for entry in &entries {
        let relative = entry.path();
        let inside = Path::new(relative)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        let through_link = links.iter().any(|link| {
            relative
                .strip_prefix(link)
                .is_some_and(|rest| rest.starts_with('/'))
        });
        if relative.is_empty() || !inside || through_link {
            return Err(format!(
                "the entry {relative:?} would land outside the directory"
            ));
        }
        let path = into.join(relative);
        let written = match entry {
            Entry::Dir { .. } => std::fs::create_dir(&path),
            Entry::File {
                executable, data, ..
            } => std::fs::write(&path, data).and_then(|()| {
                let mode = if *executable { 0o755 } else { 0o644 };
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            }),
            Entry::Symlink { target, .. } => {
                links.push(relative);
                std::os::unix::fs::symlink(target, &path)
            }
        };
        written.map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
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
    fn a_tree_unpacks_to_the_same_names_contents_modes_and_links() {
        let source = tree();
        let archive = pack(source.path(), &Excludes::default()).unwrap();
        let target = tempfile::tempdir().unwrap();
        let copy = target.path().join("copy");
        unpack(&archive, &copy).unwrap();
        assert_eq!(
            std::fs::read_to_string(copy.join("pkg/env.py")).unwrap(),
            "SIZE = 7\n"
        );
        assert!(copy.join("pkg/empty").is_dir());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&copy.join("run.sh")), 0o755);
        assert_eq!(mode(&copy.join("pkg/env.py")), 0o644);
        assert_eq!(
            std::fs::read_link(copy.join("link.py")).unwrap(),
            Path::new("pkg/env.py")
        );
        assert_eq!(
            std::fs::read_to_string(copy.join("link.py")).unwrap(),
            "SIZE = 7\n"
        );
    }

    /// The digest names the content: the same tree packs to the same bytes
    /// whatever its modification times, and any change of content, name or
    /// mode changes them.
    #[test]
    fn the_archive_depends_only_on_the_tree() {
        let source = tree();
        let first = pack(source.path(), &Excludes::default()).unwrap();
        let file = std::fs::File::options()
            .write(true)
            .open(source.path().join("pkg/env.py"))
            .unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(pack(source.path(), &Excludes::default()).unwrap(), first);
        std::fs::write(source.path().join("pkg/env.py"), "SIZE = 8\n").unwrap();
        let edited = pack(source.path(), &Excludes::default()).unwrap();
        assert_ne!(hex_digest(&edited), hex_digest(&first));
        std::fs::set_permissions(
            source.path().join("pkg/env.py"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        assert_ne!(pack(source.path(), &Excludes::default()).unwrap(), edited);
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
    fn wildcards_match_within_one_name() {
        for (pattern, name, matches) in [
            ("*.ckpt", "model.ckpt", true),
            ("*.ckpt", "model.ckpt.bak", false),
            ("run-?", "run-1", true),
            ("run-?", "run-10", false),
            ("*", "", true),
            ("a*b*c", "aXXbYc", true),
            ("a*b*c", "aXXbY", false),
            ("exact", "exact", true),
        ] {
            assert_eq!(wildcard_match(pattern, name), matches, "{pattern} {name}");
        }
    }

    #[test]
    fn entries_that_escape_the_directory_are_refused() {
        let target = tempfile::tempdir().unwrap();
        let escaping = [
            vec![Entry::File {
                path: "../outside".into(),
                executable: false,
                data: b"x".to_vec(),
            }],
            vec![Entry::Dir {
                path: "/etc/oxray".into(),
            }],
            vec![
                Entry::Symlink {
                    path: "up".into(),
                    target: "..".into(),
                },
                Entry::File {
                    path: "up/outside".into(),
                    executable: false,
                    data: b"x".to_vec(),
                },
            ],
        ];
        for (n, entries) in escaping.iter().enumerate() {
            let archive = postcard::to_stdvec(entries).unwrap();
            let into = target.path().join(format!("copy-{n}"));
            let refused = unpack(&archive, &into).unwrap_err();
            assert!(refused.contains("outside"), "{refused}");
        }
        assert!(!target.path().join("outside").exists());
        assert!(unpack(b"\xff\xff\xff", &target.path().join("junk"))
            .unwrap_err()
            .contains("not a working-directory archive"));
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
