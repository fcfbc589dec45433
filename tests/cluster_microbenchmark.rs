//! `oxray microbenchmark` names the mode it measures in, joins a head on its
//! own loopback address with `--address`, and with `--compare` sets its
//! figures beside Ray's from a file, refusing a malformed file with a clear
//! error.

mod cluster_support;

use cluster_support::{assert_nothing_left, node_sessions, oxray, start_head};

const ACTOR_SYNC: &str = "1:1 actor calls sync";
const PUT_CALLS: &str = "single client put calls (Plasma Store)";
const GET_CALLS: &str = "single client get calls (Plasma Store)";

/// Runs `oxray microbenchmark ARGS` with short rounds: (succeeded, stdout,
/// stderr).
fn microbenchmark(session: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = oxray(session)
        .arg("microbenchmark")
        .args(["--rounds", "1", "--round-seconds", "0.2"])
        .args(args)
        .output()
        .expect("oxray microbenchmark runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The mean oxray printed for `metric` (`<name> per second <mean> +- <sd>`).
fn printed_mean(stdout: &str, metric: &str) -> f64 {
    let prefix = format!("{metric} per second ");
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no figure for {metric}: {stdout}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn address_mode_joins_the_head_and_compare_prints_the_ratio_to_rays_figures() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let (mut head, address, token) = start_head(session, &["--num-cpus", "1"]);
    let sessions = node_sessions(&address, &token);
    let token_file = session.join("driver-token");
    std::fs::write(&token_file, &token).unwrap();
    // A token file must be private to its user.
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    // Ray's figure of 100 ops/s makes the ratio oxray's mean / 100.
    let ray = session.join("ray.tsv");
    std::fs::write(
        &ray,
        format!("# ray 2.60.0\n{ACTOR_SYNC}\t100\t5\n{GET_CALLS}\t5000\t10\n"),
    )
    .unwrap();

    let filter = format!("{ACTOR_SYNC}|{PUT_CALLS}");
    let (ok, stdout, stderr) = microbenchmark(
        session,
        &[
            &filter,
            "--address",
            &address,
            "--token-file",
            token_file.to_str().unwrap(),
            "--compare",
            ray.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.starts_with(&format!("mode: --address {address} (a driver joined")),
        "{stdout}"
    );
    let mean = printed_mean(&stdout, ACTOR_SYNC);
    assert!(mean > 0.0, "{stdout}");
    let row = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with(ACTOR_SYNC))
        .unwrap_or_else(|| panic!("no comparison row: {stdout}"));
    let ratio: f64 = row
        .split_whitespace()
        .last()
        .and_then(|r| r.strip_suffix('x'))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no ratio in {row:?}"));
    assert!(
        (ratio - mean / 100.0).abs() <= 0.006,
        "ratio {ratio} for a mean of {mean}: {row}"
    );
    assert!(row.contains("100.00 +- 5.00"), "{row}");
    assert!(
        stdout.contains(&format!("measured by oxray only: {PUT_CALLS}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("in Ray's file only: {GET_CALLS}")),
        "{stdout}"
    );

    head.stop();
    assert_nothing_left(session, &sessions);
}

#[test]
fn embedded_mode_is_named_and_a_malformed_figures_file_is_refused() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let (ok, stdout, stderr) = microbenchmark(session, &[PUT_CALLS]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.starts_with("mode: embedded"), "{stdout}");
    assert!(printed_mean(&stdout, PUT_CALLS) > 0.0);

    let ray = session.join("ray.tsv");
    std::fs::write(&ray, format!("# ray\n{ACTOR_SYNC}\tfast\t5\n")).unwrap();
    let (ok, stdout, stderr) = microbenchmark(session, &["--compare", ray.to_str().unwrap()]);
    assert!(!ok, "a malformed file was accepted: {stdout}");
    assert!(
        stderr.contains(&format!(
            "Ray's figures file {}, line 2: the mean \"fast\" is not a number",
            ray.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Refused before measuring anything.
    assert!(!stdout.contains("mode:"), "{stdout}");
}
