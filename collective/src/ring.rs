//! Plans for rings and chains: the shared step machinery of all algorithms.
//!
//! A ring all-reduce is a reduce-scatter phase followed by an all-gather
//! phase, each n-1 steps; at every step a rank sends the segment it received
//! one step earlier, so one gated plan covers the whole operation and chunks
//! flow through the ring without a pause between steps. Reduce-scatter and
//! all-gather alone are the same plan with one phase. A chain (reduce towards
//! a node's leader, broadcast away from it) is a single block forwarded as it
//! arrives.

use crate::pipeline::{Apply, Gate, Plan, ReceiveBlock, SendBlock};
use std::ops::Range;

/// The `index`-th of `parts` nearly equal parts of `0..len`; the first
/// `len % parts` parts are one element longer. Works for any `len`, including
/// lengths smaller than `parts` (some parts are then empty).
pub(crate) fn part(len: usize, parts: usize, index: usize) -> Range<usize> {
    let base = len / parts;
    let longer = len % parts;
    let start = index * base + index.min(longer);
    let size = base + usize::from(index < longer);
    start..start + size
}

/// One phase of a ring: `ring.len() - 1` steps that reduce or copy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingPhase {
    pub apply: Apply,
    /// Segment sent at the first step, relative to the rank's ring position:
    /// 0 for reduce-scatter and a stand-alone all-gather, 1 for the
    /// all-gather that follows a reduce-scatter (the segment it completed).
    pub first_segment_offset: usize,
}

pub(crate) const REDUCE_SCATTER: RingPhase = RingPhase {
    apply: Apply::Reduce,
    first_segment_offset: 0,
};
pub(crate) const ALLGATHER_AFTER_REDUCE_SCATTER: RingPhase = RingPhase {
    apply: Apply::Copy,
    first_segment_offset: 1,
};
pub(crate) const ALLGATHER: RingPhase = RingPhase {
    apply: Apply::Copy,
    first_segment_offset: 0,
};

/// The plan of the rank `rank` in a ring visiting `order`. `segments[q]` is
/// the buffer range of ring segment q; after reduce-scatter, the rank at ring
/// position p holds the complete segment p+1.
pub(crate) fn ring_plan(
    order: &[usize],
    rank: usize,
    segments: &[Range<usize>],
    phases: &[RingPhase],
) -> Plan {
    let size = order.len();
    let Some(position) = order.iter().position(|&member| member == rank) else {
        return Plan::default();
    };
    if size < 2 {
        return Plan::default();
    }
    let mut plan = Plan {
        send_to: Some(order[(position + 1) % size]),
        receive_from: Some(order[(position + size - 1) % size]),
        ..Plan::default()
    };
    for phase in phases {
        for step in 0..size - 1 {
            let sent = (position + phase.first_segment_offset + size - step) % size;
            let received = (sent + size - 1) % size;
            let gate = match plan.receives.len() {
                0 => Gate::Immediately,
                count => Gate::AsReceived(count - 1),
            };
            plan.sends.push(SendBlock {
                range: segments[sent].clone(),
                gate,
            });
            plan.receives.push(ReceiveBlock {
                range: segments[received].clone(),
                apply: phase.apply,
            });
        }
    }
    plan
}

/// Which way data flows along a chain of ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChainDirection {
    /// From the last rank towards the first, reducing on the way.
    ReduceToHead,
    /// From the first rank to the last, copying on the way.
    BroadcastFromHead,
}

/// The plan of `rank` in a chain over `members` moving `range` of the buffer.
pub(crate) fn chain_plan(
    members: &[usize],
    rank: usize,
    range: Range<usize>,
    direction: ChainDirection,
) -> Plan {
    let Some(position) = members.iter().position(|&member| member == rank) else {
        return Plan::default();
    };
    let before = position.checked_sub(1).map(|index| members[index]);
    let after = members.get(position + 1).copied();
    let (upstream, downstream, apply) = match direction {
        ChainDirection::ReduceToHead => (after, before, Apply::Reduce),
        ChainDirection::BroadcastFromHead => (before, after, Apply::Copy),
    };
    let mut plan = Plan {
        send_to: downstream,
        receive_from: upstream,
        ..Plan::default()
    };
    if upstream.is_some() {
        plan.receives.push(ReceiveBlock {
            range: range.clone(),
            apply,
        });
    }
    if downstream.is_some() {
        let gate = if upstream.is_some() {
            Gate::AsReceived(0)
        } else {
            Gate::Immediately
        };
        plan.sends.push(SendBlock { range, gate });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_range_for_any_length() {
        for len in [0, 1, 3, 7, 8, 1001] {
            for parts in 1..6 {
                let ranges: Vec<_> = (0..parts).map(|index| part(len, parts, index)).collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[parts - 1].end, len);
                assert!(ranges.windows(2).all(|pair| pair[0].end == pair[1].start));
            }
        }
    }

    #[test]
    fn each_ring_step_sends_what_the_previous_step_received() {
        let segments: Vec<_> = (0..4).map(|index| part(40, 4, index)).collect();
        let plan = ring_plan(
            &[0, 1, 2, 3],
            2,
            &segments,
            &[REDUCE_SCATTER, ALLGATHER_AFTER_REDUCE_SCATTER],
        );
        assert_eq!(plan.sends.len(), 6);
        assert_eq!(plan.sends[0].range, segments[2]);
        for step in 1..6 {
            assert_eq!(plan.sends[step].gate, Gate::AsReceived(step - 1));
            assert_eq!(plan.sends[step].range, plan.receives[step - 1].range);
        }
        // After reduce-scatter, position 2 owns segment 3.
        assert_eq!(plan.receives[2].range, segments[3]);
    }
}
