//! Resource use over time, for the overview page's charts.
//!
//! A sampler takes one snapshot of every node's used and total resources per
//! period and keeps the last of them in a ring, so the charts show the last
//! minutes without any database. A snapshot keeps only the charted
//! resources, as numbers, with node ids shared between snapshots, and the
//! ring is bounded in node samples as well as in snapshots: the memory
//! stays small and bounded however many nodes the cluster has.

use oxray_core::NodeStatus;
use parking_lot::Mutex;
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// The resources the overview page charts, the only ones a sample keeps.
pub const CHARTED: [&str; 3] = ["CPU", "GPU", "memory"];

/// One node at one instant: used and total of each [`CHARTED`] resource.
/// Serialized as `{node_id, alive, used: {CPU: ..}, total: {CPU: ..}}`.
#[derive(Debug, Clone)]
pub struct NodeSample {
    /// Shared by every sample of the node.
    pub node_id: Arc<str>,
    pub alive: bool,
    pub used: [f64; CHARTED.len()],
    pub total: [f64; CHARTED.len()],
}

/// Every node at one instant.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub nodes: Vec<NodeSample>,
}

/// The last samples, oldest first, within two bounds: `capacity` samples,
/// and `point_budget` node samples in all. A sample holds every node, so a
/// cluster of a thousand nodes keeps a shorter stretch of time than a small
/// one rather than hundreds of megabytes of history in the head.
pub struct History {
    state: Mutex<Ring>,
    capacity: usize,
    point_budget: usize,
}

#[derive(Default)]
struct Ring {
    samples: VecDeque<Sample>,
    /// Node samples in `samples`.
    points: usize,
    /// The id of each node of the newest sample, for the next one to share.
    ids: HashSet<Arc<str>>,
}

impl History {
    pub fn new(capacity: usize, point_budget: usize) -> Self {
        History {
            state: Mutex::new(Ring::default()),
            capacity: capacity.max(1),
            point_budget,
        }
    }

    /// Records every one of `nodes` at `time_ms`.
    pub fn record_nodes(&self, nodes: &[NodeStatus], time_ms: u64) {
        let mut ring = self.state.lock();
        let mut ids = HashSet::with_capacity(nodes.len());
        let nodes: Vec<NodeSample> = nodes
            .iter()
            .map(|node| {
                let node_id = match ring.ids.get(node.node_id.as_str()) {
                    Some(id) => id.clone(),
                    None => Arc::from(node.node_id.as_str()),
                };
                ids.insert(node_id.clone());
                let total = CHARTED.map(|name| node.total.get(name));
                let mut used = total;
                for (used, name) in used.iter_mut().zip(CHARTED) {
                    *used -= node.available.get(name);
                }
                NodeSample {
                    node_id,
                    alive: node.alive,
                    used,
                    total,
                }
            })
            .collect();
        ring.ids = ids;
        ring.points += nodes.len();
        ring.samples.push_back(Sample { time_ms, nodes });
        while ring.samples.len() > self.capacity
            || (ring.points > self.point_budget && ring.samples.len() > 1)
        {
            let oldest = ring.samples.pop_front().expect("more than one sample");
            ring.points -= oldest.nodes.len();
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.state.lock().samples.iter().cloned().collect()
    }
}

impl Serialize for NodeSample {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// One figure per charted resource, as a map by name.
        struct ByResource<'a>(&'a [f64; CHARTED.len()]);

        impl Serialize for ByResource<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(CHARTED.len()))?;
                for (name, value) in CHARTED.iter().zip(self.0) {
                    map.serialize_entry(name, value)?;
                }
                map.end()
            }
        }

        let mut node = serializer.serialize_struct("NodeSample", 4)?;
        node.serialize_field("node_id", &*self.node_id)?;
        node.serialize_field("alive", &self.alive)?;
        node.serialize_field("used", &ByResource(&self.used))?;
        node.serialize_field("total", &ByResource(&self.total))?;
        node.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxray_core::ResourceSet;

    #[test]
    fn keeps_only_the_newest_samples() {
        let history = History::new(3, 1000);
        for time_ms in 0..5 {
            history.record_nodes(&nodes(1), time_ms);
        }
        let times: Vec<u64> = history.samples().iter().map(|s| s.time_ms).collect();
        assert_eq!(times, vec![2, 3, 4]);
    }

    fn nodes(count: usize) -> Vec<NodeStatus> {
        let mut nodes = Vec::new();
        for index in 0..count {
            let mut total = ResourceSet::default();
            for (name, amount) in [("CPU", 4.0), ("memory", 8.0), ("slot", 1.0)] {
                total.set(name, amount);
            }
            let mut available = total.clone();
            available.set("CPU", 1.0);
            nodes.push(NodeStatus {
                node_id: format!("node-{index}"),
                alive: true,
                total,
                available,
                ..NodeStatus::default()
            });
        }
        nodes
    }

    #[test]
    fn a_large_cluster_keeps_fewer_samples_within_the_point_budget() {
        let history = History::new(600, 1000);
        for time_ms in 0..50 {
            history.record_nodes(&nodes(100), time_ms);
        }
        let samples = history.samples();
        let times: Vec<u64> = samples.iter().map(|s| s.time_ms).collect();
        assert_eq!(
            times,
            (40..50).collect::<Vec<_>>(),
            "the newest 10 of 100 nodes each"
        );
        // Node ids are shared between samples, not copied into each.
        assert!(Arc::ptr_eq(
            &samples[0].nodes[7].node_id,
            &samples[9].nodes[7].node_id
        ));
        // One sample is kept even when it alone is over the budget.
        let small = History::new(600, 10);
        small.record_nodes(&nodes(100), 1);
        assert_eq!(small.samples().len(), 1);
    }

    #[test]
    fn a_sample_serializes_the_charted_resources_by_name() {
        let history = History::new(3, 1000);
        history.record_nodes(&nodes(1), 7);
        let json = serde_json::to_value(history.samples()).unwrap();
        let node = &json[0]["nodes"][0];
        assert_eq!(json[0]["time_ms"], 7);
        assert_eq!(node["node_id"], "node-0");
        assert_eq!(node["alive"], true);
        assert_eq!(
            node["used"],
            serde_json::json!({"CPU": 3.0, "GPU": 0.0, "memory": 0.0})
        );
        assert_eq!(
            node["total"],
            serde_json::json!({"CPU": 4.0, "GPU": 0.0, "memory": 8.0})
        );
    }
}
