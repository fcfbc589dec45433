//! Actor handles.
//!
//! `#[oxray_core::actor]` on an `impl` block generates a client type with one
//! method per actor method; [`ActorHandle`] wraps that client and derefs to it,
//! so `counter.incr(1)` works on a handle with no trait to import. The raw
//! part ([`RawActor`]) is an id plus the backend, and serialises as the id, so
//! handles can be passed to other tasks and actors.

use crate::error::{Error, Result};
use crate::ids::{ActorId, ObjectId, TaskId};
use crate::object_ref::ObjectRef;
use crate::options::TaskOptions;
use crate::protocol::{Invocation, TaskArg, TaskSpec};
use crate::resources::ResourceSet;
use crate::runtime::{self, Backend};
use crate::value;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Implemented by `#[oxray_core::actor]` for each actor type.
pub trait ActorClass: Send + 'static {
    /// Registered name, unique in the executable.
    const NAME: &'static str;
    /// The generated client with one method per actor method.
    type Client: From<RawActor> + AsRef<RawActor>;
    /// Whether the type has `async fn` methods: its calls then run on an
    /// event loop in its worker, up to `max_concurrency` (default 1000) at
    /// once (Ray's async actors).
    const ASYNC: bool;
    /// Whether the type is `Sync`, so that `&self` methods may run on
    /// several threads at once (`max_concurrency` above 1).
    fn is_sync() -> bool;
}

/// Untyped actor handle: what the generated clients are made of. Each one
/// counts as a reference to its actor on the head; the actor ends when the
/// last goes, unless detached (see `head/actor_handles.rs`).
pub struct RawActor {
    id: ActorId,
    class: &'static str,
    backend: Arc<dyn Backend>,
}

impl RawActor {
    /// Wraps a handle the head already counted.
    pub(crate) fn new(id: ActorId, class: &'static str, backend: Arc<dyn Backend>) -> Self {
        RawActor { id, class, backend }
    }

    fn handle_object(&self) -> ObjectId {
        handle_object(self.id)
    }

    pub fn id(&self) -> ActorId {
        self.id
    }

    /// Submits a method call; used by generated clients.
    #[doc(hidden)]
    pub fn call<R>(&self, method: &str, args: Vec<Result<TaskArg>>) -> ObjectRef<R> {
        let invocation = Invocation::ActorMethod {
            class: self.class.to_string(),
            method: method.to_string(),
        };
        submit(&self.backend, invocation, args, Some(self.id), &ACTOR_CALL)
    }
}

/// The object whose references count an actor's handles (the head's
/// `actor_handles.rs` uses the same id).
fn handle_object(actor: ActorId) -> ObjectId {
    ObjectId(actor.0)
}

/// Actor calls hold no resources of their own (the actor holds them) and are
/// retried by the node according to the actor's `max_task_retries`.
const ACTOR_CALL: TaskOptions = TaskOptions {
    resources: ResourceSet(std::collections::BTreeMap::new()),
    scheduling_strategy: crate::SchedulingStrategy::Default,
    max_retries: 0,
    retry_exceptions: false,
};

/// Submits a task or actor call whose arguments may have failed to encode; an
/// encoding error becomes the task's result instead of a panic at the call
/// site.
pub(crate) fn submit<R>(
    backend: &Arc<dyn Backend>,
    invocation: Invocation,
    args: Vec<Result<TaskArg>>,
    actor: Option<ActorId>,
    options: &TaskOptions,
) -> ObjectRef<R> {
    let return_id = ObjectId(backend.next_id());
    match args.into_iter().collect::<Result<Vec<_>>>() {
        Ok(args) => backend.submit(TaskSpec {
            task_id: TaskId(backend.next_id()),
            return_id,
            invocation,
            args,
            actor,
            resources: options.resources.clone(),
            strategy: options.scheduling_strategy.clone(),
            max_retries: options.max_retries,
            retry_exceptions: options.retry_exceptions,
        }),
        Err(error) => {
            let failure = Error::Decode {
                what: format!("arguments of {}", invocation.display_name()),
                message: error.to_string(),
            };
            backend.put(return_id, Err(failure));
        }
    }
    ObjectRef::adopt(return_id, backend.clone())
}

impl fmt::Debug for RawActor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.class, self.id)
    }
}

impl Clone for RawActor {
    fn clone(&self) -> Self {
        self.backend.add_refs(&[self.handle_object()]);
        RawActor::new(self.id, self.class, self.backend.clone())
    }
}

impl Drop for RawActor {
    fn drop(&mut self) {
        crate::value::release_dropped(&self.backend, self.handle_object());
    }
}

impl Serialize for RawActor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A value holding the handle keeps the actor alive while it exists.
        value::capture(self.handle_object());
        (self.id, self.class).serialize(serializer)
    }
}

/// A typed handle to a live actor.
pub struct ActorHandle<A: ActorClass> {
    client: A::Client,
}

impl<A: ActorClass> ActorHandle<A> {
    pub(crate) fn from_raw(raw: RawActor) -> Self {
        ActorHandle {
            client: A::Client::from(raw),
        }
    }

    pub fn raw(&self) -> &RawActor {
        self.client.as_ref()
    }

    pub fn id(&self) -> ActorId {
        self.raw().id
    }
}

impl<A: ActorClass> Deref for ActorHandle<A> {
    type Target = A::Client;

    fn deref(&self) -> &A::Client {
        &self.client
    }
}

impl<A: ActorClass> Clone for ActorHandle<A> {
    fn clone(&self) -> Self {
        ActorHandle::from_raw(self.raw().clone())
    }
}

impl<A: ActorClass> fmt::Debug for ActorHandle<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.raw(), f)
    }
}

impl<A: ActorClass> Serialize for ActorHandle<A> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw().serialize(serializer)
    }
}

impl<'de, A: ActorClass> Deserialize<'de> for ActorHandle<A> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (id, class) = <(ActorId, String)>::deserialize(deserializer)?;
        if class != A::NAME {
            return Err(serde::de::Error::custom(format!(
                "actor handle of {class} where a {} was expected",
                A::NAME
            )));
        }
        let backend = runtime::current().map_err(serde::de::Error::custom)?;
        crate::value::count_decoded(&*backend, handle_object(id));
        Ok(ActorHandle::from_raw(RawActor::new(id, A::NAME, backend)))
    }
}

/// Finds a live actor by the name it was created with.
pub fn get_actor<A: ActorClass>(name: &str) -> Result<ActorHandle<A>> {
    let backend = runtime::current()?;
    match backend.named_actor(name)? {
        Some((id, class)) if class == A::NAME => {
            Ok(ActorHandle::from_raw(RawActor::new(id, A::NAME, backend)))
        }
        Some((id, class)) => {
            // The head counted the handle it found; none is made of it.
            backend.release(&[handle_object(id)]);
            Err(Error::TypeMismatch {
                expected: A::NAME.to_string(),
                found: class,
            })
        }
        None => Err(Error::ActorNotFound {
            name: name.to_string(),
        }),
    }
}

/// Kills an actor's process; it is not restarted and its pending calls fail
/// with [`Error::ActorDied`] (Ray's `ray.kill`).
pub fn kill<A: ActorClass>(actor: &ActorHandle<A>) -> Result<()> {
    actor.raw().backend.kill_actor(actor.id())
}
