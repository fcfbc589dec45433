//! Typed references to objects in the store, and task arguments.
//!
//! An [`ObjectRef`] is a counted handle: cloning it adds a reference at the
//! node, dropping it removes one, and the node frees the object when the last
//! reference (handles, values that contain the ref, tasks that take it as an
//! argument) is gone. Refs serialise as their id, so they can be passed inside
//! any value; decoding one in another process makes a new counted handle there.

use crate::error::{Error, Result};
use crate::ids::ObjectId;
use crate::protocol::{ObjectBlob, TaskArg};
use crate::runtime::{self, Backend};
use crate::value;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// A reference to a value of type `T` that exists, or will exist, in the
/// object store: the result of a remote call or of [`put`](crate::put).
pub struct ObjectRef<T> {
    id: ObjectId,
    backend: Arc<dyn Backend>,
    _value: PhantomData<fn() -> T>,
}

impl<T> ObjectRef<T> {
    /// Wraps an id whose reference the caller already counted.
    pub(crate) fn adopt(id: ObjectId, backend: Arc<dyn Backend>) -> Self {
        ObjectRef {
            id,
            backend,
            _value: PhantomData,
        }
    }

    /// Another handle to the same object, whose reference the caller
    /// already counted (with others, in one call to the backend).
    pub(crate) fn copy_counted(&self) -> Self {
        ObjectRef::adopt(self.id, self.backend.clone())
    }

    pub fn id(&self) -> ObjectId {
        self.id
    }
}

impl<T: DeserializeOwned> ObjectRef<T> {
    /// Blocks until the value exists and returns it (Ray's `ray.get(ref)`).
    pub fn get(&self) -> Result<T> {
        crate::get(self)
    }

    /// Like [`get`](Self::get), failing with [`Error::Timeout`] once
    /// `timeout` passes without the value (Ray's `ray.get(ref, timeout=...)`).
    pub fn get_timeout(&self, timeout: std::time::Duration) -> Result<T> {
        crate::get_all_timeout(std::slice::from_ref(self), Some(timeout))?
            .pop()
            .ok_or_else(|| Error::Runtime("get returned no value for one ref".into()))
    }
}

impl<T> Clone for ObjectRef<T> {
    fn clone(&self) -> Self {
        self.backend.add_refs(&[self.id]);
        self.copy_counted()
    }
}

impl<T> Drop for ObjectRef<T> {
    fn drop(&mut self) {
        value::release_dropped(&self.backend, self.id);
    }
}

impl<T> PartialEq for ObjectRef<T> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl<T> Eq for ObjectRef<T> {}

impl<T> fmt::Debug for ObjectRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectRef<{}>({})", std::any::type_name::<T>(), self.id)
    }
}

impl<T> Serialize for ObjectRef<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        value::capture(self.id);
        self.id.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for ObjectRef<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = ObjectId::deserialize(deserializer)?;
        let backend = runtime::current().map_err(serde::de::Error::custom)?;
        value::count_decoded(&*backend, id);
        Ok(ObjectRef::adopt(id, backend))
    }
}

/// One argument of a remote call: a value, or a ref whose value the node
/// resolves before the task runs (Ray passes refs the same way).
pub enum Arg<T> {
    Value(T),
    Ref(ObjectRef<T>),
}

impl<T> From<T> for Arg<T> {
    fn from(value: T) -> Self {
        Arg::Value(value)
    }
}

impl<T> From<ObjectRef<T>> for Arg<T> {
    fn from(r: ObjectRef<T>) -> Self {
        Arg::Ref(r)
    }
}

impl<T> From<&ObjectRef<T>> for Arg<T> {
    fn from(r: &ObjectRef<T>) -> Self {
        Arg::Ref(r.clone())
    }
}

impl<T: Serialize> Arg<T> {
    /// Encodes the argument for submission. A ref argument hands its counted
    /// reference to the task; the node drops it when the task is done.
    pub(crate) fn into_task_arg(self, backend: &dyn Backend) -> Result<TaskArg> {
        match self {
            Arg::Value(v) => value::encode(&v, backend).map(TaskArg::Value),
            Arg::Ref(r) => {
                let id = r.id;
                backend.hand_over(&[id]);
                std::mem::forget(r);
                Ok(TaskArg::Ref(id))
            }
        }
    }
}

/// Decodes argument `index` of `function` (used by generated code).
pub(crate) fn decode_arg<T: DeserializeOwned>(
    function: &str,
    args: &[ObjectBlob],
    index: usize,
) -> Result<T> {
    let blob = args.get(index).ok_or_else(|| Error::Decode {
        what: format!("arguments of {function}"),
        message: format!(
            "expected at least {} arguments, got {}",
            index + 1,
            args.len()
        ),
    })?;
    value::decode(blob).map_err(|e| Error::Decode {
        what: format!("argument {} of {function}", index + 1),
        message: e.to_string(),
    })
}
