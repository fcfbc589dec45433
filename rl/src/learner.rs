//! The Learner: one model replica with its optimizer, on a GPU when one is
//! assigned and CUDA is present, else on the CPU.
//!
//! It owns the generic half of a training step (tensors onto the device,
//! backward, global-norm clipping, Adam) while each algorithm supplies the loss
//! and the epoch/minibatch loop, so PPO, DQN or SAC reuse the same Learner. A
//! [`LearnerGroup`] spreads one batch over several Learners by whole
//! trajectories; until gradients are all-reduced between them it runs one.

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::models::{ActorCritic, PolicySpec};
use crate::optim::{clip_grad_norm, flat_gradient, flatten_parameters, Adam};
use crate::sample_batch::SampleBatch;
use crate::Error;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LearnerConfig {
    pub policy: PolicySpec,
    pub lr: f64,
    /// Global-norm clipping threshold (`grad_clip`); `None` disables it.
    pub grad_clip: Option<f64>,
    /// `num_gpus_per_learner > 0`: use CUDA if this process can see a device.
    pub use_gpu: bool,
    pub seed: u64,
}

/// Weights and optimizer state, as a checkpoint stores them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LearnerState {
    pub weights: Vec<u8>,
    pub optimizer: Vec<u8>,
}

pub struct Learner {
    model: ActorCritic,
    params: Vec<Tensor>,
    /// The buffer `params` view (see [`flatten_parameters`]).
    flat_params: Tensor,
    adam: Adam,
    grad_clip: Option<f64>,
}

impl Learner {
    pub fn new(config: &LearnerConfig) -> Self {
        crate::single_threaded_torch();
        tch::manual_seed(config.seed as i64);
        let device = if config.use_gpu && tch::Cuda::is_available() {
            Device::Cuda(0)
        } else {
            Device::Cpu
        };
        let model = ActorCritic::new(&config.policy, device);
        let params = model.var_store().trainable_variables();
        let flat_params = flatten_parameters(&params);
        let adam = Adam::new(&flat_params, config.lr);
        Learner {
            model,
            params,
            flat_params,
            adam,
            grad_clip: config.grad_clip,
        }
    }

    pub fn model(&self) -> &ActorCritic {
        &self.model
    }

    pub fn device(&self) -> Device {
        self.model.device()
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.adam.lr = lr;
    }

    /// A host column as a `[rows, width]` f32 tensor on this Learner's device.
    pub fn tensor(&self, data: &[f32], width: usize) -> Tensor {
        Tensor::from_slice(data)
            .view([-1, width as i64])
            .to_device(self.device())
    }

    /// Backward pass of `loss`, clipping, one Adam step. Returns the global
    /// gradient norm before clipping.
    pub fn apply_loss(&mut self, loss: &Tensor) -> f64 {
        let mut grad = flat_gradient(loss, &self.params);
        let norm = clip_grad_norm(&mut grad, self.grad_clip);
        self.adam.step(&self.flat_params, &grad);
        norm
    }

    pub fn weights(&self) -> Result<Vec<u8>, Error> {
        Ok(self.model.weights()?)
    }

    pub fn state(&self) -> Result<LearnerState, Error> {
        let mut optimizer = Vec::new();
        Tensor::save_multi_to_stream(&self.adam.state(), &mut optimizer)?;
        Ok(LearnerState {
            weights: self.weights()?,
            optimizer,
        })
    }

    pub fn set_state(&mut self, state: &LearnerState) -> Result<(), Error> {
        self.model.set_weights(&state.weights)?;
        // Loading may have given parameters storage of their own.
        self.flat_params = flatten_parameters(&self.params);
        let tensors = Tensor::load_multi_from_stream_with_device(
            std::io::Cursor::new(&state.optimizer),
            self.device(),
        )?;
        self.adam
            .load_state(&tensors)
            .ok_or_else(|| Error::Incompatible("optimizer state does not fit the model".into()))
    }
}

/// N Learners, each given a shard of whole trajectories.
pub struct LearnerGroup<L> {
    learners: Vec<L>,
}

impl<L> LearnerGroup<L> {
    pub fn new(learners: Vec<L>) -> Self {
        assert!(!learners.is_empty(), "a LearnerGroup needs a Learner");
        LearnerGroup { learners }
    }

    /// The Learner whose weights the EnvRunners receive and checkpoints save.
    pub fn first(&self) -> &L {
        &self.learners[0]
    }

    pub fn first_mut(&mut self) -> &mut L {
        &mut self.learners[0]
    }

    /// Runs `update` on every Learner with its shard of `batch` and averages
    /// the metrics they report.
    pub fn update<E>(
        &mut self,
        batch: &SampleBatch,
        mut update: impl FnMut(&mut L, SampleBatch) -> Result<crate::Metrics, E>,
    ) -> Result<crate::Metrics, E> {
        let shards = batch.shard(self.learners.len());
        let mut total = crate::Metrics::new();
        let n = shards.len() as f64;
        for (learner, shard) in self.learners.iter_mut().zip(shards) {
            for (key, value) in update(learner, shard)? {
                *total.entry(key).or_default() += value / n;
            }
        }
        Ok(total)
    }
}
