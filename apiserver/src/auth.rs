//! Authentication by static bearer tokens, in Kubernetes' token-file format
//! (`token,user,uid,"group1,group2"`). The file is made on first start with a
//! random token for `admin` (group `system:masters`) and for each component
//! user; later starts reuse it and only add users that are new.
//!
//! The middleware puts the caller's [`UserInfo`] into the request extensions;
//! health and version endpoints stay anonymous, like in Kubernetes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use sha2::{Digest, Sha256};
use wasmkube_api::status;

use crate::error::ApiError;

/// The user the admin token belongs to.
pub const ADMIN_USER: &str = "admin";
/// The group that bypasses authorization in Kubernetes.
pub const MASTERS_GROUP: &str = "system:masters";
/// Every authenticated caller is in this group.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
const NODES_GROUP: &str = "system:nodes";
const NODE_USER_PREFIX: &str = "system:node:";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// Token file errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(transparent)]
    Write(#[from] crate::pki::Error),
}

struct Entry {
    /// SHA-256 of the token: comparing fixed-size digests in constant time
    /// hides both the content and the length of the stored tokens.
    digest: [u8; 32],
    token: String,
    user: UserInfo,
}

/// The static tokens the server accepts.
pub struct Tokens {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print tokens.
        f.debug_struct("Tokens")
            .field("users", &self.entries.len())
            .finish()
    }
}

impl Tokens {
    /// Load `path`, creating it (mode 0600) with `admin` and `users` when
    /// absent, and appending a token for any of `users` not yet in it.
    /// Blocking: call from `spawn_blocking`.
    pub fn load_or_create(path: &Path, users: &[String]) -> Result<Self, Error> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(Error::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let mut entries = parse(path, &text)?;
        let mut wanted = vec![ADMIN_USER.to_string()];
        wanted.extend(users.iter().cloned());
        let mut changed = false;
        for name in wanted {
            if entries.iter().any(|e| e.user.name == name) {
                continue;
            }
            let groups = if name == ADMIN_USER {
                vec![MASTERS_GROUP.to_string()]
            } else if name.starts_with(NODE_USER_PREFIX) {
                vec![NODES_GROUP.to_string()]
            } else {
                Vec::new()
            };
            let token = random_token();
            entries.push(Entry {
                digest: digest(&token),
                token,
                user: UserInfo {
                    uid: name.clone(),
                    name,
                    groups,
                },
            });
            changed = true;
        }
        if changed {
            crate::pki::write_file(path, render(&entries).as_bytes(), 0o600)?;
        }
        Ok(Self { entries })
    }

    /// The user `token` belongs to. Every stored token is compared, each in
    /// constant time, so timing reveals nothing about which (if any) matched.
    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        let presented = digest(token);
        let mut found = None;
        for e in &self.entries {
            if constant_time_eq(&e.digest, &presented) && found.is_none() {
                found = Some(&e.user);
            }
        }
        found.map(|u| {
            let mut user = u.clone();
            if !user.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
                user.groups.push(AUTHENTICATED_GROUP.to_string());
            }
            user
        })
    }

    /// user → token (the first token of each user).
    pub fn by_user(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        for e in &self.entries {
            map.entry(e.user.name.clone())
                .or_insert_with(|| e.token.clone());
        }
        map
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// 256 random bits, hex: long enough that guessing is hopeless.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Parse the token file: `token,user,uid[,"g1,g2"]` per line; blank lines and
/// `#` comments are skipped.
fn parse(path: &Path, text: &str) -> Result<Vec<Entry>, Error> {
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields = split_csv(line);
        let err = |message: &str| Error::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            message: message.to_string(),
        };
        if fields.len() < 2 {
            return Err(err("expected token,user,uid[,groups]"));
        }
        let token = fields[0].clone();
        let name = fields[1].clone();
        if token.is_empty() || name.is_empty() {
            return Err(err("token and user must not be empty"));
        }
        let uid = fields.get(2).cloned().unwrap_or_default();
        let groups = fields
            .get(3)
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        entries.push(Entry {
            digest: digest(&token),
            token,
            user: UserInfo { name, uid, groups },
        });
    }
    Ok(entries)
}

/// Split one CSV line, honouring double quotes (with `""` as an escaped quote).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

fn render(entries: &[Entry]) -> String {
    let mut out = String::new();
    for e in entries {
        let mut line = format!("{},{},{}", e.token, e.user.name, e.user.uid);
        if !e.user.groups.is_empty() {
            line.push_str(&format!(",\"{}\"", e.user.groups.join(",")));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Paths served without credentials (as `kube-apiserver` does by default).
/// `/cacerts` is public material: a joining agent fetches it before it
/// trusts anything and pins it by the hash in its join token.
pub fn is_anonymous_path(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/livez" | "/readyz" | "/version" | wasmkube_api::join::CACERTS_PATH
    ) || crate::dashboard::is_dashboard_path(path)
}

/// Middleware: the caller's [`UserInfo`] as a request extension, or 401.
/// Like Kubernetes' union authenticator the first that succeeds wins: a
/// verified client certificate ([`crate::authn`]), then
/// `Authorization: Bearer` with a static token, then a ServiceAccount
/// token ([`crate::serviceaccount`]), then a bootstrap token.
pub async fn authenticate(
    State(state): State<crate::AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    if is_anonymous_path(req.uri().path()) {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<crate::authn::PeerCertificates>()
        .cloned();
    let token = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(str::to_string);
    let user = identify(&state, peer.as_ref(), token.as_deref()).await;
    match user {
        Some(user) => {
            req.extensions_mut().insert(user);
            next.run(req).await
        }
        None => ApiError(status::unauthorized()).into_response(),
    }
}

async fn identify(
    state: &crate::AppState,
    peer: Option<&crate::authn::PeerCertificates>,
    token: Option<&str>,
) -> Option<UserInfo> {
    match crate::authn::client_cert_user(peer) {
        Some(Ok(user)) => return Some(user),
        // A certificate naming no one does not authenticate; a token still may.
        Some(Err(e)) => tracing::debug!(error = %e, "client certificate not usable"),
        None => {}
    }
    let token = token?;
    if let Some(user) = state.tokens.authenticate(token) {
        return Some(user);
    }
    if crate::serviceaccount::looks_like_jwt(token) {
        return state
            .service_accounts
            .authenticate(&state.registry, token)
            .await;
    }
    if crate::authn::looks_like_bootstrap_token(token) {
        return crate::authn::bootstrap_user(&state.registry, token).await;
    }
    None
}

/// The token of an `Authorization` header value (scheme case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reuses_and_adds_new_users() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tokens.csv");
        let first = Tokens::load_or_create(&path, &["system:kube-scheduler".to_string()])?;
        let map = first.by_user();
        assert_eq!(map.len(), 2);
        let admin = map.get(ADMIN_USER).cloned().unwrap_or_default();
        assert_eq!(admin.len(), 64);
        let user = first.authenticate(&admin).ok_or("admin token rejected")?;
        assert!(user.groups.contains(&MASTERS_GROUP.to_string()));
        assert!(first.authenticate("nope").is_none());

        let second = Tokens::load_or_create(
            &path,
            &[
                "system:kube-scheduler".to_string(),
                "system:node:n1".to_string(),
            ],
        )?;
        let map2 = second.by_user();
        assert_eq!(map2.get(ADMIN_USER), Some(&admin));
        assert_eq!(
            map2.get("system:kube-scheduler"),
            map.get("system:kube-scheduler")
        );
        let node = second
            .authenticate(map2.get("system:node:n1").ok_or("no node token")?)
            .ok_or("node token rejected")?;
        assert_eq!(
            node.groups,
            vec![NODES_GROUP.to_string(), AUTHENTICATED_GROUP.to_string()]
        );
        Ok(())
    }

    #[test]
    fn parses_quoted_groups() {
        assert_eq!(split_csv(r#"t,u,id,"a,b""#), vec!["t", "u", "id", "a,b"]);
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }
}
