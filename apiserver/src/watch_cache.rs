//! The watch cache: per resource prefix, exactly one store watch feeding a
//! full in-memory copy of the resource and the fan-out to every HTTP watcher
//! of it, like Kubernetes' cacher.
//!
//! **Snapshot.** A cache starts with a range read of its prefix (paginated,
//! [`CacheOptions::list_page_size`] keys a page) at store revision `R`, then
//! opens the store watch from `R` and applies every event to the copy, so
//! the copy is always the store's state at the cache's revision (the last
//! event applied). Lists with `resourceVersion=0` (or `resourceVersion=N`
//! with `resourceVersionMatch=NotOlderThan` or no match and no `limit`) are
//! answered from it ([`WatchCache::list`]) without touching the store. The
//! store reads at its current revision only, so a paginated read is one
//! snapshot only when no write happened between its pages (every page then
//! reports the same revision); otherwise it is read again, and after a few
//! tries in one range.
//!
//! **Several API servers on one store.** The cache follows the store, never
//! this server's own writes: every API server's cache sees every write,
//! whichever server made it, in revision order. What one server adds is
//! read-your-writes for its own clients: the registry records the revision of
//! each write it makes ([`WatchCache::note_write`]) and a cached list first
//! waits (event-driven, bounded) until the cache has applied it.
//!
//! **Events.** Each store event is decoded and serialized once
//! ([`CachedEvent`] shares its JSON as `Bytes`), kept in a bounded window of
//! recent events, and offered to every subscriber through its own bounded
//! channel. A subscriber that falls too far behind is dropped (its channel
//! closes, the HTTP watch ends and the client relists) instead of making the
//! cache buffer without bound. Watches that start inside the window need no
//! store replay; older starting points are served by a store watch of their
//! own (or answered 410 by the store).
//!
//! **Failures.** A store watch that fails is re-opened from the cache's
//! revision, which loses nothing. When the store compacted past that
//! revision (410), the cache drops its copy, its window and its subscribers
//! (who relist), reads the prefix again and carries on from the new
//! revision; until then lists go to the store.
//!
//! **Memory.** One copy per resource and server, whatever the number of
//! watchers and lists: per object its decoded `serde_json::Value` (several
//! times the size of its JSON: every map entry and string is a separate
//! allocation) plus its JSON bytes, the latter shared with the window's
//! event and with lists being written. The window adds one decoded object
//! per event (the previous state stays as stored bytes until a selector
//! watcher needs it), and holds at most `window` events and none older than
//! `window_age`: like Kubernetes' cacher, which sizes its window to about
//! 75 s of history, the window's memory follows the write rate over a
//! bounded time rather than filling for hours with slow-changing objects
//! (a node's heartbeat every 10 s would take three hours to fill 1024
//! events). Older starting points replay from the store. A list from the cache copies only
//! reference-counted handles, and the JSON answer is the objects' cached
//! bytes concatenated. A re-list drops the old copy before reading the new
//! one, so a rebuild never holds two.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
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
    /// The stored bytes of the object before the write (absent for a
    /// create). Only watchers with a label or field selector look at the
    /// previous state, so it is kept as stored and decoded on first use:
    /// a window of events costs one decoded object each, not two.
    prev_stored: Option<Bytes>,
    /// `prev_stored` decoded, with `metadata.resourceVersion` = `revision`: a
    /// watcher whose selector the object stops matching receives it as
    /// DELETED, like Kubernetes' cacher. `None` inside when undecodable.
    prev: OnceLock<Option<(Arc<Value>, Bytes)>>,
    /// When it was decoded (the window's age bound).
    received: std::time::Instant,
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
        let object_json = Bytes::from(serde_json::to_vec(&object).ok()?);
        Some(CachedEvent {
            revision,
            key,
            change,
            object: Arc::new(object),
            object_json,
            prev_stored: prev_value,
            prev: OnceLock::new(),
            received: std::time::Instant::now(),
        })
    }

    /// Whether the object existed before this write (an update).
    pub fn has_prev(&self) -> bool {
        self.prev_stored.is_some()
    }

    /// The object before the write and its JSON (decoded on first use);
    /// `None` for a create, or when the stored bytes do not decode.
    pub fn prev(&self) -> Option<(Arc<Value>, Bytes)> {
        let stored = self.prev_stored.as_ref()?;
        self.prev
            .get_or_init(|| {
                let value = decode_with_revision(stored, self.revision)?;
                let json = Bytes::from(serde_json::to_vec(&value).ok()?);
                Some((Arc::new(value), json))
            })
            .clone()
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
pub(crate) fn too_large_resource_version(requested: i64, current: i64) -> ApiError {
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

/// One object of a cache's copy: decoded (for selectors and Tables) and
/// serialized (for JSON lists), both shared by reference count with the
/// event that wrote it and with the lists that return it.
#[derive(Debug, Clone)]
pub struct CachedObject {
    /// The object, with `metadata.resourceVersion` = its `mod_revision`.
    pub object: Arc<Value>,
    /// `object` serialized.
    pub json: Bytes,
}

impl CachedObject {
    fn decode(bytes: &[u8], mod_revision: i64) -> Option<CachedObject> {
        let object = decode_with_revision(bytes, mod_revision)?;
        let json = Bytes::from(serde_json::to_vec(&object).ok()?);
        Some(CachedObject {
            object: Arc::new(object),
            json,
        })
    }
}

/// The objects under one key prefix, as of one revision.
#[derive(Debug)]
pub struct CachedList {
    /// The cache's revision: the list is the store's state at it.
    pub revision: i64,
    /// In key order, as a store range returns them.
    pub items: Vec<CachedObject>,
}

/// Sizes of a cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheOptions {
    /// Recent events kept for watches that start in the past.
    pub window: usize,
    /// Events this old leave the window (as newer ones arrive; the newest
    /// stays).
    pub window_age: Duration,
    /// Events buffered per subscriber before it is dropped.
    pub subscriber_buffer: usize,
    /// How often subscribers get a progress notification (BOOKMARK).
    pub progress_interval: Duration,
    /// How long a watch or list from a revision the store (or the cache) has
    /// not reached yet waits for it before failing with "Too large resource
    /// version" (Kubernetes' cacher waits 3 s).
    pub freshness_wait: Duration,
    /// Keys per range read when the cache (re)loads its prefix.
    pub list_page_size: usize,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            window: 1024,
            window_age: Duration::from_secs(150),
            subscriber_buffer: 1024,
            progress_interval: Duration::from_secs(30),
            freshness_wait: Duration::from_secs(3),
            list_page_size: 10_000,
        }
    }
}

/// How many paginated reads of a prefix are tried before reading it in one
/// range (see the module docs).
const PAGED_ATTEMPTS: usize = 3;

/// How many times a (re)load tries again when the store compacted between
/// the read and the watch.
const LOAD_ATTEMPTS: usize = 3;

type Objects = BTreeMap<String, CachedObject>;

#[derive(Debug)]
struct State {
    window: VecDeque<Arc<CachedEvent>>,
    /// Every event with a revision above `floor` is in `window`.
    floor: i64,
    /// The revision the cache has seen up to: `objects` is the store's state
    /// under the prefix at this revision.
    last_revision: i64,
    subscribers: Vec<mpsc::Sender<CacheMessage>>,
    /// The copy of every object under the prefix, by key.
    objects: Objects,
    /// False from a lost history (compaction) until the re-list is done:
    /// neither lists nor new subscriptions are served meanwhile.
    ready: bool,
}

/// The watch cache of one resource prefix.
#[derive(Debug)]
pub struct WatchCache {
    prefix: String,
    options: CacheOptions,
    state: Mutex<State>,
    /// `last_revision` published for waiters ([`WatchCache::wait_for`]).
    revision: watch::Sender<i64>,
    /// The highest revision of a write this server made under the prefix.
    written: AtomicI64,
}

impl WatchCache {
    /// Starts the cache: reads the prefix, then follows it with one store
    /// watch until `shutdown`.
    pub async fn start(
        store: Arc<dyn Store>,
        prefix: String,
        options: CacheOptions,
        shutdown: CancellationToken,
    ) -> storage::Result<Arc<WatchCache>> {
        let (objects, revision, stream) = load_and_watch(store.as_ref(), &prefix, &options).await?;
        let cache = Arc::new(WatchCache {
            prefix,
            options,
            state: Mutex::new(State {
                window: VecDeque::new(),
                floor: revision,
                last_revision: revision,
                subscribers: Vec::new(),
                objects,
                ready: true,
            }),
            revision: watch::Sender::new(revision),
            written: AtomicI64::new(0),
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

    /// Whether the cache holds its prefix (false while it re-lists).
    pub fn is_ready(&self) -> bool {
        self.lock().ready
    }

    /// Records a write this server made under the prefix at `revision`, so
    /// that its own later lists from the cache include it.
    pub fn note_write(&self, revision: i64) {
        self.written.fetch_max(revision, Ordering::Relaxed);
    }

    /// The highest revision given to [`WatchCache::note_write`].
    pub fn written_revision(&self) -> i64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Waits (at most `within`) until the cache has applied `revision`,
    /// woken by the cache's own progress rather than by polling. An idle
    /// prefix never moves, whatever the store does elsewhere: callers asking
    /// for a revision of another prefix check the store themselves.
    pub async fn wait_for(&self, revision: i64, within: Duration) -> bool {
        let mut rx = self.revision.subscribe();
        matches!(
            tokio::time::timeout(within, rx.wait_for(|r| *r >= revision)).await,
            Ok(Ok(_))
        )
    }

    /// The objects whose keys start with `prefix` (this cache's prefix or a
    /// namespace below it) in key order, with the cache's revision; `None`
    /// while the cache re-lists. Only handles are copied under the lock;
    /// callers filter afterwards.
    pub fn list(&self, prefix: &str) -> Option<CachedList> {
        let st = self.lock();
        if !st.ready {
            return None;
        }
        let items = st
            .objects
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, o)| o.clone())
            .collect();
        Some(CachedList {
            revision: st.last_revision,
            items,
        })
    }

    /// The object at `key`; `None` while the cache re-lists or when it does
    /// not hold the key.
    pub fn get(&self, key: &str) -> Option<CachedObject> {
        let st = self.lock();
        if !st.ready {
            return None;
        }
        st.objects.get(key).cloned()
    }

    /// Subscribes to events with a revision above `after`. `None` when the
    /// window no longer holds all of them, or the cache is re-listing (the
    /// caller replays from the store). A revision the store has not reached
    /// yet would be accepted and never answered: callers check it first with
    /// [`wait_for_revision`].
    pub fn subscribe(&self, after: i64) -> Option<Subscription> {
        let mut st = self.lock();
        if !st.ready || after < st.floor {
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
        match event.change {
            Change::Deleted => {
                st.objects.remove(&event.key);
            }
            Change::Created | Change::Updated => {
                st.objects.insert(
                    event.key.clone(),
                    CachedObject {
                        object: event.object.clone(),
                        json: event.object_json.clone(),
                    },
                );
            }
        }
        st.window.push_back(event.clone());
        let max_age = self.options.window_age;
        while st.window.len() > self.options.window.max(1)
            || (st.window.len() > 1
                && st
                    .window
                    .front()
                    .is_some_and(|old| old.received.elapsed() >= max_age))
        {
            if let Some(old) = st.window.pop_front() {
                st.floor = old.revision;
            }
        }
        st.subscribers
            .retain(|tx| tx.try_send(CacheMessage::Event(event.clone())).is_ok());
        drop(st);
        self.revision.send_replace(event.revision);
    }

    /// A store event whose object cannot be decoded: it is not fanned out,
    /// but the key leaves the copy (a store list would fail on it, and a
    /// stale version must not be listed as current) and the revision moves.
    fn skip(&self, key: &str, revision: i64) {
        let mut st = self.lock();
        if revision <= st.last_revision {
            return;
        }
        st.last_revision = revision;
        st.objects.remove(key);
        drop(st);
        self.revision.send_replace(revision);
    }

    fn progress(&self) {
        let mut st = self.lock();
        if !st.ready {
            return;
        }
        let rev = st.last_revision;
        // A full buffer here just skips the bookmark; events decide who is dropped.
        st.subscribers
            .retain(|tx| match tx.try_send(CacheMessage::Progress(rev)) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
    }

    /// Forgets everything (the store compacted past the cache's revision):
    /// every subscriber is closed and relists, and lists go to the store
    /// until [`WatchCache::install`]. The copy is dropped now so that the
    /// re-list never holds two.
    fn invalidate(&self) {
        let mut st = self.lock();
        st.ready = false;
        st.window.clear();
        st.subscribers.clear();
        st.objects = Objects::new();
    }

    /// Takes a freshly loaded copy as of `revision`.
    fn install(&self, objects: Objects, revision: i64) {
        let mut st = self.lock();
        st.window.clear();
        st.subscribers.clear();
        st.floor = revision;
        st.last_revision = revision;
        st.objects = objects;
        st.ready = true;
        drop(st);
        self.revision.send_replace(revision);
    }

    fn close_all(&self) {
        self.lock().subscribers.clear();
    }

    /// Re-reads the prefix and opens the store watch after it.
    async fn rebuild(&self, store: &dyn Store) -> storage::Result<storage::WatchStream> {
        let (objects, revision, stream) =
            load_and_watch(store, &self.prefix, &self.options).await?;
        tracing::info!(prefix = %self.prefix, revision, objects = objects.len(), "watch cache re-listed");
        self.install(objects, revision);
        Ok(stream)
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
                let was_ready = self.is_ready();
                let opened = if was_ready {
                    // Reconnect from the last revision we saw: nothing is lost.
                    let from = self.last_revision();
                    let r = tokio::select! {
                        _ = shutdown.cancelled() => break,
                        r = store.watch(&self.prefix, from) => r,
                    };
                    if let Err(storage::Error::Compacted { .. }) = &r {
                        tracing::warn!(prefix = %self.prefix, from, "watch cache fell behind compaction; re-listing");
                        self.invalidate();
                    }
                    r
                } else {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        r = self.rebuild(store.as_ref()) => r,
                    }
                };
                match opened {
                    Ok(s) => {
                        stream = Some(s);
                        backoff = Duration::from_millis(50);
                    }
                    // History lost just now: re-list at once (next turn).
                    Err(storage::Error::Compacted { .. }) if was_ready => {}
                    Err(e) => {
                        tracing::warn!(prefix = %self.prefix, error = %e, "watch cache: store watch failed; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
                continue;
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => self.progress(),
                item = s.next() => match item {
                    Some(Ok(ev)) => {
                        let (key, revision) = (event_key(&ev).to_string(), ev.revision());
                        match CachedEvent::from_store(ev) {
                            Some(ev) => self.push(ev),
                            None => self.skip(&key, revision),
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

fn event_key(event: &storage::WatchEvent) -> &str {
    match event {
        storage::WatchEvent::Put { kv, .. } => &kv.key,
        storage::WatchEvent::Delete { prev, .. } => &prev.key,
    }
}

/// Reads the prefix and opens the store watch right after the read's
/// revision, so that no write falls between the copy and the events.
async fn load_and_watch(
    store: &dyn Store,
    prefix: &str,
    options: &CacheOptions,
) -> storage::Result<(Objects, i64, storage::WatchStream)> {
    let mut attempt = 1;
    loop {
        let (objects, revision) = load(store, prefix, options.list_page_size).await?;
        match store.watch(prefix, revision).await {
            Ok(stream) => return Ok((objects, revision, stream)),
            // Compacted between the read and the watch: read again.
            Err(storage::Error::Compacted { .. }) if attempt < LOAD_ATTEMPTS => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Every object under `prefix` as of one revision. Pages are tried first; a
/// write between two pages (their revisions differ) makes the read start
/// over, and the last attempt reads everything in one range.
async fn load(
    store: &dyn Store,
    prefix: &str,
    page_size: usize,
) -> storage::Result<(Objects, i64)> {
    let mut attempt = 0;
    loop {
        let limit = if attempt < PAGED_ATTEMPTS {
            page_size.max(1)
        } else {
            0
        };
        if let Some(snapshot) = read_pages(store, prefix, limit).await? {
            return Ok(snapshot);
        }
        tracing::debug!(
            prefix,
            attempt,
            "a write landed between pages; reading the prefix again"
        );
        attempt += 1;
    }
}

/// One paginated read of `prefix` (`limit` 0: one range); `None` when the
/// pages were not all read at the same revision.
async fn read_pages(
    store: &dyn Store,
    prefix: &str,
    limit: usize,
) -> storage::Result<Option<(Objects, i64)>> {
    let mut objects = Objects::new();
    let mut revision = None;
    let mut start_after: Option<String> = None;
    loop {
        let page = store.range(prefix, start_after.as_deref(), limit).await?;
        let rev = *revision.get_or_insert(page.revision);
        if page.revision != rev {
            return Ok(None);
        }
        let last = page.kvs.last().map(|kv| kv.key.clone());
        for kv in page.kvs {
            match CachedObject::decode(&kv.value, kv.mod_revision) {
                Some(o) => {
                    objects.insert(kv.key, o);
                }
                None => {
                    tracing::warn!(key = %kv.key, "watch cache: skipping undecodable stored object");
                }
            }
        }
        match last {
            Some(key) if page.more => start_after = Some(key),
            _ => return Ok(Some((objects, rev))),
        }
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

    /// The age bound: with `window_age` zero only the newest event stays,
    /// so only a watch from the revision just before it is served from
    /// memory; older starts go to the store.
    #[tokio::test]
    async fn events_older_than_the_window_age_leave_the_window() -> anyhow::Result<()> {
        let options = CacheOptions {
            window: 100,
            window_age: Duration::ZERO,
            ..CacheOptions::default()
        };
        let (_dir, store, cache, token) = setup(options).await?;
        let revs = put_n(&store, 4).await?;
        caught_up(&cache, revs[3]).await?;
        assert!(cache.subscribe(revs[1]).is_none());
        let sub = cache
            .subscribe(revs[2])
            .ok_or_else(|| anyhow::anyhow!("subscribe"))?;
        let backlog: Vec<i64> = sub.backlog.iter().map(|e| e.revision).collect();
        assert_eq!(backlog, vec![revs[3]]);
        token.cancel();
        Ok(())
    }

    #[tokio::test]
    async fn the_copy_follows_creates_updates_and_deletes() -> anyhow::Result<()> {
        let (_dir, store, cache, token) = setup(CacheOptions::default()).await?;
        put_n(&store, 3).await?;
        let updated = store
            .put(
                "/registry/things/t1",
                Bytes::from_static(br#"{"metadata":{"name":"t1"},"spec":1}"#),
                Precondition::MustExist,
            )
            .await?;
        let (_, deleted_at) = store
            .delete("/registry/things/t0", Precondition::None)
            .await?;
        caught_up(&cache, deleted_at).await?;
        let list = cache
            .list("/registry/things/")
            .ok_or_else(|| anyhow::anyhow!("not ready"))?;
        assert_eq!(list.revision, deleted_at);
        let names: Vec<&str> = list
            .items
            .iter()
            .filter_map(|o| o.object["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, ["t1", "t2"]);
        assert_eq!(list.items[0].object["spec"], 1);
        assert_eq!(
            list.items[0].object["metadata"]["resourceVersion"],
            updated.mod_revision.to_string()
        );
        let json: Value = serde_json::from_slice(&list.items[0].json)?;
        assert_eq!(&json, list.items[0].object.as_ref());
        assert!(
            cache
                .list("/registry/things/t1/")
                .is_some_and(|l| l.items.is_empty())
        );
        token.cancel();
        Ok(())
    }

    /// A store whose first `races` ranges that continue a previous page are
    /// preceded by a write under the prefix, as a concurrent writer would.
    struct RacingStore {
        inner: Arc<dyn Store>,
        races: std::sync::atomic::AtomicUsize,
        ranges: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Store for RacingStore {
        async fn get(&self, key: &str) -> storage::Result<Option<storage::KeyValue>> {
            self.inner.get(key).await
        }
        async fn range(
            &self,
            prefix: &str,
            start_after: Option<&str>,
            limit: usize,
        ) -> storage::Result<storage::RangeResult> {
            let n = self.ranges.fetch_add(1, Ordering::SeqCst);
            if start_after.is_some()
                && self
                    .races
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1))
                    .is_ok()
            {
                self.inner
                    .put(
                        &format!("{prefix}raced{n}"),
                        Bytes::from(format!("{{\"metadata\":{{\"name\":\"raced{n}\"}}}}")),
                        Precondition::None,
                    )
                    .await?;
            }
            self.inner.range(prefix, start_after, limit).await
        }
        async fn put(
            &self,
            key: &str,
            value: Bytes,
            precondition: Precondition,
        ) -> storage::Result<storage::KeyValue> {
            self.inner.put(key, value, precondition).await
        }
        async fn delete(
            &self,
            key: &str,
            precondition: Precondition,
        ) -> storage::Result<(storage::KeyValue, i64)> {
            self.inner.delete(key, precondition).await
        }
        async fn watch(&self, prefix: &str, after: i64) -> storage::Result<storage::WatchStream> {
            self.inner.watch(prefix, after).await
        }
        async fn current_revision(&self) -> storage::Result<i64> {
            self.inner.current_revision().await
        }
        async fn compact(&self, revision: i64) -> storage::Result<()> {
            self.inner.compact(revision).await
        }
        async fn compacted_revision(&self) -> storage::Result<i64> {
            self.inner.compacted_revision().await
        }
    }

    async fn racing_load(races: usize) -> anyhow::Result<(usize, Vec<String>, i64, i64)> {
        let dir = tempfile::tempdir()?;
        let inner: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("s.redb"))?);
        put_n(&inner, 5).await?;
        let store = RacingStore {
            inner: inner.clone(),
            races: races.into(),
            ranges: 0.into(),
        };
        let (objects, revision) = load(&store, "/registry/things/", 2).await?;
        let current = inner.current_revision().await?;
        Ok((
            store.ranges.load(Ordering::SeqCst),
            objects.into_keys().collect(),
            revision,
            current,
        ))
    }

    #[tokio::test]
    async fn a_paginated_load_is_one_snapshot() -> anyhow::Result<()> {
        // Undisturbed: three pages of 2, 2 and 1 keys.
        let (ranges, keys, revision, current) = racing_load(0).await?;
        assert_eq!(ranges, 3);
        assert_eq!(keys.len(), 5);
        assert_eq!(revision, current);

        // One write between pages: that pass is dropped and the next one
        // (which sees the write) is kept.
        let (ranges, keys, revision, current) = racing_load(1).await?;
        assert_eq!(ranges, 2 + 3, "an abandoned pass, then a full one");
        assert_eq!(keys.len(), 6);
        assert_eq!(revision, current);

        // Writes between the pages of every paginated pass: the last read is
        // one range, which cannot be torn.
        let (ranges, keys, revision, current) = racing_load(PAGED_ATTEMPTS).await?;
        assert_eq!(ranges, 2 * PAGED_ATTEMPTS + 1);
        assert_eq!(keys.len(), 5 + PAGED_ATTEMPTS);
        assert_eq!(revision, current);
        Ok(())
    }
}
