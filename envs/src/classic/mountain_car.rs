//! MountainCar-v0 and MountainCarContinuous-v0: an underpowered car rocking
//! itself out of a valley.
//!
//! Both share the track, the start distribution and the observation space;
//! they differ in their action, reward and goal. Gymnasium's continuous
//! version keeps its state as float32 after the first step and mixes NumPy
//! float32 and Python float arithmetic (NumPy 2 promotion rules), which moves
//! results by an ulp of float32 and can flip the goal test; the continuous step
//! below reproduces those precisions exactly, which is why it carries the
//! state's dtype alongside the state.

use super::canvas::{place, rectangle, Canvas, Point};
use super::{reset_bounds, uniform, Dynamics, Math, Poly, Transition};
use crate::env::{ResetOptions, RgbImage};
use crate::error::EnvError;
use crate::rng::EnvRng;
use crate::spaces::{BoxSpace, DType, Space};

const MIN_POSITION: f64 = -1.2;
const MAX_POSITION: f64 = 0.6;
const MAX_SPEED: f64 = 0.07;
const GRAVITY: f64 = 0.0025;

fn track_space() -> Space {
    let space = BoxSpace::new(
        vec![MIN_POSITION, -MAX_SPEED],
        vec![MAX_POSITION, MAX_SPEED],
        vec![2],
        DType::F32,
    );
    Space::Box(space.expect("static bounds"))
}

/// The start state of both cars: a random position in the valley, at rest.
fn start_state(
    env: &str,
    rng: &mut EnvRng,
    options: Option<&ResetOptions>,
) -> Result<[f64; 2], EnvError> {
    let (low, high) = reset_bounds(env, options, -0.6, -0.4)?;
    Ok([uniform(rng, low, high), 0.0])
}

/// Gymnasium's 600x400 frame of a car at `position`: the track, the car
/// tilted with the slope, its wheels and the goal flag.
fn render_track(position: f64, goal_position: f64) -> RgbImage {
    let (width, height) = (600, 400);
    let scale = width as f64 / (MAX_POSITION - MIN_POSITION);
    let track_height = |x: f64| (3.0 * x).sin() * 0.45 + 0.55;
    let mut canvas = Canvas::new(width, height);
    let track: Vec<Point> = (0..100)
        .map(|i| {
            let x = MIN_POSITION + (MAX_POSITION - MIN_POSITION) * i as f64 / 99.0;
            ((x - MIN_POSITION) * scale, track_height(x) * scale)
        })
        .collect();
    for segment in track.windows(2) {
        canvas.line(segment[0], segment[1], 1.0, [0, 0, 0]);
    }
    let tilt = (3.0 * position).cos();
    let base = (
        (position - MIN_POSITION) * scale,
        10.0 + track_height(position) * scale,
    );
    canvas.fill_polygon(
        &rectangle(-20.0, 20.0, 0.0, 20.0).map(|c| place(c, tilt, base)),
        [0, 0, 0],
    );
    for wheel in [(10.0, 0.0), (-10.0, 0.0)] {
        canvas.fill_circle(place(wheel, tilt, base), 8.0, [128, 128, 128]);
    }
    let flag_x = ((goal_position - MIN_POSITION) * scale).floor();
    let flag_bottom = (track_height(goal_position) * scale).floor();
    let flag_top = flag_bottom + 50.0;
    canvas.line((flag_x, flag_bottom), (flag_x, flag_top), 1.0, [0, 0, 0]);
    let flag = [
        (flag_x, flag_top),
        (flag_x, flag_top - 10.0),
        (flag_x + 25.0, flag_top - 5.0),
    ];
    canvas.fill_polygon(&flag, [204, 204, 0]);
    canvas.into_image()
}

/// MountainCar-v0's dynamics: accelerate left (0), not at all (1) or right (2).
#[derive(Debug, Clone, Copy)]
pub struct MountainCar {
    pub goal_velocity: f64,
}

impl Default for MountainCar {
    fn default() -> Self {
        Self { goal_velocity: 0.0 }
    }
}

impl MountainCar {
    const GOAL_POSITION: f64 = 0.5;
    const FORCE: f64 = 0.001;
}

impl Dynamics for MountainCar {
    const ID: &'static str = "MountainCar-v0";
    const MAX_EPISODE_STEPS: u32 = 200;
    const STATE_LEN: usize = 2;
    const OBS_LEN: usize = 2;
    type VectorMath = Poly;
    type State = [f64; 2];
    type Action = i64;

    fn observation_space(&self) -> Space {
        track_space()
    }

    fn action_space(&self) -> Space {
        Space::discrete(3)
    }

    fn discrete_action(&self, action: i64) -> Option<i64> {
        (0..3).contains(&action).then_some(action)
    }

    fn initial_state(
        &self,
        rng: &mut EnvRng,
        options: Option<&ResetOptions>,
    ) -> Result<[f64; 2], EnvError> {
        start_state(Self::ID, rng, options)
    }

    #[inline(always)]
    fn step<M: Math>(&self, state: &mut [f64; 2], action: i64) -> Transition {
        let [position, velocity] = *state;
        let velocity =
            velocity + ((action - 1) as f64 * Self::FORCE + M::cos(3.0 * position) * -GRAVITY);
        let velocity = velocity.clamp(-MAX_SPEED, MAX_SPEED);
        let position = (position + velocity).clamp(MIN_POSITION, MAX_POSITION);
        let velocity = if position == MIN_POSITION && velocity < 0.0 {
            0.0
        } else {
            velocity
        };
        *state = [position, velocity];
        Transition {
            reward: -1.0,
            terminated: position >= Self::GOAL_POSITION && velocity >= self.goal_velocity,
        }
    }

    fn render(&self, state: &[f64; 2]) -> Option<RgbImage> {
        Some(render_track(state[0], Self::GOAL_POSITION))
    }

    #[inline(always)]
    fn observe<M: Math>(&self, state: &[f64; 2], obs: &mut [f32]) {
        obs[0] = state[0] as f32;
        obs[1] = state[1] as f32;
    }
}

/// MountainCarContinuous-v0's dynamics: a force in [-1, 1] (clipped).
#[derive(Debug, Clone, Copy)]
pub struct MountainCarContinuous {
    pub goal_velocity: f64,
}

impl Default for MountainCarContinuous {
    fn default() -> Self {
        Self { goal_velocity: 0.0 }
    }
}

impl MountainCarContinuous {
    const GOAL_POSITION: f64 = 0.45;
    const POWER: f64 = 0.0015;
}

impl Dynamics for MountainCarContinuous {
    const ID: &'static str = "MountainCarContinuous-v0";
    const MAX_EPISODE_STEPS: u32 = 999;
    const STATE_LEN: usize = 2;
    const OBS_LEN: usize = 2;
    /// Position, velocity, and a flag (1.0) once Gymnasium would hold the
    /// state as float32, which it does after any step (a reset or an assigned
    /// state is float64).
    type VectorMath = Poly;
    type State = [f64; 3];
    type Action = f32;

    fn observation_space(&self) -> Space {
        track_space()
    }

    fn action_space(&self) -> Space {
        Space::Box(BoxSpace::uniform(-1.0, 1.0, vec![1], DType::F32).expect("static bounds"))
    }

    /// Any finite force: Gymnasium clips it for the dynamics (the reward uses
    /// the unclipped value).
    fn continuous_action(&self, action: &[f32]) -> Option<f32> {
        match action {
            [force] if force.is_finite() => Some(*force),
            _ => None,
        }
    }

    fn initial_state(
        &self,
        rng: &mut EnvRng,
        options: Option<&ResetOptions>,
    ) -> Result<[f64; 3], EnvError> {
        let [position, velocity] = start_state(Self::ID, rng, options)?;
        Ok([position, velocity, 0.0])
    }

    #[inline(always)]
    fn step<M: Math>(&self, state: &mut [f64; 3], action: f32) -> Transition {
        let [position, velocity, float32_flag] = *state;
        let is_float32 = float32_flag != 0.0;
        // Python's min/max leave a float32 action a float32 but replace it by
        // the Python float bound when clipping, which changes the precision of
        // the acceleration below.
        let clipped = !(-1.0..=1.0).contains(&action);
        let cos_term = if is_float32 {
            0.0025 * M::cos((3.0f32 * position as f32) as f64)
        } else {
            0.0025 * M::cos(3.0 * position)
        };
        let acceleration = if clipped {
            action.signum() as f64 * Self::POWER - cos_term
        } else {
            (action * Self::POWER as f32 - cos_term as f32) as f64
        };
        let (position, velocity) = if is_float32 {
            let velocity = clip_velocity_f32(velocity as f32 + acceleration as f32);
            let position = (position as f32 + velocity as f32) as f64;
            (position, velocity)
        } else {
            let velocity = (velocity + acceleration).clamp(-MAX_SPEED, MAX_SPEED);
            (position + velocity, velocity)
        };
        // Comparisons against the Python-float bounds happen in the state's
        // precision; the clipped values themselves are Python floats.
        let bound = |x: f64| if is_float32 { x as f32 as f64 } else { x };
        let position = if position > bound(MAX_POSITION) {
            MAX_POSITION
        } else if position < bound(MIN_POSITION) {
            MIN_POSITION
        } else {
            position
        };
        let at_left_wall = position == MIN_POSITION || position == bound(MIN_POSITION);
        let velocity = if at_left_wall && velocity < 0.0 {
            0.0
        } else {
            velocity
        };
        let terminated =
            position >= bound(Self::GOAL_POSITION) && velocity >= bound(self.goal_velocity);
        let reward = if terminated { 100.0 } else { 0.0 } - (action as f64).powi(2) * 0.1;
        *state = [position as f32 as f64, velocity as f32 as f64, 1.0];
        Transition { reward, terminated }
    }

    fn render(&self, state: &[f64; 3]) -> Option<RgbImage> {
        Some(render_track(state[0], Self::GOAL_POSITION))
    }

    #[inline(always)]
    fn observe<M: Math>(&self, state: &[f64; 3], obs: &mut [f32]) {
        obs[0] = state[0] as f32;
        obs[1] = state[1] as f32;
    }
}

/// The float32 velocity clip: compared against float32 bounds, replaced by
/// the Python-float bound (which the next float32 addition rounds anyway).
fn clip_velocity_f32(velocity: f32) -> f64 {
    if velocity > MAX_SPEED as f32 {
        MAX_SPEED
    } else if velocity < -MAX_SPEED as f32 {
        -MAX_SPEED
    } else {
        velocity as f64
    }
}
