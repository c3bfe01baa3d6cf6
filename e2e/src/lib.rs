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

/// Polls `check` until it returns `Ok(Some(v))` or `timeout` passes. The error
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
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One running all-in-one server (apiserver, scheduler, controllers, node).
pub struct Cluster {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub port: u16,
    pub kubelet_port: u16,
    pub kubeconfig: PathBuf,
    cache_dir: PathBuf,
    starts: u32,
    extra_args: Vec<String>,
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
        let dir = tempfile::Builder::new().prefix("wasmkube-e2e-").tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        let cache_dir = dir.path().join("kubectl-cache");
        let mut c = Cluster {
            child: None,
            port: free_port(),
            kubelet_port: free_port(),
            kubeconfig,
            cache_dir,
            dir,
            starts: 0,
            extra_args: options.extra_args,
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

    fn log_path(&self, n: u32) -> PathBuf {
        self.dir.path().join(format!("server-{n}.log"))
    }

    /// Spawns the server process (again, after [`Cluster::kill9`]).
    pub fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        let log = File::create(self.log_path(self.starts))?;
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
        let log = self.log_path(self.starts);
        let result = wait_for(
            "the server to say it is ready",
            Duration::from_secs(120),
            || {
                if let Some(child) = self.child.as_mut()
                    && let Some(status) = child.try_wait()?
                {
                    bail!("server exited early with {status}");
                }
                Ok(std::fs::read_to_string(&log)?
                    .contains("wasmkube is ready")
                    .then_some(()))
            },
        )
        .and_then(|()| {
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
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
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
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .arg("--request-timeout=30s")
            .args(args)
            .stdin(Stdio::null());
        cmd
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
                    bail!("etcd exited early with {status}");
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
