//! A three-node cluster on 127.0.0.1 in one test: the head and two node
//! daemons are real `oxray start --block` processes; this test binary is the
//! driver, joined by address, and its own executable is what the workers on
//! every node run.

mod cluster_support;

use cluster_support::{node_session, oxray, shm_files_of, start_head, start_node, status};
use oxray::core::{self as oxray_core, remote, Error, InitOptions, SchedulingStrategy};
use std::time::Duration;

#[remote]
fn where_am_i(millis: u64) -> String {
    std::thread::sleep(Duration::from_millis(millis));
    oxray_core::node_id().expect("worker knows its node")
}

#[remote]
fn make_big(len: u64) -> Vec<u64> {
    (0..len).collect()
}

#[remote]
fn sum_on_node(values: Vec<u64>) -> (String, u64) {
    (oxray_core::node_id().expect("node id"), values.iter().sum())
}

/// Announces that it runs, then works long enough for its node to be killed.
#[remote]
fn long_task(key: String) -> String {
    let node = oxray_core::node_id().expect("node id");
    oxray_core::kv_put(&format!("{key}/{node}"), node.clone().into_bytes()).expect("kv put");
    oxray_core::kv_put(&key, node.clone().into_bytes()).expect("kv put");
    std::thread::sleep(Duration::from_secs(4));
    node
}

#[test]
fn three_node_cluster_schedules_moves_objects_and_survives_a_node_loss() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let (head, address, token) = start_head(session, &["--num-cpus", "1"]);
    let (node_a, _) = start_node(session, &address, &token, &["--num-cpus", "1"]);
    let (mut node_b, node_b_id) = start_node(session, &address, &token, &["--num-cpus", "1"]);
    // SLURM's warning before a time limit (`srun --signal=USR1@SECONDS`) is
    // for drivers: node processes outlive it. Each answers the status below
    // only by running again, when a pending signal is delivered.
    for daemon in [&head, &node_a, &node_b] {
        // SAFETY: signals a daemon this test started and still holds.
        assert_eq!(
            unsafe { libc::kill(daemon.child.id() as i32, libc::SIGUSR1) },
            0
        );
    }

    let (ok, shown) = status(
        session,
        &address,
        &token,
        &["--wait-nodes", "3", "--timeout", "30"],
    );
    assert!(ok && shown.contains("nodes: 3 alive, 0 dead"), "{shown}");

    oxray_core::init(InitOptions::default().address(&address).token(&token)).unwrap();

    // SPREAD puts tasks on every node.
    let spread: Vec<_> = (0..6)
        .map(|_| {
            where_am_i::options()
                .scheduling_strategy(SchedulingStrategy::Spread)
                .remote(400)
        })
        .collect();
    let nodes: std::collections::BTreeSet<String> =
        oxray_core::get_all(&spread).unwrap().into_iter().collect();
    assert_eq!(nodes.len(), 3, "{nodes:?}");

    // An object made on one node is read on another (pulled in chunks).
    let others: Vec<String> = nodes.iter().cloned().collect();
    let on = |node: &str| SchedulingStrategy::NodeAffinity {
        node_id: node.to_string(),
        soft: false,
    };
    let big = make_big::options()
        .scheduling_strategy(on(&others[0]))
        .remote(300_000);
    let (reader_node, sum) = sum_on_node::options()
        .scheduling_strategy(on(&others[1]))
        .remote(&big)
        .get()
        .unwrap();
    assert_eq!(reader_node, others[1]);
    assert_eq!(sum, (0..300_000u64).sum::<u64>());
    assert_eq!(big.get().unwrap().len(), 300_000, "the driver pulls it too");

    // A node killed with SIGKILL is declared dead; its task reruns elsewhere.
    let only_on_b = make_big::options()
        .scheduling_strategy(on(&node_b_id))
        .remote(200_000);
    let (ready, _) = oxray_core::wait(
        std::slice::from_ref(&only_on_b),
        1,
        Some(Duration::from_secs(60)),
    )
    .unwrap();
    assert_eq!(ready.len(), 1);
    let prefer_b = SchedulingStrategy::NodeAffinity {
        node_id: node_b_id.clone(),
        soft: true,
    };
    let doomed = long_task::options()
        .scheduling_strategy(prefer_b)
        .remote("long".to_string());
    let first_node = oxray_core::kv_wait("long", Duration::from_secs(60)).unwrap();
    assert_eq!(String::from_utf8(first_node).unwrap(), node_b_id);
    node_b.child.kill().unwrap();
    let finished_on = doomed.get().unwrap();
    assert_ne!(finished_on, node_b_id, "the retry ran on a surviving node");
    let (ok, shown) = status(session, &address, &token, &[]);
    assert!(
        ok && shown.contains("nodes: 2 alive, 1 dead") && shown.contains("jobs: 1 (1 running)"),
        "{shown}"
    );

    // An object whose only copy was on the dead node is reported lost.
    match only_on_b.get() {
        Err(Error::ObjectLost { message, .. }) => {
            assert!(message.contains(&node_b_id), "{message}")
        }
        other => panic!("expected ObjectLost, got {:?}", other.map(|v| v.len())),
    }
    oxray_core::shutdown();

    // The SIGKILLed node had no chance to remove its shared memory (that
    // object's file); `oxray stop` removes what dead nodes left, as after
    // any crash.
    let stopped = oxray(session).arg("stop").output().unwrap();
    assert!(stopped.status.success(), "{stopped:?}");
    assert_eq!(
        shm_files_of(&node_session(&node_b_id)),
        Vec::<String>::new()
    );
}

#[test]
fn joining_without_the_token_is_refused_on_both_sides() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let (_head, address, _token) = start_head(session, &["--num-cpus", "1"]);
    let output = oxray(session)
        .args([
            "start",
            "--address",
            &address,
            "--token",
            "not-the-token",
            "--block",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refused") && stderr.contains("token"),
        "{stderr}"
    );
    let (ok, shown) = status(session, &address, "not-the-token", &[]);
    assert!(!ok && shown.contains("token"), "{shown}");
    let err = oxray_core::daemon::cluster_status(&address, "wrong").unwrap_err();
    assert!(
        matches!(err, Error::Runtime(ref m) if m.contains("token")),
        "{err}"
    );
}
