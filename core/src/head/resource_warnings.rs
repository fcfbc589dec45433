//! What waits for resources: the demands `oxray status` lists (`ray
//! status`'s Demands), and telling a job's driver when its work has waited
//! long, as Ray's autoscaler prints "Warning: The following resource
//! request cannot be scheduled right now" into the driver's output.
//!
//! Without it a run asking for more CPUs than the cluster has free waits in
//! silence: its EnvRunners sit in the waiting queue, its Learners' placement
//! group stays pending, or its tasks sit in their shape queue, while actors
//! hold the cluster. A periodic pass (every [`PERIOD`], off the event path)
//! notes when each waiting actor and pending placement group was first seen
//! waiting, and since when each shape queue's first task has been first;
//! for each job with work waiting longer than [`WARN_AFTER`] it gives one
//! line for its driver, at most once per [`REPEAT_EVERY`]. Queued tasks
//! count only while no task holds resources anywhere, Ray's test for a
//! resource deadlock: a task that runs will end and free its share, so a
//! queue behind it is merely busy. The pass walks only the actors waiting,
//! the placement groups that exist and the tasks queued now, never every
//! actor that ever existed.

use super::actors::{ActorRecord, ActorStatus};
use super::NodeState;
use crate::ids::{ActorId, JobId, TaskId};
use crate::protocol::ResourceDemand;
use crate::resources::ResourceSet;
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often the head looks for actors waiting too long.
pub(super) const PERIOD: Duration = Duration::from_secs(5);

/// How long an actor waits for resources before its driver hears of it.
const WARN_AFTER: Duration = Duration::from_secs(10);

/// The shortest time between two warnings to one job.
const REPEAT_EVERY: Duration = Duration::from_secs(30);

/// The first time each waiting actor and pending placement group was seen
/// waiting, each shape queue's first task and since when it has been first,
/// and when each job was last warned.
#[derive(Default)]
pub(super) struct ResourceWarnings {
    waiting_since: FxHashMap<ActorId, Instant>,
    groups_pending_since: FxHashMap<u64, Instant>,
    /// Keyed by shape queue and its first task: a new first task is a new
    /// key, so a queue that moves is never overdue.
    queue_fronts: FxHashMap<(String, TaskId), Instant>,
    last_warned: FxHashMap<JobId, Instant>,
}

/// Whether `key`, seen waiting at `now`, has waited [`WARN_AFTER`]; records
/// in `seen` when it was first seen, carried over from the previous pass's
/// `before` (what no longer waits is not carried, so it is forgotten).
fn waited_too_long<K: std::hash::Hash + Eq>(
    before: &FxHashMap<K, Instant>,
    seen: &mut FxHashMap<K, Instant>,
    key: K,
    now: Instant,
) -> bool {
    let since = before.get(&key).copied().unwrap_or(now);
    seen.insert(key, since);
    now.duration_since(since) >= WARN_AFTER
}

impl NodeState {
    /// The actors waiting for resources now.
    fn actors_waiting_now(&self) -> impl Iterator<Item = (ActorId, &ActorRecord)> {
        self.actors_waiting.iter().filter_map(|id| {
            let actor = self.actors.get(id)?;
            (actor.status == ActorStatus::WaitingForResources).then_some((*id, actor))
        })
    }

    /// Actors waiting to start and ready tasks queued, by the resources they
    /// ask for, largest count first.
    pub(super) fn resource_demands(&self) -> Vec<ResourceDemand> {
        let mut by_request: BTreeMap<String, ResourceDemand> = BTreeMap::new();
        let mut add = |request: &ResourceSet, pending: usize| {
            by_request
                .entry(request.to_string())
                .or_insert_with(|| ResourceDemand {
                    request: request.clone(),
                    pending: 0,
                })
                .pending += pending;
        };
        for (_, actor) in self.actors_waiting_now() {
            add(&actor.spec.resources, 1);
        }
        for queue in self.queues.values().filter(|q| !q.tasks.is_empty()) {
            add(&queue.request, queue.tasks.len());
        }
        let mut demands: Vec<ResourceDemand> = by_request.into_values().collect();
        demands.sort_by_key(|demand| std::cmp::Reverse(demand.pending));
        demands
    }

    /// The warnings due at `now`, one per job: (job, line for its driver).
    pub(super) fn resource_warnings(&mut self, now: Instant) -> Vec<(JobId, String)> {
        // Rebuilt from the actors waiting now: those that no longer wait
        // are forgotten.
        let seen_before = std::mem::take(&mut self.resource_warnings.waiting_since);
        let mut waiting_since = FxHashMap::default();
        let mut overdue = Overdue::new();
        for (id, actor) in self.actors_waiting_now() {
            if !waited_too_long(&seen_before, &mut waiting_since, id, now) {
                continue;
            }
            add_one(
                &mut overdue,
                actor.job,
                format!("actor {}", actor.spec.class),
                actor.spec.resources.to_string(),
            );
        }
        self.resource_warnings.waiting_since = waiting_since;
        self.add_overdue_groups(now, &mut overdue);
        self.add_overdue_tasks(now, &mut overdue);
        let warnings = &mut self.resource_warnings;
        warnings
            .last_warned
            .retain(|job, _| overdue.contains_key(job));
        if overdue.is_empty() {
            return Vec::new();
        }
        let free: Vec<String> = self
            .pool
            .nodes()
            .take(3)
            .map(|(node, pool)| format!("{node} {}", pool.available()))
            .collect();
        let more_nodes = match self.pool.nodes().count() {
            n if n > 3 => format!(", and {} more nodes", n - 3),
            _ => String::new(),
        };
        let mut lines = Vec::new();
        for (job, shapes) in overdue {
            if let Some(last) = warnings.last_warned.get(&job) {
                if now.duration_since(*last) < REPEAT_EVERY {
                    continue;
                }
            }
            warnings.last_warned.insert(job, now);
            let asked: Vec<String> = shapes
                .iter()
                .map(|((what, request), count)| format!("{count} × {what} asking for {request}"))
                .collect();
            lines.push((
                job,
                format!(
                    "Warning: waiting over {} s for resources that no node has free: {}. Free \
                     now: {}{more_nodes}. Actors or placement groups (this job's or other \
                     jobs') hold the rest: end some, add nodes (`oxray start --address HEAD`), \
                     or ask for fewer.",
                    WARN_AFTER.as_secs(),
                    asked.join(", "),
                    free.join("; "),
                ),
            ));
        }
        lines
    }
}

/// Per job: each kind of waiting work (`actor CLASS`, `placement group
/// (STRATEGY)` or `task NAME`) with its request, and how many.
type Overdue = BTreeMap<JobId, BTreeMap<(String, String), usize>>;

/// Counts one piece of `job`'s work, `what` asking for `request`.
fn add_one(overdue: &mut Overdue, job: JobId, what: String, request: String) {
    *overdue
        .entry(job)
        .or_default()
        .entry((what, request))
        .or_default() += 1;
}

impl NodeState {
    /// Adds to `overdue` the placement groups pending for [`WARN_AFTER`].
    fn add_overdue_groups(&mut self, now: Instant, overdue: &mut Overdue) {
        let seen_before = std::mem::take(&mut self.resource_warnings.groups_pending_since);
        let mut pending_since = FxHashMap::default();
        let pending = self
            .placement_groups
            .iter()
            .filter(|(_, group)| group.allocations.is_empty() && !group.bundles.is_empty());
        for (id, group) in pending {
            if !waited_too_long(&seen_before, &mut pending_since, *id, now) {
                continue;
            }
            add_one(
                overdue,
                group.job,
                format!("placement group ({:?})", group.strategy),
                crate::placement::describe_bundles(&group.bundles),
            );
        }
        self.resource_warnings.groups_pending_since = pending_since;
    }

    /// Adds to `overdue` the tasks of each shape queue whose first task has
    /// been first for [`WARN_AFTER`] while no task holds resources.
    fn add_overdue_tasks(&mut self, now: Instant, overdue: &mut Overdue) {
        let seen_before = std::mem::take(&mut self.resource_warnings.queue_fronts);
        let mut fronts = FxHashMap::default();
        let tasks_hold_resources = self
            .workers
            .values()
            .any(|worker| worker.lease.as_ref().is_some_and(|lease| !lease.lent_out));
        for (key, queue) in &self.queues {
            let Some(&first) = queue.tasks.front() else {
                continue;
            };
            let overdue_front =
                waited_too_long(&seen_before, &mut fronts, (key.clone(), first), now);
            if tasks_hold_resources || !overdue_front {
                continue;
            }
            for task in queue.tasks.iter().filter_map(|id| self.tasks.get(id)) {
                add_one(
                    overdue,
                    task.job,
                    format!("task {}", task.spec.invocation.display_name()),
                    queue.request.to_string(),
                );
            }
        }
        self.resource_warnings.queue_fronts = fronts;
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    /// The one warning in `warned`, which must go to [`JOB`].
    fn only_warning_to_job(warned: Vec<(JobId, String)>) -> String {
        match <[(JobId, String); 1]>::try_from(warned) {
            Ok([(job, line)]) if job == JOB => line,
            other => panic!("one warning to {JOB:?} expected: {other:?}"),
        }
    }

    #[test]
    fn waiting_actors_are_demands_and_their_job_hears_of_them_once_per_repeat_period() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(2.0), 1 << 20);
        let fits = ids.actor(cpus(2.0), 0);
        state.create_actor(fits, JOB, None).expect("created");
        let waits = ids.actor(cpus(1.0), 0);
        let waiting = waits.actor_id;
        state.create_actor(waits, JOB, None).expect("created");
        state.schedule();
        let start = Instant::now();
        assert_eq!(
            state.resource_demands(),
            [ResourceDemand {
                request: cpus(1.0),
                pending: 1
            }]
        );

        // First seen waiting now: nothing to say until WARN_AFTER.
        assert!(state.resource_warnings(start).is_empty());
        assert!(state.resource_warnings(start + WARN_AFTER / 2).is_empty());
        let later = start + WARN_AFTER;
        let line = only_warning_to_job(state.resource_warnings(later));
        assert!(line.contains("1 × "), "{line}");
        assert!(line.contains("asking for {CPU: 1}"), "{line}");
        assert!(line.contains("{CPU: 0}"), "{line}");
        // Not again within REPEAT_EVERY; again after it.
        assert!(state.resource_warnings(later + PERIOD).is_empty());
        assert_eq!(state.resource_warnings(later + REPEAT_EVERY).len(), 1);

        // Once it no longer waits, it is forgotten.
        state.kill_actor(waiting).expect("killed");
        assert!(state.resource_warnings(later + 3 * REPEAT_EVERY).is_empty());
        assert!(state.resource_warnings.waiting_since.is_empty());
        assert!(state.resource_demands().is_empty());
    }

    #[test]
    fn queued_tasks_are_warned_of_only_while_no_task_holds_resources() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
        let start = Instant::now();

        // A task runs on the only CPU: the one queued behind it waits its
        // turn, which is no reason to warn.
        let first = ids.task("first", cpus(1.0), Vec::new());
        let first_task = first.task_id;
        state.submit_now(first);
        let (worker, mut inbox) = state.start_one();
        assert_eq!(executed_ids(&mut inbox), [first_task]);
        let queued = ids.task("queued", cpus(1.0), Vec::new());
        let queued_task = queued.task_id;
        state.submit_now(queued);
        assert!(state.resource_warnings(start).is_empty());
        assert!(state.resource_warnings(start + 2 * WARN_AFTER).is_empty());

        // It ends and the queued task runs; then an actor takes the CPU and
        // tasks queue behind it, which only ending the actor would free.
        state.finish(worker, first_task, Ok(inline(b"")));
        assert_eq!(executed_ids(&mut inbox), [queued_task]);
        state.finish(worker, queued_task, Ok(inline(b"")));
        let later = start + 3 * WARN_AFTER;
        let (_actor_worker, _actor_inbox) = state.start_actor(ids.actor(cpus(1.0), 0));
        for _ in 0..2 {
            state.submit_now(ids.task("stuck", cpus(1.0), Vec::new()));
        }
        assert!(state.resource_warnings(later).is_empty());
        let line = only_warning_to_job(state.resource_warnings(later + WARN_AFTER));
        assert!(
            line.contains("2 × task stuck asking for {CPU: 1}"),
            "{line}"
        );
        assert!(line.contains("{CPU: 0}"), "{line}");
    }

    #[test]
    fn a_pending_placement_group_is_warned_of_until_it_is_reserved() {
        use crate::placement::PlacementStrategy;
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(2.0), 1 << 20);
        let (_actor_worker, _actor_inbox) = state.start_actor(ids.actor(cpus(2.0), 0));
        let bundles = vec![cpus(1.0), cpus(1.0)];
        state
            .create_placement_group(7, bundles, PlacementStrategy::Spread, JOB)
            .expect("feasible on the idle cluster");
        state.schedule();
        let start = Instant::now();
        assert!(state.resource_warnings(start).is_empty());
        let line = only_warning_to_job(state.resource_warnings(start + WARN_AFTER));
        assert!(
            line.contains("1 × placement group (Spread) asking for {CPU: 1} * 2"),
            "{line}"
        );
        // Reserved once a node joins: nothing more to say, nothing kept.
        let _joined = state.join("b", cpus(2.0));
        state.schedule();
        assert!(state.placement_group_ready(7).expect("known"));
        assert!(state.resource_warnings(start + 3 * REPEAT_EVERY).is_empty());
        assert!(state.resource_warnings.groups_pending_since.is_empty());
    }
}
