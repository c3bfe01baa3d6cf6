//! Container probes: `startupProbe`, `livenessProbe` and `readinessProbe`
//! with Kubernetes' semantics, and the wasm convention for `exec`.
//!
//! # The `exec` convention
//!
//! A wasm container image is one module, so there is no other program in
//! the image to exec. An `exec` probe therefore runs a **short-lived
//! instance of the container's own module** — instantiation takes
//! microseconds, less than a process exec in a Linux container — with:
//!
//! - `argv` = `exec.command`, `argv[0]` included, exactly as exec in an
//!   image would see it (`$(VAR)` references expand from the container's
//!   environment, as the kubelet expands them);
//! - the container's environment and volume mounts (same directories, same
//!   read-only flags), its memory limit (for the probe instance's own
//!   linear memory) and its CPU limit;
//! - stdout and stderr captured; the first [`MAX_OUTPUT`] bytes become the
//!   message of the `Unhealthy` event (`Liveness probe failed: <output>`).
//!
//! Exit code 0 is success. A non-zero exit, a trap, running out of memory,
//! or still running after `timeoutSeconds` (the instance is interrupted) is
//! a failure. A module serves its probes by looking at its arguments, e.g.
//! `command: ["app", "healthz"]`.
//!
//! `httpGet` and `tcpSocket` go to the pod IP unless `host` is set
//! (`httpGet`: scheme HTTP unless `HTTPS`, which is not verified, as in the
//! kubelet; 200–399 is success; redirects are followed on the same host
//! only). `grpc` probes fail with a "not supported" message.
//!
//! # Semantics
//!
//! As in the kubelet: each probe first runs `initialDelaySeconds` after the
//! container started, then every `periodSeconds`; a result counts once it
//! repeats `successThreshold` / `failureThreshold` times in a row (success
//! threshold 1 for liveness and startup). A startup probe holds back the
//! other two until it succeeds; startup or liveness failure kills the
//! container (restarted by the pod's restart policy, through the usual
//! crash-loop back-off); readiness drives the container's `ready` field.
//! Every failed attempt records an `Unhealthy` event.
//!
//! The probes of one container attempt run in one task ([`start`]), which
//! reports what the pod worker must act on as [`Update`]s and ends with the
//! container or the pod. The threshold rules are [`Tracker`], the loop is
//! [`run`], and what a probe does is behind [`Prober`], so the timing can
//! be tested with paused time and a scripted prober.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::events::{EventSink, EventType, PodEvent};
use crate::logs::{ContainerLog, LogOptions, read_all, render_lines};
use crate::pod_worker::expand;
use crate::sandbox::{ContainerRun, ExitStatus, Preopen, Sandbox};

/// `periodSeconds` when unset.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);
/// `timeoutSeconds` when unset.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// `failureThreshold` when unset.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// How much of an exec probe's output goes into the event message.
pub const MAX_OUTPUT: usize = 4096;
/// Capacity of a pod worker's probe update channel.
pub const UPDATE_QUEUE: usize = 16;
/// Probe timings come from int32 seconds; capping them keeps every deadline
/// far from `Instant` overflow.
const MAX_SECONDS: u64 = 10 * 365 * 24 * 3600;
/// The exec output file's cap: enough for [`MAX_OUTPUT`], small enough that
/// a chatty probe command costs little disk.
const OUTPUT_FILE_CAP: u64 = 64 * 1024;
/// What the kubelet sends as `User-Agent`.
const USER_AGENT: &str = "kube-probe/1.33";
/// The kubelet gives up after this many redirects.
const MAX_REDIRECTS: usize = 10;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `startupProbe`
    Startup,
    /// `livenessProbe`
    Liveness,
    /// `readinessProbe`
    Readiness,
}

impl Kind {
    /// `Startup`, `Liveness` or `Readiness`, as event messages spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }

    fn lowercase(self) -> &'static str {
        match self {
            Kind::Startup => "startup",
            Kind::Liveness => "liveness",
            Kind::Readiness => "readiness",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    /// Run the container's module with this argv.
    Exec {
        /// `argv`, `argv[0]` included.
        command: Vec<String>,
    },
    /// An HTTP GET.
    HttpGet {
        /// `http` or `https` (lowercase).
        scheme: String,
        /// Host to connect to; the pod IP when `None`.
        host: Option<String>,
        /// Port number or container port name.
        port: IntOrString,
        /// Request path, starting with `/`.
        path: String,
        /// Extra request headers.
        headers: Vec<(String, String)>,
    },
    /// A TCP connect.
    TcpSocket {
        /// Host to connect to; the pod IP when `None`.
        host: Option<String>,
        /// Port number or container port name.
        port: IntOrString,
    },
    /// A gRPC health check (not supported).
    Grpc,
    /// The probe names no handler.
    Missing,
}

/// When a probe runs and how its results count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Wait after the container started before the first probe.
    pub initial_delay: Duration,
    /// Time between probes.
    pub period: Duration,
    /// How long one probe may take.
    pub timeout: Duration,
    /// Successes in a row that make the result success.
    pub success_threshold: u32,
    /// Failures in a row that make the result failure.
    pub failure_threshold: u32,
}

/// One probe of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Which probe.
    pub kind: Kind,
    /// What it does.
    pub handler: Handler,
    /// When and how it counts.
    pub timing: Timing,
}

/// Seconds from an int32 field: unset or not positive means `default`
/// (the apiserver's defaulting turns 0 into the default too).
fn seconds(value: Option<i32>, default: Duration) -> Duration {
    match value.and_then(|v| u64::try_from(v).ok()).filter(|v| *v > 0) {
        Some(v) => Duration::from_secs(v.min(MAX_SECONDS)),
        None => default,
    }
}

fn threshold(value: Option<i32>, default: u32) -> u32 {
    value
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

impl Spec {
    /// Reads a Kubernetes probe, applying the API's defaults.
    pub fn from_probe(kind: Kind, probe: &Probe) -> Spec {
        let handler = if let Some(exec) = &probe.exec {
            Handler::Exec {
                command: exec.command.clone().unwrap_or_default(),
            }
        } else if let Some(http) = &probe.http_get {
            let path = http.path.clone().unwrap_or_default();
            Handler::HttpGet {
                scheme: http
                    .scheme
                    .as_deref()
                    .unwrap_or("HTTP")
                    .to_ascii_lowercase(),
                host: http.host.clone().filter(|h| !h.is_empty()),
                port: http.port.clone(),
                path: if path.starts_with('/') {
                    path
                } else {
                    format!("/{path}")
                },
                headers: http
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect(),
            }
        } else if let Some(tcp) = &probe.tcp_socket {
            Handler::TcpSocket {
                host: tcp.host.clone().filter(|h| !h.is_empty()),
                port: tcp.port.clone(),
            }
        } else if probe.grpc.is_some() {
            Handler::Grpc
        } else {
            Handler::Missing
        };
        let initial_delay = match probe
            .initial_delay_seconds
            .and_then(|v| u64::try_from(v).ok())
        {
            Some(v) => Duration::from_secs(v.min(MAX_SECONDS)),
            None => Duration::ZERO,
        };
        // The API rejects another value for these two; a result that needs
        // several successes would only delay the restart decision.
        let success_threshold = match kind {
            Kind::Readiness => threshold(probe.success_threshold, 1),
            Kind::Liveness | Kind::Startup => 1,
        };
        Spec {
            kind,
            handler,
            timing: Timing {
                initial_delay,
                period: seconds(probe.period_seconds, DEFAULT_PERIOD),
                timeout: seconds(probe.timeout_seconds, DEFAULT_TIMEOUT),
                success_threshold,
                failure_threshold: threshold(probe.failure_threshold, DEFAULT_FAILURE_THRESHOLD),
            },
        }
    }
}

/// A container's probes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probes {
    /// `startupProbe`
    pub startup: Option<Spec>,
    /// `livenessProbe`
    pub liveness: Option<Spec>,
    /// `readinessProbe`
    pub readiness: Option<Spec>,
}

impl Probes {
    /// The probes a container declares.
    pub fn of(container: &Container) -> Probes {
        let spec = |kind, probe: &Option<Probe>| probe.as_ref().map(|p| Spec::from_probe(kind, p));
        Probes {
            startup: spec(Kind::Startup, &container.startup_probe),
            liveness: spec(Kind::Liveness, &container.liveness_probe),
            readiness: spec(Kind::Readiness, &container.readiness_probe),
        }
    }

    /// No probe at all.
    pub fn is_empty(&self) -> bool {
        self.startup.is_none() && self.liveness.is_none() && self.readiness.is_none()
    }

    /// `(started, ready)` of a container that has just started: started
    /// unless a startup probe must pass first, ready unless a startup or
    /// readiness probe must pass first.
    pub fn initial_gate(&self) -> (bool, bool) {
        let started = self.startup.is_none();
        (started, started && self.readiness.is_none())
    }
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Healthy.
    Success,
    /// Unhealthy, and why (the event message after `… probe failed: `).
    Failure(String),
}

/// The kubelet's threshold rule for one probe: a result counts once it has
/// come `successThreshold` / `failureThreshold` times in a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    success_threshold: u32,
    failure_threshold: u32,
    last: Option<bool>,
    run: u32,
    result: Option<bool>,
}

impl Tracker {
    /// A fresh tracker. The result before any probe is the kubelet's:
    /// not ready, alive, and (for startup) unknown.
    pub fn new(kind: Kind, timing: &Timing) -> Tracker {
        Tracker {
            success_threshold: timing.success_threshold.max(1),
            failure_threshold: timing.failure_threshold.max(1),
            last: None,
            run: 0,
            result: match kind {
                Kind::Readiness => Some(false),
                Kind::Liveness => Some(true),
                Kind::Startup => None,
            },
        }
    }

    /// The current result (`None`: not known yet).
    pub fn result(&self) -> Option<bool> {
        self.result
    }

    /// Counts one probe; returns the new result when it changed.
    pub fn observe(&mut self, success: bool) -> Option<bool> {
        if self.last == Some(success) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(success);
            self.run = 1;
        }
        let needed = if success {
            self.success_threshold
        } else {
            self.failure_threshold
        };
        if self.run < needed || self.result == Some(success) {
            return None;
        }
        self.result = Some(success);
        Some(success)
    }
}

/// What the pod worker must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The startup probe succeeded. `ready` when there is no readiness
    /// probe to wait for.
    Started {
        /// The container is ready too.
        ready: bool,
    },
    /// The readiness result changed.
    Ready(bool),
    /// A liveness or startup probe failed `failureThreshold` times in a
    /// row: the container is to be killed (and restarted by the restart
    /// policy). The probes of this attempt have stopped.
    Failed(Kind),
}

/// A [`Change`] of one container attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The container's index in the worker (init containers first).
    pub index: usize,
    /// The attempt the probes ran against; updates of an earlier attempt
    /// are stale.
    pub container_id: String,
    /// What changed.
    pub change: Change,
}

/// The message of the `Killing` event for a container whose `kind` probe
/// failed, as the kubelet words it.
pub fn killing_message(kind: Kind, container: &str, restart_policy: &str) -> String {
    let mut message = format!("Container {container} failed {} probe", kind.lowercase());
    // The kubelet restarts a container killed by a probe unless the policy
    // is Never (even under OnFailure, whatever the exit code).
    if restart_policy != "Never" {
        message.push_str(", will be restarted");
    }
    message
}

/// Runs probes.
#[async_trait::async_trait]
pub trait Prober: Send + Sync + 'static {
    /// Runs `handler` once; it must give up after `timeout`.
    async fn probe(&self, kind: Kind, handler: &Handler, timeout: Duration) -> Outcome;
}

/// Where a container's probes report.
#[derive(Clone)]
pub struct Reporter {
    /// The container's index in the worker.
    pub index: usize,
    /// The attempt probed.
    pub container_id: String,
    /// The container's name.
    pub container: String,
    /// The pod, for events.
    pub pod: Arc<Pod>,
    /// The event recorder.
    pub events: Arc<dyn EventSink>,
    /// The pod worker.
    pub updates: mpsc::Sender<Update>,
}

impl Reporter {
    fn unhealthy(&self, kind: Kind, message: &str) {
        self.events.record(PodEvent::new(
            &self.pod,
            Some(&self.container),
            EventType::Warning,
            "Unhealthy",
            format!("{kind} probe failed: {message}"),
        ));
    }

    /// `false` once the worker is gone.
    async fn send(&self, change: Change) -> bool {
        let update = Update {
            index: self.index,
            container_id: self.container_id.clone(),
            change,
        };
        self.updates.send(update).await.is_ok()
    }
}

/// `t + d`, or `t` in the (capped-away) case of overflow.
fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or(t)
}

/// Runs a container's probes until `cancel`, the worker going away, or a
/// liveness or startup failure (the container is about to be killed, so
/// probing it further means nothing). `started_at` is when the container
/// started.
pub async fn run(
    probes: Probes,
    prober: Arc<dyn Prober>,
    reporter: Reporter,
    started_at: Instant,
    cancel: CancellationToken,
) {
    let (gate_tx, gate) = watch::channel(probes.startup.is_none());
    let has_readiness = probes.readiness.is_some();
    let one = |spec: Option<Spec>, gate: watch::Receiver<bool>| {
        let prober = prober.clone();
        let reporter = reporter.clone();
        let gate_tx = &gate_tx;
        async move {
            if let Some(spec) = spec {
                probe_loop(
                    &spec,
                    &*prober,
                    &reporter,
                    started_at,
                    gate,
                    gate_tx,
                    has_readiness,
                )
                .await;
            }
        }
    };
    let startup = one(probes.startup, gate.clone());
    let liveness = one(probes.liveness, gate.clone());
    let readiness = one(probes.readiness, gate);
    // After a liveness or startup failure the others keep going until the
    // worker kills the container, as in the kubelet.
    tokio::select! {
        () = cancel.cancelled() => {}
        _ = async { tokio::join!(startup, liveness, readiness) } => {}
    }
}

/// One probe: waits for the initial delay (and for the startup probe, unless
/// it is the startup probe), then probes every period until its result
/// ends the attempt or hands over.
async fn probe_loop(
    spec: &Spec,
    prober: &dyn Prober,
    reporter: &Reporter,
    started_at: Instant,
    mut gate: watch::Receiver<bool>,
    gate_tx: &watch::Sender<bool>,
    has_readiness: bool,
) {
    tokio::time::sleep_until(after(started_at, spec.timing.initial_delay)).await;
    if spec.kind != Kind::Startup && gate.wait_for(|started| *started).await.is_err() {
        return;
    }
    let mut tracker = Tracker::new(spec.kind, &spec.timing);
    loop {
        let began = Instant::now();
        let outcome = prober
            .probe(spec.kind, &spec.handler, spec.timing.timeout)
            .await;
        let success = outcome == Outcome::Success;
        if let Outcome::Failure(message) = &outcome {
            reporter.unhealthy(spec.kind, message);
        }
        let change = match (spec.kind, tracker.observe(success)) {
            (_, None) | (Kind::Liveness, Some(true)) => None,
            (Kind::Startup, Some(true)) => {
                gate_tx.send_replace(true);
                Some(Change::Started {
                    ready: !has_readiness,
                })
            }
            (Kind::Readiness, Some(ready)) => Some(Change::Ready(ready)),
            (Kind::Liveness | Kind::Startup, Some(false)) => Some(Change::Failed(spec.kind)),
        };
        if let Some(change) = change {
            // A startup probe is done once it succeeded; a failure ends
            // the attempt.
            let last = matches!(change, Change::Started { .. } | Change::Failed(_));
            if !reporter.send(change).await || last {
                return;
            }
        }
        tokio::time::sleep_until(after(began, spec.timing.period)).await;
    }
}

/// What [`start`] needs to probe one container attempt.
pub struct Launch<'a> {
    /// The container's spec.
    pub container: &'a Container,
    /// The attempt as handed to the sandbox: exec probes reuse its module,
    /// environment, mounts and limits.
    pub run: &'a ContainerRun,
    /// The container runtime.
    pub sandbox: Arc<dyn Sandbox>,
    /// The pod (for events).
    pub pod: Arc<Pod>,
    /// The pod's IP, where `httpGet` and `tcpSocket` go by default.
    pub pod_ip: &'a str,
    /// A folder of the pod's own for exec probes' output.
    pub work_dir: PathBuf,
    /// The container's index in the worker.
    pub index: usize,
    /// The event recorder.
    pub events: Arc<dyn EventSink>,
    /// Where updates go.
    pub updates: mpsc::Sender<Update>,
    /// Cancelled when the container stops.
    pub container_stop: CancellationToken,
    /// Cancelled when the pod is being deleted.
    pub pod_stop: CancellationToken,
    /// The node's HTTP containers: `httpGet` to one of the pod's goes
    /// in-process.
    pub http: crate::http::HttpPods,
}

/// Starts probing a container that has just started; `None` when it has no
/// probes. The task ends when the container or the pod stops.
pub fn start(launch: Launch<'_>) -> Option<JoinHandle<()>> {
    let probes = Probes::of(launch.container);
    if probes.is_empty() {
        return None;
    }
    let prober = Arc::new(
        ContainerProber::new(
            launch.sandbox,
            launch.run,
            launch.container,
            launch.pod_ip,
            launch.work_dir,
        )
        .with_http(launch.http, &launch.pod),
    );
    let reporter = Reporter {
        index: launch.index,
        container_id: launch.run.id.clone(),
        container: launch.container.name.clone(),
        pod: launch.pod,
        events: launch.events,
        updates: launch.updates,
    };
    let container_stop = launch.container_stop;
    let pod_stop = launch.pod_stop;
    let started_at = Instant::now();
    Some(tokio::spawn(async move {
        tokio::select! {
            () = container_stop.cancelled() => {}
            () = run(probes, prober, reporter, started_at, pod_stop) => {}
        }
    }))
}

/// What an exec probe instance inherits from its container.
struct ExecTarget {
    id: String,
    digest: String,
    module_path: PathBuf,
    env: Vec<(String, String)>,
    memory_limit: u64,
    cpu_limit_millis: Option<u64>,
    preopens: Vec<Preopen>,
}

/// The kubelet's prober for one container attempt.
pub struct ContainerProber {
    sandbox: Arc<dyn Sandbox>,
    exec: ExecTarget,
    container: String,
    pod_ip: String,
    ports: Vec<ContainerPort>,
    work_dir: PathBuf,
    /// The node's HTTP containers and this pod's (namespace, name).
    http: Option<(crate::http::HttpPods, String, String)>,
}

impl ContainerProber {
    /// A prober for the attempt `run` of `container`; exec probes write
    /// their output under `work_dir`.
    pub fn new(
        sandbox: Arc<dyn Sandbox>,
        run: &ContainerRun,
        container: &Container,
        pod_ip: &str,
        work_dir: PathBuf,
    ) -> ContainerProber {
        ContainerProber {
            sandbox,
            exec: ExecTarget {
                id: run.id.clone(),
                digest: run.digest.clone(),
                module_path: run.module_path.clone(),
                env: run.env.clone(),
                memory_limit: run.memory_limit,
                cpu_limit_millis: run.cpu_limit_millis,
                preopens: run.preopens.clone(),
            },
            container: container.name.clone(),
            pod_ip: pod_ip.to_string(),
            ports: container.ports.clone().unwrap_or_default(),
            work_dir,
            http: None,
        }
    }

    /// Sends `httpGet` probes to the pod's own HTTP containers in-process:
    /// they listen on no socket of their own.
    pub fn with_http(mut self, http: crate::http::HttpPods, pod: &Pod) -> ContainerProber {
        self.http = Some((
            http,
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        ));
        self
    }

    /// `httpGet` on one of the pod's HTTP containers; `None` when the
    /// probe is not for one.
    async fn http_get_in_process(
        &self,
        host: Option<&str>,
        port: u16,
        path: &str,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Option<Outcome> {
        let (pods, namespace, pod) = self.http.as_ref()?;
        if host.is_some_and(|h| h != self.pod_ip) {
            return None;
        }
        let key = crate::http::EndpointKey {
            namespace: namespace.clone(),
            pod: pod.clone(),
            port,
        };
        if !pods.contains(&key) {
            return None;
        }
        let mut request = http::Request::new(crate::http::Body::empty());
        *request.uri_mut() = match path.parse() {
            Ok(uri) => uri,
            Err(e) => return Some(Outcome::Failure(format!("invalid path {path:?}: {e}"))),
        };
        match probe_headers(headers) {
            Ok(h) => *request.headers_mut() = h,
            Err(message) => return Some(Outcome::Failure(message)),
        }
        let url = format!("http://{}{path}", self.authority(host, port));
        if let Ok(value) = http::HeaderValue::from_str(&self.authority(host, port)) {
            request
                .headers_mut()
                .entry(http::header::HOST)
                .or_insert(value);
        }
        Some(
            match tokio::time::timeout(timeout, pods.serve(&key, request)).await {
                Ok(Ok(response)) => {
                    let code = response.status().as_u16();
                    if (200..400).contains(&code) {
                        Outcome::Success
                    } else {
                        Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
                    }
                }
                Ok(Err(e)) => Outcome::Failure(format!("Get {url:?}: {e}")),
                Err(_) => Outcome::Failure(format!(
                    "Get {url:?}: no response within {}s",
                    timeout.as_secs()
                )),
            },
        )
    }

    async fn exec(&self, kind: Kind, command: &[String], timeout: Duration) -> Outcome {
        if command.is_empty() {
            return Outcome::Failure("exec probe has no command".into());
        }
        let argv: Vec<String> = command.iter().map(|a| expand(a, &self.exec.env)).collect();
        let shown = argv.join(" ");
        // One file per container and probe kind, emptied before each run:
        // the message shows this run's output only.
        let path = self
            .work_dir
            .join(format!("{}-{}.log", self.container, kind.lowercase()));
        let mut rotated = path.clone().into_os_string();
        rotated.push(".1");
        for p in [path.clone(), PathBuf::from(rotated)] {
            if let Err(e) = tokio::fs::remove_file(&p).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Outcome::Failure(format!("command {shown:?}: clearing its output: {e}"));
            }
        }
        let log = match ContainerLog::create(&path, OUTPUT_FILE_CAP).await {
            Ok(log) => log,
            Err(e) => {
                return Outcome::Failure(format!("command {shown:?}: capturing its output: {e}"));
            }
        };
        let stop = CancellationToken::new();
        let run = ContainerRun {
            id: format!("{}/{}-probe", self.exec.id, kind.lowercase()),
            digest: self.exec.digest.clone(),
            module_path: self.exec.module_path.clone(),
            argv,
            env: self.exec.env.clone(),
            memory_limit: self.exec.memory_limit,
            cpu_limit_millis: self.exec.cpu_limit_millis,
            preopens: self.exec.preopens.clone(),
            stdout: log.stdout(),
            stderr: log.stderr(),
            stop: stop.clone(),
            // The probe's use is its own, not the container's.
            usage: Arc::default(),
        };
        let running = self.sandbox.run(run);
        tokio::pin!(running);
        let mut timed_out = false;
        let result = match tokio::time::timeout(timeout, &mut running).await {
            Ok(r) => r,
            Err(_) => {
                // Interrupt the instance, then take its (Killed) end.
                timed_out = true;
                stop.cancel();
                running.await
            }
        };
        let output = match log.finish().await {
            Ok(()) => read_output(&path).await,
            Err(e) => format!("(output lost: {e})"),
        };
        let with_output = |what: String| {
            if output.is_empty() {
                what
            } else {
                format!("{what}: {output}")
            }
        };
        match result {
            Ok(ExitStatus::Exited(0)) => Outcome::Success,
            // Like the kubelet: the command's output is the message.
            Ok(ExitStatus::Exited(_)) if !output.is_empty() => Outcome::Failure(output),
            Ok(ExitStatus::Exited(code)) => {
                Outcome::Failure(format!("command {shown:?} exited with code {code}"))
            }
            Ok(ExitStatus::Killed) if timed_out => {
                Outcome::Failure(format!("command {shown:?} timed out"))
            }
            Ok(ExitStatus::Killed) => Outcome::Failure(format!("command {shown:?} was stopped")),
            Ok(ExitStatus::Trapped(trap)) => {
                Outcome::Failure(with_output(format!("command {shown:?} trapped: {trap}")))
            }
            Ok(ExitStatus::OutOfMemory) => Outcome::Failure(with_output(format!(
                "command {shown:?} exceeded the memory limit of {} bytes",
                self.exec.memory_limit
            ))),
            Err(e) => Outcome::Failure(format!("command {shown:?} could not start: {e}")),
        }
    }

    /// A port number, or the number of a named container port.
    fn resolve_port(&self, port: &IntOrString) -> Result<u16, String> {
        let number = match port {
            IntOrString::Int(n) => i64::from(*n),
            IntOrString::String(name) => match self
                .ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
            {
                Some(p) => i64::from(p.container_port),
                // The kubelet's last resort: a number written as a string.
                None => name
                    .parse::<i64>()
                    .map_err(|_| format!("couldn't find port: {name} in container"))?,
            },
        };
        u16::try_from(number)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port number: {number}"))
    }

    /// `host:port`, with an IPv6 host in brackets; the pod IP by default.
    fn authority(&self, host: Option<&str>, port: u16) -> String {
        let host = host.unwrap_or(&self.pod_ip);
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }

    async fn http_get(
        &self,
        scheme: &str,
        host: Option<&str>,
        port: &IntOrString,
        path: &str,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Outcome {
        let port = match self.resolve_port(port) {
            Ok(p) => p,
            Err(message) => return Outcome::Failure(message),
        };
        if scheme != "http" && scheme != "https" {
            return Outcome::Failure(format!("unsupported scheme: {scheme:?}"));
        }
        if scheme == "http"
            && let Some(outcome) = self
                .http_get_in_process(host, port, path, headers, timeout)
                .await
        {
            return outcome;
        }
        let url = format!("{scheme}://{}{path}", self.authority(host, port));
        let client = match http_client() {
            Ok(c) => c,
            Err(message) => return Outcome::Failure(message),
        };
        let request = match probe_headers(headers) {
            Ok(h) => client.get(&url).headers(h).timeout(timeout),
            Err(message) => return Outcome::Failure(message),
        };
        match request.send().await {
            Ok(response) => {
                let code = response.status().as_u16();
                if (200..400).contains(&code) {
                    Outcome::Success
                } else {
                    Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
                }
            }
            Err(e) if e.is_timeout() => Outcome::Failure(format!(
                "Get {url:?}: no response within {}s",
                timeout.as_secs()
            )),
            Err(e) => Outcome::Failure(format!("Get {url:?}: {}", error_chain(&e))),
        }
    }

    async fn tcp_socket(
        &self,
        host: Option<&str>,
        port: &IntOrString,
        timeout: Duration,
    ) -> Outcome {
        let port = match self.resolve_port(port) {
            Ok(p) => p,
            Err(message) => return Outcome::Failure(message),
        };
        let addr = self.authority(host, port);
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
            Ok(Ok(_)) => Outcome::Success,
            Ok(Err(e)) => Outcome::Failure(format!("dial tcp {addr}: {e}")),
            Err(_) => Outcome::Failure(format!("dial tcp {addr}: i/o timeout")),
        }
    }
}

#[async_trait::async_trait]
impl Prober for ContainerProber {
    async fn probe(&self, kind: Kind, handler: &Handler, timeout: Duration) -> Outcome {
        match handler {
            Handler::Exec { command } => self.exec(kind, command, timeout).await,
            Handler::HttpGet {
                scheme,
                host,
                port,
                path,
                headers,
            } => {
                self.http_get(scheme, host.as_deref(), port, path, headers, timeout)
                    .await
            }
            Handler::TcpSocket { host, port } => {
                self.tcp_socket(host.as_deref(), port, timeout).await
            }
            Handler::Grpc => Outcome::Failure(
                "gRPC probes are not supported by wasmkube; use exec, httpGet or tcpSocket".into(),
            ),
            Handler::Missing => {
                Outcome::Failure("the probe has no handler; set exec, httpGet or tcpSocket".into())
            }
        }
    }
}

/// The first [`MAX_OUTPUT`] bytes a probe command printed (stdout and
/// stderr in the order written), without trailing whitespace.
async fn read_output(path: &std::path::Path) -> String {
    let data = match read_all(path).await {
        Ok(d) => d,
        Err(e) => return format!("(output unreadable: {e})"),
    };
    let mut out = Vec::new();
    for line in render_lines(&data, &LogOptions::default()) {
        out.extend_from_slice(&line);
        if out.len() >= MAX_OUTPUT {
            break;
        }
    }
    out.truncate(MAX_OUTPUT);
    // A cut through a multi-byte character shows as one replacement char.
    String::from_utf8_lossy(&out).trim_end().to_string()
}

/// The request headers: the kubelet's defaults, each replaced by a probe
/// header of the same name.
fn probe_headers(headers: &[(String, String)]) -> Result<reqwest::header::HeaderMap, String> {
    use reqwest::header::{ACCEPT, HeaderMap, HeaderName, HeaderValue};
    let mut map = HeaderMap::new();
    map.insert(
        reqwest::header::USER_AGENT,
        HeaderValue::from_static(USER_AGENT),
    );
    map.insert(ACCEPT, HeaderValue::from_static("*/*"));
    let mut replaced = std::collections::HashSet::new();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid HTTP header name {name:?}"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("invalid value for HTTP header {name}"))?;
        if replaced.insert(name.clone()) {
            map.remove(&name);
        }
        map.append(name, value);
    }
    Ok(map)
}

/// One client for every HTTP probe of the kubelet: no proxy, no
/// connection reuse, no certificate check (as the kubelet's prober), and
/// redirects followed only on the same host — a redirect elsewhere ends
/// the probe with the 3xx, which counts as success.
fn http_client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let redirects = reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error(format!("stopped after {MAX_REDIRECTS} redirects"));
                }
                let first = attempt.previous().first().and_then(|u| u.host_str());
                if first.is_some() && first == attempt.url().host_str() {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            });
            reqwest::Client::builder()
                .no_proxy()
                .danger_accept_invalid_certs(true)
                .pool_max_idle_per_host(0)
                .redirect(redirects)
                .build()
                .map_err(|e| format!("setting up the HTTP prober: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// An error and its causes, `: `-separated (reqwest's own text alone says
/// only "error sending request").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ExecAction, GRPCAction, HTTPGetAction, HTTPHeader, PodSpec, PodStatus, TCPSocketAction,
    };
    use std::collections::{BTreeMap, HashMap, VecDeque};
    use std::sync::Mutex;

    fn exec_probe(command: &[&str]) -> Probe {
        Probe {
            exec: Some(ExecAction {
                command: Some(command.iter().map(|s| s.to_string()).collect()),
            }),
            ..Default::default()
        }
    }

    fn timing(initial: u64, period: u64, success: u32, failure: u32) -> Timing {
        Timing {
            initial_delay: Duration::from_secs(initial),
            period: Duration::from_secs(period),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    fn spec(kind: Kind, timing: Timing) -> Spec {
        Spec {
            kind,
            handler: Handler::Exec {
                command: vec!["x".into()],
            },
            timing,
        }
    }

    #[test]
    fn probe_fields_take_the_api_defaults() {
        let s = Spec::from_probe(Kind::Readiness, &exec_probe(&["app", "healthz"]));
        assert_eq!(
            s.timing,
            Timing {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
        assert_eq!(
            s.handler,
            Handler::Exec {
                command: vec!["app".into(), "healthz".into()]
            }
        );
        let mut p = exec_probe(&["x"]);
        p.initial_delay_seconds = Some(-5);
        p.period_seconds = Some(0);
        p.timeout_seconds = Some(3);
        p.success_threshold = Some(4);
        p.failure_threshold = Some(-1);
        let readiness = Spec::from_probe(Kind::Readiness, &p);
        assert_eq!(readiness.timing.initial_delay, Duration::ZERO);
        assert_eq!(readiness.timing.period, DEFAULT_PERIOD);
        assert_eq!(readiness.timing.timeout, Duration::from_secs(3));
        assert_eq!(readiness.timing.success_threshold, 4);
        assert_eq!(readiness.timing.failure_threshold, 3);
        // Liveness and startup always count one success.
        assert_eq!(
            Spec::from_probe(Kind::Liveness, &p)
                .timing
                .success_threshold,
            1
        );
        assert_eq!(
            Spec::from_probe(Kind::Startup, &p).timing.success_threshold,
            1
        );
        // Huge values are capped, keeping deadlines far from overflow.
        p.period_seconds = Some(i32::MAX);
        assert_eq!(
            Spec::from_probe(Kind::Liveness, &p).timing.period,
            Duration::from_secs(MAX_SECONDS)
        );
    }

    #[test]
    fn http_tcp_grpc_and_missing_handlers() {
        let http = Probe {
            http_get: Some(HTTPGetAction {
                path: Some("healthz".into()),
                port: IntOrString::String("web".into()),
                http_headers: Some(vec![HTTPHeader {
                    name: "X-A".into(),
                    value: "1".into(),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            Spec::from_probe(Kind::Liveness, &http).handler,
            Handler::HttpGet {
                scheme: "http".into(),
                host: None,
                port: IntOrString::String("web".into()),
                path: "/healthz".into(),
                headers: vec![("X-A".into(), "1".into())],
            }
        );
        let tcp = Probe {
            tcp_socket: Some(TCPSocketAction {
                host: Some(String::new()),
                port: IntOrString::Int(80),
            }),
            ..Default::default()
        };
        assert_eq!(
            Spec::from_probe(Kind::Liveness, &tcp).handler,
            Handler::TcpSocket {
                host: None,
                port: IntOrString::Int(80)
            }
        );
        let grpc = Probe {
            grpc: Some(GRPCAction {
                port: 9000,
                service: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            Spec::from_probe(Kind::Liveness, &grpc).handler,
            Handler::Grpc
        );
        assert_eq!(
            Spec::from_probe(Kind::Liveness, &Probe::default()).handler,
            Handler::Missing
        );
    }

    #[test]
    fn initial_gate_follows_the_probes() {
        let mut c = Container {
            name: "c".into(),
            ..Default::default()
        };
        assert_eq!(Probes::of(&c).initial_gate(), (true, true));
        assert!(Probes::of(&c).is_empty());
        c.liveness_probe = Some(exec_probe(&["x"]));
        assert_eq!(Probes::of(&c).initial_gate(), (true, true));
        c.readiness_probe = Some(exec_probe(&["x"]));
        assert_eq!(Probes::of(&c).initial_gate(), (true, false));
        c.readiness_probe = None;
        c.startup_probe = Some(exec_probe(&["x"]));
        assert_eq!(Probes::of(&c).initial_gate(), (false, false));
    }

    #[test]
    fn tracker_counts_results_in_a_row() {
        let mut t = Tracker::new(Kind::Readiness, &timing(0, 1, 2, 3));
        assert_eq!(t.result(), Some(false));
        // One success is not enough; a failure resets the run.
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(true), Some(true));
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), Some(false));
        assert_eq!(t.observe(false), None);
        assert_eq!(t.result(), Some(false));

        let mut live = Tracker::new(Kind::Liveness, &timing(0, 1, 1, 2));
        assert_eq!(live.observe(true), None, "alive from the start");
        assert_eq!(live.observe(false), None);
        assert_eq!(live.observe(true), None);
        assert_eq!(live.observe(false), None);
        assert_eq!(live.observe(false), Some(false));

        let mut startup = Tracker::new(Kind::Startup, &timing(0, 1, 1, 1));
        assert_eq!(startup.result(), None);
        assert_eq!(startup.observe(true), Some(true));
    }

    #[test]
    fn killing_messages_say_whether_the_container_restarts() {
        assert_eq!(
            killing_message(Kind::Liveness, "c", "Always"),
            "Container c failed liveness probe, will be restarted"
        );
        assert_eq!(
            killing_message(Kind::Startup, "c", "OnFailure"),
            "Container c failed startup probe, will be restarted"
        );
        assert_eq!(
            killing_message(Kind::Liveness, "c", "Never"),
            "Container c failed liveness probe"
        );
    }

    /// Answers probes from a script per kind (then success), remembering
    /// when each probe ran.
    struct Scripted {
        t0: Instant,
        script: Mutex<HashMap<Kind, VecDeque<bool>>>,
        calls: Mutex<Vec<(Kind, u64)>>,
    }

    impl Scripted {
        fn new(script: &[(Kind, &[bool])]) -> Arc<Scripted> {
            Arc::new(Scripted {
                t0: Instant::now(),
                script: Mutex::new(
                    script
                        .iter()
                        .map(|(k, v)| (*k, v.iter().copied().collect()))
                        .collect(),
                ),
                calls: Mutex::new(Vec::new()),
            })
        }

        /// Seconds (since the start) at which `kind` was probed.
        fn calls(&self, kind: Kind) -> Vec<u64> {
            self.calls
                .lock()
                .map(|c| {
                    c.iter()
                        .filter(|(k, _)| *k == kind)
                        .map(|(_, t)| *t)
                        .collect()
                })
                .unwrap_or_default()
        }
    }

    #[async_trait::async_trait]
    impl Prober for Scripted {
        async fn probe(&self, kind: Kind, _: &Handler, _: Duration) -> Outcome {
            if let Ok(mut calls) = self.calls.lock() {
                calls.push((kind, self.t0.elapsed().as_secs()));
            }
            let ok = self
                .script
                .lock()
                .ok()
                .and_then(|mut s| s.get_mut(&kind).and_then(VecDeque::pop_front))
                .unwrap_or(true);
            if ok {
                Outcome::Success
            } else {
                Outcome::Failure(format!("{kind} says no"))
            }
        }
    }

    #[derive(Default)]
    struct Events(Mutex<Vec<PodEvent>>);

    impl EventSink for Events {
        fn record(&self, event: PodEvent) {
            if let Ok(mut v) = self.0.lock() {
                v.push(event);
            }
        }
    }

    impl Events {
        fn list(&self) -> Vec<(String, String)> {
            self.0
                .lock()
                .map(|v| {
                    v.iter()
                        .map(|e| (e.reason.clone(), e.message.clone()))
                        .collect()
                })
                .unwrap_or_default()
        }
    }

    struct Loop {
        updates: mpsc::Receiver<Update>,
        events: Arc<Events>,
        task: JoinHandle<()>,
        cancel: CancellationToken,
        t0: Instant,
    }

    fn start_loop(probes: Probes, prober: Arc<Scripted>) -> Loop {
        let (tx, updates) = mpsc::channel(UPDATE_QUEUE);
        let events = Arc::new(Events::default());
        let mut pod = Pod::default();
        pod.metadata.name = Some("p".into());
        let reporter = Reporter {
            index: 0,
            container_id: "wasm://u-c-0".into(),
            container: "c".into(),
            pod: Arc::new(pod),
            events: events.clone(),
            updates: tx,
        };
        let cancel = CancellationToken::new();
        let t0 = Instant::now();
        let task = tokio::spawn(run(probes, prober, reporter, t0, cancel.clone()));
        Loop {
            updates,
            events,
            task,
            cancel,
            t0,
        }
    }

    impl Loop {
        /// The next update and the second it came at.
        async fn next(&mut self) -> Option<(Change, u64)> {
            let u = self.updates.recv().await?;
            assert_eq!(u.container_id, "wasm://u-c-0");
            Some((u.change, self.t0.elapsed().as_secs()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_fails_after_threshold_failures_in_a_row() {
        let prober = Scripted::new(&[(
            Kind::Liveness,
            &[true, false, false, true, false, false, false],
        )]);
        let probes = Probes {
            liveness: Some(spec(Kind::Liveness, timing(5, 10, 1, 3))),
            ..Default::default()
        };
        let mut l = start_loop(probes, prober.clone());
        assert_eq!(l.next().await, Some((Change::Failed(Kind::Liveness), 65)));
        assert_eq!(prober.calls(Kind::Liveness), [5, 15, 25, 35, 45, 55, 65]);
        // The attempt's probes are over.
        assert_eq!(l.next().await, None);
        assert!(l.task.await.is_ok());
        let events = l.events.list();
        assert_eq!(events.len(), 5, "one Unhealthy event per failure");
        assert!(events.iter().all(|(reason, message)| reason == "Unhealthy"
            && message == "Liveness probe failed: Liveness says no"));
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_flips_with_its_thresholds() {
        let prober = Scripted::new(&[(
            Kind::Readiness,
            &[true, true, false, true, false, false, true, true],
        )]);
        let probes = Probes {
            readiness: Some(spec(Kind::Readiness, timing(0, 10, 2, 2))),
            ..Default::default()
        };
        let mut l = start_loop(probes, prober.clone());
        assert_eq!(l.next().await, Some((Change::Ready(true), 10)));
        assert_eq!(l.next().await, Some((Change::Ready(false), 50)));
        assert_eq!(l.next().await, Some((Change::Ready(true), 70)));
        l.cancel.cancel();
        assert!(l.task.await.is_ok());
        assert_eq!(
            l.events.list(),
            vec![
                (
                    "Unhealthy".to_string(),
                    "Readiness probe failed: Readiness says no".to_string()
                );
                3
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn startup_gates_liveness_and_readiness() {
        let prober = Scripted::new(&[
            (Kind::Startup, &[false, false, true]),
            (Kind::Liveness, &[]),
            (Kind::Readiness, &[]),
        ]);
        let probes = Probes {
            startup: Some(spec(Kind::Startup, timing(0, 1, 1, 10))),
            liveness: Some(spec(Kind::Liveness, timing(0, 10, 1, 1))),
            readiness: Some(spec(Kind::Readiness, timing(0, 10, 1, 1))),
        };
        let mut l = start_loop(probes, prober.clone());
        assert_eq!(l.next().await, Some((Change::Started { ready: false }, 2)));
        // Readiness runs as soon as the container started.
        assert_eq!(l.next().await, Some((Change::Ready(true), 2)));
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert_eq!(prober.calls(Kind::Startup), [0, 1, 2]);
        assert_eq!(prober.calls(Kind::Liveness), [2, 12]);
        assert_eq!(prober.calls(Kind::Readiness), [2, 12]);
        l.cancel.cancel();
        assert!(l.task.await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn startup_without_readiness_makes_the_container_ready() {
        let prober = Scripted::new(&[]);
        let probes = Probes {
            startup: Some(spec(Kind::Startup, timing(3, 1, 1, 1))),
            ..Default::default()
        };
        let mut l = start_loop(probes, prober);
        assert_eq!(l.next().await, Some((Change::Started { ready: true }, 3)));
        // Nothing else to probe.
        assert_eq!(l.next().await, None);
        assert!(l.task.await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn startup_failure_kills_and_liveness_never_runs() {
        let prober = Scripted::new(&[(Kind::Startup, &[false; 10])]);
        let probes = Probes {
            startup: Some(spec(Kind::Startup, timing(0, 2, 1, 3))),
            liveness: Some(spec(Kind::Liveness, timing(0, 1, 1, 1))),
            ..Default::default()
        };
        let mut l = start_loop(probes, prober.clone());
        assert_eq!(l.next().await, Some((Change::Failed(Kind::Startup), 4)));
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(prober.calls(Kind::Startup), [0, 2, 4]);
        assert!(prober.calls(Kind::Liveness).is_empty());
        l.cancel.cancel();
        assert!(l.task.await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn probing_stops_when_cancelled_or_the_worker_is_gone() {
        let prober = Scripted::new(&[]);
        let probes = Probes {
            readiness: Some(spec(Kind::Readiness, timing(0, 1, 1, 1))),
            ..Default::default()
        };
        let l = start_loop(probes.clone(), prober.clone());
        tokio::time::sleep(Duration::from_millis(3500)).await;
        l.cancel.cancel();
        assert!(l.task.await.is_ok());
        let probed = prober.calls(Kind::Readiness).len();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(prober.calls(Kind::Readiness).len(), probed);

        // A dropped receiver ends the loop at its next update.
        let l = start_loop(probes, Scripted::new(&[]));
        drop(l.updates);
        assert!(l.task.await.is_ok());
    }

    // ---- the real prober, with real guests -------------------------------

    /// By argv[1]: `check` exits 1 (printing why) if the file `unhealthy`
    /// exists in the first preopened directory, else 0; `fail MSG` prints
    /// MSG to stderr and exits 2; `trap` traps; anything else (or no
    /// argument) runs forever.
    const HEALTH: &str = r#"
    (module
      (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (data (i32.const 2000) "unhealthy")
      (data (i32.const 2100) "unhealthy file present\n")
      (func $strlen (param $p i32) (result i32) (local $n i32)
        (block $done (loop $l
          (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
          (local.set $n (i32.add (local.get $n) (i32.const 1)))
          (br $l)))
        (local.get $n))
      (func $print (param $fd i32) (param $p i32) (param $len i32)
        (i32.store (i32.const 16) (local.get $p))
        (i32.store (i32.const 20) (local.get $len))
        (drop (call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24))))
      (func (export "_start") (local $cmd i32)
        ;; argc at 0, argv pointers at 100, strings at 1000
        (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
        (drop (call $args_get (i32.const 100) (i32.const 1000)))
        (if (i32.lt_u (i32.load (i32.const 0)) (i32.const 2))
          (then (loop $forever (br $forever))))
        (local.set $cmd (i32.load8_u (i32.load (i32.const 104))))
        ;; 'c': check
        (if (i32.eq (local.get $cmd) (i32.const 99))
          (then
            (if (i32.eqz (call $path_open (i32.const 3) (i32.const 0) (i32.const 2000) (i32.const 9)
                    (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 40)))
              (then
                (call $print (i32.const 1) (i32.const 2100) (i32.const 23))
                (call $exit (i32.const 1))))
            (return)))
        ;; 'f': fail MSG
        (if (i32.eq (local.get $cmd) (i32.const 102))
          (then
            (call $print (i32.const 2) (i32.load (i32.const 108)) (call $strlen (i32.load (i32.const 108))))
            (call $exit (i32.const 2))))
        ;; 't': trap
        (if (i32.eq (local.get $cmd) (i32.const 116)) (then unreachable))
        (loop $serve (br $serve))))
    "#;

    struct Guest {
        dir: tempfile::TempDir,
        sandbox: Arc<crate::sandbox::WasmtimeSandbox>,
        digest: String,
        path: PathBuf,
    }

    async fn guest() -> anyhow::Result<Guest> {
        use sha2::Digest;
        let dir = tempfile::tempdir()?;
        let sandbox = crate::sandbox::WasmtimeSandbox::new(&crate::sandbox::SandboxConfig {
            max_instances: 16,
            pooling: false,
            ..Default::default()
        })?;
        let bytes = wat::parse_str(HEALTH)?;
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
        let path = dir.path().join("health.wasm");
        tokio::fs::write(&path, &bytes).await?;
        sandbox.prepare(&digest, &path).await?;
        Ok(Guest {
            dir,
            sandbox: Arc::new(sandbox),
            digest,
            path,
        })
    }

    impl Guest {
        /// A prober as the worker would make it, for a container with
        /// `preopens` and `ports`, probing against 127.0.0.1.
        async fn prober(
            &self,
            preopens: Vec<Preopen>,
            ports: Vec<ContainerPort>,
        ) -> anyhow::Result<ContainerProber> {
            let log = ContainerLog::create(&self.dir.path().join("main.log"), 1024).await?;
            let run = ContainerRun {
                id: "wasm://u-c-0".into(),
                digest: self.digest.clone(),
                module_path: self.path.clone(),
                argv: vec!["health".into()],
                env: vec![("WHY".into(), "because".into())],
                memory_limit: 16 << 20,
                cpu_limit_millis: None,
                preopens,
                stdout: log.stdout(),
                stderr: log.stderr(),
                stop: CancellationToken::new(),
                usage: Arc::default(),
            };
            let container = Container {
                name: "c".into(),
                ports: Some(ports),
                ..Default::default()
            };
            Ok(ContainerProber::new(
                self.sandbox.clone(),
                &run,
                &container,
                "127.0.0.1",
                self.dir.path().join(".probes"),
            ))
        }
    }

    fn exec(command: &[&str]) -> Handler {
        Handler::Exec {
            command: command.iter().map(|s| s.to_string()).collect(),
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn exec_probe_runs_the_module_with_the_probe_argv() -> anyhow::Result<()> {
        let g = guest().await?;
        let volume = g.dir.path().join("data");
        tokio::fs::create_dir_all(&volume).await?;
        let prober = g
            .prober(
                vec![Preopen {
                    host: volume.clone(),
                    guest: "/data".into(),
                    read_only: false,
                }],
                Vec::new(),
            )
            .await?;
        let probe = |h: Handler| {
            let prober = &prober;
            async move { prober.probe(Kind::Liveness, &h, SECOND).await }
        };
        assert_eq!(probe(exec(&["health", "check"])).await, Outcome::Success);
        // The probe sees the container's volume.
        tokio::fs::write(volume.join("unhealthy"), b"").await?;
        assert_eq!(
            probe(exec(&["health", "check"])).await,
            Outcome::Failure("unhealthy file present".into())
        );
        // stderr is captured; $(VAR) expands from the container's env.
        assert_eq!(
            probe(exec(&["health", "fail", "$(WHY)"])).await,
            Outcome::Failure("because".into())
        );
        let Outcome::Failure(trap) = probe(exec(&["health", "trap"])).await else {
            anyhow::bail!("a trap must fail the probe");
        };
        assert!(
            trap.starts_with("command \"health trap\" trapped: ") && trap.contains("unreachable"),
            "{trap}"
        );
        // A command that does not finish is interrupted at the timeout.
        assert_eq!(
            probe(exec(&["health", "serve"])).await,
            Outcome::Failure("command \"health serve\" timed out".into())
        );
        assert_eq!(
            probe(exec(&[])).await,
            Outcome::Failure("exec probe has no command".into())
        );
        Ok(())
    }

    #[tokio::test]
    async fn tcp_and_http_probes_go_to_the_pod_ip() -> anyhow::Result<()> {
        use axum::http::{HeaderMap, StatusCode, header};
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let app = axum::Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route("/bad", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
            .route(
                "/elsewhere",
                get(|| async {
                    (
                        StatusCode::FOUND,
                        [(header::LOCATION, "http://wasmkube.invalid/")],
                    )
                }),
            )
            .route(
                "/here",
                get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/bad")]) }),
            )
            .route(
                "/headers",
                get(|headers: HeaderMap| async move {
                    let ua = headers
                        .get(header::USER_AGENT)
                        .and_then(|v| v.to_str().ok());
                    let custom = headers.get("x-probe").and_then(|v| v.to_str().ok());
                    if ua == Some("kube-probe/1.33") && custom == Some("yes") {
                        StatusCode::OK
                    } else {
                        StatusCode::BAD_REQUEST
                    }
                }),
            );
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let g = guest().await?;
        let ports = vec![ContainerPort {
            name: Some("web".into()),
            container_port: i32::from(port),
            ..Default::default()
        }];
        let prober = g.prober(Vec::new(), ports).await?;
        let get = |path: &str, headers: &[(&str, &str)]| Handler::HttpGet {
            scheme: "http".into(),
            host: None,
            port: IntOrString::String("web".into()),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let probe = |h: Handler| {
            let prober = &prober;
            async move { prober.probe(Kind::Readiness, &h, SECOND).await }
        };
        assert_eq!(probe(get("/ok", &[])).await, Outcome::Success);
        assert_eq!(
            probe(get("/bad", &[])).await,
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        // A redirect to another host ends the probe as a success; one on
        // the same host is followed.
        assert_eq!(probe(get("/elsewhere", &[])).await, Outcome::Success);
        assert_eq!(
            probe(get("/here", &[])).await,
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        assert_eq!(
            probe(get("/headers", &[("X-Probe", "yes")])).await,
            Outcome::Success
        );
        let tcp = |port: IntOrString| Handler::TcpSocket { host: None, port };
        assert_eq!(
            probe(tcp(IntOrString::String("web".into()))).await,
            Outcome::Success
        );
        assert_eq!(
            probe(tcp(IntOrString::String("db".into()))).await,
            Outcome::Failure("couldn't find port: db in container".into())
        );
        server.abort();
        let _ = server.await;
        // Nothing listens any more.
        let Outcome::Failure(refused) = probe(tcp(IntOrString::Int(i32::from(port)))).await else {
            anyhow::bail!("a closed port must fail the probe");
        };
        assert!(
            refused.starts_with(&format!("dial tcp 127.0.0.1:{port}: ")),
            "{refused}"
        );
        let Outcome::Failure(refused) = probe(get("/ok", &[])).await else {
            anyhow::bail!("a closed port must fail the probe");
        };
        assert!(
            refused.starts_with(&format!("Get \"http://127.0.0.1:{port}/ok\": ")),
            "{refused}"
        );
        let Outcome::Failure(grpc) = probe(Handler::Grpc).await else {
            anyhow::bail!("gRPC probes must fail");
        };
        assert!(grpc.contains("not supported"), "{grpc}");
        Ok(())
    }

    // ---- probes in a pod worker ------------------------------------------

    use crate::module_cache::{LocalModule, ModuleSource, PullError};
    use crate::pod_worker::{PodApi, WorkerContext, run_pod};

    struct OneModule {
        digest: String,
        path: PathBuf,
    }

    #[async_trait::async_trait]
    impl ModuleSource for OneModule {
        async fn pull(
            &self,
            _image: &str,
            _keyring: &crate::oci::Keyring,
        ) -> Result<LocalModule, PullError> {
            Ok(LocalModule {
                digest: self.digest.clone(),
                path: self.path.clone(),
                size: 1,
                cached: true,
                ..LocalModule::default()
            })
        }
    }

    #[derive(Default)]
    struct Statuses {
        all: Mutex<Vec<PodStatus>>,
        changed: tokio::sync::Notify,
    }

    #[async_trait::async_trait]
    impl PodApi for Statuses {
        async fn patch_status(&self, _: &str, _: &str, status: &PodStatus) -> Result<(), String> {
            self.all
                .lock()
                .map_err(|e| e.to_string())?
                .push(status.clone());
            self.changed.notify_waiters();
            Ok(())
        }
        async fn delete(&self, _: &str, _: &str, _: &str) -> Result<(), String> {
            Ok(())
        }
        async fn config_map(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<BTreeMap<String, String>>, String> {
            Ok(None)
        }
        async fn secret(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
            Ok(None)
        }
    }

    struct PodRun {
        guest: Guest,
        api: Arc<Statuses>,
        events: Arc<Events>,
        volume: PathBuf,
        stop: CancellationToken,
        task: JoinHandle<()>,
    }

    impl PodRun {
        /// Waits (bounded) for a reported status matching `pred`.
        async fn wait(&self, pred: impl Fn(&PodStatus) -> bool) -> anyhow::Result<PodStatus> {
            Ok(self.wait_from(0, pred).await?.1)
        }

        /// Waits (bounded) for a status matching `pred` among those reported
        /// from the `from`-th on; returns its position too.
        async fn wait_from(
            &self,
            from: usize,
            pred: impl Fn(&PodStatus) -> bool,
        ) -> anyhow::Result<(usize, PodStatus)> {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let notified = self.api.changed.notified();
                let found = self
                    .api
                    .all
                    .lock()
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .iter()
                    .enumerate()
                    .skip(from)
                    .find(|(_, s)| pred(s))
                    .map(|(i, s)| (i, s.clone()));
                if let Some(found) = found {
                    return Ok(found);
                }
                tokio::time::timeout_at(deadline, notified).await?;
            }
        }

        fn events(&self) -> Vec<(String, String)> {
            self.events.list()
        }
    }

    /// Runs a pod with one container `health serve` mounting an emptyDir
    /// at /data, with the given probes.
    async fn run_health_pod(
        liveness: Option<Probe>,
        readiness: Option<Probe>,
    ) -> anyhow::Result<PodRun> {
        let guest = guest().await?;
        let api = Arc::new(Statuses::default());
        let events = Arc::new(Events::default());
        let pods_dir = guest.dir.path().join("pods");
        let ctx = Arc::new(WorkerContext {
            node_name: "n1".into(),
            node_ip: "127.0.0.1".into(),
            pods_dir: pods_dir.clone(),
            sandbox: guest.sandbox.clone(),
            modules: Arc::new(OneModule {
                digest: guest.digest.clone(),
                path: guest.path.clone(),
            }),
            api: api.clone(),
            events: events.clone(),
            logs: Arc::new(crate::logs::LogRegistry::default()),
            volumes: Arc::new(crate::volumes::VolumeManager::new(
                crate::volumes::VolumeConfig {
                    node_name: "n1".into(),
                    allowed_host_paths: Vec::new(),
                    sync_interval: crate::volumes::DEFAULT_SYNC_INTERVAL,
                    memory_root: Some(guest.dir.path().join("shm")),
                },
            )),
            stats: Arc::new(crate::stats::StatsRegistry::new(
                "n1",
                crate::stats::StatsOptions::default(),
            )),
            http: crate::http::HttpPods::new(),
            max_log_bytes: crate::logs::DEFAULT_MAX_LOG_BYTES,
            restart_backoff: crate::status::RestartBackoff::default(),
        });
        let mut pod = Pod {
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                restart_policy: Some("Always".into()),
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("health:v1".into()),
                    command: Some(vec!["health".into(), "serve".into()]),
                    volume_mounts: Some(vec![k8s_openapi::api::core::v1::VolumeMount {
                        name: "data".into(),
                        mount_path: "/data".into(),
                        ..Default::default()
                    }]),
                    liveness_probe: liveness,
                    readiness_probe: readiness,
                    ..Default::default()
                }],
                volumes: Some(vec![k8s_openapi::api::core::v1::Volume {
                    name: "data".into(),
                    empty_dir: Some(Default::default()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        pod.metadata.name = Some("p".into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.uid = Some("u1".into());
        let (tx, rx) = watch::channel(Arc::new(pod));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                // The sender lives as long as the worker.
                let _tx = tx;
                run_pod(ctx, rx, CancellationToken::new(), stop).await;
            }
        });
        Ok(PodRun {
            guest,
            api,
            events,
            volume: pods_dir.join("u1").join("volumes").join("data"),
            stop,
            task,
        })
    }

    fn first_container(s: &PodStatus) -> k8s_openapi::api::core::v1::ContainerStatus {
        s.container_statuses
            .as_ref()
            .and_then(|c| c.first().cloned())
            .unwrap_or_default()
    }

    fn running(s: &PodStatus) -> bool {
        first_container(s)
            .state
            .is_some_and(|st| st.running.is_some())
    }

    fn condition(s: &PodStatus, type_: &str) -> Option<String> {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .map(|c| c.status.clone())
    }

    fn every_second(mut p: Probe) -> Probe {
        p.period_seconds = Some(1);
        p.failure_threshold = Some(1);
        p
    }

    #[tokio::test]
    async fn failing_liveness_probe_restarts_the_container() -> anyhow::Result<()> {
        let pod =
            run_health_pod(Some(every_second(exec_probe(&["health", "check"]))), None).await?;
        let s = pod.wait(running).await?;
        assert_eq!(first_container(&s).restart_count, 0);
        // No readiness probe: ready while running.
        let s = pod.wait(|s| first_container(s).ready).await?;
        assert_eq!(condition(&s, "Ready").as_deref(), Some("True"));
        assert_eq!(first_container(&s).started, Some(true));

        // The check fails once the file appears in the pod's volume.
        tokio::fs::write(pod.volume.join("unhealthy"), b"").await?;
        let s = pod.wait(|s| first_container(s).restart_count >= 1).await?;
        let last = first_container(&s)
            .last_state
            .and_then(|st| st.terminated)
            .ok_or_else(|| anyhow::anyhow!("no lastState.terminated"))?;
        // Killed, not crashed: no trap message.
        assert_eq!(last.exit_code, 137);
        assert_eq!(last.reason.as_deref(), Some("Error"));
        assert_eq!(last.message, None);
        let events = pod.events();
        let unhealthy = events
            .iter()
            .position(|e| {
                e == &(
                    "Unhealthy".to_string(),
                    "Liveness probe failed: unhealthy file present".to_string(),
                )
            })
            .ok_or_else(|| anyhow::anyhow!("no Unhealthy event: {events:?}"))?;
        let killing = events
            .iter()
            .position(|e| {
                e == &(
                    "Killing".to_string(),
                    "Container c failed liveness probe, will be restarted".to_string(),
                )
            })
            .ok_or_else(|| anyhow::anyhow!("no Killing event: {events:?}"))?;
        assert!(unhealthy < killing, "{events:?}");
        assert!(
            events[killing..].iter().any(|(r, _)| r == "Started"),
            "the container was started again: {events:?}"
        );
        pod.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), pod.task).await??;
        drop(pod.guest);
        Ok(())
    }

    #[tokio::test]
    async fn readiness_probe_flips_ready() -> anyhow::Result<()> {
        let pod =
            run_health_pod(None, Some(every_second(exec_probe(&["health", "check"])))).await?;
        // Running, but not ready before the first probe passed.
        let (i, s) = pod.wait_from(0, running).await?;
        assert!(!first_container(&s).ready);
        assert_eq!(condition(&s, "Ready").as_deref(), Some("False"));
        assert_eq!(condition(&s, "ContainersReady").as_deref(), Some("False"));

        let ready = |s: &PodStatus| {
            first_container(s).ready
                && condition(s, "Ready").as_deref() == Some("True")
                && condition(s, "ContainersReady").as_deref() == Some("True")
        };
        let (i, _) = pod.wait_from(i, ready).await?;

        tokio::fs::write(pod.volume.join("unhealthy"), b"").await?;
        let unready = |s: &PodStatus| {
            running(s)
                && !first_container(s).ready
                && condition(s, "Ready").as_deref() == Some("False")
        };
        let (i, s) = pod.wait_from(i, unready).await?;
        // Not ready is not dead: the container keeps running.
        assert_eq!(first_container(&s).restart_count, 0);
        assert!(
            pod.events().contains(&(
                "Unhealthy".to_string(),
                "Readiness probe failed: unhealthy file present".to_string()
            )),
            "{:?}",
            pod.events()
        );
        tokio::fs::remove_file(pod.volume.join("unhealthy")).await?;
        pod.wait_from(i, ready).await?;
        assert!(!pod.events().iter().any(|(r, _)| r == "Killing"));
        pod.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), pod.task).await??;
        Ok(())
    }
}
