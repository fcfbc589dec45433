//! Link-time rpaths to libtorch and libpython, shared by every package with
//! tch- or PyO3-linked binaries or tests (the root `oxray` binary, `oxray-rl`,
//! `oxray-trainers`, `oxray-gym`).
//!
//! torch-sys declares `links = "tch"` and reports where it found libtorch; a
//! package that depends on torch-sys directly receives that as
//! `DEP_TCH_LIBTORCH_LIB`. PyO3 links the libpython of `PYO3_PYTHON` (the
//! cached venv's interpreter, exported by `scripts/env.sh`), whose directory
//! that interpreter reports as `LIBDIR`. Baking both into the executables'
//! rpath means `oxray` and the test binaries load libtorch from the cached
//! PyTorch wheel and libpython from its install without the user exporting
//! `LD_LIBRARY_PATH`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    if let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
    let python = std::env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".into());
    let lib_dir = Command::new(python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')",
        ])
        .output();
    if let Ok(output) = lib_dir {
        let lib_dir = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if output.status.success() && !lib_dir.is_empty() {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
        }
    }
}
