//! The archive a working directory travels as: its entries (directories,
//! files with their executable bit, symbolic links) sorted by path and
//! encoded with the wire codec, named by the SHA-256 of the bytes.
//!
//! Not tar or zip: these bytes depend only on the tree's names, contents,
//! executable bits and links (never on modification times or owners), so
//! the same directory gives the same digest on every machine and run, and
//! unpacking has only three entry kinds to check, none of which may land
//! outside the copy.

use super::excludes::Excludes;
use super::MAX_WORKING_DIR_BYTES;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

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

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Packs the tree under `dir` (every file, directory and symbolic link that
/// `excludes` and the tree's `.gitignore` files leave in, in name order;
/// links are kept as links, not followed).
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
    let mut rules = excludes.walk();
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((on_disk, relative)) = pending.pop() {
        rules.enter(&on_disk, &relative)?;
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
            let metadata =
                std::fs::symlink_metadata(&path).map_err(|e| problem(&path, e.to_string()))?;
            let kind = metadata.file_type();
            if rules.excludes(&relative, kind.is_dir()) {
                continue;
            }
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
    use crate::runtime_env::tests::tree;

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
}
