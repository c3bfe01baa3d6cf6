//! Client-side machinery shared by the API clients (scheduler, controllers,
//! kubelet): leader election.
//!
//! Everything here talks to the cluster only through the Kubernetes API (a
//! `kube::Client`), like the components that use it; nothing reaches the
//! store or the API server's internals.

pub mod leader_election;
