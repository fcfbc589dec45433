//! Actors that run several calls at once: threaded actors
//! (`max_concurrency` above 1, `&self` calls side by side, `&mut self` alone)
//! and async actors (calls as tasks on the worker's one event loop).

mod common;

use common::{cluster, fifo};
use oxray_core::{actor, remote, ActorHandle, Error, InitOptions};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

fn start() {
    cluster(|| InitOptions::default().num_cpus(2.0));
}

/// Calls that wait for one another: `meet(n)` returns `true` only if `n`
/// calls arrived while it waited, which needs them to run at once.
pub struct Meeting {
    arrived: Mutex<usize>,
    everyone_here: Condvar,
    inside: AtomicUsize,
    most_inside: AtomicUsize,
}

#[actor]
impl Meeting {
    pub fn new() -> Self {
        Meeting {
            arrived: Mutex::new(0),
            everyone_here: Condvar::new(),
            inside: AtomicUsize::new(0),
            most_inside: AtomicUsize::new(0),
        }
    }

    /// Waits (a minute at most) until `parties` calls have arrived in all.
    pub fn meet(&self, parties: usize) -> bool {
        let inside = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_inside.fetch_max(inside, Ordering::SeqCst);
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.everyone_here.notify_all();
        let (arrived, waited) = self
            .everyone_here
            .wait_timeout_while(arrived, Duration::from_secs(60), |arrived| {
                *arrived < parties
            })
            .unwrap();
        drop(arrived);
        self.inside.fetch_sub(1, Ordering::SeqCst);
        !waited.timed_out()
    }

    pub fn most_inside(&self) -> usize {
        self.most_inside.load(Ordering::SeqCst)
    }

    /// How many `meet` calls run while a `&mut self` method does.
    pub fn others_inside(&mut self) -> usize {
        *self.inside.get_mut()
    }
}

/// Not `Sync` (a `Cell`): its calls cannot share it across threads.
pub struct Tally {
    count: std::cell::Cell<u64>,
}

#[actor]
impl Tally {
    pub fn new() -> Self {
        Tally {
            count: std::cell::Cell::new(0),
        }
    }

    pub fn bump(&self) -> u64 {
        self.count.set(self.count.get() + 1);
        self.count.get()
    }
}

/// An async actor: `meet` returns `true` once `parties` calls wait at its
/// barrier together, which they can only do by taking turns at their awaits
/// on the worker's one event loop. Its state needs no `Sync` (a `Cell`).
pub struct Gathering {
    barrier: tokio::sync::Barrier,
    in_flight: std::cell::Cell<usize>,
    most_in_flight: std::cell::Cell<usize>,
}

#[actor]
impl Gathering {
    pub fn new(parties: usize) -> Self {
        Gathering {
            barrier: tokio::sync::Barrier::new(parties),
            in_flight: std::cell::Cell::new(0),
            most_in_flight: std::cell::Cell::new(0),
        }
    }

    /// Waits (a minute at most, on the event loop's timer) at the barrier.
    pub async fn meet(&self) -> bool {
        self.in_flight.set(self.in_flight.get() + 1);
        self.most_in_flight
            .set(self.most_in_flight.get().max(self.in_flight.get()));
        let met = tokio::time::timeout(Duration::from_secs(60), self.barrier.wait()).await;
        self.in_flight.set(self.in_flight.get() - 1);
        met.is_ok()
    }

    /// Calls the blocking API from the event loop, as a Ray async actor may
    /// call `ray.get`.
    pub async fn doubled_remotely(&self, value: u64) -> oxray_core::Result<u64> {
        double::remote(value).get()
    }

    pub async fn fail(&self) -> u64 {
        panic!("failed on purpose")
    }

    pub async fn doubled(&self, value: u64) -> u64 {
        value * 2
    }

    /// Writes into the FIFO at `path` (blocking until a reader opens it).
    pub async fn release(&self, path: String) -> bool {
        std::fs::write(path, "go").is_ok()
    }

    pub fn most_in_flight(&self) -> usize {
        self.most_in_flight.get()
    }
}

#[remote]
fn double(value: u64) -> u64 {
    value * 2
}

/// 21, once something writes into the FIFO at `path`.
#[remote]
fn twenty_one_when_released(path: String) -> u64 {
    std::fs::read(path).expect("read the fifo");
    21
}

/// Calls `gathering` with an argument that only a later call of its own
/// can make ready: the value of a task blocked on `fifo`, which the later
/// call writes. The first call's result, or `None` if it never came.
fn call_before_what_readies_its_argument(
    gathering: &ActorHandle<Gathering>,
    fifo: String,
) -> Option<u64> {
    let argument = twenty_one_when_released::remote(fifo.clone());
    let first = gathering.doubled(&argument);
    let released = gathering.release(fifo);
    let (ready, _) = oxray_core::wait(
        std::slice::from_ref(&first),
        1,
        Some(Duration::from_secs(60)),
    )
    .expect("wait");
    if ready.is_empty() {
        return None;
    }
    assert!(released.get().expect("release"));
    Some(first.get().expect("first call"))
}

#[remote]
fn call_before_what_readies_its_argument_from_a_task(
    gathering: ActorHandle<Gathering>,
    fifo: String,
) -> Option<u64> {
    call_before_what_readies_its_argument(&gathering, fifo)
}

#[test]
fn an_async_actor_runs_its_calls_together_at_their_awaits() {
    start();
    let gathering = Gathering::remote(3).unwrap();
    let met: Vec<_> = (0..3).map(|_| gathering.meet()).collect();
    assert_eq!(oxray_core::get_all(&met).unwrap(), vec![true; 3]);
    assert_eq!(gathering.doubled_remotely(21).get().unwrap(), 42);
    match gathering.fail().get() {
        Err(Error::TaskFailed { message, .. }) => {
            assert!(message.contains("failed on purpose"), "{message}")
        }
        other => panic!("expected the panic as the call's error, got {other:?}"),
    }
    assert_eq!(
        gathering.most_in_flight().get().unwrap(),
        3,
        "the actor outlives a call that panicked"
    );
}

/// An async actor's call waiting for a ref argument does not hold up the
/// calls behind it (here, the one that makes that argument ready), whether
/// the head sends the calls (the driver's) or their caller does (a task's).
#[test]
fn an_async_actor_call_waiting_for_its_argument_lets_later_calls_run() {
    start();
    let dir = tempfile::tempdir().unwrap();
    let gathering = Gathering::remote(1).unwrap();
    assert_eq!(
        call_before_what_readies_its_argument(&gathering, fifo(&dir)),
        Some(42)
    );
    let dir = tempfile::tempdir().unwrap();
    let from_task =
        call_before_what_readies_its_argument_from_a_task::remote(gathering.clone(), fifo(&dir));
    assert_eq!(from_task.get().unwrap(), Some(42));
}

#[test]
fn an_async_actor_has_at_most_max_concurrency_calls_in_flight() {
    start();
    let gathering = Gathering::options().max_concurrency(2).remote(2).unwrap();
    let met: Vec<_> = (0..6).map(|_| gathering.meet()).collect();
    assert_eq!(oxray_core::get_all(&met).unwrap(), vec![true; 6]);
    assert_eq!(gathering.most_in_flight().get().unwrap(), 2);
}

#[test]
fn a_threaded_actor_runs_up_to_max_concurrency_calls_at_once() {
    start();
    let meeting = Meeting::options().max_concurrency(3).remote().unwrap();
    // The first three meet only if they run together; the last three find
    // everyone arrived.
    let met: Vec<_> = (0..6).map(|_| meeting.meet(3)).collect();
    assert_eq!(oxray_core::get_all(&met).unwrap(), vec![true; 6]);
    assert_eq!(
        meeting.most_inside().get().unwrap(),
        3,
        "never more calls at once than max_concurrency"
    );
}

#[test]
fn a_mut_self_method_of_a_threaded_actor_waits_for_the_running_calls() {
    start();
    let meeting = Meeting::options().max_concurrency(4).remote().unwrap();
    let pair: Vec<_> = (0..2).map(|_| meeting.meet(2)).collect();
    let alone = meeting.others_inside();
    assert_eq!(oxray_core::get_all(&pair).unwrap(), vec![true; 2]);
    assert_eq!(alone.get().unwrap(), 0);
    // Calls sent after it run at once again.
    let after: Vec<_> = (0..2).map(|_| meeting.meet(4)).collect();
    assert_eq!(oxray_core::get_all(&after).unwrap(), vec![true; 2]);
}

#[test]
fn max_concurrency_is_refused_for_a_type_that_is_not_sync_and_for_zero() {
    start();
    for (max_concurrency, refused) in [(0, true), (1, false), (2, true)] {
        let created = Tally::options().max_concurrency(max_concurrency).remote();
        match created {
            Err(Error::InvalidActorOptions { class, problem }) => {
                assert!(refused, "max_concurrency {max_concurrency}: {problem}");
                assert!(class.ends_with("Tally"), "{class}");
                assert!(problem.contains("max_concurrency"), "{problem}");
            }
            Err(other) => panic!("max_concurrency {max_concurrency}: {other}"),
            Ok(tally) => {
                assert!(!refused, "max_concurrency {max_concurrency} was accepted");
                assert_eq!(tally.bump().get().unwrap(), 1);
            }
        }
    }
}
