//! Job controller: runs a Job's pods to completion.
//!
//! Each reconcile counts the Job's pods (those whose controller reference
//! carries the Job's uid), decides from the counts alone — fail on the
//! backoff limit or the active deadline, complete on enough successes, else
//! keep `min(parallelism, completions - succeeded)` pods active — and writes
//! the status. Finished Jobs keep their pods (for logs) until
//! `ttlSecondsAfterFinished` deletes the Job; the garbage collector then
//! takes the pods.
//!
//! Counting, not tracking: Kubernetes tracks terminated pods with the
//! `batch.kubernetes.io/job-tracking` finalizer so that a pod deleted after
//! it finished is still counted. Here nothing deletes a Job's finished pods
//! while it runs (this controller only deletes active ones, and the garbage
//! collector only acts once the Job is gone), so counting the cached pods
//! is enough; the counts are also never lowered below what the status
//! already records, so a finished pod removed by hand is not run again. A
//! pod deleted before it finished is replaced without counting as a failure.
//! Replacements after a failure are created at once (Kubernetes waits an
//! exponential back-off first).

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::time::Instant;
use wasmkube_api::selector::LabelSelector;

use crate::events::{self, EventType, Recorder};
use crate::framework::{Action, Reconciler};
use crate::ownership;
use crate::replicaset::{Expectations, deletion_order, is_finished, ready_since};

/// Source component of this controller's events.
pub const COMPONENT: &str = "job-controller";
/// `spec.managedBy` of Jobs this controller runs (also when unset).
pub const MANAGED_BY: &str = "kubernetes.io/job-controller";
/// Most pods created or deleted in one reconcile.
const BURST: i64 = 500;
/// Concurrent pod writes within one reconcile.
const WRITE_CONCURRENCY: usize = 8;
/// Retry delay after losing a write race.
const RETRY_SOON: Duration = Duration::from_millis(200);

/// Errors from the Job controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{what} {key}: {source}")]
    Api {
        /// What was being done.
        what: &'static str,
        /// Job key.
        key: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

/// What a Job's pods add up to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Pods neither finished nor being deleted.
    pub active: i32,
    /// Active pods whose Ready condition is True.
    pub ready: i32,
    /// Pods in phase Succeeded.
    pub succeeded: i32,
    /// Pods in phase Failed.
    pub failed: i32,
    /// Unfinished pods being deleted.
    pub terminating: i32,
    /// Container restarts of pending and running pods (failures under
    /// `restartPolicy: OnFailure`).
    pub restarts: i32,
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Counts `pods` (all owned by one Job).
pub fn count_pods(pods: &[&Pod]) -> Counts {
    let mut c = Counts::default();
    for p in pods {
        match phase(p) {
            "Succeeded" => c.succeeded += 1,
            "Failed" => c.failed += 1,
            _ if p.metadata.deletion_timestamp.is_some() => c.terminating += 1,
            _ => {
                c.active += 1;
                if ready_since(p).is_some() {
                    c.ready += 1;
                }
                let restarts: i32 = p
                    .status
                    .iter()
                    .flat_map(|s| {
                        s.init_container_statuses
                            .iter()
                            .flatten()
                            .chain(s.container_statuses.iter().flatten())
                    })
                    .map(|cs| cs.restart_count)
                    .sum();
                c.restarts = c.restarts.saturating_add(restarts);
            }
        }
    }
    c
}

/// How a Job ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Enough pods succeeded.
    Complete,
    /// It failed; the reason is the `Failed` condition's.
    Failed {
        /// `BackoffLimitExceeded` or `DeadlineExceeded`.
        reason: &'static str,
        /// The condition's message.
        message: &'static str,
    },
}

/// What to do about a Job that has not finished yet (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// It finishes now.
    pub finish: Option<Finish>,
    /// Pods to create (positive) or delete (negative) otherwise.
    pub scale: i64,
    /// When the active deadline runs out, if it is running against one.
    pub deadline_in: Option<Duration>,
}

/// Kubernetes' job sync decisions, in its order: the backoff limit
/// (`failed > backoffLimit`, or for `OnFailure` pods their restarts), then
/// the active deadline, then completion, else scaling to the wanted number
/// of active pods. `running_for` is how long the Job has been started
/// (`None` when suspended or not started).
pub fn plan(spec: &JobSpec, counts: Counts, running_for: Option<Duration>) -> Plan {
    let backoff_limit = spec.backoff_limit.unwrap_or(6).max(0);
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    let past_restarts = on_failure
        && if backoff_limit == 0 {
            counts.restarts > 0
        } else {
            counts.restarts >= backoff_limit
        };
    let deadline = spec
        .active_deadline_seconds
        .map(|s| Duration::from_secs(s.max(0).unsigned_abs()));
    let deadline_in = match (deadline, running_for) {
        (Some(d), Some(r)) => Some(d.saturating_sub(r)),
        _ => None,
    };
    let failed = if counts.failed > backoff_limit || past_restarts {
        Some(Finish::Failed {
            reason: "BackoffLimitExceeded",
            message: "Job has reached the specified backoff limit",
        })
    } else if deadline_in == Some(Duration::ZERO) {
        Some(Finish::Failed {
            reason: "DeadlineExceeded",
            message: "Job was active longer than specified deadline",
        })
    } else {
        None
    };
    if failed.is_some() {
        return Plan {
            finish: failed,
            scale: 0,
            deadline_in: None,
        };
    }
    let parallelism = i64::from(spec.parallelism.unwrap_or(1).max(0));
    let succeeded = i64::from(counts.succeeded);
    let active = i64::from(counts.active);
    let (complete, wanted) = match spec.completions {
        Some(completions) => {
            let remaining = (i64::from(completions) - succeeded).max(0);
            (remaining == 0, parallelism.min(remaining))
        }
        // A work queue: done once one pod succeeded and the rest finished;
        // after the first success no new pods start.
        None if succeeded > 0 => (active == 0, active.min(parallelism)),
        None => (false, parallelism),
    };
    if complete {
        return Plan {
            finish: Some(Finish::Complete),
            scale: 0,
            deadline_in: None,
        };
    }
    let wanted = if spec.suspend == Some(true) {
        0
    } else {
        wanted
    };
    Plan {
        finish: None,
        scale: (wanted - active).clamp(-BURST, BURST),
        deadline_in,
    }
}

/// The condition of `type_` if it is True.
fn true_condition<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// When the Job finished (its `Complete` or `Failed` condition turned
/// True), if it did.
pub fn finished_at(status: &JobStatus) -> Option<Option<jiff::Timestamp>> {
    true_condition(status, "Complete")
        .or_else(|| true_condition(status, "Failed"))
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// How long until a finished Job's TTL runs out: `None` without a TTL,
/// zero once expired. A finish time unknown counts as now.
pub fn ttl_left(
    ttl_seconds: Option<i32>,
    finished: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> Option<Duration> {
    let ttl = jiff::SignedDuration::from_secs(i64::from(ttl_seconds?.max(0)));
    let expires = finished.unwrap_or(now).checked_add(ttl).ok()?;
    Some(Duration::try_from(expires.duration_since(now)).unwrap_or(Duration::ZERO))
}

/// Sets condition `type_` (a new transition time only when its status changes).
fn set_condition(
    status: &mut JobStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let fresh = JobCondition {
        type_: type_.into(),
        status: value.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == value => {
            if c.reason.as_deref() != Some(reason) {
                c.reason = fresh.reason;
                c.message = fresh.message;
            }
        }
        Some(c) => *c = fresh,
        None => conditions.push(fresh),
    }
}

/// The pod a Job creates from its template.
pub fn pod_from_template(job: &Job) -> Pod {
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}-",
                job.metadata.name.as_deref().unwrap_or("job")
            )),
            namespace: job.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![ownership::controller_ref(
                "batch/v1",
                "Job",
                &job.metadata,
            )]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Keys of the Jobs a pod event concerns: its controller, if a Job.
pub fn keys_for_pod(pod: &Pod) -> Vec<String> {
    match ownership::controller_of(&pod.metadata) {
        Some(r) if r.kind == "Job" && r.api_version.starts_with("batch/") => vec![format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            r.name
        )],
        _ => Vec::new(),
    }
}

/// The Job reconciler (key = `namespace/name`).
pub struct JobController {
    client: Client,
    jobs: Store<Job>,
    pods: Store<Pod>,
    recorder: Recorder,
    expectations: Expectations,
}

impl JobController {
    /// A reconciler reading the given caches.
    pub fn new(client: Client, jobs: Store<Job>, pods: Store<Pod>) -> Self {
        JobController {
            recorder: Recorder::new(client.clone(), COMPONENT),
            client,
            jobs,
            pods,
            expectations: Expectations::default(),
        }
    }

    /// Deletes `pods` (by uid precondition), recording events. Returns how
    /// many went; a pod already gone or changed counts as gone.
    async fn delete_pods(
        &mut self,
        key: &str,
        api: &Api<Pod>,
        job_ref: &k8s_openapi::api::core::v1::ObjectReference,
        pods: &[&Pod],
    ) -> Result<i32, kube::Error> {
        let now = Instant::now();
        let targets: Vec<(String, Option<String>)> = pods
            .iter()
            .map(|p| {
                (
                    p.metadata.name.clone().unwrap_or_default(),
                    p.metadata.uid.clone(),
                )
            })
            .collect();
        for (_, uid) in &targets {
            if let Some(u) = uid {
                self.expectations.deleted(key, u, now);
            }
        }
        let results: Vec<(String, Result<(), kube::Error>)> = futures::stream::iter(targets)
            .map(|(name, uid)| {
                let api = api.clone();
                async move {
                    let dp = DeleteParams {
                        preconditions: Some(Preconditions {
                            uid,
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
        let mut deleted = 0;
        for (name, r) in results {
            match r {
                Ok(()) => {
                    deleted += 1;
                    self.recorder.record(
                        job_ref,
                        EventType::Normal,
                        "SuccessfulDelete",
                        &format!("Deleted pod: {name}"),
                    );
                }
                Err(e) if ownership::is_conflict_or_gone(&e) => {}
                Err(e) => {
                    self.recorder.record(
                        job_ref,
                        EventType::Warning,
                        "FailedDelete",
                        &format!("Error deleting: {e}"),
                    );
                    return Err(e);
                }
            }
        }
        Ok(deleted)
    }

    /// Creates `count` pods from the template; returns how many were made.
    async fn create_pods(
        &mut self,
        key: &str,
        api: &Api<Pod>,
        job: &Job,
        job_ref: &k8s_openapi::api::core::v1::ObjectReference,
        count: usize,
    ) -> Result<i32, kube::Error> {
        let pod = pod_from_template(job);
        let results: Vec<Result<Pod, kube::Error>> = futures::stream::iter(0..count)
            .map(|_| {
                let api = api.clone();
                let pod = pod.clone();
                async move { api.create(&PostParams::default(), &pod).await }
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        let now = Instant::now();
        let mut created = 0;
        let mut failure = None;
        for r in results {
            match r {
                Ok(p) => {
                    created += 1;
                    let name = p.metadata.name.clone().unwrap_or_default();
                    self.expectations.created(key, &name, now);
                    self.recorder.record(
                        job_ref,
                        EventType::Normal,
                        "SuccessfulCreate",
                        &format!("Created pod: {name}"),
                    );
                }
                Err(e) => {
                    self.recorder.record(
                        job_ref,
                        EventType::Warning,
                        "FailedCreate",
                        &format!("Error creating: {e}"),
                    );
                    failure = Some(e);
                }
            }
        }
        match failure {
            Some(e) if created == 0 => Err(e),
            _ => Ok(created),
        }
    }

    /// A finished Job: stop pods left running after a failure, then wait
    /// out the TTL and delete the Job.
    async fn reconcile_finished(
        &mut self,
        key: &str,
        job: &Job,
        owned: &[&Pod],
        finished: Option<jiff::Timestamp>,
    ) -> Result<Action, Error> {
        let (ns, name) = ownership::split_key(key);
        let err = |what: &'static str| {
            let key = key.to_string();
            move |source| Error::Api { what, key, source }
        };
        let leftovers: Vec<&Pod> = owned
            .iter()
            .copied()
            .filter(|p| !is_finished(p) && p.metadata.deletion_timestamp.is_none())
            .collect();
        if !leftovers.is_empty() {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            let job_ref = events::reference("batch/v1", "Job", &job.metadata);
            self.delete_pods(key, &api, &job_ref, &leftovers)
                .await
                .map_err(err("stopping pods of"))?;
        }
        let ttl = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished);
        match ttl_left(ttl, finished, jiff::Timestamp::now()) {
            None => Ok(Action::AwaitChange),
            Some(left) if !left.is_zero() => Ok(Action::Requeue(left)),
            Some(_) => {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: job.metadata.uid.clone(),
                        resource_version: None,
                    }),
                    // Its pods follow through the garbage collector.
                    ..DeleteParams::background()
                };
                let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
                match api.delete(name, &dp).await {
                    Ok(_) => {
                        tracing::info!(key, "deleted finished job after its TTL");
                        Ok(Action::AwaitChange)
                    }
                    Err(e) if ownership::is_conflict_or_gone(&e) => Ok(Action::AwaitChange),
                    Err(e) => Err(err("deleting expired job")(e)),
                }
            }
        }
    }
}

impl Reconciler for JobController {
    type Error = Error;

    fn all_keys(&self) -> Vec<String> {
        self.jobs
            .state()
            .iter()
            .map(|j| ownership::key_of(&j.metadata))
            .collect()
    }

    async fn reconcile(&mut self, key: &str) -> Result<Action, Error> {
        let (ns, name) = ownership::split_key(key);
        let Some(job) = self.jobs.get(&ObjectRef::new(name).within(ns)) else {
            self.expectations.forget(key);
            return Ok(Action::AwaitChange);
        };
        // Being deleted: the garbage collector deals with the pods.
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(Action::AwaitChange);
        }
        let Some(spec) = job.spec.as_ref() else {
            return Ok(Action::AwaitChange);
        };
        if spec.managed_by.as_deref().is_some_and(|m| m != MANAGED_BY) {
            return Ok(Action::AwaitChange);
        }
        let valid_selector = spec
            .selector
            .as_ref()
            .and_then(|s| LabelSelector::from_k8s(s).ok())
            .is_some_and(|s| !s.is_empty());
        if !valid_selector {
            tracing::warn!(key, "job has an empty or invalid selector; ignored");
            return Ok(Action::AwaitChange);
        }
        let err = |what: &'static str| {
            let key = key.to_string();
            move |source| Error::Api { what, key, source }
        };
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let all_pods = self.pods.state();
        let ns_pods: Vec<&Pod> = all_pods
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
            .collect();
        let owned: Vec<&Pod> = ns_pods
            .iter()
            .copied()
            .filter(|p| ownership::controller_of(&p.metadata).is_some_and(|r| r.uid == uid))
            .collect();
        let old = job.status.clone().unwrap_or_default();
        if let Some(finished) = finished_at(&old) {
            return self.reconcile_finished(key, &job, &owned, finished).await;
        }

        let wall = jiff::Timestamp::now();
        let unmet = self.expectations.unmet(key, &ns_pods, Instant::now());
        let mut counts = count_pods(&owned);
        // Never count less than already recorded (see the module docs).
        counts.succeeded = counts.succeeded.max(old.succeeded.unwrap_or(0));
        counts.failed = counts.failed.max(old.failed.unwrap_or(0));
        let suspended = spec.suspend == Some(true);
        let mut status = old.clone();
        let was_suspended = true_condition(&old, "Suspended").is_some();
        if suspended {
            set_condition(
                &mut status,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
                wall,
            );
        } else {
            if was_suspended {
                set_condition(
                    &mut status,
                    "Suspended",
                    "False",
                    "JobResumed",
                    "Job resumed",
                    wall,
                );
                // The active deadline counts from the resumption.
                status.start_time = None;
            }
            status.start_time.get_or_insert(Time(wall));
        }
        let running_for = status
            .start_time
            .as_ref()
            .filter(|_| !suspended)
            .map(|t| Duration::try_from(wall.duration_since(t.0)).unwrap_or(Duration::ZERO));
        let plan = plan(spec, counts, running_for);
        let job_ref = events::reference("batch/v1", "Job", &job.metadata);
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let active_pods: Vec<&Pod> = owned
            .iter()
            .copied()
            .filter(|p| !is_finished(p) && p.metadata.deletion_timestamp.is_none())
            .collect();
        let mut active = counts.active;
        let mut terminating = counts.terminating;
        // Said once the status records it: a pass over a cache that has not
        // caught up with our own write would otherwise say it twice.
        let mut finish_event = None;
        match plan.finish {
            Some(Finish::Failed { reason, message }) => {
                let gone = self
                    .delete_pods(key, &pods_api, &job_ref, &active_pods)
                    .await
                    .map_err(err("stopping pods of"))?;
                active = 0;
                terminating += gone;
                set_condition(&mut status, "FailureTarget", "True", reason, message, wall);
                set_condition(&mut status, "Failed", "True", reason, message, wall);
                finish_event = Some((EventType::Warning, reason, message));
            }
            Some(Finish::Complete) => {
                set_condition(
                    &mut status,
                    "SuccessCriteriaMet",
                    "True",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    wall,
                );
                set_condition(
                    &mut status,
                    "Complete",
                    "True",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    wall,
                );
                status.completion_time = Some(Time(wall));
                finish_event = Some((EventType::Normal, "Completed", "Job completed"));
            }
            // Writes the cache has not shown yet would be counted twice.
            None if unmet.is_some() => {}
            None if plan.scale > 0 => {
                let count = usize::try_from(plan.scale).unwrap_or(0);
                active += self
                    .create_pods(key, &pods_api, &job, &job_ref, count)
                    .await
                    .map_err(err("creating pods for"))?;
            }
            None if plan.scale < 0 => {
                let mut ranked = active_pods.clone();
                deletion_order(&mut ranked);
                ranked.truncate(usize::try_from(-plan.scale).unwrap_or(0));
                let gone = self
                    .delete_pods(key, &pods_api, &job_ref, &ranked)
                    .await
                    .map_err(err("deleting pods of"))?;
                active -= gone;
                terminating += gone;
            }
            None => {}
        }
        let some = |n: i32| (n > 0).then_some(n);
        status.active = some(active);
        status.succeeded = some(counts.succeeded);
        status.failed = some(counts.failed);
        status.ready = Some(counts.ready.min(active.max(0)));
        status.terminating = Some(terminating);
        status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
        let mut requeue_soon = false;
        if status != old {
            let mut updated = (*job).clone();
            updated.status = Some(status);
            let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
            match api
                .replace_status(name, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => {
                    if let Some((type_, reason, message)) = finish_event {
                        self.recorder.record(&job_ref, type_, reason, message);
                    }
                }
                Err(e) if ownership::is_conflict_or_gone(&e) => requeue_soon = true,
                Err(e) => return Err(err("updating status of")(e)),
            }
        }
        let wait = [requeue_soon.then_some(RETRY_SOON), unmet, plan.deadline_in]
            .into_iter()
            .flatten()
            .min();
        Ok(wait.map_or(Action::AwaitChange, Action::Requeue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerStatus, PodCondition, PodSpec, PodStatus, PodTemplateSpec,
    };

    fn spec(completions: Option<i32>, parallelism: i32, backoff: i32) -> JobSpec {
        JobSpec {
            completions,
            parallelism: Some(parallelism),
            backoff_limit: Some(backoff),
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }
    }

    fn counts(active: i32, succeeded: i32, failed: i32) -> Counts {
        Counts {
            active,
            succeeded,
            failed,
            ..Default::default()
        }
    }

    #[test]
    fn keeps_parallelism_active_but_never_more_than_remain() {
        let s = spec(Some(5), 2, 6);
        assert_eq!(plan(&s, counts(0, 0, 0), None).scale, 2);
        assert_eq!(plan(&s, counts(1, 2, 0), None).scale, 1);
        // One completion left: one pod, the extra goes.
        assert_eq!(plan(&s, counts(2, 4, 0), None).scale, -1);
        assert_eq!(
            plan(&s, counts(0, 5, 0), None).finish,
            Some(Finish::Complete)
        );
        assert_eq!(
            plan(&s, counts(0, 7, 0), None).finish,
            Some(Finish::Complete)
        );
    }

    #[test]
    fn failures_beyond_the_backoff_limit_fail_the_job() {
        let s = spec(Some(1), 1, 2);
        assert_eq!(
            plan(&s, counts(0, 0, 2), None).scale,
            1,
            "two failures are allowed"
        );
        assert_eq!(
            plan(&s, counts(0, 0, 3), None).finish,
            Some(Finish::Failed {
                reason: "BackoffLimitExceeded",
                message: "Job has reached the specified backoff limit"
            })
        );
        // Failure wins over completion, as in Kubernetes.
        assert!(matches!(
            plan(&s, counts(0, 1, 3), None).finish,
            Some(Finish::Failed { .. })
        ));
    }

    #[test]
    fn on_failure_pods_count_their_restarts() {
        let mut s = spec(Some(1), 1, 2);
        if let Some(p) = s.template.spec.as_mut() {
            p.restart_policy = Some("OnFailure".into());
        }
        let mut c = counts(1, 0, 0);
        c.restarts = 1;
        assert_eq!(plan(&s, c, None).finish, None);
        c.restarts = 2;
        assert!(matches!(
            plan(&s, c, None).finish,
            Some(Finish::Failed {
                reason: "BackoffLimitExceeded",
                ..
            })
        ));
        s.backoff_limit = Some(0);
        c.restarts = 1;
        assert!(plan(&s, c, None).finish.is_some());
    }

    #[test]
    fn the_active_deadline_fails_a_running_job() {
        let mut s = spec(Some(3), 1, 6);
        s.active_deadline_seconds = Some(10);
        let p = plan(&s, counts(1, 0, 0), Some(Duration::from_secs(4)));
        assert_eq!(
            (p.finish, p.deadline_in),
            (None, Some(Duration::from_secs(6)))
        );
        assert_eq!(
            plan(&s, counts(1, 0, 0), Some(Duration::from_secs(10))).finish,
            Some(Finish::Failed {
                reason: "DeadlineExceeded",
                message: "Job was active longer than specified deadline"
            })
        );
        // Suspended (not running): no deadline.
        assert_eq!(plan(&s, counts(0, 0, 0), None).deadline_in, None);
    }

    #[test]
    fn suspended_jobs_run_nothing_and_work_queues_stop_after_a_success() {
        let mut s = spec(Some(4), 2, 6);
        s.suspend = Some(true);
        assert_eq!(plan(&s, counts(2, 0, 0), None).scale, -2);
        let queue = spec(None, 3, 6);
        assert_eq!(plan(&queue, counts(0, 0, 0), None).scale, 3);
        assert_eq!(
            plan(&queue, counts(2, 1, 0), None),
            Plan {
                finish: None,
                scale: 0,
                deadline_in: None
            }
        );
        assert_eq!(
            plan(&queue, counts(0, 1, 0), None).finish,
            Some(Finish::Complete)
        );
    }

    fn pod(phase: &str, ready: bool, restarts: i32, deleting: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                deletion_timestamp: deleting.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready.then(|| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        ..Default::default()
                    }]
                }),
                container_statuses: Some(vec![ContainerStatus {
                    restart_count: restarts,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn pods_are_counted_by_phase() {
        let pods = [
            pod("Running", true, 1, false),
            pod("Pending", false, 0, false),
            pod("Running", false, 0, true),
            pod("Succeeded", false, 0, false),
            pod("Failed", false, 2, false),
            pod("Failed", false, 0, true),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(
            count_pods(&refs),
            Counts {
                active: 2,
                ready: 1,
                succeeded: 1,
                failed: 2,
                terminating: 1,
                restarts: 1
            }
        );
    }

    #[test]
    fn ttl_counts_from_the_finish() {
        let t = |s: i64| jiff::Timestamp::from_second(s).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(ttl_left(None, Some(t(100)), t(200)), None);
        assert_eq!(
            ttl_left(Some(30), Some(t(100)), t(110)),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            ttl_left(Some(30), Some(t(100)), t(200)),
            Some(Duration::ZERO)
        );
        assert_eq!(ttl_left(Some(0), None, t(5)), Some(Duration::ZERO));
    }

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let t = |s: i64| jiff::Timestamp::from_second(s).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let mut st = JobStatus::default();
        set_condition(&mut st, "Suspended", "True", "JobSuspended", "m", t(1));
        set_condition(&mut st, "Suspended", "True", "JobSuspended", "m", t(2));
        let c = st.conditions.clone().unwrap_or_default();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, Some(Time(t(1))));
        set_condition(&mut st, "Suspended", "False", "JobResumed", "m", t(3));
        let c = st.conditions.clone().unwrap_or_default();
        assert_eq!(
            (c[0].status.as_str(), c[0].last_transition_time.clone()),
            ("False", Some(Time(t(3))))
        );
        st.conditions = Some(vec![JobCondition {
            type_: "Complete".into(),
            status: "True".into(),
            last_transition_time: Some(Time(t(9))),
            ..Default::default()
        }]);
        assert_eq!(finished_at(&st), Some(Some(t(9))));
    }

    #[test]
    fn pods_from_the_template_are_owned_by_the_job() {
        let job = Job {
            metadata: ObjectMeta {
                name: Some("pi".into()),
                namespace: Some("default".into()),
                uid: Some("job-uid".into()),
                ..Default::default()
            },
            spec: Some(spec(Some(1), 1, 6)),
            status: None,
        };
        let p = pod_from_template(&job);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-"));
        let r = ownership::controller_of(&p.metadata)
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (r.api_version.as_str(), r.kind.as_str(), r.uid.as_str()),
            ("batch/v1", "Job", "job-uid")
        );
        let mut owned = p.clone();
        owned.metadata.namespace = Some("default".into());
        assert_eq!(keys_for_pod(&owned), vec!["default/pi".to_string()]);
        assert!(keys_for_pod(&Pod::default()).is_empty());
    }
}
