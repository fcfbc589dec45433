//! Code on every node: a program of its own (the `ship_app` crate outside the
//! workspace, built here) runs its remote functions on nodes that cannot see
//! its executable — its file is deleted once it started — because the nodes
//! fetch a copy through the head; two such programs share one cluster; and a
//! node that cannot get the executable fails the tasks with a typed error
//! naming the node and the reason.

mod cluster_support;

use cluster_support::{oxray, start_head, start_node};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Builds `tests/ship_app` (its own workspace, depending on oxray-core by
/// path) into this build's target directory, so it reuses the compiled
/// dependencies; returns the directory holding `ship_a` and `ship_b`.
fn ship_apps() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let crate_dir = root.join("tests/ship_app");
        // The workspace's lock file pins the same dependency versions.
        std::fs::copy(root.join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();
        let target = std::env::current_exe()
            .unwrap()
            .ancestors()
            .nth(3)
            .expect("target/<profile>/deps/<test>")
            .to_path_buf();
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--bins", "--manifest-path"])
            .arg(crate_dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .status()
            .unwrap();
        assert!(status.success(), "building tests/ship_app failed");
        target.join("release")
    })
}

/// A copy of test program `name` at a fresh path, as a user's binary.
fn copy_of(name: &str, dir: &Path) -> PathBuf {
    let copy = dir.join(name);
    std::fs::copy(ship_apps().join(name), &copy).unwrap();
    copy
}

/// Runs a copy of program `name` with `envs`; returns (success, stdout, stderr).
fn run_app(
    name: &str,
    dir: &Path,
    session: &Path,
    envs: &[(&str, &str)],
) -> (bool, String, String) {
    let output = spawn(
        app(name, dir, session, envs)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .wait_with_output()
    .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn app(name: &str, dir: &Path, session: &Path, envs: &[(&str, &str)]) -> Command {
    let mut command = Command::new(copy_of(name, dir));
    command
        .env("OXRAY_SESSION_DIR", session)
        .env("SHIP_APP_SELF", "delete")
        .envs(envs.iter().copied())
        .stdin(Stdio::null());
    command
}

/// Starts a program just copied: a child another test thread is forking may
/// hold the copy open for writing until it execs (ETXTBSY), so retry until
/// the kernel lets go.
fn spawn(command: &mut Command) -> std::process::Child {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match command.spawn() {
            Err(e)
                if e.raw_os_error() == Some(libc::ETXTBSY)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::yield_now()
            }
            outcome => return outcome.unwrap(),
        }
    }
}

/// The `ok NODE RAN_ON VALUE` lines of a program's output.
fn results(stdout: &str) -> Vec<(String, String, u64)> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("ok ")?.split_whitespace();
            Some((
                words.next()?.to_string(),
                words.next()?.to_string(),
                words.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn an_embedded_driver_ships_its_executable_to_a_joined_node() {
    let session = tempfile::tempdir().unwrap();
    let apps = tempfile::tempdir().unwrap();
    let mut driver = spawn(app("ship_a", apps.path(), session.path(), &[]).stdout(Stdio::piped()));
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(driver.stdout.take().unwrap()));
    let join = lines.next().unwrap().unwrap();
    let words: Vec<&str> = join.split_whitespace().collect();
    assert_eq!(words[0], "join", "{join}");
    let (_node, node_id) = start_node(session.path(), words[1], words[2], &["--num-cpus", "1"]);
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(driver.wait().unwrap().success(), "{}", rest.join("\n"));
    let results = results(&rest.join("\n"));
    assert_eq!(results.len(), 2, "{rest:?}");
    for (pinned, ran_on, _) in &results {
        assert_eq!(pinned, ran_on, "the task ran where it was pinned");
    }
    // The joined node ran a verified copy from its cache: the program's bytes.
    let (_, _, value) = results.iter().find(|(n, _, _)| *n == node_id).unwrap();
    assert!([1, 4].contains(value), "{results:?}");
    let cached = files_under(&session.path().join("executables"));
    let original = std::fs::read(ship_apps().join("ship_a")).unwrap();
    assert!(
        cached.iter().any(|f| std::fs::read(f).unwrap() == original),
        "no copy of the program in the node's cache: {cached:?}"
    );
    let stopped = oxray(session.path()).arg("stop").status().unwrap();
    assert!(stopped.success());
    assert!(
        !session.path().join("executables").exists(),
        "oxray stop leaves the cache"
    );
}

#[test]
fn two_programs_share_a_cluster_none_of_whose_nodes_can_see_them() {
    let session = tempfile::tempdir().unwrap();
    let apps = tempfile::tempdir().unwrap();
    let (_head, address, token) = start_head(session.path(), &["--num-cpus", "1"]);
    let (_node, _) = start_node(session.path(), &address, &token, &["--num-cpus", "1"]);
    let envs = [
        ("SHIP_APP_MODE", "join"),
        ("SHIP_APP_ADDRESS", address.as_str()),
        ("OXRAY_TOKEN", token.as_str()),
    ];
    let a = spawn(
        app("ship_a", apps.path(), session.path(), &envs)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let b = spawn(
        app("ship_b", apps.path(), session.path(), &envs)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    for (program, power) in [(a, 2), (b, 3)] {
        let output = program.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stdout}\n{stderr}");
        let results = results(&stdout);
        assert_eq!(results.len(), 2, "both nodes ran it: {stdout}\n{stderr}");
        for (index, (pinned, ran_on, value)) in results.iter().enumerate() {
            assert_eq!(pinned, ran_on);
            assert_eq!(*value, (index as u64 + 1).pow(power), "{stdout}");
        }
    }
}

#[test]
fn a_node_that_cannot_get_the_executable_fails_the_tasks_with_the_reason() {
    let session = tempfile::tempdir().unwrap();
    let apps = tempfile::tempdir().unwrap();
    let (_head, address, token) = start_head(session.path(), &["--num-cpus", "0"]);
    let (_node, node_id) = start_node(
        session.path(),
        &address,
        &token,
        &["--num-cpus", "1", "--executable-cache-bytes", "4096"],
    );
    let other_bytes = ship_apps().join("ship_b");
    let replace = format!("replace:{}", other_bytes.display());
    let cases = [
        ("Never", "delete", "Missing"),
        ("Never", replace.as_str(), "DigestMismatch"),
        ("IfMissing", "delete", "TooLarge"),
    ];
    for (ship, own_file, reason) in cases {
        let (ok, stdout, stderr) = run_app(
            "ship_a",
            apps.path(),
            session.path(),
            &[
                ("SHIP_APP_MODE", "join"),
                ("SHIP_APP_ADDRESS", address.as_str()),
                ("OXRAY_TOKEN", token.as_str()),
                ("SHIP_APP_NODES", "1"),
                ("SHIP_APP_SHIP", ship),
                ("SHIP_APP_SELF", own_file),
            ],
        );
        assert!(ok, "{stdout}\n{stderr}");
        let line = stdout
            .lines()
            .find(|l| l.starts_with("error "))
            .unwrap_or_else(|| panic!("{ship}/{own_file}: no error: {stdout}\n{stderr}"));
        assert!(
            line.contains("ExecutableUnavailable")
                && line.contains(&format!("node: \"{node_id}\""))
                && line.contains(reason),
            "{ship}/{own_file}: {line}"
        );
        assert!(!line.contains("UnknownFunction"), "{line}");
    }
}
