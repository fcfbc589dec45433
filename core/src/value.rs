//! Encoding values into objects and back.
//!
//! Values are serde-encoded with postcard. Two things ride along with the bytes:
//! the Rust type name, so a `get` of the wrong type is a clear
//! [`Error::TypeMismatch`] rather than garbage; and the ids of every
//! [`ObjectRef`](crate::ObjectRef) serialised inside the value, so the node keeps
//! those objects alive for as long as the value that mentions them exists.
//!
//! Decoding a value makes a counted handle of every ref inside it. Those
//! handles are counted together when the decode ends, not one by one: a
//! worker or joined driver then tells the head of a value holding 10,000
//! refs in one message instead of 10,000 (Ray's `get object containing 10k
//! refs`). A handle dropped while a decode runs (one that fails part way
//! drops what it built) is released after that count, never before it.

use crate::error::{Error, Result};
use crate::ids::ObjectId;
use crate::protocol::{ObjectBlob, Payload};
use crate::runtime::{self, Backend};
use crate::shm;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::RefCell;
use std::sync::Arc;

thread_local! {
    /// Ids of object refs met while encoding on this thread.
    static CAPTURED: RefCell<Option<Vec<ObjectId>>> = const { RefCell::new(None) };
    /// Handles made and dropped by the decode running on this thread.
    static DECODED: RefCell<Option<DecodedRefs>> = const { RefCell::new(None) };
}

/// What one decode did to this process's handles, settled when it ends.
#[derive(Default)]
struct DecodedRefs {
    made: Vec<ObjectId>,
    dropped: Vec<(Arc<dyn Backend>, ObjectId)>,
}

impl DecodedRefs {
    fn settle(self) {
        if !self.made.is_empty() {
            // Every handle made here asked `runtime::current` for its backend.
            if let Ok(backend) = runtime::current() {
                backend.add_refs(&self.made);
            }
        }
        for (backend, id) in self.dropped {
            backend.release(&[id]);
        }
    }
}

/// Ends a decode's scope, also when the decode panics, settling its handles
/// and restoring the scope of any decode it ran inside.
struct DecodeScope {
    outer: Option<DecodedRefs>,
}

impl DecodeScope {
    fn enter() -> Self {
        let outer = DECODED.with(|d| d.borrow_mut().replace(DecodedRefs::default()));
        DecodeScope { outer }
    }
}

impl Drop for DecodeScope {
    fn drop(&mut self) {
        let outer = self.outer.take();
        let finished = DECODED.with(|d| std::mem::replace(&mut *d.borrow_mut(), outer));
        if let Some(refs) = finished {
            refs.settle();
        }
    }
}

/// Records a change of handles in the decode running on this thread;
/// `false` when none runs, and the caller makes the change at once.
fn record_in_decode(record: impl FnOnce(&mut DecodedRefs)) -> bool {
    DECODED.with(|d| d.borrow_mut().as_mut().map(record).is_some())
}

/// Counts a handle to `id` just decoded on this thread: with the rest of
/// its decode once that ends, or at once outside a decode.
pub(crate) fn count_decoded(backend: &dyn Backend, id: ObjectId) {
    if !record_in_decode(|refs| refs.made.push(id)) {
        backend.add_refs(&[id]);
    }
}

/// Releases a dropped handle to `id`: after the handles of the decode
/// running on this thread are counted, or at once outside a decode.
pub(crate) fn release_dropped(backend: &Arc<dyn Backend>, id: ObjectId) {
    if !record_in_decode(|refs| refs.dropped.push((backend.clone(), id))) {
        backend.release(&[id]);
    }
}

/// Called by `ObjectRef`'s `Serialize` impl.
pub(crate) fn capture(id: ObjectId) {
    CAPTURED.with(|c| {
        if let Some(ids) = c.borrow_mut().as_mut() {
            ids.push(id);
        }
    });
}

/// Encodes `value` for `backend`, writing large values to shared memory.
pub(crate) fn encode<T: Serialize + ?Sized>(
    value: &T,
    backend: &dyn Backend,
) -> Result<ObjectBlob> {
    let previous = CAPTURED.with(|c| c.borrow_mut().replace(Vec::new()));
    let encoded = encode_bytes(value, backend);
    let contained = CAPTURED
        .with(|c| std::mem::replace(&mut *c.borrow_mut(), previous))
        .unwrap_or_default();
    let payload = encoded?;
    if !contained.is_empty() {
        // The value now holds references of its own, released when it is freed.
        backend.add_refs_for_value(&contained);
    }
    Ok(ObjectBlob {
        type_name: std::any::type_name::<T>().to_string(),
        contained,
        payload,
    })
}

/// The largest value sent inline in one message: the message limit less
/// room for the rest of the message (type name, ids, contained refs). A
/// larger frame would break the connection instead of failing the one call.
const INLINE_MESSAGE_LIMIT: usize = crate::wire::MAX_MESSAGE_BYTES - 1024 * 1024;

fn encode_bytes<T: Serialize + ?Sized>(value: &T, backend: &dyn Backend) -> Result<Payload> {
    let encode_error = |e: postcard::Error| Error::Decode {
        what: format!("a {} to encode", std::any::type_name::<T>()),
        message: e.to_string(),
    };
    // Sizing serialises the value once more: its refs are captured only by
    // the pass that writes it, so each is counted once.
    let capturing = CAPTURED.with(|c| c.borrow_mut().take());
    let len = postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default());
    CAPTURED.with(|c| *c.borrow_mut() = capturing);
    let len = len.map_err(encode_error)?;
    // A process with no object server (a driver outside the cluster) sends
    // everything inline: nobody could pull its files.
    if backend.object_server().is_none() && len > INLINE_MESSAGE_LIMIT {
        return Err(Error::OutOfBounds {
            what: "a value sent by a driver joined by address".into(),
            value: format!("{len} bytes"),
            limit: format!(
                "such a driver sends values inline to the head, at most {INLINE_MESSAGE_LIMIT} bytes each"
            ),
        });
    }
    let Some(server) = backend.object_server().filter(|_| len >= shm::INLINE_LIMIT) else {
        return postcard::to_allocvec(value)
            .map(Payload::Inline)
            .map_err(encode_error);
    };
    let id = ObjectId(backend.next_id());
    let path = shm::create(backend.session(), id, len, backend.hosts_node(), |sink| {
        match sink {
            shm::Sink::Slice(buf) => postcard::to_slice(value, buf).map(drop),
            shm::Sink::Stream(out) => postcard::to_io(value, out).map(drop),
        }
        .map_err(encode_error)
    })?;
    Ok(Payload::Shared {
        path: path.to_string_lossy().into_owned(),
        len: len as u64,
        node: backend.node_id().to_string(),
        server: server.to_string(),
        generation: id.0,
    })
}

/// Decodes a blob into `T`, checking the type it was made from.
pub(crate) fn decode<T: DeserializeOwned>(blob: &ObjectBlob) -> Result<T> {
    let expected = std::any::type_name::<T>();
    if blob.type_name != expected {
        return Err(Error::TypeMismatch {
            expected: expected.to_string(),
            found: blob.type_name.clone(),
        });
    }
    let decode_error = |e: postcard::Error| Error::Decode {
        what: format!("a {expected}"),
        message: e.to_string(),
    };
    let _scope = DecodeScope::enter();
    match &blob.payload {
        Payload::Inline(bytes) => postcard::from_bytes(bytes).map_err(decode_error),
        Payload::Shared {
            path,
            len,
            node,
            server,
            generation,
        } => {
            let backend = runtime::current()?;
            let bytes = if *node == backend.node_id() {
                shm::open(path, *len, *generation)?
            } else {
                let remote = crate::transfer::RemoteValue {
                    server,
                    path,
                    len: *len,
                    generation: *generation,
                };
                // A process without an object server is no node's: it keeps
                // what it pulls in its own memory.
                let session = backend.object_server().map(|_| backend.session());
                crate::transfer::pull(&remote, session, backend.token())?
            };
            postcard::from_bytes(&bytes).map_err(decode_error)
        }
    }
}

/// Encodes with the current runtime (used by generated code and the API).
pub(crate) fn encode_current<T: Serialize + ?Sized>(value: &T) -> Result<ObjectBlob> {
    let backend = runtime::current()?;
    encode(value, &*backend)
}
