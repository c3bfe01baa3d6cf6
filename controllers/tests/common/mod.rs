//! Shared by the multi-node tests: an in-process API server, scheduler,
//! controller manager and several real kubelets, plus polling helpers.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio_util::sync::CancellationToken;
use wasmkube_controllers::ControllersConfig;
use wasmkube_runtime::KubeletConfig;

/// Runs forever, sleeping in `poll_oneoff` (one second per round) rather
/// than spinning.
pub const SLEEPER: &str = r#"
(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    ;; One relative clock subscription at 0: monotonic clock, 1 s.
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 1000000000))
    (loop $l
      (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
      (br $l))))
"#;

pub async fn client(path: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn push(client: &Client, name: &str, tag: &str) -> Result<()> {
    let req = http::Request::put(format!("/wasmkube/v1/modules/{name}/{tag}"))
        .header("content-type", "application/wasm")
        .body(wat::parse_str(SLEEPER)?)?;
    client.request_text(req).await.context("pushing a module")?;
    Ok(())
}

/// An API server, scheduler, controller manager and kubelets, each kubelet
/// stoppable on its own.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub client: Client,
    /// The admin kubeconfig the API server wrote, for real `kubectl`.
    pub kubeconfig: PathBuf,
    pub shutdown: CancellationToken,
    pub kubelets: HashMap<String, (CancellationToken, wasmkube_runtime::Kubelet)>,
}

impl Cluster {
    pub async fn start(nodes: usize, config: ControllersConfig) -> Result<Cluster> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir()?;
        let shutdown = CancellationToken::new();
        let running = wasmkube_apiserver::start(
            wasmkube_apiserver::Config {
                data_dir: dir.path().join("server"),
                bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: 0,
                shutdown_grace: Duration::from_secs(1),
                ..Default::default()
            },
            shutdown.clone(),
        )
        .await?;
        let client = client(&running.kubeconfig_path).await?;
        push(&client, "sleeper", "v1").await?;
        push(&client, "sleeper", "v2").await?;
        tokio::spawn(wasmkube_scheduler::run(
            client.clone(),
            wasmkube_scheduler::SchedulerConfig::default(),
            shutdown.clone(),
        ));
        tokio::spawn(wasmkube_controllers::run(
            client.clone(),
            config,
            shutdown.clone(),
        ));
        let mut cluster = Cluster {
            dir,
            client,
            kubeconfig: running.kubeconfig_path.clone(),
            shutdown,
            kubelets: HashMap::new(),
        };
        for i in 1..=nodes {
            cluster.add_node(&format!("node-{i}")).await?;
        }
        Ok(cluster)
    }

    pub async fn add_node(&mut self, name: &str) -> Result<()> {
        let mut config = KubeletConfig::new(name, self.dir.path().join(name));
        config.port = 0;
        config.proxy_port = 0;
        config.max_pods = 16;
        config.pooling = false;
        config.renew_interval = Duration::from_millis(500);
        config.status_update_interval = Duration::from_secs(1);
        let token = self.shutdown.child_token();
        let kubelet = wasmkube_runtime::start(config, self.client.clone(), token.clone()).await?;
        self.kubelets.insert(name.to_string(), (token, kubelet));
        Ok(())
    }

    pub async fn stop_node(&mut self, name: &str) -> Result<()> {
        let (token, kubelet) = self.kubelets.remove(name).context("no such kubelet")?;
        token.cancel();
        kubelet.done.await??;
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn node_of(p: &Pod) -> Option<&str> {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref())
}
