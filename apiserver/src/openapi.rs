//! OpenAPI v3 documents, generated from the served resources: an index at
//! `/openapi/v3` and one document per group/version. Each kind gets its
//! collection and item paths with operations carrying
//! `x-kubernetes-group-version-kind` and the `fieldValidation` parameter,
//! which is what kubectl needs to validate on the server side
//! (`create`/`apply`/`edit` without `--validate=false`).
//!
//! The documents carry no component schemas yet: kubectl then takes
//! strategic-merge metadata from its built-in types (it asks `/openapi/v2`,
//! gets 404 and falls back), which is correct for every built-in kind.
//! Schemas that lacked the patch extensions would be worse than none, since
//! kubectl would build patches from them. `kubectl explain` needs them.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use wasmkube_api::resources::ResourceInfo;
use wasmkube_api::status;

use crate::AppState;
use crate::discovery::{GroupVersion, group_versions};
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi/v3", get(index))
        .route("/openapi/v3/{*path}", get(document))
        .route("/openapi/v2", get(v2))
}

/// One serialized per-version document and its content hash.
struct Doc {
    body: Vec<u8>,
    hash: String,
}

/// `api/v1`, `apis/coordination.k8s.io/v1`, … → document.
fn docs() -> &'static BTreeMap<String, Doc> {
    static DOCS: OnceLock<BTreeMap<String, Doc>> = OnceLock::new();
    DOCS.get_or_init(|| {
        group_versions()
            .iter()
            .map(|gv| {
                let body = serde_json::to_vec(&document_of(gv)).unwrap_or_default();
                let hash = hex::encode_upper(Sha256::digest(&body));
                (doc_key(gv), Doc { body, hash })
            })
            .collect()
    })
}

fn doc_key(gv: &GroupVersion) -> String {
    if gv.group.is_empty() {
        format!("api/{}", gv.version)
    } else {
        format!("apis/{}/{}", gv.group, gv.version)
    }
}

/// The `/openapi/v3` index: every document with a content-hashed URL.
pub fn index_json() -> Value {
    let paths: Map<String, Value> = docs()
        .iter()
        .map(|(key, doc)| {
            (
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", doc.hash)}),
            )
        })
        .collect();
    json!({ "paths": paths })
}

fn param(name: &str, location: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": location,
        "description": description,
        "required": location == "path",
        "schema": {"type": "string", "uniqueItems": true},
    })
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

fn operation_id(verb: &str, r: &ResourceInfo, scope: &str, sub: Option<&str>) -> String {
    let group: String = if r.group.is_empty() {
        "Core".to_string()
    } else {
        r.group
            .split('.')
            .next()
            .unwrap_or("")
            .split(['-', '_'])
            .map(capitalize)
            .collect()
    };
    let version = capitalize(r.version);
    let sub = sub.map(capitalize).unwrap_or_default();
    format!("{verb}{group}{version}{scope}{}{sub}", r.kind)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn object_schema() -> Value {
    json!({"type": "object"})
}

/// An operation of `action` on a kind; write operations take `fieldValidation`.
fn operation(action: &str, op_id: String, kind_gvk: &Value, description: String) -> Value {
    let mut params = Vec::new();
    let writes = matches!(action, "post" | "put" | "patch");
    if writes {
        params.push(param(
            "dryRun",
            "query",
            "When present, indicates that modifications should not be persisted.",
        ));
        params.push(param(
            "fieldManager",
            "query",
            "A name associated with the actor or entity that is making these changes.",
        ));
        params.push(param(
            "fieldValidation",
            "query",
            "Instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn, Strict.",
        ));
    }
    if action == "patch" {
        params.push(param(
            "force",
            "query",
            "Force is going to \"force\" Apply requests.",
        ));
    }
    if matches!(action, "list" | "watchlist") {
        for p in [
            "labelSelector",
            "fieldSelector",
            "limit",
            "continue",
            "resourceVersion",
            "timeoutSeconds",
            "watch",
        ] {
            params.push(param(p, "query", ""));
        }
    }
    let mut op = json!({
        "description": description,
        "operationId": op_id,
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": object_schema()}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": kind_gvk,
    });
    if writes {
        let types: &[&str] = if action == "patch" {
            &[
                "application/apply-patch+yaml",
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            ]
        } else {
            &["*/*"]
        };
        let content: Map<String, Value> = types
            .iter()
            .map(|t| ((*t).to_string(), json!({"schema": object_schema()})))
            .collect();
        op["requestBody"] = json!({"content": content, "required": true});
    }
    op
}

/// Paths and operations of every resource of one group/version.
fn document_of(gv: &GroupVersion) -> Value {
    let root = if gv.group.is_empty() {
        format!("/api/{}", gv.version)
    } else {
        format!("/apis/{}/{}", gv.group, gv.version)
    };
    let mut paths = Map::new();
    for r in &gv.resources {
        let kind = gvk(r.group, r.version, r.kind);
        let has = |verb: &str| r.verbs.contains(&verb);
        let (scope, collection, item) = if r.namespaced {
            (
                "Namespaced",
                format!("{root}/namespaces/{{namespace}}/{}", r.plural),
                format!("{root}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
            )
        } else {
            (
                "",
                format!("{root}/{}", r.plural),
                format!("{root}/{}/{{name}}", r.plural),
            )
        };
        let mut path_params = vec![];
        if r.namespaced {
            path_params.push(param(
                "namespace",
                "path",
                "object name and auth scope, such as for teams and projects",
            ));
        }

        let mut coll = Map::new();
        if has("list") {
            coll.insert(
                "get".into(),
                operation(
                    "list",
                    operation_id("list", r, scope, None),
                    &kind,
                    format!("list or watch objects of kind {}", r.kind),
                ),
            );
        }
        if has("create") {
            coll.insert(
                "post".into(),
                operation(
                    "post",
                    operation_id("create", r, scope, None),
                    &kind,
                    format!("create a {}", r.kind),
                ),
            );
        }
        if has("deletecollection") {
            coll.insert(
                "delete".into(),
                operation(
                    "deletecollection",
                    operation_id("deleteCollection", r, scope, None),
                    &kind,
                    format!("delete collection of {}", r.kind),
                ),
            );
        }
        if !coll.is_empty() {
            coll.insert("parameters".into(), json!(path_params));
            paths.insert(collection, Value::Object(coll));
        }

        let mut item_params = path_params.clone();
        item_params.insert(0, param("name", "path", &format!("name of the {}", r.kind)));
        let mut it = Map::new();
        for (verb, method, action, prefix, what) in [
            ("get", "get", "get", "read", "read the specified"),
            ("update", "put", "put", "replace", "replace the specified"),
            (
                "patch",
                "patch",
                "patch",
                "patch",
                "partially update the specified",
            ),
            ("delete", "delete", "delete", "delete", "delete a"),
        ] {
            if has(verb) {
                it.insert(
                    method.into(),
                    operation(
                        action,
                        operation_id(prefix, r, scope, None),
                        &kind,
                        format!("{what} {}", r.kind),
                    ),
                );
            }
        }
        if !it.is_empty() {
            it.insert("parameters".into(), json!(item_params.clone()));
            paths.insert(item.clone(), Value::Object(it));
        }

        // Cross-namespace list (`kubectl get pods -A`).
        if r.namespaced && has("list") {
            let mut all = Map::new();
            all.insert(
                "get".into(),
                operation(
                    "list",
                    operation_id("list", r, "", Some("ForAllNamespaces")),
                    &kind,
                    format!("list or watch objects of kind {}", r.kind),
                ),
            );
            paths.insert(format!("{root}/{}", r.plural), Value::Object(all));
        }

        for s in r.subresources {
            let (sg, sv) = if s.version.is_empty() {
                (r.group, r.version)
            } else {
                (s.group, s.version)
            };
            let sub_kind = gvk(sg, sv, s.kind);
            let mut ops = Map::new();
            for verb in s.verbs {
                let (method, action, prefix) = match *verb {
                    "get" => ("get", "get", "read"),
                    "create" => ("post", "post", "create"),
                    "update" => ("put", "put", "replace"),
                    "patch" => ("patch", "patch", "patch"),
                    _ => continue,
                };
                ops.insert(
                    method.into(),
                    operation(
                        action,
                        operation_id(prefix, r, scope, Some(s.name)),
                        &sub_kind,
                        format!("{prefix} {} of the specified {}", s.name, r.kind),
                    ),
                );
            }
            if !ops.is_empty() {
                ops.insert("parameters".into(), json!(item_params.clone()));
                paths.insert(format!("{item}/{}", s.name), Value::Object(ops));
            }
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": {}},
    })
}

fn json_bytes(body: Vec<u8>, cache_control: &'static str) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    resp
}

async fn index() -> Response {
    json_bytes(
        serde_json::to_vec(&index_json()).unwrap_or_default(),
        "no-cache, private",
    )
}

#[derive(Debug, Deserialize)]
struct DocQuery {
    hash: Option<String>,
}

/// A per-version document. Fetched by its hashed URL it never changes, so it
/// is marked immutable (like Kubernetes); otherwise clients must revalidate.
async fn document(
    Path(path): Path<String>,
    Query(q): Query<DocQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(doc) = docs().get(path.trim_end_matches('/')) else {
        return ApiError(status::failure(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ))
        .into_response();
    };
    let etag = format!("\"{}\"", doc.hash);
    let cache_control = if q.hash.as_deref() == Some(doc.hash.as_str()) {
        "public, immutable, max-age=31536000"
    } else {
        "no-cache, private"
    };
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if not_modified {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control),
        );
        r
    } else {
        json_bytes(doc.body.clone(), cache_control)
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// OpenAPI v2 is protobuf-only in practice; kubectl copes with 404.
async fn v2() -> Response {
    ApiError(status::failure(
        404,
        "NotFound",
        "the server could not find the requested resource",
    ))
    .into_response()
}
