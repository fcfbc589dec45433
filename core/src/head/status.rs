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
            actors_alive: state.actors.len(),
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
        let actors = state.actor_rows();
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
            demands: state.resource_demands(),
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

impl NodeState {
    /// One row per live actor in the order they were created (ids are
    /// minted in that order), then one per remembered dead one in the order
    /// they died.
    fn actor_rows(&self) -> Vec<ActorStatusLine> {
        let mut live: Vec<_> = self.actors.iter().collect();
        live.sort_unstable_by_key(|(id, _)| **id);
        live.into_iter()
            .map(|(id, a)| ActorStatusLine {
                actor_id: *id,
                class: a.spec.class.clone(),
                name: a.spec.name.clone(),
                state: match a.status {
                    ActorStatus::WaitingForResources => "PENDING_CREATION".into(),
                    ActorStatus::Starting => "STARTING".into(),
                    ActorStatus::Alive => "ALIVE".into(),
                },
                job_id: a.job.to_string(),
                node_id: a.allocation.as_ref().map(|al| al.node.clone()),
                pid: a
                    .worker
                    .and_then(|w| self.workers.get(&w))
                    .and_then(|w| w.pid),
                restarts: a.restarts_used,
                detached: a.spec.detached,
            })
            .chain(self.dead_actors.iter().map(|(id, a)| ActorStatusLine {
                actor_id: *id,
                class: a.class.clone(),
                name: a.name.clone(),
                state: "DEAD".into(),
                job_id: a.job.to_string(),
                node_id: a.node.clone(),
                pid: None,
                restarts: a.restarts_used,
                detached: a.detached,
            }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn row(rows: &[ActorStatusLine], actor: crate::ids::ActorId) -> &ActorStatusLine {
        rows.iter()
            .find(|r| r.actor_id == actor)
            .expect("a row per actor")
    }

    /// A killed actor leaves the live table but keeps its row: its class,
    /// name, the node it ran on and its restarts, as `oxray list actors`
    /// shows Ray's dead actors; live actors come first, oldest first.
    #[test]
    fn a_dead_actor_keeps_its_row_beside_the_live_ones() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(2.0), 1 << 20);
        let alive = ids.actor(cpus(1.0), 0).actor_id;
        let doomed = ActorSpec {
            name: Some("doomed".into()),
            ..ids.actor(cpus(1.0), 0)
        };
        let killed = doomed.actor_id;
        state.start_actor(ActorSpec {
            actor_id: alive,
            ..ids.actor(cpus(1.0), 0)
        });
        state.start_actor(doomed);
        state.kill_actor(killed).expect("killed");
        state.schedule();

        // Actors that need no CPU, so all of them come alive.
        let later: Vec<_> = (0..6).map(|_| ids.actor(cpus(0.0), 0)).collect();
        let mut created = vec![alive];
        created.extend(later.iter().map(|spec| spec.actor_id));
        for spec in later {
            state.start_actor(spec);
        }
        state.schedule();

        let rows = state.actor_rows();
        let order: Vec<_> = rows.iter().map(|r| r.actor_id).collect();
        created.push(killed);
        assert_eq!(order, created, "live by creation, then dead");
        let live = row(&rows, alive);
        assert_eq!(
            (live.state.as_str(), live.node_id.as_deref()),
            ("ALIVE", Some(HEAD))
        );
        let dead = row(&rows, killed);
        assert_eq!(dead.state, "DEAD");
        assert_eq!(dead.class, "Counter");
        assert_eq!(dead.name.as_deref(), Some("doomed"));
        assert_eq!(dead.node_id.as_deref(), Some(HEAD), "the node it ran on");
        assert_eq!(dead.pid, None);
        assert!(state.is_dead(killed) && !state.is_dead(alive));
    }
}
