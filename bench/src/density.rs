//! `density`: many idle pods on one real node. The release all-in-one
//! `wasmkube server` (child process, real wasm) gets N `idle.wasm` pods;
//! measured: the time from the first create until the watch has seen every
//! pod Running, and the kubelet's memory per pod beyond guest memory:
//! (server RSS after − RSS before the pods − the guest memory the kubelet
//! reports in `/stats/summary`) / N. What bounds the node — its `pods`
//! capacity, the pooling allocator's slots, file descriptors, memory maps —
//! is read from the process and the kernel and reported beside it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};

use crate::footprint::{ProcStats, kib};
use crate::pod_startup::{Server, build, idle_pod, push, watch_running};
use crate::report::{Row, status};

pub struct Params {
    pub repo: PathBuf,
    pub pods: usize,
    /// Creates in flight at once.
    pub concurrency: usize,
    pub build: bool,
}

/// Targets of issue #10: at least 10,000 idle pods Running on one node, at
/// most 100 KiB of kubelet memory per pod beyond guest memory.
const TARGET_PODS: usize = 10_000;
const TARGET_OVERHEAD_BYTES: f64 = 100.0 * 1024.0;
/// How long memory is left to settle before and after the pods.
const SETTLE: Duration = Duration::from_secs(5);

/// The guest memory (linear memories and tables) the kubelet reports for
/// its pods, summed, and how many pods it reports.
async fn guest_memory(server: &Server) -> Result<(u64, usize)> {
    let summary: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/stats/summary",
            server.kubelet_port
        ))
        .timeout(Duration::from_secs(60))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let pods = summary["pods"].as_array().cloned().unwrap_or_default();
    let bytes = pods
        .iter()
        .filter_map(|p| p["memory"]["workingSetBytes"].as_u64())
        .sum();
    Ok((bytes, pods.len()))
}

/// A sysctl or `/proc` figure as text, for the notes.
fn proc_value(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// `vm.max_map_count` raised for the scenario and put back after it. The
/// kubelet keeps its pod capacity within the limit (at most
/// `MAPS_PER_POD` maps a pod), so a node as dense as this one needs more
/// than Debian's default 65,530 — the same sysctl any host of many small
/// mappings (databases, Elasticsearch) raises.
struct MapLimit {
    original: Option<u64>,
    raised_to: Option<u64>,
}

impl MapLimit {
    const PATH: &'static str = "/proc/sys/vm/max_map_count";

    fn at_least(wanted: u64) -> MapLimit {
        let original = wasmkube_runtime::node::max_map_count();
        let raised_to = match original {
            Some(now) if now < wanted => match std::fs::write(Self::PATH, wanted.to_string()) {
                Ok(()) => Some(wanted),
                Err(e) => {
                    eprintln!(
                        "density: vm.max_map_count is {now}, {wanted} needed, and it cannot be raised ({e}): the node takes fewer pods"
                    );
                    None
                }
            },
            _ => None,
        };
        MapLimit {
            original,
            raised_to,
        }
    }

    fn describe(&self) -> String {
        match (self.original, self.raised_to) {
            (Some(from), Some(to)) => format!(
                "vm.max_map_count raised from {from} to {to} for this scenario and restored after it (the kubelet keeps its pods capacity within the limit at {} maps a pod)",
                wasmkube_runtime::node::MAPS_PER_POD
            ),
            (Some(now), None) => format!("vm.max_map_count {now} (unchanged)"),
            _ => "vm.max_map_count unknown".to_string(),
        }
    }
}

impl Drop for MapLimit {
    fn drop(&mut self) {
        if let (Some(original), Some(_)) = (self.original, self.raised_to) {
            let _ = std::fs::write(Self::PATH, original.to_string());
        }
    }
}

pub async fn run(p: &Params, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<()> {
    if p.build {
        build(&p.repo)?;
    }
    let bin = p.repo.join("target/release/wasmkube");
    let idle = p
        .repo
        .join("wasm-samples/target/wasm32-wasip1/release/idle.wasm");
    for f in [&bin, &idle] {
        if !f.exists() {
            bail!("{} is missing: run without --no-build", f.display());
        }
    }
    // The node's `pods` capacity (Kubernetes' 110 by default) must admit
    // every pod; the scheduler holds the rest Pending otherwise.
    let max_pods = p.pods + 10;
    let map_limit = MapLimit::at_least(
        u64::try_from(max_pods).unwrap_or(u64::MAX) * wasmkube_runtime::node::MAPS_PER_POD + 8192,
    );
    let flags = vec!["--max-pods".to_string(), max_pods.to_string()];
    let mut server = Server::start_with(&bin, &flags, true).await?;
    push(&bin, &idle, "idle:v1", &server)?;
    tokio::time::sleep(SETTLE).await;
    let before = ProcStats::read(server.pid())?;

    let seen = Arc::new(Mutex::new(HashMap::new()));
    let watcher = watch_running(&server, "density", seen.clone()).await?;
    eprintln!(
        "density: {} idle pods, {} creates in flight…",
        p.pods, p.concurrency
    );
    let url = format!("{}/api/v1/namespaces/default/pods", server.url);
    let (http, token) = (server.http.clone(), server.token.clone());
    let start = Instant::now();
    let created = crate::load::closed_loop(p.concurrency, p.pods, |_| {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        move |i: usize| {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            async move {
                let name = format!("density-{i}");
                let resp = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&idle_pod(&name, "density"))
                    .send()
                    .await?;
                if resp.status().as_u16() != 201 {
                    bail!("creating {name}: {}", resp.status());
                }
                Ok(())
            }
        }
    })
    .await?;
    let created_in = start.elapsed();
    if created.errors > 0 {
        notes.push(format!(
            "density: {} creates failed (first: {})",
            created.errors,
            created.first_error.as_deref().unwrap_or("?")
        ));
    }
    // Generous: a node that is slow to start pods is reported, not hung on.
    let deadline = start + Duration::from_secs(120).max(Duration::from_millis(50) * p.pods as u32);
    let mut last_progress = (0, Instant::now());
    loop {
        let n = seen.lock().map_err(|_| anyhow!("poisoned"))?.len();
        if n >= p.pods || Instant::now() > deadline || watcher.is_finished() {
            break;
        }
        if n != last_progress.0 {
            last_progress = (n, Instant::now());
        } else if last_progress.1.elapsed() > Duration::from_secs(60) {
            // Nothing started for a minute: the node is full.
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let running = seen.lock().map_err(|_| anyhow!("poisoned"))?.len();
    let all_running = seen
        .lock()
        .map_err(|_| anyhow!("poisoned"))?
        .values()
        .max()
        .map(|t| t.saturating_duration_since(start))
        .unwrap_or_default();
    watcher.abort();
    eprintln!(
        "density: {running}/{} Running after {:.1} s; letting memory settle…",
        p.pods,
        all_running.as_secs_f64()
    );
    tokio::time::sleep(SETTLE).await;
    let after = ProcStats::read(server.pid())?;
    let (guest, reported) = match guest_memory(&server).await {
        Ok(g) => g,
        Err(e) => bail!("{e:#}; {}", server.post_mortem()),
    };
    let delta = after.rss.saturating_sub(before.rss);
    let pods_f = running.max(1) as f64;
    let overhead = (delta as f64 - guest as f64) / pods_f;
    // What the target is judged on: the RSS growth per pod bounds the
    // overhead when the reported guest memory (sized, not resident)
    // exceeds it.
    let judged = if overhead < 0.0 {
        delta as f64 / pods_f
    } else {
        overhead
    };
    let log = server.log();
    let pooled = if log.contains("wasm engine: pooling allocator") {
        "pooling allocator"
    } else if log.contains("using on-demand allocation") {
        "on-demand allocation (the pool for this many slots does not fit the address space)"
    } else {
        "unknown allocation"
    };
    drop(server);

    let scenario = format!("density (n={})", p.pods);
    rows.push(Row {
        scenario: scenario.clone(),
        metric: "idle pods Running on one node".into(),
        value: format!("{running} of {}", p.pods),
        reference: "—".into(),
        ratio: String::new(),
        target: format!("≥ {TARGET_PODS} running"),
        status: if p.pods < TARGET_PODS {
            format!("— (quick: {} asked)", p.pods)
        } else {
            status(running >= TARGET_PODS)
        },
    });
    rows.push(Row {
        scenario: scenario.clone(),
        metric: "first create → all Running (watch)".into(),
        value: format!(
            "{:.1} s ({:.0} pods/s; creates took {:.1} s)",
            all_running.as_secs_f64(),
            running as f64 / all_running.as_secs_f64().max(1e-9),
            created_in.as_secs_f64()
        ),
        reference: "—".into(),
        ratio: String::new(),
        target: "—".into(),
        status: "—".into(),
    });
    rows.push(Row {
        scenario: scenario.clone(),
        metric: "server RSS per pod (all-in-one)".into(),
        value: format!("{} KiB", kib(delta as f64 / pods_f)),
        reference: format!("RSS {} → {} MiB", before.rss >> 20, after.rss >> 20),
        ratio: String::new(),
        target: "—".into(),
        status: "—".into(),
    });
    rows.push(Row {
        scenario,
        metric: "kubelet overhead per pod beyond guest memory".into(),
        // Guest memory is reported as sized, not as resident: when it
        // exceeds the RSS growth the formula says nothing, and the RSS
        // growth per pod (guest pages included) is the bound that stands.
        value: if overhead < 0.0 {
            format!(
                "≤ {} KiB (RSS growth/pod; the formula gives {} KiB)",
                kib(delta as f64 / pods_f),
                kib(overhead)
            )
        } else {
            format!("{} KiB", kib(overhead))
        },
        reference: format!(
            "guest memory reported {} KiB/pod ({reported} pods)",
            kib(guest as f64 / reported.max(1) as f64)
        ),
        ratio: String::new(),
        target: "≤ 100 KiB/pod".into(),
        status: status(judged <= TARGET_OVERHEAD_BYTES && running == p.pods),
    });
    let per = |a: usize, b: usize| a.saturating_sub(b) as f64 / pods_f;
    notes.push(format!(
        "density: the release `wasmkube server` (all-in-one) as a child process with `--max-pods {max_pods}` (the node's `pods` capacity defaults to Kubernetes' 110, which the scheduler enforces); wasm instances: {pooled} (the pool reserves 4 slots × (4 GiB + guard) per pod of capacity). {} `idle.wasm` pods (print a line, then sleep in WASI) created by {} concurrent clients; time from the first create until a watch has seen the last one Running. Memory: server RSS (/proc VmRSS) {SETTLE:?} after the module push and again {SETTLE:?} after the last pod ran; guest memory = the sum of the pods' `memory.workingSetBytes` in the kubelet's `/stats/summary` (linear memories + tables as sized, not as resident), so the overhead = (RSS delta − guest) / pods can be negative when guests touch less than their size. The RSS delta also holds the API server's, scheduler's and controllers' copies of the pod objects (one process). Per pod: {:.2} threads, {:.2} open fds, {:.2} memory maps (VMAs); limits: RLIMIT_NOFILE (the harness's, inherited) {}, vm.max_map_count {}, kernel.threads-max {}; server at the end: {} threads, {} fds, {} maps; {}.",
        p.pods,
        p.concurrency,
        per(after.threads, before.threads),
        per(after.fds, before.fds),
        per(after.maps, before.maps),
        crate::footprint::nofile_limit(),
        proc_value("/proc/sys/vm/max_map_count"),
        proc_value("/proc/sys/kernel/threads-max"),
        after.threads,
        after.fds,
        after.maps,
        map_limit.describe(),
    ));
    Ok(())
}
