//! Task lifecycle (Ray's task manager and dependency manager): a submitted
//! task waits for its ref arguments, is queued for a worker, and finishes with
//! a value or an error; failed tasks are retried within `max_retries`, and
//! `cancel` removes a task wherever it is (queued, waiting or running).

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
    /// The submitter's executable, which a stateless task runs.
    pub(super) code: Code,
}

impl NodeState {
    /// A task submitted for `job` by a process running `code`.
    pub(super) fn submit(&mut self, spec: TaskSpec, job: JobId, code: Code) {
        let return_id = spec.return_id;
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
            return_id,
            ObjectEntry {
                value: None,
                refs: 1,
                producer: Some(spec.task_id),
            },
        );
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
            return self.complete(return_id, outcome);
        }
        let task_id = spec.task_id;
        let retries_left = match kind {
            TaskKind::ActorCall(actor) => self
                .actors
                .get(&actor)
                .map_or(0, |a| a.spec.max_task_retries),
            _ => spec.max_retries,
        };
        self.tasks.insert(
            task_id,
            TaskRecord {
                spec,
                job,
                kind,
                retries_left,
                missing_deps: 0,
                worker: None,
                cancelled: false,
                code,
            },
        );
        self.track_dependencies(task_id);
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
                Some(record) if !matches!(record.status, ActorStatus::Dead(_)) => {
                    record.pending.push_back(task_id)
                }
                Some(record) => {
                    let ActorStatus::Dead(error) = record.status.clone() else {
                        unreachable!()
                    };
                    self.finish_task(task_id, Err(error));
                }
                None => {
                    let error = Error::ActorDied {
                        actor: actor.to_string(),
                        message: "no such actor".into(),
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
                        }
                    }
                    Err(error) => {
                        let message = format!("its constructor failed: {error}");
                        self.actor_dead(actor, message);
                        self.effects
                            .extend(self.workers.get(&worker).map(|w| w.stop(worker)));
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
        let function = record.spec.invocation.display_name();
        match (record.worker, record.kind) {
            (Some(worker), TaskKind::Stateless) => {
                let running =
                    self.workers.get(&worker).and_then(|w| w.assigned.front()) == Some(&task_id);
                if running {
                    record.cancelled = true;
                    self.effects
                        .extend(self.workers.get(&worker).map(|w| w.stop(worker)));
                    return Ok(());
                }
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.assigned.retain(|t| *t != task_id);
                }
            }
            (Some(_), _) => return Ok(()),
            (None, _) => {}
        }
        for queue in self.queues.values_mut() {
            queue.tasks.retain(|t| *t != task_id);
        }
        for actor in self.actors.values_mut() {
            actor.pending.retain(|t| *t != task_id);
        }
        for waiting in self.waiting_on.values_mut() {
            waiting.retain(|t| *t != task_id);
        }
        self.finish_task(task_id, Err(Error::Cancelled { function }));
        Ok(())
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
