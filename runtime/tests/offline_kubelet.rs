//! The kubelet without its apiserver: pods stored on the node start when the
//! apiserver cannot be reached, and once it can, the kubelet registers,
//! reports the status it buffered and keeps the pods it already runs.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use common::{client_via, closed_port, wait_for};
use k8s_openapi::api::core::v1::{Node, Pod, PodStatus};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wasmkube_runtime::KubeletConfig;
use wasmkube_runtime::local_state::{LocalState, LocalStateConfig};

/// Says hello, then spins until stopped.
const HELLO_SPIN: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "hello, offline\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 15))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 20)))
    (loop $l (br $l))))
"#;

fn pod(image: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "p", "namespace": "default" },
        "spec": {
            "nodeName": "node-1",
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "main",
                "image": image,
                // Keeps the busy loop from taking a whole core from the test.
                "resources": {"limits": {"cpu": "200m"}}
            }]
        }
    }))?)
}

/// The kubelet's log of `p/main`, when it serves one.
async fn kubelet_log(kubelet: SocketAddr) -> anyhow::Result<Option<String>> {
    let url = format!("http://{kubelet}/containerLogs/default/p/main");
    let answer = reqwest::get(&url).await?;
    if !answer.status().is_success() {
        return Ok(None);
    }
    Ok(Some(answer.text().await?))
}

/// The first container's status.
fn container(status: Option<&PodStatus>) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    status?.container_statuses.as_ref()?.first().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_pod_runs_with_no_apiserver() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("kubelet");
    // What an earlier run left: the module in the node's cache, the tag it
    // was pulled as, and the pod.
    let wasm = wat::parse_str(HELLO_SPIN)?;
    let hex = hex::encode(Sha256::digest(&wasm));
    std::fs::create_dir_all(data.join("modules"))?;
    std::fs::write(data.join(format!("modules/sha256-{hex}.wasm")), &wasm)?;
    std::fs::write(
        data.join("modules/images.json"),
        serde_json::to_vec(&serde_json::json!({ "hello:latest": format!("sha256:{hex}") }))?,
    )?;
    let mut stored = pod("hello:latest")?;
    stored.metadata.uid = Some("0b5f9d1e-offline".into());
    stored.metadata.resource_version = Some("42".into());
    let local = LocalState::open(LocalStateConfig::new(data.join("state")))?;
    local.save_pod(&stored).await?;

    let port = closed_port().await?;
    let client = Client::try_from(kube::Config::new(
        format!("http://127.0.0.1:{port}").parse()?,
    ))?;
    let mut config = KubeletConfig::new("node-1", &data);
    config.port = 0;
    config.proxy_port = 0;
    let shutdown = CancellationToken::new();
    let kubelet = wasmkube_runtime::start(config, client, shutdown.clone()).await?;

    // `:latest` is pulled on every start; the store cannot be reached, so
    // the module the tag was last pulled as runs.
    let log = wait_for("the pod's output", Duration::from_secs(60), async || {
        Ok(kubelet_log(kubelet.addr).await?.filter(|l| !l.is_empty()))
    })
    .await?;
    assert_eq!(log, "hello, offline\n");
    // Its status waits in the local state for the apiserver.
    let status = wait_for(
        "a stored Running status",
        Duration::from_secs(30),
        async || {
            let pods = local.load_pods().await;
            Ok(pods
                .into_iter()
                .find(|p| p.metadata.uid == stored.metadata.uid)
                .and_then(|p| p.status)
                .filter(|s| s.phase.as_deref() == Some("Running")))
        },
    )
    .await?;
    let c = container(Some(&status)).context("no container status")?;
    assert_eq!(c.image_id, format!("wasmkube://sha256:{hex}"));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), kubelet.done).await???;
    Ok(())
}

/// A TCP relay to `upstream` that drops every connection until opened.
async fn relay(upstream: SocketAddr) -> anyhow::Result<(SocketAddr, watch::Sender<bool>)> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let (open_tx, open_rx) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if !*open_rx.borrow() {
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok((addr, open_tx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_online_the_kubelet_reports_and_keeps_its_pod() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server_shutdown = CancellationToken::new();
    let running = common::start_apiserver(dir.path(), &server_shutdown).await?;
    let client = common::client(&running.kubeconfig_path).await?;
    common::push(&client, "hello", HELLO_SPIN).await?;

    let start = |client: Client, token: CancellationToken| {
        let mut config = KubeletConfig::new("node-1", dir.path().join("kubelet"));
        config.port = 0;
        config.proxy_port = 0;
        config.status_update_interval = Duration::from_secs(1);
        wasmkube_runtime::start(config, client, token)
    };
    // Online first: the pod runs and the node stores it.
    let first = CancellationToken::new();
    let kubelet = start(client.clone(), first.clone()).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("hello:v1")?)
        .await?;
    let uid = created.metadata.uid.clone().unwrap_or_default();
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(pods.clone(), "p", conditions::is_pod_running()),
    )
    .await??;
    first.cancel();
    tokio::time::timeout(Duration::from_secs(30), kubelet.done).await???;

    // The node restarts cut off from its apiserver.
    let upstream: SocketAddr = running
        .url
        .trim_start_matches("https://")
        .parse()
        .context("the apiserver's address")?;
    let (relay_addr, open) = relay(upstream).await?;
    let cut_off = client_via(&running.kubeconfig_path, Some(relay_addr)).await?;
    // Opened before the kubelet writes to it (opening clears the
    // temporary files of unfinished writes).
    let local = LocalState::open(LocalStateConfig::new(dir.path().join("kubelet/state")))?;
    let second = CancellationToken::new();
    let kubelet = start(cut_off, second.clone()).await?;
    wait_for("the pod's output", Duration::from_secs(60), async || {
        Ok(kubelet_log(kubelet.addr)
            .await?
            .filter(|l| l == "hello, offline\n"))
    })
    .await?;
    let offline = wait_for(
        "the status computed offline",
        Duration::from_secs(30),
        async || {
            let pods = local.load_pods().await;
            Ok(pods
                .into_iter()
                .find(|p| p.metadata.uid.as_deref() == Some(uid.as_str()))
                .and_then(|p| container(p.status.as_ref()))
                // The first kubelet's last status is there too at first.
                .filter(|c| {
                    c.restart_count > 0 && c.state.as_ref().is_some_and(|s| s.running.is_some())
                }))
        },
    )
    .await?;
    // The instance the first kubelet ran died with it: this is a restart.
    assert_eq!(offline.restart_count, 1);
    let in_api = container(pods.get("p").await?.status.as_ref()).context("no status")?;
    assert_eq!(in_api.restart_count, 0, "nothing reached the apiserver");

    // Back online: the node registers, the buffered status lands, and the
    // pod keeps its instance (same container, same start).
    open.send_replace(true);
    let nodes: Api<Node> = Api::all(client.clone());
    wait_for("the node heartbeat", Duration::from_secs(60), async || {
        let node = nodes.get("node-1").await?;
        let port = node
            .status
            .and_then(|s| s.daemon_endpoints)
            .and_then(|d| d.kubelet_endpoint)
            .map(|e| e.port);
        Ok((port == Some(i32::from(kubelet.addr.port()))).then_some(()))
    })
    .await?;
    let landed = wait_for("the buffered status", Duration::from_secs(60), async || {
        let c = container(pods.get("p").await?.status.as_ref());
        Ok(c.filter(|c| c.container_id == offline.container_id))
    })
    .await?;
    assert_eq!(landed.restart_count, 1);
    assert_eq!(
        landed.state, offline.state,
        "the container was not restarted"
    );

    // A change from the API (a new resourceVersion) reaches the stored copy
    // and leaves the instance alone.
    let patch = serde_json::json!({ "metadata": { "labels": { "touched": "yes" } } });
    pods.patch("p", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    wait_for(
        "the stored relabelled pod",
        Duration::from_secs(30),
        async || {
            let pods = local.load_pods().await;
            Ok(pods.into_iter().find(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key("touched"))
            }))
        },
    )
    .await?;
    let now = container(pods.get("p").await?.status.as_ref()).context("no status")?;
    assert_eq!(now.container_id, offline.container_id);
    assert_eq!(now.restart_count, 1);

    second.cancel();
    tokio::time::timeout(Duration::from_secs(30), kubelet.done).await???;
    server_shutdown.cancel();
    Ok(())
}
