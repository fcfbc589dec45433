//! Evaluation during training (`evaluation:`): every `interval` iterations
//! the current policy plays `duration` episodes on its own EnvRunners, and
//! RLlib's `evaluation/env_runners/...` results appear in progress.csv,
//! result.json and TensorBoard for exactly those iterations, while the
//! training counters count only the training runners' steps.

mod train_support;

use std::fs;

use train_support::{assert_clean_error, Scratch, SMALL_PPO};

const EVALUATION: &str = "\
evaluation:
  interval: 2
  duration: 5
  duration_unit: episodes
  explore: false
  num_env_runners: 1
";

const RETURN_MEAN: &str = "evaluation/env_runners/episode_return_mean";

#[test]
fn evaluation_results_appear_every_interval_in_every_result_file() {
    let scratch = Scratch::new();
    scratch.write("eval.yaml", &format!("{SMALL_PPO}{EVALUATION}"));
    let out = scratch.oxray(&["train", "eval.yaml", "--set", "stop.iterations=4"]);
    assert!(out.status.success(), "{out:?}");
    let run = scratch.runs("eval").pop().expect("run directory");

    let csv = fs::read_to_string(run.join("progress.csv")).unwrap();
    let mut rows = csv.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    let (returns, lengths, episodes) = (
        column(RETURN_MEAN),
        column("evaluation/env_runners/episode_len_mean"),
        column("evaluation/env_runners/num_episodes"),
    );
    for (i, row) in rows.enumerate() {
        let cells: Vec<&str> = row.split(',').collect();
        if (i + 1) % 2 == 1 {
            assert_eq!(cells[returns], "", "iteration {} evaluated", i + 1);
            continue;
        }
        assert_eq!(cells[episodes], "5", "iteration {}", i + 1);
        let mean: f64 = cells[returns].parse().unwrap();
        // CartPole pays 1 per step: whole episodes return their length.
        let length: f64 = cells[lengths].parse().unwrap();
        assert!(mean >= 8.0 && (mean - length).abs() < 1e-9, "{row}");
    }

    let results: Vec<serde_json::Value> = fs::read_to_string(run.join("result.json"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 4);
    let evaluated: Vec<bool> = results.iter().map(|r| r[RETURN_MEAN].is_number()).collect();
    assert_eq!(evaluated, [false, true, false, true]);
    // The evaluation episodes' steps are not training steps: the lifetime
    // counter grows by exactly one train batch (256) per iteration.
    let sampled: Vec<f64> = results
        .iter()
        .map(|r| r["num_env_steps_sampled_lifetime"].as_f64().unwrap())
        .collect();
    assert_eq!(sampled, [256.0, 512.0, 768.0, 1024.0]);

    let events = fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("tfevents"))
        .expect("event file");
    let bytes = fs::read(events).unwrap();
    let tag = RETURN_MEAN.as_bytes();
    let summaries = bytes.windows(tag.len()).filter(|w| *w == tag).count();
    assert_eq!(summaries, 2, "one scalar per evaluated iteration");
}

#[test]
fn evaluation_section_errors_name_key_and_line() {
    let scratch = Scratch::new();
    let typo = EVALUATION.replace("  interval: 2", "  intervall: 2");
    scratch.write("typo.yaml", &format!("{SMALL_PPO}{typo}"));
    assert_clean_error(
        &scratch.oxray(&["train", "typo.yaml"]),
        &["unknown field `intervall`", "line 15"],
    );
    let unit = EVALUATION.replace("unit: episodes", "unit: hours");
    scratch.write("unit.yaml", &format!("{SMALL_PPO}{unit}"));
    assert_clean_error(
        &scratch.oxray(&["train", "unit.yaml"]),
        &["evaluation.duration_unit", "hours", "line 17"],
    );
    let zero = EVALUATION.replace("duration: 5", "duration: 0");
    scratch.write("zero.yaml", &format!("{SMALL_PPO}{zero}"));
    assert_clean_error(
        &scratch.oxray(&["train", "zero.yaml"]),
        &["evaluation.duration: must be at least 1 at line 16"],
    );
    assert!(scratch.runs("typo").is_empty() && scratch.runs("zero").is_empty());
}
