//! The worker pool (Ray's worker pool): worker processes for tasks and one per
//! actor, started on the node the scheduler chose (locally as children, on
//! other nodes by their daemon), registered when their stream says hello, and
//! removed when their process or stream ends, with their work retried or
//! failed.
//!
//! Over 600 lines only with its unit tests (the code is under 480): the
//! pool's transitions and their tests stay side by side.

use super::executables::{code_key, Code};
use super::scheduler::Lease;
use super::{Effect, Node, NodeState};
use crate::error::{Error, ExecutableProblem};
use crate::ids::{ActorId, JobId, TaskId, WorkerId};
use crate::protocol::*;
use crate::resources::CPU;
use crate::worker::{describe_exit, kill_process};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use tokio::sync::mpsc;

/// Most worker processes for stateless tasks on a node with fewer CPUs:
/// tasks that ask for fractions of a CPU (or none) can each hold a worker,
/// so CPUs alone do not bound them. A node with more CPUs may run one per
/// CPU (Ray's soft limit on a node's workers is its CPU count).
pub(super) const MAX_TASK_WORKERS: usize = 64;

pub(super) struct WorkerRecord {
    pub(super) node: String,
    /// What it runs; tasks of other executables never go to it.
    pub(super) code: Code,
    /// A remote driver's connection: it submits work but never runs any.
    pub(super) is_driver: bool,
    pub(super) pid: Option<u32>,
    pub(super) sender: Option<mpsc::UnboundedSender<NodeToWorker>>,
    /// Where callers reach its actor-call service, from its hello.
    pub(super) call_address: Option<String>,
    pub(super) gpu_ids: Vec<u32>,
    pub(super) actor: Option<ActorId>,
    pub(super) lease: Option<Lease>,
    pub(super) assigned: VecDeque<TaskId>,
    /// The job and name of the last task sent to it: whose driver its output
    /// goes to, even for lines read after the task finished.
    pub(super) last_task: Option<(JobId, String)>,
    /// Told to stop: it stays until its exit is reported (which settles its
    /// work), but never takes new work, even if it finishes what it runs
    /// before the signal lands.
    pub(super) stopping: bool,
}

/// What a task worker can take a lease for: its node, its executable's
/// digest and its GPU ids.
pub(super) type PoolKey = (String, String, Vec<u32>);

pub(super) fn pool_key(node: &str, code: &Code, gpu_ids: &[u32]) -> PoolKey {
    (
        node.to_string(),
        code_key(code).to_string(),
        gpu_ids.to_vec(),
    )
}

/// The task workers (not actors' workers, not drivers) by what they can
/// run, kept as workers start, connect, take and end leases and go: a lease
/// finds an idle worker or one still starting that no lease has claimed,
/// the scheduler knows how many queued tasks of a shape workers starting
/// for them will take, and the pool how many workers a node has, without
/// looking at every worker.
///
/// A lease that finds no idle worker starts one and holds its resources
/// while it starts (Ray's raylet grants a lease and then starts the worker
/// for it), so a queue that needs ten workers starts ten at once, on
/// whichever nodes the policy picks, instead of one after another.
#[derive(Default)]
pub(super) struct TaskWorkerIndex {
    idle: FxHashMap<PoolKey, Vec<WorkerId>>,
    /// Workers starting with no lease (started ahead of demand, as the warm
    /// pool is): a lease for their key claims one before starting another.
    unleased_starting: FxHashMap<PoolKey, Vec<WorkerId>>,
    /// Per shape queue, the leases held by workers still starting: each
    /// takes one of the queue's tasks when its worker connects.
    leases_starting: FxHashMap<String, usize>,
    per_node: FxHashMap<String, usize>,
}

fn add_one(counts: &mut FxHashMap<String, usize>, key: &str) {
    *counts.entry(key.to_string()).or_default() += 1;
}

fn remove_one(counts: &mut FxHashMap<String, usize>, key: &str) {
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

fn take_from<K: std::hash::Hash + Eq>(
    lists: &mut FxHashMap<K, Vec<WorkerId>>,
    key: &K,
    worker: Option<WorkerId>,
) -> Option<WorkerId> {
    let list = lists.get_mut(key)?;
    let taken = match worker {
        Some(worker) => {
            let at = list.iter().position(|w| *w == worker)?;
            Some(list.swap_remove(at))
        }
        None => list.pop(),
    };
    if list.is_empty() {
        lists.remove(key);
    }
    taken
}

impl TaskWorkerIndex {
    /// `worker` starts for `key`, under a lease for the queue `lease_shape`
    /// or (`None`) ahead of demand.
    fn started(&mut self, key: PoolKey, worker: WorkerId, lease_shape: Option<&str>) {
        add_one(&mut self.per_node, &key.0);
        match lease_shape {
            Some(shape) => add_one(&mut self.leases_starting, shape),
            None => self.unleased_starting.entry(key).or_default().push(worker),
        }
    }

    /// A worker starting for `key` with no lease, now holding one for the
    /// queue `shape`.
    pub(super) fn claim_starting(&mut self, key: &PoolKey, shape: &str) -> Option<WorkerId> {
        let worker = take_from(&mut self.unleased_starting, key, None)?;
        add_one(&mut self.leases_starting, shape);
        Some(worker)
    }

    /// `worker` connected; one that started under a lease for `lease_shape`
    /// now serves it, one without is idle.
    fn connected(&mut self, key: PoolKey, worker: WorkerId, lease_shape: Option<&str>) {
        match lease_shape {
            Some(shape) => remove_one(&mut self.leases_starting, shape),
            None => {
                take_from(&mut self.unleased_starting, &key, Some(worker));
                self.idle.entry(key).or_default().push(worker);
            }
        }
    }

    /// `worker` ended its lease with nothing assigned.
    pub(super) fn now_idle(&mut self, key: PoolKey, worker: WorkerId) {
        self.idle.entry(key).or_default().push(worker);
    }

    /// `worker` is no longer idle, or no longer starting for any lease to
    /// claim (it goes, or is told to stop).
    fn not_available(&mut self, key: &PoolKey, worker: WorkerId) {
        take_from(&mut self.idle, key, Some(worker));
        take_from(&mut self.unleased_starting, key, Some(worker));
    }

    /// An idle worker for `key`, no longer idle.
    pub(super) fn take_idle(&mut self, key: &PoolKey) -> Option<WorkerId> {
        take_from(&mut self.idle, key, None)
    }

    /// `worker` went; if it had not connected, with the lease it started
    /// under for the queue `lease_shape`, if any.
    fn removed(
        &mut self,
        key: PoolKey,
        worker: WorkerId,
        connected: bool,
        lease_shape: Option<&str>,
    ) {
        remove_one(&mut self.per_node, &key.0);
        self.not_available(&key, worker);
        if let (false, Some(shape)) = (connected, lease_shape) {
            remove_one(&mut self.leases_starting, shape);
        }
    }

    /// Tasks of the queue `shape` that workers starting under a lease for
    /// it will take as they connect.
    pub(super) fn leases_starting(&self, shape: &str) -> usize {
        self.leases_starting.get(shape).copied().unwrap_or(0)
    }

    /// Task workers on `node`, connected or starting.
    pub(super) fn on_node(&self, node: &str) -> usize {
        self.per_node.get(node).copied().unwrap_or(0)
    }
}

#[cfg(test)]
impl TaskWorkerIndex {
    /// Panics unless the index holds exactly what a look at every worker
    /// finds (what leases scanned all workers for before there was an index).
    pub(super) fn assert_matches_scan(
        &self,
        workers: &FxHashMap<WorkerId, WorkerRecord>,
        step: &str,
    ) {
        use std::collections::BTreeMap;
        let mut idle: BTreeMap<PoolKey, Vec<WorkerId>> = BTreeMap::new();
        let mut unleased_starting: BTreeMap<PoolKey, Vec<WorkerId>> = BTreeMap::new();
        let mut leases_starting: BTreeMap<String, usize> = BTreeMap::new();
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for (id, worker) in workers.iter().filter(|(_, w)| w.runs_tasks()) {
            *per_node.entry(worker.node.clone()).or_default() += 1;
            match (&worker.sender, &worker.lease) {
                (None, Some(lease)) => {
                    *leases_starting.entry(lease.shape.clone()).or_default() += 1
                }
                (None, None) if !worker.stopping => unleased_starting
                    .entry(worker.pool_key())
                    .or_default()
                    .push(*id),
                _ => {}
            }
            if worker.is_idle() {
                idle.entry(worker.pool_key()).or_default().push(*id);
            }
        }
        // Sorted, not deduplicated: a worker listed twice is a fault.
        let sorted = |mut lists: BTreeMap<PoolKey, Vec<WorkerId>>| {
            lists.values_mut().for_each(|ids| ids.sort());
            lists
        };
        assert_eq!(
            sorted(self.idle.clone().into_iter().collect()),
            sorted(idle),
            "idle task workers after {step}"
        );
        assert_eq!(
            sorted(self.unleased_starting.clone().into_iter().collect()),
            sorted(unleased_starting),
            "starting task workers no lease claimed after {step}"
        );
        assert_eq!(
            self.leases_starting
                .clone()
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
            leases_starting,
            "leases held by starting workers after {step}"
        );
        assert_eq!(
            self.per_node
                .clone()
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
            per_node,
            "task workers per node after {step}"
        );
    }
}

impl WorkerRecord {
    /// Runs stateless tasks (not an actor's worker, not a driver).
    pub(super) fn runs_tasks(&self) -> bool {
        self.actor.is_none() && !self.is_driver
    }

    /// A task worker that can take a lease now: connected, not stopping,
    /// with no lease and nothing assigned.
    pub(super) fn is_idle(&self) -> bool {
        self.runs_tasks()
            && self.sender.is_some()
            && !self.stopping
            && self.lease.is_none()
            && self.assigned.is_empty()
    }

    pub(super) fn pool_key(&self) -> PoolKey {
        pool_key(&self.node, &self.code, &self.gpu_ids)
    }

    /// The effect that ends this worker's process, wherever it runs.
    pub(super) fn stop(&self, worker: WorkerId) -> Effect {
        Effect::Stop {
            worker,
            node: self.node.clone(),
            pid: self.pid,
        }
    }
}

impl Node {
    /// Starts `worker` on this node from the file at `executable`, in
    /// `environment`.
    pub(super) fn spawn_worker(
        &self,
        worker: WorkerId,
        gpu_ids: Vec<u32>,
        executable: &str,
        environment: &crate::runtime_env::WorkerEnvironment,
    ) {
        let launch = crate::worker::WorkerLaunch {
            executable,
            environment,
            head_address: &self.address.to_string(),
            worker,
            session: &self.config.session,
            node_id: &self.config.node_id,
            object_server: &self.address.to_string(),
            token: &self.config.token,
            gpu_ids: &gpu_ids,
            hide_gpus: self.has_gpus,
            log_dir: self.config.log_dir.as_deref(),
            store: &self.config.store_settings(),
        };
        let _guard = self.runtime.enter();
        match launch.spawn() {
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
            Err(e) => self.worker_failed_to_start(worker, &self.config.node_id, e.to_string()),
        }
    }

    /// Asks `node`'s daemon to start `worker` running `code` (the embedded
    /// driver's own executable when `None`).
    pub(super) fn spawn_remote_worker(
        &self,
        node: &str,
        worker: WorkerId,
        gpu_ids: Vec<u32>,
        code: Code,
    ) {
        let executable = match code {
            Some(code) => code.executable.clone(),
            None => match self.embedded_executable() {
                Ok(executable) => (*executable).clone(),
                Err(e) => return self.worker_failed_to_start(worker, node, e.to_string()),
            },
        };
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

    /// No process could be started for `worker` on `node`. Its job's tasks
    /// fail there with the cause instead of starting another worker for
    /// the same lease, which would fail the same way, within the same
    /// scheduling pass (a loop that never ended).
    pub(super) fn worker_failed_to_start(&self, worker: WorkerId, node: &str, message: String) {
        let error = Error::ExecutableUnavailable {
            node: node.to_string(),
            reason: ExecutableProblem::CannotStart { message },
        };
        self.worker_not_started(worker, error);
    }

    /// A worker's stream ended. Its process is stopped for certain, and the
    /// death is reported by the process watcher, which knows the exit status
    /// (a signal, an exit code) that makes the error useful.
    pub(super) fn stream_closed(&self, worker: WorkerId, reason: String) {
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
    pub(super) fn worker_exited(&self, worker: WorkerId, message: String) {
        self.with_state(|state| state.worker_exited(worker, &message));
    }

    pub(super) fn register_worker(
        &self,
        worker: WorkerId,
        sender: mpsc::UnboundedSender<NodeToWorker>,
        call_address: Option<String>,
    ) -> bool {
        self.with_state(|state| state.worker_connected(worker, sender, call_address))
    }
}

impl NodeState {
    pub(super) fn add_worker(
        &mut self,
        id: WorkerId,
        node: &str,
        gpu_ids: Vec<u32>,
        actor: Option<ActorId>,
        code: Code,
        lease: Option<Lease>,
    ) {
        let record = WorkerRecord {
            node: node.to_string(),
            code: code.clone(),
            is_driver: false,
            pid: None,
            sender: None,
            call_address: None,
            gpu_ids: gpu_ids.clone(),
            actor,
            lease,
            assigned: VecDeque::new(),
            last_task: None,
            stopping: false,
        };
        if record.runs_tasks() {
            let lease_shape = record.lease.as_ref().map(|l| l.shape.as_str());
            self.task_workers
                .started(record.pool_key(), id, lease_shape);
        }
        self.workers.insert(id, record);
        self.effects.push(Effect::Spawn {
            worker: id,
            node: node.to_string(),
            gpu_ids,
            code,
        });
    }

    /// How many task workers `node` may run: one per CPU, and at least
    /// [`MAX_TASK_WORKERS`].
    pub(super) fn task_worker_limit(&self, node: &str) -> usize {
        let cpus = (self.pool.node(node)).map_or(0.0, |pool| pool.total().get(CPU));
        MAX_TASK_WORKERS.max(cpus.ceil() as usize)
    }

    /// `worker`'s stream said hello: it can take work now, an actor's
    /// worker its constructor first. False for a worker the head did not
    /// start, or one already connected (a second hello is an impostor: the
    /// first stream keeps it).
    pub(super) fn worker_connected(
        &mut self,
        worker: WorkerId,
        sender: mpsc::UnboundedSender<NodeToWorker>,
        call_address: Option<String>,
    ) -> bool {
        let Some(record) = self.workers.get_mut(&worker) else {
            return false;
        };
        if record.sender.is_some() || record.is_driver {
            return false;
        }
        record.sender = Some(sender);
        record.call_address = call_address;
        match record.actor {
            Some(actor) => self.start_actor_on(actor, worker),
            None => {
                let lease_shape = record.lease.as_ref().map(|l| l.shape.clone());
                self.task_workers
                    .connected(record.pool_key(), worker, lease_shape.as_deref());
                if lease_shape.is_some() {
                    // It started for a queued task: it takes the queue's
                    // next one, or ends the lease if none is left.
                    self.end_lease_if_idle(worker);
                }
            }
        }
        true
    }

    /// Whether the head placed `worker` on `node` (what a node daemon may
    /// report about).
    pub(super) fn placed_on(&self, worker: WorkerId, node: &str) -> bool {
        self.workers.get(&worker).is_some_and(|w| w.node == node)
    }

    /// `worker`'s process ended, or the remote driver behind it left (which
    /// ends its job).
    pub(super) fn worker_exited(&mut self, worker: WorkerId, message: &str) {
        self.direct_caller_gone(worker);
        if let Some(driver) = self.drivers.remove(&worker) {
            self.end_job(driver);
        }
        self.remove_worker(worker, message)
    }

    /// Asks `worker`'s process to end. Its record stays until the exit is
    /// reported, which retries or fails its work with the exit's cause.
    pub(super) fn stop_worker(&mut self, worker: WorkerId) {
        let Some(record) = self.workers.get_mut(&worker) else {
            return;
        };
        record.stopping = true;
        if record.runs_tasks() {
            self.task_workers.not_available(&record.pool_key(), worker);
        }
        self.effects.push(record.stop(worker));
        self.refresh_pipeline(worker);
    }

    pub(super) fn remove_worker(&mut self, worker: WorkerId, message: &str) {
        let Some(record) = self.workers.remove(&worker) else {
            return;
        };
        self.refresh_pipeline(worker);
        if record.runs_tasks() {
            let connected = record.sender.is_some();
            let lease_shape = record.lease.as_ref().map(|l| l.shape.as_str());
            self.task_workers
                .removed(record.pool_key(), worker, connected, lease_shape);
        }
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
                    self.finish_cancelled(running);
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
        // Tasks sent ahead never started: they go back without using a retry.
        for ahead in assigned {
            match self.tasks.get(&ahead) {
                Some(task) if task.cancelled => self.finish_cancelled(ahead),
                Some(_) => requeue.push(ahead),
                None => {}
            }
        }
        for task in requeue.into_iter().rev() {
            if let Some(record) = self.tasks.get_mut(&task) {
                record.worker = None;
            }
            self.requeue_front(task);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use tokio::sync::mpsc::unbounded_channel;

    #[test]
    fn only_a_started_worker_connects_and_only_once() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
        state.submit_now(ids.task("f", cpus(1.0), Vec::new()));
        let worker = state.take_spawns()[0].0;
        // (worker saying hello, accepted)
        let table = [
            (WorkerId(worker.0 + 100), false),
            (worker, true),
            (worker, false),
        ];
        for (hello, accepted) in table {
            let (sender, _receiver) = unbounded_channel();
            assert_eq!(
                state.worker_connected(hello, sender, None),
                accepted,
                "{hello}"
            );
        }
    }

    /// A daemon may report only about the workers placed on its node: the
    /// check the head applies to `WorkerStarted/Exited/NotStarted`.
    #[test]
    fn a_worker_belongs_to_the_node_it_was_placed_on_only() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(0.0), 1 << 20);
        let _b = state.join("b", cpus(1.0));
        let _c = state.join("c", cpus(0.0));
        state.submit_now(ids.task("f", cpus(1.0), Vec::new()));
        let (worker, node) = state.take_spawns().remove(0);
        assert_eq!(node, "b");
        // (reporting node, may report)
        for (reporter, allowed) in [("c", false), (HEAD, false), ("b", true)] {
            assert_eq!(state.placed_on(worker, reporter), allowed, "{reporter}");
        }
        assert!(
            !state.placed_on(WorkerId(worker.0 + 100), "b"),
            "unknown worker"
        );
    }

    /// A node runs one task worker per CPU, and at least
    /// `MAX_TASK_WORKERS` for tasks that ask for less than a CPU:
    /// (node CPUs, CPUs per task, tasks, workers, tasks left waiting).
    #[test]
    fn a_node_runs_a_task_worker_per_cpu_and_at_least_max_task_workers() {
        let table = [
            (100.0, 1.0, 100, 100, 0),
            (40.0, 0.5, MAX_TASK_WORKERS + 5, MAX_TASK_WORKERS, 5),
        ];
        for (node_cpus, task_cpus, tasks, workers, waiting) in table {
            let ids = Ids::new();
            let mut state = NodeState::for_test(cpus(node_cpus), 1 << 20);
            for _ in 0..tasks {
                state.submit(ids.task("f", cpus(task_cpus), Vec::new()), JOB, None);
            }
            let mut inboxes = Vec::new();
            loop {
                state.schedule();
                let spawns = state.take_spawns();
                if spawns.is_empty() {
                    break;
                }
                for (worker, _) in spawns {
                    inboxes.push(state.connect(worker));
                }
            }
            let case = format!("{node_cpus} CPUs, tasks of {task_cpus}");
            assert_eq!(state.workers.len(), workers, "{case}");
            assert_eq!(
                state.queues.values().map(|q| q.tasks.len()).sum::<usize>(),
                waiting,
                "{case}: the rest wait for a worker to free"
            );
            let ran: usize = inboxes.iter_mut().map(|i| executed_ids(i).len()).sum();
            assert_eq!(ran, workers, "{case}");
        }
    }

    #[test]
    fn worker_ids_are_minted_by_the_state_in_order() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(2.0), 1 << 20);
        state.submit_now(ids.task("f", cpus(1.0), Vec::new()));
        state
            .create_actor(ids.actor(cpus(1.0), 0), JOB, None)
            .expect("created");
        state.schedule();
        let workers: Vec<WorkerId> = state.take_spawns().into_iter().map(|(w, _)| w).collect();
        assert_eq!(workers, vec![WorkerId(1), WorkerId(2)]);
    }

    /// The index of task workers follows each worker through starting,
    /// connecting, leases and removal, so a lease never looks at every
    /// worker: (event, idle workers of the key, leases starting for the
    /// shape, workers on node).
    #[test]
    fn the_task_worker_index_follows_each_worker() {
        let key = pool_key("n", &None, &[]);
        let other = pool_key("n", &None, &[0]);
        let (a, b, c, d) = (WorkerId(1), WorkerId(2), WorkerId(3), WorkerId(4));
        let shape = "1 CPU";
        let mut index = TaskWorkerIndex::default();
        type Step<'a> = (
            &'a str,
            Box<dyn Fn(&mut TaskWorkerIndex) + 'a>,
            usize,
            usize,
            usize,
        );
        let steps: Vec<Step> = vec![
            (
                "a starts unleased",
                Box::new(|i| i.started(key.clone(), a, None)),
                0,
                0,
                1,
            ),
            (
                "b starts for a lease (GPU 0)",
                Box::new(|i| i.started(other.clone(), b, Some(shape))),
                0,
                1,
                2,
            ),
            (
                "a lease claims a",
                Box::new(|i| assert_eq!(i.claim_starting(&key, shape), Some(a))),
                0,
                2,
                2,
            ),
            (
                "no other starting worker to claim",
                Box::new(|i| assert_eq!(i.claim_starting(&key, shape), None)),
                0,
                2,
                2,
            ),
            (
                "a connects under its lease: not idle",
                Box::new(|i| i.connected(key.clone(), a, Some(shape))),
                0,
                1,
                2,
            ),
            (
                "a's lease ends",
                Box::new(|i| i.now_idle(key.clone(), a)),
                1,
                1,
                2,
            ),
            (
                "c starts unleased, connects: idle",
                Box::new(|i| {
                    i.started(key.clone(), c, None);
                    i.connected(key.clone(), c, None);
                }),
                2,
                1,
                3,
            ),
            (
                "c is leased",
                Box::new(|i| assert_eq!(i.take_idle(&key), Some(c))),
                1,
                1,
                3,
            ),
            (
                "a exits idle",
                Box::new(|i| i.removed(key.clone(), a, true, None)),
                0,
                1,
                2,
            ),
            (
                "b exits before connecting, with its lease",
                Box::new(|i| i.removed(other.clone(), b, false, Some(shape))),
                0,
                0,
                1,
            ),
            (
                "d starts unleased and is told to stop: no lease claims it",
                Box::new(|i| {
                    i.started(key.clone(), d, None);
                    i.not_available(&key, d);
                    assert_eq!(i.claim_starting(&key, shape), None);
                }),
                0,
                0,
                2,
            ),
            (
                "c and d go",
                Box::new(|i| {
                    i.removed(key.clone(), c, true, Some(shape));
                    i.removed(key.clone(), d, false, None);
                }),
                0,
                0,
                0,
            ),
        ];
        for (event, apply, idle, leases_starting, on_node) in steps {
            apply(&mut index);
            assert_eq!(index.idle.get(&key).map_or(0, Vec::len), idle, "{event}");
            assert_eq!(index.leases_starting(shape), leases_starting, "{event}");
            assert_eq!(index.on_node("n"), on_node, "{event}");
        }
        assert!(
            index.idle.is_empty()
                && index.unleased_starting.is_empty()
                && index.leases_starting.is_empty()
                && index.per_node.is_empty()
        );
    }

    /// A lease that finds no idle worker claims one started ahead of
    /// demand before starting another; a worker that dies while starting
    /// gives its lease back, and the task it would have taken gets a new
    /// worker.
    #[test]
    fn a_lease_claims_a_starting_worker_and_one_dying_while_starting_gives_its_lease_back() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(2.0), 1 << 20);
        let warm = state.next_worker_id();
        state.add_worker(warm, HEAD, Vec::new(), None, None, None);
        assert_eq!(state.take_spawns().len(), 1, "the warm worker");
        let first = ids.task("f", cpus(1.0), Vec::new());
        let first_id = first.task_id;
        state.submit_now(first);
        assert!(state.take_spawns().is_empty(), "the warm worker is claimed");
        assert_eq!(state.free(HEAD, CPU), 1.0, "its lease holds a CPU");
        let second = ids.task("f", cpus(1.0), Vec::new());
        let second_id = second.task_id;
        state.submit_now(second);
        // The one worker the last step started, with the index checked.
        let started = |state: &mut NodeState, step: &str| {
            let spawned = state.take_spawns();
            assert_eq!(spawned.len(), 1, "{step}");
            state.task_workers.assert_matches_scan(&state.workers, step);
            spawned[0].0
        };
        let dying = started(&mut state, "a second worker starts at once");

        state.worker_exited(dying, "crashed while starting");
        state.schedule();
        let replacement = started(&mut state, "a replacement starts for the lease");
        assert_eq!(state.free(HEAD, CPU), 0.0);

        let mut warm_inbox = state.connect(warm);
        let mut inbox = state.connect(replacement);
        assert_eq!(executed_ids(&mut warm_inbox), vec![first_id]);
        assert_eq!(executed_ids(&mut inbox), vec![second_id]);
        assert!(state.queues.is_empty());
        state
            .task_workers
            .assert_matches_scan(&state.workers, "both run");
    }

    /// A worker whose process cannot be started fails the tasks waiting
    /// for it with the cause, and no other worker is started for them (one
    /// would fail the same way, over and over).
    #[test]
    fn a_worker_that_cannot_be_started_fails_its_tasks_instead_of_starting_another() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(2.0), 1 << 20);
        let outputs: Vec<crate::ids::ObjectId> = (0..3)
            .map(|_| {
                let spec = ids.task("f", cpus(1.0), Vec::new());
                let output = spec.return_id;
                state.submit_now(spec);
                output
            })
            .collect();
        let spawned = state.take_spawns();
        assert_eq!(spawned.len(), 2, "one per free CPU");
        let reason = ExecutableProblem::CannotStart {
            message: "Resource temporarily unavailable (os error 11)".into(),
        };
        let error = Error::ExecutableUnavailable {
            node: HEAD.into(),
            reason,
        };
        state.executable_unavailable(spawned[0].0, error);
        state.schedule();
        assert!(state.take_spawns().is_empty(), "no other worker starts");
        state
            .task_workers
            .assert_matches_scan(&state.workers, "one failed to start");
        let failed: Vec<String> = outputs
            .iter()
            .filter_map(|o| state.value(*o)?.err())
            .map(|e| e.to_string())
            .collect();
        assert_eq!(failed.len(), 2, "the tasks no starting worker takes fail");
        assert!(
            failed
                .iter()
                .all(|e| e.contains("os error 11") && e.contains(HEAD)),
            "{failed:?}"
        );
        assert_eq!(
            state.free(HEAD, CPU),
            1.0,
            "the other worker's lease holds one"
        );
        let mut inbox = state.connect(spawned[1].0);
        assert_eq!(executed_ids(&mut inbox).len(), 1, "the third task runs");
    }

    /// Through the state: a finished task's worker is leased again for the
    /// next task, a worker that died idle is never leased, and actors'
    /// workers are not task workers.
    #[test]
    fn leases_go_to_indexed_idle_workers_only() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(2.0), 1 << 20);
        let first = ids.task("f", cpus(1.0), Vec::new());
        let first_id = first.task_id;
        state.submit_now(first);
        let (worker, mut inbox) = state.start_one();
        assert_eq!(executed_ids(&mut inbox), vec![first_id]);
        state.finish(worker, first_id, Ok(inline(b"")));
        let key = state.workers[&worker].pool_key();
        assert_eq!(state.task_workers.idle[&key], vec![worker]);
        let second = ids.task("f", cpus(1.0), Vec::new());
        let second_id = second.task_id;
        state.submit_now(second);
        assert_eq!(
            executed_ids(&mut inbox),
            vec![second_id],
            "the idle worker again"
        );
        assert!(state.take_spawns().is_empty(), "no new worker");
        state.finish(worker, second_id, Ok(inline(b"")));

        state.worker_exited(worker, "killed");
        assert!(!state.task_workers.idle.contains_key(&key));
        assert_eq!(state.task_workers.on_node(HEAD), 0);
        state
            .create_actor(ids.actor(cpus(1.0), 0), JOB, None)
            .unwrap();
        state.submit_now(ids.task("f", cpus(1.0), Vec::new()));
        assert_eq!(
            state.take_spawns().len(),
            2,
            "an actor's worker and a task worker"
        );
        assert_eq!(
            state.task_workers.on_node(HEAD),
            1,
            "only the task worker counts"
        );
    }
}
