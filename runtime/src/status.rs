//! Pod status as Kubernetes reports it, computed from what the pod worker
//! knows about its containers. Everything here is pure: the worker keeps
//! [`ContainerRecord`]s and asks this module for the `PodStatus` to write,
//! for the phase, for the restart decision and for the back-off delay.

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::sandbox::ExitStatus;

/// Back-off before the second restart; doubles up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// The longest back-off between restarts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long has its back-off reset.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// The crash-loop back-off of one node: Kubernetes' 10 s doubling to 5 min
/// by default; the kubelet's `crashLoopBackOff.maxContainerRestartPeriod`
/// (and, here, the first delay) can be set per node, e.g. small in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartBackoff {
    /// The delay before the second restart.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// A container that ran this long has its back-off reset.
    pub reset_after: Duration,
}

impl Default for RestartBackoff {
    fn default() -> RestartBackoff {
        RestartBackoff {
            initial: INITIAL_BACKOFF,
            max: MAX_BACKOFF,
            reset_after: BACKOFF_RESET,
        }
    }
}

impl RestartBackoff {
    /// `initial` doubling to `max`; the reset comes after twice `max` of
    /// running, as in the kubelet (whose back-off entries expire after 2× max).
    pub fn new(initial: Duration, max: Duration) -> RestartBackoff {
        RestartBackoff {
            initial: initial.min(max),
            max,
            reset_after: max.saturating_mul(2),
        }
    }

    /// The delay before the next restart: none for the first restart (like
    /// the kubelet, whose back-off starts counting at the first crash), then
    /// `initial` doubling to `max`. `previous` is the last delay used,
    /// `ran_for` how long the last attempt ran (a long run resets it).
    pub fn next(&self, previous: Option<Duration>, ran_for: Duration) -> Duration {
        if ran_for >= self.reset_after {
            return Duration::ZERO;
        }
        match previous {
            None => Duration::ZERO,
            Some(d) if d.is_zero() => self.initial.min(self.max),
            Some(d) => d.saturating_mul(2).min(self.max),
        }
    }
}

/// How a container ended, as reported in `state.terminated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    /// The exit code.
    pub exit_code: i32,
    /// `Completed`, `Error` or `OOMKilled`.
    pub reason: String,
    /// A trap message, if any.
    pub message: Option<String>,
    /// When it started.
    pub started_at: Option<jiff::Timestamp>,
    /// When it ended.
    pub finished_at: jiff::Timestamp,
    /// `wasm://…`
    pub container_id: Option<String>,
}

/// The state of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not running: `ContainerCreating`, `ErrImagePull`, `CrashLoopBackOff`…
    Waiting {
        /// The reason.
        reason: String,
        /// The message, if any.
        message: Option<String>,
    },
    /// Running since.
    Running {
        /// Start time.
        started_at: jiff::Timestamp,
    },
    /// Ended.
    Terminated(Terminated),
}

/// What the kubelet knows about one container of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    /// Container name.
    pub name: String,
    /// The image as written in the spec.
    pub image: String,
    /// `wasmkube://sha256:…` once pulled.
    pub image_id: Option<String>,
    /// The current (or last) attempt's id.
    pub container_id: Option<String>,
    /// Restarts so far.
    pub restart_count: i32,
    /// Current state.
    pub state: State,
    /// The previous attempt's end, if any.
    pub last_terminated: Option<Terminated>,
    /// The startup probe passed (or there is none); counts while running.
    pub started: bool,
    /// The readiness probe passes (or there is none) and the container
    /// started; counts while running.
    pub ready: bool,
}

impl ContainerRecord {
    /// A container that has not been started yet.
    pub fn new(container: &Container) -> ContainerRecord {
        let (started, ready) = crate::probes::Probes::of(container).initial_gate();
        ContainerRecord {
            name: container.name.clone(),
            image: container.image.clone().unwrap_or_default(),
            image_id: None,
            container_id: None,
            restart_count: 0,
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last_terminated: None,
            started,
            ready,
        }
    }

    /// Rebuilds a record from a status a previous kubelet run reported, so
    /// restart counts and finished containers survive a kubelet restart.
    pub fn from_status(container: &Container, status: &ContainerStatus) -> ContainerRecord {
        let mut record = ContainerRecord::new(container);
        record.restart_count = status.restart_count;
        record.image_id = Some(status.image_id.clone()).filter(|s| !s.is_empty());
        record.container_id = status.container_id.clone();
        record.last_terminated = status
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(terminated_from_k8s);
        if let Some(t) = status.state.as_ref().and_then(|s| s.terminated.as_ref()) {
            record.state = State::Terminated(terminated_from_k8s(t));
        }
        record
    }

    /// Whether the container is running.
    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    /// Whether the container is running, started and ready by its probes.
    pub fn is_ready(&self) -> bool {
        self.is_running() && self.started && self.ready
    }
}

fn terminated_from_k8s(t: &ContainerStateTerminated) -> Terminated {
    Terminated {
        exit_code: t.exit_code,
        reason: t.reason.clone().unwrap_or_default(),
        message: t.message.clone(),
        started_at: t.started_at.as_ref().map(|t| t.0),
        finished_at: t
            .finished_at
            .as_ref()
            .map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0),
        container_id: t.container_id.clone(),
    }
}

/// Exit code, reason and message Kubernetes shows for a sandbox outcome.
pub fn termination(status: &ExitStatus) -> (i32, &'static str, Option<String>) {
    match status {
        ExitStatus::Exited(0) => (0, "Completed", None),
        ExitStatus::Exited(code) => (*code, "Error", None),
        ExitStatus::Trapped(msg) => (1, "Error", Some(msg.clone())),
        ExitStatus::OutOfMemory => (137, "OOMKilled", None),
        ExitStatus::Killed => (137, "Error", None),
    }
}

/// Whether a container that exited with `exit_code` is restarted.
pub fn should_restart(restart_policy: &str, exit_code: i32) -> bool {
    match restart_policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// [`RestartBackoff::next`] with Kubernetes' defaults (10 s doubling to 5 min).
pub fn next_backoff(previous: Option<Duration>, ran_for: Duration) -> Duration {
    RestartBackoff::default().next(previous, ran_for)
}

/// A duration the way Go prints it (`10s`, `1m20s`, `5m0s`), as in the
/// kubelet's back-off message.
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 && !d.is_zero() {
        // Configured sub-second back-offs (`500ms`).
        return format!("{}ms", d.as_millis());
    }
    if secs < 60 {
        let millis = d.subsec_millis();
        if millis == 0 {
            return format!("{secs}s");
        }
        let frac = format!("{millis:03}");
        return format!("{secs}.{}s", frac.trim_end_matches('0'));
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else {
        format!("{m}m{s}s")
    }
}

/// `name_namespace(uid)`, the kubelet's way of naming a pod in messages.
pub fn pod_ref(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// The CrashLoopBackOff message.
pub fn backoff_message(delay: Duration, container: &str, pod: &Pod) -> String {
    format!(
        "back-off {} restarting failed container={container} pod={}",
        go_duration(delay),
        pod_ref(pod)
    )
}

/// The pod phase, by the kubelet's rules.
pub fn phase(restart_policy: &str, records: &[ContainerRecord], deleting: bool) -> &'static str {
    let (mut waiting, mut running, mut stopped, mut succeeded, mut failed) = (0, 0, 0, 0, 0);
    for r in records {
        match &r.state {
            State::Running { .. } => running += 1,
            State::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                } else {
                    failed += 1;
                }
            }
            State::Waiting { .. } => {
                if r.last_terminated.is_some() {
                    stopped += 1;
                } else {
                    waiting += 1;
                }
            }
        }
    }
    if records.is_empty() {
        return "Pending";
    }
    if deleting && running == 0 && waiting == 0 {
        // A deleted pod whose containers are all gone is over for good.
        return if failed > 0 { "Failed" } else { "Succeeded" };
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped == records.len() {
        return match restart_policy {
            "Never" => {
                if failed > 0 {
                    "Failed"
                } else {
                    "Succeeded"
                }
            }
            "OnFailure" if stopped == succeeded => "Succeeded",
            _ => "Running",
        };
    }
    "Pending"
}

/// The QoS class from the containers' requests and limits.
pub fn qos_class(containers: &[Container]) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let res = c.resources.as_ref();
        let limits = res.and_then(|r| r.limits.as_ref());
        let requests = res.and_then(|r| r.requests.as_ref());
        if limits.is_some_and(|l| !l.is_empty()) || requests.is_some_and(|r| !r.is_empty()) {
            any = true;
        }
        for resource in ["cpu", "memory"] {
            let limit: Option<&Quantity> = limits.and_then(|l| l.get(resource));
            let request: Option<&Quantity> = requests.and_then(|r| r.get(resource)).or(limit);
            match (limit, request) {
                (Some(l), Some(r)) if l == r => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn time(ts: jiff::Timestamp) -> Time {
    // Kubernetes times have one-second precision on the wire.
    Time(jiff::Timestamp::from_second(ts.as_second()).unwrap_or(ts))
}

fn to_k8s_terminated(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: t.started_at.map(time),
        finished_at: Some(time(t.finished_at)),
        container_id: t.container_id.clone(),
        signal: None,
    }
}

fn container_status(r: &ContainerRecord) -> ContainerStatus {
    let state = match &r.state {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        State::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(*started_at)),
            }),
            ..Default::default()
        },
        State::Terminated(t) => ContainerState {
            terminated: Some(to_k8s_terminated(t)),
            ..Default::default()
        },
    };
    let running = r.is_running();
    ContainerStatus {
        name: r.name.clone(),
        image: r.image.clone(),
        image_id: r.image_id.clone().unwrap_or_default(),
        container_id: if matches!(r.state, State::Waiting { .. }) && r.last_terminated.is_none() {
            None
        } else {
            r.container_id.clone()
        },
        ready: r.is_ready(),
        started: Some(running && r.started),
        restart_count: r.restart_count,
        state: Some(state),
        last_state: Some(ContainerState {
            terminated: r.last_terminated.as_ref().map(to_k8s_terminated),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Inputs of [`pod_status`] beyond the container records.
#[derive(Debug, Clone)]
pub struct StatusContext<'a> {
    /// The pod as last seen (for its spec and its previous status).
    pub pod: &'a Pod,
    /// The status last reported, when newer than the pod's.
    pub previous: Option<&'a PodStatus>,
    /// The node's IP (pods share the node's network).
    pub host_ip: &'a str,
    /// When the kubelet first saw the pod.
    pub start_time: jiff::Timestamp,
    /// Whether the pod is being deleted.
    pub deleting: bool,
    /// Now.
    pub now: jiff::Timestamp,
}

fn init_succeeded(r: &ContainerRecord) -> bool {
    matches!(&r.state, State::Terminated(t) if t.exit_code == 0)
}

/// The pod phase with init containers: Pending until they all succeeded,
/// Failed if one failed for good.
pub fn phase_with_init(
    restart_policy: &str,
    init: &[ContainerRecord],
    records: &[ContainerRecord],
    deleting: bool,
) -> &'static str {
    let init_failed = init
        .iter()
        .any(|r| matches!(&r.state, State::Terminated(t) if t.exit_code != 0));
    if init_failed && (restart_policy == "Never" || deleting) {
        return "Failed";
    }
    if !init.iter().all(init_succeeded) {
        return if deleting { "Failed" } else { "Pending" };
    }
    phase(restart_policy, records, deleting)
}

/// The full status to report for a pod: `init` are its init containers'
/// records, `records` its containers'.
pub fn pod_status(
    ctx: &StatusContext<'_>,
    init: &[ContainerRecord],
    records: &[ContainerRecord],
) -> PodStatus {
    let spec = ctx.pod.spec.as_ref();
    let restart_policy = spec
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let phase = phase_with_init(restart_policy, init, records, ctx.deleting);
    let incomplete: Vec<&str> = init
        .iter()
        .filter(|r| !init_succeeded(r))
        .map(|r| r.name.as_str())
        .collect();
    let previous = ctx.previous.or(ctx.pod.status.as_ref());
    let unready: Vec<&str> = records
        .iter()
        .filter(|r| !r.is_ready())
        .map(|r| r.name.as_str())
        .collect();
    let all_ready = unready.is_empty() && !records.is_empty();
    let terminal = phase == "Succeeded" || phase == "Failed";
    let (ready_reason, ready_message) = if all_ready {
        (None, None)
    } else if terminal {
        (Some("PodCompleted".to_string()), None)
    } else {
        (
            Some("ContainersNotReady".to_string()),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let bool_str = |b: bool| if b { "True" } else { "False" }.to_string();
    let mut conditions = vec![
        PodCondition {
            type_: "PodReadyToStartContainers".into(),
            status: bool_str(!terminal || !ctx.deleting),
            ..Default::default()
        },
        if incomplete.is_empty() {
            PodCondition {
                type_: "Initialized".into(),
                status: "True".into(),
                reason: (terminal && init.is_empty()).then(|| "PodCompleted".to_string()),
                ..Default::default()
            }
        } else {
            PodCondition {
                type_: "Initialized".into(),
                status: "False".into(),
                reason: Some("ContainersNotInitialized".into()),
                message: Some(format!(
                    "containers with incomplete status: [{}]",
                    incomplete.join(" ")
                )),
                ..Default::default()
            }
        },
        PodCondition {
            type_: "Ready".into(),
            status: bool_str(all_ready),
            reason: ready_reason.clone(),
            message: ready_message.clone(),
            ..Default::default()
        },
        PodCondition {
            type_: "ContainersReady".into(),
            status: bool_str(all_ready),
            reason: ready_reason,
            message: ready_message,
            ..Default::default()
        },
        PodCondition {
            type_: "PodScheduled".into(),
            status: "True".into(),
            ..Default::default()
        },
    ];
    let old_conditions = previous.and_then(|s| s.conditions.as_ref());
    for c in &mut conditions {
        let old = old_conditions.and_then(|old| old.iter().find(|o| o.type_ == c.type_));
        // A condition's transition time moves only when its status does.
        c.last_transition_time = match old {
            Some(o) if o.status == c.status => o
                .last_transition_time
                .clone()
                .or_else(|| Some(time(ctx.now))),
            _ => Some(time(ctx.now)),
        };
        c.last_probe_time = None;
    }
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        host_ip: Some(ctx.host_ip.to_string()),
        host_ips: Some(vec![k8s_openapi::api::core::v1::HostIP {
            ip: ctx.host_ip.to_string(),
        }]),
        pod_ip: Some(ctx.host_ip.to_string()),
        pod_ips: Some(vec![k8s_openapi::api::core::v1::PodIP {
            ip: ctx.host_ip.to_string(),
        }]),
        start_time: Some(time(ctx.start_time)),
        container_statuses: Some(records.iter().map(container_status).collect()),
        init_container_statuses: (!init.is_empty()).then(|| {
            init.iter()
                .map(|r| {
                    let mut s = container_status(r);
                    // An init container is ready once it succeeded.
                    s.ready = init_succeeded(r);
                    s.started = Some(r.is_running());
                    s
                })
                .collect()
        }),
        qos_class: Some(
            qos_class(
                &spec
                    .map(|s| {
                        s.containers
                            .iter()
                            .chain(s.init_containers.iter().flatten())
                            .cloned()
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default(),
            )
            .to_string(),
        ),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
    use std::collections::BTreeMap;

    fn ts(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    fn record(state: State, last: Option<i32>) -> ContainerRecord {
        ContainerRecord {
            name: "c".into(),
            image: "hello:v1".into(),
            image_id: None,
            container_id: Some("wasm://u-c-0".into()),
            restart_count: 0,
            state,
            last_terminated: last.map(|code| Terminated {
                exit_code: code,
                reason: "Error".into(),
                message: None,
                started_at: None,
                finished_at: ts(1),
                container_id: None,
            }),
            started: true,
            ready: true,
        }
    }

    fn terminated(code: i32) -> State {
        State::Terminated(Terminated {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: Some(ts(1)),
            finished_at: ts(2),
            container_id: None,
        })
    }

    fn waiting(reason: &str) -> State {
        State::Waiting {
            reason: reason.into(),
            message: None,
        }
    }

    #[test]
    fn phases_follow_the_kubelet_rules() {
        let running = State::Running { started_at: ts(1) };
        assert_eq!(
            phase(
                "Always",
                &[record(waiting("ContainerCreating"), None)],
                false
            ),
            "Pending"
        );
        assert_eq!(phase("Always", &[record(running, None)], false), "Running");
        assert_eq!(
            phase("Never", &[record(terminated(0), None)], false),
            "Succeeded"
        );
        assert_eq!(
            phase("Never", &[record(terminated(3), None)], false),
            "Failed"
        );
        assert_eq!(
            phase("OnFailure", &[record(terminated(0), None)], false),
            "Succeeded"
        );
        // Crash-looping containers keep the pod Running.
        assert_eq!(
            phase(
                "Always",
                &[record(waiting("CrashLoopBackOff"), Some(1))],
                false
            ),
            "Running"
        );
        assert_eq!(
            phase(
                "OnFailure",
                &[record(waiting("CrashLoopBackOff"), Some(1))],
                false
            ),
            "Running"
        );
        assert_eq!(
            phase("Always", &[record(terminated(137), None)], true),
            "Failed"
        );
    }

    #[test]
    fn restart_policy_decides_restarts() {
        assert!(should_restart("Always", 0));
        assert!(should_restart("OnFailure", 2));
        assert!(!should_restart("OnFailure", 0));
        assert!(!should_restart("Never", 1));
    }

    #[test]
    fn backoff_doubles_to_five_minutes_and_resets() {
        let short = Duration::from_secs(1);
        let mut delays = Vec::new();
        let mut prev = None;
        for _ in 0..8 {
            let d = next_backoff(prev, short);
            delays.push(go_duration(d));
            prev = Some(d);
        }
        assert_eq!(
            delays,
            ["0s", "10s", "20s", "40s", "1m20s", "2m40s", "5m0s", "5m0s"]
        );
        assert_eq!(
            next_backoff(Some(MAX_BACKOFF), BACKOFF_RESET),
            Duration::ZERO
        );
    }

    #[test]
    fn configured_backoff_doubles_to_its_max_and_resets_after_twice_it() {
        let b = RestartBackoff::new(Duration::from_millis(500), Duration::from_secs(4));
        let short = Duration::from_millis(100);
        let mut delays = Vec::new();
        let mut prev = None;
        for _ in 0..6 {
            let d = b.next(prev, short);
            delays.push(d.as_millis());
            prev = Some(d);
        }
        assert_eq!(delays, [0, 500, 1000, 2000, 4000, 4000]);
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(b.reset_after, Duration::from_secs(8));
        assert_eq!(b.next(prev, Duration::from_secs(8)), Duration::ZERO);
        assert_eq!(b.next(prev, Duration::from_secs(7)), Duration::from_secs(4));
        // A first delay above the max is capped by it.
        let capped = RestartBackoff::new(Duration::from_secs(10), Duration::from_secs(2));
        assert_eq!(
            capped.next(Some(Duration::ZERO), short),
            Duration::from_secs(2)
        );
        assert_eq!(
            RestartBackoff::default(),
            RestartBackoff::new(INITIAL_BACKOFF, MAX_BACKOFF)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_delay_is_waited_in_paused_time() {
        // The worker sleeps until `finished + delay`; with paused time the
        // clock jumps exactly by the back-off.
        let start = tokio::time::Instant::now();
        let delay = next_backoff(Some(INITIAL_BACKOFF), Duration::from_secs(1));
        tokio::time::sleep_until(start + delay).await;
        assert_eq!(start.elapsed(), Duration::from_secs(20));
    }

    #[test]
    fn backoff_message_names_container_and_pod() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("p".into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.uid = Some("u1".into());
        assert_eq!(
            backoff_message(Duration::from_secs(20), "c", &pod),
            "back-off 20s restarting failed container=c pod=p_default(u1)"
        );
    }

    #[test]
    fn termination_reasons() {
        assert_eq!(termination(&ExitStatus::Exited(0)), (0, "Completed", None));
        assert_eq!(termination(&ExitStatus::Exited(3)), (3, "Error", None));
        assert_eq!(
            termination(&ExitStatus::OutOfMemory),
            (137, "OOMKilled", None)
        );
        let (code, reason, msg) = termination(&ExitStatus::Trapped("wasm trap: x".into()));
        assert_eq!(
            (code, reason, msg.as_deref()),
            (1, "Error", Some("wasm trap: x"))
        );
    }

    #[test]
    fn qos_classes() {
        let mut c = Container {
            name: "c".into(),
            ..Default::default()
        };
        assert_eq!(qos_class(std::slice::from_ref(&c)), "BestEffort");
        let limits: BTreeMap<String, Quantity> = [
            ("cpu".to_string(), Quantity("1".into())),
            ("memory".to_string(), Quantity("64Mi".into())),
        ]
        .into();
        c.resources = Some(ResourceRequirements {
            limits: Some(limits),
            ..Default::default()
        });
        assert_eq!(qos_class(std::slice::from_ref(&c)), "Guaranteed");
        c.resources = Some(ResourceRequirements {
            requests: Some([("memory".to_string(), Quantity("1Mi".into()))].into()),
            ..Default::default()
        });
        assert_eq!(qos_class(std::slice::from_ref(&c)), "Burstable");
    }

    #[test]
    fn status_conditions_and_transition_times() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("hello:v1".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let ctx = StatusContext {
            pod: &pod,
            previous: None,
            host_ip: "10.0.0.1",
            start_time: ts(10),
            deleting: false,
            now: ts(20),
        };
        let pending = pod_status(&ctx, &[], &[record(waiting("ContainerCreating"), None)]);
        assert_eq!(pending.phase.as_deref(), Some("Pending"));
        let conds = pending.conditions.clone().unwrap_or_default();
        let ready = conds.iter().find(|c| c.type_ == "Ready");
        assert_eq!(ready.map(|c| c.status.as_str()), Some("False"));
        assert_eq!(
            ready.and_then(|c| c.message.as_deref()),
            Some("containers with unready status: [c]")
        );
        let mut pod = pod.clone();
        pod.status = Some(pending);
        let ctx = StatusContext {
            pod: &pod,
            previous: None,
            host_ip: "10.0.0.1",
            start_time: ts(10),
            deleting: false,
            now: ts(30),
        };
        let running = pod_status(
            &ctx,
            &[],
            &[record(State::Running { started_at: ts(25) }, None)],
        );
        let conds = running.conditions.unwrap_or_default();
        let get = |t: &str| {
            conds
                .iter()
                .find(|c| c.type_ == t)
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(get("Ready").status, "True");
        assert_eq!(get("Ready").last_transition_time, Some(time(ts(30))));
        // Unchanged conditions keep their transition time.
        assert_eq!(get("PodScheduled").last_transition_time, Some(time(ts(20))));
        assert_eq!(running.pod_ip.as_deref(), Some("10.0.0.1"));
        let cs = running.container_statuses.unwrap_or_default();
        assert!(cs[0].ready);
        assert_eq!(cs[0].started, Some(true));
    }
}
