//! The embedded backend: a single redb file holding the current keys, a
//! durable revision log for watch replay, and two counters.
//!
//! Tables:
//! - `kv`: key → (create revision, mod revision, value) — the current state;
//! - `log`: revision → the event written at that revision, with the previous
//!   value — what watches replay; compaction deletes entries below a revision;
//! - `meta`: `revision` (the global revision) and `compacted` (the compacted
//!   revision), kept in the database so both survive restarts and deletions.
//!
//! Every write is one redb transaction committed with `Durability::Immediate`
//! (redb's default): a write returns only after its commit reached the disk,
//! so an acknowledged write survives `kill -9`. Writes run on the blocking
//! pool, one at a time under an async mutex that the blocking task holds until
//! it has committed and published the event, which keeps revisions and live
//! events in the same order. Reads run on the blocking pool too, each in its
//! own read transaction (a consistent snapshot), and never wait for writes.
//!
//! Watches are described in the `watch` module: a slow watcher's stream ends with an
//! error instead of buffering without bound or slowing writers.
//!
//! Dropping the last clone of an [`EmbeddedStore`] closes the database (once
//! in-flight operations finish); open watch streams then end with an error.

mod codec;
mod compactor;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

/// The name the apiserver's startup code uses for [`CompactionOptions`].
pub use compactor::CompactionOptions as Options;
pub use compactor::{CompactionOptions, compact_once, spawn_compactor};

use super::{Error, KeyValue, Precondition, RangeResult, Result, Store, WatchEvent, WatchStream};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<i64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// Tuning of an [`EmbeddedStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Events buffered per watcher before it is considered too slow and its
    /// stream is ended (it then re-watches from its last revision). Events are
    /// shared between watchers, but each holds its value and previous value,
    /// so the worst case per watcher is `watch_buffer` times two values.
    pub watch_buffer: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self { watch_buffer: 1024 }
    }
}

/// What the revision log currently holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryStats {
    /// Number of log entries (one per retained revision).
    pub entries: u64,
    /// The oldest revision still in the log, if any.
    pub oldest_revision: Option<i64>,
    /// The newest revision in the log, if any.
    pub newest_revision: Option<i64>,
}

/// The redb-backed [`Store`]. Cheap to clone; clones share one database.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    db: Database,
    path: PathBuf,
    /// Serializes writers; the owned guard moves into the blocking task so a
    /// cancelled caller cannot let the next write overtake a commit in flight.
    write_lock: Arc<tokio::sync::Mutex<()>>,
    /// Mirrors `meta.revision` after each commit (updated before publishing).
    revision: AtomicI64,
    /// Mirrors `meta.compacted` after each compaction.
    compacted: AtomicI64,
    hub: watch::Hub,
}

/// The change a write makes to its key.
enum Change {
    Put(Bytes),
    Delete,
}

fn backend<E: std::fmt::Display>(context: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::Backend(format!("{context}: {e}"))
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::Backend(format!("storage task failed: {e}"))
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store file at `path` with default options.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, EmbeddedOptions::default())
    }

    /// Opens (creating if needed) the store file at `path`. Creates missing
    /// parent directories. Blocking: call it at startup or from `spawn_blocking`.
    /// After a crash redb repairs the file on open, which may take a while.
    pub fn open_with(path: &Path, options: EmbeddedOptions) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(backend("create store directory"))?;
        }
        let db = open_database(path)?;
        let txn = db.begin_write().map_err(backend("begin write"))?;
        let (revision, compacted) = {
            txn.open_table(KV).map_err(backend("open kv table"))?;
            txn.open_table(LOG).map_err(backend("open log table"))?;
            let meta = txn.open_table(META).map_err(backend("open meta table"))?;
            (
                read_counter(&meta, META_REVISION)?,
                read_counter(&meta, META_COMPACTED)?,
            )
        };
        txn.commit().map_err(backend("commit"))?;
        tracing::debug!(path = %path.display(), revision, compacted, "opened embedded store");
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                path: path.to_owned(),
                write_lock: Arc::new(tokio::sync::Mutex::new(())),
                revision: AtomicI64::new(revision),
                compacted: AtomicI64::new(compacted),
                hub: watch::Hub::new(options.watch_buffer),
            }),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// What the revision log holds (for metrics and tests of compaction).
    pub async fn history_stats(&self) -> Result<HistoryStats> {
        self.read(|inner| inner.history_stats()).await
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(join_error)?
    }

    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let guard = self.inner.write_lock.clone().lock_owned().await;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _serialized = guard;
            f(&inner)
        })
        .await
        .map_err(join_error)?
    }
}

/// How long `open` waits for a previous handle of the same file to finish
/// closing (an operation in flight when the last clone was dropped keeps the
/// database open until it completes).
const REOPEN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

fn open_database(path: &Path) -> Result<Database> {
    let deadline = std::time::Instant::now() + REOPEN_GRACE;
    loop {
        match Database::create(path) {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(open_failed(path, &e)),
        }
    }
}

/// Why the store file cannot be opened. A file redb cannot repair (torn or
/// truncated past what its commit protocol recovers from, or not a redb
/// file at all) must stop the server rather than let it start on an empty or
/// partial store, so the message names the file and what the operator can do.
fn open_failed(path: &Path, e: &redb::DatabaseError) -> Error {
    let damaged = match e {
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(_)) => true,
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => {
            io.kind() == std::io::ErrorKind::InvalidData
                || io.kind() == std::io::ErrorKind::UnexpectedEof
        }
        redb::DatabaseError::RepairAborted => true,
        _ => false,
    };
    if damaged {
        Error::Backend(format!(
            "open {path}: the store file is damaged and could not be repaired ({e}); \
             refusing to start on it. Stop the server, move {path} aside (keep it for \
             inspection) and restore the last backup of it, or start with an empty store",
            path = path.display()
        ))
    } else {
        Error::Backend(format!("open {}: {e}", path.display()))
    }
}

fn read_counter(meta: &impl ReadableTable<&'static str, i64>, name: &str) -> Result<i64> {
    let value = meta
        .get(name)
        .map_err(backend("read meta"))?
        .map_or(0, |g| g.value());
    if value < 0 {
        return Err(Error::Backend(format!("corrupt meta: {name} is {value}")));
    }
    Ok(value)
}

/// Checks `precondition` against the key's current state.
fn check(key: &str, precondition: Precondition, current: Option<&KeyValue>) -> Result<()> {
    let not_found = || Error::NotFound {
        key: key.to_owned(),
    };
    let exists = || Error::AlreadyExists {
        key: key.to_owned(),
    };
    match (precondition, current) {
        (Precondition::None, _) => Ok(()),
        (Precondition::MustNotExist | Precondition::ModRevision(0), Some(_)) => Err(exists()),
        (Precondition::MustNotExist | Precondition::ModRevision(0), None) => Ok(()),
        (Precondition::MustExist | Precondition::ModRevision(_), None) => Err(not_found()),
        (Precondition::MustExist, Some(_)) => Ok(()),
        (Precondition::ModRevision(expected), Some(kv)) if kv.mod_revision != expected => {
            Err(Error::Conflict {
                key: key.to_owned(),
                expected,
                actual: kv.mod_revision,
            })
        }
        (Precondition::ModRevision(_), Some(_)) => Ok(()),
    }
}

impl Inner {
    /// One write transaction: check, write the key, append the log entry,
    /// bump the revision, commit, then publish. Runs under the write lock.
    fn apply(&self, key: &str, precondition: Precondition, change: Change) -> Result<WatchEvent> {
        let txn = self.db.begin_write().map_err(backend("begin write"))?;
        match Self::stage(&txn, key, precondition, change) {
            Ok(event) => {
                txn.commit().map_err(backend("commit"))?;
                self.revision.store(event.revision(), Ordering::SeqCst);
                self.hub.publish(&Arc::new(event.clone()));
                Ok(event)
            }
            Err(err) => {
                txn.abort().map_err(backend("abort"))?;
                Err(err)
            }
        }
    }

    fn stage(
        txn: &WriteTransaction,
        key: &str,
        precondition: Precondition,
        change: Change,
    ) -> Result<WatchEvent> {
        let mut kv = txn.open_table(KV).map_err(backend("open kv table"))?;
        let mut log = txn.open_table(LOG).map_err(backend("open log table"))?;
        let mut meta = txn.open_table(META).map_err(backend("open meta table"))?;
        let current = match kv.get(key).map_err(backend("read key"))? {
            Some(raw) => Some(codec::decode_record(key, raw.value())?),
            None => None,
        };
        check(key, precondition, current.as_ref())?;
        let revision = read_counter(&meta, META_REVISION)? + 1;
        let event = match change {
            Change::Put(value) => {
                let create_revision = current.as_ref().map_or(revision, |c| c.create_revision);
                let record = codec::encode_record(create_revision, revision, &value);
                kv.insert(key, record.as_slice())
                    .map_err(backend("write key"))?;
                let kv = KeyValue {
                    key: key.to_owned(),
                    value,
                    create_revision,
                    mod_revision: revision,
                };
                WatchEvent::Put { kv, prev: current }
            }
            Change::Delete => {
                let prev = current.ok_or_else(|| Error::NotFound {
                    key: key.to_owned(),
                })?;
                kv.remove(key).map_err(backend("delete key"))?;
                WatchEvent::Delete { prev, revision }
            }
        };
        log.insert(revision, codec::encode_event(&event).as_slice())
            .map_err(backend("append log"))?;
        meta.insert(META_REVISION, revision)
            .map_err(backend("write revision"))?;
        Ok(event)
    }

    /// Deletes log entries below `revision` and records it as compacted.
    fn compact(&self, revision: i64) -> Result<()> {
        let txn = self.db.begin_write().map_err(backend("begin write"))?;
        let outcome = (|| {
            let mut log = txn.open_table(LOG).map_err(backend("open log table"))?;
            let mut meta = txn.open_table(META).map_err(backend("open meta table"))?;
            let current = read_counter(&meta, META_REVISION)?;
            if revision > current {
                return Err(Error::FutureRevision {
                    requested: revision,
                    current,
                });
            }
            let compacted = read_counter(&meta, META_COMPACTED)?;
            if revision <= compacted {
                return Ok(None);
            }
            let mut removed = 0u64;
            for entry in log
                .extract_from_if(..revision, |_, _| true)
                .map_err(backend("compact log"))?
            {
                entry.map_err(backend("compact log"))?;
                removed += 1;
            }
            meta.insert(META_COMPACTED, revision)
                .map_err(backend("write compacted revision"))?;
            Ok(Some(removed))
        })();
        match outcome {
            Ok(Some(removed)) => {
                txn.commit().map_err(backend("commit"))?;
                self.compacted.store(revision, Ordering::SeqCst);
                tracing::debug!(revision, removed, "compacted revision log");
                Ok(())
            }
            Ok(None) => txn.abort().map_err(backend("abort")),
            Err(err) => {
                txn.abort().map_err(backend("abort"))?;
                Err(err)
            }
        }
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let txn = self.db.begin_read().map_err(backend("begin read"))?;
        let kv = txn.open_table(KV).map_err(backend("open kv table"))?;
        match kv.get(key).map_err(backend("read key"))? {
            Some(raw) => Ok(Some(codec::decode_record(key, raw.value())?)),
            None => Ok(None),
        }
    }

    fn range(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<RangeResult> {
        let txn = self.db.begin_read().map_err(backend("begin read"))?;
        let meta = txn.open_table(META).map_err(backend("open meta table"))?;
        let revision = read_counter(&meta, META_REVISION)?;
        let kv = txn.open_table(KV).map_err(backend("open kv table"))?;
        // A `start_after` before the prefix would only add keys we filter out.
        let lower = match start_after {
            Some(after) if after >= prefix => std::ops::Bound::Excluded(after),
            _ => std::ops::Bound::Included(prefix),
        };
        let iter = kv
            .range::<&str>((lower, std::ops::Bound::Unbounded))
            .map_err(backend("range"))?;
        let mut kvs = Vec::new();
        let mut more = false;
        for entry in iter {
            let (key, raw) = entry.map_err(backend("range"))?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            if limit > 0 && kvs.len() == limit {
                more = true;
                break;
            }
            kvs.push(codec::decode_record(key, raw.value())?);
        }
        Ok(RangeResult {
            kvs,
            revision,
            more,
        })
    }

    /// Reads logged events under `prefix` in `[from, until]`, one page at a
    /// time. Returns the events and the next revision to read. Fails with
    /// `Compacted` if part of the requested history is gone.
    fn read_history(
        &self,
        prefix: &str,
        from: i64,
        until: i64,
        limits: &watch::PageLimits,
    ) -> Result<(Vec<WatchEvent>, i64)> {
        let txn = self.db.begin_read().map_err(backend("begin read"))?;
        let meta = txn.open_table(META).map_err(backend("open meta table"))?;
        let compacted = read_counter(&meta, META_COMPACTED)?;
        if from < compacted {
            return Err(Error::Compacted {
                requested: from - 1,
                compacted,
            });
        }
        let log = txn.open_table(LOG).map_err(backend("open log table"))?;
        let (mut events, mut bytes, mut scanned) = (Vec::new(), 0usize, 0usize);
        for entry in log.range(from..=until).map_err(backend("read log"))? {
            let (revision, raw) = entry.map_err(backend("read log"))?;
            let (revision, raw) = (revision.value(), raw.value());
            scanned += 1;
            if codec::event_key(raw)?.starts_with(prefix) {
                events.push(codec::decode_event(revision, raw)?);
                bytes += raw.len();
            }
            if events.len() >= limits.max_events
                || bytes >= limits.max_bytes
                || scanned >= limits.max_scanned
            {
                return Ok((events, revision + 1));
            }
        }
        Ok((events, until + 1))
    }

    fn history_stats(&self) -> Result<HistoryStats> {
        let txn = self.db.begin_read().map_err(backend("begin read"))?;
        let log = txn.open_table(LOG).map_err(backend("open log table"))?;
        let entries = log.len().map_err(backend("read log"))?;
        let oldest_revision = log
            .first()
            .map_err(backend("read log"))?
            .map(|(k, _)| k.value());
        let newest_revision = log
            .last()
            .map_err(backend("read log"))?
            .map(|(k, _)| k.value());
        Ok(HistoryStats {
            entries,
            oldest_revision,
            newest_revision,
        })
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.read(move |inner| inner.get(&key)).await
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<RangeResult> {
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        self.read(move |inner| inner.range(&prefix, start_after.as_deref(), limit))
            .await
    }

    async fn put(&self, key: &str, value: Bytes, precondition: Precondition) -> Result<KeyValue> {
        let key = key.to_owned();
        match self
            .write(move |inner| inner.apply(&key, precondition, Change::Put(value)))
            .await?
        {
            WatchEvent::Put { kv, .. } => Ok(kv),
            WatchEvent::Delete { .. } => Err(Error::Backend("put produced a delete event".into())),
        }
    }

    async fn delete(&self, key: &str, precondition: Precondition) -> Result<(KeyValue, i64)> {
        let key = key.to_owned();
        match self
            .write(move |inner| inner.apply(&key, precondition, Change::Delete))
            .await?
        {
            WatchEvent::Delete { prev, revision } => Ok((prev, revision)),
            WatchEvent::Put { .. } => Err(Error::Backend("delete produced a put event".into())),
        }
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream> {
        // Register first: every later commit reaches the channel, every
        // earlier one is at or below `current` and thus in the log.
        let sub = self.inner.hub.subscribe(prefix);
        let current = self.inner.revision.load(Ordering::SeqCst);
        if after_revision > current {
            return Err(Error::FutureRevision {
                requested: after_revision,
                current,
            });
        }
        let after = if after_revision <= 0 {
            current
        } else {
            after_revision
        };
        // etcd semantics: the watch needs revision `after + 1` onwards, and
        // compaction at R keeps R, so `after = R - 1` is still servable.
        let compacted = self.inner.compacted.load(Ordering::SeqCst);
        if after + 1 < compacted {
            return Err(Error::Compacted {
                requested: after_revision,
                compacted,
            });
        }
        Ok(watch::stream(
            Arc::downgrade(&self.inner),
            prefix.to_owned(),
            after,
            current,
            sub,
        ))
    }

    async fn current_revision(&self) -> Result<i64> {
        Ok(self.inner.revision.load(Ordering::SeqCst))
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.write(move |inner| inner.compact(revision)).await
    }

    async fn compacted_revision(&self) -> Result<i64> {
        Ok(self.inner.compacted.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    /// Power cut: the store file loses its tail after the last commit
    /// (modelled by copying the file of a store that is still open, as
    /// `kill -9` leaves it, then cutting the copy). The server must either
    /// recover every committed key intact or refuse to open with a message
    /// saying what to do; it must never open on silently missing data.
    #[tokio::test]
    async fn truncated_store_file_is_recovered_or_refused_with_guidance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        let store = EmbeddedStore::open(&path).expect("open");
        let value = Bytes::from(vec![b'x'; 3000]);
        for i in 0..200 {
            store
                .put(&format!("/k/{i:03}"), value.clone(), Precondition::None)
                .await
                .expect("put");
        }
        let len = std::fs::metadata(&path).expect("stat").len();
        for cut in [4096, len / 2, len - 4096] {
            let copy = dir.path().join(format!("cut-{cut}.redb"));
            std::fs::copy(&path, &copy).expect("copy");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&copy)
                .expect("open copy");
            f.set_len(len - cut).expect("truncate");
            drop(f);
            let opened = tokio::task::spawn_blocking(move || EmbeddedStore::open(&copy))
                .await
                .expect("open must not panic");
            match opened {
                Ok(reopened) => {
                    let all = reopened.range("/k/", None, 0).await.expect("range");
                    assert_eq!(all.kvs.len(), 200, "cut {cut}: keys lost silently");
                    assert!(all.kvs.iter().all(|kv| kv.value == value));
                }
                Err(e) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains("damaged") && msg.contains("restore"),
                        "cut {cut}: {msg}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn dropped_watch_streams_leave_the_hub() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(&dir.path().join("db")).expect("open");
        let stream = store.watch("/a/", 0).await.expect("watch");
        assert_eq!(store.inner.hub.len(), 1);
        drop(stream);
        // A write under another prefix prunes closed watchers too.
        store
            .put("/b/x", Bytes::from_static(b"1"), Precondition::None)
            .await
            .expect("put");
        assert_eq!(store.inner.hub.len(), 0);
    }

    #[tokio::test]
    async fn replay_pages_are_bounded_and_resume() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(&dir.path().join("db")).expect("open");
        for i in 0..10 {
            store
                .put(
                    &format!("/p/{i}"),
                    Bytes::from_static(b"v"),
                    Precondition::None,
                )
                .await
                .expect("put");
            store
                .put(
                    &format!("/q/{i}"),
                    Bytes::from_static(b"v"),
                    Precondition::None,
                )
                .await
                .expect("put");
        }
        let limits = watch::PageLimits {
            max_events: 3,
            max_bytes: usize::MAX,
            max_scanned: usize::MAX,
        };
        let (events, next) = store
            .inner
            .read_history("/p/", 1, 20, &limits)
            .expect("page");
        assert_eq!(
            events.iter().map(WatchEvent::revision).collect::<Vec<_>>(),
            vec![1, 3, 5]
        );
        assert_eq!(next, 6);
        let limits = watch::PageLimits {
            max_events: 100,
            max_bytes: usize::MAX,
            max_scanned: 4,
        };
        let (events, next) = store
            .inner
            .read_history("/p/", 6, 20, &limits)
            .expect("page");
        assert_eq!(
            events.iter().map(WatchEvent::revision).collect::<Vec<_>>(),
            vec![7, 9]
        );
        assert_eq!(next, 10);
        let mut stream = store.watch("/q/", 0).await.expect("watch");
        store
            .put("/q/x", Bytes::from_static(b"v"), Precondition::None)
            .await
            .expect("put");
        let event = stream.next().await.expect("event").expect("ok");
        assert_eq!(event.revision(), 21);
    }
}
