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
