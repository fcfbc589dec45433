//! A node's resources and identity: what `InitOptions` or `oxray start` flags
//! say, and the machine's CPUs, GPUs and memory for what they leave open.

use super::membership::DEFAULT_HEARTBEAT_TIMEOUT;
use crate::error::{Error, Result};
use crate::packaging::{ShipExecutable, DEFAULT_EXECUTABLE_CACHE_BYTES};
use crate::resources::{ResourceSet, CPU, GPU, MEMORY};
use crate::runtime::InitOptions;
use crate::runtime_env::PreparedRuntimeEnv;
use std::net::SocketAddr;
use std::time::Duration;

/// Resources and identity of a node.
#[derive(Debug, Clone)]
pub(crate) struct NodeConfig {
    pub resources: ResourceSet,
    pub session: String,
    pub node_id: String,
    /// Where the head serves workers, nodes and drivers.
    pub bind: SocketAddr,
    pub token: String,
    /// Start one worker per CPU at once (the embedded cluster, whose driver's
    /// executable is known); a standalone head waits for a driver.
    pub prestart_workers: bool,
    /// A node silent for this long is declared dead.
    pub heartbeat_timeout: Duration,
    /// The embedded driver's namespace (`InitOptions::namespace`).
    pub namespace: Option<String>,
    /// Where workers' output files go (a daemon's session directory); `None`:
    /// workers share the driver's terminal.
    pub log_dir: Option<std::path::PathBuf>,
    /// How the embedded driver's executable reaches other nodes.
    pub ship_executable: ShipExecutable,
    /// Bound of this node's cache of shipped executables.
    pub executable_cache_bytes: u64,
    /// Bytes of objects the node keeps in shared memory before it spills.
    pub object_store_memory: u64,
    /// Where it spills them (`spill/` of the session directory).
    pub spill_dir: std::path::PathBuf,
    /// Dead actors whose records the head keeps for `oxray list actors`;
    /// beyond that the oldest are forgotten.
    pub dead_actors_kept: usize,
    /// The embedded driver's runtime env (`InitOptions::runtime_env`).
    pub runtime_env: PreparedRuntimeEnv,
}

/// How many dead actors a head remembers by default. Ray's GCS keeps up to
/// 100,000 (`maximum_gcs_destroyed_actor_cached_count`); fewer keep a head
/// that creates and kills actors all day at a flat, small footprint.
pub const DEFAULT_DEAD_ACTORS_KEPT: usize = 10_000;

impl NodeConfig {
    /// Fills what `options` leaves open from the machine.
    pub fn detect(options: &InitOptions) -> Result<Self> {
        let mut resources = ResourceSet::default();
        let cpus = options
            .num_cpus
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()) as f64);
        let gpus = options.num_gpus.unwrap_or_else(detect_gpus);
        for (name, amount) in [(CPU, cpus), (GPU, gpus)] {
            if !(amount >= 0.0 && amount.is_finite()) {
                return Err(Error::Runtime(format!(
                    "{name} count must be a finite number >= 0, got {amount}"
                )));
            }
            resources.set(name, amount);
        }
        if gpus.fract() != 0.0 {
            return Err(Error::Runtime(format!(
                "a node offers whole GPUs, got num_gpus = {gpus}"
            )));
        }
        resources.set(MEMORY, options.memory.unwrap_or_else(detect_memory));
        for (name, amount) in &options.resources {
            resources.set(name, *amount);
        }
        let object_store_memory = options
            .object_store_memory
            .unwrap_or_else(crate::spill::default_capacity);
        if object_store_memory < crate::spill::MIN_OBJECT_STORE_MEMORY {
            return Err(Error::Runtime(format!(
                "object_store_memory must be at least {} bytes, got {object_store_memory}",
                crate::spill::MIN_OBJECT_STORE_MEMORY
            )));
        }
        let token = crate::auth::generate_token()?;
        // Session names show in /dev/shm and `oxray status`: random bits of
        // their own, never a piece of the token.
        let tag: [u8; 4] = crate::auth::random_bytes()?;
        let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        let session = format!("{}-{tag}", std::process::id());
        let node_id = format!("node-{session}");
        Ok(NodeConfig {
            resources,
            session,
            node_id,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            token,
            prestart_workers: true,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            namespace: options.namespace.clone(),
            log_dir: None,
            ship_executable: options.ship_executable,
            executable_cache_bytes: options
                .executable_cache_bytes
                .unwrap_or(DEFAULT_EXECUTABLE_CACHE_BYTES),
            object_store_memory,
            spill_dir: crate::session::session_dir()?.join("spill"),
            dead_actors_kept: DEFAULT_DEAD_ACTORS_KEPT,
            runtime_env: PreparedRuntimeEnv::default(),
        })
    }

    /// The same node, its embedded driver's workers in `runtime_env`.
    pub fn with_runtime_env(self, runtime_env: PreparedRuntimeEnv) -> Self {
        NodeConfig {
            runtime_env,
            ..self
        }
    }

    /// The object store this node's processes share.
    pub fn store_settings(&self) -> crate::spill::StoreSettings {
        crate::spill::StoreSettings {
            capacity: self.object_store_memory,
            spill_dir: self.spill_dir.clone(),
        }
    }
}

/// NVIDIA devices visible to this process, honouring `CUDA_VISIBLE_DEVICES`.
fn detect_gpus() -> f64 {
    if let Ok(visible) = std::env::var("CUDA_VISIBLE_DEVICES") {
        return visible.split(',').filter(|s| !s.trim().is_empty()).count() as f64;
    }
    std::fs::read_dir("/proc/driver/nvidia/gpus").map_or(0.0, |d| d.count() as f64)
}

fn detect_memory() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib * 1024.0 * 0.7)
}
