//! The client side of a worker's stream (Ray's core worker): one long-lived
//! gRPC stream to the head carries tasks in and results, submissions, puts,
//! reference counts and API requests out. Workers and drivers joined by
//! address use it as their [`Backend`]; requests wait on a oneshot answered
//! when the head's reply arrives, spinning briefly before they park.
//!
//! Small values this process put are kept in its memory while the put's
//! reference lives (`owned_values.rs`), so getting them back needs no
//! request.
//!
//! Just over 600 lines, all the one `Backend` of workers and joined drivers
//! and the connection it runs on; what stands alone (handle counts, kept
//! values, ready flags, the outbound queue, direct actor calls) is in files
//! of its own.

use super::actor_submitter::ActorSubmitter;
use super::local_refs::LocalRefs;
use super::outbound::{self, OutboundQueue};
use super::owned_values::OwnedValues;
use super::ready_objects::ReadyObjects;
use super::task_queue::{QueuedTask, TaskQueue};
use crate::auth::AttachToken;
use crate::error::{Error, Result};
use crate::head::generated::head_client::HeadClient;
use crate::head_link;
use crate::ids::{ActorId, IdMinter, ObjectId, TaskId, WorkerId};
use crate::packaging::{self, JobExecutable, ShipExecutable};
use crate::protocol::*;
use crate::runtime::Backend;
use crate::runtime_env::PreparedRuntimeEnv;
use crate::warm_loop::WarmLoop;
use crate::wire::MAX_MESSAGE_BYTES;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Who a stream client is.
pub(super) struct Identity {
    pub(super) origin: u64,
    pub(super) session: String,
    pub(super) node_id: String,
    pub(super) object_server: Option<String>,
    pub(super) token: String,
}

/// An open stream to the head and the client API on top of it.
pub(super) struct Connection {
    runtime: tokio::runtime::Runtime,
    inbound: tonic::Streaming<NodeToWorker>,
    pub(super) client: Arc<WorkerClient>,
}

impl Connection {
    pub(super) fn open(address: &str, identity: Identity, hello: WorkerToNode) -> Result<Self> {
        // One thread drives the connection and `serve`'s loop alike: a
        // message read off the socket reaches its waiter or the task thread
        // without first passing from an I/O thread to the loop's thread.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::runtime("cannot start the client runtime", e))?;
        let (outbound, stream) = outbound::channel();
        outbound.send(hello);
        let token = AttachToken::new(&identity.token)?;
        let inbound = runtime.block_on(async {
            let channel = head_link::endpoint(address)?.connect().await.map_err(|e| {
                head_link::unreachable(
                    address,
                    format!("cannot connect: {}", crate::head_link::with_causes(&e)),
                )
            })?;
            let mut client = HeadClient::with_interceptor(channel, token)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            client
                .worker_stream(stream)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|status| crate::auth::explain_refusal(&status, "the head", address))
        })?;
        let client = Arc::new_cyclic(|this| WorkerClient {
            this: this.clone(),
            runtime: runtime.handle().clone(),
            submitter: ActorSubmitter::default(),
            id: WorkerId(identity.origin),
            outbound,
            session: identity.session,
            node_id: identity.node_id,
            object_server: identity.object_server,
            token: identity.token,
            ids: IdMinter::new(identity.origin),
            head_address: address.to_string(),
            pending: Mutex::new(Some(HashMap::new())),
            local_refs: LocalRefs::default(),
            owned: OwnedValues::default(),
            ready: ReadyObjects::default(),
            next_request: AtomicU64::new(1),
            leave: tokio::sync::Notify::new(),
            warm: WarmLoop::start(runtime.handle()),
        });
        Ok(Connection {
            runtime,
            inbound,
            client,
        })
    }

    /// Enters the connection's runtime, for what must be set up on it.
    pub(super) fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.runtime.enter()
    }

    /// Dispatches what the head sends until it closes the stream: tasks go to
    /// `tasks` (a worker), replies to the callers waiting for them.
    pub(super) fn serve(mut self, tasks: Option<&TaskQueue>) {
        let client = self.client.clone();
        let reason = self.runtime.block_on(async {
            loop {
                let message = tokio::select! {
                    message = self.inbound.message() => message,
                    _ = client.leave.notified() => break "this driver left".to_string(),
                };
                client.warm.touch();
                match message {
                    Ok(Some(NodeToWorker::Execute(task))) => match tasks {
                        Some(tasks) => tasks.push(QueuedTask::FromHead(task)),
                        None => break "a task arrived at a driver".to_string(),
                    },
                    Ok(Some(NodeToWorker::Withdraw { task_id })) => {
                        if tasks.is_some_and(|tasks| tasks.withdraw(task_id)) {
                            client.send(WorkerToNode::Withdrawn { task_id });
                        }
                    }
                    Ok(Some(NodeToWorker::CancelCall { task_id })) => {
                        if let Some(call) = tasks.and_then(|tasks| tasks.cancel(task_id)) {
                            super::executor::report_cancelled(&client, call);
                        }
                    }
                    Ok(Some(NodeToWorker::Log { source, err, lines })) => {
                        print_log(&source, err, &lines);
                    }
                    Ok(Some(NodeToWorker::Reply { request_id, reply })) => {
                        let waiter = client
                            .pending
                            .lock()
                            .as_mut()
                            .and_then(|pending| pending.remove(&request_id));
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(reply);
                        }
                    }
                    Ok(None) => break "it closed the connection".to_string(),
                    Err(status) => break format!("the connection failed: {}", status.message()),
                }
            }
        });
        if let Some(tasks) = tasks {
            tasks.close();
        }
        // The head is gone: every caller still waiting, and every later
        // request, fails at once.
        let waiting = client.pending.lock().take().unwrap_or_default();
        for waiter in waiting.into_values() {
            let _ = waiter.send(Err(head_link::unreachable(
                &client.head_address,
                reason.clone(),
            )));
        }
        client.submitter.head_lost();
    }
}

/// Joins the cluster whose head is at `address` as a driver: this process
/// submits work and reads results but runs none; the workers of its job run
/// its executable, which the head gets first unless `ship` is `Never`.
pub(crate) fn connect_driver(
    address: &str,
    token: &str,
    namespace: Option<String>,
    log_to_driver: bool,
    ship: ShipExecutable,
    runtime_env: PreparedRuntimeEnv,
) -> Result<Arc<dyn Backend>> {
    let job = crate::ids::JobId::random()?;
    // Ids minted by drivers start above every worker number; the rest of the
    // origin is random, as the job id is.
    let origin = (1 << 23) | (job.0 as u64 & 0x7f_ffff);
    let executable = JobExecutable::of_this_process(ship, runtime_env.spec)
        .map_err(|e| Error::runtime("cannot read this driver's executable", e))?;
    packaging::offer_to_head(
        address,
        token,
        &executable,
        runtime_env.archive.as_deref().map(Vec::as_slice),
    )?;
    let identity = Identity {
        origin,
        session: format!("driver-{}", std::process::id()),
        node_id: format!("driver-{}", std::process::id()),
        object_server: None,
        token: token.to_string(),
    };
    let hello = WorkerToNode::DriverHello {
        origin,
        pid: std::process::id(),
        executable,
        job,
        namespace,
        log_to_driver,
    };
    let connection = Connection::open(address, identity, hello)?;
    let client: Arc<dyn Backend> = connection.client.clone();
    std::thread::Builder::new()
        .name("oxray-driver-io".into())
        .spawn(move || connection.serve(None))
        .map_err(|e| Error::runtime("cannot start the driver's connection thread", e))?;
    Ok(client)
}

/// The backend of a worker process: API calls become messages on the stream.
pub(super) struct WorkerClient {
    pub(super) this: std::sync::Weak<WorkerClient>,
    /// The connection's runtime, for background work (direct actor calls).
    pub(super) runtime: tokio::runtime::Handle,
    /// Actor calls sent straight to the actors' workers.
    pub(super) submitter: ActorSubmitter,
    /// This process's id on the head (a worker's, or a joined driver's).
    pub(super) id: WorkerId,
    outbound: OutboundQueue,
    session: String,
    node_id: String,
    object_server: Option<String>,
    pub(super) token: String,
    ids: IdMinter,
    head_address: String,
    /// Callers waiting for replies; `None` once the head is gone.
    pending: Mutex<Option<HashMap<u64, oneshot::Sender<Result<Reply>>>>>,
    /// How many references to each object this process holds.
    local_refs: LocalRefs,
    /// Small values this process put, for its own `get`s.
    owned: OwnedValues,
    /// Objects the head said are ready, for this process's `wait`s.
    ready: ReadyObjects,
    next_request: AtomicU64,
    /// Ends the connection (a driver's `shutdown`), which ends its job.
    leave: tokio::sync::Notify,
    /// Keeps this connection's loop polling while messages flow.
    pub(super) warm: Arc<WarmLoop>,
}

impl WorkerClient {
    pub(super) fn send(&self, message: WorkerToNode) {
        // If the node is gone the worker is about to exit anyway.
        self.outbound.send(message);
        self.warm.touch();
    }

    /// Sends `request`; its answer arrives on the receiver (an error at
    /// once if the head is gone).
    pub(super) fn request_async(&self, request: Request) -> oneshot::Receiver<Result<Reply>> {
        let request_id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (waiter, answer) = oneshot::channel();
        match self.pending.lock().as_mut() {
            Some(pending) => pending.insert(request_id, waiter),
            None => {
                let (lost, answer) = oneshot::channel();
                let _ = lost.send(Err(self.head_lost()));
                return answer;
            }
        };
        self.send(WorkerToNode::Request {
            request_id,
            request,
        });
        answer
    }

    fn request(&self, request: Request) -> Result<Reply> {
        self.wait_reply(self.request_async(request))
    }

    /// Blocks until `answer` comes, polling for it for a while first.
    fn wait_reply(&self, mut answer: oneshot::Receiver<Result<Reply>>) -> Result<Reply> {
        let spun = crate::spin::poll(|| match answer.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => None,
            received => Some(received.map_err(|_| self.head_lost())),
        });
        match spun {
            Some(received) => received?,
            None => crate::spin::park_on(answer).map_err(|_| self.head_lost())?,
        }
    }

    /// The values of a direct call's arguments, sent here by `caller`: its
    /// ref arguments are asked of the head, as the head does before it
    /// sends a call.
    pub(super) fn direct_call_args(
        &self,
        task_id: TaskId,
        caller: WorkerId,
        args: Vec<TaskArg>,
    ) -> CallArgs {
        let refs: Vec<ObjectId> = args
            .iter()
            .filter_map(|arg| match arg {
                TaskArg::Ref(id) => Some(*id),
                TaskArg::Value(_) => None,
            })
            .collect();
        let values: Vec<Option<Result<ObjectBlob>>> = args
            .into_iter()
            .map(|arg| match arg {
                TaskArg::Value(blob) => Some(Ok(blob)),
                TaskArg::Ref(_) => None,
            })
            .collect();
        if refs.is_empty() {
            return CallArgs::Arrived(values.into_iter().flatten().collect());
        }
        let answer = self.request_async(Request::DirectCallArgs {
            task_id,
            caller,
            ids: refs,
        });
        CallArgs::Fetching { values, answer }
    }

    /// The value of `id` if this process holds it: a small value it put,
    /// or a direct call's result that arrived.
    pub(super) fn value_held_here(&self, id: ObjectId) -> Option<ObjectBlob> {
        self.owned.get(id).or_else(|| self.submitter.ready(id))
    }

    /// This process no longer holds `ids`: what it kept of them goes.
    fn forget_held(&self, ids: &[ObjectId]) {
        self.owned.released(ids);
        self.ready.released(ids);
        self.submitter.released(ids);
    }

    fn head_lost(&self) -> Error {
        head_link::unreachable(&self.head_address, "the connection to it ended")
    }
}

/// The ids whose values are still holes (`None`), in order.
fn holes(ids: &[ObjectId], values: &[Option<Result<ObjectBlob>>]) -> Vec<ObjectId> {
    ids.iter()
        .zip(values)
        .filter(|(_, value)| value.is_none())
        .map(|(id, _)| *id)
        .collect()
}

/// A direct call's arguments: all arrived with the call, or some asked of
/// the head (`answer`), to fill the holes in `values`.
pub(super) enum CallArgs {
    Arrived(Vec<Result<ObjectBlob>>),
    Fetching {
        values: Vec<Option<Result<ObjectBlob>>>,
        answer: oneshot::Receiver<Result<Reply>>,
    },
}

impl CallArgs {
    /// The values, blocking until the head's answer comes.
    pub(super) fn wait(self, client: &WorkerClient) -> Result<Vec<Result<ObjectBlob>>> {
        match self {
            CallArgs::Arrived(values) => Ok(values),
            CallArgs::Fetching { values, answer } => fill_holes(values, client.wait_reply(answer)),
        }
    }

    /// The values, awaiting the head's answer: an event loop must not block
    /// while another of its calls may be what makes a value ready.
    pub(super) async fn arrived(self, client: &WorkerClient) -> Result<Vec<Result<ObjectBlob>>> {
        match self {
            CallArgs::Arrived(values) => Ok(values),
            CallArgs::Fetching { values, answer } => {
                let reply = answer.await.unwrap_or_else(|_| Err(client.head_lost()));
                fill_holes(values, reply)
            }
        }
    }
}

/// The head's `reply` fills the holes of `values`, in order.
fn fill_holes(
    values: Vec<Option<Result<ObjectBlob>>>,
    reply: Result<Reply>,
) -> Result<Vec<Result<ObjectBlob>>> {
    let fetched = match reply? {
        Reply::Objects(fetched) => fetched,
        other => return Err(unexpected(other)),
    };
    let mut fetched = fetched.into_iter();
    values
        .into_iter()
        .map(|value| {
            value
                .or_else(|| fetched.next())
                .ok_or_else(|| Error::Runtime("the head answered with too few values".into()))
        })
        .collect()
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

    fn object_server(&self) -> Option<&str> {
        self.object_server.as_deref()
    }

    fn token(&self) -> &str {
        &self.token
    }

    fn next_id(&self) -> u64 {
        self.ids.next()
    }

    fn submit(&self, spec: TaskSpec) {
        self.local_refs.created(spec.return_id);
        match spec.actor {
            Some(actor) => self.submit_actor_call(spec, actor),
            None => self.send(WorkerToNode::Submit(spec)),
        }
    }

    fn create_actor(&self, spec: ActorSpec) -> Result<ActorId> {
        match self.request(Request::CreateActor(spec))? {
            Reply::Actor(id) => Ok(id),
            other => Err(unexpected(other)),
        }
    }

    fn put(&self, id: ObjectId, value: Result<ObjectBlob>) {
        if let Ok(ObjectBlob {
            payload: Payload::Shared { .. },
            ..
        }) = &value
        {
            // Waits for the node to spill room; a lost head fails the next
            // call that needs an answer instead.
            let _ = self.put_acknowledged(id, value);
        } else {
            self.local_refs.created(id);
            self.owned.keep(id, &value);
            self.send(WorkerToNode::Put { id, value });
        }
    }

    fn put_acknowledged(&self, id: ObjectId, value: Result<ObjectBlob>) -> Result<()> {
        // A refused put drops its reference, which forgets the value again.
        self.local_refs.created(id);
        self.owned.keep(id, &value);
        match self.request(Request::Put { id, value })? {
            Reply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    fn get(&self, ids: &[ObjectId], timeout: Option<Duration>) -> Result<Vec<Result<ObjectBlob>>> {
        if let Some(values) = self.owned.get_all(ids) {
            return Ok(values.into_iter().map(Ok).collect());
        }
        let started = std::time::Instant::now();
        // Results of direct actor calls arrive here; the rest is the head's.
        let mut values = self.submitter.wait_for(ids, timeout)?;
        self.owned.fill(ids, &mut values);
        let missing = holes(ids, &values);
        if missing.is_empty() {
            return Ok(values.into_iter().flatten().collect());
        }
        let timeout_ms = timeout.map(|t| t.saturating_sub(started.elapsed()).as_millis() as u64);
        let reply = self.request(Request::Get {
            ids: missing,
            timeout_ms,
        });
        fill_holes(values, reply)
    }

    fn wait(
        &self,
        ids: &[ObjectId],
        num_returns: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<bool>> {
        let mut flags = self.ready.known(ids);
        let known = flags.iter().filter(|ready| **ready).count();
        if known < num_returns {
            let unknown: Vec<ObjectId> = ids
                .iter()
                .zip(&flags)
                .filter(|(_, ready)| !**ready)
                .map(|(id, _)| *id)
                .collect();
            let asked = unknown.len();
            let answered = match self.request(Request::Wait {
                ids: unknown,
                num_returns: num_returns - known,
                timeout_ms: timeout.map(|t| t.as_millis() as u64),
            })? {
                Reply::Ready(answered) if answered.len() == asked => answered,
                other => return Err(unexpected(other)),
            };
            let mut answered = answered.into_iter();
            for flag in flags.iter_mut().filter(|ready| !**ready) {
                *flag = answered.next().unwrap_or(false);
            }
            self.ready.learned(ids, &flags);
        }
        Ok(flags)
    }

    fn add_refs(&self, ids: &[ObjectId]) {
        let first_here = self.local_refs.added(ids);
        if !first_here.is_empty() {
            self.send(WorkerToNode::AddRefs(first_here));
        }
    }

    fn add_refs_for_value(&self, ids: &[ObjectId]) {
        self.send(WorkerToNode::AddRefs(ids.to_vec()));
    }

    fn hand_over(&self, ids: &[ObjectId]) {
        // The head's one reference for this process goes to the task with
        // the last handle here; while others remain, the task needs its own.
        let (last_here, others_here) = self.local_refs.handed_over(ids);
        self.forget_held(&last_here);
        if !others_here.is_empty() {
            self.send(WorkerToNode::AddRefs(others_here));
        }
    }

    fn release(&self, ids: &[ObjectId]) {
        let last_here = self.local_refs.released(ids);
        if last_here.is_empty() {
            return;
        }
        self.forget_held(&last_here);
        // Gathered with the releases around it into one message.
        self.outbound.release(&last_here);
    }

    fn cancel(&self, id: ObjectId) -> Result<()> {
        self.withdraw_held_call(id);
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

    fn create_placement_group(
        &self,
        id: u64,
        bundles: Vec<crate::ResourceSet>,
        strategy: crate::PlacementStrategy,
    ) -> Result<()> {
        self.request(Request::CreatePlacementGroup {
            id,
            bundles,
            strategy,
        })
        .map(|_| ())
    }

    fn wait_placement_group(&self, id: u64, timeout: Duration) -> Result<()> {
        let timeout_ms = timeout.as_millis() as u64;
        self.request(Request::WaitPlacementGroup { id, timeout_ms })
            .map(|_| ())
    }

    fn remove_placement_group(&self, id: u64) -> Result<()> {
        self.request(Request::RemovePlacementGroup { id })
            .map(|_| ())
    }

    fn kv_delete(&self, key: &str) -> Result<()> {
        self.request(Request::KvDelete {
            key: key.to_string(),
        })
        .map(|_| ())
    }

    fn disconnect(&self) {
        self.leave.notify_one();
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

/// Prints lines a worker of this driver's job wrote, as Ray's log_to_driver
/// does: `(name pid=N node=ID) line`, on this process's stdout or stderr.
pub(crate) fn print_log(source: &str, err: bool, lines: &[String]) {
    use std::io::Write;
    let mut text = String::new();
    for line in lines {
        text.push_str(source);
        text.push(' ');
        text.push_str(line);
        text.push('\n');
    }
    // A driver whose output is closed keeps running without it.
    let _ = if err {
        std::io::stderr().lock().write_all(text.as_bytes())
    } else {
        std::io::stdout().lock().write_all(text.as_bytes())
    };
}
