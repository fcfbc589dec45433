//! Parity with the real Gymnasium: trajectories recorded by
//! `scripts/gym_parity.py` (full episodes from set states, random and
//! closed-loop actions, every classic-control env) must be reproduced by the
//! scalar envs, by the vectorized fast path and by `oxray envs replay`:
//! observations within 1e-5, rewards and flags exactly, same episode length.
//!
//! Needs Gymnasium: `OXRAY_PYTHON` (exported by `scripts/env.sh`), else the
//! venv's interpreter at `~/.cache/oxray/venv/bin/python`.

use oxray_envs::{make, make_vec_with, Actions, Env, Space, Value, VecOptions};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;

const OBS_TOLERANCE: f32 = 1e-5;

#[derive(Debug, Deserialize)]
struct Case {
    env_id: String,
    policy: String,
    seed: u64,
    state: Vec<f64>,
    actions: Vec<serde_json::Value>,
    steps: Vec<RecordedStep>,
}

#[derive(Debug, Deserialize, PartialEq)]
struct RecordedStep {
    obs: Vec<f32>,
    reward: f64,
    terminated: bool,
    truncated: bool,
}

fn python() -> PathBuf {
    let candidate = std::env::var_os("OXRAY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            Path::new(&home).join(".cache/oxray/venv/bin/python")
        });
    let works = Command::new(&candidate)
        .args(["-c", "import gymnasium"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        works,
        "the Gymnasium parity tests need a Python with gymnasium: run `. scripts/env.sh` \
         (tried {})",
        candidate.display()
    );
    candidate
}

/// Runs the reference script once per test binary.
fn cases() -> &'static [Case] {
    static CASES: std::sync::OnceLock<Vec<Case>> = std::sync::OnceLock::new();
    CASES.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("cases.json");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gym_parity.py");
        let status = Command::new(python())
            .arg(&script)
            .arg(&out)
            .status()
            .expect("run gym_parity.py");
        assert!(status.success(), "gym_parity.py failed");
        let text = std::fs::read_to_string(&out).expect("cases written");
        serde_json::from_str(&text).expect("cases parse")
    })
}

fn action_values(space: &Space, case: &Case) -> Vec<Value> {
    case.actions
        .iter()
        .map(|a| {
            space
                .value_from_json(a)
                .expect("recorded action fits the space")
        })
        .collect()
}

/// Compares one produced step with Gymnasium's; returns the largest
/// observation difference.
fn check_step(case: &Case, index: usize, path: &str, got: &RecordedStep) -> f32 {
    let want = &case.steps[index];
    let label = format!(
        "{} {} seed {} step {index} ({path})",
        case.env_id, case.policy, case.seed
    );
    assert_eq!(got.obs.len(), want.obs.len(), "{label}: observation length");
    let diff = got
        .obs
        .iter()
        .zip(&want.obs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        diff <= OBS_TOLERANCE,
        "{label}: obs {:?} vs Gymnasium {:?}",
        got.obs,
        want.obs
    );
    assert_eq!(got.reward, want.reward, "{label}: reward");
    assert_eq!(
        (got.terminated, got.truncated),
        (want.terminated, want.truncated),
        "{label}: flags"
    );
    diff
}

#[test]
fn scalar_envs_match_gymnasium_over_full_episodes() {
    let mut worst = std::collections::BTreeMap::new();
    for case in cases() {
        let mut env = make(&case.env_id).unwrap();
        env.reset(Some(0), None).unwrap();
        env.set_state(&case.state).unwrap();
        let actions = action_values(env.action_space(), case);
        let mut steps = 0;
        for (i, action) in actions.iter().enumerate() {
            let step = env.step(action).unwrap();
            let got = RecordedStep {
                obs: step.obs.to_vec(),
                reward: step.reward,
                terminated: step.terminated,
                truncated: step.truncated,
            };
            let diff = check_step(case, i, "scalar", &got);
            let entry = worst.entry(case.env_id.clone()).or_insert(0.0f32);
            *entry = entry.max(diff);
            steps += 1;
            if got.terminated || got.truncated {
                break;
            }
        }
        assert_eq!(
            steps,
            case.steps.len(),
            "{} {}: episode length",
            case.env_id,
            case.policy
        );
    }
    assert_eq!(worst.len(), 5, "every classic-control env was checked");
    println!("largest observation difference per env (scalar path): {worst:?}");
}

#[test]
fn vector_fast_path_matches_gymnasium_over_full_episodes() {
    let mut worst = std::collections::BTreeMap::new();
    for case in cases() {
        let mut env = make_vec_with(&case.env_id, 1, &VecOptions::default()).unwrap();
        env.reset(Some(0)).unwrap();
        env.set_state(0, &case.state).unwrap();
        let actions = action_values(env.single_action_space(), case);
        for (i, action) in actions.iter().enumerate() {
            let continuous: Vec<f32>;
            let batch = match action {
                Value::Int(a) => Actions::Discrete(std::slice::from_ref(a)),
                Value::Floats(a) => {
                    continuous = a.iter().map(|x| *x as f32).collect();
                    Actions::Continuous(&continuous)
                }
                other => panic!("unexpected action {other}"),
            };
            let step = env.step(batch).unwrap();
            let got = RecordedStep {
                obs: step.obs.row(0).to_vec(),
                reward: step.rewards[0],
                terminated: step.terminated[0],
                truncated: step.truncated[0],
            };
            let diff = check_step(case, i, "vector", &got);
            let entry = worst.entry(case.env_id.clone()).or_insert(0.0f32);
            *entry = entry.max(diff);
            if got.terminated || got.truncated {
                assert_eq!(
                    i + 1,
                    case.steps.len(),
                    "{} {}: episode length",
                    case.env_id,
                    case.policy
                );
                break;
            }
        }
    }
    println!("largest observation difference per env (vector path): {worst:?}");
}

#[test]
fn replay_command_prints_gymnasium_trajectories() {
    let dir = tempfile::tempdir().unwrap();
    // The longest episode of each env, through both paths of the CLI.
    let mut longest = std::collections::BTreeMap::<&str, &Case>::new();
    for case in cases() {
        let entry = longest.entry(&case.env_id).or_insert(case);
        if case.steps.len() > entry.steps.len() {
            *entry = case;
        }
    }
    for case in longest.values() {
        let actions = dir.path().join("actions.json");
        std::fs::write(&actions, serde_json::to_string(&case.actions).unwrap()).unwrap();
        let state = serde_json::to_string(&case.state).unwrap();
        for vector in [false, true] {
            let mut command = Command::new(env!("CARGO_BIN_EXE_oxray"));
            command
                .args([
                    "envs",
                    "replay",
                    &case.env_id,
                    "--state",
                    &state,
                    "--actions",
                ])
                .arg(&actions);
            if vector {
                command.arg("--vector");
            }
            let output = command.output().unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let lines: Vec<RecordedStep> = String::from_utf8(output.stdout)
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
                .collect();
            assert_eq!(
                lines.len(),
                case.steps.len(),
                "{}: replay length",
                case.env_id
            );
            for (i, got) in lines.iter().enumerate() {
                check_step(
                    case,
                    i,
                    if vector { "replay --vector" } else { "replay" },
                    got,
                );
            }
        }
    }
}
