//! The authorization decision: who may do what, from the caller and the
//! request attributes alone. Rules that depend on stored state (which node a
//! pod is bound to, which Secrets a node's pods reference, the name inside a
//! created object) come back as a [`Condition`] the middleware checks.
//!
//! Node credentials follow Kubernetes' Node authorizer together with the
//! NodeRestriction admission plugin: a node reads what its pods need and
//! writes only its own Node, its own Lease, the status of its own pods, its
//! own mirror pods (the components it publishes, see [`check_mirror_pod`]),
//! and events.

use super::attributes::Attributes;
use super::references::RefKind;
use crate::auth::{MASTERS_GROUP, UserInfo};
use wasmkube_api::join::{
    BOOTSTRAPPERS_GROUP, CACERTS_PATH, JOIN_PATH, NODE_USER_PREFIX, NODES_GROUP,
};

/// The namespace of node heartbeat leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// What the authorizer says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused; the reason ends the 403 message.
    Deny(String),
    /// Allowed only if the condition holds in the stored state.
    Requires(Condition),
}

/// A fact about stored state an allowing rule depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The object in the request body (a create) has `metadata.name` ==
    /// `name`. `denial` is the reason when it has not.
    BodyNamed { name: String, denial: String },
    /// The pod the request names exists and has `spec.nodeName` == `node`.
    PodOnNode { node: String, denial: String },
    /// The pod in the request body (a create) is a mirror pod bound to
    /// `node` that [`check_mirror_pod`] accepts.
    MirrorPodOn { node: String },
    /// A pod with `spec.nodeName` == `node` in the request's namespace
    /// references the `kind` object the request names.
    ReferencedByPodOn { node: String, kind: RefKind },
    /// Whatever RBAC ([`super::rbac`]) grants the caller, from the stored
    /// roles and bindings.
    Rbac,
}

/// Who the caller is, for the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Everything allowed.
    Unrestricted,
    /// A node credential for this node.
    Node(String),
    /// A node credential that names no node: nothing allowed.
    UnnamedNode,
    /// A bootstrap token: only joining and public documents.
    Bootstrapper,
    /// Everyone else (users, ServiceAccounts, the control-plane
    /// components): what RBAC grants.
    Rbac,
}

/// Classifies `user`. A credential marked as a node in either way (name
/// `system:node:<n>` or group `system:nodes`) is held to the node rules
/// (Kubernetes requires both marks and lets an identity with one fall to
/// RBAC, which by default grants it nothing: the same outcome, but stricter
/// if someone binds a role to `system:nodes`).
pub fn identify(user: &UserInfo) -> Identity {
    let in_group = |g: &str| user.groups.iter().any(|x| x == g);
    if in_group(MASTERS_GROUP) {
        return Identity::Unrestricted;
    }
    let node = user.name.strip_prefix(NODE_USER_PREFIX);
    if node.is_some() || in_group(NODES_GROUP) {
        return match node {
            Some(n) if !n.is_empty() => Identity::Node(n.to_string()),
            _ => Identity::UnnamedNode,
        };
    }
    if in_group(BOOTSTRAPPERS_GROUP) {
        return Identity::Bootstrapper;
    }
    Identity::Rbac
}

/// Asking who one is (`kubectl auth whoami`): Kubernetes grants it to every
/// authenticated user (`system:basic-user`).
fn is_self_review(attrs: &Attributes) -> bool {
    attrs.resource_request
        && attrs.verb == "create"
        && attrs.api_group == "authentication.k8s.io"
        && attrs.resource == "selfsubjectreviews"
}

/// The decision for `user` doing `attrs`.
pub fn decide(user: &UserInfo, attrs: &Attributes) -> Decision {
    if is_self_review(attrs) {
        return Decision::Allow;
    }
    match identify(user) {
        Identity::Unrestricted => Decision::Allow,
        Identity::Rbac => Decision::Requires(Condition::Rbac),
        Identity::Bootstrapper => bootstrapper(attrs),
        Identity::UnnamedNode => {
            Decision::Deny("the node credential does not name a node".to_string())
        }
        Identity::Node(node) => {
            if attrs.resource_request {
                node_resource(&node, attrs)
            } else {
                node_non_resource(&node, attrs)
            }
        }
    }
}

/// Non-resource paths every authenticated caller may read: discovery,
/// OpenAPI, version, health and the CA bundle (Kubernetes'
/// `system:discovery` and `system:public-info-viewer`).
pub fn is_public_read(attrs: &Attributes) -> bool {
    if attrs.resource_request || attrs.verb != "get" {
        return false;
    }
    let path = attrs.path.as_str();
    if path == CACERTS_PATH {
        return true;
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        // The attribute parse already made every deeper /api, /apis path
        // a resource request: what is left are the discovery documents.
        ["api", ..] | ["apis", ..] => true,
        ["openapi", ..] => true,
        ["version"] => true,
        [check] | [check, _] => matches!(*check, "healthz" | "livez" | "readyz"),
        _ => false,
    }
}

fn bootstrapper(attrs: &Attributes) -> Decision {
    if is_public_read(attrs) || (attrs.verb == "post" && attrs.path == JOIN_PATH) {
        return Decision::Allow;
    }
    Decision::Deny("bootstrap tokens may only join a node".to_string())
}

/// The module store's read paths (the kubelet resolves and downloads
/// modules through them).
fn is_module_read(attrs: &Attributes) -> bool {
    if attrs.verb != "get" {
        return false;
    }
    let p = attrs.path.as_str();
    p == "/wasmkube/v1/modules"
        || p.starts_with("/wasmkube/v1/modules/")
        || p == "/wasmkube/v1/resolve"
        || p.starts_with("/wasmkube/v1/blobs/")
}

fn node_non_resource(node: &str, attrs: &Attributes) -> Decision {
    if is_public_read(attrs) || is_module_read(attrs) {
        return Decision::Allow;
    }
    let segs: Vec<&str> = attrs.path.trim_matches('/').split('/').collect();
    if let ["wasmkube", "v1", "nodes", name, "tunnel"] = segs.as_slice() {
        return if *name == node && attrs.verb == "get" {
            Decision::Allow
        } else {
            Decision::Deny(format!("node {node:?} may only open its own tunnel"))
        };
    }
    Decision::Deny(format!("node {node:?} has no access to this path"))
}

/// Resources a node may read (get, list, watch), with their status.
fn node_readable(group: &str, resource: &str) -> bool {
    matches!(
        (group, resource),
        (
            "",
            "nodes" | "pods" | "services" | "endpoints" | "namespaces" | "events"
        ) | ("discovery.k8s.io", "endpointslices")
            | ("events.k8s.io", "events")
    )
}

fn node_resource(node: &str, a: &Attributes) -> Decision {
    let verb = a.verb.as_str();
    let sub = a.subresource.as_str();
    let deny = |why: String| Decision::Deny(why);
    match (a.api_group.as_str(), a.resource.as_str()) {
        ("", "secrets" | "configmaps") => {
            let Some(kind) = RefKind::of_resource(&a.resource) else {
                return deny("unknown kind".to_string());
            };
            if verb != "get" {
                return deny(format!(
                    "node {node:?} may only get individual {} referenced by its pods",
                    a.resource
                ));
            }
            if !sub.is_empty() || a.namespace.is_empty() || a.name.is_empty() {
                return deny(format!(
                    "node {node:?} may only get namespaced objects by name"
                ));
            }
            Decision::Requires(Condition::ReferencedByPodOn {
                node: node.to_string(),
                kind,
            })
        }
        ("", "nodes") => {
            if !sub.is_empty() && sub != "status" {
                return deny(format!("node {node:?} has no access to nodes/{sub}"));
            }
            let not_own =
                |other: &str| format!("node {node:?} is not allowed to modify node {other:?}");
            match verb {
                "get" | "list" | "watch" => Decision::Allow,
                "create" if sub.is_empty() => Decision::Requires(Condition::BodyNamed {
                    name: node.to_string(),
                    denial: format!("node {node:?} may only create its own Node object"),
                }),
                "update" | "patch" | "delete" if a.name == node => Decision::Allow,
                "update" | "patch" | "delete" => deny(not_own(&a.name)),
                _ => deny(format!("node {node:?} may not {verb} nodes")),
            }
        }
        ("coordination.k8s.io", "leases") => {
            if a.namespace != NODE_LEASE_NAMESPACE {
                return deny(format!(
                    "node {node:?} may only access leases in the {NODE_LEASE_NAMESPACE} namespace"
                ));
            }
            if !sub.is_empty() {
                return deny(format!("node {node:?} has no access to leases/{sub}"));
            }
            let only_own =
                "can only access node lease with the same name as the requesting node".to_string();
            match verb {
                "get" | "list" | "watch" => Decision::Allow,
                "create" => Decision::Requires(Condition::BodyNamed {
                    name: node.to_string(),
                    denial: only_own,
                }),
                "update" | "patch" | "delete" if a.name == node => Decision::Allow,
                "update" | "patch" | "delete" => deny(only_own),
                _ => deny(format!("node {node:?} may not {verb} leases")),
            }
        }
        ("", "pods") => match (verb, sub) {
            ("get" | "list" | "watch", "" | "status") => Decision::Allow,
            // NodeRestriction: a node creates only mirror pods of itself.
            ("create", "") => Decision::Requires(Condition::MirrorPodOn {
                node: node.to_string(),
            }),
            ("update" | "patch", "status") if !a.name.is_empty() => {
                Decision::Requires(Condition::PodOnNode {
                    node: node.to_string(),
                    denial: format!(
                        "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
                    ),
                })
            }
            ("delete", "") if !a.name.is_empty() => Decision::Requires(Condition::PodOnNode {
                node: node.to_string(),
                denial: format!(
                    "node {node:?} can only delete pods with spec.nodeName set to itself"
                ),
            }),
            _ => deny(format!(
                "node {node:?} may not {verb} {}",
                a.resource_path()
            )),
        },
        (group, "events") if group.is_empty() || group == "events.k8s.io" => match (verb, sub) {
            ("get" | "list" | "watch" | "create" | "update" | "patch", "") => Decision::Allow,
            _ => deny(format!("node {node:?} may not {verb} events")),
        },
        (group, resource) if node_readable(group, resource) => {
            if a.is_read() && (sub.is_empty() || sub == "status") {
                Decision::Allow
            } else {
                deny(format!("node {node:?} may only read {}", a.resource))
            }
        }
        _ => deny(format!(
            "node {node:?} has no access to {}",
            a.resource_path()
        )),
    }
}

/// Kubernetes' NodeRestriction rules for a pod a node creates: only a
/// mirror pod (`kubernetes.io/config.mirror`), bound to that node, owned by
/// nothing but that Node, and using no ServiceAccount, Secret, ConfigMap or
/// claim (a node must not gain access to them through a pod of its own).
pub fn check_mirror_pod(node: &str, pod: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value;
    let mirror = pod
        .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some();
    if !mirror {
        return Err(format!("node {node:?} can only create mirror pods"));
    }
    if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node) {
        return Err(format!(
            "node {node:?} can only create pods with spec.nodeName set to itself"
        ));
    }
    let owners = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let own_node = |o: &Value| {
        o.get("kind").and_then(Value::as_str) == Some("Node")
            && o.get("name").and_then(Value::as_str) == Some(node)
    };
    if owners.len() > 1 || owners.iter().any(|o| !own_node(o)) {
        return Err(format!(
            "node {node:?} can only create pods with an owner reference set to itself"
        ));
    }
    if pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Err("a mirror pod may not reference service accounts".to_string());
    }
    let volumes = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for v in volumes {
        for kind in ["secret", "configMap", "projected", "persistentVolumeClaim"] {
            if v.get(kind).is_some() {
                return Err(format!("a mirror pod may not use {kind} volumes"));
            }
        }
    }
    let containers = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| pod.pointer(&format!("/spec/{k}")).and_then(Value::as_array))
        .flatten();
    for c in containers {
        let env_refs = c
            .get("env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("valueFrom"))
            .any(|f| f.get("secretKeyRef").is_some() || f.get("configMapKeyRef").is_some());
        let env_from = c
            .get("envFrom")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        if env_refs || env_from {
            return Err("a mirror pod may not reference secrets or configmaps".to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::attributes::parse;
    use axum::http::Method;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        groups.push("system:authenticated".to_string());
        UserInfo {
            name: name.to_string(),
            uid: String::new(),
            groups,
        }
    }

    fn node(n: &str) -> UserInfo {
        user(&format!("system:node:{n}"), &[NODES_GROUP])
    }

    fn decide_on(u: &UserInfo, method: Method, path_and_query: &str) -> Decision {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        decide(u, &parse(&method, path, query))
    }

    fn allowed(u: &UserInfo, method: Method, path: &str) -> bool {
        decide_on(u, method, path) == Decision::Allow
    }

    fn denied(u: &UserInfo, method: Method, path: &str) -> bool {
        matches!(decide_on(u, method, path), Decision::Deny(_))
    }

    /// A sample of requests covering every kind of rule.
    fn sample() -> Vec<(Method, &'static str)> {
        vec![
            (Method::GET, "/api/v1/namespaces/default/secrets"),
            (Method::GET, "/api/v1/namespaces/default/secrets/s"),
            (Method::DELETE, "/api/v1/namespaces/default/pods"),
            (Method::POST, "/api/v1/namespaces/default/pods"),
            (Method::PATCH, "/api/v1/nodes/other"),
            (Method::PUT, "/wasmkube/v1/modules/m/v1"),
            (Method::GET, "/apis/metrics.k8s.io/v1beta1/nodes"),
            (Method::POST, "/wasmkube/v1/join"),
            (Method::GET, "/metrics"),
            (Method::GET, "/wasmkube/v1/nodes/other/tunnel"),
        ]
    }

    #[test]
    fn everyone_may_ask_who_they_are_and_nothing_more_there() {
        let review = "/apis/authentication.k8s.io/v1/selfsubjectreviews";
        let bootstrapper = user("system:bootstrap:abcdef", &[BOOTSTRAPPERS_GROUP]);
        for u in [
            node("n1"),
            bootstrapper.clone(),
            user("system:nodes-only", &[NODES_GROUP]),
        ] {
            assert!(allowed(&u, Method::POST, review), "{u:?}");
        }
        assert!(denied(&node("n1"), Method::DELETE, review));
        assert!(denied(
            &bootstrapper,
            Method::POST,
            "/apis/authentication.k8s.io/v1/tokenreviews"
        ));
    }

    #[test]
    fn masters_may_do_anything() {
        let users = [
            user("admin", &[MASTERS_GROUP]),
            // Masters win over every other mark.
            user("system:node:n1", &[NODES_GROUP, MASTERS_GROUP]),
            user(
                "system:bootstrap:abcdef",
                &[BOOTSTRAPPERS_GROUP, MASTERS_GROUP],
            ),
        ];
        for u in &users {
            assert_eq!(identify(u), Identity::Unrestricted, "{u:?}");
            for (m, p) in sample() {
                assert!(allowed(u, m.clone(), p), "{u:?} {m} {p}");
            }
        }
    }

    #[test]
    fn other_users_and_components_are_left_to_rbac() {
        for u in [
            user("alice", &["dev"]),
            user("system:kube-scheduler", &[]),
            user("system:kube-controller-manager", &[]),
            user(
                "system:serviceaccount:ns:robot",
                &["system:serviceaccounts"],
            ),
        ] {
            assert_eq!(identify(&u), Identity::Rbac);
            for (m, p) in sample() {
                assert_eq!(
                    decide_on(&u, m.clone(), p),
                    Decision::Requires(Condition::Rbac),
                    "{m} {p}"
                );
            }
        }
    }

    #[test]
    fn bootstrappers_may_only_join_and_read_public_documents() {
        let b = user("system:bootstrap:abcdef", &[BOOTSTRAPPERS_GROUP]);
        assert_eq!(identify(&b), Identity::Bootstrapper);
        for (m, p) in [
            (Method::POST, "/wasmkube/v1/join"),
            (Method::GET, "/cacerts"),
            (Method::GET, "/version"),
            (Method::GET, "/healthz"),
            (Method::GET, "/livez"),
            (Method::GET, "/readyz"),
            (Method::GET, "/readyz/ping"),
            (Method::GET, "/api"),
            (Method::GET, "/api/v1"),
            (Method::GET, "/apis"),
            (Method::GET, "/apis/apps"),
            (Method::GET, "/apis/apps/v1"),
            (Method::GET, "/openapi/v2"),
            (Method::GET, "/openapi/v3/apis/apps/v1"),
            (Method::HEAD, "/version"),
        ] {
            assert!(allowed(&b, m.clone(), p), "{m} {p}");
        }
        for (m, p) in [
            (Method::GET, "/wasmkube/v1/join"),
            (Method::PUT, "/wasmkube/v1/join"),
            (Method::POST, "/cacerts"),
            (Method::POST, "/api"),
            (Method::GET, "/api/v1/namespaces"),
            (
                Method::GET,
                "/api/v1/namespaces/kube-system/secrets/bootstrap-token-abcdef",
            ),
            (Method::GET, "/api/v1/nodes"),
            (Method::POST, "/api/v1/nodes"),
            (Method::GET, "/wasmkube/v1/modules"),
            (Method::GET, "/metrics"),
            (Method::GET, "/wasmkube/v1/nodes/n1/tunnel"),
            (Method::GET, "/apis/metrics.k8s.io/v1beta1/pods"),
        ] {
            assert!(denied(&b, m.clone(), p), "{m} {p}");
        }
    }

    #[test]
    fn bootstrappers_that_are_also_nodes_get_node_rules() {
        let u = user("system:node:n1", &[BOOTSTRAPPERS_GROUP, NODES_GROUP]);
        assert_eq!(identify(&u), Identity::Node("n1".into()));
        assert!(denied(&u, Method::POST, "/wasmkube/v1/join"));
        assert!(allowed(&u, Method::GET, "/api/v1/nodes"));
    }

    #[test]
    fn half_marked_node_credentials_stay_restricted() {
        // Name without the group: still node n1's rules.
        let u = user("system:node:n1", &[]);
        assert_eq!(identify(&u), Identity::Node("n1".into()));
        assert!(denied(&u, Method::PATCH, "/api/v1/nodes/n2"));
        // Group without a node name: nothing.
        for u in [
            user("kubelet", &[NODES_GROUP]),
            user("system:node:", &[NODES_GROUP]),
        ] {
            assert_eq!(identify(&u), Identity::UnnamedNode);
            assert!(denied(&u, Method::GET, "/api/v1/nodes"));
            assert!(denied(&u, Method::GET, "/version"));
        }
    }

    #[test]
    fn nodes_read_what_their_pods_need() {
        let n = node("n1");
        for (m, p) in [
            (Method::GET, "/api/v1/nodes"),
            (Method::GET, "/api/v1/nodes?watch=true"),
            (Method::GET, "/api/v1/nodes/n2"),
            (Method::GET, "/api/v1/nodes/n2/status"),
            (Method::GET, "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1"),
            (
                Method::GET,
                "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&watch=true",
            ),
            (Method::GET, "/api/v1/namespaces/default/pods/p"),
            (Method::GET, "/api/v1/namespaces/default/pods/p/status"),
            (Method::GET, "/api/v1/services"),
            (Method::GET, "/api/v1/watch/services"),
            (Method::GET, "/api/v1/namespaces/default/services/s"),
            (Method::GET, "/api/v1/namespaces/default/endpoints"),
            (
                Method::GET,
                "/apis/discovery.k8s.io/v1/endpointslices?watch=1",
            ),
            (Method::GET, "/api/v1/namespaces"),
            (Method::GET, "/api/v1/namespaces/default"),
            (Method::GET, "/api/v1/namespaces/default/events"),
            (Method::GET, "/apis/events.k8s.io/v1/events"),
            (
                Method::GET,
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            ),
            (
                Method::GET,
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2",
            ),
            (Method::GET, "/wasmkube/v1/modules"),
            (Method::GET, "/wasmkube/v1/modules/hello/v1"),
            (Method::GET, "/wasmkube/v1/resolve?image=hello:v1"),
            (Method::GET, "/wasmkube/v1/blobs/sha256:abc"),
            (Method::HEAD, "/wasmkube/v1/blobs/sha256:abc"),
            (Method::GET, "/api"),
            (Method::GET, "/apis/apps/v1"),
            (Method::GET, "/openapi/v3"),
            (Method::GET, "/version"),
            (Method::GET, "/cacerts"),
        ] {
            assert!(allowed(&n, m.clone(), p), "{m} {p}");
        }
        for (m, p) in [
            (Method::PUT, "/wasmkube/v1/modules/hello/v1"),
            (Method::DELETE, "/wasmkube/v1/modules/hello/v1"),
            (Method::POST, "/wasmkube/v1/join"),
            (Method::GET, "/metrics"),
            (Method::GET, "/apis/metrics.k8s.io/v1beta1/nodes"),
            (
                Method::GET,
                "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
            ),
            (Method::GET, "/apis/apps/v1/deployments"),
            (Method::GET, "/api/v1/namespaces/default/serviceaccounts"),
            (
                Method::GET,
                "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/x",
            ),
            (Method::GET, "/apis/coordination.k8s.io/v1/leases"),
            (Method::GET, "/api/v1/namespaces/default/pods/p/log"),
            (Method::GET, "/api/v1/nodes/n1/proxy/x"),
            (Method::POST, "/api/v1/namespaces/default/services"),
            (Method::PATCH, "/api/v1/namespaces/default/services/s"),
            (
                Method::DELETE,
                "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/e",
            ),
            (Method::PUT, "/api/v1/namespaces/default"),
            (Method::DELETE, "/api/v1/namespaces/default"),
        ] {
            assert!(denied(&n, m.clone(), p), "{m} {p}");
        }
    }

    #[test]
    fn nodes_get_only_referenced_secrets_and_configmaps() {
        let n = node("n1");
        for kind in ["secrets", "configmaps"] {
            let want = Decision::Requires(Condition::ReferencedByPodOn {
                node: "n1".into(),
                kind: RefKind::of_resource(kind).unwrap_or(RefKind::Secret),
            });
            let one = format!("/api/v1/namespaces/default/{kind}/x");
            assert_eq!(decide_on(&n, Method::GET, &one), want, "{one}");
            assert_eq!(decide_on(&n, Method::HEAD, &one), want, "{one}");
            for (m, p) in [
                (Method::GET, format!("/api/v1/namespaces/default/{kind}")),
                (Method::GET, format!("/api/v1/{kind}")),
                (
                    Method::GET,
                    format!("/api/v1/namespaces/default/{kind}?watch=true"),
                ),
                (
                    Method::GET,
                    format!("/api/v1/watch/namespaces/default/{kind}/x"),
                ),
                (
                    Method::GET,
                    format!("/api/v1/namespaces/default/{kind}/x?watch=true"),
                ),
                (
                    Method::GET,
                    format!("/api/v1/namespaces/default/{kind}?fieldSelector=metadata.name%3Dx"),
                ),
                (Method::POST, format!("/api/v1/namespaces/default/{kind}")),
                (Method::PUT, one.clone()),
                (Method::PATCH, one.clone()),
                (Method::DELETE, one.clone()),
                (Method::DELETE, format!("/api/v1/namespaces/default/{kind}")),
                (
                    Method::GET,
                    format!("/api/v1/namespaces/default/{kind}/x/status"),
                ),
                (Method::GET, format!("/api/v1/{kind}/x")),
            ] {
                assert!(denied(&n, m.clone(), &p), "{m} {p}");
            }
        }
    }

    #[test]
    fn nodes_write_only_their_own_node() {
        let n = node("n1");
        for (m, p) in [
            (Method::PATCH, "/api/v1/nodes/n1"),
            (Method::PUT, "/api/v1/nodes/n1"),
            (Method::DELETE, "/api/v1/nodes/n1"),
            (Method::PATCH, "/api/v1/nodes/n1/status"),
            (Method::PUT, "/api/v1/nodes/n1/status"),
        ] {
            assert!(allowed(&n, m.clone(), p), "{m} {p}");
        }
        for (m, p) in [
            (Method::PATCH, "/api/v1/nodes/n2"),
            (Method::PUT, "/api/v1/nodes/n2"),
            (Method::DELETE, "/api/v1/nodes/n2"),
            (Method::PATCH, "/api/v1/nodes/n2/status"),
            (Method::PUT, "/api/v1/nodes/n2/status"),
            (Method::DELETE, "/api/v1/nodes"),
            (Method::POST, "/api/v1/nodes/n1/status"),
        ] {
            assert!(denied(&n, m.clone(), p), "{m} {p}");
        }
        assert_eq!(
            decide_on(&n, Method::POST, "/api/v1/nodes"),
            Decision::Requires(Condition::BodyNamed {
                name: "n1".into(),
                denial: "node \"n1\" may only create its own Node object".into(),
            })
        );
    }

    #[test]
    fn nodes_use_only_their_own_lease() {
        let n = node("n1");
        let lease = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
        for m in [Method::GET, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(allowed(&n, m.clone(), &format!("{lease}/n1")), "{m}");
        }
        for m in [Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(denied(&n, m.clone(), &format!("{lease}/n2")), "{m}");
        }
        assert!(denied(&n, Method::DELETE, lease));
        assert!(matches!(
            decide_on(&n, Method::POST, lease),
            Decision::Requires(Condition::BodyNamed { ref name, .. }) if name == "n1"
        ));
        // Other namespaces: nothing, not even their own name.
        for m in [Method::GET, Method::PUT, Method::POST] {
            assert!(
                denied(
                    &n,
                    m.clone(),
                    "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/n1"
                ),
                "{m}"
            );
        }
    }

    #[test]
    fn nodes_write_status_and_delete_only_pods_bound_to_them() {
        let n = node("n1");
        let pod = "/api/v1/namespaces/default/pods/p";
        for (m, p) in [
            (Method::PATCH, format!("{pod}/status")),
            (Method::PUT, format!("{pod}/status")),
            (Method::DELETE, pod.to_string()),
        ] {
            assert!(
                matches!(
                    decide_on(&n, m.clone(), &p),
                    Decision::Requires(Condition::PodOnNode { ref node, .. }) if node == "n1"
                ),
                "{m} {p}"
            );
        }
        // Creating is for mirror pods only, checked on the body.
        assert_eq!(
            decide_on(&n, Method::POST, "/api/v1/namespaces/kube-system/pods"),
            Decision::Requires(Condition::MirrorPodOn { node: "n1".into() })
        );
        for (m, p) in [
            (Method::PUT, pod.to_string()),
            (Method::PATCH, pod.to_string()),
            (Method::POST, format!("{pod}/binding")),
            (Method::POST, format!("{pod}/eviction")),
            (Method::PATCH, format!("{pod}/ephemeralcontainers")),
            (
                Method::DELETE,
                "/api/v1/namespaces/default/pods".to_string(),
            ),
            (Method::DELETE, "/api/v1/pods".to_string()),
            (Method::GET, format!("{pod}/portforward")),
            (Method::POST, format!("{pod}/exec")),
        ] {
            assert!(denied(&n, m.clone(), &p), "{m} {p}");
        }
    }

    #[test]
    fn nodes_create_only_their_own_mirror_pods() {
        let mirror = serde_json::json!({
            "metadata": {
                "name": "wasmkube-agent-n1",
                "annotations": {"kubernetes.io/config.mirror": "abc"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "u"}],
            },
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "wasmkube:1"}]},
        });
        assert_eq!(check_mirror_pod("n1", &mirror), Ok(()));
        assert!(
            check_mirror_pod("n2", &mirror).is_err(),
            "bound to another node"
        );
        let with = |pointer: &str, value: serde_json::Value| {
            let mut pod = mirror.clone();
            if let Some(slot) = pod.pointer_mut(pointer) {
                *slot = value;
            }
            pod
        };
        let refused = [
            with("/metadata/annotations", serde_json::json!({})),
            with(
                "/metadata/ownerReferences",
                serde_json::json!([{"kind": "ReplicaSet", "name": "rs"}]),
            ),
            with(
                "/spec",
                serde_json::json!({"nodeName": "n1", "serviceAccountName": "robot", "containers": []}),
            ),
            with(
                "/spec",
                serde_json::json!({"nodeName": "n1", "volumes": [{"name": "s", "secret": {"secretName": "x"}}], "containers": []}),
            ),
            with(
                "/spec",
                serde_json::json!({"nodeName": "n1", "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "x"}}]}]}),
            ),
        ];
        for pod in refused {
            assert!(check_mirror_pod("n1", &pod).is_err(), "{pod}");
        }
    }

    #[test]
    fn nodes_record_events() {
        let n = node("n1");
        for (m, p) in [
            (Method::POST, "/api/v1/namespaces/default/events"),
            (Method::PATCH, "/api/v1/namespaces/default/events/e"),
            (Method::PUT, "/api/v1/namespaces/default/events/e"),
            (
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/default/events",
            ),
            (
                Method::PATCH,
                "/apis/events.k8s.io/v1/namespaces/default/events/e",
            ),
        ] {
            assert!(allowed(&n, m.clone(), p), "{m} {p}");
        }
        for (m, p) in [
            (Method::DELETE, "/api/v1/namespaces/default/events/e"),
            (Method::DELETE, "/api/v1/namespaces/default/events"),
            (
                Method::DELETE,
                "/apis/events.k8s.io/v1/namespaces/default/events/e",
            ),
        ] {
            assert!(denied(&n, m.clone(), p), "{m} {p}");
        }
    }

    #[test]
    fn nodes_open_only_their_own_tunnel() {
        let n = node("n1");
        assert!(allowed(&n, Method::GET, "/wasmkube/v1/nodes/n1/tunnel"));
        assert!(denied(&n, Method::GET, "/wasmkube/v1/nodes/n2/tunnel"));
        assert!(denied(&n, Method::POST, "/wasmkube/v1/nodes/n1/tunnel"));
        assert!(denied(&n, Method::GET, "/wasmkube/v1/nodes/n1%2E/tunnel"));
    }
}
