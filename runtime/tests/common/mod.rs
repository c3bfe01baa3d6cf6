//! Shared by the kubelet's integration tests: an in-process API server on a
//! temporary directory, a `kube::Client` from the admin kubeconfig it
//! writes, module pushes and polling.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio_util::sync::CancellationToken;
use wasmkube_apiserver::{Config, Running};

/// The API server's config for a test: data in `<dir>/server`, loopback
/// (the default address), a free port and a short shutdown grace.
pub fn apiserver_config(dir: &Path) -> Config {
    Config {
        data_dir: dir.join("server"),
        port: 0,
        shutdown_grace: Duration::from_secs(1),
        ..Config::default()
    }
}

/// Starts an API server with [`apiserver_config`], stopped by `shutdown`.
pub async fn start_apiserver(dir: &Path, shutdown: &CancellationToken) -> Result<Running> {
    Ok(wasmkube_apiserver::start(apiserver_config(dir), shutdown.clone()).await?)
}

/// A client for the user of `kubeconfig` (the server's admin kubeconfig).
pub async fn client(kubeconfig: &Path) -> Result<Client> {
    client_via(kubeconfig, None).await
}

/// Like [`client`], but reaching the server at `server` when given (a
/// relay in front of it); the certificate still names the server.
pub async fn client_via(kubeconfig: &Path, server: Option<SocketAddr>) -> Result<Client> {
    let mut kc = Kubeconfig::read_from(kubeconfig)?;
    if let Some(server) = server {
        for cluster in &mut kc.clusters {
            if let Some(c) = cluster.cluster.as_mut() {
                c.server = Some(format!("https://{server}"));
            }
        }
    }
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// Pushes the module `wat` to the cluster's module store as `<name>:v1`.
pub async fn push(client: &Client, name: &str, wat: &str) -> Result<()> {
    let req = http::Request::put(format!("/wasmkube/v1/modules/{name}/v1"))
        .header("content-type", "application/wasm")
        .body(wat::parse_str(wat)?)?;
    client.request_text(req).await.context("pushing a module")?;
    Ok(())
}

/// Polls `check` every 50 ms until it gives a value or `timeout` passes.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "not yet".to_string(),
            Err(e) => format!("{e:#}"),
        };
        ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A loopback port nothing listens on.
pub async fn closed_port() -> Result<u16> {
    let l = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    Ok(l.local_addr()?.port())
}
