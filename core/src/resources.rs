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

/// A grant of resources, with the GPU ids it includes.
#[derive(Debug, Clone, Default)]
pub struct Allocation {
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
    gpu_free: Vec<f64>,
}

impl ResourcePool {
    pub fn new(total: ResourceSet) -> Self {
        let gpus = total.get(GPU).floor() as usize;
        ResourcePool {
            available: total.clone(),
            total,
            gpu_free: vec![1.0; gpus],
        }
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
            && self
                .gpu_ids_for(request, &vec![1.0; self.gpu_free.len()])
                .is_some()
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
        for (id, fraction) in &gpus {
            self.gpu_free[*id as usize] -= fraction;
        }
        Some(Allocation {
            resources: request.clone(),
            gpus,
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
            self.gpu_free[*id as usize] -= fraction;
        }
    }

    pub fn release(&mut self, allocation: &Allocation) {
        for (name, amount) in &allocation.resources.0 {
            let total = self.total.get(name);
            let back = (self.available.get(name) + amount).min(total);
            self.available.0.insert(name.clone(), back);
        }
        for (id, fraction) in &allocation.gpus {
            let free = &mut self.gpu_free[*id as usize];
            *free = (*free + fraction).min(1.0);
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
