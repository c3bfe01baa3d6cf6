//! Leader election through a `coordination.k8s.io/v1` Lease, the way
//! Kubernetes' client-go `leaderelection` does it, so that of several
//! control planes exactly one runs the scheduler (or the controllers).
//!
//! The Lease is the lock. Its holder renews `renewTime` every
//! `retry_period`; every write carries the `resourceVersion` it was computed
//! from, so of two candidates racing for the same Lease one gets a 409 and
//! knows it lost. A candidate may take the Lease over once its holder has not
//! renewed it for `lease_duration`. A leader that cannot renew within
//! `renew_deadline` stops leading (its work is cancelled) before anyone else
//! may consider the Lease expired, since `renew_deadline < lease_duration`.
//! On shutdown the leader clears `holderIdentity`, so a standby takes over at
//! its next retry instead of waiting out the lease.
//!
//! Expiry is judged from the `renewTime` written by the holder against the
//! local clock, so the control planes' clocks are assumed to agree to well
//! within `lease_duration - renew_deadline`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The namespace Kubernetes keeps its control-plane Leases in.
pub const DEFAULT_NAMESPACE: &str = "kube-system";
/// How long a Lease stays valid after its last renewal (Kubernetes' default).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long a leader keeps trying to renew before it gives up leading.
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often candidates try to acquire, and leaders renew.
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Acquisition retries wait `retry_period * (1 + up to this)`, so that
/// candidates started together do not keep colliding (client-go's factor).
const JITTER_FACTOR: f64 = 1.2;

/// Which Lease to hold, as whom, and how often to renew it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderConfig {
    /// The Lease's name (e.g. `wasmkube-scheduler`).
    pub lease_name: String,
    /// The Lease's namespace ([`DEFAULT_NAMESPACE`]).
    pub namespace: String,
    /// Who we are, written as `holderIdentity`; unique per process
    /// (see [`identity`]).
    pub identity: String,
    /// How long the Lease is valid after a renewal; written, in whole
    /// seconds, as `leaseDurationSeconds`.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long stops leading.
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// Kubernetes' defaults (15 s / 10 s / 2 s) for Lease
    /// `kube-system/<lease_name>`.
    pub fn new(lease_name: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaderConfig {
            lease_name: lease_name.into(),
            namespace: DEFAULT_NAMESPACE.to_string(),
            identity: identity.into(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
        }
    }

    /// The same checks as client-go: a leader must give up before anyone
    /// else may take over, and must get several tries before giving up.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |m: &str| Err(Error::Config(m.to_string()));
        if self.lease_name.is_empty() || self.namespace.is_empty() {
            return invalid("the lease name and namespace must not be empty");
        }
        if self.identity.is_empty() {
            return invalid("the identity must not be empty");
        }
        if self.retry_period.is_zero() {
            return invalid("retry_period must be positive");
        }
        if self.lease_duration <= self.renew_deadline {
            return invalid("lease_duration must be greater than renew_deadline");
        }
        if self.renew_deadline.as_secs_f64() <= JITTER_FACTOR * self.retry_period.as_secs_f64() {
            return invalid("renew_deadline must be greater than retry_period * 1.2");
        }
        if lease_duration_seconds(self.lease_duration) == i32::MAX {
            return invalid("lease_duration is too long");
        }
        Ok(())
    }
}

/// An identity like Kubernetes': `<hostname>_<random UUID>`, unique even for
/// several processes on one host.
pub fn identity(hostname: &str) -> String {
    format!("{hostname}_{}", uuid::Uuid::new_v4())
}

/// Leader election errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The [`LeaderConfig`] is inconsistent.
    #[error("invalid leader election config: {0}")]
    Config(String),
    /// The led work returned an error.
    #[error("the led work failed")]
    Work(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// What a candidate may do with a Lease, given what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it (never held, released, or expired): take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds a live Lease: wait.
    Wait {
        /// The current holder.
        holder: String,
    },
}

/// What to do with a Lease whose spec is `spec` (`None`: no Lease or no
/// spec), as `identity`, at `now`.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty());
    match holder {
        None => Decision::Acquire,
        Some(h) if h == identity => Decision::Renew,
        Some(h) if spec.is_some_and(|s| !is_expired(s, now)) => Decision::Wait {
            holder: h.to_string(),
        },
        Some(_) => Decision::Acquire,
    }
}

/// Has the Lease gone unrenewed for its whole duration at `now`? A Lease
/// with no renewal (or acquisition) time is treated as expired.
pub fn is_expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(last) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(0).max(0));
    match last.0.checked_add(SignedDuration::from_secs(seconds)) {
        Ok(until) => until <= now,
        // Out of range: so far in the future that it has not expired.
        Err(_) => false,
    }
}

/// The spec that makes `identity` the holder at `now`: a renewal keeps the
/// acquisition time and transition count, a takeover resets the former and
/// counts one more transition.
pub fn claim(
    current: Option<&LeaseSpec>,
    identity: &str,
    lease_duration: Duration,
    now: Timestamp,
) -> LeaseSpec {
    let base = current.cloned().unwrap_or_default();
    let renewal = base.holder_identity.as_deref() == Some(identity);
    let transitions = base.lease_transitions.unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(lease_duration_seconds(lease_duration)),
        acquire_time: if renewal {
            base.acquire_time.clone().or(Some(MicroTime(now)))
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(match (current, renewal) {
            // A brand-new Lease: nobody held it before.
            (None, _) => 0,
            (Some(_), true) => transitions,
            (Some(_), false) => transitions.saturating_add(1),
        }),
        ..base
    }
}

/// The spec with nobody holding it, as client-go writes on release: the
/// next candidate acquires without waiting.
pub fn released(current: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        renew_time: Some(MicroTime(now)),
        ..current.clone()
    }
}

/// `leaseDurationSeconds` for `d`: whole seconds, rounded up, at least 1.
fn lease_duration_seconds(d: Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
}

/// Runs `work` while `config.identity` holds the Lease, until `shutdown`.
///
/// Waits to acquire the Lease, then calls `work(token)` and renews the
/// Lease while the work runs. On losing the Lease (someone else took it, or
/// no renewal succeeded within `renew_deadline`) the work's token is
/// cancelled, the work awaited, and acquisition starts again. On `shutdown`
/// the work's token is cancelled, the work awaited and the Lease released.
/// Returns when `shutdown` is cancelled (`Ok`), or when the work returns on
/// its own (its result, after releasing the Lease).
pub async fn run_while_leader<F, Fut, E>(
    client: kube::Client,
    config: LeaderConfig,
    shutdown: CancellationToken,
    mut work: F,
) -> Result<(), Error>
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    config.validate()?;
    let elector = Elector {
        api: Api::namespaced(client, &config.namespace),
        lease: format!("{}/{}", config.namespace, config.lease_name),
        config,
    };
    let work_result = |r: Result<(), E>| r.map_err(|e| Error::Work(e.into()));
    loop {
        if !elector.acquire(&shutdown).await {
            return Ok(());
        }
        tracing::info!(lease = %elector.lease, identity = %elector.config.identity,
            "acquired the lease, leading");
        let led = shutdown.child_token();
        let fut = work(led.clone());
        let mut fut = std::pin::pin!(fut);
        match elector.keep(&shutdown, fut.as_mut()).await {
            Stop::Shutdown => {
                led.cancel();
                let r = fut.await;
                elector.release().await;
                return work_result(r);
            }
            Stop::WorkEnded(r) => {
                led.cancel();
                elector.release().await;
                return work_result(r);
            }
            Stop::Lost => {
                tracing::info!(lease = %elector.lease, identity = %elector.config.identity,
                    "lost the lease, stopping the led work");
                led.cancel();
                if let Err(e) = fut.await {
                    let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                    tracing::warn!(lease = %elector.lease, error = %e,
                        "the led work failed while stopping");
                }
            }
        }
    }
}

/// Why leading ended.
enum Stop<T> {
    Shutdown,
    WorkEnded(T),
    Lost,
}

/// What an acquire-or-renew attempt found.
enum Attempt {
    Leading,
    /// Someone else holds it (`None`: they won a create race just now).
    Following(Option<String>),
}

struct Elector {
    api: Api<Lease>,
    config: LeaderConfig,
    /// `namespace/name`, for logs.
    lease: String,
}

impl Elector {
    /// Retries until the Lease is ours (`true`) or `shutdown` (`false`).
    async fn acquire(&self, shutdown: &CancellationToken) -> bool {
        let mut seen: Option<String> = None;
        loop {
            if shutdown.is_cancelled() {
                return false;
            }
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => return false,
                a = tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew()) => a,
            };
            match attempt {
                Ok(Ok(Attempt::Leading)) => return true,
                Ok(Ok(Attempt::Following(holder))) => {
                    if holder.is_some() && holder != seen {
                        tracing::info!(lease = %self.lease, leader = holder.as_deref().unwrap_or(""),
                            "the lease is held by another, standing by");
                        seen = holder;
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.lease, error = %e, "could not acquire the lease")
                }
                Err(_) => tracing::warn!(lease = %self.lease, "acquiring the lease timed out"),
            }
            let jitter = 1.0 + rand::random::<f64>() * JITTER_FACTOR;
            let wait = self.config.retry_period.mul_f64(jitter);
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Renews every `retry_period` while driving `work`, until shutdown,
    /// the work ends, or the Lease is lost.
    async fn keep<T>(
        &self,
        shutdown: &CancellationToken,
        mut work: Pin<&mut impl Future<Output = T>>,
    ) -> Stop<T> {
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Stop::Shutdown,
                r = work.as_mut() => return Stop::WorkEnded(r),
                _ = tokio::time::sleep(self.config.retry_period) => {}
            }
            let left =
                (renewed + self.config.renew_deadline).saturating_duration_since(Instant::now());
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => return Stop::Shutdown,
                r = work.as_mut() => return Stop::WorkEnded(r),
                a = tokio::time::timeout(left, self.try_acquire_or_renew()) => a,
            };
            match attempt {
                Ok(Ok(Attempt::Leading)) => renewed = Instant::now(),
                Ok(Ok(Attempt::Following(holder))) => {
                    tracing::info!(lease = %self.lease, leader = holder.as_deref().unwrap_or(""),
                        "the lease was taken by another");
                    return Stop::Lost;
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.lease, error = %e, "renewing the lease failed");
                    if renewed.elapsed() >= self.config.renew_deadline {
                        return Stop::Lost;
                    }
                }
                Err(_) => {
                    tracing::warn!(lease = %self.lease, "no renewal within the renew deadline");
                    return Stop::Lost;
                }
            }
        }
    }

    /// One read and (if we may) one conditional write of the Lease.
    async fn try_acquire_or_renew(&self) -> Result<Attempt, kube::Error> {
        let name = &self.config.lease_name;
        let identity = &self.config.identity;
        let now = Timestamp::now();
        let Some(current) = self.api.get_opt(name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(claim(None, identity, self.config.lease_duration, now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Leading),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Following(None)),
                Err(e) => Err(e),
            };
        };
        if let Decision::Wait { holder } = decide(current.spec.as_ref(), identity, now) {
            return Ok(Attempt::Following(Some(holder)));
        }
        // `current` carries the resourceVersion we decided on: if anyone
        // wrote since, the API answers 409 and they won.
        let next = Lease {
            spec: Some(claim(
                current.spec.as_ref(),
                identity,
                self.config.lease_duration,
                now,
            )),
            ..current
        };
        match self.api.replace(name, &PostParams::default(), &next).await {
            Ok(_) => Ok(Attempt::Leading),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Following(None)),
            Err(e) => Err(e),
        }
    }

    /// Clears `holderIdentity` if we still hold the Lease.
    async fn release(&self) {
        let name = &self.config.lease_name;
        let attempt = async {
            let Some(current) = self.api.get_opt(name).await? else {
                return Ok(false);
            };
            let Some(spec) = current.spec.as_ref() else {
                return Ok(false);
            };
            if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                return Ok(false);
            }
            let next = Lease {
                spec: Some(released(spec, Timestamp::now())),
                ..current.clone()
            };
            self.api
                .replace(name, &PostParams::default(), &next)
                .await?;
            Ok::<_, kube::Error>(true)
        };
        match tokio::time::timeout(self.config.renew_deadline, attempt).await {
            Ok(Ok(true)) => tracing::info!(lease = %self.lease, identity = %self.config.identity,
                "released the lease"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(lease = %self.lease, error = %e, "could not release the lease")
            }
            Err(_) => tracing::warn!(lease = %self.lease, "releasing the lease timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn held(holder: &str, renewed: i64, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(secs),
            acquire_time: Some(MicroTime(at(renewed - 100))),
            renew_time: Some(MicroTime(at(renewed))),
            lease_transitions: Some(3),
            ..Default::default()
        }
    }

    #[test]
    fn a_missing_or_unheld_lease_is_free() {
        assert_eq!(decide(None, "me", at(1000)), Decision::Acquire);
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "me", at(1000)),
            Decision::Acquire
        );
        let empty = LeaseSpec {
            holder_identity: Some(String::new()),
            ..held("x", 1000, 15)
        };
        assert_eq!(decide(Some(&empty), "me", at(1000)), Decision::Acquire);
    }

    #[test]
    fn a_live_lease_of_another_is_waited_for() {
        let other = held("other", 1000, 15);
        for now in [1000, 1005, 1014] {
            assert_eq!(
                decide(Some(&other), "me", at(now)),
                Decision::Wait {
                    holder: "other".into()
                },
                "at {now}"
            );
        }
    }

    #[test]
    fn an_expired_lease_of_another_can_be_taken_over() {
        let other = held("other", 1000, 15);
        assert!(!is_expired(&other, at(1014)));
        assert!(is_expired(&other, at(1015)));
        assert_eq!(decide(Some(&other), "me", at(1015)), Decision::Acquire);
        assert_eq!(decide(Some(&other), "me", at(5000)), Decision::Acquire);
    }

    #[test]
    fn our_own_lease_is_renewed_even_when_late() {
        let mine = held("me", 1000, 15);
        assert_eq!(decide(Some(&mine), "me", at(1001)), Decision::Renew);
        assert_eq!(decide(Some(&mine), "me", at(9999)), Decision::Renew);
    }

    #[test]
    fn expiry_falls_back_to_acquire_time_and_treats_no_time_as_expired() {
        let acquired_only = LeaseSpec {
            renew_time: None,
            acquire_time: Some(MicroTime(at(1000))),
            ..held("other", 0, 15)
        };
        assert!(!is_expired(&acquired_only, at(1010)));
        assert!(is_expired(&acquired_only, at(1015)));
        let timeless = LeaseSpec {
            holder_identity: Some("other".into()),
            ..Default::default()
        };
        assert!(is_expired(&timeless, at(0)));
        // A renewal in the future (a skewed clock) is live, not an error.
        assert!(!is_expired(&held("other", 2000, 15), at(1000)));
    }

    #[test]
    fn claims_count_transitions_between_holders_only() {
        let fresh = claim(None, "me", Duration::from_secs(15), at(1000));
        assert_eq!(fresh.holder_identity.as_deref(), Some("me"));
        assert_eq!(fresh.lease_transitions, Some(0));
        assert_eq!(fresh.lease_duration_seconds, Some(15));
        assert_eq!(fresh.acquire_time, Some(MicroTime(at(1000))));
        assert_eq!(fresh.renew_time, Some(MicroTime(at(1000))));

        let renewed = claim(Some(&fresh), "me", Duration::from_secs(15), at(1002));
        assert_eq!(renewed.lease_transitions, Some(0));
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(1000))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(1002))));

        let taken = claim(
            Some(&held("other", 1000, 15)),
            "me",
            Duration::from_secs(15),
            at(1020),
        );
        assert_eq!(taken.holder_identity.as_deref(), Some("me"));
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(1020))));
    }

    #[test]
    fn a_released_lease_is_free_at_once_and_keeps_its_history() {
        let mine = held("me", 1000, 15);
        let free = released(&mine, at(1001));
        assert_eq!(free.holder_identity, None);
        assert_eq!(free.lease_transitions, Some(3));
        assert_eq!(decide(Some(&free), "other", at(1001)), Decision::Acquire);
        let next = claim(Some(&free), "other", Duration::from_secs(15), at(1001));
        assert_eq!(next.lease_transitions, Some(4));
    }

    #[test]
    fn lease_durations_round_up_to_whole_seconds() {
        assert_eq!(lease_duration_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(lease_duration_seconds(Duration::from_millis(10)), 1);
        assert_eq!(lease_duration_seconds(Duration::from_secs(15)), 15);
    }

    #[test]
    fn configs_where_a_leader_could_outlive_its_lease_are_rejected() {
        let ok = LeaderConfig::new("l", "me");
        assert!(ok.validate().is_ok());
        let bad = |f: fn(&mut LeaderConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            c.validate().is_err()
        };
        assert!(bad(|c| c.renew_deadline = c.lease_duration));
        assert!(bad(|c| c.retry_period = c.renew_deadline));
        assert!(bad(|c| c.retry_period = Duration::ZERO));
        assert!(bad(|c| c.identity.clear()));
        assert!(bad(|c| c.lease_name.clear()));
    }

    #[test]
    fn identities_are_unique_per_process_start() {
        let a = identity("host");
        let b = identity("host");
        assert!(a.starts_with("host_"));
        assert_ne!(a, b);
    }
}
