//! The objects a worker or joined driver has learned are ready, so that a
//! `wait` over them needs no request to the head (Ray's owner answers
//! `ray.wait` from its own memory store).
//!
//! The usual loop, `wait(pending, 1)` until nothing is pending, otherwise
//! costs one round trip per object and sends the whole remaining list each
//! time. The head answers a wait by flagging every object that is ready, not
//! only the first `num_returns`; those flags are kept here, and a later wait
//! asks the head only about the objects not known ready, and not at all when
//! enough are. Being ready does not end (a lost object stays ready and its
//! `get` fails), so a flag never goes stale while this process holds a
//! reference; it goes when the head is told of a release of the id
//! (`local_refs.rs`: this process's last reference, or one it did not
//! count), as an owned value does, after which the head is asked again.

use crate::ids::ObjectId;
use parking_lot::Mutex;
use rustc_hash::FxHashSet;

#[derive(Default)]
pub(super) struct ReadyObjects {
    ready: Mutex<FxHashSet<ObjectId>>,
}

impl ReadyObjects {
    /// For each of `ids`, whether it is known ready here.
    pub(super) fn known(&self, ids: &[ObjectId]) -> Vec<bool> {
        let ready = self.ready.lock();
        ids.iter().map(|id| ready.contains(id)).collect()
    }

    /// Keeps the ids flagged ready (`flags[i]` for `ids[i]`).
    pub(super) fn learned(&self, ids: &[ObjectId], flags: &[bool]) {
        let mut ready = self.ready.lock();
        for (id, _) in ids.iter().zip(flags).filter(|(_, ready)| **ready) {
            ready.insert(*id);
        }
    }

    pub(super) fn released(&self, ids: &[ObjectId]) {
        let mut ready = self.ready.lock();
        for id in ids {
            ready.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u64) -> Vec<ObjectId> {
        (1..=n).map(ObjectId).collect()
    }

    #[test]
    fn what_the_head_flagged_ready_is_known_until_released() {
        let objects = ReadyObjects::default();
        let ids = ids(4);
        assert_eq!(objects.known(&ids), [false; 4]);
        objects.learned(&ids[1..], &[true, false, true]);
        assert_eq!(objects.known(&ids), [false, true, false, true]);
        objects.released(&ids[3..]);
        assert_eq!(objects.known(&ids), [false, true, false, false]);
    }
}
