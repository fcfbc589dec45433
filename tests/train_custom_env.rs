//! A user's Rust env registered with `#[register_env]` trains with remote
//! EnvRunners: the workers (this test binary re-executed) build it from the
//! link-time table, which `oxray_envs::register` at run time could not reach.

#[path = "../examples/custom_env/grid_world.rs"]
mod grid_world;

use oxray::core::{self as oxray_core, InitOptions};
use oxray_rl::metrics::EPISODE_RETURN_MEAN;
use oxray_trainers::run::{run, RunOptions};
use oxray_trainers::ExperimentConfig;

#[test]
fn a_registered_rust_env_trains_on_two_remote_env_runners() {
    let config = ExperimentConfig::parse(
        include_str!("../examples/custom_env/ppo-gridworld.yaml"),
        "ppo-gridworld.yaml",
        &[],
    )
    .unwrap();
    assert_eq!(config.env_runners.num_env_runners, 2);
    let spec = oxray_envs::spec("GridWorld-v0").expect("registered at link time");
    assert_eq!(spec.max_episode_steps, Some(50));
    let results = tempfile::tempdir().unwrap();
    oxray_core::init(InitOptions::default()).unwrap();
    let outcome = run(
        RunOptions {
            config,
            name: "gridworld".into(),
            results_dir: results.path().to_path_buf(),
            resume: None,
        },
        |_| {},
    );
    oxray_core::shutdown();
    let summary = outcome.unwrap();
    let result = &summary.last_result;
    assert_eq!(result["fault_tolerance/num_healthy_env_runners"], 2.0);
    // A random walk averages well below zero; the shortest path returns 0.93.
    assert!(
        result[EPISODE_RETURN_MEAN] >= 0.8,
        "return mean {} after {} iterations",
        result[EPISODE_RETURN_MEAN],
        result["training_iteration"]
    );
}
