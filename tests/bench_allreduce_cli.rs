//! `oxray bench allreduce` from the outside: it compares with gloo only over
//! TCP, where every rank is its own node as gloo's are on one machine.

/// `oxray bench allreduce` rows, as (layout, inter-node bytes per node,
/// the bound 2(M-1)/M x S).
fn bench_rows(transport: &str) -> Vec<(String, f64, f64)> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_oxray"))
        .args([
            "bench",
            "allreduce",
            "--ranks",
            "threads",
            "--sizes-mib",
            "1",
        ])
        .args([
            "--iterations",
            "2",
            "--warmup-seconds",
            "0",
            "--transport",
            transport,
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with("world") || line.starts_with("2 nodes"))
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let number = |from_end: usize| words[words.len() - from_end].parse::<f64>().unwrap();
            let layout = line.split("  ").next().unwrap().trim().to_string();
            (layout, number(2), number(1))
        })
        .collect()
}

/// With `--transport tcp` every rank is its own node, so all of a ring's
/// 2(n-1)/n x S bytes per rank cross TCP, as gloo's do; with shared memory
/// ranks of one node send nothing over TCP. Comparing shared memory with
/// gloo is refused.
#[test]
fn the_bench_compares_with_gloo_only_over_tcp() {
    let tcp = bench_rows("tcp");
    assert_eq!(
        tcp.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["world 2, TCP", "world 4, TCP"]
    );
    for (layout, inter_node, bound) in &tcp {
        assert!(
            *inter_node >= *bound && *inter_node <= 1.05 * bound,
            "{layout}: {inter_node} bytes over TCP, ring bound {bound}"
        );
    }
    let shared = bench_rows("shared-memory");
    let one_node: Vec<_> = shared.iter().filter(|r| r.0.contains("1 node")).collect();
    assert_eq!(one_node.len(), 2, "{shared:?}");
    assert!(one_node.iter().all(|r| r.1 == 0.0), "{shared:?}");

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_oxray"))
        .args([
            "bench",
            "allreduce",
            "--gloo",
            "scripts/peers/gloo_allreduce.py",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--transport tcp"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
