//! The module store's HTTP API on both backends (etcd with its default
//! 1.5 MiB request limit): large pushes, digest checks on upload, streamed
//! blobs, tag deletion and the collector started by `start`.

mod http_modules_support;

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use http_modules_support::{Backend, TestStore, module_of, sha256};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use wasmkube_apiserver::modules::blobs::CHUNK_BYTES;
use wasmkube_apiserver::modules::gc::{GcOptions, collect_garbage};
use wasmkube_apiserver::storage::Store;
use wasmkube_apiserver::{Config, app};

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
    large_modules_push_stream_and_delete,
    uploads_damaged_in_transit_are_refused,
    concurrent_pushes_of_one_module_store_it_once,
);

/// The router over a store, with the admin token.
struct Api {
    router: axum::Router,
    token: String,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
    _store: TestStore,
}

impl Api {
    async fn new(backend: Backend) -> Result<Api> {
        let t = TestStore::open(backend).await?;
        let store = t.store.clone();
        let shutdown = CancellationToken::new();
        let mut state = common::app_state(t.dir.path(), store.clone(), &[], &shutdown).await?;
        state.limits.module = wasmkube_api::wasm::MAX_MODULE_BYTES;
        let token = common::token_of(&state.tokens, "admin")?;
        let router = app(state);
        Ok(Api {
            router,
            token,
            store,
            shutdown,
            _store: t,
        })
    }

    async fn send(&self, method: &str, uri: &str, body: Vec<u8>) -> Result<(StatusCode, Vec<u8>)> {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, "application/wasm")
            .body(Body::from(body))?;
        let resp = self.router.clone().oneshot(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes().to_vec();
        Ok((status, bytes))
    }

    async fn json(&self, method: &str, uri: &str, body: Vec<u8>) -> Result<(StatusCode, Value)> {
        let (status, bytes) = self.send(method, uri, body).await?;
        let v = serde_json::from_slice(&bytes)
            .with_context(|| format!("{method} {uri}: {}", String::from_utf8_lossy(&bytes)))?;
        Ok((status, v))
    }

    async fn keys(&self, prefix: &str) -> Result<usize> {
        let mut n = 0;
        let mut after: Option<String> = None;
        loop {
            let r = self.store.range(prefix, after.as_deref(), 1).await?;
            let Some(last) = r.kvs.last() else {
                return Ok(n);
            };
            after = Some(last.key.clone());
            n += r.kvs.len();
            if !r.more {
                return Ok(n);
            }
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn large_modules_push_stream_and_delete(backend: Backend) -> Result<()> {
    let api = Api::new(backend).await?;
    // Several times etcd's default request limit.
    let module = module_of(5 * CHUNK_BYTES + 777, 11);
    let digest = sha256(&module);
    let (status, info) = api
        .json(
            "PUT",
            &format!("/wasmkube/v1/modules/big/v1?digest={digest}"),
            module.clone(),
        )
        .await?;
    ensure!(status == StatusCode::CREATED, "{status}: {info}");
    ensure!(
        info["digest"] == digest.as_str() && info["size"] == module.len(),
        "{info}"
    );
    ensure!(api.keys("/wasmkube/chunks/").await? == 6);

    let (status, got) = api
        .json("GET", "/wasmkube/v1/modules/big/v1", vec![])
        .await?;
    ensure!(status == StatusCode::OK && got == info, "{status}: {got}");

    // Streamed with its length announced.
    let req = Request::get(format!("/wasmkube/v1/blobs/{digest}"))
        .header(header::AUTHORIZATION, format!("Bearer {}", api.token))
        .body(Body::empty())?;
    let resp = api.router.clone().oneshot(req).await?;
    ensure!(resp.status() == StatusCode::OK);
    let length = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    ensure!(length == Some(module.len().to_string()), "{length:?}");
    let body = resp.into_body().collect().await?.to_bytes();
    ensure!(body.as_ref() == module.as_slice(), "the blob reads back");

    let (status, resolved) = api
        .json(
            "GET",
            &format!("/wasmkube/v1/resolve?image=big@{digest}"),
            vec![],
        )
        .await?;
    ensure!(
        status == StatusCode::OK && resolved["size"] == module.len(),
        "{resolved}"
    );

    // Deleting the tag answers what it was; the blob waits for the collector.
    let (status, deleted) = api
        .json("DELETE", "/wasmkube/v1/modules/big/v1", vec![])
        .await?;
    ensure!(
        status == StatusCode::OK && deleted == info,
        "{status}: {deleted}"
    );
    let (status, v) = api
        .json("GET", "/wasmkube/v1/modules/big/v1", vec![])
        .await?;
    ensure!(status == StatusCode::NOT_FOUND, "{status}: {v}");
    let (status, v) = api
        .json("DELETE", "/wasmkube/v1/modules/big/v1", vec![])
        .await?;
    ensure!(
        status == StatusCode::NOT_FOUND && v["message"] == "module \"big:v1\" not found",
        "{status}: {v}"
    );
    let (_, list) = api.json("GET", "/wasmkube/v1/modules", vec![]).await?;
    ensure!(list["items"] == serde_json::json!([]), "{list}");
    let (status, _) = api
        .send("GET", &format!("/wasmkube/v1/blobs/{digest}"), vec![])
        .await?;
    ensure!(status == StatusCode::OK, "kept during the grace period");

    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    let report = collect_garbage(api.store.as_ref(), GcOptions::default().grace, later).await?;
    ensure!(report.blobs_removed == vec![digest.clone()], "{report:?}");
    let (status, _) = api
        .send("GET", &format!("/wasmkube/v1/blobs/{digest}"), vec![])
        .await?;
    ensure!(status == StatusCode::NOT_FOUND);
    ensure!(api.keys("/wasmkube/chunks/").await? == 0);
    Ok(())
}

async fn uploads_damaged_in_transit_are_refused(backend: Backend) -> Result<()> {
    let api = Api::new(backend).await?;
    let module = module_of(2 * CHUNK_BYTES, 4);
    let other = format!("sha256:{}", "ab".repeat(32));
    let (status, v) = api
        .json(
            "PUT",
            &format!("/wasmkube/v1/modules/bad/v1?digest={other}"),
            module.clone(),
        )
        .await?;
    ensure!(status == StatusCode::BAD_REQUEST, "{status}: {v}");
    let msg = v["message"].as_str().unwrap_or_default();
    ensure!(
        msg.contains("digest mismatch") && msg.contains(&other) && msg.contains(&sha256(&module)),
        "{msg}"
    );
    let (status, v) = api
        .json(
            "PUT",
            "/wasmkube/v1/modules/bad/v1?digest=md5:x",
            module.clone(),
        )
        .await?;
    ensure!(status == StatusCode::BAD_REQUEST, "{status}: {v}");
    // Nothing was stored.
    for prefix in [
        "/wasmkube/blobs/",
        "/wasmkube/chunks/",
        "/wasmkube/uploads/",
        "/wasmkube/modules/",
    ] {
        ensure!(api.keys(prefix).await? == 0, "{prefix} is empty");
    }
    // Without a declared digest the server's own hash is the digest.
    let (status, info) = api
        .json("PUT", "/wasmkube/v1/modules/bad/v1", module.clone())
        .await?;
    ensure!(
        status == StatusCode::CREATED && info["digest"] == sha256(&module).as_str(),
        "{info}"
    );
    Ok(())
}

async fn concurrent_pushes_of_one_module_store_it_once(backend: Backend) -> Result<()> {
    let api = Arc::new(Api::new(backend).await?);
    let module = module_of(3 * CHUNK_BYTES + 1, 8);
    let digest = sha256(&module);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..4 {
        let api = api.clone();
        let module = module.clone();
        tasks.spawn(async move {
            api.json("PUT", &format!("/wasmkube/v1/modules/same/v{i}"), module)
                .await
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (status, info) = done??;
        ensure!(
            status == StatusCode::CREATED && info["digest"] == digest.as_str(),
            "{status}: {info}"
        );
    }
    ensure!(api.keys("/wasmkube/blobs/").await? == 1);
    // The losers' chunks were removed, the winner's are all there.
    ensure!(api.keys("/wasmkube/chunks/").await? == 4);
    ensure!(api.keys("/wasmkube/uploads/").await? == 0);
    let (status, body) = api
        .send("GET", &format!("/wasmkube/v1/blobs/{digest}"), vec![])
        .await?;
    ensure!(status == StatusCode::OK && body == module);
    Ok(())
}

/// `start` runs the collector: a deleted tag's module goes, a tagged one stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_collects_modules_whose_tags_are_deleted() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let running = wasmkube_apiserver::start(
        Config {
            // A grace period of a few seconds: long enough for a push to
            // write its tag, short enough for the test.
            module_gc: GcOptions {
                interval: Duration::from_secs(1),
                grace: Duration::from_secs(3),
            },
            ..common::server_config(dir.path())
        },
        shutdown.clone(),
    )
    .await?;
    let client = common::https_client(&running.ca_pem)?
        .timeout(Duration::from_secs(60))
        .build()?;
    let url = |p: &str| format!("{}{p}", running.url);
    let token = running.admin_token.clone();
    let mut digests = Vec::new();
    for (name, fill) in [("keep", 1u8), ("drop", 2u8)] {
        let module = module_of(CHUNK_BYTES + 10, fill);
        let resp = client
            .put(url(&format!("/wasmkube/v1/modules/{name}/v1")))
            .bearer_auth(&token)
            .body(module.clone())
            .send()
            .await?;
        ensure!(resp.status() == 201, "{}", resp.status());
        digests.push(sha256(&module));
    }
    let resp = client
        .delete(url("/wasmkube/v1/modules/drop/v1"))
        .bearer_auth(&token)
        .send()
        .await?;
    ensure!(resp.status() == 200, "{}", resp.status());

    let blob_status = |d: String| {
        let client = client.clone();
        let token = token.clone();
        let u = url(&format!("/wasmkube/v1/blobs/{d}"));
        async move { Ok::<_, anyhow::Error>(client.get(u).bearer_auth(token).send().await?.status()) }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = blob_status(digests[1].clone()).await?;
        if status == 404 {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the untagged module was not collected: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        blob_status(digests[0].clone()).await? == 200,
        "the tagged module stays"
    );
    shutdown.cancel();
    running.done.await?;
    Ok(())
}
