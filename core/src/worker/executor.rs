//! The task thread of a worker: runs functions, actor constructors and
//! methods one at a time, in the order they arrived (from the head, less any
//! it withdrew before they started, and an actor's calls sent to it
//! directly), turning panics into task errors, and keeps the GPU ids granted
//! to the running task.

use super::client::WorkerClient;
use super::task_queue::{QueuedTask, TaskQueue};
use crate::error::{Error, Result};
use crate::ids::TaskId;
use crate::protocol::*;
use crate::registry::{self, ActorState};
use tokio::sync::mpsc::UnboundedSender;

pub(super) fn execute_tasks(client: &WorkerClient, queue: &TaskQueue) {
    let mut actor: Option<ActorState> = None;
    loop {
        // In a stream of tasks the next one arrives about one round trip to
        // the head after this one's result left: polling that long first
        // saves parking and being woken for it.
        let arrived = crate::spin::poll(|| queue.try_pop());
        let Some(task) = arrived.or_else(|| queue.pop()) else {
            break;
        };
        match task {
            QueuedTask::FromHead(task) => {
                set_gpu_ids(task.gpu_ids.clone());
                let outcome = run_guarded(&mut actor, &task.invocation, &task.args);
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
    actor: &mut Option<ActorState>,
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
    actor: &mut Option<ActorState>,
    invocation: &Invocation,
    args: &[ObjectBlob],
) -> Result<ObjectBlob> {
    match invocation {
        Invocation::Function { name } => (registry::function(name)?.invoke)(args),
        Invocation::ActorCreate { class } => {
            let state = (registry::actor_type(class)?.construct)(args)?;
            *actor = Some(state);
            crate::value::encode_current(&())
        }
        Invocation::ActorMethod { class, method } => {
            let entry = registry::actor_type(class)?;
            let state = actor.as_mut().ok_or_else(|| {
                Error::Runtime(format!(
                    "{class}::{method} called before the actor was constructed"
                ))
            })?;
            (entry.call)(state, method, args)
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
