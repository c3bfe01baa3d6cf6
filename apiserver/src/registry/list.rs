//! Which copy answers a list: the store or the resource's watch cache
//! ([`Params::list_from`] decides by `resourceVersion`, as Kubernetes does).
//!
//! A cached list is the cache's copy at the cache's revision, filtered here.
//! Two waits keep it honest, both woken by the cache's own progress (never
//! by polling) and bounded by [`crate::watch_cache::CacheOptions::freshness_wait`]:
//! - read-your-writes on this server: a list waits until the cache has
//!   applied this server's last write of the resource;
//! - `resourceVersion=N`: a list waits until the cache reaches `N`. A cache
//!   only moves with writes of its own resource, so when the store is
//!   already at `N` (e.g. `N` came from another resource) the store answers
//!   instead; when neither gets there in time the answer is Kubernetes' 504
//!   "Too large resource version".
//!
//! A cache that cannot answer (re-listing after a compaction, or lagging
//! past the wait) hands the list to the store: the result is then fresher
//! than asked for, which every `resourceVersion` semantics allows.

use serde_json::Value;
use wasmkube_api::resources::ResourceInfo;

use super::object::Filter;
use super::request::{ListFrom, Params};
use super::{Registry, collection_prefix};
use crate::error::{ApiError, Result};
use crate::watch_cache::{CachedObject, too_large_resource_version};

/// A list's items and revision, from wherever they came.
pub(crate) enum Listed {
    /// From the watch cache: shared objects, never a `continue`.
    Cached {
        items: Vec<CachedObject>,
        revision: i64,
    },
    /// From the store.
    Stored {
        items: Vec<Value>,
        revision: i64,
        cont: Option<String>,
    },
}

impl Registry {
    /// The list a GET on a collection asks for.
    pub(crate) async fn list_request(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        filter: &Filter,
        params: &Params,
    ) -> Result<Listed> {
        if let ListFrom::Cache { not_older_than } = params.list_from()?
            && let Some(listed) = self
                .list_cached(res, namespace, filter, not_older_than)
                .await?
        {
            return Ok(listed);
        }
        let (items, revision, cont) = self
            .list(
                res,
                namespace,
                filter,
                params.limit,
                params.continue_token.as_deref(),
            )
            .await?;
        Ok(Listed::Stored {
            items,
            revision,
            cont,
        })
    }

    /// The list from the cache, once it is at least at `not_older_than` and
    /// at this server's last write; `None` to ask the store instead.
    async fn list_cached(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        filter: &Filter,
        not_older_than: i64,
    ) -> Result<Option<Listed>> {
        let Some(cache) = self.cache(res) else {
            return Ok(None);
        };
        if !cache.is_ready() {
            return Ok(None);
        }
        let wait = self.options.cache.freshness_wait;
        let written = cache.written_revision();
        let want = not_older_than.max(written);
        if cache.last_revision() < want {
            if not_older_than > written.max(cache.last_revision())
                && self.current_revision(res).await? >= not_older_than
            {
                // The store has it, but the cache may never get there: no
                // write of this resource may be coming.
                return Ok(None);
            }
            if !cache.wait_for(want, wait).await {
                if not_older_than > 0 {
                    let current = self.current_revision(res).await?;
                    if current < not_older_than {
                        return Err(too_large_resource_version(not_older_than, current));
                    }
                }
                tracing::debug!(
                    resource = res.plural,
                    want,
                    cache = cache.last_revision(),
                    "watch cache behind; listing from the store"
                );
                return Ok(None);
            }
        }
        let Some(list) = cache.list(&collection_prefix(res, namespace)) else {
            return Ok(None);
        };
        if list.revision == 0 {
            // Loaded from an empty store and never written since: a list at
            // resourceVersion "0" would read as "any" to clients watching
            // from it. The store (as empty, so cheap) has a real revision.
            return Ok(None);
        }
        crate::metrics::record_cache_list(res.group, res.plural);
        let items = list
            .items
            .into_iter()
            .filter(|o| filter.matches(res.kind, &o.object))
            .collect();
        Ok(Some(Listed::Cached {
            items,
            revision: list.revision,
        }))
    }

    async fn current_revision(&self, res: &ResourceInfo) -> Result<i64> {
        self.store
            .current_revision()
            .await
            .map_err(|e| ApiError::from_storage(e, res.group, res.plural, ""))
    }
}
