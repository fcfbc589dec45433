//! What a job's tasks print on another node reaches its driver, in order,
//! prefixed `(name pid=N node=ID)` as Ray's log_to_driver does, and is in the
//! worker's own log file under the session directory; printing 10,000 lines
//! does not hurt the worker (the node daemon's own stdout is a pipe its
//! starter closed long ago).

mod cluster_support;

use cluster_support::{start_head, start_node, status};
use oxray::core::{self as oxray_core, remote, InitOptions, SchedulingStrategy};
use std::process::Command;

const LINES: u32 = 10_000;

#[remote]
fn chatty(lines: u32) -> u32 {
    for i in 0..lines {
        println!("line {i} of a chatty task");
    }
    eprintln!("chatty done");
    std::process::id()
}

/// The driver: run by the test below as a process of its own (this test
/// binary again), so its output can be read.
#[test]
#[ignore = "run as a subprocess by the test below"]
fn chatty_driver() {
    let address = std::env::var("CHATTY_ADDRESS").unwrap();
    let token = std::env::var("CHATTY_TOKEN").unwrap();
    let node_id = std::env::var("CHATTY_NODE").unwrap();
    oxray_core::init(InitOptions::default().address(address).token(token)).unwrap();
    let on_node = SchedulingStrategy::NodeAffinity {
        node_id,
        soft: false,
    };
    let first = chatty::options()
        .scheduling_strategy(on_node.clone())
        .remote(LINES)
        .get()
        .unwrap();
    let second = chatty::options()
        .scheduling_strategy(on_node)
        .remote(1)
        .get()
        .unwrap();
    oxray_core::shutdown();
    println!("worker pids {first} {second}");
}

#[test]
fn ten_thousand_lines_printed_on_another_node_reach_the_driver_in_order() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let (_head, address, token) = start_head(session, &["--num-cpus", "1"]);
    let (_node, node_id) = start_node(session, &address, &token, &["--num-cpus", "1"]);
    let (ok, shown) = status(session, &address, &token, &["--wait-nodes", "2"]);
    assert!(ok, "{shown}");
    let driver = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "chatty_driver", "--nocapture"])
        .env("CHATTY_ADDRESS", &address)
        .env("CHATTY_TOKEN", &token)
        .env("CHATTY_NODE", &node_id)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&driver.stdout);
    let stderr = String::from_utf8_lossy(&driver.stderr);
    assert!(driver.status.success(), "{stderr}");

    // The same worker ran both tasks: printing did not kill it.
    let pids = stdout
        .lines()
        .find_map(|l| l.strip_prefix("worker pids "))
        .expect("the driver's summary");
    let (first, second) = pids.split_once(' ').unwrap();
    assert_eq!(first, second);
    let prefix = format!("(cluster_logs::chatty pid={first} node={node_id}) ");
    let shown: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect();
    assert_eq!(
        shown.len(),
        LINES as usize + 1,
        "{}",
        &stdout[..stdout.len().min(2000)]
    );
    for (i, line) in shown.iter().take(LINES as usize).enumerate() {
        assert_eq!(*line, format!("line {i} of a chatty task"));
    }
    assert_eq!(
        stderr.matches(&format!("{prefix}chatty done")).count(),
        2,
        "{stderr}"
    );

    // And every line is in the worker's log file.
    let out = std::fs::read_dir(session.join("logs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "out")
                && std::fs::read_to_string(p).is_ok_and(|t| t.contains("chatty task"))
        })
        .expect("a worker log with the task's lines");
    let logged = std::fs::read_to_string(&out).unwrap();
    let logged: Vec<&str> = logged.lines().collect();
    assert_eq!(logged.len(), LINES as usize + 1);
    assert_eq!(
        logged[LINES as usize - 1],
        format!("line {} of a chatty task", LINES - 1)
    );
}
