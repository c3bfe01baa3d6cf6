//! Node lifecycle against a real in-process API server: a node whose Lease
//! stops being renewed turns Unknown and gets the unreachable taint; a
//! renewal removes the taint again.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio_util::sync::CancellationToken;
use wasmkube_controllers::ControllersConfig;
use wasmkube_controllers::node_lifecycle::{REASON_UNKNOWN, UNREACHABLE_TAINT};

async fn client(path: &std::path::Path, token: Option<&str>) -> Result<kube::Client> {
    let mut kc = Kubeconfig::read_from(path)?;
    if let Some(token) = token {
        for named in &mut kc.auth_infos {
            if let Some(auth) = named.auth_info.as_mut() {
                auth.token = Some(token.to_string().into());
            }
        }
    }
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn has_taint(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == UNREACHABLE_TAINT))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_is_marked_unknown_and_tainted_then_recovers() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let api_shutdown = CancellationToken::new();
    let running = wasmkube_apiserver::start(
        wasmkube_apiserver::Config {
            data_dir: dir.path().join("data"),
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            shutdown_grace: Duration::from_secs(1),
            component_users: vec!["system:kube-controller-manager".to_string()],
            ..Default::default()
        },
        api_shutdown.clone(),
    )
    .await?;
    let admin = client(&running.kubeconfig_path, None).await?;
    let token = running
        .tokens
        .get("system:kube-controller-manager")
        .context("controller-manager token")?;
    let cm = client(&running.kubeconfig_path, Some(token)).await?;

    let nodes: Api<Node> = Api::all(admin.clone());
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "kube-node-lease");
    let mut node = nodes
        .create(
            &PostParams::default(),
            &Node {
                metadata: ObjectMeta {
                    name: Some("edge1".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    node.status = Some(NodeStatus {
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("KubeletReady".into()),
            ..Default::default()
        }]),
        ..Default::default()
    });
    nodes
        .replace_status("edge1", &PostParams::default(), &node)
        .await?;
    let lease = leases
        .create(
            &PostParams::default(),
            &Lease {
                metadata: ObjectMeta {
                    name: Some("edge1".into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some("edge1".into()),
                    renew_time: Some(MicroTime(jiff::Timestamp::now())),
                    ..Default::default()
                }),
            },
        )
        .await?;

    let stop = CancellationToken::new();
    let config = ControllersConfig {
        node_monitor_grace_period: Duration::from_millis(500),
        ..Default::default()
    };
    let controllers = tokio::spawn(wasmkube_controllers::run(cm, config, stop.clone()));

    let stale = eventually("the node to be marked unreachable", || {
        let nodes = nodes.clone();
        async move {
            let n = nodes.get("edge1").await?;
            Ok(has_taint(&n).then_some(n))
        }
    })
    .await?;
    let ready = stale
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .cloned()
        .context("Ready condition")?;
    assert_eq!(ready.status, "Unknown");
    assert_eq!(ready.reason.as_deref(), Some(REASON_UNKNOWN));
    assert_eq!(
        ready.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );

    // The kubelet comes back: renewals resume (and keep going, so the node
    // cannot turn stale again while the test looks).
    let renewing = CancellationToken::new();
    let renewer = {
        let leases = leases.clone();
        let renewing = renewing.clone();
        tokio::spawn(async move {
            let mut lease = lease;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !renewing.is_cancelled() {
                tick.tick().await;
                if let Some(spec) = lease.spec.as_mut() {
                    spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
                }
                match leases
                    .replace("edge1", &PostParams::default(), &lease)
                    .await
                {
                    Ok(l) => lease = l,
                    Err(e) => return Err(anyhow::Error::from(e)),
                }
            }
            Ok(())
        })
    };
    eventually("the unreachable taint to be removed", || {
        let nodes = nodes.clone();
        async move {
            let n = nodes.get("edge1").await?;
            Ok((!has_taint(&n)).then_some(()))
        }
    })
    .await?;
    renewing.cancel();
    renewer.await??;

    stop.cancel();
    controllers.await??;
    api_shutdown.cancel();
    let _ = running.done.await;
    Ok(())
}
