//! The node: object store, resource scheduler, worker pool and actor manager of
//! one machine, with the gRPC service its worker processes connect to.
//!
//! All bookkeeping lives in one [`NodeState`] behind a mutex. Every event (a
//! submission, a finished task, a worker starting or dying, a reference
//! released) takes the lock, updates the state and runs [`NodeState::schedule`],
//! which hands queued work to workers. Keeping the scheduler a plain state
//! machine makes each transition easy to follow and keeps the hot path free of
//! extra hops: the driver of the embedded cluster calls it directly.
//!
//! Scheduling: tasks of one resource shape share a FIFO queue, so a task that
//! waits for a GPU never holds up CPU tasks behind it. A task *leases* a free
//! worker together with its resources and holds both until it finishes; a
//! worker runs one task at a time, so a short task never waits behind a long
//! one on a busy worker while another is free. A worker that blocks in `get`
//! gives its resources back until the value arrives, so nested tasks cannot
//! deadlock.

use crate::error::{Error, Result};
use crate::ids::{ActorId, IdMinter, ObjectId, TaskId, WorkerId};
use crate::placement::{self, PlacementStrategy};
use crate::protocol::*;
use crate::resources::{
    Allocation, ClusterResources, ResourcePool, ResourceSet, SchedulingStrategy, CPU, GPU, MEMORY,
};
use crate::runtime::{Backend, InitOptions};
use crate::shm;
use crate::wire::MAX_MESSAGE_BYTES;
use parking_lot::{Condvar, Mutex};
use rustc_hash::FxHashMap;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};

pub(crate) mod generated {
    include!(concat!(env!("OUT_DIR"), "/oxray.Head.rs"));
    include!(concat!(env!("OUT_DIR"), "/oxray.ObjectStore.rs"));
}
use crate::auth::RequireToken;
use generated::head_server::{Head as HeadService, HeadServer};

/// A node daemon heartbeats this often...
pub(crate) const HEARTBEAT_PERIOD: Duration = Duration::from_secs(1);
/// ...and is dead after this long without one (Ray: about 15-20 s).
pub(crate) const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(6);

/// Most worker processes for stateless tasks.
const MAX_TASK_WORKERS: usize = 64;

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
}

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
        let token = crate::auth::generate_token()?;
        let session = format!("{}-{}", std::process::id(), &token[..8]);
        let node_id = format!("node-{session}");
        Ok(NodeConfig {
            resources,
            session,
            node_id,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            token,
            prestart_workers: true,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
        })
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

struct ObjectEntry {
    value: Option<Arc<Result<ObjectBlob>>>,
    refs: u64,
    producer: Option<TaskId>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum TaskKind {
    Stateless,
    ActorCall(ActorId),
    ActorCreate(ActorId),
}

struct TaskRecord {
    spec: TaskSpec,
    kind: TaskKind,
    retries_left: u32,
    missing_deps: usize,
    worker: Option<WorkerId>,
    cancelled: bool,
}

struct Lease {
    allocation: Allocation,
    /// Resources handed back while the worker blocks in `get`.
    lent_out: bool,
}

struct WorkerRecord {
    node: String,
    executable: String,
    /// A remote driver's connection: it submits work but never runs any.
    is_driver: bool,
    pid: Option<u32>,
    sender: Option<mpsc::UnboundedSender<NodeToWorker>>,
    gpu_ids: Vec<u32>,
    actor: Option<ActorId>,
    lease: Option<Lease>,
    assigned: VecDeque<TaskId>,
}

#[derive(Debug, Clone, PartialEq)]
enum ActorStatus {
    WaitingForResources,
    Starting,
    Alive,
    Dead(Error),
}

struct ActorRecord {
    spec: ActorSpec,
    status: ActorStatus,
    allocation: Option<Allocation>,
    worker: Option<WorkerId>,
    restarts_used: u32,
    /// Calls not yet sent, in submission order.
    pending: VecDeque<TaskId>,
    /// Calls sent to the worker, in order.
    inflight: VecDeque<TaskId>,
}

impl WorkerRecord {
    /// The effect that ends this worker's process, wherever it runs.
    fn stop(&self, worker: WorkerId) -> Effect {
        Effect::Stop {
            worker,
            node: self.node.clone(),
            pid: self.pid,
        }
    }
}

struct PlacementGroupRecord {
    bundles: Vec<ResourceSet>,
    strategy: PlacementStrategy,
    /// One per bundle once reserved; empty while pending.
    allocations: Vec<Allocation>,
}

/// Another node of the cluster, as the head sees it.
struct RemoteNode {
    sender: mpsc::UnboundedSender<HeadToNode>,
    last_heartbeat: Instant,
    object_server: String,
}

struct ShapeQueue {
    request: ResourceSet,
    strategy: SchedulingStrategy,
    tasks: VecDeque<TaskId>,
}

struct NodeState {
    objects: FxHashMap<ObjectId, ObjectEntry>,
    tasks: FxHashMap<TaskId, TaskRecord>,
    waiting_on: FxHashMap<ObjectId, Vec<TaskId>>,
    queues: HashMap<String, ShapeQueue>,
    workers: FxHashMap<WorkerId, WorkerRecord>,
    actors: FxHashMap<ActorId, ActorRecord>,
    named_actors: HashMap<String, ActorId>,
    actors_waiting: VecDeque<ActorId>,
    pool: ClusterResources,
    /// Control streams of the other nodes, by node id.
    remote_nodes: HashMap<String, RemoteNode>,
    /// Nodes declared dead, kept for `oxray status`.
    dead_nodes: Vec<NodeStatus>,
    /// Every driver that has used the cluster (the job table).
    jobs: Vec<JobStatus>,
    /// The executable workers run: the latest driver's, so its functions exist there.
    worker_executable: Option<String>,
    kv: HashMap<String, Vec<u8>>,
    placement_groups: std::collections::BTreeMap<u64, PlacementGroupRecord>,
    shutting_down: bool,
    /// Counts objects becoming ready, so waiters know when to look again.
    ready_events: u64,
    /// Work for the async side: workers to spawn, processes to kill, files to
    /// remove. Collected under the lock, done after it is released.
    effects: Vec<Effect>,
}

enum Effect {
    Spawn {
        worker: WorkerId,
        node: String,
        gpu_ids: Vec<u32>,
    },
    Stop {
        worker: WorkerId,
        node: String,
        pid: Option<u32>,
    },
    /// A shared-memory value was freed: remove (or recycle) its file if this
    /// node holds it (`path`), and this node's pulled copy if any.
    Free {
        path: Option<String>,
        server: String,
        generation: u64,
    },
}

/// One node of the cluster.
pub(crate) struct Node {
    /// Lets async tasks hold the node without keeping it alive.
    this: Weak<Node>,
    state: Mutex<NodeState>,
    objects_changed: Condvar,
    ready_epoch: watch::Sender<u64>,
    ids: IdMinter,
    config: NodeConfig,
    address: SocketAddr,
    object_server_address: String,
    has_gpus: bool,
    runtime: tokio::runtime::Runtime,
}

impl Node {
    pub fn start(config: NodeConfig) -> Result<Arc<Node>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("oxray-node")
            .enable_all()
            .build()
            .map_err(|e| Error::runtime("cannot start the node's runtime", e))?;
        let bind = config.bind;
        let incoming = runtime
            .block_on(async { tonic::transport::server::TcpIncoming::bind(bind) })
            .map_err(|e| Error::runtime(&format!("cannot listen on {bind}"), e))?
            .with_nodelay(Some(true));
        let address = incoming
            .local_addr()
            .map_err(|e| Error::runtime("cannot read the worker port", e))?;
        let (ready_epoch, _) = watch::channel(0);
        let node = Arc::new_cyclic(|this| Node {
            this: this.clone(),
            state: Mutex::new(NodeState {
                objects: FxHashMap::default(),
                tasks: FxHashMap::default(),
                waiting_on: FxHashMap::default(),
                queues: HashMap::new(),
                workers: FxHashMap::default(),
                actors: FxHashMap::default(),
                named_actors: HashMap::new(),
                actors_waiting: VecDeque::new(),
                pool: {
                    let mut pool = ClusterResources::default();
                    pool.add_node(&config.node_id, config.resources.clone());
                    pool
                },
                remote_nodes: HashMap::new(),
                dead_nodes: Vec::new(),
                jobs: Vec::new(),
                worker_executable: None,
                kv: HashMap::new(),
                placement_groups: Default::default(),
                shutting_down: false,
                ready_events: 0,
                effects: Vec::new(),
            }),
            objects_changed: Condvar::new(),
            ready_epoch,
            ids: IdMinter::new(0),
            has_gpus: config.resources.get(GPU) > 0.0,
            config,
            object_server_address: address.to_string(),
            address,
            runtime,
        });
        let head = HeadServer::new(HeadEndpoint { node: node.weak() })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let head = tonic::service::interceptor::InterceptedService::new(
            head,
            RequireToken::new(&node.config.token),
        );
        let objects =
            crate::transfer::ObjectServer::service(&node.config.session, &node.config.token);
        node.runtime.spawn(async move {
            let served = tonic::transport::Server::builder()
                .initial_stream_window_size(Some(8 << 20))
                .initial_connection_window_size(Some(16 << 20))
                .add_service(head)
                .add_service(objects)
                .serve_with_incoming(incoming)
                .await;
            if let Err(e) = served {
                tracing::error!("worker service stopped: {e}");
            }
        });
        node.runtime.spawn(watch_heartbeats(node.weak()));
        // A warm pool: one worker per CPU, as Ray prestarts them.
        if node.config.prestart_workers {
            let executable = node.worker_executable();
            let mut state = node.state.lock();
            // The embedded driver is the cluster's first job.
            state
                .jobs
                .push(job(WorkerId(0), std::process::id(), &executable));
            let warm = node.config.resources.get(CPU).ceil() as usize;
            for _ in 0..warm.min(MAX_TASK_WORKERS) {
                let id = WorkerId(crate::worker::next_worker_number());
                state.add_worker(id, &node.config.node_id, Vec::new(), None);
            }
        }
        node.apply_effects();
        Ok(node)
    }

    /// Takes the lock, runs `f`, schedules, and performs the side effects.
    fn with_state<R>(&self, f: impl FnOnce(&mut NodeState, &Node) -> R) -> R {
        let (result, changed) = {
            let mut state = self.state.lock();
            let before = state.ready_events;
            let result = f(&mut state, self);
            state.schedule(self);
            (result, state.ready_events != before)
        };
        if changed {
            self.objects_changed.notify_all();
            self.ready_epoch.send_modify(|e| *e += 1);
        }
        self.apply_effects();
        result
    }

    fn apply_effects(&self) {
        let effects = std::mem::take(&mut self.state.lock().effects);
        for effect in effects {
            match effect {
                Effect::Spawn {
                    worker,
                    node,
                    gpu_ids,
                } => {
                    if node == self.config.node_id {
                        self.spawn_worker(worker, gpu_ids)
                    } else {
                        self.spawn_remote_worker(&node, worker, gpu_ids)
                    }
                }
                Effect::Stop { worker, node, pid } => {
                    if node == self.config.node_id {
                        if let Some(pid) = pid {
                            kill_process(pid);
                        }
                    } else if let Some(remote) = self.state.lock().remote_nodes.get(&node) {
                        // A pid of another machine means nothing here: its
                        // node daemon stops the process.
                        let _ = remote.sender.send(HeadToNode::Kill { worker });
                    }
                }
                Effect::Free {
                    path,
                    server,
                    generation,
                } => {
                    if let Some(path) = path {
                        shm::free(&path);
                    }
                    shm::remove_pulled(&self.config.session, &server, generation);
                }
            }
        }
    }

    fn spawn_worker(&self, worker: WorkerId, gpu_ids: Vec<u32>) {
        let executable = self.worker_executable();
        let launch = crate::worker::WorkerLaunch {
            executable: &executable,
            head_address: &self.address.to_string(),
            worker,
            session: &self.config.session,
            node_id: &self.config.node_id,
            object_server: &self.address.to_string(),
            token: &self.config.token,
            gpu_ids: &gpu_ids,
            hide_gpus: self.has_gpus,
        };
        let _guard = self.runtime.enter();
        match launch.command().spawn() {
            Ok(mut child) => {
                if let Some(pid) = child.id() {
                    if let Some(w) = self.state.lock().workers.get_mut(&worker) {
                        w.pid = Some(pid);
                    }
                }
                let node = self.weak();
                self.runtime.spawn(async move {
                    let status = child.wait().await;
                    if let Some(node) = node.upgrade() {
                        let message = match status {
                            Ok(status) => describe_exit(status),
                            Err(e) => format!("could not wait for the process: {e}"),
                        };
                        node.worker_exited(worker, message);
                    }
                });
            }
            Err(e) => {
                self.worker_failed_to_start(worker, format!("cannot start worker process: {e}"))
            }
        }
    }

    /// What new workers run: the connected driver's executable, or this
    /// process's own image (the embedded cluster's driver), even if its file
    /// was replaced by a rebuild since.
    fn worker_executable(&self) -> String {
        self.state
            .lock()
            .worker_executable
            .clone()
            .unwrap_or_else(|| {
                let own_image = std::path::Path::new("/proc/self/exe");
                if own_image.exists() {
                    own_image.to_string_lossy().into_owned()
                } else {
                    std::env::current_exe().map_or_else(
                        |_| "oxray".to_string(),
                        |p| p.to_string_lossy().into_owned(),
                    )
                }
            })
    }

    fn spawn_remote_worker(&self, node: &str, worker: WorkerId, gpu_ids: Vec<u32>) {
        // Another machine's /proc/self/exe is its own daemon: name the file.
        let executable = self
            .state
            .lock()
            .worker_executable
            .clone()
            .unwrap_or_else(|| {
                std::env::current_exe().map_or_else(
                    |_| "oxray".to_string(),
                    |p| p.to_string_lossy().into_owned(),
                )
            });
        let sent = self.state.lock().remote_nodes.get(node).is_some_and(|n| {
            n.sender
                .send(HeadToNode::Spawn {
                    worker,
                    gpu_ids,
                    executable,
                })
                .is_ok()
        });
        if !sent {
            self.worker_exited(worker, format!("its node {node} is gone"));
        }
    }

    fn weak(&self) -> Weak<Node> {
        self.this.clone()
    }

    fn worker_failed_to_start(&self, worker: WorkerId, message: String) {
        tracing::error!("{message}");
        self.worker_exited(worker, message);
    }

    /// A worker's stream ended. Its process is stopped for certain, and the
    /// death is reported by the process watcher, which knows the exit status
    /// (a signal, an exit code) that makes the error useful.
    fn stream_closed(&self, worker: WorkerId, reason: String) {
        let local_pid = self
            .state
            .lock()
            .workers
            .get(&worker)
            .filter(|w| w.node == self.config.node_id)
            .and_then(|w| w.pid);
        match local_pid {
            Some(pid) => kill_process(pid),
            None => self.worker_exited(worker, reason),
        }
    }

    /// A worker's process ended (or a remote driver left).
    fn worker_exited(&self, worker: WorkerId, message: String) {
        let job_id = worker.to_string();
        if let Some(job) = self
            .state
            .lock()
            .jobs
            .iter_mut()
            .find(|j| j.job_id == job_id)
        {
            job.running = false;
        }
        self.with_state(|state, node| state.remove_worker(node, worker, &message));
    }

    pub fn summary(&self) -> crate::runtime::NodeSummary {
        let state = self.state.lock();
        let shared_memory_bytes = state
            .objects
            .values()
            .filter_map(|e| match e.value.as_deref() {
                Some(Ok(ObjectBlob {
                    payload: Payload::Shared { len, .. },
                    ..
                })) => Some(*len),
                _ => None,
            })
            .sum();
        crate::runtime::NodeSummary {
            objects: state.objects.len(),
            shared_memory_bytes,
            tasks: state.tasks.len(),
            workers: state.workers.len(),
            actors_alive: state
                .actors
                .values()
                .filter(|a| !matches!(a.status, ActorStatus::Dead(_)))
                .count(),
            total: self.local_pool(&state).total().clone(),
            available: self.local_pool(&state).available().clone(),
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn token(&self) -> &str {
        &self.config.token
    }

    fn local_pool<'a>(&self, state: &'a NodeState) -> &'a crate::resources::ResourcePool {
        state
            .pool
            .node(&self.config.node_id)
            .expect("the head's own node never leaves")
    }

    pub fn shutdown(&self) {
        let pids: Vec<u32> = {
            let mut state = self.state.lock();
            state.shutting_down = true;
            // Closing the control streams tells node daemons the head is gone.
            state.remote_nodes.clear();
            let local = &self.config.node_id;
            state
                .workers
                .values_mut()
                .filter_map(|w| {
                    w.sender = None;
                    w.pid.filter(|_| w.node == *local)
                })
                .collect()
        };
        // Closing the streams asks workers to exit; give them a moment, then
        // make sure.
        let deadline = Instant::now() + Duration::from_secs(2);
        for pid in &pids {
            while process_alive(*pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            kill_process(*pid);
        }
        shm::remove_session(&self.config.session);
    }

    fn register_worker(
        &self,
        worker: WorkerId,
        pid: u32,
        sender: mpsc::UnboundedSender<NodeToWorker>,
    ) -> bool {
        self.with_state(|state, node| {
            let Some(record) = state.workers.get_mut(&worker) else {
                return false;
            };
            record.pid = Some(pid);
            record.sender = Some(sender);
            if let Some(actor) = record.actor {
                state.start_actor_on(node, actor, worker);
            }
            true
        })
    }

    /// A driver joined from outside: it gets a record (to route replies) but no
    /// work, and its executable is what new workers run.
    fn register_driver(
        &self,
        id: WorkerId,
        pid: u32,
        executable: String,
        sender: mpsc::UnboundedSender<NodeToWorker>,
    ) -> WorkerId {
        self.with_state(|state, _| {
            state.jobs.push(job(id, pid, &executable));
            state.worker_executable = Some(executable.clone());
            state.workers.insert(
                id,
                WorkerRecord {
                    node: format!("driver-{pid}"),
                    is_driver: true,
                    executable,
                    pid: None,
                    sender: Some(sender),
                    gpu_ids: Vec::new(),
                    actor: None,
                    lease: None,
                    assigned: VecDeque::new(),
                },
            );
        });
        id
    }

    fn register_node(
        &self,
        node_id: &str,
        resources: ResourceSet,
        object_server: String,
        sender: mpsc::UnboundedSender<HeadToNode>,
    ) -> std::result::Result<(), tonic::Status> {
        self.with_state(|state, node| {
            if node_id == node.config.node_id || state.remote_nodes.contains_key(node_id) {
                eprintln!("oxray: refused node {node_id}: a live node already has that id");
                return Err(tonic::Status::already_exists(format!(
                    "node {node_id} is already registered"
                )));
            }
            eprintln!("oxray: node {node_id} joined with {resources}");
            state.pool.add_node(node_id, resources);
            state.remote_nodes.insert(
                node_id.to_string(),
                RemoteNode {
                    sender,
                    last_heartbeat: Instant::now(),
                    object_server,
                },
            );
            Ok(())
        })
    }

    fn handle_node_message(&self, node_id: &str, message: NodeToHead) {
        match message {
            NodeToHead::Register { .. } => {}
            NodeToHead::Heartbeat => {
                if let Some(node) = self.state.lock().remote_nodes.get_mut(node_id) {
                    node.last_heartbeat = Instant::now();
                }
            }
            NodeToHead::WorkerExited { worker, message } => self.worker_exited(worker, message),
        }
    }

    pub fn cluster_status(&self) -> ClusterStatus {
        let state = self.state.lock();
        let workers_on = |node: &str| state.workers.values().filter(|w| w.node == node).count();
        let nodes = state
            .pool
            .nodes()
            .map(|(id, pool)| NodeStatus {
                node_id: id.to_string(),
                address: state
                    .remote_nodes
                    .get(id)
                    .map_or_else(|| self.address.to_string(), |n| n.object_server.clone()),
                alive: true,
                is_head: id == self.config.node_id,
                total: pool.total().clone(),
                available: pool.available().clone(),
                workers: workers_on(id),
            })
            .chain(state.dead_nodes.iter().cloned())
            .collect();
        let actors = state
            .actors
            .iter()
            .map(|(id, a)| ActorStatusLine {
                actor_id: *id,
                class: a.spec.class.clone(),
                name: a.spec.name.clone(),
                state: match &a.status {
                    ActorStatus::WaitingForResources => "PENDING_CREATION".into(),
                    ActorStatus::Starting => "STARTING".into(),
                    ActorStatus::Alive => "ALIVE".into(),
                    ActorStatus::Dead(_) => "DEAD".into(),
                },
                node_id: a.allocation.as_ref().map(|al| al.node.clone()),
                restarts: a.restarts_used,
            })
            .collect();
        let placement_groups = state
            .placement_groups
            .iter()
            .map(|(id, g)| PlacementGroupLine {
                id: *id,
                strategy: g.strategy,
                state: if g.allocations.is_empty() {
                    "PENDING"
                } else {
                    "CREATED"
                }
                .into(),
                bundles: g
                    .bundles
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (b.clone(), g.allocations.get(i).map(|a| a.node.clone())))
                    .collect(),
            })
            .collect();
        let running = state.tasks.values().filter(|t| t.worker.is_some()).count();
        ClusterStatus {
            nodes,
            jobs: state.jobs.clone(),
            actors,
            placement_groups,
            pending_tasks: state.tasks.len() - running,
            running_tasks: running,
            objects: state.objects.len(),
        }
    }

    fn handle_worker_message(&self, worker: WorkerId, message: WorkerToNode) {
        match message {
            WorkerToNode::Hello { .. } | WorkerToNode::DriverHello { .. } => {}
            WorkerToNode::Finished { task_id, outcome } => {
                self.with_state(|state, node| state.task_finished(node, worker, task_id, outcome))
            }
            WorkerToNode::Submit(spec) => self.submit(spec),
            WorkerToNode::Put { id, value } => self.put(id, value),
            WorkerToNode::AddRefs(ids) => self.add_refs(&ids),
            WorkerToNode::Release(ids) => self.release(&ids),
            WorkerToNode::Request {
                request_id,
                request,
            } => self.handle_request(worker, request_id, request),
        }
    }

    fn handle_request(&self, worker: WorkerId, request_id: u64, request: Request) {
        let reply_to = move |node: &Node, reply: Result<Reply>| {
            if let Some(sender) = node
                .state
                .lock()
                .workers
                .get(&worker)
                .and_then(|w| w.sender.clone())
            {
                let _ = sender.send(NodeToWorker::Reply { request_id, reply });
            }
        };
        match request {
            Request::CreateActor(spec) => reply_to(self, self.create_actor(spec).map(Reply::Actor)),
            Request::NamedActor { name } => {
                reply_to(self, self.named_actor(&name).map(Reply::NamedActor))
            }
            Request::KillActor(id) => reply_to(self, self.kill_actor(id).map(|_| Reply::Done)),
            Request::Cancel(id) => reply_to(self, self.cancel(id).map(|_| Reply::Done)),
            Request::KvPut { key, value } => {
                reply_to(self, self.kv_put(&key, value).map(|_| Reply::Done))
            }
            Request::KvGet { key } => reply_to(self, self.kv_get(&key).map(Reply::Value)),
            Request::CreatePlacementGroup {
                id,
                bundles,
                strategy,
            } => reply_to(
                self,
                self.create_placement_group(id, bundles, strategy)
                    .map(|_| Reply::Done),
            ),
            Request::RemovePlacementGroup { id } => {
                reply_to(self, self.remove_placement_group(id).map(|_| Reply::Done))
            }
            Request::WaitPlacementGroup { id, timeout_ms } => {
                let node = self.weak();
                self.runtime.spawn(async move {
                    let Some(node) = node.upgrade() else { return };
                    let timeout = Some(Duration::from_millis(timeout_ms));
                    let reply = node
                        .await_until(worker, timeout, |state| state.placement_group_ready(id))
                        .await
                        .map(|_| Reply::Done);
                    reply_to(&node, reply);
                });
            }
            Request::KvDelete { key } => reply_to(self, self.kv_delete(&key).map(|_| Reply::Done)),
            Request::KvWait { key, timeout_ms } => {
                let node = self.weak();
                self.runtime.spawn(async move {
                    let Some(node) = node.upgrade() else { return };
                    let timeout = Some(Duration::from_millis(timeout_ms));
                    let reply = node
                        .await_until(worker, timeout, |state| Ok(state.kv.contains_key(&key)))
                        .await
                        .map(|_| Reply::Value(node.state.lock().kv.get(&key).cloned()));
                    reply_to(&node, reply);
                });
            }
            Request::Get { ids, timeout_ms } => {
                let node = self.weak();
                self.runtime.spawn(async move {
                    let Some(node) = node.upgrade() else { return };
                    let timeout = timeout_ms.map(Duration::from_millis);
                    let mut outstanding = Outstanding::new(&ids);
                    let reply =
                        node.await_until(worker, timeout, |state| {
                            Ok(outstanding.missing(state)? == 0)
                        })
                        .await
                        .map(|_| {
                            let state = node.state.lock();
                            Reply::Objects(ids.iter().map(|id| state.value_of(*id)).collect())
                        });
                    reply_to(&node, reply);
                });
            }
            Request::Wait {
                ids,
                num_returns,
                timeout_ms,
            } => {
                let node = self.weak();
                self.runtime.spawn(async move {
                    let Some(node) = node.upgrade() else { return };
                    let timeout = timeout_ms.map(Duration::from_millis);
                    let mut outstanding = Outstanding::new(&ids);
                    let enough = |state: &NodeState| {
                        Ok(ids.len() - outstanding.missing(state)? >= num_returns)
                    };
                    let reply = match node.await_until(worker, timeout, enough).await {
                        Ok(()) | Err(Error::Timeout { .. }) => Ok(Reply::Ready(
                            node.state.lock().ready_flags(&ids, num_returns),
                        )),
                        Err(e) => Err(e),
                    };
                    reply_to(&node, reply);
                });
            }
        }
    }

    /// Waits (asynchronously, for a worker) until `done` holds, lending the
    /// worker's resources out meanwhile.
    async fn await_until(
        &self,
        worker: WorkerId,
        timeout: Option<Duration>,
        mut done: impl FnMut(&NodeState) -> Result<bool>,
    ) -> Result<()> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut epoch = self.ready_epoch.subscribe();
        let mut lent = false;
        let outcome = loop {
            epoch.borrow_and_update();
            match done(&self.state.lock()) {
                Err(e) => break Err(e),
                Ok(true) => break Ok(()),
                Ok(false) => {}
            }
            if !lent {
                lent = true;
                self.with_state(|state, _| state.lend_out(worker, true));
            }
            let changed = epoch.changed();
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, changed).await.is_err() {
                        break Err(Error::Timeout {
                            seconds: timeout.unwrap_or_default().as_secs_f64(),
                        });
                    }
                }
                None => {
                    let _ = changed.await;
                }
            }
        };
        if lent {
            self.with_state(|state, _| state.lend_out(worker, false));
        }
        outcome
    }
}

impl Backend for Node {
    fn session(&self) -> &str {
        &self.config.session
    }

    fn hosts_node(&self) -> bool {
        true
    }

    fn object_server(&self) -> Option<&str> {
        Some(&self.object_server_address)
    }

    fn token(&self) -> &str {
        &self.config.token
    }

    fn next_id(&self) -> u64 {
        self.ids.next()
    }

    fn submit(&self, spec: TaskSpec) {
        self.with_state(|state, _| state.submit(spec));
    }

    fn create_actor(&self, spec: ActorSpec) -> Result<ActorId> {
        self.with_state(|state, _| state.create_actor(spec))
    }

    fn put(&self, id: ObjectId, value: Result<ObjectBlob>) {
        self.with_state(|state, _| {
            state.objects.insert(
                id,
                ObjectEntry {
                    value: None,
                    refs: 1,
                    producer: None,
                },
            );
            state.complete(id, value);
        });
    }

    fn get(&self, ids: &[ObjectId], timeout: Option<Duration>) -> Result<Vec<Result<ObjectBlob>>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut outstanding = Outstanding::new(ids);
        let mut state = self.state.lock();
        loop {
            if outstanding.missing(&state)? == 0 {
                return Ok(ids.iter().map(|id| state.value_of(*id)).collect());
            }
            match deadline {
                Some(deadline) => {
                    if self
                        .objects_changed
                        .wait_until(&mut state, deadline)
                        .timed_out()
                        && outstanding.missing(&state)? > 0
                    {
                        return Err(Error::Timeout {
                            seconds: timeout.unwrap_or_default().as_secs_f64(),
                        });
                    }
                }
                None => self.objects_changed.wait(&mut state),
            }
        }
    }

    fn wait(
        &self,
        ids: &[ObjectId],
        num_returns: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<bool>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut outstanding = Outstanding::new(ids);
        let mut state = self.state.lock();
        while ids.len() - outstanding.missing(&state)? < num_returns {
            match deadline {
                Some(deadline) => {
                    if self
                        .objects_changed
                        .wait_until(&mut state, deadline)
                        .timed_out()
                    {
                        break;
                    }
                }
                None => self.objects_changed.wait(&mut state),
            }
        }
        Ok(state.ready_flags(ids, num_returns))
    }

    fn add_refs(&self, ids: &[ObjectId]) {
        let mut state = self.state.lock();
        for id in ids {
            if let Some(entry) = state.objects.get_mut(id) {
                entry.refs += 1;
            }
        }
    }

    fn release(&self, ids: &[ObjectId]) {
        let has_effects = {
            let mut state = self.state.lock();
            for id in ids {
                state.release(*id);
            }
            !state.effects.is_empty()
        };
        if has_effects {
            self.apply_effects();
        }
    }

    fn cancel(&self, id: ObjectId) -> Result<()> {
        self.with_state(|state, _| state.cancel(id))
    }

    fn kill_actor(&self, id: ActorId) -> Result<()> {
        self.with_state(|state, _| state.kill_actor(id))
    }

    fn node_id(&self) -> &str {
        &self.config.node_id
    }

    fn kv_put(&self, key: &str, value: Vec<u8>) -> Result<()> {
        self.with_state(|state, _| {
            state.kv.insert(key.to_string(), value);
            // Wakes `kv_wait`ers, which share the objects' wake-up.
            state.ready_events += 1;
        });
        Ok(())
    }

    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.state.lock().kv.get(key).cloned())
    }

    fn kv_wait(&self, key: &str, timeout: Duration) -> Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock();
        loop {
            if let Some(value) = state.kv.get(key) {
                return Ok(value.clone());
            }
            if self
                .objects_changed
                .wait_until(&mut state, deadline)
                .timed_out()
                && !state.kv.contains_key(key)
            {
                return Err(Error::Timeout {
                    seconds: timeout.as_secs_f64(),
                });
            }
        }
    }

    fn kv_delete(&self, key: &str) -> Result<()> {
        self.state.lock().kv.remove(key);
        Ok(())
    }

    fn create_placement_group(
        &self,
        id: u64,
        bundles: Vec<ResourceSet>,
        strategy: PlacementStrategy,
    ) -> Result<()> {
        self.with_state(|state, _| state.create_placement_group(id, bundles, strategy))
    }

    fn wait_placement_group(&self, id: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock();
        while !state.placement_group_ready(id)? {
            if self
                .objects_changed
                .wait_until(&mut state, deadline)
                .timed_out()
                && !state.placement_group_ready(id)?
            {
                return Err(Error::Timeout {
                    seconds: timeout.as_secs_f64(),
                });
            }
        }
        Ok(())
    }

    fn remove_placement_group(&self, id: u64) -> Result<()> {
        self.with_state(|state, _| state.remove_placement_group(id))
    }

    fn named_actor(&self, name: &str) -> Result<Option<(ActorId, String)>> {
        let state = self.state.lock();
        Ok(state.named_actors.get(name).and_then(|id| {
            let actor = state.actors.get(id)?;
            (!matches!(actor.status, ActorStatus::Dead(_))).then(|| (*id, actor.spec.class.clone()))
        }))
    }
}

impl NodeState {
    fn add_worker(&mut self, id: WorkerId, node: &str, gpu_ids: Vec<u32>, actor: Option<ActorId>) {
        self.workers.insert(
            id,
            WorkerRecord {
                node: node.to_string(),
                executable: self.worker_executable.clone().unwrap_or_default(),
                is_driver: false,
                pid: None,
                sender: None,
                gpu_ids: gpu_ids.clone(),
                actor,
                lease: None,
                assigned: VecDeque::new(),
            },
        );
        self.effects.push(Effect::Spawn {
            worker: id,
            node: node.to_string(),
            gpu_ids,
        });
    }

    fn value_of(&self, id: ObjectId) -> Result<ObjectBlob> {
        match self.objects.get(&id).and_then(|e| e.value.as_ref()) {
            Some(value) => (**value).clone(),
            None => Err(Error::ObjectLost {
                id: id.to_string(),
                message: "freed or never created".into(),
            }),
        }
    }

    fn ready_flags(&self, ids: &[ObjectId], num_returns: usize) -> Vec<bool> {
        let mut left = num_returns;
        ids.iter()
            .map(|id| {
                let ready = left > 0 && self.objects.get(id).is_some_and(|e| e.value.is_some());
                left -= usize::from(ready);
                ready
            })
            .collect()
    }

    /// Stores a value (or error) for `id` and wakes what waits on it.
    fn complete(&mut self, id: ObjectId, value: Result<ObjectBlob>) {
        self.ready_events += 1;
        let unwanted = match self.objects.get_mut(&id) {
            Some(entry) if entry.refs > 0 => {
                entry.value = Some(Arc::new(value));
                entry.producer = None;
                None
            }
            Some(_) => {
                self.objects.remove(&id);
                Some(value)
            }
            None => Some(value),
        };
        if let Some(value) = unwanted {
            self.free_value(&value);
        }
        for task in self.waiting_on.remove(&id).unwrap_or_default() {
            if let Some(record) = self.tasks.get_mut(&task) {
                record.missing_deps -= 1;
                if record.missing_deps == 0 {
                    self.dependencies_ready(task);
                }
            }
        }
    }

    fn free_value(&mut self, value: &Result<ObjectBlob>) {
        if let Ok(blob) = value {
            self.free_blob(blob);
        }
    }

    fn free_blob(&mut self, blob: &ObjectBlob) {
        if let Payload::Shared {
            path,
            node,
            server,
            generation,
            ..
        } = &blob.payload
        {
            // The holder frees the file; every other node drops its copy.
            let free = HeadToNode::Free {
                path: path.clone(),
                server: server.clone(),
                generation: *generation,
            };
            for remote in self.remote_nodes.values() {
                let _ = remote.sender.send(free.clone());
            }
            self.effects.push(Effect::Free {
                path: (!self.remote_nodes.contains_key(node)).then(|| path.clone()),
                server: server.clone(),
                generation: *generation,
            });
        }
        for id in &blob.contained {
            self.release(*id);
        }
    }

    fn release(&mut self, id: ObjectId) {
        let Some(entry) = self.objects.get_mut(&id) else {
            return;
        };
        entry.refs = entry.refs.saturating_sub(1);
        if entry.refs == 0 && entry.value.is_some() {
            let entry = self.objects.remove(&id).expect("entry just seen");
            if let Some(value) = entry.value {
                self.free_value(&value);
            }
        }
    }

    fn submit(&mut self, spec: TaskSpec) {
        let return_id = spec.return_id;
        self.objects.insert(
            return_id,
            ObjectEntry {
                value: None,
                refs: 1,
                producer: Some(spec.task_id),
            },
        );
        let kind = match spec.actor {
            Some(actor) => TaskKind::ActorCall(actor),
            None => TaskKind::Stateless,
        };
        if kind == TaskKind::Stateless && !self.pool.feasible(&spec.resources, &spec.strategy) {
            let error = Error::Infeasible {
                what: spec.invocation.display_name(),
                requested: spec.resources.to_string(),
                available: self.pool.largest_node(),
            };
            self.release_args(&spec.args);
            return self.complete(return_id, Err(error));
        }
        let task_id = spec.task_id;
        let retries_left = match kind {
            TaskKind::ActorCall(actor) => self
                .actors
                .get(&actor)
                .map_or(0, |a| a.spec.max_task_retries),
            _ => spec.max_retries,
        };
        self.tasks.insert(
            task_id,
            TaskRecord {
                spec,
                kind,
                retries_left,
                missing_deps: 0,
                worker: None,
                cancelled: false,
            },
        );
        self.track_dependencies(task_id);
    }

    /// Counts the task's ref arguments that are not ready yet; the task moves on
    /// when the count reaches zero.
    fn track_dependencies(&mut self, task_id: TaskId) {
        let refs: Vec<ObjectId> = self.tasks[&task_id]
            .spec
            .args
            .iter()
            .filter_map(|a| match a {
                TaskArg::Ref(id) => Some(*id),
                TaskArg::Value(_) => None,
            })
            .collect();
        let mut missing = 0;
        for id in refs {
            match self.objects.get(&id) {
                Some(entry) if entry.value.is_none() => {
                    missing += 1;
                    self.waiting_on.entry(id).or_default().push(task_id);
                }
                Some(_) => {}
                None => {
                    let lost = Error::ObjectLost {
                        id: id.to_string(),
                        message: "argument was freed before the task ran".into(),
                    };
                    return self.finish_task(task_id, Err(lost));
                }
            }
        }
        self.tasks
            .get_mut(&task_id)
            .expect("task just inserted")
            .missing_deps = missing;
        if missing == 0 {
            self.dependencies_ready(task_id);
        }
    }

    fn dependencies_ready(&mut self, task_id: TaskId) {
        let record = &self.tasks[&task_id];
        // A failed argument fails the task without running it, as in Ray.
        let failed_arg = record.spec.args.iter().find_map(|a| match a {
            TaskArg::Ref(id) => match self.objects.get(id).and_then(|e| e.value.as_deref()) {
                Some(Err(e)) => Some(e.clone()),
                _ => None,
            },
            TaskArg::Value(_) => None,
        });
        if let Some(error) = failed_arg {
            return self.finish_task(task_id, Err(error));
        }
        match record.kind {
            TaskKind::Stateless => self.queue_for(task_id).push_back(task_id),
            TaskKind::ActorCall(actor) => match self.actors.get_mut(&actor) {
                Some(record) if !matches!(record.status, ActorStatus::Dead(_)) => {
                    record.pending.push_back(task_id)
                }
                Some(record) => {
                    let ActorStatus::Dead(error) = record.status.clone() else {
                        unreachable!()
                    };
                    self.finish_task(task_id, Err(error));
                }
                None => {
                    let error = Error::ActorDied {
                        actor: actor.to_string(),
                        message: "no such actor".into(),
                    };
                    self.finish_task(task_id, Err(error));
                }
            },
            TaskKind::ActorCreate(_) => {}
        }
    }

    /// Records a task's final outcome and drops the references it held.
    fn finish_task(&mut self, task_id: TaskId, outcome: Result<ObjectBlob>) {
        let Some(record) = self.tasks.remove(&task_id) else {
            return;
        };
        self.release_args(&record.spec.args);
        self.complete(record.spec.return_id, outcome);
    }

    /// Drops the references a task's or actor's arguments held.
    fn release_args(&mut self, args: &[TaskArg]) {
        for arg in args {
            match arg {
                TaskArg::Ref(id) => self.release(*id),
                TaskArg::Value(blob) => self.free_blob(blob),
            }
        }
    }

    /// Hands queued work to workers; see the module doc for the policy.
    fn schedule(&mut self, node: &Node) {
        if self.shutting_down {
            return;
        }
        self.reserve_pending_groups();
        self.start_waiting_actors(node);
        let shapes: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.tasks.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for shape in shapes {
            while let Some((task_id, request, strategy)) = self
                .queues
                .get(&shape)
                .and_then(|q| Some((*q.tasks.front()?, q.request.clone(), q.strategy.clone())))
            {
                let Some(worker) = self.lease_worker(&request, &strategy) else {
                    break;
                };
                self.queues
                    .get_mut(&shape)
                    .expect("queue seen above")
                    .tasks
                    .pop_front();
                self.assign(node, worker, task_id);
            }
        }
        self.queues.retain(|_, q| !q.tasks.is_empty());
    }

    /// A free worker with `request` newly reserved for it, if the node has both.
    fn lease_worker(
        &mut self,
        request: &ResourceSet,
        strategy: &SchedulingStrategy,
    ) -> Option<WorkerId> {
        let allocation = self.pool.try_acquire(request, strategy)?;
        let gpu_ids = allocation.gpu_ids();
        let node = allocation.node.clone();
        let executable = self.worker_executable.clone().unwrap_or_default();
        let idle = self.workers.iter().find(|(_, w)| {
            w.actor.is_none()
                && !w.is_driver
                && w.executable == executable
                && w.node == node
                && w.sender.is_some()
                && w.lease.is_none()
                && w.assigned.is_empty()
                && w.gpu_ids == gpu_ids
        });
        match idle {
            Some((&id, _)) => {
                let worker = self.workers.get_mut(&id).expect("worker just found");
                worker.lease = Some(Lease {
                    allocation,
                    lent_out: false,
                });
                Some(id)
            }
            None => {
                self.pool.release(&allocation);
                let starting = self.workers.values().any(|w| {
                    w.actor.is_none()
                        && w.sender.is_none()
                        && w.node == node
                        && w.gpu_ids == gpu_ids
                });
                let task_workers = self
                    .workers
                    .values()
                    .filter(|w| w.actor.is_none() && !w.is_driver && w.node == node)
                    .count();
                if !starting && task_workers < MAX_TASK_WORKERS {
                    let id = WorkerId(crate::worker::next_worker_number());
                    self.add_worker(id, &node, gpu_ids, None);
                }
                None
            }
        }
    }

    fn assign(&mut self, node: &Node, worker: WorkerId, task_id: TaskId) {
        let Some(record) = self.tasks.get_mut(&task_id) else {
            return;
        };
        record.worker = Some(worker);
        let spec = record.spec.clone();
        let kind = record.kind;
        let gpu_ids = self
            .workers
            .get(&worker)
            .map(|w| w.gpu_ids.clone())
            .unwrap_or_default();
        let args: Result<Vec<ObjectBlob>> = spec
            .args
            .iter()
            .map(|a| match a {
                TaskArg::Value(blob) => Ok(blob.clone()),
                TaskArg::Ref(id) => self.value_of(*id),
            })
            .collect();
        let args = match args {
            Ok(args) => args,
            Err(error) => return self.finish_task(task_id, Err(error)),
        };
        let w = self
            .workers
            .get_mut(&worker)
            .expect("assigning to a known worker");
        w.assigned.push_back(task_id);
        let message = NodeToWorker::Execute(Execute {
            task_id,
            invocation: spec.invocation,
            args,
            gpu_ids,
        });
        let sent = w.sender.as_ref().is_some_and(|s| s.send(message).is_ok());
        if !sent {
            self.remove_worker(node, worker, "its connection closed");
        } else if let TaskKind::ActorCall(actor) = kind {
            if let Some(a) = self.actors.get_mut(&actor) {
                a.inflight.push_back(task_id);
            }
        }
    }

    fn task_finished(
        &mut self,
        node: &Node,
        worker: WorkerId,
        task_id: TaskId,
        outcome: Result<ObjectBlob>,
    ) {
        if let Some(w) = self.workers.get_mut(&worker) {
            remove_in_order(&mut w.assigned, task_id);
        }
        let Some(record) = self.tasks.get_mut(&task_id) else {
            return;
        };
        match record.kind {
            TaskKind::Stateless => {
                let retry = record.spec.retry_exceptions
                    && record.retries_left > 0
                    && !record.cancelled
                    && outcome.is_err();
                if retry {
                    record.retries_left -= 1;
                    record.worker = None;
                    self.requeue_front(task_id);
                } else {
                    self.finish_task(task_id, outcome);
                }
                self.end_lease_if_idle(worker);
            }
            TaskKind::ActorCall(actor) => {
                if let Some(a) = self.actors.get_mut(&actor) {
                    remove_in_order(&mut a.inflight, task_id);
                }
                self.finish_task(task_id, outcome);
            }
            TaskKind::ActorCreate(actor) => {
                self.tasks.remove(&task_id);
                match outcome {
                    Ok(_) => {
                        if let Some(a) = self.actors.get_mut(&actor) {
                            a.status = ActorStatus::Alive;
                        }
                    }
                    Err(error) => {
                        let message = format!("its constructor failed: {error}");
                        self.actor_dead(actor, message);
                        self.effects
                            .extend(self.workers.get(&worker).map(|w| w.stop(worker)));
                    }
                }
            }
        }
        let _ = node;
    }

    fn end_lease_if_idle(&mut self, worker: WorkerId) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        if w.assigned.is_empty() {
            if let Some(lease) = w.lease.take() {
                if !lease.lent_out {
                    self.pool.release(&lease.allocation);
                }
            }
        }
    }

    fn requeue_front(&mut self, task_id: TaskId) {
        self.queue_for(task_id).push_front(task_id);
    }

    /// The queue of tasks with the same resources and strategy as `task_id`.
    fn queue_for(&mut self, task_id: TaskId) -> &mut VecDeque<TaskId> {
        let spec = &self.tasks[&task_id].spec;
        let (request, strategy) = (spec.resources.clone(), spec.strategy.clone());
        &mut self
            .queues
            .entry(format!("{}|{:?}", request.shape_key(), strategy))
            .or_insert_with(|| ShapeQueue {
                request,
                strategy,
                tasks: VecDeque::new(),
            })
            .tasks
    }

    /// A worker blocked in `get` lends its resources out (`lend = true`) and
    /// takes them back when the value arrives. Tasks pipelined behind it go back
    /// to the queue: they may be what it waits for.
    fn lend_out(&mut self, worker: WorkerId, lend: bool) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        let Some(lease) = w.lease.as_mut() else {
            return;
        };
        if lease.lent_out == lend {
            return;
        }
        lease.lent_out = lend;
        let allocation = lease.allocation.clone();
        if lend {
            let waiting: Vec<TaskId> = w.assigned.drain(1..).collect();
            self.pool.release(&allocation);
            for task in waiting.into_iter().rev() {
                if let Some(record) = self.tasks.get_mut(&task) {
                    record.worker = None;
                }
                self.requeue_front(task);
            }
            // The worker still runs its task; it just holds nothing meanwhile.
        } else {
            self.pool.force_acquire(&allocation);
        }
    }

    fn remove_worker(&mut self, _node: &Node, worker: WorkerId, message: &str) {
        let Some(record) = self.workers.remove(&worker) else {
            return;
        };
        self.effects.push(record.stop(worker));
        if let Some(lease) = &record.lease {
            if !lease.lent_out {
                self.pool.release(&lease.allocation);
            }
        }
        if self.shutting_down {
            return;
        }
        if let Some(actor) = record.actor {
            return self.actor_process_died(actor, message);
        }
        let mut assigned = record.assigned.into_iter();
        let mut requeue = Vec::new();
        if let Some(running) = assigned.next() {
            if let Some(task) = self.tasks.get_mut(&running) {
                task.worker = None;
                if task.cancelled {
                    let function = task.spec.invocation.display_name();
                    self.finish_task(running, Err(Error::Cancelled { function }));
                } else if task.retries_left > 0 {
                    task.retries_left -= 1;
                    requeue.push(running);
                } else {
                    let function = task.spec.invocation.display_name();
                    self.finish_task(
                        running,
                        Err(Error::WorkerDied {
                            function,
                            message: message.to_string(),
                        }),
                    );
                }
            }
        }
        requeue.extend(assigned);
        for task in requeue.into_iter().rev() {
            if let Some(record) = self.tasks.get_mut(&task) {
                record.worker = None;
            }
            self.requeue_front(task);
        }
    }

    fn cancel(&mut self, id: ObjectId) -> Result<()> {
        let Some(task_id) = self.objects.get(&id).and_then(|e| e.producer) else {
            return Ok(());
        };
        let Some(record) = self.tasks.get_mut(&task_id) else {
            return Ok(());
        };
        let function = record.spec.invocation.display_name();
        match (record.worker, record.kind) {
            (Some(worker), TaskKind::Stateless) => {
                let running =
                    self.workers.get(&worker).and_then(|w| w.assigned.front()) == Some(&task_id);
                if running {
                    record.cancelled = true;
                    self.effects
                        .extend(self.workers.get(&worker).map(|w| w.stop(worker)));
                    return Ok(());
                }
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.assigned.retain(|t| *t != task_id);
                }
            }
            (Some(_), _) => return Ok(()),
            (None, _) => {}
        }
        for queue in self.queues.values_mut() {
            queue.tasks.retain(|t| *t != task_id);
        }
        for actor in self.actors.values_mut() {
            actor.pending.retain(|t| *t != task_id);
        }
        for waiting in self.waiting_on.values_mut() {
            waiting.retain(|t| *t != task_id);
        }
        self.finish_task(task_id, Err(Error::Cancelled { function }));
        Ok(())
    }

    // ----- actors -----

    fn create_actor(&mut self, spec: ActorSpec) -> Result<ActorId> {
        if let Some(name) = &spec.name {
            if let Some(&existing) = self.named_actors.get(name) {
                let alive = self
                    .actors
                    .get(&existing)
                    .is_some_and(|a| !matches!(a.status, ActorStatus::Dead(_)));
                if alive {
                    if spec.get_if_exists {
                        self.release_args(&spec.args);
                        return Ok(existing);
                    }
                    self.release_args(&spec.args);
                    return Err(Error::NameTaken { name: name.clone() });
                }
            }
        }
        if !self.pool.feasible(&spec.resources, &spec.strategy) {
            self.release_args(&spec.args);
            return Err(Error::Infeasible {
                what: format!("actor {}", spec.class),
                requested: spec.resources.to_string(),
                available: self.pool.largest_node(),
            });
        }
        let id = spec.actor_id;
        if let Some(name) = &spec.name {
            self.named_actors.insert(name.clone(), id);
        }
        self.actors.insert(
            id,
            ActorRecord {
                spec,
                status: ActorStatus::WaitingForResources,
                allocation: None,
                worker: None,
                restarts_used: 0,
                pending: VecDeque::new(),
                inflight: VecDeque::new(),
            },
        );
        self.actors_waiting.push_back(id);
        Ok(id)
    }

    fn start_waiting_actors(&mut self, node: &Node) {
        let mut still_waiting = VecDeque::new();
        while let Some(id) = self.actors_waiting.pop_front() {
            let Some(actor) = self.actors.get(&id) else {
                continue;
            };
            if actor.status != ActorStatus::WaitingForResources {
                continue;
            }
            let (request, strategy) = (actor.spec.resources.clone(), actor.spec.strategy.clone());
            match self.pool.try_acquire(&request, &strategy) {
                Some(allocation) => {
                    let worker = WorkerId(crate::worker::next_worker_number());
                    let gpu_ids = allocation.gpu_ids();
                    let node = allocation.node.clone();
                    let actor = self.actors.get_mut(&id).expect("actor seen above");
                    actor.allocation = Some(allocation);
                    actor.status = ActorStatus::Starting;
                    actor.worker = Some(worker);
                    self.add_worker(worker, &node, gpu_ids, Some(id));
                }
                None => still_waiting.push_back(id),
            }
        }
        self.actors_waiting = still_waiting;
        let _ = node;
        let ready: Vec<ActorId> = self
            .actors
            .iter()
            .filter(|(_, a)| a.status == ActorStatus::Alive && !a.pending.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            let Some(worker) = self.actors[&id].worker else {
                continue;
            };
            while let Some(task) = self.actors.get_mut(&id).and_then(|a| a.pending.pop_front()) {
                self.assign(node, worker, task);
            }
        }
    }

    /// The actor's worker said hello: run its constructor there first.
    fn start_actor_on(&mut self, node: &Node, actor: ActorId, worker: WorkerId) {
        let Some(record) = self.actors.get(&actor) else {
            return;
        };
        let task_id = TaskId(node.ids.next());
        let spec = TaskSpec {
            task_id,
            return_id: ObjectId(node.ids.next()),
            invocation: Invocation::ActorCreate {
                class: record.spec.class.clone(),
            },
            args: record.spec.args.clone(),
            actor: Some(actor),
            resources: ResourceSet::default(),
            strategy: SchedulingStrategy::Default,
            max_retries: 0,
            retry_exceptions: false,
        };
        self.tasks.insert(
            task_id,
            TaskRecord {
                spec,
                kind: TaskKind::ActorCreate(actor),
                retries_left: 0,
                missing_deps: 0,
                worker: None,
                cancelled: false,
            },
        );
        self.assign(node, worker, task_id);
    }

    fn actor_process_died(&mut self, actor: ActorId, message: &str) {
        let Some(record) = self.actors.get_mut(&actor) else {
            return;
        };
        if matches!(record.status, ActorStatus::Dead(_)) {
            return;
        }
        if record.restarts_used >= record.spec.max_restarts {
            let message = format!(
                "its process died ({message}) and max_restarts={} is used up",
                record.spec.max_restarts
            );
            return self.actor_dead(actor, message);
        }
        record.restarts_used += 1;
        record.status = ActorStatus::Starting;
        let inflight: Vec<TaskId> = record.inflight.drain(..).collect();
        let mut retried = Vec::new();
        for task in inflight {
            match self.tasks.get_mut(&task) {
                Some(t) if t.retries_left > 0 => {
                    t.retries_left -= 1;
                    retried.push(task);
                }
                Some(t) => {
                    let error = Error::ActorDied {
                        actor: t.spec.invocation.display_name(),
                        message: format!("its process died ({message}) while running this call; the actor is restarting"),
                    };
                    self.finish_task(task, Err(error));
                }
                None => {}
            }
        }
        let record = self.actors.get_mut(&actor).expect("actor seen above");
        for task in retried.into_iter().rev() {
            record.pending.push_front(task);
        }
        let node_alive = record
            .allocation
            .as_ref()
            .is_some_and(|a| self.pool.node(&a.node).is_some());
        if !node_alive {
            // Its node is gone: start over on whichever node has room.
            record.allocation = None;
            record.worker = None;
            record.status = ActorStatus::WaitingForResources;
            self.actors_waiting.push_back(actor);
            return;
        }
        let allocation = record.allocation.as_ref().expect("checked above");
        let (node, gpu_ids) = (allocation.node.clone(), allocation.gpu_ids());
        let worker = WorkerId(crate::worker::next_worker_number());
        record.worker = Some(worker);
        self.add_worker(worker, &node, gpu_ids, Some(actor));
    }

    fn create_placement_group(
        &mut self,
        id: u64,
        bundles: Vec<ResourceSet>,
        strategy: PlacementStrategy,
    ) -> Result<()> {
        let idle: Vec<ResourcePool> = self
            .pool
            .node_pools()
            .iter()
            .map(|(_, p)| ResourcePool::new(p.total().clone()))
            .collect();
        if placement::place(&idle, &bundles, strategy).is_none() {
            let shown: Vec<String> = bundles.iter().map(ResourceSet::to_string).collect();
            return Err(Error::Infeasible {
                what: format!("placement group ({strategy:?})"),
                requested: format!("[{}]", shown.join(", ")),
                available: format!(
                    "{} node(s), largest {}",
                    idle.len(),
                    self.pool.largest_node()
                ),
            });
        }
        self.placement_groups.insert(
            id,
            PlacementGroupRecord {
                bundles,
                strategy,
                allocations: Vec::new(),
            },
        );
        Ok(())
    }

    /// Reserves pending groups in creation order, each all or nothing.
    fn reserve_pending_groups(&mut self) {
        let pending: Vec<u64> = self
            .placement_groups
            .iter()
            .filter(|(_, g)| g.allocations.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in pending {
            let group = &self.placement_groups[&id];
            let pools: Vec<ResourcePool> = self
                .pool
                .node_pools()
                .iter()
                .map(|(_, p)| p.clone())
                .collect();
            let Some(nodes) = placement::place(&pools, &group.bundles, group.strategy) else {
                continue;
            };
            let placement: Vec<(usize, ResourceSet)> = nodes
                .into_iter()
                .zip(group.bundles.iter().cloned())
                .collect();
            let allocations = self.pool.reserve_bundles(id, &placement);
            self.placement_groups
                .get_mut(&id)
                .expect("group seen above")
                .allocations = allocations;
            self.ready_events += 1;
        }
    }

    fn placement_group_ready(&self, id: u64) -> Result<bool> {
        self.placement_groups
            .get(&id)
            .map(|g| !g.allocations.is_empty())
            .ok_or_else(|| Error::Runtime(format!("no placement group {id} (removed?)")))
    }

    fn remove_placement_group(&mut self, id: u64) -> Result<()> {
        let group = self
            .placement_groups
            .remove(&id)
            .ok_or_else(|| Error::Runtime(format!("no placement group {id}")))?;
        let placed: Vec<ActorId> = self
            .actors
            .iter()
            .filter(|(_, a)| {
                matches!(a.spec.strategy, SchedulingStrategy::PlacementGroup { group, .. } if group == id)
                    && !matches!(a.status, ActorStatus::Dead(_))
            })
            .map(|(actor, _)| *actor)
            .collect();
        for actor in placed {
            self.kill_actor(actor)?;
        }
        self.pool.release_bundles(id, &group.allocations);
        self.ready_events += 1;
        Ok(())
    }

    /// A node stopped: its workers are gone (their tasks retried and actors
    /// restarted elsewhere), and objects whose only copy was there are lost.
    fn node_died(&mut self, node: &Node, node_id: &str, reason: &str) {
        let Some(remote) = self.remote_nodes.remove(node_id) else {
            return;
        };
        eprintln!("oxray: node {node_id} is dead: {reason}");
        if let Some(pool) = self.pool.node(node_id) {
            self.dead_nodes.push(NodeStatus {
                node_id: node_id.to_string(),
                address: remote.object_server,
                alive: false,
                is_head: false,
                total: pool.total().clone(),
                available: ResourceSet::default(),
                workers: 0,
            });
        }
        // Groups with a bundle there are placed again, whole, elsewhere.
        let displaced: Vec<u64> = self
            .placement_groups
            .iter()
            .filter(|(_, g)| g.allocations.iter().any(|a| a.node == node_id))
            .map(|(id, _)| *id)
            .collect();
        for id in displaced {
            let group = self.placement_groups.get_mut(&id).expect("group just seen");
            let allocations = std::mem::take(&mut group.allocations);
            self.pool.release_bundles(id, &allocations);
        }
        self.pool.remove_node(node_id);
        let workers: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.node == node_id)
            .map(|(id, _)| *id)
            .collect();
        let message = format!("its node {node_id} died: {reason}");
        for worker in workers {
            self.remove_worker(node, worker, &message);
        }
        let lost: Vec<ObjectId> = self
            .objects
            .iter()
            .filter(|(_, e)| {
                matches!(e.value.as_deref(), Some(Ok(ObjectBlob { payload: Payload::Shared { node, .. }, .. })) if node == node_id)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            if let Some(entry) = self.objects.get_mut(&id) {
                entry.value = Some(Arc::new(Err(Error::ObjectLost {
                    id: id.to_string(),
                    message: message.clone(),
                })));
            }
        }
        self.ready_events += 1;
    }

    fn actor_dead(&mut self, actor: ActorId, message: String) {
        let Some(record) = self.actors.get_mut(&actor) else {
            return;
        };
        let error = Error::ActorDied {
            actor: format!("{} ({actor})", record.spec.class),
            message,
        };
        record.status = ActorStatus::Dead(error.clone());
        let calls: Vec<TaskId> = record
            .inflight
            .drain(..)
            .chain(record.pending.drain(..))
            .collect();
        let allocation = record.allocation.take();
        let name = record.spec.name.clone();
        let args = record.spec.args.clone();
        if let Some(allocation) = allocation {
            self.pool.release(&allocation);
        }
        if let Some(name) = name {
            if self.named_actors.get(&name) == Some(&actor) {
                self.named_actors.remove(&name);
            }
        }
        self.release_args(&args);
        if let Some(record) = self.actors.get_mut(&actor) {
            record.spec.args.clear();
        }
        for call in calls {
            self.finish_task(call, Err(error.clone()));
        }
    }

    fn kill_actor(&mut self, actor: ActorId) -> Result<()> {
        let Some(record) = self.actors.get(&actor) else {
            return Err(Error::ActorNotFound {
                name: actor.to_string(),
            });
        };
        let worker = record.worker;
        self.actor_dead(actor, "killed by oxray_core::kill".into());
        if let Some(worker) = worker {
            if let Some(w) = self.workers.remove(&worker) {
                self.effects.push(w.stop(worker));
            }
        }
        Ok(())
    }
}

/// The head's gRPC service: worker streams, node control streams, status.
struct HeadEndpoint {
    node: Weak<Node>,
}

type ToWorkerStream =
    Pin<Box<dyn Stream<Item = std::result::Result<NodeToWorker, tonic::Status>> + Send>>;
type ToNodeStream =
    Pin<Box<dyn Stream<Item = std::result::Result<HeadToNode, tonic::Status>> + Send>>;

impl HeadEndpoint {
    fn node(&self) -> std::result::Result<Arc<Node>, tonic::Status> {
        self.node
            .upgrade()
            .ok_or_else(|| tonic::Status::unavailable("the head is shutting down"))
    }
}

#[tonic::async_trait]
impl HeadService for HeadEndpoint {
    type WorkerStreamStream = ToWorkerStream;
    type NodeStreamStream = ToNodeStream;

    async fn worker_stream(
        &self,
        request: tonic::Request<tonic::Streaming<WorkerToNode>>,
    ) -> std::result::Result<tonic::Response<ToWorkerStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let first = inbound.message().await?;
        let node = self.node()?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let worker = match first {
            Some(WorkerToNode::Hello { worker_id, pid }) => {
                if !node.register_worker(worker_id, pid, sender) {
                    return Err(tonic::Status::permission_denied(format!(
                        "{worker_id} was not started by this cluster"
                    )));
                }
                worker_id
            }
            Some(WorkerToNode::DriverHello {
                origin,
                pid,
                executable,
            }) => node.register_driver(WorkerId(origin), pid, executable, sender),
            Some(_) => {
                return Err(tonic::Status::invalid_argument(
                    "the first message of a worker stream must be Hello or DriverHello",
                ))
            }
            None => {
                return Err(tonic::Status::invalid_argument(
                    "stream closed before Hello",
                ))
            }
        };
        let weak = self.node.clone();
        tokio::spawn(async move {
            let reason = loop {
                match inbound.message().await {
                    Ok(Some(message)) => match weak.upgrade() {
                        Some(node) => node.handle_worker_message(worker, message),
                        None => return,
                    },
                    Ok(None) => break "its connection closed".to_string(),
                    Err(status) => break format!("its connection failed: {}", status.message()),
                }
            };
            if let Some(node) = weak.upgrade() {
                node.stream_closed(worker, reason);
            }
        });
        Ok(tonic::Response::new(Box::pin(
            UnboundedReceiverStream::new(receiver).map(Ok),
        )))
    }

    async fn node_stream(
        &self,
        request: tonic::Request<tonic::Streaming<NodeToHead>>,
    ) -> std::result::Result<tonic::Response<ToNodeStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let Some(NodeToHead::Register {
            node_id,
            resources,
            object_server,
            version,
        }) = inbound.message().await?
        else {
            return Err(tonic::Status::invalid_argument(
                "the first message of a node stream must be Register",
            ));
        };
        if version != PROTOCOL_VERSION {
            eprintln!("oxray: refused node {node_id}: it runs {version}, this head runs {PROTOCOL_VERSION}");
            return Err(tonic::Status::failed_precondition(format!(
                "version mismatch: the node runs {version}, the head runs {PROTOCOL_VERSION}"
            )));
        }
        let node = self.node()?;
        let (sender, receiver) = mpsc::unbounded_channel();
        node.register_node(&node_id, resources, object_server, sender)?;
        let weak = self.node.clone();
        tokio::spawn(async move {
            let reason = loop {
                match inbound.message().await {
                    Ok(Some(message)) => match weak.upgrade() {
                        Some(head) => head.handle_node_message(&node_id, message),
                        None => return,
                    },
                    Ok(None) => break "its connection closed".to_string(),
                    Err(status) => break format!("its connection failed: {}", status.message()),
                }
            };
            if let Some(head) = weak.upgrade() {
                head.with_state(|state, node| state.node_died(node, &node_id, &reason));
            }
        });
        Ok(tonic::Response::new(Box::pin(
            UnboundedReceiverStream::new(receiver).map(Ok),
        )))
    }

    async fn cluster_status(
        &self,
        _request: tonic::Request<StatusRequest>,
    ) -> std::result::Result<tonic::Response<ClusterStatus>, tonic::Status> {
        Ok(tonic::Response::new(self.node()?.cluster_status()))
    }
}

/// A job-table entry for a driver starting now.
fn job(id: WorkerId, pid: u32, executable: &str) -> JobStatus {
    let started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    JobStatus {
        job_id: id.to_string(),
        driver_pid: pid,
        executable: executable.to_string(),
        started_at,
        running: true,
    }
}

/// Declares nodes dead when their heartbeats stop, even if their connection
/// looks open (a hung machine, a partition).
async fn watch_heartbeats(node: Weak<Node>) {
    let mut tick = tokio::time::interval(HEARTBEAT_PERIOD / 4);
    loop {
        tick.tick().await;
        let Some(head) = node.upgrade() else { return };
        let deadline = head.config.heartbeat_timeout;
        let silent: Vec<String> = head
            .state
            .lock()
            .remote_nodes
            .iter()
            .filter(|(_, n)| n.last_heartbeat.elapsed() > deadline)
            .map(|(id, _)| id.clone())
            .collect();
        for id in silent {
            let reason = format!("no heartbeat for {:.1} s", deadline.as_secs_f64());
            head.with_state(|state, node| state.node_died(node, &id, &reason));
        }
    }
}

/// Removes `task` from a queue where tasks usually finish in order, so the
/// common case is a pop from the front rather than a scan.
fn remove_in_order(queue: &mut VecDeque<TaskId>, task: TaskId) {
    if queue.front() == Some(&task) {
        queue.pop_front();
    } else {
        queue.retain(|t| *t != task);
    }
}

/// The ids of a `get` or `wait` that are not ready yet. Rechecking only these
/// keeps each wake-up cheap when a large batch completes one object at a time.
struct Outstanding {
    ids: Vec<ObjectId>,
}

impl Outstanding {
    fn new(ids: &[ObjectId]) -> Self {
        Outstanding { ids: ids.to_vec() }
    }

    /// Forgets the ids that became ready and says how many are still missing;
    /// an id the node does not know is an error.
    fn missing(&mut self, state: &NodeState) -> Result<usize> {
        let mut lost = None;
        self.ids.retain(|id| match state.objects.get(id) {
            Some(entry) => entry.value.is_none(),
            None => {
                lost = Some(*id);
                false
            }
        });
        match lost {
            Some(id) => Err(Error::ObjectLost {
                id: id.to_string(),
                message: "freed or never created".into(),
            }),
            None => Ok(self.ids.len()),
        }
    }
}

pub(crate) fn kill_process(pid: u32) {
    // SAFETY: plain syscall on a pid this node started.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let exists = unsafe { libc::kill(pid as libc::pid_t, 0) == 0 };
    exists
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

pub(crate) fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}
