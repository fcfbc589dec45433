//! The one error type of the collective layer.
//!
//! Every variant that can come out of a running collective names the rank that
//! saw it and the operation it was in, because a failure in a group of many
//! processes is only actionable when the log line says where it happened. A
//! failure on one rank makes that rank close its connections, so its peers see
//! a disconnect and fail too instead of waiting forever.

use std::time::Duration;

/// The collective operations, as named in errors and frame headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Rendezvous,
    Allreduce,
    Broadcast,
    Allgather,
    Reducescatter,
    Barrier,
}

impl OpKind {
    pub(crate) fn code(self) -> u8 {
        self as u8
    }
}

impl std::fmt::Display for OpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            OpKind::Rendezvous => "rendezvous",
            OpKind::Allreduce => "allreduce",
            OpKind::Broadcast => "broadcast",
            OpKind::Allgather => "allgather",
            OpKind::Reducescatter => "reducescatter",
            OpKind::Barrier => "barrier",
        };
        f.write_str(name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CollectiveError {
    #[error("rank {rank}: invalid {op} call: {detail}")]
    InvalidArgument {
        rank: usize,
        op: OpKind,
        detail: String,
    },
    #[error("group {group:?}: the same actor {actor} appears more than once")]
    DuplicateActor { group: String, actor: String },
    #[error("rank {rank} of group {group:?}: rank {claimed} was claimed by two processes")]
    DuplicateRank {
        group: String,
        rank: usize,
        claimed: usize,
    },
    #[error("group {0:?} is already initialised in this process")]
    GroupExists(String),
    #[error("group {0:?} is not initialised in this process")]
    UnknownGroup(String),
    #[error("rank {rank} of group {group:?}: rendezvous failed: {detail}")]
    Rendezvous {
        group: String,
        rank: usize,
        detail: String,
    },
    #[error("rank {rank} of group {group:?}: rank {peer} failed authentication: {detail}")]
    Unauthenticated {
        group: String,
        rank: usize,
        peer: usize,
        detail: String,
    },
    #[error("rank {rank} of group {group:?}: refused shared-memory file {path} from rank {peer}: {detail}")]
    ForeignSharedFile {
        group: String,
        rank: usize,
        peer: usize,
        path: String,
        detail: String,
    },
    #[error(
        "rank {rank}: {op} sizes differ: this rank has {expected} elements, rank {peer} has {got}"
    )]
    SizeMismatch {
        rank: usize,
        peer: usize,
        op: OpKind,
        expected: u64,
        got: u64,
    },
    #[error("rank {rank}: {op} is out of step with rank {peer}: {detail}")]
    ProtocolMismatch {
        rank: usize,
        peer: usize,
        op: OpKind,
        detail: String,
    },
    #[error("rank {rank}: rank {peer} disconnected during {op}")]
    PeerDisconnected {
        rank: usize,
        peer: usize,
        op: OpKind,
    },
    #[error("rank {rank}: {op} timed out after {timeout:?} waiting for rank {peer}")]
    Timeout {
        rank: usize,
        peer: usize,
        op: OpKind,
        timeout: Duration,
    },
    #[error("rank {rank}: socket error with rank {peer} during {op}: {error}")]
    Io {
        rank: usize,
        peer: usize,
        op: OpKind,
        error: std::io::Error,
    },
    #[error("rank {rank}: {op} refused: the group failed earlier ({cause})")]
    GroupBroken {
        rank: usize,
        op: OpKind,
        cause: String,
    },
    #[error("key-value store: {0}")]
    Kv(oxray_core::Error),
}

// Written out rather than `#[from]`, which would also make the inner error
// the source: a chain printed whole (`{:#}`) would then say it twice.
impl From<oxray_core::Error> for CollectiveError {
    fn from(error: oxray_core::Error) -> Self {
        CollectiveError::Kv(error)
    }
}

pub type Result<T, E = CollectiveError> = std::result::Result<T, E>;
