//! `oxray bench scheduling`: how the head's scheduling holds up as the cluster
//! grows and as actors come and go.
//!
//! For each node count a real head runs as its own process (so its CPU time
//! and memory can be read from `/proc`) with no CPUs of its own, and that many
//! simulated nodes (`oxray_core::simulated_node`) register CPUs and actor
//! slots with it over the real protocol; their workers answer every task and
//! actor call at once, so what is measured is the head and the protocol, not
//! the work. This process joins as a driver and measures no-op tasks and
//! actor calls through the cluster, then creates and kills actors in batches
//! (each constructed on a simulated node before it is killed) and measures
//! again: the head's CPU per task and its memory should not grow with how
//! many actors have ever existed.

use super::bench_head::{HeadProcess, Memory};
use anyhow::{bail, Context};
use oxray_core::simulated_node::{SimulatedNodeOptions, SimulatedNodes};
use oxray_core::{actor, remote, InitOptions, ResourceSet, SchedulingStrategy, ShipExecutable};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The resource only simulated nodes offer, one per actor they can host.
const ACTOR_SLOT: &str = "simulated_actor_slot";

#[derive(Debug, clap::Args)]
pub struct SchedulingArgs {
    /// Simulated node counts, each measured with a fresh head.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 100, 1000])]
    nodes: Vec<usize>,
    /// CPUs each simulated node offers (each task takes one).
    #[arg(long, default_value_t = 4)]
    cpus_per_node: u32,
    /// No-op tasks per measurement.
    #[arg(long, default_value_t = 20_000)]
    tasks: usize,
    /// Actor calls per measurement.
    #[arg(long, default_value_t = 20_000)]
    calls: usize,
    /// Batches of tasks and of calls per measurement: each rate reported is
    /// the median of its batches (one batch moves by 2x on a busy machine).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Actors the calls go to, spread over the nodes.
    #[arg(long, default_value_t = 32)]
    call_actors: usize,
    /// Actors created and killed between the two measurements.
    #[arg(long, default_value_t = 100_000)]
    actors: usize,
    /// Actors alive at once while creating and killing them.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Dead actors the head keeps for `oxray list actors`.
    #[arg(long, default_value_t = oxray_core::daemon::DEFAULT_DEAD_ACTORS_KEPT)]
    dead_actors_kept: usize,
    /// Skip the control: tasks/s on one node offering as many CPUs as the
    /// largest node count's nodes together.
    #[arg(long)]
    no_control: bool,
}

/// Tasks/s and the head's CPU on one node with the CPUs of many: at equal
/// capacity, what the number of nodes alone costs.
struct Control {
    cpus: usize,
    tasks_per_s: f64,
    head_cpu_per_1000_tasks: f64,
}

/// The cheapest task: answered by the simulated worker with `()`.
#[remote]
fn noop() {}

/// An actor whose constructor and calls the simulated workers answer.
pub struct SimulatedActor;

#[actor]
impl SimulatedActor {
    pub fn new() -> Self {
        SimulatedActor
    }

    pub fn ping(&self) {}
}

/// One measurement at one node count.
struct Figures {
    tasks_per_s: f64,
    calls_per_s: f64,
    head_cpu_per_1000_tasks: f64,
    memory: Memory,
}

/// Everything measured at one node count.
struct NodeCountResult {
    nodes: usize,
    fresh: Figures,
    after: Figures,
    churn_seconds: f64,
    /// The head's memory halfway through creating and killing actors.
    halfway: Memory,
    nodes_with_tasks: usize,
    nodes_with_calls: usize,
    tasks_per_node: (u64, u64),
}

pub fn run(args: &SchedulingArgs) -> anyhow::Result<()> {
    if args.nodes.is_empty() || args.nodes.contains(&0) {
        bail!("--nodes must list positive node counts");
    }
    let positive = [
        ("--cpus-per-node", args.cpus_per_node as usize),
        ("--tasks", args.tasks),
        ("--calls", args.calls),
        ("--rounds", args.rounds),
        ("--call-actors", args.call_actors),
        ("--batch", args.batch),
    ];
    if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
        bail!("{name} must be positive");
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average before: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut results = Vec::new();
    for &nodes in &args.nodes {
        let result = measure(args, nodes)
            .with_context(|| format!("measuring with {nodes} simulated nodes"))?;
        results.push(result);
    }
    let largest = results.iter().map(|r| r.nodes).max().unwrap_or(1);
    let control = if args.no_control || largest == 1 {
        None
    } else {
        let cpus = largest * args.cpus_per_node as usize;
        Some(measure_control(args, cpus).context("measuring the control")?)
    };
    print_table(args, &results, control.as_ref());
    Ok(())
}

/// A head with no CPUs of its own and `count` simulated nodes of `cpus`
/// CPUs each, with this process joined to it as a driver.
fn start_cluster(
    args: &SchedulingArgs,
    count: usize,
    cpus: usize,
) -> anyhow::Result<(HeadProcess, SimulatedNodes)> {
    let kept = args.dead_actors_kept.to_string();
    let head = HeadProcess::start(&["--num-cpus", "0", "--dead-actors-kept", &kept])?;
    eprintln!(
        "head pid {} (session directory {})",
        head.pid(),
        head.session_dir().display()
    );
    let mut resources = ResourceSet::default();
    resources.set("CPU", cpus as f64);
    resources.set(ACTOR_SLOT, (args.batch + args.call_actors) as f64);
    let options = SimulatedNodeOptions {
        count,
        heartbeat_period: Duration::from_secs(1),
        resources,
    };
    let registering = Instant::now();
    let nodes = SimulatedNodes::start(&head.address, &head.token, &options)?;
    eprintln!(
        "{count} simulated nodes of {cpus} CPUs registered in {:.2} s",
        registering.elapsed().as_secs_f64()
    );
    // The simulated nodes never start the executable, so it is not shipped.
    oxray_core::init(
        InitOptions::default()
            .address(&head.address)
            .token(&head.token)
            .ship_executable(ShipExecutable::Never),
    )?;
    Ok((head, nodes))
}

/// [`measure_tasks`] on one node of `cpus` CPUs.
fn measure_control(args: &SchedulingArgs, cpus: usize) -> anyhow::Result<Control> {
    let (head, nodes) = start_cluster(args, 1, cpus)?;
    let measured = (|| {
        run_tasks(args.tasks.max(2 * cpus))?;
        let (tasks_per_s, head_cpu_per_1000_tasks) = measure_tasks(args, &head)?;
        Ok::<_, anyhow::Error>(Control {
            cpus,
            tasks_per_s,
            head_cpu_per_1000_tasks,
        })
    })();
    oxray_core::shutdown();
    drop(nodes);
    drop(head);
    measured
}

fn measure(args: &SchedulingArgs, count: usize) -> anyhow::Result<NodeCountResult> {
    let (head, nodes) = start_cluster(args, count, args.cpus_per_node as usize)?;
    let measured = (|| {
        // Warm up: every node's task workers started and connected.
        run_tasks(args.tasks.max(2 * count * args.cpus_per_node as usize))?;
        let fresh = measure_figures(args, &head)?;
        let (churn_seconds, halfway) = churn_actors(args, &head)?;
        let after = measure_figures(args, &head)?;
        Ok::<_, anyhow::Error>((fresh, churn_seconds, halfway, after))
    })();
    oxray_core::shutdown();
    let (fresh, churn_seconds, halfway, after) = measured?;

    let work = nodes.work();
    let tasks: Vec<u64> = work
        .iter()
        .map(|w| w.tasks.load(Ordering::Relaxed))
        .collect();
    let calls = work
        .iter()
        .filter(|w| w.actor_calls.load(Ordering::Relaxed) > 0);
    let constructed: u64 = work
        .iter()
        .map(|w| w.actors_constructed.load(Ordering::Relaxed))
        .sum();
    let expected = (args.actors + 2 * args.call_actors) as u64;
    if constructed != expected {
        bail!("{constructed} actors were constructed on the simulated nodes, expected {expected}");
    }
    let result = NodeCountResult {
        nodes: count,
        nodes_with_tasks: tasks.iter().filter(|t| **t > 0).count(),
        nodes_with_calls: calls.count(),
        tasks_per_node: (
            tasks.iter().copied().min().unwrap_or(0),
            tasks.iter().copied().max().unwrap_or(0),
        ),
        fresh,
        after,
        churn_seconds,
        halfway,
    };
    drop(nodes);
    drop(head);
    Ok(result)
}

/// Submits `count` no-op tasks at once and waits for all of them.
fn run_tasks(count: usize) -> anyhow::Result<()> {
    let refs: Vec<_> = (0..count).map(|_| noop::remote()).collect();
    oxray_core::get_all(&refs)?;
    Ok(())
}

/// The median of `rounds` runs of `batch`, each of `count` operations, in
/// operations per second.
fn median_rate(
    rounds: usize,
    count: usize,
    mut batch: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let mut rates = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        batch()?;
        rates.push(count as f64 / started.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

/// Tasks per second (the median over `--rounds`) and the head's CPU
/// seconds per 1000 tasks.
fn measure_tasks(args: &SchedulingArgs, head: &HeadProcess) -> anyhow::Result<(f64, f64)> {
    let cpu_before = head.cpu_seconds()?;
    let tasks_per_s = median_rate(args.rounds, args.tasks, || run_tasks(args.tasks))?;
    let head_cpu = head.cpu_seconds()? - cpu_before;
    Ok((
        tasks_per_s,
        1000.0 * head_cpu / (args.rounds * args.tasks) as f64,
    ))
}

/// Tasks per second, actor calls per second (medians over `--rounds`),
/// the head's CPU per task and its memory afterwards.
fn measure_figures(args: &SchedulingArgs, head: &HeadProcess) -> anyhow::Result<Figures> {
    let (tasks_per_s, head_cpu_per_1000_tasks) = measure_tasks(args, head)?;

    let spread = SchedulingStrategy::Spread;
    let actors = (0..args.call_actors)
        .map(|_| {
            SimulatedActor::options()
                .resource(ACTOR_SLOT, 1.0)
                .scheduling_strategy(spread.clone())
                .remote()
        })
        .collect::<oxray_core::Result<Vec<_>>>()?;
    let constructed: Vec<_> = actors.iter().map(|a| a.ping()).collect();
    oxray_core::get_all(&constructed)?;
    let calls_per_s = median_rate(args.rounds, args.calls, || {
        let calls: Vec<_> = (0..args.calls)
            .map(|i| actors[i % actors.len()].ping())
            .collect();
        oxray_core::get_all(&calls)?;
        Ok(())
    })?;
    for actor in &actors {
        oxray_core::kill(actor)?;
    }
    Ok(Figures {
        tasks_per_s,
        calls_per_s,
        head_cpu_per_1000_tasks,
        memory: head.memory()?,
    })
}

/// Creates and kills `args.actors` actors, `args.batch` at a time, each
/// constructed (its first call answered) before it is killed: the seconds
/// it took, and the head's memory halfway.
fn churn_actors(args: &SchedulingArgs, head: &HeadProcess) -> anyhow::Result<(f64, Memory)> {
    let started = Instant::now();
    let mut left = args.actors;
    let mut halfway = head.memory()?;
    while left > 0 {
        if left > args.actors / 2 && left - left.min(args.batch) <= args.actors / 2 {
            halfway = head.memory()?;
        }
        let batch = left.min(args.batch);
        let actors = (0..batch)
            .map(|_| SimulatedActor::options().resource(ACTOR_SLOT, 1.0).remote())
            .collect::<oxray_core::Result<Vec<_>>>()?;
        let constructed: Vec<_> = actors.iter().map(|a| a.ping()).collect();
        oxray_core::get_all(&constructed)?;
        for actor in &actors {
            oxray_core::kill(actor)?;
        }
        left -= batch;
    }
    Ok((started.elapsed().as_secs_f64(), halfway))
}

fn print_table(args: &SchedulingArgs, results: &[NodeCountResult], control: Option<&Control>) {
    let after = format!("after {} actors", args.actors);
    println!(
        "{:>6}  {:<20} {:>10} {:>14} {:>16} {:>13} {:>14}",
        "nodes",
        "when",
        "tasks/s",
        "actor calls/s",
        "head CPU s/1k",
        "head RSS MiB",
        "head peak MiB"
    );
    for r in results {
        for (when, f) in [("fresh", &r.fresh), (after.as_str(), &r.after)] {
            println!(
                "{:>6}  {:<20} {:>10.0} {:>14.0} {:>16.3} {:>13.1} {:>14.1}",
                r.nodes,
                when,
                f.tasks_per_s,
                f.calls_per_s,
                f.head_cpu_per_1000_tasks,
                f.memory.rss_mib,
                f.memory.peak_mib
            );
        }
    }
    for r in results {
        println!(
            "{} nodes: tasks ran on {}/{} nodes ({}..{} per node), actor calls on {} nodes; {} actors created and killed in {:.1} s ({:.0}/s), head RSS halfway {:.1} MiB",
            r.nodes,
            r.nodes_with_tasks,
            r.nodes,
            r.tasks_per_node.0,
            r.tasks_per_node.1,
            r.nodes_with_calls,
            args.actors,
            r.churn_seconds,
            args.actors as f64 / r.churn_seconds,
            r.halfway.rss_mib
        );
    }
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    if let (Some(first), Some(last)) = (results.first(), results.last()) {
        if last.nodes > first.nodes {
            let ratio = last.fresh.tasks_per_s / first.fresh.tasks_per_s;
            println!(
                "goal: tasks/s at {} nodes >= 0.8x at {} nodes: {ratio:.2}x ({})",
                last.nodes,
                first.nodes,
                verdict(ratio >= 0.8)
            );
        }
    }
    if let (Some(control), Some(largest)) = (control, results.iter().max_by_key(|r| r.nodes)) {
        // With more CPUs than tasks in flight each task takes a free CPU on
        // a worker of its own instead of queueing behind a busy one: fewer
        // tasks per message and per lease, whatever the number of nodes.
        println!(
            "control: 1 node with {} CPUs (the {} nodes' together): {:.0} tasks/s, head CPU {:.3} s/1k; tasks/s at {} nodes / control: {:.2}x (what the node count costs at equal capacity)",
            control.cpus,
            largest.nodes,
            control.tasks_per_s,
            control.head_cpu_per_1000_tasks,
            largest.nodes,
            largest.fresh.tasks_per_s / control.tasks_per_s
        );
    }
    for r in results {
        let cpu = r.after.head_cpu_per_1000_tasks / r.fresh.head_cpu_per_1000_tasks;
        let rss = r.after.memory.rss_mib / r.fresh.memory.rss_mib;
        println!(
            "goal: head CPU per task and RSS flat after {} actors ({} nodes): CPU {cpu:.2}x, RSS {rss:.2}x ({}, within 1.2x)",
            args.actors,
            r.nodes,
            verdict(cpu <= 1.2 && rss <= 1.2)
        );
    }
}
