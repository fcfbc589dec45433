//! Remote functions on the embedded cluster: parallelism, refs as arguments,
//! nested refs, `wait`, cancellation, retries, errors and memory.

mod common;

use common::{cluster, max_overlap, now_ns};
use oxray_core::{remote, Error, InitOptions, ObjectRef};
use std::time::Duration;

fn start() {
    cluster(|| InitOptions::default().num_cpus(2.0));
}

/// Sleeps, then reports which process ran it and when.
#[remote]
fn timed_sleep(millis: u64) -> (u32, u128, u128) {
    let start = now_ns();
    std::thread::sleep(Duration::from_millis(millis));
    (std::process::id(), start, now_ns())
}

#[remote]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// Reads the values behind refs from inside a worker.
#[remote]
fn sum_nested(refs: Vec<ObjectRef<u64>>) -> u64 {
    oxray_core::get_all(&refs)
        .expect("nested refs resolve")
        .iter()
        .sum()
}

#[remote]
fn make_ref(value: u64) -> ObjectRef<u64> {
    oxray_core::put(&value).expect("put from a worker")
}

#[remote]
fn panics(message: String) -> u64 {
    panic!("{message}")
}

#[remote]
fn fails(message: String) -> Result<u64, String> {
    Err(message)
}

/// Kills its own process on the first attempt (marker file absent), then
/// succeeds: a worker dying mid-task.
#[remote]
fn die_once(marker: String) -> u32 {
    if std::fs::metadata(&marker).is_err() {
        std::fs::write(&marker, b"attempted").expect("marker written");
        // SAFETY: sends SIGKILL to this very process.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
    std::process::id()
}

#[remote]
fn always_die() -> u32 {
    // SAFETY: sends SIGKILL to this very process.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    0
}

#[remote]
fn tiny(i: u64) -> u64 {
    i + 1
}

#[test]
fn remote_tasks_run_in_parallel_worker_processes() {
    start();
    let refs: Vec<_> = (0..4).map(|_| timed_sleep::remote(300)).collect();
    let runs = oxray_core::get_all(&refs).unwrap();
    let pids: std::collections::HashSet<u32> = runs.iter().map(|r| r.0).collect();
    assert!(pids.len() >= 2, "ran in {pids:?}");
    assert!(
        !pids.contains(&std::process::id()),
        "tasks ran in the driver"
    );
    let intervals: Vec<_> = runs.iter().map(|r| (r.1, r.2)).collect();
    assert_eq!(max_overlap(&intervals), 2, "{intervals:?}");
}

/// Blocks until something writes a line into the FIFO at `path`; outside
/// oxray's API, so its worker does not lend its CPU out meanwhile.
#[remote]
fn read_fifo(path: String) -> String {
    let mut line = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::open(path).expect("fifo"), &mut line)
        .expect("read");
    line
}

/// With both CPUs busy, later tasks go ahead to the busy workers; one of them
/// lands behind a task that never ends on its own. When the other worker
/// frees up, that task is withdrawn and runs there instead of waiting.
#[test]
fn a_task_sent_ahead_of_a_blocked_one_runs_elsewhere() {
    start();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("release");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let blocked = read_fifo::remote(fifo.display().to_string());
    // Two workers hold fewer than these (at most eight each with any
    // pipelining depth up to eight), so some follow `blocked`.
    let quick: Vec<_> = (0..16).map(|i| add::remote(i, 1)).collect();
    let sums = oxray_core::get_all_timeout(&quick, Some(Duration::from_secs(120)));
    assert_eq!(sums.unwrap(), (1..=16).collect::<Vec<u64>>());
    let (ready, _) =
        oxray_core::wait(std::slice::from_ref(&blocked), 1, Some(Duration::ZERO)).unwrap();
    assert!(ready.is_empty(), "the blocked task still runs");
    std::fs::write(&fifo, "go").unwrap();
    assert_eq!(blocked.get().unwrap(), "go");
}

#[test]
fn refs_are_resolved_as_arguments() {
    start();
    let a = add::remote(1, 2);
    let b = oxray_core::put(&10u64).unwrap();
    let c = add::remote(&a, &b);
    let d = add::remote(c, 100);
    assert_eq!(d.get().unwrap(), 113);
}

#[test]
fn nested_refs_travel_inside_values_and_stay_alive() {
    start();
    let refs: Vec<ObjectRef<u64>> = (1..=5).map(|i| oxray_core::put(&i).unwrap()).collect();
    assert_eq!(sum_nested::remote(refs).get().unwrap(), 15);
    // A ref made in a worker outlives the task that made it.
    let inner: ObjectRef<u64> = make_ref::remote(42).get().unwrap();
    assert_eq!(inner.get().unwrap(), 42);
}

#[test]
fn wait_keeps_input_order_and_returns_at_most_num_returns() {
    start();
    let slow = timed_sleep::remote(60_000);
    let fast: Vec<_> = (0..2).map(|i| add::remote(i, 1)).collect();
    let refs = vec![
        slow.clone(),
        fast[0].clone().into_sleep(),
        fast[1].clone().into_sleep(),
    ];
    let (ready, pending) = oxray_core::wait(&refs, 2, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(ready, vec![refs[1].clone(), refs[2].clone()]);
    assert_eq!(pending, vec![slow.clone()]);
    let (ready, pending) = oxray_core::wait(&refs, 1, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(ready.len(), 1);
    assert_eq!(pending.len(), 2);
    let (ready, _) = oxray_core::wait(
        std::slice::from_ref(&slow),
        1,
        Some(Duration::from_millis(50)),
    )
    .unwrap();
    assert!(ready.is_empty());
    oxray_core::cancel(&slow).unwrap();
    assert!(
        matches!(slow.get(), Err(Error::Cancelled { .. })),
        "{:?}",
        slow.get()
    );
}

/// Lets refs of different tasks share one list in the `wait` test.
trait IntoSleep {
    fn into_sleep(self) -> ObjectRef<(u32, u128, u128)>;
}

impl IntoSleep for ObjectRef<u64> {
    fn into_sleep(self) -> ObjectRef<(u32, u128, u128)> {
        // Refs serialise as their id; re-reading one as another type is what a
        // confused caller would do, and `get` on it would fail with a type error.
        serde_json::from_value(serde_json::to_value(&self).unwrap()).unwrap()
    }
}

#[test]
fn wrong_typed_get_is_a_type_error() {
    start();
    let number = oxray_core::put(&7u64).unwrap();
    let confused = number.clone().into_sleep();
    match confused.get() {
        Err(Error::TypeMismatch { expected, found }) => {
            assert!(expected.contains("u128"), "{expected}");
            assert_eq!(found, "u64");
        }
        other => panic!("expected a type mismatch, got {other:?}"),
    }
}

#[test]
fn panics_and_errors_become_typed_errors_naming_the_function() {
    start();
    match panics::remote("boom".to_string()).get() {
        Err(Error::TaskFailed { function, message }) => {
            assert!(function.ends_with("::panics"), "{function}");
            assert!(message.contains("boom"), "{message}");
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    match fails::remote("bad input".to_string()).get() {
        Err(Error::TaskFailed { function, message }) => {
            assert!(function.ends_with("::fails"), "{function}");
            assert_eq!(message, "bad input");
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    // The failure propagates to tasks that take the result as an argument.
    let downstream = add::remote(panics::remote("upstream".to_string()), 1);
    assert!(matches!(downstream.get(), Err(Error::TaskFailed { .. })));
}

#[test]
fn killed_worker_is_retried_then_reported() {
    start();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("attempt").to_string_lossy().into_owned();
    let pid = die_once::remote(marker.clone()).get().unwrap();
    assert_ne!(pid, std::process::id());
    assert!(std::fs::metadata(&marker).is_ok(), "first attempt ran");
    match always_die::options().max_retries(1).remote().get() {
        Err(Error::WorkerDied { function, message }) => {
            assert!(function.ends_with("::always_die"), "{function}");
            assert!(message.contains("signal 9"), "{message}");
        }
        other => panic!("expected WorkerDied, got {other:?}"),
    }
}

#[test]
fn infeasible_requests_fail_at_once() {
    start();
    let result = oxray_core::get_all_timeout(
        &[add::options().num_cpus(64.0).remote(1, 1)],
        Some(Duration::from_secs(10)),
    );
    match result {
        Err(Error::Infeasible {
            requested,
            available,
            ..
        }) => {
            assert!(requested.contains("CPU: 64"), "{requested}");
            assert!(available.contains("CPU: 2"), "{available}");
        }
        other => panic!("expected Infeasible, got {other:?}"),
    }
    let custom = add::options().resource("tpu", 1.0).remote(1, 1);
    assert!(matches!(custom.get(), Err(Error::Infeasible { .. })));
}

#[test]
fn unknown_functions_and_undecodable_arguments_are_typed_errors() {
    start();
    let missing: ObjectRef<u64> =
        oxray_core::private::submit_function("not::compiled::in", vec![], &Default::default());
    match missing.get() {
        Err(Error::UnknownFunction { name }) => assert_eq!(name, "not::compiled::in"),
        other => panic!("expected UnknownFunction, got {other:?}"),
    }
    let wrong_args = vec![
        oxray_core::private::task_arg::<String>("seven".to_string().into()),
        oxray_core::private::task_arg::<u64>(1u64.into()),
    ];
    let bad: ObjectRef<u64> =
        oxray_core::private::submit_function(add::NAME, wrong_args, &Default::default());
    match bad.get() {
        Err(Error::Decode { what, .. }) => assert!(
            what.contains("argument 1") && what.contains("add"),
            "{what}"
        ),
        other => panic!("expected Decode, got {other:?}"),
    }
}

#[test]
fn many_small_tasks_are_freed() {
    start();
    let rss_kib = || -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let baseline_objects = oxray_core::node_summary().unwrap().objects;
    let mut rss_after_first_wave = 0;
    for wave in 0..20u64 {
        let refs: Vec<_> = (0..5_000).map(|i| tiny::remote(wave * 5_000 + i)).collect();
        let values = oxray_core::get_all(&refs).unwrap();
        assert_eq!(values[4_999], wave * 5_000 + 5_000);
        drop(refs);
        if wave == 0 {
            rss_after_first_wave = rss_kib();
        }
    }
    let summary = oxray_core::node_summary().unwrap();
    assert!(
        summary.objects <= baseline_objects + 16,
        "objects left: {} (baseline {baseline_objects})",
        summary.objects
    );
    let growth = rss_kib().saturating_sub(rss_after_first_wave);
    assert!(
        growth < 64 * 1024,
        "driver grew by {growth} KiB over 95,000 more tasks"
    );
}

#[test]
fn large_objects_use_shared_memory_and_are_freed() {
    start();
    let big: Vec<u64> = (0..100_000).collect();
    let before = oxray_core::node_summary().unwrap().shared_memory_bytes;
    let stored = oxray_core::put(&big).unwrap();
    let during = oxray_core::node_summary().unwrap().shared_memory_bytes;
    assert!(during >= before + 100_000, "{before} -> {during}");
    assert_eq!(
        sum_big::remote(&stored).get().unwrap(),
        big.iter().sum::<u64>()
    );
    drop(stored);
    assert_eq!(
        oxray_core::node_summary().unwrap().shared_memory_bytes,
        before
    );
}

#[remote]
fn sum_big(values: Vec<u64>) -> u64 {
    values.iter().sum()
}

#[remote]
fn wait_for_key(key: String) -> Result<Vec<u8>, String> {
    oxray_core::kv_wait(&key, Duration::from_secs(30)).map_err(|e| e.to_string())
}

#[remote]
fn node_of_worker() -> String {
    oxray_core::node_id().expect("worker knows its node")
}

#[test]
fn key_value_store_connects_processes() {
    start();
    let waiting = wait_for_key::remote("rendezvous/a".to_string());
    oxray_core::kv_put("rendezvous/a", b"127.0.0.1:9".to_vec()).unwrap();
    assert_eq!(waiting.get().unwrap(), b"127.0.0.1:9".to_vec());
    assert_eq!(
        oxray_core::kv_get("rendezvous/a").unwrap(),
        Some(b"127.0.0.1:9".to_vec())
    );
    oxray_core::kv_delete("rendezvous/a").unwrap();
    assert_eq!(oxray_core::kv_get("rendezvous/a").unwrap(), None);
    let missing = oxray_core::kv_wait("rendezvous/never", Duration::from_millis(20));
    assert!(matches!(missing, Err(Error::Timeout { .. })), "{missing:?}");
    assert_eq!(
        node_of_worker::remote().get().unwrap(),
        oxray_core::node_id().unwrap()
    );
}

#[remote]
fn sleep_then(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn get_timeout_fails_in_time_and_returns_a_ready_value() {
    start();
    let slow = sleep_then::remote(5_000);
    let asked = std::time::Instant::now();
    let error = slow.get_timeout(Duration::from_millis(200)).unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error}");
    assert!(asked.elapsed() < Duration::from_secs(2));
    let quick = sleep_then::remote(1);
    assert_eq!(quick.get_timeout(Duration::from_secs(30)).unwrap(), 1);
    oxray_core::cancel(&slow).unwrap();
}
