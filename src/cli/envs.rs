//! `oxray envs`: list, replay and benchmark environments.
//!
//! `replay` is the debugging tool users compare against Gymnasium (and the
//! parity tests drive it), so its output is one JSON object per step with
//! nothing else on stdout. `bench` measures steps per second of the scalar
//! env (behind the registry's `TimeLimit`) and of the vector env, and can run
//! Gymnasium's equivalent in the same run so the ratio is measured side by
//! side on the same (noisy) machine; `--backend gymnasium` benchmarks the
//! Python env through oxray's bridge against that same Gymnasium loop.

use anyhow::{bail, Context};
use clap::Subcommand;
use oxray_envs::bench::{single_env_rate, vector_env_rate};
use oxray_envs::{
    make, make_vec_with, specs, Actions, AutoresetMode, Backend, Env, EnvConfig, Space, Value,
    VecOptions, VectorEnv,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum EnvsCommand {
    /// List the registered environment ids with their spaces and time limits.
    List,
    /// Reset with seed 0, set the physical state, apply actions; print one
    /// JSON line per step until the episode ends or the actions run out.
    Replay {
        /// Registered id, e.g. CartPole-v1.
        env_id: String,
        /// Physical state as a JSON array, in Gymnasium's `env.unwrapped.state` layout.
        #[arg(long)]
        state: String,
        /// JSON file holding an array of actions (an array per action for Box spaces).
        #[arg(long)]
        actions: PathBuf,
        /// Replay through the vector env (the structure-of-arrays fast path for
        /// the built-in envs) instead of the scalar env.
        #[arg(long)]
        vector: bool,
    },
    /// Steps per second of the single env and of the vector env.
    Bench {
        /// Registered id; all registered envs when omitted.
        env_id: Option<String>,
        /// Sub-envs in the vector env.
        #[arg(long, default_value_t = 16)]
        num_envs: usize,
        /// Seconds spent measuring each figure.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Also measure Gymnasium (OXRAY_PYTHON or the venv of scripts/env.sh) and print the ratios.
        #[arg(long)]
        compare_gymnasium: bool,
        /// `native` steps oxray's Rust env; `gymnasium` steps the Python env
        /// through the bridge (vector figure only).
        #[arg(long, value_enum, default_value = "native")]
        backend: BenchBackend,
        /// Steps Gymnasium runs for its single-env figure.
        #[arg(long, default_value_t = 100_000)]
        gymnasium_steps: u64,
    },
}

pub fn run(command: EnvsCommand) -> anyhow::Result<()> {
    match command {
        EnvsCommand::List => list(),
        EnvsCommand::Replay {
            env_id,
            state,
            actions,
            vector,
        } => replay(&env_id, &state, &actions, vector),
        EnvsCommand::Bench {
            env_id,
            num_envs,
            seconds,
            compare_gymnasium,
            gymnasium_steps,
            backend,
        } => {
            let ids = match (env_id, backend) {
                (Some(id), BenchBackend::Gymnasium) => vec![id],
                (Some(id), BenchBackend::Native) => vec![oxray_envs::spec(&id)?.id],
                (None, _) => oxray_envs::ids(),
            };
            let budget = Duration::from_secs_f64(seconds.max(0.01));
            let gymnasium = compare_gymnasium.then_some(gymnasium_steps);
            bench(&ids, num_envs, budget, gymnasium, backend)
        }
    }
}

fn list() -> anyhow::Result<()> {
    println!(
        "{:<26} {:<12} {:<60} action space",
        "id", "time limit", "observation space"
    );
    for spec in specs() {
        let env = (spec.entry_point)(&Default::default())?;
        let limit = spec
            .max_episode_steps
            .map_or("none".to_string(), |s| s.to_string());
        println!(
            "{:<26} {:<12} {:<60} {}",
            spec.id,
            limit,
            env.observation_space().to_string(),
            env.action_space()
        );
    }
    Ok(())
}

fn replay(env_id: &str, state: &str, actions_path: &Path, vector: bool) -> anyhow::Result<()> {
    let mut replayer = Replayer::new(env_id, vector)?;
    let state: Vec<f64> = serde_json::from_str(state)
        .with_context(|| format!("--state must be a JSON array of numbers, got `{state}`"))?;
    let text = std::fs::read_to_string(actions_path)
        .with_context(|| format!("cannot read actions file {}", actions_path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("actions file {}", actions_path.display()))?;
    let Some(items) = json.as_array() else {
        bail!(
            "actions file {}: expected a JSON array of actions",
            actions_path.display()
        );
    };
    let space = replayer.action_space().clone();
    let actions = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            space.value_from_json(item).map_err(|e| {
                anyhow::anyhow!("actions file {}: action {i}: {e}", actions_path.display())
            })
        })
        .collect::<anyhow::Result<Vec<Value>>>()?;
    replayer.set_state(&state)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (i, action) in actions.iter().enumerate() {
        let step = replayer.step(action).with_context(|| format!("step {i}"))?;
        writeln!(
            out,
            r#"{{"obs":[{}],"reward":{},"terminated":{},"truncated":{}}}"#,
            step.obs
                .iter()
                .map(|x| json_number(f64::from(*x), format!("{x:?}")))
                .collect::<Vec<_>>()
                .join(","),
            json_number(step.reward, format!("{:?}", step.reward)),
            step.terminated,
            step.truncated
        )?;
        if step.terminated || step.truncated {
            break;
        }
    }
    out.flush()?;
    Ok(())
}

/// `repr` (the shortest round-tripping form of the value in its own float
/// type), or `null` where JSON has no number for it.
fn json_number(value: f64, repr: String) -> String {
    if value.is_finite() {
        repr
    } else {
        "null".into()
    }
}

/// One replayed step, owned so the scalar and vector paths look alike.
struct ReplayStep {
    obs: Vec<f32>,
    reward: f64,
    terminated: bool,
    truncated: bool,
}

/// The env a replay drives: the registry's scalar env or a one-copy vector env.
enum Replayer {
    Scalar(Box<dyn Env>),
    Vector(Box<dyn VectorEnv>),
}

impl Replayer {
    fn new(env_id: &str, vector: bool) -> anyhow::Result<Self> {
        Ok(if vector {
            let mut env = make_vec_with(env_id, 1, &VecOptions::default())?;
            env.reset(Some(0))?;
            Replayer::Vector(env)
        } else {
            let mut env = make(env_id)?;
            env.reset(Some(0), None)?;
            Replayer::Scalar(env)
        })
    }

    fn action_space(&self) -> &Space {
        match self {
            Replayer::Scalar(env) => env.action_space(),
            Replayer::Vector(env) => env.single_action_space(),
        }
    }

    fn set_state(&mut self, state: &[f64]) -> anyhow::Result<()> {
        match self {
            Replayer::Scalar(env) => env.set_state(state)?,
            Replayer::Vector(env) => env.set_state(0, state)?,
        }
        Ok(())
    }

    fn step(&mut self, action: &Value) -> anyhow::Result<ReplayStep> {
        match self {
            Replayer::Scalar(env) => {
                let step = env.step(action)?;
                Ok(ReplayStep {
                    obs: step.obs.to_vec(),
                    reward: step.reward,
                    terminated: step.terminated,
                    truncated: step.truncated,
                })
            }
            Replayer::Vector(env) => {
                let continuous: Vec<f32>;
                let actions = match action {
                    Value::Int(index) => Actions::Discrete(std::slice::from_ref(index)),
                    Value::Floats(values) => {
                        continuous = values.iter().map(|x| *x as f32).collect();
                        Actions::Continuous(&continuous)
                    }
                    other => bail!("action {other} has no vector form"),
                };
                let step = env.step(actions)?;
                Ok(ReplayStep {
                    obs: step.obs.row(0).to_vec(),
                    reward: step.rewards[0],
                    terminated: step.terminated[0],
                    truncated: step.truncated[0],
                })
            }
        }
    }
}

/// `OXRAY_PYTHON`, else the interpreter of the venv scripts/env.sh creates.
fn gymnasium_python() -> Option<PathBuf> {
    let python = std::env::var_os("OXRAY_PYTHON")
        .map(PathBuf::from)
        .or_else(|| Some(super::python::cached_venv().ok()?.join("bin/python")))?;
    python.exists().then_some(python)
}

/// Gymnasium's `(single, vector)` steps per second, from scripts/gym_bench.py.
fn gymnasium_rates(id: &str, num_envs: usize, steps: u64) -> anyhow::Result<(f64, f64)> {
    let python = gymnasium_python().context(
        "--compare-gymnasium needs a Python with gymnasium: source scripts/env.sh (sets OXRAY_PYTHON)",
    )?;
    let script = include_str!("../../scripts/gym_bench.py");
    let output = std::process::Command::new(&python)
        .args([
            "-c",
            script,
            "--env",
            id,
            "--num-envs",
            &num_envs.to_string(),
            "--steps",
            &steps.to_string(),
        ])
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "Gymnasium benchmark failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let rates: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("Gymnasium benchmark output")?;
    match (rates["single"].as_f64(), rates["vector"].as_f64()) {
        (Some(single), Some(vector)) => Ok((single, vector)),
        _ => bail!("unexpected Gymnasium benchmark output: {rates}"),
    }
}

/// Which implementation `oxray envs bench` steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchBackend {
    Native,
    Gymnasium,
}

fn bench(
    ids: &[String],
    num_envs: usize,
    budget: Duration,
    gymnasium_steps: Option<u64>,
    backend: BenchBackend,
) -> anyhow::Result<()> {
    let vector_header = format!("vector x{num_envs} steps/s");
    print!(
        "{:<26} {:>18} {:>24}",
        "env", "single steps/s", vector_header
    );
    if gymnasium_steps.is_some() {
        print!(
            " {:>16} {:>16} {:>10} {:>10}",
            "gym single", "gym vector", "x single", "x vector"
        );
    }
    println!();
    for id in ids {
        let (single, vector) = match backend {
            BenchBackend::Native => {
                let envs = make_vec_with(id, num_envs, &VecOptions::default())?;
                (single_env_rate(id, budget)?, vector_env_rate(envs, budget)?)
            }
            BenchBackend::Gymnasium => {
                let config = EnvConfig {
                    backend: Backend::Gymnasium,
                    ..EnvConfig::new(id.as_str())
                };
                // Gymnasium's default autoreset, as the SyncVectorEnv it is compared with.
                let envs = oxray_gym::make_vec(&config, num_envs, AutoresetMode::NextStep)?;
                (f64::NAN, vector_env_rate(envs, budget)?)
            }
        };
        let single_column = if single.is_nan() {
            "-".to_string()
        } else {
            format!("{single:.0}")
        };
        print!("{id:<26} {single_column:>18} {vector:>24.0}");
        if let Some(steps) = gymnasium_steps {
            let (gym_single, gym_vector) = gymnasium_rates(id, num_envs, steps)?;
            print!(
                " {gym_single:>16.0} {gym_vector:>16.0} {:>10.0} {:>10.0}",
                single / gym_single,
                vector / gym_vector
            );
        }
        println!();
    }
    Ok(())
}
