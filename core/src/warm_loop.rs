//! Keeps an event loop polling its sockets for a short while after each
//! message instead of parking in `epoll_wait` (the loop's side of
//! `spin.rs`).
//!
//! A round trip to a worker passes through event loops that are idle when
//! the message arrives: the caller's connection thread, the head's runtime,
//! the worker's connection thread. Each one parked in `epoll_wait` costs a
//! wake-up through the scheduler when its socket turns readable, and on a
//! small virtual machine that is most of a round trip (a blocking TCP
//! ping-pong between two processes takes ~60 µs on a two-core one, a polling
//! one ~11 µs). So each message that starts or ends a round trip touches the
//! loop, and for [`WINDOW`] after the last touch a task on the loop yields
//! over and over. Tokio defers a yielding task until it has polled its I/O
//! driver without blocking, so meanwhile the loop sees a reply as soon as it
//! lands; between yields the thread also gives its core to any thread that
//! waits for one, so the threads producing the reply still run on a busy
//! (or two-core) machine. An idle loop does not spin: the window starts
//! only with traffic.
//!
//! The loop's thread must be the one that polls the I/O driver: a
//! current-thread runtime, or a multi-thread runtime with one worker (with
//! two, the idle one parks in `epoll_wait` holding the driver, the spinning
//! one cannot poll it, and every message again wakes a parked thread).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long a loop keeps polling after the last message: a round trip
/// through a worker plus the caller's next request, on an idle machine.
const WINDOW: Duration = Duration::from_micros(200);

pub(crate) struct WarmLoop {
    epoch: Instant,
    /// Nanoseconds after `epoch` until which the loop keeps polling.
    warm_until: AtomicU64,
    touched: Notify,
}

impl WarmLoop {
    /// A warm loop whose polling task runs on `runtime`.
    pub(crate) fn start(runtime: &tokio::runtime::Handle) -> Arc<WarmLoop> {
        let warm = Arc::new(WarmLoop {
            epoch: Instant::now(),
            warm_until: AtomicU64::new(0),
            touched: Notify::new(),
        });
        runtime.spawn(warm.clone().keep_warm());
        warm
    }

    /// Keeps the loop polling for [`WINDOW`] from now. Cheap from any
    /// thread: only a loop that had gone cold is woken.
    pub(crate) fn touch(&self) {
        let now = self.now();
        let until = now + WINDOW.as_nanos() as u64;
        if self.warm_until.swap(until, Ordering::Relaxed) <= now {
            self.touched.notify_one();
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn is_warm(&self) -> bool {
        self.now() < self.warm_until.load(Ordering::Relaxed)
    }

    async fn keep_warm(self: Arc<Self>) {
        loop {
            self.touched.notified().await;
            self.poll_while_warm().await;
        }
    }

    /// Yields to the loop until the window has passed.
    async fn poll_while_warm(&self) {
        while self.is_warm() {
            std::thread::yield_now();
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_touch_keeps_the_loop_polling_for_the_window_then_lets_it_park() {
        let runtime = runtime();
        let warm = WarmLoop::start(runtime.handle());
        assert!(!warm.is_warm(), "an untouched loop is cold");
        let touched = Instant::now();
        warm.touch();
        assert!(warm.is_warm());
        runtime.block_on(warm.poll_while_warm());
        assert!(touched.elapsed() >= WINDOW);
        assert!(!warm.is_warm());
    }

    #[test]
    fn other_tasks_and_sockets_are_served_while_the_loop_is_warm() {
        let runtime = runtime();
        let warm = WarmLoop::start(runtime.handle());
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let address = listener.local_addr().expect("address");
            // Keep the loop warm for as long as the exchange takes: it must
            // still accept, read and write while the polling task yields.
            let keep_touching = {
                let warm = warm.clone();
                tokio::spawn(async move {
                    loop {
                        warm.touch();
                        tokio::task::yield_now().await;
                    }
                })
            };
            let server = tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let (mut socket, _) = listener.accept().await.expect("accept");
                let mut byte = [0u8; 1];
                socket.read_exact(&mut byte).await.expect("read");
                socket.write_all(&[byte[0] + 1]).await.expect("write");
            });
            let mut client = tokio::net::TcpStream::connect(address)
                .await
                .expect("connect");
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            client.write_all(&[41]).await.expect("write");
            let mut answer = [0u8; 1];
            client.read_exact(&mut answer).await.expect("read");
            server.await.expect("server");
            keep_touching.abort();
            assert_eq!(answer[0], 42);
        });
    }
}
