//! Attack: a process on the network that does not hold a certificate of the
//! cluster's CA (none at all, one of another CA, or one that has expired)
//! talks to a cluster that runs with mutual TLS: the head's gRPC service,
//! a node's object server, a joining node, and a collective group's peer
//! links. Each must refuse it during the handshake and go on serving the
//! cluster's own processes; and a 3-node cluster with mutual TLS trains end
//! to end, its EnvRunners and Learners spread over the nodes.

mod cluster_support;

use cluster_support::{oxray, start_head, start_node, status, HEAD_IP};
use oxray_collective::{CollectiveError, CollectiveGroup, GroupOptions, InProcessRendezvous};
use oxray_core::tls::{ClusterTls, TlsFiles};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const DAY: Duration = Duration::from_secs(86_400);

/// A CA of its own and the certificates it signs, written as PEM files.
struct Authority {
    dir: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    fn new(dir: &Path, name: &str) -> Authority {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = SystemTime::now();
        params.not_before = (now - DAY).into();
        params.not_after = (now + 30 * DAY).into();
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        write_private(&dir.join("ca.pem"), &issuer.pem());
        Authority { dir, issuer }
    }

    /// A node certificate valid from `not_before` to `not_after`.
    fn node(&self, name: &str, not_before: SystemTime, not_after: SystemTime) -> TlsFiles {
        let mut params = CertificateParams::new(vec![oxray_core::tls::SERVER_NAME.into()]).unwrap();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = TlsFiles {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
            ca: self.dir.join("ca.pem"),
        };
        write_private(&files.cert, &cert.pem());
        write_private(&files.key, &key.serialize_pem());
        files
    }

    fn valid_node(&self, name: &str) -> TlsFiles {
        let now = SystemTime::now();
        self.node(name, now - DAY, now + 30 * DAY)
    }
}

fn write_private(path: &Path, text: &str) {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

/// The three ways in without a good certificate: no certificate at all, one
/// of another CA, and an expired one of the cluster's CA. Each names the
/// files a client would use (`None`: plain, no TLS).
struct Strangers {
    other_ca: TlsFiles,
    expired: TlsFiles,
}

impl Strangers {
    fn new(dir: &Path, cluster: &Authority) -> Strangers {
        let other = Authority::new(dir, "other");
        let now = SystemTime::now();
        Strangers {
            other_ca: other.valid_node("intruder"),
            expired: cluster.node("expired", now - 20 * DAY, now - DAY),
        }
    }

    /// (what, certificate files trusting the cluster CA for the server) of
    /// each stranger; the other CA's client still trusts the real CA so the
    /// refusal is the server's.
    fn each(&self, cluster_ca: &Path) -> Vec<(&'static str, Option<TlsFiles>)> {
        let mut other = self.other_ca.clone();
        other.ca = cluster_ca.to_path_buf();
        vec![
            ("no TLS", None),
            ("a certificate of another CA", Some(other)),
            ("an expired certificate", Some(self.expired.clone())),
        ]
    }
}

fn tls_args(files: &TlsFiles) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        files.cert.display().to_string(),
        "--tls-key".into(),
        files.key.display().to_string(),
        "--tls-ca".into(),
        files.ca.display().to_string(),
    ]
}

/// A client handshake with `address` using `files` (whose CA is the
/// cluster's, so the server is trusted), then one read: Err when the server
/// refuses the client (an alert or a closed connection).
fn handshake_as(address: &str, files: &TlsFiles) -> Result<(), String> {
    // The client's own view: it trusts the cluster's CA for the server and
    // shows whatever certificate it has.
    let client_files = TlsFiles {
        cert: files.cert.clone(),
        key: files.key.clone(),
        ca: files.ca.clone(),
    };
    let config = client_files
        .load()
        .map_err(|e| e.to_string())?
        .client_config();
    let mut session = rustls::ClientConnection::new(config, ClusterTls::server_name())
        .map_err(|e| e.to_string())?;
    let mut socket = TcpStream::connect(address).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut stream = rustls::Stream::new(&mut session, &mut socket);
    // An HTTP/2 preface: a server that accepted the client answers with
    // its SETTINGS frame.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .map_err(|e| e.to_string())?;
    let mut reply = [0u8; 9];
    match stream.read(&mut reply) {
        Ok(0) => Err("connection closed".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn a_cluster_with_mutual_tls_refuses_strangers_on_every_service_and_serves_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("session");
    std::fs::create_dir(&session).unwrap();
    let cluster = Authority::new(dir.path(), "cluster");
    let head_files = cluster.valid_node("head");
    let node_files = cluster.valid_node("node");
    let client_files = cluster.valid_node("client");
    let strangers = Strangers::new(dir.path(), &cluster);

    let head_args = tls_args(&head_files);
    let mut extra: Vec<&str> = vec!["--num-cpus", "1"];
    extra.extend(head_args.iter().map(String::as_str));
    let (_head, address, token) = start_head(&session, &extra);
    let node_args = tls_args(&node_files);
    let mut extra: Vec<&str> = vec!["--num-cpus", "1"];
    extra.extend(node_args.iter().map(String::as_str));
    let (_node, node_id) = start_node(&session, &address, &token, &extra);

    let client_args = tls_args(&client_files);
    let client: Vec<&str> = client_args.iter().map(String::as_str).collect();
    let (ok, shown) = status(&session, &address, &token, &client);
    assert!(ok, "{shown}");
    let object_server = shown
        .lines()
        .find(|line| line.contains(&node_id))
        .and_then(|line| line.split_whitespace().nth(1))
        .expect("the node's address in status")
        .to_string();
    assert!(object_server.starts_with("127.0.0.3:"), "{shown}");

    let ca = cluster.dir.join("ca.pem");
    for (what, files) in strangers.each(&ca) {
        // The head's gRPC service, through the CLI a stranger would use.
        let args = files.as_ref().map(tls_args).unwrap_or_default();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, shown) = status(&session, &address, &token, &args);
        assert!(!ok, "the head served a client with {what}: {shown}");
        assert!(!shown.contains("panicked"), "{shown}");
        // A node joining with it is refused, and says so.
        let mut join = oxray(&session);
        join.args(["start", "--address", &address, "--token", &token])
            .args(["--node-ip-address", "127.0.0.9", "--num-cpus", "1"])
            .args(&args);
        let joined = join.output().unwrap();
        let said = String::from_utf8_lossy(&joined.stderr);
        assert!(!joined.status.success(), "a node with {what} joined");
        assert!(said.contains("error"), "{said}");
        // Raw handshakes with the head's port and the node's object server.
        if let Some(files) = &files {
            for server in [address.as_str(), object_server.as_str()] {
                let refused = handshake_as(server, files);
                assert!(refused.is_err(), "{server} accepted {what}");
            }
        }
    }
    // A plain-text client gets no HTTP/2 answer from either port.
    for server in [address.as_str(), object_server.as_str()] {
        let mut socket = TcpStream::connect(server).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        socket
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .unwrap();
        let mut reply = [0u8; 9];
        let answered = socket.read(&mut reply).unwrap_or(0);
        assert!(
            answered == 0 || reply[3] != 0x04,
            "{server} answered plain HTTP/2 with SETTINGS"
        );
    }
    // The good certificate still works on both, after all of that.
    for server in [address.as_str(), object_server.as_str()] {
        handshake_as(server, &client_files).unwrap();
    }
    let (ok, shown) = status(&session, &address, &token, &client);
    assert!(ok && shown.contains("nodes: 2 alive"), "{shown}");
}

/// One rank of a two-rank group over TCP (two nodes by label) with
/// `tls`; returns its all-reduce result or the join's error.
fn rank(
    rendezvous: &InProcessRendezvous,
    group: &str,
    index: usize,
    tls: Option<Arc<ClusterTls>>,
    timeout: Duration,
) -> std::thread::JoinHandle<Result<Vec<f32>, CollectiveError>> {
    let rendezvous = rendezvous.clone();
    let group = group.to_string();
    std::thread::spawn(move || {
        let mut options = GroupOptions::default()
            .layout(["node-a", "node-b"])
            .shared_memory(false)
            .timeout(timeout);
        if let Some(tls) = tls {
            options = options.tls(tls);
        }
        let mut group = CollectiveGroup::join(2, index, &group, options, &rendezvous)?;
        // 4 MiB each way: many TLS records, more than a socket buffer holds.
        let mut values: Vec<f32> = (0..1 << 20)
            .map(|i| (i % 1000) as f32 + index as f32)
            .collect();
        group.allreduce(&mut values, oxray_collective::ReduceOp::Sum)?;
        Ok(values)
    })
}

#[test]
fn collective_peers_need_a_certificate_of_the_cluster_ca() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Authority::new(dir.path(), "cluster");
    let good = |name: &str| Arc::new(cluster.valid_node(name).load().unwrap());
    let strangers = Strangers::new(dir.path(), &cluster);

    // Two ranks of the cluster: the data crosses TLS and adds up.
    let rendezvous = InProcessRendezvous::new();
    let patient = Duration::from_secs(30);
    let lower = rank(&rendezvous, "sealed", 0, Some(good("rank0")), patient);
    let higher = rank(&rendezvous, "sealed", 1, Some(good("rank1")), patient);
    let expected: Vec<f32> = (0..1 << 20)
        .map(|i| 2.0 * (i % 1000) as f32 + 1.0)
        .collect();
    assert!(lower.join().unwrap().unwrap() == expected);
    assert!(higher.join().unwrap().unwrap() == expected);

    // A stranger in either rank's place is refused by the other.
    let ca = cluster.dir.join("ca.pem");
    let member = good("member");
    for (what, files) in strangers.each(&ca) {
        let stranger = files.map(|files| Arc::new(files.load().unwrap()));
        for stranger_rank in [0, 1] {
            let rendezvous = InProcessRendezvous::new();
            let (tls0, tls1) = if stranger_rank == 0 {
                (stranger.clone(), Some(member.clone()))
            } else {
                (Some(member.clone()), stranger.clone())
            };
            // The member gives up on the stranger after this long.
            let brief = Duration::from_secs(3);
            let lower = rank(&rendezvous, "sealed", 0, tls0, brief);
            let higher = rank(&rendezvous, "sealed", 1, tls1, brief);
            let (lower, higher) = (lower.join().unwrap(), higher.join().unwrap());
            let member = if stranger_rank == 0 { higher } else { lower };
            let refusal = match member {
                Ok(_) => panic!("a rank joined with a peer that has {what}"),
                Err(error) => error.to_string(),
            };
            // The connecting rank fails the handshake itself; the accepting
            // one refuses the connection and keeps waiting for a real peer.
            assert!(
                refusal.contains("TLS")
                    || refusal.contains("1 unauthenticated connections refused"),
                "{what}: {refusal}"
            );
        }
    }
}

/// One rank of a two-rank group of one node (shared memory) with `tls`:
/// says when it has joined, then all-reduces once told to, or leaves when
/// its sender is dropped instead.
struct SameNodeRank {
    joined: std::sync::mpsc::Receiver<()>,
    go: Option<std::sync::mpsc::Sender<()>>,
    done: std::thread::JoinHandle<Result<Vec<f32>, CollectiveError>>,
}

impl SameNodeRank {
    fn start(rendezvous: &InProcessRendezvous, index: usize, tls: Arc<ClusterTls>) -> Self {
        let rendezvous = rendezvous.clone();
        let (joined_tx, joined) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let done = std::thread::spawn(move || {
            let options = GroupOptions::default()
                .layout(["node", "node"])
                .timeout(Duration::from_secs(30))
                .tls(tls);
            let mut group = CollectiveGroup::join(2, index, "one-node", options, &rendezvous)?;
            joined_tx.send(()).unwrap();
            let mut values = vec![index as f32 + 1.0; 1 << 16];
            if go_rx.recv().is_ok() {
                group.allreduce(&mut values, oxray_collective::ReduceOp::Sum)?;
            }
            Ok(values)
        });
        SameNodeRank {
            joined,
            go: Some(go),
            done,
        }
    }

    fn go(&mut self) {
        self.go.take().unwrap().send(()).unwrap();
    }
}

/// Ranks of one node move their data through shared memory and keep their
/// TLS socket only to notice a peer that is gone. After the handshake that
/// socket still carries TLS's own records (the server's session tickets):
/// a rank that waits longer than its liveness slice (20 ms) for a late peer
/// must not take them for the peer leaving, and a peer that does leave is
/// still noticed long before the group's timeout.
#[test]
fn same_node_tls_ranks_wait_for_a_late_peer_and_notice_one_that_left() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Authority::new(dir.path(), "cluster");
    let good = |name: &str| Arc::new(cluster.valid_node(name).load().unwrap());
    // How late the second rank enters the all-reduce: 15 liveness slices.
    let late = Duration::from_millis(300);
    // (the late rank: the TLS client 0 or the server 1)
    for late_rank in [0, 1] {
        let rendezvous = InProcessRendezvous::new();
        let mut ranks = [
            SameNodeRank::start(&rendezvous, 0, good(&format!("late{late_rank}-0"))),
            SameNodeRank::start(&rendezvous, 1, good(&format!("late{late_rank}-1"))),
        ];
        for rank in &ranks {
            rank.joined.recv().expect("joined");
        }
        ranks[1 - late_rank].go();
        // The lateness under test, not a wait for anything.
        std::thread::sleep(late);
        ranks[late_rank].go();
        let expected = vec![3.0f32; 1 << 16];
        for (index, rank) in ranks.into_iter().enumerate() {
            match rank.done.join().unwrap() {
                Ok(values) => assert!(values == expected, "late {late_rank}: rank {index}"),
                Err(error) => panic!("late rank {late_rank}: rank {index}: {error}"),
            }
        }
    }

    let rendezvous = InProcessRendezvous::new();
    let mut waiting = SameNodeRank::start(&rendezvous, 0, good("waiting"));
    let mut leaving = SameNodeRank::start(&rendezvous, 1, good("leaving"));
    waiting.joined.recv().expect("joined");
    leaving.joined.recv().expect("joined");
    let started = std::time::Instant::now();
    waiting.go();
    leaving.go = None;
    leaving.done.join().unwrap().unwrap();
    match waiting.done.join().unwrap() {
        Err(CollectiveError::PeerDisconnected {
            rank: 0, peer: 1, ..
        }) => {}
        other => panic!("rank 0 after rank 1 left: {other:?}"),
    }
    // Noticed, not timed out (the group's timeout is 30 s).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn three_nodes_with_mutual_tls_train_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("session");
    std::fs::create_dir(&session).unwrap();
    let certs = dir.path().join("certs");
    let generated = oxray(&session)
        .args(["tls", "gen"])
        .arg(&certs)
        .args([
            "--node", "head", "--node", "a", "--node", "b", "--node", "driver",
        ])
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    let files = |name: &str| TlsFiles {
        cert: certs.join(format!("{name}.pem")),
        key: certs.join(format!("{name}.key")),
        ca: certs.join("ca.pem"),
    };
    let with = |name: &str, base: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        args.extend(tls_args(&files(name)));
        args
    };
    let head_args = with("head", &["--num-cpus", "1"]);
    let head_args: Vec<&str> = head_args.iter().map(String::as_str).collect();
    let (_head, address, token) = start_head(&session, &head_args);
    assert!(address.starts_with(HEAD_IP));
    let mut nodes = Vec::new();
    for name in ["a", "b"] {
        let args = with(name, &["--num-cpus", "2"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nodes.push(start_node(&session, &address, &token, &args));
    }
    // Two Learners (gradients all-reduced over the collective's TLS links)
    // and two EnvRunners, spread over the nodes by their CPUs.
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/ppo-cartpole-2learners.yaml"
    );
    let output = oxray(&session)
        .current_dir(&session)
        .args(["train", config, "--address", &address, "--name", "sealed"])
        .env("OXRAY_TOKEN", &token)
        .args(["--set", "env_runners.num_env_runners=2"])
        .args(["--set", "env_runners.num_envs_per_env_runner=4"])
        .args(["--set", "stop.iterations=4"])
        .args(tls_args(&files("driver")))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("after 4 iterations"), "{stdout}");
    assert!(stdout.contains("learner device: cpu, cpu"), "{stdout}");
}

/// `oxray tls gen --ip` puts the addresses into the node certificates, so a
/// client that checks the address it dialled (not oxray's name) accepts the
/// head; and a plain-text `oxray status` against a TLS head says to pass the
/// TLS flags.
#[test]
fn generated_certificates_name_the_given_ips_and_plain_clients_are_told_about_tls() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("session");
    std::fs::create_dir(&session).unwrap();
    let generate = |certs: &Path, ips: &[&str]| {
        let mut command = oxray(&session);
        command.args(["tls", "gen"]).arg(certs);
        for ip in ips {
            command.args(["--ip", ip]);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{output:?}");
    };
    let with_ip = dir.path().join("with-ip");
    let without_ip = dir.path().join("without-ip");
    generate(&with_ip, &[HEAD_IP, "127.0.0.3"]);
    generate(&without_ip, &[]);
    let bad_ip = oxray(&session)
        .args(["tls", "gen", "--ip", "not-an-ip"])
        .arg(dir.path().join("never"))
        .output()
        .unwrap();
    assert!(!bad_ip.status.success());
    assert!(!dir.path().join("never").exists());

    let head_files = |certs: &Path| TlsFiles {
        cert: certs.join("node.pem"),
        key: certs.join("node.key"),
        ca: certs.join("ca.pem"),
    };
    // The client checks the dialled IP: tonic takes the server name from
    // the URI when none is set.
    let dial = |certs: &Path, address: &str| {
        let files = head_files(certs);
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(
                std::fs::read(&files.ca).unwrap(),
            ))
            .identity(tonic::transport::Identity::from_pem(
                std::fs::read(&files.cert).unwrap(),
                std::fs::read(&files.key).unwrap(),
            ));
        let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{address}"))
            .unwrap()
            .tls_config(tls)
            .unwrap();
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(endpoint.connect())
            .map(drop)
            .map_err(|e| format!("{e:?}"))
    };
    for (certs, names_ip) in [(&with_ip, true), (&without_ip, false)] {
        let session = session.join(if names_ip { "a" } else { "b" });
        std::fs::create_dir(&session).unwrap();
        let (_head, address, token) = start_head(
            &session,
            &tls_args(&head_files(certs))
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        let dialled = dial(certs, &address);
        assert_eq!(dialled.is_ok(), names_ip, "{dialled:?}");
        if names_ip {
            let (ok, text) = status(&session, &address, &token, &[]);
            assert!(!ok, "a plain-text client reached the head: {text}");
            assert!(text.contains("--tls-cert"), "{text}");
        }
    }
}
