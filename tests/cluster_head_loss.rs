//! Losing the head never hangs anyone: a killed head ends `oxray train
//! --address` with a clear error, a frozen head fails a driver's pending and
//! later calls with `HeadUnreachable`, and node daemons give up after
//! `--head-reconnect-timeout`; nothing is left running or in /dev/shm.

mod cluster_support;

use cluster_support::{
    node_sessions, oxray, processes_of, shm_files_of, start_head, start_node, status, train,
};
use oxray::core::{self as oxray_core, remote, Error, InitOptions};
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

/// Waits for `child` to exit, at most `limit`; returns its status and when.
fn wait_exit(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<(std::process::ExitStatus, Duration)> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some((status, start.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn killing_the_head_ends_training_with_an_error_and_the_nodes_follow() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let (mut head, address, token) = start_head(session, &["--num-cpus", "2"]);
    let (mut node, _) = start_node(
        session,
        &address,
        &token,
        &["--num-cpus", "2", "--head-reconnect-timeout", "1"],
    );
    let (ok, shown) = status(session, &address, &token, &["--wait-nodes", "2"]);
    assert!(ok, "{shown}");
    let sessions = node_sessions(&address, &token);
    let mut train = train(
        session,
        &address,
        &token,
        "orphan",
        &[
            "env_runners.num_env_runners=2",
            "stop.iterations=100000",
            "stop.episode_return_mean=100000",
            "checkpoint.checkpoint_frequency=1",
        ],
    )
    .spawn()
    .unwrap();
    let mut progress = BufReader::new(train.stdout.take().unwrap()).lines();
    // The second result comes after the first iteration's checkpoint.
    for _ in 0..2 {
        let line = progress.next().expect("a progress line").unwrap();
        assert!(line.starts_with("iter"), "{line}");
    }

    head.child.kill().unwrap();
    let killed_at = Instant::now();
    let (code, after) = wait_exit(&mut train, Duration::from_secs(15))
        .expect("the driver still runs 15 s after the head died");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut train.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!code.success(), "training claimed success: {stderr}");
    assert!(stderr.contains("unreachable"), "{stderr}");
    eprintln!(
        "head-kill: driver exited after {:.1} s",
        after.as_secs_f64()
    );
    // The last checkpoint is whole: it loads.
    let checkpoints: Vec<_> = walk(&session.join("results/orphan"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "checkpoint.json"))
        .collect();
    assert!(!checkpoints.is_empty(), "no checkpoint written");
    for checkpoint in &checkpoints {
        let text = std::fs::read_to_string(checkpoint).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).expect("a whole checkpoint");
    }

    let (code, after_node) = wait_exit(&mut node.child, Duration::from_secs(15))
        .expect("the node still runs 15 s after the head died");
    assert!(!code.success());
    eprintln!(
        "head-kill: node exited after {:.1} s",
        killed_at.elapsed().as_secs_f64() - after.as_secs_f64() + after_node.as_secs_f64()
    );
    let stopped = oxray(session).arg("stop").output().unwrap();
    assert!(stopped.status.success());
    assert_eq!(processes_of(session, &sessions), Vec::<u32>::new());
    for node in &sessions {
        assert_eq!(shm_files_of(node), Vec::<String>::new());
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[remote]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn a_frozen_head_fails_pending_and_later_calls_of_a_driver() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let (head, address, token) = start_head(session, &["--num-cpus", "1"]);
    oxray_core::init(InitOptions::default().address(&address).token(&token)).unwrap();
    assert_eq!(sleep_ms::remote(1).get().unwrap(), 1);
    let pending = sleep_ms::remote(60_000);
    // SAFETY: freezes the head this test started (SIGCONT'd when dropped).
    unsafe { libc::kill(head.child.id() as i32, libc::SIGSTOP) };
    let frozen_at = Instant::now();
    let error = pending.get().unwrap_err();
    let noticed = frozen_at.elapsed();
    assert!(matches!(error, Error::HeadUnreachable { .. }), "{error}");
    assert!(
        noticed < Duration::from_secs(10),
        "noticed after {noticed:?}"
    );
    eprintln!(
        "head-SIGSTOP: driver's get failed after {:.1} s",
        noticed.as_secs_f64()
    );
    let later = Instant::now();
    let error = oxray_core::kv_get("anything").unwrap_err();
    assert!(matches!(error, Error::HeadUnreachable { .. }), "{error}");
    assert!(later.elapsed() < Duration::from_secs(1));
    oxray_core::shutdown();
}
