//! What the kubelet keeps on disk to run its pods without the apiserver.
//!
//! An edge node may boot with no route to its control plane. To come back
//! with its pods anyway, the kubelet keeps, under `<data>/state/`:
//!
//! - `pods/<uid>.json`: every pod bound to this node as last seen from the
//!   API, written on each change and removed once the API says it is gone;
//! - `pod-status/<uid>.json`: the status this kubelet last computed for the
//!   pod (landed or not), so a restart continues from it rather than from
//!   whatever the API had before the node went offline;
//! - `configmaps/<ns>_<name>.json` and `secrets/<ns>_<name>.json` (mode
//!   0600): the data of the objects its pods reference, as last read.
//!
//! Which digest a module reference was last pulled as lives with the module
//! cache (`<data>/modules/images.json`, written with [`write_atomic`]).
//!
//! Every file is written atomically (temporary file, fsync, rename, fsync of
//! the directory), so a power cut leaves the old or the new version, never
//! half of one. A file that does not parse is skipped with a warning: the
//! API's copy replaces it once the node is back online. The whole store is
//! capped ([`LocalStateConfig::max_total_bytes`]) and so is each file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use serde::{Deserialize, Serialize};

/// Default cap of one stored file (a ConfigMap or Secret holds at most
/// 1 MiB of data; base64 and JSON add a third).
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 4 << 20;
/// Default cap of the whole store.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 256 << 20;

const PODS: &str = "pods";
const STATUSES: &str = "pod-status";
const CONFIG_MAPS: &str = "configmaps";
const SECRETS: &str = "secrets";

/// Local state errors.
#[derive(Debug, thiserror::Error)]
pub enum LocalStateError {
    /// Reading or writing a file.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An object could not be encoded.
    #[error("encoding {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Storing it would pass a size cap.
    #[error("{0}")]
    TooLarge(String),
    /// A uid, namespace or name that cannot name a file safely.
    #[error("refusing to store {0:?}: not a valid object name")]
    InvalidName(String),
}

/// Where the local state lives and how large it may grow.
#[derive(Debug, Clone)]
pub struct LocalStateConfig {
    /// The state directory (`<data>/state`).
    pub dir: PathBuf,
    /// Cap of one file.
    pub max_object_bytes: u64,
    /// Cap of all files together.
    pub max_total_bytes: u64,
}

impl LocalStateConfig {
    /// Defaults for a store in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> LocalStateConfig {
        LocalStateConfig {
            dir: dir.into(),
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StoredConfigMap {
    namespace: String,
    name: String,
    data: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct StoredSecret {
    namespace: String,
    name: String,
    data: BTreeMap<String, ByteString>,
}

/// The node's local state; cheap to clone, safe to share.
#[derive(Debug, Clone)]
pub struct LocalState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: LocalStateConfig,
    /// Size of every file in the store, to enforce the total cap.
    sizes: Mutex<HashMap<PathBuf, u64>>,
}

/// Distinguishes the temporary files of concurrent writes.
static WRITES: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` so that a crash leaves either the old file or
/// the new one: a temporary file in the same directory is written, synced
/// and renamed over `path`, then the directory is synced. `mode` (unix) is
/// set on the temporary file before any byte is written.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}-{n}", std::process::id()));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        #[cfg(not(unix))]
        let _ = mode;
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        // The rename itself must reach the disk too.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A uid: what the apiserver generates (a UUID), nothing that walks paths.
fn valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 128
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A namespace (DNS label) or object name (DNS subdomain): no `_`, so
/// `<ns>_<name>` is unambiguous, and no `/`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> LocalStateError + 'a {
    move |source| LocalStateError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Whether a failed request says the apiserver could not be reached (no
/// connection, a broken one, a timeout, a proxy or server that is not
/// serving) rather than an answer about the request itself: a 404 from a
/// reachable apiserver means the object does not exist, and a 401/403 that
/// the kubelet may not read it.
pub fn is_unreachable(e: &kube::Error) -> bool {
    match e {
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        kube::Error::Api(s) => matches!(s.code, 429 | 502 | 503 | 504),
        _ => false,
    }
}

/// The ConfigMaps and Secrets a pod reads: volumes (direct and projected),
/// env `valueFrom`, `envFrom`, and (Secrets) `imagePullSecrets`.
pub fn referenced_objects(pod: &Pod) -> (HashSet<String>, HashSet<String>) {
    let mut config_maps = HashSet::new();
    let mut secrets = HashSet::new();
    let Some(spec) = pod.spec.as_ref() else {
        return (config_maps, secrets);
    };
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            config_maps.insert(cm.name.clone());
        }
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.insert(name);
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &source.config_map {
                config_maps.insert(cm.name.clone());
            }
            if let Some(s) = &source.secret {
                secrets.insert(s.name.clone());
            }
        }
    }
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    for c in containers {
        for from in c.env_from.iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                config_maps.insert(r.name.clone());
            }
            if let Some(r) = &from.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
        for var in c.env.iter().flatten() {
            let Some(from) = &var.value_from else {
                continue;
            };
            if let Some(r) = &from.config_map_key_ref {
                config_maps.insert(r.name.clone());
            }
            if let Some(r) = &from.secret_key_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    for r in spec.image_pull_secrets.iter().flatten() {
        secrets.insert(r.name.clone());
    }
    (config_maps, secrets)
}

impl LocalState {
    /// Opens (creating) the store: its directories are made private, the
    /// temporary files of interrupted writes removed, sizes counted.
    pub fn open(config: LocalStateConfig) -> Result<LocalState, LocalStateError> {
        let mut sizes = HashMap::new();
        for sub in [PODS, STATUSES, CONFIG_MAPS, SECRETS] {
            let dir = config.dir.join(sub);
            std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                for d in [&config.dir, &dir] {
                    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
                        .map_err(io_err("restricting", d))?;
                }
            }
            for entry in std::fs::read_dir(&dir).map_err(io_err("reading", &dir))? {
                let Ok(entry) = entry else {
                    continue;
                };
                let path = entry.path();
                if entry.file_name().to_string_lossy().starts_with('.') {
                    // A write the previous run did not finish.
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                if let Ok(meta) = entry.metadata() {
                    sizes.insert(path, meta.len());
                }
            }
        }
        Ok(LocalState {
            inner: Arc::new(Inner {
                config,
                sizes: Mutex::new(sizes),
            }),
        })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.inner.config.dir
    }

    /// Bytes the store holds now.
    pub fn total_bytes(&self) -> u64 {
        self.sizes().values().sum()
    }

    fn sizes(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, u64>> {
        self.inner.sizes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pod_path(&self, uid: &str) -> Result<PathBuf, LocalStateError> {
        if !valid_uid(uid) {
            return Err(LocalStateError::InvalidName(uid.to_string()));
        }
        Ok(self.inner.config.dir.join(PODS).join(format!("{uid}.json")))
    }

    fn status_path(&self, uid: &str) -> Result<PathBuf, LocalStateError> {
        if !valid_uid(uid) {
            return Err(LocalStateError::InvalidName(uid.to_string()));
        }
        Ok(self
            .inner
            .config
            .dir
            .join(STATUSES)
            .join(format!("{uid}.json")))
    }

    fn object_path(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<PathBuf, LocalStateError> {
        if !valid_name(namespace) || !valid_name(name) {
            return Err(LocalStateError::InvalidName(format!("{namespace}/{name}")));
        }
        Ok(self
            .inner
            .config
            .dir
            .join(kind)
            .join(format!("{namespace}_{name}.json")))
    }

    /// Writes `bytes` to `path` within the caps.
    async fn put(&self, path: PathBuf, bytes: Vec<u8>, mode: u32) -> Result<(), LocalStateError> {
        let len = bytes.len() as u64;
        if len > self.inner.config.max_object_bytes {
            return Err(LocalStateError::TooLarge(format!(
                "{} would be {len} bytes, over the cap of {}",
                path.display(),
                self.inner.config.max_object_bytes
            )));
        }
        {
            let sizes = self.sizes();
            let others: u64 = sizes
                .iter()
                .filter(|(p, _)| **p != path)
                .map(|(_, s)| *s)
                .sum();
            if others.saturating_add(len) > self.inner.config.max_total_bytes {
                return Err(LocalStateError::TooLarge(format!(
                    "the local state would pass its cap of {} bytes writing {}",
                    self.inner.config.max_total_bytes,
                    path.display()
                )));
            }
        }
        let p = path.clone();
        tokio::task::spawn_blocking(move || write_atomic(&p, &bytes, mode))
            .await
            .map_err(|e| LocalStateError::Io {
                what: "writing",
                path: path.clone(),
                source: io::Error::other(e.to_string()),
            })?
            .map_err(io_err("writing", &path))?;
        self.sizes().insert(path, len);
        Ok(())
    }

    async fn remove(&self, path: PathBuf) -> Result<(), LocalStateError> {
        self.sizes().remove(&path);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", &path)(e)),
        }
    }

    /// Reads a file of the store; `None` when it does not exist, is too
    /// large to be one of ours, or cannot be read (with a warning).
    async fn get(&self, path: &Path) -> Option<Vec<u8>> {
        let meta = match tokio::fs::metadata(path).await {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "reading the local state failed");
                return None;
            }
        };
        if meta.len() > self.inner.config.max_object_bytes {
            tracing::warn!(path = %path.display(), size = meta.len(), "ignoring an oversized local state file");
            return None;
        }
        match tokio::fs::read(path).await {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "reading the local state failed");
                None
            }
        }
    }

    /// Records `pod` as last seen from the API.
    pub async fn save_pod(&self, pod: &Pod) -> Result<(), LocalStateError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let path = self.pod_path(&uid)?;
        let bytes = serde_json::to_vec(pod).map_err(|source| LocalStateError::Encode {
            what: format!("pod {uid}"),
            source,
        })?;
        self.put(path, bytes, 0o600).await
    }

    /// Records the status this kubelet computed for pod `uid`.
    pub async fn save_pod_status(
        &self,
        uid: &str,
        status: &PodStatus,
    ) -> Result<(), LocalStateError> {
        let path = self.status_path(uid)?;
        let bytes = serde_json::to_vec(status).map_err(|source| LocalStateError::Encode {
            what: format!("the status of pod {uid}"),
            source,
        })?;
        self.put(path, bytes, 0o600).await
    }

    /// Forgets pod `uid` (the API says it is gone).
    pub async fn remove_pod(&self, uid: &str) -> Result<(), LocalStateError> {
        self.remove(self.pod_path(uid)?).await?;
        self.remove(self.status_path(uid)?).await
    }

    /// The stored pods, each with the status this kubelet last computed for
    /// it when there is one. Files that do not parse are skipped with a
    /// warning.
    pub async fn load_pods(&self) -> Vec<Pod> {
        let dir = self.inner.config.dir.join(PODS);
        let mut pods = Vec::new();
        let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
            return pods;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let file_name = entry.file_name();
            let Some(uid) = file_name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|u| valid_uid(u))
            else {
                continue;
            };
            let path = entry.path();
            let Some(bytes) = self.get(&path).await else {
                continue;
            };
            let mut pod: Pod = match serde_json::from_slice(&bytes) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring a stored pod that does not parse");
                    continue;
                }
            };
            if pod.metadata.uid.as_deref() != Some(uid) {
                tracing::warn!(path = %path.display(), "ignoring a stored pod whose uid is not its file's");
                continue;
            }
            if let Ok(status_path) = self.status_path(uid)
                && let Some(bytes) = self.get(&status_path).await
            {
                match serde_json::from_slice::<PodStatus>(&bytes) {
                    Ok(s) => pod.status = Some(s),
                    Err(e) => {
                        tracing::warn!(path = %status_path.display(), error = %e, "ignoring a stored pod status that does not parse");
                    }
                }
            }
            pods.push(pod);
        }
        pods.sort_by(|a, b| a.metadata.uid.cmp(&b.metadata.uid));
        pods
    }

    /// Keeps only the pods (and their statuses) whose uid is in `live`, and
    /// the ConfigMaps and Secrets those pods reference.
    pub async fn retain_pods(&self, live: &[Pod]) {
        let uids: HashSet<String> = live.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        for sub in [PODS, STATUSES] {
            let dir = self.inner.config.dir.join(sub);
            for (path, stem) in list(&dir).await {
                if !uids.contains(&stem)
                    && let Err(e) = self.remove(path).await
                {
                    tracing::warn!(error = %e, "pruning the local state failed");
                }
            }
        }
        let mut config_maps = HashSet::new();
        let mut secrets = HashSet::new();
        for pod in live {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let (c, s) = referenced_objects(pod);
            config_maps.extend(c.into_iter().map(|n| format!("{ns}_{n}")));
            secrets.extend(s.into_iter().map(|n| format!("{ns}_{n}")));
        }
        for (sub, keep) in [(CONFIG_MAPS, &config_maps), (SECRETS, &secrets)] {
            let dir = self.inner.config.dir.join(sub);
            for (path, stem) in list(&dir).await {
                if !keep.contains(&stem)
                    && let Err(e) = self.remove(path).await
                {
                    tracing::warn!(error = %e, "pruning the local state failed");
                }
            }
        }
    }

    /// Records a ConfigMap's data as last read.
    pub async fn save_config_map(
        &self,
        namespace: &str,
        name: &str,
        data: &BTreeMap<String, String>,
    ) -> Result<(), LocalStateError> {
        let path = self.object_path(CONFIG_MAPS, namespace, name)?;
        let stored = StoredConfigMap {
            namespace: namespace.to_string(),
            name: name.to_string(),
            data: data.clone(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(|source| LocalStateError::Encode {
            what: format!("configmap {namespace}/{name}"),
            source,
        })?;
        self.put(path, bytes, 0o600).await
    }

    /// A ConfigMap's data as last read, if stored.
    pub async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<BTreeMap<String, String>> {
        let path = self.object_path(CONFIG_MAPS, namespace, name).ok()?;
        let bytes = self.get(&path).await?;
        match serde_json::from_slice::<StoredConfigMap>(&bytes) {
            Ok(s) if s.namespace == namespace && s.name == name => Some(s.data),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring a stored configmap that does not parse");
                None
            }
        }
    }

    /// Records a Secret's data as last read (mode 0600).
    pub async fn save_secret(
        &self,
        namespace: &str,
        name: &str,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<(), LocalStateError> {
        let path = self.object_path(SECRETS, namespace, name)?;
        let stored = StoredSecret {
            namespace: namespace.to_string(),
            name: name.to_string(),
            data: data
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone())))
                .collect(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(|source| LocalStateError::Encode {
            what: format!("secret {namespace}/{name}"),
            source,
        })?;
        self.put(path, bytes, 0o600).await
    }

    /// A Secret's data as last read, if stored.
    pub async fn secret(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let path = self.object_path(SECRETS, namespace, name).ok()?;
        let bytes = self.get(&path).await?;
        match serde_json::from_slice::<StoredSecret>(&bytes) {
            Ok(s) if s.namespace == namespace && s.name == name => {
                Some(s.data.into_iter().map(|(k, v)| (k, v.0)).collect())
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring a stored secret that does not parse");
                None
            }
        }
    }

    /// Forgets a ConfigMap (the API says it does not exist).
    pub async fn remove_config_map(&self, namespace: &str, name: &str) {
        if let Ok(path) = self.object_path(CONFIG_MAPS, namespace, name) {
            let _ = self.remove(path).await;
        }
    }

    /// Forgets a Secret (the API says it does not exist).
    pub async fn remove_secret(&self, namespace: &str, name: &str) {
        if let Ok(path) = self.object_path(SECRETS, namespace, name) {
            let _ = self.remove(path).await;
        }
    }
}

/// The `*.json` files of `dir` with their stems.
async fn list(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return out;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if stem.starts_with('.') {
            continue;
        }
        out.push((entry.path(), stem.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, EnvVar, EnvVarSource, PodSpec, SecretKeySelector, SecretVolumeSource, Volume,
    };

    fn pod(uid: &str) -> Pod {
        let mut p = Pod {
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("hello:v1".into()),
                    env: Some(vec![EnvVar {
                        name: "PASSWORD".into(),
                        value_from: Some(EnvVarSource {
                            secret_key_ref: Some(SecretKeySelector {
                                name: "creds".into(),
                                key: "password".into(),
                                optional: None,
                            }),
                            ..Default::default()
                        }),
                        value: None,
                    }]),
                    ..Default::default()
                }],
                volumes: Some(vec![Volume {
                    name: "v".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some("tls".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        p.metadata.name = Some(format!("p-{uid}"));
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = Some(uid.into());
        p
    }

    fn open(dir: &Path) -> anyhow::Result<LocalState> {
        Ok(LocalState::open(LocalStateConfig::new(dir.join("state")))?)
    }

    #[tokio::test]
    async fn pods_statuses_and_objects_survive_a_reopen() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = open(dir.path())?;
        state.save_pod(&pod("u1")).await?;
        state.save_pod(&pod("u2")).await?;
        let status = PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        };
        state.save_pod_status("u1", &status).await?;
        let cm: BTreeMap<String, String> = [("k".to_string(), "v".to_string())].into();
        state.save_config_map("default", "cfg", &cm).await?;
        let secret: BTreeMap<String, Vec<u8>> = [("password".to_string(), vec![0, 159, 1])].into();
        state.save_secret("default", "creds", &secret).await?;

        let state = open(dir.path())?;
        let pods = state.load_pods().await;
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[0].metadata.uid.as_deref(), Some("u1"));
        assert_eq!(pods[0].status.as_ref(), Some(&status));
        assert_eq!(pods[1].status, None);
        assert_eq!(pods[0].spec, pod("u1").spec);
        assert_eq!(state.config_map("default", "cfg").await, Some(cm));
        assert_eq!(state.config_map("default", "other").await, None);
        assert_eq!(state.secret("default", "creds").await, Some(secret));
        assert!(state.total_bytes() > 0);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join("state/secrets/default_creds.json");
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let mode = std::fs::metadata(dir.path().join("state"))?
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o700);
        }

        // Pruning to u2 drops u1 and keeps what u2 references.
        state
            .save_config_map("default", "unused", &BTreeMap::new())
            .await?;
        state.retain_pods(&[pod("u2")]).await;
        let pods = state.load_pods().await;
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].metadata.uid.as_deref(), Some("u2"));
        assert!(state.secret("default", "creds").await.is_some());
        assert_eq!(state.config_map("default", "cfg").await, None);
        assert_eq!(state.config_map("default", "unused").await, None);
        state.remove_pod("u2").await?;
        assert!(state.load_pods().await.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn corrupted_and_foreign_files_are_ignored() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = open(dir.path())?;
        state.save_pod(&pod("good")).await?;
        let pods_dir = dir.path().join("state/pods");
        std::fs::write(pods_dir.join("bad.json"), b"{\"metadata\": {\"uid\"")?;
        // A valid pod under another uid's name is not trusted either.
        std::fs::write(pods_dir.join("other.json"), serde_json::to_vec(&pod("x"))?)?;
        // Left by an interrupted write.
        std::fs::write(pods_dir.join(".good.json.tmp-1-1"), b"half")?;
        std::fs::write(dir.path().join("state/pod-status/good.json"), b"not json")?;
        std::fs::write(
            dir.path().join("state/configmaps/default_cfg.json"),
            b"[1,2",
        )?;

        let state = open(dir.path())?;
        assert!(!pods_dir.join(".good.json.tmp-1-1").exists());
        let pods = state.load_pods().await;
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].metadata.uid.as_deref(), Some("good"));
        assert_eq!(pods[0].status, None);
        assert_eq!(state.config_map("default", "cfg").await, None);
        Ok(())
    }

    #[tokio::test]
    async fn sizes_and_names_are_bounded() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut config = LocalStateConfig::new(dir.path().join("state"));
        config.max_object_bytes = 2048;
        config.max_total_bytes = 3000;
        let state = LocalState::open(config)?;
        let big: BTreeMap<String, String> = [("k".to_string(), "x".repeat(4096))].into();
        assert!(matches!(
            state.save_config_map("default", "big", &big).await,
            Err(LocalStateError::TooLarge(_))
        ));
        let half: BTreeMap<String, String> = [("k".to_string(), "x".repeat(1500))].into();
        state.save_config_map("default", "a", &half).await?;
        // Rewriting the same object does not count it twice.
        state.save_config_map("default", "a", &half).await?;
        assert!(matches!(
            state.save_config_map("default", "b", &half).await,
            Err(LocalStateError::TooLarge(_))
        ));
        assert!(matches!(
            state.save_config_map("..", "a", &half).await,
            Err(LocalStateError::InvalidName(_))
        ));
        assert!(matches!(
            state.save_pod(&pod("../escape")).await,
            Err(LocalStateError::InvalidName(_))
        ));
        // An oversized file put there by someone else is not read.
        std::fs::write(
            dir.path().join("state/configmaps/default_huge.json"),
            vec![b' '; 4096],
        )?;
        assert_eq!(state.config_map("default", "huge").await, None);
        Ok(())
    }
}
