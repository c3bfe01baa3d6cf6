//! Cross-cutting HTTP middleware: request body limits answered with a JSON
//! `Status` (413), request tracing, and the 404 fallback.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures::FutureExt;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use wasmkube_api::status;

use crate::error::ApiError;

/// Largest request bodies, by route family.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Every API route.
    pub api: usize,
    /// Module uploads (`PUT /wasmkube/v1/modules/...`).
    pub module: usize,
}

impl BodyLimits {
    /// The limit that applies to a request for `path`.
    pub fn for_path(&self, path: &str) -> usize {
        if crate::modules::is_upload_path(path) {
            self.module
        } else {
            self.api
        }
    }
}

/// Enforce the body limit: a declared `Content-Length` over it is refused
/// before reading anything; a body streamed without one is cut off at the
/// limit (whatever reads it gets a length-limit error). Any 413 a handler or
/// extractor answers is turned into the Kubernetes `Status` form.
pub async fn limit_body(State(limits): State<BodyLimits>, req: Request, next: Next) -> Response {
    let limit = limits.for_path(req.uri().path());
    let version = req.version();
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return too_large(limit, version);
    }
    let req = req.map(|body| Body::new(http_body_util::Limited::new(body, limit)));
    let resp = next.run(req).await;
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json(&resp) {
        return too_large(limit, version);
    }
    resp
}

fn too_large(limit: usize, version: Version) -> Response {
    let mut resp = ApiError(status::too_large(limit)).into_response();
    // The unread rest of the body makes an HTTP/1 connection unusable; HTTP/2
    // resets just the stream (and forbids connection headers).
    if version <= Version::HTTP_11 {
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    resp
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"))
}

/// Log every request (method, path, status, latency) at debug level, and
/// answer a handler panic with a 500 `Status` instead of a reset stream: a
/// bug in one handler must not look like a network failure to clients.
pub async fn trace(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let version = req.version();
    let verb = crate::metrics::verb(&method, req.uri().query());
    let started = Instant::now();
    let inflight = crate::metrics::InFlight::start();
    let resp = match AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(resp) => resp,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(%method, %path, panic = %what, "request handler panicked");
            ApiError::internal("an internal error occurred while serving the request")
                .into_response()
        }
    };
    drop(inflight);
    crate::metrics::record(verb, resp.status().as_u16(), started.elapsed());
    tracing::debug!(
        %method,
        %path,
        ?version,
        status = resp.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    resp
}

/// A served path asked with a method it does not support.
pub async fn method_not_allowed(method: axum::http::Method) -> Response {
    ApiError(status::method_not_allowed(format!(
        "the server does not allow this method on the requested resource: {method}"
    )))
    .into_response()
}

/// Any path no route serves.
pub async fn not_found() -> Response {
    ApiError(status::failure(
        404,
        "NotFound",
        "the server could not find the requested resource",
    ))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::{get, post};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn boom() -> &'static str {
        panic!("handler bug")
    }

    async fn echo(body: axum::body::Bytes) -> String {
        body.len().to_string()
    }

    fn router() -> Router {
        let limits = BodyLimits {
            api: 16,
            module: 1024,
        };
        Router::new()
            .route("/boom", get(boom))
            .route("/echo", post(echo))
            .layer(axum::middleware::from_fn_with_state(limits, limit_body))
            .layer(axum::middleware::from_fn(trace))
    }

    async fn json_of(resp: Response) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok(serde_json::from_slice(&bytes)?)
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_status() -> Result<(), Box<dyn std::error::Error>> {
        let resp = router()
            .oneshot(Request::get("/boom").body(Body::empty())?)
            .await?;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let v = json_of(resp).await?;
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["reason"], "InternalError");
        Ok(())
    }

    #[tokio::test]
    async fn bodies_over_the_limit_get_413_status_with_or_without_length()
    -> Result<(), Box<dyn std::error::Error>> {
        let ok = router()
            .oneshot(Request::post("/echo").body(Body::from("0123456789"))?)
            .await?;
        assert_eq!(ok.status(), StatusCode::OK);

        let declared = router()
            .oneshot(Request::post("/echo").body(Body::from(vec![b'x'; 17]))?)
            .await?;
        assert_eq!(declared.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(json_of(declared).await?["reason"], "RequestEntityTooLarge");

        // No Content-Length: the stream is cut at the limit, and the
        // extractor's plain-text 413 becomes a Status.
        let chunks = futures::stream::iter(
            (0..8).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"xxxx"))),
        );
        let streamed = router()
            .oneshot(Request::post("/echo").body(Body::from_stream(chunks))?)
            .await?;
        assert_eq!(streamed.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            streamed
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        assert_eq!(json_of(streamed).await?["code"], 413);
        Ok(())
    }
}
