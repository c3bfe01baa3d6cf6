//! `cost-growth`: does a pod start as fast with 10,000 pods in the cluster
//! as with 10, and does a full list cost a constant amount per pod?
//!
//! An in-process API server (embedded store), the scheduler in-process and
//! H hollow nodes. At each step the cluster is filled up to E existing pods
//! (created already bound, round-robin over the hollow nodes, and reported
//! Running by them); then M measured pods are created at R/s without a node
//! and their create → Running (seen by a watch) p50/p99 is recorded; then a
//! full `GET /api/v1/pods` is timed (median of a few) and divided by the
//! number of pods it returned.
//!
//! The measured pods run on hollow nodes too, not as real wasm on the
//! all-in-one's node: what can grow with the number of existing pods is the
//! control plane's work — the store, the watch fan-out and filtering, the
//! scheduler's per-pod pass over its caches — and hollow nodes exercise all
//! of it, while a kubelet only ever sees its own pods, so a real node would
//! add the constant instance start measured by `pod-startup` (and, on 2
//! shared cores, noise that hides the trend).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;

use crate::hollow::{HollowConfig, HollowNodes};
use crate::report::{Row, status};
use crate::scheduler::{ApiServer, SeenMap, create_pods, observe, pod_manifest, wait_seen};
use crate::stats::{Summary, ms, summarize};

pub struct Params {
    /// Existing pod counts, ascending (e.g. 10, 100, 1,000, 10,000).
    pub steps: Vec<usize>,
    pub nodes: usize,
    /// Measured pods per step.
    pub measured: usize,
    /// Their creation rate per second.
    pub rate: f64,
    /// Concurrent creates while filling.
    pub clients: usize,
}

/// Target of issue #10: startup p99 flat within ±25 %.
const TARGET_FLAT: f64 = 0.25;
/// "Linear": the per-pod cost of the largest list within 25 % of the
/// per-pod cost at 1,000 pods (below that, fixed costs dominate a list).
const TARGET_LINEAR: f64 = 0.25;
/// Full lists timed per point (the median is reported).
const LIST_REPS: usize = 5;

const NAMESPACE: &str = "default";

struct Step {
    existing: usize,
    startup: Summary,
    /// (median latency, pods returned, bytes) of a full list.
    list: Option<(Duration, usize, usize)>,
}

/// Creates `count` pods named `<prefix><i>` at `rate`/s, each create in its
/// own task so a slow answer does not delay the next one; the send times.
async fn create_at_rate(
    client: &kube::Client,
    prefix: &str,
    count: usize,
    rate: f64,
) -> Result<HashMap<String, Instant>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        tick.tick().await;
        let name = format!("{prefix}{i}");
        let pod = pod_manifest(&name, None)?;
        let api = api.clone();
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            sent.lock()
                .map_err(|_| anyhow!("poisoned"))?
                .insert(name, Instant::now());
            api.create(&PostParams::default(), &pod).await?;
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let sent = sent.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    Ok(sent)
}

/// Median time of a full `GET /api/v1/pods`, the pods it returned and its
/// size.
async fn list_cost(api: &ApiServer) -> Result<(Duration, usize, usize)> {
    let ca = reqwest::Certificate::from_pem(api.running.ca_pem.as_bytes())?;
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(120))
        .build()?;
    let url = format!("{}/api/v1/pods", api.running.url);
    let mut times = Vec::with_capacity(LIST_REPS);
    let (mut items, mut bytes) = (0, 0);
    // One untimed list first: the connection and TLS.
    for rep in 0..=LIST_REPS {
        let t = Instant::now();
        let resp = http
            .get(&url)
            .bearer_auth(&api.running.admin_token)
            .send()
            .await?;
        let code = resp.status();
        let body = resp.bytes().await?;
        let took = t.elapsed();
        if !code.is_success() {
            bail!("GET /api/v1/pods answered {code}");
        }
        if rep > 0 {
            times.push(took);
        }
        bytes = body.len();
        items = serde_json::from_slice::<serde_json::Value>(&body)?["items"]
            .as_array()
            .map_or(0, Vec::len);
    }
    times.sort_unstable();
    Ok((times[times.len() / 2], items, bytes))
}

fn per_pod(d: Duration, pods: usize) -> Duration {
    d / u32::try_from(pods.max(1)).unwrap_or(u32::MAX)
}

/// Are all p99s within ±`band` of the first?
fn flat(p99s: &[Duration], band: f64) -> bool {
    let Some(first) = p99s.first() else {
        return true;
    };
    let base = first.as_secs_f64().max(f64::EPSILON);
    p99s.iter()
        .all(|d| (d.as_secs_f64() / base - 1.0).abs() <= band)
}

pub async fn run(p: &Params, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<()> {
    let api = ApiServer::start(wasmkube_apiserver::StoreBackend::Embedded).await?;
    let client = api.client().await?;
    let stop = CancellationToken::new();
    let seen = observe(client.clone(), NAMESPACE, stop.clone());
    eprintln!("cost-growth: registering {} hollow nodes…", p.nodes);
    let hollow = HollowNodes::start(p.nodes, client.clone(), HollowConfig::default()).await?;
    let sched_stop = CancellationToken::new();
    let sched = tokio::spawn(wasmkube_scheduler::run(
        client.clone(),
        wasmkube_scheduler::SchedulerConfig::default(),
        sched_stop.clone(),
    ));
    let result = steps(p, &api, &client, &seen, hollow.names().to_vec()).await;
    let errors = hollow.stats().errors;
    sched_stop.cancel();
    let _ = sched.await;
    stop.cancel();
    hollow.stop().await;
    api.stop().await;
    let steps = result?;

    let scenario = format!(
        "cost-growth ({}→{} pods, {} nodes)",
        p.steps.first().copied().unwrap_or(0),
        p.steps.last().copied().unwrap_or(0),
        p.nodes
    );
    let p99s: Vec<Duration> = steps.iter().map(|s| s.startup.p99).collect();
    let series = steps
        .iter()
        .map(|s| {
            format!(
                "{}: {} / {}",
                s.existing,
                ms(s.startup.p50),
                ms(s.startup.p99)
            )
        })
        .collect::<Vec<_>>()
        .join(" · ");
    let spread = match (p99s.first(), p99s.iter().max()) {
        (Some(first), Some(max)) => format!(
            "max/first {:.2}×",
            max.as_secs_f64() / first.as_secs_f64().max(f64::EPSILON)
        ),
        _ => String::new(),
    };
    rows.push(Row {
        scenario: scenario.clone(),
        metric: "pod startup p50 / p99 by existing pods".into(),
        value: series,
        reference: format!(
            "first step ({} pods)",
            p.steps.first().copied().unwrap_or(0)
        ),
        ratio: spread,
        target: "p99 flat ±25%".into(),
        status: status(flat(&p99s, TARGET_FLAT)),
    });
    let lists: Vec<(usize, Duration, usize, usize)> = steps
        .iter()
        .filter_map(|s| s.list.map(|(d, n, b)| (s.existing, d, n, b)))
        .collect();
    let list_series = lists
        .iter()
        .map(|(_, d, n, _)| {
            format!(
                "{n}: {} ({:.1} µs/pod)",
                ms(*d),
                per_pod(*d, *n).as_secs_f64() * 1e6
            )
        })
        .collect::<Vec<_>>()
        .join(" · ");
    let at_1000 = lists.iter().find(|(_, _, n, _)| *n >= 1_000);
    let largest = lists.last();
    let (ratio, linear) = match (at_1000, largest) {
        (Some(a), Some(b)) => {
            let r =
                per_pod(b.1, b.2).as_secs_f64() / per_pod(a.1, a.2).as_secs_f64().max(f64::EPSILON);
            (
                format!("{:.2}× per pod ({} vs {})", r, b.2, a.2),
                r <= 1.0 + TARGET_LINEAR,
            )
        }
        _ => (String::new(), false),
    };
    rows.push(Row {
        scenario,
        metric: "full list GET /api/v1/pods (median)".into(),
        value: list_series,
        reference: "per-pod cost at ~1,000 pods".into(),
        ratio,
        target: "linear".into(),
        status: status(linear),
    });
    let sizes = lists
        .iter()
        .map(|(_, _, n, b)| format!("{n} pods = {:.0} KiB", *b as f64 / 1024.0))
        .collect::<Vec<_>>()
        .join(", ");
    notes.push(format!(
        "cost-growth: in-process API server (embedded store), scheduler in-process, {} hollow nodes ({} API errors). At each step existing pods are created already bound (round-robin over the hollow nodes) and reported Running; then {} pods are created at {}/s without a node, scheduled onto hollow nodes and reported Running by them; startup = create sent → Running seen by a watch. Measured pods stay, so each step's count includes the earlier steps' measured pods. They run on hollow nodes rather than as real wasm because what can grow with the cluster is the control plane's per-pod work (store, watch fan-out, scheduler cache pass), which hollow nodes exercise fully, while a kubelet only sees its own pods; the constant instance start is pod-startup's figure. List: median of {LIST_REPS} full `GET /api/v1/pods` (no resourceVersion: read from the store) as admin over HTTPS, body read; linear = per-pod cost at the largest point within 25% of that at ~1,000 pods ({sizes}).",
        p.nodes, errors, p.measured, p.rate
    ));
    Ok(())
}

async fn steps(
    p: &Params,
    api: &ApiServer,
    client: &kube::Client,
    seen: &SeenMap,
    nodes: Vec<String>,
) -> Result<Vec<Step>> {
    if nodes.is_empty() {
        bail!("cost-growth needs hollow nodes");
    }
    let nodes = Arc::new(nodes);
    let mut out = Vec::new();
    let mut total = 0usize;
    for (k, &target) in p.steps.iter().enumerate() {
        if target > total {
            let add = target - total;
            eprintln!("cost-growth: filling to {target} pods (+{add})…");
            let n = nodes.clone();
            let offset = total;
            create_pods(
                client,
                &format!("existing-{k}-"),
                add,
                p.clients,
                move |i| n.get((offset + i) % n.len()).cloned(),
            )
            .await?;
            total = target;
        }
        let want = total;
        wait_seen(
            seen,
            Duration::from_secs(120) + Duration::from_millis(20) * want as u32,
            "existing pods Running",
            |s| s.running.len() >= want,
        )
        .await?;
        let list = if total >= 100 {
            Some(list_cost(api).await?)
        } else {
            None
        };
        eprintln!(
            "cost-growth: {total} pods; measuring {} startups at {}/s…",
            p.measured, p.rate
        );
        let prefix = format!("measure-{k}-");
        let sent = create_at_rate(client, &prefix, p.measured, p.rate).await?;
        total += p.measured;
        let want = total;
        wait_seen(
            seen,
            Duration::from_secs(60),
            "measured pods Running",
            |s| s.running.len() >= want,
        )
        .await?;
        let mut lat: Vec<Duration> = {
            let s = seen.lock().map_err(|_| anyhow!("poisoned"))?;
            sent.iter()
                .filter_map(|(n, at)| s.running.get(n).map(|r| r.saturating_duration_since(*at)))
                .collect()
        };
        let startup = summarize(&mut lat);
        eprintln!(
            "cost-growth: {target} pods: startup p50 {} p99 {}",
            ms(startup.p50),
            ms(startup.p99)
        );
        out.push(Step {
            existing: target,
            startup,
            list,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn flat_means_every_p99_within_the_band_of_the_first() {
        assert!(flat(&millis(&[10, 12, 8, 12]), 0.25));
        assert!(!flat(&millis(&[10, 12, 13]), 0.25));
        assert!(!flat(&millis(&[10, 7]), 0.25));
        assert!(flat(&[], 0.25));
    }

    #[test]
    fn per_pod_cost_divides_by_the_count() {
        assert_eq!(
            per_pod(Duration::from_millis(10), 1_000),
            Duration::from_micros(10)
        );
        assert_eq!(
            per_pod(Duration::from_millis(1), 0),
            Duration::from_millis(1)
        );
    }
}
