//! The apiserver's one error type. Every failure a client can see is an
//! [`ApiError`] carrying a Kubernetes `Status`; this is the only place that
//! turns errors into HTTP responses, so no handler leaks internals.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use wasmkube_api::status;

use crate::storage;

/// An error answered to the client as a `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError(pub Status);

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    /// The HTTP status code of this error.
    pub fn code(&self) -> u16 {
        self.0
            .code
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(500)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self(status::bad_request(message))
    }
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self(status::not_found(group, resource, name))
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self(status::internal(message))
    }
    /// Map a storage error for `resource` (plural) `name` in `group`.
    pub fn from_storage(err: storage::Error, group: &str, resource: &str, name: &str) -> Self {
        match err {
            storage::Error::AlreadyExists { .. } => {
                Self(status::already_exists(group, resource, name))
            }
            storage::Error::NotFound { .. } => Self(status::not_found(group, resource, name)),
            storage::Error::Conflict { .. } => Self(status::conflict(
                group,
                resource,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )),
            storage::Error::Compacted {
                requested,
                compacted,
            } => Self(status::expired(requested, compacted)),
            storage::Error::FutureRevision { requested, current } => Self(status::failure(
                504,
                "Timeout",
                format!("Too large resource version: {requested}, current: {current}"),
            )),
            // Kubernetes' message for a value its transformer cannot read;
            // it names the storage key and the encryption key, never data.
            e @ storage::Error::Transform { .. } => {
                tracing::error!(error = %e, "stored value cannot be decrypted");
                Self(status::internal(format!("Internal error occurred: {e}")))
            }
            // Only watches lag, and an HTTP watch ends instead; should one
            // reach here, it is the server's own failure to keep up.
            e @ storage::Error::Lagged { .. } => {
                tracing::warn!(error = %e, "store watch fell behind");
                Self(status::internal(format!("Internal error occurred: {e}")))
            }
            storage::Error::Backend(msg) => {
                tracing::error!(error = %msg, "storage backend failure");
                Self(status::internal("storage backend failure"))
            }
        }
    }
}

impl From<Status> for ApiError {
    fn from(s: Status) -> Self {
        Self(s)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({})",
            self.0.message.as_deref().unwrap_or(""),
            self.code()
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&status::to_json(&self.0)).unwrap_or_default();
        let mut resp = (code, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if code == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
