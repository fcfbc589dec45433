//! Starting real `oxray start --block` daemons on 127.0.0.1 for the
//! multi-node tests.

// Each test binary compiles this module and uses only some of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A daemon started by a test, killed when dropped.
pub struct Daemon {
    pub child: Child,
    /// Its ready line, split into words.
    pub ready: Vec<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn oxray(session: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_oxray"));
    command
        .env("OXRAY_SESSION_DIR", session)
        .env_remove("OXRAY_TOKEN");
    command
}

/// Starts a daemon in the foreground; returns once it printed its ready line.
pub fn start(session: &Path, args: &[&str]) -> Daemon {
    let mut child = oxray(session)
        .arg("start")
        .args(args)
        .arg("--block")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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

/// A head on an ephemeral port: (daemon, address, token).
pub fn start_head(session: &Path, extra: &[&str]) -> (Daemon, String, String) {
    let mut args = vec!["--head", "--port", "0"];
    args.extend_from_slice(extra);
    let head = start(session, &args);
    let (address, token) = (head.ready[4].clone(), head.ready[6].clone());
    (head, address, token)
}

/// A node joining `address`: (daemon, node id).
pub fn start_node(session: &Path, address: &str, token: &str, extra: &[&str]) -> (Daemon, String) {
    let mut args = vec!["--address", address, "--token", token];
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
