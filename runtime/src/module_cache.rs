//! Fetching modules ("pulling images") into the node's module cache.
//!
//! A bare `name:tag` or `name@sha256:…` is resolved against the cluster's
//! module store through the apiserver (`/wasmkube/v1/resolve`, then
//! `/wasmkube/v1/blobs/<digest>`), with the kubelet's own credentials. Blobs
//! are verified against their digest while they stream to disk and kept
//! under `<data>/modules/` by digest, so each module is downloaded once per
//! node. Concurrent pulls of one digest share one download (each download
//! writes its own temporary file), and a file found in the cache is hashed
//! once before this process first trusts it: a file left behind truncated
//! or altered is fetched again, not run.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::AsyncReadExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use wasmkube_api::image::{ImageRef, Reference};
use wasmkube_api::wasm::{MAX_MODULE_BYTES, MODULE_API, ResolvedModule, is_valid_digest};

/// A module present on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalModule {
    /// `sha256:…`
    pub digest: String,
    /// The file holding its bytes.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Whether it was already on the node (no download).
    pub cached: bool,
    /// How long the pull took.
    pub took: std::time::Duration,
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
}

/// Where modules come from; the kubelet's implementation is [`ModuleCache`].
#[async_trait::async_trait]
pub trait ModuleSource: Send + Sync + 'static {
    /// Makes the module named by `image` available locally.
    async fn fetch(&self, image: &str) -> Result<LocalModule, PullError>;
}

/// The node's module cache, filled from the cluster's module store.
#[derive(Clone)]
pub struct ModuleCache {
    client: kube::Client,
    dir: PathBuf,
    /// One lock per digest: the pulls of a digest take turns, so the second
    /// finds the first one's file instead of downloading it again.
    pulls: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Digests whose cached file this process has hashed and found right.
    verified: Arc<Mutex<HashSet<String>>>,
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

impl ModuleCache {
    /// A cache keeping modules under `dir`.
    pub fn new(client: kube::Client, dir: PathBuf) -> ModuleCache {
        ModuleCache {
            client,
            dir,
            pulls: Arc::default(),
            verified: Arc::default(),
        }
    }

    fn pull_lock(&self, digest: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut pulls = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
        pulls.entry(digest.to_string()).or_default().clone()
    }

    fn is_verified(&self, digest: &str) -> bool {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(digest)
    }

    fn mark_verified(&self, digest: &str) {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest.to_string());
    }

    /// The cached file of `digest`, if there is one with the right bytes. A
    /// file with the wrong bytes is removed (the caller downloads it again).
    async fn cached(&self, digest: &str, started: Instant) -> Option<LocalModule> {
        let path = self.path_of(digest);
        let meta = tokio::fs::metadata(&path).await.ok()?;
        if !self.is_verified(digest) {
            match file_has_digest(&path, digest).await {
                Ok(true) => self.mark_verified(digest),
                Ok(false) => {
                    tracing::warn!(path = %path.display(), digest, "cached module does not match its digest; fetching it again");
                    let _ = tokio::fs::remove_file(&path).await;
                    return None;
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "reading a cached module failed");
                    return None;
                }
            }
        }
        Some(LocalModule {
            digest: digest.to_string(),
            path,
            size: meta.len(),
            cached: true,
            took: started.elapsed(),
        })
    }

    async fn resolve(&self, image: &str) -> Result<ResolvedModule, PullError> {
        let uri = format!("{MODULE_API}/resolve?image={}", encode_query(image));
        let req = http::Request::get(uri)
            .body(Vec::new())
            .map_err(|e| PullError::Failed(e.to_string()))?;
        let text = self
            .client
            .request_text(req)
            .await
            .map_err(|e| PullError::Failed(api_message(&e)))?;
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
            .client
            .request_stream(req)
            .await
            .map_err(|e| PullError::Failed(api_message(&e)))?;
        let mut body = Box::pin(body);
        let io_err = |e: std::io::Error| PullError::Failed(format!("downloading {digest}: {e}"));
        tokio::fs::create_dir_all(&self.dir).await.map_err(io_err)?;
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

    fn path_of(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{}.wasm", digest.replace(':', "-")))
    }
}

#[async_trait::async_trait]
impl ModuleSource for ModuleCache {
    async fn fetch(&self, image: &str) -> Result<LocalModule, PullError> {
        let started = Instant::now();
        let reference =
            ImageRef::parse(image).map_err(|e| PullError::InvalidName(e.to_string()))?;
        if reference.registry.is_some() {
            return Err(PullError::Failed(
                "pulling from OCI registries is not supported yet".into(),
            ));
        }
        // A digest names the bytes themselves: if they are here, use them.
        if let Reference::Digest(d) = &reference.reference
            && is_valid_digest(d)
        {
            let lock = self.pull_lock(d);
            let _turn = lock.lock().await;
            if let Some(m) = self.cached(d, started).await {
                return Ok(m);
            }
        }
        let resolved = self.resolve(image).await?;
        let lock = self.pull_lock(&resolved.digest);
        let _turn = lock.lock().await;
        if let Some(m) = self.cached(&resolved.digest, started).await {
            return Ok(m);
        }
        let path = self.path_of(&resolved.digest);
        let size = self.download(&resolved.digest, &path).await?;
        self.mark_verified(&resolved.digest);
        Ok(LocalModule {
            digest: resolved.digest,
            path,
            size,
            cached: false,
            took: started.elapsed(),
        })
    }
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

    #[test]
    fn concurrent_downloads_never_share_a_temp_file() {
        let path = Path::new("/m/sha256-ab.wasm");
        let names: HashSet<PathBuf> = (0..100).map(|_| temp_path(path)).collect();
        assert_eq!(names.len(), 100);
        assert!(names.iter().all(|p| p.parent() == path.parent()));
    }

    #[tokio::test]
    async fn a_truncated_cached_module_is_not_trusted() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let config = kube::Config::new("http://127.0.0.1:9".parse()?);
        let cache = ModuleCache::new(kube::Client::try_from(config)?, dir.path().to_path_buf());
        let bytes = b"\0asm\x01\0\0\0 the whole module";
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let path = cache.path_of(&digest);
        tokio::fs::write(&path, &bytes[..6]).await?;
        assert!(cache.cached(&digest, Instant::now()).await.is_none());
        assert!(
            !path.exists(),
            "the bad file is removed to be fetched again"
        );
        // Nor does a pull by digest run it: it goes back to the store
        // (unreachable here).
        tokio::fs::write(&path, &bytes[..6]).await?;
        assert!(cache.fetch(&format!("m@{digest}")).await.is_err());

        tokio::fs::write(&path, bytes).await?;
        let m = cache.cached(&digest, Instant::now()).await;
        assert_eq!(m.map(|m| m.size), Some(bytes.len() as u64));
        Ok(())
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode_query("hello:v1"), "hello%3Av1");
        assert_eq!(encode_query("a@sha256:0f"), "a%40sha256%3A0f");
    }
}
