//! Storage: an MVCC key-value interface with etcd's semantics, and its backends.
//!
//! Only the apiserver touches the store; this module is private to the crate's
//! HTTP layer except for what tests and the all-in-one binary need to open one.
//!
//! Semantics (the same as etcd v3, so both backends pass one conformance suite):
//! - one global `revision`, incremented by every successful write (a
//!   transaction of several puts/deletes would count once; we write one key at a time);
//! - each key carries `create_revision` (revision of the write that created it)
//!   and `mod_revision` (revision of its last write);
//! - writes are compare-and-swap on `mod_revision` (`0` = "must not exist");
//! - range reads are at the current revision;
//! - watches start from a revision and replay history from the revision log;
//!   a start revision older than the compacted revision fails with
//!   [`Error::Compacted`], which the API answers with 410 Expired.

/// The backend-independent conformance suite (every backend must pass it unchanged).
pub mod conformance;
pub mod embedded;
pub mod encryption;
pub mod etcd;

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

/// A key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    pub create_revision: i64,
    pub mod_revision: i64,
}

/// What a compare-and-swap write expects of the key's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Write whatever the current state is.
    None,
    /// The key must not exist (a create).
    MustNotExist,
    /// The key must exist with exactly this `mod_revision`.
    ModRevision(i64),
    /// The key must exist (any revision).
    MustExist,
}

/// The result of a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResult {
    /// Matching keys in ascending key order.
    pub kvs: Vec<KeyValue>,
    /// The store revision the read was served at.
    pub revision: i64,
    /// True when `limit` cut the result short.
    pub more: bool,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or updated; `prev` is its value before (if any).
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// The key was deleted at `revision`; `prev` is its last value.
    Delete { prev: KeyValue, revision: i64 },
}

impl WatchEvent {
    /// The revision of the write this event reports.
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put { kv, .. } => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }
}

/// A stream of watch events in revision order. It ends (or yields an error)
/// when the store closes it; consumers then re-watch from their last revision.
/// A consumer that falls too far behind gets an error (`Backend`) instead of
/// unbounded buffering, and recovers the same way.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// Storage errors. The HTTP layer maps these to Kubernetes `Status` codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A precondition failed: the key exists (for a create) — 409 AlreadyExists.
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    /// The key does not exist — 404 NotFound.
    #[error("key {key} not found")]
    NotFound { key: String },
    /// The key's `mod_revision` differs from the precondition — 409 Conflict.
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: i64,
        actual: i64,
    },
    /// The requested revision was compacted away — 410 Expired.
    #[error("required revision {requested} has been compacted (compacted revision {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    /// The requested revision is in the future.
    #[error("required revision {requested} is a future revision (current {current})")]
    FutureRevision { requested: i64, current: i64 },
    /// A watch could not keep up with the writes and was ended; its
    /// consumer re-watches from the last revision it saw and loses nothing.
    /// An HTTP watch fed by it just ends, as Kubernetes ends a slow watcher.
    #[error("watch fell behind after revision {after}; re-watch from that revision")]
    Lagged { after: i64 },
    /// The backend failed (I/O, corruption, lost connection) — 500/503.
    #[error("storage backend: {0}")]
    Backend(String),
    /// The stored value of `key` could not be decrypted (or encrypted):
    /// its encryption key is missing or wrong — 500 naming both.
    #[error("unable to transform key {key:?}: {message}")]
    Transform { key: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The MVCC store the apiserver runs on. Implemented by the embedded (redb)
/// backend and, later, by etcd. All methods are cancel-safe: a dropped future
/// either committed fully or not at all.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Read one key at the current revision. `Ok(None)` when absent.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Read all keys starting with `prefix` (in key order), at most `limit`
    /// of them (`0` = no limit), starting at `start_after` exclusive when set
    /// (for paging). Served at the current revision, returned in `revision`.
    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<RangeResult>;

    /// Write `value` at `key` if `precondition` holds. Returns the new
    /// key-value (with its new `mod_revision`). Fails with `AlreadyExists`,
    /// `NotFound` or `Conflict` when the precondition does not hold.
    async fn put(&self, key: &str, value: Bytes, precondition: Precondition) -> Result<KeyValue>;

    /// Delete `key` if `precondition` holds. Returns the deleted key-value and
    /// the revision of the delete. `NotFound` when absent.
    async fn delete(&self, key: &str, precondition: Precondition) -> Result<(KeyValue, i64)>;

    /// Watch every key under `prefix` for changes with revision > `after_revision`.
    /// `after_revision` = 0 means "from now on". Events already in the revision
    /// log are replayed first. After `compact(R)`, history older than `R` is
    /// gone: an `after_revision` below `R - 1` fails with `Compacted` (as in
    /// etcd, revision `R` itself is kept, so a watch after `R - 1` still works).
    /// An `after_revision` above the current revision fails with `FutureRevision`.
    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream>;

    /// The current revision (of the last successful write).
    async fn current_revision(&self) -> Result<i64>;

    /// Drop history older than `revision`; later watches from before it fail with `Compacted`.
    /// Compacting at or below the compacted revision is a no-op; above the
    /// current revision it fails with `FutureRevision`.
    async fn compact(&self, revision: i64) -> Result<()>;

    /// The revision of the last compaction (0 when nothing is compacted).
    async fn compacted_revision(&self) -> Result<i64>;

    /// The encryption-at-rest layer, when this store is one: its admin
    /// endpoints (key usage, rewrite) reach it through the shared store.
    fn encryption(&self) -> Option<&encryption::EncryptedStore> {
        None
    }
}
