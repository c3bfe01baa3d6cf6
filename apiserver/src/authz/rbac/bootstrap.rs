//! The default RBAC policy, reconciled at every server start like
//! kube-apiserver's bootstrap policy: the user-facing ClusterRoles
//! (`cluster-admin`, `admin`, `edit`, `view`), the discovery and self-review
//! roles every authenticated caller is bound to, and the control-plane
//! components' roles. Objects carrying the annotation
//! `rbac.authorization.kubernetes.io/autoupdate: "true"` (all of them when
//! created here) are brought back to the default on start; an operator who
//! sets it to `"false"` keeps their own version.

use serde_json::{Value, json};
use wasmkube_api::resources;

use super::GROUP;
use crate::error::ApiError;
use crate::registry::Registry;

/// The annotation that lets the server reconcile an object.
pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

/// Bootstrap errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} {name}: {source}")]
    Write {
        kind: String,
        name: String,
        #[source]
        source: Box<ApiError>,
    },
    #[error("{0} is not a served resource")]
    NotServed(&'static str),
}

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn urls(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"nonResourceURLs": urls, "verbs": verbs})
}

fn labels() -> Value {
    json!({"kubernetes.io/bootstrapping": "rbac-defaults"})
}

fn cluster_role(name: &str, rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": labels(),
            "annotations": {AUTOUPDATE: "true"},
        },
        "rules": rules,
    })
}

fn binding(name: &str, role: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(kind, n)| json!({"apiGroup": GROUP, "kind": kind, "name": n}))
        .collect();
    json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": name,
            "labels": labels(),
            "annotations": {AUTOUPDATE: "true"},
        },
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

/// `view`: read everything in a namespace except Secrets (Kubernetes'
/// `system:aggregate-to-view`, for the resources Kubernetes lists).
fn view_rules() -> Vec<Value> {
    vec![
        rule(
            READ,
            &[""],
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
            ],
        ),
        rule(
            READ,
            &[""],
            &[
                "bindings",
                "events",
                "limitranges",
                "namespaces/status",
                "pods/log",
                "pods/status",
                "replicationcontrollers/status",
                "resourcequotas",
                "resourcequotas/status",
            ],
        ),
        rule(READ, &[""], &["namespaces"]),
        rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
        rule(
            READ,
            &["apps"],
            &[
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ],
        ),
        rule(
            READ,
            &["autoscaling"],
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
        ),
        rule(
            READ,
            &["batch"],
            &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
        ),
        rule(
            READ,
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
        ),
        rule(
            READ,
            &["networking.k8s.io"],
            &["ingresses", "ingresses/status", "networkpolicies"],
        ),
        rule(READ, &["events.k8s.io"], &["events"]),
        rule(READ, &["coordination.k8s.io"], &["leases"]),
    ]
}

/// `edit`: `view` plus writing workloads, config and Secrets (and, as in
/// Kubernetes, reading Secrets: whoever can create pods can read them).
fn edit_rules() -> Vec<Value> {
    let mut rules = vec![
        rule(
            WRITE,
            &[""],
            &[
                "pods",
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
            ],
        ),
        rule(&["create"], &[""], &["pods/eviction"]),
        rule(
            WRITE,
            &[""],
            &[
                "configmaps",
                "events",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
        ),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(&["impersonate"], &[""], &["serviceaccounts"]),
        rule(
            READ,
            &[""],
            &[
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "secrets",
                "services/proxy",
            ],
        ),
        rule(
            WRITE,
            &["apps"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
        ),
        rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
        rule(WRITE, &["batch"], &["cronjobs", "jobs"]),
        rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
        rule(
            WRITE,
            &["networking.k8s.io"],
            &["ingresses", "networkpolicies"],
        ),
        rule(WRITE, &["coordination.k8s.io"], &["leases"]),
    ];
    rules.extend(view_rules());
    rules
}

/// `admin`: `edit` plus the namespace's roles and bindings (subject to the
/// escalation check) and local access reviews.
fn admin_rules() -> Vec<Value> {
    let mut rules = vec![
        rule(
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
            &[GROUP],
            &["rolebindings", "roles"],
        ),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews"],
        ),
    ];
    rules.extend(edit_rules());
    rules
}

/// The API groups the server serves, RBAC's own left out: the components
/// manage workloads, not permissions.
fn served_groups() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = resources::all()
        .iter()
        .map(|r| r.group)
        .filter(|g| *g != GROUP)
        .collect();
    for extra in ["events.k8s.io", "policy", "autoscaling"] {
        groups.push(extra);
    }
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// The scheduler: reads the cluster, binds pods, reports their status and
/// events, and holds its leader-election Lease.
fn scheduler_rules() -> Vec<Value> {
    vec![
        rule(READ, &served_groups(), &["*"]),
        rule(&["create"], &[""], &["pods/binding", "bindings"]),
        rule(&["delete"], &[""], &["pods"]),
        rule(&["patch", "update"], &[""], &["pods/status"]),
        rule(
            &["create", "patch", "update"],
            &["", "events.k8s.io"],
            &["events"],
        ),
        rule(
            &[
                "create", "get", "list", "watch", "update", "patch", "delete",
            ],
            &["coordination.k8s.io"],
            &["leases"],
        ),
    ]
}

/// The controller manager runs every controller in one process: it writes
/// every workload-side resource (the same reach it had before RBAC), but
/// not roles and bindings.
fn controller_manager_rules() -> Vec<Value> {
    vec![rule(&["*"], &served_groups(), &["*"])]
}

/// Every default ClusterRole and ClusterRoleBinding.
pub fn default_policy() -> Vec<Value> {
    vec![
        cluster_role(
            "cluster-admin",
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        cluster_role("admin", admin_rules()),
        cluster_role("edit", edit_rules()),
        cluster_role("view", view_rules()),
        cluster_role(
            "system:discovery",
            vec![urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        cluster_role(
            "system:basic-user",
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        // Workloads verifying ServiceAccount tokens fetch the issuer's keys.
        cluster_role(
            "system:service-account-issuer-discovery",
            vec![urls(
                &["get"],
                &[
                    "/.well-known/openid-configuration",
                    "/.well-known/openid-configuration/",
                    "/openid/v1/jwks",
                    "/openid/v1/jwks/",
                ],
            )],
        ),
        cluster_role(
            "system:public-info-viewer",
            vec![urls(
                &["get"],
                &[
                    "/healthz",
                    "/livez",
                    "/readyz",
                    "/version",
                    "/version/",
                    wasmkube_api::join::CACERTS_PATH,
                ],
            )],
        ),
        cluster_role("system:kube-scheduler", scheduler_rules()),
        cluster_role("system:kube-controller-manager", controller_manager_rules()),
        binding(
            "cluster-admin",
            "cluster-admin",
            &[("Group", crate::auth::MASTERS_GROUP)],
        ),
        binding(
            "system:discovery",
            "system:discovery",
            &[("Group", crate::auth::AUTHENTICATED_GROUP)],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &[("Group", crate::auth::AUTHENTICATED_GROUP)],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[
                ("Group", crate::auth::AUTHENTICATED_GROUP),
                ("Group", "system:unauthenticated"),
            ],
        ),
        binding(
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            &[("Group", "system:serviceaccounts")],
        ),
        binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            &[("User", "system:kube-scheduler")],
        ),
        binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            &[("User", "system:kube-controller-manager")],
        ),
    ]
}

/// The fields reconciliation owns: a role's rules, a binding's role and
/// subjects.
const OWNED: &[&str] = &["rules", "roleRef", "subjects"];

/// Creates the default policy, and brings back to the default every
/// default object still marked for automatic update. Idempotent; safe with
/// several API servers starting at once (a lost race is a 409, retried on
/// the next start).
pub async fn ensure_policy(registry: &Registry) -> Result<(), Error> {
    for obj in default_policy() {
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let plural = if kind == "ClusterRole" {
            "clusterroles"
        } else {
            "clusterrolebindings"
        };
        let res = resources::by_plural(GROUP, "v1", plural).ok_or(Error::NotServed(plural))?;
        let fail = |source: ApiError| Error::Write {
            kind: kind.clone(),
            name: name.clone(),
            source: Box::new(source),
        };
        let current = match registry.get(res, None, &name).await {
            Ok(c) => c,
            Err(e) if e.code() == 404 => match registry.create(res, None, obj).await {
                Ok(_) => continue,
                Err(e) if e.code() == 409 => continue,
                Err(e) => return Err(fail(e)),
            },
            Err(e) => return Err(fail(e)),
        };
        let autoupdate = current
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(AUTOUPDATE))
            .and_then(Value::as_str)
            != Some("false");
        let differs = OWNED.iter().any(|k| current.get(*k) != obj.get(*k));
        if !autoupdate || !differs {
            continue;
        }
        let mut updated = current.clone();
        for k in OWNED {
            match obj.get(*k) {
                Some(v) => updated[*k] = v.clone(),
                None => {
                    if let Some(o) = updated.as_object_mut() {
                        o.remove(*k);
                    }
                }
            }
        }
        match registry.replace(res, None, &name, updated).await {
            Ok(_) => tracing::info!(%kind, %name, "reconciled default RBAC policy"),
            Err(e) if e.code() == 409 => {}
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::rbac::{Rule, covers, rules_of};

    fn role(name: &str) -> Vec<Rule> {
        default_policy()
            .iter()
            .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == name)
            .map(rules_of)
            .unwrap_or_default()
    }

    #[test]
    fn default_roles_nest_like_kubernetes() {
        let (view, edit, admin, cluster_admin) = (
            role("view"),
            role("edit"),
            role("admin"),
            role("cluster-admin"),
        );
        assert!(!view.is_empty());
        assert!(covers(&edit, &view).is_ok());
        assert!(covers(&admin, &edit).is_ok());
        assert!(covers(&cluster_admin, &admin).is_ok());
        assert!(covers(&view, &edit).is_err());
        assert!(covers(&edit, &admin).is_err());
        let read_secrets = [Rule {
            verbs: vec!["get".into()],
            api_groups: vec!["".into()],
            resources: vec!["secrets".into()],
            ..Rule::default()
        }];
        assert!(covers(&view, &read_secrets).is_err());
        assert!(covers(&edit, &read_secrets).is_ok());
    }

    #[test]
    fn every_default_object_validates() {
        for obj in default_policy() {
            let kind = obj["kind"].as_str().unwrap_or("");
            let causes = wasmkube_api::rules::validate(kind, &obj);
            assert!(
                causes.is_empty(),
                "{kind} {}: {causes:?}",
                obj["metadata"]["name"]
            );
        }
    }
}
