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

/// The state of one actor instance inside its worker.
pub type ActorState = Box<dyn Any + Send>;

/// A remote function: decodes its arguments, runs, encodes its result.
pub struct RemoteFunction {
    pub name: &'static str,
    pub invoke: fn(&[ObjectBlob]) -> Result<ObjectBlob>,
}

/// An actor type: its constructor and its method dispatch.
pub struct ActorType {
    pub name: &'static str,
    pub construct: fn(&[ObjectBlob]) -> Result<ActorState>,
    pub call: fn(&mut ActorState, &str, &[ObjectBlob]) -> Result<ObjectBlob>,
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
