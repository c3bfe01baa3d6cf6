//! `kubectl drain` with the real kubectl against a two-node cluster (an
//! in-process API server, scheduler, controller manager and two real
//! kubelets): the scheduler spreads a Deployment over both nodes; draining
//! one cordons it and evicts its pods through `pods/eviction`, and the
//! Deployment is whole again on the other node; `kubectl uncordon` undoes
//! the cordon.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{Context, Result, bail, ensure};
use common::{Cluster, eventually, is_ready, node_of};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use wasmkube_controllers::ControllersConfig;

const KUBECTL: &str = "/usr/bin/kubectl";
const REPLICAS: usize = 4;

/// The kubectl binary, or `None` (with a message) when it is absent outside
/// CI; in CI a missing kubectl is a failure.
/// The real kubectl; a missing one is a failure, never a skip
/// (`scripts/setup.sh` installs it).
fn kubectl_binary() -> Result<PathBuf> {
    let path = PathBuf::from(KUBECTL);
    if !path.is_file() {
        bail!(
            "{KUBECTL} is missing: the drain test needs the real kubectl (scripts/setup.sh installs it)"
        );
    }
    Ok(path)
}

/// Runs the real kubectl against the cluster on a blocking thread.
async fn kubectl(bin: &Path, kubeconfig: &Path, cache_dir: &Path, args: &[&str]) -> Result<Output> {
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache_dir)
        .args(args);
    let line = format!("kubectl {}", args.join(" "));
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .with_context(|| format!("running {line}"))?;
    eprintln!(
        "$ {line}\n[exit {:?}]\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// Like [`kubectl`], but the command must succeed; returns its stdout.
async fn kubectl_ok(
    bin: &Path,
    kubeconfig: &Path,
    cache_dir: &Path,
    args: &[&str],
) -> Result<String> {
    let out = kubectl(bin, kubeconfig, cache_dir, args).await?;
    ensure!(
        out.status.success(),
        "kubectl {} failed ({:?}): {}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn deployment() -> Result<Deployment> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web", "namespace": "default" },
        "spec": {
            "replicas": REPLICAS,
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

/// Every pod of the Deployment, terminating ones included.
async fn web_pods(pods: &Api<Pod>) -> Result<Vec<Pod>> {
    Ok(pods
        .list(&ListParams::default().labels("app=web"))
        .await?
        .items)
}

/// The Deployment's pods once exactly `REPLICAS` exist, none terminating,
/// all ready, and the Deployment reports them all ready and available.
async fn all_ready(deployments: &Api<Deployment>, pods: &Api<Pod>) -> Result<Option<Vec<Pod>>> {
    let d = deployments.get("web").await?;
    let status = d.status.unwrap_or_default();
    let want = i32::try_from(REPLICAS)?;
    let reported = status.observed_generation >= d.metadata.generation
        && status.replicas == Some(want)
        && status.ready_replicas == Some(want)
        && status.available_replicas == Some(want)
        && status.updated_replicas == Some(want);
    if !reported {
        return Ok(None);
    }
    let all = web_pods(pods).await?;
    let settled = all.len() == REPLICAS
        && all
            .iter()
            .all(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p));
    Ok(settled.then_some(all))
}

fn count_on(pods: &[Pod], node: &str) -> usize {
    pods.iter().filter(|p| node_of(p) == Some(node)).count()
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn unschedulable(node: &Node) -> bool {
    node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_moves_pods_and_leaves_the_node_cordoned() -> Result<()> {
    let bin = kubectl_binary()?;
    let cluster = Cluster::start(2, ControllersConfig::default()).await?;
    let cache = tempfile::tempdir()?;
    let kubeconfig = cluster.kubeconfig.clone();
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let nodes: Api<Node> = Api::all(cluster.client.clone());

    // Both nodes can take pods before the replicas are created.
    eventually("both nodes ready", || async {
        let list = nodes.list(&ListParams::default()).await?.items;
        let ready = list.iter().filter(|n| node_ready(n)).count();
        Ok((ready == 2).then_some(()))
    })
    .await?;
    deployments
        .create(&PostParams::default(), &deployment()?)
        .await?;
    let before = eventually("all replicas ready", || all_ready(&deployments, &pods)).await?;
    // The scheduler spreads one owner's replicas evenly.
    assert_eq!(count_on(&before, "node-1"), REPLICAS / 2, "{before:#?}");
    assert_eq!(count_on(&before, "node-2"), REPLICAS / 2, "{before:#?}");
    let drained: Vec<String> = before
        .iter()
        .filter(|p| node_of(p) == Some("node-1"))
        .filter_map(|p| p.metadata.uid.clone())
        .collect();

    let out = kubectl_ok(
        &bin,
        &kubeconfig,
        cache.path(),
        &[
            "drain",
            "node-1",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=120s",
        ],
    )
    .await?;
    assert!(out.contains("node/node-1 cordoned"), "{out}");
    assert!(out.contains("node/node-1 drained"), "{out}");

    // Cordoned, and kubectl waited for every evicted pod to be gone.
    assert!(unschedulable(&nodes.get("node-1").await?));
    let table = kubectl_ok(&bin, &kubeconfig, cache.path(), &["get", "node", "node-1"]).await?;
    assert!(table.contains("SchedulingDisabled"), "{table}");
    let now = web_pods(&pods).await?;
    assert_eq!(count_on(&now, "node-1"), 0, "{now:#?}");
    assert!(
        !now.iter()
            .any(|p| p.metadata.uid.as_ref().is_some_and(|u| drained.contains(u)))
    );

    // The Deployment is whole again, all on the node left.
    let after = eventually("all replicas ready on node-2", || async {
        let Some(ready) = all_ready(&deployments, &pods).await? else {
            return Ok(None);
        };
        Ok((count_on(&ready, "node-2") == REPLICAS).then_some(ready))
    })
    .await?;
    assert_eq!(count_on(&after, "node-1"), 0);
    // Still cordoned once the dust settled.
    assert!(unschedulable(&nodes.get("node-1").await?));

    let out = kubectl_ok(&bin, &kubeconfig, cache.path(), &["uncordon", "node-1"]).await?;
    assert!(out.contains("node/node-1 uncordoned"), "{out}");
    assert!(!unschedulable(&nodes.get("node-1").await?));
    let table = kubectl_ok(&bin, &kubeconfig, cache.path(), &["get", "node", "node-1"]).await?;
    assert!(!table.contains("SchedulingDisabled"), "{table}");
    Ok(())
}
