//! Messages between a node and its worker processes, and the specs that drivers
//! and workers submit.
//!
//! A worker holds one long-lived bidirectional gRPC stream to its node: tasks,
//! actor calls, results, reference counts and the worker's own API requests all
//! travel on it, so the hot path never pays for a new call. Because the stream
//! is ordered, a worker's one-way messages (submit, put, release) need no reply:
//! anything it sends later is seen after them. The one other stream carries
//! direct actor calls from a caller to the actor's worker.
//!
//! Over 600 lines on purpose: every message of the wire protocol, whose
//! version [`PROTOCOL_VERSION`] names, is in this one file, so a change to
//! the protocol is one diff to review.

use crate::error::Error;
use crate::ids::{ActorId, JobId, ObjectId, TaskId, WorkerId};
use crate::packaging::JobExecutable;
use crate::placement::PlacementStrategy;
use crate::resources::{ResourceSet, SchedulingStrategy};
use serde::{Deserialize, Serialize};

/// An encoded value: its bytes (inline or in shared memory), the Rust type it
/// was made from, and the object ids serialised inside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectBlob {
    pub type_name: String,
    pub contained: Vec<ObjectId>,
    pub payload: Payload,
}

/// Where an encoded value's bytes are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Payload {
    /// Small values travel with the message.
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Large values live in a shared-memory file of the node that made them;
    /// readers on that node map it, readers elsewhere pull it from `server`.
    /// The node reuses freed files under the same path, so `generation` (an id
    /// minted for these bytes alone) is what names them: other nodes key
    /// their pulled copies by it, never by the path.
    Shared {
        path: String,
        len: u64,
        node: String,
        server: String,
        generation: u64,
    },
}

/// What a task is: a remote function, an actor's constructor, or a method.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Invocation {
    Function {
        name: String,
    },
    /// Runs the constructor; with `max_concurrency` above 1 the worker then
    /// runs that many calls at once (Ray's threaded actors).
    ActorCreate {
        class: String,
        max_concurrency: u32,
    },
    ActorMethod {
        class: String,
        method: String,
    },
}

impl Invocation {
    /// The name users see in errors.
    pub fn display_name(&self) -> String {
        match self {
            Invocation::Function { name } => name.clone(),
            Invocation::ActorCreate { class, .. } => format!("{class}::new"),
            Invocation::ActorMethod { class, method } => format!("{class}::{method}"),
        }
    }
}

/// One argument of a submitted task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TaskArg {
    Value(ObjectBlob),
    /// Resolved by the node before the task runs.
    Ref(ObjectId),
}

/// A stateless task or an actor call, as submitted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskSpec {
    pub task_id: TaskId,
    pub return_id: ObjectId,
    pub invocation: Invocation,
    pub args: Vec<TaskArg>,
    /// `Some` for actor calls.
    pub actor: Option<ActorId>,
    pub resources: ResourceSet,
    pub strategy: SchedulingStrategy,
    pub max_retries: u32,
    pub retry_exceptions: bool,
}

/// A request to create an actor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActorSpec {
    pub actor_id: ActorId,
    pub class: String,
    pub args: Vec<TaskArg>,
    pub resources: ResourceSet,
    pub strategy: SchedulingStrategy,
    pub max_restarts: u32,
    pub max_task_retries: u32,
    pub name: Option<String>,
    pub get_if_exists: bool,
    /// Outlives its job (Ray's `lifetime="detached"`); needs a name.
    pub detached: bool,
    /// Calls the actor's worker runs at once (Ray's `max_concurrency`).
    pub max_concurrency: u32,
}

/// What a worker is told to run, with every argument already resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Execute {
    pub task_id: TaskId,
    pub invocation: Invocation,
    pub args: Vec<ObjectBlob>,
    pub gpu_ids: Vec<u32>,
}

/// Requests from a worker's own use of the API that need an answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    CreateActor(ActorSpec),
    Get {
        ids: Vec<ObjectId>,
        timeout_ms: Option<u64>,
    },
    /// Answered with `Reply::Ready` once `num_returns` of `ids` are ready
    /// (or the timeout passed), flagging every one that is ready then, not
    /// only the first `num_returns`: the caller keeps the flags for its
    /// later waits (`runtime::wait` gives back at most `num_returns`).
    Wait {
        ids: Vec<ObjectId>,
        num_returns: usize,
        timeout_ms: Option<u64>,
    },
    NamedActor {
        name: String,
    },
    KillActor(ActorId),
    Cancel(ObjectId),
    KvPut {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// A put of a value in shared memory: answered once the head has had
    /// its node spill what no longer fits, so a process putting one large
    /// object after another never runs ahead of spilling.
    Put {
        id: ObjectId,
        value: Result<ObjectBlob, Error>,
    },
    KvGet {
        key: String,
    },
    KvWait {
        key: String,
        timeout_ms: u64,
    },
    KvDelete {
        key: String,
    },
    CreatePlacementGroup {
        id: u64,
        bundles: Vec<ResourceSet>,
        strategy: PlacementStrategy,
    },
    WaitPlacementGroup {
        id: u64,
        timeout_ms: u64,
    },
    RemovePlacementGroup {
        id: u64,
    },
    /// Where to send calls to `actor` directly: answered once the actor is
    /// alive on a worker other than `not_on` (a worker the caller found
    /// gone), or dead.
    ResolveActor {
        actor: ActorId,
        not_on: Option<WorkerId>,
    },
    /// The values of `ids`, the ref arguments of a call `caller` sent this
    /// actor's worker directly: answered as `Get` once the head has the
    /// call from `caller`, whose stream carried the arguments' objects
    /// ahead of it (or once `caller` is gone).
    DirectCallArgs {
        task_id: TaskId,
        caller: WorkerId,
        ids: Vec<ObjectId>,
    },
}

impl Request {
    /// The method name metrics use.
    pub fn method(&self) -> &'static str {
        match self {
            Request::CreateActor(_) => "CreateActor",
            Request::Get { .. } => "Get",
            Request::Wait { .. } => "Wait",
            Request::NamedActor { .. } => "NamedActor",
            Request::KillActor(_) => "KillActor",
            Request::Cancel(_) => "Cancel",
            Request::KvPut { .. } => "KvPut",
            Request::Put { .. } => "Put",
            Request::KvGet { .. } => "KvGet",
            Request::KvWait { .. } => "KvWait",
            Request::KvDelete { .. } => "KvDelete",
            Request::CreatePlacementGroup { .. } => "CreatePlacementGroup",
            Request::WaitPlacementGroup { .. } => "WaitPlacementGroup",
            Request::RemovePlacementGroup { .. } => "RemovePlacementGroup",
            Request::ResolveActor { .. } => "ResolveActor",
            Request::DirectCallArgs { .. } => "DirectCallArgs",
        }
    }
}

/// Answers to [`Request`]s.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    Actor(ActorId),
    NamedActor(Option<(ActorId, String)>),
    Objects(Vec<Result<ObjectBlob, Error>>),
    Ready(Vec<bool>),
    Value(Option<Vec<u8>>),
    /// `None`: the actor is dead; its calls go through the head, which
    /// fails them.
    ActorRoute(Option<ActorRoute>),
    Done,
}

/// An actor's worker, as a caller reaches it directly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorRoute {
    pub worker: WorkerId,
    /// `host:port` of the worker's actor-call service.
    pub address: String,
}

/// Worker → node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WorkerToNode {
    /// First message on the stream.
    Hello {
        worker_id: WorkerId,
        pid: u32,
        /// `host:port` of its actor-call service (`worker/actor_calls.rs`).
        call_address: Option<String>,
    },
    /// First message of a remote driver's stream: it submits work, runs none,
    /// and its workers run `executable`.
    DriverHello {
        origin: u64,
        pid: u32,
        executable: JobExecutable,
        job: JobId,
        /// Where its named actors live; `None`: a namespace of its own.
        namespace: Option<String>,
        /// Stream its tasks' and actors' output to it.
        log_to_driver: bool,
    },
    Finished {
        task_id: TaskId,
        outcome: Result<ObjectBlob, Error>,
    },
    Submit(TaskSpec),
    Put {
        id: ObjectId,
        value: Result<ObjectBlob, Error>,
    },
    AddRefs(Vec<ObjectId>),
    Release(Vec<ObjectId>),
    /// Lines the worker printed (`err`: on stderr), for its job's driver;
    /// `pid` is only shown, never trusted.
    Log {
        pid: u32,
        err: bool,
        lines: Vec<String>,
    },
    Request {
        request_id: u64,
        request: Request,
    },
    /// Answer to [`NodeToWorker::Withdraw`]: the task was still queued and
    /// will not run here. A task already started is answered by its
    /// `Finished` instead.
    Withdrawn {
        task_id: TaskId,
    },
    /// An actor call this process sends straight to the actor's worker:
    /// sent to `worker`, or (`None`) held here until the head says where
    /// the actor lives. The head records it like a submission (its object,
    /// references, the state API) and, once sent, as running on `worker`
    /// (retried or failed if that worker dies), without carrying it.
    DirectCallSent {
        spec: TaskSpec,
        worker: Option<WorkerId>,
    },
    /// A call held here went to `worker`, or (`None`) is handed to the head
    /// to send as any other call (the actor is dead, or has no direct route).
    DirectCallRouted {
        task_id: TaskId,
        worker: Option<WorkerId>,
    },
    /// Results of calls sent directly, as the actor's `worker` returned them
    /// to this process (a burst in one message): the head completes their
    /// objects.
    DirectCallsFinished {
        worker: WorkerId,
        results: Vec<DirectResult>,
    },
}

impl WorkerToNode {
    /// Whether nothing waits on the head acting on this message: a direct
    /// call's record whose arguments all travel with the call (a ref
    /// argument may be what the actor's worker is asking the head for), a
    /// direct call's result (the caller already has it), a reference
    /// change. Such messages may linger on their way to the head
    /// (`worker/outbound.rs`) and do not keep its loop polling
    /// (`head/service.rs`): a stream of synchronous actor calls sends three
    /// per call (the record, the result, the release of the result's ref).
    pub(crate) fn awaits_nothing(&self) -> bool {
        match self {
            WorkerToNode::DirectCallSent { spec, .. } => {
                spec.args.iter().all(|arg| matches!(arg, TaskArg::Value(_)))
            }
            WorkerToNode::DirectCallsFinished { .. }
            | WorkerToNode::AddRefs(_)
            | WorkerToNode::Release(_) => true,
            _ => false,
        }
    }
}

/// Caller → an actor's worker, on a direct call stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectCall {
    pub task_id: TaskId,
    /// Who sent it (its id on the head), for its ref arguments.
    pub caller: WorkerId,
    pub invocation: Invocation,
    /// Ref arguments are resolved by the actor's worker, in call order.
    pub args: Vec<TaskArg>,
}

/// An actor's worker → a caller: the outcome of one of its direct calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectResult {
    pub task_id: TaskId,
    pub outcome: Result<ObjectBlob, Error>,
}

/// Node → worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeToWorker {
    Execute(Execute),
    /// Output of one of the job's workers, for a driver: `source` is Ray's
    /// `(name pid=N node=ID)` prefix.
    Log {
        source: String,
        err: bool,
        lines: Vec<String>,
    },
    Reply {
        request_id: u64,
        reply: Result<Reply, Error>,
    },
    /// Give back a task sent ahead of the one running, if it has not
    /// started: another worker is free for it, or this one blocked.
    Withdraw {
        task_id: TaskId,
    },
    /// Drop an actor call this worker holds and has not started (sent by
    /// the head or straight by its caller): its result is
    /// `Error::Cancelled`, sent where the call's result would go. A call
    /// already running runs to its end (Ray's cancel of an actor task).
    CancelCall {
        task_id: TaskId,
    },
}

/// Nodes and drivers of one cluster must speak the same protocol.
pub const PROTOCOL_VERSION: &str = concat!("oxray-", env!("CARGO_PKG_VERSION"), "-wire-10");

/// A node daemon → the head, on the node's control stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeToHead {
    /// First message on the stream.
    Register {
        node_id: String,
        resources: ResourceSet,
        object_server: String,
        /// Its object store's capacity in bytes (`--object-store-memory`).
        object_store_memory: u64,
        version: String,
    },
    Heartbeat,
    /// The node could not start a worker it was told to (its job's
    /// executable is unavailable there); the error says why.
    WorkerNotStarted {
        worker: WorkerId,
        error: Error,
    },
    /// The node started a worker it was told to, as process `pid` (what
    /// `oxray list actors|workers` show for it).
    WorkerStarted {
        worker: WorkerId,
        pid: u32,
    },
    WorkerExited {
        worker: WorkerId,
        message: String,
    },
    /// The node did what a `Spill` told it (moved the value of `generation`
    /// to disk, or found it gone): its shared memory is free again.
    Spilled {
        generation: u64,
    },
    /// The node is stopping because it was told to (`oxray stop`, SIGTERM,
    /// Ctrl-C): the head ends its stream and treats it as gone, without
    /// reporting a failure.
    Leaving,
}

/// The head → a node daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HeadToNode {
    Spawn {
        worker: WorkerId,
        gpu_ids: Vec<u32>,
        executable: JobExecutable,
    },
    Kill {
        worker: WorkerId,
    },
    /// The node's store is over its capacity: move this object (the value of
    /// `generation`, `len` bytes) from `path` to the spill directory.
    Spill {
        path: String,
        generation: u64,
        len: u64,
    },
    /// The head freed a shared-memory value: the node holding it removes (or
    /// recycles) `path` and its spill file, every other node drops its
    /// pulled copy, if any.
    Free {
        path: String,
        server: String,
        generation: u64,
    },
}

/// Asks a node's object server for one of its shared-memory objects.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullRequest {
    pub path: String,
    /// The generation the reader expects; the server refuses a file that
    /// holds another one (it was freed and reused).
    pub generation: u64,
    /// Bytes of the value (a reused file may be longer).
    pub len: u64,
}

/// A piece of a pulled object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chunk {
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Asks the head whether it can serve a job's executable to nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutableQuery {
    pub executable: JobExecutable,
}

/// Whether the head holds the executable, and the most bytes it accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutableAnswer {
    pub present: bool,
    pub limit: u64,
}

/// A driver's upload of its executable: what it is, then its bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ExecutableUpload {
    Header(JobExecutable),
    Chunk(Chunk),
}

/// A node asks the head for a copy of the executable with this digest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutableRequest {
    pub digest: String,
}

/// Asks the head for the cluster's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusRequest {}

/// What `oxray status` and `oxray list` show.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub nodes: Vec<NodeStatus>,
    pub jobs: Vec<JobStatus>,
    pub actors: Vec<ActorStatusLine>,
    pub placement_groups: Vec<PlacementGroupLine>,
    pub pending_tasks: usize,
    pub running_tasks: usize,
    pub objects: usize,
    /// The latest state of recent tasks (the head's bounded task-event ring).
    pub tasks: Vec<TaskRow>,
    /// The first [`MAX_OBJECT_ROWS`] objects of the object directory.
    pub object_rows: Vec<ObjectRow>,
    /// Worker processes and connected drivers.
    pub workers: Vec<WorkerRow>,
    /// What waits for resources, by request (`ray status`'s Demands).
    pub demands: Vec<ResourceDemand>,
}

/// Actors and ready tasks that wait for the same resources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceDemand {
    pub request: ResourceSet,
    pub pending: usize,
}

/// Most object rows one status carries; `objects` stays the exact count.
pub const MAX_OBJECT_ROWS: usize = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: String,
    pub address: String,
    pub alive: bool,
    pub is_head: bool,
    pub total: ResourceSet,
    pub available: ResourceSet,
    pub workers: usize,
    /// Bytes of shared-memory objects stored on the node (not spilled).
    pub object_store_bytes: u64,
    /// The node's object store capacity (`--object-store-memory`).
    pub object_store_capacity_bytes: u64,
    /// Bytes of its objects spilled to disk now.
    pub spilled_bytes: u64,
    /// Bytes and objects it spilled since it joined.
    pub spilled_bytes_total: u64,
    pub spilled_objects_total: u64,
}

/// A driver of the cluster: the embedded one, or one joined by address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub job_id: String,
    pub driver_pid: u32,
    pub executable: String,
    /// Seconds since the Unix epoch.
    pub started_at: u64,
    pub running: bool,
    /// Seconds since the Unix epoch when the driver left.
    pub ended_at: Option<u64>,
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementGroupLine {
    pub id: u64,
    pub strategy: PlacementStrategy,
    /// "PENDING" or "CREATED".
    pub state: String,
    /// Each bundle and, once reserved, its node.
    pub bundles: Vec<(ResourceSet, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorStatusLine {
    pub actor_id: ActorId,
    pub class: String,
    pub name: Option<String>,
    pub state: String,
    pub job_id: String,
    pub node_id: Option<String>,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub detached: bool,
}

/// A task's state, with Ray's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    /// Waiting for its object arguments.
    PendingArgsAvail,
    /// Queued for resources and a worker.
    PendingNodeAssignment,
    /// Sent to a worker that is still running an earlier task (a task sent
    /// ahead, or an actor's next call).
    SubmittedToWorker,
    Running,
    Finished,
    Failed,
}

impl TaskState {
    pub const ALL: [TaskState; 6] = [
        TaskState::PendingArgsAvail,
        TaskState::PendingNodeAssignment,
        TaskState::SubmittedToWorker,
        TaskState::Running,
        TaskState::Finished,
        TaskState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::PendingArgsAvail => "PENDING_ARGS_AVAIL",
            TaskState::PendingNodeAssignment => "PENDING_NODE_ASSIGNMENT",
            TaskState::SubmittedToWorker => "SUBMITTED_TO_WORKER",
            TaskState::Running => "RUNNING",
            TaskState::Finished => "FINISHED",
            TaskState::Failed => "FAILED",
        }
    }
}

/// What kind of task, with Ray's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskType {
    NormalTask,
    ActorTask,
}

impl TaskType {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::NormalTask => "NORMAL_TASK",
            TaskType::ActorTask => "ACTOR_TASK",
        }
    }
}

/// One task as `oxray list tasks` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRow {
    pub task_id: TaskId,
    /// The function, or `Class::method`.
    pub name: String,
    pub task_type: TaskType,
    pub state: TaskState,
    pub actor_id: Option<ActorId>,
    pub node_id: Option<String>,
    pub worker_id: Option<WorkerId>,
    pub worker_pid: Option<u32>,
    pub required_resources: ResourceSet,
    /// How many times it was started (retries count).
    pub attempts: u32,
    /// Milliseconds since the Unix epoch.
    pub submitted_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// One object as `oxray list objects` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectRow {
    pub object_id: ObjectId,
    /// "PENDING" (its task has not finished), "READY" or "FAILED".
    pub state: String,
    /// The encoded value's bytes (0 while pending).
    pub size_bytes: u64,
    /// Where the bytes are: the node's shared memory, or inline in the head.
    pub in_shared_memory: bool,
    /// The node whose shared memory holds it.
    pub node_id: Option<String>,
    pub reference_count: u64,
    /// The Rust type of the value.
    pub type_name: Option<String>,
    /// The task that will produce it, while pending.
    pub producer_task: Option<TaskId>,
}

/// One worker process (or connected driver) as `oxray list workers` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRow {
    pub worker_id: WorkerId,
    pub node_id: String,
    pub pid: Option<u32>,
    /// "DRIVER" or "WORKER".
    pub worker_type: String,
    pub actor_id: Option<ActorId>,
    /// Tasks sent to it and not finished.
    pub running_tasks: usize,
    pub executable: String,
}
