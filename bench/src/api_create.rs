//! `api-create`: ConfigMap creates over HTTPS by N concurrent clients against
//! an in-process API server on the embedded store and on a real etcd, beside
//! raw etcd puts of the same size at the same concurrency.

use std::time::Duration;

use anyhow::{Result, bail};
use wasmkube_apiserver::StoreBackend;
use wasmkube_apiserver::storage::etcd::{EtcdOptions, RawPuts};

use crate::etcd::Etcd;
use crate::load::{Outcome, closed_loop};
use crate::report::{Row, status};
use crate::scheduler::ApiServer;
use crate::stats::{mean, ms, summarize};

pub struct Params {
    pub clients: usize,
    pub creates: usize,
    pub etcd_binary: String,
}

/// Target of issue #10: API on etcd at ≥ 50% of raw etcd put throughput.
const TARGET_RATIO: f64 = 0.5;
/// Target of issue #10: p99 of mutating requests ≤ 50 ms.
const TARGET_P99: Duration = Duration::from_millis(50);

pub fn configmap(i: usize) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": format!("bench-{i}"), "labels": { "bench": "api-create" } },
        "data": { "payload": "x".repeat(256) },
    })
}

/// Creates through the API of an in-process server on `store`.
async fn api_creates(store: StoreBackend, p: &Params) -> Result<Outcome> {
    let api = ApiServer::start(store).await?;
    let running = &api.running;
    let url = format!("{}/api/v1/namespaces/default/configmaps", running.url);
    let ca = reqwest::Certificate::from_pem(running.ca_pem.as_bytes())?;
    let token = running.admin_token.clone();
    let client = || {
        reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(ca.clone())
            .timeout(Duration::from_secs(60))
            .build()
    };
    // Warm-up: connections, TLS, the namespace's first write.
    let warm = client()?;
    for i in 0..20 {
        post(&warm, &url, &token, &configmap(1_000_000_000 + i)).await?;
    }
    let mut clients = Vec::with_capacity(p.clients);
    for _ in 0..p.clients {
        clients.push(client()?);
    }
    let outcome = closed_loop(p.clients, p.creates, |w| {
        let c = clients[w].clone();
        let url = url.clone();
        let token = token.clone();
        move |i| {
            let c = c.clone();
            let url = url.clone();
            let token = token.clone();
            async move { post(&c, &url, &token, &configmap(i)).await }
        }
    })
    .await;
    api.stop().await;
    outcome
}

pub async fn post(
    c: &reqwest::Client,
    url: &str,
    token: &str,
    body: &serde_json::Value,
) -> Result<()> {
    let resp = c.post(url).bearer_auth(token).json(body).send().await?;
    let code = resp.status();
    if code.as_u16() != 201 {
        bail!(
            "create answered {code}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// Raw etcd puts of a value the size of a stored ConfigMap, one shared
/// client (one gRPC channel, as the API server uses), same concurrency.
///
/// This is the reference measurement, not a cluster component: it runs
/// against an etcd of its own (started like the one under the API server,
/// and stopped before that one starts), so nothing but the API server ever
/// touches the cluster's store.
async fn raw_puts(endpoint: &str, p: &Params) -> Result<Outcome> {
    let client = RawPuts::connect(endpoint).await?;
    raw_loop(&client, p, |client, key, value| async move {
        client.put(key, value).await?;
        Ok(())
    })
    .await
}

/// The same creates as the etcd transactions the API server sends for
/// them (put if absent), with one watch open on their prefix as the API
/// server's watch cache keeps one: what etcd itself does per API create.
async fn raw_watched_creates(endpoint: &str, p: &Params) -> Result<Outcome> {
    let client = RawPuts::connect(endpoint).await?;
    let watch = RawPuts::watch_prefix(endpoint, "/bench-raw/").await?;
    let outcome = raw_loop(&client, p, |client, key, value| async move {
        if !client.create(key.clone(), value).await? {
            bail!("{key} existed");
        }
        Ok(())
    })
    .await;
    watch.abort();
    outcome
}

/// `op(client, key, value)` for 20 untimed warm-up keys, then for
/// `p.creates` keys of ConfigMap-sized JSON from `p.clients` workers.
async fn raw_loop<F, Fut>(client: &RawPuts, p: &Params, op: F) -> Result<Outcome>
where
    F: Fn(RawPuts, String, Vec<u8>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let value = serde_json::to_vec(&configmap(0))?;
    for i in 0..20 {
        op(
            client.clone(),
            format!("/bench-raw/warm-{i}"),
            value.clone(),
        )
        .await?;
    }
    closed_loop(p.clients, p.creates, |_| {
        let (client, value, op) = (client.clone(), value.clone(), op.clone());
        move |i| op(client.clone(), format!("/bench-raw/cm-{i}"), value.clone())
    })
    .await
}

fn check(name: &str, o: &Outcome) -> Result<()> {
    if o.latencies.is_empty() {
        bail!(
            "{name}: every operation failed; first error: {}",
            o.first_error.as_deref().unwrap_or("none")
        );
    }
    Ok(())
}

fn errors(o: &Outcome) -> String {
    if o.errors == 0 {
        String::new()
    } else {
        format!(
            " ({} errors: {})",
            o.errors,
            o.first_error.as_deref().unwrap_or("")
        )
    }
}

pub async fn run(p: &Params, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<()> {
    let scenario = format!("api-create (c={}, n={})", p.clients, p.creates);
    eprintln!("api-create: embedded store…");
    let mut embedded = api_creates(StoreBackend::Embedded, p).await?;
    check("API on the embedded store", &embedded)?;

    eprintln!("api-create: raw etcd puts on a reference etcd…");
    let reference = Etcd::start(&p.etcd_binary).await?;
    let mut raw = raw_puts(&reference.client_url, p).await?;
    check("raw etcd puts", &raw)?;
    drop(reference);
    eprintln!("api-create: raw etcd creates, watched, on another reference etcd…");
    let reference = Etcd::start(&p.etcd_binary).await?;
    let watched = raw_watched_creates(&reference.client_url, p).await?;
    check("raw etcd creates (watched)", &watched)?;
    drop(reference);
    eprintln!("api-create: API on a fresh etcd…");
    let etcd = Etcd::start(&p.etcd_binary).await?;
    let puts_before = wasmkube_apiserver::metrics::etcd_requests("put");
    let mut on_etcd = api_creates(
        StoreBackend::Etcd(EtcdOptions {
            endpoints: vec![etcd.client_url.clone()],
            prefix: "/wasmkube-bench".to_string(),
            ..EtcdOptions::default()
        }),
        p,
    )
    .await?;
    check("API on etcd", &on_etcd)?;
    drop(etcd);
    // What the API server waited for etcd per create (its own metric).
    let puts_after = wasmkube_apiserver::metrics::etcd_requests("put");
    let etcd_puts = puts_after.0.saturating_sub(puts_before.0);
    let etcd_put_mean =
        Duration::from_secs_f64((puts_after.1 - puts_before.1).max(0.0) / etcd_puts.max(1) as f64);

    let (e, r, a) = (
        summarize(&mut embedded.latencies),
        summarize(&mut raw.latencies),
        summarize(&mut on_etcd.latencies),
    );
    let ratio = on_etcd.throughput() / raw.throughput();
    let p99_row = |store: &str, s: crate::stats::Summary, reference: String, o: &Outcome| Row {
        scenario: scenario.clone(),
        metric: format!("{store}: create latency p50 / p99"),
        value: format!("{} / {}{}", ms(s.p50), ms(s.p99), errors(o)),
        reference,
        ratio: String::new(),
        target: format!("p99 ≤ {}", ms(TARGET_P99)),
        status: status(s.p99 <= TARGET_P99),
    };
    rows.push(Row {
        scenario: scenario.clone(),
        metric: "embedded: creates/s".into(),
        value: format!("{:.0}/s", embedded.throughput()),
        reference: format!("raw etcd puts {:.0}/s", raw.throughput()),
        ratio: format!("{:.0}%", 100.0 * embedded.throughput() / raw.throughput()),
        target: "—".into(),
        status: "—".into(),
    });
    rows.push(p99_row("embedded", e, String::new(), &embedded));
    rows.push(Row {
        scenario: scenario.clone(),
        metric: "etcd: creates/s".into(),
        value: format!("{:.0}/s", on_etcd.throughput()),
        reference: format!(
            "raw etcd puts {:.0}/s · raw etcd creates as the API sends them, prefix watched {:.0}/s",
            raw.throughput(),
            watched.throughput()
        ),
        ratio: format!(
            "{:.0}% · {:.0}%",
            100.0 * ratio,
            100.0 * on_etcd.throughput() / watched.throughput()
        ),
        target: "≥ 50% of raw".into(),
        status: status(ratio >= TARGET_RATIO),
    });
    rows.push(p99_row(
        "etcd",
        a,
        format!("raw put p50 / p99 {} / {}", ms(r.p50), ms(r.p99)),
        &on_etcd,
    ));
    notes.push(format!(
        "api-create: {} concurrent HTTPS clients (one connection pool each) create {} ConfigMaps (~0.4 KB) as admin against an in-process server; the raw reference is {} plain etcd puts of the same JSON at the same concurrency over one gRPC channel, on a separate, identically started single-member etcd (data dir on the run's temp dir), stopped before the API's own fresh etcd starts — nothing but the API server touches the cluster's store. Second reference, on a third fresh etcd: the same creates as the transactions the API server sends for them (put if the key is absent) with one watch with previous values open on their prefix, as the API server's watch cache keeps: what etcd itself does per API create.",
        p.clients, p.creates, p.creates
    ));
    notes.push(format!(
        "api-create on etcd: the API server's etcd transactions for the creates ({etcd_puts}, from its `etcd_request_duration_seconds{{operation=\"put\"}}`) took {} on average, of a create's mean {} (the rest is the API server's own work and its queueing on the two cores etcd shares); at the same concurrency a raw put took {} on average and a watched raw create {}.",
        ms(etcd_put_mean),
        ms(mean(&on_etcd.latencies)),
        ms(mean(&raw.latencies)),
        ms(mean(&watched.latencies)),
    ));
    Ok(())
}
