//! The kubelet's stats endpoints with real pods: `/stats/summary` and
//! `/metrics/resource` name the running pods and containers with the
//! figures the sandbox keeps, a pod's figures go when the pod does, and the
//! apiserver's `metrics.k8s.io` serves them as metrics-server would.

mod common;

use std::time::Duration;

use anyhow::Context;
use common::wait_for;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use wasmkube_runtime::KubeletConfig;

/// Spins forever in 3 pages (192 KiB) of linear memory.
const SPIN: &str = r#"
(module (memory (export "memory") 3) (func (export "_start") (loop $l (br $l))))
"#;

fn pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": "default", "labels": {"app": name} },
        "spec": {
            "nodeName": "node-1",
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "main",
                "image": "spin:v1",
                // Keeps the busy loop from taking a whole core from the test.
                "resources": {"limits": {"cpu": "200m"}}
            }]
        }
    }))?)
}

fn pod_stats<'a>(summary: &'a Value, name: &str) -> Option<&'a Value> {
    summary["pods"]
        .as_array()?
        .iter()
        .find(|p| p["podRef"]["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_follow_real_pods() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let running = common::start_apiserver(dir.path(), &shutdown).await?;
    let client = common::client(&running.kubeconfig_path).await?;
    common::push(&client, "spin", SPIN).await?;

    let mut config = KubeletConfig::new("node-1", dir.path().join("kubelet"));
    config.port = 0;
    config.proxy_port = 0;
    let kubelet = wasmkube_runtime::start(config, client.clone(), shutdown.clone()).await?;
    let base = format!("http://{}", kubelet.addr);
    let http = reqwest::Client::new();

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = pods.create(&PostParams::default(), &pod("spin")?).await?;
    let uid = created.metadata.uid.clone().unwrap_or_default();
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(pods.clone(), "spin", conditions::is_pod_running()),
    )
    .await??;

    // The running container shows its memory and, after a sampling
    // interval, a CPU rate.
    let summary = wait_for(
        "the spin pod's figures",
        Duration::from_secs(30),
        async || {
            let summary: Value = http
                .get(format!("{base}/stats/summary"))
                .send()
                .await?
                .json()
                .await?;
            let Some(p) = pod_stats(&summary, "spin") else {
                return Ok(None);
            };
            let c = &p["containers"][0];
            let ready = c["memory"]["workingSetBytes"].as_u64() > Some(0)
                && c["cpu"]["usageNanoCores"].as_u64() > Some(0);
            Ok(ready.then_some(summary))
        },
    )
    .await?;
    assert_eq!(summary["node"]["nodeName"], "node-1");
    let p = pod_stats(&summary, "spin").context("spin pod")?;
    assert_eq!(p["podRef"]["namespace"], "default");
    assert_eq!(p["podRef"]["uid"], uid.as_str());
    let c = &p["containers"][0];
    assert_eq!(c["name"], "main");
    // Three 64 KiB pages, plus whatever tables the module has.
    assert!(
        c["memory"]["workingSetBytes"].as_u64() >= Some(3 << 16),
        "{c}"
    );
    // Nobody gets more than the cores this machine has.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    assert!(
        c["cpu"]["usageNanoCores"].as_u64() <= Some(cores * 1_000_000_000),
        "{c}"
    );
    assert!(c["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0), "{c}");
    assert!(p["cpu"]["usageCoreNanoSeconds"].as_u64() >= c["cpu"]["usageCoreNanoSeconds"].as_u64());
    if cfg!(target_os = "linux") {
        assert!(summary["node"]["memory"]["workingSetBytes"].as_u64() > Some(0));
        assert!(summary["node"]["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0));
    }

    let text = http
        .get(format!("{base}/metrics/resource"))
        .send()
        .await?
        .text()
        .await?;
    let series = |name: &str, labels: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{labels} ")))
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let container = "{container=\"main\",namespace=\"default\",pod=\"spin\"}";
    assert!(
        series("container_memory_working_set_bytes", container) >= Some(f64::from(3u32 << 16)),
        "{text}"
    );
    assert!(
        series("container_cpu_usage_seconds_total", container) > Some(0.0),
        "{text}"
    );
    assert!(
        series(
            "pod_memory_working_set_bytes",
            "{namespace=\"default\",pod=\"spin\"}"
        )
        .is_some(),
        "{text}"
    );

    // The same figures through the apiserver, as kubectl top reads them.
    let metrics: Value = client
        .request(
            http::Request::get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/spin")
                .body(Vec::new())?,
        )
        .await?;
    assert_eq!(metrics["kind"], "PodMetrics");
    assert_eq!(metrics["containers"][0]["name"], "main");
    let memory = metrics["containers"][0]["usage"]["memory"]
        .as_str()
        .unwrap_or_default();
    assert!(
        memory.ends_with("Ki") || memory.ends_with("Mi"),
        "{metrics}"
    );
    let nodes: Value = client
        .request(http::Request::get("/apis/metrics.k8s.io/v1beta1/nodes").body(Vec::new())?)
        .await?;
    assert_eq!(nodes["items"][0]["metadata"]["name"], "node-1", "{nodes}");

    // Deleting the pod removes its figures.
    pods.delete("spin", &DeleteParams::default()).await?;
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(pods.clone(), "spin", conditions::is_deleted(&uid)),
    )
    .await??;
    wait_for(
        "the spin pod's figures to go",
        Duration::from_secs(30),
        async || {
            let summary: Value = http
                .get(format!("{base}/stats/summary"))
                .send()
                .await?
                .json()
                .await?;
            Ok(pod_stats(&summary, "spin").is_none().then_some(()))
        },
    )
    .await?;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), kubelet.done).await???;
    Ok(())
}
