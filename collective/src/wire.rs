//! What travels between ranks: a small fixed header before every block of
//! elements, and the elements themselves as f32 or bfloat16.
//!
//! The header carries the operation, its sequence number and both the total
//! and the block element counts, so a rank that called a different operation
//! or passed a buffer of a different size is caught at its first block
//! instead of reading garbage. The element kernels are plain loops over slices
//! so the compiler vectorises them.

use crate::error::OpKind;

const MAGIC: u32 = u32::from_le_bytes(*b"OXCL");
pub(crate) const HEADER_BYTES: usize = 32;

/// How elements are encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireFormat {
    F32,
    /// The upper half of an f32 (round to nearest even): half the bytes.
    Bf16,
}

impl WireFormat {
    pub(crate) fn element_bytes(self) -> usize {
        match self {
            WireFormat::F32 => 4,
            WireFormat::Bf16 => 2,
        }
    }

    fn code(self) -> u8 {
        match self {
            WireFormat::F32 => 0,
            WireFormat::Bf16 => 1,
        }
    }
}

/// The header in front of every block a rank sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub op: OpKind,
    pub format: WireFormat,
    pub sequence: u64,
    pub total_elements: u64,
    pub block_elements: u64,
}

/// The fields of a received header, before they are checked against what the
/// receiver expects.
pub(crate) struct RawHeader {
    magic: u32,
    op: u8,
    format: u8,
    sequence: u64,
    total_elements: u64,
    block_elements: u64,
}

impl FrameHeader {
    pub(crate) fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0u8; HEADER_BYTES];
        bytes[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        bytes[4] = self.op.code();
        bytes[5] = self.format.code();
        bytes[8..16].copy_from_slice(&self.sequence.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.total_elements.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.block_elements.to_le_bytes());
        bytes
    }

    /// Why `received` is not the header this rank expects, if it is not.
    /// A differing total is reported separately because it is the common
    /// user error (buffers of different sizes on different ranks).
    pub(crate) fn check(&self, received: &RawHeader) -> HeaderCheck {
        if received.magic != MAGIC {
            return HeaderCheck::Garbled;
        }
        if received.op != self.op.code() || received.sequence != self.sequence {
            return HeaderCheck::OutOfStep(format!(
                "expected {} #{}, the peer sent operation code {} #{}",
                self.op, self.sequence, received.op, received.sequence
            ));
        }
        if received.format != self.format.code() {
            return HeaderCheck::OutOfStep(
                "the peer uses a different wire compression".to_string(),
            );
        }
        if received.total_elements != self.total_elements {
            return HeaderCheck::SizeMismatch(received.total_elements);
        }
        if received.block_elements != self.block_elements {
            return HeaderCheck::OutOfStep(format!(
                "expected a block of {} elements, got {}",
                self.block_elements, received.block_elements
            ));
        }
        HeaderCheck::Matches
    }
}

pub(crate) enum HeaderCheck {
    Matches,
    Garbled,
    OutOfStep(String),
    SizeMismatch(u64),
}

impl RawHeader {
    pub(crate) fn decode(bytes: &[u8; HEADER_BYTES]) -> Self {
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(word)
        };
        RawHeader {
            magic: u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            op: bytes[4],
            format: bytes[5],
            sequence: u64_at(8),
            total_elements: u64_at(16),
            block_elements: u64_at(24),
        }
    }
}

/// `destination[i] += source[i]`.
pub(crate) fn add_into(destination: &mut [f32], source: &[f32]) {
    for (d, s) in destination.iter_mut().zip(source) {
        *d += *s;
    }
}

/// `destination[i] += widen(source[i])` for bf16 `source`.
pub(crate) fn add_bf16_into(destination: &mut [f32], source: &[u16]) {
    for (d, s) in destination.iter_mut().zip(source) {
        *d += bf16_to_f32(*s);
    }
}

/// `destination[i] = widen(source[i])` for bf16 `source`.
pub(crate) fn copy_bf16_into(destination: &mut [f32], source: &[u16]) {
    for (d, s) in destination.iter_mut().zip(source) {
        *d = bf16_to_f32(*s);
    }
}

/// Encodes `values` as bf16 into `encoded` and rounds `values` in place to
/// the same numbers, so the sender keeps exactly what its peers receive.
pub(crate) fn encode_bf16_rounding(values: &mut [f32], encoded: &mut [u16]) {
    for (value, out) in values.iter_mut().zip(encoded.iter_mut()) {
        let bf16 = f32_to_bf16(*value);
        *out = bf16;
        *value = bf16_to_f32(bf16);
    }
}

fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// Round to nearest, ties to even; NaN stays NaN (its quiet bit is forced so
/// truncation cannot turn it into infinity).
fn f32_to_bf16(value: f32) -> u16 {
    let bits = value.to_bits();
    if value.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    let rounding_bias = 0x7FFF + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding_bias) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even_and_keeps_nan() {
        assert_eq!(bf16_to_f32(f32_to_bf16(1.0)), 1.0);
        assert_eq!(bf16_to_f32(f32_to_bf16(-2.5)), -2.5);
        // 1 + 2^-8 lies halfway between two bf16 values: ties go to even (1.0).
        assert_eq!(bf16_to_f32(f32_to_bf16(1.0 + 1.0 / 256.0)), 1.0);
        assert_eq!(
            bf16_to_f32(f32_to_bf16(1.0 + 3.0 / 512.0)),
            1.0 + 1.0 / 128.0
        );
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
        assert_eq!(bf16_to_f32(f32_to_bf16(f32::INFINITY)), f32::INFINITY);
    }

    #[test]
    fn header_round_trips_and_reports_size_mismatch() {
        let header = FrameHeader {
            op: OpKind::Allreduce,
            format: WireFormat::F32,
            sequence: 7,
            total_elements: 100,
            block_elements: 50,
        };
        let received = RawHeader::decode(&header.encode());
        assert!(matches!(header.check(&received), HeaderCheck::Matches));
        let bigger = FrameHeader {
            total_elements: 101,
            ..header
        };
        let received = RawHeader::decode(&bigger.encode());
        assert!(matches!(
            header.check(&received),
            HeaderCheck::SizeMismatch(101)
        ));
    }
}
