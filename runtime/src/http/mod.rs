//! HTTP pods: containers that serve HTTP requests, one fresh wasm instance
//! per request, instead of running as a long-lived command.
//!
//! Two shapes, chosen by what the binary is:
//! - a component exporting `wasi:http/incoming-handler` is served with
//!   wasmtime-wasi-http ([`wasi_http`]);
//! - a core (preview 1) module of a pod annotated `wasmkube.io/http: wagi`
//!   is served as a WAGI (CGI over WASI) program ([`wagi`]).
//!
//! A pod worker hands every container attempt to [`run_container`], which
//! asks the sandbox for a request handler: a command gets `None` and runs
//! as before, an HTTP container is registered in [`HttpPods`] under its
//! [`EndpointKey`] until the pod is deleted (no new requests, in-flight ones
//! finish) or the container is stopped (in-flight ones are cut). The node
//! proxy, the kubelet's `/pods/{ns}/{pod}/http/{port}/…` route and httpGet
//! probes all reach the container through [`HttpPods::serve`].
//!
//! Every request instance gets the container's memory limit and CPU
//! throttle, and the request a deadline (`wasmkube.io/request-timeout`,
//! 30 s by default) after which it is interrupted and answered 504.

pub mod outbound;
pub mod wagi;
pub mod wasi_http;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::logs::LogStream;
use crate::sandbox::{ContainerRun, ExitStatus, Preopen, Sandbox, SandboxError, Usage};
pub use outbound::AllowedHosts;

/// Bodies of requests and responses.
pub type Body = axum::body::Body;

/// The pod annotation that makes a preview 1 module a WAGI HTTP container.
pub const HTTP_ANNOTATION: &str = "wasmkube.io/http";
/// The pod annotation with each request's deadline (`30s`, `500ms`, `2m`, or seconds).
pub const REQUEST_TIMEOUT_ANNOTATION: &str = "wasmkube.io/request-timeout";
/// The pod annotation listing the hosts wasi:http components may call.
pub const ALLOWED_HOSTS_ANNOTATION: &str = "wasmkube.io/allowed-outbound-hosts";
/// A request's deadline without the annotation.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The port of an HTTP container without container ports.
pub const DEFAULT_PORT: u16 = 80;
/// The largest request body handed to a WAGI module (on stdin).
pub const MAX_REQUEST_BODY: usize = 16 << 20;
/// The largest CGI response a WAGI module may write (on stdout).
pub const MAX_RESPONSE: usize = 64 << 20;

/// (namespace, pod name, container port) of a local HTTP container.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The container's port.
    pub port: u16,
}

impl std::fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.pod, self.port)
    }
}

/// Why a request could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// No HTTP container at that key on this node (never was, not yet
    /// prepared, or stopped taking requests).
    #[error("no HTTP container serves port {} of pod {}/{} on this node", .0.port, .0.namespace, .0.pod)]
    NotFound(EndpointKey),
}

/// How outgoing requests to `<svc>.<ns>` reach Services (implemented by the node proxy).
#[async_trait::async_trait]
pub trait ServiceRouter: Send + Sync + 'static {
    /// Sends `req` to a ready endpoint of Service `service` in `namespace`
    /// (its port `port`, or its first port).
    async fn route(
        &self,
        namespace: &str,
        service: &str,
        port: Option<u16>,
        req: http::Request<Body>,
    ) -> http::Response<Body>;
}

/// The node's [`ServiceRouter`], once one is set; shared with every
/// request instance so a router set later is used by running pods too.
#[derive(Clone, Default)]
pub struct RouterSlot(Arc<RwLock<Option<Arc<dyn ServiceRouter>>>>);

impl RouterSlot {
    /// The router, if one is set.
    pub fn get(&self) -> Option<Arc<dyn ServiceRouter>> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, router: Option<Arc<dyn ServiceRouter>>) {
        match self.0.write() {
            Ok(mut g) => *g = router,
            Err(poisoned) => *poisoned.into_inner() = router,
        }
    }
}

/// Serves requests for one HTTP container: a fresh instance per request.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. Never fails: guest failures are 5xx answers.
    async fn handle(&self, req: http::Request<Body>) -> http::Response<Body>;
}

/// Where the request came from, as a request extension (the kubelet route
/// and the node proxy set it); WAGI's `REMOTE_ADDR`.
#[derive(Clone, Copy, Debug)]
pub struct RemoteAddr(pub std::net::SocketAddr);

/// The route prefix a request matched before reaching the container, as a
/// request extension; WAGI's `SCRIPT_NAME` / `X_MATCHED_ROUTE`. Without it
/// the container is mounted at `/`.
#[derive(Clone, Debug)]
pub struct MatchedRoute(pub String);

/// Everything a request instance of one container attempt gets.
pub struct HttpSpec {
    /// `wasm://…`, for tracing.
    pub id: String,
    /// The module's digest, as prepared.
    pub digest: String,
    /// The module's bytes, to prepare it again if it was evicted.
    pub module_path: PathBuf,
    /// The pod asked for WAGI (`wasmkube.io/http: wagi`).
    pub wagi: bool,
    /// The container's environment (after the CGI variables for WAGI).
    pub env: Vec<(String, String)>,
    /// Directories to preopen.
    pub preopens: Vec<Preopen>,
    /// Linear memory cap of each request instance.
    pub memory_limit: u64,
    /// CPU cap of each request instance, in millicores.
    pub cpu_limit_millis: Option<u64>,
    /// The container's stdout (wasi:http components print here).
    pub stdout: LogStream,
    /// The container's stderr.
    pub stderr: LogStream,
    /// The container's usage: each request's CPU time is added.
    pub usage: Arc<Usage>,
    /// Each request's deadline.
    pub timeout: Duration,
    /// Hosts wasi:http components may call.
    pub allowed_hosts: AllowedHosts,
    /// Where `<svc>.<ns>` calls go.
    pub router: RouterSlot,
    /// Cancelled when the container is stopped: running requests end (503).
    pub stop: CancellationToken,
    /// The container's endpoint (`SERVER_PORT`, log lines).
    pub key: EndpointKey,
    /// The node's address (`SERVER_NAME`).
    pub server_name: String,
}

/// What a pod says about one of its containers' HTTP serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// Where the container would be registered.
    pub key: EndpointKey,
    /// `wasmkube.io/http: wagi`.
    pub wagi: bool,
    /// Each request's deadline.
    pub timeout: Duration,
    /// Hosts wasi:http components may call.
    pub allowed_hosts: AllowedHosts,
    /// The node's address (`SERVER_NAME`).
    pub server_name: String,
}

impl HttpOptions {
    /// Reads the pod's annotations and the container's ports. Unreadable
    /// annotation values fall back to the defaults (with a log line).
    pub fn of(pod: &Pod, container: &Container, node_ip: &str) -> HttpOptions {
        let annotations = pod.metadata.annotations.as_ref();
        let annotation = |name: &str| annotations.and_then(|a| a.get(name)).map(String::as_str);
        let timeout = match annotation(REQUEST_TIMEOUT_ANNOTATION) {
            Some(v) => parse_duration(v).unwrap_or_else(|| {
                tracing::warn!(
                    value = v,
                    "unreadable {REQUEST_TIMEOUT_ANNOTATION}; using 30s"
                );
                DEFAULT_REQUEST_TIMEOUT
            }),
            None => DEFAULT_REQUEST_TIMEOUT,
        };
        HttpOptions {
            key: EndpointKey {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                pod: pod.metadata.name.clone().unwrap_or_default(),
                port: container_port(container),
            },
            wagi: annotation(HTTP_ANNOTATION)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("wagi")),
            timeout,
            allowed_hosts: AllowedHosts::parse(annotation(ALLOWED_HOSTS_ANNOTATION).unwrap_or("")),
            server_name: node_ip.to_string(),
        }
    }
}

/// The HTTP port of a container: its port named `http`, else its first TCP
/// port, else 80.
pub fn container_port(container: &Container) -> u16 {
    let ports = container.ports.as_deref().unwrap_or_default();
    let tcp = |p: &&k8s_openapi::api::core::v1::ContainerPort| {
        p.protocol.as_deref().is_none_or(|proto| proto == "TCP")
    };
    ports
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .or_else(|| ports.iter().find(tcp))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_PORT)
}

/// `30s`, `500ms`, `2m`, `1h`, or a plain number of seconds; positive.
pub fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    let split = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let n: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (seconds.is_finite() && seconds > 0.0 && seconds < 1e9)
        .then(|| Duration::from_secs_f64(seconds))
}

/// One registered container.
struct Endpoint {
    handler: Arc<dyn Handler>,
    /// Requests being served; closed and awaited when the container drains.
    inflight: TaskTracker,
}

/// Local HTTP containers of this node, registered by pod workers.
#[derive(Clone, Default)]
pub struct HttpPods {
    endpoints: Arc<Mutex<HashMap<EndpointKey, Arc<Endpoint>>>>,
    router: RouterSlot,
}

impl HttpPods {
    /// No containers, no router.
    pub fn new() -> Self {
        HttpPods::default()
    }

    /// Sets the router outgoing `<svc>.<ns>` calls go through (the node proxy).
    pub fn set_router(&self, router: Arc<dyn ServiceRouter>) {
        self.router.set(Some(router));
    }

    /// The router slot handed to request instances.
    pub fn router(&self) -> RouterSlot {
        self.router.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EndpointKey, Arc<Endpoint>>> {
        match self.endpoints.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Serves one request on a local HTTP container; Err(NotFound) when no such container.
    pub async fn serve(
        &self,
        key: &EndpointKey,
        req: http::Request<Body>,
    ) -> Result<http::Response<Body>, HttpError> {
        let endpoint = self
            .lock()
            .get(key)
            .cloned()
            .ok_or_else(|| HttpError::NotFound(key.clone()))?;
        // Taken under no lock; a container that starts draining now still
        // waits for this request.
        let _inflight = endpoint.inflight.token();
        Ok(endpoint.handler.handle(req).await)
    }

    /// Whether a local HTTP container takes requests at `key`.
    pub fn contains(&self, key: &EndpointKey) -> bool {
        self.lock().contains_key(key)
    }

    /// The keys of every registered container.
    pub fn keys(&self) -> Vec<EndpointKey> {
        self.lock().keys().cloned().collect()
    }

    /// Serves `handler` at `key` until `drain` is cancelled (no new
    /// requests; returns `Exited(0)` once in-flight ones finished) or `stop`
    /// is (returns `Killed`; the handler ends its requests itself).
    pub async fn register(
        &self,
        key: EndpointKey,
        handler: Arc<dyn Handler>,
        drain: CancellationToken,
        stop: CancellationToken,
    ) -> ExitStatus {
        let endpoint = Arc::new(Endpoint {
            handler,
            inflight: TaskTracker::new(),
        });
        if let Some(old) = self.lock().insert(key.clone(), endpoint.clone()) {
            // A previous attempt that has not unregistered yet: it takes no
            // more requests either way.
            old.inflight.close();
        }
        tracing::info!(endpoint = %key, "HTTP container takes requests");
        let drained = tokio::select! {
            () = drain.cancelled() => true,
            () = stop.cancelled() => false,
        };
        {
            let mut endpoints = self.lock();
            if endpoints
                .get(&key)
                .is_some_and(|e| Arc::ptr_eq(e, &endpoint))
            {
                endpoints.remove(&key);
            }
        }
        endpoint.inflight.close();
        if !drained {
            return ExitStatus::Killed;
        }
        tokio::select! {
            () = endpoint.inflight.wait() => {
                tracing::info!(endpoint = %key, "HTTP container drained");
                ExitStatus::Exited(0)
            }
            () = stop.cancelled() => ExitStatus::Killed,
        }
    }
}

/// Runs one container attempt: an HTTP container is served until `drain`
/// or `run.stop`, anything else runs as a command.
pub async fn run_container(
    pods: &HttpPods,
    sandbox: &dyn Sandbox,
    run: ContainerRun,
    options: HttpOptions,
    drain: CancellationToken,
) -> Result<ExitStatus, SandboxError> {
    let spec = Arc::new(HttpSpec {
        id: run.id.clone(),
        digest: run.digest.clone(),
        module_path: run.module_path.clone(),
        wagi: options.wagi,
        env: run.env.clone(),
        preopens: run.preopens.clone(),
        memory_limit: run.memory_limit,
        cpu_limit_millis: run.cpu_limit_millis,
        stdout: run.stdout.clone(),
        stderr: run.stderr.clone(),
        usage: run.usage.clone(),
        timeout: options.timeout,
        allowed_hosts: options.allowed_hosts,
        router: pods.router(),
        stop: run.stop.clone(),
        key: options.key.clone(),
        server_name: options.server_name,
    });
    match sandbox.http_handler(spec).await? {
        None => sandbox.run(run).await,
        Some(handler) => Ok(pods
            .register(options.key, handler, drain, run.stop.clone())
            .await),
    }
}

/// A plain-text answer.
pub(crate) fn text(status: http::StatusCode, message: impl Into<String>) -> http::Response<Body> {
    let mut message = message.into();
    message.push('\n');
    let mut response = http::Response::new(Body::from(message));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests;
