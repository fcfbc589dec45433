//! What waits for resources: the demands `oxray status` lists (`ray
//! status`'s Demands), and telling a job's driver when its actors have
//! waited long, as Ray's autoscaler prints "Warning: The following resource
//! request cannot be scheduled right now" into the driver's output.
//!
//! Without it a run asking for more CPUs than the cluster has free waits in
//! silence: its EnvRunners sit in the waiting queue while other jobs hold
//! the cluster. A periodic pass (every [`PERIOD`], off the event path)
//! notes when each waiting actor was first seen waiting and, for each job
//! with actors waiting longer than [`WARN_AFTER`], gives one line for its
//! driver, at most once per [`REPEAT_EVERY`]. The pass walks only the
//! actors waiting now, never every actor that ever existed.

use super::actors::{ActorRecord, ActorStatus};
use super::NodeState;
use crate::ids::{ActorId, JobId};
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

/// The first time each waiting actor was seen waiting, and when each job
/// was last warned.
#[derive(Default)]
pub(super) struct ResourceWarnings {
    waiting_since: FxHashMap<ActorId, Instant>,
    last_warned: FxHashMap<JobId, Instant>,
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
        // Per job: each waiting class with its request, and how many.
        let mut overdue: BTreeMap<JobId, BTreeMap<(String, String), usize>> = BTreeMap::new();
        for (id, actor) in self.actors_waiting_now() {
            let since = seen_before.get(&id).copied().unwrap_or(now);
            waiting_since.insert(id, since);
            if now.duration_since(since) < WARN_AFTER {
                continue;
            }
            let shape = (actor.spec.class.clone(), actor.spec.resources.to_string());
            *overdue
                .entry(actor.job)
                .or_default()
                .entry(shape)
                .or_default() += 1;
        }
        let warnings = &mut self.resource_warnings;
        warnings.waiting_since = waiting_since;
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
                .map(|((class, request), count)| format!("{count} × {class} asking for {request}"))
                .collect();
            lines.push((
                job,
                format!(
                    "Warning: actors have waited over {} s for resources that no node has free: \
                     {}. Free now: {}{more_nodes}. Actors (this job's or other jobs') hold the \
                     rest: end some, add nodes (`oxray start --address HEAD`), or ask for fewer.",
                    WARN_AFTER.as_secs(),
                    asked.join(", "),
                    free.join("; "),
                ),
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

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
        let warned = state.resource_warnings(later);
        assert_eq!(warned.len(), 1, "{warned:?}");
        let (job, line) = &warned[0];
        assert_eq!(*job, JOB);
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
}
