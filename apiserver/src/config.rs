//! The apiserver's configuration: everything `start` needs, with defaults
//! suitable for a single-machine install.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

/// How to run the API server. `Config::default()` is a working local setup;
/// the CLI overrides fields from flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory holding the store, the PKI, the token file and the kubeconfig.
    /// Created (mode 0700) on first start.
    pub data_dir: PathBuf,
    /// Address to listen on. Unspecified (`0.0.0.0`/`::`) serves every
    /// interface; the kubeconfig then points at `127.0.0.1`.
    pub bind_address: IpAddr,
    /// TCP port; `0` picks a free one (the real port is in `Running::url`).
    pub port: u16,
    /// Also write the admin kubeconfig here (besides `<data_dir>/kubeconfig`).
    pub write_kubeconfig: Option<PathBuf>,
    /// Extra subject alternative names (DNS names or IP addresses) for the
    /// serving certificate, e.g. the address agents use to reach the server.
    pub tls_sans: Vec<String>,
    /// Users that get their own token in `tokens.csv` besides `admin`
    /// (the scheduler, the controller manager, nodes…). Users named
    /// `system:node:<name>` are put in the `system:nodes` group.
    pub component_users: Vec<String>,
    /// Largest request body accepted on API routes (413 beyond).
    pub max_request_bytes: usize,
    /// Largest wasm module accepted by the module store (413 beyond).
    pub max_module_bytes: usize,
    /// When the module store's garbage collector runs, and how long a
    /// freshly pushed module is safe from it.
    pub module_gc: crate::modules::gc::GcOptions,
    /// How often the embedded store drops old revision history.
    pub compaction_interval: Duration,
    /// How many revisions of history the compactor keeps for watchers that
    /// resume from an older resourceVersion.
    pub compaction_keep_revisions: i64,
    /// Recent events per resource the watch cache keeps for watches that
    /// start in the past (kube-apiserver's `--default-watch-cache-size`).
    pub watch_cache_size: usize,
    /// How long an Event lives after its last update (kube-apiserver's
    /// `--event-ttl`); see [`crate::event_ttl`].
    pub event_ttl: Duration,
    /// Most TLS connections served at once; further clients wait in the
    /// accept backlog.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests (including watches)
    /// before closing their connections.
    pub shutdown_grace: Duration,
    /// Where objects are stored: the embedded file in `data_dir` (default)
    /// or an etcd cluster.
    pub store: StoreBackend,
    /// The admission policy: hostPath directories (`--allow-host-path`),
    /// per-pod maximums (`--max-pod-memory`, `--max-pod-cpu`).
    pub admission: crate::admission::Policy,
    /// kube-apiserver's `--encryption-provider-config`: the key file that
    /// encrypts Secrets at rest (see `storage::encryption`). `None` uses
    /// `<data_dir>/pki/encryption-keys.yaml`, created with a new key on
    /// first start; a given file must exist.
    pub encryption_provider_config: Option<PathBuf>,
    /// Request and connection limits: in-flight caps, watches per user,
    /// timeouts, HTTP/2 streams per connection.
    pub api_limits: crate::limits::ApiLimits,
    /// The audit log (off unless it has a path).
    pub audit: crate::audit::AuditConfig,
    /// The `iss` of ServiceAccount tokens (kube-apiserver's
    /// `--service-account-issuer`).
    pub service_account_issuer: String,
    /// Audiences a token must carry one of (`--api-audiences`); empty means
    /// the issuer.
    pub api_audiences: Vec<String>,
    /// Longest ServiceAccount token lifetime; longer requests are cut
    /// (`--service-account-max-token-expiration`).
    pub service_account_max_token_expiration: Duration,
}

/// The storage backend behind the API server.
#[derive(Debug, Clone, Default)]
pub enum StoreBackend {
    /// A durable single-file store at `<data_dir>/store.redb`.
    #[default]
    Embedded,
    /// An etcd v3 cluster; several API servers may share it.
    Etcd(crate::storage::etcd::EtcdOptions),
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("wasmkube-data"),
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 6443,
            write_kubeconfig: None,
            tls_sans: Vec::new(),
            component_users: vec![
                "system:kube-scheduler".to_string(),
                "system:kube-controller-manager".to_string(),
            ],
            max_request_bytes: 3 * 1024 * 1024,
            max_module_bytes: wasmkube_api::wasm::MAX_MODULE_BYTES,
            module_gc: crate::modules::gc::GcOptions::default(),
            compaction_interval: Duration::from_secs(300),
            compaction_keep_revisions: 10_000,
            watch_cache_size: crate::watch_cache::CacheOptions::default().window,
            event_ttl: Duration::from_secs(3600),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(5),
            store: StoreBackend::Embedded,
            admission: crate::admission::Policy::default(),
            encryption_provider_config: None,
            api_limits: Default::default(),
            audit: Default::default(),
            service_account_issuer: crate::serviceaccount::DEFAULT_ISSUER.to_string(),
            api_audiences: Vec::new(),
            service_account_max_token_expiration: Duration::from_secs(48 * 3600),
        }
    }
}
