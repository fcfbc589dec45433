//! A replayed minibatch moved onto a Learner's device as one tensor.
//!
//! DQN and SAC take one gradient step per minibatch of a few dozen rows, so
//! making a tensor per column (seven creations, views and device copies per
//! step) costs as much as a sizeable part of the step itself. Packing the
//! columns one after another into a single host buffer makes it one creation
//! and one copy; each column is then a contiguous slice of it (a view, no
//! copy).

use tch::{Device, Tensor};

use super::ReplayBatch;

/// The columns of a [`ReplayBatch`] as f32 tensors on one device, all views
/// of one buffer.
pub struct DeviceReplayBatch {
    /// `[B, obs_dim]`.
    pub obs: Tensor,
    /// `[B, obs_dim]`.
    pub next_obs: Tensor,
    /// `[B, action_dim]`: action indices (as floats) for discrete spaces, the
    /// action vectors for continuous ones.
    pub actions: Tensor,
    /// `[B]`: R_t^(n).
    pub rewards: Tensor,
    /// `[B]`: 1 where the episode terminated within the n steps, else 0.
    pub terminateds: Tensor,
    /// `[B]`: γ^k for the k steps summed into the reward.
    pub discounts: Tensor,
    /// `[B]`: importance-sampling weights.
    pub weights: Tensor,
}

impl ReplayBatch {
    /// These columns on `device`, packed into one transfer.
    pub fn to_device(&self, device: Device) -> DeviceReplayBatch {
        let rows = self.len();
        let (d, a) = (self.obs_dim, self.action_dim);
        let mut packed = Vec::with_capacity(rows * (2 * d + a + 4));
        packed.extend_from_slice(&self.obs);
        packed.extend_from_slice(&self.next_obs);
        packed.extend_from_slice(&self.actions);
        packed.extend_from_slice(&self.rewards);
        packed.extend(self.terminateds.iter().map(|&t| f32::from(u8::from(t))));
        packed.extend_from_slice(&self.discounts);
        packed.extend_from_slice(&self.weights);
        let all = Tensor::from_slice(&packed).to_device(device);
        let mut offset = 0;
        let mut next = |width: usize| {
            let column = all.narrow(0, offset, (rows * width) as i64);
            offset += (rows * width) as i64;
            column
        };
        let rows = rows as i64;
        DeviceReplayBatch {
            obs: next(d).view([rows, d as i64]),
            next_obs: next(d).view([rows, d as i64]),
            actions: next(a).view([rows, a as i64]),
            rewards: next(1),
            terminateds: next(1),
            discounts: next(1),
            weights: next(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_keeps_its_rows() {
        let batch = ReplayBatch {
            obs_dim: 2,
            action_dim: 3,
            obs: vec![1.0, 2.0, 3.0, 4.0],
            actions: vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            rewards: vec![5.0, 6.0],
            next_obs: vec![7.0, 8.0, 9.0, 10.0],
            terminateds: vec![false, true],
            discounts: vec![0.99, 0.98],
            weights: vec![0.5, 1.0],
            indices: vec![3, 4],
        };
        let on = batch.to_device(Device::Cpu);
        let values = |t: &Tensor| Vec::<f32>::try_from(&t.contiguous().view(-1)).unwrap();
        assert_eq!(on.obs.size(), [2, 2]);
        assert_eq!(values(&on.obs), batch.obs);
        assert_eq!(on.next_obs.size(), [2, 2]);
        assert_eq!(values(&on.next_obs), batch.next_obs);
        assert_eq!(on.actions.size(), [2, 3]);
        assert_eq!(values(&on.actions), batch.actions);
        assert_eq!(values(&on.rewards), batch.rewards);
        assert_eq!(values(&on.terminateds), [0.0, 1.0]);
        assert_eq!(values(&on.discounts), batch.discounts);
        assert_eq!(values(&on.weights), batch.weights);
    }
}
