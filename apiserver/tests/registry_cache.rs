//! Lists served by the watch cache, driven in-process (`oneshot`) on an
//! embedded store wrapped to count its range reads: which lists the cache
//! answers (and that the store is not read for them), that the copy follows
//! every write, selectors, namespaces and output shapes like a store list,
//! `resourceVersion=N` waits and the 504 past them, `resourceVersionMatch`
//! validation, the re-list after the store compacted past the cache, and
//! updates that start from the cache's copy and go by the store's when that
//! copy is behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use wasmkube_api::resources;
use wasmkube_apiserver::registry::{self, Registry, RegistryOptions};
use wasmkube_apiserver::storage::embedded::{EmbeddedOptions, EmbeddedStore};
use wasmkube_apiserver::storage::{self, KeyValue, Precondition, RangeResult, Store, WatchStream};
use wasmkube_apiserver::watch_cache::CacheOptions;

const PODS: &str = "/api/v1/namespaces/default/pods";
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
const PARTIAL: &str =
    "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf,application/json";

/// The embedded store, counting range reads (every store list is one or
/// more), whose watches can be cut and refused to simulate a lost store
/// watch.
struct CountingStore {
    inner: EmbeddedStore,
    ranges: AtomicUsize,
    gets: AtomicUsize,
    /// While true, watch events are held back: the cache falls behind.
    held: tokio::sync::watch::Sender<bool>,
    refuse_watches: AtomicBool,
    cut: std::sync::Mutex<CancellationToken>,
}

impl CountingStore {
    fn ranges(&self) -> usize {
        self.ranges.load(Ordering::SeqCst)
    }

    fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }

    /// Holds back (`true`) or releases every watch's events.
    fn hold_watches(&self, held: bool) {
        self.held.send_replace(held);
    }

    /// Ends every open watch stream; new ones fail until `refuse(false)`.
    fn cut_watches(&self) {
        self.refuse_watches.store(true, Ordering::SeqCst);
        let mut cut = self.cut.lock().unwrap_or_else(|e| e.into_inner());
        cut.cancel();
        *cut = CancellationToken::new();
    }

    fn allow_watches(&self) {
        self.refuse_watches.store(false, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Store for CountingStore {
    async fn get(&self, key: &str) -> storage::Result<Option<KeyValue>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key).await
    }
    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> storage::Result<RangeResult> {
        self.ranges.fetch_add(1, Ordering::SeqCst);
        self.inner.range(prefix, start_after, limit).await
    }
    async fn put(&self, key: &str, value: Bytes, pre: Precondition) -> storage::Result<KeyValue> {
        self.inner.put(key, value, pre).await
    }
    async fn delete(&self, key: &str, pre: Precondition) -> storage::Result<(KeyValue, i64)> {
        self.inner.delete(key, pre).await
    }
    async fn watch(&self, prefix: &str, after: i64) -> storage::Result<WatchStream> {
        if self.refuse_watches.load(Ordering::SeqCst) {
            return Err(storage::Error::Backend(
                "watches refused by the test".into(),
            ));
        }
        let cut = self
            .cut
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .cancelled_owned();
        let stream = self.inner.watch(prefix, after).await?;
        let held = self.held.subscribe();
        let gated = stream.then(move |item| {
            let mut held = held.clone();
            async move {
                let _ = held.wait_for(|h| !h).await;
                item
            }
        });
        Ok(Box::pin(gated.take_until(cut)))
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

struct Api {
    _dir: tempfile::TempDir,
    store: Arc<CountingStore>,
    router: Router,
    shutdown: CancellationToken,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

struct Reply {
    status: StatusCode,
    body: Value,
}

async fn api_with(cache: CacheOptions) -> Result<Api> {
    api_with_store(cache, EmbeddedOptions::default()).await
}

async fn api_with_store(cache: CacheOptions, store_options: EmbeddedOptions) -> Result<Api> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(CountingStore {
        inner: EmbeddedStore::open_with(&dir.path().join("store.redb"), store_options)?,
        ranges: AtomicUsize::new(0),
        gets: AtomicUsize::new(0),
        held: tokio::sync::watch::Sender::new(false),
        refuse_watches: AtomicBool::new(false),
        cut: std::sync::Mutex::new(CancellationToken::new()),
    });
    let shutdown = CancellationToken::new();
    let options = RegistryOptions {
        cache,
        ..RegistryOptions::default()
    };
    let registry = Registry::start_with(store.clone(), options, shutdown.clone()).await?;
    let ns = resources::by_plural("", "v1", "namespaces").context("namespaces")?;
    for name in ["default", "a", "b"] {
        registry
            .create(
                ns,
                None,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            )
            .await?;
    }
    Ok(Api {
        _dir: dir,
        store,
        router: registry::routes(registry),
        shutdown,
    })
}

async fn api() -> Result<Api> {
    api_with(CacheOptions::default()).await
}

fn pod(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "hello:v1"}]}
    })
}

fn rv(v: &Value) -> i64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(-1)
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `apiserver_cache_list_total` of one resource (0 before its first list).
fn cache_lists(resource: &str) -> u64 {
    let line = format!("apiserver_cache_list_total{{resource=\"{resource}\"}} ");
    wasmkube_apiserver::metrics::render()
        .lines()
        .find_map(|l| l.strip_prefix(&line).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

impl Api {
    async fn send(
        &self,
        method: &str,
        uri: &str,
        accept: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply> {
        self.send_with(method, uri, accept, body.map(|b| ("application/json", b)))
            .await
    }

    /// A request with a body of the given content type (a patch type).
    async fn send_typed(
        &self,
        method: &str,
        uri: &str,
        content_type: &str,
        body: &Value,
    ) -> Result<Reply> {
        self.send_with(method, uri, None, Some((content_type, body)))
            .await
    }

    async fn send_with(
        &self,
        method: &str,
        uri: &str,
        accept: Option<&str>,
        body: Option<(&str, &Value)>,
    ) -> Result<Reply> {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(a) = accept {
            b = b.header("accept", a);
        }
        let body = match body {
            Some((content_type, v)) => {
                b = b.header("content-type", content_type);
                Body::from(serde_json::to_vec(v)?)
            }
            None => Body::empty(),
        };
        let resp = self.router.clone().oneshot(b.body(body)?).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .with_context(|| String::from_utf8_lossy(&bytes).to_string())?
        };
        Ok(Reply { status, body })
    }

    /// A GET that must answer 200.
    async fn ok(&self, uri: &str, accept: Option<&str>) -> Result<Value> {
        let r = self.send("GET", uri, accept, None).await?;
        ensure!(
            r.status == StatusCode::OK,
            "GET {uri}: {} {}",
            r.status,
            r.body
        );
        Ok(r.body)
    }

    /// A list that must be answered by the cache: the store sees no range.
    async fn cached(&self, uri: &str, accept: Option<&str>) -> Result<Value> {
        let before = self.store.ranges();
        let list = self.ok(uri, accept).await?;
        ensure!(
            self.store.ranges() == before,
            "GET {uri} read the store ({} ranges)",
            self.store.ranges() - before
        );
        Ok(list)
    }

    /// A list that must be answered by the store.
    async fn stored(&self, uri: &str, accept: Option<&str>) -> Result<Value> {
        let before = self.store.ranges();
        let list = self.ok(uri, accept).await?;
        ensure!(
            self.store.ranges() > before,
            "GET {uri} did not read the store"
        );
        Ok(list)
    }

    async fn create(&self, collection: &str, obj: &Value) -> Result<Value> {
        let r = self.send("POST", collection, None, Some(obj)).await?;
        ensure!(
            r.status == StatusCode::CREATED,
            "create: {} {}",
            r.status,
            r.body
        );
        Ok(r.body)
    }

    /// Writes a pod straight into the store, as another API server sharing
    /// it would: this server's registry never sees the write.
    async fn put_behind_our_back(&self, ns: &str, name: &str) -> Result<i64> {
        let mut p = pod(name, json!({"app": "other"}));
        p["metadata"]["namespace"] = json!(ns);
        p["metadata"]["uid"] = json!(format!("uid-{name}"));
        let kv = self
            .store
            .put(
                &format!("/registry/pods/{ns}/{name}"),
                Bytes::from(serde_json::to_vec(&p)?),
                Precondition::None,
            )
            .await?;
        Ok(kv.mod_revision)
    }

    /// Polls a list until the cache answers it and `pred` holds (at most 10 s).
    async fn eventually(&self, uri: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let before = self.store.ranges();
            let list = self.ok(uri, None).await?;
            if self.store.ranges() == before && pred(&list) {
                return Ok(list);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("GET {uri} never satisfied the condition; last: {list}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn rv0_lists_come_from_the_cache_and_follow_every_write() -> Result<()> {
    let api = api().await?;
    let metric_before = cache_lists("pods");
    let rv0 = format!("{PODS}?resourceVersion=0");

    // No pod was ever written: the cache is at revision 0, which a list
    // must not claim ("0" means "any"); the store answers.
    let empty = api.stored(&rv0, None).await?;
    assert!(names(&empty).is_empty());
    assert!(rv(&empty) > 0, "{empty}");

    // This server's own writes are in its next cached list, at once.
    api.create(PODS, &pod("p1", json!({"app": "web"}))).await?;
    let p2 = api.create(PODS, &pod("p2", json!({"app": "web"}))).await?;
    let list = api.cached(&rv0, None).await?;
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(names(&list), ["p1", "p2"]);
    assert_eq!(rv(&list), rv(&p2), "the list is at the last write");
    assert_eq!(list["items"][1], p2, "items are the stored objects");
    assert!(list["metadata"].get("continue").is_none());

    let req = Request::builder()
        .method("PATCH")
        .uri(format!("{PODS}/p1"))
        .header("content-type", "application/merge-patch+json")
        .body(Body::from(r#"{"metadata":{"labels":{"app":"db"}}}"#))?;
    let resp = api.router.clone().oneshot(req).await?;
    ensure!(resp.status() == StatusCode::OK, "patch: {}", resp.status());
    let list = api.cached(&rv0, None).await?;
    assert_eq!(list["items"][0]["metadata"]["labels"]["app"], "db");

    let r = api
        .send("DELETE", &format!("{PODS}/p2"), None, None)
        .await?;
    ensure!(
        r.status == StatusCode::OK,
        "delete: {} {}",
        r.status,
        r.body
    );
    let list = api.cached(&rv0, None).await?;
    assert_eq!(names(&list), ["p1"]);

    // A write this server did not make (another API server on the same
    // store) arrives through the store watch.
    let at = api.put_behind_our_back("default", "p3").await?;
    let list = api
        .eventually(&rv0, |l| names(l).contains(&"p3".to_string()))
        .await?;
    assert_eq!(names(&list), ["p1", "p3"]);
    assert_eq!(rv(&list), at);
    let list = api.cached(&rv0, None).await?;
    assert_eq!(names(&list), ["p1", "p3"]);

    // The same list with resourceVersion="" is a consistent read of the store.
    let stored = api.stored(PODS, None).await?;
    assert_eq!(stored["items"], list["items"]);

    assert!(
        cache_lists("pods") >= metric_before + 5,
        "apiserver_cache_list_total counts cached lists"
    );
    Ok(())
}

#[tokio::test]
async fn cached_lists_equal_store_lists_for_selectors_namespaces_and_shapes() -> Result<()> {
    let api = api().await?;
    for (ns, name, app, tier) in [
        ("a", "web-1", "web", "front"),
        ("a", "web-2", "web", "back"),
        ("a", "db-1", "db", "back"),
        ("b", "web-1", "web", "front"),
        ("b", "job-1", "batch", "none"),
        ("default", "lone", "web", "front"),
    ] {
        api.create(
            &format!("/api/v1/namespaces/{ns}/pods"),
            &pod(name, json!({"app": app, "tier": tier})),
        )
        .await?;
    }
    let bind = |ns: &str, name: &str| {
        (
            format!("/api/v1/namespaces/{ns}/pods/{name}/binding"),
            json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": "n1"}}),
        )
    };
    for (ns, name) in [("a", "web-2"), ("b", "job-1")] {
        let (uri, body) = bind(ns, name);
        let r = api.send("POST", &uri, None, Some(&body)).await?;
        ensure!(
            r.status == StatusCode::CREATED,
            "bind: {} {}",
            r.status,
            r.body
        );
    }

    let queries = [
        "/api/v1/pods",
        "/api/v1/namespaces/a/pods",
        "/api/v1/namespaces/b/pods",
        "/api/v1/namespaces/empty/pods",
        "/api/v1/pods?labelSelector=app%3Dweb",
        "/api/v1/pods?labelSelector=app%21%3Dweb",
        "/api/v1/pods?labelSelector=tier+in+%28front%2Cnone%29",
        "/api/v1/pods?labelSelector=app%3Dweb%2Ctier%3Dback",
        "/api/v1/namespaces/a/pods?labelSelector=tier",
        "/api/v1/pods?fieldSelector=metadata.name%3Dweb-1",
        "/api/v1/pods?fieldSelector=metadata.namespace%3Db",
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1",
        "/api/v1/pods?fieldSelector=spec.nodeName%3D",
        "/api/v1/namespaces/a/pods?fieldSelector=status.phase%3DPending&labelSelector=app%3Dweb",
        "/api/v1/namespaces",
        "/api/v1/namespaces?fieldSelector=metadata.name%3Da",
    ];
    for q in queries {
        let sep = if q.contains('?') { '&' } else { '?' };
        let cached = api
            .cached(&format!("{q}{sep}resourceVersion=0"), None)
            .await?;
        let stored = api.stored(q, None).await?;
        assert_eq!(
            cached["items"], stored["items"],
            "{q}: items and their order"
        );
        assert_eq!(cached["kind"], stored["kind"], "{q}");
        assert!(
            rv(&cached) <= rv(&stored) && rv(&cached) > 0,
            "{q}: cached list at {} vs store at {}",
            rv(&cached),
            rv(&stored)
        );
        for shape in [PARTIAL, PROTOBUF] {
            let cached = api
                .cached(&format!("{q}{sep}resourceVersion=0"), Some(shape))
                .await?;
            let mut stored = api.stored(q, Some(shape)).await?;
            stored["metadata"] = cached["metadata"].clone();
            assert_eq!(cached, stored, "{q} as {shape}");
        }
        let cached = api
            .cached(&format!("{q}{sep}resourceVersion=0"), Some(TABLE))
            .await?;
        let stored = api.stored(q, Some(TABLE)).await?;
        assert_eq!(cached["kind"], "Table");
        assert_eq!(
            cached["columnDefinitions"], stored["columnDefinitions"],
            "{q}"
        );
        let row_names = |t: &Value| -> Vec<Value> {
            t["rows"]
                .as_array()
                .map(|rows| rows.iter().map(|r| r["cells"][0].clone()).collect())
                .unwrap_or_default()
        };
        assert_eq!(row_names(&cached), row_names(&stored), "{q} as Table");
    }
    let all = api.cached("/api/v1/pods?resourceVersion=0", None).await?;
    let keys: Vec<(String, String)> = all["items"]
        .as_array()
        .context("items")?
        .iter()
        .map(|i| {
            (
                i["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                i["metadata"]["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "sorted by namespace/name, like store keys");
    assert_eq!(keys.len(), 6);
    Ok(())
}

#[tokio::test]
async fn limit_is_ignored_by_cached_lists_and_honoured_by_the_store() -> Result<()> {
    let api = api().await?;
    for n in ["a", "b", "c"] {
        api.create(PODS, &pod(n, json!({}))).await?;
    }
    let list = api
        .cached(&format!("{PODS}?limit=1&resourceVersion=0"), None)
        .await?;
    assert_eq!(names(&list), ["a", "b", "c"], "RV=0 ignores limit");
    assert!(list["metadata"].get("continue").is_none());

    let list = api.stored(&format!("{PODS}?limit=1"), None).await?;
    assert_eq!(names(&list), ["a"]);
    let token = list["metadata"]["continue"].as_str().context("continue")?;
    let next = api
        .stored(&format!("{PODS}?limit=1&continue={token}"), None)
        .await?;
    assert_eq!(names(&next), ["b"]);

    // resourceVersion=N with a limit is a paginated (store) read, as in Kubernetes.
    let list = api
        .stored(
            &format!("{PODS}?limit=1&resourceVersion={}", rv(&list)),
            None,
        )
        .await?;
    assert_eq!(names(&list), ["a"]);
    Ok(())
}

#[tokio::test]
async fn resource_version_n_waits_for_the_cache_or_answers_504() -> Result<()> {
    let api = Arc::new(api().await?);
    let first = api.create(PODS, &pod("a", json!({}))).await?;

    // Not older than an old revision: the cache as it is.
    for q in [
        format!("{PODS}?resourceVersion={}", rv(&first)),
        format!(
            "{PODS}?resourceVersion={}&resourceVersionMatch=NotOlderThan",
            rv(&first)
        ),
    ] {
        let list = api.cached(&q, None).await?;
        assert_eq!(names(&list), ["a"]);
        assert!(rv(&list) >= rv(&first));
    }

    // A revision nobody has written yet: the list waits for the cache to
    // get there (woken by the write), then answers from it.
    let next = api.store.current_revision().await? + 1;
    let waiting = {
        let api = api.clone();
        tokio::spawn(async move {
            api.cached(
                &format!("{PODS}?resourceVersion={next}&resourceVersionMatch=NotOlderThan"),
                None,
            )
            .await
        })
    };
    // Let the list start waiting first (either order must pass).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let written = api.put_behind_our_back("default", "b").await?;
    assert_eq!(written, next);
    let list = waiting.await??;
    assert!(rv(&list) >= next);
    assert_eq!(names(&list), ["a", "b"]);

    // A revision reached by another resource only: the pods cache will not
    // move, the store answers (no 504).
    let cm = api
        .create(
            "/api/v1/namespaces/default/configmaps",
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
        )
        .await?;
    let list = api
        .stored(&format!("{PODS}?resourceVersion={}", rv(&cm)), None)
        .await?;
    assert!(rv(&list) >= rv(&cm));
    assert_eq!(names(&list), ["a", "b"]);
    Ok(())
}

#[tokio::test]
async fn a_future_resource_version_is_504_too_large_after_the_wait() -> Result<()> {
    let api = api_with(CacheOptions {
        freshness_wait: Duration::from_millis(300),
        ..CacheOptions::default()
    })
    .await?;
    api.create(PODS, &pod("a", json!({}))).await?;
    let future = api.store.current_revision().await? + 1000;
    for q in [
        format!("{PODS}?resourceVersion={future}"),
        format!("/api/v1/pods?resourceVersion={future}&resourceVersionMatch=NotOlderThan"),
    ] {
        let r = api.send("GET", &q, None, None).await?;
        assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{q}: {}", r.body);
        assert_eq!(r.body["kind"], "Status");
        assert_eq!(r.body["reason"], "Timeout");
        assert_eq!(r.body["code"], 504);
        assert!(
            r.body["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(&format!("Too large resource version: {future}"))),
            "{}",
            r.body
        );
        assert_eq!(
            r.body["details"]["causes"][0]["reason"],
            "ResourceVersionTooLarge"
        );
    }
    Ok(())
}

#[tokio::test]
async fn resource_version_match_is_validated_and_exact_reads_the_store() -> Result<()> {
    let api = api().await?;
    let a = api.create(PODS, &pod("a", json!({}))).await?;
    for (q, why) in [
        (
            "resourceVersionMatch=NotOlderThan",
            "unless resourceVersion is provided",
        ),
        (
            "resourceVersion=&resourceVersionMatch=Exact",
            "unless resourceVersion is provided",
        ),
        (
            "resourceVersion=0&resourceVersionMatch=Exact",
            "forbidden for resourceVersion \"0\"",
        ),
        (
            "resourceVersion=0&resourceVersionMatch=Newest",
            "Unsupported value",
        ),
        (
            "resourceVersion=5&resourceVersionMatch=NotOlderThan&continue=abc",
            "when continue is provided",
        ),
    ] {
        let r = api.send("GET", &format!("{PODS}?{q}"), None, None).await?;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{q}: {}",
            r.body
        );
        assert_eq!(r.body["reason"], "Invalid");
        assert_eq!(r.body["details"]["kind"], "ListOptions");
        assert_eq!(
            r.body["details"]["causes"][0]["field"],
            "resourceVersionMatch"
        );
        let msg = r.body["message"].as_str().unwrap_or("");
        assert!(
            msg.starts_with("ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: ")
                && msg.contains(why),
            "{q}: {msg}"
        );
    }
    let list = api
        .stored(
            &format!(
                "{PODS}?resourceVersion={}&resourceVersionMatch=Exact",
                rv(&a)
            ),
            None,
        )
        .await?;
    assert_eq!(names(&list), ["a"]);
    let list = api
        .cached(
            &format!("{PODS}?resourceVersion=0&resourceVersionMatch=NotOlderThan"),
            None,
        )
        .await?;
    assert_eq!(names(&list), ["a"]);
    Ok(())
}

#[tokio::test]
async fn a_cache_that_lost_its_history_relists_and_its_watchers_get_410() -> Result<()> {
    let api = api().await?;
    let rv0 = format!("{PODS}?resourceVersion=0");
    let a = api.create(PODS, &pod("a", json!({}))).await?;
    let list = api.cached(&rv0, None).await?;

    // A watcher served by the cache.
    let req = Request::builder()
        .uri(format!("{PODS}?watch=true&resourceVersion={}", rv(&list)))
        .body(Body::empty())?;
    let resp = api.router.clone().oneshot(req).await?;
    ensure!(resp.status() == StatusCode::OK, "watch: {}", resp.status());
    let mut watch_body = resp.into_body();

    // The store watch is lost; meanwhile the store moves on and compacts
    // away the history the cache would resume from.
    api.store.cut_watches();
    let b = api.put_behind_our_back("default", "b").await?;
    let (_, deleted) = api
        .store
        .delete("/registry/pods/default/a", Precondition::None)
        .await?;
    api.put_behind_our_back("default", "c").await?;
    let current = api.store.current_revision().await?;
    api.store.compact(current).await?;
    assert!(deleted > rv(&a) && b > rv(&a));
    api.store.allow_watches();

    // The cache re-lists: its lists show the store's state again...
    let list = api.eventually(&rv0, |l| names(l) == ["b", "c"]).await?;
    assert!(rv(&list) >= current);
    api.cached(&rv0, None).await?;

    // ...and the watcher that could not be caught up was closed.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = watch_body.frame().await {
            if frame.is_err() {
                break;
            }
        }
    })
    .await;
    ensure!(ended.is_ok(), "the old watcher was not closed");
    // Re-watching from where it was is 410 Expired (it must relist).
    let req = Request::builder()
        .uri(format!("{PODS}?watch=true&resourceVersion={}", rv(&a)))
        .body(Body::empty())?;
    let resp = api.router.clone().oneshot(req).await?;
    let bytes = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .context("the expired watch did not end")??
        .to_bytes();
    let event: Value = serde_json::from_slice(&bytes)?;
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);

    // Later writes reach the rebuilt cache.
    api.create(PODS, &pod("d", json!({}))).await?;
    let list = api.cached(&rv0, None).await?;
    assert_eq!(names(&list), ["b", "c", "d"]);
    Ok(())
}

/// An update reads the object from the watch cache, not the store; when the
/// cache's copy is behind the store (a write through another API server it
/// has not seen yet), the update goes by the store's state: a
/// resourceVersion precondition, a change that only looks like a no-op, and
/// a binding are all judged on the stored object.
#[tokio::test]
async fn updates_start_from_the_cached_copy_and_go_by_the_store_when_it_is_behind() -> Result<()> {
    let api = api().await?;
    let uri = format!("{PODS}/u");
    let merge = "application/merge-patch+json";
    api.create(PODS, &pod("u", json!({"v": "1"}))).await?;

    // Current cache: the patch needs no store read.
    api.caught_up(|p| p["metadata"]["labels"]["v"] == "1")
        .await?;
    let gets = api.store.gets();
    let r = api
        .send_typed(
            "PATCH",
            &uri,
            merge,
            &json!({"metadata": {"labels": {"v": "2"}}}),
        )
        .await?;
    ensure!(r.status == StatusCode::OK, "patch: {} {}", r.status, r.body);
    ensure!(r.body["metadata"]["labels"]["v"] == "2");
    ensure!(api.store.gets() == gets, "the patch read the store");

    // Another server writes v=3 that our cache has not seen; a PUT naming
    // the store's resourceVersion (the cache shows an older one) succeeds.
    api.caught_up(|p| p["metadata"]["labels"]["v"] == "2")
        .await?;
    let latest = api
        .write_behind_our_back(|p| p["metadata"]["labels"]["v"] = json!("3"))
        .await?;
    let mut put = api.ok(&uri, None).await?;
    ensure!(rv(&put) == latest);
    put["metadata"]["labels"]["v"] = json!("4");
    let r = api.send("PUT", &uri, None, Some(&put)).await?;
    ensure!(r.status == StatusCode::OK, "put: {} {}", r.status, r.body);
    ensure!(r.body["metadata"]["labels"]["v"] == "4");

    // Another server writes v=5; setting v=4 looks like no change to the
    // cache's copy, but is one.
    api.caught_up(|p| p["metadata"]["labels"]["v"] == "4")
        .await?;
    let latest = api
        .write_behind_our_back(|p| p["metadata"]["labels"]["v"] = json!("5"))
        .await?;
    let r = api
        .send_typed(
            "PATCH",
            &uri,
            merge,
            &json!({"metadata": {"labels": {"v": "4"}}}),
        )
        .await?;
    ensure!(r.status == StatusCode::OK, "patch: {} {}", r.status, r.body);
    ensure!(r.body["metadata"]["labels"]["v"] == "4");
    ensure!(
        rv(&r.body) > latest,
        "not written: rv {}, store had {latest}",
        rv(&r.body)
    );

    // Another server binds the pod; our binding, allowed by the cache's
    // copy, is refused by the store's.
    api.caught_up(|p| p["metadata"]["labels"]["v"] == "4")
        .await?;
    api.write_behind_our_back(|p| p["spec"]["nodeName"] = json!("n1"))
        .await?;
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "u"}, "target": {"kind": "Node", "name": "n2"}});
    let r = api
        .send("POST", &format!("{uri}/binding"), None, Some(&binding))
        .await?;
    ensure!(
        r.status == StatusCode::CONFLICT,
        "binding: {} {}",
        r.status,
        r.body
    );
    ensure!(
        r.body["message"].as_str().is_some_and(|m| m.contains("n1")),
        "{}",
        r.body
    );

    // Another server deletes and recreates the pod, unbound; our cache still
    // shows it bound, but the store's pod takes the binding.
    api.caught_up(|p| p["spec"]["nodeName"] == "n1").await?;
    api.write_behind_our_back(|p| {
        p["metadata"]["uid"] = json!("recreated");
        if let Some(spec) = p["spec"].as_object_mut() {
            spec.remove("nodeName");
        }
    })
    .await?;
    let r = api
        .send("POST", &format!("{uri}/binding"), None, Some(&binding))
        .await?;
    ensure!(
        r.status == StatusCode::CREATED,
        "binding: {} {}",
        r.status,
        r.body
    );
    api.caught_up(|p| p["spec"]["nodeName"] == "n2").await?;
    Ok(())
}

impl Api {
    /// Lets the cache's watch run until the cached pod `u` satisfies `pred`.
    async fn caught_up(&self, pred: impl Fn(&Value) -> bool) -> Result<()> {
        self.store.hold_watches(false);
        self.eventually(&format!("{PODS}?resourceVersion=0"), |l| {
            l["items"]
                .as_array()
                .is_some_and(|items| items.len() == 1 && pred(&items[0]))
        })
        .await?;
        Ok(())
    }

    /// Changes pod `u` in the store as another API server would, with the
    /// cache's watch held so it does not see the change; the new revision.
    async fn write_behind_our_back(&self, change: impl FnOnce(&mut Value)) -> Result<i64> {
        self.store.hold_watches(true);
        let key = "/registry/pods/default/u";
        let stored = self.store.inner.get(key).await?.context("stored pod")?;
        let mut p: Value = serde_json::from_slice(&stored.value)?;
        change(&mut p);
        let kv = self
            .store
            .inner
            .put(
                key,
                Bytes::from(serde_json::to_vec(&p)?),
                Precondition::ModRevision(stored.mod_revision),
            )
            .await?;
        Ok(kv.mod_revision)
    }
}

/// A watch from before the cache's window is served by a store watch of
/// its own; when its client reads too slowly for the store to keep its
/// events, the watch ends cleanly (as Kubernetes ends a slow watcher)
/// rather than with an ERROR event, and what it delivered is gap-free, so
/// the client's re-watch from its last resourceVersion loses nothing.
#[tokio::test]
async fn a_store_watch_that_falls_behind_ends_without_an_error_event() -> Result<()> {
    let cache = CacheOptions {
        window: 2,
        ..CacheOptions::default()
    };
    let api = api_with_store(cache, EmbeddedOptions { watch_buffer: 4 }).await?;
    let first = api.create(PODS, &pod("w0", json!({}))).await?;
    for i in 1..5 {
        api.create(PODS, &pod(&format!("w{i}"), json!({}))).await?;
    }
    let from = rv(&first);
    let request = Request::builder()
        .uri(format!("{PODS}?watch=true&resourceVersion={from}"))
        .body(Body::empty())?;
    let watch = api.router.clone().oneshot(request).await?;
    ensure!(
        watch.status() == StatusCode::OK,
        "watch: {}",
        watch.status()
    );
    // Nobody reads the watch while 150 more pods are written.
    for i in 5..155 {
        api.create(PODS, &pod(&format!("w{i}"), json!({}))).await?;
    }
    let body = tokio::time::timeout(Duration::from_secs(30), watch.into_body().collect())
        .await
        .context("the lagging watch never ended")??
        .to_bytes();
    let mut revisions = Vec::new();
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let event: Value = serde_json::from_slice(line)?;
        ensure!(event["type"] == "ADDED", "unexpected event: {event}");
        revisions.push(rv(&event["object"]));
    }
    ensure!(!revisions.is_empty(), "the watch delivered nothing");
    ensure!(revisions.len() < 154, "the watch never fell behind");
    ensure!(revisions[0] > from, "{revisions:?}");
    ensure!(
        revisions.windows(2).all(|w| w[1] == w[0] + 1),
        "events were skipped: {revisions:?}"
    );
    Ok(())
}
