//! wasmkube's fault suite (issue #11): each scenario starts the real
//! `wasmkube` binary (and a real etcd where the backend is etcd) on loopback,
//! injects faults — `kill -9`, truncated store files, cut watch streams,
//! overload — and checks that nothing acknowledged is lost and nothing stays
//! stuck. `wasmkube-reliability` runs them and writes `RELIABILITY.md`; the
//! reduced form runs in `cargo test` (tests/ci.rs).

pub mod component_crash;
pub mod crash;
pub mod linearizability;
pub mod linearizable_store;
pub mod overload;
pub mod report;
pub mod soak;
pub mod watch_resume;
