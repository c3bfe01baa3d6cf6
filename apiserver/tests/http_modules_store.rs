//! The module store's blobs in the Store, on both backends (etcd with its
//! default 1.5 MiB request limit): modules are chunked, read back whole and
//! checked, blobs from before chunking still read, and the garbage
//! collector removes exactly what nothing references.

mod http_modules_support;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use futures::StreamExt;
use http_modules_support::{Backend, TestStore, module_of, sha256};
use wasmkube_apiserver::modules::blobs::{
    self, BlobManifest, CHUNK_BYTES, StoredBlob, UploadRecord, UploadState,
};
use wasmkube_apiserver::modules::gc::collect_garbage;
use wasmkube_apiserver::storage::{Precondition, Store};

macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() -> anyhow::Result<()> {
                super::$name(super::Backend::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd() -> anyhow::Result<()> {
                super::$name(super::Backend::Etcd).await
            }
        }
    )+};
}

both_backends!(
    large_blobs_are_chunked_and_read_back,
    blobs_from_before_chunking_are_served_and_migrated,
    damaged_chunks_end_the_stream,
    gc_keeps_referenced_blobs_and_removes_the_rest,
    gc_finishes_interrupted_uploads_and_deletions,
    concurrent_collectors_agree,
);

fn at(t: &str) -> Result<jiff::Timestamp> {
    Ok(t.parse()?)
}

const GRACE: Duration = Duration::from_secs(15 * 60);

async fn keys(store: &dyn Store, prefix: &str) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        // One key per request: chunk values are a megabyte each.
        let r = store.range(prefix, after.as_deref(), 1).await?;
        let Some(last) = r.kvs.last() else {
            return Ok(out);
        };
        after = Some(last.key.clone());
        out.extend(r.kvs.iter().map(|kv| kv.key.clone()));
        if !r.more {
            return Ok(out);
        }
    }
}

async fn manifest(store: &dyn Store, digest: &str) -> Result<BlobManifest> {
    match blobs::stat(store, digest).await? {
        Some(StoredBlob::Chunked(m)) => Ok(m),
        Some(StoredBlob::Whole(_)) => bail!("{digest} is stored whole"),
        None => bail!("{digest} is not stored"),
    }
}

async fn read(store: &std::sync::Arc<dyn Store>, digest: &str) -> Result<Vec<u8>> {
    let reader = blobs::open(store.clone(), digest)
        .await?
        .with_context(|| format!("{digest} is not stored"))?;
    Ok(reader.read_all().await?)
}

async fn large_blobs_are_chunked_and_read_back(backend: Backend) -> Result<()> {
    let t = TestStore::open(backend).await?;
    let store = t.store.clone();
    // More than the default etcd request limit: a single value this big is refused.
    let module = module_of(3 * CHUNK_BYTES + 12345, 7);
    if backend == Backend::Etcd {
        let whole = store
            .put("/probe", Bytes::from(module.clone()), Precondition::None)
            .await;
        ensure!(
            whole.is_err(),
            "this etcd must refuse {} bytes in one request",
            module.len()
        );
    }
    let digest = sha256(&module);
    let t0 = at("2030-01-01T00:00:00Z")?;
    blobs::put_blob(store.as_ref(), &digest, Bytes::from(module.clone()), t0).await?;

    let m = manifest(store.as_ref(), &digest).await?;
    ensure!(
        m.size == module.len() as u64 && m.chunks.len() == 4,
        "{m:?}"
    );
    ensure!(m.pushed == "2030-01-01T00:00:00Z", "{m:?}");
    let chunk_keys = keys(store.as_ref(), "/wasmkube/chunks/").await?;
    ensure!(chunk_keys.len() == 4, "{chunk_keys:?}");
    ensure!(
        chunk_keys
            .iter()
            .all(|k| k.starts_with(&format!("/wasmkube/chunks/{}/", m.upload))),
        "{chunk_keys:?}"
    );
    // The upload record goes once the manifest is written.
    ensure!(keys(store.as_ref(), "/wasmkube/uploads/").await?.is_empty());

    // The stream hands out one chunk at a time, and they add up.
    let reader = blobs::open(store.clone(), &digest)
        .await?
        .context("blob is stored")?;
    ensure!(reader.size == module.len() as u64);
    let pieces: Vec<Bytes> = reader
        .into_stream()
        .map(|r| r.map_err(anyhow::Error::from))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    ensure!(pieces.len() == 4 && pieces.iter().all(|p| p.len() <= CHUNK_BYTES));
    ensure!(pieces.concat() == module, "the bytes read back differ");

    // The same bytes again: nothing new is written, the push time moves.
    let t1 = at("2030-01-01T01:00:00Z")?;
    blobs::put_blob(store.as_ref(), &digest, Bytes::from(module.clone()), t1).await?;
    let again = manifest(store.as_ref(), &digest).await?;
    ensure!(again.upload == m.upload && again.pushed == "2030-01-01T01:00:00Z");
    ensure!(keys(store.as_ref(), "/wasmkube/chunks/").await? == chunk_keys);

    // Sizes on a chunk boundary and tiny modules work too.
    for size in [CHUNK_BYTES, 8] {
        let module = if size == 8 {
            http_modules_support::EMPTY_MODULE.to_vec()
        } else {
            module_of(size, 3)
        };
        ensure!(module.len() == size, "{} bytes", module.len());
        let digest = sha256(&module);
        blobs::put_blob(store.as_ref(), &digest, Bytes::from(module.clone()), t0).await?;
        ensure!(manifest(store.as_ref(), &digest).await?.chunks.len() == 1);
        ensure!(read(&store, &digest).await? == module);
    }
    Ok(())
}

async fn blobs_from_before_chunking_are_served_and_migrated(backend: Backend) -> Result<()> {
    let t = TestStore::open(backend).await?;
    let store = t.store.clone();
    let module = module_of(200_000, 1);
    let digest = sha256(&module);
    // How earlier releases stored a blob: the module itself at the blob key.
    store
        .put(
            &format!("/wasmkube/blobs/{digest}"),
            Bytes::from(module.clone()),
            Precondition::MustNotExist,
        )
        .await?;
    let stat = blobs::stat(store.as_ref(), &digest).await?;
    ensure!(matches!(&stat, Some(StoredBlob::Whole(b)) if b.len() == module.len()));
    ensure!(read(&store, &digest).await? == module);

    // Pushing the same bytes rewrites it chunked.
    let t0 = at("2030-01-01T00:00:00Z")?;
    blobs::put_blob(store.as_ref(), &digest, Bytes::from(module.clone()), t0).await?;
    let m = manifest(store.as_ref(), &digest).await?;
    ensure!(m.size == module.len() as u64);
    ensure!(read(&store, &digest).await? == module);
    Ok(())
}

async fn damaged_chunks_end_the_stream(backend: Backend) -> Result<()> {
    let t = TestStore::open(backend).await?;
    let store = t.store.clone();
    let module = module_of(2 * CHUNK_BYTES + 10, 9);
    let digest = sha256(&module);
    blobs::put_blob(
        store.as_ref(),
        &digest,
        Bytes::from(module.clone()),
        at("2030-01-01T00:00:00Z")?,
    )
    .await?;
    let m = manifest(store.as_ref(), &digest).await?;
    let second = format!("/wasmkube/chunks/{}/000001", m.upload);
    let mut damaged = module[CHUNK_BYTES..2 * CHUNK_BYTES].to_vec();
    damaged[100] ^= 0xff;
    store
        .put(&second, Bytes::from(damaged), Precondition::MustExist)
        .await?;
    let err = read(&store, &digest)
        .await
        .err()
        .context("a damaged chunk must not be served")?;
    ensure!(format!("{err:#}").contains("chunk 1"), "{err:#}");

    store.delete(&second, Precondition::None).await?;
    let err = read(&store, &digest)
        .await
        .err()
        .context("a missing chunk must not be served")?;
    ensure!(format!("{err:#}").contains("missing"), "{err:#}");
    Ok(())
}

/// A tag record as the push handler writes it.
async fn tag(store: &dyn Store, name: &str, tag: &str, digest: &str) -> Result<()> {
    let info = serde_json::json!({
        "name": name, "tag": tag, "digest": digest, "size": 1, "created": "2030-01-01T00:00:00Z"
    });
    store
        .put(
            &format!("/wasmkube/modules/{name}/{tag}"),
            Bytes::from(serde_json::to_vec(&info)?),
            Precondition::None,
        )
        .await?;
    Ok(())
}

async fn put_object(store: &dyn Store, key: &str, obj: serde_json::Value) -> Result<()> {
    store
        .put(
            key,
            Bytes::from(serde_json::to_vec(&obj)?),
            Precondition::None,
        )
        .await?;
    Ok(())
}

fn template(image: &str) -> serde_json::Value {
    serde_json::json!({"spec": {"containers": [{"name": "c", "image": image}]}})
}

async fn gc_keeps_referenced_blobs_and_removes_the_rest(backend: Backend) -> Result<()> {
    let t = TestStore::open(backend).await?;
    let store = t.store.clone();
    let s = store.as_ref();
    let old = at("2030-01-01T00:00:00Z")?;
    let fresh = at("2030-01-01T00:55:00Z")?;
    let now = at("2030-01-01T01:00:00Z")?;

    // One module per way of being referenced, plus the unreferenced ones.
    let names = [
        "tagged",
        "pod",
        "podstatus",
        "deploy",
        "rs",
        "ds",
        "job",
        "fresh",
        "orphan",
    ];
    let mut digest = std::collections::BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let module = module_of(CHUNK_BYTES + 1000 * (i + 1), i as u8);
        let d = sha256(&module);
        let pushed = if *name == "fresh" { fresh } else { old };
        blobs::put_blob(s, &d, Bytes::from(module), pushed).await?;
        digest.insert(*name, d);
    }
    // A blob stored whole by an earlier release, referenced by nothing.
    let legacy = module_of(5000, 42);
    let legacy_digest = sha256(&legacy);
    store
        .put(
            &format!("/wasmkube/blobs/{legacy_digest}"),
            Bytes::from(legacy),
            Precondition::MustNotExist,
        )
        .await?;

    tag(s, "tagged", "v1", &digest["tagged"]).await?;
    put_object(
        s,
        "/registry/pods/default/p",
        serde_json::json!({"spec": {"containers": [{"name": "c", "image": format!("pod@{}", digest["pod"])}]}}),
    )
    .await?;
    put_object(
        s,
        "/registry/pods/other/q",
        serde_json::json!({"spec": {"containers": [{"name": "c", "image": "podstatus:v9"}]},
            "status": {"containerStatuses": [{"imageID": format!("wasmkube://{}", digest["podstatus"])}]}}),
    )
    .await?;
    for (key, name) in [
        ("/registry/apps/deployments/default/d", "deploy"),
        ("/registry/apps/replicasets/default/r", "rs"),
        ("/registry/apps/daemonsets/default/ds", "ds"),
    ] {
        put_object(
            s,
            key,
            serde_json::json!({"spec": {"template": template(&format!("{name}@{}", digest[name]))}}),
        )
        .await?;
    }
    put_object(
        s,
        "/registry/batch/jobs/default/j",
        serde_json::json!({"spec": {"template": {"spec": {"initContainers": [{"name": "i", "image": format!("job@{}", digest["job"])}]}}}}),
    )
    .await?;
    // A digest in an unrelated resource keeps nothing alive.
    put_object(
        s,
        "/registry/configmaps/default/cm",
        serde_json::json!({"data": {"x": digest["orphan"]}}),
    )
    .await?;

    let orphan_upload = manifest(s, &digest["orphan"]).await?.upload;
    let report = collect_garbage(s, GRACE, now).await?;
    let mut removed = report.blobs_removed.clone();
    removed.sort();
    let mut expected = vec![digest["orphan"].clone(), legacy_digest.clone()];
    expected.sort();
    ensure!(
        removed == expected,
        "removed {removed:?}, expected {expected:?}"
    );
    ensure!(report.referenced == 7, "{report:?}");
    ensure!(blobs::stat(s, &digest["orphan"]).await?.is_none());
    ensure!(blobs::stat(s, &legacy_digest).await?.is_none());
    ensure!(
        keys(s, &format!("/wasmkube/chunks/{orphan_upload}/"))
            .await?
            .is_empty(),
        "the orphan's chunks are gone"
    );
    ensure!(keys(s, "/wasmkube/uploads/").await?.is_empty());
    for name in names.iter().filter(|n| **n != "orphan") {
        let d = &digest[name];
        let bytes = read(&store, d).await?;
        ensure!(sha256(&bytes) == *d, "{name} still reads whole");
    }

    // Untagging, deleting the pod and re-pushing: what is no longer
    // referenced goes, a fresh push is safe until its grace period is over.
    store
        .delete("/wasmkube/modules/tagged/v1", Precondition::None)
        .await?;
    store
        .delete("/registry/pods/default/p", Precondition::None)
        .await?;
    let tagged_module = read(&store, &digest["tagged"]).await?;
    blobs::put_blob(s, &digest["tagged"], Bytes::from(tagged_module), now).await?;
    let report = collect_garbage(s, GRACE, now).await?;
    ensure!(
        report.blobs_removed == vec![digest["pod"].clone()],
        "{report:?}"
    );
    let later = at("2030-01-01T01:20:00Z")?;
    let report = collect_garbage(s, GRACE, later).await?;
    let mut removed = report.blobs_removed.clone();
    removed.sort();
    let mut expected = vec![digest["tagged"].clone(), digest["fresh"].clone()];
    expected.sort();
    ensure!(removed == expected, "{report:?}");
    // Only the referenced chunks are left.
    let left = keys(s, "/wasmkube/chunks/").await?;
    ensure!(left.len() == 2 * 5, "{left:?}");
    Ok(())
}

async fn gc_finishes_interrupted_uploads_and_deletions(backend: Backend) -> Result<()> {
    let t = TestStore::open(backend).await?;
    let store = t.store.clone();
    let s = store.as_ref();
    let old = at("2030-01-01T00:00:00Z")?;
    let now = at("2030-01-01T01:00:00Z")?;

    // A push that died after two of its three chunks.
    let abandoned = UploadRecord {
        upload: "deadbeef".into(),
        digest: format!("sha256:{}", "1".repeat(64)),
        chunks: 3,
        state: UploadState::Uploading,
        updated: "2030-01-01T00:00:00Z".into(),
    };
    put_object(
        s,
        "/wasmkube/uploads/deadbeef",
        serde_json::to_value(&abandoned)?,
    )
    .await?;
    for i in 0..2 {
        store
            .put(
                &format!("/wasmkube/chunks/deadbeef/{i:06}"),
                Bytes::from(vec![1u8; 1000]),
                Precondition::None,
            )
            .await?;
    }
    // A push still running (its record is recent).
    let running = UploadRecord {
        upload: "cafe".into(),
        updated: "2030-01-01T00:59:00Z".into(),
        ..abandoned.clone()
    };
    put_object(s, "/wasmkube/uploads/cafe", serde_json::to_value(&running)?).await?;
    store
        .put(
            "/wasmkube/chunks/cafe/000000",
            Bytes::from(vec![2u8; 1000]),
            Precondition::None,
        )
        .await?;

    // A tagged blob whose push died after writing the manifest, and a
    // record a collector left when it died before deleting the manifest:
    // both name live chunks.
    let module = module_of(CHUNK_BYTES + 5, 5);
    let d = sha256(&module);
    blobs::put_blob(s, &d, Bytes::from(module.clone()), old).await?;
    tag(s, "live", "v1", &d).await?;
    let upload = manifest(s, &d).await?.upload;
    for state in [UploadState::Uploading, UploadState::Deleting] {
        let stale = UploadRecord {
            upload: upload.clone(),
            digest: d.clone(),
            chunks: 2,
            state,
            updated: "2030-01-01T00:00:00Z".into(),
        };
        put_object(
            s,
            &format!("/wasmkube/uploads/{upload}"),
            serde_json::to_value(&stale)?,
        )
        .await?;
        let report = collect_garbage(s, GRACE, now).await?;
        ensure!(report.blobs_removed.is_empty(), "{report:?}");
        ensure!(read(&store, &d).await? == module, "{state:?}: blob intact");
        ensure!(
            !keys(s, "/wasmkube/uploads/")
                .await?
                .contains(&format!("/wasmkube/uploads/{upload}")),
            "{state:?}: the stale record is dropped"
        );
    }
    let uploads = keys(s, "/wasmkube/uploads/").await?;
    ensure!(
        uploads == BTreeSet::from(["/wasmkube/uploads/cafe".to_string()]),
        "{uploads:?}"
    );
    let chunks = keys(s, "/wasmkube/chunks/").await?;
    ensure!(
        !chunks.iter().any(|k| k.contains("/deadbeef/")),
        "the abandoned upload's chunks are gone: {chunks:?}"
    );
    ensure!(
        chunks.contains("/wasmkube/chunks/cafe/000000"),
        "{chunks:?}"
    );
    Ok(())
}

async fn concurrent_collectors_agree(backend: Backend) -> Result<()> {
    let t = TestStore::open(backend).await?;
    let store = t.store.clone();
    let s = store.as_ref();
    let old = at("2030-01-01T00:00:00Z")?;
    let now = at("2030-01-01T01:00:00Z")?;
    let mut kept = Vec::new();
    let mut doomed = BTreeSet::new();
    for i in 0..6u8 {
        let module = module_of(CHUNK_BYTES / 2 + 3000 * usize::from(i), i);
        let d = sha256(&module);
        blobs::put_blob(s, &d, Bytes::from(module.clone()), old).await?;
        if i % 2 == 0 {
            tag(s, "keep", &format!("v{i}"), &d).await?;
            kept.push((d, module));
        } else {
            doomed.insert(d);
        }
    }
    // Two API servers' collectors at once: each blob is removed once, and
    // neither fails.
    let (a, b) = tokio::join!(
        collect_garbage(s, GRACE, now),
        collect_garbage(s, GRACE, now)
    );
    let (a, b) = (a?, b?);
    let mut removed: Vec<String> = a
        .blobs_removed
        .iter()
        .chain(&b.blobs_removed)
        .cloned()
        .collect();
    removed.sort();
    let expected: Vec<String> = doomed.iter().cloned().collect();
    ensure!(removed == expected, "a: {a:?}, b: {b:?}");
    for (d, module) in &kept {
        ensure!(read(&store, d).await? == *module);
    }
    ensure!(keys(s, "/wasmkube/uploads/").await?.is_empty());
    ensure!(keys(s, "/wasmkube/chunks/").await?.len() == kept.len());
    Ok(())
}
