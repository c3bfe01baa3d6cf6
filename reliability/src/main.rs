//! `wasmkube-reliability`: runs the fault suite, prints the results table
//! and writes it to `RELIABILITY.md`. Exits non-zero when anything was lost.
//!
//! ```text
//! cargo build -p wasmkube -p wasmkube-reliability
//! target/debug/wasmkube-reliability [--ci] [--scenario crash,watch] [--seed N]
//!     [--work-dir D] [--output RELIABILITY.md]
//! ```

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use wasmkube_reliability::report::{self, Mode, Outcome};

/// Every scenario by its `--scenario` name, in the order the suite runs them.
const SCENARIOS: &[&str] = &[
    "crash",
    "watch",
    "overload",
    "soak",
    "linearizability",
    "components",
];

#[derive(Debug, Parser)]
#[command(
    name = "wasmkube-reliability",
    about = "wasmkube's fault suite: crash consistency, watch resumption, overload, churn soak, linearizability, component crashes"
)]
struct Args {
    /// The reduced suite CI runs (a few minutes in total).
    #[arg(long)]
    ci: bool,
    /// Run only these scenarios (comma-separated; default: all).
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    scenario: Vec<String>,
    /// Seed of every random choice; printed so a run can be replayed
    /// [default: the current time].
    #[arg(long)]
    seed: Option<u64>,
    /// Where scenarios keep their work files.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Where the results are written.
    #[arg(long, value_name = "FILE", default_value = "RELIABILITY.md")]
    output: PathBuf,
}

/// Runs one scenario; an error or a panic is reported as a loss, so one
/// broken scenario neither hides the others nor passes.
fn run_one(name: &str, mode: &Mode) -> Vec<Outcome> {
    let f: fn(&Mode) -> anyhow::Result<Vec<Outcome>> = match name {
        "crash" => wasmkube_reliability::crash::run,
        "watch" => wasmkube_reliability::watch_resume::run,
        "overload" => wasmkube_reliability::overload::run,
        "soak" => wasmkube_reliability::soak::run,
        "linearizability" => wasmkube_reliability::linearizable_store::run,
        "components" => wasmkube_reliability::component_crash::run,
        _ => {
            return vec![report::failed(
                name,
                "—",
                &anyhow::anyhow!("no such scenario"),
            )];
        }
    };
    match std::panic::catch_unwind(|| f(mode)) {
        Ok(Ok(outcomes)) => outcomes,
        Ok(Err(e)) => vec![report::failed(name, "—", &e)],
        Err(_) => vec![report::failed(name, "—", &anyhow::anyhow!("panicked"))],
    }
}

/// One line about this machine: CPU model, cores, memory.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or("?".to_string(), |kib| format!("{} GiB", kib / 1024 / 1024));
    format!("{model}, {cores} cores available, {mem} RAM")
}

/// The checked-out commit, `+dirty` when the tree has changes.
fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    if dirty { format!("{head}+dirty") } else { head }
}

fn main() -> anyhow::Result<ExitCode> {
    // The harness finds the server binary through WASMKUBE_BIN (else beside
    // a test executable, which this is not): point it at the `wasmkube`
    // built beside this binary by running ourselves again with it set.
    if std::env::var_os("WASMKUBE_BIN").is_none() {
        let me = std::env::current_exe().context("finding this executable")?;
        let bin = me.with_file_name("wasmkube");
        anyhow::ensure!(
            bin.exists(),
            "{} does not exist: `cargo build -p wasmkube` first, or set WASMKUBE_BIN",
            bin.display()
        );
        let status = Command::new(me)
            .args(std::env::args_os().skip(1))
            .env("WASMKUBE_BIN", bin)
            .status()?;
        return Ok(ExitCode::from(
            u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
        ));
    }
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("wasmkube-reliability"));
    std::fs::create_dir_all(&work_dir)?;
    let mode = Mode {
        ci: args.ci,
        work_dir,
        seed,
    };
    let selected: Vec<String> = if args.scenario.is_empty() {
        SCENARIOS.iter().map(|s| s.to_string()).collect()
    } else {
        args.scenario.clone()
    };
    let started = Instant::now();
    let date = jiff::Timestamp::now();
    // The tree the run starts from (the binaries were built from it); the
    // work tree may move on while a long run goes.
    let commit = commit();
    let mut outcomes = Vec::new();
    for name in &selected {
        eprintln!("== {name} ({})", if mode.ci { "ci" } else { "full" });
        let t = Instant::now();
        let found = run_one(name, &mode);
        eprintln!("== {name} done in {:.0?}", t.elapsed());
        outcomes.extend(found);
    }
    let table = report::table(&outcomes);
    println!("{table}");
    let command = format!(
        "wasmkube-reliability {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let doc = format!(
        "# Reliability results\n\n\
         The last run of wasmkube's fault suite (`wasmkube-reliability`, crate \
         `reliability/`; issue #11). Losses are acknowledged writes missing, \
         half-written or phantom objects, watch events missed or duplicated, \
         unbounded growth and servers that did not come back: anything the \
         scenario promises not to lose. Recovery times are measured, not \
         asserted.\n\n\
         - **Form**: {form}\n\
         - **Machine**: {machine}\n\
         - **Date**: {date:.0}\n\
         - **Commit**: {commit}\n\
         - **Command**: `{command}` (with `WASMKUBE_BIN` = the debug build)\n\
         - **Seed**: {seed} (`--seed {seed}` replays the same random choices)\n\
         - **Duration**: {secs:.0} s\n\n\
         Run it with:\n\n\
         ```sh\n\
         cargo build -p wasmkube -p wasmkube-reliability\n\
         target/debug/wasmkube-reliability            # the full suite\n\
         target/debug/wasmkube-reliability --ci       # the reduced one `cargo test` runs\n\
         ```\n\n\
         ## Results\n\n{table}\n## What each scenario did\n{notes}",
        form = if mode.ci {
            "CI (reduced) form"
        } else {
            "full form"
        },
        machine = machine(),
        secs = started.elapsed().as_secs_f64(),
        notes = report::notes(&outcomes),
    );
    std::fs::write(&args.output, doc)
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!("results written to {}", args.output.display());
    let lost = outcomes.iter().any(|o| !o.passed());
    Ok(if lost {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
