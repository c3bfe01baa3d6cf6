//! Builds the sample workloads in `wasm-samples/` for wasm32-wasip1 so the
//! end-to-end tests can push them. The nested cargo gets its own target
//! directory, so it never waits on the lock of the build that runs this script.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let samples = manifest_dir.join("../wasm-samples");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = out.join("wasm-samples-target");
    println!("cargo:rerun-if-changed={}", samples.display());

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip1",
        "--manifest-path",
    ])
    .arg(samples.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir);
    // Flags meant for the host build must not leak into the wasm build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo to build wasm-samples");
    if !status.success() {
        panic!(
            "building wasm-samples for wasm32-wasip1 failed; is the target installed? \
             run `rustup target add wasm32-wasip1` (scripts/setup.sh does)"
        );
    }
    println!(
        "cargo:rustc-env=WASM_SAMPLES_DIR={}",
        target_dir.join("wasm32-wasip1/release").display()
    );
    println!("cargo:rustc-env=WASM_SAMPLES_SRC={}", samples.display());
}
