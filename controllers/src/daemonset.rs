//! DaemonSet controller: one pod per eligible node.
//!
//! A node is eligible when it matches the template's `nodeSelector` and
//! required node affinity, is not being deleted, and its taints are
//! tolerated — counting the tolerations Kubernetes gives every daemon pod
//! ([`daemon_tolerations`]). Like Kubernetes ≥1.12, the controller does not
//! bind pods itself: each pod carries a required node affinity on
//! `metadata.name` and the default scheduler binds it. Pods carry
//! `controller-revision-hash` (a hash of the template); `RollingUpdate`
//! replaces outdated pods keeping at most `maxUnavailable` nodes without an
//! available pod, `OnDelete` waits for the user to delete them.
//!
//! The per-node decisions ([`placement`], [`plan`]) are pure; the
//! reconciler claims pods, applies the plan and writes the status
//! `kubectl rollout status ds/…` reads. Creations and deletions are
//! remembered as expectations (shared with the ReplicaSet controller) so a
//! lagging pod cache never makes a node get two pods.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, PodTemplateSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::time::Instant;
use wasmkube_api::selector::LabelSelector;

use crate::deployment::{scaled_value, template_hash};
use crate::events::{self, EventType, Recorder};
use crate::framework::{Action, Reconciler};
use crate::node_lifecycle::{NOT_READY_TAINT, UNREACHABLE_TAINT, tolerates};
use crate::ownership::{self, Claim};
use crate::replicaset::{Expectations, is_available, is_finished, ready_since};

/// Source component of this controller's events.
pub const COMPONENT: &str = "daemonset-controller";
/// Label carrying the template hash of a daemon pod.
pub const REVISION_HASH: &str = "controller-revision-hash";
/// Concurrent pod writes within one reconcile.
const WRITE_CONCURRENCY: usize = 8;

/// Errors from the DaemonSet controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{what} {key}: {source}")]
    Api {
        /// What was being done.
        what: &'static str,
        /// DaemonSet key.
        key: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

/// The tolerations Kubernetes adds to every daemon pod
/// (`AddOrUpdateDaemonPodTolerations`): daemons survive their node going
/// not-ready or unreachable, and still land on nodes under pressure or
/// cordoned.
pub fn daemon_tolerations() -> Vec<Toleration> {
    let exists = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    vec![
        exists(NOT_READY_TAINT, "NoExecute"),
        exists(UNREACHABLE_TAINT, "NoExecute"),
        exists("node.kubernetes.io/disk-pressure", "NoSchedule"),
        exists("node.kubernetes.io/memory-pressure", "NoSchedule"),
        exists("node.kubernetes.io/pid-pressure", "NoSchedule"),
        exists("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
}

/// `tolerations` plus every daemon toleration not already present.
pub fn with_daemon_tolerations(tolerations: &[Toleration]) -> Vec<Toleration> {
    let mut all = tolerations.to_vec();
    for t in daemon_tolerations() {
        if !all
            .iter()
            .any(|x| x.key == t.key && x.effect == t.effect && x.operator == t.operator)
        {
            all.push(t);
        }
    }
    all
}

/// The template's `nodeSelector` and required node affinity against `node`.
pub use wasmkube_api::scheduling::matches_node;

/// Whether a node should get a daemon pod, and whether one already there
/// may stay (Kubernetes' `NodeShouldRunDaemonPod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// A pod should be created here when missing.
    pub should_run: bool,
    /// An existing pod may keep running here (only `NoExecute` taints and
    /// affinity count: a new `NoSchedule` taint does not evict).
    pub should_continue: bool,
}

/// Pure placement rule for a daemon pod of `spec` (tolerations already
/// including [`daemon_tolerations`]) on `node`.
pub fn placement(spec: &PodSpec, node: &Node) -> Placement {
    if node.metadata.deletion_timestamp.is_some() || !matches_node(spec, node) {
        return Placement {
            should_run: false,
            should_continue: false,
        };
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or(&[]);
    let taints: &[Taint] = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[]);
    let untolerated = |effects: &[&str]| {
        taints.iter().any(|t| {
            effects.contains(&t.effect.as_str()) && !tolerations.iter().any(|tol| tolerates(tol, t))
        })
    };
    let should_continue = !untolerated(&["NoExecute"]);
    Placement {
        should_run: should_continue && !untolerated(&["NoSchedule"]),
        should_continue,
    }
}

/// The node a daemon pod is for: its `nodeName`, or before binding the
/// `metadata.name` its required affinity pins it to.
pub fn target_node(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_deref())
        .and_then(|v| match v {
            [one] => Some(one.as_str()),
            _ => None,
        })
}

/// The template's pod spec with the daemon tolerations added.
pub fn daemon_spec(template: &PodTemplateSpec) -> PodSpec {
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.tolerations = Some(with_daemon_tolerations(
        spec.tolerations.as_deref().unwrap_or(&[]),
    ));
    spec
}

/// The pod a DaemonSet creates for `node` (Kubernetes'
/// `ReplaceDaemonSetPodNodeNameNodeAffinity`: the required affinity becomes
/// one term pinning `metadata.name`; the node already passed the template's
/// own terms).
pub fn pod_for_node(ds: &DaemonSet, template: &PodTemplateSpec, hash: &str, node: &str) -> Pod {
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(REVISION_HASH.to_string(), hash.to_string());
    let mut spec = daemon_spec(template);
    let pin = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
        }],
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .required_during_scheduling_ignored_during_execution = Some(pin);
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.metadata.name.as_deref().unwrap_or("ds"))),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![ownership::controller_ref(
                "apps/v1",
                "DaemonSet",
                &ds.metadata,
            )]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn pod_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_HASH))
        .map(String::as_str)
}

/// `maxUnavailable` of a RollingUpdate DaemonSet resolved against the
/// desired count (rounded up, at least 1: surge is not supported, so 0
/// would never make progress); `None` for `OnDelete`.
pub fn max_unavailable(ds: &DaemonSet, desired: i32) -> Option<i32> {
    let strategy = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    if strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete") {
        return None;
    }
    let v = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1));
    Some(scaled_value(&v, desired, true).max(1))
}

/// What one reconcile should do (pure result of [`plan`]).
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes that need a pod.
    pub create_on: Vec<String>,
    /// Pods to delete, as (name, uid).
    pub delete: Vec<(String, String)>,
    /// The status the DaemonSet should report.
    pub status: DaemonSetStatus,
    /// A pod is ready but not yet available (`minReadySeconds`): look again.
    pub waiting_for_available: bool,
}

fn name_uid(p: &Pod) -> (String, String) {
    (
        p.metadata.name.clone().unwrap_or_default(),
        p.metadata.uid.clone().unwrap_or_default(),
    )
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Pure decision for one DaemonSet: `owned` are its pods, `hash` its
/// current template hash.
pub fn plan(
    ds: &DaemonSet,
    hash: &str,
    nodes: &[&Node],
    owned: &[&Pod],
    now: jiff::Timestamp,
) -> Plan {
    let spec = ds
        .spec
        .as_ref()
        .map(|s| daemon_spec(&s.template))
        .unwrap_or_default();
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let mut by_node: HashMap<&str, Vec<&Pod>> = HashMap::new();
    for p in owned {
        if let Some(n) = target_node(p) {
            by_node.entry(n).or_default().push(p);
        }
    }
    let mut out = Plan::default();
    let (mut desired, mut current, mut misscheduled) = (0usize, 0usize, 0usize);
    let (mut ready, mut available, mut updated) = (0usize, 0usize, 0usize);
    // Nodes that should run a pod, with the one pod kept there (if any).
    let mut kept: Vec<Option<&Pod>> = Vec::new();
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or("");
        let mut pods = by_node.remove(name).unwrap_or_default();
        pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let place = placement(&spec, node);
        let live: Vec<&Pod> = pods
            .iter()
            .copied()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let (finished, running): (Vec<&Pod>, Vec<&Pod>) =
            live.iter().copied().partition(|p| is_finished(p));
        if place.should_run {
            desired += 1;
            if let Some(first) = running.first() {
                current += 1;
                if ready_since(first).is_some() {
                    ready += 1;
                    if is_available(first, min_ready, now) {
                        available += 1;
                    } else {
                        out.waiting_for_available = true;
                    }
                }
                if pod_hash(first) == Some(hash) {
                    updated += 1;
                }
            }
        } else if !running.is_empty() {
            misscheduled += 1;
        }
        if place.should_continue {
            // A finished daemon pod is replaced; extras beyond the oldest go.
            out.delete.extend(finished.iter().map(|p| name_uid(p)));
            out.delete
                .extend(running.iter().skip(1).map(|p| name_uid(p)));
            if running.is_empty() && place.should_run {
                out.create_on.push(name.to_string());
            }
            if place.should_run {
                kept.push(running.first().copied());
            }
        } else {
            out.delete.extend(live.iter().map(|p| name_uid(p)));
        }
    }
    // Pods for nodes that no longer exist.
    for pods in by_node.values() {
        out.delete.extend(
            pods.iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| name_uid(p)),
        );
    }
    if let Some(max) = max_unavailable(ds, count(desired)) {
        // RollingUpdate: outdated pods that are not available go at once;
        // available ones only while the unavailable budget allows.
        let available = |p: &Pod| is_available(p, min_ready, now);
        let mut unavailable = count(kept.iter().filter(|k| !k.is_some_and(&available)).count());
        let outdated: Vec<&Pod> = kept
            .iter()
            .flatten()
            .copied()
            .filter(|p| pod_hash(p) != Some(hash))
            .collect();
        for p in &outdated {
            if !available(p) {
                out.delete.push(name_uid(p));
            }
        }
        for p in outdated.iter().filter(|p| available(p)) {
            if unavailable >= max {
                break;
            }
            unavailable += 1;
            out.delete.push(name_uid(p));
        }
    }
    let old = ds.status.as_ref();
    out.status = DaemonSetStatus {
        collision_count: old.and_then(|s| s.collision_count),
        conditions: old.and_then(|s| s.conditions.clone()),
        current_number_scheduled: count(current),
        desired_number_scheduled: count(desired),
        // omitempty in Kubernetes: absent when zero.
        number_available: Some(count(available)).filter(|n| *n > 0),
        number_misscheduled: count(misscheduled),
        number_ready: count(ready),
        number_unavailable: Some(count(desired.saturating_sub(available))).filter(|n| *n > 0),
        observed_generation: ds.metadata.generation,
        updated_number_scheduled: Some(count(updated)).filter(|n| *n > 0),
    };
    out
}

/// Keys of the DaemonSets a pod event concerns: its controller if that is a
/// DaemonSet, else every DaemonSet whose selector matches (adoption).
pub fn keys_for_pod(pod: &Pod, daemonsets: &Store<DaemonSet>) -> Vec<String> {
    ownership::owner_keys_for(&pod.metadata, "DaemonSet", daemonsets, |o: &DaemonSet| {
        o.spec.as_ref().map(|s| &s.selector)
    })
}

/// The DaemonSet reconciler (key = `namespace/name`).
pub struct DaemonSetController {
    client: Client,
    daemonsets: Store<DaemonSet>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    recorder: Recorder,
    expectations: Expectations,
}

impl DaemonSetController {
    /// A reconciler reading the given caches.
    pub fn new(
        client: Client,
        daemonsets: Store<DaemonSet>,
        pods: Store<Pod>,
        nodes: Store<Node>,
    ) -> Self {
        DaemonSetController {
            recorder: Recorder::new(client.clone(), COMPONENT),
            client,
            daemonsets,
            pods,
            nodes,
            expectations: Expectations::default(),
        }
    }

    /// Deletes `doomed` and creates a pod on each of `create_on`.
    async fn apply(
        &mut self,
        key: &str,
        ds: &DaemonSet,
        template: &PodTemplateSpec,
        hash: &str,
        plan: &Plan,
    ) -> Result<(), Error> {
        let (ns, _) = ownership::split_key(key);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let ds_ref = events::reference("apps/v1", "DaemonSet", &ds.metadata);
        let now = Instant::now();
        let err = |what: &'static str, source| Error::Api {
            what,
            key: key.to_string(),
            source,
        };
        for (_, uid) in &plan.delete {
            self.expectations.deleted(key, uid, now);
        }
        let deletions: Vec<(String, Result<(), kube::Error>)> =
            futures::stream::iter(plan.delete.clone())
                .map(|(name, uid)| {
                    let api = api.clone();
                    async move {
                        let dp = DeleteParams {
                            preconditions: Some(Preconditions {
                                uid: Some(uid),
                                resource_version: None,
                            }),
                            ..DeleteParams::background()
                        };
                        let r = api.delete(&name, &dp).await.map(|_| ());
                        (name, r)
                    }
                })
                .buffer_unordered(WRITE_CONCURRENCY)
                .collect()
                .await;
        let mut failure = None;
        for (name, r) in deletions {
            match r {
                Ok(()) => self.recorder.record(
                    &ds_ref,
                    EventType::Normal,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {name}"),
                ),
                Err(e) if ownership::is_conflict_or_gone(&e) => {}
                Err(e) => {
                    self.recorder.record(
                        &ds_ref,
                        EventType::Warning,
                        "FailedDelete",
                        &format!("Error deleting: {e}"),
                    );
                    failure.get_or_insert(err("deleting pod of", e));
                }
            }
        }
        let creations: Vec<Result<Pod, kube::Error>> =
            futures::stream::iter(plan.create_on.clone())
                .map(|node| {
                    let api = api.clone();
                    let pod = pod_for_node(ds, template, hash, &node);
                    async move { api.create(&PostParams::default(), &pod).await }
                })
                .buffer_unordered(WRITE_CONCURRENCY)
                .collect()
                .await;
        for r in creations {
            match r {
                Ok(p) => {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    self.expectations.created(key, &name, now);
                    self.recorder.record(
                        &ds_ref,
                        EventType::Normal,
                        "SuccessfulCreate",
                        &format!("Created pod: {name}"),
                    );
                }
                Err(e) => {
                    self.recorder.record(
                        &ds_ref,
                        EventType::Warning,
                        "FailedCreate",
                        &format!("Error creating: {e}"),
                    );
                    failure.get_or_insert(err("creating pod for", e));
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

impl Reconciler for DaemonSetController {
    type Error = Error;

    fn all_keys(&self) -> Vec<String> {
        self.daemonsets
            .state()
            .iter()
            .map(|ds| ownership::key_of(&ds.metadata))
            .collect()
    }

    async fn reconcile(&mut self, key: &str) -> Result<Action, Error> {
        let (ns, name) = ownership::split_key(key);
        let Some(ds) = self.daemonsets.get(&ObjectRef::new(name).within(ns)) else {
            self.expectations.forget(key);
            return Ok(Action::AwaitChange);
        };
        let Some(spec) = ds.spec.as_ref() else {
            return Ok(Action::AwaitChange);
        };
        let selector = match LabelSelector::from_k8s(&spec.selector) {
            Ok(s) if !s.is_empty() => s,
            Ok(_) | Err(_) => {
                tracing::warn!(key, "daemonset has an empty or invalid selector; ignored");
                return Ok(Action::AwaitChange);
            }
        };
        let err = |what: &'static str| {
            let key = key.to_string();
            move |source| Error::Api { what, key, source }
        };
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let deleting = ds.metadata.deletion_timestamp.is_some();
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let all_pods = self.pods.state();
        let ns_pods: Vec<&Pod> = all_pods
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
            .collect();

        // Claim, as the ReplicaSet controller does.
        let mut owned: Vec<Pod> = Vec::new();
        let mut requeue_soon = false;
        for pod in &ns_pods {
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            let meta = match ownership::claim(&uid, deleting, &selector, &pod.metadata) {
                Claim::Keep => {
                    owned.push((*pod).clone());
                    continue;
                }
                Claim::Ignore => continue,
                Claim::Adopt => ownership::with_owner(
                    &pod.metadata,
                    ownership::controller_ref("apps/v1", "DaemonSet", &ds.metadata),
                ),
                Claim::Release => ownership::without_owner(&pod.metadata, &uid),
            };
            let mut p = (*pod).clone();
            let adopting = meta.owner_references.iter().flatten().any(|r| r.uid == uid);
            p.metadata = meta;
            match pods_api
                .replace(&pod_name, &PostParams::default(), &p)
                .await
            {
                Ok(p) if adopting => owned.push(p),
                Ok(_) => {}
                Err(e) if ownership::is_conflict_or_gone(&e) => requeue_soon = true,
                Err(e) => return Err(err("claiming pod for")(e)),
            }
        }

        let hash = template_hash(
            &spec.template,
            ds.status.as_ref().and_then(|s| s.collision_count),
        );
        let nodes = self.nodes.state();
        let nodes: Vec<&Node> = nodes.iter().map(|n| n.as_ref()).collect();
        let owned_refs: Vec<&Pod> = owned.iter().collect();
        let now = jiff::Timestamp::now();
        let plan = plan(&ds, &hash, &nodes, &owned_refs, now);
        let unmet = self.expectations.unmet(key, &ns_pods, Instant::now());
        if unmet.is_none() && !deleting {
            self.apply(key, &ds, &spec.template, &hash, &plan).await?;
        }

        let old = ds.status.clone().unwrap_or_default();
        if old != plan.status {
            let mut updated = (*ds).clone();
            updated.status = Some(plan.status.clone());
            match Api::<DaemonSet>::namespaced(self.client.clone(), ns)
                .replace_status(name, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => {}
                Err(e) if ownership::is_conflict_or_gone(&e) => requeue_soon = true,
                Err(e) => return Err(err("updating status of")(e)),
            }
        }
        Ok(if requeue_soon {
            Action::Requeue(Duration::from_millis(200))
        } else if let Some(after) = unmet {
            Action::Requeue(after)
        } else if plan.waiting_for_available {
            Action::Requeue(Duration::from_secs(1))
        } else {
            Action::AwaitChange
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
    };
    use k8s_openapi::api::core::v1::{NodeSpec, PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector as K8sSelector, Time};

    fn ts(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    fn node(name: &str, labels: &[(&str, &str)], taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    fn ds(
        node_selector: Option<(&str, &str)>,
        strategy: Option<DaemonSetUpdateStrategy>,
    ) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("default".into()),
                uid: Some("ds-uid".into()),
                generation: Some(3),
                ..Default::default()
            },
            spec: Some(DaemonSetSpec {
                selector: K8sSelector {
                    match_labels: Some([("app".to_string(), "agent".to_string())].into()),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("app".to_string(), "agent".to_string())].into()),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        node_selector: node_selector
                            .map(|(k, v)| [(k.to_string(), v.to_string())].into()),
                        ..Default::default()
                    }),
                },
                update_strategy: strategy,
                ..Default::default()
            }),
            status: None,
        }
    }

    fn daemon_pod(name: &str, node: &str, hash: &str, ready: bool, created: i64) -> Pod {
        let d = ds(None, None);
        let template = d.spec.map(|s| s.template).unwrap_or_default();
        let mut p = pod_for_node(&ds(None, None), &template, hash, node);
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.creation_timestamp = Some(Time(ts(created)));
        if let Some(s) = p.spec.as_mut() {
            s.node_name = Some(node.into());
        }
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                last_transition_time: Some(Time(ts(0))),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    #[test]
    fn daemon_pods_run_on_matching_tolerated_nodes_only() {
        let d = ds(Some(("edge", "true")), None);
        let spec = d
            .spec
            .as_ref()
            .map(|s| daemon_spec(&s.template))
            .unwrap_or_default();
        let yes = Placement {
            should_run: true,
            should_continue: true,
        };
        let no = Placement {
            should_run: false,
            should_continue: false,
        };
        assert_eq!(
            placement(&spec, &node("a", &[("edge", "true")], vec![])),
            yes
        );
        assert_eq!(placement(&spec, &node("b", &[("edge", "no")], vec![])), no);
        assert_eq!(placement(&spec, &node("c", &[], vec![])), no);
        // Automatic tolerations: cordoned, under pressure, unreachable.
        let tolerated = node(
            "d",
            &[("edge", "true")],
            vec![
                taint("node.kubernetes.io/unschedulable", "NoSchedule"),
                taint("node.kubernetes.io/memory-pressure", "NoSchedule"),
                taint(UNREACHABLE_TAINT, "NoExecute"),
                taint(NOT_READY_TAINT, "NoExecute"),
            ],
        );
        assert_eq!(placement(&spec, &tolerated), yes);
        // A foreign NoSchedule taint: no new pod, but the old one stays.
        let dedicated = node(
            "e",
            &[("edge", "true")],
            vec![taint("dedicated", "NoSchedule")],
        );
        assert_eq!(
            placement(&spec, &dedicated),
            Placement {
                should_run: false,
                should_continue: true
            }
        );
        // unreachable:NoSchedule is not among the daemon tolerations either.
        let unreachable = node(
            "f",
            &[("edge", "true")],
            vec![taint(UNREACHABLE_TAINT, "NoSchedule")],
        );
        assert!(!placement(&spec, &unreachable).should_run);
        // A foreign NoExecute taint evicts.
        let evict = node(
            "g",
            &[("edge", "true")],
            vec![taint("dedicated", "NoExecute")],
        );
        assert_eq!(placement(&spec, &evict), no);
        // A node being deleted gets nothing.
        let mut gone = node("h", &[("edge", "true")], vec![]);
        gone.metadata.deletion_timestamp = Some(Time(ts(1)));
        assert_eq!(placement(&spec, &gone), no);
    }

    #[test]
    fn required_affinity_terms_and_match_fields() {
        let mut spec = PodSpec::default();
        let req = |key: &str, op: &str, values: &[&str]| NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        };
        spec.affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![
                        NodeSelectorTerm {
                            match_expressions: Some(vec![req("zone", "In", &["z1", "z2"])]),
                            match_fields: None,
                        },
                        NodeSelectorTerm {
                            match_expressions: None,
                            match_fields: Some(vec![req("metadata.name", "In", &["special"])]),
                        },
                    ],
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(matches_node(&spec, &node("a", &[("zone", "z2")], vec![])));
        assert!(!matches_node(&spec, &node("a", &[("zone", "z3")], vec![])));
        assert!(matches_node(&spec, &node("special", &[], vec![])));
    }

    #[test]
    fn daemon_pod_is_pinned_owned_hashed_and_tolerant() {
        let d = ds(None, None);
        let template = d.spec.clone().map(|s| s.template).unwrap_or_default();
        let p = pod_for_node(&d, &template, "h1", "node-7");
        assert_eq!(target_node(&p), Some("node-7"));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("agent-"));
        let labels = p.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(REVISION_HASH).map(String::as_str), Some("h1"));
        assert_eq!(labels.get("app").map(String::as_str), Some("agent"));
        let owner = ownership::controller_of(&p.metadata)
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("DaemonSet", "ds-uid")
        );
        let tolerations = p.spec.and_then(|s| s.tolerations).unwrap_or_default();
        assert_eq!(tolerations.len(), 6);
        // Adding them twice does not duplicate.
        assert_eq!(with_daemon_tolerations(&tolerations).len(), 6);
    }

    fn names(p: &Plan) -> Vec<&str> {
        let mut v: Vec<&str> = p.delete.iter().map(|(n, _)| n.as_str()).collect();
        v.sort();
        v
    }

    #[test]
    fn plan_creates_missing_deletes_extras_misscheduled_and_orphaned() {
        let d = ds(Some(("edge", "true")), None);
        let n1 = node("n1", &[("edge", "true")], vec![]);
        let n2 = node("n2", &[("edge", "true")], vec![]);
        let n3 = node("n3", &[], vec![]);
        let a = daemon_pod("a", "n1", "h", true, 1);
        let a2 = daemon_pod("a2", "n1", "h", true, 2);
        let c = daemon_pod("c", "n3", "h", true, 1);
        let gone = daemon_pod("gone", "n9", "h", true, 1);
        let p = plan(&d, "h", &[&n1, &n2, &n3], &[&a2, &a, &c, &gone], ts(100));
        assert_eq!(p.create_on, vec!["n2".to_string()]);
        assert_eq!(names(&p), vec!["a2", "c", "gone"]);
        let s = &p.status;
        assert_eq!(s.desired_number_scheduled, 2);
        assert_eq!(s.current_number_scheduled, 1);
        assert_eq!(s.number_misscheduled, 1);
        assert_eq!(s.number_ready, 1);
        assert_eq!(s.number_available, Some(1));
        assert_eq!(s.updated_number_scheduled, Some(1));
        assert_eq!(s.number_unavailable, Some(1));
        assert_eq!(s.observed_generation, Some(3));
    }

    #[test]
    fn finished_pods_are_replaced_and_terminating_ones_do_not_count() {
        let d = ds(None, None);
        let n1 = node("n1", &[], vec![]);
        let mut failed = daemon_pod("failed", "n1", "h", false, 1);
        if let Some(s) = failed.status.as_mut() {
            s.phase = Some("Failed".into());
        }
        let p = plan(&d, "h", &[&n1], &[&failed], ts(100));
        assert_eq!(names(&p), vec!["failed"]);
        assert_eq!(p.create_on, vec!["n1".to_string()]);
        let mut terminating = daemon_pod("t", "n1", "h", true, 1);
        terminating.metadata.deletion_timestamp = Some(Time(ts(50)));
        let p = plan(&d, "h", &[&n1], &[&terminating], ts(100));
        assert!(p.delete.is_empty());
        assert_eq!(p.create_on, vec!["n1".to_string()]);
    }

    #[test]
    fn rolling_update_respects_max_unavailable() {
        let strategy = |max: i32| {
            Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(max)),
                    max_surge: None,
                }),
            })
        };
        let nodes: Vec<Node> = (1..=4)
            .map(|i| node(&format!("n{i}"), &[], vec![]))
            .collect();
        let nodes: Vec<&Node> = nodes.iter().collect();
        let pods: Vec<Pod> = (1..=4)
            .map(|i| daemon_pod(&format!("p{i}"), &format!("n{i}"), "old", true, i))
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        // Default maxUnavailable 1: one at a time.
        let p = plan(&ds(None, None), "new", &nodes, &refs, ts(100));
        assert_eq!(p.delete.len(), 1);
        assert_eq!(p.status.updated_number_scheduled, None);
        let p = plan(&ds(None, strategy(2)), "new", &nodes, &refs, ts(100));
        assert_eq!(p.delete.len(), 2);
        // One node already down (unready pod): the budget is used up, but
        // the outdated unready pod itself may go.
        let mut pods2 = pods.clone();
        pods2[0] = daemon_pod("p1", "n1", "old", false, 1);
        let refs2: Vec<&Pod> = pods2.iter().collect();
        let p = plan(&ds(None, strategy(1)), "new", &nodes, &refs2, ts(100));
        assert_eq!(names(&p), vec!["p1"]);
        // An updated node missing its pod counts as unavailable too.
        let p = plan(&ds(None, strategy(1)), "new", &nodes, &refs[1..], ts(100));
        assert!(p.delete.is_empty());
        assert_eq!(p.create_on, vec!["n1".to_string()]);
        // OnDelete never replaces.
        let on_delete = Some(DaemonSetUpdateStrategy {
            type_: Some("OnDelete".into()),
            rolling_update: None,
        });
        let p = plan(&ds(None, on_delete), "new", &nodes, &refs, ts(100));
        assert!(p.delete.is_empty());
        // Percentages round up.
        let pct = Some(DaemonSetUpdateStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDaemonSet {
                max_unavailable: Some(IntOrString::String("30%".into())),
                max_surge: None,
            }),
        });
        assert_eq!(max_unavailable(&ds(None, pct), 4), Some(2));
    }
}
