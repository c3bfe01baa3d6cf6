//! `/version` and the health endpoints (`/healthz`, `/livez`, `/readyz`),
//! served without authentication like in Kubernetes.

use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::AppState;

/// How long `/readyz` waits for the store to answer.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/version", get(version))
        .route("/healthz", get(live))
        .route("/livez", get(live))
        .route("/readyz", get(ready))
}

/// The version kubectl's dispatcher reads: `minor` must stay a plain number,
/// since it picks `kubectl.1.<minor>` by it.
pub fn version_info() -> serde_json::Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-wasmkube",
        "gitCommit": option_env!("WASMKUBE_GIT_COMMIT").unwrap_or("unknown"),
        "gitTreeState": "clean",
        "buildDate": option_env!("WASMKUBE_BUILD_DATE").unwrap_or("1970-01-01T00:00:00Z"),
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": platform(),
    })
}

fn platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    format!("{}/{arch}", std::env::consts::OS)
}

async fn version() -> Response {
    axum::Json(version_info()).into_response()
}

fn text(code: StatusCode, body: String) -> Response {
    (
        code,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn verbose(query: &Option<String>) -> bool {
    query.as_deref().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "verbose" || p.starts_with("verbose="))
    })
}

async fn live(RawQuery(query): RawQuery) -> Response {
    if verbose(&query) {
        return text(
            StatusCode::OK,
            "[+]ping ok\nhealthz check passed\n".to_string(),
        );
    }
    text(StatusCode::OK, "ok".to_string())
}

/// Ready when the store answers a revision read in time.
async fn ready(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let store_ok = matches!(
        tokio::time::timeout(STORE_CHECK_TIMEOUT, state.store.current_revision()).await,
        Ok(Ok(_))
    );
    match (store_ok, verbose(&query)) {
        (true, false) => text(StatusCode::OK, "ok".to_string()),
        (true, true) => text(
            StatusCode::OK,
            "[+]ping ok\n[+]store ok\nreadyz check passed\n".to_string(),
        ),
        (false, _) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "[+]ping ok\n[-]store failed: reason withheld\nreadyz check failed\n".to_string(),
        ),
    }
}
