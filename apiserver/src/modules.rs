//! The cluster's module store: wasm modules pushed over HTTPS, kept
//! content-addressed in the Store (the bytes once per digest, in chunks any
//! backend accepts: see [`blobs`]; `/wasmkube/modules/<name>/<tag>` holds the
//! tag's `ModuleInfo`). Kubelets resolve `name:tag` images here and fetch
//! blobs by digest, verifying what they receive. Blobs nothing references
//! any more are removed by the collector in [`gc`].
//!
//! Uploads are hashed as they arrive and validated before anything is
//! stored, so a failed push changes nothing.

pub mod blobs;
pub mod gc;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::TryStreamExt;
use http_body_util::BodyExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use wasmkube_api::image::{ImageRef, Reference};
use wasmkube_api::status;
use wasmkube_api::wasm::{self, ModuleInfo, ResolvedModule};

use crate::AppState;
use crate::error::ApiError;
use crate::storage::{self, Precondition, Store};

pub(crate) const TAGS: &str = "/wasmkube/modules/";
/// The `details.kind` of module errors.
const KIND: &str = "modules";
/// Uploads buffered at once: each may hold up to `max_module_bytes` in
/// memory, so the connection cap alone would not bound memory.
const CONCURRENT_UPLOADS: usize = 4;

fn upload_permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| tokio::sync::Semaphore::new(CONCURRENT_UPLOADS))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/wasmkube/v1/modules", get(list))
        .route(
            "/wasmkube/v1/modules/{name}/{tag}",
            get(get_tag).put(push).delete(remove),
        )
        .route("/wasmkube/v1/resolve", get(resolve))
        .route("/wasmkube/v1/blobs/{digest}", get(blob))
}

/// Whether `path` is a module upload (which gets the module size limit).
pub fn is_upload_path(path: &str) -> bool {
    path.starts_with("/wasmkube/v1/modules/")
}

fn tag_key(name: &str, tag: &str) -> String {
    format!("{TAGS}{name}/{tag}")
}

fn not_found(what: &str) -> ApiError {
    let mut s = status::failure(404, "NotFound", format!("module \"{what}\" not found"));
    s.details = Some(StatusDetails {
        kind: Some(KIND.to_string()),
        name: Some(what.to_string()),
        ..Default::default()
    });
    ApiError(s)
}

/// The validator's complaint on one line: its messages may embed
/// multi-line debug dumps of bytes, which make poor error messages.
fn validation_message(e: &wasmparser::BinaryReaderError) -> String {
    if e.message().starts_with("magic header not detected") {
        return "not a WebAssembly binary (it does not start with the \\0asm magic bytes)"
            .to_string();
    }
    let one_line = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    format!("{one_line} (at offset {:#x})", e.offset())
}

/// 422 `module "x:y" is invalid: <why>`.
fn invalid(what: &str, field: &str, why: &str) -> ApiError {
    let mut s: Status = status::failure(
        422,
        "Invalid",
        format!("module \"{what}\" is invalid: {why}"),
    );
    s.details = Some(StatusDetails {
        kind: Some(KIND.to_string()),
        name: Some(what.to_string()),
        causes: Some(vec![StatusCause {
            reason: Some("FieldValueInvalid".to_string()),
            message: Some(why.to_string()),
            field: Some(field.to_string()),
        }]),
        ..Default::default()
    });
    ApiError(s)
}

fn storage_error(err: storage::Error, what: &str) -> ApiError {
    ApiError::from_storage(err, "wasmkube.io", KIND, what)
}

/// Read the whole body, refusing more than `limit` bytes with 413 (also when
/// an outer layer already cut it off), and hash it on the way in.
async fn read_limited(body: Body, limit: usize) -> Result<(Vec<u8>, String), ApiError> {
    let mut body = body;
    let mut buf: Vec<u8> = Vec::new();
    let mut hasher = Sha256::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            let inner = e.into_inner();
            let over = std::iter::successors(
                Some(inner.as_ref() as &(dyn std::error::Error + 'static)),
                |e| e.source(),
            )
            .any(|e| e.is::<http_body_util::LengthLimitError>());
            if over {
                ApiError(status::too_large(limit))
            } else {
                ApiError::bad_request(format!("reading the request body: {inner}"))
            }
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(ApiError(status::too_large(limit)));
            }
            hasher.update(&data);
            buf.extend_from_slice(&data);
        }
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    Ok((buf, digest))
}

#[derive(Debug, Deserialize)]
struct PushQuery {
    /// The digest the client computed; a body hashing to anything else was
    /// damaged on the way and is refused.
    digest: Option<String>,
}

/// `PUT /wasmkube/v1/modules/{name}/{tag}[?digest=sha256:…]`: validate,
/// store blob and tag, 201.
async fn push(
    State(state): State<AppState>,
    Path((name, tag)): Path<(String, String)>,
    Query(query): Query<PushQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let what = format!("{name}:{tag}");
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let media = ct.split(';').next().unwrap_or("").trim();
        if !matches!(media, "application/wasm" | "application/octet-stream") {
            return Err(ApiError(status::unsupported_media_type(ct)));
        }
    }
    if let Err(msg) = wasmkube_api::names::is_dns1123_subdomain(&name) {
        return Err(invalid(&what, "name", &msg));
    }
    if !wasm::is_valid_tag(&tag) {
        return Err(invalid(
            &what,
            "tag",
            "a tag must match [A-Za-z0-9_][A-Za-z0-9._-]{0,127}",
        ));
    }
    if let Some(d) = &query.digest
        && !wasm::is_valid_digest(d)
    {
        return Err(ApiError::bad_request(format!(
            "invalid digest {d:?}: expected sha256:<64 hex digits>"
        )));
    }
    let _permit = upload_permits()
        .acquire()
        .await
        .map_err(|_| ApiError(status::unavailable("the module store is shutting down")))?;
    let limit = state.limits.module;
    let (bytes, digest) = read_limited(body, limit).await?;
    if let Some(declared) = &query.digest
        && declared != &digest
    {
        return Err(ApiError::bad_request(format!(
            "digest mismatch: the upload of \"{what}\" declared {declared} but its body hashes to {digest}"
        )));
    }
    let size = bytes.len() as u64;

    // Validating up to 64 MiB is CPU work: keep it off the runtime.
    let (verdict, bytes) = tokio::task::spawn_blocking(move || {
        let verdict = wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
            .validate_all(&bytes)
            .map(|_| ())
            .map_err(|e| validation_message(&e));
        (verdict, bytes)
    })
    .await
    .map_err(|e| ApiError::internal(format!("validating the module: {e}")))?;
    if let Err(msg) = verdict {
        return Err(invalid(&what, "body", &msg));
    }

    let store = state.store.clone();
    blobs::put_blob(
        store.as_ref(),
        &digest,
        Bytes::from(bytes),
        jiff::Timestamp::now(),
    )
    .await
    .map_err(|e| blob_error(e, &what))?;

    // Re-pushing the same bytes under a tag keeps its creation time.
    let tkey = tag_key(&name, &tag);
    let previous = read_info(store.as_ref(), &tkey)
        .await
        .map_err(|e| storage_error(e, &what))?;
    let created = match previous {
        Some(p) if p.digest == digest => p.created,
        _ => now_rfc3339(),
    };
    let info = ModuleInfo {
        name,
        tag,
        digest,
        size,
        created,
    };
    let json = serde_json::to_vec(&info).map_err(|e| ApiError::internal(e.to_string()))?;
    store
        .put(&tkey, Bytes::from(json), Precondition::None)
        .await
        .map_err(|e| storage_error(e, &what))?;
    tracing::info!(module = %what, digest = %info.digest, size, "module pushed");
    Ok((StatusCode::CREATED, axum::Json(info)).into_response())
}

fn blob_error(err: blobs::BlobError, what: &str) -> ApiError {
    match err {
        blobs::BlobError::Storage(e) => storage_error(e, what),
        e @ (blobs::BlobError::Abandoned { .. } | blobs::BlobError::Contended { .. }) => {
            ApiError(status::unavailable(e.to_string()))
        }
        e => ApiError::internal(e.to_string()),
    }
}

/// `GET /wasmkube/v1/modules/{name}/{tag}`: the tag's `ModuleInfo`.
async fn get_tag(
    State(state): State<AppState>,
    Path((name, tag)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let what = format!("{name}:{tag}");
    let info = read_info(state.store.as_ref(), &tag_key(&name, &tag))
        .await
        .map_err(|e| storage_error(e, &what))?
        .ok_or_else(|| not_found(&what))?;
    Ok(axum::Json(info).into_response())
}

/// `DELETE /wasmkube/v1/modules/{name}/{tag}`: removes the tag and answers
/// its last `ModuleInfo`. The blob goes once nothing else references it
/// (see [`gc`]); pods already running it keep it.
async fn remove(
    State(state): State<AppState>,
    Path((name, tag)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let what = format!("{name}:{tag}");
    let kv = match state
        .store
        .delete(&tag_key(&name, &tag), Precondition::None)
        .await
    {
        Ok((kv, _)) => kv,
        Err(storage::Error::NotFound { .. }) => return Err(not_found(&what)),
        Err(e) => return Err(storage_error(e, &what)),
    };
    gc::trigger();
    let info = serde_json::from_slice::<ModuleInfo>(&kv.value).unwrap_or(ModuleInfo {
        name,
        tag,
        digest: String::new(),
        size: 0,
        created: String::new(),
    });
    tracing::info!(module = %what, digest = %info.digest, "module tag deleted");
    Ok(axum::Json(info).into_response())
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

async fn read_info(store: &dyn Store, key: &str) -> Result<Option<ModuleInfo>, storage::Error> {
    Ok(store
        .get(key)
        .await?
        .and_then(|kv| serde_json::from_slice::<ModuleInfo>(&kv.value).ok()))
}

/// `GET /wasmkube/v1/modules`: every tag, in name/tag order.
async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let range = state
        .store
        .range(TAGS, None, 0)
        .await
        .map_err(|e| storage_error(e, ""))?;
    let items: Vec<ModuleInfo> = range
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<ModuleInfo>(&kv.value).ok())
        .collect();
    Ok(axum::Json(json!({ "items": items })).into_response())
}

#[derive(Debug, Deserialize)]
struct ResolveQuery {
    image: Option<String>,
}

/// `GET /wasmkube/v1/resolve?image=name:tag|name@sha256:…`.
async fn resolve(
    State(state): State<AppState>,
    Query(q): Query<ResolveQuery>,
) -> Result<Response, ApiError> {
    let Some(image) = q.image.filter(|i| !i.trim().is_empty()) else {
        return Err(ApiError::bad_request(
            "the image query parameter is required",
        ));
    };
    let resolved = resolve_image(state.store.as_ref(), image.trim()).await?;
    Ok(axum::Json(resolved).into_response())
}

/// Resolve a local image reference to the digest and size of its blob.
pub async fn resolve_image(store: &dyn Store, image: &str) -> Result<ResolvedModule, ApiError> {
    let r = ImageRef::parse(image).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if r.registry.is_some() {
        return Err(not_found(image));
    }
    match &r.reference {
        Reference::Tag(tag) => {
            let what = format!("{}:{tag}", r.repository);
            let info = read_info(store, &tag_key(&r.repository, tag))
                .await
                .map_err(|e| storage_error(e, &what))?
                .ok_or_else(|| not_found(&what))?;
            Ok(ResolvedModule {
                digest: info.digest,
                size: info.size,
            })
        }
        Reference::Digest(digest) => {
            let what = format!("{}@{digest}", r.repository);
            if !wasm::is_valid_digest(digest) {
                return Err(ApiError::bad_request(format!("invalid digest {digest:?}")));
            }
            // Prefer a tag's recorded size over reading the whole blob.
            let tags = store
                .range(TAGS, None, 0)
                .await
                .map_err(|e| storage_error(e, &what))?;
            let known = tags
                .kvs
                .iter()
                .filter_map(|kv| serde_json::from_slice::<ModuleInfo>(&kv.value).ok())
                .find(|i| &i.digest == digest);
            if let Some(info) = known {
                return Ok(ResolvedModule {
                    digest: info.digest,
                    size: info.size,
                });
            }
            let blob = blobs::stat(store, digest)
                .await
                .map_err(|e| blob_error(e, &what))?
                .ok_or_else(|| not_found(&what))?;
            Ok(ResolvedModule {
                digest: digest.clone(),
                size: blob.size(),
            })
        }
    }
}

/// `GET /wasmkube/v1/blobs/{digest}`: the raw module bytes.
async fn blob(
    State(state): State<AppState>,
    Path(digest): Path<String>,
) -> Result<Response, ApiError> {
    if !wasm::is_valid_digest(&digest) {
        return Err(ApiError::bad_request(format!(
            "invalid digest {digest:?}: expected sha256:<64 hex digits>"
        )));
    }
    let store: Arc<dyn Store> = state.store.clone();
    let reader = blobs::open(store, &digest)
        .await
        .map_err(|e| blob_error(e, &digest))?
        .ok_or_else(|| not_found(&digest))?;
    let size = reader.size;
    let what = digest.clone();
    let stream = reader.into_stream().inspect_err(move |e| {
        tracing::error!(digest = %what, error = %e, "module store: serving a blob failed");
    });
    let mut resp = (StatusCode::OK, Body::from_stream(stream)).into_response();
    let h = resp.headers_mut();
    // The length is known up front: a client can show progress, and a body
    // cut short by a failing chunk is detected as truncated.
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/wasm"),
    );
    // Content-addressed: the bytes behind a digest never change.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, immutable, max-age=31536000"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("\"{digest}\"")) {
        h.insert(header::ETAG, v);
    }
    Ok(resp)
}
