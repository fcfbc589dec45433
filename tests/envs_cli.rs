//! `oxray envs` from the outside: output formats, and bad input giving a
//! clear `error: ...` with a non-zero exit status instead of a panic.

use std::process::{Command, Output};

fn oxray(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oxray"))
        .args(args)
        .output()
        .expect("run oxray")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn replay(env: &str, state: &str, actions: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("actions.json");
    std::fs::write(&path, actions).unwrap();
    oxray(&[
        "envs",
        "replay",
        env,
        "--state",
        state,
        "--actions",
        path.to_str().unwrap(),
    ])
}

#[test]
fn list_shows_ids_spaces_and_time_limits() {
    let output = oxray(&["envs", "list"]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    for (id, limit) in [
        ("CartPole-v1", "500"),
        ("MountainCar-v0", "200"),
        ("MountainCarContinuous-v0", "999"),
        ("Pendulum-v1", "200"),
        ("Acrobot-v1", "500"),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} listed"));
        assert!(line.split_whitespace().nth(1) == Some(limit), "{line}");
        assert!(
            line.contains("Box(") && (line.contains("Discrete(") || line.ends_with("float32)")),
            "{line}"
        );
    }
}

#[test]
fn replay_prints_one_json_object_per_step_and_stops_at_the_end() {
    let output = replay("CartPole-v1", "[0, 0, 0.2, 1.0]", "[0, 0, 0, 0, 0, 0]");
    assert!(output.status.success(), "{}", stderr(&output));
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.len() < 6,
        "θ = 0.2 rad, falling and pushed the wrong way, passes 12° within a few steps"
    );
    let last = lines.last().unwrap();
    assert_eq!(last["terminated"], true);
    assert_eq!(last["obs"].as_array().unwrap().len(), 4);
    assert!(lines[..lines.len() - 1]
        .iter()
        .all(|l| l["terminated"] == false && l["reward"] == 1.0));
}

#[test]
fn replay_rejects_bad_input_with_positions() {
    let wrong_state = replay("CartPole-v1", "[0, 0, 0]", "[1]");
    assert_eq!(wrong_state.status.code(), Some(1));
    assert!(stderr(&wrong_state)
        .contains("error: CartPole-v1: invalid state: expected 4 values, got 3"));

    let not_json_state = replay("CartPole-v1", "[0, 0", "[1]");
    assert!(
        stderr(&not_json_state).contains("--state must be a JSON array"),
        "{}",
        stderr(&not_json_state)
    );

    let malformed = replay("CartPole-v1", "[0, 0, 0, 0]", "[1,\n 0,\n 1 1]");
    assert_eq!(malformed.status.code(), Some(1));
    assert!(
        stderr(&malformed).contains("line 3 column"),
        "{}",
        stderr(&malformed)
    );

    let wrong_kind = replay("Pendulum-v1", "[0, 0]", "[[0.5], 0.25, [1, 2]]");
    assert!(
        stderr(&wrong_kind).contains("action 2: expected an array of numbers"),
        "{}",
        stderr(&wrong_kind)
    );

    let out_of_space = replay("Acrobot-v1", "[0, 0, 0, 0]", "[0, 1, 3]");
    let message = stderr(&out_of_space);
    assert!(
        message.contains("step 2")
            && message.contains("Acrobot-v1: action 3 is not in the action space Discrete(3)"),
        "{message}"
    );
    assert!(!message.contains("panicked"));

    let unknown = replay("Acrobat-v1", "[0, 0, 0, 0]", "[0]");
    assert!(
        stderr(&unknown).contains("closest known ids: Acrobot-v1"),
        "{}",
        stderr(&unknown)
    );
}

#[test]
fn bench_prints_a_row_per_env() {
    let output = oxray(&[
        "envs",
        "bench",
        "MountainCar-v0",
        "--num-envs",
        "4",
        "--seconds",
        "0.01",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    let row = text
        .lines()
        .find(|l| l.starts_with("MountainCar-v0"))
        .expect("a row");
    let rates: Vec<f64> = row
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(rates.len() == 2 && rates.iter().all(|r| *r > 0.0), "{row}");
}
