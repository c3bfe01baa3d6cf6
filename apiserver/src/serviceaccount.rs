//! ServiceAccount tokens: issuing them (the `serviceaccounts/<n>/token`
//! subresource, an `authentication.k8s.io/v1` TokenRequest, which is what
//! `kubectl create token` calls) and authenticating requests that carry one.
//!
//! Tokens are JWTs signed with the server's key ([`jwt`]). A token is
//! accepted when its signature, issuer, audience (one of the server's API
//! audiences) and expiry check out *and* the ServiceAccount it names still
//! exists with the uid it was issued for — deleting the account (or the
//! object a bound token is tied to) revokes every token it had. The caller
//! becomes `system:serviceaccount:<ns>:<name>` in the groups
//! `system:serviceaccounts`, `system:serviceaccounts:<ns>` and
//! `system:authenticated`, as in Kubernetes.
//!
//! The public key is published as a JWKS at `/openid/v1/jwks`, with an
//! OpenID discovery document at `/.well-known/openid-configuration`, so
//! other parties can verify tokens without asking the API server.

pub mod jwt;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use wasmkube_api::resources::{self, ResourceInfo};
use wasmkube_api::status::{self, FieldCause};

use crate::auth::{AUTHENTICATED_GROUP, UserInfo};
use crate::error::{ApiError, Result};
use crate::registry::{Registry, object};

pub use jwt::{
    Claims, Expectations, KeyError, KubernetesClaims, ObjectClaim, SigningKey, TokenError,
};

/// Prefix of every ServiceAccount user name.
pub const USER_PREFIX: &str = "system:serviceaccount:";
/// The group of every ServiceAccount.
pub const ALL_SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
/// The issuer and API audience when none is configured (Kubernetes' in-cluster name).
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc";
/// The key file under `<data>/pki`.
pub const KEY_FILE: &str = "sa.key";
/// TokenRequest's `expirationSeconds` when the request has none.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest token Kubernetes issues (10 minutes).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest a request may ask for before validation refuses it (2^32 s).
const MAX_REQUESTABLE_SECONDS: i64 = 1 << 32;
/// ServiceAccounts the server would not look up (they could not exist).
const MAX_NAME_LEN: usize = 253;

/// Issuer, audiences and lifetime of ServiceAccount tokens.
#[derive(Debug, Clone)]
pub struct TokenOptions {
    /// The `iss` claim (`--service-account-issuer`).
    pub issuer: String,
    /// Audiences the API server accepts (`--api-audiences`); empty means
    /// the issuer alone, as in Kubernetes. Tokens requested without
    /// audiences get these.
    pub api_audiences: Vec<String>,
    /// Longer requested lifetimes are cut to this
    /// (`--service-account-max-token-expiration`).
    pub max_expiration: Duration,
}

impl Default for TokenOptions {
    fn default() -> Self {
        Self {
            issuer: DEFAULT_ISSUER.to_string(),
            api_audiences: Vec::new(),
            max_expiration: Duration::from_secs(48 * 3600),
        }
    }
}

/// Issues and verifies ServiceAccount tokens with one signing key.
#[derive(Debug)]
pub struct ServiceAccountTokens {
    key: SigningKey,
    issuer: String,
    audiences: Vec<String>,
    max_expiration_seconds: i64,
}

impl ServiceAccountTokens {
    /// Tokens signed with `<pki_dir>/sa.key`, made (0600) on first use.
    /// Blocking: call from `spawn_blocking`.
    pub fn load_or_create(pki_dir: &Path, options: TokenOptions) -> Result<Self, KeyError> {
        crate::pki::create_private_dir(pki_dir)?;
        let key = SigningKey::load_or_create(&pki_dir.join(KEY_FILE))?;
        Ok(Self::new(key, options))
    }

    /// Tokens signed with `key`.
    pub fn new(key: SigningKey, options: TokenOptions) -> Self {
        let issuer = options.issuer.trim().to_string();
        let mut audiences: Vec<String> = options
            .api_audiences
            .iter()
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect();
        if audiences.is_empty() {
            audiences.push(issuer.clone());
        }
        let max = i64::try_from(options.max_expiration.as_secs()).unwrap_or(i64::MAX);
        Self {
            key,
            issuer,
            audiences,
            max_expiration_seconds: max.max(MIN_EXPIRATION_SECONDS),
        }
    }

    /// The `iss` of every token.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The audiences this server accepts.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// Signs `claims` as they are (tests mint expired or foreign tokens
    /// this way; the API only signs what [`token_request`] builds).
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        self.key.sign(claims)
    }

    /// The claims of `token` if it is a valid token of this server at `now`
    /// (seconds since the epoch); existence of the account is not checked.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        self.key.verify(
            token,
            &Expectations {
                issuer: &self.issuer,
                audiences: &self.audiences,
                now,
            },
        )
    }

    /// The user `token` authenticates, or `None` (the reason is logged at
    /// debug level, without the token).
    pub async fn authenticate(&self, registry: &Registry, token: &str) -> Option<UserInfo> {
        let claims = match self.verify(token, jiff::Timestamp::now().as_second()) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(reason = %e, "service account token rejected");
                return None;
            }
        };
        if let Err(why) = still_valid(registry, &claims.kubernetes).await {
            tracing::debug!(
                user = %claims.sub,
                reason = %why,
                "service account token rejected"
            );
            return None;
        }
        let k = claims.kubernetes;
        Some(UserInfo {
            name: claims.sub,
            uid: k.serviceaccount.uid,
            groups: groups_of(&k.namespace),
        })
    }

    /// The JSON Web Key Set of the signing key.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.key.jwk()] })
    }

    /// The OpenID provider configuration for the issuer.
    pub fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/openid/v1/jwks", self.issuer.trim_end_matches('/')),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [jwt::ALGORITHM],
        })
    }
}

/// The groups of a ServiceAccount in `namespace`.
pub fn groups_of(namespace: &str) -> Vec<String> {
    vec![
        ALL_SERVICE_ACCOUNTS_GROUP.to_string(),
        format!("{ALL_SERVICE_ACCOUNTS_GROUP}:{namespace}"),
        AUTHENTICATED_GROUP.to_string(),
    ]
}

/// Does `token` look like a JWT (and so is worth verifying)?
pub fn looks_like_jwt(token: &str) -> bool {
    jwt::looks_like_jwt(token)
}

fn resource(plural: &str) -> Result<&'static ResourceInfo> {
    resources::by_plural("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("the {plural} resource is not registered")))
}

/// The object `name` (of `plural`) in `namespace` when it exists with `uid`
/// and is not being deleted. The watch cache answers first; when it does not
/// hold a matching object (or lags this server's own writes) the store does,
/// so a deletion through this server revokes at once.
async fn live_object(
    registry: &Registry,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
    uid: &str,
) -> std::result::Result<(), String> {
    let res = resource(plural).map_err(|e| e.0.message.unwrap_or_default())?;
    let matches = |obj: &Value| {
        object::name(obj) == name
            && object::meta_str(obj, "uid") == Some(uid)
            && obj
                .pointer("/metadata/deletionTimestamp")
                .is_none_or(Value::is_null)
    };
    if let Some(cached) = registry.cached_objects(res, namespace)
        && cached.iter().any(|o| matches(o))
    {
        return Ok(());
    }
    match registry.get(res, namespace, name).await {
        Ok(obj) if matches(&obj) => Ok(()),
        Ok(obj) if object::meta_str(&obj, "uid") != Some(uid) => Err(format!(
            "{plural} {name:?} was recreated (uid {:?}, token for {uid:?})",
            object::meta_str(&obj, "uid").unwrap_or("")
        )),
        Ok(_) => Err(format!("{plural} {name:?} is being deleted")),
        Err(e) if e.code() == 404 => Err(format!("{plural} {name:?} no longer exists")),
        Err(e) => {
            tracing::warn!(
                code = e.code(),
                "reading {plural} {name:?} for a token failed"
            );
            Err(format!("{plural} {name:?} could not be read"))
        }
    }
}

/// The account, and any object the token is bound to, still exist with the
/// uids the token was issued for.
async fn still_valid(registry: &Registry, k: &KubernetesClaims) -> std::result::Result<(), String> {
    let ns = Some(k.namespace.as_str());
    live_object(
        registry,
        "serviceaccounts",
        ns,
        &k.serviceaccount.name,
        &k.serviceaccount.uid,
    )
    .await?;
    if let Some(pod) = &k.pod {
        live_object(registry, "pods", ns, &pod.name, &pod.uid).await?;
    }
    if let Some(secret) = &k.secret {
        live_object(registry, "secrets", ns, &secret.name, &secret.uid).await?;
    }
    if let Some(node) = &k.node {
        live_object(registry, "nodes", None, &node.name, &node.uid).await?;
    }
    Ok(())
}

fn invalid(name: &str, causes: Vec<FieldCause>) -> ApiError {
    ApiError(status::invalid(
        "authentication.k8s.io",
        "TokenRequest",
        name,
        causes,
    ))
}

/// `POST …/namespaces/<ns>/serviceaccounts/<name>/token`: signs a token for
/// the account from the TokenRequest `body` and answers the TokenRequest
/// with `status.token` and `status.expirationTimestamp` (201).
pub async fn token_request(
    registry: &Registry,
    tokens: &ServiceAccountTokens,
    namespace: &str,
    name: &str,
    body: &Value,
) -> Result<Value> {
    if name.len() > MAX_NAME_LEN || namespace.is_empty() {
        return Err(ApiError::not_found("", "serviceaccounts", name));
    }
    if let Some(kind) = body.get("kind").and_then(Value::as_str)
        && kind != "TokenRequest"
    {
        return Err(ApiError::bad_request(format!(
            "the body must be a TokenRequest, not a {kind}"
        )));
    }
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    if !spec.is_object() {
        return Err(invalid(
            name,
            vec![FieldCause::invalid(
                "spec",
                "Invalid value: must be an object",
            )],
        ));
    }

    // Audiences: strings; none means the API server's own.
    let mut audiences = Vec::new();
    match spec.get("audiences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, a) in list.iter().enumerate() {
                match a.as_str() {
                    Some(s) if !s.is_empty() => audiences.push(s.to_string()),
                    _ => {
                        return Err(invalid(
                            name,
                            vec![FieldCause::invalid(
                                format!("spec.audiences[{i}]"),
                                "Invalid value: must be a non-empty string",
                            )],
                        ));
                    }
                }
            }
        }
        Some(_) => {
            return Err(invalid(
                name,
                vec![FieldCause::invalid(
                    "spec.audiences",
                    "Invalid value: must be a list of strings",
                )],
            ));
        }
    }
    if audiences.is_empty() {
        audiences = tokens.audiences.clone();
    }

    // Lifetime: Kubernetes' validation, then the server's cap.
    let requested = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => v.as_i64().ok_or_else(|| {
            invalid(
                name,
                vec![FieldCause::invalid(
                    "spec.expirationSeconds",
                    format!("Invalid value: {v}: must be an integer"),
                )],
            )
        })?,
    };
    if requested < MIN_EXPIRATION_SECONDS {
        return Err(invalid(
            name,
            vec![FieldCause::invalid(
                "spec.expirationSeconds",
                format!(
                    "Invalid value: {requested}: may not specify a duration less than 10 minutes"
                ),
            )],
        ));
    }
    if requested > MAX_REQUESTABLE_SECONDS {
        return Err(invalid(
            name,
            vec![FieldCause::invalid(
                "spec.expirationSeconds",
                format!(
                    "Invalid value: {requested}: may not specify a duration larger than 2^32 seconds"
                ),
            )],
        ));
    }
    let lifetime = requested.min(tokens.max_expiration_seconds);

    let sa = registry
        .get(resource("serviceaccounts")?, Some(namespace), name)
        .await?;
    if sa
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        return Err(ApiError(status::forbidden(format!(
            "serviceaccounts {name:?} is forbidden: the ServiceAccount is being deleted"
        ))));
    }
    let sa_uid = object::meta_str(&sa, "uid").unwrap_or("").to_string();

    let mut k = KubernetesClaims {
        namespace: namespace.to_string(),
        serviceaccount: ObjectClaim {
            name: name.to_string(),
            uid: sa_uid,
        },
        pod: None,
        secret: None,
        node: None,
    };
    let bound = match spec.get("boundObjectRef") {
        None | Some(Value::Null) => None,
        Some(r) => Some(bind(registry, namespace, name, r, &mut k).await?),
    };

    let now = jiff::Timestamp::now().as_second();
    let claims = Claims {
        iss: tokens.issuer.clone(),
        sub: jwt::subject(namespace, name),
        aud: audiences.clone(),
        exp: now + lifetime,
        iat: now,
        nbf: now,
        jti: uuid::Uuid::new_v4().to_string(),
        kubernetes: k,
    };
    let token = tokens
        .sign(&claims)
        .map_err(|e| ApiError::internal(format!("signing the token: {e}")))?;
    let expires = jiff::Timestamp::from_second(claims.exp)
        .map(object::timestamp)
        .map_err(|e| ApiError::internal(format!("token expiry: {e}")))?;
    let mut out_spec = json!({
        "audiences": audiences,
        "expirationSeconds": lifetime,
    });
    if let Some(r) = bound {
        out_spec["boundObjectRef"] = r;
    }
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": object::timestamp(jiff::Timestamp::now()),
        },
        "spec": out_spec,
        "status": {
            "token": token,
            "expirationTimestamp": expires,
        },
    }))
}

/// Checks `spec.boundObjectRef` (a Pod, Secret or Node that exists, with the
/// given uid if any) and records it in the claims; the bound reference as
/// answered (with the uid filled in).
async fn bind(
    registry: &Registry,
    namespace: &str,
    sa_name: &str,
    r: &Value,
    k: &mut KubernetesClaims,
) -> Result<Value> {
    let field = "spec.boundObjectRef";
    let kind = r.get("kind").and_then(Value::as_str).unwrap_or("");
    let api_version = r.get("apiVersion").and_then(Value::as_str).unwrap_or("v1");
    let name = r.get("name").and_then(Value::as_str).unwrap_or("");
    let uid = r.get("uid").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        return Err(invalid(
            sa_name,
            vec![FieldCause::required(format!("{field}.name"))],
        ));
    }
    let (plural, ns) = match (api_version, kind) {
        ("v1", "Pod") => ("pods", Some(namespace)),
        ("v1", "Secret") => ("secrets", Some(namespace)),
        ("v1", "Node") => ("nodes", None),
        _ => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token for serviceaccount {sa_name:?} to object of kind {:?}",
                format!("{api_version}, Kind={kind}")
            )));
        }
    };
    let obj = registry.get(resource(plural)?, ns, name).await?;
    let actual = object::meta_str(&obj, "uid").unwrap_or("").to_string();
    if !uid.is_empty() && uid != actual {
        return Err(ApiError(status::conflict(
            "",
            plural,
            name,
            &format!(
                "the UID in the bound object reference ({uid}) does not match the UID in record \
                 ({actual}). The object might have been deleted and then recreated"
            ),
        )));
    }
    if plural == "pods" {
        let pod_sa = obj
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        if pod_sa != sa_name {
            return Err(ApiError::bad_request(format!(
                "cannot bind token for serviceaccount {sa_name:?} to pod running with different \
                 serviceaccount name."
            )));
        }
    }
    let claim = Some(ObjectClaim {
        name: name.to_string(),
        uid: actual.clone(),
    });
    match plural {
        "pods" => k.pod = claim,
        "secrets" => k.secret = claim,
        _ => k.node = claim,
    }
    Ok(json!({ "kind": kind, "apiVersion": api_version, "name": name, "uid": actual }))
}

/// `/openid/v1/jwks` and `/.well-known/openid-configuration` (for any
/// authenticated caller; authorization may narrow it).
pub fn routes() -> Router<crate::AppState> {
    Router::new().route("/openid/v1/jwks", get(jwks)).route(
        "/.well-known/openid-configuration",
        get(openid_configuration),
    )
}

async fn jwks(State(state): State<crate::AppState>) -> Response {
    json_with_type(state.service_accounts.jwks(), "application/jwk-set+json")
}

async fn openid_configuration(State(state): State<crate::AppState>) -> Response {
    json_with_type(
        state.service_accounts.openid_configuration(),
        "application/json",
    )
}

fn json_with_type(body: Value, content_type: &'static str) -> Response {
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}

/// What the `token` subresource handler needs, shared through the router.
pub type Shared = Arc<ServiceAccountTokens>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_default_to_the_issuer_and_lifetimes_have_a_floor()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let t = ServiceAccountTokens::new(
            SigningKey::generate()?,
            TokenOptions {
                max_expiration: Duration::from_secs(1),
                ..TokenOptions::default()
            },
        );
        assert_eq!(t.audiences(), &[DEFAULT_ISSUER.to_string()]);
        assert_eq!(t.max_expiration_seconds, MIN_EXPIRATION_SECONDS);
        let t = ServiceAccountTokens::new(
            SigningKey::generate()?,
            TokenOptions {
                api_audiences: vec![" a ".into(), "".into(), "b".into()],
                ..TokenOptions::default()
            },
        );
        assert_eq!(t.audiences(), &["a".to_string(), "b".to_string()]);
        assert_eq!(
            groups_of("ns"),
            vec![
                "system:serviceaccounts",
                "system:serviceaccounts:ns",
                "system:authenticated"
            ]
        );
        assert_eq!(
            t.openid_configuration()["jwks_uri"],
            "https://kubernetes.default.svc/openid/v1/jwks"
        );
        Ok(())
    }
}
