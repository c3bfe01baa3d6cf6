//! core/v1 Events about the objects controllers act on (`SuccessfulCreate`,
//! `ScalingReplicaSet`, …), shown by `kubectl describe`.
//!
//! Recording never blocks a reconcile: each write runs in a spawned task
//! holding a permit of a small semaphore, and when every permit is taken the
//! event is dropped (events are best effort in Kubernetes too) rather than
//! queued without bound.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::Semaphore;

/// How many event writes may be in flight at once.
const MAX_IN_FLIGHT: usize = 16;

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

/// A reference to the object an event is about.
pub fn reference(api_version: &str, kind: &str, meta: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(kind.into()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..Default::default()
    }
}

/// Builds the Event object (pure, so its shape is tested).
pub fn build_event(
    object: &ObjectReference,
    type_: EventType,
    reason: &str,
    message: &str,
    component: &str,
    now: jiff::Timestamp,
) -> Event {
    let name = object.name.clone().unwrap_or_default();
    let namespace = object
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(namespace),
            ..Default::default()
        },
        involved_object: object.clone(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.as_str().into()),
        source: Some(EventSource {
            component: Some(component.into()),
            host: None,
        }),
        reporting_component: Some(component.into()),
        reporting_instance: Some(component.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Default::default()
    }
}

/// Publishes Events for one component.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: String,
    permits: Arc<Semaphore>,
}

impl Recorder {
    /// A recorder writing as `component` (e.g. `replicaset-controller`).
    pub fn new(client: Client, component: &str) -> Self {
        Recorder {
            client,
            component: component.to_string(),
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Records an event about `object` in the background.
    pub fn record(&self, object: &ObjectReference, type_: EventType, reason: &str, message: &str) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            tracing::debug!(reason, message, "event writes saturated; event dropped");
            return;
        };
        let event = build_event(
            object,
            type_,
            reason,
            message,
            &self.component,
            jiff::Timestamp::now(),
        );
        let namespace = event
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::debug!(error = %e, "could not record event");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_the_object_and_the_component() {
        let meta = ObjectMeta {
            name: Some("web-abc".into()),
            namespace: Some("default".into()),
            uid: Some("u1".into()),
            ..Default::default()
        };
        let now =
            jiff::Timestamp::from_second(1_700_000_000).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let ev = build_event(
            &reference("apps/v1", "ReplicaSet", &meta),
            EventType::Normal,
            "SuccessfulCreate",
            "Created pod: web-abc-x1",
            "replicaset-controller",
            now,
        );
        let v = serde_json::to_value(&ev).unwrap_or_default();
        assert_eq!(v["involvedObject"]["kind"], "ReplicaSet");
        assert_eq!(v["involvedObject"]["uid"], "u1");
        assert_eq!(v["source"]["component"], "replicaset-controller");
        assert_eq!(v["reason"], "SuccessfulCreate");
        assert_eq!(v["type"], "Normal");
        assert_eq!(v["count"], 1);
    }
}
