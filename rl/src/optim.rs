//! Adam with global-norm gradient clipping over one flat parameter buffer.
//!
//! The model's parameters are re-pointed into a single contiguous tensor
//! ([`flatten_parameters`]), and gradients are gathered into one as well, so
//! clipping and the Adam update are a handful of tensor ops per step instead
//! of a handful per parameter: for the small MLPs RL uses, per-op overhead,
//! not arithmetic, is what a step costs. The moments are plain tensors, so a
//! checkpoint can carry them and a resumed run continues with the same ones
//! rather than restarting Adam's bias correction.
//!
//! [`HostOptimizer`] is the same clipping and Adam on host vectors, for a
//! CPU Learner whose minibatch steps run in plain Rust
//! ([`crate::minibatch_sgd::host_minibatch_sgd`]): it takes a copy of the
//! parameters and moments, steps on them, and hands them back.

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

    /// Step count and moments as host vectors; `None` with per-parameter
    /// learning rates, which only [`Adam::step`] applies.
    fn to_host(&self) -> Option<HostAdam> {
        self.lr_per_parameter.is_none().then(|| HostAdam {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            step: self.step,
            exp_avg: crate::to_host(&self.exp_avg),
            exp_avg_sq: crate::to_host(&self.exp_avg_sq),
        })
    }

    /// Takes back the step count and moments [`Adam::to_host`] gave out.
    fn load_host(&mut self, host: &HostAdam) {
        tch::no_grad(|| {
            self.exp_avg.copy_(&Tensor::from_slice(&host.exp_avg));
            self.exp_avg_sq.copy_(&Tensor::from_slice(&host.exp_avg_sq));
        });
        self.step = host.step;
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

/// [`Adam`]'s state on host vectors, stepped as [`Adam::step`] steps.
struct HostAdam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    step: i64,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
}

impl HostAdam {
    fn step(&mut self, params: &mut [f32], grad: &[f32]) {
        self.step += 1;
        let bias1 = 1.0 - self.beta1.powi(self.step as i32);
        let bias2_sqrt = (1.0 - self.beta2.powi(self.step as i32)).sqrt();
        let eps = (self.eps * bias2_sqrt) as f32;
        let step_size = (self.lr * bias2_sqrt / bias1) as f32;
        let (w1, w2) = ((1.0 - self.beta1) as f32, (1.0 - self.beta2) as f32);
        let moments = self.exp_avg.iter_mut().zip(&mut self.exp_avg_sq);
        for ((p, g), (m, v)) in params.iter_mut().zip(grad).zip(moments) {
            // lerp towards g and g², as libtorch's lerp_ computes it.
            *m += w1 * (g - *m);
            *v += w2 * (g * g - *v);
            *p -= *m / (v.sqrt() + eps) * step_size;
        }
    }
}

/// A Learner's parameters and optimizer as host vectors, for steps taken
/// in plain Rust; [`crate::learner::Learner::host_optimizer`] hands one out
/// and [`crate::learner::Learner::finish_host_optimizer`] takes it back.
pub struct HostOptimizer {
    /// The flat parameter vector, laid out as the Learner's buffer.
    pub params: Vec<f32>,
    adam: HostAdam,
    grad_clip: Option<f64>,
}

impl HostOptimizer {
    pub(crate) fn new(params: Vec<f32>, adam: &Adam, grad_clip: Option<f64>) -> Option<Self> {
        Some(HostOptimizer {
            params,
            adam: adam.to_host()?,
            grad_clip,
        })
    }

    pub(crate) fn finish(self, adam: &mut Adam) -> Vec<f32> {
        adam.load_host(&self.adam);
        self.params
    }

    /// Global-norm clipping of `grad` and one Adam step along it, as
    /// [`clip_grad_norm`] and [`Adam::step`]; returns the norm before
    /// clipping.
    pub fn step(&mut self, grad: &mut [f32]) -> f64 {
        let norm = grad
            .iter()
            .map(|&g| f64::from(g) * f64::from(g))
            .sum::<f64>()
            .sqrt();
        if let Some(max_norm) = self.grad_clip {
            if norm > max_norm {
                let scale = (max_norm / (norm + 1e-6)) as f32;
                grad.iter_mut().for_each(|g| *g *= scale);
            }
        }
        self.adam.step(&mut self.params, grad);
        norm
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

    /// Clipping and Adam on the host take libtorch's steps: over several
    /// steps, with the clip active (large gradients) and not (small ones),
    /// the parameters, moments and step count end where
    /// [`clip_grad_norm`] and [`Adam::step`] take them, and each step
    /// reports the same norm.
    #[test]
    fn host_clipping_and_adam_step_as_libtorch() {
        tch::manual_seed(7);
        let params = Tensor::randn([300], (Kind::Float, Device::Cpu));
        let mut adam = Adam::new(&params, 3e-3);
        let mut host_adam = Adam::new(&params, 3e-3);
        let mut host =
            HostOptimizer::new(crate::to_host(&params), &host_adam, Some(0.5)).expect("one lr");
        for scale in [5.0, 0.01, 3.0, 0.1] {
            let grad = Tensor::randn([300], (Kind::Float, Device::Cpu)) * scale;
            let mut host_grad = crate::to_host(&grad);
            let mut grad = grad;
            let norm = clip_grad_norm(&mut grad, Some(0.5));
            adam.step(&params, &grad);
            let host_norm = host.step(&mut host_grad);
            assert!(
                (norm - host_norm).abs() <= 1e-5 * norm,
                "{norm} vs {host_norm}"
            );
        }
        let host_params = host.finish(&mut host_adam);
        let close = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-6 * x.abs().max(1e-3))
        };
        assert!(close(&crate::to_host(&params), &host_params));
        let (torch_state, host_state) = (adam.state(), host_adam.state());
        assert_eq!(torch_state[0].1.int64_value(&[]), 4);
        assert_eq!(host_state[0].1.int64_value(&[]), 4);
        for ((name, torch), (_, host)) in torch_state.iter().zip(&host_state).skip(1) {
            assert!(
                close(&crate::to_host(torch), &crate::to_host(host)),
                "{name} differs"
            );
        }
    }

    /// A learner with per-parameter learning rates (SAC) stays on libtorch.
    #[test]
    fn per_parameter_rates_have_no_host_optimizer() {
        let params = Tensor::from_slice(&[1.0f32, 2.0]);
        let mut adam = Adam::new(&params, 1.0);
        assert!(HostOptimizer::new(vec![1.0, 2.0], &adam, None).is_some());
        adam.set_lr_per_parameter(Tensor::from_slice(&[0.1f32, 0.2]));
        assert!(HostOptimizer::new(vec![1.0, 2.0], &adam, None).is_none());
    }
}
