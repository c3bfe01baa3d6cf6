//! The fault suite's reduced form, run by `cargo test`: every scenario (but
//! linearizability, in its own test file) with
//! `ci: true` (a few tens of seconds each), asserting nothing was lost.
//! The scenarios start real servers and measure memory, so they run one at
//! a time. `RELIABILITY_SEED` replays a failing run's random choices.

use std::sync::Mutex;

use wasmkube_reliability::report::{self, Mode, Outcome};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn check(name: &str, run: fn(&Mode) -> anyhow::Result<Vec<Outcome>>) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("wasmkube-reliability-ci-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a work dir");
    let seed = std::env::var("RELIABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    let mode = Mode {
        ci: true,
        work_dir: dir.clone(),
        seed,
    };
    let outcomes = match run(&mode) {
        Ok(o) => o,
        Err(e) => panic!("{name} (seed {seed}) failed: {e:#}"),
    };
    let summary = format!("{}{}", report::table(&outcomes), report::notes(&outcomes));
    eprintln!("{name} (seed {seed}):\n{summary}");
    assert!(!outcomes.is_empty(), "{name} reported nothing");
    assert!(
        outcomes.iter().all(Outcome::passed),
        "{name} (seed {seed}) lost something:\n{summary}"
    );
}

#[test]
fn crash_consistency() {
    check("crash", wasmkube_reliability::crash::run);
}

#[test]
fn watch_resumption() {
    check("watch", wasmkube_reliability::watch_resume::run);
}

#[test]
fn overload() {
    check("overload", wasmkube_reliability::overload::run);
}

#[test]
fn churn_soak() {
    check("soak", wasmkube_reliability::soak::run);
}

// The linearizability scenario's CI form runs in tests/linearizability.rs,
// which also fails on undecided keys and unexpected answers.

#[test]
fn component_crashes() {
    check("components", wasmkube_reliability::component_crash::run);
}
