//! Direct actor calls on a two-node loopback cluster: the head on 127.0.0.2
//! with no CPUs, the actor on a node of its own address, this test binary a
//! driver joined by address. Calls go from the driver to the actor's worker
//! without passing through the head (they complete while the head is
//! stopped), keep their order (also behind a ref argument the actor's worker
//! waits for), leave their results where other processes read them, and
//! survive the actor's restart; after `oxray stop` nothing is left.

mod cluster_support;

use cluster_support::{assert_nothing_left, node_sessions, oxray, start_head, start_node, status};
use oxray::core::{self as oxray_core, actor, remote, InitOptions};
use std::time::Duration;

pub struct Ledger {
    entries: Vec<u64>,
}

#[actor]
impl Ledger {
    pub fn new() -> Self {
        Ledger {
            entries: Vec::new(),
        }
    }

    /// Appends `value`: how many entries there are now.
    pub fn append(&mut self, value: u64) -> usize {
        self.entries.push(value);
        self.entries.len()
    }

    pub fn entries(&self) -> Vec<u64> {
        self.entries.clone()
    }

    pub fn total(&self) -> u64 {
        self.entries.iter().sum()
    }

    /// (node, pid) of the actor's worker.
    pub fn whereabouts(&self) -> (String, u32) {
        (oxray_core::node_id().expect("node id"), std::process::id())
    }
}

#[remote]
fn doubled(value: u64) -> u64 {
    2 * value
}

#[remote]
fn after(millis: u64, value: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    value
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: signals a process this test's cluster started.
    unsafe { libc::kill(pid, signal) };
}

/// Stops the head until dropped, so a failed assertion never leaves it
/// stopped.
struct HeadStopped(i32);

impl HeadStopped {
    fn new(pid: i32) -> Self {
        signal(pid, libc::SIGSTOP);
        HeadStopped(pid)
    }
}

impl Drop for HeadStopped {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

#[test]
fn actor_calls_go_straight_to_the_actor_keep_their_order_and_survive_its_restart() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let (head, address, token) = start_head(session, &["--num-cpus", "0"]);
    let (_node, node_id) = start_node(session, &address, &token, &["--num-cpus", "2"]);
    let (ok, shown) = status(session, &address, &token, &["--wait-nodes", "2"]);
    assert!(ok, "{shown}");
    let sessions = node_sessions(&address, &token);
    oxray_core::init(InitOptions::default().address(&address).token(&token)).unwrap();

    let ledger = Ledger::options()
        .num_cpus(1.0)
        .max_restarts(1)
        .max_task_retries(1)
        .remote()
        .unwrap();
    let (ran_on, pid) = ledger.whereabouts().get().unwrap();
    assert_eq!(ran_on, node_id, "the head offers no CPU, the node does");

    // With the head stopped, calls still complete: they never pass
    // through it (through the head each would wait until it resumes).
    {
        let _stopped = HeadStopped::new(head.child.id() as i32);
        for i in 1..=100u64 {
            let count = ledger
                .append(i)
                .get_timeout(Duration::from_secs(10))
                .expect("a call completes while the head is stopped");
            assert_eq!(count, i as usize);
        }
    }

    // A burst keeps its order, also behind a ref argument that is not
    // ready yet, which the actor's worker waits for.
    let late = after::remote(300, 1_000);
    let mut counts: Vec<_> = (101..=150).map(|i| ledger.append(i)).collect();
    counts.push(ledger.append(&late));
    counts.extend((151..=200).map(|i| ledger.append(i)));
    assert_eq!(
        oxray_core::get_all(&counts).unwrap(),
        (101..=201).collect::<Vec<usize>>()
    );
    let mut expected: Vec<u64> = (1..=150).collect();
    expected.push(1_000);
    expected.extend(151..=200);
    assert_eq!(ledger.entries().get().unwrap(), expected);

    // A ref argument put just before the call: the put reaches the head on
    // the driver's stream, the call the actor's worker on another, and the
    // worker still finds the value.
    for value in 1..=50u64 {
        let fresh = oxray_core::put(&value).unwrap();
        ledger.append(&fresh).get().unwrap();
        expected.push(value);
    }

    // A call's result is read by another process through the head.
    let total = ledger.total();
    let sum: u64 = expected.iter().sum();
    assert_eq!(doubled::remote(&total).get().unwrap(), 2 * sum);

    // The actor's worker dies: calls go on to the restarted actor, in order.
    signal(pid as i32, libc::SIGKILL);
    let after_restart: Vec<_> = (1..=20).map(|i| ledger.append(i)).collect();
    assert_eq!(
        oxray_core::get_all(&after_restart).unwrap(),
        (1..=20).collect::<Vec<usize>>(),
        "each call after the kill ran once, in order, on the new actor"
    );
    let (_, new_pid) = ledger.whereabouts().get().unwrap();
    assert_ne!(new_pid, pid, "restarted in a new process");
    assert_eq!(
        ledger.entries().get().unwrap(),
        (1..=20).collect::<Vec<u64>>()
    );

    oxray_core::shutdown();
    let stopped = oxray(session).arg("stop").output().unwrap();
    assert!(stopped.status.success());
    assert_nothing_left(session, &sessions);
}
