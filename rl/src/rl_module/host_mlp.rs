//! Dense layers and MLPs evaluated in plain Rust on a host copy of their
//! weights, for acting. An EnvRunner pushes a handful of rows (one per
//! sub-env) through its module every step; through libtorch each of the
//! dozen or so ops that takes pays a few microseconds of dispatch, far more
//! than the arithmetic of a 4×64 matrix product, so for small MLPs the plain
//! loops below are an order of magnitude faster. The weights are copied out
//! of the module's tensors when the module's weights change
//! ([`super::HostPolicy`]); nothing here ever trains.

use tch::{nn, Tensor};

use super::Activation;

/// A linear layer `y = x·Wᵀ + b` with `W` kept as libtorch keeps it,
/// `[outputs, inputs]` row-major, so each output is one contiguous dot
/// product.
pub struct DenseLayer {
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
}

impl DenseLayer {
    /// A host copy of `linear`'s current weights.
    pub fn of(linear: &nn::Linear) -> Self {
        Self::from_tensors(&linear.ws, linear.bs.as_ref())
    }

    /// A host copy of `weight` (`[outputs, inputs]`) and `bias` (zero when
    /// absent).
    pub fn from_tensors(weight: &Tensor, bias: Option<&Tensor>) -> Self {
        let outputs = weight.size()[0] as usize;
        Self::from_parts(
            crate::to_host(weight),
            bias.map_or_else(|| vec![0.0; outputs], crate::to_host),
        )
    }

    /// A layer of `weight` (`[outputs, inputs]` row-major) and `bias`.
    pub fn from_parts(weight: Vec<f32>, bias: Vec<f32>) -> Self {
        let inputs = weight.len() / bias.len();
        DenseLayer {
            weight,
            bias,
            inputs,
        }
    }

    /// W, `[outputs, inputs]` row-major.
    pub fn weight(&self) -> &[f32] {
        &self.weight
    }

    pub fn bias(&self) -> &[f32] {
        &self.bias
    }

    pub fn inputs(&self) -> usize {
        self.inputs
    }

    pub fn outputs(&self) -> usize {
        self.bias.len()
    }

    /// Multiply-adds of one row.
    pub fn multiply_adds(&self) -> usize {
        self.weight.len()
    }

    /// `rows` rows of `x` (`[rows, inputs]`) through the layer, `[rows, outputs]`.
    pub fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), rows * self.inputs);
        let mut out = Vec::with_capacity(rows * self.outputs());
        for row in x.chunks_exact(self.inputs) {
            for (weights, bias) in self.weight.chunks_exact(self.inputs).zip(&self.bias) {
                out.push(bias + dot(weights, row));
            }
        }
        out
    }
}

/// A dot product over eight independent partial sums, which the compiler
/// turns into SIMD lanes (a single running sum would have to stay serial:
/// float addition is not associative).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Hidden layers, each followed by the activation, as an MLP encoder
/// computes its features.
pub struct HostMlp {
    layers: Vec<DenseLayer>,
    activation: Activation,
}

impl HostMlp {
    pub fn new(layers: Vec<DenseLayer>, activation: Activation) -> Self {
        HostMlp { layers, activation }
    }

    /// Multiply-adds of one row.
    pub fn multiply_adds(&self) -> usize {
        self.layers.iter().map(DenseLayer::multiply_adds).sum()
    }

    /// Features of `rows` flattened observations, `[rows, width]`.
    pub fn forward(&self, obs: &[f32], rows: usize) -> Vec<f32> {
        let mut x = obs.to_vec();
        for layer in &self.layers {
            x = layer.forward(&x, rows);
            self.activation.apply(&mut x);
        }
        x
    }
}
