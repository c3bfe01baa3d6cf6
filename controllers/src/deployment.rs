//! Deployment controller: rolls a Deployment's pod template out through
//! ReplicaSets, the way Kubernetes' deployment controller does.
//!
//! The ReplicaSet whose template equals the Deployment's (ignoring the
//! `pod-template-hash` label) is the *new* one, named
//! `<deployment>-<hash>`; every other owned ReplicaSet is *old*. Each
//! reconcile takes one step — scale the new one up within `maxSurge`, or
//! scale old ones down within `maxUnavailable` (Recreate: all old ones to
//! zero, wait for their pods to go, then the new one up) — and recomputes
//! status and the `Available`/`Progressing` conditions that
//! `kubectl rollout status` reads. A change of `spec.replicas` alone is a
//! scaling event and resizes the ReplicaSets proportionally instead.
//!
//! The step math, status and conditions are pure functions below; the
//! reconciler only reads the caches, applies a step and writes.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as K8sSelector, ObjectMeta, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::Value;
use wasmkube_api::selector::LabelSelector;

use crate::events::{self, EventType, Recorder};
use crate::framework::{Action, Reconciler};
use crate::ownership::{self, Claim};

/// Source component of this controller's events.
pub const COMPONENT: &str = "deployment-controller";
/// Label (and selector term) telling ReplicaSets of one Deployment apart.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Revision of a ReplicaSet (and of its Deployment's current template).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// `spec.replicas` of the Deployment when the ReplicaSet was last sized.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` when the ReplicaSet was last sized.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// kubectl's client-side apply record, never copied to ReplicaSets.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Progressing condition reasons.
pub mod reason {
    /// A new ReplicaSet was created.
    pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
    /// The new ReplicaSet already existed.
    pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
    /// The rollout made progress.
    pub const RS_UPDATED: &str = "ReplicaSetUpdated";
    /// The rollout finished.
    pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
    /// No progress within `progressDeadlineSeconds`.
    pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
    /// `spec.paused` was set.
    pub const PAUSED: &str = "DeploymentPaused";
    /// `spec.paused` was cleared.
    pub const RESUMED: &str = "DeploymentResumed";
    /// Available condition, enough pods available.
    pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
    /// Available condition, too few pods available.
    pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
}

/// Errors from the Deployment controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{what} {key}: {source}")]
    Api {
        /// What was being done.
        what: &'static str,
        /// Deployment key.
        key: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

// ---------------------------------------------------------------------------
// Pure parts.

/// The rollout parameters of a Deployment, resolved against `spec.replicas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// `spec.replicas`.
    pub replicas: i32,
    /// Resolved `maxSurge` (0 for Recreate).
    pub max_surge: i32,
    /// Resolved `maxUnavailable` (fenceposted: never both 0).
    pub max_unavailable: i32,
    /// Recreate strategy.
    pub recreate: bool,
}

/// Kubernetes' `GetScaledValueFromIntOrPercent`: an int as is, a percent of
/// `total` rounded up or down. Unparsable values count as 0 (validation
/// rejects them before they are stored).
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> i32 {
    match v {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => {
            let Some(p) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
                return s.parse::<i32>().unwrap_or(0);
            };
            let scaled = p.saturating_mul(i64::from(total));
            let v = if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            i32::try_from(v).unwrap_or(i32::MAX)
        }
    }
}

impl Params {
    /// Reads a Deployment's spec (`ResolveFenceposts`).
    pub fn of(d: &Deployment) -> Params {
        let spec = d.spec.as_ref();
        let replicas = spec.and_then(|s| s.replicas).unwrap_or(1).max(0);
        let strategy = spec.and_then(|s| s.strategy.as_ref());
        let recreate = strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate");
        if recreate {
            return Params {
                replicas,
                max_surge: 0,
                max_unavailable: 0,
                recreate,
            };
        }
        let ru = strategy.and_then(|s| s.rolling_update.as_ref());
        let quarter = IntOrString::String("25%".into());
        let surge = ru.and_then(|r| r.max_surge.as_ref()).unwrap_or(&quarter);
        let unavailable = ru
            .and_then(|r| r.max_unavailable.as_ref())
            .unwrap_or(&quarter);
        let max_surge = scaled_value(surge, replicas, true).max(0);
        let mut max_unavailable = scaled_value(unavailable, replicas, false).max(0);
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        Params {
            replicas,
            max_surge,
            max_unavailable,
            recreate,
        }
    }

    /// `maxUnavailable` as the Available condition uses it (`MaxUnavailable`).
    pub fn max_unavailable_for_status(&self) -> i32 {
        if self.recreate || self.replicas == 0 {
            0
        } else {
            self.max_unavailable.min(self.replicas)
        }
    }
}

/// What the controller needs to know about one ReplicaSet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RsState {
    /// Name.
    pub name: String,
    /// `spec.replicas`.
    pub spec: i32,
    /// `status.replicas`.
    pub replicas: i32,
    /// `status.readyReplicas`.
    pub ready: i32,
    /// `status.availableReplicas`.
    pub available: i32,
    /// Creation time (older sorts first).
    pub created: Option<jiff::Timestamp>,
    /// `deployment.kubernetes.io/revision`.
    pub revision: i64,
    /// `deployment.kubernetes.io/max-replicas`.
    pub max_replicas: Option<i32>,
    /// `deployment.kubernetes.io/desired-replicas`.
    pub desired_replicas: Option<i32>,
    /// Status is current (`observedGeneration >= generation`).
    pub synced: bool,
}

impl RsState {
    /// Reads a ReplicaSet.
    pub fn of(rs: &ReplicaSet) -> RsState {
        let ann = |k: &str| {
            rs.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(k))
                .and_then(|v| v.parse::<i64>().ok())
        };
        let status = rs.status.clone().unwrap_or_default();
        let spec = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let synced = status.observed_generation.unwrap_or(0) >= rs.metadata.generation.unwrap_or(0);
        // A ReplicaSet just scaled down still reports its old availability
        // until its controller catches up; counting more than its new size
        // would let a rolling update remove too much at once.
        let available = status.available_replicas.unwrap_or(0);
        let available = if synced {
            available
        } else {
            available.min(spec)
        };
        RsState {
            name: rs.metadata.name.clone().unwrap_or_default(),
            spec,
            replicas: status.replicas,
            ready: status.ready_replicas.unwrap_or(0),
            available,
            created: rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            revision: ann(REVISION).unwrap_or(0),
            max_replicas: ann(MAX_REPLICAS).and_then(|v| i32::try_from(v).ok()),
            desired_replicas: ann(DESIRED_REPLICAS).and_then(|v| i32::try_from(v).ok()),
            synced,
        }
    }
}

fn sum(rss: &[&RsState], f: impl Fn(&RsState) -> i32) -> i32 {
    rss.iter().map(|r| f(r)).fold(0i32, i32::saturating_add)
}

fn oldest_first(rss: &mut [&RsState]) {
    rss.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
}

/// FNV-1a, 32 bits.
fn fnv32a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Kubernetes' `rand.SafeEncodeString`: no vowels, no look-alikes, so the
/// hash never spells words.
fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

/// A template as compared and hashed: without `pod-template-hash`, with
/// pod defaults applied, so what the API server filled in on either side
/// does not make equal templates differ.
pub fn normalized_template(t: &PodTemplateSpec) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
            labels.remove(POD_TEMPLATE_HASH);
            if labels.is_empty() {
                meta.remove("labels");
            }
        }
        meta.remove("creationTimestamp");
    }
    wasmkube_api::rules::defaults("Pod", &mut v);
    v
}

/// The `pod-template-hash` of a template (Kubernetes' `ComputeHash` shape:
/// FNV-32a, rendered with the safe alphabet); `collision_count` perturbs it
/// when a name is taken by a different template.
pub fn template_hash(t: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(&normalized_template(t)).unwrap_or_default();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

/// `EqualIgnoreHash`.
pub fn templates_equal(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    normalized_template(a) == normalized_template(b)
}

/// Replica count for the new ReplicaSet in one rolling step
/// (`NewRSNewReplicas`); Recreate jumps straight to `replicas`.
pub fn new_rs_new_replicas(p: &Params, all: &[&RsState], new: Option<&RsState>) -> i32 {
    let new_spec = new.map_or(0, |n| n.spec);
    if p.recreate || new_spec >= p.replicas {
        return p.replicas;
    }
    let current = sum(all, |r| r.spec);
    let max_total = p.replicas.saturating_add(p.max_surge);
    if current >= max_total {
        return new_spec;
    }
    let scale_up = (max_total - current).min(p.replicas - new_spec);
    new_spec + scale_up.max(0)
}

/// Old ReplicaSets to shrink in one rolling step (`reconcileOldReplicaSets`):
/// first unhealthy replicas, then healthy ones as far as `maxUnavailable`
/// allows, oldest ReplicaSets first. Returns `(name, new size)`.
pub fn old_scale_down(p: &Params, new: Option<&RsState>, olds: &[&RsState]) -> Vec<(String, i32)> {
    let old_count = sum(olds, |r| r.spec);
    if old_count == 0 {
        return Vec::new();
    }
    let mut all: Vec<&RsState> = olds.to_vec();
    all.extend(new);
    let all_count = sum(&all, |r| r.spec);
    let min_available = p.replicas - p.max_unavailable;
    let new_unavailable = new.map_or(0, |n| n.spec - n.available);
    let max_scaled_down = all_count - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Vec::new();
    }
    let mut sizes: BTreeMap<String, i32> = olds.iter().map(|r| (r.name.clone(), r.spec)).collect();
    let mut ordered: Vec<&RsState> = olds.to_vec();
    oldest_first(&mut ordered);
    // Unhealthy replicas first: removing them costs no availability.
    let mut cleaned = 0;
    for r in &ordered {
        if cleaned >= max_scaled_down {
            break;
        }
        let size = sizes.get(&r.name).copied().unwrap_or(0);
        if size <= r.available {
            continue;
        }
        let down = (size - r.available).min(max_scaled_down - cleaned);
        sizes.insert(r.name.clone(), size - down);
        cleaned += down;
    }
    // Then healthy ones, keeping `min_available` available overall.
    let available = sum(&all, |r| r.available);
    let mut budget = available - min_available;
    if budget > 0 {
        for r in &ordered {
            if budget <= 0 {
                break;
            }
            let size = sizes.get(&r.name).copied().unwrap_or(0);
            let down = size.min(budget);
            if down > 0 {
                sizes.insert(r.name.clone(), size - down);
                budget -= down;
            }
        }
    }
    ordered
        .iter()
        .filter_map(|r| {
            let to = sizes.get(&r.name).copied().unwrap_or(r.spec);
            (to != r.spec).then(|| (r.name.clone(), to))
        })
        .collect()
}

/// True when `spec.replicas` changed since the active ReplicaSets were
/// sized (`isScalingEvent`).
pub fn is_scaling_event(p: &Params, all: &[&RsState]) -> bool {
    all.iter()
        .filter(|r| r.spec > 0)
        .any(|r| r.desired_replicas.is_some_and(|d| d != p.replicas))
}

/// Resizes the ReplicaSets for a scaling event (`scale`): one active
/// ReplicaSet takes the whole size; a saturated new one means the old ones
/// go to zero; otherwise the change is spread in proportion to each
/// ReplicaSet's share, leftovers going to the largest. `status_replicas`
/// is the Deployment's `status.replicas` (the fallback share base).
pub fn scale_targets(
    p: &Params,
    status_replicas: i32,
    new: Option<&RsState>,
    olds: &[&RsState],
) -> Vec<(String, i32)> {
    let mut all: Vec<&RsState> = olds.to_vec();
    all.extend(new);
    let active: Vec<&RsState> = all.iter().copied().filter(|r| r.spec > 0).collect();
    let single = match active.len() {
        0 => new.or_else(|| {
            let mut o = olds.to_vec();
            oldest_first(&mut o);
            o.last().copied()
        }),
        1 => active.first().copied(),
        _ => None,
    };
    if let Some(r) = single {
        return if r.spec == p.replicas {
            Vec::new()
        } else {
            vec![(r.name.clone(), p.replicas)]
        };
    }
    if let Some(n) = new
        && n.spec == p.replicas
        && n.available == p.replicas
    {
        return olds
            .iter()
            .filter(|r| r.spec > 0)
            .map(|r| (r.name.clone(), 0))
            .collect();
    }
    if p.recreate {
        return Vec::new();
    }
    let current = sum(&active, |r| r.spec);
    let allowed = if p.replicas > 0 {
        p.replicas + p.max_surge
    } else {
        0
    };
    let to_add = allowed - current;
    if to_add == 0 {
        return Vec::new();
    }
    let mut ordered = active.clone();
    // Bigger first; on ties newer first when growing, older first when shrinking.
    ordered.sort_by(|a, b| {
        b.spec.cmp(&a.spec).then_with(|| {
            if to_add > 0 {
                b.created.cmp(&a.created)
            } else {
                a.created.cmp(&b.created)
            }
        })
    });
    let mut added = 0;
    let mut sizes: Vec<(String, i32)> = Vec::new();
    for r in &ordered {
        let proportion = if r.spec == 0 || to_add == added {
            0
        } else {
            let base = r.max_replicas.unwrap_or(status_replicas);
            let fraction = if p.replicas == 0 {
                -r.spec
            } else if base <= 0 {
                0
            } else {
                let scaled = f64::from(r.spec) * f64::from(allowed) / f64::from(base);
                // Rounds half away from zero like Go's math.Round.
                (scaled.round() as i32) - r.spec
            };
            let left = to_add - added;
            if to_add > 0 {
                fraction.min(left)
            } else {
                fraction.max(left)
            }
        };
        added += proportion;
        sizes.push((r.name.clone(), (r.spec + proportion).max(0)));
    }
    if added != to_add
        && let Some(first) = sizes.first_mut()
    {
        first.1 = (first.1 + to_add - added).max(0);
    }
    sizes
        .into_iter()
        .filter(|(name, to)| all.iter().any(|r| &r.name == name && r.spec != *to))
        .collect()
}

/// Finds a condition by type.
pub fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: jiff::Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// `SetDeploymentCondition`: same status and reason keeps the old one; same
/// status keeps the old transition time.
pub fn set_condition(status: &mut DeploymentStatus, mut c: DeploymentCondition) {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    if let Some(cur) = conds.iter().find(|x| x.type_ == c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    conds.retain(|x| x.type_ != c.type_);
    conds.push(c);
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conds) = status.conditions.as_mut() {
        conds.retain(|c| c.type_ != type_);
    }
}

/// Status from the ReplicaSets (`calculateStatus`), conditions carried over
/// from `old` plus an up-to-date `Available`.
pub fn calculate_status(
    p: &Params,
    generation: Option<i64>,
    old: &DeploymentStatus,
    all: &[&RsState],
    new: Option<&RsState>,
    now: jiff::Timestamp,
) -> DeploymentStatus {
    let available = sum(all, |r| r.available);
    let total = sum(all, |r| r.spec);
    let mut status = DeploymentStatus {
        observed_generation: generation,
        replicas: Some(sum(all, |r| r.replicas)),
        updated_replicas: Some(new.map_or(0, |n| n.replicas)),
        ready_replicas: Some(sum(all, |r| r.ready)),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: None,
    };
    let c = if available >= p.replicas - p.max_unavailable_for_status() {
        new_condition(
            "Available",
            "True",
            reason::MIN_AVAILABLE,
            "Deployment has minimum availability.".into(),
            now,
        )
    } else {
        new_condition(
            "Available",
            "False",
            reason::MIN_UNAVAILABLE,
            "Deployment does not have minimum availability.".into(),
            now,
        )
    };
    set_condition(&mut status, c);
    status
}

/// `DeploymentComplete`.
pub fn deployment_complete(p: &Params, generation: Option<i64>, s: &DeploymentStatus) -> bool {
    s.updated_replicas == Some(p.replicas)
        && s.replicas == Some(p.replicas)
        && s.available_replicas == Some(p.replicas)
        && s.observed_generation.unwrap_or(0) >= generation.unwrap_or(0)
}

/// `DeploymentProgressing`: any count moved the right way since `old`.
pub fn deployment_progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let g = |v: Option<i32>| v.unwrap_or(0);
    let old_old = g(old.replicas) - g(old.updated_replicas);
    let new_old = g(new.replicas) - g(new.updated_replicas);
    g(new.updated_replicas) > g(old.updated_replicas)
        || g(new.ready_replicas) > g(old.ready_replicas)
        || new_old < old_old
        || g(new.available_replicas) > g(old.available_replicas)
}

/// `progressDeadlineSeconds`, unless unset or "never" (MaxInt32).
pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

/// Sets the Progressing condition on `new` (`syncRolloutStatus`), given the
/// stored status `old`. Returns how long until the deadline would pass
/// while the rollout is still going, so the caller can look again then.
pub fn update_progressing(
    p: &Params,
    generation: Option<i64>,
    deadline: Option<i32>,
    old: &DeploymentStatus,
    new: &mut DeploymentStatus,
    new_rs: Option<&str>,
    now: jiff::Timestamp,
) -> Option<Duration> {
    let Some(deadline) = deadline else {
        remove_condition(new, "Progressing");
        return None;
    };
    let current = condition(new, "Progressing").cloned();
    let complete_already = new.replicas == new.updated_replicas
        && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(reason::NEW_RS_AVAILABLE);
    if complete_already {
        return None;
    }
    let rs_name = new_rs.unwrap_or_default();
    if deployment_complete(p, generation, new) {
        set_condition(
            new,
            new_condition(
                "Progressing",
                "True",
                reason::NEW_RS_AVAILABLE,
                format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                now,
            ),
        );
        return None;
    }
    if deployment_progressing(old, new) {
        let msg = match new_rs {
            Some(n) => format!("ReplicaSet \"{n}\" is progressing."),
            None => "Deployment is progressing.".to_string(),
        };
        let mut c = new_condition("Progressing", "True", reason::RS_UPDATED, msg, now);
        if let Some(cur) = &current
            && cur.status == "True"
        {
            c.last_transition_time = cur.last_transition_time.clone();
        }
        remove_condition(new, "Progressing");
        set_condition(new, c);
        return Some(
            Duration::from_secs(u64::try_from(deadline).unwrap_or(0)) + Duration::from_secs(1),
        );
    }
    let cond = condition(new, "Progressing").cloned()?;
    if cond.reason.as_deref() == Some(reason::TIMED_OUT) {
        return None;
    }
    let from = cond.last_update_time.as_ref().map(|t| t.0).unwrap_or(now);
    let due = from
        .checked_add(jiff::SignedDuration::from_secs(i64::from(deadline)))
        .unwrap_or(jiff::Timestamp::MAX);
    if now > due {
        set_condition(
            new,
            new_condition(
                "Progressing",
                "False",
                reason::TIMED_OUT,
                format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                now,
            ),
        );
        None
    } else {
        Some(
            Duration::try_from(due.duration_since(now)).unwrap_or_default()
                + Duration::from_secs(1),
        )
    }
}

/// What `kubectl rollout status` checks (kubectl's `DeploymentStatusViewer`):
/// true exactly when it would report success.
pub fn rollout_complete(d: &Deployment) -> bool {
    let status = d.status.clone().unwrap_or_default();
    if d.metadata.generation.unwrap_or(0) > status.observed_generation.unwrap_or(0) {
        return false;
    }
    if condition(&status, "Progressing").and_then(|c| c.reason.as_deref())
        == Some(reason::TIMED_OUT)
    {
        return false;
    }
    let updated = status.updated_replicas.unwrap_or(0);
    if let Some(r) = d.spec.as_ref().and_then(|s| s.replicas)
        && updated < r
    {
        return false;
    }
    status.replicas.unwrap_or(0) <= updated && status.available_replicas.unwrap_or(0) >= updated
}

/// The new ReplicaSet for a Deployment.
pub fn new_replica_set(
    d: &Deployment,
    hash: &str,
    replicas: i32,
    revision: i64,
    p: &Params,
) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let tmeta = template.metadata.get_or_insert_with(Default::default);
    tmeta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH.into(), hash.into());
    let labels = tmeta.labels.clone();
    let mut selector: K8sSelector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH.into(), hash.into());
    // The Deployment's own annotations travel along (as in Kubernetes:
    // `kubernetes.io/change-cause` is what `rollout history` shows), except
    // kubectl's apply bookkeeping and the controller's own keys.
    let mut annotations: BTreeMap<String, String> = d
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != LAST_APPLIED && !k.starts_with("deployment.kubernetes.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.extend([
        (REVISION.to_string(), revision.to_string()),
        (DESIRED_REPLICAS.to_string(), p.replicas.to_string()),
        (
            MAX_REPLICAS.to_string(),
            (p.replicas + p.max_surge).to_string(),
        ),
    ]);
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}-{hash}",
                d.metadata.name.as_deref().unwrap_or("deploy")
            )),
            namespace: d.metadata.namespace.clone(),
            labels,
            annotations: Some(annotations),
            owner_references: Some(vec![ownership::controller_ref(
                "apps/v1",
                "Deployment",
                &d.metadata,
            )]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// Old ReplicaSets past `revisionHistoryLimit` that are fully scaled down
/// (`cleanupDeployment`), oldest first.
pub fn history_to_delete(limit: i32, olds: &[&RsState]) -> Vec<String> {
    let limit = usize::try_from(limit.max(0)).unwrap_or(0);
    if olds.len() <= limit {
        return Vec::new();
    }
    let mut ordered = olds.to_vec();
    oldest_first(&mut ordered);
    let excess = olds.len() - limit;
    ordered
        .into_iter()
        .take(excess)
        .filter(|r| r.spec == 0 && r.replicas == 0 && r.synced)
        .map(|r| r.name.clone())
        .collect()
}

// ---------------------------------------------------------------------------
// Reconciler.

/// The Deployment reconciler (key = `namespace/name`).
pub struct DeploymentController {
    client: Client,
    deployments: Store<Deployment>,
    replicasets: Store<ReplicaSet>,
    recorder: Recorder,
}

impl DeploymentController {
    /// A reconciler reading the given caches.
    pub fn new(
        client: Client,
        deployments: Store<Deployment>,
        replicasets: Store<ReplicaSet>,
    ) -> Self {
        DeploymentController {
            recorder: Recorder::new(client.clone(), COMPONENT),
            client,
            deployments,
            replicasets,
        }
    }
}

/// Keys of the Deployments a ReplicaSet event concerns: its controller if
/// that is a Deployment, else every Deployment whose selector matches.
pub fn keys_for_replicaset(rs: &ReplicaSet, deployments: &Store<Deployment>) -> Vec<String> {
    ownership::owner_keys_for(&rs.metadata, "Deployment", deployments, |o: &Deployment| {
        o.spec.as_ref().map(|s| &s.selector)
    })
}

/// One reconcile's working state.
struct Sync<'a> {
    key: &'a str,
    d: Deployment,
    p: Params,
    rs_api: Api<ReplicaSet>,
    new: Option<ReplicaSet>,
    olds: Vec<ReplicaSet>,
    recorder: &'a Recorder,
    conflict: bool,
}

impl Sync<'_> {
    fn err(&self, what: &'static str) -> impl FnOnce(kube::Error) -> Error + use<> {
        let key = self.key.to_string();
        move |source| Error::Api { what, key, source }
    }

    fn states(&self) -> (Option<RsState>, Vec<RsState>) {
        (
            self.new.as_ref().map(RsState::of),
            self.olds.iter().map(RsState::of).collect(),
        )
    }

    /// Resizes ReplicaSets by name, recording events and refreshing the
    /// working copies. A conflict stops early and marks a requeue.
    async fn apply_sizes(&mut self, sizes: &[(String, i32)]) -> Result<bool, Error> {
        let mut changed = false;
        for (name, to) in sizes {
            let slot = if self.new.as_ref().and_then(|n| n.metadata.name.as_ref()) == Some(name) {
                self.new.as_mut()
            } else {
                self.olds
                    .iter_mut()
                    .find(|r| r.metadata.name.as_ref() == Some(name))
            };
            let Some(rs) = slot else { continue };
            let from = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let mut updated = rs.clone();
            updated.spec.get_or_insert_with(Default::default).replicas = Some(*to);
            let ann = updated
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new);
            ann.insert(DESIRED_REPLICAS.into(), self.p.replicas.to_string());
            ann.insert(
                MAX_REPLICAS.into(),
                (self.p.replicas + self.p.max_surge).to_string(),
            );
            match self
                .rs_api
                .replace(name, &PostParams::default(), &updated)
                .await
            {
                Ok(written) => {
                    *rs = written;
                    changed = true;
                    if from != *to {
                        let dir = if *to > from { "up" } else { "down" };
                        self.recorder.record(
                            &events::reference("apps/v1", "Deployment", &self.d.metadata),
                            EventType::Normal,
                            "ScalingReplicaSet",
                            &format!("Scaled {dir} replica set {name} from {from} to {to}"),
                        );
                    }
                }
                Err(e) if ownership::is_conflict_or_gone(&e) => {
                    self.conflict = true;
                    return Ok(changed);
                }
                Err(e) => return Err(self.err("scaling a replica set of")(e)),
            }
        }
        Ok(changed)
    }

    /// Deletes old, fully scaled-down ReplicaSets beyond the history limit.
    async fn cleanup(&mut self) -> Result<(), Error> {
        let limit = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10);
        let olds: Vec<RsState> = self
            .olds
            .iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .map(RsState::of)
            .collect();
        let refs: Vec<&RsState> = olds.iter().collect();
        for name in history_to_delete(limit, &refs) {
            let uid = self
                .olds
                .iter()
                .find(|r| r.metadata.name.as_ref() == Some(&name))
                .and_then(|r| r.metadata.uid.clone());
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid,
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match self.rs_api.delete(&name, &dp).await {
                Ok(_) => tracing::info!(
                    key = self.key,
                    rs = name,
                    "deleted old replica set beyond revisionHistoryLimit"
                ),
                Err(e) if ownership::is_conflict_or_gone(&e) => {}
                Err(e) => return Err(self.err("cleaning up history of")(e)),
            }
        }
        Ok(())
    }

    /// Ensures the new ReplicaSet exists (creating it with `replicas`) and
    /// carries the newest revision. Returns the Progressing condition to set.
    async fn ensure_new(&mut self, replicas: i32) -> Result<Option<DeploymentCondition>, Error> {
        let now = jiff::Timestamp::now();
        let max_old = self
            .olds
            .iter()
            .map(|r| RsState::of(r).revision)
            .max()
            .unwrap_or(0);
        let revision = max_old + 1;
        if let Some(n) = self.new.clone() {
            let st = RsState::of(&n);
            if st.revision < revision {
                let mut updated = n.clone();
                updated
                    .metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(REVISION.into(), revision.to_string());
                match self
                    .rs_api
                    .replace(&st.name, &PostParams::default(), &updated)
                    .await
                {
                    Ok(w) => self.new = Some(w),
                    Err(e) if ownership::is_conflict_or_gone(&e) => self.conflict = true,
                    Err(e) => return Err(self.err("updating the revision of")(e)),
                }
            }
            let has = self
                .d
                .status
                .as_ref()
                .and_then(|s| condition(s, "Progressing"))
                .is_some();
            return Ok((!has && progress_deadline(&self.d).is_some()).then(|| {
                new_condition(
                    "Progressing",
                    "True",
                    reason::FOUND_NEW_RS,
                    format!("Found new replica set \"{}\"", st.name),
                    now,
                )
            }));
        }
        let spec = self.d.spec.clone().unwrap_or_default();
        let collision = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(&spec.template, collision);
        let rs = new_replica_set(&self.d, &hash, replicas, revision, &self.p);
        let name = rs.metadata.name.clone().unwrap_or_default();
        match self.rs_api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                if replicas > 0 {
                    self.recorder.record(
                        &events::reference("apps/v1", "Deployment", &self.d.metadata),
                        EventType::Normal,
                        "ScalingReplicaSet",
                        &format!("Scaled up replica set {name} from 0 to {replicas}"),
                    );
                }
                self.new = Some(created);
                Ok(progress_deadline(&self.d).is_some().then(|| {
                    new_condition(
                        "Progressing",
                        "True",
                        reason::NEW_RS_CREATED,
                        format!("Created new replica set \"{name}\""),
                        now,
                    )
                }))
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // The name is taken. If by our own ReplicaSet with this
                // template, the cache is just behind; otherwise it is a hash
                // collision and the next attempt hashes differently.
                let existing = self
                    .rs_api
                    .get_opt(&name)
                    .await
                    .map_err(self.err("reading the new replica set of"))?;
                let ours = existing.as_ref().is_some_and(|e| {
                    ownership::controller_of(&e.metadata).map(|r| r.uid.as_str())
                        == self.d.metadata.uid.as_deref()
                        && e.spec
                            .as_ref()
                            .and_then(|s| s.template.as_ref())
                            .is_some_and(|t| templates_equal(t, &spec.template))
                });
                if !ours {
                    let status = self.d.status.get_or_insert_with(Default::default);
                    status.collision_count = Some(collision.unwrap_or(0).saturating_add(1));
                }
                self.conflict = true;
                Ok(None)
            }
            Err(e) => Err(self.err("creating the new replica set of")(e)),
        }
    }
}

impl Reconciler for DeploymentController {
    type Error = Error;

    fn all_keys(&self) -> Vec<String> {
        self.deployments
            .state()
            .iter()
            .map(|d| ownership::key_of(&d.metadata))
            .collect()
    }

    async fn reconcile(&mut self, key: &str) -> Result<Action, Error> {
        let (ns, name) = ownership::split_key(key);
        let Some(d) = self.deployments.get(&ObjectRef::new(name).within(ns)) else {
            return Ok(Action::AwaitChange);
        };
        if d.metadata.deletion_timestamp.is_some() {
            return Ok(Action::AwaitChange);
        }
        let Some(spec) = d.spec.clone() else {
            return Ok(Action::AwaitChange);
        };
        let selector = match LabelSelector::from_k8s(&spec.selector) {
            Ok(s) if !s.is_empty() => s,
            Ok(_) | Err(_) => {
                tracing::warn!(key, "deployment has an empty or invalid selector; ignored");
                return Ok(Action::AwaitChange);
            }
        };
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let rs_api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        let mut sync = Sync {
            key,
            d: (*d).clone(),
            p: Params::of(&d),
            rs_api: rs_api.clone(),
            new: None,
            olds: Vec::new(),
            recorder: &self.recorder,
            conflict: false,
        };

        // Claim ReplicaSets.
        let mut owned: Vec<ReplicaSet> = Vec::new();
        for rs in self.replicasets.state() {
            if rs.metadata.namespace.as_deref() != Some(ns) {
                continue;
            }
            let rs_name = rs.metadata.name.clone().unwrap_or_default();
            match ownership::claim(&uid, false, &selector, &rs.metadata) {
                Claim::Keep => owned.push((*rs).clone()),
                Claim::Ignore => {}
                Claim::Adopt | Claim::Release => {
                    let mut r = (*rs).clone();
                    let adopt =
                        ownership::claim(&uid, false, &selector, &rs.metadata) == Claim::Adopt;
                    r.metadata = if adopt {
                        ownership::with_owner(
                            &r.metadata,
                            ownership::controller_ref("apps/v1", "Deployment", &d.metadata),
                        )
                    } else {
                        ownership::without_owner(&r.metadata, &uid)
                    };
                    match rs_api.replace(&rs_name, &PostParams::default(), &r).await {
                        Ok(w) if adopt => owned.push(w),
                        Ok(_) => {}
                        Err(e) if ownership::is_conflict_or_gone(&e) => sync.conflict = true,
                        Err(e) => return Err(sync.err("claiming replica sets of")(e)),
                    }
                }
            }
        }
        owned.sort_by(|a, b| {
            let (a, b) = (RsState::of(a), RsState::of(b));
            a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name))
        });
        for rs in owned {
            let is_new = sync.new.is_none()
                && rs
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| templates_equal(t, &spec.template));
            if is_new {
                sync.new = Some(rs);
            } else {
                sync.olds.push(rs);
            }
        }

        let now = jiff::Timestamp::now();
        let paused = spec.paused == Some(true);
        let old_status = d.status.clone().unwrap_or_default();
        let mut base = old_status.clone();
        let progressing_reason = condition(&base, "Progressing").and_then(|c| c.reason.clone());
        if progress_deadline(&d).is_some() {
            if paused && progressing_reason.as_deref() != Some(reason::PAUSED) {
                set_condition(
                    &mut base,
                    new_condition(
                        "Progressing",
                        "Unknown",
                        reason::PAUSED,
                        "Deployment is paused".into(),
                        now,
                    ),
                );
            } else if !paused && progressing_reason.as_deref() == Some(reason::PAUSED) {
                set_condition(
                    &mut base,
                    new_condition(
                        "Progressing",
                        "Unknown",
                        reason::RESUMED,
                        "Deployment is resumed".into(),
                        now,
                    ),
                );
            }
        }

        let (new_st, old_st) = sync.states();
        let mut all_st: Vec<&RsState> = old_st.iter().collect();
        all_st.extend(new_st.as_ref());
        let scaling = is_scaling_event(&sync.p, &all_st);
        let mut rollout = true;
        if paused || scaling {
            // Only resize; a paused Deployment rolls nothing out.
            let old_refs: Vec<&RsState> = old_st.iter().collect();
            let sizes = scale_targets(
                &sync.p,
                old_status.replicas.unwrap_or(0),
                new_st.as_ref(),
                &old_refs,
            );
            sync.apply_sizes(&sizes).await?;
            if paused {
                sync.cleanup().await?;
            }
            rollout = false;
        } else if sync.p.recreate {
            let downs: Vec<(String, i32)> = old_st
                .iter()
                .filter(|r| r.spec > 0)
                .map(|r| (r.name.clone(), 0))
                .collect();
            if !downs.is_empty() {
                sync.apply_sizes(&downs).await?;
            } else if old_st.iter().all(|r| r.replicas == 0 && r.synced) {
                if let Some(c) = sync.ensure_new(sync.p.replicas).await? {
                    set_condition(&mut base, c);
                }
                if let Some(n) = sync.new.as_ref().map(RsState::of)
                    && n.spec != sync.p.replicas
                {
                    sync.apply_sizes(&[(n.name.clone(), sync.p.replicas)])
                        .await?;
                }
            }
        } else {
            let old_refs: Vec<&RsState> = old_st.iter().collect();
            let first = new_rs_new_replicas(&sync.p, &old_refs, None);
            let created = sync.new.is_none();
            if let Some(c) = sync.ensure_new(first).await? {
                set_condition(&mut base, c);
            }
            if !created && !sync.conflict {
                let (new_st, old_st) = sync.states();
                let mut all: Vec<&RsState> = old_st.iter().collect();
                all.extend(new_st.as_ref());
                let target = new_rs_new_replicas(&sync.p, &all, new_st.as_ref());
                let up = match &new_st {
                    Some(n) if n.spec != target => vec![(n.name.clone(), target)],
                    _ => Vec::new(),
                };
                let scaled_up = !up.is_empty() && sync.apply_sizes(&up).await?;
                if !scaled_up && !sync.conflict {
                    let old_refs: Vec<&RsState> = old_st.iter().collect();
                    let downs = old_scale_down(&sync.p, new_st.as_ref(), &old_refs);
                    sync.apply_sizes(&downs).await?;
                }
            }
        }

        // Status.
        let (new_st, old_st) = sync.states();
        let mut all_st: Vec<&RsState> = old_st.iter().collect();
        all_st.extend(new_st.as_ref());
        if let Some(c) = sync.d.status.as_ref().and_then(|s| s.collision_count) {
            base.collision_count = Some(c);
        }
        let mut status = calculate_status(
            &sync.p,
            d.metadata.generation,
            &base,
            &all_st,
            new_st.as_ref(),
            now,
        );
        let mut wake = None;
        if rollout {
            wake = update_progressing(
                &sync.p,
                d.metadata.generation,
                progress_deadline(&d),
                &old_status,
                &mut status,
                new_st.as_ref().map(|n| n.name.as_str()),
                now,
            );
            if deployment_complete(&sync.p, d.metadata.generation, &status) && !sync.conflict {
                sync.cleanup().await?;
            }
        }
        let mut current = sync.d.clone();
        // The Deployment carries its current revision, as in Kubernetes. It
        // goes with the status write: the apps status strategy stores
        // annotations, and unlike a main-resource write it does not bump
        // the generation.
        let mut annotated = false;
        if let Some(n) = new_st.as_ref().filter(|n| n.revision > 0) {
            let rev = n.revision.to_string();
            let anns = current
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new);
            if anns.get(REVISION) != Some(&rev) {
                anns.insert(REVISION.into(), rev);
                annotated = true;
            }
        }
        if annotated || current.status.as_ref() != Some(&status) {
            current.status = Some(status);
            let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
            match api
                .replace_status(name, &PostParams::default(), &current)
                .await
            {
                Ok(_) => {}
                Err(e) if ownership::is_conflict_or_gone(&e) => sync.conflict = true,
                Err(e) => return Err(sync.err("updating status of")(e)),
            }
        }
        if sync.conflict {
            return Ok(Action::Requeue(Duration::from_millis(200)));
        }
        Ok(wake.map_or(Action::AwaitChange, Action::Requeue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn ts(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    fn rs(name: &str, spec: i32, available: i32, created: i64) -> RsState {
        RsState {
            name: name.into(),
            spec,
            replicas: spec,
            ready: available,
            available,
            created: Some(ts(created)),
            synced: true,
            ..Default::default()
        }
    }

    fn rolling(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("d-uid".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                selector: K8sSelector {
                    match_labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..Default::default()
                },
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                template: template("idle:v1"),
                progress_deadline_seconds: Some(600),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn percentages_round_like_kubernetes() {
        // maxSurge rounds up, maxUnavailable down.
        let p = Params::of(&rolling(10, pct("25%"), pct("25%")));
        assert_eq!((p.max_surge, p.max_unavailable), (3, 2));
        let p = Params::of(&rolling(3, pct("25%"), pct("25%")));
        assert_eq!((p.max_surge, p.max_unavailable), (1, 0));
        // Both zero would deadlock: maxUnavailable becomes 1.
        let p = Params::of(&rolling(3, IntOrString::Int(0), pct("10%")));
        assert_eq!((p.max_surge, p.max_unavailable), (0, 1));
        let mut d = rolling(4, IntOrString::Int(1), IntOrString::Int(1));
        if let Some(s) = d.spec.as_mut() {
            s.strategy = Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            });
        }
        let p = Params::of(&d);
        assert!(p.recreate);
        assert_eq!(p.max_unavailable_for_status(), 0);
        assert_eq!(scaled_value(&pct("50%"), 5, true), 3);
        assert_eq!(scaled_value(&pct("50%"), 5, false), 2);
    }

    #[test]
    fn hash_is_stable_ignores_its_own_label_and_defaults_and_changes_with_the_template() {
        let a = template("idle:v1");
        let h = template_hash(&a, None);
        assert_eq!(h, template_hash(&a.clone(), None));
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert!(!h.is_empty() && h.len() <= 10);
        let mut labelled = a.clone();
        if let Some(l) = labelled.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.insert(POD_TEMPLATE_HASH.into(), h.clone());
        }
        assert_eq!(template_hash(&labelled, None), h);
        assert!(templates_equal(&a, &labelled));
        // What the API server defaults does not make a template "new".
        let mut defaulted = a.clone();
        if let Some(s) = defaulted.spec.as_mut() {
            s.restart_policy = Some("Always".into());
        }
        assert!(templates_equal(&a, &defaulted));
        assert_ne!(template_hash(&template("idle:v2"), None), h);
        assert_ne!(template_hash(&a, Some(1)), h);
    }

    #[test]
    fn new_replica_set_carries_hash_revision_owner_and_selector() {
        let d = rolling(3, pct("25%"), pct("25%"));
        let p = Params::of(&d);
        let mut d = d;
        d.metadata.annotations = Some(
            [
                ("kubernetes.io/change-cause".to_string(), "v1".to_string()),
                (LAST_APPLIED.to_string(), "{}".to_string()),
                (REVISION.to_string(), "3".to_string()),
            ]
            .into(),
        );
        let r = new_replica_set(&d, "abc12", 1, 4, &p);
        assert_eq!(r.metadata.name.as_deref(), Some("web-abc12"));
        let ann = r.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(ann.get(REVISION).map(String::as_str), Some("4"));
        assert_eq!(ann.get(DESIRED_REPLICAS).map(String::as_str), Some("3"));
        assert_eq!(ann.get(MAX_REPLICAS).map(String::as_str), Some("4"));
        assert_eq!(
            ann.get("kubernetes.io/change-cause").map(String::as_str),
            Some("v1")
        );
        assert!(!ann.contains_key(LAST_APPLIED));
        let labels = r.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get(POD_TEMPLATE_HASH).map(String::as_str),
            Some("abc12")
        );
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        let spec = r.spec.clone().unwrap_or_default();
        let sel = spec.selector.match_labels.unwrap_or_default();
        assert_eq!(sel.len(), 2);
        let tlabels = spec
            .template
            .and_then(|t| t.metadata)
            .and_then(|m| m.labels)
            .unwrap_or_default();
        assert_eq!(
            tlabels.get(POD_TEMPLATE_HASH).map(String::as_str),
            Some("abc12")
        );
        let owner = ownership::controller_of(&r.metadata)
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Deployment", "d-uid")
        );
    }

    /// Simulates a whole rolling update step by step, with pods becoming
    /// available at once, and checks the bounds at every step.
    #[test]
    fn rolling_update_respects_surge_and_unavailability_bounds() {
        let p = Params {
            replicas: 4,
            max_surge: 1,
            max_unavailable: 1,
            recreate: false,
        };
        let mut old = rs("old", 4, 4, 1);
        let mut new = rs("new", 0, 0, 2);
        for _ in 0..20 {
            let all = [&old, &new];
            let target = new_rs_new_replicas(&p, &all, Some(&new));
            if target != new.spec {
                new.spec = target;
            } else {
                for (name, to) in old_scale_down(&p, Some(&new), &[&old]) {
                    assert_eq!(name, "old");
                    old.spec = to;
                }
            }
            assert!(
                old.spec + new.spec <= p.replicas + p.max_surge,
                "surge bound"
            );
            // Bound before pods come up: the unavailable ones plus removed ones.
            assert!(old.spec.min(old.available) + new.available >= p.replicas - p.max_unavailable);
            // Pods become available.
            old.available = old.available.min(old.spec);
            old.replicas = old.spec;
            new.available = new.spec;
            new.replicas = new.spec;
            if new.spec == 4 && old.spec == 0 {
                return;
            }
        }
        panic!("rollout did not finish: old {} new {}", old.spec, new.spec);
    }

    #[test]
    fn first_step_surges_and_unhealthy_old_replicas_go_first() {
        let p = Params {
            replicas: 3,
            max_surge: 1,
            max_unavailable: 0,
            recreate: false,
        };
        let old = rs("old", 3, 3, 1);
        assert_eq!(new_rs_new_replicas(&p, &[&old], None), 1);
        // Nothing may go while the new pod is not available.
        let new = rs("new", 1, 0, 2);
        assert!(old_scale_down(&p, Some(&new), &[&old]).is_empty());
        let new = rs("new", 1, 1, 2);
        assert_eq!(
            old_scale_down(&p, Some(&new), &[&old]),
            vec![("old".to_string(), 2)]
        );
        // An old ReplicaSet with broken pods shrinks by those first.
        let p = Params {
            replicas: 3,
            max_surge: 0,
            max_unavailable: 1,
            recreate: false,
        };
        let broken = rs("broken", 2, 0, 0);
        let good = rs("good", 1, 1, 1);
        let new = rs("new", 0, 0, 2);
        let downs = old_scale_down(&p, Some(&new), &[&broken, &good]);
        // 3 pods exist, 2 must stay available: one may go, a broken one.
        assert_eq!(downs, vec![("broken".to_string(), 1)]);
        // A new RS larger than the deployment is cut back.
        let big = rs("new", 5, 5, 2);
        assert_eq!(new_rs_new_replicas(&p, &[&big], Some(&big)), 3);
    }

    #[test]
    fn scaling_events_resize_the_single_active_replica_set_or_proportionally() {
        let mut only = rs("new", 3, 3, 1);
        only.desired_replicas = Some(3);
        let p5 = Params {
            replicas: 5,
            max_surge: 2,
            max_unavailable: 1,
            recreate: false,
        };
        assert!(is_scaling_event(&p5, &[&only]));
        assert_eq!(
            scale_targets(&p5, 3, Some(&only), &[]),
            vec![("new".to_string(), 5)]
        );
        let p1 = Params { replicas: 1, ..p5 };
        assert_eq!(
            scale_targets(&p1, 3, Some(&only), &[]),
            vec![("new".to_string(), 1)]
        );
        // Mid-rollout: 10 → 20 with max 11 before (surge 1), split 6/5 by share.
        let mut old = rs("old", 6, 6, 1);
        old.max_replicas = Some(11);
        let mut new = rs("new", 5, 5, 2);
        new.max_replicas = Some(11);
        let p = Params {
            replicas: 20,
            max_surge: 2,
            max_unavailable: 0,
            recreate: false,
        };
        let sizes: BTreeMap<String, i32> = scale_targets(&p, 11, Some(&new), &[&old])
            .into_iter()
            .collect();
        let total: i32 = sizes.values().sum();
        assert_eq!(total, 22);
        assert_eq!(sizes.get("old"), Some(&12));
        assert_eq!(sizes.get("new"), Some(&10));
        assert!(!is_scaling_event(&p, &[]));
    }

    fn status(replicas: i32, updated: i32, available: i32, generation: i64) -> DeploymentStatus {
        DeploymentStatus {
            observed_generation: Some(generation),
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(available),
            available_replicas: Some(available),
            ..Default::default()
        }
    }

    #[test]
    fn status_sums_replica_sets_and_sets_available() {
        let p = Params {
            replicas: 3,
            max_surge: 1,
            max_unavailable: 1,
            recreate: false,
        };
        let old = rs("old", 1, 1, 1);
        let new = rs("new", 3, 2, 2);
        let s = calculate_status(
            &p,
            Some(7),
            &DeploymentStatus::default(),
            &[&old, &new],
            Some(&new),
            ts(10),
        );
        assert_eq!(s.replicas, Some(4));
        assert_eq!(s.updated_replicas, Some(3));
        assert_eq!(s.available_replicas, Some(3));
        assert_eq!(s.unavailable_replicas, Some(1));
        assert_eq!(s.observed_generation, Some(7));
        let a = condition(&s, "Available").cloned().unwrap_or_default();
        assert_eq!(
            (a.status.as_str(), a.reason.as_deref()),
            ("True", Some(reason::MIN_AVAILABLE))
        );
        let none = rs("new", 3, 0, 2);
        let s2 = calculate_status(&p, Some(7), &s, &[&none], Some(&none), ts(20));
        let a2 = condition(&s2, "Available").cloned().unwrap_or_default();
        assert_eq!(
            (a2.status.as_str(), a2.reason.as_deref()),
            ("False", Some(reason::MIN_UNAVAILABLE))
        );
        assert_eq!(a2.last_transition_time, Some(Time(ts(20))));
    }

    #[test]
    fn progressing_moves_from_updated_to_available_or_times_out() {
        let p = Params {
            replicas: 3,
            max_surge: 1,
            max_unavailable: 0,
            recreate: false,
        };
        let old = status(3, 1, 3, 1);
        let mut new = status(4, 2, 3, 1);
        let wake = update_progressing(
            &p,
            Some(1),
            Some(600),
            &old,
            &mut new,
            Some("web-x"),
            ts(100),
        );
        let c = condition(&new, "Progressing").cloned().unwrap_or_default();
        assert_eq!(c.reason.as_deref(), Some(reason::RS_UPDATED));
        assert_eq!(
            c.message.as_deref(),
            Some("ReplicaSet \"web-x\" is progressing.")
        );
        assert_eq!(wake, Some(Duration::from_secs(601)));
        // No progress past the deadline.
        let stalled_old = new.clone();
        let mut stalled = new.clone();
        update_progressing(
            &p,
            Some(1),
            Some(600),
            &stalled_old,
            &mut stalled,
            Some("web-x"),
            ts(701),
        );
        let c = condition(&stalled, "Progressing")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("False", Some(reason::TIMED_OUT))
        );
        // Done.
        let mut done = status(3, 3, 3, 1);
        done.conditions = new.conditions.clone();
        assert_eq!(
            update_progressing(
                &p,
                Some(1),
                Some(600),
                &new,
                &mut done,
                Some("web-x"),
                ts(200)
            ),
            None
        );
        let c = condition(&done, "Progressing").cloned().unwrap_or_default();
        assert_eq!(c.reason.as_deref(), Some(reason::NEW_RS_AVAILABLE));
        assert_eq!(
            c.message.as_deref(),
            Some("ReplicaSet \"web-x\" has successfully progressed.")
        );
        // Without a deadline there is no Progressing condition.
        let mut nodl = done.clone();
        update_progressing(&p, Some(1), None, &done, &mut nodl, Some("web-x"), ts(200));
        assert!(condition(&nodl, "Progressing").is_none());
    }

    #[test]
    fn rollout_complete_matches_kubectl() {
        let mut d = rolling(3, pct("25%"), pct("25%"));
        d.status = Some(status(3, 3, 3, 1));
        assert!(rollout_complete(&d));
        d.metadata.generation = Some(2);
        assert!(!rollout_complete(&d), "spec change not observed yet");
        d.status = Some(status(4, 3, 3, 2));
        assert!(!rollout_complete(&d), "old replicas still around");
        d.status = Some(status(3, 2, 3, 2));
        assert!(!rollout_complete(&d), "not all updated");
        d.status = Some(status(3, 3, 2, 2));
        assert!(!rollout_complete(&d), "not all available");
        let mut s = status(3, 3, 3, 2);
        set_condition(
            &mut s,
            new_condition(
                "Progressing",
                "False",
                reason::TIMED_OUT,
                String::new(),
                ts(1),
            ),
        );
        d.status = Some(s);
        assert!(!rollout_complete(&d), "deadline exceeded");
    }

    #[test]
    fn a_replica_set_scaled_down_but_not_yet_observed_counts_at_most_its_new_size() {
        use k8s_openapi::api::apps::v1::ReplicaSetStatus;
        let mut r = ReplicaSet {
            metadata: ObjectMeta {
                name: Some("old".into()),
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(1),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas: 3,
                available_replicas: Some(3),
                observed_generation: Some(1),
                ..Default::default()
            }),
        };
        let st = RsState::of(&r);
        assert!(!st.synced);
        assert_eq!((st.available, st.replicas), (1, 3));
        if let Some(s) = r.status.as_mut() {
            s.observed_generation = Some(2);
        }
        assert_eq!(RsState::of(&r).available, 3);
    }

    #[test]
    fn history_keeps_the_limit_and_never_deletes_live_replica_sets() {
        let a = rs("a", 0, 0, 1);
        let b = rs("b", 1, 1, 2);
        let c = rs("c", 0, 0, 3);
        let d = rs("d", 0, 0, 4);
        assert_eq!(
            history_to_delete(2, &[&d, &c, &b, &a]),
            vec!["a".to_string()]
        );
        assert_eq!(
            history_to_delete(0, &[&a, &b, &c]),
            vec!["a".to_string(), "c".to_string()]
        );
        assert!(history_to_delete(10, &[&a, &b]).is_empty());
    }
}
