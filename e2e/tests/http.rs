//! HTTP workloads behind Services on the real binary (issue 7, one node):
//! three `http-echo` replicas behind a NodePort Service answer on the
//! NodePort and through the proxy's Host route, spread over the replicas;
//! scaling to zero answers 503 and scaling up restores the service; a rolling
//! update under a steady request loop loses no request; a frontend calls its
//! backend through the Service name, and a host it does not list is refused.
//! (`kubectl port-forward` has its own tests: port_forward.rs.)

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use wasmkube_e2e::{Cluster, sample_manifest, stderr, stdout, wait_for};

const TIMEOUT: Duration = Duration::from_secs(90);
/// The request loop during the rolling update is bounded in count.
const MAX_LOOP_REQUESTS: usize = 5_000;

fn client() -> Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()?)
}

fn apply_file(c: &Cluster, name: &str) -> Result<()> {
    let path = sample_manifest(name);
    let path = path.to_str().context("manifest path is UTF-8")?;
    let out = c.kubectl(&["apply", "-f", path])?;
    ensure!(
        out.status.success(),
        "kubectl apply {name}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    Ok(())
}

fn rollout(c: &Cluster, deploy: &str) -> Result<()> {
    c.kubectl_ok(&[
        "rollout",
        "status",
        &format!("deploy/{deploy}"),
        "--timeout=90s",
    ])?;
    Ok(())
}

fn node_port(c: &Cluster, svc: &str) -> Result<u16> {
    Ok(c.field(&["svc", svc], "{.spec.ports[0].nodePort}")?
        .trim()
        .parse()?)
}

/// GET `url` → (status, x-served-by).
fn get(http: &reqwest::blocking::Client, url: &str) -> Result<(u16, String)> {
    let resp = http.get(url).send()?;
    let status = resp.status().as_u16();
    let served_by = wasmkube_e2e::served_by(&resp);
    Ok((status, served_by))
}

/// Waits until `url` answers `status`.
fn wait_status(http: &reqwest::blocking::Client, url: &str, status: u16) -> Result<()> {
    wait_for(&format!("{url} to answer {status}"), TIMEOUT, || {
        Ok(match get(http, url) {
            Ok((s, _)) if s == status => Some(()),
            _ => None,
        })
    })
}

#[test]
fn echo_replicas_behind_a_node_port_spread_scale_and_roll_without_loss() -> Result<()> {
    let c = Cluster::start()?;
    c.push_sample("http-echo")?;
    apply_file(&c, "http-echo")?;
    rollout(&c, "http-echo")?;
    let http = client()?;
    let url = format!("http://127.0.0.1:{}/hi?n=1", node_port(&c, "http-echo")?);
    wait_status(&http, &url, 200)?;

    // Spread: every replica answers within a few rounds of requests.
    let pods: BTreeSet<String> = c
        .kubectl_ok(&["get", "pods", "-l", "app=http-echo", "-o", "name"])?
        .lines()
        .map(|l| l.trim_start_matches("pod/").to_string())
        .collect();
    ensure!(pods.len() == 3, "three replicas: {pods:?}");
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        let (status, by) = get(&http, &url)?;
        ensure!(status == 200, "status {status}");
        seen.insert(by);
    }
    assert_eq!(seen, pods, "requests spread over every replica");

    // The echo itself: method, path and body come back.
    let body: Value = http
        .post(&url)
        .body("payload")
        .send()?
        .error_for_status()?
        .json()?;
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/hi?n=1");
    assert_eq!(body["body"], "payload");

    // The proxy port routes by Host header.
    let resp = http
        .get(format!("http://127.0.0.1:{}/via-host", c.proxy_port()?))
        .header("Host", "http-echo.default")
        .send()?;
    assert_eq!(resp.status().as_u16(), 200);
    let resp = http
        .get(format!("http://127.0.0.1:{}/", c.proxy_port()?))
        .header("Host", "nosuch.default")
        .send()?;
    assert_eq!(resp.status().as_u16(), 404, "unknown service");

    // Scale to zero: 503 promptly; back up: 200 again.
    c.kubectl_ok(&["scale", "deploy/http-echo", "--replicas=0"])?;
    wait_status(&http, &url, 503)?;
    let text = http.get(&url).send()?.text()?;
    assert!(
        text.contains("default/http-echo"),
        "503 names the service: {text}"
    );
    c.kubectl_ok(&["scale", "deploy/http-echo", "--replicas=3"])?;
    rollout(&c, "http-echo")?;
    wait_status(&http, &url, 200)?;

    // A rolling update under a steady request loop loses nothing.
    let before: BTreeSet<String> = c
        .kubectl_ok(&["get", "pods", "-l", "app=http-echo", "-o", "name"])?
        .lines()
        .map(|l| l.trim_start_matches("pod/").to_string())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let looper = {
        let stop = stop.clone();
        let http = http.clone();
        let url = url.clone();
        std::thread::spawn(move || -> Vec<(u16, String)> {
            let mut results = Vec::new();
            while !stop.load(Ordering::Relaxed) && results.len() < MAX_LOOP_REQUESTS {
                results.push(match get(&http, &url) {
                    Ok(r) => r,
                    Err(e) => (0, format!("{e:#}")),
                });
                std::thread::sleep(Duration::from_millis(20));
            }
            results
        })
    };
    c.kubectl_ok(&["rollout", "restart", "deploy/http-echo"])?;
    rollout(&c, "http-echo")?;
    // Keep asking until the old replicas are gone, so the last of them
    // drained while requests were arriving.
    wait_for("the old replicas to be gone", TIMEOUT, || {
        let now = c.kubectl_ok(&["get", "pods", "-l", "app=http-echo", "-o", "name"])?;
        Ok((!now
            .lines()
            .any(|l| before.contains(l.trim_start_matches("pod/"))))
        .then_some(()))
    })?;
    stop.store(true, Ordering::Relaxed);
    let results = looper
        .join()
        .map_err(|_| anyhow::anyhow!("loop panicked"))?;
    let failed: Vec<_> = results.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the rollout: {:?}",
        failed.len(),
        results.len(),
        &failed[..failed.len().min(10)]
    );
    let served: BTreeSet<&String> = results.iter().map(|(_, by)| by).collect();
    assert!(
        served.iter().any(|by| !before.contains(*by)),
        "new replicas served during the loop: {served:?}"
    );
    eprintln!(
        "rolling update: {} requests, all 200, served by {} pods",
        results.len(),
        served.len()
    );
    Ok(())
}

#[test]
fn a_frontend_calls_its_backend_by_service_name_and_unlisted_hosts_are_refused() -> Result<()> {
    let c = Cluster::start()?;
    c.push_sample("http-echo")?;
    c.push_sample("http-frontend")?;
    apply_file(&c, "two-services")?;
    rollout(&c, "backend")?;
    rollout(&c, "frontend")?;
    let http = client()?;
    let url = format!("http://127.0.0.1:{}/hello?x=1", node_port(&c, "frontend")?);
    wait_status(&http, &url, 200)?;
    let body: Value = http.get(&url).send()?.error_for_status()?.json()?;
    assert_eq!(body["backend_status"], 200, "{body}");
    assert_eq!(body["backend"]["path"], "/hello?x=1", "{body}");
    let backend = body["backend"]["pod"].as_str().unwrap_or_default();
    assert!(backend.starts_with("backend-"), "{body}");
    assert!(
        body["frontend"]
            .as_str()
            .unwrap_or_default()
            .starts_with("frontend-"),
        "{body}"
    );

    // Point the frontend at a Service it does not list: the call is refused.
    c.kubectl_ok(&[
        "set",
        "env",
        "deploy/frontend",
        "BACKEND=backend-other.default",
    ])?;
    rollout(&c, "frontend")?;
    wait_status(&http, &url, 502)?;
    let text = http.get(&url).send()?.text()?;
    assert!(text.contains("denied"), "refusal says so: {text}");
    Ok(())
}
