//! The node proxy (the seed's kube-proxy): brings HTTP requests for
//! Services to their endpoints, in-process when the endpoint is a local
//! HTTP container, over HTTP to the owning node's proxy otherwise.
//!
//! Requests arrive three ways:
//! - on the node's proxy port, named by their Host header
//!   (`<service>.<namespace>[.svc[.cluster.local]][:port]`), or by an
//!   `x-wasmkube-endpoint: <namespace>/<pod>:<port>` header from another
//!   node's proxy (served only when that container is local);
//! - on a NodePort listener, one per nodePort of the cluster's Services;
//! - from wasi:http guests calling `<service>.<namespace>`, through the
//!   [`ServiceRouter`] implementation.
//!
//! The routing state ([`table`]) is rebuilt from reflector stores of
//! Services, EndpointSlices and Nodes on every change. A request holds no
//! lock and keeps going when its endpoint starts terminating: the endpoint
//! only stops being picked for new requests (draining).

pub mod nodeport;
pub mod table;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use wasmkube_api::hop_by_hop::strip_hop_by_hop;

use axum::body::HttpBody as _;
use bytes::Bytes;
use futures::StreamExt as _;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::http::outbound::service_of;
use crate::http::{Body, EndpointKey, HttpError, HttpPods, RemoteAddr, ServiceRouter};
use table::{RoutingTable, Target};

/// The header naming the endpoint a request from another node's proxy is for.
pub const ENDPOINT_HEADER: &str = "x-wasmkube-endpoint";
/// The proxy port of a node unless configured.
pub const DEFAULT_PROXY_PORT: u16 = 8080;
/// On a proxy's answer to another node's proxy: the endpoint the request
/// named does not take requests here (its pod was deleted, and the sender
/// has not yet seen its endpoint go), and the request reached no
/// container, so the sender may try another endpoint. Never passed on.
pub const ENDPOINT_GONE_HEADER: &str = "x-wasmkube-endpoint-gone";
/// Request bodies up to this size are held, so a request whose endpoint
/// turns out to be gone can be sent to another one.
const HELD_BODY_MAX: usize = 64 * 1024;
/// How long a body of unknown length may take to arrive whole before it is
/// streamed instead of held (a client that waits for the answer before it
/// ends its body must not wait for it forever).
const HELD_BODY_WAIT: Duration = Duration::from_secs(1);

/// Proxy errors (setting it up; requests never fail, they get answers).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The HTTP client for other nodes' proxies could not be built.
    #[error("setting up the proxy's HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Proxy settings.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// This node's name (endpoints with this `nodeName` are local).
    pub node_name: String,
    /// Address NodePort listeners bind (the kubelet's bind address).
    pub bind_address: IpAddr,
    /// Connecting to another node's proxy.
    pub connect_timeout: Duration,
    /// Waiting for another node's response headers; longer than the
    /// default request deadline of HTTP pods so theirs (504) comes first.
    pub response_timeout: Duration,
    /// Longest pause while reading a forwarded body.
    pub idle_timeout: Duration,
}

impl ProxyOptions {
    /// Defaults for node `node_name` binding `bind_address`.
    pub fn new(node_name: impl Into<String>, bind_address: IpAddr) -> ProxyOptions {
        ProxyOptions {
            node_name: node_name.into(),
            bind_address,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// How a request reached the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The node's proxy port (this number).
    ProxyPort(u16),
    /// A NodePort listener on this nodePort.
    NodePort(u16),
}

struct Inner {
    options: ProxyOptions,
    table: RwLock<Arc<RoutingTable>>,
    pods: HttpPods,
    client: reqwest::Client,
}

/// The node proxy; cheap to clone.
#[derive(Clone)]
pub struct Proxy(Arc<Inner>);

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("node", &self.0.options.node_name)
            .finish_non_exhaustive()
    }
}

/// A plain-text answer.
fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut message = message.into();
    message.push('\n');
    let mut response = Response::new(Body::from(message));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Appends `peer` to `x-forwarded-for`.
fn add_forwarded_for(headers: &mut HeaderMap, peer: IpAddr) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let value = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {peer}"),
        _ => peer.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(xff, value);
    }
}

/// Makes the request origin-form (`/path?query`), keeping an absolute
/// URI's authority as the Host header, and drops per-connection headers.
fn normalize(req: &mut Request<Body>) {
    let (mut parts, body) = std::mem::take(req).into_parts();
    normalize_parts(&mut parts);
    *req = Request::from_parts(parts, body);
}

/// [`normalize`] of a request's head.
fn normalize_parts(parts: &mut http::request::Parts) {
    if let Some(authority) = parts.uri.authority().cloned()
        && !parts.headers.contains_key(header::HOST)
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, host);
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    if let Ok(uri) = Uri::try_from(path) {
        parts.uri = uri;
    }
    strip_hop_by_hop(&mut parts.headers);
}

/// `<namespace>/<pod>:<port>`.
pub fn parse_endpoint(value: &str) -> Option<EndpointKey> {
    let (namespace, rest) = value.trim().split_once('/')?;
    let (pod, port) = rest.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    (!namespace.is_empty() && !pod.is_empty()).then(|| EndpointKey {
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        port,
    })
}

/// The request's Host (header, else URI authority) as (host, port).
fn host_of(req: &Request<Body>) -> Option<(String, Option<u16>)> {
    let authority: http::uri::Authority = match req.headers().get(header::HOST) {
        Some(v) => v.to_str().ok()?.parse().ok()?,
        None => req.uri().authority()?.clone(),
    };
    Some((authority.host().to_string(), authority.port_u16()))
}

/// A request body that can be sent again (held whole), or only once.
enum RequestBody {
    Held(Bytes),
    Once(Option<Body>),
}

impl RequestBody {
    /// Holds `body` when it is small and arrives promptly; streams it
    /// otherwise. Err when the client's body breaks off.
    async fn of(body: Body) -> Result<RequestBody, axum::Error> {
        if body.is_end_stream() || body.size_hint().exact() == Some(0) {
            return Ok(RequestBody::Held(Bytes::new()));
        }
        if body.size_hint().lower() > HELD_BODY_MAX as u64 {
            return Ok(RequestBody::Once(Some(body)));
        }
        let deadline = tokio::time::Instant::now() + HELD_BODY_WAIT;
        let mut held = bytes::BytesMut::new();
        let mut stream = body.into_data_stream();
        loop {
            let next = tokio::time::timeout_at(deadline, stream.next()).await;
            match next {
                Ok(None) => return Ok(RequestBody::Held(held.freeze())),
                Ok(Some(chunk)) => {
                    held.extend_from_slice(&chunk?);
                    if held.len() <= HELD_BODY_MAX {
                        continue;
                    }
                }
                Err(_) => {}
            }
            // Too large or too slow: what arrived goes first, the rest follows.
            let prefix = futures::stream::iter([Ok::<_, axum::Error>(held.freeze())]);
            return Ok(RequestBody::Once(Some(Body::from_stream(
                prefix.chain(stream),
            ))));
        }
    }

    /// The body for the next attempt; `None` when it was sent already.
    fn take(&mut self) -> Option<Body> {
        match self {
            RequestBody::Held(bytes) => Some(Body::from(bytes.clone())),
            RequestBody::Once(body) => body.take(),
        }
    }
}

/// Whether `response` says its endpoint took no request (see
/// [`ENDPOINT_GONE_HEADER`]).
fn endpoint_gone(response: &Response<Body>) -> bool {
    response.headers().contains_key(ENDPOINT_GONE_HEADER)
}

/// `response`, marked as coming from an endpoint that took no request.
fn gone(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert(ENDPOINT_GONE_HEADER, HeaderValue::from_static("1"));
    response
}

/// The key of `target` as the HTTP container it is.
fn key_of(target: &Target) -> EndpointKey {
    EndpointKey {
        namespace: target.namespace.clone(),
        pod: target.pod.clone(),
        port: target.port,
    }
}

/// The body of a request forwarded to another node. axum's body is not
/// `Sync`, which reqwest's streaming body needs, so it is pumped through
/// a small bounded channel.
fn outgoing_body(body: Body) -> Option<reqwest::Body> {
    if body.is_end_stream() || body.size_hint().exact() == Some(0) {
        return None;
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let failed = chunk.is_err();
            let chunk = chunk.map_err(std::io::Error::other);
            if tx.send(chunk).await.is_err() || failed {
                return;
            }
        }
    });
    Some(reqwest::Body::wrap_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ))
}

/// An error and its causes, `: `-separated (reqwest's own text alone says
/// only "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

impl Proxy {
    /// A proxy for this node's `pods`, with an empty routing table.
    pub fn new(options: ProxyOptions, pods: HttpPods) -> Result<Proxy, ProxyError> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .http1_only()
            // The response goes back to the client as it is.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.idle_timeout)
            .build()
            .map_err(ProxyError::Client)?;
        Ok(Proxy(Arc::new(Inner {
            options,
            table: RwLock::new(Arc::new(RoutingTable::default())),
            pods,
            client,
        })))
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.0.options.node_name
    }

    /// The current routing table.
    pub fn table(&self) -> Arc<RoutingTable> {
        match self.0.table.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Rebuilds the routing table from the cluster's objects.
    pub fn update(
        &self,
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
        nodes: &[Arc<Node>],
    ) {
        let previous = self.table();
        let table = Arc::new(RoutingTable::build(services, slices, nodes, &previous));
        match self.0.table.write() {
            Ok(mut t) => *t = table,
            Err(poisoned) => *poisoned.into_inner() = table,
        }
    }

    /// Answers one request that arrived at `entry` from `peer`.
    pub async fn handle(
        &self,
        entry: Entry,
        peer: Option<SocketAddr>,
        mut req: Request<Body>,
    ) -> Response<Body> {
        match entry {
            Entry::NodePort(node_port) => {
                let target = self.table().node_ports().get(&node_port).cloned();
                let Some(target) = target else {
                    return text(
                        StatusCode::NOT_FOUND,
                        format!("no service has node port {node_port}"),
                    );
                };
                // Only proxies name endpoints to each other, never clients.
                req.headers_mut().remove(ENDPOINT_HEADER);
                self.to_service(
                    &target.namespace,
                    &target.service,
                    Some(target.port),
                    req,
                    peer,
                )
                .await
            }
            Entry::ProxyPort(own_port) => {
                if let Some(endpoint) = req.headers_mut().remove(ENDPOINT_HEADER) {
                    return self.to_local_endpoint(&endpoint, req, peer).await;
                }
                let Some((host, port)) = host_of(&req) else {
                    return text(
                        StatusCode::NOT_FOUND,
                        "no Host header; use Host: <service>.<namespace>",
                    );
                };
                let Some((service, namespace)) = service_of(&host) else {
                    return text(
                        StatusCode::NOT_FOUND,
                        format!("{host} is not a service; use Host: <service>.<namespace>"),
                    );
                };
                // `curl http://svc.ns:<proxy port>/` names the proxy's port,
                // not a Service port: that means the first one.
                let port = match port {
                    Some(p)
                        if p == own_port
                            && self
                                .table()
                                .service(&namespace, &service)
                                .is_some_and(|s| s.port(Some(p)).is_none()) =>
                    {
                        None
                    }
                    other => other,
                };
                self.to_service(&namespace, &service, port, req, peer).await
            }
        }
    }

    /// A request another node's proxy sent for one of our containers.
    async fn to_local_endpoint(
        &self,
        endpoint: &HeaderValue,
        mut req: Request<Body>,
        peer: Option<SocketAddr>,
    ) -> Response<Body> {
        let Some(key) = endpoint.to_str().ok().and_then(parse_endpoint) else {
            return text(
                StatusCode::BAD_REQUEST,
                format!("{ENDPOINT_HEADER} must be <namespace>/<pod>:<port>"),
            );
        };
        if !self.0.pods.contains(&key) {
            return gone(text(
                StatusCode::NOT_FOUND,
                format!(
                    "no HTTP container serves {key} on node {}",
                    self.0.options.node_name
                ),
            ));
        }
        normalize(&mut req);
        if let Some(peer) = peer {
            req.extensions_mut().insert(RemoteAddr(peer));
        }
        self.serve_local(&key, req).await
    }

    /// Sends `req` to a picked endpoint of Service `namespace/service`'s
    /// port `port` (or first port). An endpoint that turns out to be gone
    /// (deleted on its node before this proxy saw its endpoint go) is
    /// skipped for the next one, as long as the request body can be sent
    /// again; each endpoint is tried once.
    async fn to_service(
        &self,
        namespace: &str,
        service: &str,
        port: Option<u16>,
        req: Request<Body>,
        peer: Option<SocketAddr>,
    ) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let mut body = match RequestBody::of(body).await {
            Ok(body) => body,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body: {e}"),
                );
            }
        };
        normalize_parts(&mut parts);
        if let Some(peer) = peer {
            add_forwarded_for(&mut parts.headers, peer.ip());
            parts.extensions.insert(RemoteAddr(peer));
        }
        let mut tried: Vec<Target> = Vec::new();
        loop {
            let Some(body) = body.take() else {
                // The one-shot body went to an endpoint that was gone.
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the picked endpoint of service {namespace}/{service} was gone"),
                );
            };
            let req = Request::from_parts(parts.clone(), body);
            let (target, mut response) = match self
                .to_one_endpoint(namespace, service, port, req, &tried)
                .await
            {
                Ok(answer) => answer,
                Err(response) => return response,
            };
            if !endpoint_gone(&response) {
                return response;
            }
            tracing::debug!(service = %format!("{namespace}/{service}"), endpoint = %key_of(&target), "endpoint gone; trying another");
            response.headers_mut().remove(ENDPOINT_GONE_HEADER);
            tried.push(target);
        }
    }

    /// One attempt of [`Proxy::to_service`]: sends `req` (normalized) to an
    /// endpoint not in `tried`; returns it and its answer, or Err with the
    /// answer when there is no endpoint to send to.
    async fn to_one_endpoint(
        &self,
        namespace: &str,
        service: &str,
        port: Option<u16>,
        req: Request<Body>,
        tried: &[Target],
    ) -> Result<(Target, Response<Body>), Response<Body>> {
        let table = self.table();
        let Some(route) = table.service(namespace, service) else {
            return Err(text(
                StatusCode::NOT_FOUND,
                format!("no service {namespace}/{service}"),
            ));
        };
        let Some(port_route) = route.port(port) else {
            return Err(text(
                StatusCode::NOT_FOUND,
                match port {
                    Some(p) => format!("service {namespace}/{service} has no port {p}"),
                    None => format!("service {namespace}/{service} has no TCP port"),
                },
            ));
        };
        let me = self.0.options.node_name.as_str();
        // Skip endpoints that cannot take the request: a local container
        // no longer registered (its pod is draining and the slice has not
        // caught up yet), a remote one whose node's proxy is unknown.
        let picked = port_route
            .pick(|t| {
                tried.contains(t)
                    || match t.node.as_deref() {
                        Some(n) if n == me => !self.0.pods.contains(&key_of(t)),
                        Some(n) => table.node(n).is_none(),
                        None => !self.0.pods.contains(&key_of(t)),
                    }
            })
            .cloned();
        let Some(target) = picked else {
            return Err(text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no ready endpoints for service {namespace}/{service}"),
            ));
        };
        let key = key_of(&target);
        let remote = target
            .node
            .as_deref()
            .filter(|n| *n != me)
            .and_then(|n| table.node(n));
        drop(table);
        let response = match remote {
            None => self.serve_local(&key, req).await,
            Some(addr) => self.forward(addr, &key, req).await,
        };
        Ok((target, response))
    }

    async fn serve_local(&self, key: &EndpointKey, req: Request<Body>) -> Response<Body> {
        match self.0.pods.serve(key, req).await {
            Ok(mut response) => {
                strip_hop_by_hop(response.headers_mut());
                // Only proxies say an endpoint is gone, never a container.
                response.headers_mut().remove(ENDPOINT_GONE_HEADER);
                response
            }
            Err(HttpError::NotFound(key)) => gone(text(
                StatusCode::BAD_GATEWAY,
                format!("endpoint {key} stopped taking requests"),
            )),
        }
    }

    /// Forwards `req` to the proxy at `addr` for its endpoint `key`.
    async fn forward(
        &self,
        addr: SocketAddr,
        key: &EndpointKey,
        req: Request<Body>,
    ) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let url = format!("http://{addr}{path}");
        let mut headers = parts.headers;
        let Ok(endpoint) = HeaderValue::from_str(&key.to_string()) else {
            return text(StatusCode::BAD_GATEWAY, format!("bad endpoint name {key}"));
        };
        headers.insert(ENDPOINT_HEADER, endpoint);
        let mut request = self.0.client.request(parts.method, url).headers(headers);
        if let Some(body) = outgoing_body(body) {
            request = request.body(body);
        }
        let sent = tokio::time::timeout(self.0.options.response_timeout, request.send()).await;
        let upstream = match sent {
            Err(_) => {
                return text(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("endpoint {key} (via {addr}) did not answer in time"),
                );
            }
            Ok(Err(e)) => {
                tracing::debug!(endpoint = %key, %addr, error = %error_chain(&e), "forwarding failed");
                return text(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "forwarding to endpoint {key} via {addr}: {}",
                        error_chain(&e)
                    ),
                );
            }
            Ok(Ok(r)) => r,
        };
        let status = upstream.status();
        let mut headers = upstream.headers().clone();
        strip_hop_by_hop(&mut headers);
        let mut response = Response::new(Body::from_stream(upstream.bytes_stream()));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }
}

#[async_trait::async_trait]
impl ServiceRouter for Proxy {
    async fn route(
        &self,
        namespace: &str,
        service: &str,
        port: Option<u16>,
        req: Request<Body>,
    ) -> Response<Body> {
        self.to_service(namespace, service, port, req, None).await
    }
}

/// Serves `proxy` on `listener` as `entry` until `shutdown`; in-flight
/// requests finish first.
pub async fn serve(
    proxy: Proxy,
    listener: tokio::net::TcpListener,
    entry: Entry,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new().fallback(
        move |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
              req: axum::extract::Request| {
            let proxy = proxy.clone();
            async move { proxy.handle(entry, Some(peer), req).await }
        },
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

/// Keeps the routing table in step with the cluster's Services,
/// EndpointSlices and Nodes until `shutdown`; `changed` is bumped after
/// every rebuild (NodePort listeners follow it).
pub async fn watch_cluster(
    client: kube::Client,
    proxy: Proxy,
    changed: watch::Sender<u64>,
    shutdown: CancellationToken,
) {
    // Initial lists and relists come from the apiserver's watch cache, as
    // informers' do.
    let config = watcher::Config::default().any_semantic();
    let (services, services_writer) = reflector::store::<Service>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let (nodes, nodes_writer) = reflector::store::<Node>();
    let mut service_events = Box::pin(
        reflector::reflector(
            services_writer,
            watcher(Api::<Service>::all(client.clone()), config.clone()),
        )
        .default_backoff(),
    );
    let mut slice_events = Box::pin(
        reflector::reflector(
            slices_writer,
            watcher(Api::<EndpointSlice>::all(client.clone()), config.clone()),
        )
        .default_backoff(),
    );
    let mut node_events = Box::pin(
        reflector::reflector(nodes_writer, watcher(Api::<Node>::all(client), config))
            .default_backoff(),
    );
    let mut generation = 0u64;
    loop {
        // Only whether the stores changed matters here, not the object.
        let outcome: Option<Result<bool, (&str, watcher::Error)>> = tokio::select! {
            () = shutdown.cancelled() => return,
            e = service_events.next() => e.map(|e| e.map(|e| settled(&e)).map_err(|e| ("services", e))),
            e = slice_events.next() => e.map(|e| e.map(|e| settled(&e)).map_err(|e| ("endpointslices", e))),
            e = node_events.next() => e.map(|e| e.map(|e| settled(&e)).map_err(|e| ("nodes", e))),
        };
        match outcome {
            // The streams retry forever; one ending means shutdown is near.
            None => return,
            Some(Err((what, e))) => {
                tracing::warn!(resource = what, error = %e, "proxy watch failed; retrying");
                continue;
            }
            // Mid-(re)list: the store swaps in the whole list at its end.
            Some(Ok(false)) => continue,
            Some(Ok(true)) => {}
        }
        proxy.update(&services.state(), &slices.state(), &nodes.state());
        generation = generation.wrapping_add(1);
        changed.send_replace(generation);
    }
}

/// Whether the store is consistent after `event` (not inside a relist).
fn settled<K>(event: &watcher::Event<K>) -> bool {
    !matches!(event, watcher::Event::Init | watcher::Event::InitApply(_))
}

/// A started proxy.
#[derive(Debug)]
pub struct RunningProxy {
    /// Where the proxy port listens.
    pub addr: SocketAddr,
    /// Ends when the proxy has stopped (after `shutdown`).
    pub done: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Runs the node proxy: the proxy port on `listener`, the cluster watch,
/// and NodePort listeners on the configured bind address, until `shutdown`.
/// Bind failures of NodePorts are reported as Warning events on their
/// Service through `client`.
pub fn start(
    proxy: Proxy,
    client: kube::Client,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<RunningProxy> {
    let addr = listener.local_addr()?;
    let (changed, changes) = watch::channel(0u64);
    let watch = tokio::spawn(watch_cluster(
        client.clone(),
        proxy.clone(),
        changed,
        shutdown.clone(),
    ));
    let node_ports = nodeport::NodePorts::new(proxy.clone(), Some(client));
    let listeners = tokio::spawn(nodeport::run(node_ports, changes, shutdown.clone()));
    let server = tokio::spawn(serve(
        proxy,
        listener,
        Entry::ProxyPort(addr.port()),
        shutdown,
    ));
    let done = tokio::spawn(async move {
        let served = server.await.map_err(std::io::Error::other)?;
        for task in [watch, listeners] {
            task.await.map_err(std::io::Error::other)?;
        }
        served
    });
    Ok(RunningProxy { addr, done })
}

#[cfg(test)]
mod tests;
