//! Gymnasium's environment API in Rust: spaces, the classic-control envs
//! computed exactly as Gymnasium computes them, a registry (with link-time
//! registration of user envs, [`register_env`]), wrappers, vector envs whose
//! observations sit in one contiguous `f32` array, and the `env:` section of
//! an experiment config ([`EnvConfig`]). Python Gymnasium envs are in the
//! `oxray-gym` crate.
//!
//! # Single env
//!
//! ```
//! use oxray_envs::{make, Env, Value};
//!
//! let mut env = make("CartPole-v1")?; // wrapped in TimeLimit(500), as gymnasium.make does
//! let reset = env.reset(Some(42), None)?;
//! assert_eq!(reset.obs.len(), 4);
//! loop {
//!     let step = env.step(&Value::Int(1))?;
//!     if step.terminated || step.truncated {
//!         break;
//!     }
//! }
//! # Ok::<(), oxray_envs::EnvError>(())
//! ```
//!
//! # Vector env (what a rollout worker holds)
//!
//! ```
//! use oxray_envs::{make_vec, Actions, Space, VectorEnv};
//!
//! let mut envs = make_vec("CartPole-v1", 8, Some(0))?; // reset with seeds 0..8
//! let obs_dim = envs.observation_dim(); // 4
//! let Space::Discrete { n, .. } = envs.single_action_space() else { unreachable!() };
//! assert_eq!((*n, obs_dim), (2, 4));
//! let first = envs.observations(); // ArrayView2<f32>, shape (8, 4), contiguous
//! assert_eq!(first.shape(), &[8, 4]);
//! let actions = vec![0_i64; envs.num_envs()];
//! for _ in 0..100 {
//!     let step = envs.step(Actions::Discrete(&actions))?;
//!     let _model_input: &[f32] = step.obs.as_slice().expect("contiguous"); // no copy
//!     for episode in step.episodes {
//!         println!("env {} return {} length {}", episode.env_index, episode.episode_return, episode.length);
//!     }
//! }
//! # Ok::<(), oxray_envs::EnvError>(())
//! ```
//!
//! Continuous action spaces take `Actions::Continuous(&[f32])`, `num_envs x
//! action_dim` row-major. Sub-envs reset themselves in Gymnasium 1.x's
//! `NEXT_STEP` mode by default; `make_vec_with` selects `SAME_STEP`.

pub mod bench;
pub mod classic;
pub mod env;
pub mod env_config;
pub mod error;
#[doc(hidden)]
pub mod private;
pub mod registry;
pub mod rng;
pub mod spaces;
pub mod vector;
pub mod wrapper_config;
pub mod wrappers;

pub use env::{Env, EpisodeStatistics, Info, Reset, ResetOptions, RgbImage, Step};
pub use env_config::{deserialize_env, Backend, EnvConfig};
pub use error::EnvError;
pub use oxray_macros::register_env;
pub use registry::{
    ids, make, make_vec, make_vec_with, make_with, register, spec, specs, EnvSpec, Kwargs,
    MakeOptions, VecOptions, Vectorization,
};
pub use rng::{seeded_rng, EnvRng};
pub use spaces::{BoxSpace, DType, Space, Value};
pub use vector::{
    Actions, AutoresetMode, EpisodeTracker, FinishedEpisode, SoaVectorEnv, StepBuffers,
    SyncVectorEnv, VectorEnv, VectorStep,
};
pub use wrapper_config::WrapperConfig;
