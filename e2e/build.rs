//! Builds the sample workloads in `wasm-samples/` so the end-to-end tests can
//! push them: the core modules for wasm32-wasip1, the wasi:http components
//! for wasm32-wasip2. The nested cargo gets its own target directory, so it
//! never waits on the lock of the build that runs this script.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Samples that are components (wasm32-wasip2); every other member of the
/// wasm-samples workspace is a preview 1 module. Keep in sync with
/// `P2_SAMPLES` in src/lib.rs.
const P2_SAMPLES: &[&str] = &["http-echo", "http-frontend"];

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let samples = manifest_dir.join("../wasm-samples");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = out.join("wasm-samples-target");
    println!("cargo:rerun-if-changed={}", samples.display());

    let mut p1_args = vec!["--workspace"];
    for name in P2_SAMPLES {
        p1_args.extend(["--exclude", name]);
    }
    build(&samples, &target_dir, "wasm32-wasip1", &p1_args);

    let mut p2_args = Vec::new();
    for name in P2_SAMPLES {
        p2_args.extend(["-p", name]);
    }
    build(&samples, &target_dir, "wasm32-wasip2", &p2_args);

    println!(
        "cargo:rustc-env=WASM_SAMPLES_DIR={}",
        target_dir.join("wasm32-wasip1/release").display()
    );
    println!(
        "cargo:rustc-env=WASM_SAMPLES_P2_DIR={}",
        target_dir.join("wasm32-wasip2/release").display()
    );
    println!("cargo:rustc-env=WASM_SAMPLES_SRC={}", samples.display());
}

fn build(samples: &Path, target_dir: &Path, target: &str, packages: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", target])
        .args(packages)
        .arg("--manifest-path")
        .arg(samples.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
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
            "building wasm-samples for {target} failed; is the target installed? \
             run `rustup target add {target}` (scripts/setup.sh does)"
        );
    }
}
