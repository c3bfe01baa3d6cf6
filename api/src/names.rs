//! Name and metadata validation with Kubernetes' own wording, so that a
//! `kubectl` user sees the messages they know (apimachinery's
//! `util/validation` and `ValidateObjectMeta`).

use serde_json::Value;

use crate::status::FieldCause;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_MAX: usize = 63;
/// Kubernetes' limit on the total size of an object's annotations.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// apimachinery's `RegexError`: the message, examples, and the regex.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut out = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push('\'');
        out.push_str(e);
        out.push_str("', ");
    }
    out.push_str("regex used for validation is '");
    out.push_str(fmt);
    out.push_str("')");
    out
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Matches `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn matches_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => {
            is_lower_alnum(f)
                && is_lower_alnum(l)
                && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

fn matches_dns_subdomain(s: &str) -> bool {
    s.split('.').all(matches_dns_label)
}

/// Matches `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn matches_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Every problem with `s` as a DNS-1123 label (empty when valid).
pub fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        errs.push(max_len_error(DNS1123_LABEL_MAX));
    }
    if !matches_dns_label(s) {
        if matches_dns_subdomain(s) {
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_ERR,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// Every problem with `s` as a DNS-1123 subdomain (empty when valid).
pub fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    if !matches_dns_subdomain(s) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// Every problem with `s` as a qualified name (label and annotation keys:
/// `[prefix/]name`), empty when valid.
pub fn qualified_name_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns1123_subdomain_errors(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_ERR,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX {
        errs.push(format!("name part {}", max_len_error(QUALIFIED_NAME_MAX)));
    }
    if !matches_qualified_name(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// Every problem with `s` as a label value, empty when valid.
pub fn label_value_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > LABEL_VALUE_MAX {
        errs.push(max_len_error(LABEL_VALUE_MAX));
    }
    if !s.is_empty() && !matches_qualified_name(s) {
        errs.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

fn join(errs: Vec<String>) -> Result<(), String> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

/// DNS-1123 subdomain check; `Err` carries Kubernetes' message.
pub fn is_dns1123_subdomain(s: &str) -> Result<(), String> {
    join(dns1123_subdomain_errors(s))
}

/// DNS-1123 label check; `Err` carries Kubernetes' message.
pub fn is_dns1123_label(s: &str) -> Result<(), String> {
    join(dns1123_label_errors(s))
}

/// Qualified name check (label keys); `Err` carries Kubernetes' message.
pub fn is_qualified_name(s: &str) -> Result<(), String> {
    join(qualified_name_errors(s))
}

/// Label value check; `Err` carries Kubernetes' message.
pub fn is_valid_label_value(s: &str) -> Result<(), String> {
    join(label_value_errors(s))
}

/// The body of a `field.Invalid` error as Kubernetes prints it:
/// `Invalid value: "X": detail`.
pub fn invalid_value_message(value: &Value, detail: &str) -> String {
    let shown = match value {
        Value::Null => "null".to_string(),
        Value::String(s) => Value::String(s.clone()).to_string(),
        other => other.to_string(),
    };
    if detail.is_empty() {
        format!("Invalid value: {shown}")
    } else {
        format!("Invalid value: {shown}: {detail}")
    }
}

/// A `FieldValueInvalid` cause with Kubernetes' message shape.
pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> FieldCause {
    FieldCause::invalid(field, invalid_value_message(value, detail))
}

/// Which name rule a kind's names follow.
fn name_errors(kind: &str, name: &str) -> Vec<String> {
    match kind {
        // Namespaces become DNS labels of services; everything else here is a subdomain.
        "Namespace" => dns1123_label_errors(name),
        // RBAC names are path segments (`system:discovery`), as Kubernetes'
        // `ValidateRBACName`.
        "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => path_segment_errors(name),
        _ => dns1123_subdomain_errors(name),
    }
}

/// apimachinery's `IsValidPathSegmentName`: usable as one URL path segment.
fn path_segment_errors(name: &str) -> Vec<String> {
    if name == "." || name == ".." {
        return vec![format!("may not be '{name}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|c| name.contains(*c))
        .map(|c| format!("may not contain '{c}'"))
        .collect()
}

/// apimachinery's `maskTrailingDash`: a generateName prefix may end in '-'
/// because a random suffix follows.
fn mask_trailing_dash(s: &str) -> String {
    if s.len() > 1 && s.ends_with('-') {
        format!("{}a", &s[..s.len() - 1])
    } else {
        s.to_string()
    }
}

fn str_field<'a>(meta: &'a Value, key: &str) -> &'a str {
    meta.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Validates `metadata` of an object of `kind`: name or generateName, the
/// namespace as the scope requires, label keys and values, annotation keys
/// and total size.
pub fn validate_object_meta(meta: &Value, namespaced: bool, kind: &str) -> Vec<FieldCause> {
    let mut causes = Vec::new();
    let name = str_field(meta, "name");
    let generate_name = str_field(meta, "generateName");
    if !generate_name.is_empty() {
        for msg in name_errors(kind, &mask_trailing_dash(generate_name)) {
            causes.push(invalid(
                "metadata.generateName",
                &Value::from(generate_name),
                &msg,
            ));
        }
    }
    if name.is_empty() {
        if generate_name.is_empty() {
            causes.push(FieldCause::new(
                "FieldValueRequired",
                "metadata.name",
                "Required value: name or generateName is required",
            ));
        }
    } else {
        for msg in name_errors(kind, name) {
            causes.push(invalid("metadata.name", &Value::from(name), &msg));
        }
    }
    let namespace = str_field(meta, "namespace");
    if namespaced {
        if namespace.is_empty() {
            causes.push(FieldCause::required("metadata.namespace"));
        } else {
            for msg in dns1123_label_errors(namespace) {
                causes.push(invalid("metadata.namespace", &Value::from(namespace), &msg));
            }
        }
    } else if !namespace.is_empty() {
        causes.push(FieldCause::forbidden(
            "metadata.namespace",
            "Forbidden: not allowed on this type",
        ));
    }
    if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
        for (k, v) in labels {
            for msg in qualified_name_errors(k) {
                causes.push(invalid("metadata.labels", &Value::from(k.as_str()), &msg));
            }
            if let Some(v) = v.as_str() {
                for msg in label_value_errors(v) {
                    causes.push(invalid("metadata.labels", &Value::from(v), &msg));
                }
            }
        }
    }
    if let Some(annotations) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0usize;
        for (k, v) in annotations {
            for msg in qualified_name_errors(&k.to_lowercase()) {
                causes.push(invalid(
                    "metadata.annotations",
                    &Value::from(k.as_str()),
                    &msg,
                ));
            }
            total = total
                .saturating_add(k.len())
                .saturating_add(v.as_str().map_or(0, str::len));
        }
        if total > TOTAL_ANNOTATION_SIZE_LIMIT {
            causes.push(FieldCause::new(
                "FieldValueTooLong",
                "metadata.annotations",
                format!("Too long: must have at most {TOTAL_ANNOTATION_SIZE_LIMIT} bytes"),
            ));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subdomain_error_uses_kubernetes_wording() {
        let err = is_dns1123_subdomain("Bad_Name").expect_err("invalid");
        assert_eq!(
            err,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        assert!(is_dns1123_subdomain("web-1.example").is_ok());
        assert!(is_dns1123_subdomain("").is_err());
        assert!(is_dns1123_subdomain("a..b").is_err());
        assert!(is_dns1123_subdomain("-a").is_err());
        assert!(is_dns1123_subdomain(&"a".repeat(254)).is_err());
        assert!(is_dns1123_subdomain(&"a".repeat(253)).is_ok());
    }

    #[test]
    fn label_rejects_dots_with_a_specific_message() {
        assert_eq!(
            is_dns1123_label("a.b"),
            Err("must not contain dots".to_string())
        );
        assert_eq!(
            is_dns1123_label("A"),
            Err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_string())
        );
        assert!(is_dns1123_label(&"a".repeat(63)).is_ok());
        assert_eq!(
            is_dns1123_label(&"a".repeat(64)),
            Err("must be no more than 63 characters".to_string())
        );
    }

    #[test]
    fn qualified_names_allow_a_subdomain_prefix() {
        assert!(is_qualified_name("app").is_ok());
        assert!(is_qualified_name("app.kubernetes.io/name").is_ok());
        assert!(is_qualified_name("My_Name.1").is_ok());
        assert_eq!(
            is_qualified_name("/x"),
            Err("prefix part must be non-empty".to_string())
        );
        assert!(is_qualified_name("a/b/c").is_err());
        assert!(is_qualified_name("Example.com/x").is_err());
        assert!(is_qualified_name("x/").is_err());
        assert!(is_qualified_name("-x").is_err());
    }

    #[test]
    fn label_values_may_be_empty() {
        assert!(is_valid_label_value("").is_ok());
        assert!(is_valid_label_value("v1.2_3-x").is_ok());
        assert!(is_valid_label_value("x-").is_err());
        assert!(is_valid_label_value(&"a".repeat(64)).is_err());
    }

    #[test]
    fn object_meta_requires_name_or_generate_name() {
        let causes = validate_object_meta(&json!({"namespace": "default"}), true, "Pod");
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "metadata.name");
        assert_eq!(
            causes[0].message,
            "Required value: name or generateName is required"
        );
        assert!(
            validate_object_meta(
                &json!({"generateName": "web-", "namespace": "default"}),
                true,
                "Pod"
            )
            .is_empty()
        );
    }

    #[test]
    fn object_meta_reports_invalid_name_with_the_value() {
        let causes =
            validate_object_meta(&json!({"name": "Web", "namespace": "default"}), true, "Pod");
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].reason, "FieldValueInvalid");
        assert!(
            causes[0]
                .message
                .starts_with("Invalid value: \"Web\": a lowercase RFC 1123 subdomain")
        );
    }

    #[test]
    fn namespace_names_are_labels() {
        assert!(!validate_object_meta(&json!({"name": "a.b"}), false, "Namespace").is_empty());
        assert!(validate_object_meta(&json!({"name": "a.b"}), false, "Node").is_empty());
    }

    #[test]
    fn namespace_scope_is_enforced() {
        let causes = validate_object_meta(&json!({"name": "x"}), true, "Pod");
        assert_eq!(causes, vec![FieldCause::required("metadata.namespace")]);
        let causes =
            validate_object_meta(&json!({"name": "x", "namespace": "default"}), false, "Node");
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].reason, "FieldValueForbidden");
    }

    #[test]
    fn labels_and_annotations_are_checked() {
        let meta =
            json!({"name": "x", "namespace": "d", "labels": {"bad key": "v", "ok": "bad value"}});
        let causes = validate_object_meta(&meta, true, "Pod");
        assert_eq!(causes.len(), 2);
        assert!(causes.iter().all(|c| c.field == "metadata.labels"));
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT + 1);
        let meta = json!({"name": "x", "namespace": "d", "annotations": {"a": big}});
        let causes = validate_object_meta(&meta, true, "Pod");
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].reason, "FieldValueTooLong");
    }
}
