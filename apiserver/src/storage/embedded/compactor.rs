//! Background compaction of the revision log, so the store file does not
//! grow without bound. Like the Kubernetes apiserver's compactor, but the
//! window is a number of revisions rather than a time span. Works on any
//! [`Store`], so an etcd backend can use it unchanged.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::storage::{Result, Store};

/// How often to compact and how much history to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionOptions {
    /// Time between compactions (the first one runs right away).
    pub interval: Duration,
    /// Revisions of history kept for watches; older ones become `Compacted`
    /// (410 Expired on the API), and clients re-list.
    pub keep_revisions: i64,
}

impl Default for CompactionOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            keep_revisions: 10_000,
        }
    }
}

/// Compacts `store` so that only the last `keep_revisions` revisions remain
/// watchable. Returns the new compacted revision, or `None` when there was
/// nothing to compact.
pub async fn compact_once(store: &dyn Store, keep_revisions: i64) -> Result<Option<i64>> {
    let keep = keep_revisions.max(1);
    let current = store.current_revision().await?;
    // Keep revisions (current - keep, current]: compacting at R keeps R.
    let target = current.saturating_sub(keep) + 1;
    if target <= 1 || target <= store.compacted_revision().await? {
        return Ok(None);
    }
    store.compact(target).await?;
    Ok(Some(target))
}

/// Runs [`compact_once`] every `options.interval` until `shutdown` is
/// cancelled. Failures are logged and retried at the next tick.
pub fn spawn_compactor(
    store: Arc<dyn Store>,
    options: CompactionOptions,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // `interval` panics on zero.
        let mut ticker = tokio::time::interval(options.interval.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::debug!(interval = ?options.interval, keep_revisions = options.keep_revisions, "compactor started");
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            match compact_once(store.as_ref(), options.keep_revisions).await {
                Ok(Some(revision)) => tracing::info!(revision, "compacted store history"),
                Ok(None) => tracing::debug!("nothing to compact"),
                Err(error) => tracing::warn!(%error, "store compaction failed"),
            }
        }
        tracing::debug!("compactor stopped");
    })
}
