//! The job supervisor: drivers submitted with `oxray job submit` (or
//! `POST /api/jobs/`) run as child processes of the head, detached from the
//! shell that submitted them, as `ray job submit` runs them under Ray's job
//! supervisor.
//!
//! Each job's entrypoint is a shell command run by `sh -c` in a new session,
//! so the job is one process group: stopping it signals the whole group
//! (SIGTERM, then SIGKILL after a grace period), which ends the driver and
//! every process it started. The driver finds the cluster in `OXRAY_ADDRESS`
//! and `OXRAY_TOKEN` (as Ray's drivers find `RAY_ADDRESS`), its output goes to
//! one log file per job under the session's `logs/`, and the states are
//! Ray's: PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED. The field names of
//! [`JobDetails`] follow Ray's Jobs REST API so Ray users' scripts need few
//! changes.

use crate::error::{DashboardError, Result};
use crate::logs::LogChunk;
use crate::packages::Packages;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a stopped job's processes get to exit after SIGTERM before
/// SIGKILL (Ray waits 3 s by default too).
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A job's state, as Ray names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Stopped,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Pending,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Stopped,
    ];

    /// Whether the job has ended (its state no longer changes).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Stopped
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Running => "RUNNING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::Stopped => "STOPPED",
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Left out of an uploaded working directory when the driver ships it on:
/// `oxray train` writes its runs under `results/` of the driver's directory.
const RESULTS_EXCLUDE: &str = "/results/";

/// Where and with what environment the driver runs (Ray's `runtime_env`,
/// of which oxray supports these two keys).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuntimeEnv {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_vars: BTreeMap<String, String>,
}

/// The body of `POST /api/jobs/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSubmitRequest {
    /// A shell command line, as Ray's `entrypoint`.
    pub entrypoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission_id: Option<String>,
    #[serde(default)]
    pub runtime_env: RuntimeEnv,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// One job, as `GET /api/jobs/{id}` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDetails {
    /// Always "SUBMISSION" (Ray also lists drivers that were not submitted;
    /// `oxray list jobs` shows those).
    #[serde(rename = "type")]
    pub kind: String,
    pub submission_id: String,
    pub entrypoint: String,
    pub status: JobState,
    pub message: String,
    /// Milliseconds since the Unix epoch.
    pub start_time: u64,
    pub end_time: Option<u64>,
    pub driver_exit_code: Option<i32>,
    pub driver_pid: Option<u32>,
    pub runtime_env: RuntimeEnv,
    pub metadata: BTreeMap<String, String>,
    /// The file the driver's stdout and stderr go to, on the head's machine.
    pub log_path: String,
}

/// How drivers reach the cluster they run on.
#[derive(Debug, Clone)]
pub struct ClusterEnv {
    /// The head's gRPC address (`OXRAY_ADDRESS`).
    pub head_address: String,
    /// The cluster token (`OXRAY_TOKEN`).
    pub token: String,
}

struct JobEntry {
    details: JobDetails,
    stop_requested: bool,
}

/// Runs and tracks submitted jobs. Cheap to clone (shared state).
#[derive(Clone)]
pub struct JobSupervisor {
    jobs: Arc<Mutex<Vec<JobEntry>>>,
    log_dir: PathBuf,
    packages: Arc<Packages>,
    cluster: ClusterEnv,
    runtime: tokio::runtime::Handle,
}

impl JobSupervisor {
    /// `runtime` reaps the drivers; logs go to `log_dir`; a working
    /// directory `package://DIGEST` is the copy in `packages`.
    pub fn new(
        log_dir: PathBuf,
        packages: Arc<Packages>,
        cluster: ClusterEnv,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        JobSupervisor {
            jobs: Arc::new(Mutex::new(Vec::new())),
            log_dir,
            packages,
            cluster,
            runtime,
        }
    }

    /// Starts a driver for `request` and returns its job.
    pub fn submit(&self, request: JobSubmitRequest) -> Result<JobDetails> {
        if request.entrypoint.trim().is_empty() {
            return Err(DashboardError::EmptyEntrypoint);
        }
        let id = match request.submission_id.clone() {
            Some(id) if valid_submission_id(&id) => id,
            Some(id) => return Err(DashboardError::BadSubmissionId(id)),
            None => new_submission_id(),
        };
        // Without a working directory the driver runs where the head does;
        // an uploaded package is also shipped to the job's workers.
        let (working_dir, uploaded) = match &request.runtime_env.working_dir {
            Some(dir) => match self.packages.resolve(dir) {
                Some(copy) => (copy?, true),
                None => (PathBuf::from(dir), false),
            },
            None => (
                std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
                false,
            ),
        };
        if !working_dir.is_dir() {
            return Err(DashboardError::WorkingDir { path: working_dir });
        }
        // Where it runs, which is also where the Training view finds its
        // results: for an uploaded package, the head's copy.
        let mut runtime_env = request.runtime_env.clone();
        runtime_env.working_dir = Some(working_dir.display().to_string());
        let log_path = self.log_dir.join(format!("job-{id}.log"));
        let details = JobDetails {
            kind: "SUBMISSION".into(),
            submission_id: id.clone(),
            entrypoint: request.entrypoint.clone(),
            status: JobState::Pending,
            message: "Job has not started yet.".into(),
            start_time: now_ms(),
            end_time: None,
            driver_exit_code: None,
            driver_pid: None,
            runtime_env,
            metadata: request.metadata.clone(),
            log_path: log_path.display().to_string(),
        };
        {
            let mut jobs = self.jobs.lock();
            if jobs.iter().any(|j| j.details.submission_id == id) {
                return Err(DashboardError::DuplicateJob(id));
            }
            jobs.push(JobEntry {
                details,
                stop_requested: false,
            });
        }
        let shipped = uploaded.then_some(working_dir.as_path());
        match self.spawn_driver(&id, &request, &working_dir, shipped, &log_path) {
            Ok(details) => Ok(details),
            Err(error) => {
                self.finish(&id, JobState::Failed, None, error.to_string());
                Err(error)
            }
        }
    }

    fn spawn_driver(
        &self,
        id: &str,
        request: &JobSubmitRequest,
        working_dir: &Path,
        shipped: Option<&Path>,
        log_path: &Path,
    ) -> Result<JobDetails> {
        let log_error = |source| DashboardError::JobLog {
            id: id.to_string(),
            path: log_path.to_path_buf(),
            error: source,
        };
        // The job's variables, and an uploaded working directory, reach its
        // workers on every node too (Ray's job-level runtime_env); a
        // directory given as a path on the head stays the driver's own.
        let runtime_env = oxray_core::RuntimeEnv {
            working_dir: shipped.map(Path::to_path_buf),
            env_vars: request.runtime_env.env_vars.clone(),
            // What drivers wrote into the copy (`oxray train`'s runs) is not
            // shipped on to the workers.
            excludes: vec![RESULTS_EXCLUDE.to_string()],
        }
        .to_json()
        .map_err(|e| DashboardError::Package {
            // Only a package's copy under a path that is not UTF-8 fails.
            digest: shipped
                .and_then(Path::file_name)
                .map_or_else(String::new, |name| name.to_string_lossy().into_owned()),
            problem: e.to_string(),
        })?;
        std::fs::create_dir_all(&self.log_dir).map_err(log_error)?;
        let log = std::fs::File::create(log_path).map_err(log_error)?;
        let log_too = log.try_clone().map_err(log_error)?;
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(&request.entrypoint)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log_too)
            .env("OXRAY_ADDRESS", &self.cluster.head_address)
            .env("OXRAY_TOKEN", &self.cluster.token)
            .env("OXRAY_JOB_SUBMISSION_ID", id)
            .env("PATH", path_with_own_directory())
            .envs(&request.runtime_env.env_vars)
            .env(oxray_core::RUNTIME_ENV_ENV, runtime_env)
            .current_dir(working_dir);
        if let Some(copy) = shipped {
            // Python modules of the package import in the driver too.
            if let Ok(python_path) = oxray_core::python_path_with(copy) {
                command.env("PYTHONPATH", python_path);
            }
        }
        // SAFETY: setsid and prctl are async-signal-safe. setsid makes the
        // driver the leader of a new session and process group, detached from
        // any terminal, so the whole job can be signalled as one group; the
        // death signal ends it if the head itself is killed.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        // Forked on the process's spawner thread: the death signal follows
        // the forking thread, and this one is whichever runtime thread runs
        // the submit request.
        let runtime = self.runtime.clone();
        let mut child = oxray_core::on_spawner_thread(move || {
            let _entered = runtime.enter();
            command.spawn()
        })
        .map_err(|source| DashboardError::Spawn {
            id: id.to_string(),
            entrypoint: request.entrypoint.clone(),
            error: source,
        })?;
        let pid = child.id();
        let details = self.update(id, |entry| {
            entry.details.status = JobState::Running;
            entry.details.driver_pid = pid;
            entry.details.message = "Job is currently running.".into();
            entry.details.clone()
        });
        let details = details.ok_or_else(|| DashboardError::NoSuchJob(id.to_string()))?;
        let supervisor = self.clone();
        let id = id.to_string();
        self.runtime.spawn(async move {
            let status = child.wait().await;
            // Whatever the driver left running in its group ends with it.
            if let Some(pid) = pid {
                signal_group(pid, libc::SIGKILL);
            }
            let stopped = supervisor
                .update(&id, |entry| entry.stop_requested)
                .unwrap_or(false);
            let (state, code, message) = match status {
                Ok(_) if stopped => (
                    JobState::Stopped,
                    None,
                    "Job was intentionally stopped.".to_string(),
                ),
                Ok(status) if status.success() => (
                    JobState::Succeeded,
                    Some(0),
                    "Job finished successfully.".to_string(),
                ),
                Ok(status) => (
                    JobState::Failed,
                    status.code(),
                    format!("Job entrypoint failed ({status})."),
                ),
                Err(e) => (
                    JobState::Failed,
                    None,
                    format!("cannot wait for the driver: {e}"),
                ),
            };
            supervisor.finish(&id, state, code, message);
        });
        Ok(details)
    }

    fn update<R>(&self, id: &str, f: impl FnOnce(&mut JobEntry) -> R) -> Option<R> {
        self.jobs
            .lock()
            .iter_mut()
            .find(|j| j.details.submission_id == id)
            .map(f)
    }

    fn finish(&self, id: &str, state: JobState, code: Option<i32>, message: String) {
        self.update(id, |entry| {
            entry.details.status = state;
            entry.details.driver_exit_code = code;
            entry.details.end_time = Some(now_ms());
            entry.details.message = message;
        });
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Vec<JobDetails> {
        self.jobs.lock().iter().map(|j| j.details.clone()).collect()
    }

    pub fn get(&self, id: &str) -> Result<JobDetails> {
        self.update(id, |entry| entry.details.clone())
            .ok_or_else(|| DashboardError::NoSuchJob(id.to_string()))
    }

    /// Stops a running job: SIGTERM to its process group now, SIGKILL after
    /// the grace period. Returns whether it was running.
    pub fn stop(&self, id: &str) -> Result<bool> {
        let pid = self
            .update(id, |entry| {
                if entry.details.status.is_terminal() {
                    return None;
                }
                entry.stop_requested = true;
                entry.details.driver_pid
            })
            .ok_or_else(|| DashboardError::NoSuchJob(id.to_string()))?;
        let Some(pid) = pid else {
            return Ok(false);
        };
        signal_group(pid, libc::SIGTERM);
        let supervisor = self.clone();
        let id = id.to_string();
        self.runtime.spawn(async move {
            tokio::time::sleep(STOP_GRACE).await;
            let running = supervisor
                .update(&id, |entry| !entry.details.status.is_terminal())
                .unwrap_or(false);
            if running {
                signal_group(pid, libc::SIGKILL);
            }
        });
        Ok(true)
    }

    /// Forgets a finished job and removes its log.
    pub fn delete(&self, id: &str) -> Result<()> {
        let mut jobs = self.jobs.lock();
        let index = jobs
            .iter()
            .position(|j| j.details.submission_id == id)
            .ok_or_else(|| DashboardError::NoSuchJob(id.to_string()))?;
        let status = jobs[index].details.status;
        if !status.is_terminal() {
            return Err(DashboardError::JobNotFinished {
                id: id.to_string(),
                status: status.to_string(),
            });
        }
        let entry = jobs.remove(index);
        let _ = std::fs::remove_file(entry.details.log_path);
        Ok(())
    }

    /// The job's log from byte `offset` on.
    pub fn logs(&self, id: &str, offset: u64) -> Result<LogChunk> {
        let path = PathBuf::from(self.get(id)?.log_path);
        crate::logs::read_chunk(&path, offset).map_err(|source| DashboardError::JobLog {
            id: id.to_string(),
            path,
            error: source,
        })
    }

    /// Stops every running job and waits (up to the grace period) for their
    /// drivers to end; used when the head shuts down, so no driver outlives
    /// its cluster.
    pub fn stop_all(&self) {
        let running: Vec<String> = self
            .list()
            .into_iter()
            .filter(|j| !j.status.is_terminal())
            .map(|j| j.submission_id)
            .collect();
        for id in &running {
            let _ = self.stop(id);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline && self.list().iter().any(|j| !j.status.is_terminal()) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for job in self.list() {
            if let (false, Some(pid)) = (job.status.is_terminal(), job.driver_pid) {
                signal_group(pid, libc::SIGKILL);
            }
        }
    }
}

fn valid_submission_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `oxraysubmit_` and 64 random bits, as Ray's `raysubmit_` ids.
fn new_submission_id() -> String {
    let random = oxray_core::generate_token().unwrap_or_else(|_| format!("{:x}", now_ms()));
    format!("oxraysubmit_{}", &random[..16.min(random.len())])
}

/// `PATH` with the head's own directory first, so `oxray` in an entrypoint
/// is the same binary as the head.
fn path_with_own_directory() -> String {
    let inherited = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    match std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        Some(dir) => format!("{}:{inherited}", dir.display()),
        None => inherited,
    }
}

fn signal_group(leader: u32, signal: libc::c_int) {
    // SAFETY: signals the process group this supervisor created with setsid
    // (its id is the driver's pid).
    unsafe {
        libc::kill(-(leader as libc::pid_t), signal);
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
