//! The Jobs REST API over real HTTP on loopback, with real driver processes
//! (shell commands): states, exit codes, logs, stop, errors, and the token.

use oxray_dashboard::client::http_request;
use oxray_dashboard::jobs::{ClusterEnv, JobSupervisor};
use oxray_dashboard::packages::Packages;
use oxray_dashboard::{
    Dashboard, DashboardClient, DashboardError, DashboardOptions, JobState, JobSubmitRequest,
    RuntimeEnv,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "test-token-0123456789";

fn dashboard(logs: &std::path::Path) -> Dashboard {
    Dashboard::start(DashboardOptions {
        bind: "127.0.0.1:0".parse().unwrap(),
        token: TOKEN.into(),
        head_address: "127.0.0.1:1".into(),
        log_dir: logs.to_path_buf(),
        packages_dir: logs.join("packages"),
        status: Arc::new(oxray_core::ClusterStatus::default),
        nodes: Arc::new(Vec::new),
    })
    .unwrap()
}

fn job(entrypoint: &str) -> JobSubmitRequest {
    JobSubmitRequest {
        entrypoint: entrypoint.into(),
        submission_id: None,
        runtime_env: RuntimeEnv::default(),
        metadata: Default::default(),
    }
}

fn wait_final(client: &DashboardClient, id: &str) -> oxray_dashboard::JobDetails {
    wait_final_by(id, || client.job(id).unwrap())
}

/// Polls `details` of job `id` until it reaches a final state.
fn wait_final_by(
    id: &str,
    details: impl Fn() -> oxray_dashboard::JobDetails,
) -> oxray_dashboard::JobDetails {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job = details();
        if job.status.is_terminal() {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} still {}", job.status);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn jobs_run_to_their_final_state_with_logs_exit_codes_and_environment() {
    let logs = tempfile::tempdir().unwrap();
    let dashboard = dashboard(logs.path());
    let client = DashboardClient::new(&dashboard.url(), TOKEN).unwrap();

    let mut hello = job("echo \"hello from $OXRAY_JOB_SUBMISSION_ID in $PWD with $GREETING\"");
    let work = tempfile::tempdir().unwrap();
    hello.runtime_env.working_dir = Some(work.path().display().to_string());
    hello
        .runtime_env
        .env_vars
        .insert("GREETING".into(), "hi".into());
    let id = client.submit_job(&hello).unwrap();
    assert!(id.starts_with("oxraysubmit_"), "{id}");
    let done = wait_final(&client, &id);
    assert_eq!(done.status, JobState::Succeeded);
    assert_eq!(done.driver_exit_code, Some(0));
    let log = client.job_logs(&id, 0).unwrap();
    assert_eq!(
        log.logs,
        format!("hello from {id} in {} with hi\n", work.path().display())
    );
    assert_eq!(client.job_logs(&id, log.offset).unwrap().logs, "");

    // The job's variables reach its workers: the driver gets them as its
    // runtime env, whose workers on every node set them.
    let mut handed = job("printf '%s' \"$OXRAY_RUNTIME_ENV\"");
    handed.runtime_env.env_vars = hello.runtime_env.env_vars.clone();
    let handed = wait_final(&client, &client.submit_job(&handed).unwrap());
    let runtime_env: oxray_core::RuntimeEnv =
        serde_json::from_str(&client.job_logs(&handed.submission_id, 0).unwrap().logs).unwrap();
    assert_eq!(runtime_env.env_vars, hello.runtime_env.env_vars);
    assert_eq!(runtime_env.working_dir, None);

    let failing = client.submit_job(&job("echo oops >&2; exit 3")).unwrap();
    let failed = wait_final(&client, &failing);
    assert_eq!(failed.status, JobState::Failed);
    assert_eq!(failed.driver_exit_code, Some(3));
    assert_eq!(client.job_logs(&failing, 0).unwrap().logs, "oops\n");

    let listed: Vec<String> = client
        .list_jobs()
        .unwrap()
        .into_iter()
        .map(|j| j.submission_id)
        .collect();
    assert_eq!(
        listed,
        vec![id.clone(), handed.submission_id.clone(), failing.clone()]
    );
    client.delete_job(&failing).unwrap();
    assert!(matches!(
        client.job(&failing),
        Err(DashboardError::Api { status: 404, .. })
    ));
}

#[test]
fn stop_ends_the_driver_and_everything_it_started() {
    let logs = tempfile::tempdir().unwrap();
    let dashboard = dashboard(logs.path());
    let client = DashboardClient::new(&dashboard.url(), TOKEN).unwrap();
    // The driver starts a child that would outlive a plain kill of the driver.
    let id = client
        .submit_job(&job("sleep 300 & echo child $!; wait"))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let child: i32 = loop {
        let text = client.job_logs(&id, 0).unwrap().logs;
        if let Some(pid) = text.strip_prefix("child ") {
            break pid.trim().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "the driver did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    let stopping = Instant::now();
    assert!(client.stop_job(&id).unwrap());
    let stopped = wait_final(&client, &id);
    assert_eq!(stopped.status, JobState::Stopped);
    assert!(stopping.elapsed() < Duration::from_secs(5));
    // SAFETY: signal 0 only checks whether the process exists.
    let deadline = Instant::now() + Duration::from_secs(5);
    while unsafe { libc::kill(child, 0) } == 0 {
        assert!(Instant::now() < deadline, "the driver's child survived");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!client.stop_job(&id).unwrap(), "a stopped job stops once");
}

/// A working directory uploaded as a package (as `oxray job submit
/// --working-dir` does from a machine without the cluster's file system):
/// the driver runs in the head's copy, which its runtime env ships on to the
/// workers; a second upload of the same tree is skipped; a package that
/// does not match its digest, or a job naming one never uploaded, is refused
/// by name; the copy stays after the dashboard, with what the job wrote.
#[test]
fn jobs_run_in_uploaded_working_directories() {
    let logs = tempfile::tempdir().unwrap();
    let dashboard = dashboard(logs.path());
    let client = DashboardClient::new(&dashboard.url(), TOKEN).unwrap();
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("data.txt"), "from the laptop").unwrap();
    let (digest, archive) = oxray_core::pack_working_dir(tree.path(), &[]).unwrap();

    let uri = client.upload_package(&digest, archive.clone()).unwrap();
    assert_eq!(uri, format!("package://{digest}"));
    let mut uploaded = job("cat data.txt; echo; pwd; printf '%s' \"$OXRAY_RUNTIME_ENV\"");
    uploaded.runtime_env.working_dir = Some(uri.clone());
    let done = wait_final(&client, &client.submit_job(&uploaded).unwrap());
    assert_eq!(done.status, JobState::Succeeded, "{}", done.message);
    let log = client.job_logs(&done.submission_id, 0).unwrap().logs;
    let lines: Vec<&str> = log.lines().collect();
    let [data, cwd, runtime_env] = lines[..] else {
        panic!("{log}");
    };
    assert_eq!(data, "from the laptop");
    let copy = std::path::Path::new(cwd);
    assert!(copy.starts_with(logs.path().join("packages")), "{cwd}");
    let runtime_env: oxray_core::RuntimeEnv = serde_json::from_str(runtime_env).unwrap();
    assert_eq!(runtime_env.working_dir.as_deref(), Some(copy));
    assert_eq!(
        done.runtime_env.working_dir.as_deref(),
        Some(cwd),
        "where it ran"
    );

    // The head holds it: the client asks first and does not send it again.
    std::fs::write(copy.join("marker"), "").unwrap();
    client.upload_package(&digest, archive.clone()).unwrap();
    assert!(copy.join("marker").exists());

    let mut tampered = archive;
    *tampered.last_mut().unwrap() ^= 1;
    let other = format!("{:064x}", 7);
    let refused = client.upload_package(&other, tampered).unwrap_err();
    assert!(
        matches!(&refused, DashboardError::Api { status: 400, message, .. } if message.contains("SHA-256")),
        "{refused}"
    );
    let mut unknown = job("true");
    unknown.runtime_env.working_dir = Some(format!("package://{other}"));
    let refused = client.submit_job(&unknown).unwrap_err();
    assert!(
        matches!(&refused, DashboardError::Api { status: 400, message, .. } if message.contains(&other)),
        "{refused}"
    );

    drop(dashboard);
    assert_eq!(
        std::fs::read_to_string(copy.join("data.txt")).unwrap(),
        "from the laptop"
    );
}

/// A driver submitted from a thread that then ends runs to completion: it
/// dies with the process that started it (its death signal), not with the
/// submitting thread, which the kernel would take for its parent were it
/// forked there. The driver waits for a file the test creates only after the
/// submitting thread has ended.
#[test]
fn a_driver_outlives_the_thread_that_submitted_it() {
    let logs = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let supervisor = JobSupervisor::new(
        logs.path().to_path_buf(),
        Arc::new(Packages::new(logs.path().join("packages"))),
        ClusterEnv {
            head_address: "127.0.0.1:1".into(),
            token: TOKEN.into(),
        },
        runtime.handle().clone(),
    );
    let go = logs.path().join("go");
    let entrypoint = format!(
        "while [ ! -e '{}' ]; do sleep 0.02; done; echo finished",
        go.display()
    );
    let submitter = supervisor.clone();
    let id = std::thread::spawn(move || submitter.submit(job(&entrypoint)).unwrap().submission_id)
        .join()
        .unwrap();
    std::fs::write(&go, b"").unwrap();
    let done = wait_final_by(&id, || supervisor.get(&id).unwrap());
    assert_eq!(done.status, JobState::Succeeded, "{}", done.message);
    let log = std::fs::read_to_string(&done.log_path).unwrap();
    assert_eq!(log, "finished\n");
}

#[test]
fn bad_requests_are_named_and_the_token_is_required() {
    let logs = tempfile::tempdir().unwrap();
    let dashboard = dashboard(logs.path());
    let client = DashboardClient::new(&dashboard.url(), TOKEN).unwrap();

    let mut nowhere = job("true");
    nowhere.runtime_env.working_dir = Some("/no/such/dir".into());
    let error = client.submit_job(&nowhere).unwrap_err().to_string();
    assert!(
        error.contains("400") && error.contains("/no/such/dir"),
        "{error}"
    );
    let error = client.submit_job(&job("  ")).unwrap_err().to_string();
    assert!(error.contains("entrypoint is empty"), "{error}");
    let mut bad_id = job("true");
    bad_id.submission_id = Some("../escape".into());
    let error = client.submit_job(&bad_id).unwrap_err().to_string();
    assert!(error.contains("submission id"), "{error}");
    let error = client
        .stop_job("oxraysubmit_missing")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("404") && error.contains("oxraysubmit_missing"),
        "{error}"
    );
    let garbage = http_request(
        dashboard.address().to_string().as_str(),
        "POST",
        "/api/jobs/",
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-type", "application/json"),
        ],
        Some(b"{\"entry".to_vec()),
    )
    .unwrap();
    assert_eq!(garbage.status, 400, "{}", garbage.text());

    let wrong = DashboardClient::new(&dashboard.url(), "wrong-token").unwrap();
    assert!(matches!(
        wrong.list_jobs(),
        Err(DashboardError::Unauthorized { .. })
    ));
    let address = dashboard.address().to_string();
    let page = http_request(&address, "GET", "/jobs", &[], None).unwrap();
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), Some("/login"));
    let cookie = format!("oxray_token={TOKEN}");
    let page = http_request(&address, "GET", "/jobs", &[("cookie", &cookie)], None).unwrap();
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<h1>Jobs</h1>"));
    let login = http_request(
        &address,
        "POST",
        "/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(format!("token={TOKEN}").into_bytes()),
    )
    .unwrap();
    assert_eq!(login.status, 303);
    assert!(login
        .header("set-cookie")
        .is_some_and(|c| c.contains(&cookie) && c.contains("HttpOnly")));
}
