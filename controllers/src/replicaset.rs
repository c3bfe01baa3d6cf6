//! ReplicaSet controller: keeps `spec.replicas` live pods per ReplicaSet.
//!
//! Each reconcile claims pods (adopting matching orphans, releasing owned
//! pods whose labels no longer match), deletes finished pods so they get
//! replaced, creates pods from the template (`generateName: <rs>-`) or
//! deletes the least valuable extras, then recomputes status. The pod cache
//! lags behind our own writes, so creations and deletions are remembered as
//! *expectations*: until the cache shows them (or they expire) the count is
//! not acted on again, which keeps a burst from creating twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::time::Instant;
use wasmkube_api::selector::LabelSelector;

use crate::events::{self, EventType, Recorder};
use crate::framework::{Action, Reconciler};
use crate::ownership::{self, Claim};

/// Source component of this controller's events.
pub const COMPONENT: &str = "replicaset-controller";
/// How long an expectation is trusted before the cache is believed instead.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);
/// Most pods created or deleted in one reconcile (Kubernetes' burst replicas).
const BURST: usize = 500;
/// Concurrent pod writes within one reconcile.
const WRITE_CONCURRENCY: usize = 8;

/// Errors from the ReplicaSet controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{what} {key}: {source}")]
    Api {
        /// What was being done.
        what: &'static str,
        /// ReplicaSet key.
        key: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

/// True for pods that still count toward the replica total.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !is_finished(pod)
}

/// True for pods in phase Succeeded or Failed.
pub fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// When the pod's Ready condition turned True, if it is ready.
pub fn ready_since(pod: &Pod) -> Option<Option<jiff::Timestamp>> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (c.status == "True").then(|| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Ready for at least `min_ready` at `now` (Kubernetes' `IsPodAvailable`).
pub fn is_available(pod: &Pod, min_ready: i32, now: jiff::Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => since
            .checked_add(jiff::SignedDuration::from_secs(i64::from(min_ready)))
            .is_ok_and(|at| at <= now),
    }
}

/// How many pods to create (positive) or delete (negative), capped at the burst size.
pub fn replica_diff(active: usize, desired: i32) -> i64 {
    let desired = i64::from(desired.max(0));
    let diff = desired - i64::try_from(active).unwrap_or(i64::MAX);
    diff.clamp(-(BURST as i64), BURST as i64)
}

/// Orders pods so the ones to delete first come first (a simplified
/// `controller.ActivePods` ranking): unscheduled before scheduled, pending
/// before running, not ready before ready, more restarts first, newer first.
pub fn deletion_order(pods: &mut [&Pod]) {
    fn rank(
        p: &Pod,
    ) -> (
        bool,
        u8,
        bool,
        std::cmp::Reverse<i32>,
        std::cmp::Reverse<Option<jiff::Timestamp>>,
    ) {
        let assigned = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        let phase = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Pending") | None => 0,
            Some("Unknown") => 1,
            _ => 2,
        };
        let ready = ready_since(p).is_some();
        let restarts = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count).sum::<i32>())
            .unwrap_or(0);
        let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (
            assigned,
            phase,
            ready,
            std::cmp::Reverse(restarts),
            std::cmp::Reverse(created),
        )
    }
    pods.sort_by_key(|p| rank(p));
}

/// Status computed from the owned active pods (pure).
pub fn compute_status(rs: &ReplicaSet, active: &[&Pod], now: jiff::Timestamp) -> ReplicaSetStatus {
    let spec = rs.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let count = |f: &dyn Fn(&Pod) -> bool| -> i32 {
        i32::try_from(active.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let fully_labeled = count(&|p| {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    });
    let old = rs.status.clone().unwrap_or_default();
    ReplicaSetStatus {
        replicas: count(&|_| true),
        fully_labeled_replicas: Some(fully_labeled),
        ready_replicas: Some(count(&|p| ready_since(p).is_some())),
        available_replicas: Some(count(&|p| is_available(p, min_ready, now))),
        observed_generation: rs.metadata.generation,
        conditions: old.conditions,
        terminating_replicas: old.terminating_replicas,
    }
}

/// When the next ready-but-not-yet-available pod becomes available.
fn next_available_in(active: &[&Pod], min_ready: i32, now: jiff::Timestamp) -> Option<Duration> {
    if min_ready <= 0 {
        return None;
    }
    active
        .iter()
        .filter_map(|p| ready_since(p).flatten())
        .filter_map(|since| {
            since
                .checked_add(jiff::SignedDuration::from_secs(i64::from(min_ready)))
                .ok()
        })
        .filter(|at| *at > now)
        .map(|at| Duration::try_from(at.duration_since(now)).unwrap_or(Duration::from_secs(1)))
        .min()
}

/// The pod a ReplicaSet creates from its template.
pub fn pod_from_template(rs: &ReplicaSet, template: &PodTemplateSpec) -> Pod {
    let tmeta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.metadata.name.as_deref().unwrap_or("rs"))),
            namespace: rs.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![ownership::controller_ref(
                "apps/v1",
                "ReplicaSet",
                &rs.metadata,
            )]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

#[derive(Debug, Default)]
struct Pending {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

/// Writes the cache has not shown yet, per ReplicaSet key.
#[derive(Debug, Default)]
pub struct Expectations {
    pending: HashMap<String, Pending>,
}

impl Expectations {
    /// Remembers a pod this controller created (by name).
    pub fn created(&mut self, key: &str, pod_name: &str, now: Instant) {
        let p = self.pending.entry(key.to_string()).or_default();
        p.creates.insert(pod_name.to_string());
        p.since = Some(now);
    }

    /// Remembers a pod this controller deleted (by uid).
    pub fn deleted(&mut self, key: &str, pod_uid: &str, now: Instant) {
        let p = self.pending.entry(key.to_string()).or_default();
        p.deletes.insert(pod_uid.to_string());
        p.since = Some(now);
    }

    /// Checks the expectations of `key` against the cached pods of its
    /// namespace: `None` when met (or expired), else how long until they
    /// expire.
    pub fn unmet(&mut self, key: &str, pods: &[&Pod], now: Instant) -> Option<Duration> {
        let p = self.pending.get_mut(key)?;
        let names: HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        let live_uids: HashSet<&str> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        p.creates.retain(|n| !names.contains(n.as_str()));
        p.deletes.retain(|u| live_uids.contains(u.as_str()));
        let age = p
            .since
            .map(|s| now.saturating_duration_since(s))
            .unwrap_or_default();
        if (p.creates.is_empty() && p.deletes.is_empty()) || age >= EXPECTATION_TTL {
            self.pending.remove(key);
            return None;
        }
        Some(EXPECTATION_TTL - age)
    }

    /// Drops everything about `key`.
    pub fn forget(&mut self, key: &str) {
        self.pending.remove(key);
    }
}

/// The ReplicaSet reconciler (key = `namespace/name`).
pub struct ReplicaSetController {
    client: Client,
    replicasets: Store<ReplicaSet>,
    pods: Store<Pod>,
    recorder: Recorder,
    expectations: Expectations,
}

impl ReplicaSetController {
    /// A reconciler reading the given caches.
    pub fn new(client: Client, replicasets: Store<ReplicaSet>, pods: Store<Pod>) -> Self {
        ReplicaSetController {
            recorder: Recorder::new(client.clone(), COMPONENT),
            client,
            replicasets,
            pods,
            expectations: Expectations::default(),
        }
    }
}

/// Keys of the ReplicaSets a pod event concerns: its controller if that is
/// a ReplicaSet, else every ReplicaSet whose selector matches (adoption).
pub fn keys_for_pod(pod: &Pod, replicasets: &Store<ReplicaSet>) -> Vec<String> {
    ownership::owner_keys_for(
        &pod.metadata,
        "ReplicaSet",
        replicasets,
        |o: &ReplicaSet| o.spec.as_ref().map(|s| &s.selector),
    )
}

impl Reconciler for ReplicaSetController {
    type Error = Error;

    fn all_keys(&self) -> Vec<String> {
        self.replicasets
            .state()
            .iter()
            .map(|rs| ownership::key_of(&rs.metadata))
            .collect()
    }

    async fn reconcile(&mut self, key: &str) -> Result<Action, Error> {
        let (ns, name) = ownership::split_key(key);
        let Some(rs) = self.replicasets.get(&ObjectRef::new(name).within(ns)) else {
            self.expectations.forget(key);
            return Ok(Action::AwaitChange);
        };
        let err = |what: &'static str| {
            let key = key.to_string();
            move |source| Error::Api { what, key, source }
        };
        let Some(spec) = rs.spec.as_ref() else {
            return Ok(Action::AwaitChange);
        };
        let selector = match LabelSelector::from_k8s(&spec.selector) {
            Ok(s) if !s.is_empty() => s,
            Ok(_) | Err(_) => {
                tracing::warn!(key, "replicaset has an empty or invalid selector; ignored");
                return Ok(Action::AwaitChange);
            }
        };
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let deleting = rs.metadata.deletion_timestamp.is_some();
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let all_pods = self.pods.state();
        let ns_pods: Vec<&Pod> = all_pods
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
            .collect();

        // Claim.
        let mut owned: Vec<Pod> = Vec::new();
        let mut requeue_soon = false;
        for pod in &ns_pods {
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            match ownership::claim(&uid, deleting, &selector, &pod.metadata) {
                Claim::Keep => owned.push((*pod).clone()),
                Claim::Ignore => {}
                Claim::Adopt => {
                    let mut p = (*pod).clone();
                    p.metadata = ownership::with_owner(
                        &p.metadata,
                        ownership::controller_ref("apps/v1", "ReplicaSet", &rs.metadata),
                    );
                    match pods_api
                        .replace(&pod_name, &PostParams::default(), &p)
                        .await
                    {
                        Ok(p) => owned.push(p),
                        Err(e) if ownership::is_conflict_or_gone(&e) => requeue_soon = true,
                        Err(e) => return Err(err("adopting pod for")(e)),
                    }
                }
                Claim::Release => {
                    let mut p = (*pod).clone();
                    p.metadata = ownership::without_owner(&p.metadata, &uid);
                    match pods_api
                        .replace(&pod_name, &PostParams::default(), &p)
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if ownership::is_conflict_or_gone(&e) => requeue_soon = true,
                        Err(e) => return Err(err("releasing pod of")(e)),
                    }
                }
            }
        }

        let now = Instant::now();
        let unmet = self.expectations.unmet(key, &ns_pods, now);
        let rs_ref = events::reference("apps/v1", "ReplicaSet", &rs.metadata);
        if unmet.is_none() && !deleting {
            // Finished pods of a ReplicaSet are replaced: delete them.
            let finished: Vec<&Pod> = owned
                .iter()
                .filter(|p| is_finished(p) && p.metadata.deletion_timestamp.is_none())
                .collect();
            let active: Vec<&Pod> = owned.iter().filter(|p| is_active(p)).collect();
            let diff = replica_diff(active.len(), spec.replicas.unwrap_or(1));
            let mut doomed: Vec<&Pod> = finished;
            if diff < 0 {
                let mut ranked = active.clone();
                deletion_order(&mut ranked);
                doomed.extend(ranked.into_iter().take(usize::try_from(-diff).unwrap_or(0)));
            }
            for p in &doomed {
                if let Some(u) = p.metadata.uid.as_deref() {
                    self.expectations.deleted(key, u, now);
                }
            }
            let targets: Vec<(String, Option<String>)> = doomed
                .iter()
                .map(|p| {
                    (
                        p.metadata.name.clone().unwrap_or_default(),
                        p.metadata.uid.clone(),
                    )
                })
                .collect();
            let results: Vec<(String, Option<String>, Result<(), kube::Error>)> =
                futures::stream::iter(targets)
                    .map(|(name, uid)| {
                        let api = pods_api.clone();
                        async move {
                            let dp = DeleteParams {
                                preconditions: Some(Preconditions {
                                    uid: uid.clone(),
                                    resource_version: None,
                                }),
                                ..DeleteParams::background()
                            };
                            let r = api.delete(&name, &dp).await.map(|_| ());
                            (name, uid, r)
                        }
                    })
                    .buffer_unordered(WRITE_CONCURRENCY)
                    .collect()
                    .await;
            for (pod_name, uid, r) in results {
                match r {
                    Ok(()) => self.recorder.record(
                        &rs_ref,
                        EventType::Normal,
                        "SuccessfulDelete",
                        &format!("Deleted pod: {pod_name}"),
                    ),
                    Err(e) => {
                        // Not deleted after all: stop expecting it.
                        if let Some(u) = uid
                            && let Some(p) = self.expectations.pending.get_mut(key)
                        {
                            p.deletes.remove(&u);
                        }
                        if !ownership::is_conflict_or_gone(&e) {
                            self.recorder.record(
                                &rs_ref,
                                EventType::Warning,
                                "FailedDelete",
                                &format!("Error deleting: {e}"),
                            );
                            return Err(err("deleting pod of")(e));
                        }
                    }
                }
            }
            if diff > 0
                && let Some(template) = spec.template.as_ref()
            {
                let pod = pod_from_template(&rs, template);
                let count = usize::try_from(diff).unwrap_or(0);
                let results: Vec<Result<Pod, kube::Error>> = futures::stream::iter(0..count)
                    .map(|_| {
                        let api = pods_api.clone();
                        let pod = pod.clone();
                        async move { api.create(&PostParams::default(), &pod).await }
                    })
                    .buffer_unordered(WRITE_CONCURRENCY)
                    .collect()
                    .await;
                let mut failure = None;
                for r in results {
                    match r {
                        Ok(p) => {
                            let pod_name = p.metadata.name.clone().unwrap_or_default();
                            self.expectations.created(key, &pod_name, now);
                            self.recorder.record(
                                &rs_ref,
                                EventType::Normal,
                                "SuccessfulCreate",
                                &format!("Created pod: {pod_name}"),
                            );
                        }
                        Err(e) => {
                            self.recorder.record(
                                &rs_ref,
                                EventType::Warning,
                                "FailedCreate",
                                &format!("Error creating: {e}"),
                            );
                            failure = Some(e);
                        }
                    }
                }
                if let Some(e) = failure {
                    return Err(err("creating pods for")(e));
                }
            }
        }

        // Status from what the cache shows (pods just written are counted
        // once their events arrive and trigger another reconcile).
        let wall = jiff::Timestamp::now();
        // Pods deleted but not yet gone from the cache no longer count:
        // reporting them would tell the deployment controller that more is
        // available than is, and it would scale other ReplicaSets down too far.
        let going: HashSet<String> = self
            .expectations
            .pending
            .get(key)
            .map(|p| p.deletes.clone())
            .unwrap_or_default();
        let active: Vec<&Pod> = owned
            .iter()
            .filter(|p| is_active(p))
            .filter(|p| p.metadata.uid.as_ref().is_none_or(|u| !going.contains(u)))
            .collect();
        let status = compute_status(&rs, &active, wall);
        if rs.status.as_ref() != Some(&status) {
            let mut updated = (*rs).clone();
            updated.status = Some(status);
            let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
            match api
                .replace_status(name, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => {}
                Err(e) if ownership::is_conflict_or_gone(&e) => requeue_soon = true,
                Err(e) => return Err(err("updating status of")(e)),
            }
        }
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let wait = [
            requeue_soon.then_some(Duration::from_millis(200)),
            unmet,
            next_available_in(&active, min_ready, wall),
        ]
        .into_iter()
        .flatten()
        .min();
        Ok(wait.map_or(Action::AwaitChange, Action::Requeue))
    }
}

/// Pod labels as a map (empty when none).
pub fn labels(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    fn pod(
        name: &str,
        node: Option<&str>,
        phase: &str,
        ready_at: Option<i64>,
        created: i64,
    ) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                creation_timestamp: Some(Time(ts(created))),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready_at.map(|at| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(ts(at))),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn diff_creates_missing_and_deletes_extras_within_the_burst() {
        assert_eq!(replica_diff(1, 3), 2);
        assert_eq!(replica_diff(5, 1), -4);
        assert_eq!(replica_diff(3, 3), 0);
        assert_eq!(replica_diff(0, 10_000), 500);
        assert_eq!(replica_diff(2, -1), -2);
    }

    #[test]
    fn extras_are_chosen_unscheduled_then_not_ready_then_newest() {
        let ready_old = pod("ready-old", Some("n"), "Running", Some(10), 1);
        let ready_new = pod("ready-new", Some("n"), "Running", Some(10), 5);
        let not_ready = pod("not-ready", Some("n"), "Running", None, 0);
        let unscheduled = pod("unscheduled", None, "Pending", None, 0);
        let mut v = vec![&ready_old, &ready_new, &not_ready, &unscheduled];
        deletion_order(&mut v);
        let names: Vec<_> = v
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        assert_eq!(
            names,
            ["unscheduled", "not-ready", "ready-new", "ready-old"]
        );
    }

    #[test]
    fn finished_and_deleting_pods_are_not_active() {
        assert!(is_active(&pod("a", None, "Running", None, 0)));
        assert!(!is_active(&pod("a", None, "Failed", None, 0)));
        assert!(!is_active(&pod("a", None, "Succeeded", None, 0)));
        let mut deleting = pod("a", None, "Running", None, 0);
        deleting.metadata.deletion_timestamp = Some(Time(ts(1)));
        assert!(!is_active(&deleting));
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let p = pod("a", Some("n"), "Running", Some(100), 0);
        assert!(is_available(&p, 0, ts(100)));
        assert!(!is_available(&p, 10, ts(105)));
        assert!(is_available(&p, 10, ts(110)));
        assert!(!is_available(
            &pod("b", Some("n"), "Running", None, 0),
            0,
            ts(100)
        ));
    }

    #[test]
    fn status_counts_ready_available_and_fully_labeled() {
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                generation: Some(4),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                min_ready_seconds: Some(10),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(
                            [
                                ("app".to_string(), "web".to_string()),
                                ("tier".to_string(), "fe".to_string()),
                            ]
                            .into(),
                        ),
                        ..Default::default()
                    }),
                    spec: None,
                }),
                ..Default::default()
            }),
            status: None,
        };
        let a = pod("a", Some("n"), "Running", Some(0), 0);
        let b = pod("b", Some("n"), "Running", Some(95), 0);
        let mut c = pod("c", Some("n"), "Pending", None, 0);
        c.metadata.labels = Some(
            [
                ("app".to_string(), "web".to_string()),
                ("tier".to_string(), "fe".to_string()),
            ]
            .into(),
        );
        let s = compute_status(&rs, &[&a, &b, &c], ts(100));
        assert_eq!(s.replicas, 3);
        assert_eq!(s.ready_replicas, Some(2));
        assert_eq!(s.available_replicas, Some(1));
        assert_eq!(s.fully_labeled_replicas, Some(1));
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(
            next_available_in(&[&a, &b, &c], 10, ts(100)),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn expectations_hold_until_the_cache_shows_the_writes() {
        let now = Instant::now();
        let mut e = Expectations::default();
        e.created("ns/rs", "rs-a", now);
        e.deleted("ns/rs", "uid-old", now);
        let old = pod("old", None, "Running", None, 0);
        assert!(e.unmet("ns/rs", &[&old], now).is_some());
        let a = pod("rs-a", None, "Pending", None, 0);
        // Created pod visible, deleted one still there.
        assert!(e.unmet("ns/rs", &[&a, &old], now).is_some());
        assert_eq!(e.unmet("ns/rs", &[&a], now), None);
        // Unobserved writes are forgotten after the TTL.
        e.created("ns/rs", "rs-b", now);
        assert_eq!(e.unmet("ns/rs", &[], now + EXPECTATION_TTL), None);
    }

    #[test]
    fn pods_from_the_template_are_owned_and_generate_names() {
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web-abc".into()),
                namespace: Some("default".into()),
                uid: Some("rs-uid".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let t = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec::default()),
        };
        let p = pod_from_template(&rs, &t);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-abc-"));
        assert_eq!(
            labels(&p.metadata).get("app").map(String::as_str),
            Some("web")
        );
        let r = ownership::controller_of(&p.metadata)
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (r.kind.as_str(), r.uid.as_str(), r.block_owner_deletion),
            ("ReplicaSet", "rs-uid", Some(true))
        );
    }
}
