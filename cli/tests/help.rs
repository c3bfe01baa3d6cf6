//! The binary's own front door: `--help` documents the commands, and a usage
//! error is reported (exit code 2), not a panic. Having an integration test in
//! this package also makes `cargo test --workspace` build the `wasmkube`
//! binary that the end-to-end tests start.

use std::process::Command;

fn wasmkube(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wasmkube"))
        .args(args)
        .output()
        .expect("running the wasmkube binary")
}

#[test]
fn help_lists_the_commands() {
    let out = wasmkube(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["server", "push"] {
        assert!(
            text.contains(cmd),
            "`wasmkube --help` mentions `{cmd}`:\n{text}"
        );
    }
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = wasmkube(&["server", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error code");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}

#[test]
fn push_of_a_missing_file_fails_clearly() {
    let out = wasmkube(&[
        "push",
        "/nonexistent/module.wasm",
        "x:v1",
        "--kubeconfig",
        "/nonexistent/kubeconfig",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent"),
        "the error names the path: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
