//! Moving large objects between nodes.
//!
//! A shared-memory object lives on the node that wrote it. Every node runs an
//! object server; a reader on another node pulls the file over a gRPC stream
//! in 1 MiB chunks into a shared-memory file of its own session and maps that,
//! so an object crosses the network once per node however many readers it has.

use crate::auth::{AttachToken, RequireToken};
use crate::error::{Error, Result};
use crate::node::generated::object_store_client::ObjectStoreClient;
use crate::node::generated::object_store_server::{ObjectStore, ObjectStoreServer};
use crate::protocol::{Chunk, PullRequest};
use crate::shm::{self, SharedBytes};
use crate::wire::MAX_MESSAGE_BYTES;
use std::io::{Read, Write};
use std::pin::Pin;
use tokio_stream::Stream;

const CHUNK_BYTES: usize = 1 << 20;

/// Serves this node's shared-memory files (of one session) to other nodes.
pub(crate) struct ObjectServer {
    session: String,
}

impl ObjectServer {
    pub fn service(
        session: &str,
        token: &str,
    ) -> tonic::service::interceptor::InterceptedService<
        ObjectStoreServer<ObjectServer>,
        RequireToken,
    > {
        let server = ObjectStoreServer::new(ObjectServer {
            session: session.to_string(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        tonic::service::interceptor::InterceptedService::new(server, RequireToken::new(token))
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = std::result::Result<Chunk, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl ObjectStore for ObjectServer {
    type PullObjectStream = ChunkStream;

    async fn pull_object(
        &self,
        request: tonic::Request<PullRequest>,
    ) -> std::result::Result<tonic::Response<ChunkStream>, tonic::Status> {
        let path = request.into_inner().path;
        // Only this session's object files, never an arbitrary path.
        if !shm::belongs_to_session(&path, &self.session) {
            return Err(tonic::Status::permission_denied(format!(
                "{path} is not an object of this node"
            )));
        }
        let mut file = std::fs::File::open(&path)
            .map_err(|e| tonic::Status::not_found(format!("object file {path}: {e}")))?;
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || loop {
            let mut data = vec![0u8; CHUNK_BYTES];
            let read = match file.read(&mut data) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) => {
                    let _ = sender.blocking_send(Err(tonic::Status::internal(format!(
                        "reading {path}: {e}"
                    ))));
                    return;
                }
            };
            data.truncate(read);
            if sender.blocking_send(Ok(Chunk { data })).is_err() {
                return;
            }
        });
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}

/// Copies the object at `path` on the node serving `server` into this node's
/// session (once) and maps the copy.
pub(crate) fn pull(
    server: &str,
    path: &str,
    len: u64,
    local_session: &str,
    token: &str,
) -> Result<SharedBytes> {
    let local = shm::pulled_path(local_session, server, path);
    if std::fs::metadata(&local).is_ok_and(|m| m.len() == len) {
        return shm::open(&local.to_string_lossy());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::runtime("cannot start a transfer runtime", e))?;
    let partial = local.with_extension("partial");
    let lost = |message: String| Error::ObjectLost {
        id: path.to_string(),
        message,
    };
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{server}"))
            .map_err(|e| lost(format!("bad object server address {server}: {e}")))?
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(8 << 20))
            .connect()
            .await
            .map_err(|e| lost(format!("cannot reach the node holding it at {server}: {e}")))?;
        let mut client = ObjectStoreClient::with_interceptor(channel, AttachToken::new(token)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let mut stream = client
            .pull_object(PullRequest {
                path: path.to_string(),
            })
            .await
            .map_err(|status| {
                lost(format!(
                    "the node at {server} refused: {}",
                    status.message()
                ))
            })?
            .into_inner();
        let mut file = std::fs::File::create(&partial)
            .map_err(|e| Error::runtime("cannot create a local copy", e))?;
        let mut received = 0u64;
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| lost(format!("transfer from {server} broke: {}", s.message())))?
        {
            received += chunk.data.len() as u64;
            file.write_all(&chunk.data)
                .map_err(|e| Error::runtime("cannot write a local copy", e))?;
        }
        if received < len {
            return Err(lost(format!("{server} sent {received} of {len} bytes")));
        }
        Ok(())
    })?;
    std::fs::rename(&partial, &local)
        .map_err(|e| Error::runtime("cannot publish a local copy", e))?;
    shm::open(&local.to_string_lossy())
}
