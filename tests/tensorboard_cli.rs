//! `oxray tensorboard` on a finished run, the way a user meets it: the command
//! installs TensorBoard into the cached venv on first use (as it does for a
//! user), serves the results directory on a port the OS picks, and TensorBoard's
//! own HTTP data API must then show the run's scalars (with env steps as the
//! step), its config as HParams next to its final return, its config text and
//! its histograms. Headless Chromium (Debian's `chromium`) then renders the
//! Scalars dashboard, which must name the run's tags, and saves a screenshot.
//! Ctrl-C (SIGINT) must stop TensorBoard and everything it started.

mod train_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use train_support::{Scratch, SMALL_PPO};

/// The first start installs TensorBoard with pip.
const START_TIMEOUT: Duration = Duration::from_secs(600);
/// TensorBoard loads event files in the background.
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
const WINDOW: (u32, u32) = (1400, 1000);

#[test]
fn tensorboard_shows_scalars_hparams_text_and_histograms_of_a_run() {
    let scratch = Scratch::new();
    scratch.write("ppo.yaml", SMALL_PPO);
    let trained = scratch.oxray(&["train", "ppo.yaml", "--name", "tb"]);
    assert!(
        trained.status.success(),
        "{}",
        train_support::stderr(&trained)
    );
    let run_dir = scratch.runs("tb").pop().expect("a run directory");
    let run = format!("tb/{}", run_dir.file_name().unwrap().to_string_lossy());
    let results: Vec<Value> = std::fs::read_to_string(run_dir.join("result.json"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(results.len(), 2);

    let server = Tensorboard::start(scratch.path());
    let runs = server.poll("/data/runs", |runs| {
        runs.as_array().unwrap().iter().any(|r| r == &json!(run))
    });
    assert_eq!(runs, json!([run]));

    // Scalars: every result key, stepped by env steps sampled, values as logged.
    let tags = server.poll("/data/plugin/scalars/tags", |tags| {
        tags[&run].get("time_total_s").is_some()
    });
    let scalar_tags = tags[&run].as_object().unwrap();
    for key in results[1].as_object().unwrap().keys() {
        assert!(scalar_tags.contains_key(key), "no scalar {key}");
    }
    let tag = "env_runners/episode_return_mean";
    let series = server.get(&format!("/data/plugin/scalars/scalars?run={run}&tag={tag}"));
    let points = series.as_array().unwrap();
    assert_eq!(points.len(), 2);
    for (point, result) in points.iter().zip(&results) {
        assert_eq!(
            point[1].as_f64(),
            result["num_env_steps_sampled_lifetime"].as_f64()
        );
        let logged = result[tag].as_f64().unwrap();
        assert!((point[2].as_f64().unwrap() - logged).abs() < 1e-4 * logged.abs());
    }

    // HParams: the config's keys, and the run with its final return.
    let experiment = server.post("/data/plugin/hparams/experiment", json!({}));
    let hparams: Vec<&str> = experiment["hparamInfos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|info| info["name"].as_str().unwrap())
        .collect();
    for key in [
        "algorithm",
        "env",
        "seed",
        "training.lr",
        "training.train_batch_size",
        "env_runners.num_envs_per_env_runner",
        "model.fcnet_hiddens",
        "reporting.histogram_frequency",
    ] {
        assert!(hparams.contains(&key), "no hparam {key} in {hparams:?}");
    }
    let groups = server.post(
        "/data/plugin/hparams/session_groups",
        json!({
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
            "startIndex": 0,
            "sliceSize": 10,
        }),
    );
    let groups = groups["sessionGroups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["hparams"]["training.lr"], json!(1.0e-3));
    assert_eq!(groups[0]["hparams"]["algorithm"], json!("PPO"));
    assert_eq!(
        groups[0]["hparams"]["model.fcnet_hiddens"],
        json!("[64,64]")
    );
    let final_return = groups[0]["metricValues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"]["tag"] == json!(tag))
        .unwrap_or_else(|| panic!("no {tag} in {groups:?}"));
    let logged = results[1][tag].as_f64().unwrap();
    assert!((final_return["value"].as_f64().unwrap() - logged).abs() < 1e-4 * logged.abs());

    // The config as text.
    let text = server.get("/data/plugin/text/tags");
    assert_eq!(text[&run], json!(["config"]));

    // Histograms at the first iteration (the default frequency, 10, starts
    // there): every sampled action counted once.
    let histograms = server.get("/data/plugin/histograms/tags");
    let histogram_tags = histograms[&run].as_object().unwrap();
    for tag in [
        "env_runners/sampled_actions",
        "learners/default_policy/advantages",
        "learners/default_policy/weights/pi_head.weight",
        "learners/default_policy/weights/vf.0.bias",
    ] {
        assert!(histogram_tags.contains_key(tag), "no histogram {tag}");
    }
    let actions = server.get(&format!(
        "/data/plugin/histograms/histograms?run={run}&tag=env_runners/sampled_actions"
    ));
    let [first] = actions.as_array().unwrap().as_slice() else {
        panic!("one histogram expected: {actions}")
    };
    assert_eq!(
        first[1].as_f64(),
        results[0]["num_env_steps_sampled_lifetime"].as_f64()
    );
    let counted: f64 = first[2]
        .as_array()
        .unwrap()
        .iter()
        .map(|bucket| bucket[2].as_f64().unwrap())
        .sum();
    assert_eq!(
        Some(counted),
        results[0]["env_runners/num_env_steps_sampled"].as_f64()
    );

    // The scalars in a real browser: a screenshot of the Scalars dashboard,
    // and the rendered page of the Time Series dashboard (Angular, so its
    // tags and runs are in the DOM Chromium dumps; the Scalars dashboard's
    // Polymer elements keep theirs in shadow roots) must name the run and tag.
    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tensorboard-scalars.png");
    chromium(
        &format!("{}#scalars", server.url),
        &format!("--screenshot={}", screenshot.display()),
    );
    let dom = chromium(&format!("{}#timeseries", server.url), "--dump-dom");
    assert!(dom.contains(tag), "the page does not show {tag}");
    assert!(dom.contains(&run), "the page does not show run {run}");
    let png = std::fs::read(&screenshot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!((size(16), size(20)), WINDOW, "screenshot size");
    eprintln!("screenshot: {}", screenshot.display());

    server.stop();
}

/// `oxray tensorboard` running in the background.
struct Tensorboard {
    child: Child,
    url: String,
    /// What the command printed on stdout after its URL line.
    stdout: mpsc::Receiver<String>,
}

impl Tensorboard {
    fn start(dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_oxray"))
            .args(["tensorboard", "--logdir", "results", "--port", "0"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run oxray tensorboard");
        let (sender, stdout) = mpsc::channel();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let line = stdout
            .recv_timeout(START_TIMEOUT)
            .expect("oxray tensorboard prints its URL");
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_string();
        assert!(line.contains("Ctrl-C"), "{line}");
        Tensorboard { child, url, stdout }
    }

    fn address(&self) -> &str {
        self.url.trim_start_matches("http://").trim_end_matches('/')
    }

    fn get(&self, path: &str) -> Value {
        self.request("GET", path, None)
    }

    fn post(&self, path: &str, body: Value) -> Value {
        self.request("POST", path, Some(body))
    }

    /// Asks for `path` until `ready` accepts the answer.
    fn poll(&self, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + LOAD_TIMEOUT;
        loop {
            let answer = self.get(path);
            if ready(&answer) {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never got ready: {answer}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// One HTTP/1.0 request (the connection closes after the answer).
    fn request(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let mut stream = TcpStream::connect(self.address()).expect("connect to TensorBoard");
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            stream,
            "{method} {} HTTP/1.0\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            path,
            self.address(),
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        let status = head.split_whitespace().nth(1);
        assert_eq!(status, Some("200"), "{method} {path}: {head}\n{body}");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// Ctrl-C: TensorBoard and everything in its process group must be gone.
    fn stop(mut self) {
        let pid = self.child.id() as i32;
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        let tensorboard: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
        // SAFETY: signals the oxray process this test started.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "oxray tensorboard ignored SIGINT"
            );
            std::thread::sleep(POLL);
        };
        assert!(status.success(), "{status}");
        let said: Vec<String> = self.stdout.try_iter().collect();
        assert_eq!(said, ["TensorBoard stopped"]);
        let left = processes_in_group(tensorboard);
        assert!(left.is_empty(), "left running: {left:?}");
    }
}

impl Drop for Tensorboard {
    fn drop(&mut self) {
        // A failed assertion must not leave the server running; the kernel
        // stops TensorBoard when oxray dies.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pids of live processes whose process group is `group`.
fn processes_in_group(group: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the command name in parentheses: state, ppid, pgrp.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .unwrap()
                .1
                .split_whitespace()
                .collect();
            fields[0] != "Z" && fields[2] == group.to_string()
        })
        .collect()
}

/// Loads `url` in headless Chromium with a fresh profile, doing `mode`
/// (`--screenshot=FILE`, `--dump-dom`); what it printed.
fn chromium(url: &str, mode: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            &format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            // Lets the dashboard fetch its data and draw before the page is
            // captured.
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(mode)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("headless Chromium (Debian package `chromium`; .ci/run installs it)");
    assert!(
        output.status.success(),
        "chromium {mode}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
