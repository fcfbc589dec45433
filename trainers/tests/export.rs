//! TorchScript export round trip: a trained checkpoint's policy, exported
//! and loaded with `torch.jit.load` in Python, gives the greedy actions
//! `oxray evaluate` takes (the EnvRunner's mode) exactly, and the same
//! distribution inputs, for a Discrete and a Box action space; its parameters
//! carry PyTorch-style names.

use std::path::Path;
use std::process::Command;

use oxray_rl::checkpoint;
use oxray_rl::env_runner::module_spec;
use oxray_rl::rl_module::{ActionSpace, ActorCritic, ModuleKind, RLModule};
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
    let saved = checkpoint::load(&checkpoint_path).unwrap();
    let config = ExperimentConfig::from_json(&saved.config).unwrap();
    let spec = module_spec(&config.env, &config.model, ModuleKind::ActorCritic).unwrap();
    let mut model = ActorCritic::new(&spec, Device::Cpu);
    model.set_weights(&saved.learner.weights).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let rows = 256;
    let obs: Vec<f32> = (0..rows * spec.obs_dim())
        .map(|_| rng.gen_range(-obs_scale..obs_scale))
        .collect();
    let action_dim = spec.action_space.action_dim();
    let mut actions = vec![0.0f32; rows * action_dim];
    let mut logp = vec![0.0f32; rows];
    let obs_tensor = Tensor::from_slice(&obs).view([rows as i64, spec.obs_dim() as i64]);
    let values = oxray_rl::to_host(&model.value(&obs_tensor));
    model
        .distribution(&obs_tensor)
        .sample_into(&mut rng, false, &mut actions, &mut logp);
    if let ActionSpace::Box { low, high } = &spec.action_space {
        for (i, a) in actions.iter_mut().enumerate() {
            *a = a.clamp(low[i % action_dim], high[i % action_dim]);
        }
    }

    let obs_json: Vec<&[f32]> = obs.chunks(spec.obs_dim()).collect();
    let obs_path = dir.path().join("obs.json");
    std::fs::write(&obs_path, serde_json::to_string(&obs_json).unwrap()).unwrap();
    let output = Command::new(python())
        .args(["-c", LOAD_IN_PYTHON])
        .arg(&out)
        .arg(&obs_path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let loaded: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
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
