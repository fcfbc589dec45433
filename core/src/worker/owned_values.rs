//! Small values a worker or joined driver put itself, kept in its own memory
//! while the put's reference lives (Ray's in-process memory store of an
//! owner), so `get`ting them back needs no request to the head.
//!
//! An entry goes when the head is told of a release of its id
//! (`local_refs.rs`: this process's last reference, or one it did not
//! count), even if other references to the object remain here: those then
//! read it from the head, which holds the value as long as any reference
//! does. So an entry can never outlive the object it copies.

use crate::error::Result;
use crate::ids::ObjectId;
use crate::protocol::{ObjectBlob, Payload};
use parking_lot::Mutex;
use std::collections::HashMap;

#[derive(Default)]
pub(super) struct OwnedValues {
    values: Mutex<HashMap<ObjectId, ObjectBlob>>,
}

impl OwnedValues {
    /// Keeps `value`, put as `id`, if it is small and inline (what Ray's
    /// owner keeps in process: below the shared-memory threshold).
    pub(super) fn keep(&self, id: ObjectId, value: &Result<ObjectBlob>) {
        if let Ok(
            blob @ ObjectBlob {
                payload: Payload::Inline(bytes),
                ..
            },
        ) = value
        {
            if bytes.len() < crate::shm::INLINE_LIMIT {
                self.values.lock().insert(id, blob.clone());
            }
        }
    }

    /// The value of `id`, if it is kept here.
    pub(super) fn get(&self, id: ObjectId) -> Option<ObjectBlob> {
        self.values.lock().get(&id).cloned()
    }

    /// Fills each hole of `values` (`None`, for the id at the same place in
    /// `ids`) whose value is kept here, under one lock.
    pub(super) fn fill(&self, ids: &[ObjectId], values: &mut [Option<Result<ObjectBlob>>]) {
        let kept = self.values.lock();
        for (value, id) in values.iter_mut().zip(ids) {
            if value.is_none() {
                *value = kept.get(id).cloned().map(Ok);
            }
        }
    }

    /// The values of all of `ids`, or `None` if any is not kept here.
    pub(super) fn get_all(&self, ids: &[ObjectId]) -> Option<Vec<ObjectBlob>> {
        let values = self.values.lock();
        ids.iter().map(|id| values.get(id).cloned()).collect()
    }

    /// This process released a reference to each of `ids`.
    pub(super) fn released(&self, ids: &[ObjectId]) {
        let mut values = self.values.lock();
        for id in ids {
            values.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(payload: Payload) -> crate::error::Result<ObjectBlob> {
        Ok(ObjectBlob {
            type_name: "i64".into(),
            contained: Vec::new(),
            payload,
        })
    }

    fn inline(bytes: &[u8]) -> Payload {
        Payload::Inline(bytes.to_vec())
    }

    #[test]
    fn keeps_small_inline_values_until_their_first_release() {
        let owned = OwnedValues::default();
        owned.keep(ObjectId(1), &blob(inline(&[1])));
        owned.keep(ObjectId(2), &blob(inline(&[2])));
        let both = owned.get_all(&[ObjectId(2), ObjectId(1)]).unwrap();
        let bytes: Vec<_> = both
            .iter()
            .map(|b| match &b.payload {
                Payload::Inline(bytes) => bytes.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(bytes, vec![vec![2], vec![1]], "in the order asked");

        // One id not kept here: the whole get goes to the head.
        assert!(owned.get_all(&[ObjectId(1), ObjectId(3)]).is_none());

        owned.released(&[ObjectId(1)]);
        assert!(owned.get_all(&[ObjectId(1)]).is_none(), "released");
        assert!(owned.get_all(&[ObjectId(2)]).is_some());
    }

    #[test]
    fn large_shared_and_failed_values_are_not_kept() {
        let owned = OwnedValues::default();
        owned.keep(
            ObjectId(1),
            &blob(inline(&vec![0; crate::shm::INLINE_LIMIT])),
        );
        owned.keep(
            ObjectId(2),
            &blob(Payload::Shared {
                path: "/dev/shm/oxray-x-2".into(),
                len: 1 << 20,
                node: "n".into(),
                server: "s".into(),
                generation: 2,
            }),
        );
        owned.keep(
            ObjectId(3),
            &Err(crate::error::Error::Runtime("failed".into())),
        );
        for id in 1..=3 {
            assert!(owned.get_all(&[ObjectId(id)]).is_none(), "{id}");
        }
    }
}
