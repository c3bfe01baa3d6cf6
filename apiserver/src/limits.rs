//! Cross-cutting HTTP middleware: request body limits answered with a JSON
//! `Status` (413), request tracing, the 404 fallback, and the API's request
//! limits — in-flight caps (429), open watches per user (429), the request
//! deadline (504) and the request body read timeout — with the audit log's
//! hook ([`protect`] outside authentication, [`admit`] inside it).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::FutureExt;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::StatusDetails;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmkube_api::status;

use crate::audit::AuditLog;
use crate::auth::{MASTERS_GROUP, UserInfo};
use crate::authz::Attributes;
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

pub(crate) fn is_json(resp: &Response) -> bool {
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

// ---------------------------------------------------------------------------
// Request limits.

/// Kubernetes' message when a request misses its deadline (`NewTimeoutError`).
const TIMEOUT_MESSAGE: &str =
    "Timeout: request did not complete within requested timeout - context deadline exceeded";
/// Kubernetes' message when the in-flight limit is reached.
const TOO_MANY_MESSAGE: &str = "Too many requests, please try again later.";
/// Subresources whose requests stream for as long as the client wants
/// (Kubernetes' `BasicLongRunningRequestCheck`).
const LONG_RUNNING_SUBRESOURCES: &[&str] = &["attach", "exec", "proxy", "log", "portforward"];

/// Limits on API requests and connections. Flag names and defaults follow
/// kube-apiserver where it has one.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Read requests (get, list) served at once before 429
    /// (`--max-requests-inflight`); 0 = no limit.
    pub max_requests_inflight: usize,
    /// Mutating requests served at once before 429
    /// (`--max-mutating-requests-inflight`); 0 = no limit.
    pub max_mutating_requests_inflight: usize,
    /// Watches one user may hold open at once before 429; 0 = no limit.
    pub max_watches_per_user: usize,
    /// Deadline for the response of a request that is not long-running
    /// (`--request-timeout`); a client's shorter `?timeout=` wins.
    pub request_timeout: Duration,
    /// Longest wait for the next piece of a request body; a client that
    /// stalls longer gets an error instead of holding its slot.
    pub body_read_timeout: Duration,
    /// Longest time an HTTP/1 client may take to send a request's headers
    /// (slow-header clients are cut off), kube-apiserver's 32 s.
    pub header_read_timeout: Duration,
    /// A connection with no request for this long is closed (HTTP/2 with
    /// GOAWAY), kube-apiserver's 90 s.
    pub idle_connection_timeout: Duration,
    /// Streams one HTTP/2 connection may open at once
    /// (`--http2-max-streams-per-connection`).
    pub http2_max_streams_per_connection: u32,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            max_watches_per_user: 1000,
            request_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(32),
            idle_connection_timeout: Duration::from_secs(90),
            http2_max_streams_per_connection: 1000,
        }
    }
}

/// How a request is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    /// A watch: not counted in flight and no deadline, but capped per user.
    Watch,
    /// Streams (logs, exec, attach, port-forward, proxy) and node tunnels:
    /// neither counted in flight nor given a deadline, as in Kubernetes.
    LongRunning,
    /// Module uploads and blob downloads: counted in flight (they hold
    /// memory), but a large module on a slow link may need longer than the
    /// request timeout; the body read timeout still applies.
    Transfer { mutating: bool },
    /// Everything else.
    Normal { mutating: bool },
}

impl RequestClass {
    /// Whether the request streams for as long as the client wants.
    pub fn is_long_running(self) -> bool {
        matches!(self, RequestClass::Watch | RequestClass::LongRunning)
    }
}

/// The class of a request with attributes `attrs` (parsed from `method` and
/// its path).
pub fn classify(method: &Method, attrs: &Attributes) -> RequestClass {
    // Kubernetes' split: only get, list and watch are read-only.
    let mutating = !attrs.is_read();
    if attrs.resource_request {
        if attrs.verb == "watch" {
            return RequestClass::Watch;
        }
        if attrs.verb == "proxy" || LONG_RUNNING_SUBRESOURCES.contains(&attrs.subresource.as_str())
        {
            return RequestClass::LongRunning;
        }
        return RequestClass::Normal { mutating };
    }
    let path = attrs.path.as_str();
    if path.starts_with("/wasmkube/v1/nodes/") && path.ends_with("/tunnel") {
        return RequestClass::LongRunning;
    }
    if (crate::modules::is_upload_path(path) && method == Method::PUT)
        || path.starts_with("/wasmkube/v1/blobs/")
    {
        return RequestClass::Transfer { mutating };
    }
    RequestClass::Normal { mutating }
}

/// The shared state of the request limits: semaphores, open watches per
/// user, and the audit log. Cheap to clone.
#[derive(Clone)]
pub struct RequestGuard(Arc<GuardState>);

struct GuardState {
    readonly: Option<Arc<Semaphore>>,
    mutating: Option<Arc<Semaphore>>,
    max_watches: usize,
    watches: Mutex<HashMap<String, usize>>,
    request_timeout: Duration,
    body_read_timeout: Duration,
    audit: AuditLog,
}

impl std::fmt::Debug for RequestGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestGuard")
            .field("request_timeout", &self.0.request_timeout)
            .field("max_watches", &self.0.max_watches)
            .finish_non_exhaustive()
    }
}

impl RequestGuard {
    /// The state for `limits`, recording into `audit`.
    pub fn new(limits: &ApiLimits, audit: AuditLog) -> Self {
        let semaphore = |n: usize| (n > 0).then(|| Arc::new(Semaphore::new(n)));
        Self(Arc::new(GuardState {
            readonly: semaphore(limits.max_requests_inflight),
            mutating: semaphore(limits.max_mutating_requests_inflight),
            max_watches: limits.max_watches_per_user,
            watches: Mutex::new(HashMap::new()),
            request_timeout: limits.request_timeout,
            body_read_timeout: limits.body_read_timeout,
            audit,
        }))
    }

    /// Watches `user` holds open now.
    pub fn open_watches(&self, user: &str) -> usize {
        self.0
            .watches
            .lock()
            .map(|w| w.get(user).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    fn inflight_permit(&self, mutating: bool) -> Result<Option<OwnedSemaphorePermit>, ()> {
        let semaphore = if mutating {
            &self.0.mutating
        } else {
            &self.0.readonly
        };
        match semaphore {
            None => Ok(None),
            Some(s) => s.clone().try_acquire_owned().map(Some).map_err(|_| ()),
        }
    }

    fn watch_permit(&self, user: &str) -> Result<Option<WatchPermit>, usize> {
        if self.0.max_watches == 0 {
            return Ok(None);
        }
        let Ok(mut watches) = self.0.watches.lock() else {
            // A poisoned map only loses the cap, never the service.
            return Ok(None);
        };
        let open = watches.entry(user.to_string()).or_insert(0);
        if *open >= self.0.max_watches {
            return Err(*open);
        }
        *open += 1;
        Ok(Some(WatchPermit {
            guard: self.clone(),
            user: user.to_string(),
        }))
    }
}

/// One open watch of a user, released on drop.
struct WatchPermit {
    guard: RequestGuard,
    user: String,
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        if let Ok(mut watches) = self.guard.0.watches.lock()
            && let Some(open) = watches.get_mut(&self.user)
        {
            *open = open.saturating_sub(1);
            if *open == 0 {
                watches.remove(&self.user);
            }
        }
    }
}

/// What [`protect`] learns about a request and [`admit`] completes: put in
/// the request's extensions for the layers in between.
pub struct RequestScope {
    guard: RequestGuard,
    /// The request's attributes, parsed once.
    pub attrs: Attributes,
    pub class: RequestClass,
    user: OnceLock<UserInfo>,
    impersonated: OnceLock<UserInfo>,
}

impl RequestScope {
    /// The authenticated caller, once authentication has run (`None` for
    /// anonymous paths and refused credentials).
    pub fn user(&self) -> Option<&UserInfo> {
        self.user.get()
    }

    /// Notes the user the request runs as when the caller impersonates
    /// someone (the audit log records both, as Kubernetes does).
    pub fn set_impersonated(&self, user: &UserInfo) {
        let _ = self.impersonated.set(user.clone());
    }

    /// The impersonated user, if any.
    pub fn impersonated(&self) -> Option<&UserInfo> {
        self.impersonated.get()
    }
}

/// Wraps `router` (the whole API, [`crate::app`]) in the outer request
/// limits: the audit record, the request deadline and the body read
/// timeout. [`admit`] must be inside authentication in `router` for the
/// in-flight and watch caps.
pub fn protect(router: Router, guard: RequestGuard) -> Router {
    router.layer(axum::middleware::from_fn_with_state(guard, bound))
}

/// The outer middleware (see [`protect`]), outside authentication as
/// Kubernetes' timeout and audit filters are, so refused credentials are
/// audited and slow authentication counts against the deadline.
pub async fn bound(State(guard): State<RequestGuard>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let received = jiff::Timestamp::now();
    let metrics_verb = crate::metrics::verb(req.method(), req.uri().query());
    let attrs = Attributes::from_request(req.method(), req.uri());
    let class = classify(req.method(), &attrs);
    let scope = Arc::new(RequestScope {
        guard: guard.clone(),
        attrs,
        class,
        user: OnceLock::new(),
        impersonated: OnceLock::new(),
    });
    req.extensions_mut().insert(scope.clone());
    let audit_id = crate::audit::audit_id(req.headers());
    let pending = guard.0.audit.begin(&req, &scope, &audit_id, received);
    let deadline = match class {
        RequestClass::Normal { .. } => Some(deadline(req.uri().query(), guard.0.request_timeout)),
        _ => None,
    };
    let read_timeout = guard.0.body_read_timeout;
    let req = req.map(|body| {
        if body.is_end_stream() || read_timeout.is_zero() {
            body
        } else {
            Body::new(ReadTimeoutBody::new(body, read_timeout))
        }
    });
    let mut resp = match deadline {
        Some(limit) => match tokio::time::timeout(limit, next.run(req)).await {
            Ok(resp) => resp,
            Err(_) => {
                crate::metrics::record(metrics_verb, 504, started.elapsed());
                tracing::debug!(
                    path = %scope.attrs.path,
                    timeout_ms = limit.as_millis() as u64,
                    "request timed out"
                );
                ApiError(status::failure(504, "Timeout", TIMEOUT_MESSAGE)).into_response()
            }
        },
        None => next.run(req).await,
    };
    if let Ok(v) = HeaderValue::from_str(&audit_id) {
        resp.headers_mut().insert(crate::audit::AUDIT_ID_HEADER, v);
    }
    match pending {
        Some(p) => p.finish(resp).await,
        None => resp,
    }
}

/// The request's deadline: the server's, or the client's `timeout` query
/// parameter when shorter (as kube-apiserver honours it).
fn deadline(query: Option<&str>, server: Duration) -> Duration {
    let asked = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "timeout")
            .and_then(|(_, v)| go_duration(&v))
    });
    match asked {
        Some(d) if !d.is_zero() && d < server => d,
        _ => server,
    }
}

/// A Go duration (`30s`, `1m30s`, `1.5h`, `250ms`); `None` when malformed.
pub fn go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() || rest.len() > 64 {
        return None;
    }
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// The inner middleware, inside authentication: records the caller for the
/// audit log, then applies the in-flight caps (429 with `Retry-After: 1`)
/// and the per-user watch cap. Members of `system:masters` are never
/// refused, as in Kubernetes' max-in-flight filter: the cluster's
/// administrators must get through to a server under load. Without
/// [`protect`] around the router it does nothing.
pub async fn admit(req: Request, next: Next) -> Response {
    let Some(scope) = req.extensions().get::<Arc<RequestScope>>().cloned() else {
        return next.run(req).await;
    };
    let Some(user) = req.extensions().get::<UserInfo>().cloned() else {
        // Anonymous paths (health, version, CA bundle): cheap, and probes
        // must answer under load.
        return next.run(req).await;
    };
    let masters = user.groups.iter().any(|g| g == MASTERS_GROUP);
    let _ = scope.user.set(user);
    let Some(user) = scope.user() else {
        return next.run(req).await;
    };
    let guard = &scope.guard;
    let permit: Option<Box<dyn std::any::Any + Send>> = match scope.class {
        RequestClass::LongRunning => None,
        RequestClass::Watch if masters => None,
        RequestClass::Watch => match guard.watch_permit(&user.name) {
            Ok(p) => p.map(|p| Box::new(p) as _),
            Err(open) => {
                tracing::debug!(user = %user.name, open, "watch refused: too many watches");
                return too_many_requests(format!(
                    "too many watches: user {:?} has {open} open, the limit is {}",
                    user.name, guard.0.max_watches
                ));
            }
        },
        RequestClass::Normal { mutating } | RequestClass::Transfer { mutating } => {
            match guard.inflight_permit(mutating) {
                Ok(p) => p.map(|p| Box::new(p) as _),
                // Masters may exceed the limit (Kubernetes does the same).
                Err(()) if masters => None,
                Err(()) => {
                    tracing::debug!(user = %user.name, mutating, "request refused: too many requests in flight");
                    return too_many_requests(TOO_MANY_MESSAGE.to_string());
                }
            }
        }
    };
    let resp = next.run(req).await;
    match permit {
        // Held until the response is sent: a large body still occupies
        // the server (Kubernetes releases when the handler returns, after
        // writing).
        Some(p) => hold(resp, p),
        None => resp,
    }
}

/// 429 `Status` with reason TooManyRequests, `details.retryAfterSeconds` and
/// (from [`ApiError`]) `Retry-After: 1`.
fn too_many_requests(message: String) -> Response {
    let mut s = status::too_many_requests(message);
    s.details = Some(StatusDetails {
        retry_after_seconds: Some(1),
        ..Default::default()
    });
    ApiError(s).into_response()
}

/// `resp` with `guard` kept alive until its body has been sent in full (or
/// dropped, when the client goes away).
pub(crate) fn hold<G: Send + 'static>(resp: Response, guard: G) -> Response {
    resp.map(|inner| {
        Body::new(HoldBody {
            inner,
            guard: Some(Box::new(guard)),
        })
    })
}

struct HoldBody {
    inner: Body,
    guard: Option<Box<dyn std::any::Any + Send>>,
}

impl HttpBody for HoldBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body read stalled: the client sent nothing for the read timeout.
#[derive(Debug, thiserror::Error)]
#[error("timed out reading the request body: nothing received for {0:?}")]
pub struct BodyReadTimeout(pub Duration);

/// A request body that fails when the client sends nothing for `idle`. The
/// clock starts when the handler waits for data, not when the request
/// arrived, so slow handlers do not eat the client's allowance.
struct ReadTimeoutBody {
    inner: Body,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ReadTimeoutBody {
    fn new(inner: Body, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: None,
        }
    }
}

impl HttpBody for ReadTimeoutBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.timer = None;
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = self.idle;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.timer = None;
                        Poll::Ready(Some(Err(Box::new(BodyReadTimeout(idle)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
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

    #[test]
    fn go_durations_and_deadlines() {
        assert_eq!(go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "10", "s", "5x", "-1s", "1e400s"] {
            assert_eq!(go_duration(bad), None, "{bad}");
        }
        let server = Duration::from_secs(60);
        assert_eq!(deadline(Some("timeout=5s"), server), Duration::from_secs(5));
        assert_eq!(deadline(Some("timeout=5m"), server), server);
        assert_eq!(deadline(Some("timeout=0s"), server), server);
        assert_eq!(deadline(Some("timeout=nope"), server), server);
        assert_eq!(deadline(None, server), server);
    }

    #[test]
    fn long_running_requests_are_told_apart() {
        use axum::http::Method;
        let class = |m: Method, path: &str| {
            let (p, q) = path.split_once('?').unwrap_or((path, ""));
            let attrs = crate::authz::attributes::parse(&m, p, Some(q).filter(|q| !q.is_empty()));
            classify(&m, &attrs)
        };
        assert_eq!(
            class(Method::GET, "/api/v1/namespaces/d/pods?watch=true"),
            RequestClass::Watch
        );
        assert_eq!(
            class(Method::GET, "/api/v1/namespaces/d/pods/p/log?follow=true"),
            RequestClass::LongRunning
        );
        assert_eq!(
            class(Method::POST, "/api/v1/namespaces/d/pods/p/portforward"),
            RequestClass::LongRunning
        );
        assert_eq!(
            class(Method::GET, "/wasmkube/v1/nodes/n1/tunnel"),
            RequestClass::LongRunning
        );
        assert_eq!(
            class(Method::PUT, "/wasmkube/v1/modules/m/v1"),
            RequestClass::Transfer { mutating: true }
        );
        assert_eq!(
            class(Method::GET, "/api/v1/namespaces/d/pods"),
            RequestClass::Normal { mutating: false }
        );
        assert_eq!(
            class(Method::PATCH, "/api/v1/namespaces/d/pods/p/status"),
            RequestClass::Normal { mutating: true }
        );
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
