//! `oxray bench scheduling` from the outside: simulated nodes take real
//! leases and run the cluster's tasks and actor calls, every node count
//! reports nonzero throughput (and so does the equal-capacity control), the
//! work lands on more than one node, and the heads it started leave nothing
//! behind, even when the bench is killed.

mod cluster_support;

use std::io::BufRead;
use std::path::Path;

/// `head pid N (session directory D)` as the bench prints it: (N, D).
fn head_line(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix("head pid ")?;
    rest.strip_suffix(')')?.split_once(" (session directory ")
}

#[test]
fn the_scheduling_bench_runs_work_on_the_simulated_nodes_and_leaves_nothing() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_oxray"))
        .args(["bench", "scheduling", "--nodes", "1,20"])
        .args(["--tasks", "2000", "--calls", "2000"])
        .args(["--actors", "200", "--batch", "50"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");

    // Two rows per node count (fresh, after the actors): tasks/s and actor
    // calls/s are positive.
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() > 2 && w[0].parse::<usize>().is_ok())
        .filter(|w| w[1] == "fresh" || w[1] == "after")
        .collect();
    let counts: Vec<&str> = rows.iter().map(|w| w[0]).collect();
    assert_eq!(counts, ["1", "1", "20", "20"], "{stdout}");
    for row in &rows {
        let when_words = if row[1] == "fresh" { 1 } else { 3 };
        let tasks: f64 = row[1 + when_words].parse().unwrap();
        let calls: f64 = row[2 + when_words].parse().unwrap();
        assert!(tasks > 0.0 && calls > 0.0, "{row:?}");
    }

    // The bench counts what each simulated node's workers ran.
    let spread = stdout
        .lines()
        .find(|l| l.starts_with("20 nodes: tasks ran on "))
        .unwrap_or_else(|| panic!("{stdout}"));
    let ran_on: usize = spread["20 nodes: tasks ran on ".len()..]
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ran_on > 1, "{spread}");
    assert!(spread.contains("200 actors created and killed"), "{spread}");

    // The control: one node with the 20 nodes' 80 CPUs, measured too.
    let control = stdout
        .lines()
        .find_map(|l| l.strip_prefix("control: 1 node with 80 CPUs (the 20 nodes' together): "))
        .unwrap_or_else(|| panic!("{stdout}"));
    let control_tasks: f64 = control.split(' ').next().unwrap().parse().unwrap();
    assert!(control_tasks > 0.0, "{control}");

    // Each head (one per node count, one for the control) stopped and
    // removed its shared memory.
    let heads: Vec<(&str, &str)> = stderr.lines().filter_map(head_line).collect();
    assert_eq!(heads.len(), 3, "{stderr}");
    for (pid, session) in heads {
        cluster_support::assert_nothing_left(Path::new(session), &[pid.to_string()]);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "head {pid} is still running"
        );
    }
}

/// Killed outright while it runs, the bench cannot stop its head: the head
/// stops with it all the same and removes its shared memory.
#[test]
fn a_killed_scheduling_bench_takes_its_head_with_it() {
    let mut bench = std::process::Command::new(env!("CARGO_BIN_EXE_oxray"))
        .args(["bench", "scheduling", "--nodes", "1"])
        .args(["--tasks", "100000000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(bench.stderr.take().unwrap());
    let head = stderr
        .lines()
        .map_while(Result::ok)
        .find_map(|line| head_line(&line).map(|(p, s)| (p.to_string(), s.to_string())));
    let (pid, session) = head.expect("the bench names its head");
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "the head runs");
    bench.kill().unwrap();
    bench.wait().unwrap();
    // (The head is no longer this process's child: whoever adopted it reaps
    // it, so its /proc entry may stay a moment as a zombie.)
    cluster_support::assert_nothing_left(Path::new(&session), &[pid]);
    // The bench had no chance to remove the session directory it made.
    std::fs::remove_dir_all(&session).unwrap();
}
