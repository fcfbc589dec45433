//! The elementary functions the dynamics use (sine, cosine, squaring),
//! behind a trait so one dynamics function serves both the scalar envs and
//! the vectorized fast path.
//!
//! [`Libm`] calls the platform's `sin`, `cos` and `pow`, the functions NumPy
//! calls on `float64` scalars, which makes the scalar envs bit-for-bit
//! faithful to Gymnasium. (NumPy evaluates `x**2` on a scalar with `pow`,
//! which differs from `x * x` in the last bit about once in a thousand
//! (likewise `powf` for float32), and
//! in a chaotic system such as Acrobot that bit grows into a different
//! trajectory.) Those calls cannot be vectorized, so [`Poly`] evaluates the
//! classic fdlibm minimax kernels after a branch-free Cody-Waite reduction,
//! and squares by multiplying: within one ulp of `Libm` and free of calls and
//! branches, which lets LLVM vectorize a loop over many environments. Each
//! env picks which one its vector fast path uses (see
//! [`super::Dynamics::VectorMath`]).

// The constants below keep fdlibm's published digits so they can be checked
// against it; the compiler rounds them to the same doubles.
#![allow(clippy::excessive_precision)]

/// An implementation of the elementary functions.
pub trait Math: Send + Sync + 'static {
    /// Whether a loop using these functions can be vectorized (no calls).
    const VECTORIZES: bool;

    fn sin(x: f64) -> f64;
    fn cos(x: f64) -> f64;
    /// `x**2` as NumPy computes it for a float64 scalar.
    fn square(x: f64) -> f64;
    /// `x**2` as NumPy computes it for a float32 scalar.
    fn square_f32(x: f32) -> f32;
}

/// The platform's `sin`, `cos` and `pow` (what NumPy uses).
#[derive(Debug, Clone, Copy, Default)]
pub struct Libm;

impl Math for Libm {
    const VECTORIZES: bool = false;

    #[inline(always)]
    fn sin(x: f64) -> f64 {
        x.sin()
    }

    #[inline(always)]
    fn cos(x: f64) -> f64 {
        x.cos()
    }

    #[inline(always)]
    fn square(x: f64) -> f64 {
        // Hidden from the optimizer, which would otherwise rewrite
        // `pow(x, 2.0)` as `x * x`.
        x.powf(std::hint::black_box(2.0))
    }

    #[inline(always)]
    fn square_f32(x: f32) -> f32 {
        x.powf(std::hint::black_box(2.0))
    }
}

/// Vectorizable polynomial `sin`/`cos` and `x * x`, accurate to one ulp for
/// `|x| < 2^19` (far beyond any angle the classic-control envs reach).
#[derive(Debug, Clone, Copy, Default)]
pub struct Poly;

/// π/2 split into three parts so `k * part` is exact for the `k` we reduce by.
const PIO2_HI: f64 = 1.570_796_326_734_125_614_17;
const PIO2_MID: f64 = 6.077_100_506_303_965_976_60e-11;
const PIO2_LO: f64 = 2.022_266_248_795_950_631_54e-21;
/// Adding then subtracting this rounds to an integer and leaves that integer
/// in the low mantissa bits, without a float-to-int conversion.
const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;

/// `(sin r, cos r)` for `|r| <= π/4` (fdlibm's `__kernel_sin`/`__kernel_cos`).
#[inline(always)]
fn kernels(r: f64) -> (f64, f64) {
    let z = r * r;
    let sin_tail = 8.333_333_333_322_489_461_24e-3
        + z * (-1.984_126_982_985_794_931_34e-4
            + z * (2.755_731_370_707_006_767_89e-6
                + z * (-2.505_076_025_340_686_341_95e-8 + z * 1.589_690_995_211_550_102_21e-10)));
    let sin = r + z * r * (-1.666_666_666_666_663_243_48e-1 + z * sin_tail);
    let cos_tail = z
        * (4.166_666_666_666_660_190_37e-2
            + z * (-1.388_888_888_887_410_957_49e-3
                + z * (2.480_158_728_947_672_941_78e-5
                    + z * (-2.755_731_435_139_066_330_35e-7
                        + z * (2.087_572_321_298_174_827_90e-9
                            + z * -1.135_964_755_778_819_482_65e-11)))));
    let half_z = 0.5 * z;
    let w = 1.0 - half_z;
    let cos = w + (((1.0 - w) - half_z) + z * cos_tail);
    (sin, cos)
}

/// Reduces `x` to `r` in `[-π/4, π/4]` and the quadrant `x` was in.
#[inline(always)]
fn reduce(x: f64) -> (f64, u64) {
    let shifted = x * std::f64::consts::FRAC_2_PI + ROUND_MAGIC;
    let k = shifted - ROUND_MAGIC;
    let r = ((x - k * PIO2_HI) - k * PIO2_MID) - k * PIO2_LO;
    (r, shifted.to_bits() & 3)
}

/// `sin` of the angle `quadrant * π/2 + r`, given `(sin r, cos r)`.
#[inline(always)]
fn rotate(quadrant: u64, sin_r: f64, cos_r: f64) -> f64 {
    let value = if quadrant & 1 == 0 { sin_r } else { cos_r };
    if quadrant & 2 == 0 {
        value
    } else {
        -value
    }
}

impl Math for Poly {
    const VECTORIZES: bool = true;

    #[inline(always)]
    fn sin(x: f64) -> f64 {
        let (r, quadrant) = reduce(x);
        let (s, c) = kernels(r);
        rotate(quadrant, s, c)
    }

    #[inline(always)]
    fn cos(x: f64) -> f64 {
        let (r, quadrant) = reduce(x);
        let (s, c) = kernels(r);
        rotate(quadrant.wrapping_add(1), s, c)
    }

    #[inline(always)]
    fn square(x: f64) -> f64 {
        x * x
    }

    #[inline(always)]
    fn square_f32(x: f32) -> f32 {
        x * x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poly_is_within_an_ulp_of_libm() {
        for i in 0..400_000 {
            let x = -200.0 + i as f64 * 1e-3 + 1e-7;
            for (poly, libm, name) in [
                (Poly::sin(x), Libm::sin(x), "sin"),
                (Poly::cos(x), Libm::cos(x), "cos"),
            ] {
                let ulp = f64::EPSILON * libm.abs().max(f64::MIN_POSITIVE);
                assert!(
                    (poly - libm).abs() <= ulp.max(1e-19),
                    "{name}({x}): {poly} vs {libm}"
                );
            }
        }
    }

    #[test]
    fn poly_is_exact_at_zero_and_keeps_signs() {
        assert_eq!(Poly::sin(0.0), 0.0);
        assert_eq!(Poly::cos(0.0), 1.0);
        assert!(Poly::sin(-0.1) < 0.0 && Poly::sin(3.0) > 0.0 && Poly::cos(3.0) < 0.0);
    }
}
