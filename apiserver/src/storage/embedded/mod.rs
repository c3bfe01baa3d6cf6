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
//! **Group commit.** Writes go to one writer thread through a queue. The
//! writer takes every write waiting in the queue (up to [`MAX_BATCH`], or
//! [`MAX_BATCH_BYTES`] of values), stages them one after another in a single
//! redb transaction — each checks its precondition against the state the
//! earlier ones left, gets the next revision and its log entry — and commits
//! once with `Durability::Immediate` (redb's default): one fsync'd commit for
//! the whole group. Only then does it record the new revision, publish the
//! events in revision order and answer each caller, so an acknowledged write
//! survives `kill -9` exactly as with a commit per write; a write whose
//! precondition fails is answered with its error and changes nothing (its
//! checks run before it touches a table); if staging hits a storage error or
//! the commit fails, the transaction is aborted and every write of the group
//! fails — none of them was acknowledged. A lone write does not wait for
//! company: the writer never delays a commit to grow a group, so groups form
//! only while a commit is in progress and other writes queue behind it (what
//! etcd's batched backend and databases' group commit do). Under load this
//! turns N fsyncs into one.
//!
//! Reads run on the blocking pool, each in its own read transaction (a
//! consistent snapshot), and never wait for writes. Compaction runs in its
//! own transaction on the blocking pool; redb admits one write transaction
//! at a time, so it interleaves with the writer's groups.
//!
//! Watches are described in the `watch` module: a slow watcher's stream ends with an
//! error instead of buffering without bound or slowing writers.
//!
//! Dropping the last clone of an [`EmbeddedStore`] closes the database (once
//! in-flight operations finish and the writer thread has seen its queue
//! close); open watch streams then end with an error.

mod codec;
mod compactor;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc;

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

/// Most writes committed in one transaction.
pub const MAX_BATCH: usize = 256;
/// Most bytes of values committed in one transaction (a group stops growing
/// once it holds this much; a single larger write still commits alone).
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// The redb-backed [`Store`]. Cheap to clone; clones share one database.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    writer: Arc<Writer>,
}

/// The writer thread and its queue. Dropped with the last store clone: the
/// queue closes, the thread commits what it holds and ends, and the drop
/// waits for it, so the database is closed once the store is gone.
struct Writer {
    queue: Option<mpsc::Sender<WriteRequest>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One write waiting for the writer thread.
struct WriteRequest {
    key: String,
    precondition: Precondition,
    change: Change,
    reply: tokio::sync::oneshot::Sender<Result<WatchEvent>>,
}

impl WriteRequest {
    fn bytes(&self) -> usize {
        self.key.len()
            + match &self.change {
                Change::Put(value) => value.len(),
                Change::Delete => 0,
            }
    }
}

/// Counters of the writer (for tests and debugging).
#[derive(Debug, Default)]
struct WriterStats {
    /// Writes taken off the queue.
    writes: AtomicU64,
    /// Transactions committed (or aborted) for them.
    groups: AtomicU64,
    /// Writes sent and not yet taken off the queue.
    queued: AtomicU64,
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
    /// What the writer thread did.
    stats: WriterStats,
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

/// Answers every write of a group that was not committed with `e`.
fn fail_all(
    replies: impl Iterator<Item = tokio::sync::oneshot::Sender<Result<WatchEvent>>>,
    e: &Error,
) {
    tracing::error!(error = %e, "store write failed; the writes of its group were not committed");
    for reply in replies {
        let _ = reply.send(Err(Error::Backend(format!("{e} (not committed)"))));
    }
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
        let inner = Arc::new(Inner {
            db,
            path: path.to_owned(),
            stats: WriterStats::default(),
            revision: AtomicI64::new(revision),
            compacted: AtomicI64::new(compacted),
            hub: watch::Hub::new(options.watch_buffer),
        });
        let (writes, queue) = mpsc::channel();
        let writer = inner.clone();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run_writer(&queue))
            .map_err(backend("start the store's writer thread"))?;
        Ok(Self {
            inner,
            writer: Arc::new(Writer {
                queue: Some(writes),
                thread: Some(thread),
            }),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// What the revision log holds (for metrics and tests of compaction).
    pub async fn history_stats(&self) -> Result<HistoryStats> {
        self.on_blocking_pool(|inner| inner.history_stats()).await
    }

    /// Runs `f` on the blocking pool: reads (each in its own read
    /// transaction) and compaction (its own write transaction).
    async fn on_blocking_pool<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(join_error)?
    }

    /// Queues one write for the writer thread and waits for its commit. A
    /// caller that stops waiting does not withdraw the write: it commits (or
    /// fails) with its group all the same.
    async fn write(
        &self,
        key: String,
        precondition: Precondition,
        change: Change,
    ) -> Result<WatchEvent> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.inner.stats.queued.fetch_add(1, Ordering::SeqCst);
        let request = WriteRequest {
            key,
            precondition,
            change,
            reply,
        };
        let sent = match &self.writer.queue {
            Some(queue) => queue.send(request).is_ok(),
            None => false,
        };
        if !sent {
            self.inner.stats.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::Backend(
                "the store's writer thread has stopped".into(),
            ));
        }
        answer.await.map_err(|_| {
            Error::Backend("the store's writer thread stopped before answering".into())
        })?
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

/// The three tables a write touches, open in one write transaction.
struct Tables<'txn> {
    kv: redb::Table<'txn, &'static str, &'static [u8]>,
    log: redb::Table<'txn, i64, &'static [u8]>,
    meta: redb::Table<'txn, &'static str, i64>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self> {
        Ok(Self {
            kv: txn.open_table(KV).map_err(backend("open kv table"))?,
            log: txn.open_table(LOG).map_err(backend("open log table"))?,
            meta: txn.open_table(META).map_err(backend("open meta table"))?,
        })
    }
}

/// Why a write of a group was not staged.
enum Refused {
    /// Its own error (a precondition, a missing key): it changed nothing and
    /// the rest of the group goes on.
    Write(Error),
    /// A storage error: the transaction cannot be trusted; the group aborts.
    Storage(Error),
}

impl Inner {
    /// The writer thread: takes the queued writes a group at a time and
    /// commits each group in one transaction (see the module docs). Ends
    /// when every [`EmbeddedStore`] clone is gone.
    fn run_writer(&self, queue: &mpsc::Receiver<WriteRequest>) {
        while let Ok(first) = queue.recv() {
            let mut bytes = first.bytes();
            let mut group = vec![first];
            while group.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                match queue.try_recv() {
                    Ok(next) => {
                        bytes += next.bytes();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            let n = group.len() as u64;
            self.stats.queued.fetch_sub(n, Ordering::SeqCst);
            self.stats.writes.fetch_add(n, Ordering::SeqCst);
            self.stats.groups.fetch_add(1, Ordering::SeqCst);
            self.commit_group(group);
        }
    }

    /// Stages `group` in one transaction, commits it, then records the
    /// revision, publishes the events in order and answers every write.
    fn commit_group(&self, group: Vec<WriteRequest>) {
        let txn = match self.db.begin_write() {
            Ok(txn) => txn,
            Err(e) => {
                let e = backend("begin write")(e);
                return fail_all(group.into_iter().map(|r| r.reply), &e);
            }
        };
        let mut staged = Vec::with_capacity(group.len());
        let mut requests = group.into_iter();
        let storage_error = match Tables::open(&txn) {
            Err(e) => Some(e),
            Ok(mut tables) => requests.by_ref().find_map(|request| {
                let WriteRequest {
                    key,
                    precondition,
                    change,
                    reply,
                } = request;
                match Self::stage(&mut tables, &key, precondition, change) {
                    Ok(event) => staged.push((reply, Ok(event))),
                    Err(Refused::Write(e)) => staged.push((reply, Err(e))),
                    Err(Refused::Storage(e)) => {
                        staged.push((reply, Err(Error::Backend(String::new()))));
                        return Some(e);
                    }
                }
                None
            }),
        };
        if let Some(e) = storage_error {
            let _ = txn.abort();
            let replies = staged.into_iter().map(|(reply, _)| reply);
            return fail_all(replies.chain(requests.map(|r| r.reply)), &e);
        }
        if !staged.iter().any(|(_, result)| result.is_ok()) {
            // Every write was refused: nothing to commit.
            let _ = txn.abort();
        } else if let Err(e) = txn.commit() {
            let e = backend("commit")(e);
            return fail_all(staged.into_iter().map(|(reply, _)| reply), &e);
        }
        if let Some(last) = staged
            .iter()
            .rev()
            .find_map(|(_, result)| result.as_ref().ok().map(WatchEvent::revision))
        {
            self.revision.store(last, Ordering::SeqCst);
        }
        for (reply, result) in staged {
            if let Ok(event) = &result {
                self.hub.publish(&Arc::new(event.clone()));
            }
            // The caller may have stopped waiting; the write stands.
            let _ = reply.send(result);
        }
    }

    /// Stages one write in the group's transaction: check its
    /// precondition, write the key, append the log entry, bump the revision.
    /// Every check comes before the first change, so a refused write leaves
    /// the transaction as it found it.
    fn stage(
        tables: &mut Tables<'_>,
        key: &str,
        precondition: Precondition,
        change: Change,
    ) -> std::result::Result<WatchEvent, Refused> {
        let Tables { kv, log, meta } = tables;
        let storage = |context: &'static str| {
            let to_error = backend(context);
            move |e: redb::StorageError| Refused::Storage(to_error(e))
        };
        // Checks first: nothing below may fail with the write's own error
        // once a table has been changed.
        let current = match kv.get(key).map_err(storage("read key"))? {
            Some(raw) => Some(codec::decode_record(key, raw.value()).map_err(Refused::Write)?),
            None => None,
        };
        check(key, precondition, current.as_ref()).map_err(Refused::Write)?;
        let revision = read_counter(meta, META_REVISION).map_err(Refused::Storage)? + 1;
        let event = match change {
            Change::Put(value) => {
                let create_revision = current.as_ref().map_or(revision, |c| c.create_revision);
                let record = codec::encode_record(create_revision, revision, &value);
                kv.insert(key, record.as_slice())
                    .map_err(storage("write key"))?;
                let kv = KeyValue {
                    key: key.to_owned(),
                    value,
                    create_revision,
                    mod_revision: revision,
                };
                WatchEvent::Put { kv, prev: current }
            }
            Change::Delete => {
                let Some(prev) = current else {
                    return Err(Refused::Write(Error::NotFound {
                        key: key.to_owned(),
                    }));
                };
                kv.remove(key).map_err(storage("delete key"))?;
                WatchEvent::Delete { prev, revision }
            }
        };
        log.insert(revision, codec::encode_event(&event).as_slice())
            .map_err(storage("append log"))?;
        meta.insert(META_REVISION, revision)
            .map_err(storage("write revision"))?;
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
        self.on_blocking_pool(move |inner| inner.get(&key)).await
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<RangeResult> {
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        self.on_blocking_pool(move |inner| inner.range(&prefix, start_after.as_deref(), limit))
            .await
    }

    async fn put(&self, key: &str, value: Bytes, precondition: Precondition) -> Result<KeyValue> {
        match self
            .write(key.to_owned(), precondition, Change::Put(value))
            .await?
        {
            WatchEvent::Put { kv, .. } => Ok(kv),
            WatchEvent::Delete { .. } => Err(Error::Backend("put produced a delete event".into())),
        }
    }

    async fn delete(&self, key: &str, precondition: Precondition) -> Result<(KeyValue, i64)> {
        match self
            .write(key.to_owned(), precondition, Change::Delete)
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
        // redb runs one write transaction at a time: this one waits for the
        // writer's group in progress, if any.
        self.on_blocking_pool(move |inner| inner.compact(revision))
            .await
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

    /// Group commit: writes queued while a commit is in progress share the
    /// next transaction; each is checked against the state the earlier ones
    /// left (one create of a contested key wins, the others get
    /// AlreadyExists and change nothing), revisions are contiguous, watchers
    /// see the events in revision order, and every acknowledged write is in
    /// the file after it is reopened.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_queued_behind_a_commit_share_one_transaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        let store = EmbeddedStore::open(&path).expect("open");
        let mut events = store.watch("/g/", 0).await.expect("watch");
        // Hold redb's one write transaction so the writer queues up.
        let blocker = store.inner.db.begin_write().expect("begin write");
        let mut tasks = Vec::new();
        for i in 0..20 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let key = if i % 2 == 0 {
                    "/g/contested".to_string()
                } else {
                    format!("/g/own-{i}")
                };
                let value = Bytes::from(format!("v{i}"));
                (
                    key.clone(),
                    store.put(&key, value, Precondition::MustNotExist).await,
                )
            }));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let stats = &store.inner.stats;
            let sent = stats.queued.load(Ordering::SeqCst) + stats.writes.load(Ordering::SeqCst);
            if sent == 20 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "only {sent} writes were sent"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        blocker.abort().expect("abort");
        let mut ok = Vec::new();
        let mut contested_refused = 0;
        for task in tasks {
            let (key, result) = task.await.expect("task");
            match result {
                Ok(kv) => ok.push((key, kv.mod_revision)),
                Err(Error::AlreadyExists { key }) if key == "/g/contested" => {
                    contested_refused += 1;
                }
                Err(e) => panic!("{key}: {e}"),
            }
        }
        assert_eq!(
            contested_refused, 9,
            "exactly one create of the contested key wins"
        );
        assert_eq!(ok.len(), 11);
        let mut revisions: Vec<i64> = ok.iter().map(|(_, r)| *r).collect();
        revisions.sort_unstable();
        assert_eq!(
            revisions,
            (1..=11).collect::<Vec<_>>(),
            "contiguous revisions"
        );
        let groups = store.inner.stats.groups.load(Ordering::SeqCst);
        assert!(groups <= 2, "20 queued writes took {groups} transactions");
        assert_eq!(store.current_revision().await.expect("revision"), 11);
        for expected in 1..=11 {
            let event = events.next().await.expect("event").expect("ok");
            assert_eq!(event.revision(), expected);
        }
        drop(events);
        drop(store);
        let reopened = tokio::task::spawn_blocking(move || EmbeddedStore::open(&path))
            .await
            .expect("join")
            .expect("reopen");
        for (key, revision) in &ok {
            let kv = reopened
                .get(key)
                .await
                .expect("get")
                .expect("acknowledged write present");
            assert_eq!(kv.mod_revision, *revision);
        }
    }

    #[tokio::test]
    async fn a_refused_write_in_a_group_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(&dir.path().join("db")).expect("open");
        let first = store
            .put("/r/a", Bytes::from_static(b"1"), Precondition::None)
            .await
            .expect("put");
        let conflict = store
            .put(
                "/r/a",
                Bytes::from_static(b"2"),
                Precondition::ModRevision(first.mod_revision + 7),
            )
            .await;
        assert!(
            matches!(conflict, Err(Error::Conflict { .. })),
            "{conflict:?}"
        );
        let missing = store.delete("/r/none", Precondition::None).await;
        assert!(
            matches!(missing, Err(Error::NotFound { .. })),
            "{missing:?}"
        );
        assert_eq!(store.current_revision().await.expect("revision"), 1);
        let kv = store.get("/r/a").await.expect("get").expect("present");
        assert_eq!(kv.value, Bytes::from_static(b"1"));
        let stats = store.inner.history_stats().expect("stats");
        assert_eq!(stats.entries, 1, "refused writes append no log entry");
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
