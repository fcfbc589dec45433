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

use super::client::WorkerClient;
use super::task_queue::{QueuedTask, TaskQueue};
use crate::error::{Error, Result};
use crate::ids::TaskId;
use crate::protocol::*;
use crate::registry::{self, ActorState, SharedActorState};
use parking_lot::RwLock;
use std::sync::Arc;
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
                if let Invocation::ActorCreate {
                    class,
                    max_concurrency,
                } = &task.invocation
                {
                    start_concurrent_threads(client, queue, &mut actor, class, *max_concurrency);
                }
                // Everything the task printed goes ahead of its result.
                super::log_capture::flush();
                report(client, task.task_id, None, outcome);
            }
            QueuedTask::Direct { call, reply } => {
                // A direct call is a method of this worker's actor: the GPU
                // ids stay those its constructor was given.
                let outcome = client
                    .direct_call_args(call.task_id, call.caller, call.args)
                    .and_then(|args| args.into_iter().collect::<Result<Vec<_>>>())
                    .and_then(|args| run_guarded(&mut actor, &call.invocation, &args));
                super::log_capture::flush();
                report(client, call.task_id, Some(&reply), outcome);
            }
        }
    }
}

/// After the constructor of an actor with `max_concurrency` above 1: shares
/// its state and starts the threads that run its calls beside this one.
fn start_concurrent_threads(
    client: &Arc<WorkerClient>,
    queue: &Arc<TaskQueue>,
    actor: &mut Option<Actor>,
    class: &str,
    max_concurrency: u32,
) {
    if max_concurrency <= 1 {
        return;
    }
    let Ok(entry) = registry::actor_type(class) else {
        return;
    };
    // A constructor that failed left no actor: its calls fail, one at a time.
    let state = match actor.take() {
        Some(Actor::Exclusive(state)) => state,
        other => {
            *actor = other;
            return;
        }
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

/// Ends a call taken out of the queue before it started: its result is
/// `Error::Cancelled`, sent where it would have gone.
pub(super) fn report_cancelled(client: &WorkerClient, task: QueuedTask) {
    let cancelled = |invocation: &Invocation| {
        Err(Error::Cancelled {
            function: invocation.display_name(),
        })
    };
    match task {
        QueuedTask::FromHead(task) => {
            report(client, task.task_id, None, cancelled(&task.invocation))
        }
        QueuedTask::Direct { call, reply } => report(
            client,
            call.task_id,
            Some(&reply),
            cancelled(&call.invocation),
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
    .unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panicked".to_string());
        Err(Error::TaskFailed {
            function: invocation.display_name(),
            message: format!("panicked: {message}"),
        })
    })
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
