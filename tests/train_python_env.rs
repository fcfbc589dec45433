//! `oxray train` on Python Gymnasium envs through the bridge: a continuous
//! classic-control env with a time limit, MiniGrid's Dict observations, and
//! a user's env that raises in `step` — the error reaches the log with its
//! Python traceback and training goes on with a replaced EnvRunner.

mod train_support;

use std::process::{Command, Output};
use train_support::{stderr, stdout, Scratch};

/// `tests/python` of the oxray-gym crate holds the `oxray_test_envs` module.
const TEST_ENVS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/gym/tests/python");

fn train(scratch: &Scratch, config: &str) -> Output {
    let path = scratch.write("config.yaml", config);
    Command::new(env!("CARGO_BIN_EXE_oxray"))
        .args(["train", path.to_str().unwrap(), "--name", "py"])
        .current_dir(scratch.path())
        .env("PYTHONPATH", TEST_ENVS)
        .output()
        .expect("run oxray")
}

/// The last line of the run's result.json.
fn last_result(scratch: &Scratch) -> serde_json::Value {
    let run = scratch.runs("py").pop().expect("a run directory");
    let results = std::fs::read_to_string(run.join("result.json")).unwrap();
    serde_json::from_str(results.lines().last().expect("a result")).unwrap()
}

fn assert_trained(output: &Output, iterations: u64) {
    assert!(
        output.status.success(),
        "{}\n{}",
        stdout(output),
        stderr(output)
    );
    assert!(
        stdout(output).contains(&format!("after {iterations} iterations")),
        "{}",
        stdout(output)
    );
}

#[test]
fn mountain_car_continuous_trains_through_the_bridge_with_its_time_limit() {
    let scratch = Scratch::new();
    let output = train(
        &scratch,
        "algorithm: PPO
env: {id: MountainCarContinuous-v0, backend: gymnasium, max_episode_steps: 100}
env_runners: {num_envs_per_env_runner: 4}
training: {train_batch_size: 800, minibatch_size: 200, num_epochs: 2}
stop: {iterations: 2}
",
    );
    assert_trained(&output, 2);
    let result = last_result(&scratch);
    assert_eq!(result["env_runners/episode_len_mean"], 100.0);
    assert_eq!(result["num_env_steps_sampled_lifetime"], 1600.0);
}

#[test]
fn minigrid_dict_observations_train_through_the_bridge() {
    let scratch = Scratch::new();
    let output = train(
        &scratch,
        "algorithm: PPO
env:
  id: MiniGrid-Empty-5x5-v0
  wrappers: [{filter_observation: [direction, image]}]
env_runners: {num_envs_per_env_runner: 2}
training: {train_batch_size: 512, minibatch_size: 128, num_epochs: 2}
stop: {iterations: 2}
",
    );
    assert_trained(&output, 2);
    let result = last_result(&scratch);
    let length = result["env_runners/episode_len_mean"].as_f64().unwrap();
    assert!(length > 0.0 && length <= 100.0, "{result}");
}

#[test]
fn a_python_env_that_raises_gives_its_traceback_and_training_continues() {
    let scratch = Scratch::new();
    let marker = scratch.path().join("raised-once");
    let output = train(
        &scratch,
        &format!(
            "algorithm: PPO
env:
  id: oxray_test_envs:CountingEnv
  config: {{fail_at: 70, marker: {}}}
env_runners: {{num_env_runners: 2, num_envs_per_env_runner: 2, num_cpus_per_env_runner: 0.5}}
training: {{train_batch_size: 256, minibatch_size: 128, num_epochs: 1}}
stop: {{iterations: 6}}
",
            marker.display()
        ),
    );
    assert_trained(&output, 6);
    assert!(marker.exists(), "the env never raised");
    let log = stderr(&output);
    assert!(log.contains("failed and is replaced"), "{log}");
    assert!(
        log.contains("oxray_test_envs:CountingEnv: Python raised in step: RuntimeError: sensor failure at step 70"),
        "{log}"
    );
    assert!(log.contains("Traceback (most recent call last)"), "{log}");
    assert!(log.contains("oxray_test_envs.py"), "{log}");
    let result = last_result(&scratch);
    assert!(
        result["fault_tolerance/num_remote_env_runner_restarts"].as_f64() >= Some(1.0),
        "{result}"
    );
    assert_eq!(result["fault_tolerance/num_healthy_env_runners"], 2.0);
}
