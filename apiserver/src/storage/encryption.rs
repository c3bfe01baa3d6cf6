//! Encryption at rest: a [`Store`] wrapper that encrypts the values of
//! chosen resources (Secrets by default) before they reach the backend, and
//! decrypts them on the way back.
//!
//! The key file is a subset of kube-apiserver's `EncryptionConfiguration`
//! (`--encryption-provider-config`): per resource list, an ordered list of
//! providers, `aesgcm` (AES-256-GCM, named 32-byte keys) or `identity`
//! (plaintext). The first provider's first key encrypts new writes; every
//! key of the list decrypts. Values written before encryption was turned on
//! (plaintext JSON) are always readable, so an existing store migrates as
//! its objects are rewritten.
//!
//! A stored value is `k8s:enc:aesgcm:v1:<keyname>:<nonce><ciphertext+tag>`,
//! Kubernetes' envelope prefix, with a random 96-bit nonce. The additional
//! authenticated data is that prefix (so the key name) followed by the
//! storage key: a value copied to another object's key, or relabelled with
//! another key's name, fails to decrypt instead of being served.
//!
//! Reads of a single key that cannot be decrypted (the key named in the
//! value is not configured, or authentication fails) answer
//! [`Error::Transform`], which the API turns into a 500 naming the storage
//! key and the encryption key. Ranges, watch events and the previous value a
//! delete returns cannot fail one object without failing all of them, so
//! there the stored bytes are passed on unchanged (they are not JSON, and
//! the readers skip them) and the failure is logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize as _;

use super::{KeyValue, Precondition, RangeResult, Result, Store, WatchEvent, WatchStream};

/// The envelope prefix of every encrypted value.
pub const ENVELOPE_PREFIX: &str = "k8s:enc:";
/// The prefix of values this module encrypts (followed by `<keyname>:`).
pub const AESGCM_PREFIX: &str = "k8s:enc:aesgcm:v1:";
/// The key file's name under `<data>/pki/` when no path is configured.
pub const DEFAULT_KEY_FILE: &str = "encryption-keys.yaml";
/// AES-256: keys are 32 bytes.
pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
/// The name [`usage`] reports plaintext values under.
pub const IDENTITY: &str = "identity";
/// Page size of the scans in [`usage`] and [`EncryptedStore::rewrite`].
const SCAN_PAGE: usize = 500;

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Yaml {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
}

// ---------------------------------------------------------------------------
// The key file.

/// `EncryptionConfiguration` as written to and read from the key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionConfiguration {
    #[serde(default = "config_api_version")]
    pub api_version: String,
    #[serde(default = "config_kind")]
    pub kind: String,
    pub resources: Vec<ResourceConfiguration>,
}

fn config_api_version() -> String {
    "apiserver.config.k8s.io/v1".to_string()
}

fn config_kind() -> String {
    "EncryptionConfiguration".to_string()
}

/// Resources (`secrets`, `configmaps`, `deployments.apps`…) and the
/// providers that protect them, first one encrypting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResourceConfiguration {
    pub resources: Vec<String>,
    pub providers: Vec<ProviderConfiguration>,
}

/// One provider: exactly one of the fields is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProviderConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aesgcm: Option<AesGcmConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityConfiguration>,
}

/// `identity: {}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdentityConfiguration {}

/// `aesgcm: {keys: [...]}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AesGcmConfiguration {
    pub keys: Vec<KeyConfiguration>,
}

/// A named key; `secret` is the base64 of its 32 bytes.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyConfiguration {
    pub name: String,
    pub secret: String,
}

impl std::fmt::Debug for KeyConfiguration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material never reaches a log line.
        f.debug_struct("KeyConfiguration")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for KeyConfiguration {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

/// The key file used when none is configured: `<data_dir>/pki/encryption-keys.yaml`.
pub fn default_key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("pki").join(DEFAULT_KEY_FILE)
}

/// A fresh random key's base64.
fn random_secret() -> String {
    let mut bytes = [0u8; KEY_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let s = base64::engine::general_purpose::STANDARD.encode(bytes);
    bytes.zeroize();
    s
}

/// A configuration encrypting Secrets with one new random key, `key1`.
pub fn new_configuration() -> EncryptionConfiguration {
    EncryptionConfiguration {
        api_version: config_api_version(),
        kind: config_kind(),
        resources: vec![ResourceConfiguration {
            resources: vec!["secrets".to_string()],
            providers: vec![
                ProviderConfiguration {
                    aesgcm: Some(AesGcmConfiguration {
                        keys: vec![KeyConfiguration {
                            name: "key1".to_string(),
                            secret: random_secret(),
                        }],
                    }),
                    identity: None,
                },
                ProviderConfiguration {
                    aesgcm: None,
                    identity: Some(IdentityConfiguration {}),
                },
            ],
        }],
    }
}

/// Reads and checks the key file.
pub fn read_configuration(path: &Path) -> Result<EncryptionConfiguration, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let config: EncryptionConfiguration =
        serde_yaml::from_str(&text).map_err(|source| Error::Yaml {
            path: path.to_path_buf(),
            source,
        })?;
    // Checked by building the key set, which reports every problem the same way.
    KeySet::from_configuration(&config).map_err(|message| Error::Invalid {
        path: path.to_path_buf(),
        message,
    })?;
    Ok(config)
}

/// Writes the key file atomically with mode 0600 (its directory 0700 when
/// this creates it).
pub fn write_configuration(path: &Path, config: &EncryptionConfiguration) -> Result<(), Error> {
    use std::io::Write as _;
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let yaml = serde_yaml::to_string(config).map_err(|source| Error::Yaml {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt as _;
            b.mode(0o700);
        }
        b.create(dir).map_err(io(dir))?;
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io(&tmp))?;
        f.write_all(yaml.as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Reads the key file, creating it with one new key when `create` and it
/// does not exist yet.
pub fn load_or_create(path: &Path, create: bool) -> Result<EncryptionConfiguration, Error> {
    if create && !path.exists() {
        let config = new_configuration();
        write_configuration(path, &config)?;
        tracing::info!(path = %path.display(), "created the encryption key file (Secrets are encrypted at rest)");
        return Ok(config);
    }
    read_configuration(path)
}

/// Adds a new random key in front of the first `aesgcm` provider of every
/// resource list (so it encrypts from now on; the old keys still decrypt).
/// Returns the new key's name: `key<N+1>` for the highest `key<N>` in use.
pub fn rotate_key(path: &Path) -> Result<String, Error> {
    let mut config = read_configuration(path)?;
    let name = next_key_name(&config);
    let mut added = false;
    for rc in &mut config.resources {
        if let Some(aes) = rc.providers.iter_mut().find_map(|p| p.aesgcm.as_mut()) {
            aes.keys.insert(
                0,
                KeyConfiguration {
                    name: name.clone(),
                    secret: random_secret(),
                },
            );
            added = true;
        }
    }
    if !added {
        return Err(Error::Invalid {
            path: path.to_path_buf(),
            message: "no aesgcm provider to add a key to".to_string(),
        });
    }
    write_configuration(path, &config)?;
    Ok(name)
}

/// Removes the key `name` from every provider list. The key that encrypts
/// (first of the first provider) cannot be removed: rotate first.
pub fn remove_key(path: &Path, name: &str) -> Result<(), Error> {
    let mut config = read_configuration(path)?;
    let invalid = |message: String| Error::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let mut found = false;
    for rc in &mut config.resources {
        let writes_with = rc
            .providers
            .first()
            .and_then(|p| p.aesgcm.as_ref())
            .and_then(|a| a.keys.first())
            .map(|k| k.name == name)
            .unwrap_or(false);
        if writes_with {
            return Err(invalid(format!(
                "key {name:?} encrypts new writes; rotate to a new key before removing it"
            )));
        }
        for p in &mut rc.providers {
            if let Some(aes) = p.aesgcm.as_mut() {
                let before = aes.keys.len();
                aes.keys.retain(|k| k.name != name);
                found |= aes.keys.len() != before;
            }
        }
        rc.providers.retain(|p| {
            p.identity.is_some() || p.aesgcm.as_ref().is_some_and(|a| !a.keys.is_empty())
        });
    }
    if !found {
        return Err(invalid(format!("no key named {name:?}")));
    }
    KeySet::from_configuration(&config).map_err(invalid)?;
    write_configuration(path, &config)
}

fn next_key_name(config: &EncryptionConfiguration) -> String {
    let highest = config
        .resources
        .iter()
        .flat_map(|rc| rc.providers.iter())
        .filter_map(|p| p.aesgcm.as_ref())
        .flat_map(|a| a.keys.iter())
        .filter_map(|k| k.name.strip_prefix("key")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    format!("key{}", highest + 1)
}

// ---------------------------------------------------------------------------
// Keys in memory.

/// One AES-256-GCM key.
struct AesKey {
    name: String,
    cipher: Aes256Gcm,
}

/// How the values under one key prefix are protected.
struct Rule {
    /// Store key prefix, e.g. `/registry/secrets/`.
    prefix: String,
    /// The key new writes use; `None` writes plaintext (`identity` first).
    write: Option<Arc<AesKey>>,
    /// Every key that decrypts, by name.
    keys: BTreeMap<String, Arc<AesKey>>,
}

/// The keys of a configuration, ready to use.
pub struct KeySet {
    rules: Vec<Rule>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: the ciphers hold key material.
        let mut m = f.debug_map();
        for r in &self.rules {
            m.entry(
                &r.prefix,
                &(
                    r.write.as_ref().map(|k| k.name.as_str()),
                    r.keys.keys().collect::<Vec<_>>(),
                ),
            );
        }
        m.finish()
    }
}

/// The store key prefix of a resource named as in `EncryptionConfiguration`
/// (`secrets`, `deployments.apps`).
fn resource_prefix(resource: &str) -> std::result::Result<String, String> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    if !ok(resource) {
        return Err(format!(
            "resource {resource:?}: name one resource as `plural` or `plural.group` (wildcards are not supported)"
        ));
    }
    Ok(match resource.split_once('.') {
        Some((plural, group)) => format!("/registry/{group}/{plural}/"),
        None => format!("/registry/{resource}/"),
    })
}

/// A key name: non-empty, no `:` (it ends the envelope prefix).
fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

impl KeySet {
    /// Checks and decodes a configuration; the error names what is wrong.
    pub fn from_configuration(
        config: &EncryptionConfiguration,
    ) -> std::result::Result<KeySet, String> {
        if config.kind != "EncryptionConfiguration" {
            return Err(format!(
                "kind {:?}: expected EncryptionConfiguration",
                config.kind
            ));
        }
        let mut rules: Vec<Rule> = Vec::new();
        for rc in &config.resources {
            if rc.providers.is_empty() {
                return Err(format!("resources {:?}: no providers", rc.resources));
            }
            let mut keys = BTreeMap::new();
            let mut write = None;
            for (i, p) in rc.providers.iter().enumerate() {
                match (&p.aesgcm, &p.identity) {
                    (Some(aes), None) => {
                        if aes.keys.is_empty() {
                            return Err("an aesgcm provider has no keys".to_string());
                        }
                        for (j, k) in aes.keys.iter().enumerate() {
                            if !valid_key_name(&k.name) {
                                return Err(format!(
                                    "key name {:?}: use letters, digits, '-', '_' or '.' (at most 64)",
                                    k.name
                                ));
                            }
                            let mut raw = base64::engine::general_purpose::STANDARD
                                .decode(k.secret.trim())
                                .map_err(|_| format!("key {:?}: secret is not base64", k.name))?;
                            let cipher = Aes256Gcm::new_from_slice(&raw);
                            let len = raw.len();
                            raw.zeroize();
                            let cipher = cipher.map_err(|_| {
                                format!(
                                    "key {:?}: secret is {len} bytes, AES-256 needs {KEY_BYTES}",
                                    k.name
                                )
                            })?;
                            let key = Arc::new(AesKey {
                                name: k.name.clone(),
                                cipher,
                            });
                            if i == 0 && j == 0 {
                                write = Some(key.clone());
                            }
                            if keys.insert(k.name.clone(), key).is_some() {
                                return Err(format!("key name {:?} is used twice", k.name));
                            }
                        }
                    }
                    (None, Some(_)) => {}
                    _ => {
                        return Err(
                            "each provider must be exactly one of `aesgcm` or `identity`"
                                .to_string(),
                        );
                    }
                }
            }
            for resource in &rc.resources {
                let prefix = resource_prefix(resource)?;
                if rules.iter().any(|r| r.prefix == prefix) {
                    return Err(format!("resource {resource:?} is listed twice"));
                }
                rules.push(Rule {
                    prefix,
                    write: write.clone(),
                    keys: keys.clone(),
                });
            }
        }
        Ok(KeySet { rules })
    }

    fn rule_for(&self, key: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| key.starts_with(&r.prefix))
    }

    /// The store key prefixes whose values are encrypted.
    pub fn prefixes(&self) -> Vec<String> {
        self.rules.iter().map(|r| r.prefix.clone()).collect()
    }

    /// The name of the key new writes under `key` use (`None`: plaintext or
    /// not an encrypted resource).
    pub fn write_key_for(&self, key: &str) -> Option<&str> {
        self.rule_for(key)?.write.as_ref().map(|k| k.name.as_str())
    }

    /// The stored form of `value` at storage key `key`.
    pub fn seal(&self, key: &str, value: &[u8]) -> std::result::Result<Bytes, String> {
        let Some(aes) = self.rule_for(key).and_then(|r| r.write.as_ref()) else {
            return Ok(Bytes::copy_from_slice(value));
        };
        let header = format!("{AESGCM_PREFIX}{}:", aes.name);
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let aad = aad(&header, key);
        let sealed = aes
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value,
                    aad: &aad,
                },
            )
            .map_err(|_| format!("encrypting with key {:?} failed", aes.name))?;
        let mut out = Vec::with_capacity(header.len() + NONCE_BYTES + sealed.len());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(Bytes::from(out))
    }

    /// The plaintext of a stored value at `key`. Plaintext values (and every
    /// value outside the encrypted resources) come back unchanged.
    pub fn open(&self, key: &str, stored: &Bytes) -> std::result::Result<Bytes, String> {
        let Some(rest) = stored.strip_prefix(ENVELOPE_PREFIX.as_bytes()) else {
            return Ok(stored.clone());
        };
        let Some(rest) = stored.strip_prefix(AESGCM_PREFIX.as_bytes()) else {
            let provider = rest
                .split(|b| *b == b':')
                .next()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            return Err(format!(
                "the value was written by the {provider:?} provider, which this server does not support"
            ));
        };
        let Some(colon) = rest.iter().position(|b| *b == b':') else {
            return Err("malformed encrypted value: no key name".to_string());
        };
        let name = String::from_utf8_lossy(&rest[..colon]).into_owned();
        let body = &rest[colon + 1..];
        // The resource's own keys first; then any list's key of that name,
        // so a resource taken out of the file stays readable while its
        // keys are still listed for another.
        let found = self
            .rule_for(key)
            .and_then(|r| r.keys.get(&name))
            .or_else(|| self.rules.iter().find_map(|r| r.keys.get(&name)));
        let Some(aes) = found else {
            return Err(format!(
                "the value is encrypted with key {name:?}, which is not in the key file"
            ));
        };
        if body.len() < NONCE_BYTES + TAG_BYTES {
            return Err(format!(
                "malformed value encrypted with key {name:?}: too short"
            ));
        }
        let (nonce, sealed) = body.split_at(NONCE_BYTES);
        let header = format!("{AESGCM_PREFIX}{name}:");
        let aad = aad(&header, key);
        aes.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map(Bytes::from)
            .map_err(|_| {
                format!(
                    "decrypting with key {name:?} failed: wrong key material, or the value was altered or moved from another key"
                )
            })
    }
}

/// Additional authenticated data: the envelope header (which names the key)
/// and the storage key.
fn aad(header: &str, key: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + key.len());
    aad.extend_from_slice(header.as_bytes());
    aad.extend_from_slice(key.as_bytes());
    aad
}

/// Which key protects a stored value: `Some(name)` for an aesgcm key,
/// [`IDENTITY`] for plaintext, the provider name for another provider.
pub fn key_name_of(stored: &[u8]) -> String {
    if let Some(rest) = stored.strip_prefix(AESGCM_PREFIX.as_bytes()) {
        let end = rest.iter().position(|b| *b == b':').unwrap_or(rest.len());
        return String::from_utf8_lossy(&rest[..end]).into_owned();
    }
    match stored.strip_prefix(ENVELOPE_PREFIX.as_bytes()) {
        Some(rest) => {
            let end = rest.iter().position(|b| *b == b':').unwrap_or(rest.len());
            format!("{}:*", String::from_utf8_lossy(&rest[..end]))
        }
        None => IDENTITY.to_string(),
    }
}

// ---------------------------------------------------------------------------
// The wrapper.

/// A [`Store`] that encrypts the configured resources' values.
pub struct EncryptedStore {
    inner: Arc<dyn Store>,
    /// Shared with open watches, so a reload reaches them too.
    keys: Arc<RwLock<Arc<KeySet>>>,
    /// The key file, reloaded by [`EncryptedStore::reload`].
    path: Option<PathBuf>,
}

impl std::fmt::Debug for EncryptedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedStore")
            .field("path", &self.path)
            .field("keys", &*self.keys())
            .finish_non_exhaustive()
    }
}

/// How the values of the encrypted resources are stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyUsage {
    /// Per store key prefix, the key new writes use (`identity` for plaintext).
    pub write_keys: BTreeMap<String, String>,
    /// Every key name in the key file.
    pub configured_keys: Vec<String>,
    /// Values per key name (`identity` = not encrypted).
    pub objects_by_key: BTreeMap<String, usize>,
    /// Key names found in the store that the key file lacks.
    pub unknown_keys: Vec<String>,
}

/// What [`EncryptedStore::rewrite`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RewriteReport {
    /// Values written again with the current key.
    pub rewritten: usize,
    /// Values already stored with the current key.
    pub unchanged: usize,
    /// Values changed by someone else during the rewrite (so written anew anyway).
    pub raced: usize,
    /// Storage keys that could not be decrypted, with why.
    pub failed: Vec<String>,
}

impl EncryptedStore {
    /// Wraps `inner` with the keys of `config`.
    pub fn new(
        inner: Arc<dyn Store>,
        config: &EncryptionConfiguration,
    ) -> std::result::Result<EncryptedStore, String> {
        Ok(EncryptedStore {
            inner,
            keys: Arc::new(RwLock::new(Arc::new(KeySet::from_configuration(config)?))),
            path: None,
        })
    }

    /// Wraps `inner` with the keys of the file at `path` (created with a new
    /// key when `create` and missing).
    pub fn open(inner: Arc<dyn Store>, path: &Path, create: bool) -> Result<EncryptedStore, Error> {
        let config = load_or_create(path, create)?;
        let keys = KeySet::from_configuration(&config).map_err(|message| Error::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(EncryptedStore {
            inner,
            keys: Arc::new(RwLock::new(Arc::new(keys))),
            path: Some(path.to_path_buf()),
        })
    }

    /// The backend under the encryption (tests read raw values through it).
    pub fn inner(&self) -> Arc<dyn Store> {
        self.inner.clone()
    }

    /// The key file, when the keys came from one.
    pub fn key_file(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The keys in use now.
    pub fn keys(&self) -> Arc<KeySet> {
        current(&self.keys)
    }

    /// Replaces the keys (e.g. after a rotation).
    pub fn set_keys(&self, keys: KeySet) {
        let keys = Arc::new(keys);
        match self.keys.write() {
            Ok(mut k) => *k = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    /// Reads the key file again (a rotation done with `wasmkube secrets
    /// rotate-key` takes effect without a restart). No-op without a file.
    pub async fn reload(&self) -> Result<(), Error> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let shown = path.clone();
        let config = tokio::task::spawn_blocking(move || read_configuration(&path))
            .await
            .map_err(|e| Error::Invalid {
                path: shown.clone(),
                message: format!("reading the key file: {e}"),
            })??;
        let keys = KeySet::from_configuration(&config).map_err(|message| Error::Invalid {
            path: shown.clone(),
            message,
        })?;
        tracing::info!(path = %shown.display(), keys = ?keys, "encryption keys loaded");
        self.set_keys(keys);
        Ok(())
    }

    fn transform_error(&self, key: &str, message: String) -> super::Error {
        let file = self
            .path
            .as_ref()
            .map(|p| format!(" (keys from {})", p.display()))
            .unwrap_or_default();
        super::Error::Transform {
            key: key.to_string(),
            message: format!("{message}{file}"),
        }
    }

    /// Decrypts a value where one failure must not fail the whole read
    /// (ranges, watches): on failure the stored bytes are returned as they are.
    fn open_lenient(&self, keys: &KeySet, kv: KeyValue) -> KeyValue {
        match keys.open(&kv.key, &kv.value) {
            Ok(value) => KeyValue { value, ..kv },
            Err(message) => {
                tracing::error!(key = %kv.key, reason = %message, "cannot decrypt stored value; passing it on undecoded");
                kv
            }
        }
    }

    /// Counts the stored values of the encrypted resources by the key that
    /// protects them.
    pub async fn usage(&self) -> Result<KeyUsage> {
        let keys = self.keys();
        let mut usage = KeyUsage::default();
        let mut configured = std::collections::BTreeSet::new();
        for rule in &keys.rules {
            usage.write_keys.insert(
                rule.prefix.clone(),
                rule.write
                    .as_ref()
                    .map(|k| k.name.clone())
                    .unwrap_or_else(|| IDENTITY.to_string()),
            );
            configured.extend(rule.keys.keys().cloned());
        }
        let mut unknown = std::collections::BTreeSet::new();
        for rule in &keys.rules {
            scan(&*self.inner, &rule.prefix, |kv| {
                let name = key_name_of(&kv.value);
                if name != IDENTITY && !rule.keys.contains_key(&name) {
                    unknown.insert(name.clone());
                }
                *usage.objects_by_key.entry(name).or_default() += 1;
            })
            .await?;
        }
        usage.configured_keys = configured.into_iter().collect();
        usage.unknown_keys = unknown.into_iter().collect();
        Ok(usage)
    }

    /// Writes every value of the encrypted resources that is not stored with
    /// its current write key again, so that it is. Each write is a
    /// compare-and-swap on the revision read, so a concurrent update wins
    /// (and is itself written with the current key). Watchers see each
    /// rewritten object as MODIFIED with its content unchanged.
    pub async fn rewrite(&self) -> Result<RewriteReport> {
        let keys = self.keys();
        let mut report = RewriteReport::default();
        for rule in &keys.rules {
            let want = rule
                .write
                .as_ref()
                .map(|k| k.name.clone())
                .unwrap_or_else(|| IDENTITY.to_string());
            let mut todo = Vec::new();
            scan(&*self.inner, &rule.prefix, |kv| {
                if key_name_of(&kv.value) == want {
                    report.unchanged += 1;
                } else {
                    todo.push(kv);
                }
            })
            .await?;
            for kv in todo {
                let plain = match keys.open(&kv.key, &kv.value) {
                    Ok(p) => p,
                    Err(why) => {
                        report.failed.push(format!("{}: {why}", kv.key));
                        continue;
                    }
                };
                let sealed = keys
                    .seal(&kv.key, &plain)
                    .map_err(|why| self.transform_error(&kv.key, why))?;
                match self
                    .inner
                    .put(&kv.key, sealed, Precondition::ModRevision(kv.mod_revision))
                    .await
                {
                    Ok(_) => report.rewritten += 1,
                    Err(super::Error::Conflict { .. } | super::Error::NotFound { .. }) => {
                        report.raced += 1
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(report)
    }
}

/// The keys in the lock (a writer never panics while holding it; should
/// one have, its value is still whole).
fn current(keys: &RwLock<Arc<KeySet>>) -> Arc<KeySet> {
    match keys.read() {
        Ok(k) => k.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// Calls `each` for every key-value under `prefix`, page by page.
async fn scan(store: &dyn Store, prefix: &str, mut each: impl FnMut(KeyValue)) -> Result<()> {
    let mut after: Option<String> = None;
    loop {
        let page = store.range(prefix, after.as_deref(), SCAN_PAGE).await?;
        let last = page.kvs.last().map(|kv| kv.key.clone());
        for kv in page.kvs {
            each(kv);
        }
        match last {
            Some(k) if page.more => after = Some(k),
            _ => return Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl Store for EncryptedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let Some(kv) = self.inner.get(key).await? else {
            return Ok(None);
        };
        let keys = self.keys();
        match keys.open(key, &kv.value) {
            Ok(value) => Ok(Some(KeyValue { value, ..kv })),
            Err(message) => Err(self.transform_error(key, message)),
        }
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<RangeResult> {
        let r = self.inner.range(prefix, start_after, limit).await?;
        let keys = self.keys();
        Ok(RangeResult {
            kvs: r
                .kvs
                .into_iter()
                .map(|kv| self.open_lenient(&keys, kv))
                .collect(),
            ..r
        })
    }

    async fn put(&self, key: &str, value: Bytes, precondition: Precondition) -> Result<KeyValue> {
        let sealed = self
            .keys()
            .seal(key, &value)
            .map_err(|message| self.transform_error(key, message))?;
        let kv = self.inner.put(key, sealed, precondition).await?;
        // The caller gets back what it wrote, not the ciphertext.
        Ok(KeyValue { value, ..kv })
    }

    async fn delete(&self, key: &str, precondition: Precondition) -> Result<(KeyValue, i64)> {
        let (kv, revision) = self.inner.delete(key, precondition).await?;
        // The delete is done: a value that does not decrypt must not turn it
        // into an error.
        Ok((self.open_lenient(&self.keys(), kv), revision))
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream> {
        let stream = self.inner.watch(prefix, after_revision).await?;
        let this = EventOpener {
            keys: self.keys.clone(),
        };
        Ok(Box::pin(
            stream.map(move |item| item.map(|event| this.open_event(event))),
        ))
    }

    async fn current_revision(&self) -> Result<i64> {
        self.inner.current_revision().await
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn compacted_revision(&self) -> Result<i64> {
        self.inner.compacted_revision().await
    }

    fn encryption(&self) -> Option<&EncryptedStore> {
        Some(self)
    }
}

/// Decrypts the values of a watch's events with the current keys.
struct EventOpener {
    keys: Arc<RwLock<Arc<KeySet>>>,
}

impl EventOpener {
    fn open_kv(&self, kv: KeyValue) -> KeyValue {
        match current(&self.keys).open(&kv.key, &kv.value) {
            Ok(value) => KeyValue { value, ..kv },
            Err(message) => {
                tracing::error!(key = %kv.key, reason = %message, "cannot decrypt watched value; passing it on undecoded");
                kv
            }
        }
    }

    fn open_event(&self, event: WatchEvent) -> WatchEvent {
        match event {
            WatchEvent::Put { kv, prev } => WatchEvent::Put {
                kv: self.open_kv(kv),
                prev: prev.map(|p| self.open_kv(p)),
            },
            WatchEvent::Delete { prev, revision } => WatchEvent::Delete {
                prev: self.open_kv(prev),
                revision,
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Admin endpoints (`wasmkube secrets status|rewrite`).

/// `GET /wasmkube/v1/encryption` (which keys protect how many values) and
/// `POST /wasmkube/v1/encryption/rewrite` (write every value again with the
/// current key). Both re-read the key file first, so a rotation made with
/// `wasmkube secrets rotate-key` applies without a restart. Only
/// `system:masters` may call them: they reveal which keys exist and make
/// every Secret be written again.
pub fn routes() -> axum::Router<crate::AppState> {
    axum::Router::new()
        .route("/wasmkube/v1/encryption", axum::routing::get(usage_handler))
        .route(
            "/wasmkube/v1/encryption/rewrite",
            axum::routing::post(rewrite_handler),
        )
}

fn admin_store<'a>(
    state: &'a crate::AppState,
    user: Option<&crate::auth::UserInfo>,
    verb: &str,
    path: &str,
) -> Result<&'a EncryptedStore, crate::error::ApiError> {
    use wasmkube_api::status;
    let allowed = user.is_some_and(|u| u.groups.iter().any(|g| g == crate::auth::MASTERS_GROUP));
    if !allowed {
        let name = user.map(|u| u.name.as_str()).unwrap_or("system:anonymous");
        return Err(crate::error::ApiError(status::forbidden(format!(
            "forbidden: User {name:?} cannot {verb} path {path:?}: only system:masters manages encryption keys"
        ))));
    }
    state.store.encryption().ok_or_else(|| {
        crate::error::ApiError(status::failure(
            404,
            "NotFound",
            "encryption at rest is not configured on this server",
        ))
    })
}

fn reload_error(e: Error) -> crate::error::ApiError {
    crate::error::ApiError::internal(format!("reloading the encryption key file: {e}"))
}

async fn usage_handler(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    user: Option<axum::Extension<crate::auth::UserInfo>>,
) -> Result<axum::Json<KeyUsage>, crate::error::ApiError> {
    let store = admin_store(&state, user.as_deref(), "get", "/wasmkube/v1/encryption")?;
    store.reload().await.map_err(reload_error)?;
    let usage = store
        .usage()
        .await
        .map_err(|e| crate::error::ApiError::from_storage(e, "", "secrets", ""))?;
    Ok(axum::Json(usage))
}

async fn rewrite_handler(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    user: Option<axum::Extension<crate::auth::UserInfo>>,
) -> Result<axum::Json<RewriteReport>, crate::error::ApiError> {
    let store = admin_store(
        &state,
        user.as_deref(),
        "create",
        "/wasmkube/v1/encryption/rewrite",
    )?;
    store.reload().await.map_err(reload_error)?;
    let report = store
        .rewrite()
        .await
        .map_err(|e| crate::error::ApiError::from_storage(e, "", "secrets", ""))?;
    tracing::info!(
        rewritten = report.rewritten,
        unchanged = report.unchanged,
        raced = report.raced,
        failed = report.failed.len(),
        "encrypted resources rewritten with the current keys"
    );
    Ok(axum::Json(report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::embedded::EmbeddedStore;

    const SECRET_KEY: &str = "/registry/secrets/default/s1";

    fn keyset(config: &EncryptionConfiguration) -> KeySet {
        KeySet::from_configuration(config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn with_first_key(config: &EncryptionConfiguration, name: &str) -> EncryptionConfiguration {
        let mut c = config.clone();
        if let Some(aes) = c.resources[0].providers[0].aesgcm.as_mut() {
            aes.keys.insert(
                0,
                KeyConfiguration {
                    name: name.to_string(),
                    secret: random_secret(),
                },
            );
        }
        c
    }

    #[test]
    fn secrets_round_trip_and_other_resources_stay_plain() {
        let keys = keyset(&new_configuration());
        let plain = br#"{"data":{"password":"aHVudGVyMg=="}}"#;
        let sealed = keys.seal(SECRET_KEY, plain).unwrap_or_default();
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
        assert!(
            !sealed.windows(8).any(|w| w == b"aHVudGVy"),
            "no plaintext in the sealed value"
        );
        assert_eq!(keys.open(SECRET_KEY, &sealed).as_deref(), Ok(&plain[..]));
        // Two seals of one value differ (random nonce).
        assert_ne!(keys.seal(SECRET_KEY, plain).ok(), Some(sealed));
        let cm = "/registry/configmaps/default/c";
        assert_eq!(keys.seal(cm, plain).as_deref(), Ok(&plain[..]));
        // Plaintext written before encryption was on is still read.
        let old = Bytes::from_static(plain);
        assert_eq!(keys.open(SECRET_KEY, &old), Ok(old.clone()));
    }

    #[test]
    fn ciphertext_is_bound_to_its_storage_key_and_key_name() {
        let config = new_configuration();
        let keys = keyset(&config);
        let sealed = keys.seal(SECRET_KEY, b"{}").unwrap_or_default();
        // Moved to another object: authentication fails.
        let moved = keys.open("/registry/secrets/default/s2", &sealed);
        assert!(moved.is_err_and(|e| e.contains("failed")));
        // Relabelled as another key that also exists: fails too.
        let two = keyset(&with_first_key(&config, "key2"));
        let relabelled = {
            let rest = &sealed[b"k8s:enc:aesgcm:v1:key1:".len()..];
            let mut v = b"k8s:enc:aesgcm:v1:key2:".to_vec();
            v.extend_from_slice(rest);
            Bytes::from(v)
        };
        assert!(two.open(SECRET_KEY, &relabelled).is_err());
        // Flipped bit: fails.
        let mut flipped = sealed.to_vec();
        if let Some(b) = flipped.last_mut() {
            *b ^= 1;
        }
        assert!(keys.open(SECRET_KEY, &Bytes::from(flipped)).is_err());
    }

    #[test]
    fn rotation_keeps_old_values_readable_and_new_writes_use_the_new_key() {
        let config = new_configuration();
        let old = keyset(&config);
        let sealed_old = old.seal(SECRET_KEY, b"{\"a\":1}").unwrap_or_default();
        let rotated = keyset(&with_first_key(&config, "key2"));
        assert_eq!(rotated.write_key_for(SECRET_KEY), Some("key2"));
        assert_eq!(
            rotated.open(SECRET_KEY, &sealed_old).as_deref(),
            Ok(&b"{\"a\":1}"[..])
        );
        let sealed_new = rotated.seal(SECRET_KEY, b"{}").unwrap_or_default();
        assert_eq!(key_name_of(&sealed_new), "key2");
        // Without the key that wrote it: a clear error naming the key.
        let err = old.open(SECRET_KEY, &sealed_new).err().unwrap_or_default();
        assert!(
            err.contains("\"key2\"") && err.contains("not in the key file"),
            "{err}"
        );
    }

    #[test]
    fn malformed_values_are_errors_never_panics() {
        let keys = keyset(&new_configuration());
        for raw in [
            &b"k8s:enc:"[..],
            b"k8s:enc:aesgcm:v1:",
            b"k8s:enc:aesgcm:v1:key1",
            b"k8s:enc:aesgcm:v1:key1:",
            b"k8s:enc:aesgcm:v1:key1:short",
            b"k8s:enc:aesgcm:v1:key1:\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            b"k8s:enc:kms:v2:foo:bar",
            b"k8s:enc:secretbox:v1:key1:xyz",
        ] {
            let r = keys.open(SECRET_KEY, &Bytes::copy_from_slice(raw));
            assert!(r.is_err(), "{:?} must not decrypt", String::from_utf8_lossy(raw));
        }
        let kms = keys.open(SECRET_KEY, &Bytes::from_static(b"k8s:enc:kms:v2:x:y"));
        assert!(kms.is_err_and(|e| e.contains("\"kms\"")));
    }

    #[test]
    fn bad_configurations_are_refused_with_a_reason() {
        let mut c = new_configuration();
        if let Some(aes) = c.resources[0].providers[0].aesgcm.as_mut() {
            aes.keys[0].secret = base64::engine::general_purpose::STANDARD.encode([0u8; 16]);
        }
        let e = KeySet::from_configuration(&c).err().unwrap_or_default();
        assert!(e.contains("16 bytes") && e.contains("32"), "{e}");

        let mut c = new_configuration();
        if let Some(aes) = c.resources[0].providers[0].aesgcm.as_mut() {
            aes.keys[0].name = "a:b".into();
        }
        assert!(KeySet::from_configuration(&c).is_err());

        let dup = with_first_key(&new_configuration(), "key1");
        let e = KeySet::from_configuration(&dup).err().unwrap_or_default();
        assert!(e.contains("twice"), "{e}");

        let mut c = new_configuration();
        c.resources[0].resources = vec!["*.*".into()];
        assert!(KeySet::from_configuration(&c).is_err());

        // identity first: new writes are plaintext, old values still decrypt.
        let mut c = new_configuration();
        let sealed = keyset(&c).seal(SECRET_KEY, b"{}").unwrap_or_default();
        c.resources[0].providers.reverse();
        let plain = keyset(&c);
        assert_eq!(plain.write_key_for(SECRET_KEY), None);
        assert_eq!(plain.seal(SECRET_KEY, b"{}").as_deref(), Ok(&b"{}"[..]));
        assert_eq!(plain.open(SECRET_KEY, &sealed).as_deref(), Ok(&b"{}"[..]));
    }

    #[test]
    fn resources_map_to_their_store_prefixes() {
        let mut c = new_configuration();
        c.resources[0].resources = vec!["secrets".into(), "deployments.apps".into()];
        assert_eq!(
            keyset(&c).prefixes(),
            vec!["/registry/secrets/", "/registry/apps/deployments/"]
        );
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let c = new_configuration();
        let secret = c.resources[0].providers[0]
            .aesgcm
            .as_ref()
            .map(|a| a.keys[0].secret.clone())
            .unwrap_or_default();
        assert!(!secret.is_empty());
        let shown = format!("{c:?} {:?}", keyset(&c));
        assert!(!shown.contains(&secret), "{shown}");
        assert!(shown.contains("key1"), "{shown}");
    }

    #[test]
    fn key_file_is_private_and_rotation_and_removal_edit_it() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = default_key_file(dir.path());
        load_or_create(&path, true)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(&path)?.permissions().mode() & 0o777,
                0o600
            );
        }
        let first = keyset(&read_configuration(&path)?);
        let sealed = first.seal(SECRET_KEY, b"{}").unwrap_or_default();
        // A second start reuses the file.
        load_or_create(&path, true)?;
        assert!(
            keyset(&read_configuration(&path)?)
                .open(SECRET_KEY, &sealed)
                .is_ok()
        );

        assert_eq!(rotate_key(&path)?, "key2");
        let rotated = keyset(&read_configuration(&path)?);
        assert_eq!(rotated.write_key_for(SECRET_KEY), Some("key2"));
        assert!(rotated.open(SECRET_KEY, &sealed).is_ok());

        let refused = remove_key(&path, "key2").err().map(|e| e.to_string());
        assert!(refused.is_some_and(|e| e.contains("encrypts new writes")));
        assert!(remove_key(&path, "nope").is_err());
        remove_key(&path, "key1")?;
        let after = keyset(&read_configuration(&path)?);
        assert!(after.open(SECRET_KEY, &sealed).is_err());
        // A missing file given explicitly is an error, not a new key.
        assert!(load_or_create(&dir.path().join("absent.yaml"), false).is_err());
        Ok(())
    }

    #[tokio::test]
    async fn wrapper_encrypts_in_the_backend_and_decrypts_every_read() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let raw: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("s.redb"))?);
        let config = new_configuration();
        let store = EncryptedStore::new(raw.clone(), &config).map_err(anyhow::Error::msg)?;
        let mut watch = store.watch("/registry/secrets/", 0).await?;
        let value = Bytes::from_static(br#"{"data":{"k":"c2VjcmV0"}}"#);
        let put = store
            .put(SECRET_KEY, value.clone(), Precondition::MustNotExist)
            .await?;
        assert_eq!(put.value, value);
        let stored = raw
            .get(SECRET_KEY)
            .await?
            .map(|kv| kv.value)
            .unwrap_or_default();
        assert!(stored.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
        assert_eq!(
            store.get(SECRET_KEY).await?.map(|kv| kv.value),
            Some(value.clone())
        );
        let listed = store.range("/registry/secrets/", None, 0).await?;
        assert_eq!(listed.kvs[0].value, value);
        match watch.next().await {
            Some(Ok(WatchEvent::Put { kv, .. })) => assert_eq!(kv.value, value),
            other => panic!("unexpected watch item {other:?}"),
        }

        // Rotation through the shared keys: a watch opened before sees values
        // written with the new key; rewrite moves the old value to it.
        store.set_keys(keyset(&with_first_key(&config, "key2")));
        store
            .put(
                "/registry/secrets/default/s2",
                value.clone(),
                Precondition::MustNotExist,
            )
            .await?;
        match watch.next().await {
            Some(Ok(WatchEvent::Put { kv, .. })) => assert_eq!(kv.value, value),
            other => panic!("unexpected watch item {other:?}"),
        }
        let before = store.usage().await?;
        assert_eq!(before.objects_by_key.get("key1"), Some(&1));
        assert_eq!(before.objects_by_key.get("key2"), Some(&1));
        let report = store.rewrite().await?;
        assert_eq!((report.rewritten, report.unchanged), (1, 1));
        let after = store.usage().await?;
        assert_eq!(after.objects_by_key.get("key2"), Some(&2));
        assert_eq!(after.objects_by_key.get("key1"), None);

        // A store that lacks the key: get is a Transform error naming it;
        // range passes the stored bytes on instead of failing the list.
        let stranger =
            EncryptedStore::new(raw.clone(), &new_configuration()).map_err(anyhow::Error::msg)?;
        let err = stranger.get(SECRET_KEY).await.err();
        assert!(
            matches!(&err, Some(crate::storage::Error::Transform { key, message })
                if key == SECRET_KEY && message.contains("\"key2\"")),
            "{err:?}"
        );
        let listed = stranger.range("/registry/secrets/", None, 0).await?;
        assert!(
            listed
                .kvs
                .iter()
                .all(|kv| kv.value.starts_with(b"k8s:enc:"))
        );
        let (deleted, _) = stranger.delete(SECRET_KEY, Precondition::None).await?;
        assert_eq!(deleted.key, SECRET_KEY);
        Ok(())
    }
}
