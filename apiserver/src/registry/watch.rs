//! HTTP watch: a chunked stream of `{"type":…,"object":…}` lines fed by the
//! resource's watch cache (or, for a start older than the cache's window,
//! by a store watch of its own).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use rand::Rng as _;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use wasmkube_api::resources::ResourceInfo;
use wasmkube_api::selector::{FieldOperator, FieldRequirement};
use wasmkube_api::status;

use super::handlers::render;
use super::object::{self, Filter};
use super::request::{Output, Params};
use super::{Registry, collection_prefix};
use crate::error::{ApiError, Result};
use crate::storage;
use crate::watch_cache::{CacheMessage, CachedEvent, Change, wait_for_revision};

/// Lines buffered towards one HTTP client before backpressure.
const OUT_BUFFER: usize = 64;

/// Where a watcher's events come from.
enum Source {
    Cache(mpsc::Receiver<CacheMessage>),
    Store(storage::WatchStream),
}

impl Source {
    async fn next(&mut self) -> Option<std::result::Result<CacheMessage, storage::Error>> {
        match self {
            Source::Cache(rx) => rx.recv().await.map(Ok),
            Source::Store(s) => loop {
                match s.next().await? {
                    Ok(ev) => {
                        if let Some(ev) = CachedEvent::from_store(ev) {
                            return Some(Ok(CacheMessage::Event(Arc::new(ev))));
                        }
                    }
                    Err(e) => return Some(Err(e)),
                }
            },
        }
    }
}

/// One HTTP watcher's state.
struct Watcher {
    res: &'static ResourceInfo,
    filter: Filter,
    output: Output,
    bookmarks: bool,
    /// Only events after this revision are sent.
    after: i64,
    /// Table output sends columnDefinitions once.
    columns_sent: bool,
    tx: mpsc::Sender<Bytes>,
}

fn line(kind: &str, object: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(object.len() + 32);
    b.extend_from_slice(b"{\"type\":\"");
    b.extend_from_slice(kind.as_bytes());
    b.extend_from_slice(b"\",\"object\":");
    b.extend_from_slice(object);
    b.extend_from_slice(b"}\n");
    Bytes::from(b)
}

impl Watcher {
    /// Sends one line; `false` when the client is gone.
    async fn send(&self, bytes: Bytes) -> bool {
        self.tx.send(bytes).await.is_ok()
    }

    async fn send_object(&mut self, kind: &str, obj: &Value, json: Option<Bytes>) -> bool {
        let bytes = match (self.output, json) {
            (Output::Json, Some(j)) => j,
            _ => {
                let rendered = render(self.res, obj.clone(), self.output, !self.columns_sent);
                self.columns_sent = true;
                match serde_json::to_vec(&rendered) {
                    Ok(b) => Bytes::from(b),
                    Err(_) => return true,
                }
            }
        };
        self.send(line(kind, &bytes)).await
    }

    async fn send_error(&self, err: ApiError) {
        let s = status::to_json(&err.0);
        if let Ok(b) = serde_json::to_vec(&s) {
            let _ = self.send(line("ERROR", &b)).await;
        }
    }

    async fn send_bookmark(&self, revision: i64, initial_events_end: bool) -> bool {
        match serde_json::to_vec(&object::bookmark(self.res, revision, initial_events_end)) {
            Ok(b) => self.send(line("BOOKMARK", &b)).await,
            Err(_) => true,
        }
    }

    /// Delivers one cached event through the filter, turning selector
    /// transitions into ADDED/DELETED like Kubernetes' cacher.
    async fn deliver(&mut self, ev: &CachedEvent) -> bool {
        if ev.revision <= self.after {
            return true;
        }
        let kind = self.res.kind;
        let cur = ev.change != Change::Deleted && self.filter.matches(kind, &ev.object);
        // Without label or field selectors only the namespace filters, and
        // an object never changes namespace: the previous state matches
        // when it existed and the object matches (no need to decode it).
        let selects = !self.filter.labels.is_empty() || !self.filter.fields.is_empty();
        let prev = match ev.change {
            Change::Deleted => self.filter.matches(kind, &ev.object),
            _ if !selects => ev.has_prev() && self.filter.matches(kind, &ev.object),
            _ => ev
                .prev()
                .is_some_and(|(p, _)| self.filter.matches(kind, &p)),
        };
        match (prev, cur) {
            (false, true) => {
                self.send_object("ADDED", &ev.object, Some(ev.object_json.clone()))
                    .await
            }
            (true, true) => {
                self.send_object("MODIFIED", &ev.object, Some(ev.object_json.clone()))
                    .await
            }
            (true, false) if ev.change == Change::Deleted => {
                self.send_object("DELETED", &ev.object, Some(ev.object_json.clone()))
                    .await
            }
            (true, false) => match ev.prev() {
                Some((p, json)) => self.send_object("DELETED", &p, Some(json)).await,
                None => true,
            },
            (false, false) => true,
        }
    }
}

/// Serves `?watch=true` on a collection (or one object by name).
pub(super) async fn watch(
    reg: Arc<Registry>,
    res: &'static ResourceInfo,
    namespace: Option<&str>,
    name: Option<&str>,
    params: &Params,
    output: Output,
) -> Result<Response> {
    let mut filter = params.filter(res, namespace)?;
    if let Some(name) = name {
        filter.fields.requirements.push(FieldRequirement {
            field: "metadata.name".into(),
            operator: FieldOperator::Equals,
            value: name.to_string(),
        });
    }
    let start = params.revision()?;
    let initial_events = start.is_none() || params.send_initial_events;
    let timeout = match params.timeout_seconds {
        Some(s) if s > 0 => Duration::from_secs(s),
        _ => {
            let lo = reg.options.min_watch_timeout.as_secs();
            let hi = reg.options.max_watch_timeout.as_secs().max(lo);
            Duration::from_secs(rand::rng().random_range(lo..=hi))
        }
    };

    // The initial state (for "" / "0" / sendInitialEvents) and the revision
    // live events continue from.
    let (initial, after) = if initial_events {
        let ns = namespace;
        let (items, rev, _) = reg.list(res, ns, &filter, None, None).await?;
        (items, rev)
    } else {
        (Vec::new(), start.unwrap_or(0))
    };

    let cache = reg.cache(res).cloned();
    let mut backlog = Vec::new();
    let fresh = if initial_events {
        Ok(())
    } else {
        wait_for_revision(reg.store.as_ref(), after, reg.options.cache.freshness_wait).await
    };
    let source = match fresh.map(|()| cache.as_ref().and_then(|c| c.subscribe(after))) {
        Err(e) => Err(e),
        Ok(Some(sub)) => {
            backlog = sub.backlog;
            Ok(Source::Cache(sub.receiver))
        }
        Ok(None) => {
            let prefix = collection_prefix(res, namespace);
            reg.store
                .watch(&prefix, after)
                .await
                .map(Source::Store)
                .map_err(|e| ApiError::from_storage(e, res.group, res.plural, ""))
        }
    };

    let (tx, rx) = mpsc::channel::<Bytes>(OUT_BUFFER);
    let mut w = Watcher {
        res,
        filter,
        output,
        bookmarks: params.allow_watch_bookmarks,
        after,
        columns_sent: false,
        tx,
    };
    let send_initial_end = params.send_initial_events && params.allow_watch_bookmarks;
    let shutdown = reg.shutdown.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut source = match source {
            Ok(s) => s,
            Err(e) => {
                // Too old (or otherwise unwatchable): one ERROR event, then close.
                w.send_error(e).await;
                return;
            }
        };
        for obj in &initial {
            if !w.send_object("ADDED", obj, None).await {
                return;
            }
        }
        if send_initial_end && !w.send_bookmark(after, true).await {
            return;
        }
        for ev in &backlog {
            if !w.deliver(ev).await {
                return;
            }
        }
        drop(backlog);
        loop {
            let msg = tokio::select! {
                _ = &mut deadline => return,
                _ = shutdown.cancelled() => return,
                _ = w.tx.closed() => return,
                m = source.next() => m,
            };
            match msg {
                None => return,
                // The store's watch could not keep up: end this watch, as
                // Kubernetes ends a slow watcher; the client re-watches from
                // the last resourceVersion it saw.
                Some(Err(storage::Error::Lagged { after })) => {
                    tracing::debug!(
                        resource = res.plural,
                        after,
                        "ending a watch that fell behind"
                    );
                    return;
                }
                Some(Err(e)) => {
                    w.send_error(ApiError::from_storage(e, res.group, res.plural, ""))
                        .await;
                    return;
                }
                Some(Ok(CacheMessage::Event(ev))) => {
                    if !w.deliver(&ev).await {
                        return;
                    }
                }
                Some(Ok(CacheMessage::Progress(rev))) => {
                    if w.bookmarks && rev > w.after && !w.send_bookmark(rev, false).await {
                        return;
                    }
                }
            }
        }
    });

    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}
