//! A short learning run with a fixed seed: PPO on CartPole must lift the
//! mean return above 150, in the driver and with EnvRunner and Learner actors.
//! Wall time is not asserted here; `scripts/bench-ppo.sh` measures it.

mod train_support;

use oxray_rl::metrics::EPISODE_RETURN_MEAN;
use oxray_trainers::run::{run, RunOptions};
use oxray_trainers::ExperimentConfig;

fn train_until_150(overrides: &[&str]) -> f64 {
    let source = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/ppo-cartpole.yaml"
    ))
    .unwrap();
    let mut all = vec![
        "seed=3",
        "stop.episode_return_mean=150",
        "stop.env_steps=60000",
    ];
    all.extend_from_slice(overrides);
    let overrides: Vec<String> = all.iter().map(|s| s.to_string()).collect();
    let config = ExperimentConfig::parse(&source, "ppo-cartpole.yaml", &overrides).unwrap();
    let results = tempfile::tempdir().unwrap();
    let summary = run(
        RunOptions {
            config,
            name: "learning".into(),
            results_dir: results.path().to_path_buf(),
            resume: None,
        },
        |_| {},
    )
    .unwrap();
    summary.last_result[EPISODE_RETURN_MEAN]
}

#[test]
fn ppo_cartpole_return_rises_above_150_in_the_driver() {
    let return_mean = train_until_150(&[]);
    assert!(return_mean >= 150.0, "return mean {return_mean}");
}

#[test]
fn ppo_cartpole_learns_with_env_runner_and_learner_actors() {
    oxray_core::init(oxray_core::InitOptions::default().num_cpus(2.0)).unwrap();
    let return_mean = train_until_150(&[
        "env_runners.num_env_runners=2",
        "env_runners.num_envs_per_env_runner=8",
        "env_runners.num_cpus_per_env_runner=0.5",
        "learners.num_learners=1",
    ]);
    oxray_core::shutdown();
    assert!(return_mean >= 150.0, "return mean {return_mean}");
}
