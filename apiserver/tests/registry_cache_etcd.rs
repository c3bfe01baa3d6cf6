//! The watch cache with two API servers (two registries, each with its own
//! etcd client and caches) sharing one real etcd: each serves
//! `resourceVersion=0` lists from its cache, and each cache follows the
//! writes made through the other server.
//!
//! A missing `etcd` binary fails this test (install Debian's `etcd-server`,
//! scripts/setup.sh); it never skips.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use common::etcd::Etcd;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use wasmkube_apiserver::registry::{self, Registry};
use wasmkube_apiserver::storage::etcd::EtcdStore;
use wasmkube_apiserver::storage::{self, KeyValue, Precondition, RangeResult, Store, WatchStream};

const PODS: &str = "/api/v1/namespaces/default/pods";
const DEADLINE: Duration = Duration::from_secs(30);

/// A store counting its range reads (every store list is at least one).
struct Counting {
    inner: EtcdStore,
    ranges: AtomicUsize,
}

#[async_trait::async_trait]
impl Store for Counting {
    async fn get(&self, key: &str) -> storage::Result<Option<KeyValue>> {
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

/// One API server: its own etcd client, registry and caches.
struct Server {
    store: Arc<Counting>,
    router: Router,
}

impl Server {
    async fn start(etcd: &Etcd, shutdown: &CancellationToken) -> Result<Server> {
        let store = Arc::new(Counting {
            inner: EtcdStore::connect(etcd.options("/cache-test")).await?,
            ranges: AtomicUsize::new(0),
        });
        let registry = Registry::start(store.clone(), shutdown.child_token()).await?;
        Ok(Server {
            store,
            router: registry::routes(registry),
        })
    }

    async fn send(&self, method: &str, uri: &str, ct: &str, body: Option<Value>) -> Result<Value> {
        let body = match body {
            Some(v) => Body::from(serde_json::to_vec(&v)?),
            None => Body::empty(),
        };
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", ct)
            .body(body)?;
        let resp = self.router.clone().oneshot(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let v: Value = serde_json::from_slice(&bytes)
            .with_context(|| String::from_utf8_lossy(&bytes).to_string())?;
        ensure!(
            status == StatusCode::OK || status == StatusCode::CREATED,
            "{method} {uri}: {status} {v}"
        );
        Ok(v)
    }

    async fn create_pod(&self, name: &str) -> Result<Value> {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "hello:v1"}]}
        });
        self.send("POST", PODS, "application/json", Some(pod)).await
    }

    /// A list and whether the store was read for it.
    async fn list(&self, uri: &str) -> Result<(Value, bool)> {
        let before = self.store.ranges.load(Ordering::SeqCst);
        let list = self.send("GET", uri, "application/json", None).await?;
        Ok((list, self.store.ranges.load(Ordering::SeqCst) > before))
    }

    /// Polls `resourceVersion=0` until the cache answers with `names`.
    async fn cached_until(&self, names: &[&str]) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let (list, read_store) = self.list(&format!("{PODS}?resourceVersion=0")).await?;
            if !read_store && item_names(&list) == names {
                return Ok(list);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the cache never listed {names:?}; last: {list} (store read: {read_store})");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn item_names(list: &Value) -> Vec<String> {
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

fn rv(v: &Value) -> i64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_servers_on_one_etcd_list_each_others_writes_from_their_caches() -> Result<()> {
    let etcd = Etcd::start().await?;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let a = Server::start(&etcd, &shutdown).await?;
    let b = Server::start(&etcd, &shutdown).await?;
    let namespace =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
    a.send(
        "POST",
        "/api/v1/namespaces",
        "application/json",
        Some(namespace),
    )
    .await?;

    let p1 = a.create_pod("p1").await?;
    let p2 = b.create_pod("p2").await?;
    // Each server lists its own write at once, and the other's eventually,
    // from its cache.
    let (list, read_store) = a.list(&format!("{PODS}?resourceVersion=0")).await?;
    ensure!(!read_store, "a's RV=0 list read the store");
    ensure!(item_names(&list).contains(&"p1".to_string()), "{list}");
    let on_a = a.cached_until(&["p1", "p2"]).await?;
    let on_b = b.cached_until(&["p1", "p2"]).await?;
    assert_eq!(on_a["items"], on_b["items"]);
    assert_eq!(rv(&on_a), rv(&p2));
    assert_eq!(rv(&on_b), rv(&p2));

    // Not older than a revision written through the other server: a's
    // answer includes it, whichever copy serves it.
    let p3 = b.create_pod("p3").await?;
    let (list, _) = a
        .list(&format!(
            "{PODS}?resourceVersion={}&resourceVersionMatch=NotOlderThan",
            rv(&p3)
        ))
        .await?;
    assert_eq!(item_names(&list), ["p1", "p2", "p3"]);
    assert!(rv(&list) >= rv(&p3));

    // An update through one, a delete through the other: both caches agree,
    // at the same revision.
    let patched = b
        .send(
            "PATCH",
            &format!("{PODS}/p1"),
            "application/merge-patch+json",
            Some(json!({"metadata": {"labels": {"patched": "yes"}}})),
        )
        .await?;
    a.send("DELETE", &format!("{PODS}/p2"), "application/json", None)
        .await?;
    let on_a = a.cached_until(&["p1", "p3"]).await?;
    let on_b = b.cached_until(&["p1", "p3"]).await?;
    assert_eq!(on_a["items"], on_b["items"]);
    assert_eq!(rv(&on_a), rv(&on_b));
    assert!(rv(&on_a) > rv(&patched));
    assert_eq!(on_a["items"][0]["metadata"]["labels"]["patched"], "yes");
    assert!(rv(&p1) < rv(&patched));

    // And a consistent read agrees with both.
    let (stored, read_store) = b.list(PODS).await?;
    ensure!(read_store, "an RV=\"\" list must read the store");
    assert_eq!(stored["items"], on_a["items"]);
    Ok(())
}
