//! Watch events as they travel on the wire: one `{"type":…,"object":…}` JSON
//! document per line of a chunked response.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The kind of change a watch event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    /// The object appeared (or, for a fresh watch, already existed).
    Added,
    /// The object was written.
    Modified,
    /// The object is gone; `object` is its last state.
    Deleted,
    /// Progress marker: only `metadata.resourceVersion` is meaningful.
    Bookmark,
    /// The watch failed; `object` is a `Status`.
    Error,
}

/// One watch event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// What happened.
    #[serde(rename = "type")]
    pub type_: EventType,
    /// The object (or a `Status` for errors, a Table row when asked for).
    pub object: Value,
}

impl WatchEvent {
    /// An event of `type_` carrying `object`.
    pub fn new(type_: EventType, object: Value) -> Self {
        WatchEvent { type_, object }
    }

    /// A BOOKMARK: an object of `kind`/`api_version` carrying only
    /// `metadata.resourceVersion`, as Kubernetes sends them.
    pub fn bookmark(api_version: &str, kind: &str, resource_version: &str) -> Self {
        WatchEvent {
            type_: EventType::Bookmark,
            object: serde_json::json!({
                "kind": kind,
                "apiVersion": api_version,
                "metadata": {"resourceVersion": resource_version},
            }),
        }
    }

    /// An ERROR event carrying a `Status`.
    pub fn error(status: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Status) -> Self {
        WatchEvent {
            type_: EventType::Error,
            object: crate::status::to_json(status),
        }
    }

    /// The event as one line of a watch stream (JSON plus `\n`).
    pub fn to_line(&self) -> String {
        // Serializing a Value-bearing struct cannot fail: keys are strings.
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_types_serialize_in_upper_case() {
        let e = WatchEvent::new(EventType::Added, json!({"kind": "Pod"}));
        assert_eq!(
            serde_json::to_value(&e).ok(),
            Some(json!({"type": "ADDED", "object": {"kind": "Pod"}}))
        );
        for (t, s) in [
            (EventType::Modified, "MODIFIED"),
            (EventType::Deleted, "DELETED"),
            (EventType::Bookmark, "BOOKMARK"),
            (EventType::Error, "ERROR"),
        ] {
            assert_eq!(serde_json::to_value(t).ok(), Some(json!(s)));
        }
    }

    #[test]
    fn a_line_is_one_json_document_and_a_newline() {
        let line = WatchEvent::bookmark("v1", "Pod", "12").to_line();
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        let back: WatchEvent = serde_json::from_str(line.trim_end()).expect("parses");
        assert_eq!(back.type_, EventType::Bookmark);
        assert_eq!(back.object["metadata"]["resourceVersion"], "12");
    }

    #[test]
    fn error_events_carry_a_status_object() {
        let e = WatchEvent::error(&crate::status::expired(109, 150));
        assert_eq!(e.object["kind"], "Status");
        assert_eq!(e.object["code"], 410);
        assert_eq!(e.object["message"], "too old resource version: 109 (150)");
    }
}
