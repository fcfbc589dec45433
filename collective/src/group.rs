//! A rank's membership in a collective group and the operations on it.
//!
//! Each operation builds the plans its algorithm needs (see [`crate::ring`])
//! and runs them on the group's sockets. Any failure closes all of this rank's
//! connections, so the failure spreads to every peer as a disconnect within
//! moments instead of leaving them to wait for their timeout, and the group
//! refuses further operations with the first cause.

use crate::error::{CollectiveError, OpKind, Result};
use crate::layout::Layout;
use crate::options::{Algorithm, GroupOptions, ReduceOp};
use crate::pipeline::{self, Frame, Plan, Staging};
use crate::rendezvous::Rendezvous;
use crate::ring::{
    chain_plan, part, ring_plan, ChainDirection, ALLGATHER, ALLGATHER_AFTER_REDUCE_SCATTER,
    REDUCE_SCATTER,
};
use crate::transport::{ByteCounters, Mesh};
use crate::wire::WireFormat;
use std::ops::Range;

/// One rank's handle on a collective group.
pub struct CollectiveGroup {
    name: String,
    mesh: Mesh,
    options: GroupOptions,
    /// `options.algorithm` with `Auto` resolved against the layout.
    algorithm: Algorithm,
    /// The order rings visit ranks in.
    ring_order: Vec<usize>,
    sequence: u64,
    staging: Staging,
    /// Reduce-scatter works on a copy of its input, kept between calls.
    scratch: Vec<f32>,
    failure: Option<String>,
}

impl CollectiveGroup {
    /// Joins `group_name` as `rank` of `world_size`, meeting the other ranks
    /// through `rendezvous`. Blocks until every rank has joined, or fails
    /// after `options.timeout`.
    pub fn join(
        world_size: usize,
        rank: usize,
        group_name: &str,
        options: GroupOptions,
        rendezvous: &dyn Rendezvous,
    ) -> Result<Self> {
        let invalid = |detail: String| CollectiveError::InvalidArgument {
            rank,
            op: OpKind::Rendezvous,
            detail,
        };
        if world_size == 0 || rank >= world_size {
            return Err(invalid(format!(
                "rank {rank} is not within a world of {world_size}"
            )));
        }
        if let Some(layout) = &options.layout {
            if layout.len() != world_size {
                return Err(invalid(format!(
                    "the layout names {} nodes for a world of {world_size}",
                    layout.len()
                )));
            }
        }
        let mesh = Mesh::connect(world_size, rank, group_name, &options, rendezvous)?;
        let layout = mesh.layout();
        let algorithm = match options.algorithm {
            Algorithm::Auto if layout.benefits_from_hierarchy() => Algorithm::Hierarchical,
            Algorithm::Auto => Algorithm::TopologyRing,
            chosen => chosen,
        };
        let ring_order = match algorithm {
            Algorithm::Ring => (0..world_size).collect(),
            _ => layout.topology_order(),
        };
        let mut group = CollectiveGroup {
            name: group_name.to_string(),
            mesh,
            options,
            algorithm,
            ring_order,
            sequence: 0,
            staging: Staging::default(),
            scratch: Vec::new(),
            failure: None,
        };
        // Once every rank is past this barrier, every rank has mapped the
        // shared-memory files it needs, so their names can go.
        group.barrier()?;
        group.mesh.remove_shared_files();
        group.reset_counters();
        Ok(group)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn rank(&self) -> usize {
        self.mesh.rank()
    }

    pub fn world_size(&self) -> usize {
        self.mesh.layout().world_size()
    }

    pub fn layout(&self) -> &Layout {
        self.mesh.layout()
    }

    /// The algorithm all-reduce runs (never `Auto`).
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn options(&self) -> &GroupOptions {
        &self.options
    }

    /// Bytes this rank has sent since the group formed or the last reset,
    /// headers included.
    pub fn counters(&self) -> ByteCounters {
        self.mesh.counters()
    }

    pub fn reset_counters(&mut self) {
        self.mesh.reset_counters();
    }

    /// Reduces `buffer` across all ranks; every rank ends with the result.
    pub fn allreduce(&mut self, buffer: &mut [f32], op: ReduceOp) -> Result<()> {
        self.guarded(OpKind::Allreduce, |group| {
            let frame = group.frame(OpKind::Allreduce, buffer.len());
            match group.algorithm {
                Algorithm::Hierarchical => group.hierarchical_allreduce(buffer, frame)?,
                _ => {
                    let order = group.ring_order.clone();
                    group.ring_allreduce(&order, buffer, frame)?;
                }
            }
            group.finish_reduction(buffer, op);
            Ok(())
        })
    }

    /// Copies `root`'s `buffer` into every rank's `buffer`.
    pub fn broadcast(&mut self, buffer: &mut [f32], root: usize) -> Result<()> {
        self.guarded(OpKind::Broadcast, |group| {
            let size = group.world_size();
            if root >= size {
                return Err(group.invalid(
                    OpKind::Broadcast,
                    format!("root {root} is not within a world of {size}"),
                ));
            }
            let frame = group.frame(OpKind::Broadcast, buffer.len());
            // A chain along the ring starting at the root: each rank forwards
            // chunks as they arrive, and the chain leaves each node once.
            let start = group
                .ring_order
                .iter()
                .position(|&member| member == root)
                .unwrap_or(0);
            let mut chain = group.ring_order.clone();
            chain.rotate_left(start);
            let plan = chain_plan(
                &chain,
                group.rank(),
                0..buffer.len(),
                ChainDirection::BroadcastFromHead,
            );
            group.run(buffer, &plan, frame)
        })
    }

    /// Concatenates every rank's `input` in rank order into `output`, which
    /// must hold `world_size * input.len()` elements.
    pub fn allgather(&mut self, input: &[f32], output: &mut [f32]) -> Result<()> {
        self.guarded(OpKind::Allgather, |group| {
            let size = group.world_size();
            let block = input.len();
            if output.len() != size * block {
                return Err(group.invalid(
                    OpKind::Allgather,
                    format!(
                        "output has {} elements, expected {size} x {block}",
                        output.len()
                    ),
                ));
            }
            let rank = group.rank();
            output[rank * block..(rank + 1) * block].copy_from_slice(input);
            let segments: Vec<Range<usize>> = group
                .ring_order
                .iter()
                .map(|&member| member * block..(member + 1) * block)
                .collect();
            let frame = group.frame(OpKind::Allgather, output.len());
            let plan = ring_plan(&group.ring_order, rank, &segments, &[ALLGATHER]);
            group.run(output, &plan, frame)
        })
    }

    /// Reduces `input` across ranks and leaves in `output` this rank's part:
    /// `input` is split into `world_size` nearly equal parts (the first
    /// `len % world_size` one element longer), and rank r receives part r.
    pub fn reducescatter(&mut self, input: &[f32], output: &mut [f32], op: ReduceOp) -> Result<()> {
        self.guarded(OpKind::Reducescatter, |group| {
            let size = group.world_size();
            let rank = group.rank();
            let own_part = part(input.len(), size, rank);
            if output.len() != own_part.len() {
                return Err(group.invalid(
                    OpKind::Reducescatter,
                    format!(
                        "output has {} elements, this rank's part has {}",
                        output.len(),
                        own_part.len()
                    ),
                ));
            }
            // After reduce-scatter the rank at ring position p owns segment
            // p+1, so segment q is the part of the rank at position q-1.
            let order = &group.ring_order;
            let segments: Vec<Range<usize>> = (0..size)
                .map(|segment| part(input.len(), size, order[(segment + size - 1) % size]))
                .collect();
            let plan = ring_plan(order, rank, &segments, &[REDUCE_SCATTER]);
            let frame = group.frame(OpKind::Reducescatter, input.len());
            let mut scratch = std::mem::take(&mut group.scratch);
            scratch.clear();
            scratch.extend_from_slice(input);
            let outcome = group.run(&mut scratch, &plan, frame);
            output.copy_from_slice(&scratch[own_part]);
            group.scratch = scratch;
            outcome?;
            group.finish_reduction(output, op);
            Ok(())
        })
    }

    /// Returns once every rank has called `barrier`.
    pub fn barrier(&mut self) -> Result<()> {
        self.guarded(OpKind::Barrier, |group| {
            // A one-element ring all-reduce: no rank can finish before every
            // rank's contribution has gone round.
            let mut token = [0.0f32];
            let frame = group.frame(OpKind::Barrier, token.len());
            let order = group.ring_order.clone();
            group.ring_allreduce(&order, &mut token, frame)
        })
    }

    fn ring_allreduce(&mut self, order: &[usize], buffer: &mut [f32], frame: Frame) -> Result<()> {
        let segments: Vec<Range<usize>> = (0..order.len())
            .map(|index| part(buffer.len(), order.len(), index))
            .collect();
        let plan = ring_plan(
            order,
            self.rank(),
            &segments,
            &[REDUCE_SCATTER, ALLGATHER_AFTER_REDUCE_SCATTER],
        );
        self.run(buffer, &plan, frame)
    }

    /// Reduce inside the node to its leader, all-reduce among the leaders,
    /// broadcast inside the node: only the leaders' ring crosses nodes.
    fn hierarchical_allreduce(&mut self, buffer: &mut [f32], frame: Frame) -> Result<()> {
        let rank = self.rank();
        let layout = self.mesh.layout();
        let members = layout.node_members(layout.node_of(rank));
        let leaders = layout.leaders();
        let whole = 0..buffer.len();
        let reduce = chain_plan(&members, rank, whole.clone(), ChainDirection::ReduceToHead);
        self.run(buffer, &reduce, frame)?;
        if members[0] == rank {
            self.ring_allreduce(&leaders, buffer, frame)?;
        }
        let spread = chain_plan(&members, rank, whole, ChainDirection::BroadcastFromHead);
        self.run(buffer, &spread, frame)
    }

    fn finish_reduction(&self, values: &mut [f32], op: ReduceOp) {
        if op == ReduceOp::Mean {
            let size = self.world_size() as f32;
            for value in values {
                *value /= size;
            }
        }
    }

    fn frame(&mut self, op: OpKind, total_elements: usize) -> Frame {
        self.sequence += 1;
        Frame {
            op,
            sequence: self.sequence,
            format: if self.options.bf16_compression {
                WireFormat::Bf16
            } else {
                WireFormat::F32
            },
            total_elements,
        }
    }

    fn run(&mut self, buffer: &mut [f32], plan: &Plan, frame: Frame) -> Result<()> {
        pipeline::run(
            &mut self.mesh,
            &mut self.staging,
            buffer,
            plan,
            frame,
            self.options.timeout,
        )
    }

    fn invalid(&self, op: OpKind, detail: String) -> CollectiveError {
        CollectiveError::InvalidArgument {
            rank: self.rank(),
            op,
            detail,
        }
    }

    /// Runs `operation` unless the group already failed; a failure now closes
    /// every connection (so peers fail too) and marks the group broken.
    fn guarded<T>(
        &mut self,
        op: OpKind,
        operation: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        if let Some(cause) = &self.failure {
            return Err(CollectiveError::GroupBroken {
                rank: self.rank(),
                op,
                cause: cause.clone(),
            });
        }
        let outcome = operation(self);
        if let Err(error) = &outcome {
            self.failure = Some(error.to_string());
            self.mesh.shut_down();
        }
        outcome
    }
}
