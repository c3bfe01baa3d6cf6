//! Impersonation (`kubectl --as`, `--as-group`, `--as-uid`): Kubernetes'
//! `Impersonate-User`, `Impersonate-Group` and `Impersonate-Uid` headers.
//! The caller needs the `impersonate` verb on each thing it asks to be
//! (`users`, `groups`, `serviceaccounts` in the core group, `uids` in
//! `authentication.k8s.io`); the request then runs as that user. Extra
//! fields (`Impersonate-Extra-*`) are refused: nothing here reads them.

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use wasmkube_api::status;

use super::SERVICE_ACCOUNT_PREFIX;
use crate::AppState;
use crate::auth::{AUTHENTICATED_GROUP, UserInfo};
use crate::authz::attributes::Attributes;
use crate::error::ApiError;

pub const USER_HEADER: &str = "impersonate-user";
pub const GROUP_HEADER: &str = "impersonate-group";
pub const UID_HEADER: &str = "impersonate-uid";
pub const EXTRA_PREFIX: &str = "impersonate-extra-";

fn impersonate_attrs(group: &str, resource: &str, namespace: &str, name: &str) -> Attributes {
    Attributes {
        path: String::new(),
        resource_request: true,
        verb: "impersonate".into(),
        api_group: group.into(),
        api_version: "v1".into(),
        resource: resource.into(),
        subresource: String::new(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// What `impersonating` asks to be checked for `name`.
fn user_attrs(name: &str) -> Attributes {
    if let Some(rest) = name.strip_prefix(SERVICE_ACCOUNT_PREFIX)
        && let Some((ns, sa)) = rest.split_once(':')
    {
        return impersonate_attrs("", "serviceaccounts", ns, sa);
    }
    impersonate_attrs("", "users", "", name)
}

/// The user the request should run as: `Ok(None)` without impersonation
/// headers, the impersonated user when `user` may be it, else the 400/403
/// answer.
pub async fn impersonate(
    state: &AppState,
    user: &UserInfo,
    headers: &HeaderMap,
) -> Result<Option<UserInfo>, Response> {
    let text = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|s| s.trim().to_string())
            .collect()
    };
    let users = text(USER_HEADER);
    let groups = text(GROUP_HEADER);
    let uids = text(UID_HEADER);
    let extras = headers.keys().any(|k| k.as_str().starts_with(EXTRA_PREFIX));
    if users.is_empty() && groups.is_empty() && uids.is_empty() && !extras {
        return Ok(None);
    }
    let Some(name) = users.first().filter(|n| !n.is_empty()).cloned() else {
        return Err(ApiError::bad_request(
            "requested impersonation of groups, a uid or extra fields without impersonating a user",
        )
        .into_response());
    };
    if users.len() > 1 || uids.len() > 1 {
        return Err(
            ApiError::bad_request("only one user and one uid may be impersonated").into_response(),
        );
    }
    if extras {
        return Err(ApiError(status::forbidden(format!(
            "User {:?} cannot impersonate user extra fields: not supported by this server",
            user.name
        )))
        .into_response());
    }
    let mut checks = vec![user_attrs(&name)];
    checks.extend(
        groups
            .iter()
            .map(|g| impersonate_attrs("", "groups", "", g)),
    );
    checks.extend(
        uids.iter()
            .map(|u| impersonate_attrs("authentication.k8s.io", "uids", "", u)),
    );
    for attrs in &checks {
        match super::evaluate(&state.registry, user, attrs).await {
            Ok((true, _)) => {}
            Ok((false, why)) => {
                tracing::debug!(user = %user.name, target = %attrs.name, "impersonation refused");
                return Err(
                    ApiError(crate::authz::forbidden(&user.name, attrs, &why)).into_response()
                );
            }
            Err(e) => return Err(e.into_response()),
        }
    }
    let mut as_groups = groups;
    if let Some(rest) = name.strip_prefix(SERVICE_ACCOUNT_PREFIX)
        && let Some((ns, _)) = rest.split_once(':')
        && as_groups.is_empty()
    {
        as_groups.push("system:serviceaccounts".to_string());
        as_groups.push(format!("system:serviceaccounts:{ns}"));
    }
    if name != "system:anonymous" && !as_groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
        as_groups.push(AUTHENTICATED_GROUP.to_string());
    }
    Ok(Some(UserInfo {
        name,
        uid: uids.into_iter().next().unwrap_or_default(),
        groups: as_groups,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_accounts_are_checked_as_service_accounts() {
        let a = user_attrs("system:serviceaccount:ns:robot");
        assert_eq!(
            (a.resource.as_str(), a.namespace.as_str(), a.name.as_str()),
            ("serviceaccounts", "ns", "robot")
        );
        let u = user_attrs("alice");
        assert_eq!((u.resource.as_str(), u.name.as_str()), ("users", "alice"));
        assert_eq!(u.verb, "impersonate");
    }
}
