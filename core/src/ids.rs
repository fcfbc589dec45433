//! Identifiers of objects, tasks, actors and workers.
//!
//! Every process makes its own ids without a round trip: the high 24 bits say
//! which process minted the id (0 for the driver, the worker id otherwise) and
//! the low 40 bits count. The node never has to hand ids out, so submitting a
//! task from a worker is a single one-way message.
//!
//! A job (one driver) is named by 128 random bits instead: drivers come and go
//! on many machines, and nothing about them (a pid, a counter) is unique
//! across a cluster's life.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{:x}"), self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
    };
}

id_type!(
    /// Names one object in the object store.
    ObjectId,
    "obj-"
);
id_type!(
    /// Names one submitted task or actor call.
    TaskId,
    "task-"
);
id_type!(
    /// Names one actor for its whole life, restarts included.
    ActorId,
    "actor-"
);
id_type!(
    /// Names one worker process of a node.
    WorkerId,
    "worker-"
);

/// Names one job: a driver and everything it creates.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub u128);

impl JobId {
    /// A new job id from the kernel's random source.
    pub fn random() -> crate::Result<JobId> {
        let mut bytes = [0u8; 16];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom")
                .map_err(|e| crate::Error::runtime("cannot open /dev/urandom for a job id", e))?,
            &mut bytes,
        )
        .map_err(|e| crate::Error::runtime("cannot read /dev/urandom for a job id", e))?;
        Ok(JobId(u128::from_le_bytes(bytes)))
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job-{:032x}", self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

const COUNTER_BITS: u32 = 40;

/// Mints process-unique ids; see the module doc for the layout.
#[derive(Debug)]
pub(crate) struct IdMinter {
    origin: u64,
    counter: AtomicU64,
}

impl IdMinter {
    pub(crate) fn new(origin: u64) -> Self {
        IdMinter {
            origin: origin << COUNTER_BITS,
            counter: AtomicU64::new(1),
        }
    }

    pub(crate) fn next(&self) -> u64 {
        self.origin | self.counter.fetch_add(1, Ordering::Relaxed)
    }
}
