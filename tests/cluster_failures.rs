//! The failure matrix of `docs/fault-tolerance.md` on one three-node loopback
//! cluster: a worker SIGKILLed, a node frozen with SIGSTOP, a node SIGKILLed.
//! Each ends in its documented outcome within its documented time, and after
//! `oxray stop` no process of the cluster and no file of it in /dev/shm is
//! left. (Driver and head failures: `cluster_jobs.rs`, `cluster_head_loss.rs`.)

mod cluster_support;

use cluster_support::{assert_nothing_left, node_sessions, oxray, start_head, start_node, status};
use oxray::core::{self as oxray_core, remote, InitOptions, SchedulingStrategy};
use std::time::{Duration, Instant};

/// Says where it runs (node and pid) under `key`, then works for `ms`, and
/// returns a large value so the node holds shared memory.
#[remote]
fn announced(key: String, ms: u64) -> (String, Vec<u8>) {
    let node = oxray_core::node_id().expect("node id");
    let me = format!("{node} {}", std::process::id());
    oxray_core::kv_put(&key, me.into_bytes()).expect("kv put");
    std::thread::sleep(Duration::from_millis(ms));
    (node, vec![7u8; 256 * 1024])
}

/// Starts `announced` on `node` and waits until it runs: its worker's pid.
fn running_on(node: &str, key: &str, ms: u64) -> (oxray_core::ObjectRef<(String, Vec<u8>)>, i32) {
    let task = announced::options()
        .scheduling_strategy(SchedulingStrategy::NodeAffinity {
            node_id: node.to_string(),
            soft: true,
        })
        .remote(key.to_string(), ms);
    let me = oxray_core::kv_wait(key, Duration::from_secs(60)).unwrap();
    let me = String::from_utf8(me).unwrap();
    let (ran_on, pid) = me.split_once(' ').unwrap();
    assert_eq!(ran_on, node);
    (task, pid.parse().unwrap())
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: signals a process this test started (or its cluster did).
    unsafe { libc::kill(pid, signal) };
}

#[test]
fn worker_kill_node_stop_and_node_kill_end_as_documented_and_leave_nothing() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let (_head, address, token) =
        start_head(session, &["--num-cpus", "1", "--heartbeat-timeout-s", "2"]);
    let (frozen, frozen_id) = start_node(session, &address, &token, &["--num-cpus", "1"]);
    let (mut killed, killed_id) = start_node(session, &address, &token, &["--num-cpus", "1"]);
    let (ok, shown) = status(session, &address, &token, &["--wait-nodes", "3"]);
    assert!(ok, "{shown}");
    let sessions = node_sessions(&address, &token);
    oxray_core::init(InitOptions::default().address(&address).token(&token)).unwrap();

    // worker-kill: the task is retried on a fresh worker and returns.
    let (task, worker) = running_on(&killed_id, "worker-kill", 1_500);
    oxray_core::kv_delete("worker-kill").unwrap();
    signal(worker, libc::SIGKILL);
    let at = Instant::now();
    let (node, bytes) = task.get().unwrap();
    let took = at.elapsed();
    assert_eq!(bytes.len(), 256 * 1024);
    assert!(took < Duration::from_secs(5), "worker-kill took {took:?}");
    eprintln!(
        "worker-kill: task retried and returned after {:.2} s (on {node})",
        took.as_secs_f64()
    );

    // node-SIGSTOP: the node is declared dead after the heartbeat timeout
    // (2 s here) and its task runs again elsewhere.
    let (task, worker) = running_on(&frozen_id, "node-stop", 3_000);
    signal(frozen.child.id() as i32, libc::SIGSTOP);
    signal(worker, libc::SIGSTOP);
    let at = Instant::now();
    let (node, _) = task.get().unwrap();
    let took = at.elapsed();
    assert_ne!(node, frozen_id);
    assert!(
        took < Duration::from_secs(2 + 5),
        "node-SIGSTOP took {took:?}"
    );
    eprintln!(
        "node-SIGSTOP: node declared dead and its task rerun after {:.2} s",
        took.as_secs_f64()
    );
    signal(worker, libc::SIGKILL);

    // node-kill: the node is dead at once and its task runs again elsewhere.
    let (task, _) = running_on(&killed_id, "node-kill", 3_000);
    killed.child.kill().unwrap();
    let at = Instant::now();
    let (node, _) = task.get().unwrap();
    let took = at.elapsed();
    assert_ne!(node, killed_id);
    assert!(took < Duration::from_secs(5), "node-kill took {took:?}");
    eprintln!(
        "node-kill: node declared dead and its task rerun after {:.2} s",
        took.as_secs_f64()
    );
    let (ok, shown) = status(session, &address, &token, &[]);
    assert!(ok && shown.contains("nodes: 1 alive, 2 dead"), "{shown}");
    oxray_core::shutdown();

    // Nothing is left after `oxray stop`.
    let stopped = oxray(session).arg("stop").output().unwrap();
    assert!(stopped.status.success());
    assert_nothing_left(session, &sessions);
}
