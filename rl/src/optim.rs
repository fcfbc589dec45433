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
//! [`squared_norm`], [`clip_scale`] and [`Adam::host_step`] are the same
//! clipping and Adam in plain Rust, in place on the CPU buffers ([`host_view`]), for a CPU
//! Learner whose gradients are computed on the host
//! ([`crate::learner::Learner::host_step`]): no copy of the parameters or
//! moments in or out, so a single step (DQN's) pays nothing for it.

use tch::{Device, Kind, Tensor};

use crate::host_threads::HostThreads;

/// Adam's elements below which a part is not worth another thread: a few
/// nanoseconds each, so 16k take the order of a sleeping thread's wake-up.
const ADAM_MIN_ELEMENTS_PER_THREAD: usize = 1 << 14;

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
/// so there is nothing to zero between steps. A parameter the loss does not
/// reach (BC's loss and the value head) has a zero gradient.
pub fn flat_gradient(loss: &Tensor, params: &[Tensor]) -> Tensor {
    let grads = Tensor::run_backward(&[loss], params, false, false);
    let flat: Vec<Tensor> = grads
        .iter()
        .zip(params)
        // `reshape`, not `view`: a convolution's weight gradient can come
        // back strided (channels-last images are permuted at the encoder's
        // input).
        .map(|(grad, param)| match grad.defined() {
            true => grad.reshape(-1),
            false => param.zeros_like().reshape(-1),
        })
        .collect();
    Tensor::cat(&flat, 0)
}

/// The elements of `tensor`, a contiguous f32 tensor on the CPU, as a slice
/// that reads and writes its storage.
///
/// # Safety
/// While the slice lives, nothing else may read or write that storage: no
/// libtorch op on the tensor or on any view of it (a module's parameters
/// view a Learner's flat buffer).
///
/// # Panics
/// If the tensor is not a contiguous f32 tensor on the CPU.
pub(crate) unsafe fn host_view(tensor: &mut Tensor) -> &mut [f32] {
    assert!(
        tensor.device() == Device::Cpu && tensor.kind() == Kind::Float && tensor.is_contiguous(),
        "host view of a {:?} {:?} tensor",
        tensor.device(),
        tensor.kind()
    );
    let len = tensor.numel();
    if len == 0 {
        return &mut [];
    }
    // SAFETY: a contiguous f32 CPU tensor of `len` elements starts at
    // `data_ptr`; the caller keeps every other access away meanwhile.
    unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr().cast::<f32>(), len) }
}

/// The squared L2 norm of a host gradient, or of a part of one: the sum
/// of [`clip_grad_norm`]'s norm over the whole, split however the threads
/// split it ([`HostThreads::norm`]).
pub fn squared_norm(grad: &[f32]) -> f64 {
    // Eight running sums, so the loop vectorises (one sum would chain every
    // addition on the previous one).
    let mut sums = [0.0f64; 8];
    let chunks = grad.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (sum, &g) in sums.iter_mut().zip(chunk) {
            *sum += f64::from(g) * f64::from(g);
        }
    }
    let tail_sum = tail
        .iter()
        .map(|&g| f64::from(g) * f64::from(g))
        .sum::<f64>();
    sums.iter().sum::<f64>() + tail_sum
}

/// The factor [`clip_grad_norm`] scales a gradient of L2 norm `norm` by:
/// one unless the norm is over `max_norm`. A host step hands it to
/// [`Adam::host_step`], which scales each element as it reads it instead
/// of a pass of its own over the gradient.
pub fn clip_scale(norm: f64, max_norm: Option<f64>) -> f32 {
    match max_norm {
        Some(max_norm) if norm > max_norm => (max_norm / (norm + 1e-6)) as f32,
        _ => 1.0,
    }
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

    /// Whether [`Adam::host_step`] can step: the moments are on the CPU and
    /// one learning rate applies to every parameter.
    pub(crate) fn steps_on_host(&self) -> bool {
        self.lr_per_parameter.is_none() && self.exp_avg.device() == Device::Cpu
    }

    /// [`Adam::step`] in plain Rust, in place on the CPU parameters `params`
    /// (laid out as the moments) along `grad`, split over `threads` when
    /// the vector is long enough to pay for them.
    ///
    /// # Panics
    /// Unless [`Adam::steps_on_host`].
    /// One Adam step of `params` on the host along `grad_scale`·`grad`
    /// (`grad_scale` from [`clip_scale`]).
    pub(crate) fn host_step(
        &mut self,
        params: &mut [f32],
        grad: &[f32],
        grad_scale: f32,
        threads: &HostThreads,
    ) {
        assert!(
            self.steps_on_host(),
            "Adam steps on the host only on the CPU with one lr"
        );
        self.step += 1;
        let bias1 = 1.0 - self.beta1.powi(self.step as i32);
        let bias2_sqrt = (1.0 - self.beta2.powi(self.step as i32)).sqrt();
        let eps = (self.eps * bias2_sqrt) as f32;
        let step_size = (self.lr * bias2_sqrt / bias1) as f32;
        let (w1, w2) = ((1.0 - self.beta1) as f32, (1.0 - self.beta2) as f32);
        // SAFETY: the moments are this optimizer's own tensors, which no
        // module views and nothing else touches during this call.
        let (exp_avg, exp_avg_sq) = unsafe {
            (
                host_view(&mut self.exp_avg),
                host_view(&mut self.exp_avg_sq),
            )
        };
        let n = exp_avg.len();
        assert!(params.len() == n && grad.len() == n && exp_avg_sq.len() == n);
        let update = AdamUpdate {
            grad_scale,
            w1,
            w2,
            eps,
            step_size,
        };
        // Each element's update is its own, so the vector splits over the
        // threads in contiguous parts.
        let part = threads.part_len(n, ADAM_MIN_ELEMENTS_PER_THREAD);
        let parts = params
            .chunks_mut(part)
            .zip(grad.chunks(part))
            .zip(exp_avg.chunks_mut(part))
            .zip(exp_avg_sq.chunks_mut(part));
        threads.run_each(
            parts.collect(),
            |(((params, grad), exp_avg), exp_avg_sq)| {
                update.apply_fastest(params, grad, exp_avg, exp_avg_sq)
            },
        );
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

/// [`AdamUpdate::apply`] compiled with a target feature, so that its loop
/// vectorises to that width (the feature adds no FMA, so each element
/// rounds as on every other path). Chosen at run time by `apply_fastest`.
macro_rules! apply_compiled_for {
    ($name:ident, $feature:literal) => {
        /// # Safety
        /// The CPU must have the target feature.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        unsafe fn $name(
            &self,
            params: &mut [f32],
            grad: &[f32],
            exp_avg: &mut [f32],
            exp_avg_sq: &mut [f32],
        ) {
            self.apply(params, grad, exp_avg, exp_avg_sq)
        }
    };
}

/// One Adam step's per-element update, its bias corrections folded into
/// `eps` and `step_size`.
struct AdamUpdate {
    /// The clipping's factor, applied to each element as it is read
    /// (`g·1` is `g` exactly, so an unclipped step is unchanged).
    grad_scale: f32,
    w1: f32,
    w2: f32,
    eps: f32,
    step_size: f32,
}

impl AdamUpdate {
    /// Moves the moments towards `grad` and `grad²` (as libtorch's `lerp_`
    /// computes it) and `params` by −step_size·m/(√v + ε). The slices are
    /// indexed at one length, so the bounds checks go and the loop
    /// vectorises.
    #[inline(always)]
    fn apply(&self, params: &mut [f32], grad: &[f32], exp_avg: &mut [f32], exp_avg_sq: &mut [f32]) {
        let n = params.len();
        let (grad, exp_avg, exp_avg_sq) = (&grad[..n], &mut exp_avg[..n], &mut exp_avg_sq[..n]);
        for i in 0..n {
            let g = grad[i] * self.grad_scale;
            exp_avg[i] += self.w1 * (g - exp_avg[i]);
            exp_avg_sq[i] += self.w2 * (g * g - exp_avg_sq[i]);
            params[i] -= exp_avg[i] / (exp_avg_sq[i].sqrt() + self.eps) * self.step_size;
        }
    }

    /// [`AdamUpdate::apply`] with the widest vectors the CPU has: the
    /// square root and division per element bound the loop, and AVX-512
    /// does sixteen at once and AVX eight where the baseline target's SSE
    /// does four.
    fn apply_fastest(
        &self,
        params: &mut [f32],
        grad: &[f32],
        exp_avg: &mut [f32],
        exp_avg_sq: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            unsafe { self.apply_avx512(params, grad, exp_avg, exp_avg_sq) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            unsafe { self.apply_avx2(params, grad, exp_avg, exp_avg_sq) };
            return;
        }
        self.apply(params, grad, exp_avg, exp_avg_sq);
    }

    apply_compiled_for!(apply_avx512, "avx512f");
    apply_compiled_for!(apply_avx2, "avx2");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loss that reads only the first parameter: the second's part of
    /// the flat gradient is zeros, in its place in the layout.
    #[test]
    fn a_parameter_the_loss_does_not_reach_gets_a_zero_gradient() {
        let used = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let unused = Tensor::from_slice(&[5.0f32, 6.0, 7.0]).set_requires_grad(true);
        let after = Tensor::from_slice(&[9.0f32]).set_requires_grad(true);
        let loss = (&used * &used).sum(tch::Kind::Float) + (&after * 3.0).sum(tch::Kind::Float);
        let grad = flat_gradient(&loss, &[used, unused, after]);
        assert_eq!(
            Vec::<f32>::try_from(&grad).unwrap(),
            [2.0, 4.0, 0.0, 0.0, 0.0, 3.0]
        );
    }

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

    /// The vector paths round each element as the plain loop does: the same
    /// bits, on a length that leaves a tail after the vector lanes.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn adams_vector_paths_give_the_plain_loops_bits() {
        let update = AdamUpdate {
            grad_scale: 0.7,
            w1: 0.1,
            w2: 0.001,
            eps: 1e-5,
            step_size: 3e-3,
        };
        let values = |seed: u32| -> Vec<f32> {
            (0..1003u32)
                .map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 2000) as f32 / 1000.0 - 1.0)
                .collect()
        };
        let grad = values(1);
        let start = (
            values(2),
            values(3),
            values(4).iter().map(|v| v * v).collect::<Vec<_>>(),
        );
        type Apply<'a> = &'a dyn Fn(&mut [f32], &mut [f32], &mut [f32]);
        let run = |apply: Apply| {
            let (mut params, mut exp_avg, mut exp_avg_sq) = start.clone();
            apply(&mut params, &mut exp_avg, &mut exp_avg_sq);
            [params, exp_avg, exp_avg_sq].map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
        };
        let plain = run(&|p, m, v| update.apply(p, &grad, m, v));
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            assert!(plain == run(&|p, m, v| unsafe { update.apply_avx2(p, &grad, m, v) }));
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            assert!(plain == run(&|p, m, v| unsafe { update.apply_avx512(p, &grad, m, v) }));
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
        let mut host_params = params.copy();
        let mut host_adam = Adam::new(&host_params, 3e-3);
        for scale in [5.0, 0.01, 3.0, 0.1] {
            let grad = Tensor::randn([300], (Kind::Float, Device::Cpu)) * scale;
            let host_grad = crate::to_host(&grad);
            let mut grad = grad;
            let norm = clip_grad_norm(&mut grad, Some(0.5));
            adam.step(&params, &grad);
            let threads = HostThreads::new(1);
            let host_norm = threads.norm(&host_grad);
            // SAFETY: nothing else touches `host_params` during the step.
            host_adam.host_step(
                unsafe { host_view(&mut host_params) },
                &host_grad,
                clip_scale(host_norm, Some(0.5)),
                &threads,
            );
            assert!(
                (norm - host_norm).abs() <= 1e-5 * norm,
                "{norm} vs {host_norm}"
            );
        }
        let close = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-6 * x.abs().max(1e-3))
        };
        assert!(close(
            &crate::to_host(&params),
            &crate::to_host(&host_params)
        ));
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

    /// An optimizer with per-parameter learning rates (SAC) steps only on
    /// libtorch.
    #[test]
    fn per_parameter_rates_do_not_step_on_the_host() {
        let params = Tensor::from_slice(&[1.0f32, 2.0]);
        let mut adam = Adam::new(&params, 1.0);
        assert!(adam.steps_on_host());
        adam.set_lr_per_parameter(Tensor::from_slice(&[0.1f32, 0.2]));
        assert!(!adam.steps_on_host());
    }
}
