//! Node registration and status heartbeats.
//!
//! The kubelet creates its Node (or takes over the existing one of the same
//! name), reports capacity, addresses, the kubelet endpoint and node info,
//! and keeps the conditions' `lastHeartbeatTime` fresh with status patches.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;
use wasmkube_api::wasm::{LABEL_ARCH, LABEL_HOSTNAME, LABEL_OS, NODE_ARCH, NODE_OS};

/// The kubelet version reported in `nodeInfo`.
pub const KUBELET_VERSION: &str = "v1.33.0-wasmkube";
/// The runtime version reported in `nodeInfo`.
pub const RUNTIME_VERSION: &str = "wasmtime://48.0";

/// What the Node object says about this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// Node name.
    pub name: String,
    /// InternalIP.
    pub ip: IpAddr,
    /// Kubelet HTTP port.
    pub port: u16,
    /// The node proxy's port, published in the `wasmkube.io/proxy-port`
    /// annotation for other nodes' proxies.
    pub proxy_port: u16,
    /// CPU capacity in cores.
    pub cpu: u32,
    /// Memory capacity in bytes.
    pub memory: u64,
    /// Memory kept for the system.
    pub reserved_memory: u64,
    /// Pod capacity.
    pub max_pods: u32,
    /// `uname -r`, if known.
    pub kernel_version: String,
}

/// The labels of a wasmkube node.
pub fn labels(name: &str) -> BTreeMap<String, String> {
    [
        (LABEL_OS, NODE_OS),
        (LABEL_ARCH, NODE_ARCH),
        (LABEL_HOSTNAME, name),
        ("node.kubernetes.io/instance-type", "wasmkube"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    since: Time,
    now: Time,
) -> NodeCondition {
    NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now),
        last_transition_time: Some(since),
    }
}

/// The full node status. `since` is when the conditions last changed (the
/// kubelet's start), `now` the heartbeat.
pub fn node_status(facts: &NodeFacts, since: jiff::Timestamp, now: jiff::Timestamp) -> NodeStatus {
    let since = Time(since);
    let now = Time(now);
    let capacity: BTreeMap<String, Quantity> = [
        ("cpu".to_string(), Quantity(facts.cpu.to_string())),
        (
            "memory".to_string(),
            Quantity(format!("{}Ki", facts.memory / 1024)),
        ),
        ("pods".to_string(), Quantity(facts.max_pods.to_string())),
    ]
    .into();
    let allocatable_memory = facts.memory.saturating_sub(facts.reserved_memory);
    let allocatable: BTreeMap<String, Quantity> = [
        ("cpu".to_string(), Quantity(facts.cpu.to_string())),
        (
            "memory".to_string(),
            Quantity(format!("{}Ki", allocatable_memory / 1024)),
        ),
        ("pods".to_string(), Quantity(facts.max_pods.to_string())),
    ]
    .into();
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                since.clone(),
                now.clone(),
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
                since.clone(),
                now.clone(),
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                since.clone(),
                now.clone(),
            ),
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
                since,
                now,
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: facts.ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: facts.name.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(facts.port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: NODE_ARCH.into(),
            boot_id: String::new(),
            container_runtime_version: RUNTIME_VERSION.into(),
            kernel_version: facts.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: String::new(),
            operating_system: NODE_OS.into(),
            os_image: "wasmkube".into(),
            system_uuid: String::new(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Node's annotations the kubelet owns.
pub fn annotations(facts: &NodeFacts) -> BTreeMap<String, String> {
    BTreeMap::from([(
        crate::proxy::table::PROXY_PORT_ANNOTATION.to_string(),
        facts.proxy_port.to_string(),
    )])
}

/// Creates the Node or takes over the existing one, then writes its status.
pub async fn register(
    client: &kube::Client,
    facts: &NodeFacts,
    since: jiff::Timestamp,
) -> Result<Node, kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    match api.get_opt(&facts.name).await? {
        Some(_) => {
            let patch = serde_json::json!({
                "metadata": { "labels": labels(&facts.name), "annotations": annotations(facts) }
            });
            api.patch(&facts.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        None => {
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(facts.name.clone()),
                    labels: Some(labels(&facts.name)),
                    annotations: Some(annotations(facts)),
                    ..Default::default()
                },
                spec: Some(NodeSpec::default()),
                status: Some(node_status(facts, since, jiff::Timestamp::now())),
            };
            match api.create(&PostParams::default(), &node).await {
                Ok(_) => {}
                // Created concurrently (another start of the same node): take it over.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
    }
    heartbeat(client, facts, since).await
}

/// Writes the node status with a fresh heartbeat.
pub async fn heartbeat(
    client: &kube::Client,
    facts: &NodeFacts,
    since: jiff::Timestamp,
) -> Result<Node, kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let patch = serde_json::json!({ "status": node_status(facts, since, jiff::Timestamp::now()) });
    api.patch_status(&facts.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

/// Heartbeats every `interval` until `shutdown`; re-registers if the Node
/// was deleted.
pub async fn run_heartbeats(
    client: kube::Client,
    facts: NodeFacts,
    since: jiff::Timestamp,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match heartbeat(&client, &facts, since).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {
                if let Err(e) = register(&client, &facts, since).await {
                    tracing::warn!(error = %e, "re-registering the node failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "node heartbeat failed"),
        }
    }
}

/// How often the node's loops write.
#[derive(Debug, Clone, Copy)]
pub struct NodeTiming {
    /// `leaseDurationSeconds` of the node Lease.
    pub lease_duration: Duration,
    /// How often the Lease is renewed.
    pub renew_interval: Duration,
    /// How often the Node status heartbeat is written.
    pub status_update_interval: Duration,
}

/// The first wait between registration attempts while the apiserver is
/// unreachable; it doubles up to [`MAX_REGISTER_RETRY`].
const FIRST_REGISTER_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between registration attempts.
const MAX_REGISTER_RETRY: Duration = Duration::from_secs(30);

/// The node's API loops until `shutdown`: registers the Node first when
/// `registered_uid` is `None` (retrying with back-off for as long as it
/// takes: a kubelet runs its pods without the apiserver), then renews the
/// Lease and writes heartbeats.
pub async fn run(
    client: kube::Client,
    facts: NodeFacts,
    since: jiff::Timestamp,
    registered_uid: Option<Option<String>>,
    timing: NodeTiming,
    shutdown: CancellationToken,
) {
    let uid = match registered_uid {
        Some(uid) => uid,
        None => {
            let mut wait = FIRST_REGISTER_RETRY;
            loop {
                match register(&client, &facts, since).await {
                    Ok(node) => {
                        tracing::info!(node = %facts.name, "kubelet registered");
                        break node.metadata.uid;
                    }
                    Err(e) => {
                        tracing::warn!(node = %facts.name, error = %e, retry_in = ?wait, "registering the node failed");
                    }
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(MAX_REGISTER_RETRY);
            }
        }
    };
    tokio::join!(
        crate::lease::run(
            client.clone(),
            facts.name.clone(),
            uid,
            timing.lease_duration,
            timing.renew_interval,
            shutdown.clone(),
        ),
        run_heartbeats(
            client,
            facts,
            since,
            timing.status_update_interval,
            shutdown
        ),
    );
}

/// CPU cores of this host.
pub fn host_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// Total memory of this host in bytes (`MemTotal`), if known.
pub fn host_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&text)
}

fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// Memory maps (VMAs) one pod may take: an idle pod measured 6.5 with
/// on-demand instance allocation (its linear memory's reservation and
/// accessible part, its async stack and guard page, large host buffers);
/// rounded up for pods with more than one container or memory.
pub const MAPS_PER_POD: u64 = 8;
/// Maps kept for the rest of the process (code, threads, allocator, the
/// API server when it shares the process).
const MAPS_RESERVED: u64 = 4096;

/// The kernel's limit on one process's memory maps (`vm.max_map_count`),
/// if known.
pub fn max_map_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The pod capacity a node can keep: `max_pods`, or fewer when the kernel's
/// memory-map limit would run out first (past it, creating an instance,
/// a thread or an allocation fails anywhere in the process). Returns the
/// capacity and, when it was lowered, the limit that lowered it.
pub fn pod_capacity(max_pods: u32, max_map_count: Option<u64>) -> (u32, Option<u64>) {
    let Some(limit) = max_map_count else {
        return (max_pods, None);
    };
    let fits = limit.saturating_sub(MAPS_RESERVED) / MAPS_PER_POD;
    match u32::try_from(fits) {
        Ok(fits) if fits < max_pods => (fits.max(1), Some(limit)),
        _ => (max_pods, None),
    }
}

/// The host kernel's release, if known.
pub fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_capacity_stays_within_the_memory_map_limit() {
        // Debian's default limit: 65,530 maps hold 7,679 pods.
        assert_eq!(pod_capacity(10_010, Some(65_530)), (7_679, Some(65_530)));
        assert_eq!(pod_capacity(110, Some(65_530)), (110, None));
        assert_eq!(pod_capacity(10_010, Some(262_144)), (10_010, None));
        assert_eq!(pod_capacity(10_010, None), (10_010, None));
        // A tiny limit still leaves one pod.
        assert_eq!(pod_capacity(110, Some(100)), (1, Some(100)));
    }

    #[test]
    fn meminfo_is_parsed() {
        assert_eq!(
            parse_meminfo("MemTotal:       16303424 kB\nMemFree: 1 kB\n"),
            Some(16_303_424 * 1024)
        );
        assert_eq!(parse_meminfo("nothing"), None);
    }

    #[test]
    fn status_reports_ready_capacity_and_endpoint() {
        let facts = NodeFacts {
            name: "n1".into(),
            ip: IpAddr::from([127, 0, 0, 1]),
            port: 10250,
            proxy_port: 8080,
            cpu: 2,
            memory: 4 << 30,
            reserved_memory: 1 << 30,
            max_pods: 110,
            kernel_version: "6.1".into(),
        };
        let t = jiff::Timestamp::UNIX_EPOCH;
        let s = node_status(&facts, t, t);
        let ready = s
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .cloned()
            .unwrap_or_default();
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
        let alloc = s.allocatable.unwrap_or_default();
        assert_eq!(alloc.get("memory"), Some(&Quantity("3145728Ki".into())));
        assert_eq!(
            s.daemon_endpoints
                .and_then(|d| d.kubelet_endpoint)
                .map(|e| e.port),
            Some(10250)
        );
        assert_eq!(
            labels("n1").get("kubernetes.io/os").map(String::as_str),
            Some("wasip1")
        );
        assert_eq!(
            annotations(&facts)
                .get("wasmkube.io/proxy-port")
                .map(String::as_str),
            Some("8080")
        );
    }
}
