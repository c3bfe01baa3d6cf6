//! The `wasmtime` CLI reference of issue #10, installed by the harness
//! itself: `cargo install wasmtime-cli` at exactly the wasmtime version the
//! workspace locks, into `target/bench-tools/wasmtime-<version>/`, so the
//! reference runs the same engine as wasmkube. The install is cached: it is
//! skipped when the binary is already there.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The `wasmtime` package version in the workspace's `Cargo.lock`.
pub fn locked_version(repo: &Path) -> Result<String> {
    let lock = std::fs::read_to_string(repo.join("Cargo.lock")).context("reading Cargo.lock")?;
    version_in_lock(&lock).context("Cargo.lock has no `wasmtime` package")
}

/// The version of the `[[package]]` named exactly `wasmtime` in a lock file.
fn version_in_lock(lock: &str) -> Option<String> {
    let mut in_wasmtime = false;
    for line in lock.lines() {
        let line = line.trim();
        if line == "[[package]]" {
            in_wasmtime = false;
        } else if line == "name = \"wasmtime\"" {
            in_wasmtime = true;
        } else if in_wasmtime && let Some(v) = line.strip_prefix("version = ") {
            return Some(v.trim_matches('"').to_string());
        }
    }
    None
}

/// Where the CLI of `version` is installed.
fn root(repo: &Path, version: &str) -> PathBuf {
    repo.join("target/bench-tools")
        .join(format!("wasmtime-{version}"))
}

/// The installed `wasmtime` binary, installing it first when missing.
/// `cargo install` of the default features, which include `serve` (wasi:http),
/// `run`, `compile` and the compilation cache.
pub fn ensure(repo: &Path) -> Result<PathBuf> {
    let version = locked_version(repo)?;
    let root = root(repo, &version);
    let bin = root.join("bin/wasmtime");
    if bin.exists() {
        eprintln!("wasmtime CLI {version}: using the cached {}", bin.display());
        return Ok(bin);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let spec = format!("={version}");
    eprintln!(
        "wasmtime CLI {version}: not cached; running `cargo install wasmtime-cli --version {spec} --locked --root {}` (several minutes)…",
        root.display()
    );
    let ok = Command::new(cargo)
        .args(["install", "wasmtime-cli", "--version", &spec, "--locked"])
        .arg("--root")
        .arg(&root)
        .status()
        .context("running cargo install")?
        .success();
    if !ok || !bin.exists() {
        bail!("cargo install wasmtime-cli {spec} failed");
    }
    Ok(bin)
}

/// `wasmtime --version`, to name the reference in the report.
pub fn version_of(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "wasmtime (unknown version)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_wasmtime_package_not_its_namesakes() {
        let lock = r#"
[[package]]
name = "wasmtime-wasi"
version = "1.0.0"

[[package]]
name = "wasmtime"
version = "48.0.8"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "wasmtime-environ"
version = "2.0.0"
"#;
        assert_eq!(version_in_lock(lock).as_deref(), Some("48.0.8"));
        assert_eq!(version_in_lock("[[package]]\nname = \"x\"\n"), None);
    }
}
