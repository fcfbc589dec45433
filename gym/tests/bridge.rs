//! The Gymnasium bridge against real Gymnasium: trajectories equal to the
//! native envs', spaces and observation layout, autoreset and final
//! observations, wrappers and time limits, and Python exceptions as typed
//! errors with their tracebacks.
//!
//! Needs the venv that `scripts/env.sh` sets up (gymnasium, ale-py with
//! OpenCV, mujoco, minigrid).

use oxray_envs::{Actions, AutoresetMode, Backend, EnvConfig, EnvError, Space, WrapperConfig};
use oxray_gym::{make_vec, GymVectorEnv};
use pyo3::prelude::*;
use rand::{Rng, SeedableRng};
use std::path::Path;

/// Makes `tests/python` importable (the `oxray_test_envs` module).
fn with_test_envs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Start the bridge first, so the venv's paths are in place.
        let _ = GymVectorEnv::new(&gymnasium("CartPole-v1"), 1, AutoresetMode::SameStep)
            .expect("the bridge starts");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python");
        Python::attach(|py| {
            py.import("sys")
                .and_then(|sys| sys.getattr("path"))
                .and_then(|path| path.call_method1("insert", (0, dir.to_str().unwrap())))
                .expect("sys.path accepts the fixture directory");
        });
    });
}

fn gymnasium(id: &str) -> EnvConfig {
    EnvConfig {
        backend: Backend::Gymnasium,
        ..EnvConfig::new(id)
    }
}

fn kwargs(json: serde_json::Value) -> oxray_envs::Kwargs {
    json.as_object().expect("an object").clone()
}

#[test]
fn cartpole_through_the_bridge_equals_native_step_for_step() {
    let n = 4;
    let mut native = make_vec(&EnvConfig::new("CartPole-v1"), n, AutoresetMode::SameStep).unwrap();
    let mut bridged = make_vec(&gymnasium("CartPole-v1"), n, AutoresetMode::SameStep).unwrap();
    assert_eq!(
        bridged.single_observation_space(),
        native.single_observation_space()
    );
    assert_eq!(bridged.single_action_space(), native.single_action_space());
    native.reset(Some(1)).unwrap();
    bridged.reset(Some(1)).unwrap();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(7);
    let start_state = |rng: &mut rand_pcg::Pcg64| -> Vec<f64> {
        (0..4).map(|_| rng.gen_range(-0.05..0.05)).collect()
    };
    for index in 0..n {
        let state = start_state(&mut rng);
        native.set_state(index, &state).unwrap();
        bridged.set_state(index, &state).unwrap();
    }
    let mut episodes = 0;
    for step in 0..600 {
        let actions: Vec<i64> = (0..n).map(|_| rng.gen_range(0..2)).collect();
        let a = native.step(Actions::Discrete(&actions)).unwrap();
        let (a_obs, a_rew, a_term, a_trunc) = (
            a.obs.to_owned(),
            a.rewards.to_vec(),
            a.terminated.to_vec(),
            a.truncated.to_vec(),
        );
        let a_final = a.final_obs.map(|f| f.to_owned()).unwrap();
        let a_episodes = a.episodes.to_vec();
        let b = bridged.step(Actions::Discrete(&actions)).unwrap();
        assert_eq!(b.rewards, a_rew.as_slice(), "step {step}");
        assert_eq!(b.terminated, a_term.as_slice(), "step {step}");
        assert_eq!(b.truncated, a_trunc.as_slice(), "step {step}");
        assert_eq!(b.episodes, a_episodes.as_slice(), "step {step}");
        let b_final = b.final_obs.unwrap().to_owned();
        for index in 0..n {
            if a_term[index] || a_trunc[index] {
                assert_eq!(
                    b_final.row(index),
                    a_final.row(index),
                    "final obs, step {step}"
                );
            } else {
                assert_eq!(b.obs.row(index), a_obs.row(index), "obs, step {step}");
            }
        }
        // Autoreset drew different start states (different generators):
        // start both from one common state again.
        for index in 0..n {
            if a_term[index] || a_trunc[index] {
                episodes += 1;
                let state = start_state(&mut rng);
                native.set_state(index, &state).unwrap();
                bridged.set_state(index, &state).unwrap();
            }
        }
    }
    assert!(episodes >= 20, "only {episodes} episodes compared");
}

#[test]
fn python_exception_in_step_is_a_typed_error_with_the_traceback() {
    with_test_envs();
    let mut config = gymnasium("oxray_test_envs:CountingEnv");
    config.config = kwargs(serde_json::json!({"fail_at": 3}));
    let mut envs = make_vec(&config, 1, AutoresetMode::SameStep).unwrap();
    envs.reset(Some(0)).unwrap();
    envs.step(Actions::Discrete(&[1])).unwrap();
    envs.step(Actions::Discrete(&[1])).unwrap();
    let error = envs.step(Actions::Discrete(&[1])).unwrap_err();
    let EnvError::Python {
        env,
        operation,
        message,
        traceback,
    } = &error
    else {
        panic!("expected a Python error, got {error:?}");
    };
    assert_eq!(env, "oxray_test_envs:CountingEnv");
    assert_eq!(operation, "step");
    assert_eq!(message, "RuntimeError: sensor failure at step 3");
    assert!(traceback.contains("oxray_test_envs.py"), "{traceback}");
    assert!(traceback.contains("in step"), "{traceback}");
    assert!(error.to_string().contains("sensor failure"), "{error}");
}

#[test]
fn unknown_gymnasium_id_names_gymnasiums_complaint() {
    let error = match make_vec(&gymnasium("NoSuchEnv-v3"), 1, AutoresetMode::SameStep) {
        Err(error) => error,
        Ok(_) => panic!("an unknown id must not build"),
    };
    let EnvError::Python {
        operation, message, ..
    } = &error
    else {
        panic!("expected a Python error, got {error:?}");
    };
    assert_eq!(operation, "make");
    assert!(message.contains("NoSuchEnv"), "{message}");
}

#[test]
fn entry_point_kwargs_time_limit_and_same_step_final_observations() {
    with_test_envs();
    let mut config = gymnasium("oxray_test_envs:CountingEnv");
    config.config = kwargs(serde_json::json!({"episode_length": 10}));
    config.max_episode_steps = Some(4);
    let mut envs = make_vec(&config, 2, AutoresetMode::SameStep).unwrap();
    assert_eq!(envs.observation_dim(), 2);
    envs.reset(Some(0)).unwrap();
    for _ in 0..3 {
        let step = envs.step(Actions::Discrete(&[1, 0])).unwrap();
        assert!(step.episodes.is_empty());
    }
    let step = envs.step(Actions::Discrete(&[1, 0])).unwrap();
    assert_eq!(step.truncated, &[true, true]);
    assert_eq!(step.terminated, &[false, false]);
    let finals = step.final_obs.unwrap();
    assert_eq!(finals.row(0).to_vec(), vec![1.0, 0.4]);
    assert_eq!(finals.row(1).to_vec(), vec![-1.0, 0.4]);
    // The rows already hold the next episode's first observation.
    assert_eq!(step.obs.row(0).to_vec(), vec![0.0, 0.0]);
    assert_eq!(step.episodes.len(), 2);
    assert_eq!(
        (step.episodes[0].episode_return, step.episodes[0].length),
        (4.0, 4)
    );
}

#[test]
fn next_step_autoreset_reports_the_reset_step_apart() {
    with_test_envs();
    let mut config = gymnasium("oxray_test_envs:CountingEnv");
    config.config = kwargs(serde_json::json!({"episode_length": 2}));
    let mut envs = make_vec(&config, 1, AutoresetMode::NextStep).unwrap();
    envs.reset(None).unwrap();
    envs.step(Actions::Discrete(&[1])).unwrap();
    let end = envs.step(Actions::Discrete(&[1])).unwrap();
    assert_eq!(end.terminated, &[true]);
    assert!(end.final_obs.is_none());
    assert_eq!(end.obs.row(0).to_vec(), vec![1.0, 0.2]);
    assert_eq!(end.episodes.len(), 1);
    let reset = envs.step(Actions::Discrete(&[1])).unwrap();
    assert_eq!(
        (reset.rewards, reset.terminated),
        (&[0.0][..], &[false][..])
    );
    assert_eq!(reset.obs.row(0).to_vec(), vec![0.0, 0.0]);
    assert_eq!(envs.step(Actions::Discrete(&[1])).unwrap().rewards, &[1.0]);
    let next_end = envs.step(Actions::Discrete(&[1])).unwrap();
    assert_eq!(
        next_end.episodes[0].length, 2,
        "the reset step is no part of an episode"
    );
}

#[test]
fn dict_tuple_discrete_and_uint8_observations_flatten_in_gymnasium_order() {
    with_test_envs();
    let mut envs = make_vec(
        &gymnasium("oxray_test_envs:DictEnv"),
        2,
        AutoresetMode::SameStep,
    )
    .unwrap();
    let Space::Dict(parts) = envs.single_observation_space() else {
        panic!("a Dict space, got {}", envs.single_observation_space());
    };
    assert_eq!(
        parts.keys().collect::<Vec<_>>(),
        ["heading", "pair", "position"]
    );
    assert_eq!(envs.observation_dim(), 4 + (3 + 2) + 4);
    let first = envs.reset(Some(3)).unwrap().row(0).to_vec();
    // heading 1 of Discrete(4, start=1), pair ([1,0,0], 0), position zeros
    let expected_first = [1., 0., 0., 0., 1., 0., 0., 1., 0., 0., 0., 0., 0.];
    assert_eq!(first, expected_first);
    let step = envs
        .step(Actions::Continuous(&[0.5, 0.25, -1.0, 1.0]))
        .unwrap();
    assert_eq!(step.rewards, &[0.75, 0.0]);
    let expected = [0., 1., 0., 0., 1., 0., 1., 0., 1., 1., 1., 1., 1.];
    assert_eq!(step.obs.row(1).to_vec(), expected);
}

#[test]
fn minigrid_with_filtered_dict_observations() {
    let mut config = gymnasium("MiniGrid-Empty-5x5-v0");
    config.wrappers = vec![WrapperConfig::FilterObservation(vec![
        "direction".into(),
        "image".into(),
    ])];
    let mut envs = make_vec(&config, 2, AutoresetMode::SameStep).unwrap();
    assert_eq!(envs.observation_dim(), 4 + 7 * 7 * 3);
    assert!(matches!(
        envs.single_action_space(),
        Space::Discrete { n: 7, start: 0 }
    ));
    let obs = envs.reset(Some(0)).unwrap().to_owned();
    for row in obs.rows() {
        assert_eq!(row.iter().take(4).sum::<f32>(), 1.0, "direction is one-hot");
        assert!(row
            .iter()
            .skip(4)
            .all(|&x| (0.0..=255.0).contains(&x) && x.fract() == 0.0));
    }
    envs.step(Actions::Discrete(&[2, 1])).unwrap();

    // Unfiltered, its `mission` is a string, which no model reads: the error
    // names the key and the wrapper that drops it.
    config.wrappers.clear();
    let error = make_vec(&config, 1, AutoresetMode::SameStep)
        .err()
        .expect("a Text observation is refused")
        .to_string();
    assert!(error.contains("Dict key 'mission': space "), "{error}");
    assert!(error.contains("has no flat form"), "{error}");
    assert!(error.contains("filter_observation"), "{error}");
}

/// A wrapper named `module:Class` is imported from its package: minigrid's
/// `ImgObsWrapper` leaves the 7x7x3 `uint8` image, the rank-3 byte box
/// that gets a CNN; on a native env the same entry is an error naming it.
#[test]
fn a_python_wrapper_is_imported_by_its_module_and_class() {
    let mut config = gymnasium("MiniGrid-Empty-5x5-v0");
    config.wrappers = vec![WrapperConfig::Python {
        class: "minigrid.wrappers:ImgObsWrapper".into(),
        kwargs: Default::default(),
    }];
    let mut envs = make_vec(&config, 2, AutoresetMode::SameStep).unwrap();
    let Space::Box(image) = envs.single_observation_space() else {
        panic!("an image box, got {:?}", envs.single_observation_space());
    };
    assert_eq!(image.shape(), [7, 7, 3]);
    assert_eq!(image.dtype(), oxray_envs::DType::U8);
    let obs = envs.reset(Some(0)).unwrap().to_owned();
    assert!(obs.iter().any(|&x| x > 0.0) && obs.iter().all(|&x| x.fract() == 0.0));

    let mut native = EnvConfig::new("CartPole-v1");
    native.wrappers = config.wrappers.clone();
    let Err(error) = make_vec(&native, 1, AutoresetMode::SameStep) else {
        panic!("a Python wrapper around a native env");
    };
    let message = error.to_string();
    assert!(
        message.contains("minigrid.wrappers:ImgObsWrapper"),
        "{message}"
    );
    assert!(message.contains("backend: gymnasium"), "{message}");
}

#[test]
fn gymnasium_wrappers_apply_to_every_sub_env() {
    let mut config = gymnasium("Pendulum-v1");
    config.wrappers = vec![
        WrapperConfig::FrameStack(3),
        WrapperConfig::ClipAction(Default::default()),
    ];
    config.max_episode_steps = Some(5);
    let mut envs = make_vec(&config, 2, AutoresetMode::SameStep).unwrap();
    assert_eq!(envs.observation_dim(), 9);
    let first = envs.reset(Some(0)).unwrap().to_owned();
    // Reset padding: three copies of the first observation.
    assert_eq!(
        first.row(0).slice(ndarray::s![0..3]),
        first.row(0).slice(ndarray::s![6..9])
    );
    for _ in 0..4 {
        // Far outside [-2, 2]: ClipAction makes it legal.
        envs.step(Actions::Continuous(&[100.0, -100.0])).unwrap();
    }
    let last = envs.step(Actions::Continuous(&[100.0, -100.0])).unwrap();
    assert_eq!(last.truncated, &[true, true]);
}

/// Steps `id` in Gymnasium itself, in the venv's Python: two sub-envs of a
/// `SyncVectorEnv` (same-step autoreset) built by `make` (a Python
/// expression over `gym`), reset with `seed`, then `actions` (one row per
/// step); the observations after the reset and each step, as `float32`.
fn gymnasium_observations(make: &str, seed: u64, actions: &[Vec<f64>]) -> Vec<Vec<f32>> {
    let script = format!(
        r#"
import json, sys
import numpy as np, gymnasium as gym, ale_py, mujoco
gym.register_envs(ale_py)
mujoco.set_mju_user_warning(lambda message: None)  # no MUJOCO_LOG.TXT here either
envs = gym.vector.SyncVectorEnv([lambda: {make}] * 2,
                                autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
rows = [envs.reset(seed={seed})[0]]
for action in json.loads(sys.stdin.read()):
    action = np.asarray(action, dtype=envs.action_space.dtype).reshape(envs.action_space.shape)
    rows.append(envs.step(action)[0])
print(json.dumps([np.asarray(r, dtype=np.float32).ravel().tolist() for r in rows]))
"#
    );
    let mut child = std::process::Command::new(oxray_gym::python_executable())
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the venv's Python runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(actions).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The same through the bridge: two sub-envs of `config`, whose
/// observations have `obs_dim` values, reset with `seed`, then `actions`
/// (as whole numbers when the action space is Discrete).
fn bridged_observations(
    config: &EnvConfig,
    obs_dim: usize,
    seed: u64,
    actions: &[Vec<f64>],
) -> Vec<Vec<f32>> {
    let mut envs = make_vec(config, 2, AutoresetMode::SameStep).unwrap();
    assert_eq!(envs.observation_dim(), obs_dim);
    let discrete = matches!(envs.single_action_space(), Space::Discrete { .. });
    let mut rows = vec![envs.reset(Some(seed)).unwrap().iter().copied().collect()];
    for action in actions {
        let (indices, values): (Vec<i64>, Vec<f32>) =
            action.iter().map(|&a| (a as i64, a as f32)).unzip();
        let action = if discrete {
            Actions::Discrete(&indices)
        } else {
            Actions::Continuous(&values)
        };
        rows.push(envs.step(action).unwrap().obs.iter().copied().collect());
    }
    rows
}

/// MuJoCo and Atari envs (with Gymnasium's Atari preprocessing, which needs
/// OpenCV, and a frame stack) through the bridge give the observations
/// Gymnasium itself gives for the same seed and actions, as the packages
/// `scripts/env.sh` installs them; MuJoCo leaves no log file behind.
#[test]
fn mujoco_and_atari_through_the_bridge_are_gymnasiums_own() {
    let mut rng = rand_pcg::Pcg64::seed_from_u64(3);
    let steps = 12;

    let actions: Vec<Vec<f64>> = (0..steps)
        .map(|_| (0..12).map(|_| rng.gen_range(-1.0..1.0)).collect())
        .collect();
    // MuJoCo's warnings (Gymnasium's models use a deprecated attribute) go
    // to the log, not to a MUJOCO_LOG.TXT in the working directory.
    let mujoco_log = Path::new("MUJOCO_LOG.TXT");
    let _ = std::fs::remove_file(mujoco_log);
    let bridged = bridged_observations(&gymnasium("HalfCheetah-v5"), 17, 5, &actions);
    assert!(!mujoco_log.exists(), "MuJoCo wrote its log file");
    let expected = gymnasium_observations(r#"gym.make("HalfCheetah-v5")"#, 5, &actions);
    assert_eq!(bridged, expected, "HalfCheetah-v5");

    let mut pong = gymnasium("ALE/Pong-v5");
    pong.config = kwargs(serde_json::json!({"frameskip": 1}));
    pong.wrappers = vec![
        WrapperConfig::AtariPreprocessing(Default::default()),
        WrapperConfig::FrameStack(4),
    ];
    let actions: Vec<Vec<f64>> = (0..steps)
        .map(|_| (0..2).map(|_| f64::from(rng.gen_range(0..6u8))).collect())
        .collect();
    let bridged = bridged_observations(&pong, 4 * 84 * 84, 8, &actions);
    let expected = gymnasium_observations(
        r#"gym.wrappers.FrameStackObservation(gym.wrappers.AtariPreprocessing(gym.make("ALE/Pong-v5", frameskip=1)), 4)"#,
        8,
        &actions,
    );
    assert!(
        bridged.iter().flatten().any(|&x| x > 0.0),
        "Pong's frames are not blank"
    );
    assert_eq!(bridged, expected, "ALE/Pong-v5");
}
