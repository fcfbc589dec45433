//! Placement groups (Ray's GCS placement group manager): a group's bundles
//! are reserved all or nothing, in creation order, on nodes the strategy
//! allows; removing a group kills the actors placed in it, cancels its tasks
//! (queued or running) and gives its bundles back.

use super::actors::ActorStatus;
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

    /// Reserves pending groups in creation order, each all or nothing.
    pub(super) fn reserve_pending_groups(&mut self) {
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
                    && !matches!(a.status, ActorStatus::Dead(_))
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
