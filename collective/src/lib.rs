//! oxray-collective: all-reduce, broadcast, all-gather, reduce-scatter and
//! barrier between the ranks of a group, in the shape of Ray's
//! `ray.util.collective`.
//!
//! ```no_run
//! use oxray_collective::{CollectiveGroup, GroupOptions, InProcessRendezvous, ReduceOp};
//!
//! let rendezvous = InProcessRendezvous::new();
//! let ranks: Vec<_> = (0..2)
//!     .map(|rank| {
//!         let rendezvous = rendezvous.clone();
//!         std::thread::spawn(move || {
//!             let options = GroupOptions::default().layout(["node-a", "node-a"]);
//!             let mut group = CollectiveGroup::join(2, rank, "example", options, &rendezvous)?;
//!             let mut gradients = vec![rank as f32; 1000];
//!             group.allreduce(&mut gradients, ReduceOp::Sum)?;
//!             assert_eq!(gradients[0], 1.0);
//!             Ok::<_, oxray_collective::CollectiveError>(())
//!         })
//!     })
//!     .collect();
//! for rank in ranks {
//!     rank.join().expect("rank thread")?;
//! }
//! # Ok::<_, oxray_collective::CollectiveError>(())
//! ```
//!
//! **Ranks and rendezvous.** A rank is any process (usually an actor's
//! worker) or, for tests and benchmarks, a thread. Ranks find each other
//! through a [`Rendezvous`]: the cluster's key-value store in real use
//! ([`init_collective_group`]), a shared map for threads. After that they talk
//! peer-to-peer; nothing goes through the head.
//!
//! **Transport.** Between nodes, bulk data goes over plain TCP with a 32-byte
//! header per block, as gloo and NCCL's socket transport do: a collective
//! moves large contiguous f32 buffers between fixed pairs, so a byte stream
//! with `TCP_NODELAY` and large kernel buffers is all it needs, while gRPC
//! would add message framing, copies and a scheduler between the socket and
//! the reduction loop. Ranks on the same node use a shared-memory ring per
//! pair instead (one copy in, one copy out, no system call per chunk), with
//! the same framing; their socket stays open only to notice a peer's death.
//! Both neighbours' links are non-blocking and driven by one loop that
//! reduces each chunk as it arrives (the `pipeline` module). When the cluster
//! runs with mutual TLS, each socket carries a rustls session driven by the
//! same non-blocking loop (the `tls_link` module).
//!
//! **Algorithms.** A chunked, pipelined ring (reduce-scatter then all-gather),
//! in rank order or ordered by node; and a hierarchical all-reduce (reduce to
//! a leader per node, ring among leaders, broadcast inside each node) whose
//! bytes leaving a node stay near 2(M-1)/M of the buffer for M nodes, however
//! many ranks share a node. Every rank counts the bytes it sends inside and
//! across nodes ([`ByteCounters`]).
//!
//! **Failures.** Every operation has a deadline. A peer that disconnects, a
//! buffer of a different size, or a rank that calls a different operation is
//! a [`CollectiveError`] naming the rank and the operation; the rank that sees
//! it closes its connections so every other rank fails promptly too.

mod api;
mod bucket;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod greeting;
mod group;
mod handshake;
mod layout;
mod options;
mod pipeline;
mod rendezvous;
mod ring;
mod shm;
mod socket;
mod tls_link;
mod transport;
mod wire;

pub use api::{
    allgather, allreduce, barrier, broadcast, byte_counters, create_collective_group,
    destroy_collective_group, get_rank, get_world_size, init_collective_group,
    is_group_initialized, reducescatter, with_group,
};
pub use bucket::GradientBucketer;
pub use error::{CollectiveError, OpKind, Result};
pub use group::CollectiveGroup;
pub use layout::Layout;
pub use options::{Algorithm, GroupOptions, ReduceOp, DEFAULT_BUCKET_BYTES};
pub use rendezvous::{InProcessRendezvous, KvRendezvous, Rendezvous};
pub use transport::ByteCounters;
