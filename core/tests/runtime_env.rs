//! A job's runtime env on the embedded cluster: its workers, the prestarted
//! ones included, start in one copy of the working directory (never the
//! directory itself), with its variables set and the copy first on
//! `PYTHONPATH`, while the driver stays where it is; the copy goes with the
//! cluster.

use oxray_core::{remote, InitOptions, RuntimeEnv};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What a worker sees: its working directory, a file read relative to it,
/// a job variable, and its PYTHONPATH.
#[remote]
fn surroundings() -> (String, String, String, String) {
    let cwd = std::env::current_dir().unwrap().display().to_string();
    let greeting = std::fs::read_to_string("data/greeting.txt").unwrap_or_default();
    // A file written here lands in the worker's copy, not in the job's
    // directory.
    std::fs::write("written-by-a-task", "x").unwrap();
    let seed = std::env::var("JOB_SEED").unwrap_or_default();
    let python_path = std::env::var("PYTHONPATH").unwrap_or_default();
    (cwd, greeting, seed, python_path)
}

#[test]
fn workers_start_in_one_copy_of_the_working_directory_with_the_jobs_variables() {
    let working_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(working_dir.path().join("data")).unwrap();
    std::fs::write(
        working_dir.path().join("data/greeting.txt"),
        "hello from the job",
    )
    .unwrap();
    oxray_core::init(
        InitOptions::default().num_cpus(2.0).runtime_env(
            RuntimeEnv::default()
                .working_dir(working_dir.path())
                .env_var("JOB_SEED", "7"),
        ),
    )
    .unwrap();
    let driver_cwd = std::env::current_dir().unwrap();

    let refs: Vec<_> = (0..6).map(|_| surroundings::remote()).collect();
    let seen = oxray_core::get_all(&refs).unwrap();
    let copies: BTreeSet<&String> = seen.iter().map(|(cwd, ..)| cwd).collect();
    assert_eq!(copies.len(), 1, "one copy for every worker: {copies:?}");
    let (cwd, greeting, seed, python_path) = &seen[0];
    let copy = PathBuf::from(cwd);
    assert_eq!(greeting, "hello from the job");
    assert_eq!(seed, "7");
    assert_ne!(copy, working_dir.path(), "a copy, not the directory");
    assert_eq!(
        python_path.split(':').next(),
        Some(cwd.as_str()),
        "the copy is first on PYTHONPATH"
    );
    assert!(copy.join("written-by-a-task").exists());
    assert!(!working_dir.path().join("written-by-a-task").exists());
    assert_eq!(std::env::current_dir().unwrap(), driver_cwd);
    assert!(
        std::env::var("JOB_SEED").is_err(),
        "the driver's own environment is untouched"
    );

    oxray_core::shutdown();
    assert!(!Path::new(&copy).exists(), "the copy outlived the cluster");
}
