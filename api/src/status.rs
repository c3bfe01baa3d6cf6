//! Kubernetes `Status` objects: the one shape every API error takes on the wire.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ListMeta, Status, StatusCause, StatusDetails,
};

/// A field-level problem found by validation (becomes a `details.causes` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldCause {
    /// Machine-readable reason, e.g. `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, `FieldValueDuplicate`, `FieldValueTooLong`.
    pub reason: String,
    /// Human message, e.g. `Required value`.
    pub message: String,
    /// JSON path of the field, e.g. `metadata.name` or `spec.containers[0].image`.
    pub field: String,
}

impl FieldCause {
    pub fn new(reason: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason: reason.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn required(field: impl Into<String>) -> Self {
        Self::new("FieldValueRequired", field, "Required value")
    }
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new("FieldValueInvalid", field, message)
    }
    pub fn unsupported(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new("FieldValueNotSupported", field, message)
    }
    pub fn forbidden(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new("FieldValueForbidden", field, message)
    }
}

/// Builds a failure `Status` with `code`, `reason` and `message`.
pub fn failure(code: u16, reason: &str, message: impl Into<String>) -> Status {
    Status {
        code: Some(i32::from(code)),
        reason: Some(reason.to_string()),
        message: Some(message.into()),
        status: Some("Failure".to_string()),
        metadata: ListMeta::default(),
        details: None,
    }
}

fn with_details(mut s: Status, group: &str, kind: &str, name: &str) -> Status {
    s.details = Some(StatusDetails {
        group: (!group.is_empty()).then(|| group.to_string()),
        kind: Some(kind.to_string()),
        name: (!name.is_empty()).then(|| name.to_string()),
        ..Default::default()
    });
    s
}

/// A successful `Status` (e.g. the answer to some deletes and evictions).
pub fn success(group: &str, kind: &str, name: &str, uid: Option<&str>) -> Status {
    let mut s = Status {
        status: Some("Success".to_string()),
        code: Some(200),
        ..Default::default()
    };
    s = with_details(s, group, kind, name);
    if let Some(d) = s.details.as_mut() {
        d.uid = uid.map(str::to_string);
    }
    s
}

/// `qualified` is the resource as Kubernetes names it in messages: `pods`,
/// `deployments.apps`.
fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

/// 404: `pods "nope" not found`.
pub fn not_found(group: &str, resource: &str, name: &str) -> Status {
    let s = failure(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", qualified(group, resource)),
    );
    with_details(s, group, resource, name)
}

/// 409: `pods "x" already exists`.
pub fn already_exists(group: &str, resource: &str, name: &str) -> Status {
    let s = failure(
        409,
        "AlreadyExists",
        format!("{} \"{name}\" already exists", qualified(group, resource)),
    );
    with_details(s, group, resource, name)
}

/// 409: an update lost a race on resourceVersion.
pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Status {
    let s = failure(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            qualified(group, resource)
        ),
    );
    with_details(s, group, resource, name)
}

/// 422: `Pod "X" is invalid: [spec.containers: Required value, …]`.
pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<FieldCause>) -> Status {
    let summary = causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect::<Vec<_>>()
        .join(", ");
    let message = if causes.len() == 1 {
        format!("{kind} \"{name}\" is invalid: {summary}")
    } else {
        format!("{kind} \"{name}\" is invalid: [{summary}]")
    };
    let mut s = with_details(failure(422, "Invalid", message), group, kind, name);
    if let Some(d) = s.details.as_mut() {
        d.causes = Some(
            causes
                .into_iter()
                .map(|c| StatusCause {
                    reason: Some(c.reason),
                    message: Some(c.message),
                    field: Some(c.field),
                })
                .collect(),
        );
    }
    s
}

/// 400 BadRequest.
pub fn bad_request(message: impl Into<String>) -> Status {
    failure(400, "BadRequest", message)
}

/// 401 Unauthorized.
pub fn unauthorized() -> Status {
    failure(401, "Unauthorized", "Unauthorized")
}

/// 403 Forbidden.
pub fn forbidden(message: impl Into<String>) -> Status {
    failure(403, "Forbidden", message)
}

/// 405 MethodNotAllowed.
pub fn method_not_allowed(message: impl Into<String>) -> Status {
    failure(405, "MethodNotAllowed", message)
}

/// 410 Expired: `too old resource version: 109 (150)`.
pub fn expired(requested: i64, oldest: i64) -> Status {
    failure(
        410,
        "Expired",
        format!("too old resource version: {requested} ({oldest})"),
    )
}

/// 413 RequestEntityTooLarge.
pub fn too_large(limit: usize) -> Status {
    failure(
        413,
        "RequestEntityTooLarge",
        format!("the request body is larger than the limit of {limit} bytes"),
    )
}

/// 415 UnsupportedMediaType.
pub fn unsupported_media_type(content_type: &str) -> Status {
    failure(
        415,
        "UnsupportedMediaType",
        format!("the body of the request was in an unknown format: {content_type}"),
    )
}

/// 429 TooManyRequests.
pub fn too_many_requests(message: impl Into<String>) -> Status {
    failure(429, "TooManyRequests", message)
}

/// 500 InternalError. The message must not leak internals beyond a short cause.
pub fn internal(message: impl Into<String>) -> Status {
    failure(500, "InternalError", message)
}

/// 503 ServiceUnavailable.
pub fn unavailable(message: impl Into<String>) -> Status {
    failure(503, "ServiceUnavailable", message)
}

/// The `Status` as the JSON the wire carries (with `kind` and `apiVersion`).
pub fn to_json(status: &Status) -> serde_json::Value {
    let mut v = serde_json::to_value(status).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(o) = v.as_object_mut() {
        o.insert("kind".into(), "Status".into());
        o.insert("apiVersion".into(), "v1".into());
        o.entry("metadata").or_insert_with(|| serde_json::json!({}));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_matches_kubernetes_wording() {
        let v = to_json(&not_found("", "pods", "nope"));
        assert_eq!(v["message"], "pods \"nope\" not found");
        assert_eq!(v["code"], 404);
        assert_eq!(v["reason"], "NotFound");
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["details"]["name"], "nope");
    }

    #[test]
    fn invalid_lists_causes() {
        let v = to_json(&invalid(
            "",
            "Pod",
            "X",
            vec![FieldCause::required("spec.containers")],
        ));
        assert_eq!(v["code"], 422);
        assert_eq!(v["details"]["causes"][0]["field"], "spec.containers");
        assert_eq!(
            v["message"],
            "Pod \"X\" is invalid: spec.containers: Required value"
        );
    }
}
