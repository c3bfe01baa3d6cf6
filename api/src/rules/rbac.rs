//! Validation of `rbac.authorization.k8s.io/v1` Roles, ClusterRoles,
//! RoleBindings and ClusterRoleBindings, as Kubernetes'
//! `pkg/apis/rbac/validation`: every rule names verbs; resource rules name
//! API groups and resources; only ClusterRoles carry non-resource URLs (and
//! then not mixed with resources in one rule); a binding's `roleRef` names a
//! Role or ClusterRole of the RBAC group and cannot change; subjects are
//! users, groups or ServiceAccounts (the latter with a namespace).

use serde_json::Value;

use super::{array_of, str_of};
use crate::names::invalid;
use crate::status::FieldCause;

/// The API group of the RBAC kinds.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// Whether `kind` is one of the four RBAC kinds.
pub fn is_rbac_kind(kind: &str) -> bool {
    matches!(
        kind,
        "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding"
    )
}

/// The kind's own rules (metadata is validated elsewhere).
pub fn validate(kind: &str, obj: &Value, causes: &mut Vec<FieldCause>) {
    match kind {
        "Role" => validate_rules(obj, false, causes),
        "ClusterRole" => validate_rules(obj, true, causes),
        "RoleBinding" => validate_binding(obj, true, causes),
        "ClusterRoleBinding" => validate_binding(obj, false, causes),
        _ => {}
    }
}

/// What an update may not change: a binding's `roleRef` (Kubernetes makes
/// it immutable so that granting a different role is a new, separately
/// authorized binding).
pub fn validate_update(kind: &str, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
    if matches!(kind, "RoleBinding" | "ClusterRoleBinding") {
        let o = old.get("roleRef").cloned().unwrap_or(Value::Null);
        let n = new.get("roleRef").cloned().unwrap_or(Value::Null);
        if o != n {
            causes.push(invalid("roleRef", &n, "cannot change roleRef"));
        }
    }
}

fn non_empty_strings(v: &Value, key: &str) -> bool {
    let items = array_of(v, key);
    !items.is_empty()
        && items
            .iter()
            .all(|s| s.as_str().is_some_and(|s| !s.is_empty()))
}

fn validate_rules(obj: &Value, cluster: bool, causes: &mut Vec<FieldCause>) {
    if let Some(rules) = obj.get("rules")
        && !rules.is_null()
        && !rules.is_array()
    {
        causes.push(invalid("rules", rules, "must be a list"));
        return;
    }
    for (i, rule) in array_of(obj, "rules").iter().enumerate() {
        let at = |f: &str| format!("rules[{i}].{f}");
        if !rule.is_object() {
            causes.push(invalid(format!("rules[{i}]"), rule, "must be an object"));
            continue;
        }
        if !non_empty_strings(rule, "verbs") {
            causes.push(FieldCause::required(at("verbs")));
        }
        let urls = array_of(rule, "nonResourceURLs");
        let has_resources = !array_of(rule, "resources").is_empty();
        if !urls.is_empty() {
            if !cluster {
                causes.push(invalid(
                    at("nonResourceURLs"),
                    &Value::Array(urls.to_vec()),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            } else if has_resources || !array_of(rule, "apiGroups").is_empty() {
                causes.push(invalid(
                    at("nonResourceURLs"),
                    &Value::Array(urls.to_vec()),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            for (j, u) in urls.iter().enumerate() {
                let ok = u.as_str().is_some_and(|u| u.starts_with('/') || u == "*");
                if !ok {
                    causes.push(invalid(
                        format!("rules[{i}].nonResourceURLs[{j}]"),
                        u,
                        "must start with /",
                    ));
                }
            }
            continue;
        }
        if array_of(rule, "apiGroups").is_empty() {
            causes.push(FieldCause::required(at("apiGroups")));
        }
        if !has_resources {
            causes.push(FieldCause::required(at("resources")));
        }
    }
}

fn validate_binding(obj: &Value, namespaced: bool, causes: &mut Vec<FieldCause>) {
    let role_ref = obj.get("roleRef").unwrap_or(&Value::Null);
    if !role_ref.is_object() {
        causes.push(FieldCause::required("roleRef"));
    } else {
        let group = str_of(role_ref, "apiGroup").unwrap_or("");
        if group != GROUP {
            causes.push(FieldCause::unsupported(
                "roleRef.apiGroup",
                format!(
                    "Unsupported value: {:?}: supported values: {GROUP:?}",
                    group
                ),
            ));
        }
        let kind = str_of(role_ref, "kind").unwrap_or("");
        let allowed: &[&str] = if namespaced {
            &["Role", "ClusterRole"]
        } else {
            &["ClusterRole"]
        };
        if !allowed.contains(&kind) {
            let list = allowed
                .iter()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            causes.push(FieldCause::unsupported(
                "roleRef.kind",
                format!("Unsupported value: {kind:?}: supported values: {list}"),
            ));
        }
        if str_of(role_ref, "name").is_none_or(str::is_empty) {
            causes.push(FieldCause::required("roleRef.name"));
        }
    }
    for (i, subject) in array_of(obj, "subjects").iter().enumerate() {
        let at = |f: &str| format!("subjects[{i}].{f}");
        if str_of(subject, "name").is_none_or(str::is_empty) {
            causes.push(FieldCause::required(at("name")));
        }
        match str_of(subject, "kind").unwrap_or("") {
            "User" | "Group" => {
                let group = str_of(subject, "apiGroup").unwrap_or("");
                if group != GROUP {
                    causes.push(FieldCause::unsupported(
                        at("apiGroup"),
                        format!("Unsupported value: {group:?}: supported values: {GROUP:?}"),
                    ));
                }
            }
            "ServiceAccount" => {
                let group = str_of(subject, "apiGroup").unwrap_or("");
                if !group.is_empty() {
                    causes.push(FieldCause::unsupported(
                        at("apiGroup"),
                        format!("Unsupported value: {group:?}: supported values: \"\""),
                    ));
                }
                // A RoleBinding's ServiceAccount subjects default to the
                // binding's namespace; a ClusterRoleBinding has none.
                if !namespaced && str_of(subject, "namespace").is_none_or(str::is_empty) {
                    causes.push(FieldCause::required(at("namespace")));
                }
            }
            other => causes.push(FieldCause::unsupported(
                at("kind"),
                format!(
                    "Unsupported value: {other:?}: supported values: \"ServiceAccount\", \"User\", \"Group\""
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(kind: &str, obj: Value) -> Vec<String> {
        let mut causes = Vec::new();
        validate(kind, &obj, &mut causes);
        causes.into_iter().map(|c| c.field).collect()
    }

    #[test]
    fn roles_need_verbs_groups_and_resources() {
        assert!(
            check(
                "Role",
                json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})
            )
            .is_empty()
        );
        assert_eq!(
            check("Role", json!({"rules": [{"resources": ["pods"]}]})),
            vec!["rules[0].verbs", "rules[0].apiGroups"]
        );
        assert_eq!(
            check(
                "Role",
                json!({"rules": [{"nonResourceURLs": ["/x"], "verbs": ["get"]}]})
            ),
            vec!["rules[0].nonResourceURLs"]
        );
        assert!(
            check(
                "ClusterRole",
                json!({"rules": [{"nonResourceURLs": ["/healthz", "/api/*"], "verbs": ["get"]}]})
            )
            .is_empty()
        );
        assert_eq!(
            check(
                "ClusterRole",
                json!({"rules": [{"nonResourceURLs": ["x"], "verbs": ["get"]}]})
            ),
            vec!["rules[0].nonResourceURLs[0]"]
        );
        assert_eq!(check("Role", json!({"rules": 3})), vec!["rules"]);
        // No rules at all is a valid (empty) role.
        assert!(check("ClusterRole", json!({})).is_empty());
    }

    #[test]
    fn bindings_need_a_role_and_proper_subjects() {
        let good = json!({
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "view"},
            "subjects": [
                {"kind": "User", "apiGroup": GROUP, "name": "alice"},
                {"kind": "ServiceAccount", "name": "robot", "namespace": "ns"}
            ]
        });
        assert!(check("RoleBinding", good.clone()).is_empty());
        assert!(check("ClusterRoleBinding", good).is_empty());
        assert_eq!(
            check(
                "ClusterRoleBinding",
                json!({"roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "x"},
                       "subjects": [{"kind": "ServiceAccount", "name": "robot"}]})
            ),
            vec!["roleRef.kind", "subjects[0].namespace"]
        );
        assert_eq!(check("RoleBinding", json!({})), vec!["roleRef"]);
        assert_eq!(
            check(
                "RoleBinding",
                json!({"roleRef": {"apiGroup": "x", "kind": "Role"},
                       "subjects": [{"kind": "Robot", "name": "r"}]})
            ),
            vec!["roleRef.apiGroup", "roleRef.name", "subjects[0].kind"]
        );
    }

    #[test]
    fn role_ref_is_immutable() {
        let a = json!({"roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "view"}});
        let b = json!({"roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "admin"}});
        let mut causes = Vec::new();
        validate_update("RoleBinding", &a, &a, &mut causes);
        assert!(causes.is_empty());
        validate_update("RoleBinding", &a, &b, &mut causes);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "roleRef");
    }
}
