//! core/v1 Events about pods (`Scheduled`, `FailedScheduling`).
//!
//! Repeats of the same message for the same pod bump `count` and
//! `lastTimestamp` of the existing Event instead of creating a new one, as
//! the Kubernetes event recorder does, so `kubectl describe` shows
//! `(x4 over 30s)` rather than a wall of lines. Writes run in spawned tasks
//! bounded by a semaphore so a slow apiserver cannot stall scheduling.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::Semaphore;

/// How many event writes may be in flight at once.
const MAX_IN_FLIGHT: usize = 8;

#[derive(Debug, Clone)]
struct Emitted {
    event_name: String,
    message: String,
    count: i32,
}

/// Publishes Events for one component.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: String,
    instance: String,
    permits: Arc<Semaphore>,
    last: Arc<std::sync::Mutex<HashMap<String, Emitted>>>,
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
    /// A recorder writing as `component` (e.g. `default-scheduler`).
    pub fn new(client: Client, component: &str, instance: &str) -> Self {
        Recorder {
            client,
            component: component.to_string(),
            instance: instance.to_string(),
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            last: Arc::default(),
        }
    }

    /// Records an event about `pod`, folding a repeat of its previous
    /// message into a count bump.
    pub async fn record(&self, pod: &Pod, type_: EventType, reason: &str, message: &str) {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
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
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(prev) = previous {
                let patch = serde_json::json!({
                    "count": prev.count,
                    "lastTimestamp": Time(now),
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
                    Err(e) => {
                        tracing::debug!(error = %e, "event bump failed, creating a new event")
                    }
                }
            }
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::warn!(error = %e, "could not record event");
            }
        });
    }

    /// Forgets the dedup state of a pod that is gone or scheduled.
    pub fn forget(&self, pod_key: &str) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.remove(pod_key);
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
}
