//! Churn soak: continuous create/delete of pods and Deployments for 15
//! minutes (CI: 1 minute) against a control plane (`--no-node`, compaction
//! every 10 s keeping 1000 revisions, Events expiring 2 minutes (CI: 10 s)
//! after their last update instead of the default hour, so the run reaches
//! the steady state a cluster reaches after an hour) and one agent (the
//! kubelet) as separate processes.
//!
//! Every second a pod is created (the `counter` module) and the pods older
//! than three seconds are deleted; every fifth second a two-replica
//! Deployment is created and the one before it deleted. Every few seconds
//! the server's and the agent's VmRSS and open file descriptors are sampled,
//! and the store file's size.
//!
//! **Flat** means, comparing the mean of the last three samples with the
//! mean of the samples between 25 % and 50 % of the run (after warm-up):
//! RSS at most 25 % + 32 MiB above, open fds at most 32 above, and the
//! store file at most twice + 8 MiB its size then (compaction bounds the
//! history; redb reuses freed pages). Beyond that is a loss, reported with
//! the figures.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use reqwest::Method;
use serde_json::{Value, json};
use wasmkube_e2e::{Agent, AgentOptions, ApiClient, Cluster, open_fds, rss_kib};

use crate::report::{Mode, Outcome, sparkline};

const PODS: &str = "/api/v1/namespaces/default/pods";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    server_rss: u64,
    server_fds: usize,
    agent_rss: u64,
    agent_fds: usize,
    store: u64,
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"soak": "pod"}},
        "spec": {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "counter:v1"}]}})
}

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"soak": name}},
            "template": {"metadata": {"labels": {"soak": name}},
                "spec": {"terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": "counter:v1"}]}}}})
}

fn expect(what: &str, r: Result<(u16, Value)>) -> Result<()> {
    let (code, v) = r?;
    // 404 on delete: already gone (the Deployment's pods, a retry).
    if (200..300).contains(&code) || code == 404 {
        Ok(())
    } else {
        bail!("{what} answered {code}: {v}")
    }
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = xs.fold((0.0, 0u32), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { s / f64::from(n) }
}

pub fn run(mode: &Mode) -> Result<Vec<Outcome>> {
    let duration = Duration::from_secs(if mode.ci { 60 } else { 15 * 60 });
    let every = Duration::from_secs(if mode.ci { 3 } else { 10 });
    let event_ttl = if mode.ci { "10s" } else { "2m" };
    let cluster = Cluster::start_without_node(&[
        "--etcd-compaction-interval",
        "10s",
        "--compaction-keep-revisions",
        "1000",
        "--event-ttl",
        event_ttl,
    ])?;
    cluster.push_sample("counter")?;
    let token = cluster.create_join_token()?;
    let agent = Agent::start(&cluster.url(), &token, "soak-node", AgentOptions::default())?;
    let server_pid = cluster.pid().context("the server has no pid")?;
    let agent_pid = agent.pid().context("the agent has no pid")?;
    let store_file = cluster.store_file();
    let api = ApiClient::admin(&cluster, Some(Duration::from_secs(30)))?;

    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let start = Instant::now();
    let sampler = {
        let (stop, samples, store_file) = (stop.clone(), samples.clone(), store_file.clone());
        std::thread::spawn(move || -> Result<()> {
            let mut next = start;
            while !stop.load(Ordering::SeqCst) {
                let s = Sample {
                    server_rss: rss_kib(server_pid)?,
                    server_fds: open_fds(server_pid)?,
                    agent_rss: rss_kib(agent_pid)?,
                    agent_fds: open_fds(agent_pid)?,
                    store: std::fs::metadata(&store_file)?.len(),
                };
                samples.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                next += every;
                while Instant::now() < next && !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            Ok(())
        })
    };

    let (mut pods, mut deployments) = (Vec::<(String, Instant)>::new(), Vec::<String>::new());
    let (mut created, mut deleted, mut tick) = (0u64, 0u64, 0u64);
    let churn = (|| -> Result<()> {
        while start.elapsed() < duration {
            let t = Instant::now();
            tick += 1;
            let name = format!("soak-{tick}");
            expect(
                "create pod",
                api.call(Method::POST, PODS, Some(&pod(&name))),
            )?;
            created += 1;
            pods.push((name, t));
            while let Some((old, at)) = pods.first().cloned() {
                if at.elapsed() < Duration::from_secs(3) {
                    break;
                }
                expect(
                    "delete pod",
                    api.call(Method::DELETE, &format!("{PODS}/{old}"), None),
                )?;
                deleted += 1;
                pods.remove(0);
            }
            if tick % 5 == 0 {
                let d = format!("soak-d{tick}");
                expect(
                    "create deployment",
                    api.call(Method::POST, DEPLOYMENTS, Some(&deployment(&d))),
                )?;
                created += 1;
                deployments.push(d);
                if deployments.len() > 1 {
                    let old = deployments.remove(0);
                    expect(
                        "delete deployment",
                        api.call(Method::DELETE, &format!("{DEPLOYMENTS}/{old}"), None),
                    )?;
                    deleted += 1;
                }
            }
            if let Some(rest) = Duration::from_secs(1).checked_sub(t.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        Ok(())
    })();
    stop.store(true, Ordering::SeqCst);
    let sampled = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("sampler panicked"))?;
    let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();

    let mut outcome = Outcome {
        scenario: "churn soak".into(),
        backend: "embedded".into(),
        trials: 1,
        faults: 0,
        ..Outcome::default()
    };
    fn loss(o: &mut Outcome, what: String) {
        o.losses += 1;
        o.notes.push(what);
    }
    if let Err(e) = churn {
        loss(&mut outcome, format!("churn stopped: {e:#}"));
    }
    if let Err(e) = sampled {
        loss(
            &mut outcome,
            format!("sampling stopped (a process died?): {e:#}"),
        );
    }
    let n = samples.len();
    if n < 8 {
        loss(&mut outcome, format!("only {n} samples"));
        return Ok(vec![outcome]);
    }
    let warm = &samples[n / 4..n / 2];
    let end = &samples[n - 3..];
    let series = |f: fn(&Sample) -> f64| -> (f64, f64, String) {
        (
            mean(warm.iter().map(f)),
            mean(end.iter().map(f)),
            sparkline(&samples.iter().map(f).collect::<Vec<_>>()),
        )
    };
    let mib = |k: f64| k / 1024.0;
    outcome.notes.push(format!(
        "{} s of churn: {created} creates, {deleted} deletes (pods and 2-replica Deployments); \
         --event-ttl {event_ttl}; {n} samples every {} s. Figures: warm (25–50 % of the run) → end (last 3 samples).",
        duration.as_secs(),
        every.as_secs()
    ));
    for (what, f, is_rss) in [
        (
            "server RSS",
            (|s: &Sample| s.server_rss as f64) as fn(&Sample) -> f64,
            true,
        ),
        ("agent RSS", |s: &Sample| s.agent_rss as f64, true),
        ("server fds", |s: &Sample| s.server_fds as f64, false),
        ("agent fds", |s: &Sample| s.agent_fds as f64, false),
    ] {
        let (w, e, spark) = series(f);
        let (first, last) = (f(&samples[0]), f(&samples[n - 1]));
        if is_rss {
            outcome.notes.push(format!(
                "{what}: {:.0} → {:.0} MiB (start {:.0}, end {:.0}) `{spark}`",
                mib(w),
                mib(e),
                mib(first),
                mib(last)
            ));
            if e > w * 1.25 + 32.0 * 1024.0 {
                loss(
                    &mut outcome,
                    format!(
                        "{what} grew beyond 25 % + 32 MiB: {:.0} → {:.0} MiB",
                        mib(w),
                        mib(e)
                    ),
                );
            }
        } else {
            outcome.notes.push(format!(
                "{what}: {w:.0} → {e:.0} (start {first:.0}, end {last:.0}) `{spark}`"
            ));
            if e > w + 32.0 {
                loss(
                    &mut outcome,
                    format!("{what} grew beyond +32: {w:.0} → {e:.0}"),
                );
            }
        }
    }
    let (w, e, spark) = series(|s| s.store as f64);
    outcome.notes.push(format!(
        "store file: {:.1} → {:.1} MiB `{spark}`",
        mib(w / 1024.0),
        mib(e / 1024.0)
    ));
    if e > w * 2.0 + 8.0 * 1024.0 * 1024.0 {
        loss(
            &mut outcome,
            format!(
                "store file grew beyond twice + 8 MiB: {:.1} → {:.1} MiB",
                mib(w / 1024.0),
                mib(e / 1024.0)
            ),
        );
    }
    drop(agent);
    Ok(vec![outcome])
}
