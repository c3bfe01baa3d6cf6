//! Overload: ten times the normal request rate for a bounded time.
//!
//! A control plane (`--no-node`) with low in-flight caps
//! (`--max-requests-inflight 16 --max-mutating-requests-inflight 8`, so
//! shedding starts within this machine's means) holds 200 ConfigMaps of
//! 2 KiB. Clients authenticate as a ServiceAccount bound to `cluster-admin`
//! (members of `system:masters`, like the admin, are never shed).
//!
//! 1. **Normal rate**: two clients, one request after another, for a few
//!    seconds: 70 % lists of the ConfigMaps (from the store), 30 % updates.
//!    Their throughput is the normal rate R; their median latency the
//!    normal latency.
//! 2. **Overload**: 10 × R offered open-loop (each request due at its
//!    time, whatever the answers) by 64 client threads for 15 s (CI: 5 s).
//!    Answers are counted: 2xx, 429 (shed), other errors, no answer. The
//!    server's VmRSS is sampled every 100 ms throughout.
//! 3. **Recovery**: right after, one client sends the normal mix one request
//!    at a time until five in a row succeed within twice the normal median
//!    latency (+20 ms); the time until then is the recovery time.
//!
//! Losses: the server dies or never recovers (no restart is allowed), an
//! answer that is neither success nor 429 (a 5xx, a dropped connection),
//! no 429 at all while overloaded, or VmRSS beyond the normal RSS + 256 MiB.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::json;
use wasmkube_e2e::{ApiClient, Cluster, rss_kib, wait_for};

use crate::report::{Mode, Outcome};

const NS_PATH: &str = "/api/v1/namespaces/default/configmaps";
const OBJECTS: usize = 200;
const WORKERS: usize = 64;
const RSS_BOUND_KIB: u64 = 256 * 1024;

/// One request of the normal mix; its status (`None`: no answer).
fn one_request(api: &ApiClient, rng: &mut StdRng) -> Option<u16> {
    let r = if rng.random_bool(0.7) {
        api.call(Method::GET, NS_PATH, None)
    } else {
        let i = rng.random_range(0..OBJECTS);
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("load-{i}")},
            "data": {"v": "y".repeat(2048), "n": rng.random::<u32>().to_string()}});
        api.call(Method::PUT, &format!("{NS_PATH}/load-{i}"), Some(&body))
    };
    r.ok().map(|(code, _)| code)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// A ServiceAccount token with cluster-admin rights but not system:masters.
fn loader_token(cluster: &Cluster) -> Result<String> {
    cluster.kubectl_ok(&["create", "serviceaccount", "loader", "-n", "default"])?;
    cluster.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "loader",
        "--clusterrole=cluster-admin",
        "--serviceaccount=default:loader",
    ])?;
    let token = cluster.kubectl_ok(&["create", "token", "loader", "-n", "default"])?;
    Ok(token.trim().to_string())
}

pub fn run(mode: &Mode) -> Result<Vec<Outcome>> {
    let mut rng = StdRng::seed_from_u64(mode.seed ^ 0x0e71_0ad0);
    let mut cluster = Cluster::start_without_node(&[
        "--max-requests-inflight",
        "16",
        "--max-mutating-requests-inflight",
        "8",
    ])?;
    let pid = cluster.pid().context("the server has no pid")?;
    let token = loader_token(&cluster)?;
    let api = ApiClient::with_token(&cluster, &token, Some(Duration::from_secs(30)))?;
    // RBAC may take a moment to see the new binding.
    wait_for("the loader to be allowed", Duration::from_secs(30), || {
        let (code, _) = api.call(Method::GET, NS_PATH, None)?;
        Ok((code == 200).then_some(()))
    })?;
    for i in 0..OBJECTS {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("load-{i}")}, "data": {"v": "x".repeat(2048)}});
        let (code, v) = api.call(Method::POST, NS_PATH, Some(&body))?;
        if code != 201 {
            bail!("preloading load-{i} answered {code}: {v}");
        }
    }

    // RSS sampler, for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max_rss) = (stop.clone(), max_rss.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(kib) = rss_kib(pid) {
                    max_rss.fetch_max(kib, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // 1. The normal rate.
    let normal_for = Duration::from_secs(if mode.ci { 3 } else { 6 });
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let normal: Vec<_> = (0..2)
        .map(|_| {
            let (api, latencies) = (api.clone(), latencies.clone());
            let mut r = StdRng::seed_from_u64(rng.random());
            std::thread::spawn(move || {
                let mut n = 0u32;
                while t0.elapsed() < normal_for {
                    let t = Instant::now();
                    if one_request(&api, &mut r).is_some_and(|c| c < 300) {
                        n += 1;
                        latencies
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(t.elapsed());
                    }
                }
                n
            })
        })
        .collect();
    let mut done = 0u32;
    for h in normal {
        done += h.join().map_err(|_| anyhow::anyhow!("client panicked"))?;
    }
    let rate = f64::from(done) / t0.elapsed().as_secs_f64();
    let normal_latency = median(std::mem::take(
        &mut *latencies.lock().unwrap_or_else(|p| p.into_inner()),
    ));
    let normal_rss = rss_kib(pid)?;

    // 2. Ten times that, open-loop.
    let burst = Duration::from_secs(if mode.ci { 5 } else { 15 });
    let offered = rate * 10.0;
    let total = (offered * burst.as_secs_f64()) as usize;
    let next = Arc::new(AtomicUsize::new(0));
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default()); // ok, 429, other, none
    let first_other = Arc::new(Mutex::new(None::<String>));
    let start = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (api, next, counts, first_other) = (
                api.clone(),
                next.clone(),
                counts.clone(),
                first_other.clone(),
            );
            let mut r = StdRng::seed_from_u64(rng.random());
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= total {
                        break;
                    }
                    let due = start + Duration::from_secs_f64(i as f64 / offered);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let slot = match one_request(&api, &mut r) {
                        Some(c) if c < 300 => 0,
                        Some(429) => 1,
                        Some(c) => {
                            first_other
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert_with(|| format!("HTTP {c}"));
                            2
                        }
                        None => 3,
                    };
                    counts[slot].fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| anyhow::anyhow!("worker panicked"))?;
    }
    let burst_took = start.elapsed();
    let ended = Instant::now();

    // 3. Back to normal, without a restart.
    let good = normal_latency * 2 + Duration::from_millis(20);
    let mut streak = 0;
    let mut streak_start = None;
    let mut recovered = None;
    let mut after = Vec::new();
    while ended.elapsed() < Duration::from_secs(60) {
        let t = Instant::now();
        let ok = one_request(&api, &mut rng).is_some_and(|c| c < 300);
        let took = t.elapsed();
        if ok && took <= good {
            streak_start.get_or_insert(t);
            streak += 1;
            after.push(took);
            if streak == 5 {
                recovered = streak_start.map(|s| s.duration_since(ended));
                break;
            }
        } else {
            streak = 0;
            streak_start = None;
            after.clear();
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    let alive = cluster.is_running();

    let [ok, shed, other, none] = [0, 1, 2, 3].map(|i| counts[i].load(Ordering::SeqCst));
    let max_rss = max_rss.load(Ordering::SeqCst);
    let mut outcome = Outcome {
        scenario: "overload (10× rate)".into(),
        backend: "embedded".into(),
        trials: 1,
        faults: 1,
        recovery: recovered,
        ..Outcome::default()
    };
    outcome.notes.push(format!(
        "normal: 2 clients, {rate:.0} req/s, median {} ms, RSS {} MiB; overload: {offered:.0} req/s \
         offered by {WORKERS} threads for {} s (took {:.1} s): {ok} ok, {shed} shed with 429, \
         {other} other errors, {none} without answer; max RSS {} MiB; after: median {} ms.",
        normal_latency.as_millis(),
        normal_rss / 1024,
        burst.as_secs(),
        burst_took.as_secs_f64(),
        max_rss / 1024,
        median(after).as_millis(),
    ));
    let mut loss = |what: String| {
        outcome.losses += 1;
        outcome.notes.push(what);
    };
    if !alive {
        loss("the server died".into());
    }
    if recovered.is_none() {
        loss(format!(
            "not back to normal latency ({} ms) within 60 s",
            good.as_millis()
        ));
    }
    if other + none > 0 {
        loss(format!(
            "{other} answers other than success or 429 (first: {}), {none} without answer",
            first_other
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_default()
        ));
    }
    if shed == 0 {
        loss("no request was shed with 429 at 10× the normal rate".into());
    }
    if max_rss > normal_rss + RSS_BOUND_KIB {
        loss(format!(
            "RSS grew from {} MiB to {} MiB (bound: +{} MiB)",
            normal_rss / 1024,
            max_rss / 1024,
            RSS_BOUND_KIB / 1024
        ));
    }
    cluster.kill9()?;
    Ok(vec![outcome])
}
