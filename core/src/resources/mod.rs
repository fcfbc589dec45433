//! Resource sets, a node's and the cluster's resource accounting, and the
//! policy that picks a node for a request.
//!
//! A node advertises CPU, GPU, memory and custom resources; tasks and actors ask
//! for amounts of them. GPUs are special: a request for GPUs is granted specific
//! device ids (exported to the worker as `CUDA_VISIBLE_DEVICES`), so the pool
//! tracks each GPU's free fraction, not just a total.
//!
//! `accounting.rs` keeps the books (what each node and placement-group bundle
//! has and has free, grants and releases); `policy.rs` decides where a request
//! goes (Ray's scheduling strategies and its hybrid pack-then-spread default).

mod accounting;
mod policy;

pub use accounting::{Allocation, ClusterResources, ResourcePool};
pub use policy::SchedulingStrategy;

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
