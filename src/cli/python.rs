//! The cached Python venv that `scripts/env.sh` creates (libtorch, Gymnasium)
//! and `oxray tensorboard` adds TensorBoard to: `OXRAY_VENV`, else
//! `$XDG_CACHE_HOME/oxray/venv`, else `~/.cache/oxray/venv`. It lives outside
//! the clone, so every checkout on a machine shares one.

use std::path::PathBuf;

use anyhow::Context;

pub fn cached_venv() -> anyhow::Result<PathBuf> {
    if let Some(venv) = std::env::var_os("OXRAY_VENV").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(venv));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .context("neither OXRAY_VENV, XDG_CACHE_HOME nor HOME is set: no place for the venv")?;
    Ok(cache.join("oxray/venv"))
}
