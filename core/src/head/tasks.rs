//! Task lifecycle (Ray's task manager and dependency manager): a submitted
//! task waits for its ref arguments, is queued for a worker, and finishes with
//! a value or an error; failed tasks are retried within `max_retries`, and
//! `cancel` removes a task wherever it is (queued, waiting or running; an
//! actor call only while it waits, as Ray's).
//!
//! Over 600 lines only with its unit tests (the code is under 400).

use super::actors::ActorStatus;
use super::executables::Code;
use super::object_directory::ObjectEntry;
use super::task_events::now_ms;
use super::NodeState;
use crate::error::{Error, Result};
use crate::ids::{ActorId, JobId, ObjectId, TaskId, WorkerId};
use crate::protocol::*;
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum TaskKind {
    Stateless,
    ActorCall(ActorId),
    ActorCreate(ActorId),
}

pub(super) struct TaskRecord {
    pub(super) spec: TaskSpec,
    pub(super) job: JobId,
    pub(super) kind: TaskKind,
    pub(super) retries_left: u32,
    pub(super) missing_deps: usize,
    pub(super) worker: Option<WorkerId>,
    pub(super) cancelled: bool,
    /// Sent ahead to `worker` and asked back (`pipelining.rs`).
    pub(super) withdrawing: bool,
    /// The submitter's executable, which a stateless task runs.
    pub(super) code: Code,
    /// An actor call its caller sends straight to the actor's worker
    /// (`direct_calls.rs`): its result comes from that caller.
    pub(super) direct_caller: Option<WorkerId>,
}

impl TaskRecord {
    /// A task not yet on any worker.
    pub(super) fn new(
        spec: TaskSpec,
        job: JobId,
        kind: TaskKind,
        retries_left: u32,
        code: Code,
    ) -> TaskRecord {
        TaskRecord {
            spec,
            job,
            kind,
            retries_left,
            missing_deps: 0,
            worker: None,
            cancelled: false,
            withdrawing: false,
            code,
            direct_caller: None,
        }
    }
}

impl NodeState {
    /// A task submitted for `job` by a process running `code`.
    pub(super) fn submit(&mut self, spec: TaskSpec, job: JobId, code: Code) {
        self.record_submission(&spec);
        let kind = match spec.actor {
            Some(actor) => TaskKind::ActorCall(actor),
            None => TaskKind::Stateless,
        };
        if kind == TaskKind::Stateless && !self.pool.feasible(&spec.resources, &spec.strategy) {
            let error = Error::Infeasible {
                what: spec.invocation.display_name(),
                requested: spec.resources.to_string(),
                available: self.pool.largest_node(),
            };
            self.release_args(&spec.args);
            let outcome = Err(error);
            self.record_end(spec.task_id, &outcome);
            return self.complete(spec.return_id, outcome);
        }
        let task_id = spec.task_id;
        let retries_left = match kind {
            TaskKind::ActorCall(actor) => self.max_task_retries(actor),
            _ => spec.max_retries,
        };
        self.tasks.insert(
            task_id,
            TaskRecord::new(spec, job, kind, retries_left, code),
        );
        self.track_dependencies(task_id);
    }

    /// A submitted task's row in the task events and its return object,
    /// counted once for the submitter's reference.
    pub(super) fn record_submission(&mut self, spec: &TaskSpec) {
        self.task_events.submitted(|| TaskRow {
            task_id: spec.task_id,
            name: spec.invocation.display_name(),
            task_type: match spec.actor {
                Some(_) => TaskType::ActorTask,
                None => TaskType::NormalTask,
            },
            state: TaskState::PendingArgsAvail,
            actor_id: spec.actor,
            node_id: None,
            worker_id: None,
            worker_pid: None,
            required_resources: spec.resources.clone(),
            attempts: 0,
            submitted_at_ms: now_ms(),
            started_at_ms: None,
            finished_at_ms: None,
            error: None,
        });
        self.objects.insert(
            spec.return_id,
            ObjectEntry {
                value: None,
                refs: 1,
                producer: Some(spec.task_id),
            },
        );
    }

    /// How often a call to `actor` is retried when its worker dies.
    pub(super) fn max_task_retries(&self, actor: ActorId) -> u32 {
        self.actors
            .get(&actor)
            .map_or(0, |a| a.spec.max_task_retries)
    }

    /// Counts the task's ref arguments that are not ready yet; the task moves on
    /// when the count reaches zero.
    pub(super) fn track_dependencies(&mut self, task_id: TaskId) {
        let refs: Vec<ObjectId> = self.tasks[&task_id]
            .spec
            .args
            .iter()
            .filter_map(|a| match a {
                TaskArg::Ref(id) => Some(*id),
                TaskArg::Value(_) => None,
            })
            .collect();
        let mut missing = 0;
        for id in refs {
            match self.objects.get(&id) {
                Some(entry) if entry.value.is_none() => {
                    missing += 1;
                    self.waiting_on.entry(id).or_default().push(task_id);
                }
                Some(_) => {}
                None => {
                    let lost = Error::ObjectLost {
                        id: id.to_string(),
                        message: "argument was freed before the task ran".into(),
                    };
                    return self.finish_task(task_id, Err(lost));
                }
            }
        }
        self.tasks
            .get_mut(&task_id)
            .expect("task just inserted")
            .missing_deps = missing;
        if missing == 0 {
            self.dependencies_ready(task_id);
        }
    }

    pub(super) fn dependencies_ready(&mut self, task_id: TaskId) {
        let record = &self.tasks[&task_id];
        // A failed argument fails the task without running it, as in Ray.
        let failed_arg = record.spec.args.iter().find_map(|a| match a {
            TaskArg::Ref(id) => match self.objects.get(id).and_then(|e| e.value.as_deref()) {
                Some(Err(e)) => Some(e.clone()),
                _ => None,
            },
            TaskArg::Value(_) => None,
        });
        if let Some(error) = failed_arg {
            return self.finish_task(task_id, Err(error));
        }
        self.task_events
            .update(task_id, |row| row.state = TaskState::PendingNodeAssignment);
        match record.kind {
            TaskKind::Stateless => self.queue_for(task_id).push_back(task_id),
            TaskKind::ActorCall(actor) => match self.actors.get_mut(&actor) {
                Some(record) => {
                    record.pending.push_back(task_id);
                    self.note_pending_calls(actor);
                }
                None => {
                    let error = match self.dead_actors.get(&actor) {
                        Some(dead) => dead.cause.clone(),
                        None => Error::ActorDied {
                            actor: actor.to_string(),
                            message:
                                "no such actor (or it died long ago and its record was dropped)"
                                    .into(),
                        },
                    };
                    self.finish_task(task_id, Err(error));
                }
            },
            TaskKind::ActorCreate(_) => {}
        }
    }

    /// Records a task's final outcome and drops the references it held.
    pub(super) fn finish_task(&mut self, task_id: TaskId, outcome: Result<ObjectBlob>) {
        let Some(record) = self.tasks.remove(&task_id) else {
            return;
        };
        if let Some(caller) = record.direct_caller {
            self.forget_direct_call(caller, task_id);
        }
        self.release_args(&record.spec.args);
        self.record_end(task_id, &outcome);
        self.complete(record.spec.return_id, outcome);
    }

    /// A task's final state in the task events.
    fn record_end(&mut self, task_id: TaskId, outcome: &Result<ObjectBlob>) {
        self.task_events.update(task_id, |row| {
            row.finished_at_ms = Some(now_ms());
            match outcome {
                Ok(_) => row.state = TaskState::Finished,
                Err(error) => {
                    row.state = TaskState::Failed;
                    row.error = Some(error.to_string());
                }
            }
        });
    }

    /// Drops the references a task's or actor's arguments held.
    pub(super) fn release_args(&mut self, args: &[TaskArg]) {
        for arg in args {
            match arg {
                TaskArg::Ref(id) => self.release(*id),
                TaskArg::Value(blob) => self.free_blob(blob),
            }
        }
    }

    pub(super) fn task_finished(
        &mut self,
        worker: WorkerId,
        task_id: TaskId,
        outcome: Result<ObjectBlob>,
    ) {
        if let Some(w) = self.workers.get_mut(&worker) {
            remove_in_order(&mut w.assigned, task_id);
        }
        self.next_task_started(worker);
        let Some(record) = self.tasks.get_mut(&task_id) else {
            // The task already ended (cancelled, failed over): the worker is
            // free all the same.
            self.end_lease_if_idle(worker);
            return;
        };
        if record.kind == TaskKind::Stateless && record.worker != Some(worker) {
            // A stale report for a task requeued since and owned by another
            // worker (or none): only this worker's lease ends.
            self.end_lease_if_idle(worker);
            return;
        }
        match record.kind {
            TaskKind::Stateless => {
                let retry = record.spec.retry_exceptions
                    && record.retries_left > 0
                    && !record.cancelled
                    && outcome.is_err();
                if retry {
                    record.retries_left -= 1;
                    record.worker = None;
                    self.requeue_front(task_id);
                } else {
                    self.finish_task(task_id, outcome);
                }
                self.end_lease_if_idle(worker);
            }
            TaskKind::ActorCall(actor) => {
                if let Some(a) = self.actors.get_mut(&actor) {
                    remove_in_order(&mut a.inflight, task_id);
                }
                self.finish_task(task_id, outcome);
            }
            TaskKind::ActorCreate(actor) => {
                self.tasks.remove(&task_id);
                match outcome {
                    Ok(_) => {
                        if let Some(a) = self.actors.get_mut(&actor) {
                            a.status = ActorStatus::Alive;
                            self.note_pending_calls(actor);
                            // Callers waiting for its route get it now.
                            self.ready_events += 1;
                        }
                    }
                    Err(error) => {
                        let message = format!("its constructor failed: {error}");
                        self.actor_dead(actor, message);
                        self.stop_worker(worker);
                    }
                }
            }
        }
    }

    pub(super) fn cancel(&mut self, id: ObjectId) -> Result<()> {
        let Some(task_id) = self.objects.get(&id).and_then(|e| e.producer) else {
            return Ok(());
        };
        let Some(record) = self.tasks.get_mut(&task_id) else {
            return Ok(());
        };
        let kind = record.kind;
        match (record.worker, kind) {
            // A call its caller holds until it knows where the actor lives
            // is not the head's to take back (only its own caller's cancel
            // does, `cancel_from`): it is marked, and cancelled on the actor's
            // worker as soon as the head learns the caller sent it there
            // (`direct_call_routed`), or ended if the caller hands it over.
            (None, _) if record.direct_caller.is_some() => {
                record.cancelled = true;
                return Ok(());
            }
            (Some(worker), TaskKind::ActorCall(_)) => {
                record.cancelled = true;
                self.cancel_on_worker(worker, task_id);
                return Ok(());
            }
            (Some(worker), TaskKind::Stateless) => {
                let running =
                    self.workers.get(&worker).and_then(|w| w.assigned.front()) == Some(&task_id);
                record.cancelled = true;
                if running {
                    self.stop_worker(worker);
                } else {
                    // Sent ahead: it ends as cancelled when the worker gives
                    // it back, or with its result if it had started.
                    self.withdraw(worker, task_id);
                }
                return Ok(());
            }
            (Some(_), _) => return Ok(()),
            (None, _) => {}
        }
        for queue in self.queues.values_mut() {
            queue.tasks.retain(|t| *t != task_id);
        }
        if let TaskKind::ActorCall(actor) = kind {
            if let Some(actor) = self.actors.get_mut(&actor) {
                actor.pending.retain(|t| *t != task_id);
            }
        }
        for waiting in self.waiting_on.values_mut() {
            waiting.retain(|t| *t != task_id);
        }
        self.finish_cancelled(task_id);
        Ok(())
    }

    /// Asks the actor's `worker` to drop call `task_id` (sent there by the
    /// head or by its caller): dropped if it has not started, ending with
    /// `Cancelled` where its result would go, or refused if it has not
    /// arrived yet; a running call runs to its end, and one lost with its
    /// worker is not retried.
    pub(super) fn cancel_on_worker(&self, worker: WorkerId, task_id: TaskId) {
        let sender = self.workers.get(&worker).and_then(|w| w.sender.as_ref());
        if let Some(sender) = sender {
            let _ = sender.send(NodeToWorker::CancelCall { task_id });
        }
    }

    /// Ends `task_id` with `Error::Cancelled` naming its function.
    pub(super) fn finish_cancelled(&mut self, task_id: TaskId) {
        if let Some(record) = self.tasks.get(&task_id) {
            let function = record.spec.invocation.display_name();
            self.finish_task(task_id, Err(Error::Cancelled { function }));
        }
    }
}

/// Removes `task` from a queue where tasks usually finish in order, so the
/// common case is a pop from the front rather than a scan.
pub(super) fn remove_in_order(queue: &mut VecDeque<TaskId>, task: TaskId) {
    if queue.front() == Some(&task) {
        queue.pop_front();
    } else {
        queue.retain(|t| *t != task);
    }
}

#[cfg(test)]
mod tests {
    use super::super::pipelining::PIPELINE_DEPTH;
    use super::super::test_support::*;
    use super::*;
    use crate::resources::CPU;

    fn failed(function: &str) -> Error {
        Error::TaskFailed {
            function: function.into(),
            message: "raised".into(),
        }
    }

    #[test]
    fn a_task_is_leased_a_worker_runs_and_its_value_becomes_ready() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(2.0), 1 << 20);
        let spec = ids.task("f", cpus(1.0), vec![TaskArg::Value(inline(b"x"))]);
        let (task, output) = (spec.task_id, spec.return_id);
        state.submit_now(spec);
        // No worker yet: one starts, and the lease holds its CPU meanwhile.
        assert_eq!(state.value(output).map(|_| ()), None);
        assert_eq!(state.free(HEAD, CPU), 1.0);
        let (worker, mut inbox) = state.start_one();
        let runs = executed(&mut inbox);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].task_id, task);
        assert!(matches!(&runs[0].args[0].payload, Payload::Inline(b) if b == b"x"));
        assert_eq!(state.free(HEAD, CPU), 1.0, "the lease holds one CPU");
        assert_eq!(state.tasks[&task].worker, Some(worker));
        assert_eq!(
            state
                .task_events
                .rows()
                .into_iter()
                .find(|r| r.task_id == task)
                .map(|r| r.state),
            Some(TaskState::Running)
        );
        let waiter = state.object_waiters.register(&[output], 1);
        state.finish(worker, task, Ok(inline(b"y")));
        assert!(
            matches!(state.value(output), Some(Ok(ObjectBlob { payload: Payload::Inline(b), .. })) if b == b"y")
        );
        assert!(waiter.slot.is_woken(), "its waiter is woken");
        assert!(!state.tasks.contains_key(&task));
        assert_eq!(state.free(HEAD, CPU), 2.0, "the lease ended");
        assert!(state.workers[&worker].lease.is_none());
    }

    #[test]
    fn a_task_waits_for_its_argument_and_runs_with_its_value() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
        let first = ids.task("first", cpus(1.0), Vec::new());
        let (first_task, first_output) = (first.task_id, first.return_id);
        let second = ids.task("second", cpus(1.0), vec![TaskArg::Ref(first_output)]);
        let (second_task, second_output) = (second.task_id, second.return_id);
        state.submit_now(first);
        state.submit_now(second);
        assert_eq!(state.tasks[&second_task].missing_deps, 1);
        assert_eq!(state.waiting_on[&first_output], vec![second_task]);
        let (worker, mut inbox) = state.start_one();
        assert_eq!(executed_ids(&mut inbox), vec![first_task]);
        state.finish(worker, first_task, Ok(inline(b"1")));
        let runs = executed(&mut inbox);
        assert_eq!(runs.len(), 1, "the dependent task runs on the freed worker");
        assert_eq!(runs[0].task_id, second_task);
        assert!(matches!(&runs[0].args[0].payload, Payload::Inline(b) if b == b"1"));
        assert!(!state.waiting_on.contains_key(&first_output));
        state.finish(worker, second_task, Ok(inline(b"2")));
        assert_eq!(error_kind(&state.value(second_output)), "ok");
    }

    #[test]
    fn a_failed_argument_fails_the_task_without_running_it() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
        let first = ids.task("first", cpus(1.0), Vec::new());
        let (first_task, first_output) = (first.task_id, first.return_id);
        let second = ids.task("second", cpus(1.0), vec![TaskArg::Ref(first_output)]);
        let second_output = second.return_id;
        state.submit_now(first);
        state.submit_now(second);
        let (worker, mut inbox) = state.start_one();
        executed(&mut inbox);
        state.finish(worker, first_task, Err(failed("first")));
        assert!(executed(&mut inbox).is_empty());
        assert!(matches!(
            state.value(second_output),
            Some(Err(Error::TaskFailed { function, .. })) if function == "first"
        ));
    }

    #[test]
    fn a_task_whose_worker_dies_is_retried_within_max_retries() {
        // (max_retries, the task's outcome after its worker dies, whether a
        // replacement worker runs it)
        let table = [
            (0, "WorkerDied", false),
            (1, "pending", true),
            (3, "pending", true),
        ];
        for (max_retries, outcome, rerun) in table {
            let ids = Ids::new();
            let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
            let spec = TaskSpec {
                max_retries,
                ..ids.task("f", cpus(1.0), Vec::new())
            };
            let (task, output) = (spec.task_id, spec.return_id);
            state.submit_now(spec);
            let (worker, mut inbox) = state.start_one();
            assert_eq!(executed_ids(&mut inbox), vec![task]);
            state.worker_exited(worker, "killed");
            state.schedule();
            assert_eq!(
                error_kind(&state.value(output)),
                outcome,
                "max_retries={max_retries}"
            );
            // The dead worker's lease is released; a replacement's lease
            // holds the CPU while it starts.
            let held = if rerun { 1.0 } else { 0.0 };
            assert_eq!(
                state.free(HEAD, CPU),
                1.0 - held,
                "max_retries={max_retries}"
            );
            let effects = state.take_effects();
            assert!(effects.contains(&Did::Stop {
                worker,
                node: HEAD.into()
            }));
            let spawned = effects.iter().any(|d| matches!(d, Did::Spawn { .. }));
            assert_eq!(spawned, rerun, "max_retries={max_retries}");
            if rerun {
                assert_eq!(state.tasks[&task].retries_left, max_retries - 1);
                let replacement = effects
                    .iter()
                    .find_map(|d| match d {
                        Did::Spawn { worker, .. } => Some(*worker),
                        _ => None,
                    })
                    .expect("spawned");
                assert_ne!(replacement, worker);
                let mut inbox = state.connect(replacement);
                assert_eq!(executed_ids(&mut inbox), vec![task]);
            }
        }
    }

    #[test]
    fn an_exception_is_retried_only_with_retry_exceptions() {
        // (retry_exceptions, max_retries, runs before the error is final)
        let table = [(false, 2, 1), (true, 0, 1), (true, 2, 3)];
        for (retry_exceptions, max_retries, runs) in table {
            let ids = Ids::new();
            let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
            let spec = TaskSpec {
                max_retries,
                retry_exceptions,
                ..ids.task("f", cpus(1.0), Vec::new())
            };
            let (task, output) = (spec.task_id, spec.return_id);
            state.submit_now(spec);
            let (worker, mut inbox) = state.start_one();
            let mut ran = 0;
            while executed_ids(&mut inbox) == vec![task] {
                ran += 1;
                state.finish(worker, task, Err(failed("f")));
            }
            assert_eq!(
                ran, runs,
                "retry_exceptions={retry_exceptions} max_retries={max_retries}"
            );
            assert!(matches!(
                state.value(output),
                Some(Err(Error::TaskFailed { .. }))
            ));
        }
    }

    #[test]
    fn cancelling_a_queued_task_fails_it_and_stops_nothing() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
        let running = ids.task("running", cpus(1.0), Vec::new());
        let ahead: Vec<TaskSpec> = (1..PIPELINE_DEPTH)
            .map(|_| ids.task("ahead", cpus(1.0), Vec::new()))
            .collect();
        let queued = ids.task("queued", cpus(1.0), Vec::new());
        let mut held = vec![running.task_id];
        held.extend(ahead.iter().map(|spec| spec.task_id));
        let (running_task, queued_output) = (running.task_id, queued.return_id);
        state.submit_now(running);
        ahead.into_iter().for_each(|spec| state.submit_now(spec));
        state.submit_now(queued);
        let (worker, mut inbox) = state.start_one();
        // The worker holds as many as it may; the last waits in the queue.
        assert_eq!(executed_ids(&mut inbox), held);
        state.cancel(queued_output).expect("cancel");
        state.schedule();
        assert_eq!(error_kind(&state.value(queued_output)), "Cancelled");
        assert!(state.queues.is_empty());
        assert!(state.take_effects().is_empty(), "no process is stopped");
        state.finish(worker, running_task, Ok(inline(b"")));
        assert!(executed(&mut inbox).is_empty());
    }

    #[test]
    fn an_infeasible_task_fails_at_submission() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
        let spec = ids.task("big", cpus(4.0), Vec::new());
        let output = spec.return_id;
        state.submit_now(spec);
        assert_eq!(error_kind(&state.value(output)), "Infeasible");
        assert!(
            state.take_effects().is_empty(),
            "no worker is started for it"
        );
    }
}
