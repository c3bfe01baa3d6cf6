//! Fetching modules ("pulling images") into the node's module cache.
//!
//! Two sources: a reference without a registry host (`hello:v1`,
//! `hello@sha256:…`) is resolved against the cluster's module store through
//! the apiserver (`/wasmkube/v1/resolve`, then `/wasmkube/v1/blobs/<digest>`)
//! with the kubelet's own credentials; one with a host
//! (`127.0.0.1:5000/hello:v1`) is pulled from that OCI registry ([`crate::oci`])
//! with the pod's pull secrets.
//!
//! Both land in one cache under `<data>/modules/`, keyed by the digest of the
//! module bytes, so a module is downloaded once per node whatever the
//! reference and however many pods run it. Blobs are verified against their
//! digest while they stream to disk; a file found in the cache is hashed once
//! before this process first trusts it (a file left behind truncated or
//! altered is fetched again, not run).
//!
//! The cache remembers which digest each reference had when it was last
//! pulled (`images.json`): that is what "present" means for a tag under
//! `imagePullPolicy: IfNotPresent` or `Never`, so a cached tag never touches
//! the registry. It is capped in size: after a pull, the least recently used
//! modules that no pod holds ([`LocalModule::in_use`]) are removed until it
//! fits. At most a configured number of pulls run at once.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use futures::AsyncReadExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use wasmkube_api::image::{ImageRef, Reference};
use wasmkube_api::wasm::{MAX_MODULE_BYTES, MODULE_API, ResolvedModule, is_valid_digest};

use crate::oci::{Keyring, OciError, Puller, RegistryAuth, RegistryOptions, WasmArtifact};

/// Default cap of the node's module cache (2 GiB).
pub const DEFAULT_MAX_CACHE_BYTES: u64 = 2 << 30;
/// Default number of pulls running at once (the kubelet's
/// `maxParallelImagePulls` with `serializeImagePulls: false`).
pub const DEFAULT_MAX_PARALLEL_PULLS: usize = 3;
/// The file remembering which digest each reference was pulled as.
const RECORDS_FILE: &str = "images.json";

/// `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Ask the source on every container start.
    Always,
    /// Use what the node has; pull only when it has nothing.
    IfNotPresent,
    /// Use what the node has; never pull.
    Never,
}

impl PullPolicy {
    /// A container's policy: the field when set, else Kubernetes' default
    /// for its image (`:latest` or no tag → `Always`, else `IfNotPresent`),
    /// the same default the apiserver writes.
    pub fn of(field: Option<&str>, image: &str) -> PullPolicy {
        let policy = field
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| wasmkube_api::rules::default_pull_policy(image));
        match policy {
            "Always" => PullPolicy::Always,
            "Never" => PullPolicy::Never,
            _ => PullPolicy::IfNotPresent,
        }
    }
}

/// A module present on this node.
#[derive(Debug, Clone, Default)]
pub struct LocalModule {
    /// `sha256:…` of the module bytes.
    pub digest: String,
    /// The file holding its bytes.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Whether its bytes were already on the node (no download).
    pub cached: bool,
    /// How long getting it took, waiting for a pull slot included.
    pub took: Duration,
    /// Of `took`, how long it waited for a pull slot.
    pub waited: Duration,
    /// Keeps the module from being evicted while any clone of this value
    /// lives (a pod worker holds it for as long as the pod exists).
    pub in_use: InUse,
    /// Set when the image's source could not be reached and this is the
    /// module the node last pulled the reference as: why the pull failed.
    pub offline: Option<String>,
}

/// Why an image could not be pulled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullError {
    /// The reference does not parse (`InvalidImageName`).
    #[error("{0}")]
    InvalidName(String),
    /// Anything else (`ErrImagePull`).
    #[error("{0}")]
    Failed(String),
    /// The source could not be reached (no connection, a timeout, a proxy
    /// or server not serving): also `ErrImagePull`, but a module pulled for
    /// the reference before may stand in.
    #[error("{0}")]
    Unreachable(String),
}

/// Where modules come from; the kubelet's implementation is [`ModuleCache`].
#[async_trait::async_trait]
pub trait ModuleSource: Send + Sync + 'static {
    /// The module this node already has for `image` — by digest, or by the
    /// digest the reference had when it was last pulled — without asking
    /// anyone. A source without a cache has none.
    async fn present(&self, image: &str) -> Result<Option<LocalModule>, PullError> {
        let _ = image;
        Ok(None)
    }

    /// Asks the image's source what `image` is now and makes that module
    /// available locally; registry credentials come from `keyring`.
    async fn pull(&self, image: &str, keyring: &Keyring) -> Result<LocalModule, PullError>;
}

/// A use of a cached module; see [`LocalModule::in_use`].
#[derive(Debug, Clone, Default)]
pub struct InUse {
    /// Only held, for its `Drop`.
    _guard: Option<Arc<UseGuard>>,
}

/// Counts one use of a digest until dropped.
struct UseGuard {
    digest: String,
    state: Weak<Mutex<State>>,
}

impl std::fmt::Debug for UseGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("UseGuard").field(&self.digest).finish()
    }
}

impl Drop for UseGuard {
    fn drop(&mut self) {
        if let Some(state) = self.state.upgrade() {
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = state.modules.get_mut(&self.digest) {
                entry.uses = entry.uses.saturating_sub(1);
            }
        }
    }
}

/// A module file in the cache.
struct Entry {
    size: u64,
    /// Tick of [`State::clock`] at the last use.
    last_used: u64,
    /// Live [`UseGuard`]s.
    uses: usize,
    /// Hashed (or downloaded) by this process and found right.
    verified: bool,
}

#[derive(Default)]
struct State {
    modules: HashMap<String, Entry>,
    /// Canonical image reference → digest of the module it was last pulled as.
    records: BTreeMap<String, String>,
    /// Orders uses for LRU eviction (wall clocks may tie or step back).
    clock: u64,
}

impl State {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

/// How the node's module cache is set up.
#[derive(Debug, Clone)]
pub struct ModuleCacheConfig {
    /// Where module files live.
    pub dir: PathBuf,
    /// Size the cache is kept under by evicting unused modules.
    pub max_bytes: u64,
    /// Pulls running at once (at least one).
    pub max_parallel_pulls: usize,
    /// How registries are reached.
    pub registry: RegistryOptions,
}

impl ModuleCacheConfig {
    /// Defaults for a cache in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> ModuleCacheConfig {
        ModuleCacheConfig {
            dir: dir.into(),
            max_bytes: DEFAULT_MAX_CACHE_BYTES,
            max_parallel_pulls: DEFAULT_MAX_PARALLEL_PULLS,
            registry: RegistryOptions::default(),
        }
    }
}

/// The node's module cache.
#[derive(Clone)]
pub struct ModuleCache {
    inner: Arc<Inner>,
}

struct Inner {
    client: kube::Client,
    dir: PathBuf,
    max_bytes: u64,
    registry: RegistryOptions,
    /// Pull slots.
    slots: tokio::sync::Semaphore,
    /// Pulls waiting for a slot.
    waiting: AtomicUsize,
    /// One lock per digest: the pulls of a digest take turns, so the second
    /// finds the first one's file instead of downloading it again, and
    /// eviction never removes a file being written or checked.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    state: Arc<Mutex<State>>,
    /// The directory has been scanned into `state`.
    loaded: tokio::sync::OnceCell<()>,
    /// Serializes writes of the records file.
    records_file: tokio::sync::Mutex<()>,
}

/// Distinguishes the temporary files of one process's downloads.
static DOWNLOADS: AtomicU64 = AtomicU64::new(0);

/// A temporary name next to `path` that no other download uses.
fn temp_path(path: &Path) -> PathBuf {
    let n = DOWNLOADS.fetch_add(1, Ordering::Relaxed);
    path.with_extension(format!("part-{}-{n}", std::process::id()))
}

/// Whether the file at `path` hashes to `digest` (and is not oversized).
async fn file_has_digest(path: &Path, digest: &str) -> std::io::Result<bool> {
    use tokio::io::AsyncReadExt as _;
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size: u64 = 0;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > MAX_MODULE_BYTES as u64 {
            return Ok(false);
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())) == digest)
}

/// Runs registry I/O on its own task: oci-client may panic on a malformed
/// answer (it unwraps some header values), and a registry must not be able
/// to take a pod worker down with it.
async fn isolated<T: Send + 'static>(
    fut: impl Future<Output = Result<T, PullError>> + Send + 'static,
) -> Result<T, PullError> {
    match tokio::spawn(fut).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(PullError::Failed(
            "the registry client failed on the registry's answer".into(),
        )),
        Err(e) => Err(PullError::Failed(format!("the pull was interrupted: {e}"))),
    }
}

/// Streams a registry layer into `path` (through a temporary file).
async fn download_from_registry(
    puller: Puller,
    artifact: WasmArtifact,
    path: PathBuf,
) -> Result<u64, PullError> {
    let io_err = |e: std::io::Error| {
        PullError::Failed(format!("downloading {}: {e}", artifact.layer_digest))
    };
    let tmp = temp_path(&path);
    let result = async {
        let mut file = tokio::fs::File::create(&tmp).await.map_err(io_err)?;
        let size = puller
            .fetch_module(&artifact, &mut file)
            .await
            .map_err(|e| PullError::Failed(e.to_string()))?;
        drop(file);
        tokio::fs::rename(&tmp, &path).await.map_err(io_err)?;
        Ok(size)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

/// Best effort: the file's modification time records its last use, so the
/// eviction order survives a kubelet restart.
fn touch(path: PathBuf) {
    tokio::task::spawn_blocking(move || {
        let _ = std::fs::File::open(&path).and_then(|f| f.set_modified(SystemTime::now()));
    });
}

impl ModuleCache {
    /// A cache set up by `config`, reading the module store through `client`.
    pub fn new(client: kube::Client, config: ModuleCacheConfig) -> ModuleCache {
        ModuleCache {
            inner: Arc::new(Inner {
                client,
                dir: config.dir,
                max_bytes: config.max_bytes,
                registry: config.registry,
                slots: tokio::sync::Semaphore::new(config.max_parallel_pulls.max(1)),
                waiting: AtomicUsize::new(0),
                locks: Mutex::default(),
                state: Arc::default(),
                loaded: tokio::sync::OnceCell::new(),
                records_file: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// How many pulls are waiting for a free pull slot.
    pub fn pulls_waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::Relaxed)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn digest_lock(&self, digest: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(digest.to_string()).or_default().clone()
    }

    fn path_of(&self, digest: &str) -> PathBuf {
        self.inner
            .dir
            .join(format!("{}.wasm", digest.replace(':', "-")))
    }

    fn records_path(&self) -> PathBuf {
        self.inner.dir.join(RECORDS_FILE)
    }

    /// Scans the directory once: the modules a previous run left, and the
    /// references they were pulled as.
    async fn ensure_loaded(&self) {
        self.inner.loaded.get_or_init(|| self.load()).await;
    }

    async fn load(&self) {
        let mut modules: Vec<(SystemTime, String, u64)> = Vec::new();
        if let Ok(mut dir) = tokio::fs::read_dir(&self.inner.dir).await {
            while let Ok(Some(item)) = dir.next_entry().await {
                let name = item.file_name();
                let Some(name) = name.to_str() else {
                    continue;
                };
                if name.contains(".part-") {
                    // An interrupted download of an earlier run.
                    let _ = tokio::fs::remove_file(item.path()).await;
                    continue;
                }
                let Some(hex) = name
                    .strip_prefix("sha256-")
                    .and_then(|n| n.strip_suffix(".wasm"))
                else {
                    continue;
                };
                let digest = format!("sha256:{hex}");
                let Ok(meta) = item.metadata().await else {
                    continue;
                };
                if !is_valid_digest(&digest) || !meta.is_file() {
                    continue;
                }
                let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                modules.push((modified, digest, meta.len()));
            }
        }
        // The files' modification times are their last uses in earlier runs.
        modules.sort();
        let mut records: BTreeMap<String, String> =
            match tokio::fs::read(self.records_path()).await {
                Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "the module cache's image records do not parse; starting afresh");
                    BTreeMap::new()
                }),
                Err(_) => BTreeMap::new(),
            };
        records.retain(|_, d| modules.iter().any(|(_, m, _)| m == d));
        let mut state = self.state();
        for (_, digest, size) in modules {
            let last_used = state.tick();
            state.modules.entry(digest).or_insert(Entry {
                size,
                last_used,
                uses: 0,
                verified: false,
            });
        }
        for (image, digest) in records {
            state.records.entry(image).or_insert(digest);
        }
    }

    /// Writes the image records (a snapshot, through a temporary file).
    async fn save_records(&self) {
        let _turn = self.inner.records_file.lock().await;
        let json = match serde_json::to_vec_pretty(&self.state().records) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "encoding the image records failed");
                return;
            }
        };
        let path = self.records_path();
        // Synced to disk: after a power cut offline, these records are what
        // lets a tag run from the cache.
        let result = async {
            tokio::fs::create_dir_all(&self.inner.dir).await?;
            tokio::task::spawn_blocking(move || {
                crate::local_state::write_atomic(&path, &json, 0o644)
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "writing the image records failed");
        }
    }

    /// Remembers that `images` were pulled as `digest`.
    async fn record(&self, images: &[String], digest: &str) {
        let changed = {
            let mut state = self.state();
            let mut changed = false;
            for image in images {
                if state.records.get(image).map(String::as_str) != Some(digest) {
                    state.records.insert(image.clone(), digest.to_string());
                    changed = true;
                }
            }
            changed
        };
        if changed {
            self.save_records().await;
        }
    }

    /// Takes a use of a cached module; the caller holds the digest's lock.
    async fn use_cached_locked(&self, digest: &str, started: Instant) -> Option<LocalModule> {
        let path = self.path_of(digest);
        let verified = self.state().modules.get(digest)?.verified;
        let good = if verified {
            // Removed behind the kubelet's back?
            tokio::fs::metadata(&path).await.is_ok()
        } else {
            match file_has_digest(&path, digest).await {
                Ok(true) => true,
                Ok(false) => {
                    tracing::warn!(path = %path.display(), digest, "cached module does not match its digest; fetching it again");
                    let _ = tokio::fs::remove_file(&path).await;
                    false
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "reading a cached module failed");
                    false
                }
            }
        };
        let mut state = self.state();
        if !good {
            state.modules.remove(digest);
            state.records.retain(|_, d| d != digest);
            return None;
        }
        let now = state.tick();
        let entry = state.modules.get_mut(digest)?;
        entry.verified = true;
        entry.uses += 1;
        entry.last_used = now;
        let size = entry.size;
        drop(state);
        touch(path.clone());
        Some(LocalModule {
            digest: digest.to_string(),
            path,
            size,
            cached: true,
            took: started.elapsed(),
            waited: Duration::ZERO,
            in_use: self.guard(digest),
            offline: None,
        })
    }

    /// A use of `digest` (already counted in its entry).
    fn guard(&self, digest: &str) -> InUse {
        InUse {
            _guard: Some(Arc::new(UseGuard {
                digest: digest.to_string(),
                state: Arc::downgrade(&self.inner.state),
            })),
        }
    }

    async fn use_cached(&self, digest: &str, started: Instant) -> Option<LocalModule> {
        let lock = self.digest_lock(digest);
        let _turn = lock.lock().await;
        self.use_cached_locked(digest, started).await
    }

    /// The cached module of `digest`, or the one `fetch` writes to the
    /// path it is given; one download per digest at a time.
    async fn obtain<F, Fut>(
        &self,
        digest: &str,
        started: Instant,
        fetch: F,
    ) -> Result<LocalModule, PullError>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: Future<Output = Result<u64, PullError>>,
    {
        let lock = self.digest_lock(digest);
        let _turn = lock.lock().await;
        if let Some(m) = self.use_cached_locked(digest, started).await {
            return Ok(m);
        }
        tokio::fs::create_dir_all(&self.inner.dir)
            .await
            .map_err(|e| PullError::Failed(format!("creating the module cache: {e}")))?;
        let path = self.path_of(digest);
        let size = fetch(path.clone()).await?;
        let mut state = self.state();
        let last_used = state.tick();
        state.modules.insert(
            digest.to_string(),
            Entry {
                size,
                last_used,
                uses: 1,
                verified: true,
            },
        );
        drop(state);
        Ok(LocalModule {
            digest: digest.to_string(),
            path,
            size,
            cached: false,
            took: started.elapsed(),
            waited: Duration::ZERO,
            in_use: self.guard(digest),
            offline: None,
        })
    }

    /// Removes least recently used modules nobody holds until the cache
    /// fits its cap again (`keep` is the module just pulled).
    async fn evict(&self, keep: &str) {
        let victims = {
            let mut state = self.state();
            let mut total: u64 = state.modules.values().map(|e| e.size).sum();
            if total <= self.inner.max_bytes {
                return;
            }
            let mut idle: Vec<(u64, String)> = state
                .modules
                .iter()
                .filter(|(d, e)| e.uses == 0 && d.as_str() != keep)
                .map(|(d, e)| (e.last_used, d.clone()))
                .collect();
            idle.sort();
            let mut victims = Vec::new();
            for (_, digest) in idle {
                if total <= self.inner.max_bytes {
                    break;
                }
                // Being pulled or checked right now: not a victim.
                let Ok(turn) = self.digest_lock(&digest).try_lock_owned() else {
                    continue;
                };
                if let Some(e) = state.modules.remove(&digest) {
                    total = total.saturating_sub(e.size);
                    victims.push((digest, turn));
                }
            }
            state
                .records
                .retain(|_, d| !victims.iter().any(|(v, _)| v == d));
            if total > self.inner.max_bytes {
                tracing::warn!(
                    total,
                    max = self.inner.max_bytes,
                    "the module cache is over its cap: the other modules are in use"
                );
            }
            victims
        };
        for (digest, _turn) in &victims {
            match tokio::fs::remove_file(self.path_of(digest)).await {
                Ok(()) => tracing::info!(digest, "evicted an unused module from the node cache"),
                Err(e) => tracing::warn!(digest, error = %e, "removing an evicted module failed"),
            }
        }
        if !victims.is_empty() {
            self.save_records().await;
        }
    }

    async fn resolve(&self, image: &str) -> Result<ResolvedModule, PullError> {
        let uri = format!("{MODULE_API}/resolve?image={}", encode_query(image));
        let req = http::Request::get(uri)
            .body(Vec::new())
            .map_err(|e| PullError::Failed(e.to_string()))?;
        let text = self
            .inner
            .client
            .request_text(req)
            .await
            .map_err(|e| api_pull_error(&e))?;
        let resolved: ResolvedModule = serde_json::from_str(&text)
            .map_err(|e| PullError::Failed(format!("bad answer from the module store: {e}")))?;
        if !is_valid_digest(&resolved.digest) {
            return Err(PullError::Failed(format!(
                "the module store answered an invalid digest {:?}",
                resolved.digest
            )));
        }
        Ok(resolved)
    }

    async fn download(&self, digest: &str, path: &Path) -> Result<u64, PullError> {
        let uri = format!("{MODULE_API}/blobs/{digest}");
        let req = http::Request::get(uri)
            .body(Vec::new())
            .map_err(|e| PullError::Failed(e.to_string()))?;
        let body = self
            .inner
            .client
            .request_stream(req)
            .await
            .map_err(|e| api_pull_error(&e))?;
        let mut body = Box::pin(body);
        let io_err = |e: std::io::Error| PullError::Failed(format!("downloading {digest}: {e}"));
        let tmp = temp_path(path);
        let mut file = tokio::fs::File::create(&tmp).await.map_err(io_err)?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut buf = vec![0u8; 64 * 1024];
        let result = async {
            loop {
                let n = body.read(&mut buf).await.map_err(io_err)?;
                if n == 0 {
                    break;
                }
                size += n as u64;
                if size > MAX_MODULE_BYTES as u64 {
                    return Err(PullError::Failed(format!(
                        "module {digest} is larger than {MAX_MODULE_BYTES} bytes"
                    )));
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n]).await.map_err(io_err)?;
            }
            file.flush().await.map_err(io_err)?;
            let got = format!("sha256:{}", hex::encode(hasher.finalize()));
            if got != digest {
                return Err(PullError::Failed(format!(
                    "digest mismatch: expected {digest}, got {got}"
                )));
            }
            tokio::fs::rename(&tmp, path).await.map_err(io_err)?;
            Ok(size)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// A module of the cluster's module store.
    async fn pull_from_store(
        &self,
        reference: &ImageRef,
        image: &str,
        started: Instant,
    ) -> Result<LocalModule, PullError> {
        let resolved = self.resolve(image).await?;
        let digest = resolved.digest;
        let d = digest.clone();
        let m = self
            .obtain(&digest, started, |path| async move {
                self.download(&d, &path).await
            })
            .await?;
        self.record(&[reference.to_string()], &m.digest).await;
        Ok(m)
    }

    /// A module of an OCI registry: each credential the keyring has for the
    /// registry is tried in turn (anonymous when it has none), as the
    /// kubelet does.
    async fn pull_from_registry(
        &self,
        reference: &ImageRef,
        keyring: &Keyring,
        started: Instant,
    ) -> Result<LocalModule, PullError> {
        let registry = reference.registry.clone().unwrap_or_default();
        let mut credentials = keyring.lookup(&registry, &reference.repository);
        if credentials.is_empty() {
            credentials.push(RegistryAuth::Anonymous);
        }
        let mut refused: Option<OciError> = None;
        let mut resolved = None;
        for auth in credentials {
            let puller = Puller::new(&self.inner.registry, reference, auth)
                .map_err(|e| PullError::Failed(e.to_string()))?;
            let p = puller.clone();
            match isolated(async move { Ok(p.resolve().await) }).await? {
                Ok(artifact) => {
                    resolved = Some((puller, artifact));
                    break;
                }
                // Another credential may be the right one.
                Err(e @ OciError::Unauthorized(_)) => refused = Some(e),
                Err(e) => return Err(registry_pull_error(e)),
            }
        }
        let Some((puller, artifact)) = resolved else {
            return Err(PullError::Failed(refused.map_or_else(
                || "no credentials worked".to_string(),
                |e| e.to_string(),
            )));
        };
        let digest = artifact.layer_digest.clone();
        let a = artifact.clone();
        let m = self
            .obtain(&digest, started, move |path| {
                isolated(download_from_registry(puller, a, path))
            })
            .await?;
        // The tag, and the manifest digests it resolved to, all name this
        // module now.
        let pinned = |d: &str| {
            ImageRef {
                registry: Some(registry.clone()),
                repository: reference.repository.clone(),
                reference: Reference::Digest(d.to_string()),
            }
            .to_string()
        };
        let mut images = vec![reference.to_string(), pinned(&artifact.reference_digest)];
        if artifact.manifest_digest != artifact.reference_digest {
            images.push(pinned(&artifact.manifest_digest));
        }
        images.dedup();
        self.record(&images, &m.digest).await;
        Ok(m)
    }

    /// The module this node last pulled `reference` as, standing in for a
    /// pull that could not reach its source (said in a warning and in
    /// [`LocalModule::offline`]); the pull's error when there is none.
    async fn offline_stand_in(
        &self,
        reference: &ImageRef,
        image: &str,
        why: String,
        started: Instant,
    ) -> Result<LocalModule, PullError> {
        let Some(digest) = self.known_digest(reference) else {
            return Err(PullError::Unreachable(why));
        };
        match self.use_cached(&digest, started).await {
            Some(m) => {
                tracing::warn!(image, digest = %digest, error = %why, "the module's source is unreachable: running the module this node last pulled for it");
                Ok(LocalModule {
                    offline: Some(why),
                    ..m
                })
            }
            None => Err(PullError::Unreachable(why)),
        }
    }

    /// The digest this node knows `reference` by: a module store digest
    /// names the module itself; anything else is what it was last pulled as.
    fn known_digest(&self, reference: &ImageRef) -> Option<String> {
        if reference.is_local()
            && let Some(d) = reference.digest()
            && is_valid_digest(d)
        {
            return Some(d.to_string());
        }
        self.state().records.get(&reference.to_string()).cloned()
    }
}

/// Counts a pull as waiting for a slot until dropped (also when the pull
/// is abandoned while it waits).
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn new(gauge: &'a AtomicUsize) -> Queued<'a> {
        gauge.fetch_add(1, Ordering::Relaxed);
        Queued(gauge)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A failed apiserver request as a pull error.
fn api_pull_error(e: &kube::Error) -> PullError {
    if crate::local_state::is_unreachable(e) {
        PullError::Unreachable(api_message(e))
    } else {
        PullError::Failed(api_message(e))
    }
}

/// A failed registry resolve as a pull error. `oci` words a transport
/// failure as "reaching <registry>: …" and a gateway's answer as "the
/// registry answered HTTP 50x"; an answer about the image itself
/// (`manifest unknown`, denied) is not a connectivity failure.
fn registry_pull_error(e: OciError) -> PullError {
    match e {
        OciError::Registry(text)
            if text.starts_with("reaching ")
                || ["502", "503", "504"]
                    .iter()
                    .any(|c| text.starts_with(&format!("the registry answered HTTP {c}"))) =>
        {
            PullError::Unreachable(text)
        }
        other => other.into(),
    }
}

impl From<OciError> for PullError {
    fn from(e: OciError) -> PullError {
        PullError::Failed(e.to_string())
    }
}

fn parse(image: &str) -> Result<ImageRef, PullError> {
    ImageRef::parse(image).map_err(|e| PullError::InvalidName(e.to_string()))
}

#[async_trait::async_trait]
impl ModuleSource for ModuleCache {
    async fn present(&self, image: &str) -> Result<Option<LocalModule>, PullError> {
        let started = Instant::now();
        let reference = parse(image)?;
        self.ensure_loaded().await;
        let Some(digest) = self.known_digest(&reference) else {
            return Ok(None);
        };
        Ok(self.use_cached(&digest, started).await)
    }

    async fn pull(&self, image: &str, keyring: &Keyring) -> Result<LocalModule, PullError> {
        let started = Instant::now();
        let reference = parse(image)?;
        self.ensure_loaded().await;
        let queued = Queued::new(&self.inner.waiting);
        let slot = self
            .inner
            .slots
            .acquire()
            .await
            .map_err(|_| PullError::Failed("the kubelet is shutting down".into()))?;
        drop(queued);
        let waited = started.elapsed();
        let pulled = if reference.is_local() {
            self.pull_from_store(&reference, image, started).await
        } else {
            self.pull_from_registry(&reference, keyring, started).await
        };
        drop(slot);
        let m = match pulled {
            Err(PullError::Unreachable(why)) => {
                self.offline_stand_in(&reference, image, why, started)
                    .await?
            }
            other => other?,
        };
        self.evict(&m.digest).await;
        Ok(LocalModule {
            took: started.elapsed(),
            waited,
            ..m
        })
    }
}

/// A duration the way Go prints a `time.Duration` truncated to
/// milliseconds, as the kubelet's `Pulled` event shows it: `523ms`, `1.25s`,
/// `1m2.5s`.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let hours = ms / 3_600_000;
    let minutes = (ms / 60_000) % 60;
    let secs = (ms / 1000) % 60;
    let frac = ms % 1000;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if frac == 0 {
        out.push_str(&format!("{secs}s"));
    } else {
        let frac = format!("{frac:03}");
        out.push_str(&format!("{secs}.{}s", frac.trim_end_matches('0')));
    }
    out
}

/// The message of an API error (the `Status` message when there is one).
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved bytes).
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn new_cache(dir: &Path, max_bytes: u64) -> anyhow::Result<ModuleCache> {
        // The module store is unreachable here: these tests never need it.
        let config = kube::Config::new("http://127.0.0.1:9".parse()?);
        let mut c = ModuleCacheConfig::new(dir);
        c.max_bytes = max_bytes;
        Ok(ModuleCache::new(kube::Client::try_from(config)?, c))
    }

    fn digest_of(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    /// Puts `bytes` into the cache as if pulled as `image`.
    async fn put(cache: &ModuleCache, image: &str, bytes: &[u8]) -> anyhow::Result<LocalModule> {
        let digest = digest_of(bytes);
        let data = bytes.to_vec();
        let m = cache
            .obtain(&digest, Instant::now(), |path| async move {
                tokio::fs::write(&path, &data)
                    .await
                    .map_err(|e| PullError::Failed(e.to_string()))?;
                Ok(data.len() as u64)
            })
            .await?;
        cache.record(&[parse(image)?.to_string()], &digest).await;
        cache.evict(&digest).await;
        Ok(m)
    }

    #[test]
    fn concurrent_downloads_never_share_a_temp_file() {
        let path = Path::new("/m/sha256-ab.wasm");
        let names: HashSet<PathBuf> = (0..100).map(|_| temp_path(path)).collect();
        assert_eq!(names.len(), 100);
        assert!(names.iter().all(|p| p.parent() == path.parent()));
    }

    #[test]
    fn pull_policy_defaults_follow_kubernetes() {
        use PullPolicy::*;
        let cases = [
            (None, "hello", Always),
            (None, "hello:latest", Always),
            (None, "127.0.0.1:5000/hello", Always),
            (None, "127.0.0.1:5000/hello:v1", IfNotPresent),
            (Some(""), "hello:v1", IfNotPresent),
            (
                None,
                "r.io/a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                IfNotPresent,
            ),
            (Some("Never"), "hello:latest", Never),
            (Some("Always"), "hello:v1", Always),
            (Some("IfNotPresent"), "hello", IfNotPresent),
        ];
        for (field, image, want) in cases {
            assert_eq!(PullPolicy::of(field, image), want, "{field:?} {image}");
        }
    }

    #[tokio::test]
    async fn a_truncated_cached_module_is_not_trusted() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let bytes = b"\0asm\x01\0\0\0 the whole module";
        let digest = digest_of(bytes);
        let path = dir
            .path()
            .join(format!("{}.wasm", digest.replace(':', "-")));
        tokio::fs::write(&path, &bytes[..6]).await?;
        let cache = new_cache(dir.path(), DEFAULT_MAX_CACHE_BYTES)?;
        let by_digest = format!("m@{digest}");
        assert!(cache.present(&by_digest).await?.is_none());
        assert!(
            !path.exists(),
            "the bad file is removed to be fetched again"
        );
        // Nor does a pull run it: it goes back to the store (unreachable here).
        assert!(cache.pull(&by_digest, &Keyring::default()).await.is_err());

        // A good file left by an earlier run is found and trusted.
        tokio::fs::write(&path, bytes).await?;
        let cache = new_cache(dir.path(), DEFAULT_MAX_CACHE_BYTES)?;
        let m = cache.present(&by_digest).await?;
        assert_eq!(m.map(|m| m.size), Some(bytes.len() as u64));
        Ok(())
    }

    #[tokio::test]
    async fn a_pulled_tag_is_present_across_restarts() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cache = new_cache(dir.path(), DEFAULT_MAX_CACHE_BYTES)?;
        assert!(cache.present("127.0.0.1:5000/app:v1").await?.is_none());
        let m = put(&cache, "127.0.0.1:5000/app:v1", b"module one").await?;
        let again = cache.present("127.0.0.1:5000/app:v1").await?;
        assert_eq!(again.map(|a| a.digest), Some(m.digest.clone()));
        assert!(cache.present("127.0.0.1:5000/app:v2").await?.is_none());
        assert!(
            cache.present("app:v1").await?.is_none(),
            "the module store's app is another image"
        );
        drop(cache);
        let restarted = new_cache(dir.path(), DEFAULT_MAX_CACHE_BYTES)?;
        let found = restarted.present("127.0.0.1:5000/app:v1").await?;
        assert_eq!(found.map(|f| (f.digest, f.cached)), Some((m.digest, true)));
        Ok(())
    }

    #[tokio::test]
    async fn an_unreachable_source_falls_back_to_the_module_last_pulled() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cache = new_cache(dir.path(), DEFAULT_MAX_CACHE_BYTES)?;
        // Both sources are a closed loopback port here.
        let store = put(&cache, "app:latest", b"store module").await?;
        let registry = put(&cache, "127.0.0.1:9/app:v1", b"registry module").await?;
        drop((store.clone(), registry.clone()));
        drop(cache);
        let restarted = new_cache(dir.path(), DEFAULT_MAX_CACHE_BYTES)?;
        for (image, want) in [("app:latest", &store), ("127.0.0.1:9/app:v1", &registry)] {
            let m = restarted.pull(image, &Keyring::default()).await?;
            assert_eq!(m.digest, want.digest, "{image}");
            assert!(m.offline.is_some(), "{image}: the stand-in is said");
        }
        // Never pulled: nothing to stand in.
        assert!(matches!(
            restarted.pull("other:latest", &Keyring::default()).await,
            Err(PullError::Unreachable(_))
        ));
        Ok(())
    }

    #[tokio::test]
    async fn eviction_removes_the_least_recently_used_idle_modules() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        // Room for two 100-byte modules.
        let cache = new_cache(dir.path(), 250)?;
        let a = put(&cache, "r.io/a:v1", &[b'a'; 100]).await?;
        let b = put(&cache, "r.io/b:v1", &[b'b'; 100]).await?;
        // `a` is in use by a pod; `b` is not.
        drop(b);
        let c = put(&cache, "r.io/c:v1", &[b'c'; 100]).await?;
        assert!(a.path.exists(), "in use: never evicted");
        assert!(c.path.exists(), "just pulled");
        assert!(cache.present("r.io/b:v1").await?.is_none(), "b was evicted");
        assert!(
            !dir.path()
                .join(format!(
                    "{}.wasm",
                    digest_of(&[b'b'; 100]).replace(':', "-")
                ))
                .exists()
        );

        // Now nothing holds `a` or `c`; `a` was used longer ago... unless it
        // is used again: then `c` goes first.
        drop(c);
        let a_again = cache.present("r.io/a:v1").await?;
        drop(a);
        drop(a_again);
        let d = put(&cache, "r.io/d:v1", &[b'd'; 100]).await?;
        assert!(
            cache.present("r.io/c:v1").await?.is_none(),
            "c was the least recently used"
        );
        assert!(cache.present("r.io/a:v1").await?.is_some());
        assert!(d.path.exists());
        Ok(())
    }

    #[tokio::test]
    async fn a_cache_full_of_used_modules_keeps_them_all() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cache = new_cache(dir.path(), 150)?;
        let a = put(&cache, "r.io/a:v1", &[b'a'; 100]).await?;
        let b = put(&cache, "r.io/b:v1", &[b'b'; 100]).await?;
        assert!(a.path.exists() && b.path.exists());
        // A clone is another holder of the same use.
        let a2 = a.clone();
        drop(a);
        drop(b);
        let _c = put(&cache, "r.io/c:v1", &[b'c'; 100]).await?;
        assert!(a2.path.exists(), "still held through its clone");
        assert!(cache.present("r.io/b:v1").await?.is_none());
        Ok(())
    }

    #[tokio::test]
    async fn pulls_wait_for_a_free_slot() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut config = ModuleCacheConfig::new(dir.path());
        config.max_parallel_pulls = 1;
        let client = kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse()?))?;
        let cache = ModuleCache::new(client, config);
        let held = cache.inner.slots.acquire().await?;
        let c = cache.clone();
        // Nothing listens on port 1: the pull fails fast once it may start.
        let pull =
            tokio::spawn(async move { c.pull("127.0.0.1:1/app:v1", &Keyring::default()).await });
        let deadline = Instant::now() + Duration::from_secs(20);
        while cache.pulls_waiting() == 0 {
            anyhow::ensure!(Instant::now() < deadline, "the pull never queued");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!pull.is_finished(), "it waits while the only slot is taken");
        drop(held);
        let result = tokio::time::timeout(Duration::from_secs(60), pull).await??;
        let message = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("reaching 127.0.0.1:1"), "{message}");
        assert_eq!(cache.pulls_waiting(), 0);
        Ok(())
    }

    #[test]
    fn durations_read_like_go() {
        assert_eq!(go_duration(Duration::from_micros(300)), "0s");
        assert_eq!(go_duration(Duration::from_millis(523)), "523ms");
        assert_eq!(go_duration(Duration::from_millis(1250)), "1.25s");
        assert_eq!(go_duration(Duration::from_secs(60)), "1m0s");
        assert_eq!(go_duration(Duration::from_millis(62_500)), "1m2.5s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode_query("hello:v1"), "hello%3Av1");
        assert_eq!(encode_query("a@sha256:0f"), "a%40sha256%3A0f");
    }
}
