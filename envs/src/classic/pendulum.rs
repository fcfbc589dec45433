//! Pendulum-v1: swing a frictionless pendulum up and hold it there.
//!
//! Gymnasium clips the torque to ±2 (so any finite torque is accepted), keeps
//! the state in float64, and computes the torque terms in float32 because the
//! action is a float32 array; the step below keeps those precisions, and
//! normalizes the angle for the cost with a floored modulo as NumPy does.

use super::canvas::{place, rectangle, Canvas};
use super::{number_option, Dynamics, Libm, Math, Transition};
use crate::env::{ResetOptions, RgbImage};
use crate::error::EnvError;
use crate::rng::EnvRng;
use crate::spaces::{BoxSpace, DType, Space};
use rand::Rng;
use std::f64::consts::PI;

const MAX_SPEED: f64 = 8.0;
const MAX_TORQUE: f32 = 2.0;
const DT: f64 = 0.05;
const MASS: f64 = 1.0;
const LENGTH: f64 = 1.0;

/// Pendulum-v1's dynamics with gravity `g` (Gymnasium's `g` keyword).
#[derive(Debug, Clone, Copy)]
pub struct Pendulum {
    pub gravity: f64,
}

impl Default for Pendulum {
    fn default() -> Self {
        Self { gravity: 10.0 }
    }
}

/// The angle mapped into [-π, π), with NumPy's floored `%`.
fn angle_normalize(angle: f64) -> f64 {
    let period = 2.0 * PI;
    let rem = (angle + PI) % period;
    let floored = if rem < 0.0 { rem + period } else { rem };
    floored - PI
}

impl Dynamics for Pendulum {
    const ID: &'static str = "Pendulum-v1";
    const MAX_EPISODE_STEPS: u32 = 200;
    const STATE_LEN: usize = 2;
    const OBS_LEN: usize = 3;
    type VectorMath = Libm;
    type State = [f64; 2];
    type Action = f32;

    fn observation_space(&self) -> Space {
        let high = vec![1.0, 1.0, MAX_SPEED];
        let low = high.iter().map(|x| -x).collect();
        Space::Box(BoxSpace::new(low, high, vec![3], DType::F32).expect("static bounds"))
    }

    fn action_space(&self) -> Space {
        let torque = MAX_TORQUE as f64;
        Space::Box(BoxSpace::uniform(-torque, torque, vec![1], DType::F32).expect("static bounds"))
    }

    /// Any finite torque: Gymnasium clips it.
    fn continuous_action(&self, action: &[f32]) -> Option<f32> {
        match action {
            [torque] if torque.is_finite() => Some(*torque),
            _ => None,
        }
    }

    /// Uniform in `[-x_init, x_init] x [-y_init, y_init]` (defaults π and 1).
    fn initial_state(
        &self,
        rng: &mut EnvRng,
        options: Option<&ResetOptions>,
    ) -> Result<[f64; 2], EnvError> {
        let angle = number_option(Self::ID, options, "x_init", PI)?;
        let speed = number_option(Self::ID, options, "y_init", 1.0)?;
        let mut draw = |high: f64| {
            if high > 0.0 {
                rng.gen_range(-high..high)
            } else {
                -high
            }
        };
        Ok([draw(angle), draw(speed)])
    }

    #[inline(always)]
    fn step<M: Math>(&self, state: &mut [f64; 2], torque: f32) -> Transition {
        let [angle, speed] = *state;
        let torque = torque.clamp(-MAX_TORQUE, MAX_TORQUE);
        let normalized = angle_normalize(angle);
        let torque_cost = (0.001f32 * M::square_f32(torque)) as f64;
        let cost = M::square(normalized) + 0.1 * M::square(speed) + torque_cost;
        let gravity_gain = 3.0 * self.gravity / (2.0 * LENGTH);
        let torque_gain = (3.0 / (MASS * LENGTH * LENGTH)) as f32;
        let acceleration = gravity_gain * M::sin(angle) + (torque_gain * torque) as f64;
        let speed = (speed + acceleration * DT).clamp(-MAX_SPEED, MAX_SPEED);
        *state = [angle + speed * DT, speed];
        Transition {
            reward: -cost,
            terminated: false,
        }
    }

    /// Gymnasium's 500x500 frame: the rod with rounded ends and its pivot
    /// (without the torque arrow).
    fn render(&self, state: &[f64; 2]) -> Option<RgbImage> {
        let size = 500;
        let scale = size as f64 / 4.4;
        let centre = ((size / 2) as f64, (size / 2) as f64);
        let (rod_length, rod_width) = (scale, 0.2 * scale);
        let angle = state[0] + PI / 2.0;
        let red = [204, 77, 77];
        let mut canvas = Canvas::new(size, size);
        let rod = rectangle(0.0, rod_length, -rod_width / 2.0, rod_width / 2.0)
            .map(|c| place(c, angle, centre));
        canvas.fill_polygon(&rod, red);
        canvas.fill_circle(centre, (rod_width / 2.0).floor(), red);
        canvas.fill_circle(
            place((rod_length, 0.0), angle, centre),
            (rod_width / 2.0).floor(),
            red,
        );
        canvas.fill_circle(centre, (0.05 * scale).floor(), [0, 0, 0]);
        Some(canvas.into_image())
    }

    #[inline(always)]
    fn observe<M: Math>(&self, state: &[f64; 2], obs: &mut [f32]) {
        obs[0] = M::cos(state[0]) as f32;
        obs[1] = M::sin(state[0]) as f32;
        obs[2] = state[1] as f32;
    }
}
