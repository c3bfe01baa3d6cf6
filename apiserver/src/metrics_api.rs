//! `metrics.k8s.io/v1beta1`, served the way metrics-server serves it, so
//! `kubectl top node` and `kubectl top pod` work without an add-on.
//!
//! Nothing is stored: each request lists the Nodes or Pods it concerns
//! (namespace, `labelSelector` and `fieldSelector` apply to those objects),
//! asks the kubelet of every Ready node involved for its `/stats/summary`
//! (concurrently, each with a short timeout, through the agent's tunnel when
//! it has one) and answers NodeMetrics /
//! PodMetrics from the figures. Like metrics-server, a node whose kubelet
//! does not answer is left out rather than failing the whole list, and so
//! is a pod with no running container that has figures yet; asking for one
//! of them by name is a 404.
//!
//! Usage is reported as metrics-server does: CPU is the kubelet's
//! `usageNanoCores` (the average over its rate window) and memory the
//! working set, both as canonical Kubernetes quantities ("1500u", "13208Ki").

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use wasmkube_api::resources::{self, ResourceInfo};

use crate::AppState;
use crate::error::{ApiError, Result};
use crate::registry::object::{labels, meta_str, now};
use crate::registry::request::{Params, method_not_allowed, not_found_path};
use crate::tunnel::Tunnels;

/// The API group served here.
pub const GROUP: &str = "metrics.k8s.io";
/// Its only version.
pub const VERSION: &str = "v1beta1";

/// The two resources of the group, for discovery and OpenAPI. They are not
/// in `wasmkube_api::resources::all()` because nothing of them is stored.
pub static RESOURCES: [ResourceInfo; 2] = [
    ResourceInfo {
        group: GROUP,
        version: VERSION,
        kind: "NodeMetrics",
        list_kind: "NodeMetricsList",
        plural: "nodes",
        // metrics-server advertises no singular name; kubectl then derives
        // `nodemetrics`, and `node` keeps meaning the core kind.
        singular: "",
        short_names: &[],
        namespaced: false,
        verbs: &["get", "list"],
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: GROUP,
        version: VERSION,
        kind: "PodMetrics",
        list_kind: "PodMetricsList",
        plural: "pods",
        singular: "",
        short_names: &[],
        namespaced: true,
        verbs: &["get", "list"],
        categories: &[],
        subresources: &[],
    },
];

/// How long one kubelet gets to answer (connect included). `kubectl top`
/// waits for the slowest node, so a dead one must not hold it up long.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);
/// Kubelets asked at once.
const MAX_CONCURRENT_SCRAPES: usize = 32;
/// The largest summary read from a kubelet (a node with hundreds of pods
/// sends a few hundred KiB).
const MAX_SUMMARY_BYTES: usize = 16 << 20;
/// The window over which wasmkube kubelets average `usageNanoCores`
/// (`wasmkube_runtime::stats::StatsOptions::default().window`); a container
/// younger than that is averaged over its life so far.
const KUBELET_RATE_WINDOW: Duration = Duration::from_secs(10);

pub fn routes() -> Router<AppState> {
    Router::new().route(&format!("/apis/{GROUP}/{VERSION}/{{*rest}}"), get(serve))
}

/// What a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Nodes {
        name: Option<String>,
    },
    Pods {
        namespace: Option<String>,
        name: Option<String>,
    },
}

fn parse_target(rest: &str) -> Result<Target> {
    let parts: Vec<&str> = rest.split('/').collect();
    let named = |s: &str| Some(s.to_string());
    match parts.as_slice() {
        ["nodes"] => Ok(Target::Nodes { name: None }),
        ["nodes", name] if !name.is_empty() => Ok(Target::Nodes { name: named(name) }),
        ["pods"] => Ok(Target::Pods {
            namespace: None,
            name: None,
        }),
        ["namespaces", ns, "pods"] if !ns.is_empty() => Ok(Target::Pods {
            namespace: named(ns),
            name: None,
        }),
        ["namespaces", ns, "pods", name] if !ns.is_empty() && !name.is_empty() => {
            Ok(Target::Pods {
                namespace: named(ns),
                name: named(name),
            })
        }
        _ => Err(not_found_path()),
    }
}

async fn serve(State(state): State<AppState>, Path(rest): Path<String>, uri: Uri) -> Response {
    match handle(&state, &rest, &uri).await {
        Ok(v) => json_response(&v),
        Err(e) => e.into_response(),
    }
}

fn json_response(v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn resource(group: &str, plural: &str) -> Result<&'static ResourceInfo> {
    resources::by_plural(group, "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))
}

async fn handle(state: &AppState, rest: &str, uri: &Uri) -> Result<Value> {
    let target = parse_target(rest)?;
    let params = Params::parse(uri)?;
    if params.watch {
        // metrics-server offers get and list only.
        return Err(method_not_allowed());
    }
    let registry = &state.registry;
    let nodes_res = resource("", "nodes")?;
    let pods_res = resource("", "pods")?;
    match target {
        Target::Nodes { name: Some(name) } => {
            let node = registry.get(nodes_res, None, &name).await?;
            let summaries = scrape(&state.tunnels, [&node]).await;
            let missing = || ApiError::not_found(GROUP, "nodemetrics", &name);
            let summary = summaries.get(name.as_str()).ok_or_else(missing)?;
            let mut m = node_metrics(&node, summary).ok_or_else(missing)?;
            m["kind"] = json!("NodeMetrics");
            m["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
            Ok(m)
        }
        Target::Nodes { name: None } => {
            let filter = params.filter(nodes_res, None)?;
            let (nodes, _, _) = registry.list(nodes_res, None, &filter, None, None).await?;
            let summaries = scrape(&state.tunnels, nodes.iter()).await;
            let items: Vec<Value> = nodes
                .iter()
                .filter_map(|n| node_metrics(n, summaries.get(meta_str(n, "name")?)?))
                .collect();
            Ok(list("NodeMetricsList", items))
        }
        Target::Pods {
            namespace: Some(ns),
            name: Some(name),
        } => {
            let pod = registry.get(pods_res, Some(&ns), &name).await?;
            let missing = || ApiError::not_found(GROUP, "podmetrics", &format!("{ns}/{name}"));
            let found = pods_metrics(state, std::slice::from_ref(&pod)).await?;
            let mut m = found.into_iter().next().ok_or_else(missing)?;
            m["kind"] = json!("PodMetrics");
            m["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
            Ok(m)
        }
        Target::Pods { namespace, .. } => {
            let filter = params.filter(pods_res, namespace.as_deref())?;
            let (pods, _, _) = registry
                .list(pods_res, namespace.as_deref(), &filter, None, None)
                .await?;
            let items = pods_metrics(state, &pods).await?;
            Ok(list("PodMetricsList", items))
        }
    }
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": kind,
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {},
        "items": items,
    })
}

/// The metrics of those of `pods` whose kubelets report running containers.
async fn pods_metrics(state: &AppState, pods: &[Value]) -> Result<Vec<Value>> {
    let nodes_res = resource("", "nodes")?;
    let node_names: BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p.pointer("/spec/nodeName")?.as_str())
        .filter(|n| !n.is_empty())
        .collect();
    let mut nodes = Vec::new();
    for name in node_names {
        match state.registry.get(nodes_res, None, name).await {
            Ok(node) => nodes.push(node),
            // A pod bound to a node that is gone has no figures.
            Err(e) if e.code() == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let summaries = scrape(&state.tunnels, nodes.iter()).await;
    Ok(pods
        .iter()
        .filter_map(|pod| {
            let node = pod.pointer("/spec/nodeName")?.as_str()?;
            pod_metrics(pod, summaries.get(node)?)
        })
        .collect())
}

fn is_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// The summaries of the Ready ones of `nodes` that answered, by node name.
async fn scrape<'a>(
    tunnels: &Tunnels,
    nodes: impl IntoIterator<Item = &'a Value>,
) -> HashMap<String, Summary> {
    // Owned (a Node is small) so the futures below borrow nothing: a
    // borrowed `&Value` makes them not `Send` for every lifetime axum needs.
    let targets: Vec<(String, Value)> = nodes
        .into_iter()
        .filter(|n| is_ready(n))
        .filter_map(|n| Some((meta_str(n, "name")?.to_string(), n.clone())))
        .collect();
    futures::stream::iter(targets)
        .map(|(name, node)| async move {
            match fetch_summary(tunnels, &node).await {
                Ok(s) => Some((name, s)),
                Err(why) => {
                    tracing::info!(node = %name, error = %why, "node left out of metrics: its kubelet did not answer");
                    None
                }
            }
        })
        .buffer_unordered(MAX_CONCURRENT_SCRAPES)
        .filter_map(std::future::ready)
        .collect()
        .await
}

async fn fetch_summary(tunnels: &Tunnels, node: &Value) -> std::result::Result<Summary, String> {
    let fetch = async {
        let req = axum::http::Request::get("/stats/summary")
            .body(axum::body::Body::empty())
            .map_err(|e| e.to_string())?;
        let resp = tunnels.kubelet_request(node, req).await?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let body = axum::body::to_bytes(resp.into_body(), MAX_SUMMARY_BYTES)
            .await
            .map_err(|e| format!("reading the summary (at most {MAX_SUMMARY_BYTES} bytes): {e}"))?;
        serde_json::from_slice::<Summary>(&body).map_err(|e| format!("invalid summary: {e}"))
    };
    // Bounds connecting, the answer and a body trickling in alike.
    tokio::time::timeout(SCRAPE_TIMEOUT, fetch)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// The subset of the kubelet's Summary API read here.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    node: NodeStats,
    #[serde(default)]
    pods: Vec<PodStats>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeStats {
    #[serde(default)]
    start_time: Option<String>,
    #[serde(default)]
    cpu: Option<CpuStats>,
    #[serde(default)]
    memory: Option<MemoryStats>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodStats {
    pod_ref: PodReference,
    #[serde(default)]
    containers: Vec<ContainerStats>,
}

#[derive(Debug, Clone, Deserialize)]
struct PodReference {
    name: String,
    namespace: String,
    #[serde(default)]
    uid: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerStats {
    name: String,
    #[serde(default)]
    start_time: Option<String>,
    #[serde(default)]
    cpu: Option<CpuStats>,
    #[serde(default)]
    memory: Option<MemoryStats>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CpuStats {
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    usage_nano_cores: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MemoryStats {
    #[serde(default)]
    working_set_bytes: Option<u64>,
}

/// CPU and memory of one node or container, when both are known.
struct Usage {
    time: jiff::Timestamp,
    window: Duration,
    nano_cores: u64,
    memory: u64,
}

fn usage_of(
    cpu: Option<&CpuStats>,
    memory: Option<&MemoryStats>,
    start: Option<&str>,
) -> Option<Usage> {
    let cpu = cpu?;
    let time: jiff::Timestamp = cpu.time.as_deref()?.parse().ok()?;
    let age = start
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .and_then(|s| Duration::try_from(time.duration_since(s)).ok());
    // A rate needs at least a second of history, and covers at most the
    // kubelet's window.
    let window = age
        .map_or(KUBELET_RATE_WINDOW, |a| a.min(KUBELET_RATE_WINDOW))
        .max(Duration::from_secs(1));
    Some(Usage {
        time,
        window,
        nano_cores: cpu.usage_nano_cores?,
        memory: memory?.working_set_bytes?,
    })
}

fn metadata(obj: &Value) -> Value {
    let mut m = json!({
        "name": meta_str(obj, "name").unwrap_or(""),
        "creationTimestamp": now(),
    });
    if let Some(ns) = meta_str(obj, "namespace") {
        m["namespace"] = json!(ns);
    }
    let l: BTreeMap<String, String> = labels(obj);
    if !l.is_empty() {
        m["labels"] = json!(l);
    }
    m
}

fn usage_json(u: &Usage) -> Value {
    json!({"cpu": cpu_quantity(u.nano_cores), "memory": memory_quantity(u.memory)})
}

fn timestamp(t: jiff::Timestamp) -> String {
    crate::registry::object::timestamp(t)
}

/// A NodeMetrics item, or `None` when the summary lacks the figures.
fn node_metrics(node: &Value, summary: &Summary) -> Option<Value> {
    let n = &summary.node;
    let u = usage_of(n.cpu.as_ref(), n.memory.as_ref(), n.start_time.as_deref())?;
    Some(json!({
        "metadata": metadata(node),
        "timestamp": timestamp(u.time),
        "window": go_duration(u.window),
        "usage": usage_json(&u),
    }))
}

/// A PodMetrics item: the pod's running containers that have figures, or
/// `None` when none has (not started, finished, or younger than a rate).
fn pod_metrics(pod: &Value, summary: &Summary) -> Option<Value> {
    let ns = meta_str(pod, "namespace").unwrap_or("");
    let name = meta_str(pod, "name").unwrap_or("");
    let uid = meta_str(pod, "uid").unwrap_or("");
    let stats = summary.pods.iter().find(|p| {
        p.pod_ref.namespace == ns
            && p.pod_ref.name == name
            && (p.pod_ref.uid.is_empty() || p.pod_ref.uid == uid)
    })?;
    let mut latest: Option<jiff::Timestamp> = None;
    let mut window = Duration::ZERO;
    let containers: Vec<Value> = stats
        .containers
        .iter()
        .filter_map(|c| {
            let u = usage_of(c.cpu.as_ref(), c.memory.as_ref(), c.start_time.as_deref())?;
            latest = Some(latest.map_or(u.time, |t| t.max(u.time)));
            window = window.max(u.window);
            Some(json!({"name": c.name, "usage": usage_json(&u)}))
        })
        .collect();
    let time = latest?;
    Some(json!({
        "metadata": metadata(pod),
        "timestamp": timestamp(time),
        "window": go_duration(window),
        "containers": containers,
    }))
}

/// A CPU amount in nanocores as a canonical Kubernetes quantity (what
/// `resource.NewScaledQuantity(n, resource.Nano).String()` gives): trailing
/// zeros folded into the largest SI suffix, "1500000n" → "1500u".
pub fn cpu_quantity(nanocores: u64) -> String {
    if nanocores == 0 {
        return "0".to_string();
    }
    let mut amount = nanocores;
    let mut exponent: i32 = -9;
    while amount.is_multiple_of(10) {
        amount /= 10;
        exponent += 1;
    }
    // Back to a multiple of three; never past the digits just removed.
    match exponent.rem_euclid(3) {
        1 => {
            amount *= 10;
            exponent -= 1;
        }
        2 => {
            amount *= 100;
            exponent -= 2;
        }
        _ => {}
    }
    let suffix = match exponent {
        -9 => "n",
        -6 => "u",
        -3 => "m",
        0 => "",
        3 => "k",
        6 => "M",
        9 => "G",
        _ => "T",
    };
    format!("{amount}{suffix}")
}

/// Bytes as a canonical binary-SI Kubernetes quantity (what
/// `resource.NewQuantity(n, resource.BinarySI).String()` gives): under 1Ki
/// plain, else the largest binary suffix that divides exactly.
pub fn memory_quantity(bytes: u64) -> String {
    if bytes < 1024 {
        return bytes.to_string();
    }
    let mut amount = bytes;
    let mut suffix = 0;
    const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    while amount.is_multiple_of(1024) && suffix < SUFFIXES.len() - 1 {
        amount /= 1024;
        suffix += 1;
    }
    format!("{amount}{}", SUFFIXES[suffix])
}

/// A duration as Go's `time.Duration.String()` prints it ("10s", "1m30s",
/// "1.5s"), which is how `metav1.Duration` travels.
pub fn go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    let total = d.as_secs();
    let nanos = d.subsec_nanos();
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if total == 0 && nanos.is_multiple_of(1_000_000) {
        return format!("{}ms", nanos / 1_000_000);
    }
    out.push_str(&s.to_string());
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_canonical() {
        assert_eq!(cpu_quantity(0), "0");
        assert_eq!(cpu_quantity(12345), "12345n");
        assert_eq!(cpu_quantity(1_500_000), "1500u");
        assert_eq!(cpu_quantity(250_000_000), "250m");
        assert_eq!(cpu_quantity(2_000_000_000), "2");
        assert_eq!(cpu_quantity(10), "10n");
        assert_eq!(cpu_quantity(u64::MAX), "18446744073709551615n");
        assert_eq!(memory_quantity(0), "0");
        assert_eq!(memory_quantity(1000), "1000");
        assert_eq!(memory_quantity(13_525_000), "13525000");
        assert_eq!(memory_quantity(13208 * 1024), "13208Ki");
        assert_eq!(memory_quantity(16 << 20), "16Mi");
        assert_eq!(memory_quantity(3 << 30), "3Gi");
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn paths_name_nodes_and_pods() {
        assert_eq!(
            parse_target("nodes").ok(),
            Some(Target::Nodes { name: None })
        );
        assert_eq!(
            parse_target("nodes/n1").ok(),
            Some(Target::Nodes {
                name: Some("n1".into())
            })
        );
        assert_eq!(
            parse_target("namespaces/ns/pods/p").ok(),
            Some(Target::Pods {
                namespace: Some("ns".into()),
                name: Some("p".into())
            })
        );
        assert_eq!(
            parse_target("pods").ok(),
            Some(Target::Pods {
                namespace: None,
                name: None
            })
        );
        for bad in [
            "pods/p",
            "nodes/n1/x",
            "namespaces/ns/nodes",
            "widgets",
            "",
            "nodes/",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    fn summary() -> Summary {
        let v = json!({
            "node": {"nodeName": "n1", "startTime": "2024-01-01T00:00:00Z",
                "cpu": {"time": "2024-01-02T00:00:00Z", "usageNanoCores": 250_000_000u64, "usageCoreNanoSeconds": 9},
                "memory": {"time": "2024-01-02T00:00:00Z", "workingSetBytes": 2u64 << 30}},
            "pods": [
                {"podRef": {"name": "web", "namespace": "default", "uid": "u1"},
                 "startTime": "2024-01-01T23:59:00Z",
                 "containers": [
                    {"name": "app", "startTime": "2024-01-01T23:59:57Z",
                     "cpu": {"time": "2024-01-02T00:00:00Z", "usageNanoCores": 1_500_000u64},
                     "memory": {"time": "2024-01-02T00:00:00Z", "workingSetBytes": 1u64 << 20}},
                    {"name": "young", "startTime": "2024-01-02T00:00:00Z",
                     "cpu": {"time": "2024-01-02T00:00:00Z"},
                     "memory": {"time": "2024-01-02T00:00:00Z", "workingSetBytes": 65536}}
                 ]},
                {"podRef": {"name": "done", "namespace": "default", "uid": "u2"}, "containers": []}
            ]
        });
        serde_json::from_value(v).unwrap_or_else(|e| panic!("fixture: {e}"))
    }

    #[test]
    fn node_and_pod_items_follow_metrics_server() {
        let s = summary();
        let node = json!({"metadata": {"name": "n1", "labels": {"zone": "a"}}});
        let m = node_metrics(&node, &s).unwrap_or_default();
        assert_eq!(m["metadata"]["name"], "n1");
        assert_eq!(m["metadata"]["labels"]["zone"], "a");
        assert_eq!(m["timestamp"], "2024-01-02T00:00:00Z");
        assert_eq!(m["window"], "10s");
        assert_eq!(m["usage"], json!({"cpu": "250m", "memory": "2Gi"}));

        let pod = json!({"metadata": {"name": "web", "namespace": "default", "uid": "u1"}});
        let m = pod_metrics(&pod, &s).unwrap_or_default();
        assert_eq!(m["metadata"]["namespace"], "default");
        // Only the container with a rate; its window is its age.
        assert_eq!(
            m["containers"],
            json!([{"name": "app", "usage": {"cpu": "1500u", "memory": "1Mi"}}])
        );
        assert_eq!(m["window"], "3s");
        // Another pod of the same name (new uid) has no figures yet.
        let other = json!({"metadata": {"name": "web", "namespace": "default", "uid": "u9"}});
        assert!(pod_metrics(&other, &s).is_none());
        let done = json!({"metadata": {"name": "done", "namespace": "default", "uid": "u2"}});
        assert!(pod_metrics(&done, &s).is_none());
    }

    #[test]
    fn readiness_comes_from_the_ready_condition() {
        let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let unknown = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert!(is_ready(&ready));
        assert!(!is_ready(&unknown));
        assert!(!is_ready(&json!({})));
    }
}
