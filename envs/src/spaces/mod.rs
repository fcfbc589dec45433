//! Observation and action spaces, as Gymnasium defines them.
//!
//! A [`Space`] describes a set of [`Value`]s: `contains` tests membership,
//! `sample` draws uniformly (or as Gymnasium does for unbounded boxes) from a
//! caller-supplied seeded generator, and the [`flatten`] module maps values to
//! and from flat `f32` vectors that a model consumes. Spaces are plain data
//! (no generator inside) so they can be cloned, compared and shared freely.

pub mod flatten;
mod json;

use crate::error::EnvError;
use crate::rng::EnvRng;
use rand::Rng;
use std::collections::BTreeMap;
use std::fmt;

/// Element type of a [`Space::Box`]; values are held as `f64` either way, and
/// bounds of an `F32` box are rounded to `f32` as Gymnasium stores them.
/// `U8` is the image dtype: whole numbers in `0..=255`, which a model keeps
/// as bytes until its input layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F64,
    U8,
}

impl DType {
    fn round(self, x: f64) -> f64 {
        match self {
            DType::F32 => x as f32 as f64,
            DType::F64 => x,
            DType::U8 => x.round().clamp(0.0, 255.0),
        }
    }

    fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::U8 => "uint8",
        }
    }
}

/// A box of reals: element-wise bounds (possibly infinite) over a shape.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxSpace {
    low: Vec<f64>,
    high: Vec<f64>,
    shape: Vec<usize>,
    dtype: DType,
}

impl BoxSpace {
    /// A box with element-wise bounds; `low` and `high` must have the length
    /// implied by `shape` and satisfy `low <= high`.
    pub fn new(
        low: Vec<f64>,
        high: Vec<f64>,
        shape: Vec<usize>,
        dtype: DType,
    ) -> Result<Self, EnvError> {
        let len: usize = shape.iter().product();
        if low.len() != len || high.len() != len {
            return Err(invalid_space(format!(
                "bounds of length {} and {} do not match shape {:?}",
                low.len(),
                high.len(),
                shape
            )));
        }
        if low
            .iter()
            .zip(&high)
            .any(|(l, h)| l.is_nan() || h.is_nan() || l > h)
        {
            return Err(invalid_space(
                "every low bound must be <= its high bound".into(),
            ));
        }
        Ok(Self {
            low: low.into_iter().map(|x| dtype.round(x)).collect(),
            high: high.into_iter().map(|x| dtype.round(x)).collect(),
            shape,
            dtype,
        })
    }

    /// A box whose elements all share the scalar bounds `low` and `high`.
    pub fn uniform(low: f64, high: f64, shape: Vec<usize>, dtype: DType) -> Result<Self, EnvError> {
        let len = shape.iter().product();
        Self::new(vec![low; len], vec![high; len], shape, dtype)
    }

    pub fn low(&self) -> &[f64] {
        &self.low
    }

    pub fn high(&self) -> &[f64] {
        &self.high
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.low.len()
    }

    pub fn is_empty(&self) -> bool {
        self.low.is_empty()
    }

    /// Whether every element has finite bounds on both sides.
    pub fn is_bounded(&self) -> bool {
        self.low.iter().chain(&self.high).all(|x| x.is_finite())
    }

    fn contains(&self, values: &[f64]) -> bool {
        values.len() == self.len()
            && values
                .iter()
                .zip(self.low.iter().zip(&self.high))
                .all(|(&x, (&l, &h))| l <= x && x <= h)
    }

    /// Gymnasium's scheme: uniform on bounded elements, normal on unbounded
    /// ones, shifted exponential on half-bounded ones.
    fn sample(&self, rng: &mut EnvRng) -> Vec<f64> {
        self.low
            .iter()
            .zip(&self.high)
            .map(|(&l, &h)| {
                let x = match (l.is_finite(), h.is_finite()) {
                    (true, true) if l == h => l,
                    // Integers uniformly, as Gymnasium's `integers(low, high + 1)`.
                    (true, true) if self.dtype == DType::U8 => {
                        rng.gen_range(l as i64..=h as i64) as f64
                    }
                    (true, true) => rng.gen_range(l..=h),
                    (false, false) => standard_normal(rng),
                    (true, false) => l + standard_exponential(rng),
                    (false, true) => h - standard_exponential(rng),
                };
                self.dtype.round(x).clamp(l, h)
            })
            .collect()
    }
}

fn invalid_space(reason: String) -> EnvError {
    EnvError::InvalidSpace { reason }
}

fn standard_normal(rng: &mut EnvRng) -> f64 {
    // Box-Muller; `1 - u` keeps the logarithm's argument in (0, 1].
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn standard_exponential(rng: &mut EnvRng) -> f64 {
    -(1.0 - rng.gen::<f64>()).ln()
}

/// A Gymnasium space.
#[derive(Debug, Clone, PartialEq)]
pub enum Space {
    /// `{start, start + 1, ..., start + n - 1}`.
    Discrete { n: i64, start: i64 },
    /// Real vectors within bounds.
    Box(BoxSpace),
    /// One `Discrete(nvec[i])` per element, starting at zero.
    MultiDiscrete { nvec: Vec<i64> },
    /// `n` independent bits.
    MultiBinary { n: usize },
    /// An ordered product of spaces.
    Tuple(Vec<Space>),
    /// A product of named spaces, ordered by key as Gymnasium orders them.
    Dict(BTreeMap<String, Space>),
}

/// An element of a [`Space`]: what `sample` returns and what `step` accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An element of a `Discrete` space.
    Int(i64),
    /// An element of a `MultiDiscrete` or `MultiBinary` space.
    Ints(Vec<i64>),
    /// An element of a `Box` space, row-major, whatever its dtype.
    Floats(Vec<f64>),
    Tuple(Vec<Value>),
    Dict(BTreeMap<String, Value>),
}

impl Space {
    /// `Discrete(n)` starting at zero.
    pub fn discrete(n: i64) -> Self {
        Space::Discrete { n, start: 0 }
    }

    /// Whether `value` is an element of this space.
    pub fn contains(&self, value: &Value) -> bool {
        match (self, value) {
            (Space::Discrete { n, start }, Value::Int(x)) => (*start..start + n).contains(x),
            (Space::Box(space), Value::Floats(xs)) => space.contains(xs),
            (Space::MultiDiscrete { nvec }, Value::Ints(xs)) => {
                xs.len() == nvec.len() && xs.iter().zip(nvec).all(|(x, n)| (0..*n).contains(x))
            }
            (Space::MultiBinary { n }, Value::Ints(xs)) => {
                xs.len() == *n && xs.iter().all(|x| *x == 0 || *x == 1)
            }
            (Space::Tuple(spaces), Value::Tuple(xs)) => {
                spaces.len() == xs.len() && spaces.iter().zip(xs).all(|(s, x)| s.contains(x))
            }
            (Space::Dict(spaces), Value::Dict(xs)) => {
                spaces.len() == xs.len()
                    && spaces
                        .iter()
                        .all(|(key, s)| xs.get(key).is_some_and(|x| s.contains(x)))
            }
            _ => false,
        }
    }

    /// A random element, drawn from `rng` (seed it for reproducible samples).
    pub fn sample(&self, rng: &mut EnvRng) -> Value {
        match self {
            Space::Discrete { n, start } => Value::Int(start + rng.gen_range(0..*n)),
            Space::Box(space) => Value::Floats(space.sample(rng)),
            Space::MultiDiscrete { nvec } => {
                Value::Ints(nvec.iter().map(|n| rng.gen_range(0..*n)).collect())
            }
            Space::MultiBinary { n } => Value::Ints((0..*n).map(|_| rng.gen_range(0..2)).collect()),
            Space::Tuple(spaces) => Value::Tuple(spaces.iter().map(|s| s.sample(rng)).collect()),
            Space::Dict(spaces) => Value::Dict(
                spaces
                    .iter()
                    .map(|(k, s)| (k.clone(), s.sample(rng)))
                    .collect(),
            ),
        }
    }

    /// The shape of one element, as Gymnasium reports `space.shape`
    /// (`[]` for `Discrete`, `[]` for the composite spaces, which have none).
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Space::Discrete { .. } | Space::Tuple(_) | Space::Dict(_) => Vec::new(),
            Space::Box(space) => space.shape.clone(),
            Space::MultiDiscrete { nvec } => vec![nvec.len()],
            Space::MultiBinary { n } => vec![*n],
        }
    }

    /// The box, if this is a `Box` space.
    pub fn as_box(&self) -> Option<&BoxSpace> {
        match self {
            Space::Box(space) => Some(space),
            _ => None,
        }
    }
}

impl fmt::Display for Space {
    /// Gymnasium-like reprs: `Discrete(2)`, `Box(-1.0, 1.0, (1,), float32)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Space::Discrete { n, start: 0 } => write!(f, "Discrete({n})"),
            Space::Discrete { n, start } => write!(f, "Discrete({n}, start={start})"),
            Space::Box(space) => {
                let shape = match space.shape.as_slice() {
                    [one] => format!("({one},)"),
                    dims => format!(
                        "({})",
                        dims.iter()
                            .map(|d| d.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                write!(
                    f,
                    "Box({}, {}, {shape}, {})",
                    bounds_repr(&space.low, space.dtype),
                    bounds_repr(&space.high, space.dtype),
                    space.dtype.name()
                )
            }
            Space::MultiDiscrete { nvec } => write!(f, "MultiDiscrete({nvec:?})"),
            Space::MultiBinary { n } => write!(f, "MultiBinary({n})"),
            Space::Tuple(spaces) => {
                let parts: Vec<String> = spaces.iter().map(|s| s.to_string()).collect();
                write!(f, "Tuple({})", parts.join(", "))
            }
            Space::Dict(spaces) => {
                let parts: Vec<String> =
                    spaces.iter().map(|(k, s)| format!("'{k}': {s}")).collect();
                write!(f, "Dict({})", parts.join(", "))
            }
        }
    }
}

/// A scalar when all bounds agree (as Gymnasium prints), the array otherwise;
/// each number in the shortest form that round-trips in the box's dtype.
fn bounds_repr(bounds: &[f64], dtype: DType) -> String {
    let scalar = |x: f64| match (x.is_infinite(), dtype) {
        (true, _) if x > 0.0 => "inf".to_string(),
        (true, _) => "-inf".to_string(),
        (false, DType::F32) => format!("{:?}", x as f32),
        (false, DType::F64) => format!("{x:?}"),
        (false, DType::U8) => format!("{x}"),
    };
    match bounds {
        [first, rest @ ..] if rest.iter().all(|x| x == first) => scalar(*first),
        _ => format!(
            "[{}]",
            bounds
                .iter()
                .map(|x| scalar(*x))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(x) => write!(f, "{x}"),
            Value::Ints(xs) => write!(f, "{xs:?}"),
            Value::Floats(xs) => write!(f, "{xs:?}"),
            Value::Tuple(xs) => {
                let parts: Vec<String> = xs.iter().map(|x| x.to_string()).collect();
                write!(f, "({})", parts.join(", "))
            }
            Value::Dict(xs) => {
                let parts: Vec<String> = xs.iter().map(|(k, x)| format!("'{k}': {x}")).collect();
                write!(f, "{{{}}}", parts.join(", "))
            }
        }
    }
}
