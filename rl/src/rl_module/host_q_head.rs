//! The layers of a Q-network's head on the host, plain or NoisyNets'
//! ([`NoisyLinear`](super::NoisyLinear)): [`HostHeadLayer`] is a copy of the
//! weights for acting, [`FlatHeadLayer`] their places in a Learner's flat
//! parameter vector for training. Without them a noisy network would act
//! and train through libtorch, at a few microseconds of dispatch per op for
//! a head of a few hundred weights.
//!
//! A noisy layer under noise computes with the perturbed weights
//! W = μ^w + σ^w ⊙ f(ε_out)·f(ε_in)ᵀ and b = μ^b + σ^b ⊙ f(ε_out), formed
//! once per pass, and is then a plain dense layer; its backward pass takes
//! that layer's ∂L/∂W and ∂L/∂b back to μ (unchanged: ∂W/∂μ = 1) and to σ
//! (times the noise: ∂W/∂σ = ε). Without noise it computes with μ alone,
//! as the libtorch layer does when evaluating. The noise itself is drawn
//! by whoever acts or trains ([`draw_head_noise`]) in the libtorch
//! module's order, from the same RNG, so a seeded run draws the same noise
//! on either path.

use rand::Rng;

use super::flat_mlp::{dense_backward, dense_forward, disjoint_mut, FlatDense, FlatLayout};
use super::host_mlp::DenseLayer;
use super::noisy_linear::FactorisedNoise;
use super::{HeadLayer, QHead};

/// The noise of each layer of a head for one pass; `None` for a plain
/// layer, or a noisy one computing with its means.
pub type HeadNoise = QHead<Option<FactorisedNoise>>;

/// A head layer on the host over dense layers of type `L`: μ (the plain
/// layer's weights) and, for a noisy layer, σ of the same shape.
pub struct HostLayerOf<L> {
    mean: L,
    sigma: Option<L>,
}

/// A head layer's weights copied for acting.
pub type HostHeadLayer = HostLayerOf<DenseLayer>;

/// A head layer located in a flat parameter vector for training.
pub type FlatHeadLayer = HostLayerOf<FlatDense>;

/// The shape of a dense layer, host copy or flat.
pub trait DenseShape {
    fn inputs(&self) -> usize;
    fn outputs(&self) -> usize;
}

impl DenseShape for DenseLayer {
    fn inputs(&self) -> usize {
        DenseLayer::inputs(self)
    }
    fn outputs(&self) -> usize {
        DenseLayer::outputs(self)
    }
}

impl DenseShape for FlatDense {
    fn inputs(&self) -> usize {
        FlatDense::inputs(self)
    }
    fn outputs(&self) -> usize {
        FlatDense::outputs(self)
    }
}

impl<L: DenseShape> HostLayerOf<L> {
    pub fn inputs(&self) -> usize {
        self.mean.inputs()
    }

    pub fn outputs(&self) -> usize {
        self.mean.outputs()
    }

    pub fn is_noisy(&self) -> bool {
        self.sigma.is_some()
    }
}

/// Whether any layer of `head` is noisy (all are, or none).
pub fn head_is_noisy<L: DenseShape>(head: &QHead<HostLayerOf<L>>) -> bool {
    match head {
        QHead::Plain(layer) => layer.is_noisy(),
        QHead::Dueling { value, advantage } => value.is_noisy() || advantage.is_noisy(),
    }
}

/// Fresh noise for every noisy layer of `head`, drawn from `rng` in the
/// module's order (the plain layer; or the value, then the advantage
/// layer); `None`, drawing nothing, when no layer is noisy.
pub fn draw_head_noise<L: DenseShape>(
    head: &QHead<HostLayerOf<L>>,
    rng: &mut impl Rng,
) -> Option<HeadNoise> {
    head_is_noisy(head).then(|| {
        head.map(|layer| {
            layer
                .is_noisy()
                .then(|| FactorisedNoise::draw(rng, layer.inputs(), layer.outputs()))
        })
    })
}

/// W and b under `noise`: μ + σ ⊙ ε.
fn perturbed(
    (mu_weight, mu_bias): (&[f32], &[f32]),
    (sigma_weight, sigma_bias): (&[f32], &[f32]),
    noise: &FactorisedNoise,
) -> (Vec<f32>, Vec<f32>) {
    let inputs = noise.inputs.len();
    let mut weight = Vec::with_capacity(mu_weight.len());
    for ((mu_row, sigma_row), epsilon_out) in mu_weight
        .chunks_exact(inputs)
        .zip(sigma_weight.chunks_exact(inputs))
        .zip(&noise.outputs)
    {
        weight.extend(
            mu_row
                .iter()
                .zip(sigma_row)
                .zip(&noise.inputs)
                .map(|((mu, sigma), epsilon_in)| mu + sigma * epsilon_out * epsilon_in),
        );
    }
    let bias = mu_bias
        .iter()
        .zip(sigma_bias)
        .zip(&noise.outputs)
        .map(|((mu, sigma), epsilon)| mu + sigma * epsilon)
        .collect();
    (weight, bias)
}

impl HostHeadLayer {
    /// A host copy of `layer`'s current weights.
    pub fn of(layer: &HeadLayer) -> Self {
        match layer {
            HeadLayer::Linear(linear) => HostHeadLayer {
                mean: DenseLayer::of(linear),
                sigma: None,
            },
            HeadLayer::Noisy(noisy) => {
                let ((mu_weight, mu_bias), (sigma_weight, sigma_bias)) =
                    (noisy.means(), noisy.sigmas());
                HostHeadLayer {
                    mean: DenseLayer::from_tensors(mu_weight, Some(mu_bias)),
                    sigma: Some(DenseLayer::from_tensors(sigma_weight, Some(sigma_bias))),
                }
            }
        }
    }

    /// Multiply-adds of one row.
    pub fn multiply_adds(&self) -> usize {
        self.mean.multiply_adds()
    }

    /// `rows` rows of `x` through the layer under `noise` (μ alone without).
    pub fn forward(&self, noise: Option<&FactorisedNoise>, x: &[f32], rows: usize) -> Vec<f32> {
        match (&self.sigma, noise) {
            (Some(sigma), Some(noise)) => {
                let (mean, sigma) = (&self.mean, sigma);
                let (weight, bias) = perturbed(
                    (mean.weight(), mean.bias()),
                    (sigma.weight(), sigma.bias()),
                    noise,
                );
                DenseLayer::from_parts(weight, bias).forward(x, rows)
            }
            _ => self.mean.forward(x, rows),
        }
    }
}

impl FlatHeadLayer {
    /// `layer`'s place in `layout`; `None` if a variable is not in it.
    pub fn locate(layer: &HeadLayer, layout: &FlatLayout) -> Option<Self> {
        Some(match layer {
            HeadLayer::Linear(linear) => FlatHeadLayer {
                mean: FlatDense::locate(linear, layout)?,
                sigma: None,
            },
            HeadLayer::Noisy(noisy) => {
                let ((mu_weight, mu_bias), (sigma_weight, sigma_bias)) =
                    (noisy.means(), noisy.sigmas());
                FlatHeadLayer {
                    mean: FlatDense::locate_parts(mu_weight, mu_bias, layout)?,
                    sigma: Some(FlatDense::locate_parts(sigma_weight, sigma_bias, layout)?),
                }
            }
        })
    }

    /// Trainable parameters: μ's, and σ's.
    pub fn parameters(&self) -> usize {
        self.mean.parameters() + self.sigma.as_ref().map_or(0, FlatDense::parameters)
    }

    /// `rows` rows of `x` through the layer at `params` under `noise`.
    pub fn forward(
        &self,
        params: &[f32],
        noise: Option<&FactorisedNoise>,
        x: &[f32],
        rows: usize,
    ) -> Vec<f32> {
        match (&self.sigma, noise) {
            (Some(sigma), Some(noise)) => {
                let (weight, bias) = perturbed(self.mean.read(params), sigma.read(params), noise);
                dense_forward(&weight, &bias, x, rows)
            }
            _ => self.mean.forward(params, x, rows),
        }
    }

    /// Adds the gradients of μ (and σ) for output gradient `dy` at input `x`
    /// (`[rows, outputs]` and `[rows, inputs]`) into `grad`, and returns the
    /// input gradient when `input_grad` asks.
    pub fn backward(
        &self,
        params: &[f32],
        noise: Option<&FactorisedNoise>,
        (x, dy): (&[f32], &[f32]),
        grad: &mut [f32],
        input_grad: bool,
    ) -> Option<Vec<f32>> {
        let rows = dy.len() / self.mean.outputs();
        let (Some(sigma), Some(noise)) = (&self.sigma, noise) else {
            // Without noise σ does not enter the output: no gradient.
            return self.mean.backward(params, x, dy, rows, grad, input_grad);
        };
        let (weight, bias) = perturbed(self.mean.read(params), sigma.read(params), noise);
        let (mut d_weight, mut d_bias) = (vec![0.0; weight.len()], vec![0.0; bias.len()]);
        let dx = dense_backward(
            &weight,
            x,
            dy,
            rows,
            (&mut d_weight, &mut d_bias),
            input_grad,
        );
        // ∂L/∂μ = ∂L/∂W and ∂L/∂b.
        let (mu_weight, mu_bias) = self.mean.ranges();
        let (g_mu_weight, g_mu_bias) = disjoint_mut(grad, mu_weight, mu_bias);
        add_into(g_mu_weight, &d_weight);
        add_into(g_mu_bias, &d_bias);
        // ∂L/∂σ^w_ij = ∂L/∂W_ij · ε_out_i · ε_in_j, ∂L/∂σ^b_i = ∂L/∂b_i · ε_out_i.
        let (sigma_weight, sigma_bias) = sigma.ranges();
        let (g_sigma_weight, g_sigma_bias) = disjoint_mut(grad, sigma_weight, sigma_bias);
        let inputs = noise.inputs.len();
        for ((g_row, d_row), epsilon_out) in g_sigma_weight
            .chunks_exact_mut(inputs)
            .zip(d_weight.chunks_exact(inputs))
            .zip(&noise.outputs)
        {
            for ((g, d), epsilon_in) in g_row.iter_mut().zip(d_row).zip(&noise.inputs) {
                *g += d * epsilon_out * epsilon_in;
            }
        }
        for ((g, d), epsilon_out) in g_sigma_bias.iter_mut().zip(&d_bias).zip(&noise.outputs) {
            *g += d * epsilon_out;
        }
        dx
    }
}

fn add_into(sum: &mut [f32], values: &[f32]) {
    sum.iter_mut().zip(values).for_each(|(s, v)| *s += v);
}
