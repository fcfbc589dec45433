//! The noisy linear layer of NoisyNets (Fortunato et al. 2018), which DQN's
//! head uses with `noisy: true` to explore by perturbing its own weights
//! instead of by ε-greedy actions:
//!
//!   y = (μ^w + σ^w ⊙ ε^w)·x + μ^b + σ^b ⊙ ε^b
//!
//! with factorised Gaussian noise, ε^w = f(ε_out)·f(ε_in)ᵀ and ε^b = f(ε_out)
//! for ε_in ~ N(0, 1)^p, ε_out ~ N(0, 1)^q and f(x) = sgn(x)·√|x| (p + q
//! draws per layer instead of p·q). μ and σ are learned; μ starts uniform
//! on ±1/√p and σ at σ₀/√p, the paper's initialisation for factorised noise.
//!
//! The noise is the layer's state rather than an argument of its forward
//! pass, so the network's forward stays the plain one every caller uses:
//! whoever owns the network says when to draw new noise
//! ([`NoisyLinear::resample_noise`], from the caller's seeded RNG) and when
//! to compute with μ alone ([`NoisyLinear::clear_noise`], for evaluation).
//! A mutex holds it because modules act and train through `&self`.

use std::sync::Mutex;

use rand::Rng;
use rand_distr::StandardNormal;
use tch::nn::{self, Module};
use tch::Tensor;

#[derive(Debug)]
pub struct NoisyLinear {
    mu_weight: Tensor,
    sigma_weight: Tensor,
    mu_bias: Tensor,
    sigma_bias: Tensor,
    /// ε^w and ε^b of the next forward passes, built once per draw; μ
    /// alone when absent.
    noise: Mutex<Option<NoiseTensors>>,
}

#[derive(Debug)]
struct NoiseTensors {
    weight: Tensor,
    bias: Tensor,
}

/// Factorised noise for one `[inputs → outputs]` layer, kept as its two
/// factors f(ε_in) and f(ε_out): ε^w_ij = outputs_i·inputs_j, ε^b = outputs.
/// The host passes ([`super::HostHeadLayer`], [`super::FlatHeadLayer`])
/// compute with the same factors as this layer.
#[derive(Clone, Debug, PartialEq)]
pub struct FactorisedNoise {
    pub inputs: Vec<f32>,
    pub outputs: Vec<f32>,
}

impl FactorisedNoise {
    /// f(ε_in), then f(ε_out), drawn from `rng`: the one order every noisy
    /// layer draws in, on libtorch or on the host, so that a seeded run
    /// draws the same noise either way.
    pub fn draw(rng: &mut impl Rng, inputs: usize, outputs: usize) -> Self {
        let mut scaled_normals = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    let e: f32 = rng.sample(StandardNormal);
                    e.signum() * e.abs().sqrt()
                })
                .collect()
        };
        let inputs = scaled_normals(inputs);
        FactorisedNoise {
            inputs,
            outputs: scaled_normals(outputs),
        }
    }
}

impl NoisyLinear {
    /// A `[inputs → outputs]` layer under `path` with σ starting at
    /// `sigma0`/√inputs; it computes with μ alone until noise is drawn.
    pub fn new(path: nn::Path, inputs: i64, outputs: i64, sigma0: f64) -> Self {
        let bound = 1.0 / (inputs as f64).sqrt();
        let mu = nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let sigma = nn::Init::Const(sigma0 * bound);
        NoisyLinear {
            mu_weight: path.var("mu_weight", &[outputs, inputs], mu),
            sigma_weight: path.var("sigma_weight", &[outputs, inputs], sigma),
            mu_bias: path.var("mu_bias", &[outputs], mu),
            sigma_bias: path.var("sigma_bias", &[outputs], sigma),
            noise: Mutex::new(None),
        }
    }

    /// `(inputs, outputs)`.
    pub fn shape(&self) -> (usize, usize) {
        let [outputs, inputs] = self.mu_weight.size()[..] else {
            unreachable!("a linear layer's weight is a matrix");
        };
        (inputs as usize, outputs as usize)
    }

    /// μ^w and μ^b.
    pub fn means(&self) -> (&Tensor, &Tensor) {
        (&self.mu_weight, &self.mu_bias)
    }

    /// σ^w and σ^b.
    pub fn sigmas(&self) -> (&Tensor, &Tensor) {
        (&self.sigma_weight, &self.sigma_bias)
    }

    /// Draws new factorised noise from `rng` for the forward passes that
    /// follow, until the next draw or [`Self::clear_noise`].
    pub fn resample_noise(&self, rng: &mut impl Rng) {
        let (inputs, outputs) = self.shape();
        let noise = FactorisedNoise::draw(rng, inputs, outputs);
        let device = self.mu_weight.device();
        let epsilon_in = Tensor::from_slice(&noise.inputs).to_device(device);
        let epsilon_out = Tensor::from_slice(&noise.outputs).to_device(device);
        *self.noise.lock().expect("noise lock") = Some(NoiseTensors {
            weight: epsilon_out.unsqueeze(1) * epsilon_in.unsqueeze(0),
            bias: epsilon_out,
        });
    }

    /// From now on the layer computes with its means μ alone (no noise).
    pub fn clear_noise(&self) {
        *self.noise.lock().expect("noise lock") = None;
    }
}

impl Module for NoisyLinear {
    fn forward(&self, xs: &Tensor) -> Tensor {
        match &*self.noise.lock().expect("noise lock") {
            None => xs.linear(&self.mu_weight, Some(&self.mu_bias)),
            Some(noise) => xs.linear(
                &(&self.mu_weight + &self.sigma_weight * &noise.weight),
                Some(&self.mu_bias + &self.sigma_bias * &noise.bias),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use tch::{Device, Kind};

    use super::*;

    fn layer(sigma0: f64) -> (nn::VarStore, NoisyLinear) {
        let store = nn::VarStore::new(Device::Cpu);
        let layer = NoisyLinear::new(store.root() / "noisy", 4, 3, sigma0);
        (store, layer)
    }

    /// Without noise the layer is μ^w·x + μ^b; with it, every output moves,
    /// the same draw gives the same output, and clearing returns to μ.
    #[test]
    fn noise_perturbs_the_weights_until_cleared() {
        let (_store, layer) = layer(0.5);
        let x = Tensor::randn([2, 4], (Kind::Float, Device::Cpu));
        let mean = layer.forward(&x);
        assert!(mean.allclose(
            &x.linear(&layer.mu_weight, Some(&layer.mu_bias)),
            1e-6,
            1e-6,
            false
        ));
        layer.resample_noise(&mut ChaCha8Rng::seed_from_u64(7));
        let noisy = layer.forward(&x);
        assert!(Vec::<f32>::try_from((&noisy - &mean).abs().view(-1))
            .unwrap()
            .iter()
            .all(|&d| d > 0.0));
        layer.resample_noise(&mut ChaCha8Rng::seed_from_u64(7));
        assert!(layer.forward(&x).equal(&noisy));
        layer.clear_noise();
        assert!(layer.forward(&x).equal(&mean));
    }

    /// ε^w is the outer product of f(ε_out) and f(ε_in), ε^b is f(ε_out):
    /// with σ^w = 1 and σ^b = 1 (and μ = 0) the layer's perturbation is
    /// exactly that outer product and that vector.
    #[test]
    fn noise_is_factorised() {
        let (_store, layer) = layer(0.5);
        tch::no_grad(|| {
            for (tensor, value) in [
                (&layer.mu_weight, 0.0),
                (&layer.sigma_weight, 1.0),
                (&layer.mu_bias, 0.0),
                (&layer.sigma_bias, 1.0),
            ] {
                let _ = tensor.shallow_clone().fill_(value);
            }
        });
        layer.resample_noise(&mut ChaCha8Rng::seed_from_u64(3));
        // A zero input reads the bias back, rows of the identity the
        // weight's columns (plus the bias).
        let bias = layer.forward(&Tensor::zeros([1, 4], (Kind::Float, Device::Cpu)));
        let weight = layer.forward(&Tensor::eye(4, (Kind::Float, Device::Cpu))) - &bias;
        // The layer's draw is the shared one: the same seed, the same factors.
        let noise = FactorisedNoise::draw(&mut ChaCha8Rng::seed_from_u64(3), 4, 3);
        let epsilon_in = Tensor::from_slice(&noise.inputs);
        let epsilon_out = Tensor::from_slice(&noise.outputs);
        let weight_noise = epsilon_out.unsqueeze(1) * epsilon_in.unsqueeze(0);
        assert!(weight.allclose(&weight_noise.transpose(0, 1), 1e-6, 1e-6, false));
        assert!(bias.view(-1).allclose(&epsilon_out, 1e-6, 1e-6, false));
        // f(x) = sgn(x)·√|x| of standard normals: not all of one sign, and
        // both factors drawn anew (not one vector reused).
        assert!(noise.inputs.iter().any(|&e| e > 0.0) && noise.inputs.iter().any(|&e| e < 0.0));
        assert_ne!(noise.inputs[..3], noise.outputs[..]);
    }

    /// σ starts at σ₀/√p and μ within ±1/√p (p = 4 inputs).
    #[test]
    fn initialisation_follows_the_paper() {
        let (_store, layer) = layer(0.5);
        for sigma in [&layer.sigma_weight, &layer.sigma_bias] {
            let values = Vec::<f32>::try_from(sigma.view(-1)).unwrap();
            assert!(values.iter().all(|&s| (s - 0.25).abs() < 1e-7));
        }
        for mu in [&layer.mu_weight, &layer.mu_bias] {
            assert!(mu.abs().max().double_value(&[]) <= 0.5);
        }
    }
}
