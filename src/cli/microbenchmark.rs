//! `oxray microbenchmark`: throughput of the core's basic operations (put, get,
//! wait, tasks, actor calls), measured the way Ray's `ray microbenchmark`
//! measures them so the two sets of figures can be read side by side.
//!
//! Each metric keeps Ray's name, loop shape and batch multiplier (Ray's
//! `python/ray/_private/ray_perf.py`): a warm-up of 1 s, then timed rounds of
//! about 2 s, each round's calls per second times the multiplier giving one
//! sample; the line printed is `<name> per second <mean> +- <sd>`, as Ray prints
//! it. Ray's metrics that need features oxray does not have (out-of-scope
//! callbacks) are left out.
//!
//! Two modes, named in the first line of output. Embedded (the default): this
//! process hosts the node, so get, put and placement groups are calls into it.
//! `--address HOST:PORT`: this process joins an `oxray start --head` as a
//! driver, so they are requests to the head, as a Ray driver's are to its
//! raylet and GCS. Puts are measured acknowledged by the store in both modes
//! (Ray's `ray.put` returns once plasma has the object), never as one-way
//! sends. `--compare FILE` sets the figures beside Ray's from a run made right
//! before (see `microbenchmark_compare`).

use super::cluster::TokenArgs;
use super::microbenchmark_compare::{Figure, RayFigures};
use anyhow::Context;
use oxray_core::{actor, remote, ActorHandle, InitOptions, ObjectRef, PlacementStrategy};
use serde::{Serialize, Serializer};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run only the metrics whose name contains this text (Ray's
    /// TESTS_TO_RUN); `A|B` runs those containing A or B.
    filter: Option<String>,
    /// Join the cluster whose head listens here (`oxray start --head`) as a
    /// driver, instead of hosting the node in this process.
    #[arg(long, value_name = "HOST:PORT")]
    address: Option<String>,
    #[command(flatten)]
    token: TokenArgs,
    /// Ray's figures from `scripts/peers/ray_microbenchmark.sh` (tab-separated
    /// metric, mean, sd): print each metric beside Ray's with the ratio.
    #[arg(long, value_name = "FILE")]
    compare: Option<std::path::PathBuf>,
    /// Timed rounds per metric.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Seconds per timed round; the warm-up lasts 1 s or one round, whichever
    /// is shorter.
    #[arg(long, default_value_t = 2.0)]
    round_seconds: f64,
}

/// What a driver joined by address cannot measure: it has no object server
/// of its own, so its values travel inline to the head, one message each.
const JOINED_DRIVER_GAPS: &[(&str, &str)] = &[
    (
        "single client put gigabytes",
        "a joined driver sends values inline, at most 255 MiB each",
    ),
    (
        CROSS_NODE_PUT,
        "it counts the bytes of this process's object server, which a joined driver lacks",
    ),
    (
        CROSS_NODE_GET,
        "it counts the bytes of this process's object server, which a joined driver lacks",
    ),
];

/// Ray's placement-group loop: this many groups of one tiny bundle created,
/// waited for, then removed, per call.
const PLACEMENT_GROUPS_PER_CALL: usize = 100;

/// What Ray's small tasks and actor methods return (`b"ok"`).
const SMALL_VALUE: [u8; 2] = *b"ok";

/// Ray's large put: `np.zeros(100 * 1024 * 1024, dtype=np.int64)`, counted as 0.8 GB.
const LARGE_PUT_BYTES: usize = 100 * 1024 * 1024 * 8;
const LARGE_PUT_GIGABYTES: f64 = 8.0 * 0.1;

/// Each put of Ray's multi-client large put: 10 Mi int64 zeros.
const MULTI_CLIENT_PUT_BYTES: usize = 10 * 1024 * 1024 * 8;
const PUTS_PER_CLIENT: u32 = 10;
const SMALL_PUTS_PER_CLIENT: u32 = 100;
const PUT_CLIENTS: u32 = 10;

/// Bytes moved per call of the cross-node metrics.
const CROSS_NODE_BYTES: usize = 64 * 1024 * 1024;

/// Calls per batch in the single-client batched metrics.
const BATCH: u32 = 1000;

/// A zero-filled buffer that serialises as one byte string, as a NumPy array
/// does in Ray, so put throughput measures the store rather than per-element
/// encoding.
struct ZeroBytes(Vec<u8>);

/// NumPy advises huge pages for arrays of at least this many bytes.
const NUMPY_HUGEPAGE_BYTES: usize = 4 << 20;

impl ZeroBytes {
    /// Allocated as `np.zeros` allocates: `calloc`, then for 4 MiB or more
    /// `madvise(MADV_HUGEPAGE)` from the first page boundary (NumPy's
    /// `indicate_hugepages`), so reading the untouched zeros maps the huge
    /// zero page instead of faulting once per 4 KiB page.
    fn new(len: usize) -> Self {
        let bytes = vec![0u8; len];
        if len >= NUMPY_HUGEPAGE_BYTES {
            let start = bytes.as_ptr() as usize;
            let offset = 4096 - start % 4096;
            // SAFETY: the range lies inside the buffer; the advice only
            // changes how the kernel backs its pages, never their contents.
            // Like NumPy, a kernel that refuses the advice is ignored.
            unsafe {
                libc::madvise(
                    (start + offset) as *mut libc::c_void,
                    len - offset,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
        ZeroBytes(bytes)
    }
}

impl Serialize for ZeroBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

/// The smallest useful task (Ray's `small_value`).
#[remote]
fn small_value() -> [u8; 2] {
    SMALL_VALUE
}

/// Submits `count` small tasks and waits for all of them.
fn run_small_tasks(count: u32) -> oxray_core::Result<()> {
    let refs: Vec<_> = (0..count).map(|_| small_value::remote()).collect();
    oxray_core::get_all(&refs).map(drop)
}

/// One client of the multi-client small put metric (Ray's `do_put_small`).
#[remote]
fn put_small_objects() -> oxray_core::Result<()> {
    for _ in 0..SMALL_PUTS_PER_CLIENT {
        oxray_core::put_acknowledged(&0i64)?;
    }
    Ok(())
}

/// One client of the multi-client large put metric (Ray's `do_put`).
#[remote]
fn put_large_objects() -> oxray_core::Result<()> {
    for _ in 0..PUTS_PER_CLIENT {
        oxray_core::put_acknowledged(&ZeroBytes::new(MULTI_CLIENT_PUT_BYTES))?;
    }
    Ok(())
}

/// An object holding 10k refs (Ray's `create_object_containing_ref`).
#[remote]
fn create_object_containing_refs() -> oxray_core::Result<Vec<ObjectRef<i64>>> {
    (0..10_000).map(|_| oxray_core::put(&1i64)).collect()
}

/// Calls `small_value` `count` times round-robin over `servers` (Ray's `work`).
#[remote]
fn call_servers_round_robin(servers: Servers, count: u32) -> oxray_core::Result<()> {
    let refs: Vec<_> = (0..count as usize)
        .map(|call| servers.small_value(call % servers.count()))
        .collect();
    oxray_core::get_all(&refs).map(drop)
}

/// The actors a metric calls: Ray's `Actor`s or its `AsyncActor`s.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub enum Servers {
    Threaded(Vec<ActorHandle<Server>>),
    Async(Vec<ActorHandle<AsyncServer>>),
}

impl Servers {
    /// `count` new servers of the kind `of_async` picks.
    fn create(count: usize, of_async: bool) -> anyhow::Result<Servers> {
        let created = if of_async {
            Servers::Async(
                (0..count)
                    .map(|_| AsyncServer::remote().context("creating an async server actor"))
                    .collect::<anyhow::Result<_>>()?,
            )
        } else {
            Servers::Threaded(create_servers(count)?)
        };
        Ok(created)
    }

    /// Server indices for `calls_each` calls to every server, server by
    /// server (Ray's client loop).
    fn calls_in_turn(&self, calls_each: u32) -> impl Iterator<Item = usize> {
        (0..self.count()).flat_map(move |server| (0..calls_each).map(move |_| server))
    }

    fn count(&self) -> usize {
        match self {
            Servers::Threaded(servers) => servers.len(),
            Servers::Async(servers) => servers.len(),
        }
    }

    fn small_value(&self, server: usize) -> ObjectRef<[u8; 2]> {
        match self {
            Servers::Threaded(servers) => servers[server].small_value(),
            Servers::Async(servers) => servers[server].small_value(),
        }
    }

    fn small_value_arg(&self, server: usize, arg: &ObjectRef<i64>) -> ObjectRef<[u8; 2]> {
        match self {
            Servers::Threaded(servers) => servers[server].small_value_arg(arg),
            Servers::Async(servers) => servers[server].small_value_with_arg(arg),
        }
    }

    /// One server per client, each client calling its own.
    fn one_each(self) -> Vec<Servers> {
        match self {
            Servers::Threaded(servers) => servers
                .into_iter()
                .map(|server| Servers::Threaded(vec![server]))
                .collect(),
            Servers::Async(servers) => servers
                .into_iter()
                .map(|server| Servers::Async(vec![server]))
                .collect(),
        }
    }
}

/// The actor whose methods are called (Ray's `Actor`).
pub struct Server;

#[actor]
impl Server {
    pub fn new() -> Self {
        Server
    }

    pub fn small_value(&self) -> [u8; 2] {
        SMALL_VALUE
    }

    pub fn small_value_arg(&self, _value: i64) -> [u8; 2] {
        SMALL_VALUE
    }

    /// Submits `count` small tasks from inside the actor and waits for them.
    pub fn small_value_batch(&self, count: u32) -> oxray_core::Result<()> {
        run_small_tasks(count)
    }
}

fn create_servers(count: usize) -> anyhow::Result<Vec<ActorHandle<Server>>> {
    (0..count)
        .map(|_| Server::remote().context("creating a server actor"))
        .collect()
}

/// The actor whose `async fn` methods are called (Ray's `AsyncActor`).
pub struct AsyncServer;

#[actor]
impl AsyncServer {
    pub fn new() -> Self {
        AsyncServer
    }

    pub async fn small_value(&self) -> [u8; 2] {
        SMALL_VALUE
    }

    pub async fn small_value_with_arg(&self, _value: i64) -> [u8; 2] {
        SMALL_VALUE
    }
}

/// An actor that calls servers in batches (Ray's `Client`).
pub struct Client {
    servers: Servers,
}

#[actor]
impl Client {
    pub fn new(servers: Servers) -> Self {
        Client { servers }
    }

    /// Calls `small_value` `count` times on every server, then waits.
    pub fn small_value_batch(&self, count: u32) -> oxray_core::Result<()> {
        let refs: Vec<_> = self
            .servers
            .calls_in_turn(count)
            .map(|server| self.servers.small_value(server))
            .collect();
        oxray_core::get_all(&refs).map(drop)
    }

    /// Like `small_value_batch`, passing one stored object by reference.
    pub fn small_value_batch_arg(&self, count: u32) -> oxray_core::Result<()> {
        let arg = oxray_core::put(&0i64)?;
        let refs: Vec<_> = self
            .servers
            .calls_in_turn(count)
            .map(|server| self.servers.small_value_arg(server, &arg))
            .collect();
        oxray_core::get_all(&refs).map(drop)
    }
}

/// Runs metrics with Ray's timing procedure and keeps their results.
struct Timer {
    filter: Option<String>,
    warmup: Duration,
    round: Duration,
    rounds: u32,
    /// Metrics this mode cannot measure, with the reason.
    unavailable: &'static [(&'static str, &'static str)],
    /// Each metric's mean and population standard deviation of ops/s.
    measurements: Vec<(&'static str, Figure)>,
}

impl Timer {
    /// Measures `name` if the filter selects it. `setup` creates what the
    /// metric needs (actors, objects) and returns one call of its loop body;
    /// each call counts as `multiplier` operations.
    fn timeit<Call>(
        &mut self,
        name: &'static str,
        multiplier: f64,
        setup: impl FnOnce() -> anyhow::Result<Call>,
    ) -> anyhow::Result<()>
    where
        Call: FnMut() -> oxray_core::Result<()>,
    {
        if !self.selects(name) {
            return Ok(());
        }
        let mut call = setup().with_context(|| format!("setting up {name}"))?;
        let mut call = || call().with_context(|| format!("running {name}"));
        let start = Instant::now();
        let mut warmup_calls = 0u64;
        while start.elapsed() < self.warmup {
            call()?;
            warmup_calls += 1;
        }
        // Like Ray, check the clock every tenth of the warm-up's call count.
        let step = warmup_calls / 10 + 1;
        let mut rates = Vec::with_capacity(self.rounds as usize);
        for _ in 0..self.rounds {
            let start = Instant::now();
            let mut calls = 0u64;
            while start.elapsed() < self.round {
                for _ in 0..step {
                    call()?;
                }
                calls += step;
            }
            rates.push(multiplier * calls as f64 / start.elapsed().as_secs_f64());
        }
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        let variance = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / rates.len() as f64;
        let sd = variance.sqrt();
        println!("{name} per second {mean:.2} +- {sd:.2}");
        self.measurements.push((name, Figure { mean, sd }));
        Ok(())
    }

    /// Whether the filter selects `name` and this mode can measure it.
    fn selects(&self, name: &str) -> bool {
        self.filtered_in(name) && !self.unavailable.iter().any(|(gap, _)| *gap == name)
    }

    fn filtered_in(&self, name: &str) -> bool {
        self.filter
            .as_deref()
            .is_none_or(|filter| filter.split('|').any(|f| name.contains(f)))
    }

    /// Says which selected metrics this mode leaves out, and why.
    fn print_unavailable(&self) {
        for (name, reason) in self.unavailable {
            if self.filtered_in(name) {
                println!("{name}: not measured in this mode: {reason}");
            }
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let round = Duration::try_from_secs_f64(args.round_seconds)
        .ok()
        .filter(|round| !round.is_zero())
        .context("--round-seconds must be a positive number of seconds")?;
    // A bad figures file fails before minutes of measuring.
    let ray = args.compare.as_deref().map(RayFigures::read).transpose()?;
    let mut timer = Timer {
        filter: args.filter,
        warmup: round.min(Duration::from_secs(1)),
        round,
        rounds: args.rounds,
        unavailable: if args.address.is_some() {
            JOINED_DRIVER_GAPS
        } else {
            &[]
        },
        measurements: Vec::new(),
    };
    let mode = match &args.address {
        Some(address) => {
            let token = args.token.resolve()?;
            oxray_core::init(InitOptions::default().address(address).token(&token))
                .with_context(|| format!("joining the head at {address}"))?;
            println!(
                "mode: --address {address} (a driver joined to the head: get, put and \
                 placement groups are requests to it, as in Ray)"
            );
            format!("--address {address}")
        }
        None => {
            oxray_core::init(InitOptions::default())?;
            println!(
                "mode: embedded (this process hosts the node: get, put and placement \
                 groups are calls into it, not requests to another process)"
            );
            "embedded".to_string()
        }
    };
    timer.print_unavailable();
    let outcome = run_metrics(&mut timer).and_then(|()| run_cross_node_metrics(&mut timer));
    oxray_core::shutdown();
    outcome?;
    if timer.measurements.is_empty() {
        println!("no metric matches the filter");
    } else if let Some(ray) = ray {
        ray.print_comparison(&mode, &timer.measurements);
    }
    Ok(())
}

/// Ray's metrics in Ray's order.
fn run_metrics(timer: &mut Timer) -> anyhow::Result<()> {
    // Ray runs the actor fan-out metrics with half the logical cores.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let fan_out = (cpus / 2).max(1);

    timer.timeit("single client get calls (Plasma Store)", 1.0, || {
        let value = oxray_core::put(&0i64)?;
        Ok(move || value.get().map(drop))
    })?;
    timer.timeit("single client put calls (Plasma Store)", 1.0, || {
        Ok(|| oxray_core::put_acknowledged(&0i64).map(drop))
    })?;
    timer.timeit(
        "multi client put calls (Plasma Store)",
        f64::from(PUT_CLIENTS * SMALL_PUTS_PER_CLIENT),
        || {
            Ok(|| {
                let refs: Vec<_> = (0..PUT_CLIENTS)
                    .map(|_| put_small_objects::remote())
                    .collect();
                oxray_core::get_all(&refs).map(drop)
            })
        },
    )?;
    timer.timeit("single client put gigabytes", LARGE_PUT_GIGABYTES, || {
        let array = ZeroBytes::new(LARGE_PUT_BYTES);
        Ok(move || oxray_core::put_acknowledged(&array).map(drop))
    })?;
    timer.timeit("single client tasks and get batch", 1.0, || {
        Ok(|| run_small_tasks(BATCH))
    })?;
    timer.timeit(
        "multi client put gigabytes",
        f64::from(PUT_CLIENTS) * LARGE_PUT_GIGABYTES,
        || {
            Ok(|| {
                let refs: Vec<_> = (0..PUT_CLIENTS)
                    .map(|_| put_large_objects::remote())
                    .collect();
                oxray_core::get_all(&refs).map(drop)
            })
        },
    )?;
    timer.timeit("single client get object containing 10k refs", 1.0, || {
        let object = create_object_containing_refs::remote();
        Ok(move || object.get().map(drop))
    })?;
    timer.timeit("single client wait 1k refs", 1.0, || {
        Ok(|| {
            let mut pending: Vec<_> = (0..BATCH).map(|_| small_value::remote()).collect();
            while !pending.is_empty() {
                pending = oxray_core::wait(&pending, 1, None)?.1;
            }
            Ok(())
        })
    })?;
    timer.timeit("single client tasks sync", 1.0, || {
        Ok(|| small_value::remote().get().map(drop))
    })?;
    timer.timeit("single client tasks async", f64::from(BATCH), || {
        Ok(|| run_small_tasks(BATCH))
    })?;

    let (tasks_per_client, clients) = (10_000, 4);
    timer.timeit(
        "multi client tasks async",
        f64::from(tasks_per_client * clients),
        || {
            let servers = create_servers(clients as usize)?;
            Ok(move || {
                let refs: Vec<_> = servers
                    .iter()
                    .map(|server| server.small_value_batch(tasks_per_client))
                    .collect();
                oxray_core::get_all(&refs).map(drop)
            })
        },
    )?;
    one_to_one_calls(
        timer,
        ["1:1 actor calls sync", "1:1 actor calls async"],
        false,
    )?;

    timer.timeit("1:1 actor calls concurrent", f64::from(BATCH), || {
        let server = Server::options().max_concurrency(16).remote()?;
        Ok(move || {
            let refs: Vec<_> = (0..BATCH).map(|_| server.small_value()).collect();
            oxray_core::get_all(&refs).map(drop)
        })
    })?;

    one_to_n_calls(timer, "1:n actor calls async", fan_out, false)?;
    n_to_n_calls(timer, "n:n actor calls async", fan_out, false)?;
    let calls_per_client = 1000;
    timer.timeit(
        "n:n actor calls with arg async",
        f64::from(calls_per_client) * fan_out as f64,
        || {
            let clients = Servers::create(fan_out, false)?
                .one_each()
                .into_iter()
                .map(|server| Client::remote(server).context("creating a client actor"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(move || {
                let refs: Vec<_> = clients
                    .iter()
                    .map(|client| client.small_value_batch_arg(calls_per_client))
                    .collect();
                oxray_core::get_all(&refs).map(drop)
            })
        },
    )?;

    one_to_one_calls(
        timer,
        ["1:1 async-actor calls sync", "1:1 async-actor calls async"],
        true,
    )?;
    timer.timeit(
        "1:1 async-actor calls with args async",
        f64::from(BATCH),
        || {
            let server = AsyncServer::remote()?;
            Ok(move || {
                let refs: Vec<_> = (0..i64::from(BATCH))
                    .map(|value| server.small_value_with_arg(value))
                    .collect();
                oxray_core::get_all(&refs).map(drop)
            })
        },
    )?;
    one_to_n_calls(timer, "1:n async-actor calls async", fan_out, true)?;
    n_to_n_calls(timer, "n:n async-actor calls async", fan_out, true)?;
    timer.timeit(
        "placement group create/removal",
        PLACEMENT_GROUPS_PER_CALL as f64,
        || {
            Ok(|| {
                let tiny: &[(&str, f64)] = &[("CPU", 0.001)];
                let groups = (0..PLACEMENT_GROUPS_PER_CALL)
                    .map(|_| oxray_core::placement_group(&[tiny], PlacementStrategy::Pack))
                    .collect::<oxray_core::Result<Vec<_>>>()?;
                for group in &groups {
                    group.wait(Duration::from_secs(30))?;
                }
                groups
                    .iter()
                    .try_for_each(oxray_core::remove_placement_group)
            })
        },
    )
}

/// One server called by this process: one call at a time, then batches of
/// 1,000 (Ray's "1:1 ... sync" and "1:1 ... async" metrics).
fn one_to_one_calls(
    timer: &mut Timer,
    [sync, batched]: [&'static str; 2],
    of_async: bool,
) -> anyhow::Result<()> {
    timer.timeit(sync, 1.0, || {
        let server = Servers::create(1, of_async)?;
        Ok(move || server.small_value(0).get().map(drop))
    })?;
    timer.timeit(batched, f64::from(BATCH), || {
        let server = Servers::create(1, of_async)?;
        Ok(move || {
            let refs: Vec<_> = (0..BATCH).map(|_| server.small_value(0)).collect();
            oxray_core::get_all(&refs).map(drop)
        })
    })
}

/// One client actor calling `fan_out` servers, 5,000 calls each (Ray's
/// "1:n" metrics).
fn one_to_n_calls(
    timer: &mut Timer,
    name: &'static str,
    fan_out: usize,
    of_async: bool,
) -> anyhow::Result<()> {
    let calls_per_server = 5000;
    timer.timeit(name, f64::from(calls_per_server) * fan_out as f64, || {
        let client = Client::remote(Servers::create(fan_out, of_async)?)?;
        Ok(move || client.small_value_batch(calls_per_server).get())
    })
}

/// Four tasks each making 5,000 calls round-robin over `fan_out` servers
/// (Ray's "n:n" metrics).
fn n_to_n_calls(
    timer: &mut Timer,
    name: &'static str,
    fan_out: usize,
    of_async: bool,
) -> anyhow::Result<()> {
    let (calls_per_task, tasks) = (5000, 4);
    timer.timeit(name, f64::from(calls_per_task * tasks), || {
        let servers = Servers::create(fan_out, of_async)?;
        Ok(move || {
            let refs: Vec<_> = (0..tasks)
                .map(|_| call_servers_round_robin::remote(servers.clone(), calls_per_task))
                .collect();
            oxray_core::get_all(&refs).map(drop)
        })
    })
}

/// Makes `len` bytes on whichever node runs it.
#[remote]
fn make_bytes(len: u64) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(vec![1u8; len as usize])
}

/// Reads bytes that may live on another node.
#[remote]
fn count_bytes(bytes: serde_bytes::ByteBuf) -> u64 {
    bytes.len() as u64
}

/// A second node joined to the embedded cluster for the cross-node metrics,
/// stopped when dropped.
struct SecondNode {
    daemon: std::process::Child,
    node_id: String,
    _session: tempfile::TempDir,
}

impl SecondNode {
    fn start() -> anyhow::Result<Self> {
        let (address, token) =
            oxray_core::join_address().context("the embedded cluster has no join address")?;
        let session = tempfile::tempdir().context("cannot create a session directory")?;
        let node_args = ["--address", address.as_str(), "--num-cpus", "1"];
        let (daemon, ready) =
            super::cluster::spawn_daemon(&node_args, session.path(), &[("OXRAY_TOKEN", &token)])?;
        let node_id = ready
            .get(2)
            .context("the second node did not name itself")?
            .clone();
        Ok(SecondNode {
            daemon,
            node_id,
            _session: session,
        })
    }

    fn pinned(&self) -> oxray_core::SchedulingStrategy {
        oxray_core::SchedulingStrategy::NodeAffinity {
            node_id: self.node_id.clone(),
            soft: false,
        }
    }
}

impl Drop for SecondNode {
    fn drop(&mut self) {
        super::cluster::stop_daemon(&mut self.daemon);
    }
}

const CROSS_NODE_PUT: &str = "cross node put gigabytes";
const CROSS_NODE_GET: &str = "cross node get gigabytes";

/// Objects crossing between two nodes on this machine (the second node joined
/// over loopback): each call moves a fresh object, pulled in chunks over gRPC.
/// "put" is a driver's object read by a task on the other node; "get" is an
/// object made on the other node read by the driver. Beside each figure the
/// byte counters of this process's object server and pulls show that every
/// call's bytes really crossed (nothing came from a stale cached copy).
fn run_cross_node_metrics(timer: &mut Timer) -> anyhow::Result<()> {
    const PUT: &str = CROSS_NODE_PUT;
    const GET: &str = CROSS_NODE_GET;
    if !timer.selects(PUT) && !timer.selects(GET) {
        return Ok(());
    }
    let node = SecondNode::start()?;
    let gigabytes = CROSS_NODE_BYTES as f64 / 1e9;
    let calls = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let before = oxray_core::transfer_counters();
    timer.timeit(PUT, gigabytes, || {
        let pinned = node.pinned();
        let calls = calls.clone();
        Ok(move || {
            calls.set(calls.get() + 1);
            let bytes = oxray_core::put(&serde_bytes::ByteBuf::from(vec![1u8; CROSS_NODE_BYTES]))?;
            count_bytes::options()
                .num_cpus(0.0)
                .scheduling_strategy(pinned.clone())
                .remote(&bytes)
                .get()
                .map(drop)
        })
    })?;
    let after_put = oxray_core::transfer_counters();
    print_wire_bytes(PUT, calls.replace(0), after_put.sent - before.sent);
    timer.timeit(GET, gigabytes, || {
        let pinned = node.pinned();
        let calls = calls.clone();
        Ok(move || {
            calls.set(calls.get() + 1);
            make_bytes::options()
                .num_cpus(0.0)
                .scheduling_strategy(pinned.clone())
                .remote(CROSS_NODE_BYTES as u64)
                .get()
                .map(drop)
        })
    })?;
    let after_get = oxray_core::transfer_counters();
    print_wire_bytes(GET, calls.get(), after_get.received - after_put.received);
    Ok(())
}

/// Prints how many bytes crossed between the nodes for `calls` calls of a
/// cross-node metric, next to what the calls moved.
fn print_wire_bytes(name: &str, calls: u64, wire_bytes: u64) {
    if calls == 0 {
        return;
    }
    let moved = calls * CROSS_NODE_BYTES as u64;
    println!(
        "{name}: {calls} calls moved {:.3} GB of objects; {:.3} GB crossed the wire ({:.0}%)",
        moved as f64 / 1e9,
        wire_bytes as f64 / 1e9,
        100.0 * wire_bytes as f64 / moved as f64
    );
}
