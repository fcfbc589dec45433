//! The tasks a worker holds, in the order they arrived: from the head's
//! stream, and (an actor's worker) the calls callers send it directly. The
//! streams' loops push, the task thread pops. The head may send a task ahead
//! of the one running (so the worker starts it as soon as it sends the
//! result) and later withdraw it; a task comes out of the queue either to
//! run or to be withdrawn, never both, because both happen under the queue's
//! one lock. An actor call it holds may likewise be taken out to end
//! cancelled; a call sent straight here whose cancel (which comes on the
//! head's stream) arrives first is remembered and refused when it comes.

use crate::ids::TaskId;
use crate::protocol::{DirectCall, DirectResult, Execute};
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::collections::VecDeque;
use tokio::sync::mpsc::UnboundedSender;

/// A task to run, and where its result goes.
pub(crate) enum QueuedTask {
    /// Sent by the head, arguments resolved; the result goes to the head.
    FromHead(Execute),
    /// Sent by a caller straight to this actor (`actor_calls.rs`); the
    /// result goes back on `reply`.
    Direct {
        call: DirectCall,
        reply: UnboundedSender<DirectResult>,
    },
}

impl QueuedTask {
    pub(crate) fn task_id(&self) -> TaskId {
        match self {
            QueuedTask::FromHead(execute) => execute.task_id,
            QueuedTask::Direct { call, .. } => call.task_id,
        }
    }
}

#[derive(Default)]
pub(crate) struct TaskQueue {
    state: Mutex<Queued>,
    arrived: Condvar,
    /// Wakes an async actor's event loop, which cannot wait on `arrived`.
    arrived_async: tokio::sync::Notify,
}

#[derive(Default)]
struct Queued {
    tasks: VecDeque<QueuedTask>,
    /// The stream ended: no task comes after those queued.
    closed: bool,
    /// Calls cancelled before they were seen here: a call its caller sent
    /// straight here may arrive after its cancel. The most recent
    /// [`MAX_CANCELLED_AHEAD`]: an id is also left here when its call had
    /// already started, and never comes again.
    cancelled_ahead: VecDeque<TaskId>,
}

impl Queued {
    /// Takes out the first queued task `wanted` picks: it has not started.
    fn take_first(&mut self, wanted: impl Fn(&QueuedTask) -> bool) -> Option<QueuedTask> {
        let position = self.tasks.iter().position(wanted)?;
        self.tasks.remove(position)
    }
}

/// How many cancels of calls not seen yet a worker remembers; those that
/// matter are for calls on their way, which arrive soon after.
const MAX_CANCELLED_AHEAD: usize = 256;

impl TaskQueue {
    pub(crate) fn push(&self, task: QueuedTask) {
        self.queue(self.state.lock(), task);
    }

    /// Queues `task` under the lock `state` holds, and wakes the popper.
    fn queue(&self, mut state: MutexGuard<'_, Queued>, task: QueuedTask) {
        state.tasks.push_back(task);
        drop(state);
        self.arrived.notify_one();
        self.arrived_async.notify_one();
    }

    /// Takes `task_id` out if it has not started; `false` if it has (or was
    /// never sent), in which case its result goes to the head as usual.
    pub(crate) fn withdraw(&self, task_id: TaskId) -> bool {
        self.state
            .lock()
            .take_first(|t| matches!(t, QueuedTask::FromHead(e) if e.task_id == task_id))
            .is_some()
    }

    /// Queues a call a caller sent straight here, unless it was cancelled
    /// before it arrived: then it is given back, to end cancelled unrun.
    pub(crate) fn push_direct(&self, call: QueuedTask) -> Option<QueuedTask> {
        let mut state = self.state.lock();
        let cancelled = &mut state.cancelled_ahead;
        if let Some(at) = cancelled.iter().position(|id| *id == call.task_id()) {
            cancelled.remove(at);
            return Some(call);
        }
        self.queue(state, call);
        None
    }

    /// Cancels the call `task_id`: taken out if it is queued, from the head
    /// or sent directly. If it is not here it has started, or (sent
    /// directly) has not arrived yet, and [`Self::push_direct`] will refuse
    /// it.
    pub(crate) fn cancel(&self, task_id: TaskId) -> Option<QueuedTask> {
        let mut state = self.state.lock();
        if let Some(task) = state.take_first(|t| t.task_id() == task_id) {
            return Some(task);
        }
        if state.cancelled_ahead.len() == MAX_CANCELLED_AHEAD {
            state.cancelled_ahead.pop_front();
        }
        state.cancelled_ahead.push_back(task_id);
        None
    }

    /// No more tasks: `pop` returns `None` once the queue is empty.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.arrived.notify_all();
        self.arrived_async.notify_one();
    }

    pub(crate) fn try_pop(&self) -> Option<QueuedTask> {
        self.state.lock().tasks.pop_front()
    }

    /// The next task, waiting for it; `None` after `close` and the last task.
    pub(crate) fn pop(&self) -> Option<QueuedTask> {
        let mut state = self.state.lock();
        loop {
            if let Some(task) = state.tasks.pop_front() {
                return Some(task);
            }
            if state.closed {
                return None;
            }
            self.arrived.wait(&mut state);
        }
    }

    /// `pop` for an event loop: awaits the next task instead of blocking.
    pub(crate) async fn pop_async(&self) -> Option<QueuedTask> {
        loop {
            // Made before looking, so a push after the look is not missed
            // (`notify_one` leaves a permit when nobody waits yet).
            let arrived = self.arrived_async.notified();
            {
                let mut state = self.state.lock();
                if let Some(task) = state.tasks.pop_front() {
                    return Some(task);
                }
                if state.closed {
                    return None;
                }
            }
            arrived.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Invocation;
    use std::sync::Arc;
    use tokio::sync::mpsc::UnboundedReceiver;

    fn task(id: u64) -> QueuedTask {
        QueuedTask::FromHead(Execute {
            task_id: TaskId(id),
            invocation: Invocation::Function { name: "f".into() },
            args: Vec::new(),
            gpu_ids: Vec::new(),
        })
    }

    /// A call sent straight to this worker; its result would go to
    /// `replies`, which the caller keeps.
    fn direct(id: u64) -> (QueuedTask, UnboundedReceiver<DirectResult>) {
        let (reply, replies) = tokio::sync::mpsc::unbounded_channel();
        let call = DirectCall {
            task_id: TaskId(id),
            caller: crate::ids::WorkerId(1),
            invocation: Invocation::Function { name: "f".into() },
            args: Vec::new(),
        };
        (QueuedTask::Direct { call, reply }, replies)
    }

    fn ids(queue: &TaskQueue) -> Vec<u64> {
        std::iter::from_fn(|| queue.try_pop())
            .map(|t| t.task_id().0)
            .collect()
    }

    #[test]
    fn tasks_come_out_in_order_and_a_withdrawn_one_never_does() {
        let queue = TaskQueue::default();
        (1..=3).for_each(|id| queue.push(task(id)));
        assert!(queue.withdraw(TaskId(2)));
        assert!(!queue.withdraw(TaskId(2)), "only once");
        assert_eq!(ids(&queue), [1, 3]);
    }

    #[test]
    fn a_call_sent_directly_is_never_withdrawn_by_the_head() {
        let queue = TaskQueue::default();
        let (call, _replies) = direct(5);
        assert!(queue.push_direct(call).is_none());
        assert!(!queue.withdraw(TaskId(5)));
        assert_eq!(ids(&queue), [5]);
    }

    /// A call is taken out to be cancelled wherever it came from, unless it
    /// started; the others keep their order.
    #[test]
    fn a_queued_call_is_taken_out_to_be_cancelled_but_not_a_started_one() {
        let queue = TaskQueue::default();
        let (call, _replies) = direct(2);
        queue.push(task(1));
        assert!(queue.push_direct(call).is_none());
        queue.push(task(3));
        queue.push(task(4));
        let running = queue.pop().expect("queued");
        assert!(queue.cancel(running.task_id()).is_none());
        let taken: Vec<u64> = [2, 4]
            .into_iter()
            .filter_map(|id| queue.cancel(TaskId(id)))
            .map(|t| t.task_id().0)
            .collect();
        assert_eq!(taken, [2, 4]);
        assert_eq!(ids(&queue), [3]);
    }

    /// A direct call whose cancel came first is refused when it arrives,
    /// once; the calls around it queue as usual. Only the most recent
    /// cancels are remembered.
    #[test]
    fn a_direct_call_cancelled_before_it_arrived_is_refused() {
        let queue = TaskQueue::default();
        assert!(queue.cancel(TaskId(2)).is_none(), "not here yet");
        let calls: Vec<_> = (1..=3).map(direct).collect();
        let refused: Vec<u64> = calls
            .into_iter()
            .filter_map(|(call, _replies)| queue.push_direct(call))
            .map(|t| t.task_id().0)
            .collect();
        assert_eq!(refused, [2]);
        assert_eq!(ids(&queue), [1, 3]);
        let (again, _replies) = direct(2);
        assert!(queue.push_direct(again).is_none(), "refused once");
        assert_eq!(ids(&queue), [2]);

        for id in 100..100 + MAX_CANCELLED_AHEAD as u64 + 1 {
            queue.cancel(TaskId(id));
        }
        let (oldest, _replies) = direct(100);
        let (newest, _replies) = direct(100 + MAX_CANCELLED_AHEAD as u64);
        assert!(queue.push_direct(oldest).is_none(), "forgotten");
        assert!(queue.push_direct(newest).is_some());
    }

    #[test]
    fn a_started_task_cannot_be_withdrawn() {
        let queue = TaskQueue::default();
        queue.push(task(1));
        let running = queue.pop().expect("queued");
        assert!(!queue.withdraw(running.task_id()));
    }

    #[test]
    fn pop_waits_for_a_push_and_ends_after_close() {
        let queue = Arc::new(TaskQueue::default());
        let popper = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let first = queue.pop().map(|t| t.task_id().0);
                let after_close = queue.pop().map(|t| t.task_id().0);
                (first, after_close)
            })
        };
        queue.push(task(7));
        queue.close();
        assert_eq!(popper.join().expect("popper"), (Some(7), None));
    }

    #[test]
    fn tasks_queued_before_close_still_run() {
        let queue = TaskQueue::default();
        queue.push(task(1));
        queue.close();
        assert_eq!(queue.pop().map(|t| t.task_id().0), Some(1));
        assert!(queue.pop().is_none());
    }
}
