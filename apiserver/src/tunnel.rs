//! Agent tunnels: how the API server reaches kubelets that accept no inbound
//! connection (agents behind NAT or a firewall, on the edge).
//!
//! The agent dials out: `GET /wasmkube/v1/nodes/{name}/tunnel` over HTTP/1.1
//! with `Upgrade: wasmkube-tunnel/1`, authenticated as `system:node:{name}`.
//! The server answers `101 Switching Protocols` and then plays the HTTP/2
//! *client* over the upgraded stream, while the agent serves its kubelet
//! router as the HTTP/2 server. One TCP connection thus carries any number of
//! concurrent kubelet requests (log streams, stats scrapes) in the direction
//! opposite to the one it was opened in.
//!
//! [`Tunnels`] keeps at most one tunnel per node: a newer one replaces (and
//! closes) the older, since an agent that reconnects after a partition may
//! do so before the server noticed the old connection died. A tunnel leaves
//! the registry as soon as its connection ends. [`kubelet_request`] sends
//! through the node's tunnel when there is one and otherwise connects to the
//! Node's `daemonEndpoints.kubeletEndpoint` directly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use wasmkube_api::status;

use crate::AppState;
use crate::auth::{MASTERS_GROUP, UserInfo};
use crate::error::ApiError;

/// The `Upgrade` protocol token of a tunnel.
pub const PROTOCOL: &str = "wasmkube-tunnel/1";
/// The user name prefix of node credentials.
const NODE_USER_PREFIX: &str = "system:node:";
/// How long a direct connection to a kubelet may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings on an idle tunnel: a partition that leaves the TCP
/// connection half-open must not keep a dead tunnel registered for long
/// (requests would wait on it instead of failing over to the direct path).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The path of node `name`'s tunnel endpoint.
pub fn tunnel_path(name: &str) -> String {
    format!("/wasmkube/v1/nodes/{name}/tunnel")
}

/// The open tunnels, by node name. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Tunnels {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    by_node: Mutex<HashMap<String, Entry>>,
    next_id: AtomicU64,
    /// Cancelled when the server shuts down: every tunnel closes.
    shutdown: CancellationToken,
}

struct Entry {
    /// Tells this tunnel apart from a newer one of the same node.
    id: u64,
    sender: SendRequest<Body>,
    /// Closes this tunnel's connection (when a newer one replaces it).
    close: CancellationToken,
}

impl std::fmt::Debug for Tunnels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnels")
            .field("nodes", &self.nodes())
            .finish()
    }
}

impl Tunnels {
    /// An empty registry whose tunnels all close when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                shutdown,
                ..Inner::default()
            }),
        }
    }

    /// The nodes with an open tunnel, sorted.
    pub fn nodes(&self) -> Vec<String> {
        let mut names: Vec<String> = self.map().keys().cloned().collect();
        names.sort();
        names
    }

    /// Whether `node` has an open tunnel.
    pub fn is_connected(&self, node: &str) -> bool {
        self.map().contains_key(node)
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // The map is consistent after every statement that changes it, so a
        // panic elsewhere while holding the lock leaves nothing half-done.
        self.inner
            .by_node
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a tunnel for `node`, closing the one it replaces.
    fn insert(&self, node: &str, sender: SendRequest<Body>, close: CancellationToken) -> u64 {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let old = self
            .map()
            .insert(node.to_string(), Entry { id, sender, close });
        if let Some(old) = old {
            tracing::info!(node, "a newer tunnel replaces the node's previous one");
            old.close.cancel();
        }
        id
    }

    /// Forgets `node`'s tunnel if it is still the one numbered `id`.
    fn remove(&self, node: &str, id: u64) {
        let mut map = self.map();
        if map.get(node).is_some_and(|e| e.id == id) {
            map.remove(node);
        }
    }

    /// A ready sender on `node`'s tunnel, if it has a live one.
    async fn sender(&self, node: &str) -> Option<SendRequest<Body>> {
        let (id, mut sender) = {
            let map = self.map();
            let e = map.get(node)?;
            (e.id, e.sender.clone())
        };
        match sender.ready().await {
            Ok(()) => Some(sender),
            Err(e) => {
                // Its connection has ended; the serving task removes it too,
                // but a request arriving first goes direct.
                tracing::debug!(node, error = %e, "tunnel no longer usable");
                self.remove(node, id);
                None
            }
        }
    }

    /// Sends `req` to the kubelet of `node` (a Node object): through the
    /// node's tunnel when it has one, else directly to the address and port
    /// it reports. `req`'s URI is the kubelet path and query
    /// (`/containerLogs/...`). The error says why the kubelet was not reached.
    pub async fn kubelet_request(
        &self,
        node: &Value,
        mut req: http::Request<Body>,
    ) -> Result<http::Response<Body>, String> {
        let name = node
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".to_string());
        if !name.is_empty()
            && let Some(mut sender) = self.sender(name).await
        {
            // HTTP/2 wants an absolute URI (it becomes :scheme and
            // :authority); the node name is a valid authority.
            *req.uri_mut() = format!("http://{name}{path_and_query}")
                .parse()
                .map_err(|e| format!("invalid kubelet URI: {e}"))?;
            *req.version_mut() = Version::HTTP_2;
            req.headers_mut().remove(header::HOST);
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("through the node's tunnel: {}", error_chain(&e)))?;
            return Ok(resp.map(Body::new));
        }
        let Some((host, port)) = crate::logs::kubelet_endpoint(node) else {
            return Err(
                "the node has no tunnel and does not report a kubelet address and port".into(),
            );
        };
        direct(&host, port, &path_and_query, req)
            .await
            .map_err(|e| format!("at {}: {e}", authority(&host, port)))
    }
}

/// [`Tunnels::kubelet_request`] with the server's tunnels.
pub async fn kubelet_request(
    state: &AppState,
    node: &Value,
    req: http::Request<Body>,
) -> Result<http::Response<Body>, String> {
    state.tunnels.kubelet_request(node, req).await
}

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// One HTTP/1.1 request on a fresh plain connection to a kubelet.
async fn direct(
    host: &str,
    port: u16,
    path_and_query: &str,
    mut req: http::Request<Body>,
) -> Result<http::Response<Body>, String> {
    let tcp = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(format!("connecting: {e}")),
        Err(_) => return Err(format!("connecting: timed out after {CONNECT_TIMEOUT:?}")),
    };
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| error_chain(&e))?;
    // The connection lives as long as the response body is read; dropping
    // the body (the client went away) ends it.
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "kubelet connection ended with an error");
        }
    });
    *req.uri_mut() = path_and_query
        .parse()
        .map_err(|e| format!("invalid kubelet path: {e}"))?;
    *req.version_mut() = Version::HTTP_11;
    let host_header = HeaderValue::from_str(&authority(host, port))
        .map_err(|_| format!("invalid kubelet address {host}"))?;
    req.headers_mut().insert(header::HOST, host_header);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| error_chain(&e))?;
    Ok(resp.map(Body::new))
}

/// Every cause of an error, joined: hyper's top-level message alone hides
/// whether the connection was refused, reset or timed out.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// `GET /wasmkube/v1/nodes/{name}/tunnel`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/wasmkube/v1/nodes/{name}/tunnel", get(open))
}

/// Whether `user` may open node `name`'s tunnel: the node itself or a
/// cluster admin. The authorizer enforces this too; checking here as well
/// keeps a tunnel from being hijacked should its rules ever be loosened.
pub fn may_open(user: &UserInfo, name: &str) -> bool {
    user.name.strip_prefix(NODE_USER_PREFIX) == Some(name)
        || user.groups.iter().any(|g| g == MASTERS_GROUP)
}

/// A DNS-1123 subdomain, what Node names are.
fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether a comma-separated header lists `token` (case-insensitive).
fn header_lists(req: &Request, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

async fn open(State(state): State<AppState>, Path(name): Path<String>, req: Request) -> Response {
    match accept(&state.tunnels, &name, req) {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

fn accept(tunnels: &Tunnels, name: &str, mut req: Request) -> Result<Response, ApiError> {
    let Some(user) = req.extensions().get::<UserInfo>().cloned() else {
        return Err(ApiError(status::unauthorized()));
    };
    if !may_open(&user, name) {
        return Err(ApiError(status::forbidden(format!(
            "nodes {name:?} is forbidden: User {:?} cannot open the tunnel of node {name:?}: \
             only the node itself may",
            user.name
        ))));
    }
    if !valid_node_name(name) {
        return Err(ApiError::bad_request(format!(
            "invalid node name {name:?}: must be a DNS-1123 subdomain"
        )));
    }
    if req.version() != Version::HTTP_11
        || !header_lists(&req, header::UPGRADE, PROTOCOL)
        || !header_lists(&req, header::CONNECTION, "upgrade")
        || req
            .extensions()
            .get::<hyper::upgrade::OnUpgrade>()
            .is_none()
    {
        return Err(ApiError::bad_request(format!(
            "a tunnel is an HTTP/1.1 upgrade: send `Connection: Upgrade` and `Upgrade: {PROTOCOL}` \
             (with ALPN http/1.1, not h2)"
        )));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let tunnels = tunnels.clone();
    let node = name.to_string();
    let user_name = user.name;
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::info!(node, error = %e, "tunnel upgrade failed");
                return;
            }
        };
        serve(tunnels, node, user_name, upgraded).await;
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    resp.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    Ok(resp)
}

/// Plays the HTTP/2 client on an upgraded tunnel connection until it ends,
/// keeping the node's entry in `tunnels` meanwhile.
async fn serve(tunnels: Tunnels, node: String, user: String, io: hyper::upgrade::Upgraded) {
    let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .handshake::<_, Body>(io)
        .await;
    let (sender, conn) = match handshake {
        Ok(pair) => pair,
        Err(e) => {
            tracing::info!(node, error = %error_chain(&e), "tunnel HTTP/2 handshake failed");
            return;
        }
    };
    let close = tunnels.inner.shutdown.child_token();
    let id = tunnels.insert(&node, sender, close.clone());
    tracing::info!(node, %user, "node tunnel opened");
    let why = tokio::select! {
        res = conn => match res {
            Ok(()) => "the agent closed it".to_string(),
            Err(e) => error_chain(&e),
        },
        _ = close.cancelled() => "replaced or shutting down".to_string(),
    };
    tunnels.remove(&node, id);
    tracing::info!(node, reason = %why, "node tunnel closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn only_the_node_itself_or_an_admin_may_open_a_tunnel() {
        assert!(may_open(&user("system:node:n1", &["system:nodes"]), "n1"));
        assert!(!may_open(&user("system:node:n1", &["system:nodes"]), "n2"));
        assert!(!may_open(&user("system:node:", &["system:nodes"]), "n1"));
        assert!(!may_open(&user("n1", &[]), "n1"));
        assert!(may_open(&user("admin", &[MASTERS_GROUP]), "n2"));
    }

    #[test]
    fn node_names_are_dns_subdomains() {
        assert!(valid_node_name("edge-1.example"));
        assert!(!valid_node_name(""));
        assert!(!valid_node_name("Edge"));
        assert!(!valid_node_name("-a"));
        assert!(!valid_node_name("a..b"));
        assert!(!valid_node_name(&"a".repeat(64)));
    }

    #[tokio::test]
    async fn without_a_tunnel_or_an_address_the_request_fails_clearly() {
        let tunnels = Tunnels::default();
        let node = serde_json::json!({"metadata": {"name": "n1"}, "status": {}});
        let err = tunnels
            .kubelet_request(&node, http::Request::new(Body::empty()))
            .await
            .err()
            .unwrap_or_default();
        assert!(err.contains("no tunnel"), "{err}");
        assert!(!tunnels.is_connected("n1"));
    }
}
