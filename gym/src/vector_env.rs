//! [`GymVectorEnv`]: a Gymnasium `SyncVectorEnv` in the embedded interpreter,
//! behind oxray-envs' [`VectorEnv`] trait, so an EnvRunner steps a Python env
//! exactly as it steps a native one.
//!
//! One step is one call into Python: the actions go over as one numpy array
//! (a single copy of the Rust buffer), the bridge module steps every sub-env
//! and returns observations already flattened into a contiguous `float32`
//! array, which is copied once into this env's own buffer. Gymnasium does the
//! autoreset (in the mode asked for, its `final_obs` info read for
//! `SameStep`); episode returns and lengths are counted here with the same
//! bookkeeping as the native vector envs. Every Python exception becomes
//! [`EnvError::Python`] with the env's id and the formatted traceback.

use crate::interpreter::{bridge, py_error};
use crate::spaces::space_from_json;
use ndarray::{Array2, ArrayView2};
use numpy::{PyArray1, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use oxray_envs::{
    Actions, AutoresetMode, EnvConfig, EnvError, Space, StepBuffers, VectorEnv, VectorStep,
};
use pyo3::prelude::*;

pub struct GymVectorEnv {
    id: String,
    bridge: Py<PyAny>,
    observation_space: Space,
    action_space: Space,
    mode: AutoresetMode,
    out: StepBuffers,
}

/// Copies a `(num_envs, dim)` float32 array into `dst`, checking its shape.
fn copy_rows(id: &str, src: &Bound<'_, PyAny>, dst: &mut Array2<f32>) -> PyResult<()> {
    let array: PyReadonlyArray2<'_, f32> = src.extract()?;
    if array.shape() != dst.shape() {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "{id}: the bridge returned observations of shape {:?}, expected {:?}",
            array.shape(),
            dst.shape()
        )));
    }
    dst.assign(&array.as_array());
    Ok(())
}

fn copy_column<T: numpy::Element + Copy>(src: &Bound<'_, PyAny>, dst: &mut [T]) -> PyResult<()> {
    let array: PyReadonlyArray1<'_, T> = src.extract()?;
    let values = array.as_slice()?;
    if values.len() != dst.len() {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "the bridge returned {} values for {} sub-envs",
            values.len(),
            dst.len()
        )));
    }
    dst.copy_from_slice(values);
    Ok(())
}

impl GymVectorEnv {
    /// `num_envs` sub-envs of `config` (its backend is not consulted), not yet reset.
    pub fn new(config: &EnvConfig, num_envs: usize, mode: AutoresetMode) -> Result<Self, EnvError> {
        if num_envs == 0 {
            return Err(EnvError::InvalidOption {
                env: config.id.clone(),
                name: "num_envs".into(),
                reason: "must be at least 1".into(),
            });
        }
        let module = bridge()?;
        let wrappers: Vec<_> = config
            .wrappers
            .iter()
            .map(|w| w.gymnasium_class())
            .collect();
        let kwargs = serde_json::Value::Object(config.config.clone()).to_string();
        let wrappers = serde_json::to_string(&wrappers).expect("wrapper lists serialize");
        let id = config.id.clone();
        Python::attach(|py| {
            let fail = |operation: &str, e: PyErr| py_error(py, &id, operation, e);
            let bridge = module
                .bind(py)
                .getattr("VectorBridge")
                .and_then(|class| {
                    class.call1((
                        &id,
                        kwargs,
                        config.max_episode_steps,
                        wrappers,
                        num_envs,
                        mode == AutoresetMode::SameStep,
                    ))
                })
                .map_err(|e| fail("make", e))?;
            let spaces: String = bridge
                .call_method0("spaces")
                .and_then(|s| s.extract())
                .map_err(|e| fail("describe spaces", e))?;
            let spaces: [serde_json::Value; 2] =
                serde_json::from_str(&spaces).map_err(|e| EnvError::InvalidSpace {
                    reason: format!("{id}: unreadable space description: {e}"),
                })?;
            let observation_space = space_from_json(&spaces[0])?;
            let action_space = space_from_json(&spaces[1])?;
            let dim = observation_space.flatdim();
            Ok(GymVectorEnv {
                bridge: bridge.unbind(),
                observation_space,
                action_space,
                mode,
                out: StepBuffers::new(num_envs, dim),
                id,
            })
        })
    }

    /// Counts the step's rewards into episodes, as the native vector envs do.
    fn record_episodes(&mut self) {
        self.out.episodes.finished.clear();
        for index in 0..self.out.rewards.len() {
            if self.mode == AutoresetMode::NextStep && self.out.episodes.needs_reset[index] {
                // Gymnasium's reset step: reward 0, not part of any episode.
                self.out.episodes.restart(index);
                continue;
            }
            self.out.episodes.add(index, self.out.rewards[index]);
            if self.out.terminated[index] || self.out.truncated[index] {
                self.out.episodes.finish(index);
                match self.mode {
                    AutoresetMode::NextStep => self.out.episodes.needs_reset[index] = true,
                    AutoresetMode::SameStep => self.out.episodes.restart(index),
                }
            }
        }
    }
}

impl VectorEnv for GymVectorEnv {
    fn id(&self) -> &str {
        &self.id
    }

    fn num_envs(&self) -> usize {
        self.out.rewards.len()
    }

    fn single_observation_space(&self) -> &Space {
        &self.observation_space
    }

    fn single_action_space(&self) -> &Space {
        &self.action_space
    }

    fn autoreset_mode(&self) -> AutoresetMode {
        self.mode
    }

    fn observations(&self) -> ArrayView2<'_, f32> {
        self.out.obs.view()
    }

    fn reset(&mut self, seed: Option<u64>) -> Result<ArrayView2<'_, f32>, EnvError> {
        Python::attach(|py| {
            self.bridge
                .bind(py)
                .call_method1("reset", (seed,))
                .and_then(|obs| copy_rows(&self.id, &obs, &mut self.out.obs))
                .map_err(|e| py_error(py, &self.id, "reset", e))
        })?;
        self.out.episodes.reset_all();
        Ok(self.out.obs.view())
    }

    fn set_state(&mut self, index: usize, state: &[f64]) -> Result<(), EnvError> {
        if index >= self.num_envs() {
            return Err(EnvError::InvalidOption {
                env: self.id.clone(),
                name: "index".into(),
                reason: format!(
                    "sub-env {index} does not exist ({} sub-envs)",
                    self.num_envs()
                ),
            });
        }
        Python::attach(|py| {
            self.bridge
                .bind(py)
                .call_method1("set_state", (index, state.to_vec()))
                .map(drop)
                .map_err(|e| py_error(py, &self.id, "set_state", e))
        })?;
        self.out.episodes.needs_reset[index] = false;
        Ok(())
    }

    fn step(&mut self, actions: Actions<'_>) -> Result<VectorStep<'_>, EnvError> {
        let n = self.num_envs();
        let count_ok = match actions {
            Actions::Discrete(a) => a.len() == n,
            Actions::Continuous(a) => a.len() == n * self.action_space.flatdim(),
        };
        if !count_ok {
            return Err(EnvError::InvalidAction {
                env: self.id.clone(),
                action: "a buffer of the wrong length".into(),
                space: format!("one action of {} per sub-env ({n})", self.action_space),
            });
        }
        Python::attach(|py| {
            let actions = match actions {
                Actions::Discrete(a) => PyArray1::from_slice(py, a).into_any(),
                Actions::Continuous(a) => PyArray1::from_slice(py, a).into_any(),
            };
            let result = self
                .bridge
                .bind(py)
                .call_method1("step", (actions,))
                .map_err(|e| py_error(py, &self.id, "step", e))?;
            let mut unpack = || -> PyResult<()> {
                copy_rows(&self.id, &result.get_item(0)?, &mut self.out.obs)?;
                copy_column(&result.get_item(1)?, &mut self.out.rewards)?;
                copy_column(&result.get_item(2)?, &mut self.out.terminated)?;
                copy_column(&result.get_item(3)?, &mut self.out.truncated)?;
                // None when no episode ended (or in NextStep mode).
                let final_obs = result.get_item(4)?;
                if !final_obs.is_none() {
                    copy_rows(&self.id, &final_obs, &mut self.out.final_obs)?;
                }
                Ok(())
            };
            unpack().map_err(|e| py_error(py, &self.id, "read the step's results", e))
        })?;
        self.record_episodes();
        Ok(self.out.step(self.mode))
    }
}

impl Drop for GymVectorEnv {
    fn drop(&mut self) {
        // Releases emulators, windows and files the Python envs hold.
        Python::attach(|py| {
            if let Err(error) = self.bridge.bind(py).call_method0("close") {
                eprintln!("{}", py_error(py, &self.id, "close", error));
            }
        });
    }
}
