//! ServiceAccount tokens as JSON Web Tokens: ES256 (ECDSA P-256 with
//! SHA-256, the fixed 64-byte `r‖s` signature of RFC 7518) over the claims
//! Kubernetes puts in its tokens. The signing key is made on first start
//! (`<data>/pki/sa.key`, PKCS#8, mode 0600, public half in `sa.pub`) and
//! reused afterwards, so tokens outlive restarts.
//!
//! Verification is strict on purpose: only `ES256` is accepted (no `none`,
//! no algorithm chosen by the token), the `kid`, when present, must be ours,
//! and every check a token fails says why (logged, never returned to the
//! caller, who only sees a 401).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

/// The only algorithm this server signs and accepts.
pub const ALGORITHM: &str = "ES256";
/// Larger "tokens" are refused before any decoding (ours are < 2 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew tolerated on `nbf`/`iat` between API servers sharing a key.
const SKEW_SECONDS: i64 = 60;
/// The DER prefix of a P-256 SubjectPublicKeyInfo (algorithm id-ecPublicKey,
/// curve prime256v1, then the 65-byte uncompressed point as a BIT STRING).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Key file errors.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("generating the signing key failed")]
    Generate,
    #[error(transparent)]
    Write(#[from] crate::pki::Error),
}

/// Why a token was not accepted. Never shown to the caller (a 401 says
/// nothing more), only logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a JWT (expected three base64url parts)")]
    Malformed,
    #[error("undecodable {0}")]
    Undecodable(&'static str),
    #[error("algorithm {0:?} is not {ALGORITHM}")]
    Algorithm(String),
    #[error("signed by an unknown key {0:?}")]
    UnknownKey(String),
    #[error("bad signature")]
    Signature,
    #[error("issuer {0:?} is not this cluster's")]
    Issuer(String),
    #[error("audiences {0:?} are not accepted by this server")]
    Audience(Vec<String>),
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYetValid,
    #[error("subject {0:?} does not name the ServiceAccount in its claims")]
    Subject(String),
    #[error("signing failed")]
    Sign,
}

/// A reference to an object in the `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectClaim {
    pub name: String,
    pub uid: String,
}

/// The private `kubernetes.io` claim: whose token this is and, for bound
/// tokens, the object it dies with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: ObjectClaim,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectClaim>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectClaim>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectClaim>,
}

/// The claims of a ServiceAccount token, as Kubernetes writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    #[serde(deserialize_with = "string_or_list")]
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    #[serde(default)]
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

/// RFC 7519 allows `aud` to be one string or an array of them.
fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Aud::deserialize(d)? {
        Aud::One(s) => vec![s],
        Aud::Many(v) => v,
    })
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

/// What a token must carry to be accepted here.
#[derive(Debug, Clone)]
pub struct Expectations<'a> {
    pub issuer: &'a str,
    /// At least one of the token's audiences must be one of these.
    pub audiences: &'a [String],
    /// Seconds since the epoch.
    pub now: i64,
}

/// The signing key: an ECDSA P-256 key pair.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
    kid: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private half never reaches logs.
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Load `key_path` (PKCS#8 PEM), creating it (0600) and its public half
    /// `<key_path>.pub`-style sibling `sa.pub` when absent. Blocking.
    pub fn load_or_create(key_path: &Path) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = match fs::read_to_string(key_path) {
            Ok(pem) => pem_body(&pem, "PRIVATE KEY").ok_or_else(|| KeyError::Invalid {
                path: key_path.to_path_buf(),
                message: "expected a PKCS#8 \"PRIVATE KEY\" PEM block".into(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| KeyError::Generate)?;
                let der = doc.as_ref().to_vec();
                crate::pki::write_file(key_path, pem("PRIVATE KEY", &der).as_bytes(), 0o600)?;
                der
            }
            Err(source) => {
                return Err(KeyError::Io {
                    path: key_path.to_path_buf(),
                    source,
                });
            }
        };
        let key = Self::from_pkcs8(&pkcs8).map_err(|message| KeyError::Invalid {
            path: key_path.to_path_buf(),
            message,
        })?;
        let pub_path = key_path.with_file_name("sa.pub");
        if !pub_path.exists() {
            crate::pki::write_file(&pub_path, pem("PUBLIC KEY", &key.spki()).as_bytes(), 0o644)?;
        }
        Ok(key)
    }

    /// A key from PKCS#8 DER (an ECDSA P-256 key).
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| format!("not an ECDSA P-256 PKCS#8 key: {e}"))?;
        let mut key = Self {
            pair,
            rng,
            kid: String::new(),
        };
        // Kubernetes' key id: the unpadded base64url SHA-256 of the public
        // key's DER, so verifiers can pick the key from the JWKS.
        key.kid = URL_SAFE_NO_PAD.encode(Sha256::digest(key.spki()));
        Ok(key)
    }

    /// A fresh key that lives only in memory (tests).
    pub fn generate() -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8(doc.as_ref()).map_err(|_| KeyError::Generate)
    }

    /// The key id put in every token header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as an uncompressed point (`04‖x‖y`).
    fn public_point(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// The public key's SubjectPublicKeyInfo DER.
    fn spki(&self) -> Vec<u8> {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(self.public_point());
        der
    }

    /// The public key as a JSON Web Key (RFC 7517), for `/openid/v1/jwks`.
    pub fn jwk(&self) -> serde_json::Value {
        let point = self.public_point();
        // An uncompressed P-256 point is 0x04, 32 bytes of x, 32 of y.
        let (x, y) = point
            .get(1..)
            .unwrap_or_default()
            .split_at(32.min(point.len().saturating_sub(1)));
        serde_json::json!({
            "use": "sig",
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "alg": ALGORITHM,
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
        })
    }

    /// A signed compact JWT carrying `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let header = Header {
            alg: ALGORITHM.to_string(),
            kid: self.kid.clone(),
            typ: None,
        };
        let header = serde_json::to_vec(&header).map_err(|_| TokenError::Sign)?;
        let payload = serde_json::to_vec(claims).map_err(|_| TokenError::Sign)?;
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let sig = self
            .pair
            .sign(&self.rng, token.as_bytes())
            .map_err(|_| TokenError::Sign)?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
        Ok(token)
    }

    /// The claims of `token` when it is ours, intact, meant for one of
    /// `expect.audiences`, issued by `expect.issuer` and valid at
    /// `expect.now`. Whether the ServiceAccount still exists is the
    /// caller's check.
    pub fn verify(&self, token: &str, expect: &Expectations<'_>) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Header = decode_json(h, "header")?;
        if header.alg != ALGORITHM {
            return Err(TokenError::Algorithm(header.alg));
        }
        if !header.kid.is_empty() && header.kid != self.kid {
            return Err(TokenError::UnknownKey(header.kid));
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| TokenError::Undecodable("signature"))?;
        let signed = &token[..h.len() + 1 + p.len()];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.public_point())
            .verify(signed.as_bytes(), &sig)
            .map_err(|_| TokenError::Signature)?;
        let claims: Claims = decode_json(p, "claims")?;
        if claims.iss != expect.issuer {
            return Err(TokenError::Issuer(claims.iss));
        }
        if !claims.aud.iter().any(|a| expect.audiences.contains(a)) {
            return Err(TokenError::Audience(claims.aud));
        }
        if expect.now >= claims.exp {
            return Err(TokenError::Expired);
        }
        if claims.nbf > expect.now + SKEW_SECONDS || claims.iat > expect.now + SKEW_SECONDS {
            return Err(TokenError::NotYetValid);
        }
        let k = &claims.kubernetes;
        if claims.sub != subject(&k.namespace, &k.serviceaccount.name) {
            return Err(TokenError::Subject(claims.sub));
        }
        Ok(claims)
    }
}

/// `system:serviceaccount:<namespace>:<name>`: the user a token names.
pub fn subject(namespace: &str, name: &str) -> String {
    format!("{}{namespace}:{name}", super::USER_PREFIX)
}

fn decode_json<T: serde::de::DeserializeOwned>(
    part: &str,
    what: &'static str,
) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Undecodable(what))?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Undecodable(what))
}

/// Does `token` look like a JWT (three base64url parts, a JSON header)?
/// Cheap, so other bearer tokens are not run through signature checks.
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER inside the first `label` PEM block of `text`.
fn pem_body(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let b64: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64) -> Claims {
        Claims {
            iss: "https://issuer".into(),
            sub: subject("ns", "robot"),
            aud: vec!["api".into()],
            exp: now + 600,
            iat: now,
            nbf: now,
            jti: "id".into(),
            kubernetes: KubernetesClaims {
                namespace: "ns".into(),
                serviceaccount: ObjectClaim {
                    name: "robot".into(),
                    uid: "u-1".into(),
                },
                pod: None,
                secret: None,
                node: None,
            },
        }
    }

    fn expect(audiences: &[String], now: i64) -> Expectations<'_> {
        Expectations {
            issuer: "https://issuer",
            audiences,
            now,
        }
    }

    #[test]
    fn round_trip_and_every_refusal() -> Result<(), Box<dyn std::error::Error>> {
        let key = SigningKey::generate()?;
        let aud = vec!["api".to_string()];
        let now = 1_700_000_000;
        let token = key.sign(&claims(now))?;
        assert!(looks_like_jwt(&token));
        assert_eq!(key.verify(&token, &expect(&aud, now + 1))?, claims(now));

        // Expiry is exact; nbf tolerates a minute of skew.
        assert_eq!(
            key.verify(&token, &expect(&aud, now + 600)),
            Err(TokenError::Expired)
        );
        assert!(key.verify(&token, &expect(&aud, now - 30)).is_ok());
        assert_eq!(
            key.verify(&token, &expect(&aud, now - 61)),
            Err(TokenError::NotYetValid)
        );
        // Another audience, another issuer.
        let other = vec!["other".to_string()];
        assert!(matches!(
            key.verify(&token, &expect(&other, now)),
            Err(TokenError::Audience(_))
        ));
        let wrong_issuer = Expectations {
            issuer: "https://elsewhere",
            ..expect(&aud, now)
        };
        assert!(matches!(
            key.verify(&token, &wrong_issuer),
            Err(TokenError::Issuer(_))
        ));
        // Another key's signature (same kid forged) fails on the signature.
        let other_key = SigningKey::generate()?;
        let mut forged_parts: Vec<String> = other_key
            .sign(&claims(now))?
            .split('.')
            .map(String::from)
            .collect();
        forged_parts[0] = token.split('.').next().unwrap_or_default().to_string();
        assert_eq!(
            key.verify(&forged_parts.join("."), &expect(&aud, now)),
            Err(TokenError::Signature)
        );
        // The other key's own token names an unknown kid.
        assert!(matches!(
            key.verify(&other_key.sign(&claims(now))?, &expect(&aud, now)),
            Err(TokenError::UnknownKey(_))
        ));
        Ok(())
    }

    #[test]
    fn tampered_tokens_are_refused_without_panicking() -> Result<(), Box<dyn std::error::Error>> {
        let key = SigningKey::generate()?;
        let aud = vec!["api".to_string()];
        let now = 1_700_000_000;
        let token = key.sign(&claims(now))?;
        let parts: Vec<&str> = token.split('.').collect();

        // Claims changed after signing: a different subject.
        let mut evil = claims(now);
        evil.kubernetes.serviceaccount.name = "admin".into();
        evil.sub = subject("ns", "admin");
        let evil_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&evil)?);
        let swapped = format!("{}.{}.{}", parts[0], evil_payload, parts[2]);
        assert_eq!(
            key.verify(&swapped, &expect(&aud, now)),
            Err(TokenError::Signature)
        );
        // `alg: none` with no signature.
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        assert!(matches!(
            key.verify(&format!("{none}.{}.", parts[1]), &expect(&aud, now)),
            Err(TokenError::Algorithm(_))
        ));
        // One flipped signature character.
        let mut sig = parts[2].to_string();
        let flipped = if sig.ends_with('A') { "B" } else { "A" };
        sig.replace_range(sig.len() - 1.., flipped);
        let bad = format!("{}.{}.{sig}", parts[0], parts[1]);
        assert!(key.verify(&bad, &expect(&aud, now)).is_err());
        // Garbage of every shape.
        for junk in [
            "",
            "a.b",
            "a.b.c.d",
            "eyJ.eyJ.",
            "....",
            "eyJhbGciOiJFUzI1NiJ9.%%%.abc",
            &"x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert!(key.verify(junk, &expect(&aud, now)).is_err(), "{junk:.20}");
        }
        Ok(())
    }

    #[test]
    fn key_file_is_private_and_reused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sa.key");
        let first = SigningKey::load_or_create(&path)?;
        let second = SigningKey::load_or_create(&path)?;
        assert_eq!(first.kid(), second.kid());
        let now = 1_700_000_000;
        let aud = vec!["api".to_string()];
        second.verify(&first.sign(&claims(now))?, &expect(&aud, now))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        }
        assert!(fs::read_to_string(dir.path().join("sa.pub"))?.contains("BEGIN PUBLIC KEY"));
        let jwk = first.jwk();
        assert_eq!(jwk["kid"], first.kid());
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(jwk["x"].as_str().unwrap_or(""))?
                .len(),
            32
        );
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(jwk["y"].as_str().unwrap_or(""))?
                .len(),
            32
        );

        fs::write(&path, "not a key")?;
        assert!(matches!(
            SigningKey::load_or_create(&path),
            Err(KeyError::Invalid { .. })
        ));
        Ok(())
    }
}
