//! Per-group settings, fixed when a rank joins the group.
//!
//! Everything a rank needs to agree on with its peers (algorithm, layout,
//! compression) is chosen once here rather than per call, as in Ray's
//! `init_collective_group`, so that every operation of a group runs the same
//! plan on every rank.

use oxray_core::tls::ClusterTls;
use std::sync::Arc;
use std::time::Duration;

/// PyTorch DDP's default bucket: gradients are all-reduced 25 MiB at a time.
pub const DEFAULT_BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// How an all-reduce moves data between ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Hierarchical when the layout spans several nodes and some node holds
    /// more than one rank; the topology-aware ring otherwise.
    #[default]
    Auto,
    /// Chunked, pipelined ring in rank order, whatever the nodes.
    Ring,
    /// The same ring with ranks ordered by node, so it leaves each node once.
    TopologyRing,
    /// Reduce inside each node to its first rank, ring among those leaders,
    /// broadcast inside each node.
    Hierarchical,
}

/// The reduction applied by all-reduce and reduce-scatter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    /// The sum divided by the world size.
    Mean,
}

/// Settings of one collective group; every rank must pass the same values.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    pub algorithm: Algorithm,
    /// The node label of every rank, indexed by rank. `None` asks each rank's
    /// own `oxray_core::node_id()`. An explicit layout lets one machine stand in
    /// for several nodes; bytes are counted as inside or across nodes by it.
    pub layout: Option<Vec<String>>,
    /// The longest any one operation (or the rendezvous) may wait for a peer.
    pub timeout: Duration,
    /// Send data as bfloat16, halving the bytes on the wire. Every rank ends
    /// with the same bf16-rounded result.
    pub bf16_compression: bool,
    /// Bucket size of [`GradientBucketer`](crate::GradientBucketer)s built
    /// from this group's options.
    pub bucket_bytes: usize,
    /// Let ranks on the same node exchange data through shared memory
    /// (`/dev/shm`) instead of loopback TCP. Off, every byte goes over TCP.
    pub shared_memory: bool,
    /// The address peers use to reach this rank's listener (it binds there
    /// too). By default the address of this process's node
    /// ([`oxray_core::node_ip_address`]), so ranks on other machines can
    /// reach it; loopback outside a cluster.
    pub advertise_host: String,
    /// Mutual TLS on every peer connection, with this process's certificate
    /// and the cluster CA. `None` uses the process's own configuration
    /// (`OXRAY_USE_TLS` and `OXRAY_TLS_*`, as every oxray process does):
    /// TLS exactly when the cluster runs with it.
    pub tls: Option<Arc<ClusterTls>>,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            algorithm: Algorithm::Auto,
            layout: None,
            timeout: Duration::from_secs(60),
            bf16_compression: false,
            bucket_bytes: DEFAULT_BUCKET_BYTES,
            shared_memory: true,
            advertise_host: oxray_core::node_ip_address()
                .map_or_else(|_| "127.0.0.1".to_string(), |ip| ip.to_string()),
            tls: None,
        }
    }
}

impl GroupOptions {
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    pub fn layout<S: Into<String>>(mut self, nodes: impl IntoIterator<Item = S>) -> Self {
        self.layout = Some(nodes.into_iter().map(Into::into).collect());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn bf16_compression(mut self, enabled: bool) -> Self {
        self.bf16_compression = enabled;
        self
    }

    pub fn bucket_bytes(mut self, bytes: usize) -> Self {
        self.bucket_bytes = bytes;
        self
    }

    pub fn shared_memory(mut self, enabled: bool) -> Self {
        self.shared_memory = enabled;
        self
    }

    pub fn tls(mut self, tls: Arc<ClusterTls>) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn advertise_host(mut self, host: impl Into<String>) -> Self {
        self.advertise_host = host.into();
        self
    }
}
