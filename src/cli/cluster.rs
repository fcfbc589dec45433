//! `oxray start`, `oxray stop` and `oxray status`: running a
//! cluster by hand or under SLURM, as `ray start` / `ray stop` / `ray status`
//! do.
//!
//! Without `--block`, `start` re-executes itself with `--block` in a new
//! session (so it outlives the terminal), waits for the daemon's one "ready"
//! line on a pipe, prints it and returns: the caller knows the daemon serves
//! when the command ends. The daemon's logs go to the session directory.

use anyhow::{bail, Context};
use clap::Args;
use oxray_core::daemon::{self, HeadOptions, NodeDaemonOptions, TOKEN_ENV};
use oxray_core::{ClusterStatus, InitOptions};
use std::io::BufRead;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Start the head of a new cluster on this machine.
    #[arg(long, conflicts_with = "address", required_unless_present = "address")]
    head: bool,
    /// Join the cluster whose head listens at HOST:PORT.
    #[arg(long)]
    address: Option<String>,
    /// Port of the head.
    #[arg(long, default_value_t = 6379)]
    port: u16,
    /// Address this node binds and advertises (default: a head takes the
    /// address of the default route's interface, a node the address that
    /// routes to the head; 127.0.0.1 only on a machine with no route).
    #[arg(long)]
    node_ip_address: Option<String>,
    #[command(flatten)]
    resources: NodeResources,
    #[command(flatten)]
    token: TokenArgs,
    /// Serve the dashboard, the Jobs API and /metrics from the head.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    include_dashboard: bool,
    /// Port of the dashboard (on --node-ip-address; 0 picks a free one).
    #[arg(long, default_value_t = oxray_dashboard::DEFAULT_PORT)]
    dashboard_port: u16,
    /// Seconds without a heartbeat after which the head declares a node dead.
    #[arg(long, default_value_t = 6.0)]
    heartbeat_timeout_s: f64,
    /// Dead actors the head keeps for `oxray list actors`; the oldest beyond
    /// this are forgotten (Ray's maximum_gcs_destroyed_actor_cached_count).
    #[arg(long, default_value_t = daemon::DEFAULT_DEAD_ACTORS_KEPT)]
    dead_actors_kept: usize,
    /// Seconds a node keeps trying to reach a lost head before it exits.
    #[arg(long, default_value_t = 60.0)]
    head_reconnect_timeout: f64,
    /// Bound in bytes of this node's cache of executables shipped through the
    /// head; a larger executable is refused.
    #[arg(long, default_value_t = oxray_core::DEFAULT_EXECUTABLE_CACHE_BYTES)]
    executable_cache_bytes: u64,
    /// Stay in the foreground instead of detaching.
    #[arg(long)]
    block: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Head address (default: the cluster started on this machine).
    #[arg(long)]
    address: Option<String>,
    #[command(flatten)]
    token: TokenArgs,
    /// Wait until this many nodes are alive.
    #[arg(long)]
    wait_nodes: Option<usize>,
    /// Seconds to wait for --wait-nodes.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
}

/// Where the cluster token comes from: `--token-file` (kept out of `ps`, as a
/// command-line `--token` is not), `--token`, then `OXRAY_TOKEN`, then the
/// session directory (for processes on the head's machine).
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// File holding the cluster token (private to you: mode 0600).
    #[arg(long, value_name = "PATH", conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,
    /// Cluster token. Visible to every local user in `ps`: prefer
    /// --token-file or OXRAY_TOKEN.
    #[arg(long)]
    token: Option<String>,
}

impl TokenArgs {
    /// The token given on the command line or in `OXRAY_TOKEN`, if any.
    pub fn given(&self) -> anyhow::Result<Option<String>> {
        if let Some(path) = &self.token_file {
            return Ok(Some(daemon::read_token_file(path)?));
        }
        Ok(self
            .token
            .clone()
            .or_else(|| std::env::var(TOKEN_ENV).ok())
            .filter(|token| !token.is_empty()))
    }

    /// The token to present: given, else the session directory's.
    pub fn resolve(&self) -> anyhow::Result<String> {
        match self.given()? {
            Some(token) => Ok(token),
            None => Ok(daemon::find_token()?),
        }
    }
}

/// The resource flags a node is started with (`oxray start` and
/// `oxray symmetric-run`).
#[derive(Debug, Args)]
pub struct NodeResources {
    /// CPUs this node offers (default: all cores).
    #[arg(long)]
    num_cpus: Option<f64>,
    /// GPUs this node offers (default: detected).
    #[arg(long)]
    num_gpus: Option<f64>,
    /// Custom resources as a JSON object, e.g. '{"accelerator": 2}'.
    #[arg(long)]
    resources: Option<String>,
    /// Bytes of objects this node keeps in shared memory before it spills
    /// the oldest to disk under the session directory (default: 30% of RAM).
    #[arg(long, value_name = "BYTES")]
    object_store_memory: Option<u64>,
}

impl NodeResources {
    pub fn options(&self) -> anyhow::Result<InitOptions> {
        let mut options = InitOptions::default();
        if let Some(n) = self.num_cpus {
            options = options.num_cpus(n);
        }
        if let Some(n) = self.num_gpus {
            options = options.num_gpus(n);
        }
        if let Some(bytes) = self.object_store_memory {
            if bytes < oxray_core::MIN_OBJECT_STORE_MEMORY {
                bail!(
                    "--object-store-memory must be at least {} bytes, got {bytes}",
                    oxray_core::MIN_OBJECT_STORE_MEMORY
                );
            }
            options = options.object_store_memory(bytes);
        }
        let Some(json) = &self.resources else {
            return Ok(options);
        };
        let custom: std::collections::BTreeMap<String, f64> = serde_json::from_str(json)
            .with_context(|| format!("--resources must be a JSON object of numbers, got {json}"))?;
        for (name, amount) in custom {
            if !(amount >= 0.0 && amount.is_finite()) {
                bail!("--resources: {name} must be a finite number >= 0, got {amount}");
            }
            options = options.resource(name, amount);
        }
        Ok(options)
    }
}

/// Runs `oxray start ARGS --block` as a child with its own session directory
/// and returns it once it printed its ready line (split into words).
pub(crate) fn spawn_daemon(
    args: &[&str],
    session: &std::path::Path,
    envs: &[(&str, &str)],
) -> anyhow::Result<(std::process::Child, Vec<String>)> {
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .arg("start")
        .args(args)
        .arg("--block")
        .env("OXRAY_SESSION_DIR", session)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    for (name, value) in envs {
        command.env(name, value);
    }
    // Should this process die without stopping the daemon (killed
    // outright), the daemon still stops its workers and removes its shared
    // memory.
    terminate_with_this_process(&mut command);
    let mut daemon = command.spawn().context("cannot start an oxray daemon")?;
    let mut ready = String::new();
    let stdout = daemon.stdout.take().context("daemon stdout")?;
    std::io::BufReader::new(stdout).read_line(&mut ready)?;
    if !ready.contains("ready") {
        let _ = daemon.kill();
        bail!("the daemon did not start: {ready:?}");
    }
    Ok((
        daemon,
        ready.split_whitespace().map(str::to_string).collect(),
    ))
}

/// Has the child `command` starts get SIGTERM (what `oxray stop` sends) when
/// this process dies, whatever the way, so it can clean up after itself.
/// The signal follows the thread that forks: call it from one that lives as
/// long as the child should.
pub(crate) fn terminate_with_this_process(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

/// Stops a daemon started by [`spawn_daemon`] as `oxray stop` does: SIGTERM,
/// so it stops its workers and removes its shared-memory and spill files
/// (SIGKILL would leave them behind), then SIGKILL if it is still there
/// after a few seconds.
pub(crate) fn stop_daemon(daemon: &mut std::process::Child) {
    if let Ok(Some(_)) = daemon.try_wait() {
        return;
    }
    // SAFETY: signals a child this process started and has not reaped.
    unsafe { libc::kill(daemon.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = daemon.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
}

pub fn start(args: StartArgs) -> anyhow::Result<()> {
    if !(args.heartbeat_timeout_s > 0.0 && args.heartbeat_timeout_s.is_finite()) {
        bail!("--heartbeat-timeout-s must be a positive number of seconds");
    }
    if !(args.head_reconnect_timeout >= 0.0 && args.head_reconnect_timeout.is_finite()) {
        bail!("--head-reconnect-timeout must be a number of seconds >= 0");
    }
    let resources = args
        .resources
        .options()?
        .executable_cache_bytes(args.executable_cache_bytes);
    let node_ip: Option<std::net::IpAddr> = args
        .node_ip_address
        .as_deref()
        .map(|ip| {
            ip.parse()
                .with_context(|| format!("--node-ip-address {ip} is not an IP address"))
        })
        .transpose()?;
    if !args.block {
        return detach();
    }
    // A batch system's SIGUSR1 (`srun --signal=USR1@SECONDS`) is for the
    // driver, which needs this node until its iteration ends.
    super::interrupt::outlive_stop_requests().context("cannot handle SIGUSR1")?;
    if args.head {
        let ip = node_ip.unwrap_or_else(daemon::default_node_ip);
        let bind = std::net::SocketAddr::new(ip, args.port);
        let head = std::sync::Arc::new(daemon::Head::start(HeadOptions {
            bind,
            resources,
            token: args.token.given()?,
            heartbeat_timeout: Duration::from_secs_f64(args.heartbeat_timeout_s),
            dead_actors_kept: args.dead_actors_kept,
        })?);
        let dashboard = args
            .include_dashboard
            .then(|| start_dashboard(&head, bind.ip(), args.dashboard_port))
            .flatten();
        daemon::record_pid("head")?;
        let dashboard_words = dashboard
            .as_ref()
            .map_or_else(String::new, |d| format!(" dashboard {}", d.url()));
        // Output and logs may be readable by others (a SLURM job's output
        // file, say): name the private file that holds the token, never it.
        let token_file = daemon::token_file()?;
        println!(
            "oxray head ready at {} token-file {}{dashboard_words}",
            head.address,
            token_file.display()
        );
        eprintln!(
            "join other nodes with: oxray start --address {} --token-file FILE (a private copy of {})",
            head.address,
            token_file.display()
        );
        wait_for_termination()?;
        // The dashboard first: it stops the jobs' drivers while their
        // cluster is still there.
        drop(dashboard);
        drop(head);
        return Ok(());
    }
    let head_address = args
        .address
        .clone()
        .context("--address is required without --head")?;
    let token = args.token.resolve()?;
    let node_ip = match node_ip {
        Some(ip) => ip,
        None => {
            let head = std::net::ToSocketAddrs::to_socket_addrs(&head_address)
                .with_context(|| format!("--address {head_address} is not HOST:PORT"))?
                .next()
                .with_context(|| format!("--address {head_address} resolves to no address"))?;
            daemon::route_to(head).with_context(|| {
                format!("no route to the head at {head}; pass --node-ip-address")
            })?
        }
    };
    daemon::record_pid("node")?;
    let options = NodeDaemonOptions {
        head_address: head_address.clone(),
        token,
        node_ip: node_ip.to_string(),
        resources,
        head_reconnect_timeout: Duration::from_secs_f64(args.head_reconnect_timeout),
    };
    daemon::run_node_daemon(options, |node_id| {
        println!("oxray node {node_id} ready, joined {head_address}");
    })?;
    Ok(())
}

/// Serves the dashboard next to the head; a port already taken leaves the
/// cluster running without it (as Ray's head does), with a warning in the log.
fn start_dashboard(
    head: &std::sync::Arc<daemon::Head>,
    ip: std::net::IpAddr,
    port: u16,
) -> Option<oxray_dashboard::Dashboard> {
    let weak = std::sync::Arc::downgrade(head);
    let status: oxray_dashboard::StatusSource = {
        let weak = weak.clone();
        std::sync::Arc::new(move || weak.upgrade().map(|h| h.status()).unwrap_or_default())
    };
    let nodes: oxray_dashboard::NodesSource = std::sync::Arc::new(move || {
        weak.upgrade()
            .map(|h| h.node_statuses())
            .unwrap_or_default()
    });
    let started = oxray_dashboard::Dashboard::start(oxray_dashboard::DashboardOptions {
        bind: std::net::SocketAddr::new(ip, port),
        token: head.token.clone(),
        head_address: head.address.to_string(),
        log_dir: daemon::session_subdir("logs").ok()?,
        packages_dir: daemon::session_dir().ok()?.join("job_packages"),
        status,
        nodes,
    });
    match started {
        Ok(dashboard) => {
            let written = daemon::session_dir().and_then(|dir| {
                daemon::write_private_file(&dir.join(DASHBOARD_ADDRESS_FILE), &dashboard.url())
            });
            if let Err(e) = written {
                eprintln!("oxray: cannot record the dashboard's address: {e}");
            }
            eprintln!("dashboard, Jobs API and /metrics at {}", dashboard.url());
            Some(dashboard)
        }
        Err(e) => {
            eprintln!("oxray: warning: the dashboard is not served: {e}");
            None
        }
    }
}

/// Where the head records its dashboard's URL for `oxray job`.
pub(crate) const DASHBOARD_ADDRESS_FILE: &str = "dashboard_address";

/// Runs this same command with `--block` in the background and returns once
/// the daemon says it is ready.
fn detach() -> anyhow::Result<()> {
    let dir = daemon::session_subdir("logs")?;
    let log_path = dir.join(format!("start-{}.log", std::process::id()));
    let log = daemon::create_private_file(&log_path)?;
    let exe = std::env::current_exe().context("cannot find the oxray executable")?;
    let mut command = std::process::Command::new(exe);
    command
        .args(std::env::args_os().skip(1))
        .arg("--block")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from this
    // terminal's session so it outlives it.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command.spawn().context("cannot start the daemon")?;
    let stdout = child.stdout.take().context("daemon has no stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading the daemon's ready line")?;
    if line.trim().is_empty() {
        let status = child.wait().context("waiting for the daemon")?;
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        // Its log ends with the daemon's own `error: ...` line; this one
        // says `error:` already.
        let log = log.trim();
        let reason = log.strip_prefix("error: ").unwrap_or(log);
        bail!("the daemon exited before it was ready ({status}): {reason}");
    }
    println!("{}", line.trim());
    println!("logs: {}", log_path.display());
    Ok(())
}

fn wait_for_termination() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(())
    })
}

pub fn stop() -> anyhow::Result<()> {
    let dir = daemon::session_subdir("pids")?;
    let Ok(entries) = std::fs::read_dir(&dir) else {
        daemon::remove_executable_caches();
        println!("no oxray processes started on this machine");
        return Ok(());
    };
    let mut stopped = 0;
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: signals a process this machine's `oxray start` recorded;
        // SIGCONT lets a stopped one handle the SIGTERM.
        if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
            unsafe { libc::kill(pid, libc::SIGCONT) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while daemon::process_alive(pid as u32) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: as above; makes sure a process that ignored SIGTERM ends.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            stopped += 1;
        }
        let _ = std::fs::remove_file(entry.path());
    }
    let session = daemon::session_dir()?;
    for file in ["head_address", "token", DASHBOARD_ADDRESS_FILE] {
        let _ = std::fs::remove_file(session.join(file));
    }
    daemon::remove_executable_caches();
    println!("stopped {stopped} oxray process(es)");
    let orphans = daemon::remove_orphaned_shared_memory();
    if orphans > 0 {
        println!("removed {orphans} shared-memory file(s) of oxray processes that died");
    }
    let spilled = daemon::remove_orphaned_spill_files();
    if spilled > 0 {
        println!("removed {spilled} spill file(s) of oxray processes that died");
    }
    Ok(())
}

pub(crate) fn connect(args: &StatusArgs) -> anyhow::Result<(String, String)> {
    let address = match &args.address {
        Some(address) => address.clone(),
        None => daemon::find_head_address()?,
    };
    Ok((address, args.token.resolve()?))
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let (address, token) = connect(&args)?;
    let mut state = daemon::cluster_status(&address, &token)?;
    if let Some(wanted) = args.wait_nodes {
        let deadline = Instant::now() + Duration::from_secs_f64(args.timeout.max(0.0));
        while alive(&state) < wanted {
            if Instant::now() >= deadline {
                bail!(
                    "only {} of {wanted} nodes alive after {} s",
                    alive(&state),
                    args.timeout
                );
            }
            std::thread::sleep(Duration::from_millis(200));
            state = daemon::cluster_status(&address, &token)?;
        }
    }
    print_status(&address, &state);
    Ok(())
}

fn alive(state: &ClusterStatus) -> usize {
    state.nodes.iter().filter(|n| n.alive).count()
}

fn print_status(address: &str, state: &ClusterStatus) {
    let dead = state.nodes.len() - alive(state);
    println!("cluster at {address}");
    println!("nodes: {} alive, {dead} dead", alive(state));
    for node in &state.nodes {
        let role = if node.is_head { " (head)" } else { "" };
        let liveness = if node.alive { "ALIVE" } else { "DEAD" };
        println!(
            "  {}{role} {} {liveness} used {} of {}",
            node.node_id,
            node.address,
            used(node),
            node.total
        );
        println!(
            "    object store {} of {}, {} spilled ({} objects, {} since joining)",
            mib(node.object_store_bytes),
            mib(node.object_store_capacity_bytes),
            mib(node.spilled_bytes),
            node.spilled_objects_total,
            mib(node.spilled_bytes_total)
        );
    }
    let running = state.jobs.iter().filter(|j| j.running).count();
    println!("jobs: {} ({running} running)", state.jobs.len());
    let alive_actors = state.actors.iter().filter(|a| a.state != "DEAD").count();
    println!("actors: {} ({alive_actors} alive)", state.actors.len());
    println!(
        "tasks: {} pending, {} running",
        state.pending_tasks, state.running_tasks
    );
    let group_demands = placement_group_demands(&state.placement_groups);
    if state.demands.is_empty() && group_demands.is_empty() {
        println!("demands: none");
    } else {
        println!("demands (waiting for resources):");
        for demand in &state.demands {
            println!(
                "  {}: {} pending tasks/actors",
                demand.request, demand.pending
            );
        }
        for line in group_demands {
            println!("  {line}");
        }
    }
    println!("objects: {}", state.objects);
    let pending = state
        .placement_groups
        .iter()
        .filter(|g| g.state == "PENDING")
        .count();
    println!(
        "placement groups: {} ({pending} pending)",
        state.placement_groups.len()
    );
    for group in &state.placement_groups {
        println!("  {} {:?} {}", group.id, group.strategy, group.state);
    }
}

/// The pending placement groups among the demands, as `ray status` lists
/// them: counted by their bundles and strategy, e.g. `{CPU: 1} * 3
/// (StrictPack): 1 pending placement groups`.
fn placement_group_demands(groups: &[oxray_core::PlacementGroupLine]) -> Vec<String> {
    let mut pending: std::collections::BTreeMap<String, usize> = Default::default();
    for group in groups.iter().filter(|g| g.state == "PENDING") {
        let bundles = oxray_core::describe_bundles(group.bundles.iter().map(|(bundle, _)| bundle));
        *pending
            .entry(format!("{bundles} ({:?})", group.strategy))
            .or_default() += 1;
    }
    pending
        .into_iter()
        .map(|(demand, count)| format!("{demand}: {count} pending placement groups"))
        .collect()
}

/// `bytes` in MiB, as `oxray status` shows object store figures.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

fn used(node: &oxray_core::NodeStatus) -> String {
    let mut used = oxray_core::ResourceSet::default();
    for (name, total) in &node.total.0 {
        used.set(name, total - node.available.get(name));
    }
    used.to_string()
}
