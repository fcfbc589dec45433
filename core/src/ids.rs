//! Identifiers of objects, tasks, actors and workers.
//!
//! Every process makes its own ids without a round trip: the high 24 bits say
//! which process minted the id (0 for the driver, the worker id otherwise) and
//! the low 40 bits count. The node never has to hand ids out, so submitting a
//! task from a worker is a single one-way message.

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
