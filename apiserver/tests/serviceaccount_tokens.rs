//! ServiceAccount tokens through the whole router (`app`, as `start` serves
//! it): TokenRequest issues them, the authenticator accepts them only while
//! they are intact, unexpired, meant for this server and their account (or
//! bound object) still exists.

mod common;

use anyhow::{Context, Result, ensure};
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use wasmkube_apiserver::serviceaccount::{Claims, ServiceAccountTokens};
use wasmkube_apiserver::{app, bootstrap};

const SA: &str = "/api/v1/namespaces/default/serviceaccounts";
const WHOAMI: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";

struct Cluster {
    router: Router,
    admin: String,
    tokens: Arc<ServiceAccountTokens>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

struct Answer {
    status: StatusCode,
    body: Value,
}

async fn cluster() -> Result<Cluster> {
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let state = common::app_state(
        dir.path(),
        common::embedded_store(dir.path())?,
        &[],
        &shutdown,
    )
    .await?;
    bootstrap::ensure_namespaces(&state.registry).await?;
    let admin = common::token_of(&state.tokens, "admin")?;
    let tokens = state.service_accounts.clone();
    Ok(Cluster {
        router: app(state),
        admin,
        tokens,
        shutdown,
        _dir: dir,
    })
}

impl Cluster {
    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or_else(Body::empty),
        )?;
        let resp = self.router.clone().oneshot(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }

    async fn create_sa(&self, name: &str) -> Result<String> {
        let a = self
            .call(
                &self.admin,
                Method::POST,
                SA,
                Some(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}})),
            )
            .await?;
        ensure!(
            a.status == StatusCode::CREATED,
            "creating sa: {} {}",
            a.status,
            a.body
        );
        Ok(a.body["metadata"]["uid"].as_str().unwrap_or("").to_string())
    }

    /// POST …/serviceaccounts/<name>/token with `spec`.
    async fn token_request(&self, name: &str, spec: Value) -> Result<Answer> {
        self.call(
            &self.admin,
            Method::POST,
            &format!("{SA}/{name}/token"),
            Some(json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": spec,
            })),
        )
        .await
    }

    async fn token(&self, name: &str, spec: Value) -> Result<String> {
        let a = self.token_request(name, spec).await?;
        ensure!(
            a.status == StatusCode::CREATED,
            "token request: {} {}",
            a.status,
            a.body
        );
        a.body["status"]["token"]
            .as_str()
            .map(String::from)
            .context("no status.token")
    }

    /// `kubectl auth whoami` with `token`: the status and the user name.
    async fn whoami(&self, token: &str) -> Result<(StatusCode, Value)> {
        let a = self
            .call(
                token,
                Method::POST,
                WHOAMI,
                Some(
                    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
                ),
            )
            .await?;
        Ok((a.status, a.body["status"]["userInfo"].clone()))
    }
}

fn claims_of(token: &str) -> Result<Claims> {
    let payload = token.split('.').nth(1).context("no payload")?;
    Ok(serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload)?)?)
}

#[tokio::test]
async fn token_request_issues_a_token_that_authenticates_as_the_account() -> Result<()> {
    let c = cluster().await?;
    let uid = c.create_sa("robot").await?;
    let a = c
        .token_request("robot", json!({"expirationSeconds": 600}))
        .await?;
    ensure!(a.status == StatusCode::CREATED, "{} {}", a.status, a.body);
    ensure!(a.body["kind"] == "TokenRequest", "{}", a.body);
    ensure!(a.body["spec"]["expirationSeconds"] == 600, "{}", a.body);
    ensure!(
        a.body["spec"]["audiences"] == json!(["https://kubernetes.default.svc"]),
        "{}",
        a.body
    );
    let token = a.body["status"]["token"].as_str().context("no token")?;
    let expires = a.body["status"]["expirationTimestamp"]
        .as_str()
        .context("no expirationTimestamp")?;

    // Kubernetes' claims.
    let claims = claims_of(token)?;
    ensure!(claims.sub == "system:serviceaccount:default:robot");
    ensure!(claims.iss == "https://kubernetes.default.svc");
    ensure!(claims.exp - claims.iat == 600);
    ensure!(claims.nbf == claims.iat);
    ensure!(claims.kubernetes.namespace == "default");
    ensure!(claims.kubernetes.serviceaccount.name == "robot");
    ensure!(claims.kubernetes.serviceaccount.uid == uid);
    let exp_ts: jiff::Timestamp = expires.parse()?;
    ensure!(
        exp_ts.as_second() == claims.exp,
        "{expires} vs {}",
        claims.exp
    );

    // The token is the account.
    let (code, user) = c.whoami(token).await?;
    ensure!(code == StatusCode::CREATED, "whoami: {code} {user}");
    ensure!(
        user["username"] == "system:serviceaccount:default:robot",
        "{user}"
    );
    ensure!(user["uid"] == uid.as_str(), "{user}");
    ensure!(
        user["groups"]
            == json!([
                "system:serviceaccounts",
                "system:serviceaccounts:default",
                "system:authenticated"
            ]),
        "{user}"
    );

    // The key it was signed with is published, under the token's kid.
    let jwks = c
        .call(&c.admin, Method::GET, "/openid/v1/jwks", None)
        .await?;
    ensure!(jwks.status == StatusCode::OK, "{}", jwks.status);
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD.decode(token.split('.').next().context("no header")?)?,
    )?;
    ensure!(header["alg"] == "ES256", "{header}");
    ensure!(
        jwks.body["keys"][0]["kid"] == header["kid"],
        "{} vs {header}",
        jwks.body
    );
    let oidc = c
        .call(
            &c.admin,
            Method::GET,
            "/.well-known/openid-configuration",
            None,
        )
        .await?;
    ensure!(
        oidc.body["issuer"] == "https://kubernetes.default.svc",
        "{}",
        oidc.body
    );
    Ok(())
}

#[tokio::test]
async fn token_request_validates_and_caps_the_lifetime() -> Result<()> {
    let c = cluster().await?;
    c.create_sa("robot").await?;

    let short = c
        .token_request("robot", json!({"expirationSeconds": 599}))
        .await?;
    ensure!(
        short.status == StatusCode::UNPROCESSABLE_ENTITY,
        "{} {}",
        short.status,
        short.body
    );
    ensure!(
        short.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("may not specify a duration less than 10 minutes")),
        "{}",
        short.body
    );
    let wrong = c
        .token_request("robot", json!({"expirationSeconds": "soon"}))
        .await?;
    ensure!(
        wrong.status == StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        wrong.status
    );

    // No lifetime: an hour. A year: cut to the 48 h maximum.
    let default = claims_of(&c.token("robot", json!({})).await?)?;
    ensure!(default.exp - default.iat == 3600);
    let capped = c
        .token_request("robot", json!({"expirationSeconds": 365 * 24 * 3600}))
        .await?;
    ensure!(capped.status == StatusCode::CREATED, "{}", capped.status);
    ensure!(
        capped.body["spec"]["expirationSeconds"] == 48 * 3600,
        "{}",
        capped.body
    );

    let missing = c.token_request("nobody", json!({})).await?;
    ensure!(
        missing.status == StatusCode::NOT_FOUND,
        "{} {}",
        missing.status,
        missing.body
    );
    let unbindable = c
        .token_request(
            "robot",
            json!({"boundObjectRef": {"apiVersion": "v1", "kind": "ConfigMap", "name": "x"}}),
        )
        .await?;
    ensure!(
        unbindable.status == StatusCode::BAD_REQUEST,
        "{}",
        unbindable.status
    );
    Ok(())
}

#[tokio::test]
async fn wrong_audience_expired_and_tampered_tokens_get_401() -> Result<()> {
    let c = cluster().await?;
    c.create_sa("robot").await?;
    let good = c.token("robot", json!({})).await?;
    ensure!(c.whoami(&good).await?.0 == StatusCode::CREATED);

    // Meant for someone else: signed by us, but not for this API.
    let elsewhere = c
        .token("robot", json!({"audiences": ["https://vault.example"]}))
        .await?;
    ensure!(claims_of(&elsewhere)?.aud == vec!["https://vault.example".to_string()]);
    ensure!(c.whoami(&elsewhere).await?.0 == StatusCode::UNAUTHORIZED);

    // Expired: the same claims as a good token, with exp in the past. The
    // unexpired twin signed the same way is accepted, so only expiry differs.
    let mut claims = claims_of(&good)?;
    claims.iat -= 7200;
    claims.nbf -= 7200;
    claims.exp = claims.iat + 3600;
    let expired = c.tokens.sign(&claims)?;
    ensure!(c.whoami(&expired).await?.0 == StatusCode::UNAUTHORIZED);
    claims.exp = jiff::Timestamp::now().as_second() + 600;
    ensure!(c.whoami(&c.tokens.sign(&claims)?).await?.0 == StatusCode::CREATED);

    // Tampered: a flipped signature byte; claims edited after signing.
    let parts: Vec<&str> = good.split('.').collect();
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2])?;
    sig[10] ^= 0x01;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&sig));
    let (code, body) = c.whoami(&flipped).await?;
    ensure!(code == StatusCode::UNAUTHORIZED, "{code} {body}");
    let mut evil = claims_of(&good)?;
    evil.sub = "system:serviceaccount:kube-system:default".into();
    evil.kubernetes.namespace = "kube-system".into();
    evil.kubernetes.serviceaccount.name = "default".into();
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&evil)?),
        parts[2]
    );
    ensure!(c.whoami(&swapped).await?.0 == StatusCode::UNAUTHORIZED);
    // A token of another server's key.
    let stranger = ServiceAccountTokens::new(
        wasmkube_apiserver::serviceaccount::SigningKey::generate()?,
        Default::default(),
    );
    let foreign = stranger.sign(&claims_of(&good)?)?;
    ensure!(c.whoami(&foreign).await?.0 == StatusCode::UNAUTHORIZED);
    // Garbage shaped like a JWT.
    ensure!(c.whoami("eyJhbGciOiJub25lIn0.eyJ9.").await?.0 == StatusCode::UNAUTHORIZED);
    // The good token still works after all that.
    ensure!(c.whoami(&good).await?.0 == StatusCode::CREATED);
    Ok(())
}

#[tokio::test]
async fn deleting_the_account_or_bound_object_revokes_its_tokens() -> Result<()> {
    let c = cluster().await?;
    c.create_sa("robot").await?;
    let token = c.token("robot", json!({})).await?;
    ensure!(c.whoami(&token).await?.0 == StatusCode::CREATED);

    let del = c
        .call(&c.admin, Method::DELETE, &format!("{SA}/robot"), None)
        .await?;
    ensure!(del.status == StatusCode::OK, "{} {}", del.status, del.body);
    ensure!(c.whoami(&token).await?.0 == StatusCode::UNAUTHORIZED);
    // A new account of the same name is someone else (another uid).
    c.create_sa("robot").await?;
    ensure!(c.whoami(&token).await?.0 == StatusCode::UNAUTHORIZED);
    let fresh = c.token("robot", json!({})).await?;
    ensure!(c.whoami(&fresh).await?.0 == StatusCode::CREATED);

    // Bound to a Secret: valid while the Secret lives.
    let secret = c
        .call(
            &c.admin,
            Method::POST,
            "/api/v1/namespaces/default/secrets",
            Some(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "anchor"}})),
        )
        .await?;
    ensure!(secret.status == StatusCode::CREATED, "{}", secret.body);
    let secret_uid = secret.body["metadata"]["uid"].as_str().unwrap_or("");
    let wrong_uid = c
        .token_request(
            "robot",
            json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": "anchor", "uid": "nope"}}),
        )
        .await?;
    ensure!(
        wrong_uid.status == StatusCode::CONFLICT,
        "{}",
        wrong_uid.status
    );
    let bound = c
        .token_request(
            "robot",
            json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": "anchor"}}),
        )
        .await?;
    ensure!(
        bound.status == StatusCode::CREATED,
        "{} {}",
        bound.status,
        bound.body
    );
    ensure!(
        bound.body["spec"]["boundObjectRef"]["uid"] == secret_uid,
        "{}",
        bound.body
    );
    let bound = bound.body["status"]["token"].as_str().context("no token")?;
    ensure!(
        claims_of(bound)?
            .kubernetes
            .secret
            .map(|s| s.uid)
            .as_deref()
            == Some(secret_uid)
    );
    ensure!(c.whoami(bound).await?.0 == StatusCode::CREATED);
    let del = c
        .call(
            &c.admin,
            Method::DELETE,
            "/api/v1/namespaces/default/secrets/anchor",
            None,
        )
        .await?;
    ensure!(del.status == StatusCode::OK, "{}", del.status);
    ensure!(c.whoami(bound).await?.0 == StatusCode::UNAUTHORIZED);
    // The unbound token of the same account is unaffected.
    ensure!(c.whoami(&fresh).await?.0 == StatusCode::CREATED);
    Ok(())
}

/// client-go's typed clients (kubectl create sa / create token) may send
/// protobuf: a ServiceAccount and a TokenRequest in the Kubernetes envelope.
#[tokio::test]
async fn protobuf_service_account_and_token_request_are_understood() -> Result<()> {
    use k8s_pb::api::authentication::v1 as pb_authn;
    use k8s_pb::api::core::v1 as pb_core;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb_meta;
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    use prost::Message;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut out = b"k8s\0".to_vec();
        out.extend(unknown.encode_to_vec());
        out
    }
    async fn post(c: &Cluster, path: &str, body: Vec<u8>) -> Result<Answer> {
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("authorization", format!("Bearer {}", c.admin))
            .header("content-type", "application/vnd.kubernetes.protobuf")
            .body(Body::from(body))?;
        let resp = c.router.clone().oneshot(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }

    let c = cluster().await?;
    let sa = pb_core::ServiceAccount {
        metadata: Some(pb_meta::ObjectMeta {
            name: Some("robot".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let a = post(&c, SA, envelope("v1", "ServiceAccount", sa.encode_to_vec())).await?;
    ensure!(a.status == StatusCode::CREATED, "{} {}", a.status, a.body);

    let tr = pb_authn::TokenRequest {
        spec: Some(pb_authn::TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(600),
            bound_object_ref: None,
        }),
        ..Default::default()
    };
    let a = post(
        &c,
        &format!("{SA}/robot/token"),
        envelope(
            "authentication.k8s.io/v1",
            "TokenRequest",
            tr.encode_to_vec(),
        ),
    )
    .await?;
    ensure!(a.status == StatusCode::CREATED, "{} {}", a.status, a.body);
    ensure!(a.body["spec"]["expirationSeconds"] == 600, "{}", a.body);
    let token = a.body["status"]["token"].as_str().context("no token")?;
    ensure!(c.whoami(token).await?.0 == StatusCode::CREATED);
    Ok(())
}
