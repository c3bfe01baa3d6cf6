//! The controller loop every controller here shares: watch → cache →
//! de-duplicated key queue → `reconcile(key)`.
//!
//! Watch events only enqueue keys; `reconcile` reads the caches and decides
//! from the current state (level-triggered), returning when to look again.
//! Failures go through the reconciler's `error_policy` (exponential backoff
//! by default); a periodic resync re-enqueues every key as a safety net. One
//! key is reconciled at a time, so a key is never handled twice at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What to do after a successful reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Look at this key again after the delay even if nothing changes.
    Requeue(Duration),
    /// Wait for a watch event (or the periodic resync).
    AwaitChange,
}

/// A controller's logic.
pub trait Reconciler: Send {
    /// The error `reconcile` returns.
    type Error: std::fmt::Display + Send;

    /// Every key the caches hold, enqueued at start and on each resync.
    fn all_keys(&self) -> Vec<String>;

    /// Brings the world in line for `key`, reading only the caches.
    fn reconcile(&mut self, key: &str) -> impl Future<Output = Result<Action, Self::Error>> + Send;

    /// How long to wait before retrying a key that failed `failures` times in a row.
    fn error_policy(&self, _key: &str, _error: &Self::Error, failures: u32) -> Duration {
        backoff(
            failures,
            Duration::from_millis(500),
            Duration::from_secs(60),
        )
    }
}

/// `base * 2^(failures-1)`, capped.
pub fn backoff(failures: u32, base: Duration, cap: Duration) -> Duration {
    base.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(cap)
}

/// De-duplicated work queue with delayed keys. Time is passed in.
#[derive(Debug, Default)]
pub struct WorkQueue {
    ready: VecDeque<String>,
    queued: HashSet<String>,
    delayed: HashMap<String, Instant>,
    failures: HashMap<String, u32>,
}

impl WorkQueue {
    /// Enqueues `key` for now; cancels a pending delay for it.
    pub fn add(&mut self, key: &str) {
        self.delayed.remove(key);
        if self.queued.insert(key.to_string()) {
            self.ready.push_back(key.to_string());
        }
    }

    /// Enqueues `key` at `at`, unless it is already due sooner.
    pub fn add_at(&mut self, key: &str, at: Instant) {
        if self.queued.contains(key) {
            return;
        }
        let slot = self.delayed.entry(key.to_string()).or_insert(at);
        if at < *slot {
            *slot = at;
        }
    }

    /// The next key due at `now`.
    pub fn pop(&mut self, now: Instant) -> Option<String> {
        let mut due: Vec<(Instant, String)> = self
            .delayed
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, at)| (*at, k.clone()))
            .collect();
        due.sort();
        for (_, key) in due {
            self.add(&key);
        }
        let key = self.ready.pop_front()?;
        self.queued.remove(&key);
        Some(key)
    }

    /// True when `pop(now)` would return a key.
    pub fn has_ready(&self, now: Instant) -> bool {
        !self.ready.is_empty() || self.delayed.values().any(|at| *at <= now)
    }

    /// When the earliest delayed key becomes due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.delayed.values().min().copied()
    }

    /// Counts a failure for `key`, returning the consecutive failure count.
    pub fn record_failure(&mut self, key: &str) -> u32 {
        let n = self.failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// Clears the failure count of `key`.
    pub fn record_success(&mut self, key: &str) {
        self.failures.remove(key);
    }
}

/// Runs `reconciler` until `shutdown`: `triggers` yields keys touched by
/// watch events (polling it is also what fills the caches), `ready`
/// completes once the caches have their initial list.
pub async fn run<R, T, F>(
    name: &str,
    mut reconciler: R,
    triggers: T,
    ready: F,
    resync: Duration,
    shutdown: CancellationToken,
) where
    R: Reconciler,
    T: Stream<Item = String> + Send,
    F: Future<Output = ()> + Send,
{
    let mut triggers = std::pin::pin!(triggers);
    let mut ready_fut = std::pin::pin!(ready);
    let mut synced = false;
    let mut queue = WorkQueue::default();
    let mut resync_at = Instant::now() + resync;
    tracing::info!(controller = name, "controller started");
    loop {
        let now = Instant::now();
        let work = synced && queue.has_ready(now);
        let wake = match queue.next_deadline() {
            Some(d) if synced => d.min(resync_at),
            _ => resync_at,
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                tracing::info!(controller = name, "controller stopping");
                return;
            }
            key = triggers.next() => match key {
                Some(key) => queue.add(&key),
                // The watch streams retry forever; an end means the
                // process is shutting down.
                None => return,
            },
            _ = &mut ready_fut, if !synced => {
                synced = true;
                for key in reconciler.all_keys() {
                    queue.add(&key);
                }
            }
            _ = std::future::ready(()), if work => {
                let Some(key) = queue.pop(now) else { continue };
                match reconciler.reconcile(&key).await {
                    Ok(action) => {
                        queue.record_success(&key);
                        if let Action::Requeue(after) = action {
                            queue.add_at(&key, Instant::now() + after);
                        }
                    }
                    Err(e) => {
                        let failures = queue.record_failure(&key);
                        let delay = reconciler.error_policy(&key, &e, failures);
                        tracing::warn!(controller = name, key, error = %e, ?delay, "reconcile failed");
                        queue.add_at(&key, Instant::now() + delay);
                    }
                }
            }
            _ = tokio::time::sleep_until(wake), if !work => {
                if Instant::now() >= resync_at {
                    resync_at = Instant::now() + resync;
                    if synced {
                        for key in reconciler.all_keys() {
                            queue.add(&key);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn queue_dedups_and_honours_delays() {
        let now = Instant::now();
        let mut q = WorkQueue::default();
        q.add("a");
        q.add("a");
        q.add_at("b", now + Duration::from_secs(5));
        q.add_at("b", now + Duration::from_secs(3));
        q.add_at("a", now + Duration::from_secs(1));
        assert_eq!(q.pop(now).as_deref(), Some("a"));
        assert_eq!(q.pop(now), None);
        assert_eq!(q.next_deadline(), Some(now + Duration::from_secs(3)));
        assert_eq!(q.pop(now + Duration::from_secs(3)).as_deref(), Some("b"));
        // A watch event cancels a pending delay.
        q.add_at("c", now + Duration::from_secs(9));
        q.add("c");
        assert_eq!(q.next_deadline(), None);
        assert_eq!(q.pop(now).as_deref(), Some("c"));
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = |n| backoff(n, Duration::from_millis(500), Duration::from_secs(60)).as_millis();
        assert_eq!([b(1), b(2), b(3), b(10)], [500, 1000, 2000, 60_000]);
    }

    struct Recording {
        seen: Arc<Mutex<Vec<String>>>,
        fail_first: bool,
        done: CancellationToken,
    }

    impl Reconciler for Recording {
        type Error = String;
        fn all_keys(&self) -> Vec<String> {
            vec!["initial".to_string()]
        }
        async fn reconcile(&mut self, key: &str) -> Result<Action, String> {
            let mut seen = self.seen.lock().map_err(|e| e.to_string())?;
            seen.push(key.to_string());
            if self.fail_first && seen.len() == 2 {
                return Err("boom".into());
            }
            if seen.len() >= 4 {
                self.done.cancel();
            }
            Ok(Action::AwaitChange)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn loop_reconciles_initial_keys_triggers_and_retries_failures() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let done = CancellationToken::new();
        let rec = Recording {
            seen: seen.clone(),
            fail_first: true,
            done: done.clone(),
        };
        let triggers = futures::stream::iter(vec!["x".to_string(), "y".to_string()])
            .chain(futures::stream::pending());
        run(
            "test",
            rec,
            triggers,
            std::future::ready(()),
            Duration::from_secs(300),
            done.clone(),
        )
        .await;
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        // "x" and "y" arrive before the caches are ready and wait for them;
        // "y" fails once and comes back after its backoff.
        assert_eq!(seen, vec!["x", "y", "initial", "y"]);
    }
}
