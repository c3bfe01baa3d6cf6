//! The kubelet against a real in-process apiserver: node registration,
//! lease, a pod run to completion with its logs, image pull errors, and
//! deletion.

mod common;

use std::time::Duration;

use anyhow::Context;
use common::{client, push};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use tokio_util::sync::CancellationToken;
use wasmkube_runtime::KubeletConfig;

const HELLO: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "hello from wasm\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 20)))))
"#;

const EXIT3: &str = r#"
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 3))))
"#;

const SPIN: &str = r#"
(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))
"#;

fn waiting_reason(p: Option<&Pod>) -> Option<String> {
    p.and_then(|p| p.status.as_ref())
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.clone())
}

fn pod(name: &str, image: &str, restart_policy: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": "default" },
        "spec": {
            "nodeName": "node-1",
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 0,
            "containers": [{ "name": "main", "image": image }]
        }
    }))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_runs_pods_against_the_apiserver() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let running = common::start_apiserver(dir.path(), &shutdown).await?;
    let client = client(&running.kubeconfig_path).await?;

    // Push a module to the cluster's module store.
    push(&client, "hello", HELLO).await?;

    let mut config = KubeletConfig::new("node-1", dir.path().join("kubelet"));
    config.port = 0;
    config.proxy_port = 0;
    config.renew_interval = Duration::from_secs(1);
    let kubelet = wasmkube_runtime::start(config, client.clone(), shutdown.clone()).await?;

    // Node and lease.
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get("node-1").await?;
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("kubernetes.io/os").map(String::as_str),
        Some("wasip1")
    );
    let status = node.status.unwrap_or_default();
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status);
    assert_eq!(ready.as_deref(), Some("True"));
    let port = status
        .daemon_endpoints
        .and_then(|d| d.kubelet_endpoint)
        .map(|e| e.port);
    assert_eq!(port, Some(i32::from(kubelet.addr.port())));
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    tokio::time::timeout(
        Duration::from_secs(20),
        await_condition(leases, "node-1", |l: Option<&Lease>| l.is_some()),
    )
    .await??;

    // A pod runs to completion.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("hello", "hello:v1", "Never")?)
        .await?;
    let done = tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(pods.clone(), "hello", |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref())
                .and_then(|s| s.phase.as_deref())
                == Some("Succeeded")
        }),
    )
    .await??
    .context("pod vanished")?;
    let cs = done
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default();
    let terminated = cs
        .first()
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.clone());
    assert_eq!(terminated.as_ref().map(|t| t.exit_code), Some(0));
    assert_eq!(
        terminated.and_then(|t| t.reason).as_deref(),
        Some("Completed")
    );

    // Its log, straight from the kubelet.
    let url = format!("http://{}/containerLogs/default/hello/main", kubelet.addr);
    let body = reqwest::get(&url).await?.text().await?;
    assert_eq!(body, "hello from wasm\n");
    // And through the apiserver, the way kubectl reads it.
    let via_api = pods.logs("hello", &Default::default()).await?;
    assert_eq!(via_api, "hello from wasm\n");

    // Events were recorded.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let list = events.list(&Default::default()).await?;
        if list
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Started"))
        {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no Started event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An unknown module cannot be pulled.
    pods.create(&PostParams::default(), &pod("nope", "nope:v1", "Always")?)
        .await?;
    let waiting = tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(pods.clone(), "nope", |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref())
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
                .is_some_and(|r| r == "ErrImagePull" || r == "ImagePullBackOff")
        }),
    )
    .await??
    .context("pod vanished")?;
    let message = waiting
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.into_iter().next())
        .and_then(|c| c.state)
        .and_then(|s| s.waiting)
        .and_then(|w| w.message)
        .unwrap_or_default();
    assert!(message.contains("nope"), "{message}");

    // A crashing container is restarted with back-off.
    push(&client, "exit3", EXIT3).await?;
    pods.create(&PostParams::default(), &pod("crash", "exit3:v1", "Always")?)
        .await?;
    let crashing = tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(pods.clone(), "crash", |p: Option<&Pod>| {
            waiting_reason(p).as_deref() == Some("CrashLoopBackOff")
        }),
    )
    .await??
    .context("pod vanished")?;
    let cs = crashing
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.into_iter().next())
        .context("no container status")?;
    assert!(cs.restart_count >= 1);
    let last = cs.last_state.and_then(|s| s.terminated);
    assert_eq!(last.map(|t| t.exit_code), Some(3));

    // A busy loop runs until deleted; deletion interrupts it.
    push(&client, "spin", SPIN).await?;
    pods.create(&PostParams::default(), &pod("spin", "spin:v1", "Always")?)
        .await?;
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(pods.clone(), "spin", conditions::is_pod_running()),
    )
    .await??;

    // Deletion: the kubelet finishes it and the pod disappears.
    for name in ["hello", "nope", "crash", "spin"] {
        let uid = pods.get(name).await?.metadata.uid;
        pods.delete(name, &DeleteParams::default()).await?;
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(
                pods.clone(),
                name,
                conditions::is_deleted(&uid.unwrap_or_default()),
            ),
        )
        .await??;
    }

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), kubelet.done).await???;
    Ok(())
}

/// A kubelet restart keeps the pod object (same uid) and starts its
/// container again, counting the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_restart_resyncs_without_recreating_pods() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server_shutdown = CancellationToken::new();
    let running = common::start_apiserver(dir.path(), &server_shutdown).await?;
    let client = client(&running.kubeconfig_path).await?;
    push(&client, "spin", SPIN).await?;

    let start = |token: CancellationToken| {
        let mut config = KubeletConfig::new("node-1", dir.path().join("kubelet"));
        config.port = 0;
        config.proxy_port = 0;
        wasmkube_runtime::start(config, client.clone(), token)
    };
    let first = CancellationToken::new();
    let kubelet = start(first.clone()).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("spin", "spin:v1", "Always")?)
        .await?;
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(pods.clone(), "spin", conditions::is_pod_running()),
    )
    .await??;
    first.cancel();
    tokio::time::timeout(Duration::from_secs(30), kubelet.done).await???;

    let second = CancellationToken::new();
    let kubelet = start(second.clone()).await?;
    let restarted = tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(pods.clone(), "spin", |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref())
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .is_some_and(|c| {
                    c.restart_count == 1 && c.state.as_ref().is_some_and(|s| s.running.is_some())
                })
        }),
    )
    .await??
    .context("pod vanished")?;
    assert_eq!(restarted.metadata.uid, created.metadata.uid);

    let uid = restarted.metadata.uid.unwrap_or_default();
    pods.delete("spin", &DeleteParams::default()).await?;
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(pods.clone(), "spin", conditions::is_deleted(&uid)),
    )
    .await??;
    second.cancel();
    server_shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), kubelet.done).await???;
    Ok(())
}
