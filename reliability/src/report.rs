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
