//! The bandwidth contract: with M nodes of L ranks and S bytes, the
//! hierarchical all-reduce sends at most 1.05 x 2(M-1)/M x S bytes across
//! nodes per node, while a ring whose ranks alternate between nodes sends
//! about L times more. Bytes are what each rank's transport counted (headers
//! included); nodes are emulated by the group's explicit layout.

mod support;

use oxray_collective::{Algorithm, GroupOptions, Layout, ReduceOp};
use support::{reference_sum, run_group};

/// Bytes sent across nodes per node (the largest over nodes) by one
/// all-reduce of `elements` f32, checking the result on the way.
fn inter_node_bytes_per_node(
    labels: &[String],
    algorithm: Algorithm,
    elements: usize,
    bf16: bool,
) -> f64 {
    let world = labels.len();
    let options = GroupOptions::default()
        .algorithm(algorithm)
        .layout(labels.iter().cloned())
        .bf16_compression(bf16);
    let results = run_group(world, options, move |group| {
        let mut values = support::contribution(group.rank(), elements);
        group.allreduce(&mut values, ReduceOp::Sum)?;
        Ok((values, group.counters().inter_node))
    });
    let layout = Layout::from_labels(labels);
    let expected = reference_sum(world, elements);
    let mut per_node = vec![0u64; layout.num_nodes()];
    for (rank, result) in results.into_iter().enumerate() {
        let (values, inter_node) = result.unwrap_or_else(|error| panic!("{algorithm:?}: {error}"));
        if !bf16 {
            for (&got, &want) in values.iter().zip(&expected) {
                assert!((f64::from(got) - want).abs() <= 1e-5 * want.abs().max(1.0));
            }
        }
        per_node[layout.node_of(rank)] += inter_node;
    }
    per_node.into_iter().max().unwrap_or(0) as f64
}

fn grouped(nodes: usize, ranks_per_node: usize) -> Vec<String> {
    (0..nodes * ranks_per_node)
        .map(|rank| format!("node{}", rank / ranks_per_node))
        .collect()
}

fn interleaved(nodes: usize, ranks_per_node: usize) -> Vec<String> {
    (0..nodes * ranks_per_node)
        .map(|rank| format!("node{}", rank % nodes))
        .collect()
}

#[test]
fn hierarchical_stays_within_the_bound_and_an_interleaved_ring_sends_l_times_more() {
    // 2 x 2, 2 x 3 and 3 x 2; an odd element count so segments are uneven.
    for (nodes, ranks_per_node) in [(2usize, 2usize), (2, 3), (3, 2)] {
        let elements = 250_001;
        let bytes = (elements * 4) as f64;
        let bound = 2.0 * (nodes as f64 - 1.0) / nodes as f64 * bytes;
        let what = format!("{nodes} nodes x {ranks_per_node} ranks");

        let hierarchical = inter_node_bytes_per_node(
            &grouped(nodes, ranks_per_node),
            Algorithm::Hierarchical,
            elements,
            false,
        );
        assert!(
            hierarchical <= 1.05 * bound,
            "{what}: hierarchical sent {hierarchical} per node, bound {bound}"
        );
        assert!(
            hierarchical >= 0.95 * bound,
            "{what}: hierarchical sent {hierarchical}, suspiciously below {bound}"
        );

        let topology_ring = inter_node_bytes_per_node(
            &interleaved(nodes, ranks_per_node),
            Algorithm::TopologyRing,
            elements,
            false,
        );
        let interleaved_ring = inter_node_bytes_per_node(
            &interleaved(nodes, ranks_per_node),
            Algorithm::Ring,
            elements,
            false,
        );
        // Every hop of the interleaved ring crosses nodes, so each of a node's
        // L ranks sends what the topology-aware ring's one crossing rank sends.
        let ratio = interleaved_ring / topology_ring;
        let l = ranks_per_node as f64;
        assert!(
            (0.95 * l..=1.05 * l).contains(&ratio),
            "{what}: interleaved / topology-aware = {ratio}"
        );
        assert!(
            interleaved_ring >= 0.95 * l * hierarchical,
            "{what}: interleaved ring {interleaved_ring} vs hierarchical {hierarchical}"
        );
    }
}

#[test]
fn bf16_halves_the_hierarchical_inter_node_bytes() {
    let elements = 250_000;
    let bound = (elements * 4) as f64; // 2(M-1)/M x S with M = 2
    let compressed =
        inter_node_bytes_per_node(&grouped(2, 2), Algorithm::Hierarchical, elements, true);
    assert!(
        compressed <= 1.05 * bound / 2.0,
        "bf16 hierarchical sent {compressed}, half bound {}",
        bound / 2.0
    );
}

#[test]
fn auto_picks_hierarchical_when_nodes_share_ranks() {
    let results = run_group(4, GroupOptions::default().layout(grouped(2, 2)), |group| {
        Ok(group.algorithm())
    });
    for result in results {
        assert_eq!(result.expect("every rank joins"), Algorithm::Hierarchical);
    }
}
