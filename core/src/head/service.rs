//! The head's gRPC service: worker and driver streams, node control streams,
//! `ClusterStatus`, and the API requests workers and joined drivers send on
//! their stream (`get`, `wait`, actors, KV, placement groups). Requests that
//! wait run as async tasks, lending the caller's resources out meanwhile.
//!
//! Just over 600 lines, all one service: each stream's loop beside the
//! requests it dispatches, so a message and its handler are read together.

use super::actor_handles::handle_object;
use super::generated::head_server::Head as HeadService;
use super::jobs::DriverIdentity;
use super::object_directory::Outstanding;
use super::object_waiters::WakeOn;
use super::{Node, NodeState};
use crate::error::{Error, Result};
use crate::ids::{ObjectId, TaskId, WorkerId};
use crate::packaging;
use crate::protocol::*;
use crate::runtime::Backend;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};

/// Whether `message` only changes the head's state: a task's result, a
/// submission, a withdrawal, a direct call's record. A run of them from one
/// stream is applied under one lock with one scheduling pass, instead of a
/// lock, a pass and an effects round per message.
fn is_state_update(message: &WorkerToNode) -> bool {
    matches!(
        message,
        WorkerToNode::Finished { .. }
            | WorkerToNode::Submit(_)
            | WorkerToNode::Withdrawn { .. }
            | WorkerToNode::DirectCallSent { .. }
            | WorkerToNode::DirectCallRouted { .. }
            | WorkerToNode::DirectCallsFinished { .. }
    )
}

/// The most messages already received on a stream that are handled as one
/// batch: enough to amortise the lock and the scheduling pass, few enough
/// that other streams get the lock in between.
const MAX_BATCH: usize = 256;

impl Node {
    /// Handles messages in the order they came on `worker`'s stream, each
    /// run of state updates under one lock.
    pub(super) fn handle_worker_messages(&self, worker: WorkerId, messages: Vec<WorkerToNode>) {
        // A loop kept warm by messages nobody waits on would spin through a
        // whole stream of synchronous actor calls, taking a core from the
        // caller and the actor on a small machine.
        if !messages.iter().all(WorkerToNode::awaits_nothing) {
            self.warm.touch();
        }
        let mut messages = messages.into_iter().peekable();
        while let Some(next) = messages.peek() {
            if is_state_update(next) {
                self.with_state(|state| {
                    while let Some(update) = messages.next_if(is_state_update) {
                        self.apply_state_update(state, worker, update);
                    }
                });
            } else if let Some(message) = messages.next() {
                self.handle_worker_message(worker, message);
            }
        }
    }

    fn apply_state_update(&self, state: &mut NodeState, worker: WorkerId, update: WorkerToNode) {
        match update {
            WorkerToNode::Finished { task_id, outcome } => {
                state.task_finished(worker, task_id, outcome)
            }
            WorkerToNode::Submit(spec) => {
                let (job, code) = state.submitted_by(worker, self.embedded_job, &spec);
                state.submit(spec, job, code)
            }
            WorkerToNode::Withdrawn { task_id } => state.task_withdrawn(worker, task_id),
            WorkerToNode::DirectCallSent { spec, worker: to } => {
                let (job, code) = state.submitted_by(worker, self.embedded_job, &spec);
                state.direct_call_sent(worker, spec, to, job, code)
            }
            WorkerToNode::DirectCallRouted {
                task_id,
                worker: to,
            } => state.direct_call_routed(task_id, to),
            WorkerToNode::DirectCallsFinished {
                worker: from,
                results,
            } => {
                for DirectResult { task_id, outcome } in results {
                    state.direct_call_finished(task_id, from, outcome)
                }
            }
            other => unreachable!("not a state update: {other:?}"),
        }
    }

    /// Handles a message other than a state update. A second hello is
    /// ignored: the stream's first message said who it is.
    fn handle_worker_message(&self, worker: WorkerId, message: WorkerToNode) {
        match message {
            WorkerToNode::Hello { .. } | WorkerToNode::DriverHello { .. } => {}
            WorkerToNode::Put { id, value } => {
                self.state.lock().note_driver_refs(worker, &[id], &[]);
                self.put(id, value)
            }
            WorkerToNode::AddRefs(ids) => {
                self.state.lock().note_driver_refs(worker, &ids, &[]);
                self.add_refs(&ids)
            }
            WorkerToNode::Log { pid, err, lines } => self.forward_log(worker, pid, err, lines),
            WorkerToNode::Release(ids) => {
                self.state.lock().note_driver_releases(worker, &ids);
                self.release(&ids)
            }
            WorkerToNode::Request {
                request_id,
                request,
            } => self.handle_request(worker, request_id, request),
            update => self.with_state(|state| self.apply_state_update(state, worker, update)),
        }
    }

    pub(super) fn handle_request(&self, worker: WorkerId, request_id: u64, request: Request) {
        let (method, received) = (request.method(), std::time::Instant::now());
        let reply_to = move |node: &Node, reply: Result<Reply>| {
            crate::rpc_metrics::observe(method, received.elapsed());
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
            Request::CreateActor(spec) => {
                let created = self.with_state(|state| {
                    let job = state.job_of(worker, self.embedded_job);
                    state.note_driver_refs(worker, &[], &spec.args);
                    let code = state.code_of(worker);
                    let created = state.create_actor(spec, job, code);
                    // A driver's handle is released with its job.
                    if let Ok(id) = &created {
                        state.note_driver_refs(worker, &[handle_object(*id)], &[]);
                    }
                    created
                });
                reply_to(self, created.map(Reply::Actor))
            }
            Request::NamedActor { name } => {
                let found = {
                    let mut state = self.state.lock();
                    let job = state.job_of(worker, self.embedded_job);
                    let found = state.named_actor(job, &name);
                    if let Some((id, _)) = &found {
                        state.note_driver_refs(worker, &[handle_object(*id)], &[]);
                    }
                    found
                };
                reply_to(self, Ok(Reply::NamedActor(found)))
            }
            Request::KillActor(id) => reply_to(self, self.kill_actor(id).map(|_| Reply::Done)),
            Request::Cancel(id) => {
                let cancelled = self.with_state(|state| state.cancel_from(worker, id));
                reply_to(self, cancelled.map(|_| Reply::Done))
            }
            Request::Put { id, value } => {
                self.state.lock().note_driver_refs(worker, &[id], &[]);
                let node_of_value = value.as_ref().ok().and_then(|blob| match &blob.payload {
                    Payload::Shared { node, .. } => Some(node.clone()),
                    Payload::Inline(_) => None,
                });
                self.put(id, value);
                // A put into shared memory is answered once its node has
                // spilled what it overflowed, so the next one finds room.
                let Some(node_id) = node_of_value.filter(|n| self.state.lock().store_spilling(n))
                else {
                    return reply_to(self, Ok(Reply::Done));
                };
                let node = self.weak();
                self.runtime.spawn(async move {
                    let Some(node) = node.upgrade() else { return };
                    let mut epoch = node.ready_epoch.subscribe();
                    loop {
                        epoch.borrow_and_update();
                        if !node.state.lock().store_spilling(&node_id) {
                            break;
                        }
                        if epoch.changed().await.is_err() {
                            return;
                        }
                    }
                    reply_to(&node, Ok(Reply::Done));
                });
            }
            Request::KvPut { key, value } => {
                reply_to(self, self.kv_put(&key, value).map(|_| Reply::Done))
            }
            Request::KvGet { key } => reply_to(self, self.kv_get(&key).map(Reply::Value)),
            Request::CreatePlacementGroup {
                id,
                bundles,
                strategy,
            } => {
                let created = self.with_state(|state| {
                    let job = state.job_of(worker, self.embedded_job);
                    state.create_placement_group(id, bundles, strategy, job)
                });
                reply_to(self, created.map(|_| Reply::Done))
            }
            Request::RemovePlacementGroup { id } => {
                reply_to(self, self.remove_placement_group(id).map(|_| Reply::Done))
            }
            Request::WaitPlacementGroup { id, timeout_ms } => {
                let node = self.weak();
                self.runtime.spawn(async move {
                    let Some(node) = node.upgrade() else { return };
                    let timeout = Some(Duration::from_millis(timeout_ms));
                    let reply = node
                        .await_until(Some(worker), timeout, |state| {
                            Ok(WakeOn::unless(state.placement_group_ready(id)?))
                        })
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
                        .await_until(Some(worker), timeout, |state| {
                            Ok(WakeOn::unless(state.kv.contains_key(&key)))
                        })
                        .await
                        .map(|_| Reply::Value(node.state.lock().kv.get(&key).cloned()));
                    reply_to(&node, reply);
                });
            }
            Request::Get { ids, timeout_ms } => {
                let timeout = timeout_ms.map(Duration::from_millis);
                self.get_values(worker, ids, timeout, None, reply_to)
            }
            Request::DirectCallArgs {
                task_id,
                caller,
                ids,
            } => self.get_values(worker, ids, None, Some((task_id, caller)), reply_to),
            Request::ResolveActor { actor, not_on } => {
                // The caller keeps running meanwhile (its calls wait in its
                // own queue), so nothing of it is lent out.
                let node = self.weak();
                self.runtime.spawn(async move {
                    let Some(node) = node.upgrade() else { return };
                    let mut route = None;
                    let found = node
                        .await_until(None, None, |state| {
                            route = state.actor_route(actor, not_on);
                            Ok(WakeOn::unless(route.is_some()))
                        })
                        .await;
                    reply_to(&node, found.map(|_| Reply::ActorRoute(route.flatten())));
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
                    let enough = |state: &mut NodeState| {
                        let ready = ids.len() - outstanding.missing(state)?;
                        Ok((ready < num_returns).then(|| {
                            WakeOn::Objects(outstanding.register(state, num_returns - ready))
                        }))
                    };
                    let reply = match node.await_until(Some(worker), timeout, enough).await {
                        Ok(()) | Err(Error::Timeout { .. }) => {
                            Ok(Reply::Ready(node.state.lock().ready_flags(&ids)))
                        }
                        Err(e) => Err(e),
                    };
                    reply_to(&node, reply);
                });
            }
        }
    }

    /// Answers `worker` the values of `ids` once all are ready (a `get`).
    /// For the ref arguments of a direct call (`after_call`: the call and
    /// its caller), first waits until the head has that call, so the
    /// objects its caller sent ahead of it are known.
    fn get_values(
        &self,
        worker: WorkerId,
        ids: Vec<ObjectId>,
        timeout: Option<Duration>,
        after_call: Option<(TaskId, WorkerId)>,
        reply_to: impl FnOnce(&Node, Result<Reply>) + Send + 'static,
    ) {
        let node = self.weak();
        self.runtime.spawn(async move {
            let Some(node) = node.upgrade() else { return };
            let mut outstanding = Outstanding::new(&ids);
            let reply = node
                .await_until(Some(worker), timeout, |state| {
                    if let Some((task_id, caller)) = after_call {
                        if !state.direct_call_known(task_id, caller) {
                            return Ok(Some(WakeOn::AnyChange));
                        }
                    }
                    let missing = outstanding.missing(state)?;
                    Ok(
                        (missing > 0)
                            .then(|| WakeOn::Objects(outstanding.register(state, missing))),
                    )
                })
                .await
                .map(|_| {
                    let state = node.state.lock();
                    Reply::Objects(ids.iter().map(|id| state.value_of(*id)).collect())
                });
            reply_to(&node, reply);
        });
    }

    /// Waits (asynchronously, for a worker) until `look` finds nothing left
    /// to wait for, lending the resources of `lend_from` (the worker blocked
    /// on the answer) out meanwhile. `look` says what to wait for before
    /// looking again.
    pub(super) async fn await_until(
        &self,
        lend_from: Option<WorkerId>,
        timeout: Option<Duration>,
        mut look: impl FnMut(&mut NodeState) -> Result<Option<WakeOn>>,
    ) -> Result<()> {
        super::bounds::check_timeout(timeout)?;
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut epoch = self.ready_epoch.subscribe();
        let mut lent = false;
        let outcome = loop {
            epoch.borrow_and_update();
            let wake_on = match look(&mut self.state.lock()) {
                Err(e) => break Err(e),
                Ok(None) => break Ok(()),
                Ok(Some(wake_on)) => wake_on,
            };
            if let (false, Some(worker)) = (lent, lend_from) {
                lent = true;
                self.with_state(|state| state.lend_out(worker, true));
            }
            let woken = async {
                match &wake_on {
                    WakeOn::AnyChange => {
                        let _ = epoch.changed().await;
                    }
                    WakeOn::Objects(registration) => registration.slot.notified().await,
                }
            };
            let timed_out = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, woken).await.is_err(),
                None => {
                    woken.await;
                    false
                }
            };
            if timed_out {
                if let WakeOn::Objects(registration) = wake_on {
                    self.state
                        .lock()
                        .object_waiters
                        .unregister(registration.waiter);
                }
                break Err(Error::Timeout {
                    seconds: timeout.unwrap_or_default().as_secs_f64(),
                });
            }
        };
        if let (true, Some(worker)) = (lent, lend_from) {
            self.with_state(|state| state.lend_out(worker, false));
        }
        outcome
    }
}

/// The head's gRPC service: worker streams, node control streams, status.
pub(super) struct HeadEndpoint {
    pub(super) node: Weak<Node>,
}

pub(super) type ToWorkerStream =
    Pin<Box<dyn Stream<Item = std::result::Result<NodeToWorker, tonic::Status>> + Send>>;
pub(super) type ToNodeStream =
    Pin<Box<dyn Stream<Item = std::result::Result<HeadToNode, tonic::Status>> + Send>>;

impl HeadEndpoint {
    pub(super) fn node(&self) -> std::result::Result<Arc<Node>, tonic::Status> {
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
            // The pid a worker reports is never believed: the process
            // that spawned it recorded the real one.
            Some(WorkerToNode::Hello {
                worker_id,
                call_address,
                ..
            }) => {
                if !node.register_worker(worker_id, sender, call_address) {
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
                job,
                namespace,
                log_to_driver,
            }) => {
                let identity = DriverIdentity {
                    pid,
                    executable,
                    job,
                    namespace,
                    log_to_driver,
                };
                node.register_driver(WorkerId(origin), identity, sender)?
            }
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
                let (messages, ended) = match inbound.message().await {
                    Ok(Some(message)) => received_with(message, &mut inbound),
                    Ok(None) => (Vec::new(), Some(end_reason(None))),
                    Err(status) => (Vec::new(), Some(end_reason(Some(status)))),
                };
                match weak.upgrade() {
                    Some(node) => node.handle_worker_messages(worker, messages),
                    None => return,
                }
                if let Some(reason) = ended {
                    break reason;
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
            object_store_memory,
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
        if let Err(error) = super::bounds::check_node_resources(&node_id, &resources) {
            eprintln!("oxray: refused node {node_id}: {error}");
            return Err(tonic::Status::invalid_argument(error.to_string()));
        }
        let node = self.node()?;
        let (sender, receiver) = mpsc::unbounded_channel();
        node.register_node(
            &node_id,
            resources,
            object_server,
            object_store_memory,
            sender,
        )?;
        let weak = self.node.clone();
        tokio::spawn(async move {
            let failure = loop {
                match inbound.message().await {
                    Ok(Some(NodeToHead::Leaving)) => break None,
                    Ok(Some(message)) => match weak.upgrade() {
                        Some(head) => head.handle_node_message(&node_id, message),
                        None => return,
                    },
                    Ok(None) => break Some(end_reason(None)),
                    Err(status) => break Some(end_reason(Some(status))),
                }
            };
            if let Some(head) = weak.upgrade() {
                match failure {
                    Some(reason) => head.node_died(&node_id, &reason),
                    None => head.node_left(&node_id),
                }
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

    async fn query_executable(
        &self,
        request: tonic::Request<ExecutableQuery>,
    ) -> std::result::Result<tonic::Response<ExecutableAnswer>, tonic::Status> {
        let executable = request.into_inner().executable;
        Ok(tonic::Response::new(
            self.node()?.query_executable(&executable),
        ))
    }

    async fn upload_executable(
        &self,
        request: tonic::Request<tonic::Streaming<ExecutableUpload>>,
    ) -> std::result::Result<tonic::Response<ExecutableAnswer>, tonic::Status> {
        let node = self.node()?;
        Ok(tonic::Response::new(
            node.receive_executable(request.into_inner()).await?,
        ))
    }

    type FetchExecutableStream = ChunkStream;

    async fn fetch_executable(
        &self,
        request: tonic::Request<ExecutableRequest>,
    ) -> std::result::Result<tonic::Response<ChunkStream>, tonic::Status> {
        let digest = request.into_inner().digest;
        let source = self.node()?.executable_source(&digest).ok_or_else(|| {
            tonic::Status::not_found(format!(
                "the head holds no executable with SHA-256 {digest}"
            ))
        })?;
        let chunks = packaging::read_chunks(source)
            .map(|chunk| chunk.map_err(|e| tonic::Status::internal(format!("reading it: {e}"))));
        Ok(tonic::Response::new(Box::pin(chunks)))
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = std::result::Result<Chunk, tonic::Status>> + Send>>;

/// `first` and the messages already received after it on `inbound` (up to
/// [`MAX_BATCH`]), without waiting for more; and why the stream ended, if it
/// did meanwhile.
fn received_with<T>(first: T, inbound: &mut tonic::Streaming<T>) -> (Vec<T>, Option<String>) {
    let (messages, ended) = crate::wire::with_ready(first, inbound, MAX_BATCH);
    (messages, ended.map(end_reason))
}

/// Why a stream to the head ended: its peer closed it, or it failed.
fn end_reason(failure: Option<tonic::Status>) -> String {
    match failure {
        None => "its connection closed".to_string(),
        Some(status) => format!("its connection failed: {}", status.message()),
    }
}
