//! Wrappers: each changes exactly what Gymnasium's namesake changes, they
//! compose, and bad input is an error that names the env, action and space.

use oxray_envs::wrappers::{
    ClipAction, FrameStack, NormalizeObservation, NormalizeReward, RescaleAction,
    TransformObservation, TransformReward, Wrap,
};
use oxray_envs::{make, make_with, Env, EnvError, MakeOptions, Space, Value};

fn torque(x: f64) -> Value {
    Value::Floats(vec![x])
}

/// Steps `env` with `actions`, returning (obs, reward, terminated, truncated) per step.
fn rollout(env: &mut dyn Env, seed: u64, actions: &[Value]) -> Vec<(Vec<f32>, f64, bool, bool)> {
    env.reset(Some(seed), None).unwrap();
    actions
        .iter()
        .map(|a| {
            let s = env.step(a).unwrap();
            (s.obs.to_vec(), s.reward, s.terminated, s.truncated)
        })
        .collect()
}

#[test]
fn registry_time_limit_truncates_exactly_at_the_limit() {
    let mut env = make("Pendulum-v1").unwrap();
    env.reset(Some(0), None).unwrap();
    for step in 1..=200 {
        let s = env.step(&torque(0.0)).unwrap();
        assert_eq!(s.truncated, step == 200, "step {step}");
        assert!(!s.terminated);
    }
    let options = MakeOptions {
        max_episode_steps: Some(7),
        ..Default::default()
    };
    let mut short = make_with("Pendulum-v1", &options).unwrap();
    let flags: Vec<bool> = rollout(short.as_mut(), 0, &vec![torque(1.0); 7])
        .iter()
        .map(|s| s.3)
        .collect();
    assert_eq!(flags, [false, false, false, false, false, false, true]);
    // A reset starts the count again.
    assert!(!rollout(short.as_mut(), 0, &[torque(1.0)])[0].3);
}

#[test]
fn episode_statistics_report_return_and_length_on_the_last_step() {
    let mut env = make("CartPole-v1").unwrap().record_episode_statistics();
    env.reset(Some(4), None).unwrap();
    let (mut total, mut length) = (0.0, 0);
    loop {
        let s = env.step(&Value::Int(1)).unwrap();
        total += s.reward;
        length += 1;
        if s.done() {
            let episode = s.info.episode.expect("statistics on the last step");
            assert_eq!((episode.episode_return, episode.length), (total, length));
            break;
        }
        assert!(s.info.episode.is_none());
    }
}

#[test]
fn clip_action_clips_into_the_bounds() {
    let mut clipped = ClipAction::new(make("MountainCarContinuous-v0").unwrap()).unwrap();
    assert!(clipped.action_space().contains(&torque(1e6)));
    let mut plain = make("MountainCarContinuous-v0").unwrap();
    let wild = rollout(&mut clipped, 3, &[torque(7.0), torque(-3.0), torque(0.5)]);
    let tame = rollout(plain.as_mut(), 3, &[torque(1.0), torque(-1.0), torque(0.5)]);
    assert_eq!(
        wild, tame,
        "clipping before the env: rewards see the clipped force too"
    );
    assert!(
        ClipAction::new(make("CartPole-v1").unwrap()).is_err(),
        "needs a Box action space"
    );
}

#[test]
fn rescale_action_maps_the_new_range_onto_the_bounds() {
    let mut rescaled = RescaleAction::new(make("Pendulum-v1").unwrap(), -1.0, 1.0).unwrap();
    let Space::Box(space) = rescaled.action_space() else {
        panic!("a box")
    };
    assert_eq!((space.low(), space.high()), (&[-1.0][..], &[1.0][..]));
    let mut plain = make("Pendulum-v1").unwrap();
    let a = rollout(&mut rescaled, 9, &[torque(0.5), torque(-1.0), torque(0.0)]);
    let b = rollout(plain.as_mut(), 9, &[torque(1.0), torque(-2.0), torque(0.0)]);
    assert_eq!(a, b);
    let err = rescaled.step(&torque(1.5)).unwrap_err().to_string();
    assert!(
        err.contains("Pendulum-v1") && err.contains("[1.5]") && err.contains("Box(-1.0, 1.0"),
        "{err}"
    );
}

#[test]
fn normalize_observation_uses_running_statistics() {
    let mut env = NormalizeObservation::new(make("CartPole-v1").unwrap(), 1e-8);
    let mut raw_env = make("CartPole-v1").unwrap();
    let mut raw = vec![raw_env.reset(Some(1), None).unwrap().obs.to_vec()];
    env.reset(Some(1), None).unwrap();
    let mut last = Vec::new();
    for i in 0..8 {
        let action = Value::Int(i % 2);
        raw.push(raw_env.step(&action).unwrap().obs.to_vec());
        last = env.step(&action).unwrap().obs.to_vec();
    }
    let stats = env.statistics();
    let count = raw.len() as f64 + 1e-4;
    for j in 0..4 {
        let mean = raw.iter().map(|o| f64::from(o[j])).sum::<f64>() / count;
        assert!(
            (stats.mean[j] - mean).abs() < 1e-9,
            "running mean of element {j}"
        );
        let expected = (f64::from(raw[8][j]) - stats.mean[j]) / (stats.var[j] + 1e-8).sqrt();
        assert!((f64::from(last[j]) - expected).abs() < 1e-5);
    }
    assert!(matches!(env.observation_space(), Space::Box(b) if !b.is_bounded()));
}

#[test]
fn normalize_reward_divides_by_the_return_deviation() {
    let mut env = NormalizeReward::new(make("CartPole-v1").unwrap(), 0.99, 1e-8);
    env.reset(Some(2), None).unwrap();
    let mut discounted = 0.0;
    let mut returns = Vec::new();
    for _ in 0..5 {
        let s = env.step(&Value::Int(0)).unwrap();
        let (reward, terminated) = (s.reward, s.terminated);
        discounted = discounted * 0.99 + 1.0;
        returns.push(discounted);
        let var = env.statistics().var[0];
        assert!((reward - 1.0 / (var + 1e-8).sqrt()).abs() < 1e-12);
        assert!(!terminated);
    }
    let count = returns.len() as f64 + 1e-4;
    let mean = returns.iter().sum::<f64>() / count;
    assert!((env.statistics().mean[0] - mean).abs() < 1e-9);
}

#[test]
fn transforms_and_frame_stack_compose() {
    let doubled = TransformObservation::new(
        make("CartPole-v1").unwrap(),
        |obs: &[f32], out: &mut [f32]| out.iter_mut().zip(obs).for_each(|(o, x)| *o = 2.0 * x),
        make("CartPole-v1").unwrap().observation_space().clone(),
    );
    let scaled = TransformReward::new(doubled, |r| r * 10.0);
    let mut stacked = FrameStack::new(scaled, 3).unwrap();
    assert_eq!(stacked.observation_space().shape(), vec![3, 4]);
    let mut plain = make("CartPole-v1").unwrap();
    let first = plain.reset(Some(6), None).unwrap().obs.to_vec();
    let reset = stacked.reset(Some(6), None).unwrap().obs.to_vec();
    let twice: Vec<f32> = first.iter().map(|x| 2.0 * x).collect();
    assert_eq!(
        reset,
        [twice.clone(), twice.clone(), twice.clone()].concat(),
        "reset padding"
    );
    let next = plain.step(&Value::Int(1)).unwrap();
    let next_twice: Vec<f32> = next.obs.iter().map(|x| 2.0 * x).collect();
    let reward = next.reward;
    let s = stacked.step(&Value::Int(1)).unwrap();
    assert_eq!(
        s.obs,
        [twice.clone(), twice, next_twice].concat(),
        "oldest first, newest last"
    );
    assert_eq!(s.reward, reward * 10.0);
    assert!(FrameStack::new(make("CartPole-v1").unwrap(), 0).is_err());
}

#[test]
fn bad_actions_and_states_are_errors_naming_the_problem() {
    let mut env = make("CartPole-v1").unwrap();
    assert!(matches!(
        env.step(&Value::Int(0)),
        Err(EnvError::ResetNeeded { .. })
    ));
    env.reset(Some(0), None).unwrap();
    let err = env.step(&Value::Int(2)).unwrap_err().to_string();
    assert_eq!(
        err,
        "CartPole-v1: action 2 is not in the action space Discrete(2)"
    );
    let err = env.step(&torque(1.0)).unwrap_err().to_string();
    assert!(err.contains("[1.0]"), "{err}");
    let err = env.set_state(&[0.0, 0.0]).unwrap_err().to_string();
    assert_eq!(err, "CartPole-v1: invalid state: expected 4 values, got 2");
    assert!(env.set_state(&[0.0, f64::NAN, 0.0, 0.0]).is_err());

    let mut pendulum = make("Pendulum-v1").unwrap();
    pendulum.reset(Some(0), None).unwrap();
    assert!(
        pendulum.step(&torque(50.0)).is_ok(),
        "Gymnasium clips Pendulum's torque"
    );
    let err = pendulum.step(&torque(f64::NAN)).unwrap_err().to_string();
    assert!(err.contains("Pendulum-v1") && err.contains("NaN"), "{err}");
    assert!(pendulum.step(&Value::Floats(vec![0.0, 1.0])).is_err());
}

#[test]
fn set_state_round_trips_through_state() {
    let mut env = make("Acrobot-v1").unwrap();
    env.reset(Some(0), None).unwrap();
    env.set_state(&[0.5, -0.25, 1.0, -2.0]).unwrap();
    assert_eq!(env.state().unwrap(), vec![0.5, -0.25, 1.0, -2.0]);
    env.step(&Value::Int(2)).unwrap();
    assert_ne!(env.state().unwrap(), vec![0.5, -0.25, 1.0, -2.0]);
}

#[test]
fn cartpole_rewards_after_termination_follow_gymnasium() {
    // Expected values recorded from Gymnasium 1.2.2 for the same sequence:
    // fall, keep falling, set upright, fall again, then reset and fall.
    for (sutton_barto, expected) in [
        (
            false,
            [
                (1.0, true),
                (0.0, true),
                (1.0, false),
                (0.0, true),
                (1.0, true),
            ],
        ),
        (
            true,
            [
                (-1.0, true),
                (-1.0, true),
                (0.0, false),
                (-1.0, true),
                (-1.0, true),
            ],
        ),
    ] {
        let mut kwargs = oxray_envs::Kwargs::new();
        kwargs.insert("sutton_barto_reward".into(), sutton_barto.into());
        let options = MakeOptions {
            kwargs,
            ..Default::default()
        };
        let mut env = make_with("CartPole-v1", &options).unwrap();
        env.reset(Some(0), None).unwrap();
        let fallen = [0.0, 0.0, 0.25, 0.0];
        let mut got = Vec::new();
        for state in [Some(fallen), None, Some([0.0; 4]), Some(fallen)] {
            if let Some(state) = state {
                env.set_state(&state).unwrap();
            }
            let s = env.step(&Value::Int(1)).unwrap();
            got.push((s.reward, s.terminated));
        }
        env.reset(Some(0), None).unwrap();
        env.set_state(&fallen).unwrap();
        let s = env.step(&Value::Int(1)).unwrap();
        got.push((s.reward, s.terminated));
        assert_eq!(got, expected, "sutton_barto_reward = {sutton_barto}");
    }
    let mut bad = oxray_envs::Kwargs::new();
    bad.insert("sutton_barto_reward".into(), 1.into());
    let options = MakeOptions {
        kwargs: bad,
        ..Default::default()
    };
    assert!(make_with("CartPole-v1", &options).is_err());
}
