//! `oxray train --address` on a two-node cluster keeps training when the node
//! hosting an EnvRunner is killed: the runner restarts on the surviving node
//! and the loss shows in the results.

mod cluster_support;

use cluster_support::{start_head, start_node, train};
use std::io::{BufRead, BufReader};

#[test]
fn training_survives_the_loss_of_an_env_runner_node() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let (_head, address, token) = start_head(session, &["--num-cpus", "2"]);
    let (mut node, _) = start_node(session, &address, &token, &["--num-cpus", "2"]);
    let mut train = train(
        session,
        &address,
        &token,
        "survivor",
        &[
            "env_runners.num_env_runners=2",
            "env_runners.num_envs_per_env_runner=4",
            "stop.iterations=40",
            "stop.episode_return_mean=100000",
        ],
    )
    .spawn()
    .unwrap();
    let mut progress = BufReader::new(train.stdout.take().unwrap()).lines();
    let first = progress.next().expect("a progress line").unwrap();
    assert!(first.starts_with("iter"), "{first}");
    // The two runners are spread over both nodes; one lives on this node.
    node.child.kill().unwrap();
    let rest: Vec<String> = progress.map(Result::unwrap).collect();
    let status = train.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut train.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        status.success(),
        "training failed: {stderr}\n{}",
        rest.join("\n")
    );
    assert!(
        rest.iter()
            .any(|l| l.starts_with("done:") && l.contains("40 iterations")),
        "{}",
        rest.join("\n")
    );

    let results = std::fs::read_dir(session.join("results/survivor"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(results.join("result.json"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = lines.last().unwrap();
    assert!(
        last["fault_tolerance/num_remote_env_runner_restarts"]
            .as_f64()
            .unwrap()
            >= 1.0,
        "{last}"
    );
    assert_eq!(
        last["fault_tolerance/num_healthy_env_runners"]
            .as_f64()
            .unwrap(),
        2.0,
        "{last}"
    );
    assert!(
        stderr.contains("EnvRunner") && stderr.contains("restart"),
        "{stderr}"
    );
}
