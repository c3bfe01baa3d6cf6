//! API discovery, generated from `wasmkube_api::resources::all()`: the legacy
//! documents (`APIVersions`, `APIGroupList`, `APIGroup`, `APIResourceList`)
//! and aggregated discovery (`APIGroupDiscoveryList`, v2 and v2beta1) for
//! `/api` and `/apis`. Nothing here knows a kind: adding a resource to the
//! api crate is enough to advertise it.
//!
//! kubectl reads aggregated discovery only when the answer's Content-Type is
//! exactly the one it asked for, and re-downloads discovery on every run if a
//! group/version lists no resources; both rules are kept by construction.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wasmkube_api::resources::{self, ResourceInfo};
use wasmkube_api::status;

use crate::AppState;
use crate::error::ApiError;

const DISCOVERY_GROUP: &str = "apidiscovery.k8s.io";
const DISCOVERY_KIND: &str = "APIGroupDiscoveryList";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api", get(core_root))
        .route("/api/{version}", get(core_version))
        .route("/apis", get(groups_root))
        .route("/apis/{group}", get(group))
        .route("/apis/{group}/{version}", get(group_version))
}

/// One served group/version with its resources (never empty).
#[derive(Debug, Clone)]
pub struct GroupVersion {
    pub group: &'static str,
    pub version: &'static str,
    pub resources: Vec<&'static ResourceInfo>,
}

impl GroupVersion {
    /// `v1` for the core group, `apps/v1` otherwise.
    pub fn group_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Every served group/version, in the order resources are listed (which is
/// also the preference order of a group's versions), then the metrics API,
/// which is served without storage.
pub fn group_versions() -> &'static [GroupVersion] {
    static GVS: OnceLock<Vec<GroupVersion>> = OnceLock::new();
    GVS.get_or_init(|| {
        group_versions_of(
            resources::all()
                .iter()
                .chain(crate::metrics_api::RESOURCES.iter()),
        )
    })
}

fn group_versions_of(all: impl IntoIterator<Item = &'static ResourceInfo>) -> Vec<GroupVersion> {
    let mut out: Vec<GroupVersion> = Vec::new();
    for r in all {
        match out
            .iter_mut()
            .find(|gv| gv.group == r.group && gv.version == r.version)
        {
            Some(gv) => gv.resources.push(r),
            None => out.push(GroupVersion {
                group: r.group,
                version: r.version,
                resources: vec![r],
            }),
        }
    }
    out.retain(|gv| !gv.resources.is_empty());
    out
}

/// Named (non-core) groups in order, each with its versions (preferred first).
fn named_groups(gvs: &'static [GroupVersion]) -> Vec<(&'static str, Vec<&'static GroupVersion>)> {
    let mut groups: Vec<(&'static str, Vec<&'static GroupVersion>)> = Vec::new();
    for gv in gvs.iter().filter(|gv| !gv.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == gv.group) {
            Some((_, versions)) => versions.push(gv),
            None => groups.push((gv.group, vec![gv])),
        }
    }
    groups
}

/// What the client asked for in `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The legacy documents (plain `application/json`).
    Legacy,
    /// Aggregated discovery at this `apidiscovery.k8s.io` version.
    Aggregated(&'static str),
}

/// Choose a discovery format from an `Accept` header: the first media range
/// we can serve wins (kubectl lists aggregated v2, then v2beta1, then JSON).
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Legacy;
    };
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut g = None;
        let mut v = None;
        let mut as_ = None;
        for p in parts {
            if let Some((k, val)) = p.split_once('=') {
                let val = val.trim().trim_matches('"');
                match k.trim() {
                    "g" => g = Some(val),
                    "v" => v = Some(val),
                    "as" => as_ = Some(val),
                    _ => {}
                }
            }
        }
        let json_like = matches!(media.as_str(), "application/json" | "application/*" | "*/*");
        if !json_like {
            continue;
        }
        match (g, v, as_) {
            (Some(DISCOVERY_GROUP), Some("v2"), Some(DISCOVERY_KIND)) => {
                return Format::Aggregated("v2");
            }
            (Some(DISCOVERY_GROUP), Some("v2beta1"), Some(DISCOVERY_KIND)) => {
                return Format::Aggregated("v2beta1");
            }
            (None, None, None) => return Format::Legacy,
            _ => continue,
        }
    }
    Format::Legacy
}

fn accept(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())
}

fn json_response(value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn not_found() -> Response {
    ApiError(status::failure(
        404,
        "NotFound",
        "the server could not find the requested resource",
    ))
    .into_response()
}

/// The aggregated document, serialized once per (scope, version).
struct Aggregated {
    body: Vec<u8>,
    etag: String,
}

fn aggregated_response(headers: &HeaderMap, doc: &Aggregated, version: &str) -> Response {
    let content_type =
        format!("application/json;g={DISCOVERY_GROUP};v={version};as={DISCOVERY_KIND}");
    let etag_matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == doc.etag));
    let mut resp = if etag_matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, doc.body.clone()).into_response()
    };
    let h = resp.headers_mut();
    if let Ok(ct) = HeaderValue::from_str(&content_type) {
        h.insert(header::CONTENT_TYPE, ct);
    }
    if let Ok(etag) = HeaderValue::from_str(&doc.etag) {
        h.insert(header::ETAG, etag);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    resp
}

fn build_aggregated(items: Vec<Value>, version: &str) -> Aggregated {
    let doc = json!({
        "kind": DISCOVERY_KIND,
        "apiVersion": format!("{DISCOVERY_GROUP}/{version}"),
        "metadata": {},
        "items": items,
    });
    let body = serde_json::to_vec(&doc).unwrap_or_default();
    let etag = format!("\"{}\"", hex::encode(Sha256::digest(&body)));
    Aggregated { body, etag }
}

/// `/api` (core group only) or `/apis` (named groups) as aggregated discovery.
fn aggregated(core: bool, version: &'static str) -> &'static Aggregated {
    static DOCS: OnceLock<[Aggregated; 4]> = OnceLock::new();
    let docs = DOCS.get_or_init(|| {
        let gvs = group_versions();
        let core_items: Vec<Value> = {
            let versions: Vec<Value> = gvs
                .iter()
                .filter(|gv| gv.group.is_empty())
                .map(aggregated_version)
                .collect();
            if versions.is_empty() {
                Vec::new()
            } else {
                vec![json!({"metadata": {}, "versions": versions})]
            }
        };
        let group_items: Vec<Value> = named_groups(gvs)
            .into_iter()
            .map(|(name, versions)| {
                json!({
                    "metadata": {"name": name},
                    "versions": versions.into_iter().map(aggregated_version).collect::<Vec<_>>(),
                })
            })
            .collect();
        [
            build_aggregated(core_items.clone(), "v2"),
            build_aggregated(core_items, "v2beta1"),
            build_aggregated(group_items.clone(), "v2"),
            build_aggregated(group_items, "v2beta1"),
        ]
    });
    let index = match (core, version) {
        (true, "v2") => 0,
        (true, _) => 1,
        (false, "v2") => 2,
        (false, _) => 3,
    };
    &docs[index]
}

fn aggregated_version(gv: &GroupVersion) -> Value {
    let resources: Vec<Value> = gv
        .resources
        .iter()
        .map(|r| aggregated_resource(r))
        .collect();
    json!({"version": gv.version, "resources": resources, "freshness": "Current"})
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let mut v = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    if !r.subresources.is_empty() {
        let subs: Vec<Value> = r
            .subresources
            .iter()
            .map(|s| {
                let (group, version) = sub_group_version(r, s);
                json!({
                    "subresource": s.name,
                    "responseKind": {"group": group, "version": version, "kind": s.kind},
                    "verbs": s.verbs,
                })
            })
            .collect();
        v["subresources"] = json!(subs);
    }
    v
}

/// A subresource's group/version; an empty version means "the parent's".
fn sub_group_version(
    parent: &ResourceInfo,
    s: &resources::Subresource,
) -> (&'static str, &'static str) {
    if s.version.is_empty() {
        (parent.group, parent.version)
    } else {
        (s.group, s.version)
    }
}

/// The legacy `APIResourceList` of one group/version, subresources included
/// (drain looks for `pods/eviction` in `/api/v1`).
pub fn resource_list(gv: &GroupVersion) -> Value {
    let mut list = Vec::new();
    for r in &gv.resources {
        let mut v = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            v["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            v["categories"] = json!(r.categories);
        }
        list.push(v);
        for s in r.subresources {
            let (group, version) = sub_group_version(r, s);
            let mut sv = json!({
                "name": format!("{}/{}", r.plural, s.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": s.kind,
                "verbs": s.verbs,
            });
            if (group, version) != (r.group, r.version) {
                sv["group"] = json!(group);
                sv["version"] = json!(version);
            }
            list.push(sv);
        }
    }
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv.group_version(),
        "resources": list,
    })
}

fn api_group(name: &str, versions: &[&GroupVersion]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|gv| json!({"groupVersion": gv.group_version(), "version": gv.version}))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({"name": name, "versions": vs, "preferredVersion": preferred})
}

async fn core_root(headers: HeaderMap) -> Response {
    if let Format::Aggregated(version) = negotiate(accept(&headers)) {
        return aggregated_response(&headers, aggregated(true, version), version);
    }
    let versions: Vec<&str> = group_versions()
        .iter()
        .filter(|gv| gv.group.is_empty())
        .map(|gv| gv.version)
        .collect();
    // kubectl does not use this, but other clients expect the field.
    let server = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_default();
    json_response(&json!({
        "kind": "APIVersions",
        "versions": versions,
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
    }))
}

async fn core_version(Path(version): Path<String>) -> Response {
    match group_versions()
        .iter()
        .find(|gv| gv.group.is_empty() && gv.version == version)
    {
        Some(gv) => json_response(&resource_list(gv)),
        None => not_found(),
    }
}

async fn groups_root(headers: HeaderMap) -> Response {
    if let Format::Aggregated(version) = negotiate(accept(&headers)) {
        return aggregated_response(&headers, aggregated(false, version), version);
    }
    let groups: Vec<Value> = named_groups(group_versions())
        .iter()
        .map(|(name, versions)| api_group(name, versions))
        .collect();
    json_response(&json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
}

async fn group(Path(name): Path<String>) -> Response {
    match named_groups(group_versions())
        .into_iter()
        .find(|(g, _)| *g == name)
    {
        Some((g, versions)) => {
            let mut v = api_group(g, &versions);
            v["kind"] = json!("APIGroup");
            v["apiVersion"] = json!("v1");
            json_response(&v)
        }
        None => not_found(),
    }
}

async fn group_version(Path((group, version)): Path<(String, String)>) -> Response {
    match group_versions()
        .iter()
        .find(|gv| !gv.group.is_empty() && gv.group == group && gv.version == version)
    {
        Some(gv) => json_response(&resource_list(gv)),
        None => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_like_kubectl() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(negotiate(Some(kubectl)), Format::Aggregated("v2"));
        assert_eq!(
            negotiate(Some(
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            )),
            Format::Aggregated("v2beta1")
        );
        assert_eq!(negotiate(Some("application/json")), Format::Legacy);
        assert_eq!(negotiate(None), Format::Legacy);
        assert_eq!(
            negotiate(Some(
                "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
            )),
            Format::Legacy
        );
    }
}
