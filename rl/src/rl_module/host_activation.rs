//! The encoders' activations on host vectors, forward and backward, for the
//! plain-Rust MLPs ([`super::HostMlp`] acting, [`super::FlatMlp`] training).
//!
//! tanh is a rational approximation rather than the C library's `tanhf`:
//! glibc's takes ~20 ns an element through `expm1f` and cannot be
//! vectorised, which made it half of a host PPO minibatch step; the
//! approximation (Eigen's, a degree 13/6 rational function on [−7.9, 7.9])
//! is within 5e-7 of tanh everywhere and some ten times faster, inside the
//! rounding by which a plain-Rust network differs from libtorch's anyway.

use super::Activation;

impl Activation {
    /// Applies the activation to every element of `values`.
    pub fn apply(self, values: &mut [f32]) {
        match self {
            Activation::Tanh => values.iter_mut().for_each(|v| *v = tanh(*v)),
            Activation::Relu => values.iter_mut().for_each(|v| *v = v.max(0.0)),
            Activation::Linear => {}
        }
    }

    /// Takes `grads` (∂L/∂y at the activation's outputs `outputs`) back
    /// through the activation, from its output as libtorch does:
    /// tanh' = 1 − y², relu' = [y > 0].
    pub fn backward(self, outputs: &[f32], grads: &mut [f32]) {
        match self {
            Activation::Tanh => grads
                .iter_mut()
                .zip(outputs)
                .for_each(|(d, y)| *d *= 1.0 - y * y),
            Activation::Relu => grads
                .iter_mut()
                .zip(outputs)
                .for_each(|(d, &y)| *d = if y > 0.0 { *d } else { 0.0 }),
            Activation::Linear => {}
        }
    }
}

/// tanh(x) within 5e-7: odd and even polynomials in x², divided, on x
/// clamped to where tanh rounds to ±1 in f32; x itself near 0, where the
/// quotient would lose relative precision.
pub fn tanh(x: f32) -> f32 {
    const NUMERATOR: [f32; 7] = [
        4.893_524_6e-3,
        6.372_619_3e-4,
        1.485_722_4e-5,
        5.122_297e-8,
        -8.604_672e-11,
        2.000_188e-13,
        -2.760_768_5e-16,
    ];
    const DENOMINATOR: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347_1e-4, 1.198_258_4e-6];
    if x.abs() < 4e-4 {
        return x;
    }
    let x = x.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let p = NUMERATOR.iter().rev().fold(0.0, |acc, &c| acc * x2 + c) * x;
    let q = DENOMINATOR.iter().rev().fold(0.0, |acc, &c| acc * x2 + c);
    p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within 5e-7 of the f64 tanh over the whole range, odd, and ±1 far out.
    #[test]
    fn tanh_is_within_5e_7_of_tanh() {
        let mut worst = 0.0f64;
        for i in -120_000..=120_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((f64::from(tanh(x)) - f64::from(x).tanh()).abs());
            assert_eq!(tanh(-x), -tanh(x));
        }
        assert!(worst < 5e-7, "{worst}");
        assert_eq!(tanh(30.0), 1.0);
        assert_eq!(tanh(1e-6), 1e-6);
    }
}
