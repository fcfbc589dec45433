//! Helpers for the collective tests: run a group's ranks as threads and
//! compute what they should end with.

// Each test binary compiles this module and uses a different subset of it.
#![allow(dead_code)]

use oxray_collective::{CollectiveGroup, GroupOptions, InProcessRendezvous, Result};

/// Runs `body` on every rank of a fresh group of `world` threads and returns
/// each rank's outcome, in rank order. Joining failures are outcomes too.
pub fn run_group<T: Send + 'static>(
    world: usize,
    options: GroupOptions,
    body: impl Fn(&mut CollectiveGroup) -> Result<T> + Send + Sync + Clone + 'static,
) -> Vec<Result<T>> {
    run_ranks(world, move |rank, rendezvous| {
        let mut group = CollectiveGroup::join(world, rank, "test", options.clone(), rendezvous)?;
        body(&mut group)
    })
}

/// Runs `body(rank, rendezvous)` on `world` threads sharing one rendezvous.
pub fn run_ranks<T: Send + 'static>(
    world: usize,
    body: impl Fn(usize, &InProcessRendezvous) -> Result<T> + Send + Sync + Clone + 'static,
) -> Vec<Result<T>> {
    let rendezvous = InProcessRendezvous::new();
    let threads: Vec<_> = (0..world)
        .map(|rank| {
            let (body, rendezvous) = (body.clone(), rendezvous.clone());
            std::thread::spawn(move || body(rank, &rendezvous))
        })
        .collect();
    threads
        .into_iter()
        .map(|thread| thread.join().expect("rank thread does not panic"))
        .collect()
}

/// What `rank` contributes: distinct, exactly representable values of both
/// signs, so sums are checked element by element.
pub fn contribution(rank: usize, len: usize) -> Vec<f32> {
    (0..len)
        .map(|index| {
            let mixed = (index as u64 * 2_654_435_761 + rank as u64 * 40_503) % 2001;
            (mixed as f32 - 1000.0) / 8.0
        })
        .collect()
}

/// The element-wise sum of every rank's contribution, in f64.
pub fn reference_sum(world: usize, len: usize) -> Vec<f64> {
    let mut sum = vec![0.0f64; len];
    for rank in 0..world {
        for (total, value) in sum.iter_mut().zip(contribution(rank, len)) {
            *total += f64::from(value);
        }
    }
    sum
}
