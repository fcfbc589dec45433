//! Dead actors the head still remembers (Ray's GCS keeps its destroyed
//! actors apart from its registered ones, `destroyed_actors_`, up to
//! `maximum_gcs_destroyed_actor_cached_count`).
//!
//! An actor that dies leaves the table of live actors for this one, keeping
//! only what is still asked of it: its row in `oxray list actors`, and the
//! cause every later call to it fails with. So the live table, which every
//! call, placement and job end looks into or scans, holds only live actors
//! however many have ever existed, and a dead actor costs a few hundred
//! bytes instead of its whole record (spec, resources, allocation, call
//! queues). The table is bounded: beyond `capacity` the oldest is forgotten,
//! and a call to it then fails as a call to an unknown actor does.

use crate::error::Error;
use crate::ids::{ActorId, JobId};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;

/// What the head keeps of an actor once it is dead.
#[derive(Debug, Clone)]
pub(super) struct DeadActor {
    pub(super) class: String,
    pub(super) name: Option<String>,
    pub(super) job: JobId,
    /// The node it last ran on, if it ever got one.
    pub(super) node: Option<String>,
    pub(super) restarts_used: u32,
    pub(super) detached: bool,
    /// Why it died: every call to it fails with this.
    pub(super) cause: Error,
}

/// The most recent dead actors, oldest forgotten first.
pub(super) struct DeadActors {
    capacity: usize,
    records: FxHashMap<ActorId, DeadActor>,
    /// Ids in the order they died.
    order: VecDeque<ActorId>,
}

impl DeadActors {
    pub(super) fn new(capacity: usize) -> Self {
        DeadActors {
            capacity,
            records: FxHashMap::default(),
            order: VecDeque::new(),
        }
    }

    /// Remembers `actor`, forgetting the oldest beyond the capacity.
    pub(super) fn insert(&mut self, actor: ActorId, record: DeadActor) {
        if self.records.insert(actor, record).is_none() {
            self.order.push_back(actor);
        }
        while self.order.len() > self.capacity {
            let oldest = self.order.pop_front().expect("longer than the capacity");
            self.records.remove(&oldest);
        }
    }

    pub(super) fn get(&self, actor: &ActorId) -> Option<&DeadActor> {
        self.records.get(actor)
    }

    /// Oldest death first, so listings show them in the order they died.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&ActorId, &DeadActor)> {
        self.order
            .iter()
            .filter_map(|id| self.records.get(id).map(|record| (id, record)))
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    /// The bound this table keeps to, for the scan checks.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead(class: &str) -> DeadActor {
        DeadActor {
            class: class.into(),
            name: None,
            job: JobId(1),
            node: None,
            restarts_used: 0,
            detached: false,
            cause: Error::ActorDied {
                actor: class.into(),
                message: "killed".into(),
            },
        }
    }

    #[test]
    fn keeps_the_most_recent_up_to_its_capacity_forgetting_the_oldest_first() {
        for capacity in [0, 1, 3] {
            let mut table = DeadActors::new(capacity);
            for n in 0..5u64 {
                table.insert(ActorId(n), dead(&format!("A{n}")));
                assert_eq!(table.len(), capacity.min(n as usize + 1));
            }
            let kept: Vec<u64> = (0..5)
                .filter(|n| table.get(&ActorId(*n)).is_some())
                .collect();
            let expected: Vec<u64> = (5 - capacity as u64..5).collect();
            assert_eq!(kept, expected, "capacity {capacity}");
            let listed: Vec<u64> = table.iter().map(|(id, _)| id.0).collect();
            assert_eq!(listed, expected, "listed in the order they died");
            if let Some(newest) = table.get(&ActorId(4)) {
                assert_eq!(newest.class, "A4");
            }
        }
    }

    #[test]
    fn an_actor_remembered_twice_keeps_one_place_and_its_latest_record() {
        let mut table = DeadActors::new(2);
        table.insert(ActorId(1), dead("first"));
        table.insert(ActorId(1), dead("again"));
        table.insert(ActorId(2), dead("other"));
        assert_eq!(table.len(), 2, "one entry each, so neither is evicted");
        assert_eq!(
            table.get(&ActorId(1)).map(|d| d.class.as_str()),
            Some("again")
        );
        table.insert(ActorId(3), dead("third"));
        assert!(table.get(&ActorId(1)).is_none(), "the oldest goes first");
        assert_eq!(table.iter().count(), 2);
    }
}
