//! Bad input and failing peers: every surviving rank gets a typed error
//! naming itself and the operation, well before the group's timeout where a
//! peer can tell it something is wrong, and at the timeout where none can.

mod support;

use oxray_collective::{CollectiveError, CollectiveGroup, GroupOptions, OpKind, ReduceOp};
use std::sync::{Arc, Barrier};
use std::time::Duration;
use support::{run_group, run_ranks};

/// Long enough that a test seeing `Timeout` means a failure did not spread.
const GENEROUS: Duration = Duration::from_secs(60);

fn options(world: usize) -> GroupOptions {
    GroupOptions::default()
        .layout(vec!["node"; world])
        .timeout(GENEROUS)
}

/// Whether `error` is the prompt kind of failure a rank sees when a peer
/// reports trouble, during `op`, on `rank`.
fn spread_failure(error: &CollectiveError, rank: usize, op: OpKind) -> bool {
    match error {
        CollectiveError::PeerDisconnected {
            rank: at,
            op: during,
            ..
        }
        | CollectiveError::SizeMismatch {
            rank: at,
            op: during,
            ..
        }
        | CollectiveError::ProtocolMismatch {
            rank: at,
            op: during,
            ..
        }
        | CollectiveError::InvalidArgument {
            rank: at,
            op: during,
            ..
        } => *at == rank && *during == op,
        _ => false,
    }
}

#[test]
fn mismatched_buffer_sizes_fail_every_rank_with_a_typed_error() {
    let results = run_group(3, options(3), |group| {
        let len = if group.rank() == 1 { 1001 } else { 1000 };
        let mut values = vec![1.0f32; len];
        group.allreduce(&mut values, ReduceOp::Sum)
    });
    let mut size_mismatches = 0;
    for (rank, result) in results.into_iter().enumerate() {
        let error = result.expect_err("no rank may succeed");
        assert!(
            spread_failure(&error, rank, OpKind::Allreduce),
            "rank {rank}: {error}"
        );
        if let CollectiveError::SizeMismatch { expected, got, .. } = error {
            assert_ne!(expected, got);
            size_mismatches += 1;
        }
    }
    assert!(
        size_mismatches >= 1,
        "some rank must name the size mismatch"
    );
}

#[test]
fn a_rank_that_leaves_fails_the_ranks_waiting_on_it() {
    let results = run_group(3, options(3), |group| {
        if group.rank() == 2 {
            // Gone before the operation: its sockets close as a crashed
            // process's would.
            return Ok(None);
        }
        let mut values = vec![1.0f32; 100_000];
        group.allreduce(&mut values, ReduceOp::Sum).map(Some)
    });
    for (rank, result) in results.into_iter().enumerate().take(2) {
        let error = result.expect_err("survivors cannot finish without rank 2");
        assert!(
            spread_failure(&error, rank, OpKind::Allreduce),
            "rank {rank}: {error}"
        );
    }
}

#[test]
fn a_silent_rank_makes_the_others_time_out() {
    let timeout = Duration::from_millis(300);
    let finished = Arc::new(Barrier::new(2));
    let results = run_ranks(2, move |rank, rendezvous| {
        let options = GroupOptions::default().layout(["a", "b"]).timeout(timeout);
        let mut group = CollectiveGroup::join(2, rank, "silent", options, rendezvous)?;
        if rank == 1 {
            // Alive and connected, but never joins the all-reduce.
            finished.wait();
            return Ok(());
        }
        let outcome = group.barrier();
        finished.wait();
        outcome
    });
    match &results[0] {
        Err(CollectiveError::Timeout {
            rank: 0,
            peer: 1,
            op: OpKind::Barrier,
            timeout: after,
        }) => {
            assert_eq!(*after, timeout)
        }
        other => panic!("expected a timeout naming rank 1, got {other:?}"),
    }
}

#[test]
fn a_failed_group_refuses_further_operations() {
    let results = run_group(2, options(2), |group| {
        let mut values = vec![0.0f32; 10 + group.rank()];
        let first = group.allreduce(&mut values, ReduceOp::Sum);
        let second = group.barrier();
        Ok((first.is_err(), second))
    });
    for (rank, result) in results.into_iter().enumerate() {
        let (first_failed, second) = result.expect("the body itself returns Ok");
        assert!(first_failed, "rank {rank}");
        assert!(
            matches!(second, Err(CollectiveError::GroupBroken { rank: at, op: OpKind::Barrier, .. }) if at == rank),
            "rank {rank}: {second:?}"
        );
    }
}

#[test]
fn bad_arguments_on_one_rank_fail_it_and_its_peers() {
    let results = run_group(2, options(2), |group| {
        let input = [1.0f32; 4];
        let mut output = vec![0.0f32; if group.rank() == 0 { 7 } else { 8 }];
        group.allgather(&input, &mut output)
    });
    assert!(matches!(
        &results[0],
        Err(CollectiveError::InvalidArgument {
            rank: 0,
            op: OpKind::Allgather,
            ..
        })
    ));
    let error = results[1].as_ref().expect_err("rank 1 cannot finish alone");
    assert!(spread_failure(error, 1, OpKind::Allgather), "{error}");
}

#[test]
fn ranks_calling_different_operations_are_told_so() {
    let results = run_group(2, options(2), |group| {
        let mut values = vec![1.0f32; 64];
        let first = if group.rank() == 0 {
            group.broadcast(&mut values, 0)
        } else {
            group.allreduce(&mut values, ReduceOp::Sum)
        };
        // The broadcast root only sends, so it may finish before anyone
        // objects; its next operation is where it hears of the failure.
        let next = group.barrier();
        Ok((first, next))
    });
    let (first, next) = results[1].as_ref().expect("the body itself returns Ok");
    assert!(
        matches!(
            first,
            Err(CollectiveError::ProtocolMismatch {
                rank: 1,
                peer: 0,
                op: OpKind::Allreduce,
                ..
            })
        ),
        "{first:?}"
    );
    assert!(next.is_err());
    let (root_first, root_next) = results[0].as_ref().expect("the body itself returns Ok");
    // The root learns of the failure during its broadcast (if rank 1 hung up
    // while it was still sending) or at its next operation.
    match root_first {
        Err(error) => assert!(spread_failure(error, 0, OpKind::Broadcast), "{error}"),
        Ok(()) => {
            let error = root_next
                .as_ref()
                .expect_err("the root learns of the failure");
            assert!(spread_failure(error, 0, OpKind::Barrier), "{error}");
        }
    }
    assert!(
        root_next.is_err(),
        "a failed group refuses further operations"
    );
}

#[test]
fn joining_with_an_inconsistent_layout_or_rank_is_rejected() {
    let rendezvous = oxray_collective::InProcessRendezvous::new();
    let short_layout = GroupOptions::default().layout(["a"]);
    assert!(matches!(
        CollectiveGroup::join(2, 0, "bad", short_layout, &rendezvous),
        Err(CollectiveError::InvalidArgument {
            op: OpKind::Rendezvous,
            ..
        })
    ));
    assert!(matches!(
        CollectiveGroup::join(2, 2, "bad", options(2), &rendezvous),
        Err(CollectiveError::InvalidArgument { .. })
    ));
}

#[test]
fn ranks_that_disagree_on_the_world_size_fail_the_rendezvous() {
    let results = run_ranks(2, |rank, rendezvous| {
        let world = if rank == 0 { 2 } else { 3 };
        let options = GroupOptions::default()
            .layout(vec!["node"; world])
            .timeout(Duration::from_secs(2));
        CollectiveGroup::join(world, rank, "disagree", options, rendezvous).map(|_| ())
    });
    for result in results {
        assert!(
            matches!(result, Err(CollectiveError::Rendezvous { .. })),
            "{result:?}"
        );
    }
}
