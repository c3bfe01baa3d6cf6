//! Reading a REST request: the path (resource, namespace, name,
//! subresource), the query parameters, the body and what the client accepts.

use axum::http::HeaderMap;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use serde_json::Value;
use wasmkube_api::resources::{self, ResourceInfo};
use wasmkube_api::selector::{FieldSelector, LabelSelector};
use wasmkube_api::status::{self, FieldCause};

use super::object::Filter;
use crate::error::{ApiError, Result};

/// What a path names.
#[derive(Debug, Clone)]
pub struct Target {
    pub res: &'static ResourceInfo,
    /// The namespace in the path (namespaced resources only).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The legacy `/watch/` path prefix was used.
    pub watch_prefix: bool,
}

/// 404 for paths that name nothing we serve.
pub fn not_found_path() -> ApiError {
    ApiError(status::failure(
        404,
        "NotFound",
        "the server could not find the requested resource",
    ))
}

/// 405 for a verb the target does not support.
pub fn method_not_allowed() -> ApiError {
    ApiError(status::method_not_allowed(
        "the server does not allow this method on the requested resource",
    ))
}

/// Parses `/api/v1/…` and `/apis/{group}/{version}/…`.
pub fn parse_path(path: &str) -> Result<Target> {
    let (group, version, rest) = if let Some(rest) = path.strip_prefix("/api/v1/") {
        ("", "v1", rest)
    } else if let Some(rest) = path.strip_prefix("/apis/") {
        let mut it = rest.splitn(3, '/');
        match (it.next(), it.next(), it.next()) {
            (Some(g), Some(v), Some(rest)) => (g, v, rest),
            _ => return Err(not_found_path()),
        }
    } else {
        return Err(not_found_path());
    };
    let mut segs: Vec<&str> = rest.split('/').collect();
    // Tolerate one trailing slash, as Kubernetes does.
    if segs.len() > 1 && segs.last() == Some(&"") {
        segs.pop();
    }
    if segs.iter().any(|s| s.is_empty()) {
        return Err(not_found_path());
    }
    let watch_prefix = segs.first() == Some(&"watch");
    if watch_prefix {
        segs.remove(0);
    }
    let owned = |s: Option<&&str>| s.map(|s| s.to_string());
    if let ["namespaces", ns, plural, tail @ ..] = segs.as_slice()
        && let Some(res) = resources::by_plural(group, version, plural)
        && res.namespaced
    {
        if tail.len() > 2 {
            return Err(not_found_path());
        }
        return Ok(Target {
            res,
            namespace: Some(ns.to_string()),
            name: owned(tail.first()),
            subresource: owned(tail.get(1)),
            watch_prefix,
        });
    }
    let [plural, tail @ ..] = segs.as_slice() else {
        return Err(not_found_path());
    };
    let res = resources::by_plural(group, version, plural).ok_or_else(not_found_path)?;
    if tail.len() > 2 || (res.namespaced && !tail.is_empty()) {
        return Err(not_found_path());
    }
    Ok(Target {
        res,
        namespace: None,
        name: owned(tail.first()),
        subresource: owned(tail.get(1)),
        watch_prefix,
    })
}

/// How the client wants objects written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Table,
    PartialMetadata,
}

/// Picks the first media range of `Accept` we can produce. Protobuf-only or
/// unknown accepts get JSON: every client we serve decodes it.
pub fn negotiate(headers: &HeaderMap) -> Output {
    let Some(accept) = headers.get(ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Output::Json;
    };
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let (mut as_, mut g, mut v) = ("", "", "");
        for p in parts {
            if let Some((k, val)) = p.split_once('=') {
                match k.trim() {
                    "as" => as_ = val.trim(),
                    "g" => g = val.trim(),
                    "v" => v = val.trim(),
                    _ => {}
                }
            }
        }
        if media != "application/json" && media != "*/*" && media != "application/*" {
            continue;
        }
        match (as_, g, v) {
            ("", _, _) => return Output::Json,
            ("Table", "meta.k8s.io", "v1" | "v1beta1") => return Output::Table,
            (
                "PartialObjectMetadata" | "PartialObjectMetadataList",
                "meta.k8s.io",
                "v1" | "v1beta1",
            ) => {
                return Output::PartialMetadata;
            }
            _ => {}
        }
    }
    Output::Json
}

/// `fieldValidation` of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    #[default]
    Ignore,
    Warn,
    Strict,
}

/// The query parameters every verb may carry.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub watch: bool,
    pub timeout_seconds: Option<u64>,
    pub allow_watch_bookmarks: bool,
    pub send_initial_events: bool,
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    pub field_manager: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    /// The raw query (for `log`, which forwards it).
    pub raw: Option<String>,
}

fn parse_bool(v: &str) -> bool {
    matches!(v, "true" | "1" | "True" | "TRUE")
}

impl Params {
    /// Parses the query string (already percent-decoded pairs).
    pub fn parse(uri: &axum::http::Uri) -> Result<Params> {
        let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
        let mut p = Params {
            raw: uri.query().map(str::to_string),
            ..Default::default()
        };
        for (k, v) in pairs.0 {
            match k.as_str() {
                "labelSelector" => p.label_selector = Some(v),
                "fieldSelector" => p.field_selector = Some(v),
                "limit" => {
                    let n: i64 = v
                        .parse()
                        .map_err(|_| ApiError::bad_request(format!("invalid limit: {v:?}")))?;
                    p.limit = usize::try_from(n).ok().filter(|n| *n > 0);
                }
                "continue" => p.continue_token = Some(v).filter(|s| !s.is_empty()),
                "resourceVersion" => p.resource_version = Some(v),
                "resourceVersionMatch" => p.resource_version_match = Some(v),
                "watch" => p.watch = parse_bool(&v),
                "timeoutSeconds" => {
                    p.timeout_seconds = Some(v.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid timeoutSeconds: {v:?}"))
                    })?)
                }
                "allowWatchBookmarks" => p.allow_watch_bookmarks = parse_bool(&v),
                "sendInitialEvents" => p.send_initial_events = parse_bool(&v),
                "dryRun" => {
                    if v != "All" && !v.is_empty() {
                        return Err(ApiError::bad_request(format!(
                            "unsupported dryRun value: {v:?}"
                        )));
                    }
                    p.dry_run = v == "All";
                }
                "fieldValidation" => {
                    p.field_validation = match v.as_str() {
                        "Strict" => FieldValidation::Strict,
                        "Warn" => FieldValidation::Warn,
                        "Ignore" | "" => FieldValidation::Ignore,
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "fieldValidation must be one of Ignore, Warn, Strict: {other:?}"
                            )));
                        }
                    }
                }
                "fieldManager" => p.field_manager = Some(v),
                "gracePeriodSeconds" => {
                    p.grace_period_seconds = Some(v.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid gracePeriodSeconds: {v:?}"))
                    })?)
                }
                "propagationPolicy" => p.propagation_policy = Some(v),
                _ => {}
            }
        }
        Ok(p)
    }

    /// The namespace/label/field filter of a list or watch on `res`.
    pub fn filter(&self, res: &ResourceInfo, namespace: Option<&str>) -> Result<Filter> {
        let labels = match self.label_selector.as_deref() {
            Some(s) => LabelSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?,
            None => LabelSelector::default(),
        };
        let fields = match self.field_selector.as_deref() {
            Some(s) => {
                let f =
                    FieldSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?;
                f.validate_for(res.kind)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                f
            }
            None => FieldSelector::default(),
        };
        Ok(Filter {
            namespace: namespace.map(str::to_string),
            labels,
            fields,
        })
    }

    /// `resourceVersion` as a revision: `None` for "" and "0" (any/current state).
    pub fn revision(&self) -> Result<Option<i64>> {
        match self.resource_version.as_deref() {
            None | Some("") | Some("0") => Ok(None),
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {s}"))),
        }
    }
}

/// Where a list is answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFrom {
    /// The store, at its current revision, honouring `limit` and `continue`.
    Store,
    /// The resource's watch cache, at a revision not older than this one
    /// (0: any), whole (`limit` is ignored).
    Cache { not_older_than: i64 },
}

impl Params {
    /// Chooses the source of a list as Kubernetes' cacher does
    /// (`shouldDelegateList`): `resourceVersion=""` (a consistent read), a
    /// `continue` token, `resourceVersionMatch=Exact`, and a `limit` with any
    /// `resourceVersion` but "0" go to the store; `resourceVersion=0`, and
    /// `resourceVersion=N` with `NotOlderThan` (or no match) and no `limit`,
    /// are served by the cache. Like Kubernetes, a cached list ignores
    /// `limit`: clients asking for "any" state get all of it in one answer
    /// (no `continue`), without paging through the store.
    pub fn list_from(&self) -> Result<ListFrom> {
        self.validate_list()?;
        let revision = self.revision()?;
        let rv = self.resource_version.as_deref().unwrap_or("");
        let exact = self.resource_version_match.as_deref() == Some("Exact");
        if self.continue_token.is_some() || rv.is_empty() || exact {
            return Ok(ListFrom::Store);
        }
        Ok(match revision {
            // "0"
            None => ListFrom::Cache { not_older_than: 0 },
            Some(_) if self.limit.is_some() => ListFrom::Store,
            Some(n) => ListFrom::Cache { not_older_than: n },
        })
    }

    /// Kubernetes' `ValidateListOptions` for `resourceVersionMatch`: 422
    /// Invalid `ListOptions` on a value it does not know or a combination it
    /// forbids.
    fn validate_list(&self) -> Result<()> {
        let Some(rvm) = self.resource_version_match.as_deref() else {
            return Ok(());
        };
        let field = "resourceVersionMatch";
        let cause = match rvm {
            "" => return Ok(()),
            "Exact" | "NotOlderThan" => {
                let rv = self.resource_version.as_deref().unwrap_or("");
                if rv.is_empty() {
                    FieldCause::forbidden(
                        field,
                        "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
                    )
                } else if self.continue_token.is_some() {
                    FieldCause::forbidden(
                        field,
                        "Forbidden: resourceVersionMatch is forbidden when continue is provided",
                    )
                } else if rvm == "Exact" && rv == "0" {
                    FieldCause::forbidden(
                        field,
                        "Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                    )
                } else {
                    return Ok(());
                }
            }
            other => FieldCause::unsupported(
                field,
                format!(
                    "Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\", \"\""
                ),
            ),
        };
        Err(super::ops::invalid_kind(
            "meta.k8s.io",
            "ListOptions",
            "",
            vec![cause],
        ))
    }
}

/// The format of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    Json,
    Yaml,
    StrategicMerge,
    MergePatch,
    JsonPatch,
    ApplyPatch,
}

/// The body format from `Content-Type` (absent → JSON); 415 for anything else.
pub fn body_type(headers: &HeaderMap) -> Result<BodyType> {
    let Some(ct) = headers.get(CONTENT_TYPE) else {
        return Ok(BodyType::Json);
    };
    let ct = ct.to_str().unwrap_or("");
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Ok(match media.as_str() {
        "application/json" | "" | "*/*" => BodyType::Json,
        "application/yaml" | "application/x-yaml" | "text/yaml" => BodyType::Yaml,
        "application/strategic-merge-patch+json" => BodyType::StrategicMerge,
        "application/merge-patch+json" => BodyType::MergePatch,
        "application/json-patch+json" => BodyType::JsonPatch,
        "application/apply-patch+yaml" => BodyType::ApplyPatch,
        // Decoded to JSON by `decode`, which recognises the protobuf magic;
        // patches stay JSON-only (a protobuf patch is refused like a JSON one).
        crate::protobuf::MEDIA_TYPE => BodyType::Json,
        _ => return Err(ApiError(status::unsupported_media_type(ct))),
    })
}

/// Decodes a body as JSON, YAML or Kubernetes protobuf into a value; 400
/// when malformed.
pub fn decode(bytes: &[u8], ty: BodyType) -> Result<Value> {
    if crate::protobuf::is_protobuf(bytes) {
        return crate::protobuf::decode_body(bytes);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let as_json = serde_json::from_slice::<Value>(bytes);
    match (ty, as_json) {
        (_, Ok(v)) => Ok(v),
        (BodyType::Yaml | BodyType::ApplyPatch, Err(_)) => {
            let v: Value = serde_yaml::from_slice(bytes)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
            Ok(v)
        }
        (_, Err(e)) => Err(ApiError::bad_request(format!(
            "couldn't get version/kind; json parse error: {e}"
        ))),
    }
}

/// A DELETE body as JSON bytes: protobuf DeleteOptions (client-go's typed
/// clients, e.g. drain) are converted, anything else is passed through.
pub fn delete_body(bytes: bytes::Bytes) -> Result<bytes::Bytes> {
    if !crate::protobuf::is_protobuf(&bytes) {
        return Ok(bytes);
    }
    let v = crate::protobuf::decode_body(&bytes)?;
    Ok(bytes::Bytes::from(v.to_string()))
}

/// Decodes a body that must be one object.
pub fn decode_object(bytes: &[u8], ty: BodyType) -> Result<Value> {
    let v = decode(bytes, ty)?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}
