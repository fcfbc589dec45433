//! What both binaries of the test program share: how they join a cluster and
//! run their own remote function on every node, printing one line per result
//! for the test to read. The remote functions themselves live in each binary
//! (`src/bin/*.rs`), so each executable knows only its own.

use oxray_core::{self as oxray, InitOptions, ObjectRef, ShipExecutable};
use std::time::{Duration, Instant};

/// Reads the mode from the environment the test sets:
/// `SHIP_APP_MODE` = `embedded` | `join`, `SHIP_APP_SHIP` = ship mode,
/// `SHIP_APP_ADDRESS`/`OXRAY_TOKEN` for `join`, `SHIP_APP_NODES` = how many
/// nodes to wait for, `SHIP_APP_SELF` = `delete` | `replace:PATH` (what to do
/// to this executable's file before starting, so no node can run it from
/// there).
pub fn run(call: impl Fn(&str, u64) -> ObjectRef<(String, u64)>) {
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let me = std::env::current_exe().expect("own path");
    match env("SHIP_APP_SELF").as_str() {
        "delete" => std::fs::remove_file(&me).expect("delete own file"),
        other => {
            if let Some(source) = other.strip_prefix("replace:") {
                std::fs::remove_file(&me).expect("delete own file");
                std::fs::copy(source, &me).expect("replace own file");
            }
        }
    }
    let ship = match env("SHIP_APP_SHIP").as_str() {
        "Always" => ShipExecutable::Always,
        "Never" => ShipExecutable::Never,
        _ => ShipExecutable::IfMissing,
    };
    let mut options = InitOptions::default().ship_executable(ship);
    let (address, token) = if env("SHIP_APP_MODE") == "join" {
        let address = env("SHIP_APP_ADDRESS");
        options = options.address(address.clone());
        oxray::init(options).expect("join the cluster");
        (address, env("OXRAY_TOKEN"))
    } else {
        oxray::init(options.num_cpus(1.0)).expect("start the embedded cluster");
        let (address, token) = oxray::join_address().expect("embedded cluster");
        println!("join {address} {token}");
        (address, token)
    };
    let wanted: usize = env("SHIP_APP_NODES").parse().unwrap_or(2);
    let deadline = Instant::now() + Duration::from_secs(60);
    let nodes = loop {
        let status = oxray_core::daemon::cluster_status(&address, &token).expect("status");
        let alive: Vec<String> = status
            .nodes
            .iter()
            .filter(|n| n.alive && n.total.get("CPU") > 0.0)
            .map(|n| n.node_id.clone())
            .collect();
        if alive.len() >= wanted {
            break alive;
        }
        assert!(Instant::now() < deadline, "only {alive:?} joined");
        std::thread::sleep(Duration::from_millis(50));
    };
    for (index, node) in nodes.iter().enumerate() {
        let result = call(node, index as u64 + 1).get();
        match result {
            Ok((ran_on, value)) => println!("ok {node} {ran_on} {value}"),
            Err(error) => println!("error {node} {error:?}"),
        }
    }
    oxray::shutdown();
}
