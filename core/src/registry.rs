//! Compile-time registry of remote functions and actor types.
//!
//! A worker is the driver's own executable re-executed, so the set of functions
//! is known at link time: `#[remote]` and `#[actor]` add entries to these
//! `linkme` distributed slices, and a worker looks names up here. Nothing is
//! registered at run time, so there is no ordering to get wrong before `main`.

use crate::error::{Error, Result};
use crate::protocol::ObjectBlob;
use linkme::distributed_slice;
use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

/// The state of one actor instance inside its worker.
pub type ActorState = Box<dyn Any + Send>;

/// The state of an actor whose type is `Sync`, shared by the threads of a
/// worker that runs several of its calls at once (`max_concurrency`).
pub type SharedActorState = Box<dyn Any + Send + Sync>;

/// A remote function: decodes its arguments, runs, encodes its result.
pub struct RemoteFunction {
    pub name: &'static str,
    pub invoke: fn(&[ObjectBlob]) -> Result<ObjectBlob>,
}

/// A call of an async actor, run on its worker's event loop.
pub type LocalCall = Pin<Box<dyn Future<Output = Result<ObjectBlob>>>>;

/// Starts a method of an async actor (its arguments decoded at once).
pub type AsyncCall = fn(&Rc<dyn Any>, &str, &[ObjectBlob]) -> LocalCall;

/// Runs a method on a shared actor state, if it is a `&self` method.
pub type SharedCall = fn(&dyn Any, &str, &[ObjectBlob]) -> Option<Result<ObjectBlob>>;

/// An actor type: its constructor and its method dispatch.
pub struct ActorType {
    pub name: &'static str,
    pub construct: fn(&[ObjectBlob]) -> Result<ActorState>,
    /// Runs any method, given the state alone.
    pub call: fn(&mut dyn Any, &str, &[ObjectBlob]) -> Result<ObjectBlob>,
    /// Runs a `&self` method on a state other calls may be reading; `None`
    /// for a method that needs `&mut self` (or that the type lacks).
    pub call_shared: SharedCall,
    /// The state as one that threads may share, when the type is `Sync`;
    /// the state back otherwise.
    pub share: fn(ActorState) -> std::result::Result<SharedActorState, ActorState>,
    /// For an async actor (one with `async fn` methods): starts any method.
    pub call_async: Option<AsyncCall>,
}

#[distributed_slice]
pub static REMOTE_FUNCTIONS: [RemoteFunction];

#[distributed_slice]
pub static ACTOR_TYPES: [ActorType];

pub(crate) fn function(name: &str) -> Result<&'static RemoteFunction> {
    REMOTE_FUNCTIONS
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| Error::UnknownFunction {
            name: name.to_string(),
        })
}

pub(crate) fn actor_type(name: &str) -> Result<&'static ActorType> {
    ACTOR_TYPES
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| Error::UnknownFunction {
            name: name.to_string(),
        })
}
