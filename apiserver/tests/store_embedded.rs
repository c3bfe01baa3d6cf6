//! The embedded (redb) store: the shared conformance suite, plus what only a
//! file-backed store has to guarantee — restarts, `kill -9`, compaction that
//! bounds the file, bounded watchers, corrupt files.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use wasmkube_apiserver::storage::embedded::{
    CompactionOptions, EmbeddedOptions, EmbeddedStore, compact_once, spawn_compactor,
};
use wasmkube_apiserver::storage::{
    Error, Precondition, Store, WatchEvent, WatchStream, conformance,
};

const DEADLINE: Duration = Duration::from_secs(20);

fn store_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("store.redb")
}

async fn next_event(stream: &mut WatchStream) -> Option<Result<WatchEvent, Error>> {
    tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("watch produced nothing before the deadline")
}

/// One test per conformance property, each on a fresh store in a temp dir.
mod conformance_suite {
    use super::*;

    macro_rules! properties {
        ($($name:ident),* $(,)?) => {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let store = EmbeddedStore::open(&store_path(&dir)).expect("open store");
                    conformance::$name(Arc::new(store)).await;
                }
            )*
            pub(super) const NAMES: &[&str] = &[$(stringify!($name)),*];
        };
    }

    properties!(
        revisions_are_global_and_monotonic,
        create_and_mod_revisions,
        must_not_exist_rejects_existing_keys,
        mod_revision_mismatch_is_a_conflict,
        must_exist_and_not_found,
        delete_semantics,
        range_prefix_isolation,
        range_paging,
        range_reports_its_revision,
        watch_from_zero_sees_only_new_events,
        watch_replays_history_after_revision,
        watch_hands_over_from_replay_to_live_without_gaps,
        watch_filters_by_prefix,
        compaction_expires_old_revisions,
        future_revisions_are_rejected,
        concurrent_cas_has_exactly_one_winner,
        large_values_round_trip,
    );

    #[test]
    fn every_property_of_the_suite_runs_here() {
        let all: Vec<&str> = conformance::ALL.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            NAMES,
            all.as_slice(),
            "conformance::ALL and this file's list must match"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_all_runs_on_fresh_stores() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut n = 0;
        conformance::run_all(|| {
            n += 1;
            let path = root.path().join(format!("store-{n}.redb"));
            async move { Arc::new(EmbeddedStore::open(&path).expect("open store")) as Arc<dyn Store> }
        })
        .await;
        assert_eq!(n, conformance::ALL.len(), "one fresh store per property");
    }
}

#[tokio::test]
async fn reopen_keeps_data_revision_counter_and_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_path(&dir);
    let (a1, b1, deleted_at, compacted, last) = {
        let store = EmbeddedStore::open(&path).expect("open");
        for i in 0..3 {
            let key = format!("/registry/nodes/n{i}");
            store
                .put(&key, Bytes::from_static(b"n"), Precondition::None)
                .await
                .expect("put");
        }
        let a1 = store
            .put(
                "/registry/pods/ns/a",
                Bytes::from_static(b"a1"),
                Precondition::None,
            )
            .await
            .expect("put");
        let b1 = store
            .put(
                "/registry/pods/ns/b",
                Bytes::from_static(b"b1"),
                Precondition::None,
            )
            .await
            .expect("put");
        let (_, deleted_at) = store
            .delete("/registry/pods/ns/a", Precondition::None)
            .await
            .expect("delete");
        let c1 = store
            .put(
                "/registry/pods/ns/c",
                Bytes::from_static(b"c1"),
                Precondition::None,
            )
            .await
            .expect("put");
        store.compact(b1.mod_revision).await.expect("compact");
        let compacted = b1.mod_revision;
        (a1, b1, deleted_at, compacted, c1.mod_revision)
    };
    // The store above is dropped: the file must be closed and reopenable.
    let store = EmbeddedStore::open(&path).expect("reopen");
    assert_eq!(
        store.current_revision().await.expect("revision"),
        last,
        "revision counter survives"
    );
    assert_eq!(
        store.compacted_revision().await.expect("compacted"),
        compacted,
        "compacted revision survives"
    );
    assert_eq!(
        store.get("/registry/pods/ns/a").await.expect("get"),
        None,
        "deletes survive"
    );
    assert_eq!(
        store.get("/registry/pods/ns/b").await.expect("get"),
        Some(b1.clone()),
        "data survives"
    );

    let mut w = store
        .watch("/registry/pods/", b1.mod_revision)
        .await
        .expect("watch history after reopen");
    match next_event(&mut w).await {
        Some(Ok(WatchEvent::Delete { prev, revision })) => {
            assert_eq!(
                (prev, revision),
                (a1, deleted_at),
                "replayed delete with its previous value"
            );
        }
        other => panic!("expected the replayed delete, got {other:?}"),
    }
    assert_eq!(
        next_event(&mut w)
            .await
            .expect("event")
            .expect("ok")
            .revision(),
        last
    );
    match store.watch("/registry/pods/", compacted - 2).await {
        Err(Error::Compacted { .. }) => {}
        other => panic!(
            "history below the compacted revision stays gone, got ok={}",
            other.is_ok()
        ),
    }
    let next = store
        .put(
            "/registry/pods/ns/d",
            Bytes::from_static(b"d"),
            Precondition::None,
        )
        .await
        .expect("put");
    assert_eq!(
        next.mod_revision,
        last + 1,
        "revisions continue after the last one"
    );
    assert_eq!(
        next_event(&mut w)
            .await
            .expect("event")
            .expect("ok")
            .revision(),
        last + 1
    );
}

#[tokio::test]
async fn dropping_the_store_ends_watches_and_releases_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_path(&dir);
    let store = EmbeddedStore::open(&path).expect("open");
    store
        .put(
            "/registry/pods/ns/a",
            Bytes::from_static(b"1"),
            Precondition::None,
        )
        .await
        .expect("put");
    let mut live = store.watch("/registry/pods/", 0).await.expect("watch");
    let mut replaying = store.watch("/registry/pods/", 0).await.expect("watch");
    store
        .put(
            "/registry/pods/ns/b",
            Bytes::from_static(b"2"),
            Precondition::None,
        )
        .await
        .expect("put");
    assert!(matches!(next_event(&mut replaying).await, Some(Ok(_))));
    drop(store);
    assert!(
        matches!(next_event(&mut live).await, Some(Ok(_))),
        "events already delivered are kept"
    );
    assert!(
        matches!(next_event(&mut live).await, Some(Err(Error::Backend(_)))),
        "then the stream reports the close"
    );
    assert!(next_event(&mut live).await.is_none(), "and ends");
    assert!(matches!(
        next_event(&mut replaying).await,
        Some(Err(Error::Backend(_)))
    ));
    // Open watch streams must not keep the database open.
    let reopened = EmbeddedStore::open(&path).expect("reopen right after drop");
    assert_eq!(reopened.current_revision().await.expect("revision"), 2);
}

#[tokio::test]
async fn a_slow_watcher_is_cut_off_instead_of_buffering_or_blocking_writers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open_with(&store_path(&dir), EmbeddedOptions { watch_buffer: 4 })
        .expect("open");
    let mut slow = store.watch("/registry/pods/", 0).await.expect("watch");
    // Nobody reads `slow` while 20 writes go through: writers must not wait for it.
    for i in 0..20 {
        let key = format!("/registry/pods/ns/p{i}");
        let put = store.put(&key, Bytes::from_static(b"v"), Precondition::None);
        tokio::time::timeout(DEADLINE, put)
            .await
            .expect("a write waited on a slow watcher")
            .expect("put");
    }
    let mut last = 0;
    for expected in 1..=4 {
        let event = next_event(&mut slow)
            .await
            .expect("buffered event")
            .expect("ok");
        assert_eq!(
            event.revision(),
            expected,
            "the buffered events come first, in order"
        );
        last = event.revision();
    }
    match next_event(&mut slow).await {
        Some(Err(Error::Lagged { after })) => {
            assert_eq!(after, last, "it names the last revision delivered")
        }
        other => panic!("a watcher that fell behind must get an error, got {other:?}"),
    }
    assert!(
        next_event(&mut slow).await.is_none(),
        "the stream ends after the error"
    );
    // The documented recovery: re-watch from the last revision seen.
    let mut again = store
        .watch("/registry/pods/", last)
        .await
        .expect("re-watch");
    for expected in 5..=20 {
        assert_eq!(
            next_event(&mut again)
                .await
                .expect("event")
                .expect("ok")
                .revision(),
            expected
        );
    }
}

#[tokio::test]
async fn compaction_bounds_the_log_and_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_path(&dir);
    let store = EmbeddedStore::open(&path).expect("open");
    let value = Bytes::from(vec![7u8; 16 << 10]);
    let keep = 20;
    let mut size_after_warmup = 0;
    for round in 0..40 {
        for k in 0..10 {
            let key = format!("/registry/configmaps/ns/c{k}");
            store
                .put(&key, value.clone(), Precondition::None)
                .await
                .expect("put");
        }
        let compacted = compact_once(&store, keep).await.expect("compact");
        let current = store.current_revision().await.expect("revision");
        assert_eq!(
            compacted.or(Some(-1)),
            Some(current - keep + 1).filter(|&r| r > 1).or(Some(-1))
        );
        let stats = store.history_stats().await.expect("stats");
        let expected = u64::try_from(keep.min(current)).expect("non-negative");
        assert_eq!(
            stats.entries, expected,
            "round {round}: the log keeps exactly the window"
        );
        assert_eq!(stats.newest_revision, Some(current));
        assert_eq!(stats.oldest_revision, Some((current - keep + 1).max(1)));
        if round == 9 {
            size_after_warmup = std::fs::metadata(&path).expect("stat").len();
        }
    }
    let final_size = std::fs::metadata(&path).expect("stat").len();
    eprintln!("store file: {size_after_warmup} bytes after warm-up, {final_size} at the end");
    // 400 writes of 16 KiB plus their log entries would be well over 12 MiB
    // without compaction; with it the file stops growing after warm-up.
    assert!(
        final_size <= size_after_warmup * 2,
        "file grew from {size_after_warmup} to {final_size} bytes despite compaction"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compactor_keeps_the_last_n_revisions_until_cancelled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&store_path(&dir)).expect("open"));
    for i in 0..30 {
        store
            .put(
                &format!("/registry/events/ns/e{i}"),
                Bytes::from_static(b"e"),
                Precondition::None,
            )
            .await
            .expect("put");
    }
    let shutdown = CancellationToken::new();
    let options = CompactionOptions {
        interval: Duration::from_millis(20),
        keep_revisions: 10,
    };
    let task = spawn_compactor(store.clone(), options, shutdown.clone());
    wait_for_compacted(store.as_ref(), 21).await;
    for i in 30..40 {
        store
            .put(
                &format!("/registry/events/ns/e{i}"),
                Bytes::from_static(b"e"),
                Precondition::None,
            )
            .await
            .expect("put");
    }
    wait_for_compacted(store.as_ref(), 31).await;
    let mut w = store
        .watch("/registry/events/", 30)
        .await
        .expect("the window stays watchable");
    assert_eq!(
        next_event(&mut w)
            .await
            .expect("event")
            .expect("ok")
            .revision(),
        31
    );
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("compactor stops on cancel")
        .expect("compactor task");
    assert_eq!(
        CompactionOptions::default(),
        CompactionOptions {
            interval: Duration::from_secs(60),
            keep_revisions: 10_000
        }
    );
}

async fn wait_for_compacted(store: &dyn Store, revision: i64) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let compacted = store.compacted_revision().await.expect("compacted");
        if compacted == revision {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "compacted revision stuck at {compacted}, want {revision}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn corrupt_records_are_backend_errors_not_panics() {
    const KV: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("kv");
    const LOG: redb::TableDefinition<i64, &[u8]> = redb::TableDefinition::new("log");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_path(&dir);
    {
        let store = EmbeddedStore::open(&path).expect("open");
        for key in [
            "/registry/pods/ns/a",
            "/registry/pods/ns/b",
            "/registry/pods/ns/c",
        ] {
            store
                .put(key, Bytes::from_static(b"v"), Precondition::None)
                .await
                .expect("put");
        }
    }
    {
        let db = redb::Database::create(&path).expect("open raw");
        let txn = db.begin_write().expect("begin");
        {
            let mut kv = txn.open_table(KV).expect("kv");
            kv.insert("/registry/pods/ns/a", [1u8, 2].as_slice())
                .expect("insert");
            let mut log = txn.open_table(LOG).expect("log");
            log.insert(2, [1u8, 1, 255, 255].as_slice())
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let store = EmbeddedStore::open(&path).expect("reopen");
    assert!(matches!(
        store.get("/registry/pods/ns/a").await,
        Err(Error::Backend(_))
    ));
    assert!(matches!(
        store.range("/registry/pods/", None, 0).await,
        Err(Error::Backend(_))
    ));
    let put = store
        .put(
            "/registry/pods/ns/a",
            Bytes::from_static(b"w"),
            Precondition::MustExist,
        )
        .await;
    assert!(
        matches!(put, Err(Error::Backend(_))),
        "a write over a corrupt record fails cleanly: {put:?}"
    );
    assert!(
        store
            .get("/registry/pods/ns/b")
            .await
            .expect("intact key")
            .is_some()
    );
    let mut w = store.watch("/registry/pods/", 1).await.expect("watch");
    assert!(
        matches!(next_event(&mut w).await, Some(Err(Error::Backend(_)))),
        "a corrupt log entry ends the replay"
    );
    assert_eq!(
        store.current_revision().await.expect("revision"),
        3,
        "failed writes did not count"
    );
}

const WRITER_ENV: &str = "WASMKUBE_STORE_KILL9_WRITER_DIR";
const KILL9_TEST: &str = "kill_nine_keeps_every_acknowledged_write";

/// A child process writes and prints `ACK <key> <revision>` after each
/// acknowledged write; the parent SIGKILLs it mid-stream, reopens the file and
/// checks every acknowledged write is there.
#[test]
fn kill_nine_keeps_every_acknowledged_write() {
    if let Ok(dir) = std::env::var(WRITER_ENV) {
        writer_child(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", KILL9_TEST, "--nocapture", "--test-threads=1"])
        .env(WRITER_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn writer");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut acked: Vec<(String, i64)> = Vec::new();
    let parse = |line: &str| -> Option<(String, i64)> {
        let mut parts = line.strip_prefix("ACK ")?.split(' ');
        Some((parts.next()?.to_owned(), parts.next()?.parse().ok()?))
    };
    while acked.len() < 150 {
        let line = lines
            .next()
            .expect("the writer exited before 150 writes")
            .expect("read");
        acked.extend(parse(&line));
    }
    // SIGKILL on unix: no destructors, no flush, mid-write.
    child.kill().expect("kill");
    // Acknowledgements printed before the kill are still in the pipe.
    for line in lines {
        let Ok(line) = line else { break };
        acked.extend(parse(&line));
    }
    let status = child.wait().expect("wait");
    eprintln!("writer killed after {} acknowledged writes", acked.len());
    assert!(
        !status.success(),
        "the writer must have been killed, not finished: {status:?}"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store =
            EmbeddedStore::open(&dir.path().join("store.redb")).expect("reopen after kill -9");
        for (key, revision) in &acked {
            let kv = store
                .get(key)
                .await
                .expect("get")
                .unwrap_or_else(|| panic!("acknowledged {key} lost"));
            assert_eq!(
                kv.mod_revision, *revision,
                "{key} has its acknowledged revision"
            );
            assert_eq!(
                kv.value.len(),
                value_len(*revision),
                "{key} has its full value"
            );
        }
        let max = acked.iter().map(|(_, r)| *r).max().unwrap_or(0);
        let current = store.current_revision().await.expect("revision");
        assert!(
            current >= max,
            "revision counter {current} went back before acknowledged {max}"
        );
        let next = store
            .put(
                "/registry/kill/after",
                Bytes::from_static(b"x"),
                Precondition::None,
            )
            .await;
        assert_eq!(
            next.expect("the store is writable after the crash")
                .mod_revision,
            current + 1
        );
        let mut w = store
            .watch("/registry/kill/", max - 10)
            .await
            .expect("history survives");
        assert_eq!(
            next_event(&mut w)
                .await
                .expect("event")
                .expect("ok")
                .revision(),
            max - 9
        );
    });
}

fn value_len(revision: i64) -> usize {
    // Sizes vary so commits differ in how many pages they touch.
    1 + (revision as usize * 7919) % (64 << 10)
}

fn writer_child(dir: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = EmbeddedStore::open(&dir.join("store.redb")).expect("open");
        let mut stdout = std::io::stdout();
        let started = std::time::Instant::now();
        // Bounded, so an orphaned writer cannot run forever.
        for i in 0..100_000u64 {
            if started.elapsed() > Duration::from_secs(120) {
                break;
            }
            let key = format!("/registry/kill/k{i:06}");
            let expected_revision = i64::try_from(i + 1).expect("small");
            let value = Bytes::from(vec![(i % 251) as u8; value_len(expected_revision)]);
            let kv = store
                .put(&key, value, Precondition::MustNotExist)
                .await
                .expect("put");
            writeln!(stdout, "ACK {key} {}", kv.mod_revision).expect("stdout");
            stdout.flush().expect("flush");
        }
    });
}

/// The `Store` contract: a dropped write future either committed fully or
/// not at all, and never lets a later write overtake it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_writes_commit_fully_or_not_at_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(EmbeddedStore::open(&store_path(&dir)).expect("open"));
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("/registry/pods/ns/p{i:02}");
            store
                .put(&key, Bytes::from(vec![1u8; 4096]), Precondition::None)
                .await
        }));
    }
    // Abort every other task wherever it is: waiting for the lock, or
    // waiting for its commit.
    for task in tasks.iter().step_by(2) {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    // The write lock is fair, so this write runs after every commit in flight.
    let last = store
        .put(
            "/registry/pods/zz-last",
            Bytes::from_static(b"x"),
            Precondition::None,
        )
        .await
        .expect("put");
    let listed = store
        .range("/registry/pods/ns/", None, 0)
        .await
        .expect("range");
    let mut revisions: Vec<i64> = listed.kvs.iter().map(|kv| kv.mod_revision).collect();
    revisions.sort_unstable();
    let expected: Vec<i64> = (1..last.mod_revision).collect();
    assert_eq!(
        revisions, expected,
        "every committed write is visible, with no holes in the revisions"
    );
    assert!(
        listed.kvs.iter().all(|kv| kv.value.len() == 4096),
        "no partial values"
    );
    let stats = store.history_stats().await.expect("stats");
    assert_eq!(
        stats.entries,
        u64::try_from(last.mod_revision).expect("positive"),
        "one log entry per revision"
    );
}
