//! tonic codec that carries oxray's Rust message types encoded with postcard.
//!
//! postcard is compact and fast, and keeps one source of truth for messages (the
//! Rust types in `protocol`) instead of a `.proto` twin. Anything that fails to
//! decode becomes a gRPC `INVALID_ARGUMENT` status naming the message type, so a
//! garbage frame is refused, never a panic.

use bytes::{Buf, BufMut};
use serde::{de::DeserializeOwned, Serialize};
use std::marker::PhantomData;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Largest message a node or worker accepts. Values above the inline threshold
/// travel through shared memory, so frames stay far below this.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug)]
pub struct PostcardCodec<E, D>(PhantomData<(E, D)>);

impl<E, D> Default for PostcardCodec<E, D> {
    fn default() -> Self {
        PostcardCodec(PhantomData)
    }
}

impl<E, D> Codec for PostcardCodec<E, D>
where
    E: Serialize + Send + 'static,
    D: DeserializeOwned + Send + 'static,
{
    type Encode = E;
    type Decode = D;
    type Encoder = PostcardEncoder<E>;
    type Decoder = PostcardDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        PostcardEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        PostcardDecoder(PhantomData)
    }
}

#[derive(Debug)]
pub struct PostcardEncoder<T>(PhantomData<T>);

impl<T: Serialize> Encoder for PostcardEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        postcard::to_io(&item, dst.writer())
            .map(|_| ())
            .map_err(|e| Status::internal(format!("cannot encode message: {e}")))
    }
}

#[derive(Debug)]
pub struct PostcardDecoder<T>(PhantomData<T>);

impl<T: DeserializeOwned> Decoder for PostcardDecoder<T> {
    type Item = T;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<T>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        decode_message(&bytes).map(Some)
    }
}

/// Decodes one wire message; public so the fuzz target exercises exactly this.
/// `first` and the messages already received after it on `inbound` (at
/// most `max` in all), taken without waiting, so a burst is handled as one
/// batch. `Some(end)` if the stream ended meanwhile: its error, or `None`
/// if its peer closed it.
pub(crate) fn with_ready<T>(
    first: T,
    inbound: &mut tonic::Streaming<T>,
    max: usize,
) -> (Vec<T>, Option<Option<Status>>) {
    use std::task::{Context, Poll, Waker};
    use tokio_stream::Stream;
    let mut messages = vec![first];
    let mut context = Context::from_waker(Waker::noop());
    while messages.len() < max {
        match std::pin::Pin::new(&mut *inbound).poll_next(&mut context) {
            Poll::Ready(Some(Ok(message))) => messages.push(message),
            Poll::Ready(Some(Err(status))) => return (messages, Some(Some(status))),
            Poll::Ready(None) => return (messages, Some(None)),
            Poll::Pending => break,
        }
    }
    (messages, None)
}

pub fn decode_message<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    postcard::from_bytes(bytes).map_err(|e| {
        Status::invalid_argument(format!(
            "malformed {} message ({} bytes): {e}",
            std::any::type_name::<T>(),
            bytes.len()
        ))
    })
}

/// Every message type a process decodes from the network, for fuzzing and
/// robustness tests of the decoders.
#[derive(Debug, Clone, Copy)]
pub enum WireMessage {
    WorkerToNode,
    NodeToWorker,
    NodeToHead,
    HeadToNode,
    PullRequest,
    Chunk,
    StatusRequest,
    ClusterStatus,
}

impl WireMessage {
    pub const ALL: [WireMessage; 8] = [
        WireMessage::WorkerToNode,
        WireMessage::NodeToWorker,
        WireMessage::NodeToHead,
        WireMessage::HeadToNode,
        WireMessage::PullRequest,
        WireMessage::Chunk,
        WireMessage::StatusRequest,
        WireMessage::ClusterStatus,
    ];
}

/// Decodes `bytes` as a message of `kind`, discarding the value.
pub fn decode_any_message(kind: WireMessage, bytes: &[u8]) -> Result<(), Status> {
    use crate::protocol as p;
    match kind {
        WireMessage::WorkerToNode => decode_message::<p::WorkerToNode>(bytes).map(drop),
        WireMessage::NodeToWorker => decode_message::<p::NodeToWorker>(bytes).map(drop),
        WireMessage::NodeToHead => decode_message::<p::NodeToHead>(bytes).map(drop),
        WireMessage::HeadToNode => decode_message::<p::HeadToNode>(bytes).map(drop),
        WireMessage::PullRequest => decode_message::<p::PullRequest>(bytes).map(drop),
        WireMessage::Chunk => decode_message::<p::Chunk>(bytes).map(drop),
        WireMessage::StatusRequest => decode_message::<p::StatusRequest>(bytes).map(drop),
        WireMessage::ClusterStatus => decode_message::<p::ClusterStatus>(bytes).map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, so failures reproduce.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn garbage_never_panics_any_decoder() {
        for seed in 0..3_000u64 {
            let bytes = noise(seed, (seed % 300) as usize);
            for kind in WireMessage::ALL {
                let _ = decode_any_message(kind, &bytes);
            }
        }
    }

    #[test]
    fn truncated_messages_are_errors_naming_the_type() {
        let message = crate::protocol::NodeToHead::Register {
            node_id: "node-a".into(),
            resources: Default::default(),
            object_server: "127.0.0.1:1".into(),
            object_store_memory: 64 << 20,
            version: crate::protocol::PROTOCOL_VERSION.into(),
        };
        let bytes = postcard::to_allocvec(&message).unwrap();
        for cut in 0..bytes.len() {
            let error = decode_message::<crate::protocol::NodeToHead>(&bytes[..cut]).unwrap_err();
            assert_eq!(error.code(), tonic::Code::InvalidArgument);
            assert!(
                error.message().contains("NodeToHead"),
                "{}",
                error.message()
            );
        }
        assert!(decode_message::<crate::protocol::NodeToHead>(&bytes).is_ok());
    }

    /// Valid encodings of messages from every direction, for mutation.
    fn valid_messages() -> Vec<(WireMessage, Vec<u8>)> {
        use crate::ids::WorkerId;
        use crate::protocol as p;
        let encode = |value: &dyn erased::Encode| value.encode();
        vec![
            (
                WireMessage::WorkerToNode,
                encode(&p::WorkerToNode::Hello {
                    worker_id: WorkerId(7),
                    pid: 4242,
                    call_address: Some("127.0.0.2:40000".into()),
                }),
            ),
            (
                WireMessage::WorkerToNode,
                encode(&p::WorkerToNode::DriverHello {
                    origin: 3,
                    pid: 99,
                    executable: crate::packaging::JobExecutable {
                        path: "/usr/local/bin/oxray".into(),
                        digest: "ab".repeat(32),
                        size: 123_456,
                        ship: crate::packaging::ShipExecutable::IfMissing,
                        runtime_env: crate::runtime_env::JobRuntimeEnv {
                            working_dir: Some(crate::runtime_env::WorkingDirArchive {
                                digest: "cd".repeat(32),
                                size: 4096,
                            }),
                            env_vars: vec![("SEED".into(), "3".into())],
                        },
                    },
                    job: crate::ids::JobId(0x0123_4567_89ab_cdef),
                    namespace: Some("team".into()),
                    log_to_driver: true,
                }),
            ),
            (
                WireMessage::NodeToHead,
                encode(&p::NodeToHead::Register {
                    node_id: "node-a".into(),
                    resources: Default::default(),
                    object_server: "127.0.0.2:40000".into(),
                    object_store_memory: 64 << 20,
                    version: p::PROTOCOL_VERSION.into(),
                }),
            ),
            (
                WireMessage::NodeToHead,
                encode(&p::NodeToHead::WorkerStarted {
                    worker: WorkerId(9),
                    pid: 4242,
                }),
            ),
            (
                WireMessage::NodeToHead,
                encode(&p::NodeToHead::WorkerExited {
                    worker: WorkerId(9),
                    message: "exit status 1".into(),
                }),
            ),
            (
                WireMessage::HeadToNode,
                encode(&p::HeadToNode::Spawn {
                    worker: WorkerId(1),
                    gpu_ids: vec![0, 1],
                    executable: crate::packaging::JobExecutable {
                        path: "/usr/local/bin/oxray".into(),
                        digest: "ab".repeat(32),
                        size: 123_456,
                        ship: crate::packaging::ShipExecutable::IfMissing,
                        runtime_env: Default::default(),
                    },
                }),
            ),
            (
                WireMessage::HeadToNode,
                encode(&p::HeadToNode::Free {
                    path: "/dev/shm/oxray-s-1".into(),
                    server: "127.0.0.2:40000".into(),
                    generation: 11,
                }),
            ),
            (
                WireMessage::HeadToNode,
                encode(&p::HeadToNode::Spill {
                    path: "/dev/shm/oxray-s-3".into(),
                    generation: 13,
                    len: 4 << 20,
                }),
            ),
            (
                WireMessage::PullRequest,
                encode(&p::PullRequest {
                    path: "/dev/shm/oxray-s-2".into(),
                    generation: 12,
                    len: 1 << 20,
                }),
            ),
            (
                WireMessage::Chunk,
                encode(&p::Chunk {
                    data: vec![1, 2, 3, 4],
                }),
            ),
            (
                WireMessage::ClusterStatus,
                encode(&p::ClusterStatus::default()),
            ),
        ]
    }

    mod erased {
        /// Lets `valid_messages` list messages of different types.
        pub trait Encode {
            fn encode(&self) -> Vec<u8>;
        }

        impl<T: serde::Serialize> Encode for T {
            fn encode(&self) -> Vec<u8> {
                postcard::to_allocvec(self).expect("sample messages encode")
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Inputs per property: 4,096 in the normal test run, `PROPTEST_CASES`
        /// for a longer campaign.
        fn cases() -> u32 {
            std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|cases| cases.parse().ok())
                .unwrap_or(4096)
        }

        fn refused_cleanly(kind: WireMessage, bytes: &[u8]) -> Result<(), TestCaseError> {
            if let Err(status) = decode_any_message(kind, bytes) {
                prop_assert_eq!(status.code(), tonic::Code::InvalidArgument);
                prop_assert!(status.message().starts_with("malformed "));
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(cases()))]

            #[test]
            fn arbitrary_bytes_are_decoded_or_refused_by_every_decoder(
                bytes in proptest::collection::vec(any::<u8>(), 0..4096),
            ) {
                for kind in WireMessage::ALL {
                    refused_cleanly(kind, &bytes)?;
                }
            }

            #[test]
            fn mutated_valid_messages_are_decoded_or_refused(
                which in any::<prop::sample::Index>(),
                edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
                cut in any::<prop::sample::Index>(),
            ) {
                let samples = valid_messages();
                let (kind, original) = &samples[which.index(samples.len())];
                prop_assert!(decode_any_message(*kind, original).is_ok());
                let mut bytes = original.clone();
                for (at, value) in &edits {
                    let at = at.index(bytes.len());
                    bytes[at] = *value;
                }
                refused_cleanly(*kind, &bytes)?;
                refused_cleanly(*kind, &bytes[..cut.index(bytes.len())])?;
            }
        }
    }

    #[test]
    fn huge_length_prefixes_are_refused_without_allocating() {
        // PullRequest starts with a string: claim u64::MAX bytes of it.
        let mut bytes = vec![0xff; 9];
        bytes.push(0x01);
        assert!(decode_any_message(WireMessage::PullRequest, &bytes).is_err());
        for kind in WireMessage::ALL {
            let _ = decode_any_message(kind, &bytes);
        }
    }
}
