//! A daemon's worker streams its output to the driver of the job it works for
//! (Ray's `log_to_driver`), while still writing it to its log file.
//!
//! The worker's stdout and stderr are pipes it reads itself: each complete
//! line goes to the log file the node opened for it and, as one message on
//! the worker's stream, to the head, which forwards it to the job's driver
//! with the `(name pid=N node=ID)` prefix. Reading its own pipes means a
//! process that prints a lot never blocks on, or is killed by, a reader it
//! does not control: the file takes everything, the stream is asynchronous.
//!
//! Before a task's result is sent, [`flush`] writes a marker line into both
//! pipes and waits until the readers reach it: every line the task printed is
//! then on the stream ahead of its result, so a driver that got the result
//! has (or is about to print) all of its output. When both pipes are empty
//! and neither reader holds output it has not forwarded, the task printed
//! nothing that could be overtaken, and `flush` returns at once: most tasks
//! print nothing, and the marker's round trip through two reader threads
//! cost more than the rest of a small task.

use super::client::WorkerClient;
use crate::protocol::WorkerToNode;
use parking_lot::{Condvar, Mutex};
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Set (by the node) on workers whose output should reach their driver.
pub(crate) const LOG_TO_DRIVER_ENV: &str = "OXRAY_LOG_TO_DRIVER";

/// Longest line forwarded whole; longer ones are split.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// The marker line [`flush`] writes; never forwarded or logged.
const MARKER: &str = "\u{1b}[oxray-flush]";

/// Markers each reader has reached, counted, once capture is on.
static REACHED: Mutex<Option<[u64; 2]>> = Mutex::new(None);
static REACHED_CHANGED: Condvar = Condvar::new();
/// Markers written so far.
static WRITTEN: Mutex<u64> = Mutex::new(0);
/// The read ends of the stdout and stderr pipes, once capture is on.
static READ_ENDS: Mutex<Option<[libc::c_int; 2]>> = Mutex::new(None);
/// Per pipe: its reader took output it has not forwarded yet. Set before
/// the reader reads, so output is always in the pipe or counted here.
static READER_HOLDS_OUTPUT: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];

/// Waits until everything printed so far is forwarded (at most a second:
/// output never holds a result back for long). Does nothing unless the
/// output is captured.
pub(crate) fn flush() {
    if REACHED.lock().is_none() {
        return;
    }
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    if nothing_unforwarded() {
        return;
    }
    let target = {
        let mut written = WRITTEN.lock();
        *written += 1;
        *written
    };
    let marker = format!("{MARKER}\n");
    for fd in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: writes a byte buffer this function owns to a pipe it owns.
        unsafe { libc::write(fd, marker.as_ptr().cast(), marker.len()) };
    }
    let mut reached = REACHED.lock();
    while reached.is_some_and(|r| r.iter().any(|n| *n < target)) {
        if REACHED_CHANGED
            .wait_for(&mut reached, Duration::from_secs(1))
            .timed_out()
        {
            return;
        }
    }
}

/// Whether all output written so far has been forwarded: both pipes are
/// empty, and then (in that order) neither reader holds any.
fn nothing_unforwarded() -> bool {
    let Some(read_ends) = *READ_ENDS.lock() else {
        return false;
    };
    read_ends
        .iter()
        .zip(&READER_HOLDS_OUTPUT)
        .all(|(fd, holds)| {
            let mut queued: libc::c_int = 0;
            // SAFETY: asks how many bytes wait in a pipe this process owns.
            let asked = unsafe { libc::ioctl(*fd, libc::FIONREAD, &mut queued) };
            asked == 0 && queued == 0 && !holds.load(Ordering::SeqCst)
        })
}

/// Puts a pipe in place of stdout and stderr, and a thread per pipe that
/// copies to the original file and forwards lines through `client`.
pub(crate) fn capture(client: &Arc<WorkerClient>) -> std::io::Result<()> {
    *REACHED.lock() = Some([0; 2]);
    let mut read_ends = [0; 2];
    for (fd, err) in [(libc::STDOUT_FILENO, false), (libc::STDERR_FILENO, true)] {
        let mut ends = [0; 2];
        // SAFETY: plain syscalls on descriptors this process owns; `dup`
        // keeps the log file open after `dup2` puts the pipe in its place.
        let file = unsafe {
            if libc::pipe(ends.as_mut_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let file = libc::dup(fd);
            if file < 0 || libc::dup2(ends[1], fd) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(ends[1]);
            read_ends[usize::from(err)] = ends[0];
            (
                std::fs::File::from(OwnedFd::from_raw_fd(file)),
                std::fs::File::from(OwnedFd::from_raw_fd(ends[0])),
            )
        };
        let client = client.clone();
        std::thread::Builder::new()
            .name("oxray-log".into())
            .spawn(move || forward(file.1, file.0, err, &client))?;
    }
    *READ_ENDS.lock() = Some(read_ends);
    Ok(())
}

/// Copies everything from `pipe` to `log`, and each complete line to the head.
fn forward(mut pipe: std::fs::File, mut log: std::fs::File, err: bool, client: &WorkerClient) {
    use std::os::fd::AsRawFd;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut partial: Vec<u8> = Vec::new();
    let holds = &READER_HOLDS_OUTPUT[usize::from(err)];
    loop {
        let mut ready = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: waits on one descriptor this thread owns.
        if unsafe { libc::poll(&mut ready, 1, -1) } < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        holds.store(true, Ordering::SeqCst);
        let read = match pipe.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        partial.extend_from_slice(&buffer[..read]);
        let mut lines = Vec::new();
        let mut markers = 0;
        while let Some(end) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            let mut text = &line[..line.len() - 1];
            // A marker ends its line; what the task printed before it on
            // that line (without a newline) is output like any other.
            if let Some(before) = text.strip_suffix(MARKER.as_bytes()) {
                markers += 1;
                if before.is_empty() {
                    continue;
                }
                text = before;
            }
            let _ = log.write_all(text);
            let _ = log.write_all(b"\n");
            lines.push(String::from_utf8_lossy(text).into_owned());
        }
        if partial.len() > MAX_LINE_BYTES {
            let _ = log.write_all(&partial);
            lines.push(String::from_utf8_lossy(&partial).into_owned());
            partial.clear();
        }
        if !lines.is_empty() {
            client.send(WorkerToNode::Log {
                pid: std::process::id(),
                err,
                lines,
            });
        }
        // A line without its newline yet is output not forwarded.
        holds.store(!partial.is_empty(), Ordering::SeqCst);
        if markers > 0 {
            if let Some(reached) = REACHED.lock().as_mut() {
                reached[usize::from(err)] += markers;
            }
            REACHED_CHANGED.notify_all();
        }
    }
}
