//! Live fan-out of committed writes to watchers, and the watch stream that
//! stitches history replay to live delivery.
//!
//! Each watcher gets its own bounded channel, filled by the writer right after
//! a commit (while it still holds the write lock, so events arrive in revision
//! order). The writer never waits on a watcher: when a watcher's channel is
//! full, the watcher is dropped from the hub and its stream ends with an error
//! after the events it already holds. The consumer re-watches from the last
//! revision it saw and catches up from the revision log. Memory per watcher is
//! therefore bounded by the channel capacity, and a stuck consumer cannot slow
//! down writes.
//!
//! A watch registers with the hub *before* it reads the current revision and
//! the log, so every write is either in the replayed history or in the
//! channel (or both); events at or below the last delivered revision are
//! skipped, so nothing is missed and nothing is delivered twice.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::mpsc;

use super::Inner;
use crate::storage::{Error, Result, WatchEvent, WatchStream};

/// Registered watchers, each with a key prefix and a bounded channel.
pub(super) struct Hub {
    watchers: Mutex<Vec<Watcher>>,
    capacity: usize,
}

struct Watcher {
    prefix: String,
    tx: mpsc::Sender<Arc<WatchEvent>>,
    lagged: Arc<AtomicBool>,
}

/// The receiving side of one registration.
pub(super) struct Subscription {
    rx: mpsc::Receiver<Arc<WatchEvent>>,
    lagged: Arc<AtomicBool>,
}

impl Hub {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            watchers: Mutex::new(Vec::new()),
            capacity: capacity.max(1),
        }
    }

    pub(super) fn subscribe(&self, prefix: &str) -> Subscription {
        let (tx, rx) = mpsc::channel(self.capacity);
        let lagged = Arc::new(AtomicBool::new(false));
        let mut watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        // Streams dropped while their prefix stayed quiet are pruned here.
        watchers.retain(|w| !w.tx.is_closed());
        watchers.push(Watcher {
            prefix: prefix.to_owned(),
            tx,
            lagged: lagged.clone(),
        });
        Subscription { rx, lagged }
    }

    /// Hands a committed event to every matching watcher without blocking.
    pub(super) fn publish(&self, event: &Arc<WatchEvent>) {
        let key = event_key(event);
        let mut watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        watchers.retain(|w| {
            if !key.starts_with(&w.prefix) {
                return !w.tx.is_closed();
            }
            match w.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(
                        prefix = %w.prefix,
                        revision = event.revision(),
                        capacity = self.capacity,
                        "watcher fell behind; ending its stream so it re-watches from its last revision"
                    );
                    w.lagged.store(true, Ordering::Release);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

fn event_key(event: &WatchEvent) -> &str {
    match event {
        WatchEvent::Put { kv, .. } => &kv.key,
        WatchEvent::Delete { prev, .. } => &prev.key,
    }
}

/// How much history one replay step reads (one blocking task, one read
/// transaction): bounded in events, in bytes and in log entries scanned, so a
/// large replay neither holds a huge buffer nor hogs a blocking thread.
pub(super) struct PageLimits {
    pub(super) max_events: usize,
    pub(super) max_bytes: usize,
    pub(super) max_scanned: usize,
}

pub(super) const PAGE: PageLimits = PageLimits {
    max_events: 256,
    max_bytes: 8 << 20,
    max_scanned: 4096,
};

struct State {
    store: Weak<Inner>,
    prefix: String,
    sub: Subscription,
    /// Revision of the last event delivered (or the start revision).
    last: i64,
    /// Next log revision to read during replay.
    next: i64,
    /// Replay reads the log up to here, then switches to the channel.
    until: i64,
    buffer: VecDeque<WatchEvent>,
    done: bool,
}

/// Builds the stream of a watch on `prefix` that already registered as `sub`:
/// replays the log over `(after, until]`, then delivers live events.
/// The stream holds only a weak reference to the store, so an open watch never
/// keeps the database open; when the store is dropped the stream ends with an error.
pub(super) fn stream(
    store: Weak<Inner>,
    prefix: String,
    after: i64,
    until: i64,
    sub: Subscription,
) -> WatchStream {
    let state = State {
        store,
        prefix,
        sub,
        last: after,
        next: after + 1,
        until,
        buffer: VecDeque::new(),
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        let item = st.next_item().await?;
        Some((item, st))
    }))
}

impl State {
    async fn next_item(&mut self) -> Option<Result<WatchEvent>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.last = event.revision();
                return Some(Ok(event));
            }
            if self.next <= self.until {
                if let Err(err) = self.read_page().await {
                    self.done = true;
                    return Some(Err(err));
                }
                continue;
            }
            match self.sub.rx.recv().await {
                // Already delivered by the replay (registered before reading the log).
                Some(event) if event.revision() <= self.last => continue,
                Some(event) => {
                    self.last = event.revision();
                    return Some(Ok(Arc::unwrap_or_clone(event)));
                }
                None => {
                    self.done = true;
                    return Some(Err(if self.sub.lagged.load(Ordering::Acquire) {
                        Error::Lagged { after: self.last }
                    } else {
                        Error::Backend("the store was closed".into())
                    }));
                }
            }
        }
    }

    async fn read_page(&mut self) -> Result<()> {
        let Some(store) = self.store.upgrade() else {
            return Err(Error::Backend("the store was closed".into()));
        };
        let (prefix, from, until) = (self.prefix.clone(), self.next, self.until);
        let (events, next) =
            tokio::task::spawn_blocking(move || store.read_history(&prefix, from, until, &PAGE))
                .await
                .map_err(|e| Error::Backend(format!("history read task failed: {e}")))??;
        self.buffer.extend(events);
        self.next = next;
        Ok(())
    }
}
