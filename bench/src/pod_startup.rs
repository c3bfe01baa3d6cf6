//! `pod-startup`: create → Running seen by a watch, on the all-in-one server
//! (the release `wasmkube server` as a child process, real wasm), beside two
//! references measured in the same run: fork+exec of a native program
//! (`/bin/true`) and raw in-process wasmtime instantiate + `_start` of a tiny
//! module with a pre-compiled `Module`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use futures::StreamExt;
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use crate::etcd::free_port;
use crate::report::{Row, status};
use crate::stats::{Summary, ms, summarize};

pub struct Params {
    pub repo: PathBuf,
    pub pods: usize,
    pub rate: f64,
    pub build: bool,
}

/// Target of issue #10: pod startup p99 ≤ 20 ms.
const TARGET_P99: Duration = Duration::from_millis(20);

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

pub(crate) fn build(repo: &Path) -> Result<()> {
    eprintln!("pod-startup: cargo build --release -p wasmkube…");
    let ok = Command::new(cargo())
        .current_dir(repo)
        .args(["build", "--release", "-p", "wasmkube"])
        .status()?
        .success();
    if !ok {
        bail!("building the wasmkube binary failed");
    }
    eprintln!("pod-startup: building the wasm samples…");
    let ok = Command::new(cargo())
        .current_dir(repo)
        .args(["build", "--release", "--target", "wasm32-wasip1"])
        .arg("--manifest-path")
        .arg(repo.join("wasm-samples/Cargo.toml"))
        .status()?
        .success();
    if !ok {
        bail!("building the wasm samples failed (rustup target add wasm32-wasip1)");
    }
    Ok(())
}

/// Reference: fork+exec+wait of a native program that does nothing.
fn fork_exec(n: usize) -> Result<Summary> {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let st = Command::new("/bin/true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()?;
        lat.push(t.elapsed());
        if !st.success() {
            bail!("/bin/true failed: {st}");
        }
    }
    Ok(summarize(&mut lat))
}

/// Reference: a fresh Store + instantiate + `_start` of `module` (compiled
/// once, linked once), stdout to a sink, the way an engine runs a pod.
fn wasmtime_run(module: &Path, n: usize) -> Result<Summary> {
    // wasmtime has its own error type; keep its full chain in the message.
    wasmtime_run_inner(module, n)
        .map_err(|e| anyhow!("wasmtime reference on {}: {e:?}", module.display()))
}

fn wasmtime_run_inner(module: &Path, n: usize) -> wasmtime::Result<Summary> {
    let mut config = wasmtime::Config::new();
    // The workspace's wasmtime carries no collector; preview1 commands need none.
    config.gc_support(false);
    let engine = wasmtime::Engine::new(&config)?;
    let module = wasmtime::Module::from_file(&engine, module)?;
    let mut linker: wasmtime::Linker<WasiP1Ctx> = wasmtime::Linker::new(&engine);
    p1::add_to_linker_sync(&mut linker, |ctx| ctx)?;
    let pre = linker.instantiate_pre(&module)?;
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        // No stdout configured: the guest's output goes to a sink.
        let mut store = wasmtime::Store::new(&engine, WasiCtxBuilder::new().build_p1());
        let instance = pre.instantiate(&mut store)?;
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
        if let Err(e) = start.call(&mut store, ())
            && e.downcast_ref::<I32Exit>().is_none_or(|x| x.0 != 0)
        {
            return Err(e);
        }
        lat.push(t.elapsed());
    }
    Ok(summarize(&mut lat))
}

/// The `wasmtime run` CLI reference: wall time of each of `n` runs of
/// `wasmtime run <args> <module>` (process start, engine setup, loading or
/// compiling, instantiate, `_start`, exit), like hyperfine; one untimed run
/// first fills the CLI's compilation cache.
fn wasmtime_cli_run(bin: &Path, args: &[&str], module: &Path, n: usize) -> Result<Summary> {
    let run = || -> Result<Duration> {
        let t = Instant::now();
        let out = Command::new(bin)
            .arg("run")
            .args(args)
            .arg(module)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        let took = t.elapsed();
        if !out.status.success() {
            bail!(
                "wasmtime run {} failed: {}",
                module.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(took)
    };
    run()?;
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        lat.push(run()?);
    }
    Ok(summarize(&mut lat))
}

/// `wasmtime compile` of `module` into `dir`, for the `.cwasm` reference.
fn wasmtime_compile(bin: &Path, module: &Path, dir: &Path) -> Result<PathBuf> {
    let out = dir.join("hello.cwasm");
    let st = Command::new(bin)
        .arg("compile")
        .arg(module)
        .arg("-o")
        .arg(&out)
        .status()?;
    if !st.success() {
        bail!("wasmtime compile {} failed: {st}", module.display());
    }
    Ok(out)
}

/// The wasmtime CLI references: `wasmtime run` of the module (compilation
/// cache on, its default) and of a precompiled `.cwasm`.
struct CliRefs {
    version: String,
    run: Summary,
    precompiled: Option<Summary>,
    runs: usize,
}

fn cli_refs(repo: &Path, hello: &Path, n: usize, notes: &mut Vec<String>) -> Option<CliRefs> {
    let bin = match crate::wasmtime_cli::ensure(repo) {
        Ok(b) => b,
        Err(e) => {
            notes.push(format!(
                "pod-startup: the `wasmtime run` reference was not measured: {e:#}"
            ));
            return None;
        }
    };
    let version = crate::wasmtime_cli::version_of(&bin);
    let run = match wasmtime_cli_run(&bin, &[], hello, n) {
        Ok(s) => s,
        Err(e) => {
            notes.push(format!(
                "pod-startup: the `wasmtime run` reference failed: {e:#}"
            ));
            return None;
        }
    };
    let precompiled = tempfile::tempdir()
        .map_err(anyhow::Error::from)
        .and_then(|dir| {
            let cwasm = wasmtime_compile(&bin, hello, dir.path())?;
            wasmtime_cli_run(&bin, &["--allow-precompiled"], &cwasm, n)
        });
    let precompiled = match precompiled {
        Ok(s) => Some(s),
        Err(e) => {
            notes.push(format!(
                "pod-startup: the precompiled `.cwasm` reference failed: {e:#}"
            ));
            None
        }
    };
    Some(CliRefs {
        version,
        run,
        precompiled,
        runs: n,
    })
}

/// The all-in-one server as a child process; killed on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    dir: tempfile::TempDir,
    pub(crate) url: String,
    pub(crate) token: String,
    pub(crate) http: reqwest::Client,
    /// The built-in kubelet's plain-HTTP port (logs, `/pods/…/http/…`).
    pub(crate) kubelet_port: u16,
    /// The built-in node's proxy port; a free one, so a developer's server on
    /// the default 8080 does not collide with the harness.
    pub(crate) proxy_port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub(crate) async fn start(bin: &Path) -> Result<Server> {
        Server::start_with(bin, &[], true).await
    }

    /// The server with `extra` flags; `node` false for `--no-node` (then
    /// readiness does not wait for a node).
    pub(crate) async fn start_with(bin: &Path, extra: &[String], node: bool) -> Result<Server> {
        let dir = tempfile::Builder::new()
            .prefix("wasmkube-bench-aio-")
            .tempdir()?;
        let port = free_port()?;
        let (kubelet_port, proxy_port) = (free_port()?, free_port()?);
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let child = Command::new(bin)
            .arg("server")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--bind-address", "127.0.0.1", "--port", &port.to_string()])
            .args(["--kubelet-port", &kubelet_port.to_string()])
            .args(["--proxy-port", &proxy_port.to_string()])
            .args(["--node-name", "bench-node"])
            .args(extra)
            .args(if node { None } else { Some("--no-node") })
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = Server {
            child,
            dir,
            url: format!("https://127.0.0.1:{port}"),
            token: String::new(),
            http: reqwest::Client::new(),
            kubelet_port,
            proxy_port,
        };
        server.wait_ready(node).await?;
        Ok(server)
    }

    pub(crate) fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("data").join("kubeconfig")
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Why a request to the server may have failed: whether it is still
    /// running, and the last lines of its log.
    pub(crate) fn post_mortem(&mut self) -> String {
        let state = match self.child.try_wait() {
            Ok(Some(status)) => format!("the server exited ({status})"),
            Ok(None) => "the server is still running".to_string(),
            Err(e) => format!("the server's state is unknown ({e})"),
        };
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        let panics: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.contains("panicked") || l.contains("ERROR"))
            .take(10)
            .collect();
        if panics.is_empty() {
            format!("{state}; its log ends:\n{tail}")
        } else {
            format!(
                "{state}; its first errors:\n{}\nits log ends:\n{tail}",
                panics.join("\n")
            )
        }
    }

    async fn wait_ready(&mut self, node: bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(st) = self.child.try_wait()? {
                bail!("the server exited early with {st}:\n{}", self.log());
            }
            if self.log().contains("wasmkube is ready") && self.kubeconfig().exists() {
                break;
            }
            if Instant::now() > deadline {
                bail!("the server was not ready within 120 s:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let kc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(self.kubeconfig())?)?;
        self.token = kc["users"][0]["user"]["token"]
            .as_str()
            .ok_or_else(|| anyhow!("the kubeconfig has no token"))?
            .to_string();
        let ca = kc["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .ok_or_else(|| anyhow!("the kubeconfig has no CA"))?;
        let ca = base64::engine::general_purpose::STANDARD.decode(ca)?;
        self.http = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .timeout(Duration::from_secs(60))
            .build()?;
        if !node {
            return Ok(());
        }
        // The node must be Ready before pods can be bound to it.
        loop {
            let node: serde_json::Value = self
                .http
                .get(format!("{}/api/v1/nodes/bench-node", self.url))
                .bearer_auth(&self.token)
                .send()
                .await?
                .json()
                .await?;
            let ready = node["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the node was not Ready within 120 s:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server process's id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Pushes `module` as `reference` to the server's module store.
pub(crate) fn push(bin: &Path, module: &Path, reference: &str, server: &Server) -> Result<()> {
    let out = Command::new(bin)
        .arg("push")
        .arg(module)
        .arg(reference)
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .output()?;
    if !out.status.success() {
        bail!(
            "wasmkube push {reference} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// An `idle:v1` pod labelled `bench=<label>`.
pub(crate) fn idle_pod(name: &str, label: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "bench": label } },
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{ "name": "idle", "image": "idle:v1" }],
        },
    })
}

/// Records, per pod name, when the watch of pods labelled `bench=<label>`
/// first showed it Running.
pub(crate) async fn watch_running(
    server: &Server,
    label: &str,
    seen: Arc<Mutex<HashMap<String, Instant>>>,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let resp = server
        .http
        .get(format!(
            "{}/api/v1/namespaces/default/pods?watch=true&labelSelector=bench%3D{label}",
            server.url
        ))
        .bearer_auth(&server.token)
        .timeout(Duration::from_secs(3600))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("watch answered {}", resp.status());
    }
    Ok(tokio::spawn(async move {
        let mut body = resp.bytes_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = body.next().await {
            let now = Instant::now();
            buf.extend_from_slice(&chunk?);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let Ok(ev) = serde_json::from_slice::<serde_json::Value>(&line) else {
                    continue;
                };
                let obj = &ev["object"];
                if obj["status"]["phase"] == "Running"
                    && let Some(name) = obj["metadata"]["name"].as_str()
                {
                    let mut seen = seen.lock().map_err(|_| anyhow!("poisoned"))?;
                    seen.entry(name.to_string()).or_insert(now);
                }
            }
        }
        Ok(())
    }))
}

async fn measure(p: &Params, bin: &Path, idle: &Path) -> Result<(Summary, usize, Duration)> {
    // Every measured pod lands on the one node: its `pods` capacity (the
    // kubelet's --max-pods, Kubernetes' 110 by default) must hold them all.
    let max_pods = ["--max-pods".to_string(), (p.pods + 50).to_string()];
    let server = Server::start_with(bin, &max_pods, true).await?;
    push(bin, idle, "idle:v1", &server)?;
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let watcher = watch_running(&server, "pod-startup", seen.clone()).await?;
    let url = format!("{}/api/v1/namespaces/default/pods", server.url);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / p.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut creates = Vec::with_capacity(p.pods);
    for i in 0..p.pods {
        tick.tick().await;
        let (http, url, token) = (server.http.clone(), url.clone(), server.token.clone());
        let name = format!("bench-{i}");
        creates.push(tokio::spawn(async move {
            let t = Instant::now();
            let resp = http
                .post(&url)
                .bearer_auth(&token)
                .json(&idle_pod(&name, "pod-startup"))
                .send()
                .await?;
            if resp.status().as_u16() != 201 {
                bail!("creating {name}: {}", resp.status());
            }
            Ok::<_, anyhow::Error>((name, t))
        }));
    }
    let mut started = Vec::with_capacity(p.pods);
    for c in creates {
        started.push(c.await??);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = seen.lock().map_err(|_| anyhow!("poisoned"))?.len();
        if n >= p.pods || Instant::now() > deadline || watcher.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watcher.abort();
    let seen = seen.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    let mut lat: Vec<Duration> = started
        .iter()
        .filter_map(|(name, t)| seen.get(name).map(|r| r.saturating_duration_since(*t)))
        .collect();
    let missing = p.pods - lat.len();
    let s = summarize(&mut lat);
    let span = started
        .first()
        .map(|(_, t)| t.elapsed())
        .unwrap_or_default();
    Ok((s, missing, span))
}

pub async fn run(p: &Params, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<()> {
    if p.build {
        build(&p.repo)?;
    }
    let bin = p.repo.join("target/release/wasmkube");
    let samples = p.repo.join("wasm-samples/target/wasm32-wasip1/release");
    let (idle, hello) = (samples.join("idle.wasm"), samples.join("hello.wasm"));
    for f in [&bin, &idle, &hello] {
        if !f.exists() {
            bail!("{} is missing: run without --no-build", f.display());
        }
    }
    if !p.build {
        let built = std::fs::metadata(&bin)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| format!("{} s after the Unix epoch", d.as_secs()))
            .unwrap_or_else(|| "an unknown time".to_string());
        notes.push(format!(
            "pod-startup ran with --no-build: `target/release/wasmkube` was built at {built} and may not match the commit above."
        ));
    }
    let refs = p.pods.max(100);
    eprintln!("pod-startup: references (fork+exec, wasmtime) × {refs}…");
    let fork = tokio::task::spawn_blocking(move || fork_exec(refs)).await??;
    let hello2 = hello.clone();
    let wasm = tokio::task::spawn_blocking(move || wasmtime_run(&hello2, refs)).await??;
    // A process per run costs milliseconds: a few hundred runs give a
    // stable p99 without dominating the scenario.
    let cli_runs = refs.min(300);
    eprintln!("pod-startup: `wasmtime run` CLI reference × {cli_runs}…");
    let (repo, hello2) = (p.repo.clone(), hello.clone());
    let (cli, cli_notes) = tokio::task::spawn_blocking(move || {
        let mut n = Vec::new();
        (cli_refs(&repo, &hello2, cli_runs, &mut n), n)
    })
    .await?;
    notes.extend(cli_notes);
    eprintln!("pod-startup: {} pods at {}/s…", p.pods, p.rate);
    let (s, missing, _span) = measure(p, &bin, &idle).await?;
    if s.count == 0 {
        bail!("no pod was seen Running");
    }
    let scenario = format!("pod-startup (n={}, {}/s)", p.pods, p.rate);
    let missing_note = if missing > 0 {
        format!(" ({missing} never seen Running)")
    } else {
        String::new()
    };
    // Every reference beside the figure, and the figure's ratio to each.
    let row_refs = |pick: fn(&Summary) -> Duration, value: Duration| {
        let mut named = vec![("fork+exec", pick(&fork))];
        if let Some(c) = &cli {
            named.push(("wasmtime run", pick(&c.run)));
            if let Some(pre) = &c.precompiled {
                named.push(("wasmtime run .cwasm", pick(pre)));
            }
        }
        named.push(("in-process", pick(&wasm)));
        let reference = named
            .iter()
            .map(|(n, d)| format!("{n} {}", ms(*d)))
            .collect::<Vec<_>>()
            .join(" · ");
        let ratio = named
            .iter()
            .map(|(_, d)| ratio(value, *d))
            .collect::<Vec<_>>()
            .join(" · ");
        (reference, ratio)
    };
    let (reference, ratio50) = row_refs(|s| s.p50, s.p50);
    rows.push(Row {
        scenario: scenario.clone(),
        metric: "create → Running (watch) p50".into(),
        value: format!("{}{missing_note}", ms(s.p50)),
        reference,
        ratio: ratio50,
        target: "—".into(),
        status: "—".into(),
    });
    let (reference, ratio99) = row_refs(|s| s.p99, s.p99);
    rows.push(Row {
        scenario,
        metric: "create → Running (watch) p99".into(),
        value: ms(s.p99),
        reference,
        ratio: ratio99,
        target: format!("p99 ≤ {}", ms(TARGET_P99)),
        status: if missing > 0 {
            status(false)
        } else {
            status(s.p99 <= TARGET_P99)
        },
    });
    let cli_note = match &cli {
        Some(c) => format!(
            " `wasmtime run` ({}, installed by the harness at the workspace's wasmtime version): wall time of each of {} runs of `wasmtime run hello.wasm` as a child process (stdout to /dev/null), after one untimed run; its compilation cache was on (the CLI's default), so the timed runs load cached machine code instead of compiling; `wasmtime run .cwasm`: the same with `wasmtime compile` output and `--allow-precompiled`.",
            c.version, c.runs
        ),
        None => String::new(),
    };
    notes.push(format!(
        "pod-startup: the release `wasmkube server` (all-in-one, one node, `--max-pods` = pods + 50) as a child process; {} pods of `idle.wasm` created at {}/s; latency from sending the create to the first watch event showing phase Running. References, {} runs each before the server starts: fork+exec+wait of `/bin/true`; in-process wasmtime (default Config without GC, no epoch deadline, Module compiled and linked once) fresh Store + instantiate + `_start` of `hello.wasm`, stdout to a sink.{cli_note} Ratios are wasmkube's figure over each reference, in the order listed.",
        p.pods, p.rate, refs
    ));
    Ok(())
}

fn ratio(a: Duration, b: Duration) -> String {
    let r = a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    if r < 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.0}×")
    }
}
