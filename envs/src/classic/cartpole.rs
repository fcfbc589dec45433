//! CartPole-v1: a pole balanced on a cart pushed left or right.
//!
//! Barto, Sutton and Anderson's cart-pole with Gymnasium's constants, explicit
//! Euler integration and termination at |x| > 2.4 or |θ| > 12°. The state is
//! float64 and the observation its float32 cast, as in Gymnasium.

use super::canvas::{place, rectangle, Canvas};
use super::{reset_bounds, uniform, Dynamics, Math, Poly, Transition};
use crate::env::{ResetOptions, RgbImage};
use crate::error::EnvError;
use crate::rng::EnvRng;
use crate::spaces::{BoxSpace, DType, Space};

const GRAVITY: f64 = 9.8;
const MASS_CART: f64 = 1.0;
const MASS_POLE: f64 = 0.1;
const TOTAL_MASS: f64 = MASS_POLE + MASS_CART;
/// Half the pole's length, as Gymnasium's `length` is.
const HALF_LENGTH: f64 = 0.5;
const POLE_MASS_LENGTH: f64 = MASS_POLE * HALF_LENGTH;
const FORCE_MAG: f64 = 10.0;
const TAU: f64 = 0.02;
const THETA_THRESHOLD: f64 = 12.0 * 2.0 * std::f64::consts::PI / 360.0;
const X_THRESHOLD: f64 = 2.4;

/// CartPole-v1's dynamics; the action pushes right when `true`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CartPole {
    /// Gymnasium's `sutton_barto_reward`: 0 per step and -1 on termination
    /// instead of 1 per step.
    pub sutton_barto_reward: bool,
}

impl Dynamics for CartPole {
    const ID: &'static str = "CartPole-v1";
    const MAX_EPISODE_STEPS: u32 = 500;
    const STATE_LEN: usize = 4;
    const OBS_LEN: usize = 4;
    type VectorMath = Poly;
    type State = [f64; 4];
    type Action = bool;

    fn observation_space(&self) -> Space {
        let high = vec![
            X_THRESHOLD * 2.0,
            f64::INFINITY,
            THETA_THRESHOLD * 2.0,
            f64::INFINITY,
        ];
        let low = high.iter().map(|x| -x).collect();
        Space::Box(BoxSpace::new(low, high, vec![4], DType::F32).expect("static bounds"))
    }

    fn action_space(&self) -> Space {
        Space::discrete(2)
    }

    fn discrete_action(&self, action: i64) -> Option<bool> {
        match action {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    fn initial_state(
        &self,
        rng: &mut EnvRng,
        options: Option<&ResetOptions>,
    ) -> Result<[f64; 4], EnvError> {
        let (low, high) = reset_bounds(Self::ID, options, -0.05, 0.05)?;
        Ok(std::array::from_fn(|_| uniform(rng, low, high)))
    }

    #[inline(always)]
    fn step<M: Math>(&self, state: &mut [f64; 4], push_right: bool) -> Transition {
        let [x, x_dot, theta, theta_dot] = *state;
        let force = if push_right { FORCE_MAG } else { -FORCE_MAG };
        let cos_theta = M::cos(theta);
        let sin_theta = M::sin(theta);
        // Same operation order as Gymnasium, so results agree to the last bit.
        let temp = (force + POLE_MASS_LENGTH * (theta_dot * theta_dot) * sin_theta) / TOTAL_MASS;
        let theta_acc = (GRAVITY * sin_theta - cos_theta * temp)
            / (HALF_LENGTH * (4.0 / 3.0 - MASS_POLE * (cos_theta * cos_theta) / TOTAL_MASS));
        let x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos_theta / TOTAL_MASS;
        let x = x + TAU * x_dot;
        let x_dot = x_dot + TAU * x_acc;
        let theta = theta + TAU * theta_dot;
        let theta_dot = theta_dot + TAU * theta_acc;
        *state = [x, x_dot, theta, theta_dot];
        let terminated = !(-X_THRESHOLD..=X_THRESHOLD).contains(&x)
            || !(-THETA_THRESHOLD..=THETA_THRESHOLD).contains(&theta);
        let reward = match (self.sutton_barto_reward, terminated) {
            (false, _) => 1.0,
            (true, false) => 0.0,
            (true, true) => -1.0,
        };
        Transition { reward, terminated }
    }

    #[inline(always)]
    fn observe<M: Math>(&self, state: &[f64; 4], obs: &mut [f32]) {
        for (o, s) in obs.iter_mut().zip(state) {
            *o = *s as f32;
        }
    }

    /// Gymnasium's 600x400 frame: the cart, the pole on its axle, the track.
    fn render(&self, state: &[f64; 4]) -> Option<RgbImage> {
        let (width, height) = (600, 400);
        let scale = width as f64 / (X_THRESHOLD * 2.0);
        let pole_length = scale * (2.0 * HALF_LENGTH);
        let cart = (state[0] * scale + width as f64 / 2.0, 100.0);
        let axle = (cart.0, cart.1 + 30.0 / 4.0);
        let mut canvas = Canvas::new(width, height);
        canvas.fill_polygon(
            &rectangle(-25.0, 25.0, -15.0, 15.0).map(|c| place(c, 0.0, cart)),
            [0, 0, 0],
        );
        let pole = rectangle(-5.0, 5.0, -5.0, pole_length - 5.0).map(|c| place(c, -state[2], axle));
        canvas.fill_polygon(&pole, [202, 152, 101]);
        canvas.fill_circle(axle, 5.0, [129, 132, 203]);
        canvas.line((0.0, cart.1), (width as f64, cart.1), 1.0, [0, 0, 0]);
        Some(canvas.into_image())
    }

    fn reward_after_termination(&self, _reward: f64) -> f64 {
        if self.sutton_barto_reward {
            -1.0
        } else {
            0.0
        }
    }
}
