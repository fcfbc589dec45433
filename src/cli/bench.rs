//! `oxray bench allreduce`: all-reduce time and bandwidth of the collective
//! layer, reported the way nccl-tests reports them, with torch.distributed's
//! gloo backend optionally measured in the same run for a side-by-side ratio.
//!
//! By default each rank is an oxray actor, i.e. its own worker process, as
//! gloo's ranks are; the ranks meet through the cluster's key-value store.
//! `--ranks threads` runs them as threads of this process instead. Either way
//! each rank has its own links to every other rank. `--transport` says what
//! those links are: with `shared-memory` (the default, what oxray uses
//! between ranks of one node) shared-memory rings inside a node and TCP over
//! loopback between the emulated nodes of the 2 x 2 layout; with `tcp` every
//! rank is its own node and every byte crosses loopback TCP, which is what
//! gloo does on one machine, so only `tcp` rows are compared with gloo's
//! (`--gloo scripts/peers/gloo_allreduce.py`). Only the all-reduce loop is
//! timed, not start-up. Each size gets warm-up iterations (at least 3 and at
//! least 0.5 s, so freshly started workers have settled), a barrier, then
//! timed iterations; the time shown is rank 0's mean per iteration, as
//! gloo's script reports it. algbw is bytes / time, busbw = algbw x
//! 2(n-1)/n (nccl-tests), and the inter-node bytes each node sent per
//! iteration are printed beside the bound 2(M-1)/M x S.

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use oxray_collective::{
    Algorithm, CollectiveGroup, GroupOptions, InProcessRendezvous, KvRendezvous, Layout, ReduceOp,
    Rendezvous,
};
use oxray_core::{actor, InitOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// All-reduce (f32 sum) on loopback: world 2, world 4, and 2 nodes x 2 ranks.
    Allreduce(AllreduceArgs),
    /// Head CPU and scheduling latency with many heartbeating nodes.
    Heartbeats(super::bench_cluster::HeartbeatArgs),
    /// Tasks/s, actor calls/s, head CPU and memory at growing simulated
    /// node counts, before and after creating and killing many actors.
    Scheduling(super::bench_scheduling::SchedulingArgs),
}

#[derive(Debug, clap::Args)]
pub struct AllreduceArgs {
    /// Buffer sizes in MiB.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 16, 64])]
    sizes_mib: Vec<usize>,
    /// Timed iterations per size.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// Untimed iterations before the timed ones (at least).
    #[arg(long, default_value_t = 3)]
    warmup: u32,
    /// Keep warming up for at least this long, so freshly started worker
    /// processes have settled before timing starts.
    #[arg(long, default_value_t = 0.5)]
    warmup_seconds: f64,
    /// Send bf16 on the wire instead of f32.
    #[arg(long)]
    bf16: bool,
    /// What a rank is: an actor's worker process, or a thread of this process.
    #[arg(long, value_enum, default_value_t = RankKind::Processes)]
    ranks: RankKind,
    /// What carries the bytes between ranks of one machine.
    #[arg(long, value_enum, default_value_t = Transport::SharedMemory)]
    transport: Transport,
    /// Also run torch.distributed gloo's all-reduce with this script
    /// (`scripts/peers/gloo_allreduce.py`) for worlds 2 and 4 right after
    /// oxray's, and print the ratios (needs `--transport tcp`: gloo's ranks
    /// talk over loopback TCP).
    #[arg(long)]
    gloo: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum Transport {
    SharedMemory,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RankKind {
    Processes,
    Threads,
}

/// One layout the bench runs: node labels per rank and the algorithm.
struct Setup {
    name: &'static str,
    nodes: &'static [&'static str],
    algorithm: Algorithm,
}

/// The shared-memory layouts: ranks of one node share memory, the two
/// emulated nodes of the last one talk TCP.
const SHARED_MEMORY_SETUPS: &[Setup] = &[
    Setup {
        name: "world 2, 1 node",
        nodes: &["a", "a"],
        algorithm: Algorithm::Ring,
    },
    Setup {
        name: "world 4, 1 node",
        nodes: &["a", "a", "a", "a"],
        algorithm: Algorithm::Ring,
    },
    Setup {
        name: "2 nodes x 2 ranks",
        nodes: &["a", "a", "b", "b"],
        algorithm: Algorithm::Hierarchical,
    },
];

/// The TCP layouts: every rank its own node, as gloo's ranks are.
const TCP_SETUPS: &[Setup] = &[
    Setup {
        name: "world 2, TCP",
        nodes: &["r0", "r1"],
        algorithm: Algorithm::Ring,
    },
    Setup {
        name: "world 4, TCP",
        nodes: &["r0", "r1", "r2", "r3"],
        algorithm: Algorithm::Ring,
    },
];

fn setups(transport: Transport) -> &'static [Setup] {
    match transport {
        Transport::SharedMemory => SHARED_MEMORY_SETUPS,
        Transport::Tcp => TCP_SETUPS,
    }
}

/// What one size measured.
struct Measurement {
    seconds: f64,
    /// Most inter-node bytes any node sent, per iteration.
    inter_node_bytes_per_node: f64,
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Allreduce(args) => run_allreduce(&args),
        BenchCommand::Heartbeats(args) => super::bench_cluster::run(&args),
        BenchCommand::Scheduling(args) => super::bench_scheduling::run(&args),
    }
}

fn run_allreduce(args: &AllreduceArgs) -> anyhow::Result<()> {
    if args.sizes_mib.is_empty() {
        bail!("--sizes-mib needs at least one size");
    }
    if args.gloo.is_some() && args.transport != Transport::Tcp {
        bail!("--gloo compares like with like: gloo's ranks talk loopback TCP, so add --transport tcp");
    }
    println!(
        "oxray all-reduce, f32 sum, {} timed iterations{}; ranks are {}, {}",
        args.iterations,
        if args.bf16 { ", bf16 on the wire" } else { "" },
        match args.ranks {
            RankKind::Processes => "worker processes (actors)",
            RankKind::Threads => "threads",
        },
        match args.transport {
            Transport::SharedMemory =>
                "shared memory inside a node, TCP loopback between nodes (oxray-only rows: gloo has no shared-memory transport)",
            Transport::Tcp => "each rank its own node, every byte over TCP loopback",
        }
    );
    println!(
        "{:<18} {:<13} {:>6} {:>10} {:>9} {:>9} {:>16} {:>16}",
        "layout", "algorithm", "MiB", "time ms", "algbw", "busbw", "inter B/node", "2(M-1)/M x S"
    );
    // (world, MiB, oxray busbw, gloo busbw)
    let mut comparisons: Vec<(usize, usize, f64, f64)> = Vec::new();
    let mut gloo_lines: Vec<String> = Vec::new();
    if args.ranks == RankKind::Processes {
        oxray_core::init(InitOptions::default())?;
    }
    for (setup_index, setup) in setups(args.transport).iter().enumerate() {
        let world = setup.nodes.len();
        let nodes = Layout::from_labels(setup.nodes).num_nodes();
        let measurements = measure(setup_index, args)?;
        // gloo runs right after the same world, so both see the same load.
        let gloo = match &args.gloo {
            Some(script) => run_gloo(script, world, args, &mut gloo_lines)?,
            None => Vec::new(),
        };
        for (&mib, measurement) in args.sizes_mib.iter().zip(measurements) {
            let bytes = (mib * 1024 * 1024) as f64;
            let algbw = bytes / measurement.seconds / 1e9;
            let busbw = algbw * 2.0 * (world as f64 - 1.0) / world as f64;
            let bound = 2.0 * (nodes as f64 - 1.0) / nodes as f64 * bytes;
            println!(
                "{:<18} {:<13} {:>6} {:>10.2} {:>7.2}GB/s {:>5.2}GB/s {:>16.0} {:>16.0}",
                setup.name,
                format!("{:?}", setup.algorithm),
                mib,
                measurement.seconds * 1e3,
                algbw,
                busbw,
                measurement.inter_node_bytes_per_node,
                bound
            );
            if let Some(&(_, gloo_busbw)) = gloo.iter().find(|&&(size, _)| size == mib) {
                comparisons.push((world, mib, busbw, gloo_busbw));
            }
        }
    }
    if args.gloo.is_some() {
        println!();
        for line in &gloo_lines {
            println!("{line}");
        }
        println!(
            "{:<8} {:>6} {:>14} {:>14} {:>8}",
            "world", "MiB", "oxray busbw", "gloo busbw", "ratio"
        );
        for (world, mib, ours, gloo) in comparisons {
            println!(
                "{:<8} {:>6} {:>10.2}GB/s {:>10.2}GB/s {:>7.2}x",
                world,
                mib,
                ours,
                gloo,
                ours / gloo
            );
        }
    }
    Ok(())
}

/// What one rank measured per size: seconds per iteration, and inter-node
/// bytes it sent per iteration.
type RankTimings = Vec<(f64, u64)>;

/// The settings every rank of one setup runs with.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RankPlan {
    transport: Transport,
    setup: usize,
    group: String,
    sizes_mib: Vec<usize>,
    iterations: u32,
    warmup: u32,
    warmup_seconds: f64,
    bf16: bool,
}

/// One rank: joins the group, then warms up, synchronises and times each size.
fn run_rank(
    plan: &RankPlan,
    rank: usize,
    rendezvous: &dyn Rendezvous,
) -> oxray_collective::Result<RankTimings> {
    let setup = &setups(plan.transport)[plan.setup];
    let options = GroupOptions::default()
        .algorithm(setup.algorithm)
        .layout(setup.nodes.iter().copied())
        .shared_memory(plan.transport == Transport::SharedMemory)
        .bf16_compression(plan.bf16);
    let mut group =
        CollectiveGroup::join(setup.nodes.len(), rank, &plan.group, options, rendezvous)?;
    let mut timings = Vec::new();
    for &mib in &plan.sizes_mib {
        let mut buffer = vec![1.0f32; mib * 1024 * 1024 / 4];
        let warm_until = Instant::now() + Duration::from_secs_f64(plan.warmup_seconds.max(0.0));
        let mut warmed = 0;
        loop {
            group.allreduce(&mut buffer, ReduceOp::Sum)?;
            warmed += 1;
            // Rank 0 decides for all, so every rank runs the same iterations.
            let mut more = [f32::from(u8::from(
                warmed < plan.warmup || Instant::now() < warm_until,
            ))];
            group.broadcast(&mut more, 0)?;
            if more[0] == 0.0 {
                break;
            }
        }
        group.barrier()?;
        group.reset_counters();
        let start = Instant::now();
        for _ in 0..plan.iterations {
            group.allreduce(&mut buffer, ReduceOp::Sum)?;
        }
        let seconds = start.elapsed().as_secs_f64() / f64::from(plan.iterations);
        timings.push((
            seconds,
            group.counters().inter_node / u64::from(plan.iterations),
        ));
    }
    Ok(timings)
}

/// A bench rank living in its own worker process.
pub struct BenchRank;

#[actor]
impl BenchRank {
    pub fn new() -> Self {
        BenchRank
    }

    pub fn run(&mut self, plan: RankPlan, rank: usize) -> Result<RankTimings, String> {
        run_rank(&plan, rank, &KvRendezvous).map_err(|error| error.to_string())
    }
}

/// Runs every size of `setup` on one group and folds the ranks' timings.
fn measure(setup_index: usize, args: &AllreduceArgs) -> anyhow::Result<Vec<Measurement>> {
    let setup = &setups(args.transport)[setup_index];
    let world = setup.nodes.len();
    let plan = RankPlan {
        transport: args.transport,
        setup: setup_index,
        group: format!("bench-allreduce-{}-{setup_index}", std::process::id()),
        sizes_mib: args.sizes_mib.clone(),
        iterations: args.iterations,
        warmup: args.warmup,
        warmup_seconds: args.warmup_seconds,
        bf16: args.bf16,
    };
    let per_rank: Vec<RankTimings> = match args.ranks {
        RankKind::Threads => {
            let rendezvous = InProcessRendezvous::new();
            let threads: Vec<_> = (0..world)
                .map(|rank| {
                    let (plan, rendezvous) = (plan.clone(), rendezvous.clone());
                    std::thread::spawn(move || run_rank(&plan, rank, &rendezvous))
                })
                .collect();
            let mut timings = Vec::new();
            for (rank, thread) in threads.into_iter().enumerate() {
                let outcome = thread
                    .join()
                    .map_err(|_| anyhow::anyhow!("bench rank {rank} panicked"))?;
                timings.push(outcome.with_context(|| format!("{}: rank {rank}", setup.name))?);
            }
            timings
        }
        RankKind::Processes => {
            let actors = (0..world)
                .map(|_| BenchRank::options().remote())
                .collect::<Result<Vec<_>, _>>()?;
            let calls: Vec<_> = actors
                .iter()
                .enumerate()
                .map(|(rank, actor)| actor.run(plan.clone(), rank))
                .collect();
            let timings = oxray_core::get_all(&calls).with_context(|| setup.name.to_string());
            for actor in &actors {
                oxray_core::kill(actor)?;
            }
            timings?
        }
    };
    let layout = Layout::from_labels(setup.nodes);
    Ok((0..args.sizes_mib.len())
        .map(|size| {
            let mut per_node = vec![0u64; layout.num_nodes()];
            for (rank, timings) in per_rank.iter().enumerate() {
                per_node[layout.node_of(rank)] += timings[size].1;
            }
            Measurement {
                seconds: per_rank[0][size].0,
                inter_node_bytes_per_node: per_node.into_iter().max().unwrap_or(0) as f64,
            }
        })
        .collect())
}

/// Runs gloo's all-reduce script for `world` ranks on the bench's sizes and
/// iterations; returns its busbw per size in MiB and keeps its output lines
/// in `lines`.
fn run_gloo(
    script: &Path,
    world: usize,
    args: &AllreduceArgs,
    lines: &mut Vec<String>,
) -> anyhow::Result<Vec<(usize, f64)>> {
    let sizes: Vec<String> = args.sizes_mib.iter().map(usize::to_string).collect();
    let python = std::env::var("OXRAY_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let output = std::process::Command::new(&python)
        .arg(script)
        .arg(world.to_string())
        .arg(sizes.join(","))
        .arg(args.iterations.to_string())
        .output()
        .with_context(|| format!("running {python} {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "gloo script failed ({}; `. scripts/env.sh` points OXRAY_PYTHON at a Python with torch): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut busbw_by_size = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        lines.push(line.to_string());
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(name))
                .map(|value| {
                    value
                        .trim_end_matches("GB/s")
                        .trim_end_matches("MiB")
                        .to_string()
                })
        };
        if let (Some(Ok(mib)), Some(Ok(busbw))) = (
            field("size=").map(|value| value.parse::<usize>()),
            field("busbw=").map(|value| value.parse::<f64>()),
        ) {
            busbw_by_size.push((mib, busbw));
        }
    }
    Ok(busbw_by_size)
}
