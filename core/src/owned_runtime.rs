//! A tokio runtime owned by a value whose last reference may go on one of
//! the runtime's own threads: a node released by the last task that held
//! it, as when a driver exits right after a worker's reply. Dropping a
//! runtime waits for its blocking tasks, which a runtime thread must not
//! do, so tokio panics there; this one is shut down in the background in
//! that case instead, and dropped as usual everywhere else.

use std::ops::Deref;
use tokio::runtime::Runtime;

pub(crate) struct OwnedRuntime(Option<Runtime>);

impl OwnedRuntime {
    pub(crate) fn new(runtime: Runtime) -> Self {
        OwnedRuntime(Some(runtime))
    }
}

impl Deref for OwnedRuntime {
    type Target = Runtime;

    fn deref(&self) -> &Runtime {
        self.0
            .as_ref()
            .expect("the runtime lives until its owner drops")
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                runtime.shutdown_background();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn the_last_reference_may_go_on_the_runtimes_own_thread() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let owned = Arc::new(OwnedRuntime::new(runtime));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let held = owned.clone();
        owned.spawn(async move {
            started_tx.send(()).unwrap();
            let _ = release_rx.await;
            // The last reference: a plain runtime would panic here.
            drop(held);
            done_tx.send(()).unwrap();
        });
        started_rx.recv().unwrap();
        drop(owned);
        release_tx.send(()).unwrap();
        done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the task went on after dropping the runtime");
    }
}
