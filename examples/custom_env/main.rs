//! Train PPO on your own Rust env, sampled by two remote EnvRunners.
//!
//! `grid_world.rs` defines `GridWorld-v0` and registers it with
//! `#[oxray_envs::register_env]`; the EnvRunner workers are this very binary
//! re-executed, so they find the env in the same link-time table as the
//! driver. Training stops once the mean return reaches the env's target (a
//! random walk scores far below it); the program fails if it never does.
//!
//! Run with `cargo run --release --example custom_env`.

mod grid_world;

use std::path::PathBuf;

use oxray_rl::metrics::EPISODE_RETURN_MEAN;
use oxray_trainers::run::{run, RunEvent, RunOptions};
use oxray_trainers::ExperimentConfig;

const TARGET_RETURN: f64 = 0.8;

const CONFIG: &str = include_str!("ppo-gridworld.yaml");

fn main() -> anyhow::Result<()> {
    let config = ExperimentConfig::parse(CONFIG, "ppo-gridworld.yaml", &[])?;
    oxray_core::init(oxray_core::InitOptions::default())?;
    let results_dir = std::env::temp_dir().join(format!("oxray-custom-env-{}", std::process::id()));
    let outcome = run(
        RunOptions {
            config,
            name: "custom-env".into(),
            results_dir: PathBuf::from(&results_dir),
            resume: None,
        },
        |event| match event {
            RunEvent::Result(result) => println!(
                "iteration {:>3}: return mean {:.3}",
                result["training_iteration"],
                result.get(EPISODE_RETURN_MEAN).copied().unwrap_or(f64::NAN)
            ),
            RunEvent::Warning(warning) => eprintln!("warning: {warning}"),
            // Only a search's population based training clones runs.
            RunEvent::Exploited(exploit) => println!("{}", exploit.description),
        },
    );
    oxray_core::shutdown();
    let _ = std::fs::remove_dir_all(&results_dir);
    let summary = outcome?;
    let reached = summary
        .last_result
        .get(EPISODE_RETURN_MEAN)
        .copied()
        .unwrap_or(f64::NAN);
    anyhow::ensure!(
        reached >= TARGET_RETURN,
        "GridWorld-v0 reached a mean return of {reached:.3}, short of {TARGET_RETURN}"
    );
    println!(
        "GridWorld-v0 solved: mean return {reached:.3} ({})",
        summary.stop_reason
    );
    Ok(())
}
