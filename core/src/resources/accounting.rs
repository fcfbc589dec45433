//! Resource accounting: a node's total and free resources (with the free
//! fraction of each GPU, so grants name device ids), and the cluster's pools
//! of live nodes and reserved placement-group bundles. Which pool a request
//! draws from is the policy's choice (`policy.rs`).

use super::policy::hybrid_score_key;
use super::{ResourceSet, GPU};
use rustc_hash::FxHashMap;
use std::collections::BTreeSet;

/// Tolerance for summing fractional amounts back to whole numbers.
const EPSILON: f64 = 1e-9;

/// A grant of resources on one node, with the GPU ids it includes.
#[derive(Debug, Clone, Default)]
pub struct Allocation {
    pub node: String,
    /// The placement-group bundle it was taken from, if any.
    pub bundle: Option<(u64, usize)>,
    pub resources: ResourceSet,
    /// (gpu id, fraction of that GPU).
    pub gpus: Vec<(u32, f64)>,
}

impl Allocation {
    pub fn gpu_ids(&self) -> Vec<u32> {
        self.gpus.iter().map(|(id, _)| *id).collect()
    }
}

/// A node's total and free resources.
#[derive(Debug, Clone)]
pub struct ResourcePool {
    total: ResourceSet,
    available: ResourceSet,
    /// Free fraction of each GPU, by position in `gpu_ids`.
    gpu_free: Vec<f64>,
    /// The device ids of the node's GPUs this pool hands out.
    gpu_ids: Vec<u32>,
}

impl ResourcePool {
    pub fn new(total: ResourceSet) -> Self {
        let gpus = total.get(GPU).floor() as usize;
        ResourcePool {
            available: total.clone(),
            total,
            gpu_free: vec![1.0; gpus],
            gpu_ids: (0..gpus as u32).collect(),
        }
    }

    /// A pool holding exactly what `allocation` reserved: a placement-group
    /// bundle, whose GPUs keep their device ids.
    pub fn for_bundle(allocation: &Allocation) -> Self {
        ResourcePool {
            total: allocation.resources.clone(),
            available: allocation.resources.clone(),
            gpu_free: allocation
                .gpus
                .iter()
                .map(|(_, fraction)| *fraction)
                .collect(),
            gpu_ids: allocation.gpu_ids(),
        }
    }

    fn gpu_index(&self, id: u32) -> Option<usize> {
        self.gpu_ids.iter().position(|g| *g == id)
    }

    pub fn total(&self) -> &ResourceSet {
        &self.total
    }

    pub fn available(&self) -> &ResourceSet {
        &self.available
    }

    /// Whether this node could ever grant `request`, even when idle.
    pub fn feasible(&self, request: &ResourceSet) -> bool {
        request
            .0
            .iter()
            .all(|(name, amount)| *amount <= self.total.get(name) + EPSILON)
            && self.gpu_ids_for(request, &self.gpu_capacity()).is_some()
    }

    /// Whether `try_acquire` would grant `request` now (nothing is taken).
    pub fn can_grant(&self, request: &ResourceSet) -> bool {
        self.has_free(request) && self.gpu_ids_for(request, &self.gpu_free).is_some()
    }

    fn has_free(&self, request: &ResourceSet) -> bool {
        request
            .0
            .iter()
            .all(|(name, amount)| *amount <= self.available.get(name) + EPSILON)
    }

    /// Grants `request` now if the node has it free.
    pub fn try_acquire(&mut self, request: &ResourceSet) -> Option<Allocation> {
        if !self.has_free(request) {
            return None;
        }
        let gpus = self.gpu_ids_for(request, &self.gpu_free)?;
        for (name, amount) in &request.0 {
            let left = self.available.get(name) - amount;
            self.available.0.insert(name.clone(), left.max(0.0));
        }
        for (index, fraction) in &gpus {
            self.gpu_free[*index as usize] -= fraction;
        }
        Some(Allocation {
            node: String::new(),
            bundle: None,
            resources: request.clone(),
            gpus: gpus
                .into_iter()
                .map(|(index, f)| (self.gpu_ids[index as usize], f))
                .collect(),
        })
    }

    /// Takes an allocation back even if that overdraws the pool: a worker that
    /// lent its resources out while blocked resumes at once, and the pool stays
    /// short until its lease ends.
    pub fn force_acquire(&mut self, allocation: &Allocation) {
        for (name, amount) in &allocation.resources.0 {
            let left = self.available.get(name) - amount;
            self.available.0.insert(name.clone(), left);
        }
        for (id, fraction) in &allocation.gpus {
            if let Some(index) = self.gpu_index(*id) {
                self.gpu_free[index] -= fraction;
            }
        }
    }

    pub fn release(&mut self, allocation: &Allocation) {
        for (name, amount) in &allocation.resources.0 {
            let total = self.total.get(name);
            let back = (self.available.get(name) + amount).min(total);
            self.available.0.insert(name.clone(), back);
        }
        for (id, fraction) in &allocation.gpus {
            if let Some(index) = self.gpu_index(*id) {
                let capacity = self.gpu_capacity()[index];
                let free = &mut self.gpu_free[index];
                *free = (*free + fraction).min(capacity);
            }
        }
    }

    /// What each GPU holds when the pool is idle: whole GPUs for a node, the
    /// reserved fractions for a bundle.
    fn gpu_capacity(&self) -> Vec<f64> {
        let whole = self.total.get(GPU).floor() as usize == self.gpu_ids.len();
        if whole {
            vec![1.0; self.gpu_ids.len()]
        } else {
            vec![self.total.get(GPU) / self.gpu_ids.len().max(1) as f64; self.gpu_ids.len()]
        }
    }

    /// Picks GPU ids for a request: whole free GPUs for whole amounts, one GPU
    /// with room left for a fraction, as Ray does.
    fn gpu_ids_for(&self, request: &ResourceSet, free: &[f64]) -> Option<Vec<(u32, f64)>> {
        let wanted = request.get(GPU);
        if wanted <= EPSILON {
            return Some(Vec::new());
        }
        if wanted < 1.0 {
            return free
                .iter()
                .position(|f| *f + EPSILON >= wanted)
                .map(|id| vec![(id as u32, wanted)]);
        }
        let whole = wanted.round() as usize;
        if (wanted - whole as f64).abs() > EPSILON {
            return None;
        }
        let ids: Vec<(u32, f64)> = free
            .iter()
            .enumerate()
            .filter(|(_, f)| (**f - 1.0).abs() < EPSILON)
            .take(whole)
            .map(|(id, _)| (id as u32, 1.0))
            .collect();
        (ids.len() == whole).then_some(ids)
    }
}

/// Where a node stands in the hybrid policy's order of preference: Ray's
/// node score (the used fraction of its scarcest resource, counted as 0
/// while under half), then registration order.
type Rank = (u64, usize);

/// The nodes with some of `resource` free, made empty the first time.
fn free_order<'a>(free: &'a mut FxHashMap<String, NodeOrder>, resource: &str) -> &'a mut NodeOrder {
    if !free.contains_key(resource) {
        free.insert(resource.to_string(), NodeOrder::default());
    }
    free.get_mut(resource).expect("inserted above")
}

/// A set of nodes in the two orders the policies walk: registration order
/// (spread's round robin) and rank (the hybrid default).
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct NodeOrder {
    pub(super) by_position: BTreeSet<usize>,
    pub(super) by_rank: BTreeSet<Rank>,
}

/// The candidates for a request no node has free.
pub(super) static NO_NODES: NodeOrder = NodeOrder {
    by_position: BTreeSet::new(),
    by_rank: BTreeSet::new(),
};

impl NodeOrder {
    fn insert(&mut self, (score, index): Rank) {
        self.by_position.insert(index);
        self.by_rank.insert((score, index));
    }

    fn remove(&mut self, (score, index): Rank) {
        self.by_position.remove(&index);
        self.by_rank.remove(&(score, index));
    }

    pub(super) fn len(&self) -> usize {
        self.by_position.len()
    }
}

/// The resource pools of every live node of the cluster, in registration
/// order (the head's own node first), with indexes so that placing,
/// granting and releasing cost the same on a cluster of any size: each
/// node's position by id, and for each resource the nodes with some of it
/// free. A request is only ever matched against the nodes that have some of
/// the resource it names fewest nodes have free, so a cluster whose CPUs are
/// all taken is searched in no time for a CPU task, even while its nodes
/// still have memory or custom resources free.
#[derive(Debug, Default)]
pub struct ClusterResources {
    pub(super) nodes: Vec<(String, ResourcePool)>,
    /// Each node's position in `nodes`.
    positions: FxHashMap<String, usize>,
    /// Each node's score key, as its index entries hold it.
    scores: Vec<u64>,
    /// Every node: the candidates for a request that asks for nothing.
    pub(super) every_node: NodeOrder,
    /// For each resource, the nodes with some of it free.
    pub(super) free: FxHashMap<String, NodeOrder>,
    /// Reserved placement-group bundles: (group, index) -> (node, pool).
    pub(super) bundles: std::collections::BTreeMap<(u64, usize), (String, ResourcePool)>,
    pub(super) spread_cursor: usize,
}

impl ClusterResources {
    pub fn add_node(&mut self, node: &str, total: ResourceSet) {
        if self.position(node).is_some() {
            // Registered again (a restarted node): its old pool goes.
            self.remove_node(node);
        }
        let pool = ResourcePool::new(total);
        let index = self.nodes.len();
        self.positions.insert(node.to_string(), index);
        self.scores.push(hybrid_score_key(&pool));
        self.nodes.push((node.to_string(), pool));
        self.index_node(index);
    }

    pub fn remove_node(&mut self, node: &str) {
        self.nodes.retain(|(id, _)| id != node);
        self.reindex();
    }

    /// Rebuilds every index after a node left: nodes leave rarely.
    fn reindex(&mut self) {
        self.positions = (self.nodes.iter().enumerate())
            .map(|(index, (id, _))| (id.clone(), index))
            .collect();
        self.scores = self
            .nodes
            .iter()
            .map(|(_, pool)| hybrid_score_key(pool))
            .collect();
        self.every_node = NodeOrder::default();
        self.free.clear();
        for index in 0..self.nodes.len() {
            self.index_node(index);
        }
    }

    /// Enters the node at `index` in the indexes, under its current score.
    fn index_node(&mut self, index: usize) {
        let rank = (self.scores[index], index);
        self.every_node.insert(rank);
        let pool = &self.nodes[index].1;
        for name in pool.total().0.keys() {
            if pool.available().get(name) > EPSILON {
                free_order(&mut self.free, name).insert(rank);
            }
        }
    }

    /// Keeps the indexes true for the node at `index` after its pool
    /// changed: a grant or release touches only the entries it moves.
    pub(super) fn pool_changed(&mut self, index: usize) {
        let old = (self.scores[index], index);
        let pool = &self.nodes[index].1;
        let new = (hybrid_score_key(pool), index);
        self.scores[index] = new.0;
        if new != old {
            self.every_node.remove(old);
            self.every_node.insert(new);
        }
        for name in pool.total().0.keys() {
            let has_free = pool.available().get(name) > EPSILON;
            let order = free_order(&mut self.free, name);
            if new != old || !has_free {
                order.remove(old);
            }
            if has_free {
                order.insert(new);
            }
        }
    }

    pub(super) fn position(&self, node: &str) -> Option<usize> {
        self.positions.get(node).copied()
    }

    /// Panics unless every index holds what a look at every node finds.
    #[cfg(test)]
    pub(crate) fn assert_indexes_match_scan(&self, step: &str) {
        let mut every_node = NodeOrder::default();
        let mut free: FxHashMap<String, NodeOrder> = FxHashMap::default();
        for (index, (_, pool)) in self.nodes.iter().enumerate() {
            let rank = (hybrid_score_key(pool), index);
            every_node.insert(rank);
            let free_here = pool
                .total()
                .0
                .keys()
                .filter(|name| pool.available().get(name) > EPSILON);
            for name in free_here {
                free.entry(name.clone()).or_default().insert(rank);
            }
        }
        assert_eq!(self.every_node, every_node, "every node after {step}");
        free.retain(|_, order| order.len() > 0);
        let indexed: FxHashMap<String, NodeOrder> = (self.free.iter())
            .filter(|(_, order)| order.len() > 0)
            .map(|(name, order)| (name.clone(), order.clone()))
            .collect();
        assert_eq!(indexed, free, "nodes with each resource free after {step}");
        let positions: FxHashMap<String, usize> = (self.nodes.iter().enumerate())
            .map(|(index, (id, _))| (id.clone(), index))
            .collect();
        assert_eq!(self.positions, positions, "node positions after {step}");
    }

    pub fn node(&self, node: &str) -> Option<&ResourcePool> {
        self.position(node).map(|index| &self.nodes[index].1)
    }

    pub fn nodes(&self) -> impl Iterator<Item = (&str, &ResourcePool)> {
        self.nodes.iter().map(|(id, p)| (id.as_str(), p))
    }

    /// The pools of live nodes, for reserving placement groups.
    pub(crate) fn node_pools(&self) -> &[(String, ResourcePool)] {
        &self.nodes
    }

    /// Takes a placement group's bundles out of their nodes' pools; each
    /// becomes a pool of its own that only the group's work draws from.
    pub(crate) fn reserve_bundles(
        &mut self,
        group: u64,
        placement: &[(usize, ResourceSet)],
    ) -> Vec<Allocation> {
        let mut allocations = Vec::new();
        for (index, (node_index, request)) in placement.iter().enumerate() {
            let (node, pool) = &mut self.nodes[*node_index];
            let mut allocation = pool
                .try_acquire(request)
                .expect("placement was checked against these pools");
            allocation.node = node.clone();
            self.bundles.insert(
                (group, index),
                (node.clone(), ResourcePool::for_bundle(&allocation)),
            );
            self.pool_changed(*node_index);
            allocations.push(allocation);
        }
        allocations
    }

    /// Gives a group's bundles back to their nodes.
    pub(crate) fn release_bundles(&mut self, group: u64, allocations: &[Allocation]) {
        self.bundles.retain(|(g, _), _| *g != group);
        for allocation in allocations {
            self.release(allocation);
        }
    }

    /// Applies `change` to the pool an allocation came from, if it still
    /// exists.
    fn change_pool_of(&mut self, allocation: &Allocation, change: impl FnOnce(&mut ResourcePool)) {
        match allocation.bundle {
            Some(key) => {
                if let Some((_, pool)) = self.bundles.get_mut(&key) {
                    change(pool);
                }
            }
            None => {
                if let Some(index) = self.position(&allocation.node) {
                    change(&mut self.nodes[index].1);
                    self.pool_changed(index);
                }
            }
        }
    }

    pub fn release(&mut self, allocation: &Allocation) {
        self.change_pool_of(allocation, |pool| pool.release(allocation));
    }

    pub fn force_acquire(&mut self, allocation: &Allocation) {
        self.change_pool_of(allocation, |pool| pool.force_acquire(allocation));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::CPU;

    fn set(pairs: &[(&str, f64)]) -> ResourceSet {
        let mut s = ResourceSet::default();
        for (k, v) in pairs {
            s.set(k, *v);
        }
        s
    }

    #[test]
    fn grants_until_exhausted_then_releases() {
        let mut pool = ResourcePool::new(set(&[(CPU, 2.0)]));
        let one = set(&[(CPU, 1.0)]);
        let a = pool.try_acquire(&one).expect("first");
        let b = pool.try_acquire(&one).expect("second");
        assert!(pool.try_acquire(&one).is_none());
        pool.release(&a);
        assert!(pool.try_acquire(&one).is_some());
        pool.release(&b);
        assert!((pool.available.get(CPU) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn gpu_requests_get_distinct_ids() {
        let mut pool = ResourcePool::new(set(&[(GPU, 2.0)]));
        let one = set(&[(GPU, 1.0)]);
        let a = pool.try_acquire(&one).expect("gpu 0");
        let b = pool.try_acquire(&one).expect("gpu 1");
        assert_ne!(a.gpu_ids(), b.gpu_ids());
        assert!(pool.try_acquire(&set(&[(GPU, 0.5)])).is_none());
        pool.release(&a);
        let half = pool.try_acquire(&set(&[(GPU, 0.5)])).expect("half");
        let other_half = pool.try_acquire(&set(&[(GPU, 0.5)])).expect("other half");
        assert_eq!(half.gpu_ids(), other_half.gpu_ids());
    }

    #[test]
    fn feasibility_is_about_totals() {
        let pool = ResourcePool::new(set(&[(CPU, 2.0), ("slot", 1.0)]));
        assert!(pool.feasible(&set(&[(CPU, 2.0)])));
        assert!(!pool.feasible(&set(&[(CPU, 3.0)])));
        assert!(!pool.feasible(&set(&[("other", 1.0)])));
        assert!(!pool.feasible(&set(&[(GPU, 1.0)])));
    }

    /// The indexes (each node's position, every node by rank, the nodes
    /// with each resource free) agree with the pools after every grant,
    /// release, overdraw and membership change, and `can_grant` answers as a
    /// trial `try_acquire` would, taking nothing.
    #[test]
    fn the_cluster_indexes_follow_every_change() {
        use crate::resources::SchedulingStrategy;
        let mut cluster = ClusterResources::default();
        for node in ["a", "b", "c"] {
            cluster.add_node(node, set(&[(CPU, 2.0), ("slot", 1.0)]));
        }
        let two = set(&[(CPU, 2.0)]);
        let affinity = |node: &str| SchedulingStrategy::NodeAffinity {
            node_id: node.into(),
            soft: false,
        };
        let check = |cluster: &ClusterResources, step: &str| {
            cluster.assert_indexes_match_scan(step);
            for (index, (id, pool)) in cluster.nodes.iter().enumerate() {
                assert_eq!(cluster.position(id), Some(index), "{step}");
                assert_eq!(
                    pool.can_grant(&two),
                    pool.clone().try_acquire(&two).is_some()
                );
            }
        };
        check(&cluster, "joined");
        let on_b = cluster.try_acquire(&two, &affinity("b")).unwrap();
        check(&cluster, "b full");
        cluster.force_acquire(&on_b);
        check(&cluster, "b overdrawn");
        cluster.release(&on_b);
        check(&cluster, "b back to full");
        cluster.remove_node("a");
        check(&cluster, "a gone: positions move");
        assert_eq!(cluster.node("b").unwrap().available().get(CPU), 0.0);
        cluster.release(&on_b);
        check(&cluster, "b free");
        let bundles = cluster.reserve_bundles(7, &[(1, two.clone())]);
        check(&cluster, "c reserved for a group");
        assert!(cluster.try_acquire(&two, &affinity("c")).is_none());
        cluster.release_bundles(7, &bundles);
        check(&cluster, "group removed");
        cluster.add_node("d", set(&[(CPU, 4.0)]));
        check(&cluster, "d joined");
        cluster.add_node("b", set(&[(CPU, 2.0)]));
        check(&cluster, "b registered again");
        assert_eq!(cluster.position("b"), Some(2));
        assert_eq!(cluster.node("b").unwrap().available().get(CPU), 2.0);
    }
}
