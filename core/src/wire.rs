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
