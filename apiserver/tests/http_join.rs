//! Node join: `/cacerts`, bootstrap-token authentication, `POST
//! /wasmkube/v1/join`, client-certificate authentication and
//! `selfsubjectreviews`, through the router (`oneshot`) and, for the TLS
//! client-certificate path, through the real listener.

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use wasmkube_api::join::{self, BootstrapToken, JoinResponse};
use wasmkube_apiserver::app;
use wasmkube_apiserver::authn::PeerCertificates;
use wasmkube_apiserver::limits::BodyLimits;
use wasmkube_apiserver::pki::{self, ClusterCa};

const WHOAMI: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";

struct Harness {
    _dir: tempfile::TempDir,
    router: axum::Router,
    admin: String,
    scheduler: String,
    ca_pem: String,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn harness() -> Result<Harness> {
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let mut state = common::app_state(
        dir.path(),
        common::embedded_store(dir.path())?,
        &["system:kube-scheduler"],
        &shutdown,
    )
    .await?;
    wasmkube_apiserver::bootstrap::ensure_namespaces(&state.registry).await?;
    let admin = common::token_of(&state.tokens, "admin")?;
    let scheduler = common::token_of(&state.tokens, "system:kube-scheduler")?;
    let pki = pki::ensure(&dir.path().join("pki"), &["localhost".to_string()])?;
    state.ca = Some(Arc::new(ClusterCa::from_pki(&pki)?));
    state.limits = BodyLimits {
        api: 1024 * 1024,
        module: 1024,
    };
    let router = app(state);
    Ok(Harness {
        _dir: dir,
        router,
        admin,
        scheduler,
        ca_pem: pki.ca_pem,
        shutdown,
    })
}

async fn body_json(resp: axum::response::Response) -> Result<Value> {
    let bytes = resp.into_body().collect().await?.to_bytes();
    serde_json::from_slice(&bytes).with_context(|| String::from_utf8_lossy(&bytes).into_owned())
}

impl Harness {
    async fn call(&self, req: Request<Body>) -> Result<(StatusCode, Value)> {
        let resp = self.router.clone().oneshot(req).await?;
        let code = resp.status();
        Ok((code, body_json(resp).await?))
    }

    /// Store a bootstrap token Secret as the admin would (`token create`).
    async fn create_token(&self, token: &BootstrapToken) -> Result<()> {
        let (code, body) = self
            .call(
                Request::post("/api/v1/namespaces/kube-system/secrets")
                    .header("Authorization", format!("Bearer {}", self.admin))
                    .header("Content-Type", "application/json")
                    .body(Body::from(serde_json::to_vec(&token.to_secret())?))?,
            )
            .await?;
        ensure!(code == StatusCode::CREATED, "{code}: {body}");
        Ok(())
    }

    async fn join_as(&self, bearer: &str, body: Value) -> Result<(StatusCode, Value)> {
        self.call(
            Request::post(join::JOIN_PATH)
                .header("Authorization", format!("Bearer {bearer}"))
                .header("Content-Type", "application/json")
                .body(Body::from(serde_json::to_vec(&body)?))?,
        )
        .await
    }

    async fn whoami(&self, req: axum::http::request::Builder) -> Result<(StatusCode, Value)> {
        self.call(
            req.uri(WHOAMI)
                .method("POST")
                .header("Content-Type", "application/json")
                .body(Body::from(
                    r#"{"kind":"SelfSubjectReview","apiVersion":"authentication.k8s.io/v1"}"#,
                ))?,
        )
        .await
    }
}

fn token(expiration: Option<jiff::Timestamp>, usages: &[&str]) -> BootstrapToken {
    BootstrapToken {
        id: join::generate_token_id(),
        secret: join::generate_token_secret(),
        expiration,
        description: Some("test".into()),
        usages: usages.iter().map(|u| u.to_string()).collect(),
        extra_groups: vec!["system:bootstrappers:wasmkube:default-node-token".into()],
    }
}

fn bearer(t: &BootstrapToken) -> String {
    format!("{}.{}", t.id, t.secret)
}

fn in_a_day() -> Option<jiff::Timestamp> {
    Some(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24))
}

/// A fresh node key (PEM) and a CSR for it whose subject asks for far more
/// than the server will grant.
fn key_and_csr() -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(vec!["evil.example".to_string()])?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "admin");
    dn.push(rcgen::DnType::OrganizationName, "system:masters");
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((key.serialize_pem(), csr))
}

fn cert_der(pem: &str) -> Result<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .context("no certificate in PEM")?
        .context("bad PEM")
}

#[tokio::test]
async fn cacerts_is_anonymous_and_matches_the_pin() -> Result<()> {
    let h = harness().await?;
    let resp = h
        .router
        .clone()
        .oneshot(Request::get("/cacerts").body(Body::empty())?)
        .await?;
    ensure!(resp.status() == StatusCode::OK, "{}", resp.status());
    ensure!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            == Some("application/x-pem-file")
    );
    let body = resp.into_body().collect().await?.to_bytes();
    let pem = String::from_utf8(body.to_vec())?;
    ensure!(pem == h.ca_pem);
    ensure!(join::ca_cert_hash(&pem)? == join::ca_cert_hash(&h.ca_pem)?);
    Ok(())
}

#[tokio::test]
async fn bootstrap_token_joins_and_the_certificate_authenticates_as_the_node() -> Result<()> {
    let h = harness().await?;
    let t = token(in_a_day(), &["authentication", "signing"]);
    h.create_token(&t).await?;

    // Who the token is.
    let (code, review) = h
        .whoami(Request::builder().header("Authorization", format!("Bearer {}", bearer(&t))))
        .await?;
    expect_user(
        code,
        &review,
        &format!("system:bootstrap:{}", t.id),
        &json!([
            "system:bootstrappers",
            "system:bootstrappers:wasmkube:default-node-token",
            "system:authenticated"
        ]),
    )?;

    let (key_pem, csr) = key_and_csr()?;
    let (code, body) = h
        .join_as(&bearer(&t), json!({"nodeName": "edge-1", "csr": csr}))
        .await?;
    ensure!(code == StatusCode::CREATED, "{code}: {body}");
    let resp: JoinResponse = serde_json::from_value(body)?;
    ensure!(resp.node_name == "edge-1");
    ensure!(resp.ca == h.ca_pem);

    // The certificate: node identity (not what the CSR asked), signed by the
    // CA, for the CSR's key.
    use x509_parser::prelude::FromDer;
    let der = cert_der(&resp.certificate)?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der.as_ref())?;
    let ca_der = cert_der(&h.ca_pem)?;
    let (_, ca) = x509_parser::certificate::X509Certificate::from_der(ca_der.as_ref())?;
    cert.verify_signature(Some(ca.public_key()))?;
    let cn: Vec<_> = cert
        .subject()
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .collect();
    let orgs: Vec<_> = cert
        .subject()
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .collect();
    ensure!(cn == ["system:node:edge-1"], "{cn:?}");
    ensure!(orgs == ["system:nodes"], "{orgs:?}");
    let eku = cert.extended_key_usage()?.context("no EKU")?.value;
    ensure!(eku.client_auth && !eku.server_auth);
    ensure!(
        cert.subject_alternative_name()?.is_none(),
        "CSR SANs are not copied"
    );
    let key = rcgen::KeyPair::from_pem(&key_pem)?;
    ensure!(
        cert.public_key().raw == rcgen::PublicKeyData::subject_public_key_info(&key).as_slice(),
        "the certificate is for the CSR's key"
    );
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400;
    ensure!((364..=367).contains(&days), "{days} days");

    // Presented on a connection, it authenticates as the node.
    let mut req = Request::builder();
    if let Some(ext) = req.extensions_mut() {
        ext.insert(PeerCertificates(Arc::new(vec![der])));
    }
    let (code, review) = h.whoami(req).await?;
    expect_user(
        code,
        &review,
        "system:node:edge-1",
        &json!(["system:nodes", "system:authenticated"]),
    )?;
    Ok(())
}

#[tokio::test]
async fn unusable_bootstrap_tokens_are_401() -> Result<()> {
    let h = harness().await?;
    let (_, csr) = key_and_csr()?;
    let req = json!({"nodeName": "edge-1", "csr": csr});
    let unauthorized = |code: StatusCode, body: &Value| {
        code == StatusCode::UNAUTHORIZED && body["kind"] == "Status" && body["code"] == 401
    };

    let expired = token(
        Some(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1)),
        &["authentication"],
    );
    h.create_token(&expired).await?;
    let (code, body) = h.join_as(&bearer(&expired), req.clone()).await?;
    ensure!(unauthorized(code, &body), "expired: {code}: {body}");

    let not_for_auth = token(in_a_day(), &["signing"]);
    h.create_token(&not_for_auth).await?;
    let (code, body) = h.join_as(&bearer(&not_for_auth), req.clone()).await?;
    ensure!(unauthorized(code, &body), "no auth usage: {code}: {body}");

    let good = token(None, &["authentication"]);
    h.create_token(&good).await?;
    let wrong = format!("{}.{}", good.id, join::generate_token_secret());
    let (code, body) = h.join_as(&wrong, req.clone()).await?;
    ensure!(unauthorized(code, &body), "wrong secret: {code}: {body}");
    let unknown = format!("{}.{}", join::generate_token_id(), good.secret);
    let (code, body) = h.join_as(&unknown, req.clone()).await?;
    ensure!(unauthorized(code, &body), "unknown id: {code}: {body}");

    // Works (no expiration = never expires) until revoked.
    let (code, body) = h.join_as(&bearer(&good), req.clone()).await?;
    ensure!(code == StatusCode::CREATED, "{code}: {body}");
    let (code, body) = h
        .call(
            Request::delete(format!(
                "/api/v1/namespaces/kube-system/secrets/bootstrap-token-{}",
                good.id
            ))
            .header("Authorization", format!("Bearer {}", h.admin))
            .body(Body::empty())?,
        )
        .await?;
    ensure!(code == StatusCode::OK, "{code}: {body}");
    let (code, body) = h.join_as(&bearer(&good), req.clone()).await?;
    ensure!(unauthorized(code, &body), "revoked: {code}: {body}");

    // A Secret of another type is no token, even with the right data.
    let mut opaque = token(None, &["authentication"]);
    opaque.id = join::generate_token_id();
    let mut secret = opaque.to_secret();
    secret["type"] = json!("Opaque");
    let (code, body) = h
        .call(
            Request::post("/api/v1/namespaces/kube-system/secrets")
                .header("Authorization", format!("Bearer {}", h.admin))
                .header("Content-Type", "application/json")
                .body(Body::from(serde_json::to_vec(&secret)?))?,
        )
        .await?;
    ensure!(code == StatusCode::CREATED, "{code}: {body}");
    let (code, body) = h.join_as(&bearer(&opaque), req.clone()).await?;
    ensure!(unauthorized(code, &body), "opaque: {code}: {body}");
    Ok(())
}

#[tokio::test]
async fn join_rejects_bad_requests_and_other_users() -> Result<()> {
    let h = harness().await?;
    let t = token(in_a_day(), &["authentication"]);
    h.create_token(&t).await?;
    let b = bearer(&t);
    let (_, csr) = key_and_csr()?;

    let (code, body) = h
        .join_as(&b, json!({"nodeName": "Edge_1", "csr": csr}))
        .await?;
    ensure!(code == StatusCode::UNPROCESSABLE_ENTITY, "{code}: {body}");
    ensure!(body["reason"] == "Invalid", "{body}");
    ensure!(
        body["details"]["causes"][0]["field"] == "nodeName",
        "{body}"
    );

    for bad_csr in [
        "not a pem".to_string(),
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
            .to_string(),
        // A CSR whose signature no longer matches its content.
        tamper(&csr)?,
        // A certificate is not a CSR.
        h.ca_pem.clone(),
    ] {
        let (code, body) = h
            .join_as(&b, json!({"nodeName": "edge-1", "csr": bad_csr}))
            .await?;
        ensure!(code == StatusCode::BAD_REQUEST, "{code}: {body}");
        ensure!(
            body["kind"] == "Status" && body["reason"] == "BadRequest",
            "{body}"
        );
    }
    for bad_body in [json!({"nodeName": "edge-1"}), json!([1, 2]), json!("x")] {
        let (code, body) = h.join_as(&b, bad_body).await?;
        ensure!(code == StatusCode::BAD_REQUEST, "{code}: {body}");
    }

    // Authenticated, but neither a bootstrapper nor an admin.
    let (code, body) = h
        .join_as(&h.scheduler, json!({"nodeName": "edge-1", "csr": csr}))
        .await?;
    ensure!(code == StatusCode::FORBIDDEN, "{code}: {body}");
    ensure!(body["reason"] == "Forbidden", "{body}");

    // A node may not mint certificates for other nodes either.
    let (code, body) = h
        .join_as(&b, json!({"nodeName": "edge-1", "csr": csr}))
        .await?;
    ensure!(code == StatusCode::CREATED, "{code}: {body}");
    let der = cert_der(body["certificate"].as_str().unwrap_or_default())?;
    let mut req = Request::post(join::JOIN_PATH).header("Content-Type", "application/json");
    if let Some(ext) = req.extensions_mut() {
        ext.insert(PeerCertificates(Arc::new(vec![der])));
    }
    let (code, body) = h
        .call(req.body(Body::from(serde_json::to_vec(
            &json!({"nodeName": "edge-2", "csr": csr}),
        )?))?)
        .await?;
    ensure!(code == StatusCode::FORBIDDEN, "{code}: {body}");

    // The admin may join a node by hand.
    let (code, body) = h
        .join_as(&h.admin, json!({"nodeName": "edge-2", "csr": csr}))
        .await?;
    ensure!(code == StatusCode::CREATED, "{code}: {body}");

    // Anonymous callers are not even asked what they want.
    let (code, _) = h
        .call(
            Request::post(join::JOIN_PATH)
                .header("Content-Type", "application/json")
                .body(Body::from("{}"))?,
        )
        .await?;
    ensure!(code == StatusCode::UNAUTHORIZED);
    Ok(())
}

/// The request was authenticated as `user`: either the SelfSubjectReview
/// says so (with `groups`), or authorization refused it in Kubernetes'
/// `User "<name>" cannot ...` words (what a user may ask is authorization's
/// business; who they are is this test's).
fn expect_user(code: StatusCode, body: &Value, user: &str, groups: &Value) -> Result<()> {
    match code {
        StatusCode::CREATED => {
            ensure!(body["status"]["userInfo"]["username"] == user, "{body}");
            ensure!(body["status"]["userInfo"]["groups"] == *groups, "{body}");
        }
        StatusCode::FORBIDDEN => {
            let message = body["message"].as_str().unwrap_or_default();
            ensure!(
                message.contains(&format!("User \"{user}\" cannot")),
                "{body}"
            );
        }
        other => anyhow::bail!("{other}: {body}"),
    }
    Ok(())
}

/// Flip one bit inside the CSR's signed content.
fn tamper(csr_pem: &str) -> Result<String> {
    use base64::Engine;
    let der = rustls_pemfile::csr(&mut csr_pem.as_bytes())?.context("no CSR")?;
    let mut bytes = der.as_ref().to_vec();
    // Past the outer headers, inside certificationRequestInfo's subject.
    let at = bytes.len() / 3;
    bytes[at] ^= 0x01;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    Ok(format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n"
    ))
}

/// Over real TLS: the listener asks for a client certificate, verifies it
/// against the cluster CA, and the request is authenticated as its subject.
#[tokio::test]
async fn client_certificate_over_tls_authenticates_as_the_node() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let running = common::start_server(dir.path(), &shutdown).await?;
    let plain = common::https_client(&running.ca_pem)?
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = |p: &str| format!("{}{p}", running.url);

    // The agent's first contact: the CA, anonymously, checked against a pin.
    let pem = plain.get(url("/cacerts")).send().await?.text().await?;
    ensure!(join::ca_cert_hash(&pem)? == join::ca_cert_hash(&running.ca_pem)?);

    let t = token(in_a_day(), &["authentication", "signing"]);
    let resp = plain
        .post(url("/api/v1/namespaces/kube-system/secrets"))
        .bearer_auth(&running.admin_token)
        .json(&t.to_secret())
        .send()
        .await?;
    ensure!(resp.status() == 201, "{}", resp.status());

    let (key_pem, csr) = key_and_csr()?;
    let resp = plain
        .post(url(join::JOIN_PATH))
        .bearer_auth(bearer(&t))
        .json(&json!({"nodeName": "x", "csr": csr}))
        .send()
        .await?;
    ensure!(resp.status() == 201, "{}", resp.status());
    let joined: JoinResponse = resp.json().await?;

    let identity =
        reqwest::Identity::from_pem(format!("{}{key_pem}", joined.certificate).as_bytes())?;
    let node = common::https_client(&running.ca_pem)?
        .identity(identity)
        .timeout(Duration::from_secs(30))
        .build()?;
    let resp = node
        .post(url(WHOAMI))
        .json(&json!({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1"}))
        .send()
        .await?;
    let code = StatusCode::from_u16(resp.status().as_u16())?;
    let review: Value = resp.json().await?;
    expect_user(
        code,
        &review,
        "system:node:x",
        &json!(["system:nodes", "system:authenticated"]),
    )?;

    // Token clients keep working on the same listener.
    let review: Value = plain
        .post(url(WHOAMI))
        .bearer_auth(&running.admin_token)
        .json(&json!({}))
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        review["status"]["userInfo"]["username"] == "admin",
        "{review}"
    );

    // A certificate from another CA does not get through the handshake.
    let other = tempfile::tempdir()?;
    let other_pki = pki::ensure(other.path(), &["localhost".to_string()])?;
    let other_ca = ClusterCa::from_pki(&other_pki)?;
    let (rogue_key, rogue_csr) = key_and_csr()?;
    let rogue_cert = other_ca.sign_node_client_cert(&rogue_csr, "x")?;
    let rogue = common::https_client(&running.ca_pem)?
        .identity(reqwest::Identity::from_pem(
            format!("{rogue_cert}{rogue_key}").as_bytes(),
        )?)
        .timeout(Duration::from_secs(30))
        .build()?;
    let outcome = rogue.post(url(WHOAMI)).json(&json!({})).send().await;
    match outcome {
        Err(_) => {}
        Ok(resp) => ensure!(
            resp.status() == 401 || resp.status() == 403,
            "a foreign certificate was accepted: {}",
            resp.status()
        ),
    }

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), running.done).await??;
    Ok(())
}
