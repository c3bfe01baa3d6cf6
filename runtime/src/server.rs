//! The kubelet's HTTP server: `/containerLogs/{ns}/{pod}/{container}` (the
//! apiserver proxies `pods/log` here), `/stats/summary` (the Summary API the
//! apiserver's `metrics.k8s.io` reads), `/metrics/resource` (the kubelet's
//! Prometheus resource metrics) and `/healthz`.
//!
//! Errors are Kubernetes `Status` objects with the code the apiserver
//! passes through unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::logs::{LogOptions, LogRegistry, LookupError, stream_log};
use crate::stats::StatsRegistry;

/// How many log streams (following ones included) are served at once; each
/// holds a file handle, a read buffer and a task.
pub const MAX_LOG_STREAMS: usize = 64;

#[derive(Clone)]
struct AppState {
    logs: Arc<LogRegistry>,
    stats: Arc<StatsRegistry>,
    streams: Arc<Semaphore>,
}

/// The kubelet HTTP routes.
pub fn app(logs: Arc<LogRegistry>, stats: Arc<StatsRegistry>) -> Router {
    app_with(logs, stats, MAX_LOG_STREAMS)
}

/// [`app`] serving at most `max_log_streams` log requests at once; more are
/// answered 429 with a `Retry-After`.
pub fn app_with(
    logs: Arc<LogRegistry>,
    stats: Arc<StatsRegistry>,
    max_log_streams: usize,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route("/stats/summary", get(stats_summary))
        .route("/metrics/resource", get(resource_metrics))
        .with_state(AppState {
            logs,
            stats,
            streams: Arc::new(Semaphore::new(max_log_streams)),
        })
}

/// The whole kubelet router: [`app`] and the HTTP pods' route
/// ([`pod_http_app`]). The TCP listener ([`serve`]) and the agent's tunnel
/// (`crate::tunnel`) serve this same router.
pub fn router(
    logs: Arc<LogRegistry>,
    stats: Arc<StatsRegistry>,
    http: crate::http::HttpPods,
) -> Router {
    app(logs, stats).merge(pod_http_app(http))
}

/// Serves [`router`] on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    logs: Arc<LogRegistry>,
    stats: Arc<StatsRegistry>,
    http: crate::http::HttpPods,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_router(listener, router(logs, stats, http), shutdown).await
}

/// Serves `app` (normally [`router`]) on `listener` until `shutdown`.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

/// `ANY /pods/{namespace}/{pod}/http/{port}/{*path}`: a request to a local
/// HTTP container, which sees `/{path}` (and the query) as its own URL.
pub fn pod_http_app(http: crate::http::HttpPods) -> Router {
    use axum::routing::any;
    Router::new()
        .route("/pods/{namespace}/{pod}/http/{port}", any(pod_http))
        .route("/pods/{namespace}/{pod}/http/{port}/", any(pod_http))
        .route("/pods/{namespace}/{pod}/http/{port}/{*path}", any(pod_http))
        .with_state(http)
}

async fn pod_http(
    State(http): State<crate::http::HttpPods>,
    Path(params): Path<HashMap<String, String>>,
    mut req: axum::extract::Request,
) -> Response {
    let param = |name: &str| params.get(name).cloned().unwrap_or_default();
    let Ok(port) = param("port").parse::<u16>() else {
        return bad_request(format!("invalid port {:?}", param("port")));
    };
    let key = crate::http::EndpointKey {
        namespace: param("namespace"),
        pod: param("pod"),
        port,
    };
    // The container's own path, still percent-encoded: what follows
    // `/pods/{namespace}/{pod}/http/{port}`.
    let raw = req.uri().path();
    let rest = raw.splitn(7, '/').nth(6).unwrap_or("");
    let prefix = raw
        .strip_suffix(rest)
        .unwrap_or(raw)
        .trim_end_matches('/')
        .to_string();
    let path_and_query = match req.uri().query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    match path_and_query.parse::<axum::http::Uri>() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(e) => return bad_request(format!("invalid path: {e}")),
    }
    let remote = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    if let Some(addr) = remote {
        req.extensions_mut().insert(crate::http::RemoteAddr(addr));
    }
    req.extensions_mut()
        .insert(crate::http::MatchedRoute(prefix));
    match http.serve(&key, req).await {
        Ok(response) => response,
        Err(e) => status(StatusCode::NOT_FOUND, "NotFound", e.to_string()),
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = wasmkube_api::status::to_json(&wasmkube_api::status::failure(
        code.as_u16(),
        reason,
        message,
    ));
    (code, axum::Json(body)).into_response()
}

fn bad_request(message: String) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message)
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v == "true" || v == "1")
}

fn number(q: &HashMap<String, String>, name: &str) -> Result<Option<i64>, String> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .map(Some)
            .map_err(|_| format!("invalid {name}: {v:?}")),
    }
}

/// Parses the query; the error is the message of a 400.
fn options(q: &HashMap<String, String>) -> Result<LogOptions, String> {
    let tail_lines = number(q, "tailLines")?;
    let limit_bytes = number(q, "limitBytes")?;
    let since_seconds = number(q, "sinceSeconds")?;
    if limit_bytes.is_some_and(|n| n < 1) {
        return Err("limitBytes: must be greater than 0".into());
    }
    if since_seconds.is_some_and(|n| n < 1) {
        return Err("sinceSeconds: must be greater than 0".into());
    }
    let mut since = match since_seconds {
        Some(s) => jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_secs(s))
            .ok(),
        None => None,
    };
    if let Some(t) = q.get("sinceTime") {
        since = Some(
            t.parse::<jiff::Timestamp>()
                .map_err(|e| format!("invalid sinceTime: {e}"))?,
        );
    }
    Ok(LogOptions {
        follow: flag(q, "follow"),
        // A negative tailLines means "all", as in Kubernetes.
        tail_lines: tail_lines.and_then(|n| u64::try_from(n).ok()),
        limit_bytes: limit_bytes.and_then(|n| u64::try_from(n).ok()),
        timestamps: flag(q, "timestamps"),
        since,
    })
}

/// The summary as of now (the host read first, then the registry).
async fn summary_now(stats: &StatsRegistry) -> (crate::stats::Summary, jiff::Timestamp) {
    let host = crate::stats::read_host().await;
    let now = jiff::Timestamp::now();
    let summary = stats.summary(&host, tokio::time::Instant::now(), now);
    (summary, now)
}

async fn stats_summary(State(state): State<AppState>) -> Response {
    let (summary, _) = summary_now(&state.stats).await;
    axum::Json(summary).into_response()
}

async fn resource_metrics(State(state): State<AppState>) -> Response {
    let (summary, now) = summary_now(&state.stats).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::stats::resource_metrics(&summary, now.as_millisecond()),
    )
        .into_response()
}

async fn container_logs(
    State(state): State<AppState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Ok(permit) = state.streams.clone().try_acquire_owned() else {
        let mut r = status(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "too many concurrent log requests, please try again later".into(),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return r;
    };
    let logs = &state.logs;
    let opts = match options(&q) {
        Ok(o) => o,
        Err(message) => return bad_request(message),
    };
    let previous = flag(&q, "previous");
    let source = match logs.lookup(&namespace, &pod, &container, previous) {
        Ok(s) => s,
        Err(LookupError::PodNotFound) => {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("pod \"{pod}\" not found on this node"),
            );
        }
        Err(LookupError::ContainerNotFound) => {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("container \"{container}\" in pod \"{pod}\" not found"),
            );
        }
        Err(LookupError::Waiting(reason)) => {
            return bad_request(format!(
                "container \"{container}\" in pod \"{pod}\" is waiting to start: {reason}"
            ));
        }
        Err(LookupError::NoPrevious) => {
            return bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{pod}\" not found"
            ));
        }
    };
    if previous && tokio::fs::metadata(&source.path).await.is_err() {
        return bad_request(format!(
            "previous terminated container \"{container}\" in pod \"{pod}\" not found"
        ));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        // Held until the stream ends (or its client goes away).
        let _permit = permit;
        if let Err(e) = stream_log(source, opts, tx).await {
            tracing::warn!(error = %e, "reading a container log failed");
        }
    });
    let stream = futures::StreamExt::map(ReceiverStream::new(rx), Ok::<Bytes, std::io::Error>);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| {
            status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                e.to_string(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{ContainerLog, ContainerLogs, DEFAULT_MAX_LOG_BYTES};
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    use tower::ServiceExt;

    fn stats() -> Arc<StatsRegistry> {
        Arc::new(StatsRegistry::new(
            "n1",
            crate::stats::StatsOptions::default(),
        ))
    }

    async fn get(app: Router, uri: &str) -> anyhow::Result<(StatusCode, String)> {
        let resp = app
            .oneshot(axum::http::Request::get(uri).body(Body::empty())?)
            .await?;
        let code = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((code, String::from_utf8_lossy(&body).into_owned()))
    }

    #[tokio::test]
    async fn logs_errors_and_content() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let registry = Arc::new(LogRegistry::default());
        let (code, _) = get(app(registry.clone(), stats()), "/containerLogs/default/p/c").await?;
        assert_eq!(code, StatusCode::NOT_FOUND);
        registry.set(
            "default",
            "p",
            "u1",
            "c",
            ContainerLogs {
                dir: dir.path().to_path_buf(),
                current: None,
                previous: None,
                waiting_reason: Some("ContainerCreating".into()),
            },
        );
        let (code, body) =
            get(app(registry.clone(), stats()), "/containerLogs/default/p/c").await?;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(
            body.contains(
                "container \\\"c\\\" in pod \\\"p\\\" is waiting to start: ContainerCreating"
            ),
            "{body}"
        );
        let (code, body) = get(
            app(registry.clone(), stats()),
            "/containerLogs/default/p/c?previous=true",
        )
        .await?;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(body.contains("previous terminated container"), "{body}");

        let log = ContainerLog::create(&dir.path().join("0.log"), DEFAULT_MAX_LOG_BYTES).await?;
        let mut out = Box::into_pin(wasmtime_wasi::cli::StdoutStream::async_stream(
            &log.stdout(),
        ));
        out.write_all(b"one\ntwo\nthree\n").await?;
        drop(out);
        registry.set(
            "default",
            "p",
            "u1",
            "c",
            ContainerLogs {
                dir: dir.path().to_path_buf(),
                current: Some(log.handle()),
                previous: None,
                waiting_reason: None,
            },
        );
        log.finish().await?;
        let (code, body) = get(
            app(registry.clone(), stats()),
            "/containerLogs/default/p/c?tailLines=2",
        )
        .await?;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(body, "two\nthree\n");
        // Following a finished container ends at EOF.
        let (code, body) = get(
            app(registry, stats()),
            "/containerLogs/default/p/c?follow=true",
        )
        .await?;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(body, "one\ntwo\nthree\n");
        Ok(())
    }

    #[tokio::test]
    async fn concurrent_log_requests_are_capped_with_429() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let registry = Arc::new(LogRegistry::default());
        let log = ContainerLog::create(&dir.path().join("0.log"), DEFAULT_MAX_LOG_BYTES).await?;
        registry.set(
            "default",
            "p",
            "u1",
            "c",
            ContainerLogs {
                dir: dir.path().to_path_buf(),
                current: Some(log.handle()),
                previous: None,
                waiting_reason: None,
            },
        );
        let app = app_with(registry, stats(), 1);
        // A follow of a running container holds its slot.
        let first = app
            .clone()
            .oneshot(
                axum::http::Request::get("/containerLogs/default/p/c?follow=true")
                    .body(Body::empty())?,
            )
            .await?;
        assert_eq!(first.status(), StatusCode::OK);
        let (code, body) = get(app.clone(), "/containerLogs/default/p/c").await?;
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
        assert!(body.contains("TooManyRequests"), "{body}");
        // The slot comes back when the stream ends.
        drop(first);
        log.finish().await?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (code, _) = get(app.clone(), "/containerLogs/default/p/c").await?;
            if code == StatusCode::OK {
                break;
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "slot never freed");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Ok(())
    }

    #[tokio::test]
    async fn stats_endpoints_report_registered_pods() -> anyhow::Result<()> {
        let stats = stats();
        let pod = stats.add_pod(
            crate::stats::PodReference {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u1".into(),
            },
            jiff::Timestamp::now(),
        );
        let run = pod.start_container("app", Some(64 << 20));
        run.usage()
            .memory_bytes
            .store(3 << 16, std::sync::atomic::Ordering::Relaxed);
        run.usage()
            .cpu_nanos
            .store(2_000_000, std::sync::atomic::Ordering::Relaxed);
        let logs = Arc::new(LogRegistry::default());
        let (code, body) = get(app(logs.clone(), stats.clone()), "/stats/summary").await?;
        assert_eq!(code, StatusCode::OK, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(v["node"]["nodeName"], "n1");
        assert_eq!(
            v["pods"][0]["podRef"],
            serde_json::json!({"name": "web", "namespace": "default", "uid": "u1"})
        );
        let c = &v["pods"][0]["containers"][0];
        assert_eq!(c["name"], "app");
        assert_eq!(c["memory"]["workingSetBytes"], 3 << 16);
        assert_eq!(c["cpu"]["usageCoreNanoSeconds"], 2_000_000);
        assert_eq!(v["pods"][0]["memory"]["workingSetBytes"], 3 << 16);
        if cfg!(target_os = "linux") {
            assert!(
                v["node"]["memory"]["workingSetBytes"].as_u64() > Some(0),
                "{v}"
            );
            assert!(
                v["node"]["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0),
                "{v}"
            );
        }

        let resp = app(logs, stats)
            .oneshot(axum::http::Request::get("/metrics/resource").body(Body::empty())?)
            .await?;
        assert_eq!(
            resp.headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let text = String::from_utf8(resp.into_body().collect().await?.to_bytes().to_vec())?;
        assert!(
            text.lines().any(|l| l.starts_with(
                "container_memory_working_set_bytes{container=\"app\",namespace=\"default\",pod=\"web\"} 196608 "
            )),
            "{text}"
        );
        drop(run);
        drop(pod);
        Ok(())
    }

    #[tokio::test]
    async fn healthz() -> anyhow::Result<()> {
        let (code, body) = get(app(Arc::new(LogRegistry::default()), stats()), "/healthz").await?;
        assert_eq!((code, body.as_str()), (StatusCode::OK, "ok"));
        Ok(())
    }
}
