//! Ctrl-C during `oxray train`, handled as Ray Tune handles SIGINT: the
//! first one lets each running trial finish the iteration in progress, save
//! its end-of-run checkpoint and stop, so `oxray train --resume RUN_DIR`
//! continues from there; trials of a search not yet started stay pending. A
//! second Ctrl-C ends the process at once (the default action, which the
//! handler restores as it runs: `SA_RESETHAND`).
//!
//! The terminal sends SIGINT to the whole foreground process group, the
//! embedded node's workers included; they ignore it (`oxray-core`'s worker
//! launch), so the EnvRunners and Learners serve the last iteration.
//!
//! A SIGINT that was ignored when the process started (`nohup`, a
//! background job of a non-interactive shell) stays ignored, as Python
//! leaves it.

use std::sync::atomic::{AtomicBool, Ordering};

/// The stop reason of a run cut short by Ctrl-C.
pub const REASON: &str = "interrupted (Ctrl-C)";

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// A run ended by Ctrl-C: `oxray` exits with 130 (128 + SIGINT), as a
/// shell reports a command that SIGINT ended, after printing this.
#[derive(Debug, thiserror::Error)]
#[error("interrupted (Ctrl-C): continue with `oxray train --resume {run_dirs}`")]
pub struct Interrupted {
    /// The run directories to resume, space-separated.
    pub run_dirs: String,
}

/// The exit status of an interrupted `oxray train`.
pub const EXIT_STATUS: i32 = 128 + libc::SIGINT;

extern "C" fn on_interrupt(_signal: libc::c_int) {
    REQUESTED.store(true, Ordering::SeqCst);
    const NOTICE: &[u8] =
        b"\nstopping after this iteration with a checkpoint (Ctrl-C again stops at once)\n";
    // SAFETY: write(2) is async-signal-safe; the buffer is static.
    unsafe {
        libc::write(libc::STDERR_FILENO, NOTICE.as_ptr().cast(), NOTICE.len());
    }
}

/// Installs the handler, unless SIGINT was ignored when this process began.
pub fn install() -> std::io::Result<()> {
    // SAFETY: sigaction with a zeroed struct reads the current action;
    // installing sets a handler that only stores an atomic and writes.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGINT, std::ptr::null(), &mut current) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if current.sa_sigaction == libc::SIG_IGN {
            return Ok(());
        }
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_interrupt as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether Ctrl-C was pressed since [`install`].
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
