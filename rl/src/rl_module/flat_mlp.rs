//! Dense layers and MLPs that train in plain Rust, reading their weights from
//! a Learner's flat parameter vector and writing their gradients into a flat
//! gradient of the same layout. A PPO minibatch of 128 rows through a 64x64
//! actor-critic is a few million multiply-adds, which a blocked matrix
//! kernel does in a fraction of a millisecond; through libtorch the same step
//! is ~150 ops and autograd nodes at a few microseconds each. So for small
//! MLPs a Learner on the CPU runs its minibatch steps here
//! ([`super::HostActorCritic`]) and libtorch stays the model of record.
//!
//! Each layer knows where its weight and bias sit in the flat vector
//! ([`FlatLayout`]); a forward pass keeps every layer's output so that the
//! backward pass can use them, as autograd would.

use std::collections::HashMap;
use std::ops::Range;

use tch::nn;
use tch::Tensor;

use super::{Activation, Encoder};

/// Where each trainable variable of a var store starts in the flat
/// parameter vector ([`super::RLModule::flat_weights`]'s order), found by
/// the variable's data address: each variable has storage of its own, or
/// its own part of a Learner's flat buffer, so addresses are unique.
pub struct FlatLayout {
    offsets: HashMap<usize, usize>,
    len: usize,
}

impl FlatLayout {
    pub fn of(var_store: &nn::VarStore) -> Self {
        let mut offsets = HashMap::new();
        let mut len = 0;
        for variable in var_store.trainable_variables() {
            offsets.insert(variable.data_ptr() as usize, len);
            len += variable.numel();
        }
        FlatLayout { offsets, len }
    }

    /// The offset of `variable`, if it is one of the var store's.
    pub fn offset(&self, variable: &Tensor) -> Option<usize> {
        self.offsets.get(&(variable.data_ptr() as usize)).copied()
    }

    /// Length of the flat vector.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// `y = x·Wᵀ + b` over the flat parameters, `W` `[outputs, inputs]`
/// row-major at `weight`, `b` at `bias`.
pub struct FlatDense {
    weight: usize,
    bias: usize,
    inputs: usize,
    outputs: usize,
}

impl FlatDense {
    /// `linear`'s place in `layout`; `None` if it has no bias or is not
    /// one of the layout's variables.
    pub fn locate(linear: &nn::Linear, layout: &FlatLayout) -> Option<Self> {
        Self::locate_parts(&linear.ws, linear.bs.as_ref()?, layout)
    }

    /// The layer of `weight` (`[outputs, inputs]`) and `bias` in `layout`;
    /// `None` if either is not one of its variables.
    pub fn locate_parts(weight: &Tensor, bias: &Tensor, layout: &FlatLayout) -> Option<Self> {
        let size = weight.size();
        Some(FlatDense {
            weight: layout.offset(weight)?,
            bias: layout.offset(bias)?,
            inputs: size[1] as usize,
            outputs: size[0] as usize,
        })
    }

    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Where W and b sit in the flat vector.
    pub(super) fn ranges(&self) -> (Range<usize>, Range<usize>) {
        (
            self.weight..self.weight + self.inputs * self.outputs,
            self.bias..self.bias + self.outputs,
        )
    }

    /// W and b in `params`.
    pub(super) fn read<'p>(&self, params: &'p [f32]) -> (&'p [f32], &'p [f32]) {
        let (weight, bias) = self.ranges();
        (&params[weight], &params[bias])
    }

    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Weights and biases.
    pub fn parameters(&self) -> usize {
        (self.inputs + 1) * self.outputs
    }

    /// `rows` rows of `x` (`[rows, inputs]`) through the layer, `[rows, outputs]`.
    pub fn forward(&self, params: &[f32], x: &[f32], rows: usize) -> Vec<f32> {
        let (weight, bias) = self.read(params);
        dense_forward(weight, bias, x, rows)
    }

    /// Adds this layer's weight and bias gradients for output gradient `dy`
    /// (`[rows, outputs]`) at input `x` into `grad`, and returns the input
    /// gradient `dy·W` (`[rows, inputs]`) when `input_grad` asks for it.
    pub fn backward(
        &self,
        params: &[f32],
        x: &[f32],
        dy: &[f32],
        rows: usize,
        grad: &mut [f32],
        input_grad: bool,
    ) -> Option<Vec<f32>> {
        let (weight, bias) = self.ranges();
        let d_parameters = disjoint_mut(grad, weight, bias);
        dense_backward(self.read(params).0, x, dy, rows, d_parameters, input_grad)
    }
}

/// Two ranges of `values` that do not overlap, mutably, in the order asked.
pub(super) fn disjoint_mut(
    values: &mut [f32],
    first: Range<usize>,
    second: Range<usize>,
) -> (&mut [f32], &mut [f32]) {
    assert!(
        first.end <= second.start || second.end <= first.start,
        "overlapping ranges"
    );
    if first.start < second.start {
        let (head, tail) = values.split_at_mut(second.start);
        (&mut head[first], &mut tail[..second.len()])
    } else {
        let (head, tail) = values.split_at_mut(first.start);
        (&mut tail[..first.len()], &mut head[second])
    }
}

/// `y = x·Wᵀ + b` for `rows` rows of `x`, `W` `[outputs, inputs]` row-major:
/// the arithmetic of a dense layer wherever its weights come from.
pub(super) fn dense_forward(weight: &[f32], bias: &[f32], x: &[f32], rows: usize) -> Vec<f32> {
    let (outputs, inputs) = (bias.len(), weight.len() / bias.len());
    let mut y: Vec<f32> = bias.repeat(rows);
    // x [rows, in] · Wᵀ [in, out]: Wᵀ is W read with swapped strides.
    gemm(
        [rows, inputs, outputs],
        (x, [inputs, 1]),
        (weight, [1, inputs]),
        &mut y,
    );
    y
}

/// The backward pass of [`dense_forward`]: adds dyᵀ·x into `d_weight` and
/// dy's column sums into `d_bias`, and returns dy·W when `input_grad`.
pub(super) fn dense_backward(
    weight: &[f32],
    x: &[f32],
    dy: &[f32],
    rows: usize,
    (d_weight, d_bias): (&mut [f32], &mut [f32]),
    input_grad: bool,
) -> Option<Vec<f32>> {
    let (outputs, inputs) = (d_bias.len(), weight.len() / d_bias.len());
    // dW += dyᵀ [out, rows] · x [rows, in]
    gemm(
        [outputs, rows, inputs],
        (dy, [1, outputs]),
        (x, [inputs, 1]),
        d_weight,
    );
    for row in dy.chunks_exact(outputs) {
        d_bias.iter_mut().zip(row).for_each(|(g, d)| *g += d);
    }
    input_grad.then(|| {
        let mut dx = vec![0.0; rows * inputs];
        gemm(
            [rows, outputs, inputs],
            (dy, [outputs, 1]),
            (weight, [inputs, 1]),
            &mut dx,
        );
        dx
    })
}

/// `c += a·b` for `[m, k, n]`, `a` `[m, k]` and `b` `[k, n]` each given with
/// its (row, column) strides, `c` `[m, n]` row-major.
fn gemm(
    [m, k, n]: [usize; 3],
    (a, [rsa, csa]): (&[f32], [usize; 2]),
    (b, [rsb, csb]): (&[f32], [usize; 2]),
    c: &mut [f32],
) {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    if m == 0 || k == 0 || n == 0 {
        return;
    }
    assert!(last(m, k, rsa, csa) < a.len() && last(k, n, rsb, csb) < b.len());
    assert_eq!(c.len(), m * n);
    // SAFETY: the asserts above keep every element sgemm reads within `a`
    // and `b` and every element it writes within `c`, which the exclusive
    // borrow makes this call's alone.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            1.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Hidden layers over the flat parameters, each followed by the activation,
/// as an MLP encoder computes its features.
pub struct FlatMlp {
    layers: Vec<FlatDense>,
    activation: Activation,
}

impl FlatMlp {
    /// `encoder`'s layers located in the flat parameter vector; `None` for
    /// an encoder that is not an MLP or a layer `layout` lacks.
    pub fn locate(encoder: &Encoder, layout: &FlatLayout) -> Option<Self> {
        let (layers, activation) = encoder.mlp_layers()?;
        let layers = layers
            .iter()
            .map(|layer| FlatDense::locate(layer, layout))
            .collect::<Option<Vec<_>>>()?;
        Some(FlatMlp { layers, activation })
    }

    pub fn parameters(&self) -> usize {
        self.layers.iter().map(FlatDense::parameters).sum()
    }

    /// The input and every layer's activated output, the last being the
    /// features (`[rows, width]`).
    pub fn forward(&self, params: &[f32], obs: &[f32], rows: usize) -> Vec<Vec<f32>> {
        let mut outputs = vec![obs.to_vec()];
        for layer in &self.layers {
            let mut y = layer.forward(params, outputs.last().expect("the input"), rows);
            self.activation.apply(&mut y);
            outputs.push(y);
        }
        outputs
    }

    /// Adds the gradients of all layers into `grad`, for feature gradient
    /// `d_features` at the outputs [`FlatMlp::forward`] returned. The input
    /// gets no gradient (observations are not trained).
    pub fn backward(
        &self,
        params: &[f32],
        outputs: &[Vec<f32>],
        d_features: Vec<f32>,
        rows: usize,
        grad: &mut [f32],
    ) {
        let mut dy = d_features;
        for (i, layer) in self.layers.iter().enumerate().rev() {
            self.activation.backward(&outputs[i + 1], &mut dy);
            match layer.backward(params, &outputs[i], &dy, rows, grad, i > 0) {
                Some(dx) => dy = dx,
                None => break,
            }
        }
    }
}
