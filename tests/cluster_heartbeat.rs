//! A node that stops answering (frozen, not crashed: its connection stays
//! open) is declared dead when its heartbeats stop, and its work moves on.

mod cluster_support;

use cluster_support::{start_head, start_node, status};
use oxray::core::{self as oxray_core, remote, InitOptions, SchedulingStrategy};
use std::time::{Duration, Instant};

/// Announces its node and pid, then works long enough to be frozen mid-task.
#[remote]
fn announced_work(key: String) -> String {
    let node = oxray_core::node_id().expect("node id");
    let me = format!("{node} {}", std::process::id());
    oxray_core::kv_put(&key, me.into_bytes()).expect("kv put");
    std::thread::sleep(Duration::from_secs(3));
    node
}

#[test]
fn a_frozen_node_is_declared_dead_after_its_heartbeat_timeout() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let (_head, address, token) =
        start_head(session, &["--num-cpus", "1", "--heartbeat-timeout-s", "2"]);
    let (node, node_id) = start_node(session, &address, &token, &["--num-cpus", "1"]);
    oxray_core::init(InitOptions::default().address(&address).token(&token)).unwrap();

    let prefer_node = SchedulingStrategy::NodeAffinity {
        node_id: node_id.clone(),
        soft: true,
    };
    let work = announced_work::options()
        .scheduling_strategy(prefer_node)
        .remote("frozen".to_string());
    let announced =
        String::from_utf8(oxray_core::kv_wait("frozen", Duration::from_secs(60)).unwrap()).unwrap();
    let (ran_on, worker_pid) = announced.split_once(' ').unwrap();
    assert_eq!(ran_on, node_id);
    let worker_pid: i32 = worker_pid.parse().unwrap();
    let frozen_at = Instant::now();
    for pid in [node.child.id() as i32, worker_pid] {
        // SAFETY: stops processes this test started.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
    }

    let finished_on = work.get().unwrap();
    let waited = frozen_at.elapsed();
    assert_ne!(
        finished_on, node_id,
        "the task was rerun on the head's node"
    );
    let (ok, shown) = status(session, &address, &token, &[]);
    assert!(ok && shown.contains("nodes: 1 alive, 1 dead"), "{shown}");
    eprintln!(
        "frozen node declared dead and its task rerun after {:.1} s",
        waited.as_secs_f64()
    );
    // SAFETY: ends the frozen worker; the daemon is killed when dropped.
    unsafe { libc::kill(worker_pid, libc::SIGKILL) };
    oxray_core::shutdown();
}
