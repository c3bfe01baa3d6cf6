//! The authenticators beside the static token file (see [`crate::auth`]):
//!
//! - X.509 client certificates. The TLS listener asks every client for a
//!   certificate (without requiring one) and verifies it against the cluster
//!   CA; [`crate::server`] puts the verified chain on each request as
//!   [`PeerCertificates`]. The leaf's CN is the user and its O values are the
//!   groups, as in Kubernetes. Node agents authenticate this way.
//! - Bootstrap tokens (kubeadm's): `Bearer <id>.<secret>` matching the Secret
//!   `kube-system/bootstrap-token-<id>`. They only let a new node join.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use wasmkube_api::join::{self, BootstrapToken};
use wasmkube_api::resources;

use crate::auth::{AUTHENTICATED_GROUP, UserInfo};
use crate::registry::Registry;

/// The client certificate chain (leaf first) of the TLS connection a request
/// came in on, already verified against the cluster CA by the listener.
/// Only [`crate::server`] inserts it; a client cannot forge an extension.
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// The user a verified client certificate names: CN → user, each O → a
/// group, plus `system:authenticated`. A certificate without a CN names no
/// one and is refused (Kubernetes does the same).
pub fn user_from_client_cert(der: &[u8]) -> Result<UserInfo, String> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| format!("parsing the client certificate: {e}"))?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::trim)
        .filter(|cn| !cn.is_empty())
        .ok_or_else(|| "the client certificate has no common name".to_string())?
        .to_string();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(String::from)
        .collect();
    if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
        groups.push(AUTHENTICATED_GROUP.to_string());
    }
    Ok(UserInfo {
        name,
        uid: String::new(),
        groups,
    })
}

/// The user of the request's client certificate, if it presented one.
/// `Some(Err)` when it presented one that names no user.
pub fn client_cert_user(peer: Option<&PeerCertificates>) -> Option<Result<UserInfo, String>> {
    let leaf = peer?.0.first()?;
    Some(user_from_client_cert(leaf.as_ref()))
}

/// Does `token` have the shape of a bootstrap token (`<id>.<secret>`)?
pub fn looks_like_bootstrap_token(token: &str) -> bool {
    token
        .split_once('.')
        .is_some_and(|(id, secret)| join::is_token_id(id) && join::is_token_secret(secret))
}

/// Authenticate a bootstrap token: its Secret must exist (read through the
/// registry from the store, so a revoked token stops working at once), be
/// well formed, not be being deleted, not be expired, allow
/// authentication, and hold this secret (compared in constant time).
/// `None` for any failure; the reason is logged without the secret.
pub async fn bootstrap_user(registry: &Registry, token: &str) -> Option<UserInfo> {
    let (id, secret) = token.split_once('.')?;
    if !join::is_token_id(id) || !join::is_token_secret(secret) {
        return None;
    }
    let res = resources::by_plural("", "v1", "secrets")?;
    let stored = match registry
        .get(
            res,
            Some(join::BOOTSTRAP_NAMESPACE),
            &join::bootstrap_secret_name(id),
        )
        .await
    {
        Ok(s) => s,
        Err(e) => {
            if e.code() != 404 {
                tracing::warn!(
                    token_id = id,
                    code = e.code(),
                    "reading a bootstrap token failed"
                );
            }
            tracing::debug!(token_id = id, "bootstrap token not found");
            return None;
        }
    };
    let reject = |why: &str| {
        tracing::debug!(token_id = id, why, "bootstrap token rejected");
        None
    };
    if stored
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        return reject("its Secret is being deleted");
    }
    let parsed = match BootstrapToken::from_secret(&stored) {
        Ok(t) => t,
        Err(e) => return reject(&e.to_string()),
    };
    if !constant_time_eq(parsed.secret.as_bytes(), secret.as_bytes()) {
        return reject("wrong secret");
    }
    if parsed.is_expired(jiff::Timestamp::now()) {
        return reject("expired");
    }
    if !parsed.can_authenticate() {
        return reject("usage-bootstrap-authentication is not \"true\"");
    }
    let mut groups = vec![join::BOOTSTRAPPERS_GROUP.to_string()];
    groups.extend(parsed.extra_groups);
    groups.push(AUTHENTICATED_GROUP.to_string());
    Some(UserInfo {
        name: format!("{}{id}", join::BOOTSTRAP_USER_PREFIX),
        uid: String::new(),
        groups,
    })
}

/// Equal-length byte strings compared without an early exit. Lengths are
/// public here (token secrets have one fixed length).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(dn: &[(rcgen::DnType, &str)]) -> Result<Vec<u8>, rcgen::Error> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::default();
        let mut name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            name.push(t.clone(), *v);
        }
        params.distinguished_name = name;
        Ok(params.self_signed(&key)?.der().to_vec())
    }

    #[test]
    fn certificate_subject_names_user_and_groups() -> Result<(), Box<dyn std::error::Error>> {
        use rcgen::DnType::{CommonName, OrganizationName};
        let der = cert(&[
            (CommonName, "system:node:edge-1"),
            (OrganizationName, "system:nodes"),
        ])?;
        let user = user_from_client_cert(&der)?;
        assert_eq!(user.name, "system:node:edge-1");
        assert_eq!(user.groups, vec!["system:nodes", AUTHENTICATED_GROUP]);

        let no_cn = cert(&[(OrganizationName, "system:masters")])?;
        assert!(user_from_client_cert(&no_cn).is_err());
        assert!(user_from_client_cert(b"garbage").is_err());
        assert!(client_cert_user(None).is_none());
        let empty = PeerCertificates(Arc::new(Vec::new()));
        assert!(client_cert_user(Some(&empty)).is_none());
        Ok(())
    }

    #[test]
    fn bootstrap_token_shape_and_compare() {
        assert!(looks_like_bootstrap_token("abcdef.0123456789abcdef"));
        assert!(!looks_like_bootstrap_token("abcdef.0123456789abcde"));
        assert!(!looks_like_bootstrap_token(&"a".repeat(64)));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
