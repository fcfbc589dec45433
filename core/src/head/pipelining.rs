//! Sending a task ahead to a leased worker, and taking it back (Ray's
//! pipelining of tasks onto a leased worker, `max_tasks_in_flight_per_worker`).
//!
//! When a queue's head finds no free resources, it may go to a worker already
//! leased for the same shape and job, behind the task that worker runs: the
//! worker starts it the moment it sends the result, instead of one round trip
//! through the head later. A worker holds at most [`PIPELINE_DEPTH`] tasks.
//!
//! A task sent ahead is only promised to that worker, not started, so it can
//! wait behind a long task while resources free up elsewhere. The head then
//! *withdraws* it: the worker gives it back if it has not started it
//! (`Withdrawn`, and the task goes back to the front of its queue) or
//! otherwise runs it and reports it as usual — never both, so a task runs at
//! most once. The head withdraws a task sent ahead when its shape's queue is
//! empty and resources for it are free, when its worker blocks in `get` (the
//! task may be what it waits for) and when it is cancelled.
//!
//! A task goes ahead only when resources are short, so a withdrawn task is
//! not sent straight back, and never one that a worker starting under a
//! lease for its queue will take (that worker holds the resources already).
//! And only while nothing else waits for resources (another shape's queue,
//! an actor, a placement group): a worker with a task ahead never ends its
//! lease, so under contention every task ahead is withdrawn and leases end
//! after the task they run, as without pipelining.
//!
//! Two indexes per shape (leased workers with room; workers holding a task
//! ahead that is not being withdrawn) keep both decisions independent of how
//! many workers there are; [`NodeState::refresh_pipeline`] recomputes a
//! worker's entries after every change of its lease or its tasks.

use super::NodeState;
use crate::ids::{TaskId, WorkerId};
use crate::protocol::NodeToWorker;
use rustc_hash::FxHashMap;
use std::collections::BTreeSet;

/// Tasks a leased worker holds at once: the one it runs and those sent
/// ahead. Each one more hides another round trip through the head for a
/// stream of short tasks (single client tasks async on two CPUs, embedded:
/// about 30k/s at 2, 45k/s at 4, 59k/s at 8); the cost is how many tasks a
/// long one can hold up until a worker frees and withdraws them.
pub(super) const PIPELINE_DEPTH: usize = 4;

/// Where a leased worker stands for pipelining.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Slot {
    /// The key of the shape queue its lease serves.
    shape: String,
    /// It may take a task ahead.
    room: bool,
    /// It holds a task ahead that may be withdrawn.
    ahead: bool,
}

#[derive(Default)]
pub(super) struct PipelineIndex {
    room: FxHashMap<String, BTreeSet<WorkerId>>,
    ahead: FxHashMap<String, BTreeSet<WorkerId>>,
    /// The shape each listed worker is listed under.
    listed: FxHashMap<WorkerId, String>,
}

fn remove(sets: &mut FxHashMap<String, BTreeSet<WorkerId>>, shape: &str, worker: WorkerId) {
    if let Some(set) = sets.get_mut(shape) {
        set.remove(&worker);
        if set.is_empty() {
            sets.remove(shape);
        }
    }
}

impl PipelineIndex {
    fn set(&mut self, worker: WorkerId, slot: Option<Slot>) {
        if let Some(shape) = self.listed.remove(&worker) {
            remove(&mut self.room, &shape, worker);
            remove(&mut self.ahead, &shape, worker);
        }
        let Some(slot) = slot.filter(|s| s.room || s.ahead) else {
            return;
        };
        if slot.room {
            self.room
                .entry(slot.shape.clone())
                .or_default()
                .insert(worker);
        }
        if slot.ahead {
            self.ahead
                .entry(slot.shape.clone())
                .or_default()
                .insert(worker);
        }
        self.listed.insert(worker, slot.shape);
    }

    fn with_room(&self, shape: &str) -> impl Iterator<Item = WorkerId> + '_ {
        self.room.get(shape).into_iter().flatten().copied()
    }

    /// Panics unless the index lists exactly the workers `slots` says.
    #[cfg(test)]
    pub(super) fn assert_matches_scan(
        &self,
        slots: impl Iterator<Item = (WorkerId, Option<Slot>)>,
        step: &str,
    ) {
        let mut expected = PipelineIndex::default();
        slots.for_each(|(worker, slot)| expected.set(worker, slot));
        assert_eq!(self.room, expected.room, "workers with room after {step}");
        assert_eq!(
            self.ahead, expected.ahead,
            "workers with a task ahead after {step}"
        );
        assert_eq!(self.listed, expected.listed, "listed workers after {step}");
    }
}

impl NodeState {
    /// `worker`'s standing, from its lease and tasks.
    pub(super) fn pipeline_slot(&self, worker: WorkerId) -> Option<Slot> {
        let w = self.workers.get(&worker)?;
        let lease = w.lease.as_ref()?;
        if lease.lent_out || w.stopping {
            return None;
        }
        let held = w.assigned.len();
        Some(Slot {
            shape: lease.shape.clone(),
            room: (1..PIPELINE_DEPTH).contains(&held),
            ahead: self.last_withdrawable(worker).is_some(),
        })
    }

    /// The last task ahead on `worker` not already being withdrawn.
    fn last_withdrawable(&self, worker: WorkerId) -> Option<TaskId> {
        let ahead = self.workers.get(&worker)?.assigned.iter().skip(1).rev();
        ahead
            .copied()
            .find(|task| self.tasks.get(task).is_some_and(|t| !t.withdrawing))
    }

    /// Lists `worker` as it now stands; called after each change of its
    /// lease, its tasks or their withdrawal.
    pub(super) fn refresh_pipeline(&mut self, worker: WorkerId) {
        let slot = self.pipeline_slot(worker);
        self.pipeline.set(worker, slot);
    }

    /// A worker leased for `shape` that `task_id` may go ahead to: only
    /// behind a task of the same job (a worker's output goes to the job of
    /// its latest task).
    fn worker_to_send_ahead(&self, shape: &str, task_id: TaskId) -> Option<WorkerId> {
        let task = self.tasks.get(&task_id)?;
        self.pipeline.with_room(shape).find(|worker| {
            let running = self.workers[worker].assigned.front();
            running.and_then(|t| self.tasks.get(t)).map(|t| t.job) == Some(task.job)
        })
    }

    /// Asks `worker` to give `task_id` back unless it has started it.
    pub(super) fn withdraw(&mut self, worker: WorkerId, task_id: TaskId) {
        let Some(record) = self.tasks.get_mut(&task_id) else {
            return;
        };
        if record.withdrawing || record.worker != Some(worker) {
            return;
        }
        record.withdrawing = true;
        if let Some(sender) = self.workers.get(&worker).and_then(|w| w.sender.as_ref()) {
            // A closed stream is reported as the worker's end, which settles
            // the task.
            let _ = sender.send(NodeToWorker::Withdraw { task_id });
        }
        self.refresh_pipeline(worker);
    }

    /// Whether more than one shape wants the resources leased workers hold
    /// (queues in `blocked`, shapes with tasks ahead), or an actor or a
    /// placement group (`groups_waiting`) waits for resources: then no task
    /// goes ahead.
    pub(super) fn resources_contended(&self, blocked: &[String], groups_waiting: bool) -> bool {
        if blocked.is_empty() && self.pipeline.ahead.is_empty() {
            return false;
        }
        let mut wanting: BTreeSet<&str> = blocked.iter().map(String::as_str).collect();
        wanting.extend(self.pipeline.ahead.keys().map(String::as_str));
        wanting.len() > 1 || !self.actors_waiting.is_empty() || groups_waiting
    }

    /// Sends tasks from the head of `shape`'s queue ahead to leased workers
    /// while one has room, if resources for them are short (the queue may
    /// instead wait for a worker that is starting).
    pub(super) fn send_ahead(&mut self, shape: &str) {
        let short = self
            .queues
            .get(shape)
            .is_some_and(|q| !self.pool.can_acquire(&q.request, &q.strategy));
        if !short {
            return;
        }
        while let Some(&task_id) = self
            .queue_beyond_starting_workers(shape)
            .and_then(|q| q.tasks.front())
        {
            let Some(worker) = self.worker_to_send_ahead(shape, task_id) else {
                return;
            };
            self.queues.get_mut(shape).map(|q| q.tasks.pop_front());
            self.assign(worker, task_id);
            self.refresh_pipeline(worker);
        }
    }

    /// Under contention, withdraws every task ahead; otherwise one of each
    /// shape whose queue is empty while resources for it are free (a free
    /// worker can start it now).
    pub(super) fn withdraw_tasks_ahead(&mut self, contended: bool) {
        if self.pipeline.ahead.is_empty() {
            return;
        }
        if contended {
            let holding: Vec<WorkerId> = self.pipeline.ahead.values().flatten().copied().collect();
            for worker in holding {
                self.withdraw_all_ahead(worker);
            }
            return;
        }
        let candidates: Vec<(WorkerId, TaskId)> = (self.pipeline.ahead.iter())
            .filter(|(shape, _)| !self.queues.contains_key(*shape))
            .filter_map(|(_, workers)| {
                let worker = *workers.first()?;
                Some((worker, self.last_withdrawable(worker)?))
            })
            .filter(|(_, task)| {
                let spec = &self.tasks[task].spec;
                self.pool.can_acquire(&spec.resources, &spec.strategy)
            })
            .collect();
        for (worker, task) in candidates {
            self.withdraw(worker, task);
        }
    }

    /// Withdraws every task ahead on `worker`, last first: each goes back to
    /// the front of its queue as it is given back, so they keep their order.
    pub(super) fn withdraw_all_ahead(&mut self, worker: WorkerId) {
        let Some(w) = self.workers.get(&worker) else {
            return;
        };
        let ahead: Vec<TaskId> = w.assigned.iter().skip(1).rev().copied().collect();
        for task in ahead {
            self.withdraw(worker, task);
        }
    }

    /// `worker` gave `task_id` back unstarted: it goes to the front of its
    /// queue, or ends as cancelled if that is why it was withdrawn.
    pub(super) fn task_withdrawn(&mut self, worker: WorkerId, task_id: TaskId) {
        if let Some(w) = self.workers.get_mut(&worker) {
            w.assigned.retain(|t| *t != task_id);
        }
        let owned = (self.tasks.get_mut(&task_id)).filter(|r| r.worker == Some(worker));
        if let Some(record) = owned {
            record.worker = None;
            if record.cancelled {
                self.finish_cancelled(task_id);
            } else {
                // It counts as an attempt only when it runs.
                self.task_events
                    .update(task_id, |row| row.attempts = row.attempts.saturating_sub(1));
                self.requeue_front(task_id);
            }
        }
        self.end_lease_if_idle(worker);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::protocol::TaskState;
    use crate::resources::CPU;
    use tokio::sync::mpsc::UnboundedReceiver;

    /// A head with `cpus` CPUs whose workers have started, each holding the
    /// tasks `count` 1-CPU tasks were spread over.
    struct Busy {
        state: NodeState,
        ids: Ids,
        tasks: Vec<TaskId>,
        inboxes: Vec<(WorkerId, UnboundedReceiver<NodeToWorker>)>,
    }

    fn busy(cpus_total: f64, count: usize) -> Busy {
        let mut state = NodeState::for_test(cpus(cpus_total), 1 << 20);
        let ids = Ids::new();
        let tasks: Vec<TaskId> = (0..count)
            .map(|_| {
                let spec = ids.task("f", cpus(1.0), Vec::new());
                let id = spec.task_id;
                state.submit_now(spec);
                id
            })
            .collect();
        let mut inboxes = Vec::new();
        // Connect every worker started, in order, until none is asked for.
        loop {
            let spawned = state.take_spawns();
            if spawned.is_empty() {
                break;
            }
            for (worker, _) in spawned {
                inboxes.push((worker, state.connect(worker)));
            }
        }
        Busy {
            state,
            ids,
            tasks,
            inboxes,
        }
    }

    impl Busy {
        fn held(&self, worker: WorkerId) -> Vec<TaskId> {
            self.state.workers[&worker]
                .assigned
                .iter()
                .copied()
                .collect()
        }

        fn worker_of(&self, task: usize) -> WorkerId {
            self.state.tasks[&self.tasks[task]].worker.expect("sent")
        }

        /// The worker of the last task: the second worker to connect, while
        /// the first holds the tasks sent ahead.
        fn worker_of_last(&self) -> WorkerId {
            self.worker_of(self.tasks.len() - 1)
        }

        fn withdrawals(&mut self, worker: WorkerId) -> Vec<TaskId> {
            let inbox = &mut self
                .inboxes
                .iter_mut()
                .find(|(w, _)| *w == worker)
                .unwrap()
                .1;
            std::iter::from_fn(|| inbox.try_recv().ok())
                .filter_map(|m| match m {
                    NodeToWorker::Withdraw { task_id } => Some(task_id),
                    _ => None,
                })
                .collect()
        }

        fn check(&self, step: &str) {
            let slots = self
                .state
                .workers
                .keys()
                .map(|w| (*w, self.state.pipeline_slot(*w)));
            self.state.pipeline.assert_matches_scan(slots, step);
        }
    }

    #[test]
    fn tasks_beyond_the_resources_go_ahead_up_to_the_depth_of_each_worker() {
        let busy = busy(2.0, 2 * PIPELINE_DEPTH + 1);
        assert_eq!(busy.inboxes.len(), 2, "one worker per CPU");
        for (worker, _) in &busy.inboxes {
            assert_eq!(busy.held(*worker).len(), PIPELINE_DEPTH);
        }
        // The last waits in the queue: every worker is full.
        let last = *busy.tasks.last().unwrap();
        assert!(busy.state.tasks[&last].worker.is_none());
        assert_eq!(busy.state.free(HEAD, CPU), 0.0);
        busy.check("more tasks than two CPUs' workers hold");
    }

    #[test]
    fn a_finished_task_makes_room_for_the_next_without_ending_the_lease() {
        let mut busy = busy(2.0, 2 * PIPELINE_DEPTH + 1);
        let worker = busy.worker_of(0);
        busy.state.finish(worker, busy.tasks[0], Ok(inline(b"")));
        let held = busy.held(worker);
        assert_eq!(
            held.len(),
            PIPELINE_DEPTH,
            "the next one runs, the queued one goes ahead"
        );
        assert_eq!(held.last(), busy.tasks.last());
        assert_eq!(busy.state.free(HEAD, CPU), 0.0, "the lease was kept");
        busy.check("after a finish");
    }

    #[test]
    fn a_task_ahead_is_submitted_to_its_worker_and_runs_after_the_result_before_it() {
        let mut busy = busy(1.0, 2);
        let worker = busy.worker_of(0);
        let row = |busy: &Busy, task: TaskId| {
            let row = busy
                .state
                .task_events
                .rows()
                .into_iter()
                .rfind(|r| r.task_id == task)
                .expect("a row");
            (row.state, row.started_at_ms.is_some())
        };
        assert_eq!(row(&busy, busy.tasks[0]), (TaskState::Running, true));
        assert_eq!(
            row(&busy, busy.tasks[1]),
            (TaskState::SubmittedToWorker, false)
        );
        busy.state.finish(worker, busy.tasks[0], Ok(inline(b"")));
        assert_eq!(row(&busy, busy.tasks[1]), (TaskState::Running, true));
    }

    #[test]
    fn a_task_ahead_is_withdrawn_when_a_worker_frees_and_runs_there() {
        let mut busy = busy(2.0, 4);
        let (first, second) = (busy.worker_of(0), busy.worker_of_last());
        assert_ne!(first, second);
        assert!(busy.held(first).len() > 1, "tasks went ahead to the first");
        let ahead_of_first = *busy.held(first).last().unwrap();
        // The second worker finishes all its tasks: its lease ends and a
        // CPU is free while the first still runs its long task.
        for task in busy.held(second) {
            busy.state.finish(second, task, Ok(inline(b"")));
        }
        assert_eq!(busy.withdrawals(first), [ahead_of_first]);
        busy.check("withdrawal asked");
        busy.state.task_withdrawn(first, ahead_of_first);
        busy.state.schedule();
        assert_eq!(busy.state.tasks[&ahead_of_first].worker, Some(second));
        assert!(!busy.held(first).contains(&ahead_of_first));
        assert!(busy.withdrawals(second).is_empty());
        busy.check("withdrawn and run on the free worker");
    }

    #[test]
    fn a_task_that_started_before_its_withdrawal_finishes_once() {
        let mut busy = busy(2.0, 4);
        let (first, second) = (busy.worker_of(0), busy.worker_of_last());
        assert_ne!(first, second);
        let ahead = *busy.held(first).last().unwrap();
        for task in busy.held(second) {
            busy.state.finish(second, task, Ok(inline(b"")));
        }
        assert_eq!(busy.withdrawals(first), [ahead]);
        // The worker had started it: its results come instead of `Withdrawn`.
        for task in busy.held(first) {
            busy.state.finish(first, task, Ok(inline(b"")));
        }
        assert!(busy.state.tasks.is_empty(), "every task ended once");
        assert_eq!(busy.state.free(HEAD, CPU), 2.0);
        busy.check("all ended");
    }

    #[test]
    fn blocking_in_get_withdraws_the_task_ahead() {
        let mut busy = busy(2.0, 4);
        let worker = busy.worker_of(0);
        let ahead: Vec<TaskId> = busy.held(worker)[1..].to_vec();
        assert!(!ahead.is_empty());
        busy.state.lend_out(worker, true);
        busy.state.schedule();
        let mut asked = busy.withdrawals(worker);
        asked.reverse();
        assert_eq!(asked, ahead, "all of them, last first");
        busy.check("lent out");
        for task in ahead.iter().rev() {
            busy.state.task_withdrawn(worker, *task);
        }
        busy.state.schedule();
        // The lent CPU starts a worker for one of them; the others go
        // ahead to the worker that is not blocked.
        let spawned = busy.state.take_spawns();
        assert_eq!(spawned.len(), 1);
        let (new_worker, _) = spawned[0];
        let inbox = busy.state.connect(new_worker);
        busy.inboxes.push((new_worker, inbox));
        assert_eq!(busy.held(new_worker).len(), 1);
        let mut rerun: Vec<TaskId> = [busy.worker_of_last(), new_worker]
            .iter()
            .flat_map(|w| busy.held(*w))
            .filter(|t| ahead.contains(t))
            .collect();
        rerun.sort();
        assert_eq!(rerun, ahead, "every task withdrawn runs elsewhere");
        assert_eq!(
            busy.held(worker).len(),
            1,
            "the blocked worker holds its own"
        );
        busy.check("run elsewhere");
    }

    #[test]
    fn cancelling_a_task_ahead_withdraws_it_and_ends_it_cancelled() {
        let mut busy = busy(2.0, 3);
        let worker = busy.worker_of(0);
        let ahead = busy.held(worker)[1];
        let output = busy.state.tasks[&ahead].spec.return_id;
        busy.state.cancel(output).expect("cancelled");
        assert_eq!(busy.withdrawals(worker), [ahead]);
        assert!(
            !busy.state.workers[&worker].stopping,
            "the running task goes on"
        );
        busy.state.task_withdrawn(worker, ahead);
        busy.state.schedule();
        assert_eq!(error_kind(&busy.state.value(output)), "Cancelled");
        busy.check("cancelled");
    }

    #[test]
    fn a_dead_worker_s_task_ahead_is_requeued_without_using_a_retry() {
        let mut busy = busy(2.0, 3);
        let worker = busy.worker_of(0);
        let ahead = busy.held(worker)[1];
        let retries = busy.state.tasks[&ahead].retries_left;
        busy.state.worker_exited(worker, "killed by signal 9");
        busy.state.schedule();
        let record = &busy.state.tasks[&ahead];
        assert_eq!(record.retries_left, retries);
        assert_ne!(record.worker, Some(worker));
        busy.check("worker died");
    }

    #[test]
    fn another_shape_waiting_withdraws_the_tasks_ahead_and_none_go_ahead() {
        let mut busy = busy(2.0, 2 * PIPELINE_DEPTH);
        let holding: Vec<WorkerId> = busy.inboxes.iter().map(|(w, _)| *w).collect();
        let wide = busy.ids.task("wide", cpus(2.0), Vec::new());
        let wide_task = wide.task_id;
        busy.state.submit_now(wide);
        for worker in &holding {
            let ahead = busy.held(*worker)[1..].to_vec();
            let mut asked = busy.withdrawals(*worker);
            asked.reverse();
            assert_eq!(asked, ahead, "{worker} gives back what it holds ahead");
            for task in ahead.iter().rev() {
                busy.state.task_withdrawn(*worker, *task);
            }
        }
        busy.state.schedule();
        busy.check("withdrawn under contention");
        for worker in &holding {
            assert_eq!(busy.held(*worker).len(), 1, "nothing goes ahead again");
        }
        // Both leases end with the tasks they run; one of the queues gets
        // the CPUs.
        for worker in &holding {
            let running = busy.held(*worker)[0];
            busy.state.task_finished(*worker, running, Ok(inline(b"")));
        }
        busy.state.schedule();
        let placed = busy.state.tasks[&wide_task].worker.is_some()
            || holding.iter().any(|w| busy.held(*w).len() == 1);
        assert!(placed, "the freed CPUs went to a queue");
        busy.check("leases ended");
    }

    #[test]
    fn a_running_worker_never_gets_a_task_of_another_job() {
        let mut busy = busy(1.0, 1);
        let worker = busy.worker_of(0);
        let spec = busy.ids.task("f", cpus(1.0), Vec::new());
        let theirs = spec.task_id;
        busy.state.submit(spec, crate::ids::JobId(9), None);
        busy.state.schedule();
        assert_eq!(busy.held(worker), [busy.tasks[0]]);
        assert!(busy.state.tasks[&theirs].worker.is_none());
        busy.check("another job's task waits");
    }
}
