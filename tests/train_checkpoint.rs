//! Checkpoints: a restored Learner gives identical action distributions and
//! continues Adam exactly; `oxray train --resume` continues counters, files
//! and the TensorBoard curve; `num_to_keep` removes old checkpoints; damaged
//! or foreign checkpoints are refused; a failed export keeps an earlier
//! module.

mod train_support;

use std::fs;
use std::path::{Path, PathBuf};

use oxray_rl::checkpoint::{self, Checkpoint};
use oxray_rl::learner::{Learner, LearnerConfig};
use oxray_rl::rl_module::{ActionSpace, ActorCritic, ModelConfig, ModuleKind, ModuleSpec};
use tch::{Kind, Tensor};
use train_support::{assert_clean_error, stdout, Scratch, SMALL_PPO};

fn learner_config(action_space: ActionSpace) -> LearnerConfig {
    LearnerConfig {
        module: ModuleSpec {
            observation_shape: vec![3],
            observation_dtype: Default::default(),
            action_space,
            model: ModelConfig::default(),
            kind: ModuleKind::ActorCritic,
        },
        lr: 1e-2,
        grad_clip: Some(1.0),
        use_gpu: false,
        seed: 7,
    }
}

/// A loss that moves every parameter: mean log-prob of fixed actions plus
/// the squared values.
fn step(learner: &mut Learner<ActorCritic>, obs: &Tensor) {
    let (dist, values) = learner.module().forward(obs);
    let actions = Tensor::zeros([obs.size()[0], 1], (Kind::Float, tch::Device::Cpu));
    let loss = -dist.log_prob(&actions).mean(Kind::Float) + values.square().mean(Kind::Float);
    learner
        .apply_loss(&loss)
        .expect("a Learner outside any group steps");
}

fn assert_same_policy(a: &Learner<ActorCritic>, b: &Learner<ActorCritic>, obs: &Tensor) {
    let (da, va) = a.module().forward(obs);
    let (db, vb) = b.module().forward(obs);
    let actions = Tensor::from_slice(&[0.3f32, -0.2, 0.1, 1.0]).view([4, 1]);
    for (x, y) in [
        (da.log_prob(&actions), db.log_prob(&actions)),
        (da.entropy(), db.entropy()),
        (va, vb),
    ] {
        assert!(x.equal(&y), "{x} != {y}");
    }
    assert_eq!(da.kl(&db).abs().max().double_value(&[]), 0.0);
}

#[test]
fn restored_learner_matches_and_continues_identically() {
    let obs = Tensor::from_slice(&[
        0.1f32, -0.4, 0.9, 1.0, 0.0, -1.0, 0.3, 0.3, 0.3, -2.0, 2.0, 0.5,
    ])
    .view([4, 3]);
    let spaces = [
        ActionSpace::Discrete { n: 3 },
        ActionSpace::Box {
            low: vec![-2.0],
            high: vec![2.0],
        },
    ];
    for space in spaces {
        let config = learner_config(space);
        let mut original = Learner::<ActorCritic>::new(&config);
        for _ in 0..3 {
            step(&mut original, &obs);
        }
        let dir = tempfile::tempdir().unwrap();
        checkpoint::save(
            dir.path(),
            "checkpoint_000003",
            &Checkpoint {
                algorithm: "PPO".into(),
                config: serde_json::json!({}),
                state: serde_json::json!({}),
                learner: original.state().unwrap(),
                replay_buffer: None,
            },
        )
        .unwrap();
        let mut restored = Learner::<ActorCritic>::new(&LearnerConfig { seed: 99, ..config });
        restored
            .set_state(&checkpoint::load(dir.path()).unwrap().learner)
            .unwrap();
        assert_same_policy(&original, &restored, &obs);
        // Same optimizer moments: the next step lands on the same weights.
        step(&mut original, &obs);
        step(&mut restored, &obs);
        assert_same_policy(&original, &restored, &obs);
    }
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn resume_continues_counters_files_and_curve() {
    let scratch = Scratch::new();
    scratch.write("small.yaml", SMALL_PPO);
    let first = scratch.oxray(&["train", "small.yaml"]);
    assert!(first.status.success(), "{first:?}");
    let run = scratch.runs("small").pop().expect("run directory");
    assert!(stdout(&first).contains(&run.file_name().unwrap().to_string_lossy().into_owned()));
    assert!(run.join("params.yaml").exists());
    assert!(run
        .join("checkpoints/checkpoint_000002/checkpoint.json")
        .exists());

    let run_arg = run.to_string_lossy().into_owned();
    let second = scratch.oxray(&[
        "train",
        "small.yaml",
        "--set",
        "stop.iterations=4",
        "--resume",
        &run_arg,
    ]);
    assert!(second.status.success(), "{second:?}");
    assert_eq!(
        scratch.runs("small").len(),
        1,
        "resume must not start a new run"
    );

    let csv = lines(&run.join("progress.csv"));
    assert_eq!(csv.len(), 1 + 4, "{csv:?}");
    let header: Vec<&str> = csv[0].split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (iteration, steps) = (
        column("training_iteration"),
        column("num_env_steps_sampled_lifetime"),
    );
    for (i, row) in csv[1..].iter().enumerate() {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells[iteration], (i + 1).to_string());
        assert_eq!(cells[steps], (256 * (i + 1)).to_string());
    }
    let json = lines(&run.join("result.json"));
    assert_eq!(json.len(), 4);
    let last: serde_json::Value = serde_json::from_str(&json[3]).unwrap();
    assert_eq!(last["training_iteration"], 4.0);
    assert!(last["learners/default_policy/policy_loss"].is_number());
    assert!(run.join("checkpoints/checkpoint_000004").exists());
    assert_eq!(
        fs::read_link(run.join("checkpoints/latest")).unwrap(),
        Path::new("checkpoint_000004")
    );

    // Two TensorBoard event files (one per session), every record CRC-valid.
    let mut event_files: Vec<_> = fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("events.out.tfevents")
        })
        .collect();
    event_files.sort();
    assert_eq!(event_files.len(), 2);
    for file in &event_files {
        let records = tfrecord::read(&fs::read(file).unwrap());
        // Each session writes its config (HParams, text), then one summary
        // of every result key per iteration.
        let count = |needle: &[u8]| records.iter().filter(|r| contains(r, needle)).count();
        assert_eq!(count(b"_hparams_/session_start_info"), 1);
        assert_eq!(
            count(b"env_runners/episode_len_mean"),
            2,
            "{}",
            file.display()
        );
    }

    // The config of the first two iterations stays beside the new one.
    let stop_iterations = |file: &str| -> u64 {
        let params = fs::read_to_string(run.join(file)).unwrap();
        let stop = params.split("\nstop:\n").nth(1).expect("a stop section");
        let line = stop
            .lines()
            .take_while(|line| line.starts_with(' '))
            .find_map(|line| line.trim().strip_prefix("iterations: "))
            .expect("stop.iterations");
        line.parse().unwrap()
    };
    assert_eq!(stop_iterations("params_000002.yaml"), 2);
    assert_eq!(stop_iterations("params.yaml"), 4);

    // Without a config, a resume continues with the one the run holds.
    let third = scratch.oxray(&["train", "--resume", &run_arg, "--set", "stop.iterations=5"]);
    assert!(third.status.success(), "{third:?}");
    assert_eq!(lines(&run.join("progress.csv")).len(), 1 + 5);
    assert_eq!(stop_iterations("params_000004.yaml"), 4);
    assert_eq!(stop_iterations("params_000002.yaml"), 2);
    assert_eq!(stop_iterations("params.yaml"), 5);
    assert_eq!(scratch.runs("small").len(), 1);
    assert_clean_error(
        &scratch.oxray(&["train", "--resume", "results/small"]),
        &["cannot read config results/small/params.yaml"],
    );
}

/// The `checkpoint_<i>` directories of `run`, by iteration.
fn checkpoints_on_disk(run: &Path) -> Vec<u64> {
    let mut iterations: Vec<u64> = fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            name.strip_prefix("checkpoint_")?.parse().ok()
        })
        .collect();
    iterations.sort();
    iterations
}

/// `checkpoint.num_to_keep` (Ray's `CheckpointConfig`): the most recent N
/// stay, counted across a resume; with a score attribute the best N by it
/// stay, and the newest with them; 0 is refused by name.
#[test]
fn checkpoints_beyond_num_to_keep_are_removed_across_a_resume() {
    let scratch = Scratch::new();
    scratch.write("small.yaml", SMALL_PPO);
    let every = ["--set", "checkpoint.checkpoint_frequency=1"];
    let keep_two = [&every[..], &["--set", "checkpoint.num_to_keep=2"]].concat();
    let first = scratch.oxray(
        &[
            &["train", "small.yaml", "--set", "stop.iterations=4"][..],
            &keep_two,
        ]
        .concat(),
    );
    assert!(first.status.success(), "{first:?}");
    let run = scratch.runs("small").pop().expect("run directory");
    assert_eq!(checkpoints_on_disk(&run), [3, 4]);
    let run_arg = run.to_string_lossy().into_owned();
    let resumed = scratch.oxray(&["train", "--resume", &run_arg, "--set", "stop.iterations=6"]);
    assert!(resumed.status.success(), "{resumed:?}");
    assert_eq!(checkpoints_on_disk(&run), [5, 6]);
    assert_eq!(
        fs::read_link(run.join("checkpoints/latest")).unwrap(),
        Path::new("checkpoint_000006")
    );

    let lowest_iteration = [
        "--set",
        "checkpoint.num_to_keep=1",
        "--set",
        "checkpoint.checkpoint_score_attribute=training_iteration",
        "--set",
        "checkpoint.checkpoint_score_order=min",
    ];
    let scored = scratch.oxray(
        &[
            &[
                "train",
                "small.yaml",
                "--name",
                "scored",
                "--set",
                "stop.iterations=4",
            ][..],
            &every,
            &lowest_iteration,
        ]
        .concat(),
    );
    assert!(scored.status.success(), "{scored:?}");
    let run = scratch.runs("scored").pop().expect("run directory");
    assert_eq!(
        checkpoints_on_disk(&run),
        [1, 4],
        "the best, and the newest"
    );

    assert_clean_error(
        &scratch.oxray(&["train", "small.yaml", "--set", "checkpoint.num_to_keep=0"]),
        &["checkpoint.num_to_keep: must be at least 1"],
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// TFRecord reading with CRC-32C checks, independent of the writer's code.
mod tfrecord {
    fn crc32c(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82f6_3b78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn masked(data: &[u8]) -> u32 {
        let crc = crc32c(data);
        (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
    }

    /// Every record's payload; panics on a bad length or CRC.
    pub fn read(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut records = Vec::new();
        while !bytes.is_empty() {
            let len_bytes = &bytes[..8];
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            let len_crc = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
            assert_eq!(len_crc, masked(len_bytes), "length CRC");
            let data = &bytes[12..12 + len];
            let data_crc = u32::from_le_bytes(bytes[12 + len..16 + len].try_into().unwrap());
            assert_eq!(data_crc, masked(data), "data CRC");
            records.push(data.to_vec());
            bytes = &bytes[16 + len..];
        }
        records
    }
}

#[test]
fn damaged_and_foreign_checkpoints_are_refused() {
    let scratch = Scratch::new();
    scratch.write("small.yaml", SMALL_PPO);
    assert!(scratch.oxray(&["train", "small.yaml"]).status.success());
    let run = scratch.runs("small").pop().unwrap();
    let checkpoint_dir = run.join("checkpoints/checkpoint_000002");
    let ckpt = checkpoint_dir.to_string_lossy().into_owned();

    let evaluation = scratch.oxray(&["evaluate", &ckpt, "--episodes", "2"]);
    assert!(evaluation.status.success(), "{evaluation:?}");
    let out = stdout(&evaluation);
    assert!(
        out.contains("CartPole-v1: 2 episodes") && out.contains("return  mean"),
        "{out}"
    );

    // Another algorithm's checkpoint cannot be resumed by a PPO config.
    let metadata = checkpoint_dir.join("checkpoint.json");
    let original = fs::read_to_string(&metadata).unwrap();
    fs::write(
        &metadata,
        original.replace("\"algorithm\": \"PPO\"", "\"algorithm\": \"DQN\""),
    )
    .unwrap();
    let run_arg = run.to_string_lossy().into_owned();
    let resumed = scratch.oxray(&["train", "small.yaml", "--resume", &run_arg]);
    assert_clean_error(&resumed, &["DQN checkpoint", "PPO"]);
    fs::write(&metadata, original).unwrap();

    // Nor by a config whose network has other layers; the checkpoint stays.
    let saved = fs::read(checkpoint_dir.join("weights.pt")).unwrap();
    let wider = [
        "--set",
        "model.fcnet_hiddens=[32]",
        "--set",
        "stop.iterations=3",
    ];
    let resumed =
        scratch.oxray(&[&["train", "small.yaml", "--resume", &run_arg][..], &wider].concat());
    assert_clean_error(&resumed, &["another network", "params.yaml"]);
    assert_eq!(fs::read(checkpoint_dir.join("weights.pt")).unwrap(), saved);

    let weights = checkpoint_dir.join("weights.pt");
    let bytes = fs::read(&weights).unwrap();
    fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let truncated = scratch.oxray(&["evaluate", &ckpt]);
    assert_clean_error(&truncated, &["weights.pt is truncated"]);
}

#[test]
fn diverging_loss_stops_with_the_iteration_and_keeps_the_last_good_weights() {
    let scratch = Scratch::new();
    scratch.write("small.yaml", SMALL_PPO);
    // Adam with an absurd step size overflows the weights within a minibatch or two.
    let output = scratch.oxray(&[
        "train",
        "small.yaml",
        "--set",
        "training.lr=1e38",
        "--set",
        "training.grad_clip=null",
    ]);
    assert_clean_error(
        &output,
        &["non-finite loss in iteration 1", "last good weights"],
    );
    let run = scratch
        .runs("small")
        .pop()
        .expect("the run directory is kept");
    let checkpoints = run.join("checkpoints").to_string_lossy().into_owned();
    let evaluation = scratch.oxray(&["evaluate", &checkpoints, "--episodes", "1"]);
    assert!(evaluation.status.success(), "{evaluation:?}");
    assert!(stdout(&evaluation).contains("return  mean"));
}

/// Iteration 1 trains; iteration 2's learning rate (scheduled by env steps)
/// overflows the weights. The checkpoint of iteration 1, saved on schedule,
/// is the one reported and is left as it was: iteration 1's counters, not the
/// discarded batch's.
#[test]
fn divergence_after_a_scheduled_checkpoint_keeps_that_checkpoint_unchanged() {
    let scratch = Scratch::new();
    scratch.write("small.yaml", SMALL_PPO);
    let output = scratch.oxray(&[
        "train",
        "small.yaml",
        "--set",
        "training.lr_schedule=[[0, 1.0e-3], [256, 1.0e-3], [257, 1.0e38]]",
        "--set",
        "training.grad_clip=null",
        "--set",
        "checkpoint.checkpoint_frequency=1",
        "--set",
        "stop.iterations=5",
    ]);
    assert_clean_error(
        &output,
        &["non-finite loss in iteration 2", "checkpoint_000001"],
    );
    let run = scratch
        .runs("small")
        .pop()
        .expect("the run directory is kept");
    let checkpoints = run.join("checkpoints");
    let saved: Vec<String> = fs::read_dir(&checkpoints)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("checkpoint_"))
        .collect();
    assert_eq!(saved, ["checkpoint_000001"]);
    let metadata: serde_json::Value = serde_json::from_slice(
        &fs::read(checkpoints.join("checkpoint_000001/checkpoint.json")).unwrap(),
    )
    .unwrap();
    let progress = &metadata["state"]["progress"];
    assert_eq!(progress["iteration"], 1);
    assert_eq!(progress["env_steps_sampled"], 256);
    assert_eq!(progress["env_steps_trained"], 256);
}

/// A small off-policy config of `algorithm` on `env`: 200 env steps per
/// iteration, learning from step 100, two iterations.
fn small_off_policy(algorithm: &str, env: &str) -> String {
    format!(
        "\
algorithm: {algorithm}
env: {env}
seed: 1
training:
  train_batch_size: 32
  num_steps_sampled_before_learning_starts: 100
  min_sample_timesteps_per_iteration: 200
  replay_buffer_config:
    type: EpisodeReplayBuffer
    capacity: 1000
model:
  fcnet_hiddens: [32, 32]
stop:
  iterations: 2
"
    )
}

/// SAC trains, resumes from its checkpoint with the counters continuing
/// (the replay buffer is not saved by default: learning waits for it to
/// refill), and
/// `oxray evaluate` rolls out the checkpoint's squashed Gaussian policy.
/// α must have been tuned down from its initial 1.
#[test]
fn sac_trains_resumes_and_evaluates() {
    off_policy_trains_resumes_and_evaluates("sac", "SAC", "Pendulum-v1", |result| {
        let alpha = result["learners/default_policy/alpha_value"]
            .as_f64()
            .unwrap();
        assert!(alpha > 0.0 && alpha < 1.0, "alpha {alpha}");
    });
}

/// The same for DQN and its Q-network (ε-greedy while training, greedy in
/// `oxray evaluate`); ε has decayed from 1 by the third iteration.
#[test]
fn dqn_trains_resumes_and_evaluates() {
    off_policy_trains_resumes_and_evaluates("dqn", "DQN", "CartPole-v1", |result| {
        let epsilon = result["env_runners/curr_epsilon"].as_f64().unwrap();
        assert!(epsilon < 1.0, "epsilon {epsilon}");
    });
}

/// Resumes the run in `run` with config `file` until its third iteration.
fn resume_for_a_third_iteration(scratch: &Scratch, file: &str, run: &str) {
    let resumed = scratch.oxray(&["train", file, "--set", "stop.iterations=3", "--resume", run]);
    assert!(resumed.status.success(), "{resumed:?}");
}

/// Trains `algorithm`'s [`small_off_policy`] config on `env` for two
/// iterations, resumes it for a third, checks every result (counters, a
/// finite Q loss, `check`) and evaluates the checkpoint on `env`.
fn off_policy_trains_resumes_and_evaluates(
    name: &str,
    algorithm: &str,
    env: &str,
    check: impl Fn(&serde_json::Value),
) {
    let scratch = Scratch::new();
    let file = format!("{name}.yaml");
    scratch.write(&file, &small_off_policy(algorithm, env));
    let first = scratch.oxray(&["train", &file]);
    assert!(first.status.success(), "{first:?}");
    let run = scratch.runs(name).pop().expect("run directory");
    let run_arg = run.to_string_lossy().into_owned();
    resume_for_a_third_iteration(&scratch, &file, &run_arg);
    let json = lines(&run.join("result.json"));
    assert_eq!(json.len(), 3);
    for (i, line) in json.iter().enumerate() {
        let result: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(result["training_iteration"], (i + 1) as f64);
        assert_eq!(
            result["num_env_steps_sampled_lifetime"],
            (200 * (i + 1)) as f64
        );
        assert!(result["learners/default_policy/qf_loss"]
            .as_f64()
            .unwrap()
            .is_finite());
        check(&result);
    }
    assert!(run.join("checkpoints/checkpoint_000003").exists());

    let evaluated = scratch.oxray(&["evaluate", &run_arg, "--episodes", "2"]);
    assert!(evaluated.status.success(), "{evaluated:?}");
    let out = stdout(&evaluated);
    assert!(out.contains(&format!("{env}: 2 episodes")), "{out}");
    assert!(out.contains("return  mean"), "{out}");
}

/// With `store_buffer_in_checkpoints` a resumed DQN run learns from the
/// buffer its checkpoint kept: the third iteration starts with 400 stored
/// transitions and trains although learning starts only after 300 steps
/// (without the buffer it would wait until 700). A buffer that does not fit
/// the resumed config is refused by name, before anything is written, and
/// evaluating the checkpoint does not read the buffer at all.
#[test]
fn dqn_resumes_with_the_replay_buffer_its_checkpoint_kept() {
    let scratch = Scratch::new();
    let config = small_off_policy("DQN", "CartPole-v1").replace(
        "num_steps_sampled_before_learning_starts: 100",
        "num_steps_sampled_before_learning_starts: 300\n  store_buffer_in_checkpoints: true",
    );
    scratch.write("dqn.yaml", &config);
    let first = scratch.oxray(&["train", "dqn.yaml"]);
    assert!(first.status.success(), "{first:?}");
    let run = scratch.runs("dqn").pop().expect("run directory");
    let run_arg = run.to_string_lossy().into_owned();
    assert!(run
        .join("checkpoints/checkpoint_000002/replay_buffer.bin")
        .exists());

    let params = fs::read(run.join("params.yaml")).unwrap();
    let refused = scratch.oxray(&[
        "train",
        "dqn.yaml",
        "--set",
        "training.replay_buffer_config.capacity=500",
        "--resume",
        &run_arg,
    ]);
    assert_clean_error(
        &refused,
        &["replay buffer was made with capacity 1000, this run's config has 500"],
    );
    assert_eq!(lines(&run.join("result.json")).len(), 2);
    assert_eq!(fs::read(run.join("params.yaml")).unwrap(), params);

    // The buffer's file is corrupted: evaluating never reads it.
    let buffer = run.join("checkpoints/checkpoint_000002/replay_buffer.bin");
    let saved = fs::read(&buffer).unwrap();
    fs::write(&buffer, &saved[..saved.len() - 1]).unwrap();
    let evaluated = scratch.oxray(&["evaluate", &run_arg, "--episodes", "1"]);
    assert!(evaluated.status.success(), "{evaluated:?}");
    fs::write(&buffer, &saved).unwrap();

    resume_for_a_third_iteration(&scratch, "dqn.yaml", &run_arg);
    let json = lines(&run.join("result.json"));
    let result = |i: usize| -> serde_json::Value { serde_json::from_str(&json[i]).unwrap() };
    let trained = |i: usize| {
        result(i)["num_env_steps_trained_lifetime"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(result(2)["replay_buffer/num_env_steps_stored"], 600.0);
    assert!(
        trained(2) > trained(1),
        "{} then {}",
        trained(1),
        trained(2)
    );
}

/// The shipped APPO config (two remote EnvRunners sampling continuously)
/// lifts CartPole's mean return above 150 (an untrained policy scores about
/// 20) while the Learner trains on actions drawn with older weights — the
/// asynchrony V-trace corrects for; the run resumes with its counters
/// continuing and `oxray evaluate` plays the checkpoint.
#[test]
fn appo_learns_asynchronously_resumes_and_evaluates() {
    learns_asynchronously_resumes_and_evaluates("appo-cartpole");
}

/// The same for IMPALA's shipped config: its plain V-trace policy gradient,
/// no clipped surrogate, no target network.
#[test]
fn impala_learns_asynchronously_resumes_and_evaluates() {
    learns_asynchronously_resumes_and_evaluates("impala-cartpole");
}

/// Trains `configs/<name>.yaml` (CartPole, remote EnvRunners sampling
/// continuously) to a mean return of 150, checks the runners sampled ahead
/// of the Learner, resumes for two more iterations and evaluates.
fn learns_asynchronously_resumes_and_evaluates(name: &str) {
    let scratch = Scratch::new();
    let config = format!("{}/configs/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let first = scratch.oxray(&[
        "train",
        &config,
        "--set",
        "stop.episode_return_mean=150",
        "--set",
        "stop.env_steps=150000",
    ]);
    assert!(first.status.success(), "{first:?}");
    let run = scratch.runs(name).pop().expect("run directory");
    let run_arg = run.to_string_lossy().into_owned();
    let json = lines(&run.join("result.json"));
    let last: serde_json::Value = serde_json::from_str(json.last().unwrap()).unwrap();
    let return_mean = last["env_runners/episode_return_mean"].as_f64().unwrap();
    assert!(return_mean >= 150.0, "return mean {return_mean}");
    let lags: Vec<f64> = json
        .iter()
        .map(|line| {
            let result: serde_json::Value = serde_json::from_str(line).unwrap();
            result["env_runners/mean_weights_lag"].as_f64().unwrap()
        })
        .collect();
    assert!(
        lags.iter().skip(1).any(|&lag| lag > 0.0),
        "the runners never sampled ahead of the Learner: {lags:?}"
    );
    let iterations = json.len();
    let steps = last["num_env_steps_sampled_lifetime"].as_f64().unwrap();

    let resume_to = format!("stop.iterations={}", iterations + 2);
    let second = scratch.oxray(&[
        "train",
        &config,
        "--set",
        &resume_to,
        "--set",
        "stop.episode_return_mean=1000",
        "--resume",
        &run_arg,
    ]);
    assert!(second.status.success(), "{second:?}");
    let json = lines(&run.join("result.json"));
    assert_eq!(json.len(), iterations + 2);
    let resumed: serde_json::Value = serde_json::from_str(&json[iterations]).unwrap();
    assert_eq!(resumed["training_iteration"], (iterations + 1) as f64);
    assert!(resumed["num_env_steps_sampled_lifetime"].as_f64().unwrap() > steps);

    let evaluated = scratch.oxray(&["evaluate", &run_arg, "--episodes", "3"]);
    assert!(evaluated.status.success(), "{evaluated:?}");
    let out = stdout(&evaluated);
    assert!(out.contains("CartPole-v1: 3 episodes"), "{out}");
}

/// `oxray export` names what is wrong with its output path before any work,
/// and writes the module beside it and renames it into place: an export
/// that fails (here its Python) leaves an earlier module as it was, and no
/// partial file behind.
#[test]
fn a_failed_export_names_the_problem_and_keeps_an_earlier_module() {
    let scratch = Scratch::new();
    scratch.write("ppo.yaml", SMALL_PPO);
    let trained = scratch.oxray(&["train", "ppo.yaml"]);
    assert!(trained.status.success(), "{trained:?}");
    let run = scratch.runs("ppo").pop().expect("run directory");
    let run_arg = run.to_string_lossy().into_owned();

    let missing = scratch.oxray(&["export", &run_arg, "-o", "missing/policy.pt"]);
    assert_clean_error(&missing, &["directory missing does not exist"]);
    let into_directory = scratch.oxray(&["export", &run_arg, "-o", "results"]);
    assert_clean_error(&into_directory, &["the output is a directory"]);

    let exported = scratch.oxray(&["export", &run_arg, "-o", "policy.pt"]);
    assert!(exported.status.success(), "{exported:?}");
    let module = fs::read(scratch.path().join("policy.pt")).unwrap();
    let failed = std::process::Command::new(env!("CARGO_BIN_EXE_oxray"))
        .args(["export", &run_arg, "-o", "policy.pt"])
        .env("OXRAY_PYTHON", "false")
        .current_dir(scratch.path())
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    let err = train_support::stderr(&failed);
    assert!(err.contains("false failed (exit status: 1)"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(fs::read(scratch.path().join("policy.pt")).unwrap(), module);
    let left: Vec<_> = fs::read_dir(scratch.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".oxray-export-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Ctrl-C (SIGINT to the whole process group, as a terminal sends it) lets
/// the iteration in progress finish on the embedded node's EnvRunner, saves
/// the end-of-run checkpoint, exits with 130 naming the run to resume and
/// leaves no process behind; `--resume` continues from that checkpoint.
#[test]
fn ctrl_c_stops_after_the_iteration_with_a_checkpoint_to_resume() {
    stops_after_the_iteration_with_a_checkpoint_to_resume(libc::SIGINT, 1, "Ctrl-C");
}

/// SLURM's warning before a time limit or preemption (`--signal=USR1@120`)
/// goes to every process of the step, and may come twice (from SLURM and
/// passed on by `oxray symmetric-run`): the run stops as after Ctrl-C,
/// exiting with 138.
#[test]
fn sigusr1_stops_after_the_iteration_with_a_checkpoint_to_resume() {
    stops_after_the_iteration_with_a_checkpoint_to_resume(libc::SIGUSR1, 2, "SIGUSR1");
}

/// Sends `signal` `times` times to the process group of an endless
/// `oxray train` once its second iteration is shown; checks the stop, the
/// checkpoint, that no worker died of it, and the resume.
fn stops_after_the_iteration_with_a_checkpoint_to_resume(
    signal: libc::c_int,
    times: usize,
    name: &str,
) {
    let scratch = Scratch::new();
    scratch.write("small.yaml", SMALL_PPO);
    let run = EndlessRun::start(&scratch, &["--set", "env_runners.num_env_runners=1"]);
    let group = run.child.id() as libc::pid_t;
    // The embedded node's workers (the EnvRunner's among them) ignore it.
    let workers = children_of(run.child.id());
    assert!(!workers.is_empty());
    for worker in workers {
        assert!(
            ignores(worker, signal),
            "worker {worker} would die of {name}"
        );
    }
    for _ in 0..times {
        // SAFETY: signals the group this test created for the run.
        assert_eq!(unsafe { libc::kill(-group, signal) }, 0);
    }
    let (status, shown, err) = run.finish();
    assert_eq!(status.code(), Some(128 + signal), "{shown}{err}");
    let done_line = format!("done: interrupted ({name}) after ");
    let done = shown
        .lines()
        .find_map(|line| line.strip_prefix(done_line.as_str()))
        .unwrap_or_else(|| panic!("{shown}{err}"));
    let iterations: u64 = done.split(' ').next().unwrap().parse().unwrap();
    assert!(iterations >= 2, "{shown}");
    let run = scratch.runs("small").pop().expect("run directory");
    let checkpoint = format!("checkpoints/checkpoint_{iterations:06}/checkpoint.json");
    assert!(run.join(checkpoint).is_file(), "{shown}");
    assert!(!err.contains("panicked"), "{err}");
    // No EnvRunner died of it and had to be replaced.
    assert!(!format!("{shown}{err}").contains("failed"), "{shown}{err}");
    let resume = format!("continue with `oxray train --resume {}`", run.display());
    let relative = resume.replace(&format!("{}/", scratch.path().display()), "");
    assert!(err.contains(&relative), "{err}");
    // The EnvRunner's worker ignored the signal and ended with the run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    // SAFETY: probes the group; signal 0 sends nothing.
    while unsafe { libc::kill(-group, 0) } == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a process outlived the run"
        );
        std::thread::yield_now();
    }

    let run_arg = run.to_string_lossy().into_owned();
    let stop = format!("stop.iterations={}", iterations + 1);
    let resumed = scratch.oxray(&["train", "small.yaml", "--set", &stop, "--resume", &run_arg]);
    assert!(resumed.status.success(), "{resumed:?}");
    assert_eq!(
        lines(&run.join("progress.csv")).len() as u64,
        1 + iterations + 1
    );
}

/// `oxray train small.yaml` without an end, in a process group of its own,
/// once its second iteration is shown.
struct EndlessRun {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
    shown: String,
}

impl EndlessRun {
    fn start(scratch: &Scratch, extra: &[&str]) -> EndlessRun {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_oxray"))
            .args(["train", "small.yaml", "--set", "stop.iterations=1000000"])
            .args(extra)
            .current_dir(scratch.path())
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut shown = String::new();
        while !shown.lines().any(|line| line.starts_with("iter    2")) {
            assert!(out.read_line(&mut shown).unwrap() > 0, "{shown}");
        }
        EndlessRun { child, out, shown }
    }

    /// Reads its output to the end: (status, stdout, stderr).
    fn finish(mut self) -> (std::process::ExitStatus, String, String) {
        use std::io::Read;
        self.out.read_to_string(&mut self.shown).unwrap();
        let mut err = String::new();
        let mut stderr = self.child.stderr.take().unwrap();
        stderr.read_to_string(&mut err).unwrap();
        (self.child.wait().unwrap(), self.shown, err)
    }
}

/// The processes whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces, not `)`.
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        if after_comm.split_whitespace().nth(1) == Some(&parent.to_string()) {
            children.push(pid);
        }
    }
    children
}

/// Whether `pid` ignores `signal` (its `SigIgn` mask in /proc).
fn ignores(pid: u32, signal: libc::c_int) -> bool {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

/// `--resume auto` (Tune's `resume="AUTO"`): the first time it starts a
/// run, then continues the newest one; a run that met its stop criterion
/// trains nothing more until the criterion is raised; a search resumes
/// each trial's own run.
#[test]
fn resume_auto_continues_the_newest_run_or_starts_one() {
    let scratch = Scratch::new();
    scratch.write("small.yaml", SMALL_PPO);
    let auto = |sets: &[&str]| {
        let mut args = vec!["train", "small.yaml", "--resume", "auto"];
        for set in sets {
            args.extend(["--set", set]);
        }
        let output = scratch.oxray(&args);
        assert!(output.status.success(), "{output:?}");
        stdout(&output)
    };
    let shown = auto(&[]);
    assert!(shown.contains("no run of small to resume"), "{shown}");
    let [run] = <[PathBuf; 1]>::try_from(scratch.runs("small")).unwrap();
    let progress = run.join("progress.csv");
    assert_eq!(lines(&progress).len(), 1 + 2);

    let shown = auto(&[]);
    assert!(shown.contains("resuming results/small/"), "{shown}");
    assert!(shown.contains("nothing left to train"), "{shown}");
    assert_eq!(lines(&progress).len(), 1 + 2, "no iteration more");

    auto(&["stop.iterations=3"]);
    assert_eq!(scratch.runs("small"), std::slice::from_ref(&run));
    assert_eq!(lines(&progress).len(), 1 + 3);

    // A search: each trial its own run, resumed as a whole.
    let search = SMALL_PPO.replace(
        "  lr: 1.0e-3\n",
        "  lr:\n    grid_search: [1.0e-3, 3.0e-4]\n",
    );
    scratch.write("small.yaml", &search);
    let shown = auto(&[]);
    assert_eq!(shown.matches("no run of small/").count(), 2, "{shown}");
    let shown = auto(&["stop.iterations=3"]);
    assert_eq!(
        shown.matches("resuming results/small/").count(),
        2,
        "{shown}"
    );
    for trial in ["0_lr=0.001", "1_lr=0.0003"] {
        let [run] = <[PathBuf; 1]>::try_from(scratch.runs(&format!("small/{trial}"))).unwrap();
        assert_eq!(lines(&run.join("progress.csv")).len(), 1 + 3, "{trial}");
    }
}

/// A search stopped by SIGUSR1 lists its running trial `PAUSED` and the
/// next `PENDING`, and names its own command with `--resume auto`, which
/// continues the paused trial's run and starts the pending one.
#[test]
fn an_interrupted_search_resumes_as_a_whole() {
    let scratch = Scratch::new();
    let search = SMALL_PPO.replace(
        "  lr: 1.0e-3\n",
        "  lr:\n    grid_search: [1.0e-3, 3.0e-4]\n",
    );
    scratch.write("small.yaml", &search);
    let run = EndlessRun::start(&scratch, &[]);
    // SAFETY: signals the process this test started.
    assert_eq!(
        unsafe { libc::kill(run.child.id() as i32, libc::SIGUSR1) },
        0
    );
    let (status, shown, err) = run.finish();
    assert_eq!(status.code(), Some(138), "{shown}{err}");
    let row = |trial: &str| {
        shown
            .lines()
            .find(|line| line.starts_with(trial))
            .unwrap_or_else(|| panic!("{shown}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("0 ")[1], "PAUSED", "{shown}");
    let iterations: u64 = row("0 ")[2].parse().unwrap();
    assert_eq!(row("1 ")[1], "PENDING", "{shown}");
    assert!(
        err.contains(
            "continue with `oxray train small.yaml --set stop.iterations=1000000 --resume auto`"
        ),
        "{err}"
    );

    let stop = format!("stop.iterations={}", iterations + 1);
    let resumed = scratch.oxray(&["train", "small.yaml", "--set", &stop, "--resume", "auto"]);
    assert!(resumed.status.success(), "{resumed:?}");
    for trial in ["0_lr=0.001", "1_lr=0.0003"] {
        let [run] = <[PathBuf; 1]>::try_from(scratch.runs(&format!("small/{trial}"))).unwrap();
        let progress = lines(&run.join("progress.csv"));
        assert_eq!(progress.len() as u64, 1 + iterations + 1, "{trial}");
    }
}
