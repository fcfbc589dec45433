//! The scheduler (Ray's cluster task manager and worker leases): tasks of one
//! resource shape and strategy share a FIFO queue; the head of each queue
//! leases an idle worker together with its resources on a node the strategy
//! picks, and holds both until it finishes. A worker that finishes while the
//! next task of its shape waits and nothing else waits for resources runs that
//! task under the same lease, as Ray's owners reuse a lease for the next task
//! of a scheduling key: no release, no placement decision. A worker blocked in
//! `get` lends its resources out meanwhile. A lease that finds no idle worker
//! on the node picked starts one and keeps the resources for it while it
//! starts (as Ray's raylet grants a lease, then starts its worker): the
//! worker takes the queue's next task as it connects, and the queue's other
//! tasks go on to other resources meanwhile, so workers start side by side.

use super::executables::{code_key, Code};
use super::task_events::now_ms;
use super::tasks::TaskKind;
use super::worker_pool::pool_key;
use super::NodeState;
use crate::error::Result;
use crate::ids::{TaskId, WorkerId};
use crate::protocol::*;
use crate::resources::{Allocation, ResourceSet, SchedulingStrategy};
use std::collections::VecDeque;

pub(super) struct Lease {
    pub(super) allocation: Allocation,
    /// Resources handed back while the worker blocks in `get`.
    pub(super) lent_out: bool,
    /// The key of the shape queue it serves: tasks from there may go ahead.
    pub(super) shape: String,
}

/// What [`NodeState::lease_worker`] got for the head of a queue.
pub(super) enum LeaseOutcome {
    /// A connected worker, leased now.
    Leased(WorkerId),
    /// A worker starting for the lease, which holds the resources: it takes
    /// the queue's next task when it connects.
    WorkerStarting,
    /// No resources free for the request, or the node picked has as many
    /// task workers as it may.
    Unavailable,
}

pub(super) struct ShapeQueue {
    pub(super) request: ResourceSet,
    pub(super) strategy: SchedulingStrategy,
    /// The executable its tasks run: each job leases only its own workers.
    pub(super) code: Code,
    pub(super) tasks: VecDeque<TaskId>,
}

impl NodeState {
    /// Hands queued work to workers; see the module doc for the policy.
    pub(super) fn schedule(&mut self) {
        if self.shutting_down {
            return;
        }
        let groups_waiting = self.reserve_pending_groups();
        self.start_waiting_actors();
        let shapes: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.tasks.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        // Queues whose head found no worker: resources short, or a worker
        // still starting.
        let mut blocked = Vec::new();
        for shape in shapes {
            while let Some((task_id, request, strategy, code)) =
                self.queue_beyond_starting_workers(&shape).and_then(|q| {
                    Some((
                        *q.tasks.front()?,
                        q.request.clone(),
                        q.strategy.clone(),
                        q.code.clone(),
                    ))
                })
            {
                let placed = match self.lease_worker(&request, &strategy, &code, &shape) {
                    Ok(LeaseOutcome::Leased(worker)) => Ok(worker),
                    Ok(LeaseOutcome::WorkerStarting) => continue,
                    Ok(LeaseOutcome::Unavailable) => {
                        blocked.push(shape);
                        break;
                    }
                    // The node chosen cannot run this job's executable.
                    Err(error) => Err(error),
                };
                self.queues
                    .get_mut(&shape)
                    .expect("queue seen above")
                    .tasks
                    .pop_front();
                match placed {
                    Ok(worker) => {
                        self.assign(worker, task_id);
                        self.refresh_pipeline(worker);
                    }
                    Err(error) => self.finish_task(task_id, Err(error)),
                }
            }
        }
        let contended = self.resources_contended(&blocked, groups_waiting);
        if let ([shape], false) = (&blocked[..], contended) {
            self.send_ahead(shape);
        }
        self.queues.retain(|_, q| !q.tasks.is_empty());
        self.withdraw_tasks_ahead(contended);
    }

    /// The queue of `shape` if it holds more tasks than the workers
    /// starting under its leases will take as they connect: only the tasks
    /// beyond those may be placed elsewhere or sent ahead.
    pub(super) fn queue_beyond_starting_workers(&self, shape: &str) -> Option<&ShapeQueue> {
        let taken_by_starting = self.task_workers.leases_starting(shape);
        self.queues
            .get(shape)
            .filter(|q| q.tasks.len() > taken_by_starting)
    }

    /// Reserves `request` on a node `strategy` picks for a worker running
    /// `code` there: an idle one, else one starting (claimed, or started
    /// now); the error when the node chosen cannot run `code`.
    pub(super) fn lease_worker(
        &mut self,
        request: &ResourceSet,
        strategy: &SchedulingStrategy,
        code: &Code,
        shape: &str,
    ) -> Result<LeaseOutcome> {
        let Some(allocation) = self.pool.try_acquire(request, strategy) else {
            return Ok(LeaseOutcome::Unavailable);
        };
        let gpu_ids = allocation.gpu_ids();
        let node = allocation.node.clone();
        if let Some(error) = self.unavailable_on(&node, code) {
            self.pool.release(&allocation);
            return Err(error);
        }
        let key = pool_key(&node, code, &gpu_ids);
        let lease = Lease {
            allocation,
            lent_out: false,
            shape: shape.to_string(),
        };
        // The index holds exactly the idle workers and the starting ones
        // no lease has claimed (each change of a worker updates it).
        let (worker, outcome) = if let Some(idle) = self.task_workers.take_idle(&key) {
            (idle, LeaseOutcome::Leased(idle))
        } else if let Some(starting) = self.task_workers.claim_starting(&key, shape) {
            (starting, LeaseOutcome::WorkerStarting)
        } else if self.task_workers.on_node(&node) < self.task_worker_limit(&node) {
            let id = self.next_worker_id();
            self.add_worker(id, &node, gpu_ids, None, code.clone(), Some(lease));
            return Ok(LeaseOutcome::WorkerStarting);
        } else {
            self.pool.release(&lease.allocation);
            return Ok(LeaseOutcome::Unavailable);
        };
        let record = self
            .workers
            .get_mut(&worker)
            .expect("the index lists known workers only");
        debug_assert!(record.lease.is_none(), "{worker} indexed as free");
        record.lease = Some(lease);
        Ok(outcome)
    }

    pub(super) fn assign(&mut self, worker: WorkerId, task_id: TaskId) {
        let Some(record) = self.tasks.get_mut(&task_id) else {
            return;
        };
        record.worker = Some(worker);
        let spec = record.spec.clone();
        let kind = record.kind;
        let job = record.job;
        let gpu_ids = self
            .workers
            .get(&worker)
            .map(|w| w.gpu_ids.clone())
            .unwrap_or_default();
        let args: Result<Vec<ObjectBlob>> = spec
            .args
            .iter()
            .map(|a| match a {
                TaskArg::Value(blob) => Ok(blob.clone()),
                TaskArg::Ref(id) => self.value_of(*id),
            })
            .collect();
        let args = match args {
            Ok(args) => args,
            Err(error) => return self.finish_task(task_id, Err(error)),
        };
        let calls_at_once = self.calls_at_once(worker);
        let w = self
            .workers
            .get_mut(&worker)
            .expect("assigning to a known worker");
        let starts_now = w.assigned.len() < calls_at_once;
        w.assigned.push_back(task_id);
        w.last_task = Some((job, spec.invocation.display_name()));
        let (node_id, pid) = (&w.node, w.pid);
        self.task_events.update(task_id, |row| {
            row.node_id = Some(node_id.clone());
            row.worker_id = Some(worker);
            row.worker_pid = pid;
            row.attempts += 1;
            if starts_now {
                row.state = TaskState::Running;
                row.started_at_ms = Some(now_ms());
            } else {
                row.state = TaskState::SubmittedToWorker;
            }
        });
        let message = NodeToWorker::Execute(Execute {
            task_id,
            invocation: spec.invocation,
            args,
            gpu_ids,
        });
        let sent = w.sender.as_ref().is_some_and(|s| s.send(message).is_ok());
        if !sent {
            self.remove_worker(worker, "its connection closed");
        } else if let TaskKind::ActorCall(actor) = kind {
            if let Some(a) = self.actors.get_mut(&actor) {
                a.inflight.push_back(task_id);
            }
        }
    }

    /// `worker` sent a result: it starts the task it holds next right away.
    pub(super) fn next_task_started(&mut self, worker: WorkerId) {
        let calls_at_once = self.calls_at_once(worker);
        let next = self
            .workers
            .get(&worker)
            .and_then(|w| w.assigned.get(calls_at_once - 1));
        if let Some(&next) = next {
            self.task_events.update(next, |row| {
                if row.state == TaskState::SubmittedToWorker {
                    row.state = TaskState::Running;
                    row.started_at_ms = Some(now_ms());
                }
            });
        }
    }

    /// How many of the tasks sent to `worker` run at once: its actor's
    /// `max_concurrency`, or 1. The first that many it holds are running.
    fn calls_at_once(&self, worker: WorkerId) -> usize {
        self.workers
            .get(&worker)
            .and_then(|w| w.actor)
            .and_then(|actor| self.actors.get(&actor))
            .map_or(1, |actor| actor.spec.max_concurrency.max(1) as usize)
    }

    /// Ends `worker`'s lease once it holds no task, unless the next task of
    /// the shape it serves may take the lease over (see
    /// [`next_task_for_lease`](Self::next_task_for_lease)).
    pub(super) fn end_lease_if_idle(&mut self, worker: WorkerId) {
        let Some(w) = self.workers.get(&worker) else {
            return;
        };
        let reusable = (w.lease.as_ref())
            .filter(|lease| w.assigned.is_empty() && !lease.lent_out && !w.stopping)
            .map(|lease| lease.shape.clone());
        if let Some(task_id) = reusable.and_then(|shape| self.next_task_for_lease(&shape)) {
            self.assign(worker, task_id);
            self.refresh_pipeline(worker);
            return;
        }
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        if w.assigned.is_empty() {
            if let Some(lease) = w.lease.take() {
                if !lease.lent_out {
                    self.pool.release(&lease.allocation);
                }
                if w.is_idle() {
                    self.task_workers.now_idle(w.pool_key(), worker);
                }
            }
        }
        self.refresh_pipeline(worker);
    }

    /// The next task of `shape`'s queue, taken off it, to run under the
    /// lease of a worker of that shape that just finished (Ray's owners
    /// reuse a lease for the next task of the same scheduling key): no
    /// release, no placement decision, no new lease. Only while nothing else
    /// waits for resources (another shape, an actor, a placement group), so
    /// a lease kept this way never stands in another's way, and never for
    /// `Spread`, whose every task should go round the nodes.
    fn next_task_for_lease(&mut self, shape: &str) -> Option<TaskId> {
        let queue = self.queues.get(shape)?;
        let task_id = *queue.tasks.front()?;
        if queue.strategy == SchedulingStrategy::Spread || !self.actors_waiting.is_empty() {
            return None;
        }
        let others_wait = (self.queues.iter())
            .any(|(other, q)| other != shape && !q.tasks.is_empty())
            || (self.placement_groups.values()).any(|g| g.allocations.is_empty());
        if others_wait {
            return None;
        }
        self.queues.get_mut(shape)?.tasks.pop_front();
        Some(task_id)
    }

    pub(super) fn requeue_front(&mut self, task_id: TaskId) {
        if let Some(record) = self.tasks.get_mut(&task_id) {
            record.withdrawing = false;
        }
        self.task_events
            .update(task_id, |row| row.state = TaskState::PendingNodeAssignment);
        self.queue_for(task_id).push_front(task_id);
    }

    /// The queue of tasks with the same resources and strategy as `task_id`.
    pub(super) fn queue_for(&mut self, task_id: TaskId) -> &mut VecDeque<TaskId> {
        let record = &self.tasks[&task_id];
        let (request, strategy) = (record.spec.resources.clone(), record.spec.strategy.clone());
        let code = record.code.clone();
        let key = format!("{}|{:?}|{}", request.shape_key(), strategy, code_key(&code));
        &mut self
            .queues
            .entry(key)
            .or_insert_with(|| ShapeQueue {
                request,
                strategy,
                code,
                tasks: VecDeque::new(),
            })
            .tasks
    }

    /// A worker blocked in `get` lends its resources out (`lend = true`) and
    /// takes them back when the value arrives. A task sent ahead to it is
    /// withdrawn: it may be what the worker waits for.
    pub(super) fn lend_out(&mut self, worker: WorkerId, lend: bool) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        let Some(lease) = w.lease.as_mut() else {
            return;
        };
        if lease.lent_out == lend {
            return;
        }
        lease.lent_out = lend;
        let allocation = lease.allocation.clone();
        if lend {
            self.pool.release(&allocation);
            self.withdraw_all_ahead(worker);
            // The worker still runs its task; it just holds nothing meanwhile.
        } else {
            self.pool.force_acquire(&allocation);
        }
        self.refresh_pipeline(worker);
    }
}

#[cfg(test)]
mod tests {
    use super::super::pipelining::PIPELINE_DEPTH;
    use super::super::test_support::*;
    use super::*;
    use crate::resources::CPU;

    #[test]
    fn leases_are_limited_by_resources_and_a_returned_one_takes_the_task_sent_ahead() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(2.0), 1 << 20);
        let specs: Vec<TaskSpec> = (0..3)
            .map(|_| ids.task("f", cpus(1.0), Vec::new()))
            .collect();
        let tasks: Vec<TaskId> = specs.iter().map(|s| s.task_id).collect();
        for spec in specs {
            state.submit_now(spec);
        }
        // A worker starts for each free CPU at once, each holding its CPU
        // while it starts; the third task waits.
        let spawned = state.take_spawns();
        assert_eq!(spawned.len(), 2, "both workers start side by side");
        assert_eq!(state.free(HEAD, CPU), 0.0);
        assert_eq!(
            state.queues.values().map(|q| q.tasks.len()).sum::<usize>(),
            3
        );
        let (wa, wb) = (spawned[0].0, spawned[1].0);
        // The first to connect runs the first task, and the task no starting
        // worker will take goes ahead to it; the second runs the last.
        let mut a = state.connect(wa);
        let mut b = state.connect(wb);
        assert_eq!(executed_ids(&mut a), vec![tasks[0], tasks[1]]);
        assert_eq!(executed_ids(&mut b), vec![tasks[2]]);
        assert_eq!(state.free(HEAD, CPU), 0.0);
        assert!(state.queues.is_empty());
        assert!(
            state.take_spawns().is_empty(),
            "no worker without a free CPU"
        );
        state.finish(wb, tasks[2], Ok(inline(b"")));
        let withdrawn = std::iter::from_fn(|| a.try_recv().ok())
            .any(|m| matches!(m, NodeToWorker::Withdraw { task_id } if task_id == tasks[1]));
        assert!(withdrawn, "the free CPU asks for the task sent ahead");
        state.task_withdrawn(wa, tasks[1]);
        state.schedule();
        assert_eq!(
            executed_ids(&mut b),
            vec![tasks[1]],
            "the returned lease takes the withdrawn task"
        );
        assert_eq!(state.free(HEAD, CPU), 0.0);
        state.finish(wa, tasks[0], Ok(inline(b"")));
        state.finish(wb, tasks[1], Ok(inline(b"")));
        assert_eq!(state.free(HEAD, CPU), 2.0);
        assert!(state.workers.values().all(|w| w.lease.is_none()));
    }

    /// A worker that finishes keeps its lease for the next task of its shape
    /// (no placement decision: the task stays on a node the policy would
    /// now pass over), but not while another shape waits for resources.
    #[test]
    fn a_finished_lease_takes_the_next_task_of_its_shape_unless_another_shape_waits() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(2.0), 1 << 20);
        let long = ids.task("long", cpus(1.0), Vec::new());
        let tasks: Vec<TaskSpec> = (0..3)
            .map(|_| ids.task("f", cpus(1.0), Vec::new()))
            .collect();
        let (long_task, t): (TaskId, Vec<TaskId>) =
            (long.task_id, tasks.iter().map(|s| s.task_id).collect());
        let mut tasks = tasks.into_iter();
        state.submit_now(long);
        let (_, mut long_inbox) = state.start_one();
        state.submit_now(tasks.next().unwrap());
        let (worker, mut inbox) = state.start_one();
        assert_eq!(executed_ids(&mut long_inbox), vec![long_task]);
        assert_eq!(executed_ids(&mut inbox), vec![t[0]]);
        // A second node joins; the head is full, so the policy picks it.
        let _b = state.join("b", cpus(2.0));
        state.submit_now(tasks.next().unwrap());
        let spawns = state.take_spawns();
        assert_eq!(spawns.len(), 1);
        assert_eq!(spawns[0].1, "b", "a worker starts on the free node");
        // The worker on the head finishes first and runs the waiting task
        // under the same lease, though the head is now the more used node.
        state.finish(worker, t[0], Ok(inline(b"")));
        assert_eq!(executed_ids(&mut inbox), vec![t[1]]);
        assert_eq!(state.free(HEAD, CPU), 0.0);

        // A task of another shape waits for both of the head's CPUs.
        let pinned = TaskSpec {
            strategy: SchedulingStrategy::NodeAffinity {
                node_id: HEAD.into(),
                soft: false,
            },
            ..ids.task("pinned", cpus(2.0), Vec::new())
        };
        state.submit_now(pinned);
        state.submit_now(tasks.next().unwrap());
        state.finish(worker, t[1], Ok(inline(b"")));
        assert!(
            executed_ids(&mut inbox).is_empty(),
            "the lease ended instead of taking the next task of its shape"
        );
        assert_eq!(state.free(HEAD, CPU), 1.0);
        assert_eq!(state.tasks[&t[2]].worker, None, "still waits for node b");
    }

    #[test]
    fn a_task_waiting_for_a_scarce_resource_does_not_hold_up_other_shapes() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(res(&[(CPU, 1.0), ("accel", 1.0)]), 1 << 20);
        let holder = ids.task("holder", res(&[("accel", 1.0)]), Vec::new());
        let ahead: Vec<TaskSpec> = (1..PIPELINE_DEPTH)
            .map(|_| ids.task("ahead", res(&[("accel", 1.0)]), Vec::new()))
            .collect();
        let blocked = ids.task("blocked", res(&[("accel", 1.0)]), Vec::new());
        let cpu = ids.task("cpu", cpus(1.0), Vec::new());
        let (holder_task, blocked_task, cpu_task) = (holder.task_id, blocked.task_id, cpu.task_id);
        state.submit_now(holder);
        let (_, mut holder_inbox) = state.start_one();
        assert_eq!(executed_ids(&mut holder_inbox), vec![holder_task]);
        // These go ahead to the holder's worker, which is then full.
        ahead.into_iter().for_each(|spec| state.submit_now(spec));
        state.submit_now(blocked);
        state.submit_now(cpu);
        let (_, mut cpu_inbox) = state.start_one();
        assert_eq!(executed_ids(&mut cpu_inbox), vec![cpu_task]);
        assert!(state.tasks[&blocked_task].worker.is_none());
        assert_eq!(state.queues.len(), 1, "only the accel shape still waits");
    }

    #[test]
    fn a_worker_blocked_in_get_lends_its_resources_and_takes_them_back() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
        let outer = ids.task("outer", cpus(1.0), Vec::new());
        let inner = ids.task("inner", cpus(1.0), Vec::new());
        let (outer_task, inner_task) = (outer.task_id, inner.task_id);
        state.submit_now(outer);
        let (outer_worker, mut outer_inbox) = state.start_one();
        assert_eq!(executed_ids(&mut outer_inbox), vec![outer_task]);
        state.submit_now(inner);
        assert!(state.take_spawns().is_empty(), "the only CPU is leased");
        assert_eq!(
            executed_ids(&mut outer_inbox),
            vec![inner_task],
            "sent ahead"
        );
        state.lend_out(outer_worker, true);
        assert_eq!(state.free(HEAD, CPU), 1.0, "lent out");
        state.schedule();
        // The outer task may be waiting for the one sent ahead of it: the
        // worker is asked for it back and gives it.
        let withdrawal = outer_inbox.try_recv().expect("a withdrawal");
        assert!(matches!(withdrawal, NodeToWorker::Withdraw { task_id } if task_id == inner_task));
        state.task_withdrawn(outer_worker, inner_task);
        state.schedule();
        let (inner_worker, mut inner_inbox) = state.start_one();
        assert_eq!(
            state.free(HEAD, CPU),
            0.0,
            "the inner task leased the lent CPU"
        );
        assert_eq!(executed_ids(&mut inner_inbox), vec![inner_task]);
        state.finish(inner_worker, inner_task, Ok(inline(b"")));
        assert_eq!(state.free(HEAD, CPU), 1.0);
        state.lend_out(outer_worker, false);
        assert_eq!(
            state.free(HEAD, CPU),
            0.0,
            "taken back when the value arrived"
        );
        state.finish(outer_worker, outer_task, Ok(inline(b"")));
        assert_eq!(state.free(HEAD, CPU), 1.0);
    }
}
