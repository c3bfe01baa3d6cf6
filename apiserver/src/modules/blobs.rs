//! Module bytes in the Store, split into chunks small enough for etcd.
//!
//! etcd refuses requests over `--max-request-bytes` (1.5 MiB by default,
//! Debian's etcd 3.4 included), so a module is never one value. Keys:
//!
//! - `/wasmkube/chunks/<upload>/<n>`: chunk `n` (zero-padded) of one upload,
//!   at most [`CHUNK_BYTES`];
//! - `/wasmkube/blobs/sha256:<hex>`: the blob's [`BlobManifest`] (size, the
//!   upload holding its chunks, each chunk's sha256), written only after
//!   every chunk is in place, so a reader never sees half a blob;
//! - `/wasmkube/uploads/<upload>`: an [`UploadRecord`] naming the chunks of
//!   an upload that is not (or no longer) behind a manifest: written before
//!   the first chunk and removed once the manifest is written, or written by
//!   the garbage collector before it deletes a manifest. Whatever crashes half
//!   way, the record says which chunks to delete.
//!
//! Chunks live under a fresh upload id rather than under the digest, so a
//! push racing with the collection of the same digest never writes into
//! chunks being deleted: the collector deletes only the chunks of the upload
//! it unlinked.
//!
//! Blobs written before chunking (`/wasmkube/blobs/sha256:<hex>` holding the
//! module itself, from embedded stores of earlier releases) are still served
//! as they are; pushing the same bytes again rewrites them chunked, and the
//! collector removes them like any other blob once nothing references them.
//! Rewriting them all at startup would buy nothing but a burst of writes.

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::storage::{self, Precondition, Store};

/// Largest chunk: with its key and the transaction around it, well below
/// etcd's default 1.5 MiB request limit.
pub const CHUNK_BYTES: usize = 1024 * 1024;

pub(crate) const BLOBS: &str = "/wasmkube/blobs/";
pub(crate) const CHUNKS: &str = "/wasmkube/chunks/";
pub(crate) const UPLOADS: &str = "/wasmkube/uploads/";

/// The first bytes of every wasm binary: how a blob stored whole (before
/// chunking) is told from a manifest, which is JSON.
const WASM_MAGIC: &[u8] = b"\0asm";

/// Times are stored as RFC 3339 in UTC, to the second.
pub(crate) fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// What went wrong storing or reading a blob.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error(transparent)]
    Storage(#[from] storage::Error),
    /// The record at a blob key is neither a manifest nor a module.
    #[error("the record of blob {digest} is corrupt: {why}")]
    Corrupt { digest: String, why: String },
    /// A chunk is missing or does not hash to what the manifest says.
    #[error("chunk {index} of blob {digest}: {why}")]
    BadChunk {
        digest: String,
        index: usize,
        why: String,
    },
    /// The garbage collector gave up on this upload (it took longer than
    /// the grace period) and may have deleted some of its chunks.
    #[error("the upload of blob {digest} was abandoned by the garbage collector; push again")]
    Abandoned { digest: String },
    /// Pushes of the same bytes kept overtaking each other.
    #[error("blob {digest} kept changing while it was being stored; push again")]
    Contended { digest: String },
    #[error("encoding a record: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("hashing a chunk: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The record at `/wasmkube/blobs/sha256:<hex>` of a chunked blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobManifest {
    /// `sha256:<hex>` of the whole module.
    pub digest: String,
    /// Size of the module in bytes.
    pub size: u64,
    /// Size of every chunk but the last.
    pub chunk_size: u64,
    /// The upload whose chunks hold the bytes.
    pub upload: String,
    /// Lower-case hex sha256 of each chunk, in order.
    pub chunks: Vec<String>,
    /// RFC 3339 time of the last push that stored or reused these bytes:
    /// the collector's grace period runs from it, so a push that found the
    /// blob present and is about to write its tag never loses it.
    pub pushed: String,
}

/// Where an [`UploadRecord`]'s chunks stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum UploadState {
    /// A push is writing the chunks.
    Uploading,
    /// The chunks are to be deleted.
    Deleting,
}

/// The record at `/wasmkube/uploads/<upload>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadRecord {
    pub upload: String,
    /// The digest the chunks add up to.
    pub digest: String,
    /// How many chunks the upload has (or may have, if it stopped early).
    pub chunks: u64,
    pub state: UploadState,
    /// RFC 3339 time of the last change; the collector leaves records
    /// younger than its grace period alone.
    pub updated: String,
}

/// What a blob key holds.
#[derive(Debug, Clone)]
pub enum StoredBlob {
    Chunked(BlobManifest),
    /// The whole module in one value (written before chunking existed).
    Whole(Bytes),
}

impl StoredBlob {
    pub fn size(&self) -> u64 {
        match self {
            StoredBlob::Chunked(m) => m.size,
            StoredBlob::Whole(b) => b.len() as u64,
        }
    }
}

pub(crate) fn blob_key(digest: &str) -> String {
    format!("{BLOBS}{digest}")
}

pub(crate) fn chunk_key(upload: &str, index: u64) -> String {
    format!("{CHUNKS}{upload}/{index:06}")
}

pub(crate) fn upload_key(upload: &str) -> String {
    format!("{UPLOADS}{upload}")
}

/// Reads the value at a blob key.
pub fn decode(digest: &str, value: &Bytes) -> Result<StoredBlob, BlobError> {
    if value.starts_with(WASM_MAGIC) {
        return Ok(StoredBlob::Whole(value.clone()));
    }
    let m: BlobManifest = serde_json::from_slice(value).map_err(|e| BlobError::Corrupt {
        digest: digest.to_string(),
        why: e.to_string(),
    })?;
    if m.digest != digest {
        return Err(BlobError::Corrupt {
            digest: digest.to_string(),
            why: format!("its manifest names {}", m.digest),
        });
    }
    m.into_checked().map(StoredBlob::Chunked)
}

impl BlobManifest {
    /// A manifest whose chunk list cannot add up to its size is corrupt.
    fn into_checked(self) -> Result<BlobManifest, BlobError> {
        let n = self.chunks.len() as u64;
        let cs = self.chunk_size;
        let fits = cs > 0
            && cs <= CHUNK_BYTES as u64 * 4
            && n == self.size.div_ceil(cs)
            && self.chunks.iter().all(|c| c.len() == 64);
        if fits {
            Ok(self)
        } else {
            Err(BlobError::Corrupt {
                digest: self.digest,
                why: format!("{n} chunks of {cs} bytes cannot hold {} bytes", self.size),
            })
        }
    }
}

/// Reads the blob record of `digest`, `None` when there is none.
pub async fn stat(store: &dyn Store, digest: &str) -> Result<Option<StoredBlob>, BlobError> {
    match store.get(&blob_key(digest)).await? {
        Some(kv) => Ok(Some(decode(digest, &kv.value)?)),
        None => Ok(None),
    }
}

/// Stores `bytes` (which hash to `digest`) unless they are stored already;
/// either way the blob's grace period restarts at `now`, so the caller can
/// write the tag that references it before any collector could remove it.
pub async fn put_blob(
    store: &dyn Store,
    digest: &str,
    bytes: Bytes,
    now: jiff::Timestamp,
) -> Result<(), BlobError> {
    let key = blob_key(digest);
    // Our own chunks, once written: kept across retries of the loop below.
    let mut ours: Option<Uploaded> = None;
    let outcome = async {
        // Each round either finishes or lost a race against another push or a
        // collector, which changes the record: a few rounds always suffice
        // unless something is badly wrong.
        for _ in 0..8 {
            let current = store.get(&key).await?;
            let precondition = match &current {
                Some(kv) => match decode(digest, &kv.value) {
                    Ok(StoredBlob::Chunked(mut m)) => {
                        m.pushed = rfc3339(now);
                        let json = Bytes::from(serde_json::to_vec(&m)?);
                        match store
                            .put(&key, json, Precondition::ModRevision(kv.mod_revision))
                            .await
                        {
                            Ok(_) => return Ok(false),
                            Err(
                                storage::Error::Conflict { .. } | storage::Error::NotFound { .. },
                            ) => {
                                continue;
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    // A whole-value blob (or a damaged record) is replaced by
                    // a chunked one, unless it changes meanwhile.
                    Ok(StoredBlob::Whole(_)) | Err(_) => Precondition::ModRevision(kv.mod_revision),
                },
                None => Precondition::MustNotExist,
            };
            if ours.is_none() {
                ours = Some(upload_chunks(store, digest, &bytes, now).await?);
            }
            let Some(up) = ours.as_mut() else {
                continue;
            };
            up.confirm(store, digest, now).await?;
            let json = Bytes::from(serde_json::to_vec(&up.manifest(now))?);
            match store.put(&key, json, precondition).await {
                Ok(_) => {
                    // The manifest now names the chunks; a record left behind
                    // if this fails is recognised as live and dropped later.
                    if let Err(e) = store
                        .delete(
                            &upload_key(&up.id),
                            Precondition::ModRevision(up.record_rev),
                        )
                        .await
                    {
                        tracing::debug!(upload = %up.id, error = %e, "upload record not removed");
                    }
                    return Ok(true);
                }
                Err(
                    storage::Error::AlreadyExists { .. }
                    | storage::Error::Conflict { .. }
                    | storage::Error::NotFound { .. },
                ) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(BlobError::Contended {
            digest: digest.to_string(),
        })
    }
    .await;
    // Our chunks are garbage unless our manifest was the one written.
    let used_ours = matches!(outcome, Ok(true));
    if let Some(up) = ours
        && !used_ours
    {
        let record = up.record(UploadState::Deleting, now);
        if let Err(e) = discard(store, &record, Some(up.record_rev)).await {
            // The collector finishes the job once the grace period is over.
            tracing::warn!(upload = %up.id, error = %e, "unused upload not yet removed");
        }
    }
    outcome.map(|_| ())
}

/// An upload whose chunks are all written.
struct Uploaded {
    id: String,
    digest: String,
    size: u64,
    chunks: Vec<String>,
    record_rev: i64,
}

impl Uploaded {
    fn record(&self, state: UploadState, now: jiff::Timestamp) -> UploadRecord {
        UploadRecord {
            upload: self.id.clone(),
            digest: self.digest.clone(),
            chunks: self.chunks.len() as u64,
            state,
            updated: rfc3339(now),
        }
    }

    fn manifest(&self, now: jiff::Timestamp) -> BlobManifest {
        BlobManifest {
            digest: self.digest.clone(),
            size: self.size,
            chunk_size: CHUNK_BYTES as u64,
            upload: self.id.clone(),
            chunks: self.chunks.clone(),
            pushed: rfc3339(now),
        }
    }

    /// Refreshes the upload record just before the manifest is written: it
    /// fails when a collector took the upload over (its chunks may be gone),
    /// and otherwise restarts the grace period, so no collector takes it over
    /// between this and the manifest.
    async fn confirm(
        &mut self,
        store: &dyn Store,
        digest: &str,
        now: jiff::Timestamp,
    ) -> Result<(), BlobError> {
        let record = self.record(UploadState::Uploading, now);
        let json = Bytes::from(serde_json::to_vec(&record)?);
        match store
            .put(
                &upload_key(&self.id),
                json,
                Precondition::ModRevision(self.record_rev),
            )
            .await
        {
            Ok(kv) => {
                self.record_rev = kv.mod_revision;
                Ok(())
            }
            Err(storage::Error::Conflict { .. } | storage::Error::NotFound { .. }) => {
                Err(BlobError::Abandoned {
                    digest: digest.to_string(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Writes the upload record, then every chunk. On failure, removes what it
/// wrote (best effort; the collector handles the rest).
async fn upload_chunks(
    store: &dyn Store,
    digest: &str,
    bytes: &Bytes,
    now: jiff::Timestamp,
) -> Result<Uploaded, BlobError> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let count = bytes.len().div_ceil(CHUNK_BYTES) as u64;
    let record = UploadRecord {
        upload: id.clone(),
        digest: digest.to_string(),
        chunks: count,
        state: UploadState::Uploading,
        updated: rfc3339(now),
    };
    let json = Bytes::from(serde_json::to_vec(&record)?);
    let record_rev = store
        .put(&upload_key(&id), json, Precondition::MustNotExist)
        .await?
        .mod_revision;
    let written = async {
        let mut hashes = Vec::with_capacity(count as usize);
        for (i, start) in (0..bytes.len()).step_by(CHUNK_BYTES).enumerate() {
            let chunk = bytes.slice(start..bytes.len().min(start + CHUNK_BYTES));
            hashes.push(sha256_hex(chunk.clone()).await?);
            store
                .put(&chunk_key(&id, i as u64), chunk, Precondition::None)
                .await?;
        }
        Ok::<_, BlobError>(hashes)
    }
    .await;
    match written {
        Ok(chunks) => Ok(Uploaded {
            id,
            digest: digest.to_string(),
            size: bytes.len() as u64,
            chunks,
            record_rev,
        }),
        Err(e) => {
            let mut record = record;
            record.state = UploadState::Deleting;
            if let Err(e) = discard(store, &record, Some(record_rev)).await {
                tracing::warn!(upload = %id, error = %e, "failed upload not yet removed");
            }
            Err(e)
        }
    }
}

/// Hashing a megabyte is CPU work: keep it off the async workers.
async fn sha256_hex(bytes: Bytes) -> Result<String, BlobError> {
    Ok(tokio::task::spawn_blocking(move || hex::encode(Sha256::digest(&bytes))).await?)
}

/// Deletes the chunks of `record`'s upload and then the record. The record
/// is first marked `Deleting` (compare-and-swap on `rev` when given, which
/// also keeps a push that is still confirming the upload from using it);
/// a crash half way leaves a `Deleting` record the collector finishes.
pub(crate) async fn discard(
    store: &dyn Store,
    record: &UploadRecord,
    rev: Option<i64>,
) -> Result<(), BlobError> {
    let key = upload_key(&record.upload);
    let mut marked = record.clone();
    marked.state = UploadState::Deleting;
    let precondition = rev.map_or(Precondition::None, Precondition::ModRevision);
    let json = Bytes::from(serde_json::to_vec(&marked)?);
    store.put(&key, json, precondition).await?;
    for i in 0..record.chunks {
        match store
            .delete(&chunk_key(&record.upload, i), Precondition::None)
            .await
        {
            Ok(_) | Err(storage::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    match store.delete(&key, Precondition::None).await {
        Ok(_) | Err(storage::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// An opened blob: its size and a stream of its bytes.
pub struct BlobReader {
    pub size: u64,
    source: Source,
}

enum Source {
    Whole(Bytes),
    Chunked {
        store: Arc<dyn Store>,
        manifest: BlobManifest,
    },
}

/// Opens the blob of `digest` for reading, `None` when there is none.
pub async fn open(store: Arc<dyn Store>, digest: &str) -> Result<Option<BlobReader>, BlobError> {
    Ok(stat(store.as_ref(), digest).await?.map(|b| match b {
        StoredBlob::Whole(bytes) => BlobReader {
            size: bytes.len() as u64,
            source: Source::Whole(bytes),
        },
        StoredBlob::Chunked(manifest) => BlobReader {
            size: manifest.size,
            source: Source::Chunked { store, manifest },
        },
    }))
}

impl BlobReader {
    /// The bytes, one chunk at a time: a reader holds one chunk in memory,
    /// whatever the module's size. Each chunk is checked against the
    /// manifest before it is sent; a missing or damaged chunk ends the
    /// stream with an error (the client sees a truncated body).
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, BlobError>> + Send + 'static {
        let (store, manifest, whole) = match self.source {
            Source::Whole(bytes) => (None, None, Some(bytes)),
            Source::Chunked { store, manifest } => (Some(store), Some(manifest), None),
        };
        futures::stream::try_unfold(
            (store, manifest, whole, 0usize, 0u64),
            |(store, manifest, whole, index, sent)| async move {
                if let Some(bytes) = whole {
                    return Ok(Some((bytes, (None, None, None, index, sent))));
                }
                let (Some(store), Some(m)) = (store, manifest) else {
                    return Ok(None);
                };
                let Some(expected) = m.chunks.get(index) else {
                    return Ok(None);
                };
                let bad = |why: String| BlobError::BadChunk {
                    digest: m.digest.clone(),
                    index,
                    why,
                };
                let kv = store
                    .get(&chunk_key(&m.upload, index as u64))
                    .await?
                    .ok_or_else(|| bad("missing".to_string()))?;
                let len = kv.value.len() as u64;
                let is_last = index + 1 == m.chunks.len();
                let want = if is_last {
                    m.size.saturating_sub(sent)
                } else {
                    m.chunk_size
                };
                if len != want {
                    return Err(bad(format!("{len} bytes where {want} were expected")));
                }
                let got = sha256_hex(kv.value.clone()).await?;
                if &got != expected {
                    return Err(bad(format!("hashes to {got}, not {expected}")));
                }
                Ok(Some((
                    kv.value,
                    (Some(store), Some(m), None, index + 1, sent + len),
                )))
            },
        )
    }

    /// The whole blob in memory (tests and small blobs).
    pub async fn read_all(self) -> Result<Vec<u8>, BlobError> {
        use futures::TryStreamExt;
        let cap = usize::try_from(self.size)
            .unwrap_or(0)
            .min(wasmkube_api::wasm::MAX_MODULE_BYTES);
        let mut out = Vec::with_capacity(cap);
        let mut stream = std::pin::pin!(self.into_stream());
        while let Some(chunk) = stream.try_next().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}
