//! A node that is stopped (`oxray stop`, SIGTERM) takes its leave of the
//! head: the head counts it gone at once and says it left, while a node that
//! dies is still reported dead.

mod cluster_support;

use cluster_support::{
    assert_nothing_left, kill_node, node_sessions, start_node, start_with_stderr, status, HEAD_IP,
};
use std::time::{Duration, Instant};

#[test]
fn a_stopped_node_leaves_and_a_killed_one_is_reported_dead() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let head_log = session.join("head.stderr");
    let mut head = start_with_stderr(
        session,
        &[
            "--head",
            "--port",
            "0",
            "--node-ip-address",
            HEAD_IP,
            "--num-cpus",
            "0",
        ],
        std::fs::File::create(&head_log).unwrap(),
    );
    let token = std::fs::read_to_string(&head.ready[6]).unwrap();
    let (address, token) = (head.ready[4].clone(), token.trim().to_string());
    let (mut stopped, stopped_id) = start_node(session, &address, &token, &["--num-cpus", "1"]);
    let (mut killed, killed_id) = start_node(session, &address, &token, &["--num-cpus", "1"]);
    let sessions = node_sessions(&address, &token);

    // The stopping node waits for the head to take its leave before it
    // exits, so the head counts it gone as soon as it has stopped.
    stopped.stop();
    let (ok, shown) = status(session, &address, &token, &[]);
    assert!(ok && shown.contains("nodes: 2 alive, 1 dead"), "{shown}");

    kill_node(&mut killed, &killed_id);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, shown) = status(session, &address, &token, &[]);
        if ok && shown.contains("nodes: 1 alive, 2 dead") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed node is not dead: {shown}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    head.stop();
    let log = std::fs::read_to_string(&head_log).unwrap();
    assert!(
        log.contains(&format!("node {stopped_id} left the cluster")),
        "{log}"
    );
    assert!(
        !log.contains(&format!("node {stopped_id} is dead")),
        "{log}"
    );
    assert!(log.contains(&format!("node {killed_id} is dead")), "{log}");
    assert_nothing_left(session, &sessions);
}
