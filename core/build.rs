//! Generates the tonic service plumbing for oxray's services. Messages are
//! Rust types encoded with postcard (see `src/wire.rs`), so the services are
//! described here instead of in `.proto` files and no `protoc` is needed.

use tonic_build::manual::{Builder, Method, Service};

fn method(
    name: &str,
    route: &str,
    input: &str,
    output: &str,
) -> tonic_build::manual::MethodBuilder {
    Method::builder()
        .name(name)
        .route_name(route)
        .input_type(format!("crate::protocol::{input}"))
        .output_type(format!("crate::protocol::{output}"))
        .codec_path("crate::wire::PostcardCodec")
}

fn main() {
    let head = Service::builder()
        .name("Head")
        .package("oxray")
        .method(
            method(
                "worker_stream",
                "WorkerStream",
                "WorkerToNode",
                "NodeToWorker",
            )
            .client_streaming()
            .server_streaming()
            .build(),
        )
        .method(
            method("node_stream", "NodeStream", "NodeToHead", "HeadToNode")
                .client_streaming()
                .server_streaming()
                .build(),
        )
        .method(
            method(
                "cluster_status",
                "ClusterStatus",
                "StatusRequest",
                "ClusterStatus",
            )
            .build(),
        )
        .method(
            method(
                "query_executable",
                "QueryExecutable",
                "ExecutableQuery",
                "ExecutableAnswer",
            )
            .build(),
        )
        .method(
            method(
                "upload_executable",
                "UploadExecutable",
                "ExecutableUpload",
                "ExecutableAnswer",
            )
            .client_streaming()
            .build(),
        )
        .method(
            method(
                "fetch_executable",
                "FetchExecutable",
                "ExecutableRequest",
                "Chunk",
            )
            .server_streaming()
            .build(),
        )
        .build();
    let objects = Service::builder()
        .name("ObjectStore")
        .package("oxray")
        .method(
            method("pull_object", "PullObject", "PullRequest", "Chunk")
                .server_streaming()
                .build(),
        )
        .build();
    let actor_calls = Service::builder()
        .name("ActorCalls")
        .package("oxray")
        .method(
            method("call_stream", "CallStream", "DirectCall", "DirectResult")
                .client_streaming()
                .server_streaming()
                .build(),
        )
        .build();
    Builder::new().compile(&[head, objects, actor_calls]);
}
