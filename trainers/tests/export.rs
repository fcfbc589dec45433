//! TorchScript export round trip: a trained checkpoint's policy, exported
//! and loaded with `torch.jit.load` in Python, gives the greedy actions
//! `oxray evaluate` takes (the EnvRunner's mode) exactly, and the same
//! distribution inputs, for a Discrete and a Box action space, a DQN
//! Q-network's Q-values (plain, dueling, C51, NoisyNets), SAC's squashed-Gaussian
//! and categorical actions and twin Q-values, IQL's state values, and CNN policies fed Atari frames as Gymnasium
//! returns them; its parameters carry PyTorch-style names.

use std::path::Path;
use std::process::Command;

use oxray_rl::checkpoint;
use oxray_rl::distributions::ActionDistribution;
use oxray_rl::env_runner::module_spec;
use oxray_rl::rl_module::{
    ActionSpace, ActorCritic, ModuleSpec, QNetwork, RLModule, SoftActorCritic,
};
use oxray_trainers::export::export_torchscript;
use oxray_trainers::run::{run, RunOptions};
use oxray_trainers::ExperimentConfig;
use rand::{Rng, SeedableRng};
use tch::{Device, Tensor};

/// Loads `policy.pt` in Python and prints `act(obs, True)` and `forward(obs)`.
const LOAD_IN_PYTHON: &str = r#"
import json, sys, torch
policy = torch.jit.load(sys.argv[1])
obs = torch.tensor(json.load(open(sys.argv[2])), dtype=torch.float32)
with torch.no_grad():
    print(json.dumps({"act": policy.act(obs, True).tolist(),
                      "forward": policy.forward(obs).tolist(),
                      "value": policy.value(obs).tolist()}))
"#;

fn train(dir: &Path, config: &str) -> std::path::PathBuf {
    let config = ExperimentConfig::parse(config, "test.yaml", &[]).unwrap();
    let summary = run(
        RunOptions {
            config,
            name: "export".into(),
            results_dir: dir.to_path_buf(),
            resume: None,
        },
        |_| {},
    )
    .unwrap();
    summary.checkpoint.expect("a checkpoint at the end")
}

fn python() -> std::path::PathBuf {
    oxray_gym::python_executable()
}

/// Runs `script` with the exported module at `module` and `obs` (rows of
/// `obs_dim`) written as JSON into `dir`; what it printed.
fn load_in_python(
    script: &str,
    module: &Path,
    obs: &[f32],
    obs_dim: usize,
    dir: &Path,
) -> serde_json::Value {
    let obs_json: Vec<&[f32]> = obs.chunks(obs_dim).collect();
    let obs_path = dir.join("obs.json");
    std::fs::write(&obs_path, serde_json::to_string(&obs_json).unwrap()).unwrap();
    let output = Command::new(python())
        .args(["-c", script])
        .arg(module)
        .arg(&obs_path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The module of the kind `checkpoint_path`'s config trains, with its
/// weights, and its spec.
fn module_of<M: RLModule>(checkpoint_path: &Path) -> (M, ModuleSpec) {
    let saved = checkpoint::load(checkpoint_path).unwrap();
    let config = ExperimentConfig::from_json(&saved.config).unwrap();
    let kind = config.training.training().module_kind();
    let spec = module_spec(&config.env, &config.model, kind).unwrap();
    let mut model = M::new(&spec, Device::Cpu);
    model.set_weights(&saved.learner.weights).unwrap();
    (model, spec)
}

/// `rows` observations of `obs_dim` values drawn uniformly from ±`scale`.
fn random_obs(seed: u64, rows: usize, obs_dim: usize, scale: f32) -> (Vec<f32>, Tensor) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let obs: Vec<f32> = (0..rows * obs_dim)
        .map(|_| rng.gen_range(-scale..scale))
        .collect();
    let tensor = Tensor::from_slice(&obs).view([rows as i64, obs_dim as i64]);
    (obs, tensor)
}

/// The numbers under `key` of what Python printed, rows flattened.
fn numbers(loaded: &serde_json::Value, key: &str) -> Vec<f64> {
    loaded[key]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| match row.as_array() {
            Some(row) => row.iter().map(|v| v.as_f64().unwrap()).collect(),
            None => vec![row.as_f64().unwrap()],
        })
        .collect()
}

fn round_trip(config: &str, obs_scale: f32) {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint_path = train(dir.path(), config);
    let out = dir.path().join("policy.pt");
    let names = export_torchscript(&checkpoint_path, &out).unwrap();
    for name in [
        "pi.0.weight",
        "pi.1.bias",
        "pi_head.weight",
        "vf.0.weight",
        "vf_head.bias",
    ] {
        assert!(names.contains(&name.to_string()), "{name} not in {names:?}");
    }
    assert!(names.iter().all(|n| !n.contains('|')), "{names:?}");

    // The policy as `oxray evaluate` runs it.
    let (model, spec) = module_of::<ActorCritic>(&checkpoint_path);
    let rows = 256;
    let (obs, obs_tensor) = random_obs(3, rows, spec.obs_dim(), obs_scale);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let action_dim = spec.action_space.action_dim();
    let mut actions = vec![0.0f32; rows * action_dim];
    let mut logp = vec![0.0f32; rows];
    let values = oxray_rl::to_host(&model.value(&obs_tensor));
    model
        .distribution(&obs_tensor)
        .sample_into(&mut rng, false, &mut actions, &mut logp);
    if let ActionSpace::Box { low, high } = &spec.action_space {
        for (i, a) in actions.iter_mut().enumerate() {
            *a = a.clamp(low[i % action_dim], high[i % action_dim]);
        }
    }

    let loaded = load_in_python(LOAD_IN_PYTHON, &out, &obs, spec.obs_dim(), dir.path());
    let python_actions: Vec<f32> = match &spec.action_space {
        ActionSpace::Discrete { .. } => loaded["act"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_i64().unwrap() as f32)
            .collect(),
        ActionSpace::Box { .. } => loaded["act"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_f64().unwrap() as f32)
            })
            .collect(),
    };
    assert_eq!(python_actions, actions, "greedy actions differ");
    let python_values: Vec<f32> = loaded["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    for (p, r) in python_values.iter().zip(&values) {
        assert!((p - r).abs() <= 1e-5 * r.abs().max(1.0), "value {p} vs {r}");
    }
    let width = loaded["forward"][0].as_array().unwrap().len();
    let expected_width = match &spec.action_space {
        ActionSpace::Discrete { n } => *n,
        ActionSpace::Box { low, .. } => 2 * low.len(),
    };
    assert_eq!(width, expected_width);
}

#[test]
fn discrete_policy_round_trips_through_torchscript() {
    round_trip(
        "algorithm: PPO
env: CartPole-v1
env_runners: {num_envs_per_env_runner: 4}
training: {train_batch_size: 512, minibatch_size: 128, num_epochs: 2, lr: 1.0e-3}
stop: {iterations: 3}
",
        2.0,
    );
}

#[test]
fn box_policy_round_trips_through_torchscript() {
    round_trip(
        "algorithm: PPO
env: Pendulum-v1
model: {fcnet_hiddens: [32, 32], fcnet_activation: relu}
env_runners: {num_envs_per_env_runner: 2}
training: {train_batch_size: 400, minibatch_size: 200, num_epochs: 1}
stop: {iterations: 1}
",
        1.0,
    );
}

/// Loads a Q-network's `policy.pt` in Python and prints its greedy actions
/// and Q-values.
const LOAD_Q_IN_PYTHON: &str = r#"
import json, sys, torch
policy = torch.jit.load(sys.argv[1])
obs = torch.tensor(json.load(open(sys.argv[2])), dtype=torch.float32)
with torch.no_grad():
    print(json.dumps({"act": policy.act(obs, True).tolist(),
                      "explore": policy.act(obs, False).tolist(),
                      "forward": policy.forward(obs).tolist()}))
"#;

/// A DQN checkpoint (plain, dueling, C51, NoisyNets) exported and loaded in
/// Python gives the Q-values oxray's module computes (NoisyNets: under the
/// means, as evaluation acts) and the same greedy actions.
#[test]
fn q_network_round_trips_through_torchscript() {
    for training in [
        "{num_steps_sampled_before_learning_starts: 64, train_batch_size: 32}",
        "{num_steps_sampled_before_learning_starts: 64, train_batch_size: 32, dueling: true}",
        "{num_steps_sampled_before_learning_starts: 64, train_batch_size: 32, dueling: true, \
         num_atoms: 11, v_min: -10.0, v_max: 10.0}",
        "{num_steps_sampled_before_learning_starts: 64, train_batch_size: 32, noisy: true}",
        "{num_steps_sampled_before_learning_starts: 64, train_batch_size: 32, dueling: true, \
         noisy: true}",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "algorithm: DQN\nenv: CartPole-v1\ntraining: {training}\nstop: {{env_steps: 400}}\n"
        );
        let checkpoint_path = train(dir.path(), &config);
        let out = dir.path().join("policy.pt");
        let names = export_torchscript(&checkpoint_path, &out).unwrap();
        assert!(names.contains(&"q.0.weight".to_string()), "{names:?}");
        if training.contains("noisy") {
            assert!(
                names.iter().any(|n| n.ends_with("head.sigma_weight")),
                "{training}: {names:?}"
            );
        }

        let (model, spec) = module_of::<QNetwork>(&checkpoint_path);
        let (obs, obs_tensor) = random_obs(5, 128, spec.obs_dim(), 2.0);
        let q = model.q_values(&obs_tensor);
        let q_values = oxray_rl::to_host(&q);
        let greedy: Vec<i64> = Vec::<i64>::try_from(q.argmax(-1, false)).unwrap();

        let loaded = load_in_python(LOAD_Q_IN_PYTHON, &out, &obs, spec.obs_dim(), dir.path());
        let numbers = |key: &str| numbers(&loaded, key);
        let python_q = numbers("forward");
        assert_eq!(python_q.len(), q_values.len(), "{training}");
        for (p, r) in python_q.iter().zip(&q_values) {
            let r = f64::from(*r);
            assert!(
                (p - r).abs() <= 1e-5 * r.abs().max(1.0),
                "{training}: Q {p} vs {r}"
            );
        }
        let python_greedy: Vec<i64> = numbers("act").iter().map(|a| *a as i64).collect();
        assert_eq!(python_greedy, greedy, "{training}: greedy actions differ");
        assert!(
            numbers("explore").iter().all(|a| (0.0..2.0).contains(a)),
            "{training}: exploring actions are actions"
        );
    }
}

/// A SAC config on `env` that trains a few hundred steps of small networks.
fn small_sac(env: &str) -> String {
    format!(
        "algorithm: SAC
env: {env}
model: {{fcnet_hiddens: [32, 32], fcnet_activation: relu}}
training: {{num_steps_sampled_before_learning_starts: 64, train_batch_size: 32}}
stop: {{env_steps: 300}}
"
    )
}

/// Loads SAC's `policy.pt` in Python and prints its deterministic actions,
/// distribution inputs, twin Q-values at given actions, and value.
const LOAD_SAC_IN_PYTHON: &str = r#"
import json, sys, torch
policy = torch.jit.load(sys.argv[1])
obs = torch.tensor(json.load(open(sys.argv[2])), dtype=torch.float32)
actions = torch.linspace(-1.9, 1.9, obs.shape[0]).unsqueeze(-1)
with torch.no_grad():
    q1, q2 = policy.q_values(obs, actions)
    print(json.dumps({"act": policy.act(obs, True).squeeze(-1).tolist(),
                      "explore": policy.act(obs, False).squeeze(-1).tolist(),
                      "forward": policy.forward(obs).tolist(),
                      "q1": q1.tolist(), "q2": q2.tolist(),
                      "value": policy.value(obs).tolist()}))
"#;

/// A SAC checkpoint exported and loaded in Python acts as `oxray evaluate`
/// does (tanh of the mean, rescaled to the Box), gives oxray's distribution
/// inputs (log std clamped) and twin Q-values at env-scale actions, and its
/// value is the smaller Q at its own action.
#[test]
fn sac_policy_round_trips_through_torchscript() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint_path = train(dir.path(), &small_sac("Pendulum-v1"));
    let out = dir.path().join("policy.pt");
    let names = export_torchscript(&checkpoint_path, &out).unwrap();
    for name in [
        "pi.0.weight",
        "pi_head.bias",
        "qf.encoder.1.weight",
        "qf_twin.head.bias",
        "log_alpha",
    ] {
        assert!(names.contains(&name.to_string()), "{name} not in {names:?}");
    }

    let (model, spec) = module_of::<SoftActorCritic>(&checkpoint_path);
    let rows = 64;
    let (obs, obs_tensor) = random_obs(9, rows, spec.obs_dim(), 3.0);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(10);
    let (mut actions, mut logp) = (vec![0.0f32; rows], vec![0.0f32; rows]);
    model.compute_actions(&obs_tensor, false, 0, &mut rng, &mut actions, &mut logp);
    let forward = oxray_rl::to_host(&model.action_dist_inputs(&obs_tensor));
    // The same env-scale actions the Python side builds (Pendulum's Box is
    // [-2, 2]), then oxray's Q-values there.
    let at: Vec<f32> = (0..rows)
        .map(|i| -1.9 + 3.8 * i as f32 / (rows - 1) as f32)
        .collect();
    let at_tensor = Tensor::from_slice(&at).view([rows as i64, 1]);
    let (q1, q2) = model.replayed_q(&obs_tensor, &at_tensor);
    let (q1, q2) = (oxray_rl::to_host(&q1), oxray_rl::to_host(&q2));

    let loaded = load_in_python(LOAD_SAC_IN_PYTHON, &out, &obs, spec.obs_dim(), dir.path());
    let numbers = |key: &str| -> Vec<f32> {
        numbers(&loaded, key)
            .into_iter()
            .map(|v| v as f32)
            .collect()
    };
    let close = |what: &str, python: &[f32], oxray: &[f32]| {
        assert_eq!(python.len(), oxray.len(), "{what}");
        for (p, r) in python.iter().zip(oxray) {
            assert!(
                (p - r).abs() <= 1e-5 * r.abs().max(1.0),
                "{what}: {p} vs {r}"
            );
        }
    };
    close("deterministic actions", &numbers("act"), &actions);
    close("distribution inputs", &numbers("forward"), &forward);
    close("Q1", &numbers("q1"), &q1);
    close("Q2", &numbers("q2"), &q2);
    assert!(
        numbers("explore").iter().all(|a| (-2.0..=2.0).contains(a)),
        "sampled actions lie in the Box"
    );
    // value = min(Q1, Q2) at the deterministic action.
    let own = Tensor::from_slice(&actions).view([rows as i64, 1]);
    let (own_q1, own_q2) = model.replayed_q(&obs_tensor, &own);
    let value: Vec<f32> = oxray_rl::to_host(&own_q1.minimum(&own_q2));
    close("value", &numbers("value"), &value);
}

/// An IQL checkpoint (SAC's module with V(s)) exports with its value
/// function: in Python it acts as `oxray evaluate` does and its value is
/// oxray's V(s), not SAC's min Q at its own action.
#[test]
fn iql_policy_round_trips_through_torchscript_with_its_value_function() {
    let dir = tempfile::tempdir().unwrap();
    // Pendulum-shaped steps to train one iteration on; what they say of
    // the env does not matter here.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut row = |n: usize, scale: f32| -> Vec<f32> {
        (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
    };
    let steps = 40;
    let episode = serde_json::json!({
        "obs": (0..steps).map(|_| row(3, 1.0)).collect::<Vec<_>>(),
        "actions": (0..steps).map(|_| row(1, 2.0)).collect::<Vec<_>>(),
        "rewards": row(steps, 8.0),
        "terminated": false,
        "truncated": true,
        "final_obs": row(3, 1.0),
    });
    let recording = dir.path().join("recorded.jsonl");
    std::fs::write(&recording, format!("{episode}\n")).unwrap();
    let config = format!(
        "algorithm: IQL
env: Pendulum-v1
offline_data: {{input_: {}}}
model: {{fcnet_hiddens: [32, 32], fcnet_activation: relu}}
training: {{train_batch_size: 16, dataset_num_iters_per_learner: 3}}
stop: {{iterations: 1}}
",
        recording.display()
    );
    let checkpoint_path = train(dir.path(), &config);
    let out = dir.path().join("policy.pt");
    let names = export_torchscript(&checkpoint_path, &out).unwrap();
    for name in [
        "pi_head.bias",
        "qf_twin.head.bias",
        "vf.1.weight",
        "vf_head.bias",
    ] {
        assert!(names.contains(&name.to_string()), "{name} not in {names:?}");
    }

    let (model, spec) = module_of::<SoftActorCritic>(&checkpoint_path);
    let rows = 32;
    let (obs, obs_tensor) = random_obs(12, rows, spec.obs_dim(), 3.0);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
    let (mut actions, mut logp) = (vec![0.0f32; rows], vec![0.0f32; rows]);
    model.compute_actions(&obs_tensor, false, 0, &mut rng, &mut actions, &mut logp);
    let values = oxray_rl::to_host(&tch::no_grad(|| model.value(&obs_tensor)));
    let loaded = load_in_python(LOAD_SAC_IN_PYTHON, &out, &obs, spec.obs_dim(), dir.path());
    assert_close("deterministic actions", &numbers(&loaded, "act"), &actions);
    assert_close("V(s)", &numbers(&loaded, "value"), &values);
}

/// Loads an image policy's `policy.pt` in Python and feeds it the frames as
/// Gymnasium hands them over: `uint8`, in the observation space's shape.
fn load_frames_in_python(
    module: &Path,
    frames: &[f32],
    shape: &[usize],
    dir: &Path,
) -> serde_json::Value {
    let script = format!(
        r#"
import json, sys, torch
policy = torch.jit.load(sys.argv[1])
frames = torch.tensor(json.load(open(sys.argv[2])), dtype=torch.float32)
frames = frames.to(torch.uint8).view([-1] + {shape:?})
with torch.no_grad():
    print(json.dumps({{"act": policy.act(frames, True).tolist(),
                      "forward": policy.forward(frames).tolist(),
                      "value": policy.value(frames).tolist()}}))
"#
    );
    load_in_python(&script, module, frames, shape.iter().product(), dir)
}

/// `rows` random frames of `obs_dim` bytes each, as the whole-number floats
/// an EnvRunner's env hands a module.
fn random_frames(seed: u64, rows: usize, obs_dim: usize) -> (Vec<f32>, Tensor) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let frames: Vec<f32> = (0..rows * obs_dim)
        .map(|_| f32::from(rng.gen::<u8>()))
        .collect();
    let tensor = Tensor::from_slice(&frames).view([rows as i64, obs_dim as i64]);
    (frames, tensor)
}

fn assert_close(what: &str, python: &[f64], oxray: &[f32]) {
    assert_eq!(python.len(), oxray.len(), "{what}");
    for (p, r) in python.iter().zip(oxray) {
        let r = f64::from(*r);
        assert!(
            (p - r).abs() <= 1e-5 * r.abs().max(1.0),
            "{what}: {p} vs {r}"
        );
    }
}

/// Policies over Atari frames export with their CNN: PPO on a stack of
/// four grayscale frames (`[4, 84, 84]`, channels first) and DQN on RGB
/// frames (`[84, 84, 3]`, channels last), both with RLlib's 84x84 filters.
/// Fed `uint8` frames shaped as Gymnasium returns them, the exported module
/// gives the distribution inputs, Q-values, values and greedy actions
/// oxray's module computes from the same frames.
#[test]
fn image_policies_round_trip_through_torchscript() {
    let pong = |wrappers: &str| {
        format!(
            "env:\n  id: ALE/Pong-v5\n  config: {{frameskip: 1}}\n  wrappers: {wrappers}\n\
             env_runners: {{num_envs_per_env_runner: 1}}\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let rows = 8;

    let checkpoint_path = train(
        dir.path(),
        &format!(
            "algorithm: PPO\n{}training: {{train_batch_size: 64, minibatch_size: 32, num_epochs: 1}}\n\
             stop: {{iterations: 1}}\n",
            pong("[{atari_preprocessing: {frame_skip: 4}}, {frame_stack: 4}]")
        ),
    );
    let out = dir.path().join("ppo.pt");
    let names = export_torchscript(&checkpoint_path, &out).unwrap();
    assert!(names.contains(&"pi.2.weight".to_string()), "{names:?}");
    let (model, spec) = module_of::<ActorCritic>(&checkpoint_path);
    assert_eq!(spec.observation_shape, [4, 84, 84]);
    let (frames, frames_tensor) = random_frames(11, rows, spec.obs_dim());
    let ActionDistribution::Categorical { log_probs } = model.distribution(&frames_tensor) else {
        panic!("Pong's actions are Discrete");
    };
    let greedy: Vec<i64> = Vec::<i64>::try_from(log_probs.argmax(-1, false)).unwrap();
    let loaded = load_frames_in_python(&out, &frames, &spec.observation_shape, dir.path());
    let python_logits: Vec<f32> = numbers(&loaded, "forward")
        .iter()
        .map(|&v| v as f32)
        .collect();
    let python_log_probs = Tensor::from_slice(&python_logits)
        .view([rows as i64, -1])
        .log_softmax(-1, tch::Kind::Float);
    let python_log_probs: Vec<f64> = oxray_rl::to_host(&python_log_probs)
        .into_iter()
        .map(f64::from)
        .collect();
    assert_close(
        "PPO log-probabilities",
        &python_log_probs,
        &oxray_rl::to_host(&log_probs),
    );
    assert_close(
        "PPO values",
        &numbers(&loaded, "value"),
        &oxray_rl::to_host(&model.value(&frames_tensor)),
    );
    let python_greedy: Vec<i64> = numbers(&loaded, "act").iter().map(|a| *a as i64).collect();
    assert_eq!(python_greedy, greedy, "PPO greedy actions");

    let checkpoint_path = train(
        dir.path(),
        &format!(
            "algorithm: DQN\n{}training: {{num_steps_sampled_before_learning_starts: 32, \
             train_batch_size: 16, min_sample_timesteps_per_iteration: 64}}\nstop: {{iterations: 1}}\n",
            pong("[{atari_preprocessing: {frame_skip: 4, grayscale_obs: false}}]")
        ),
    );
    let out = dir.path().join("dqn.pt");
    export_torchscript(&checkpoint_path, &out).unwrap();
    let (model, spec) = module_of::<QNetwork>(&checkpoint_path);
    assert_eq!(spec.observation_shape, [84, 84, 3]);
    let (frames, frames_tensor) = random_frames(12, rows, spec.obs_dim());
    let q = model.q_values(&frames_tensor);
    let greedy: Vec<i64> = Vec::<i64>::try_from(q.argmax(-1, false)).unwrap();
    let loaded = load_frames_in_python(&out, &frames, &spec.observation_shape, dir.path());
    assert_close(
        "DQN Q-values",
        &numbers(&loaded, "forward"),
        &oxray_rl::to_host(&q),
    );
    let python_greedy: Vec<i64> = numbers(&loaded, "act").iter().map(|a| *a as i64).collect();
    assert_eq!(python_greedy, greedy, "DQN greedy actions");
}

/// Loads a Discrete SAC's `policy.pt` in Python and prints its greedy
/// actions, logits, twin Q-values of every action, and value.
const LOAD_DISCRETE_SAC_IN_PYTHON: &str = r#"
import json, sys, torch
policy = torch.jit.load(sys.argv[1])
obs = torch.tensor(json.load(open(sys.argv[2])), dtype=torch.float32)
with torch.no_grad():
    q1, q2 = policy.q_values(obs)
    print(json.dumps({"act": policy.act(obs, True).tolist(),
                      "explore": policy.act(obs, False).tolist(),
                      "forward": policy.forward(obs).flatten().tolist(),
                      "q1": q1.flatten().tolist(), "q2": q2.flatten().tolist(),
                      "value": policy.value(obs).tolist()}))
"#;

/// A SAC checkpoint on a Discrete space exported and loaded in Python acts
/// greedily as `oxray evaluate` does, gives oxray's logits and twin
/// Q-values of every action, and its value is the smaller Q of its action.
#[test]
fn discrete_sac_policy_round_trips_through_torchscript() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint_path = train(dir.path(), &small_sac("CartPole-v1"));
    let out = dir.path().join("policy.pt");
    export_torchscript(&checkpoint_path, &out).unwrap();

    let (model, spec) = module_of::<SoftActorCritic>(&checkpoint_path);
    let rows = 64;
    let (obs, obs_tensor) = random_obs(11, rows, spec.obs_dim(), 2.0);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
    let (mut actions, mut logp) = (vec![0.0f32; rows], vec![0.0f32; rows]);
    model.compute_actions(&obs_tensor, false, 0, &mut rng, &mut actions, &mut logp);
    let logits = oxray_rl::to_host(&model.action_dist_inputs(&obs_tensor));
    let policy = model.policy_expectation(&obs_tensor);
    let (q1, q2) = model.expected_q(&obs_tensor, &policy);
    let own = Tensor::from_slice(&actions).view([rows as i64, 1]);
    let (own_q1, own_q2) = model.replayed_q(&obs_tensor, &own);
    let value = oxray_rl::to_host(&own_q1.minimum(&own_q2));

    let loaded = load_in_python(
        LOAD_DISCRETE_SAC_IN_PYTHON,
        &out,
        &obs,
        spec.obs_dim(),
        dir.path(),
    );
    let python = |key: &str| numbers(&loaded, key);
    assert_eq!(
        python("act"),
        actions.iter().map(|&a| f64::from(a)).collect::<Vec<_>>()
    );
    assert_close("logits", &python("forward"), &logits);
    assert_close("Q1", &python("q1"), &oxray_rl::to_host(&q1));
    assert_close("Q2", &python("q2"), &oxray_rl::to_host(&q2));
    assert_close("value", &python("value"), &value);
    assert!(
        python("explore").iter().all(|a| [0.0, 1.0].contains(a)),
        "sampled actions are CartPole's"
    );
}
