//! Mirror pods: wasmkube's own components seen as pods in `kube-system`.
//!
//! Kubernetes' kubelet publishes a *mirror pod* for every static pod it
//! runs (the control plane under kubeadm), so `kubectl get pods -n
//! kube-system` shows the apiserver, scheduler, controller manager and etcd.
//! wasmkube's components are native code, not pods, but the kubelet
//! publishes them the same way: `wasmkube-<component>-<node>`, with the
//! `kubernetes.io/config.mirror` annotation (a hash of the pod, so a changed
//! definition replaces the pod), owned by the Node, one container named after
//! the component whose readiness is the component's health probe.
//!
//! The kubelet creates missing mirror pods, recreates deleted ones, keeps
//! their status current (writing only when it changed), and deletes mirror
//! pods of its node that no longer match a component (the datastore after a
//! move to etcd). The pod worker never runs them (they carry the
//! annotation), and their container logs are the components' own logs
//! ([`crate::component_logs`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStatus, Node, Pod, PodCondition,
    PodIP, PodSpec, PodStatus, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio_util::sync::CancellationToken;

use crate::component_logs::{self, ComponentLog};
use crate::logs::{ContainerLogs, LogRegistry};

/// The annotation marking a mirror pod; its value is a hash of the pod.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Where the mirrored pod comes from (`file` for Kubernetes' static pods).
pub const SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// Our source: the component is built into the wasmkube process.
pub const SOURCE: &str = "wasmkube";
/// Mirror pods live here, as Kubernetes' control plane does.
pub const NAMESPACE: &str = "kube-system";

/// Component names (log routing keys; pods are `wasmkube-<name>-<node>`).
pub const APISERVER: &str = "apiserver";
/// The embedded store.
pub const DATASTORE: &str = "datastore";
/// The scheduler.
pub const SCHEDULER: &str = "scheduler";
/// The controllers.
pub const CONTROLLER_MANAGER: &str = "controller-manager";
/// The node's kubelet.
pub const AGENT: &str = "agent";

/// How often health is probed and status refreshed.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(5);

/// Whether a pod is a mirror pod (the pod worker leaves those alone).
pub fn is_mirror_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
}

/// What a health probe found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// The component works.
    pub ready: bool,
    /// Shown in the Ready condition (e.g. `leading`, `standby`).
    pub message: Option<String>,
}

impl Health {
    /// Working, with an optional message.
    pub fn ready(message: Option<String>) -> Health {
        Health {
            ready: true,
            message,
        }
    }

    /// Not working, and why.
    pub fn not_ready(message: impl Into<String>) -> Health {
        Health {
            ready: false,
            message: Some(message.into()),
        }
    }
}

/// A component's health check; must answer within a few seconds.
pub type Probe = Arc<dyn Fn() -> BoxFuture<'static, Health> + Send + Sync>;

/// Where a component sits (the `tier` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// apiserver, scheduler, controller manager, datastore.
    ControlPlane,
    /// The node's agent.
    Node,
}

impl Tier {
    fn label(self) -> &'static str {
        match self {
            Tier::ControlPlane => "control-plane",
            Tier::Node => "node",
        }
    }
}

/// One component of this process to publish as a mirror pod.
#[derive(Clone)]
pub struct Component {
    /// [`APISERVER`], [`SCHEDULER`], …
    pub name: &'static str,
    /// Its tier.
    pub tier: Tier,
    /// When it started (the container's `startedAt`).
    pub started: jiff::Timestamp,
    /// Its health check.
    pub probe: Probe,
}

impl fmt::Debug for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Component")
            .field("name", &self.name)
            .field("tier", &self.tier)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl Component {
    /// A component probed by `probe`.
    pub fn new(name: &'static str, tier: Tier, started: jiff::Timestamp, probe: Probe) -> Self {
        // The API keeps `startedAt` in whole seconds: compared with a
        // sub-second start, every sync would look like a new process.
        let started = jiff::Timestamp::from_second(started.as_second()).unwrap_or(started);
        Component {
            name,
            tier,
            started,
            probe,
        }
    }

    /// `wasmkube-<name>`: the `component` label and the container's name.
    pub fn label(&self) -> String {
        format!("wasmkube-{}", self.name)
    }

    /// The mirror pod's name on `node`.
    pub fn pod_name(&self, node: &str) -> String {
        format!("wasmkube-{}-{node}", self.name)
    }
}

/// A probe that always answers `health` (the kubelet's own: it runs).
pub fn constant(health: Health) -> Probe {
    Arc::new(move || {
        let h = health.clone();
        Box::pin(async move { h })
    })
}

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The apiserver's probe: `/readyz` answers 200.
pub fn readyz_probe(client: kube::Client) -> Probe {
    Arc::new(move || {
        let client = client.clone();
        Box::pin(async move {
            match readyz(&client).await {
                Ok(_) => Health::ready(None),
                Err(e) => Health::not_ready(format!("readyz: {e}")),
            }
        })
    })
}

/// The datastore's probe: the apiserver's `/readyz` store check passes.
pub fn store_probe(client: kube::Client) -> Probe {
    Arc::new(move || {
        let client = client.clone();
        Box::pin(async move {
            match readyz(&client).await {
                Ok(body) if body.contains("[+]store ok") => Health::ready(None),
                Ok(_) => Health::not_ready("the store does not answer"),
                Err(e) => Health::not_ready(format!("the store does not answer: {e}")),
            }
        })
    })
}

async fn readyz(client: &kube::Client) -> Result<String, String> {
    let req = http::Request::get("/readyz?verbose")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(PROBE_TIMEOUT, client.request_text(req)).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_string()),
    }
}

/// A leader-elected component's probe: it runs as long as the process does
/// (a failed component stops the server); the message says whether this
/// instance holds `namespace/lease` (`leading`) or waits (`standby`).
pub fn leader_probe(client: kube::Client, namespace: &str, lease: &str, identity: String) -> Probe {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client, namespace);
    let lease = lease.to_string();
    Arc::new(move || {
        let leases = leases.clone();
        let lease = lease.clone();
        let identity = identity.clone();
        Box::pin(async move {
            let got = tokio::time::timeout(PROBE_TIMEOUT, leases.get_opt(&lease)).await;
            let holder = match got {
                Ok(Ok(l)) => l.and_then(|l| l.spec).and_then(|s| s.holder_identity),
                // Leadership unknown; the task itself still runs.
                _ => return Health::ready(None),
            };
            let message = if holder.as_deref() == Some(identity.as_str()) {
                "leading"
            } else {
                "standby"
            };
            Health::ready(Some(message.to_string()))
        })
    })
}

/// What the mirror loop needs.
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    /// This node.
    pub node_name: String,
    /// Its address (a component's pod IP: they use the host's network).
    pub node_ip: String,
    /// What to publish.
    pub components: Vec<Component>,
    /// Folder of the components' log files.
    pub logs_dir: PathBuf,
    /// Cap of one log file.
    pub max_log_bytes: u64,
    /// Probe and status period.
    pub resync: Duration,
    /// The container image shown (`wasmkube:<version>`).
    pub image: String,
}

impl MirrorConfig {
    /// Defaults for `node_name` with logs below `logs_dir`.
    pub fn new(
        node_name: impl Into<String>,
        node_ip: impl Into<String>,
        components: Vec<Component>,
        logs_dir: impl Into<PathBuf>,
    ) -> Self {
        MirrorConfig {
            node_name: node_name.into(),
            node_ip: node_ip.into(),
            components,
            logs_dir: logs_dir.into(),
            max_log_bytes: crate::logs::DEFAULT_MAX_LOG_BYTES,
            resync: DEFAULT_RESYNC,
            image: format!("wasmkube:{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// The mirror pod of `c` on `node` (whose Node has `node_uid`).
pub fn desired_pod(c: &Component, node: &str, node_uid: &str, image: &str) -> Pod {
    let container = c.label();
    let labels = BTreeMap::from([
        ("component".to_string(), container.clone()),
        ("tier".to_string(), c.tier.label().to_string()),
    ]);
    let mut pod = Pod {
        metadata: ObjectMeta {
            name: Some(c.pod_name(node)),
            namespace: Some(NAMESPACE.to_string()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                SOURCE_ANNOTATION.to_string(),
                SOURCE.to_string(),
            )])),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".to_string(),
                kind: "Node".to_string(),
                name: node.to_string(),
                uid: node_uid.to_string(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.to_string()),
            host_network: Some(true),
            priority_class_name: Some("system-node-critical".to_string()),
            // Deleting one only asks the kubelet to publish it again.
            termination_grace_period_seconds: Some(0),
            // Never evicted from an unreachable node, like static pods.
            tolerations: Some(vec![Toleration {
                operator: Some("Exists".to_string()),
                ..Default::default()
            }]),
            containers: vec![Container {
                name: container,
                image: Some(image.to_string()),
                image_pull_policy: Some("Never".to_string()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    let hash = pod_hash(&pod);
    if let Some(a) = pod.metadata.annotations.as_mut() {
        a.insert(MIRROR_ANNOTATION.to_string(), hash);
    }
    pod
}

/// A stable hash of what the kubelet sets in a mirror pod.
fn pod_hash(pod: &Pod) -> String {
    use sha2::Digest as _;
    let value = serde_json::json!({
        "labels": pod.metadata.labels,
        "annotations": pod.metadata.annotations,
        "owner": pod.metadata.owner_references,
        "spec": pod.spec,
    });
    let digest = sha2::Sha256::digest(value.to_string().as_bytes());
    hex::encode(&digest[..16])
}

fn mirror_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(MIRROR_ANNOTATION)
        .map(String::as_str)
}

fn is_ours(pod: &Pod, node: &str) -> bool {
    is_mirror_pod(pod)
        && pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SOURCE_ANNOTATION))
            .is_some_and(|s| s == SOURCE)
        && pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
}

/// The status of `c`'s mirror pod given its health; times of unchanged
/// conditions, and the restart count, carry over from `current`.
pub fn desired_status(
    c: &Component,
    health: &Health,
    current: Option<&PodStatus>,
    node_ip: &str,
    image: &str,
    now: jiff::Timestamp,
) -> PodStatus {
    let ready = if health.ready { "True" } else { "False" };
    let old_condition = |ty: &str| {
        current
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == ty))
    };
    let condition = |ty: &str, status: &str, message: Option<String>| {
        let since = old_condition(ty)
            .filter(|o| o.status == status)
            .and_then(|o| o.last_transition_time.clone())
            .unwrap_or(Time(now));
        PodCondition {
            type_: ty.to_string(),
            status: status.to_string(),
            last_transition_time: Some(since),
            reason: (status == "False").then(|| "ContainersNotReady".to_string()),
            message,
            ..Default::default()
        }
    };
    let started = Time(c.started);
    let old_container = current
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first());
    // A new process is a restart of the component's container.
    let restart_count = match old_container {
        Some(old) => {
            let old_start = old
                .state
                .as_ref()
                .and_then(|s| s.running.as_ref())
                .and_then(|r| r.started_at.as_ref());
            match old_start {
                Some(t) if t.0 != c.started && t.0 < c.started => old.restart_count + 1,
                _ => old.restart_count,
            }
        }
        None => 0,
    };
    PodStatus {
        phase: Some("Running".to_string()),
        conditions: Some(vec![
            condition("PodScheduled", "True", None),
            condition("Initialized", "True", None),
            condition("ContainersReady", ready, None),
            condition("Ready", ready, health.message.clone()),
        ]),
        host_ip: Some(node_ip.to_string()),
        pod_ip: Some(node_ip.to_string()),
        pod_ips: Some(vec![PodIP {
            ip: node_ip.to_string(),
        }]),
        start_time: Some(started.clone()),
        qos_class: Some("BestEffort".to_string()),
        container_statuses: Some(vec![ContainerStatus {
            name: c.label(),
            image: image.to_string(),
            image_id: String::new(),
            container_id: Some(format!("wasmkube://{}", c.name)),
            ready: health.ready,
            started: Some(true),
            restart_count,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(started),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// What of a status is worth a write (not the apiserver's own defaults).
fn fingerprint(status: Option<&PodStatus>) -> serde_json::Value {
    let Some(s) = status else {
        return serde_json::Value::Null;
    };
    let conditions: Vec<_> = s
        .conditions
        .iter()
        .flatten()
        .map(|c| (&c.type_, &c.status, &c.message, &c.last_transition_time))
        .collect();
    let containers: Vec<_> = s
        .container_statuses
        .iter()
        .flatten()
        .map(|c| (&c.name, c.ready, c.restart_count, &c.state, &c.image))
        .collect();
    serde_json::json!({
        "phase": s.phase,
        "conditions": conditions,
        "containers": containers,
        "podIP": s.pod_ip,
        "startTime": s.start_time,
    })
}

/// One step of bringing the mirror pods in line.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create this pod.
    Create(Box<Pod>),
    /// Delete the named pod (stale, replaced or being deleted); a `Create`
    /// follows when it is to be replaced.
    Delete(String),
    /// Write this status to the named pod.
    Status(String, Box<PodStatus>),
}

/// Compares the mirror pods in `existing` (this node's, in `kube-system`)
/// with what the components ask for.
pub fn plan(
    config: &MirrorConfig,
    node_uid: &str,
    existing: &[Pod],
    health: &HashMap<&'static str, Health>,
    now: jiff::Timestamp,
) -> Vec<Action> {
    let node = config.node_name.as_str();
    let mut actions = Vec::new();
    let by_name: HashMap<&str, &Pod> = existing
        .iter()
        .filter_map(|p| Some((p.metadata.name.as_deref()?, p)))
        .collect();
    for c in &config.components {
        let want = desired_pod(c, node, node_uid, &config.image);
        let name = c.pod_name(node);
        match by_name.get(name.as_str()) {
            None => actions.push(Action::Create(Box::new(want))),
            Some(pod) => {
                let replaced = mirror_hash(pod) != mirror_hash(&want);
                if pod.metadata.deletion_timestamp.is_some() || replaced {
                    actions.push(Action::Delete(name));
                    if replaced || pod.metadata.deletion_timestamp.is_none() {
                        actions.push(Action::Create(Box::new(want)));
                    }
                    continue;
                }
                let h = health.get(c.name).cloned().unwrap_or_default();
                let status = desired_status(
                    c,
                    &h,
                    pod.status.as_ref(),
                    &config.node_ip,
                    &config.image,
                    now,
                );
                if fingerprint(Some(&status)) != fingerprint(pod.status.as_ref()) {
                    actions.push(Action::Status(name, Box::new(status)));
                }
            }
        }
    }
    let wanted: Vec<String> = config.components.iter().map(|c| c.pod_name(node)).collect();
    for pod in existing {
        let Some(name) = pod.metadata.name.as_deref() else {
            continue;
        };
        if is_ours(pod, node) && !wanted.iter().any(|w| w == name) {
            actions.push(Action::Delete(name.to_string()));
        }
    }
    actions
}

/// Publishes the mirror pods of `config.components` until `shutdown`, and
/// registers their logs with the kubelet's log server.
pub async fn run(
    client: kube::Client,
    config: MirrorConfig,
    logs: Arc<LogRegistry>,
    shutdown: CancellationToken,
) {
    let names: Vec<&'static str> = config.components.iter().map(|c| c.name).collect();
    let component_logs = match component_logs::start_writer(
        &names,
        &config.logs_dir,
        config.max_log_bytes,
        shutdown.clone(),
    )
    .await
    {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "opening the component logs failed; mirror pods show no logs");
            HashMap::new()
        }
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let nodes: Api<Node> = Api::all(client);
    let watch = watcher::Config::default()
        .any_semantic()
        .fields(&format!("spec.nodeName={}", config.node_name));
    let (reader, writer) = kube::runtime::reflector::store::<Pod>();
    let mut stream = Box::pin(kube::runtime::reflector::reflector(
        writer,
        watcher(pods.clone(), watch).default_backoff(),
    ));
    let mut tick = tokio::time::interval(config.resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut health: HashMap<&'static str, Health> = HashMap::new();
    let mut node_uid: Option<String> = None;
    let mut listed = false;
    // uid each mirror pod's logs are registered under.
    let mut registered: HashMap<String, String> = HashMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {
                health = probe_all(&config.components).await;
                // The Node may be registered late, or replaced.
                match nodes.get_opt(&config.node_name).await {
                    Ok(Some(n)) => node_uid = n.metadata.uid,
                    Ok(None) => node_uid = None,
                    Err(e) => tracing::debug!(error = %e, "reading the node for its mirror pods"),
                }
            }
            event = stream.next() => match event {
                None => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "watching mirror pods; retrying");
                    continue;
                }
                Some(Ok(watcher::Event::InitDone)) => listed = true,
                Some(Ok(_)) => {}
            },
        }
        // Acting before the first list completes would recreate what exists.
        let Some(uid) = node_uid.as_deref().filter(|_| listed) else {
            continue;
        };
        let existing: Vec<Pod> = reader.state().iter().map(|p| (**p).clone()).collect();
        register_logs(&existing, &config, &component_logs, &logs, &mut registered);
        for action in plan(&config, uid, &existing, &health, jiff::Timestamp::now()) {
            apply(&pods, action).await;
        }
    }
}

async fn probe_all(components: &[Component]) -> HashMap<&'static str, Health> {
    let probes = components.iter().map(|c| {
        let probe = c.probe.clone();
        async move {
            let h = match tokio::time::timeout(PROBE_TIMEOUT * 2, probe()).await {
                Ok(h) => h,
                Err(_) => Health::not_ready("the health check timed out"),
            };
            (c.name, h)
        }
    });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .collect()
}

/// Points the log server at the component logs for the current uid of each
/// mirror pod (a recreated pod has a new one).
fn register_logs(
    existing: &[Pod],
    config: &MirrorConfig,
    component_logs: &HashMap<&'static str, ComponentLog>,
    logs: &LogRegistry,
    registered: &mut HashMap<String, String>,
) {
    for c in &config.components {
        let name = c.pod_name(&config.node_name);
        let Some(uid) = existing
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
            .and_then(|p| p.metadata.uid.clone())
        else {
            continue;
        };
        let Some(log) = component_logs.get(c.name) else {
            continue;
        };
        if registered.get(&name) == Some(&uid) {
            continue;
        }
        logs.set(
            NAMESPACE,
            &name,
            &uid,
            &c.label(),
            ContainerLogs {
                dir: log.dir.clone(),
                current: Some(log.current.clone()),
                previous: log.previous.clone(),
                waiting_reason: None,
            },
        );
        registered.insert(name, uid);
    }
}

async fn apply(pods: &Api<Pod>, action: Action) {
    match action {
        Action::Create(pod) => {
            let name = pod.metadata.name.clone().unwrap_or_default();
            match pods.create(&PostParams::default(), &pod).await {
                Ok(_) => tracing::info!(pod = %name, "created mirror pod"),
                // The watch has not shown it yet, or a deletion is pending.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => tracing::warn!(pod = %name, error = %e, "creating mirror pod failed"),
            }
        }
        Action::Delete(name) => match pods
            .delete(&name, &DeleteParams::default().grace_period(0))
            .await
        {
            Ok(_) => tracing::info!(pod = %name, "deleted mirror pod"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => tracing::warn!(pod = %name, error = %e, "deleting mirror pod failed"),
        },
        Action::Status(name, status) => {
            let patch = serde_json::json!({ "status": status });
            if let Err(e) = pods
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::debug!(pod = %name, error = %e, "updating mirror pod status failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    fn component(name: &'static str) -> Component {
        Component::new(
            name,
            Tier::ControlPlane,
            at(100),
            constant(Health::ready(None)),
        )
    }

    fn config(components: Vec<Component>) -> MirrorConfig {
        MirrorConfig::new("n1", "10.0.0.1", components, "/nonexistent")
    }

    fn stored(mut pod: Pod, uid: &str) -> Pod {
        pod.metadata.uid = Some(uid.to_string());
        pod
    }

    #[test]
    fn mirror_pods_look_like_kubeadm_static_pods() {
        let c = component(SCHEDULER);
        let pod = desired_pod(&c, "n1", "node-uid", "wasmkube:1");
        assert_eq!(pod.metadata.name.as_deref(), Some("wasmkube-scheduler-n1"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-system"));
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels["component"], "wasmkube-scheduler");
        assert_eq!(labels["tier"], "control-plane");
        assert!(is_mirror_pod(&pod));
        assert!(is_ours(&pod, "n1"));
        assert!(!is_ours(&pod, "n2"));
        let owner = &pod.metadata.owner_references.clone().unwrap_or_default()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Node", "node-uid")
        );
        let spec = pod.spec.clone().unwrap_or_default();
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert_eq!(spec.containers[0].name, "wasmkube-scheduler");
        // The hash follows the content: a new Node uid replaces the pod.
        let again = desired_pod(&c, "n1", "node-uid", "wasmkube:1");
        assert_eq!(mirror_hash(&pod), mirror_hash(&again));
        let other = desired_pod(&c, "n1", "new-uid", "wasmkube:1");
        assert_ne!(mirror_hash(&pod), mirror_hash(&other));
        assert!(!is_mirror_pod(&Pod::default()));
    }

    #[test]
    fn missing_pods_are_created_and_stale_ones_deleted() {
        let cfg = config(vec![component(APISERVER), component(SCHEDULER)]);
        let datastore = stored(
            desired_pod(&component(DATASTORE), "n1", "u", "wasmkube:1"),
            "d",
        );
        // Someone else's pod on the node, in kube-system: not ours to delete.
        let mut user_pod = Pod::default();
        user_pod.metadata.name = Some("coredns".into());
        let actions = plan(&cfg, "u", &[datastore, user_pod], &HashMap::new(), at(200));
        let created: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Create(p) => p.metadata.name.clone(),
                _ => None,
            })
            .collect();
        assert_eq!(created, ["wasmkube-apiserver-n1", "wasmkube-scheduler-n1"]);
        assert!(actions.contains(&Action::Delete("wasmkube-datastore-n1".into())));
        assert_eq!(actions.len(), 3);
    }

    #[test]
    fn status_is_written_only_when_it_changed() {
        let c = component(SCHEDULER);
        let cfg = config(vec![c.clone()]);
        let mut pod = stored(desired_pod(&c, "n1", "u", &cfg.image), "p");
        let mut health = HashMap::from([(SCHEDULER, Health::ready(Some("leading".into())))]);
        let actions = plan(&cfg, "u", std::slice::from_ref(&pod), &health, at(200));
        let [Action::Status(name, status)] = actions.as_slice() else {
            panic!("expected one status write: {actions:?}");
        };
        assert_eq!(name, "wasmkube-scheduler-n1");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let cs = &status.container_statuses.clone().unwrap_or_default()[0];
        assert!(cs.ready);
        assert_eq!(cs.restart_count, 0);
        let ready = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (ready.status.as_str(), ready.message.as_deref()),
            ("True", Some("leading"))
        );

        // Stored as written: nothing more to do, later too.
        pod.status = Some((**status).clone());
        assert!(plan(&cfg, "u", std::slice::from_ref(&pod), &health, at(300)).is_empty());

        // Health changes: one write, with a new transition time.
        health.insert(SCHEDULER, Health::not_ready("stuck"));
        let actions = plan(&cfg, "u", std::slice::from_ref(&pod), &health, at(400));
        let [Action::Status(_, status)] = actions.as_slice() else {
            panic!("expected one status write: {actions:?}");
        };
        let ready = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .cloned()
            .unwrap_or_default();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.last_transition_time, Some(Time(at(400))));
    }

    #[test]
    fn a_new_process_counts_as_a_restart() {
        let old = component(APISERVER);
        let before = desired_status(&old, &Health::ready(None), None, "ip", "img", at(100));
        let new = Component::new(
            APISERVER,
            Tier::ControlPlane,
            at(500),
            constant(Health::default()),
        );
        let after = desired_status(
            &new,
            &Health::ready(None),
            Some(&before),
            "ip",
            "img",
            at(500),
        );
        let count =
            |s: &PodStatus| s.container_statuses.clone().unwrap_or_default()[0].restart_count;
        assert_eq!(count(&before), 0);
        assert_eq!(count(&after), 1);
        // The same process again: no restart.
        let same = desired_status(
            &new,
            &Health::ready(None),
            Some(&after),
            "ip",
            "img",
            at(600),
        );
        assert_eq!(count(&same), 1);
    }

    #[test]
    fn a_sub_second_start_read_back_from_the_api_is_the_same_process() {
        let started = at(100)
            .checked_add(jiff::SignedDuration::from_millis(700))
            .unwrap_or(at(100));
        let c = Component::new(
            APISERVER,
            Tier::ControlPlane,
            started,
            constant(Health::default()),
        );
        let first = desired_status(&c, &Health::ready(None), None, "ip", "img", at(101));
        // What the kubelet reads back: the status as the API stored it.
        let stored: PodStatus = serde_json::to_value(&first)
            .and_then(serde_json::from_value)
            .unwrap_or_default();
        let again = desired_status(
            &c,
            &Health::ready(None),
            Some(&stored),
            "ip",
            "img",
            at(130),
        );
        assert_eq!(
            again.container_statuses.clone().unwrap_or_default()[0].restart_count,
            0
        );
        assert_eq!(
            again, stored,
            "an unchanged component needs no status write"
        );
    }

    #[test]
    fn deleted_or_changed_pods_are_replaced() {
        let c = component(APISERVER);
        let cfg = config(vec![c.clone()]);
        let mut deleting = stored(desired_pod(&c, "n1", "u", &cfg.image), "p");
        deleting.metadata.deletion_timestamp = Some(Time(at(1)));
        let actions = plan(&cfg, "u", &[deleting], &HashMap::new(), at(2));
        // Finish the deletion; the next pass (pod gone) creates it again.
        assert_eq!(actions, [Action::Delete("wasmkube-apiserver-n1".into())]);

        let outdated = stored(desired_pod(&c, "n1", "old-node", &cfg.image), "p");
        let actions = plan(&cfg, "u", &[outdated], &HashMap::new(), at(2));
        assert_eq!(actions.len(), 2);
        assert_eq!(actions[0], Action::Delete("wasmkube-apiserver-n1".into()));
        assert!(matches!(&actions[1], Action::Create(_)));
    }
}
