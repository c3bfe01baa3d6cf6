//! Authorization: the middleware that runs after authentication and decides
//! whether the caller ([`UserInfo`]) may make the request.
//!
//! - `system:masters`: anything.
//! - Bootstrap tokens (`system:bootstrappers`): joining a node and the
//!   public documents (discovery, OpenAPI, version, health, CA bundle).
//! - Node credentials (`system:node:<n>`, `system:nodes`): Kubernetes' Node
//!   authorizer with NodeRestriction (see [`decision`]). The rules that need
//!   stored state — is this pod bound to the node, does one of its pods
//!   reference this Secret, what name does the created object carry — are
//!   checked here against the registry (pods from the watch cache first).
//! - Everyone else (users, ServiceAccounts, the scheduler and the
//!   controller manager): what RBAC grants ([`rbac`]).
//!
//! Impersonation headers (`kubectl --as`) are resolved first
//! ([`rbac::impersonation`]): the request is then authorized as the
//! impersonated user.
//!
//! Refusals are Kubernetes' 403 `Status` with reason `Forbidden` and its
//! message (`pods "x" is forbidden: User "…" cannot patch resource
//! "pods/status" in API group "" in the namespace "default": <why>`).

pub mod attributes;
pub mod decision;
pub mod rbac;
pub mod references;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusDetails};
use serde_json::Value;
use wasmkube_api::resources::{self, ResourceInfo};
use wasmkube_api::status;

pub use attributes::Attributes;
pub use decision::{Condition, Decision, decide};

use crate::AppState;
use crate::auth::UserInfo;
use crate::error::ApiError;
use crate::registry::{object, request};

/// Middleware: lets the request through when [`decide`] (and the state
/// behind a [`Condition`]) allows it, else answers 403.
pub async fn authorize(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(mut user) = req.extensions().get::<UserInfo>().cloned() else {
        // Authentication lets a request through without a user only on the
        // paths it serves anonymously (health, version, CA bundle).
        return next.run(req).await;
    };
    match rbac::impersonation::impersonate(&state, &user, req.headers()).await {
        Ok(Some(as_user)) => {
            // The audit log records who impersonated whom.
            if let Some(scope) = req
                .extensions()
                .get::<std::sync::Arc<crate::limits::RequestScope>>()
            {
                scope.set_impersonated(&as_user);
            }
            req.extensions_mut().insert(as_user.clone());
            user = as_user;
        }
        Ok(None) => {}
        Err(resp) => return resp,
    }
    let attrs = Attributes::from_request(req.method(), req.uri());
    let req = match decide(&user, &attrs) {
        Decision::Allow => req,
        Decision::Deny(why) => return refuse(&user, &attrs, &why),
        Decision::Requires(condition) => match check(&state, &user, &attrs, condition, req).await {
            Ok(req) => req,
            Err(resp) => return resp,
        },
    };
    next.run(req).await
}

/// The 403 answer, logged (without anything secret) for operators.
fn refuse(user: &UserInfo, attrs: &Attributes, why: &str) -> Response {
    tracing::debug!(
        user = %user.name,
        verb = %attrs.verb,
        path = %attrs.path,
        reason = %why,
        "request forbidden"
    );
    ApiError(forbidden(&user.name, attrs, why)).into_response()
}

/// Kubernetes' 403 `Status` for `user` refused `attrs` because of `reason`
/// (`ForbiddenStatusError` + `NewForbidden`).
pub fn forbidden(user: &str, attrs: &Attributes, reason: &str) -> Status {
    let what = if !attrs.resource_request {
        format!("User {user:?} cannot {} path {:?}", attrs.verb, attrs.path)
    } else if !attrs.namespace.is_empty() {
        format!(
            "User {user:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
            attrs.verb,
            attrs.resource_path(),
            attrs.api_group,
            attrs.namespace
        )
    } else {
        format!(
            "User {user:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
            attrs.verb,
            attrs.resource_path(),
            attrs.api_group
        )
    };
    let err = if reason.is_empty() {
        what
    } else {
        format!("{what}: {reason}")
    };
    if !attrs.resource_request || attrs.resource.is_empty() {
        return status::forbidden(format!("forbidden: {err}"));
    }
    let qualified = if attrs.api_group.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}.{}", attrs.resource, attrs.api_group)
    };
    let message = if attrs.name.is_empty() {
        format!("{qualified} is forbidden: {err}")
    } else {
        format!("{qualified} {:?} is forbidden: {err}", attrs.name)
    };
    let mut s = status::forbidden(message);
    s.details = Some(StatusDetails {
        group: (!attrs.api_group.is_empty()).then(|| attrs.api_group.clone()),
        kind: Some(attrs.resource.clone()),
        name: (!attrs.name.is_empty()).then(|| attrs.name.clone()),
        ..Default::default()
    });
    s
}

fn pods() -> Result<&'static ResourceInfo, Response> {
    resources::by_plural("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("the pods resource is not registered").into_response())
}

/// Checks `condition` against the stored state; the request comes back
/// (its body unchanged) when it holds.
async fn check(
    state: &AppState,
    user: &UserInfo,
    attrs: &Attributes,
    condition: Condition,
    req: Request,
) -> Result<Request, Response> {
    match condition {
        Condition::Rbac => rbac::check(state, user, attrs, req).await,
        Condition::BodyNamed { name, denial } => {
            let (parts, body) = req.into_parts();
            let bytes = read_body(body, state.limits.api).await?;
            let ty = request::body_type(&parts.headers).map_err(IntoResponse::into_response)?;
            let obj = request::decode_object(&bytes, ty).map_err(IntoResponse::into_response)?;
            let created = object::name(&obj);
            if created != name {
                let named = Attributes {
                    name: created.to_string(),
                    ..attrs.clone()
                };
                return Err(refuse(user, &named, &denial));
            }
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        Condition::MirrorPodOn { node } => {
            let (parts, body) = req.into_parts();
            let bytes = read_body(body, state.limits.api).await?;
            let ty = request::body_type(&parts.headers).map_err(IntoResponse::into_response)?;
            let obj = request::decode_object(&bytes, ty).map_err(IntoResponse::into_response)?;
            if let Err(denial) = decision::check_mirror_pod(&node, &obj) {
                return Err(refuse(user, attrs, &denial));
            }
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        Condition::PodOnNode { node, denial } => {
            let namespace = Some(attrs.namespace.as_str()).filter(|n| !n.is_empty());
            let pod = state
                .registry
                .get(pods()?, namespace, &attrs.name)
                .await
                .map_err(IntoResponse::into_response)?;
            if references::node_name(&pod) == node {
                Ok(req)
            } else {
                Err(refuse(user, attrs, &denial))
            }
        }
        Condition::ReferencedByPodOn { node, kind } => {
            let pods = pods()?;
            let namespace = Some(attrs.namespace.as_str());
            let related = |pod: &Value| {
                references::node_name(pod) == node && references::references(pod, kind, &attrs.name)
            };
            if let Some(cached) = state.registry.cached_objects(pods, namespace)
                && cached.iter().any(|p| related(p))
            {
                return Ok(req);
            }
            // The cache may not have a pod written through another API
            // server yet: read the store before refusing.
            let stored = state
                .registry
                .stored_objects(pods, namespace)
                .await
                .map_err(IntoResponse::into_response)?;
            if stored.iter().any(related) {
                Ok(req)
            } else {
                Err(refuse(
                    user,
                    attrs,
                    &format!("no relationship found between node '{node}' and this object"),
                ))
            }
        }
    }
}

/// The whole body, at most `limit` bytes (413 `Status` beyond).
async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, Response> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if is_length_limit(&e) {
            ApiError(status::too_large(limit)).into_response()
        } else {
            ApiError::bad_request(format!("reading the request body: {e}")).into_response()
        }
    })
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    fn attrs(method: Method, path: &str) -> Attributes {
        attributes::parse(&method, path, None)
    }

    #[test]
    fn messages_have_kubernetes_shape() {
        let s = forbidden(
            "system:node:a",
            &attrs(Method::PATCH, "/api/v1/namespaces/default/pods/x/status"),
            "why",
        );
        assert_eq!(
            s.message.as_deref(),
            Some(
                "pods \"x\" is forbidden: User \"system:node:a\" cannot patch resource \
                 \"pods/status\" in API group \"\" in the namespace \"default\": why"
            )
        );
        assert_eq!(s.code, Some(403));
        assert_eq!(s.reason.as_deref(), Some("Forbidden"));
        let d = s.details.unwrap_or_default();
        assert_eq!(d.kind.as_deref(), Some("pods"));
        assert_eq!(d.name.as_deref(), Some("x"));
        assert_eq!(d.group, None);

        let s = forbidden(
            "system:node:a",
            &attrs(Method::GET, "/apis/coordination.k8s.io/v1/leases"),
            "",
        );
        assert_eq!(
            s.message.as_deref(),
            Some(
                "leases.coordination.k8s.io is forbidden: User \"system:node:a\" cannot list \
                 resource \"leases\" in API group \"coordination.k8s.io\" at the cluster scope"
            )
        );
        assert_eq!(
            s.details.and_then(|d| d.group).as_deref(),
            Some("coordination.k8s.io")
        );

        let s = forbidden(
            "system:bootstrap:abcdef",
            &attrs(Method::GET, "/metrics"),
            "bootstrap tokens may only join a node",
        );
        assert_eq!(
            s.message.as_deref(),
            Some(
                "forbidden: User \"system:bootstrap:abcdef\" cannot get path \"/metrics\": \
                 bootstrap tokens may only join a node"
            )
        );
        assert!(s.details.is_none());
    }
}
