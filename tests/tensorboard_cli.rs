//! `oxray tensorboard` on a finished run, the way a user meets it: the command
//! installs TensorBoard into the cached venv on first use (as it does for a
//! user), serves the results directory on a port the OS picks, and TensorBoard's
//! own HTTP data API must then show the run's scalars (with env steps as the
//! step), its config as HParams next to its final return, its config text and
//! its histograms. Headless Chromium (Debian's `chromium`, through
//! chromedriver) then renders the Scalars dashboard, which must show the
//! run's chart, and saves a screenshot. Ctrl-C (SIGINT) must stop TensorBoard
//! and everything it started.

mod browser_support;
mod train_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use browser_support::Browser;
use oxray_dashboard::client::http_request;
use serde_json::{json, Value};
use train_support::{Scratch, SMALL_PPO};

/// The first start installs TensorBoard with pip.
const START_TIMEOUT: Duration = Duration::from_secs(600);
/// TensorBoard loads event files in the background.
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
const ITERATIONS: usize = 6;

/// Whether the page's text, shadow roots included, contains every string of
/// `arguments[0]`.
const SHOWS_ALL: &str = "
    const text = (root) => [...root.querySelectorAll('*')]
        .filter((e) => e.shadowRoot)
        .reduce((t, e) => t + '\\n' + text(e.shadowRoot), root.textContent || '');
    const all = text(document.documentElement);
    return arguments[0].every((needle) => all.includes(needle));
";

#[test]
fn tensorboard_shows_scalars_hparams_text_and_histograms_of_a_run() {
    let scratch = Scratch::new();
    scratch.write("ppo.yaml", SMALL_PPO);
    // Enough iterations for TensorBoard to scale and draw the charts.
    let trained = scratch.oxray(&[
        "train",
        "ppo.yaml",
        "--name",
        "tb",
        "--set",
        &format!("stop.iterations={ITERATIONS}"),
    ]);
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
    assert_eq!(results.len(), ITERATIONS);
    let last = &results[ITERATIONS - 1];

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
    for key in last.as_object().unwrap().keys() {
        assert!(scalar_tags.contains_key(key), "no scalar {key}");
    }
    let tag = "env_runners/episode_return_mean";
    let series = server.get(&format!("/data/plugin/scalars/scalars?run={run}&tag={tag}"));
    let points = series.as_array().unwrap();
    assert_eq!(points.len(), ITERATIONS);
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
        "env.id",
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
    let logged = last[tag].as_f64().unwrap();
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

    // The Scalars dashboard in a real browser: the run's chart of the tag,
    // found through the Polymer elements' shadow roots.
    let browser = Browser::start();
    browser.goto(&format!("{}#scalars", server.url));
    browser.wait_for(
        "the run's chart on the Scalars dashboard",
        LOAD_TIMEOUT,
        |b| b.script(SHOWS_ALL, json!([[tag, run]])) == json!(true),
    );
    let screenshot = browser.screenshot(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "tensorboard-scalars",
    );
    // A blank page of that size compresses to a few kilobytes.
    let size = std::fs::metadata(&screenshot).unwrap().len();
    assert!(size > 20_000, "{} is {size} bytes", screenshot.display());
    eprintln!("screenshot: {}", screenshot.display());
    drop(browser);

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

    fn request(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string().into_bytes());
        let headers = [("content-type", "application/json")];
        let response = http_request(self.address(), method, path, &headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let text = String::from_utf8_lossy(&response.body);
        assert_eq!(response.status, 200, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
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
