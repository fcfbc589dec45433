//! Link-time rpath to libtorch, shared by every package with tch-linked binaries
//! or tests (the root `oxray` binary, `oxray-rl`, `oxray-trainers`).
//!
//! torch-sys declares `links = "tch"` and reports where it found libtorch; a
//! package that depends on torch-sys directly receives that as
//! `DEP_TCH_LIBTORCH_LIB`. Baking it into the executables' rpath means `oxray`
//! and the test binaries load libtorch from the cached PyTorch wheel without the
//! user exporting `LD_LIBRARY_PATH`.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
}
