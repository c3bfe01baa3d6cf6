//! The results table: printed to the terminal and written to BENCHMARKS.md
//! with the machine, date and commit it was measured on.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// One figure, its reference measured in the same run, and the target of
/// issue #10.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub scenario: String,
    pub metric: String,
    pub value: String,
    pub reference: String,
    pub ratio: String,
    pub target: String,
    /// `met`, `not met`, or `—` where no target applies.
    pub status: String,
}

pub fn status(met: bool) -> String {
    if met { "met" } else { "**not met**" }.to_string()
}

const HEADERS: [&str; 7] = [
    "scenario",
    "metric",
    "value",
    "reference (same run)",
    "ratio",
    "target (#10)",
    "status",
];

fn cells(r: &Row) -> [&str; 7] {
    [
        &r.scenario,
        &r.metric,
        &r.value,
        &r.reference,
        &r.ratio,
        &r.target,
        &r.status,
    ]
}

/// A Markdown table (also readable as plain text in a terminal).
pub fn table(rows: &[Row]) -> String {
    let mut widths = HEADERS.map(str::len);
    for r in rows {
        for (w, c) in widths.iter_mut().zip(cells(r)) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cs: [&str; 7]| {
        let mut s = String::from("|");
        for (c, w) in cs.iter().zip(widths) {
            let pad = w - c.chars().count();
            let _ = write!(s, " {c}{} |", " ".repeat(pad));
        }
        s.push('\n');
        s
    };
    let mut out = line(HEADERS);
    out.push('|');
    for w in widths {
        let _ = write!(out, "{}|", "-".repeat(w + 2));
    }
    out.push('\n');
    for r in rows {
        out.push_str(&line(cells(r)));
    }
    out
}

fn run(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The machine the figures come from.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".to_string());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string());
    format!(
        "- CPUs (`nproc`): {}\n- CPU model: {model}\n- memory: {mem_gib}\n- kernel: {}\n- load average at the end of the run (1/5/15 min): {load}",
        run("nproc", &[]),
        run("uname", &["-sr"]),
    )
}

/// The commit measured, marked `-dirty` when the tree has local changes.
pub fn commit(repo: &Path) -> String {
    let dir = repo.to_string_lossy();
    let head = run("git", &["-C", &dir, "rev-parse", "--short=12", "HEAD"]);
    let dirty = !run("git", &["-C", &dir, "status", "--porcelain"]).is_empty();
    if dirty && head != "unknown" {
        format!("{head}-dirty")
    } else {
        head
    }
}

pub struct Report<'a> {
    pub command: &'a str,
    pub mode: &'a str,
    pub rows: &'a [Row],
    pub notes: &'a [String],
}

impl Report<'_> {
    pub fn markdown(&self, repo: &Path) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# wasmkube benchmarks\n");
        let _ = writeln!(
            s,
            "Written by the harness in `bench/` (see `bench/README.md`); do not edit by hand.\n"
        );
        let _ = writeln!(s, "- command: `{}`", self.command);
        let _ = writeln!(s, "- mode: {}", self.mode);
        let _ = writeln!(
            s,
            "- date: {}",
            run("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        );
        let _ = writeln!(s, "- commit: {}", commit(repo));
        let _ = writeln!(s, "{}\n", machine());
        let _ = writeln!(s, "## Results\n");
        s.push_str(&table(self.rows));
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\n## Notes\n");
            for n in self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }
}
