//! What the head reports about itself: the cluster table behind `oxray
//! status`, `oxray list` and the dashboard (nodes, jobs, actors, placement
//! groups, task counts, and one row per recent task, object and worker) and
//! the local node's summary for `oxray_core::node_summary`.

use super::actors::ActorStatus;
use super::object_store::NodeObjectStore;
use super::{Node, NodeState};
use crate::protocol::*;
use rustc_hash::FxHashMap;

impl Node {
    pub fn summary(&self) -> crate::runtime::NodeSummary {
        let state = self.state.lock();
        let store = &state.object_stores[&self.config.node_id];
        crate::runtime::NodeSummary {
            objects: state.objects.len(),
            shared_memory_bytes: store.resident_bytes,
            spilled_bytes: store.spilled_bytes,
            spilled_bytes_total: store.spilled_bytes_total,
            tasks: state.tasks.len(),
            workers: state.workers.len(),
            actors_alive: state
                .actors
                .values()
                .filter(|a| !matches!(a.status, ActorStatus::Dead(_)))
                .count(),
            total: self.local_pool(&state).total().clone(),
            available: self.local_pool(&state).available().clone(),
        }
    }

    pub(super) fn local_pool<'a>(
        &self,
        state: &'a NodeState,
    ) -> &'a crate::resources::ResourcePool {
        state
            .pool
            .node(&self.config.node_id)
            .expect("the head's own node never leaves")
    }

    /// Every node, live and dead, with its resources and figures: what the
    /// dashboard samples each second, without the rest of the status.
    pub fn node_statuses(&self) -> Vec<NodeStatus> {
        self.node_rows(&self.state.lock())
    }

    fn node_rows(&self, state: &NodeState) -> Vec<NodeStatus> {
        // One pass over the workers, not one per node.
        let mut workers_per_node: FxHashMap<&str, usize> = FxHashMap::default();
        for worker in state.workers.values() {
            *workers_per_node.entry(worker.node.as_str()).or_default() += 1;
        }
        state
            .pool
            .nodes()
            .map(|(id, pool)| {
                let store = state.object_stores.get(id);
                let figure = |f: fn(&NodeObjectStore) -> u64| store.map_or(0, f);
                NodeStatus {
                    node_id: id.to_string(),
                    address: state
                        .remote_nodes
                        .get(id)
                        .map_or_else(|| self.address.to_string(), |n| n.object_server.clone()),
                    alive: true,
                    is_head: id == self.config.node_id,
                    total: pool.total().clone(),
                    available: pool.available().clone(),
                    workers: workers_per_node.get(id).copied().unwrap_or(0),
                    object_store_bytes: figure(|s| s.resident_bytes),
                    object_store_capacity_bytes: figure(|s| s.capacity),
                    spilled_bytes: figure(|s| s.spilled_bytes),
                    spilled_bytes_total: figure(|s| s.spilled_bytes_total),
                    spilled_objects_total: figure(|s| s.spilled_objects_total),
                }
            })
            .chain(state.dead_nodes.iter().cloned())
            .collect()
    }

    pub fn cluster_status(&self) -> ClusterStatus {
        let state = self.state.lock();
        let nodes = self.node_rows(&state);
        let actors = state
            .actors
            .iter()
            .map(|(id, a)| ActorStatusLine {
                actor_id: *id,
                class: a.spec.class.clone(),
                name: a.spec.name.clone(),
                state: match &a.status {
                    ActorStatus::WaitingForResources => "PENDING_CREATION".into(),
                    ActorStatus::Starting => "STARTING".into(),
                    ActorStatus::Alive => "ALIVE".into(),
                    ActorStatus::Dead(_) => "DEAD".into(),
                },
                job_id: a.job.to_string(),
                node_id: a.allocation.as_ref().map(|al| al.node.clone()),
                pid: a
                    .worker
                    .and_then(|w| state.workers.get(&w))
                    .and_then(|w| w.pid),
                restarts: a.restarts_used,
                detached: a.spec.detached,
            })
            .collect();
        let placement_groups = state
            .placement_groups
            .iter()
            .map(|(id, g)| PlacementGroupLine {
                id: *id,
                strategy: g.strategy,
                state: if g.allocations.is_empty() {
                    "PENDING"
                } else {
                    "CREATED"
                }
                .into(),
                bundles: g
                    .bundles
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (b.clone(), g.allocations.get(i).map(|a| a.node.clone())))
                    .collect(),
            })
            .collect();
        let running = state.tasks.values().filter(|t| t.worker.is_some()).count();
        ClusterStatus {
            nodes,
            jobs: {
                let mut jobs: Vec<JobStatus> = state.jobs.values().cloned().collect();
                jobs.sort_by(|a, b| (a.started_at, &a.job_id).cmp(&(b.started_at, &b.job_id)));
                jobs
            },
            actors,
            placement_groups,
            pending_tasks: state.tasks.len() - running,
            running_tasks: running,
            objects: state.objects.len(),
            tasks: state.task_events.rows(),
            object_rows: state
                .objects
                .iter()
                .take(MAX_OBJECT_ROWS)
                .map(|(id, entry)| object_row(*id, entry))
                .collect(),
            workers: state
                .workers
                .iter()
                .map(|(id, w)| WorkerRow {
                    worker_id: *id,
                    node_id: w.node.clone(),
                    pid: w.pid,
                    worker_type: if w.is_driver { "DRIVER" } else { "WORKER" }.into(),
                    actor_id: w.actor,
                    running_tasks: w.assigned.len(),
                    executable: w.code.as_deref().map_or_else(
                        || {
                            std::env::current_exe()
                                .map_or_else(|_| String::new(), |p| p.display().to_string())
                        },
                        |c| c.executable.path.clone(),
                    ),
                })
                .collect(),
        }
    }
}

fn object_row(id: crate::ids::ObjectId, entry: &super::object_directory::ObjectEntry) -> ObjectRow {
    let (state, blob) = match entry.value.as_deref() {
        None => ("PENDING", None),
        Some(Ok(blob)) => ("READY", Some(blob)),
        Some(Err(_)) => ("FAILED", None),
    };
    let (size_bytes, node_id) = match blob.map(|b| &b.payload) {
        Some(Payload::Inline(bytes)) => (bytes.len() as u64, None),
        Some(Payload::Shared { len, node, .. }) => (*len, Some(node.clone())),
        None => (0, None),
    };
    ObjectRow {
        object_id: id,
        state: state.into(),
        size_bytes,
        in_shared_memory: node_id.is_some(),
        node_id,
        reference_count: entry.refs,
        type_name: blob.map(|b| b.type_name.clone()),
        producer_task: entry.producer,
    }
}
