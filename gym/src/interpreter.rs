//! The embedded CPython interpreter: started once per process, pointed at the
//! project's venv, with the bridge module loaded.
//!
//! oxray links the libpython of the interpreter it was built with
//! (`PYO3_PYTHON`, which `scripts/env.sh` sets to the cached venv's python).
//! An embedded interpreter does not know about that venv — its executable is
//! oxray's — so at start-up we ask the venv's own `python` for its `sys.path`
//! and add what is missing (site directories through `site.addsitedir`, so
//! `.pth` files work too). `OXRAY_PYTHON` chooses another interpreter at run
//! time; it must be the same Python version as the linked libpython.
//! `PYTHONPATH` works as usual.

use oxray_envs::EnvError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyModule, PyTracebackMethods};
use std::ffi::CString;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The Python interpreter whose packages the bridge uses.
pub fn python_executable() -> PathBuf {
    if let Some(path) = std::env::var_os("OXRAY_PYTHON") {
        return PathBuf::from(path);
    }
    if let Some(path) = option_env!("OXRAY_PYTHON") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home).join(".cache/oxray/venv/bin/python")
}

/// An error of the interpreter itself (not of one env).
fn setup_error(reason: String) -> EnvError {
    EnvError::Python {
        env: "python".into(),
        operation: "start the embedded interpreter".into(),
        message: reason,
        traceback: String::new(),
    }
}

/// `sys.path` and `major.minor` of the venv's interpreter.
fn venv_paths(python: &PathBuf) -> Result<(Vec<String>, String), EnvError> {
    let output = Command::new(python)
        .args([
            "-c",
            "import json, sys; print(json.dumps([sys.path, '%d.%d' % sys.version_info[:2]]))",
        ])
        .output()
        .map_err(|e| setup_error(format!("cannot run {}: {e}", python.display())))?;
    if !output.status.success() {
        return Err(setup_error(format!(
            "{} failed: {}",
            python.display(),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| setup_error(format!("{} printed no path list: {e}", python.display())))
}

fn start() -> Result<Py<PyModule>, EnvError> {
    let python = python_executable();
    let (paths, version) = venv_paths(&python)?;
    Python::initialize();
    Python::attach(|py| {
        let sys = py
            .import("sys")
            .map_err(|e| py_error(py, "python", "import sys", e))?;
        let embedded: String = py
            .eval(c"'%d.%d' % __import__('sys').version_info[:2]", None, None)
            .and_then(|v| v.extract())
            .map_err(|e| py_error(py, "python", "read sys.version_info", e))?;
        if embedded != version {
            return Err(setup_error(format!(
                "oxray embeds Python {embedded} but {} is Python {version}; point OXRAY_PYTHON \
                 at a Python {embedded} venv or rebuild oxray with PYO3_PYTHON set to it",
                python.display()
            )));
        }
        let add_paths = || -> PyResult<()> {
            let sys_path = sys.getattr("path")?.cast_into::<PyList>()?;
            let site = py.import("site")?;
            for path in &paths {
                if path.is_empty() || sys_path.contains(path)? {
                    continue;
                }
                if path.ends_with("site-packages") {
                    site.call_method1("addsitedir", (path,))?;
                } else {
                    sys_path.append(path)?;
                }
            }
            Ok(())
        };
        add_paths().map_err(|e| py_error(py, "python", "extend sys.path", e))?;
        let code = CString::new(include_str!("bridge.py")).expect("no NUL in bridge.py");
        PyModule::from_code(py, &code, c"oxray_bridge.py", c"oxray_bridge")
            .map(Bound::unbind)
            .map_err(|e| {
                py_error(
                    py,
                    "python",
                    "load the bridge module (is gymnasium installed?)",
                    e,
                )
            })
    })
}

/// The bridge module, loading the interpreter on first use.
pub fn bridge() -> Result<&'static Py<PyModule>, EnvError> {
    static BRIDGE: OnceLock<Result<Py<PyModule>, EnvError>> = OnceLock::new();
    BRIDGE.get_or_init(start).as_ref().map_err(Clone::clone)
}

/// A Python exception as the typed env error, with its formatted traceback.
pub fn py_error(py: Python<'_>, env: &str, operation: &str, error: PyErr) -> EnvError {
    let value = error.value(py);
    let kind = value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    EnvError::Python {
        env: env.to_string(),
        operation: operation.to_string(),
        message: format!("{kind}: {value}"),
        traceback: error
            .traceback(py)
            .and_then(|tb| tb.format().ok())
            .unwrap_or_default(),
    }
}
