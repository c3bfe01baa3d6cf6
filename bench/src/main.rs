//! The wasmkube benchmark harness (issue #10): each scenario measures wasmkube
//! beside a reference taken in the same run, prints a table and writes
//! `BENCHMARKS.md` at the repository root. Timings live here and in that
//! report only — never as assertions in `cargo test`.

mod api_create;
mod api_read;
mod cost_growth;
mod cpu_share;
mod density;
mod etcd;
mod footprint;
mod hollow;
mod http;
mod load;
mod pod_startup;
mod report;
mod scheduler;
mod stats;
mod wasmtime_cli;
mod watch_fanout;

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Parser;

const SCENARIOS: [&str; 10] = [
    "api-create",
    "api-read",
    "scheduler",
    "cost-growth",
    "pod-startup",
    "watch-fanout",
    "cpu-share",
    "http",
    "density",
    "footprint",
];

/// Benchmarks wasmkube against references measured in the same run.
#[derive(Debug, Parser)]
#[command(name = "wasmkube-bench")]
struct Args {
    /// Small sizes that finish in a few minutes on 2 cores.
    #[arg(long)]
    quick: bool,
    /// Comma-separated scenarios to run (default: all).
    #[arg(long, value_delimiter = ',', default_values_t = SCENARIOS.map(String::from))]
    scenario: Vec<String>,
    /// Concurrent clients of api-create (default: 16 quick, 64 full).
    #[arg(long)]
    clients: Option<usize>,
    /// Creates per store in api-create (default: 2,000 quick, 20,000 full).
    #[arg(long)]
    creates: Option<usize>,
    /// Pods created in pod-startup (default: 100 quick, 1,000 full).
    #[arg(long)]
    pods: Option<usize>,
    /// Pod creation rate per second in pod-startup (default: 50 quick, 100 full).
    #[arg(long)]
    pod_rate: Option<f64>,
    /// Watchers in watch-fanout (default: 100 quick, 1,000 full).
    #[arg(long)]
    watchers: Option<usize>,
    /// Seconds of each cpu-share measurement window (default: 10 quick, 30 full).
    #[arg(long)]
    cpu_seconds: Option<u64>,
    /// Comma-separated concurrencies of the http scenario (default: 16,64).
    #[arg(long, value_delimiter = ',')]
    http_concurrency: Option<Vec<usize>>,
    /// Seconds of each http measurement (default: 5 quick, 30 full).
    #[arg(long)]
    http_seconds: Option<u64>,
    /// Idle pods on the one node of density (default: 1,000 quick, 10,000 full).
    #[arg(long)]
    density_pods: Option<usize>,
    /// Hollow nodes in the scheduler scenario (default: 100 quick, 1,000 full).
    #[arg(long)]
    nodes: Option<usize>,
    /// Pods per phase of the scheduler scenario (default: 2,000 quick, 10,000 full).
    #[arg(long)]
    sched_pods: Option<usize>,
    /// Existing pod counts of cost-growth (default: 10,100,1000,2000 quick;
    /// 10,100,1000,10000 full).
    #[arg(long, value_delimiter = ',')]
    growth_steps: Option<Vec<usize>>,
    /// The etcd server binary.
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd: String,
    /// Do not run `cargo build` for the wasmkube binary and the wasm samples;
    /// use what is already in target/.
    #[arg(long)]
    no_build: bool,
    /// Where to write the report (default: BENCHMARKS.md at the repo root).
    #[arg(long)]
    output: Option<PathBuf>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    for s in &args.scenario {
        if !SCENARIOS.contains(&s.as_str()) {
            bail!("unknown scenario {s:?}; known: {}", SCENARIOS.join(", "));
        }
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let repo = repo_root();
    let quick = args.quick;
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut failures = Vec::new();
    // Whether a scenario already built the release binary and the samples.
    let mut ran_build = false;

    for s in &args.scenario {
        eprintln!("== {s}");
        let result = match s.as_str() {
            "api-create" => {
                let p = api_create::Params {
                    clients: args.clients.unwrap_or(if quick { 16 } else { 64 }),
                    creates: args.creates.unwrap_or(if quick { 2_000 } else { 20_000 }),
                    etcd_binary: args.etcd.clone(),
                };
                api_create::run(&p, &mut rows, &mut notes).await
            }
            "api-read" => {
                let p = api_read::Params {
                    clients: args.clients.unwrap_or(if quick { 16 } else { 64 }),
                    gets: if quick { 4_000 } else { 40_000 },
                    lists: if quick { 400 } else { 4_000 },
                    objects: if quick { 100 } else { 500 },
                    etcd_binary: args.etcd.clone(),
                };
                api_read::run(&p, &mut rows, &mut notes).await
            }
            "scheduler" => {
                let p = scheduler::Params {
                    nodes: args.nodes.unwrap_or(if quick { 100 } else { 1_000 }),
                    pods: args
                        .sched_pods
                        .unwrap_or(if quick { 2_000 } else { 10_000 }),
                    clients: args.clients.unwrap_or(if quick { 16 } else { 64 }),
                    etcd_binary: args.etcd.clone(),
                };
                scheduler::run(&p, &mut rows, &mut notes).await
            }
            "cost-growth" => {
                let mut steps = args.growth_steps.clone().unwrap_or_else(|| {
                    if quick {
                        vec![10, 100, 1_000, 2_000]
                    } else {
                        vec![10, 100, 1_000, 10_000]
                    }
                });
                steps.sort_unstable();
                let p = cost_growth::Params {
                    // 10,000 existing pods fit 110 a node on 100 nodes; more
                    // room keeps the measured pods from filling them.
                    nodes: if quick { 50 } else { 200 },
                    steps,
                    measured: if quick { 50 } else { 100 },
                    rate: if quick { 25.0 } else { 50.0 },
                    clients: args.clients.unwrap_or(if quick { 16 } else { 64 }),
                };
                cost_growth::run(&p, &mut rows, &mut notes).await
            }
            "pod-startup" => {
                let p = pod_startup::Params {
                    repo: repo.clone(),
                    pods: args.pods.unwrap_or(if quick { 100 } else { 1_000 }),
                    rate: args.pod_rate.unwrap_or(if quick { 50.0 } else { 100.0 }),
                    build: !args.no_build && !ran_build,
                };
                pod_startup::run(&p, &mut rows, &mut notes).await
            }
            "watch-fanout" => {
                let p = watch_fanout::Params {
                    watchers: args.watchers.unwrap_or(if quick { 100 } else { 1_000 }),
                    events: if quick { 50 } else { 200 },
                    rate: if quick { 10.0 } else { 20.0 },
                };
                watch_fanout::run(&p, &mut rows, &mut notes).await
            }
            "cpu-share" => {
                let p = cpu_share::Params {
                    repo: repo.clone(),
                    seconds: args.cpu_seconds.unwrap_or(if quick { 10 } else { 30 }),
                    // pod-startup builds the same binary and samples.
                    build: !args.no_build && !ran_build,
                };
                cpu_share::run(&p, &mut rows, &mut notes).await
            }
            "http" => {
                let p = http::Params {
                    repo: repo.clone(),
                    concurrency: args
                        .http_concurrency
                        .clone()
                        .filter(|c| !c.is_empty() && !c.contains(&0))
                        .unwrap_or_else(|| vec![16, 64]),
                    warmup: std::time::Duration::from_secs(if quick { 1 } else { 5 }),
                    duration: std::time::Duration::from_secs(
                        args.http_seconds
                            .unwrap_or(if quick { 5 } else { 30 })
                            .max(1),
                    ),
                    // The same binary and wasip1 samples as pod-startup.
                    build: !args.no_build && !ran_build,
                    build_echo: !args.no_build,
                };
                http::run(&p, &mut rows, &mut notes).await
            }
            "density" => {
                let p = density::Params {
                    repo: repo.clone(),
                    pods: args
                        .density_pods
                        .unwrap_or(if quick { 1_000 } else { 10_000 })
                        .max(1),
                    concurrency: 16,
                    build: !args.no_build && !ran_build,
                };
                density::run(&p, &mut rows, &mut notes).await
            }
            "footprint" => {
                let p = footprint::Params {
                    repo: repo.clone(),
                    build: !args.no_build && !ran_build,
                };
                footprint::run(&p, &mut rows, &mut notes).await
            }
            _ => unreachable!("checked above"),
        };
        ran_build |= matches!(
            s.as_str(),
            "pod-startup" | "cpu-share" | "http" | "density" | "footprint"
        );
        if let Err(e) = result {
            eprintln!("{s} failed: {e:#}");
            failures.push(format!("scenario {s} failed: {e:#}"));
        }
    }
    notes.extend(failures.iter().cloned());
    notes.push(
        "Figures measured while other work shares the machine (builds, tests) are indicative only; compare a figure with its reference from the same run, not across runs.".to_string(),
    );

    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let command = format!("cargo run --release -p wasmkube-bench -- {command}");
    let mode = if quick { "quick" } else { "full" };
    let table = report::table(&rows);
    println!("\n{table}");
    let md = report::Report {
        command: command.trim_end_matches(" -- ").trim(),
        mode,
        rows: &rows,
        notes: &notes,
    }
    .markdown(&repo);
    let out = args.output.unwrap_or_else(|| repo.join("BENCHMARKS.md"));
    std::fs::write(&out, md)?;
    eprintln!("wrote {}", out.display());
    if !failures.is_empty() {
        bail!("{} scenario(s) failed", failures.len());
    }
    Ok(())
}
