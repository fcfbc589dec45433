//! The worker pool (Ray's worker pool): worker processes for tasks and one per
//! actor, started on the node the scheduler chose (locally as children, on
//! other nodes by their daemon), registered when their stream says hello, and
//! removed when their process or stream ends, with their work retried or
//! failed.

use super::executables::Code;
use super::scheduler::Lease;
use super::{Effect, Node, NodeState};
use crate::error::Error;
use crate::ids::{ActorId, JobId, TaskId, WorkerId};
use crate::protocol::*;
use crate::worker::{describe_exit, kill_process};
use std::collections::VecDeque;
use tokio::sync::mpsc;

/// Most worker processes for stateless tasks.
pub(super) const MAX_TASK_WORKERS: usize = 64;

pub(super) struct WorkerRecord {
    pub(super) node: String,
    /// What it runs; tasks of other executables never go to it.
    pub(super) code: Code,
    /// A remote driver's connection: it submits work but never runs any.
    pub(super) is_driver: bool,
    pub(super) pid: Option<u32>,
    pub(super) sender: Option<mpsc::UnboundedSender<NodeToWorker>>,
    pub(super) gpu_ids: Vec<u32>,
    pub(super) actor: Option<ActorId>,
    pub(super) lease: Option<Lease>,
    pub(super) assigned: VecDeque<TaskId>,
    /// The job and name of the last task sent to it: whose driver its output
    /// goes to, even for lines read after the task finished.
    pub(super) last_task: Option<(JobId, String)>,
}

impl WorkerRecord {
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
    /// Starts `worker` on this node from the file at `executable`.
    pub(super) fn spawn_worker(&self, worker: WorkerId, gpu_ids: Vec<u32>, executable: &str) {
        let launch = crate::worker::WorkerLaunch {
            executable,
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
            Err(e) => {
                self.worker_failed_to_start(worker, format!("cannot start worker process: {e}"))
            }
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
                Err(e) => return self.worker_failed_to_start(worker, e.to_string()),
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

    pub(super) fn worker_failed_to_start(&self, worker: WorkerId, message: String) {
        tracing::error!("{message}");
        self.worker_exited(worker, message);
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
    ) -> bool {
        self.with_state(|state| state.worker_connected(worker, sender))
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
    ) {
        self.workers.insert(
            id,
            WorkerRecord {
                node: node.to_string(),
                code: code.clone(),
                is_driver: false,
                pid: None,
                sender: None,
                gpu_ids: gpu_ids.clone(),
                actor,
                lease: None,
                assigned: VecDeque::new(),
                last_task: None,
            },
        );
        self.effects.push(Effect::Spawn {
            worker: id,
            node: node.to_string(),
            gpu_ids,
            code,
        });
    }

    /// `worker`'s stream said hello: it can take work now, an actor's
    /// worker its constructor first. False for a worker the head did not
    /// start, or one already connected (a second hello is an impostor: the
    /// first stream keeps it).
    pub(super) fn worker_connected(
        &mut self,
        worker: WorkerId,
        sender: mpsc::UnboundedSender<NodeToWorker>,
    ) -> bool {
        let Some(record) = self.workers.get_mut(&worker) else {
            return false;
        };
        if record.sender.is_some() || record.is_driver {
            return false;
        }
        record.sender = Some(sender);
        if let Some(actor) = record.actor {
            self.start_actor_on(actor, worker);
        }
        true
    }

    /// `worker`'s process ended, or the remote driver behind it left (which
    /// ends its job).
    /// Whether the head placed `worker` on `node` (what a node daemon may
    /// report about).
    pub(super) fn placed_on(&self, worker: WorkerId, node: &str) -> bool {
        self.workers.get(&worker).is_some_and(|w| w.node == node)
    }

    pub(super) fn worker_exited(&mut self, worker: WorkerId, message: &str) {
        if let Some(driver) = self.drivers.remove(&worker) {
            self.end_job(driver);
        }
        self.remove_worker(worker, message)
    }

    pub(super) fn remove_worker(&mut self, worker: WorkerId, message: &str) {
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
            assert_eq!(state.worker_connected(hello, sender), accepted, "{hello}");
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

    #[test]
    fn a_node_runs_at_most_max_task_workers_for_tasks() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(100.0), 1 << 20);
        let extra = 5;
        for _ in 0..MAX_TASK_WORKERS + extra {
            state.submit(ids.task("f", cpus(1.0), Vec::new()), JOB, None);
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
        assert_eq!(state.workers.len(), MAX_TASK_WORKERS);
        assert_eq!(
            state.queues.values().map(|q| q.tasks.len()).sum::<usize>(),
            extra,
            "the rest wait for a worker to free"
        );
        let ran: usize = inboxes.iter_mut().map(|i| executed_ids(i).len()).sum();
        assert_eq!(ran, MAX_TASK_WORKERS);
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
}
