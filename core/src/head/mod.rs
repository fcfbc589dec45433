//! The head: object directory, scheduler, worker pool, actor and placement-group
//! managers and cluster membership, with the gRPC service that workers, node
//! daemons and drivers connect to. The embedded cluster is this same head
//! running inside the driver; `oxray start --head` runs it as a daemon.
//!
//! All bookkeeping lives in one [`NodeState`] behind a mutex. Every event (a
//! submission, a finished task, a worker starting or dying, a reference
//! released) takes the lock, updates the state and runs [`NodeState::schedule`],
//! which hands queued work to workers. Keeping the scheduler a plain state
//! machine makes each transition easy to follow and keeps the hot path free of
//! extra hops: the driver of the embedded cluster calls it directly.
//!
//! `NodeState` is a pure state machine: it never sees the [`Node`] (its
//! runtime, config or sockets). It mints the ids it needs itself (worker
//! numbers, the ids of actor constructors' tasks) and holds only the channel
//! ends it writes messages into (workers' and nodes' streams, which never
//! block). Work that needs I/O (spawning and killing processes, spilling and
//! removing files) is collected as [`Effect`]s under the lock and done by
//! [`Node`] after it is released. So each transition is driven and checked
//! by unit tests at the bottom of its concept's file, without a process or a
//! socket (`test_support.rs` builds the state for them).
//!
//! The state is one struct, but its transitions are split by concept, one file
//! each, named as Ray names the component that does the same job:
//!
//! | file | concept (Ray's counterpart) |
//! |---|---|
//! | `mod.rs` | [`Node`], [`NodeState`], the lock and the effects, applied by `Node` |
//! | `config.rs` | a node's resources and identity, detected from the machine |
//! | `service.rs` | the gRPC service and the worker's API requests (GCS/raylet RPC handlers) |
//! | `embedded.rs` | the embedded driver's in-process backend (core worker of the driver) |
//! | `object_directory.rs` | object values, reference counts, waiters (object directory, reference counter) |
//! | `actor_handles.rs` | counting each actor's handles in every process; ending it with the last (actor reference counting) |
//! | `object_store.rs` | each node's store capacity and which objects it spills (plasma store limit, local object manager) |
//! | `tasks.rs` | task lifecycle: submission, dependencies, completion, retries, cancel (task manager, dependency manager) |
//! | `scheduler.rs` | shape queues, worker leases, dispatch (cluster task manager, lease manager) |
//! | `pipelining.rs` | a task sent ahead to a leased worker, and withdrawn when a worker frees (max tasks in flight per worker) |
//! | `worker_pool.rs` | starting, registering and removing worker processes (worker pool) |
//! | `jobs.rs` | the job table of drivers (GCS job manager) |
//! | `executables.rs` | which executable each worker runs, copies served to nodes, nodes that cannot get one (runtime-env agent) |
//! | `actors.rs` | actor creation, restarts, death, names (GCS actor manager) |
//! | `placement_groups.rs` | bundle reservation and removal (GCS placement group manager) |
//! | `membership.rs` | nodes joining, heartbeats, node death (GCS node manager, health checks) |
//! | `resource_warnings.rs` | what waits for resources: `oxray status`'s demands, and telling a driver its actors, placement groups or tasks wait long (the autoscaler's warnings) |
//! | `status.rs` | `oxray status`, the state API's rows and the node summary |
//! | `task_events.rs` | the bounded ring of recent tasks' states (GCS task event table) |
//!
//! Scheduling: tasks of one resource shape share a FIFO queue, so a task that
//! waits for a GPU never holds up CPU tasks behind it. A task *leases* a free
//! worker together with its resources and holds both until it finishes. When
//! resources run short, the next task of the same shape may go ahead to a
//! leased worker, which starts it as soon as it sends its result; it is
//! withdrawn (unless it has started) as soon as a worker is free for it, so a
//! short task does not wait behind a long one while another worker idles. A
//! worker that blocks in `get` gives its resources back until the value
//! arrives (and its task ahead), so nested tasks cannot deadlock.

mod actor_handles;
mod actors;
mod bounds;
mod config;
mod dead_actors;
mod direct_calls;
mod embedded;
mod executables;
#[cfg(test)]
mod index_invariants;
mod jobs;
mod membership;
mod object_directory;
mod object_store;
mod object_waiters;
mod pipelining;
mod placement_groups;
mod resource_warnings;
mod scheduler;
mod service;
mod status;
mod task_events;
mod tasks;
#[cfg(test)]
mod test_support;
mod worker_pool;

pub(crate) use config::NodeConfig;
pub use config::DEFAULT_DEAD_ACTORS_KEPT;
pub(crate) use membership::HEARTBEAT_PERIOD;

use crate::auth::RequireToken;
use crate::error::{Error, Result};
use crate::ids::{ActorId, IdMinter, JobId, ObjectId, TaskId, WorkerId};
use crate::packaging::ExecutableCache;
use crate::protocol::*;
use crate::resources::{ClusterResources, ResourceSet, CPU, GPU};
use crate::shm;
use crate::warm_loop::WarmLoop;
use crate::wire::MAX_MESSAGE_BYTES;
use crate::worker::{kill_process, process_alive};
use actors::ActorRecord;
use dead_actors::DeadActors;
use executables::{Code, Executables};
use generated::head_server::HeadServer;
use jobs::DriverJob;
use membership::{watch_heartbeats, RemoteNode};
use object_directory::ObjectEntry;
use object_store::NodeObjectStore;
use parking_lot::{Condvar, Mutex};
use placement_groups::PlacementGroupRecord;
use rustc_hash::FxHashMap;
use scheduler::ShapeQueue;
use service::HeadEndpoint;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tasks::TaskRecord;
use tokio::sync::watch;
use worker_pool::{TaskWorkerIndex, WorkerRecord, MAX_TASK_WORKERS};

pub(crate) mod generated {
    include!(concat!(env!("OUT_DIR"), "/oxray.Head.rs"));
    include!(concat!(env!("OUT_DIR"), "/oxray.ObjectStore.rs"));
    include!(concat!(env!("OUT_DIR"), "/oxray.ActorCalls.rs"));
}

struct NodeState {
    objects: FxHashMap<ObjectId, ObjectEntry>,
    tasks: FxHashMap<TaskId, TaskRecord>,
    waiting_on: FxHashMap<ObjectId, Vec<TaskId>>,
    queues: HashMap<String, ShapeQueue>,
    workers: FxHashMap<WorkerId, WorkerRecord>,
    /// The task workers among `workers`, by what they can run.
    task_workers: TaskWorkerIndex,
    /// Leased workers that may take a task ahead or hold one.
    pipeline: pipelining::PipelineIndex,
    actors: FxHashMap<ActorId, ActorRecord>,
    /// Live named actors by (namespace, name).
    named_actors: HashMap<(String, String), ActorId>,
    actors_waiting: VecDeque<ActorId>,
    resource_warnings: resource_warnings::ResourceWarnings,
    /// Actors that may have calls to send since the last `schedule`.
    actors_with_calls: Vec<ActorId>,
    /// Dead actors still remembered for the state API and their callers.
    dead_actors: DeadActors,
    pool: ClusterResources,
    /// Control streams of the other nodes, by node id.
    remote_nodes: HashMap<String, RemoteNode>,
    /// Each live node's object store (capacity, what is spilled), by node id.
    object_stores: HashMap<String, NodeObjectStore>,
    /// Nodes declared dead, kept for `oxray status`, oldest first, at most
    /// `membership::DEAD_NODES_KEPT`.
    dead_nodes: VecDeque<NodeStatus>,
    /// Every driver that has used the cluster (the job table).
    jobs: FxHashMap<JobId, JobStatus>,
    /// The connected remote drivers, and what each job holds.
    drivers: FxHashMap<WorkerId, DriverJob>,
    /// Actor calls each caller sends directly and that have not finished:
    /// they end with it (`direct_calls.rs`).
    direct_calls: FxHashMap<WorkerId, rustc_hash::FxHashSet<TaskId>>,
    /// Why a job's executable cannot run on a node: (node, job) -> error; job
    /// `None` is the embedded driver's image.
    unavailable: HashMap<(String, Option<JobId>), Error>,
    kv: HashMap<String, Vec<u8>>,
    placement_groups: std::collections::BTreeMap<u64, PlacementGroupRecord>,
    shutting_down: bool,
    /// Counts changes other than objects becoming ready (a placement group
    /// reserved, a KV key set, a spill done), so their waiters look again.
    ready_events: u64,
    /// The `get`s and `wait`s blocked on each object.
    object_waiters: object_waiters::ObjectWaiters,
    /// Work for the async side: workers to spawn, processes to kill, files to
    /// remove. Collected under the lock, done after it is released.
    effects: Vec<Effect>,
    /// Recent tasks' states, for the state API.
    task_events: task_events::TaskEvents,
    /// Mints the ids of the tasks the head makes itself (actor constructors).
    ids: Arc<IdMinter>,
    /// The number of the last worker started; a worker's number is also the
    /// origin of the ids it mints.
    last_worker: u64,
}

impl NodeState {
    /// The state of a head on node `node_id` offering `resources`, before any
    /// other node joins or any work arrives.
    fn new(
        node_id: &str,
        resources: ResourceSet,
        object_store_memory: u64,
        ids: Arc<IdMinter>,
        task_events: task_events::TaskEvents,
        retention: Retention,
    ) -> Self {
        let mut pool = ClusterResources::default();
        pool.add_node(node_id, resources);
        NodeState {
            objects: FxHashMap::default(),
            tasks: FxHashMap::default(),
            waiting_on: FxHashMap::default(),
            queues: HashMap::new(),
            workers: FxHashMap::default(),
            task_workers: TaskWorkerIndex::default(),
            pipeline: Default::default(),
            actors: FxHashMap::default(),
            named_actors: HashMap::new(),
            actors_waiting: VecDeque::new(),
            resource_warnings: Default::default(),
            actors_with_calls: Vec::new(),
            dead_actors: DeadActors::new(retention.dead_actors),
            pool,
            remote_nodes: HashMap::new(),
            object_stores: HashMap::from([(
                node_id.to_string(),
                NodeObjectStore::new(object_store_memory),
            )]),
            dead_nodes: VecDeque::new(),
            jobs: FxHashMap::default(),
            drivers: FxHashMap::default(),
            direct_calls: FxHashMap::default(),
            unavailable: HashMap::new(),
            kv: HashMap::new(),
            placement_groups: Default::default(),
            shutting_down: false,
            ready_events: 0,
            object_waiters: Default::default(),
            effects: Vec::new(),
            task_events,
            ids,
            last_worker: 0,
        }
    }

    /// A fresh worker id (worker numbers start at 1; 0 is the id origin of
    /// the head and the embedded driver).
    fn next_worker_id(&mut self) -> WorkerId {
        self.last_worker += 1;
        WorkerId(self.last_worker)
    }
}

/// How much of the past the head keeps for the state API.
#[derive(Debug, Clone, Copy)]
struct Retention {
    dead_actors: usize,
}

enum Effect {
    Spawn {
        worker: WorkerId,
        node: String,
        gpu_ids: Vec<u32>,
        code: Code,
    },
    Stop {
        worker: WorkerId,
        node: String,
        pid: Option<u32>,
    },
    /// A node's store is over its capacity: it moves this object to disk.
    Spill {
        node: String,
        path: String,
        generation: u64,
        len: u64,
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
    /// The embedded driver's ids; shared with the state, which mints the
    /// ids of actor constructors' tasks from the same sequence.
    ids: Arc<IdMinter>,
    /// The job of the driver this node runs in (a head daemon runs none and
    /// uses [`JobId`] 0 for what it starts itself).
    embedded_job: JobId,
    config: NodeConfig,
    address: SocketAddr,
    object_server_address: String,
    has_gpus: bool,
    executables: Executables,
    runtime: crate::owned_runtime::OwnedRuntime,
    /// Keeps the runtime polling while workers' and the driver's messages
    /// flow.
    warm: Arc<WarmLoop>,
}

impl Node {
    pub fn start(config: NodeConfig) -> Result<Arc<Node>> {
        crate::spill::configure(config.store_settings());
        // One worker thread, so that it is the one polling the sockets while
        // the loop is warm (`warm_loop.rs`); the state behind one lock
        // serialises most of the head's work anyway. Blocking reads
        // (object transfers) go to tokio's blocking pool.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
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
        let server = crate::tls::grpc_server()?;
        let (ready_epoch, _) = watch::channel(0);
        let embedded_job = if config.prestart_workers {
            JobId::random()?
        } else {
            JobId(0)
        };
        let ids = Arc::new(IdMinter::new(0));
        let node = Arc::new_cyclic(|this| Node {
            this: this.clone(),
            state: Mutex::new(NodeState::new(
                &config.node_id,
                config.resources.clone(),
                config.object_store_memory,
                ids.clone(),
                task_events::TaskEvents::from_env(),
                Retention {
                    dead_actors: config.dead_actors_kept,
                },
            )),
            objects_changed: Condvar::new(),
            ready_epoch,
            ids,
            embedded_job,
            has_gpus: config.resources.get(GPU) > 0.0,
            executables: Executables::new(ExecutableCache::new(
                &config.node_id,
                config.executable_cache_bytes,
            )),
            config,
            object_server_address: address.to_string(),
            address,
            warm: WarmLoop::start(runtime.handle()),
            runtime: crate::owned_runtime::OwnedRuntime::new(runtime),
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
            let served = server
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
        node.runtime.spawn(Node::warn_of_waiting_work(node.weak()));
        node.serve_embedded_working_dir()?;
        // A warm pool: one worker per CPU, as Ray prestarts them.
        if node.config.prestart_workers {
            let executable = std::env::current_exe()
                .map_or_else(|_| "?".into(), |p| p.to_string_lossy().into_owned());
            let mut state = node.state.lock();
            // The embedded driver is the cluster's first job.
            let namespace = node.config.namespace.clone();
            state.start_job(embedded_job, std::process::id(), &executable, namespace);
            let warm = node.config.resources.get(CPU).ceil() as usize;
            for _ in 0..warm.min(MAX_TASK_WORKERS) {
                let id = state.next_worker_id();
                state.add_worker(id, &node.config.node_id, Vec::new(), None, None, None);
            }
        }
        node.apply_effects();
        Ok(node)
    }

    /// Takes the lock, runs `f`, schedules, and performs the side effects.
    fn with_state<R>(&self, f: impl FnOnce(&mut NodeState) -> R) -> R {
        let (result, changed) = {
            let mut state = self.state.lock();
            let before = state.ready_events;
            let result = f(&mut state);
            state.schedule();
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
                    code,
                } => match (node == self.config.node_id, code) {
                    (true, None) => self.spawn_embedded_worker(worker, gpu_ids),
                    (true, Some(code)) => self.spawn_job_worker(worker, gpu_ids, &code.executable),
                    (false, code) => self.spawn_remote_worker(&node, worker, gpu_ids, code),
                },
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
                Effect::Spill {
                    node,
                    path,
                    generation,
                    len,
                } => {
                    if node != self.config.node_id {
                        if let Some(remote) = self.state.lock().remote_nodes.get(&node) {
                            let _ = remote.sender.send(HeadToNode::Spill {
                                path,
                                generation,
                                len,
                            });
                        }
                    } else {
                        if shm::belongs_to_session(&path, &self.config.session) {
                            if let Err(e) = crate::spill::spill(&path, generation, len) {
                                tracing::error!("cannot spill {path}: {e}");
                            }
                        }
                        self.with_state(|state| state.store_spilled(&node, generation));
                    }
                }
                Effect::Free {
                    path,
                    server,
                    generation,
                } => {
                    // Only this session's own files: the path came from a
                    // client's blob and could name any file.
                    if let Some(path) =
                        path.filter(|p| shm::belongs_to_session(p, &self.config.session))
                    {
                        shm::free(&self.config.session, &path);
                    }
                    shm::remove_pulled(&self.config.session, &server, generation);
                }
            }
        }
    }

    fn weak(&self) -> Weak<Node> {
        self.this.clone()
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn token(&self) -> &str {
        &self.config.token
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
        self.executables.cache.remove_all();
    }
}
