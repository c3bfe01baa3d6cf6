//! wasmkube-apiserver: the Kubernetes API over HTTPS, and the only component
//! that touches the store.
//!
//! It serves the REST and watch API kubectl and the other components use
//! (generic per-resource handlers in [`registry`], fanned-out watches in
//! [`watch_cache`]), discovery and OpenAPI documents generated from
//! `wasmkube_api::resources::all()`, the module store for wasm images, and
//! the `pods/log` proxy to kubelets. It creates its own CA, serving
//! certificate, static tokens and an admin kubeconfig on first start.
//! Storage ([`storage`]) is private to this crate by design: every other
//! component reaches state only through the HTTP API.

// `ApiError` carries a whole Kubernetes `Status` by design (it is the answer
// to the client); boxing it in every handler's `Result` would only add noise.
#![allow(clippy::result_large_err)]

pub mod admission;
pub mod audit;
pub mod auth;
pub mod authn;
pub mod authz;
pub mod bootstrap;
pub mod config;
pub mod dashboard;
pub mod discovery;
pub mod error;
pub mod event_ttl;
pub mod health;
pub mod join;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod metrics_api;
pub mod modules;
pub mod node_proxy;
pub mod openapi;
pub mod pki;
pub mod portforward;
pub mod protobuf;
pub mod registry;
pub mod reviews;
pub mod server;
pub mod serviceaccount;
pub mod storage;
pub mod tunnel;
pub mod watch_cache;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{Config, StoreBackend};

use crate::registry::Registry;
use crate::storage::Store;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the store")]
    Store(#[source] storage::Error),
    #[error("encryption at rest")]
    Encryption(#[from] storage::encryption::Error),
    #[error("starting the registry")]
    Registry(#[source] Box<error::ApiError>),
    #[error("certificates")]
    Pki(#[from] pki::Error),
    #[error("token file")]
    Auth(#[from] auth::Error),
    #[error("service account signing key")]
    ServiceAccountKey(#[from] serviceaccount::KeyError),
    #[error("TLS")]
    Tls(#[from] server::Error),
    #[error("bootstrap")]
    Bootstrap(#[from] bootstrap::Error),
    #[error(transparent)]
    Audit(#[from] audit::Error),
    #[error("default RBAC policy")]
    RbacBootstrap(#[from] authz::rbac::bootstrap::Error),
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("a setup task failed")]
    Join(#[from] tokio::task::JoinError),
}

/// A started server.
pub struct Running {
    /// `https://<host>:<port>` with the real port (also when `port` was 0).
    pub url: String,
    /// The cluster CA clients must trust (PEM).
    pub ca_pem: String,
    /// The `admin` user's bearer token.
    pub admin_token: String,
    /// `<data>/kubeconfig`.
    pub kubeconfig_path: PathBuf,
    /// Every user of the token file → its token.
    pub tokens: BTreeMap<String, String>,
    /// Completes once the server stopped (after `shutdown`) and released the store.
    pub done: JoinHandle<()>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are credentials: never in logs.
        f.debug_struct("Running")
            .field("url", &self.url)
            .field("kubeconfig_path", &self.kubeconfig_path)
            .field("users", &self.tokens.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub store: Arc<dyn Store>,
    pub tokens: Arc<auth::Tokens>,
    pub limits: limits::BodyLimits,
    /// Agents' dial-out tunnels, by node ([`tunnel::kubelet_request`]).
    pub tunnels: tunnel::Tunnels,
    /// The cluster CA with its key: serves `/cacerts`, signs node
    /// certificates at join. `None` in tests that need neither.
    pub ca: Option<Arc<pki::ClusterCa>>,
    /// Signs ServiceAccount tokens (TokenRequest) and verifies them.
    pub service_accounts: Arc<serviceaccount::ServiceAccountTokens>,
}

/// The whole HTTP API as one router, built apart from the listener so tests
/// can drive it with `tower::ServiceExt::oneshot`.
pub fn app(state: AppState) -> Router {
    let own = Router::new()
        .merge(health::routes())
        .merge(metrics::routes())
        .merge(metrics_api::routes())
        .merge(discovery::routes())
        .merge(openapi::routes())
        .merge(modules::routes())
        .merge(tunnel::routes())
        .merge(join::routes())
        .merge(dashboard::routes())
        .merge(storage::encryption::routes())
        .merge(reviews::routes())
        .merge(serviceaccount::routes())
        .with_state(state.clone());
    own.merge(registry::routes(state.registry.clone()))
        .fallback(limits::not_found)
        .method_not_allowed_fallback(limits::method_not_allowed)
        // The registry's `pods/log` handler reaches kubelets through these.
        .layer(axum::Extension(state.tunnels.clone()))
        // The `serviceaccounts/token` handler signs with this.
        .layer(axum::Extension(state.service_accounts.clone()))
        // Inside the body limit and authentication: runs on the user they set.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authz::authorize,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.limits,
            limits::limit_body,
        ))
        // In-flight and watch caps on the authenticated user; the rest of
        // the request limits wrap the router (`limits::protect`).
        .layer(axum::middleware::from_fn(limits::admit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn(limits::trace))
}

/// Opens the configured backend, with Secrets encrypted at rest.
async fn open_store(config: &Config) -> Result<Arc<dyn Store>, Error> {
    let backend = open_backend(config).await?;
    let (path, create) = match &config.encryption_provider_config {
        Some(p) => (p.clone(), false),
        None => (
            storage::encryption::default_key_file(&config.data_dir),
            true,
        ),
    };
    let store = tokio::task::spawn_blocking(move || {
        storage::encryption::EncryptedStore::open(backend, &path, create)
    })
    .await??;
    tracing::info!(keys = ?store.keys(), "encryption at rest enabled");
    Ok(Arc::new(store))
}

/// Opens the configured backend and says which one it is.
async fn open_backend(config: &Config) -> Result<Arc<dyn Store>, Error> {
    match &config.store {
        config::StoreBackend::Embedded => {
            let path = config.data_dir.join("store.redb");
            let shown = path.display().to_string();
            let s =
                tokio::task::spawn_blocking(move || storage::embedded::EmbeddedStore::open(&path))
                    .await?
                    .map_err(Error::Store)?;
            tracing::info!(backend = "embedded", path = %shown, "store opened");
            Ok(Arc::new(s))
        }
        config::StoreBackend::Etcd(options) => {
            let s = storage::etcd::EtcdStore::connect(options.clone())
                .await
                .map_err(Error::Store)?;
            tracing::info!(
                backend = "etcd",
                endpoints = %options.endpoints.join(","),
                prefix = %options.prefix,
                "store opened"
            );
            Ok(Arc::new(s))
        }
    }
}

/// Open the store, prepare PKI, tokens and kubeconfig, ensure the default
/// namespaces, bind and serve until `shutdown` is cancelled.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    // Tests and binaries may have installed it already; either way ring is used.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let data_dir = config.data_dir.clone();
    {
        let dir = data_dir.clone();
        tokio::task::spawn_blocking(move || pki::create_private_dir(&dir)).await??;
    }

    let store = open_store(&config).await?;
    // Background tasks (compactor, registry watches) stop as soon as shutdown
    // begins, so open watch streams end and connections drain quickly; the
    // store itself stays open until the last in-flight request is done.
    let background = shutdown.child_token();
    // Should a later step fail, stop what was started and release the store.
    let background_guard = background.clone().drop_guard();
    let compactor = storage::embedded::spawn_compactor(
        store.clone(),
        storage::embedded::Options {
            interval: config.compaction_interval,
            keep_revisions: config.compaction_keep_revisions,
        },
        background.clone(),
    );
    // Every API server collects: the collector needs no leader (see modules::gc).
    let module_gc =
        modules::gc::spawn_collector(store.clone(), config.module_gc, background.clone());
    let event_expiry = event_ttl::spawn(
        store.clone(),
        config.event_ttl,
        (config.event_ttl / 4).min(Duration::from_secs(60)),
        background.clone(),
    );
    let registry_options = registry::RegistryOptions {
        max_body_bytes: config.max_request_bytes,
        admission: config.admission.clone(),
        cache: watch_cache::CacheOptions {
            window: config.watch_cache_size.max(1),
            ..Default::default()
        },
        ..registry::RegistryOptions::default()
    };
    let registry = Registry::start_with(store.clone(), registry_options, background.clone())
        .await
        .map_err(|e| Error::Registry(Box::new(e)))?;

    let listen = SocketAddr::new(config.bind_address, config.port);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| Error::Bind {
        addr: listen,
        source,
    })?;
    let host = client_host(config.bind_address);
    let url = format!("https://{}:{}", host_for_url(&host), local.port());

    let sans = serving_sans(&config);
    let pki = {
        let dir = data_dir.join("pki");
        tokio::task::spawn_blocking(move || pki::ensure(&dir, &sans)).await??
    };
    let tokens = {
        let path = data_dir.join("tokens.csv");
        let users = config.component_users.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || auth::Tokens::load_or_create(&path, &users))
                .await??,
        )
    };
    let service_accounts = {
        let dir = data_dir.join("pki");
        let options = serviceaccount::TokenOptions {
            issuer: config.service_account_issuer.clone(),
            api_audiences: config.api_audiences.clone(),
            max_expiration: config.service_account_max_token_expiration,
        };
        Arc::new(
            tokio::task::spawn_blocking(move || {
                serviceaccount::ServiceAccountTokens::load_or_create(&dir, options)
            })
            .await??,
        )
    };
    let by_user = tokens.by_user();
    let admin_token = by_user.get(auth::ADMIN_USER).cloned().unwrap_or_default();

    bootstrap::ensure_namespaces(&registry).await?;
    authz::rbac::bootstrap::ensure_policy(&registry).await?;
    let kubeconfig_path = {
        let paths = bootstrap::kubeconfig_paths(&data_dir, config.write_kubeconfig.as_deref());
        let yaml = bootstrap::kubeconfig(&url, &pki.ca_pem, &admin_token)?;
        let first = paths
            .first()
            .cloned()
            .unwrap_or_else(|| data_dir.join("kubeconfig"));
        tokio::task::spawn_blocking(move || bootstrap::write_kubeconfigs(&paths, &yaml)).await??;
        first
    };

    let tls = server::tls_config(&pki)?;
    let state = AppState {
        registry,
        store: store.clone(),
        tokens,
        limits: limits::BodyLimits {
            api: config.max_request_bytes,
            module: config.max_module_bytes,
        },
        tunnels: tunnel::Tunnels::new(background.clone()),
        ca: Some(Arc::new(pki::ClusterCa::from_pki(&pki)?)),
        service_accounts,
    };
    // Stopped once every request is done, so the last events are written.
    let audit_stop = CancellationToken::new();
    let audit_log = audit::AuditLog::start(&config.audit, audit_stop.clone()).await?;
    let router = limits::protect(
        app(state),
        limits::RequestGuard::new(&config.api_limits, audit_log.clone()),
    );
    let server_limits = server::Limits {
        max_connections: config.max_connections,
        shutdown_grace: config.shutdown_grace,
        ..server::Limits::from(&config.api_limits)
    };
    tracing::info!(%url, "apiserver listening");
    let background = background_guard.disarm();
    let weak_store = Arc::downgrade(&store);
    drop(store);
    let done = tokio::spawn(async move {
        server::serve(listener, tls, router, server_limits, shutdown).await;
        audit_stop.cancel();
        audit_log.finished().await;
        background.cancel();
        if let Err(e) = compactor.await {
            tracing::warn!(error = %e, "compactor task failed");
        }
        if let Err(e) = module_gc.await {
            tracing::warn!(error = %e, "module garbage collector task failed");
        }
        if let Err(e) = event_expiry.await {
            tracing::warn!(error = %e, "event expiry task failed");
        }
        // The registry's watch tasks hold the store until they notice the
        // cancellation; wait (bounded) for the last reference so a restart on
        // the same data directory can reopen it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while weak_store.strong_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if weak_store.strong_count() > 0 {
            tracing::warn!("the store is still referenced after shutdown");
        }
    });

    Ok(Running {
        url,
        ca_pem: pki.ca_pem,
        admin_token,
        kubeconfig_path,
        tokens: by_user,
        done,
    })
}

/// The address clients on this machine use to reach a server bound to `bind`.
fn client_host(bind: IpAddr) -> IpAddr {
    match bind {
        b if b.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6 == Ipv6Addr::LOCALHOST => bind,
        b if b.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        b => b,
    }
}

fn host_for_url(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The serving certificate's names: loopback names, the machine's hostname,
/// the bind address when it is a concrete one, and the configured extras.
fn serving_sans(config: &Config) -> Vec<String> {
    let mut sans = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Some(h) = hostname() {
        sans.push(h);
    }
    if !config.bind_address.is_unspecified() {
        sans.push(config.bind_address.to_string());
    }
    sans.extend(
        config
            .tls_sans
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().to_string()),
    );
    sans.sort();
    sans.dedup();
    sans
}

fn hostname() -> Option<String> {
    let from_file = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        })
}
