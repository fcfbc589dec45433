//! Correctness of every collective operation under every algorithm: ranks are
//! threads of this test process, each with its own sockets and byte counters
//! (the real transport), meeting through an in-process rendezvous.

mod support;

use oxray_collective::{Algorithm, CollectiveGroup, GradientBucketer, GroupOptions, ReduceOp};
use support::{contribution, reference_sum, run_group};

const ALGORITHMS: [Algorithm; 3] = [
    Algorithm::Ring,
    Algorithm::TopologyRing,
    Algorithm::Hierarchical,
];

/// Layouts of 1 to 4 ranks over one or two nodes, uneven ones included.
fn layouts() -> Vec<Vec<&'static str>> {
    vec![
        vec!["a"],
        vec!["a", "a"],
        vec!["a", "b"],
        vec!["a", "b", "a"],
        vec!["a", "a", "b", "b"],
        vec!["a", "b", "a", "b"],
    ]
}

/// Sizes that are empty, tiny, not divisible by any world size, and large
/// enough to span many pipeline chunks.
const SIZES: [usize; 6] = [0, 1, 2, 7, 1001, 300_007];

fn assert_close(actual: &[f32], expected: &[f64], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (index, (&got, &want)) in actual.iter().zip(expected).enumerate() {
        let tolerance = 1e-5 * want.abs().max(1.0);
        assert!(
            (f64::from(got) - want).abs() <= tolerance,
            "{what}: element {index} is {got}, expected {want}"
        );
    }
}

#[test]
fn allreduce_sums_and_averages_for_every_algorithm_layout_and_size() {
    for algorithm in ALGORITHMS {
        for layout in layouts() {
            let world = layout.len();
            let options = GroupOptions::default()
                .algorithm(algorithm)
                .layout(layout.clone());
            let results = run_group(world, options, |group: &mut CollectiveGroup| {
                let mut outcomes = Vec::new();
                for size in SIZES {
                    let mut summed = contribution(group.rank(), size);
                    group.allreduce(&mut summed, ReduceOp::Sum)?;
                    let mut averaged = contribution(group.rank(), size);
                    group.allreduce(&mut averaged, ReduceOp::Mean)?;
                    outcomes.push((summed, averaged));
                }
                Ok(outcomes)
            });
            for (rank, outcomes) in results.into_iter().enumerate() {
                let outcomes =
                    outcomes.unwrap_or_else(|error| panic!("{algorithm:?} {layout:?}: {error}"));
                for (size, (summed, averaged)) in SIZES.iter().zip(outcomes) {
                    let what = format!("{algorithm:?} {layout:?} rank {rank} size {size}");
                    let expected = reference_sum(world, *size);
                    assert_close(&summed, &expected, &what);
                    let mean: Vec<f64> = expected.iter().map(|sum| sum / world as f64).collect();
                    assert_close(&averaged, &mean, &what);
                }
            }
        }
    }
}

#[test]
fn same_node_ranks_without_shared_memory_use_tcp_and_agree() {
    for algorithm in ALGORITHMS {
        let options = GroupOptions::default()
            .algorithm(algorithm)
            .layout(["a", "a", "a", "b"])
            .shared_memory(false);
        let results = run_group(4, options, |group| {
            let mut values = contribution(group.rank(), 300_007);
            group.allreduce(&mut values, ReduceOp::Sum)?;
            Ok(values)
        });
        let expected = reference_sum(4, 300_007);
        for result in results {
            let values = result.unwrap_or_else(|error| panic!("{algorithm:?}: {error}"));
            assert_close(&values, &expected, &format!("{algorithm:?} over TCP"));
        }
    }
}

#[test]
fn broadcast_copies_the_roots_buffer_from_every_root() {
    for layout in layouts() {
        let world = layout.len();
        let results = run_group(
            world,
            GroupOptions::default().layout(layout.clone()),
            |group| {
                let mut received = Vec::new();
                for root in 0..group.world_size() {
                    for size in SIZES {
                        let mut buffer = contribution(group.rank(), size);
                        group.broadcast(&mut buffer, root)?;
                        received.push(buffer);
                    }
                }
                Ok(received)
            },
        );
        for (rank, received) in results.into_iter().enumerate() {
            let received = received.unwrap_or_else(|error| panic!("{layout:?}: {error}"));
            let expected =
                (0..world).flat_map(|root| SIZES.iter().map(move |&size| contribution(root, size)));
            for (buffer, want) in received.iter().zip(expected) {
                assert_eq!(buffer, &want, "{layout:?} rank {rank}");
            }
        }
    }
}

#[test]
fn allgather_concatenates_in_rank_order() {
    for layout in layouts() {
        let world = layout.len();
        let results = run_group(
            world,
            GroupOptions::default().layout(layout.clone()),
            |group| {
                let mut gathered = Vec::new();
                for size in SIZES {
                    let mut output = vec![f32::NAN; size * group.world_size()];
                    group.allgather(&contribution(group.rank(), size), &mut output)?;
                    gathered.push(output);
                }
                Ok(gathered)
            },
        );
        for (rank, gathered) in results.into_iter().enumerate() {
            let gathered = gathered.unwrap_or_else(|error| panic!("{layout:?}: {error}"));
            for (size, output) in SIZES.iter().zip(gathered) {
                let expected: Vec<f32> = (0..world)
                    .flat_map(|source| contribution(source, *size))
                    .collect();
                assert_eq!(output, expected, "{layout:?} rank {rank} size {size}");
            }
        }
    }
}

#[test]
fn reducescatter_leaves_each_rank_its_reduced_part() {
    for algorithm in [Algorithm::Ring, Algorithm::TopologyRing] {
        for layout in layouts() {
            let world = layout.len();
            let options = GroupOptions::default()
                .algorithm(algorithm)
                .layout(layout.clone());
            let results = run_group(world, options, |group| {
                let mut parts = Vec::new();
                for size in SIZES {
                    let (rank, world) = (group.rank(), group.world_size());
                    let part_len = size / world + usize::from(rank < size % world);
                    let mut output = vec![f32::NAN; part_len];
                    group.reducescatter(&contribution(rank, size), &mut output, ReduceOp::Sum)?;
                    parts.push(output);
                }
                Ok(parts)
            });
            for (rank, parts) in results.into_iter().enumerate() {
                let parts =
                    parts.unwrap_or_else(|error| panic!("{algorithm:?} {layout:?}: {error}"));
                for (size, part) in SIZES.iter().zip(parts) {
                    let expected = reference_sum(world, *size);
                    let start = rank * (size / world) + rank.min(size % world);
                    let what = format!("{algorithm:?} {layout:?} rank {rank} size {size}");
                    assert_close(&part, &expected[start..start + part.len()], &what);
                }
            }
        }
    }
}

#[test]
fn barrier_and_mixed_operations_stay_in_step() {
    let results = run_group(
        4,
        GroupOptions::default().layout(["a", "a", "b", "b"]),
        |group| {
            let mut values = contribution(group.rank(), 5);
            for _ in 0..3 {
                group.barrier()?;
                group.allreduce(&mut values, ReduceOp::Sum)?;
                group.broadcast(&mut values, 3)?;
            }
            Ok(values)
        },
    );
    let first = results[0].as_ref().expect("rank 0").clone();
    for result in results {
        assert_eq!(result.expect("every rank succeeds"), first);
    }
}

#[test]
fn bf16_compression_halves_the_bytes_and_every_rank_agrees() {
    let size = 100_003;
    let measure = |compressed: bool| {
        let options = GroupOptions::default()
            .algorithm(Algorithm::Ring)
            .layout(["a", "b", "c"])
            .bf16_compression(compressed);
        run_group(3, options, move |group| {
            let mut values = contribution(group.rank(), size);
            group.allreduce(&mut values, ReduceOp::Sum)?;
            Ok((values, group.counters().inter_node))
        })
        .into_iter()
        .map(|result| result.expect("every rank succeeds"))
        .collect::<Vec<_>>()
    };
    let plain = measure(false);
    let compressed = measure(true);
    let expected = reference_sum(3, size);
    let contributions: Vec<Vec<f32>> = (0..3).map(|rank| contribution(rank, size)).collect();
    for ((values, compressed_bytes), (_, plain_bytes)) in compressed.iter().zip(&plain) {
        assert_eq!(
            values, &compressed[0].0,
            "all ranks hold the same bf16-rounded result"
        );
        let ratio = *compressed_bytes as f64 / *plain_bytes as f64;
        assert!(
            (0.49..0.51).contains(&ratio),
            "bf16 sends {ratio} of the f32 bytes"
        );
        for (index, (&got, &want)) in values.iter().zip(&expected).enumerate() {
            // Every hop rounds a partial sum to 8 significant bits: the error
            // is bounded by a few half-ulps of the largest partial sum.
            let magnitude: f64 = contributions
                .iter()
                .map(|values| f64::from(values[index]).abs())
                .sum();
            assert!(
                (f64::from(got) - want).abs() <= 0.02 * magnitude,
                "{got} vs {want}"
            );
        }
    }
}

#[test]
fn gradient_bucketer_matches_per_tensor_allreduce() {
    let shapes = [3usize, 0, 10, 1, 7, 25];
    let results = run_group(
        3,
        GroupOptions::default().layout(["a", "a", "b"]),
        move |group| {
            let mut tensors: Vec<Vec<f32>> = shapes
                .iter()
                .enumerate()
                .map(|(index, &len)| contribution(group.rank() * 10 + index, len))
                .collect();
            let mut views: Vec<&mut [f32]> = tensors.iter_mut().map(Vec::as_mut_slice).collect();
            // 8 elements per bucket: tensors are packed together and split.
            let buckets =
                GradientBucketer::new(8 * 4).allreduce(group, &mut views, ReduceOp::Sum)?;
            Ok((tensors, buckets))
        },
    );
    for result in results {
        let (tensors, buckets) = result.expect("every rank succeeds");
        assert_eq!(buckets, 6, "46 elements in buckets of 8");
        for (index, (tensor, &len)) in tensors.iter().zip(&shapes).enumerate() {
            let expected: Vec<f64> = (0..len)
                .map(|element| {
                    (0..3)
                        .map(|rank| f64::from(contribution(rank * 10 + index, len)[element]))
                        .sum()
                })
                .collect();
            assert_close(tensor, &expected, &format!("tensor {index}"));
        }
    }
}
