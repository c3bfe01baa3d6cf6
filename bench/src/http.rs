//! `http`: requests/s and latency of HTTP pods, where every request gets a
//! fresh wasm instance, beside a native hyper hello-world measured in the
//! same run by the same closed-loop load generator. On the release
//! all-in-one server (child process): the `http-echo` wasi:http component
//! and the `http-hello` WAGI module, one replica each behind a NodePort
//! Service; the echo pod is also reached on the kubelet's direct
//! `/pods/{ns}/{pod}/http/{port}/…` route, which skips the Service proxy,
//! to separate proxy cost from instance cost.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use crate::pod_startup::{Server, build, push};
use crate::report::{Row, status};
use crate::stats::{ms, percentile};

pub struct Params {
    pub repo: PathBuf,
    /// Concurrent connections of each measurement.
    pub concurrency: Vec<usize>,
    /// Warm-up before each measurement (not counted).
    pub warmup: Duration,
    /// Length of each measurement.
    pub duration: Duration,
    /// Build the release binary and the wasip1 samples.
    pub build: bool,
    /// Build `http-echo` for wasm32-wasip2 (no other scenario does).
    pub build_echo: bool,
}

/// Targets of issue #10: per-request instances at ≥ 25% of native req/s
/// and ≥ 90% of `wasmtime serve` of the same component.
const TARGET_NATIVE_SHARE: f64 = 0.25;
const TARGET_SERVE_SHARE: f64 = 0.90;
/// A request that has not answered by then counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const HELLO: &[u8] = b"Hello, world!\n";

/// What one target answered under load.
struct Measured {
    requests: usize,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

impl Measured {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn describe(&self) -> String {
        let errors = match &self.first_error {
            Some(e) if self.errors > 0 => format!(" · {} errors (first: {e})", self.errors),
            _ => format!(" · {} errors", self.errors),
        };
        format!(
            "{:.0} req/s · p50 {} · p90 {} · p99 {} · max {}{errors}",
            self.rps(),
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max)
        )
    }
}

/// One GET; an answer other than 200 or a transport failure is an error.
async fn get(client: &reqwest::Client, url: &str) -> Result<()> {
    let resp = client.get(url).send().await?;
    let code = resp.status();
    // Reading the whole body: the request is done when the guest's answer is.
    let _ = resp.bytes().await?;
    if code != reqwest::StatusCode::OK {
        bail!("status {code}");
    }
    Ok(())
}

/// Closed loop: `workers` connections, each sending its next GET as soon
/// as the previous one answered; a warm-up first, then `duration` measured.
async fn load(url: &str, workers: usize, warmup: Duration, duration: Duration) -> Result<Measured> {
    let mut tasks = Vec::with_capacity(workers);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    for _ in 0..workers {
        // One client per worker: one keep-alive connection each, as wrk does.
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(1)
            .build()?;
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut first_error = None;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let r = get(&client, &url).await;
                if t < measure_from {
                    continue;
                }
                match r {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (lat, errors, first_error)
        }));
    }
    let mut all = Vec::new();
    let (mut errors, mut first_error) = (0, None);
    for t in tasks {
        let (lat, e, first) = t.await?;
        all.extend(lat);
        errors += e;
        if first_error.is_none() {
            first_error = first;
        }
    }
    // Requests started before the end are counted, so the window closes
    // when the last of them answered.
    let elapsed = measure_from.elapsed();
    all.sort_unstable();
    Ok(Measured {
        requests: all.len(),
        errors,
        first_error,
        elapsed,
        p50: percentile(&all, 50.0),
        p90: percentile(&all, 90.0),
        p99: percentile(&all, 99.0),
        max: all.last().copied().unwrap_or_default(),
    })
}

/// The reference: a native hyper HTTP/1.1 hello-world on loopback, served
/// until `stop`.
async fn native_server(stop: CancellationToken) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                _ = stop.cancelled() => break,
                c = listener.accept() => c,
            };
            let Ok((stream, _)) = conn else { continue };
            let stop = stop.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(HELLO))))
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = stop.cancelled() => {}
                    // A client going away mid-request is not the reference's concern.
                    _ = conn => {}
                }
            });
        }
    });
    Ok(addr)
}

/// The `wasmtime serve` reference: the wasmtime CLI serving the same
/// wasi:http component on loopback (a fresh instance per request, its
/// default for WASIp2 components); killed on drop.
struct WasmtimeServe {
    child: std::process::Child,
    url: String,
    version: String,
    log: tempfile::NamedTempFile,
}

impl Drop for WasmtimeServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WasmtimeServe {
    async fn start(repo: &Path, component: &Path) -> Result<WasmtimeServe> {
        let repo2 = repo.to_path_buf();
        let bin =
            tokio::task::spawn_blocking(move || crate::wasmtime_cli::ensure(&repo2)).await??;
        let port = crate::etcd::free_port()?;
        let log = tempfile::NamedTempFile::new()?;
        let child = Command::new(&bin)
            .arg("serve")
            // wasi:cli beside wasi:http, as a pod gets (the echo reads its env).
            .arg("-Scli")
            .args(["--env", "POD_NAME=wasmtime-serve"])
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg(component)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen()?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(WasmtimeServe {
            child,
            url: format!("http://127.0.0.1:{port}/bench"),
            version: crate::wasmtime_cli::version_of(&bin),
            log,
        })
    }

    /// Polls until the component answers 200.
    async fn wait_ok(&mut self) -> Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "wasmtime serve exited with {st}: {}",
                    std::fs::read_to_string(self.log.path()).unwrap_or_default()
                );
            }
            let last = match client.get(&self.url).send().await {
                Ok(r) if r.status() == reqwest::StatusCode::OK => return Ok(()),
                Ok(r) => format!("status {}", r.status()),
                Err(e) => format!("{e}"),
            };
            if Instant::now() > deadline {
                bail!("wasmtime serve did not answer 200 within 60 s (last: {last})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn post(server: &Server, path: &str, body: serde_json::Value) -> Result<serde_json::Value> {
    let resp = server
        .http
        .post(format!("{}{path}", server.url))
        .bearer_auth(&server.token)
        .json(&body)
        .send()
        .await?;
    let code = resp.status();
    if !code.is_success() {
        bail!(
            "POST {path}: {code} {}",
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(resp.json().await?)
}

/// A 1-replica Deployment and a NodePort Service of `image`, as in
/// wasm-samples/manifests; returns the Service's node port.
async fn deploy(server: &Server, name: &str, image: &str, wagi: bool) -> Result<u16> {
    let mut meta = serde_json::json!({ "labels": { "app": name } });
    if wagi {
        meta["annotations"] = serde_json::json!({ "wasmkube.io/http": "wagi" });
    }
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": meta,
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "main",
                        "image": image,
                        "ports": [{ "name": "http", "containerPort": 8080 }],
                        "env": [{
                            "name": "POD_NAME",
                            "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } },
                        }],
                    }],
                },
            },
        },
    });
    post(
        server,
        "/apis/apps/v1/namespaces/default/deployments",
        deployment,
    )
    .await?;
    let service = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name },
        "spec": {
            "type": "NodePort",
            "selector": { "app": name },
            "ports": [{ "name": "http", "port": 80, "targetPort": "http" }],
        },
    });
    let svc = post(server, "/api/v1/namespaces/default/services", service).await?;
    let port = svc["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .with_context(|| format!("service {name} has no nodePort: {svc}"))?;
    Ok(port)
}

/// Polls `url` until it answers 200.
async fn wait_ok(server: &Server, url: &str) -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let last = match client.get(url).send().await {
            Ok(r) if r.status() == reqwest::StatusCode::OK => return Ok(()),
            Ok(r) => format!("status {}", r.status()),
            Err(e) => format!("{e}"),
        };
        if Instant::now() > deadline {
            bail!(
                "{url} did not answer 200 within 120 s (last: {last}):\n{}",
                server.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The name of a Running pod labelled `app=<app>`.
async fn running_pod(server: &Server, app: &str) -> Result<String> {
    let list: serde_json::Value = server
        .http
        .get(format!(
            "{}/api/v1/namespaces/default/pods?labelSelector=app%3D{app}",
            server.url
        ))
        .bearer_auth(&server.token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["status"]["phase"] == "Running")
        .and_then(|p| p["metadata"]["name"].as_str())
        .map(str::to_string)
        .with_context(|| format!("no Running pod with app={app}"))
}

pub async fn run(p: &Params, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<()> {
    if p.build {
        build(&p.repo)?;
    }
    if p.build_echo {
        eprintln!("http: building http-echo for wasm32-wasip2…");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let ok = Command::new(cargo)
            .current_dir(&p.repo)
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .arg("--manifest-path")
            .arg(p.repo.join("wasm-samples/Cargo.toml"))
            .args(["-p", "http-echo"])
            .status()?
            .success();
        if !ok {
            bail!("building http-echo failed (rustup target add wasm32-wasip2)");
        }
    }
    let bin = p.repo.join("target/release/wasmkube");
    let echo = p
        .repo
        .join("wasm-samples/target/wasm32-wasip2/release/http_echo.wasm");
    let hello = p
        .repo
        .join("wasm-samples/target/wasm32-wasip1/release/http-hello.wasm");
    for f in [&bin, &echo, &hello] {
        if !f.exists() {
            bail!("{} is missing: run without --no-build", f.display());
        }
    }

    let server = Server::start(&bin).await?;
    push(&bin, &echo, "http-echo:v1", &server).context("pushing http-echo")?;
    push(&bin, &hello, "http-hello:v1", &server).context("pushing http-hello")?;
    let echo_port = deploy(&server, "http-echo", "http-echo:v1", false).await?;
    let hello_port = deploy(&server, "http-hello", "http-hello:v1", true).await?;
    let echo_url = format!("http://127.0.0.1:{echo_port}/bench");
    let hello_url = format!("http://127.0.0.1:{hello_port}/greet");
    wait_ok(&server, &echo_url).await?;
    wait_ok(&server, &hello_url).await?;
    let echo_pod = running_pod(&server, "http-echo").await?;
    let direct_url = format!(
        "http://127.0.0.1:{}/pods/default/{echo_pod}/http/8080/bench",
        server.kubelet_port
    );
    // The direct route is optional: without it the other figures still stand.
    let direct = match wait_ok(&server, &direct_url).await {
        Ok(()) => Some(direct_url),
        Err(e) => {
            notes.push(format!(
                "http: the kubelet's direct route was not measured: {e:#}"
            ));
            None
        }
    };

    // The wasmtime serve reference is optional: without it the other
    // figures still stand.
    let mut serve = match WasmtimeServe::start(&p.repo, &echo).await {
        Ok(mut s) => match s.wait_ok().await {
            Ok(()) => Some(s),
            Err(e) => {
                notes.push(format!(
                    "http: the `wasmtime serve` reference was not measured: {e:#}"
                ));
                None
            }
        },
        Err(e) => {
            notes.push(format!(
                "http: the `wasmtime serve` reference was not measured: {e:#}"
            ));
            None
        }
    };
    let serve_version = serve.as_ref().map(|s| s.version.clone());

    let stop = CancellationToken::new();
    let native_addr = native_server(stop.clone()).await?;
    let native_url = format!("http://{native_addr}/");

    let secs = p.duration.as_secs_f64();
    for &c in &p.concurrency {
        eprintln!("http: c={c}, native hyper…");
        let native = load(&native_url, c, p.warmup, p.duration).await?;
        let wasmtime = match &serve {
            Some(s) => {
                eprintln!("http: c={c}, wasmtime serve…");
                match load(&s.url, c, p.warmup, p.duration).await {
                    Ok(m) => Some(m),
                    Err(e) => {
                        notes.push(format!(
                            "http: c={c}: wasmtime serve failed under load: {e:#}"
                        ));
                        None
                    }
                }
            }
            None => None,
        };
        // (label, url, target vs native, compared with wasmtime serve)
        let mut targets = vec![
            (
                "http-echo (wasi:http) via NodePort",
                echo_url.clone(),
                true,
                true,
            ),
            (
                "http-hello (WAGI) via NodePort",
                hello_url.clone(),
                true,
                false,
            ),
        ];
        if let Some(u) = &direct {
            targets.push((
                "http-echo via kubelet /pods/…/http/",
                u.clone(),
                false,
                true,
            ));
        }
        let scenario = format!("http (c={c}, {secs:.0} s)");
        rows.push(Row {
            scenario: scenario.clone(),
            metric: "native hyper hello-world (reference)".into(),
            value: native.describe(),
            reference: "—".into(),
            ratio: "1.00".into(),
            target: "—".into(),
            status: if native.errors > 0 {
                format!("{} errors", native.errors)
            } else {
                "—".into()
            },
        });
        if let Some(w) = &wasmtime {
            let share = w.rps() / native.rps().max(f64::EPSILON);
            rows.push(Row {
                scenario: scenario.clone(),
                metric: "wasmtime serve -Scli http-echo (reference)".into(),
                value: w.describe(),
                reference: format!("native hyper {:.0} req/s", native.rps()),
                ratio: format!("{share:.2}× native req/s"),
                target: "—".into(),
                status: if w.errors > 0 {
                    format!("{} errors", w.errors)
                } else {
                    "—".into()
                },
            });
        }
        for (label, url, targeted, vs_serve) in targets {
            eprintln!("http: c={c}, {label}…");
            let m = load(&url, c, p.warmup, p.duration).await?;
            let share = m.rps() / native.rps().max(f64::EPSILON);
            let p50x = m.p50.as_secs_f64() / native.p50.as_secs_f64().max(1e-9);
            let mut reference = format!(
                "native hyper {:.0} req/s · p50 {} · p99 {}",
                native.rps(),
                ms(native.p50),
                ms(native.p99)
            );
            let mut ratio = format!("{share:.2}× native req/s · {p50x:.1}× native p50");
            let mut target = Vec::new();
            let mut met = Vec::new();
            if targeted {
                target.push(format!("≥ {:.0}% of native", TARGET_NATIVE_SHARE * 100.0));
                met.push(share >= TARGET_NATIVE_SHARE);
            }
            if vs_serve && let Some(w) = &wasmtime {
                let serve_share = m.rps() / w.rps().max(f64::EPSILON);
                reference = format!(
                    "wasmtime serve {:.0} req/s · p50 {} · p99 {} · {reference}",
                    w.rps(),
                    ms(w.p50),
                    ms(w.p99)
                );
                ratio = format!("{serve_share:.2}× serve req/s · {ratio}");
                if targeted {
                    target.insert(
                        0,
                        format!("≥ {:.0}% of wasmtime serve", TARGET_SERVE_SHARE * 100.0),
                    );
                    met.insert(0, serve_share >= TARGET_SERVE_SHARE);
                }
            }
            rows.push(Row {
                scenario: scenario.clone(),
                metric: label.into(),
                value: m.describe(),
                reference,
                ratio,
                target: if target.is_empty() {
                    "—".into()
                } else {
                    target.join("; ")
                },
                status: if m.errors > 0 {
                    format!("**{} errors**", m.errors)
                } else if met.is_empty() {
                    "—".into()
                } else {
                    met.into_iter().map(status).collect::<Vec<_>>().join("; ")
                },
            });
        }
    }
    stop.cancel();
    drop(serve.take());
    let serve_note = match serve_version {
        Some(v) => format!(
            " Reference `wasmtime serve -Scli --env POD_NAME=… http_echo.wasm` ({v}, installed by the harness at the workspace's wasmtime version; a fresh instance per request, its default for WASIp2 components; its own defaults otherwise, e.g. the pooling allocator when the host allows it) on loopback, GET `/bench`, measured at each concurrency just before the wasmkube targets."
        ),
        None => " The `wasmtime serve` reference was not measured (see the note above).".into(),
    };
    notes.push(format!(
        "http: the release `wasmkube server` as a child process (proxy port {}, kubelet port {}); one replica each of `http-echo` (wasi:http component, wasm32-wasip2) and `http-hello` (WAGI, wasm32-wasip1) behind NodePort Services, every request served by a fresh wasm instance. Load: a closed loop in the harness (reqwest, one keep-alive connection per worker, {} warm-up then {secs:.0} s measured, each request timing out after {}), GET of `/bench` (echo) and `/greet` (hello); any answer other than 200 counts as an error. Reference: a native hyper HTTP/1.1 hello-world in the harness's own process on loopback, same load generator, same run — it shares the two cores with the load generator just as the server does.{serve_note} The kubelet's `/pods/{{ns}}/{{pod}}/http/{{port}}/…` route reaches the same echo pod without the Service proxy.",
        server.proxy_port,
        server.kubelet_port,
        ms(p.warmup),
        ms(REQUEST_TIMEOUT),
    ));
    Ok(())
}
