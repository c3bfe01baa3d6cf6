//! The router without a socket (`tower::ServiceExt::oneshot`): the same
//! middleware stack and routes `start` serves, over a temporary store.

use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use wasmkube_apiserver::auth::Tokens;
use wasmkube_apiserver::limits::BodyLimits;
use wasmkube_apiserver::registry::Registry;
use wasmkube_apiserver::storage::Store;
use wasmkube_apiserver::storage::embedded::EmbeddedStore;
use wasmkube_apiserver::{AppState, app};

async fn body_of(resp: axum::response::Response) -> Result<Vec<u8>> {
    Ok(resp.into_body().collect().await?.to_bytes().to_vec())
}

#[tokio::test]
async fn app_serves_without_a_listener() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("store.redb"))?);
    let shutdown = CancellationToken::new();
    let registry = Registry::start(store.clone(), shutdown.clone())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let tokens = Arc::new(Tokens::load_or_create(&dir.path().join("tokens.csv"), &[])?);
    let token = tokens
        .by_user()
        .get("admin")
        .cloned()
        .context("admin token")?;
    let router = app(AppState {
        registry,
        store,
        tokens,
        limits: BodyLimits {
            api: 3 * 1024 * 1024,
            module: 1024,
        },
        tunnels: Default::default(),
        ca: None,
    });

    let resp = router
        .clone()
        .oneshot(Request::get("/version").body(Body::empty())?)
        .await?;
    ensure!(resp.status() == StatusCode::OK);
    let v: Value = serde_json::from_slice(&body_of(resp).await?)?;
    ensure!(v["minor"] == "33", "{v}");

    let resp = router
        .clone()
        .oneshot(Request::get("/api/v1").body(Body::empty())?)
        .await?;
    ensure!(resp.status() == StatusCode::UNAUTHORIZED);

    let authed = |uri: &str| Request::get(uri).header("Authorization", format!("Bearer {token}"));
    let resp = router
        .clone()
        .oneshot(authed("/api/v1").body(Body::empty())?)
        .await?;
    ensure!(resp.status() == StatusCode::OK);
    let v: Value = serde_json::from_slice(&body_of(resp).await?)?;
    ensure!(v["kind"] == "APIResourceList", "{v}");

    // The module limit applies to uploads only (1 KiB here).
    let resp = router
        .clone()
        .oneshot(
            Request::put("/wasmkube/v1/modules/big/v1")
                .header("Authorization", format!("Bearer {token}"))
                .body(Body::from(vec![0u8; 2048]))?,
        )
        .await?;
    ensure!(
        resp.status() == StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        resp.status()
    );
    shutdown.cancel();
    Ok(())
}
