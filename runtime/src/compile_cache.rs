//! Compiled modules and components kept on disk, so that a restarted
//! kubelet loads machine code instead of compiling every module again.
//!
//! Artifacts live under `<root>/<engine>/<digest>.cwasm`, where `<engine>`
//! is a hash of [`Engine::precompile_compatibility_hash`]: an artifact is
//! only ever offered to an engine that can run it (another wasmtime version
//! or other compilation settings get a directory of their own). New files
//! are written to a temporary name and renamed into place, so a crash never
//! leaves a half-written artifact under a real name. The whole root is kept
//! under a size cap by evicting the least recently used files (a load or a
//! store sets a file's modification time, which is the "last used" clock;
//! access times are often disabled on hosts).
//!
//! This is the only place in the crate with `unsafe` code: loading an
//! artifact maps machine code that wasmtime runs without validating it.

use std::hash::Hasher;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::{Module, Precompiled};

/// The default cap of the whole cache.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// Temporary files older than this are leftovers of a crash.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// Distinguishes the temporary files of concurrent writes in one process.
static WRITES: AtomicU64 = AtomicU64::new(0);

/// Why the cache could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("compiled-module cache at {path}: {source}")]
pub struct Error {
    /// The directory.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// A compiled artifact read back from the cache.
pub enum Artifact {
    /// A core module.
    Module(Module),
    /// A component.
    Component(Component),
}

/// The on-disk cache of one engine's compiled artifacts.
#[derive(Debug)]
pub struct CompileCache {
    root: PathBuf,
    dir: PathBuf,
    max_bytes: u64,
    /// Eviction scans the directory and deletes files: one at a time.
    evicting: Mutex<()>,
}

/// Feeds `Hash` output into SHA-256, which (unlike `DefaultHasher`) is the
/// same in every build, so the directory name survives a recompiled kubelet
/// with the same wasmtime.
struct StableHasher(Sha256);

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
}

/// The name of `engine`'s directory: engines with the same name can load
/// each other's artifacts.
pub fn engine_key(engine: &Engine) -> String {
    use std::hash::Hash as _;
    let mut hasher = StableHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..12])
}

impl CompileCache {
    /// Opens (creating it if needed) the cache of `engine` under `root`,
    /// keeping everything under `root` within `max_bytes`.
    pub fn open(root: &Path, engine: &Engine, max_bytes: u64) -> Result<CompileCache, Error> {
        let dir = root.join(engine_key(engine));
        std::fs::create_dir_all(&dir).map_err(|source| Error {
            path: dir.clone(),
            source,
        })?;
        let cache = CompileCache {
            root: root.to_path_buf(),
            dir,
            max_bytes,
            evicting: Mutex::new(()),
        };
        // The cap may have shrunk since the last run.
        cache.evict();
        Ok(cache)
    }

    /// The directory holding this engine's artifacts.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cap of the whole cache, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The file of `digest`; `None` for a digest that is not a plain
    /// `algorithm:hex` name (it could escape the directory).
    fn path_of(&self, digest: &str) -> Option<PathBuf> {
        let plain = !digest.is_empty()
            && digest.len() <= 200
            && digest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-');
        plain.then(|| self.dir.join(format!("{}.cwasm", digest.replace(':', "-"))))
    }

    /// Whether an artifact of `digest` is on disk (it may still turn out
    /// unusable when loaded).
    pub fn contains(&self, digest: &str) -> bool {
        self.path_of(digest).is_some_and(|p| p.is_file())
    }

    /// The artifact of `digest`, if the cache has a usable one. A file that
    /// does not load (truncated, from another build) is removed, and the
    /// caller compiles.
    pub fn load(&self, engine: &Engine, digest: &str) -> Option<Artifact> {
        let path = self.path_of(digest)?;
        if !path.is_file() {
            return None;
        }
        let kind = match Engine::detect_precompiled_file(&path) {
            Ok(Some(kind)) => kind,
            Ok(None) => {
                tracing::warn!(path = %path.display(), "not a compiled artifact; removing it");
                let _ = std::fs::remove_file(&path);
                return None;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "unreadable compiled artifact; removing it");
                let _ = std::fs::remove_file(&path);
                return None;
            }
        };
        match deserialize(engine, &path, kind) {
            Ok(artifact) => {
                touch(&path);
                Some(artifact)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "cached artifact does not load; compiling instead");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Keeps `bytes` (from `Module::serialize` or `Component::serialize`) as
    /// the artifact of `digest`, then evicts down to the cap.
    pub fn store(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        let Some(path) = self.path_of(digest) else {
            return Ok(());
        };
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!(".tmp-{}-{n}.cwasm", std::process::id()));
        let written = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            // Renaming replaces the directory entry, never the contents of
            // a file some module may still have mapped.
            std::fs::rename(&tmp, &path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        self.evict();
        Ok(())
    }

    /// Deletes the least recently used artifacts (of any engine) until the
    /// cache is within its cap. Errors only cost disk space, so they are
    /// logged, not returned.
    pub fn evict(&self) {
        let _turn = self
            .evicting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut files = Vec::new();
        let now = SystemTime::now();
        let dirs = match std::fs::read_dir(&self.root) {
            Ok(dirs) => dirs,
            Err(e) => {
                tracing::warn!(root = %self.root.display(), error = %e, "listing the compiled-module cache failed");
                return;
            }
        };
        for dir in dirs.flatten() {
            let Ok(entries) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                let name = entry.file_name();
                if name.to_string_lossy().starts_with(".tmp-") {
                    // Another write in progress, unless it is old.
                    if now.duration_since(used).unwrap_or_default() > STALE_TEMP {
                        let _ = std::fs::remove_file(entry.path());
                    }
                    continue;
                }
                files.push((used, meta.len(), entry.path()));
            }
        }
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        if total <= self.max_bytes {
            return;
        }
        files.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.2.cmp(&b.2)));
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            // A module loaded from this file keeps its mapping: unlinking
            // does not change the mapped pages.
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    total = total.saturating_sub(len);
                    tracing::debug!(path = %path.display(), "evicted a compiled artifact");
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "evicting a compiled artifact failed")
                }
            }
        }
    }

    /// The total size of the artifacts under the root, in bytes.
    pub fn size(&self) -> u64 {
        let Ok(dirs) = std::fs::read_dir(&self.root) else {
            return 0;
        };
        dirs.flatten()
            .filter_map(|d| std::fs::read_dir(d.path()).ok())
            .flat_map(|entries| entries.flatten())
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    }
}

/// Marks `path` as just used, for eviction order.
fn touch(path: &Path) {
    let touched = std::fs::File::options()
        .append(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()));
    if let Err(e) = touched {
        tracing::debug!(path = %path.display(), error = %e, "marking a cached artifact used failed");
    }
}

/// Maps a compiled artifact.
///
/// SAFETY: wasmtime runs the machine code of a deserialized artifact as is,
/// so the bytes must come from `Module::serialize`/`Component::serialize`
/// of a compatible engine, and the mapped file must not change while the
/// module lives. Both hold for this cache:
/// - only this kubelet writes the directory, and only with the serialized
///   output of its own engine (written under a temporary name, then renamed
///   into place, so readers see whole files only); whoever could write other
///   files there can equally replace the kubelet binary, so the files are as
///   trusted as the program itself;
/// - files are never modified in place: a new artifact replaces the
///   directory entry, and eviction unlinks, both of which leave an existing
///   mapping untouched;
/// - artifacts of another wasmtime version or configuration live in another
///   directory, and wasmtime checks the version and settings recorded in
///   the file again, failing (not misbehaving) on a mismatch, which the
///   caller answers by compiling.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path, kind: Precompiled) -> wasmtime::Result<Artifact> {
    match kind {
        // SAFETY: see above.
        Precompiled::Module => {
            unsafe { Module::deserialize_file(engine, path) }.map(Artifact::Module)
        }
        // SAFETY: see above.
        Precompiled::Component => {
            unsafe { Component::deserialize_file(engine, path) }.map(Artifact::Component)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// wasmtime's error type is not a `std::error::Error`.
    fn w<T>(r: wasmtime::Result<T>) -> anyhow::Result<T> {
        r.map_err(|e| anyhow::anyhow!("{e:#}"))
    }

    fn engine() -> anyhow::Result<Engine> {
        let mut config = wasmtime::Config::new();
        config.gc_support(false);
        w(Engine::new(&config))
    }

    fn module_bytes(engine: &Engine, n: usize) -> anyhow::Result<Vec<u8>> {
        // Distinct modules of some size: a function per step.
        let funcs: String = (0..n)
            .map(|i| format!("(func (export \"f{i}\") (result i32) i32.const {i})"))
            .collect();
        let module = w(Module::new(engine, format!("(module {funcs})")))?;
        w(module.serialize())
    }

    #[test]
    fn an_artifact_loads_back_in_a_new_cache_on_the_same_dir() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let engine = engine()?;
        let cache = CompileCache::open(root.path(), &engine, DEFAULT_MAX_BYTES)?;
        assert!(cache.load(&engine, "sha256:aa").is_none());
        cache.store("sha256:aa", &module_bytes(&engine, 3)?)?;
        drop(cache);

        let cache = CompileCache::open(root.path(), &engine, DEFAULT_MAX_BYTES)?;
        let Some(Artifact::Module(module)) = cache.load(&engine, "sha256:aa") else {
            anyhow::bail!("the stored module did not load");
        };
        assert_eq!(module.exports().count(), 3);
        Ok(())
    }

    #[test]
    fn a_corrupt_artifact_is_removed_not_loaded() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let engine = engine()?;
        let cache = CompileCache::open(root.path(), &engine, DEFAULT_MAX_BYTES)?;
        let mut bytes = module_bytes(&engine, 3)?;
        bytes.truncate(bytes.len() / 2);
        cache.store("sha256:bb", &bytes)?;
        assert!(cache.load(&engine, "sha256:bb").is_none());
        assert!(!cache.dir().join("sha256-bb.cwasm").exists());
        std::fs::write(cache.dir().join("sha256-cc.cwasm"), b"\0asm\x01\0\0\0")?;
        assert!(cache.load(&engine, "sha256:cc").is_none());
        assert!(!cache.dir().join("sha256-cc.cwasm").exists());
        Ok(())
    }

    #[test]
    fn digests_that_could_escape_the_directory_are_not_cached() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let engine = engine()?;
        let cache = CompileCache::open(root.path(), &engine, DEFAULT_MAX_BYTES)?;
        for digest in ["../x", "a/b", "", "sha256:AB"] {
            assert!(cache.path_of(digest).is_none(), "{digest}");
        }
        cache.store("../escape", b"x")?;
        assert!(!root.path().join("escape.cwasm").exists());
        Ok(())
    }

    #[test]
    fn eviction_keeps_the_cache_under_its_cap_dropping_the_least_recently_used()
    -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let engine = engine()?;
        let one = module_bytes(&engine, 50)?;
        let len = one.len() as u64;
        // Room for two and a half artifacts.
        let cap = len * 5 / 2;
        let cache = CompileCache::open(root.path(), &engine, cap)?;
        let old = SystemTime::now() - Duration::from_secs(3600);
        cache.store("sha256:01", &one)?;
        cache.store("sha256:02", &one)?;
        // Make the order unambiguous whatever the file system's clock
        // resolution: 01 was used longest ago, then 02.
        for (name, age) in [("sha256-01.cwasm", 20), ("sha256-02.cwasm", 10)] {
            std::fs::File::options()
                .append(true)
                .open(cache.dir().join(name))?
                .set_modified(old + Duration::from_secs(60 - age))?;
        }
        // Using 01 makes 02 the least recently used.
        assert!(cache.load(&engine, "sha256:01").is_some());
        cache.store("sha256:03", &one)?;
        assert!(cache.size() <= cap, "{} > {cap}", cache.size());
        assert!(cache.dir().join("sha256-01.cwasm").exists());
        assert!(!cache.dir().join("sha256-02.cwasm").exists());
        assert!(cache.dir().join("sha256-03.cwasm").exists());

        // A smaller cap on reopening applies at once.
        let cache = CompileCache::open(root.path(), &engine, len)?;
        assert!(cache.size() <= len);
        Ok(())
    }

    #[test]
    fn engines_with_other_settings_use_other_directories() -> anyhow::Result<()> {
        let a = engine()?;
        let mut config = wasmtime::Config::new();
        config.gc_support(false).epoch_interruption(true);
        let b = w(Engine::new(&config))?;
        assert_eq!(engine_key(&a), engine_key(&engine()?));
        assert_ne!(engine_key(&a), engine_key(&b));
        Ok(())
    }
}
