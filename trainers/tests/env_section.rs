//! The `env:` section of an experiment config: the bare-id shorthand, the
//! full map with backend, constructor kwargs, time limit and wrappers, and
//! errors that name the key and the line.

use oxray_envs::wrapper_config::{AtariPreprocessingArgs, NoArgs, NormalizeObservationArgs};
use oxray_envs::{Backend, EnvConfig, WrapperConfig};
use oxray_trainers::ExperimentConfig;

fn parse(env_section: &str, overrides: &[&str]) -> Result<ExperimentConfig, String> {
    let source = format!("algorithm: PPO\n{env_section}\nstop:\n  iterations: 1\n");
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    ExperimentConfig::parse(&source, "test.yaml", &overrides).map_err(|e| e.to_string())
}

const FULL: &str = "\
env:
  id: ALE/Pong-v5
  backend: gymnasium
  config: {frameskip: 1, repeat_action_probability: 0.25}
  max_episode_steps: 1000
  wrappers: [{atari_preprocessing: {noop_max: 30}}, {frame_stack: 4}, normalize_observation, {clip_action: {}}]";

#[test]
fn a_bare_id_is_shorthand_for_the_section() {
    let config = parse("env: CartPole-v1", &[]).unwrap();
    assert_eq!(config.env, EnvConfig::new("CartPole-v1"));
    assert_eq!(config.env.resolved_backend(), Backend::Native);
}

#[test]
fn the_full_section_parses_every_field() {
    let env = parse(FULL, &[]).unwrap().env;
    assert_eq!(env.id, "ALE/Pong-v5");
    assert_eq!(env.backend, Backend::Gymnasium);
    assert_eq!(env.config["frameskip"], 1);
    assert_eq!(env.config["repeat_action_probability"], 0.25);
    assert_eq!(env.max_episode_steps, Some(1000));
    assert_eq!(
        env.wrappers,
        vec![
            WrapperConfig::AtariPreprocessing(AtariPreprocessingArgs {
                noop_max: Some(30),
                ..Default::default()
            }),
            WrapperConfig::FrameStack(4),
            WrapperConfig::NormalizeObservation(NormalizeObservationArgs { epsilon: 1e-8 }),
            WrapperConfig::ClipAction(NoArgs {}),
        ]
    );
}

#[test]
fn auto_picks_gymnasium_for_ids_oxray_does_not_have() {
    let env = parse("env: {id: my_pkg.envs:GridWorld}", &[]).unwrap().env;
    assert_eq!(env.resolved_backend(), Backend::Gymnasium);
}

#[test]
fn the_resolved_config_round_trips_through_yaml_and_overrides() {
    let config = parse(FULL, &["env.max_episode_steps=200"]).unwrap();
    assert_eq!(config.env.max_episode_steps, Some(200));
    let again = ExperimentConfig::parse(&config.to_yaml(), "params.yaml", &[]).unwrap();
    assert_eq!(again, config);
    let renamed = parse("env: CartPole-v1", &["env=Pendulum-v1"]).unwrap();
    assert_eq!(renamed.env.id, "Pendulum-v1");
}

#[test]
fn an_unknown_key_names_key_and_line() {
    let error = parse("env:\n  id: CartPole-v1\n  max_steps: 3", &[]).unwrap_err();
    assert!(error.contains("unknown field `max_steps`"), "{error}");
    assert!(error.contains("line 4"), "{error}");
}

#[test]
fn an_unknown_wrapper_names_it_the_known_ones_and_the_line() {
    let error = parse(
        "env:\n  id: CartPole-v1\n  wrappers:\n    - frame_stak",
        &[],
    )
    .unwrap_err();
    assert!(error.contains("unknown variant `frame_stak`"), "{error}");
    assert!(error.contains("frame_stack"), "{error}");
    assert!(error.contains("env.wrappers"), "{error}");
    assert!(error.contains("line 5"), "{error}");
}

/// Any Python wrapper is `module:Class`, bare or with keyword arguments
/// passed as written; a name not of that form is an error saying so, with
/// the line.
#[test]
fn a_python_wrapper_is_named_module_and_class() {
    let env = parse(
        "env:\n  id: MiniGrid-Empty-5x5-v0\n  wrappers:\n    - minigrid.wrappers:ImgObsWrapper\n    \
         - {my_pkg.wrappers:Shaped: {scale: 0.5, keys: [a, b]}}",
        &[],
    )
    .unwrap()
    .env;
    let kwargs = serde_json::json!({"scale": 0.5, "keys": ["a", "b"]});
    assert_eq!(
        env.wrappers,
        vec![
            WrapperConfig::Python {
                class: "minigrid.wrappers:ImgObsWrapper".into(),
                kwargs: Default::default(),
            },
            WrapperConfig::Python {
                class: "my_pkg.wrappers:Shaped".into(),
                kwargs: kwargs.as_object().unwrap().clone(),
            },
        ]
    );
    let config = parse(
        "env:\n  id: MiniGrid-Empty-5x5-v0\n  wrappers: [{my_pkg.wrappers:Shaped: {scale: 0.5}}]",
        &[],
    )
    .unwrap();
    let again = ExperimentConfig::parse(&config.to_yaml(), "params.yaml", &[]).unwrap();
    assert_eq!(again, config);
    for bad in ["my_pkg.wrappers:", ":Shaped", "my pkg:Shaped", "a..b:C"] {
        let error = parse(
            &format!("env:\n  id: MiniGrid-Empty-5x5-v0\n  wrappers:\n    - \"{bad}\""),
            &[],
        )
        .unwrap_err();
        assert!(error.contains("named `module:Class`"), "{bad}: {error}");
        assert!(error.contains("line 5"), "{bad}: {error}");
    }
}

#[test]
fn an_unknown_wrapper_argument_names_it_and_the_line() {
    let error = parse(
        "env:\n  id: ALE/Pong-v5\n  wrappers:\n    - atari_preprocessing: {noop: 3}",
        &[],
    )
    .unwrap_err();
    assert!(error.contains("unknown field `noop`"), "{error}");
    assert!(error.contains("line 5"), "{error}");
}

#[test]
fn wrong_types_name_key_and_line() {
    let error = parse("env:\n  id: CartPole-v1\n  max_episode_steps: many", &[]).unwrap_err();
    assert!(
        error.contains("env.max_episode_steps: invalid type"),
        "{error}"
    );
    assert!(error.contains("line 4"), "{error}");
    let error = parse("env:\n  id: CartPole-v1\n  backend: python", &[]).unwrap_err();
    assert!(error.contains("unknown variant `python`"), "{error}");
    let error = parse(
        "env:\n  id: CartPole-v1\n  wrappers: [{frame_stack: four}]",
        &[],
    )
    .unwrap_err();
    assert!(error.contains("invalid type"), "{error}");
    assert!(error.contains("line 4"), "{error}");
    let error = parse("env:\n  id: CartPole-v1\n  wrappers: [frame_stack]", &[]).unwrap_err();
    assert!(error.contains("`frame_stack` needs arguments"), "{error}");
}
