//! The end-to-end harness: starts the real `wasmkube` binary on loopback with a
//! fresh data dir and free ports, and drives it with the real `kubectl` (a
//! fresh `--cache-dir` per cluster, so kubectl's discovery cache never hides
//! what the server answers) and with raw HTTPS for the malformed requests
//! kubectl would refuse to send.
//!
//! Nothing here sleeps and then asserts: every wait polls a condition until a
//! deadline and reports what it last saw when the deadline passes.

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;

/// The samples that are wasi:http components, built for wasm32-wasip2 (the
/// others are preview 1 modules). Keep in sync with `P2_SAMPLES` in build.rs.
pub const P2_SAMPLES: &[&str] = &["http-echo", "http-frontend"];

/// A sample workload built by this crate's build script: a component
/// (wasm32-wasip2) for the names in [`P2_SAMPLES`], else a preview 1 module.
pub fn sample_wasm(name: &str) -> PathBuf {
    if P2_SAMPLES.contains(&name) {
        sample_wasm_p2(name)
    } else {
        PathBuf::from(env!("WASM_SAMPLES_DIR")).join(format!("{name}.wasm"))
    }
}

/// A wasi:http component sample built for wasm32-wasip2 (`http-echo`, …).
/// They are cdylibs, whose file names use `_` where the package has `-`.
pub fn sample_wasm_p2(name: &str) -> PathBuf {
    PathBuf::from(env!("WASM_SAMPLES_P2_DIR")).join(format!("{}.wasm", name.replace('-', "_")))
}

/// A sample's manifest (`wasm-samples/manifests/<name>.yaml`).
pub fn sample_manifest(name: &str) -> PathBuf {
    PathBuf::from(env!("WASM_SAMPLES_SRC"))
        .join("manifests")
        .join(format!("{name}.yaml"))
}

/// The `wasmkube` binary under test: `WASMKUBE_BIN`, else the one cargo built
/// beside this test executable (`cargo test --workspace` builds it, because
/// the cli crate has integration tests).
pub fn wasmkube_bin() -> PathBuf {
    if let Ok(p) = std::env::var("WASMKUBE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/debug/deps/<test> → target/debug/wasmkube
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = dir.join("wasmkube");
    assert!(
        bin.exists(),
        "{} does not exist: run the suite with `cargo test --workspace` (or `cargo build -p wasmkube` first)",
        bin.display()
    );
    bin
}

/// A free TCP port on loopback (bound then released; the server binds it next).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral loopback port");
    l.local_addr()
        .expect("a bound listener has an address")
        .port()
}

/// An error that ends a [`wait_for`] at once instead of being retried
/// until its deadline (the process it waits on has exited, say).
#[derive(Debug)]
pub struct Hopeless(pub String);

impl std::fmt::Display for Hopeless {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Hopeless {}

/// Ends a [`wait_for`] with this message (see [`Hopeless`]).
pub fn hopeless(message: impl Into<String>) -> anyhow::Error {
    Hopeless(message.into()).into()
}

/// Polls `check` until it returns `Ok(Some(v))` or `timeout` passes. An
/// error from `check` counts as "not yet" (the server may still be coming
/// up), except a [`Hopeless`] one, which ends the wait at once. The error
/// names `what` and the last observation, so a failure says what was seen.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "condition not met yet".to_string(),
            Err(e) if e.is::<Hopeless>() => return Err(e),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `x-served-by` header of an answer (the replica that served it, as
/// the http-echo sample says), empty when absent.
pub fn served_by(resp: &reqwest::blocking::Response) -> String {
    resp.headers()
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// `kubectl` with `kubeconfig`, its own cache dir and a request timeout.
fn kubectl_command(kubeconfig: &Path, cache_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache_dir)
        .arg("--request-timeout=30s")
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// One running all-in-one server (apiserver, scheduler, controllers, node).
/// The log files of a process the harness starts and restarts: one per
/// start, `<stem>-<n>.log` in one directory, so a restart's lines stay apart
/// from the last run's.
struct ProcessLogs {
    dir: PathBuf,
    stem: String,
    starts: u32,
}

impl ProcessLogs {
    fn new(dir: &Path, stem: &str) -> Self {
        ProcessLogs {
            dir: dir.to_path_buf(),
            stem: stem.to_string(),
            starts: 0,
        }
    }

    fn path(&self, n: u32) -> PathBuf {
        self.dir.join(format!("{}-{n}.log", self.stem))
    }

    /// Creates the log file of the next start.
    fn next(&mut self) -> Result<File> {
        self.starts += 1;
        Ok(File::create(self.path(self.starts))?)
    }

    /// What the current start has printed so far.
    fn current(&self) -> String {
        std::fs::read_to_string(self.path(self.starts)).unwrap_or_default()
    }

    /// Everything printed, across restarts.
    fn all(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.path(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// Waits until the current start of `who` has printed a line containing
    /// `needle`; fails at once if `child` exits. The error carries the log's
    /// tail.
    fn wait(
        &self,
        child: &mut Option<Child>,
        who: &str,
        needle: &str,
        timeout: Duration,
    ) -> Result<()> {
        let what = format!("{who} to print {needle:?}");
        let r = wait_for(&what, timeout, || {
            if let Some(child) = child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                return Err(hopeless(format!("{who} exited with {status}")));
            }
            Ok(self.current().contains(needle).then_some(()))
        });
        r.map_err(|e| anyhow!("{e:#}\n--- {who} log ---\n{}", tail(&self.all(), 80)))
    }
}

pub struct Cluster {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub port: u16,
    pub kubelet_port: u16,
    pub kubeconfig: PathBuf,
    cache_dir: PathBuf,
    logs: ProcessLogs,
    extra_args: Vec<String>,
    /// Whether readiness includes the built-in node-1 being Ready (false for
    /// a control plane alone, see [`Cluster::start_without_node`]).
    wait_node: bool,
    /// The etcd this cluster stores its objects in, when it has its own;
    /// dropped after the server is stopped.
    _etcd: Option<Etcd>,
}

/// Which store backend a test cluster runs on. The user-facing suites run
/// on both (see [`both_stores!`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded single-file store (the default).
    Embedded,
    /// A real etcd started for this cluster alone.
    Etcd,
}

/// Defines one `#[test]` per store backend for a test function taking a
/// [`Backend`]: `both_stores!(my_test);` makes `my_test::embedded` and
/// `my_test::etcd`.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[test]
            fn embedded() -> anyhow::Result<()> {
                super::$name($crate::Backend::Embedded)
            }
            #[test]
            fn etcd() -> anyhow::Result<()> {
                super::$name($crate::Backend::Etcd)
            }
        }
    )+};
}

/// How to start a [`Cluster`] other than the default all-in-one.
#[derive(Debug, Default, Clone)]
pub struct ClusterOptions {
    /// More `wasmkube server` flags (e.g. `--etcd-endpoints`, `--no-node`).
    pub extra_args: Vec<String>,
    /// Start with this cluster's PKI and tokens, so both servers are one
    /// cluster behind different addresses (several API servers on one etcd).
    pub share_credentials_with: Option<PathBuf>,
}

impl Cluster {
    /// Starts a fresh cluster and waits until its node is Ready.
    pub fn start() -> Result<Cluster> {
        Self::start_with(ClusterOptions::default())
    }

    /// Starts a fresh cluster on `backend` (etcd: a private etcd for it).
    pub fn start_on(backend: Backend) -> Result<Cluster> {
        match backend {
            Backend::Embedded => Self::start(),
            Backend::Etcd => {
                let etcd = Etcd::start()?;
                let options = ClusterOptions {
                    extra_args: vec!["--etcd-endpoints".into(), etcd.client_url.clone()],
                    ..ClusterOptions::default()
                };
                let mut c = Self::start_with(options)?;
                c._etcd = Some(etcd);
                Ok(c)
            }
        }
    }

    /// Starts a cluster with `options`.
    pub fn start_with(options: ClusterOptions) -> Result<Cluster> {
        Self::start_inner(options, true)
    }

    /// Starts a pure control plane (`--no-node` plus `extra_args`) on the
    /// embedded store: ready once the API answers, since no node of its own
    /// will ever be Ready. Agents ([`Agent`]) provide the nodes.
    pub fn start_without_node(extra_args: &[&str]) -> Result<Cluster> {
        let mut args = vec!["--no-node".to_string()];
        args.extend(extra_args.iter().map(|a| a.to_string()));
        Self::start_inner(
            ClusterOptions {
                extra_args: args,
                ..ClusterOptions::default()
            },
            false,
        )
    }

    fn start_inner(options: ClusterOptions, wait_node: bool) -> Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("wasmkube-e2e-").tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        let cache_dir = dir.path().join("kubectl-cache");
        let mut c = Cluster {
            child: None,
            port: free_port(),
            kubelet_port: free_port(),
            kubeconfig,
            cache_dir,
            logs: ProcessLogs::new(dir.path(), "server"),
            dir,
            extra_args: options.extra_args,
            wait_node,
            _etcd: None,
        };
        if let Some(from) = &options.share_credentials_with {
            let data = c.data_dir();
            std::fs::create_dir_all(data.join("pki"))?;
            for f in [
                "pki/ca.crt",
                "pki/ca.key",
                "pki/server.crt",
                "pki/server.key",
                // ServiceAccount tokens verify on every server only with one key.
                "pki/sa.key",
                "tokens.csv",
            ] {
                std::fs::copy(from.join(f), data.join(f))
                    .with_context(|| format!("copying {f}"))?;
            }
        }
        c.spawn()?;
        c.wait_ready()?;
        Ok(c)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Spawns the server process (again, after [`Cluster::kill9`]).
    pub fn spawn(&mut self) -> Result<()> {
        let log = self.logs.next()?;
        let child = Command::new(wasmkube_bin())
            .arg("server")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args([
                "--bind-address",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
            ])
            .args(["--kubelet-port", &self.kubelet_port.to_string()])
            .args(["--proxy-port", "0"])
            .args(["--node-name", "node-1"])
            .args(&self.extra_args)
            .arg("--write-kubeconfig")
            .arg(&self.kubeconfig)
            .env("RUST_LOG", "info,wasmkube=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting wasmkube server")?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits for the readiness line, then for the node to be Ready in the API.
    pub fn wait_ready(&mut self) -> Result<()> {
        let result = wait_for(
            "the server to say it is ready",
            Duration::from_secs(120),
            || {
                if let Some(child) = self.child.as_mut()
                    && let Some(status) = child.try_wait()?
                {
                    return Err(hopeless(format!("server exited early with {status}")));
                }
                Ok(self
                    .logs
                    .current()
                    .contains("wasmkube is ready")
                    .then_some(()))
            },
        )
        .and_then(|()| {
            if !self.wait_node {
                return wait_for("the API to answer", Duration::from_secs(60), || {
                    let out = self.kubectl(&["get", "--raw", "/readyz"])?;
                    Ok(out.status.success().then_some(()))
                });
            }
            wait_for("node-1 to be Ready", Duration::from_secs(60), || {
                let out = self.kubectl(&[
                    "get",
                    "node",
                    "node-1",
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])?;
                Ok((out.status.success() && stdout(&out).trim() == "True").then_some(()))
            })
        });
        if result.is_err() {
            eprintln!("--- server log ---\n{}", self.server_log());
        }
        result
    }

    /// Everything the server printed, across restarts.
    pub fn server_log(&self) -> String {
        self.logs.all()
    }

    /// `kill -9` of the server process.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?; // SIGKILL on unix
            child.wait()?;
        }
        Ok(())
    }

    /// A `kubectl` command bound to this cluster (fresh cache dir, kubeconfig).
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        kubectl_command(&self.kubeconfig, &self.cache_dir, args)
    }

    /// Runs kubectl to completion.
    pub fn kubectl(&self, args: &[&str]) -> Result<Output> {
        self.kubectl_cmd(args)
            .output()
            .context("running kubectl (is it installed?)")
    }

    /// Runs kubectl and fails unless it exits 0; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl(args)?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                stdout(&out),
                stderr(&out)
            );
        }
        Ok(stdout(&out))
    }

    /// Runs kubectl with `input` on stdin (for `-f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Result<Output> {
        use std::io::Write;
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("no stdin"))?
            .write_all(input.as_bytes())?;
        Ok(child.wait_with_output()?)
    }

    /// `wasmkube push <sample>.wasm <sample>:v1` with this cluster's kubeconfig.
    pub fn push_sample(&self, name: &str) -> Result<String> {
        let out = Command::new(wasmkube_bin())
            .arg("push")
            .arg(sample_wasm(name))
            .arg(format!("{name}:v1"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .output()?;
        if !out.status.success() {
            bail!(
                "wasmkube push {name} failed: {}{}",
                stdout(&out),
                stderr(&out)
            );
        }
        Ok(stdout(&out))
    }

    /// A jsonpath field of one object (`""` when absent; error when the object is).
    /// The node proxy's port (Services by Host header). The server picks a
    /// free one (`--proxy-port 0`: a port chosen here could be taken by
    /// another test's connection before the server binds it) and publishes it
    /// on the Node.
    pub fn proxy_port(&self) -> Result<u16> {
        let port = self.kubectl_ok(&[
            "get",
            "nodes",
            "-o",
            r"jsonpath={.items[0].metadata.annotations.wasmkube\.io/proxy-port}",
        ])?;
        port.trim()
            .parse()
            .with_context(|| format!("the Node's proxy-port annotation {port:?}"))
    }

    pub fn field(&self, kind_name: &[&str], jsonpath: &str) -> Result<String> {
        let mut args = vec!["get"];
        args.extend_from_slice(kind_name);
        let jp = format!("jsonpath={jsonpath}");
        args.extend_from_slice(&["-o", &jp]);
        self.kubectl_ok(&args)
    }

    /// Waits until a pod's `status.phase` is `phase`.
    pub fn wait_phase(&self, pod: &str, phase: &str, timeout: Duration) -> Result<()> {
        wait_for(&format!("pod {pod} to be {phase}"), timeout, || {
            let got = self.field(&["pod", pod], "{.status.phase}")?;
            if got == phase {
                Ok(Some(()))
            } else {
                bail!("phase is {got:?}")
            }
        })
        .map_err(|e| {
            anyhow!(
                "{e:#}\n--- server log tail ---\n{}",
                tail(&self.server_log(), 60)
            )
        })
    }

    /// The HTTPS base URL of the API.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The admin token and CA from the written kubeconfig.
    pub fn credentials(&self) -> Result<(String, Vec<u8>)> {
        let kc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&self.kubeconfig)?)?;
        let token = kc["users"][0]["user"]["token"]
            .as_str()
            .ok_or_else(|| anyhow!("kubeconfig has no token"))?
            .to_string();
        let ca = kc["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .ok_or_else(|| anyhow!("kubeconfig has no certificate-authority-data"))?;
        let ca = base64::engine::general_purpose::STANDARD.decode(ca)?;
        Ok((token, ca))
    }

    /// A blocking HTTPS client that trusts the cluster CA (no token attached).
    pub fn http(&self) -> Result<reqwest::blocking::Client> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (_, ca) = self.credentials()?;
        Ok(reqwest::blocking::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .timeout(Duration::from_secs(60))
            .build()?)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- server log (tail) ---\n{}",
                tail(&self.server_log(), 200)
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A child process's stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A child process's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Reads a child's stdout line by line on a thread, so a test can wait for a
/// line with a deadline without blocking on a stream that never ends.
pub struct LineReader {
    rx: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl LineReader {
    pub fn new(mut r: impl Read + Send + 'static) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = r.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    if tx
                        .send(String::from_utf8_lossy(&line).trim_end().to_string())
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        LineReader {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line satisfying `pred`; returns it.
    pub fn wait_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return Ok(line);
                    }
                }
                Err(_) => bail!(
                    "timed out waiting for {what}; lines seen:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

/// A real etcd (Debian's `etcd-server`) on free loopback ports with a
/// temporary data dir: one member, or a cluster of several; stopped on drop.
/// Fails — never skips — when `etcd` is not installed: `scripts/setup.sh`
/// installs it.
pub struct Etcd {
    members: Vec<EtcdMember>,
    /// The first member's client URL.
    pub client_url: String,
    dir: tempfile::TempDir,
}

struct EtcdMember {
    name: String,
    client_url: String,
    peer_url: String,
    child: Option<Child>,
}

impl Etcd {
    /// One member.
    pub fn start() -> Result<Etcd> {
        Self::start_cluster(1)
    }

    /// A cluster of `n` members on loopback.
    pub fn start_cluster(n: usize) -> Result<Etcd> {
        let dir = tempfile::Builder::new()
            .prefix("wasmkube-etcd-")
            .tempdir()?;
        let members: Vec<EtcdMember> = (0..n)
            .map(|i| EtcdMember {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
                child: None,
            })
            .collect();
        let client_url = members[0].client_url.clone();
        let mut etcd = Etcd {
            members,
            client_url,
            dir,
        };
        for i in 0..n {
            etcd.spawn(i)?;
        }
        for i in 0..n {
            etcd.wait_healthy(i)?;
        }
        Ok(etcd)
    }

    /// Every member's client URL, comma-separated (for `--etcd-endpoints`).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let cluster = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", m.name)))?;
        let child = Command::new("etcd")
            .args(["--name", &m.name, "--data-dir"])
            .arg(self.dir.path().join(&m.name))
            .args([
                "--listen-client-urls",
                &m.client_url,
                "--advertise-client-urls",
                &m.client_url,
            ])
            .args([
                "--listen-peer-urls",
                &m.peer_url,
                "--initial-advertise-peer-urls",
                &m.peer_url,
            ])
            .args([
                "--initial-cluster",
                &cluster,
                "--initial-cluster-state",
                "new",
            ])
            .args(["--max-request-bytes", "10485760"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd: is etcd-server installed? (scripts/setup.sh installs it)")?;
        self.members[i].child = Some(child);
        Ok(())
    }

    fn wait_healthy(&mut self, i: usize) -> Result<()> {
        let health = format!("{}/health", self.members[i].client_url);
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        wait_for(
            &format!("etcd member {i} to answer /health"),
            Duration::from_secs(30),
            || {
                if let Some(status) = self.members[i]
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    return Err(hopeless(format!("etcd exited early with {status}")));
                }
                Ok(http
                    .get(&health)
                    .send()
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ()))
            },
        )
    }

    /// `kill -9` of member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts a killed member on its ports and data dir.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.spawn(i)?;
        self.wait_healthy(i)
    }

    /// The index of the current leader, as the running members report it.
    pub fn leader(&self) -> Result<usize> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        wait_for("an etcd leader", Duration::from_secs(30), || {
            for (i, m) in self
                .members
                .iter()
                .enumerate()
                .filter(|(_, m)| m.child.is_some())
            {
                let Ok(resp) = http
                    .post(format!("{}/v3/maintenance/status", m.client_url))
                    .body("{}")
                    .send()
                else {
                    continue;
                };
                let Ok(status) = resp.json::<serde_json::Value>() else {
                    continue;
                };
                let leader = status["leader"].as_str().unwrap_or("0");
                if leader != "0" && status["header"]["member_id"].as_str() == Some(leader) {
                    return Ok(Some(i));
                }
            }
            Ok(None)
        })
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

// ---------------------------------------------------------------------------
// Agents: nodes that join a control plane over the network.
// ---------------------------------------------------------------------------

impl Cluster {
    /// Whether the server process is running (not killed, not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `wasmkube token create` with the admin kubeconfig; returns the join
    /// string (`WK1<ca-hash>::<id>.<secret>`).
    pub fn create_join_token(&self) -> Result<String> {
        let out = Command::new(wasmkube_bin())
            .args(["token", "create"])
            // The env var, not the flag: it works wherever the flag sits
            // (`token --kubeconfig K create` or `token create --kubeconfig K`).
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null())
            .output()
            .context("running wasmkube token create")?;
        if !out.status.success() {
            bail!(
                "wasmkube token create failed ({}): {}{}",
                out.status,
                stdout(&out),
                stderr(&out)
            );
        }
        let text = stdout(&out);
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with("WK1"))
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no join string in the output of token create: {text:?}"))
    }

    /// The status of a node's `Ready` condition (`True`, `False`, `Unknown`;
    /// `""` before the kubelet first reports).
    pub fn node_ready(&self, node: &str) -> Result<String> {
        Ok(self
            .field(
                &["node", node],
                r#"{.status.conditions[?(@.type=="Ready")].status}"#,
            )?
            .trim()
            .to_string())
    }

    /// Waits until a node's `Ready` condition is `want`.
    pub fn wait_node_ready_is(&self, node: &str, want: &str, timeout: Duration) -> Result<()> {
        wait_for(&format!("node {node} Ready={want}"), timeout, || {
            let got = self.node_ready(node)?;
            if got == want {
                Ok(Some(()))
            } else {
                bail!("Ready is {got:?}")
            }
        })
    }
}

/// How to start an [`Agent`].
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `--node-lease-duration-seconds`: the Lease renews every quarter of it.
    pub lease_duration_seconds: u32,
    /// More `wasmkube agent` flags.
    pub extra_args: Vec<String>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            // Short, so a lost node stops renewing visibly within a test's
            // time; the control plane's grace period decides when it counts.
            lease_duration_seconds: 4,
            extra_args: Vec::new(),
        }
    }
}

/// One `wasmkube agent` process on loopback with its own data dir: a node
/// that joined `server` with a join token. Its stdout and stderr go to one
/// log file per start; it is killed on drop.
pub struct Agent {
    dir: tempfile::TempDir,
    /// The node name (`--name`).
    pub name: String,
    server: String,
    token: String,
    options: AgentOptions,
    child: Option<Child>,
    logs: ProcessLogs,
    cache_dir: PathBuf,
}

impl Agent {
    /// Spawns an agent joining `server` (an `https://` URL, possibly a
    /// [`TcpRelay`]'s) as node `name`, without waiting for it.
    pub fn spawn(server: &str, token: &str, name: &str, options: AgentOptions) -> Result<Agent> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("wasmkube-agent-{name}-"))
            .tempdir()?;
        let cache_dir = dir.path().join("kubectl-cache");
        let logs = ProcessLogs::new(dir.path(), "agent");
        let mut a = Agent {
            logs,
            dir,
            name: name.to_string(),
            server: server.to_string(),
            token: token.to_string(),
            options,
            child: None,
            cache_dir,
        };
        a.respawn()?;
        Ok(a)
    }

    /// Spawns an agent and waits until it says it is ready.
    pub fn start(server: &str, token: &str, name: &str, options: AgentOptions) -> Result<Agent> {
        let mut a = Self::spawn(server, token, name, options)?;
        a.wait_ready()?;
        Ok(a)
    }

    /// The agent's `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The kubeconfig holding the node's own credential (client cert).
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir().join("agent").join("kubeconfig")
    }

    /// Spawns the process again on the same data dir and flags (after
    /// [`Agent::kill9`]), as a service manager would after a reboot.
    pub fn respawn(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("agent {} is still running", self.name);
        }
        let log = self.logs.next()?;
        let child = Command::new(wasmkube_bin())
            .arg("agent")
            .args(["--server", &self.server])
            .args(["--token", &self.token])
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--kubelet-port", "0", "--proxy-port", "0"])
            .args([
                "--node-lease-duration-seconds",
                &self.options.lease_duration_seconds.to_string(),
            ])
            .args(&self.options.extra_args)
            .env("RUST_LOG", "info,wasmkube=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting wasmkube agent")?;
        self.child = Some(child);
        Ok(())
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// What the current start has printed so far.
    pub fn current_log(&self) -> String {
        self.logs.current()
    }

    /// Everything the agent printed, across restarts.
    pub fn log(&self) -> String {
        self.logs.all()
    }

    /// Waits until the current start has printed a line containing
    /// `needle`; fails at once if the process exits.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let who = format!("agent {}", self.name);
        self.logs.wait(&mut self.child, &who, needle, timeout)
    }

    /// Waits for `wasmkube agent is ready` (the Node reported Ready).
    pub fn wait_ready(&mut self) -> Result<()> {
        self.wait_log("wasmkube agent is ready", Duration::from_secs(90))
    }

    /// `kill -9` of the agent process (its pods' instances run inside it,
    /// so they die with it).
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// `kill -9`, then the same command again (a crash and a service
    /// manager's restart, or a device reboot).
    pub fn restart(&mut self) -> Result<()> {
        self.kill9()?;
        self.respawn()
    }

    /// A `kubectl` command authenticated as this node (its kubeconfig,
    /// a cache dir of its own).
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        kubectl_command(&self.kubeconfig(), &self.cache_dir, args)
    }

    /// Runs kubectl as this node.
    pub fn kubectl(&self, args: &[&str]) -> Result<Output> {
        self.kubectl_cmd(args)
            .output()
            .context("running kubectl (is it installed?)")
    }

    /// The text of every line the containers of pod `uid` wrote on this
    /// agent, read from the container log files in its data dir (no API or
    /// kubelet involved, so it works while the agent is cut off). Files of
    /// the pod's containers and attempts are read in path order.
    pub fn container_log_lines(&self, uid: &str) -> Result<Vec<String>> {
        let mut files = Vec::new();
        for dir in find_dirs_named(&self.data_dir(), uid, 8) {
            collect_log_files(&dir, &mut files, 4);
        }
        files.sort();
        let mut lines = Vec::new();
        for f in files {
            // A file may be rotated away between listing and reading.
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            lines.extend(text.lines().map(|l| cri_log_text(l).to_string()));
        }
        Ok(lines)
    }
}

impl Agent {
    /// Whether the kubelet's local state holds pod `uid` (the pod as last
    /// seen from the API, `<kubelet data>/state/pods/<uid>.json`), which it
    /// runs from when the server is unreachable.
    pub fn has_local_pod(&self, uid: &str) -> bool {
        let file = format!("{uid}.json");
        find_dirs_named(&self.data_dir(), "state", 4)
            .iter()
            .any(|state| state.join("pods").join(&file).is_file())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- agent {} log (tail) ---\n{}",
                self.name,
                tail(&self.log(), 120)
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The text of one CRI-format log line (`<time> <stream> <P|F> <text>`);
/// the line itself when it is not in that format.
pub fn cri_log_text(line: &str) -> &str {
    let mut parts = line.splitn(4, ' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some("stdout" | "stderr"), Some("P" | "F"), Some(text)) => text,
        _ => line,
    }
}

/// Directories called `name` below `root`, at most `depth` levels down.
fn find_dirs_named(root: &Path, name: &str, depth: usize) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return found;
    };
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if e.file_name() == name {
            found.push(path);
        } else if depth > 0 {
            found.extend(find_dirs_named(&path, name, depth - 1));
        }
    }
    found
}

/// Container log files (`<n>.log`, rotated `<n>.log.1`) below `dir`.
fn collect_log_files(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() && depth > 0 => collect_log_files(&path, out, depth - 1),
            Ok(t) if t.is_file() && e.file_name().to_string_lossy().contains(".log") => {
                out.push(path)
            }
            _ => {}
        }
    }
}

/// A loopback TCP relay the test controls, standing between an agent and
/// its server to simulate a network partition: [`TcpRelay::cut`] drops
/// every open connection and refuses new ones (accepted, then closed at
/// once), [`TcpRelay::heal`] relays again. Stopped on drop.
pub struct TcpRelay {
    /// The relay's own loopback port.
    pub port: u16,
    shared: std::sync::Arc<RelayShared>,
    accept: Option<std::thread::JoinHandle<()>>,
}

struct RelayShared {
    upstream: std::net::SocketAddr,
    cut: std::sync::atomic::AtomicBool,
    stop: std::sync::atomic::AtomicBool,
    /// Both ends of every open relayed connection, to shut them down on cut.
    conns: std::sync::Mutex<std::collections::HashMap<u64, [std::net::TcpStream; 2]>>,
}

impl RelayShared {
    fn close_all(&self) {
        let conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|p| p.into_inner()));
        for [a, b] in conns.into_values() {
            let _ = a.shutdown(std::net::Shutdown::Both);
            let _ = b.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl TcpRelay {
    /// Relays 127.0.0.1:<new port> to `upstream_port` on loopback.
    pub fn start(upstream_port: u16) -> Result<TcpRelay> {
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(RelayShared {
            upstream: std::net::SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            cut: Default::default(),
            stop: Default::default(),
            conns: Default::default(),
        });
        let s = Arc::clone(&shared);
        let accept = std::thread::spawn(move || relay_accept(listener, s));
        Ok(TcpRelay {
            port,
            shared,
            accept: Some(accept),
        })
    }

    /// The relay as an `https://` URL (the server's certificate names
    /// 127.0.0.1, so TLS through the relay verifies).
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Drops every open connection and refuses new ones until [`heal`](Self::heal).
    pub fn cut(&self) {
        // The flag is set under the lock the accept thread registers new
        // connections under, so none slips through after the close.
        {
            let _guard = self.shared.conns.lock().unwrap_or_else(|p| p.into_inner());
            self.shared
                .cut
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.shared.close_all();
    }

    /// Relays new connections again.
    pub fn heal(&self) {
        self.shared
            .cut
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many relayed connections are open.
    pub fn open_connections(&self) -> usize {
        self.shared
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        self.shared.close_all();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn relay_accept(listener: TcpListener, shared: std::sync::Arc<RelayShared>) {
    use std::sync::atomic::Ordering;
    let mut next_id: u64 = 0;
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
        if shared.cut.load(Ordering::SeqCst) {
            continue; // dropped: the peer sees the connection closed
        }
        let Ok(upstream) =
            std::net::TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(2))
        else {
            continue; // the server is down: so is the connection
        };
        let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = (
            client.try_clone(),
            upstream.try_clone(),
            client.try_clone(),
            upstream.try_clone(),
        ) else {
            continue;
        };
        next_id += 1;
        let id = next_id;
        {
            let mut conns = shared.conns.lock().unwrap_or_else(|p| p.into_inner());
            if shared.cut.load(Ordering::SeqCst) {
                continue;
            }
            conns.insert(id, [c3, u3]);
        }
        for (mut from, mut to) in [(client, u2), (upstream, c2)] {
            let shared = std::sync::Arc::clone(&shared);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
                // One direction ended: end the whole connection, as a
                // partition or a closed peer would.
                let _ = from.shutdown(std::net::Shutdown::Both);
                let _ = to.shutdown(std::net::Shutdown::Both);
                shared
                    .conns
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            });
        }
    }
}

/// A separate control-plane component: `wasmkube scheduler` or
/// `wasmkube controller-manager` with a kubeconfig of its own (the server
/// writes them into its data dir when started with `--disable-scheduler` /
/// `--disable-controller-manager`). Its output goes to one log file per
/// start; it is killed on drop.
pub struct Component {
    /// Holds the log files; removed with the component.
    _dir: tempfile::TempDir,
    /// The subcommand (`scheduler`, `controller-manager`).
    pub command: String,
    args: Vec<String>,
    child: Option<Child>,
    logs: ProcessLogs,
}

impl Component {
    /// Spawns `wasmkube <command> --kubeconfig <kubeconfig> <extra_args>`
    /// without waiting for it to lead.
    pub fn spawn(command: &str, kubeconfig: &Path, extra_args: &[&str]) -> Result<Component> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("wasmkube-{command}-"))
            .tempdir()?;
        let mut args = vec!["--kubeconfig".to_string(), kubeconfig.display().to_string()];
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let logs = ProcessLogs::new(dir.path(), command);
        let mut c = Component {
            logs,
            _dir: dir,
            command: command.to_string(),
            args,
            child: None,
        };
        c.respawn()?;
        Ok(c)
    }

    /// Starts the process again with the same flags (after [`Component::kill9`]).
    pub fn respawn(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("{} is still running", self.command);
        }
        let log = self.logs.next()?;
        let child = Command::new(wasmkube_bin())
            .arg(&self.command)
            .args(&self.args)
            .env("RUST_LOG", "info,wasmkube=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting wasmkube {}", self.command))?;
        self.child = Some(child);
        Ok(())
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process id of the current start.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9` of the process.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// What the current start has printed so far.
    pub fn current_log(&self) -> String {
        self.logs.current()
    }

    /// Everything the process printed, across restarts.
    pub fn log(&self) -> String {
        self.logs.all()
    }

    /// Waits until the current start has printed a line containing
    /// `needle`; fails at once if the process exits.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        self.logs
            .wait(&mut self.child, &self.command, needle, timeout)
    }

    /// Waits until the current start holds its Lease and runs.
    pub fn wait_leading(&mut self) -> Result<()> {
        self.wait_log("acquired the lease", Duration::from_secs(90))
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- {} log (tail) ---\n{}",
                self.command,
                tail(&self.log(), 120)
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Process and API probes for the fault suite (reliability/).
// ---------------------------------------------------------------------------

impl Cluster {
    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The embedded store's file (`<data dir>/store.redb`).
    pub fn store_file(&self) -> PathBuf {
        self.data_dir().join("store.redb")
    }

    /// What the current start of the server has printed so far.
    pub fn current_log(&self) -> String {
        self.logs.current()
    }
}

/// A process's resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// How many file descriptors a process holds open (`/proc/<pid>/fd`).
pub fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// A blocking JSON client of a cluster's API with a bearer token, for
/// tests that need status codes and raw streams rather than kubectl.
#[derive(Clone)]
pub struct ApiClient {
    pub http: reqwest::blocking::Client,
    pub base: String,
    pub token: String,
}

impl ApiClient {
    /// As the admin (from the cluster's kubeconfig), HTTP/1.1 only so a
    /// dropped response closes its own connection; `timeout` bounds each
    /// request including its body (`None` for watches).
    pub fn admin(cluster: &Cluster, timeout: Option<Duration>) -> Result<ApiClient> {
        let (token, _) = cluster.credentials()?;
        Self::with_token(cluster, &token, timeout)
    }

    /// As the holder of `token`.
    pub fn with_token(
        cluster: &Cluster,
        token: &str,
        timeout: Option<Duration>,
    ) -> Result<ApiClient> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (_, ca) = cluster.credentials()?;
        let http = reqwest::blocking::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .http1_only()
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .build()?;
        Ok(ApiClient {
            http,
            base: cluster.url(),
            token: token.to_string(),
        })
    }

    /// Sends one request; the status and the JSON body (`Null` when the
    /// body is not JSON). Errors only when no answer arrived.
    pub fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(b)?);
        }
        let resp = req.send()?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes()?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        ))
    }

    /// Starts a GET whose body is read as a stream (a watch).
    pub fn stream(&self, path: &str) -> Result<reqwest::blocking::Response> {
        Ok(self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()?)
    }
}

impl Agent {
    /// The agent's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_hopeless_error_ends_the_wait_at_once_and_others_are_retried() {
        let mut calls = 0;
        let err = wait_for("a process", Duration::from_secs(600), || {
            calls += 1;
            if calls < 3 {
                bail!("not up yet");
            }
            Err::<Option<()>, _>(hopeless("it exited with status 2"))
        })
        .unwrap_err();
        assert_eq!(
            calls, 3,
            "plain errors are retried, the hopeless one is not"
        );
        assert_eq!(format!("{err:#}"), "it exited with status 2");
    }
}
