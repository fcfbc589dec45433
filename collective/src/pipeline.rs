//! The one data-moving engine every algorithm runs on.
//!
//! An algorithm step, as seen by one rank, is a [`Plan`]: blocks of its buffer
//! to send to one neighbour and blocks to receive from another (reducing into
//! or copying over the buffer). Rings, chains and leader rings differ only in
//! the plans they build. A send block may be gated on a receive block: it goes
//! out as fast as that block arrives, which is what pipelines a ring (the
//! segment sent at step s is the one received at step s-1) and a chain (each
//! rank forwards what it has just received).
//!
//! Both links (a socket or a shared-memory ring each) are non-blocking and
//! driven from one thread, so sending, receiving and reducing overlap without
//! locks or per-step threads; when neither can move, the rank waits in
//! `Mesh::wait` (poll for sockets, a futex for rings), and every wait is
//! bounded by the operation's deadline.

use crate::error::{CollectiveError, OpKind, Result};
use crate::socket::{socket_error, Transfer};
use crate::transport::Mesh;
use crate::wire::{
    add_bf16_into, add_into, copy_bf16_into, encode_bf16_rounding, FrameHeader, HeaderCheck,
    RawHeader, WireFormat, HEADER_BYTES,
};
use std::ops::Range;
use std::time::{Duration, Instant};

/// Elements staged per chunk: large enough that a syscall moves a lot, small
/// enough that reduction starts while the rest is still in flight.
const CHUNK_ELEMENTS: usize = 128 * 1024;

/// When a send block may go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    Immediately,
    /// Element by element, as receive block `n` of the same plan arrives; the
    /// two blocks have the same length.
    AsReceived(usize),
}

/// What a received block does to the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Apply {
    Reduce,
    Copy,
}

#[derive(Debug, Clone)]
pub(crate) struct SendBlock {
    pub range: Range<usize>,
    pub gate: Gate,
}

#[derive(Debug, Clone)]
pub(crate) struct ReceiveBlock {
    pub range: Range<usize>,
    pub apply: Apply,
}

/// One rank's part of one algorithm step.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    pub send_to: Option<usize>,
    pub receive_from: Option<usize>,
    pub sends: Vec<SendBlock>,
    pub receives: Vec<ReceiveBlock>,
}

/// What the headers of an operation carry, shared by all its plans.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame {
    pub op: OpKind,
    pub sequence: u64,
    pub format: WireFormat,
    pub total_elements: usize,
}

impl Frame {
    fn header(&self, block_elements: usize) -> FrameHeader {
        FrameHeader {
            op: self.op,
            format: self.format,
            sequence: self.sequence,
            total_elements: self.total_elements as u64,
            block_elements: block_elements as u64,
        }
    }
}

/// Staging memory kept by a group across operations, so the data path does
/// not allocate.
pub(crate) struct Staging {
    receive: Vec<f32>,
    send_bf16: Vec<u16>,
}

impl Default for Staging {
    fn default() -> Self {
        Staging {
            receive: vec![0.0; CHUNK_ELEMENTS],
            send_bf16: vec![0; CHUNK_ELEMENTS],
        }
    }
}

/// Progress of the send side through `plan.sends`.
#[derive(Default)]
struct SendProgress {
    block: usize,
    header: [u8; HEADER_BYTES],
    header_sent: usize,
    /// Payload bytes of the current block already handed to the link.
    payload_sent: usize,
    /// bf16 only: elements encoded into staging, and how many of those bytes
    /// went out.
    staged_elements: usize,
    staged_sent: usize,
    encoded_elements: usize,
}

/// Progress of the receive side through `plan.receives`.
#[derive(Default)]
struct ReceiveProgress {
    block: usize,
    header: [u8; HEADER_BYTES],
    header_received: usize,
    payload_received: usize,
    /// Elements of the current block already reduced or copied into the buffer.
    applied: usize,
    /// Bytes in the staging chunk, and how many of its elements are applied.
    staged_bytes: usize,
    staged_applied: usize,
}

impl ReceiveProgress {
    /// Elements of receive block `block` that are in the buffer, or `None`
    /// while its header has not arrived (an empty block still orders its
    /// sender after its receiver, which barriers rely on).
    fn available(&self, block: usize, plan: &Plan) -> Option<usize> {
        if block < self.block {
            Some(plan.receives[block].range.len())
        } else if block == self.block && self.header_received == HEADER_BYTES {
            Some(self.applied)
        } else {
            None
        }
    }
}

/// How far one side got before it had to stop. A gated send only ever waits
/// for the receive side, which is then blocked on its socket, so waiting for
/// that socket is enough to make progress again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SideState {
    Done,
    /// The socket is full (send) or empty (receive).
    WouldBlock,
    /// A send waiting for its gate, i.e. for the receive side.
    Gated,
}

/// Runs `plan` on `buffer` until both sides are done, the deadline passes or
/// a peer fails.
pub(crate) fn run(
    mesh: &mut Mesh,
    staging: &mut Staging,
    buffer: &mut [f32],
    plan: &Plan,
    frame: Frame,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut sending = SendProgress::default();
    let mut receiving = ReceiveProgress::default();
    loop {
        // Read before the transfers, so a peer that rings while they run
        // makes the wait below return at once.
        let observed = mesh.observe();
        let receive_state = advance_receive(mesh, staging, buffer, plan, frame, &mut receiving)?;
        let send_state =
            advance_send(mesh, staging, buffer, plan, frame, &mut sending, &receiving)?;
        if send_state == SideState::Done && receive_state == SideState::Done {
            return mesh.flush(frame.op, deadline);
        }
        let send_to = plan.send_to.filter(|_| send_state == SideState::WouldBlock);
        let receive_from = plan
            .receive_from
            .filter(|_| receive_state == SideState::WouldBlock);
        mesh.wait(send_to, receive_from, observed, frame.op, deadline, timeout)?;
    }
}

fn advance_send(
    mesh: &mut Mesh,
    staging: &mut Staging,
    buffer: &mut [f32],
    plan: &Plan,
    frame: Frame,
    progress: &mut SendProgress,
    receiving: &ReceiveProgress,
) -> Result<SideState> {
    let Some(peer) = plan.send_to else {
        return Ok(SideState::Done);
    };
    let rank = mesh.rank();
    let fail = |error| socket_error(rank, peer, frame.op, error);
    let element_bytes = frame.format.element_bytes();
    while let Some(block) = plan.sends.get(progress.block) {
        let available = match block.gate {
            Gate::Immediately => Some(block.range.len()),
            Gate::AsReceived(source) => receiving.available(source, plan),
        };
        let Some(available) = available else {
            return Ok(SideState::Gated);
        };
        if progress.header_sent < HEADER_BYTES {
            if progress.header_sent == 0 {
                progress.header = frame.header(block.range.len()).encode();
            }
            match mesh
                .send_some(peer, &progress.header[progress.header_sent..])
                .map_err(fail)?
            {
                Transfer::Moved(bytes) => {
                    progress.header_sent += bytes;
                    continue;
                }
                Transfer::WouldBlock => return Ok(SideState::WouldBlock),
            }
        }
        let block_bytes = block.range.len() * element_bytes;
        if progress.payload_sent == block_bytes {
            *progress = SendProgress {
                block: progress.block + 1,
                ..SendProgress::default()
            };
            continue;
        }
        let pending: &[u8] = match frame.format {
            WireFormat::F32 => {
                let sendable = &buffer[block.range.start..block.range.start + available];
                &bytemuck::cast_slice(sendable)[progress.payload_sent..]
            }
            WireFormat::Bf16 => {
                if progress.staged_sent == progress.staged_elements * 2 {
                    let start = progress.encoded_elements;
                    let count = (available - start).min(CHUNK_ELEMENTS);
                    let values =
                        &mut buffer[block.range.start + start..block.range.start + start + count];
                    encode_bf16_rounding(values, &mut staging.send_bf16[..count]);
                    progress.encoded_elements += count;
                    progress.staged_elements = count;
                    progress.staged_sent = 0;
                }
                let staged = &staging.send_bf16[..progress.staged_elements];
                &bytemuck::cast_slice(staged)[progress.staged_sent..]
            }
        };
        if pending.is_empty() {
            return Ok(SideState::Gated);
        }
        match mesh.send_some(peer, pending).map_err(fail)? {
            Transfer::Moved(bytes) => {
                progress.payload_sent += bytes;
                if frame.format == WireFormat::Bf16 {
                    progress.staged_sent += bytes;
                }
            }
            Transfer::WouldBlock => return Ok(SideState::WouldBlock),
        }
    }
    Ok(SideState::Done)
}

fn advance_receive(
    mesh: &mut Mesh,
    staging: &mut Staging,
    buffer: &mut [f32],
    plan: &Plan,
    frame: Frame,
    progress: &mut ReceiveProgress,
) -> Result<SideState> {
    let Some(peer) = plan.receive_from else {
        return Ok(SideState::Done);
    };
    let rank = mesh.rank();
    let fail = |error| socket_error(rank, peer, frame.op, error);
    let element_bytes = frame.format.element_bytes();
    while let Some(block) = plan.receives.get(progress.block) {
        if progress.header_received < HEADER_BYTES {
            match mesh
                .receive_some(peer, &mut progress.header[progress.header_received..])
                .map_err(fail)?
            {
                Transfer::Moved(bytes) => progress.header_received += bytes,
                Transfer::WouldBlock => return Ok(SideState::WouldBlock),
            }
            if progress.header_received == HEADER_BYTES {
                check_header(rank, peer, frame, block, &progress.header)?;
            }
            continue;
        }
        let block_bytes = block.range.len() * element_bytes;
        let remaining = block_bytes - progress.payload_received;
        if remaining == 0 {
            *progress = ReceiveProgress {
                block: progress.block + 1,
                ..ReceiveProgress::default()
            };
            continue;
        }
        let target = &mut buffer[block.range.clone()];
        if frame.format == WireFormat::F32 && block.apply == Apply::Copy {
            // Straight into place: no staging copy for plain f32 copies.
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(target);
            match mesh
                .receive_some(peer, &mut bytes[progress.payload_received..])
                .map_err(fail)?
            {
                Transfer::Moved(count) => {
                    progress.payload_received += count;
                    progress.applied = progress.payload_received / element_bytes;
                }
                Transfer::WouldBlock => return Ok(SideState::WouldBlock),
            }
            continue;
        }
        if progress.staged_bytes == 0 {
            // Shared memory: reduce straight out of the ring, whole elements
            // at a time, skipping the copy into staging.
            let applied = progress.applied;
            let in_place = mesh
                .receive_in_place(peer, remaining, |bytes| {
                    let whole = bytes.len() / element_bytes * element_bytes;
                    let destination = &mut target[applied..applied + whole / element_bytes];
                    if apply_bytes(frame.format, block.apply, destination, &bytes[..whole]) {
                        whole
                    } else {
                        0
                    }
                })
                .map_err(fail)?;
            match in_place {
                Some(Transfer::WouldBlock) => return Ok(SideState::WouldBlock),
                Some(Transfer::Moved(count)) if count > 0 => {
                    progress.payload_received += count;
                    progress.applied += count / element_bytes;
                    continue;
                }
                // A socket, or a ring holding only part of an element or
                // misaligned data: take the staging path.
                _ => {}
            }
        }
        let staging_bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut staging.receive[..]);
        let room = (staging_bytes.len() - progress.staged_bytes).min(remaining);
        let window = &mut staging_bytes[progress.staged_bytes..progress.staged_bytes + room];
        match mesh.receive_some(peer, window).map_err(fail)? {
            Transfer::Moved(count) => {
                progress.staged_bytes += count;
                progress.payload_received += count;
            }
            Transfer::WouldBlock => return Ok(SideState::WouldBlock),
        }
        let complete = progress.staged_bytes / element_bytes;
        let fresh = progress.staged_applied..complete;
        let destination = &mut target[progress.applied..progress.applied + fresh.len()];
        let staged: &[u8] = bytemuck::cast_slice(&staging.receive[..]);
        let fresh_bytes = &staged[fresh.start * element_bytes..fresh.end * element_bytes];
        // Staging is f32-aligned, so the cast inside cannot fail here.
        apply_bytes(frame.format, block.apply, destination, fresh_bytes);
        progress.applied += fresh.len();
        progress.staged_applied = complete;
        // The staging chunk holds a whole number of elements, so when it is
        // full everything in it has been applied and it can start over.
        if progress.staged_bytes == staging_bytes_len(staging) {
            progress.staged_bytes = 0;
            progress.staged_applied = 0;
        }
    }
    Ok(SideState::Done)
}

/// Reduces or copies the elements encoded in `bytes` into `destination`;
/// false (and nothing done) when `bytes` is not aligned for its element type.
fn apply_bytes(format: WireFormat, apply: Apply, destination: &mut [f32], bytes: &[u8]) -> bool {
    match format {
        WireFormat::F32 => {
            let Ok(source) = bytemuck::try_cast_slice::<u8, f32>(bytes) else {
                return false;
            };
            match apply {
                Apply::Reduce => add_into(destination, source),
                Apply::Copy => destination.copy_from_slice(source),
            }
        }
        WireFormat::Bf16 => {
            let Ok(source) = bytemuck::try_cast_slice::<u8, u16>(bytes) else {
                return false;
            };
            match apply {
                Apply::Reduce => add_bf16_into(destination, source),
                Apply::Copy => copy_bf16_into(destination, source),
            }
        }
    }
    true
}

fn staging_bytes_len(staging: &Staging) -> usize {
    std::mem::size_of_val(staging.receive.as_slice())
}

fn check_header(
    rank: usize,
    peer: usize,
    frame: Frame,
    block: &ReceiveBlock,
    header: &[u8; HEADER_BYTES],
) -> Result<()> {
    let expected = frame.header(block.range.len());
    match expected.check(&RawHeader::decode(header)) {
        HeaderCheck::Matches => Ok(()),
        HeaderCheck::SizeMismatch(got) => Err(CollectiveError::SizeMismatch {
            rank,
            peer,
            op: frame.op,
            expected: frame.total_elements as u64,
            got,
        }),
        HeaderCheck::Garbled => Err(CollectiveError::ProtocolMismatch {
            rank,
            peer,
            op: frame.op,
            detail: "the peer sent bytes that are not a frame header".to_string(),
        }),
        HeaderCheck::OutOfStep(detail) => Err(CollectiveError::ProtocolMismatch {
            rank,
            peer,
            op: frame.op,
            detail,
        }),
    }
}
