//! Garbage collection of the module store: blobs no tag, pod or pod template
//! references are deleted, with their chunks, once their grace period is over.
//!
//! References are found by scanning the stored bytes of tags, Pods,
//! Deployments, ReplicaSets, DaemonSets and Jobs for `sha256:<64 hex>`: that
//! covers `image: name@sha256:…` in any container list, the digest a pod's
//! status reports as its `imageID` (so a pod keeps running the module it
//! resolved even after its tag moved), and every tag. A stray match only
//! keeps a blob longer; nothing referenced is ever missed.
//!
//! Every API server runs the collector on its own; they may share one etcd.
//! No leader is needed because each step is a compare-and-swap that at most
//! one of them (or a push) wins, and a loser simply skips that blob:
//! - a manifest is deleted only at the revision the collector read, so a
//!   push that reused the blob meanwhile (it rewrites the manifest's `pushed`
//!   time) makes the delete fail and the blob stays;
//! - blobs pushed within the grace period are left alone, so a push that
//!   found its blob present always gets to write its tag first;
//! - before a manifest is deleted, an upload record naming its chunks is
//!   created (only one collector can create it), so chunks are never
//!   orphaned by a crash half way; deleting chunks twice is harmless.
//!
//! The only race left is inherent to any registry: a pod created by digest,
//! with no tag on that digest, in the instant between the reference scan and
//! the delete of an already-unreferenced blob older than the grace period.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wasmkube_api::wasm;

use super::TAGS;
use super::blobs::{
    self, BLOBS, BlobError, StoredBlob, UPLOADS, UploadRecord, UploadState, blob_key, rfc3339,
    upload_key,
};
use crate::storage::{self, KeyValue, Precondition, Store};

/// Resources whose stored objects may name a module by digest.
const REFERRERS: &[(&str, &str)] = &[
    ("", "pods"),
    ("apps", "deployments"),
    ("apps", "replicasets"),
    ("apps", "daemonsets"),
    ("batch", "jobs"),
];

/// Keys read per range request: tags and objects are small, but a blob
/// record written before chunking holds a whole module.
const PAGE: usize = 256;
const BLOB_PAGE: usize = 8;

/// When and how eagerly the collector runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcOptions {
    /// Time between passes (a deleted tag also starts one).
    pub interval: Duration,
    /// How long after its last push a blob is safe from collection; also how
    /// long an unfinished upload may take before its chunks are reclaimed.
    pub grace: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5 * 60),
            grace: Duration::from_secs(15 * 60),
        }
    }
}

/// What one pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Digests of the blobs deleted.
    pub blobs_removed: Vec<String>,
    /// Their total size.
    pub bytes_freed: u64,
    /// Unfinished or half-deleted uploads whose chunks were deleted.
    pub uploads_removed: usize,
    /// Blobs kept because something references them.
    pub referenced: usize,
}

fn trigger_signal() -> &'static tokio::sync::Notify {
    static SIGNAL: std::sync::OnceLock<tokio::sync::Notify> = std::sync::OnceLock::new();
    SIGNAL.get_or_init(tokio::sync::Notify::new)
}

/// Asks running collectors for a pass now (after a tag was deleted).
pub(crate) fn trigger() {
    trigger_signal().notify_waiters();
}

/// Runs a pass every `options.interval` (and when a tag is deleted) until
/// `cancel` fires.
pub fn spawn_collector(
    store: Arc<dyn Store>,
    options: GcOptions,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    let interval = options.interval.max(Duration::from_secs(1));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
                _ = trigger_signal().notified() => {}
            }
            let pass = collect_garbage(store.as_ref(), options.grace, jiff::Timestamp::now());
            // Every step is cancel-safe: an interrupted pass is finished by the next.
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = pass => r,
            };
            match result {
                Ok(r) if r.blobs_removed.is_empty() && r.uploads_removed == 0 => {
                    tracing::debug!(
                        referenced = r.referenced,
                        "module store: nothing to collect"
                    );
                }
                Ok(r) => tracing::info!(
                    blobs = r.blobs_removed.len(),
                    bytes = r.bytes_freed,
                    uploads = r.uploads_removed,
                    "module store: unreferenced modules removed"
                ),
                Err(e) => tracing::warn!(error = %e, "module store garbage collection failed"),
            }
        }
    })
}

/// Whether the RFC 3339 time `t` is at least `grace` before `now`. An
/// unreadable time is never old: keeping a blob is always safe.
fn older_than(t: &str, grace: Duration, now: jiff::Timestamp) -> bool {
    t.parse::<jiff::Timestamp>()
        .ok()
        .and_then(|t| Duration::try_from(now.duration_since(t)).ok())
        .is_some_and(|age| age >= grace)
}

/// Adds every `sha256:<64 lower-case hex>` in `bytes` to `out`.
pub(crate) fn digests_in(bytes: &[u8], out: &mut HashSet<String>) {
    const PREFIX: &[u8] = b"sha256:";
    let mut from = 0;
    while let Some(pos) = bytes[from..]
        .windows(PREFIX.len())
        .position(|w| w == PREFIX)
    {
        let start = from + pos;
        let end = start + PREFIX.len() + 64;
        if let Some(candidate) = bytes.get(start..end)
            && let Ok(s) = std::str::from_utf8(candidate)
            && wasm::is_valid_digest(s)
        {
            out.insert(s.to_string());
        }
        from = start + PREFIX.len();
    }
}

/// Calls `f` on every key under `prefix`, `page` keys per request.
async fn for_each(
    store: &dyn Store,
    prefix: &str,
    page: usize,
    mut f: impl FnMut(KeyValue),
) -> Result<(), storage::Error> {
    let mut after: Option<String> = None;
    loop {
        let r = store.range(prefix, after.as_deref(), page).await?;
        let more = r.more;
        after = r.kvs.last().map(|kv| kv.key.clone());
        for kv in r.kvs {
            f(kv);
        }
        if !more || after.is_none() {
            return Ok(());
        }
    }
}

/// Every digest a tag or a stored object of [`REFERRERS`] names.
async fn references(store: &dyn Store) -> Result<HashSet<String>, storage::Error> {
    let mut refs = HashSet::new();
    let mut prefixes = vec![TAGS.to_string()];
    prefixes.extend(
        wasmkube_api::resources::all()
            .iter()
            .filter(|r| REFERRERS.contains(&(r.group, r.plural)))
            .map(|r| r.key_prefix()),
    );
    for prefix in prefixes {
        for_each(store, &prefix, PAGE, |kv| digests_in(&kv.value, &mut refs)).await?;
    }
    Ok(refs)
}

/// A blob old enough to collect, unless something references it.
struct Candidate {
    digest: String,
    mod_revision: i64,
    size: u64,
    /// The chunks to delete after the manifest (none for a whole blob).
    chunks: Option<UploadRecord>,
}

/// One pass: deletes the blobs nothing references whose last push is at
/// least `grace` before `now`, and the chunks of uploads that stopped (or
/// deletions that were interrupted) at least `grace` ago.
pub async fn collect_garbage(
    store: &dyn Store,
    grace: Duration,
    now: jiff::Timestamp,
) -> Result<GcReport, BlobError> {
    let mut report = GcReport::default();
    // Candidates are read before the references, so a reference written
    // before the scan is always seen.
    let mut candidates = Vec::new();
    for_each(store, BLOBS, BLOB_PAGE, |kv| {
        let Some(digest) = kv
            .key
            .strip_prefix(BLOBS)
            .filter(|d| wasm::is_valid_digest(d))
        else {
            return;
        };
        let (chunks, size) = match blobs::decode(digest, &kv.value) {
            Ok(StoredBlob::Chunked(m)) => {
                if !older_than(&m.pushed, grace, now) {
                    return;
                }
                let record = UploadRecord {
                    upload: m.upload,
                    digest: digest.to_string(),
                    chunks: m.chunks.len() as u64,
                    state: UploadState::Deleting,
                    updated: rfc3339(now),
                };
                (Some(record), m.size)
            }
            // Written before chunking, by pushes long finished.
            Ok(StoredBlob::Whole(bytes)) => (None, bytes.len() as u64),
            Err(e) => {
                tracing::warn!(error = %e, "module store: skipping a damaged blob record");
                return;
            }
        };
        candidates.push(Candidate {
            digest: digest.to_string(),
            mod_revision: kv.mod_revision,
            size,
            chunks,
        });
    })
    .await?;

    if !candidates.is_empty() {
        let refs = references(store).await?;
        for c in candidates {
            if refs.contains(&c.digest) {
                report.referenced += 1;
                continue;
            }
            match remove_blob(store, &c).await {
                Ok(true) => {
                    tracing::info!(digest = %c.digest, size = c.size, "module store: removed an unreferenced module");
                    report.bytes_freed += c.size;
                    report.blobs_removed.push(c.digest);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(digest = %c.digest, error = %e, "module store: removing a module failed");
                }
            }
        }
    }

    let mut records = Vec::new();
    for_each(store, UPLOADS, PAGE, |kv| {
        match serde_json::from_slice::<UploadRecord>(&kv.value) {
            Ok(r) => records.push((r, kv.mod_revision)),
            Err(e) => {
                tracing::warn!(key = %kv.key, error = %e, "module store: skipping a damaged upload record");
            }
        }
    })
    .await?;
    for (record, rev) in records {
        if !older_than(&record.updated, grace, now) {
            continue;
        }
        match finish_upload(store, &record, rev).await {
            Ok(true) => report.uploads_removed += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(upload = %record.upload, error = %e, "module store: reclaiming an upload failed");
            }
        }
    }
    Ok(report)
}

/// Deletes one blob if its record is still the one read; `false` when it
/// changed (a push reused it) or is gone (another collector was first).
async fn remove_blob(store: &dyn Store, c: &Candidate) -> Result<bool, BlobError> {
    let key = blob_key(&c.digest);
    let precondition = Precondition::ModRevision(c.mod_revision);
    let Some(record) = &c.chunks else {
        return match store.delete(&key, precondition).await {
            Ok(_) => Ok(true),
            Err(storage::Error::Conflict { .. } | storage::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        };
    };
    // Name the chunks before unlinking them, so a crash cannot orphan them.
    // A record already there means another collector is at it (or one
    // died at it, which the uploads pass settles): leave the blob for now.
    let json = Bytes::from(serde_json::to_vec(record)?);
    let record_key = upload_key(&record.upload);
    let record_rev = match store
        .put(&record_key, json, Precondition::MustNotExist)
        .await
    {
        Ok(kv) => kv.mod_revision,
        Err(storage::Error::AlreadyExists { .. }) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    match store.delete(&key, precondition).await {
        Ok(_) => {
            blobs::discard(store, record, Some(record_rev)).await?;
            Ok(true)
        }
        Err(e) => {
            // The blob stays: its chunks are live, so the record must go.
            match store
                .delete(&record_key, Precondition::ModRevision(record_rev))
                .await
            {
                Ok(_) | Err(storage::Error::NotFound { .. } | storage::Error::Conflict { .. }) => {}
                Err(e) => {
                    tracing::warn!(upload = %record.upload, error = %e, "module store: record of live chunks not removed")
                }
            }
            match e {
                storage::Error::Conflict { .. } | storage::Error::NotFound { .. } => Ok(false),
                e => Err(e.into()),
            }
        }
    }
}

/// Settles an old upload record: dropped alone when a manifest uses its
/// chunks, else its chunks are deleted. `true` when chunks were deleted.
async fn finish_upload(
    store: &dyn Store,
    record: &UploadRecord,
    rev: i64,
) -> Result<bool, BlobError> {
    let live = match blobs::stat(store, &record.digest).await {
        Ok(Some(StoredBlob::Chunked(m))) => m.upload == record.upload,
        Ok(_) => false,
        // A damaged manifest cannot name these chunks.
        Err(BlobError::Corrupt { .. }) => false,
        Err(e) => return Err(e),
    };
    if live {
        match store
            .delete(&upload_key(&record.upload), Precondition::ModRevision(rev))
            .await
        {
            Ok(_) | Err(storage::Error::NotFound { .. } | storage::Error::Conflict { .. }) => {
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
    }
    match blobs::discard(store, record, Some(rev)).await {
        Ok(()) => Ok(true),
        // A push refreshed it (it is alive after all) or another collector took it.
        Err(BlobError::Storage(
            storage::Error::Conflict { .. } | storage::Error::NotFound { .. },
        )) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_found_anywhere_in_the_bytes() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let text = format!(
            r#"{{"image":"x@{a}","imageID":"wasmkube://{b}","bad":"sha256:{}","short":"sha256:abc","upper":"sha256:{}"}}"#,
            "g".repeat(64),
            "A".repeat(64)
        );
        let mut out = HashSet::new();
        digests_in(text.as_bytes(), &mut out);
        assert_eq!(out, HashSet::from([a, b]));
        let mut none = HashSet::new();
        digests_in(b"sha256:", &mut none);
        digests_in(b"", &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn ages_compare_against_the_grace_period() {
        let now: jiff::Timestamp = "2025-01-01T01:00:00Z".parse().unwrap_or_default();
        let grace = Duration::from_secs(15 * 60);
        assert!(older_than("2025-01-01T00:00:00Z", grace, now));
        assert!(older_than("2025-01-01T00:45:00Z", grace, now));
        assert!(!older_than("2025-01-01T00:50:00Z", grace, now));
        assert!(!older_than("2025-01-01T02:00:00Z", grace, now));
        assert!(!older_than("yesterday", grace, now));
    }
}
