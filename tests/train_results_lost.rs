//! Losing the result files is no reason to lose the training: removing the
//! run directory while `oxray train` writes to it must leave the training
//! running to its stop criterion, with exactly one warning that says what was
//! lost, and no panic.

mod train_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use train_support::{Scratch, SMALL_PPO};

const ITERATIONS: u64 = 100;

#[test]
fn removing_the_run_directory_mid_training_warns_once_and_training_finishes() {
    let scratch = Scratch::new();
    scratch.write("ppo.yaml", SMALL_PPO);
    let child = Command::new(env!("CARGO_BIN_EXE_oxray"))
        .args(["train", "ppo.yaml", "--name", "lost", "--set"])
        .arg(format!("stop.iterations={ITERATIONS}"))
        .current_dir(scratch.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run oxray train");

    // Wait for the first result row, then take the directory away.
    let deadline = Instant::now() + Duration::from_secs(120);
    let run_dir = loop {
        let written = scratch.runs("lost").pop().filter(|dir| {
            std::fs::read_to_string(dir.join("progress.csv"))
                .is_ok_and(|csv| csv.lines().count() >= 2)
        });
        if let Some(dir) = written {
            break dir;
        }
        assert!(Instant::now() < deadline, "no result row within 120 s");
        std::thread::sleep(Duration::from_millis(5));
    };
    std::fs::remove_dir_all(&run_dir).unwrap();

    let output = child.wait_with_output().unwrap();
    let stdout = train_support::stdout(&output);
    let stderr = train_support::stderr(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stdout.contains(&format!("training_iteration {ITERATIONS} >= {ITERATIONS}")),
        "training did not run to its stop criterion: {stdout}"
    );
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("warning"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    let warning = warnings[0];
    assert!(warning.starts_with("warning: cannot write "), "{warning}");
    let relative = run_dir.strip_prefix(scratch.path()).unwrap();
    assert!(
        warning.contains(&relative.display().to_string()),
        "{warning}"
    );
    assert!(warning.contains("was removed"), "{warning}");
    assert!(warning.contains("training goes on"), "{warning}");
}
