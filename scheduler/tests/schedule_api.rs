//! The scheduler against a real in-process API server: pods get bound
//! through `pods/binding`, a burst never overcommits a node the cache still
//! shows empty, and a pod that fits nowhere gets a Kubernetes-style
//! `FailedScheduling` event.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{
    Container, Event, Node, NodeCondition, NodeStatus, Pod, PodSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio_util::sync::CancellationToken;
use wasmkube_scheduler::SchedulerConfig;

struct Cluster {
    _dir: tempfile::TempDir,
    running: wasmkube_apiserver::Running,
    api_shutdown: CancellationToken,
}

async fn cluster() -> Result<Cluster> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let config = wasmkube_apiserver::Config {
        data_dir: dir.path().join("data"),
        bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        shutdown_grace: Duration::from_secs(1),
        component_users: vec!["system:kube-scheduler".to_string()],
        ..Default::default()
    };
    let api_shutdown = CancellationToken::new();
    let running = wasmkube_apiserver::start(config, api_shutdown.clone()).await?;
    Ok(Cluster {
        _dir: dir,
        running,
        api_shutdown,
    })
}

/// A client from the admin kubeconfig the server wrote, with another token.
async fn client(c: &Cluster, token: Option<&str>) -> Result<kube::Client> {
    let mut kc = Kubeconfig::read_from(&c.running.kubeconfig_path)?;
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

fn q(s: &str) -> Quantity {
    Quantity(s.to_string())
}

async fn add_node(client: &kube::Client, name: &str, cpu: &str, memory: &str) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut node = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/os".to_string(),
                "wasip1".to_string(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    let created = nodes.create(&PostParams::default(), &node).await?;
    node.metadata = created.metadata;
    node.status = Some(NodeStatus {
        allocatable: Some(BTreeMap::from([
            ("cpu".to_string(), q(cpu)),
            ("memory".to_string(), q(memory)),
            ("pods".to_string(), q("110")),
        ])),
        capacity: Some(BTreeMap::from([
            ("cpu".to_string(), q(cpu)),
            ("memory".to_string(), q(memory)),
            ("pods".to_string(), q("110")),
        ])),
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("KubeletReady".into()),
            ..Default::default()
        }]),
        ..Default::default()
    });
    nodes
        .replace_status(name, &PostParams::default(), &node)
        .await?;
    Ok(())
}

async fn add_pod(client: &kube::Client, name: &str, cpu: &str) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("hello:v1".into()),
                resources: Some(ResourceRequirements {
                    requests: Some(BTreeMap::from([("cpu".to_string(), q(cpu))])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    pods.create(&PostParams::default(), &pod).await?;
    Ok(())
}

/// Polls `check` until it returns Some or the deadline passes.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_is_bound_without_overcommit_and_leftover_gets_failed_scheduling() -> Result<()> {
    let c = cluster().await?;
    let admin = client(&c, None).await?;
    let token = c
        .running
        .tokens
        .get("system:kube-scheduler")
        .context("scheduler token")?
        .clone();
    let sched_client = client(&c, Some(&token)).await?;
    add_node(&admin, "node1", "2", "1Gi").await?;
    // Five pods of 500m on a 2-CPU node, created before the scheduler
    // starts so they arrive as one burst: exactly four fit.
    for i in 0..5 {
        add_pod(&admin, &format!("p{i}"), "500m").await?;
    }
    let stop = CancellationToken::new();
    let config = SchedulerConfig {
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
        ..Default::default()
    };
    let scheduler = tokio::spawn(wasmkube_scheduler::run(sched_client, config, stop.clone()));

    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let events: Api<Event> = Api::namespaced(admin.clone(), "default");
    let failed = eventually("a FailedScheduling event", || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await?;
            Ok(list
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("FailedScheduling")))
        }
    })
    .await?;
    assert_eq!(
        failed.message.as_deref(),
        Some("0/1 nodes are available: 1 Insufficient cpu.")
    );
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert_eq!(
        failed.source.and_then(|s| s.component).as_deref(),
        Some("default-scheduler")
    );

    let bound = eventually("four bound pods", || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&Default::default()).await?;
            let bound: Vec<Pod> = list
                .items
                .into_iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("node1"))
                .collect();
            Ok((bound.len() >= 4).then_some(bound))
        }
    })
    .await?;
    assert_eq!(bound.len(), 4, "the node has room for four pods only");

    let scheduled = eventually("Scheduled events", || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await?;
            let msgs: Vec<String> = list
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("Scheduled"))
                .filter_map(|e| e.message)
                .collect();
            Ok((msgs.len() >= 4).then_some(msgs))
        }
    })
    .await?;
    let first = bound
        .first()
        .and_then(|p| p.metadata.name.clone())
        .unwrap_or_default();
    assert!(
        scheduled.contains(&format!("Successfully assigned default/{first} to node1")),
        "{scheduled:?}"
    );

    // Room appears: a second node; the leftover pod lands there.
    add_node(&admin, "node2", "2", "1Gi").await?;
    eventually("the fifth pod on node2", || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&Default::default()).await?;
            Ok(list
                .items
                .iter()
                .any(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("node2"))
                .then_some(()))
        }
    })
    .await?;

    stop.cancel();
    scheduler.await??;
    c.api_shutdown.cancel();
    let _ = c.running.done.await;
    Ok(())
}
