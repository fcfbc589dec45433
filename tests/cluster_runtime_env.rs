//! `oxray train --working-dir DIR --env KEY=VALUE` on a cluster of `oxray
//! start` processes: a Python env that exists only in DIR, and reads a file
//! relative to it, trains on a node whose workers start in that node's copy
//! of DIR with the variables set (the env's spaces read there too, not in
//! the driver);
//! `--exclude` leaves paths out of the copy; a later run with an edited DIR
//! gets a new copy and new workers; the same
//! runtime env handed over in `OXRAY_RUNTIME_ENV` (as the Jobs API does)
//! works alike; stopping the cluster removes the copies.

mod cluster_support;

use cluster_support::{assert_nothing_left, node_sessions, oxray, start_head, start_node};
use std::path::{Path, PathBuf};
use std::process::Output;

/// A Python env whose reward per step is `PROBE_REWARD` times `SCALE`, ten
/// steps an episode; it reads a data file relative to its working directory
/// (which only the copies hold: the driver, which runs elsewhere, never
/// builds it), and each step writes where its module was imported from
/// into the working directory of the process stepping it.
fn probe_env(scale: u32) -> String {
    format!(
        "import os
import gymnasium as gym
import numpy as np

SCALE = {scale}
HERE = os.path.dirname(os.path.abspath(__file__))


class Probe(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, **kwargs):
        with open('probe-data.txt') as f:
            self.data = f.read()

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.zeros(2, np.float32), {{}}

    def step(self, action):
        self.t += 1
        with open('stepped-here', 'w') as f:
            f.write(HERE)
        reward = SCALE * float(os.environ['PROBE_REWARD'])
        return np.zeros(2, np.float32), reward, self.t >= 10, False, {{}}
"
    )
}

/// `oxray train` of the probe env on the cluster; `runtime_env` adds the
/// flags or variables that give it its runtime env.
fn train(
    session: &Path,
    address: &str,
    token: &str,
    runtime_env: impl FnOnce(&mut std::process::Command),
) -> Output {
    let config = session.join("probe.yaml");
    std::fs::write(
        &config,
        "algorithm: PPO
env: {id: 'rtenv_probe:Probe'}
env_runners: {num_env_runners: 1}
training: {train_batch_size: 200, minibatch_size: 100, num_epochs: 1}
stop: {iterations: 1}
",
    )
    .unwrap();
    let mut command = oxray(session);
    command
        .current_dir(session)
        .env("OXRAY_TOKEN", token)
        .env_remove("PYTHONPATH")
        .arg("train")
        .arg(&config)
        .args(["--address", address, "--name", "probe"]);
    runtime_env(&mut command);
    command.output().unwrap()
}

/// `--working-dir DIR --exclude results/ --env PROBE_REWARD=3`.
fn flags(working_dir: &Path) -> impl FnOnce(&mut std::process::Command) + '_ {
    move |command| {
        command.arg("--working-dir").arg(working_dir).args([
            "--exclude",
            "results/",
            "--env",
            "PROBE_REWARD=3",
        ]);
    }
}

/// The copies of working directories a node unpacked.
fn copies_on(session: &Path, node_id: &str) -> Vec<PathBuf> {
    let cache = session.join("executables").join(node_id);
    let mut copies: Vec<PathBuf> = std::fs::read_dir(cache)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "d"))
                .collect()
        })
        .unwrap_or_default();
    copies.sort();
    copies
}

fn assert_trained(output: &Output, return_mean: &str) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let done = stdout
        .lines()
        .find(|l| l.starts_with("done:"))
        .unwrap_or_else(|| panic!("no summary: {stdout}"));
    assert!(
        done.ends_with(&format!("return mean {return_mean}")),
        "{done}"
    );
}

#[test]
fn a_python_env_from_the_working_directory_trains_on_another_node() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    // The head offers no CPU: the EnvRunner runs on the node.
    let (mut head, address, token) = start_head(session, &["--num-cpus", "0"]);
    let (mut node, node_id) = start_node(session, &address, &token, &["--num-cpus", "2"]);
    let sessions = node_sessions(&address, &token);
    let working_dir = tempfile::tempdir().unwrap();
    let module = working_dir.path().join("rtenv_probe.py");
    std::fs::write(&module, probe_env(1)).unwrap();
    std::fs::write(working_dir.path().join("probe-data.txt"), "data").unwrap();
    std::fs::create_dir(working_dir.path().join("results")).unwrap();
    std::fs::write(working_dir.path().join("results/old-run.csv"), "1,2,3").unwrap();
    // What git ignores stays home too, as with Ray's packaging.
    std::fs::write(working_dir.path().join(".gitignore"), ".venv/\n").unwrap();
    std::fs::create_dir(working_dir.path().join(".venv")).unwrap();
    std::fs::write(working_dir.path().join(".venv/big.so"), "not shipped").unwrap();

    // Ten steps of reward 3: the variable reached the worker on the node.
    assert_trained(
        &train(session, &address, &token, flags(working_dir.path())),
        "30.0",
    );
    let copies = copies_on(session, &node_id);
    let [copy] = &copies[..] else {
        panic!("one copy on the node, got {copies:?}");
    };
    let imported_from = std::fs::read_to_string(copy.join("stepped-here"))
        .expect("the EnvRunner stepped in the node's copy");
    assert_eq!(Path::new(&imported_from), copy.as_path());
    assert!(!working_dir.path().join("stepped-here").exists());
    assert!(!copy.join("results").exists(), "excluded, yet shipped");
    assert!(!copy.join(".venv").exists(), "ignored by git, yet shipped");
    assert!(copy.join(".gitignore").is_file());

    // An edited directory is a new copy, run by new workers: none of the
    // first run's, which imported the old module, serves the second.
    std::fs::write(&module, probe_env(2)).unwrap();
    assert_trained(
        &train(session, &address, &token, flags(working_dir.path())),
        "60.0",
    );
    assert_eq!(copies_on(session, &node_id).len(), 2);

    // A job submission hands its driver the runtime env as JSON in
    // OXRAY_RUNTIME_ENV; the workers get it as from the flags.
    let json = format!(
        r#"{{"working_dir": {:?}, "env_vars": {{"PROBE_REWARD": "5"}}}}"#,
        working_dir.path().display().to_string()
    );
    let from_json = train(session, &address, &token, |command| {
        command
            .env("OXRAY_RUNTIME_ENV", json)
            .env("PYTHONPATH", working_dir.path());
    });
    assert_trained(&from_json, "100.0");

    node.stop();
    head.stop();
    assert_nothing_left(session, &sessions);
    assert!(
        copies_on(session, &node_id).is_empty(),
        "copies left behind"
    );
}

#[test]
fn a_working_directory_that_cannot_be_shipped_is_refused_by_name() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let working_dir = tempfile::tempdir().unwrap();
    let fifo = working_dir.path().join("pipe");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let config = session.join("cartpole.yaml");
    std::fs::write(
        &config,
        "algorithm: PPO\nenv: CartPole-v1\nenv_runners: {num_env_runners: 1}\nstop: {iterations: 1}\n",
    )
    .unwrap();
    let output = oxray(session)
        .current_dir(session)
        .arg("train")
        .arg(&config)
        .arg("--working-dir")
        .arg(working_dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&fifo.display().to_string()) && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(!session.join("results").exists(), "no run directory");
}
