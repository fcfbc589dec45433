//! Items the generated code of `#[remote]` and `#[actor]` calls. Not a public
//! API: paths and signatures here may change with the macros.

pub use crate::protocol::{ObjectBlob, TaskArg};
pub use crate::registry::{
    ActorState, ActorType, LocalCall, RemoteFunction, SharedActorState, ACTOR_TYPES,
    REMOTE_FUNCTIONS,
};
pub use linkme;

use crate::actor::{ActorClass, ActorHandle, RawActor};
use crate::error::{Error, Result};
use crate::ids::ActorId;
use crate::object_ref::{Arg, ObjectRef};
use crate::options::{ActorOptions, TaskOptions};
use crate::protocol::{ActorSpec, Invocation};
use crate::runtime;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::Any;
use std::rc::Rc;

/// Encodes one argument; an error is reported when the call is submitted.
pub fn task_arg<T: Serialize>(arg: Arg<T>) -> Result<TaskArg> {
    let backend = runtime::current()?;
    arg.into_task_arg(&*backend)
}

pub fn decode_arg<T: DeserializeOwned>(
    function: &str,
    args: &[ObjectBlob],
    index: usize,
) -> Result<T> {
    crate::object_ref::decode_arg(function, args, index)
}

pub fn encode_result<T: Serialize>(value: &T) -> Result<ObjectBlob> {
    crate::value::encode_current(value)
}

/// Turns a function's `Err` into the task's error.
pub fn application_error(function: &str, error: &dyn std::fmt::Display) -> Error {
    Error::TaskFailed {
        function: function.to_string(),
        message: format!("{error:#}"),
    }
}

/// Submits a remote function call. Calling a remote function before `init`
/// is a programming error (an `ObjectRef` cannot exist without a runtime), so
/// it panics with a message saying so, as Ray raises when used before init.
pub fn submit_function<R>(
    name: &'static str,
    args: Vec<Result<TaskArg>>,
    options: &TaskOptions,
) -> ObjectRef<R> {
    let backend = match runtime::current() {
        Ok(backend) => backend,
        Err(error) => panic!("cannot call {name}: {error}"),
    };
    let invocation = Invocation::Function {
        name: name.to_string(),
    };
    crate::actor::submit(&backend, invocation, args, None, options)
}

/// Creates an actor of type `A` with encoded constructor arguments.
pub fn create_actor<A: ActorClass>(
    args: Vec<Result<TaskArg>>,
    options: &ActorOptions,
) -> Result<ActorHandle<A>> {
    let backend = runtime::current()?;
    let args = args.into_iter().collect::<Result<Vec<_>>>()?;
    let invalid = |problem: String| {
        Err(Error::InvalidActorOptions {
            class: A::NAME.to_string(),
            problem,
        })
    };
    let detached = options.lifetime == crate::Lifetime::Detached;
    if detached && options.name.is_none() {
        return invalid(
            "a detached actor needs a name: set .name(...) with .lifetime(Lifetime::Detached)"
                .to_string(),
        );
    }
    // Ray's defaults: one call at a time, a thousand for an async actor.
    let max_concurrency = options
        .max_concurrency
        .unwrap_or(if A::ASYNC { 1000 } else { 1 });
    match max_concurrency {
        0 => return invalid("max_concurrency must be at least 1".to_string()),
        1 => {}
        // An async actor's calls share its one thread.
        _ if A::ASYNC => {}
        calls if !A::is_sync() => {
            return invalid(format!(
                "max_concurrency {calls} runs calls on several threads at once, \
                 which needs an actor type that is Sync"
            ))
        }
        _ => {}
    }
    let spec = ActorSpec {
        actor_id: ActorId(backend.next_id()),
        class: A::NAME.to_string(),
        args,
        resources: options.resources.clone(),
        strategy: options.scheduling_strategy.clone(),
        max_restarts: options.max_restarts,
        max_task_retries: options.max_task_retries,
        name: options.name.clone(),
        get_if_exists: options.get_if_exists,
        detached,
        max_concurrency,
    };
    let id = backend.create_actor(spec)?;
    Ok(ActorHandle::from_raw(RawActor::new(id, A::NAME, backend)))
}

/// The error for a method name the actor type does not have.
pub fn unknown_method(class: &str, method: &str) -> Error {
    Error::UnknownFunction {
        name: format!("{class}::{method}"),
    }
}

/// Downcasts an actor's state to its type.
pub fn actor_state<'a, A: 'static>(state: &'a mut dyn Any, class: &str) -> Result<&'a mut A> {
    state
        .downcast_mut::<A>()
        .ok_or_else(|| Error::Runtime(format!("actor state is not a {class}")))
}

/// Downcasts a shared actor state to its type (`None`: not an `A`, which
/// the caller reports through its exclusive path).
pub fn shared_actor_state<A: 'static>(state: &dyn Any) -> Option<&A> {
    state.downcast_ref::<A>()
}

/// The state of an async actor as its event loop shares it, typed.
pub fn local_actor_state<A: 'static>(state: &Rc<dyn Any>, class: &str) -> Result<Rc<A>> {
    state
        .clone()
        .downcast::<A>()
        .map_err(|_| Error::Runtime(format!("actor state is not a {class}")))
}

/// A call that ended before it started (its arguments did not decode).
pub fn ended_call(outcome: Result<ObjectBlob>) -> LocalCall {
    Box::pin(std::future::ready(outcome))
}

/// Tells at the generated code's call site, where the actor's type is known,
/// whether that type is `Sync` (a generic function cannot ask): method
/// lookup on `&SyncProbe<A>` finds [`ShareIfSync`] first when `A: Sync`,
/// and [`ShareNever`]'s impl on `&SyncProbe<A>` only otherwise.
pub struct SyncProbe<A>(pub std::marker::PhantomData<A>);

/// The probe's answer for `Sync` actor types.
pub trait ShareIfSync {
    fn is_sync(&self) -> bool;
    fn share(&self, state: ActorState) -> std::result::Result<SharedActorState, ActorState>;
}

impl<A: Any + Send + Sync> ShareIfSync for SyncProbe<A> {
    fn is_sync(&self) -> bool {
        true
    }

    fn share(&self, state: ActorState) -> std::result::Result<SharedActorState, ActorState> {
        let typed: Box<A> = state.downcast()?;
        Ok(typed as SharedActorState)
    }
}

/// The probe's answer for every other type.
pub trait ShareNever {
    fn is_sync(&self) -> bool {
        false
    }

    fn share(&self, state: ActorState) -> std::result::Result<SharedActorState, ActorState> {
        Err(state)
    }
}

impl<A> ShareNever for &SyncProbe<A> {}
