//! The bandwidth contract: with M nodes of L ranks and S bytes, the
//! hierarchical all-reduce sends at most 1.05 x 2(M-1)/M x S bytes across
//! nodes per node, while a ring whose ranks alternate between nodes sends
//! about L times more. Bytes are what each rank's transport counted (headers
//! included); nodes are emulated by the group's explicit layout.

mod collective_support;

use collective_support::{reference_sum, run_group};
use oxray_collective::{Algorithm, GroupOptions, Layout, ReduceOp};

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
        let mut values = collective_support::contribution(group.rank(), elements);
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

/// `oxray bench allreduce` rows, as (layout, inter-node bytes per node,
/// the bound 2(M-1)/M x S).
fn bench_rows(transport: &str) -> Vec<(String, f64, f64)> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_oxray"))
        .args([
            "bench",
            "allreduce",
            "--ranks",
            "threads",
            "--sizes-mib",
            "1",
        ])
        .args([
            "--iterations",
            "2",
            "--warmup-seconds",
            "0",
            "--transport",
            transport,
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with("world") || line.starts_with("2 nodes"))
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let number = |from_end: usize| words[words.len() - from_end].parse::<f64>().unwrap();
            let layout = line.split("  ").next().unwrap().trim().to_string();
            (layout, number(2), number(1))
        })
        .collect()
}

/// With `--transport tcp` every rank is its own node, so all of a ring's
/// 2(n-1)/n x S bytes per rank cross TCP, as gloo's do; with shared memory
/// ranks of one node send nothing over TCP. Comparing shared memory with
/// gloo is refused.
#[test]
fn the_bench_compares_with_gloo_only_over_tcp() {
    let tcp = bench_rows("tcp");
    assert_eq!(
        tcp.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["world 2, TCP", "world 4, TCP"]
    );
    for (layout, inter_node, bound) in &tcp {
        assert!(
            *inter_node >= *bound && *inter_node <= 1.05 * bound,
            "{layout}: {inter_node} bytes over TCP, ring bound {bound}"
        );
    }
    let shared = bench_rows("shared-memory");
    let one_node: Vec<_> = shared.iter().filter(|r| r.0.contains("1 node")).collect();
    assert_eq!(one_node.len(), 2, "{shared:?}");
    assert!(one_node.iter().all(|r| r.1 == 0.0), "{shared:?}");

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_oxray"))
        .args([
            "bench",
            "allreduce",
            "--gloo",
            "scripts/peers/gloo_allreduce.py",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--transport tcp"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
