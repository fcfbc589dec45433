//! Actors (Ray's GCS actor manager): creation once resources are free, the
//! constructor run first on the actor's own worker, calls kept in order,
//! restarts within `max_restarts` (on another node if its node died), death
//! with every pending call failed, and the names of named actors. The table
//! here holds live actors only; a dead one leaves a summary in
//! `dead_actors.rs`.
//!
//! Over 600 lines only with its unit tests (the code is under 350).

use super::dead_actors::DeadActor;
use super::executables::Code;
use super::tasks::{TaskKind, TaskRecord};
use super::NodeState;
use crate::error::{Error, Result};
use crate::ids::{ActorId, JobId, ObjectId, TaskId, WorkerId};
use crate::protocol::*;
use crate::resources::{Allocation, ResourceSet, SchedulingStrategy};
use std::collections::VecDeque;

/// Where a live actor is; a dead one moves to `dead_actors.rs`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum ActorStatus {
    WaitingForResources,
    Starting,
    Alive,
}

pub(super) struct ActorRecord {
    pub(super) spec: ActorSpec,
    pub(super) job: JobId,
    /// Where its name lives.
    pub(super) namespace: String,
    pub(super) status: ActorStatus,
    pub(super) allocation: Option<Allocation>,
    pub(super) worker: Option<WorkerId>,
    pub(super) restarts_used: u32,
    /// Calls not yet sent, in submission order.
    pub(super) pending: VecDeque<TaskId>,
    /// Calls sent to the worker, in order.
    pub(super) inflight: VecDeque<TaskId>,
    /// The creator's executable, which the actor's worker runs.
    pub(super) code: Code,
}

impl NodeState {
    /// An actor created for `job` by a process running `code`.
    pub(super) fn create_actor(
        &mut self,
        spec: ActorSpec,
        job: JobId,
        code: Code,
    ) -> Result<ActorId> {
        let namespace = self.namespace_of(job);
        if let Some(name) = &spec.name {
            let key = (namespace.clone(), name.clone());
            if let Some(&existing) = self.named_actors.get(&key) {
                if self.actors.contains_key(&existing) {
                    if spec.get_if_exists {
                        self.release_args(&spec.args);
                        self.take_handle(existing);
                        return Ok(existing);
                    }
                    self.release_args(&spec.args);
                    return Err(Error::NameTaken { name: name.clone() });
                }
            }
        }
        if !self.pool.feasible(&spec.resources, &spec.strategy) {
            self.release_args(&spec.args);
            return Err(Error::Infeasible {
                what: format!("actor {}", spec.class),
                requested: spec.resources.to_string(),
                available: self.pool.largest_node(),
            });
        }
        let id = spec.actor_id;
        if let Some(name) = &spec.name {
            self.named_actors
                .insert((namespace.clone(), name.clone()), id);
        }
        self.actors.insert(
            id,
            ActorRecord {
                spec,
                job,
                namespace,
                status: ActorStatus::WaitingForResources,
                allocation: None,
                worker: None,
                restarts_used: 0,
                pending: VecDeque::new(),
                inflight: VecDeque::new(),
                code,
            },
        );
        self.actors_waiting.push_back(id);
        self.take_handle(id);
        Ok(id)
    }

    pub(super) fn start_waiting_actors(&mut self) {
        let mut still_waiting = VecDeque::new();
        while let Some(id) = self.actors_waiting.pop_front() {
            let Some(actor) = self.actors.get(&id) else {
                continue;
            };
            if actor.status != ActorStatus::WaitingForResources {
                continue;
            }
            let (request, strategy) = (actor.spec.resources.clone(), actor.spec.strategy.clone());
            let code = actor.code.clone();
            match self.pool.try_acquire(&request, &strategy) {
                Some(allocation) => {
                    let node = allocation.node.clone();
                    if let Some(error) = self.unavailable_on(&node, &code) {
                        self.pool.release(&allocation);
                        self.actor_failed(id, error);
                        continue;
                    }
                    let worker = self.next_worker_id();
                    let gpu_ids = allocation.gpu_ids();
                    let actor = self.actors.get_mut(&id).expect("actor seen above");
                    actor.allocation = Some(allocation);
                    actor.status = ActorStatus::Starting;
                    actor.worker = Some(worker);
                    self.add_worker(worker, &node, gpu_ids, Some(id), code, None);
                }
                None => still_waiting.push_back(id),
            }
        }
        self.actors_waiting = still_waiting;
        // Only the actors noted since the last pass: the work per event does
        // not grow with how many actors have ever existed.
        for id in std::mem::take(&mut self.actors_with_calls) {
            let Some(actor) = self.actors.get(&id) else {
                continue;
            };
            let Some(worker) = actor.worker.filter(|_| actor.status == ActorStatus::Alive) else {
                continue;
            };
            while let Some(task) = self.actors.get_mut(&id).and_then(|a| a.pending.pop_front()) {
                self.assign(worker, task);
            }
        }
    }

    /// `actor` has calls to send once it is alive: the next `schedule` sends
    /// them (an actor still starting is noted again when it turns alive).
    pub(super) fn note_pending_calls(&mut self, actor: ActorId) {
        self.actors_with_calls.push(actor);
    }

    /// The actor's worker said hello: run its constructor there first.
    pub(super) fn start_actor_on(&mut self, actor: ActorId, worker: WorkerId) {
        let Some(record) = self.actors.get(&actor) else {
            return;
        };
        let task_id = TaskId(self.ids.next());
        let spec = TaskSpec {
            task_id,
            return_id: ObjectId(self.ids.next()),
            invocation: Invocation::ActorCreate {
                class: record.spec.class.clone(),
                max_concurrency: record.spec.max_concurrency,
            },
            args: record.spec.args.clone(),
            actor: Some(actor),
            resources: ResourceSet::default(),
            strategy: SchedulingStrategy::Default,
            max_retries: 0,
            retry_exceptions: false,
        };
        let job = record.job;
        self.tasks.insert(
            task_id,
            TaskRecord::new(
                spec,
                job,
                TaskKind::ActorCreate(actor),
                0,
                record.code.clone(),
            ),
        );
        self.assign(worker, task_id);
    }

    pub(super) fn actor_process_died(&mut self, actor: ActorId, message: &str) {
        let Some(record) = self.actors.get_mut(&actor) else {
            return;
        };
        if record.restarts_used >= record.spec.max_restarts {
            let message = format!(
                "its process died ({message}) and max_restarts={} is used up",
                record.spec.max_restarts
            );
            return self.actor_dead(actor, message);
        }
        record.restarts_used += 1;
        record.status = ActorStatus::Starting;
        let inflight: Vec<TaskId> = record.inflight.drain(..).collect();
        let (mut retried, mut retried_direct) = (Vec::new(), Vec::new());
        for task in inflight {
            match self.tasks.get_mut(&task) {
                Some(t) if t.cancelled => self.finish_cancelled(task),
                Some(t) if t.retries_left > 0 => {
                    t.retries_left -= 1;
                    match t.direct_caller {
                        Some(_) => retried_direct.push(task),
                        None => retried.push(task),
                    }
                }
                Some(t) => {
                    let error = Error::ActorDied {
                        actor: t.spec.invocation.display_name(),
                        message: format!("its process died ({message}) while running this call; the actor is restarting"),
                    };
                    self.finish_task(task, Err(error));
                }
                None => {}
            }
        }
        let record = self.actors.get_mut(&actor).expect("actor seen above");
        for task in retried.into_iter().rev() {
            record.pending.push_front(task);
        }
        // Calls sent directly go through the head from now on, after those
        // it sent itself (their arguments may still be on their way).
        for task in retried_direct {
            self.take_over_direct_call(task);
        }
        let record = self.actors.get_mut(&actor).expect("actor seen above");
        let node_alive = record
            .allocation
            .as_ref()
            .is_some_and(|a| self.pool.node(&a.node).is_some());
        if !node_alive {
            // Its node is gone: start over on whichever node has room.
            record.allocation = None;
            record.worker = None;
            record.status = ActorStatus::WaitingForResources;
            self.actors_waiting.push_back(actor);
            return;
        }
        let allocation = record.allocation.as_ref().expect("checked above");
        let (node, gpu_ids) = (allocation.node.clone(), allocation.gpu_ids());
        let code = record.code.clone();
        let worker = self.next_worker_id();
        self.actors
            .get_mut(&actor)
            .expect("actor seen above")
            .worker = Some(worker);
        self.add_worker(worker, &node, gpu_ids, Some(actor), code, None);
    }

    pub(super) fn actor_dead(&mut self, actor: ActorId, message: String) {
        let Some(record) = self.actors.get(&actor) else {
            return;
        };
        let error = Error::ActorDied {
            actor: format!("{} ({actor})", record.spec.class),
            message,
        };
        self.actor_failed(actor, error);
    }

    /// Ends `actor` for good: every pending and later call fails with `error`.
    pub(super) fn actor_failed(&mut self, actor: ActorId, error: Error) {
        let Some(record) = self.actors.remove(&actor) else {
            return;
        };
        // Callers waiting for the actor's route learn it is dead.
        self.ready_events += 1;
        let ActorRecord {
            spec,
            job,
            namespace,
            allocation,
            restarts_used,
            inflight,
            pending,
            ..
        } = record;
        if let Some(allocation) = &allocation {
            self.pool.release(allocation);
        }
        if let Some(name) = &spec.name {
            let key = (namespace, name.clone());
            if self.named_actors.get(&key) == Some(&actor) {
                self.named_actors.remove(&key);
            }
        }
        self.release_args(&spec.args);
        // Remembered before its calls fail, so whatever those failures set
        // off finds the actor dead, with this cause.
        self.dead_actors.insert(
            actor,
            DeadActor {
                class: spec.class,
                name: spec.name,
                job,
                node: allocation.map(|a| a.node),
                restarts_used,
                detached: spec.detached,
                cause: error.clone(),
            },
        );
        for call in inflight.into_iter().chain(pending) {
            self.finish_task(call, Err(error.clone()));
        }
    }

    /// The job and class of `actor`, alive or remembered dead.
    pub(super) fn actor_job_and_class(&self, actor: ActorId) -> Option<(JobId, &str)> {
        match self.actors.get(&actor) {
            Some(live) => Some((live.job, &live.spec.class)),
            None => self
                .dead_actors
                .get(&actor)
                .map(|dead| (dead.job, dead.class.as_str())),
        }
    }

    pub(super) fn kill_actor(&mut self, actor: ActorId) -> Result<()> {
        if !self.actors.contains_key(&actor) && self.dead_actors.get(&actor).is_none() {
            return Err(Error::ActorNotFound {
                name: actor.to_string(),
            });
        }
        self.end_actor(actor, "killed by oxray_core::kill".into());
        Ok(())
    }

    /// Ends an actor for good, for `message`, and stops its process.
    pub(super) fn end_actor(&mut self, actor: ActorId, message: String) {
        let worker = self.actors.get(&actor).and_then(|a| a.worker);
        self.actor_dead(actor, message);
        if let Some(worker) = worker {
            if let Some(w) = self.workers.remove(&worker) {
                self.effects.push(w.stop(worker));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::dead_actors::DeadActors;
    use super::super::test_support::*;
    use super::*;
    use crate::resources::CPU;

    #[test]
    fn an_actor_holds_its_resources_and_runs_its_calls_in_order() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(2.0), 1 << 20);
        let spec = ids.actor(cpus(1.0), 0);
        let actor = spec.actor_id;
        let (worker, mut inbox) = state.start_actor(spec);
        assert_eq!(state.free(HEAD, CPU), 1.0);
        assert_eq!(state.actors[&actor].worker, Some(worker));
        let calls: Vec<TaskSpec> = (0..3).map(|_| ids.call(actor, "add")).collect();
        let tasks: Vec<TaskId> = calls.iter().map(|c| c.task_id).collect();
        for call in calls {
            state.submit_now(call);
        }
        assert_eq!(executed_ids(&mut inbox), tasks, "sent in submission order");
        assert_eq!(state.actors[&actor].inflight, VecDeque::from(tasks.clone()));
        for task in &tasks {
            state.finish(worker, *task, Ok(inline(b"")));
        }
        assert!(state.actors[&actor].inflight.is_empty());
        assert_eq!(
            state.free(HEAD, CPU),
            1.0,
            "the actor keeps its CPU between calls"
        );
    }

    #[test]
    fn a_concurrent_actor_runs_as_many_calls_as_its_max_concurrency() {
        // (max_concurrency, how many of four calls run at once)
        for (max_concurrency, at_once) in [(1, 1), (2, 2), (8, 4)] {
            let ids = Ids::new();
            let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
            let spec = ActorSpec {
                max_concurrency,
                ..ids.actor(cpus(1.0), 0)
            };
            let actor = spec.actor_id;
            state.create_actor(spec, JOB, None).expect("created");
            state.schedule();
            let (worker, mut inbox) = state.start_one();
            let create = executed(&mut inbox);
            assert!(
                matches!(&create[..], [run] if matches!(run.invocation,
                    Invocation::ActorCreate { max_concurrency: sent, .. } if sent == max_concurrency)),
                "the worker is told how many calls to run at once"
            );
            state.finish(worker, create[0].task_id, Ok(inline(b"")));
            let calls: Vec<TaskId> = (0..4)
                .map(|_| {
                    let call = ids.call(actor, "add");
                    let task = call.task_id;
                    state.submit_now(call);
                    task
                })
                .collect();
            let running = |state: &NodeState| {
                let rows = state.task_events.rows();
                calls
                    .iter()
                    .filter(|task| {
                        rows.iter()
                            .rfind(|row| row.task_id == **task)
                            .is_some_and(|row| row.state == TaskState::Running)
                    })
                    .count()
            };
            assert_eq!(
                running(&state),
                at_once,
                "max_concurrency {max_concurrency}"
            );
            state.finish(worker, calls[0], Ok(inline(b"")));
            assert_eq!(
                running(&state),
                at_once.min(3),
                "max_concurrency {max_concurrency}: the next call starts as one ends"
            );
        }
    }

    #[test]
    fn an_actor_is_restarted_after_its_worker_dies_until_max_restarts_is_used_up() {
        for max_restarts in [0, 1, 3] {
            let ids = Ids::new();
            let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
            let spec = ids.actor(cpus(1.0), max_restarts);
            let actor = spec.actor_id;
            let (mut worker, _) = state.start_actor(spec);
            let mut restarts = 0;
            loop {
                state.worker_exited(worker, "killed");
                state.schedule();
                let spawns: Vec<(WorkerId, String)> = state
                    .take_effects()
                    .into_iter()
                    .filter_map(|d| match d {
                        Did::Spawn { worker, node } => Some((worker, node)),
                        _ => None,
                    })
                    .collect();
                if state.is_dead(actor) {
                    assert!(spawns.is_empty(), "a dead actor gets no worker");
                    break;
                }
                restarts += 1;
                assert_eq!(state.actors[&actor].status, ActorStatus::Starting);
                assert_eq!(state.actors[&actor].restarts_used, restarts);
                assert_eq!(spawns.len(), 1);
                assert_eq!(spawns[0].1, HEAD, "its node is alive: it restarts there");
                assert_ne!(spawns[0].0, worker);
                assert_eq!(
                    state.free(HEAD, CPU),
                    0.0,
                    "it keeps its CPU while restarting"
                );
                worker = spawns[0].0;
                let inbox = state.connect(worker);
                state.constructed(actor, worker, inbox);
            }
            assert_eq!(restarts, max_restarts);
            assert_eq!(state.free(HEAD, CPU), 1.0, "a dead actor's CPU is released");
            let call = ids.call(actor, "add");
            let output = call.return_id;
            state.submit_now(call);
            assert_eq!(error_kind(&state.value(output)), "ActorDied");
        }
    }

    #[test]
    fn calls_in_flight_when_the_worker_dies_are_retried_within_max_task_retries() {
        // (max_task_retries, the call's outcome after the restart)
        for (retries, outcome) in [(0, "ActorDied"), (1, "pending")] {
            let ids = Ids::new();
            let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
            let spec = ActorSpec {
                max_task_retries: retries,
                ..ids.actor(cpus(1.0), 1)
            };
            let actor = spec.actor_id;
            let (worker, mut inbox) = state.start_actor(spec);
            let call = ids.call(actor, "add");
            let (task, output) = (call.task_id, call.return_id);
            state.submit_now(call);
            assert_eq!(executed_ids(&mut inbox), vec![task]);
            state.worker_exited(worker, "killed");
            state.schedule();
            assert_eq!(error_kind(&state.value(output)), outcome);
            let (new_worker, inbox) = state.start_one();
            let (_, mut inbox) = state.constructed(actor, new_worker, inbox);
            let rerun = executed_ids(&mut inbox);
            assert_eq!(rerun == vec![task], retries > 0, "retries={retries}");
        }
    }

    #[test]
    fn a_failed_constructor_kills_the_actor_and_stops_its_worker() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
        let spec = ids.actor(cpus(1.0), 5);
        let actor = spec.actor_id;
        state.create_actor(spec, JOB, None).expect("created");
        state.schedule();
        let (worker, mut inbox) = state.start_one();
        let constructor = executed_ids(&mut inbox)[0];
        let error = Error::TaskFailed {
            function: "Counter::new".into(),
            message: "raised".into(),
        };
        state.finish(worker, constructor, Err(error));
        assert!(state.is_dead(actor));
        assert_eq!(
            state.take_effects(),
            vec![Did::Stop {
                worker,
                node: HEAD.into()
            }]
        );
        assert_eq!(state.free(HEAD, CPU), 1.0);
    }

    #[test]
    fn an_actor_waits_for_resources_and_starts_when_they_free_up() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
        let first = ids.actor(cpus(1.0), 0);
        let second = ids.actor(cpus(1.0), 0);
        let (first_id, second_id) = (first.actor_id, second.actor_id);
        state.start_actor(first);
        state.create_actor(second, JOB, None).expect("created");
        state.schedule();
        assert_eq!(
            state.actors[&second_id].status,
            ActorStatus::WaitingForResources
        );
        assert!(state.take_spawns().is_empty());
        state.kill_actor(first_id).expect("kill");
        state.schedule();
        let spawns = state.take_spawns();
        assert_eq!(
            spawns.len(),
            1,
            "the waiting actor starts once the CPU is free"
        );
        assert_eq!(state.actors[&second_id].status, ActorStatus::Starting);
        assert_eq!(state.actors[&second_id].worker, Some(spawns[0].0));
    }

    /// Calls reach an actor through the set of actors noted since the last
    /// pass, never a look over every actor: a call to a starting actor waits
    /// until it turns alive, a call to a live one goes out at once, and the
    /// set is empty after each pass however many actors exist.
    #[test]
    fn calls_go_out_from_the_noted_actors_only() {
        // (actors alive beside it, the call arrives before the constructor ends)
        for (others, while_starting) in [(0, false), (0, true), (50, false), (50, true)] {
            let ids = Ids::new();
            let mut state = NodeState::for_test(cpus(f64::from(others + 1)), 1 << 20);
            for _ in 0..others {
                state.start_actor(ids.actor(cpus(1.0), 0));
            }
            let spec = ids.actor(cpus(1.0), 0);
            let actor = spec.actor_id;
            state.create_actor(spec, JOB, None).expect("created");
            state.schedule();
            let (worker, inbox) = state.start_one();
            let call = ids.call(actor, "add");
            let call_id = call.task_id;
            if while_starting {
                state.submit_now(call.clone());
                assert_eq!(state.actors[&actor].pending.len(), 1, "held while starting");
            }
            let (_, mut inbox) = state.constructed(actor, worker, inbox);
            state.schedule();
            if !while_starting {
                state.submit_now(call);
            }
            assert_eq!(executed_ids(&mut inbox), vec![call_id], "others={others}");
            assert!(state.actors_with_calls.is_empty());
        }
    }

    /// Dead actors are kept for the state API up to the head's limit, the
    /// oldest forgotten first; a call to a forgotten one fails as a call to
    /// an unknown actor, a call to a remembered one with its own death.
    #[test]
    fn dead_actors_are_kept_up_to_the_limit_oldest_forgotten_first() {
        // (limit, actors created and killed, records left)
        for (limit, killed, left) in [(3, 2, 2), (3, 3, 3), (3, 10, 3), (0, 4, 0)] {
            let ids = Ids::new();
            let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
            state.dead_actors = DeadActors::new(limit);
            let mut actors = Vec::new();
            for _ in 0..killed {
                let spec = ids.actor(cpus(1.0), 0);
                actors.push(spec.actor_id);
                state.start_actor(spec);
                state.kill_actor(*actors.last().unwrap()).expect("killed");
                state.schedule();
            }
            assert!(
                state.actors.is_empty(),
                "the live table holds no dead actor"
            );
            assert_eq!(
                state.dead_actors.len(),
                left,
                "limit {limit}, killed {killed}"
            );
            let (forgotten, kept) = actors.split_at(killed - left);
            assert!(forgotten.iter().all(|a| state.dead_actors.get(a).is_none()));
            assert!(kept.iter().all(|a| state.is_dead(*a)));
            for (actor, message) in [
                (forgotten.last(), "no such actor"),
                (kept.last(), "killed by oxray_core::kill"),
            ] {
                let Some(actor) = actor else { continue };
                let call = ids.call(*actor, "add");
                let output = call.return_id;
                state.submit_now(call);
                match state.value(output) {
                    Some(Err(Error::ActorDied { message: m, .. })) => {
                        assert!(m.contains(message), "{m}")
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }
}
