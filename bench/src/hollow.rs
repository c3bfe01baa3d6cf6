//! Hollow nodes: simulated kubelets, many in one process (Kubernetes'
//! kubemark, but as tokio tasks — thousands per core).
//!
//! Each hollow node registers its Node (capacity cpu/memory/pods, the
//! kubelet's conditions with Ready=True), renews its Lease in
//! `kube-node-lease` and writes Node status heartbeats on the wasmkube
//! kubelet's cadence (every 10 s each by default; the first tick of every
//! node is spread over the interval and later ones are jittered ±4 %, as the
//! kubelet's lease controller does), and reports every pod bound to it
//! `Running` (phase, the kubelet's five conditions with Ready=True, one
//! running containerStatus per container) without running any wasm. A pod
//! with a deletionTimestamp is deleted with gracePeriodSeconds 0 and a uid
//! precondition, as a kubelet does once its containers are stopped.
//!
//! Simplifications, on purpose: one shared watch of all pods dispatches by
//! `spec.nodeName` (1,000 kubelets would open 1,000 field-selected watches);
//! the Lease is renewed with a replace of the copy last written (the
//! kubelet's lease controller caches it too; a conflict re-reads it); all
//! nodes share one API client and at most `max_in_flight` requests at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The label every hollow node carries (value `true`), so scenarios can
/// select them.
pub const HOLLOW_LABEL: &str = "wasmkube.io/hollow";

const LEASE_NAMESPACE: &str = "kube-node-lease";

/// A kube client from a kubeconfig file (the one an API server writes),
/// optionally with another bearer token.
pub async fn kube_client(kubeconfig: &Path, token: Option<&str>) -> Result<kube::Client> {
    let mut kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    if let Some(token) = token {
        for named in &mut kc.auth_infos {
            if let Some(auth) = named.auth_info.as_mut() {
                auth.token = Some(token.to_string().into());
            }
        }
    }
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// What the hollow nodes look like and how often they write.
#[derive(Debug, Clone)]
pub struct HollowConfig {
    /// Node names are `<prefix><index>`.
    pub prefix: String,
    /// CPU capacity in cores.
    pub cpu: u32,
    /// Memory capacity in bytes.
    pub memory: u64,
    /// Pod capacity.
    pub max_pods: u32,
    /// `leaseDurationSeconds`; the Lease is renewed every quarter of it.
    pub lease_duration: Duration,
    /// How often each node writes its status heartbeat.
    pub status_interval: Duration,
    /// Most API requests in flight for all hollow nodes together.
    pub max_in_flight: usize,
}

impl Default for HollowConfig {
    /// The wasmkube kubelet's defaults: a 40 s Lease renewed every 10 s and
    /// a status heartbeat every 10 s.
    fn default() -> Self {
        HollowConfig {
            prefix: "hollow-".to_string(),
            cpu: 32,
            memory: 256 << 30,
            max_pods: 110,
            lease_duration: Duration::from_secs(40),
            status_interval: Duration::from_secs(10),
            max_in_flight: 64,
        }
    }
}

/// Counters of what the hollow nodes did (monotonic).
#[derive(Debug, Default)]
pub struct HollowStats {
    pub pods_running: AtomicU64,
    pub pods_deleted: AtomicU64,
    pub lease_renewals: AtomicU64,
    pub heartbeats: AtomicU64,
    pub errors: AtomicU64,
}

/// A snapshot of [`HollowStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub pods_running: u64,
    pub pods_deleted: u64,
    pub lease_renewals: u64,
    pub heartbeats: u64,
    pub errors: u64,
}

impl HollowStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            pods_running: self.pods_running.load(Ordering::Relaxed),
            pods_deleted: self.pods_deleted.load(Ordering::Relaxed),
            lease_renewals: self.lease_renewals.load(Ordering::Relaxed),
            heartbeats: self.heartbeats.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// Work the pod watch hands to a node.
#[derive(Debug)]
enum PodWork {
    /// Report the pod Running.
    Start(Box<Pod>),
    /// Delete it now (its deletionTimestamp is set).
    Delete {
        namespace: String,
        name: String,
        uid: String,
    },
}

/// Many simulated kubelets in this process.
pub struct HollowNodes {
    names: Vec<String>,
    stats: Arc<HollowStats>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl HollowNodes {
    /// Registers `n` hollow nodes (all of them before returning), then runs
    /// their Lease, heartbeat and pod loops until [`HollowNodes::stop`].
    pub async fn start(n: usize, client: kube::Client, config: HollowConfig) -> Result<Self> {
        let names: Vec<String> = (0..n).map(|i| format!("{}{i}", config.prefix)).collect();
        let gate = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
        let stats = Arc::new(HollowStats::default());
        let shutdown = CancellationToken::new();
        let since = jiff::Timestamp::now();

        // Registration, bounded like every other request.
        let uids: Vec<Option<String>> = futures::stream::iter(names.iter().cloned())
            .map(|name| {
                let client = client.clone();
                let config = config.clone();
                async move { register(&client, &name, &config, since).await }
            })
            .buffered(config.max_in_flight.max(1))
            .try_collect()
            .await
            .context("registering hollow nodes")?;

        let mut tasks = JoinSet::new();
        let mut senders = HashMap::with_capacity(n);
        for (i, (name, uid)) in names.iter().zip(uids).enumerate() {
            // Room for a full node's pods and their deletions: the watch
            // waits (back-pressure) rather than dropping work.
            let (tx, rx) = mpsc::channel(2 * config.max_pods as usize + 8);
            senders.insert(name.clone(), tx);
            let node = NodeLoop {
                client: client.clone(),
                name: name.clone(),
                uid,
                config: config.clone(),
                since,
                gate: gate.clone(),
                stats: stats.clone(),
                offset: spread(i, n),
                seed: i as u64,
            };
            tasks.spawn(node.run(rx, shutdown.clone()));
        }
        tasks.spawn(watch_pods(client, senders, stats.clone(), shutdown.clone()));
        Ok(HollowNodes {
            names,
            stats,
            shutdown,
            tasks,
        })
    }

    /// The node names, `<prefix>0` … `<prefix>{n-1}`.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops every loop and waits for them (Nodes and Leases stay in the
    /// store, as when kubelets are stopped).
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Node `i` of `n`'s first-tick offset, as a fraction of an interval: the
/// nodes' writes are spread evenly instead of all landing at once.
fn spread(i: usize, n: usize) -> f64 {
    if n == 0 { 0.0 } else { i as f64 / n as f64 }
}

/// A jitter factor in [1 − f, 1 + f] from a seed and a tick count
/// (splitmix64: cheap, deterministic, well spread).
fn jitter(seed: u64, tick: u64, f: f64) -> f64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(tick.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
    1.0 - f + 2.0 * f * unit
}

fn labels(name: &str) -> BTreeMap<String, String> {
    [
        ("kubernetes.io/os", "wasip1"),
        ("kubernetes.io/arch", "wasm32"),
        ("kubernetes.io/hostname", name),
        ("node.kubernetes.io/instance-type", "wasmkube"),
        (HOLLOW_LABEL, "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn node_status(config: &HollowConfig, name: &str, since: &str) -> serde_json::Value {
    let now = jiff::Timestamp::now().to_string();
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        serde_json::json!({
            "type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": since,
        })
    };
    let resources = serde_json::json!({
        "cpu": config.cpu.to_string(),
        "memory": format!("{}Ki", config.memory / 1024),
        "pods": config.max_pods.to_string(),
    });
    serde_json::json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            { "type": "InternalIP", "address": "127.0.0.1" },
            { "type": "Hostname", "address": name },
        ],
        "daemonEndpoints": { "kubeletEndpoint": { "Port": 10250 } },
        "nodeInfo": {
            "architecture": "wasm32", "bootID": "", "containerRuntimeVersion": "wasmkube://hollow",
            "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "v1.33.0-hollow",
            "machineID": "", "operatingSystem": "wasip1", "osImage": "hollow", "systemUUID": "",
        },
    })
}

/// Creates the Node (or takes over an existing one) and writes its status;
/// its uid.
async fn register(
    client: &kube::Client,
    name: &str,
    config: &HollowConfig,
    since: jiff::Timestamp,
) -> Result<Option<String>> {
    let api: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels(name)),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e).with_context(|| format!("creating node {name}")),
    }
    let patch = serde_json::json!({ "status": node_status(config, name, &since.to_string()) });
    let node = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("writing node {name}'s status"))?;
    Ok(node.metadata.uid)
}

struct NodeLoop {
    client: kube::Client,
    name: String,
    uid: Option<String>,
    config: HollowConfig,
    since: jiff::Timestamp,
    gate: Arc<Semaphore>,
    stats: Arc<HollowStats>,
    offset: f64,
    seed: u64,
}

impl NodeLoop {
    async fn run(self, mut work: mpsc::Receiver<PodWork>, shutdown: CancellationToken) {
        let renew = self.config.lease_duration / 4;
        let status = self.config.status_interval;
        let start = tokio::time::Instant::now();
        let mut next_lease = start + renew.mul_f64(self.offset);
        let mut next_status = start + status.mul_f64(self.offset);
        let mut lease: Option<Lease> = None;
        let mut tick = 0u64;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(next_lease) => {
                    tick += 1;
                    let ok = self.renew_lease(&mut lease).await;
                    // A failed renewal is retried sooner, as the kubelet does.
                    let wait = if ok { renew.mul_f64(jitter(self.seed, tick, 0.04)) } else { renew / 4 };
                    next_lease = tokio::time::Instant::now() + wait;
                }
                () = tokio::time::sleep_until(next_status) => {
                    tick += 1;
                    self.heartbeat().await;
                    next_status = tokio::time::Instant::now() + status.mul_f64(jitter(self.seed, tick, 0.04));
                }
                w = work.recv() => match w {
                    Some(PodWork::Start(pod)) => self.report_running(&pod).await,
                    Some(PodWork::Delete { namespace, name, uid }) => self.delete(&namespace, &name, &uid).await,
                    None => return,
                },
            }
        }
    }

    fn failed(&self, what: &str, e: &kube::Error) {
        let n = self.stats.errors.fetch_add(1, Ordering::Relaxed);
        // The first few are enough to say what goes wrong.
        if n < 5 {
            eprintln!("hollow node {}: {what}: {e}", self.name);
        }
    }

    async fn renew_lease(&self, cached: &mut Option<Lease>) -> bool {
        let Ok(_permit) = self.gate.acquire().await else {
            return false;
        };
        let api: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let now = MicroTime(jiff::Timestamp::now());
        let seconds = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let result = match cached.take() {
            Some(mut lease) => {
                if let Some(spec) = lease.spec.as_mut() {
                    spec.renew_time = Some(now);
                }
                match api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    // Someone else wrote it: read it again next time.
                    Err(kube::Error::Api(s)) if s.code == 409 => api.get(&self.name).await,
                    r => r,
                }
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(LEASE_NAMESPACE.to_string()),
                        owner_references: self.uid.as_ref().map(|uid| {
                            vec![OwnerReference {
                                api_version: "v1".into(),
                                kind: "Node".into(),
                                name: self.name.clone(),
                                uid: uid.clone(),
                                ..Default::default()
                            }]
                        }),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.name.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        ..Default::default()
                    }),
                };
                match api.create(&PostParams::default(), &lease).await {
                    Err(kube::Error::Api(s)) if s.code == 409 => api.get(&self.name).await,
                    r => r,
                }
            }
        };
        match result {
            Ok(lease) => {
                *cached = Some(lease);
                self.stats.lease_renewals.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.failed("renewing the lease", &e);
                false
            }
        }
    }

    async fn heartbeat(&self) {
        let Ok(_permit) = self.gate.acquire().await else {
            return;
        };
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = serde_json::json!({
            "status": node_status(&self.config, &self.name, &self.since.to_string())
        });
        match api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.failed("writing a heartbeat", &e),
        }
    }

    async fn report_running(&self, pod: &Pod) {
        let (Some(name), Some(namespace)) = (
            pod.metadata.name.as_deref(),
            pod.metadata.namespace.as_deref(),
        ) else {
            return;
        };
        let Ok(_permit) = self.gate.acquire().await else {
            return;
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let patch = serde_json::json!({ "status": running_status(pod) });
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                self.stats.pods_running.fetch_add(1, Ordering::Relaxed);
            }
            // Deleted meanwhile.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => self.failed("reporting a pod Running", &e),
        }
    }

    async fn delete(&self, namespace: &str, name: &str, uid: &str) {
        let Ok(_permit) = self.gate.acquire().await else {
            return;
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {
                self.stats.pods_deleted.fetch_add(1, Ordering::Relaxed);
            }
            // Already gone, or a new pod of the same name.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => self.failed("deleting a pod", &e),
        }
    }
}

/// The status a kubelet writes once every container of `pod` runs.
pub fn running_status(pod: &Pod) -> serde_json::Value {
    let now = jiff::Timestamp::now().to_string();
    let true_condition = |type_: &str| serde_json::json!({ "type": type_, "status": "True", "lastProbeTime": null, "lastTransitionTime": now });
    let containers: Vec<serde_json::Value> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            serde_json::json!({
                "name": c.name,
                "image": c.image.clone().unwrap_or_default(),
                "imageID": "",
                "containerID": format!("hollow://{}", c.name),
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": { "running": { "startedAt": now } },
            })
        })
        .collect();
    serde_json::json!({
        "phase": "Running",
        "conditions": [
            true_condition("PodReadyToStartContainers"),
            true_condition("Initialized"),
            true_condition("Ready"),
            true_condition("ContainersReady"),
            true_condition("PodScheduled"),
        ],
        "hostIP": "127.0.0.1",
        "hostIPs": [{ "ip": "127.0.0.1" }],
        "podIP": "127.0.0.1",
        "podIPs": [{ "ip": "127.0.0.1" }],
        "startTime": now,
        "containerStatuses": containers,
        "qosClass": "BestEffort",
    })
}

/// What the shared watch decides for one pod event on a hollow node.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Start,
    Delete,
    Nothing,
}

/// The kubelet's reaction to a pod it sees, given whether it already
/// reported it Running or asked for its deletion.
fn decide(pod: &Pod, reported: bool, deleting: bool) -> Decision {
    if pod.metadata.deletion_timestamp.is_some() {
        return if deleting {
            Decision::Nothing
        } else {
            Decision::Delete
        };
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if reported || matches!(phase, Some("Running" | "Succeeded" | "Failed")) {
        Decision::Nothing
    } else {
        Decision::Start
    }
}

/// The one watch of all pods, dispatching pods bound to a hollow node to
/// that node's loop.
async fn watch_pods(
    client: kube::Client,
    nodes: HashMap<String, mpsc::Sender<PodWork>>,
    stats: Arc<HollowStats>,
    shutdown: CancellationToken,
) {
    let api: Api<Pod> = Api::all(client);
    let events = watcher::watcher(api, watcher::Config::default().any_semantic());
    let mut events = std::pin::pin!(events);
    // Per pod uid: reported Running, deletion asked.
    let mut seen: HashMap<String, (bool, bool)> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    loop {
        let ev = tokio::select! {
            () = shutdown.cancelled() => return,
            ev = events.next() => ev,
        };
        let pod = match ev {
            None => return,
            Some(Err(e)) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("hollow nodes: pod watch failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Some(Ok(Event::Init)) => {
                listed.clear();
                continue;
            }
            Some(Ok(Event::InitDone)) => {
                // Pods gone while the watch was re-listing.
                seen.retain(|uid, _| listed.contains(uid));
                continue;
            }
            Some(Ok(Event::Delete(pod))) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    seen.remove(uid);
                }
                continue;
            }
            Some(Ok(Event::InitApply(pod))) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    listed.insert(uid);
                }
                pod
            }
            Some(Ok(Event::Apply(pod))) => pod,
        };
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        let Some(tx) = nodes.get(node) else {
            continue;
        };
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        let entry = seen.entry(uid.clone()).or_insert((false, false));
        let work = match decide(&pod, entry.0, entry.1) {
            Decision::Nothing => continue,
            Decision::Start => {
                entry.0 = true;
                PodWork::Start(Box::new(pod))
            }
            Decision::Delete => {
                entry.1 = true;
                PodWork::Delete {
                    namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                    name: pod.metadata.name.clone().unwrap_or_default(),
                    uid,
                }
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            r = tx.send(work) => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(phase: Option<&str>, deleting: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                deletion_timestamp: deleting.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("hollow-0".into()),
                containers: vec![Container {
                    name: "app".into(),
                    image: Some("m.wasm".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: phase.map(|p| PodStatus {
                phase: Some(p.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_new_pod_is_started_once_and_a_deleting_pod_deleted_once() {
        assert_eq!(
            decide(&pod(Some("Pending"), false), false, false),
            Decision::Start
        );
        assert_eq!(decide(&pod(None, false), false, false), Decision::Start);
        assert_eq!(
            decide(&pod(Some("Pending"), false), true, false),
            Decision::Nothing
        );
        assert_eq!(
            decide(&pod(Some("Running"), false), false, false),
            Decision::Nothing
        );
        assert_eq!(
            decide(&pod(Some("Running"), true), true, false),
            Decision::Delete
        );
        assert_eq!(
            decide(&pod(Some("Running"), true), true, true),
            Decision::Nothing
        );
    }

    #[test]
    fn running_status_has_a_running_ready_container_per_container() {
        let s = running_status(&pod(None, false));
        assert_eq!(s["phase"], "Running");
        let ready = s["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
        assert_eq!(
            ready.map(|c| &c["status"]),
            Some(&serde_json::json!("True"))
        );
        assert_eq!(s["containerStatuses"][0]["name"], "app");
        assert!(s["containerStatuses"][0]["state"]["running"]["startedAt"].is_string());
    }

    #[test]
    fn jitter_stays_in_its_band_and_spread_covers_the_interval() {
        for seed in 0..100 {
            for tick in 0..10 {
                let j = jitter(seed, tick, 0.04);
                assert!((0.96..=1.04).contains(&j), "{j}");
            }
        }
        assert_eq!(spread(0, 4), 0.0);
        assert_eq!(spread(3, 4), 0.75);
        assert_eq!(spread(0, 0), 0.0);
    }
}
