//! oxray-core: remote tasks, actors, an object store and resource-aware
//! scheduling, in the spirit of Ray's core.
//!
//! ```no_run
//! use oxray_core::{self as oxray, remote, actor};
//!
//! #[remote]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! pub struct Counter {
//!     value: i64,
//! }
//!
//! #[actor]
//! impl Counter {
//!     pub fn new(start: i64) -> Self {
//!         Counter { value: start }
//!     }
//!
//!     pub fn increment(&mut self, by: i64) -> i64 {
//!         self.value += by;
//!         self.value
//!     }
//! }
//!
//! fn main() -> oxray::Result<()> {
//!     oxray::init(oxray::InitOptions::default())?;
//!     let squares: Vec<_> = (0..8).map(|i| square::remote(i)).collect();
//!     assert_eq!(oxray::get_all(&squares)?, vec![0, 1, 4, 9, 16, 25, 36, 49]);
//!     // Refs are arguments too: the node resolves them before the task runs.
//!     assert_eq!(square::remote(&squares[3]).get()?, 81);
//!     let counter = Counter::options().name("counter").remote(10)?;
//!     counter.increment(5);
//!     assert_eq!(counter.increment(1).get()?, 16);
//!     oxray::shutdown();
//!     Ok(())
//! }
//! ```
//!
//! Processes: the driver embeds the node (object store, scheduler, worker pool);
//! workers are the same executable re-executed (see [`worker`](crate::worker)),
//! talking to the node over one long-lived gRPC stream each.
//!
//! # Layout
//!
//! | module | what lives there |
//! |---|---|
//! | `runtime` | the public API (`init`, `get`, `put`, `wait`, KV) over one `Backend` per process |
//! | `head/` | the head: object directory, tasks, scheduler, worker pool, actors, placement groups, jobs, membership, status, and its gRPC service; one file per concept (see its module doc) |
//! | `worker/` | worker processes: launch, `.init_array` entry, stream client, task executor |
//! | `resources/` | resource sets; accounting (node pools, GPU ids, bundles) and scheduling policy |
//! | `placement` | placement-group bundle packing |
//! | `packaging/` | job executables by SHA-256: checking paths, shipping through the head; `executable_cache` the bounded per-node cache |
//! | `runtime_env` | a job's working directory (packed, named by digest, shipped as its executable is) and environment variables for its workers |
//! | `daemon` | `oxray start` head and node daemons, the session directory |
//! | `transfer`, `shm`, `spill` | pulling objects between nodes; shared-memory object files; spilling them to disk when a node's store is full |
//! | `protocol`, `wire`, `auth`, `tls` | messages, their codec, the cluster token, mutual TLS |
//! | `spin`, `warm_loop` | a waiting thread's, and an event loop's, brief polling before they park |
//! | `owned_runtime` | a node's tokio runtime, which may be released on one of its own threads |
//! | `actor`, `object_ref`, `options`, `registry`, `value`, `ids`, `error` | the user-facing types behind `#[remote]` and `#[actor]` |

mod actor;
pub mod auth;
pub mod daemon;
mod error;
mod head;
mod head_link;
mod ids;
mod node_ip;
mod object_ref;
mod options;
mod owned_runtime;
mod packaging;
mod placement;
pub mod protocol;
mod registry;
mod resources;
mod rpc_metrics;
mod runtime;
mod runtime_env;
mod session;
mod shm;
pub mod simulated_node;
mod spill;
mod spin;
pub mod tls;
mod transfer;
mod value;
mod warm_loop;
pub mod wire;
mod worker;

#[doc(hidden)]
pub mod private;

pub use actor::{get_actor, kill, ActorClass, ActorHandle, RawActor};
pub use auth::{constant_time_eq, generate_token};
pub use error::{Error, ExecutableProblem, Result};
pub use head_link::HEAD_LOSS_DEADLINE;
pub use ids::{ActorId, JobId, ObjectId, TaskId, WorkerId};
pub use node_ip::node_ip_address;
pub use object_ref::{Arg, ObjectRef};
pub use options::{ActorOptions, Lifetime, TaskOptions};
pub use oxray_macros::{actor, remote};
pub use packaging::{JobExecutable, ShipExecutable, DEFAULT_EXECUTABLE_CACHE_BYTES};
pub use placement::{
    describe_bundles, placement_group, remove_placement_group, PlacementGroup, PlacementStrategy,
};
pub use protocol::{
    ActorStatusLine, ClusterStatus, JobStatus, NodeStatus, ObjectRow, PlacementGroupLine,
    ResourceDemand, TaskRow, TaskState, TaskType, WorkerRow,
};
pub use resources::{ResourceSet, SchedulingStrategy};
pub use rpc_metrics::{rpc_latencies, LatencyHistogram, BUCKETS as RPC_LATENCY_BUCKETS};
pub use runtime::{
    cancel, cluster_key, get, get_all, get_all_timeout, init, is_initialized, join_address,
    kv_delete, kv_get, kv_put, kv_wait, node_id, node_summary, put, put_acknowledged, shutdown,
    wait, InitOptions, NodeSummary, ReadyAndPending,
};
pub use runtime_env::{
    pack_working_dir, python_path_with, unpack_working_dir, JobRuntimeEnv, RuntimeEnv,
    WorkingDirArchive, IGNORE_GITIGNORE_ENV, MAX_WORKING_DIR_BYTES, RUNTIME_ENV_ENV,
};
pub use spill::MIN_OBJECT_STORE_MEMORY;
pub use transfer::{transfer_counters, TransferCounters};
pub use worker::{get_gpu_ids, on_spawner_thread};
