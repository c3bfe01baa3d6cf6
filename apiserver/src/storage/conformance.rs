//! The store conformance suite: etcd v3 semantics written once, run against
//! every backend unchanged.
//!
//! Each property is a `pub async fn` taking a fresh, empty store (nothing
//! else writing to it; revisions are checked relative to where the store
//! starts, so a backend whose first revision is not 0 passes too). Failures
//! panic with a message naming the property. [`ALL`] lists every property so a
//! backend's test file can check it runs them all, and [`run_all`] runs them
//! in sequence.
//!
//! Watch properties wait for events with a deadline, never by sleeping.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;

use super::{Error, KeyValue, Precondition, Store, WatchEvent, WatchStream};

/// A conformance property: a name and the test, given a fresh store.
pub type Property = (&'static str, fn(Arc<dyn Store>) -> BoxFuture<'static, ()>);

/// Every property of the suite.
pub const ALL: &[Property] = &[
    ("revisions_are_global_and_monotonic", |s| {
        Box::pin(revisions_are_global_and_monotonic(s))
    }),
    ("create_and_mod_revisions", |s| {
        Box::pin(create_and_mod_revisions(s))
    }),
    ("must_not_exist_rejects_existing_keys", |s| {
        Box::pin(must_not_exist_rejects_existing_keys(s))
    }),
    ("mod_revision_mismatch_is_a_conflict", |s| {
        Box::pin(mod_revision_mismatch_is_a_conflict(s))
    }),
    ("must_exist_and_not_found", |s| {
        Box::pin(must_exist_and_not_found(s))
    }),
    ("delete_semantics", |s| Box::pin(delete_semantics(s))),
    ("range_prefix_isolation", |s| {
        Box::pin(range_prefix_isolation(s))
    }),
    ("range_paging", |s| Box::pin(range_paging(s))),
    ("range_reports_its_revision", |s| {
        Box::pin(range_reports_its_revision(s))
    }),
    ("watch_from_zero_sees_only_new_events", |s| {
        Box::pin(watch_from_zero_sees_only_new_events(s))
    }),
    ("watch_replays_history_after_revision", |s| {
        Box::pin(watch_replays_history_after_revision(s))
    }),
    ("watch_hands_over_from_replay_to_live_without_gaps", |s| {
        Box::pin(watch_hands_over_from_replay_to_live_without_gaps(s))
    }),
    ("watch_filters_by_prefix", |s| {
        Box::pin(watch_filters_by_prefix(s))
    }),
    ("compaction_expires_old_revisions", |s| {
        Box::pin(compaction_expires_old_revisions(s))
    }),
    ("future_revisions_are_rejected", |s| {
        Box::pin(future_revisions_are_rejected(s))
    }),
    ("concurrent_cas_has_exactly_one_winner", |s| {
        Box::pin(concurrent_cas_has_exactly_one_winner(s))
    }),
    ("large_values_round_trip", |s| {
        Box::pin(large_values_round_trip(s))
    }),
];

/// Runs every property, each on a store from `new_store`.
pub async fn run_all<F, Fut>(mut new_store: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    for (name, property) in ALL {
        tracing::info!(property = name, "store conformance");
        property(new_store().await).await;
    }
}

/// How long a watch may take to deliver an expected event.
const EVENT_DEADLINE: Duration = Duration::from_secs(20);

fn val(s: &str) -> Bytes {
    Bytes::from(s.to_owned())
}

async fn put(store: &dyn Store, key: &str, value: &str, pre: Precondition) -> KeyValue {
    match store.put(key, val(value), pre).await {
        Ok(kv) => kv,
        Err(e) => panic!("put {key} with {pre:?} failed: {e}"),
    }
}

async fn current(store: &dyn Store) -> i64 {
    match store.current_revision().await {
        Ok(r) => r,
        Err(e) => panic!("current_revision failed: {e}"),
    }
}

async fn watch(store: &dyn Store, prefix: &str, after: i64) -> WatchStream {
    match store.watch(prefix, after).await {
        Ok(w) => w,
        Err(e) => panic!("watch {prefix} after {after} failed: {e}"),
    }
}

async fn next_event(stream: &mut WatchStream, what: &str) -> WatchEvent {
    match tokio::time::timeout(EVENT_DEADLINE, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("{what}: watch failed: {e}"),
        Ok(None) => panic!("{what}: watch ended"),
        Err(_) => panic!("{what}: no event within {EVENT_DEADLINE:?}"),
    }
}

fn key_of(event: &WatchEvent) -> &str {
    match event {
        WatchEvent::Put { kv, .. } => &kv.key,
        WatchEvent::Delete { prev, .. } => &prev.key,
    }
}

/// Every successful write bumps one global revision by exactly one, across
/// keys; failed writes do not.
pub async fn revisions_are_global_and_monotonic(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let start = current(s).await;
    let a = put(s, "/registry/pods/ns/a", "1", Precondition::None).await;
    assert_eq!(
        a.mod_revision,
        start + 1,
        "first write must be at start + 1"
    );
    let b = put(s, "/registry/nodes/b", "1", Precondition::None).await;
    assert_eq!(b.mod_revision, start + 2, "revision is global across keys");
    let a2 = put(s, "/registry/pods/ns/a", "2", Precondition::None).await;
    assert_eq!(a2.mod_revision, start + 3, "update bumps the revision");
    assert_eq!(
        current(s).await,
        start + 3,
        "current_revision is the last write"
    );

    let failed = s
        .put("/registry/pods/ns/a", val("x"), Precondition::MustNotExist)
        .await;
    assert!(
        matches!(failed, Err(Error::AlreadyExists { .. })),
        "create over existing key: {failed:?}"
    );
    let failed = s
        .delete("/registry/pods/ns/missing", Precondition::None)
        .await;
    assert!(
        matches!(failed, Err(Error::NotFound { .. })),
        "delete of missing key: {failed:?}"
    );
    assert_eq!(
        current(s).await,
        start + 3,
        "failed writes must not bump the revision"
    );

    let (_, deleted_at) = s
        .delete("/registry/nodes/b", Precondition::None)
        .await
        .expect("delete");
    assert_eq!(
        deleted_at,
        start + 4,
        "a delete is a write with its own revision"
    );
    assert_eq!(current(s).await, start + 4);
}

/// `create_revision` is set by the creating write and kept by updates;
/// `mod_revision` follows every write; a re-created key starts over.
pub async fn create_and_mod_revisions(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let created = put(
        s,
        "/registry/configmaps/ns/c",
        "v1",
        Precondition::MustNotExist,
    )
    .await;
    assert_eq!(
        created.create_revision, created.mod_revision,
        "a create has create == mod revision"
    );
    assert_eq!(created.value, val("v1"));
    assert_eq!(created.key, "/registry/configmaps/ns/c");
    let updated = put(
        s,
        "/registry/configmaps/ns/c",
        "v2",
        Precondition::ModRevision(created.mod_revision),
    )
    .await;
    assert_eq!(
        updated.create_revision, created.create_revision,
        "update keeps create_revision"
    );
    assert!(
        updated.mod_revision > created.mod_revision,
        "update advances mod_revision"
    );
    let got = s
        .get("/registry/configmaps/ns/c")
        .await
        .expect("get")
        .expect("key exists");
    assert_eq!(
        got, updated,
        "get returns exactly what the last put returned"
    );

    s.delete("/registry/configmaps/ns/c", Precondition::None)
        .await
        .expect("delete");
    let recreated = put(
        s,
        "/registry/configmaps/ns/c",
        "v3",
        Precondition::MustNotExist,
    )
    .await;
    assert!(
        recreated.create_revision > updated.mod_revision,
        "re-created key gets a new create_revision"
    );
    assert_eq!(recreated.create_revision, recreated.mod_revision);
}

/// `MustNotExist` (and `ModRevision(0)`) fail with `AlreadyExists` on an
/// existing key and leave it untouched.
pub async fn must_not_exist_rejects_existing_keys(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let kv = put(
        s,
        "/registry/secrets/ns/s",
        "orig",
        Precondition::MustNotExist,
    )
    .await;
    for pre in [Precondition::MustNotExist, Precondition::ModRevision(0)] {
        match s.put("/registry/secrets/ns/s", val("new"), pre).await {
            Err(Error::AlreadyExists { key }) => assert_eq!(key, "/registry/secrets/ns/s"),
            other => panic!("{pre:?} over an existing key must be AlreadyExists, got {other:?}"),
        }
    }
    assert_eq!(
        s.get("/registry/secrets/ns/s").await.expect("get"),
        Some(kv),
        "failed create must not write"
    );
    let fresh = put(
        s,
        "/registry/secrets/ns/t",
        "x",
        Precondition::ModRevision(0),
    )
    .await;
    assert_eq!(
        fresh.create_revision, fresh.mod_revision,
        "ModRevision(0) creates a missing key"
    );
}

/// `ModRevision(r)` fails with `Conflict` when the key moved on, and succeeds
/// with the current revision.
pub async fn mod_revision_mismatch_is_a_conflict(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let v1 = put(s, "/registry/pods/ns/p", "1", Precondition::None).await;
    let v2 = put(
        s,
        "/registry/pods/ns/p",
        "2",
        Precondition::ModRevision(v1.mod_revision),
    )
    .await;
    match s
        .put(
            "/registry/pods/ns/p",
            val("stale"),
            Precondition::ModRevision(v1.mod_revision),
        )
        .await
    {
        Err(Error::Conflict {
            key,
            expected,
            actual,
        }) => {
            assert_eq!(key, "/registry/pods/ns/p");
            assert_eq!(
                expected, v1.mod_revision,
                "Conflict reports the expected revision"
            );
            assert_eq!(
                actual, v2.mod_revision,
                "Conflict reports the actual revision"
            );
        }
        other => panic!("stale ModRevision must be Conflict, got {other:?}"),
    }
    match s
        .delete(
            "/registry/pods/ns/p",
            Precondition::ModRevision(v1.mod_revision),
        )
        .await
    {
        Err(Error::Conflict { .. }) => {}
        other => panic!("stale ModRevision delete must be Conflict, got {other:?}"),
    }
    assert_eq!(
        s.get("/registry/pods/ns/p").await.expect("get"),
        Some(v2.clone()),
        "failed CAS must not write"
    );
    let v3 = put(
        s,
        "/registry/pods/ns/p",
        "3",
        Precondition::ModRevision(v2.mod_revision),
    )
    .await;
    assert_eq!(v3.value, val("3"));
}

/// `MustExist` and `ModRevision` on a missing key fail with `NotFound`;
/// `get` of a missing key is `None`.
pub async fn must_exist_and_not_found(store: Arc<dyn Store>) {
    let s = store.as_ref();
    assert_eq!(
        s.get("/registry/pods/ns/nope").await.expect("get"),
        None,
        "missing key reads as None"
    );
    for pre in [Precondition::MustExist, Precondition::ModRevision(5)] {
        match s.put("/registry/pods/ns/nope", val("x"), pre).await {
            Err(Error::NotFound { key }) => assert_eq!(key, "/registry/pods/ns/nope"),
            other => panic!("{pre:?} on a missing key must be NotFound, got {other:?}"),
        }
    }
    assert_eq!(
        s.get("/registry/pods/ns/nope").await.expect("get"),
        None,
        "failed put must not create"
    );
    let kv = put(s, "/registry/pods/ns/yes", "1", Precondition::None).await;
    let updated = put(s, "/registry/pods/ns/yes", "2", Precondition::MustExist).await;
    assert_eq!(updated.create_revision, kv.create_revision);
}

/// A delete returns the last value and its own revision, removes the key
/// from reads, honours preconditions, and a second delete is `NotFound`.
pub async fn delete_semantics(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let kv = put(s, "/registry/events/ns/e", "1", Precondition::None).await;
    let (prev, revision) = s
        .delete(
            "/registry/events/ns/e",
            Precondition::ModRevision(kv.mod_revision),
        )
        .await
        .expect("delete with the current revision");
    assert_eq!(prev, kv, "delete returns the deleted key-value");
    assert_eq!(
        revision,
        kv.mod_revision + 1,
        "delete gets the next revision"
    );
    assert_eq!(current(s).await, revision);
    assert_eq!(
        s.get("/registry/events/ns/e").await.expect("get"),
        None,
        "deleted key is gone"
    );
    let listed = s.range("/registry/events/", None, 0).await.expect("range");
    assert!(listed.kvs.is_empty(), "deleted key is not listed");
    for pre in [
        Precondition::None,
        Precondition::MustExist,
        Precondition::ModRevision(kv.mod_revision),
    ] {
        match s.delete("/registry/events/ns/e", pre).await {
            Err(Error::NotFound { .. }) => {}
            other => panic!("delete of a deleted key with {pre:?} must be NotFound, got {other:?}"),
        }
    }
    let kv = put(s, "/registry/events/ns/f", "1", Precondition::None).await;
    let (prev, _) = s
        .delete("/registry/events/ns/f", Precondition::MustExist)
        .await
        .expect("delete MustExist");
    assert_eq!(prev, kv);
}

/// A prefix range returns exactly the keys under the prefix, in key order.
pub async fn range_prefix_isolation(store: Arc<dyn Store>) {
    let s = store.as_ref();
    for key in [
        "/registry/pods/b/y",
        "/registry/pods/a/x",
        "/registry/pods/a/z",
        "/registry/podsx/a",
        "/registry/pod",
        "/registry/pods",
        "/registry/nodes/n1",
    ] {
        put(s, key, key, Precondition::None).await;
    }
    let keys = |r: super::RangeResult| r.kvs.into_iter().map(|kv| kv.key).collect::<Vec<_>>();
    let pods = s.range("/registry/pods/", None, 0).await.expect("range");
    assert!(!pods.more);
    assert_eq!(
        keys(pods),
        [
            "/registry/pods/a/x",
            "/registry/pods/a/z",
            "/registry/pods/b/y"
        ],
        "/registry/pods/ must not include /registry/podsx or /registry/pods itself"
    );
    let ns_a = s.range("/registry/pods/a/", None, 0).await.expect("range");
    assert_eq!(keys(ns_a), ["/registry/pods/a/x", "/registry/pods/a/z"]);
    let podsx = s.range("/registry/podsx/", None, 0).await.expect("range");
    assert_eq!(keys(podsx), ["/registry/podsx/a"]);
    let none = s
        .range("/registry/services/", None, 0)
        .await
        .expect("range");
    assert!(none.kvs.is_empty() && !none.more);
    let before = s
        .range("/registry/pods/", Some("/registry/a"), 0)
        .await
        .expect("range");
    assert_eq!(
        before.kvs.len(),
        3,
        "start_after before the prefix lists the whole prefix"
    );
    let values = s.range("/registry/pods/a/", None, 0).await.expect("range");
    assert!(
        values.kvs.iter().all(|kv| kv.value == val(&kv.key)),
        "range returns values"
    );
}

/// `limit` + `start_after` page through a prefix without loss or overlap,
/// and `more` says whether keys remain.
pub async fn range_paging(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let mut expected = Vec::new();
    for i in 0..25 {
        let key = format!("/registry/pods/ns/p{i:02}");
        put(s, &key, "v", Precondition::None).await;
        expected.push(key);
    }
    put(s, "/registry/podsx/zzz", "v", Precondition::None).await;
    let mut seen = Vec::new();
    let mut start_after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = s
            .range("/registry/pods/", start_after.as_deref(), 10)
            .await
            .expect("range page");
        pages += 1;
        assert!(page.kvs.len() <= 10, "limit respected");
        seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        start_after = page.kvs.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
        assert_eq!(page.kvs.len(), 10, "a page with more=true is full");
        assert!(pages < 10, "paging does not terminate");
    }
    assert_eq!(pages, 3, "25 keys in pages of 10");
    assert_eq!(seen, expected, "pages concatenate to the full listing");

    let exact = s
        .range("/registry/pods/", Some("/registry/pods/ns/p14"), 10)
        .await
        .expect("range");
    assert_eq!(exact.kvs.len(), 10);
    assert!(
        !exact.more,
        "a page that ends exactly at the last key has more=false"
    );
    let tail = s
        .range("/registry/pods/", Some("/registry/pods/ns/p24"), 10)
        .await
        .expect("range");
    assert!(
        tail.kvs.is_empty() && !tail.more,
        "after the last key nothing remains"
    );
    let one = s.range("/registry/pods/", None, 1).await.expect("range");
    assert_eq!(one.kvs.len(), 1);
    assert!(one.more);
}

/// A range reports the store revision it was served at.
pub async fn range_reports_its_revision(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let empty = s.range("/registry/pods/", None, 0).await.expect("range");
    assert_eq!(
        empty.revision,
        current(s).await,
        "an empty range still reports the revision"
    );
    put(s, "/registry/pods/ns/a", "1", Precondition::None).await;
    let last = put(s, "/registry/nodes/n", "1", Precondition::None).await;
    let pods = s.range("/registry/pods/", None, 0).await.expect("range");
    assert_eq!(
        pods.revision, last.mod_revision,
        "range revision is the global revision, not the keys' max"
    );
    assert_eq!(pods.kvs.len(), 1);
    let (_, deleted_at) = s
        .delete("/registry/nodes/n", Precondition::None)
        .await
        .expect("delete");
    let page = s.range("/registry/pods/", None, 1).await.expect("range");
    assert_eq!(page.revision, deleted_at);
}

/// A watch from revision 0 delivers only events after it was created, with
/// previous values.
pub async fn watch_from_zero_sees_only_new_events(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let old = put(s, "/registry/pods/ns/old", "1", Precondition::None).await;
    let mut w = watch(s, "/registry/pods/", 0).await;
    let new = put(s, "/registry/pods/ns/new", "1", Precondition::None).await;
    let event = next_event(&mut w, "watch from 0").await;
    assert_eq!(
        event,
        WatchEvent::Put {
            kv: new.clone(),
            prev: None
        },
        "the first event is the first new write"
    );
    let old2 = put(s, "/registry/pods/ns/old", "2", Precondition::None).await;
    let event = next_event(&mut w, "update").await;
    assert_eq!(
        event,
        WatchEvent::Put {
            kv: old2.clone(),
            prev: Some(old)
        },
        "updates carry the previous value"
    );
    let (_, at) = s
        .delete("/registry/pods/ns/new", Precondition::None)
        .await
        .expect("delete");
    let event = next_event(&mut w, "delete").await;
    assert_eq!(
        event,
        WatchEvent::Delete {
            prev: new,
            revision: at
        },
        "deletes carry the last value"
    );
}

/// A watch after revision N replays exactly the events with revision > N,
/// in order, with previous values, then continues live.
pub async fn watch_replays_history_after_revision(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let a1 = put(s, "/registry/pods/ns/a", "a1", Precondition::None).await;
    let a2 = put(s, "/registry/pods/ns/a", "a2", Precondition::None).await;
    let b1 = put(s, "/registry/pods/ns/b", "b1", Precondition::None).await;
    let (_, del_a) = s
        .delete("/registry/pods/ns/a", Precondition::None)
        .await
        .expect("delete");
    let c1 = put(s, "/registry/pods/ns/c", "c1", Precondition::None).await;
    let expected = [
        WatchEvent::Put {
            kv: a2.clone(),
            prev: Some(a1.clone()),
        },
        WatchEvent::Put {
            kv: b1.clone(),
            prev: None,
        },
        WatchEvent::Delete {
            prev: a2.clone(),
            revision: del_a,
        },
        WatchEvent::Put {
            kv: c1.clone(),
            prev: None,
        },
    ];
    let mut w = watch(s, "/registry/pods/", a1.mod_revision).await;
    for (i, want) in expected.iter().enumerate() {
        let got = next_event(&mut w, &format!("replay event {i}")).await;
        assert_eq!(&got, want, "replayed event {i}");
    }
    let live = put(s, "/registry/pods/ns/d", "d1", Precondition::None).await;
    let got = next_event(&mut w, "live after replay").await;
    assert_eq!(
        got,
        WatchEvent::Put {
            kv: live,
            prev: None
        },
        "after the replay the watch continues live"
    );

    let mut from_delete = watch(s, "/registry/pods/", del_a).await;
    let got = next_event(&mut from_delete, "replay from the delete").await;
    assert_eq!(
        got.revision(),
        c1.mod_revision,
        "replay starts strictly after the given revision"
    );
}

/// A watch started while writers run, from a past revision and from 0,
/// delivers every revision exactly once, in order.
pub async fn watch_hands_over_from_replay_to_live_without_gaps(store: Arc<dyn Store>) {
    const WRITERS: usize = 4;
    const WRITES: usize = 60;
    let prefix = "/registry/configmaps/handover/";
    let base = put(
        store.as_ref(),
        &format!("{prefix}seed"),
        "0",
        Precondition::None,
    )
    .await
    .mod_revision;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..WRITES {
                // Some keys are rewritten so updates (with prev values) are in the mix.
                let key = format!("{prefix}w{w}-{}", i % 7);
                put(store.as_ref(), &key, &i.to_string(), Precondition::None).await;
            }
        }));
    }
    // Start the watches while the writers are mid-way.
    let deadline = tokio::time::Instant::now() + EVENT_DEADLINE;
    while current(store.as_ref()).await < base + (WRITERS * WRITES / 3) as i64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "writers made no progress"
        );
        tokio::task::yield_now().await;
    }
    let mut from_base = watch(store.as_ref(), prefix, base).await;
    let mut from_now = watch(store.as_ref(), prefix, 0).await;
    for writer in writers {
        writer.await.expect("writer task");
    }
    let last = current(store.as_ref()).await;
    assert_eq!(
        last,
        base + (WRITERS * WRITES) as i64,
        "every write got one revision"
    );

    let mut revisions = Vec::new();
    while revisions.last().copied().unwrap_or(base) < last {
        let event = next_event(&mut from_base, "watch from base").await;
        assert!(key_of(&event).starts_with(prefix));
        revisions.push(event.revision());
    }
    let expected: Vec<i64> = (base + 1..=last).collect();
    assert_eq!(
        revisions, expected,
        "replay + live must deliver every revision exactly once, in order"
    );

    let first = next_event(&mut from_now, "watch from now").await.revision();
    let mut previous = first;
    while previous < last {
        let r = next_event(&mut from_now, "watch from now").await.revision();
        assert_eq!(
            r,
            previous + 1,
            "a watch from now has no gaps or duplicates"
        );
        previous = r;
    }
}

/// A watch sees only keys under its prefix, in replay and live.
pub async fn watch_filters_by_prefix(store: Arc<dyn Store>) {
    let s = store.as_ref();
    // A seed write, so the start revision is not 0 ("from now") on an empty store.
    let start = put(s, "/registry/seed", "", Precondition::None)
        .await
        .mod_revision;
    put(s, "/registry/podsx/a", "x", Precondition::None).await;
    let pod = put(s, "/registry/pods/ns/a", "p", Precondition::None).await;
    put(s, "/registry/nodes/n", "n", Precondition::None).await;
    let mut replay = watch(s, "/registry/pods/", start).await;
    let mut live = watch(s, "/registry/pods/", 0).await;
    let mut ns = watch(s, "/registry/pods/other/", 0).await;
    put(s, "/registry/podsx/b", "x", Precondition::None).await;
    put(s, "/registry/pods/ns/b", "p", Precondition::None).await;
    let other = put(s, "/registry/pods/other/c", "p", Precondition::None).await;

    let got = next_event(&mut replay, "replay").await;
    assert_eq!(
        key_of(&got),
        "/registry/pods/ns/a",
        "replay skips other prefixes"
    );
    assert_eq!(got.revision(), pod.mod_revision);
    assert_eq!(
        key_of(&next_event(&mut replay, "replay→live").await),
        "/registry/pods/ns/b"
    );
    assert_eq!(
        key_of(&next_event(&mut live, "live").await),
        "/registry/pods/ns/b",
        "live skips other prefixes"
    );
    assert_eq!(
        key_of(&next_event(&mut live, "live").await),
        "/registry/pods/other/c"
    );
    let got = next_event(&mut ns, "namespace watch").await;
    assert_eq!(
        got.revision(),
        other.mod_revision,
        "a namespace prefix sees only its namespace"
    );
}

/// After `compact(R)`: watches needing a revision below R fail with
/// `Compacted`; from `R - 1` on they replay; keys are untouched;
/// compacting again lower is a no-op; compacting the future fails.
pub async fn compaction_expires_old_revisions(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let prefix = "/registry/leases/ns/";
    let mut revs = Vec::new();
    for i in 0..10 {
        revs.push(
            put(s, &format!("{prefix}l{i}"), "v", Precondition::None)
                .await
                .mod_revision,
        );
    }
    let r = revs[5];
    s.compact(r).await.expect("compact");
    assert_eq!(s.compacted_revision().await.expect("compacted_revision"), r);
    for after in [revs[0], r - 2] {
        match s.watch(prefix, after).await {
            Err(Error::Compacted { compacted, .. }) => {
                assert_eq!(compacted, r, "Compacted reports the revision")
            }
            Err(e) => panic!("watch after {after} (compacted {r}) must be Compacted, got {e}"),
            Ok(_) => panic!("watch after {after} (compacted {r}) must be Compacted, got a stream"),
        }
    }
    // etcd: compacting at R keeps revision R, so a watch that needs R onwards works.
    let mut w = watch(s, prefix, r - 1).await;
    assert_eq!(next_event(&mut w, "watch after r-1").await.revision(), r);
    let mut w = watch(s, prefix, r).await;
    assert_eq!(
        next_event(&mut w, "watch after r").await.revision(),
        revs[6]
    );
    let listed = s.range(prefix, None, 0).await.expect("range");
    assert_eq!(listed.kvs.len(), 10, "compaction keeps current keys");
    let mut from_now = watch(s, prefix, 0).await;
    let live = put(s, &format!("{prefix}l0"), "w", Precondition::None).await;
    assert_eq!(
        next_event(&mut from_now, "live after compaction")
            .await
            .revision(),
        live.mod_revision
    );

    s.compact(revs[2])
        .await
        .expect("compacting below the compacted revision is a no-op");
    s.compact(r)
        .await
        .expect("compacting at the compacted revision is a no-op");
    assert_eq!(s.compacted_revision().await.expect("compacted_revision"), r);
    let now = current(s).await;
    s.compact(now)
        .await
        .expect("compacting at the current revision");
    assert_eq!(
        s.compacted_revision().await.expect("compacted_revision"),
        now
    );
    match s.compact(now + 1).await {
        Err(Error::FutureRevision { requested, current }) => {
            assert_eq!((requested, current), (now + 1, now));
        }
        other => panic!("compacting a future revision must be FutureRevision, got {other:?}"),
    }
    assert_eq!(
        s.compacted_revision().await.expect("compacted_revision"),
        now
    );
}

/// Watching after a revision beyond the current one fails with `FutureRevision`.
pub async fn future_revisions_are_rejected(store: Arc<dyn Store>) {
    let s = store.as_ref();
    put(s, "/registry/pods/ns/a", "1", Precondition::None).await;
    let now = current(s).await;
    for ahead in [now + 1, now + 1000] {
        match s.watch("/registry/pods/", ahead).await {
            Err(Error::FutureRevision { requested, current }) => {
                assert_eq!((requested, current), (ahead, now))
            }
            Err(e) => panic!("watch after future revision {ahead} must be FutureRevision, got {e}"),
            Ok(_) => {
                panic!("watch after future revision {ahead} must be FutureRevision, got a stream")
            }
        }
    }
    let mut at_now = watch(s, "/registry/pods/", now).await;
    let next = put(s, "/registry/pods/ns/a", "2", Precondition::None).await;
    assert_eq!(
        next_event(&mut at_now, "watch at current").await.revision(),
        next.mod_revision
    );
}

/// Many tasks racing a compare-and-swap on one key: exactly one wins each
/// round, the others get `Conflict` (or `AlreadyExists` for creates).
pub async fn concurrent_cas_has_exactly_one_winner(store: Arc<dyn Store>) {
    const TASKS: usize = 12;
    const ROUNDS: usize = 5;
    let key = "/registry/leases/kube-system/leader";
    let creates = (0..TASKS)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .put(key, val(&format!("create-{t}")), Precondition::MustNotExist)
                    .await
            })
        })
        .collect::<Vec<_>>();
    let mut winners = Vec::new();
    for task in creates {
        match task.await.expect("create task") {
            Ok(kv) => winners.push(kv),
            Err(Error::AlreadyExists { .. }) => {}
            Err(e) => panic!("racing create: unexpected error {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one racing create wins");
    let mut holder = winners.remove(0);

    for round in 0..ROUNDS {
        let expected = holder.mod_revision;
        let tasks = (0..TASKS)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .put(
                            key,
                            val(&format!("{round}-{t}")),
                            Precondition::ModRevision(expected),
                        )
                        .await
                })
            })
            .collect::<Vec<_>>();
        let mut winners = Vec::new();
        let mut conflicts = Vec::new();
        for task in tasks {
            match task.await.expect("cas task") {
                Ok(kv) => winners.push(kv),
                Err(Error::Conflict {
                    expected: e,
                    actual,
                    ..
                }) => conflicts.push((e, actual)),
                Err(e) => panic!("racing CAS: unexpected error {e}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one CAS wins, got {winners:?}"
        );
        let winner = winners.remove(0);
        assert_eq!(
            conflicts.len(),
            TASKS - 1,
            "round {round}: every other CAS conflicts"
        );
        for (e, actual) in conflicts {
            assert_eq!(e, expected);
            assert_eq!(
                actual, winner.mod_revision,
                "losers see the winner's revision"
            );
        }
        assert_eq!(winner.create_revision, holder.create_revision);
        holder = winner;
    }
    let stored = store.get(key).await.expect("get").expect("key exists");
    assert_eq!(stored, holder, "the stored value is the last winner's");
    assert_eq!(
        holder.mod_revision,
        holder.create_revision + ROUNDS as i64,
        "one revision per successful round, none for the losers"
    );
}

/// Values of more than 1 MiB are stored, read, listed and watched intact.
pub async fn large_values_round_trip(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let make = |len: usize, seed: u32| -> Bytes {
        // A non-repeating pattern so truncation or reordering is detected.
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x.to_le_bytes()[0]
            })
            .collect::<Vec<u8>>()
            .into()
    };
    let big1 = make((3 << 20) / 2, 1);
    let big2 = make((5 << 20) / 4 + 3, 2);
    let key = "/registry/configmaps/ns/huge";
    // A seed write, so the watch below does not start at 0 ("from now").
    let before = put(s, "/registry/seed", "", Precondition::None)
        .await
        .mod_revision;
    let v1 = s
        .put(key, big1.clone(), Precondition::MustNotExist)
        .await
        .expect("put 1.5 MiB");
    assert_eq!(v1.value, big1);
    let got = s.get(key).await.expect("get").expect("exists");
    assert_eq!(got.value.len(), big1.len(), "length survives");
    assert!(got.value == big1, "bytes survive");
    let v2 = s
        .put(
            key,
            big2.clone(),
            Precondition::ModRevision(v1.mod_revision),
        )
        .await
        .expect("put 1.25 MiB");
    let listed = s
        .range("/registry/configmaps/ns/", None, 0)
        .await
        .expect("range");
    assert_eq!(listed.kvs.len(), 1);
    assert!(listed.kvs[0].value == big2, "range returns the large value");
    let mut w = watch(s, "/registry/configmaps/", before).await;
    match next_event(&mut w, "large create").await {
        WatchEvent::Put { kv, prev: None } => assert!(kv.value == big1, "replayed large value"),
        other => panic!(
            "expected the create, got a {}-revision event",
            other.revision()
        ),
    }
    match next_event(&mut w, "large update").await {
        WatchEvent::Put {
            kv,
            prev: Some(prev),
        } => {
            assert!(
                kv.value == big2 && prev.value == big1,
                "replayed large value and previous value"
            );
            assert_eq!(kv.mod_revision, v2.mod_revision);
        }
        other => panic!(
            "expected the update, got a {}-revision event",
            other.revision()
        ),
    }
}
