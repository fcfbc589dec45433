//! Adam with global-norm gradient clipping, written out so its state can be
//! checkpointed: libtorch's optimizer behind tch keeps its moments out of
//! reach, and a resumed run must continue with the same moments it stopped
//! with, not restart Adam's bias correction from zero.

use tch::{Device, Tensor};

pub struct Adam {
    pub lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    step: i64,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
}

impl Adam {
    /// Moments start at zero, shaped like `params`.
    pub fn new(params: &[Tensor], lr: f64) -> Self {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            // RLlib's and CleanRL's PPO both use 1e-5 rather than torch's 1e-8.
            eps: 1e-5,
            step: 0,
            exp_avg: params.iter().map(Tensor::zeros_like).collect(),
            exp_avg_sq: params.iter().map(Tensor::zeros_like).collect(),
        }
    }

    /// One Adam step on `params` from their accumulated gradients.
    pub fn step(&mut self, params: &[Tensor]) {
        self.step += 1;
        let bias1 = 1.0 - self.beta1.powi(self.step as i32);
        let bias2_sqrt = (1.0 - self.beta2.powi(self.step as i32)).sqrt();
        // p −= lr·m̂/(√v̂ + ε), with the bias corrections folded into two scalars.
        let step_size = self.lr * bias2_sqrt / bias1;
        let eps = self.eps * bias2_sqrt;
        tch::no_grad(|| {
            for ((param, m), v) in params
                .iter()
                .zip(&mut self.exp_avg)
                .zip(&mut self.exp_avg_sq)
            {
                let grad = param.grad();
                let _ = m.lerp_(&grad, 1.0 - self.beta1);
                let _ = v.lerp_(&grad.square(), 1.0 - self.beta2);
                let update = &*m / (v.sqrt() + eps);
                let _ = param.shallow_clone().g_sub_(&(update * step_size));
            }
        });
    }

    /// Step count and moments, as named tensors for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut state = vec![("step".to_string(), Tensor::from(self.step))];
        for (i, (m, v)) in self.exp_avg.iter().zip(&self.exp_avg_sq).enumerate() {
            state.push((format!("exp_avg.{i}"), m.to_device(Device::Cpu)));
            state.push((format!("exp_avg_sq.{i}"), v.to_device(Device::Cpu)));
        }
        state
    }

    /// Restores what [`Adam::state`] returned; `None` if it does not fit.
    pub fn load_state(&mut self, state: &[(String, Tensor)]) -> Option<()> {
        let find = |name: &str| state.iter().find(|(n, _)| n == name).map(|(_, t)| t);
        let step = find("step")?.int64_value(&[]);
        for (i, (m, v)) in self
            .exp_avg
            .iter_mut()
            .zip(&mut self.exp_avg_sq)
            .enumerate()
        {
            for (dst, name) in [(m, format!("exp_avg.{i}")), (v, format!("exp_avg_sq.{i}"))] {
                let src = find(&name)?;
                if src.size() != dst.size() {
                    return None;
                }
                tch::no_grad(|| dst.copy_(src));
            }
        }
        self.step = step;
        Some(())
    }
}

/// Scales gradients so their global L2 norm is at most `max_norm`; returns the
/// norm before clipping.
pub fn clip_grad_norm(params: &[Tensor], max_norm: Option<f64>) -> f64 {
    tch::no_grad(|| {
        let grads: Vec<Tensor> = params.iter().map(|p| p.grad().view(-1)).collect();
        let norm = Tensor::cat(&grads, 0).norm().double_value(&[]);
        if let Some(max_norm) = max_norm {
            if norm > max_norm {
                let scale = max_norm / (norm + 1e-6);
                for p in params {
                    let _ = p.grad().g_mul_scalar_(scale);
                }
            }
        }
        norm
    })
}

/// All parameters' gradients to zero, keeping their buffers.
pub fn zero_grad(params: &[Tensor]) {
    for p in params {
        let mut grad = p.grad();
        if grad.defined() {
            let _ = grad.zero_();
        }
    }
}
