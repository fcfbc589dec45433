//! oxray-dashboard: what the head serves over HTTP next to its gRPC port,
//! as Ray's dashboard does on :8265: web pages to watch the cluster, a Jobs
//! REST API to submit and stop drivers, and Prometheus metrics.
//!
//! It runs inside the head process (`oxray start --head`), reads the cluster
//! through a [`StatusSource`] (the head's own snapshot, no extra hop) and
//! checks the cluster token on every request. The pages are HTML rendered
//! here with a little vanilla JavaScript and a vendored chart file: no Node
//! toolchain in the build.
//!
//! # Layout
//!
//! | file | what |
//! |---|---|
//! | `server.rs` | routes, the token middleware, JSON and HTML handlers |
//! | `auth.rs` | the token check: bearer header, login cookie |
//! | `jobs.rs` | the job supervisor: driver processes, states, stop |
//! | `packages.rs` | working directories uploaded for jobs, unpacked by digest |
//! | `client.rs` | the HTTP client `oxray job` and tests use |
//! | `metrics.rs` | Prometheus text exposition |
//! | `pages.rs` | HTML pages and live fragments |
//! | `history.rs` | resource use over time for the charts |
//! | `training.rs` | training runs of submitted jobs, from `result.json` |
//! | `logs.rs` | paged reads of log files |
//! | `error.rs` | [`DashboardError`] |
//! | `assets/` | CSS, the page script, the chart drawing |

mod auth;
pub mod client;
mod error;
mod history;
pub mod jobs;
mod logs;
mod metrics;
pub mod packages;
mod pages;
mod server;
mod training;

pub use client::DashboardClient;
pub use error::{DashboardError, Result};
pub use jobs::{JobDetails, JobState, JobSubmitRequest, RuntimeEnv};
pub use logs::LogChunk;
pub use server::{NodesSource, StatusSource};

use history::History;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Ray's dashboard port.
pub const DEFAULT_PORT: u16 = 8265;
/// How often resource use is sampled for the charts...
const SAMPLE_PERIOD: Duration = Duration::from_secs(1);
/// ...and how many samples are kept (ten minutes)...
const HISTORY_SAMPLES: usize = 600;
/// ...unless the cluster is larger than 100 nodes: node samples kept in all
/// (a few MiB), so a thousand nodes keep the last minute.
const HISTORY_NODE_SAMPLES: usize = 60_000;

/// How to start the dashboard.
pub struct DashboardOptions {
    /// Where to listen (the head's address, port 8265 by default).
    pub bind: SocketAddr,
    /// The cluster token, required on every request.
    pub token: String,
    /// The head's gRPC address, handed to submitted drivers.
    pub head_address: String,
    /// The session's `logs/` directory: job logs go there, the Logs view
    /// shows it.
    pub log_dir: PathBuf,
    /// Where uploaded working directories are unpacked. They stay when the
    /// dashboard stops, with what the jobs wrote there (their results), as
    /// Ray's session directory keeps its runtime resources.
    pub packages_dir: PathBuf,
    pub status: StatusSource,
    /// The nodes alone, sampled every second for the resource charts
    /// (`status` would copy every actor, task and object row each time).
    pub nodes: NodesSource,
}

/// A running dashboard; dropping it stops its jobs and the server.
pub struct Dashboard {
    address: SocketAddr,
    supervisor: jobs::JobSupervisor,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Dashboard {
    pub fn start(options: DashboardOptions) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("oxray-dashboard")
            .enable_all()
            .build()
            .map_err(DashboardError::Runtime)?;
        let bind_error = |source| DashboardError::Bind {
            address: options.bind.to_string(),
            error: source,
        };
        let listener = std::net::TcpListener::bind(options.bind).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let address = listener.local_addr().map_err(bind_error)?;
        let packages = Arc::new(packages::Packages::new(options.packages_dir));
        let supervisor = jobs::JobSupervisor::new(
            options.log_dir.clone(),
            packages.clone(),
            jobs::ClusterEnv {
                head_address: options.head_address,
                token: options.token.clone(),
            },
            runtime.handle().clone(),
        );
        let history = Arc::new(History::new(HISTORY_SAMPLES, HISTORY_NODE_SAMPLES));
        let state = server::AppState {
            status: options.status.clone(),
            supervisor: supervisor.clone(),
            history: history.clone(),
            check: auth::TokenCheck::new(&options.token),
            log_dir: options.log_dir,
            packages,
        };
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(bind_error)?
        };
        runtime.spawn(async move {
            let served = axum::serve(listener, server::router(state))
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                eprintln!("oxray: the dashboard stopped: {e}");
            }
        });
        let nodes = options.nodes;
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_PERIOD);
            loop {
                tick.tick().await;
                history.record_nodes(&nodes(), jobs::now_ms());
            }
        });
        Ok(Dashboard {
            address,
            supervisor,
            shutdown: Some(shutdown),
            runtime: Some(runtime),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://HOST:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        // No driver outlives the cluster it was submitted to.
        self.supervisor.stop_all();
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}
