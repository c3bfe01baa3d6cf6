//! `pods/log`: find the pod's container and node, then stream the kubelet's
//! `/containerLogs` answer through unchanged (status, content type, body),
//! over the agent's tunnel when it has one ([`crate::tunnel`]).
//! Follow streams live as long as the container writes; when the client goes
//! away the response body is dropped, which drops the upstream request.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use wasmkube_api::resources;
use wasmkube_api::status;

use crate::error::ApiError;
use crate::registry::Registry;
use crate::tunnel::Tunnels;

/// How long to wait for the kubelet's response headers (the body may stream
/// for as long as the container runs).
const HEADERS_TIMEOUT: Duration = Duration::from_secs(30);

/// The query parameters of a log request that the kubelet understands.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogOptions {
    pub container: Option<String>,
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<i64>,
    pub limit_bytes: Option<i64>,
    pub since_seconds: Option<i64>,
    pub since_time: Option<String>,
}

impl LogOptions {
    /// Parse and validate the raw query string of a `pods/log` request.
    pub fn parse(raw_query: Option<&str>) -> Result<LogOptions, ApiError> {
        let mut o = LogOptions::default();
        let Some(q) = raw_query else { return Ok(o) };
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            match k.as_ref() {
                "container" => o.container = Some(v.into_owned()).filter(|c| !c.is_empty()),
                "follow" => o.follow = parse_bool("follow", &v)?,
                "previous" => o.previous = parse_bool("previous", &v)?,
                "timestamps" => o.timestamps = parse_bool("timestamps", &v)?,
                "tailLines" => o.tail_lines = Some(parse_int("tailLines", &v, 0)?),
                "limitBytes" => o.limit_bytes = Some(parse_int("limitBytes", &v, 1)?),
                "sinceSeconds" => o.since_seconds = Some(parse_int("sinceSeconds", &v, 1)?),
                "sinceTime" => {
                    if v.parse::<jiff::Timestamp>().is_err() {
                        return Err(ApiError::bad_request(format!(
                            "sinceTime: invalid RFC3339 time {v:?}"
                        )));
                    }
                    o.since_time = Some(v.into_owned());
                }
                _ => {}
            }
        }
        if o.since_seconds.is_some() && o.since_time.is_some() {
            return Err(ApiError::bad_request(
                "at most one of sinceTime or sinceSeconds may be specified",
            ));
        }
        Ok(o)
    }

    /// The query string for the kubelet (everything but `container`).
    fn kubelet_query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if self.follow {
            q.append_pair("follow", "true");
        }
        if self.previous {
            q.append_pair("previous", "true");
        }
        if self.timestamps {
            q.append_pair("timestamps", "true");
        }
        if let Some(n) = self.tail_lines {
            q.append_pair("tailLines", &n.to_string());
        }
        if let Some(n) = self.limit_bytes {
            q.append_pair("limitBytes", &n.to_string());
        }
        if let Some(n) = self.since_seconds {
            q.append_pair("sinceSeconds", &n.to_string());
        }
        if let Some(t) = &self.since_time {
            q.append_pair("sinceTime", t);
        }
        q.finish()
    }
}

/// Go's `strconv.ParseBool`, which is what Kubernetes accepts.
fn parse_bool(name: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "{name}: invalid boolean value {v:?}"
        ))),
    }
}

fn parse_int(name: &str, v: &str, min: i64) -> Result<i64, ApiError> {
    match v.parse::<i64>() {
        Ok(n) if n >= min => Ok(n),
        Ok(_) => Err(ApiError::bad_request(format!(
            "{name}: must be greater than or equal to {min}"
        ))),
        Err(_) => Err(ApiError::bad_request(format!(
            "{name}: invalid integer value {v:?}"
        ))),
    }
}

fn names_of(list: Option<&Value>) -> Vec<String> {
    list.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The container whose log is asked for, Kubernetes' way: the named one
/// (any container, init or ephemeral), else the default-container annotation,
/// else the only container.
pub fn pick_container(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let spec = pod.get("spec");
    let containers = names_of(spec.and_then(|s| s.get("containers")));
    let init = names_of(spec.and_then(|s| s.get("initContainers")));
    let ephemeral = names_of(spec.and_then(|s| s.get("ephemeralContainers")));
    if let Some(c) = asked {
        if containers
            .iter()
            .chain(&init)
            .chain(&ephemeral)
            .any(|n| n == c)
        {
            return Ok(c.to_string());
        }
        return Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        )));
    }
    let annotated = pod
        .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
        .and_then(Value::as_str);
    if let Some(c) = annotated.filter(|c| containers.iter().any(|n| n == c)) {
        return Ok(c.to_string());
    }
    match containers.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(ApiError::bad_request(format!(
            "pod {name} has no containers"
        ))),
        many => {
            let mut msg = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                many.join(" ")
            );
            if !init.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::bad_request(msg))
        }
    }
}

/// The kubelet endpoint (`host`, `port`) a Node reports.
pub fn kubelet_endpoint(node: &Value) -> Option<(String, u16)> {
    let status = node.get("status")?;
    let addresses = status.get("addresses").and_then(Value::as_array)?;
    let address_of = |ty: &str| {
        addresses
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(ty))
            .and_then(|a| a.get("address")?.as_str())
            .filter(|a| !a.is_empty())
    };
    let host = address_of("InternalIP").or_else(|| address_of("Hostname"))?;
    let port = status
        .pointer("/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)?;
    Some((host.to_string(), port))
}

/// The kubelet path and query of a container's log.
fn kubelet_path(namespace: &str, pod: &str, container: &str, query: &str) -> String {
    let mut url = match url::Url::parse("http://kubelet/") {
        Ok(u) => u,
        Err(_) => return "/".to_string(),
    };
    if let Ok(mut segments) = url.path_segments_mut() {
        segments
            .clear()
            .extend(["containerLogs", namespace, pod, container]);
    }
    if !query.is_empty() {
        url.set_query(Some(query));
    }
    url[url::Position::BeforePath..].to_string()
}

/// Serve `GET /api/v1/namespaces/{namespace}/pods/{name}/log`.
pub async fn pod_log(
    registry: Arc<Registry>,
    tunnels: Tunnels,
    namespace: String,
    name: String,
    raw_query: Option<String>,
) -> Response {
    match proxy(registry, &tunnels, &namespace, &name, raw_query.as_deref()).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn proxy(
    registry: Arc<Registry>,
    tunnels: &Tunnels,
    namespace: &str,
    name: &str,
    raw_query: Option<&str>,
) -> Result<Response, ApiError> {
    let opts = LogOptions::parse(raw_query)?;
    let pods = resources::by_plural("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods are not served"))?;
    let nodes = resources::by_plural("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not served"))?;
    let pod = registry.get(pods, Some(namespace), name).await?;
    let container = pick_container(&pod, name, opts.container.as_deref())?;
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {name} does not have a host assigned"))
        })?;
    let node = registry.get(nodes, None, node_name).await?;
    let path = kubelet_path(namespace, name, &container, &opts.kubelet_query());
    let req = http::Request::get(path)
        .body(Body::empty())
        .map_err(|e| ApiError::internal(format!("kubelet request: {e}")))?;
    let unreachable = |why: String| {
        ApiError(status::unavailable(format!(
            "unable to reach the kubelet of node {node_name:?}: {why}"
        )))
    };
    let upstream =
        match tokio::time::timeout(HEADERS_TIMEOUT, tunnels.kubelet_request(&node, req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(why)) => return Err(unreachable(why)),
            Err(_) => {
                return Err(unreachable(
                    "timed out waiting for the response".to_string(),
                ));
            }
        };
    let (parts, body) = upstream.into_parts();
    let mut resp = (parts.status, body).into_response();
    let ct = parts
        .headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("text/plain"));
    resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_containers_like_kubernetes() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        let err = pick_container(&pod, "p", None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"), "{err}");
        assert_eq!(
            pick_container(&pod, "p", Some("i")).ok().as_deref(),
            Some("i")
        );
        assert!(pick_container(&pod, "p", Some("zz")).is_err());
        let one = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(
            pick_container(&one, "p", None).ok().as_deref(),
            Some("only")
        );
    }

    #[test]
    fn parses_and_forwards_options() -> Result<(), ApiError> {
        let o = LogOptions::parse(Some("container=c&follow=true&tailLines=10&timestamps=1"))?;
        assert_eq!(o.container.as_deref(), Some("c"));
        assert_eq!(
            o.kubelet_query(),
            "follow=true&timestamps=true&tailLines=10"
        );
        assert!(LogOptions::parse(Some("tailLines=-1")).is_err());
        assert!(LogOptions::parse(Some("follow=maybe")).is_err());
        Ok(())
    }

    #[test]
    fn builds_encoded_kubelet_paths() {
        assert_eq!(
            kubelet_path("default", "web", "main", "follow=true"),
            "/containerLogs/default/web/main?follow=true"
        );
        assert_eq!(
            kubelet_path("a b", "p/q", "c", ""),
            "/containerLogs/a%20b/p%2Fq/c"
        );
    }

    #[test]
    fn finds_the_kubelet_endpoint() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        }});
        assert_eq!(
            kubelet_endpoint(&node),
            Some(("10.0.0.5".to_string(), 10250))
        );
        assert_eq!(kubelet_endpoint(&json!({"status": {}})), None);
    }
}
