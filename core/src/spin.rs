//! A brief spin before parking, for a thread waiting on a reply that usually
//! comes within one round trip to a worker (a synchronous task or actor
//! call, a request to the head), and for a worker's task thread waiting for
//! the next task of a stream.
//!
//! Parking and being woken costs a futex call on each side and a trip
//! through the scheduler, often more than the rest of a round trip on an
//! idle machine. So a waiter first polls for a short window; between polls
//! it yields its core, so on a busy machine the threads that produce the
//! reply still get to run. On a machine with fewer cores than a round trip
//! has busy threads it does not poll at all ([`MIN_CORES_TO_POLL`]): there
//! each yield still hands a slice back and forth among the polling threads
//! and the one with the reply to produce waits its turn.
//!
//! After the window the waiter parks in [`park_on`], which works on any
//! thread, including one running an async actor's event loop: tokio's own
//! blocking receive refuses inside a runtime, and an async actor's method
//! may call the blocking API (as a Ray async actor may call `ray.get`).

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long a waiter polls before it parks: about one round trip through a
/// worker on an idle machine.
const WINDOW: Duration = Duration::from_micros(100);

/// The fewest cores on which waiters poll. A synchronous round trip keeps
/// four threads busy at once: the caller, its connection's loop, the
/// worker's connection loop and its task thread (the two loops poll too,
/// `warm_loop.rs`). With fewer cores than those four and one more for the
/// head and the rest, a polling waiter takes a core from a thread that has
/// work: on a two-core machine 1:1 synchronous actor calls ran at ~7,000
/// per second with waiters polling and ~11,500 without.
const MIN_CORES_TO_POLL: usize = 5;

/// Polls `ready` until it gives a value or the window passes; on a machine
/// with too few cores to poll, tries once.
pub(crate) fn poll<T>(ready: impl FnMut() -> Option<T>) -> Option<T> {
    poll_for(window(), ready)
}

/// The polling window on this machine.
fn window() -> Duration {
    static CHOSEN: OnceLock<Duration> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores >= MIN_CORES_TO_POLL {
            WINDOW
        } else {
            Duration::ZERO
        }
    })
}

fn poll_for<T>(window: Duration, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = ready() {
            return Some(value);
        }
        if start.elapsed() >= window {
            return None;
        }
        std::thread::yield_now();
    }
}

/// Blocks this thread until `future` is ready, parking between polls.
pub(crate) fn park_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_what_arrives_within_the_window_and_gives_up_after_it() {
        // A window far longer than three polls take, even on a loaded
        // machine where each yield may wait for another thread's slice.
        let mut polls = 0;
        let found = poll_for(Duration::from_secs(60), || {
            polls += 1;
            (polls == 3).then_some(polls)
        });
        assert_eq!(found, Some(3));

        let start = Instant::now();
        assert_eq!(poll(|| None::<()>), None);
        assert!(start.elapsed() >= window());
    }

    #[test]
    fn parks_on_a_reply_inside_a_runtime_where_tokio_refuses_to_block() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _inside = runtime.enter();
        let (answer, reply) = tokio::sync::oneshot::channel();
        let replier = std::thread::spawn(move || answer.send(7));
        assert_eq!(park_on(reply), Ok(7));
        replier.join().unwrap().unwrap();
    }
}
