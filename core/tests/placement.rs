//! Placement groups on one node with 4 CPUs and 2 (configured) GPUs: GPU
//! bundles get device ids, work lands in its bundle, pending groups wait,
//! removal frees resources and ends the group's actors.

mod common;

use common::cluster;
use oxray_core::{actor, placement_group, remote, Error, InitOptions, PlacementStrategy};
use std::time::Duration;

fn start() {
    cluster(|| InitOptions::default().num_cpus(4.0).num_gpus(2.0));
}

#[remote]
fn devices() -> (String, Vec<u32>) {
    (
        std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default(),
        oxray_core::get_gpu_ids(),
    )
}

pub struct Learner;

#[actor]
impl Learner {
    pub fn new() -> Self {
        Learner
    }

    pub fn gpu(&self) -> String {
        std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default()
    }
}

#[test]
fn gpu_bundles_give_their_work_the_reserved_device_ids() {
    start();
    let group = placement_group(
        &[&[("CPU", 1.0), ("GPU", 1.0)], &[("CPU", 1.0), ("GPU", 1.0)]],
        PlacementStrategy::StrictPack,
    )
    .unwrap();
    group.wait(Duration::from_secs(30)).unwrap();
    let learners: Vec<_> = (0..2)
        .map(|i| {
            Learner::options()
                .num_gpus(1.0)
                .num_cpus(1.0)
                .scheduling_strategy(group.bundle(i))
                .remote()
                .unwrap()
        })
        .collect();
    let mut gpus: Vec<String> = learners.iter().map(|l| l.gpu().get().unwrap()).collect();
    gpus.sort();
    assert_eq!(gpus, vec!["0", "1"]);
    // The group holds both GPUs, so a GPU task outside it has to wait.
    let outside = devices::options().num_cpus(0.0).num_gpus(1.0).remote();
    let (ready, _) = oxray_core::wait(
        std::slice::from_ref(&outside),
        1,
        Some(Duration::from_millis(300)),
    )
    .unwrap();
    assert!(
        ready.is_empty(),
        "a GPU task ran although the group holds both GPUs"
    );
    oxray_core::remove_placement_group(&group).unwrap();
    // Removal ends the group's actors and frees the GPUs for the waiting task.
    assert!(matches!(
        learners[0].gpu().get(),
        Err(Error::ActorDied { .. })
    ));
    let (env, ids) = outside.get().unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(env, ids[0].to_string());
}

#[test]
fn a_group_that_can_never_fit_is_an_error_and_one_that_must_wait_is_pending() {
    start();
    let too_big = placement_group(&[&[("CPU", 8.0)]], PlacementStrategy::Pack);
    assert!(
        matches!(too_big, Err(Error::Infeasible { .. })),
        "{too_big:?}"
    );
    let one_node_only = placement_group(
        &[&[("CPU", 1.0)], &[("CPU", 1.0)]],
        PlacementStrategy::StrictSpread,
    );
    assert!(
        matches!(one_node_only, Err(Error::Infeasible { .. })),
        "{one_node_only:?}"
    );

    let holder = placement_group(&[&[("CPU", 3.0)]], PlacementStrategy::Pack).unwrap();
    holder.wait(Duration::from_secs(30)).unwrap();
    let waiting = placement_group(&[&[("CPU", 2.0)]], PlacementStrategy::Pack).unwrap();
    assert!(matches!(
        waiting.wait(Duration::from_millis(200)),
        Err(Error::Timeout { .. })
    ));
    oxray_core::remove_placement_group(&holder).unwrap();
    waiting.wait(Duration::from_secs(30)).unwrap();
    let in_bundle = devices::options()
        .num_cpus(2.0)
        .scheduling_strategy(waiting.bundle(0))
        .remote();
    assert_eq!(in_bundle.get().unwrap().1, Vec::<u32>::new());
    let larger_than_bundle = devices::options()
        .num_cpus(3.0)
        .scheduling_strategy(waiting.bundle(0))
        .remote();
    assert!(matches!(
        larger_than_bundle.get(),
        Err(Error::Infeasible { .. })
    ));
    oxray_core::remove_placement_group(&waiting).unwrap();
}

#[remote]
fn hold_cpu(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn removing_a_group_cancels_its_queued_and_running_tasks() {
    start();
    let group = placement_group(&[&[("CPU", 1.0)]], PlacementStrategy::Pack).unwrap();
    group.wait(Duration::from_secs(30)).unwrap();
    let in_group = |ms| {
        hold_cpu::options()
            .num_cpus(1.0)
            .scheduling_strategy(group.bundle(0))
            .remote(ms)
    };
    let running = in_group(60_000);
    let queued = in_group(1);
    // The first holds the bundle's only CPU; the second waits for it.
    let (ready, _) = oxray_core::wait(
        std::slice::from_ref(&queued),
        1,
        Some(Duration::from_millis(300)),
    )
    .unwrap();
    assert!(ready.is_empty());
    let removed_at = std::time::Instant::now();
    oxray_core::remove_placement_group(&group).unwrap();
    for task in [queued, running] {
        let error = task.get_timeout(Duration::from_secs(10)).unwrap_err();
        assert!(matches!(error, Error::Cancelled { .. }), "{error}");
    }
    assert!(removed_at.elapsed() < Duration::from_secs(5));
}
