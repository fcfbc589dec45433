//! Image observations: a `uint8` image env gets RLlib's default CNN, its
//! frames travel from the EnvRunner to the Learner as bytes, and PPO and
//! SAC (on a Discrete space) learn from the pixels.
//!
//! `PixelSide-v0` (defined here, registered at link time so the remote
//! EnvRunner, this test binary re-executed, can build it) shows a 10x10
//! grayscale image with one bright 2x2 square in its left or right half; the
//! agent says which (0 left, 1 right) and is paid 1 when right. Episodes are
//! 8 images long, so guessing returns 4 and reading the image returns 8.

use oxray::core::{self as oxray_core, InitOptions};
use oxray_envs::{
    seeded_rng, BoxSpace, DType, Env, EnvError, EnvRng, Info, Kwargs, Reset, ResetOptions, Space,
    Step, Value,
};
use oxray_rl::env_runner::{module_spec, EnvRunner, EnvRunnerConfig};
use oxray_rl::metrics::{Metrics, EPISODE_RETURN_MEAN};
use oxray_rl::rl_module::{EncoderSpec, ModelConfig, ModuleKind};
use oxray_rl::{ObsBuffer, ObsDType};
use oxray_trainers::run::{run, RunOptions};
use oxray_trainers::{ExperimentConfig, TrainError};
use rand::Rng;

const SIDE: usize = 10;
const EPISODE_LEN: u32 = 8;

struct PixelSide {
    rng: EnvRng,
    image: Vec<f32>,
    right: bool,
    steps: u32,
    observation_space: Space,
    action_space: Space,
}

#[oxray_envs::register_env("PixelSide-v0")]
fn pixel_side(_kwargs: &Kwargs) -> Result<PixelSide, EnvError> {
    Ok(PixelSide {
        rng: seeded_rng(None),
        image: vec![0.0; SIDE * SIDE],
        right: false,
        steps: 0,
        observation_space: Space::Box(BoxSpace::uniform(
            0.0,
            255.0,
            vec![SIDE, SIDE, 1],
            DType::U8,
        )?),
        action_space: Space::discrete(2),
    })
}

impl PixelSide {
    /// A new image: the square's top-left corner in columns 0-3 (left) or
    /// 5-8 (right), any row that fits.
    fn draw(&mut self) -> &[f32] {
        self.right = self.rng.gen();
        let column = self.rng.gen_range(0..4) + if self.right { 5 } else { 0 };
        let row = self.rng.gen_range(0..SIDE - 1);
        self.image.fill(0.0);
        for (y, x) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            self.image[(row + y) * SIDE + column + x] = 255.0;
        }
        &self.image
    }
}

impl Env for PixelSide {
    fn id(&self) -> &str {
        "PixelSide-v0"
    }

    fn observation_space(&self) -> &Space {
        &self.observation_space
    }

    fn action_space(&self) -> &Space {
        &self.action_space
    }

    fn reset(
        &mut self,
        seed: Option<u64>,
        _options: Option<&ResetOptions>,
    ) -> Result<Reset<'_>, EnvError> {
        if seed.is_some() {
            self.rng = seeded_rng(seed);
        }
        self.steps = 0;
        Ok(Reset {
            obs: self.draw(),
            info: Info::default(),
        })
    }

    fn step(&mut self, action: &Value) -> Result<Step<'_>, EnvError> {
        let said_right = match action {
            Value::Int(a @ 0..=1) => *a == 1,
            other => {
                return Err(EnvError::InvalidAction {
                    env: self.id().into(),
                    action: other.to_string(),
                    space: self.action_space.to_string(),
                })
            }
        };
        let reward = if said_right == self.right { 1.0 } else { 0.0 };
        self.steps += 1;
        Ok(Step {
            reward,
            terminated: self.steps == EPISODE_LEN,
            truncated: false,
            info: Info::default(),
            obs: self.draw(),
        })
    }
}

/// The env's `uint8` box gets a CNN (RLlib's 10x10 filters) and the
/// EnvRunner's batches keep its frames as bytes, every value a pixel.
#[test]
fn image_frames_get_a_cnn_and_leave_the_env_runner_as_bytes() {
    let env: oxray_envs::EnvConfig = "PixelSide-v0".into();
    let spec = module_spec(&env, &ModelConfig::default(), ModuleKind::ActorCritic).unwrap();
    assert_eq!(spec.observation_dtype, ObsDType::U8);
    assert!(matches!(spec.encoder(), Ok(EncoderSpec::Cnn { .. })));
    let mut runner = EnvRunner::new(EnvRunnerConfig {
        env,
        num_envs: 2,
        rollout_fragment_length: 16,
        module: spec,
        seed: 3,
        worker_index: 0,
        explore: true,
        record_to: None,
    })
    .unwrap();
    let batch = runner.sample().unwrap().batch;
    let ObsBuffer::U8(frames) = &batch.obs else {
        panic!("observations kept as {:?}", batch.obs.dtype());
    };
    assert_eq!(frames.len(), 2 * 16 * SIDE * SIDE);
    // Each frame holds one 2x2 square of 255s on black.
    for frame in frames.chunks(SIDE * SIDE) {
        assert_eq!(frame.iter().filter(|&&p| p == 255).count(), 4);
        assert!(frame.iter().all(|&p| p == 0 || p == 255));
    }
    assert_eq!(batch.bootstrap_obs.dtype(), ObsDType::U8);
}

/// Trains `config` into a scratch results directory; its last result.
fn train(config: ExperimentConfig) -> Result<Metrics, TrainError> {
    let results = tempfile::tempdir().unwrap();
    let options = RunOptions {
        config,
        name: "pixels".into(),
        results_dir: results.path().to_path_buf(),
        resume: None,
    };
    run(options, |_| {}).map(|summary| summary.last_result)
}

/// PPO with one remote EnvRunner reads the side from the pixels: past the
/// return of 4 that guessing gets, close to the 8 of always answering right.
#[test]
fn ppo_learns_from_pixels_with_a_remote_env_runner() {
    let config = ExperimentConfig::parse(
        "\
algorithm: PPO
env: PixelSide-v0
seed: 5
env_runners:
  num_env_runners: 1
  num_envs_per_env_runner: 8
  num_cpus_per_env_runner: 0.5
training:
  lr: 1.0e-3
  train_batch_size: 512
  minibatch_size: 128
  num_epochs: 4
stop:
  episode_return_mean: 7.0
  iterations: 40
checkpoint:
  checkpoint_at_end: false
",
        "ppo-pixels.yaml",
        &[],
    )
    .unwrap();
    oxray_core::init(InitOptions::default()).unwrap();
    let outcome = train(config);
    oxray_core::shutdown();
    let result = outcome.unwrap();
    assert_eq!(result["fault_tolerance/num_healthy_env_runners"], 1.0);
    assert!(
        result[EPISODE_RETURN_MEAN] >= 7.0,
        "return mean {} after {} iterations",
        result[EPISODE_RETURN_MEAN],
        result["training_iteration"]
    );
}

/// SAC on a Discrete space reads the side from the pixels too: its policy
/// and both Q-functions get the CNN (Q(s, ·) needs no action input), the
/// replayed frames stay bytes, and the return passes the 4 of guessing.
#[test]
fn discrete_sac_learns_from_pixels() {
    let config = ExperimentConfig::parse(
        "\
algorithm: SAC
env: PixelSide-v0
seed: 5
training:
  actor_lr: 1.0e-3
  critic_lr: 1.0e-3
  alpha_lr: 1.0e-3
  gamma: 0.9
  target_entropy: 0.2
  train_batch_size: 64
  num_steps_sampled_before_learning_starts: 256
  replay_buffer_config: {type: EpisodeReplayBuffer, capacity: 10000}
  min_sample_timesteps_per_iteration: 256
stop:
  episode_return_mean: 7.0
  env_steps: 8000
reporting:
  metrics_num_episodes_for_smoothing: 20
checkpoint:
  checkpoint_at_end: false
",
        "sac-pixels.yaml",
        &[],
    )
    .unwrap();
    let result = train(config).unwrap();
    assert!(
        result[EPISODE_RETURN_MEAN] >= 7.0,
        "return mean {} after {} env steps",
        result[EPISODE_RETURN_MEAN],
        result["num_env_steps_sampled_lifetime"]
    );
}
