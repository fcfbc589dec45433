//! Offline training end to end: `oxray evaluate --output` records a trained
//! PPO policy's episodes, `algorithm: BC` clones the policy from them alone,
//! MARWIL learns the better part of a mixed recording, and CQL and IQL a
//! better policy than the one a SAC run recorded, all judged by evaluation; bad
//! offline data and configs are refused with the file and line or the key
//! named.

mod train_support;

use std::fs;
use std::path::Path;

use train_support::{assert_clean_error, stdout, Scratch, SMALL_PPO};

const BC: &str = "\
algorithm: BC
env: CartPole-v1
seed: 3
offline_data:
  input_: expert
training:
  lr: 1.0e-3
  train_batch_size: 256
evaluation:
  interval: 1
  duration: 10
stop:
  evaluation_return_mean: 450
  iterations: 40
";

const CARTPOLE: &str = "configs/ppo-cartpole.yaml";

/// Trains the shipped PPO config `config` (`extra` added to its arguments,
/// e.g. a stop that leaves it untrained) as run `name` and records
/// `episodes` of its policy under `dir/` (`explore`: sampling its actions).
fn record_ppo(
    scratch: &Scratch,
    config: &str,
    name: &str,
    extra: &[&str],
    episodes: &str,
    explore: bool,
    dir: &str,
) {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join(config);
    let mut train = vec!["train", config.to_str().unwrap(), "--name", name];
    train.extend(extra);
    let trained = scratch.oxray(&train);
    assert!(trained.status.success(), "{trained:?}");
    let run = scratch.runs(name).pop().expect("PPO run");
    let mut evaluate = vec![
        "evaluate",
        run.to_str().unwrap(),
        "--episodes",
        episodes,
        "--output",
        dir,
    ];
    if explore {
        evaluate.push("--explore");
    }
    let recorded = scratch.oxray(&evaluate);
    assert!(recorded.status.success(), "{recorded:?}");
    assert!(stdout(&recorded).contains(&format!("recorded: {dir}/episodes-")));
}

/// Records `episodes` of the solved PPO policy under `expert/`.
fn record_expert(scratch: &Scratch, episodes: &str) {
    record_ppo(scratch, CARTPOLE, "ppo", &[], episodes, false, "expert");
}

/// Twenty recorded episodes teach BC (the shipped config) to balance the
/// pole (an untrained policy lasts about 20 steps) without one env step
/// sampled for training, and its progress counts the recorded steps
/// trained on; the recording has every step of every episode.
#[test]
fn bc_clones_a_recorded_policy_from_its_episodes_alone() {
    let scratch = Scratch::new();
    record_expert(&scratch, "20");
    let files: Vec<_> = fs::read_dir(scratch.path().join("expert"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let lines = fs::read_to_string(&files[0]).unwrap();
    let episodes: Vec<serde_json::Value> = lines
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(episodes.len(), 20);
    for episode in &episodes {
        let steps = episode["obs"].as_array().unwrap().len();
        assert_eq!(episode["actions"].as_array().unwrap().len(), steps);
        assert_eq!(episode["rewards"].as_array().unwrap().len(), steps);
        assert_eq!(episode["final_obs"].as_array().unwrap().len(), 4);
        assert!(episode["terminated"].as_bool().unwrap() || steps == 500);
    }

    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/bc-cartpole.yaml");
    let cloned = scratch.oxray(&[
        "train",
        shipped.to_str().unwrap(),
        "--set",
        "offline_data.input_=expert",
    ]);
    assert!(cloned.status.success(), "{cloned:?}");
    let run = scratch.runs("bc-cartpole").pop().expect("BC run");
    let results: Vec<serde_json::Value> = fs::read_to_string(run.join("result.json"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let last = results.last().unwrap();
    let evaluated = last["evaluation/env_runners/episode_return_mean"]
        .as_f64()
        .unwrap();
    assert!(evaluated >= 450.0, "evaluation return {evaluated}");
    assert_eq!(last["num_env_steps_sampled_lifetime"], 0.0);
    let trained = last["num_env_steps_trained_lifetime"].as_f64().unwrap();
    assert!(trained > 0.0);
    assert!(last["learners/default_policy/policy_loss"]
        .as_f64()
        .unwrap()
        .is_finite());
    // Progress is told in what it trained on, not in env steps it never
    // sampled.
    let out = stdout(&cloned);
    assert!(
        out.contains(&format!("{trained} recorded steps trained")),
        "{out}"
    );
}

/// A Gaussian policy clones as well: fifty episodes of the shipped PPO
/// Pendulum policy (which averages about −200) teach BC to swing the
/// pendulum up, to an evaluation mean of −300 or better (an untrained
/// policy scores about −1,200).
#[test]
fn bc_clones_a_continuous_policy() {
    let scratch = Scratch::new();
    record_ppo(
        &scratch,
        "configs/ppo-pendulum.yaml",
        "ppo",
        &[],
        "50",
        false,
        "expert",
    );
    scratch.write(
        "bc.yaml",
        &BC.replace("CartPole-v1", "Pendulum-v1")
            .replace(
                "evaluation_return_mean: 450",
                "evaluation_return_mean: -300",
            )
            .replace("iterations: 40", "iterations: 100"),
    );
    let cloned = scratch.oxray(&["train", "bc.yaml"]);
    assert!(cloned.status.success(), "{cloned:?}");
    let run = scratch.runs("bc").pop().expect("BC run");
    let result = fs::read_to_string(run.join("result.json")).unwrap();
    let last: serde_json::Value = serde_json::from_str(result.lines().last().unwrap()).unwrap();
    let evaluated = last["evaluation/env_runners/episode_return_mean"]
        .as_f64()
        .unwrap();
    assert!(evaluated >= -300.0, "evaluation return {evaluated}");
}

/// A recording of mixed quality, three solved episodes among a thousand of
/// a barely trained policy (about 6 % of the steps), teaches MARWIL (the
/// shipped config) its good part: advantages weight the solved policy's
/// actions up and the evaluation return reaches 450, while BC on the same
/// recording imitates mostly the poor actions and stays far below (the
/// barely trained policy lasts about 25 steps).
#[test]
fn marwil_learns_the_better_part_of_a_mixed_recording_where_bc_cannot() {
    let scratch = Scratch::new();
    record_ppo(&scratch, CARTPOLE, "ppo", &[], "3", false, "mixed");
    let barely = ["--set", "stop.iterations=1"];
    record_ppo(&scratch, CARTPOLE, "barely", &barely, "1000", true, "mixed");
    assert_eq!(
        fs::read_dir(scratch.path().join("mixed")).unwrap().count(),
        2
    );

    let train = |algorithm: &str| -> Vec<serde_json::Value> {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("configs/{algorithm}-cartpole.yaml"));
        let trained = scratch.oxray(&[
            "train",
            shipped.to_str().unwrap(),
            "--set",
            "offline_data.input_=mixed",
            "--set",
            "stop.iterations=40",
        ]);
        assert!(trained.status.success(), "{trained:?}");
        let run = scratch
            .runs(&format!("{algorithm}-cartpole"))
            .pop()
            .expect("run directory");
        fs::read_to_string(run.join("result.json"))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    };
    let evaluated = |result: &serde_json::Value| {
        result["evaluation/env_runners/episode_return_mean"]
            .as_f64()
            .unwrap()
    };
    let marwil = train("marwil");
    let last = marwil.last().unwrap();
    assert!(evaluated(last) >= 450.0, "MARWIL: {}", evaluated(last));
    assert!(last["learners/default_policy/vf_loss"]
        .as_f64()
        .unwrap()
        .is_finite());
    assert_eq!(last["num_env_steps_sampled_lifetime"], 0.0);
    let best_bc = train("bc").iter().map(evaluated).fold(0.0, f64::max);
    assert!(best_bc < 450.0, "BC reached {best_bc}");
}

/// CQL and IQL improve on what recorded their data: the first 3,000 steps
/// a SAC run samples on Pendulum (its random start, then the policy as it
/// learns; fifteen episodes averaging about −1,170) teach the shipped CQL
/// and IQL configs an evaluation mean of −300 or better, which only a
/// policy that swings the pendulum up from most starts reaches. The CQL run
/// resumes from its checkpoint; `oxray evaluate` plays both.
#[test]
fn cql_and_iql_learn_better_policies_than_the_recording_they_learn_from() {
    let scratch = Scratch::new();
    let shipped = |config: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join(config);
    let sac = shipped("configs/sac-pendulum.yaml");
    let recorded = scratch.oxray(&[
        "train",
        sac.to_str().unwrap(),
        "--set",
        "offline_data.output=recorded",
        "--set",
        "stop.env_steps=3000",
    ]);
    assert!(recorded.status.success(), "{recorded:?}");
    let returns: Vec<f64> = fs::read_dir(scratch.path().join("recorded"))
        .unwrap()
        .flat_map(|file| {
            let text = fs::read_to_string(file.unwrap().path()).unwrap();
            text.lines()
                .map(|line| {
                    let episode: serde_json::Value = serde_json::from_str(line).unwrap();
                    let rewards = episode["rewards"].as_array().unwrap();
                    rewards.iter().map(|r| r.as_f64().unwrap()).sum()
                })
                .collect::<Vec<f64>>()
        })
        .collect();
    let recorded_mean = returns.iter().sum::<f64>() / returns.len() as f64;
    assert!(
        returns.len() >= 10 && recorded_mean < -800.0,
        "{} episodes, mean {recorded_mean}",
        returns.len()
    );

    // Trains the shipped `config` on the recording; its run directory and
    // results, once its best evaluation is −300 or better.
    let learn = |config: &Path, name: &str| {
        let learned = scratch.oxray(&[
            "train",
            config.to_str().unwrap(),
            "--set",
            "offline_data.input_=recorded",
            "--set",
            "stop.iterations=25",
        ]);
        assert!(learned.status.success(), "{learned:?}");
        let run = scratch.runs(name).pop().expect("offline run");
        let results: Vec<serde_json::Value> = fs::read_to_string(run.join("result.json"))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let best = results
            .iter()
            .map(|r| {
                r["evaluation/env_runners/episode_return_mean"]
                    .as_f64()
                    .unwrap()
            })
            .fold(f64::MIN, f64::max);
        assert!(
            best >= -300.0,
            "{name}: best evaluation {best}, recording {recorded_mean}"
        );
        (run, results)
    };
    let cql = shipped("configs/cql-pendulum.yaml");
    let (run, results) = learn(&cql, "cql-pendulum");
    let last = results.last().unwrap();
    assert!(last["learners/default_policy/cql_loss"]
        .as_f64()
        .unwrap()
        .is_finite());
    assert_eq!(last["num_env_steps_sampled_lifetime"], 0.0);

    // The count of gradient steps (bc_iters, target updates: one per step
    // here) resumes with the run; the checkpoint evaluates as a SAC one.
    let iterations = results.len();
    let run_arg = run.to_string_lossy().into_owned();
    let one_more = format!("stop.iterations={}", iterations + 1);
    let resumed = scratch.oxray(&[
        "train",
        cql.to_str().unwrap(),
        "--set",
        "offline_data.input_=recorded",
        "--set",
        &one_more,
        "--set",
        "stop.evaluation_return_mean=0",
        "--resume",
        &run_arg,
    ]);
    assert!(resumed.status.success(), "{resumed:?}");
    let result = fs::read_to_string(run.join("result.json")).unwrap();
    let lines: Vec<&str> = result.lines().collect();
    assert_eq!(lines.len(), iterations + 1);
    let last: serde_json::Value = serde_json::from_str(lines[iterations]).unwrap();
    assert_eq!(
        last["learners/default_policy/num_target_updates"],
        (250 * (iterations + 1)) as f64
    );
    let evaluated = scratch.oxray(&["evaluate", &run_arg, "--episodes", "2"]);
    assert!(evaluated.status.success(), "{evaluated:?}");
    assert!(stdout(&evaluated).contains("Pendulum-v1: 2 episodes"));

    let (run, results) = learn(&shipped("configs/iql-pendulum.yaml"), "iql-pendulum");
    let last = results.last().unwrap();
    for key in ["value_loss", "qf_loss", "policy_loss"] {
        let loss = &last[format!("learners/default_policy/{key}")];
        assert!(loss.as_f64().unwrap().is_finite(), "{key}: {loss}");
    }
    assert_eq!(last["num_env_steps_sampled_lifetime"], 0.0);
    let evaluated = scratch.oxray(&["evaluate", run.to_str().unwrap(), "--episodes", "2"]);
    assert!(evaluated.status.success(), "{evaluated:?}");
    assert!(stdout(&evaluated).contains("Pendulum-v1: 2 episodes"));
}

/// `offline_data.output` records every episode the training EnvRunners
/// finish, each remote runner into a file of its own (written from its own
/// process), as many as the run counts; MARWIL reads them back.
#[test]
fn a_training_run_records_its_episodes_for_offline_algorithms() {
    let scratch = Scratch::new();
    scratch.write("ppo.yaml", SMALL_PPO);
    let trained = scratch.oxray(&[
        "train",
        "ppo.yaml",
        "--set",
        "offline_data.output=recorded",
        "--set",
        "env_runners.num_env_runners=2",
        "--set",
        "env_runners.num_cpus_per_env_runner=0.5",
    ]);
    assert!(trained.status.success(), "{trained:?}");
    let run = scratch.runs("ppo").pop().expect("PPO run");
    let result = fs::read_to_string(run.join("result.json")).unwrap();
    let last: serde_json::Value = serde_json::from_str(result.lines().last().unwrap()).unwrap();
    let files: Vec<_> = fs::read_dir(scratch.path().join("recorded"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    let episodes: usize = files
        .iter()
        .map(|file| fs::read_to_string(file).unwrap().lines().count())
        .sum();
    assert!(episodes > 0);
    assert_eq!(
        episodes as f64,
        last["env_runners/num_episodes_lifetime"].as_f64().unwrap()
    );

    scratch.write(
        "marwil.yaml",
        &BC.replace("algorithm: BC", "algorithm: MARWIL")
            .replace("input_: expert", "input_: recorded"),
    );
    let learned = scratch.oxray(&["train", "marwil.yaml", "--set", "stop.iterations=2"]);
    assert!(learned.status.success(), "{learned:?}");
}

/// Data that does not fit the env is named by file and line; a BC config
/// without data, or another algorithm given some, is refused by key, as is
/// a CQL or IQL config out of range or for a Discrete env; none of them
/// leaves a run directory behind.
#[test]
fn bad_offline_data_and_configs_are_refused_by_name() {
    let scratch = Scratch::new();
    fs::create_dir(scratch.path().join("expert")).unwrap();
    scratch.write(
        "expert/short.jsonl",
        "{\"obs\": [[0.0, 0.0, 0.0, 0.0]], \"actions\": [[1.0]], \"rewards\": [1.0], \
         \"terminated\": true, \"truncated\": false, \"final_obs\": [0.0, 0.0, 0.0, 0.0]}\n\
         {\"obs\": [[0.0, 0.0, 0.0]], \"actions\": [[1.0]], \"rewards\": [1.0], \
         \"terminated\": true, \"truncated\": false, \"final_obs\": [0.0, 0.0, 0.0]}\n",
    );
    scratch.write("bc.yaml", BC);
    assert_clean_error(
        &scratch.oxray(&["train", "bc.yaml"]),
        &[
            "expert/short.jsonl, line 2",
            "step 0's observation has 3 values, the env's have 4",
        ],
    );
    assert_clean_error(
        &scratch.oxray(&["train", "bc.yaml", "--set", "offline_data.input_=missing"]),
        &["missing"],
    );
    scratch.write(
        "no-data.yaml",
        &BC.replace("offline_data:\n  input_: expert\n", ""),
    );
    assert_clean_error(
        &scratch.oxray(&["train", "no-data.yaml"]),
        &[
            "offline_data.input_",
            "BC, MARWIL, CQL and IQL learn from recorded episodes",
        ],
    );
    scratch.write(
        "ppo.yaml",
        "algorithm: PPO\nenv: CartPole-v1\noffline_data: {input_: expert}\n",
    );
    assert_clean_error(
        &scratch.oxray(&["train", "ppo.yaml"]),
        &[
            "offline_data.input_",
            "only the offline algorithms (BC, MARWIL, CQL, IQL)",
        ],
    );
    assert_clean_error(
        &scratch.oxray(&["train", "bc.yaml", "--set", "offline_data.output=again"]),
        &[
            "offline_data.output",
            "BC, MARWIL, CQL and IQL sample nothing to record",
        ],
    );
    scratch.write(
        "cql.yaml",
        &BC.replace("algorithm: BC", "algorithm: CQL")
            .replace("lr: 1.0e-3\n  train_batch_size: 256", "num_actions: 0"),
    );
    assert_clean_error(
        &scratch.oxray(&["train", "cql.yaml"]),
        &["training.num_actions", "must be at least 1"],
    );
    assert_clean_error(
        &scratch.oxray(&["train", "cql.yaml", "--set", "training.num_actions=2"]),
        &[
            "CQL learns continuous (Box) actions",
            "CartPole-v1's are Discrete",
        ],
    );
    scratch.write(
        "iql.yaml",
        &BC.replace("algorithm: BC", "algorithm: IQL")
            .replace("lr: 1.0e-3\n  train_batch_size: 256", "expectile: 1.0"),
    );
    assert_clean_error(
        &scratch.oxray(&["train", "iql.yaml"]),
        &["training.expectile", "must be within (0, 1)"],
    );
    assert_clean_error(
        &scratch.oxray(&["train", "iql.yaml", "--set", "training.expectile=0.7"]),
        &[
            "IQL learns continuous (Box) actions",
            "CartPole-v1's are Discrete",
        ],
    );
    assert!(
        scratch.runs("bc").is_empty()
            && scratch.runs("ppo").is_empty()
            && scratch.runs("cql").is_empty()
            && scratch.runs("iql").is_empty()
    );
}
