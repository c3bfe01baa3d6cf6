//! The generic REST layer: one set of handlers serving every resource of
//! [`wasmkube_api::resources::all`].
//!
//! Per-kind behaviour (defaults, validation, what an update may change,
//! printing, selectable fields) comes from `wasmkube_api`; this module only
//! applies the Kubernetes API machinery around it: paths, verbs, optimistic
//! concurrency on `resourceVersion` (= the store's `mod_revision`, never
//! stored in the object itself), graceful deletion and finalizers, watch
//! through the [`crate::watch_cache`], lists from it or from the store by
//! their `resourceVersion` (see `list`), and content negotiation.

mod handlers;
mod list;
pub mod object;
mod ops;
pub mod request;
mod scale;
mod service_alloc;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use wasmkube_api::resources::{self, ResourceInfo};

use crate::error::{ApiError, Result};
use crate::storage::Store;
use crate::watch_cache::{CacheOptions, WatchCache};

pub use handlers::routes;
pub use ops::{DeleteOptions, WriteOptions};

/// Tunables of a [`Registry`]; the defaults suit a server.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Watch cache sizes and the BOOKMARK interval.
    pub cache: CacheOptions,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Default watch duration bounds when the client sends no `timeoutSeconds`
    /// (a random value in between spreads reconnects, as Kubernetes does).
    pub min_watch_timeout: Duration,
    pub max_watch_timeout: Duration,
    /// The admission policy (hostPath, per-pod maximums, quota resync).
    pub admission: crate::admission::Policy,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            cache: CacheOptions::default(),
            max_body_bytes: 3 * 1024 * 1024,
            min_watch_timeout: Duration::from_secs(30 * 60),
            max_watch_timeout: Duration::from_secs(60 * 60),
            admission: crate::admission::Policy::default(),
        }
    }
}

/// The per-resource registries over one store, with their watch caches.
pub struct Registry {
    store: Arc<dyn Store>,
    caches: HashMap<(&'static str, &'static str), Arc<WatchCache>>,
    options: RegistryOptions,
    shutdown: CancellationToken,
    admission: crate::admission::Admission,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("resources", &self.caches.len())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// The largest request body accepted (`--max-request-body-bytes`).
    pub fn max_body_bytes(&self) -> usize {
        self.options.max_body_bytes
    }

    /// Starts the registry: one watch cache (one store watch) per resource.
    pub async fn start(
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Registry>> {
        Self::start_with(store, RegistryOptions::default(), shutdown).await
    }

    /// [`Registry::start`] with explicit options (tests use small windows).
    pub async fn start_with(
        store: Arc<dyn Store>,
        options: RegistryOptions,
        shutdown: CancellationToken,
    ) -> Result<Arc<Registry>> {
        let mut caches = HashMap::new();
        for res in resources::all() {
            let cache = WatchCache::start(
                store.clone(),
                res.key_prefix(),
                options.cache,
                shutdown.clone(),
            )
            .await
            .map_err(|e| ApiError::from_storage(e, res.group, res.plural, ""))?;
            caches.insert((res.group, res.plural), cache);
        }
        let admission = crate::admission::Admission::new(options.admission.clone());
        let registry = Arc::new(Registry {
            store,
            caches,
            options,
            shutdown,
            admission,
        });
        crate::admission::Admission::spawn_quota_controller(&registry, registry.shutdown.clone());
        registry.resume_namespace_cleanups().await;
        registry.spawn_allocation_repair();
        Ok(registry)
    }

    /// Frees Service ClusterIP and node port claims older than `grace` that
    /// no stored Service holds; returns how many. Runs by itself at start
    /// and every few minutes.
    pub async fn repair_service_allocations(&self, grace: Duration) -> Result<usize> {
        service_alloc::repair(&*self.store, grace)
            .await
            .map_err(|e| ApiError::from_storage(e, "", "services", ""))
    }

    fn spawn_allocation_repair(self: &Arc<Self>) {
        const EVERY: Duration = Duration::from_secs(5 * 60);
        let registry = Arc::downgrade(self);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let Some(reg) = registry.upgrade() else {
                    return;
                };
                if let Err(e) = reg
                    .repair_service_allocations(service_alloc::REPAIR_GRACE)
                    .await
                {
                    tracing::warn!(error = ?e, "service allocation repair failed");
                }
                drop(reg);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(EVERY) => {}
                }
            }
        });
    }

    /// The admission chain every create and update goes through.
    pub fn admission(&self) -> &crate::admission::Admission {
        &self.admission
    }

    /// The store this registry writes to.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Reads one object (with its `resourceVersion`); 404 Status when absent.
    pub async fn get(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value> {
        Ok(self.read(res, namespace, name).await?.0)
    }

    /// Creates an object as a POST would (defaults, validation, system
    /// fields). An existing object is a 409 AlreadyExists error, which
    /// bootstrap callers ignore.
    pub async fn create(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        obj: Value,
    ) -> Result<Value> {
        let mut warnings = Vec::new();
        self.create_object(res, namespace, obj, &WriteOptions::default(), &mut warnings)
            .await
    }

    /// Replaces an object as a PUT would (validation, `resourceVersion`
    /// precondition when the object carries one). Bootstrap reconciliation
    /// (the default RBAC policy) uses it.
    pub async fn replace(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        obj: Value,
    ) -> Result<Value> {
        let mut warnings = Vec::new();
        self.update_object(
            res,
            namespace,
            name,
            obj,
            ops::Part::Main,
            &WriteOptions::default(),
            &mut warnings,
        )
        .await
    }

    /// The objects of `res` in `namespace` (every namespace when `None`) as
    /// the watch cache holds them, without a store read; `None` while the
    /// cache re-lists or has not yet applied this server's last write of
    /// `res` (the caller reads the store then). The authorizer reads pods
    /// this way on node requests, which are frequent enough that a store
    /// range each time would cost.
    pub fn cached_objects(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
    ) -> Option<Vec<Arc<Value>>> {
        let cache = self.cache(res)?;
        if cache.last_revision() < cache.written_revision() {
            return None;
        }
        let list = cache.list(&collection_prefix(res, namespace))?;
        Some(list.items.into_iter().map(|o| o.object).collect())
    }

    /// One object as the watch cache holds it, without a store read; `None`
    /// when the cache does not hold it, re-lists, or has not yet applied
    /// this server's last write of `res` (the caller reads the store then).
    pub fn cached_object(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Arc<Value>> {
        let cache = self.cache(res)?;
        if cache.last_revision() < cache.written_revision() {
            return None;
        }
        Some(cache.get(&key(res, namespace, name))?.object)
    }

    /// The objects of `res` in `namespace` (every namespace when `None`)
    /// read from the store: a consistent read, for when the watch cache may
    /// lag (e.g. an object written through another API server).
    pub async fn stored_objects(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>> {
        let filter = object::Filter {
            namespace: namespace.map(str::to_string),
            labels: Default::default(),
            fields: Default::default(),
        };
        Ok(self.list(res, namespace, &filter, None, None).await?.0)
    }

    fn cache(&self, res: &ResourceInfo) -> Option<&Arc<WatchCache>> {
        self.caches.get(&(res.group, res.plural))
    }

    /// Records a successful write of `res` at `revision`: this server's
    /// later lists from the cache wait until the cache has applied it.
    pub(crate) fn wrote(&self, res: &ResourceInfo, revision: i64) {
        if let Some(cache) = self.cache(res) {
            cache.note_write(revision);
        }
    }
}

/// The store key of one object.
pub fn key(res: &ResourceInfo, namespace: Option<&str>, name: &str) -> String {
    match (res.namespaced, namespace) {
        (true, Some(ns)) => format!("{}{ns}/{name}", prefix_of(res)),
        _ => format!("{}{name}", prefix_of(res)),
    }
}

/// The key prefix of a collection (one namespace, or all of them).
pub fn collection_prefix(res: &ResourceInfo, namespace: Option<&str>) -> String {
    match (res.namespaced, namespace) {
        (true, Some(ns)) => format!("{}{ns}/", prefix_of(res)),
        _ => prefix_of(res),
    }
}

fn prefix_of(res: &ResourceInfo) -> String {
    let mut p = res.key_prefix();
    if !p.ends_with('/') {
        p.push('/');
    }
    p
}
