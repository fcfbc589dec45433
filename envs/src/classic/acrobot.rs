//! Acrobot-v1: swing the tip of a two-link pendulum above a line by torquing
//! the joint between the links.
//!
//! The "book" dynamics of Sutton and Barto, integrated over one 0.2 s step
//! with a single classic Runge-Kutta (RK4) stage as Gymnasium does, then the
//! angles wrapped into [-π, π] and the velocities clipped. The reset state is
//! drawn in float64 and stored as float32 (Gymnasium casts it), everything
//! after that is float64.

use super::canvas::{place, rectangle, Canvas};
use super::{reset_bounds, uniform, Dynamics, Libm, Math, Transition};
use crate::env::{ResetOptions, RgbImage};
use crate::error::EnvError;
use crate::rng::EnvRng;
use crate::spaces::{BoxSpace, DType, Space};
use std::f64::consts::PI;

const DT: f64 = 0.2;
const LINK_LENGTH_1: f64 = 1.0;
const LINK_LENGTH_2: f64 = 1.0;
const LINK_MASS_1: f64 = 1.0;
const LINK_MASS_2: f64 = 1.0;
const LINK_COM_POS_1: f64 = 0.5;
const LINK_COM_POS_2: f64 = 0.5;
const LINK_MOI: f64 = 1.0;
const GRAVITY: f64 = 9.8;
const MAX_VEL_1: f64 = 4.0 * PI;
const MAX_VEL_2: f64 = 9.0 * PI;
const AVAILABLE_TORQUE: [f64; 3] = [-1.0, 0.0, 1.0];

/// Acrobot-v1's dynamics: torque -1 (0), 0 (1) or +1 (2) on the joint.
#[derive(Debug, Clone, Copy, Default)]
pub struct Acrobot;

/// Time derivative of `[θ1, θ2, θ1', θ2']` under `torque`, with Gymnasium's
/// operation order.
#[inline(always)]
fn derivatives<M: Math>(s: [f64; 4], torque: f64) -> [f64; 4] {
    let (m1, m2, l1, lc1, lc2) = (
        LINK_MASS_1,
        LINK_MASS_2,
        LINK_LENGTH_1,
        LINK_COM_POS_1,
        LINK_COM_POS_2,
    );
    let (i1, i2, g) = (LINK_MOI, LINK_MOI, GRAVITY);
    let [theta1, theta2, dtheta1, dtheta2] = s;
    let cos_theta2 = M::cos(theta2);
    let sin_theta2 = M::sin(theta2);
    let d1 = m1 * (lc1 * lc1) + m2 * (l1 * l1 + lc2 * lc2 + 2.0 * l1 * lc2 * cos_theta2) + i1 + i2;
    let d2 = m2 * (lc2 * lc2 + l1 * lc2 * cos_theta2) + i2;
    let phi2 = m2 * lc2 * g * M::cos(theta1 + theta2 - PI / 2.0);
    let phi1 = -m2 * l1 * lc2 * M::square(dtheta2) * sin_theta2
        - 2.0 * m2 * l1 * lc2 * dtheta2 * dtheta1 * sin_theta2
        + (m1 * lc1 + m2 * l1) * g * M::cos(theta1 - PI / 2.0)
        + phi2;
    let ddtheta2 =
        (torque + d2 / d1 * phi1 - m2 * l1 * lc2 * M::square(dtheta1) * sin_theta2 - phi2)
            / (m2 * (lc2 * lc2) + i2 - M::square(d2) / d1);
    let ddtheta1 = -(d2 * ddtheta2 + phi1) / d1;
    [dtheta1, dtheta2, ddtheta1, ddtheta2]
}

/// One RK4 step of length `DT`.
#[inline(always)]
fn rk4<M: Math>(y0: [f64; 4], torque: f64) -> [f64; 4] {
    let half = DT / 2.0;
    let along = |k: [f64; 4], h: f64| std::array::from_fn(|j| y0[j] + h * k[j]);
    let k1 = derivatives::<M>(y0, torque);
    let k2 = derivatives::<M>(along(k1, half), torque);
    let k3 = derivatives::<M>(along(k2, half), torque);
    let k4 = derivatives::<M>(along(k3, DT), torque);
    std::array::from_fn(|j| y0[j] + DT / 6.0 * (k1[j] + 2.0 * k2[j] + 2.0 * k3[j] + k4[j]))
}

/// Gymnasium's `wrap`: shift by whole periods until within `[low, high]`.
#[inline(always)]
fn wrap(mut x: f64, low: f64, high: f64) -> f64 {
    let period = high - low;
    while x > high {
        x -= period;
    }
    while x < low {
        x += period;
    }
    x
}

impl Dynamics for Acrobot {
    const ID: &'static str = "Acrobot-v1";
    const MAX_EPISODE_STEPS: u32 = 500;
    const STATE_LEN: usize = 4;
    const OBS_LEN: usize = 6;
    type VectorMath = Libm;
    type State = [f64; 4];
    type Action = u8;

    fn observation_space(&self) -> Space {
        let high = vec![1.0, 1.0, 1.0, 1.0, MAX_VEL_1, MAX_VEL_2];
        let low = high.iter().map(|x| -x).collect();
        Space::Box(BoxSpace::new(low, high, vec![6], DType::F32).expect("static bounds"))
    }

    fn action_space(&self) -> Space {
        Space::discrete(3)
    }

    fn discrete_action(&self, action: i64) -> Option<u8> {
        u8::try_from(action).ok().filter(|a| *a < 3)
    }

    fn initial_state(
        &self,
        rng: &mut EnvRng,
        options: Option<&ResetOptions>,
    ) -> Result<[f64; 4], EnvError> {
        let (low, high) = reset_bounds(Self::ID, options, -0.1, 0.1)?;
        Ok(std::array::from_fn(|_| {
            uniform(rng, low, high) as f32 as f64
        }))
    }

    #[inline(always)]
    fn step<M: Math>(&self, state: &mut [f64; 4], action: u8) -> Transition {
        let next = rk4::<M>(*state, AVAILABLE_TORQUE[usize::from(action)]);
        let theta1 = wrap(next[0], -PI, PI);
        let theta2 = wrap(next[1], -PI, PI);
        let dtheta1 = next[2].clamp(-MAX_VEL_1, MAX_VEL_1);
        let dtheta2 = next[3].clamp(-MAX_VEL_2, MAX_VEL_2);
        *state = [theta1, theta2, dtheta1, dtheta2];
        let terminated = -M::cos(theta1) - M::cos(theta2 + theta1) > 1.0;
        Transition {
            reward: if terminated { 0.0 } else { -1.0 },
            terminated,
        }
    }

    /// Gymnasium's 500x500 frame: the goal line, both links and the joints.
    fn render(&self, state: &[f64; 4]) -> Option<RgbImage> {
        let size = 500;
        let bound = LINK_LENGTH_1 + LINK_LENGTH_2 + 0.2;
        let scale = size as f64 / (bound * 2.0);
        let offset = size as f64 / 2.0;
        let [theta1, theta2, ..] = *state;
        let elbow = (
            -LINK_LENGTH_1 * theta1.cos() * scale,
            LINK_LENGTH_1 * theta1.sin() * scale,
        );
        let tip_angle = theta1 + theta2;
        let tip = (
            elbow.0 - tip_angle.cos() * scale,
            elbow.1 + tip_angle.sin() * scale,
        );
        let mut canvas = Canvas::new(size, size);
        let goal = scale + offset;
        canvas.line(
            (-2.2 * scale + offset, goal),
            (2.2 * scale + offset, goal),
            1.0,
            [0, 0, 0],
        );
        // Gymnasium swaps the coordinates of the joints when drawing.
        let joints = [(0.0, 0.0), (elbow.1, elbow.0), (tip.1, tip.0)];
        let angles = [theta1 - PI / 2.0, tip_angle - PI / 2.0];
        for (&(x, y), angle) in joints.iter().zip(angles) {
            let joint = (x + offset, y + offset);
            let link =
                rectangle(0.0, scale, -0.1 * scale, 0.1 * scale).map(|c| place(c, angle, joint));
            canvas.fill_polygon(&link, [0, 204, 204]);
            canvas.fill_circle(joint, 0.1 * scale, [204, 204, 0]);
        }
        Some(canvas.into_image())
    }

    #[inline(always)]
    fn observe<M: Math>(&self, state: &[f64; 4], obs: &mut [f32]) {
        let [theta1, theta2, dtheta1, dtheta2] = *state;
        let values = [
            M::cos(theta1),
            M::sin(theta1),
            M::cos(theta2),
            M::sin(theta2),
            dtheta1,
            dtheta2,
        ];
        for (o, v) in obs.iter_mut().zip(values) {
            *o = v as f32;
        }
    }
}
