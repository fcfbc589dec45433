//! Simulated nodes: light stand-ins for node daemons, for measuring what a
//! head spends on a large cluster (`oxray bench heartbeats`, `oxray bench
//! scheduling`). Each registers with the real protocol and heartbeats; given
//! resources, it also takes work: on `HeadToNode::Spawn` it opens a worker
//! stream to the head exactly as a worker process does (the cluster token,
//! `WorkerToNode::Hello` with the id the head chose) and reports
//! `WorkerStarted`; the worker answers every task, actor constructor and
//! actor call with `Finished` and the encoded `()`, and `Kill` ends its
//! stream, reported as `WorkerExited`. So everything the head does for a
//! task or an actor is real; only the work itself is a no-op.
//!
//! Many nodes and workers share a few connections (as streams of HTTP/2),
//! so one small runtime in one process plays a thousand nodes, and tens of
//! thousands of actors can come and go without a socket each.

use crate::error::{Error, Result};
use crate::ids::WorkerId;
use crate::protocol::*;
use crate::resources::ResourceSet;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;

/// Node streams (and, separately, worker streams) per connection.
const STREAMS_PER_CONNECTION: usize = 100;

/// Connections shared by all simulated workers, used in turn.
const WORKER_CONNECTIONS: usize = 8;

/// What simulated nodes offer and how often they heartbeat.
#[derive(Debug, Clone)]
pub struct SimulatedNodeOptions {
    pub count: usize,
    pub heartbeat_period: Duration,
    /// What each node registers; empty: a node that takes no work.
    pub resources: ResourceSet,
}

/// What one simulated node has run, counted as its workers answer.
#[derive(Debug, Default)]
pub struct NodeWork {
    pub tasks: AtomicU64,
    pub actors_constructed: AtomicU64,
    pub actor_calls: AtomicU64,
    pub workers_started: AtomicU64,
}

/// The registered simulated nodes; dropping them ends every stream.
pub struct SimulatedNodes {
    /// Runs the nodes' and workers' streams; dropped after `stop` ends them.
    _runtime: tokio::runtime::Runtime,
    stop: watch::Sender<bool>,
    work: Arc<Vec<NodeWork>>,
}

type Client = crate::daemon::AuthenticatedHeadClient;

impl SimulatedNodes {
    /// Registers `options.count` nodes with the head at `address`; returns
    /// once all are registered.
    pub fn start(address: &str, token: &str, options: &SimulatedNodeOptions) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("oxray-simulated")
            .enable_all()
            .build()
            .map_err(|e| Error::runtime("cannot start a runtime", e))?;
        let (stop, stopped) = watch::channel(false);
        let work: Arc<Vec<NodeWork>> =
            Arc::new((0..options.count).map(|_| NodeWork::default()).collect());
        let registered = runtime.block_on(async {
            let mut worker_clients = Vec::new();
            for _ in 0..WORKER_CONNECTIONS {
                worker_clients.push(crate::daemon::head_client(address, token).await?);
            }
            let worker_clients = Arc::new(worker_clients);
            let mut registrations = Vec::new();
            for first in (0..options.count).step_by(STREAMS_PER_CONNECTION) {
                let client = crate::daemon::head_client(address, token).await?;
                for index in first..(first + STREAMS_PER_CONNECTION).min(options.count) {
                    let (ready, is_ready) = oneshot::channel();
                    let node = SimulatedNode {
                        index,
                        options: options.clone(),
                        work: work.clone(),
                        worker_clients: worker_clients.clone(),
                    };
                    tokio::spawn(node.run(client.clone(), stopped.clone(), ready));
                    registrations.push(is_ready);
                }
            }
            for registration in registrations {
                registration
                    .await
                    .map_err(|_| {
                        Error::Runtime("a simulated node stopped before registering".into())
                    })?
                    .map_err(|m| {
                        Error::Runtime(format!("the head refused a simulated node: {m}"))
                    })?;
            }
            Ok::<_, Error>(())
        });
        registered?;
        Ok(SimulatedNodes {
            _runtime: runtime,
            stop,
            work,
        })
    }

    /// The id node `index` registered under.
    pub fn node_id(index: usize) -> String {
        format!("simulated-{index}")
    }

    /// What each node has run so far, by index.
    pub fn work(&self) -> &[NodeWork] {
        &self.work
    }
}

impl Drop for SimulatedNodes {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// One simulated node's registration and its workers.
struct SimulatedNode {
    index: usize,
    options: SimulatedNodeOptions,
    work: Arc<Vec<NodeWork>>,
    worker_clients: Arc<Vec<Client>>,
}

impl SimulatedNode {
    /// Registers, then heartbeats and serves the head's commands until the
    /// head closes the stream or the nodes are stopped. Its workers end with
    /// it (their kill switches are dropped).
    async fn run(
        self,
        mut client: Client,
        mut stopped: watch::Receiver<bool>,
        ready: oneshot::Sender<std::result::Result<(), String>>,
    ) {
        let (outbound, outbound_rx) = mpsc::unbounded_channel();
        let _ = outbound.send(NodeToHead::Register {
            node_id: SimulatedNodes::node_id(self.index),
            resources: self.options.resources.clone(),
            object_server: "127.0.0.1:1".into(),
            object_store_memory: 0,
            version: PROTOCOL_VERSION.to_string(),
        });
        let response = client
            .node_stream(UnboundedReceiverStream::new(outbound_rx))
            .await;
        let _ = ready.send(
            response
                .as_ref()
                .map(|_| ())
                .map_err(|s| s.message().to_string()),
        );
        let Ok(response) = response else { return };
        let mut commands = response.into_inner();
        // Spread the heartbeats over the period, as real nodes started at
        // different times would.
        let period = self.options.heartbeat_period;
        let offset = period.mul_f64((self.index % 1000) as f64 / 1000.0);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
        // Dropping a worker's sender ends its stream: that is its kill.
        let mut workers: HashMap<WorkerId, oneshot::Sender<()>> = HashMap::new();
        let (exited, mut exits) = mpsc::unbounded_channel::<(WorkerId, String)>();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if outbound.send(NodeToHead::Heartbeat).is_err() {
                        return;
                    }
                }
                _ = stopped.changed() => return,
                command = commands.message() => match command {
                    Ok(Some(HeadToNode::Spawn { worker, .. })) => {
                        let (kill, killed) = oneshot::channel();
                        workers.insert(worker, kill);
                        let pid = std::process::id();
                        let _ = outbound.send(NodeToHead::WorkerStarted { worker, pid });
                        let clients = &self.worker_clients;
                        let client = clients[worker.0 as usize % clients.len()].clone();
                        let work = self.work.clone();
                        let index = self.index;
                        let exited = exited.clone();
                        tokio::spawn(async move {
                            let why = serve_worker(client, worker, &work[index], killed).await;
                            let _ = exited.send((worker, why));
                        });
                    }
                    Ok(Some(HeadToNode::Kill { worker })) => {
                        workers.remove(&worker);
                    }
                    // Nothing is ever stored here, so nothing is spilled;
                    // answered so a put waiting for room is not held up.
                    Ok(Some(HeadToNode::Spill { generation, .. })) => {
                        let _ = outbound.send(NodeToHead::Spilled { generation });
                    }
                    Ok(Some(HeadToNode::Free { .. })) => {}
                    Ok(None) | Err(_) => return,
                },
                Some((worker, message)) = exits.recv() => {
                    workers.remove(&worker);
                    let _ = outbound.send(NodeToHead::WorkerExited { worker, message });
                }
            }
        }
    }
}

/// One simulated worker: says hello on its own stream, answers every task
/// with `()`, and ends when killed or when the head closes the stream;
/// returns why it ended.
async fn serve_worker(
    mut client: Client,
    worker: WorkerId,
    work: &NodeWork,
    mut killed: oneshot::Receiver<()>,
) -> String {
    let (outbound, outbound_rx) = mpsc::unbounded_channel();
    let _ = outbound.send(WorkerToNode::Hello {
        worker_id: worker,
        pid: std::process::id(),
        // Its actors take calls through the head only.
        call_address: None,
    });
    let opened = tokio::select! {
        opened = client.worker_stream(UnboundedReceiverStream::new(outbound_rx)) => opened,
        _ = &mut killed => return "killed by its node".into(),
    };
    let mut inbound = match opened {
        Ok(response) => response.into_inner(),
        Err(status) => return format!("the head refused its stream: {}", status.message()),
    };
    work.workers_started.fetch_add(1, Ordering::Relaxed);
    loop {
        let message = tokio::select! {
            message = inbound.message() => message,
            _ = &mut killed => return "killed by its node".into(),
        };
        match message {
            Ok(Some(NodeToWorker::Execute(task))) => {
                let counter = match task.invocation {
                    Invocation::Function { .. } => &work.tasks,
                    Invocation::ActorCreate { .. } => &work.actors_constructed,
                    Invocation::ActorMethod { .. } => &work.actor_calls,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let _ = outbound.send(WorkerToNode::Finished {
                    task_id: task.task_id,
                    outcome: Ok(unit()),
                });
            }
            // A simulated worker makes no requests and prints nothing, and
            // a task it was sent has already run: there is nothing to
            // withdraw or cancel.
            Ok(Some(
                NodeToWorker::Reply { .. }
                | NodeToWorker::Log { .. }
                | NodeToWorker::Withdraw { .. }
                | NodeToWorker::CancelCall { .. },
            )) => {}
            Ok(None) => return "the head closed its stream".into(),
            Err(status) => return format!("its stream failed: {}", status.message()),
        }
    }
}

/// `()` encoded as a task's result, as `value::encode` would.
fn unit() -> ObjectBlob {
    ObjectBlob {
        type_name: std::any::type_name::<()>().to_string(),
        contained: Vec::new(),
        payload: Payload::Inline(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_unit_result_decodes_as_unit() {
        let blob = super::unit();
        crate::value::decode::<()>(&blob).expect("() decodes");
    }
}
