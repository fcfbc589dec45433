//! `scripts/slurm/oxray.sbatch` and `oxray symmetric-run` on one machine: fake
//! SLURM variables, stand-ins for `srun` and `scontrol` on PATH that run the
//! command locally, every "node" on 127.0.0.1 (the head on a free port, node
//! daemons on ephemeral ones), an isolated session directory, and a short
//! check script as the job instead of training.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/slurm/oxray.sbatch");
const OXRAY: &str = env!("CARGO_BIN_EXE_oxray");
/// Bound on every script or command run here.
const LIMIT: Duration = Duration::from_secs(120);

/// `srun` for one machine: records how it was called and its pid (which the
/// command keeps, through `exec`), drops srun's options, runs the rest.
const FAKE_SRUN: &str = r#"#!/usr/bin/env bash
set -euo pipefail
echo "srun $*" >>"$FAKE_DIR/srun.log"
while (($# > 0)); do
    case $1 in
        -w | -N | -n | -c | --nodelist | --nodes | --ntasks | --cpus-per-task) shift 2 ;;
        -*) shift ;;
        *) break ;;
    esac
done
echo "$$" >>"$FAKE_DIR/srun.pids"
exec "$@"
"#;

/// `scontrol show hostnames LIST`: the hosts in FAKE_HOSTS, one a line.
const FAKE_SCONTROL: &str = r#"#!/usr/bin/env bash
set -euo pipefail
[[ "$1 $2" == "show hostnames" ]] || { echo "fake scontrol: unexpected $*" >&2; exit 2; }
echo "$3" >"$FAKE_DIR/scontrol.arg"
tr ' ' '\n' <<<"$FAKE_HOSTS"
"#;

/// The job: what a training run would see of the cluster.
const JOB: &str = r#"#!/usr/bin/env bash
set -euo pipefail
"$OXRAY_BIN" status --address "$OXRAY_ADDRESS" >"$FAKE_DIR/status.txt"
ls "$OXRAY_SESSION_DIR/pids" >"$FAKE_DIR/session.pids" 2>/dev/null || true
printf '%s' "$OXRAY_TOKEN" >"$FAKE_DIR/token.txt"
echo "job ran with: $*"
if [[ -n "${JOB_UNTIL_TERM:-}" ]]; then
    trap 'echo "job got TERM" >"$FAKE_DIR/term.txt"; exit 7' TERM
    trap 'echo "job got USR1" >"$FAKE_DIR/usr1.txt"' USR1
    : >"$FAKE_DIR/started"
    while :; do sleep 0.05; done
fi
exit "${JOB_EXIT:-0}"
"#;

struct Fake {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    session: PathBuf,
}

impl Fake {
    fn new() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        for (name, text) in [
            ("srun", FAKE_SRUN),
            ("scontrol", FAKE_SCONTROL),
            ("job.sh", JOB),
        ] {
            let file = path.join(name);
            std::fs::write(&file, text).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Fake {
            session: path.join("session"),
            dir: path,
            _dir: dir,
        }
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// A command with a clean environment: PATH with the stand-ins first, the
    /// session directory, and nothing of a real SLURM job or cluster.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        let path = format!(
            "{}:{}",
            self.dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        command
            .env_clear()
            .env("PATH", path)
            .env("HOME", &self.dir)
            .env("FAKE_DIR", &self.dir)
            .env("OXRAY_SESSION_DIR", &self.session)
            .stdin(Stdio::null());
        command
    }

    /// The sbatch script as a 3-node job of 1 CPU per node.
    fn sbatch(&self, nodes: usize, port: u16) -> Command {
        let hosts: Vec<String> = (1..=nodes).map(|i| format!("node{i}")).collect();
        let mut command = self.command("bash");
        command
            .arg(SCRIPT)
            .env("SLURM_JOB_ID", "4242")
            .env("SLURM_JOB_NODELIST", format!("node[1-{nodes}]"))
            .env("SLURM_JOB_NUM_NODES", nodes.to_string())
            .env("SLURM_CPUS_PER_TASK", "1")
            .env("FAKE_HOSTS", hosts.join(" "))
            .env("OXRAY_BIN", OXRAY)
            .env("OXRAY_NODE_IP", "127.0.0.1")
            .env("OXRAY_PORT", port.to_string())
            .env("OXRAY_WAIT_TIMEOUT", "60");
        command
    }

    /// Runs to the end within LIMIT with output in files; returns the status
    /// and stdout + stderr.
    fn run(&self, mut command: Command, name: &str) -> (ExitStatus, String) {
        let out = self.dir.join(format!("{name}.out"));
        let err = self.dir.join(format!("{name}.err"));
        command
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        let status = wait_bounded(command.spawn().unwrap(), name);
        let output =
            std::fs::read_to_string(&out).unwrap() + &std::fs::read_to_string(&err).unwrap();
        (status, output)
    }
}

fn wait_bounded(mut child: Child, name: &str) -> ExitStatus {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether `pid` still runs (a zombie waiting for its parent does not).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

fn pids(text: &str) -> Vec<u32> {
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn sbatch_script_brings_up_three_nodes_runs_the_job_and_stops_them() {
    let fake = Fake::new();
    let port = free_port();
    let mut command = fake.sbatch(3, port);
    command.arg(fake.dir.join("job.sh")).args(["--lr", "0.1"]);
    let (status, output) = fake.run(command, "sbatch");
    assert!(status.success(), "script failed ({status}):\n{output}");
    assert!(output.contains("job ran with: --lr 0.1"), "{output}");

    // The job saw the whole cluster alive.
    let shown = fake.read("status.txt");
    assert!(
        shown.contains(&format!("cluster at 127.0.0.1:{port}")),
        "{shown}"
    );
    assert!(shown.contains("nodes: 3 alive, 0 dead"), "{shown}");

    // Head on the first host, one srun step per other host, hosts from scontrol.
    assert_eq!(fake.read("scontrol.arg").trim(), "node[1-3]");
    let calls = fake.read("srun.log");
    assert_eq!(calls.matches("srun --nodes").count(), 2, "{calls}");
    for host in ["node2", "node3"] {
        assert!(
            calls.contains(&format!("--nodes=1 --ntasks=1 -w {host} ")),
            "{calls}"
        );
    }
    assert!(!calls.contains("node1"), "{calls}");
    assert!(
        output.contains("3 node(s), 1 CPU(s) and 0 GPU(s) each"),
        "{output}"
    );

    // The token stays out of the job's output.
    let token = fake.read("token.txt");
    assert!(token.len() >= 16, "job got no token: {token:?}");
    assert!(
        !output.contains(&token),
        "token leaked into the output:\n{output}"
    );

    // Nothing the script started is left: head, node daemons, srun steps.
    let started: Vec<u32> = pids(&fake.read("session.pids"))
        .into_iter()
        .chain(pids(&fake.read("srun.pids")))
        .collect();
    assert_eq!(
        started.len(),
        3 + 2,
        "the session's head and 2 daemons, and the 2 srun steps (the daemons, exec'd): {started:?}"
    );
    let left: Vec<u32> = started.into_iter().filter(|&p| running(p)).collect();
    assert!(left.is_empty(), "still running after the script: {left:?}");
}

#[test]
fn sbatch_script_exits_with_the_jobs_status_and_still_stops_the_cluster() {
    let fake = Fake::new();
    let mut command = fake.sbatch(2, free_port());
    command.arg(fake.dir.join("job.sh")).env("JOB_EXIT", "3");
    let (status, output) = fake.run(command, "sbatch");
    assert_eq!(status.code(), Some(3), "{output}");
    assert!(
        fake.read("status.txt").contains("nodes: 2 alive"),
        "{output}"
    );
    let started: Vec<u32> = pids(&fake.read("session.pids"))
        .into_iter()
        .chain(pids(&fake.read("srun.pids")))
        .collect();
    assert_eq!(started.len(), 3, "{started:?}");
    assert!(started.iter().all(|&p| !running(p)), "{started:?}");
}

#[test]
fn sbatch_script_passes_sigusr1_and_sigterm_to_the_job_and_stops_the_cluster() {
    let fake = Fake::new();
    let mut command = fake.sbatch(2, free_port());
    command
        .arg(fake.dir.join("job.sh"))
        .env("JOB_UNTIL_TERM", "1")
        .stdout(std::fs::File::create(fake.dir.join("term.out")).unwrap())
        .stderr(std::fs::File::create(fake.dir.join("term.err")).unwrap());
    let script = command.spawn().unwrap();
    let deadline = Instant::now() + LIMIT;
    while !fake.dir.join("started").exists() {
        assert!(Instant::now() < deadline, "the job never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A warning before the time limit (--signal=B:USR1@SECONDS) is passed
    // on to the job, and the cluster stays.
    // SAFETY: signals the child this test started and has not yet waited for.
    unsafe { libc::kill(script.id() as i32, libc::SIGUSR1) };
    while fake.read("usr1.txt").is_empty() {
        assert!(Instant::now() < deadline, "the job never got SIGUSR1");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(fake.read("usr1.txt").trim(), "job got USR1");
    // What scancel (or --signal=B:TERM@SECONDS) does to the batch shell.
    // SAFETY: as above.
    unsafe { libc::kill(script.id() as i32, libc::SIGTERM) };
    let status = wait_bounded(script, "sbatch");
    let output = fake.read("term.out") + &fake.read("term.err");
    assert_eq!(status.code(), Some(7), "the job's status:\n{output}");
    assert_eq!(fake.read("term.txt").trim(), "job got TERM", "{output}");
    assert!(output.contains("cluster stopped"), "{output}");
    let started: Vec<u32> = pids(&fake.read("session.pids"))
        .into_iter()
        .chain(pids(&fake.read("srun.pids")))
        .collect();
    assert_eq!(started.len(), 3, "{started:?}");
    assert!(started.iter().all(|&p| !running(p)), "{started:?}");
}

#[test]
fn sbatch_script_names_a_missing_variable() {
    let fake = Fake::new();
    let mut command = fake.sbatch(2, free_port());
    command.env_remove("SLURM_CPUS_PER_TASK");
    let (status, output) = fake.run(command, "sbatch");
    assert!(!status.success(), "{output}");
    assert!(output.contains("SLURM_CPUS_PER_TASK"), "{output}");
    assert!(fake.read("srun.log").is_empty(), "nothing may start");

    let mut command = fake.sbatch(2, free_port());
    command.env("OXRAY_NUM_CPUS", "2");
    let (status, output) = fake.run(command, "sbatch");
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("more than the 1 CPUs allocated"),
        "{output}"
    );
}

#[test]
fn symmetric_run_starts_the_head_on_task_zero_and_joins_the_others() {
    let fake = Fake::new();
    let address = format!("127.0.0.1:{}", free_port());
    let task = |procid: usize| {
        let mut command = fake.command(OXRAY);
        command
            .env("SLURM_PROCID", procid.to_string())
            .env("OXRAY_TOKEN", "symmetric-run-test-token")
            .env("OXRAY_BIN", OXRAY)
            .args(["symmetric-run", "--address", &address, "--min-nodes", "3"])
            .args(["--num-cpus", "1", "--timeout", "60", "--"])
            .arg(fake.dir.join("job.sh"))
            .arg("from-task-0");
        command
    };
    // Joining tasks first: they wait for the head to answer.
    let children: Vec<(Child, usize)> = [2, 1, 0]
        .into_iter()
        .map(|procid| {
            let mut command = task(procid);
            let out = std::fs::File::create(fake.dir.join(format!("task{procid}.out"))).unwrap();
            let err = std::fs::File::create(fake.dir.join(format!("task{procid}.err"))).unwrap();
            command.stdout(out).stderr(err);
            (command.spawn().unwrap(), procid)
        })
        .collect();
    let pids: Vec<u32> = children.iter().map(|(c, _)| c.id()).collect();
    for (child, procid) in children {
        let status = wait_bounded(child, &format!("task {procid}"));
        let output =
            fake.read(&format!("task{procid}.out")) + &fake.read(&format!("task{procid}.err"));
        assert!(
            status.success(),
            "task {procid} failed ({status}):\n{output}"
        );
        if procid == 0 {
            assert!(output.contains("job ran with: from-task-0"), "{output}");
        } else {
            assert!(!output.contains("job ran"), "{output}");
        }
    }
    let shown = fake.read("status.txt");
    assert!(shown.contains(&format!("cluster at {address}")), "{shown}");
    assert!(shown.contains("nodes: 3 alive, 0 dead"), "{shown}");
    assert_eq!(fake.read("token.txt"), "symmetric-run-test-token");
    assert!(pids.iter().all(|&p| !running(p)));
    let session: &Path = &fake.session;
    assert!(!session.join("head_address").exists(), "the head cleans up");
}

#[test]
fn symmetric_run_exits_with_the_commands_status() {
    let fake = Fake::new();
    let address = format!("127.0.0.1:{}", free_port());
    let mut command = fake.command(OXRAY);
    command.args([
        "symmetric-run",
        "--address",
        &address,
        "--num-cpus",
        "1",
        "--",
    ]);
    command.args(["bash", "-c", "exit 5"]);
    let (status, output) = fake.run(command, "lone");
    assert_eq!(status.code(), Some(5), "{output}");

    // A joining task without a token is told what is missing.
    let mut command = fake.command(OXRAY);
    command.env("SLURM_PROCID", "1").args([
        "symmetric-run",
        "--address",
        &address,
        "--min-nodes",
        "2",
        "--",
        "true",
    ]);
    let (status, output) = fake.run(command, "tokenless");
    assert!(!status.success(), "{output}");
    assert!(output.contains("OXRAY_TOKEN"), "{output}");
}

/// SLURM's warning before a time limit (`srun --signal=USR1@SECONDS`) goes
/// to every process of the step, here one process group: the head passes it
/// on to `oxray train` (which so gets it twice), the node daemons and
/// workers outlive it, and the run stops after its iteration with a
/// checkpoint, `oxray train`'s 138 being the step's status.
#[test]
fn symmetric_run_stops_training_with_a_checkpoint_on_sigusr1() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;

    let fake = Fake::new();
    std::fs::write(
        fake.dir.join("small.yaml"),
        "algorithm: PPO\nenv: CartPole-v1\nenv_runners:\n  num_env_runners: 1\n  \
         num_envs_per_env_runner: 8\ntraining:\n  train_batch_size: 256\n  \
         minibatch_size: 128\n  num_epochs: 1\nstop:\n  iterations: 1000000\n",
    )
    .unwrap();
    let address = format!("127.0.0.2:{}", free_port());
    let task = |procid: usize, node_ip: &str| {
        let mut command = fake.command(OXRAY);
        command
            .current_dir(&fake.dir)
            .env("SLURM_PROCID", procid.to_string())
            .env("OXRAY_TOKEN", "symmetric-run-usr1-token")
            .args(["symmetric-run", "--address", &address, "--min-nodes", "2"])
            .args(["--node-ip-address", node_ip])
            .args(["--num-cpus", "1", "--timeout", "60", "--"])
            .args([OXRAY, "train", "small.yaml", "--address", &address]);
        command
    };
    let mut head = task(0, "127.0.0.2")
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(fake.dir.join("head.err")).unwrap())
        .spawn()
        .unwrap();
    let group = head.id() as i32;
    let node = task(1, "127.0.0.3")
        .process_group(group)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(fake.dir.join("node.err")).unwrap())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(head.stdout.take().unwrap());
    let mut shown = String::new();
    while !shown.lines().any(|line| line.starts_with("iter    2")) {
        let read = out.read_line(&mut shown).unwrap();
        assert!(read > 0, "{shown}{}", fake.read("head.err"));
    }
    // SAFETY: signals the group this test created for the step.
    assert_eq!(unsafe { libc::kill(-group, libc::SIGUSR1) }, 0);
    std::io::Read::read_to_string(&mut out, &mut shown).unwrap();
    let status = wait_bounded(head, "head");
    let err = fake.read("head.err");
    assert_eq!(status.code(), Some(138), "{shown}{err}");
    assert!(
        shown.contains("done: interrupted (SIGUSR1) after "),
        "{shown}"
    );
    assert!(err.contains("continue with `oxray train --resume"), "{err}");
    assert!(!err.contains("failed"), "no worker may die of it:\n{err}");
    let node_status = wait_bounded(node, "node");
    assert!(node_status.success(), "{}", fake.read("node.err"));
    let checkpoints: Vec<PathBuf> = glob_checkpoints(&fake.dir.join("results"));
    assert!(!checkpoints.is_empty(), "{shown}");
    // Workers end with their node (a death signal, delivered as it exits).
    let deadline = Instant::now() + Duration::from_secs(5);
    // SAFETY: probes the group; signal 0 sends nothing.
    while unsafe { libc::kill(-group, 0) } == 0 {
        assert!(Instant::now() < deadline, "a process outlived the step");
        std::thread::yield_now();
    }
}

/// Every `checkpoint.json` under `dir`.
fn glob_checkpoints(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.ends_with("checkpoint.json") {
                found.push(path);
            }
        }
    }
    found
}
