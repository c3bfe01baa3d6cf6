//! Helpers over objects as `serde_json::Value`: metadata access, system
//! fields, selectors and the shapes derived from an object.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use wasmkube_api::resources::ResourceInfo;
use wasmkube_api::selector::{FieldSelector, LabelSelector};

/// `metadata` of `obj`, if it is an object.
pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata")?.as_object()
}

/// `metadata` of `obj`, created when missing; `None` when `obj` is not a
/// JSON object (decoding rejects those before any write).
pub fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let m = obj
        .as_object_mut()?
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m.as_object_mut()
}

/// Sets `metadata.<field>`.
pub fn set_meta(obj: &mut Value, field: &str, value: Value) {
    if let Some(m) = meta_mut(obj) {
        m.insert(field.to_string(), value);
    }
}

/// Removes `metadata.<field>`.
pub fn remove_meta(obj: &mut Value, field: &str) -> Option<Value> {
    obj.get_mut("metadata")?.as_object_mut()?.remove(field)
}

/// A string field of `metadata`.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj)?.get(field)?.as_str()
}

/// `metadata.name` or "".
pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or("")
}

/// `metadata.labels` as a map (non-string values ignored).
pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    meta(obj)
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `metadata.finalizers` is non-empty.
pub fn has_finalizers(obj: &Value) -> bool {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, revision: i64) {
    set_meta(obj, "resourceVersion", Value::String(revision.to_string()));
}

/// `obj` without `metadata.resourceVersion`: what the store holds (the
/// revision lives in the key's `mod_revision`, injected on every read).
pub fn without_resource_version(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    o
}

/// The current time as Kubernetes writes timestamps (RFC 3339, seconds).
pub fn timestamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Now, formatted by [`timestamp`].
pub fn now() -> String {
    timestamp(jiff::Timestamp::now())
}

/// The namespace/label/field filter of a list or watch.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    /// Whether `obj` (of `kind`) passes the filter.
    pub fn matches(&self, kind: &str, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && meta_str(obj, "namespace").unwrap_or("") != ns
        {
            return false;
        }
        if !self.labels.is_empty() && !self.labels.matches(&labels(obj)) {
            return false;
        }
        self.fields.is_empty() || self.fields.matches(kind, obj)
    }
}

/// The `PartialObjectMetadata` of `obj` (for `as=PartialObjectMetadata` clients).
pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A BOOKMARK event's object: only kind, apiVersion and the revision.
pub fn bookmark(res: &ResourceInfo, revision: i64, initial_events_end: bool) -> Value {
    let mut meta = json!({ "resourceVersion": revision.to_string() });
    if initial_events_end {
        meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    json!({ "kind": res.kind, "apiVersion": res.api_version(), "metadata": meta })
}

/// Kubernetes' pod QoS class from the containers' requests and limits.
pub fn pod_qos_class(pod: &Value) -> &'static str {
    let containers = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| pod.pointer(&format!("/spec/{f}")).and_then(Value::as_array))
        .flatten()
        .collect::<Vec<_>>();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        let named = |m: Option<&Map<String, Value>>, r: &str| m.and_then(|m| m.get(r)).cloned();
        for r in ["cpu", "memory"] {
            let req = named(requests, r);
            let lim = named(limits, r);
            if req.is_some() || lim.is_some() {
                any = true;
            }
            // A request defaults to its limit, so only a differing request breaks Guaranteed.
            match (&req, &lim) {
                (_, None) => guaranteed = false,
                (Some(q), Some(l)) if q != l => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Sets `obj.<path>` to `value`, turning missing or non-object steps into
/// objects (so a malformed stored value cannot make this panic).
pub fn set_path(obj: &mut Value, path: &[&str], value: Value) {
    let Some((last, steps)) = path.split_last() else {
        *obj = value;
        return;
    };
    let mut cur = obj;
    for step in steps {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Some(m) = cur.as_object_mut() else { return };
        cur = m.entry(step.to_string()).or_insert(Value::Null);
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    if let Some(m) = cur.as_object_mut() {
        m.insert(last.to_string(), value);
    }
}
