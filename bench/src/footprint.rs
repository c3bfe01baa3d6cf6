//! `footprint`: what wasmkube costs when it does nothing. The idle RSS of
//! the release all-in-one `wasmkube server` once ready with no pods, the
//! idle RSS of a `wasmkube agent` joined to a `--no-node` server (with what
//! it is made of, from `/proc/<pid>/smaps`: the binary's pages, the heap
//! and malloc arenas, thread stacks), and the size of the release binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::pod_startup::{Server, build};
use crate::report::{Row, status};

pub struct Params {
    pub repo: PathBuf,
    pub build: bool,
}

/// Targets of issue #10 (decimal megabytes).
const TARGET_SERVER_RSS: u64 = 50_000_000;
const TARGET_AGENT_RSS: u64 = 20_000_000;
/// Idle time before measuring: startup buffers freed, first heartbeats,
/// Lease renewals and the controllers' first resyncs done.
const SETTLE: Duration = Duration::from_secs(10);

/// Figures of one process from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// Resident set (VmRSS), bytes.
    pub rss: u64,
    pub threads: usize,
    pub fds: usize,
    /// Memory maps (VMAs).
    pub maps: usize,
}

impl ProcStats {
    pub fn read(pid: u32) -> Result<ProcStats> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let count = |dir: &str| {
            std::fs::read_dir(format!("/proc/{pid}/{dir}"))
                .map(|d| d.count())
                .unwrap_or(0)
        };
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .map(|m| m.lines().count())
            .unwrap_or(0);
        Ok(ProcStats {
            rss: field("VmRSS:") * 1024,
            threads: field("Threads:") as usize,
            fds: count("fd"),
            maps,
        })
    }
}

/// Bytes as KiB with one decimal.
pub fn kib(bytes: f64) -> String {
    format!("{:.1}", bytes / 1024.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// The soft RLIMIT_NOFILE a child of the harness inherits.
pub fn nofile_limit() -> String {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Resident memory of a process by kind, from `/proc/<pid>/smaps`.
#[derive(Debug, Default)]
struct Breakdown {
    /// Pages of the executable itself (code, read-only data, relocations).
    binary: u64,
    /// Other files: shared libraries, the store's or caches' mapped files.
    other_files: u64,
    /// `[heap]`: the main malloc arena (brk).
    heap: u64,
    /// Anonymous maps in 64 MiB-aligned reservations: glibc's per-thread
    /// malloc arenas (count and resident bytes).
    arenas: (usize, u64),
    /// Anonymous maps right after a guard page, the size of a thread
    /// stack: thread stacks (count and resident bytes).
    stacks: (usize, u64),
    /// Every other anonymous map (mmap'd allocations, wasmtime's
    /// reservations, the main stack).
    other_anon: u64,
}

impl Breakdown {
    fn read(pid: u32, exe: &Path) -> Result<Breakdown> {
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
            .with_context(|| format!("reading /proc/{pid}/smaps"))?;
        let exe = exe.canonicalize().unwrap_or_else(|_| exe.to_path_buf());
        let exe = exe.to_string_lossy();
        let mut b = Breakdown::default();
        // (start, end, perms, path) of the map whose fields follow.
        let mut current: Option<(u64, u64, String, String)> = None;
        let mut prev_guard_end: Option<u64> = None;
        for line in smaps.lines() {
            let mut parts = line.split_whitespace();
            let Some(first) = parts.next() else { continue };
            if let Some((s, e)) = first.split_once('-')
                && let (Ok(start), Ok(end)) =
                    (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16))
            {
                let perms = parts.next().unwrap_or("").to_string();
                let path = parts.nth(3).unwrap_or("").to_string();
                if let Some((_, pend, pperms, _)) = &current {
                    prev_guard_end = (pperms.starts_with("---")).then_some(*pend);
                }
                current = Some((start, end, perms, path));
                continue;
            }
            if first != "Rss:" {
                continue;
            }
            let Some((start, end, perms, path)) = &current else {
                continue;
            };
            let rss = parts
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024;
            let size = end - start;
            if path == exe.as_ref() {
                b.binary += rss;
            } else if path == "[heap]" {
                b.heap += rss;
            } else if path.starts_with('/') {
                b.other_files += rss;
            } else if path.is_empty() && perms.starts_with("rw") {
                let after_guard = prev_guard_end == Some(*start);
                if after_guard && size <= 16 << 20 {
                    b.stacks.0 += 1;
                    b.stacks.1 += rss;
                } else if start % (64 << 20) == 0 && size <= 64 << 20 {
                    b.arenas.0 += 1;
                    b.arenas.1 += rss;
                } else {
                    b.other_anon += rss;
                }
            } else {
                b.other_anon += rss;
            }
        }
        Ok(b)
    }

    fn describe(&self, threads: usize) -> String {
        format!(
            "binary pages {} · [heap] {} · malloc arenas {} in {} · stacks {} in {} (threads' and wasmtime's pooled fiber stacks; {threads} threads) · other anonymous {} · other files {}",
            mib(self.binary),
            mib(self.heap),
            mib(self.arenas.1),
            self.arenas.0,
            mib(self.stacks.1),
            self.stacks.0,
            mib(self.other_anon),
            mib(self.other_files),
        )
    }
}

/// `/proc/<pid>/smaps_rollup` as one line of its main figures.
fn rollup(pid: u32) -> String {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
        return "smaps_rollup unreadable".into();
    };
    let keep = [
        "Rss:",
        "Pss:",
        "Shared_Clean:",
        "Private_Clean:",
        "Private_Dirty:",
        "Anonymous:",
    ];
    text.lines()
        .filter(|l| keep.iter().any(|k| l.starts_with(k)))
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            let (k, v) = (p.next()?, p.next()?.parse::<u64>().ok()?);
            Some(format!("{} {}", k.trim_end_matches(':'), mib(v * 1024)))
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// A `wasmkube agent` child process; killed on drop.
struct Agent {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Joins `server` with a fresh join token and waits until it is ready.
    async fn join(bin: &Path, server: &Server) -> Result<Agent> {
        let out = Command::new(bin)
            .args(["token", "create", "--kubeconfig"])
            .arg(server.kubeconfig())
            .output()?;
        if !out.status.success() {
            bail!(
                "wasmkube token create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let dir = tempfile::Builder::new()
            .prefix("wasmkube-bench-agent-")
            .tempdir()?;
        let log = dir.path().join("agent.log");
        let file = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .arg("agent")
            .args(["--server", &server.url])
            .args(["--token", &token])
            .args(["--name", "bench-agent"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--kubelet-port", "0", "--proxy-port", "0"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting wasmkube agent")?;
        let mut agent = Agent {
            child,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = std::fs::read_to_string(&agent.log).unwrap_or_default();
            if let Some(st) = agent.child.try_wait()? {
                bail!("the agent exited early with {st}:\n{text}");
            }
            if text.contains("wasmkube agent is ready") {
                return Ok(agent);
            }
            if Instant::now() > deadline {
                bail!("the agent was not ready within 120 s:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub async fn run(p: &Params, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<()> {
    if p.build {
        build(&p.repo)?;
    }
    let bin = p.repo.join("target/release/wasmkube");
    if !bin.exists() {
        bail!("{} is missing: run without --no-build", bin.display());
    }
    let size = std::fs::metadata(&bin)?.len();

    eprintln!("footprint: all-in-one server, idle…");
    let server = Server::start(&bin).await?;
    tokio::time::sleep(SETTLE).await;
    let aio = ProcStats::read(server.pid())?;
    let aio_parts = Breakdown::read(server.pid(), &bin)?;
    let aio_rollup = rollup(server.pid());
    drop(server);

    eprintln!("footprint: agent joined to a --no-node server, idle…");
    let control = Server::start_with(&bin, &[], false).await?;
    let agent = Agent::join(&bin, &control).await?;
    tokio::time::sleep(SETTLE).await;
    let pid = agent.child.id();
    let ag = ProcStats::read(pid)?;
    let ag_parts = Breakdown::read(pid, &bin)?;
    let ag_rollup = rollup(pid);
    let control_rss = ProcStats::read(control.pid())?.rss;
    drop(agent);
    drop(control);

    rows.push(Row {
        scenario: "footprint".into(),
        metric: "all-in-one server idle RSS (no pods)".into(),
        value: mib(aio.rss),
        reference: format!("{} threads · {} maps", aio.threads, aio.maps),
        ratio: String::new(),
        target: "≤ 50 MB".into(),
        status: status(aio.rss <= TARGET_SERVER_RSS),
    });
    rows.push(Row {
        scenario: "footprint".into(),
        metric: "agent idle RSS (joined, no pods)".into(),
        value: mib(ag.rss),
        reference: format!(
            "{} threads · --no-node server {}",
            ag.threads,
            mib(control_rss)
        ),
        ratio: String::new(),
        target: "≤ 20 MB".into(),
        status: status(ag.rss <= TARGET_AGENT_RSS),
    });
    rows.push(Row {
        scenario: "footprint".into(),
        metric: "release binary size (target/release/wasmkube)".into(),
        value: mib(size),
        reference: "—".into(),
        ratio: String::new(),
        target: "reported".into(),
        status: "—".into(),
    });
    notes.push(format!(
        "footprint: VmRSS of the release `wasmkube server` (all-in-one, embedded store, one node) {SETTLE:?} after it printed ready, no pods; and of `wasmkube agent` (kubelet + node proxy) {SETTLE:?} after it reported ready, joined with a fresh join token to a `--no-node` server; both children of the harness, `RUST_LOG=info`. MB = 10^6 bytes. Server: {} ({}). Agent: {} ({}). Breakdown from /proc/<pid>/smaps (an arena is an anonymous 64 MiB-aligned map, a stack an anonymous map of at most 16 MiB right after a guard page: thread stacks and the pooling allocator's fiber stacks); `binary pages` are file-backed and clean (shared with other processes of the same binary, dropped first under pressure).",
        aio_rollup,
        aio_parts.describe(aio.threads),
        ag_rollup,
        ag_parts.describe(ag.threads),
    ));
    Ok(())
}
