//! Workers of a node daemon write their output to files of their own under
//! the session directory: a task that prints 10,000 lines keeps running (the
//! daemon's own stdout is a pipe its starter closed), and every line is in
//! its worker's log, in order.

mod cluster_support;

use cluster_support::{start_head, start_node, status};
use oxray::core::{self as oxray_core, remote, InitOptions, SchedulingStrategy};

#[remote]
fn chatty(lines: u32) -> u32 {
    for i in 0..lines {
        println!("line {i} of a chatty task");
    }
    eprintln!("chatty done");
    std::process::id()
}

#[test]
fn a_task_that_prints_ten_thousand_lines_keeps_running_and_its_lines_are_logged() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let (_head, address, token) = start_head(session, &["--num-cpus", "1"]);
    let (_node, node_id) = start_node(session, &address, &token, &["--num-cpus", "1"]);
    let (ok, shown) = status(session, &address, &token, &["--wait-nodes", "2"]);
    assert!(ok, "{shown}");
    oxray_core::init(InitOptions::default().address(&address).token(&token)).unwrap();
    let on_node = SchedulingStrategy::NodeAffinity {
        node_id,
        soft: false,
    };
    let first = chatty::options()
        .scheduling_strategy(on_node.clone())
        .remote(10_000)
        .get()
        .unwrap();
    // The same worker serves the next task: printing did not kill it.
    let second = chatty::options()
        .scheduling_strategy(on_node)
        .remote(1)
        .get()
        .unwrap();
    assert_eq!(first, second);
    oxray_core::shutdown();

    let logs = session.join("logs");
    let out = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "out")
                && std::fs::read_to_string(p).is_ok_and(|t| t.contains("chatty task"))
        })
        .expect("a worker log with the task's lines");
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("chatty task")).collect();
    assert_eq!(lines.len(), 10_001);
    for (i, line) in lines.iter().take(10_000).enumerate() {
        assert_eq!(*line, format!("line {i} of a chatty task"));
    }
    let err = std::fs::read_to_string(out.with_extension("err")).unwrap();
    assert_eq!(err.matches("chatty done").count(), 2);
}
