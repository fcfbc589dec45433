//! Vector envs: Gymnasium 1.x autoreset in both modes, finished-episode
//! statistics, the contiguous observation buffer, seeding determinism, the
//! fast path agreeing with the sync path, and the registry's errors.

use oxray_envs::{
    make, make_vec, make_vec_with, Actions, AutoresetMode, Env, EnvError, FinishedEpisode,
    MakeOptions, Value, VecOptions, VectorEnv, Vectorization,
};

fn options(mode: AutoresetMode, vectorization: Vectorization, limit: Option<u64>) -> VecOptions {
    VecOptions {
        make: MakeOptions {
            max_episode_steps: limit,
            ..Default::default()
        },
        autoreset_mode: mode,
        vectorization,
    }
}

/// A fixed, varied action pattern for `n` discrete sub-envs at step `t`.
fn pattern(n: usize, t: usize) -> Vec<i64> {
    (0..n)
        .map(|i| ((i * 7 + t * 3 + t / 5) % 2) as i64)
        .collect()
}

#[derive(Debug, PartialEq)]
struct Record {
    obs: Vec<f32>,
    rewards: Vec<f64>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    final_obs: Option<Vec<f32>>,
    episodes: Vec<FinishedEpisode>,
}

fn run(
    env: &mut dyn VectorEnv,
    seed: u64,
    steps: usize,
    actions: impl Fn(usize) -> Vec<i64>,
) -> Vec<Record> {
    env.reset(Some(seed)).unwrap();
    (0..steps)
        .map(|t| {
            let a = actions(t);
            let s = env.step(Actions::Discrete(&a)).unwrap();
            Record {
                obs: s.obs.as_slice().expect("contiguous").to_vec(),
                rewards: s.rewards.to_vec(),
                terminated: s.terminated.to_vec(),
                truncated: s.truncated.to_vec(),
                final_obs: s.final_obs.map(|f| f.as_slice().unwrap().to_vec()),
                episodes: s.episodes.to_vec(),
            }
        })
        .collect()
}

#[test]
fn next_step_autoreset_resets_on_the_following_step() {
    let n = 4;
    let mut env = make_vec_with(
        "CartPole-v1",
        n,
        &options(AutoresetMode::NextStep, Vectorization::Auto, None),
    )
    .unwrap();
    let records = run(env.as_mut(), 3, 120, |t| pattern(n, t));
    let mut singles: Vec<Box<dyn Env>> = (0..n).map(|_| make("CartPole-v1").unwrap()).collect();
    let mut returns = vec![0.0; n];
    let mut lengths = vec![0u64; n];
    let mut done_before = vec![false; n];
    let mut episodes_seen = 0;
    for (i, env) in singles.iter_mut().enumerate() {
        env.reset(Some(3 + i as u64), None).unwrap();
    }
    for (t, record) in records.iter().enumerate() {
        for i in 0..n {
            let row = &record.obs[i * 4..(i + 1) * 4];
            if done_before[i] {
                assert_eq!(record.rewards[i], 0.0, "reset step has reward 0");
                assert!(!record.terminated[i] && !record.truncated[i]);
                // The sub-env continues its own generator, as a reset(None) does.
                let reset = singles[i].reset(None, None).unwrap();
                assert_eq!(row, reset.obs, "step {t} env {i}: reset observation");
                returns[i] = 0.0;
                lengths[i] = 0;
                done_before[i] = false;
                continue;
            }
            let s = singles[i].step(&Value::Int(pattern(n, t)[i])).unwrap();
            for (a, b) in row.iter().zip(s.obs) {
                assert!(
                    (a - b).abs() <= 1e-6,
                    "step {t} env {i}: {row:?} vs {:?}",
                    s.obs
                );
            }
            assert_eq!(
                (record.rewards[i], record.terminated[i], record.truncated[i]),
                (s.reward, s.terminated, s.truncated)
            );
            returns[i] += s.reward;
            lengths[i] += 1;
            if s.terminated || s.truncated {
                done_before[i] = true;
                let expected = FinishedEpisode {
                    env_index: i,
                    episode_return: returns[i],
                    length: lengths[i],
                };
                assert!(
                    record.episodes.contains(&expected),
                    "step {t}: {:?}",
                    record.episodes
                );
                episodes_seen += 1;
            }
        }
        assert_eq!(
            record.episodes.len(),
            record
                .terminated
                .iter()
                .zip(&record.truncated)
                .filter(|(a, b)| **a || **b)
                .count()
        );
        assert!(record.final_obs.is_none());
    }
    assert!(
        episodes_seen >= 8,
        "the pattern ends many episodes ({episodes_seen})"
    );
}

#[test]
fn same_step_autoreset_exposes_final_observations() {
    let n = 3;
    let next = run(
        make_vec_with(
            "CartPole-v1",
            n,
            &options(AutoresetMode::NextStep, Vectorization::Sync, None),
        )
        .unwrap()
        .as_mut(),
        8,
        60,
        |_| vec![1; n],
    );
    let mut same_env = make_vec_with(
        "CartPole-v1",
        n,
        &options(AutoresetMode::SameStep, Vectorization::Sync, None),
    )
    .unwrap();
    assert_eq!(same_env.autoreset_mode(), AutoresetMode::SameStep);
    let same = run(same_env.as_mut(), 8, 60, |_| vec![1; n]);
    // Always pushing right, every sub-env falls at the same step in both runs
    // (first episodes); compare that first ending.
    let first_end = next
        .iter()
        .position(|r| r.terminated.iter().any(|x| *x))
        .expect("an episode ends");
    let (a, b) = (&next[first_end], &same[first_end]);
    for i in (0..n).filter(|i| a.terminated[*i]) {
        assert!(b.terminated[i], "same flags at the final step");
        assert_eq!(
            b.rewards[i], a.rewards[i],
            "the final step keeps its reward"
        );
        let final_obs = b
            .final_obs
            .as_ref()
            .expect("final observations in SameStep");
        assert_eq!(
            &final_obs[i * 4..(i + 1) * 4],
            &a.obs[i * 4..(i + 1) * 4],
            "final obs is NextStep's obs"
        );
        assert_ne!(
            &b.obs[i * 4..(i + 1) * 4],
            &a.obs[i * 4..(i + 1) * 4],
            "obs row already reset"
        );
        assert!(
            b.obs[i * 4..(i + 1) * 4].iter().all(|x| x.abs() <= 0.05),
            "a fresh reset state"
        );
    }
    assert_eq!(a.episodes, b.episodes);
    // SameStep never spends a step on resets: no zero rewards.
    assert!(same.iter().all(|r| r.rewards.iter().all(|x| *x == 1.0)));
    assert!(next.iter().any(|r| r.rewards.contains(&0.0)));
}

#[test]
fn fast_path_matches_sync_path() {
    // 5 copies run in the padded remainder block only; 37 also fill a whole block.
    let cases = [
        ("Pendulum-v1", 5),
        ("Acrobot-v1", 5),
        ("MountainCar-v0", 37),
        ("CartPole-v1", 5),
        ("CartPole-v1", 37),
    ];
    for (id, n) in cases {
        for mode in [AutoresetMode::NextStep, AutoresetMode::SameStep] {
            let mut fast =
                make_vec_with(id, n, &options(mode, Vectorization::Auto, Some(37))).unwrap();
            let mut sync =
                make_vec_with(id, n, &options(mode, Vectorization::Sync, Some(37))).unwrap();
            fast.reset(Some(21)).unwrap();
            sync.reset(Some(21)).unwrap();
            for t in 0..150 {
                let (a, b) = match fast.single_action_space() {
                    oxray_envs::Space::Discrete { n: k, .. } => {
                        let actions: Vec<i64> =
                            (0..n).map(|i| ((i + t) % *k as usize) as i64).collect();
                        (
                            fast.step(Actions::Discrete(&actions)).unwrap(),
                            sync.step(Actions::Discrete(&actions)).unwrap(),
                        )
                    }
                    _ => {
                        let actions: Vec<f32> =
                            (0..n).map(|i| ((i + t) % 5) as f32 - 2.0).collect();
                        (
                            fast.step(Actions::Continuous(&actions)).unwrap(),
                            sync.step(Actions::Continuous(&actions)).unwrap(),
                        )
                    }
                };
                let diff = a
                    .obs
                    .iter()
                    .zip(b.obs.iter())
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max);
                assert!(diff <= 1e-5, "{id} {mode:?} step {t}: obs differ by {diff}");
                assert_eq!(
                    (a.terminated, a.truncated, a.episodes),
                    (b.terminated, b.truncated, b.episodes),
                    "{id} step {t}"
                );
                assert_eq!(a.rewards, b.rewards, "{id} step {t}");
            }
        }
    }
}

#[test]
fn same_seed_same_episodes_other_seed_other_episodes() {
    for id in oxray_envs::ids() {
        let collect = |seed| {
            let mut env = make_vec(&id, 3, Some(seed)).unwrap();
            let mut obs = env.observations().as_slice().unwrap().to_vec();
            let zeros = vec![0.0f32; 3];
            let zero_ids = vec![0i64; 3];
            for _ in 0..30 {
                let actions = if env.single_action_space().as_box().is_some() {
                    Actions::Continuous(&zeros)
                } else {
                    Actions::Discrete(&zero_ids)
                };
                obs.extend_from_slice(env.step(actions).unwrap().obs.as_slice().unwrap());
            }
            obs
        };
        assert_eq!(collect(5), collect(5), "{id}");
        assert_ne!(collect(5), collect(6), "{id}");
        let mut single = make(&id).unwrap();
        let first = single.reset(Some(5), None).unwrap().obs.to_vec();
        assert_eq!(
            single.reset(Some(5), None).unwrap().obs,
            &first[..],
            "{id}: scalar reset"
        );
        assert_eq!(
            &collect(5)[..first.len()],
            &first[..],
            "{id}: sub-env 0 is seeded like a scalar env"
        );
    }
}

#[test]
fn observations_are_one_contiguous_row_major_buffer() {
    let env = make_vec("Acrobot-v1", 7, Some(0)).unwrap();
    let obs = env.observations();
    assert_eq!(obs.shape(), &[7, 6]);
    assert!(obs.is_standard_layout());
    assert_eq!(obs.as_slice().unwrap().len(), 42);
    assert_eq!(env.observation_dim(), 6);
}

#[test]
fn bad_vector_actions_are_errors() {
    let mut env = make_vec("CartPole-v1", 3, Some(0)).unwrap();
    let err = env
        .step(Actions::Discrete(&[0, 1]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a buffer of 2 values") && err.contains("3 values"),
        "{err}"
    );
    let err = env
        .step(Actions::Discrete(&[0, 5, 1]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "CartPole-v1 (sub-env 1): action 5 is not in the action space Discrete(2)"
    );
    assert!(env.step(Actions::Continuous(&[0.0, 0.0, 0.0])).is_err());
    let mut pendulum = make_vec("Pendulum-v1", 2, Some(0)).unwrap();
    let err = pendulum
        .step(Actions::Continuous(&[0.0, f32::NAN]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("sub-env 1") && err.contains("NaN"), "{err}");
    let mut sync = make_vec_with(
        "Pendulum-v1",
        2,
        &options(AutoresetMode::NextStep, Vectorization::Sync, None),
    )
    .unwrap();
    sync.reset(Some(0)).unwrap();
    let err = sync
        .step(Actions::Continuous(&[f32::NAN, 0.0]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("sub-env 0") && err.contains("NaN"), "{err}");
    assert!(env.set_state(3, &[0.0; 4]).is_err());
    assert!(env.set_state(0, &[0.0; 3]).is_err());
}

#[test]
fn registry_names_close_ids_and_applies_kwargs() {
    let err = make("Cartpole-v0").err().expect("unknown id");
    let EnvError::UnknownEnv { suggestions, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(suggestions[0], "CartPole-v1");
    assert!(
        err.to_string().contains("closest known ids: CartPole-v1"),
        "{err}"
    );
    assert!(make_vec("Pendulm-v1", 2, None).is_err());
    assert_eq!(oxray_envs::ids().len(), 5);
    let limits: Vec<_> = oxray_envs::specs()
        .iter()
        .map(|s| (s.id.clone(), s.max_episode_steps))
        .collect();
    assert!(limits.contains(&("MountainCarContinuous-v0".to_string(), Some(999))));

    let mut kwargs = oxray_envs::Kwargs::new();
    kwargs.insert("g".into(), 0.0.into());
    let options = MakeOptions {
        kwargs,
        ..Default::default()
    };
    let mut weightless = oxray_envs::make_with("Pendulum-v1", &options).unwrap();
    weightless.reset(Some(0), None).unwrap();
    weightless.set_state(&[1.0, 0.0]).unwrap();
    let obs = weightless
        .step(&Value::Floats(vec![0.0]))
        .unwrap()
        .obs
        .to_vec();
    assert_eq!(
        obs,
        vec![(1.0f64).cos() as f32, (1.0f64).sin() as f32, 0.0],
        "no gravity, no motion"
    );
    let mut bad = oxray_envs::Kwargs::new();
    bad.insert("gravity".into(), 1.0.into());
    let err = oxray_envs::make_with(
        "Pendulum-v1",
        &MakeOptions {
            kwargs: bad,
            ..Default::default()
        },
    )
    .err()
    .expect("unknown keyword");
    assert!(err.to_string().contains("`gravity`"), "{err}");
}
