//! Resource use over time, for the overview page's charts.
//!
//! A sampler takes one snapshot of every node's used and total resources per
//! period and keeps the last `capacity` of them in a ring, so the charts show
//! the last minutes without any database and the memory stays bounded.

use oxray_core::ClusterStatus;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

/// One node at one instant.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSample {
    pub node_id: String,
    pub alive: bool,
    pub used: BTreeMap<String, f64>,
    pub total: BTreeMap<String, f64>,
}

/// Every node at one instant.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub nodes: Vec<NodeSample>,
}

impl Sample {
    pub fn of(status: &ClusterStatus, time_ms: u64) -> Self {
        let nodes = status
            .nodes
            .iter()
            .map(|node| NodeSample {
                node_id: node.node_id.clone(),
                alive: node.alive,
                used: node
                    .total
                    .0
                    .iter()
                    .map(|(name, total)| (name.clone(), total - node.available.get(name)))
                    .collect(),
                total: node.total.0.clone(),
            })
            .collect();
        Sample { time_ms, nodes }
    }
}

/// The last samples, oldest first.
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
    capacity: usize,
}

impl History {
    pub fn new(capacity: usize) -> Self {
        History {
            samples: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity: capacity.max(1),
        }
    }

    pub fn record(&self, sample: Sample) {
        let mut samples = self.samples.lock();
        if samples.len() == self.capacity {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_newest_samples() {
        let history = History::new(3);
        for time_ms in 0..5 {
            history.record(Sample {
                time_ms,
                nodes: Vec::new(),
            });
        }
        let times: Vec<u64> = history.samples().iter().map(|s| s.time_ms).collect();
        assert_eq!(times, vec![2, 3, 4]);
    }
}
