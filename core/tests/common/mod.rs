//! Helpers shared by the core integration tests: one embedded cluster per test
//! binary, started on first use.

// Each test binary compiles this module and uses only some of it.
#![allow(dead_code)]

use oxray_core::InitOptions;
use std::sync::Once;

/// Starts this test binary's cluster once; later calls reuse it.
pub fn cluster(options: impl FnOnce() -> InitOptions) {
    static START: Once = Once::new();
    START.call_once(|| oxray_core::init(options()).expect("embedded cluster starts"));
}

/// Nanoseconds since the epoch: comparable across worker processes.
pub fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

/// Largest number of the `(start, end)` intervals that overlap at one instant.
pub fn max_overlap(intervals: &[(u128, u128)]) -> usize {
    let mut events: Vec<(u128, i32)> = intervals
        .iter()
        .flat_map(|&(start, end)| [(start, 1), (end, -1)])
        .collect();
    // Ends sort before starts at the same instant: touching is not overlapping.
    events.sort();
    let (mut running, mut most) = (0i32, 0i32);
    for (_, delta) in events {
        running += delta;
        most = most.max(running);
    }
    most as usize
}

/// A new FIFO in `dir`: a reader of it blocks until something writes, which
/// lets a test hold a task or call where it wants without sleeping.
pub fn fifo(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("release");
    let made = std::process::Command::new("mkfifo").arg(&path).status();
    assert!(made.expect("mkfifo").success());
    path.display().to_string()
}
