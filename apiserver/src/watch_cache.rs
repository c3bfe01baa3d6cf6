//! The watch cache: exactly one store watch per resource prefix, fanned out in
//! memory to every HTTP watcher of that resource.
//!
//! Each store event is decoded and serialized once ([`CachedEvent`] shares its
//! JSON as `Bytes`), kept in a bounded window of recent events, and offered to
//! every subscriber through its own bounded channel. A subscriber that falls
//! too far behind is dropped (its channel closes, the HTTP watch ends and the
//! client relists) instead of making the cache buffer without bound. Watches
//! that start inside the window need no store replay; older starting points
//! are served by a store watch of their own (or answered 410 by the store).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};
use wasmkube_api::status;

use crate::error::ApiError;
use crate::storage::{self, Store};

/// One change of one object, decoded and serialized once for every watcher.
#[derive(Debug)]
pub struct CachedEvent {
    /// The store revision of the write.
    pub revision: i64,
    /// The object's store key.
    pub key: String,
    /// What happened to the key.
    pub change: Change,
    /// The object after the write (for a delete: its last state), with
    /// `metadata.resourceVersion` = `revision`.
    pub object: Arc<Value>,
    /// `object` serialized.
    pub object_json: Bytes,
    /// The object before the write (absent for a create), with
    /// `metadata.resourceVersion` = `revision`: a watcher whose selector the
    /// object stops matching receives it as DELETED, like Kubernetes' cacher.
    pub prev: Option<Arc<Value>>,
    prev_json: OnceLock<Bytes>,
}

/// The kind of store change behind a [`CachedEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Deleted,
}

impl CachedEvent {
    /// Decodes a store event. `None` (logged) when the stored value is not a
    /// JSON object: one corrupt key must not stop the watch of a resource.
    pub fn from_store(event: storage::WatchEvent) -> Option<CachedEvent> {
        let revision = event.revision();
        let (key, change, value, prev_value) = match event {
            storage::WatchEvent::Put { kv, prev } => {
                let change = if prev.is_some() {
                    Change::Updated
                } else {
                    Change::Created
                };
                (kv.key, change, kv.value, prev.map(|p| p.value))
            }
            storage::WatchEvent::Delete { prev, .. } => {
                (prev.key, Change::Deleted, prev.value, None)
            }
        };
        let object = match decode_with_revision(&value, revision) {
            Some(o) => o,
            None => {
                tracing::warn!(%key, revision, "skipping undecodable stored object in watch");
                return None;
            }
        };
        let prev = prev_value.and_then(|p| decode_with_revision(&p, revision));
        let object_json = Bytes::from(serde_json::to_vec(&object).ok()?);
        Some(CachedEvent {
            revision,
            key,
            change,
            object: Arc::new(object),
            object_json,
            prev: prev.map(Arc::new),
            prev_json: OnceLock::new(),
        })
    }

    /// `prev` serialized (computed on first use: only selector watchers need it).
    pub fn prev_json(&self) -> Option<Bytes> {
        let prev = self.prev.as_ref()?;
        Some(
            self.prev_json
                .get_or_init(|| Bytes::from(serde_json::to_vec(prev.as_ref()).unwrap_or_default()))
                .clone(),
        )
    }
}

/// Decodes a stored object and stamps `metadata.resourceVersion`.
pub fn decode_with_revision(bytes: &[u8], revision: i64) -> Option<Value> {
    let mut v: Value = serde_json::from_slice(bytes).ok()?;
    let obj = v.as_object_mut()?;
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(m) = meta.as_object_mut() {
        m.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
    Some(v)
}

/// Waits (at most `within`) until the store has reached `revision`: a client
/// may watch from a revision another apiserver (or a later list) handed it
/// before this store caught up. Past the wait, the 504 Kubernetes' cacher
/// answers (`Too large resource version`, cause `ResourceVersionTooLarge`),
/// rather than a watch that silently never delivers anything.
pub async fn wait_for_revision(
    store: &dyn Store,
    revision: i64,
    within: Duration,
) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + within;
    let mut pause = Duration::from_millis(10);
    loop {
        let current = store
            .current_revision()
            .await
            .map_err(|e| ApiError::from_storage(e, "", "", ""))?;
        if revision <= current {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(too_large_resource_version(revision, current));
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Kubernetes' `NewTooLargeResourceVersionError`.
fn too_large_resource_version(requested: i64, current: i64) -> ApiError {
    let mut s = status::failure(
        504,
        "Timeout",
        format!("Too large resource version: {requested}, current: {current}"),
    );
    s.details = Some(StatusDetails {
        causes: Some(vec![StatusCause {
            reason: Some("ResourceVersionTooLarge".into()),
            message: Some("Too large resource version".into()),
            field: None,
        }]),
        retry_after_seconds: Some(1),
        ..StatusDetails::default()
    });
    ApiError(s)
}

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum CacheMessage {
    Event(Arc<CachedEvent>),
    /// Everything up to this revision has been delivered (for BOOKMARK events).
    Progress(i64),
}

/// A live subscription: the window events after the requested revision, then
/// the channel of later ones. The channel closes when the subscriber fell
/// behind, the cache lost its history, or the server shuts down.
#[derive(Debug)]
pub struct Subscription {
    pub backlog: Vec<Arc<CachedEvent>>,
    pub receiver: mpsc::Receiver<CacheMessage>,
}

/// Sizes of a cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheOptions {
    /// Recent events kept for watches that start in the past.
    pub window: usize,
    /// Events buffered per subscriber before it is dropped.
    pub subscriber_buffer: usize,
    /// How often subscribers get a progress notification (BOOKMARK).
    pub progress_interval: Duration,
    /// How long a watch from a revision the store has not reached yet waits
    /// for it before failing with "Too large resource version" (Kubernetes'
    /// cacher waits 3 s).
    pub freshness_wait: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            window: 1024,
            subscriber_buffer: 1024,
            progress_interval: Duration::from_secs(30),
            freshness_wait: Duration::from_secs(3),
        }
    }
}

#[derive(Debug)]
struct State {
    window: VecDeque<Arc<CachedEvent>>,
    /// Every event with a revision above `floor` is in `window`.
    floor: i64,
    /// The revision the cache has seen up to.
    last_revision: i64,
    subscribers: Vec<mpsc::Sender<CacheMessage>>,
}

/// The watch cache of one resource prefix.
#[derive(Debug)]
pub struct WatchCache {
    prefix: String,
    options: CacheOptions,
    state: Mutex<State>,
}

impl WatchCache {
    /// Starts the cache: one store watch on `prefix` from the current
    /// revision, kept until `shutdown`.
    pub async fn start(
        store: Arc<dyn Store>,
        prefix: String,
        options: CacheOptions,
        shutdown: CancellationToken,
    ) -> storage::Result<Arc<WatchCache>> {
        let revision = store.current_revision().await?;
        let stream = store.watch(&prefix, revision).await?;
        let cache = Arc::new(WatchCache {
            prefix,
            options,
            state: Mutex::new(State {
                window: VecDeque::new(),
                floor: revision,
                last_revision: revision,
                subscribers: Vec::new(),
            }),
        });
        tokio::spawn(cache.clone().run(store, stream, shutdown));
        Ok(cache)
    }

    /// The store key prefix this cache follows.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The revision the cache has seen up to.
    pub fn last_revision(&self) -> i64 {
        self.lock().last_revision
    }

    /// Subscribes to events with a revision above `after`. `None` when the
    /// window no longer holds all of them (the caller replays from the store).
    /// A revision the store has not reached yet would be accepted and never
    /// answered: callers check it first with [`wait_for_revision`].
    pub fn subscribe(&self, after: i64) -> Option<Subscription> {
        let mut st = self.lock();
        if after < st.floor {
            return None;
        }
        let backlog = st
            .window
            .iter()
            .filter(|e| e.revision > after)
            .cloned()
            .collect();
        let (tx, receiver) = mpsc::channel(self.options.subscriber_buffer.max(1));
        st.subscribers.push(tx);
        Some(Subscription { backlog, receiver })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in
        // a way that matters more than losing the cache, so keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, event: CachedEvent) {
        let event = Arc::new(event);
        let mut st = self.lock();
        if event.revision <= st.last_revision {
            // A reconnected store watch may repeat what we already have.
            return;
        }
        st.last_revision = event.revision;
        st.window.push_back(event.clone());
        while st.window.len() > self.options.window.max(1) {
            if let Some(old) = st.window.pop_front() {
                st.floor = old.revision;
            }
        }
        st.subscribers
            .retain(|tx| tx.try_send(CacheMessage::Event(event.clone())).is_ok());
    }

    fn progress(&self) {
        let mut st = self.lock();
        let rev = st.last_revision;
        // A full buffer here just skips the bookmark; events decide who is dropped.
        st.subscribers
            .retain(|tx| match tx.try_send(CacheMessage::Progress(rev)) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
    }

    /// Forgets all history (after the store compacted past us): every
    /// subscriber is closed and relists.
    fn reset(&self, revision: i64) {
        let mut st = self.lock();
        st.window.clear();
        st.floor = revision;
        st.last_revision = revision;
        st.subscribers.clear();
    }

    fn close_all(&self) {
        self.lock().subscribers.clear();
    }

    async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        first: storage::WatchStream,
        shutdown: CancellationToken,
    ) {
        let mut stream = Some(first);
        let period = self.options.progress_interval.max(Duration::from_millis(1));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = Duration::from_millis(50);
        loop {
            let Some(s) = stream.as_mut() else {
                // Reconnect from the last revision we saw.
                let from = self.last_revision();
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = store.watch(&self.prefix, from) => match r {
                        Ok(s) => { stream = Some(s); backoff = Duration::from_millis(50); }
                        Err(storage::Error::Compacted { .. }) => {
                            tracing::warn!(prefix = %self.prefix, from, "watch cache fell behind compaction; resetting");
                            match store.current_revision().await {
                                Ok(rev) => self.reset(rev),
                                Err(e) => tracing::warn!(error = %e, "watch cache: current revision"),
                            }
                        }
                        Err(e) => {
                            tracing::warn!(prefix = %self.prefix, error = %e, "watch cache: store watch failed; retrying");
                            tokio::select! {
                                _ = shutdown.cancelled() => break,
                                _ = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    },
                }
                continue;
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => self.progress(),
                item = s.next() => match item {
                    Some(Ok(ev)) => {
                        if let Some(ev) = CachedEvent::from_store(ev) {
                            self.push(ev);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(prefix = %self.prefix, error = %e, "watch cache: store watch error; reconnecting");
                        stream = None;
                    }
                    None => stream = None,
                },
            }
        }
        self.close_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Precondition;
    use crate::storage::embedded::EmbeddedStore;

    async fn setup(
        options: CacheOptions,
    ) -> anyhow::Result<(
        tempfile::TempDir,
        Arc<dyn Store>,
        Arc<WatchCache>,
        CancellationToken,
    )> {
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("s.redb"))?);
        let token = CancellationToken::new();
        let cache = WatchCache::start(
            store.clone(),
            "/registry/things/".into(),
            options,
            token.clone(),
        )
        .await?;
        Ok((dir, store, cache, token))
    }

    async fn put_n(store: &Arc<dyn Store>, n: usize) -> anyhow::Result<Vec<i64>> {
        let mut revs = Vec::new();
        for i in 0..n {
            let kv = store
                .put(
                    &format!("/registry/things/t{i}"),
                    Bytes::from(format!("{{\"metadata\":{{\"name\":\"t{i}\"}}}}")),
                    Precondition::None,
                )
                .await?;
            revs.push(kv.mod_revision);
        }
        Ok(revs)
    }

    async fn caught_up(cache: &WatchCache, rev: i64) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while cache.last_revision() < rev {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "cache did not reach {rev}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_closed() -> anyhow::Result<()> {
        let options = CacheOptions {
            subscriber_buffer: 2,
            ..CacheOptions::default()
        };
        let (_dir, store, cache, token) = setup(options).await?;
        let mut sub = cache
            .subscribe(cache.last_revision())
            .ok_or_else(|| anyhow::anyhow!("subscribe"))?;
        let revs = put_n(&store, 5).await?;
        caught_up(&cache, revs[4]).await?;
        let mut got = Vec::new();
        while let Some(m) = sub.receiver.recv().await {
            if let CacheMessage::Event(e) = m {
                got.push(e.revision);
            }
        }
        assert_eq!(
            got,
            revs[..2].to_vec(),
            "two buffered events, then the channel closes"
        );
        token.cancel();
        Ok(())
    }

    #[tokio::test]
    async fn the_window_serves_recent_starts_and_refuses_older_ones() -> anyhow::Result<()> {
        let options = CacheOptions {
            window: 2,
            ..CacheOptions::default()
        };
        let (_dir, store, cache, token) = setup(options).await?;
        let revs = put_n(&store, 4).await?;
        caught_up(&cache, revs[3]).await?;
        assert!(cache.subscribe(revs[0]).is_none());
        let sub = cache
            .subscribe(revs[1])
            .ok_or_else(|| anyhow::anyhow!("subscribe"))?;
        let backlog: Vec<i64> = sub.backlog.iter().map(|e| e.revision).collect();
        assert_eq!(backlog, revs[2..].to_vec());
        assert_eq!(
            sub.backlog[0].object["metadata"]["resourceVersion"],
            revs[2].to_string()
        );
        assert_eq!(sub.backlog[0].change, Change::Created);
        token.cancel();
        Ok(())
    }
}
