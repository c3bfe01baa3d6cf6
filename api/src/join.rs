//! Joining a node to the cluster: bootstrap tokens in kubeadm's shape, the
//! join string `wasmkube token create` prints, the CA pin it carries, and the
//! wire shapes of `POST /wasmkube/v1/join`.
//!
//! A bootstrap token is `<id>.<secret>` (`[a-z0-9]{6}.[a-z0-9]{16}`), stored
//! as the Secret `kube-system/bootstrap-token-<id>` of type
//! `bootstrap.kubernetes.io/token` with kubeadm's data keys, so tooling that
//! knows kubeadm's tokens reads ours. The join string adds the SHA-256 of the
//! cluster CA certificate (DER), as k3s' `K10<hash>::…` tokens do: the agent
//! fetches the CA without verification and trusts it only if the hash
//! matches, which is what lets the first contact be safe.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The version prefix of a join string: `WK1<ca-hash>::<id>.<secret>`.
pub const JOIN_STRING_PREFIX: &str = "WK1";
/// What separates the CA hash from the credentials in a join string.
pub const JOIN_STRING_SEPARATOR: &str = "::";
/// The prefix of `--ca-cert-hash` values (kubeadm's spelling).
pub const CA_HASH_PREFIX: &str = "sha256:";

/// Bootstrap token Secrets live here.
pub const BOOTSTRAP_NAMESPACE: &str = "kube-system";
/// `bootstrap-token-<id>` is the Secret holding token `<id>`.
pub const BOOTSTRAP_SECRET_PREFIX: &str = "bootstrap-token-";
/// The Secret type of bootstrap tokens.
pub const BOOTSTRAP_SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Secret data keys (kubeadm's).
pub const KEY_TOKEN_ID: &str = "token-id";
pub const KEY_TOKEN_SECRET: &str = "token-secret";
pub const KEY_EXPIRATION: &str = "expiration";
pub const KEY_DESCRIPTION: &str = "description";
pub const KEY_USAGE_AUTHENTICATION: &str = "usage-bootstrap-authentication";
pub const KEY_USAGE_SIGNING: &str = "usage-bootstrap-signing";
pub const KEY_AUTH_EXTRA_GROUPS: &str = "auth-extra-groups";
/// The prefix of every `usage-bootstrap-*` key (what `token list` shows as USAGES).
pub const USAGE_PREFIX: &str = "usage-bootstrap-";

/// The user a bootstrap token authenticates as is `system:bootstrap:<id>`.
pub const BOOTSTRAP_USER_PREFIX: &str = "system:bootstrap:";
/// The group every bootstrap token is in.
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";
/// Node credentials are `system:node:<name>` in this group.
pub const NODE_USER_PREFIX: &str = "system:node:";
pub const NODES_GROUP: &str = "system:nodes";

/// The anonymous endpoint serving the cluster CA (PEM).
pub const CACERTS_PATH: &str = "/cacerts";
/// The endpoint exchanging a bootstrap token + CSR for a node certificate.
pub const JOIN_PATH: &str = "/wasmkube/v1/join";

/// Token id and secret lengths and alphabet (kubeadm's).
pub const TOKEN_ID_LEN: usize = 6;
pub const TOKEN_SECRET_LEN: usize = 16;
const TOKEN_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const CA_HASH_HEX_LEN: usize = 64;

/// Why a join string, CA hash or bootstrap Secret was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinTokenError {
    #[error("empty join token")]
    Empty,
    #[error(
        "malformed join token: expected {JOIN_STRING_PREFIX}<sha256-hex>::<id>.<secret> or <id>.<secret>"
    )]
    Format,
    #[error("malformed join token: the token id must be 6 characters [a-z0-9]")]
    BadId,
    #[error("malformed join token: the token secret must be 16 characters [a-z0-9]")]
    BadSecret,
    #[error(
        "malformed CA certificate hash: expected 64 hex digits (sha256), optionally prefixed by \"sha256:\""
    )]
    BadHash,
    #[error("no CERTIFICATE block found in the CA PEM")]
    NoCertificate,
    #[error("the CA PEM's certificate block is not valid base64")]
    BadPem,
    #[error("not a bootstrap token Secret: {0}")]
    NotBootstrapSecret(String),
}

/// A parsed join string: the bootstrap credentials and, when the string
/// carries one, the CA pin.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Lowercase hex SHA-256 of the CA certificate's DER (no `sha256:`).
    pub ca_hash: Option<String>,
    pub id: String,
    pub secret: String,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret is a credential: keep it out of logs.
        f.debug_struct("JoinToken")
            .field("ca_hash", &self.ca_hash)
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl JoinToken {
    /// Parse `WK1<hex>::<id>.<secret>` or a bare `<id>.<secret>`
    /// (surrounding whitespace ignored; the hex may be in either case).
    pub fn parse(s: &str) -> Result<JoinToken, JoinTokenError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(JoinTokenError::Empty);
        }
        let (ca_hash, creds) = match s.strip_prefix(JOIN_STRING_PREFIX) {
            Some(rest) => {
                let (hash, creds) = rest
                    .split_once(JOIN_STRING_SEPARATOR)
                    .ok_or(JoinTokenError::Format)?;
                (Some(normalize_hex_hash(hash)?), creds)
            }
            None if s.contains(JOIN_STRING_SEPARATOR) => return Err(JoinTokenError::Format),
            None => (None, s),
        };
        let (id, secret) = creds.split_once('.').ok_or(JoinTokenError::Format)?;
        if !is_token_id(id) {
            return Err(JoinTokenError::BadId);
        }
        if !is_token_secret(secret) {
            return Err(JoinTokenError::BadSecret);
        }
        Ok(JoinToken {
            ca_hash,
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// A fresh random token (no CA pin).
    pub fn generate() -> JoinToken {
        JoinToken {
            ca_hash: None,
            id: generate_token_id(),
            secret: generate_token_secret(),
        }
    }

    /// `<id>.<secret>`: what goes into `Authorization: Bearer`.
    pub fn bearer(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// The name of the Secret storing this token.
    pub fn secret_name(&self) -> String {
        bootstrap_secret_name(&self.id)
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ca_hash {
            Some(h) => write!(
                f,
                "{JOIN_STRING_PREFIX}{h}{JOIN_STRING_SEPARATOR}{}.{}",
                self.id, self.secret
            ),
            None => write!(f, "{}.{}", self.id, self.secret),
        }
    }
}

impl std::str::FromStr for JoinToken {
    type Err = JoinTokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JoinToken::parse(s)
    }
}

/// `[a-z0-9]{6}`.
pub fn is_token_id(s: &str) -> bool {
    s.len() == TOKEN_ID_LEN && s.bytes().all(|b| TOKEN_ALPHABET.contains(&b))
}

/// `[a-z0-9]{16}`.
pub fn is_token_secret(s: &str) -> bool {
    s.len() == TOKEN_SECRET_LEN && s.bytes().all(|b| TOKEN_ALPHABET.contains(&b))
}

/// A random token id, `[a-z0-9]{6}`.
pub fn generate_token_id() -> String {
    random_token_chars(TOKEN_ID_LEN)
}

/// A random token secret, `[a-z0-9]{16}` (about 82 bits).
pub fn generate_token_secret() -> String {
    random_token_chars(TOKEN_SECRET_LEN)
}

fn random_token_chars(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(TOKEN_ALPHABET[rng.random_range(0..TOKEN_ALPHABET.len())]))
        .collect()
}

/// Parse a `--ca-cert-hash` value: `sha256:<hex>` or bare `<hex>`; returns
/// lowercase hex without the prefix.
pub fn parse_ca_cert_hash(s: &str) -> Result<String, JoinTokenError> {
    let s = s.trim();
    let hex = match s.get(..CA_HASH_PREFIX.len()) {
        Some(p) if p.eq_ignore_ascii_case(CA_HASH_PREFIX) => &s[CA_HASH_PREFIX.len()..],
        _ => s,
    };
    normalize_hex_hash(hex)
}

fn normalize_hex_hash(s: &str) -> Result<String, JoinTokenError> {
    if s.len() == CA_HASH_HEX_LEN && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(JoinTokenError::BadHash)
    }
}

/// Lowercase hex SHA-256 of the DER of the first certificate in `ca_pem`
/// (what `openssl x509 -outform der | sha256sum` prints).
pub fn ca_cert_hash(ca_pem: &str) -> Result<String, JoinTokenError> {
    let der = first_certificate_der(ca_pem)?;
    Ok(hex::encode(Sha256::digest(&der)))
}

/// The DER bytes of the first `CERTIFICATE` block of `pem`.
pub fn first_certificate_der(pem: &str) -> Result<Vec<u8>, JoinTokenError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find(BEGIN).ok_or(JoinTokenError::NoCertificate)? + BEGIN.len();
    let rest = &pem[start..];
    let end = rest.find(END).ok_or(JoinTokenError::NoCertificate)?;
    let body: String = rest[..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = STANDARD.decode(body).map_err(|_| JoinTokenError::BadPem)?;
    if der.is_empty() {
        return Err(JoinTokenError::NoCertificate);
    }
    Ok(der)
}

/// `bootstrap-token-<id>`.
pub fn bootstrap_secret_name(id: &str) -> String {
    format!("{BOOTSTRAP_SECRET_PREFIX}{id}")
}

/// Is `group` acceptable in `auth-extra-groups`? Kubernetes only allows
/// `system:bootstrappers:…` groups there, so a token can never be made to
/// carry e.g. `system:masters`.
pub fn is_valid_extra_group(group: &str) -> bool {
    let Some(rest) = group.strip_prefix("system:bootstrappers:") else {
        return false;
    };
    !rest.is_empty()
        && rest.len() <= 256
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-')
        && rest
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// What a bootstrap token Secret says, decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    pub secret: String,
    /// `None` means the token never expires.
    pub expiration: Option<jiff::Timestamp>,
    pub description: Option<String>,
    /// `usage-bootstrap-*` keys set to `"true"`, without the prefix
    /// (e.g. `authentication`, `signing`), sorted.
    pub usages: Vec<String>,
    pub extra_groups: Vec<String>,
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("expiration", &self.expiration)
            .field("description", &self.description)
            .field("usages", &self.usages)
            .field("extra_groups", &self.extra_groups)
            .finish()
    }
}

impl BootstrapToken {
    /// Decode a bootstrap token Secret. The Secret must have the bootstrap
    /// type, a name matching its `token-id`, and well-formed id, secret,
    /// expiration and extra groups; anything else is rejected as a whole
    /// (a half-valid token must not authenticate).
    pub fn from_secret(secret: &Value) -> Result<BootstrapToken, JoinTokenError> {
        let bad = |why: &str| JoinTokenError::NotBootstrapSecret(why.to_string());
        if secret.get("type").and_then(Value::as_str) != Some(BOOTSTRAP_SECRET_TYPE) {
            return Err(bad("wrong type"));
        }
        let data = secret
            .get("data")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("no data"))?;
        let field = |key: &str| -> Result<Option<String>, JoinTokenError> {
            match data.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(b64)) => {
                    let bytes = STANDARD
                        .decode(b64)
                        .map_err(|_| bad(&format!("{key} is not base64")))?;
                    String::from_utf8(bytes)
                        .map(Some)
                        .map_err(|_| bad(&format!("{key} is not UTF-8")))
                }
                Some(_) => Err(bad(&format!("{key} is not a string"))),
            }
        };
        let id = field(KEY_TOKEN_ID)?.ok_or_else(|| bad("no token-id"))?;
        if !is_token_id(&id) {
            return Err(bad("malformed token-id"));
        }
        let name = secret
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name != bootstrap_secret_name(&id) {
            return Err(bad("name does not match token-id"));
        }
        let token_secret = field(KEY_TOKEN_SECRET)?.ok_or_else(|| bad("no token-secret"))?;
        if !is_token_secret(&token_secret) {
            return Err(bad("malformed token-secret"));
        }
        let expiration = match field(KEY_EXPIRATION)? {
            None => None,
            Some(s) if s.is_empty() => None,
            Some(s) => Some(
                s.parse::<jiff::Timestamp>()
                    .map_err(|_| bad("expiration is not RFC 3339"))?,
            ),
        };
        let description = field(KEY_DESCRIPTION)?.filter(|d| !d.is_empty());
        let mut usages = Vec::new();
        for key in data.keys() {
            if let Some(usage) = key.strip_prefix(USAGE_PREFIX)
                && field(key)?.as_deref() == Some("true")
            {
                usages.push(usage.to_string());
            }
        }
        usages.sort();
        let mut extra_groups = Vec::new();
        if let Some(groups) = field(KEY_AUTH_EXTRA_GROUPS)? {
            for g in groups.split(',').map(str::trim).filter(|g| !g.is_empty()) {
                if !is_valid_extra_group(g) {
                    return Err(bad(&format!(
                        "auth-extra-groups entry {g:?} must start with system:bootstrappers:"
                    )));
                }
                extra_groups.push(g.to_string());
            }
        }
        Ok(BootstrapToken {
            id,
            secret: token_secret,
            expiration,
            description,
            usages,
            extra_groups,
        })
    }

    /// Has the token expired at `now`?
    pub fn is_expired(&self, now: jiff::Timestamp) -> bool {
        self.expiration.is_some_and(|e| now >= e)
    }

    /// May this token authenticate API requests?
    pub fn can_authenticate(&self) -> bool {
        self.usages.iter().any(|u| u == "authentication")
    }

    /// The Secret storing this token (data base64-encoded, as the API stores it).
    pub fn to_secret(&self) -> Value {
        let mut data = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            data.insert(k.to_string(), Value::from(STANDARD.encode(v.as_bytes())));
        };
        put(KEY_TOKEN_ID, &self.id);
        put(KEY_TOKEN_SECRET, &self.secret);
        if let Some(e) = self.expiration {
            put(
                KEY_EXPIRATION,
                &e.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            );
        }
        if let Some(d) = &self.description {
            put(KEY_DESCRIPTION, d);
        }
        for u in &self.usages {
            put(&format!("{USAGE_PREFIX}{u}"), "true");
        }
        if !self.extra_groups.is_empty() {
            put(KEY_AUTH_EXTRA_GROUPS, &self.extra_groups.join(","));
        }
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": bootstrap_secret_name(&self.id),
                "namespace": BOOTSTRAP_NAMESPACE,
            },
            "type": BOOTSTRAP_SECRET_TYPE,
            "data": data,
        })
    }
}

/// The body of `POST /wasmkube/v1/join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    /// The node to issue a credential for (a DNS-1123 subdomain).
    pub node_name: String,
    /// A PEM `CERTIFICATE REQUEST` signed by the node's key. Its subject is
    /// ignored: the server names the certificate after `node_name`.
    pub csr: String,
}

/// The answer of `POST /wasmkube/v1/join` (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinResponse {
    pub node_name: String,
    /// PEM client certificate: CN `system:node:<nodeName>`, O `system:nodes`.
    pub certificate: String,
    /// PEM cluster CA.
    pub ca: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_and_prints_full_and_bare_tokens() -> Result<(), JoinTokenError> {
        let full = format!("WK1{HASH}::abcdef.0123456789abcdef");
        let t = JoinToken::parse(&full)?;
        assert_eq!(t.ca_hash.as_deref(), Some(HASH));
        assert_eq!(t.id, "abcdef");
        assert_eq!(t.secret, "0123456789abcdef");
        assert_eq!(t.to_string(), full);
        assert_eq!(t.bearer(), "abcdef.0123456789abcdef");
        assert_eq!(t.secret_name(), "bootstrap-token-abcdef");

        let bare = JoinToken::parse("  abcdef.0123456789abcdef\n")?;
        assert_eq!(bare.ca_hash, None);
        assert_eq!(bare.to_string(), "abcdef.0123456789abcdef");

        let upper = JoinToken::parse(&format!(
            "WK1{}::abcdef.0123456789abcdef",
            HASH.to_uppercase()
        ))?;
        assert_eq!(upper.ca_hash.as_deref(), Some(HASH), "hash is normalised");
        Ok(())
    }

    #[test]
    fn rejects_malformed_tokens_with_clear_errors() {
        let cases: &[(&str, JoinTokenError)] = &[
            ("", JoinTokenError::Empty),
            ("   ", JoinTokenError::Empty),
            ("abcdef", JoinTokenError::Format),
            ("abcdef0123456789abcdef", JoinTokenError::Format),
            ("ABCDEF.0123456789abcdef", JoinTokenError::BadId),
            ("abcde.0123456789abcdef", JoinTokenError::BadId),
            ("abcdef.0123456789abcde", JoinTokenError::BadSecret),
            ("abcdef.0123456789abcdeF", JoinTokenError::BadSecret),
            ("abcdef.0123456789abcdef.x", JoinTokenError::BadSecret),
            ("WK1::abcdef.0123456789abcdef", JoinTokenError::BadHash),
            ("WK1abc::abcdef.0123456789abcdef", JoinTokenError::BadHash),
            (
                "WK10123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg::abcdef.0123456789abcdef",
                JoinTokenError::BadHash,
            ),
            ("WK1abcdef.0123456789abcdef", JoinTokenError::Format),
            ("K10abc::abcdef.0123456789abcdef", JoinTokenError::Format),
            ("abcdef.é123456789abcdef", JoinTokenError::BadSecret),
        ];
        for (input, want) in cases {
            assert_eq!(JoinToken::parse(input).as_ref(), Err(want), "{input:?}");
        }
        assert!(
            JoinTokenError::BadId.to_string().contains("token id"),
            "messages name the part that is wrong"
        );
    }

    #[test]
    fn debug_redacts_the_secret() -> Result<(), JoinTokenError> {
        let t = JoinToken::parse("abcdef.0123456789abcdef")?;
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
        Ok(())
    }

    #[test]
    fn generated_tokens_are_well_formed_and_differ() -> Result<(), JoinTokenError> {
        let a = JoinToken::generate();
        let b = JoinToken::generate();
        assert!(is_token_id(&a.id) && is_token_secret(&a.secret));
        assert_ne!(a.secret, b.secret);
        assert_eq!(JoinToken::parse(&a.to_string())?, a);
        Ok(())
    }

    #[test]
    fn ca_hash_flag_accepts_prefix_or_bare() {
        assert_eq!(
            parse_ca_cert_hash(&format!("sha256:{HASH}")).as_deref(),
            Ok(HASH)
        );
        assert_eq!(
            parse_ca_cert_hash(&format!("SHA256:{HASH}")).as_deref(),
            Ok(HASH)
        );
        assert_eq!(parse_ca_cert_hash(HASH).as_deref(), Ok(HASH));
        assert_eq!(
            parse_ca_cert_hash("sha256:abc"),
            Err(JoinTokenError::BadHash)
        );
        assert_eq!(parse_ca_cert_hash("md5:abc"), Err(JoinTokenError::BadHash));
        assert_eq!(parse_ca_cert_hash("ş"), Err(JoinTokenError::BadHash));
    }

    #[test]
    fn ca_hash_is_sha256_of_the_first_certificate_der() -> Result<(), JoinTokenError> {
        // Any bytes work: the hash is over the decoded block, not the text.
        let der = b"not really DER but bytes all the same";
        let pem = format!(
            "junk before\n-----BEGIN CERTIFICATE-----\n{}\n{}\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            &STANDARD.encode(der)[..20],
            &STANDARD.encode(der)[20..]
        );
        assert_eq!(ca_cert_hash(&pem)?, hex::encode(Sha256::digest(der)));
        assert_eq!(ca_cert_hash("nothing"), Err(JoinTokenError::NoCertificate));
        assert_eq!(
            ca_cert_hash("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----"),
            Err(JoinTokenError::BadPem)
        );
        assert_eq!(
            ca_cert_hash("-----BEGIN CERTIFICATE-----\nAAAA"),
            Err(JoinTokenError::NoCertificate)
        );
        Ok(())
    }

    fn token() -> BootstrapToken {
        BootstrapToken {
            id: "abcdef".into(),
            secret: "0123456789abcdef".into(),
            expiration: Some("2030-01-02T03:04:05Z".parse().unwrap_or_default()),
            description: Some("for edge-1".into()),
            usages: vec!["authentication".into(), "signing".into()],
            extra_groups: vec!["system:bootstrappers:edge".into()],
        }
    }

    #[test]
    fn bootstrap_secret_round_trips() -> Result<(), JoinTokenError> {
        let t = token();
        let secret = t.to_secret();
        assert_eq!(secret["metadata"]["name"], "bootstrap-token-abcdef");
        assert_eq!(secret["metadata"]["namespace"], "kube-system");
        assert_eq!(secret["type"], BOOTSTRAP_SECRET_TYPE);
        assert_eq!(secret["data"]["usage-bootstrap-authentication"], "dHJ1ZQ==");
        let back = BootstrapToken::from_secret(&secret)?;
        assert_eq!(back, t);
        assert!(back.can_authenticate());
        assert!(!back.is_expired("2029-12-31T00:00:00Z".parse().unwrap_or_default()));
        assert!(back.is_expired("2030-01-02T03:04:05Z".parse().unwrap_or_default()));
        Ok(())
    }

    #[test]
    fn bootstrap_secret_rejects_what_kubernetes_rejects() {
        let mutate = |f: &dyn Fn(&mut Value)| {
            let mut s = token().to_secret();
            f(&mut s);
            BootstrapToken::from_secret(&s)
        };
        let enc = |s: &str| Value::from(STANDARD.encode(s));
        assert!(mutate(&|s| s["type"] = "Opaque".into()).is_err());
        assert!(mutate(&|s| s["metadata"]["name"] = "bootstrap-token-zzzzzz".into()).is_err());
        assert!(mutate(&|s| s["data"]["token-secret"] = enc("short")).is_err());
        assert!(mutate(&|s| s["data"]["token-secret"] = "***".into()).is_err());
        assert!(mutate(&|s| s["data"]["expiration"] = enc("tomorrow")).is_err());
        assert!(mutate(&|s| s["data"]["auth-extra-groups"] = enc("system:masters")).is_err());
        assert!(mutate(&|s| s["data"]["token-id"] = Value::from(3)).is_err());
        assert!(
            mutate(&|s| {
                s.as_object_mut().map(|o| o.remove("data"));
            })
            .is_err()
        );
        let no_auth = mutate(&|s| s["data"]["usage-bootstrap-authentication"] = enc("false"));
        assert!(no_auth.is_ok_and(|t| !t.can_authenticate()));
        assert!(is_valid_extra_group(
            "system:bootstrappers:kubeadm:default-node-token"
        ));
        assert!(!is_valid_extra_group("system:bootstrappers:"));
        assert!(!is_valid_extra_group("system:bootstrappers:Edge"));
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in ".{0,120}", pem in "(-----BEGIN CERTIFICATE-----)?.{0,80}(-----END CERTIFICATE-----)?") {
            if let Ok(t) = JoinToken::parse(&s) {
                proptest::prop_assert_eq!(JoinToken::parse(&t.to_string()), Ok(t));
            }
            let _ = parse_ca_cert_hash(&s);
            let _ = ca_cert_hash(&pem);
        }
    }

    #[test]
    fn join_wire_shapes_are_camel_case() -> Result<(), serde_json::Error> {
        let req: JoinRequest = serde_json::from_str(r#"{"nodeName":"edge-1","csr":"-----BEGIN"}"#)?;
        assert_eq!(req.node_name, "edge-1");
        let resp = JoinResponse {
            node_name: "edge-1".into(),
            certificate: "c".into(),
            ca: "a".into(),
        };
        assert_eq!(
            serde_json::to_value(&resp)?,
            json!({"nodeName": "edge-1", "certificate": "c", "ca": "a"})
        );
        Ok(())
    }
}
