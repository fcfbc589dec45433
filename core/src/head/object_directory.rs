//! The object directory and reference counts (Ray's object directory and
//! reference counter, kept on the head): each object's value or error once
//! ready, how many references hold it, the task that produces it. A value is
//! freed (its shared-memory file removed, on whichever node holds it) when the
//! last reference goes.

use super::object_waiters::Registration;
use super::{Effect, NodeState};
use crate::error::{Error, Result};
use crate::ids::{ObjectId, TaskId};
use crate::protocol::*;
use std::sync::Arc;

pub(super) struct ObjectEntry {
    pub(super) value: Option<Arc<Result<ObjectBlob>>>,
    pub(super) refs: u64,
    pub(super) producer: Option<TaskId>,
}

impl NodeState {
    pub(super) fn value_of(&self, id: ObjectId) -> Result<ObjectBlob> {
        match self.objects.get(&id).and_then(|e| e.value.as_ref()) {
            Some(value) => (**value).clone(),
            None => Err(Error::ObjectLost {
                id: id.to_string(),
                message: "freed or never created".into(),
            }),
        }
    }

    /// For each of `ids`, whether its value (or error) is here.
    pub(super) fn ready_flags(&self, ids: &[ObjectId]) -> Vec<bool> {
        ids.iter()
            .map(|id| self.objects.get(id).is_some_and(|e| e.value.is_some()))
            .collect()
    }

    /// Stores a value (or error) for `id` and wakes what waits on it.
    pub(super) fn complete(&mut self, id: ObjectId, value: Result<ObjectBlob>) {
        let unwanted = match self.objects.get_mut(&id) {
            Some(entry) if entry.refs > 0 => {
                let value = Arc::new(value);
                entry.value = Some(value.clone());
                entry.producer = None;
                if let Ok(blob) = &*value {
                    self.store_admit(blob);
                }
                self.object_waiters.object_ready(id);
                None
            }
            Some(_) => {
                self.objects.remove(&id);
                self.object_waiters.object_gone(id);
                Some(value)
            }
            None => Some(value),
        };
        if let Some(value) = unwanted {
            self.free_value(&value);
        }
        for task in self.waiting_on.remove(&id).unwrap_or_default() {
            if let Some(record) = self.tasks.get_mut(&task) {
                record.missing_deps -= 1;
                if record.missing_deps == 0 {
                    self.dependencies_ready(task);
                }
            }
        }
    }

    pub(super) fn free_value(&mut self, value: &Result<ObjectBlob>) {
        if let Ok(blob) = value {
            self.free_blob(blob);
        }
    }

    pub(super) fn free_blob(&mut self, blob: &ObjectBlob) {
        self.store_forget(blob);
        if let Payload::Shared {
            path,
            node,
            server,
            generation,
            ..
        } = &blob.payload
        {
            // The holder frees the file (or its spilled copy); every other
            // node drops its pulled copy.
            let free = HeadToNode::Free {
                path: path.clone(),
                server: server.clone(),
                generation: *generation,
            };
            for remote in self.remote_nodes.values() {
                let _ = remote.sender.send(free.clone());
            }
            self.effects.push(Effect::Free {
                path: (!self.remote_nodes.contains_key(node)).then(|| path.clone()),
                server: server.clone(),
                generation: *generation,
            });
        }
        for id in &blob.contained {
            self.release(*id);
        }
    }

    /// One more reference to `id` (a ref or actor handle copied into
    /// another process); an object already freed stays freed.
    pub(super) fn add_ref(&mut self, id: ObjectId) {
        if let Some(entry) = self.objects.get_mut(&id) {
            entry.refs += 1;
        }
    }

    pub(super) fn release(&mut self, id: ObjectId) {
        let Some(entry) = self.objects.get_mut(&id) else {
            return;
        };
        entry.refs = entry.refs.saturating_sub(1);
        if entry.refs == 0 && entry.value.is_some() {
            let entry = self.objects.remove(&id).expect("entry just seen");
            self.object_waiters.object_gone(id);
            if let Some(value) = entry.value {
                self.free_value(&value);
            }
            self.handles_released(id);
        }
    }
}

/// The ids of a `get` or `wait` that are not ready yet. Rechecking only these
/// keeps each wake-up cheap when a large batch completes one object at a time.
pub(super) struct Outstanding {
    ids: Vec<ObjectId>,
}

impl Outstanding {
    pub(super) fn new(ids: &[ObjectId]) -> Self {
        Outstanding { ids: ids.to_vec() }
    }

    /// Registers to be woken once `needed` more of the missing ids are
    /// ready (or one of them is gone).
    pub(super) fn register(&self, state: &mut NodeState, needed: usize) -> Registration {
        state.object_waiters.register(&self.ids, needed)
    }

    /// Forgets the ids that became ready and says how many are still missing;
    /// an id the node does not know is an error.
    pub(super) fn missing(&mut self, state: &NodeState) -> Result<usize> {
        let mut lost = None;
        self.ids.retain(|id| match state.objects.get(id) {
            Some(entry) => entry.value.is_none(),
            None => {
                lost = Some(*id);
                false
            }
        });
        match lost {
            Some(id) => Err(Error::ObjectLost {
                id: id.to_string(),
                message: "freed or never created".into(),
            }),
            None => Ok(self.ids.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::resources::ResourceSet;

    #[test]
    fn the_last_reference_frees_a_value_where_it_lives() {
        // (node holding the value, references taken, the head removes the
        // file itself)
        let table = [
            (HEAD, 1, true),
            (HEAD, 3, true),
            ("b", 1, false),
            ("b", 2, false),
        ];
        for (holder, refs, local) in table {
            let ids = Ids::new();
            let mut state = NodeState::for_test(ResourceSet::default(), 1 << 20);
            let mut b = state.join("b", ResourceSet::default());
            let id = ObjectId(ids.next());
            state.put_value(id, in_shm(holder, 9, 4));
            state.objects.get_mut(&id).expect("put").refs = refs;
            for _ in 1..refs {
                state.release(id);
                assert!(state.take_effects().is_empty(), "still referenced");
                assert!(state.value(id).is_some());
            }
            state.release(id);
            assert!(!state.objects.contains_key(&id));
            assert_eq!(
                state.take_effects(),
                vec![Did::Free {
                    local_path: local,
                    generation: 9
                }],
                "{holder} {refs}"
            );
            // Every other node drops its pulled copy; the holder its file.
            assert!(matches!(
                b.try_recv(),
                Ok(HeadToNode::Free { generation: 9, .. })
            ));
        }
    }

    #[test]
    fn freeing_a_value_releases_the_refs_inside_it() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(ResourceSet::default(), 1 << 20);
        let inner = ObjectId(ids.next());
        state.put_value(inner, inline(b"inner"));
        let outer = ObjectId(ids.next());
        let blob = ObjectBlob {
            contained: vec![inner],
            ..inline(b"outer")
        };
        state.put_value(outer, blob);
        state.release(outer);
        assert!(!state.objects.contains_key(&outer));
        assert!(
            !state.objects.contains_key(&inner),
            "its only ref was inside"
        );
    }

    #[test]
    fn a_value_nobody_holds_is_freed_on_arrival() {
        let ids = Ids::new();
        let mut state = NodeState::for_test(ResourceSet::default(), 1 << 20);
        let spec = ids.task("f", ResourceSet::default(), Vec::new());
        let output = spec.return_id;
        state.submit_now(spec);
        state.release(output);
        assert!(
            state.objects.contains_key(&output),
            "pending: kept for its producer"
        );
        state.complete(output, Ok(in_shm(HEAD, 5, 1)));
        assert!(!state.objects.contains_key(&output));
        assert!(state.take_effects().contains(&Did::Free {
            local_path: true,
            generation: 5
        }));
    }
}
