//! Shared by the API server's integration tests: the router's state over a
//! temporary store (for `oneshot` tests), and a real server on loopback
//! with an HTTPS client that trusts its CA.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

pub mod etcd;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use wasmkube_apiserver::auth::Tokens;
use wasmkube_apiserver::limits::BodyLimits;
use wasmkube_apiserver::registry::Registry;
use wasmkube_apiserver::storage::Store;
use wasmkube_apiserver::storage::embedded::EmbeddedStore;
use wasmkube_apiserver::{AppState, Config, Running};

/// An embedded store in `<dir>/store.redb`.
pub fn embedded_store(dir: &Path) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(EmbeddedStore::open(&dir.join("store.redb"))?))
}

/// What `app` serves: a registry over `store` (stopped by `shutdown`),
/// tokens for `admin` and `users` in `<dir>/tokens.csv`, the API body
/// limit `start` uses, 1 KiB modules and no CA. Tests change the fields
/// they exercise.
pub async fn app_state(
    dir: &Path,
    store: Arc<dyn Store>,
    users: &[&str],
    shutdown: &CancellationToken,
) -> Result<AppState> {
    let registry = Registry::start(store.clone(), shutdown.clone())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let users: Vec<String> = users.iter().map(|u| u.to_string()).collect();
    let tokens = Arc::new(Tokens::load_or_create(&dir.join("tokens.csv"), &users)?);
    Ok(AppState {
        registry,
        store,
        tokens,
        limits: BodyLimits {
            api: 3 * 1024 * 1024,
            module: 1024,
        },
        tunnels: Default::default(),
        ca: None,
        service_accounts: Arc::new(
            wasmkube_apiserver::serviceaccount::ServiceAccountTokens::load_or_create(
                &dir.join("pki"),
                Default::default(),
            )?,
        ),
    })
}

/// `user`'s bearer token from the token file.
pub fn token_of(tokens: &Tokens, user: &str) -> Result<String> {
    tokens
        .by_user()
        .get(user)
        .cloned()
        .with_context(|| format!("no token for {user}"))
}

/// A real server's config: data in `dir`, loopback, a free port and a
/// short shutdown grace so tests end quickly.
pub fn server_config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        port: 0,
        shutdown_grace: Duration::from_secs(2),
        ..Config::default()
    }
}

/// Starts a real server with [`server_config`] (`start` installs the rustls
/// provider the HTTPS clients use too).
pub async fn start_server(dir: &Path, shutdown: &CancellationToken) -> Result<Running> {
    Ok(wasmkube_apiserver::start(server_config(dir), shutdown.clone()).await?)
}

/// An HTTPS client builder that trusts the cluster CA `ca_pem`.
pub fn https_client(ca_pem: &str) -> Result<reqwest::ClientBuilder> {
    Ok(reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes())?))
}
