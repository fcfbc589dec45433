//! `oxray symmetric-run`: one command for every task of a single `srun`, as
//! Ray's `ray symmetric-run` is.
//!
//!     srun --ntasks-per-node=1 oxray symmetric-run --address HEAD_IP:PORT \
//!         --min-nodes "$SLURM_JOB_NUM_NODES" -- oxray train cfg.yaml --address HEAD_IP:PORT
//!
//! **Which task is the head:** the one with `SLURM_PROCID=0` (a process
//! started outside `srun`, without `SLURM_PROCID`, is a head too, so a lone
//! run works). SLURM places task 0 on the first node of the allocation, so
//! `--address` must name that node. The head listens at `--address` (or at
//! `--node-ip-address` with the port of `--address`), waits until
//! `--min-nodes` nodes, itself included, are alive, runs CMD with
//! `OXRAY_ADDRESS` and `OXRAY_TOKEN` exported, stops the cluster and exits
//! with CMD's status (128 + N when a signal N ended it).
//!
//! Every other task waits for the head to answer, joins it as a node daemon
//! and blocks until the head goes away, then exits 0.
//!
//! All tasks must share one token (`--token-file`, `--token` or `OXRAY_TOKEN`); only a lone
//! head (`--min-nodes 1`) may make its own. The head and node daemons are the
//! ones `oxray start` runs (`oxray_core::daemon`), inside this process.

use anyhow::{bail, Context};
use clap::Args;
use oxray_core::daemon::{self, HeadOptions, NodeDaemonOptions};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// The variable drivers and node daemons read the cluster token from.
const TOKEN_ENV: &str = "OXRAY_TOKEN";

/// How often the head's node count and a joining node's view of the head are
/// polled while waiting.
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Args)]
pub struct SymmetricRunArgs {
    /// HOST:PORT of the head; the task with SLURM_PROCID=0 starts it there.
    #[arg(long)]
    address: String,
    /// Nodes, the head included, that must be alive before CMD runs.
    #[arg(long, default_value_t = 1)]
    min_nodes: usize,
    /// Address this node listens on and others reach it at [default: the
    /// head's address on the head; elsewhere the local address that routes to
    /// the head].
    #[arg(long)]
    node_ip_address: Option<String>,
    #[command(flatten)]
    resources: super::cluster::NodeResources,
    /// The cluster token shared by every task (--token-file, --token or
    /// OXRAY_TOKEN).
    #[command(flatten)]
    token: super::cluster::TokenArgs,
    /// Seconds to wait for the head to answer and for --min-nodes to be alive.
    #[arg(long, default_value_t = 300.0)]
    timeout: f64,
    /// Seconds without a heartbeat after which the head declares a node dead.
    #[arg(long, default_value_t = 6.0)]
    heartbeat_timeout_s: f64,
    /// The command the head runs once the cluster is up.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

pub fn run(args: SymmetricRunArgs) -> anyhow::Result<()> {
    if args.min_nodes == 0 {
        bail!("--min-nodes must be at least 1 (the head counts)");
    }
    if !(args.timeout >= 0.0 && args.timeout.is_finite()) {
        bail!("--timeout must be a number of seconds >= 0");
    }
    if !(args.heartbeat_timeout_s > 0.0 && args.heartbeat_timeout_s.is_finite()) {
        bail!("--heartbeat-timeout-s must be a positive number of seconds");
    }
    let token = args.token.given()?;
    // The head passes SIGUSR1 on to CMD; a node waits for the head to go.
    super::interrupt::outlive_stop_requests().context("cannot handle SIGUSR1")?;
    if is_head()? {
        let code = run_head(&args, token)?;
        if code != 0 {
            std::process::exit(code);
        }
        Ok(())
    } else {
        let token = token.context(
            "every task needs the cluster's token: pass --token-file or export OXRAY_TOKEN \
             (the same value for all tasks of the srun)",
        )?;
        run_node(&args, token)
    }
}

/// The rule: `SLURM_PROCID=0`, or no `SLURM_PROCID` at all, is the head.
fn is_head() -> anyhow::Result<bool> {
    match std::env::var("SLURM_PROCID") {
        Err(std::env::VarError::NotPresent) => Ok(true),
        Err(std::env::VarError::NotUnicode(_)) => bail!("SLURM_PROCID is not valid text"),
        Ok(id) => {
            let id: u64 = id
                .trim()
                .parse()
                .with_context(|| format!("SLURM_PROCID must be a task number, got {id:?}"))?;
            Ok(id == 0)
        }
    }
}

/// `--address` resolved, an IPv4 address first when the name has both.
fn resolve(address: &str) -> anyhow::Result<SocketAddr> {
    let addresses: Vec<SocketAddr> = address
        .to_socket_addrs()
        .with_context(|| format!("--address {address} is not HOST:PORT of a known host"))?
        .collect();
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or(addresses.first())
        .copied()
        .with_context(|| format!("--address {address} resolves to no address"))
}

fn parse_ip(ip: &str) -> anyhow::Result<IpAddr> {
    ip.parse()
        .with_context(|| format!("--node-ip-address {ip} is not an IP address"))
}

fn run_head(args: &SymmetricRunArgs, token: Option<String>) -> anyhow::Result<i32> {
    if token.is_none() && args.min_nodes > 1 {
        bail!(
            "other tasks cannot join without the token: pass --token-file or export OXRAY_TOKEN \
             (the same value for all tasks of the srun)"
        );
    }
    let wanted = resolve(&args.address)?;
    let bind = match &args.node_ip_address {
        Some(ip) => SocketAddr::new(parse_ip(ip)?, wanted.port()),
        None => wanted,
    };
    let resources = args.resources.options()?;
    let head = daemon::Head::start(HeadOptions {
        bind,
        resources,
        token,
        heartbeat_timeout: Duration::from_secs_f64(args.heartbeat_timeout_s),
        dead_actors_kept: daemon::DEFAULT_DEAD_ACTORS_KEPT,
    })
    .with_context(|| {
        format!(
            "task 0 (SLURM_PROCID=0) starts the head at {bind}: is it running on the host \
             --address names, and is the port free?"
        )
    })?;
    let address = head.address.to_string();
    eprintln!("oxray head ready at {address}");

    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
    loop {
        let alive = head.status().nodes.iter().filter(|n| n.alive).count();
        if alive >= args.min_nodes {
            eprintln!("oxray: {alive} node(s) alive; running {}", args.command[0]);
            break;
        }
        if Instant::now() >= deadline {
            forget_session(&address);
            bail!(
                "only {alive} of {} nodes alive after {} s; the cluster is stopped",
                args.min_nodes,
                args.timeout
            );
        }
        std::thread::sleep(POLL);
    }

    let status = run_command(&args.command, &address, &head.token);
    drop(head);
    forget_session(&address);
    let status = status?;
    Ok(exit_code(status))
}

/// Runs CMD with the cluster's address and token exported; a SIGTERM or
/// SIGINT sent to this process is passed on to it as SIGTERM, a SIGUSR1
/// (a batch system's warning before a time limit) as SIGUSR1.
fn run_command(command: &[String], address: &str, token: &str) -> anyhow::Result<ExitStatus> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .env("OXRAY_ADDRESS", address)
        .env(TOKEN_ENV, token)
        .spawn()
        .with_context(|| format!("cannot run {}", command[0]))?;
    let pid = child.id() as i32;
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            let (Ok(mut terminate), Ok(mut stop_request)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::user_defined1()),
            ) else {
                return;
            };
            loop {
                let passed_on = tokio::select! {
                    _ = terminate.recv() => libc::SIGTERM,
                    _ = tokio::signal::ctrl_c() => libc::SIGTERM,
                    _ = stop_request.recv() => libc::SIGUSR1,
                };
                // SAFETY: signals the child this process started and still waits for.
                unsafe { libc::kill(pid, passed_on) };
                if passed_on == libc::SIGTERM {
                    break;
                }
            }
        });
    });
    child
        .wait()
        .with_context(|| format!("waiting for {}", command[0]))
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}

/// Removes the session directory's address and token once this head is gone,
/// unless another head has written its own since.
fn forget_session(address: &str) {
    let Ok(dir) = daemon::session_dir() else {
        return;
    };
    if daemon::find_head_address().is_ok_and(|a| a == address) {
        for file in ["head_address", "token"] {
            let _ = std::fs::remove_file(dir.join(file));
        }
    }
}

fn run_node(args: &SymmetricRunArgs, token: String) -> anyhow::Result<()> {
    let head = resolve(&args.address)?;
    let head_address = args.address.clone();
    // Wait until the head answers: the tasks of one srun start in any order.
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
    loop {
        match daemon::cluster_status(&head_address, &token) {
            Ok(_) => break,
            // The head answered but refused us (a wrong token): waiting won't help.
            Err(e) if e.to_string().contains("refused the connection") => {
                return Err(e).context("joining the cluster");
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| {
                    format!(
                        "the head at {head_address} did not answer within {} s (it is started \
                         by the task with SLURM_PROCID=0)",
                        args.timeout
                    )
                });
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
    let node_ip = match &args.node_ip_address {
        Some(ip) => parse_ip(ip)?,
        None => daemon::route_to(head)
            .with_context(|| format!("no route to the head at {head}; pass --node-ip-address"))?,
    };
    let resources = args.resources.options()?;
    let served = daemon::run_node_daemon(
        NodeDaemonOptions {
            head_address: head_address.clone(),
            token,
            node_ip: node_ip.to_string(),
            resources,
            // The head leaving is how the job ends: no point waiting for it.
            head_reconnect_timeout: Duration::ZERO,
        },
        |node_id| eprintln!("oxray node {node_id} ready, joined {head_address}"),
    );
    match served {
        Ok(()) | Err(oxray_core::Error::HeadUnreachable { .. }) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
    }
}
