//! Long-running cluster processes: the head (`oxray start --head`) and node
//! daemons (`oxray start --address`), and the session directory through which
//! `oxray stop`, `oxray status` and drivers on the same machine find them.
//!
//! The head is the embedded node with a public port and without a warm pool
//! (it waits for a driver to say which executable workers run). A node daemon
//! only starts and reaps workers on the head's command, serves its
//! shared-memory objects to other nodes, and heartbeats; all scheduling stays
//! on the head, so a node has no state worth losing.

use crate::auth::AttachToken;
pub use crate::auth::TOKEN_ENV;
use crate::error::{Error, ExecutableProblem, Result};
use crate::head::generated::head_client::HeadClient;
pub use crate::head::DEFAULT_DEAD_ACTORS_KEPT;
use crate::head::{Node, NodeConfig, HEARTBEAT_PERIOD};
use crate::ids::WorkerId;
pub use crate::node_ip::{default_node_ip, route_to};
use crate::packaging::{self, ExecutableCache, JobExecutable, Plan};
use crate::protocol::{
    ClusterStatus, HeadToNode, NodeStatus, NodeToHead, StatusRequest, PROTOCOL_VERSION,
};
use crate::runtime::InitOptions;
use crate::runtime_env::{JobRuntimeEnv, WorkerEnvironment};
pub use crate::session::{
    create_private_file, ensure_private_dir, read_private_file, session_dir, session_subdir,
    write_private_file, SESSION_DIR_ENV,
};
use crate::wire::MAX_MESSAGE_BYTES;
pub use crate::worker::process_alive;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// The file in the session directory that holds the head's token.
pub fn token_file() -> Result<PathBuf> {
    Ok(session_dir()?.join("token"))
}

/// The token to present: `OXRAY_TOKEN`, else the session's token file.
pub fn find_token() -> Result<String> {
    if let Ok(token) = std::env::var(TOKEN_ENV) {
        return Ok(token);
    }
    let file = token_file()?;
    match read_private_file(&file)? {
        Some(token) => Ok(token.trim().to_string()),
        None => Err(Error::Runtime(format!(
            "no cluster token: pass --token-file, set {TOKEN_ENV}, or run where `oxray start --head` wrote {}",
            file.display()
        ))),
    }
}

/// Reads a token from a file given with `--token-file`: like an ssh key, it
/// must be the user's own and private.
pub fn read_token_file(path: &std::path::Path) -> Result<String> {
    let token = read_private_file(path)?
        .ok_or_else(|| Error::Runtime(format!("--token-file {} does not exist", path.display())))?;
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(Error::Runtime(format!(
            "--token-file {} is empty",
            path.display()
        )));
    }
    Ok(token)
}

/// The head address recorded in the session directory.
pub fn find_head_address() -> Result<String> {
    let file = session_dir()?.join("head_address");
    match read_private_file(&file)? {
        Some(address) => Ok(address.trim().to_string()),
        None => Err(Error::Runtime(format!(
            "no running cluster found ({} is missing): pass --address",
            file.display()
        ))),
    }
}

/// Removes the shared-memory files of oxray processes on this machine that
/// died without cleaning up (`oxray stop` runs it); returns how many.
pub fn remove_orphaned_shared_memory() -> usize {
    crate::shm::remove_orphans()
}

/// Removes every node's cache of shipped executables on this machine
/// (`oxray stop`; a node removes its own when it stops).
pub fn remove_executable_caches() {
    if let Ok(dir) = session_dir() {
        let _ = std::fs::remove_dir_all(dir.join("executables"));
    }
}

/// Removes the spill files of oxray nodes on this machine that died
/// (`oxray stop` runs it); returns how many.
pub fn remove_orphaned_spill_files() -> usize {
    session_dir().map_or(0, |dir| crate::spill::remove_orphans(&dir.join("spill")))
}

/// Records this process in the session directory so `oxray stop` finds it.
pub fn record_pid(role: &str) -> Result<()> {
    let dir = session_subdir("pids")?;
    write_private_file(&dir.join(std::process::id().to_string()), role)
}

/// Options of a head.
#[derive(Debug, Clone)]
pub struct HeadOptions {
    pub bind: SocketAddr,
    pub resources: InitOptions,
    pub token: Option<String>,
    pub heartbeat_timeout: Duration,
    /// Dead actors kept for `oxray list actors` (the oldest are forgotten).
    pub dead_actors_kept: usize,
}

/// A running head; dropping it stops the cluster's services.
pub struct Head {
    node: std::sync::Arc<Node>,
    pub address: SocketAddr,
    pub token: String,
}

impl Head {
    pub fn start(options: HeadOptions) -> Result<Head> {
        let mut config = NodeConfig::detect(&options.resources)?;
        config.bind = options.bind;
        config.prestart_workers = false;
        config.heartbeat_timeout = options.heartbeat_timeout;
        config.dead_actors_kept = options.dead_actors_kept;
        config.log_dir = Some(session_subdir("logs")?);
        if let Some(token) = options.token {
            config.token = token;
        }
        let token = config.token.clone();
        let node = Node::start(config)?;
        let address = node.address();
        let dir = session_dir()?;
        write_private_file(&dir.join("token"), &token)?;
        write_private_file(&dir.join("head_address"), &address.to_string())?;
        Ok(Head {
            node,
            address,
            token,
        })
    }

    pub fn status(&self) -> ClusterStatus {
        self.node.cluster_status()
    }

    /// The nodes part of [`Head::status`] alone (cheap enough to sample
    /// every second on a large cluster).
    pub fn node_statuses(&self) -> Vec<NodeStatus> {
        self.node.node_statuses()
    }
}

impl Drop for Head {
    fn drop(&mut self) {
        self.node.shutdown();
    }
}

/// Asks the head at `address` for the cluster's state.
pub fn cluster_status(address: &str, token: &str) -> Result<ClusterStatus> {
    block_on(async {
        let mut client = head_client(address, token).await?;
        client
            .cluster_status(StatusRequest::default())
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| crate::auth::explain_refusal(&status, "the head", address))
    })
}

fn block_on<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::runtime("cannot start a runtime", e))?
        .block_on(future)
}

/// A client of the head's service that presents the cluster token.
pub(crate) type AuthenticatedHeadClient = HeadClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, AttachToken>,
>;

/// Connects to the head at `address` as a holder of `token`.
pub(crate) async fn head_client(address: &str, token: &str) -> Result<AuthenticatedHeadClient> {
    let channel = crate::head_link::endpoint(address)?
        .connect()
        .await
        .map_err(|e| {
            crate::head_link::unreachable(
                address,
                format!("cannot connect: {}", crate::head_link::with_causes(&e)),
            )
        })?;
    Ok(
        HeadClient::with_interceptor(channel, AttachToken::new(token)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}

/// Options of a node daemon.
#[derive(Debug, Clone)]
pub struct NodeDaemonOptions {
    pub head_address: String,
    pub token: String,
    /// The address other nodes reach this one at (its object server binds here).
    pub node_ip: String,
    pub resources: InitOptions,
    /// How long to keep trying to reach a lost head before exiting.
    pub head_reconnect_timeout: Duration,
}

/// Ray's default for how long a raylet waits for a lost GCS.
pub const DEFAULT_HEAD_RECONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a node daemon until the head is lost for good or SIGTERM/SIGINT:
/// registers, heartbeats, starts and reaps workers on command, serves this
/// node's objects. When the head stops answering the node stops its workers
/// (their tasks and actors belong to that head) and keeps trying to register
/// again for `head_reconnect_timeout`. `ready` is called once the head first
/// accepted the node.
pub fn run_node_daemon(options: NodeDaemonOptions, ready: impl FnOnce(&str)) -> Result<()> {
    let config = NodeConfig::detect(&options.resources)?;
    crate::spill::configure(config.store_settings());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("oxray-daemon")
        .enable_all()
        .build()
        .map_err(|e| Error::runtime("cannot start the node daemon's runtime", e))?;
    let cache = Arc::new(ExecutableCache::new(
        &config.node_id,
        config.executable_cache_bytes,
    ));
    let result = runtime.block_on(serve_node(&options, &config, &cache, ready));
    crate::shm::remove_session(&config.session);
    cache.remove_all();
    result
}

/// Why one registration with the head ended.
enum SessionEnd {
    HeadLost(String),
    Terminated,
}

async fn serve_node(
    options: &NodeDaemonOptions,
    config: &NodeConfig,
    cache: &Arc<ExecutableCache>,
    ready: impl FnOnce(&str),
) -> Result<()> {
    let bind: SocketAddr = format!("{}:0", options.node_ip).parse().map_err(|_| {
        Error::Runtime(format!(
            "--node-ip-address {} is not an IP address",
            options.node_ip
        ))
    })?;
    let incoming = tonic::transport::server::TcpIncoming::bind(bind)
        .map_err(|e| Error::runtime(&format!("cannot listen on {bind}"), e))?
        .with_nodelay(Some(true));
    let object_server = incoming
        .local_addr()
        .map_err(|e| Error::runtime("cannot read the object port", e))?
        .to_string();
    let objects = crate::transfer::ObjectServer::service(&config.session, &options.token);
    tokio::spawn(
        crate::tls::grpc_server()?
            .add_service(objects)
            .serve_with_incoming(incoming),
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::runtime("cannot watch SIGTERM", e))?;
    let mut session = register(options, config, &object_server).await?;
    ready(&config.node_id);
    loop {
        let reason = match serve_head(
            options,
            config,
            cache,
            &object_server,
            &mut session,
            &mut terminate,
        )
        .await
        {
            SessionEnd::Terminated => return Ok(()),
            SessionEnd::HeadLost(reason) => reason,
        };
        eprintln!(
            "oxray: lost the head at {} ({reason}); stopped this node's workers; retrying for {:.0} s",
            options.head_address,
            options.head_reconnect_timeout.as_secs_f64()
        );
        let deadline = tokio::time::Instant::now() + options.head_reconnect_timeout;
        session = loop {
            tokio::select! {
                _ = terminate.recv() => return Ok(()),
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            match register(options, config, &object_server).await {
                Ok(session) => break session,
                Err(error) if tokio::time::Instant::now() >= deadline => {
                    return Err(crate::head_link::unreachable(
                        &options.head_address,
                        format!(
                            "{reason}; still unreachable after --head-reconnect-timeout {:.0} s ({error})",
                            options.head_reconnect_timeout.as_secs_f64()
                        ),
                    ));
                }
                Err(_) => {}
            }
        };
        eprintln!(
            "oxray: registered again with the head at {}",
            options.head_address
        );
    }
}

/// A registration with the head: what this node sends it, what it commands.
type HeadSession = (
    mpsc::UnboundedSender<NodeToHead>,
    tonic::Streaming<HeadToNode>,
);

/// Registers this node with the head; returns the head's command stream.
async fn register(
    options: &NodeDaemonOptions,
    config: &NodeConfig,
    object_server: &str,
) -> Result<HeadSession> {
    let (outbound, outbound_rx) = mpsc::unbounded_channel();
    let _ = outbound.send(NodeToHead::Register {
        node_id: config.node_id.clone(),
        resources: config.resources.clone(),
        object_server: object_server.to_string(),
        object_store_memory: config.object_store_memory,
        version: PROTOCOL_VERSION.to_string(),
    });
    let mut client = head_client(&options.head_address, &options.token).await?;
    let commands = client
        .node_stream(UnboundedReceiverStream::new(outbound_rx))
        .await
        .map_err(|status| crate::auth::explain_refusal(&status, "the head", &options.head_address))?
        .into_inner();
    Ok((outbound, commands))
}

/// Serves one registration: heartbeats, and starts and reaps workers on the
/// head's command until the head is lost or the daemon is told to stop.
/// Every worker is stopped when it returns.
async fn serve_head(
    options: &NodeDaemonOptions,
    config: &NodeConfig,
    cache: &Arc<ExecutableCache>,
    object_server: &str,
    (outbound, commands): &mut HeadSession,
    terminate: &mut tokio::signal::unix::Signal,
) -> SessionEnd {
    let heartbeats = outbound.clone();
    let beating = tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT_PERIOD);
        while heartbeats.send(NodeToHead::Heartbeat).is_ok() {
            tick.tick().await;
        }
    });
    let mut workers: HashMap<WorkerId, u32> = HashMap::new();
    let (exited, mut exits) = mpsc::unbounded_channel::<(WorkerId, String)>();
    let (located, mut locations) = mpsc::unbounded_channel::<Located>();
    let has_gpus = config.resources.get(crate::resources::GPU) > 0.0;
    // Without a private log directory workers write where the daemon does.
    let log_dir = session_subdir("logs").ok();
    let end = loop {
        tokio::select! {
            _ = terminate.recv() => break SessionEnd::Terminated,
            _ = tokio::signal::ctrl_c() => break SessionEnd::Terminated,
            command = commands.message() => match command {
                Ok(Some(HeadToNode::Spawn { worker, gpu_ids, executable })) => {
                    tokio::spawn(locate_executable(
                        options.head_address.clone(),
                        options.token.clone(),
                        cache.clone(),
                        (worker, gpu_ids, executable),
                        located.clone(),
                    ));
                }
                Ok(Some(HeadToNode::Kill { worker })) => {
                    if let Some(pid) = workers.get(&worker) {
                        crate::worker::kill_process(*pid);
                    }
                }
                Ok(Some(HeadToNode::Spill { path, generation, len })) => {
                    if crate::shm::belongs_to_session(&path, &config.session) {
                        let spilled = tokio::task::block_in_place(|| {
                            crate::spill::spill(&path, generation, len)
                        });
                        if let Err(e) = spilled {
                            eprintln!("oxray: cannot spill {path}: {e}");
                        }
                    }
                    // Answered either way: a put waiting for the room must
                    // not wait for an object that cannot move.
                    let _ = outbound.send(NodeToHead::Spilled { generation });
                }
                Ok(Some(HeadToNode::Free { path, server, generation })) => {
                    if crate::shm::belongs_to_session(&path, &config.session) {
                        crate::shm::free(&config.session, &path);
                    }
                    crate::shm::remove_pulled(&config.session, &server, generation);
                }
                Ok(None) => break SessionEnd::HeadLost("it closed the connection".into()),
                Err(status) => break SessionEnd::HeadLost(format!("the connection failed: {}", status.message())),
            },
            Some((worker, gpu_ids, location)) = locations.recv() => {
                let (executable, environment) = match location {
                    Ok((path, environment)) => (path.to_string_lossy().into_owned(), environment),
                    Err(reason) => {
                        let error = Error::ExecutableUnavailable { node: config.node_id.clone(), reason };
                        let _ = outbound.send(NodeToHead::WorkerNotStarted { worker, error });
                        continue;
                    }
                };
                {
                    let launch = crate::worker::WorkerLaunch {
                        executable: &executable,
                        head_address: &options.head_address,
                        worker,
                        session: &config.session,
                        node_id: &config.node_id,
                        object_server,
                        token: &options.token,
                        gpu_ids: &gpu_ids,
                        hide_gpus: has_gpus,
                        log_dir: log_dir.as_deref(),
                        store: &config.store_settings(),
                        environment: &environment,
                    };
                    match launch.spawn() {
                        Ok(mut child) => {
                            if let Some(pid) = child.id() {
                                workers.insert(worker, pid);
                                let _ = outbound.send(NodeToHead::WorkerStarted { worker, pid });
                            }
                            let exited = exited.clone();
                            tokio::spawn(async move {
                                let message = match child.wait().await {
                                    Ok(status) => crate::worker::describe_exit(status),
                                    Err(e) => format!("could not wait for the process: {e}"),
                                };
                                let _ = exited.send((worker, message));
                            });
                        }
                        Err(e) => {
                            // Another worker of it would fail the same way:
                            // its tasks fail here with the cause.
                            let reason = ExecutableProblem::CannotStart { message: format!("{executable}: {e}") };
                            let error = Error::ExecutableUnavailable { node: config.node_id.clone(), reason };
                            let _ = outbound.send(NodeToHead::WorkerNotStarted { worker, error });
                        }
                    }
                }
            }
            Some((worker, message)) = exits.recv() => {
                workers.remove(&worker);
                let _ = outbound.send(NodeToHead::WorkerExited { worker, message });
            }
        }
    };
    beating.abort();
    for pid in workers.values() {
        crate::worker::kill_process(*pid);
    }
    if matches!(end, SessionEnd::Terminated) {
        leave(outbound, commands).await;
    }
    // The workers' objects belonged to that head; nobody can free them now.
    crate::shm::remove_session(&config.session);
    end
}

/// How long a stopping node waits for the head to take its leave.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Tells the head this node is stopping, then waits until the head ends the
/// node's stream (or [`LEAVE_TIMEOUT`] passes), so the message is sent
/// before the process exits: the head then reports no failure.
async fn leave(
    outbound: &mpsc::UnboundedSender<NodeToHead>,
    commands: &mut tonic::Streaming<HeadToNode>,
) {
    if outbound.send(NodeToHead::Leaving).is_err() {
        return;
    }
    let _ = tokio::time::timeout(LEAVE_TIMEOUT, async {
        while let Ok(Some(_)) = commands.message().await {}
    })
    .await;
}

/// Where a worker's executable and working directory are on this node, or
/// why they are not.
type Located = (
    WorkerId,
    Vec<u32>,
    std::result::Result<(PathBuf, WorkerEnvironment), ExecutableProblem>,
);

/// Finds the file to start a worker of `executable` from (the driver's path
/// when it holds the same bytes, else a copy from the cache or the head)
/// and its job's working directory (unpacked here once, fetched first if
/// this node has no copy).
async fn locate_executable(
    head_address: String,
    token: String,
    cache: Arc<ExecutableCache>,
    (worker, gpu_ids, executable): (WorkerId, Vec<u32>, JobExecutable),
    located: mpsc::UnboundedSender<Located>,
) {
    let planned = {
        let (cache, executable) = (cache.clone(), executable.clone());
        tokio::task::spawn_blocking(move || cache.plan(&executable)).await
    };
    let location = match planned {
        Ok(Ok(Plan::Run(path))) => Ok(path),
        Ok(Ok(Plan::Fetch)) => {
            packaging::fetch_from_head(&head_address, &token, &executable, &cache).await
        }
        Ok(Err(problem)) => Err(problem),
        Err(e) => Err(ExecutableProblem::Store {
            message: e.to_string(),
        }),
    };
    let location = match location {
        Ok(path) => locate_working_dir(&head_address, &token, &cache, &executable.runtime_env)
            .await
            .map(|environment| (path, environment)),
        Err(problem) => Err(problem),
    };
    let _ = located.send((worker, gpu_ids, location));
}

async fn locate_working_dir(
    head_address: &str,
    token: &str,
    cache: &Arc<ExecutableCache>,
    runtime_env: &JobRuntimeEnv,
) -> std::result::Result<WorkerEnvironment, ExecutableProblem> {
    let fetched = match cache.lacks_working_dir(runtime_env) {
        Some(archive) => {
            let file = JobExecutable::archive_file(&archive);
            Some(packaging::fetch_from_head(head_address, token, &file, cache).await?)
        }
        None => None,
    };
    let (cache, runtime_env) = (cache.clone(), runtime_env.clone());
    tokio::task::spawn_blocking(move || cache.environment(&runtime_env, fetched))
        .await
        .map_err(|e| ExecutableProblem::WorkingDir {
            message: e.to_string(),
        })?
}
