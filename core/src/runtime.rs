//! The process-wide runtime and the public API built on it.
//!
//! Every process has one *backend*: in a driver it is the embedded node itself
//! (calls are plain function calls, no sockets), in a worker it is a client that
//! speaks to the node over the worker's stream. The API functions (`put`, `get`,
//! `wait`, remote calls) only see the [`Backend`] trait, which is also the seam
//! for joining a remote cluster by address.

use crate::error::{Error, Result};
use crate::head::{Node, NodeConfig};
use crate::ids::{ActorId, ObjectId};
use crate::object_ref::ObjectRef;
use crate::packaging::ShipExecutable;
use crate::protocol::{ActorSpec, ObjectBlob, TaskSpec};
use crate::runtime_env::RuntimeEnv;
use crate::value;
use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What the API needs from "the cluster", wherever it is.
pub(crate) trait Backend: Send + Sync {
    fn session(&self) -> &str;
    /// Whether this process hosts the node (and so may keep shared memory
    /// mapped for reuse; see `shm`).
    fn hosts_node(&self) -> bool;
    /// Where other nodes pull this process's shared-memory objects from;
    /// `None` means it has none and sends every value inline.
    fn object_server(&self) -> Option<&str>;
    /// The cluster token, for pulls from other nodes.
    fn token(&self) -> &str;
    fn next_id(&self) -> u64;
    fn submit(&self, spec: TaskSpec);
    fn create_actor(&self, spec: ActorSpec) -> Result<ActorId>;
    fn put(&self, id: ObjectId, value: Result<ObjectBlob>);
    /// Like `put`, returning once the store holds the value. The default
    /// suits a backend whose `put` is itself a call into the store (the
    /// embedded node); one that sends puts without waiting overrides it.
    fn put_acknowledged(&self, id: ObjectId, value: Result<ObjectBlob>) -> Result<()> {
        self.put(id, value);
        Ok(())
    }
    fn get(&self, ids: &[ObjectId], timeout: Option<Duration>) -> Result<Vec<Result<ObjectBlob>>>;
    /// Returns once `num_returns` of `ids` are ready (or at the timeout),
    /// flagging every one that is ready then; [`wait`] keeps the first
    /// `num_returns`.
    fn wait(
        &self,
        ids: &[ObjectId],
        num_returns: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<bool>>;
    fn add_refs(&self, ids: &[ObjectId]);
    /// References held by a value being encoded, not by this process: the
    /// node counts each and releases them when the value is freed.
    fn add_refs_for_value(&self, ids: &[ObjectId]) {
        self.add_refs(ids);
    }
    /// This process's references to `ids` now belong to a task it submits
    /// (its ref arguments): the node releases them when the task is final.
    /// Nothing to do where every handle is counted at the node itself.
    fn hand_over(&self, _ids: &[ObjectId]) {}
    fn release(&self, ids: &[ObjectId]);
    fn cancel(&self, id: ObjectId) -> Result<()>;
    fn kill_actor(&self, id: ActorId) -> Result<()>;
    fn named_actor(&self, name: &str) -> Result<Option<(ActorId, String)>>;
    fn node_id(&self) -> &str;
    fn kv_put(&self, key: &str, value: Vec<u8>) -> Result<()>;
    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    fn kv_wait(&self, key: &str, timeout: Duration) -> Result<Vec<u8>>;
    fn kv_delete(&self, key: &str) -> Result<()>;
    fn create_placement_group(
        &self,
        id: u64,
        bundles: Vec<crate::ResourceSet>,
        strategy: crate::PlacementStrategy,
    ) -> Result<()>;
    fn wait_placement_group(&self, id: u64, timeout: Duration) -> Result<()>;
    fn remove_placement_group(&self, id: u64) -> Result<()>;
    /// Leaves the cluster (a driver joined by address ends its job); the
    /// embedded node is stopped by [`shutdown`] instead.
    fn disconnect(&self) {}
}

static CURRENT: RwLock<Option<Arc<dyn Backend>>> = RwLock::new(None);
static EMBEDDED: RwLock<Option<Arc<Node>>> = RwLock::new(None);
/// The head a driver joined by address talks to.
static HEAD_ADDRESS: RwLock<Option<String>> = RwLock::new(None);

/// The head this driver joined by address, if it did.
pub(crate) fn head_address() -> Option<String> {
    HEAD_ADDRESS.read().clone()
}

pub(crate) fn current() -> Result<Arc<dyn Backend>> {
    CURRENT.read().clone().ok_or(Error::NotInitialized)
}

pub(crate) fn install(backend: Arc<dyn Backend>) {
    *CURRENT.write() = Some(backend);
}

/// How to start or join a cluster; see [`init`].
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    pub address: Option<String>,
    /// The cluster token; by default `OXRAY_TOKEN`, then the session file
    /// that `oxray start --head` wrote on this machine.
    pub token: Option<String>,
    pub num_cpus: Option<f64>,
    pub num_gpus: Option<f64>,
    pub memory: Option<f64>,
    pub resources: BTreeMap<String, f64>,
    /// Where this job's named actors live; by default a namespace of its own
    /// (detached actors of a named namespace are found by later jobs in it).
    pub namespace: Option<String>,
    /// Print what this job's tasks and actors on other nodes print, prefixed
    /// `(name pid=N node=ID)` (Ray's `log_to_driver`); `None`: yes.
    pub log_to_driver: Option<bool>,
    /// Whether nodes that cannot run this driver's executable from its path
    /// get a copy through the head (default: when missing).
    pub ship_executable: ShipExecutable,
    /// Bound in bytes of this node's cache of shipped executables (default
    /// 8 GiB); a larger executable is refused.
    pub executable_cache_bytes: Option<u64>,
    /// Bytes of objects this node keeps in shared memory before it spills
    /// the oldest to disk (Ray's `object_store_memory`); default 30% of RAM.
    pub object_store_memory: Option<u64>,
    /// The working directory and variables of this job's workers on every
    /// node (Ray's `runtime_env`); `None`: what a job submission handed this
    /// driver in `OXRAY_RUNTIME_ENV`, if anything.
    pub runtime_env: Option<RuntimeEnv>,
}

impl InitOptions {
    /// Join the cluster whose head listens at `address` (`host:port`).
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// The cluster token to present when joining by address.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// CPUs this node offers (default: the machine's logical cores).
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.num_cpus = Some(n);
        self
    }

    /// GPUs this node offers (default: detected NVIDIA devices).
    pub fn num_gpus(mut self, n: f64) -> Self {
        self.num_gpus = Some(n);
        self
    }

    /// Bytes of memory this node offers for `memory` requests.
    pub fn memory(mut self, bytes: f64) -> Self {
        self.memory = Some(bytes);
        self
    }

    /// A custom resource this node offers.
    pub fn resource(mut self, name: impl Into<String>, amount: f64) -> Self {
        self.resources.insert(name.into(), amount);
        self
    }

    /// The namespace of this job's named actors (Ray's `namespace=`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The capacity of this node's object store in bytes; objects beyond
    /// it spill to disk (Ray's `object_store_memory=`).
    pub fn object_store_memory(mut self, bytes: u64) -> Self {
        self.object_store_memory = Some(bytes);
        self
    }

    /// Whether this driver prints its workers' output (default: yes).
    pub fn log_to_driver(mut self, enabled: bool) -> Self {
        self.log_to_driver = Some(enabled);
        self
    }

    /// Whether this job's executable is shipped through the head to nodes
    /// that cannot run it from the driver's path (see [`ShipExecutable`]).
    pub fn ship_executable(mut self, ship: ShipExecutable) -> Self {
        self.ship_executable = ship;
        self
    }

    /// Bound in bytes of this node's cache of shipped executables.
    pub fn executable_cache_bytes(mut self, bytes: u64) -> Self {
        self.executable_cache_bytes = Some(bytes);
        self
    }

    /// The runtime env of this job's workers (Ray's `runtime_env=`): they
    /// start in a copy of its working directory on every node, with its
    /// variables set.
    pub fn runtime_env(mut self, runtime_env: RuntimeEnv) -> Self {
        self.runtime_env = Some(runtime_env);
        self
    }
}

/// Starts the embedded single-node cluster (head services and node in this
/// process, workers as child processes), or joins one by address.
pub fn init(options: InitOptions) -> Result<()> {
    crate::worker::keep_worker_entry_linked();
    let mut embedded = EMBEDDED.write();
    if embedded.is_some() || CURRENT.read().is_some() {
        return Err(Error::AlreadyInitialized);
    }
    let runtime_env = match &options.runtime_env {
        Some(runtime_env) => runtime_env.prepare()?,
        None => RuntimeEnv::from_process_env()?
            .map(|env| env.prepare())
            .transpose()?
            .unwrap_or_default(),
    };
    if let Some(address) = &options.address {
        let token = match &options.token {
            Some(token) => token.clone(),
            None => crate::daemon::find_token()?,
        };
        install(crate::worker::connect_driver(
            address,
            &token,
            options.namespace.clone(),
            options.log_to_driver.unwrap_or(true),
            options.ship_executable,
            runtime_env,
        )?);
        *HEAD_ADDRESS.write() = Some(address.clone());
        return Ok(());
    }
    let node = Node::start(NodeConfig::detect(&options)?.with_runtime_env(runtime_env))?;
    install(node.clone());
    *embedded = Some(node);
    static CLEANUP_AT_EXIT: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a plain extern "C" function once.
    CLEANUP_AT_EXIT.call_once(|| unsafe {
        libc::atexit(shutdown_at_exit);
    });
    Ok(())
}

/// A driver that never calls [`shutdown`] still leaves no workers or shared
/// memory behind.
extern "C" fn shutdown_at_exit() {
    if let Some(node) = EMBEDDED.try_write().and_then(|mut e| e.take()) {
        node.shutdown();
    }
}

/// Where other nodes join this process's embedded cluster, and its token:
/// `oxray start --address ADDRESS --token TOKEN` adds a node to it.
pub fn join_address() -> Option<(String, String)> {
    EMBEDDED
        .read()
        .as_ref()
        .map(|node| (node.address().to_string(), node.token().to_string()))
}

/// Counts of what the local node holds: objects, tasks, workers, actors.
/// Lets tests and tools see that objects are really freed.
pub fn node_summary() -> Result<NodeSummary> {
    EMBEDDED
        .read()
        .as_ref()
        .map(|node| node.summary())
        .ok_or(Error::NotInitialized)
}

/// See [`node_summary`].
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSummary {
    pub objects: usize,
    /// Bytes of the node's objects in shared memory (not spilled).
    pub shared_memory_bytes: u64,
    /// Bytes of its objects spilled to disk now, and since it started.
    pub spilled_bytes: u64,
    pub spilled_bytes_total: u64,
    pub tasks: usize,
    pub workers: usize,
    pub actors_alive: usize,
    pub total: crate::ResourceSet,
    pub available: crate::ResourceSet,
}

/// Stops the embedded cluster: workers are told to exit and reaped, shared
/// memory is removed. Safe to call when not initialized.
pub fn shutdown() {
    let node = EMBEDDED.write().take();
    // A driver joined by address closes its connection: its job ends.
    if let Some(backend) = CURRENT.write().take() {
        backend.disconnect();
    }
    if let Some(node) = node {
        node.shutdown();
    }
}

/// Whether [`init`] has run in this process (or this is a worker).
pub fn is_initialized() -> bool {
    CURRENT.read().is_some()
}

/// Stores `value` in the object store (Ray's `ray.put`).
pub fn put<T: Serialize>(value: &T) -> Result<ObjectRef<T>> {
    let backend = current()?;
    let blob = value::encode(value, &*backend)?;
    let id = ObjectId(backend.next_id());
    backend.put(id, Ok(blob));
    Ok(ObjectRef::adopt(id, backend))
}

/// Like [`put`], returning only once the store has acknowledged the value,
/// as Ray's `ray.put` does. [`put`] from a worker or a driver joined by
/// address sends small values without waiting for a reply (a lost head
/// fails the next call that needs an answer); this one pays the round trip,
/// e.g. to measure puts the way Ray's microbenchmark does.
pub fn put_acknowledged<T: Serialize>(value: &T) -> Result<ObjectRef<T>> {
    let backend = current()?;
    let blob = value::encode(value, &*backend)?;
    let id = ObjectId(backend.next_id());
    let object = ObjectRef::adopt(id, backend.clone());
    backend.put_acknowledged(id, Ok(blob))?;
    Ok(object)
}

/// Waits for one object and returns its value (Ray's `ray.get`).
pub fn get<T: DeserializeOwned>(object: &ObjectRef<T>) -> Result<T> {
    let backend = current()?;
    let mut blobs = backend.get(&[object.id()], None)?;
    value::decode(&blobs.pop().expect("one id asked, one blob answered")?)
}

/// Waits for all objects and returns their values in order.
pub fn get_all<T: DeserializeOwned>(objects: &[ObjectRef<T>]) -> Result<Vec<T>> {
    get_all_timeout(objects, None)
}

/// Like [`get_all`], failing with [`Error::Timeout`] after `timeout`.
pub fn get_all_timeout<T: DeserializeOwned>(
    objects: &[ObjectRef<T>],
    timeout: Option<Duration>,
) -> Result<Vec<T>> {
    let backend = current()?;
    let ids: Vec<ObjectId> = objects.iter().map(ObjectRef::id).collect();
    backend
        .get(&ids, timeout)?
        .into_iter()
        .map(|blob| value::decode(&blob?))
        .collect()
}

/// The ready and the not-ready refs of a [`wait`].
pub type ReadyAndPending<T> = (Vec<ObjectRef<T>>, Vec<ObjectRef<T>>);

/// Splits `objects` into ready and not-ready lists, returning once
/// `num_returns` are ready or `timeout` passes. Both lists keep the input order
/// and the ready list holds at most `num_returns` refs, as in Ray.
pub fn wait<T>(
    objects: &[ObjectRef<T>],
    num_returns: usize,
    timeout: Option<Duration>,
) -> Result<ReadyAndPending<T>> {
    let backend = current()?;
    let ids: Vec<ObjectId> = objects.iter().map(ObjectRef::id).collect();
    let num_returns = num_returns.min(ids.len());
    let ready = first_ready(backend.wait(&ids, num_returns, timeout)?, num_returns);
    // Every ref is copied into one list or the other: counted in one call,
    // as a loop `pending = wait(&pending, 1)?.1` copies them all each turn.
    backend.add_refs(&ids);
    let (mut done, mut pending) = (Vec::new(), Vec::new());
    for (object, is_ready) in objects.iter().zip(ready) {
        let copy = object.copy_counted();
        if is_ready {
            done.push(copy);
        } else {
            pending.push(copy);
        }
    }
    Ok((done, pending))
}

/// `flags` with only the first `num_returns` ready ones kept: a wait gives
/// back at most that many, in the order they were asked for.
fn first_ready(mut flags: Vec<bool>, num_returns: usize) -> Vec<bool> {
    let mut left = num_returns;
    for flag in &mut flags {
        *flag = *flag && left > 0;
        left -= usize::from(*flag);
    }
    flags
}

/// Cancels the task that produces `object`: a queued task never runs, a
/// running one has its worker stopped. `get` then fails with
/// [`Error::Cancelled`]. Cancelling a finished task does nothing.
pub fn cancel<T>(object: &ObjectRef<T>) -> Result<()> {
    current()?.cancel(object.id())
}

/// The id of the node this process runs on (driver or worker).
pub fn node_id() -> Result<String> {
    Ok(current()?.node_id().to_string())
}

/// Stores `value` under `key` in the cluster's key-value store (Ray's internal
/// KV): how processes that are not parent and child find each other, e.g. the
/// ranks of a collective group.
/// A key for `purpose` derived from the cluster token (see
/// [`auth::derive_key`](crate::auth::derive_key)): ranks of a collective
/// group prove membership with it without the token crossing the network.
pub fn cluster_key(purpose: &str) -> Result<[u8; 32]> {
    Ok(crate::auth::derive_key(current()?.token(), purpose))
}

pub fn kv_put(key: &str, value: Vec<u8>) -> Result<()> {
    current()?.kv_put(key, value)
}

/// The value under `key`, if any.
pub fn kv_get(key: &str) -> Result<Option<Vec<u8>>> {
    current()?.kv_get(key)
}

/// Blocks until `key` exists and returns its value; [`Error::Timeout`] after
/// `timeout`.
pub fn kv_wait(key: &str, timeout: Duration) -> Result<Vec<u8>> {
    current()?.kv_wait(key, timeout)
}

/// Removes `key`; removing a missing key is not an error.
pub fn kv_delete(key: &str) -> Result<()> {
    current()?.kv_delete(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_gives_at_most_num_returns_in_the_order_asked() {
        let flags = vec![false, true, true, false, true];
        assert_eq!(
            first_ready(flags.clone(), 2),
            [false, true, true, false, false]
        );
        assert_eq!(first_ready(flags.clone(), 0), [false; 5]);
        assert_eq!(first_ready(flags.clone(), 9), flags);
    }
}
