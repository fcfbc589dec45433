//! Scheduling policy: the strategies a task or actor may ask for, named as
//! Ray names them, and how each picks a node (or a placement-group bundle)
//! that has the request free.

use super::accounting::{NodeOrder, NO_NODES};
use super::{Allocation, ClusterResources, ResourcePool, ResourceSet, CPU, MEMORY};
use serde::{Deserialize, Serialize};

/// Where a task or actor may run, named as Ray names its strategies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum SchedulingStrategy {
    /// Pack onto the first nodes until they are half used, then spread to the
    /// least used node (Ray's hybrid default; see `SPREAD_THRESHOLD`).
    #[default]
    Default,
    /// Round robin over the nodes that have the request free.
    Spread,
    /// A given node; with `soft`, any node when that one cannot take it.
    NodeAffinity { node_id: String, soft: bool },
    /// Resources reserved by a placement group: one bundle, or any of them.
    PlacementGroup { group: u64, bundle: Option<usize> },
}

/// The used fraction of its scarcest resource under which a node takes
/// work before any less used node does (Ray's `spread_threshold`).
const SPREAD_THRESHOLD: f64 = 0.5;

/// Used fraction of a node's scarcest resource.
fn utilization(pool: &ResourcePool) -> f64 {
    pool.total()
        .0
        .iter()
        .filter(|(name, total)| **total > 0.0 && name.as_str() != MEMORY)
        .map(|(name, total)| (total - pool.available().get(name)) / total)
        .fold(0.0, f64::max)
}

/// The hybrid policy's score of a node (Ray's: its utilization, counted as
/// 0 under `SPREAD_THRESHOLD`), as a key that sorts as the score does (a
/// non-negative `f64`'s bits sort as the number). The accounting keeps the
/// nodes in this order, so the default strategy takes the first that fits.
pub(super) fn hybrid_score_key(pool: &ResourcePool) -> u64 {
    let used = utilization(pool);
    if used < SPREAD_THRESHOLD {
        0
    } else {
        used.to_bits()
    }
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
            _ => self
                .candidates(request)
                .by_position
                .iter()
                .any(|i| fits(*i)),
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

    /// The nodes that may grant `request`: those with some free of the
    /// resource it names that the fewest nodes have free (a node without any
    /// of it free cannot grant it), or every node if it asks for nothing.
    fn candidates(&self, request: &ResourceSet) -> &NodeOrder {
        let mut asked = request
            .0
            .iter()
            .filter(|(_, amount)| **amount > 0.0)
            .peekable();
        if asked.peek().is_none() {
            return &self.every_node;
        }
        asked
            .map(|(name, _)| self.free.get(name).unwrap_or(&NO_NODES))
            .min_by_key(|order| order.len())
            .unwrap_or(&NO_NODES)
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
            // Ray's hybrid policy: the first node in registration order
            // that is under half used, else the least used; both are the
            // first in rank order that can grant the request.
            SchedulingStrategy::Default => self
                .candidates(request)
                .by_rank
                .iter()
                .map(|(_, index)| *index)
                .find(|index| fits(index)),
            // Ray's spread policy: round robin over the nodes that can
            // grant the request.
            SchedulingStrategy::Spread => {
                let order = &self.candidates(request).by_position;
                let start = self.spread_cursor;
                let chosen = (order.range(start..).chain(order.range(..start)))
                    .copied()
                    .find(|index| fits(index))?;
                self.spread_cursor = chosen + 1;
                Some(chosen)
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

    /// `n` grants of `request` under the default strategy.
    fn take(cluster: &mut ClusterResources, request: &ResourceSet, n: usize) -> Vec<Allocation> {
        (0..n)
            .map(|_| {
                let strategy = SchedulingStrategy::Default;
                cluster
                    .try_acquire(request, &strategy)
                    .expect("a node has it")
            })
            .collect()
    }

    fn nodes(allocations: &[Allocation]) -> Vec<&str> {
        allocations.iter().map(|a| a.node.as_str()).collect()
    }

    #[test]
    fn default_spreads_to_the_least_used_node_once_all_are_half_used() {
        let mut cluster = cluster(3);
        // Half of each node in turn, then the least used, the first of equals.
        let taken = take(&mut cluster, &cpus(1.0), 12);
        let expected = [
            "n0", "n0", "n1", "n1", "n2", "n2", "n0", "n1", "n2", "n0", "n1", "n2",
        ];
        assert_eq!(nodes(&taken), expected);
        assert!(cluster
            .try_acquire(&cpus(1.0), &SchedulingStrategy::Default)
            .is_none());
        // A node that frees moves ahead of the full ones.
        cluster.release(&taken[2]);
        cluster.release(&taken[3]);
        assert_eq!(nodes(&take(&mut cluster, &cpus(1.0), 2)), ["n1", "n1"]);
        cluster.assert_indexes_match_scan("after the release");
    }

    /// A cluster whose CPUs are all taken is not searched for a CPU request,
    /// though every node still has a custom resource free: the candidates
    /// are the nodes with the scarcest named resource free.
    #[test]
    fn a_request_is_matched_only_against_nodes_with_what_it_names_free() {
        let mut cluster = ClusterResources::default();
        let mut node = cpus(1.0);
        node.set("slot", 10.0);
        for i in 0..3 {
            cluster.add_node(&format!("n{i}"), node.clone());
        }
        let mut slot = ResourceSet::default();
        slot.set("slot", 1.0);
        let mut cpu_and_slot = cpus(1.0);
        cpu_and_slot.set("slot", 1.0);
        let taken = take(&mut cluster, &cpus(1.0), 3);
        assert_eq!(cluster.candidates(&cpus(1.0)).len(), 0);
        assert_eq!(cluster.candidates(&cpu_and_slot).len(), 0);
        assert_eq!(cluster.candidates(&slot).len(), 3);
        assert!(!cluster.can_acquire(&cpus(1.0), &SchedulingStrategy::Default));
        assert!(!cluster.can_acquire(&cpu_and_slot, &SchedulingStrategy::Spread));
        assert_eq!(nodes(&take(&mut cluster, &slot, 1)), ["n0"]);
        cluster.release(&taken[1]);
        assert_eq!(cluster.candidates(&cpu_and_slot).len(), 1);
        assert_eq!(nodes(&take(&mut cluster, &cpu_and_slot, 1)), ["n1"]);
        cluster.assert_indexes_match_scan("after the grants");
    }

    #[test]
    fn spread_goes_round_the_nodes_that_have_the_request_free() {
        let mut cluster = cluster(3);
        let spread = |cluster: &mut ClusterResources| {
            (0..4)
                .map(|_| {
                    let strategy = SchedulingStrategy::Spread;
                    cluster.try_acquire(&cpus(1.0), &strategy).unwrap().node
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(spread(&mut cluster), ["n0", "n1", "n2", "n0"]);
        let fill_n2 = SchedulingStrategy::NodeAffinity {
            node_id: "n2".into(),
            soft: false,
        };
        cluster
            .try_acquire(&cpus(3.0), &fill_n2)
            .expect("n2 has 3 free");
        assert_eq!(spread(&mut cluster), ["n1", "n0", "n1", "n0"]);
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
