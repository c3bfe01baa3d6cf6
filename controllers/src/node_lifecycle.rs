//! Node lifecycle: notices kubelets that stopped reporting.
//!
//! A kubelet proves it is alive by renewing its Lease in `kube-node-lease`
//! (and by posting node status). When neither changes for the grace period
//! (Kubernetes' `node-monitor-grace-period`, 40 s), the node's conditions
//! become `Unknown` with reason `NodeStatusUnknown` and it gets the
//! `node.kubernetes.io/unreachable:NoSchedule` taint so nothing new lands on
//! it. When renewals resume the taint goes away; the kubelet itself reports
//! `Ready` again.
//!
//! Like Kubernetes, staleness is judged by when *this controller* last saw
//! the heartbeat change (its own monotonic clock), not by the timestamp the
//! kubelet wrote, so a node with a skewed clock is not declared dead, and a
//! controller that just started gives every node a full grace period.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::time::Instant;

use crate::framework::{Action, Reconciler};

/// Taint key Kubernetes uses for nodes whose kubelet stopped reporting.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
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

fn has_unreachable_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == UNREACHABLE_TAINT))
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

/// Pure decision: what to change on `node` given its health at `now`.
pub fn decide(node: &Node, health: Health, now: jiff::Timestamp) -> Changes {
    let taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    match health {
        Health::Reporting { .. } => Changes {
            conditions: None,
            taints: has_unreachable_taint(node).then(|| {
                taints
                    .into_iter()
                    .filter(|t| t.key != UNREACHABLE_TAINT)
                    .collect()
            }),
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
            let taints = (!has_unreachable_taint(node)).then(|| {
                let mut t = taints;
                t.push(Taint {
                    key: UNREACHABLE_TAINT.into(),
                    effect: "NoSchedule".into(),
                    time_added: Some(Time(now)),
                    value: None,
                });
                t
            });
            Changes {
                conditions: changed.then_some(conditions),
                taints,
            }
        }
    }
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
}

/// The node lifecycle reconciler (key = node name).
pub struct NodeLifecycle {
    nodes_api: Api<Node>,
    nodes: Store<Node>,
    leases: Store<Lease>,
    lease_namespace: String,
    grace: Duration,
    probes: Probes,
}

impl NodeLifecycle {
    /// A reconciler reading the given caches.
    pub fn new(
        nodes_api: Api<Node>,
        nodes: Store<Node>,
        leases: Store<Lease>,
        lease_namespace: &str,
        grace: Duration,
    ) -> Self {
        NodeLifecycle {
            nodes_api,
            nodes,
            leases,
            lease_namespace: lease_namespace.to_string(),
            grace,
            probes: Probes::default(),
        }
    }
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
        let health = health(last, now, self.grace);
        let changes = decide(&node, health, jiff::Timestamp::now());
        let write_err = |source| Error::Write {
            node: key.to_string(),
            source,
        };
        if !changes.is_empty() {
            let mut updated = (*node).clone();
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
                        updated = n;
                    }
                    // The watch brings the newer version; look again then.
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        return Ok(Action::Requeue(Duration::from_millis(200)));
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::AwaitChange),
                    Err(e) => return Err(write_err(e)),
                }
            }
            if let Some(taints) = changes.taints {
                let adding = taints.iter().any(|t| t.key == UNREACHABLE_TAINT);
                updated.spec.get_or_insert_with(Default::default).taints = Some(taints);
                match self
                    .nodes_api
                    .replace(key, &PostParams::default(), &updated)
                    .await
                {
                    Ok(_) if adding => tracing::info!(node = key, "tainted unreachable"),
                    Ok(_) => {
                        tracing::info!(node = key, "heartbeats resumed; unreachable taint removed")
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        return Ok(Action::Requeue(Duration::from_millis(200)));
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::AwaitChange),
                    Err(e) => return Err(write_err(e)),
                }
            }
        }
        Ok(match health {
            // Look again exactly when the node would turn stale.
            Health::Reporting { expires_in } => Action::Requeue(expires_in),
            Health::Stale => Action::AwaitChange,
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
        assert_eq!(taints.len(), 1);
        assert_eq!(taints[0].key, UNREACHABLE_TAINT);
        assert_eq!(taints[0].effect, "NoSchedule");
    }

    #[test]
    fn already_marked_stale_node_needs_no_write() {
        let mut n = node("Unknown", vec![unreachable()]);
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
