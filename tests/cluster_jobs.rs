//! Jobs own what they create: `oxray train --address` runs back to back on a
//! three-node loopback cluster each get the CPUs their EnvRunners need,
//! because a finished or SIGKILLed driver's actors end with it.

mod cluster_support;

use cluster_support::{oxray, start_head, start_node, status, train};
use oxray::core::{self as oxray_core, actor, daemon, ClusterStatus, InitOptions, Lifetime};
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

/// Two EnvRunners of one CPU each on a cluster of three CPUs: a second run
/// fits only if the first one's runners are gone.
const RUN: &[&str] = &[
    "env_runners.num_env_runners=2",
    "env_runners.num_envs_per_env_runner=2",
    "training.train_batch_size=256",
    "training.minibatch_size=128",
    "training.num_epochs=1",
    "stop.episode_return_mean=100000",
];

fn cpus_in_use(state: &ClusterStatus) -> f64 {
    state
        .nodes
        .iter()
        .filter(|n| n.alive)
        .map(|n| n.total.get("CPU") - n.available.get("CPU"))
        .sum()
}

fn live_actors(state: &ClusterStatus) -> usize {
    state.actors.iter().filter(|a| a.state != "DEAD").count()
}

#[test]
fn train_runs_back_to_back_and_a_killed_driver_releases_its_actors() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let (_head, address, token) = start_head(session, &["--num-cpus", "1"]);
    let _nodes: Vec<_> = (0..2)
        .map(|_| start_node(session, &address, &token, &["--num-cpus", "1"]))
        .collect();
    let (ok, shown) = status(session, &address, &token, &["--wait-nodes", "3"]);
    assert!(ok, "{shown}");
    let cluster = || daemon::cluster_status(&address, &token).unwrap();

    for run in ["first", "second"] {
        let mut args = RUN.to_vec();
        args.push("stop.iterations=2");
        let output = train(session, &address, &token, run, &args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{run} run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // A finished driver's actors are gone once its connection closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while live_actors(&cluster()) > 0 || cpus_in_use(&cluster()) > 0.0 {
        assert!(Instant::now() < deadline, "{:?}", cluster().actors);
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut args = RUN.to_vec();
    args.push("stop.iterations=100000");
    let mut third = train(session, &address, &token, "killed", &args)
        .spawn()
        .unwrap();
    let mut progress = BufReader::new(third.stdout.take().unwrap()).lines();
    let first = progress.next().expect("a progress line").unwrap();
    assert!(first.starts_with("iter"), "{first}");
    assert_eq!(live_actors(&cluster()), 2);
    assert_eq!(cpus_in_use(&cluster()), 2.0);
    third.kill().unwrap();
    third.wait().unwrap();
    let killed_at = Instant::now();
    while live_actors(&cluster()) > 0 || cpus_in_use(&cluster()) > 0.0 {
        assert!(
            killed_at.elapsed() < Duration::from_secs(5),
            "still held 5 s after the driver died: {:?}",
            cluster().actors
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "driver-kill: actors gone and CPUs free after {:.2} s",
        killed_at.elapsed().as_secs_f64()
    );

    let mut args = RUN.to_vec();
    args.push("stop.iterations=1");
    let started = Instant::now();
    let output = train(session, &address, &token, "fourth", &args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "fourth run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!(
        "fourth run finished after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Every job is in the table, finished, and each actor names its job.
    let list = |what: &str| -> Vec<serde_json::Value> {
        let output = oxray(session)
            .args(["list", what, "--format", "json", "--address", &address])
            .args(["--token", &token])
            .output()
            .unwrap();
        assert!(output.status.success());
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let jobs = list("jobs");
    assert_eq!(jobs.len(), 4, "{jobs:?}");
    assert!(
        jobs.iter()
            .all(|j| j["state"] == "FINISHED" && j["end_time"].is_u64()),
        "{jobs:?}"
    );
    let actors = list("actors");
    assert_eq!(actors.len(), 8, "{actors:?}");
    for actor in &actors {
        assert_eq!(actor["state"], "DEAD");
        let job = actor["job_id"].as_str().unwrap();
        assert!(jobs.iter().any(|j| j["job_id"] == job), "{actor}");
        assert!(actor["pid"].is_u64() || actor["pid"].is_null());
    }
}

pub struct Keeper {
    value: u64,
}

#[actor]
impl Keeper {
    pub fn new(value: u64) -> Self {
        Keeper { value }
    }

    pub fn value(&self) -> u64 {
        self.value
    }
}

#[test]
fn detached_named_actors_outlive_their_job_in_their_namespace() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let (_head, address, token) = start_head(session, &["--num-cpus", "2"]);
    let join = |namespace: &str| {
        oxray_core::init(
            InitOptions::default()
                .address(&address)
                .token(&token)
                .namespace(namespace),
        )
        .unwrap()
    };
    join("team");
    let kept = Keeper::options()
        .name("kept")
        .lifetime(Lifetime::Detached)
        .remote(7)
        .unwrap();
    let temporary = Keeper::options().name("temporary").remote(8).unwrap();
    assert_eq!(kept.value().get().unwrap(), 7);
    assert_eq!(temporary.value().get().unwrap(), 8);
    let unnamed = Keeper::options().lifetime(Lifetime::Detached).remote(9);
    assert!(unnamed.is_err(), "a detached actor needs a name");
    drop((kept, temporary));
    // The driver leaves: its job ends, and with it the non-detached actor.
    oxray_core::shutdown();

    join("team");
    let found = oxray_core::get_actor::<Keeper>("kept").unwrap();
    assert_eq!(found.value().get().unwrap(), 7);
    let deadline = Instant::now() + Duration::from_secs(5);
    while oxray_core::get_actor::<Keeper>("temporary").is_ok() {
        assert!(Instant::now() < deadline, "the job's actor outlived it");
        std::thread::sleep(Duration::from_millis(20));
    }
    oxray_core::shutdown();

    join("another-team");
    assert!(oxray_core::get_actor::<Keeper>("kept").is_err());
    oxray_core::shutdown();
    // The head sees the last driver's stream end a moment later.
    let ended = || {
        let state = daemon::cluster_status(&address, &token).unwrap();
        state.jobs.iter().filter(|j| !j.running).count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while ended() < 3 {
        assert!(Instant::now() < deadline, "only {} jobs ended", ended());
        std::thread::sleep(Duration::from_millis(20));
    }
    let state = daemon::cluster_status(&address, &token).unwrap();
    assert_eq!(state.jobs.len(), 3);
    let kept: Vec<_> = state
        .actors
        .iter()
        .filter(|a| a.name.as_deref() == Some("kept"))
        .collect();
    assert!(kept.len() == 1 && kept[0].state == "ALIVE" && kept[0].detached);
}

/// A file holding `token`, private to its owner as `--token-file` requires.
fn token_file(dir: &std::path::Path, name: &str, token: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, token).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A driver on another machine has no session directory holding the
/// token: `oxray train --address` and `oxray job` take it from
/// `--token-file`, and a wrong one is refused (as is a node's `oxray
/// start` with it) with one error naming how to pass it, before anything
/// is printed as if it had been accepted.
#[test]
fn a_driver_elsewhere_passes_the_token_by_file_and_a_wrong_one_is_refused() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let (head, address, token) = start_head(session, &["--num-cpus", "1", "--dashboard-port", "0"]);
    let dashboard = head.ready[8].clone();
    let elsewhere = tempfile::tempdir().unwrap();
    let elsewhere = elsewhere.path();
    let right = token_file(elsewhere, "right", &token);
    let wrong = token_file(elsewhere, "wrong", "not-the-cluster-token");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/ppo-cartpole.yaml");
    let train = |token_args: &[&std::ffi::OsStr]| {
        oxray(elsewhere)
            .current_dir(elsewhere)
            .args(["train", config, "--address", &address])
            .args(token_args)
            .args(["--set", "env_runners.num_env_runners=1"])
            .args(["--set", "training.train_batch_size=256"])
            .args(["--set", "training.minibatch_size=128"])
            .args(["--set", "stop.training_iteration=1"])
            .output()
            .unwrap()
    };
    let job_list = |token_file: &std::path::Path| {
        oxray(elsewhere)
            .args(["job", "list", "--address", &dashboard, "--token-file"])
            .arg(token_file)
            .output()
            .unwrap()
    };
    let flag = std::ffi::OsStr::new("--token-file");

    let trained = train(&[flag, right.as_os_str()]);
    assert!(
        trained.status.success(),
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );
    assert!(String::from_utf8_lossy(&trained.stdout).contains("after 1 iterations"));
    let listed = job_list(&right);
    assert!(listed.status.success(), "{listed:?}");
    assert!(String::from_utf8_lossy(&listed.stdout).starts_with("SUBMISSION_ID"));

    let node = oxray(elsewhere)
        .args(["start", "--address", &address, "--node-ip-address"])
        .arg(cluster_support::next_node_ip())
        .arg("--token-file")
        .arg(&wrong)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&node.stderr);
    assert!(said.contains("refused the connection"), "{said}");
    assert_eq!(said.matches("error:").count(), 1, "{said}");
    for refused in [
        train(&[flag, wrong.as_os_str()]),
        train(&[]),
        job_list(&wrong),
        node,
    ] {
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{stderr}");
        assert!(refused.stdout.is_empty(), "{refused:?}");
        assert!(stderr.contains("pass --token-file"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// A run asking for more CPUs than the cluster has free hears why it
/// waits, as Ray's autoscaler warns in the driver's output, instead of
/// waiting in silence; `oxray status` shows what waits.
#[test]
fn a_driver_whose_actors_wait_for_resources_is_told_so() {
    use std::process::Stdio;
    use std::sync::mpsc;

    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let (_head, address, token) = start_head(session, &["--num-cpus", "1"]);
    let mut driver = train(
        session,
        &address,
        &token,
        "waits",
        &["env_runners.num_env_runners=2", "stop.iterations=1"],
    )
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let stderr = driver.stderr.take().unwrap();
    let (lines, warned) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let warning = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = warned.recv_timeout(left).expect("a warning within 60 s");
        if line.starts_with("(scheduler) Warning") {
            break line;
        }
    };
    // `oxray status` lists it among the demands, as `ray status` does.
    let (ok, shown) = status(session, &address, &token, &[]);
    driver.kill().unwrap();
    driver.wait().unwrap();
    assert!(ok, "{shown}");
    assert!(
        shown.contains("demands (waiting for resources):\n  {CPU: 1}: 1 pending tasks/actors"),
        "{shown}"
    );
    assert!(
        warning.contains("1 × actor oxray_rl::env_runner::EnvRunner asking for {CPU: 1}"),
        "{warning}"
    );
    assert!(warning.contains("{CPU: 0"), "{warning}");
}
