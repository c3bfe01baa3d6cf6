//! Node lifecycle: notices kubelets that stopped reporting, and evicts pods
//! from nodes that cannot run them (Kubernetes' taint-based eviction).
//!
//! A kubelet proves it is alive by renewing its Lease in `kube-node-lease`
//! (and by posting node status). When neither changes for the grace period
//! (Kubernetes' `node-monitor-grace-period`, 40 s), the node's conditions
//! become `Unknown` with reason `NodeStatusUnknown` and it gets the
//! `node.kubernetes.io/unreachable` taint with both `NoSchedule` (nothing new
//! lands there) and `NoExecute` (what runs there is evicted). A kubelet that
//! reports `Ready=False` gets the `not-ready` pair instead. When the node is
//! healthy again the taints go away; the kubelet itself reports `Ready`.
//!
//! Like Kubernetes, staleness is judged by when *this controller* last saw
//! the heartbeat change (its own monotonic clock), not by the timestamp the
//! kubelet wrote, so a node with a skewed clock is not declared dead, and a
//! controller that just started gives every node a full grace period.
//!
//! Eviction: a pod bound to a node with a `NoExecute` taint it does not
//! tolerate is deleted at once; one that tolerates it for
//! `tolerationSeconds` is deleted that long after the taint's `timeAdded`.
//! Pods without their own not-ready/unreachable toleration get the default
//! one (`pod_eviction_timeout`, Kubernetes' `DefaultTolerationSeconds`
//! admission, 300 s). A kubelet that is gone cannot confirm a graceful
//! delete, so once such a pod's grace period is over on a node that is not
//! Ready it is force-deleted (grace 0, as Kubernetes' pod GC does) and its
//! controller's replacement counts.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::time::Instant;

use crate::events::{self, EventType, Recorder};
use crate::framework::{Action, Reconciler};
use crate::ownership;
use crate::replicaset::is_finished;

/// Taint key Kubernetes uses for nodes whose kubelet stopped reporting.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// Taint key Kubernetes uses for nodes whose kubelet reports `Ready=False`.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// Source component of this controller's events.
pub const COMPONENT: &str = "node-controller";
/// Reason on conditions this controller set to Unknown.
pub const REASON_UNKNOWN: &str = "NodeStatusUnknown";
/// Reason when the kubelet never posted a Ready condition.
pub const REASON_NEVER_UPDATED: &str = "NodeStatusNeverUpdated";

/// The heartbeat fingerprint of a node: its lease renew time and the
/// heartbeat time of its Ready condition. Any change counts as a sign of life.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Heartbeat {
    lease_renew: Option<String>,
    status_heartbeat: Option<String>,
}

impl Heartbeat {
    /// Reads the fingerprint from a node and its lease.
    pub fn of(node: &Node, lease: Option<&Lease>) -> Heartbeat {
        let lease_renew = lease
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref()))
            .map(|t| t.0.to_string());
        let status_heartbeat = ready_condition(node)
            .and_then(|c| c.last_heartbeat_time.as_ref())
            .map(|t| t.0.to_string());
        Heartbeat {
            lease_renew,
            status_heartbeat,
        }
    }
}

/// When each node's heartbeat was last seen changing.
#[derive(Debug, Default)]
pub struct Probes {
    seen: HashMap<String, (Heartbeat, Instant)>,
}

impl Probes {
    /// Records the current heartbeat and returns when it last changed.
    pub fn observe(&mut self, node: &str, heartbeat: Heartbeat, now: Instant) -> Instant {
        match self.seen.get_mut(node) {
            Some((hb, at)) => {
                if *hb != heartbeat {
                    *hb = heartbeat;
                    *at = now;
                }
                *at
            }
            None => {
                self.seen.insert(node.to_string(), (heartbeat, now));
                now
            }
        }
    }

    /// Drops a deleted node.
    pub fn forget(&mut self, node: &str) {
        self.seen.remove(node);
    }
}

/// Whether a node is reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Heard from within the grace period; it expires after this long.
    Reporting {
        /// Time left before the node counts as stale.
        expires_in: Duration,
    },
    /// Silent for longer than the grace period.
    Stale,
}

/// Pure staleness rule.
pub fn health(last_change: Instant, now: Instant, grace: Duration) -> Health {
    let silent = now.saturating_duration_since(last_change);
    if silent > grace {
        Health::Stale
    } else {
        Health::Reporting {
            expires_in: grace - silent + Duration::from_millis(1),
        }
    }
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// True for the taints this controller manages.
fn is_condition_taint(t: &Taint) -> bool {
    (t.key == UNREACHABLE_TAINT || t.key == NOT_READY_TAINT)
        && matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
}

/// The condition taint key a node should carry: unreachable when silent,
/// not-ready when its kubelet reports `Ready=False`.
fn wanted_taint(node: &Node, health: Health) -> Option<&'static str> {
    match health {
        Health::Stale => Some(UNREACHABLE_TAINT),
        Health::Reporting { .. } => (ready_condition(node).map(|c| c.status.as_str())
            == Some("False"))
        .then_some(NOT_READY_TAINT),
    }
}

/// The writes a node needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Changes {
    /// New status conditions (all Unknown), when they must change.
    pub conditions: Option<Vec<NodeCondition>>,
    /// New taint list, when it must change.
    pub taints: Option<Vec<Taint>>,
}

impl Changes {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_none() && self.taints.is_none()
    }
}

/// Pure decision for the taints: the condition taint pair `wanted` (both
/// effects), other taints untouched, kept taints keeping their `timeAdded`.
/// `NoExecute` taints without `timeAdded` get `now`, since eviction times
/// count from it.
fn taints_for(node: &Node, wanted: Option<&str>, now: jiff::Timestamp) -> Option<Vec<Taint>> {
    let old: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut new: Vec<Taint> = old
        .iter()
        .filter(|t| !is_condition_taint(t) || Some(t.key.as_str()) == wanted)
        .cloned()
        .collect();
    if let Some(key) = wanted {
        for effect in ["NoSchedule", "NoExecute"] {
            if !new.iter().any(|t| t.key == key && t.effect == effect) {
                new.push(Taint {
                    key: key.into(),
                    effect: effect.into(),
                    time_added: Some(Time(now)),
                    value: None,
                });
            }
        }
    }
    for t in new.iter_mut() {
        if t.effect == "NoExecute" && t.time_added.is_none() {
            t.time_added = Some(Time(now));
        }
    }
    (new != old).then_some(new)
}

/// Pure decision: what to change on `node` given its health at `now`.
pub fn decide(node: &Node, health: Health, now: jiff::Timestamp) -> Changes {
    let taints = taints_for(node, wanted_taint(node, health), now);
    match health {
        Health::Reporting { .. } => Changes {
            conditions: None,
            taints,
        },
        Health::Stale => {
            let mut conditions: Vec<NodeCondition> = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            let mut changed = false;
            if !conditions.iter().any(|c| c.type_ == "Ready") {
                conditions.push(NodeCondition {
                    type_: "Ready".into(),
                    status: "Unknown".into(),
                    reason: Some(REASON_NEVER_UPDATED.into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_transition_time: Some(Time(now)),
                    last_heartbeat_time: None,
                });
                changed = true;
            }
            for c in conditions.iter_mut() {
                if c.status != "Unknown" {
                    c.status = "Unknown".into();
                    c.reason = Some(REASON_UNKNOWN.into());
                    c.message = Some("Kubelet stopped posting node status.".into());
                    c.last_transition_time = Some(Time(now));
                    changed = true;
                }
            }
            Changes {
                conditions: changed.then_some(conditions),
                taints,
            }
        }
    }
}

/// Kubernetes' `Toleration.ToleratesTaint`.
pub use wasmkube_api::scheduling::tolerates;

/// The pod's tolerations plus what Kubernetes' `DefaultTolerationSeconds`
/// admission would have given it: not-ready and unreachable `NoExecute`
/// for `default_timeout`, unless it already tolerates them.
pub fn effective_tolerations(pod: &Pod, default_timeout: Duration) -> Vec<Toleration> {
    let mut all = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let seconds = i64::try_from(default_timeout.as_secs()).unwrap_or(i64::MAX);
    for key in [NOT_READY_TAINT, UNREACHABLE_TAINT] {
        let covered = all.iter().any(|t| {
            matches!(t.key.as_deref(), None | Some("")) || t.key.as_deref() == Some(key)
        } && matches!(t.effect.as_deref(), None | Some("") | Some("NoExecute")));
        if !covered {
            all.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(seconds),
                value: None,
            });
        }
    }
    all
}

/// Pure eviction rule: when `pod` must leave a node with `taints`
/// (`None`: it may stay). An untolerated `NoExecute` taint evicts at once;
/// otherwise the first matching toleration of each taint gives its
/// `tolerationSeconds` from the taint's `timeAdded`, and the earliest wins.
pub fn eviction_time(
    pod: &Pod,
    taints: &[Taint],
    default_timeout: Duration,
    now: jiff::Timestamp,
) -> Option<jiff::Timestamp> {
    let tolerations = effective_tolerations(pod, default_timeout);
    taints
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .filter_map(|taint| {
            let Some(tol) = tolerations.iter().find(|tol| tolerates(tol, taint)) else {
                return Some(now);
            };
            let seconds = tol.toleration_seconds?.max(0);
            // Not stamped yet: this controller stamps it, and looks again.
            let added = taint.time_added.as_ref()?.0;
            Some(
                added
                    .checked_add(jiff::SignedDuration::from_secs(seconds))
                    .unwrap_or(jiff::Timestamp::MAX),
            )
        })
        .min()
}

/// Pure force-delete rule: a pod whose graceful deletion is pending on a
/// node that is not Ready is force-deleted once its deletion timestamp
/// (request time + grace period) has passed; `None` otherwise.
pub fn force_delete_time(pod: &Pod, node_ready: bool) -> Option<jiff::Timestamp> {
    if node_ready {
        return None;
    }
    pod.metadata.deletion_timestamp.as_ref().map(|t| t.0)
}

fn is_node_ready(node: &Node) -> bool {
    ready_condition(node).is_some_and(|c| c.status == "True")
}

/// Errors from the node lifecycle controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API write failed.
    #[error("updating node {node}: {source}")]
    Write {
        /// Node name.
        node: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// Deleting a pod failed.
    #[error("evicting pod {pod}: {source}")]
    Evict {
        /// `namespace/name` of the pod.
        pod: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

/// Timing settings of the node lifecycle controller.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Silence after which a node is marked Unknown.
    pub grace: Duration,
    /// `tolerationSeconds` for pods without their own not-ready/unreachable
    /// toleration.
    pub pod_eviction_timeout: Duration,
}

/// The node lifecycle reconciler (key = node name).
pub struct NodeLifecycle {
    client: kube::Client,
    nodes_api: Api<Node>,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    lease_namespace: String,
    timing: Timing,
    probes: Probes,
    recorder: Recorder,
}

impl NodeLifecycle {
    /// A reconciler reading the given caches.
    pub fn new(
        client: kube::Client,
        nodes: Store<Node>,
        leases: Store<Lease>,
        pods: Store<Pod>,
        lease_namespace: &str,
        timing: Timing,
    ) -> Self {
        NodeLifecycle {
            nodes_api: Api::all(client.clone()),
            recorder: Recorder::new(client.clone(), COMPONENT),
            client,
            nodes,
            leases,
            pods,
            lease_namespace: lease_namespace.to_string(),
            timing,
            probes: Probes::default(),
        }
    }

    /// Writes `changes` to `node`; `Ok(None)` when the write lost a race
    /// (409: the watch brings the newer version) or the node is gone.
    async fn write(&self, node: &Node, changes: Changes) -> Result<Option<Node>, Error> {
        let key = node.metadata.name.as_deref().unwrap_or("");
        let write_err = |source| Error::Write {
            node: key.to_string(),
            source,
        };
        let mut updated = node.clone();
        if let Some(conditions) = changes.conditions {
            updated
                .status
                .get_or_insert_with(Default::default)
                .conditions = Some(conditions);
            match self
                .nodes_api
                .replace_status(key, &PostParams::default(), &updated)
                .await
            {
                Ok(n) => {
                    tracing::warn!(
                        node = key,
                        "kubelet stopped posting node status; marked Unknown"
                    );
                    self.recorder.record(
                        &events::reference("v1", "Node", &node.metadata),
                        EventType::Normal,
                        "NodeNotReady",
                        &format!("Node {key} status is now: NodeNotReady"),
                    );
                    updated = n;
                }
                Err(e) if ownership::is_conflict_or_gone(&e) => return Ok(None),
                Err(e) => return Err(write_err(e)),
            }
        }
        if let Some(taints) = changes.taints {
            updated.spec.get_or_insert_with(Default::default).taints = Some(taints);
            match self
                .nodes_api
                .replace(key, &PostParams::default(), &updated)
                .await
            {
                Ok(n) => {
                    let keys: Vec<String> = n
                        .spec
                        .iter()
                        .flat_map(|s| s.taints.iter().flatten())
                        .filter(|t| is_condition_taint(t))
                        .map(|t| format!("{}:{}", t.key, t.effect))
                        .collect();
                    tracing::info!(node = key, taints = ?keys, "condition taints updated");
                    updated = n;
                }
                Err(e) if ownership::is_conflict_or_gone(&e) => return Ok(None),
                Err(e) => return Err(write_err(e)),
            }
        }
        Ok(Some(updated))
    }

    /// Evicts (or force-deletes) the pods bound to `node` that are due,
    /// returning when the next one will be.
    async fn evict(&self, node: &Node) -> Result<Option<jiff::Timestamp>, Error> {
        let name = node.metadata.name.as_deref().unwrap_or("");
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let ready = is_node_ready(node);
        let now = jiff::Timestamp::now();
        let mut next: Option<jiff::Timestamp> = None;
        let pods = self.pods.state();
        for pod in pods.iter().filter(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name) && !is_finished(p)
        }) {
            let (force, at) = if pod.metadata.deletion_timestamp.is_some() {
                (true, force_delete_time(pod, ready))
            } else {
                (
                    false,
                    eviction_time(pod, &taints, self.timing.pod_eviction_timeout, now),
                )
            };
            let Some(at) = at else { continue };
            if at > now {
                next = Some(next.map_or(at, |n| n.min(at)));
                continue;
            }
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let pod_name = pod.metadata.name.as_deref().unwrap_or("");
            let dp = DeleteParams {
                grace_period_seconds: force.then_some(0),
                preconditions: Some(Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match Api::<Pod>::namespaced(self.client.clone(), ns)
                .delete(pod_name, &dp)
                .await
            {
                Ok(_) => {
                    let (reason, message) = if force {
                        (
                            "ForceDeleted",
                            format!("Force deleting pod {ns}/{pod_name}: node {name} is not ready"),
                        )
                    } else {
                        (
                            "TaintManagerEviction",
                            format!("Marking for deletion Pod {ns}/{pod_name}"),
                        )
                    };
                    tracing::info!(node = name, pod = %format!("{ns}/{pod_name}"), reason, "pod deleted");
                    self.recorder.record(
                        &events::reference("v1", "Pod", &pod.metadata),
                        EventType::Normal,
                        reason,
                        &message,
                    );
                }
                Err(e) if ownership::is_conflict_or_gone(&e) => {}
                Err(source) => {
                    return Err(Error::Evict {
                        pod: format!("{ns}/{pod_name}"),
                        source,
                    });
                }
            }
        }
        Ok(next)
    }
}

/// Keys of the nodes a pod event concerns: the node it is bound to.
pub fn keys_for_pod(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
        .into_iter()
        .collect()
}

impl Reconciler for NodeLifecycle {
    type Error = Error;

    fn all_keys(&self) -> Vec<String> {
        self.nodes
            .state()
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect()
    }

    async fn reconcile(&mut self, key: &str) -> Result<Action, Error> {
        let Some(node) = self.nodes.get(&ObjectRef::new(key)) else {
            self.probes.forget(key);
            return Ok(Action::AwaitChange);
        };
        let lease = self
            .leases
            .get(&ObjectRef::new(key).within(&self.lease_namespace));
        let now = Instant::now();
        let last = self
            .probes
            .observe(key, Heartbeat::of(&node, lease.as_deref()), now);
        let health = health(last, now, self.timing.grace);
        let changes = decide(&node, health, jiff::Timestamp::now());
        let node = if changes.is_empty() {
            (*node).clone()
        } else {
            match self.write(&node, changes).await? {
                Some(n) => n,
                None => return Ok(Action::Requeue(Duration::from_millis(200))),
            }
        };
        let next_eviction = self.evict(&node).await?.map(|at| {
            let wait = at.duration_since(jiff::Timestamp::now());
            Duration::try_from(wait)
                .unwrap_or(Duration::ZERO)
                .saturating_add(Duration::from_millis(10))
        });
        let next_health = match health {
            // Look again exactly when the node would turn stale.
            Health::Reporting { expires_in } => Some(expires_in),
            Health::Stale => None,
        };
        Ok(match (next_health, next_eviction) {
            (Some(a), Some(b)) => Action::Requeue(a.min(b)),
            (Some(a), None) | (None, Some(a)) => Action::Requeue(a),
            (None, None) => Action::AwaitChange,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

    const GRACE: Duration = Duration::from_secs(40);

    fn ts(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    fn node(ready: &str, taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![
                    NodeCondition {
                        type_: "MemoryPressure".into(),
                        status: "False".into(),
                        ..Default::default()
                    },
                    NodeCondition {
                        type_: "Ready".into(),
                        status: ready.into(),
                        last_heartbeat_time: Some(Time(ts(100))),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
        }
    }

    fn lease(renew: i64) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(ts(renew))),
                ..Default::default()
            }),
        }
    }

    fn taint(key: &str, effect: &str, added: Option<i64>) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            time_added: added.map(|s| Time(ts(s))),
            value: None,
        }
    }

    fn pod_with(tolerations: Option<Vec<Toleration>>) -> Pod {
        Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                node_name: Some("n1".into()),
                tolerations,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn toleration(key: &str, op: &str, effect: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.into()),
            operator: Some(op.into()),
            effect: (!effect.is_empty()).then(|| effect.into()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    #[test]
    fn node_reporting_not_ready_gets_not_ready_taints_and_loses_them_when_ready() {
        let n = node("False", vec![taint("dedicated", "NoSchedule", None)]);
        let health = Health::Reporting { expires_in: GRACE };
        let taints = decide(&n, health, ts(7)).taints.unwrap_or_default();
        let pairs: Vec<(&str, &str)> = taints
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("dedicated", "NoSchedule"),
                (NOT_READY_TAINT, "NoSchedule"),
                (NOT_READY_TAINT, "NoExecute")
            ]
        );
        // Ready again: only the foreign taint stays.
        let n = node("True", taints);
        let left = decide(&n, health, ts(8)).taints.unwrap_or_default();
        assert_eq!(left, vec![taint("dedicated", "NoSchedule", None)]);
        // Not-ready then silent: the pair turns into unreachable.
        let n = node(
            "False",
            vec![
                taint(NOT_READY_TAINT, "NoSchedule", Some(1)),
                taint(NOT_READY_TAINT, "NoExecute", Some(1)),
            ],
        );
        let keys: Vec<String> = decide(&n, Health::Stale, ts(9))
            .taints
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.key)
            .collect();
        assert_eq!(keys, vec![UNREACHABLE_TAINT, UNREACHABLE_TAINT]);
    }

    #[test]
    fn toleration_matching() {
        let t = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoExecute".into(),
            time_added: None,
        };
        let eq = |key: &str, value: &str, effect: &str| Toleration {
            key: Some(key.into()),
            operator: Some("Equal".into()),
            value: Some(value.into()),
            effect: (!effect.is_empty()).then(|| effect.into()),
            toleration_seconds: None,
        };
        assert!(tolerates(&eq("k", "v", "NoExecute"), &t));
        assert!(tolerates(&eq("k", "v", ""), &t));
        assert!(!tolerates(&eq("k", "w", ""), &t));
        assert!(!tolerates(&eq("k", "v", "NoSchedule"), &t));
        assert!(tolerates(&toleration("k", "Exists", "", None), &t));
        assert!(tolerates(&toleration("", "Exists", "", None), &t));
        assert!(!tolerates(&toleration("other", "Exists", "", None), &t));
        // Equal with an empty key is invalid and matches nothing.
        assert!(!tolerates(&eq("", "v", ""), &t));
    }

    #[test]
    fn eviction_waits_for_the_toleration_seconds_from_the_taint_time() {
        let timeout = Duration::from_secs(300);
        let unreachable = taint(UNREACHABLE_TAINT, "NoExecute", Some(1000));
        let now = ts(1010);
        // No toleration of its own: the default 300 s.
        assert_eq!(
            eviction_time(
                &pod_with(None),
                std::slice::from_ref(&unreachable),
                timeout,
                now
            ),
            Some(ts(1300))
        );
        // Its own toleration wins over the default.
        let short = pod_with(Some(vec![toleration(
            UNREACHABLE_TAINT,
            "Exists",
            "NoExecute",
            Some(5),
        )]));
        assert_eq!(
            eviction_time(&short, std::slice::from_ref(&unreachable), timeout, now),
            Some(ts(1005))
        );
        // Tolerating forever (daemon pods): never.
        let forever = pod_with(Some(vec![toleration(
            UNREACHABLE_TAINT,
            "Exists",
            "NoExecute",
            None,
        )]));
        assert_eq!(
            eviction_time(&forever, std::slice::from_ref(&unreachable), timeout, now),
            None
        );
        // An untolerated NoExecute taint evicts now; NoSchedule never does.
        let foreign = taint("dedicated", "NoExecute", Some(1000));
        assert_eq!(
            eviction_time(&forever, &[unreachable.clone(), foreign], timeout, now),
            Some(now)
        );
        let no_schedule = taint("dedicated", "NoSchedule", None);
        assert_eq!(
            eviction_time(&pod_with(None), &[no_schedule], timeout, now),
            None
        );
        // Several taints: the earliest deadline.
        let not_ready = taint(NOT_READY_TAINT, "NoExecute", Some(900));
        assert_eq!(
            eviction_time(&pod_with(None), &[unreachable, not_ready], timeout, now),
            Some(ts(1200))
        );
    }

    #[test]
    fn terminating_pods_on_a_not_ready_node_are_force_deleted_after_their_grace() {
        let mut p = pod_with(None);
        assert_eq!(force_delete_time(&p, false), None);
        p.metadata.deletion_timestamp = Some(Time(ts(1030)));
        assert_eq!(force_delete_time(&p, false), Some(ts(1030)));
        // A ready node's kubelet confirms deletions itself.
        assert_eq!(force_delete_time(&p, true), None);
    }

    fn unreachable() -> Taint {
        Taint {
            key: UNREACHABLE_TAINT.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        }
    }

    #[test]
    fn silent_node_goes_stale_after_grace_measured_from_last_change() {
        let start = Instant::now();
        let mut probes = Probes::default();
        let n = node("True", vec![]);
        let first = probes.observe("n1", Heartbeat::of(&n, Some(&lease(1))), start);
        assert_eq!(first, start);
        // Same heartbeat 30 s later: still counted from `start`.
        let t30 = start + Duration::from_secs(30);
        let last = probes.observe("n1", Heartbeat::of(&n, Some(&lease(1))), t30);
        assert_eq!(
            health(last, t30, GRACE),
            Health::Reporting {
                expires_in: Duration::from_secs(10) + Duration::from_millis(1)
            }
        );
        let t41 = start + Duration::from_secs(41);
        assert_eq!(health(last, t41, GRACE), Health::Stale);
        // A renewal resets the clock.
        let last = probes.observe("n1", Heartbeat::of(&n, Some(&lease(2))), t41);
        assert_eq!(last, t41);
        assert!(matches!(health(last, t41, GRACE), Health::Reporting { .. }));
    }

    #[test]
    fn a_status_heartbeat_also_counts_as_life() {
        let start = Instant::now();
        let mut probes = Probes::default();
        let mut n = node("True", vec![]);
        probes.observe("n1", Heartbeat::of(&n, None), start);
        if let Some(c) = n
            .status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .and_then(|cs| cs.iter_mut().find(|c| c.type_ == "Ready"))
        {
            c.last_heartbeat_time = Some(Time(ts(200)));
        }
        let later = start + Duration::from_secs(60);
        assert_eq!(probes.observe("n1", Heartbeat::of(&n, None), later), later);
    }

    #[test]
    fn stale_node_gets_unknown_conditions_and_unreachable_taint() {
        let n = node("True", vec![]);
        let changes = decide(&n, Health::Stale, ts(500));
        let conditions = changes.conditions.clone().unwrap_or_default();
        assert_eq!(conditions.len(), 2);
        for c in &conditions {
            assert_eq!(c.status, "Unknown");
            assert_eq!(c.reason.as_deref(), Some(REASON_UNKNOWN));
            assert_eq!(c.last_transition_time, Some(Time(ts(500))));
        }
        let ready = conditions.iter().find(|c| c.type_ == "Ready");
        assert_eq!(
            ready.and_then(|c| c.message.as_deref()),
            Some("Kubelet stopped posting node status.")
        );
        // The last heartbeat stays what the kubelet wrote.
        assert_eq!(
            ready.and_then(|c| c.last_heartbeat_time.clone()),
            Some(Time(ts(100)))
        );
        let taints = changes.taints.unwrap_or_default();
        let pairs: Vec<(&str, &str)> = taints
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                (UNREACHABLE_TAINT, "NoSchedule"),
                (UNREACHABLE_TAINT, "NoExecute")
            ]
        );
        assert!(taints.iter().all(|t| t.time_added == Some(Time(ts(500)))));
    }

    #[test]
    fn already_marked_stale_node_needs_no_write() {
        let mut n = node(
            "Unknown",
            vec![
                unreachable(),
                taint(UNREACHABLE_TAINT, "NoExecute", Some(1)),
            ],
        );
        if let Some(cs) = n.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            for c in cs {
                c.status = "Unknown".into();
            }
        }
        assert!(decide(&n, Health::Stale, ts(500)).is_empty());
    }

    #[test]
    fn never_reported_node_gets_a_ready_unknown_condition() {
        let mut n = node("True", vec![]);
        n.status = None;
        let changes = decide(&n, Health::Stale, ts(1));
        let conditions = changes.conditions.unwrap_or_default();
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].reason.as_deref(), Some(REASON_NEVER_UPDATED));
    }

    #[test]
    fn recovered_node_loses_only_the_unreachable_taint() {
        let other = Taint {
            key: "dedicated".into(),
            effect: "NoSchedule".into(),
            value: Some("edge".into()),
            ..Default::default()
        };
        let n = node("Unknown", vec![other.clone(), unreachable()]);
        let changes = decide(&n, Health::Reporting { expires_in: GRACE }, ts(1));
        assert_eq!(changes.conditions, None);
        assert_eq!(changes.taints, Some(vec![other]));
        let healthy = node("True", vec![]);
        assert!(decide(&healthy, Health::Reporting { expires_in: GRACE }, ts(1)).is_empty());
    }
}
