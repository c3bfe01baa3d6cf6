//! wasmkube-runtime: the kubelet of a wasmkube node.
//!
//! Like any Kubernetes kubelet it is an API client and nothing more: it
//! registers its Node, renews its Lease, watches the pods bound to it, runs
//! each container as a WASI instance in wasmtime (a preview 1 module or a
//! WASI 0.2 component), writes their output to per-container log files,
//! reports pod status and events, and serves the logs over HTTP for
//! `kubectl logs`. It reaches cluster state only through `kube::Client`.
//!
//! Modules: [`sandbox`] (the engine seam and wasmtime), [`compile_cache`]
//! (compiled code on disk), [`module_cache`] (pulling modules; [`oci`] for registries), [`logs`],
//! [`node`], [`lease`], [`pod_worker`], [`probes`] (startup, liveness and
//! readiness probes; `exec` runs the container's own module), [`status`]
//! (pure status rules),
//! [`events`], [`server`] (kubelet HTTP), [`stats`] (CPU and memory figures
//! for `kubectl top`), [`volumes`] (emptyDir, configMap, secret and hostPath
//! volumes as preopened directories), [`proxy`] (the node proxy: Services
//! by Host header on the proxy port and on NodePorts, forwarded between
//! nodes).

pub mod compile_cache;
pub mod component_logs;
pub mod events;
pub mod http;
pub mod lease;
pub mod local_state;
pub mod logs;
pub mod mirror;
pub mod module_cache;
pub mod node;
pub mod oci;
pub mod pod_worker;
pub mod probes;
pub mod proxy;
pub mod sandbox;
pub mod server;
pub mod stats;
pub mod status;
pub mod tunnel;
pub mod volumes;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::events::EventRecorder;
use crate::logs::LogRegistry;
use crate::module_cache::{ModuleCache, ModuleCacheConfig};
use crate::node::NodeFacts;
use crate::pod_worker::{KubePodApi, WorkerContext};
use crate::sandbox::{SandboxConfig, WasmtimeSandbox};

/// Kubelet errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Files under the data directory, or the HTTP listener.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The apiserver refused or failed a request the kubelet cannot do without.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// wasmtime could not be set up.
    #[error("setting up the sandbox: {0}")]
    Sandbox(#[from] sandbox::SandboxError),
    /// A kubelet task panicked.
    #[error("kubelet task failed: {0}")]
    Task(String),
    /// The node proxy could not be set up.
    #[error(transparent)]
    Proxy(#[from] proxy::ProxyError),
}

/// Kubelet settings.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// The Node's name.
    pub node_name: String,
    /// Where modules, logs, volumes and the compilation cache live.
    pub data_dir: PathBuf,
    /// The node's address (InternalIP, and every pod's IP).
    pub node_ip: IpAddr,
    /// Address the node proxy (proxy port, NodePorts) and, unless
    /// `kubelet_bind_address` says otherwise, the kubelet HTTP server bind.
    pub bind_address: IpAddr,
    /// Where the kubelet's own HTTP endpoint (logs, stats) listens, when it
    /// should differ from `bind_address`: an agent serves it to the API
    /// server through its tunnel and keeps it on loopback, off the network.
    pub kubelet_bind_address: Option<IpAddr>,
    /// Kubelet HTTP port; 0 picks a free one (reported in the Node).
    pub port: u16,
    /// The node proxy's HTTP port (Services by Host header, and requests
    /// from other nodes' proxies); 0 picks a free one (published in the
    /// Node's `wasmkube.io/proxy-port` annotation).
    pub proxy_port: u16,
    /// Pod capacity.
    pub max_pods: u32,
    /// CPU capacity in cores (detected from the host by default).
    pub cpu_capacity: u32,
    /// Memory capacity in bytes (detected from the host by default).
    pub memory_capacity: u64,
    /// Memory kept for the system (capacity − this = allocatable).
    pub system_reserved_memory: u64,
    /// `leaseDurationSeconds` of the node Lease.
    pub lease_duration: Duration,
    /// How often the Lease is renewed.
    pub renew_interval: Duration,
    /// How often the Node status heartbeat is written.
    pub status_update_interval: Duration,
    /// Cap of one container log file.
    pub max_log_bytes: u64,
    /// Crash-loop back-off (Kubernetes' 10 s doubling to 5 min by default).
    pub restart_backoff: status::RestartBackoff,
    /// Use wasmtime's pooling allocator when possible.
    pub pooling: bool,
    /// Cap of the node's module cache (`<data>/modules`); unused modules
    /// are evicted least recently used first.
    pub module_cache_max_bytes: u64,
    /// Image pulls running at once.
    pub max_parallel_image_pulls: usize,
    /// PEM bundle of extra CAs trusted for HTTPS registries.
    pub registry_ca: Option<PathBuf>,
    /// Directories below which hostPath volumes may be mounted
    /// (`--allow-host-path`); empty, the default, refuses every hostPath.
    pub allowed_host_paths: Vec<PathBuf>,
    /// Upper bound on how long a ConfigMap or Secret change takes to reach
    /// the mounted files; also paces the `emptyDir.sizeLimit` check.
    pub volume_sync_interval: Duration,
    /// Cap of the on-disk cache of compiled modules (`<data>/compiled`).
    pub compiled_cache_max_bytes: u64,
    /// The process's other components (apiserver, scheduler, …), published
    /// with the node's own agent as mirror pods in `kube-system`.
    pub components: Vec<mirror::Component>,
}

impl KubeletConfig {
    /// Defaults for a node named `node_name` keeping its files in `data_dir`:
    /// loopback addresses, port 10250, 110 pods, host CPU and memory.
    pub fn new(node_name: impl Into<String>, data_dir: impl Into<PathBuf>) -> KubeletConfig {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        KubeletConfig {
            node_name: node_name.into(),
            data_dir: data_dir.into(),
            node_ip: loopback,
            bind_address: loopback,
            kubelet_bind_address: None,
            port: 10250,
            proxy_port: proxy::DEFAULT_PROXY_PORT,
            max_pods: 110,
            cpu_capacity: node::host_cpus(),
            memory_capacity: node::host_memory().unwrap_or(4 << 30),
            system_reserved_memory: 0,
            lease_duration: Duration::from_secs(40),
            renew_interval: Duration::from_secs(10),
            status_update_interval: Duration::from_secs(10),
            max_log_bytes: logs::DEFAULT_MAX_LOG_BYTES,
            restart_backoff: status::RestartBackoff::default(),
            pooling: true,
            module_cache_max_bytes: module_cache::DEFAULT_MAX_CACHE_BYTES,
            max_parallel_image_pulls: module_cache::DEFAULT_MAX_PARALLEL_PULLS,
            registry_ca: None,
            allowed_host_paths: Vec::new(),
            volume_sync_interval: volumes::DEFAULT_SYNC_INTERVAL,
            compiled_cache_max_bytes: compile_cache::DEFAULT_MAX_BYTES,
            components: Vec::new(),
        }
    }
}

/// A started kubelet.
#[derive(Debug)]
pub struct Kubelet {
    /// Where the kubelet HTTP server listens.
    pub addr: SocketAddr,
    /// Where the node proxy's HTTP port listens.
    pub proxy_addr: SocketAddr,
    /// The kubelet's HTTP routes (what `addr` serves), for the agent's
    /// dial-out tunnel (`tunnel::run`) to serve as well.
    pub router: axum::Router,
    /// Ends when the kubelet has stopped (after `shutdown`).
    pub done: JoinHandle<Result<(), Error>>,
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        what: what.to_string(),
        source,
    }
}

/// How long `start` waits for the first registration attempt before it
/// leaves registration to the background.
const FIRST_REGISTRATION_WAIT: Duration = Duration::from_secs(10);

/// Starts the kubelet: binds its HTTP server, registers the Node, and runs
/// the lease, heartbeat and pod loops in tasks until `shutdown`. Pods
/// stored in `<data>/state` start at once; when the apiserver cannot be
/// reached, registration, lease and heartbeats keep retrying in the
/// background (an apiserver that answers and refuses the node fails the
/// start, as it always did).
pub async fn start(
    config: KubeletConfig,
    client: kube::Client,
    shutdown: CancellationToken,
) -> Result<Kubelet, Error> {
    for sub in ["modules", "pods", "compiled"] {
        tokio::fs::create_dir_all(config.data_dir.join(sub))
            .await
            .map_err(io("creating the data directory"))?;
    }
    // wasmtime's own compilation cache lived here before compiled modules
    // moved to `compiled/` (capped, evicted); nothing reads it any more.
    let _ = tokio::fs::remove_dir_all(config.data_dir.join("cache")).await;
    let kubelet_bind = config.kubelet_bind_address.unwrap_or(config.bind_address);
    let listener = tokio::net::TcpListener::bind((kubelet_bind, config.port))
        .await
        .map_err(io("binding the kubelet port"))?;
    let addr = listener
        .local_addr()
        .map_err(io("binding the kubelet port"))?;
    let proxy_listener = tokio::net::TcpListener::bind((config.bind_address, config.proxy_port))
        .await
        .map_err(io("binding the proxy port"))?;
    let proxy_addr = proxy_listener
        .local_addr()
        .map_err(io("binding the proxy port"))?;

    let sandbox_config = SandboxConfig {
        compiled_cache_dir: Some(config.data_dir.join("compiled")),
        compiled_cache_max_bytes: config.compiled_cache_max_bytes,
        // A few containers per pod on average.
        max_instances: config.max_pods.saturating_mul(4).max(16),
        pooling: config.pooling,
        ..Default::default()
    };
    let sandbox = tokio::task::spawn_blocking(move || WasmtimeSandbox::new(&sandbox_config))
        .await
        .map_err(|e| Error::Task(e.to_string()))??;

    let (max_pods, map_limit) = node::pod_capacity(config.max_pods, node::max_map_count());
    if let Some(limit) = map_limit {
        tracing::warn!(
            asked = config.max_pods,
            capacity = max_pods,
            max_map_count = limit,
            "the node takes fewer pods than --max-pods asks: vm.max_map_count allows {max_pods} \
             at up to {} memory maps each; raise it (sysctl -w vm.max_map_count=…) for more",
            node::MAPS_PER_POD
        );
    }
    let facts = NodeFacts {
        name: config.node_name.clone(),
        ip: config.node_ip,
        port: addr.port(),
        proxy_port: proxy_addr.port(),
        cpu: config.cpu_capacity,
        memory: config.memory_capacity,
        reserved_memory: config.system_reserved_memory,
        max_pods,
        kernel_version: node::kernel_version(),
    };
    let since = jiff::Timestamp::now();
    // A node must come up with its pods when the apiserver is unreachable
    // (an edge device rebooting offline): only an answer refusing the node
    // stops the start; otherwise registration goes on in the background.
    let registered = match tokio::time::timeout(
        FIRST_REGISTRATION_WAIT,
        node::register(&client, &facts, since),
    )
    .await
    {
        Ok(Ok(node)) => {
            tracing::info!(node = %config.node_name, %addr, pooled = sandbox.is_pooled(), "kubelet registered");
            Some(node.metadata.uid)
        }
        Ok(Err(source)) if !local_state::is_unreachable(&source) => {
            return Err(Error::Api {
                what: format!("registering node {}", config.node_name),
                source,
            });
        }
        Ok(Err(e)) => {
            tracing::warn!(node = %config.node_name, %addr, error = %e, "the apiserver is unreachable: starting from local state, registering in the background");
            None
        }
        Err(_) => {
            tracing::warn!(node = %config.node_name, %addr, "the apiserver does not answer: starting from local state, registering in the background");
            None
        }
    };
    let state_config = local_state::LocalStateConfig::new(config.data_dir.join("state"));
    let local = tokio::task::spawn_blocking(move || local_state::LocalState::open(state_config))
        .await
        .map_err(|e| Error::Task(e.to_string()))?
        .map_err(|e| Error::Io {
            what: "opening the local state".into(),
            source: std::io::Error::other(e.to_string()),
        })?;

    let mut module_cache_config = ModuleCacheConfig::new(config.data_dir.join("modules"));
    module_cache_config.max_bytes = config.module_cache_max_bytes;
    module_cache_config.max_parallel_pulls = config.max_parallel_image_pulls;
    if let Some(path) = &config.registry_ca {
        let pem = tokio::fs::read(path)
            .await
            .map_err(io("reading the registry CA bundle"))?;
        let registry = oci::RegistryOptions {
            extra_ca_pem: Some(Arc::new(pem)),
            ..Default::default()
        };
        registry.check().map_err(|e| Error::Io {
            what: format!("registry CA bundle {}", path.display()),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        })?;
        module_cache_config.registry = registry;
    }

    let logs = Arc::new(LogRegistry::default());
    // The node's HTTP containers: pod workers register them, the kubelet
    // route and the node proxy serve them.
    let http_pods = http::HttpPods::new();
    let stats = Arc::new(stats::StatsRegistry::new(
        config.node_name.clone(),
        stats::StatsOptions::default(),
    ));
    let ctx = Arc::new(WorkerContext {
        node_name: config.node_name.clone(),
        node_ip: config.node_ip.to_string(),
        pods_dir: config.data_dir.join("pods"),
        sandbox: Arc::new(sandbox),
        modules: Arc::new(ModuleCache::new(client.clone(), module_cache_config)),
        api: Arc::new(KubePodApi::with_local_state(client.clone(), local.clone())),
        events: Arc::new(EventRecorder::start(
            client.clone(),
            config.node_name.clone(),
            shutdown.clone(),
        )),
        logs: logs.clone(),
        volumes: Arc::new(volumes::VolumeManager::new(volumes::VolumeConfig {
            allowed_host_paths: config.allowed_host_paths.clone(),
            sync_interval: config.volume_sync_interval,
            ..volumes::VolumeConfig::new(config.node_name.clone(), &config.data_dir)
        })),
        stats: stats.clone(),
        http: http_pods.clone(),
        max_log_bytes: config.max_log_bytes,
        restart_backoff: config.restart_backoff,
    });

    let node_loops = tokio::spawn(node::run(
        client.clone(),
        facts,
        since,
        registered,
        node::NodeTiming {
            lease_duration: config.lease_duration,
            renew_interval: config.renew_interval,
            status_update_interval: config.status_update_interval,
        },
        shutdown.clone(),
    ));
    // The node proxy: Services reach this node's HTTP containers through
    // it, and its guests' calls to `<svc>.<ns>` leave through it.
    let node_proxy = proxy::Proxy::new(
        proxy::ProxyOptions::new(config.node_name.clone(), config.bind_address),
        http_pods.clone(),
    )?;
    http_pods.set_router(Arc::new(node_proxy.clone()));
    let node_proxy = proxy::start(node_proxy, client.clone(), proxy_listener, shutdown.clone())
        .map_err(io("starting the node proxy"))?;
    let mirror_client = client.clone();
    let pods = tokio::spawn(pod_worker::run_pods(
        ctx,
        client,
        Some(local),
        shutdown.clone(),
    ));
    let sampler = tokio::spawn(stats::run_sampler(stats.clone(), shutdown.clone()));
    // The node's agent and the process's other components as mirror pods.
    let mut components = config.components.clone();
    components.push(mirror::Component::new(
        mirror::AGENT,
        mirror::Tier::Node,
        since,
        mirror::constant(mirror::Health::ready(None)),
    ));
    let mut mirror_config = mirror::MirrorConfig::new(
        config.node_name.clone(),
        config.node_ip.to_string(),
        components,
        config.data_dir.join("components"),
    );
    mirror_config.max_log_bytes = config.max_log_bytes;
    let mirrors = tokio::spawn(mirror::run(
        mirror_client,
        mirror_config,
        logs.clone(),
        shutdown.clone(),
    ));
    let router = server::router(logs, stats, http_pods);
    let server = tokio::spawn(server::serve_router(
        listener,
        router.clone(),
        shutdown.clone(),
    ));

    let done = tokio::spawn(async move {
        let served = server.await.map_err(|e| Error::Task(e.to_string()))?;
        let proxied = node_proxy
            .done
            .await
            .map_err(|e| Error::Task(e.to_string()))?;
        for task in [node_loops, pods, sampler, mirrors] {
            task.await.map_err(|e| Error::Task(e.to_string()))?;
        }
        served.map_err(io("serving kubelet HTTP"))?;
        proxied.map_err(io("serving the node proxy"))
    });
    Ok(Kubelet {
        addr,
        proxy_addr,
        router,
        done,
    })
}

/// Runs the kubelet until `shutdown` is cancelled.
pub async fn run(
    config: KubeletConfig,
    client: kube::Client,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let kubelet = start(config, client, shutdown).await?;
    kubelet.done.await.map_err(|e| Error::Task(e.to_string()))?
}
