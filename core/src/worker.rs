//! Worker processes.
//!
//! A worker is the driver's own executable, started again with a few
//! environment variables set. A function placed in `.init_array` runs before
//! `main` in every process of that executable; in a worker it connects to the
//! node, serves tasks until the node closes the stream, and exits — so `main`
//! (or the test harness) never runs there. That is what lets a user's binary,
//! an example or a test binary serve its own remote functions with no extra
//! entry point.
//!
//! Inside a worker, one thread runs tasks in order while the async side keeps
//! the stream moving. The task thread's own API calls (`get`, nested `remote`,
//! `put`) go through [`WorkerClient`], which sends them on the same stream.

use crate::error::{Error, Result};
use crate::ids::{ActorId, IdMinter, ObjectId, WorkerId};
use crate::node::generated::node_client::NodeClient;
use crate::protocol::*;
use crate::registry::{self, ActorState};
use crate::runtime::{self, Backend};
use crate::wire::MAX_MESSAGE_BYTES;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

pub(crate) const NODE_ADDRESS_ENV: &str = "OXRAY_WORKER_NODE_ADDRESS";
pub(crate) const WORKER_ID_ENV: &str = "OXRAY_WORKER_ID";
pub(crate) const SESSION_ENV: &str = "OXRAY_SESSION";
pub(crate) const NODE_ID_ENV: &str = "OXRAY_NODE_ID";

static WORKER_NUMBERS: AtomicU64 = AtomicU64::new(1);

/// Numbers worker processes; also the origin of the ids they mint.
pub(crate) fn next_worker_number() -> u64 {
    WORKER_NUMBERS.fetch_add(1, Ordering::Relaxed)
}

#[used]
#[link_section = ".init_array"]
static WORKER_ENTRY: extern "C" fn() = enter_worker_mode_if_asked;

/// Referenced from `init` so the linker keeps the object file holding
/// [`WORKER_ENTRY`] in every executable that uses oxray.
pub(crate) fn keep_worker_entry_linked() {
    std::hint::black_box(&WORKER_ENTRY);
}

extern "C" fn enter_worker_mode_if_asked() {
    let Ok(address) = std::env::var(NODE_ADDRESS_ENV) else {
        return;
    };
    let code = match run_worker(&address) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("oxray worker: {error}");
            1
        }
    };
    std::process::exit(code);
}

fn run_worker(address: &str) -> Result<()> {
    let worker_id: u64 = std::env::var(WORKER_ID_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Runtime(format!("{WORKER_ID_ENV} is missing or not a number")))?;
    let session = std::env::var(SESSION_ENV).unwrap_or_default();
    let node_id = std::env::var(NODE_ID_ENV).unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("oxray-worker-io")
        .enable_all()
        .build()
        .map_err(|e| Error::runtime("cannot start the worker runtime", e))?;
    let (outbound, outbound_rx) = mpsc::unbounded_channel::<WorkerToNode>();
    let _ = outbound.send(WorkerToNode::Hello {
        worker_id: WorkerId(worker_id),
        pid: std::process::id(),
    });
    let endpoint = format!("http://{address}");
    let mut inbound = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(endpoint)
            .map_err(|e| Error::runtime("bad node address", e))?
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(16 << 20))
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| Error::runtime(&format!("cannot connect to node at {address}"), e))?;
        let mut client = NodeClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        client
            .worker_stream(UnboundedReceiverStream::new(outbound_rx))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| {
                Error::Runtime(format!("node refused the worker: {}", status.message()))
            })
    })?;

    let client = Arc::new(WorkerClient {
        outbound,
        session,
        node_id,
        ids: IdMinter::new(worker_id),
        pending: Mutex::new(HashMap::new()),
        next_request: AtomicU64::new(1),
    });
    runtime::install(client.clone());

    let (tasks, task_queue) = std::sync::mpsc::channel::<Execute>();
    let executor = {
        let client = client.clone();
        std::thread::Builder::new()
            .name("oxray-task".into())
            .spawn(move || execute_tasks(&client, task_queue))
            .map_err(|e| Error::runtime("cannot start the task thread", e))?
    };
    runtime.block_on(async {
        loop {
            match inbound.message().await {
                Ok(Some(NodeToWorker::Execute(task))) => {
                    if tasks.send(task).is_err() {
                        break;
                    }
                }
                Ok(Some(NodeToWorker::Reply { request_id, reply })) => {
                    if let Some(waiter) = client.pending.lock().remove(&request_id) {
                        let _ = waiter.send(reply);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
    });
    // The node closed the stream: shutdown, or the node is gone.
    drop(tasks);
    drop(executor);
    Ok(())
}

fn execute_tasks(client: &WorkerClient, queue: std::sync::mpsc::Receiver<Execute>) {
    let mut actor: Option<ActorState> = None;
    for task in queue {
        let function = task.invocation.display_name();
        set_gpu_ids(task.gpu_ids.clone());
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_task(&mut actor, &task)))
                .unwrap_or_else(|panic| {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panicked".to_string());
                    Err(Error::TaskFailed {
                        function: function.clone(),
                        message: format!("panicked: {message}"),
                    })
                });
        client.send(WorkerToNode::Finished {
            task_id: task.task_id,
            outcome,
        });
    }
}

fn run_task(actor: &mut Option<ActorState>, task: &Execute) -> Result<ObjectBlob> {
    match &task.invocation {
        Invocation::Function { name } => (registry::function(name)?.invoke)(&task.args),
        Invocation::ActorCreate { class } => {
            let state = (registry::actor_type(class)?.construct)(&task.args)?;
            *actor = Some(state);
            crate::value::encode_current(&())
        }
        Invocation::ActorMethod { class, method } => {
            let entry = registry::actor_type(class)?;
            let state = actor.as_mut().ok_or_else(|| {
                Error::Runtime(format!(
                    "{class}::{method} called before the actor was constructed"
                ))
            })?;
            (entry.call)(state, method, &task.args)
        }
    }
}

thread_local! {
    static GPU_IDS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn set_gpu_ids(ids: Vec<u32>) {
    GPU_IDS.with(|g| *g.borrow_mut() = ids);
}

/// GPU ids granted to the running task or actor (Ray's `ray.get_gpu_ids()`);
/// empty in the driver.
pub fn get_gpu_ids() -> Vec<u32> {
    GPU_IDS.with(|g| g.borrow().clone())
}

/// The backend of a worker process: API calls become messages on the stream.
struct WorkerClient {
    outbound: mpsc::UnboundedSender<WorkerToNode>,
    session: String,
    node_id: String,
    ids: IdMinter,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Reply>>>>,
    next_request: AtomicU64,
}

impl WorkerClient {
    fn send(&self, message: WorkerToNode) {
        // If the node is gone the worker is about to exit anyway.
        let _ = self.outbound.send(message);
    }

    fn request(&self, request: Request) -> Result<Reply> {
        let request_id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (waiter, answer) = oneshot::channel();
        self.pending.lock().insert(request_id, waiter);
        self.send(WorkerToNode::Request {
            request_id,
            request,
        });
        answer
            .blocking_recv()
            .map_err(|_| Error::Runtime("the node closed the connection".into()))?
    }
}

fn unexpected(reply: Reply) -> Error {
    Error::Runtime(format!("unexpected reply from the node: {reply:?}"))
}

impl Backend for WorkerClient {
    fn session(&self) -> &str {
        &self.session
    }

    fn hosts_node(&self) -> bool {
        false
    }

    fn next_id(&self) -> u64 {
        self.ids.next()
    }

    fn submit(&self, spec: TaskSpec) {
        self.send(WorkerToNode::Submit(spec));
    }

    fn create_actor(&self, spec: ActorSpec) -> Result<ActorId> {
        match self.request(Request::CreateActor(spec))? {
            Reply::Actor(id) => Ok(id),
            other => Err(unexpected(other)),
        }
    }

    fn put(&self, id: ObjectId, value: Result<ObjectBlob>) {
        self.send(WorkerToNode::Put { id, value });
    }

    fn get(&self, ids: &[ObjectId], timeout: Option<Duration>) -> Result<Vec<Result<ObjectBlob>>> {
        let timeout_ms = timeout.map(|t| t.as_millis() as u64);
        match self.request(Request::Get {
            ids: ids.to_vec(),
            timeout_ms,
        })? {
            Reply::Objects(values) => Ok(values),
            other => Err(unexpected(other)),
        }
    }

    fn wait(
        &self,
        ids: &[ObjectId],
        num_returns: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<bool>> {
        let timeout_ms = timeout.map(|t| t.as_millis() as u64);
        match self.request(Request::Wait {
            ids: ids.to_vec(),
            num_returns,
            timeout_ms,
        })? {
            Reply::Ready(flags) => Ok(flags),
            other => Err(unexpected(other)),
        }
    }

    fn add_refs(&self, ids: &[ObjectId]) {
        self.send(WorkerToNode::AddRefs(ids.to_vec()));
    }

    fn release(&self, ids: &[ObjectId]) {
        self.send(WorkerToNode::Release(ids.to_vec()));
    }

    fn cancel(&self, id: ObjectId) -> Result<()> {
        self.request(Request::Cancel(id)).map(|_| ())
    }

    fn kill_actor(&self, id: ActorId) -> Result<()> {
        self.request(Request::KillActor(id)).map(|_| ())
    }

    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn kv_put(&self, key: &str, value: Vec<u8>) -> Result<()> {
        let key = key.to_string();
        self.request(Request::KvPut { key, value }).map(|_| ())
    }

    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.request(Request::KvGet {
            key: key.to_string(),
        })? {
            Reply::Value(value) => Ok(value),
            other => Err(unexpected(other)),
        }
    }

    fn kv_wait(&self, key: &str, timeout: Duration) -> Result<Vec<u8>> {
        let timeout_ms = timeout.as_millis() as u64;
        match self.request(Request::KvWait {
            key: key.to_string(),
            timeout_ms,
        })? {
            Reply::Value(Some(value)) => Ok(value),
            other => Err(unexpected(other)),
        }
    }

    fn kv_delete(&self, key: &str) -> Result<()> {
        self.request(Request::KvDelete {
            key: key.to_string(),
        })
        .map(|_| ())
    }

    fn named_actor(&self, name: &str) -> Result<Option<(ActorId, String)>> {
        match self.request(Request::NamedActor {
            name: name.to_string(),
        })? {
            Reply::NamedActor(found) => Ok(found),
            other => Err(unexpected(other)),
        }
    }
}
