//! The one thread that starts worker processes. A worker asks the kernel to
//! kill it when its parent dies (`PR_SET_PDEATHSIG`, so no worker outlives
//! its node), and for the kernel that parent is the *thread* that forked it,
//! not the process. Workers forked from whichever thread happened to apply
//! the head's effects (a driver's thread, a test's, a short-lived runtime
//! thread) were killed with SIGKILL when that thread ended, in the middle of
//! their tasks. This thread lives as long as the process, so a worker dies
//! with its node and with nothing else. Other children that must die with
//! this process (the dashboard's job drivers) are forked here too.

use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

fn jobs() -> std::io::Result<&'static Mutex<mpsc::Sender<Job>>> {
    static JOBS: OnceLock<Result<Mutex<mpsc::Sender<Job>>, String>> = OnceLock::new();
    JOBS.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("oxray-spawner".into())
            .spawn(move || receiver.into_iter().for_each(|job| job()))
            .map(|_| Mutex::new(sender))
            .map_err(|e| format!("cannot start the thread that starts workers: {e}"))
    })
    .as_ref()
    .map_err(|message| std::io::Error::other(message.clone()))
}

/// Runs `start` (which forks) on the spawner thread and returns its result:
/// a child that set `PR_SET_PDEATHSIG` then dies with this process, not
/// with the thread that asked for it.
pub fn on_spawner_thread<T: Send + 'static>(
    start: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let (reply, answer) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = reply.send(start());
    });
    let sent = jobs()?
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send(job);
    let gone = || std::io::Error::other("the thread that starts workers is gone");
    sent.map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};

    /// `sleep 30` that dies with the thread that forks it, as a worker does.
    fn child() -> std::process::Command {
        let mut command = std::process::Command::new("sleep");
        command.arg("30");
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        command
    }

    /// Whether `child` is killed within `window`.
    fn killed_within(child: &mut std::process::Child, window: Duration) -> bool {
        let deadline = Instant::now() + window;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return std::os::unix::process::ExitStatusExt::signal(&status)
                    == Some(libc::SIGKILL);
            }
            std::thread::yield_now();
        }
        false
    }

    /// Forked from a thread that then ends, a child is killed (the fault);
    /// forked on the spawner thread for that same thread, it lives on.
    #[test]
    fn a_child_outlives_the_thread_that_asked_for_it() {
        // (through the spawner thread, killed when the asking thread ends)
        for (spawner, killed) in [(false, true), (true, false)] {
            let mut child = std::thread::spawn(move || match spawner {
                true => on_spawner_thread(|| child().spawn()).unwrap(),
                false => child().spawn().unwrap(),
            })
            .join()
            .unwrap();
            // A kill arrives as the asking thread exits; a second is ample.
            let window = Duration::from_secs(if killed { 10 } else { 1 });
            assert_eq!(
                killed_within(&mut child, window),
                killed,
                "spawner {spawner}"
            );
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
