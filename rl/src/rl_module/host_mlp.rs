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
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX, checked just above.
            return self.forward_with(x, |weights, x| unsafe { dots_avx(weights, x) });
        }
        self.forward_with(x, dots)
    }

    /// Each row of `x` through the layer, `DOTS_AT_ONCE` outputs at a time
    /// through `dots_of`, then the rest one at a time.
    #[inline(always)]
    fn forward_with(
        &self,
        x: &[f32],
        dots_of: impl Fn([&[f32]; DOTS_AT_ONCE], &[f32]) -> [f32; DOTS_AT_ONCE],
    ) -> Vec<f32> {
        let (inputs, outputs) = (self.inputs, self.outputs());
        let mut out = Vec::with_capacity(x.len() / inputs * outputs);
        let weights = |output: usize| &self.weight[output * inputs..(output + 1) * inputs];
        for row in x.chunks_exact(inputs) {
            let mut output = 0;
            while output + DOTS_AT_ONCE <= outputs {
                let sums = dots_of(std::array::from_fn(|i| weights(output + i)), row);
                out.extend(
                    self.bias[output..]
                        .iter()
                        .zip(sums)
                        .map(|(bias, sum)| bias + sum),
                );
                output += DOTS_AT_ONCE;
            }
            for output in output..outputs {
                out.push(self.bias[output] + dots([weights(output)], row)[0]);
            }
        }
        out
    }
}

/// Outputs whose dot products [`DenseLayer::forward`] takes together: the
/// running sums of one wait on their own previous additions, so four in
/// flight keep the adder busy where one would leave it waiting.
const DOTS_AT_ONCE: usize = 4;

/// `N` dot products of `weights` with `x`, each over eight running sums
/// (lanes) added in order at the end, then the tail past the last whole
/// eight. The order of every addition is fixed here, so [`dots_avx`] (the
/// same sums eight lanes to a vector) gives the same bits.
fn dots<const N: usize>(weights: [&[f32]; N], x: &[f32]) -> [f32; N] {
    let mut lanes = [[0.0f32; 8]; N];
    let whole = x.len() / 8 * 8;
    for start in (0..whole).step_by(8) {
        let x = &x[start..start + 8];
        for (lanes, weights) in lanes.iter_mut().zip(&weights) {
            for i in 0..8 {
                lanes[i] += weights[start + i] * x[i];
            }
        }
    }
    std::array::from_fn(|n| finish(lanes[n], weights[n], x))
}

/// [`dots`] with each output's eight lanes in one AVX register, written out
/// because the compiler, left to itself, vectorises across the outputs
/// instead and spends its time shuffling.
///
/// # Safety
/// The CPU must have AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn dots_avx<const N: usize>(weights: [&[f32]; N], x: &[f32]) -> [f32; N] {
    use std::arch::x86_64::{
        _mm256_add_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };
    let mut lanes = [_mm256_setzero_ps(); N];
    let whole = x.len() / 8 * 8;
    assert!(weights.iter().all(|weights| weights.len() == x.len()));
    for start in (0..whole).step_by(8) {
        // SAFETY: `start + 8 <= whole <= x.len()`, the length of every
        // weight row too (asserted above).
        let xs = _mm256_loadu_ps(x.as_ptr().add(start));
        for (lanes, weights) in lanes.iter_mut().zip(&weights) {
            let products = _mm256_mul_ps(_mm256_loadu_ps(weights.as_ptr().add(start)), xs);
            *lanes = _mm256_add_ps(*lanes, products);
        }
    }
    std::array::from_fn(|n| {
        let mut sums = [0.0f32; 8];
        // SAFETY: `sums` holds the eight floats stored.
        _mm256_storeu_ps(sums.as_mut_ptr(), lanes[n]);
        finish(sums, weights[n], x)
    })
}

/// A dot product's eight lanes added in order, then its tail past the
/// last whole eight.
#[inline(always)]
fn finish(lanes: [f32; 8], weights: &[f32], x: &[f32]) -> f32 {
    let whole = x.len() / 8 * 8;
    let tail: f32 = weights[whole..]
        .iter()
        .zip(&x[whole..])
        .map(|(w, x)| w * x)
        .sum();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 2000) as f32 / 1000.0 - 1.0)
            .collect()
    }

    /// The AVX path adds the same products in the same order as the
    /// portable one: the same bits, with and without a tail past the last
    /// whole eight, and for inputs shorter than eight.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx_dot_products_give_the_portable_bits() {
        if !std::arch::is_x86_feature_detected!("avx") {
            return;
        }
        for len in [3, 8, 67, 256] {
            let x = values(len, 1);
            let rows: Vec<Vec<f32>> = (0..4).map(|n| values(len, 10 + n)).collect();
            let weights: [&[f32]; 4] = std::array::from_fn(|n| rows[n].as_slice());
            // SAFETY: the CPU has AVX, checked above.
            let avx = unsafe { dots_avx(weights, &x) };
            assert_eq!(
                avx.map(f32::to_bits),
                dots(weights, &x).map(f32::to_bits),
                "length {len}"
            );
        }
    }

    /// Every output of a layer whose outputs are not a whole number of
    /// groups is its bias plus its dot product, within rounding.
    #[test]
    fn a_layer_gives_each_output_its_dot_product_plus_bias() {
        let (inputs, outputs, rows) = (67, 7, 3);
        let layer = DenseLayer::from_parts(values(inputs * outputs, 2), values(outputs, 3));
        let x = values(rows * inputs, 4);
        let y = layer.forward(&x, rows);
        assert_eq!(y.len(), rows * outputs);
        for row in 0..rows {
            for output in 0..outputs {
                let weights = &layer.weight()[output * inputs..(output + 1) * inputs];
                let want: f64 = f64::from(layer.bias()[output])
                    + weights
                        .iter()
                        .zip(&x[row * inputs..(row + 1) * inputs])
                        .map(|(w, x)| f64::from(*w) * f64::from(*x))
                        .sum::<f64>();
                let got = f64::from(y[row * outputs + output]);
                assert!(
                    (got - want).abs() < 1e-4,
                    "row {row}, output {output}: {got} against {want}"
                );
            }
        }
    }
}
