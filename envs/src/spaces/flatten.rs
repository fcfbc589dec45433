//! Flattening spaces and their values to flat `f32` vectors for models.
//!
//! Follows Gymnasium's `gymnasium.spaces.utils` conventions so that a model
//! trained against either library sees the same layout: `Discrete` becomes a
//! one-hot vector, `MultiDiscrete` one one-hot block per element, `Box` and
//! `MultiBinary` their raveled elements, and `Tuple`/`Dict` the concatenation of
//! their parts (dicts in key order).

use super::{BoxSpace, DType, Space, Value};
use crate::error::EnvError;

impl Space {
    /// Length of a flattened value.
    pub fn flatdim(&self) -> usize {
        match self {
            Space::Discrete { n, .. } => *n as usize,
            Space::Box(space) => space.len(),
            Space::MultiDiscrete { nvec } => nvec.iter().map(|n| *n as usize).sum(),
            Space::MultiBinary { n } => *n,
            Space::Tuple(spaces) => spaces.iter().map(Space::flatdim).sum(),
            Space::Dict(spaces) => spaces.values().map(Space::flatdim).sum(),
        }
    }

    /// The flat `Box` a flattened value lives in.
    pub fn flatten_space(&self) -> BoxSpace {
        let mut low = Vec::with_capacity(self.flatdim());
        let mut high = Vec::with_capacity(self.flatdim());
        self.flat_bounds(&mut low, &mut high);
        let len = low.len();
        BoxSpace::new(low, high, vec![len], DType::F32)
            .expect("flattened bounds are ordered by construction")
    }

    fn flat_bounds(&self, low: &mut Vec<f64>, high: &mut Vec<f64>) {
        match self {
            Space::Box(space) => {
                low.extend_from_slice(&space.low);
                high.extend_from_slice(&space.high);
            }
            Space::Tuple(spaces) => spaces.iter().for_each(|s| s.flat_bounds(low, high)),
            Space::Dict(spaces) => spaces.values().for_each(|s| s.flat_bounds(low, high)),
            _ => {
                low.resize(low.len() + self.flatdim(), 0.0);
                high.resize(high.len() + self.flatdim(), 1.0);
            }
        }
    }

    /// `value` as a flat `f32` vector of length [`Space::flatdim`].
    pub fn flatten(&self, value: &Value) -> Result<Vec<f32>, EnvError> {
        let mut out = Vec::with_capacity(self.flatdim());
        self.flatten_into(value, &mut out)?;
        Ok(out)
    }

    /// Appends the flattened `value` to `out`.
    pub fn flatten_into(&self, value: &Value, out: &mut Vec<f32>) -> Result<(), EnvError> {
        if !self.contains(value) {
            return Err(self.mismatch(format!("{value} is not an element")));
        }
        match (self, value) {
            (Space::Discrete { n, start }, Value::Int(x)) => push_one_hot(out, *n, x - start),
            (Space::Box(_), Value::Floats(xs)) => out.extend(xs.iter().map(|x| *x as f32)),
            (Space::MultiDiscrete { nvec }, Value::Ints(xs)) => nvec
                .iter()
                .zip(xs)
                .for_each(|(n, x)| push_one_hot(out, *n, *x)),
            (Space::MultiBinary { .. }, Value::Ints(xs)) => {
                out.extend(xs.iter().map(|x| *x as f32))
            }
            (Space::Tuple(spaces), Value::Tuple(xs)) => {
                for (space, x) in spaces.iter().zip(xs) {
                    space.flatten_into(x, out)?;
                }
            }
            (Space::Dict(spaces), Value::Dict(xs)) => {
                for (key, space) in spaces {
                    space.flatten_into(&xs[key], out)?;
                }
            }
            _ => unreachable!("contains() accepted only matching kinds"),
        }
        Ok(())
    }

    /// Inverse of [`Space::flatten`]; `flat` must have length `flatdim()` and
    /// one-hot blocks must have exactly one non-zero entry.
    pub fn unflatten(&self, flat: &[f32]) -> Result<Value, EnvError> {
        if flat.len() != self.flatdim() {
            return Err(self.mismatch(format!(
                "flat vector has length {}, expected {}",
                flat.len(),
                self.flatdim()
            )));
        }
        let mut rest = flat;
        self.unflatten_from(&mut rest)
    }

    fn unflatten_from(&self, rest: &mut &[f32]) -> Result<Value, EnvError> {
        let mut take = |len: usize| {
            let (head, tail) = rest.split_at(len);
            *rest = tail;
            head
        };
        Ok(match self {
            Space::Discrete { n, start } => {
                Value::Int(start + self.one_hot_index(take(*n as usize))?)
            }
            Space::Box(_) => {
                Value::Floats(take(self.flatdim()).iter().map(|x| *x as f64).collect())
            }
            Space::MultiDiscrete { nvec } => Value::Ints(
                nvec.iter()
                    .map(|n| self.one_hot_index(take(*n as usize)))
                    .collect::<Result<_, _>>()?,
            ),
            Space::MultiBinary { n } => {
                Value::Ints(take(*n).iter().map(|x| i64::from(*x != 0.0)).collect())
            }
            Space::Tuple(spaces) => Value::Tuple(
                spaces
                    .iter()
                    .map(|s| s.unflatten_from(rest))
                    .collect::<Result<_, _>>()?,
            ),
            Space::Dict(spaces) => Value::Dict(
                spaces
                    .iter()
                    .map(|(k, s)| Ok((k.clone(), s.unflatten_from(rest)?)))
                    .collect::<Result<_, EnvError>>()?,
            ),
        })
    }

    fn one_hot_index(&self, block: &[f32]) -> Result<i64, EnvError> {
        let mut hot = block.iter().enumerate().filter(|(_, x)| **x != 0.0);
        match (hot.next(), hot.next()) {
            (Some((index, _)), None) => Ok(index as i64),
            _ => Err(self.mismatch(format!("{block:?} is not a one-hot block"))),
        }
    }

    fn mismatch(&self, reason: String) -> EnvError {
        EnvError::SpaceMismatch {
            space: self.to_string(),
            reason,
        }
    }
}

fn push_one_hot(out: &mut Vec<f32>, n: i64, index: i64) {
    let at = out.len();
    out.resize(at + n as usize, 0.0);
    out[at + index as usize] = 1.0;
}
