//! The ResourceQuota plugin and the quota controller.
//!
//! Admission charges what a new object costs (and what an update adds) to
//! every quota of its namespace that tracks it, by writing the quota's
//! `status.used` with a precondition on the quota's `resourceVersion`
//! before the object is stored, retrying on conflict — Kubernetes' quota
//! admission. Two creates racing for the last unit therefore cannot both
//! win, even on two API servers sharing a store. Within one server the
//! charges are also serialized, so racing creates do not burn their
//! retries on each other.
//!
//! The controller recomputes `status.used` from the stored objects when
//! something was removed (deletes, pods finishing) and periodically,
//! which releases what deleted objects held and repairs charges whose
//! object was never stored. It runs while no admitted write is in flight
//! on this server (see [`super::Admitted`]), so it never undercounts an
//! object that was charged but not yet stored.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify, OwnedRwLockReadGuard, RwLock};
use tokio_util::sync::CancellationToken;
use wasmkube_api::resources::{self, ResourceInfo};
use wasmkube_api::rules::quota::{self, Usage};
use wasmkube_api::status;

use super::{core_resource, forbidden, is_core, objects};
use crate::error::{ApiError, Result};
use crate::registry::{self, Registry, object};
use crate::storage::{self, Precondition};

/// How often a charge retries after another writer changed the quota.
const CHARGE_RETRIES: usize = 16;

/// The quota bookkeeping of one registry.
#[derive(Debug, Default)]
pub struct QuotaState {
    /// Read-held from a charge until the charged object is stored;
    /// write-held by the controller while it recomputes.
    gate: Arc<RwLock<()>>,
    /// Serializes this server's charges.
    charging: Mutex<()>,
    /// Wakes the controller.
    wake: Arc<Notify>,
}

fn quota_res() -> Result<&'static ResourceInfo> {
    core_resource("resourcequotas")
}

/// What `obj` of `res` costs.
fn usage_of(res: &ResourceInfo, obj: &Value) -> Usage {
    quota::usage(res.group, res.plural, res.kind, obj)
}

/// The quotas of a namespace with their parsed `spec.hard`.
async fn quotas_in(reg: &Registry, namespace: &str) -> Result<Vec<(String, Usage)>> {
    let mut list: Vec<(String, Usage)> = objects(reg, quota_res()?, namespace)
        .await?
        .iter()
        .map(|q| {
            (
                object::name(q).to_string(),
                quota::parse_usage(q.pointer("/spec/hard")),
            )
        })
        .collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(list)
}

impl QuotaState {
    /// Wakes the controller to recompute usage.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Charges a create (or what an update adds) to the namespace's
    /// quotas; 403 with Kubernetes' message when one would be exceeded.
    /// The guard returned must be held until the object is stored.
    #[allow(clippy::too_many_arguments)]
    pub async fn admit(
        &self,
        reg: &Registry,
        res: &ResourceInfo,
        namespace: &str,
        name: &str,
        obj: &Value,
        old: Option<&Value>,
        dry_run: bool,
    ) -> Result<Option<OwnedRwLockReadGuard<()>>> {
        let mut delta = usage_of(res, obj);
        if let Some(old) = old {
            let diff = quota::difference(&delta, &usage_of(res, old));
            if diff.values().any(|v| *v < 0) && !dry_run {
                // Something was released (a pod finished): recompute once
                // this write is stored, which the guard makes the
                // controller wait for.
                self.wake();
                return Ok(Some(self.gate.clone().read_owned().await));
            }
            delta = diff.into_iter().filter(|(_, v)| *v > 0).collect();
        }
        if delta.is_empty() {
            return Ok(None);
        }
        let quotas = quotas_in(reg, namespace).await?;
        let pod_create = old.is_none() && is_core(res, "Pod");
        let mut relevant = Vec::new();
        for (qname, hard) in quotas {
            if pod_create && let Some(denial) = quota::must_specify(&qname, &hard, obj) {
                return Err(forbidden(res, name, &[denial.to_string()]));
            }
            if !quota::constrained(&hard, &delta).is_empty() {
                relevant.push(qname);
            }
        }
        if relevant.is_empty() {
            return Ok(None);
        }
        let guard = self.gate.clone().read_owned().await;
        let _serial = self.charging.lock().await;
        for qname in relevant {
            charge_one(reg, res, namespace, name, &qname, &delta, dry_run).await?;
        }
        Ok(Some(guard))
    }
}

/// Charges `delta` to one quota with a `resourceVersion` precondition.
async fn charge_one(
    reg: &Registry,
    res: &ResourceInfo,
    namespace: &str,
    name: &str,
    qname: &str,
    delta: &Usage,
    dry_run: bool,
) -> Result<()> {
    let qres = quota_res()?;
    for _ in 0..CHARGE_RETRIES {
        let (current, rev) = match reg.read(qres, Some(namespace), qname).await {
            Ok(found) => found,
            // Deleted since it was listed: it constrains nothing any more.
            Err(e) if e.code() == 404 => return Ok(()),
            Err(e) => return Err(e),
        };
        let hard = quota::parse_usage(current.pointer("/spec/hard"));
        let used = quota::parse_usage(current.pointer("/status/used"));
        let new_used = quota::charge(qname, &hard, &used, delta)
            .map_err(|denial| forbidden(res, name, &[denial.to_string()]))?;
        if dry_run {
            return Ok(());
        }
        match write_status(reg, namespace, qname, &current, rev, &new_used).await {
            Ok(()) => return Ok(()),
            Err(WriteError::Conflict) => continue,
            Err(WriteError::Api(e)) => return Err(*e),
        }
    }
    Err(ApiError(status::conflict(
        "",
        "resourcequotas",
        qname,
        "the quota is being updated too often; try again",
    )))
}

enum WriteError {
    Conflict,
    Api(Box<ApiError>),
}

/// Writes a quota's status (`hard` from its spec, `used`) straight to the
/// store with a precondition on `rev`: the quota's own admission and
/// validation are not involved, as for Kubernetes' quota status writes.
async fn write_status(
    reg: &Registry,
    namespace: &str,
    qname: &str,
    current: &Value,
    rev: i64,
    used: &Usage,
) -> Result<(), WriteError> {
    let qres = quota_res().map_err(|e| WriteError::Api(Box::new(e)))?;
    let mut updated = current.clone();
    set_status(&mut updated, used);
    let bytes = serde_json::to_vec(&object::without_resource_version(&updated)).map_err(|e| {
        WriteError::Api(Box::new(ApiError::internal(format!("encoding quota: {e}"))))
    })?;
    match reg
        .store()
        .put(
            &registry::key(qres, Some(namespace), qname),
            bytes.into(),
            Precondition::ModRevision(rev),
        )
        .await
    {
        Ok(kv) => {
            reg.wrote(qres, kv.mod_revision);
            Ok(())
        }
        Err(storage::Error::Conflict { .. } | storage::Error::NotFound { .. }) => {
            Err(WriteError::Conflict)
        }
        Err(e) => Err(WriteError::Api(Box::new(ApiError::from_storage(
            e,
            "",
            "resourcequotas",
            qname,
        )))),
    }
}

/// `status: {hard: spec.hard, used}` restricted to what `spec.hard` names.
fn set_status(quota_obj: &mut Value, used: &Usage) {
    let hard = quota_obj
        .pointer("/spec/hard")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let names: BTreeSet<&String> = hard
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    let used: Usage = used
        .iter()
        .filter(|(k, _)| names.contains(k))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let mut full = used;
    for n in names {
        full.entry(n.clone()).or_insert(0);
    }
    object::set_path(
        quota_obj,
        &["status"],
        json!({
            "hard": hard,
            "used": quota::usage_to_json(&full),
        }),
    );
}

/// What the objects of `namespace` use of the resources `hard` names,
/// read from the store.
async fn compute_usage(reg: &Registry, namespace: &str, hard: &Usage) -> Result<Usage> {
    let mut kinds: Vec<&'static ResourceInfo> = Vec::new();
    for name in hard.keys() {
        let Some((group, plural)) = quota::counted_resource(name) else {
            continue;
        };
        if let Some(r) = resources::all()
            .iter()
            .find(|r| r.namespaced && r.group == group && r.plural == plural)
            && !kinds.iter().any(|k| std::ptr::eq(*k, r))
        {
            kinds.push(r);
        }
    }
    let mut total = Usage::new();
    for res in kinds {
        for obj in reg.stored_objects(res, Some(namespace)).await? {
            quota::add(&mut total, &usage_of(res, &obj));
        }
    }
    Ok(hard
        .keys()
        .map(|k| (k.clone(), total.get(k).copied().unwrap_or(0)))
        .collect())
}

/// A new quota starts with its usage computed (Kubernetes leaves this to
/// its controller, and refuses charges against a quota whose status is not
/// known yet; computing it at once makes the quota effective at once).
pub async fn initial_status(reg: &Registry, namespace: &str, obj: &mut Value) -> Result<()> {
    let hard = quota::parse_usage(obj.pointer("/spec/hard"));
    let used = compute_usage(reg, namespace, &hard).await?;
    set_status(obj, &used);
    Ok(())
}

/// A quota whose `spec.hard` changed gets its status recomputed for the
/// new set of resources.
pub async fn refresh_status(
    reg: &Registry,
    namespace: &str,
    old: &Value,
    obj: &mut Value,
) -> Result<()> {
    if old.pointer("/spec/hard") == obj.pointer("/spec/hard") && obj.get("status").is_some() {
        return Ok(());
    }
    initial_status(reg, namespace, obj).await
}

/// Recomputes every quota's usage; returns how many statuses changed.
pub async fn recompute_all(reg: &Registry) -> Result<usize> {
    let state = &reg.admission().quota;
    let qres = quota_res()?;
    // Most clusters have no quota: then there is nothing to hold up.
    if reg
        .cached_objects(qres, None)
        .is_some_and(|list| list.is_empty())
    {
        return Ok(0);
    }
    let _exclusive = state.gate.write().await;
    let mut changed = 0;
    let mut by_ns: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for q in reg.stored_objects(qres, None).await? {
        let ns = object::meta_str(&q, "namespace").unwrap_or("").to_string();
        by_ns.entry(ns).or_default().push(q);
    }
    for (ns, quotas) in by_ns {
        for q in quotas {
            let hard = quota::parse_usage(q.pointer("/spec/hard"));
            let used = compute_usage(reg, &ns, &hard).await?;
            let mut wanted = q.clone();
            set_status(&mut wanted, &used);
            if wanted.get("status") == q.get("status") {
                continue;
            }
            let rev = q
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<i64>().ok())
                .unwrap_or(0);
            match write_status(reg, &ns, object::name(&q), &q, rev, &used).await {
                Ok(()) => changed += 1,
                // Changed meanwhile (a charge from another server, an
                // edit): the next pass sees it.
                Err(WriteError::Conflict) => state.wake(),
                Err(WriteError::Api(e)) => return Err(*e),
            }
        }
    }
    Ok(changed)
}

/// The quota controller: recomputes on a wake-up and every
/// `Policy::quota_resync`.
pub fn spawn_controller(reg: &Arc<Registry>, shutdown: CancellationToken) {
    let weak = Arc::downgrade(reg);
    let wake = reg.admission().quota.wake.clone();
    let every = reg.admission().policy().quota_resync;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(every) => {}
            }
            let Some(reg) = weak.upgrade() else {
                return;
            };
            let pass = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = recompute_all(&reg) => r,
            };
            if let Err(e) = pass {
                tracing::warn!(error = %e, "quota usage recomputation failed");
            }
        }
    });
}
