//! The suite's results: one [`Outcome`] per scenario (and backend), printed
//! as a table and written to `RELIABILITY.md`.

use std::path::PathBuf;
use std::time::Duration;

/// How hard the suite pushes: the bounded form CI runs, or the full run.
#[derive(Debug, Clone)]
pub struct Mode {
    /// The reduced suite (a few minutes in total).
    pub ci: bool,
    /// Where scenarios keep data directories and logs.
    pub work_dir: PathBuf,
    /// Seed of every random choice (kill points, cut points), printed with
    /// the results so a failing run can be replayed.
    pub seed: u64,
}

/// What one scenario found.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// e.g. `crash-consistency`.
    pub scenario: String,
    /// `embedded`, `etcd`, or `—`.
    pub backend: String,
    pub trials: u32,
    /// Faults injected (kills, cuts, truncations, overload bursts).
    pub faults: u32,
    /// Acknowledged writes missing, events missed or duplicated, duplicate
    /// pods, orphaned instances, non-linearizable histories: anything lost.
    pub losses: u64,
    /// Longest time from a fault to being back to normal.
    pub recovery: Option<Duration>,
    /// What was checked and measured, in a sentence or two each.
    pub notes: Vec<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.losses == 0
    }
}

/// A duration as the table shows it (`—` when not measured).
pub fn fmt_duration(d: Option<Duration>) -> String {
    match d {
        None => "—".to_string(),
        Some(d) if d < Duration::from_secs(1) => format!("{} ms", d.as_millis()),
        Some(d) => format!("{:.1} s", d.as_secs_f64()),
    }
}

/// The results as a Markdown table, then each scenario's notes.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| scenario | backend | trials | faults injected | losses | recovery time | result |\n\
         |---|---|---:|---:|---:|---:|---|\n",
    );
    for o in outcomes {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            o.scenario,
            o.backend,
            o.trials,
            o.faults,
            o.losses,
            fmt_duration(o.recovery),
            if o.passed() { "ok" } else { "**LOSS**" }
        ));
    }
    out
}

/// Each scenario's notes as a Markdown list.
pub fn notes(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    for o in outcomes {
        out.push_str(&format!("\n**{} ({})**\n\n", o.scenario, o.backend));
        for n in &o.notes {
            out.push_str(&format!("- {n}\n"));
        }
    }
    out
}

/// An outcome for a scenario whose run failed outright (could not start a
/// server, a hang past its deadline): counted as one loss, with the error.
pub fn failed(scenario: &str, backend: &str, error: &anyhow::Error) -> Outcome {
    Outcome {
        scenario: scenario.to_string(),
        backend: backend.to_string(),
        losses: 1,
        notes: vec![format!("the scenario failed: {error:#}")],
        ..Outcome::default()
    }
}

/// A tiny sparkline of `values` (min..max mapped onto eight levels).
pub fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    values
        .iter()
        .map(|v| {
            if hi <= lo {
                BARS[0]
            } else {
                let i = ((v - lo) / (hi - lo) * 7.0).round() as usize;
                BARS[i.min(7)]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_marks_losses() {
        let ok = Outcome {
            scenario: "a".into(),
            backend: "embedded".into(),
            trials: 3,
            ..Outcome::default()
        };
        let bad = Outcome {
            losses: 2,
            ..ok.clone()
        };
        let t = table(&[ok, bad]);
        assert!(t.contains("| a | embedded | 3 | 0 | 0 | — | ok |"));
        assert!(t.contains("| 2 | — | **LOSS** |"));
        assert_eq!(sparkline(&[1.0, 1.0]), "▁▁");
        assert_eq!(sparkline(&[0.0, 7.0]), "▁█");
    }
}
