//! Pod volumes, set up the way the kubelet's volume plugins do and handed
//! to the sandbox as preopened directories (the only host files a guest
//! can reach; wasmtime-wasi resolves every path beneath its preopen).
//!
//! - `emptyDir`: `<pod dir>/volumes/<name>`, or with `medium: Memory`
//!   `<memory root>/<pod uid>/<name>` on a RAM-backed filesystem
//!   (`/dev/shm/wasmkube-<id>`; without one: on disk, with a
//!   `MemoryMediumUnavailable` warning event). `sizeLimit` is enforced like
//!   the kubelet's eviction manager does it: usage (allocated blocks, like
//!   `du`) is measured periodically, and a pod whose volume is over the
//!   limit is evicted: its containers are stopped for good, the pod ends
//!   `Failed` with reason `Evicted` and an `Evicted` event, and its volume
//!   files are removed (its logs stay).
//! - `configMap` and `secret`: every key, or only `items` (key → relative
//!   path, subdirectories allowed; absolute paths and `..` are refused, a
//!   missing key fails unless `optional`), with `defaultMode`/`mode`.
//!   Written like Kubernetes' AtomicWriter: the files go into a fresh
//!   `..<timestamp>` directory, a `..data` symlink to it is swapped in by
//!   `rename`, and each user-visible name is a symlink `name -> ..data/name`,
//!   so a guest sees the whole old or the whole new payload, never half of
//!   an update. wasmtime-wasi follows such relative symlinks as long as
//!   they stay inside the preopen (tested with a real guest below), so the
//!   Kubernetes layout works unchanged. Always mounted read-only. `subPath`
//!   is refused for them: it names a file, WASI preopens only directories,
//!   and it would not see updates anyway.
//! - `hostPath`: only below a directory the node allows
//!   ([`VolumeConfig::allowed_host_paths`], `wasmkube server
//!   --allow-host-path DIR`; none by default), judged after resolving every
//!   symlink, and then opened component by component without following
//!   symlinks and kept open: the sandbox preopens `/proc/self/fd/N`, the
//!   very directory that was checked, so nothing swapped into the path
//!   after the check can lead outside. Types `""`, `Directory` and
//!   `DirectoryOrCreate` (created below an allowed directory only); `File`,
//!   `FileOrCreate`, `Socket`, `CharDevice` and `BlockDevice` are refused,
//!   since a preopen can only be a directory. Never written to or removed
//!   by the kubelet.
//! - `readOnly` mounts are preopened read-only; `subPath` (emptyDir and
//!   hostPath) is opened the same symlink-proof way, created if missing.
//!
//! Updates. A pod worker with a configMap or secret volume re-reads its
//! sources every half [`VolumeConfig::sync_interval`] (10 s by default),
//! through a TTL cache shared by all pods of the node (TTL: the other half)
//! that new pods bypass. A change therefore reaches the files within the
//! interval, and the apiserver sees at most two reads per referenced
//! object per interval however many pods mount it — the kubelet's TTL
//! cache strategy rather than a watch per object, which would hold one
//! open stream per referenced object. The files are rewritten only when
//! the projected content changed. Environment variables taken from
//! ConfigMaps and Secrets are read when a container starts and do not
//! change, as in Kubernetes. If a source disappears, the last files stay
//! and a `FailedMount` event says why.
//!
//! Files of a pod's volumes go with the pod ([`VolumeManager::teardown`]);
//! a kubelet that was down while pods were deleted removes what they left
//! when it starts ([`remove_orphans`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod, Volume, VolumeMount};
use sha2::Digest;
use tokio::time::Instant;

use crate::events::{EventSink, EventType, PodEvent};
use crate::pod_worker::{PodApi, parse_quantity};
use crate::sandbox::Preopen;

/// Default of [`VolumeConfig::sync_interval`].
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(10);
/// The symlink naming the current payload directory of a configMap or
/// secret volume (Kubernetes' name).
pub const DATA_DIR: &str = "..data";
const DATA_TMP: &str = "..data_tmp";
/// Kubernetes' default file mode of projected keys (`defaultMode: 0644`).
const DEFAULT_MODE: u32 = 0o644;
/// Kubernetes' limits on a projected path.
const MAX_PATH_LENGTH: usize = 4096;
const MAX_FILE_NAME_LENGTH: usize = 255;
/// The flag of `wasmkube server` that widens the hostPath policy.
pub const ALLOW_HOST_PATH_FLAG: &str = "--allow-host-path";

/// How the node treats volumes.
#[derive(Debug, Clone)]
pub struct VolumeConfig {
    /// This node's name, for messages.
    pub node_name: String,
    /// Directories below which hostPath volumes may be mounted. Empty:
    /// every hostPath volume is refused.
    pub allowed_host_paths: Vec<PathBuf>,
    /// Upper bound on how long a ConfigMap or Secret change takes to reach
    /// the files of the pods mounting it; also the period of the
    /// `emptyDir.sizeLimit` check (half of it, like the refresh).
    pub sync_interval: Duration,
    /// Where `medium: Memory` emptyDirs live (on a RAM-backed filesystem);
    /// `None` puts them on disk.
    pub memory_root: Option<PathBuf>,
}

impl VolumeConfig {
    /// The defaults for a kubelet keeping its files in `data_dir`.
    pub fn new(node_name: impl Into<String>, data_dir: &Path) -> VolumeConfig {
        VolumeConfig {
            node_name: node_name.into(),
            allowed_host_paths: Vec::new(),
            sync_interval: DEFAULT_SYNC_INTERVAL,
            memory_root: default_memory_root(data_dir),
        }
    }
}

/// `/dev/shm/wasmkube-<hash of data_dir>` when `/dev/shm` exists. One root
/// per kubelet, so that sweeping orphans never touches another kubelet's
/// pods on the same host.
pub fn default_memory_root(data_dir: &Path) -> Option<PathBuf> {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        return None;
    }
    let key = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = sha2::Sha256::digest(key.as_os_str().as_encoded_bytes());
    Some(shm.join(format!("wasmkube-{}", hex::encode(&digest[..8]))))
}

/// Why a container's volumes could not be set up. Shown as the container's
/// `CreateContainerConfigError` message and in a `FailedMount` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    /// A `volumeMounts[].name` that names no volume of the pod.
    #[error("volume \"{0}\" not found in the pod's volumes")]
    UnknownVolume(String),
    /// The volume could not be set up (source missing, bad `items`, I/O).
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {message}")]
    SetUp {
        /// The volume.
        volume: String,
        /// Why.
        message: String,
    },
    /// A hostPath outside what the node allows.
    #[error(
        "MountVolume.SetUp failed for volume \"{volume}\" : hostPath \"{path}\" is not allowed on node \"{node}\": start the node with {flag} {path} (or a parent directory) to allow it",
        flag = ALLOW_HOST_PATH_FLAG
    )]
    HostPathDenied {
        /// The volume.
        volume: String,
        /// The path asked for.
        path: String,
        /// This node.
        node: String,
    },
    /// A volume type or option this runtime cannot provide.
    #[error("volume \"{volume}\": {message}")]
    Unsupported {
        /// The volume.
        volume: String,
        /// What and why.
        message: String,
    },
}

fn setup_error(volume: &str, message: impl Into<String>) -> MountError {
    MountError::SetUp {
        volume: volume.to_string(),
        message: message.into(),
    }
}

/// Where projected data comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// A ConfigMap's `data`.
    ConfigMap,
    /// A Secret's `data` (and `stringData`).
    Secret,
}

impl SourceKind {
    fn noun(self) -> &'static str {
        match self {
            SourceKind::ConfigMap => "configmap",
            SourceKind::Secret => "secret",
        }
    }
}

/// One file of a projected volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectedFile {
    /// The content.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// The files of a configMap or secret volume, by relative path.
pub type Payload = BTreeMap<PathBuf, ProjectedFile>;

/// Checks a projected path the way Kubernetes' atomic writer does and
/// returns it normalized (no `.` or empty components).
pub fn validate_path(path: &str) -> Result<PathBuf, String> {
    if path.is_empty() {
        return Err(format!("invalid path: must not be empty: {path:?}"));
    }
    if path.starts_with('/') {
        return Err(format!("invalid path: must be relative path: {path}"));
    }
    if path.len() > MAX_PATH_LENGTH {
        return Err(format!(
            "invalid path: must be less than or equal to {MAX_PATH_LENGTH} characters"
        ));
    }
    let mut out = PathBuf::new();
    for item in path.split('/') {
        if item == ".." {
            return Err(format!("invalid path: must not contain '..': {path}"));
        }
        if item.len() > MAX_FILE_NAME_LENGTH {
            return Err(format!(
                "invalid path: filenames must be less than or equal to {MAX_FILE_NAME_LENGTH} characters"
            ));
        }
        if item.is_empty() || item == "." {
            continue;
        }
        if out.as_os_str().is_empty() && item.starts_with("..") {
            // `..data` and the timestamped directories are the writer's.
            return Err(format!("invalid path: must not start with '..': {path}"));
        }
        out.push(item);
    }
    if out.as_os_str().is_empty() {
        return Err(format!("invalid path: must not be empty: {path:?}"));
    }
    Ok(out)
}

fn file_mode(mode: Option<i32>, default_mode: Option<i32>) -> u32 {
    mode.or(default_mode)
        .and_then(|m| u32::try_from(m).ok())
        .map_or(DEFAULT_MODE, |m| m & 0o777)
}

/// The files of a configMap or secret volume named `source` whose object
/// holds `data`: every key, or only `items` (key → relative path). A key an
/// item names that is missing fails, unless `optional`.
pub fn project(
    kind: SourceKind,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, String> {
    let mut payload = Payload::new();
    match items {
        None => {
            for (key, value) in data {
                let path = validate_path(key)?;
                payload.insert(
                    path,
                    ProjectedFile {
                        data: value.clone(),
                        mode: file_mode(None, default_mode),
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                let Some(value) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(match kind {
                        SourceKind::ConfigMap => {
                            format!("configmap references non-existent config key: {}", item.key)
                        }
                        SourceKind::Secret => {
                            format!("references non-existent secret key: {}", item.key)
                        }
                    });
                };
                let path = validate_path(&item.path)?;
                payload.insert(
                    path,
                    ProjectedFile {
                        data: value.clone(),
                        mode: file_mode(item.mode, default_mode),
                    },
                );
            }
        }
    }
    // `a` as a file and `a/b` as another cannot both exist.
    for path in payload.keys() {
        for parent in path.ancestors().skip(1) {
            if payload.contains_key(parent) {
                return Err(format!(
                    "invalid path: {} is both a file and a directory of {}",
                    parent.display(),
                    path.display()
                ));
            }
        }
    }
    Ok(payload)
}

fn payload_digest(payload: &Payload) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    for (path, file) in payload {
        let p = path.as_os_str().as_encoded_bytes();
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
        h.update(file.mode.to_le_bytes());
        h.update((file.data.len() as u64).to_le_bytes());
        h.update(&file.data);
    }
    h.finalize().into()
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(_target: &Path, _link: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "projected volumes need symlinks",
    ))
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn mode_of(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o777
}

#[cfg(not(unix))]
fn mode_of(_meta: &std::fs::Metadata) -> u32 {
    DEFAULT_MODE
}

/// Whether the directory `dir` holds exactly `payload`.
fn holds(dir: &Path, payload: &Payload) -> io::Result<bool> {
    let mut seen = 0usize;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(dir.join(&rel))? {
            let entry = entry?;
            let rel = rel.join(entry.file_name());
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(rel);
                continue;
            }
            let Some(want) = payload.get(&rel) else {
                return Ok(false);
            };
            if !meta.is_file()
                || meta.len() != want.data.len() as u64
                || mode_of(&meta) != want.mode
                || std::fs::read(dir.join(&rel))? != want.data
            {
                return Ok(false);
            }
            seen += 1;
        }
    }
    Ok(seen == payload.len())
}

fn new_payload_dir(dir: &Path) -> io::Result<OsString> {
    let stamp = jiff::Timestamp::now();
    let base = format!("..{}", stamp.strftime("%Y_%m_%d_%H_%M_%S"));
    let nanos = stamp.subsec_nanosecond();
    for attempt in 0u32..1000 {
        let name = OsString::from(format!("{base}.{nanos:09}{attempt}"));
        match std::fs::create_dir(dir.join(&name)) {
            Ok(()) => return Ok(name),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free name for the payload directory",
    ))
}

fn remove_any(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// Fills the new payload directory `name`, then points `..data` at it.
fn stage_and_swap(dir: &Path, name: &OsString, payload: &Payload) -> io::Result<()> {
    let staged = dir.join(name);
    for (rel, file) in payload {
        let path = staged.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &file.data)?;
        set_mode(&path, file.mode)?;
    }
    let tmp = dir.join(DATA_TMP);
    remove_any(&tmp)?;
    symlink(Path::new(name), &tmp)?;
    // rename(2) replaces `..data` in one step: readers see old or new.
    std::fs::rename(&tmp, dir.join(DATA_DIR))
}

/// Writes `payload` into `dir` the way Kubernetes' AtomicWriter does and
/// returns whether anything changed.
///
/// The files go into a fresh `..<timestamp>` directory; a `..data_tmp`
/// symlink to it is renamed over `..data` (one atomic step); each
/// top-level name is a symlink `name -> ..data/name`. A reader resolving
/// `name` therefore sees either the whole old or the whole new payload.
/// Relative symlinks that stay inside the directory are followed by
/// wasmtime-wasi inside a preopen, so the guest sees the same.
pub fn write_atomic(dir: &Path, payload: &Payload) -> io::Result<bool> {
    std::fs::create_dir_all(dir)?;
    let current: Option<OsString> = std::fs::read_link(dir.join(DATA_DIR))
        .ok()
        .map(PathBuf::into_os_string)
        .filter(|name| {
            let p = Path::new(name);
            p.components().count() == 1 && dir.join(p).is_dir()
        });
    let unchanged = match &current {
        Some(name) => holds(&dir.join(name), payload)?,
        None => false,
    };
    let current = if unchanged {
        current
    } else {
        let name = new_payload_dir(dir)?;
        if let Err(e) = stage_and_swap(dir, &name, payload) {
            let _ = std::fs::remove_dir_all(dir.join(&name));
            return Err(e);
        }
        Some(name)
    };

    // The user-visible names: one symlink per top-level component.
    let top: BTreeSet<OsString> = payload
        .keys()
        .filter_map(|p| p.components().next())
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    for name in &top {
        let link = dir.join(name);
        let target = Path::new(DATA_DIR).join(name);
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => {
                if std::fs::read_link(&link)? != target {
                    std::fs::remove_file(&link)?;
                    symlink(&target, &link)?;
                }
            }
            Ok(_) => {
                // A plain file or directory (an older layout): replace it.
                remove_any(&link)?;
                symlink(&target, &link)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => symlink(&target, &link)?,
            Err(e) => return Err(e),
        }
    }
    // Names no longer projected, older payload directories, a stale
    // `..data_tmp`.
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let reserved = name.as_encoded_bytes().starts_with(b"..");
        let keep = if reserved {
            name == DATA_DIR || Some(&name) == current.as_ref()
        } else {
            top.contains(&name)
        };
        if !keep {
            remove_any(&dir.join(&name))?;
        }
    }
    Ok(!unchanged)
}

/// Bytes a directory tree takes on disk (like `du`): blocks of files and
/// directories, hard links counted once, symlinks not followed.
pub fn disk_usage(dir: &Path) -> io::Result<u64> {
    let mut total = 0u64;
    let mut linked: HashSet<(u64, u64)> = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            // Removed while walking (the guest is running).
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        total = total.saturating_add(allocated(&meta, &mut linked));
        if meta.is_dir() {
            let entries = match std::fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                stack.push(entry?.path());
            }
        }
    }
    Ok(total)
}

#[cfg(unix)]
fn allocated(meta: &std::fs::Metadata, linked: &mut HashSet<(u64, u64)>) -> u64 {
    use std::os::unix::fs::MetadataExt;
    if !meta.is_dir() && meta.nlink() > 1 && !linked.insert((meta.dev(), meta.ino())) {
        return 0;
    }
    // Blocks rather than length: a sparse file costs what it allocates.
    meta.blocks().saturating_mul(512)
}

#[cfg(not(unix))]
fn allocated(meta: &std::fs::Metadata, _linked: &mut HashSet<(u64, u64)>) -> u64 {
    meta.len()
}

/// A directory opened by the kubelet and kept open while mounted. The
/// sandbox preopens it through `/proc/self/fd/N`, which names this very
/// directory whatever happens to the path afterwards.
#[derive(Debug)]
pub struct HeldDir {
    file: std::fs::File,
    /// The path it was opened by (for messages).
    pub path: PathBuf,
}

impl HeldDir {
    /// The path the sandbox opens.
    pub fn preopen_path(&self) -> PathBuf {
        fd_path(&self.file).unwrap_or_else(|| self.path.clone())
    }
}

#[cfg(target_os = "linux")]
fn fd_path(file: &std::fs::File) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    Some(PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())))
}

#[cfg(all(unix, not(target_os = "linux")))]
fn fd_path(file: &std::fs::File) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    Some(PathBuf::from(format!("/dev/fd/{}", file.as_raw_fd())))
}

#[cfg(not(unix))]
fn fd_path(_file: &std::fs::File) -> Option<PathBuf> {
    None
}

/// Opens `rel` below the open directory `root`, one component at a time
/// without following symlinks; missing components are created when
/// `create`. Nothing a guest or anyone else swaps into the path can lead
/// the open outside `root`.
#[cfg(unix)]
fn open_beneath(root: &std::fs::File, rel: &[OsString], create: bool) -> io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags, openat};
    #[cfg(target_os = "linux")]
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    #[cfg(not(target_os = "linux"))]
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir_mode = Mode::RWXU | Mode::RGRP | Mode::XGRP | Mode::ROTH | Mode::XOTH;
    let mut dir: std::os::fd::OwnedFd = root.try_clone()?.into();
    for name in rel {
        let next = match openat(&dir, name.as_os_str(), flags, Mode::empty()) {
            Err(rustix::io::Errno::NOENT) if create => {
                match rustix::fs::mkdirat(&dir, name.as_os_str(), dir_mode) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                openat(&dir, name.as_os_str(), flags, Mode::empty())
            }
            other => other,
        };
        dir = next.map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => io::Error::other(format!(
                "{} is a symlink or not a directory",
                Path::new(name).display()
            )),
            e => e.into(),
        })?;
    }
    Ok(std::fs::File::from(dir))
}

#[cfg(not(unix))]
fn open_beneath(
    root: &std::fs::File,
    rel: &[OsString],
    _create: bool,
) -> io::Result<std::fs::File> {
    if rel.is_empty() {
        return root.try_clone();
    }
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "subdirectories of volumes need a unix host",
    ))
}

fn open_dir(path: &Path) -> io::Result<std::fs::File> {
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            path.display()
        )));
    }
    Ok(file)
}

/// Splits a relative `subPath` into components, refusing absolute paths
/// and `..`.
fn sub_path_components(sub_path: &str) -> Result<Vec<OsString>, String> {
    let path = Path::new(sub_path);
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!("subPath {sub_path:?} must not contain '..'"));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("subPath {sub_path:?} must be a relative path"));
            }
        }
    }
    Ok(out)
}

/// Whether a hostPath type creates a missing directory; the types WASI
/// cannot mount (anything but a directory) with the reason.
fn host_path_creates(type_: Option<&str>) -> Result<bool, String> {
    match type_.unwrap_or_default() {
        "" | "Directory" => Ok(false),
        "DirectoryOrCreate" => Ok(true),
        t @ ("File" | "FileOrCreate" | "Socket" | "CharDevice" | "BlockDevice") => Err(format!(
            "hostPath type {t:?} is not supported: a WASI guest can only be given directories (preopens); mount the directory that holds it instead"
        )),
        t => Err(format!("hostPath type {t:?} is not a known type")),
    }
}

/// Why a hostPath cannot be mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPathError {
    /// Outside every allowed directory.
    Denied,
    /// Invalid, missing, of the wrong type, or not openable.
    Invalid(String),
}

/// Opens a hostPath volume's directory if the node's policy allows it:
/// the path (absolute, without `..`) must resolve, after following every
/// symlink, inside one of `allowed` (also canonicalized).
/// `DirectoryOrCreate` creates what is missing, below an allowed
/// directory only.
pub fn open_host_path(
    allowed: &[PathBuf],
    path: &str,
    type_: Option<&str>,
) -> Result<HeldDir, HostPathError> {
    let invalid = HostPathError::Invalid;
    let create = host_path_creates(type_).map_err(invalid)?;
    let requested = Path::new(path);
    if !requested.is_absolute() {
        return Err(invalid(format!(
            "hostPath {path:?} must be an absolute path"
        )));
    }
    if requested.components().any(|c| c == Component::ParentDir) {
        return Err(invalid(format!("hostPath {path:?} must not contain '..'")));
    }
    // The deepest existing ancestor, canonicalized, plus what is missing.
    let mut missing: Vec<OsString> = Vec::new();
    let mut existing = requested.to_path_buf();
    let canonical = loop {
        match std::fs::canonicalize(&existing) {
            Ok(c) => break c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let Some(name) = existing.file_name().map(|n| n.to_os_string()) else {
                    return Err(invalid(format!("hostPath {path:?}: {e}")));
                };
                missing.push(name);
                if !existing.pop() {
                    return Err(invalid(format!("hostPath {path:?}: {e}")));
                }
            }
            Err(e) => return Err(invalid(format!("hostPath {path:?}: {e}"))),
        }
    };
    missing.reverse();
    let mut target = canonical.clone();
    target.extend(&missing);
    let root = allowed
        .iter()
        .filter_map(|a| std::fs::canonicalize(a).ok())
        .find(|a| target.starts_with(a))
        .ok_or(HostPathError::Denied)?;
    if !missing.is_empty() && !create {
        return Err(invalid(if type_ == Some("Directory") {
            format!("hostPath type check failed: {path} is not a directory")
        } else {
            format!("hostPath {path:?} does not exist")
        }));
    }
    // Open the allowed root by path, then walk down without following
    // symlinks: the canonical path has none, so any that appears was
    // swapped in after the check.
    let rel: Vec<OsString> = target
        .strip_prefix(&root)
        .map_err(|e| invalid(format!("hostPath {path:?}: {e}")))?
        .components()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    let root_dir = open_dir(&root).map_err(|e| invalid(format!("hostPath {path:?}: {e}")))?;
    let file = open_beneath(&root_dir, &rel, create).map_err(|e| {
        invalid(format!(
            "hostPath type check failed: {path} is not a directory ({e})"
        ))
    })?;
    Ok(HeldDir { file, path: target })
}

type CacheKey = (SourceKind, String, String);
type Data = Arc<BTreeMap<String, Vec<u8>>>;
type CacheSlot = Arc<tokio::sync::Mutex<Option<(Instant, Option<Data>)>>>;

/// ConfigMaps and Secrets as last read, shared by every pod of the node,
/// so that refreshing N pods mounting one object reads it once per TTL.
/// Like the kubelet's TTL cache manager, a new pod reads fresh.
struct ObjectCache {
    ttl: Duration,
    entries: Mutex<HashMap<CacheKey, CacheSlot>>,
}

impl ObjectCache {
    fn slot(&self, key: CacheKey) -> CacheSlot {
        let mut entries = match self.entries.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if entries.len() > 256 {
            // Forget objects nobody read for a while.
            let ttl = self.ttl;
            entries.retain(|_, slot| {
                Arc::strong_count(slot) > 1
                    || match slot.try_lock() {
                        Ok(s) => s.as_ref().is_some_and(|(at, _)| at.elapsed() < ttl * 3),
                        Err(_) => true,
                    }
            });
        }
        entries.entry(key).or_default().clone()
    }

    /// The object's data; `fresh` insists on a read that started after
    /// this call (a concurrent one counts).
    async fn get(
        &self,
        api: &dyn PodApi,
        kind: SourceKind,
        namespace: &str,
        name: &str,
        fresh: bool,
    ) -> Result<Option<Data>, String> {
        let asked = Instant::now();
        let slot = self.slot((kind, namespace.to_string(), name.to_string()));
        let mut slot = slot.lock().await;
        if let Some((at, data)) = slot.as_ref() {
            let valid = if fresh {
                *at >= asked
            } else {
                at.elapsed() < self.ttl
            };
            if valid {
                return Ok(data.clone());
            }
        }
        let data = match kind {
            SourceKind::ConfigMap => api.config_map(namespace, name).await?.map(|d| {
                Arc::new(
                    d.into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect::<BTreeMap<_, _>>(),
                )
            }),
            SourceKind::Secret => api.secret(namespace, name).await?.map(Arc::new),
        };
        *slot = Some((Instant::now(), data.clone()));
        Ok(data)
    }
}

/// What a projected volume shows.
#[derive(Debug, Clone)]
struct Projection {
    kind: SourceKind,
    name: String,
    items: Option<Vec<KeyToPath>>,
    default_mode: Option<i32>,
    optional: bool,
}

impl Projection {
    fn of(volume: &Volume) -> Option<Projection> {
        if let Some(cm) = &volume.config_map {
            return Some(Projection {
                kind: SourceKind::ConfigMap,
                name: cm.name.clone(),
                items: cm.items.clone(),
                default_mode: cm.default_mode,
                optional: cm.optional == Some(true),
            });
        }
        volume.secret.as_ref().map(|s| Projection {
            kind: SourceKind::Secret,
            name: s.secret_name.clone().unwrap_or_default(),
            items: s.items.clone(),
            default_mode: s.default_mode,
            optional: s.optional == Some(true),
        })
    }
}

#[derive(Debug)]
enum Kind {
    EmptyDir {
        /// `sizeLimit` in bytes, and as written.
        limit: Option<(u64, String)>,
    },
    Projected {
        projection: Projection,
        /// What was last written.
        digest: [u8; 32],
    },
    HostPath,
}

#[derive(Debug)]
struct Mounted {
    kind: Kind,
    /// The volume's directory (kubelet-made volumes).
    dir: PathBuf,
    /// The open directory (hostPath) or `None` for kubelet-made volumes.
    held: Option<HeldDir>,
    /// Open `subPath` directories, by subPath.
    sub_paths: HashMap<String, HeldDir>,
}

impl Mounted {
    fn preopen_path(&self) -> PathBuf {
        self.held
            .as_ref()
            .map_or_else(|| self.dir.clone(), HeldDir::preopen_path)
    }
}

/// The volume state of one pod, owned by its worker.
#[derive(Debug)]
pub struct PodVolumes {
    uid: String,
    pod_dir: PathBuf,
    mounted: BTreeMap<String, Mounted>,
    /// The last refresh error per volume, so it is reported once.
    refresh_errors: HashMap<String, String>,
    next_check: Option<Instant>,
    eviction: Option<String>,
    torn_down: bool,
}

impl PodVolumes {
    /// Nothing set up yet for `pod`, whose files live in `pod_dir`. A pod
    /// already reported evicted stays evicted.
    pub fn new(pod: &Pod, pod_dir: PathBuf) -> PodVolumes {
        let status = pod.status.as_ref();
        let eviction = status
            .filter(|s| s.phase.as_deref() == Some("Failed"))
            .filter(|s| s.reason.as_deref() == Some("Evicted"))
            .map(|s| s.message.clone().unwrap_or_default());
        PodVolumes {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            pod_dir,
            mounted: BTreeMap::new(),
            refresh_errors: HashMap::new(),
            next_check: None,
            eviction,
            torn_down: false,
        }
    }

    /// When [`VolumeManager::housekeep`] is next due.
    pub fn next_check(&self) -> Option<Instant> {
        self.next_check
    }

    /// No more housekeeping (the pod's containers are all finished).
    pub fn stop_checks(&mut self) {
        self.next_check = None;
    }

    /// Whether housekeeping is due at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.next_check.is_some_and(|t| t <= now)
    }

    /// The eviction message once the pod was evicted for an emptyDir over
    /// its `sizeLimit`.
    pub fn eviction(&self) -> Option<&str> {
        self.eviction.as_deref()
    }

    /// Whether the pod's volume files were removed.
    pub fn is_torn_down(&self) -> bool {
        self.torn_down
    }
}

/// Sets up, refreshes, measures and removes pod volumes. One per kubelet.
pub struct VolumeManager {
    config: VolumeConfig,
    cache: ObjectCache,
}

impl VolumeManager {
    /// A manager with `config`.
    pub fn new(config: VolumeConfig) -> VolumeManager {
        // Half the bound for each of the cache and the refresh period: a
        // change is read by the first refresh after the cached copy
        // expires, so it lands within the whole interval.
        let half = (config.sync_interval / 2).max(Duration::from_millis(1));
        VolumeManager {
            cache: ObjectCache {
                ttl: half,
                entries: Mutex::new(HashMap::new()),
            },
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &VolumeConfig {
        &self.config
    }

    fn period(&self) -> Duration {
        (self.config.sync_interval / 2).max(Duration::from_millis(1))
    }

    /// Sets up the volumes `container` mounts (each volume once per pod)
    /// and returns them as preopens.
    pub async fn mount(
        &self,
        api: &dyn PodApi,
        events: &dyn EventSink,
        pod: &Pod,
        state: &mut PodVolumes,
        container: &Container,
    ) -> Result<Vec<Preopen>, MountError> {
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_deref())
            .unwrap_or_default();
        let mut out = Vec::new();
        for m in container.volume_mounts.iter().flatten() {
            let Some(volume) = volumes.iter().find(|v| v.name == m.name) else {
                return Err(MountError::UnknownVolume(m.name.clone()));
            };
            if !state.mounted.contains_key(&volume.name) {
                let mounted = self.set_up(api, events, pod, state, volume).await?;
                if matches!(
                    mounted.kind,
                    Kind::Projected { .. } | Kind::EmptyDir { limit: Some(_) }
                ) && state.next_check.is_none()
                {
                    state.next_check = Some(Instant::now() + self.period());
                }
                state.mounted.insert(volume.name.clone(), mounted);
                state.torn_down = false;
            }
            out.push(self.preopen(state, volume, m).await?);
        }
        Ok(out)
    }

    async fn preopen(
        &self,
        state: &mut PodVolumes,
        volume: &Volume,
        m: &VolumeMount,
    ) -> Result<Preopen, MountError> {
        let Some(mounted) = state.mounted.get_mut(&volume.name) else {
            return Err(MountError::UnknownVolume(volume.name.clone()));
        };
        let projected = matches!(mounted.kind, Kind::Projected { .. });
        if m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(MountError::Unsupported {
                volume: volume.name.clone(),
                message: "subPathExpr is not supported; use subPath".into(),
            });
        }
        let sub_path = m.sub_path.clone().unwrap_or_default();
        let host = if sub_path.is_empty() {
            mounted.preopen_path()
        } else {
            if projected {
                return Err(MountError::Unsupported {
                    volume: volume.name.clone(),
                    message: "subPath of a configMap or secret volume is not supported: it names a file, and WASI mounts only directories (and would not see updates); mount the volume and pick files with items".into(),
                });
            }
            if let Some(held) = mounted.sub_paths.get(&sub_path) {
                held.preopen_path()
            } else {
                let parts =
                    sub_path_components(&sub_path).map_err(|e| setup_error(&volume.name, e))?;
                let base = mounted.preopen_path();
                let name = volume.name.clone();
                let sub = sub_path.clone();
                let held = tokio::task::spawn_blocking(move || {
                    let root = open_dir(&base)?;
                    let file = open_beneath(&root, &parts, true)?;
                    Ok::<_, io::Error>(HeldDir {
                        file,
                        path: base.join(&sub),
                    })
                })
                .await
                .map_err(|e| setup_error(&name, e.to_string()))?
                .map_err(|e| setup_error(&name, format!("subPath {sub_path:?}: {e}")))?;
                let path = held.preopen_path();
                mounted.sub_paths.insert(sub_path, held);
                path
            }
        };
        Ok(Preopen {
            host,
            guest: m.mount_path.clone(),
            // Kubernetes mounts configMap and secret volumes read-only
            // whatever the mount says.
            read_only: projected || m.read_only == Some(true),
        })
    }

    async fn set_up(
        &self,
        api: &dyn PodApi,
        events: &dyn EventSink,
        pod: &Pod,
        state: &PodVolumes,
        volume: &Volume,
    ) -> Result<Mounted, MountError> {
        let name = volume.name.as_str();
        // The name becomes a path component of what teardown removes.
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\']) {
            return Err(setup_error(name, "invalid volume name"));
        }
        let dir = state.pod_dir.join("volumes").join(name);
        if let Some(empty_dir) = &volume.empty_dir {
            let limit = match &empty_dir.size_limit {
                Some(q) => Some((
                    parse_quantity(&q.0)
                        .ok_or_else(|| setup_error(name, format!("invalid sizeLimit {:?}", q.0)))?,
                    q.0.clone(),
                )),
                None => None,
            };
            let dir = if empty_dir.medium.as_deref() == Some("Memory") {
                match self.memory_dir(&state.uid, name).await {
                    Ok(dir) => dir,
                    Err(why) => {
                        events.record(PodEvent::new(
                            pod,
                            None,
                            EventType::Warning,
                            "MemoryMediumUnavailable",
                            format!(
                                "emptyDir volume \"{name}\" asks for medium Memory, but {why}; it is on disk instead"
                            ),
                        ));
                        dir
                    }
                }
            } else {
                dir
            };
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| setup_error(name, format!("creating {}: {e}", dir.display())))?;
            return Ok(Mounted {
                kind: Kind::EmptyDir { limit },
                dir,
                held: None,
                sub_paths: HashMap::new(),
            });
        }
        if let Some(projection) = Projection::of(volume) {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
            let payload = self
                .payload(api, namespace, &projection, true)
                .await
                .map_err(|e| setup_error(name, e))?;
            let digest = payload_digest(&payload);
            write(dir.clone(), payload)
                .await
                .map_err(|e| setup_error(name, e))?;
            return Ok(Mounted {
                kind: Kind::Projected { projection, digest },
                dir,
                held: None,
                sub_paths: HashMap::new(),
            });
        }
        if let Some(host) = &volume.host_path {
            let allowed = self.config.allowed_host_paths.clone();
            let path = host.path.clone();
            let type_ = host.type_.clone();
            let held = tokio::task::spawn_blocking(move || {
                open_host_path(&allowed, &path, type_.as_deref())
            })
            .await
            .map_err(|e| setup_error(name, e.to_string()))?
            .map_err(|e| match e {
                HostPathError::Denied => MountError::HostPathDenied {
                    volume: name.to_string(),
                    path: host.path.clone(),
                    node: self.config.node_name.clone(),
                },
                HostPathError::Invalid(m) => setup_error(name, m),
            })?;
            return Ok(Mounted {
                kind: Kind::HostPath,
                dir: held.path.clone(),
                held: Some(held),
                sub_paths: HashMap::new(),
            });
        }
        Err(MountError::Unsupported {
            volume: name.to_string(),
            message: "only emptyDir, configMap, secret and hostPath volumes are supported".into(),
        })
    }

    /// `<memory root>/<uid>/<volume>`, created, or why not.
    async fn memory_dir(&self, uid: &str, volume: &str) -> Result<PathBuf, String> {
        let Some(root) = &self.config.memory_root else {
            return Err("this node has no RAM-backed filesystem (/dev/shm)".into());
        };
        if uid.is_empty() || uid == "." || uid == ".." || uid.contains(['/', '\\']) {
            return Err("the pod has no usable uid".into());
        }
        let root = root.clone();
        let dir = root.join(uid).join(volume);
        let made = dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&root)?;
            // Other local users have no business in pods' memory volumes.
            set_mode(&root, 0o700)?;
            std::fs::create_dir_all(&made)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{} is not writable ({e})", dir.display()))?;
        Ok(dir)
    }

    async fn payload(
        &self,
        api: &dyn PodApi,
        namespace: &str,
        p: &Projection,
        fresh: bool,
    ) -> Result<Payload, String> {
        let data = self
            .cache
            .get(api, p.kind, namespace, &p.name, fresh)
            .await?;
        let data = match data {
            Some(data) => data,
            None if p.optional => Arc::default(),
            None => return Err(format!("{} \"{}\" not found", p.kind.noun(), p.name)),
        };
        project(
            p.kind,
            &data,
            p.items.as_deref(),
            p.default_mode,
            p.optional,
        )
    }

    /// Periodic work on a pod's mounted volumes: brings configMap and
    /// secret volumes up to date, and evicts the pod if an emptyDir is over
    /// its `sizeLimit` (recording `Evicted`). Call when
    /// [`PodVolumes::is_due`].
    pub async fn housekeep(
        &self,
        api: &dyn PodApi,
        events: &dyn EventSink,
        pod: &Pod,
        state: &mut PodVolumes,
    ) {
        state.next_check = None;
        if state.eviction.is_some() || state.torn_down {
            return;
        }
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        for (name, mounted) in &mut state.mounted {
            let Kind::Projected { projection, digest } = &mut mounted.kind else {
                continue;
            };
            let result = match self.payload(api, namespace, projection, false).await {
                Ok(payload) => {
                    let new = payload_digest(&payload);
                    if new == *digest {
                        Ok(())
                    } else {
                        write(mounted.dir.clone(), payload).await.map(|()| {
                            *digest = new;
                        })
                    }
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    state.refresh_errors.remove(name);
                }
                Err(e) => {
                    // Kubernetes keeps the last files and says why.
                    let message = setup_error(name, e).to_string();
                    if state.refresh_errors.get(name) != Some(&message) {
                        events.record(PodEvent::new(
                            pod,
                            None,
                            EventType::Warning,
                            "FailedMount",
                            message.clone(),
                        ));
                        state.refresh_errors.insert(name.clone(), message);
                    }
                }
            }
        }
        for (name, mounted) in &state.mounted {
            let Kind::EmptyDir {
                limit: Some((limit, written)),
            } = &mounted.kind
            else {
                continue;
            };
            let dir = mounted.dir.clone();
            let used = tokio::task::spawn_blocking(move || disk_usage(&dir)).await;
            match used {
                Ok(Ok(used)) if used > *limit => {
                    let message = format!(
                        "Usage of EmptyDir volume \"{name}\" exceeds the limit \"{written}\"."
                    );
                    events.record(PodEvent::new(
                        pod,
                        None,
                        EventType::Warning,
                        "Evicted",
                        message.clone(),
                    ));
                    tracing::info!(pod = %status_ref(pod), volume = %name, used, limit, "evicting pod");
                    state.eviction = Some(message);
                    return;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(volume = %name, error = %e, "measuring an emptyDir failed");
                }
                Err(e) => {
                    tracing::warn!(volume = %name, error = %e, "measuring an emptyDir failed")
                }
            }
        }
        state.next_check = Some(Instant::now() + self.period());
    }

    /// Unmounts and removes the pod's volume files (emptyDir, configMap,
    /// secret; memory-backed ones included). hostPath directories are
    /// only closed. Idempotent; the pod's logs are left alone.
    pub async fn teardown(&self, state: &mut PodVolumes) {
        state.mounted.clear();
        state.next_check = None;
        state.torn_down = true;
        let mut dirs = vec![state.pod_dir.join("volumes")];
        if let Some(root) = &self.config.memory_root
            && !state.uid.is_empty()
            && !state.uid.contains(['/', '\\'])
            && state.uid != "."
            && state.uid != ".."
        {
            dirs.push(root.join(&state.uid));
        }
        for dir in dirs {
            if let Err(e) = tokio::fs::remove_dir_all(&dir).await
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), error = %e, "removing volume files failed");
            }
        }
    }
}

fn status_ref(pod: &Pod) -> String {
    crate::status::pod_ref(pod)
}

async fn write(dir: PathBuf, payload: Payload) -> Result<(), String> {
    tokio::task::spawn_blocking(move || write_atomic(&dir, &payload))
        .await
        .map_err(|e| e.to_string())?
        .map(|_| ())
        .map_err(|e| format!("writing the files: {e}"))
}

/// Removes what pods that no longer exist left behind: `<pods_dir>/<uid>`
/// and `<memory_root>/<uid>` for every uid not in `live`. For a kubelet
/// that was down while its pods were deleted.
pub async fn remove_orphans(
    pods_dir: PathBuf,
    memory_root: Option<PathBuf>,
    live: HashSet<String>,
) {
    let swept = tokio::task::spawn_blocking(move || {
        let mut removed = Vec::new();
        for root in std::iter::once(pods_dir).chain(memory_root) {
            let Ok(entries) = std::fs::read_dir(&root) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if is_dir && !live.contains(name.to_string_lossy().as_ref()) {
                    let path = entry.path();
                    match std::fs::remove_dir_all(&path) {
                        Ok(()) => removed.push(path),
                        Err(e) => {
                            tracing::warn!(dir = %path.display(), error = %e, "removing an orphaned pod's files failed")
                        }
                    }
                }
            }
        }
        removed
    })
    .await;
    if let Ok(removed) = swept {
        for path in removed {
            tracing::info!(dir = %path.display(), "removed an orphaned pod's files");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource, PodSpec,
        SecretVolumeSource,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn item(key: &str, path: &str) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode: None,
        }
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| format!("<{e}>"))
    }

    #[test]
    fn projected_paths_are_validated_like_the_atomic_writer() {
        assert_eq!(validate_path("a/b/c"), Ok(PathBuf::from("a/b/c")));
        assert_eq!(validate_path("./a//b"), Ok(PathBuf::from("a/b")));
        assert_eq!(
            validate_path("/etc/passwd"),
            Err("invalid path: must be relative path: /etc/passwd".into())
        );
        assert_eq!(
            validate_path("a/../../x"),
            Err("invalid path: must not contain '..': a/../../x".into())
        );
        assert_eq!(
            validate_path("..data/x"),
            Err("invalid path: must not start with '..': ..data/x".into())
        );
        assert!(validate_path("").is_err());
        assert!(validate_path("./").is_err());
        assert!(validate_path(&"x".repeat(256)).is_err());
        // `..` inside a name is just a name.
        assert_eq!(validate_path("a/..b"), Ok(PathBuf::from("a/..b")));
    }

    #[test]
    fn all_keys_or_only_items_are_projected() -> anyhow::Result<()> {
        let d = data(&[("game.properties", "lives=3"), ("ui", "color=red")]);
        let all =
            project(SourceKind::ConfigMap, &d, None, None, false).map_err(anyhow::Error::msg)?;
        assert_eq!(all.len(), 2);
        assert_eq!(all[Path::new("ui")].mode, 0o644);

        let items = [
            item("ui", "conf/ui/settings"),
            KeyToPath {
                mode: Some(0o400),
                ..item("game.properties", "game")
            },
        ];
        let some = project(SourceKind::ConfigMap, &d, Some(&items), Some(0o440), false)
            .map_err(anyhow::Error::msg)?;
        let paths: Vec<_> = some.keys().cloned().collect();
        assert_eq!(
            paths,
            [PathBuf::from("conf/ui/settings"), PathBuf::from("game")]
        );
        assert_eq!(some[Path::new("game")].mode, 0o400);
        assert_eq!(some[Path::new("conf/ui/settings")].mode, 0o440);
        assert_eq!(some[Path::new("game")].data, b"lives=3");
        Ok(())
    }

    #[test]
    fn missing_item_keys_fail_unless_optional() {
        let d = data(&[("a", "1")]);
        let items = [item("a", "a"), item("nope", "b")];
        assert_eq!(
            project(SourceKind::ConfigMap, &d, Some(&items), None, false),
            Err("configmap references non-existent config key: nope".into())
        );
        assert_eq!(
            project(SourceKind::Secret, &d, Some(&items), None, false),
            Err("references non-existent secret key: nope".into())
        );
        let optional = project(SourceKind::ConfigMap, &d, Some(&items), None, true);
        assert_eq!(optional.map(|p| p.len()), Ok(1));
    }

    #[test]
    fn bad_item_paths_are_refused() {
        let d = data(&[("a", "1"), ("b", "2")]);
        for (path, want) in [
            ("/abs", "must be relative path"),
            ("x/../../../etc", "must not contain '..'"),
            ("..data", "must not start with '..'"),
        ] {
            let err = project(
                SourceKind::ConfigMap,
                &d,
                Some(&[item("a", path)]),
                None,
                false,
            )
            .err()
            .unwrap_or_default();
            assert!(err.contains(want), "{path}: {err}");
        }
        let err = project(
            SourceKind::ConfigMap,
            &d,
            Some(&[item("a", "x"), item("b", "x/y")]),
            None,
            false,
        )
        .err()
        .unwrap_or_default();
        assert!(err.contains("both a file and a directory"), "{err}");
    }

    fn payload(files: &[(&str, &str)]) -> Payload {
        files
            .iter()
            .map(|(p, d)| {
                (
                    PathBuf::from(p),
                    ProjectedFile {
                        data: d.as_bytes().to_vec(),
                        mode: 0o644,
                    },
                )
            })
            .collect()
    }

    fn names(dir: &Path) -> anyhow::Result<BTreeSet<String>> {
        Ok(std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?)
    }

    #[test]
    fn atomic_writer_layout_and_updates() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("cfg");
        assert!(write_atomic(
            &dir,
            &payload(&[("key", "v1"), ("gone", "x"), ("conf/app.yaml", "a: 1")])
        )?);
        // `key -> ..data/key`, `..data -> ..<timestamp>`.
        assert_eq!(
            std::fs::read_link(dir.join("key"))?,
            Path::new("..data/key")
        );
        assert_eq!(
            std::fs::read_link(dir.join("conf"))?,
            Path::new("..data/conf")
        );
        let first = std::fs::read_link(dir.join(DATA_DIR))?;
        assert!(first.to_string_lossy().starts_with("..20"), "{first:?}");
        assert_eq!(read(&dir.join("key")), "v1");
        assert_eq!(read(&dir.join("conf/app.yaml")), "a: 1");

        // Same content: nothing is rewritten.
        assert!(!write_atomic(
            &dir,
            &payload(&[("key", "v1"), ("gone", "x"), ("conf/app.yaml", "a: 1")])
        )?);
        assert_eq!(std::fs::read_link(dir.join(DATA_DIR))?, first);

        // An update swaps `..data`, drops what is gone and the old payload.
        assert!(write_atomic(
            &dir,
            &payload(&[("key", "v2"), ("new", "n")])
        )?);
        let second = std::fs::read_link(dir.join(DATA_DIR))?;
        assert_ne!(second, first);
        assert_eq!(read(&dir.join("key")), "v2");
        assert_eq!(read(&dir.join("new")), "n");
        let want: BTreeSet<String> = [
            "..data".to_string(),
            second.to_string_lossy().into_owned(),
            "key".into(),
            "new".into(),
        ]
        .into();
        assert_eq!(names(&dir)?, want);
        Ok(())
    }

    #[test]
    fn atomic_writer_replaces_plain_files_of_the_old_layout() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("cfg");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("key"), "old")?;
        std::fs::write(dir.join("stale"), "old")?;
        write_atomic(&dir, &payload(&[("key", "new")]))?;
        assert!(
            std::fs::symlink_metadata(dir.join("key"))?
                .file_type()
                .is_symlink()
        );
        assert_eq!(read(&dir.join("key")), "new");
        assert!(!dir.join("stale").exists());
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn projected_files_get_their_modes() -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir()?;
        let mut p = payload(&[("secret", "s")]);
        if let Some(f) = p.get_mut(Path::new("secret")) {
            f.mode = 0o400;
        }
        write_atomic(tmp.path(), &p)?;
        let mode = std::fs::metadata(tmp.path().join("secret"))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
        // A mode change alone is an update.
        if let Some(f) = p.get_mut(Path::new("secret")) {
            f.mode = 0o440;
        }
        assert!(write_atomic(tmp.path(), &p)?);
        let mode = std::fs::metadata(tmp.path().join("secret"))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o440);
        Ok(())
    }

    #[test]
    fn disk_usage_counts_what_is_written() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let empty = disk_usage(tmp.path())?;
        std::fs::create_dir_all(tmp.path().join("a/b"))?;
        std::fs::write(tmp.path().join("a/b/big"), vec![7u8; 2 << 20])?;
        let used = disk_usage(tmp.path())?;
        assert!(used >= empty + (2 << 20), "{used}");
        // A symlink to something large outside is not followed.
        let outside = tempfile::tempdir()?;
        std::fs::write(outside.path().join("huge"), vec![1u8; 4 << 20])?;
        symlink(outside.path(), &tmp.path().join("link"))?;
        assert!(disk_usage(tmp.path())? < used + (1 << 20));
        Ok(())
    }

    #[test]
    fn host_paths_are_denied_by_default() {
        let tmp = std::env::temp_dir();
        let path = tmp.to_string_lossy().into_owned();
        assert_eq!(
            open_host_path(&[], &path, None).err(),
            Some(HostPathError::Denied)
        );
        assert_eq!(
            open_host_path(&[], "/etc", Some("Directory")).err(),
            Some(HostPathError::Denied)
        );
    }

    #[test]
    fn host_paths_below_an_allowed_dir_open() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let allowed = tmp.path().join("allowed");
        std::fs::create_dir_all(allowed.join("data"))?;
        std::fs::write(allowed.join("data/f"), "x")?;
        let roots = [allowed.clone()];
        let held = open_host_path(&roots, &allowed.join("data").to_string_lossy(), None)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        assert_eq!(read(&held.preopen_path().join("f")), "x");
        // The allowed directory itself.
        assert!(open_host_path(&roots, &allowed.to_string_lossy(), Some("Directory")).is_ok());
        // A sibling that merely shares the prefix is not below it.
        let sibling = tmp.path().join("allowed2");
        std::fs::create_dir_all(&sibling)?;
        assert_eq!(
            open_host_path(&roots, &sibling.to_string_lossy(), None).err(),
            Some(HostPathError::Denied)
        );
        Ok(())
    }

    #[test]
    fn host_path_escapes_are_refused() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let allowed = tmp.path().join("allowed");
        std::fs::create_dir_all(&allowed)?;
        let secret = tmp.path().join("secret");
        std::fs::create_dir_all(&secret)?;
        let roots = [allowed.clone()];
        // A symlink inside the allowed directory pointing out of it.
        symlink(&secret, &allowed.join("link"))?;
        assert_eq!(
            open_host_path(&roots, &allowed.join("link").to_string_lossy(), None).err(),
            Some(HostPathError::Denied)
        );
        // `..` is refused before anything is resolved.
        let dotdot = format!("{}/../secret", allowed.display());
        let err = open_host_path(&roots, &dotdot, None).err();
        assert!(
            matches!(&err, Some(HostPathError::Invalid(m)) if m.contains("'..'")),
            "{err:?}"
        );
        assert!(matches!(
            open_host_path(&roots, "relative/path", None),
            Err(HostPathError::Invalid(_))
        ));
        // Symlinks that stay inside are fine.
        std::fs::create_dir_all(allowed.join("real"))?;
        symlink(&allowed.join("real"), &allowed.join("alias"))?;
        let held = open_host_path(&roots, &allowed.join("alias").to_string_lossy(), None)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        assert!(held.path.ends_with("allowed/real"), "{:?}", held.path);
        Ok(())
    }

    #[test]
    fn host_path_types() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let allowed = tmp.path().to_path_buf();
        let roots = [allowed.clone()];
        let missing = allowed.join("new/deeper");
        let missing_s = missing.to_string_lossy().into_owned();
        let err = open_host_path(&roots, &missing_s, Some("Directory")).err();
        assert!(
            matches!(&err, Some(HostPathError::Invalid(m)) if m.contains("is not a directory")),
            "{err:?}"
        );
        assert!(matches!(
            open_host_path(&roots, &missing_s, None),
            Err(HostPathError::Invalid(_))
        ));
        assert!(open_host_path(&roots, &missing_s, Some("DirectoryOrCreate")).is_ok());
        assert!(missing.is_dir());
        // Outside the allowed directory nothing is created.
        let outside = tempfile::tempdir()?;
        let never = outside.path().join("never");
        assert_eq!(
            open_host_path(&roots, &never.to_string_lossy(), Some("DirectoryOrCreate")).err(),
            Some(HostPathError::Denied)
        );
        assert!(!never.exists());
        // Files cannot be preopened.
        std::fs::write(allowed.join("file"), "x")?;
        let file = allowed.join("file").to_string_lossy().into_owned();
        for t in ["File", "FileOrCreate", "Socket"] {
            let err = open_host_path(&roots, &file, Some(t)).err();
            assert!(
                matches!(&err, Some(HostPathError::Invalid(m)) if m.contains("only be given directories")),
                "{err:?}"
            );
        }
        let err = open_host_path(&roots, &file, Some("Directory")).err();
        assert!(matches!(err, Some(HostPathError::Invalid(_))), "{err:?}");
        Ok(())
    }

    #[test]
    fn sub_paths_stay_inside_their_volume() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let volume = tmp.path().join("vol");
        std::fs::create_dir_all(&volume)?;
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside)?;
        let root = open_dir(&volume)?;
        // Missing components are created.
        let parts = sub_path_components("a/b").map_err(anyhow::Error::msg)?;
        let held = open_beneath(&root, &parts, true)?;
        assert!(volume.join("a/b").is_dir());
        drop(held);
        // A symlink (say, made by a guest) is never followed.
        symlink(&outside, &volume.join("evil"))?;
        let parts = sub_path_components("evil/x").map_err(anyhow::Error::msg)?;
        assert!(open_beneath(&root, &parts, true).is_err());
        assert!(!outside.join("x").exists());
        assert!(sub_path_components("../x").is_err());
        assert!(sub_path_components("/x").is_err());
        Ok(())
    }

    #[tokio::test]
    async fn orphaned_pod_files_are_swept() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let pods = tmp.path().join("pods");
        let shm = tmp.path().join("shm");
        for dir in [&pods, &shm] {
            std::fs::create_dir_all(dir.join("live/volumes"))?;
            std::fs::create_dir_all(dir.join("gone/volumes"))?;
        }
        remove_orphans(pods.clone(), Some(shm.clone()), ["live".to_string()].into()).await;
        for dir in [&pods, &shm] {
            assert!(dir.join("live/volumes").is_dir());
            assert!(!dir.join("gone").exists());
        }
        Ok(())
    }

    #[test]
    fn memory_roots_are_per_kubelet() {
        let a = default_memory_root(Path::new("/var/lib/a"));
        let b = default_memory_root(Path::new("/var/lib/b"));
        if Path::new("/dev/shm").is_dir() {
            assert_ne!(a, b);
            assert!(a.is_some_and(|p| p.starts_with("/dev/shm")));
        } else {
            assert_eq!(a, None);
        }
    }

    // --- With real guests -------------------------------------------------

    /// A WASI command driven by argv, working on preopen fd 3 (the first
    /// mount): `cat PATH` prints the file, `write PATH` creates it and
    /// prints `wrote`, `fill PATH` writes 2 MiB then spins, `spin` spins.
    /// Failures print `error NN` (the WASI errno).
    const GUEST: &str = r#"
    (module
      (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
      (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
      (memory (export "memory") 2)
      (data (i32.const 64) "error ")
      (data (i32.const 72) "wrote\n")
      (data (i32.const 80) "filled\n")
      (func $strlen (param $p i32) (result i32) (local $n i32)
        (block $done (loop $l
          (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
          (local.set $n (i32.add (local.get $n) (i32.const 1)))
          (br $l)))
        (local.get $n))
      (func $out (param $p i32) (param $n i32)
        (i32.store (i32.const 0) (local.get $p))
        (i32.store (i32.const 4) (local.get $n))
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16))))
      (func $fail (param $errno i32)
        (call $out (i32.const 64) (i32.const 6))
        (i32.store8 (i32.const 90) (i32.add (i32.const 48) (i32.div_u (local.get $errno) (i32.const 10))))
        (i32.store8 (i32.const 91) (i32.add (i32.const 48) (i32.rem_u (local.get $errno) (i32.const 10))))
        (i32.store8 (i32.const 92) (i32.const 10))
        (call $out (i32.const 90) (i32.const 3)))
      (func $open (param $path i32) (param $oflags i32) (param $rights i64) (result i32)
        ;; lookupflags 1: follow symlinks
        (call $path_open (i32.const 3) (i32.const 1) (local.get $path) (call $strlen (local.get $path))
          (local.get $oflags) (local.get $rights) (i64.const 0) (i32.const 0) (i32.const 32)))
      (func (export "_start") (local $op i32) (local $path i32) (local $r i32) (local $i i32)
        (drop (call $args_sizes_get (i32.const 20) (i32.const 24)))
        (drop (call $args_get (i32.const 100) (i32.const 1000)))
        (local.set $op (i32.load8_u (i32.load (i32.const 104))))
        (if (i32.eq (local.get $op) (i32.const 115)) (then (loop $l (br $l))))
        (local.set $path (i32.load (i32.const 108)))
        (if (i32.eq (local.get $op) (i32.const 99)) (then
          ;; cat: FD_READ
          (local.set $r (call $open (local.get $path) (i32.const 0) (i64.const 2)))
          (if (local.get $r) (then (call $fail (local.get $r)) (return)))
          (i32.store (i32.const 8) (i32.const 8192))
          (i32.store (i32.const 12) (i32.const 4096))
          (block $done (loop $read
            (br_if $done (call $fd_read (i32.load (i32.const 32)) (i32.const 8) (i32.const 1) (i32.const 16)))
            (br_if $done (i32.eqz (i32.load (i32.const 16))))
            (call $out (i32.const 8192) (i32.load (i32.const 16)))
            (br $read)))
          (return)))
        ;; write and fill: O_CREAT|O_TRUNC, FD_WRITE
        (local.set $r (call $open (local.get $path) (i32.const 9) (i64.const 64)))
        (if (local.get $r) (then (call $fail (local.get $r)) (return)))
        (if (i32.eq (local.get $op) (i32.const 119)) (then
          (i32.store (i32.const 8) (i32.const 72))
          (i32.store (i32.const 12) (i32.const 6))
          (drop (call $fd_write (i32.load (i32.const 32)) (i32.const 8) (i32.const 1) (i32.const 16)))
          (call $out (i32.const 72) (i32.const 6))
          (return)))
        (i32.store (i32.const 8) (i32.const 65536))
        (i32.store (i32.const 12) (i32.const 65536))
        (loop $w
          (drop (call $fd_write (i32.load (i32.const 32)) (i32.const 8) (i32.const 1) (i32.const 16)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $w (i32.lt_u (local.get $i) (i32.const 32))))
        (drop (call $fd_close (i32.load (i32.const 32))))
        (call $out (i32.const 80) (i32.const 7))
        (loop $l (br $l))))
    "#;

    use crate::events::PodEvent;
    use crate::logs::{
        ContainerLog, DEFAULT_MAX_LOG_BYTES, LogOptions, LogRegistry, read_all, render_lines,
    };
    use crate::module_cache::{LocalModule, ModuleSource, PullError};
    use crate::pod_worker::{WorkerContext, run_pod};
    use crate::sandbox::{ContainerRun, ExitStatus, Sandbox, SandboxConfig, WasmtimeSandbox};
    use k8s_openapi::api::core::v1::{PodStatus, VolumeMount};
    use tokio::sync::watch;
    use tokio_util::sync::CancellationToken;

    struct Guest {
        dir: tempfile::TempDir,
        sandbox: Arc<WasmtimeSandbox>,
        digest: String,
        path: PathBuf,
    }

    async fn guest() -> anyhow::Result<Guest> {
        let dir = tempfile::tempdir()?;
        let sandbox = Arc::new(WasmtimeSandbox::new(&SandboxConfig {
            pooling: false,
            max_instances: 16,
            ..SandboxConfig::default()
        })?);
        let bytes = wat::parse_str(GUEST)?;
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
        let path = dir.path().join("guest.wasm");
        tokio::fs::write(&path, &bytes).await?;
        sandbox.prepare(&digest, &path).await?;
        Ok(Guest {
            dir,
            sandbox,
            digest,
            path,
        })
    }

    impl Guest {
        /// Runs the guest with `args` and the preopens; returns its output.
        async fn run(&self, args: &[&str], preopens: Vec<Preopen>) -> anyhow::Result<String> {
            static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let log_path = self.dir.path().join(format!("run{n}.log"));
            let log = ContainerLog::create(&log_path, DEFAULT_MAX_LOG_BYTES).await?;
            let mut argv = vec!["guest".to_string()];
            argv.extend(args.iter().map(|s| s.to_string()));
            let status = self
                .sandbox
                .run(ContainerRun {
                    id: format!("wasm://volumes-{n}"),
                    digest: self.digest.clone(),
                    module_path: self.path.clone(),
                    argv,
                    env: Vec::new(),
                    memory_limit: crate::sandbox::DEFAULT_MEMORY_LIMIT,
                    cpu_limit_millis: None,
                    preopens,
                    stdout: log.stdout(),
                    stderr: log.stderr(),
                    stop: CancellationToken::new(),
                    usage: Arc::default(),
                })
                .await?;
            log.finish().await?;
            anyhow::ensure!(status == ExitStatus::Exited(0), "guest ended {status:?}");
            let text = read_all(&log_path).await?;
            Ok(render_lines(&text, &LogOptions::default())
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect())
        }
    }

    fn preopen(host: &Path, guest: &str, read_only: bool) -> Vec<Preopen> {
        vec![Preopen {
            host: host.to_path_buf(),
            guest: guest.into(),
            read_only,
        }]
    }

    #[tokio::test]
    async fn guest_reads_projected_files_through_the_symlinks() -> anyhow::Result<()> {
        let g = guest().await?;
        let vol = g.dir.path().join("cfg");
        write_atomic(
            &vol,
            &payload(&[("greeting", "hello v1\n"), ("conf/app", "nested\n")]),
        )?;
        let ro = || preopen(&vol, "/etc/config", true);
        assert_eq!(g.run(&["cat", "greeting"], ro()).await?, "hello v1\n");
        assert_eq!(g.run(&["cat", "conf/app"], ro()).await?, "nested\n");
        // After an update the same mount shows the new files.
        write_atomic(&vol, &payload(&[("greeting", "hello v2\n")]))?;
        assert_eq!(g.run(&["cat", "greeting"], ro()).await?, "hello v2\n");
        let gone = g.run(&["cat", "conf/app"], ro()).await?;
        assert!(gone.starts_with("error"), "{gone}");
        Ok(())
    }

    #[tokio::test]
    async fn guest_cannot_write_a_read_only_mount() -> anyhow::Result<()> {
        let g = guest().await?;
        let vol = g.dir.path().join("data");
        std::fs::create_dir_all(&vol)?;
        let out = g
            .run(&["write", "file"], preopen(&vol, "/data", true))
            .await?;
        assert!(out.starts_with("error"), "{out}");
        assert!(!vol.join("file").exists());
        // The same directory mounted read-write.
        let out = g
            .run(&["write", "file"], preopen(&vol, "/data", false))
            .await?;
        assert_eq!(out, "wrote\n");
        assert_eq!(read(&vol.join("file")), "wrote\n");
        // Projected files cannot be replaced either.
        let cfg = g.dir.path().join("cfg");
        write_atomic(&cfg, &payload(&[("key", "v")]))?;
        let out = g
            .run(&["write", "key"], preopen(&cfg, "/cfg", true))
            .await?;
        assert!(out.starts_with("error"), "{out}");
        assert_eq!(read(&cfg.join("key")), "v");
        Ok(())
    }

    #[tokio::test]
    async fn guest_cannot_leave_its_volumes() -> anyhow::Result<()> {
        let g = guest().await?;
        let vol = g.dir.path().join("data");
        std::fs::create_dir_all(&vol)?;
        std::fs::write(g.dir.path().join("private"), "host secret")?;
        symlink(&g.dir.path().join("private"), &vol.join("abs-link"))?;
        symlink(Path::new("../private"), &vol.join("rel-link"))?;
        for path in [
            "../private",
            "/etc/passwd",
            "abs-link",
            "rel-link",
            "../../../../etc/passwd",
        ] {
            let out = g.run(&["cat", path], preopen(&vol, "/data", false)).await?;
            assert!(out.starts_with("error"), "{path}: {out}");
        }
        Ok(())
    }

    // --- Pods, end to end through the pod worker ------------------------

    #[derive(Default)]
    struct FakeApi {
        config_maps: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
        statuses: Mutex<Vec<PodStatus>>,
        changed: tokio::sync::Notify,
    }

    #[async_trait::async_trait]
    impl PodApi for FakeApi {
        async fn patch_status(&self, _: &str, _: &str, status: &PodStatus) -> Result<(), String> {
            self.statuses
                .lock()
                .map_err(|e| e.to_string())?
                .push(status.clone());
            self.changed.notify_waiters();
            Ok(())
        }
        async fn delete(&self, _: &str, _: &str, _: &str) -> Result<(), String> {
            Ok(())
        }
        async fn config_map(
            &self,
            _: &str,
            name: &str,
        ) -> Result<Option<BTreeMap<String, String>>, String> {
            Ok(self
                .config_maps
                .lock()
                .map_err(|e| e.to_string())?
                .get(name)
                .cloned())
        }
        async fn secret(
            &self,
            _: &str,
            name: &str,
        ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
            Ok((name == "creds").then(|| data(&[("password", "hunter2")])))
        }
    }

    #[derive(Default)]
    struct Events(Mutex<Vec<PodEvent>>);

    impl EventSink for Events {
        fn record(&self, event: PodEvent) {
            if let Ok(mut v) = self.0.lock() {
                v.push(event);
            }
        }
    }

    struct Modules {
        digest: String,
        path: PathBuf,
    }

    #[async_trait::async_trait]
    impl ModuleSource for Modules {
        async fn pull(
            &self,
            _image: &str,
            _: &crate::oci::Keyring,
        ) -> Result<LocalModule, PullError> {
            Ok(LocalModule {
                digest: self.digest.clone(),
                path: self.path.clone(),
                size: 1,
                ..LocalModule::default()
            })
        }
    }

    struct Node {
        guest: Guest,
        ctx: Arc<WorkerContext>,
        api: Arc<FakeApi>,
        events: Arc<Events>,
    }

    async fn node(allowed_host_paths: Vec<PathBuf>) -> anyhow::Result<Node> {
        let guest = guest().await?;
        let api = Arc::new(FakeApi::default());
        let events = Arc::new(Events::default());
        let ctx = Arc::new(WorkerContext {
            node_name: "n1".into(),
            node_ip: "10.1.2.3".into(),
            pods_dir: guest.dir.path().join("pods"),
            sandbox: guest.sandbox.clone(),
            modules: Arc::new(Modules {
                digest: guest.digest.clone(),
                path: guest.path.clone(),
            }),
            api: api.clone(),
            events: events.clone(),
            logs: Arc::new(LogRegistry::default()),
            volumes: Arc::new(VolumeManager::new(VolumeConfig {
                node_name: "n1".into(),
                allowed_host_paths,
                sync_interval: Duration::from_millis(100),
                memory_root: Some(guest.dir.path().join("shm")),
            })),
            stats: Arc::new(crate::stats::StatsRegistry::new(
                "n1",
                crate::stats::StatsOptions::default(),
            )),
            http: crate::http::HttpPods::new(),
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            restart_backoff: crate::status::RestartBackoff::default(),
        });
        Ok(Node {
            guest,
            ctx,
            api,
            events,
        })
    }

    fn container(name: &str, args: &[&str], mounts: &[(&str, &str, bool)]) -> Container {
        Container {
            name: name.into(),
            image: Some("guest:v1".into()),
            args: Some(args.iter().map(|s| s.to_string()).collect()),
            volume_mounts: Some(
                mounts
                    .iter()
                    .map(|(volume, path, read_only)| VolumeMount {
                        name: volume.to_string(),
                        mount_path: path.to_string(),
                        read_only: Some(*read_only),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn test_pod(uid: &str, restart: &str, containers: Vec<Container>, volumes: Vec<Volume>) -> Pod {
        let mut pod = Pod {
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                restart_policy: Some(restart.into()),
                containers,
                volumes: Some(volumes),
                ..Default::default()
            }),
            ..Default::default()
        };
        pod.metadata.name = Some(format!("pod-{uid}"));
        pod.metadata.namespace = Some("default".into());
        pod.metadata.uid = Some(uid.into());
        pod
    }

    impl Node {
        fn start(&self, pod: Pod) -> (watch::Sender<Arc<Pod>>, tokio::task::JoinHandle<()>) {
            let (tx, rx) = watch::channel(Arc::new(pod));
            let task = tokio::spawn(run_pod(
                self.ctx.clone(),
                rx,
                CancellationToken::new(),
                CancellationToken::new(),
            ));
            (tx, task)
        }

        async fn wait_status(
            &self,
            pred: impl Fn(&PodStatus) -> bool,
        ) -> anyhow::Result<PodStatus> {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let notified = self.api.changed.notified();
                if let Some(s) = self
                    .api
                    .statuses
                    .lock()
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .iter()
                    .find(|s| pred(s))
                {
                    return Ok(s.clone());
                }
                tokio::time::timeout_at(deadline, notified)
                    .await
                    .map_err(|_| {
                        anyhow::anyhow!("no such status; events: {:?}", self.event_texts())
                    })?;
            }
        }

        /// Waits for `container`'s log to say something, then returns it.
        async fn log_of(&self, pod: &str, container: &str) -> anyhow::Result<String> {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(source) = self.ctx.logs.lookup("default", pod, container, false) {
                    let text = read_all(&source.path).await.unwrap_or_default();
                    let lines: String = render_lines(&text, &LogOptions::default())
                        .iter()
                        .map(|l| String::from_utf8_lossy(l).into_owned())
                        .collect();
                    if !lines.is_empty() {
                        return Ok(lines);
                    }
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "no log from {container}; events: {:?}",
                    self.event_texts()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        fn event_texts(&self) -> Vec<String> {
            self.events
                .0
                .lock()
                .map(|v| {
                    v.iter()
                        .map(|e| format!("{}: {}", e.reason, e.message))
                        .collect()
                })
                .unwrap_or_default()
        }

        fn set_config(&self, name: &str, pairs: &[(&str, &str)]) -> anyhow::Result<()> {
            self.api
                .config_maps
                .lock()
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .insert(
                    name.into(),
                    pairs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                );
            Ok(())
        }
    }

    fn config_volume(name: &str, source: &str, items: Option<Vec<KeyToPath>>) -> Volume {
        Volume {
            name: name.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: source.into(),
                items,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn empty_dir(name: &str, medium: Option<&str>, limit: Option<&str>) -> Volume {
        Volume {
            name: name.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: medium.map(Into::into),
                size_limit: limit.map(|l| Quantity(l.into())),
            }),
            ..Default::default()
        }
    }

    fn waiting(s: &PodStatus, container: &str) -> Option<(String, String)> {
        s.container_statuses
            .iter()
            .flatten()
            .find(|c| c.name == container)
            .and_then(|c| c.state.as_ref())
            .and_then(|st| st.waiting.as_ref())
            .map(|w| {
                (
                    w.reason.clone().unwrap_or_default(),
                    w.message.clone().unwrap_or_default(),
                )
            })
    }

    #[tokio::test]
    async fn configmap_volume_reaches_the_guest_and_follows_updates() -> anyhow::Result<()> {
        let n = node(Vec::new()).await?;
        n.set_config("app", &[("greeting", "hello v1\n"), ("other", "o\n")])?;
        let pod = test_pod(
            "u-cm",
            "Never",
            vec![
                container(
                    "reader",
                    &["cat", "conf/greeting.txt"],
                    &[("cfg", "/etc/app", false)],
                ),
                container(
                    "writer",
                    &["write", "conf/greeting.txt"],
                    &[("cfg", "/etc/app", false)],
                ),
                container(
                    "secret",
                    &["cat", "password"],
                    &[("creds", "/etc/creds", false)],
                ),
                container(
                    "scratch-ro",
                    &["write", "x"],
                    &[("scratch", "/scratch", true)],
                ),
                container(
                    "scratch-rw",
                    &["write", "y"],
                    &[("scratch", "/scratch", false)],
                ),
                // Keeps the pod running, so its volumes are kept current.
                container("idle", &["spin"], &[("cfg", "/etc/app", false)]),
            ],
            vec![
                config_volume(
                    "cfg",
                    "app",
                    Some(vec![item("greeting", "conf/greeting.txt")]),
                ),
                Volume {
                    name: "creds".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some("creds".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                empty_dir("scratch", None, None),
            ],
        );
        let (_tx, task) = n.start(pod);
        assert_eq!(n.log_of("pod-u-cm", "reader").await?, "hello v1\n");
        assert_eq!(n.log_of("pod-u-cm", "secret").await?, "hunter2");
        // configMap volumes are read-only even when the mount says otherwise.
        let out = n.log_of("pod-u-cm", "writer").await?;
        assert!(out.starts_with("error"), "{out}");
        // readOnly on an emptyDir mount is honoured, per mount.
        let out = n.log_of("pod-u-cm", "scratch-ro").await?;
        assert!(out.starts_with("error"), "{out}");
        assert_eq!(n.log_of("pod-u-cm", "scratch-rw").await?, "wrote\n");
        let volumes = n.ctx.pods_dir.join("u-cm/volumes");
        assert!(!volumes.join("scratch/x").exists());
        assert!(volumes.join("scratch/y").exists());
        // Only the item asked for is projected.
        assert!(!volumes.join("cfg/other").exists());

        // An update reaches the file (bounded by the sync interval).
        n.set_config("app", &[("greeting", "hello v2\n")])?;
        let file = volumes.join("cfg/conf/greeting.txt");
        let deadline = Instant::now() + Duration::from_secs(30);
        while read(&file) != "hello v2\n" {
            anyhow::ensure!(Instant::now() < deadline, "still {:?}", read(&file));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A guest reading it now sees the new content through the same links.
        let out = n
            .guest
            .run(
                &["cat", "conf/greeting.txt"],
                preopen(&volumes.join("cfg"), "/etc/app", true),
            )
            .await?;
        assert_eq!(out, "hello v2\n");

        // A ConfigMap that disappears keeps the last files and says why.
        n.api
            .config_maps
            .lock()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .clear();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !n
            .event_texts()
            .iter()
            .any(|e| e.contains("configmap \"app\" not found"))
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "no FailedMount: {:?}",
                n.event_texts()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(read(&file), "hello v2\n");
        task.abort();
        Ok(())
    }

    #[tokio::test]
    async fn bad_items_and_missing_sources_fail_the_mount() -> anyhow::Result<()> {
        let n = node(Vec::new()).await?;
        n.set_config("app", &[("greeting", "hi")])?;
        let pod = test_pod(
            "u-bad",
            "Never",
            vec![
                container("escape", &["cat", "x"], &[("escape", "/a", false)]),
                container("nokey", &["cat", "x"], &[("nokey", "/b", false)]),
                container("nocm", &["cat", "x"], &[("nocm", "/c", false)]),
            ],
            vec![
                config_volume("escape", "app", Some(vec![item("greeting", "../../etc/x")])),
                config_volume("nokey", "app", Some(vec![item("missing", "m")])),
                config_volume("nocm", "absent", None),
            ],
        );
        let (_tx, task) = n.start(pod);
        let all_waiting = |s: &PodStatus| {
            ["escape", "nokey", "nocm"]
                .iter()
                .all(|c| waiting(s, c).is_some_and(|(r, _)| r == "CreateContainerConfigError"))
        };
        let s = n.wait_status(all_waiting).await?;
        let message = |c| waiting(&s, c).map(|(_, m)| m).unwrap_or_default();
        assert_eq!(
            message("escape"),
            "MountVolume.SetUp failed for volume \"escape\" : invalid path: must not contain '..': ../../etc/x"
        );
        assert_eq!(
            message("nokey"),
            "MountVolume.SetUp failed for volume \"nokey\" : configmap references non-existent config key: missing"
        );
        assert_eq!(
            message("nocm"),
            "MountVolume.SetUp failed for volume \"nocm\" : configmap \"absent\" not found"
        );
        assert!(
            n.event_texts()
                .iter()
                .any(|e| e.starts_with("FailedMount: "))
        );
        task.abort();
        Ok(())
    }

    #[tokio::test]
    async fn emptydir_over_its_size_limit_evicts_the_pod() -> anyhow::Result<()> {
        let n = node(Vec::new()).await?;
        let pod = test_pod(
            "u-evict",
            "Always",
            vec![container(
                "filler",
                &["fill", "blob"],
                &[("x", "/x", false)],
            )],
            vec![empty_dir("x", Some("Memory"), Some("1Mi"))],
        );
        let (_tx, task) = n.start(pod);
        let s = n
            .wait_status(|s| s.reason.as_deref() == Some("Evicted"))
            .await?;
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(
            s.message.as_deref(),
            Some("Usage of EmptyDir volume \"x\" exceeds the limit \"1Mi\".")
        );
        assert!(n.event_texts().contains(
            &"Evicted: Usage of EmptyDir volume \"x\" exceeds the limit \"1Mi\".".to_string()
        ));
        // The container is stopped for good and the volume's files go.
        let s = n
            .wait_status(|s| {
                s.reason.as_deref() == Some("Evicted")
                    && s.container_statuses
                        .iter()
                        .flatten()
                        .all(|c| c.state.as_ref().is_some_and(|st| st.terminated.is_some()))
            })
            .await?;
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        let memory = n.guest.dir.path().join("shm/u-evict");
        let deadline = Instant::now() + Duration::from_secs(30);
        while memory.exists() {
            anyhow::ensure!(Instant::now() < deadline, "memory volume left behind");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The filler was not restarted despite restartPolicy Always.
        let restarts = s
            .container_statuses
            .iter()
            .flatten()
            .map(|c| c.restart_count)
            .sum::<i32>();
        assert_eq!(restarts, 0);
        task.abort();
        Ok(())
    }

    #[tokio::test]
    async fn memory_emptydir_lives_outside_the_pod_dir_and_goes_with_the_pod() -> anyhow::Result<()>
    {
        let n = node(Vec::new()).await?;
        let mut pod = test_pod(
            "u-mem",
            "Never",
            vec![container("w", &["write", "f"], &[("m", "/m", false)])],
            vec![empty_dir("m", Some("Memory"), None)],
        );
        let (tx, task) = n.start(pod.clone());
        assert_eq!(n.log_of("pod-u-mem", "w").await?, "wrote\n");
        let memory = n.guest.dir.path().join("shm/u-mem/m");
        assert_eq!(read(&memory.join("f")), "wrote\n");
        pod.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        pod.metadata.deletion_grace_period_seconds = Some(0);
        tx.send_replace(Arc::new(pod));
        tokio::time::timeout(Duration::from_secs(30), task).await??;
        assert!(!n.guest.dir.path().join("shm/u-mem").exists());
        assert!(!n.ctx.pods_dir.join("u-mem").exists());
        Ok(())
    }

    #[tokio::test]
    async fn host_paths_follow_the_node_policy() -> anyhow::Result<()> {
        let shared = tempfile::tempdir()?;
        std::fs::write(shared.path().join("data.txt"), "from the host\n")?;
        let n = node(vec![shared.path().to_path_buf()]).await?;
        let host_volume = |name: &str, path: &Path| Volume {
            name: name.into(),
            host_path: Some(HostPathVolumeSource {
                path: path.to_string_lossy().into_owned(),
                type_: Some("Directory".into()),
            }),
            ..Default::default()
        };
        let denied = n.guest.dir.path().to_path_buf();
        let pod = test_pod(
            "u-host",
            "Never",
            vec![
                container(
                    "allowed",
                    &["cat", "data.txt"],
                    &[("shared", "/shared", true)],
                ),
                container("ro", &["write", "new"], &[("shared", "/shared", true)]),
                container("denied", &["cat", "x"], &[("private", "/private", false)]),
            ],
            vec![
                host_volume("shared", shared.path()),
                host_volume("private", &denied),
            ],
        );
        let (_tx, task) = n.start(pod);
        assert_eq!(n.log_of("pod-u-host", "allowed").await?, "from the host\n");
        let out = n.log_of("pod-u-host", "ro").await?;
        assert!(out.starts_with("error"), "{out}");
        assert!(!shared.path().join("new").exists());
        let s = n
            .wait_status(|s| {
                waiting(s, "denied").is_some_and(|(r, _)| r == "CreateContainerConfigError")
            })
            .await?;
        let (_, message) = waiting(&s, "denied").unwrap_or_default();
        assert_eq!(
            message,
            format!(
                "MountVolume.SetUp failed for volume \"private\" : hostPath \"{}\" is not allowed on node \"n1\": start the node with --allow-host-path {} (or a parent directory) to allow it",
                denied.display(),
                denied.display()
            )
        );
        task.abort();
        // hostPath contents are never removed with the pod.
        assert!(shared.path().join("data.txt").exists());
        Ok(())
    }
}
