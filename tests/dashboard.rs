//! The dashboard, the Jobs API and `/metrics` of a real cluster: head and node
//! daemons are `oxray start --block` processes, the browser is a real
//! headless Chromium, jobs are real `oxray train` drivers.

mod browser_support;
mod cluster_support;

use browser_support::Browser;
use cluster_support::{oxray, start, start_node, status, Daemon, HEAD_IP};
use oxray::core::{self as oxray_core, actor, remote, InitOptions};
use oxray_dashboard::client::http_request;
use oxray_dashboard::{DashboardClient, JobState};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[remote]
fn square(x: u64) -> u64 {
    x * x
}

#[remote]
fn fails_on_purpose(code: u64) -> Result<u64, String> {
    Err(format!("failed-on-purpose-{code}"))
}

pub struct Probe {
    pings: u64,
}

#[actor]
impl Probe {
    pub fn new() -> Self {
        Probe { pings: 0 }
    }

    pub fn ping(&mut self) -> u64 {
        self.pings += 1;
        self.pings
    }
}

/// A head with its dashboard on a free port: (daemon, address, token, url).
fn start_head(session: &Path, extra: &[&str]) -> (Daemon, String, String, String) {
    let mut args = vec![
        "--head",
        "--port",
        "0",
        "--node-ip-address",
        HEAD_IP,
        "--dashboard-port",
        "0",
    ];
    args.extend_from_slice(extra);
    let head = start(session, &args);
    assert_eq!(head.ready.get(7).map(String::as_str), Some("dashboard"));
    // The ready line names the head's private token file, never the token.
    let token = std::fs::read_to_string(&head.ready[6]).expect("the head's token file");
    let (address, token, url) = (
        head.ready[4].clone(),
        token.trim().to_string(),
        head.ready[8].clone(),
    );
    (head, address, token, url)
}

fn run_oxray(session: &Path, args: &[&str]) -> String {
    let output = oxray(session).args(args).output().expect("oxray runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "oxray {args:?} failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

/// `oxray job SUBCOMMAND --address URL --token TOKEN ARGS...`, which must
/// succeed (ARGS may end with `-- CMD`).
fn oxray_job(session: &Path, url: &str, token: &str, args: &[&str]) -> String {
    let (subcommand, rest) = args.split_first().expect("a job subcommand");
    let mut all = vec!["job", subcommand, "--address", url, "--token", token];
    all.extend_from_slice(rest);
    run_oxray(session, &all)
}

fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots")
}

#[test]
fn dashboard_in_headless_chromium_shows_nodes_actors_jobs_and_refuses_a_wrong_token() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let (_head, address, token, url) = start_head(session, &["--num-cpus", "1"]);
    let _nodes: Vec<_> = (0..2)
        .map(|_| start_node(session, &address, &token, &["--num-cpus", "1"]).0)
        .collect();
    let (ok, shown) = status(session, &address, &token, &["--wait-nodes", "3"]);
    assert!(ok, "{shown}");
    let dashboard = url.trim_start_matches("http://").to_string();
    let shots = screenshots();

    // Scripts without the token, or with a wrong one, are refused.
    let anonymous = http_request(&dashboard, "GET", "/api/jobs/", &[], None).unwrap();
    assert_eq!(anonymous.status, 401);
    let wrong = [("authorization", "Bearer 0123456789abcdef")];
    let refused = http_request(&dashboard, "GET", "/metrics", &wrong, None).unwrap();
    assert_eq!(refused.status, 401);

    let browser = Browser::start();
    browser.goto(&format!("{url}/actors"));
    browser.wait_for("the login page", Duration::from_secs(10), |b| {
        b.url().ends_with("/login")
    });
    browser.type_into("#token", "not-the-cluster-token");
    browser.click("#login");
    browser.wait_for("the refusal", Duration::from_secs(10), |b| {
        b.text("#login-error").contains("Wrong token")
    });
    assert_eq!(browser.count("#nodes"), 0, "no data behind a wrong token");
    browser.screenshot(&shots, "login-refused");

    browser.type_into("#token", &token);
    browser.click("#login");
    browser.wait_for("three alive nodes", Duration::from_secs(15), |b| {
        b.count("#nodes tbody tr") == 3 && b.text("#nodes").matches("ALIVE").count() == 3
    });
    browser.wait_for("the resource charts", Duration::from_secs(15), |b| {
        b.script(
            "return Number(document.querySelector('canvas[data-resource=CPU]').dataset.points || 0);",
            serde_json::json!([]),
        )
        .as_u64()
        .unwrap_or(0)
            >= 9
    });
    browser.screenshot(&shots, "overview");

    // An actor appears, then dies.
    oxray_core::init(InitOptions::default().address(&address).token(&token)).unwrap();
    let probe = Probe::options().name("dashboard-probe").remote().unwrap();
    assert_eq!(probe.ping().get().unwrap(), 1);
    browser.goto(&format!("{url}/actors"));
    let actor_row = |b: &Browser| {
        let text = b.text("#actors");
        text.lines()
            .find(|line| line.contains("dashboard-probe"))
            .unwrap_or_default()
            .to_string()
    };
    browser.wait_for("the actor ALIVE", Duration::from_secs(15), |b| {
        actor_row(b).contains("ALIVE")
    });
    browser.screenshot(&shots, "actors-alive");
    oxray_core::kill(&probe).unwrap();
    browser.wait_for("the actor DEAD", Duration::from_secs(15), |b| {
        actor_row(b).contains("DEAD")
    });
    browser.screenshot(&shots, "actors-dead");
    let keeper = Probe::options()
        .name("dashboard-keeper")
        .num_cpus(1.0)
        .remote()
        .unwrap();
    assert_eq!(keeper.ping().get().unwrap(), 1);

    // Tasks show by state, a failure with its error.
    let squares: Vec<_> = (0..4).map(square::remote).collect();
    assert_eq!(oxray_core::get_all(&squares).unwrap(), vec![0, 1, 4, 9]);
    let failure = fails_on_purpose::remote(7).get().unwrap_err().to_string();
    assert!(failure.contains("failed-on-purpose-7"), "{failure}");
    browser.goto(&format!("{url}/tasks"));
    browser.wait_for(
        "the failed task and its error",
        Duration::from_secs(15),
        |b| {
            b.text("#tasks").lines().any(|line| {
                line.contains("fails_on_purpose")
                    && line.contains("FAILED")
                    && line.contains("failed-on-purpose-7")
            })
        },
    );
    browser.screenshot(&shots, "tasks");

    // A job submitted with the CLI goes to SUCCEEDED, and its log shows.
    let submitted = oxray_job(
        session,
        &url,
        &token,
        &[
            "submit",
            "--no-wait",
            "--",
            "oxray status && echo job-says-hello",
        ],
    );
    let id = submitted
        .split('\'')
        .nth(1)
        .expect("the submission id in quotes")
        .to_string();
    browser.goto(&format!("{url}/jobs"));
    browser.wait_for("the job SUCCEEDED", Duration::from_secs(30), |b| {
        b.text("#jobs")
            .lines()
            .any(|line| line.contains(&id) && line.contains("SUCCEEDED"))
    });
    browser.screenshot(&shots, "jobs");
    browser.goto(&format!("{url}/jobs/{id}"));
    browser.wait_for("the job's log", Duration::from_secs(15), |b| {
        let log = b.text("#log");
        log.contains("job-says-hello") && log.contains("nodes: 3 alive")
    });
    assert!(browser.text("#job").contains("SUCCEEDED"));
    browser.screenshot(&shots, "job-log");

    for (path, title) in [
        ("/placement-groups", "Placement groups"),
        ("/logs", "Logs"),
        ("/training", "Training"),
    ] {
        browser.goto(&format!("{url}{path}"));
        browser.wait_for(title, Duration::from_secs(10), |b| b.text("h1") == title);
        browser.screenshot(&shots, path.trim_start_matches('/'));
    }
    browser.goto(&format!("{url}/logs"));
    browser.wait_for("the job's log file listed", Duration::from_secs(10), |b| {
        b.text("#logs").contains(&format!("job-{id}.log"))
    });

    // /metrics, parsed as Prometheus parses it, says what `oxray list` says.
    let client = DashboardClient::new(&url, &token).unwrap();
    let metrics = parse_metrics(&client.metrics().unwrap());
    // `oxray ARGS --format json` against the cluster, parsed.
    let state_json = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--format", "json", "--address", &address, "--token", &token]);
        let text = run_oxray(session, &all);
        serde_json::from_str(&text).expect("oxray --format json")
    };
    let list = |what: &str| state_json(&["list", what]);
    let nodes = list("nodes");
    assert_eq!(nodes.len(), 3);
    assert_eq!(metrics.value("oxray_nodes", &[("state", "ALIVE")]), 3.0);
    for node in &nodes {
        let id = node["node_id"].as_str().unwrap();
        for (resource, total) in node["resources_total"].as_object().unwrap() {
            let labels = [("node_id", id), ("resource", resource.as_str())];
            let shown = metrics.value("oxray_node_resource_total", &labels);
            assert_eq!(shown, total.as_f64().unwrap(), "{id} {resource}");
        }
        let workers = metrics.value("oxray_node_workers", &[("node_id", id)]);
        assert_eq!(workers, node["workers"].as_f64().unwrap(), "{id} workers");
    }
    let actors = list("actors");
    for state in ["ALIVE", "DEAD", "PENDING_CREATION"] {
        let listed = actors.iter().filter(|a| a["state"] == state).count();
        assert_eq!(
            metrics.value("oxray_actors", &[("state", state)]),
            listed as f64,
            "{state} actors: {actors:?}"
        );
    }
    assert_eq!(metrics.value("oxray_actors", &[("state", "ALIVE")]), 1.0);
    assert_eq!(metrics.value("oxray_actors", &[("state", "DEAD")]), 1.0);
    let tasks = list("tasks");
    for state in ["FINISHED", "FAILED", "RUNNING", "PENDING_NODE_ASSIGNMENT"] {
        let listed = tasks.iter().filter(|t| t["state"] == state).count();
        let shown = metrics.value("oxray_tasks", &[("state", state)]);
        assert_eq!(shown, listed as f64, "{state} tasks");
    }
    let failed = state_json(&["list", "tasks", "--filter", "state=FAILED"]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["name"], "dashboard::fails_on_purpose");
    assert!(failed[0]["error"]
        .as_str()
        .is_some_and(|e| e.contains("failed-on-purpose-7")));
    let squares_done = tasks
        .iter()
        .filter(|t| t["name"] == "dashboard::square" && t["state"] == "FINISHED")
        .count();
    assert_eq!(squares_done, 4);
    let summary = state_json(&["summary", "tasks"]);
    let square = summary
        .iter()
        .find(|s| s["name"] == "dashboard::square")
        .unwrap();
    assert_eq!(square["state_counts"]["FINISHED"], 4);
    // The driver's `get`s went to the head as API requests over its stream.
    let gets = metrics
        .samples
        .iter()
        .find(|s| s.metric == "oxray_rpc_latency_seconds" && s.labels.get("method") == Some("Get"))
        .expect("a Get latency histogram");
    let prometheus_parse::Value::Histogram(buckets) = &gets.value else {
        panic!("oxray_rpc_latency_seconds is a histogram: {:?}", gets.value);
    };
    let counts: Vec<f64> = buckets.iter().map(|b| b.count).collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "cumulative: {counts:?}"
    );
    // The squares and the failing task: two `get`s at least (the pings'
    // results came straight from the actors' workers, not through the head).
    assert!(counts.last().is_some_and(|c| *c >= 2.0), "{counts:?}");
    let jobs = client.list_jobs().unwrap();
    assert_eq!(
        metrics.value("oxray_jobs", &[("status", "SUCCEEDED")]),
        jobs.iter()
            .filter(|j| j.status == JobState::Succeeded)
            .count() as f64
    );
    browser.goto(&format!("{url}/"));
    browser.wait_for("the busy overview", Duration::from_secs(15), |b| {
        b.text("#summary").contains("1\nActors alive")
    });
    browser.screenshot(&shots, "overview-busy");
    drop(keeper);
    oxray_core::shutdown();
}

/// A scrape parsed by the `prometheus-parse` crate.
struct Metrics {
    samples: Vec<prometheus_parse::Sample>,
}

fn parse_metrics(text: &str) -> Metrics {
    let lines = text.lines().map(|line| Ok(line.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition text");
    assert!(!scrape.samples.is_empty());
    Metrics {
        samples: scrape.samples,
    }
}

impl Metrics {
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => panic!("{name} is not a plain value"),
            })
            .collect();
        assert_eq!(found.len(), 1, "one sample of {name}{labels:?}");
        found[0]
    }
}

fn cluster_state(client: &DashboardClient) -> oxray_core::ClusterStatus {
    let response = client.request("GET", "/api/cluster_status", None).unwrap();
    serde_json::from_slice(&response.body).unwrap()
}

fn running_drivers(state: &oxray_core::ClusterStatus) -> usize {
    state.jobs.iter().filter(|j| j.running).count()
}

/// Whether `pid` is a process that has not exited (a zombie has).
fn process_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

/// The states of the EnvRunner actors the cluster lists.
fn env_runner_states(state: &oxray_core::ClusterStatus) -> Vec<&str> {
    state
        .actors
        .iter()
        .filter(|a| a.class.contains("EnvRunner"))
        .map(|a| a.state.as_str())
        .collect()
}

fn used_cpus(state: &oxray_core::ClusterStatus) -> f64 {
    state
        .nodes
        .iter()
        .filter(|n| n.alive)
        .map(|n| n.total.get("CPU") - n.available.get("CPU"))
        .sum()
}

#[test]
fn job_submit_runs_training_to_succeeded_and_stop_frees_its_resources() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let (_head, address, token, url) = start_head(session, &["--num-cpus", "2"]);
    assert!(url.starts_with("http://127.0.0.2:"), "{url}");
    let (_node, _) = start_node(session, &address, &token, &["--num-cpus", "2"]);
    let (ok, shown) = status(session, &address, &token, &["--wait-nodes", "2"]);
    assert!(ok, "{shown}");
    let work = tempfile::tempdir().unwrap();
    let work_dir = work.path().to_str().unwrap();
    std::fs::write(work.path().join(".gitignore"), "notes.txt\n").unwrap();
    std::fs::write(work.path().join("notes.txt"), "stays home").unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/ppo-cartpole.yaml");
    let config = config.to_str().unwrap();
    // `oxray job submit --no-wait -- oxray train CONFIG` for `env_steps`,
    // with `env_runners` remote EnvRunner actors (0: sampling in the driver).
    let submit_training = |name: &str, env_steps: u64, env_runners: usize| {
        let stop = format!("stop.env_steps={env_steps}");
        let runners = format!("env_runners.num_env_runners={env_runners}");
        let args = [
            "submit",
            "--working-dir",
            work_dir,
            "--no-wait",
            "--",
            "oxray",
            "train",
            config,
            "--set",
            &stop,
            "--set",
            &runners,
            "--name",
            name,
        ];
        oxray_job(session, &url, &token, &args)
    };
    let id_of = |text: &str| text.split('\'').nth(1).expect("submission id").to_string();

    // A short training run, followed with `job logs --follow` to the end.
    let submitted = submit_training("short", 4096, 0);
    let short = id_of(&submitted);
    let followed = oxray_job(session, &url, &token, &["logs", "--follow", &short]);
    assert!(followed.contains("iter    1"), "{followed}");
    assert!(followed.contains("run directory:"), "{followed}");
    assert!(
        followed.contains(&format!("Status for job '{short}': SUCCEEDED")),
        "{followed}"
    );
    let shown = oxray_job(session, &url, &token, &["status", &short]);
    assert!(shown.contains("SUCCEEDED") && shown.contains("Driver exit code: 0"));
    // `--working-dir` uploads the directory: the driver ran in the head's
    // copy of it, and the run is there, not in the directory itself.
    let client = DashboardClient::new(&url, &token).unwrap();
    let ran_in = client.job(&short).unwrap().runtime_env.working_dir.unwrap();
    assert!(
        Path::new(&ran_in).starts_with(session.join("job_packages")),
        "{ran_in}"
    );
    assert!(Path::new(&ran_in).join("results/short").is_dir());
    assert!(!work.path().join("results").exists());
    // What the directory's `.gitignore` names was not uploaded.
    assert!(Path::new(&ran_in).join(".gitignore").is_file());
    assert!(!Path::new(&ran_in).join("notes.txt").exists());
    // Unless the submitter asks to ship it; the choice reaches the job's
    // driver, which packs the head's copy again for its workers.
    let ignore_gitignore = oxray_core::IGNORE_GITIGNORE_ENV;
    let submitted = oxray(session)
        .env(ignore_gitignore, "1")
        .args(["job", "submit", "--address", &url, "--token", &token])
        .args(["--working-dir", work_dir, "--no-wait", "--", "true"])
        .output()
        .unwrap();
    assert!(submitted.status.success(), "{submitted:?}");
    let everything = client
        .job(&id_of(&String::from_utf8_lossy(&submitted.stdout)))
        .unwrap();
    assert_eq!(
        everything.runtime_env.env_vars.get(ignore_gitignore),
        Some(&"1".to_string())
    );
    let copy = everything.runtime_env.working_dir.unwrap();
    assert!(Path::new(&copy).join("notes.txt").is_file());

    // A long run sampling with two remote EnvRunner actors (a CPU each);
    // stopping it ends its driver and its actors and frees their CPUs
    // within 5 s.
    let submitted = submit_training("long", 100_000_000, 2);
    let long = id_of(&submitted);
    wait_until(
        "the long run's driver and its two EnvRunners running",
        Duration::from_secs(60),
        || {
            let state = cluster_state(&client);
            running_drivers(&state) == 1 && env_runner_states(&state) == ["ALIVE"; 2]
        },
    );
    let running = client.job(&long).unwrap();
    assert_eq!(running.status, JobState::Running);
    let driver = running.driver_pid.expect("driver pid");
    let before = cluster_state(&client);
    assert!(used_cpus(&before) >= 2.0, "{:?}", before.nodes);
    let runner_pids: Vec<u32> = before
        .actors
        .iter()
        .filter(|a| a.class.contains("EnvRunner"))
        .map(|a| a.pid.expect("a live actor's pid"))
        .collect();
    let stopping = Instant::now();
    let stopped = oxray_job(session, &url, &token, &["stop", &long]);
    assert!(stopped.contains("STOPPED"), "{stopped}");
    wait_until(
        "the driver, its actors and their CPUs released",
        Duration::from_secs(5),
        || {
            let state = cluster_state(&client);
            running_drivers(&state) == 0
                && env_runner_states(&state).iter().all(|s| *s == "DEAD")
                && used_cpus(&state) == 0.0
        },
    );
    // SAFETY: signal 0 only checks whether the driver still exists.
    assert_ne!(unsafe { libc::kill(driver as i32, 0) }, 0, "driver ended");
    wait_until(
        "the EnvRunners' worker processes ended",
        Duration::from_secs(5).saturating_sub(stopping.elapsed()),
        || runner_pids.iter().all(|pid| !process_running(*pid)),
    );
    let freed_after = stopping.elapsed();
    assert!(freed_after < Duration::from_secs(5), "{freed_after:?}");
    println!("job stop ended the job and freed its CPUs in {freed_after:?}");
    let listed = oxray_job(session, &url, &token, &["list"]);
    let states: HashMap<&str, &str> = listed
        .lines()
        .skip(1)
        .filter_map(|row| {
            let mut columns = row.split('\t');
            Some((columns.next()?, columns.next()?))
        })
        .collect();
    assert_eq!(states.get(short.as_str()), Some(&"SUCCEEDED"));
    assert_eq!(states.get(long.as_str()), Some(&"STOPPED"));
}
