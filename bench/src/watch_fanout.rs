//! `watch-fanout`: W watchers of ConfigMaps on an in-process API server
//! (embedded store), one writer creating ConfigMaps at a steady rate; the
//! delivery latency is from the writer sending a create to each watcher
//! reading its ADDED event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use futures::StreamExt;
use wasmkube_apiserver::Config;

use crate::report::{Row, status};
use crate::scheduler::ApiServer;
use crate::stats::{ms, summarize};

pub struct Params {
    pub watchers: usize,
    pub events: usize,
    pub rate: f64,
}

/// Target of issue #10: p99 event delivery ≤ 100 ms.
const TARGET_P99: Duration = Duration::from_millis(100);

type Arrivals = Vec<(String, Instant)>;

pub async fn run(p: &Params, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<()> {
    let api = ApiServer::start_with(Config {
        max_connections: p.watchers + 64,
        ..Config::default()
    })
    .await?;
    let running = &api.running;
    let ca = reqwest::Certificate::from_pem(running.ca_pem.as_bytes())?;
    let client = || {
        reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(ca.clone())
            .timeout(Duration::from_secs(3600))
            .build()
    };
    let base = format!("{}/api/v1/namespaces/default/configmaps", running.url);
    let token = running.admin_token.clone();

    eprintln!("watch-fanout: opening {} watches…", p.watchers);
    let mut watchers = Vec::with_capacity(p.watchers);
    for _ in 0..p.watchers {
        // One client (one connection) per watcher, as separate informers would.
        let resp = client()?
            .get(format!(
                "{base}?watch=true&labelSelector=bench%3Dwatch-fanout"
            ))
            .bearer_auth(&token)
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("watch answered {}", resp.status());
        }
        let want = p.events;
        watchers.push(tokio::spawn(async move {
            let mut got: Arrivals = Vec::with_capacity(want);
            let mut body = resp.bytes_stream();
            let mut buf = Vec::new();
            while got.len() < want {
                let Some(chunk) = body.next().await else {
                    break;
                };
                let now = Instant::now();
                buf.extend_from_slice(&chunk?);
                while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let Ok(ev) = serde_json::from_slice::<serde_json::Value>(&line) else {
                        continue;
                    };
                    if ev["type"] == "ADDED"
                        && let Some(name) = ev["object"]["metadata"]["name"].as_str()
                    {
                        got.push((name.to_string(), now));
                    }
                }
            }
            Ok::<_, anyhow::Error>(got)
        }));
    }

    eprintln!(
        "watch-fanout: writing {} ConfigMaps at {}/s…",
        p.events, p.rate
    );
    let writer = client()?;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / p.rate));
    for i in 0..p.events {
        tick.tick().await;
        let name = format!("fanout-{i}");
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": name, "labels": { "bench": "watch-fanout" } },
            "data": { "payload": "x".repeat(256) },
        });
        sent.lock()
            .map_err(|_| anyhow!("poisoned"))?
            .insert(name.clone(), Instant::now());
        let resp = writer
            .post(&base)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await?;
        if resp.status().as_u16() != 201 {
            bail!("creating {name}: {}", resp.status());
        }
    }

    let mut lat = Vec::with_capacity(p.watchers * p.events);
    let mut short = 0;
    let sent = sent.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    for w in watchers {
        match tokio::time::timeout(Duration::from_secs(60), w).await {
            Ok(joined) => {
                let got = joined??;
                if got.len() < p.events {
                    short += 1;
                }
                lat.extend(
                    got.iter().filter_map(|(n, at)| {
                        sent.get(n).map(|s| at.saturating_duration_since(*s))
                    }),
                );
            }
            Err(_) => short += 1,
        }
    }
    api.stop().await;

    let s = summarize(&mut lat);
    let missing = if short > 0 {
        format!(" ({short} watchers missed events)")
    } else {
        String::new()
    };
    rows.push(Row {
        scenario: format!("watch-fanout (w={}, {} events)", p.watchers, p.events),
        metric: "delivery latency p50 / p99 / max".into(),
        value: format!("{} / {} / {}{missing}", ms(s.p50), ms(s.p99), ms(s.max)),
        reference: "—".into(),
        ratio: String::new(),
        target: format!("p99 ≤ {}", ms(TARGET_P99)),
        status: status(short == 0 && s.p99 <= TARGET_P99),
    });
    notes.push(format!(
        "watch-fanout: {} watches (one HTTPS connection each) on ConfigMaps of an in-process server on the embedded store; one writer creates {} ConfigMaps at {}/s; latency from the writer sending a create to each watcher reading the ADDED event ({} samples). The watchers run in the harness process, on the same cores as the server.",
        p.watchers, p.events, p.rate, s.count
    ));
    Ok(())
}
