//! `cpu-share`: what `resources.limits.cpu` gives a busy loop. On the
//! release all-in-one server, `spin.wasm` pods limited to 250m and 750m run
//! side by side with an `idle` pod and a `counter` printing every 100 ms;
//! each spin prints its iteration count with its own elapsed milliseconds,
//! so its rate comes from its log. The reference, measured in the same run
//! on the same node just before: one spin pod without a limit, alone — one
//! core's worth of iterations per millisecond.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::pod_startup::{Server, build, push};
use crate::report::{Row, status};
use crate::stats::{ms, summarize};

pub struct Params {
    pub repo: PathBuf,
    /// How long each measurement window lasts.
    pub seconds: u64,
    pub build: bool,
}

/// The counter's print interval.
const COUNTER_INTERVAL: Duration = Duration::from_millis(100);

fn pod(name: &str, image: &str, cpu: Option<&str>, env: &[(&str, &str)]) -> serde_json::Value {
    let mut container = serde_json::json!({ "name": "main", "image": image });
    if let Some(cpu) = cpu {
        container["resources"] = serde_json::json!({ "limits": { "cpu": cpu } });
    }
    if !env.is_empty() {
        container["env"] = env
            .iter()
            .map(|(k, v)| serde_json::json!({ "name": k, "value": v }))
            .collect();
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "bench": "cpu-share" } },
        "spec": { "terminationGracePeriodSeconds": 0, "containers": [container] },
    })
}

fn pods_url(server: &Server) -> String {
    format!("{}/api/v1/namespaces/default/pods", server.url)
}

async fn create(server: &Server, pod: serde_json::Value) -> Result<()> {
    let resp = server
        .http
        .post(pods_url(server))
        .bearer_auth(&server.token)
        .json(&pod)
        .send()
        .await?;
    if resp.status().as_u16() != 201 {
        bail!(
            "creating {}: {} {}",
            pod["metadata"]["name"],
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

async fn get_pod(server: &Server, name: &str) -> Result<Option<serde_json::Value>> {
    let resp = server
        .http
        .get(format!("{}/{name}", pods_url(server)))
        .bearer_auth(&server.token)
        .send()
        .await?;
    if resp.status().as_u16() == 404 {
        return Ok(None);
    }
    Ok(Some(resp.error_for_status()?.json().await?))
}

async fn wait_running(server: &Server, names: &[&str]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    for name in names {
        loop {
            let phase = get_pod(server, name).await?.map(|p| {
                p["status"]["phase"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            });
            if phase.as_deref() == Some("Running") {
                break;
            }
            if Instant::now() > deadline {
                bail!("{name} is not Running (phase {phase:?}):\n{}", server.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

async fn delete_and_wait(server: &Server, name: &str) -> Result<()> {
    server
        .http
        .delete(format!("{}/{name}?gracePeriodSeconds=0", pods_url(server)))
        .bearer_auth(&server.token)
        .send()
        .await?
        .error_for_status()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while get_pod(server, name).await?.is_some() {
        if Instant::now() > deadline {
            bail!("{name} was not gone within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn log(server: &Server, name: &str, query: &str) -> Result<String> {
    let resp = server
        .http
        .get(format!("{}/{name}/log?{query}", pods_url(server)))
        .bearer_auth(&server.token)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("logs of {name}: {}", resp.status());
    }
    Ok(resp.text().await?)
}

/// The last `spins N ms T` line of a spin pod: (N, T).
async fn progress(server: &Server, name: &str) -> Result<(u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = log(server, name, "tailLines=1").await?;
        let mut w = text.split_whitespace();
        if let (Some("spins"), Some(n), Some("ms"), Some(t)) =
            (w.next(), w.next(), w.next(), w.next())
            && let (Ok(n), Ok(t)) = (n.parse(), t.parse())
        {
            return Ok((n, t));
        }
        if Instant::now() > deadline {
            bail!("{name} printed no progress line: {text:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Iterations per millisecond of each pod over a window of `seconds`,
/// by the guests' own clocks.
async fn rates(server: &Server, names: &[&str], seconds: u64) -> Result<Vec<f64>> {
    let mut first = Vec::new();
    for n in names {
        first.push(progress(server, n).await?);
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let mut out = Vec::new();
    for (n, (spins0, ms0)) in names.iter().zip(first) {
        let (spins1, ms1) = progress(server, n).await?;
        if ms1 <= ms0 {
            bail!("{n} made no progress in {seconds} s");
        }
        out.push((spins1 - spins0) as f64 / (ms1 - ms0) as f64);
    }
    Ok(out)
}

/// Gaps between the counter's lines over the last `seconds`, from the
/// kubelet's per-line timestamps.
async fn counter_gaps(server: &Server, seconds: u64) -> Result<Vec<Duration>> {
    let text = log(
        server,
        "counter",
        &format!("timestamps=true&sinceSeconds={seconds}"),
    )
    .await?;
    let times: Vec<jiff::Timestamp> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(ts, _)| ts.parse().ok())
        .collect();
    if times.len() < 2 {
        bail!("the counter printed {} lines in {seconds} s", times.len());
    }
    times
        .windows(2)
        .map(|w| {
            Duration::try_from(w[1].duration_since(w[0])).map_err(|e| anyhow!("timestamps: {e}"))
        })
        .collect()
}

/// Within ±30% of `want`.
fn near(got: f64, want: f64) -> bool {
    (got - want).abs() <= 0.3 * want
}

pub async fn run(p: &Params, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<()> {
    if p.build {
        build(&p.repo)?;
    }
    let bin = p.repo.join("target/release/wasmkube");
    let samples = p.repo.join("wasm-samples/target/wasm32-wasip1/release");
    for f in [&bin, &samples.join("spin.wasm")] {
        if !f.exists() {
            bail!("{} is missing: run without --no-build", f.display());
        }
    }
    let server = Server::start(&bin).await?;
    for m in ["spin", "idle", "counter"] {
        push(
            &bin,
            &samples.join(format!("{m}.wasm")),
            &format!("{m}:v1"),
            &server,
        )
        .with_context(|| format!("pushing {m}"))?;
    }

    eprintln!(
        "cpu-share: reference, one unlimited spin alone for {} s…",
        p.seconds
    );
    create(&server, pod("spin-alone", "spin:v1", None, &[])).await?;
    wait_running(&server, &["spin-alone"]).await?;
    let core = rates(&server, &["spin-alone"], p.seconds).await?[0];
    delete_and_wait(&server, "spin-alone").await?;

    eprintln!("cpu-share: 250m and 750m side by side for {} s…", p.seconds);
    let interval = COUNTER_INTERVAL.as_millis().to_string();
    create(&server, pod("idle", "idle:v1", None, &[])).await?;
    create(
        &server,
        pod("counter", "counter:v1", None, &[("INTERVAL_MS", &interval)]),
    )
    .await?;
    create(&server, pod("spin-250m", "spin:v1", Some("250m"), &[])).await?;
    create(&server, pod("spin-750m", "spin:v1", Some("750m"), &[])).await?;
    wait_running(&server, &["idle", "counter", "spin-250m", "spin-750m"]).await?;
    let measured = rates(&server, &["spin-250m", "spin-750m"], p.seconds).await?;
    let (slow, fast) = (measured[0], measured[1]);
    let mut gaps = counter_gaps(&server, p.seconds).await?;
    let gaps = summarize(&mut gaps);
    let idle_running = get_pod(&server, "idle")
        .await?
        .is_some_and(|p| p["status"]["phase"] == "Running");

    let scenario = format!("cpu-share ({} s)", p.seconds);
    let reference = format!("unlimited spin alone: {core:.0} spins/ms = 1 core");
    for (label, rate, want) in [("250m", slow, 0.25), ("750m", fast, 0.75)] {
        let share = rate / core;
        rows.push(Row {
            scenario: scenario.clone(),
            metric: format!("{label} busy loop, share of one core"),
            value: format!("{share:.2} core ({rate:.0} spins/ms)"),
            reference: reference.clone(),
            ratio: format!("{:.2}× its limit", share / want),
            target: format!("≈ {want} core (±30%)"),
            status: status(near(share, want)),
        });
    }
    let ratio = fast / slow.max(f64::MIN_POSITIVE);
    rows.push(Row {
        scenario: scenario.clone(),
        metric: "750m / 250m progress".into(),
        value: format!("{ratio:.2}×"),
        reference: "limits 3×".into(),
        ratio: format!("{:.2}", ratio / 3.0),
        target: "≈ 3× (±25%)".into(),
        status: status((ratio - 3.0).abs() <= 0.75),
    });
    rows.push(Row {
        scenario,
        metric: "counter line gaps beside them".into(),
        value: format!(
            "p50 {} · p99 {} · max {}",
            ms(gaps.p50),
            ms(gaps.p99),
            ms(gaps.max)
        ),
        reference: format!("its interval {}", ms(COUNTER_INTERVAL)),
        ratio: format!(
            "{:.1}× (p99)",
            gaps.p99.as_secs_f64() / COUNTER_INTERVAL.as_secs_f64()
        ),
        target: "—".into(),
        status: if idle_running {
            "—".into()
        } else {
            "idle pod not Running".into()
        },
    });
    notes.push(format!(
        "cpu-share: the release `wasmkube server` as a child process; `spin.wasm` busy loops print their iteration count and elapsed milliseconds every ~500 ms, rates are taken from their logs over {} s windows. Reference: one spin without a CPU limit, alone on the node, just before (one core). Then pods limited to 250m and 750m run together beside an `idle` pod and a `counter` printing every {} (its line gaps from the kubelet's log timestamps). Limits below one core are enforced by epoch time slicing (run a tick, then sleep in proportion).",
        p.seconds,
        ms(COUNTER_INTERVAL)
    ));
    Ok(())
}
