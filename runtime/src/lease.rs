//! The node Lease (`kube-node-lease/<node>`), the cheap liveness signal the
//! node lifecycle controller watches.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::PostParams;
use tokio_util::sync::CancellationToken;

/// The namespace of node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Creates the lease or renews it once.
pub async fn renew(
    client: &kube::Client,
    node: &str,
    node_uid: Option<&str>,
    duration: Duration,
) -> Result<Lease, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = MicroTime(jiff::Timestamp::now());
    let seconds = i32::try_from(duration.as_secs()).unwrap_or(i32::MAX);
    match api.get_opt(node).await? {
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.holder_identity = Some(node.to_string());
            spec.lease_duration_seconds = Some(seconds);
            spec.renew_time = Some(now);
            // A replace carries the resourceVersion read above: a concurrent
            // writer makes this fail with a conflict, retried next tick.
            api.replace(node, &PostParams::default(), &lease).await
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.to_string()),
                    namespace: Some(LEASE_NAMESPACE.to_string()),
                    owner_references: node_uid.map(|uid| {
                        vec![OwnerReference {
                            api_version: "v1".into(),
                            kind: "Node".into(),
                            name: node.to_string(),
                            uid: uid.to_string(),
                            ..Default::default()
                        }]
                    }),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(node.to_string()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await
        }
    }
}

/// Renews the lease every `interval` until `shutdown`; failures are retried
/// sooner (a quarter of the interval) so a blip does not cost the node its
/// Ready condition.
pub async fn run(
    client: kube::Client,
    node: String,
    node_uid: Option<String>,
    duration: Duration,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let wait = match renew(&client, &node, node_uid.as_deref(), duration).await {
            Ok(_) => interval,
            Err(e) => {
                tracing::warn!(error = %e, "renewing the node lease failed");
                interval / 4
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
