//! `wasmkube server`: the all-in-one cluster.
//!
//! The components share a process but not state: each one gets its own
//! `kube::Client` with its own token and talks to the API server over HTTPS,
//! exactly as it would from another machine.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wasmkube_client::leader_election::{self, LeaderConfig};

use crate::kubeconfig;

/// What `wasmkube server` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub data_dir: Option<PathBuf>,
    pub bind_address: IpAddr,
    pub port: u16,
    pub write_kubeconfig: Option<PathBuf>,
    pub tls_sans: Vec<String>,
    pub node_name: Option<String>,
    pub no_node: bool,
    /// The key file encrypting Secrets at rest (`None`: the data dir's).
    pub encryption_provider_config: Option<PathBuf>,
    pub kubelet_port: u16,
    /// The built-in node's proxy port (0 picks a free one).
    pub proxy_port: u16,
    pub store: wasmkube_apiserver::StoreBackend,
    /// The built-in kubelet's crash-loop back-off.
    pub restart_backoff: wasmkube_runtime::status::RestartBackoff,
    /// The built-in kubelet's log rotation size.
    pub container_log_max_size: u64,
    /// Extra CA bundle the built-in kubelet trusts for registries.
    pub registry_ca: Option<PathBuf>,
    /// Cap of the built-in kubelet's module cache, in bytes.
    pub module_cache_max_size: u64,
    /// Cap of the built-in kubelet's compiled-module cache, in bytes.
    pub compiled_cache_max_size: u64,
    /// Image pulls the built-in kubelet runs at once.
    pub max_parallel_image_pulls: usize,
    /// The built-in node's pod capacity.
    pub max_pods: u32,
    /// Directories below which the built-in node mounts hostPath volumes.
    pub allow_host_paths: Vec<PathBuf>,
    /// Largest memory limit of one pod, in bytes (admission).
    pub max_pod_memory: Option<u64>,
    /// Largest CPU limit of one pod, in millicores (admission).
    pub max_pod_cpu: Option<u64>,
    /// The built-in node's Lease duration (renewed every quarter of it).
    pub node_lease_duration: Duration,
    /// How long a node may miss heartbeats before it is NotReady/Unknown.
    pub node_monitor_grace_period: Duration,
    /// How long untolerating pods stay on an unreachable node.
    pub pod_eviction_timeout: Duration,
    /// ServiceAccount token issuer, accepted audiences and longest lifetime.
    pub service_account_issuer: String,
    pub api_audiences: Vec<String>,
    pub service_account_max_token_expiration: Duration,
    /// The API server's request limits.
    pub api_limits: wasmkube_apiserver::limits::ApiLimits,
    /// The API server's audit log.
    pub audit: wasmkube_apiserver::audit::AuditConfig,
    /// How often the store's history is compacted, and how many revisions
    /// of it are kept for resuming watches.
    pub compaction_interval: Duration,
    pub compaction_keep_revisions: i64,
    /// Recent events per resource kept in the watch cache.
    pub watch_cache_size: usize,
    /// How long an Event lives after its last update.
    pub event_ttl: Duration,
    /// Components run as separate processes instead.
    pub components: crate::components::ServerComponentArgs,
}

/// The Leases (in `kube-system`) electing the one scheduler and the one
/// controller manager among the control planes (and separate
/// `wasmkube scheduler` / `controller-manager` processes); Kubernetes' names
/// with our prefix.
use crate::components::{
    CONTROLLER_MANAGER_LEASE, CONTROLLER_MANAGER_USER, SCHEDULER_LEASE, SCHEDULER_USER,
};

/// How long stopping may take before the process exits anyway.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// `~/.wasmkube` unless given.
pub(crate) fn data_dir(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = explicit {
        return Ok(d);
    }
    let home = std::env::var_os("HOME")
        .context("HOME is not set; pass --data-dir or set WASMKUBE_DATA_DIR")?;
    Ok(PathBuf::from(home).join(".wasmkube"))
}

/// A Node name from a hostname: lowercase, and only what a DNS-1123
/// subdomain allows.
pub fn node_name_from_hostname(host: &str) -> String {
    let cleaned: String = host
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| c == '-' || c == '.');
    if trimmed.is_empty() {
        "wasmkube-node".to_string()
    } else {
        trimmed.chars().take(253).collect()
    }
}

/// This host's name, cleaned up as a Node name.
pub(crate) fn hostname_or_default() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    node_name_from_hostname(&host)
}

/// Who this server is in leader election. On etcd, `<hostname>_<uuid>`
/// like Kubernetes: several control planes share the Leases. On the embedded
/// store only one process can serve the data dir, so the identity is fixed
/// per data dir: after a crash the restarted server is still the holder and
/// leads at once instead of waiting for its previous incarnation's lease to
/// expire.
fn election_identity(
    store: &wasmkube_apiserver::StoreBackend,
    data_dir: &std::path::Path,
) -> String {
    use sha2::Digest as _;
    let host = hostname_or_default();
    match store {
        wasmkube_apiserver::StoreBackend::Embedded => {
            let digest = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
            format!("{host}_{}", hex::encode(&digest[..8]))
        }
        _ => leader_election::identity(&host),
    }
}

async fn component_client(
    running: &wasmkube_apiserver::Running,
    user: &str,
) -> anyhow::Result<kube::Client> {
    let token = running
        .tokens
        .get(user)
        .with_context(|| format!("the API server has no token for {user}"))?;
    let config = kubeconfig::component_config(&running.url, &running.ca_pem, token).await?;
    kube::Client::try_from(config).with_context(|| format!("client for {user}"))
}

/// Cancels `token` on SIGINT or SIGTERM.
pub(crate) fn cancel_on_signals(token: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, stopping"),
            _ = int.recv() => tracing::info!("SIGINT received, stopping"),
            _ = token.cancelled() => return,
        }
        token.cancel();
    });
    Ok(())
}

/// The node is registered and its kubelet has reported Ready since `since`
/// (on a restart the Node object from the previous run already exists).
pub(crate) fn node_reports_since(node: &Node, since: jiff::Timestamp) -> bool {
    // Heartbeats have second precision.
    let since = since - jiff::SignedDuration::from_secs(1);
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            c.type_ == "Ready"
                && c.status == "True"
                && c.last_heartbeat_time.as_ref().is_some_and(|t| t.0 >= since)
        })
}

/// Polls until the API server is ready and (when running one) the node is
/// registered.
async fn wait_ready(
    client: kube::Client,
    node: Option<String>,
    since: jiff::Timestamp,
    shutdown: CancellationToken,
) -> bool {
    let mut interval = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = interval.tick() => {}
        }
        let readyz = http::Request::get("/readyz").body(Vec::new());
        let Ok(readyz) = readyz else { return false };
        if client.request_text(readyz).await.is_err() {
            continue;
        }
        match &node {
            None => return true,
            Some(name) => {
                let nodes: Api<Node> = Api::all(client.clone());
                if let Ok(Some(node)) = nodes.get_opt(name).await
                    && node_reports_since(&node, since)
                {
                    return true;
                }
            }
        }
    }
}

type Tasks = JoinSet<(&'static str, anyhow::Result<()>)>;

/// Starts the built-in node's kubelet.
fn spawn_kubelet(
    tasks: &mut Tasks,
    opts: &Options,
    data_dir: &std::path::Path,
    node_name: &str,
    client: kube::Client,
    token: CancellationToken,
    components: Vec<wasmkube_runtime::mirror::Component>,
) {
    let mut config = wasmkube_runtime::KubeletConfig::new(node_name, data_dir.join("node"));
    config.components = components;
    config.port = opts.kubelet_port;
    config.proxy_port = opts.proxy_port;
    config.restart_backoff = opts.restart_backoff;
    config.max_log_bytes = opts.container_log_max_size;
    config.registry_ca = opts.registry_ca.clone();
    config.module_cache_max_bytes = opts.module_cache_max_size;
    config.compiled_cache_max_bytes = opts.compiled_cache_max_size;
    config.max_parallel_image_pulls = opts.max_parallel_image_pulls;
    config.max_pods = opts.max_pods;
    config.allowed_host_paths = opts.allow_host_paths.clone();
    config.lease_duration = opts.node_lease_duration;
    config.renew_interval = opts.node_lease_duration / 4;
    tasks.spawn(async move {
        let r = wasmkube_runtime::run(config, client, token).await;
        ("kubelet", r.map_err(anyhow::Error::from))
    });
}

/// The control-plane components the built-in node publishes as mirror pods
/// in `kube-system`, each with its health probe (the datastore only when it
/// is embedded in this process, the scheduler and controller manager only
/// when they run in it).
fn mirror_components(
    opts: &Options,
    admin: kube::Client,
    identity: &str,
    started: jiff::Timestamp,
) -> Vec<wasmkube_runtime::mirror::Component> {
    use wasmkube_runtime::mirror::{self, Component, Tier};
    let ns = leader_election::DEFAULT_NAMESPACE;
    let mut list = vec![Component::new(
        mirror::APISERVER,
        Tier::ControlPlane,
        started,
        mirror::readyz_probe(admin.clone()),
    )];
    if matches!(opts.store, wasmkube_apiserver::StoreBackend::Embedded) {
        list.push(Component::new(
            mirror::DATASTORE,
            Tier::ControlPlane,
            started,
            mirror::store_probe(admin.clone()),
        ));
    }
    if !opts.components.disable_scheduler {
        list.push(Component::new(
            mirror::SCHEDULER,
            Tier::ControlPlane,
            started,
            mirror::leader_probe(admin.clone(), ns, SCHEDULER_LEASE, identity.to_string()),
        ));
    }
    if !opts.components.disable_controller_manager {
        list.push(Component::new(
            mirror::CONTROLLER_MANAGER,
            Tier::ControlPlane,
            started,
            mirror::leader_probe(admin, ns, CONTROLLER_MANAGER_LEASE, identity.to_string()),
        ));
    }
    list
}

/// Runs the cluster until SIGINT/SIGTERM.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let started = jiff::Timestamp::now();
    // The process's logs, by component, become its mirror pods' logs.
    wasmkube_runtime::component_logs::activate(wasmkube_runtime::mirror::APISERVER);
    let data_dir = data_dir(opts.data_dir.clone())?;
    let node_name = opts
        .node_name
        .clone()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(hostname_or_default);
    let node_user = format!("system:node:{node_name}");
    // `shutdown` is the request to stop (signals, a failed component);
    // components stop first on their own token, then the API server on
    // another, so their last writes (node status, events) still land.
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone())?;
    let api_shutdown = CancellationToken::new();
    let components = CancellationToken::new();

    let mut component_users = vec![
        SCHEDULER_USER.to_string(),
        CONTROLLER_MANAGER_USER.to_string(),
    ];
    if !opts.no_node {
        component_users.push(node_user.clone());
    }
    let config = wasmkube_apiserver::Config {
        data_dir: data_dir.clone(),
        bind_address: opts.bind_address,
        port: opts.port,
        write_kubeconfig: opts.write_kubeconfig.clone(),
        tls_sans: opts.tls_sans.clone(),
        component_users,
        store: opts.store.clone(),
        service_account_issuer: opts.service_account_issuer.clone(),
        api_audiences: opts.api_audiences.clone(),
        service_account_max_token_expiration: opts.service_account_max_token_expiration,
        api_limits: opts.api_limits.clone(),
        audit: opts.audit.clone(),
        encryption_provider_config: opts.encryption_provider_config.clone(),
        compaction_interval: opts.compaction_interval,
        compaction_keep_revisions: opts.compaction_keep_revisions,
        watch_cache_size: opts.watch_cache_size,
        event_ttl: opts.event_ttl,
        // The built-in node's hostPath directories are also what admission
        // lets pods ask for.
        admission: wasmkube_apiserver::admission::Policy {
            allowed_host_paths: opts.allow_host_paths.clone(),
            max_pod_memory: opts.max_pod_memory,
            max_pod_cpu: opts.max_pod_cpu,
            ..Default::default()
        },
        ..Default::default()
    };
    let running = wasmkube_apiserver::start(config, api_shutdown.clone())
        .await
        .context("starting the API server")?;
    tracing::info!(url = %running.url, data_dir = %data_dir.display(), "API server listening");
    println!("API server: {}", running.url);
    println!("kubeconfig: {}", running.kubeconfig_path.display());
    if let Some(extra) = &opts.write_kubeconfig {
        println!("kubeconfig also written to {}", extra.display());
    }
    println!("export KUBECONFIG={}", running.kubeconfig_path.display());
    // Credentials for `wasmkube scheduler` / `controller-manager` elsewhere.
    crate::components::write_component_kubeconfigs(&running, &data_dir).await?;

    let mut tasks: Tasks = JoinSet::new();

    // The scheduler and the controllers run only while this server holds
    // their Lease, so several control planes on one store run them once.
    let identity = election_identity(&opts.store, &data_dir);
    tracing::info!(%identity, "leader election identity");

    if !opts.components.disable_scheduler {
        let scheduler_client = component_client(&running, SCHEDULER_USER).await?;
        let lease = LeaderConfig::new(SCHEDULER_LEASE, identity.clone());
        let scheduler_config = wasmkube_scheduler::SchedulerConfig {
            instance: identity.clone(),
            ..Default::default()
        };
        let token = components.clone();
        tasks.spawn(async move {
            let client = scheduler_client.clone();
            let r = leader_election::run_while_leader(client, lease, token, |led| {
                wasmkube_scheduler::run(scheduler_client.clone(), scheduler_config.clone(), led)
            })
            .await;
            ("scheduler", r.map_err(anyhow::Error::from))
        });
    }

    if !opts.components.disable_controller_manager {
        let controllers_client = component_client(&running, CONTROLLER_MANAGER_USER).await?;
        let lease = LeaderConfig::new(CONTROLLER_MANAGER_LEASE, identity.clone());
        let controllers_config = wasmkube_controllers::ControllersConfig {
            node_monitor_grace_period: opts.node_monitor_grace_period,
            pod_eviction_timeout: opts.pod_eviction_timeout,
            ..Default::default()
        };
        let token = components.clone();
        tasks.spawn(async move {
            let client = controllers_client.clone();
            let r = leader_election::run_while_leader(client, lease, token, |led| {
                wasmkube_controllers::run(
                    controllers_client.clone(),
                    controllers_config.clone(),
                    led,
                )
            })
            .await;
            ("controllers", r.map_err(anyhow::Error::from))
        });
    }

    let admin_config =
        kubeconfig::component_config(&running.url, &running.ca_pem, &running.admin_token).await?;
    let admin = kube::Client::try_from(admin_config).context("admin client")?;

    if !opts.no_node {
        let node_client = component_client(&running, &node_user).await?;
        let mirrored = mirror_components(&opts, admin.clone(), &identity, started);
        spawn_kubelet(
            &mut tasks,
            &opts,
            &data_dir,
            &node_name,
            node_client,
            components.clone(),
            mirrored,
        );
    }
    let ready_node = (!opts.no_node).then(|| node_name.clone());
    let ready = wait_ready(admin, ready_node.clone(), started, shutdown.clone());
    let mut ready = std::pin::pin!(ready);
    let mut announced = false;

    let mut failure: Option<anyhow::Error> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            ok = &mut ready, if !announced => {
                announced = true;
                if ok {
                    println!("wasmkube is ready");
                    match &ready_node {
                        Some(node) => tracing::info!(%node, "wasmkube is ready"),
                        None => tracing::info!("wasmkube is ready (no node: --no-node)"),
                    }
                }
            }
            // Without any in-process component (all run elsewhere) the
            // server only serves the API until it is told to stop.
            joined = tasks.join_next(), if !tasks.is_empty() => {
                let Some(joined) = joined else { break };
                let err = match joined {
                    Ok((name, Ok(()))) => anyhow::anyhow!("{name} stopped unexpectedly"),
                    Ok((name, Err(e))) => e.context(format!("{name} failed")),
                    Err(e) => anyhow::anyhow!("a component panicked: {e}"),
                };
                tracing::error!(error = %format!("{err:#}"), "stopping the cluster");
                failure = Some(err);
                shutdown.cancel();
                break;
            }
        }
    }

    components.cancel();
    let stop = async {
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((name, Err(e))) => {
                    tracing::warn!(component = name, error = %format!("{e:#}"), "stopped with an error")
                }
                Ok((name, Ok(()))) => tracing::info!(component = name, "stopped"),
                Err(e) => tracing::warn!(error = %e, "component task failed"),
            }
        }
        api_shutdown.cancel();
        if let Err(e) = running.done.await {
            tracing::warn!(error = %e, "API server task failed");
        }
    };
    if tokio::time::timeout(STOP_GRACE, stop).await.is_err() {
        bail!("components did not stop within {}s", STOP_GRACE.as_secs());
    }
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("wasmkube stopped");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_from_hostnames_are_valid() {
        assert_eq!(node_name_from_hostname("MyLaptop.local"), "mylaptop.local");
        assert_eq!(node_name_from_hostname("host_name"), "host-name");
        assert_eq!(node_name_from_hostname("-x-"), "x");
        assert_eq!(node_name_from_hostname(""), "wasmkube-node");
        assert_eq!(node_name_from_hostname("___"), "wasmkube-node");
    }

    #[test]
    fn readiness_needs_a_fresh_ready_heartbeat() {
        use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let at = |s: i64| jiff::Timestamp::from_second(s).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let node = |status: &str, beat: i64| Node {
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: status.into(),
                    last_heartbeat_time: Some(Time(at(beat))),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(node_reports_since(&node("True", 1000), at(1000)));
        assert!(node_reports_since(&node("True", 1000), at(1001)));
        assert!(!node_reports_since(&node("True", 900), at(1000)));
        assert!(!node_reports_since(&node("Unknown", 1000), at(1000)));
        assert!(!node_reports_since(&Node::default(), at(0)));
    }

    #[test]
    fn election_identities_are_stable_only_on_the_embedded_store() {
        use wasmkube_apiserver::StoreBackend;
        let dir = std::path::Path::new("/var/lib/wasmkube");
        let embedded = election_identity(&StoreBackend::Embedded, dir);
        assert_eq!(embedded, election_identity(&StoreBackend::Embedded, dir));
        assert_ne!(
            embedded,
            election_identity(&StoreBackend::Embedded, std::path::Path::new("/other"))
        );
        let etcd = StoreBackend::Etcd(Default::default());
        assert_ne!(election_identity(&etcd, dir), election_identity(&etcd, dir));
    }

    #[test]
    fn explicit_data_dir_wins() -> anyhow::Result<()> {
        assert_eq!(data_dir(Some("/d".into()))?, PathBuf::from("/d"));
        Ok(())
    }
}
