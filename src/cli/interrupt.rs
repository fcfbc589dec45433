//! Stopping `oxray train` early with a checkpoint, as Ray Tune handles
//! SIGINT and SIGUSR1: the first such signal lets each running trial finish
//! the iteration in progress, save its end-of-run checkpoint and stop, so
//! `oxray train --resume RUN_DIR` (a search: `--resume auto`) continues from
//! there; trials of a search not yet started stay pending. A second Ctrl-C
//! ends the process at once (the default action, which the handler restores
//! as it runs: `SA_RESETHAND`).
//!
//! SIGINT is Ctrl-C. SIGUSR1 is what a batch system sends ahead of a time
//! limit or a preemption (`sbatch --signal=USR1@120`); SLURM sends it to
//! every process of the job step, so the same run may get it twice (from
//! SLURM and forwarded by `oxray symmetric-run`): a second SIGUSR1 changes
//! nothing. The workers a node starts ignore both signals (`oxray-core`'s
//! worker launch) and node processes outlive SIGUSR1
//! ([`outlive_stop_requests`]), so the EnvRunners and Learners serve the
//! last iteration. SIGTERM still ends a run at once, as it does Tune's.
//!
//! A signal that was ignored when the process started (`nohup`, a
//! background job of a non-interactive shell) stays ignored, as Python
//! leaves it.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signals that stop a run with a checkpoint.
const STOP_SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGUSR1];

/// The first stop signal received, 0 before any.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// How a run stopped by `signal` says so (its stop reason).
fn reason_for(signal: libc::c_int) -> &'static str {
    if signal == libc::SIGUSR1 {
        "interrupted (SIGUSR1)"
    } else {
        "interrupted (Ctrl-C)"
    }
}

/// A run ended by a stop signal: `oxray` exits with 128 + its number, as a
/// shell reports a command that signal ended, after printing this.
#[derive(Debug, thiserror::Error)]
#[error("{}: continue with `{resume}`", reason_for(*.signal))]
pub struct Interrupted {
    signal: libc::c_int,
    /// The command that continues the runs cut short.
    resume: String,
}

impl Interrupted {
    /// Runs were cut short by the stop signal received; `resume` continues
    /// them.
    pub fn new(resume: String) -> Self {
        Self {
            signal: RECEIVED.load(Ordering::SeqCst),
            resume,
        }
    }

    /// The exit status of the interrupted `oxray train`.
    pub fn exit_status(&self) -> i32 {
        128 + self.signal
    }
}

extern "C" fn on_stop_signal(signal: libc::c_int) {
    let first = RECEIVED
        .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    let notice: &[u8] = match signal {
        libc::SIGINT => {
            b"\nstopping after this iteration with a checkpoint (Ctrl-C again stops at once)\n"
        }
        _ if first => b"\nSIGUSR1: stopping after this iteration with a checkpoint\n",
        _ => return,
    };
    // SAFETY: write(2) is async-signal-safe; the buffer is static.
    unsafe {
        libc::write(libc::STDERR_FILENO, notice.as_ptr().cast(), notice.len());
    }
}

/// Installs the handler for each stop signal not ignored when this process
/// began.
pub fn install() -> std::io::Result<()> {
    for signal in STOP_SIGNALS {
        // SAFETY: sigaction with a zeroed struct only reads the current action.
        let ignored = unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut current) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            current.sa_sigaction == libc::SIG_IGN
        };
        if !ignored {
            let flags = match signal {
                libc::SIGINT => libc::SA_RESETHAND | libc::SA_RESTART,
                _ => libc::SA_RESTART,
            };
            set_handler(signal, on_stop_signal, flags)?;
        }
    }
    Ok(())
}

/// Sets `handler` for `signal`; handlers here only store an atomic and
/// write(2), both async-signal-safe.
fn set_handler(
    signal: libc::c_int,
    handler: extern "C" fn(libc::c_int),
    flags: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction with the handler, flags and an empty mask.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as usize;
        action.sa_flags = flags;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The stop reason of a run cut short now, if a stop signal came since
/// [`install`].
pub fn requested() -> Option<&'static str> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(reason_for(signal)),
    }
}

/// Whether `stop_reason` is that of a run a stop signal cut short.
pub fn is_interruption(stop_reason: &str) -> bool {
    STOP_SIGNALS
        .iter()
        .any(|signal| stop_reason == reason_for(*signal))
}

extern "C" fn outlive(_signal: libc::c_int) {}

/// Makes a node process (a head, a node daemon) outlive SIGUSR1: a batch
/// system's warning is for the driver, which needs its nodes to finish the
/// iteration, and SIGUSR1's default action would end the node and its
/// workers. A handler that does nothing, not `SIG_IGN`: a handler is reset
/// by `exec`, so the drivers a head starts for its jobs still get SIGUSR1's
/// default and handle it as `oxray train` does.
pub fn outlive_stop_requests() -> std::io::Result<()> {
    set_handler(libc::SIGUSR1, outlive, libc::SA_RESTART)
}
