//! The router without a socket (`tower::ServiceExt::oneshot`): the same
//! middleware stack and routes `start` serves, over a temporary store.

mod common;

use anyhow::{Result, ensure};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use wasmkube_apiserver::app;

async fn body_of(resp: axum::response::Response) -> Result<Vec<u8>> {
    Ok(resp.into_body().collect().await?.to_bytes().to_vec())
}

#[tokio::test]
async fn app_serves_without_a_listener() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let state = common::app_state(
        dir.path(),
        common::embedded_store(dir.path())?,
        &[],
        &shutdown,
    )
    .await?;
    let token = common::token_of(&state.tokens, "admin")?;
    let router = app(state);

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
