//! The task thread of a worker: runs functions, actor constructors and
//! methods one at a time, in the order the head sent them (less any it
//! withdrew before they started), turning panics into
//! task errors, and keeps the GPU ids granted to the running task.

use super::client::WorkerClient;
use super::task_queue::TaskQueue;
use crate::error::{Error, Result};
use crate::protocol::*;
use crate::registry::{self, ActorState};

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
        let function = task.invocation.display_name();
        set_gpu_ids(task.gpu_ids.clone());
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_task(&mut actor, &task)))
                .unwrap_or_else(|panic| {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panicked".to_string());
                    Err(Error::TaskFailed {
                        function: function.clone(),
                        message: format!("panicked: {message}"),
                    })
                });
        // Everything the task printed goes ahead of its result.
        super::log_capture::flush();
        client.send(WorkerToNode::Finished {
            task_id: task.task_id,
            outcome,
        });
    }
}

fn run_task(actor: &mut Option<ActorState>, task: &Execute) -> Result<ObjectBlob> {
    match &task.invocation {
        Invocation::Function { name } => (registry::function(name)?.invoke)(&task.args),
        Invocation::ActorCreate { class } => {
            let state = (registry::actor_type(class)?.construct)(&task.args)?;
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
            (entry.call)(state, method, &task.args)
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
