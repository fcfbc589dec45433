//! Resource scheduling on a node with 2 CPUs, 2 (configured) GPUs and a custom
//! resource: queueing, GPU ids, infeasible requests.

mod common;

use common::{cluster, max_overlap, now_ns};
use oxray_core::{actor, remote, Error, InitOptions};
use std::time::Duration;

fn start() {
    cluster(|| {
        InitOptions::default()
            .num_cpus(2.0)
            .num_gpus(2.0)
            .resource("slot", 1.0)
    });
}

#[remote]
fn busy(millis: u64) -> (u128, u128) {
    let start = now_ns();
    std::thread::sleep(Duration::from_millis(millis));
    (start, now_ns())
}

#[remote]
fn visible_gpus() -> (String, Vec<u32>) {
    std::thread::sleep(Duration::from_millis(200));
    (
        std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default(),
        oxray_core::get_gpu_ids(),
    )
}

pub struct GpuHolder;

#[actor]
impl GpuHolder {
    pub fn new() -> Self {
        GpuHolder
    }

    pub fn devices(&self) -> String {
        std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default()
    }
}

#[test]
fn one_cpu_tasks_queue_beyond_two_cpus() {
    start();
    let refs: Vec<_> = (0..6).map(|_| busy::remote(250)).collect();
    let intervals = oxray_core::get_all(&refs).unwrap();
    assert_eq!(max_overlap(&intervals), 2, "{intervals:?}");
}

#[test]
fn custom_resources_limit_concurrency() {
    start();
    let refs: Vec<_> = (0..3)
        .map(|_| {
            busy::options()
                .num_cpus(0.0)
                .resource("slot", 1.0)
                .remote(150)
        })
        .collect();
    let intervals = oxray_core::get_all(&refs).unwrap();
    assert_eq!(max_overlap(&intervals), 1, "{intervals:?}");
}

#[test]
fn gpu_tasks_get_distinct_device_ids() {
    start();
    let refs: Vec<_> = (0..2)
        .map(|_| visible_gpus::options().num_cpus(0.0).num_gpus(1.0).remote())
        .collect();
    let mut seen = oxray_core::get_all(&refs).unwrap();
    seen.sort();
    for (env, ids) in &seen {
        assert_eq!(ids.len(), 1);
        assert_eq!(env, &ids[0].to_string());
    }
    let both = visible_gpus::options()
        .num_cpus(0.0)
        .num_gpus(2.0)
        .remote()
        .get()
        .unwrap();
    assert_eq!(both.1, vec![0, 1]);
    assert_eq!(both.0, "0,1");
    let cpu_only = visible_gpus::remote().get().unwrap();
    assert_eq!(cpu_only, (String::new(), Vec::new()));
}

#[test]
fn gpu_actors_see_their_devices() {
    start();
    let holder = GpuHolder::options().num_gpus(1.0).remote().unwrap();
    let device = holder.devices().get().unwrap();
    assert!(device == "0" || device == "1", "{device}");
    oxray_core::kill(&holder).unwrap();
}

#[test]
fn requests_beyond_the_node_fail_at_once() {
    start();
    assert!(matches!(
        busy::options().num_gpus(3.0).remote(1).get(),
        Err(Error::Infeasible { .. })
    ));
    assert!(matches!(
        GpuHolder::options().num_gpus(4.0).remote(),
        Err(Error::Infeasible { .. })
    ));
}
