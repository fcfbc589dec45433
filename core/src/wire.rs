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
