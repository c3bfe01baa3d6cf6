//! wasmkube-controllers: the controller manager.
//!
//! Each controller is an API client like any other: it watches the objects
//! it cares about into caches, turns events into keys on a de-duplicated
//! queue, and reconciles one key at a time from the cache, writing back
//! through the API with resourceVersion preconditions (a conflict is a
//! requeue). [`framework`] holds that loop; each controller is a module.
//! Controllers now: [`node_lifecycle`] (nodes whose kubelet went silent
//! become `Unknown` and tainted unreachable).

pub mod framework;
pub mod node_lifecycle;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

/// Controller manager errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A controller task panicked or was aborted.
    #[error("controller {0} stopped unexpectedly")]
    ControllerStopped(&'static str),
}

/// Controller manager settings.
#[derive(Debug, Clone)]
pub struct ControllersConfig {
    /// How long a node may go without a heartbeat before it is marked
    /// `Unknown` (Kubernetes' `--node-monitor-grace-period`).
    pub node_monitor_grace_period: Duration,
    /// Namespace holding node Leases.
    pub lease_namespace: String,
    /// Every key is reconciled at least this often.
    pub resync_period: Duration,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        ControllersConfig {
            node_monitor_grace_period: Duration::from_secs(40),
            lease_namespace: "kube-node-lease".to_string(),
            resync_period: Duration::from_secs(300),
        }
    }
}

/// Runs every controller until `shutdown` is cancelled.
pub async fn run(
    client: Client,
    config: ControllersConfig,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let node_lifecycle = tokio::spawn(run_node_lifecycle(client, config, shutdown.clone()));
    node_lifecycle
        .await
        .map_err(|_| Error::ControllerStopped("node-lifecycle"))?;
    Ok(())
}

async fn run_node_lifecycle(
    client: Client,
    config: ControllersConfig,
    shutdown: CancellationToken,
) {
    let nodes_api: Api<Node> = Api::all(client.clone());
    let leases_api: Api<Lease> = Api::namespaced(client, &config.lease_namespace);
    let (node_store, node_writer) = reflector::store::<Node>();
    let (lease_store, lease_writer) = reflector::store::<Lease>();
    let node_keys = reflector::reflector(
        node_writer,
        watcher::watcher(nodes_api.clone(), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects()
    .filter_map(|r| async move { key_or_log(r, "node") });
    // A Lease is named after its node.
    let lease_keys = reflector::reflector(
        lease_writer,
        watcher::watcher(leases_api, watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects()
    .filter_map(|r| async move { key_or_log(r, "lease") });
    let triggers = futures::stream::select(node_keys, lease_keys);
    let ready = {
        let (nodes, leases) = (node_store.clone(), lease_store.clone());
        async move {
            // Err only means the writer is gone, i.e. we are shutting down.
            let _ = nodes.wait_until_ready().await;
            let _ = leases.wait_until_ready().await;
        }
    };
    let reconciler = node_lifecycle::NodeLifecycle::new(
        nodes_api,
        node_store,
        lease_store,
        &config.lease_namespace,
        config.node_monitor_grace_period,
    );
    framework::run(
        "node-lifecycle",
        reconciler,
        triggers,
        ready,
        config.resync_period,
        shutdown,
    )
    .await;
}

fn key_or_log<K: kube::Resource>(
    r: Result<K, watcher::Error>,
    what: &'static str,
) -> Option<String> {
    match r {
        Ok(obj) => Some(obj.name_any()),
        Err(e) => {
            tracing::warn!(error = %e, "{what} watch failed; retrying");
            None
        }
    }
}
