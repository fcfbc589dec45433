//! Observation columns in the element type the observation space has.
//!
//! Vector envs hand out `f32` rows whatever the space, but an image space's
//! elements are bytes (`uint8`, `0..=255`): kept as `f32` a sample batch of
//! Atari frames would be four times larger on the wire, in the Learner's
//! memory and on its device. So a batch's observation columns are an
//! [`ObsBuffer`] that holds bytes for `uint8` observations, and
//! [`ObsBuffer::to_tensor`] gives a `Uint8` tensor that the module's encoder
//! turns into floats (and scales) at its input, on the device.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use tch::Tensor;

/// The element type a batch keeps observations in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObsDType {
    #[default]
    F32,
    U8,
}

/// A flat column of observation values, row after row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ObsBuffer {
    F32(Vec<f32>),
    U8(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl Default for ObsBuffer {
    fn default() -> Self {
        ObsBuffer::F32(Vec::new())
    }
}

impl ObsBuffer {
    /// `len` zeros of `dtype`.
    pub fn zeros(dtype: ObsDType, len: usize) -> Self {
        match dtype {
            ObsDType::F32 => ObsBuffer::F32(vec![0.0; len]),
            ObsDType::U8 => ObsBuffer::U8(vec![0; len]),
        }
    }

    pub fn dtype(&self) -> ObsDType {
        match self {
            ObsBuffer::F32(_) => ObsDType::F32,
            ObsBuffer::U8(_) => ObsDType::U8,
        }
    }

    /// Number of values (rows × row width).
    pub fn len(&self) -> usize {
        match self {
            ObsBuffer::F32(v) => v.len(),
            ObsBuffer::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Overwrites the values from `offset` on with `values`, as an env
    /// reports them (a `uint8` space's values are whole numbers in range,
    /// so the cast is exact).
    pub fn write(&mut self, offset: usize, values: &[f32]) {
        match self {
            ObsBuffer::F32(v) => v[offset..offset + values.len()].copy_from_slice(values),
            ObsBuffer::U8(v) => {
                for (dst, &x) in v[offset..offset + values.len()].iter_mut().zip(values) {
                    *dst = x as u8;
                }
            }
        }
    }

    /// Appends env values at the end.
    pub fn extend_from_f32(&mut self, values: impl IntoIterator<Item = f32>) {
        match self {
            ObsBuffer::F32(v) => v.extend(values),
            ObsBuffer::U8(v) => v.extend(values.into_iter().map(|x| x as u8)),
        }
    }

    /// Appends `other`'s values at the end.
    ///
    /// # Panics
    /// If the element types differ; one module's batches never do.
    pub fn append(&mut self, other: &ObsBuffer) {
        self.extend_from(other, 0..other.len());
    }

    /// Appends `source[range]` at the end.
    ///
    /// # Panics
    /// If the element types differ.
    pub fn extend_from(&mut self, source: &ObsBuffer, range: Range<usize>) {
        match (self, source) {
            (ObsBuffer::F32(a), ObsBuffer::F32(b)) => a.extend_from_slice(&b[range]),
            (ObsBuffer::U8(a), ObsBuffer::U8(b)) => a.extend_from_slice(&b[range]),
            (a, b) => panic!("observations of {:?} added to {:?}", b.dtype(), a.dtype()),
        }
    }

    /// Copies `source[from]` to `self[to..]`.
    ///
    /// # Panics
    /// If the element types differ.
    pub fn copy_from(&mut self, to: usize, source: &ObsBuffer, from: Range<usize>) {
        let len = from.len();
        match (self, source) {
            (ObsBuffer::F32(a), ObsBuffer::F32(b)) => a[to..to + len].copy_from_slice(&b[from]),
            (ObsBuffer::U8(a), ObsBuffer::U8(b)) => a[to..to + len].copy_from_slice(&b[from]),
            (a, b) => panic!("observations of {:?} copied to {:?}", b.dtype(), a.dtype()),
        }
    }

    /// The values in `range` as `f32`, the element type replay buffers keep.
    pub fn to_f32(&self, range: Range<usize>) -> Vec<f32> {
        match self {
            ObsBuffer::F32(v) => v[range].to_vec(),
            ObsBuffer::U8(v) => v[range].iter().map(|&x| f32::from(x)).collect(),
        }
    }

    /// The rows as a `[rows, width]` host tensor of the buffer's own element
    /// type (`Float` or `Uint8`).
    pub fn to_tensor(&self, width: usize) -> Tensor {
        let flat = match self {
            ObsBuffer::F32(v) => Tensor::from_slice(v),
            ObsBuffer::U8(v) => Tensor::from_slice(v),
        };
        flat.view([-1, width as i64])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte observations stay bytes through writes, appends and copies, and
    /// come out as exact floats or as a `Uint8` tensor.
    #[test]
    fn byte_observations_stay_bytes_until_a_tensor_is_asked_for() {
        let mut a = ObsBuffer::zeros(ObsDType::U8, 4);
        a.write(2, &[255.0, 7.0]);
        let mut b = ObsBuffer::zeros(ObsDType::U8, 0);
        b.extend_from_f32([1.0, 2.0]);
        a.append(&b);
        a.copy_from(0, &b, 0..2);
        assert_eq!(a, ObsBuffer::U8(vec![1, 2, 255, 7, 1, 2]));
        assert_eq!(a.to_f32(2..4), vec![255.0, 7.0]);
        let t = a.to_tensor(2);
        assert_eq!(t.kind(), tch::Kind::Uint8);
        assert_eq!(t.size(), [3, 2]);
        let bytes = postcard::to_allocvec(&a).unwrap();
        assert!(bytes.len() < 12, "{} bytes for 6 values", bytes.len());
    }
}
