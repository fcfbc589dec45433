//! The session directory: where this machine's cluster processes leave
//! their address, token, pids and logs (Ray's `/tmp/ray/session_latest`),
//! kept private to the user who runs them.
//!
//! A fixed, shared path would let another local user create it first and
//! plant a head address or token (so a driver connects to them, or trusts a
//! token they know), or read the token out of it. So the directory is per
//! user (`$OXRAY_SESSION_DIR`, else `$XDG_RUNTIME_DIR/oxray/session_latest`,
//! else `/tmp/oxray-<uid>/session_latest`), every directory oxray creates on
//! the way is 0700, and before anything in it is read or written the
//! directory must be a real directory (not a symbolic link) owned by this
//! user that no one else can write into; otherwise oxray refuses and says
//! why. One that others could only read is closed to them (0700) first.
//! Files are created with `O_EXCL | O_NOFOLLOW` and mode 0600 (replaced
//! atomically by rename), and read only if they are this user's own,
//! private, and not links.

use crate::error::{Error, Result};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Environment variable that puts the session directory somewhere else.
pub const SESSION_DIR_ENV: &str = "OXRAY_SESSION_DIR";

fn user() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn unsafe_state(path: &Path, problem: impl Into<String>) -> Error {
    Error::UnsafeLocalState {
        path: path.display().to_string(),
        problem: problem.into(),
    }
}

/// The session directory, created private if missing and checked if not.
pub fn session_dir() -> Result<PathBuf> {
    if let Some(explicit) = std::env::var_os(SESSION_DIR_ENV) {
        let dir = PathBuf::from(explicit);
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::runtime(&format!("cannot create {}", parent.display()), e))?;
        }
        ensure_private_dir(&dir)?;
        return Ok(dir);
    }
    let base = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| Path::new(d).is_dir()) {
        Some(runtime) => PathBuf::from(runtime).join("oxray"),
        None => std::env::temp_dir().join(format!("oxray-{}", user())),
    };
    ensure_private_dir(&base)?;
    let dir = base.join("session_latest");
    ensure_private_dir(&dir)?;
    Ok(dir)
}

/// A subdirectory of the session directory (`logs`, `pids`), private too.
pub fn session_subdir(name: &str) -> Result<PathBuf> {
    let dir = session_dir()?.join(name);
    ensure_private_dir(&dir)?;
    Ok(dir)
}

/// Creates `dir` with mode 0700 if it does not exist, then checks that it
/// is a directory of this user that nobody else may enter.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Error::runtime(
                &format!("cannot create {}", dir.display()),
                e,
            ))
        }
    }
    let metadata = std::fs::symlink_metadata(dir)
        .map_err(|e| Error::runtime(&format!("cannot inspect {}", dir.display()), e))?;
    if metadata.file_type().is_symlink() {
        return Err(unsafe_state(dir, "it is a symbolic link"));
    }
    if !metadata.is_dir() {
        return Err(unsafe_state(dir, "it is not a directory"));
    }
    // A directory of this user that only it can write into (a temporary
    // directory made with the usual umask, say) holds nothing planted:
    // close it to others and use it.
    let writable_by_others = metadata.mode() & 0o022 != 0;
    if metadata.uid() == user() && !writable_by_others && metadata.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::runtime(&format!("cannot make {} private", dir.display()), e))?;
        return Ok(());
    }
    check_owner_and_mode(dir, &metadata)
}

fn check_owner_and_mode(path: &Path, metadata: &std::fs::Metadata) -> Result<()> {
    if metadata.uid() != user() {
        return Err(unsafe_state(
            path,
            format!(
                "it belongs to uid {}, not to this user (uid {})",
                metadata.uid(),
                user()
            ),
        ));
    }
    if metadata.mode() & 0o077 != 0 {
        return Err(unsafe_state(
            path,
            format!(
                "its mode {:o} lets other users in (oxray needs {})",
                metadata.mode() & 0o777,
                if metadata.is_dir() { "0700" } else { "0600" }
            ),
        ));
    }
    Ok(())
}

/// Opens a new file 0600 that must not exist yet (`O_EXCL`), never through
/// a symbolic link.
pub fn create_private_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::runtime(&format!("cannot create {}", path.display()), e))
}

/// Replaces `path` with `contents`: written to a fresh private file beside it,
/// then renamed over it, so readers never see half a file and a link planted
/// at `path` is replaced, not followed.
pub fn write_private_file(path: &Path, contents: &str) -> Result<()> {
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    let staging = path.with_file_name(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&staging);
    let written = create_private_file(&staging).and_then(|mut file| {
        file.write_all(contents.as_bytes())
            .map_err(|e| Error::runtime(&format!("cannot write {}", staging.display()), e))
    });
    let renamed = written.and_then(|()| {
        std::fs::rename(&staging, path)
            .map_err(|e| Error::runtime(&format!("cannot write {}", path.display()), e))
    });
    if renamed.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    renamed
}

/// Reads a file of the session, refusing links and files that are not this
/// user's own and private. `None` when it does not exist.
pub fn read_private_file(path: &Path) -> Result<Option<String>> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(unsafe_state(path, "it is a symbolic link"))
        }
        Err(e) => {
            return Err(Error::runtime(
                &format!("cannot read {}", path.display()),
                e,
            ))
        }
    };
    let metadata = file
        .metadata()
        .map_err(|e| Error::runtime(&format!("cannot inspect {}", path.display()), e))?;
    if !metadata.is_file() {
        return Err(unsafe_state(path, "it is not a regular file"));
    }
    check_owner_and_mode(path, &metadata)?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| Error::runtime(&format!("cannot read {}", path.display()), e))?;
    Ok(Some(text))
}
