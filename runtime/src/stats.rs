//! Resource usage of the node, its pods and their containers, as the
//! kubelet reports it: the Summary API (`/stats/summary`, a subset of
//! Kubernetes' `stats/v1alpha1` shape) and the Prometheus resource metrics
//! (`/metrics/resource`) that metrics-server and `kubectl top` build on.
//!
//! The sandbox keeps one [`Usage`] per container run current (cumulative
//! guest CPU time, current linear memory plus tables). Pod workers register
//! each run here while it lives ([`StatsRegistry::add_pod`],
//! [`PodRegistration::start_container`]); both registrations are guards, so
//! whatever ends a worker or a run also removes its figures.
//!
//! A CPU *rate* (`usageNanoCores`) needs two readings of a cumulative
//! counter. Like cAdvisor, a sampler ([`run_sampler`]) records every
//! counter at a fixed interval into a short window; a request divides the
//! growth since the window's oldest sample by the time since it, so the rate
//! covers roughly the last [`StatsOptions::window`]. Each tick costs one
//! read of `/proc/stat` and one atomic load per running container, and each
//! window holds a bounded number of samples.
//!
//! Node figures come from the host, as the real kubelet's root cgroup does:
//! CPU is the busy time of all CPUs in `/proc/stat` (everything but `idle`
//! and `iowait`), memory follows `/proc/meminfo` with the working set as
//! `MemTotal − MemAvailable`, usage as `MemTotal − MemFree` (it includes the
//! page cache) and available as `MemAvailable`. Off Linux the node carries no
//! CPU or memory figures.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::sandbox::Usage;

/// `/proc/stat` counts in `USER_HZ` ticks, which Linux fixes at 100 per
/// second for user space on every architecture it exports it to.
const USER_HZ: u64 = 100;
/// Most samples one window keeps, whatever the interval and window.
const MAX_SAMPLES: usize = 128;

/// How often counters are sampled and how far back a rate looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsOptions {
    /// Time between two samples of every counter.
    pub interval: Duration,
    /// How far back `usageNanoCores` looks. A rate needs at least
    /// `interval` of history, so a container younger than that has none yet.
    pub window: Duration,
}

impl Default for StatsOptions {
    fn default() -> Self {
        StatsOptions {
            interval: Duration::from_secs(1),
            window: Duration::from_secs(10),
        }
    }
}

/// A pod as the Summary API names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodReference {
    /// The pod's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its uid.
    pub uid: String,
}

/// One reading of a cumulative counter (nanoseconds of CPU time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    at: Instant,
    value: u64,
}

/// The recent samples of one cumulative counter. The front is the baseline
/// of the rate: the newest sample at least `window` old, or the oldest one
/// while the counter is younger than that.
#[derive(Debug, Clone)]
struct RateWindow {
    samples: VecDeque<Sample>,
}

impl RateWindow {
    fn new(first: Sample) -> RateWindow {
        RateWindow {
            samples: VecDeque::from([first]),
        }
    }

    fn push(&mut self, sample: Sample, window: Duration) {
        self.samples.push_back(sample);
        // Drop the baseline once the next sample is old enough to take its
        // place, so the window spans `window` (plus at most one interval).
        while self.samples.len() > 1
            && self
                .samples
                .get(1)
                .is_some_and(|next| sample.at.saturating_duration_since(next.at) >= window)
        {
            self.samples.pop_front();
        }
        while self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
        }
    }

    /// The average rate from the baseline to `now`, in nanocores (nanoseconds
    /// of CPU per second), or `None` with less than `min_span` of history. A
    /// counter that went backwards reads as idle.
    fn rate(&self, now: Sample, min_span: Duration) -> Option<u64> {
        let base = self.samples.front()?;
        let span = now.at.checked_duration_since(base.at)?;
        if span.is_zero() || span < min_span {
            return None;
        }
        let used = u128::from(now.value.saturating_sub(base.value));
        let rate = used * 1_000_000_000 / span.as_nanos();
        Some(u64::try_from(rate).unwrap_or(u64::MAX))
    }
}

/// A container run whose usage is reported.
struct ContainerEntry {
    id: u64,
    usage: Arc<Usage>,
    start_time: jiff::Timestamp,
    memory_limit: Option<u64>,
    cpu: RateWindow,
}

/// A pod whose usage is reported.
struct PodEntry {
    id: u64,
    start_time: jiff::Timestamp,
    containers: BTreeMap<String, ContainerEntry>,
    /// CPU time of the pod's runs that have ended, so the pod's counter
    /// keeps growing across container restarts like a pod cgroup's does.
    retired_cpu: u64,
    cpu: RateWindow,
}

impl PodEntry {
    fn cpu_nanos(&self) -> u64 {
        self.containers.values().fold(self.retired_cpu, |sum, c| {
            sum.saturating_add(load_cpu(&c.usage))
        })
    }
}

fn load_cpu(usage: &Usage) -> u64 {
    usage.cpu_nanos.load(Ordering::Relaxed)
}

fn load_memory(usage: &Usage) -> u64 {
    usage.memory_bytes.load(Ordering::Relaxed)
}

#[derive(Default)]
struct Inner {
    pods: BTreeMap<PodReference, PodEntry>,
    node_cpu: Option<RateWindow>,
    next_id: u64,
}

impl Inner {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// The usage figures of one node: what pod workers register, what the
/// sampler records and what the stats endpoints read.
pub struct StatsRegistry {
    node_name: String,
    options: StatsOptions,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for StatsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsRegistry")
            .field("node_name", &self.node_name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl StatsRegistry {
    /// An empty registry for the node `node_name`.
    pub fn new(node_name: impl Into<String>, options: StatsOptions) -> StatsRegistry {
        StatsRegistry {
            node_name: node_name.into(),
            options,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The sampling settings.
    pub fn options(&self) -> StatsOptions {
        self.options
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The lock guards plain bookkeeping that is never left half-done.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reports `pod` until the returned registration is dropped.
    pub fn add_pod(
        self: &Arc<Self>,
        pod: PodReference,
        start_time: jiff::Timestamp,
    ) -> PodRegistration {
        let mut inner = self.lock();
        let id = inner.next_id();
        inner.pods.insert(
            pod.clone(),
            PodEntry {
                id,
                start_time,
                containers: BTreeMap::new(),
                retired_cpu: 0,
                cpu: RateWindow::new(Sample {
                    at: Instant::now(),
                    value: 0,
                }),
            },
        );
        PodRegistration {
            registry: self.clone(),
            pod,
            id,
        }
    }

    /// Records one sample of every counter: the node's CPU time (`None`
    /// when the host does not tell) and each pod's and container's.
    pub fn sample(&self, node_cpu_nanos: Option<u64>, at: Instant) {
        let window = self.options.window;
        let mut inner = self.lock();
        if let Some(value) = node_cpu_nanos {
            let sample = Sample { at, value };
            match &mut inner.node_cpu {
                Some(w) => w.push(sample, window),
                None => inner.node_cpu = Some(RateWindow::new(sample)),
            }
        }
        for pod in inner.pods.values_mut() {
            for c in pod.containers.values_mut() {
                let value = load_cpu(&c.usage);
                c.cpu.push(Sample { at, value }, window);
            }
            let value = pod.cpu_nanos();
            pod.cpu.push(Sample { at, value }, window);
        }
    }

    /// The Summary API document as of `at` (monotonic) / `now` (wall
    /// clock), with `host` read at that moment.
    pub fn summary(&self, host: &HostUsage, at: Instant, now: jiff::Timestamp) -> Summary {
        let time = timestamp(now);
        let min_span = self.options.interval;
        let inner = self.lock();
        let node_cpu = host.cpu_nanos.map(|value| CpuStats {
            time: time.clone(),
            usage_nano_cores: inner
                .node_cpu
                .as_ref()
                .and_then(|w| w.rate(Sample { at, value }, min_span)),
            usage_core_nano_seconds: Some(value),
        });
        let node_memory = host.memory.map(|m| {
            let working_set = m.total.saturating_sub(m.available);
            MemoryStats {
                time: time.clone(),
                available_bytes: Some(m.available),
                usage_bytes: Some(m.total.saturating_sub(m.free)),
                working_set_bytes: Some(working_set),
            }
        });
        let pods = inner
            .pods
            .iter()
            .map(|(pod_ref, pod)| {
                let containers: Vec<ContainerStats> = pod
                    .containers
                    .iter()
                    .map(|(name, c)| {
                        let cpu = load_cpu(&c.usage);
                        let memory = load_memory(&c.usage);
                        ContainerStats {
                            name: name.clone(),
                            start_time: timestamp(c.start_time),
                            cpu: Some(CpuStats {
                                time: time.clone(),
                                usage_nano_cores: c.cpu.rate(Sample { at, value: cpu }, min_span),
                                usage_core_nano_seconds: Some(cpu),
                            }),
                            memory: Some(MemoryStats {
                                time: time.clone(),
                                available_bytes: c.memory_limit.map(|l| l.saturating_sub(memory)),
                                usage_bytes: Some(memory),
                                working_set_bytes: Some(memory),
                            }),
                        }
                    })
                    .collect();
                let cpu = pod.cpu_nanos();
                let memory = pod
                    .containers
                    .values()
                    .fold(0u64, |sum, c| sum.saturating_add(load_memory(&c.usage)));
                PodStats {
                    pod_ref: pod_ref.clone(),
                    start_time: timestamp(pod.start_time),
                    containers,
                    cpu: Some(CpuStats {
                        time: time.clone(),
                        usage_nano_cores: pod.cpu.rate(Sample { at, value: cpu }, min_span),
                        usage_core_nano_seconds: Some(cpu),
                    }),
                    memory: Some(MemoryStats {
                        time: time.clone(),
                        available_bytes: None,
                        usage_bytes: Some(memory),
                        working_set_bytes: Some(memory),
                    }),
                }
            })
            .collect();
        Summary {
            node: NodeStats {
                node_name: self.node_name.clone(),
                start_time: host.boot_time.map(timestamp),
                cpu: node_cpu,
                memory: node_memory,
            },
            pods,
        }
    }
}

/// A pod's place in the [`StatsRegistry`]; dropping it removes the pod.
pub struct PodRegistration {
    registry: Arc<StatsRegistry>,
    pod: PodReference,
    id: u64,
}

impl std::fmt::Debug for PodRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodRegistration")
            .field("pod", &self.pod)
            .finish_non_exhaustive()
    }
}

impl PodRegistration {
    /// Reports a new run of container `name` (replacing an earlier run of
    /// it) until the returned registration is dropped. `memory_limit` is the
    /// run's memory cap, for `availableBytes`.
    pub fn start_container(&self, name: &str, memory_limit: Option<u64>) -> ContainerRegistration {
        let usage = Arc::new(Usage::default());
        let mut inner = self.registry.lock();
        let id = inner.next_id();
        if let Some(pod) = inner.pods.get_mut(&self.pod).filter(|p| p.id == self.id) {
            let entry = ContainerEntry {
                id,
                usage: usage.clone(),
                start_time: jiff::Timestamp::now(),
                memory_limit,
                cpu: RateWindow::new(Sample {
                    at: Instant::now(),
                    value: 0,
                }),
            };
            if let Some(old) = pod.containers.insert(name.to_string(), entry) {
                pod.retired_cpu = pod.retired_cpu.saturating_add(load_cpu(&old.usage));
            }
        }
        ContainerRegistration {
            registry: self.registry.clone(),
            pod: self.pod.clone(),
            name: name.to_string(),
            id,
            usage,
        }
    }
}

impl Drop for PodRegistration {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if inner.pods.get(&self.pod).is_some_and(|p| p.id == self.id) {
            inner.pods.remove(&self.pod);
        }
    }
}

/// A container run's place in the [`StatsRegistry`]; dropping it retires
/// the run (its CPU time stays in the pod's total).
pub struct ContainerRegistration {
    registry: Arc<StatsRegistry>,
    pod: PodReference,
    name: String,
    id: u64,
    usage: Arc<Usage>,
}

impl std::fmt::Debug for ContainerRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerRegistration")
            .field("pod", &self.pod)
            .field("container", &self.name)
            .finish_non_exhaustive()
    }
}

impl ContainerRegistration {
    /// The record the sandbox keeps current for this run.
    pub fn usage(&self) -> Arc<Usage> {
        self.usage.clone()
    }
}

impl Drop for ContainerRegistration {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        let Some(pod) = inner.pods.get_mut(&self.pod) else {
            return;
        };
        if pod
            .containers
            .get(&self.name)
            .is_some_and(|c| c.id == self.id)
        {
            pod.containers.remove(&self.name);
            pod.retired_cpu = pod.retired_cpu.saturating_add(load_cpu(&self.usage));
        }
    }
}

/// Samples every counter each `interval` until `shutdown`.
pub async fn run_sampler(stats: Arc<StatsRegistry>, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(stats.options().interval.max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let cpu = read_host_cpu().await.map(|c| c.busy_nanos);
        stats.sample(cpu, Instant::now());
    }
}

/// What the host reports about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostUsage {
    /// CPU time all CPUs spent busy since boot, in nanoseconds.
    pub cpu_nanos: Option<u64>,
    /// When the host booted.
    pub boot_time: Option<jiff::Timestamp>,
    /// `/proc/meminfo`.
    pub memory: Option<HostMemory>,
}

/// The `/proc/meminfo` figures the node's memory stats derive from, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostMemory {
    /// `MemTotal`.
    pub total: u64,
    /// `MemFree`.
    pub free: u64,
    /// `MemAvailable`.
    pub available: u64,
}

/// The CPU figures of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCpu {
    /// Busy time of all CPUs since boot, in nanoseconds.
    pub busy_nanos: u64,
    /// `btime`: boot time in seconds since the Unix epoch.
    pub boot_time: Option<i64>,
}

/// Parses `/proc/stat`: the aggregate `cpu` line (user nice system idle
/// iowait irq softirq steal …, in `USER_HZ` ticks) and `btime`. Guest time
/// is already part of user time, so it is not added again.
pub fn parse_proc_stat(text: &str) -> Option<HostCpu> {
    let mut busy = None;
    let mut boot_time = None;
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        match fields.next() {
            Some("cpu") => {
                let ticks: Vec<u64> = fields.map_while(|f| f.parse().ok()).collect();
                if ticks.len() < 4 {
                    return None;
                }
                // user, nice, system, irq, softirq, steal; not idle (3) or iowait (4).
                let sum = ticks
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| matches!(i, 0..=2 | 5..=7))
                    .fold(0u64, |s, (_, t)| s.saturating_add(*t));
                busy = Some(sum.saturating_mul(1_000_000_000 / USER_HZ));
            }
            Some("btime") => boot_time = fields.next().and_then(|f| f.parse().ok()),
            _ => {}
        }
    }
    Some(HostCpu {
        busy_nanos: busy?,
        boot_time,
    })
}

/// Parses `/proc/meminfo` (values in kB).
pub fn parse_meminfo(text: &str) -> Option<HostMemory> {
    let mut total = None;
    let mut free = None;
    let mut available = None;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => &mut total,
            "MemFree" => &mut free,
            "MemAvailable" => &mut available,
            _ => continue,
        };
        *slot = rest
            .split_ascii_whitespace()
            .next()
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb.saturating_mul(1024));
    }
    let (total, free) = (total?, free?);
    Some(HostMemory {
        total,
        free,
        // Kernels before 3.14 lack MemAvailable; free memory is the
        // conservative stand-in.
        available: available.unwrap_or(free),
    })
}

async fn read_host_cpu() -> Option<HostCpu> {
    let text = tokio::fs::read_to_string("/proc/stat").await.ok()?;
    parse_proc_stat(&text)
}

/// Reads the host's CPU and memory figures now.
pub async fn read_host() -> HostUsage {
    let cpu = read_host_cpu().await;
    let memory = match tokio::fs::read_to_string("/proc/meminfo").await {
        Ok(text) => parse_meminfo(&text),
        Err(_) => None,
    };
    HostUsage {
        cpu_nanos: cpu.map(|c| c.busy_nanos),
        boot_time: cpu
            .and_then(|c| c.boot_time)
            .and_then(|s| jiff::Timestamp::from_second(s).ok()),
        memory,
    }
}

/// Kubernetes' timestamp format (RFC 3339, whole seconds, UTC).
fn timestamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `GET /stats/summary`: the Summary API, the subset metrics consumers read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The node.
    pub node: NodeStats,
    /// Every pod the kubelet runs.
    pub pods: Vec<PodStats>,
}

/// The node's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// The Node's name.
    pub node_name: String,
    /// When the host booted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// Host CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Host memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

/// One pod's figures: the sums over its containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    /// Which pod.
    pub pod_ref: PodReference,
    /// When the kubelet started working on it.
    pub start_time: String,
    /// The containers running now.
    pub containers: Vec<ContainerStats>,
    /// CPU of every run of the pod's containers since the pod started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory of the running containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

/// One running container's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    /// The container's name.
    pub name: String,
    /// When this run started.
    pub start_time: String,
    /// CPU of this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory of this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

/// CPU figures at `time`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// When they were read.
    pub time: String,
    /// Average use over the recent window, in billionths of a core; absent
    /// until there is enough history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    /// Cumulative CPU time, in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_core_nano_seconds: Option<u64>,
}

/// Memory figures at `time`, in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    /// When they were read.
    pub time: String,
    /// What is left before the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// Memory in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    /// Memory that cannot be reclaimed: what limits and `kubectl top` count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
}

/// `GET /metrics/resource`: the summary as the kubelet's Prometheus resource
/// metrics (text format 0.0.4), every point stamped `now_ms` (Unix ms).
pub fn resource_metrics(summary: &Summary, now_ms: i64) -> String {
    let mut out = String::new();
    let containers = || {
        summary.pods.iter().flat_map(|p| {
            p.containers.iter().map(move |c| {
                let labels = format!(
                    "container=\"{}\",namespace=\"{}\",pod=\"{}\"",
                    escape_label(&c.name),
                    escape_label(&p.pod_ref.namespace),
                    escape_label(&p.pod_ref.name)
                );
                (labels, c)
            })
        })
    };
    let pods = || {
        summary.pods.iter().map(|p| {
            let labels = format!(
                "namespace=\"{}\",pod=\"{}\"",
                escape_label(&p.pod_ref.namespace),
                escape_label(&p.pod_ref.name)
            );
            (labels, p)
        })
    };
    header(
        &mut out,
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the container in core-seconds",
        "counter",
    );
    for (labels, c) in containers() {
        if let Some(ns) = c.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds) {
            point(
                &mut out,
                "container_cpu_usage_seconds_total",
                &labels,
                &seconds(ns),
                now_ms,
            );
        }
    }
    header(
        &mut out,
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        "gauge",
    );
    for (labels, c) in containers() {
        if let Some(b) = c.memory.as_ref().and_then(|m| m.working_set_bytes) {
            point(
                &mut out,
                "container_memory_working_set_bytes",
                &labels,
                &b.to_string(),
                now_ms,
            );
        }
    }
    header(
        &mut out,
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds",
        "gauge",
    );
    for (labels, c) in containers() {
        if let Ok(t) = c.start_time.parse::<jiff::Timestamp>() {
            let _ = writeln!(
                out,
                "container_start_time_seconds{{{labels}}} {}",
                t.as_second()
            );
        }
    }
    header(
        &mut out,
        "node_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the node in core-seconds",
        "counter",
    );
    if let Some(ns) = summary
        .node
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds)
    {
        point(
            &mut out,
            "node_cpu_usage_seconds_total",
            "",
            &seconds(ns),
            now_ms,
        );
    }
    header(
        &mut out,
        "node_memory_working_set_bytes",
        "Current working set of the node in bytes",
        "gauge",
    );
    if let Some(b) = summary
        .node
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes)
    {
        point(
            &mut out,
            "node_memory_working_set_bytes",
            "",
            &b.to_string(),
            now_ms,
        );
    }
    header(
        &mut out,
        "pod_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the pod in core-seconds",
        "counter",
    );
    for (labels, p) in pods() {
        if let Some(ns) = p.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds) {
            point(
                &mut out,
                "pod_cpu_usage_seconds_total",
                &labels,
                &seconds(ns),
                now_ms,
            );
        }
    }
    header(
        &mut out,
        "pod_memory_working_set_bytes",
        "Current working set of the pod in bytes",
        "gauge",
    );
    for (labels, p) in pods() {
        if let Some(b) = p.memory.as_ref().and_then(|m| m.working_set_bytes) {
            point(
                &mut out,
                "pod_memory_working_set_bytes",
                &labels,
                &b.to_string(),
                now_ms,
            );
        }
    }
    header(
        &mut out,
        "resource_scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
    );
    let _ = writeln!(out, "resource_scrape_error 0");
    out
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} [STABLE] {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn point(out: &mut String, name: &str, labels: &str, value: &str, now_ms: i64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value} {now_ms}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value} {now_ms}");
    }
}

/// Nanoseconds as seconds, exactly (no float rounding of large counters).
fn seconds(nanos: u64) -> String {
    let whole = nanos / 1_000_000_000;
    let frac = nanos % 1_000_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:09}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Prometheus label value escaping: backslash, double quote, newline.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn rate_is_growth_over_the_window() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(Sample { at: t0, value: 0 });
        // Half a core: 500 ms of CPU per second.
        for s in 1..=30u64 {
            w.push(
                Sample {
                    at: at(t0, s * 1000),
                    value: s * 500_000_000,
                },
                Duration::from_secs(10),
            );
        }
        let now = Sample {
            at: at(t0, 30_500),
            value: 15_250_000_000,
        };
        assert_eq!(w.rate(now, Duration::from_secs(1)), Some(500_000_000));
        // The baseline is the newest sample at least 10 s before the last one.
        assert_eq!(w.samples.front().map(|s| s.at), Some(at(t0, 20_000)));
    }

    #[test]
    fn rate_follows_a_change_of_load_within_the_window() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(Sample { at: t0, value: 0 });
        let window = Duration::from_secs(10);
        let mut cpu = 0;
        // 20 s at a full core, then 20 s idle: the window forgets the busy part.
        for s in 1..=40u64 {
            if s <= 20 {
                cpu += 1_000_000_000;
            }
            w.push(
                Sample {
                    at: at(t0, s * 1000),
                    value: cpu,
                },
                window,
            );
        }
        let now = Sample {
            at: at(t0, 40_000),
            value: cpu,
        };
        assert_eq!(w.rate(now, Duration::from_secs(1)), Some(0));
    }

    #[test]
    fn window_holds_a_bounded_number_of_samples() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(Sample { at: t0, value: 0 });
        for ms in 1..=10_000u64 {
            w.push(
                Sample {
                    at: at(t0, ms),
                    value: ms,
                },
                Duration::from_secs(3600),
            );
        }
        assert_eq!(w.samples.len(), MAX_SAMPLES);
        let mut w = RateWindow::new(Sample { at: t0, value: 0 });
        for s in 1..=1000u64 {
            w.push(
                Sample {
                    at: at(t0, s * 1000),
                    value: s,
                },
                Duration::from_secs(10),
            );
        }
        // The window's samples plus the baseline.
        assert_eq!(w.samples.len(), 11);
    }

    #[test]
    fn no_rate_without_enough_history_and_none_negative() {
        let t0 = Instant::now();
        let w = RateWindow::new(Sample { at: t0, value: 0 });
        let soon = Sample {
            at: at(t0, 200),
            value: 100_000_000,
        };
        assert_eq!(w.rate(soon, Duration::from_secs(1)), None);
        assert_eq!(w.rate(Sample { at: t0, value: 5 }, Duration::ZERO), None);
        let w = RateWindow::new(Sample {
            at: t0,
            value: 9_000,
        });
        let back = Sample {
            at: at(t0, 2000),
            value: 10,
        };
        assert_eq!(w.rate(back, Duration::from_secs(1)), Some(0));
    }

    fn pod(name: &str) -> PodReference {
        PodReference {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
        }
    }

    fn host() -> HostUsage {
        HostUsage {
            cpu_nanos: Some(1_000_000_000_000),
            boot_time: None,
            memory: Some(HostMemory {
                total: 8 << 30,
                free: 1 << 30,
                available: 3 << 30,
            }),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn registry_reports_running_containers_and_their_pod() {
        let stats = Arc::new(StatsRegistry::new("n1", StatsOptions::default()));
        let reg = stats.add_pod(pod("web"), jiff::Timestamp::now());
        let app = reg.start_container("app", Some(64 << 20));
        let side = reg.start_container("side", None);
        app.usage().memory_bytes.store(2 << 20, Ordering::Relaxed);
        side.usage().memory_bytes.store(1 << 20, Ordering::Relaxed);
        for s in 1..=5u64 {
            tokio::time::advance(Duration::from_secs(1)).await;
            // `app` uses a quarter of a core, `side` nothing.
            app.usage()
                .cpu_nanos
                .store(s * 250_000_000, Ordering::Relaxed);
            stats.sample(Some(1_000_000_000_000), Instant::now());
        }
        let summary = stats.summary(&host(), Instant::now(), jiff::Timestamp::now());
        assert_eq!(summary.node.node_name, "n1");
        let mem = summary
            .node
            .memory
            .as_ref()
            .and_then(|m| m.working_set_bytes);
        assert_eq!(mem, Some(5 << 30));
        assert_eq!(
            summary.node.cpu.as_ref().and_then(|c| c.usage_nano_cores),
            Some(0)
        );
        let [p] = summary.pods.as_slice() else {
            panic!("one pod expected: {summary:?}");
        };
        assert_eq!(p.pod_ref, pod("web"));
        let names: Vec<&str> = p.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["app", "side"]);
        let app_stats = &p.containers[0];
        assert_eq!(
            app_stats.cpu.as_ref().and_then(|c| c.usage_nano_cores),
            Some(250_000_000)
        );
        assert_eq!(
            app_stats
                .cpu
                .as_ref()
                .and_then(|c| c.usage_core_nano_seconds),
            Some(1_250_000_000)
        );
        assert_eq!(
            app_stats.memory.as_ref().and_then(|m| m.available_bytes),
            Some(62 << 20)
        );
        assert_eq!(
            p.memory.as_ref().and_then(|m| m.working_set_bytes),
            Some(3 << 20)
        );
        assert_eq!(
            p.cpu.as_ref().and_then(|c| c.usage_nano_cores),
            Some(250_000_000)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ended_runs_leave_and_keep_their_cpu_in_the_pod() {
        let stats = Arc::new(StatsRegistry::new("n1", StatsOptions::default()));
        let reg = stats.add_pod(pod("job"), jiff::Timestamp::now());
        let first = reg.start_container("c", None);
        first
            .usage()
            .cpu_nanos
            .store(3_000_000_000, Ordering::Relaxed);
        drop(first);
        let second = reg.start_container("c", None);
        second
            .usage()
            .cpu_nanos
            .store(1_000_000_000, Ordering::Relaxed);
        tokio::time::advance(Duration::from_secs(2)).await;
        let summary = stats.summary(&host(), Instant::now(), jiff::Timestamp::now());
        let p = &summary.pods[0];
        assert_eq!(p.containers.len(), 1);
        assert_eq!(
            p.containers[0]
                .cpu
                .as_ref()
                .and_then(|c| c.usage_core_nano_seconds),
            Some(1_000_000_000)
        );
        assert_eq!(
            p.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds),
            Some(4_000_000_000)
        );
        drop(second);
        let summary = stats.summary(&host(), Instant::now(), jiff::Timestamp::now());
        assert!(summary.pods[0].containers.is_empty());
        drop(reg);
        let summary = stats.summary(&host(), Instant::now(), jiff::Timestamp::now());
        assert!(summary.pods.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_registration_does_not_remove_its_successor() {
        let stats = Arc::new(StatsRegistry::new("n1", StatsOptions::default()));
        let old = stats.add_pod(pod("p"), jiff::Timestamp::now());
        let new = stats.add_pod(pod("p"), jiff::Timestamp::now());
        let old_run = old.start_container("c", None);
        let run = new.start_container("c", None);
        drop(old_run);
        drop(old);
        let summary = stats.summary(&host(), Instant::now(), jiff::Timestamp::now());
        assert_eq!(summary.pods.len(), 1);
        assert_eq!(summary.pods[0].containers.len(), 1);
        drop(run);
    }

    #[tokio::test(start_paused = true)]
    async fn sampler_keeps_windows_current_until_shutdown() {
        let stats = Arc::new(StatsRegistry::new(
            "n1",
            StatsOptions {
                interval: Duration::from_secs(1),
                window: Duration::from_secs(5),
            },
        ));
        let reg = stats.add_pod(pod("p"), jiff::Timestamp::now());
        let run = reg.start_container("c", None);
        let shutdown = CancellationToken::new();
        let sampler = tokio::spawn(run_sampler(stats.clone(), shutdown.clone()));
        // A tenth of a core, counted half-way between the sampler's ticks so
        // no tick races an update.
        for s in 1..=20u64 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            run.usage()
                .cpu_nanos
                .store(s * 100_000_000, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        {
            let inner = stats.lock();
            let c = &inner.pods[&pod("p")].containers["c"];
            assert!(c.cpu.samples.len() <= 7, "{:?}", c.cpu.samples);
        }
        let summary = stats.summary(&host(), Instant::now(), jiff::Timestamp::now());
        assert_eq!(
            summary.pods[0].containers[0]
                .cpu
                .as_ref()
                .and_then(|c| c.usage_nano_cores),
            Some(100_000_000)
        );
        shutdown.cancel();
        sampler.await.ok();
    }

    #[test]
    fn parses_proc_stat_and_meminfo() {
        let stat = "cpu  100 20 30 5000 40 5 6 7 8 9\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1 2\nbtime 1700000000\n";
        let cpu = parse_proc_stat(stat);
        assert_eq!(
            cpu,
            Some(HostCpu {
                // (100 + 20 + 30 + 5 + 6 + 7) ticks of 10 ms.
                busy_nanos: 168 * 10_000_000,
                boot_time: Some(1_700_000_000),
            })
        );
        assert_eq!(parse_proc_stat("intr 1\n"), None);
        let meminfo = "MemTotal:       16000000 kB\nMemFree:         2000000 kB\nMemAvailable:    6000000 kB\nBuffers: 1 kB\n";
        assert_eq!(
            parse_meminfo(meminfo),
            Some(HostMemory {
                total: 16_000_000 * 1024,
                free: 2_000_000 * 1024,
                available: 6_000_000 * 1024,
            })
        );
        assert_eq!(parse_meminfo("MemTotal: x kB\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn reads_this_host() {
        let host = read_host().await;
        let mem = host.memory.map(|m| (m.total, m.available));
        assert!(mem.is_some_and(|(t, a)| t > 0 && a <= t), "{host:?}");
        assert!(host.cpu_nanos.is_some_and(|c| c > 0), "{host:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn resource_metrics_use_kubelet_names_and_labels() {
        let stats = Arc::new(StatsRegistry::new("n1", StatsOptions::default()));
        let reg = stats.add_pod(
            PodReference {
                name: "we\"b".into(),
                namespace: "default".into(),
                uid: "u".into(),
            },
            jiff::Timestamp::now(),
        );
        let run = reg.start_container("app", None);
        run.usage()
            .cpu_nanos
            .store(1_500_000_000, Ordering::Relaxed);
        run.usage().memory_bytes.store(131_072, Ordering::Relaxed);
        let summary = stats.summary(&host(), Instant::now(), jiff::Timestamp::now());
        let text = resource_metrics(&summary, 1_700_000_000_123);
        for line in [
            "# TYPE container_cpu_usage_seconds_total counter",
            "container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"we\\\"b\"} 1.5 1700000000123",
            "container_memory_working_set_bytes{container=\"app\",namespace=\"default\",pod=\"we\\\"b\"} 131072 1700000000123",
            "pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"we\\\"b\"} 1.5 1700000000123",
            "pod_memory_working_set_bytes{namespace=\"default\",pod=\"we\\\"b\"} 131072 1700000000123",
            "node_cpu_usage_seconds_total 1000 1700000000123",
            "node_memory_working_set_bytes 5368709120 1700000000123",
            "# TYPE node_memory_working_set_bytes gauge",
            "resource_scrape_error 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.contains("container_start_time_seconds{container=\"app\""));
    }

    #[test]
    fn seconds_are_exact() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(1_500_000_000), "1.5");
        assert_eq!(seconds(12_000_000_001), "12.000000001");
        assert_eq!(seconds(u64::MAX), "18446744073.709551615");
    }
}
