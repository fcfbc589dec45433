//! A head refuses garbage, impostors and mismatched versions with a clear
//! status, and keeps serving everyone else.

use oxray::core::protocol::{HeadToNode, NodeToHead, NodeToWorker, WorkerToNode, PROTOCOL_VERSION};
use oxray::core::wire::PostcardCodec;
use oxray::core::{self as oxray_core, daemon, remote, InitOptions, WorkerId};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

struct Head {
    child: Child,
    address: String,
    token: String,
    _session: tempfile::TempDir,
}

impl Drop for Head {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_head() -> Head {
    let session = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_oxray"))
        .args([
            "start",
            "--head",
            "--port",
            "0",
            "--node-ip-address",
            "127.0.0.1",
            "--num-cpus",
            "1",
            "--block",
        ])
        .env("OXRAY_SESSION_DIR", session.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    Head {
        address: words[4].to_string(),
        // The ready line names the head's private token file, never the token.
        token: std::fs::read_to_string(words[6])
            .unwrap()
            .trim()
            .to_string(),
        child,
        _session: session,
    }
}

/// Sends raw bytes as gRPC messages, to play a broken or hostile peer.
#[derive(Clone, Default)]
struct RawCodec;

struct Raw;

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

async fn channel(head: &Head) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", head.address))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Opens `method` with one message and returns the head's answer.
async fn call<C>(
    head: &Head,
    method: &'static str,
    message: C::Encode,
    codec: C,
) -> Result<(), Status>
where
    C: Codec + Send + 'static,
    C::Encode: Send + Sync + 'static,
    C::Decode: Sync,
{
    let mut grpc = tonic::client::Grpc::new(channel(head).await);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(tokio_stream::iter(vec![message]));
    request
        .metadata_mut()
        .insert("x-oxray-token", head.token.parse().unwrap());
    let response = grpc
        .streaming(request, PathAndQuery::from_static(method), codec)
        .await?;
    let mut stream = response.into_inner();
    // A refused stream may also end with its status on the first read.
    stream.message().await.map(|_| ())
}

#[test]
fn garbage_impostors_and_old_versions_are_refused_and_the_head_keeps_serving() {
    let head = start_head();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for method in ["/oxray.Head/NodeStream", "/oxray.Head/WorkerStream"] {
            let garbage = vec![
                0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ];
            let status = call(&head, method, garbage, RawCodec).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{method}: {status:?}");
            assert!(
                status.message().contains("malformed"),
                "{}",
                status.message()
            );
        }

        let impostor = WorkerToNode::Hello {
            worker_id: WorkerId(4242),
            pid: 1,
            call_address: None,
        };
        let codec = PostcardCodec::<WorkerToNode, NodeToWorker>::default();
        let status = call(&head, "/oxray.Head/WorkerStream", impostor, codec)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

        let register = |version: &str| NodeToHead::Register {
            node_id: "node-twice".into(),
            resources: Default::default(),
            object_server: "127.0.0.1:1".into(),
            object_store_memory: 64 << 20,
            version: version.into(),
        };
        let old = call(
            &head,
            "/oxray.Head/NodeStream",
            register("oxray-0.0.1-wire-0"),
            PostcardCodec::<NodeToHead, HeadToNode>::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(old.code(), Code::FailedPrecondition, "{old:?}");
        assert!(
            old.message().contains("version mismatch"),
            "{}",
            old.message()
        );

        // The first registration holds its stream open; the second is refused.
        let mut grpc = tonic::client::Grpc::new(channel(&head).await);
        grpc.ready().await.unwrap();
        let (keep_open, outbound) = tokio::sync::mpsc::unbounded_channel();
        keep_open.send(register(PROTOCOL_VERSION)).unwrap();
        let mut first = tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(
            outbound,
        ));
        first
            .metadata_mut()
            .insert("x-oxray-token", head.token.parse().unwrap());
        let _registered = grpc
            .streaming(
                first,
                PathAndQuery::from_static("/oxray.Head/NodeStream"),
                PostcardCodec::<NodeToHead, HeadToNode>::default(),
            )
            .await
            .unwrap();
        let twice = call(
            &head,
            "/oxray.Head/NodeStream",
            register(PROTOCOL_VERSION),
            PostcardCodec::<NodeToHead, HeadToNode>::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(twice.code(), Code::AlreadyExists, "{twice:?}");
        drop(keep_open);
    });
    let status = daemon::cluster_status(&head.address, &head.token).expect("the head still serves");
    assert!(status.nodes.iter().any(|n| n.is_head && n.alive));
}

#[remote]
fn my_pid() -> u32 {
    std::process::id()
}

#[test]
fn a_second_hello_for_a_connected_worker_is_refused_and_the_worker_keeps_serving() {
    let head = start_head();
    oxray_core::init(
        InitOptions::default()
            .address(&head.address)
            .token(&head.token),
    )
    .unwrap();
    // The head's first worker (number 1) runs this.
    let pid = my_pid::remote().get().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        let hijack = WorkerToNode::Hello {
            worker_id: WorkerId(1),
            pid: 1,
            call_address: None,
        };
        let codec = PostcardCodec::<WorkerToNode, NodeToWorker>::default();
        call(&head, "/oxray.Head/WorkerStream", hijack, codec)
            .await
            .unwrap_err()
    });
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(my_pid::remote().get().unwrap(), pid);
    oxray_core::shutdown();
}
