//! Moving large objects between nodes.
//!
//! A shared-memory object lives on the node that wrote it. Every node runs an
//! object server; a reader on another node pulls the file over a gRPC stream
//! in 1 MiB chunks into a shared-memory file of its own session and maps that,
//! so an object crosses the network once per node however many readers it has.
//! The copy is named by the value's generation (never by the holder's path,
//! which the holder reuses) and removed when the head frees the value. A
//! process that is no node's (a driver joined by address) pulls into its own
//! memory instead, so it leaves nothing in `/dev/shm`.
//!
//! Each process counts the bytes its object server sent and its pulls
//! received ([`transfer_counters`]), so a benchmark can show what actually
//! crossed the wire.

use crate::auth::{AttachToken, RequireToken};
use crate::error::{Error, Result};
use crate::head::generated::object_store_client::ObjectStoreClient;
use crate::head::generated::object_store_server::{ObjectStore, ObjectStoreServer};
use crate::protocol::{Chunk, PullRequest};
use crate::shm::{self, SharedBytes};
use crate::wire::MAX_MESSAGE_BYTES;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_stream::Stream;

const CHUNK_BYTES: usize = 1 << 20;

static BYTES_SENT: AtomicU64 = AtomicU64::new(0);
static BYTES_RECEIVED: AtomicU64 = AtomicU64::new(0);

/// Bytes of objects this process moved between nodes since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferCounters {
    /// Sent by this process's object server to other nodes.
    pub sent: u64,
    /// Received by this process's pulls from other nodes.
    pub received: u64,
}

/// What this process's object server sent and its pulls received so far.
pub fn transfer_counters() -> TransferCounters {
    TransferCounters {
        sent: BYTES_SENT.load(Ordering::Relaxed),
        received: BYTES_RECEIVED.load(Ordering::Relaxed),
    }
}

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
        let PullRequest {
            path,
            generation,
            len,
        } = request.into_inner();
        // Only this session's object files, never an arbitrary path.
        if !shm::belongs_to_session(&path, &self.session) {
            return Err(tonic::Status::permission_denied(format!(
                "{path} is not an object of this node"
            )));
        }
        // A spilled object is served from its spill file.
        let mut file = crate::spill::open_object_file(std::path::Path::new(&path))
            .map_err(|e| tonic::Status::not_found(format!("object file {path}: {e}")))?;
        // The file was freed and reused for another value: never send that.
        if shm::generation_of(&mut file) != Some(generation) {
            return Err(tonic::Status::not_found(format!(
                "{path} no longer holds generation {generation:x}: the object was freed"
            )));
        }
        let header = generation.to_le_bytes().to_vec();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        if sender.try_send(Ok(Chunk { data: header })).is_err() {
            return Err(tonic::Status::internal(
                "the chunk channel refused the header",
            ));
        }
        let mut remaining = len as usize;
        tokio::task::spawn_blocking(move || loop {
            let mut data = vec![0u8; CHUNK_BYTES.min(remaining)];
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
            remaining -= read;
            BYTES_SENT.fetch_add(read as u64, Ordering::Relaxed);
            if sender.blocking_send(Ok(Chunk { data })).is_err() {
                return;
            }
        });
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}

/// A value stored on another node, as its blob names it.
pub(crate) struct RemoteValue<'a> {
    pub server: &'a str,
    pub path: &'a str,
    pub len: u64,
    pub generation: u64,
}

/// Reads a value held by another node: from this node's pulled copy, or pulled
/// now into `local_session` (a node's process) or into memory (`None`).
pub(crate) fn pull(
    value: &RemoteValue,
    local_session: Option<&str>,
    token: &str,
) -> Result<SharedBytes> {
    let in_memory = || {
        let mut bytes = Vec::with_capacity(value.len as usize + shm::HEADER_BYTES);
        receive(value, token, &mut bytes)?;
        SharedBytes::owned(bytes, value.len as usize, value.generation, value.path)
    };
    let Some(session) = local_session else {
        return in_memory();
    };
    let local = shm::pulled_path(session, value.server, value.generation);
    let local_name = local.to_string_lossy().into_owned();
    if let Ok(copy) = shm::open(&local_name, value.len, value.generation) {
        return Ok(copy);
    }
    // Pulled copies share the node's store capacity with its own objects;
    // one that does not fit stays in this reader's memory.
    if !shm::make_room(session, value.len) {
        return in_memory();
    }
    // Readers on this node may pull the same value at once: each writes its
    // own partial file and the last rename wins (with the same bytes).
    static PARTIALS: AtomicU64 = AtomicU64::new(0);
    let partial = local.with_extension(format!(
        "partial-{}-{}",
        std::process::id(),
        PARTIALS.fetch_add(1, Ordering::Relaxed)
    ));
    // Mapped before it is published: another reader making room may remove
    // the published copy at any time, and the mapping outlives that.
    let written = shm::create_private(&partial)
        .and_then(|mut file| receive(value, token, &mut file))
        .and_then(|()| shm::open(&partial.to_string_lossy(), value.len, value.generation))
        .and_then(|copy| {
            std::fs::rename(&partial, &local)
                .map_err(|e| Error::runtime("cannot publish a local copy", e))?;
            Ok(copy)
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// Streams the value's file (header and bytes) from its node into `sink`.
fn receive(value: &RemoteValue, token: &str, sink: &mut impl Write) -> Result<()> {
    let RemoteValue {
        server,
        path,
        len,
        generation,
    } = *value;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::runtime("cannot start a transfer runtime", e))?;
    let lost = |message: String| Error::ObjectLost {
        id: path.to_string(),
        message,
    };
    runtime.block_on(async {
        let channel = crate::tls::grpc_endpoint(server)?
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(8 << 20))
            .connect_timeout(std::time::Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| {
                lost(format!(
                    "cannot reach the node holding it at {server}: {}",
                    crate::head_link::with_causes(&e)
                ))
            })?;
        let mut client = ObjectStoreClient::with_interceptor(channel, AttachToken::new(token)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let mut stream = client
            .pull_object(PullRequest {
                path: path.to_string(),
                generation,
                len,
            })
            .await
            .map_err(|status| {
                lost(format!(
                    "the node at {server} refused: {}",
                    status.message()
                ))
            })?
            .into_inner();
        let mut received = 0u64;
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| lost(format!("transfer from {server} broke: {}", s.message())))?
        {
            received += chunk.data.len() as u64;
            if received > len + shm::HEADER_BYTES as u64 {
                return Err(lost(format!(
                    "{server} sent more than the {len} bytes asked for"
                )));
            }
            sink.write_all(&chunk.data)
                .map_err(|e| Error::runtime("cannot write a local copy", e))?;
        }
        let expected = len + shm::HEADER_BYTES as u64;
        BYTES_RECEIVED.fetch_add(
            received.saturating_sub(shm::HEADER_BYTES as u64),
            Ordering::Relaxed,
        );
        if received < expected {
            return Err(lost(format!(
                "{server} sent {received} of {expected} bytes"
            )));
        }
        Ok(())
    })
}
