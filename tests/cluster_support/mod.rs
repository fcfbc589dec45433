//! Starting real `oxray start --block` daemons for the multi-node tests, each
//! node on its own loopback address (the head on 127.0.0.2, nodes on
//! 127.0.0.3, 127.0.0.4, ...) and bound only there, as separate machines would
//! be: anything that advertises 127.0.0.1 instead of its node's address fails.

// Each test binary compiles this module and uses only some of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// The head's address.
pub const HEAD_IP: &str = "127.0.0.2";

/// A loopback address for the next node of this test binary.
pub fn next_node_ip() -> String {
    static NEXT: AtomicU8 = AtomicU8::new(3);
    format!("127.0.0.{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A daemon started by a test, killed when dropped.
pub struct Daemon {
    pub child: Child,
    /// Its ready line, split into words.
    pub ready: Vec<String>,
}

impl Daemon {
    /// Asks the daemon to stop (SIGTERM, as `oxray stop` does) and waits for
    /// it; SIGKILL only if it does not stop within 10 s. Returns how long it
    /// took.
    pub fn stop(&mut self) -> Duration {
        let start = Instant::now();
        // Already reaped (a test killed it): its pid may name another process.
        if let Ok(Some(_)) = self.child.try_wait() {
            return start.elapsed();
        }
        // SAFETY: signals the daemon this test started; SIGCONT lets one that
        // a test froze handle the SIGTERM.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
            libc::kill(self.child.id() as i32, libc::SIGCONT);
        }
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        start.elapsed()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn oxray(session: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_oxray"));
    command
        .env("OXRAY_SESSION_DIR", session)
        .env_remove("OXRAY_TOKEN");
    command
}

/// `oxray train CONFIG --address ADDRESS --name NAME --set ...` as a driver
/// of the cluster, run in `session` with piped output.
pub fn train(session: &Path, address: &str, token: &str, name: &str, sets: &[&str]) -> Command {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/ppo-cartpole.yaml");
    let mut command = oxray(session);
    command
        .current_dir(session)
        .args(["train", config, "--address", address, "--name", name])
        .env("OXRAY_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for set in sets {
        command.args(["--set", set]);
    }
    command
}

/// Starts a daemon in the foreground; returns once it printed its ready line.
pub fn start(session: &Path, args: &[&str]) -> Daemon {
    start_with_stderr(session, args, Stdio::null())
}

/// [`start`], its standard error going to `stderr`.
pub fn start_with_stderr(session: &Path, args: &[&str], stderr: impl Into<Stdio>) -> Daemon {
    let mut child = oxray(session)
        .arg("start")
        .args(args)
        .arg("--block")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("oxray starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("ready line");
    assert!(line.contains("ready"), "daemon did not get ready: {line:?}");
    Daemon {
        child,
        ready: line.split_whitespace().map(str::to_string).collect(),
    }
}

/// A head on [`HEAD_IP`] and an ephemeral port: (daemon, address, token).
pub fn start_head(session: &Path, extra: &[&str]) -> (Daemon, String, String) {
    let mut args = vec!["--head", "--port", "0", "--node-ip-address", HEAD_IP];
    args.extend_from_slice(extra);
    let head = start(session, &args);
    // The ready line names the private file that holds the token, never it.
    let token = std::fs::read_to_string(&head.ready[6]).expect("the head's token file");
    let address = head.ready[4].clone();
    (head, address, token.trim().to_string())
}

/// A node on the next loopback address joining `address`: (daemon, node id).
pub fn start_node(session: &Path, address: &str, token: &str, extra: &[&str]) -> (Daemon, String) {
    let ip = next_node_ip();
    let mut args = vec![
        "--address",
        address,
        "--token",
        token,
        "--node-ip-address",
        &ip,
    ];
    args.extend_from_slice(extra);
    let node = start(session, &args);
    let id = node.ready[2].clone();
    (node, id)
}

/// Runs `oxray status` against the cluster: (succeeded, stdout + stderr).
pub fn status(session: &Path, address: &str, token: &str, extra: &[&str]) -> (bool, String) {
    let output = oxray(session)
        .args(["status", "--address", address, "--token", token])
        .args(extra)
        .output()
        .expect("oxray status runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// The shared-memory session of a node, from its id (`node-SESSION`).
pub fn node_session(node_id: &str) -> String {
    node_id.strip_prefix("node-").unwrap_or(node_id).to_string()
}

/// The shared-memory sessions of every node the head at `address` knows.
pub fn node_sessions(address: &str, token: &str) -> Vec<String> {
    oxray::core::daemon::cluster_status(address, token)
        .unwrap()
        .nodes
        .iter()
        .map(|n| node_session(&n.node_id))
        .collect()
}

/// The files of a node's session in /dev/shm.
pub fn shm_files_of(session: &str) -> Vec<String> {
    let prefix = format!("oxray-{session}-");
    std::fs::read_dir("/dev/shm")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (up to 10 s) until no process of the cluster of session directory
/// `session` is left, then asserts its nodes left no shared memory.
pub fn assert_nothing_left(session: &Path, node_sessions: &[String]) {
    wait_for_exit(session, node_sessions);
    for node in node_sessions {
        assert_eq!(shm_files_of(node), Vec::<String>::new(), "{node}");
    }
}

/// Waits (up to 10 s) until no process of the cluster of session directory
/// `session` is left.
pub fn wait_for_exit(session: &Path, node_sessions: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_of(session, node_sessions).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left running: {:?}",
            processes_of(session, node_sessions)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills a node daemon outright (SIGKILL, as a machine that fails) and waits
/// until it and the workers it started are gone: killing only sends the
/// signal, and until they exit they could still answer a call.
pub fn kill_node(node: &mut Daemon, node_id: &str) {
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    let workers = [format!("OXRAY_SESSION={}", node_session(node_id))];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_marked(&workers).is_empty() {
        assert!(Instant::now() < deadline, "{node_id}'s workers outlived it");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Processes started for the cluster of session directory `session` (daemons
/// carry it in their environment) or by its nodes (workers carry their node's
/// shared-memory session).
pub fn processes_of(session: &Path, node_sessions: &[String]) -> Vec<u32> {
    let mut marks = vec![format!("OXRAY_SESSION_DIR={}", session.display())];
    marks.extend(node_sessions.iter().map(|s| format!("OXRAY_SESSION={s}")));
    processes_marked(&marks)
}

/// Live processes (other than this one) with one of `marks` (`NAME=value`)
/// in their environment.
fn processes_marked(marks: &[String]) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'))
        {
            continue;
        }
        let ours = environ.split(|b| *b == 0).any(|var| {
            let var = String::from_utf8_lossy(var);
            marks.iter().any(|m| var == *m)
        });
        if ours && pid != std::process::id() {
            found.push(pid);
        }
    }
    found
}
