//! HTTP: the one handler behind every resource path, dispatching on the
//! parsed target and the method, and writing objects, lists and Tables.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};
use wasmkube_api::resources::ResourceInfo;
use wasmkube_api::{status, table};

use super::Registry;
use super::list::Listed;
use super::object;
use super::ops::{DeleteOptions, Part, WriteOptions};
use super::request::{self, BodyType, Output, Params, Target, method_not_allowed, not_found_path};
use super::scale::ScaleChange;
use crate::error::{ApiError, Result};
use crate::watch_cache::CachedObject;

/// The router of every resource path below the discovery roots.
pub fn routes(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/api/v1/{*rest}", any(serve))
        .route("/apis/{group}/{version}/{*rest}", any(serve))
        .with_state(registry)
}

async fn serve(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    match handle(reg, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn allows(res: &ResourceInfo, verb: &str) -> Result<()> {
    if res.verbs.contains(&verb) {
        Ok(())
    } else {
        Err(method_not_allowed())
    }
}

async fn handle(reg: Arc<Registry>, req: Request) -> Result<Response> {
    let (parts, body) = req.into_parts();
    if let Some((node, kubelet_path)) = crate::node_proxy::target(parts.uri.path()) {
        let tunnels = parts
            .extensions
            .get::<crate::tunnel::Tunnels>()
            .cloned()
            .unwrap_or_default();
        let node = node.to_string();
        let req = axum::http::Request::from_parts(parts, body);
        return Ok(crate::node_proxy::serve(reg, tunnels, &node, kubelet_path, req).await);
    }
    let target = request::parse_path(parts.uri.path())?;
    let mut params = Params::parse(&parts.uri)?;
    params.watch |= target.watch_prefix;
    let output = request::negotiate(&parts.headers);
    let res = target.res;
    let ns = target.namespace.as_deref();
    let method = parts.method.clone();

    // Subresources first: each has its own verbs.
    if let (Some(name), Some(sub)) = (target.name.as_deref(), target.subresource.as_deref()) {
        if !res.subresources.iter().any(|s| s.name == sub) {
            return Err(not_found_path());
        }
        return match (sub, &method) {
            ("status", &Method::GET) => {
                let obj = reg.get(res, ns, name).await?;
                Ok(object_response(StatusCode::OK, res, obj, output, &[]))
            }
            ("status", &Method::PUT) => {
                let bytes = read_body(&reg, body).await?;
                let obj = request::decode_object(&bytes, request::body_type(&parts.headers)?)?;
                let mut warnings = Vec::new();
                let out = reg
                    .update_object(
                        res,
                        ns,
                        name,
                        obj,
                        Part::Status,
                        &write_options(&params),
                        &mut warnings,
                    )
                    .await?;
                Ok(object_response(StatusCode::OK, res, out, output, &warnings))
            }
            ("status", &Method::PATCH) => {
                patch(
                    &reg,
                    &target,
                    name,
                    &parts.headers,
                    &params,
                    body,
                    Part::Status,
                    output,
                )
                .await
            }
            ("binding", &Method::POST) => {
                let bytes = read_body(&reg, body).await?;
                let binding = request::decode_object(&bytes, request::body_type(&parts.headers)?)?;
                reg.bind(res, ns, name, &binding).await?;
                let mut s = status::to_json(&status::success(res.group, res.plural, name, None));
                s["code"] = json!(201);
                Ok(json_response(StatusCode::CREATED, &s, &[]))
            }
            // policy/v1 Eviction: without PodDisruptionBudgets an eviction is
            // a delete with the eviction's options.
            ("eviction", &Method::POST) => {
                let bytes = read_body(&reg, body).await?;
                let eviction = request::decode_object(&bytes, request::body_type(&parts.headers)?)?;
                let opts_body = eviction
                    .get("deleteOptions")
                    .map(Value::to_string)
                    .unwrap_or_default();
                let opts = DeleteOptions::from_body(opts_body.as_bytes(), delete_options(&params))?;
                reg.delete_object(res, ns, name, &opts).await?;
                let mut s = status::to_json(&status::success(res.group, res.plural, name, None));
                s["code"] = json!(201);
                Ok(json_response(StatusCode::CREATED, &s, &[]))
            }
            ("scale", &Method::GET) => {
                let scale = reg.get_scale(res, ns, name).await?;
                Ok(json_response(StatusCode::OK, &scale, &[]))
            }
            ("scale", &Method::PUT) => {
                let bytes = read_body(&reg, body).await?;
                let obj = request::decode_object(&bytes, request::body_type(&parts.headers)?)?;
                let scale = reg
                    .update_scale(
                        res,
                        ns,
                        name,
                        ScaleChange::Replace(obj),
                        &write_options(&params),
                    )
                    .await?;
                Ok(json_response(StatusCode::OK, &scale, &[]))
            }
            ("scale", &Method::PATCH) => {
                let ty = request::body_type(&parts.headers)?;
                if matches!(ty, BodyType::Json | BodyType::Yaml) {
                    let ct = parts
                        .headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    return Err(ApiError(status::unsupported_media_type(ct)));
                }
                let bytes = read_body(&reg, body).await?;
                let doc = request::decode(&bytes, ty)?;
                let scale = reg
                    .update_scale(
                        res,
                        ns,
                        name,
                        ScaleChange::Patch(ty, doc),
                        &write_options(&params),
                    )
                    .await?;
                Ok(json_response(StatusCode::OK, &scale, &[]))
            }
            // Wasm pods serve HTTP per request: port-forward serves HTTP on
            // each forwarded connection and sends requests to the pod.
            ("portforward", &Method::GET | &Method::POST) => {
                let tunnels = parts
                    .extensions
                    .get::<crate::tunnel::Tunnels>()
                    .cloned()
                    .unwrap_or_default();
                let (ns, name) = (ns.unwrap_or("").to_string(), name.to_string());
                let req = axum::http::Request::from_parts(parts, body);
                Ok(crate::portforward::serve(reg.clone(), tunnels, ns, name, req).await)
            }
            // `kubectl create token`: a TokenRequest for a ServiceAccount.
            ("token", &Method::POST) => {
                let bytes = read_body(&reg, body).await?;
                let request = request::decode_object(&bytes, request::body_type(&parts.headers)?)?;
                let tokens = parts
                    .extensions
                    .get::<crate::serviceaccount::Shared>()
                    .cloned()
                    .ok_or_else(|| ApiError::internal("no ServiceAccount token signer"))?;
                let out = crate::serviceaccount::token_request(
                    &reg,
                    &tokens,
                    ns.unwrap_or(""),
                    name,
                    &request,
                )
                .await?;
                Ok(json_response(StatusCode::CREATED, &out, &[]))
            }
            ("log", &Method::GET) => Ok(pod_log(
                reg.clone(),
                parts
                    .extensions
                    .get::<crate::tunnel::Tunnels>()
                    .cloned()
                    .unwrap_or_default(),
                ns.unwrap_or("").to_string(),
                name.to_string(),
                params.raw.clone(),
            )
            .await),
            _ => Err(method_not_allowed()),
        };
    }

    match (target.name.as_deref(), &method) {
        (None, &Method::GET) if params.watch => {
            allows(res, "watch")?;
            super::watch::watch(reg, res, ns, None, &params, output).await
        }
        (None, &Method::GET) => {
            allows(res, "list")?;
            list(&reg, res, ns, &params, output).await
        }
        (None, &Method::POST) => {
            allows(res, "create")?;
            if res.namespaced && ns.is_none() {
                return Err(method_not_allowed());
            }
            let bytes = read_body(&reg, body).await?;
            let obj = request::decode_object(&bytes, request::body_type(&parts.headers)?)?;
            let mut warnings = Vec::new();
            let out = reg
                .create_object(res, ns, obj, &write_options(&params), &mut warnings)
                .await?;
            Ok(object_response(
                StatusCode::CREATED,
                res,
                out,
                output,
                &warnings,
            ))
        }
        (None, &Method::DELETE) => {
            allows(res, "deletecollection")?;
            let bytes = request::delete_body(read_body(&reg, body).await?)?;
            let opts = DeleteOptions::from_body(&bytes, delete_options(&params))?;
            let filter = params.filter(res, ns)?;
            let (items, rev, _) = reg.list(res, ns, &filter, None, None).await?;
            let mut deleted = Vec::new();
            for item in items {
                let item_ns = object::meta_str(&item, "namespace").map(str::to_string);
                match reg
                    .delete_object(res, item_ns.as_deref(), object::name(&item), &opts)
                    .await
                {
                    Ok(obj) => deleted.push(obj),
                    Err(e) if e.code() == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(list_response(res, deleted, rev, None, output))
        }
        (Some(name), &Method::GET) if params.watch => {
            allows(res, "watch")?;
            super::watch::watch(reg, res, ns, Some(name), &params, output).await
        }
        (Some(name), &Method::GET) => {
            allows(res, "get")?;
            let obj = reg.get(res, ns, name).await?;
            Ok(object_response(StatusCode::OK, res, obj, output, &[]))
        }
        (Some(name), &Method::PUT) => {
            allows(res, "update")?;
            let bytes = read_body(&reg, body).await?;
            let obj = request::decode_object(&bytes, request::body_type(&parts.headers)?)?;
            let mut warnings = Vec::new();
            let out = reg
                .update_object(
                    res,
                    ns,
                    name,
                    obj,
                    Part::Main,
                    &write_options(&params),
                    &mut warnings,
                )
                .await?;
            Ok(object_response(StatusCode::OK, res, out, output, &warnings))
        }
        (Some(name), &Method::PATCH) => {
            allows(res, "patch")?;
            patch(
                &reg,
                &target,
                name,
                &parts.headers,
                &params,
                body,
                Part::Main,
                output,
            )
            .await
        }
        (Some(name), &Method::DELETE) => {
            allows(res, "delete")?;
            let bytes = request::delete_body(read_body(&reg, body).await?)?;
            let opts = DeleteOptions::from_body(&bytes, delete_options(&params))?;
            let obj = reg.delete_object(res, ns, name, &opts).await?;
            Ok(object_response(StatusCode::OK, res, obj, output, &[]))
        }
        _ => Err(method_not_allowed()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn patch(
    reg: &Arc<Registry>,
    target: &Target,
    name: &str,
    headers: &HeaderMap,
    params: &Params,
    body: Body,
    part: Part,
    output: Output,
) -> Result<Response> {
    let ty = request::body_type(headers)?;
    if matches!(ty, BodyType::Json | BodyType::Yaml) {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return Err(ApiError(status::unsupported_media_type(ct)));
    }
    let bytes = read_body(reg, body).await?;
    let doc = request::decode(&bytes, ty)?;
    let mut warnings = Vec::new();
    let out = reg
        .patch_object(
            target.res,
            target.namespace.as_deref(),
            name,
            ty,
            doc,
            part,
            &write_options(params),
            &mut warnings,
        )
        .await?;
    let code = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(object_response(
        code, target.res, out.object, output, &warnings,
    ))
}

fn write_options(p: &Params) -> WriteOptions {
    WriteOptions {
        dry_run: p.dry_run,
        field_validation: p.field_validation,
    }
}

fn delete_options(p: &Params) -> DeleteOptions {
    DeleteOptions {
        grace_period_seconds: p.grace_period_seconds,
        propagation_policy: p.propagation_policy.clone(),
        dry_run: p.dry_run,
        ..Default::default()
    }
}

async fn read_body(reg: &Registry, body: Body) -> Result<bytes::Bytes> {
    let limit = reg.options.max_body_bytes;
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError(status::too_large(limit)))
}

async fn list(
    reg: &Registry,
    res: &ResourceInfo,
    ns: Option<&str>,
    params: &Params,
    output: Output,
) -> Result<Response> {
    let filter = params.filter(res, ns)?;
    Ok(match reg.list_request(res, ns, &filter, params).await? {
        Listed::Stored {
            items,
            revision,
            cont,
        } => list_response(res, items, revision, cont, output),
        Listed::Cached { items, revision } => cached_list_response(res, &items, revision, output),
    })
}

/// A list from the watch cache. As JSON it is the objects' cached bytes
/// spliced into the list envelope (nothing re-serialized); other shapes are
/// built from the shared objects like a store list.
fn cached_list_response(
    res: &ResourceInfo,
    items: &[CachedObject],
    revision: i64,
    output: Output,
) -> Response {
    if output != Output::Json {
        let values = items.iter().map(|o| o.object.as_ref().clone()).collect();
        return list_response(res, values, revision, None, output);
    }
    let envelope = json!({
        "kind": res.list_kind,
        "apiVersion": res.api_version(),
        "metadata": { "resourceVersion": revision.to_string() },
    });
    let mut body = match serde_json::to_vec(&envelope) {
        Ok(b) => b,
        Err(e) => return ApiError::internal(format!("encoding response: {e}")).into_response(),
    };
    // Reopen the envelope's object to append `items`.
    body.pop();
    body.reserve(items.iter().map(|o| o.json.len() + 1).sum::<usize>() + 16);
    body.extend_from_slice(b",\"items\":[");
    for (i, o) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&o.json);
    }
    body.extend_from_slice(b"]}");
    bytes_response(StatusCode::OK, body, &[])
}

fn list_response(
    res: &ResourceInfo,
    items: Vec<Value>,
    rev: i64,
    cont: Option<String>,
    output: Output,
) -> Response {
    let mut meta = json!({ "resourceVersion": rev.to_string() });
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    let body = match output {
        Output::Table => table::table(res.kind, &items, meta, true, jiff::Timestamp::now()),
        Output::PartialMetadata => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
            "items": items.iter().map(object::partial_metadata).collect::<Vec<_>>(),
        }),
        Output::Json => json!({
            "kind": res.list_kind,
            "apiVersion": res.api_version(),
            "metadata": meta,
            "items": items,
        }),
    };
    json_response(StatusCode::OK, &body, &[])
}

/// One object in the negotiated shape.
pub(super) fn render(res: &ResourceInfo, obj: Value, output: Output, with_columns: bool) -> Value {
    match output {
        Output::Json => obj,
        Output::PartialMetadata => object::partial_metadata(&obj),
        Output::Table => {
            let rv = object::meta_str(&obj, "resourceVersion")
                .unwrap_or("")
                .to_string();
            table::table(
                res.kind,
                &[obj],
                json!({ "resourceVersion": rv }),
                with_columns,
                jiff::Timestamp::now(),
            )
        }
    }
}

fn object_response(
    code: StatusCode,
    res: &ResourceInfo,
    obj: Value,
    output: Output,
    warnings: &[String],
) -> Response {
    json_response(code, &render(res, obj, output, true), warnings)
}

fn json_response(code: StatusCode, body: &Value, warnings: &[String]) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => bytes_response(code, bytes, warnings),
        Err(e) => ApiError::internal(format!("encoding response: {e}")).into_response(),
    }
}

/// An already serialized JSON body.
fn bytes_response(code: StatusCode, bytes: Vec<u8>, warnings: &[String]) -> Response {
    let mut resp = (code, bytes).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            h.append(header::WARNING, v);
        }
    }
    resp
}

/// `pods/{name}/log`: served by APISERVER's log proxy.
async fn pod_log(
    reg: Arc<Registry>,
    tunnels: crate::tunnel::Tunnels,
    namespace: String,
    name: String,
    raw_query: Option<String>,
) -> Response {
    crate::logs::pod_log(reg, tunnels, namespace, name, raw_query).await
}
