//! `authorization.k8s.io/v1` access reviews: asking the authorizer a
//! question without making the request (`kubectl auth can-i`).
//!
//! - `selfsubjectaccessreviews`: may I do this? (every authenticated user,
//!   through `system:basic-user`)
//! - `selfsubjectrulesreviews`: what may I do in this namespace?
//!   (`kubectl auth can-i --list`)
//! - `subjectaccessreviews`: may this user do this? (needs `create` on
//!   them: cluster admins)
//! - `namespaces/<ns>/localsubjectaccessreviews`: the same, limited to one
//!   namespace (namespace `admin`s may).
//!
//! Each answers 201 with the review it was given and its `status`, as
//! kube-apiserver does; nothing is stored.

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use wasmkube_api::status;

use crate::AppState;
use crate::auth::UserInfo;
use crate::authz::Attributes;
use crate::authz::rbac;
use crate::error::{ApiError, Result};
use crate::registry::request;

const GROUP_VERSION: &str = "authorization.k8s.io/v1";
const BASE: &str = "/apis/authorization.k8s.io/v1";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            &format!("{BASE}/selfsubjectaccessreviews"),
            post(self_subject_access_review),
        )
        .route(
            &format!("{BASE}/selfsubjectrulesreviews"),
            post(self_subject_rules_review),
        )
        .route(
            &format!("{BASE}/subjectaccessreviews"),
            post(subject_access_review),
        )
        .route(
            &format!("{BASE}/namespaces/{{namespace}}/localsubjectaccessreviews"),
            post(local_subject_access_review),
        )
}

fn caller(req: &Request) -> Result<UserInfo> {
    req.extensions()
        .get::<UserInfo>()
        .cloned()
        .ok_or_else(|| ApiError(status::unauthorized()))
}

/// The review in the body, which must be of `kind`.
async fn body(state: &AppState, req: Request, kind: &str) -> Result<Value> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, state.limits.api)
        .await
        .map_err(|_| ApiError(status::too_large(state.limits.api)))?;
    let ty = request::body_type(&parts.headers)?;
    let review = request::decode_object(&bytes, ty)?;
    let got = review.get("kind").and_then(Value::as_str).unwrap_or(kind);
    if got != kind {
        return Err(ApiError::bad_request(format!(
            "expected a {kind}, got a {got}"
        )));
    }
    Ok(review)
}

fn str_at<'a>(v: &'a Value, path: &str) -> &'a str {
    v.pointer(path).and_then(Value::as_str).unwrap_or("")
}

/// The attributes a review's `spec` asks about (`resourceAttributes` or
/// `nonResourceAttributes`, exactly one).
pub fn spec_attributes(spec: &Value) -> Result<Attributes> {
    let resource = spec.get("resourceAttributes").filter(|v| v.is_object());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| v.is_object());
    match (resource, non_resource) {
        (Some(r), None) => Ok(Attributes {
            path: String::new(),
            resource_request: true,
            verb: str_at(r, "/verb").to_string(),
            api_group: str_at(r, "/group").to_string(),
            api_version: str_at(r, "/version").to_string(),
            resource: str_at(r, "/resource").to_string(),
            subresource: str_at(r, "/subresource").to_string(),
            namespace: str_at(r, "/namespace").to_string(),
            name: str_at(r, "/name").to_string(),
        }),
        (None, Some(n)) => Ok(Attributes {
            path: str_at(n, "/path").to_string(),
            resource_request: false,
            verb: str_at(n, "/verb").to_string(),
            ..Attributes::default()
        }),
        (Some(_), Some(_)) => Err(invalid(
            "spec.resourceAttributes",
            "cannot be specified in combination with nonResourceAttributes",
        )),
        (None, None) => Err(invalid(
            "spec.resourceAttributes",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
    }
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError(status::failure(
        422,
        "Invalid",
        format!("{field}: Invalid value: {message}"),
    ))
}

/// The review with its `status` filled, as a 201.
async fn answer(state: &AppState, user: &UserInfo, mut review: Value) -> Result<Response> {
    let attrs = spec_attributes(review.get("spec").unwrap_or(&Value::Null))?;
    let (allowed, reason) = rbac::evaluate(&state.registry, user, &attrs).await?;
    let mut st = json!({"allowed": allowed});
    if !reason.is_empty() {
        st["reason"] = json!(reason);
    }
    review["status"] = st;
    Ok(created(review))
}

fn created(mut review: Value) -> Response {
    if let Some(o) = review.as_object_mut() {
        o.insert("apiVersion".into(), json!(GROUP_VERSION));
        let meta = o.entry("metadata").or_insert_with(|| json!({}));
        if !meta.is_object() {
            *meta = json!({});
        }
        meta["creationTimestamp"] = Value::Null;
    }
    (StatusCode::CREATED, axum::Json(review)).into_response()
}

fn respond(r: Result<Response>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn self_subject_access_review(State(state): State<AppState>, req: Request) -> Response {
    respond(
        async {
            let user = caller(&req)?;
            let review = body(&state, req, "SelfSubjectAccessReview").await?;
            answer(&state, &user, review).await
        }
        .await,
    )
}

/// The user a SubjectAccessReview names (`spec.user`, `spec.groups`,
/// `spec.uid`), taken as given: Kubernetes adds no groups either.
fn spec_user(spec: &Value) -> Result<UserInfo> {
    let name = str_at(spec, "/user").to_string();
    let groups: Vec<String> = spec
        .get("groups")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if name.is_empty() && groups.is_empty() {
        return Err(invalid(
            "spec.user",
            "at least one of user or group must be specified",
        ));
    }
    Ok(UserInfo {
        name,
        uid: str_at(spec, "/uid").to_string(),
        groups,
    })
}

async fn subject_access_review(State(state): State<AppState>, req: Request) -> Response {
    respond(
        async {
            caller(&req)?;
            let review = body(&state, req, "SubjectAccessReview").await?;
            let user = spec_user(review.get("spec").unwrap_or(&Value::Null))?;
            answer(&state, &user, review).await
        }
        .await,
    )
}

async fn local_subject_access_review(
    State(state): State<AppState>,
    Path(namespace): Path<String>,
    req: Request,
) -> Response {
    respond(
        async {
            caller(&req)?;
            let review = body(&state, req, "LocalSubjectAccessReview").await?;
            let spec = review.get("spec").unwrap_or(&Value::Null);
            let asked = str_at(spec, "/resourceAttributes/namespace");
            if spec
                .get("nonResourceAttributes")
                .is_some_and(|v| v.is_object())
                || asked != namespace
            {
                return Err(invalid(
                    "spec.resourceAttributes.namespace",
                    &format!("must be {namespace:?}, the namespace of the review"),
                ));
            }
            let user = spec_user(spec)?;
            answer(&state, &user, review).await
        }
        .await,
    )
}

async fn self_subject_rules_review(State(state): State<AppState>, req: Request) -> Response {
    respond(
        async {
            let user = caller(&req)?;
            let mut review = body(&state, req, "SelfSubjectRulesReview").await?;
            let namespace = str_at(&review, "/spec/namespace").to_string();
            review["status"] = rbac::rules_review(&state.registry, &user, &namespace).await?;
            Ok(created(review))
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_names_exactly_one_kind_of_attributes() -> Result<()> {
        let a = spec_attributes(&json!({"resourceAttributes": {
            "verb": "get", "resource": "pods", "subresource": "log", "namespace": "ns", "name": "p"
        }}))?;
        assert!(a.resource_request);
        assert_eq!(a.resource_path(), "pods/log");
        assert_eq!((a.namespace.as_str(), a.name.as_str()), ("ns", "p"));
        let n = spec_attributes(
            &json!({"nonResourceAttributes": {"verb": "get", "path": "/healthz"}}),
        )?;
        assert!(!n.resource_request);
        assert_eq!(n.path, "/healthz");
        assert!(spec_attributes(&json!({})).is_err());
        assert!(
            spec_attributes(&json!({"resourceAttributes": {}, "nonResourceAttributes": {}}))
                .is_err()
        );
        assert!(spec_user(&json!({})).is_err());
        Ok(())
    }
}
