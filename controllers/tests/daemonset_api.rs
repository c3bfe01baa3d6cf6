//! DaemonSets and node failure against a real in-process API server, with
//! real kubelets (several in this process, one per node), the scheduler and
//! the controller manager.
//!
//! - A DaemonSet runs exactly one pod per node; a node that joins gets one;
//!   a node labelled out of the template's affinity loses its pod; a new
//!   template rolls out; deleting the DaemonSet removes its pods.
//! - A node whose kubelet stops turns Unknown, gets the unreachable
//!   `NoExecute` taint, and its Deployment pod is evicted, force-deleted
//!   and replaced on a healthy node.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use common::{Cluster, eventually, is_ready, node_of};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use wasmkube_controllers::ControllersConfig;
use wasmkube_controllers::daemonset::REVISION_HASH;
use wasmkube_controllers::node_lifecycle::UNREACHABLE_TAINT;
use wasmkube_controllers::ownership::controller_of;

fn daemonset() -> Result<DaemonSet> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": { "name": "agent", "namespace": "default" },
        "spec": {
            "selector": { "matchLabels": { "app": "agent" } },
            "template": {
                "metadata": { "labels": { "app": "agent" } },
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "affinity": { "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [{ "matchExpressions": [
                                { "key": "example.com/no-agent", "operator": "DoesNotExist" }
                            ] }]
                        }
                    } },
                    "containers": [{ "name": "agent", "image": "sleeper:v1" }]
                }
            }
        }
    }))?)
}

/// The DaemonSet's live pods by node, once `kubectl rollout status` would
/// report success and every node in `nodes` runs exactly one ready pod
/// with the current template.
async fn settled(
    dss: &Api<DaemonSet>,
    pods: &Api<Pod>,
    nodes: &[&str],
) -> Result<Option<BTreeMap<String, Pod>>> {
    let ds = dss.get("agent").await?;
    let status = ds.status.clone().unwrap_or_default();
    let desired = i32::try_from(nodes.len())?;
    let rolled_out = status.observed_generation >= ds.metadata.generation
        && status.desired_number_scheduled == desired
        && status.current_number_scheduled == desired
        && status.number_misscheduled == 0
        && status.updated_number_scheduled.unwrap_or(0) >= desired
        && status.number_available.unwrap_or(0) >= desired;
    if !rolled_out {
        return Ok(None);
    }
    let uid = ds.metadata.uid.unwrap_or_default();
    let mine: Vec<Pod> = pods
        .list(&ListParams::default().labels("app=agent"))
        .await?
        .items
        .into_iter()
        .filter(|p| controller_of(&p.metadata).is_some_and(|r| r.uid == uid))
        .collect();
    let mut by_node = BTreeMap::new();
    for p in mine {
        // Terminating pods must be gone too: exactly one pod per node.
        let Some(node) = node_of(&p).map(str::to_string) else {
            return Ok(None);
        };
        if !is_ready(&p) || by_node.insert(node, p).is_some() {
            return Ok(None);
        }
    }
    let expected: Vec<&str> = by_node.keys().map(String::as_str).collect();
    Ok((expected == nodes).then_some(by_node))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_runs_one_pod_per_eligible_node() -> Result<()> {
    let mut cluster = Cluster::start(3, ControllersConfig::default()).await?;
    let dss: Api<DaemonSet> = Api::namespaced(cluster.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    dss.create(&PostParams::default(), &daemonset()?).await?;

    let three = ["node-1", "node-2", "node-3"];
    let placed = eventually("one agent pod per node", || settled(&dss, &pods, &three)).await?;
    for (node, p) in &placed {
        // Bound by the scheduler through the pinning affinity.
        let pinned = p
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .and_then(|r| r.node_selector_terms.first())
            .and_then(|t| t.match_fields.as_ref())
            .and_then(|f| f.first())
            .and_then(|f| f.values.clone());
        assert_eq!(pinned, Some(vec![node.clone()]));
        let labels = p.metadata.labels.clone().unwrap_or_default();
        assert!(labels.contains_key(REVISION_HASH));
    }

    // A fourth node joins and gets its pod.
    cluster.add_node("node-4").await?;
    let four = ["node-1", "node-2", "node-3", "node-4"];
    eventually("a pod on the new node", || settled(&dss, &pods, &four)).await?;

    // Labelled out of the affinity: node-2 loses its pod.
    nodes
        .patch(
            "node-2",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": { "labels": { "example.com/no-agent": "true" } }
            })),
        )
        .await?;
    let rest = ["node-1", "node-3", "node-4"];
    let before = eventually("node-2's pod to go", || settled(&dss, &pods, &rest)).await?;

    // A new template rolls out to every node.
    dss.patch(
        "agent",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({
            "spec": { "template": { "spec": { "containers": [
                { "name": "agent", "image": "sleeper:v2" }
            ] } } }
        })),
    )
    .await?;
    let after = eventually("the new template on every node", || async {
        let Some(now) = settled(&dss, &pods, &rest).await? else {
            return Ok(None);
        };
        let replaced = now
            .iter()
            .all(|(node, p)| before.get(node).map(|b| &b.metadata.uid) != Some(&p.metadata.uid));
        Ok(replaced.then_some(now))
    })
    .await?;
    for p in after.values() {
        let image = p
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone());
        assert_eq!(image.as_deref(), Some("sleeper:v2"));
    }

    let events: Api<Event> = Api::namespaced(cluster.client.clone(), "default");
    for reason in ["SuccessfulCreate", "SuccessfulDelete"] {
        eventually(reason, || async {
            let found = events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .any(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.involved_object.kind.as_deref() == Some("DaemonSet")
                });
            Ok(found.then_some(()))
        })
        .await?;
    }

    // Deleting the DaemonSet takes its pods along.
    dss.delete("agent", &DeleteParams::default()).await?;
    eventually("the agent pods to be collected", || async {
        let left = pods
            .list(&ListParams::default().labels("app=agent"))
            .await?
            .items;
        Ok(left.is_empty().then_some(()))
    })
    .await?;
    Ok(())
}

fn deployment() -> Result<Deployment> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web", "namespace": "default" },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{ "name": "web", "image": "sleeper:v1" }]
                }
            }
        }
    }))?)
}

/// Ready, live pods of the Deployment.
async fn ready_web_pods(pods: &Api<Pod>) -> Result<Vec<Pod>> {
    Ok(pods
        .list(&ListParams::default().labels("app=web"))
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_a_failed_node_are_evicted_and_replaced_elsewhere() -> Result<()> {
    let config = ControllersConfig {
        node_monitor_grace_period: Duration::from_secs(3),
        pod_eviction_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let mut cluster = Cluster::start(3, config).await?;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    deployments
        .create(&PostParams::default(), &deployment()?)
        .await?;
    let running = eventually("three ready replicas", || async {
        let ready = ready_web_pods(&pods).await?;
        Ok((ready.len() == 3).then_some(ready))
    })
    .await?;
    let victim = node_of(&running[0]).context("a bound pod")?.to_string();
    let doomed: Vec<String> = running
        .iter()
        .filter(|p| node_of(p) == Some(victim.as_str()))
        .filter_map(|p| p.metadata.uid.clone())
        .collect();

    cluster.stop_node(&victim).await?;

    let node = eventually("the node to be tainted NoExecute", || async {
        let n = nodes.get(&victim).await?;
        let tainted = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| {
                ts.iter()
                    .any(|t| t.key == UNREACHABLE_TAINT && t.effect == "NoExecute")
            });
        Ok(tainted.then_some(n))
    })
    .await?;
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone());
    assert_eq!(ready.as_deref(), Some("Unknown"));

    // Evicted, force-deleted (the kubelet cannot confirm), and replaced.
    let replaced = eventually("replacements on healthy nodes", || async {
        let all = pods
            .list(&ListParams::default().labels("app=web"))
            .await?
            .items;
        let old_gone = !all
            .iter()
            .any(|p| p.metadata.uid.as_ref().is_some_and(|u| doomed.contains(u)));
        let ready = ready_web_pods(&pods).await?;
        Ok((old_gone && ready.len() == 3).then_some(ready))
    })
    .await?;
    assert!(
        replaced
            .iter()
            .all(|p| node_of(p).is_some_and(|n| n != victim))
    );
    // The node controller did it, as `kubectl describe pod` would show.
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), "default");
    for reason in ["TaintManagerEviction", "ForceDeleted"] {
        eventually(reason, || async {
            let found = events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .any(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.involved_object
                            .uid
                            .as_ref()
                            .is_some_and(|u| doomed.contains(u))
                });
            Ok(found.then_some(()))
        })
        .await?;
    }
    Ok(())
}
