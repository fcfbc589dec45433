//! Actors on the embedded cluster: ordering, names, restarts, kill,
//! cancellation (threaded and async actors: `actor_concurrency.rs`).

mod common;

use common::{cluster, fifo};
use oxray_core::{actor, ActorHandle, Error, InitOptions, Lifetime, ObjectRef};
use std::time::{Duration, Instant};

fn start() {
    cluster(|| InitOptions::default().num_cpus(2.0));
}

pub struct Recorder {
    seen: Vec<u64>,
    pid: u32,
}

#[actor]
impl Recorder {
    pub fn new() -> Self {
        Recorder {
            seen: Vec::new(),
            pid: std::process::id(),
        }
    }

    pub fn record(&mut self, value: u64) -> usize {
        self.seen.push(value);
        self.seen.len()
    }

    /// Records `value` once something writes into the FIFO at `path`.
    pub fn record_after(&mut self, path: String, value: u64) -> usize {
        std::fs::read(path).expect("read the fifo");
        self.record(value)
    }

    /// Records `value` once something writes into the FIFO at `path`
    /// (outside oxray's API, so nothing lends the actor's CPU out meanwhile).
    pub fn record_when_released(&mut self, path: String, value: u64) -> usize {
        std::fs::read(path).expect("read the fifo");
        self.record(value)
    }

    pub fn seen(&self) -> Vec<u64> {
        self.seen.clone()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills the actor's own process, as a crash would.
    pub fn crash(&self) -> u32 {
        // SAFETY: sends SIGKILL to this very process.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        0
    }
}

/// An actor whose constructor waits until something writes into the FIFO
/// at `path`: its callers hold their calls until it is alive.
pub struct OpensLate {
    seen: Vec<u64>,
}

#[actor]
impl OpensLate {
    pub fn new(path: String) -> Self {
        std::fs::read(path).expect("read the fifo");
        OpensLate { seen: Vec::new() }
    }

    pub fn record(&mut self, value: u64) -> usize {
        self.seen.push(value);
        self.seen.len()
    }

    /// Records `value` once something writes into the FIFO at `path`.
    pub fn record_after(&mut self, path: String, value: u64) -> usize {
        std::fs::read(path).expect("read the fifo");
        self.record(value)
    }

    pub fn seen(&self) -> Vec<u64> {
        self.seen.clone()
    }
}

pub struct Picky;

#[actor]
impl Picky {
    pub fn new(ok: bool) -> Result<Self, String> {
        if ok {
            Ok(Picky)
        } else {
            Err("refused to start".to_string())
        }
    }

    pub fn ping(&self) -> String {
        "pong".to_string()
    }
}

#[test]
fn calls_run_in_submission_order_in_their_own_process() {
    start();
    let recorder = Recorder::remote().unwrap();
    let counts: Vec<_> = (0..200).map(|i| recorder.record(i)).collect();
    assert_eq!(
        oxray_core::get_all(&counts).unwrap(),
        (1..=200).collect::<Vec<usize>>()
    );
    assert_eq!(
        recorder.seen().get().unwrap(),
        (0..200).collect::<Vec<u64>>()
    );
    assert_ne!(recorder.pid().get().unwrap(), std::process::id());
}

#[test]
fn two_actors_live_in_two_processes() {
    start();
    let (a, b) = (Recorder::remote().unwrap(), Recorder::remote().unwrap());
    a.record(1);
    assert_ne!(a.pid().get().unwrap(), b.pid().get().unwrap());
    assert!(b.seen().get().unwrap().is_empty());
}

#[test]
fn named_actors_are_found_by_name() {
    start();
    let original = Recorder::options().name("ledger").remote().unwrap();
    original.record(7).get().unwrap();
    let found = oxray_core::get_actor::<Recorder>("ledger").unwrap();
    assert_eq!(found.id(), original.id());
    assert_eq!(found.seen().get().unwrap(), vec![7]);
    let again = Recorder::options()
        .name("ledger")
        .get_if_exists(true)
        .remote()
        .unwrap();
    assert_eq!(again.id(), original.id());
    assert!(matches!(
        Recorder::options().name("ledger").remote(),
        Err(Error::NameTaken { .. })
    ));
    assert!(matches!(
        oxray_core::get_actor::<Recorder>("nobody"),
        Err(Error::ActorNotFound { .. })
    ));
    assert!(matches!(
        oxray_core::get_actor::<Picky>("ledger"),
        Err(Error::TypeMismatch { .. })
    ));
}

#[test]
fn crashed_actor_restarts_with_a_fresh_constructor_then_dies_for_good() {
    start();
    let recorder = Recorder::options().max_restarts(1).remote().unwrap();
    recorder.record(1).get().unwrap();
    let first_pid = recorder.pid().get().unwrap();
    assert!(matches!(
        recorder.crash().get(),
        Err(Error::ActorDied { .. })
    ));
    // Restarted: a new process whose state was built by the constructor again.
    assert_eq!(recorder.seen().get().unwrap(), Vec::<u64>::new());
    assert_ne!(recorder.pid().get().unwrap(), first_pid);
    assert!(matches!(
        recorder.crash().get(),
        Err(Error::ActorDied { .. })
    ));
    match recorder.seen().get() {
        Err(Error::ActorDied { message, .. }) => {
            assert!(message.contains("max_restarts=1"), "{message}")
        }
        other => panic!("expected ActorDied, got {other:?}"),
    }
}

#[test]
fn calls_in_flight_are_retried_with_max_task_retries() {
    start();
    let recorder = Recorder::options()
        .max_restarts(1)
        .max_task_retries(1)
        .remote()
        .unwrap();
    let first_pid = recorder.pid().get().unwrap();
    // The crash call itself is retried once on the restarted actor, which
    // crashes again and exhausts the restarts.
    assert!(matches!(
        recorder.crash().get(),
        Err(Error::ActorDied { .. })
    ));
    assert_ne!(first_pid, 0);
}

#[test]
fn killed_actors_fail_their_calls() {
    start();
    let recorder = Recorder::options()
        .max_restarts(5)
        .name("doomed")
        .remote()
        .unwrap();
    recorder.record(1).get().unwrap();
    oxray_core::kill(&recorder).unwrap();
    match recorder.record(2).get() {
        Err(Error::ActorDied { message, .. }) => assert!(message.contains("killed"), "{message}"),
        other => panic!("expected ActorDied, got {other:?}"),
    }
    assert!(matches!(
        oxray_core::get_actor::<Recorder>("doomed"),
        Err(Error::ActorNotFound { .. })
    ));
}

#[test]
fn failing_constructor_makes_calls_fail_with_its_message() {
    start();
    let picky = Picky::remote(false).unwrap();
    match picky.ping().get() {
        Err(Error::ActorDied { message, .. }) => {
            assert!(message.contains("refused to start"), "{message}")
        }
        other => panic!("expected ActorDied, got {other:?}"),
    }
    assert_eq!(Picky::remote(true).unwrap().ping().get().unwrap(), "pong");
}

#[test]
fn handles_can_be_passed_to_tasks() {
    start();
    let recorder = Recorder::remote().unwrap();
    assert_eq!(
        record_through::remote(recorder.clone(), 5).get().unwrap(),
        1
    );
    assert_eq!(recorder.seen().get().unwrap(), vec![5]);
}

#[oxray_core::remote]
fn record_through(recorder: oxray_core::ActorHandle<Recorder>, value: u64) -> usize {
    recorder.record(value).get().expect("call from a task")
}

/// Holds another actor's handle until told to let go.
pub struct Holder {
    held: Option<ActorHandle<Recorder>>,
}

#[actor]
impl Holder {
    pub fn new() -> Self {
        Holder { held: None }
    }

    pub fn hold(&mut self, recorder: ActorHandle<Recorder>) -> bool {
        self.held.replace(recorder).is_none()
    }

    pub fn record_held(&self, value: u64) -> usize {
        let held = self.held.as_ref().expect("a held handle");
        held.record(value).get().expect("call from an actor")
    }

    pub fn forget(&mut self) -> bool {
        self.held.take().is_some()
    }
}

/// Whether `pid` is a process that has not exited (a zombie has).
fn process_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

#[test]
fn an_actor_ends_with_its_last_handle_in_any_process_unless_detached() {
    start();
    let recorder = Recorder::remote().unwrap();
    let pid = recorder.pid().get().unwrap();
    let holder = Holder::remote().unwrap();
    assert!(holder.hold(recorder.clone()).get().unwrap());
    drop(recorder);
    // The holder's handle, in its own process, keeps the actor alive.
    assert_eq!(holder.record_held(3).get().unwrap(), 1);
    assert!(process_running(pid));
    assert!(holder.forget().get().unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_running(pid) {
        assert!(
            Instant::now() < deadline,
            "the actor's process {pid} outlived its last handle"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // A detached actor outlives its handles: found by name afterwards.
    let kept = Recorder::options()
        .name("kept past its handles")
        .lifetime(Lifetime::Detached)
        .remote()
        .unwrap();
    kept.record(1).get().unwrap();
    let kept_pid = kept.pid().get().unwrap();
    drop(kept);
    let found = oxray_core::get_actor::<Recorder>("kept past its handles").unwrap();
    assert_eq!(found.seen().get().unwrap(), vec![1]);
    assert_eq!(found.pid().get().unwrap(), kept_pid);
    oxray_core::kill(&found).unwrap();
}

/// Calls `recorder` four times, the first blocked on a FIFO, cancels the
/// third while it waits in line, and releases the first once the third
/// ended: what each call gave, in order.
fn cancel_a_queued_call(recorder: &ActorHandle<Recorder>, fifo: String) -> Vec<String> {
    let first = recorder.record_when_released(fifo.clone(), 1);
    let queued: Vec<_> = (2..=4).map(|value| recorder.record(value)).collect();
    oxray_core::cancel(&queued[1]).expect("cancel");
    let timeout = Some(Duration::from_secs(120));
    let (ended, _) = oxray_core::wait(&queued[1..2], 1, timeout).expect("wait");
    assert_eq!(
        ended.len(),
        1,
        "the cancelled call ends while the first still runs"
    );
    std::fs::write(&fifo, "go").expect("release the first call");
    outcomes(std::iter::once(first).chain(queued), "Recorder::record")
}

#[oxray_core::remote]
fn cancel_a_queued_call_from_a_task(recorder: ActorHandle<Recorder>, fifo: String) -> Vec<String> {
    // Once the route is known, every call goes straight to the actor.
    recorder.pid().get().expect("first call");
    cancel_a_queued_call(&recorder, fifo)
}

/// A call waiting on the actor's worker behind a running one is dropped
/// there when cancelled, whether the head sent it (the driver's calls) or
/// its caller did (a task's calls go straight to the actor's worker): it
/// ends `Cancelled`, never runs, and the calls around it run in order.
#[test]
fn a_cancelled_actor_call_waiting_in_line_never_runs() {
    start();
    let expected = ["1", "2", "cancelled", "3"];
    let dir = tempfile::tempdir().unwrap();
    let from_driver = Recorder::remote().unwrap();
    assert_eq!(cancel_a_queued_call(&from_driver, fifo(&dir)), expected);
    assert_eq!(from_driver.seen().get().unwrap(), vec![1, 2, 4]);

    let dir = tempfile::tempdir().unwrap();
    let from_task = Recorder::remote().unwrap();
    let outcomes = cancel_a_queued_call_from_a_task::remote(from_task.clone(), fifo(&dir));
    assert_eq!(outcomes.get().unwrap(), expected);
    assert_eq!(from_task.seen().get().unwrap(), vec![1, 2, 4]);
}

/// Calls `actor` three times while its constructor waits on `fifo` (so the
/// calls wait in this process for the actor's address), cancels the second,
/// and lets the constructor finish once that one ended: what each call gave.
#[oxray_core::remote]
fn cancel_a_held_call(actor: ActorHandle<OpensLate>, fifo: String) -> Vec<String> {
    let calls: Vec<_> = (1..=3).map(|value| actor.record(value)).collect();
    oxray_core::cancel(&calls[1]).expect("cancel");
    let timeout = Some(Duration::from_secs(60));
    let (ended, _) = oxray_core::wait(&calls[1..2], 1, timeout).expect("wait");
    assert_eq!(
        ended.len(),
        1,
        "the cancelled call ends before the actor is up"
    );
    std::fs::write(&fifo, "go").expect("release the constructor");
    outcomes(calls, "OpensLate::record")
}

/// What each of `calls` gave: its count, or `cancelled` where it ended as a
/// cancelled call of `method`.
fn outcomes(calls: impl IntoIterator<Item = ObjectRef<usize>>, method: &str) -> Vec<String> {
    calls
        .into_iter()
        .map(|call| match call.get() {
            Ok(count) => count.to_string(),
            Err(Error::Cancelled { function }) if function.ends_with(method) => {
                "cancelled".to_string()
            }
            Err(other) => panic!("{other}"),
        })
        .collect()
}

/// Calls `actor` three times while its constructor waits (so this task's
/// worker holds the calls until the actor is up): the first records once
/// something writes into `gate`. The calls, for another process to cancel.
#[oxray_core::remote]
fn hold_calls(actor: ActorHandle<OpensLate>, gate: String) -> Vec<ObjectRef<usize>> {
    vec![
        actor.record_after(gate, 1),
        actor.record(2),
        actor.record(3),
    ]
}

/// A call one process holds (a task's worker, waiting to learn where a
/// starting actor lives) and another process cancels (the driver) never
/// runs: the head has the actor's worker drop it once its caller sends it
/// there. The call ahead of it waits on a FIFO until the cancelled call has
/// ended, so the cancelled one cannot start first; without the head's
/// request it would end only by running, after that FIFO.
#[test]
fn a_held_call_cancelled_by_another_process_never_runs() {
    start();
    let (constructor_dir, gate_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (constructor, gate) = (fifo(&constructor_dir), fifo(&gate_dir));
    let actor = OpensLate::remote(constructor.clone()).unwrap();
    let calls = hold_calls::remote(actor.clone(), gate.clone())
        .get()
        .unwrap();
    oxray_core::cancel(&calls[1]).unwrap();
    std::fs::write(&constructor, "go").unwrap();
    let timeout = Some(Duration::from_secs(60));
    let (ended, _) = oxray_core::wait(&calls[1..2], 1, timeout).unwrap();
    assert_eq!(
        ended.len(),
        1,
        "the cancelled call ends while the one ahead waits"
    );
    std::fs::write(&gate, "go").unwrap();
    assert_eq!(calls[0].get().unwrap(), 1);
    assert!(
        matches!(calls[1].get(), Err(Error::Cancelled { function }) if function.ends_with("OpensLate::record")),
        "{:?}",
        calls[1].get()
    );
    assert_eq!(calls[2].get().unwrap(), 2);
    assert_eq!(actor.seen().get().unwrap(), vec![1, 3]);
}

/// A call its caller still holds, waiting to learn where a starting actor
/// lives, is taken back when that caller cancels it: it ends `Cancelled` at
/// once, never runs, and the calls around it run in order.
#[test]
fn a_cancelled_call_its_caller_still_holds_never_runs() {
    start();
    let dir = tempfile::tempdir().unwrap();
    let fifo = fifo(&dir);
    let actor = OpensLate::remote(fifo.clone()).unwrap();
    let outcomes = cancel_a_held_call::remote(actor.clone(), fifo);
    assert_eq!(outcomes.get().unwrap(), ["1", "cancelled", "2"]);
    assert_eq!(actor.seen().get().unwrap(), vec![1, 3]);
}
