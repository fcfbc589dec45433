//! `oxray bench heartbeats`: what a head spends on a large cluster.
//!
//! A real head runs as its own process (so its CPU time can be read from
//! `/proc`), a thousand simulated nodes register with it over the real
//! protocol and heartbeat once a second, and meanwhile this process, joined as
//! a driver, measures the round trip of trivial tasks through the head. The
//! report: the head's share of one core, task latency percentiles, and whether
//! any node was wrongly declared dead.

use super::bench_head::HeadProcess;
use anyhow::bail;
use oxray_core::daemon;
use oxray_core::simulated_node::{SimulatedNodeOptions, SimulatedNodes};
use oxray_core::{remote, InitOptions};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct HeartbeatArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Seconds to measure after all nodes registered.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Heartbeat period of each simulated node, in seconds.
    #[arg(long, default_value_t = 1.0)]
    period: f64,
}

/// The cheapest task there is: its round trip is the scheduling latency.
#[remote]
fn ping() -> u8 {
    1
}

pub fn run(args: &HeartbeatArgs) -> anyhow::Result<()> {
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if args.nodes == 0 || !positive(args.seconds) || !positive(args.period) {
        bail!("--nodes, --seconds and --period must be positive");
    }
    let head = HeadProcess::start(&["--num-cpus", "1"])?;
    let (address, token) = (head.address.clone(), head.token.clone());
    let started = Instant::now();
    let options = SimulatedNodeOptions {
        count: args.nodes,
        heartbeat_period: Duration::from_secs_f64(args.period),
        resources: Default::default(),
    };
    let nodes = SimulatedNodes::start(&address, &token, &options)?;
    println!(
        "{} simulated nodes registered in {:.2} s",
        args.nodes,
        started.elapsed().as_secs_f64()
    );
    oxray_core::init(InitOptions::default().address(&address).token(&token))?;
    ping::remote().get()?;

    let cpu_before = head.cpu_seconds()?;
    let window = Duration::from_secs_f64(args.seconds);
    let window_start = Instant::now();
    let mut latencies = Vec::new();
    while window_start.elapsed() < window {
        let sent = Instant::now();
        ping::remote().get()?;
        latencies.push(sent.elapsed().as_secs_f64() * 1e6);
        // Paced, so the figure is the heartbeats' cost plus light traffic,
        // not a saturated task loop.
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = window_start.elapsed().as_secs_f64();
    let cpu = head.cpu_seconds()? - cpu_before;
    let status = daemon::cluster_status(&address, &token)?;
    let dead = status.nodes.iter().filter(|n| !n.alive).count();
    let alive = status.nodes.len() - dead;
    drop(nodes);
    oxray_core::shutdown();
    drop(head);

    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "head CPU: {:.2} % of one core over {elapsed:.1} s ({} heartbeats/s)",
        100.0 * cpu / elapsed,
        (args.nodes as f64 / args.period).round()
    );
    println!(
        "task round trip through the head ({} tasks): p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        latencies.len(),
        percentile(0.5),
        percentile(0.99),
        percentile(1.0)
    );
    println!(
        "nodes alive at the end: {alive} (the head's own included), falsely declared dead: {dead}"
    );
    if dead > 0 {
        bail!("{dead} simulated nodes were declared dead while heartbeating");
    }
    Ok(())
}
