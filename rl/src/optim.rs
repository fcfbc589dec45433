//! Adam with global-norm gradient clipping over one flat parameter buffer.
//!
//! The model's parameters are re-pointed into a single contiguous tensor
//! ([`flatten_parameters`]), and gradients are gathered into one as well, so
//! clipping and the Adam update are a handful of tensor ops per step instead
//! of a handful per parameter: for the small MLPs RL uses, per-op overhead,
//! not arithmetic, is what a step costs. The moments are plain tensors, so a
//! checkpoint can carry them and a resumed run continues with the same ones
//! rather than restarting Adam's bias correction.

use tch::{Device, Kind, Tensor};

/// Moves the data of `params` into one contiguous buffer that each parameter
/// then views, and returns that buffer. In-place updates of the buffer are
/// updates of the parameters.
pub fn flatten_parameters(params: &[Tensor]) -> Tensor {
    tch::no_grad(|| {
        if params.is_empty() {
            return Tensor::zeros([0], (Kind::Float, Device::Cpu));
        }
        let flat = Tensor::cat(&params.iter().map(|p| p.view(-1)).collect::<Vec<_>>(), 0);
        let mut offset = 0;
        for param in params {
            let numel = param.numel() as i64;
            let view = flat.narrow(0, offset, numel).view(param.size().as_slice());
            param.shallow_clone().set_data(&view);
            offset += numel;
        }
        flat
    })
}

/// The gradient of `loss` with respect to `params`, as one flat tensor laid
/// out like [`flatten_parameters`]' buffer. Nothing accumulates in `.grad`,
/// so there is nothing to zero between steps.
pub fn flat_gradient(loss: &Tensor, params: &[Tensor]) -> Tensor {
    let grads = Tensor::run_backward(&[loss], params, false, false);
    // `reshape`, not `view`: a convolution's weight gradient can come back
    // strided (channels-last images are permuted at the encoder's input).
    Tensor::cat(&grads.iter().map(|g| g.reshape(-1)).collect::<Vec<_>>(), 0)
}

/// Scales `grad` so its L2 norm is at most `max_norm`; returns the norm before.
pub fn clip_grad_norm(grad: &mut Tensor, max_norm: Option<f64>) -> f64 {
    let norm = grad.norm().double_value(&[]);
    if let Some(max_norm) = max_norm {
        if norm > max_norm {
            let _ = grad.g_mul_scalar_(max_norm / (norm + 1e-6));
        }
    }
    norm
}

pub struct Adam {
    pub lr: f64,
    /// Learning rates per element of the flat buffer, for modules whose
    /// parts learn at different rates (SAC's actor, critics and α); `lr`
    /// applies when absent.
    lr_per_parameter: Option<Tensor>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    step: i64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

impl Clone for Adam {
    /// A deep copy: the moments are copied, not shared.
    fn clone(&self) -> Self {
        Adam {
            lr_per_parameter: self.lr_per_parameter.as_ref().map(Tensor::shallow_clone),
            exp_avg: self.exp_avg.copy(),
            exp_avg_sq: self.exp_avg_sq.copy(),
            ..*self
        }
    }
}

impl Adam {
    /// Moments start at zero, shaped like the flat parameter buffer.
    pub fn new(flat_params: &Tensor, lr: f64) -> Self {
        Adam {
            lr,
            lr_per_parameter: None,
            beta1: 0.9,
            beta2: 0.999,
            // CleanRL's PPO uses 1e-5 rather than torch's default 1e-8 (which
            // RLlib keeps); on tiny MLPs the larger ε damps the first steps.
            eps: 1e-5,
            step: 0,
            exp_avg: flat_params.zeros_like(),
            exp_avg_sq: flat_params.zeros_like(),
        }
    }

    /// Gives each element of the flat buffer its own learning rate (`lrs`
    /// shaped like the buffer); `lr` no longer applies.
    pub fn set_lr_per_parameter(&mut self, lrs: Tensor) {
        self.lr_per_parameter = Some(lrs.to_device(self.exp_avg.device()));
    }

    /// One Adam step of `flat_params` along `grad`.
    pub fn step(&mut self, flat_params: &Tensor, grad: &Tensor) {
        self.step += 1;
        let bias1 = 1.0 - self.beta1.powi(self.step as i32);
        let bias2_sqrt = (1.0 - self.beta2.powi(self.step as i32)).sqrt();
        // p −= lr·m̂/(√v̂ + ε), with the bias corrections folded into two scalars.
        let eps = self.eps * bias2_sqrt;
        tch::no_grad(|| {
            let _ = self.exp_avg.lerp_(grad, 1.0 - self.beta1);
            let _ = self.exp_avg_sq.lerp_(&grad.square(), 1.0 - self.beta2);
            let update = &self.exp_avg / (self.exp_avg_sq.sqrt() + eps);
            let update = match &self.lr_per_parameter {
                None => update * (self.lr * bias2_sqrt / bias1),
                Some(lrs) => update * lrs * (bias2_sqrt / bias1),
            };
            let _ = flat_params.shallow_clone().g_sub_(&update);
        });
    }

    /// Step count and moments, as named tensors for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        vec![
            ("step".to_string(), Tensor::from(self.step)),
            ("exp_avg".to_string(), self.exp_avg.to_device(Device::Cpu)),
            (
                "exp_avg_sq".to_string(),
                self.exp_avg_sq.to_device(Device::Cpu),
            ),
        ]
    }

    /// Restores what [`Adam::state`] returned; `None` if it does not fit.
    pub fn load_state(&mut self, state: &[(String, Tensor)]) -> Option<()> {
        let find = |name: &str| state.iter().find(|(n, _)| n == name).map(|(_, t)| t);
        let step = find("step")?.int64_value(&[]);
        let (m, v) = (find("exp_avg")?, find("exp_avg_sq")?);
        if m.size() != self.exp_avg.size() || v.size() != self.exp_avg_sq.size() {
            return None;
        }
        tch::no_grad(|| {
            self.exp_avg.copy_(m);
            self.exp_avg_sq.copy_(v);
        });
        self.step = step;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adam's first step moves each element by its learning rate (m̂/√v̂ is
    /// the gradient's sign): an element with rate 0 stays put.
    #[test]
    fn per_parameter_learning_rates_scale_each_element_step() {
        let params = Tensor::from_slice(&[1.0f32, 1.0, 1.0]);
        let mut adam = Adam::new(&params, 1.0);
        adam.set_lr_per_parameter(Tensor::from_slice(&[0.1f32, 0.0, 0.5]));
        adam.step(&params, &Tensor::from_slice(&[2.0f32, 3.0, -4.0]));
        let after = Vec::<f32>::try_from(&params).unwrap();
        let expected = [0.9, 1.0, 1.5];
        for (got, want) in after.iter().zip(expected) {
            assert!((got - want).abs() < 1e-4, "{after:?}");
        }
    }
}
