//! Cluster membership (Ray's GCS node manager and health checks): nodes join
//! over a control stream, heartbeat, and are declared dead when the stream
//! closes or the heartbeats stop. A node's death removes its workers (their
//! tasks retried and actors restarted elsewhere), re-places the placement
//! groups that had a bundle there and marks objects whose only copy was there
//! as lost.

use super::{Node, NodeState};
use crate::error::Error;
use crate::ids::{ObjectId, WorkerId};
use crate::protocol::*;
use crate::resources::ResourceSet;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A node daemon heartbeats this often...
pub(crate) const HEARTBEAT_PERIOD: Duration = Duration::from_secs(1);

/// Dead nodes `oxray status` still lists; older ones are forgotten (Ray's
/// GCS keeps as many: `maximum_gcs_dead_node_cached_count`).
pub(super) const DEAD_NODES_KEPT: usize = 1000;
/// ...and is dead after this long without one (Ray: about 15-20 s).
pub(crate) const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(6);

/// Another node of the cluster, as the head sees it.
pub(super) struct RemoteNode {
    pub(super) sender: mpsc::UnboundedSender<HeadToNode>,
    pub(super) last_heartbeat: Instant,
    pub(super) object_server: String,
}

impl Node {
    pub(super) fn register_node(
        &self,
        node_id: &str,
        resources: ResourceSet,
        object_server: String,
        object_store_memory: u64,
        sender: mpsc::UnboundedSender<HeadToNode>,
    ) -> std::result::Result<(), tonic::Status> {
        self.with_state(|state| {
            if node_id == self.config.node_id || state.remote_nodes.contains_key(node_id) {
                eprintln!("oxray: refused node {node_id}: a live node already has that id");
                return Err(tonic::Status::already_exists(format!(
                    "node {node_id} is already registered"
                )));
            }
            eprintln!("oxray: node {node_id} joined with {resources}");
            state.node_joined(
                node_id,
                resources,
                object_server,
                object_store_memory,
                sender,
            );
            Ok(())
        })
    }

    pub(super) fn handle_node_message(&self, node_id: &str, message: NodeToHead) {
        match message {
            // Taken by the stream's loop, which ends the node.
            NodeToHead::Register { .. } | NodeToHead::Leaving => {}
            NodeToHead::Heartbeat => {
                if let Some(node) = self.state.lock().remote_nodes.get_mut(node_id) {
                    node.last_heartbeat = Instant::now();
                }
            }
            NodeToHead::WorkerStarted { worker, pid } => {
                // Only a worker the head placed on this node.
                let mut state = self.state.lock();
                if state.placed_on(worker, node_id) {
                    if let Some(record) = state.workers.get_mut(&worker) {
                        record.pid = Some(pid);
                    }
                }
            }
            // Only about a worker the head placed on this node: a node
            // cannot end (or blame its code for) another node's worker.
            NodeToHead::WorkerExited { worker, message } => {
                if self.state.lock().placed_on(worker, node_id) {
                    self.worker_exited(worker, message)
                }
            }
            NodeToHead::WorkerNotStarted { worker, error } => {
                if self.state.lock().placed_on(worker, node_id) {
                    self.worker_not_started(worker, error)
                }
            }
            NodeToHead::Spilled { generation } => {
                self.with_state(|state| state.store_spilled(node_id, generation))
            }
        }
    }
}

impl Node {
    /// Declares `node_id` dead for `reason` (its stream closed, its
    /// heartbeats stopped), once.
    pub(super) fn node_died(&self, node_id: &str, reason: &str) {
        if self.with_state(|state| state.node_died(node_id, reason)) {
            eprintln!("oxray: node {node_id} is dead: {reason}");
        }
    }

    /// `node_id` said it is stopping: what ran there is handled as after a
    /// death (retried, restarted, lost), but nothing failed, so it is not
    /// reported as one. Its stream ends when its sender is dropped with its
    /// record.
    pub(super) fn node_left(&self, node_id: &str) {
        if self.with_state(|state| state.node_died(node_id, "it was stopped")) {
            eprintln!("oxray: node {node_id} left the cluster");
        }
    }
}

impl NodeState {
    /// A node joined: its resources, its store and its control stream.
    pub(super) fn node_joined(
        &mut self,
        node_id: &str,
        resources: ResourceSet,
        object_server: String,
        object_store_memory: u64,
        sender: mpsc::UnboundedSender<HeadToNode>,
    ) {
        self.pool.add_node(node_id, resources);
        self.object_stores.insert(
            node_id.to_string(),
            super::object_store::NodeObjectStore::new(object_store_memory),
        );
        self.remote_nodes.insert(
            node_id.to_string(),
            RemoteNode {
                sender,
                last_heartbeat: Instant::now(),
                object_server,
            },
        );
    }

    /// A node stopped: its workers are gone (their tasks retried and actors
    /// restarted elsewhere), and objects whose only copy was there are lost.
    /// False when `node_id` is not a live node (already declared dead).
    pub(super) fn node_died(&mut self, node_id: &str, reason: &str) -> bool {
        let Some(remote) = self.remote_nodes.remove(node_id) else {
            return false;
        };
        self.object_stores.remove(node_id);
        if let Some(pool) = self.pool.node(node_id) {
            if self.dead_nodes.len() == DEAD_NODES_KEPT {
                self.dead_nodes.pop_front();
            }
            self.dead_nodes.push_back(NodeStatus {
                node_id: node_id.to_string(),
                address: remote.object_server,
                alive: false,
                total: pool.total().clone(),
                ..NodeStatus::default()
            });
        }
        // Groups with a bundle there are placed again, whole, elsewhere.
        let displaced: Vec<u64> = self
            .placement_groups
            .iter()
            .filter(|(_, g)| g.allocations.iter().any(|a| a.node == node_id))
            .map(|(id, _)| *id)
            .collect();
        for id in displaced {
            let group = self.placement_groups.get_mut(&id).expect("group just seen");
            let allocations = std::mem::take(&mut group.allocations);
            self.pool.release_bundles(id, &allocations);
        }
        self.pool.remove_node(node_id);
        self.forget_unavailable_on(node_id);
        let workers: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.node == node_id)
            .map(|(id, _)| *id)
            .collect();
        let message = format!("its node {node_id} died: {reason}");
        for worker in workers {
            self.remove_worker(worker, &message);
        }
        let lost: Vec<ObjectId> = self
            .objects
            .iter()
            .filter(|(_, e)| {
                matches!(e.value.as_deref(), Some(Ok(ObjectBlob { payload: Payload::Shared { node, .. }, .. })) if node == node_id)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            if let Some(entry) = self.objects.get_mut(&id) {
                entry.value = Some(Arc::new(Err(Error::ObjectLost {
                    id: id.to_string(),
                    message: message.clone(),
                })));
            }
        }
        self.ready_events += 1;
        true
    }
}

/// Declares nodes dead when their heartbeats stop, even if their connection
/// looks open (a hung machine, a partition).
pub(super) async fn watch_heartbeats(node: Weak<Node>) {
    let mut tick = tokio::time::interval(HEARTBEAT_PERIOD / 4);
    loop {
        tick.tick().await;
        let Some(head) = node.upgrade() else { return };
        let deadline = head.config.heartbeat_timeout;
        let silent: Vec<String> = head
            .state
            .lock()
            .remote_nodes
            .iter()
            .filter(|(_, n)| n.last_heartbeat.elapsed() > deadline)
            .map(|(id, _)| id.clone())
            .collect();
        for id in silent {
            let reason = format!("no heartbeat for {:.1} s", deadline.as_secs_f64());
            head.node_died(&id, &reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::actors::ActorStatus;
    use super::super::test_support::*;
    use super::*;
    use crate::placement::PlacementStrategy;
    use crate::resources::CPU;

    #[test]
    fn a_dead_nodes_tasks_retry_its_actors_restart_and_its_only_copies_are_lost() {
        let ids = Ids::new();
        // The head offers nothing, so everything runs on the other node.
        let mut state = NodeState::for_test(ResourceSet::default(), 1 << 20);
        let _b = state.join("b", cpus(3.0));
        let task = TaskSpec {
            max_retries: 1,
            ..ids.task("f", cpus(1.0), Vec::new())
        };
        let doomed = ids.task("g", cpus(1.0), Vec::new());
        let (task_id, doomed_output) = (task.task_id, doomed.return_id);
        state.submit_now(task);
        let (task_worker, mut inbox) = state.start_one();
        state.submit_now(doomed);
        let (doomed_worker, _) = state.start_one();
        assert_eq!(executed_ids(&mut inbox), vec![task_id]);
        let actor = ids.actor(cpus(1.0), 1);
        let actor_id = actor.actor_id;
        state.create_actor(actor, JOB, None).expect("created");
        state.schedule();
        let (actor_worker, _) = state.start_one();
        for worker in [task_worker, doomed_worker, actor_worker] {
            assert_eq!(state.workers[&worker].node, "b");
        }
        let (on_b, on_head) = (ObjectId(ids.next()), ObjectId(ids.next()));
        state.put_value(on_b, in_shm("b", 1, 10));
        state.put_value(on_head, in_shm(HEAD, 2, 10));

        assert!(state.node_died("b", "its connection closed"));
        state.schedule();
        assert!(!state.node_died("b", "again"), "a node dies once");
        let task = &state.tasks[&task_id];
        assert_eq!(
            (task.worker, task.retries_left),
            (None, 0),
            "requeued, one retry used"
        );
        assert_eq!(error_kind(&state.value(doomed_output)), "WorkerDied");
        let actor = &state.actors[&actor_id];
        assert_eq!(actor.status, ActorStatus::WaitingForResources);
        assert_eq!((actor.restarts_used, actor.allocation.is_none()), (1, true));
        assert_eq!(error_kind(&state.value(on_b)), "ObjectLost");
        assert_eq!(error_kind(&state.value(on_head)), "ok");
        assert!(state.pool.node("b").is_none() && !state.object_stores.contains_key("b"));
        assert_eq!(
            state
                .dead_nodes
                .iter()
                .map(|n| n.node_id.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        assert!(state.workers.is_empty());
        let stopped: Vec<WorkerId> = state
            .take_effects()
            .into_iter()
            .filter_map(|d| match d {
                Did::Stop { worker, .. } => Some(worker),
                _ => None,
            })
            .collect();
        assert_eq!(stopped.len(), 3);

        // A node that joins takes the actor and the retried task.
        let _c = state.join("c", cpus(3.0));
        state.schedule();
        let spawns = state.take_spawns();
        assert_eq!(spawns.len(), 2, "{spawns:?}");
        assert!(spawns.iter().all(|(_, node)| node == "c"));
        assert_eq!(state.actors[&actor_id].status, ActorStatus::Starting);
        for (worker, _) in spawns {
            state.connect(worker);
        }
        assert!(state.tasks[&task_id]
            .worker
            .is_some_and(|w| state.workers[&w].node == "c"));
    }

    #[test]
    fn a_group_with_a_bundle_on_a_dead_node_is_placed_again_elsewhere() {
        let mut state = NodeState::for_test(ResourceSet::default(), 1 << 20);
        let _b = state.join("b", cpus(1.0));
        state
            .create_placement_group(1, vec![cpus(1.0)], PlacementStrategy::Pack, JOB)
            .expect("feasible");
        state.schedule();
        assert_eq!(state.placement_groups[&1].allocations[0].node, "b");
        assert!(state.node_died("b", "no heartbeat"));
        state.schedule();
        assert!(!state.placement_group_ready(1).expect("still known"));
        let _c = state.join("c", cpus(1.0));
        state.schedule();
        assert!(state.placement_group_ready(1).expect("known"));
        assert_eq!(state.placement_groups[&1].allocations[0].node, "c");
        assert_eq!(state.free("c", CPU), 0.0);
    }

    /// `oxray status` lists the most recent dead nodes, at most
    /// DEAD_NODES_KEPT, the oldest forgotten first.
    #[test]
    fn dead_nodes_are_kept_up_to_the_limit_oldest_forgotten_first() {
        // (nodes that join and die, the first one still listed)
        for (died, first_kept) in [(2, 0), (DEAD_NODES_KEPT, 0), (DEAD_NODES_KEPT + 3, 3)] {
            let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
            for index in 0..died {
                let node = format!("n{index}");
                let _control = state.join(&node, cpus(1.0));
                assert!(state.node_died(&node, "gone"));
            }
            assert_eq!(state.dead_nodes.len(), died.min(DEAD_NODES_KEPT));
            assert_eq!(state.dead_nodes[0].node_id, format!("n{first_kept}"));
            assert_eq!(
                state.dead_nodes.back().unwrap().node_id,
                format!("n{}", died - 1)
            );
        }
    }
}
