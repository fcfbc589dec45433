//! The Learner: one RLModule replica with its optimizer, on a GPU when one
//! is assigned and CUDA is present, else on the CPU.
//!
//! It owns the generic half of a training step (tensors onto the device,
//! backward, global-norm clipping, Adam) while each algorithm supplies the loss
//! and the epoch/minibatch loop, so PPO and DQN reuse the same Learner, generic
//! over their module type.
//!
//! Several Learners train data-parallel: each joins one collective group
//! ([`Learner::join_data_parallel_group`]), computes the gradient of its slice
//! of every minibatch, and all-reduces it (mean) before clipping and Adam, so
//! every replica takes the same step and they stay in sync without ever
//! exchanging weights. A [`crate::learner_group::LearnerGroup`] starts an
//! update on all of them at once and averages what they report.

use std::ops::Range;

use oxray_collective::{GroupOptions, ReduceOp};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::collective::allreduce_tensor;
use crate::host_threads::HostThreads;
use crate::optim::{
    clip_grad_norm, clip_scale, flat_gradient, flatten_parameters, host_view, Adam,
};
use crate::rl_module::{self, ModuleSpec, RLModule};
use crate::Error;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LearnerConfig {
    pub module: ModuleSpec,
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

pub struct Learner<M> {
    module: M,
    params: Vec<Tensor>,
    /// The buffer `params` view (see [`flatten_parameters`]).
    flat_params: Tensor,
    adam: Adam,
    grad_clip: Option<f64>,
    data_parallel: Option<DataParallel>,
    /// [`Learner::host_step`]'s gradient vector, kept between steps.
    host_grad: Vec<f32>,
    /// The threads [`Learner::host_step`]'s gradient may split over.
    host_threads: HostThreads,
}

/// This Learner's place in a data-parallel group.
struct DataParallel {
    group_name: String,
    rank: usize,
    world_size: usize,
}

/// A Learner's parameters and optimizer state, copied in memory.
pub struct Snapshot {
    params: Tensor,
    adam: Adam,
}

/// What one optimizer step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Step {
    /// `loss` is the (group-averaged) loss the step descended.
    Applied { loss: f64, grad_norm: f64 },
    /// The loss was NaN or infinite (on any Learner of the group); the
    /// weights are untouched.
    NonFiniteLoss(f64),
}

impl<M: RLModule> Learner<M> {
    pub fn new(config: &LearnerConfig) -> Self {
        crate::setup_torch_process();
        let device = if config.use_gpu && tch::Cuda::is_available() {
            Device::Cuda(0)
        } else {
            Device::Cpu
        };
        let module = rl_module::initialise::<M>(&config.module, device, Some(config.seed as i64));
        let params = module.var_store().trainable_variables();
        let flat_params = flatten_parameters(&params);
        let adam = Adam::new(&flat_params, config.lr);
        Learner {
            module,
            params,
            flat_params,
            adam,
            grad_clip: config.grad_clip,
            data_parallel: None,
            host_grad: Vec::new(),
            // As many as libtorch's intra-op threads, which the process set
            // from the CPUs this Learner reserved (`use_torch_threads`).
            host_threads: HostThreads::new(usize::try_from(tch::get_num_threads()).unwrap_or(1)),
        }
    }

    /// Joins collective group `group_name` as `rank` of `world_size`; from then
    /// on every step averages the gradient over the group. The layout comes
    /// from each rank's node, so the all-reduce sees the real topology.
    pub fn join_data_parallel_group(
        &mut self,
        group_name: &str,
        rank: usize,
        world_size: usize,
    ) -> Result<(), Error> {
        oxray_collective::init_collective_group(
            world_size,
            rank,
            group_name,
            GroupOptions::default(),
        )?;
        self.data_parallel = Some(DataParallel {
            group_name: group_name.to_string(),
            rank,
            world_size,
        });
        Ok(())
    }

    /// The rows of a `len`-row minibatch this Learner trains on: its
    /// contiguous part of `world_size` near-equal parts (all rows alone).
    pub fn slice_of(&self, len: usize) -> Range<usize> {
        match &self.data_parallel {
            None => 0..len,
            Some(dp) => {
                let bound = |rank: usize| rank * len / dp.world_size;
                bound(dp.rank)..bound(dp.rank + 1)
            }
        }
    }

    /// Scales a loss that is the mean over this Learner's `slice_len` rows of a
    /// `len`-row minibatch so that the group's mean gradient is the gradient
    /// of the mean over all `len` rows, however unevenly they split.
    pub fn slice_weight(&self, slice_len: usize, len: usize) -> f64 {
        let world_size = self.data_parallel.as_ref().map_or(1, |dp| dp.world_size);
        (world_size * slice_len) as f64 / len as f64
    }

    pub fn module(&self) -> &M {
        &self.module
    }

    pub fn device(&self) -> Device {
        self.module.device()
    }

    /// The threads this Learner's steps run on: libtorch's intra-op
    /// threads as the process set them when it was built, which its host
    /// steps keep when they take them over
    /// ([`Learner::keep_threads_for_host_steps`]).
    pub fn threads(&self) -> usize {
        self.host_threads.threads()
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.adam.lr = lr;
    }

    /// Learning rates per element of the flat parameter buffer (laid out as
    /// [`RLModule::flat_weights`]), for modules whose parts learn at
    /// different rates.
    pub fn set_lr_per_parameter(&mut self, lrs: Tensor) {
        self.adam.set_lr_per_parameter(lrs);
    }

    /// A host column as a `[rows, width]` f32 tensor on this Learner's device.
    pub fn tensor(&self, data: &[f32], width: usize) -> Tensor {
        Tensor::from_slice(data)
            .view([-1, width as i64])
            .to_device(self.device())
    }

    /// An observation column as a `[rows, width]` tensor on this Learner's
    /// device, in the column's own element type: image bytes cross to the
    /// device as bytes and become floats in the module's encoder.
    pub fn obs_tensor(&self, obs: &crate::ObsBuffer, width: usize) -> Tensor {
        obs.to_tensor(width).to_device(self.device())
    }

    /// Backward pass of `loss`, the group's mean gradient, clipping, one Adam
    /// step.
    pub fn apply_loss(&mut self, loss: &Tensor) -> Result<Step, Error> {
        let value = loss.double_value(&[]);
        if self.data_parallel.is_none() && !value.is_finite() {
            return Ok(Step::NonFiniteLoss(value));
        }
        let grad = flat_gradient(loss, &self.params);
        self.step(value, grad)
    }

    /// Clipping and one Adam step along `grad` (laid out as the flat
    /// parameter buffer), for losses whose parts each train only some of the
    /// parameters (SAC); `loss` is the value reported and checked.
    pub fn apply_gradient(&mut self, loss: f64, grad: Tensor) -> Result<Step, Error> {
        if self.data_parallel.is_none() && !loss.is_finite() {
            return Ok(Step::NonFiniteLoss(loss));
        }
        self.step(loss, grad)
    }

    /// A step for a Learner whose slice of the minibatch is empty: it still
    /// takes part in the group's all-reduce, with a zero gradient.
    pub fn apply_no_loss(&mut self) -> Result<Step, Error> {
        let grad = self.flat_params.zeros_like();
        self.step(0.0, grad)
    }

    fn step(&mut self, loss: f64, mut grad: Tensor) -> Result<Step, Error> {
        let loss = match &self.data_parallel {
            None => loss,
            Some(dp) => {
                // The loss rides along with the gradient, so every rank learns
                // in the same collective whether any rank's loss was non-finite
                // and all of them skip the step together.
                let numel = grad.numel() as i64;
                let loss = Tensor::from_slice(&[loss as f32]).to_device(grad.device());
                let mut packed = Tensor::cat(&[grad, loss], 0);
                allreduce_tensor(&mut packed, &dp.group_name, ReduceOp::Mean)?;
                grad = packed.narrow(0, 0, numel);
                packed.double_value(&[numel])
            }
        };
        if !loss.is_finite() {
            return Ok(Step::NonFiniteLoss(loss));
        }
        let grad_norm = clip_grad_norm(&mut grad, self.grad_clip);
        self.adam.step(&self.flat_params, &grad);
        Ok(Step::Applied { loss, grad_norm })
    }

    /// The trainable parameters as one flat vector (see
    /// [`RLModule::set_flat_weights`]).
    pub fn flat_weights(&self) -> Vec<f32> {
        crate::to_host(&self.flat_params)
    }

    /// Whether [`Learner::host_step`] steps: this Learner is on the CPU,
    /// alone (a data-parallel group all-reduces libtorch gradients) and has
    /// one learning rate for all parameters.
    pub fn trains_on_host(&self) -> bool {
        self.device() == Device::Cpu && self.data_parallel.is_none() && self.adam.steps_on_host()
    }

    /// Gives this Learner's threads to its host gradient
    /// ([`Learner::host_step`]) and leaves libtorch one, for a Learner
    /// whose every gradient step runs on the host: its libtorch ops are
    /// then copies of the weights, and libtorch's idle intra-op threads
    /// spin for milliseconds after each op they split, taking the cores
    /// from the host gradient's threads.
    pub fn keep_threads_for_host_steps(&self) {
        if self.trains_on_host() && self.host_threads.threads() > 1 {
            tch::set_num_threads(1);
        }
    }

    /// One step whose gradient is computed on the host: `gradient` gets the
    /// flat parameters, a zeroed flat gradient of the same layout and the
    /// threads it may split the work over ([`HostThreads::mean_over_rows`]),
    /// adds the loss's gradient into the gradient and returns the loss;
    /// then clipping and Adam run in place on the Learner's own buffers, so
    /// the module, its checkpoints and the weights EnvRunners get see the
    /// step with no copy in or out. A non-finite loss leaves everything untouched. `None`
    /// (and `gradient` not called) unless [`Learner::trains_on_host`].
    pub fn host_step(
        &mut self,
        gradient: impl FnOnce(&[f32], &mut [f32], &mut HostThreads) -> f64,
    ) -> Option<Step> {
        if !self.trains_on_host() {
            return None;
        }
        let mut grad = std::mem::take(&mut self.host_grad);
        grad.clear();
        grad.resize(self.flat_params.numel(), 0.0);
        // SAFETY: the module's parameters view this buffer, but nothing runs
        // a libtorch op on them until this step returns: `gradient` reads
        // the parameters only through the slice.
        let params = unsafe { host_view(&mut self.flat_params) };
        let loss = gradient(params, &mut grad, &mut self.host_threads);
        let step = if loss.is_finite() {
            let grad_norm = self.host_threads.norm(&grad);
            let grad_scale = clip_scale(grad_norm, self.grad_clip);
            self.adam
                .host_step(params, &grad, grad_scale, &self.host_threads);
            Step::Applied { loss, grad_norm }
        } else {
            Step::NonFiniteLoss(loss)
        };
        self.host_grad = grad;
        Some(step)
    }

    /// Parameters and Adam's state as they are now, in memory, for rolling
    /// an update back.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            params: self.flat_params.copy(),
            adam: self.adam.clone(),
        }
    }

    /// Goes back to `snapshot`.
    pub fn restore_snapshot(&mut self, snapshot: &Snapshot) {
        tch::no_grad(|| self.flat_params.shallow_clone().copy_(&snapshot.params));
        self.adam = snapshot.adam.clone();
    }

    pub fn weights(&self) -> Result<Vec<u8>, Error> {
        Ok(self.module.weights()?)
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
        self.module.set_weights(&state.weights)?;
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
