//! Events expire (kube-apiserver's `--event-ttl`, default one hour).
//!
//! Kubernetes stores each Event under an etcd lease of the TTL, renewed by
//! every write of it, so an Event disappears once nothing has updated it
//! for that long; without that, a cluster that churns pods would keep every
//! `Scheduled`/`Pulled`/`Killing` line forever, in the store and in the
//! watch cache. Here one task per API server does the same on both
//! backends: every `interval` it pages through `/registry/events/` and
//! deletes each Event whose last time (the latest of `lastTimestamp`,
//! `eventTime`, `series.lastObservedTime`, `firstTimestamp` and
//! `metadata.creationTimestamp`) is older than the TTL. Each delete is
//! conditional on the revision it read, so an Event updated meanwhile (its
//! count bumped) stays. Several API servers on one etcd may run it at once;
//! a lost race is a harmless conflict.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::storage::{Error, Precondition, Store};

/// Where Events (core/v1 and events.k8s.io/v1 alike) are stored.
pub const EVENTS_PREFIX: &str = "/registry/events/";

/// Keys read per page.
const PAGE: usize = 500;

/// When an Event was last written, as the Event itself says; `None` when it
/// carries no readable time (kept: deleting is never the safe guess).
pub fn last_time(event: &Value) -> Option<jiff::Timestamp> {
    [
        "/lastTimestamp",
        "/eventTime",
        "/series/lastObservedTime",
        "/deprecatedLastTimestamp",
        "/firstTimestamp",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .filter_map(|p| event.pointer(p)?.as_str()?.parse::<jiff::Timestamp>().ok())
    .max()
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Events read.
    pub seen: usize,
    /// Events deleted.
    pub expired: usize,
}

/// Deletes the Events last written more than `ttl` before `now`.
pub async fn expire_once(
    store: &dyn Store,
    ttl: Duration,
    now: jiff::Timestamp,
) -> Result<Pass, Error> {
    let ttl = jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::MAX);
    let mut pass = Pass::default();
    let mut after: Option<String> = None;
    loop {
        let page = store.range(EVENTS_PREFIX, after.as_deref(), PAGE).await?;
        for kv in &page.kvs {
            pass.seen += 1;
            let Ok(event) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            let expired = last_time(&event)
                .and_then(|t| now.duration_since(t).checked_sub(ttl))
                .is_some_and(|over| over.is_positive());
            if !expired {
                continue;
            }
            match store
                .delete(&kv.key, Precondition::ModRevision(kv.mod_revision))
                .await
            {
                Ok(_) => pass.expired += 1,
                // Updated or deleted meanwhile: not ours to remove now.
                Err(Error::Conflict { .. } | Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        match (page.more, page.kvs.last()) {
            (true, Some(last)) => after = Some(last.key.clone()),
            _ => return Ok(pass),
        }
    }
}

/// Runs [`expire_once`] every `interval` until `cancel`.
pub fn spawn(
    store: Arc<dyn Store>,
    ttl: Duration,
    interval: Duration,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let interval = interval.max(Duration::from_secs(1));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let pass = tokio::select! {
                _ = cancel.cancelled() => return,
                r = expire_once(store.as_ref(), ttl, jiff::Timestamp::now()) => r,
            };
            match pass {
                Ok(p) if p.expired > 0 => {
                    tracing::debug!(seen = p.seen, expired = p.expired, "expired old events");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "expiring old events failed; will retry"),
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::embedded::EmbeddedStore;
    use bytes::Bytes;
    use serde_json::json;

    fn event(name: &str, last: &str) -> Bytes {
        Bytes::from(
            serde_json::to_vec(&json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": "default",
                             "creationTimestamp": "2026-01-01T00:00:00Z"},
                "lastTimestamp": last,
            }))
            .unwrap(),
        )
    }

    #[test]
    fn the_latest_time_an_event_carries_counts() {
        let v = json!({"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
                       "firstTimestamp": "2026-01-01T00:00:00Z",
                       "series": {"lastObservedTime": "2026-01-01T05:00:00.000001Z"},
                       "lastTimestamp": "2026-01-01T03:00:00Z", "eventTime": null});
        assert_eq!(
            last_time(&v).unwrap(),
            "2026-01-01T05:00:00.000001Z"
                .parse::<jiff::Timestamp>()
                .unwrap()
        );
        assert_eq!(last_time(&json!({"metadata": {}})), None);
    }

    #[tokio::test]
    async fn events_older_than_the_ttl_go_and_the_rest_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("db")).unwrap();
        let now: jiff::Timestamp = "2026-01-01T02:00:00Z".parse().unwrap();
        // 1201 old ones span three pages; a fresh one, one without a time
        // and an object outside the prefix stay.
        for i in 0..1201 {
            let key = format!("{EVENTS_PREFIX}default/old-{i:04}");
            store
                .put(
                    &key,
                    event("old", "2026-01-01T00:30:00Z"),
                    Precondition::None,
                )
                .await
                .unwrap();
        }
        let fresh = format!("{EVENTS_PREFIX}default/fresh");
        store
            .put(
                &fresh,
                event("fresh", "2026-01-01T01:30:00Z"),
                Precondition::None,
            )
            .await
            .unwrap();
        let timeless = format!("{EVENTS_PREFIX}default/timeless");
        store
            .put(
                &timeless,
                Bytes::from_static(b"{\"kind\":\"Event\"}"),
                Precondition::None,
            )
            .await
            .unwrap();
        store
            .put(
                "/registry/pods/default/p",
                event("p", "2000-01-01T00:00:00Z"),
                Precondition::None,
            )
            .await
            .unwrap();
        let pass = expire_once(&store, Duration::from_secs(3600), now)
            .await
            .unwrap();
        assert_eq!(
            pass,
            Pass {
                seen: 1203,
                expired: 1201
            }
        );
        let left: Vec<String> = store
            .range(EVENTS_PREFIX, None, 0)
            .await
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(left, vec![fresh, timeless]);
        assert!(
            store
                .get("/registry/pods/default/p")
                .await
                .unwrap()
                .is_some()
        );
    }
}
