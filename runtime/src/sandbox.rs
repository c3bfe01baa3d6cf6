//! The container runtime seam and its wasmtime implementation.
//!
//! Pod workers see only [`Sandbox`]: prepare a module once, run a container
//! to its exit. That keeps pod lifecycle logic testable with a fake and puts
//! every wasmtime decision in this one module: one [`Engine`] per kubelet
//! with the pooling allocator and epoch interruption, one epoch ticker per
//! engine, a prepared instance per module digest, compiled code kept on
//! disk across restarts ([`crate::compile_cache`]), and a fresh `Store` per
//! container that always carries a memory limiter and an epoch deadline.
//!
//! A container's binary is either a core module, run as a WASI preview 1
//! command (`_start`), or a component, run as a WASI 0.2 command
//! (`wasi:cli/run`); both get the same argv, environment, preopened
//! volumes, log streams, limits and stop token. A binary that cannot run is
//! refused at prepare time with a message saying why ([`diagnose`]).

mod diagnose;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;
use wasmtime::component::{Component, Linker as ComponentLinker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::compile_cache::{self, Artifact, CompileCache};
use crate::http::wasi_http::HttpState;
use crate::logs::LogStream;
use diagnose::Kind;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// The largest linear memory any instance may have (the wasm32 maximum).
pub const MAX_INSTANCE_MEMORY: u64 = 4 << 30;
/// How many prepared modules are kept.
const MAX_PREPARED: usize = 256;
/// The memory cap of a container without `resources.limits.memory`.
pub const DEFAULT_MEMORY_LIMIT: u64 = 256 << 20;
/// Most table elements one table may have.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;
/// What one table element costs the host, for memory accounting: tables
/// hold pointer-sized references.
const TABLE_ELEMENT_BYTES: u64 = std::mem::size_of::<usize>() as u64;

/// How a container run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// The command finished: `_start` returned (0), the guest called
    /// `proc_exit(code)` / `wasi:cli/exit`, or `wasi:cli/run` returned
    /// (0 for `ok`, 1 for `err`).
    Exited(i32),
    /// The guest trapped; the trap's text.
    Trapped(String),
    /// The guest tried to grow its memory past its limit.
    OutOfMemory,
    /// The kubelet stopped it (deletion, shutdown).
    Killed,
}

/// Why a container could not be created or started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// The binary is not wasm, is invalid, does not compile, is not a WASI
    /// command, or imports something the sandbox does not provide. The
    /// message says which, for the user.
    #[error("{0}")]
    InvalidModule(String),
    /// The instance could not be created (resources, preopens, I/O).
    #[error("{0}")]
    Start(String),
}

/// A directory visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it.
    pub guest: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// What one running container uses, kept current by the sandbox and read by
/// the kubelet's stats endpoints (`/stats/summary`, the metrics API).
#[derive(Debug, Default)]
pub struct Usage {
    /// CPU time the guest has consumed, in nanoseconds (monotonic): the
    /// time its instance spent being polled on an executor thread, so
    /// neither throttling pauses nor waits for I/O count.
    pub cpu_nanos: AtomicU64,
    /// The instance's current linear memory plus tables, in bytes (what
    /// the memory limit applies to); 0 once the run has ended.
    pub memory_bytes: AtomicU64,
}

/// Everything needed to run one container attempt.
pub struct ContainerRun {
    /// `wasm://…`, for tracing.
    pub id: String,
    /// The module's digest (`sha256:…`), as given to [`Sandbox::prepare`].
    pub digest: String,
    /// The module's bytes, to prepare it again if it was evicted.
    pub module_path: PathBuf,
    /// `argv`, including `argv[0]`.
    pub argv: Vec<String>,
    /// The environment.
    pub env: Vec<(String, String)>,
    /// Linear memory cap in bytes.
    pub memory_limit: u64,
    /// CPU cap in millicores (`limits.cpu`); `None` or ≥ 1000 is unthrottled.
    pub cpu_limit_millis: Option<u64>,
    /// Directories to preopen.
    pub preopens: Vec<Preopen>,
    /// Guest stdout.
    pub stdout: LogStream,
    /// Guest stderr.
    pub stderr: LogStream,
    /// Cancelled to interrupt the instance.
    pub stop: CancellationToken,
    /// Updated by the sandbox while the instance runs.
    pub usage: Arc<Usage>,
}

/// A container runtime: compiles modules and runs WASI commands.
#[async_trait::async_trait]
pub trait Sandbox: Send + Sync + 'static {
    /// Makes the module at `path` (whose digest is `digest`) ready to run.
    /// Cheap when it is already prepared.
    async fn prepare(&self, digest: &str, path: &Path) -> Result<(), SandboxError>;

    /// Whether [`Sandbox::prepare`] of `digest` has to compile it (neither
    /// prepared nor in the compile cache): the slow step of a large
    /// module's first start, which the kubelet reports while it runs. A
    /// hint for display only: another pod may prepare it meanwhile.
    fn needs_compile(&self, digest: &str) -> bool {
        let _ = digest;
        false
    }

    /// Runs a container to its end. Returns when the guest exits, traps, or
    /// `run.stop` is cancelled.
    async fn run(&self, run: ContainerRun) -> Result<ExitStatus, SandboxError>;

    /// A handler serving HTTP requests with the binary of `spec` when it is
    /// an HTTP container (a wasi:http component, or a module with
    /// `spec.wagi`); `None` for a command. Prepares the binary if needed.
    async fn http_handler(
        &self,
        spec: Arc<crate::http::HttpSpec>,
    ) -> Result<Option<Arc<dyn crate::http::Handler>>, SandboxError> {
        let _ = spec;
        Ok(None)
    }
}

/// Settings of the wasmtime sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where compiled modules are kept across restarts; `None` keeps them
    /// in memory only.
    pub compiled_cache_dir: Option<PathBuf>,
    /// Cap of the on-disk compiled-module cache, in bytes.
    pub compiled_cache_max_bytes: u64,
    /// Pool size: how many instances may exist at once.
    pub max_instances: u32,
    /// Use the pooling allocator (falls back to on-demand if it cannot be set up).
    pub pooling: bool,
    /// Epoch tick: the time slice after which a busy guest yields.
    pub epoch_tick: Duration,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            compiled_cache_dir: None,
            compiled_cache_max_bytes: compile_cache::DEFAULT_MAX_BYTES,
            max_instances: 256,
            pooling: true,
            epoch_tick: Duration::from_millis(10),
        }
    }
}

/// How often modules were compiled, and how often compiled code was loaded
/// from the on-disk cache instead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompileStats {
    /// Binaries compiled by this sandbox.
    pub compiled: u64,
    /// Binaries loaded from the on-disk cache.
    pub loaded: u64,
}

/// Per-store state: the WASI context of the binary's kind (`WasiP1Ctx`
/// for modules, [`P2`] for components, [`HttpState`] for wasi:http
/// components) and the memory limiter.
pub(crate) struct Host<W> {
    pub(crate) wasi: W,
    pub(crate) limits: MemoryLimit,
}

/// WASI 0.2 state of a component's store.
struct P2 {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Host<P2> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.wasi.table,
        }
    }
}

/// Caps linear memory plus tables, and reports what is granted. Growth past
/// the cap traps (like the kernel's OOM killer, the guest does not get to
/// handle it) and is remembered, so the run is reported `OOMKilled`.
pub(crate) struct MemoryLimit {
    limit: u64,
    pub(crate) exceeded: bool,
    /// Bytes granted to all memories and tables of the store.
    granted: u64,
    /// The last grant, taken back if the growth then fails.
    pending: u64,
    usage: Arc<Usage>,
}

impl MemoryLimit {
    /// A limit for the one instance of a container run: `usage` is reset
    /// and then shows what this instance holds.
    pub(crate) fn new(limit: u64, usage: Arc<Usage>) -> MemoryLimit {
        usage.memory_bytes.store(0, Ordering::Relaxed);
        MemoryLimit::sharing(limit, usage)
    }

    /// A limit for one of several instances reporting into the same
    /// `usage` (an HTTP container's per-request instances): each adds what
    /// it is granted and takes it back when dropped, so the figure is the
    /// memory of the instances alive now.
    pub(crate) fn sharing(limit: u64, usage: Arc<Usage>) -> MemoryLimit {
        MemoryLimit {
            limit: limit.min(MAX_INSTANCE_MEMORY),
            exceeded: false,
            granted: 0,
            pending: 0,
            usage,
        }
    }

    /// Grants growing one memory or table from `current` to `desired` bytes.
    fn grow(&mut self, current: u64, desired: u64, what: &str) -> wasmtime::Result<bool> {
        let total = self.granted.saturating_sub(current).saturating_add(desired);
        if total > self.limit {
            self.exceeded = true;
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} bytes exceeded (growing a {what} to {desired} bytes)",
                self.limit
            )));
        }
        self.pending = desired.saturating_sub(current);
        self.report(total);
        Ok(true)
    }

    /// Takes back the last grant: wasmtime could not perform it.
    fn grow_failed(&mut self) {
        self.report(self.granted.saturating_sub(self.pending));
        self.pending = 0;
    }

    /// Moves the granted total to `total`, adding the difference to the
    /// shared figure (saturating: it never wraps below zero).
    fn report(&mut self, total: u64) {
        let before = self.granted;
        self.granted = total;
        let shared = &self.usage.memory_bytes;
        let _ = shared.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_add(total).saturating_sub(before))
        });
    }
}

impl Drop for MemoryLimit {
    fn drop(&mut self) {
        // The instance is gone with its store: so is its memory.
        self.report(0);
    }
}

fn bytes(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Growth past the memory's own declared maximum fails (memory.grow
        // returns -1) without counting against the container.
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        self.grow(bytes(current), bytes(desired), "memory")
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed();
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS || maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        self.grow(
            bytes(current).saturating_mul(TABLE_ELEMENT_BYTES),
            bytes(desired).saturating_mul(TABLE_ELEMENT_BYTES),
            "table",
        )
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed();
        Ok(())
    }
}

/// Stops the epoch ticker thread when the sandbox goes away.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A binary ready to instantiate.
#[derive(Clone)]
enum Prepared {
    Module(InstancePre<Host<WasiP1Ctx>>),
    Component(CommandPre<Host<P2>>),
    /// A component exporting `wasi:http/incoming-handler`: served, not run.
    Http(ProxyPre<Host<HttpState>>),
}

/// What turns bytes into [`Prepared`]: shared with the blocking tasks that
/// compile.
struct Compiler {
    engine: Engine,
    linker: Linker<Host<WasiP1Ctx>>,
    component_linker: ComponentLinker<Host<P2>>,
    /// WASI 0.2 plus wasi:http, for HTTP components.
    http_linker: ComponentLinker<Host<HttpState>>,
    /// `(module, name)` of everything `linker` defines, to name the imports
    /// it does not.
    provided: BTreeSet<(String, String)>,
    disk: Option<CompileCache>,
    compiled: AtomicU64,
    loaded: AtomicU64,
}

/// The wasmtime sandbox: one engine, one linker per binary kind, one ticker.
pub struct WasmtimeSandbox {
    compiler: Arc<Compiler>,
    modules: Mutex<HashMap<String, Prepared>>,
    // Compiling is CPU-heavy: one at a time, and never twice for one digest.
    compiling: tokio::sync::Mutex<()>,
    _ticker: Ticker,
    pooled: bool,
}

impl WasmtimeSandbox {
    /// Builds the engine (pooling if possible), the linkers, the compiled
    /// cache and the ticker.
    pub fn new(config: &SandboxConfig) -> Result<WasmtimeSandbox, SandboxError> {
        WasmtimeSandbox::within(config, address_space_limit())
    }

    /// [`WasmtimeSandbox::new`] for a process whose address space is
    /// limited to `limit` bytes.
    fn within(config: &SandboxConfig, limit: Option<u64>) -> Result<WasmtimeSandbox, SandboxError> {
        let (engine, pooled) = build_engine(config, limit)?;
        let mut linker: Linker<Host<WasiP1Ctx>> = Linker::new(&engine);
        p1::add_to_linker_async(&mut linker, |h: &mut Host<WasiP1Ctx>| &mut h.wasi)
            .map_err(|e| SandboxError::Start(format!("linking WASI preview 1: {e}")))?;
        let mut component_linker: ComponentLinker<Host<P2>> = ComponentLinker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker)
            .map_err(|e| SandboxError::Start(format!("linking WASI 0.2: {e}")))?;
        let mut http_linker: ComponentLinker<Host<HttpState>> = ComponentLinker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut http_linker)
            .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut http_linker))
            .map_err(|e| SandboxError::Start(format!("linking wasi:http: {e}")))?;
        let provided = {
            let mut store = Store::new(
                &engine,
                Host {
                    wasi: WasiCtxBuilder::new().build_p1(),
                    limits: MemoryLimit::new(0, Arc::default()),
                },
            );
            linker
                .iter(&mut store)
                .map(|(module, name, _)| (module.to_string(), name.to_string()))
                .collect()
        };
        let disk = match &config.compiled_cache_dir {
            Some(dir) => match CompileCache::open(dir, &engine, config.compiled_cache_max_bytes) {
                Ok(cache) => Some(cache),
                Err(e) => {
                    tracing::warn!(error = %e, "compiled-module cache disabled");
                    None
                }
            },
            None => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        // A thread rather than a task: with a busy guest on every runtime
        // worker a ticker task would never run, and the guest would never
        // reach its deadline.
        let tick_engine = engine.clone();
        let tick_stop = stop.clone();
        let tick = config.epoch_tick;
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !tick_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    tick_engine.increment_epoch();
                }
            })
            .map_err(|e| SandboxError::Start(format!("starting the epoch ticker: {e}")))?;
        Ok(WasmtimeSandbox {
            compiler: Arc::new(Compiler {
                engine,
                linker,
                component_linker,
                http_linker,
                provided,
                disk,
                compiled: AtomicU64::new(0),
                loaded: AtomicU64::new(0),
            }),
            modules: Mutex::new(HashMap::new()),
            compiling: tokio::sync::Mutex::new(()),
            _ticker: Ticker { stop },
            pooled,
        })
    }

    /// Whether the pooling allocator is in use.
    pub fn is_pooled(&self) -> bool {
        self.pooled
    }

    /// How many binaries were compiled, and how many loaded from disk.
    pub fn compile_stats(&self) -> CompileStats {
        CompileStats {
            compiled: self.compiler.compiled.load(Ordering::Relaxed),
            loaded: self.compiler.loaded.load(Ordering::Relaxed),
        }
    }

    /// The directory of this engine's compiled artifacts, if kept on disk.
    pub fn compiled_cache_dir(&self) -> Option<&Path> {
        self.compiler.disk.as_ref().map(CompileCache::dir)
    }

    /// Forgets a prepared module (when no pod uses it any more).
    pub fn forget(&self, digest: &str) {
        self.lock_modules().remove(digest);
    }

    fn lock_modules(&self) -> std::sync::MutexGuard<'_, HashMap<String, Prepared>> {
        match self.modules.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn cached(&self, digest: &str) -> Option<Prepared> {
        self.lock_modules().get(digest).cloned()
    }

    /// The prepared binary, preparing it again if it was evicted.
    async fn prepared(&self, digest: &str, path: &Path) -> Result<Prepared, SandboxError> {
        if let Some(prepared) = self.cached(digest) {
            return Ok(prepared);
        }
        self.prepare(digest, path).await?;
        self.cached(digest)
            .ok_or_else(|| SandboxError::Start(format!("module {digest} is not prepared")))
    }
}

/// Bytes of address space one pooled or default on-demand linear memory
/// takes: the 4 GiB reservation that lets compiled code skip bounds checks,
/// plus wasmtime's default 32 MiB guard after it.
const FULL_MEMORY_RESERVATION: u64 = MAX_INSTANCE_MEMORY;
const FULL_MEMORY_GUARD: u64 = 32 << 20;
/// Guard of the small reservations used where address space is scarce:
/// enough to fold small constant offsets into one bounds check.
const SMALL_MEMORY_GUARD: u64 = 64 << 10;
/// Bounds of a small per-memory reservation (it may still grow past it by
/// moving, so this bounds speed, not what a guest may use).
const SMALL_RESERVATION_MIN: u64 = 1 << 20;
const SMALL_RESERVATION_MAX: u64 = 256 << 20;
const WASM_PAGE: u64 = 64 << 10;

/// What each on-demand linear memory reserves of the address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reservation {
    /// Reserved up front; the memory grows in place up to this, then moves.
    bytes: u64,
    /// Inaccessible guard after it.
    guard: u64,
}

/// Address space the memory pool alone asks for (stacks and tables come on
/// top).
fn pool_bytes(slots: u32) -> u64 {
    u64::from(slots).saturating_mul(FULL_MEMORY_RESERVATION + FULL_MEMORY_GUARD + TABLE_SLOT_BYTES)
}

/// Address space of one pooled table: room for [`MAX_TABLE_ELEMENTS`], so
/// a module runs on a pooling node exactly when it runs on an on-demand one
/// (wasmtime's own default is 20,000 elements).
const TABLE_SLOT_BYTES: u64 = MAX_TABLE_ELEMENTS as u64 * TABLE_ELEMENT_BYTES;

/// The process's address-space limit (`RLIMIT_AS` soft limit), if any; a
/// 32-bit host never has more than its 4 GiB.
fn address_space_limit() -> Option<u64> {
    #[cfg(unix)]
    let limit = rustix::process::getrlimit(rustix::process::Resource::As).current;
    #[cfg(not(unix))]
    let limit = None;
    if cfg!(target_pointer_width = "64") {
        limit
    } else {
        Some(limit.unwrap_or(u64::MAX).min(4 << 30))
    }
}

/// The on-demand allocation for a host whose address space is `limit`:
/// wasmtime's 4 GiB reservations (fast code, no bounds checks) when
/// `instances` of them fit in half of it, else reservations sized so they
/// do — without this every instance would fail to reserve its memory under
/// a small `RLIMIT_AS`, pooled or not.
fn on_demand_for(limit: Option<u64>, instances: u32) -> Reservation {
    let full = Reservation {
        bytes: FULL_MEMORY_RESERVATION,
        guard: FULL_MEMORY_GUARD,
    };
    let Some(limit) = limit else {
        return full;
    };
    // The other half stays for the rest of the process: thread stacks,
    // malloc arenas, compiled code.
    let share = (limit / 2) / u64::from(instances.max(1));
    if share >= FULL_MEMORY_RESERVATION + FULL_MEMORY_GUARD {
        return full;
    }
    let bytes = share
        .saturating_sub(SMALL_MEMORY_GUARD)
        .clamp(SMALL_RESERVATION_MIN, SMALL_RESERVATION_MAX)
        / WASM_PAGE
        * WASM_PAGE;
    Reservation {
        bytes,
        guard: SMALL_MEMORY_GUARD,
    }
}

/// Builds the engine: the pooling allocator when its reservation fits in
/// the address space (`limit` is the process's `RLIMIT_AS`; the kernel's
/// address-space size, e.g. 39 bits on many ARM boards, or qemu-user's, is
/// only found out by trying), else on-demand allocation, logged with why.
///
/// The pool is not shrunk to fit: fewer slots would cap concurrent
/// instances (wasi:http serves one per request) and smaller slots would cap
/// each instance's memory below what pods may be given; on-demand keeps
/// both and costs only instantiation speed (and bounds checks where the
/// reservations must be small).
fn build_engine(
    config: &SandboxConfig,
    limit: Option<u64>,
) -> Result<(Engine, bool), SandboxError> {
    let mut base = Config::new();
    base.epoch_interruption(true);
    // The build carries no garbage collector; WASI commands do not need the
    // GC-based proposals.
    base.gc_support(false);
    let n = config.max_instances.max(1);
    if config.pooling {
        let asked = pool_bytes(n);
        let attempt = match limit {
            // Skip an attempt that cannot fit rather than let the kernel
            // say so.
            Some(limit) if asked > limit => Err(format!(
                "the memory pool needs {asked} bytes but the address space is limited to {limit} bytes"
            )),
            _ => {
                let mut pool = PoolingAllocationConfig::new();
                pool.total_core_instances(n)
                    .total_memories(n)
                    .total_tables(n)
                    .total_stacks(n)
                    .max_memories_per_module(1)
                    .max_tables_per_module(1)
                    .table_elements(MAX_TABLE_ELEMENTS)
                    .max_memory_size(usize::try_from(MAX_INSTANCE_MEMORY).unwrap_or(usize::MAX));
                let mut pooled = base.clone();
                pooled
                    .memory_reservation(FULL_MEMORY_RESERVATION)
                    .memory_guard_size(FULL_MEMORY_GUARD)
                    .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
                Engine::new(&pooled).map_err(|e| format!("{e:#}"))
            }
        };
        match attempt {
            Ok(engine) => {
                tracing::info!(
                    slots = n,
                    pool_bytes = asked,
                    "wasm engine: pooling allocator"
                );
                return Ok((engine, true));
            }
            Err(error) => {
                let fallback = on_demand_for(limit, n);
                tracing::warn!(
                    %error,
                    slots = n,
                    slot_bytes = FULL_MEMORY_RESERVATION + FULL_MEMORY_GUARD,
                    pool_bytes = asked,
                    address_space_limit = limit,
                    memory_reservation = fallback.bytes,
                    memory_guard = fallback.guard,
                    "pooling allocator cannot reserve its address space; using on-demand allocation"
                );
            }
        }
    }
    let reservation = on_demand_for(limit, n);
    let mut on_demand = base;
    on_demand
        .memory_reservation(reservation.bytes)
        .memory_guard_size(reservation.guard)
        .memory_reservation_for_growth(reservation.bytes.min(2 << 30));
    let engine =
        Engine::new(&on_demand).map_err(|e| SandboxError::Start(format!("wasmtime: {e}")))?;
    if !config.pooling {
        tracing::debug!(
            memory_reservation = reservation.bytes,
            "wasm engine: on-demand allocation"
        );
    }
    Ok((engine, false))
}

impl Compiler {
    /// Loads `bytes`' compiled code from disk or compiles it, then checks
    /// that it is a WASI command this node can link.
    fn prepare(&self, bytes: &[u8]) -> Result<Prepared, SandboxError> {
        let kind = diagnose::kind(bytes).map_err(SandboxError::InvalidModule)?;
        // Machine code on disk is looked up by what was hashed here, not by
        // the digest the caller names, so it always belongs to these bytes.
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let digest = digest.as_str();
        let loaded = self
            .disk
            .as_ref()
            .and_then(|disk| disk.load(&self.engine, digest))
            .filter(|artifact| {
                matches!(
                    (artifact, kind),
                    (Artifact::Module(_), Kind::Module) | (Artifact::Component(_), Kind::Component)
                )
            });
        let artifact = match loaded {
            Some(artifact) => {
                self.loaded.fetch_add(1, Ordering::Relaxed);
                artifact
            }
            None => self.compile(digest, kind, bytes)?,
        };
        match artifact {
            Artifact::Module(module) => self.prepare_module(&module),
            Artifact::Component(component) => self.prepare_component(&component),
        }
    }

    fn compile(&self, digest: &str, kind: Kind, bytes: &[u8]) -> Result<Artifact, SandboxError> {
        let failed =
            |e: wasmtime::Error| SandboxError::InvalidModule(diagnose::compile_failed(kind, &e));
        let (artifact, serialized) = match kind {
            Kind::Module => {
                let module = Module::from_binary(&self.engine, bytes).map_err(failed)?;
                let serialized = module.serialize();
                (Artifact::Module(module), serialized)
            }
            Kind::Component => {
                let component = Component::from_binary(&self.engine, bytes).map_err(failed)?;
                let serialized = component.serialize();
                (Artifact::Component(component), serialized)
            }
        };
        self.compiled.fetch_add(1, Ordering::Relaxed);
        if let Some(disk) = &self.disk {
            // The cache only saves time: failing to fill it is not an error.
            let stored = serialized
                .map_err(|e| std::io::Error::other(format!("{e:#}")))
                .and_then(|bytes| disk.store(digest, &bytes));
            if let Err(e) = stored {
                tracing::warn!(digest, error = %e, "keeping compiled code on disk failed");
            }
        }
        Ok(artifact)
    }

    fn prepare_module(&self, module: &Module) -> Result<Prepared, SandboxError> {
        if let Some(why) = diagnose::module_not_command(module) {
            return Err(SandboxError::InvalidModule(why));
        }
        let pre = self.linker.instantiate_pre(module).map_err(|e| {
            SandboxError::InvalidModule(diagnose::module_imports(module, &self.provided, &e))
        })?;
        Ok(Prepared::Module(pre))
    }

    fn prepare_component(&self, component: &Component) -> Result<Prepared, SandboxError> {
        if diagnose::is_http_handler(&self.engine, component) {
            return self.prepare_http(component);
        }
        if let Some(why) = diagnose::component_not_command(&self.engine, component) {
            return Err(SandboxError::InvalidModule(why));
        }
        let pre = self
            .component_linker
            .instantiate_pre(component)
            .map_err(|e| {
                SandboxError::InvalidModule(diagnose::component_imports(
                    &self.engine,
                    component,
                    &self.component_linker,
                    &e,
                ))
            })?;
        let command = CommandPre::new(pre).map_err(|e| {
            SandboxError::InvalidModule(diagnose::run_mismatch(&self.engine, component, &e))
        })?;
        Ok(Prepared::Component(command))
    }

    fn prepare_http(&self, component: &Component) -> Result<Prepared, SandboxError> {
        if let Some(why) = diagnose::http_handler_mismatch(&self.engine, component) {
            return Err(SandboxError::InvalidModule(format!(
                "the component exports wasi:http/incoming-handler, but not as this node's \
                 wasi:http 0.2 proxy world expects: {why}"
            )));
        }
        let pre = self.http_linker.instantiate_pre(component).map_err(|e| {
            SandboxError::InvalidModule(diagnose::component_imports(
                &self.engine,
                component,
                &self.http_linker,
                &e,
            ))
        })?;
        let proxy = ProxyPre::new(pre).map_err(|e| {
            SandboxError::InvalidModule(format!(
                "the component exports wasi:http/incoming-handler, but not as this node's \
                 wasi:http 0.2 proxy world expects: {e:#}"
            ))
        })?;
        Ok(Prepared::Http(proxy))
    }
}

#[async_trait::async_trait]
impl Sandbox for WasmtimeSandbox {
    fn needs_compile(&self, digest: &str) -> bool {
        self.cached(digest).is_none()
            && !self
                .compiler
                .disk
                .as_ref()
                .is_some_and(|disk| disk.contains(digest))
    }

    async fn prepare(&self, digest: &str, path: &Path) -> Result<(), SandboxError> {
        if self.cached(digest).is_some() {
            return Ok(());
        }
        let _guard = self.compiling.lock().await;
        if self.cached(digest).is_some() {
            return Ok(());
        }
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| SandboxError::Start(format!("reading module {digest}: {e}")))?;
        let compiler = self.compiler.clone();
        let prepared = tokio::task::spawn_blocking(move || compiler.prepare(&bytes))
            .await
            .map_err(|e| SandboxError::Start(format!("compiling: {e}")))??;
        let mut modules = self.lock_modules();
        // Bounded: running instances hold their own reference, so evicting
        // only costs a load from the on-disk cache for the next start.
        if modules.len() >= MAX_PREPARED
            && let Some(victim) = modules.keys().next().cloned()
        {
            modules.remove(&victim);
        }
        modules.insert(digest.to_string(), prepared);
        Ok(())
    }

    async fn http_handler(
        &self,
        spec: Arc<crate::http::HttpSpec>,
    ) -> Result<Option<Arc<dyn crate::http::Handler>>, SandboxError> {
        let prepared = self.prepared(&spec.digest, &spec.module_path).await?;
        let engine = self.compiler.engine.clone();
        Ok(match prepared {
            Prepared::Module(pre) if spec.wagi => Some(Arc::new(
                crate::http::wagi::WagiHandler::new(engine, pre, spec),
            )),
            Prepared::Http(pre) => Some(Arc::new(crate::http::wasi_http::WasiHttpHandler::new(
                pre, spec,
            ))),
            Prepared::Module(_) | Prepared::Component(_) => None,
        })
    }

    async fn run(&self, run: ContainerRun) -> Result<ExitStatus, SandboxError> {
        let prepared = self.prepared(&run.digest, &run.module_path).await?;
        let mut builder = wasi_builder(&run)?;
        let limits = MemoryLimit::new(run.memory_limit, run.usage.clone());
        let engine = &self.compiler.engine;
        // Each arm owns its store; it is dropped at the end of the arm, which
        // frees the instance (its pool slot, memory and open files) before
        // the run is reported over.
        let (outcome, oom) = match prepared {
            Prepared::Module(pre) => {
                let host = Host {
                    wasi: builder.build_p1(),
                    limits,
                };
                let mut store = new_store(engine, host, run.cpu_limit_millis);
                let outcome = drive(&run, run_module(&pre, &mut store)).await;
                (outcome, store.data().limits.exceeded)
            }
            Prepared::Component(pre) => {
                let host = Host {
                    wasi: P2 {
                        ctx: builder.build(),
                        table: ResourceTable::new(),
                    },
                    limits,
                };
                let mut store = new_store(engine, host, run.cpu_limit_millis);
                let outcome = drive(&run, run_component(&pre, &mut store)).await;
                (outcome, store.data().limits.exceeded)
            }
            Prepared::Http(_) => {
                return Err(SandboxError::InvalidModule(
                    "the component is a wasi:http component (it exports \
                     wasi:http/incoming-handler); it serves requests, one instance each, \
                     and cannot run as a command"
                        .into(),
                ));
            }
        };
        run.usage.memory_bytes.store(0, Ordering::Relaxed);
        let status = match outcome {
            None => ExitStatus::Killed,
            Some(Ok(code)) => ExitStatus::Exited(code),
            Some(Err(RunError::Instantiate(_))) if oom => ExitStatus::OutOfMemory,
            Some(Err(RunError::Instantiate(e))) => return Err(SandboxError::Start(e)),
            Some(Err(RunError::Guest(e))) => classify(&e, oom),
        };
        tracing::debug!(container = %run.id, ?status, "instance ended");
        Ok(status)
    }
}

/// The WASI context every container gets, whatever its binary's kind.
fn wasi_builder(run: &ContainerRun) -> Result<WasiCtxBuilder, SandboxError> {
    let mut builder = WasiCtxBuilder::new();
    builder
        .args(&run.argv)
        .envs(&run.env)
        .stdout(run.stdout.clone())
        .stderr(run.stderr.clone());
    for p in &run.preopens {
        let perms = if p.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        builder
            .preopened_dir(&p.host, &p.guest, perms)
            .map_err(|e| {
                SandboxError::Start(format!("mounting {} at {}: {e}", p.host.display(), p.guest))
            })?;
    }
    Ok(builder)
}

/// A store that always carries the memory limiter and an epoch deadline.
pub(crate) fn new_store<W: Send + 'static>(
    engine: &Engine,
    host: Host<W>,
    cpu_limit_millis: Option<u64>,
) -> Store<Host<W>> {
    let mut store = Store::new(engine, host);
    store.limiter(|h| &mut h.limits);
    // Every tick a running guest yields to tokio, so a busy loop shares
    // its worker thread and can be interrupted at the next tick.
    match cpu_limit_millis.filter(|m| *m < 1000) {
        Some(millis) => throttle(&mut store, millis),
        None => store.epoch_deadline_async_yield_and_update(1),
    }
    store
}

/// Runs an instance's future until it ends or the container is stopped
/// (`None`), counting the time spent polling it as the guest's CPU time.
async fn drive<F>(run: &ContainerRun, instance: F) -> Option<F::Output>
where
    F: Future,
{
    let timed = Timed {
        inner: Box::pin(instance),
        usage: run.usage.clone(),
    };
    tokio::select! {
        biased;
        () = run.stop.cancelled() => None,
        r = timed => Some(r),
    }
}

/// `instance`, counting the time spent polling it as CPU time of `usage`.
pub(crate) fn timed<F: Future>(instance: F, usage: Arc<Usage>) -> impl Future<Output = F::Output> {
    Timed {
        inner: Box::pin(instance),
        usage,
    }
}

/// Adds the time spent in each poll of `inner` to `usage.cpu_nanos`. The
/// guest only executes inside these polls (wasmtime runs it on a fiber the
/// poll resumes); throttling pauses and waits for I/O happen between them.
struct Timed<F> {
    inner: Pin<Box<F>>,
    usage: Arc<Usage>,
}

impl<F: Future> Future for Timed<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let began = Instant::now();
        let polled = self.inner.as_mut().poll(cx);
        let spent = u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.usage.cpu_nanos.fetch_add(spent, Ordering::Relaxed);
        polled
    }
}

/// Enforces a CPU limit below one core by time slicing: after each slice
/// the guest ran, it sleeps long enough that its share of wall time stays
/// `millis / 1000` (like a CFS quota, one tick as the period).
fn throttle<T: 'static>(store: &mut Store<T>, millis: u64) {
    let millis = millis.max(1);
    let resumed = Arc::new(Mutex::new(Instant::now()));
    store.epoch_deadline_callback(move |_| {
        let ran = match resumed.lock() {
            Ok(t) => t.elapsed(),
            Err(poisoned) => poisoned.into_inner().elapsed(),
        };
        let pause = ran
            .saturating_mul(u32::try_from(1000 - millis.min(999)).unwrap_or(0))
            .checked_div(u32::try_from(millis).unwrap_or(1))
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(1));
        let resumed = resumed.clone();
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                tokio::time::sleep(pause).await;
                let now = Instant::now();
                match resumed.lock() {
                    Ok(mut t) => *t = now,
                    Err(poisoned) => *poisoned.into_inner() = now,
                }
            }),
        ))
    });
}

enum RunError {
    Instantiate(String),
    Guest(wasmtime::Error),
}

/// Instantiates a core module and calls `_start`; its exit code.
async fn run_module(
    pre: &InstancePre<Host<WasiP1Ctx>>,
    store: &mut Store<Host<WasiP1Ctx>>,
) -> Result<i32, RunError> {
    let instance = pre
        .instantiate_async(&mut *store)
        .await
        .map_err(|e| RunError::Instantiate(format!("{e:#}")))?;
    let start = instance
        .get_typed_func::<(), ()>(&mut *store, "_start")
        .map_err(|e| RunError::Instantiate(format!("{e:#}")))?;
    start
        .call_async(&mut *store, ())
        .await
        .map_err(RunError::Guest)?;
    Ok(0)
}

/// Instantiates a component and calls `wasi:cli/run`; its exit code (`err`
/// is 1, as in wasmtime's own command runner).
async fn run_component(
    pre: &CommandPre<Host<P2>>,
    store: &mut Store<Host<P2>>,
) -> Result<i32, RunError> {
    let command = pre
        .instantiate_async(&mut *store)
        .await
        .map_err(|e| RunError::Instantiate(format!("{e:#}")))?;
    let ran = command
        .wasi_cli_run()
        .call_run(&mut *store)
        .await
        .map_err(RunError::Guest)?;
    Ok(if ran.is_ok() { 0 } else { 1 })
}

fn classify(e: &wasmtime::Error, oom: bool) -> ExitStatus {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return ExitStatus::Exited(exit.0);
    }
    if oom {
        return ExitStatus::OutOfMemory;
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return ExitStatus::Trapped(trap.to_string());
    }
    ExitStatus::Trapped(format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{ContainerLog, DEFAULT_MAX_LOG_BYTES, LogOptions, read_all, render_lines};
    use sha2::Digest;

    struct Fixture {
        dir: tempfile::TempDir,
        sandbox: Arc<WasmtimeSandbox>,
    }

    fn fixture() -> anyhow::Result<Fixture> {
        fixture_with(SandboxConfig {
            max_instances: 8,
            ..SandboxConfig::default()
        })
    }

    fn fixture_with(config: SandboxConfig) -> anyhow::Result<Fixture> {
        let dir = tempfile::tempdir()?;
        let sandbox = WasmtimeSandbox::new(&config)?;
        Ok(Fixture {
            dir,
            sandbox: Arc::new(sandbox),
        })
    }

    fn digest_of(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
    }

    impl Fixture {
        async fn module(&self, wat: &str) -> anyhow::Result<String> {
            let bytes = wat::parse_str(wat)?;
            self.prepare(&bytes).await
        }

        async fn prepare(&self, bytes: &[u8]) -> anyhow::Result<String> {
            let digest = digest_of(bytes);
            let path = self.dir.path().join(digest.replace(':', "-"));
            tokio::fs::write(&path, bytes).await?;
            self.sandbox.prepare(&digest, &path).await?;
            Ok(digest)
        }

        /// The message `bytes` are refused with.
        async fn refused(&self, bytes: &[u8]) -> anyhow::Result<String> {
            let digest = digest_of(bytes);
            let path = self.dir.path().join(digest.replace(':', "-"));
            tokio::fs::write(&path, bytes).await?;
            match self.sandbox.prepare(&digest, &path).await {
                Err(SandboxError::InvalidModule(m)) => Ok(m),
                other => anyhow::bail!("expected InvalidModule, got {other:?}"),
            }
        }

        async fn refused_wat(&self, wat: &str) -> anyhow::Result<String> {
            self.refused(&wat::parse_str(wat)?).await
        }

        async fn run(
            &self,
            digest: &str,
            argv: &[&str],
            env: &[(&str, &str)],
            memory_limit: u64,
            stop: CancellationToken,
        ) -> anyhow::Result<(ExitStatus, String)> {
            self.run_with_usage(digest, argv, env, memory_limit, stop, Arc::default())
                .await
        }

        async fn run_with_usage(
            &self,
            digest: &str,
            argv: &[&str],
            env: &[(&str, &str)],
            memory_limit: u64,
            stop: CancellationToken,
            usage: Arc<Usage>,
        ) -> anyhow::Result<(ExitStatus, String)> {
            static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = RUNS.fetch_add(1, Ordering::Relaxed);
            let path = self.dir.path().join(format!("run{n}.log"));
            let log = ContainerLog::create(&path, DEFAULT_MAX_LOG_BYTES).await?;
            let status = self
                .sandbox
                .run(ContainerRun {
                    id: "wasm://test".into(),
                    digest: digest.to_string(),
                    module_path: PathBuf::new(),
                    argv: argv.iter().map(|s| s.to_string()).collect(),
                    env: env
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    memory_limit,
                    cpu_limit_millis: None,
                    preopens: Vec::new(),
                    stdout: log.stdout(),
                    stderr: log.stderr(),
                    stop,
                    usage,
                })
                .await?;
            log.finish().await?;
            let data = read_all(&path).await?;
            let text: String = render_lines(&data, &LogOptions::default())
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect();
            Ok((status, text))
        }
    }

    /// Prints argv[1] and the first environment entry, then returns.
    const HELLO: &str = r#"
    (module
      (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes_get (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "environ_get" (func $env_get (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 900) "\n")
      (func $strlen (param $p i32) (result i32) (local $n i32)
        (block $done (loop $l
          (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
          (local.set $n (i32.add (local.get $n) (i32.const 1)))
          (br $l)))
        (local.get $n))
      (func $print (param $p i32)
        (i32.store (i32.const 0) (local.get $p))
        (i32.store (i32.const 4) (call $strlen (local.get $p)))
        (i32.store (i32.const 8) (i32.const 900))
        (i32.store (i32.const 12) (i32.const 1))
        ;; one iovec per call: preview1 may write only the first of several
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 20)))
        (drop (call $fd_write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 20))))
      (func (export "_start")
        ;; argv pointers at 100, strings at 1000
        (drop (call $args_sizes_get (i32.const 24) (i32.const 28)))
        (drop (call $args_get (i32.const 100) (i32.const 1000)))
        (call $print (i32.load (i32.const 104)))
        ;; environ pointers at 200, strings at 3000
        (drop (call $env_sizes_get (i32.const 24) (i32.const 28)))
        (drop (call $env_get (i32.const 200) (i32.const 3000)))
        (call $print (i32.load (i32.const 200)))))
    "#;

    const EXIT3: &str = r#"
    (module
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (func (export "_start") (call $exit (i32.const 3))))
    "#;

    const DIV0: &str = r#"
    (module
      (memory (export "memory") 1)
      (func (export "_start")
        (drop (i32.div_s (i32.const 1) (i32.sub (i32.const 1) (i32.const 1))))))
    "#;

    const UNREACHABLE: &str = r#"
    (module (memory (export "memory") 1) (func (export "_start") unreachable))
    "#;

    const SPIN: &str = r#"
    (module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))
    "#;

    /// Grows memory one page at a time forever.
    const HOG: &str = r#"
    (module
      (memory (export "memory") 1)
      (func (export "_start")
        (loop $l
          (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))))
    "#;

    #[tokio::test]
    async fn hello_prints_args_and_env_and_exits_zero() -> anyhow::Result<()> {
        let f = fixture()?;
        let digest = f.module(HELLO).await?;
        let (status, out) = f
            .run(
                &digest,
                &["hello", "world"],
                &[("GREETING", "hi")],
                DEFAULT_MEMORY_LIMIT,
                CancellationToken::new(),
            )
            .await?;
        assert_eq!(status, ExitStatus::Exited(0));
        assert_eq!(out, "world\nGREETING=hi\n");
        Ok(())
    }

    /// A pool no address space can hold (a million 4 GiB memory slots, as a
    /// 39-bit or `RLIMIT_AS`-limited host sees a normal one): the engine
    /// falls back to on-demand allocation and still runs modules.
    #[tokio::test]
    async fn a_pool_that_cannot_be_reserved_falls_back_to_on_demand() -> anyhow::Result<()> {
        let f = fixture_with(SandboxConfig {
            max_instances: 1 << 20,
            ..SandboxConfig::default()
        })?;
        assert!(!f.sandbox.is_pooled());
        let digest = f.module(HELLO).await?;
        let (status, out) = f
            .run(
                &digest,
                &["hello", "edge"],
                &[("ARCH", "aarch64")],
                DEFAULT_MEMORY_LIMIT,
                CancellationToken::new(),
            )
            .await?;
        assert_eq!(status, ExitStatus::Exited(0));
        assert_eq!(out, "edge\nARCH=aarch64\n");
        // The same settings with a pool that fits are pooled: the fallback
        // came from the reservation's size alone.
        assert!(fixture()?.sandbox.is_pooled());
        Ok(())
    }

    #[test]
    fn on_demand_reservations_shrink_only_when_the_address_space_is_limited() {
        let full = on_demand_for(None, 440);
        assert_eq!(full.bytes, FULL_MEMORY_RESERVATION);
        assert_eq!(on_demand_for(Some(u64::MAX), 440), full);
        let small = on_demand_for(Some(8 << 30), 440);
        assert!(small.bytes >= SMALL_RESERVATION_MIN && small.bytes < 16 << 20);
        assert_eq!(small.bytes % WASM_PAGE, 0);
        assert_eq!(small.guard, SMALL_MEMORY_GUARD);
        // A tiny limit still leaves each memory a usable reservation.
        assert_eq!(
            on_demand_for(Some(1 << 20), 440).bytes,
            SMALL_RESERVATION_MIN
        );
    }

    /// Under an `RLIMIT_AS` of 1 GiB the pool is not even tried, memories
    /// get small reservations, and a guest can still grow well past its
    /// reservation (the memory moves).
    #[tokio::test]
    async fn a_limited_address_space_runs_modules_that_outgrow_their_reservation()
    -> anyhow::Result<()> {
        let limit = 1 << 30;
        let reservation = on_demand_for(Some(limit), 8);
        assert!(reservation.bytes < 100 << 20);
        let sandbox = WasmtimeSandbox::within(
            &SandboxConfig {
                max_instances: 8,
                ..SandboxConfig::default()
            },
            Some(limit),
        )?;
        assert!(!sandbox.is_pooled());
        let f = Fixture {
            dir: tempfile::tempdir()?,
            sandbox: Arc::new(sandbox),
        };
        // Grows by 128 MiB, then writes and reads back its last byte;
        // traps if either fails.
        let digest = f
            .module(
                r#"
                (module
                  (memory 1)
                  (func (export "_start")
                    (if (i32.eq (memory.grow (i32.const 2048)) (i32.const -1))
                      (then unreachable))
                    (i32.store8 (i32.const 134283263) (i32.const 42))
                    (if (i32.ne (i32.load8_u (i32.const 134283263)) (i32.const 42))
                      (then unreachable))))
                "#,
            )
            .await?;
        let (status, _) = f
            .run(
                &digest,
                &["grow"],
                &[],
                DEFAULT_MEMORY_LIMIT,
                CancellationToken::new(),
            )
            .await?;
        assert_eq!(status, ExitStatus::Exited(0));
        Ok(())
    }

    #[tokio::test]
    async fn proc_exit_code_is_reported() -> anyhow::Result<()> {
        let f = fixture()?;
        let digest = f.module(EXIT3).await?;
        let (status, _) = f
            .run(
                &digest,
                &["x"],
                &[],
                DEFAULT_MEMORY_LIMIT,
                CancellationToken::new(),
            )
            .await?;
        assert_eq!(status, ExitStatus::Exited(3));
        Ok(())
    }

    #[tokio::test]
    async fn traps_carry_their_message() -> anyhow::Result<()> {
        let f = fixture()?;
        let digest = f.module(DIV0).await?;
        let (status, _) = f
            .run(
                &digest,
                &["x"],
                &[],
                DEFAULT_MEMORY_LIMIT,
                CancellationToken::new(),
            )
            .await?;
        assert_eq!(
            status,
            ExitStatus::Trapped("wasm trap: integer divide by zero".into())
        );
        let digest = f.module(UNREACHABLE).await?;
        let (status, _) = f
            .run(
                &digest,
                &["x"],
                &[],
                DEFAULT_MEMORY_LIMIT,
                CancellationToken::new(),
            )
            .await?;
        let ExitStatus::Trapped(msg) = status else {
            anyhow::bail!("expected a trap, got {status:?}");
        };
        assert!(msg.contains("unreachable"), "{msg}");
        Ok(())
    }

    #[tokio::test]
    async fn test_infinite_loop_is_interrupted_by_stop() -> anyhow::Result<()> {
        let f = fixture()?;
        let digest = f.module(SPIN).await?;
        let stop = CancellationToken::new();
        let cancel = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            cancel.cancel();
        });
        let (status, _) = tokio::time::timeout(
            Duration::from_secs(10),
            f.run(&digest, &["x"], &[], DEFAULT_MEMORY_LIMIT, stop),
        )
        .await??;
        assert_eq!(status, ExitStatus::Killed);
        Ok(())
    }

    #[tokio::test]
    async fn test_max_memory_size_violated_is_oom() -> anyhow::Result<()> {
        let f = fixture()?;
        let digest = f.module(HOG).await?;
        let (status, _) = f
            .run(&digest, &["x"], &[], 8 << 20, CancellationToken::new())
            .await?;
        assert_eq!(status, ExitStatus::OutOfMemory);
        Ok(())
    }

    #[tokio::test]
    async fn missing_start_is_an_invalid_module() -> anyhow::Result<()> {
        let f = fixture()?;
        let bytes = wat::parse_str("(module (func (export \"main\")))")?;
        let path = f.dir.path().join("nostart.wasm");
        tokio::fs::write(&path, &bytes).await?;
        let err = f.sandbox.prepare("sha256:nostart", &path).await;
        assert!(matches!(err, Err(SandboxError::InvalidModule(m)) if m.contains("_start")));
        let path = f.dir.path().join("garbage.wasm");
        tokio::fs::write(&path, b"not wasm").await?;
        let err = f.sandbox.prepare("sha256:garbage", &path).await;
        assert!(matches!(err, Err(SandboxError::InvalidModule(_))));
        Ok(())
    }

    /// Two busy guests on a single-threaded runtime: both must be running
    /// (epoch yields) before either is stopped.
    #[tokio::test(flavor = "current_thread")]
    async fn two_busy_loops_share_one_worker() -> anyhow::Result<()> {
        // Each guest bumps a counter in an imported global… WASI has no
        // such hook, so instead each guest prints once per outer iteration;
        // progress is visible in its log.
        const TICKER: &str = r#"
        (module
          (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 100) ".\n")
          (func (export "_start") (local $i i32)
            (i32.store (i32.const 0) (i32.const 100))
            (i32.store (i32.const 4) (i32.const 2))
            (loop $outer
              (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 20)))
              (local.set $i (i32.const 0))
              (loop $inner
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $inner (i32.lt_u (local.get $i) (i32.const 20000000))))
              (br $outer))))
        "#;
        let f = fixture()?;
        let digest = f.module(TICKER).await?;
        let mut runs = Vec::new();
        let mut logs = Vec::new();
        for i in 0..2 {
            let path = f.dir.path().join(format!("busy{i}.log"));
            let log = ContainerLog::create(&path, DEFAULT_MAX_LOG_BYTES).await?;
            let stop = CancellationToken::new();
            let sandbox = f.sandbox.clone();
            let run = ContainerRun {
                id: format!("wasm://busy{i}"),
                digest: digest.clone(),
                module_path: PathBuf::new(),
                argv: vec!["busy".into()],
                env: Vec::new(),
                memory_limit: DEFAULT_MEMORY_LIMIT,
                // One of the two is throttled: it must still make progress.
                cpu_limit_millis: (i == 1).then_some(200),
                preopens: Vec::new(),
                stdout: log.stdout(),
                stderr: log.stderr(),
                stop: stop.clone(),
                usage: Arc::default(),
            };
            runs.push((stop, tokio::spawn(async move { sandbox.run(run).await })));
            logs.push((path, log.handle()));
        }
        // Wait (bounded) until both guests have printed at least twice.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for (path, handle) in &logs {
            let mut progress = handle.progress.clone();
            loop {
                let data = read_all(path).await?;
                if render_lines(&data, &LogOptions::default()).len() >= 2 {
                    break;
                }
                tokio::time::timeout_at(deadline, progress.changed()).await??;
            }
        }
        for (stop, task) in runs {
            stop.cancel();
            assert_eq!(task.await??, ExitStatus::Killed);
        }
        Ok(())
    }

    /// The WASI 0.2 types a printing component imports: wasi:io's error
    /// and output-stream resources, stdout, and the environment.
    const P2_IMPORTS: &str = r#"
      (type $error-i (instance (export "error" (type (sub resource)))))
      (import "wasi:io/error@0.2.0" (instance $error (type $error-i)))
      (alias export $error "error" (type $error-t))
      (type $streams-i (instance
        (alias outer 1 $error-t (type $e))
        (export "error" (type $err (eq $e)))
        (export "output-stream" (type $os (sub resource)))
        (type $own-err (own $err))
        (type $stream-error (variant (case "last-operation-failed" $own-err) (case "closed")))
        (export "stream-error" (type $se (eq $stream-error)))
        (type $borrow-os (borrow $os))
        (export "[method]output-stream.blocking-write-and-flush"
          (func (param "self" $borrow-os) (param "contents" (list u8)) (result (result (error $se)))))))
      (import "wasi:io/streams@0.2.0" (instance $streams (type $streams-i)))
      (alias export $streams "output-stream" (type $os-t))
      (type $stdout-i (instance
        (alias outer 1 $os-t (type $o))
        (export "output-stream" (type $os (eq $o)))
        (type $own-os (own $os))
        (export "get-stdout" (func (result $own-os)))))
      (import "wasi:cli/stdout@0.2.0" (instance $stdout (type $stdout-i)))
      (type $env-i (instance
        (export "get-environment" (func (result (list (tuple string string)))))
        (export "get-arguments" (func (result (list string))))))
      (import "wasi:cli/environment@0.2.0" (instance $env (type $env-i)))
      (type $exit-i (instance
        (export "exit" (func (param "status" (result))))
        (export "exit-with-code" (func (param "status-code" u8)))))
      (import "wasi:cli/exit@0.2.12" (instance $exit (type $exit-i)))

      ;; Memory and a bump allocator live in a module of their own, so the
      ;; lowered imports can use them before the main module exists.
      (core module $Mem
        (memory (export "memory") 1)
        (global $next (mut i32) (i32.const 4096))
        (func (export "realloc") (param i32 i32 i32 i32) (result i32) (local $p i32)
          (local.set $p (i32.and
            (i32.add (global.get $next) (i32.sub (local.get 2) (i32.const 1)))
            (i32.sub (i32.const 0) (local.get 2))))
          (global.set $next (i32.add (local.get $p) (local.get 3)))
          (local.get $p)))
      (core instance $mem (instantiate $Mem))
      (alias core export $mem "memory" (core memory $memory))
      (alias core export $mem "realloc" (core func $realloc))
      (core func $write (canon lower
        (func $streams "[method]output-stream.blocking-write-and-flush") (memory $memory)))
      (core func $get-stdout (canon lower (func $stdout "get-stdout")))
      (core func $get-args (canon lower (func $env "get-arguments") (memory $memory) (realloc $realloc) string-encoding=utf8))
      (core func $get-env (canon lower (func $env "get-environment") (memory $memory) (realloc $realloc) string-encoding=utf8))
      (core func $exit (canon lower (func $exit "exit")))
      (core func $exit-with-code (canon lower (func $exit "exit-with-code")))
      (core instance $host
        (export "write" (func $write))
        (export "get-stdout" (func $get-stdout))
        (export "get-args" (func $get-args))
        (export "get-env" (func $get-env))
        (export "exit" (func $exit))
        (export "exit-with-code" (func $exit-with-code)))
    "#;

    /// A WASI 0.2 command: prints argv[1] and the first environment entry
    /// (like [`HELLO`]), then ends as `argv[2]` says: `ok`, `err` (run
    /// returns an error), `exit` (wasi:cli/exit with an error), `code`
    /// (wasi:cli/exit-with-code 7) or `trap`.
    fn hello_component() -> String {
        format!(
            r#"(component
              {P2_IMPORTS}
              (core module $Main
                (import "mem" "memory" (memory 1))
                (import "host" "write" (func $write (param i32 i32 i32 i32)))
                (import "host" "get-stdout" (func $get_stdout (result i32)))
                (import "host" "get-args" (func $get_args (param i32)))
                (import "host" "get-env" (func $get_env (param i32)))
                (import "host" "exit" (func $exit (param i32)))
                (import "host" "exit-with-code" (func $exit_with_code (param i32)))
                (data (i32.const 900) "\n=")
                (global $out (mut i32) (i32.const 0))
                (func $print (param $p i32) (param $n i32)
                  (call $write (global.get $out) (local.get $p) (local.get $n) (i32.const 16)))
                (func $is (param $p i32) (param $n i32) (param $c i32) (result i32)
                  (i32.and (i32.eq (local.get $n) (i32.const 1))
                           (i32.eq (i32.load8_u (local.get $p)) (local.get $c))))
                (func (export "run") (result i32) (local $args i32) (local $env i32) (local $mode i32) (local $len i32)
                  (global.set $out (call $get_stdout))
                  ;; list<string> at 32: (ptr, len); each string (ptr, len)
                  (call $get_args (i32.const 32))
                  (local.set $args (i32.load (i32.const 32)))
                  (call $print (i32.load offset=8 (local.get $args)) (i32.load offset=12 (local.get $args)))
                  (call $print (i32.const 900) (i32.const 1))
                  ;; list<tuple<string, string>> at 40: each entry (kp, kl, vp, vl)
                  (call $get_env (i32.const 40))
                  (local.set $env (i32.load (i32.const 40)))
                  (call $print (i32.load (local.get $env)) (i32.load offset=4 (local.get $env)))
                  (call $print (i32.const 901) (i32.const 1))
                  (call $print (i32.load offset=8 (local.get $env)) (i32.load offset=12 (local.get $env)))
                  (call $print (i32.const 900) (i32.const 1))
                  ;; argv[2]'s first letter picks the ending
                  (local.set $mode (i32.load8_u (i32.load offset=16 (local.get $args))))
                  (if (i32.eq (local.get $mode) (i32.const 0x65))
                    (then (if (i32.eq (i32.load8_u offset=1 (i32.load offset=16 (local.get $args))) (i32.const 0x78))
                      (then (call $exit (i32.const 1)))
                      (else (return (i32.const 1))))))
                  (if (i32.eq (local.get $mode) (i32.const 0x74)) (then unreachable))
                  (if (i32.eq (local.get $mode) (i32.const 0x63)) (then (call $exit_with_code (i32.const 7))))
                  (i32.const 0)))
              (core instance $main (instantiate $Main
                (with "mem" (instance $mem))
                (with "host" (instance $host))))
              (func $run (result (result)) (canon lift (core func $main "run")))
              (instance $run-i (export "run" (func $run)))
              (export "wasi:cli/run@0.2.0" (instance $run-i)))"#
        )
    }

    #[tokio::test]
    async fn a_component_runs_as_a_wasi_command() -> anyhow::Result<()> {
        let f = fixture()?;
        let digest = f.prepare(&wat::parse_str(hello_component())?).await?;
        let run = async |mode: &str| {
            f.run(
                &digest,
                &["hello", "world", mode],
                &[("GREETING", "hi")],
                DEFAULT_MEMORY_LIMIT,
                CancellationToken::new(),
            )
            .await
        };
        let (status, out) = run("ok").await?;
        assert_eq!(status, ExitStatus::Exited(0));
        assert_eq!(out, "world\nGREETING=hi\n");
        // `run` returning an error is exit code 1, like wasmtime's runner.
        let (status, out) = run("err").await?;
        assert_eq!(status, ExitStatus::Exited(1));
        assert_eq!(out, "world\nGREETING=hi\n");
        // So is wasi:cli/exit with an error.
        let (status, _) = run("exit").await?;
        assert_eq!(status, ExitStatus::Exited(1));
        let (status, _) = run("code").await?;
        assert_eq!(status, ExitStatus::Exited(7));
        let (status, _) = run("trap").await?;
        let ExitStatus::Trapped(msg) = status else {
            anyhow::bail!("expected a trap, got {status:?}");
        };
        assert!(msg.contains("unreachable"), "{msg}");
        Ok(())
    }

    /// A component whose `run` spins, growing its memory by `pages` first.
    fn spinning_component(pages: u32) -> String {
        format!(
            r#"(component
              (core module $M
                (memory (export "memory") 1)
                (func (export "run") (result i32)
                  (drop (memory.grow (i32.const {pages})))
                  (loop $l (br $l))
                  (i32.const 0)))
              (core instance $m (instantiate $M))
              (func $run (result (result)) (canon lift (core func $m "run")))
              (instance $run-i (export "run" (func $run)))
              (export "wasi:cli/run@0.2.0" (instance $run-i)))"#
        )
    }

    #[tokio::test]
    async fn components_obey_the_memory_limit_and_the_stop_token() -> anyhow::Result<()> {
        let f = fixture()?;
        let digest = f.prepare(&wat::parse_str(spinning_component(200))?).await?;
        // 201 pages do not fit in 8 MiB.
        let (status, _) = f
            .run(&digest, &["x"], &[], 8 << 20, CancellationToken::new())
            .await?;
        assert_eq!(status, ExitStatus::OutOfMemory);

        let stop = CancellationToken::new();
        let usage = Arc::new(Usage::default());
        let running = f.run_with_usage(&digest, &["x"], &[], 64 << 20, stop.clone(), usage.clone());
        let watch = async {
            // Busy and grown: CPU time accrues, memory is what was granted.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while usage.cpu_nanos.load(Ordering::Relaxed) == 0
                || usage.memory_bytes.load(Ordering::Relaxed) < 201 * 65536
            {
                anyhow::ensure!(tokio::time::Instant::now() < deadline, "no usage reported");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(usage.memory_bytes.load(Ordering::Relaxed), 201 * 65536);
            stop.cancel();
            Ok(())
        };
        let (ran, watched) = tokio::join!(running, watch);
        watched?;
        assert_eq!(ran?.0, ExitStatus::Killed);
        assert_eq!(
            usage.memory_bytes.load(Ordering::Relaxed),
            0,
            "a finished run holds no memory"
        );
        Ok(())
    }

    #[tokio::test]
    async fn usage_counts_memory_and_tables_and_cpu_of_a_module() -> anyhow::Result<()> {
        const GROWN: &str = r#"
        (module
          (memory (export "memory") 2)
          (table 100 funcref)
          (func (export "_start")
            (drop (memory.grow (i32.const 3)))
            (loop $l (br $l))))
        "#;
        let f = fixture()?;
        let digest = f.module(GROWN).await?;
        let stop = CancellationToken::new();
        let usage = Arc::new(Usage::default());
        let expected = 5 * 65536 + 100 * TABLE_ELEMENT_BYTES;
        let running = f.run_with_usage(&digest, &["x"], &[], 64 << 20, stop.clone(), usage.clone());
        let watch = async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while usage.memory_bytes.load(Ordering::Relaxed) != expected
                || usage.cpu_nanos.load(Ordering::Relaxed) == 0
            {
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "usage stuck at {:?}",
                    usage
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let cpu = usage.cpu_nanos.load(Ordering::Relaxed);
            // Still spinning: the counter keeps growing.
            while usage.cpu_nanos.load(Ordering::Relaxed) == cpu {
                anyhow::ensure!(tokio::time::Instant::now() < deadline, "CPU time stopped");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            stop.cancel();
            Ok(())
        };
        let (ran, watched) = tokio::join!(running, watch);
        watched?;
        assert_eq!(ran?.0, ExitStatus::Killed);
        assert_eq!(usage.memory_bytes.load(Ordering::Relaxed), 0);
        Ok(())
    }

    /// Tables count against the memory limit too.
    #[tokio::test]
    async fn table_growth_past_the_limit_is_oom() -> anyhow::Result<()> {
        const TABLES: &str = r#"
        (module
          (memory (export "memory") 1)
          (table $t 10 funcref)
          (func (export "_start")
            (loop $l
              (br_if $l (i32.ne (table.grow $t (ref.null func) (i32.const 10000)) (i32.const -1))))))
        "#;
        let f = fixture()?;
        let digest = f.module(TABLES).await?;
        // Room for the memory and 5 000 elements (well under the pool's
        // per-table cap, which would only make table.grow fail).
        let (status, _) = f
            .run(
                &digest,
                &["x"],
                &[],
                65536 + 40_000,
                CancellationToken::new(),
            )
            .await?;
        assert_eq!(status, ExitStatus::OutOfMemory);
        Ok(())
    }

    /// A module with a large table (as big C++ and Rust programs have)
    /// runs on a pooling node as it would on an on-demand one.
    #[tokio::test]
    async fn large_tables_fit_the_pool() -> anyhow::Result<()> {
        const BIG_TABLE: &str = r#"
        (module
          (memory (export "memory") 1)
          (table 100000 funcref)
          (func (export "_start")))
        "#;
        let f = fixture()?;
        let digest = f.module(BIG_TABLE).await?;
        let (status, _) = f
            .run(&digest, &["x"], &[], 64 << 20, CancellationToken::new())
            .await?;
        assert_eq!(status, ExitStatus::Exited(0));
        Ok(())
    }

    #[tokio::test]
    async fn instances_are_freed_when_runs_end() -> anyhow::Result<()> {
        // A pool of two instances: any slot kept after a run would make a
        // later instantiation fail.
        let f = fixture_with(SandboxConfig {
            max_instances: 2,
            ..SandboxConfig::default()
        })?;
        let exit = f.module(EXIT3).await?;
        let spin = f.module(SPIN).await?;
        let component = f.prepare(&wat::parse_str(spinning_component(1))?).await?;
        for _ in 0..5 {
            let (status, _) = f
                .run(
                    &exit,
                    &["x"],
                    &[],
                    DEFAULT_MEMORY_LIMIT,
                    CancellationToken::new(),
                )
                .await?;
            assert_eq!(status, ExitStatus::Exited(3));
            for digest in [&spin, &component] {
                let stop = CancellationToken::new();
                stop.cancel();
                let (status, _) = f
                    .run(digest, &["x"], &[], DEFAULT_MEMORY_LIMIT, stop)
                    .await?;
                assert_eq!(status, ExitStatus::Killed);
                // Stopped mid-run, not before it started.
                let stop = CancellationToken::new();
                let cancel = stop.clone();
                let usage = Arc::new(Usage::default());
                let watched = usage.clone();
                let killer = tokio::spawn(async move {
                    while watched.cpu_nanos.load(Ordering::Relaxed) == 0 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    cancel.cancel();
                });
                let (status, _) = tokio::time::timeout(
                    Duration::from_secs(30),
                    f.run_with_usage(digest, &["x"], &[], DEFAULT_MEMORY_LIMIT, stop, usage),
                )
                .await??;
                killer.await?;
                assert_eq!(status, ExitStatus::Killed);
            }
        }
        Ok(())
    }

    #[tokio::test]
    async fn failures_are_explained() -> anyhow::Result<()> {
        let f = fixture()?;

        let m = f.refused(b"\x7fELF\x02\x01\x01\0\0\0\0\0").await?;
        assert!(m.contains("is not a WebAssembly binary"), "{m}");
        assert!(m.contains("a native ELF executable"), "{m}");
        let m = f.refused(b"#!/bin/sh\necho hello\n").await?;
        assert!(
            m.contains("it looks like a script: \"#!/bin/sh\\necho hello\\n\""),
            "{m}"
        );

        // A function that returns nothing where it promised an i32.
        let m = f.refused_wat("(module (func (result i32)))").await?;
        assert!(
            m.starts_with("the module is not valid WebAssembly: "),
            "{m}"
        );
        assert!(m.contains("type mismatch"), "{m}");
        assert!(m.ends_with("(at byte offset 0x18)"), "{m}");
        // The engine leaves the GC proposal off.
        let m = f
            .refused_wat("(module (type (struct)) (func (export \"_start\")))")
            .await?;
        assert!(
            m.starts_with("the module uses a WebAssembly feature this node does not enable: "),
            "{m}"
        );
        let m = f
            .refused_wat("(component (core module (func (result i32))))")
            .await?;
        assert!(
            m.starts_with("the component is not valid WebAssembly: "),
            "{m}"
        );

        let m = f
            .refused_wat(
                r#"(module (memory (export "memory") 1)
                     (func (export "_initialize")) (func (export "add") (param i32 i32) (result i32) local.get 0))"#,
            )
            .await?;
        assert!(m.contains("has no `_start` function"), "{m}");
        assert!(
            m.contains("it exports memory (memory), _initialize (func), add (func)"),
            "{m}"
        );
        assert!(m.contains("WASI reactor"), "{m}");
        let m = f
            .refused_wat(r#"(module (func (export "_start") (param i32)))"#)
            .await?;
        assert!(
            m.starts_with("the module's `_start` function takes (i32) and returns ()"),
            "{m}"
        );

        let m = f
            .refused_wat(
                r#"(module
                  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                  (import "env" "foo" (func))
                  (import "env" "bar" (global i32))
                  (import "wasi_snapshot_preview1" "no_such_call" (func))
                  (func (export "_start")))"#,
            )
            .await?;
        assert_eq!(
            m,
            "the module imports things this node does not provide: env::foo (func), \
             env::bar (global), wasi_snapshot_preview1::no_such_call (func); modules can \
             import only WASI preview 1 (wasi_snapshot_preview1) (`env` imports are usually \
             symbols left undefined when the module was linked)"
        );
        // A core module of WASI 0.2 imports: half-way to a component.
        let m = f
            .refused_wat(
                r#"(module
                  (import "wasi:cli/environment@0.2.0" "get-arguments" (func (param i32)))
                  (func (export "_start")))"#,
            )
            .await?;
        assert!(
            m.contains("wasi:cli/environment@0.2.0::get-arguments (func)"),
            "{m}"
        );
        assert!(m.contains("turn the module into a component"), "{m}");
        // Present, but with another type: wasmtime's own words.
        let m = f
            .refused_wat(
                r#"(module
                  (import "wasi_snapshot_preview1" "fd_write" (func (param i32)))
                  (func (export "_start")))"#,
            )
            .await?;
        assert!(m.starts_with("the module cannot be linked: "), "{m}");
        assert!(m.contains("fd_write"), "{m}");

        let m = f
            .refused_wat(
                r#"(component
                  (import "wasi:io/error@0.2.0" (instance (export "error" (type (sub resource)))))
                  (import "my:pkg/thing@1.0.0" (instance (export "go" (func))))
                  (import "wasi:http/outgoing-handler@0.2.0" (instance (export "handle" (func))))
                  (import "wasi:cli/environment@0.2.0" (instance
                    (export "get-arguments" (func (result (list string))))
                    (export "get-shell" (func (result string)))))
                  (import "hello" (func))
                  (core module $m (func (export "run") (result i32) i32.const 0))
                  (core instance $i (instantiate $m))
                  (func $run (result (result)) (canon lift (core func $i "run")))
                  (instance $run-i (export "run" (func $run)))
                  (export "wasi:cli/run@0.2.0" (instance $run-i)))"#,
            )
            .await?;
        assert_eq!(
            m,
            "the component imports things this node does not provide: \
             my:pkg/thing@1.0.0 (instance), wasi:http/outgoing-handler@0.2.0 (instance), \
             wasi:cli/environment@0.2.0#get-shell (func), hello (func); components can import WASI 0.2 (wasi:cli, wasi:clocks, \
             wasi:filesystem, wasi:io, wasi:random, wasi:sockets)"
        );

        let m = f
            .refused_wat(
                r#"(component
                  (core module $m (func (export "handle")))
                  (core instance $i (instantiate $m))
                  (func $handle (canon lift (core func $i "handle")))
                  (instance $h (export "handle" (func $handle)))
                  (export "wasi:http/incoming-handler@0.2.0" (instance $h)))"#,
            )
            .await?;
        // Served as an HTTP workload, but this one's handler has the wrong shape.
        assert!(
            m.starts_with(
                "the component exports wasi:http/incoming-handler, but not as this node's \
                 wasi:http 0.2 proxy world expects: "
            ),
            "{m}"
        );
        let m = f
            .refused_wat(
                r#"(component
                  (core module $m (func (export "hello")))
                  (core instance $i (instantiate $m))
                  (func $hello (canon lift (core func $i "hello")))
                  (export "hello" (func $hello)))"#,
            )
            .await?;
        assert!(
            m.starts_with(
                "the component does not export wasi:cli/run, so it has nothing to run \
                 (it exports hello (func))"
            ),
            "{m}"
        );
        // A newer run interface than this node's.
        let m = f
            .refused_wat(
                r#"(component
                  (core module $m (func (export "run") (result i32) i32.const 0))
                  (core instance $i (instantiate $m))
                  (func $run (result (result)) (canon lift (core func $i "run")))
                  (instance $run-i (export "run" (func $run)))
                  (export "wasi:cli/run@0.3.0" (instance $run-i)))"#,
            )
            .await?;
        assert!(
            m.starts_with(
                "the component exports wasi:cli/run@0.3.0, but this node runs WASI 0.2 \
                 commands (wasi:cli/run@0.2.x): "
            ),
            "{m}"
        );

        // Compiled, but a table larger than any node allows does not fit
        // the instance pool's slots.
        if f.sandbox.is_pooled() {
            let m = f
                .refused_wat(r#"(module (table 2000000 funcref) (func (export "_start")))"#)
                .await?;
            assert!(m.starts_with("compiling the module failed: "), "{m}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_second_sandbox_on_the_same_dir_loads_instead_of_compiling() -> anyhow::Result<()> {
        let cache = tempfile::tempdir()?;
        let config = SandboxConfig {
            max_instances: 4,
            compiled_cache_dir: Some(cache.path().to_path_buf()),
            ..SandboxConfig::default()
        };
        let module = wat::parse_str(EXIT3)?;
        let component = wat::parse_str(hello_component())?;

        let first = fixture_with(config.clone())?;
        first.prepare(&module).await?;
        first.prepare(&component).await?;
        assert_eq!(
            first.sandbox.compile_stats(),
            CompileStats {
                compiled: 2,
                loaded: 0
            }
        );
        drop(first);

        let second = fixture_with(config)?;
        let digest = second.prepare(&module).await?;
        let hello = second.prepare(&component).await?;
        assert_eq!(
            second.sandbox.compile_stats(),
            CompileStats {
                compiled: 0,
                loaded: 2
            }
        );
        // What was loaded runs.
        let (status, _) = second
            .run(
                &digest,
                &["x"],
                &[],
                DEFAULT_MEMORY_LIMIT,
                CancellationToken::new(),
            )
            .await?;
        assert_eq!(status, ExitStatus::Exited(3));
        let (status, out) = second
            .run(
                &hello,
                &["x", "loaded", "ok"],
                &[("A", "b")],
                DEFAULT_MEMORY_LIMIT,
                CancellationToken::new(),
            )
            .await?;
        assert_eq!(status, ExitStatus::Exited(0));
        assert_eq!(out, "loaded\nA=b\n");

        // A refused binary is refused again, from the cache too.
        let nostart = wat::parse_str(r#"(module (func (export "main")))"#)?;
        let m = second.refused(&nostart).await?;
        let third = fixture_with(SandboxConfig {
            compiled_cache_dir: Some(cache.path().to_path_buf()),
            ..SandboxConfig::default()
        })?;
        assert_eq!(third.refused(&nostart).await?, m);
        assert_eq!(third.sandbox.compile_stats().loaded, 1);
        Ok(())
    }

    #[tokio::test]
    async fn the_compiled_cache_stays_under_its_cap() -> anyhow::Result<()> {
        let cache = tempfile::tempdir()?;
        let probe = fixture_with(SandboxConfig {
            compiled_cache_dir: Some(cache.path().to_path_buf()),
            ..SandboxConfig::default()
        })?;
        probe.prepare(&wat::parse_str(EXIT3)?).await?;
        let one = crate::compile_cache::CompileCache::open(
            cache.path(),
            &probe.sandbox.compiler.engine,
            u64::MAX,
        )?
        .size();
        drop(probe);

        // Room for about three artifacts of that size.
        let cap = one * 3 + one / 2;
        let f = fixture_with(SandboxConfig {
            compiled_cache_dir: Some(cache.path().to_path_buf()),
            compiled_cache_max_bytes: cap,
            ..SandboxConfig::default()
        })?;
        let dir = f.sandbox.compiled_cache_dir().map(Path::to_path_buf);
        let Some(dir) = dir else {
            anyhow::bail!("no cache directory");
        };
        for code in 0..8 {
            let wat = EXIT3.replace("i32.const 3", &format!("i32.const {code}"));
            f.module(&wat).await?;
            let total: u64 = std::fs::read_dir(&dir)?
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum();
            assert!(total <= cap, "{total} bytes cached, cap {cap}");
        }
        let files = std::fs::read_dir(&dir)?.count();
        assert!((1..=3).contains(&files), "{files} artifacts kept");
        Ok(())
    }
}
