//! wasmkube-scheduler: assigns pending pods to nodes.
//!
//! Like the Kubernetes scheduler it is only an API client: it lists and
//! watches Pods and Nodes into local caches, keeps a de-duplicated queue of
//! pods without a node, filters the nodes a pod fits on (readiness, cordon,
//! taints, node selector and affinity, pod count, CPU and memory), scores the
//! rest (spreading the replicas of one controller owner over nodes first,
//! then least-allocated plus balanced), and writes the decision through the
//! `pods/binding` subresource. A pod is *assumed* on its node from the
//! moment it is placed until the watch shows the binding, so a burst of pods
//! does not overcommit a node the cache still shows as empty, and the binding
//! request runs in its own task (as kube-scheduler's binding cycle does):
//! the next pod is placed while the store commits the last one's binding.
//! When nothing fits it records a `FailedScheduling` Event and retries with
//! backoff, sooner when the cluster changes.
//!
//! Each node's load (requests, pod count, replicas per owner) is kept up to
//! date from the pod watch in [`usage`], as kube-scheduler's cache does, so
//! a scheduling cycle costs O(nodes) however many pods the cluster holds;
//! what a node offers is read from it once per update of the node. In a
//! cluster of 100 nodes or more a cycle filters only until a share of them
//! fits (kube-scheduler's `percentageOfNodesToScore`, adaptive by default,
//! see [`fit::feasible_nodes_to_find`]), the next cycle going on from where
//! it stopped. Events are queued and written in the background
//! ([`events`]), never waited for.
//!
//! Placement logic lives in [`fit`] (pure), the queue in [`queue`], the
//! per-node load in [`usage`], quantity parsing in [`quantity`]; this file
//! holds the watch loop.

pub mod events;
pub mod fit;
pub mod quantity;
pub mod queue;
pub mod usage;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::events::{EventType, Recorder, pod_key};
use crate::fit::{Placement, PodUsage};
use crate::queue::SchedulingQueue;
use crate::usage::UsageCache;

/// Scheduler errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A watch stream ended, which the watcher never does on its own.
    #[error("the {0} watch ended unexpectedly")]
    WatchEnded(&'static str),
}

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Pods whose `spec.schedulerName` is this (or empty) are ours.
    pub scheduler_name: String,
    /// Reported as the Event `reportingInstance`.
    pub instance: String,
    /// First retry delay for a pod that fits nowhere.
    pub initial_backoff: Duration,
    /// Retry delay cap.
    pub max_backoff: Duration,
    /// How long a pod we bound counts against its node while the watch has
    /// not yet shown the binding.
    pub assumed_ttl: Duration,
    /// Share of the nodes a cycle filters before it stops looking, in
    /// percent (kube-scheduler's `percentageOfNodesToScore`): 0 adapts it
    /// to the cluster's size (50 % less 1 % per 125 nodes, at least 5 %, and
    /// never fewer than 100 nodes), 100 filters every node.
    pub percentage_of_nodes_to_score: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler_name: "default-scheduler".to_string(),
            instance: "default-scheduler".to_string(),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            assumed_ttl: Duration::from_secs(30),
            percentage_of_nodes_to_score: 0,
        }
    }
}

/// Is `pod` waiting for this scheduler?
pub fn is_pending(pod: &Pod, scheduler_name: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let unbound = spec.node_name.as_deref().unwrap_or("").is_empty();
    let ours = matches!(spec.scheduler_name.as_deref(), None | Some(""))
        || spec.scheduler_name.as_deref() == Some(scheduler_name);
    unbound && ours && pod.metadata.deletion_timestamp.is_none() && fit::occupies_node(pod)
}

fn bound_node(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

struct Assumed {
    node: String,
    at: Instant,
}

/// Binding requests in flight at once. Each waits for one store commit, so
/// a few dozen cover a burst while the loop keeps placing pods; beyond that
/// the loop waits for a slot, which bounds the tasks and the outcome queue.
const MAX_BINDINGS_IN_FLIGHT: usize = 32;

/// How often assumptions are checked for expiry (their TTL is 30 s by
/// default, so this is far finer than it needs to be).
const EXPIRY_SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// What a binding task reports back to the loop.
struct BindOutcome {
    key: String,
    node: String,
    result: Result<(), kube::Error>,
}

struct Scheduler {
    client: Client,
    config: SchedulerConfig,
    pods: Store<Pod>,
    /// Nodes of a relist in progress, until its `InitDone`.
    node_relist: Option<Vec<Arc<Node>>>,
    /// Where the next cycle starts filtering (see [`fit::Search`]).
    next_start: usize,
    queue: SchedulingQueue,
    assumed: HashMap<String, Assumed>,
    /// When the assumptions are next checked for expiry.
    next_expiry_scan: Instant,
    /// Each node's load from the pods bound or assumed on it.
    usage: UsageCache,
    recorder: Recorder,
    pods_synced: bool,
    nodes_synced: bool,
    bindings: Arc<Semaphore>,
    outcomes: mpsc::Sender<BindOutcome>,
}

/// Runs the scheduler until `shutdown` is cancelled.
pub async fn run(
    client: Client,
    config: SchedulerConfig,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let pod_events = reflector::reflector(
        pod_writer,
        watcher::watcher(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().any_semantic(),
        ),
    )
    .default_backoff();
    let node_events = watcher::watcher(
        Api::<Node>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff();
    let mut pod_events = std::pin::pin!(pod_events);
    let mut node_events = std::pin::pin!(node_events);
    // Every task holds a slot until it has sent its outcome, so the channel
    // (as large as the slots) never makes a task wait.
    let (outcomes, mut outcome_rx) = mpsc::channel(MAX_BINDINGS_IN_FLIGHT);

    let mut s = Scheduler {
        recorder: Recorder::new(client.clone(), &config.scheduler_name, &config.instance),
        client,
        queue: SchedulingQueue::new(config.initial_backoff, config.max_backoff),
        config,
        pods: pod_store,
        node_relist: None,
        next_start: 0,
        assumed: HashMap::new(),
        next_expiry_scan: Instant::now(),
        usage: UsageCache::default(),
        pods_synced: false,
        nodes_synced: false,
        bindings: Arc::new(Semaphore::new(MAX_BINDINGS_IN_FLIGHT)),
        outcomes,
    };
    tracing::info!(name = %s.config.scheduler_name, "scheduler started");
    loop {
        let now = Instant::now();
        let synced = s.pods_synced && s.nodes_synced;
        let work = synced && s.queue.has_ready(now);
        let deadline = s.queue.next_deadline().filter(|_| synced && !work);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                tracing::info!("scheduler stopping");
                return Ok(());
            }
            ev = pod_events.next() => match ev {
                Some(Ok(ev)) => s.on_pod_event(ev),
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                None => return Err(Error::WatchEnded("pod")),
            },
            ev = node_events.next() => match ev {
                Some(Ok(ev)) => s.on_node_event(ev),
                Some(Err(e)) => tracing::warn!(error = %e, "node watch failed; retrying"),
                None => return Err(Error::WatchEnded("node")),
            },
            Some(outcome) = outcome_rx.recv() => s.on_bind_outcome(outcome),
            _ = std::future::ready(()), if work => {
                if let Some(key) = s.queue.pop(now) {
                    s.schedule_one(&key).await;
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {}
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Scheduler {
    fn on_pod_event(&mut self, ev: Event<Pod>) {
        match ev {
            Event::Init => {}
            // The reflector's store holds the fresh list from now on (a
            // relist replaces it whole, without Delete events for pods gone
            // meanwhile): count every node's load again from it.
            Event::InitDone => {
                self.pods_synced = true;
                self.rebuild_usage();
            }
            Event::InitApply(pod) => self.on_pod_applied(&pod),
            Event::Apply(pod) => {
                self.on_pod_applied(&pod);
                self.account(&pod_key(&pod));
            }
            Event::Delete(pod) => {
                let key = pod_key(&pod);
                self.queue.forget(&key);
                self.recorder.forget(&key);
                if self.assumed.remove(&key).is_some() || bound_node(&pod).is_some() {
                    self.queue.wake_all();
                }
                self.account(&key);
            }
        }
    }

    fn on_pod_applied(&mut self, pod: &Pod) {
        let key = pod_key(pod);
        if is_pending(pod, &self.config.scheduler_name) {
            if !self.assumed.contains_key(&key) {
                self.queue.add(&key);
            }
            return;
        }
        self.queue.forget(&key);
        if let Some(node) = bound_node(pod) {
            // The binding is visible now; the cache accounts for it.
            if self.assumed.get(&key).is_some_and(|a| a.node == node) {
                self.assumed.remove(&key);
            }
            if !fit::occupies_node(pod) {
                self.queue.wake_all();
            }
        }
    }

    /// Where pod `key` counts now: on its node once the cache shows it
    /// bound, on the node we chose while its binding is in flight, nowhere
    /// when it is finished, gone or unplaced.
    fn placement_of(&self, key: &str) -> Option<(String, PodUsage)> {
        let (namespace, name) = key.split_once('/')?;
        let pod = self.pods.get(&ObjectRef::new(name).within(namespace))?;
        if !fit::occupies_node(&pod) {
            return None;
        }
        let node = match bound_node(&pod) {
            Some(node) => node.to_owned(),
            None => self.assumed.get(key)?.node.clone(),
        };
        Some((node, PodUsage::of(&pod)))
    }

    /// Brings pod `key`'s share of its node's load up to date.
    fn account(&mut self, key: &str) {
        let placed = self.placement_of(key);
        self.usage.set(key, placed);
    }

    fn rebuild_usage(&mut self) {
        self.usage.clear_pods();
        for pod in self.pods.state() {
            self.account(&pod_key(&pod));
        }
    }

    fn on_node_event(&mut self, ev: Event<Node>) {
        match ev {
            Event::Init => self.node_relist = Some(Vec::new()),
            Event::InitApply(node) => self
                .node_relist
                .get_or_insert_default()
                .push(Arc::new(node)),
            // A relist replaces the nodes whole: nodes gone meanwhile get
            // no Delete event.
            Event::InitDone => {
                let nodes = self.node_relist.take().unwrap_or_default();
                self.usage.replace_nodes(nodes);
                self.nodes_synced = true;
                self.queue.wake_all();
            }
            Event::Apply(node) => {
                self.usage.set_node(Arc::new(node));
                self.queue.wake_all();
            }
            Event::Delete(node) => {
                self.usage
                    .remove_node(node.metadata.name.as_deref().unwrap_or(""));
                self.queue.wake_all();
            }
        }
    }

    /// One scheduling cycle for one pod, reading only the caches.
    async fn schedule_one(&mut self, key: &str) {
        let Some((namespace, name)) = key.split_once('/') else {
            return;
        };
        let Some(pod) = self.pods.get(&ObjectRef::new(name).within(namespace)) else {
            self.queue.forget(key);
            return;
        };
        if !is_pending(&pod, &self.config.scheduler_name) || self.assumed.contains_key(key) {
            self.queue.forget(key);
            return;
        }
        let now = Instant::now();
        self.expire_assumptions(now);

        let mut hasher = DefaultHasher::new();
        pod.metadata.uid.as_deref().unwrap_or(key).hash(&mut hasher);
        let placement = self.usage.place(
            &pod,
            hasher.finish(),
            self.config.percentage_of_nodes_to_score,
            &mut self.next_start,
        );

        match placement {
            Placement::Node(node) => self.bind(&pod, key, &node).await,
            Placement::Unschedulable(message) => {
                let delay = self.queue.requeue_with_backoff(key, now);
                tracing::debug!(pod = key, %message, ?delay, "pod does not fit");
                self.mark_unschedulable(&pod, &message).await;
                self.recorder
                    .record(&pod, EventType::Warning, "FailedScheduling", &message);
            }
        }
    }

    /// Forgets the assumptions whose binding the watch has not shown within
    /// `assumed_ttl` (their node no longer counts them), at most once per
    /// [`EXPIRY_SCAN_INTERVAL`]: the scan walks every assumption.
    fn expire_assumptions(&mut self, now: Instant) {
        if now < self.next_expiry_scan {
            return;
        }
        self.next_expiry_scan = now + EXPIRY_SCAN_INTERVAL;
        let ttl = self.config.assumed_ttl;
        let expired: Vec<String> = self
            .assumed
            .iter()
            .filter(|(_, a)| now.duration_since(a.at) >= ttl)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            self.assumed.remove(&k);
            self.account(&k);
        }
    }

    /// Assumes `pod` on `node` and sends the binding from a task of its
    /// own; [`on_bind_outcome`](Self::on_bind_outcome) handles the answer.
    async fn bind(&mut self, pod: &Pod, key: &str, node: &str) {
        let Ok(slot) = self.bindings.clone().acquire_owned().await else {
            return;
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                ..Default::default()
            },
        };
        // Counted on its node from now on, so the pods placed while the
        // binding is in flight see the node as it will be.
        self.queue.forget(key);
        self.assumed.insert(
            key.to_string(),
            Assumed {
                node: node.to_string(),
                at: Instant::now(),
            },
        );
        self.account(key);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let recorder = self.recorder.clone();
        let outcomes = self.outcomes.clone();
        let (pod, key, node) = (pod.clone(), key.to_string(), node.to_string());
        tokio::spawn(async move {
            let result = api
                .create_subresource::<_, serde_json::Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await
                .map(|_| ());
            if result.is_ok() {
                tracing::info!(pod = %key, node = %node, "bound");
                recorder.forget(&key);
                let message = format!("Successfully assigned {namespace}/{name} to {node}");
                recorder.record(&pod, EventType::Normal, "Scheduled", &message);
            }
            let _ = outcomes.send(BindOutcome { key, node, result }).await;
            drop(slot);
        });
    }

    fn on_bind_outcome(&mut self, outcome: BindOutcome) {
        let BindOutcome { key, node, result } = outcome;
        match result {
            // The assumption stands until the watch shows the binding.
            Ok(()) => {}
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
                // Bound by someone else, or deleted: nothing left to do; the
                // cache counts the pod wherever it really is.
                tracing::debug!(pod = %key, code = status.code, "binding skipped");
                self.drop_assumption(&key, &node);
                self.queue.forget(&key);
            }
            Err(e) => {
                self.drop_assumption(&key, &node);
                let delay = self.queue.requeue_with_backoff(&key, Instant::now());
                tracing::warn!(pod = %key, node = %node, error = %e, ?delay, "binding failed; will retry");
            }
        }
    }

    /// Stops counting `key` on `node` (the binding did not happen).
    fn drop_assumption(&mut self, key: &str, node: &str) {
        if self.assumed.get(key).is_some_and(|a| a.node == node) {
            self.assumed.remove(key);
            self.account(key);
        }
    }

    /// Sets the PodScheduled=False condition `kubectl describe` shows, unless
    /// it already says the same.
    async fn mark_unschedulable(&self, pod: &Pod, message: &str) {
        let current = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
        if current.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(message)
        }) {
            return;
        }
        let (Some(name), Some(namespace)) = (
            pod.metadata.name.as_deref(),
            pod.metadata.namespace.as_deref(),
        ) else {
            return;
        };
        let patch = serde_json::json!({
            "status": {
                "conditions": [{
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastProbeTime": null,
                    "lastTransitionTime": jiff::Timestamp::now().to_string(),
                }]
            }
        });
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        if let Err(e) = api
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            tracing::debug!(pod = name, error = %e, "could not set PodScheduled condition");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(node: Option<&str>, scheduler: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(Into::into),
                scheduler_name: scheduler.map(Into::into),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn pending_means_unbound_ours_and_alive() {
        assert!(is_pending(&pod(None, None), "default-scheduler"));
        assert!(is_pending(&pod(Some(""), Some("")), "default-scheduler"));
        assert!(is_pending(
            &pod(None, Some("default-scheduler")),
            "default-scheduler"
        ));
        assert!(!is_pending(&pod(None, Some("other")), "default-scheduler"));
        assert!(!is_pending(&pod(Some("n1"), None), "default-scheduler"));
        let mut deleting = pod(None, None);
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert!(!is_pending(&deleting, "default-scheduler"));
        let mut failed = pod(None, None);
        failed.status = Some(PodStatus {
            phase: Some("Failed".into()),
            ..Default::default()
        });
        assert!(!is_pending(&failed, "default-scheduler"));
    }
}
