//! `pods/{name}/portforward`: kubectl port-forward to HTTP pods.
//!
//! kubectl (1.31+) first asks for a WebSocket upgrade with subprotocol
//! [`WS_PROTOCOL`] and then speaks SPDY/3.1 inside binary WebSocket
//! messages; when that upgrade fails it falls back to a plain HTTP/1.1
//! upgrade to `SPDY/3.1` with `X-Stream-Protocol-Version:
//! portforward.k8s.io`. Both carry the same SPDY session ([`session`]).
//!
//! Wasm pods have no network namespace to splice bytes into: they serve
//! HTTP per request. So only a pod's HTTP container ports can be forwarded,
//! and the API server itself parses the HTTP/1.1 on each forwarded
//! connection, sending every request to the pod through its kubelet (over
//! the node's agent tunnel when it has one). Anything else is refused up
//! front with a Status (pod missing, not bound, not running, a `ports`
//! query naming a non-HTTP port) or, for a port known only once kubectl
//! opens its streams, with a message on the pair's error stream.

pub mod session;
pub mod spdy;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::extract::Request;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use wasmkube_api::{resources, status};

use crate::error::ApiError;
use crate::registry::Registry;
use crate::tunnel::Tunnels;
pub use session::Target;

/// The WebSocket subprotocol of SPDY-over-WebSocket port forwarding.
pub const WS_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The `Upgrade` token of the SPDY fallback.
pub const SPDY_UPGRADE: &str = "SPDY/3.1";
/// The stream protocol both transports negotiate.
pub const STREAM_PROTOCOL: &str = "portforward.k8s.io";
/// The header naming the stream protocol on the SPDY path.
pub const STREAM_PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";
/// The port of an HTTP container without container ports (as the kubelet).
pub const DEFAULT_HTTP_PORT: u16 = 80;

/// The HTTP port of each container, as the kubelet picks it: the port named
/// `http`, else the first TCP port, else 80.
pub fn http_ports(pod: &Value) -> Vec<(u16, String)> {
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    containers
        .iter()
        .map(|c| {
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            let ports = c
                .get("ports")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let tcp = |p: &&Value| {
                p.get("protocol")
                    .and_then(Value::as_str)
                    .is_none_or(|proto| proto == "TCP")
            };
            let port = ports
                .iter()
                .find(|p| p.get("name").and_then(Value::as_str) == Some("http"))
                .or_else(|| ports.iter().find(tcp))
                .and_then(|p| p.get("containerPort")?.as_u64())
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .unwrap_or(DEFAULT_HTTP_PORT);
            (port, name.to_string())
        })
        .collect()
}

/// `8080 (container web), 9090 (container admin)`.
pub fn describe_ports(ports: &[(u16, String)]) -> String {
    if ports.is_empty() {
        return "the pod has no containers".to_string();
    }
    let list: Vec<String> = ports
        .iter()
        .map(|(p, c)| format!("{p} (container {c})"))
        .collect();
    format!("its HTTP ports: {}", list.join(", "))
}

/// The ports a request names up front (`?ports=8080,9090` or repeated).
fn query_ports(raw_query: Option<&str>) -> Vec<String> {
    let Some(q) = raw_query else {
        return Vec::new();
    };
    url::form_urlencoded::parse(q.as_bytes())
        .filter(|(k, _)| k == "ports")
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Looks the pod and its node up and checks it can be forwarded to.
pub async fn resolve(
    registry: &Registry,
    tunnels: Tunnels,
    namespace: &str,
    name: &str,
) -> Result<Target, ApiError> {
    let pods = resources::by_plural("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods are not served"))?;
    let nodes = resources::by_plural("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not served"))?;
    let pod = registry.get(pods, Some(namespace), name).await?;
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?
        .to_string();
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Unknown");
    if phase != "Running" {
        // kubectl's own wording for the same check.
        return Err(ApiError::bad_request(format!(
            "unable to forward port because pod is not running. Current status={phase}"
        )));
    }
    let node = registry.get(nodes, None, &node_name).await.map_err(|e| {
        if e.code() == 404 {
            ApiError(status::unavailable(format!(
                "pod {name} is bound to node {node_name:?}, which does not exist"
            )))
        } else {
            e
        }
    })?;
    Ok(Target {
        namespace: namespace.to_string(),
        pod: name.to_string(),
        uid: pod
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        node,
        http_ports: http_ports(&pod),
        tunnels,
    })
}

/// Whether the comma-separated header `name` lists `token` (case-insensitive).
fn header_lists(headers: &http::HeaderMap, name: &str, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Serves `GET|POST /api/v1/namespaces/{namespace}/pods/{name}/portforward`.
pub async fn serve(
    registry: Arc<Registry>,
    tunnels: Tunnels,
    namespace: String,
    name: String,
    req: Request,
) -> Response {
    match upgrade(&registry, tunnels, &namespace, &name, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn upgrade(
    registry: &Registry,
    tunnels: Tunnels,
    namespace: &str,
    name: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let target = resolve(registry, tunnels, namespace, name).await?;
    for port in query_ports(req.uri().query()) {
        if let Some(why) = target.refuse(&port) {
            return Err(ApiError::bad_request(why));
        }
    }
    let target = Arc::new(target);
    let headers = req.headers();
    if header_lists(headers, header::UPGRADE.as_str(), "websocket") {
        return websocket(target, req).await;
    }
    if header_lists(headers, header::UPGRADE.as_str(), SPDY_UPGRADE) {
        return spdy_upgrade(target, req);
    }
    Err(ApiError::bad_request(format!(
        "Upgrade request required: port-forward is a WebSocket upgrade with subprotocol \
         {WS_PROTOCOL:?} or an HTTP/1.1 upgrade to {SPDY_UPGRADE:?} with \
         {STREAM_PROTOCOL_HEADER}: {STREAM_PROTOCOL}"
    )))
}

async fn websocket(target: Arc<Target>, req: Request) -> Result<Response, ApiError> {
    let (mut parts, _body) = req.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws.protocols([WS_PROTOCOL]),
        Err(rejection) => {
            return Err(ApiError::bad_request(format!(
                "invalid WebSocket upgrade: {}",
                rejection.body_text()
            )));
        }
    };
    if ws.selected_protocol().is_none() {
        let offered = parts
            .headers
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return Err(ApiError::bad_request(format!(
            "unsupported WebSocket subprotocol(s) {offered:?}: port-forward speaks {WS_PROTOCOL:?}"
        )));
    }
    Ok(ws.on_upgrade(move |socket| async move {
        let (tx, rx) = socket.split();
        let inbound = rx
            .take_while(|m| std::future::ready(!matches!(m, Ok(Message::Close(_)))))
            .filter_map(|m| {
                std::future::ready(match m {
                    Ok(Message::Binary(b)) => Some(Ok(b)),
                    Ok(_) => None,
                    Err(e) => Some(Err(std::io::Error::other(e))),
                })
            });
        let outbound = tx
            .sink_map_err(std::io::Error::other)
            .with(|b: bytes::Bytes| {
                std::future::ready(Ok::<_, std::io::Error>(Message::Binary(b)))
            });
        session::run(
            target,
            Box::pin(inbound),
            Box::pin(outbound),
            CancellationToken::new(),
        )
        .await;
    }))
}

fn spdy_upgrade(target: Arc<Target>, mut req: Request) -> Result<Response, ApiError> {
    if req.version() != http::Version::HTTP_11
        || !header_lists(req.headers(), header::CONNECTION.as_str(), "upgrade")
    {
        return Err(ApiError::bad_request(
            "a SPDY upgrade is an HTTP/1.1 request with `Connection: Upgrade`",
        ));
    }
    // kubectl always offers the protocol; older clients sent none.
    let offered: Vec<String> = req
        .headers()
        .get_all(STREAM_PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect();
    if !offered.is_empty() && !offered.iter().any(|p| p == STREAM_PROTOCOL) {
        return Err(ApiError(status::failure(
            403,
            "Forbidden",
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, \
                 server supports [{STREAM_PROTOCOL:?}]"
            ),
        )));
    }
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return Err(ApiError::bad_request(
            "this connection cannot be upgraded (SPDY needs HTTP/1.1)",
        ));
    };
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::info!(error = %e, "port-forward upgrade failed");
                return;
            }
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let (rd, wr) = tokio::io::split(io);
        let inbound = futures::stream::unfold(rd, |mut rd| async move {
            let mut buf = bytes::BytesMut::with_capacity(16 << 10);
            match rd.read_buf(&mut buf).await {
                Ok(0) => None,
                Ok(_) => Some((Ok(buf.freeze()), rd)),
                Err(e) => Some((Err(e), rd)),
            }
        });
        let outbound = futures::sink::unfold(wr, |mut wr, b: bytes::Bytes| async move {
            use tokio::io::AsyncWriteExt;
            wr.write_all(&b).await?;
            wr.flush().await?;
            Ok::<_, std::io::Error>(wr)
        });
        session::run(
            target,
            Box::pin(inbound),
            Box::pin(outbound),
            CancellationToken::new(),
        )
        .await;
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static(SPDY_UPGRADE));
    h.insert(
        STREAM_PROTOCOL_HEADER,
        HeaderValue::from_static(STREAM_PROTOCOL),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_http_ports_like_the_kubelet() {
        let pod = json!({"spec": {"containers": [
            {"name": "web", "ports": [{"containerPort": 9090}, {"name": "http", "containerPort": 8080}]},
            {"name": "udp", "ports": [{"containerPort": 53, "protocol": "UDP"}]},
            {"name": "bare"},
        ]}});
        assert_eq!(
            http_ports(&pod),
            vec![
                (8080, "web".to_string()),
                (80, "udp".to_string()),
                (80, "bare".to_string())
            ]
        );
    }

    #[test]
    fn refuses_ports_that_are_not_http_ports() {
        let t = Target {
            namespace: "default".into(),
            pod: "echo".into(),
            uid: "u".into(),
            node: json!({}),
            http_ports: vec![(8080, "web".into())],
            tunnels: Tunnels::default(),
        };
        assert_eq!(t.refuse("8080"), None);
        let why = t.refuse("9999").unwrap_or_default();
        assert!(
            why.contains("port 9999 is not an HTTP port of pod default/echo")
                && why.contains("its HTTP ports: 8080 (container web)"),
            "{why}"
        );
        assert!(t.refuse("0").is_some());
        assert!(t.refuse("http").is_some());
    }

    #[test]
    fn reads_ports_from_the_query() {
        assert_eq!(
            query_ports(Some("ports=8080,9090&ports=1")),
            vec!["8080", "9090", "1"]
        );
        assert!(query_ports(None).is_empty());
    }
}
