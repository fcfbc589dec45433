//! Attack: a stranger without the token hammers the head with connections
//! and calls, hoping to fill its log (and the disk under it) or starve it.

mod cluster_support;

use cluster_support::oxray;
use oxray::core::daemon;
use oxray::core::protocol::StatusRequest;
use oxray::core::wire::PostcardCodec;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tonic::codegen::http::uri::PathAndQuery;

const ATTEMPTS: usize = 10_000;

#[test]
fn ten_thousand_unauthenticated_attempts_leave_the_head_responsive_and_its_log_short() {
    let session = tempfile::tempdir().unwrap();
    let log_path = session.path().join("head.log");
    let mut head = oxray(session.path())
        .args(["start", "--head", "--port", "0", "--num-cpus", "1"])
        .args(["--include-dashboard", "false", "--block"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(head.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let words: Vec<&str> = ready.split_whitespace().collect();
    let address = words[4].to_string();
    let token = std::fs::read_to_string(words[6])
        .unwrap()
        .trim()
        .to_string();
    let log_before = std::fs::read_to_string(&log_path).unwrap().lines().count();

    // Half as raw connections that send junk and hang up, half as gRPC calls
    // with a wrong token over one connection.
    for _ in 0..ATTEMPTS / 2 {
        if let Ok(mut stream) = TcpStream::connect(&address) {
            let _ = stream.write_all(b"GET / HTTP/1.1\r\n\r\n");
        }
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let refused = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut refused = 0;
        for _ in 0..ATTEMPTS / 2 {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            grpc.ready().await.unwrap();
            let mut request = tonic::Request::new(StatusRequest::default());
            request
                .metadata_mut()
                .insert("x-oxray-token", "0123456789abcdef".parse().unwrap());
            let answer = grpc
                .unary::<_, oxray::core::ClusterStatus, _>(
                    request,
                    PathAndQuery::from_static("/oxray.Head/ClusterStatus"),
                    PostcardCodec::<StatusRequest, oxray::core::ClusterStatus>::default(),
                )
                .await;
            if answer.is_err_and(|s| s.code() == tonic::Code::Unauthenticated) {
                refused += 1;
            }
        }
        refused
    });
    assert_eq!(refused, ATTEMPTS / 2, "every wrong-token call is refused");

    let asked = Instant::now();
    daemon::cluster_status(&address, &token).expect("the head still serves");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "the head answers promptly after the flood: {:?}",
        asked.elapsed()
    );
    let _ = head.kill();
    let _ = head.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    let added = log.lines().count() - log_before;
    assert!(
        added <= 25,
        "{ATTEMPTS} refused attempts added {added} log lines:\n{log}"
    );
}
