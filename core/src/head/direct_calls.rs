//! Actor calls that callers send straight to the actor's worker (Ray's
//! direct actor transport). The head tells a caller where an actor lives
//! (`actor_route`) and records each call the caller sends itself: its object
//! and references, its row in the state API, and, once sent, that it runs on
//! the actor's worker. The head never carries the call or its result; the
//! caller reports the result when it arrives.
//!
//! Why the head still records every call: an object the caller holds may be
//! passed to another task, and the head is where every process looks
//! objects up; a call sent to a worker that then dies must be retried within
//! `max_task_retries` or failed, as the head does for the calls it sends. A
//! record is two small messages on the caller's stream, off the round trip.
//!
//! A caller that goes away takes its calls with it: their results had
//! nowhere else to go, so they fail as Ray's objects do when their owner
//! dies.

use super::actors::ActorStatus;
use super::executables::Code;
use super::task_events::now_ms;
use super::tasks::{remove_in_order, TaskKind, TaskRecord};
use super::NodeState;
use crate::error::{Error, Result};
use crate::ids::{ActorId, JobId, ObjectId, TaskId, WorkerId};
use crate::protocol::*;

impl NodeState {
    /// Where calls to `actor` may go directly: `Some(Some(route))` once it
    /// is alive on a worker other than `not_on` that serves calls,
    /// `Some(None)` if they must go through the head (dead, unknown, or a
    /// worker without the service), `None` while it is starting.
    pub(super) fn actor_route(
        &self,
        actor: ActorId,
        not_on: Option<WorkerId>,
    ) -> Option<Option<ActorRoute>> {
        let Some(record) = self.actors.get(&actor) else {
            return Some(None);
        };
        match record.status {
            ActorStatus::Alive => {
                let worker = record.worker.filter(|w| Some(*w) != not_on)?;
                let address = self.workers.get(&worker)?.call_address.clone();
                Some(address.map(|address| ActorRoute { worker, address }))
            }
            ActorStatus::WaitingForResources | ActorStatus::Starting => None,
        }
    }

    /// `caller` submitted `spec`, a call it sends to the actor's `worker`
    /// itself, or (`None`) holds until it knows the route.
    pub(super) fn direct_call_sent(
        &mut self,
        caller: WorkerId,
        spec: TaskSpec,
        worker: Option<WorkerId>,
        job: JobId,
        code: Code,
    ) {
        let Some(actor) = spec.actor else {
            return self.submit(spec, job, code);
        };
        if spec.args.iter().any(|a| matches!(a, TaskArg::Ref(_))) {
            // The actor's worker may be waiting to fetch these arguments
            // (`direct_call_known`).
            self.ready_events += 1;
        }
        self.record_submission(&spec);
        let task_id = spec.task_id;
        let retries_left = self.max_task_retries(actor);
        let mut record = TaskRecord::new(spec, job, TaskKind::ActorCall(actor), retries_left, code);
        record.direct_caller = Some(caller);
        self.tasks.insert(task_id, record);
        self.direct_calls.entry(caller).or_default().insert(task_id);
        if worker.is_some() {
            self.direct_call_routed(task_id, worker);
        }
    }

    /// The caller sent `task_id` to `worker`, or (`None`) hands it to the
    /// head, which sends it as any other call.
    pub(super) fn direct_call_routed(&mut self, task_id: TaskId, worker: Option<WorkerId>) {
        let Some(record) = self.tasks.get_mut(&task_id) else {
            return;
        };
        let (TaskKind::ActorCall(actor), Some(_)) = (record.kind, record.direct_caller) else {
            return;
        };
        let Some(worker) = worker else {
            return self.take_over_direct_call(task_id);
        };
        record.worker = Some(worker);
        let runs_there = self
            .actors
            .get(&actor)
            .is_some_and(|a| a.status == ActorStatus::Alive && a.worker == Some(worker));
        if !runs_there {
            // The actor died or restarted after the caller learnt its route:
            // the call went to a worker that is gone.
            return self.direct_call_lost(task_id, actor);
        }
        if record.cancelled {
            // Cancelled by another process while its caller held it.
            self.cancel_on_worker(worker, task_id);
        }
        if let Some(a) = self.actors.get_mut(&actor) {
            a.inflight.push_back(task_id);
        }
        let (node_id, pid) = match self.workers.get(&worker) {
            Some(w) => (Some(w.node.clone()), w.pid),
            None => (None, None),
        };
        self.task_events.update(task_id, |row| {
            row.node_id = node_id;
            row.worker_id = Some(worker);
            row.worker_pid = pid;
            row.attempts += 1;
            row.state = TaskState::Running;
            row.started_at_ms = Some(now_ms());
        });
    }

    /// The result of a call sent directly to `worker`, as its caller got it.
    /// A call retried through the head since (its worker died) ends with
    /// that run's result instead.
    pub(super) fn direct_call_finished(
        &mut self,
        task_id: TaskId,
        worker: WorkerId,
        outcome: Result<ObjectBlob>,
    ) {
        let Some(record) = self.tasks.get(&task_id) else {
            return;
        };
        let TaskKind::ActorCall(actor) = record.kind else {
            return;
        };
        if record.direct_caller.is_none() || record.worker != Some(worker) {
            return;
        }
        if let Some(a) = self.actors.get_mut(&actor) {
            remove_in_order(&mut a.inflight, task_id);
        }
        self.finish_task(task_id, outcome);
    }

    /// `requester` cancels the call that produces `id`. A call its caller
    /// still holds (waiting to learn where the actor lives) is withdrawn by
    /// that caller before it asks, so when the caller asks, the call ends
    /// here as cancelled and never runs. Any other call goes the way of
    /// [`NodeState::cancel`] (one held by another process is marked, and
    /// dropped on the actor's worker once its caller sends it there).
    pub(super) fn cancel_from(&mut self, requester: WorkerId, id: ObjectId) -> Result<()> {
        let withdrawn = self
            .objects
            .get(&id)
            .and_then(|entry| entry.producer)
            .filter(|task_id| {
                self.tasks.get(task_id).is_some_and(|record| {
                    record.worker.is_none() && record.direct_caller == Some(requester)
                })
            });
        match withdrawn {
            Some(task_id) => {
                self.finish_cancelled(task_id);
                Ok(())
            }
            None => self.cancel(id),
        }
    }

    /// The head sends `task_id` from now on: it waits for its ref
    /// arguments and joins the actor's pending calls.
    pub(super) fn take_over_direct_call(&mut self, task_id: TaskId) {
        let Some(record) = self.tasks.get_mut(&task_id) else {
            return;
        };
        record.worker = None;
        let cancelled = record.cancelled;
        if let Some(caller) = record.direct_caller.take() {
            self.forget_direct_call(caller, task_id);
        }
        if cancelled {
            return self.finish_cancelled(task_id);
        }
        self.track_dependencies(task_id);
    }

    /// A direct call went to a worker that is gone: retried through the head
    /// within `max_task_retries`, failed otherwise.
    fn direct_call_lost(&mut self, task_id: TaskId, actor: ActorId) {
        let Some(record) = self.tasks.get_mut(&task_id) else {
            return;
        };
        let dead = self.dead_actors.get(&actor).map(|a| a.cause.clone());
        if let Some(error) = dead {
            return self.finish_task(task_id, Err(error));
        }
        if record.cancelled {
            return self.finish_cancelled(task_id);
        }
        if record.retries_left > 0 {
            record.retries_left -= 1;
            return self.take_over_direct_call(task_id);
        }
        let error = Error::ActorDied {
            actor: record.spec.invocation.display_name(),
            message: "its process died while this call was on its way; the actor is restarting"
                .into(),
        };
        self.finish_task(task_id, Err(error));
    }

    /// Whether the head has `task_id` from `caller`, or never will (the
    /// caller is gone): then the objects `caller` sent ahead of the call,
    /// its ref arguments among them, are known here.
    pub(super) fn direct_call_known(&self, task_id: TaskId, caller: WorkerId) -> bool {
        self.tasks.contains_key(&task_id) || !self.workers.contains_key(&caller)
    }

    /// `caller` is gone: the calls it sent directly and whose results it
    /// never reported fail, as objects whose owner died.
    pub(super) fn direct_caller_gone(&mut self, caller: WorkerId) {
        let Some(calls) = self.direct_calls.remove(&caller) else {
            return;
        };
        for task_id in calls {
            let Some(record) = self.tasks.get(&task_id) else {
                continue;
            };
            let (kind, return_id) = (record.kind, record.spec.return_id);
            if let TaskKind::ActorCall(actor) = kind {
                if let Some(a) = self.actors.get_mut(&actor) {
                    remove_in_order(&mut a.inflight, task_id);
                }
            }
            let error = Error::ObjectLost {
                id: return_id.to_string(),
                message: "the process that sent this actor call (its owner) died".into(),
            };
            self.finish_task(task_id, Err(error));
        }
    }

    /// `task_id` is no longer a direct call of `caller`.
    pub(super) fn forget_direct_call(&mut self, caller: WorkerId, task_id: TaskId) {
        if let Some(calls) = self.direct_calls.get_mut(&caller) {
            calls.remove(&task_id);
            if calls.is_empty() {
                self.direct_calls.remove(&caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::resources::CPU;

    /// A remote driver's connection, which sends calls directly.
    const CALLER: WorkerId = WorkerId(1 << 40);

    /// A head with one CPU, held by the actor `spec` once started: (the
    /// state, the actor, its worker, what the head sends that worker).
    fn one_actor(
        spec: ActorSpec,
    ) -> (
        NodeState,
        ActorId,
        WorkerId,
        tokio::sync::mpsc::UnboundedReceiver<NodeToWorker>,
    ) {
        let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
        let actor = spec.actor_id;
        let (worker, inbox) = state.start_actor(spec);
        (state, actor, worker, inbox)
    }

    #[test]
    fn the_route_is_the_alive_actors_worker_unless_the_caller_found_it_gone() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
        let first = ids.actor(cpus(1.0), 1);
        let waiting = ids.actor(cpus(1.0), 0);
        let (actor, queued) = (first.actor_id, waiting.actor_id);
        let (worker, _inbox) = state.start_actor(first);
        state.create_actor(waiting, JOB, None).expect("created");
        state.schedule();
        let route = |worker| {
            Some(Some(ActorRoute {
                worker,
                address: call_address(worker),
            }))
        };
        // (actor, not_on, route): `None` waits, `Some(None)` goes through the head.
        let table = [
            (actor, None, route(worker)),
            (actor, Some(WorkerId(worker.0 + 1)), route(worker)),
            (actor, Some(worker), None),
            (queued, None, None),
            (ActorId(ids.next()), None, Some(None)),
        ];
        for (which, not_on, expected) in table {
            assert_eq!(
                state.actor_route(which, not_on),
                expected,
                "{which} not on {not_on:?}"
            );
        }
        state.worker_exited(worker, "killed");
        state.schedule();
        assert_eq!(state.actor_route(actor, None), None, "restarting: wait");
        let (restarted, inbox) = state.start_one();
        state.constructed(actor, restarted, inbox);
        assert_eq!(state.actor_route(actor, Some(worker)), route(restarted));
        state.kill_actor(actor).expect("known");
        assert_eq!(state.actor_route(actor, None), Some(None), "dead");
    }

    #[test]
    fn a_call_sent_directly_runs_on_the_actors_worker_and_ends_with_the_result_its_caller_reports()
    {
        // (who reports the result, whether the call ends with it)
        for (reporter, ends) in [("the actor's worker", true), ("another worker", false)] {
            let ids = Ids::new();
            let (mut state, actor, worker, mut inbox) = one_actor(ids.actor(cpus(1.0), 0));
            let call = ids.call(actor, "add");
            let (task, output) = (call.task_id, call.return_id);
            state.direct_call_sent(CALLER, call, Some(worker), JOB, None);
            state.schedule();
            assert!(executed(&mut inbox).is_empty(), "the head sends nothing");
            assert_eq!(state.actors[&actor].inflight, [task]);
            assert_eq!(error_kind(&state.value(output)), "pending");
            let from = if ends { worker } else { WorkerId(worker.0 + 1) };
            state.direct_call_finished(task, from, Ok(inline(b"7")));
            let expected = if ends { "ok" } else { "pending" };
            assert_eq!(error_kind(&state.value(output)), expected, "{reporter}");
            assert_eq!(state.actors[&actor].inflight.is_empty(), ends, "{reporter}");
            assert_eq!(state.direct_calls.is_empty(), ends, "{reporter}");
            assert_eq!(state.free(HEAD, CPU), 0.0, "the actor keeps its CPU");
        }
    }

    #[test]
    fn a_call_held_by_its_caller_is_sent_by_the_head_once_handed_over() {
        let ids = Ids::new();
        let (mut state, actor, worker, mut inbox) = one_actor(ids.actor(cpus(1.0), 0));
        let call = ids.call(actor, "add");
        let (task, output) = (call.task_id, call.return_id);
        state.direct_call_sent(CALLER, call, None, JOB, None);
        state.schedule();
        assert!(executed(&mut inbox).is_empty(), "held by its caller");
        state.direct_call_routed(task, None);
        state.schedule();
        assert_eq!(executed_ids(&mut inbox), [task]);
        assert!(state.direct_calls.is_empty(), "the head's call now");
        state.finish(worker, task, Ok(inline(b"1")));
        assert_eq!(error_kind(&state.value(output)), "ok");
    }

    #[test]
    fn a_call_to_a_worker_that_died_is_retried_through_the_head_within_max_task_retries() {
        // (max_task_retries, whether the caller's record reaches the head
        // before the worker's death, the call's outcome after the restart)
        let table = [
            (0, true, "ActorDied"),
            (1, true, "ok"),
            (0, false, "ActorDied"),
            (1, false, "ok"),
        ];
        for (retries, recorded_first, outcome) in table {
            let case = format!("retries {retries}, recorded first {recorded_first}");
            let ids = Ids::new();
            let (mut state, actor, worker, _) = one_actor(ActorSpec {
                max_task_retries: retries,
                ..ids.actor(cpus(1.0), 1)
            });
            let call = ids.call(actor, "add");
            let (task, output) = (call.task_id, call.return_id);
            if recorded_first {
                state.direct_call_sent(CALLER, call, Some(worker), JOB, None);
                state.worker_exited(worker, "killed");
            } else {
                state.worker_exited(worker, "killed");
                state.direct_call_sent(CALLER, call, Some(worker), JOB, None);
            }
            state.schedule();
            let (restarted, inbox) = state.start_one();
            let (_, mut inbox) = state.constructed(actor, restarted, inbox);
            // The dead worker's answer, should the caller still get it,
            // does not end the call a second time.
            state.direct_call_finished(task, worker, Ok(inline(b"stale")));
            let sent: Vec<TaskId> = executed_ids(&mut inbox);
            if outcome == "ok" {
                assert_eq!(sent, [task], "{case}: the head sends it to the new worker");
                state.finish(restarted, task, Ok(inline(b"1")));
            } else {
                assert!(sent.is_empty(), "{case}");
            }
            assert_eq!(error_kind(&state.value(output)), outcome, "{case}");
            let value = state.value(output).and_then(|v| v.ok()).map(|b| b.payload);
            assert_eq!(
                format!("{value:?}"),
                format!("{:?}", (outcome == "ok").then(|| inline(b"1").payload)),
                "{case}: the retried run's result"
            );
            assert!(state.direct_calls.is_empty(), "{case}");
        }
    }

    /// A call its caller holds, cancelled by another process, stays its
    /// caller's; once the caller sends it to the actor's worker the head
    /// asks that worker to drop it, and once the caller hands it to the head
    /// instead it ends cancelled without being sent.
    #[test]
    fn a_held_call_cancelled_by_another_process_is_cancelled_where_it_goes() {
        for sent_on in [true, false] {
            let ids = Ids::new();
            let (mut state, actor, worker, mut inbox) = one_actor(ids.actor(cpus(1.0), 0));
            let call = ids.call(actor, "add");
            let (task, output) = (call.task_id, call.return_id);
            state.direct_call_sent(CALLER, call, None, JOB, None);
            state
                .cancel_from(WorkerId(CALLER.0 + 100), output)
                .expect("cancel");
            assert_eq!(error_kind(&state.value(output)), "pending", "its caller's");
            if sent_on {
                state.direct_call_routed(task, Some(worker));
                let asked = std::iter::from_fn(|| inbox.try_recv().ok())
                    .any(|m| matches!(m, NodeToWorker::CancelCall { task_id } if task_id == task));
                assert!(asked, "the actor's worker is asked to drop it");
            } else {
                state.direct_call_routed(task, None);
                assert_eq!(error_kind(&state.value(output)), "Cancelled");
                state.schedule();
                assert!(executed(&mut inbox).is_empty(), "never sent");
            }
        }
    }

    /// A caller cancelling a call it still holds has withdrawn it first:
    /// the call ends cancelled and the head forgets it as the caller's. The
    /// same request from another process leaves it to its caller.
    #[test]
    fn a_held_call_ends_cancelled_when_its_own_caller_cancels_it() {
        let ids = Ids::new();
        let (mut state, actor, _worker, mut inbox) = one_actor(ids.actor(cpus(1.0), 0));
        let call = ids.call(actor, "add");
        let (task, output) = (call.task_id, call.return_id);
        state.direct_call_sent(CALLER, call, None, JOB, None);
        let other = WorkerId(CALLER.0 + 100);
        state.cancel_from(other, output).expect("cancel");
        assert_eq!(error_kind(&state.value(output)), "pending", "its caller's");
        state.cancel_from(CALLER, output).expect("cancel");
        assert_eq!(error_kind(&state.value(output)), "Cancelled");
        assert!(state.direct_calls.is_empty(), "no longer the caller's");
        assert!(!state.tasks.contains_key(&task));
        state.schedule();
        assert!(executed(&mut inbox).is_empty(), "never sent");
    }

    /// Cancelling a call on the actor's worker, sent there by its caller or
    /// by the head, asks that worker to drop it (only the worker knows
    /// whether it started); a cancelled call lost with its worker ends
    /// `Cancelled` instead of being retried on the restarted actor.
    #[test]
    fn a_cancelled_call_is_dropped_by_the_actors_worker_and_never_retried() {
        for sent_directly in [true, false] {
            let ids = Ids::new();
            let (mut state, actor, worker, mut inbox) = one_actor(ActorSpec {
                max_task_retries: 1,
                ..ids.actor(cpus(1.0), 1)
            });
            let call = ids.call(actor, "add");
            let (task, output) = (call.task_id, call.return_id);
            if sent_directly {
                state.direct_call_sent(CALLER, call, Some(worker), JOB, None);
            } else {
                state.submit_now(call);
                assert_eq!(executed_ids(&mut inbox), [task]);
            }
            state.cancel(output).expect("cancel");
            let asked = std::iter::from_fn(|| inbox.try_recv().ok())
                .any(|m| matches!(m, NodeToWorker::CancelCall { task_id } if task_id == task));
            assert!(
                asked,
                "directly {sent_directly}: the worker is asked to drop it"
            );
            assert_eq!(error_kind(&state.value(output)), "pending");
            state.worker_exited(worker, "killed");
            state.schedule();
            let (restarted, inbox) = state.start_one();
            let (_, mut inbox) = state.constructed(actor, restarted, inbox);
            assert!(executed_ids(&mut inbox).is_empty(), "not retried");
            assert_eq!(error_kind(&state.value(output)), "Cancelled");
            assert!(state.direct_calls.is_empty());
        }
    }

    #[test]
    fn a_calls_arguments_are_known_once_its_caller_recorded_it_or_left() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(2.0), 1 << 20);
        let spec = ids.actor(cpus(1.0), 0);
        let actor = spec.actor_id;
        let (worker, _) = state.start_actor(spec);
        // Another actor's worker calls it.
        let (caller, _) = state.start_actor(ids.actor(cpus(1.0), 0));
        let call = ids.call(actor, "add");
        let task = call.task_id;
        assert!(!state.direct_call_known(task, caller), "not recorded yet");
        state.direct_call_sent(caller, call, Some(worker), JOB, None);
        assert!(state.direct_call_known(task, caller));
        let unrecorded = TaskId(ids.next());
        state.worker_exited(caller, "left");
        assert!(
            state.direct_call_known(unrecorded, caller),
            "a caller that left sends nothing more"
        );
    }

    #[test]
    fn a_callers_calls_fail_when_it_goes_away_and_the_actor_lives_on() {
        let ids = Ids::new();
        let (mut state, actor, worker, _) = one_actor(ids.actor(cpus(1.0), 0));
        let (sent, held) = (ids.call(actor, "add"), ids.call(actor, "add"));
        let outputs = [sent.return_id, held.return_id];
        state.direct_call_sent(CALLER, sent, Some(worker), JOB, None);
        state.direct_call_sent(CALLER, held, None, JOB, None);
        state.worker_exited(CALLER, "left");
        state.schedule();
        for output in outputs {
            assert_eq!(error_kind(&state.value(output)), "ObjectLost");
        }
        assert!(state.actors[&actor].inflight.is_empty());
        assert!(state.direct_calls.is_empty());
        assert_eq!(state.actors[&actor].status, ActorStatus::Alive);
    }
}
