//! `oxray tensorboard`: serve a results directory in TensorBoard, installed
//! on first use into the cached Python venv that `scripts/env.sh` also uses
//! (`OXRAY_VENV`, default `~/.cache/oxray/venv`).
//!
//! TensorBoard is a Python application with its own dependency tree, so it
//! stays out of the Rust build: a pinned version is pip-installed once (under
//! a file lock, so two commands started together install it once) and run as
//! a child process. The child gets a process group of its own, so that oxray
//! alone decides when it stops: Ctrl-C or SIGTERM to oxray stops the whole
//! group (TensorBoard and its data server) and waits for it, and the kernel
//! stops TensorBoard should oxray itself be killed. Nothing is left running.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{signal, SignalKind};

use super::python::cached_venv;
use super::train::say;

/// The TensorBoard release `oxray tensorboard` installs.
pub const TENSORBOARD_VERSION: &str = "2.21.0";

/// How long TensorBoard may take to exit after SIGINT before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct TensorboardArgs {
    /// Directory whose runs to show (`oxray train` writes to results/).
    #[arg(long, default_value = "results")]
    logdir: PathBuf,
    /// Port to serve on; 0 takes a free one.
    #[arg(long, default_value_t = 6006)]
    port: u16,
    /// Address to listen on; 0.0.0.0 serves every network interface.
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
}

pub fn run(args: TensorboardArgs) -> anyhow::Result<()> {
    let venv = cached_venv()?;
    let tensorboard = install(&venv)?;
    if !args.logdir.is_dir() {
        eprintln!(
            "warning: {} does not exist yet; runs show up once `oxray train` writes there",
            args.logdir.display()
        );
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler")?
        .block_on(serve(&tensorboard, &args))
}

/// `venv/bin/tensorboard` at [`TENSORBOARD_VERSION`], installed if needed.
fn install(venv: &Path) -> anyhow::Result<PathBuf> {
    let parent = venv.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let lock_path = venv.with_extension("lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    // SAFETY: flock on a descriptor this function owns; released when `lock`
    // is dropped.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!(
            "cannot lock {}: {}",
            lock_path.display(),
            std::io::Error::last_os_error()
        );
    }
    let python = venv.join("bin/python");
    let tensorboard = venv.join("bin/tensorboard");
    if installed_version(&python).as_deref() == Some(TENSORBOARD_VERSION) && tensorboard.exists() {
        return Ok(tensorboard);
    }
    eprintln!(
        "oxray: installing tensorboard=={TENSORBOARD_VERSION} into {} (once)",
        venv.display()
    );
    if !python.exists() {
        run_step(
            std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(venv),
            "python3 -m venv (Debian/Ubuntu: apt-get install python3-venv)",
        )?;
    }
    run_step(
        std::process::Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("tensorboard=={TENSORBOARD_VERSION}"),
        ]),
        "pip install tensorboard",
    )?;
    Ok(tensorboard)
}

/// The tensorboard version installed for `python`, if any.
fn installed_version(python: &Path) -> Option<String> {
    let output = std::process::Command::new(python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('tensorboard'))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn run_step(command: &mut std::process::Command, what: &str) -> anyhow::Result<()> {
    let status = command
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Runs TensorBoard until it exits or oxray is told to stop.
async fn serve(tensorboard: &Path, args: &TensorboardArgs) -> anyhow::Result<()> {
    // Listen before the child exists, so no signal finds oxray without a
    // handler.
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut command = tokio::process::Command::new(tensorboard);
    command
        .arg("--logdir")
        .arg(&args.logdir)
        .args(["--port", &args.port.to_string(), "--host", &args.bind])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    super::cluster::terminate_with_this_process(command.as_std_mut());
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", tensorboard.display()))?;
    let group = child.id().context("tensorboard exited at once")? as i32;
    let stderr = child.stderr.take().context("tensorboard's stderr")?;
    let forward = tokio::spawn(forward_output(stderr, args.logdir.clone()));
    let exited = tokio::select! {
        status = child.wait() => Some(status),
        _ = interrupt.recv() => None,
        _ = terminate.recv() => None,
    };
    let stopped_by_user = exited.is_none();
    let status = match exited {
        Some(status) => status,
        None => {
            signal_group(group, libc::SIGINT);
            match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    signal_group(group, libc::SIGKILL);
                    child.wait().await
                }
            }
        }
    };
    // Whatever TensorBoard left in its group (its data server) goes too.
    signal_group(group, libc::SIGKILL);
    let _ = forward.await;
    let status: ExitStatus = status.context("waiting for tensorboard")?;
    if stopped_by_user {
        say(format_args!("TensorBoard stopped"));
    } else if !status.success() {
        bail!("tensorboard exited with {status}");
    }
    Ok(())
}

fn signal_group(group: i32, signal: i32) {
    // SAFETY: signals the process group of the child this process started;
    // ESRCH (already gone) is fine.
    unsafe { libc::killpg(group, signal) };
}

/// Passes TensorBoard's log on to stderr, except its banner, which becomes
/// oxray's own line on stdout (what a script or test waits for), and the note
/// that TensorFlow is absent, which is how oxray means it.
async fn forward_output(stderr: tokio::process::ChildStderr, logdir: PathBuf) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.starts_with("TensorFlow installation not found") {
            continue;
        }
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("http://"));
        match url {
            Some(url) if line.starts_with("TensorBoard ") => say(format_args!(
                "TensorBoard {TENSORBOARD_VERSION} serving {} at {url} (Ctrl-C stops it)",
                logdir.display()
            )),
            _ => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        }
    }
}
