//! Scheduling policy: the strategies a task or actor may ask for, named as
//! Ray names them, and how each picks a node (or a placement-group bundle)
//! that has the request free.

use super::{Allocation, ClusterResources, ResourcePool, ResourceSet, CPU, MEMORY};
use serde::{Deserialize, Serialize};

/// Where a task or actor may run, named as Ray names its strategies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum SchedulingStrategy {
    /// Pack onto the first nodes until they are half used, then spread to the
    /// least used node (Ray's hybrid default).
    #[default]
    Default,
    /// The least used node that fits, rotating among equals.
    Spread,
    /// A given node; with `soft`, any node when that one cannot take it.
    NodeAffinity { node_id: String, soft: bool },
    /// Resources reserved by a placement group: one bundle, or any of them.
    PlacementGroup { group: u64, bundle: Option<usize> },
}

/// Used fraction of a node's scarcest resource, after adding `extra`.
fn utilization(pool: &ResourcePool, extra: &ResourceSet) -> f64 {
    pool.total()
        .0
        .iter()
        .filter(|(name, total)| **total > 0.0 && name.as_str() != MEMORY)
        .map(|(name, total)| (total - pool.available().get(name) + extra.get(name)) / total)
        .fold(0.0, f64::max)
}

impl ClusterResources {
    /// The pools of `group`'s bundles: one, or all of them.
    fn bundle_pools(
        &self,
        group: u64,
        bundle: Option<usize>,
    ) -> impl Iterator<Item = &ResourcePool> + '_ {
        self.bundles
            .iter()
            .filter(move |((g, i), _)| *g == group && bundle.is_none_or(|b| b == *i))
            .map(|(_, (_, pool))| pool)
    }

    /// Whether some node could ever grant `request` under `strategy`.
    pub fn feasible(&self, request: &ResourceSet, strategy: &SchedulingStrategy) -> bool {
        match strategy {
            SchedulingStrategy::PlacementGroup { group, bundle } => self
                .bundle_pools(*group, *bundle)
                .any(|pool| pool.feasible(request)),
            SchedulingStrategy::NodeAffinity {
                node_id,
                soft: false,
            } => self.node(node_id).is_some_and(|p| p.feasible(request)),
            _ => self.nodes.iter().any(|(_, p)| p.feasible(request)),
        }
    }

    /// The largest node's total, for error messages.
    pub fn largest_node(&self) -> String {
        self.nodes
            .iter()
            .max_by(|a, b| a.1.total().get(CPU).total_cmp(&b.1.total().get(CPU)))
            .map_or_else(
                || "no live node".to_string(),
                |(_, p)| p.total().to_string(),
            )
    }

    /// Whether [`try_acquire`](Self::try_acquire) would grant `request` now.
    pub fn can_acquire(&self, request: &ResourceSet, strategy: &SchedulingStrategy) -> bool {
        let fits = |index: usize| self.nodes[index].1.can_grant(request);
        match strategy {
            SchedulingStrategy::PlacementGroup { group, bundle } => self
                .bundle_pools(*group, *bundle)
                .any(|pool| pool.can_grant(request)),
            SchedulingStrategy::NodeAffinity {
                node_id,
                soft: false,
            } => self.position(node_id).is_some_and(fits),
            _ => self.candidates(request, 0).any(fits),
        }
    }

    /// Grants `request` on a node chosen by `strategy`, if one has it free.
    pub fn try_acquire(
        &mut self,
        request: &ResourceSet,
        strategy: &SchedulingStrategy,
    ) -> Option<Allocation> {
        if let SchedulingStrategy::PlacementGroup { group, bundle } = strategy {
            let ((_, index), (node, pool)) = self
                .bundles
                .iter_mut()
                .filter(|((g, i), _)| g == group && bundle.is_none_or(|b| b == *i))
                .find(|(_, (_, pool))| pool.can_grant(request))?;
            let mut allocation = pool.try_acquire(request)?;
            allocation.node = node.clone();
            allocation.bundle = Some((*group, *index));
            return Some(allocation);
        }
        let index = self.choose(request, strategy)?;
        let (node, pool) = &mut self.nodes[index];
        let mut allocation = pool.try_acquire(request)?;
        allocation.node = node.clone();
        self.pool_changed(index);
        Some(allocation)
    }

    /// The positions of the nodes that may grant `request`, in registration
    /// order from `start` round to `start`: only those with anything free,
    /// unless the request asks for nothing.
    fn candidates(
        &self,
        request: &ResourceSet,
        start: usize,
    ) -> Box<dyn Iterator<Item = usize> + '_> {
        if request.0.values().any(|amount| *amount > 0.0) {
            let room = &self.with_room;
            Box::new(room.range(start..).chain(room.range(..start)).copied())
        } else {
            let count = self.nodes.len();
            Box::new((0..count).map(move |offset| (start + offset) % count))
        }
    }

    fn choose(&mut self, request: &ResourceSet, strategy: &SchedulingStrategy) -> Option<usize> {
        let fits = |index: &usize| self.nodes[*index].1.can_grant(request);
        match strategy {
            // Bundles are chosen in `try_acquire`; never a node's free pool.
            SchedulingStrategy::PlacementGroup { .. } => None,
            SchedulingStrategy::NodeAffinity { node_id, soft } => {
                let preferred = self.position(node_id).filter(fits);
                match (preferred, soft) {
                    (Some(index), _) => Some(index),
                    (None, true) => self.choose(request, &SchedulingStrategy::Default),
                    (None, false) => None,
                }
            }
            SchedulingStrategy::Default => {
                let mut least_used: Option<(usize, f64)> = None;
                for index in self.candidates(request, 0).filter(fits) {
                    let used = utilization(&self.nodes[index].1, request);
                    if used <= 0.5 + 1e-9 {
                        return Some(index);
                    }
                    if least_used.is_none_or(|(_, u)| used < u) {
                        least_used = Some((index, used));
                    }
                }
                least_used.map(|(index, _)| index)
            }
            SchedulingStrategy::Spread => {
                let count = self.nodes.len();
                let start = self.spread_cursor.min(count);
                let best = self
                    .candidates(request, start)
                    .filter(fits)
                    .min_by(|a, b| {
                        utilization(&self.nodes[*a].1, request)
                            .total_cmp(&utilization(&self.nodes[*b].1, request))
                    })?;
                self.spread_cursor = (best + 1) % count.max(1);
                Some(best)
            }
        }
    }
}

#[cfg(test)]
mod cluster_tests {
    use super::*;

    fn cpus(n: f64) -> ResourceSet {
        let mut s = ResourceSet::default();
        s.set(CPU, n);
        s
    }

    fn cluster(nodes: usize) -> ClusterResources {
        let mut cluster = ClusterResources::default();
        for i in 0..nodes {
            cluster.add_node(&format!("n{i}"), cpus(4.0));
        }
        cluster
    }

    #[test]
    fn default_packs_then_spreads() {
        let mut cluster = cluster(2);
        let nodes: Vec<String> = (0..4)
            .map(|_| {
                cluster
                    .try_acquire(&cpus(1.0), &SchedulingStrategy::Default)
                    .unwrap()
                    .node
            })
            .collect();
        // n0 takes work until half used, then n1 until half used.
        assert_eq!(nodes, ["n0", "n0", "n1", "n1"]);
    }

    #[test]
    fn spread_visits_every_node() {
        let mut cluster = cluster(3);
        let mut nodes: Vec<String> = (0..3)
            .map(|_| {
                cluster
                    .try_acquire(&cpus(1.0), &SchedulingStrategy::Spread)
                    .unwrap()
                    .node
            })
            .collect();
        nodes.sort();
        assert_eq!(nodes, ["n0", "n1", "n2"]);
    }

    #[test]
    fn hard_affinity_waits_soft_affinity_moves() {
        let mut cluster = cluster(2);
        let hard = SchedulingStrategy::NodeAffinity {
            node_id: "n1".into(),
            soft: false,
        };
        let soft = SchedulingStrategy::NodeAffinity {
            node_id: "n1".into(),
            soft: true,
        };
        assert_eq!(cluster.try_acquire(&cpus(4.0), &hard).unwrap().node, "n1");
        assert!(cluster.try_acquire(&cpus(1.0), &hard).is_none());
        assert_eq!(cluster.try_acquire(&cpus(1.0), &soft).unwrap().node, "n0");
        assert!(!cluster.feasible(
            &cpus(1.0),
            &SchedulingStrategy::NodeAffinity {
                node_id: "gone".into(),
                soft: false
            }
        ));
    }
}
