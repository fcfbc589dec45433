//! Placement strategies across a three-node cluster on 127.0.0.1.

mod cluster_support;

use cluster_support::{start_head, start_node, status};
use oxray::core::{
    self as oxray_core, placement_group, remote, Error, InitOptions, PlacementStrategy,
};
use std::collections::BTreeSet;
use std::time::Duration;

#[remote]
fn node_of_bundle() -> String {
    oxray_core::node_id().expect("node id")
}

#[test]
fn strict_spread_uses_distinct_nodes_strict_pack_one_and_impossible_groups_fail() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let (_head, address, token) = start_head(session, &["--num-cpus", "3"]);
    let _nodes: Vec<_> = (0..2)
        .map(|_| start_node(session, &address, &token, &["--num-cpus", "3"]))
        .collect();
    let (ok, shown) = status(
        session,
        &address,
        &token,
        &["--wait-nodes", "3", "--timeout", "30"],
    );
    assert!(ok, "{shown}");
    oxray_core::init(InitOptions::default().address(&address).token(&token)).unwrap();

    let one_cpu: &[(&str, f64)] = &[("CPU", 1.0)];
    let spread = placement_group(
        &[one_cpu, one_cpu, one_cpu],
        PlacementStrategy::StrictSpread,
    )
    .unwrap();
    spread.wait(Duration::from_secs(30)).unwrap();
    let refs: Vec<_> = (0..3)
        .map(|i| {
            node_of_bundle::options()
                .scheduling_strategy(spread.bundle(i))
                .remote()
        })
        .collect();
    let nodes: BTreeSet<String> = oxray_core::get_all(&refs).unwrap().into_iter().collect();
    assert_eq!(
        nodes.len(),
        3,
        "STRICT_SPREAD bundles share a node: {nodes:?}"
    );

    let pack = placement_group(&[one_cpu, one_cpu], PlacementStrategy::StrictPack).unwrap();
    pack.wait(Duration::from_secs(30)).unwrap();
    let refs: Vec<_> = (0..2)
        .map(|i| {
            node_of_bundle::options()
                .num_cpus(1.0)
                .scheduling_strategy(pack.bundle(i))
                .remote()
        })
        .collect();
    let nodes: BTreeSet<String> = oxray_core::get_all(&refs).unwrap().into_iter().collect();
    assert_eq!(
        nodes.len(),
        1,
        "STRICT_PACK bundles on several nodes: {nodes:?}"
    );

    let four = placement_group(
        &[one_cpu, one_cpu, one_cpu, one_cpu],
        PlacementStrategy::StrictSpread,
    );
    assert!(matches!(four, Err(Error::Infeasible { .. })), "{four:?}");

    let (_, listed) = status(session, &address, &token, &[]);
    assert!(
        listed.contains("placement groups: 2 (0 pending)"),
        "{listed}"
    );
    assert!(listed.contains("demands: none"), "{listed}");

    // Three CPUs on one node exist, but each node lends one to the groups
    // above: this group waits, and `oxray status` lists it among the
    // demands, as `ray status` does.
    let waiting =
        placement_group(&[one_cpu, one_cpu, one_cpu], PlacementStrategy::StrictPack).unwrap();
    let (_, listed) = status(session, &address, &token, &[]);
    assert!(
        listed.contains("placement groups: 3 (1 pending)"),
        "{listed}"
    );
    assert!(
        listed.contains(
            "demands (waiting for resources):\n  {CPU: 1} * 3 (StrictPack): 1 pending placement groups"
        ),
        "{listed}"
    );
    oxray_core::remove_placement_group(&spread).unwrap();
    waiting.wait(Duration::from_secs(30)).unwrap();
    oxray_core::remove_placement_group(&waiting).unwrap();
    oxray_core::remove_placement_group(&pack).unwrap();
    let (_, listed) = status(session, &address, &token, &[]);
    assert!(listed.contains("placement groups: 0"), "{listed}");
    oxray_core::shutdown();
}
