//! `api-read`: ConfigMap gets and lists over HTTPS by N concurrent clients
//! against an in-process API server on the embedded store and on a real
//! etcd, beside raw etcd gets (one key) and range reads (the same number of
//! keys) at the same concurrency on a reference etcd of its own.

use std::time::Duration;

use anyhow::{Result, bail};
use wasmkube_apiserver::StoreBackend;
use wasmkube_apiserver::storage::etcd::{EtcdOptions, RawPuts};

use crate::api_create::configmap;
use crate::etcd::Etcd;
use crate::load::{Outcome, closed_loop};
use crate::report::{Row, status};
use crate::scheduler::ApiServer;
use crate::stats::{Summary, ms, summarize};

pub struct Params {
    pub clients: usize,
    /// Single-object gets per store.
    pub gets: usize,
    /// Full lists per store.
    pub lists: usize,
    /// ConfigMaps in the namespace (each list returns all of them).
    pub objects: usize,
    pub etcd_binary: String,
}

/// Target of issue #10: API on etcd at ≥ 50% of raw etcd throughput.
const TARGET_RATIO: f64 = 0.5;

const NAMESPACE: &str = "bench-read";

struct Reads {
    gets: Outcome,
    lists: Outcome,
}

fn check(name: &str, o: &Outcome) -> Result<()> {
    if o.latencies.is_empty() || o.errors > 0 {
        bail!(
            "{name}: {} of {} operations failed; first error: {}",
            o.errors,
            o.errors + o.latencies.len(),
            o.first_error.as_deref().unwrap_or("none")
        );
    }
    Ok(())
}

async fn get_ok(c: &reqwest::Client, url: &str, token: &str) -> Result<()> {
    let resp = c.get(url).bearer_auth(token).send().await?;
    let code = resp.status();
    // The whole body is read: a list's cost includes sending it.
    let body = resp.bytes().await?;
    if !code.is_success() {
        bail!(
            "GET {url} answered {code}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

/// Populates `objects` ConfigMaps, then gets and lists them.
async fn api_reads(store: StoreBackend, p: &Params) -> Result<Reads> {
    let api = ApiServer::start(store).await?;
    let ca = reqwest::Certificate::from_pem(api.running.ca_pem.as_bytes())?;
    let token = api.running.admin_token.clone();
    let client = || {
        reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(ca.clone())
            .timeout(Duration::from_secs(60))
            .build()
    };
    let base = api.running.url.clone();
    let setup = client()?;
    let ns = serde_json::json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": NAMESPACE } });
    let resp = setup
        .post(format!("{base}/api/v1/namespaces"))
        .bearer_auth(&token)
        .json(&ns)
        .send()
        .await?;
    if resp.status().as_u16() != 201 {
        bail!("creating namespace {NAMESPACE}: {}", resp.status());
    }
    let url = format!("{base}/api/v1/namespaces/{NAMESPACE}/configmaps");
    let fill = closed_loop(p.clients, p.objects, |_| {
        let c = setup.clone();
        let url = url.clone();
        let token = token.clone();
        move |i| {
            let c = c.clone();
            let url = url.clone();
            let token = token.clone();
            async move { crate::api_create::post(&c, &url, &token, &configmap(i)).await }
        }
    })
    .await?;
    check("populating ConfigMaps", &fill)?;

    let mut clients = Vec::with_capacity(p.clients);
    for _ in 0..p.clients {
        clients.push(client()?);
    }
    // Warm-up: connections and TLS of every client.
    for c in &clients {
        get_ok(c, &format!("{url}/bench-0"), &token).await?;
    }
    let objects = p.objects.max(1);
    let gets = closed_loop(p.clients, p.gets, |w| {
        let c = clients[w].clone();
        let url = url.clone();
        let token = token.clone();
        move |i| {
            let c = c.clone();
            let url = format!("{url}/bench-{}", i % objects);
            let token = token.clone();
            async move { get_ok(&c, &url, &token).await }
        }
    })
    .await?;
    let lists = closed_loop(p.clients, p.lists, |w| {
        let c = clients[w].clone();
        let url = url.clone();
        let token = token.clone();
        move |_| {
            let c = c.clone();
            let url = url.clone();
            let token = token.clone();
            async move { get_ok(&c, &url, &token).await }
        }
    })
    .await?;
    api.stop().await;
    Ok(Reads { gets, lists })
}

/// Raw etcd gets of one key and range reads of `objects` keys, same
/// concurrency, one gRPC channel, on an etcd of its own.
async fn raw_reads(endpoint: &str, p: &Params) -> Result<Reads> {
    let raw = RawPuts::connect(endpoint).await?;
    let value = serde_json::to_vec(&configmap(0))?;
    for i in 0..p.objects {
        raw.put(format!("/bench-raw/configmaps/{i:06}"), value.clone())
            .await?;
    }
    let objects = p.objects.max(1);
    let gets = closed_loop(p.clients, p.gets, |_| {
        let raw = raw.clone();
        move |i| {
            let raw = raw.clone();
            async move {
                match raw
                    .get(format!("/bench-raw/configmaps/{:06}", i % objects))
                    .await?
                {
                    Some(_) => Ok(()),
                    None => bail!("raw get found nothing"),
                }
            }
        }
    })
    .await?;
    let want = p.objects;
    let lists = closed_loop(p.clients, p.lists, |_| {
        let raw = raw.clone();
        move |_| {
            let raw = raw.clone();
            async move {
                let n = raw.get_prefix("/bench-raw/configmaps/".to_string()).await?;
                if n != want {
                    bail!("raw range read {n} keys, not {want}");
                }
                Ok(())
            }
        }
    })
    .await?;
    Ok(Reads { gets, lists })
}

pub async fn run(p: &Params, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<()> {
    let scenario = format!(
        "api-read (c={}, {} gets, {} lists of {})",
        p.clients, p.gets, p.lists, p.objects
    );
    eprintln!("api-read: embedded store…");
    let mut embedded = api_reads(StoreBackend::Embedded, p).await?;
    check("API gets on the embedded store", &embedded.gets)?;
    check("API lists on the embedded store", &embedded.lists)?;

    eprintln!("api-read: raw etcd reads on a reference etcd…");
    let reference = Etcd::start(&p.etcd_binary).await?;
    let mut raw = raw_reads(&reference.client_url, p).await?;
    check("raw etcd gets", &raw.gets)?;
    check("raw etcd range reads", &raw.lists)?;
    drop(reference);

    eprintln!("api-read: API on a fresh etcd…");
    let etcd = Etcd::start(&p.etcd_binary).await?;
    let mut on_etcd = api_reads(
        StoreBackend::Etcd(EtcdOptions {
            endpoints: vec![etcd.client_url.clone()],
            prefix: "/wasmkube-bench".to_string(),
            ..EtcdOptions::default()
        }),
        p,
    )
    .await?;
    check("API gets on etcd", &on_etcd.gets)?;
    check("API lists on etcd", &on_etcd.lists)?;
    drop(etcd);

    for (op, pick) in [("get", 0usize), ("list", 1)] {
        let sel = |r: &mut Reads| -> (f64, Summary) {
            let o = if pick == 0 { &mut r.gets } else { &mut r.lists };
            (o.throughput(), summarize(&mut o.latencies))
        };
        let (e_tp, e) = sel(&mut embedded);
        let (r_tp, r) = sel(&mut raw);
        let (a_tp, a) = sel(&mut on_etcd);
        let raw_name = if pick == 0 {
            "raw etcd gets"
        } else {
            "raw etcd range reads"
        };
        rows.push(Row {
            scenario: scenario.clone(),
            metric: format!("embedded: {op}s/s · p50 / p99"),
            value: format!("{e_tp:.0}/s · {} / {}", ms(e.p50), ms(e.p99)),
            reference: format!("{raw_name} {r_tp:.0}/s"),
            ratio: format!("{:.0}%", 100.0 * e_tp / r_tp),
            target: "—".into(),
            status: "—".into(),
        });
        let ratio = a_tp / r_tp;
        rows.push(Row {
            scenario: scenario.clone(),
            metric: format!("etcd: {op}s/s · p50 / p99"),
            value: format!("{a_tp:.0}/s · {} / {}", ms(a.p50), ms(a.p99)),
            reference: format!("{raw_name} {r_tp:.0}/s · {} / {}", ms(r.p50), ms(r.p99)),
            ratio: format!("{:.0}%", 100.0 * ratio),
            target: "≥ 50% of raw".into(),
            status: status(ratio >= TARGET_RATIO),
        });
    }
    notes.push(format!(
        "api-read: {} concurrent HTTPS clients (one connection each, admin token) against an in-process server, after {} ConfigMaps (~0.4 KB) were created in namespace {NAMESPACE}: {} GETs of one ConfigMap (round-robin over them), then {} full LISTs of the namespace ({} objects each, body read to the end). Raw reference on a separate, identically started single-member etcd: {} plain gets of one key and {} prefix range reads of {} keys of the same JSON, same concurrency, one gRPC channel (`RawPuts`). The API's GETs and LISTs carry no resourceVersion, so both read the store (consistent reads, kube-apiserver's default), not the watch cache that serves resourceVersion=0 lists.",
        p.clients, p.objects, p.gets, p.lists, p.objects, p.gets, p.lists, p.objects
    ));
    Ok(())
}
