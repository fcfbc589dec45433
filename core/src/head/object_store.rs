//! Each node's object store capacity and what is spilled (Ray's plasma
//! store limit and local object manager): the head counts the primary
//! copies every node holds in shared memory, oldest first, and when a new
//! one takes a node past its capacity it has that node spill the oldest
//! ones to disk (see [`spill`](crate::spill)) until it fits again.
//!
//! The decision lives on the head because the head already sees every
//! object become ready and every object freed, on every node; a node only
//! does the I/O it is told to. Objects are named here by their generation,
//! which is unique to one value (paths are reused).

use super::{Effect, NodeState};
use crate::protocol::{ObjectBlob, Payload};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::BTreeMap;

/// One node's store.
pub(super) struct NodeObjectStore {
    pub(super) capacity: u64,
    /// Bytes of primary copies in shared memory.
    pub(super) resident_bytes: u64,
    /// Bytes of objects spilled to disk and not freed yet.
    pub(super) spilled_bytes: u64,
    /// Everything ever spilled, for metrics.
    pub(super) spilled_bytes_total: u64,
    pub(super) spilled_objects_total: u64,
    /// Resident objects by age: arrival number → generation.
    by_age: BTreeMap<u64, u64>,
    /// What each of the node's objects is: resident (with its arrival
    /// number) or spilled.
    objects: FxHashMap<u64, Stored>,
    arrivals: u64,
    /// Objects the node was told to spill and has not reported spilled:
    /// until it does, their shared memory is still taken.
    spills_in_flight: FxHashSet<u64>,
}

struct Stored {
    len: u64,
    path: String,
    /// `Some(arrival)` while in shared memory, `None` once spilled.
    arrival: Option<u64>,
}

impl NodeObjectStore {
    pub(super) fn new(capacity: u64) -> Self {
        NodeObjectStore {
            capacity,
            resident_bytes: 0,
            spilled_bytes: 0,
            spilled_bytes_total: 0,
            spilled_objects_total: 0,
            by_age: BTreeMap::new(),
            objects: FxHashMap::default(),
            arrivals: 0,
            spills_in_flight: FxHashSet::default(),
        }
    }

    fn admit(&mut self, generation: u64, len: u64, path: &str) {
        if self.objects.contains_key(&generation) {
            return;
        }
        let arrival = self.arrivals;
        self.arrivals += 1;
        self.by_age.insert(arrival, generation);
        self.objects.insert(
            generation,
            Stored {
                len,
                path: path.to_string(),
                arrival: Some(arrival),
            },
        );
        self.resident_bytes += len;
    }

    fn forget(&mut self, generation: u64) {
        self.spills_in_flight.remove(&generation);
        let Some(stored) = self.objects.remove(&generation) else {
            return;
        };
        match stored.arrival {
            Some(arrival) => {
                self.by_age.remove(&arrival);
                self.resident_bytes -= stored.len;
            }
            None => self.spilled_bytes -= stored.len,
        }
    }

    /// Picks the oldest resident objects to spill until the rest fit:
    /// (path, generation, len) of each.
    fn overflow(&mut self) -> Vec<(String, u64, u64)> {
        let mut victims = Vec::new();
        while self.resident_bytes > self.capacity {
            let Some((_, generation)) = self.by_age.pop_first() else {
                break;
            };
            let stored = self
                .objects
                .get_mut(&generation)
                .expect("resident objects are stored");
            stored.arrival = None;
            self.resident_bytes -= stored.len;
            self.spilled_bytes += stored.len;
            self.spilled_bytes_total += stored.len;
            self.spilled_objects_total += 1;
            self.spills_in_flight.insert(generation);
            victims.push((stored.path.clone(), generation, stored.len));
        }
        victims
    }
}

/// The shared-memory part of a blob: (node, generation, len, path).
fn shared(blob: &ObjectBlob) -> Option<(&str, u64, u64, &str)> {
    match &blob.payload {
        Payload::Shared {
            path,
            len,
            node,
            generation,
            ..
        } => Some((node, *generation, *len, path)),
        Payload::Inline(_) => None,
    }
}

impl NodeState {
    /// A value became an object of the directory: count it on its node and
    /// spill what no longer fits there.
    pub(super) fn store_admit(&mut self, blob: &ObjectBlob) {
        let Some((node, generation, len, path)) = shared(blob) else {
            return;
        };
        let Some(store) = self.object_stores.get_mut(node) else {
            return;
        };
        store.admit(generation, len, path);
        for (path, generation, len) in store.overflow() {
            self.effects.push(Effect::Spill {
                node: node.to_string(),
                path,
                generation,
                len,
            });
        }
    }

    /// The node moved the value of `generation` to disk: its memory is free.
    pub(super) fn store_spilled(&mut self, node: &str, generation: u64) {
        if let Some(store) = self.object_stores.get_mut(node) {
            if store.spills_in_flight.remove(&generation) {
                // Wakes the puts waiting for the room.
                self.ready_events += 1;
            }
        }
    }

    /// Whether `node` is still moving objects to disk that its store was
    /// told to spill. A put on that node is answered only once it is not, so
    /// the next put finds the room: the node's shared memory stays within
    /// its capacity plus the object being put (Ray's plasma store likewise
    /// holds a create request until spilling frees the space).
    pub(super) fn store_spilling(&self, node: &str) -> bool {
        self.object_stores
            .get(node)
            .is_some_and(|store| !store.spills_in_flight.is_empty())
    }

    /// A value was freed: its node no longer holds it, in memory or on disk.
    pub(super) fn store_forget(&mut self, blob: &ObjectBlob) {
        if let Some((node, generation, ..)) = shared(blob) {
            if let Some(store) = self.object_stores.get_mut(node) {
                store.forget(generation);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::ids::ObjectId;

    #[test]
    fn the_oldest_objects_spill_until_the_rest_fit_and_freed_ones_leave_the_counts() {
        let mut store = NodeObjectStore::new(10);
        store.admit(1, 4, "a");
        store.admit(2, 4, "b");
        assert!(store.overflow().is_empty());
        store.admit(3, 4, "c");
        assert_eq!(store.overflow(), vec![("a".to_string(), 1, 4)]);
        assert_eq!((store.resident_bytes, store.spilled_bytes), (8, 4));
        store.admit(4, 7, "d");
        let spilled: Vec<u64> = store.overflow().iter().map(|v| v.1).collect();
        assert_eq!(spilled, vec![2, 3], "oldest first, until 7 bytes fit");
        assert_eq!(store.spills_in_flight.len(), 3, "none reported spilled yet");
        assert_eq!((store.resident_bytes, store.spilled_bytes), (7, 12));
        store.forget(1);
        store.forget(4);
        assert_eq!((store.resident_bytes, store.spilled_bytes), (0, 8));
        assert_eq!(
            store.spills_in_flight.len(),
            2,
            "a freed object is no longer awaited"
        );
        assert_eq!(store.spilled_objects_total, 3);
        assert_eq!(store.spilled_bytes_total, 12);
    }

    /// The generations the pending effects spill on `node`.
    fn spills(state: &mut NodeState, node: &str) -> Vec<u64> {
        state
            .take_effects()
            .into_iter()
            .filter_map(|d| match d {
                Did::Spill {
                    node: n,
                    generation,
                } if n == node => Some(generation),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn values_past_a_nodes_capacity_spill_there_and_puts_wait_for_the_report() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(1.0), 10);
        // (generation, bytes, spilled by its arrival, still spilling after)
        let table: [(u64, u64, &[u64], bool); 4] = [
            (1, 4, &[], false),
            (2, 4, &[], false),
            (3, 4, &[1], true),
            (4, 7, &[2, 3], true),
        ];
        for (generation, len, spilled, spilling) in table {
            state.put_value(ObjectId(ids.next()), in_shm(HEAD, generation, len));
            assert_eq!(spills(&mut state, HEAD), spilled, "generation {generation}");
            assert_eq!(
                state.store_spilling(HEAD),
                spilling,
                "generation {generation}"
            );
        }
        let store = &state.object_stores[HEAD];
        assert_eq!((store.resident_bytes, store.spilled_bytes), (7, 12));
        // Each report wakes the waiting puts; the last one ends the wait.
        for (generation, spilling) in [(1, true), (3, true), (2, false)] {
            let before = state.ready_events;
            state.store_spilled(HEAD, generation);
            assert_eq!(state.ready_events, before + 1);
            assert_eq!(state.store_spilling(HEAD), spilling, "after {generation}");
        }
        let before = state.ready_events;
        state.store_spilled(HEAD, 1);
        assert_eq!(
            state.ready_events, before,
            "a repeated report changes nothing"
        );
    }

    #[test]
    fn each_node_counts_its_own_objects_and_a_freed_one_leaves_the_counts() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(1.0), 10);
        let _b = state.join("b", cpus(1.0));
        let (on_head, on_b) = (ObjectId(ids.next()), ObjectId(ids.next()));
        state.put_value(on_head, in_shm(HEAD, 1, 8));
        state.put_value(on_b, in_shm("b", 2, 8));
        state.put_value(ObjectId(ids.next()), inline(b"small"));
        assert_eq!(state.object_stores[HEAD].resident_bytes, 8);
        assert_eq!(state.object_stores["b"].resident_bytes, 8);
        state.put_value(ObjectId(ids.next()), in_shm("gone", 3, 8));
        assert!(spills(&mut state, HEAD).is_empty());
        state.release(on_head);
        assert_eq!(state.object_stores[HEAD].resident_bytes, 0);
        assert_eq!(state.object_stores["b"].resident_bytes, 8);
    }
}
