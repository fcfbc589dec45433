//! Checkpoints: a directory per save with the Learner's weights and optimizer
//! state plus a JSON document (algorithm, resolved config, counters, RNG and
//! episode-window state) that records each binary file's length and checksum.
//!
//! Saving writes everything into a hidden temporary directory, syncs it, and
//! renames it into place; a checkpoint of the same name is swapped out in the
//! same step (`renameat2` with `RENAME_EXCHANGE`) and only then removed, and
//! `latest` is a symlink replaced by rename too. A crash at any point
//! therefore leaves a whole checkpoint under the name and `latest` intact.
//! Loading checks lengths and checksums, so a truncated or altered file is
//! reported by name instead of surfacing as a libtorch error.
//!
//! An off-policy run asked to keep its replay buffer adds it as one more
//! file; evaluating or exporting the policy ([`load_policy`]) never reads
//! it, as it can be far larger than the weights.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::learner::LearnerState;
use crate::Error;

const FORMAT: &str = "oxray-checkpoint-1";
const METADATA: &str = "checkpoint.json";
const WEIGHTS: &str = "weights.pt";
const OPTIMIZER: &str = "optimizer.pt";
const REPLAY_BUFFER: &str = "replay_buffer.bin";
pub const LATEST: &str = "latest";

/// What an algorithm saves and restores.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub algorithm: String,
    pub config: serde_json::Value,
    /// Algorithm-defined training state: counters, RNG, episode window.
    pub state: serde_json::Value,
    pub learner: LearnerState,
    /// The replay buffer's snapshot (`ReplayBuffer::snapshot`), when the
    /// run keeps it.
    pub replay_buffer: Option<Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
struct Metadata {
    format: String,
    algorithm: String,
    config: serde_json::Value,
    state: serde_json::Value,
    files: Vec<FileEntry>,
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    name: String,
    len: u64,
    fnv1a64: String,
}

/// Writes `checkpoint` as `dir/name` and points `dir/latest` at it.
pub fn save(dir: &Path, name: &str, checkpoint: &Checkpoint) -> Result<PathBuf, Error> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let target = dir.join(name);
    let staging = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir(&staging).map_err(|e| Error::io(&staging, e))?;
    let blobs = [
        (WEIGHTS, Some(&checkpoint.learner.weights)),
        (OPTIMIZER, Some(&checkpoint.learner.optimizer)),
        (REPLAY_BUFFER, checkpoint.replay_buffer.as_ref()),
    ];
    let blobs = blobs
        .into_iter()
        .filter_map(|(name, bytes)| Some((name, bytes?)));
    let mut files = Vec::new();
    for (file_name, bytes) in blobs {
        write_synced(&staging.join(file_name), bytes)?;
        files.push(FileEntry {
            name: file_name.into(),
            len: bytes.len() as u64,
            fnv1a64: format!("{:016x}", fnv1a64(bytes)),
        });
    }
    let metadata = Metadata {
        format: FORMAT.into(),
        algorithm: checkpoint.algorithm.clone(),
        config: checkpoint.config.clone(),
        state: checkpoint.state.clone(),
        files,
    };
    let json = serde_json::to_vec_pretty(&metadata).expect("JSON values serialize");
    write_synced(&staging.join(METADATA), &json)?;
    if target.exists() {
        // The old checkpoint now sits under the staging name.
        exchange(&staging, &target).map_err(|e| Error::io(&target, e))?;
        fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    } else {
        fs::rename(&staging, &target).map_err(|e| Error::io(&target, e))?;
    }
    let link = dir.join(format!(".{LATEST}.tmp{}", std::process::id()));
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(name, &link).map_err(|e| Error::io(&link, e))?;
    fs::rename(&link, dir.join(LATEST)).map_err(|e| Error::io(dir, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))?;
    Ok(target)
}

/// Reads and verifies the checkpoint in `dir` (a checkpoint directory, or a
/// `checkpoints/` directory or run directory, whose `latest` is then used),
/// everything a run resumes from.
pub fn load(dir: &Path) -> Result<Checkpoint, Error> {
    load_parts(dir, true)
}

/// As [`load`], without the replay buffer: what evaluating or exporting the
/// policy needs.
pub fn load_policy(dir: &Path) -> Result<Checkpoint, Error> {
    load_parts(dir, false)
}

fn load_parts(dir: &Path, with_replay_buffer: bool) -> Result<Checkpoint, Error> {
    let dir = resolve(dir);
    let bad = |reason: String| Error::Checkpoint {
        path: dir.clone(),
        reason,
    };
    let metadata_path = dir.join(METADATA);
    let json = fs::read(&metadata_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => {
            bad(format!("no checkpoint here ({METADATA} not found)"))
        }
        _ => Error::io(&metadata_path, e),
    })?;
    let metadata: Metadata = serde_json::from_slice(&json)
        .map_err(|e| bad(format!("{METADATA} is damaged or truncated ({e})")))?;
    if metadata.format != FORMAT {
        return Err(bad(format!("unknown format {:?}", metadata.format)));
    }
    let read = |name: &str| -> Result<Vec<u8>, Error> {
        let entry = metadata
            .files
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| bad(format!("{METADATA} lists no {name}")))?;
        let path = dir.join(name);
        let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        if bytes.len() as u64 != entry.len {
            return Err(bad(format!(
                "{name} is truncated or altered: {} bytes, expected {}",
                bytes.len(),
                entry.len
            )));
        }
        if format!("{:016x}", fnv1a64(&bytes)) != entry.fnv1a64 {
            return Err(bad(format!("{name} is corrupted (checksum mismatch)")));
        }
        Ok(bytes)
    };
    let learner = LearnerState {
        weights: read(WEIGHTS)?,
        optimizer: read(OPTIMIZER)?,
    };
    let has_replay_buffer = metadata.files.iter().any(|f| f.name == REPLAY_BUFFER);
    let replay_buffer = if with_replay_buffer && has_replay_buffer {
        Some(read(REPLAY_BUFFER)?)
    } else {
        None
    };
    Ok(Checkpoint {
        algorithm: metadata.algorithm,
        config: metadata.config,
        state: metadata.state,
        learner,
        replay_buffer,
    })
}

/// Accepts a checkpoint directory, a `checkpoints/` directory or a run directory.
fn resolve(path: &Path) -> PathBuf {
    for candidate in [
        path.to_path_buf(),
        path.join(LATEST),
        path.join("checkpoints").join(LATEST),
    ] {
        if candidate.join(METADATA).exists() {
            return candidate;
        }
    }
    path.to_path_buf()
}

/// Swaps the directory entries `a` and `b` atomically.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both paths are NUL-terminated C strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut file = File::create(path).map_err(|e| Error::io(path, e))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// FNV-1a: enough to catch truncation and bit rot, no dependency needed.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            algorithm: "PPO".into(),
            config: serde_json::json!({"lr": 0.001}),
            state: serde_json::json!({"iteration": 3}),
            learner: LearnerState {
                weights: vec![1, 2, 3, 4],
                optimizer: vec![5, 6],
            },
            replay_buffer: None,
        }
    }

    #[test]
    fn round_trip_through_latest() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), "checkpoint_000001", &sample()).unwrap();
        let mut second = sample();
        second.state = serde_json::json!({"iteration": 4});
        save(dir.path(), "checkpoint_000002", &second).unwrap();
        assert_eq!(load(dir.path()).unwrap(), second);
        assert_eq!(
            load(&dir.path().join("checkpoint_000001")).unwrap(),
            sample()
        );
    }

    /// Saving over a checkpoint of the same name swaps the new one in whole:
    /// the old files are gone, nothing is left under a staging name, and
    /// a file only the old one had does not survive into the new one.
    #[test]
    fn saving_over_a_checkpoint_replaces_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = save(dir.path(), "checkpoint_000001", &sample()).unwrap();
        fs::write(path.join("stale"), b"old").unwrap();
        let mut second = sample();
        second.learner.weights = vec![9; 16];
        save(dir.path(), "checkpoint_000001", &second).unwrap();
        assert_eq!(load(&path).unwrap(), second);
        assert!(!path.join("stale").exists());
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }

    /// While the new checkpoint is swapped in, the old one stays whole under
    /// the staging name: exchanging two directories keeps both.
    #[test]
    fn exchange_swaps_two_directories() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::create_dir(&a).unwrap();
        fs::create_dir(&b).unwrap();
        fs::write(a.join("from_a"), b"a").unwrap();
        fs::write(b.join("from_b"), b"b").unwrap();
        exchange(&a, &b).unwrap();
        assert!(a.join("from_b").exists() && b.join("from_a").exists());
    }

    /// A replay buffer travels as one more checked file, which resuming
    /// reads and evaluating does not.
    #[test]
    fn a_replay_buffer_is_read_for_resuming_only() {
        let dir = tempfile::tempdir().unwrap();
        let with_buffer = Checkpoint {
            replay_buffer: Some(vec![7; 32]),
            ..sample()
        };
        let path = save(dir.path(), "checkpoint_000001", &with_buffer).unwrap();
        assert_eq!(load(&path).unwrap(), with_buffer);
        assert_eq!(load_policy(&path).unwrap(), sample());
        fs::write(path.join(REPLAY_BUFFER), [7; 31]).unwrap();
        let error = load(&path).unwrap_err().to_string();
        assert!(error.contains("replay_buffer.bin is truncated"), "{error}");
        assert_eq!(load_policy(&path).unwrap(), sample());
    }

    #[test]
    fn truncated_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = save(dir.path(), "checkpoint_000001", &sample()).unwrap();
        fs::write(path.join(WEIGHTS), [1, 2]).unwrap();
        let error = load(&path).unwrap_err().to_string();
        assert!(error.contains("weights.pt is truncated"), "{error}");
    }
}
