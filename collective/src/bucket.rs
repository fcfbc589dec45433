//! Gradient bucketing: many small tensors all-reduced as a few large buffers.
//!
//! One all-reduce per tensor would pay a round of headers and pipeline fill
//! per tensor; one all-reduce over everything would need a second copy of
//! the whole model. PyTorch DDP's answer, used here, is to copy gradients
//! into a bucket of bounded size (25 MiB by default), all-reduce the bucket,
//! and copy the results back. Tensors are packed in order and a tensor larger
//! than the space left is split across buckets, so every bucket is full except
//! the last and memory stays at one bucket.

use crate::error::Result;
use crate::group::CollectiveGroup;
use crate::options::ReduceOp;
use std::ops::Range;

/// A span of one tensor placed in the current bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placement {
    tensor: usize,
    elements: Range<usize>,
}

/// All-reduces lists of f32 tensors bucket by bucket.
#[derive(Debug)]
pub struct GradientBucketer {
    bucket_elements: usize,
    bucket: Vec<f32>,
    placements: Vec<Placement>,
}

impl GradientBucketer {
    /// A bucketer whose buckets hold at most `bucket_bytes` bytes of f32
    /// (at least one element).
    pub fn new(bucket_bytes: usize) -> Self {
        GradientBucketer {
            bucket_elements: (bucket_bytes / std::mem::size_of::<f32>()).max(1),
            bucket: Vec::new(),
            placements: Vec::new(),
        }
    }

    /// A bucketer with the bucket size the group was configured with.
    pub fn for_group(group: &CollectiveGroup) -> Self {
        Self::new(group.options().bucket_bytes)
    }

    /// All-reduces every tensor of `gradients` in place; returns how many
    /// buckets it took. Every rank must pass tensors of the same sizes in the
    /// same order.
    pub fn allreduce(
        &mut self,
        group: &mut CollectiveGroup,
        gradients: &mut [&mut [f32]],
        op: ReduceOp,
    ) -> Result<usize> {
        let mut buckets = 0;
        let mut tensor = 0;
        let mut offset = 0;
        loop {
            self.fill(gradients, &mut tensor, &mut offset);
            if self.bucket.is_empty() {
                return Ok(buckets);
            }
            group.allreduce(&mut self.bucket, op)?;
            self.drain(gradients);
            buckets += 1;
        }
    }

    /// Copies tensors from (`tensor`, `offset`) on into the bucket until it is
    /// full or the tensors run out, advancing the cursor.
    fn fill(&mut self, gradients: &[&mut [f32]], tensor: &mut usize, offset: &mut usize) {
        self.bucket.clear();
        self.placements.clear();
        while *tensor < gradients.len() && self.bucket.len() < self.bucket_elements {
            let source = &gradients[*tensor];
            let take = (source.len() - *offset).min(self.bucket_elements - self.bucket.len());
            let elements = *offset..*offset + take;
            self.bucket.extend_from_slice(&source[elements.clone()]);
            self.placements.push(Placement {
                tensor: *tensor,
                elements,
            });
            *offset += take;
            if *offset == source.len() {
                *tensor += 1;
                *offset = 0;
            }
        }
    }

    /// Copies the reduced bucket back into the spans it came from.
    fn drain(&self, gradients: &mut [&mut [f32]]) {
        let mut start = 0;
        for placement in &self.placements {
            let len = placement.elements.len();
            gradients[placement.tensor][placement.elements.clone()]
                .copy_from_slice(&self.bucket[start..start + len]);
            start += len;
        }
    }
}

impl Default for GradientBucketer {
    fn default() -> Self {
        Self::new(crate::options::DEFAULT_BUCKET_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_pack_in_order_and_split_at_bucket_edges() {
        let mut bucketer = GradientBucketer::new(5 * 4);
        let mut first = vec![1.0; 3];
        let mut second = vec![2.0; 4];
        let mut empty: Vec<f32> = Vec::new();
        let gradients: Vec<&mut [f32]> = vec![&mut first, &mut empty, &mut second];
        let (mut tensor, mut offset) = (0, 0);
        bucketer.fill(&gradients, &mut tensor, &mut offset);
        assert_eq!(bucketer.bucket, vec![1.0, 1.0, 1.0, 2.0, 2.0]);
        assert_eq!(
            bucketer.placements,
            vec![
                Placement {
                    tensor: 0,
                    elements: 0..3
                },
                Placement {
                    tensor: 1,
                    elements: 0..0
                },
                Placement {
                    tensor: 2,
                    elements: 0..2
                },
            ]
        );
        bucketer.fill(&gradients, &mut tensor, &mut offset);
        assert_eq!(bucketer.bucket, vec![2.0, 2.0]);
        bucketer.fill(&gradients, &mut tensor, &mut offset);
        assert!(bucketer.bucket.is_empty());
    }
}
