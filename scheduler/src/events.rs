//! core/v1 Events about pods (`Scheduled`, `FailedScheduling`).
//!
//! Repeats of the same message for the same pod bump `count` and
//! `lastTimestamp` of the existing Event instead of creating a new one, as
//! the Kubernetes event recorder does, so `kubectl describe` shows
//! `(x4 over 30s)` rather than a wall of lines.
//!
//! Recording never waits for the API server, as with Kubernetes' event
//! broadcaster: an Event goes into a queue of at most [`MAX_QUEUED`] that
//! one background task writes out, a few requests at a time; when the queue
//! is full (the API server is slower than the scheduler) the Event is
//! dropped and counted, so Events can never slow scheduling down.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

/// How many event writes may be in flight at once.
const MAX_IN_FLIGHT: usize = 8;
/// Events waiting to be written (client-go's `maxQueuedEvents`).
pub const MAX_QUEUED: usize = 1000;

#[derive(Debug, Clone)]
struct Emitted {
    event_name: String,
    message: String,
    count: i32,
}

/// Publishes Events for one component.
#[derive(Clone)]
pub struct Recorder {
    component: String,
    instance: String,
    queue: mpsc::Sender<Queued>,
    dropped: Arc<AtomicU64>,
    last: Arc<std::sync::Mutex<HashMap<String, Emitted>>>,
}

/// One write waiting in the queue.
struct Queued {
    namespace: String,
    /// Bump this earlier Event's count instead of creating `event`.
    previous: Option<Emitted>,
    event: Event,
    now: jiff::Timestamp,
}

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Informational.
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

/// Builds the Event object (pure, so its shape is tested).
pub fn build_event(
    pod: &Pod,
    type_: EventType,
    reason: &str,
    message: &str,
    component: &str,
    instance: &str,
    now: jiff::Timestamp,
) -> Event {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: Some(namespace),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.as_str().into()),
        source: Some(EventSource {
            component: Some(component.into()),
            host: None,
        }),
        reporting_component: Some(component.into()),
        reporting_instance: Some(instance.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        action: Some(
            if reason == "Scheduled" {
                "Binding"
            } else {
                "Scheduling"
            }
            .into(),
        ),
        ..Default::default()
    }
}

impl Recorder {
    /// A recorder writing as `component` (e.g. `default-scheduler`). Its
    /// writer task runs until the last clone of the recorder is dropped.
    pub fn new(client: Client, component: &str, instance: &str) -> Self {
        let (queue, rx) = mpsc::channel(MAX_QUEUED);
        tokio::spawn(write_events(client, rx));
        Recorder {
            component: component.to_string(),
            instance: instance.to_string(),
            queue,
            dropped: Arc::default(),
            last: Arc::default(),
        }
    }

    /// Records an event about `pod`, folding a repeat of its previous
    /// message into a count bump. Never waits: when the queue is full the
    /// event is dropped (see [`dropped`](Self::dropped)).
    pub fn record(&self, pod: &Pod, type_: EventType, reason: &str, message: &str) {
        let key = pod_key(pod);
        let now = jiff::Timestamp::now();
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let previous = {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            match last.get_mut(&key) {
                Some(e) if e.message == message => {
                    e.count = e.count.saturating_add(1);
                    Some(e.clone())
                }
                _ => None,
            }
        };
        let event = build_event(
            pod,
            type_,
            reason,
            message,
            &self.component,
            &self.instance,
            now,
        );
        if previous.is_none()
            && let Some(name) = event.metadata.name.clone()
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            last.insert(
                key,
                Emitted {
                    event_name: name,
                    message: message.to_string(),
                    count: 1,
                },
            );
        }
        let queued = Queued {
            namespace,
            previous,
            event,
            now,
        };
        if self.queue.try_send(queued).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Once per hundred, so a storm does not become a log storm.
            if dropped % 100 == 1 {
                tracing::warn!(
                    dropped,
                    reason,
                    "event queue full ({MAX_QUEUED}); dropping events"
                );
            }
        }
    }

    /// Events dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Forgets the dedup state of a pod that is gone or scheduled.
    pub fn forget(&self, pod_key: &str) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.remove(pod_key);
    }
}

/// Writes queued events, [`MAX_IN_FLIGHT`] at a time, until every sender
/// is gone.
async fn write_events(client: Client, rx: mpsc::Receiver<Queued>) {
    tokio_stream::wrappers::ReceiverStream::new(rx)
        .for_each_concurrent(MAX_IN_FLIGHT, |q| write_event(client.clone(), q))
        .await;
}

async fn write_event(client: Client, q: Queued) {
    let api: Api<Event> = Api::namespaced(client, &q.namespace);
    if let Some(prev) = q.previous {
        let patch = serde_json::json!({
            "count": prev.count,
            "lastTimestamp": Time(q.now),
        });
        match api
            .patch(
                &prev.event_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => return,
            Err(e) => tracing::debug!(error = %e, "event bump failed, creating a new event"),
        }
    }
    if let Err(e) = api.create(&PostParams::default(), &q.event).await {
        tracing::warn!(error = %e, "could not record event");
    }
}

/// `namespace/name` of a pod.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_shape_matches_kubernetes() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("x".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let now =
            jiff::Timestamp::from_second(1_700_000_000).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let ev = build_event(
            &pod,
            EventType::Normal,
            "Scheduled",
            "Successfully assigned default/x to node1",
            "default-scheduler",
            "default-scheduler-host",
            now,
        );
        let v = serde_json::to_value(&ev).unwrap_or_default();
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "Event");
        assert_eq!(
            v["metadata"]["name"],
            format!("x.{:x}", now.as_nanosecond())
        );
        assert_eq!(v["involvedObject"]["kind"], "Pod");
        assert_eq!(v["involvedObject"]["uid"], "u1");
        assert_eq!(v["source"]["component"], "default-scheduler");
        assert_eq!(v["type"], "Normal");
        assert_eq!(v["count"], 1);
        assert_eq!(v["firstTimestamp"], "2023-11-14T22:13:20Z");
    }

    /// An API server that never answers: recording (not async, so it cannot
    /// wait) keeps the queue's room of events and drops and counts the rest.
    #[tokio::test]
    async fn recording_never_waits_for_the_api_server() {
        let never = tower::service_fn(|_req: http::Request<kube::client::Body>| {
            std::future::pending::<Result<http::Response<kube::client::Body>, std::io::Error>>()
        });
        let client = Client::new(never, "default");
        let recorder = Recorder::new(client, "default-scheduler", "test");
        let total = MAX_QUEUED + MAX_IN_FLIGHT + 50;
        for i in 0..total {
            let pod = Pod {
                metadata: ObjectMeta {
                    name: Some(format!("p{i}")),
                    namespace: Some("default".into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            recorder.record(&pod, EventType::Normal, "Scheduled", "assigned");
            // Let the writer task take what it can.
            tokio::task::yield_now().await;
        }
        let dropped = recorder.dropped();
        assert!(dropped >= 50, "dropped {dropped}");
        assert!(
            dropped <= (total - MAX_QUEUED) as u64,
            "dropped {dropped} of {total}: the queue holds {MAX_QUEUED}"
        );
    }
}
