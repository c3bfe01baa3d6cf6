//! RBAC: Kubernetes' `rbac.authorization.k8s.io/v1` authorizer.
//!
//! The caller's rules are the union of the roles bound to it: every
//! ClusterRoleBinding naming it (cluster-wide), and, for a request in a
//! namespace, every RoleBinding there naming it (its Role, or a ClusterRole
//! applied to that namespace only). A subject names the caller by user
//! name, by one of its groups, or as a ServiceAccount
//! (`system:serviceaccount:<ns>:<name>`). A rule allows a request when its
//! verbs, API groups, resources (`pods`, `pods/log`, `*`, `*/log`) and
//! resource names match, or for a non-resource request its verbs and URLs
//! (`/healthz`, `/api/*`). Nothing denies: RBAC only adds permissions.
//!
//! The objects come from the registry's watch caches ([`load`]), so a
//! decision costs no store read while the caches are current.
//!
//! Writes of roles and bindings are checked for escalation
//! ([`check_escalation`]): a caller may only create or update a role whose
//! rules it holds itself (or with the `escalate` verb on it), and only bind
//! a role whose rules it holds (or with the `bind` verb on it).

pub mod bootstrap;
pub mod impersonation;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use wasmkube_api::patch;
use wasmkube_api::resources;

use super::attributes::Attributes;
use super::decision::{Condition, Decision, decide};
use crate::AppState;
use crate::auth::UserInfo;
use crate::error::{ApiError, Result};
use crate::registry::{Registry, request};

/// The RBAC API group.
pub const GROUP: &str = "rbac.authorization.k8s.io";
/// Prefix of ServiceAccount user names.
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
/// Matches everything in a rule field.
pub const ALL: &str = "*";

/// One `PolicyRule`, read leniently (missing lists are empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn has(list: &[String], item: &str) -> bool {
    list.iter().any(|x| x == ALL || x == item)
}

impl Rule {
    /// A rule from its JSON (`verbs`, `apiGroups`, `resources`,
    /// `resourceNames`, `nonResourceURLs`).
    pub fn from_value(v: &Value) -> Rule {
        Rule {
            verbs: strings(v, "verbs"),
            api_groups: strings(v, "apiGroups"),
            resources: strings(v, "resources"),
            resource_names: strings(v, "resourceNames"),
            non_resource_urls: strings(v, "nonResourceURLs"),
        }
    }

    /// The rule's JSON, empty lists left out (as Kubernetes prints it).
    pub fn to_value(&self) -> Value {
        let mut o = serde_json::Map::new();
        o.insert("verbs".into(), json!(self.verbs));
        for (key, list) in [
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.non_resource_urls),
        ] {
            if !list.is_empty() {
                o.insert(key.into(), json!(list));
            }
        }
        Value::Object(o)
    }

    /// Whether this rule allows `attrs` (Kubernetes' `RuleAllows`).
    pub fn allows(&self, attrs: &Attributes) -> bool {
        if !has(&self.verbs, &attrs.verb) {
            return false;
        }
        if !attrs.resource_request {
            return self
                .non_resource_urls
                .iter()
                .any(|u| url_matches(u, &attrs.path));
        }
        has(&self.api_groups, &attrs.api_group)
            && self.resource_matches(&attrs.resource, &attrs.subresource)
            && (self.resource_names.is_empty()
                || (!attrs.name.is_empty() && self.resource_names.contains(&attrs.name)))
    }

    fn resource_matches(&self, resource: &str, subresource: &str) -> bool {
        let combined = if subresource.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}/{subresource}")
        };
        self.resources.iter().any(|r| {
            r == ALL
                || *r == combined
                || (!subresource.is_empty()
                    && r.strip_prefix("*/").is_some_and(|s| s == subresource))
        })
    }

    /// Splits the rule into rules with one verb, group, resource and name
    /// (or URL) each: the unit [`covers`] compares.
    fn atoms(&self) -> Vec<Rule> {
        let mut out = Vec::new();
        for verb in &self.verbs {
            for url in &self.non_resource_urls {
                out.push(Rule {
                    verbs: vec![verb.clone()],
                    non_resource_urls: vec![url.clone()],
                    ..Rule::default()
                });
            }
            for group in &self.api_groups {
                for resource in &self.resources {
                    let names: Vec<Vec<String>> = if self.resource_names.is_empty() {
                        vec![Vec::new()]
                    } else {
                        self.resource_names
                            .iter()
                            .map(|n| vec![n.clone()])
                            .collect()
                    };
                    for resource_names in names {
                        out.push(Rule {
                            verbs: vec![verb.clone()],
                            api_groups: vec![group.clone()],
                            resources: vec![resource.clone()],
                            resource_names,
                            non_resource_urls: Vec::new(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Whether this rule grants everything the one-of-each `atom` grants
    /// (Kubernetes' `ruleCovers`): wildcards cover only where this rule
    /// has them.
    fn covers_atom(&self, atom: &Rule) -> bool {
        let verb = atom.verbs.first().map(String::as_str).unwrap_or("");
        if !has(&self.verbs, verb) {
            return false;
        }
        if let Some(url) = atom.non_resource_urls.first() {
            return self.non_resource_urls.iter().any(|own| {
                own == ALL
                    || own == url
                    || own
                        .strip_suffix('*')
                        .is_some_and(|prefix| url.starts_with(prefix))
            });
        }
        let group = atom.api_groups.first().map(String::as_str).unwrap_or("");
        let resource = atom.resources.first().map(String::as_str).unwrap_or("");
        let resource_ok = self.resources.iter().any(|own| {
            own == ALL
                || own == resource
                || (own
                    .strip_prefix("*/")
                    .is_some_and(|sub| resource.split_once('/').is_some_and(|(_, s)| s == sub)))
        });
        let names_ok = self.resource_names.is_empty()
            || atom
                .resource_names
                .first()
                .is_some_and(|n| self.resource_names.contains(n));
        has(&self.api_groups, group) && resource_ok && names_ok
    }
}

/// Kubernetes' `NonResourceURLMatches`: exact, `*`, or a `prefix*`.
fn url_matches(rule: &str, path: &str) -> bool {
    rule == ALL
        || rule == path
        || rule
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix))
}

/// Whether `owner` holds every permission of `servant` (Kubernetes'
/// `validation.Covers`); the rules it lacks otherwise.
pub fn covers(owner: &[Rule], servant: &[Rule]) -> std::result::Result<(), Vec<Rule>> {
    let missing: Vec<Rule> = servant
        .iter()
        .flat_map(Rule::atoms)
        .filter(|atom| !owner.iter().any(|o| o.covers_atom(atom)))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing)
    }
}

/// The rules of a Role or ClusterRole object.
pub fn rules_of(role: &Value) -> Vec<Rule> {
    role.get("rules")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(Rule::from_value).collect())
        .unwrap_or_default()
}

/// Whether `subject` (of a binding in `binding_ns`) names `user`.
pub fn subject_matches(subject: &Value, binding_ns: &str, user: &UserInfo) -> bool {
    let s = |k: &str| subject.get(k).and_then(Value::as_str).unwrap_or("");
    let name = s("name");
    match s("kind") {
        "User" => !name.is_empty() && user.name == name,
        "Group" => !name.is_empty() && user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = match s("namespace") {
                "" => binding_ns,
                ns => ns,
            };
            !name.is_empty()
                && !ns.is_empty()
                && user.name == format!("{SERVICE_ACCOUNT_PREFIX}{ns}:{name}")
        }
        _ => false,
    }
}

fn meta<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj.pointer(&format!("/metadata/{key}"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Why a rule applies: `ClusterRoleBinding "x" of ClusterRole "y"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub binding_kind: &'static str,
    pub binding: String,
    pub namespace: String,
    pub role_kind: String,
    pub role: String,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(
                f,
                "{} {:?} of {} {:?}",
                self.binding_kind, self.binding, self.role_kind, self.role
            )
        } else {
            write!(
                f,
                "{} \"{}/{}\" of {} {:?}",
                self.binding_kind, self.namespace, self.binding, self.role_kind, self.role
            )
        }
    }
}

/// The RBAC objects relevant to one namespace (or none: cluster scope),
/// taken from the watch caches.
#[derive(Debug, Default, Clone)]
pub struct Policy {
    cluster_roles: HashMap<String, Arc<Value>>,
    cluster_bindings: Vec<Arc<Value>>,
    namespace: String,
    roles: HashMap<String, Arc<Value>>,
    bindings: Vec<Arc<Value>>,
}

async fn objects(
    registry: &Registry,
    plural: &str,
    namespace: Option<&str>,
) -> Result<Vec<Arc<Value>>> {
    let res = resources::by_plural(GROUP, "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("the {plural} resource is not registered")))?;
    if let Some(cached) = registry.cached_objects(res, namespace) {
        return Ok(cached);
    }
    // The cache is re-listing or behind this server's own last write of
    // the resource: a consistent store read then.
    Ok(registry
        .stored_objects(res, namespace)
        .await?
        .into_iter()
        .map(Arc::new)
        .collect())
}

fn by_name(list: Vec<Arc<Value>>) -> HashMap<String, Arc<Value>> {
    list.into_iter()
        .map(|o| (meta(&o, "name").to_string(), o))
        .collect()
}

impl Policy {
    /// The cluster roles and bindings, and the roles and role bindings of
    /// `namespace` unless it is empty.
    pub async fn load(registry: &Registry, namespace: &str) -> Result<Policy> {
        let cluster_roles = by_name(objects(registry, "clusterroles", None).await?);
        let cluster_bindings = objects(registry, "clusterrolebindings", None).await?;
        let (roles, bindings) = if namespace.is_empty() {
            (HashMap::new(), Vec::new())
        } else {
            (
                by_name(objects(registry, "roles", Some(namespace)).await?),
                objects(registry, "rolebindings", Some(namespace)).await?,
            )
        };
        Ok(Policy {
            cluster_roles,
            cluster_bindings,
            namespace: namespace.to_string(),
            roles,
            bindings,
        })
    }

    /// A policy made of the given objects (tests, reviews of objects not
    /// yet stored).
    pub fn from_objects(namespace: &str, objects: &[Value]) -> Policy {
        let mut p = Policy {
            namespace: namespace.to_string(),
            ..Policy::default()
        };
        for o in objects {
            let name = meta(o, "name").to_string();
            let o = Arc::new(o.clone());
            match o.get("kind").and_then(Value::as_str).unwrap_or("") {
                "ClusterRole" => {
                    p.cluster_roles.insert(name, o);
                }
                "ClusterRoleBinding" => p.cluster_bindings.push(o),
                "Role" if meta(&o, "namespace") == namespace => {
                    p.roles.insert(name, o);
                }
                "RoleBinding" if meta(&o, "namespace") == namespace => p.bindings.push(o),
                _ => {}
            }
        }
        p
    }

    /// The namespace this policy was loaded for ("" = cluster scope only).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The rules of the role a binding refers to, if it exists. A
    /// ClusterRoleBinding can only refer to a ClusterRole.
    pub fn role_ref_rules(&self, role_ref: &Value, namespaced: bool) -> Option<Vec<Rule>> {
        let kind = role_ref.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = role_ref.get("name").and_then(Value::as_str).unwrap_or("");
        let role = match kind {
            "ClusterRole" => self.cluster_roles.get(name),
            "Role" if namespaced => self.roles.get(name),
            _ => None,
        }?;
        Some(rules_of(role))
    }

    /// Calls `visit` with every rule that applies to `user` (cluster-wide,
    /// then in this policy's namespace) and where it comes from; stops when
    /// `visit` returns true.
    pub fn visit(&self, user: &UserInfo, mut visit: impl FnMut(&Source, &Rule) -> bool) {
        let sets = [
            ("ClusterRoleBinding", &self.cluster_bindings, false),
            ("RoleBinding", &self.bindings, true),
        ];
        for (binding_kind, bindings, namespaced) in sets {
            for binding in bindings {
                let binding_ns = meta(binding, "namespace");
                let subjects = binding.get("subjects").and_then(Value::as_array);
                let names_user = subjects
                    .is_some_and(|s| s.iter().any(|s| subject_matches(s, binding_ns, user)));
                if !names_user {
                    continue;
                }
                let role_ref = binding.get("roleRef").unwrap_or(&Value::Null);
                // A binding to a role that does not exist (yet) grants nothing.
                let Some(rules) = self.role_ref_rules(role_ref, namespaced) else {
                    continue;
                };
                let source = Source {
                    binding_kind,
                    binding: meta(binding, "name").to_string(),
                    namespace: binding_ns.to_string(),
                    role_kind: role_ref
                        .get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    role: role_ref
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                };
                for rule in &rules {
                    if visit(&source, rule) {
                        return;
                    }
                }
            }
        }
    }

    /// Every rule that applies to `user` here.
    pub fn rules_for(&self, user: &UserInfo) -> Vec<Rule> {
        let mut out = Vec::new();
        self.visit(user, |_, r| {
            out.push(r.clone());
            false
        });
        out
    }

    /// `Some(reason)` when a rule bound to `user` allows `attrs`. The
    /// policy must have been loaded for `attrs.namespace`.
    pub fn allows(&self, user: &UserInfo, attrs: &Attributes) -> Option<String> {
        let mut found = None;
        self.visit(user, |source, rule| {
            if rule.allows(attrs) {
                found = Some(format!("RBAC: allowed by {source}"));
                true
            } else {
                false
            }
        });
        found
    }
}

/// The namespace whose RoleBindings apply to `attrs`: none for
/// non-resource requests.
fn namespace_of(attrs: &Attributes) -> &str {
    if attrs.resource_request {
        &attrs.namespace
    } else {
        ""
    }
}

/// RBAC's answer for `user` doing `attrs`: `Ok(Some(reason))` if allowed.
pub async fn authorize(
    registry: &Registry,
    user: &UserInfo,
    attrs: &Attributes,
) -> Result<Option<String>> {
    let policy = Policy::load(registry, namespace_of(attrs)).await?;
    Ok(policy.allows(user, attrs))
}

/// What the whole authorizer chain (node authorizer, then RBAC) says about
/// `user` doing `attrs`, without a request: for access reviews and
/// impersonation. `(allowed, reason)`. Node rules that depend on stored
/// state are answered "no" with that reason: a review cannot name the
/// object a node request would carry.
pub async fn evaluate(
    registry: &Registry,
    user: &UserInfo,
    attrs: &Attributes,
) -> Result<(bool, String)> {
    Ok(match decide(user, attrs) {
        Decision::Allow => (true, String::new()),
        Decision::Deny(why) => (false, why),
        Decision::Requires(Condition::Rbac) => match authorize(registry, user, attrs).await? {
            Some(why) => (true, why),
            None => (false, String::new()),
        },
        Decision::Requires(_) => (
            false,
            "the node authorizer decides this from the stored objects a request names".to_string(),
        ),
    })
}

fn refuse(user: &UserInfo, attrs: &Attributes, why: &str) -> Response {
    tracing::debug!(
        user = %user.name,
        verb = %attrs.verb,
        path = %attrs.path,
        reason = %why,
        "request forbidden by RBAC"
    );
    ApiError(super::forbidden(&user.name, attrs, why)).into_response()
}

/// The middleware's RBAC step: allowed requests come back (with their body)
/// after the escalation check, others become a 403.
pub async fn check(
    state: &AppState,
    user: &UserInfo,
    attrs: &Attributes,
    req: Request,
) -> std::result::Result<Request, Response> {
    match authorize(&state.registry, user, attrs).await {
        Ok(Some(_)) => {}
        Ok(None) => return Err(refuse(user, attrs, "")),
        Err(e) => return Err(e.into_response()),
    }
    if !is_policy_write(attrs) {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, state.limits.api)
        .await
        .map_err(|_| ApiError(wasmkube_api::status::too_large(state.limits.api)).into_response())?;
    let ty = request::body_type(&parts.headers).map_err(IntoResponse::into_response)?;
    let new = match attrs.verb.as_str() {
        "patch" => patched(state, attrs, &bytes, ty).await,
        _ => request::decode_object(&bytes, ty),
    };
    // An undecodable body is left for the handler to refuse with its own
    // message: it writes nothing.
    if let Ok(new) = new
        && let Err(why) = check_escalation(&state.registry, user, attrs, &new).await
    {
        return Err(refuse(user, attrs, &why));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Creates, updates and patches of roles and bindings: the writes that
/// could grant permissions.
fn is_policy_write(attrs: &Attributes) -> bool {
    attrs.resource_request
        && attrs.api_group == GROUP
        && attrs.subresource.is_empty()
        && matches!(attrs.verb.as_str(), "create" | "update" | "patch")
        && matches!(
            attrs.resource.as_str(),
            "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings"
        )
}

/// The object a patch would produce from the stored one (an apply patch
/// of a missing object: the applied object itself).
async fn patched(
    state: &AppState,
    attrs: &Attributes,
    bytes: &[u8],
    ty: request::BodyType,
) -> Result<Value> {
    let doc = request::decode(bytes, ty)?;
    let res = resources::by_plural(GROUP, "v1", &attrs.resource)
        .ok_or_else(|| ApiError::internal("RBAC resource not registered"))?;
    let ns = Some(attrs.namespace.as_str()).filter(|n| !n.is_empty());
    let current = match state.registry.get(res, ns, &attrs.name).await {
        Ok(c) => c,
        Err(e) if e.code() == 404 && ty == request::BodyType::ApplyPatch => return Ok(doc),
        Err(e) => return Err(e),
    };
    let bad = |e: wasmkube_api::patch::PatchError| ApiError::bad_request(e.to_string());
    Ok(match ty {
        request::BodyType::StrategicMerge => patch::strategic_merge(&current, &doc).map_err(bad)?,
        request::BodyType::MergePatch => patch::merge_patch(&current, &doc),
        request::BodyType::JsonPatch => patch::json_patch(&current, &doc).map_err(bad)?,
        request::BodyType::ApplyPatch => {
            patch::server_side_apply(Some(&current), &doc).map_err(bad)?
        }
        request::BodyType::Json | request::BodyType::Yaml => doc,
    })
}

fn describe_missing(missing: &[Rule]) -> String {
    let shown: Vec<String> = missing
        .iter()
        .take(10)
        .map(|r| {
            if r.non_resource_urls.is_empty() {
                format!(
                    "{{APIGroups:[{:?}], Resources:[{:?}], ResourceNames:{:?}, Verbs:[{:?}]}}",
                    r.api_groups.first().map(String::as_str).unwrap_or(""),
                    r.resources.first().map(String::as_str).unwrap_or(""),
                    r.resource_names,
                    r.verbs.first().map(String::as_str).unwrap_or("")
                )
            } else {
                format!(
                    "{{NonResourceURLs:[{:?}], Verbs:[{:?}]}}",
                    r.non_resource_urls
                        .first()
                        .map(String::as_str)
                        .unwrap_or(""),
                    r.verbs.first().map(String::as_str).unwrap_or("")
                )
            }
        })
        .collect();
    let more = if missing.len() > shown.len() {
        format!(" and {} more", missing.len() - shown.len())
    } else {
        String::new()
    };
    format!("{}{more}", shown.join(" "))
}

/// Kubernetes' escalation prevention for a write of `new` (a Role,
/// ClusterRole, RoleBinding or ClusterRoleBinding) by `user`. `Err(reason)`
/// when refused.
pub async fn check_escalation(
    registry: &Registry,
    user: &UserInfo,
    attrs: &Attributes,
    new: &Value,
) -> std::result::Result<(), String> {
    let namespace = attrs.namespace.as_str();
    let policy = Policy::load(registry, namespace).await.map_err(|e| {
        format!(
            "reading the RBAC policy: {}",
            e.0.message.unwrap_or_default()
        )
    })?;
    let held = policy.rules_for(user);
    let name = if attrs.name.is_empty() {
        meta(new, "name").to_string()
    } else {
        attrs.name.clone()
    };
    match attrs.resource.as_str() {
        "roles" | "clusterroles" => {
            let escalate = Attributes {
                verb: "escalate".into(),
                name: name.clone(),
                subresource: String::new(),
                ..attrs.clone()
            };
            if policy.allows(user, &escalate).is_some() {
                return Ok(());
            }
            covers(&held, &rules_of(new)).map_err(|missing| {
                format!(
                    "user {:?} (groups={:?}) is attempting to grant RBAC permissions not currently held: {}",
                    user.name,
                    user.groups,
                    describe_missing(&missing)
                )
            })
        }
        "rolebindings" | "clusterrolebindings" => {
            let role_ref = new.get("roleRef").unwrap_or(&Value::Null);
            let kind = role_ref.get("kind").and_then(Value::as_str).unwrap_or("");
            let role = role_ref.get("name").and_then(Value::as_str).unwrap_or("");
            let bind = Attributes {
                verb: "bind".into(),
                api_group: GROUP.into(),
                resource: if kind == "ClusterRole" {
                    "clusterroles".into()
                } else {
                    "roles".into()
                },
                subresource: String::new(),
                name: role.to_string(),
                ..attrs.clone()
            };
            if policy.allows(user, &bind).is_some() {
                return Ok(());
            }
            let namespaced = attrs.resource == "rolebindings";
            let Some(rules) = policy.role_ref_rules(role_ref, namespaced) else {
                return Err(format!(
                    "{kind} {role:?} not found: binding it needs the bind verb on it"
                ));
            };
            covers(&held, &rules).map_err(|missing| {
                format!(
                    "user {:?} (groups={:?}) is attempting to grant RBAC permissions not currently held: {}",
                    user.name,
                    user.groups,
                    describe_missing(&missing)
                )
            })
        }
        _ => Ok(()),
    }
}

/// Kubernetes' `SelfSubjectRulesReview` status for `user` in `namespace`:
/// the rules RBAC gives it there, split into resource and non-resource
/// rules; `system:masters` gets the wildcard; node and bootstrap
/// credentials are decided by rules RBAC cannot list (`incomplete`).
pub async fn rules_review(registry: &Registry, user: &UserInfo, namespace: &str) -> Result<Value> {
    use super::decision::{Identity, identify};
    let (rules, incomplete, error) = match identify(user) {
        Identity::Unrestricted => (
            vec![
                Rule {
                    verbs: vec![ALL.into()],
                    api_groups: vec![ALL.into()],
                    resources: vec![ALL.into()],
                    ..Rule::default()
                },
                Rule {
                    verbs: vec![ALL.into()],
                    non_resource_urls: vec![ALL.into()],
                    ..Rule::default()
                },
            ],
            false,
            None,
        ),
        Identity::Rbac => {
            let policy = Policy::load(registry, namespace).await?;
            (policy.rules_for(user), false, None)
        }
        _ => (
            Vec::new(),
            true,
            Some("node and bootstrap credentials are authorized by rules that cannot be listed"),
        ),
    };
    let (non_resource, resource): (Vec<&Rule>, Vec<&Rule>) =
        rules.iter().partition(|r| !r.non_resource_urls.is_empty());
    let resource_rules: Vec<Value> = resource
        .iter()
        .map(|r| {
            json!({
                "verbs": r.verbs,
                "apiGroups": r.api_groups,
                "resources": r.resources,
                "resourceNames": r.resource_names,
            })
        })
        .collect();
    let non_resource_rules: Vec<Value> = non_resource
        .iter()
        .map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}))
        .collect();
    let mut status = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": incomplete,
    });
    if let Some(e) = error {
        status["evaluationError"] = json!(e);
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::attributes::parse;
    use axum::http::Method;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn rule(v: Value) -> Rule {
        Rule::from_value(&v)
    }

    #[test]
    fn rules_match_like_kubernetes() {
        let r =
            rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods", "pods/log"]}));
        assert!(r.allows(&parse(&Method::GET, "/api/v1/namespaces/a/pods/x", None)));
        assert!(r.allows(&parse(
            &Method::GET,
            "/api/v1/namespaces/a/pods/x/log",
            None
        )));
        assert!(!r.allows(&parse(
            &Method::GET,
            "/api/v1/namespaces/a/pods/x/status",
            None
        )));
        assert!(!r.allows(&parse(&Method::GET, "/api/v1/namespaces/a/pods", None)));
        assert!(!r.allows(&parse(&Method::DELETE, "/api/v1/namespaces/a/pods/x", None)));
        assert!(!r.allows(&parse(
            &Method::GET,
            "/apis/apps/v1/namespaces/a/pods/x",
            None
        )));

        let sub = rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*/status"]}));
        assert!(sub.allows(&parse(
            &Method::PATCH,
            "/api/v1/namespaces/a/pods/x/status",
            None
        )));
        assert!(!sub.allows(&parse(&Method::PATCH, "/api/v1/namespaces/a/pods/x", None)));

        let named = rule(
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["c"]}),
        );
        assert!(named.allows(&parse(
            &Method::GET,
            "/api/v1/namespaces/a/configmaps/c",
            None
        )));
        assert!(!named.allows(&parse(
            &Method::GET,
            "/api/v1/namespaces/a/configmaps/d",
            None
        )));
        // A list is allowed by name only when it selects that one name.
        assert!(!named.allows(&parse(
            &Method::GET,
            "/api/v1/namespaces/a/configmaps",
            None
        )));
        assert!(named.allows(&parse(
            &Method::GET,
            "/api/v1/namespaces/a/configmaps",
            Some("fieldSelector=metadata.name%3Dc")
        )));

        let urls = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/apis/*"]}));
        assert!(urls.allows(&parse(&Method::GET, "/healthz", None)));
        assert!(urls.allows(&parse(&Method::GET, "/apis/apps", None)));
        assert!(!urls.allows(&parse(&Method::GET, "/healthz/etcd", None)));
        assert!(!urls.allows(&parse(&Method::POST, "/healthz", None)));
        // Resource rules never match non-resource requests and vice versa.
        assert!(!r.allows(&parse(&Method::GET, "/healthz", None)));
        assert!(!urls.allows(&parse(&Method::GET, "/apis/apps/v1/deployments", None)));
    }

    #[test]
    fn subjects_match_users_groups_and_service_accounts() {
        let alice = user("alice", &["devs", "system:authenticated"]);
        let sa = user(
            "system:serviceaccount:ns:robot",
            &["system:serviceaccounts", "system:serviceaccounts:ns"],
        );
        assert!(subject_matches(
            &json!({"kind": "User", "name": "alice"}),
            "",
            &alice
        ));
        assert!(!subject_matches(
            &json!({"kind": "User", "name": "devs"}),
            "",
            &alice
        ));
        assert!(subject_matches(
            &json!({"kind": "Group", "name": "devs"}),
            "",
            &alice
        ));
        assert!(!subject_matches(
            &json!({"kind": "Group", "name": "alice"}),
            "",
            &alice
        ));
        assert!(subject_matches(
            &json!({"kind": "ServiceAccount", "name": "robot"}),
            "ns",
            &sa
        ));
        assert!(subject_matches(
            &json!({"kind": "ServiceAccount", "name": "robot", "namespace": "ns"}),
            "other",
            &sa
        ));
        assert!(!subject_matches(
            &json!({"kind": "ServiceAccount", "name": "robot"}),
            "other",
            &sa
        ));
        assert!(subject_matches(
            &json!({"kind": "Group", "name": "system:serviceaccounts:ns"}),
            "",
            &sa
        ));
        assert!(!subject_matches(
            &json!({"kind": "User", "name": ""}),
            "",
            &user("", &[])
        ));
    }

    fn policy(ns: &str) -> Policy {
        let gr = GROUP;
        Policy::from_objects(
            ns,
            &[
                json!({"kind": "ClusterRole", "metadata": {"name": "reader"},
                       "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]}),
                json!({"kind": "Role", "metadata": {"name": "writer", "namespace": "a"},
                       "rules": [{"verbs": ["create"], "apiGroups": [""], "resources": ["configmaps"]}]}),
                json!({"kind": "ClusterRoleBinding", "metadata": {"name": "all-read"},
                       "roleRef": {"apiGroup": gr, "kind": "ClusterRole", "name": "reader"},
                       "subjects": [{"kind": "Group", "apiGroup": gr, "name": "readers"}]}),
                json!({"kind": "RoleBinding", "metadata": {"name": "w", "namespace": "a"},
                       "roleRef": {"apiGroup": gr, "kind": "Role", "name": "writer"},
                       "subjects": [{"kind": "User", "apiGroup": gr, "name": "bob"}]}),
                json!({"kind": "RoleBinding", "metadata": {"name": "r", "namespace": "a"},
                       "roleRef": {"apiGroup": gr, "kind": "ClusterRole", "name": "reader"},
                       "subjects": [{"kind": "User", "apiGroup": gr, "name": "bob"}]}),
                json!({"kind": "RoleBinding", "metadata": {"name": "dangling", "namespace": "a"},
                       "roleRef": {"apiGroup": gr, "kind": "Role", "name": "missing"},
                       "subjects": [{"kind": "User", "apiGroup": gr, "name": "carol"}]}),
            ],
        )
    }

    #[test]
    fn bindings_grant_cluster_wide_or_per_namespace() {
        let bob = user("bob", &["system:authenticated"]);
        let reader = user("r", &["readers"]);
        let a = policy("a");
        let b = policy("b");
        let get_a = parse(&Method::GET, "/api/v1/namespaces/a/pods/x", None);
        let get_b = parse(&Method::GET, "/api/v1/namespaces/b/pods/x", None);
        let create_cm_a = parse(&Method::POST, "/api/v1/namespaces/a/configmaps", None);
        let create_cm_b = parse(&Method::POST, "/api/v1/namespaces/b/configmaps", None);
        assert!(a.allows(&bob, &get_a).is_some());
        assert!(b.allows(&bob, &get_b).is_none());
        assert_eq!(
            a.allows(&bob, &create_cm_a).as_deref(),
            Some("RBAC: allowed by RoleBinding \"a/w\" of Role \"writer\"")
        );
        assert!(b.allows(&bob, &create_cm_b).is_none());
        assert!(a.allows(&reader, &get_a).is_some());
        assert!(b.allows(&reader, &get_b).is_some());
        assert!(a.allows(&reader, &create_cm_a).is_none());
        assert!(a.rules_for(&user("carol", &[])).is_empty());
        assert_eq!(a.rules_for(&bob).len(), 2);
    }

    #[test]
    fn covers_needs_every_permission() {
        let owner = vec![
            rule(
                json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "*/log"]}),
            ),
            rule(json!({"verbs": ["*"], "apiGroups": ["apps"], "resources": ["deployments"]})),
            rule(json!({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]})),
        ];
        let ok = [
            rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods", "pods/log"]})),
            rule(
                json!({"verbs": ["delete", "update"], "apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["x"]}),
            ),
            rule(json!({"verbs": ["get"], "nonResourceURLs": ["/apis/apps"]})),
        ];
        assert!(covers(&owner, &ok).is_ok());
        let missing = covers(
            &owner,
            &[rule(json!({"verbs": ["get", "delete"], "apiGroups": [""], "resources": ["pods", "secrets"]}))],
        )
        .err()
        .unwrap_or_default();
        assert_eq!(missing.len(), 3);
        // A wildcard is covered only by a wildcard.
        assert!(
            covers(
                &owner,
                &[rule(
                    json!({"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]})
                )]
            )
            .is_err()
        );
        assert!(
            covers(
                &owner,
                &[rule(
                    json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["pods"]})
                )]
            )
            .is_err()
        );
        // A name-restricted owner covers only those names.
        let named = vec![rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]}),
        )];
        assert!(covers(&named, &[rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]}))]).is_ok());
        assert!(
            covers(
                &named,
                &[rule(
                    json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]})
                )]
            )
            .is_err()
        );
    }
}
