//! Resource sets and a node's resource accounting.
//!
//! A node advertises CPU, GPU, memory and custom resources; tasks and actors ask
//! for amounts of them. GPUs are special: a request for GPUs is granted specific
//! device ids (exported to the worker as `CUDA_VISIBLE_DEVICES`), so the pool
//! tracks each GPU's free fraction, not just a total.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub const CPU: &str = "CPU";
pub const GPU: &str = "GPU";
pub const MEMORY: &str = "memory";

/// Amounts of named resources. Kept sorted so equal requests compare equal and
/// print the same way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceSet(pub BTreeMap<String, f64>);

impl ResourceSet {
    pub fn set(&mut self, name: &str, amount: f64) {
        if amount > 0.0 {
            self.0.insert(name.to_string(), amount);
        } else {
            self.0.remove(name);
        }
    }

    pub fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    /// A key that is equal for requests of the same shape; tasks of one shape
    /// share a queue and may be pipelined onto one leased worker.
    pub(crate) fn shape_key(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ResourceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("{}");
        }
        f.write_str("{")?;
        for (i, (name, amount)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if name == MEMORY {
                write!(f, "{name}: {:.0} MiB", amount / (1024.0 * 1024.0))?;
            } else {
                write!(f, "{name}: {amount}")?;
            }
        }
        f.write_str("}")
    }
}

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

    /// Grants `request` now if the node has it free.
    pub fn try_acquire(&mut self, request: &ResourceSet) -> Option<Allocation> {
        let enough = request
            .0
            .iter()
            .all(|(name, amount)| *amount <= self.available.get(name) + EPSILON);
        if !enough {
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
    pool.total
        .0
        .iter()
        .filter(|(name, total)| **total > 0.0 && name.as_str() != MEMORY)
        .map(|(name, total)| (total - pool.available.get(name) + extra.get(name)) / total)
        .fold(0.0, f64::max)
}

/// The resource pools of every live node of the cluster, in registration
/// order (the head's own node first).
#[derive(Debug, Default)]
pub struct ClusterResources {
    nodes: Vec<(String, ResourcePool)>,
    /// Reserved placement-group bundles: (group, index) -> (node, pool).
    bundles: std::collections::BTreeMap<(u64, usize), (String, ResourcePool)>,
    spread_cursor: usize,
}

impl ClusterResources {
    pub fn add_node(&mut self, node: &str, total: ResourceSet) {
        self.nodes.retain(|(id, _)| id != node);
        self.nodes
            .push((node.to_string(), ResourcePool::new(total)));
    }

    pub fn remove_node(&mut self, node: &str) {
        self.nodes.retain(|(id, _)| id != node);
    }

    pub fn node(&self, node: &str) -> Option<&ResourcePool> {
        self.nodes.iter().find(|(id, _)| id == node).map(|(_, p)| p)
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

    /// Whether some node could ever grant `request` under `strategy`.
    pub fn feasible(&self, request: &ResourceSet, strategy: &SchedulingStrategy) -> bool {
        match strategy {
            SchedulingStrategy::PlacementGroup { group, bundle } => self
                .bundles
                .iter()
                .filter(|((g, i), _)| g == group && bundle.is_none_or(|b| b == *i))
                .any(|(_, (_, pool))| pool.feasible(request)),
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
            .max_by(|a, b| a.1.total.get(CPU).total_cmp(&b.1.total.get(CPU)))
            .map_or_else(|| "no live node".to_string(), |(_, p)| p.total.to_string())
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
                .find(|(_, (_, pool))| pool.clone().try_acquire(request).is_some())?;
            let mut allocation = pool.try_acquire(request)?;
            allocation.node = node.clone();
            allocation.bundle = Some((*group, *index));
            return Some(allocation);
        }
        let index = self.choose(request, strategy)?;
        let (node, pool) = &mut self.nodes[index];
        let mut allocation = pool.try_acquire(request)?;
        allocation.node = node.clone();
        Some(allocation)
    }

    fn choose(&mut self, request: &ResourceSet, strategy: &SchedulingStrategy) -> Option<usize> {
        let fits = |pool: &ResourcePool| pool.clone().try_acquire(request).is_some();
        match strategy {
            // Bundles are chosen in `try_acquire`; never a node's free pool.
            SchedulingStrategy::PlacementGroup { .. } => None,
            SchedulingStrategy::NodeAffinity { node_id, soft } => {
                let preferred = self
                    .nodes
                    .iter()
                    .position(|(id, p)| id == node_id && fits(p));
                match (preferred, soft) {
                    (Some(index), _) => Some(index),
                    (None, true) => self.choose(request, &SchedulingStrategy::Default),
                    (None, false) => None,
                }
            }
            SchedulingStrategy::Default => {
                let candidates = self.nodes.iter().enumerate().filter(|(_, (_, p))| fits(p));
                let mut least_used: Option<(usize, f64)> = None;
                for (index, (_, pool)) in candidates {
                    let used = utilization(pool, request);
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
                let start = self.spread_cursor;
                let best = (0..count)
                    .map(|offset| (start + offset) % count)
                    .filter(|i| fits(&self.nodes[*i].1))
                    .min_by(|a, b| {
                        utilization(&self.nodes[*a].1, request)
                            .total_cmp(&utilization(&self.nodes[*b].1, request))
                    })?;
                self.spread_cursor = (best + 1) % count.max(1);
                Some(best)
            }
        }
    }

    /// The pool an allocation came from, if it still exists.
    fn pool_of(&mut self, allocation: &Allocation) -> Option<&mut ResourcePool> {
        match allocation.bundle {
            Some(key) => self.bundles.get_mut(&key).map(|(_, pool)| pool),
            None => self
                .nodes
                .iter_mut()
                .find(|(id, _)| *id == allocation.node)
                .map(|(_, pool)| pool),
        }
    }

    pub fn release(&mut self, allocation: &Allocation) {
        if let Some(pool) = self.pool_of(allocation) {
            pool.release(allocation);
        }
    }

    pub fn force_acquire(&mut self, allocation: &Allocation) {
        if let Some(pool) = self.pool_of(allocation) {
            pool.force_acquire(allocation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
