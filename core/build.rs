//! Generates the tonic service plumbing for oxray's node service. Messages are
//! Rust types encoded with postcard (see `src/wire.rs`), so the service is
//! described here instead of in a `.proto` file and no `protoc` is needed.

fn main() {
    let node = tonic_build::manual::Service::builder()
        .name("Node")
        .package("oxray")
        .method(
            tonic_build::manual::Method::builder()
                .name("worker_stream")
                .route_name("WorkerStream")
                .input_type("crate::protocol::WorkerToNode")
                .output_type("crate::protocol::NodeToWorker")
                .codec_path("crate::wire::PostcardCodec")
                .client_streaming()
                .server_streaming()
                .build(),
        )
        .build();
    tonic_build::manual::Builder::new().compile(&[node]);
}
