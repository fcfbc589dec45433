//! Who waits for which object, so that an object becoming ready wakes only
//! the `get`s and `wait`s that asked for it (Ray's owner keeps the same
//! per-object subscriber lists).
//!
//! A waiter registers once on each object it still misses, with how many of
//! them must become ready before it is worth looking again: all of them for a
//! `get`, the `num_returns` still short for a `wait`. A completion counts
//! down only that object's waiters and wakes the ones that reach zero, so the
//! head's work per completion is proportional to who waits for that object,
//! not to how many requests are blocked in the whole cluster. An object freed
//! while waited on wakes its waiters at once, and they report it lost.
//!
//! Waking is a flag plus a notification on the waiter's own slot, done right
//! at the transition (under the head's lock, never blocking): every path that
//! completes or frees an object goes through here, so none can forget a
//! waiter, and the state machine still performs no I/O.

use crate::ids::ObjectId;
use parking_lot::{Condvar, Mutex};
use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::Instant;

/// Where one waiter is woken: a blocked thread (the embedded driver) waits on
/// the condition variable, an async request on the notification.
#[derive(Default)]
pub(super) struct WaitSlot {
    woken: Mutex<bool>,
    condvar: Condvar,
    notify: tokio::sync::Notify,
}

impl WaitSlot {
    fn wake(&self) {
        *self.woken.lock() = true;
        self.condvar.notify_all();
        // Stores a permit when nobody awaits yet, so a wake-up that comes
        // between registering and awaiting is not lost.
        self.notify.notify_one();
    }

    pub(super) fn is_woken(&self) -> bool {
        *self.woken.lock()
    }

    /// Blocks until woken or `deadline` passes; says whether it was woken.
    pub(super) fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let mut woken = self.woken.lock();
        while !*woken {
            match deadline {
                Some(deadline) => {
                    if self.condvar.wait_until(&mut woken, deadline).timed_out() {
                        return *woken;
                    }
                }
                None => self.condvar.wait(&mut woken),
            }
        }
        true
    }

    pub(super) async fn notified(&self) {
        self.notify.notified().await
    }
}

/// What a blocked request waits for before it looks again.
pub(super) enum WakeOn {
    /// Any change counted by `ready_events` (placement groups, KV, spills).
    AnyChange,
    /// Its own slot, woken by the objects it registered on.
    Objects(Registration),
}

/// A waiter's place in the registry: its name (to give up) and its slot.
pub(super) struct Registration {
    pub(super) waiter: WaiterId,
    pub(super) slot: Arc<WaitSlot>,
}

impl WakeOn {
    /// `AnyChange` unless `done` (for the waits that have no registry).
    pub(super) fn unless(done: bool) -> Option<WakeOn> {
        (!done).then_some(WakeOn::AnyChange)
    }
}

/// A registered waiter, named so that it can give up (a timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct WaiterId(u64);

struct Waiter {
    slot: Arc<WaitSlot>,
    /// Completions of its objects still needed before it is woken.
    needed: usize,
    objects: Vec<ObjectId>,
}

#[derive(Default)]
pub(super) struct ObjectWaiters {
    last_id: u64,
    waiters: FxHashMap<WaiterId, Waiter>,
    /// The waiters registered on each object not ready yet. An entry may name
    /// a waiter already woken by its other objects: it is skipped, and goes
    /// when this object completes or is freed.
    by_object: FxHashMap<ObjectId, Vec<WaiterId>>,
}

impl ObjectWaiters {
    /// Registers a waiter on `missing` (ids not ready yet, duplicates allowed)
    /// to be woken once `needed` more of the requested refs are ready.
    /// Duplicates make one completion count for several refs, so a waiter
    /// with duplicate ids is woken on its first completion and looks again.
    pub(super) fn register(&mut self, missing: &[ObjectId], needed: usize) -> Registration {
        let mut objects = missing.to_vec();
        objects.sort_unstable();
        objects.dedup();
        let needed = if objects.len() == missing.len() {
            needed.clamp(1, objects.len().max(1))
        } else {
            1
        };
        self.last_id += 1;
        let id = WaiterId(self.last_id);
        for object in &objects {
            self.by_object.entry(*object).or_default().push(id);
        }
        let slot = Arc::new(WaitSlot::default());
        self.waiters.insert(
            id,
            Waiter {
                slot: slot.clone(),
                needed,
                objects,
            },
        );
        Registration { waiter: id, slot }
    }

    /// Forgets a waiter that stopped waiting without being woken.
    pub(super) fn unregister(&mut self, id: WaiterId) {
        let Some(waiter) = self.waiters.remove(&id) else {
            return;
        };
        for object in waiter.objects {
            if let Some(list) = self.by_object.get_mut(&object) {
                list.retain(|w| *w != id);
                if list.is_empty() {
                    self.by_object.remove(&object);
                }
            }
        }
    }

    /// `object` got its value (or error): counts its waiters down.
    pub(super) fn object_ready(&mut self, object: ObjectId) {
        for id in self.by_object.remove(&object).unwrap_or_default() {
            if let Some(waiter) = self.waiters.get_mut(&id) {
                waiter.needed -= 1;
                if waiter.needed == 0 {
                    self.wake(id);
                }
            }
        }
    }

    /// `object` is gone: its waiters look now, and find it lost.
    pub(super) fn object_gone(&mut self, object: ObjectId) {
        for id in self.by_object.remove(&object).unwrap_or_default() {
            self.wake(id);
        }
    }

    fn wake(&mut self, id: WaiterId) {
        if let Some(waiter) = self.waiters.remove(&id) {
            waiter.slot.wake();
        }
    }

    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.waiters.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(numbers: &[u64]) -> Vec<ObjectId> {
        numbers.iter().map(|n| ObjectId(*n)).collect()
    }

    #[test]
    fn a_waiter_wakes_when_enough_of_its_objects_are_ready_and_only_then() {
        // (objects waited on, completions needed, completion order,
        // completions after which it must be woken)
        let table: [(&[u64], usize, &[u64], usize); 5] = [
            (&[1, 2, 3], 3, &[3, 1, 2], 3),
            (&[1, 2, 3], 1, &[2, 1, 3], 1),
            (&[1, 2, 3], 2, &[9, 3, 8, 1, 2], 4),
            // Duplicates: woken on the first completion, to look again.
            (&[1, 1, 2], 3, &[2, 1], 1),
            (&[7], 1, &[7], 1),
        ];
        for (objects, needed, order, woken_after) in table {
            let mut waiters = ObjectWaiters::default();
            let slot = waiters.register(&ids(objects), needed).slot;
            for (done, object) in order.iter().enumerate() {
                assert!(!slot.is_woken(), "{objects:?} woken too early");
                waiters.object_ready(ObjectId(*object));
                if done + 1 == woken_after {
                    break;
                }
            }
            assert!(slot.is_woken(), "{objects:?} needing {needed} not woken");
            assert_eq!(waiters.waiting(), 0);
        }
    }

    #[test]
    fn a_completion_wakes_only_the_waiters_of_that_object() {
        let mut waiters = ObjectWaiters::default();
        let slots: Vec<_> = (1..=100)
            .map(|n| waiters.register(&ids(&[n]), 1).slot)
            .collect();
        waiters.object_ready(ObjectId(42));
        let woken: Vec<usize> = (0..100).filter(|i| slots[*i].is_woken()).collect();
        assert_eq!(woken, vec![41]);
        assert_eq!(waiters.waiting(), 99);
    }

    #[test]
    fn a_freed_object_wakes_its_waiters_at_once() {
        let mut waiters = ObjectWaiters::default();
        let slot = waiters.register(&ids(&[1, 2]), 2).slot;
        waiters.object_gone(ObjectId(2));
        assert!(slot.is_woken());
    }

    #[test]
    fn a_waiter_that_gives_up_is_forgotten_everywhere() {
        let mut waiters = ObjectWaiters::default();
        let gave_up = waiters.register(&ids(&[1, 2]), 2);
        let other = waiters.register(&ids(&[2]), 1).slot;
        waiters.unregister(gave_up.waiter);
        let slot = gave_up.slot;
        assert_eq!(waiters.by_object.len(), 1, "object 1 has no waiter left");
        waiters.object_ready(ObjectId(1));
        waiters.object_ready(ObjectId(2));
        assert!(!slot.is_woken());
        assert!(other.is_woken());
        assert!(waiters.by_object.is_empty());
    }

    #[test]
    fn a_wake_before_the_wait_is_not_lost() {
        let mut waiters = ObjectWaiters::default();
        let slot = waiters.register(&ids(&[1]), 1).slot;
        waiters.object_ready(ObjectId(1));
        assert!(slot.wait_until(Some(Instant::now())));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let notified = runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(5), slot.notified()).await
        });
        assert!(notified.is_ok());
    }
}
