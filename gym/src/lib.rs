//! Python Gymnasium envs for oxray: an embedded CPython interpreter (PyO3)
//! steps real Gymnasium vector envs — ale-py's Atari, MuJoCo, MiniGrid, Box2D
//! or the user's own `module:Class` — behind oxray-envs' [`VectorEnv`] trait.
//!
//! [`make_vec`] is the one place that turns an `env:` section
//! ([`EnvConfig`]) into a vector env for either backend, so EnvRunners,
//! evaluation and `oxray envs` never look at the backend themselves.
//!
//! ```no_run
//! use oxray_envs::{AutoresetMode, EnvConfig, Backend};
//!
//! let mut config = EnvConfig::new("CartPole-v1");
//! config.backend = Backend::Gymnasium; // the real gymnasium.make("CartPole-v1")
//! let mut envs = oxray_gym::make_vec(&config, 8, AutoresetMode::SameStep)?;
//! let first = envs.reset(Some(0))?;
//! assert_eq!(first.shape(), &[8, 4]);
//! # Ok::<(), oxray_envs::EnvError>(())
//! ```
//!
//! # Layout
//!
//! - `interpreter.rs`: starting CPython once per process, finding the venv
//!   (`OXRAY_PYTHON`), Python exceptions as typed errors with tracebacks.
//! - `bridge.py`: the Python half, loaded into the interpreter: builds
//!   `SyncVectorEnv`s with wrappers, flattens observations to float32 rows.
//! - `spaces.rs`: Gymnasium spaces as oxray spaces.
//! - `vector_env.rs`: [`GymVectorEnv`], the `VectorEnv` over the bridge.

mod interpreter;
mod spaces;
mod vector_env;

pub use interpreter::python_executable;
pub use vector_env::GymVectorEnv;

use oxray_envs::{AutoresetMode, Backend, EnvConfig, EnvError, VectorEnv};

/// `num_envs` sub-envs of `config` from its (resolved) backend, not yet reset.
///
/// An id that neither oxray nor Gymnasium knows, under `backend: auto`, is
/// reported as oxray's unknown-id error (closest native ids), not as the
/// Gymnasium traceback: it is most likely a typo of a native id.
pub fn make_vec(
    config: &EnvConfig,
    num_envs: usize,
    autoreset_mode: AutoresetMode,
) -> Result<Box<dyn VectorEnv>, EnvError> {
    match config.resolved_backend() {
        Backend::Gymnasium => match GymVectorEnv::new(config, num_envs, autoreset_mode) {
            Ok(envs) => Ok(Box::new(envs)),
            Err(error) => {
                let unknown_id = matches!(&error, EnvError::Python { operation, message, .. }
                    if operation == "make"
                        && GYMNASIUM_UNKNOWN_ID.iter().any(|e| message.starts_with(e)));
                match oxray_envs::spec(&config.id) {
                    Err(native) if unknown_id && config.backend == Backend::Auto => Err(native),
                    _ => Err(error),
                }
            }
        },
        _ => config.make_native_vec(num_envs, autoreset_mode),
    }
}

/// Gymnasium's exceptions for an id its registry does not have.
const GYMNASIUM_UNKNOWN_ID: &[&str] = &["NameNotFound", "NamespaceNotFound", "VersionNotFound"];
