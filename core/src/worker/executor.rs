//! The task threads of a worker: run functions, actor constructors and
//! methods in the order they arrived (from the head, less any it withdrew
//! before they started, and an actor's calls sent to it directly), turning
//! panics into task errors, and keep the GPU ids granted to the running task.
//!
//! A worker starts with one task thread, which runs one task at a time. An
//! actor created with `max_concurrency` N above 1 (Ray's threaded actor)
//! gets N - 1 more once its constructor has run, all taking calls from the
//! one queue: its state moves behind a read-write lock, `&self` methods run
//! under the read side, side by side, and `&mut self` methods under the
//! write side, alone. The type being `Sync` is what makes that sound; the
//! driver refuses the option for any other type before the actor exists.
//! An async actor's task thread instead turns into an event loop running
//! its calls as tasks ([`EventLoop`]).

use super::client::WorkerClient;
use super::task_queue::{QueuedTask, TaskQueue};
use crate::error::{Error, Result};
use crate::ids::TaskId;
use crate::protocol::*;
use crate::registry::{self, ActorState, ActorType, AsyncCall, LocalCall, SharedActorState};
use parking_lot::RwLock;
use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc::UnboundedSender;

/// The actor a worker hosts, once its constructor has run.
enum Actor {
    /// Calls run one at a time, on the one task thread.
    Exclusive(ActorState),
    /// Calls run on several threads at once (`max_concurrency` above 1).
    Concurrent(Arc<RwLock<SharedActorState>>),
}

pub(super) fn execute_tasks(client: &Arc<WorkerClient>, queue: &Arc<TaskQueue>) {
    run_queue(client, queue, None, true);
}

/// Runs the queue's tasks until it closes. The thread that constructs a
/// concurrent actor starts its other threads, each running this too; only
/// the first polls for the next task before parking (a dozen threads doing
/// so would take the cores from the ones with calls to run).
fn run_queue(
    client: &Arc<WorkerClient>,
    queue: &Arc<TaskQueue>,
    mut actor: Option<Actor>,
    polls: bool,
) {
    loop {
        // In a stream of tasks the next one arrives about one round trip to
        // the head after this one's result left: polling that long first
        // saves parking and being woken for it.
        let arrived = if polls {
            crate::spin::poll(|| queue.try_pop())
        } else {
            None
        };
        let Some(task) = arrived.or_else(|| queue.pop()) else {
            break;
        };
        match task {
            QueuedTask::FromHead(task) => {
                set_gpu_ids(task.gpu_ids.clone());
                let outcome = run_guarded(&mut actor, &task.invocation, &task.args);
                let event_loop = match &task.invocation {
                    Invocation::ActorCreate {
                        class,
                        max_concurrency,
                    } => after_constructor(client, queue, &mut actor, class, *max_concurrency),
                    _ => None,
                };
                // Everything the task printed goes ahead of its result.
                super::log_capture::flush();
                report(client, task.task_id, None, outcome);
                if let Some(event_loop) = event_loop {
                    return event_loop.run(client, queue);
                }
            }
            QueuedTask::Direct { call, reply } => {
                // A direct call is a method of this worker's actor: the GPU
                // ids stay those its constructor was given.
                let outcome = client
                    .direct_call_args(call.task_id, call.caller, call.args)
                    .wait(client)
                    .and_then(|args| args.into_iter().collect::<Result<Vec<_>>>())
                    .and_then(|args| run_guarded(&mut actor, &call.invocation, &args));
                super::log_capture::flush();
                report(client, call.task_id, Some(&reply), outcome);
            }
        }
    }
}

/// After an actor's constructor ran: an async actor's calls go to an event
/// loop (returned, for this thread to run once the constructor's result is
/// sent); a threaded actor gets its other threads.
fn after_constructor(
    client: &Arc<WorkerClient>,
    queue: &Arc<TaskQueue>,
    actor: &mut Option<Actor>,
    class: &str,
    max_concurrency: u32,
) -> Option<EventLoop> {
    let entry = registry::actor_type(class).ok()?;
    match entry.call_async {
        Some(call_async) => Some(EventLoop {
            state: Rc::<dyn Any + Send>::from(constructed(actor)?),
            call_async,
            max_concurrency: max_concurrency.max(1) as usize,
        }),
        None => {
            start_concurrent_threads(client, queue, actor, entry, max_concurrency);
            None
        }
    }
}

/// The state the constructor just made, taken out to move elsewhere; `None`
/// (and `actor` left as it was) if the constructor failed, when the
/// actor's calls fail one at a time.
fn constructed(actor: &mut Option<Actor>) -> Option<ActorState> {
    match actor.take() {
        Some(Actor::Exclusive(state)) => Some(state),
        other => {
            *actor = other;
            None
        }
    }
}

/// Shares a threaded actor's state and starts the threads that run its
/// calls beside this one.
fn start_concurrent_threads(
    client: &Arc<WorkerClient>,
    queue: &Arc<TaskQueue>,
    actor: &mut Option<Actor>,
    entry: &ActorType,
    max_concurrency: u32,
) {
    if max_concurrency <= 1 {
        return;
    }
    let class = entry.name;
    let Some(state) = constructed(actor) else {
        return;
    };
    let shared = match (entry.share)(state) {
        Ok(shared) => Arc::new(RwLock::new(shared)),
        Err(state) => {
            // The driver refuses the option for a type that is not `Sync`
            // (`private::create_actor`), so this is never reached from it.
            *actor = Some(Actor::Exclusive(state));
            return;
        }
    };
    let gpu_ids = get_gpu_ids();
    for index in 1..max_concurrency {
        let (client, queue) = (client.clone(), queue.clone());
        let (shared, gpu_ids) = (shared.clone(), gpu_ids.clone());
        let started = std::thread::Builder::new()
            .name(format!("oxray-task-{index}"))
            .spawn(move || {
                set_gpu_ids(gpu_ids);
                run_queue(&client, &queue, Some(Actor::Concurrent(shared)), false);
            });
        if let Err(error) = started {
            eprintln!(
                "oxray: {class} runs {index} calls at once, not {max_concurrency}: \
                 cannot start another thread: {error}"
            );
            break;
        }
    }
    *actor = Some(Actor::Concurrent(shared));
}

/// An async actor's calls, each a task of one event loop on the worker's
/// task thread (Ray's async actors): a call that awaits lets the next ones
/// run, up to `max_concurrency` in flight. The state is shared by the calls
/// on that one thread, so the type need not be `Sync`.
struct EventLoop {
    state: Rc<dyn Any>,
    call_async: AsyncCall,
    max_concurrency: usize,
}

impl EventLoop {
    /// Runs the queue's calls until it closes.
    fn run(self, client: &Arc<WorkerClient>, queue: &Arc<TaskQueue>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                let problem = format!("cannot start the actor's event loop: {error}");
                while let Some(task) = queue.pop() {
                    report_unrun(client, task, |_| Error::Runtime(problem.clone()));
                }
                return;
            }
        };
        let in_flight = Arc::new(tokio::sync::Semaphore::new(self.max_concurrency));
        let max_concurrency = self.max_concurrency;
        let this = Rc::new(self);
        let calls = tokio::task::LocalSet::new();
        calls.block_on(&runtime, async {
            loop {
                // The calls just started run to their first await (a call
                // that never awaits, to its end); with none left in flight
                // the loop polls for the next call before it parks, as the
                // task thread of any other actor does.
                tokio::task::yield_now().await;
                let idle = in_flight.available_permits() == max_concurrency;
                let polled = idle
                    .then(|| crate::spin::poll(|| queue.try_pop()))
                    .flatten();
                let task = match polled {
                    Some(task) => task,
                    None => match queue.pop_async().await {
                        Some(task) => task,
                        None => break,
                    },
                };
                let Ok(slot) = in_flight.clone().acquire_owned().await else {
                    break;
                };
                let (this, client) = (this.clone(), client.clone());
                // Spawned tasks first run in the order they were spawned, so
                // calls whose arguments came with them start in arrival
                // order; one waiting for a ref argument lets the others run
                // meanwhile (that value may be another call's result).
                tokio::task::spawn_local(async move {
                    let (task_id, invocation, reply, args) = match task {
                        QueuedTask::FromHead(task) => {
                            (task.task_id, task.invocation, None, Ok(task.args))
                        }
                        QueuedTask::Direct { call, reply } => {
                            let args = client
                                .direct_call_args(call.task_id, call.caller, call.args)
                                .arrived(&client)
                                .await
                                .and_then(|args| args.into_iter().collect::<Result<Vec<_>>>());
                            (call.task_id, call.invocation, Some(reply), args)
                        }
                    };
                    let outcome = match args.and_then(|args| this.start(&invocation, &args)) {
                        Ok(call) => Guarded { call, invocation }.await,
                        Err(error) => Err(error),
                    };
                    super::log_capture::flush();
                    report(&client, task_id, reply.as_ref(), outcome);
                    drop(slot);
                });
            }
        });
    }

    /// Decodes a call's arguments and makes its future (a panic while
    /// decoding is the call's error).
    fn start(&self, invocation: &Invocation, args: &[ObjectBlob]) -> Result<LocalCall> {
        match invocation {
            Invocation::ActorMethod { method, .. } => {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    (self.call_async)(&self.state, method, args)
                }))
                .map_err(|panic| panic_error(invocation, panic))
            }
            other => Err(Error::Runtime(format!(
                "{} sent to an async actor's worker",
                other.display_name()
            ))),
        }
    }
}

/// An async actor's call, a panic in it becoming its error: the event loop
/// and the other calls on it go on.
struct Guarded {
    call: LocalCall,
    invocation: Invocation,
}

impl Future for Guarded {
    type Output = Result<ObjectBlob>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            this.call.as_mut().poll(context)
        }));
        polled.unwrap_or_else(|panic| Poll::Ready(Err(panic_error(&this.invocation, panic))))
    }
}

/// Ends a call taken out of the queue before it started: its result is
/// `Error::Cancelled`, sent where it would have gone.
pub(super) fn report_cancelled(client: &WorkerClient, task: QueuedTask) {
    report_unrun(client, task, |invocation| Error::Cancelled {
        function: invocation.display_name(),
    })
}

/// Ends a call that will not run with `error`, sent where its result goes.
fn report_unrun(client: &WorkerClient, task: QueuedTask, error: impl FnOnce(&Invocation) -> Error) {
    match task {
        QueuedTask::FromHead(task) => {
            report(client, task.task_id, None, Err(error(&task.invocation)))
        }
        QueuedTask::Direct { call, reply } => report(
            client,
            call.task_id,
            Some(&reply),
            Err(error(&call.invocation)),
        ),
    }
}

/// Sends a task's outcome where its result goes: to the head, or (`reply`)
/// back on the stream of the caller that sent it directly.
fn report(
    client: &WorkerClient,
    task_id: TaskId,
    reply: Option<&UnboundedSender<DirectResult>>,
    outcome: Result<ObjectBlob>,
) {
    match reply {
        None => client.send(WorkerToNode::Finished { task_id, outcome }),
        Some(reply) => {
            // A caller that left gets no result; the head fails the call.
            let _ = reply.send(DirectResult { task_id, outcome });
            client.warm.touch();
        }
    }
}

/// Runs one task, a panic becoming its error.
fn run_guarded(
    actor: &mut Option<Actor>,
    invocation: &Invocation,
    args: &[ObjectBlob],
) -> Result<ObjectBlob> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_task(actor, invocation, args)
    }))
    .unwrap_or_else(|panic| Err(panic_error(invocation, panic)))
}

/// A task's error for a panic in it.
fn panic_error(invocation: &Invocation, panic: Box<dyn Any + Send>) -> Error {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".to_string());
    Error::TaskFailed {
        function: invocation.display_name(),
        message: format!("panicked: {message}"),
    }
}

fn run_task(
    actor: &mut Option<Actor>,
    invocation: &Invocation,
    args: &[ObjectBlob],
) -> Result<ObjectBlob> {
    match invocation {
        Invocation::Function { name } => (registry::function(name)?.invoke)(args),
        Invocation::ActorCreate { class, .. } => {
            let state = (registry::actor_type(class)?.construct)(args)?;
            *actor = Some(Actor::Exclusive(state));
            crate::value::encode_current(&())
        }
        Invocation::ActorMethod { class, method } => {
            let entry = registry::actor_type(class)?;
            match actor {
                None => Err(Error::Runtime(format!(
                    "{class}::{method} called before the actor was constructed"
                ))),
                Some(Actor::Exclusive(state)) => (entry.call)(state.as_mut(), method, args),
                Some(Actor::Concurrent(shared)) => {
                    let reading = shared.read();
                    if let Some(outcome) = (entry.call_shared)(&**reading, method, args) {
                        return outcome;
                    }
                    // A `&mut self` method: it waits for the running calls.
                    drop(reading);
                    (entry.call)(&mut **shared.write(), method, args)
                }
            }
        }
    }
}

thread_local! {
    static GPU_IDS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn set_gpu_ids(ids: Vec<u32>) {
    GPU_IDS.with(|g| *g.borrow_mut() = ids);
}

/// GPU ids granted to the running task or actor (Ray's `ray.get_gpu_ids()`);
/// empty in the driver.
pub fn get_gpu_ids() -> Vec<u32> {
    GPU_IDS.with(|g| g.borrow().clone())
}
