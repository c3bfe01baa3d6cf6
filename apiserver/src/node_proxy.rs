//! `nodes/{name}/proxy/{path}`: a request to a node's kubelet through the
//! API server, as kube-apiserver's node proxy (`kubectl get --raw
//! /api/v1/nodes/n1/proxy/stats/summary`). The kubelet is reached the way
//! logs are — through the node's tunnel when it has one, else at the address
//! it reports. Authorization sees `<verb> nodes/proxy` (RBAC), which the
//! Node authorizer never grants, so a node cannot reach another's kubelet.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, header};
use wasmkube_api::hop_by_hop::strip_hop_by_hop;
use wasmkube_api::resources;
use wasmkube_api::status;

use crate::error::ApiError;
use crate::registry::Registry;
use crate::tunnel::Tunnels;

/// How long the kubelet may take to answer with headers.
const HEADERS_TIMEOUT: Duration = Duration::from_secs(30);

/// The node name and the kubelet path of a node proxy request, or `None`
/// when `path` is not one (`/api/v1/nodes/{name}/proxy[/{rest}]`). A
/// `name:port` is accepted; the port is the one the node reports.
pub fn target(path: &str) -> Option<(&str, String)> {
    let rest = path.strip_prefix("/api/v1/nodes/")?;
    let (name, rest) = rest.split_once('/')?;
    let after = match rest.strip_prefix("proxy") {
        Some("") => "/",
        Some(after) if after.starts_with('/') => after,
        _ => return None,
    };
    let name = name.split_once(':').map_or(name, |(n, _)| n);
    if name.is_empty() {
        return None;
    }
    Some((name, after.to_string()))
}

/// Sends the request to the kubelet of `node` and streams its answer back.
pub async fn serve(
    registry: Arc<Registry>,
    tunnels: Tunnels,
    node: &str,
    kubelet_path: String,
    req: http::Request<Body>,
) -> Response {
    match forward(registry, &tunnels, node, kubelet_path, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn forward(
    registry: Arc<Registry>,
    tunnels: &Tunnels,
    node_name: &str,
    kubelet_path: String,
    req: http::Request<Body>,
) -> Result<Response, ApiError> {
    let nodes = resources::by_plural("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not served"))?;
    let node = registry.get(nodes, None, node_name).await?;
    let (parts, body) = req.into_parts();
    if !matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        return Err(ApiError(status::method_not_allowed(format!(
            "{} is not proxied to a kubelet",
            parts.method
        ))));
    }
    let limit = registry.max_body_bytes();
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError(status::too_large(limit)))?;
    let uri = match parts.uri.query() {
        Some(q) => format!("{kubelet_path}?{q}"),
        None => kubelet_path,
    };
    let mut upstream = http::Request::builder().method(parts.method).uri(uri);
    // Only what describes the body and what the caller accepts: the
    // caller's credentials are for the API server, not the kubelet.
    for name in [
        header::CONTENT_TYPE,
        header::ACCEPT,
        header::ACCEPT_ENCODING,
    ] {
        if let Some(v) = parts.headers.get(&name) {
            upstream = upstream.header(name, v.clone());
        }
    }
    let upstream = upstream
        .body(Body::from(body))
        .map_err(|e| ApiError::bad_request(format!("invalid proxy request: {e}")))?;
    let unreachable = |why: String| {
        ApiError(status::unavailable(format!(
            "unable to reach the kubelet of node {node_name:?}: {why}"
        )))
    };
    let answer =
        match tokio::time::timeout(HEADERS_TIMEOUT, tunnels.kubelet_request(&node, upstream)).await
        {
            Ok(Ok(r)) => r,
            Ok(Err(why)) => return Err(unreachable(why)),
            Err(_) => return Err(unreachable("timed out waiting for the response".into())),
        };
    let (mut parts, body) = answer.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let mut resp = (parts.status, body).into_response();
    for (name, value) in &parts.headers {
        resp.headers_mut().append(name, value.clone());
    }
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_proxy_paths_name_the_node_and_the_kubelet_path() {
        assert_eq!(
            target("/api/v1/nodes/n1/proxy/stats/summary"),
            Some(("n1", "/stats/summary".to_string()))
        );
        assert_eq!(target("/api/v1/nodes/n1/proxy"), Some(("n1", "/".into())));
        assert_eq!(target("/api/v1/nodes/n1/proxy/"), Some(("n1", "/".into())));
        assert_eq!(
            target("/api/v1/nodes/n1:10250/proxy/healthz"),
            Some(("n1", "/healthz".into()))
        );
        for not in [
            "/api/v1/nodes/n1",
            "/api/v1/nodes/n1/status",
            "/api/v1/nodes/n1/proxyx",
            "/api/v1/nodes//proxy/x",
            "/api/v1/namespaces/d/pods/p/proxy/x",
            "/api/v1/nodes",
        ] {
            assert_eq!(target(not), None, "{not}");
        }
    }
}
