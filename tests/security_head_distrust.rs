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
