//! Node join: `GET /cacerts` (anonymous: the agent pins it by the hash in
//! its join token) and `POST /wasmkube/v1/join`, which exchanges a bootstrap
//! token and a CSR for a node client certificate signed by the cluster CA.
//! Also `POST /apis/authentication.k8s.io/v1/selfsubjectreviews`, which tells
//! callers who they are authenticated as (`kubectl auth whoami`).
//!
//! Any bootstrapper may ask for any node name: that is the same trust
//! Kubernetes gives bootstrappers when it auto-approves their node CSRs. A
//! join token is therefore a credential for "become any node"; keep its TTL
//! short and revoke it when the joins are done.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use wasmkube_api::join::{self, JoinRequest, JoinResponse};
use wasmkube_api::status;

use crate::AppState;
use crate::auth::{MASTERS_GROUP, UserInfo};
use crate::error::{ApiError, Result};
use crate::pki::SignError;

const SELF_SUBJECT_REVIEWS_PATH: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(join::CACERTS_PATH, get(cacerts))
        .route(join::JOIN_PATH, post(join_node))
        .route(SELF_SUBJECT_REVIEWS_PATH, post(self_subject_review))
}

fn no_ca() -> ApiError {
    ApiError(status::unavailable(
        "this API server has no cluster CA to serve or sign with",
    ))
}

/// The cluster CA, PEM.
async fn cacerts(State(state): State<AppState>) -> Response {
    match &state.ca {
        Some(ca) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-pem-file")],
            ca.ca_pem().to_string(),
        )
            .into_response(),
        None => no_ca().into_response(),
    }
}

async fn join_node(State(state): State<AppState>, req: Request) -> Response {
    match handle_join(state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// May `user` exchange a join request for a node certificate?
pub fn may_join(user: &UserInfo) -> bool {
    user.groups
        .iter()
        .any(|g| g == join::BOOTSTRAPPERS_GROUP || g == MASTERS_GROUP)
}

async fn handle_join(state: AppState, req: Request) -> Result<Response> {
    let user = req
        .extensions()
        .get::<UserInfo>()
        .cloned()
        .ok_or_else(|| ApiError(status::unauthorized()))?;
    if !may_join(&user) {
        return Err(ApiError(status::forbidden(format!(
            "User \"{}\" cannot join nodes: only bootstrap tokens (group {}) and cluster admins (group {MASTERS_GROUP}) may",
            user.name,
            join::BOOTSTRAPPERS_GROUP
        ))));
    }
    let ca = state.ca.clone().ok_or_else(no_ca)?;
    let bytes = read_body(req.into_body(), state.limits.api).await?;
    let request: JoinRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the join request is not valid JSON {{\"nodeName\": ..., \"csr\": ...}}: {e}"
        ))
    })?;
    let name = request.node_name.clone();
    // Signing verifies the CSR signature (RSA can take a while): off the runtime.
    let signed = tokio::task::spawn_blocking(move || {
        ca.sign_node_client_cert(&request.csr, &request.node_name)
    })
    .await
    .map_err(|e| ApiError::internal(format!("signing task failed: {e}")))?;
    let certificate = match signed {
        Ok(c) => c,
        Err(SignError::BadNodeName { name, message }) => {
            return Err(ApiError(status::invalid(
                "wasmkube.io",
                "JoinRequest",
                &name,
                vec![wasmkube_api::names::invalid(
                    "nodeName",
                    &serde_json::Value::from(name.as_str()),
                    &message,
                )],
            )));
        }
        Err(e @ SignError::BadCsr(_)) => return Err(ApiError::bad_request(e.to_string())),
        Err(SignError::Signing(e)) => {
            tracing::error!(error = %e, "signing a node certificate failed");
            return Err(ApiError::internal("signing the node certificate failed"));
        }
    };
    tracing::info!(node = %name, by = %user.name, "issued a node client certificate");
    let body = JoinResponse {
        node_name: name,
        certificate,
        ca: state
            .ca
            .as_ref()
            .map(|c| c.ca_pem().to_string())
            .unwrap_or_default(),
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError(status::too_large(limit)))
}

/// `kubectl auth whoami`: the caller's user as the server sees it. The body
/// (a SelfSubjectReview, possibly protobuf) carries nothing to read.
async fn self_subject_review(req: Request) -> Response {
    let Some(user) = req.extensions().get::<UserInfo>() else {
        return ApiError(status::unauthorized()).into_response();
    };
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    let review = json!({
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": crate::registry::object::now()},
        "status": {"userInfo": info},
    });
    (StatusCode::CREATED, axum::Json(review)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bootstrappers_and_masters_may_join() {
        let user = |groups: &[&str]| UserInfo {
            name: "u".into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        assert!(may_join(&user(&[
            "system:bootstrappers",
            "system:authenticated"
        ])));
        assert!(may_join(&user(&["system:masters"])));
        assert!(!may_join(&user(&["system:nodes", "system:authenticated"])));
        assert!(!may_join(&user(&["system:bootstrappers:edge"])));
    }
}
