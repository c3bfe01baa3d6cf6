//! The container runtime seam and its wasmtime implementation.
//!
//! Pod workers see only [`Sandbox`]: prepare a module once, run a container
//! to its exit. That keeps pod lifecycle logic testable with a fake and puts
//! every wasmtime decision in this one module: one [`Engine`] per kubelet
//! with the pooling allocator and epoch interruption, one epoch ticker per
//! engine, an `InstancePre` per module digest, and a fresh `Store` per
//! container that always carries a memory limiter and an epoch deadline.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::logs::LogStream;

/// The largest linear memory any instance may have (the wasm32 maximum).
pub const MAX_INSTANCE_MEMORY: u64 = 4 << 30;
/// How many prepared modules are kept.
const MAX_PREPARED: usize = 256;
/// The memory cap of a container without `resources.limits.memory`.
pub const DEFAULT_MEMORY_LIMIT: u64 = 256 << 20;

/// How a container run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// `_start` returned (0) or the guest called `proc_exit(code)`.
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
    /// The module does not compile, is not a WASI command, or imports
    /// something the sandbox does not provide.
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
    /// CPU time the guest has consumed, in nanoseconds (monotonic).
    pub cpu_nanos: std::sync::atomic::AtomicU64,
    /// The instance's current linear memory plus tables, in bytes.
    pub memory_bytes: std::sync::atomic::AtomicU64,
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

    /// Runs a container to its end. Returns when the guest exits, traps, or
    /// `run.stop` is cancelled.
    async fn run(&self, run: ContainerRun) -> Result<ExitStatus, SandboxError>;
}

/// Settings of the wasmtime sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// wasmtime's compilation cache directory; `None` disables it.
    pub cache_dir: Option<PathBuf>,
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
            cache_dir: None,
            max_instances: 256,
            pooling: true,
            epoch_tick: Duration::from_millis(10),
        }
    }
}

/// Per-store state.
struct Host {
    wasi: WasiP1Ctx,
    limits: MemoryLimit,
}

/// Caps linear memory. Growth past the cap traps (like the kernel's OOM
/// killer, the guest does not get to handle it) and is remembered, so the
/// run is reported `OOMKilled`.
struct MemoryLimit {
    limit: usize,
    exceeded: bool,
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = true;
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} bytes exceeded",
                self.limit
            )));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
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

/// The wasmtime sandbox: one engine, one linker, one ticker.
pub struct WasmtimeSandbox {
    engine: Engine,
    linker: Linker<Host>,
    modules: Mutex<HashMap<String, InstancePre<Host>>>,
    // Compiling is CPU-heavy: one at a time, and never twice for one digest.
    compiling: tokio::sync::Mutex<()>,
    _ticker: Ticker,
    pooled: bool,
}

impl WasmtimeSandbox {
    /// Builds the engine (pooling if possible), the linker and the ticker.
    pub fn new(config: &SandboxConfig) -> Result<WasmtimeSandbox, SandboxError> {
        let (engine, pooled) = build_engine(config)?;
        let mut linker: Linker<Host> = Linker::new(&engine);
        p1::add_to_linker_async(&mut linker, |h: &mut Host| &mut h.wasi)
            .map_err(|e| SandboxError::Start(format!("linking WASI: {e}")))?;
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
            engine,
            linker,
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

    /// Forgets a prepared module (when no pod uses it any more).
    pub fn forget(&self, digest: &str) {
        self.lock_modules().remove(digest);
    }

    fn lock_modules(&self) -> std::sync::MutexGuard<'_, HashMap<String, InstancePre<Host>>> {
        match self.modules.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn cached(&self, digest: &str) -> Option<InstancePre<Host>> {
        self.lock_modules().get(digest).cloned()
    }
}

fn build_engine(config: &SandboxConfig) -> Result<(Engine, bool), SandboxError> {
    let mut base = Config::new();
    base.epoch_interruption(true);
    // The build carries no garbage collector; WASI preview1 commands do not
    // need the GC-based proposals.
    base.gc_support(false);
    if let Some(dir) = &config.cache_dir {
        let mut cache_config = CacheConfig::new();
        cache_config.with_directory(dir);
        match Cache::new(cache_config) {
            Ok(cache) => {
                base.cache(Some(cache));
            }
            Err(e) => tracing::warn!(error = %e, "compilation cache disabled"),
        }
    }
    if config.pooling {
        let mut pool = PoolingAllocationConfig::new();
        let n = config.max_instances.max(1);
        pool.total_core_instances(n)
            .total_memories(n)
            .total_tables(n)
            .total_stacks(n)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_memory_size(usize::try_from(MAX_INSTANCE_MEMORY).unwrap_or(usize::MAX));
        let mut pooled = base.clone();
        pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        match Engine::new(&pooled) {
            Ok(engine) => return Ok((engine, true)),
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable; using on-demand allocation")
            }
        }
    }
    let engine = Engine::new(&base).map_err(|e| SandboxError::Start(format!("wasmtime: {e}")))?;
    Ok((engine, false))
}

#[async_trait::async_trait]
impl Sandbox for WasmtimeSandbox {
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
        let engine = self.engine.clone();
        let linker = self.linker.clone();
        let pre = tokio::task::spawn_blocking(move || compile(&engine, &linker, &bytes))
            .await
            .map_err(|e| SandboxError::Start(format!("compiling: {e}")))??;
        let mut modules = self.lock_modules();
        // Bounded: running instances hold their own reference, so evicting
        // only costs a recompile (from wasmtime's cache) for the next start.
        if modules.len() >= MAX_PREPARED
            && let Some(victim) = modules.keys().next().cloned()
        {
            modules.remove(&victim);
        }
        modules.insert(digest.to_string(), pre);
        Ok(())
    }

    async fn run(&self, run: ContainerRun) -> Result<ExitStatus, SandboxError> {
        let pre = match self.cached(&run.digest) {
            Some(pre) => pre,
            None => {
                self.prepare(&run.digest, &run.module_path).await?;
                self.cached(&run.digest).ok_or_else(|| {
                    SandboxError::Start(format!("module {} is not prepared", run.digest))
                })?
            }
        };
        let mut builder = WasiCtxBuilder::new();
        builder
            .args(&run.argv)
            .envs(&run.env)
            .stdout(run.stdout)
            .stderr(run.stderr);
        for p in &run.preopens {
            let perms = if p.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            builder
                .preopened_dir(&p.host, &p.guest, perms)
                .map_err(|e| {
                    SandboxError::Start(format!(
                        "mounting {} at {}: {e}",
                        p.host.display(),
                        p.guest
                    ))
                })?;
        }
        let limit = run.memory_limit.min(MAX_INSTANCE_MEMORY);
        let mut store = Store::new(
            &self.engine,
            Host {
                wasi: builder.build_p1(),
                limits: MemoryLimit {
                    limit: usize::try_from(limit).unwrap_or(usize::MAX),
                    exceeded: false,
                },
            },
        );
        store.limiter(|h| &mut h.limits);
        // Every tick a running guest yields to tokio, so a busy loop shares
        // its worker thread and can be interrupted at the next tick.
        match run.cpu_limit_millis.filter(|m| *m < 1000) {
            Some(millis) => throttle(&mut store, millis),
            None => store.epoch_deadline_async_yield_and_update(1),
        }

        let stop = run.stop.clone();
        let outcome = tokio::select! {
            biased;
            () = stop.cancelled() => None,
            r = run_instance(&pre, &mut store) => Some(r),
        };
        let oom = store.data().limits.exceeded;
        let status = match outcome {
            None => ExitStatus::Killed,
            Some(Ok(())) => ExitStatus::Exited(0),
            Some(Err(RunError::Instantiate(_))) if oom => ExitStatus::OutOfMemory,
            Some(Err(RunError::Instantiate(e))) => return Err(SandboxError::Start(e)),
            Some(Err(RunError::Guest(e))) => classify(&e, oom),
        };
        tracing::debug!(container = %run.id, ?status, "instance ended");
        Ok(status)
    }
}

/// Enforces a CPU limit below one core by time slicing: after each slice
/// the guest ran, it sleeps long enough that its share of wall time stays
/// `millis / 1000` (like a CFS quota, one tick as the period).
fn throttle(store: &mut Store<Host>, millis: u64) {
    let millis = millis.max(1);
    let resumed = Arc::new(Mutex::new(std::time::Instant::now()));
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
                let now = std::time::Instant::now();
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

async fn run_instance(pre: &InstancePre<Host>, store: &mut Store<Host>) -> Result<(), RunError> {
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
        .map_err(RunError::Guest)
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

fn compile(
    engine: &Engine,
    linker: &Linker<Host>,
    bytes: &[u8],
) -> Result<InstancePre<Host>, SandboxError> {
    let module = Module::new(engine, bytes)
        .map_err(|e| SandboxError::InvalidModule(format!("invalid wasm module: {e:#}")))?;
    let has_start = module
        .exports()
        .any(|e| e.name() == "_start" && e.ty().func().is_some());
    if !has_start {
        return Err(SandboxError::InvalidModule(
            "module has no _start export: not a WASI command".into(),
        ));
    }
    linker
        .instantiate_pre(&module)
        .map_err(|e| SandboxError::InvalidModule(format!("cannot link module: {e:#}")))
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
        let dir = tempfile::tempdir()?;
        let sandbox = WasmtimeSandbox::new(&SandboxConfig {
            cache_dir: None,
            max_instances: 8,
            pooling: true,
            epoch_tick: Duration::from_millis(10),
        })?;
        Ok(Fixture {
            dir,
            sandbox: Arc::new(sandbox),
        })
    }

    impl Fixture {
        async fn module(&self, wat: &str) -> anyhow::Result<String> {
            let bytes = wat::parse_str(wat)?;
            let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
            let path = self.dir.path().join(digest.replace(':', "-"));
            tokio::fs::write(&path, &bytes).await?;
            self.sandbox.prepare(&digest, &path).await?;
            Ok(digest)
        }

        async fn run(
            &self,
            digest: &str,
            argv: &[&str],
            env: &[(&str, &str)],
            memory_limit: u64,
            stop: CancellationToken,
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
                    usage: Arc::default(),
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
}
