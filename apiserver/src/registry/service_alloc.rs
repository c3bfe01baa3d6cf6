//! ClusterIP and node port allocation for Services.
//!
//! Every address or port in use is a key of its own in the store
//! (`/registry/ranges/serviceips/<ip>`, `/registry/ranges/servicenodeports/<port>`),
//! claimed with a create-only write. The store's compare-and-swap is the
//! lock: two API servers on one etcd can never hand out the same value,
//! and no in-memory bitmap has to be kept in sync. A claim records the
//! Service's uid, so a release only ever frees what that Service holds.
//!
//! A claim is made before the Service is written and released when that
//! write does not happen, when an update drops the value, and when the
//! Service leaves the store. A server that dies between the claim and the
//! write leaves an orphan claim behind; [`repair`] (run at start and
//! periodically, like Kubernetes' allocator repair loop) frees claims no
//! stored Service holds once they are older than [`REPAIR_GRACE`].

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng as _;
use serde_json::{Value, json};
use wasmkube_api::resources;
use wasmkube_api::rules::service::{
    NODE_PORTS, SERVICE_CIDR_TEXT, cluster_ip, cluster_ip_range, in_cluster_ip_range, node_port_of,
    wants_cluster_ip, wants_node_ports,
};
use wasmkube_api::status::FieldCause;

use super::object;
use super::ops::invalid_kind;
use crate::error::{ApiError, Result};
use crate::storage::{self, Precondition, Store};

/// Where claimed ClusterIPs live.
pub const IP_PREFIX: &str = "/registry/ranges/serviceips/";
/// Where claimed node ports live.
pub const NODE_PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";
/// Random picks before a range counts as full. With a million addresses
/// (and 2768 ports) a miss is rare until the range really is nearly full.
const RANDOM_TRIES: usize = 64;
/// How old a claim no Service holds must be before [`repair`] frees it: a
/// claim is made just before its Service is written, so a young one may
/// belong to a write in flight.
pub const REPAIR_GRACE: Duration = Duration::from_secs(60);

/// Keys claimed for one write, released again if the write does not happen.
#[derive(Debug, Default)]
#[must_use]
pub(super) struct Claimed {
    keys: Vec<String>,
    uid: String,
}

impl Claimed {
    /// Frees every claim (the write they were for failed).
    pub(super) async fn release(self, store: &dyn Store) {
        release_keys(store, &self.keys, &self.uid).await;
    }
}

fn ip_key(ip: Ipv4Addr) -> String {
    format!("{IP_PREFIX}{ip}")
}

fn port_key(port: i64) -> String {
    format!("{NODE_PORT_PREFIX}{port}")
}

fn uid_of(svc: &Value) -> String {
    object::meta_str(svc, "uid").unwrap_or("").to_string()
}

/// The allocation keys a stored Service holds.
pub(super) fn keys_of(svc: &Value) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    if wants_cluster_ip(svc)
        && let Some(ip) = cluster_ip(svc).and_then(|s| s.parse::<Ipv4Addr>().ok())
    {
        keys.insert(ip_key(ip));
    }
    if wants_node_ports(svc) {
        for p in svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(np) = node_port_of(p) {
                keys.insert(port_key(np));
            }
        }
    }
    keys
}

/// A 422 for the Service being written, with one cause.
fn refused(svc: &Value, field: &str, message: String) -> ApiError {
    invalid_kind(
        "",
        "Service",
        object::name(svc),
        vec![FieldCause::invalid(field, message)],
    )
}

/// Claims `key` for `uid`: `Ok(false)` when someone holds it already.
async fn claim(store: &dyn Store, key: &str, svc: &Value) -> Result<bool> {
    let owner = json!({
        "namespace": object::meta_str(svc, "namespace").unwrap_or(""),
        "name": object::name(svc),
        "uid": uid_of(svc),
        "at": jiff::Timestamp::now().as_second(),
    });
    match store
        .put(
            key,
            Bytes::from(owner.to_string()),
            Precondition::MustNotExist,
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(storage::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(ApiError::from_storage(e, "", "services", object::name(svc))),
    }
}

/// Frees `keys` where `uid` holds them.
async fn release_keys(store: &dyn Store, keys: &[String], uid: &str) {
    for key in keys {
        let held = match store.get(key).await {
            Ok(Some(kv)) => kv,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(key, error = %e, "reading a service allocation to release it");
                continue;
            }
        };
        let owner: Value = serde_json::from_slice(&held.value).unwrap_or(Value::Null);
        if owner.get("uid").and_then(Value::as_str) != Some(uid) {
            continue;
        }
        match store
            .delete(key, Precondition::ModRevision(held.mod_revision))
            .await
        {
            Ok(_) | Err(storage::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(key, error = %e, "releasing a service allocation"),
        }
    }
}

/// Claims what `svc` needs and does not hold yet (`old` is the stored
/// Service on an update): a user-chosen ClusterIP or node port is checked
/// and claimed (422 when out of range or taken), a missing one is picked
/// at random and written into `svc`.
pub(super) async fn allocate(
    store: &dyn Store,
    svc: &mut Value,
    old: Option<&Value>,
) -> Result<Claimed> {
    let held = old.map(keys_of).unwrap_or_default();
    let mut claimed = Claimed {
        keys: Vec::new(),
        uid: uid_of(svc),
    };
    match allocate_into(store, svc, &held, &mut claimed.keys).await {
        Ok(()) => Ok(claimed),
        Err(e) => {
            claimed.release(store).await;
            Err(e)
        }
    }
}

async fn allocate_into(
    store: &dyn Store,
    svc: &mut Value,
    held: &BTreeSet<String>,
    claimed: &mut Vec<String>,
) -> Result<()> {
    if wants_cluster_ip(svc) {
        let ip = match cluster_ip(svc).map(str::to_string) {
            Some(text) => {
                let ip: Ipv4Addr = text.parse().map_err(|_| {
                    refused(
                        svc,
                        "spec.clusterIPs",
                        format!("Invalid value: []string{{{text:?}}}: must be a valid IP address"),
                    )
                })?;
                let key = ip_key(ip);
                if !held.contains(&key) {
                    if !in_cluster_ip_range(ip) {
                        return Err(refused(
                            svc,
                            "spec.clusterIPs",
                            format!(
                                "Invalid value: []string{{{text:?}}}: failed to allocate IP {text}: the provided IP ({text}) is not in the valid range. The range of valid IPs is {SERVICE_CIDR_TEXT}"
                            ),
                        ));
                    }
                    if !claim(store, &key, svc).await? {
                        return Err(refused(
                            svc,
                            "spec.clusterIPs",
                            format!(
                                "Invalid value: []string{{{text:?}}}: failed to allocate IP {text}: provided IP is already allocated"
                            ),
                        ));
                    }
                    claimed.push(key);
                }
                ip
            }
            None => {
                let range = cluster_ip_range();
                let mut picked = None;
                for _ in 0..RANDOM_TRIES {
                    let ip = Ipv4Addr::from(rand::rng().random_range(range.clone()));
                    let key = ip_key(ip);
                    if claim(store, &key, svc).await? {
                        claimed.push(key);
                        picked = Some(ip);
                        break;
                    }
                }
                picked.ok_or_else(|| {
                    ApiError::internal("failed to allocate a serviceIP: range is full")
                })?
            }
        };
        set_family_fields(svc, &ip.to_string());
    } else if service_is_headless_with_family(svc) {
        set_family_fields(svc, "None");
    }
    if wants_node_ports(svc) {
        let count = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..count {
            let chosen = svc
                .pointer(&format!("/spec/ports/{i}"))
                .and_then(node_port_of);
            let field = format!("spec.ports[{i}].nodePort");
            let port = match chosen {
                Some(np) => {
                    let key = port_key(np);
                    if !held.contains(&key) {
                        if !NODE_PORTS.contains(&np) {
                            return Err(refused(
                                svc,
                                &field,
                                format!(
                                    "Invalid value: {np}: provided port is not in the valid range. The range of valid ports is {}-{}",
                                    NODE_PORTS.start(),
                                    NODE_PORTS.end()
                                ),
                            ));
                        }
                        if !claim(store, &key, svc).await? {
                            return Err(refused(
                                svc,
                                &field,
                                format!("Invalid value: {np}: provided port is already allocated"),
                            ));
                        }
                        claimed.push(key);
                    }
                    np
                }
                None => {
                    let mut picked = None;
                    for _ in 0..RANDOM_TRIES {
                        let np = rand::rng().random_range(NODE_PORTS);
                        let key = port_key(np);
                        if claim(store, &key, svc).await? {
                            claimed.push(key);
                            picked = Some(np);
                            break;
                        }
                    }
                    picked.ok_or_else(|| {
                        ApiError::internal("failed to allocate a nodePort: range is full")
                    })?
                }
            };
            if let Some(p) = svc
                .pointer_mut(&format!("/spec/ports/{i}"))
                .and_then(Value::as_object_mut)
            {
                p.insert("nodePort".into(), json!(port));
            }
        }
    }
    Ok(())
}

/// Headless Services (not ExternalName) still carry their family fields.
fn service_is_headless_with_family(svc: &Value) -> bool {
    wasmkube_api::rules::service::is_headless(svc)
        && wasmkube_api::rules::service::service_type(svc) != "ExternalName"
}

/// `clusterIP`, `clusterIPs`, `ipFamilies` and `ipFamilyPolicy` of a
/// single-stack IPv4 Service, as the registry fills them in.
fn set_family_fields(svc: &mut Value, ip: &str) {
    let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.insert("clusterIP".into(), json!(ip));
    spec.insert("clusterIPs".into(), json!([ip]));
    let families_missing = spec
        .get("ipFamilies")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if families_missing {
        spec.insert("ipFamilies".into(), json!(["IPv4"]));
    }
    let policy_missing = spec
        .get("ipFamilyPolicy")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    if policy_missing {
        spec.insert("ipFamilyPolicy".into(), json!("SingleStack"));
    }
}

/// Frees what `old` held and `new` no longer does (after an update).
pub(super) async fn release_dropped(store: &dyn Store, old: &Value, new: &Value) {
    let kept = keys_of(new);
    let dropped: Vec<String> = keys_of(old).difference(&kept).cloned().collect();
    release_keys(store, &dropped, &uid_of(old)).await;
}

/// Frees everything a removed Service held.
pub(super) async fn release_all(store: &dyn Store, svc: &Value) {
    let keys: Vec<String> = keys_of(svc).into_iter().collect();
    release_keys(store, &keys, &uid_of(svc)).await;
}

/// Frees claims older than `grace` that no stored Service holds (left by a
/// server that died between claiming and writing). Returns how many went.
pub(super) async fn repair(store: &dyn Store, grace: Duration) -> Result<usize, storage::Error> {
    let Some(services) = resources::by_plural("", "v1", "services") else {
        return Ok(0);
    };
    let now = jiff::Timestamp::now().as_second();
    let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    let mut freed = 0;
    for prefix in [IP_PREFIX, NODE_PORT_PREFIX] {
        let page = store.range(prefix, None, 0).await?;
        for kv in page.kvs {
            let owner: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
            let at = owner.get("at").and_then(Value::as_i64).unwrap_or(0);
            if now.saturating_sub(at) < grace {
                continue;
            }
            let str_of = |k: &str| owner.get(k).and_then(Value::as_str).unwrap_or("");
            let svc_key = super::key(services, Some(str_of("namespace")), str_of("name"));
            let held = match store.get(&svc_key).await? {
                Some(svc) => serde_json::from_slice::<Value>(&svc.value).is_ok_and(|svc| {
                    uid_of(&svc) == str_of("uid") && keys_of(&svc).contains(&kv.key)
                }),
                None => false,
            };
            if held {
                continue;
            }
            match store
                .delete(&kv.key, Precondition::ModRevision(kv.mod_revision))
                .await
            {
                Ok(_) => {
                    tracing::info!(key = %kv.key, "freed a service allocation no Service holds");
                    freed += 1;
                }
                Err(storage::Error::NotFound { .. } | storage::Error::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(freed)
}
