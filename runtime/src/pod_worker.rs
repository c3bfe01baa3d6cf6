//! Pod workers: one tokio task per pod bound to this node.
//!
//! The dispatcher ([`run_pods`]) watches the pods with
//! `spec.nodeName=<node>` into a reflector store and, for every key the
//! watch touches (and on a periodic resync), hands the latest object to
//! that pod's worker through a `watch` channel — a one-slot, latest-value
//! queue, so a worker never sees a backlog, only the current pod. Workers
//! are level-triggered: each pass starts what should run, stops what should
//! not, and reports the status recomputed from scratch.
//!
//! A worker owns its containers' tasks. It pulls and prepares modules,
//! starts instances through the [`Sandbox`] seam, restarts them by the
//! pod's restart policy with the kubelet's back-off, and on deletion stops
//! them after the grace period, reports the final status, deletes the pod
//! object (grace 0, uid precondition) and removes the pod's files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodStatus, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::events::{EventSink, EventType, PodEvent};
use crate::local_state::LocalState;
use crate::logs::{ContainerLog, ContainerLogs, LogRegistry};
use crate::module_cache::{
    LocalModule, ModuleSource, PullError, PullPolicy, api_message, go_duration,
};
use crate::oci::Keyring;
use crate::sandbox::{ContainerRun, DEFAULT_MEMORY_LIMIT, ExitStatus, Sandbox, SandboxError};
use crate::status::{
    self, ContainerRecord, State, StatusContext, Terminated, backoff_message, next_backoff,
    should_restart,
};
use wasmkube_api::image::ImageRef;

/// How often every pod is synced even without watch events.
const RESYNC: Duration = Duration::from_secs(60);
/// How long `ErrImagePull` shows before it turns into `ImagePullBackOff`.
const PULL_ERROR_SHOWN: Duration = Duration::from_secs(2);

/// What pod workers need from the apiserver; the kubelet's implementation
/// is [`KubePodApi`], tests use a fake.
#[async_trait::async_trait]
pub trait PodApi: Send + Sync + 'static {
    /// Writes `status` to `pods/{name}/status`.
    async fn patch_status(
        &self,
        namespace: &str,
        name: &str,
        status: &PodStatus,
    ) -> Result<(), String>;
    /// Deletes the pod object for good (grace 0, uid precondition).
    async fn delete(&self, namespace: &str, name: &str, uid: &str) -> Result<(), String>;
    /// Reads a ConfigMap's data; `None` when it does not exist.
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String>;
    /// Reads a Secret's data; `None` when it does not exist.
    async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String>;
    /// Keeps `status`, just computed for `pod`, where a restarted kubelet
    /// finds it (whether or not it reaches the apiserver). Nothing by
    /// default.
    async fn save_status(&self, pod: &Pod, status: &PodStatus) {
        let _ = (pod, status);
    }
}

/// [`PodApi`] over `kube::Client`, with the node's local state as the
/// fallback for ConfigMaps and Secrets when the apiserver cannot be reached.
#[derive(Clone)]
pub struct KubePodApi {
    client: kube::Client,
    local: Option<crate::local_state::LocalState>,
}

impl KubePodApi {
    /// Wraps a client.
    pub fn new(client: kube::Client) -> KubePodApi {
        KubePodApi {
            client,
            local: None,
        }
    }

    /// Wraps a client; what is read is also kept in `local`, and read from
    /// there while the apiserver is unreachable.
    pub fn with_local_state(
        client: kube::Client,
        local: crate::local_state::LocalState,
    ) -> KubePodApi {
        KubePodApi {
            client,
            local: Some(local),
        }
    }
}

/// What the local copy of an object has to say when reading it from the
/// apiserver failed with `e`: the copy when the apiserver was unreachable,
/// else the error.
async fn fall_back<T, F, Fut>(
    local: Option<&crate::local_state::LocalState>,
    e: &kube::Error,
    what: String,
    read: F,
) -> Result<Option<T>, String>
where
    F: FnOnce(crate::local_state::LocalState) -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    if let Some(local) = local
        && crate::local_state::is_unreachable(e)
        && let Some(data) = read(local.clone()).await
    {
        tracing::warn!(object = %what, error = %e, "the apiserver is unreachable: using the node's stored copy");
        return Ok(Some(data));
    }
    Err(api_message(e))
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

#[async_trait::async_trait]
impl PodApi for KubePodApi {
    async fn patch_status(
        &self,
        namespace: &str,
        name: &str,
        status: &PodStatus,
    ) -> Result<(), String> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let patch = serde_json::json!({ "status": status });
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| api_message(&e))
    }

    async fn delete(&self, namespace: &str, name: &str, uid: &str) -> Result<(), String> {
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
            Ok(_) => Ok(()),
            // Already gone, or replaced by a new pod of the same name.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(api_message(&e)),
        }
    }

    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        match api.get(name).await {
            Ok(cm) => {
                let data = cm.data.unwrap_or_default();
                if let Some(local) = &self.local
                    && let Err(e) = local.save_config_map(namespace, name, &data).await
                {
                    tracing::warn!(configmap = %name, error = %e, "storing a configmap locally failed");
                }
                Ok(Some(data))
            }
            // The apiserver answered: the object is gone, and so is the copy.
            Err(e) if not_found(&e) => {
                if let Some(local) = &self.local {
                    local.remove_config_map(namespace, name).await;
                }
                Ok(None)
            }
            Err(e) => {
                fall_back(
                    self.local.as_ref(),
                    &e,
                    format!("configmap {namespace}/{name}"),
                    |l| async move { l.config_map(namespace, name).await },
                )
                .await
            }
        }
    }

    async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        match api.get(name).await {
            Ok(s) => {
                let mut data: BTreeMap<String, Vec<u8>> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                for (k, v) in s.string_data.unwrap_or_default() {
                    data.insert(k, v.into_bytes());
                }
                if let Some(local) = &self.local
                    && let Err(e) = local.save_secret(namespace, name, &data).await
                {
                    tracing::warn!(secret = %name, error = %e, "storing a secret locally failed");
                }
                Ok(Some(data))
            }
            Err(e) if not_found(&e) => {
                if let Some(local) = &self.local {
                    local.remove_secret(namespace, name).await;
                }
                Ok(None)
            }
            Err(e) => {
                fall_back(
                    self.local.as_ref(),
                    &e,
                    format!("secret {namespace}/{name}"),
                    |l| async move { l.secret(namespace, name).await },
                )
                .await
            }
        }
    }

    async fn save_status(&self, pod: &Pod, status: &PodStatus) {
        if let Some(local) = &self.local
            && let Some(uid) = pod.metadata.uid.as_deref()
            && let Err(e) = local.save_pod_status(uid, status).await
        {
            tracing::warn!(pod = %status::pod_ref(pod), error = %e, "storing the pod status locally failed");
        }
    }
}

/// Everything a pod worker uses, shared by all workers.
pub struct WorkerContext {
    /// This node.
    pub node_name: String,
    /// The node's IP, reported as host and pod IP.
    pub node_ip: String,
    /// `<data>/pods` holds one folder per pod uid.
    pub pods_dir: PathBuf,
    /// The container runtime.
    pub sandbox: Arc<dyn Sandbox>,
    /// Where modules come from.
    pub modules: Arc<dyn ModuleSource>,
    /// The apiserver.
    pub api: Arc<dyn PodApi>,
    /// Event recorder.
    pub events: Arc<dyn EventSink>,
    /// Log index for the HTTP server.
    pub logs: Arc<LogRegistry>,
    /// Sets up, refreshes and removes pod volumes.
    pub volumes: Arc<crate::volumes::VolumeManager>,
    /// Usage figures for the HTTP server's stats endpoints.
    pub stats: Arc<crate::stats::StatsRegistry>,
    /// The node's HTTP containers, where HTTP pods register.
    pub http: crate::http::HttpPods,
    /// Cap of one log file.
    pub max_log_bytes: u64,
    /// Crash-loop back-off between restarts.
    pub restart_backoff: status::RestartBackoff,
}

struct Running {
    stop: CancellationToken,
    /// Reports the run's usage while it lasts.
    _stats: crate::stats::ContainerRegistration,
}

/// A worker that ends for any reason (returns, panics, is aborted) drops its
/// slots: its guests must not outlive it with nobody left to stop them.
impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The longest grace period honoured. The API accepts any non-negative
/// int64 (`DELETE ?gracePeriodSeconds=`, older objects), so the deadline
/// arithmetic saturates: ten years is "never" for a pod, and keeps `Instant`
/// far from overflow.
const MAX_GRACE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `now + seconds`, with negative seconds as 0 and huge ones as [`MAX_GRACE`].
fn grace_deadline(now: Instant, seconds: i64) -> Instant {
    let grace = Duration::from_secs(u64::try_from(seconds).unwrap_or(0)).min(MAX_GRACE);
    now.checked_add(grace).unwrap_or(now)
}

#[derive(Default)]
struct Slot {
    running: Option<Running>,
    /// When the next start (restart, pull retry) is due.
    next_start: Option<Instant>,
    /// When `ErrImagePull` turns into `ImagePullBackOff`.
    flip_at: Option<Instant>,
    /// Last crash back-off.
    backoff: Option<Duration>,
    /// Last pull / create back-off.
    retry_backoff: Option<Duration>,
    /// The container has finished for good.
    done: bool,
    /// Started at least once (so the next start is a restart).
    started_once: bool,
    module: Option<LocalModule>,
}

struct Exit {
    index: usize,
    result: Result<ExitStatus, SandboxError>,
    started: Instant,
    started_at: jiff::Timestamp,
    container_id: String,
}

/// The kubelet's message for a pod past `spec.activeDeadlineSeconds`.
const DEADLINE_EXCEEDED_MESSAGE: &str =
    "Pod was active on the node longer than the specified deadline";

/// The state of one pod's worker.
struct Worker {
    ctx: Arc<WorkerContext>,
    pod: Arc<Pod>,
    uid: String,
    namespace: String,
    name: String,
    /// Init containers first, then the regular ones.
    records: Vec<ContainerRecord>,
    /// How many of `records` are init containers.
    n_init: usize,
    slots: Vec<Slot>,
    start_time: jiff::Timestamp,
    last_reported: Option<PodStatus>,
    /// The status last kept in the local state.
    last_saved: Option<PodStatus>,
    /// When a status write that failed (apiserver unreachable) is retried,
    /// and the back-off it waited.
    status_retry: Option<(Instant, Duration)>,
    exit_tx: mpsc::Sender<Exit>,
    /// Where the containers' probes report.
    probe_tx: mpsc::Sender<crate::probes::Update>,
    /// Cancelled when the pod is being deleted: its probes stop.
    probes_stop: CancellationToken,
    grace_deadline: Option<Instant>,
    /// Containers were told to stop (the grace period is over).
    killed: bool,
    /// When a failed final delete is retried.
    retry_at: Option<Instant>,
    /// The pod's volumes as set up so far.
    volumes: crate::volumes::PodVolumes,
    /// Reports the pod's usage while the worker lives.
    stats: crate::stats::PodRegistration,
    /// `spec.activeDeadlineSeconds` passed: the containers were stopped for
    /// good and the pod is `Failed` with reason `DeadlineExceeded`.
    deadline_exceeded: bool,
}

/// Runs one pod until it is deleted (then cleans up and returns), it
/// vanishes from the API (`vanished`), or the kubelet shuts down.
pub async fn run_pod(
    ctx: Arc<WorkerContext>,
    mut updates: watch::Receiver<Arc<Pod>>,
    vanished: CancellationToken,
    shutdown: CancellationToken,
) {
    let pod = updates.borrow_and_update().clone();
    let containers = all_containers(&pod);
    // Each container task sends exactly one exit, and at most one task per
    // container exists at a time, so this never fills.
    let (exit_tx, mut exit_rx) = mpsc::channel(containers.len().max(1));
    let (probe_tx, mut probe_rx) = mpsc::channel(crate::probes::UPDATE_QUEUE);
    let n_init = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .map_or(0, Vec::len);
    let mut worker = Worker::new(ctx, pod, &containers, n_init, exit_tx, probe_tx);
    for i in 0..containers.len() {
        worker.publish_logs(i, None);
    }
    let mut updates_open = true;
    loop {
        // `changed()` below marks the value seen, so always take the latest.
        worker.pod = updates.borrow_and_update().clone();
        let gone = vanished.is_cancelled();
        let deleting = gone || worker.pod.metadata.deletion_timestamp.is_some();
        if deleting {
            if worker.terminate(gone).await {
                return;
            }
        } else if shutdown.is_cancelled() {
            worker.stop_all();
            worker.drain(&mut exit_rx).await;
            return;
        } else {
            worker.check_deadline();
            worker.check_volumes().await;
            worker.sync().await;
            worker.report(false).await;
        }
        let wake = worker.next_wake();
        tokio::select! {
            r = updates.changed(), if updates_open => {
                if r.is_err() {
                    updates_open = false;
                }
            }
            Some(exit) = exit_rx.recv() => {
                let stopping = deleting
                    || shutdown.is_cancelled()
                    || worker.deadline_exceeded
                    || worker.volumes.eviction().is_some();
                worker.handle_exit(exit, stopping);
            }
            Some(update) = probe_rx.recv() => worker.handle_probe(update),
            () = sleep_until(wake) => {}
            () = vanished.cancelled(), if !gone => {}
            () = shutdown.cancelled(), if !shutdown.is_cancelled() => {}
        }
    }
}

/// `12.3 MiB`: module sizes in the pod's waiting message and events.
fn size_text(bytes: u64) -> String {
    // Display only: precision loss on huge sizes does not matter.
    #[allow(clippy::cast_precision_loss)]
    let mib = bytes as f64 / f64::from(1u32 << 20);
    format!("{mib:.1} MiB")
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Worker {
    fn new(
        ctx: Arc<WorkerContext>,
        pod: Arc<Pod>,
        containers: &[Container],
        n_init: usize,
        exit_tx: mpsc::Sender<Exit>,
        probe_tx: mpsc::Sender<crate::probes::Update>,
    ) -> Worker {
        let restart_policy = restart_policy(&pod).to_string();
        let status = pod.status.as_ref();
        let old_init = status
            .and_then(|s| s.init_container_statuses.clone())
            .unwrap_or_default();
        let old_regular = status
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        let mut records = Vec::new();
        let mut slots = Vec::new();
        for (i, c) in containers.iter().enumerate() {
            let init = i < n_init;
            let old = if init { &old_init } else { &old_regular };
            let mut slot = Slot::default();
            let record = match old.iter().find(|s| s.name == c.name) {
                Some(s) => {
                    let mut r = ContainerRecord::from_status(c, s);
                    slot.started_once = r.container_id.is_some();
                    let was_running = s.state.as_ref().is_some_and(|st| st.running.is_some());
                    if was_running {
                        // The instance died with the previous kubelet.
                        r.state = State::Terminated(Terminated {
                            exit_code: 137,
                            reason: "Error".into(),
                            message: Some("the kubelet restarted".into()),
                            started_at: None,
                            finished_at: jiff::Timestamp::now(),
                            container_id: r.container_id.clone(),
                        });
                    }
                    if let State::Terminated(t) = r.state.clone() {
                        if restarts(init, &restart_policy, t.exit_code) {
                            r.last_terminated = Some(t);
                            r.state = State::Waiting {
                                reason: "ContainerCreating".into(),
                                message: None,
                            };
                        } else {
                            slot.done = true;
                        }
                    }
                    r
                }
                None => {
                    let mut r = ContainerRecord::new(c);
                    if n_init > 0 && !init {
                        r.state = State::Waiting {
                            reason: "PodInitializing".into(),
                            message: None,
                        };
                    }
                    r
                }
            };
            records.push(record);
            slots.push(slot);
        }
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map_or_else(jiff::Timestamp::now, |t| t.0);
        let stats = ctx.stats.add_pod(
            crate::stats::PodReference {
                name: pod.metadata.name.clone().unwrap_or_default(),
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                uid: pod.metadata.uid.clone().unwrap_or_default(),
            },
            start_time,
        );
        let volumes = crate::volumes::PodVolumes::new(
            &pod,
            ctx.pods_dir
                .join(pod.metadata.uid.as_deref().unwrap_or_default()),
        );
        Worker {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            ctx,
            pod,
            records,
            n_init,
            slots,
            start_time,
            last_reported: None,
            last_saved: None,
            status_retry: None,
            exit_tx,
            probe_tx,
            probes_stop: CancellationToken::new(),
            grace_deadline: None,
            killed: false,
            retry_at: None,
            volumes,
            stats,
            deadline_exceeded: false,
        }
    }

    fn pod_dir(&self) -> PathBuf {
        self.ctx.pods_dir.join(&self.uid)
    }

    fn event(&self, container: Option<&str>, type_: EventType, reason: &str, message: String) {
        let mut event = PodEvent::new(&self.pod, container, type_, reason, message);
        if let Some(name) = container
            && self.records[..self.n_init].iter().any(|r| r.name == name)
        {
            event.field_path = Some(format!("spec.initContainers{{{name}}}"));
        }
        self.ctx.events.record(event);
    }

    fn publish_logs(&self, index: usize, current: Option<crate::logs::LogHandle>) {
        let record = &self.records[index];
        let dir = self.pod_dir().join(&record.name);
        let attempt = record.restart_count;
        let previous = (attempt > 0).then(|| dir.join(format!("{}.log", attempt - 1)));
        let waiting_reason = match &record.state {
            State::Waiting { reason, .. } => Some(reason.clone()),
            _ => None,
        };
        let existing = self
            .ctx
            .logs
            .lookup(&self.namespace, &self.name, &record.name, false)
            .ok()
            .map(|s| crate::logs::LogHandle {
                path: s.path,
                progress: s.progress.unwrap_or_else(finished_progress),
            })
            .or_else(|| {
                // Started by an earlier kubelet run: its last log is complete.
                record
                    .container_id
                    .is_some()
                    .then(|| crate::logs::LogHandle {
                        path: dir.join(format!("{attempt}.log")),
                        progress: finished_progress(),
                    })
            });
        self.ctx.logs.set(
            &self.namespace,
            &self.name,
            &self.uid,
            &record.name,
            ContainerLogs {
                dir,
                current: current.or(existing),
                previous,
                waiting_reason,
            },
        );
    }

    /// Starts every container that should run now.
    async fn sync(&mut self) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if let Some(flip) = slot.flip_at
                && flip <= now
            {
                slot.flip_at = None;
                if let State::Waiting { reason, message } = &self.records[i].state
                    && reason == "ErrImagePull"
                {
                    let image = self.records[i].image.clone();
                    let message = format!(
                        "Back-off pulling image \"{image}\": ErrImagePull: {}",
                        message.clone().unwrap_or_default()
                    );
                    self.records[i].state = State::Waiting {
                        reason: "ImagePullBackOff".into(),
                        message: Some(message),
                    };
                    let name = self.records[i].name.clone();
                    self.event(
                        Some(&name),
                        EventType::Normal,
                        "BackOff",
                        format!("Back-off pulling image \"{image}\""),
                    );
                    self.publish_logs(i, None);
                }
            }
            if !self.may_start(i) {
                continue;
            }
            let slot = &self.slots[i];
            if slot.running.is_some() || slot.done || slot.next_start.is_some_and(|t| t > now) {
                continue;
            }
            self.start(i).await;
        }
    }

    /// Init containers run one at a time, in order, each to success; the
    /// regular containers start once they all did.
    fn may_start(&self, i: usize) -> bool {
        let first_unfinished = (0..self.n_init).find(|&j| !self.init_succeeded(j));
        match first_unfinished {
            Some(j) => i == j,
            None => i >= self.n_init,
        }
    }

    fn init_succeeded(&self, i: usize) -> bool {
        matches!(&self.records[i].state, State::Terminated(t) if t.exit_code == 0)
    }

    fn retry_later(&mut self, i: usize, reason: &str, message: String) {
        let slot = &mut self.slots[i];
        let delay = next_backoff(slot.retry_backoff, Duration::ZERO).max(status::INITIAL_BACKOFF);
        slot.retry_backoff = Some(delay);
        slot.next_start = Some(Instant::now() + delay);
        self.records[i].state = State::Waiting {
            reason: reason.into(),
            message: Some(message),
        };
        self.publish_logs(i, None);
    }

    /// Gets container `i`'s module as its pull policy says; `None` when it
    /// cannot be had now (the container's waiting state says why).
    async fn pull(
        &mut self,
        i: usize,
        name: &str,
        image: &str,
        policy: PullPolicy,
    ) -> Option<LocalModule> {
        let present = if policy == PullPolicy::Always {
            Ok(None)
        } else {
            self.ctx.modules.present(image).await
        };
        let result = match present {
            Ok(Some(m)) => {
                self.event(
                    Some(name),
                    EventType::Normal,
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                );
                Ok(m)
            }
            Ok(None) if policy == PullPolicy::Never => {
                let message =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                self.event(
                    Some(name),
                    EventType::Warning,
                    "ErrImageNeverPull",
                    message.clone(),
                );
                self.retry_later(i, "ErrImageNeverPull", message);
                return None;
            }
            Ok(None) => {
                let keyring = self.pull_secrets(image).await;
                self.event(
                    Some(name),
                    EventType::Normal,
                    "Pulling",
                    format!("Pulling image \"{image}\""),
                );
                self.say_creating(i, format!("pulling image \"{image}\""))
                    .await;
                let pulled = self.ctx.modules.pull(image, &keyring).await;
                // A stand-in for an unreachable source is said below.
                if let Ok(m) = &pulled
                    && m.offline.is_none()
                {
                    let pulling = go_duration(m.took.saturating_sub(m.waited));
                    let total = go_duration(m.took);
                    self.event(
                        Some(name),
                        EventType::Normal,
                        "Pulled",
                        format!(
                            "Successfully pulled image \"{image}\" in {pulling} ({total} including waiting). Image size: {} bytes.",
                            m.size
                        ),
                    );
                }
                pulled
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(m) => {
                if let Some(why) = &m.offline {
                    self.event(
                        Some(name),
                        EventType::Warning,
                        "Pulled",
                        format!(
                            "Failed to pull image \"{image}\" ({why}); running the module this node last pulled for it ({})",
                            m.digest
                        ),
                    );
                }
                self.slots[i].module = Some(m.clone());
                self.slots[i].retry_backoff = None;
                self.records[i].image_id = Some(format!("wasmkube://{}", m.digest));
                Some(m)
            }
            Err(PullError::InvalidName(msg)) => {
                let message = format!("couldn't parse image name \"{image}\": {msg}");
                self.event(
                    Some(name),
                    EventType::Warning,
                    "InspectFailed",
                    format!("Failed to apply default image tag \"{image}\": {message}"),
                );
                self.retry_later(i, "InvalidImageName", message);
                None
            }
            Err(PullError::Failed(msg) | PullError::Unreachable(msg)) => {
                let message = format!("Failed to pull image \"{image}\": {msg}");
                self.event(Some(name), EventType::Warning, "Failed", message.clone());
                self.event(
                    Some(name),
                    EventType::Warning,
                    "Failed",
                    "Error: ErrImagePull".into(),
                );
                self.retry_later(i, "ErrImagePull", message);
                self.slots[i].flip_at = Some(Instant::now() + PULL_ERROR_SHOWN);
                None
            }
        }
    }

    /// Reports what container `i` is busy with before a slow step (a
    /// pull, a compile): one status write per step, and only while it is
    /// plainly being created, so an error state shown stays until replaced.
    async fn say_creating(&mut self, i: usize, message: String) {
        if matches!(&self.records[i].state, State::Waiting { reason, .. } if reason == "ContainerCreating")
        {
            self.records[i].state = State::Waiting {
                reason: "ContainerCreating".into(),
                message: Some(message),
            };
            self.report(false).await;
        }
    }

    /// The registry credentials of the pod's `imagePullSecrets`. Read only
    /// for registry images: the module store trusts the kubelet itself.
    async fn pull_secrets(&self, image: &str) -> Keyring {
        let mut keyring = Keyring::default();
        if !ImageRef::parse(image).is_ok_and(|r| !r.is_local()) {
            return keyring;
        }
        let names: Vec<String> = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.as_ref())
            .into_iter()
            .flatten()
            .map(|r| r.name.clone())
            .filter(|n| !n.is_empty())
            .collect();
        let mut missing = Vec::new();
        for name in names {
            match self.ctx.api.secret(&self.namespace, &name).await {
                Ok(Some(data)) => match Keyring::from_secret(&data) {
                    Ok(k) => keyring.extend(k),
                    Err(e) => {
                        tracing::warn!(pod = %self.name, secret = %name, error = %e, "unusable image pull secret");
                        missing.push(name);
                    }
                },
                Ok(None) => missing.push(name),
                Err(e) => {
                    tracing::warn!(pod = %self.name, secret = %name, error = %e, "reading an image pull secret failed");
                    missing.push(name);
                }
            }
        }
        if !missing.is_empty() {
            self.event(
                None,
                EventType::Warning,
                "FailedToRetrieveImagePullSecret",
                format!(
                    "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                    missing.join(", ")
                ),
            );
        }
        keyring
    }

    async fn start(&mut self, i: usize) {
        let Some(container) = all_containers(&self.pod).get(i).cloned() else {
            return;
        };
        let name = container.name.clone();
        let image = container.image.clone().unwrap_or_default();
        // Pull. `Always` asks the source again on every start, as the
        // kubelet does, so a restarted container runs the tag's current module.
        let policy = PullPolicy::of(container.image_pull_policy.as_deref(), &image);
        if policy == PullPolicy::Always {
            self.slots[i].module = None;
        }
        let module = match self.slots[i].module.clone() {
            Some(m) => m,
            None => match self.pull(i, &name, &image, policy).await {
                Some(m) => m,
                None => return,
            },
        };
        // Create. A large module's first compile takes seconds: the pod
        // says so while it runs, and an event says how long it took.
        let compiling = self.ctx.sandbox.needs_compile(&module.digest);
        if compiling {
            let message = format!(
                "compiling module ({}, not in the compile cache)",
                size_text(module.size)
            );
            self.say_creating(i, message).await;
        }
        let compile_started = Instant::now();
        if let Err(e) = self.ctx.sandbox.prepare(&module.digest, &module.path).await {
            let message = e.to_string();
            self.event(
                Some(&name),
                EventType::Warning,
                "Failed",
                format!("Error: {message}"),
            );
            self.retry_later(i, "CreateContainerError", message);
            return;
        }
        if compiling {
            self.event(
                Some(&name),
                EventType::Normal,
                "Compiled",
                format!(
                    "Compiled module of image \"{image}\" ({}) in {}",
                    size_text(module.size),
                    go_duration(compile_started.elapsed())
                ),
            );
        }
        let env = match self.resolve_env(&container).await {
            Ok(env) => env,
            Err(message) => {
                self.event(
                    Some(&name),
                    EventType::Warning,
                    "Failed",
                    format!("Error: {message}"),
                );
                self.retry_later(i, "CreateContainerConfigError", message);
                return;
            }
        };
        let mounted = self
            .ctx
            .volumes
            .mount(
                self.ctx.api.as_ref(),
                self.ctx.events.as_ref(),
                &self.pod,
                &mut self.volumes,
                &container,
            )
            .await;
        let preopens = match mounted {
            Ok(p) => p,
            Err(e) => {
                let message = e.to_string();
                // Like the kubelet's volume manager: a pod-level event.
                self.event(None, EventType::Warning, "FailedMount", message.clone());
                self.retry_later(i, "CreateContainerConfigError", message);
                return;
            }
        };
        let argv = argv(&container, &image, &env);
        if self.slots[i].started_once {
            self.records[i].restart_count += 1;
        }
        let attempt = self.records[i].restart_count;
        let log_path = self.pod_dir().join(&name).join(format!("{attempt}.log"));
        let log = match ContainerLog::create(&log_path, self.ctx.max_log_bytes).await {
            Ok(log) => log,
            Err(e) => {
                if self.slots[i].started_once {
                    self.records[i].restart_count -= 1;
                }
                self.retry_later(
                    i,
                    "CreateContainerError",
                    format!("creating the log file: {e}"),
                );
                return;
            }
        };
        self.event(
            Some(&name),
            EventType::Normal,
            "Created",
            format!("Created container: {name}"),
        );
        let container_id = format!("wasm://{}-{}-{}", self.uid, name, attempt);
        let stop = CancellationToken::new();
        let run_stats = self
            .stats
            .start_container(&name, Some(memory_limit(&container)));
        let run = ContainerRun {
            id: container_id.clone(),
            digest: module.digest.clone(),
            module_path: module.path.clone(),
            argv,
            env,
            memory_limit: memory_limit(&container),
            cpu_limit_millis: cpu_limit_millis(&container),
            preopens,
            stdout: log.stdout(),
            stderr: log.stderr(),
            stop: stop.clone(),
            usage: run_stats.usage(),
        };
        let handle = log.handle();
        if i >= self.n_init {
            crate::probes::start(crate::probes::Launch {
                container: &container,
                run: &run,
                sandbox: self.ctx.sandbox.clone(),
                pod: self.pod.clone(),
                pod_ip: &self.ctx.node_ip,
                work_dir: self.pod_dir().join(".probes"),
                index: i,
                events: self.ctx.events.clone(),
                updates: self.probe_tx.clone(),
                container_stop: stop.clone(),
                pod_stop: self.probes_stop.clone(),
                http: self.ctx.http.clone(),
            });
        }
        let sandbox = self.ctx.sandbox.clone();
        let exit_tx = self.exit_tx.clone();
        let started = Instant::now();
        let started_at = jiff::Timestamp::now();
        let id = container_id.clone();
        let http = self.ctx.http.clone();
        let http_options = crate::http::HttpOptions::of(&self.pod, &container, &self.ctx.node_ip);
        // Deleting the pod drains an HTTP container: no new requests, the
        // in-flight ones finish within the grace period.
        let drain = self.probes_stop.clone();
        tokio::spawn(async move {
            let result =
                crate::http::run_container(&http, sandbox.as_ref(), run, http_options, drain).await;
            if let Err(e) = log.finish().await {
                tracing::warn!(container = %id, error = %e, "writing the container log failed");
            }
            let _ = exit_tx
                .send(Exit {
                    index: i,
                    result,
                    started,
                    started_at,
                    container_id: id,
                })
                .await;
        });
        let slot = &mut self.slots[i];
        slot.running = Some(Running {
            stop,
            _stats: run_stats,
        });
        slot.started_once = true;
        slot.next_start = None;
        slot.flip_at = None;
        self.records[i].container_id = Some(container_id);
        self.records[i].state = State::Running { started_at };
        (self.records[i].started, self.records[i].ready) =
            crate::probes::Probes::of(&container).initial_gate();
        self.publish_logs(i, Some(handle));
        self.event(
            Some(&name),
            EventType::Normal,
            "Started",
            format!("Started container {name}"),
        );
    }

    /// Applies what a container's probes found. Reports about an earlier
    /// attempt, or arriving once the pod is being deleted, are stale.
    fn handle_probe(&mut self, update: crate::probes::Update) {
        use crate::probes::Change;
        let i = update.index;
        let (Some(slot), Some(record)) = (self.slots.get(i), self.records.get_mut(i)) else {
            return;
        };
        let Some(running) = &slot.running else {
            return;
        };
        if record.container_id.as_deref() != Some(update.container_id.as_str())
            || self.grace_deadline.is_some()
        {
            return;
        }
        match update.change {
            Change::Started { ready } => {
                record.started = true;
                record.ready = ready;
            }
            Change::Ready(ready) => record.ready = ready,
            Change::Failed(kind) => {
                // No signal to send a wasm guest, so no grace period: the
                // instance is interrupted and its exit (137) goes through
                // the restart policy and back-off like any other.
                record.ready = false;
                running.stop.cancel();
                let name = record.name.clone();
                let message =
                    crate::probes::killing_message(kind, &name, restart_policy(&self.pod));
                self.event(Some(&name), EventType::Normal, "Killing", message);
            }
        }
    }

    fn handle_exit(&mut self, exit: Exit, stopping: bool) {
        let i = exit.index;
        if matches!(exit.result, Ok(ExitStatus::OutOfMemory))
            && let Some(container) = all_containers(&self.pod).get(i)
        {
            // The container status says OOMKilled; the event says why, in
            // `kubectl describe` and `kubectl get events`.
            let name = container.name.clone();
            self.event(
                Some(&name),
                EventType::Warning,
                "OOMKilled",
                format!(
                    "Container {name} was killed: its memory would have grown past its limit of {} bytes (resources.limits.memory)",
                    memory_limit(container)
                ),
            );
        }
        let (Some(slot), Some(record)) = (self.slots.get_mut(i), self.records.get_mut(i)) else {
            return;
        };
        slot.running = None;
        let (exit_code, reason, message) = match &exit.result {
            Ok(status) => {
                let (c, r, m) = status::termination(status);
                (c, r.to_string(), m)
            }
            Err(e) => (128, "StartError".to_string(), Some(e.to_string())),
        };
        let terminated = Terminated {
            exit_code,
            reason,
            message,
            started_at: Some(exit.started_at),
            finished_at: jiff::Timestamp::now(),
            container_id: Some(exit.container_id),
        };
        let policy = restart_policy(&self.pod).to_string();
        if stopping || !restarts(i < self.n_init, &policy, exit_code) {
            record.state = State::Terminated(terminated);
            slot.done = true;
            self.publish_logs(i, None);
            return;
        }
        let delay = self
            .ctx
            .restart_backoff
            .next(slot.backoff, exit.started.elapsed());
        slot.backoff = Some(delay);
        slot.next_start = Some(Instant::now() + delay);
        record.last_terminated = Some(terminated);
        let name = record.name.clone();
        if delay.is_zero() {
            record.state = State::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            };
        } else {
            record.state = State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(backoff_message(delay, &name, &self.pod)),
            };
            self.event(
                Some(&name),
                EventType::Warning,
                "BackOff",
                format!(
                    "Back-off restarting failed container {name} in pod {}",
                    status::pod_ref(&self.pod)
                ),
            );
        }
        self.publish_logs(i, None);
    }

    fn next_wake(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter(|s| s.running.is_none() && !s.done)
            .flat_map(|s| [s.next_start, s.flip_at])
            .flatten()
            .chain(self.grace_deadline.filter(|_| !self.killed))
            .chain(self.retry_at)
            .chain(self.status_retry.map(|(at, _)| at))
            .chain(self.active_deadline())
            // Volume housekeeping runs only while the pod is not being deleted.
            .chain(
                self.volumes
                    .next_check()
                    .filter(|_| self.grace_deadline.is_none()),
            )
            .min()
    }

    /// Refreshes configMap/secret volumes and checks emptyDir size limits
    /// when due; an evicted pod has its containers stopped for good and,
    /// once they are, its volume files removed (its logs stay).
    async fn check_volumes(&mut self) {
        if self.volumes.is_due(Instant::now()) {
            if self.slots.iter().all(|s| s.done) {
                // Nothing runs any more: nobody reads the files.
                self.volumes.stop_checks();
            } else {
                self.ctx
                    .volumes
                    .housekeep(
                        self.ctx.api.as_ref(),
                        self.ctx.events.as_ref(),
                        &self.pod,
                        &mut self.volumes,
                    )
                    .await;
            }
        }
        if self.volumes.eviction().is_none() {
            return;
        }
        self.stop_for_good();
        if self.slots.iter().all(|s| s.running.is_none()) && !self.volumes.is_torn_down() {
            self.ctx.volumes.teardown(&mut self.volumes).await;
        }
    }

    /// When `spec.activeDeadlineSeconds` runs out, counted from the pod's
    /// start time (so a kubelet restart does not reset it); `None` without
    /// one, once it was enforced, while deleting, or when nothing runs.
    fn active_deadline(&self) -> Option<Instant> {
        let seconds = self.pod.spec.as_ref()?.active_deadline_seconds?;
        if self.deadline_exceeded
            || self.grace_deadline.is_some()
            || self.slots.iter().all(|s| s.done)
        {
            return None;
        }
        let active = jiff::Timestamp::now()
            .duration_since(self.start_time)
            .as_secs_f64()
            .max(0.0);
        let left = (seconds.max(0) as f64 - active).max(0.0);
        Some(Instant::now() + Duration::from_secs_f64(left.min(1e9)))
    }

    /// Enforces `spec.activeDeadlineSeconds` like the kubelet does: past
    /// it, every container is stopped for good (a busy guest at its next
    /// epoch tick) and the pod fails with reason `DeadlineExceeded`.
    fn check_deadline(&mut self) {
        if self.active_deadline().is_none_or(|at| at > Instant::now()) {
            return;
        }
        self.deadline_exceeded = true;
        self.event(
            None,
            EventType::Warning,
            "DeadlineExceeded",
            DEADLINE_EXCEEDED_MESSAGE.into(),
        );
        self.stop_for_good();
    }

    /// Stops every container and starts none again: the pod has reached a
    /// terminal verdict (evicted, deadline exceeded) whatever its restart
    /// policy.
    fn stop_for_good(&mut self) {
        for (slot, record) in self.slots.iter_mut().zip(&mut self.records) {
            slot.next_start = None;
            slot.flip_at = None;
            if slot.running.is_none() && !slot.done {
                slot.done = true;
                // Waiting to restart (or restored after a kubelet restart):
                // it ended with its last run.
                if matches!(record.state, State::Waiting { .. })
                    && let Some(t) = record.last_terminated.take()
                {
                    record.state = State::Terminated(t);
                }
            }
        }
        self.stop_all();
    }

    fn stop_all(&self) {
        for slot in &self.slots {
            if let Some(r) = &slot.running {
                r.stop.cancel();
            }
        }
    }

    async fn drain(&mut self, exit_rx: &mut mpsc::Receiver<Exit>) {
        while self.slots.iter().any(|s| s.running.is_some()) {
            match exit_rx.recv().await {
                Some(exit) => self.handle_exit(exit, true),
                None => break,
            }
        }
    }

    /// One deletion pass. Returns `true` when the pod is finished with.
    async fn terminate(&mut self, gone: bool) -> bool {
        let now = Instant::now();
        if self.grace_deadline.is_none() {
            let grace = if gone {
                0
            } else {
                self.pod
                    .metadata
                    .deletion_grace_period_seconds
                    .or_else(|| {
                        self.pod
                            .spec
                            .as_ref()
                            .and_then(|s| s.termination_grace_period_seconds)
                    })
                    .unwrap_or(30)
                    .max(0)
            };
            self.grace_deadline = Some(grace_deadline(now, grace));
            self.probes_stop.cancel();
            for i in 0..self.slots.len() {
                self.slots[i].next_start = None;
                self.slots[i].flip_at = None;
                if self.slots[i].running.is_some() {
                    let name = self.records[i].name.clone();
                    self.event(
                        Some(&name),
                        EventType::Normal,
                        "Killing",
                        format!("Stopping container {name}"),
                    );
                } else {
                    self.slots[i].done = true;
                }
            }
        }
        // Grace may only shrink (a second delete with a shorter grace).
        if let Some(g) = self.pod.metadata.deletion_grace_period_seconds {
            let d = grace_deadline(now, g);
            if self.grace_deadline.is_some_and(|cur| d < cur) {
                self.grace_deadline = Some(d);
            }
        }
        if self.grace_deadline.is_some_and(|d| d <= now) {
            // wasm has no SIGTERM: interrupting at the deadline is all there is.
            self.stop_all();
            self.killed = true;
        }
        if self.slots.iter().any(|s| s.running.is_some()) {
            if !gone {
                self.report(true).await;
            }
            return false;
        }
        if !gone {
            self.report(true).await;
            if let Err(e) = self
                .ctx
                .api
                .delete(&self.namespace, &self.name, &self.uid)
                .await
            {
                tracing::warn!(pod = %self.name, error = %e, "deleting the pod failed; retrying");
                self.retry_at = Some(now + Duration::from_secs(1));
                return false;
            }
        }
        self.cleanup().await;
        true
    }

    async fn cleanup(&mut self) {
        self.ctx.logs.remove(&self.namespace, &self.name, &self.uid);
        // Memory-backed volumes live outside the pod's folder.
        self.ctx.volumes.teardown(&mut self.volumes).await;
        let dir = self.pod_dir();
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "removing the pod's files failed");
        }
    }

    async fn report(&mut self, deleting: bool) {
        let mut status = status::pod_status(
            &StatusContext {
                pod: &self.pod,
                previous: self.last_reported.as_ref(),
                host_ip: &self.ctx.node_ip,
                start_time: self.start_time,
                deleting,
                now: jiff::Timestamp::now(),
            },
            &self.records[..self.n_init],
            &self.records[self.n_init..],
        );
        if let Some(message) = self.volumes.eviction() {
            // The eviction manager's verdict: terminal, whatever the
            // restart policy.
            status.phase = Some("Failed".into());
            status.reason = Some("Evicted".into());
            status.message = Some(message.to_string());
        } else if self.deadline_exceeded {
            status.phase = Some("Failed".into());
            status.reason = Some("DeadlineExceeded".into());
            status.message = Some(DEADLINE_EXCEEDED_MESSAGE.into());
        }
        let save = self.last_saved.as_ref() != Some(&status);
        // Someone else (the node lifecycle controller, while this node was
        // unreachable) may have changed the Ready condition: say it again.
        let ready_in_api = ready_condition(self.pod.status.as_ref());
        let unchanged = self.last_reported.as_ref() == Some(&status)
            && (ready_in_api.is_none() || ready_in_api == ready_condition(Some(&status)));
        // The local copy (for restarts while the API server is away) and the
        // report are independent: write them at once, so the fsync of the
        // local copy is not on the path of the status users wait for.
        let saving = async {
            if save {
                self.ctx.api.save_status(&self.pod, &status).await;
            }
        };
        let patching = async {
            if unchanged {
                None
            } else {
                Some(
                    self.ctx
                        .api
                        .patch_status(&self.namespace, &self.name, &status)
                        .await,
                )
            }
        };
        let ((), patched) = tokio::join!(saving, patching);
        if save {
            self.last_saved = Some(status.clone());
        }
        let Some(patched) = patched else {
            return;
        };
        match patched {
            Ok(()) => {
                self.last_reported = Some(status);
                self.status_retry = None;
            }
            Err(e) => {
                // Retried until it lands; each retry sends the status as it
                // is then, so the latest one wins.
                let delay = self
                    .status_retry
                    .map_or(STATUS_RETRY_FIRST, |(_, d)| (d * 2).min(STATUS_RETRY_MAX));
                self.status_retry = Some((Instant::now() + delay, delay));
                tracing::warn!(pod = %self.name, error = %e, retry_in = ?delay, "reporting pod status failed");
            }
        }
    }

    async fn resolve_env(&self, container: &Container) -> Result<Vec<(String, String)>, String> {
        let mut env: Vec<(String, String)> = Vec::new();
        let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
            if let Some(slot) = env.iter_mut().find(|(name, _)| *name == k) {
                slot.1 = v;
            } else {
                env.push((k, v));
            }
        };
        for from in container.env_from.iter().flatten() {
            let prefix = from.prefix.clone().unwrap_or_default();
            if let Some(r) = &from.config_map_ref {
                match self.ctx.api.config_map(&self.namespace, &r.name).await? {
                    Some(data) => {
                        for (k, v) in data {
                            set(&mut env, format!("{prefix}{k}"), v);
                        }
                    }
                    None if r.optional == Some(true) => {}
                    None => return Err(format!("configmap \"{}\" not found", r.name)),
                }
            }
            if let Some(r) = &from.secret_ref {
                match self.ctx.api.secret(&self.namespace, &r.name).await? {
                    Some(data) => {
                        for (k, v) in data {
                            set(
                                &mut env,
                                format!("{prefix}{k}"),
                                String::from_utf8_lossy(&v).into_owned(),
                            );
                        }
                    }
                    None if r.optional == Some(true) => {}
                    None => return Err(format!("secret \"{}\" not found", r.name)),
                }
            }
        }
        for var in container.env.iter().flatten() {
            let value = if let Some(from) = &var.value_from {
                if let Some(r) = &from.config_map_key_ref {
                    match self.ctx.api.config_map(&self.namespace, &r.name).await? {
                        Some(data) => match data.get(&r.key) {
                            Some(v) => v.clone(),
                            None if r.optional == Some(true) => continue,
                            None => {
                                return Err(format!(
                                    "couldn't find key {} in ConfigMap {}/{}",
                                    r.key, self.namespace, r.name
                                ));
                            }
                        },
                        None if r.optional == Some(true) => continue,
                        None => return Err(format!("configmap \"{}\" not found", r.name)),
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    match self.ctx.api.secret(&self.namespace, &r.name).await? {
                        Some(data) => match data.get(&r.key) {
                            Some(v) => String::from_utf8_lossy(v).into_owned(),
                            None if r.optional == Some(true) => continue,
                            None => {
                                return Err(format!(
                                    "couldn't find key {} in Secret {}/{}",
                                    r.key, self.namespace, r.name
                                ));
                            }
                        },
                        None if r.optional == Some(true) => continue,
                        None => return Err(format!("secret \"{}\" not found", r.name)),
                    }
                } else if let Some(r) = &from.field_ref {
                    field_value(&self.pod, &r.field_path, &self.ctx.node_ip)
                        .ok_or_else(|| format!("unsupported fieldPath: {}", r.field_path))?
                } else {
                    String::new()
                }
            } else {
                expand(var.value.as_deref().unwrap_or_default(), &env)
            };
            set(&mut env, var.name.clone(), value);
        }
        Ok(env)
    }
}

/// The first wait before a failed status write is retried; it doubles up
/// to [`STATUS_RETRY_MAX`].
const STATUS_RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between status write retries.
const STATUS_RETRY_MAX: Duration = Duration::from_secs(30);

/// The status of a pod's `Ready` condition.
fn ready_condition(status: Option<&PodStatus>) -> Option<String> {
    status?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

/// A progress channel that is already closed: the log is complete.
fn finished_progress() -> watch::Receiver<u64> {
    watch::channel(0).1
}

/// Init containers, then containers, as one list.
fn all_containers(pod: &Pod) -> Vec<Container> {
    pod.spec
        .as_ref()
        .map(|s| {
            s.init_containers
                .iter()
                .flatten()
                .chain(&s.containers)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a container that exited is started again: an init container
/// until it succeeds (unless the policy is Never), others by the policy.
fn restarts(init: bool, restart_policy: &str, exit_code: i32) -> bool {
    if init {
        exit_code != 0 && restart_policy != "Never"
    } else {
        should_restart(restart_policy, exit_code)
    }
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// argv for a container: `command` replaces the module's name as argv[0]
/// and leads, `args` follow; `$(VAR)` references are expanded.
pub fn argv(container: &Container, image: &str, env: &[(String, String)]) -> Vec<String> {
    let mut argv: Vec<String> = match &container.command {
        Some(cmd) if !cmd.is_empty() => cmd.iter().map(|s| expand(s, env)).collect(),
        _ => vec![image.to_string()],
    };
    argv.extend(container.args.iter().flatten().map(|s| expand(s, env)));
    argv
}

/// Kubernetes' `$(VAR)` expansion: defined variables are replaced, `$$`
/// escapes a `$`, anything else is left as written.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The downward API fields a container may read.
fn field_value(pod: &Pod, path: &str, node_ip: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let label = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(|k| map.and_then(|m| m.get(k)).cloned().unwrap_or_default())
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => Some(
            spec.and_then(|s| s.service_account_name.clone())
                .unwrap_or_default(),
        ),
        "status.podIP" | "status.hostIP" => Some(node_ip.to_string()),
        _ => label("metadata.labels['", meta.labels.as_ref())
            .or_else(|| label("metadata.annotations['", meta.annotations.as_ref())),
    }
}

/// A container's memory cap from `resources.limits.memory`.
pub fn memory_limit(container: &Container) -> u64 {
    container
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"))
        .and_then(|q| parse_quantity(&q.0))
        .unwrap_or(DEFAULT_MEMORY_LIMIT)
}

/// A container's CPU cap in millicores from `resources.limits.cpu`.
pub fn cpu_limit_millis(container: &Container) -> Option<u64> {
    container
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("cpu"))
        .and_then(|q| parse_quantity_scaled(&q.0, 1000.0))
}

/// Parses a Kubernetes quantity into a whole number (bytes for memory),
/// rounding up; `None` if malformed.
pub fn parse_quantity(q: &str) -> Option<u64> {
    parse_quantity_scaled(q, 1.0)
}

/// Parses a quantity multiplied by `scale` (1000 gives millis).
fn parse_quantity_scaled(q: &str, scale: f64) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let value: f64 = num.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "Pi" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "Ei" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    let v = (value * factor * scale).ceil();
    if v.is_finite() && v >= 0.0 {
        // Saturating float-to-int conversion is the intent.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(v as u64)
    } else {
        None
    }
}

struct WorkerHandle {
    uid: String,
    tx: watch::Sender<Arc<Pod>>,
    vanished: CancellationToken,
    task: JoinHandle<()>,
}

/// Watches this node's pods and runs a worker per pod until `shutdown`.
/// With `local`, the pods stored there start before the apiserver is
/// reached, and every pod seen is stored there.
pub async fn run_pods(
    ctx: Arc<WorkerContext>,
    client: kube::Client,
    local: Option<LocalState>,
    shutdown: CancellationToken,
) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default()
        .any_semantic()
        .fields(&format!("spec.nodeName={}", ctx.node_name));
    dispatch(ctx, local, shutdown, move |writer| {
        // Mirror pods stand for the process's own components
        // (crate::mirror): nothing here runs them.
        let events = watcher(api, config).filter(|e| {
            let mirror = match e {
                Ok(
                    watcher::Event::Apply(p)
                    | watcher::Event::InitApply(p)
                    | watcher::Event::Delete(p),
                ) => crate::mirror::is_mirror_pod(p),
                _ => false,
            };
            std::future::ready(!mirror)
        });
        reflector::reflector(writer, events).default_backoff()
    })
    .await;
}

/// What a [`dispatch`] run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DispatchSummary {
    /// Pod workers started (a worker kept across a relist counts once).
    pub workers_started: usize,
}

/// The dispatcher of [`run_pods`] over any stream of pod events:
/// `events` gets the reflector's writer, already holding the pods of
/// `local`, and returns the reflected event stream.
pub async fn dispatch<S>(
    ctx: Arc<WorkerContext>,
    local: Option<LocalState>,
    shutdown: CancellationToken,
    events: impl FnOnce(reflector::store::Writer<Pod>) -> S,
) -> DispatchSummary
where
    S: futures::Stream<Item = Result<watcher::Event<Pod>, watcher::Error>>,
{
    let (reader, mut writer) = reflector::store::<Pod>();
    if let Some(local) = &local {
        // Seeded as a completed initial list: the watcher's own list
        // replaces it once the apiserver answers (a pod gone by then is
        // stopped), and until then the pods run as last seen.
        let stored: Vec<Pod> = local
            .load_pods()
            .await
            .into_iter()
            .filter(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&ctx.node_name)
            })
            .collect();
        if !stored.is_empty() {
            tracing::info!(pods = stored.len(), "starting the pods stored on this node");
            writer.apply_watcher_event(&watcher::Event::Init);
            for p in stored {
                writer.apply_watcher_event(&watcher::Event::InitApply(p));
            }
            writer.apply_watcher_event(&watcher::Event::InitDone);
        }
    }
    let mut stream = Box::pin(events(writer));
    let mut workers: HashMap<ObjectRef<Pod>, WorkerHandle> = HashMap::new();
    // Pods whose worker finished deleting them; never restarted.
    let mut finished: HashSet<String> = HashSet::new();
    // uid → fingerprint of the desired state of the copy in `local`.
    let mut stored: HashMap<String, u64> = HashMap::new();
    let mut summary = DispatchSummary::default();
    for key in all_keys(&reader, &workers) {
        summary.workers_started += usize::from(sync_key(
            &ctx,
            &reader,
            &mut workers,
            &mut finished,
            key,
            &shutdown,
        ));
    }
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut swept = false;
    loop {
        // A pod to keep in the local state once its worker is started: the
        // copy is for restarts without the API server, so its fsync need not
        // delay the start.
        let mut to_store: Option<Pod> = None;
        let keys: Vec<ObjectRef<Pod>> = tokio::select! {
            () = shutdown.cancelled() => break,
            _ = resync.tick() => all_keys(&reader, &workers),
            event = stream.next() => match event {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "pod watch failed; retrying");
                    continue;
                }
                Some(Ok(watcher::Event::Apply(p))) => {
                    let key = ObjectRef::from_obj(&p);
                    to_store = Some(p);
                    vec![key]
                }
                Some(Ok(watcher::Event::Delete(p))) => {
                    if let Some(local) = &local {
                        let live: Vec<Pod> = reader.state().iter().map(|p| (**p).clone()).collect();
                        local.retain_pods(&live).await;
                        stored.retain(|uid, _| live.iter().any(|p| p.metadata.uid.as_ref() == Some(uid)));
                    }
                    vec![ObjectRef::from_obj(&p)]
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    if !swept {
                        // Files of pods deleted while this kubelet was down.
                        swept = true;
                        let live: HashSet<String> = reader
                            .state()
                            .iter()
                            .filter_map(|p| p.uid())
                            .chain(workers.values().map(|w| w.uid.clone()))
                            .collect();
                        crate::volumes::remove_orphans(
                            ctx.pods_dir.clone(),
                            ctx.volumes.config().memory_root.clone(),
                            live,
                        )
                        .await;
                    }
                    if let Some(local) = &local {
                        // What the apiserver no longer lists is gone.
                        let live: Vec<Pod> = reader.state().iter().map(|p| (**p).clone()).collect();
                        local.retain_pods(&live).await;
                        stored.retain(|uid, _| live.iter().any(|p| p.metadata.uid.as_ref() == Some(uid)));
                    }
                    all_keys(&reader, &workers)
                }
                Some(Ok(watcher::Event::InitApply(p))) => {
                    store_pod(local.as_ref(), &mut stored, &p).await;
                    continue;
                }
                Some(Ok(watcher::Event::Init)) => continue,
            },
        };
        for key in keys {
            summary.workers_started += usize::from(sync_key(
                &ctx,
                &reader,
                &mut workers,
                &mut finished,
                key,
                &shutdown,
            ));
        }
        if let Some(p) = to_store {
            store_pod(local.as_ref(), &mut stored, &p).await;
        }
    }
    // Shutdown: workers stop their containers and return.
    for (_, w) in workers.drain() {
        let _ = tokio::time::timeout(Duration::from_secs(10), w.task).await;
    }
    summary
}

/// Keeps `pod` in the local state unless its desired state is stored
/// already. Status-only changes (most watch events: this kubelet's own
/// status writes come back as events) are not rewritten: the stored copy
/// exists to restart the pod, and the kubelet keeps its computed status
/// apart (`LocalState::save_pod_status`).
async fn store_pod(local: Option<&LocalState>, stored: &mut HashMap<String, u64>, pod: &Pod) {
    let (Some(local), Some(uid)) = (local, pod.metadata.uid.as_ref()) else {
        return;
    };
    let fingerprint = desired_state_fingerprint(pod);
    if fingerprint.is_some() && stored.get(uid) == fingerprint.as_ref() {
        return;
    }
    match local.save_pod(pod).await {
        Ok(()) => {
            if let Some(f) = fingerprint {
                stored.insert(uid.clone(), f);
            }
        }
        Err(e) => {
            tracing::warn!(pod = %status::pod_ref(pod), error = %e, "storing the pod locally failed");
        }
    }
}

/// A hash of what the pod asks for: metadata and spec, without the status,
/// the resourceVersion and the managed fields that change with every write.
fn desired_state_fingerprint(pod: &Pod) -> Option<u64> {
    use std::hash::{Hash as _, Hasher as _};
    let mut metadata = pod.metadata.clone();
    metadata.resource_version = None;
    metadata.managed_fields = None;
    let json = serde_json::to_vec(&(&metadata, &pod.spec)).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    json.hash(&mut hasher);
    Some(hasher.finish())
}

fn all_keys(
    reader: &Store<Pod>,
    workers: &HashMap<ObjectRef<Pod>, WorkerHandle>,
) -> Vec<ObjectRef<Pod>> {
    let mut keys: Vec<ObjectRef<Pod>> = reader
        .state()
        .iter()
        .map(|p| ObjectRef::from_obj(&**p))
        .collect();
    keys.extend(workers.keys().cloned());
    keys.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    keys.dedup();
    keys
}

fn sync_key(
    ctx: &Arc<WorkerContext>,
    reader: &Store<Pod>,
    workers: &mut HashMap<ObjectRef<Pod>, WorkerHandle>,
    finished: &mut HashSet<String>,
    key: ObjectRef<Pod>,
    shutdown: &CancellationToken,
) -> bool {
    let pod = reader.get(&key);
    if let Some(w) = workers.get(&key) {
        let same = pod
            .as_ref()
            .is_some_and(|p| p.uid().as_deref() == Some(w.uid.as_str()));
        if w.task.is_finished() {
            finished.insert(w.uid.clone());
            workers.remove(&key);
        } else if same {
            if let Some(p) = &pod {
                w.tx.send_replace(p.clone());
            }
            return false;
        } else {
            // Gone, or replaced by a new pod of the same name.
            w.vanished.cancel();
            workers.remove(&key);
        }
    }
    let Some(pod) = pod else {
        return false;
    };
    let uid = pod.uid().unwrap_or_default();
    if finished.contains(&uid) {
        return false;
    }
    // Finished pods get a worker too: it serves their logs, starts nothing
    // (their containers are done by the restart policy) and finalizes
    // their deletion.
    let (tx, rx) = watch::channel(pod);
    let vanished = CancellationToken::new();
    let task = tokio::spawn(run_pod(
        ctx.clone(),
        rx,
        vanished.clone(),
        shutdown.child_token(),
    ));
    workers.insert(
        key,
        WorkerHandle {
            uid,
            tx,
            vanished,
            task,
        },
    );
    // Forget finished uids that no longer exist, so the set stays small.
    if finished.len() > 1024 {
        let live: HashSet<String> = reader.state().iter().filter_map(|p| p.uid()).collect();
        finished.retain(|u| live.contains(u));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::PodEvent;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::path::Path;
    use std::sync::Mutex;
    use tokio::io::AsyncWriteExt;
    use wasmtime_wasi::cli::StdoutStream;

    /// Runs by digest: `sha256:ok` prints and exits 0, `sha256:fail` exits
    /// 1, `sha256:spin` runs until stopped.
    #[derive(Default)]
    struct FakeSandbox {
        /// How many `sha256:spin` runs were stopped.
        stopped: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Sandbox for FakeSandbox {
        /// `big` stands for a module not compiled yet.
        fn needs_compile(&self, digest: &str) -> bool {
            digest == "sha256:big"
        }

        async fn prepare(&self, digest: &str, _path: &Path) -> Result<(), SandboxError> {
            if digest == "sha256:bad" {
                return Err(SandboxError::InvalidModule(
                    "module has no _start export: not a WASI command".into(),
                ));
            }
            Ok(())
        }

        async fn run(&self, run: ContainerRun) -> Result<ExitStatus, SandboxError> {
            let mut out = Box::into_pin(run.stdout.async_stream());
            let _ = out
                .write_all(format!("{}\n", run.argv.join(" ")).as_bytes())
                .await;
            drop(out);
            match run.digest.as_str() {
                "sha256:ok" => Ok(ExitStatus::Exited(0)),
                "sha256:fail" => Ok(ExitStatus::Exited(1)),
                _ => {
                    run.stop.cancelled().await;
                    self.stopped
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(ExitStatus::Killed)
                }
            }
        }
    }

    struct FakeModules;

    #[async_trait::async_trait]
    impl ModuleSource for FakeModules {
        /// Images named `cached…` are on the node (as the `ok` module).
        async fn present(&self, image: &str) -> Result<Option<LocalModule>, PullError> {
            Ok(image.starts_with("cached").then(|| LocalModule {
                digest: "sha256:ok".into(),
                cached: true,
                ..LocalModule::default()
            }))
        }

        async fn pull(&self, image: &str, keyring: &Keyring) -> Result<LocalModule, PullError> {
            if let Some(private) = image.strip_prefix("reg.example:5000/") {
                if keyring.lookup("reg.example:5000", private).is_empty() {
                    return Err(PullError::Failed(
                        "unauthorized: authentication required".into(),
                    ));
                }
                return Ok(LocalModule {
                    digest: "sha256:ok".into(),
                    ..LocalModule::default()
                });
            }
            let name = image.split(':').next().unwrap_or_default();
            // `cached…` images are the `ok` module, pulled or not.
            let name = if name.starts_with("cached") {
                "ok"
            } else {
                name
            };
            if name == "missing" {
                return Err(PullError::Failed(format!("module \"{image}\" not found")));
            }
            Ok(LocalModule {
                digest: format!("sha256:{name}"),
                path: PathBuf::from("/nonexistent"),
                size: 1,
                cached: false,
                took: Duration::from_millis(1),
                ..LocalModule::default()
            })
        }
    }

    #[derive(Default)]
    struct FakeApi {
        statuses: Mutex<Vec<PodStatus>>,
        deleted: Mutex<Vec<String>>,
        changed: tokio::sync::Notify,
        /// How many status writes fail (as with an unreachable apiserver)
        /// before they land.
        failing_writes: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl PodApi for FakeApi {
        async fn patch_status(&self, _: &str, _: &str, status: &PodStatus) -> Result<(), String> {
            let failing = &self.failing_writes;
            if failing
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok()
            {
                return Err("connection refused".into());
            }
            self.statuses
                .lock()
                .map_err(|e| e.to_string())?
                .push(status.clone());
            self.changed.notify_waiters();
            Ok(())
        }
        async fn delete(&self, _: &str, _: &str, uid: &str) -> Result<(), String> {
            self.deleted
                .lock()
                .map_err(|e| e.to_string())?
                .push(uid.to_string());
            self.changed.notify_waiters();
            Ok(())
        }
        async fn config_map(
            &self,
            _: &str,
            name: &str,
        ) -> Result<Option<BTreeMap<String, String>>, String> {
            Ok((name == "cfg").then(|| [("greeting".to_string(), "hi".to_string())].into()))
        }
        async fn secret(
            &self,
            _: &str,
            name: &str,
        ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
            // A pull secret for `reg.example:5000`.
            let config = r#"{"auths":{"reg.example:5000":{"auth":"dTpw"}}}"#;
            Ok((name == "regcred")
                .then(|| [(".dockerconfigjson".to_string(), config.as_bytes().to_vec())].into()))
        }
    }

    #[derive(Default)]
    struct FakeEvents(Mutex<Vec<PodEvent>>);

    impl EventSink for FakeEvents {
        fn record(&self, event: PodEvent) {
            if let Ok(mut v) = self.0.lock() {
                v.push(event);
            }
        }
    }

    struct Harness {
        _dir: tempfile::TempDir,
        ctx: Arc<WorkerContext>,
        api: Arc<FakeApi>,
        events: Arc<FakeEvents>,
        sandbox: Arc<FakeSandbox>,
    }

    fn harness() -> anyhow::Result<Harness> {
        let dir = tempfile::tempdir()?;
        let api = Arc::new(FakeApi::default());
        let events = Arc::new(FakeEvents::default());
        let sandbox = Arc::new(FakeSandbox::default());
        let ctx = Arc::new(WorkerContext {
            node_name: "n1".into(),
            node_ip: "10.1.2.3".into(),
            pods_dir: dir.path().join("pods"),
            sandbox: sandbox.clone(),
            modules: Arc::new(FakeModules),
            api: api.clone(),
            events: events.clone(),
            logs: Arc::new(LogRegistry::default()),
            volumes: Arc::new(crate::volumes::VolumeManager::new(
                crate::volumes::VolumeConfig {
                    node_name: "n1".into(),
                    allowed_host_paths: Vec::new(),
                    sync_interval: crate::volumes::DEFAULT_SYNC_INTERVAL,
                    memory_root: Some(dir.path().join("shm")),
                },
            )),
            stats: Arc::new(crate::stats::StatsRegistry::new(
                "n1",
                crate::stats::StatsOptions::default(),
            )),
            http: crate::http::HttpPods::new(),
            max_log_bytes: crate::logs::DEFAULT_MAX_LOG_BYTES,
            restart_backoff: status::RestartBackoff::default(),
        });
        Ok(Harness {
            _dir: dir,
            ctx,
            api,
            events,
            sandbox,
        })
    }

    fn pod(image: &str, restart_policy: &str) -> Pod {
        let mut pod = Pod {
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                restart_policy: Some(restart_policy.into()),
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    args: Some(vec!["$(GREETING)".into()]),
                    env: Some(vec![k8s_openapi::api::core::v1::EnvVar {
                        name: "GREETING".into(),
                        value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
                            config_map_key_ref: Some(
                                k8s_openapi::api::core::v1::ConfigMapKeySelector {
                                    name: "cfg".into(),
                                    key: "greeting".into(),
                                    optional: None,
                                },
                            ),
                            ..Default::default()
                        }),
                        value: None,
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        pod.metadata.name = Some("p".into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.uid = Some("u1".into());
        pod
    }

    impl Harness {
        /// Waits (bounded) for a reported status matching `pred`.
        async fn wait_status(
            &self,
            pred: impl Fn(&PodStatus) -> bool,
        ) -> anyhow::Result<PodStatus> {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let notified = self.api.changed.notified();
                if let Some(s) = self
                    .api
                    .statuses
                    .lock()
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .iter()
                    .find(|s| pred(s))
                {
                    return Ok(s.clone());
                }
                tokio::time::timeout_at(deadline, notified).await?;
            }
        }

        fn events(&self) -> Vec<String> {
            self.events
                .0
                .lock()
                .map(|v| v.iter().map(|e| e.reason.clone()).collect())
                .unwrap_or_default()
        }
    }

    fn container_state(s: &PodStatus) -> Option<k8s_openapi::api::core::v1::ContainerState> {
        s.container_statuses
            .as_ref()
            .and_then(|c| c.first())
            .and_then(|c| c.state.clone())
    }

    #[tokio::test]
    async fn completed_pod_succeeds_with_env_from_configmap() -> anyhow::Result<()> {
        let h = harness()?;
        let (_tx, rx) = watch::channel(Arc::new(pod("ok:v1", "Never")));
        let task = tokio::spawn(run_pod(
            h.ctx.clone(),
            rx,
            CancellationToken::new(),
            CancellationToken::new(),
        ));
        let s = h
            .wait_status(|s| s.phase.as_deref() == Some("Succeeded"))
            .await?;
        let t = container_state(&s).and_then(|st| st.terminated);
        assert_eq!(t.as_ref().map(|t| t.exit_code), Some(0));
        assert_eq!(t.and_then(|t| t.reason).as_deref(), Some("Completed"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.1.2.3"));
        let cs = s.container_statuses.unwrap_or_default();
        assert_eq!(cs[0].image_id, "wasmkube://sha256:ok");
        assert_eq!(cs[0].container_id.as_deref(), Some("wasm://u1-c-0"));
        assert_eq!(h.events(), ["Pulling", "Pulled", "Created", "Started"]);
        // argv[0] is the image, args expanded from the ConfigMap value.
        let source = h.ctx.logs.lookup("default", "p", "c", false);
        let source = source.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let text = crate::logs::read_all(&source.path).await?;
        let lines = crate::logs::render_lines(&text, &crate::logs::LogOptions::default());
        assert_eq!(lines, [b"ok:v1 hi\n".to_vec()]);
        task.abort();
        Ok(())
    }

    #[tokio::test]
    async fn failing_container_goes_into_crash_loop_backoff() -> anyhow::Result<()> {
        let h = harness()?;
        let (_tx, rx) = watch::channel(Arc::new(pod("fail:v1", "Always")));
        let task = tokio::spawn(run_pod(
            h.ctx.clone(),
            rx,
            CancellationToken::new(),
            CancellationToken::new(),
        ));
        let s = h
            .wait_status(|s| {
                container_state(s)
                    .and_then(|st| st.waiting)
                    .and_then(|w| w.reason)
                    .as_deref()
                    == Some("CrashLoopBackOff")
            })
            .await?;
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let cs = s.container_statuses.unwrap_or_default();
        assert_eq!(cs[0].restart_count, 1);
        let waiting = cs[0].state.as_ref().and_then(|st| st.waiting.clone());
        assert_eq!(
            waiting.and_then(|w| w.message).as_deref(),
            Some("back-off 10s restarting failed container=c pod=p_default(u1)")
        );
        let last = cs[0]
            .last_state
            .as_ref()
            .and_then(|st| st.terminated.clone());
        assert_eq!(last.map(|t| t.exit_code), Some(1));
        assert!(h.events().contains(&"BackOff".to_string()));
        task.abort();
        Ok(())
    }

    /// Runs `p` (whose module, if it gets one, exits at once) until its
    /// container has terminated or waits for something other than creation.
    async fn first_outcome(p: Pod) -> anyhow::Result<(Harness, PodStatus)> {
        let h = harness()?;
        let (_tx, rx) = watch::channel(Arc::new(p));
        let task = tokio::spawn(run_pod(
            h.ctx.clone(),
            rx,
            CancellationToken::new(),
            CancellationToken::new(),
        ));
        let s = h
            .wait_status(|s| {
                container_state(s).is_some_and(|st| {
                    st.terminated.is_some()
                        || st
                            .waiting
                            .and_then(|w| w.reason)
                            .is_some_and(|r| r != "ContainerCreating")
                })
            })
            .await?;
        task.abort();
        Ok((h, s))
    }

    fn with_pull_policy(mut p: Pod, policy: &str) -> Pod {
        if let Some(c) = p.spec.as_mut().and_then(|s| s.containers.first_mut()) {
            c.image_pull_policy = Some(policy.into());
        }
        p
    }

    fn waiting_of(s: &PodStatus) -> (String, String) {
        let w = container_state(s).and_then(|st| st.waiting);
        (
            w.as_ref()
                .and_then(|w| w.reason.clone())
                .unwrap_or_default(),
            w.and_then(|w| w.message).unwrap_or_default(),
        )
    }

    #[tokio::test]
    async fn pull_policies_decide_what_reaches_the_source() -> anyhow::Result<()> {
        // IfNotPresent (the default for a tag) with the module on the node:
        // no pull at all.
        let (h, s) = first_outcome(pod("cached:v1", "Never")).await?;
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        assert_eq!(h.events(), ["Pulled", "Created", "Started"]);
        // Always asks the source even so.
        let (h, _) = first_outcome(with_pull_policy(pod("cached:v1", "Never"), "Always")).await?;
        assert_eq!(h.events()[..2], ["Pulling", "Pulled"]);
        // `:latest` defaults to Always.
        let (h, _) = first_outcome(pod("cached", "Never")).await?;
        assert_eq!(h.events()[..2], ["Pulling", "Pulled"]);
        // Never with nothing on the node.
        let (h, s) = first_outcome(with_pull_policy(pod("ok:v1", "Never"), "Never")).await?;
        assert_eq!(
            waiting_of(&s),
            (
                "ErrImageNeverPull".to_string(),
                "Container image \"ok:v1\" is not present with pull policy of Never".to_string()
            )
        );
        assert_eq!(h.events(), ["ErrImageNeverPull"]);
        Ok(())
    }

    #[tokio::test]
    async fn image_pull_secrets_reach_the_registry_pull() -> anyhow::Result<()> {
        let private = "reg.example:5000/app:v1";
        let (h, s) = first_outcome(pod(private, "Never")).await?;
        let (reason, message) = waiting_of(&s);
        assert_eq!(reason, "ErrImagePull");
        assert!(
            message.contains("unauthorized: authentication required"),
            "{message}"
        );
        assert!(
            !h.events()
                .contains(&"FailedToRetrieveImagePullSecret".to_string())
        );

        let mut p = pod(private, "Never");
        if let Some(spec) = p.spec.as_mut() {
            spec.image_pull_secrets = Some(vec![
                k8s_openapi::api::core::v1::LocalObjectReference {
                    name: "gone".into(),
                },
                k8s_openapi::api::core::v1::LocalObjectReference {
                    name: "regcred".into(),
                },
            ]);
        }
        let (h, s) = first_outcome(p).await?;
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        assert_eq!(
            h.events()[..3],
            ["FailedToRetrieveImagePullSecret", "Pulling", "Pulled"],
            "a missing secret is reported, the others still used"
        );
        Ok(())
    }

    #[tokio::test]
    async fn missing_image_reports_err_image_pull_then_backoff() -> anyhow::Result<()> {
        let h = harness()?;
        let (_tx, rx) = watch::channel(Arc::new(pod("missing:v9", "Always")));
        let task = tokio::spawn(run_pod(
            h.ctx.clone(),
            rx,
            CancellationToken::new(),
            CancellationToken::new(),
        ));
        let reason = |s: &PodStatus| {
            container_state(s)
                .and_then(|st| st.waiting)
                .and_then(|w| w.reason)
                .unwrap_or_default()
        };
        let s = h.wait_status(|s| reason(s) == "ErrImagePull").await?;
        let msg = container_state(&s)
            .and_then(|st| st.waiting)
            .and_then(|w| w.message)
            .unwrap_or_default();
        assert!(msg.contains("module \"missing:v9\" not found"), "{msg}");
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        h.wait_status(|s| reason(s) == "ImagePullBackOff").await?;
        task.abort();
        Ok(())
    }

    #[tokio::test]
    async fn deleted_pod_is_stopped_deleted_and_cleaned_up() -> anyhow::Result<()> {
        let h = harness()?;
        let mut p = pod("spin:v1", "Always");
        let (tx, rx) = watch::channel(Arc::new(p.clone()));
        let task = tokio::spawn(run_pod(
            h.ctx.clone(),
            rx,
            CancellationToken::new(),
            CancellationToken::new(),
        ));
        h.wait_status(|s| s.phase.as_deref() == Some("Running"))
            .await?;
        assert!(h.ctx.pods_dir.join("u1").exists());
        p.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        p.metadata.deletion_grace_period_seconds = Some(0);
        tx.send_replace(Arc::new(p));
        tokio::time::timeout(Duration::from_secs(20), task).await??;
        let deleted = h
            .api
            .deleted
            .lock()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .clone();
        assert_eq!(deleted, ["u1"]);
        assert!(!h.ctx.pods_dir.join("u1").exists());
        assert!(h.ctx.logs.is_empty());
        assert!(h.events().contains(&"Killing".to_string()));
        let last = h
            .api
            .statuses
            .lock()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .last()
            .cloned()
            .unwrap_or_default();
        let t = container_state(&last).and_then(|st| st.terminated);
        assert_eq!(t.map(|t| t.exit_code), Some(137));
        Ok(())
    }

    #[tokio::test]
    async fn huge_grace_period_does_not_kill_the_worker() -> anyhow::Result<()> {
        let h = harness()?;
        let mut p = pod("spin:v1", "Always");
        if let Some(spec) = p.spec.as_mut() {
            spec.termination_grace_period_seconds = Some(i64::MAX);
        }
        let (tx, rx) = watch::channel(Arc::new(p.clone()));
        let task = tokio::spawn(run_pod(
            h.ctx.clone(),
            rx,
            CancellationToken::new(),
            CancellationToken::new(),
        ));
        h.wait_status(|s| s.phase.as_deref() == Some("Running"))
            .await?;
        p.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        p.metadata.deletion_grace_period_seconds = Some(i64::MAX);
        tx.send_replace(Arc::new(p.clone()));
        // "Killing" is recorded in the same synchronous stretch as both
        // deadline computations.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !h.events().contains(&"Killing".to_string()) {
            anyhow::ensure!(Instant::now() < deadline, "no Killing event");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            !task.is_finished(),
            "the worker died on a huge grace period"
        );
        // The worker keeps serving the pod: a shorter grace still ends it.
        p.metadata.deletion_grace_period_seconds = Some(0);
        tx.send_replace(Arc::new(p));
        tokio::time::timeout(Duration::from_secs(20), task).await??;
        assert_eq!(
            h.sandbox.stopped.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_dead_worker_stops_its_containers() -> anyhow::Result<()> {
        let h = harness()?;
        let (_tx, rx) = watch::channel(Arc::new(pod("spin:v1", "Always")));
        let task = tokio::spawn(run_pod(
            h.ctx.clone(),
            rx,
            CancellationToken::new(),
            CancellationToken::new(),
        ));
        h.wait_status(|s| s.phase.as_deref() == Some("Running"))
            .await?;
        task.abort();
        let _ = task.await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while h.sandbox.stopped.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            anyhow::ensure!(Instant::now() < deadline, "the guest outlived its worker");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    fn with_init(mut p: Pod, image: &str) -> Pod {
        if let Some(spec) = p.spec.as_mut() {
            spec.init_containers = Some(vec![Container {
                name: "init".into(),
                image: Some(image.into()),
                ..Default::default()
            }]);
        }
        p
    }

    #[tokio::test]
    async fn init_containers_run_first_and_gate_the_pod() -> anyhow::Result<()> {
        let h = harness()?;
        let (_tx, rx) = watch::channel(Arc::new(with_init(pod("ok:v1", "Never"), "ok:v1")));
        let task = tokio::spawn(run_pod(
            h.ctx.clone(),
            rx,
            CancellationToken::new(),
            CancellationToken::new(),
        ));
        let s = h
            .wait_status(|s| s.phase.as_deref() == Some("Succeeded"))
            .await?;
        let init = s.init_container_statuses.clone().unwrap_or_default();
        assert_eq!(init.len(), 1);
        assert!(init[0].ready);
        // The first report shows the main container waiting for init.
        let first = h
            .wait_status(|s| {
                container_state(s)
                    .and_then(|st| st.waiting)
                    .and_then(|w| w.reason)
                    .as_deref()
                    == Some("PodInitializing")
            })
            .await?;
        assert_eq!(first.phase.as_deref(), Some("Pending"));
        task.abort();

        // A failing init container with restartPolicy Never fails the pod
        // and the main container never starts.
        let h = harness()?;
        let (_tx, rx) = watch::channel(Arc::new(with_init(pod("ok:v1", "Never"), "fail:v1")));
        let task = tokio::spawn(run_pod(
            h.ctx.clone(),
            rx,
            CancellationToken::new(),
            CancellationToken::new(),
        ));
        let s = h
            .wait_status(|s| s.phase.as_deref() == Some("Failed"))
            .await?;
        let waiting = container_state(&s).and_then(|st| st.waiting);
        assert_eq!(
            waiting.and_then(|w| w.reason).as_deref(),
            Some("PodInitializing")
        );
        let initialized = s
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Initialized");
        assert_eq!(initialized.map(|c| c.status).as_deref(), Some("False"));
        task.abort();
        Ok(())
    }

    #[tokio::test]
    async fn invalid_module_is_create_container_error() -> anyhow::Result<()> {
        let h = harness()?;
        let (_tx, rx) = watch::channel(Arc::new(pod("bad:v1", "Always")));
        let task = tokio::spawn(run_pod(
            h.ctx.clone(),
            rx,
            CancellationToken::new(),
            CancellationToken::new(),
        ));
        let s = h
            .wait_status(|s| {
                container_state(s)
                    .and_then(|st| st.waiting)
                    .and_then(|w| w.reason)
                    .as_deref()
                    == Some("CreateContainerError")
            })
            .await?;
        let msg = container_state(&s)
            .and_then(|st| st.waiting)
            .and_then(|w| w.message)
            .unwrap_or_default();
        assert!(msg.contains("_start"), "{msg}");
        task.abort();
        Ok(())
    }

    #[tokio::test]
    async fn pulling_and_compiling_are_said_while_they_happen() -> anyhow::Result<()> {
        let h = harness()?;
        let (_tx, rx) = watch::channel(Arc::new(pod("big:v1", "Always")));
        let task = tokio::spawn(run_pod(
            h.ctx.clone(),
            rx,
            CancellationToken::new(),
            CancellationToken::new(),
        ));
        h.wait_status(|s| s.phase.as_deref() == Some("Running"))
            .await?;
        let said: Vec<String> = h
            .api
            .statuses
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .iter()
            .filter_map(|s| container_state(s)?.waiting)
            .filter(|w| w.reason.as_deref() == Some("ContainerCreating"))
            .filter_map(|w| w.message)
            .collect();
        assert_eq!(
            said,
            [
                "pulling image \"big:v1\"",
                "compiling module (0.0 MiB, not in the compile cache)"
            ]
        );
        assert_eq!(
            h.events(),
            ["Pulling", "Pulled", "Compiled", "Created", "Started"]
        );
        task.abort();
        Ok(())
    }

    #[test]
    fn env_references_expand() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("cost $5", &env), "cost $5");
    }

    #[test]
    fn argv_follows_command_and_args() {
        let mut c = Container {
            name: "c".into(),
            args: Some(vec!["--n".into(), "$(N)".into()]),
            ..Default::default()
        };
        let env = vec![("N".to_string(), "3".to_string())];
        assert_eq!(argv(&c, "hello:v1", &env), ["hello:v1", "--n", "3"]);
        c.command = Some(vec!["prog".into(), "sub".into()]);
        assert_eq!(argv(&c, "hello:v1", &env), ["prog", "sub", "--n", "3"]);
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("64Mi"), Some(64 << 20));
        assert_eq!(parse_quantity("1G"), Some(1_000_000_000));
        assert_eq!(parse_quantity("128974848"), Some(128_974_848));
        assert_eq!(parse_quantity("129e6"), Some(129_000_000));
        assert_eq!(parse_quantity("bogus"), None);
        assert_eq!(parse_quantity_scaled("500m", 1000.0), Some(500));
        assert_eq!(parse_quantity_scaled("2", 1000.0), Some(2000));
    }

    impl Harness {
        /// Waits (bounded) for an event `reason` about pod `uid`.
        async fn wait_event(&self, uid: &str, reason: &str) -> anyhow::Result<()> {
            let deadline = Instant::now() + Duration::from_secs(20);
            while self.count_events(uid, reason) == 0 {
                anyhow::ensure!(Instant::now() < deadline, "no {reason} event for {uid}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(())
        }

        fn count_events(&self, uid: &str, reason: &str) -> usize {
            self.events
                .0
                .lock()
                .map(|v| {
                    v.iter()
                        .filter(|e| e.uid == uid && e.reason == reason)
                        .count()
                })
                .unwrap_or_default()
        }
    }

    fn named(mut p: Pod, name: &str, uid: &str, version: &str) -> Pod {
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(uid.into());
        p.metadata.resource_version = Some(version.into());
        p
    }

    #[tokio::test]
    async fn stored_pods_run_without_the_api_and_keep_their_worker_on_relist() -> anyhow::Result<()>
    {
        let h = harness()?;
        let local = crate::local_state::LocalState::open(
            crate::local_state::LocalStateConfig::new(h._dir.path().join("state")),
        )?;
        let kept = named(pod("spin:v1", "Always"), "p", "u1", "5");
        let gone = named(pod("spin:v1", "Always"), "gone", "u3", "6");
        local.save_pod(&kept).await?;
        local.save_pod(&gone).await?;
        // The watch stream: nothing arrives until the test says so, as
        // with an apiserver that cannot be reached.
        let (tx, rx) = mpsc::channel::<Result<watcher::Event<Pod>, watcher::Error>>(8);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(dispatch(
            h.ctx.clone(),
            Some(local.clone()),
            shutdown.clone(),
            move |writer| {
                reflector::reflector(writer, tokio_stream::wrappers::ReceiverStream::new(rx))
            },
        ));
        h.wait_event("u1", "Started").await?;
        h.wait_event("u3", "Started").await?;
        // The apiserver answers: the same pod, newer (another
        // resourceVersion, its status as the API last had it), and without
        // the pod deleted meanwhile.
        let mut relisted = named(pod("spin:v1", "Always"), "p", "u1", "9");
        relisted.status = Some(PodStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        });
        relisted.metadata.labels = Some([("seen".to_string(), "api".to_string())].into());
        tx.send(Ok(watcher::Event::Init)).await?;
        tx.send(Ok(watcher::Event::InitApply(relisted))).await?;
        tx.send(Ok(watcher::Event::InitDone)).await?;
        // Processed in order: once this one runs, the relist was handled.
        let marker = named(pod("ok:v1", "Never"), "q", "u2", "10");
        tx.send(Ok(watcher::Event::Apply(marker))).await?;
        h.wait_event("u2", "Started").await?;

        let stored = local.load_pods().await;
        let uids: Vec<_> = stored
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        assert_eq!(uids, ["u1", "u2"], "the vanished pod is forgotten");
        let labels = stored[0].metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("seen").map(String::as_str), Some("api"));
        // The vanished pod is stopped.
        h.wait_event("u3", "Killing").await?;

        shutdown.cancel();
        let summary = tokio::time::timeout(Duration::from_secs(30), task).await??;
        assert_eq!(
            summary.workers_started, 3,
            "u1's worker was kept across the relist"
        );
        assert_eq!(h.count_events("u1", "Started"), 1);
        assert_eq!(h.count_events("u1", "Killing"), 0);
        Ok(())
    }

    /// A client whose every request fails to connect (a closed port).
    fn unreachable_client() -> anyhow::Result<kube::Client> {
        let config = kube::Config::new("http://127.0.0.1:9".parse()?);
        Ok(kube::Client::try_from(config)?)
    }

    /// A client to an apiserver answering every request with `code`.
    fn answering_client(code: u16) -> kube::Client {
        let service =
            tower::service_fn(move |_req: http::Request<kube::client::Body>| async move {
                let status = serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "NotFound", "code": code,
                    "message": "configmaps \"cfg\" not found"
                });
                http::Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(
                        status.to_string(),
                    )))
            });
        kube::Client::new(service, "default")
    }

    #[tokio::test]
    async fn config_reads_fall_back_to_the_stored_copy_only_when_unreachable() -> anyhow::Result<()>
    {
        let dir = tempfile::tempdir()?;
        let local = crate::local_state::LocalState::open(
            crate::local_state::LocalStateConfig::new(dir.path().join("state")),
        )?;
        let cm: BTreeMap<String, String> = [("greeting".to_string(), "hi".to_string())].into();
        let secret: BTreeMap<String, Vec<u8>> = [("k".to_string(), b"v".to_vec())].into();
        local.save_config_map("default", "cfg", &cm).await?;
        local.save_secret("default", "creds", &secret).await?;

        let offline = KubePodApi::with_local_state(unreachable_client()?, local.clone());
        assert_eq!(
            offline.config_map("default", "cfg").await,
            Ok(Some(cm.clone()))
        );
        assert_eq!(offline.secret("default", "creds").await, Ok(Some(secret)));
        assert!(offline.config_map("default", "never-read").await.is_err());
        // Without local state, as before: an error.
        let plain = KubePodApi::new(unreachable_client()?);
        assert!(plain.config_map("default", "cfg").await.is_err());
        // A server error is not an answer about the object either.
        let failing = KubePodApi::with_local_state(answering_client(503), local.clone());
        assert_eq!(failing.config_map("default", "cfg").await, Ok(Some(cm)));

        // A reachable apiserver saying NotFound is believed, and the copy
        // goes.
        let online = KubePodApi::with_local_state(answering_client(404), local.clone());
        assert_eq!(online.config_map("default", "cfg").await, Ok(None));
        assert_eq!(online.secret("default", "creds").await, Ok(None));
        assert_eq!(local.config_map("default", "cfg").await, None);
        assert_eq!(local.secret("default", "creds").await, None);
        Ok(())
    }

    #[tokio::test]
    async fn a_status_that_failed_to_land_is_written_again() -> anyhow::Result<()> {
        let h = harness()?;
        // Every write of the first pass fails; nothing else would wake the
        // worker of a container that just runs.
        h.api
            .failing_writes
            .store(1, std::sync::atomic::Ordering::SeqCst);
        let (_tx, rx) = watch::channel(Arc::new(pod("spin:v1", "Always")));
        let task = tokio::spawn(run_pod(
            h.ctx.clone(),
            rx,
            CancellationToken::new(),
            CancellationToken::new(),
        ));
        let s = h
            .wait_status(|s| s.phase.as_deref() == Some("Running"))
            .await?;
        let running = container_state(&s).and_then(|st| st.running);
        assert!(running.is_some(), "the latest status landed");
        task.abort();
        Ok(())
    }
}
