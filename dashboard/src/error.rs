//! Errors of the dashboard, the job supervisor and the HTTP client.
//!
//! Each variant names what failed and where, so the CLI can print it as is
//! and the HTTP API can answer with the right status code.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("cannot listen on {address}: {error}")]
    Bind {
        address: String,
        error: std::io::Error,
    },
    #[error("cannot start the dashboard's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the working directory {path} does not exist or is not a directory")]
    WorkingDir { path: PathBuf },
    /// An uploaded working directory that cannot be stored or used: a
    /// name that is no digest, bytes that do not hash to it, an archive
    /// that does not unpack, a job naming a package the head does not hold.
    #[error("package {digest}: {problem}")]
    Package { digest: String, problem: String },
    #[error("the entrypoint is empty: give the command to run after `--`")]
    EmptyEntrypoint,
    #[error("submission id `{0}` must be 1 to 64 letters, digits, `-` or `_`")]
    BadSubmissionId(String),
    #[error("a job with submission id {0} already exists")]
    DuplicateJob(String),
    #[error("no job with submission id {0}")]
    NoSuchJob(String),
    #[error("job {id} is {status}; only finished jobs can be deleted")]
    JobNotFinished { id: String, status: String },
    #[error("log file of job {id} at {path}: {error}")]
    JobLog {
        id: String,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot start the driver of job {id} (`{entrypoint}`): {error}")]
    Spawn {
        id: String,
        entrypoint: String,
        error: std::io::Error,
    },
    #[error("`{address}` is not a dashboard address; expected HOST:PORT or http://HOST:PORT")]
    BadAddress { address: String },
    #[error("cannot reach the dashboard at {address}: {message}")]
    Unreachable { address: String, message: String },
    #[error("the dashboard at {address} refused the token: pass --token-file, set OXRAY_TOKEN, or run where `oxray start --head` wrote its session")]
    Unauthorized { address: String },
    #[error("the dashboard at {address} answered {status} to {method} {path}: {message}")]
    Api {
        address: String,
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("the dashboard at {address} sent an answer that is not the expected JSON: {error}")]
    BadAnswer {
        address: String,
        error: serde_json::Error,
    },
}

pub type Result<T, E = DashboardError> = std::result::Result<T, E>;
