//! Pod events (core/v1 `Event`), recorded the way the kubelet records them.
//!
//! Recording never blocks a pod worker: events go through a bounded channel
//! to one sender task, and are dropped (with a log line) when it is full,
//! as Kubernetes' broadcaster does. Repeats of the same event for the same
//! object bump `count` and `lastTimestamp` instead of creating new objects.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How many events may wait to be sent.
const QUEUE: usize = 256;
/// How many distinct events are remembered for aggregation.
const MAX_REMEMBERED: usize = 4096;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something went wrong.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One event about a pod (or one of its containers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    /// Namespace of the pod.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod uid.
    pub uid: String,
    /// `spec.containers{name}` or none for the pod itself.
    pub field_path: Option<String>,
    /// Normal or Warning.
    pub type_: EventType,
    /// `Pulling`, `Started`, `BackOff`…
    pub reason: String,
    /// Human-readable text.
    pub message: String,
}

impl PodEvent {
    /// An event about `pod`'s `container` (or the pod when `None`).
    pub fn new(
        pod: &Pod,
        container: Option<&str>,
        type_: EventType,
        reason: &str,
        message: impl Into<String>,
    ) -> PodEvent {
        PodEvent {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            pod: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            field_path: container.map(|c| format!("spec.containers{{{c}}}")),
            type_,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// Where pod workers send events.
pub trait EventSink: Send + Sync + 'static {
    /// Records an event; never waits.
    fn record(&self, event: PodEvent);
}

/// The kubelet's event recorder.
#[derive(Clone)]
pub struct EventRecorder {
    tx: mpsc::Sender<PodEvent>,
}

impl EventSink for EventRecorder {
    fn record(&self, event: PodEvent) {
        if let Err(e) = self.tx.try_send(event) {
            tracing::warn!(error = %e, "event queue full; dropping event");
        }
    }
}

impl EventRecorder {
    /// Starts the sender task; it stops when `shutdown` is cancelled.
    pub fn start(client: kube::Client, node: String, shutdown: CancellationToken) -> EventRecorder {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(send_events(client, node, rx, shutdown));
        EventRecorder { tx }
    }
}

/// (uid, fieldPath, reason, message): what makes two events "the same".
type EventKey = (String, Option<String>, String, String);

async fn send_events(
    client: kube::Client,
    node: String,
    mut rx: mpsc::Receiver<PodEvent>,
    shutdown: CancellationToken,
) {
    let mut seen: HashMap<EventKey, (String, i32)> = HashMap::new();
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            e = rx.recv() => match e { Some(e) => e, None => return },
        };
        let api: Api<Event> = Api::namespaced(client.clone(), &event.namespace);
        let now = jiff::Timestamp::now();
        let key = (
            event.uid.clone(),
            event.field_path.clone(),
            event.reason.clone(),
            event.message.clone(),
        );
        if let Some((name, count)) = seen.get_mut(&key) {
            *count += 1;
            let patch = serde_json::json!({
                "count": *count,
                "lastTimestamp": Time(now),
            });
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "updating event failed; creating a new one");
                    seen.remove(&key);
                }
            }
        }
        if seen.len() >= MAX_REMEMBERED {
            seen.clear();
        }
        let name = format!("{}.{:x}", event.pod, now.as_nanosecond());
        let object = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(event.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(event.pod.clone()),
                namespace: Some(event.namespace.clone()),
                uid: Some(event.uid.clone()),
                field_path: event.field_path.clone(),
                ..Default::default()
            },
            reason: Some(event.reason.clone()),
            message: Some(event.message.clone()),
            type_: Some(event.type_.as_str().into()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(node.clone()),
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: None::<MicroTime>,
            count: Some(1),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(node.clone()),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {
                seen.insert(key, (name, 1));
            }
            Err(e) => tracing::warn!(error = %e, reason = %event.reason, "recording event failed"),
        }
    }
}
