//! Starting and stopping worker processes: everything a worker needs to know
//! travels in its environment; it dies with the process that started it
//! (`PR_SET_PDEATHSIG`, forked on the spawner thread so that no other
//! thread's end kills it), and its exit is described in words for errors.
//!
//! A daemon's workers write stdout and stderr to files of their own under the
//! session directory (`logs/worker-<id>.out`, `.err`, as Ray's
//! `worker-*.out`): a daemon's own output goes to a log or a pipe nobody
//! reads, and a task's `println!` must neither be lost nor fail on a closed
//! pipe. The embedded cluster's workers share the driver's terminal instead.

use crate::auth::TOKEN_ENV;
use crate::ids::WorkerId;

pub(crate) const NODE_ADDRESS_ENV: &str = "OXRAY_WORKER_NODE_ADDRESS";
pub(crate) const WORKER_ID_ENV: &str = "OXRAY_WORKER_ID";
pub(crate) const SESSION_ENV: &str = "OXRAY_SESSION";
pub(crate) const NODE_ID_ENV: &str = "OXRAY_NODE_ID";
pub(crate) const OBJECT_SERVER_ENV: &str = "OXRAY_OBJECT_SERVER";

/// Everything a worker process needs to know, passed through its environment.
pub(crate) struct WorkerLaunch<'a> {
    pub executable: &'a str,
    pub head_address: &'a str,
    pub worker: WorkerId,
    pub session: &'a str,
    pub node_id: &'a str,
    pub object_server: &'a str,
    pub token: &'a str,
    pub gpu_ids: &'a [u32],
    /// Set `CUDA_VISIBLE_DEVICES` even when no GPU is granted, so a worker
    /// without GPUs sees none on a node that has some.
    pub hide_gpus: bool,
    /// Where the worker's output files go; `None`: the starter's stdout and
    /// stderr.
    pub log_dir: Option<&'a std::path::Path>,
    /// Its node's object store.
    pub store: &'a crate::spill::StoreSettings,
    /// Its job's working directory on this node and variables.
    pub environment: &'a crate::runtime_env::WorkerEnvironment,
}

impl WorkerLaunch<'_> {
    /// Starts the worker. A copy of an executable just written to the cache
    /// may still be open for writing in a child another thread is forking,
    /// which the kernel reports as ETXTBSY until that child execs; so that
    /// error is retried briefly.
    pub fn spawn(&self) -> std::io::Result<tokio::process::Child> {
        let mut command = self.command();
        // The child's exit is watched by the caller's runtime.
        let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        // Forked on the spawner thread: the worker dies with the process,
        // not with the thread that asked for it.
        super::spawner::on_spawner_thread(move || {
            let _runtime = runtime.enter();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            loop {
                match command.spawn() {
                    Err(e)
                        if e.raw_os_error() == Some(libc::ETXTBSY)
                            && std::time::Instant::now() < deadline =>
                    {
                        std::thread::yield_now()
                    }
                    outcome => return outcome,
                }
            }
        })
    }

    pub fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(self.executable);
        command
            .env(NODE_ADDRESS_ENV, self.head_address)
            .env(WORKER_ID_ENV, self.worker.0.to_string())
            .env(SESSION_ENV, self.session)
            .env(NODE_ID_ENV, self.node_id)
            .env(OBJECT_SERVER_ENV, self.object_server)
            .env(TOKEN_ENV, self.token)
            .env(
                crate::spill::OBJECT_STORE_MEMORY_ENV,
                self.store.capacity.to_string(),
            )
            .env(crate::spill::SPILL_DIR_ENV, &self.store.spill_dir)
            .envs(self.environment.vars.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(false);
        if let Some(dir) = &self.environment.dir {
            let python_path = crate::runtime_env::python_path_with(dir)
                .unwrap_or_else(|_| dir.as_os_str().to_owned());
            command.current_dir(dir).env("PYTHONPATH", python_path);
        }
        if let Some(dir) = self.log_dir {
            let file = |extension: &str| {
                std::fs::create_dir_all(dir)?;
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(format!("{}.{extension}", self.worker)))
            };
            // A log that cannot be opened must not keep the worker from
            // starting: it then writes where its node does.
            if let (Ok(out), Ok(err)) = (file("out"), file("err")) {
                command
                    .stdout(out)
                    .stderr(err)
                    .env(super::log_capture::LOG_TO_DRIVER_ENV, "1");
            }
        }
        if self.hide_gpus || !self.gpu_ids.is_empty() {
            let ids: Vec<String> = self.gpu_ids.iter().map(u32::to_string).collect();
            command.env("CUDA_VISIBLE_DEVICES", ids.join(","));
        }
        // SAFETY: prctl and sigaction are async-signal-safe. The death signal
        // makes the worker die with its node instead of lingering as an
        // orphan. SIGINT and SIGUSR1 are ignored (and stay so across exec):
        // a Ctrl-C in the terminal of a driver that hosts the node reaches
        // its whole process group, and SLURM sends its SIGUSR1 warning
        // (`--signal=USR1@SECONDS`) to every process of the step; the driver
        // decides what they mean (`oxray train` finishes its iteration on
        // these workers, then stops).
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                let mut ignore: libc::sigaction = std::mem::zeroed();
                ignore.sa_sigaction = libc::SIG_IGN;
                for signal in [libc::SIGINT, libc::SIGUSR1] {
                    libc::sigaction(signal, &ignore, std::ptr::null_mut());
                }
                Ok(())
            });
        }
        command
    }
}

pub(crate) fn kill_process(pid: u32) {
    // 0 and values that turn negative as a pid_t would signal a process
    // group or every process of the user (kill(-1)).
    if pid == 0 || pid > i32::MAX as u32 {
        return;
    }
    // SAFETY: plain syscall on a pid this node started.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// Whether `pid` runs (a zombie waiting for its parent does not).
pub fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let exists = unsafe { libc::kill(pid as libc::pid_t, 0) == 0 };
    exists
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

pub(crate) fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}
