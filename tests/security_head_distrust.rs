//! Attacks by token holders on the head itself: absurd quantities, a timeout
//! at the end of time, a second connection claiming a live id. Each gets a
//! typed error and the head serves on.

mod cluster_support;

use cluster_support::start_head;
use oxray::core::daemon;
use oxray::core::protocol::{
    HeadToNode, NodeToHead, NodeToWorker, Request, WorkerToNode, PROTOCOL_VERSION,
};
use oxray::core::wire::PostcardCodec;
use oxray::core::ResourceSet;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code, Status, Streaming};

/// Opens a stream to the head's `method`, sending `first`; the sender keeps
/// it open for more messages.
async fn open<Out, In>(
    address: &str,
    token: &str,
    method: &'static str,
    first: Out,
) -> Result<(UnboundedSender<Out>, Streaming<In>), Status>
where
    Out: serde::Serialize + Send + Sync + 'static,
    In: serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let (sender, outbound) = tokio::sync::mpsc::unbounded_channel();
    sender.send(first).unwrap();
    let mut request = tonic::Request::new(UnboundedReceiverStream::new(outbound));
    request
        .metadata_mut()
        .insert("x-oxray-token", token.parse().unwrap());
    let response = grpc
        .streaming(
            request,
            PathAndQuery::from_static(method),
            PostcardCodec::<Out, In>::default(),
        )
        .await?;
    Ok((sender, response.into_inner()))
}

fn driver_hello(origin: u64) -> WorkerToNode {
    WorkerToNode::DriverHello {
        origin,
        pid: std::process::id(),
        executable: oxray::core::JobExecutable {
            path: "/bin/true".into(),
            digest: "00".repeat(32),
            size: 0,
            ship: oxray::core::ShipExecutable::Never,
            runtime_env: Default::default(),
        },
        job: oxray::core::JobId::random().unwrap(),
        namespace: None,
        log_to_driver: false,
    }
}

const DRIVER_STREAM: &str = "/oxray.Head/WorkerStream";

#[test]
fn absurd_quantities_timeouts_and_taken_ids_get_typed_errors() {
    let session = tempfile::tempdir().unwrap();
    let (_head, address, token) = start_head(session.path(), &["--num-cpus", "1"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // A node offering 10^15 GPUs (the head would allocate a slot each).
        for (name, amount) in [("GPU", 1e15), ("CPU", f64::NAN), ("CPU", -4.0)] {
            let mut resources = ResourceSet::default();
            // Straight into the map, as a hostile node would encode it.
            resources.0.insert(name.to_string(), amount);
            let register = NodeToHead::Register {
                node_id: format!("greedy-{name}"),
                resources,
                object_server: "127.0.0.1:1".into(),
                object_store_memory: 64 << 20,
                version: PROTOCOL_VERSION.into(),
            };
            let refused =
                open::<_, HeadToNode>(&address, &token, "/oxray.Head/NodeStream", register).await;
            let Err(status) = refused else {
                panic!("a node offering {name} = {amount} must be refused")
            };
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(
                status.message().contains("out of bounds") && status.message().contains(name),
                "{}",
                status.message()
            );
        }

        // A timeout of u64::MAX milliseconds: an error reply, promptly.
        let origin = 0xabc;
        let (driver, mut replies) =
            open::<_, NodeToWorker>(&address, &token, DRIVER_STREAM, driver_hello(origin))
                .await
                .expect("a driver joins");
        driver
            .send(WorkerToNode::Request {
                request_id: 1,
                request: Request::KvWait {
                    key: "never".into(),
                    timeout_ms: u64::MAX,
                },
            })
            .unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(20), replies.message())
            .await
            .expect("the head answers instead of panicking")
            .expect("the stream stays up")
            .expect("a reply");
        match reply {
            NodeToWorker::Reply {
                request_id: 1,
                reply: Err(error),
            } => assert!(error.to_string().contains("timeout"), "{error}"),
            other => panic!("expected an out-of-bounds error, got {other:?}"),
        }

        // A second connection claiming the live driver's id.
        let twice =
            open::<_, NodeToWorker>(&address, &token, DRIVER_STREAM, driver_hello(origin)).await;
        let Err(status) = twice else {
            panic!("a second connection with a live id must be refused")
        };
        assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
        drop(driver);
    });
    let status = daemon::cluster_status(&address, &token).expect("the head still serves");
    assert!(status
        .nodes
        .iter()
        .all(|n| !n.node_id.starts_with("greedy")));
}

/// Whether `child` is still running (not exited, not a zombie).
fn still_running(child: &mut std::process::Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

#[test]
fn forged_pids_and_object_paths_never_touch_anything_outside_the_cluster() {
    let session = tempfile::tempdir().unwrap();
    let (_head, address, token) = start_head(session.path(), &["--num-cpus", "1"]);
    // What a hostile token holder would aim at: a process of the user and a
    // file of the user, neither of them oxray's.
    let mut victim = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let victim_file = elsewhere.path().join("precious.bin");
    std::fs::write(&victim_file, b"not an object").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // A worker hello for a worker the cluster never started, naming the
        // victim's pid: refused outright.
        let forged = WorkerToNode::Hello {
            worker_id: oxray::core::WorkerId(0x5eed),
            pid: victim.id(),
            call_address: None,
        };
        let refused = open::<_, NodeToWorker>(&address, &token, DRIVER_STREAM, forged).await;
        let Err(status) = refused else {
            panic!("a worker the cluster did not start must be refused")
        };
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

        // Drivers claiming the victim's pid and u32::MAX (kill(-1) as a
        // pid_t), each putting an "object" whose shared-memory path is the
        // victim file, then releasing it and leaving.
        for (origin, pid) in [(0x71u64, victim.id()), (0x72, u32::MAX)] {
            let mut hello = driver_hello(origin);
            if let WorkerToNode::DriverHello { pid: claimed, .. } = &mut hello {
                *claimed = pid;
            }
            let (driver, mut replies) =
                open::<_, NodeToWorker>(&address, &token, DRIVER_STREAM, hello)
                    .await
                    .expect("a driver joins");
            let id = oxray::core::ObjectId(origin << 40 | 1);
            let blob = oxray::core::protocol::ObjectBlob {
                type_name: "Vec<u8>".into(),
                contained: Vec::new(),
                payload: oxray::core::protocol::Payload::Shared {
                    path: victim_file.display().to_string(),
                    len: 13,
                    node: "the-head".into(),
                    server: address.clone(),
                    generation: 1,
                },
            };
            driver
                .send(WorkerToNode::Put {
                    id,
                    value: Ok(blob),
                })
                .unwrap();
            driver.send(WorkerToNode::Release(vec![id])).unwrap();
            // The head handles a stream's messages in order: once this is
            // answered, the put and the release have been handled.
            driver
                .send(WorkerToNode::Request {
                    request_id: 1,
                    request: Request::KvGet { key: "sync".into() },
                })
                .unwrap();
            let reply = tokio::time::timeout(Duration::from_secs(20), replies.message())
                .await
                .expect("the head answers")
                .expect("the stream stays up");
            assert!(reply.is_some());
            drop(driver);
        }
    });
    // The head ended both jobs and serves on; the victims are untouched.
    let status = daemon::cluster_status(&address, &token).expect("the head still serves");
    assert!(!status.nodes.is_empty());
    assert!(
        still_running(&mut victim),
        "the head signalled a forged pid"
    );
    assert_eq!(std::fs::read(&victim_file).unwrap(), b"not an object");
    victim.kill().unwrap();
    victim.wait().unwrap();
}
