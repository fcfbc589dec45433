//! The one error type of the crate.
//!
//! Every variant names what was wrong and where (the env id, the offending
//! action, the space it should have belonged to), so a message printed by the
//! CLI or logged by a rollout worker is enough to find the problem.

use thiserror::Error;

/// Everything that can go wrong when building, resetting or stepping an env.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum EnvError {
    /// `make` was given an id nobody registered.
    #[error("unknown environment id `{id}`; closest known ids: {}", suggestions.join(", "))]
    UnknownEnv {
        id: String,
        suggestions: Vec<String>,
    },

    /// An action outside the env's action space.
    #[error("{env}: action {action} is not in the action space {space}")]
    InvalidAction {
        env: String,
        action: String,
        space: String,
    },

    /// A physical state of the wrong length or with non-finite entries.
    #[error("{env}: invalid state: {reason}")]
    InvalidState { env: String, reason: String },

    /// `step` before the first `reset`.
    #[error("{env}: step called before reset")]
    ResetNeeded { env: String },

    /// A reset option or constructor keyword argument Gymnasium would reject.
    #[error("{env}: invalid option `{name}`: {reason}")]
    InvalidOption {
        env: String,
        name: String,
        reason: String,
    },

    /// Space bounds or shapes that do not describe a space.
    #[error("invalid space: {reason}")]
    InvalidSpace { reason: String },

    /// A value that does not fit the space it was flattened with or unflattened into.
    #[error("value does not match space {space}: {reason}")]
    SpaceMismatch { space: String, reason: String },

    /// An operation the env does not provide (e.g. `render` without a renderer).
    #[error("{env}: {operation} is not supported")]
    Unsupported { env: String, operation: String },

    /// A Python env raised; `traceback` is Python's formatted traceback.
    #[error("{env}: Python raised in {operation}: {message}\n{traceback}")]
    Python {
        env: String,
        operation: String,
        message: String,
        traceback: String,
    },
}
