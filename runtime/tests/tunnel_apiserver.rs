//! The agent's dial-out tunnel against the real API server: a Node whose
//! kubelet port is closed still answers `pods/log` and `metrics.k8s.io`
//! through the tunnel the agent opened (here through a TCP relay the test
//! can cut), and the agent redials when its connection is cut.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::{closed_port, wait_for};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use wasmkube_runtime::logs::{ContainerLog, ContainerLogs, DEFAULT_MAX_LOG_BYTES, LogRegistry};
use wasmkube_runtime::stats::{PodReference, StatsOptions, StatsRegistry};
use wasmkube_runtime::tunnel::{TunnelConfig, TunnelOptions};

const NODE: &str = "edge-1";

/// A TCP relay in front of the API server whose connections the test can cut
/// (all at once), like a network partition.
struct Relay {
    port: u16,
    accepted: Arc<AtomicUsize>,
    generation: Arc<Mutex<CancellationToken>>,
}

impl Relay {
    async fn start(upstream: SocketAddr, shutdown: CancellationToken) -> Result<Relay> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let generation = Arc::new(Mutex::new(CancellationToken::new()));
        let (count, current) = (accepted.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let (mut down, _) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                count.fetch_add(1, Ordering::SeqCst);
                let cut = current
                    .lock()
                    .map(|g| g.clone())
                    .unwrap_or_else(|e| e.into_inner().clone());
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    // Returning drops both sockets: both ends see the cut.
                    tokio::select! {
                        _ = cut.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                    }
                });
            }
        });
        Ok(Relay {
            port,
            accepted,
            generation,
        })
    }

    fn cut(&self) {
        let mut g = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        g.cancel();
        *g = CancellationToken::new();
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

struct Api {
    base: String,
    client: reqwest::Client,
    admin: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.admin);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let code = resp.status();
        let v: Value = resp.json().await?;
        ensure!(code.is_success(), "{path}: {code} {v}");
        Ok(v)
    }

    async fn get_text(&self, path: &str) -> Result<(u16, String)> {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await?;
        Ok((resp.status().as_u16(), resp.text().await?))
    }
}

/// `Some` once `path` answers 200 with `expected`.
async fn log_is(api: &Api, path: &str, expected: &str) -> Result<Option<()>> {
    let (code, body) = api.get_text(path).await?;
    Ok((code == 200 && body == expected).then_some(()))
}

/// A client certificate for `node` signed by the cluster CA in `data_dir`
/// (what `POST /wasmkube/v1/join` issues), and its key.
fn node_credential(data_dir: &std::path::Path, node: &str) -> Result<(String, String)> {
    let pki = data_dir.join("pki");
    let ca = wasmkube_apiserver::pki::ClusterCa::new(
        &std::fs::read_to_string(pki.join("ca.crt"))?,
        &std::fs::read_to_string(pki.join("ca.key"))?,
    )?;
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .pem()?;
    Ok((ca.sign_node_client_cert(&csr, node)?, key.serialize_pem()))
}

/// Reads `resp`'s body into `seen` until it contains `wanted` (10 s at most).
async fn read_until(resp: &mut reqwest::Response, seen: &mut String, wanted: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(wanted) {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .with_context(|| format!("waiting for {wanted:?}; got {seen:?}"))??
            .with_context(|| format!("the stream ended before {wanted:?}; got {seen:?}"))?;
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    Ok(())
}

/// The real kubelet router with one pod's log and stats.
async fn kubelet_router(
    dir: &std::path::Path,
    shutdown: CancellationToken,
) -> Result<(axum::Router, ContainerLog, Arc<StatsRegistry>)> {
    let logs = Arc::new(LogRegistry::default());
    let log = ContainerLog::create(&dir.join("0.log"), DEFAULT_MAX_LOG_BYTES).await?;
    let mut out = Box::into_pin(wasmtime_wasi::cli::StdoutStream::async_stream(
        &log.stdout(),
    ));
    out.write_all(b"hello from the edge\nsecond line\n").await?;
    out.flush().await?;
    drop(out);
    logs.set(
        "default",
        "web",
        "uid-web",
        "main",
        ContainerLogs {
            dir: dir.to_path_buf(),
            current: Some(log.handle()),
            previous: None,
            waiting_reason: None,
        },
    );
    let stats = Arc::new(StatsRegistry::new(
        NODE,
        StatsOptions {
            interval: Duration::from_millis(100),
            window: Duration::from_secs(1),
        },
    ));
    tokio::spawn(wasmkube_runtime::stats::run_sampler(
        stats.clone(),
        shutdown,
    ));
    let router = wasmkube_runtime::server::router(
        logs,
        stats.clone(),
        wasmkube_runtime::http::HttpPods::new(),
    );
    Ok((router, log, stats))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_metrics_reach_a_kubelet_through_its_tunnel() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let node_user = format!("system:node:{NODE}");
    let running = wasmkube_apiserver::start(
        wasmkube_apiserver::Config {
            component_users: vec![node_user.clone()],
            ..common::apiserver_config(dir.path())
        },
        shutdown.clone(),
    )
    .await?;
    let node_token = running
        .tokens
        .get(&node_user)
        .cloned()
        .context("node token")?;
    let api = Api {
        base: running.url.clone(),
        client: reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(running.ca_pem.as_bytes())?)
            .timeout(Duration::from_secs(30))
            .build()?,
        admin: running.admin_token.clone(),
    };

    // The Node reports a kubelet port nothing listens on: only the tunnel
    // can reach it.
    api.call(
        reqwest::Method::POST,
        "/api/v1/nodes",
        Some(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})),
    )
    .await?;
    let mut node = api
        .call(reqwest::Method::GET, &format!("/api/v1/nodes/{NODE}"), None)
        .await?;
    node["status"] = json!({
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": closed_port().await?}},
        "conditions": [{"type": "Ready", "status": "True"}],
    });
    api.call(
        reqwest::Method::PUT,
        &format!("/api/v1/nodes/{NODE}/status"),
        Some(node),
    )
    .await?;
    let created = api
        .call(
            reqwest::Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": "hello:v1"}]}}),
            ),
        )
        .await?;
    let uid = created["metadata"]["uid"]
        .as_str()
        .context("pod uid")?
        .to_string();
    let log_path = "/api/v1/namespaces/default/pods/web/log";

    // No tunnel yet: the direct connection is refused.
    let (code, body) = api.get_text(log_path).await?;
    ensure!(code == 503, "{code} {body}");

    // Only node edge-1 (or an admin) may open edge-1's tunnel.
    let refused = api
        .client
        .get(format!("{}/wasmkube/v1/nodes/edge-2/tunnel", running.url))
        .bearer_auth(&node_token)
        .header("connection", "Upgrade")
        .header("upgrade", "wasmkube-tunnel/1")
        .send()
        .await?;
    ensure!(refused.status() == 403, "{}", refused.status());
    let anonymous = api
        .client
        .get(format!("{}/wasmkube/v1/nodes/{NODE}/tunnel", running.url))
        .send()
        .await?;
    ensure!(anonymous.status() == 401, "{}", anonymous.status());
    let not_upgrade = api
        .client
        .get(format!("{}/wasmkube/v1/nodes/{NODE}/tunnel", running.url))
        .bearer_auth(&node_token)
        .send()
        .await?;
    ensure!(not_upgrade.status() == 400, "{}", not_upgrade.status());

    // The agent dials out through the relay, with the client certificate
    // the join endpoint would have issued it.
    let (node_cert, node_key) = node_credential(&dir.path().join("server"), NODE)?;
    let upstream: SocketAddr = running
        .url
        .trim_start_matches("https://")
        .parse()
        .context("server address")?;
    let relay = Relay::start(upstream, shutdown.clone()).await?;
    let (router, log, stats) = kubelet_router(dir.path(), shutdown.clone()).await?;
    let pod = stats.add_pod(
        PodReference {
            name: "web".into(),
            namespace: "default".into(),
            uid,
        },
        jiff::Timestamp::now(),
    );
    let container = pod.start_container("main", Some(64 << 20));
    container
        .usage()
        .memory_bytes
        .store(5 << 20, Ordering::Relaxed);
    let tunnel = tokio::spawn(wasmkube_runtime::tunnel::run_with(
        TunnelConfig {
            server_url: format!("https://127.0.0.1:{}", relay.port),
            ca_pem: running.ca_pem.clone(),
            client_cert_pem: node_cert,
            client_key_pem: node_key,
            node_name: NODE.into(),
        },
        TunnelOptions {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            ..TunnelOptions::default()
        },
        router,
        shutdown.clone(),
    ));

    let expected = "hello from the edge\nsecond line\n";
    wait_for(
        "the log through the tunnel",
        Duration::from_secs(30),
        async || log_is(&api, log_path, expected).await,
    )
    .await?;
    let (code, body) = api.get_text(&format!("{log_path}?tailLines=1")).await?;
    ensure!(code == 200 && body == "second line\n", "{code} {body:?}");

    // kubectl logs -f: lines written later arrive on the open stream.
    let mut follow = api
        .client
        .get(format!("{}{log_path}?follow=true", api.base))
        .bearer_auth(&api.admin)
        .send()
        .await?;
    ensure!(follow.status() == 200, "{}", follow.status());
    let mut seen = String::new();
    read_until(&mut follow, &mut seen, "second line\n").await?;
    let mut out = Box::into_pin(wasmtime_wasi::cli::StdoutStream::async_stream(
        &log.stdout(),
    ));
    out.write_all(b"written while following\n").await?;
    out.flush().await?;
    read_until(&mut follow, &mut seen, "written while following\n").await?;
    ensure!(
        seen == "hello from the edge\nsecond line\nwritten while following\n",
        "{seen:?}"
    );
    drop(follow);
    drop(out);
    let expected = "hello from the edge\nsecond line\nwritten while following\n";

    // kubectl top pod: the stats scrape goes through the tunnel too.
    let metrics = wait_for("pod metrics", Duration::from_secs(30), async || {
        let (code, body) = api
            .get_text("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web")
            .await?;
        ensure!(code == 200 || code == 404, "{code} {body}");
        Ok((code == 200).then_some(body))
    })
    .await?;
    let m: Value = serde_json::from_str(&metrics)?;
    ensure!(m["containers"][0]["name"] == "main", "{m}");
    ensure!(m["containers"][0]["usage"]["memory"].is_string(), "{m}");

    // Cut the connection: the agent redials and logs work again.
    let before = relay.connections();
    ensure!(before >= 1, "no connection through the relay");
    relay.cut();
    wait_for(
        "a new tunnel connection",
        Duration::from_secs(30),
        async || Ok((relay.connections() > before).then_some(())),
    )
    .await?;
    wait_for(
        "the log through the new tunnel",
        Duration::from_secs(30),
        async || log_is(&api, log_path, expected).await,
    )
    .await?;

    shutdown.cancel();
    tunnel.await??;
    log.finish().await?;
    drop(container);
    drop(pod);
    Ok(())
}
