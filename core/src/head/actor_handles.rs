//! Actor handle counting (Ray's actor reference counting): every handle to
//! an actor, in any process, counts as one reference to the actor's handle
//! object, and when the last one goes the actor ends, as in Ray, unless it
//! is detached.
//!
//! The handle object reuses the object directory's reference counts, so
//! handles inside task arguments, return values and stored objects keep
//! their actor alive exactly as object refs inside them keep their objects,
//! and a driver's handles are released with the rest of what it holds when
//! its job ends. Its id is the actor's own: actor and object ids come from
//! one minter per process, so no object has it.

use super::object_directory::ObjectEntry;
use super::NodeState;
use crate::ids::{ActorId, ObjectId};
use crate::protocol::{ObjectBlob, Payload};
use std::sync::Arc;

/// The object whose references are the handles of `actor`.
pub(super) fn handle_object(actor: ActorId) -> ObjectId {
    ObjectId(actor.0)
}

impl NodeState {
    /// Counts one more handle to `actor` (its creator's, or one found by name).
    pub(super) fn take_handle(&mut self, actor: ActorId) {
        let entry = self
            .objects
            .entry(handle_object(actor))
            .or_insert_with(|| ObjectEntry {
                value: Some(Arc::new(Ok(ObjectBlob {
                    type_name: "actor handle".into(),
                    contained: Vec::new(),
                    payload: Payload::Inline(Vec::new()),
                }))),
                refs: 0,
                producer: None,
            });
        entry.refs += 1;
    }

    /// The object `id` was freed: if it held an actor's handles, the last
    /// one is gone and the actor ends unless it is detached.
    pub(super) fn handles_released(&mut self, id: ObjectId) {
        let actor = ActorId(id.0);
        let Some(record) = self.actors.get(&actor) else {
            return;
        };
        if record.spec.detached {
            return;
        }
        self.end_actor(actor, "its last handle was dropped".into());
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::protocol::ActorSpec;
    use crate::resources::CPU;

    /// (detached, handles besides the creator's): an actor lives while any
    /// handle does, and past its last one only if it is detached.
    #[test]
    fn an_actor_ends_with_its_last_handle_unless_it_is_detached() {
        for (detached, copies) in [(false, 0), (false, 2), (true, 0), (true, 1)] {
            let ids = Ids::new();
            let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
            let spec = ActorSpec {
                detached,
                ..ids.actor(cpus(1.0), 0)
            };
            let actor = spec.actor_id;
            state.start_actor(spec);
            for _ in 0..copies {
                state.add_ref(handle_object(actor));
            }
            for released in 0..copies {
                state.release(handle_object(actor));
                assert!(
                    !state.is_dead(actor),
                    "detached {detached}: {} of {} handles remain",
                    copies - released,
                    copies + 1
                );
            }
            state.release(handle_object(actor));
            assert_eq!(state.is_dead(actor), !detached, "detached {detached}");
            let stopped = state
                .take_effects()
                .into_iter()
                .filter(|did| matches!(did, Did::Stop { .. }))
                .count();
            assert_eq!(stopped, usize::from(!detached), "its worker stops with it");
            assert_eq!(state.free(HEAD, CPU), if detached { 0.0 } else { 1.0 });
        }
    }

    /// A creator that finds the named actor already there (`get_if_exists`)
    /// holds a handle of its own: the first creator's release leaves the
    /// actor alive.
    #[test]
    fn a_handle_found_by_name_counts_as_one_more() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(cpus(1.0), 1 << 20);
        let named = |spec: ActorSpec| ActorSpec {
            name: Some("counter".into()),
            get_if_exists: true,
            ..spec
        };
        let first = named(ids.actor(cpus(1.0), 0));
        let actor = first.actor_id;
        state.start_actor(first);
        let found = state
            .create_actor(named(ids.actor(cpus(1.0), 0)), JOB, None)
            .expect("found by name");
        assert_eq!(found, actor);
        state.release(handle_object(actor));
        assert!(!state.is_dead(actor), "the finder's handle remains");
        state.release(handle_object(actor));
        assert!(state.is_dead(actor));
    }
}
