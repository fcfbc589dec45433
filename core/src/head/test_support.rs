//! A head's state built directly for the unit tests of each concept file:
//! a head node with given resources (more nodes join on demand), workers
//! connected through plain channels, and the effects the state hands to
//! [`Node`](super::Node) read back. Tests drive the state by its own methods,
//! as `Node::with_state` does (an event, then `schedule`), with no process,
//! socket or runtime.

use super::actors::ActorStatus;
use super::task_events::TaskEvents;
use super::{Effect, NodeState, Retention};
use crate::error::{Error, Result};
use crate::ids::{ActorId, IdMinter, JobId, ObjectId, TaskId, WorkerId};
use crate::protocol::*;
use crate::resources::{ResourceSet, SchedulingStrategy, CPU};
use std::sync::Arc;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// The node the head runs on.
pub(super) const HEAD: &str = "head";
/// The job everything in these tests belongs to (the embedded driver's).
pub(super) const JOB: JobId = JobId(0);

/// A resource set from `(name, amount)` pairs.
pub(super) fn res(amounts: &[(&str, f64)]) -> ResourceSet {
    let mut set = ResourceSet::default();
    for (name, amount) in amounts {
        set.set(name, *amount);
    }
    set
}

pub(super) fn cpus(n: f64) -> ResourceSet {
    res(&[(CPU, n)])
}

/// Ids of tasks, objects and actors the tests make, from an origin of their
/// own (as a driver's are), so none collides with an id the state mints.
pub(super) struct Ids(IdMinter);

impl Ids {
    pub(super) fn new() -> Self {
        Ids(IdMinter::new(1 << 22))
    }

    pub(super) fn next(&self) -> u64 {
        self.0.next()
    }

    /// A stateless task calling `name` that needs `resources`.
    pub(super) fn task(&self, name: &str, resources: ResourceSet, args: Vec<TaskArg>) -> TaskSpec {
        TaskSpec {
            task_id: TaskId(self.next()),
            return_id: ObjectId(self.next()),
            invocation: Invocation::Function { name: name.into() },
            args,
            actor: None,
            resources,
            strategy: SchedulingStrategy::Default,
            max_retries: 0,
            retry_exceptions: false,
        }
    }

    /// A call of `method` on `actor`.
    pub(super) fn call(&self, actor: ActorId, method: &str) -> TaskSpec {
        TaskSpec {
            actor: Some(actor),
            invocation: Invocation::ActorMethod {
                class: "Counter".into(),
                method: method.into(),
            },
            ..self.task(method, ResourceSet::default(), Vec::new())
        }
    }

    /// An actor of class `Counter` that needs `resources`.
    pub(super) fn actor(&self, resources: ResourceSet, max_restarts: u32) -> ActorSpec {
        ActorSpec {
            actor_id: ActorId(self.next()),
            class: "Counter".into(),
            args: Vec::new(),
            resources,
            strategy: SchedulingStrategy::Default,
            max_restarts,
            max_task_retries: 0,
            name: None,
            get_if_exists: false,
            detached: false,
            max_concurrency: 1,
        }
    }
}

/// A small value carried inline.
pub(super) fn inline(bytes: &[u8]) -> ObjectBlob {
    ObjectBlob {
        type_name: "bytes".into(),
        contained: Vec::new(),
        payload: Payload::Inline(bytes.to_vec()),
    }
}

/// A value of `len` bytes in `node`'s shared memory.
pub(super) fn in_shm(node: &str, generation: u64, len: u64) -> ObjectBlob {
    ObjectBlob {
        type_name: "bytes".into(),
        contained: Vec::new(),
        payload: Payload::Shared {
            path: format!("/oxray-test-{generation}"),
            len,
            node: node.into(),
            server: format!("{node}:1"),
            generation,
        },
    }
}

/// What an effect asks `Node` to do, in a form tests compare.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Did {
    Spawn { worker: WorkerId, node: String },
    Stop { worker: WorkerId, node: String },
    Spill { node: String, generation: u64 },
    Free { local_path: bool, generation: u64 },
}

impl NodeState {
    /// A head on [`HEAD`] offering `resources`, with a store of `store` bytes.
    pub(super) fn for_test(resources: ResourceSet, store: u64) -> NodeState {
        NodeState::new(
            HEAD,
            resources,
            store,
            Arc::new(IdMinter::new(0)),
            TaskEvents::new(1000),
            Retention {
                dead_actors: super::DEFAULT_DEAD_ACTORS_KEPT,
            },
        )
    }

    /// Another node joins; what the head tells its daemon arrives on the
    /// receiver.
    pub(super) fn join(
        &mut self,
        node: &str,
        resources: ResourceSet,
    ) -> UnboundedReceiver<HeadToNode> {
        let (sender, receiver) = unbounded_channel();
        self.node_joined(node, resources, format!("{node}:1"), 1 << 30, sender);
        receiver
    }

    /// The effects emitted since the last call, oldest first.
    pub(super) fn take_effects(&mut self) -> Vec<Did> {
        std::mem::take(&mut self.effects)
            .into_iter()
            .map(|effect| match effect {
                Effect::Spawn { worker, node, .. } => Did::Spawn { worker, node },
                Effect::Stop { worker, node, .. } => Did::Stop { worker, node },
                Effect::Spill {
                    node, generation, ..
                } => Did::Spill { node, generation },
                Effect::Free {
                    path, generation, ..
                } => Did::Free {
                    local_path: path.is_some(),
                    generation,
                },
            })
            .collect()
    }

    /// The workers the pending effects start, with their nodes; other
    /// effects are dropped.
    pub(super) fn take_spawns(&mut self) -> Vec<(WorkerId, String)> {
        self.take_effects()
            .into_iter()
            .filter_map(|did| match did {
                Did::Spawn { worker, node } => Some((worker, node)),
                _ => None,
            })
            .collect()
    }

    /// `worker`'s process says hello, then the head schedules; what the head
    /// sends it arrives on the receiver.
    pub(super) fn connect(&mut self, worker: WorkerId) -> UnboundedReceiver<NodeToWorker> {
        let (sender, receiver) = unbounded_channel();
        assert!(
            self.worker_connected(worker, sender, Some(call_address(worker))),
            "{worker} was not started"
        );
        self.schedule();
        receiver
    }

    /// Submits `spec` for [`JOB`] and schedules.
    pub(super) fn submit_now(&mut self, spec: TaskSpec) {
        self.submit(spec, JOB, None);
        self.schedule();
    }

    /// `worker` reports `task` done with `outcome`, then the head schedules.
    pub(super) fn finish(&mut self, worker: WorkerId, task: TaskId, outcome: Result<ObjectBlob>) {
        self.task_finished(worker, task, outcome);
        self.schedule();
    }

    /// Starts (and connects) the worker a pending spawn asks for; panics
    /// unless exactly one is pending.
    pub(super) fn start_one(&mut self) -> (WorkerId, UnboundedReceiver<NodeToWorker>) {
        let spawns = self.take_spawns();
        assert_eq!(spawns.len(), 1, "one worker to start: {spawns:?}");
        let worker = spawns[0].0;
        (worker, self.connect(worker))
    }

    /// The value stored for `id`: `None` while pending.
    pub(super) fn value(&self, id: ObjectId) -> Option<Result<ObjectBlob>> {
        self.objects
            .get(&id)
            .and_then(|e| e.value.as_deref())
            .cloned()
    }

    /// Creates an actor and runs its constructor to completion on a fresh
    /// worker: (worker, its inbox).
    pub(super) fn start_actor(
        &mut self,
        spec: ActorSpec,
    ) -> (WorkerId, UnboundedReceiver<NodeToWorker>) {
        let id = spec.actor_id;
        self.create_actor(spec, JOB, None).expect("created");
        self.schedule();
        assert_eq!(self.actors[&id].status, ActorStatus::Starting);
        let (worker, inbox) = self.start_one();
        self.constructed(id, worker, inbox)
    }

    /// The actor's constructor is what its new worker runs first; it
    /// succeeds.
    pub(super) fn constructed(
        &mut self,
        id: ActorId,
        worker: WorkerId,
        mut inbox: UnboundedReceiver<NodeToWorker>,
    ) -> (WorkerId, UnboundedReceiver<NodeToWorker>) {
        let runs = executed(&mut inbox);
        assert_eq!(runs.len(), 1);
        assert!(
            matches!(&runs[0].invocation, Invocation::ActorCreate { class, .. } if class == "Counter")
        );
        self.finish(worker, runs[0].task_id, Ok(inline(b"")));
        assert_eq!(self.actors[&id].status, ActorStatus::Alive);
        (worker, inbox)
    }

    /// `actor` has left the live table for the dead one.
    pub(super) fn is_dead(&self, actor: ActorId) -> bool {
        !self.actors.contains_key(&actor) && self.dead_actors.get(&actor).is_some()
    }

    /// Free amount of `resource` on `node`.
    pub(super) fn free(&self, node: &str, resource: &str) -> f64 {
        self.pool
            .node(node)
            .map_or(0.0, |p| p.available().get(resource))
    }
}

/// The tasks `receiver` was told to run since the last look, in order.
pub(super) fn executed(receiver: &mut UnboundedReceiver<NodeToWorker>) -> Vec<Execute> {
    let mut runs = Vec::new();
    while let Ok(message) = receiver.try_recv() {
        if let NodeToWorker::Execute(execute) = message {
            runs.push(execute);
        }
    }
    runs
}

/// The task ids of [`executed`].
pub(super) fn executed_ids(receiver: &mut UnboundedReceiver<NodeToWorker>) -> Vec<TaskId> {
    executed(receiver).into_iter().map(|e| e.task_id).collect()
}

/// The error variant's name, for tables of expected outcomes.
pub(super) fn error_kind(value: &Option<Result<ObjectBlob>>) -> &'static str {
    match value {
        None => "pending",
        Some(Ok(_)) => "ok",
        Some(Err(Error::WorkerDied { .. })) => "WorkerDied",
        Some(Err(Error::ActorDied { .. })) => "ActorDied",
        Some(Err(Error::ObjectLost { .. })) => "ObjectLost",
        Some(Err(Error::Cancelled { .. })) => "Cancelled",
        Some(Err(Error::Infeasible { .. })) => "Infeasible",
        Some(Err(_)) => "other error",
    }
}

impl NodeState {
    /// A value put by the driver as `id`, as the embedded `put` stores it.
    pub(super) fn put_value(&mut self, id: ObjectId, blob: ObjectBlob) {
        self.objects.insert(
            id,
            super::object_directory::ObjectEntry {
                value: None,
                refs: 1,
                producer: None,
            },
        );
        self.complete(id, Ok(blob));
    }
}

/// Where a test's `worker` says it serves actor calls.
pub(super) fn call_address(worker: WorkerId) -> String {
    format!("worker-{}:1", worker.0)
}
