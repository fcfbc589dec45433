//! Ray's first tutorial exercise, "remote functions", in Rust.
//!
//! A slow function runs eight times one after another, then eight times as
//! remote tasks in parallel; results are composed by passing object refs to
//! other tasks; and a counter actor keeps state between calls.
//!
//! Run with `cargo run --release --example ex_01_remote_funcs`.

use oxray::core::{self as oxray_core, actor, remote};
use std::time::{Duration, Instant};

/// Stands in for real work: sleeps, then returns its input squared.
#[remote]
fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(500));
    x * x
}

#[remote]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

pub struct Counter {
    count: u64,
}

#[actor]
impl Counter {
    pub fn new() -> Self {
        Counter { count: 0 }
    }

    pub fn increment(&mut self) -> u64 {
        self.count += 1;
        self.count
    }
}

fn main() -> oxray_core::Result<()> {
    oxray_core::init(oxray_core::InitOptions::default())?;

    let start = Instant::now();
    let sequential: Vec<u64> = (0..8).map(slow_square).collect();
    println!(
        "sequential: {sequential:?} in {:.2} s",
        start.elapsed().as_secs_f64()
    );

    let start = Instant::now();
    let refs: Vec<_> = (0..8).map(slow_square::remote).collect();
    let parallel = oxray_core::get_all(&refs)?;
    println!(
        "remote:     {parallel:?} in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(sequential, parallel);

    // Refs as arguments: the sum is computed from values that never come back
    // to the driver until the end.
    let sum = refs.iter().skip(1).fold(refs[0].clone(), add::remote);
    println!("sum of squares via refs: {}", sum.get()?);

    let counter = Counter::remote()?;
    let counts: Vec<_> = (0..5).map(|_| counter.increment()).collect();
    println!("counter: {:?}", oxray_core::get_all(&counts)?);

    oxray_core::shutdown();
    Ok(())
}
