//! Placement groups (Ray's GCS placement group manager): a group's bundles
//! are reserved all or nothing, in creation order, on nodes the strategy
//! allows; removing a group kills the actors placed in it, cancels its tasks
//! (queued or running) and gives its bundles back.

use super::tasks::TaskKind;
use super::NodeState;
use crate::error::{Error, Result};
use crate::ids::{ActorId, JobId, ObjectId};
use crate::placement::{self, PlacementStrategy};
use crate::resources::{Allocation, ResourcePool, ResourceSet, SchedulingStrategy};

pub(super) struct PlacementGroupRecord {
    pub(super) job: JobId,
    pub(super) bundles: Vec<ResourceSet>,
    pub(super) strategy: PlacementStrategy,
    /// One per bundle once reserved; empty while pending.
    pub(super) allocations: Vec<Allocation>,
}

impl NodeState {
    pub(super) fn create_placement_group(
        &mut self,
        id: u64,
        bundles: Vec<ResourceSet>,
        strategy: PlacementStrategy,
        job: JobId,
    ) -> Result<()> {
        let idle: Vec<ResourcePool> = self
            .pool
            .node_pools()
            .iter()
            .map(|(_, p)| ResourcePool::new(p.total().clone()))
            .collect();
        if placement::place(&idle, &bundles, strategy).is_none() {
            let shown: Vec<String> = bundles.iter().map(ResourceSet::to_string).collect();
            return Err(Error::Infeasible {
                what: format!("placement group ({strategy:?})"),
                requested: format!("[{}]", shown.join(", ")),
                available: format!(
                    "{} node(s), largest {}",
                    idle.len(),
                    self.pool.largest_node()
                ),
            });
        }
        self.placement_groups.insert(
            id,
            PlacementGroupRecord {
                job,
                bundles,
                strategy,
                allocations: Vec::new(),
            },
        );
        Ok(())
    }

    /// Reserves pending groups in creation order, each all or nothing;
    /// whether any still waits for resources.
    pub(super) fn reserve_pending_groups(&mut self) -> bool {
        let mut waiting = false;
        let pending: Vec<u64> = self
            .placement_groups
            .iter()
            .filter(|(_, g)| g.allocations.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in pending {
            let group = &self.placement_groups[&id];
            let pools: Vec<ResourcePool> = self
                .pool
                .node_pools()
                .iter()
                .map(|(_, p)| p.clone())
                .collect();
            let Some(nodes) = placement::place(&pools, &group.bundles, group.strategy) else {
                waiting = true;
                continue;
            };
            let placement: Vec<(usize, ResourceSet)> = nodes
                .into_iter()
                .zip(group.bundles.iter().cloned())
                .collect();
            let allocations = self.pool.reserve_bundles(id, &placement);
            self.placement_groups
                .get_mut(&id)
                .expect("group seen above")
                .allocations = allocations;
            self.ready_events += 1;
        }
        waiting
    }

    pub(super) fn placement_group_ready(&self, id: u64) -> Result<bool> {
        self.placement_groups
            .get(&id)
            .map(|g| !g.allocations.is_empty())
            .ok_or_else(|| Error::Runtime(format!("no placement group {id} (removed?)")))
    }

    pub(super) fn remove_placement_group(&mut self, id: u64) -> Result<()> {
        let group = self
            .placement_groups
            .remove(&id)
            .ok_or_else(|| Error::Runtime(format!("no placement group {id}")))?;
        let placed: Vec<ActorId> = self
            .actors
            .iter()
            .filter(|(_, a)| {
                matches!(a.spec.strategy, SchedulingStrategy::PlacementGroup { group, .. } if group == id)
            })
            .map(|(actor, _)| *actor)
            .collect();
        for actor in placed {
            self.kill_actor(actor)?;
        }
        // Its tasks can never run (queued) or would oversubscribe the node
        // once the bundles are freed (running): both are cancelled.
        let tasks: Vec<ObjectId> = self
            .tasks
            .values()
            .filter(|t| {
                t.kind == TaskKind::Stateless
                    && matches!(t.spec.strategy, SchedulingStrategy::PlacementGroup { group, .. } if group == id)
            })
            .map(|t| t.spec.return_id)
            .collect();
        for output in tasks {
            self.cancel(output)?;
        }
        self.pool.release_bundles(id, &group.allocations);
        self.ready_events += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::ids::WorkerId;
    use crate::protocol::{ActorSpec, TaskSpec};
    use crate::resources::CPU;

    /// Runs a task holding `n` CPUs on a fresh worker: (worker, task).
    fn occupy(state: &mut NodeState, ids: &Ids, n: f64) -> (WorkerId, crate::ids::TaskId) {
        let spec = ids.task("busy", cpus(n), Vec::new());
        let task = spec.task_id;
        state.submit_now(spec);
        let (worker, mut inbox) = state.start_one();
        assert_eq!(executed_ids(&mut inbox), vec![task]);
        (worker, task)
    }

    #[test]
    fn a_group_waits_while_resources_are_short_and_is_reserved_once_they_free() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(2.0), 1 << 20);
        let (worker, task) = occupy(&mut state, &ids, 2.0);
        state
            .create_placement_group(1, vec![cpus(1.0)], PlacementStrategy::Pack, JOB)
            .expect("feasible on the idle cluster");
        state.schedule();
        assert!(!state.placement_group_ready(1).expect("known"));
        state.finish(worker, task, Ok(inline(b"")));
        assert!(state.placement_group_ready(1).expect("known"));
        assert_eq!(state.placement_groups[&1].allocations[0].node, HEAD);
        assert_eq!(state.free(HEAD, CPU), 1.0, "the bundle holds one CPU");
        state.remove_placement_group(1).expect("removed");
        assert_eq!(state.free(HEAD, CPU), 2.0, "removal gives the bundle back");
        assert!(state.placement_group_ready(1).is_err());
    }

    #[test]
    fn a_pending_group_is_reserved_on_a_node_that_joins() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
        occupy(&mut state, &ids, 1.0);
        state
            .create_placement_group(1, vec![cpus(1.0)], PlacementStrategy::Pack, JOB)
            .expect("feasible");
        state.schedule();
        assert!(!state.placement_group_ready(1).expect("known"));
        let _b = state.join("b", cpus(1.0));
        state.schedule();
        assert!(state.placement_group_ready(1).expect("known"));
        assert_eq!(state.placement_groups[&1].allocations[0].node, "b");
        assert_eq!(state.free("b", CPU), 0.0);
    }

    #[test]
    fn bundles_are_reserved_all_or_nothing() {
        // (strategy, bundles' CPUs, CPUs busy on the head, reserved), on a
        // head and a node of 2 CPUs each
        let table = [
            (PlacementStrategy::StrictSpread, [2.0, 2.0], 1.0, false),
            (PlacementStrategy::StrictSpread, [2.0, 2.0], 0.0, true),
            (PlacementStrategy::Spread, [2.0, 2.0], 1.0, false),
            (PlacementStrategy::StrictPack, [1.0, 1.0], 1.0, true),
            (PlacementStrategy::Pack, [2.0, 2.0], 1.0, false),
        ];
        for (strategy, sizes, busy, reserved) in table {
            let ids = Ids::new();
            let mut state = NodeState::for_test(cpus(2.0), 1 << 20);
            let _b = state.join("b", cpus(2.0));
            if busy > 0.0 {
                // Pinned to the head, so the other node stays idle.
                let spec = TaskSpec {
                    strategy: SchedulingStrategy::NodeAffinity {
                        node_id: HEAD.into(),
                        soft: false,
                    },
                    ..ids.task("busy", cpus(busy), Vec::new())
                };
                state.submit_now(spec);
                state.start_one();
            }
            let bundles: Vec<ResourceSet> = sizes.iter().map(|n| cpus(*n)).collect();
            let wanted: f64 = bundles.iter().map(|b| b.get(CPU)).sum();
            state
                .create_placement_group(7, bundles, strategy, JOB)
                .expect("feasible");
            state.schedule();
            assert_eq!(
                state.placement_group_ready(7).expect("known"),
                reserved,
                "{strategy:?} busy={busy}"
            );
            let free = state.free(HEAD, CPU) + state.free("b", CPU);
            let expected = 4.0 - busy - if reserved { wanted } else { 0.0 };
            assert_eq!(free, expected, "{strategy:?}: nothing is reserved in part");
        }
    }

    #[test]
    fn removing_a_group_kills_its_actors_and_cancels_its_tasks() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(2.0), 1 << 20);
        state
            .create_placement_group(1, vec![cpus(1.0), cpus(1.0)], PlacementStrategy::Pack, JOB)
            .expect("feasible");
        state.schedule();
        assert_eq!(state.free(HEAD, CPU), 0.0);
        let in_group = SchedulingStrategy::PlacementGroup {
            group: 1,
            bundle: Some(0),
        };
        let actor = ActorSpec {
            strategy: in_group.clone(),
            ..ids.actor(cpus(1.0), 3)
        };
        let actor_id = actor.actor_id;
        state.create_actor(actor, JOB, None).expect("created");
        state.schedule();
        let (actor_worker, _) = state.start_one();
        // A task for the bundle the actor holds queues behind it.
        let task = TaskSpec {
            strategy: in_group,
            ..ids.task("f", cpus(1.0), Vec::new())
        };
        let output = task.return_id;
        state.submit_now(task);
        assert!(state.take_spawns().is_empty());
        state.remove_placement_group(1).expect("removed");
        state.schedule();
        assert!(state.is_dead(actor_id), "killed, not restarted");
        assert_eq!(error_kind(&state.value(output)), "Cancelled");
        assert!(state.take_effects().contains(&Did::Stop {
            worker: actor_worker,
            node: HEAD.into()
        }));
        assert_eq!(state.free(HEAD, CPU), 2.0);
    }
}
