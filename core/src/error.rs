//! The one error type of the core API.
//!
//! Errors cross process boundaries (a task fails in a worker, the driver sees it
//! at `get`), so every variant carries plain strings and the type is serde
//! serialisable: the error a worker reports is exactly the error the caller
//! receives, with the function's name and the message intact.

use serde::{Deserialize, Serialize};

/// Result of every fallible core operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong with a task, an actor, an object or the runtime itself.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum Error {
    /// The remote function or actor method returned an error or panicked.
    #[error("task {function} failed: {message}")]
    TaskFailed { function: String, message: String },

    /// The worker process running the task exited before finishing it, and no
    /// retries were left.
    #[error("worker process running {function} died ({message}); no retries left")]
    WorkerDied { function: String, message: String },

    /// The actor is dead: its constructor failed, it was killed, or its process
    /// died with no restarts left.
    #[error("actor {actor} is dead: {message}")]
    ActorDied { actor: String, message: String },

    /// The request can never be satisfied by any node of the cluster.
    #[error("infeasible resource request for {what}: asked for {requested}, but the largest node offers {available}")]
    Infeasible {
        what: String,
        requested: String,
        available: String,
    },

    /// `get` asked for a different type than the object holds.
    #[error("object holds a {found}, not the requested {expected}")]
    TypeMismatch { expected: String, found: String },

    /// Bytes that should hold a value could not be decoded.
    #[error("could not decode {what}: {message}")]
    Decode { what: String, message: String },

    /// The executable has no remote function or actor type of that name
    /// (driver and worker built from different sources).
    #[error("no remote function or actor type named `{name}` is registered in this executable")]
    UnknownFunction { name: String },

    /// A node could not get the executable the job's workers run (Ray's
    /// `RuntimeEnvSetupError`): the job's tasks placed there fail with this
    /// instead of running other code.
    #[error("node {node} cannot start this job's workers: {reason}")]
    ExecutableUnavailable {
        node: String,
        reason: ExecutableProblem,
    },

    /// The task was cancelled before it produced a value.
    #[error("task {function} was cancelled")]
    Cancelled { function: String },

    /// `get` or `wait` ran out of time.
    #[error("timed out after {seconds:.3} s waiting for objects")]
    Timeout { seconds: f64 },

    /// Options that cannot create the actor (a detached actor with no name,
    /// `max_concurrency` of 0 or above 1 on a type that is not `Sync`).
    #[error("cannot create a {class} actor: {problem}")]
    InvalidActorOptions { class: String, problem: String },

    /// No live actor has that name.
    #[error("no actor named `{name}`")]
    ActorNotFound { name: String },

    /// The actor name is taken by a different live actor.
    #[error("an actor named `{name}` already exists")]
    NameTaken { name: String },

    /// The object's value is gone (freed or lost with its node).
    #[error("object {id} is not available: {message}")]
    ObjectLost { id: String, message: String },

    /// A value larger than its node's whole object store: no amount of
    /// spilling makes room (Ray's `ObjectStoreFullError`).
    #[error("an object of {bytes} bytes does not fit in this node's object store of {capacity} bytes (raise --object-store-memory / InitOptions::object_store_memory)")]
    ObjectStoreFull { bytes: u64, capacity: u64 },

    /// The head stopped answering (it died, hangs, or the network is cut):
    /// every pending and later call of a driver, worker or node daemon fails
    /// with this instead of waiting forever.
    #[error("the head at {address} is unreachable: {message}")]
    HeadUnreachable { address: String, message: String },

    /// The core API was used before `init()` (or after `shutdown()`).
    #[error("oxray is not initialized: call oxray_core::init() first")]
    NotInitialized,

    /// `init()` was called twice in one process.
    #[error("oxray is already initialized in this process")]
    AlreadyInitialized,

    /// A client asked for a quantity (a node's resources, a timeout) beyond
    /// what the cluster accepts from anyone.
    #[error("{what} = {value} is out of bounds: {limit}")]
    OutOfBounds {
        what: String,
        value: String,
        limit: String,
    },

    /// Local state (the session directory or a file in it, a token file) is
    /// not private to this user, so it may have been planted or read by
    /// another user; oxray refuses to use it.
    #[error("refusing {path}: {problem}; remove it or make it this user's own with mode 0700 (directories) or 0600 (files)")]
    UnsafeLocalState { path: String, problem: String },

    /// Mutual TLS is asked for but its configuration is unusable: a missing
    /// variable, an unreadable or malformed certificate, a key that does not
    /// fit or is not private.
    #[error("TLS setup: {what}: {problem}")]
    Tls { what: String, problem: String },

    /// A job's runtime env cannot be prepared: its working directory is
    /// missing or holds something that cannot be shipped, a variable name is
    /// invalid, or `OXRAY_RUNTIME_ENV` is not JSON.
    #[error("runtime env: {path}: {problem}")]
    WorkingDir { path: String, problem: String },

    /// The runtime itself failed: a worker could not be started, a connection
    /// broke, a file could not be written.
    #[error("{0}")]
    Runtime(String),
}

/// Why a node could not get a job's executable.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum ExecutableProblem {
    /// Nothing at the driver's path there, and shipping is off.
    #[error("{path} does not exist there and shipping is off (ship_executable = Never)")]
    Missing { path: String },

    /// Other bytes at the driver's path there, and shipping is off.
    #[error("{path} there has SHA-256 {found}, the driver's has {expected}, and shipping is off (ship_executable = Never)")]
    DigestMismatch {
        path: String,
        expected: String,
        found: String,
    },

    /// The executable is larger than the node may cache.
    #[error("it is {size} bytes, over the limit of {limit} bytes (--executable-cache-bytes)")]
    TooLarge { size: u64, limit: u64 },

    /// The copy received does not hash to the driver's digest.
    #[error("the copy received has SHA-256 {found}, expected {expected}")]
    CorruptCopy { expected: String, found: String },

    /// The head could not be asked for a copy, or the transfer broke.
    #[error("fetching it from the head failed: {message}")]
    FetchFailed { message: String },

    /// The copy could not be written to the node's cache.
    #[error("cannot store it in the executable cache: {message}")]
    Store { message: String },

    /// The job's working directory could not be unpacked on the node.
    #[error("cannot unpack the job's working directory: {message}")]
    WorkingDir { message: String },

    /// The operating system refused to start a process from it (not
    /// executable, the process limit reached, out of memory).
    #[error("cannot start a worker process from it: {message}")]
    CannotStart { message: String },
}

impl Error {
    pub(crate) fn runtime(context: &str, error: impl std::fmt::Display) -> Self {
        Error::Runtime(format!("{context}: {error}"))
    }
}
