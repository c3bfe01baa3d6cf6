//! `/metrics` in the Prometheus text format: request counts by verb and
//! code, request latency, and requests in flight. Recorded by the request
//! tracing middleware, so every route is covered without per-handler code.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

#[derive(Default)]
struct Latency {
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Metrics {
    requests: BTreeMap<(&'static str, u16), u64>,
    latency: BTreeMap<&'static str, Latency>,
    /// Lists answered by a watch cache, by (group, resource).
    cache_lists: BTreeMap<(&'static str, &'static str), u64>,
    /// etcd requests by operation (`put`, `get`, `range`, …), retries included.
    etcd_latency: BTreeMap<&'static str, Latency>,
}

static METRICS: Mutex<Option<Metrics>> = Mutex::new(None);
static INFLIGHT: AtomicI64 = AtomicI64::new(0);

/// The Kubernetes-style verb of a request: watches and lists are told apart
/// from plain GETs by their query.
pub fn verb(method: &axum::http::Method, query: Option<&str>) -> &'static str {
    let watch = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    match method.as_str() {
        "GET" if watch => "WATCH",
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

/// Counts a request as in flight until the guard drops.
pub struct InFlight(());

impl InFlight {
    pub fn start() -> InFlight {
        INFLIGHT.fetch_add(1, Ordering::Relaxed);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        INFLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Latency {
    fn observe(&mut self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    /// One histogram family member in the text format.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (bound, n) in BUCKETS.iter().zip(self.buckets.iter()) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// Record one finished request (time to response headers).
pub fn record(verb: &'static str, code: u16, elapsed: Duration) {
    let Ok(mut guard) = METRICS.lock() else {
        return;
    };
    let m = guard.get_or_insert_with(Metrics::default);
    *m.requests.entry((verb, code)).or_insert(0) += 1;
    m.latency.entry(verb).or_default().observe(elapsed);
}

/// Records the time of one etcd request when dropped (so a request that
/// fails or is cancelled counts too).
pub struct EtcdTimer {
    operation: &'static str,
    started: std::time::Instant,
}

impl EtcdTimer {
    pub fn new(operation: &'static str, started: std::time::Instant) -> EtcdTimer {
        EtcdTimer { operation, started }
    }
}

impl Drop for EtcdTimer {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        let Ok(mut guard) = METRICS.lock() else {
            return;
        };
        let m = guard.get_or_insert_with(Metrics::default);
        m.etcd_latency
            .entry(self.operation)
            .or_default()
            .observe(elapsed);
    }
}

/// Count and total seconds of the etcd requests of `operation` so far.
pub fn etcd_requests(operation: &str) -> (u64, f64) {
    let Ok(guard) = METRICS.lock() else {
        return (0, 0.0);
    };
    guard
        .as_ref()
        .and_then(|m| m.etcd_latency.get(operation))
        .map_or((0, 0.0), |l| (l.count, l.sum))
}

/// Record one list answered from a resource's watch cache instead of the store.
pub fn record_cache_list(group: &'static str, resource: &'static str) {
    let Ok(mut guard) = METRICS.lock() else {
        return;
    };
    let m = guard.get_or_insert_with(Metrics::default);
    *m.cache_lists.entry((group, resource)).or_insert(0) += 1;
}

/// The current metrics in the Prometheus text exposition format.
pub fn render() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP apiserver_request_total Requests served, by verb and HTTP code."
    );
    let _ = writeln!(out, "# TYPE apiserver_request_total counter");
    let snapshot = METRICS.lock().ok();
    if let Some(m) = snapshot.as_ref().and_then(|g| g.as_ref()) {
        for ((verb, code), n) in &m.requests {
            let _ = writeln!(
                out,
                "apiserver_request_total{{verb=\"{verb}\",code=\"{code}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP apiserver_request_duration_seconds Time to response headers, by verb."
        );
        let _ = writeln!(out, "# TYPE apiserver_request_duration_seconds histogram");
        for (verb, l) in &m.latency {
            l.render(
                &mut out,
                "apiserver_request_duration_seconds",
                &format!("verb=\"{verb}\""),
            );
        }
        let _ = writeln!(
            out,
            "# HELP etcd_request_duration_seconds etcd request latency, by operation (retries included)."
        );
        let _ = writeln!(out, "# TYPE etcd_request_duration_seconds histogram");
        for (operation, l) in &m.etcd_latency {
            l.render(
                &mut out,
                "etcd_request_duration_seconds",
                &format!("operation=\"{operation}\""),
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP apiserver_cache_list_total Lists served from the watch cache, by resource."
    );
    let _ = writeln!(out, "# TYPE apiserver_cache_list_total counter");
    if let Some(m) = snapshot.as_ref().and_then(|g| g.as_ref()) {
        for ((group, resource), n) in &m.cache_lists {
            // Kubernetes' spelling of a resource: `pods`, `deployments.apps`.
            let name = if group.is_empty() {
                (*resource).to_string()
            } else {
                format!("{resource}.{group}")
            };
            let _ = writeln!(out, "apiserver_cache_list_total{{resource=\"{name}\"}} {n}");
        }
    }
    drop(snapshot);
    let _ = writeln!(
        out,
        "# HELP apiserver_current_inflight_requests Requests being handled (until their response starts)."
    );
    let _ = writeln!(out, "# TYPE apiserver_current_inflight_requests gauge");
    let _ = writeln!(
        out,
        "apiserver_current_inflight_requests {}",
        INFLIGHT.load(Ordering::Relaxed)
    );
    out
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(),
    )
        .into_response()
}
