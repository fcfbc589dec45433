//! Helpers shared by the `train_*` integration tests: a small PPO config, and
//! running the `oxray` binary in a scratch directory.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// PPO on CartPole with a small batch, so a few iterations take a second.
pub const SMALL_PPO: &str = "\
algorithm: PPO
env: CartPole-v1
seed: 1
env_runners:
  num_envs_per_env_runner: 8
training:
  lr: 1.0e-3
  train_batch_size: 256
  minibatch_size: 128
  num_epochs: 2
  use_kl_loss: false
stop:
  iterations: 2
";

pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents).expect("write file");
        path
    }

    /// Runs `oxray ARGS` with the scratch directory as working directory.
    pub fn oxray(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_oxray"))
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("run oxray")
    }

    /// The run directories under `results/NAME/`.
    pub fn runs(&self, name: &str) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.path().join("results").join(name)) else {
            return Vec::new();
        };
        let mut runs: Vec<PathBuf> = entries.map(|e| e.expect("dir entry").path()).collect();
        runs.sort();
        runs
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the command failed with exactly one `error: ...` line containing
/// every one of `needles`, and no panic.
pub fn assert_clean_error(output: &Output, needles: &[&str]) {
    let err = stderr(output);
    assert!(
        !output.status.success(),
        "expected failure, got success: {err}"
    );
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for needle in needles {
        assert!(lines[0].contains(needle), "`{needle}` not in: {err}");
    }
    // An error's cause is told once, not again by each layer around it.
    let clauses: Vec<&str> = lines[0].split(": ").filter(|c| c.len() > 10).collect();
    for (i, clause) in clauses.iter().enumerate() {
        assert!(!clauses[i + 1..].contains(clause), "said twice: {err}");
    }
}
