//! wasm modules in OCI registries: pulling them for the kubelet and pushing
//! them for `wasmkube push`.
//!
//! A module is stored the way wkg, wasm-pkg-tools, Spin and runwasi store
//! one: an OCI image manifest whose config is
//! `application/vnd.wasm.config.v0+json` and whose one layer is the module
//! itself, `application/wasm`. Pulls also accept the older wasm layer types
//! and multi-platform image indexes that carry a `wasi`/`wasm` entry. Layers
//! are hashed while they stream and refused when they do not match their
//! digest or exceed [`MAX_MODULE_BYTES`].
//!
//! Registries on loopback are spoken to over plain HTTP, all others over
//! HTTPS (trusting the system roots plus an optional extra CA bundle).
//! Credentials come from docker config files (`kubernetes.io/dockerconfigjson`
//! and legacy `kubernetes.io/dockercfg` Secrets, `~/.docker/config.json`),
//! matched by registry host the way the kubelet's keyring matches them; the
//! bearer-token dance is oci-client's.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt as _;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, ImageIndexEntry,
    OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest, OciManifest,
};
use oci_client::{Reference, RegistryOperation};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use wasmkube_api::image::{ImageRef, Reference as ImageReference};
use wasmkube_api::wasm::MAX_MODULE_BYTES;

pub use oci_client::secrets::RegistryAuth;

/// The layer media type of a wasm module (the wasm OCI artifact layout).
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The config media type of the wasm OCI artifact layout.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Layer media types of earlier wasm layouts (wasm-to-oci, early Spin and
/// runwasi artifacts), still found in registries.
pub const LEGACY_WASM_LAYER_MEDIA_TYPES: [&str; 2] = [
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.module.wasm.content.layer.v1+wasm",
];

/// Manifest types asked for when resolving a reference.
const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    OCI_IMAGE_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

/// How much of a module goes into one upload request (and one progress step).
const PUSH_CHUNK: usize = 1 << 20;

/// Why talking to a registry failed. Every message is meant to be shown to
/// the user as is (in `ErrImagePull`, or by `wasmkube push`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OciError {
    /// The registry refused us: no or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// The registry answered with an error (`manifest unknown`, …) or could
    /// not be reached.
    #[error("{0}")]
    Registry(String),
    /// The artifact is not a wasm module this node can run.
    #[error("{0}")]
    NotWasm(String),
    /// Content did not hash to the digest it was asked for by.
    #[error("{0}")]
    DigestMismatch(String),
    /// The module is larger than [`MAX_MODULE_BYTES`].
    #[error("{0}")]
    TooLarge(String),
    /// Local files: the CA bundle, the module being written.
    #[error("{0}")]
    Io(String),
    /// A docker config (pull secret, config.json) that does not parse.
    #[error("{0}")]
    BadCredentials(String),
}

/// How registries are reached.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// PEM certificates to trust besides the system roots, for registries
    /// behind a private CA.
    pub extra_ca_pem: Option<Arc<Vec<u8>>>,
    /// Speak plain HTTP to every registry, not only loopback ones.
    pub plain_http: bool,
}

/// The host part of `host[:port]` (`[::1]:5000` → `::1`).
fn host_without_port(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match registry.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    }
}

/// Whether a registry host is on this machine (`localhost`, 127.0.0.0/8,
/// `::1`): those are spoken to over plain HTTP, like `docker` and
/// containerd treat them as insecure registries by default.
pub fn is_loopback_registry(registry: &str) -> bool {
    let host = host_without_port(registry);
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Splits a PEM bundle into its certificates.
fn pem_certificates(bundle: &[u8]) -> Result<Vec<Certificate>, OciError> {
    const END: &str = "-----END CERTIFICATE-----";
    let text = std::str::from_utf8(bundle)
        .map_err(|_| OciError::Io("the registry CA bundle is not PEM text".into()))?;
    let mut certs = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let Some(end) = rest[start..].find(END) else {
            break;
        };
        let end = start + end + END.len();
        certs.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data: rest.as_bytes()[start..end].to_vec(),
        });
        rest = &rest[end..];
    }
    if certs.is_empty() {
        return Err(OciError::Io(
            "the registry CA bundle holds no PEM certificate".into(),
        ));
    }
    Ok(certs)
}

impl RegistryOptions {
    /// Checks the options without reaching any registry (a CA bundle that
    /// holds no certificate is refused at startup, not at the first pull).
    pub fn check(&self) -> Result<(), OciError> {
        if let Some(pem) = &self.extra_ca_pem {
            pem_certificates(pem)?;
        }
        Ok(())
    }

    /// A client for `registry`. Each pull gets its own: oci-client keeps
    /// one set of credentials per registry for a client's lifetime, and
    /// pods of different namespaces must never borrow each other's.
    pub fn client(&self, registry: &str) -> Result<oci_client::Client, OciError> {
        // reqwest is built without a bundled crypto provider; the process
        // uses ring everywhere (an Err means one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let protocol = if self.plain_http || is_loopback_registry(registry) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let extra_root_certificates = match &self.extra_ca_pem {
            Some(pem) => pem_certificates(pem)?,
            None => Vec::new(),
        };
        let config = ClientConfig {
            protocol,
            extra_root_certificates,
            // A registry that stops answering fails the pull (and is retried
            // with back-off) instead of holding a pull slot forever.
            connect_timeout: Some(Duration::from_secs(15)),
            read_timeout: Some(Duration::from_secs(60)),
            platform_resolver: None,
            user_agent: concat!("wasmkube/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        oci_client::Client::try_from(config)
            .map_err(|e| OciError::Io(format!("setting up the registry client: {e}")))
    }
}

/// `ImageRef` → oci-client's `Reference` (the image must name a registry).
pub fn reference_of(image: &ImageRef) -> Result<Reference, OciError> {
    let Some(registry) = image.registry.clone() else {
        return Err(OciError::Registry(format!(
            "{image} names no registry host"
        )));
    };
    Ok(match &image.reference {
        ImageReference::Tag(t) => {
            Reference::with_tag(registry, image.repository.clone(), t.clone())
        }
        ImageReference::Digest(d) => {
            Reference::with_digest(registry, image.repository.clone(), d.clone())
        }
    })
}

/// distribution's spelling of an error code: `MANIFEST_UNKNOWN` → `manifest unknown`.
fn error_code_text(code: &oci_client::errors::OciErrorCode) -> String {
    match serde_json::to_value(code) {
        Ok(serde_json::Value::String(s)) => s.to_ascii_lowercase().replace('_', " "),
        _ => "error".to_string(),
    }
}

/// An error and its causes on one line (reqwest hides "connection refused"
/// two levels down).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Keeps a registry's free-text answer to one reasonable line.
fn shorten(s: &str) -> String {
    let line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 300 {
        let cut: String = line.chars().take(300).collect();
        format!("{cut}…")
    } else {
        line
    }
}

/// What a 401 means for the user, and what to do about it.
fn unauthorized(registry: &str, auth: &RegistryAuth, op: RegistryOperation) -> OciError {
    let hint = match (auth, op) {
        (RegistryAuth::Anonymous, RegistryOperation::Pull) => format!(
            "no credentials for {registry}; reference a docker-registry Secret in imagePullSecrets"
        ),
        (RegistryAuth::Anonymous, RegistryOperation::Push) => format!(
            "no credentials for {registry}; pass --username and --password, or docker login"
        ),
        _ => format!("the credentials for {registry} were refused"),
    };
    OciError::Unauthorized(format!("unauthorized: authentication required ({hint})"))
}

/// Turns an oci-client error into what the user should read.
fn describe(
    e: OciDistributionError,
    registry: &str,
    auth: &RegistryAuth,
    op: RegistryOperation,
) -> OciError {
    match e {
        OciDistributionError::RegistryError { envelope, .. } => {
            let parts: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| {
                    let code = error_code_text(&e.code);
                    if e.message.is_empty() {
                        code
                    } else {
                        format!("{code}: {}", e.message)
                    }
                })
                .collect();
            let text = if parts.is_empty() {
                "the registry answered an empty error".to_string()
            } else {
                parts.join("; ")
            };
            if envelope
                .errors
                .iter()
                .any(|e| error_code_text(&e.code) == "denied")
            {
                OciError::Unauthorized(text)
            } else {
                OciError::Registry(text)
            }
        }
        // oci-client drops the body of a 401; distribution's is always
        // `UNAUTHORIZED: authentication required`, said here with what to fix.
        OciDistributionError::UnauthorizedError { .. } => unauthorized(registry, auth, op),
        // Some calls (blob_exists) hand back reqwest's status error instead.
        OciDistributionError::RequestError(e) if e.status().map(|s| s.as_u16()) == Some(401) => {
            unauthorized(registry, auth, op)
        }
        OciDistributionError::RequestError(e) if e.status().map(|s| s.as_u16()) == Some(403) => {
            OciError::Unauthorized(format!(
                "denied: {registry} refused access to the repository"
            ))
        }
        OciDistributionError::AuthenticationFailure(reason) => OciError::Unauthorized(format!(
            "authentication with {registry} failed: {}",
            shorten(&reason)
        )),
        OciDistributionError::ServerError { code, message, .. } => {
            let message = shorten(&message);
            if message.is_empty() {
                OciError::Registry(format!("the registry answered HTTP {code}"))
            } else {
                OciError::Registry(format!("the registry answered HTTP {code}: {message}"))
            }
        }
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            OciError::DigestMismatch(format!(
                "digest mismatch: expected {expected}, the registry sent content hashing to {actual}"
            ))
        }
        OciDistributionError::RequestError(e) => {
            OciError::Registry(format!("reaching {registry}: {}", error_chain(&e)))
        }
        other => OciError::Registry(error_chain(&other)),
    }
}

/// The wasm layer of a resolved reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmArtifact {
    /// Digest of the image manifest holding the module (for an index, the
    /// chosen entry's).
    pub manifest_digest: String,
    /// Digest of what the reference named: the manifest, or the index.
    pub reference_digest: String,
    /// `sha256:…` of the module bytes.
    pub layer_digest: String,
    /// Size of the module as the manifest declares it.
    pub size: u64,
    /// The layer's media type.
    pub media_type: String,
}

/// Whether a layer media type is a wasm module.
pub fn is_wasm_layer(media_type: &str) -> bool {
    media_type == WASM_LAYER_MEDIA_TYPE || LEGACY_WASM_LAYER_MEDIA_TYPES.contains(&media_type)
}

/// The one wasm layer of an image manifest.
pub fn wasm_layer(manifest: &OciImageManifest) -> Result<&OciDescriptor, OciError> {
    let wasm: Vec<&OciDescriptor> = manifest
        .layers
        .iter()
        .filter(|l| is_wasm_layer(&l.media_type))
        .collect();
    match wasm.as_slice() {
        [one] => Ok(one),
        [] => {
            let types: Vec<&str> = manifest
                .layers
                .iter()
                .map(|l| l.media_type.as_str())
                .collect();
            Err(OciError::NotWasm(format!(
                "not a wasm module: no {WASM_LAYER_MEDIA_TYPE} layer (config {}, layers [{}])",
                manifest.config.media_type,
                types.join(", ")
            )))
        }
        many => Err(OciError::NotWasm(format!(
            "the artifact has {} wasm layers; a container runs exactly one module",
            many.len()
        ))),
    }
}

/// Which entry of an image index this node runs: `wasip1` first (what the
/// sandbox executes), then `wasi`, then any other entry for the `wasm`
/// architecture. `None` when the index has no wasm entry.
pub fn choose_wasm_entry(entries: &[ImageIndexEntry]) -> Option<&ImageIndexEntry> {
    let rank = |e: &ImageIndexEntry| -> Option<u8> {
        let p = e.platform.as_ref()?;
        let os = p.os.to_string();
        let arch = p.architecture.to_string();
        let wasm_arch = arch == "wasm" || arch == "wasm32";
        match os.as_str() {
            "wasip1" => Some(0),
            "wasi" => Some(1),
            "wasip2" => Some(3),
            _ if wasm_arch => Some(2),
            _ => None,
        }
    };
    entries
        .iter()
        .filter_map(|e| rank(e).map(|r| (r, e)))
        .min_by_key(|(r, _)| *r)
        .map(|(_, e)| e)
}

fn declared_size(d: &OciDescriptor) -> Result<u64, OciError> {
    let size = u64::try_from(d.size)
        .map_err(|_| OciError::NotWasm(format!("layer {} has a negative size", d.digest)))?;
    if size > MAX_MODULE_BYTES as u64 {
        return Err(OciError::TooLarge(format!(
            "module {} is {size} bytes, larger than the {MAX_MODULE_BYTES} bytes a module may be",
            d.digest
        )));
    }
    Ok(size)
}

/// One pull from one registry with one set of credentials.
#[derive(Clone)]
pub struct Puller {
    client: oci_client::Client,
    reference: Reference,
    registry: String,
    auth: RegistryAuth,
}

impl Puller {
    /// A puller of `image` (which names a registry) with `auth`.
    pub fn new(
        options: &RegistryOptions,
        image: &ImageRef,
        auth: RegistryAuth,
    ) -> Result<Puller, OciError> {
        let reference = reference_of(image)?;
        let registry = reference.registry().to_string();
        Ok(Puller {
            client: options.client(&registry)?,
            reference,
            registry,
            auth,
        })
    }

    fn describe(&self, e: OciDistributionError) -> OciError {
        describe(e, &self.registry, &self.auth, RegistryOperation::Pull)
    }

    async fn manifest(&self, reference: &Reference) -> Result<(OciManifest, String), OciError> {
        let (body, digest) = self
            .client
            .pull_manifest_raw(reference, &self.auth, &MANIFEST_MEDIA_TYPES)
            .await
            .map_err(|e| self.describe(e))?;
        // oci-client checks a pinned digest (of any algorithm) already;
        // sha256 is checked again here because running the wrong bytes is
        // the one thing a pull must not do.
        if let Some(pinned) = reference.digest().filter(|d| d.starts_with("sha256:")) {
            let got = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
            if got != pinned {
                return Err(OciError::DigestMismatch(format!(
                    "digest mismatch: the manifest of {reference} hashes to {got}"
                )));
            }
        }
        let manifest: OciManifest = serde_json::from_slice(&body).map_err(|e| {
            OciError::NotWasm(format!("the manifest of {reference} does not parse: {e}"))
        })?;
        Ok((manifest, digest))
    }

    /// Resolves the reference to its wasm layer (following an image index
    /// to its wasm entry).
    pub async fn resolve(&self) -> Result<WasmArtifact, OciError> {
        let (manifest, reference_digest) = self.manifest(&self.reference).await?;
        let (image, manifest_digest) = match manifest {
            OciManifest::Image(m) => (m, reference_digest.clone()),
            OciManifest::ImageIndex(index) => {
                let Some(entry) = choose_wasm_entry(&index.manifests) else {
                    let platforms: Vec<String> = index
                        .manifests
                        .iter()
                        .filter_map(|e| e.platform.as_ref())
                        .map(|p| format!("{}/{}", p.os, p.architecture))
                        .collect();
                    return Err(OciError::NotWasm(format!(
                        "the image index has no wasm entry (platforms: {})",
                        if platforms.is_empty() {
                            "none".to_string()
                        } else {
                            platforms.join(", ")
                        }
                    )));
                };
                let child = self.reference.clone_with_digest(entry.digest.clone());
                match self.manifest(&child).await? {
                    (OciManifest::Image(m), d) => (m, d),
                    (OciManifest::ImageIndex(_), _) => {
                        return Err(OciError::NotWasm(format!(
                            "the wasm entry {} of the image index is another index",
                            entry.digest
                        )));
                    }
                }
            }
        };
        let layer = wasm_layer(&image)?;
        if !wasmkube_api::wasm::is_valid_digest(&layer.digest) {
            return Err(OciError::NotWasm(format!(
                "the wasm layer has digest {:?}; only sha256 is supported",
                layer.digest
            )));
        }
        Ok(WasmArtifact {
            manifest_digest,
            reference_digest,
            layer_digest: layer.digest.clone(),
            size: declared_size(layer)?,
            media_type: layer.media_type.clone(),
        })
    }

    /// Streams the module of `artifact` into `out`, hashing it on the way;
    /// returns its size. Fails on a digest or size mismatch (`out` then
    /// holds garbage the caller discards).
    pub async fn fetch_module<W: AsyncWrite + Unpin>(
        &self,
        artifact: &WasmArtifact,
        out: &mut W,
    ) -> Result<u64, OciError> {
        let descriptor = OciDescriptor {
            media_type: artifact.media_type.clone(),
            digest: artifact.layer_digest.clone(),
            size: i64::try_from(artifact.size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        let mut stream = self
            .client
            .pull_blob_stream(&self.reference, &descriptor)
            .await
            .map_err(|e| self.describe(e))?;
        if let Some(len) = stream.content_length
            && len > MAX_MODULE_BYTES as u64
        {
            return Err(OciError::TooLarge(format!(
                "the registry sends {len} bytes for {}, larger than the {MAX_MODULE_BYTES} bytes a module may be",
                artifact.layer_digest
            )));
        }
        let mismatch = |actual: &str| {
            OciError::DigestMismatch(format!(
                "digest mismatch: layer {} of {} arrived as content hashing to {actual}; the registry's copy is corrupt or was tampered with",
                artifact.layer_digest, self.reference
            ))
        };
        let io = |e: std::io::Error| OciError::Io(format!("writing the module: {e}"));
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    // oci-client verifies the stream too and reports a
                    // mismatch as the stream's last error.
                    if let Some(DigestError::VerificationError { actual, .. }) = e
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<DigestError>())
                    {
                        return Err(mismatch(actual));
                    }
                    return Err(OciError::Registry(format!(
                        "downloading {}: {}",
                        artifact.layer_digest,
                        error_chain(&e)
                    )));
                }
            };
            size += chunk.len() as u64;
            if size > MAX_MODULE_BYTES as u64 {
                return Err(OciError::TooLarge(format!(
                    "module {} is larger than the {MAX_MODULE_BYTES} bytes a module may be",
                    artifact.layer_digest
                )));
            }
            hasher.update(&chunk);
            out.write_all(&chunk).await.map_err(io)?;
        }
        out.flush().await.map_err(io)?;
        let got = format!("sha256:{}", hex::encode(hasher.finalize()));
        if got != artifact.layer_digest {
            return Err(mismatch(&got));
        }
        if size != artifact.size {
            return Err(OciError::Registry(format!(
                "layer {} is {size} bytes but its manifest says {}",
                artifact.layer_digest, artifact.size
            )));
        }
        Ok(size)
    }
}

/// What a push stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// Digest of the manifest (what `image@sha256:…` pins).
    pub manifest_digest: String,
    /// Digest of the module bytes.
    pub module_digest: String,
    /// Size of the module.
    pub size: u64,
}

/// The config blob of the wasm OCI artifact layout.
fn wasm_config(module_digest: &str, created: jiff::Timestamp) -> Vec<u8> {
    let config = serde_json::json!({
        "created": created.to_string(),
        "architecture": "wasm",
        "os": wasmkube_api::wasm::NODE_OS,
        "layerDigests": [module_digest],
    });
    config.to_string().into_bytes()
}

/// The image manifest of a module and its config.
fn wasm_manifest(module_digest: &str, size: u64, config: &[u8]) -> Vec<u8> {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_IMAGE_MEDIA_TYPE,
        "config": {
            "mediaType": WASM_CONFIG_MEDIA_TYPE,
            "digest": format!("sha256:{}", hex::encode(Sha256::digest(config))),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": WASM_LAYER_MEDIA_TYPE,
            "digest": module_digest,
            "size": size,
        }],
    });
    manifest.to_string().into_bytes()
}

/// Pushes `module` to the registry of `image` (which must carry a tag) as a
/// wasm OCI artifact. `progress` is told how many module bytes the registry
/// has taken so far.
pub async fn push_module(
    options: &RegistryOptions,
    image: &ImageRef,
    auth: RegistryAuth,
    module: bytes::Bytes,
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> Result<Pushed, OciError> {
    if image.tag().is_none() {
        return Err(OciError::Registry(format!(
            "{image}: push needs a tag, e.g. {}/{}:v1",
            image.registry.as_deref().unwrap_or_default(),
            image.repository
        )));
    }
    if module.len() > MAX_MODULE_BYTES {
        return Err(OciError::TooLarge(format!(
            "the module is {} bytes, larger than the {MAX_MODULE_BYTES} bytes a module may be",
            module.len()
        )));
    }
    let reference = reference_of(image)?;
    let registry = reference.registry().to_string();
    let client = options.client(&registry)?;
    let err = |e| describe(e, &registry, &auth, RegistryOperation::Push);
    client
        .auth(&reference, &auth, RegistryOperation::Push)
        .await
        .map_err(err)?;

    let size = module.len() as u64;
    let module_digest = format!("sha256:{}", hex::encode(Sha256::digest(&module)));
    let present = client
        .blob_exists(&reference, &module_digest)
        .await
        .map_err(err)?;
    if present {
        progress(size);
    } else {
        // Chunks are handed over one at a time as the previous one was
        // accepted, so counting them as they are taken is the progress.
        let progress = Arc::new(progress);
        let report = progress.clone();
        let chunks: Vec<bytes::Bytes> = (0..module.len())
            .step_by(PUSH_CHUNK)
            .map(|at| module.slice(at..(at + PUSH_CHUNK).min(module.len())))
            .collect();
        let mut sent: u64 = 0;
        let stream = futures::stream::iter(chunks).map(move |c| {
            report(sent);
            sent += c.len() as u64;
            Ok(c)
        });
        client
            .push_blob_stream(&reference, stream, &module_digest, Some(size))
            .await
            .map_err(err)?;
        progress(size);
    }

    let config = wasm_config(&module_digest, jiff::Timestamp::now());
    let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
    client
        .push_blob(&reference, config.clone(), &config_digest)
        .await
        .map_err(err)?;
    let manifest = wasm_manifest(&module_digest, size, &config);
    let manifest_digest = format!("sha256:{}", hex::encode(Sha256::digest(&manifest)));
    let content_type = http::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE);
    client
        .push_manifest_raw(&reference, manifest, content_type)
        .await
        .map_err(err)?;
    Ok(Pushed {
        manifest_digest,
        module_digest,
        size,
    })
}

/// Credentials for registries, from docker config files, looked up by
/// registry host like the kubelet's keyring: the most specific matching
/// entry first.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    entries: Vec<KeyringEntry>,
}

#[derive(Debug, Clone)]
struct KeyringEntry {
    /// Lower-case host (labels may be `*`), without port.
    host: String,
    port: Option<String>,
    /// Path prefix the entry is limited to (`""`: the whole registry).
    path: String,
    auth: RegistryAuth,
}

/// One `auths` entry of a docker config.
#[derive(serde::Deserialize, Default)]
struct DockerConfigEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

#[derive(serde::Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, DockerConfigEntry>,
}

/// Docker Hub's many spellings, as one.
fn canonical_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

/// Splits a keyring key (`https://host:5000/v1/`, `host/team`, `*.host`)
/// into host, port and path.
fn parse_key(key: &str) -> Option<(String, Option<String>, String)> {
    let key = key.trim();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (authority, path) = match key.split_once('/') {
        Some((a, p)) => (a, p),
        None => (key, ""),
    };
    if authority.is_empty() {
        return None;
    }
    // Docker's API version in a key is not a repository path.
    let path = path.trim_matches('/');
    let path = if path == "v1" || path == "v2" {
        ""
    } else {
        path
    };
    let (host, port) = if authority.starts_with('[') {
        (authority.to_string(), None)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() => {
                (h.to_string(), Some(p.to_string()))
            }
            _ => (authority.to_string(), None),
        }
    };
    Some((canonical_host(&host), port, path.to_string()))
}

fn entry_auth(key: &str, e: &DockerConfigEntry) -> Result<Option<RegistryAuth>, OciError> {
    if let Some(token) = e.registrytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Some(RegistryAuth::Bearer(token.to_string())));
    }
    if let Some(auth) = e.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| OciError::BadCredentials(format!("the auth of {key:?} is not base64")))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| OciError::BadCredentials(format!("the auth of {key:?} is not UTF-8")))?;
        let Some((user, pass)) = text.split_once(':') else {
            return Err(OciError::BadCredentials(format!(
                "the auth of {key:?} is not username:password"
            )));
        };
        return Ok(Some(RegistryAuth::Basic(
            user.to_string(),
            pass.to_string(),
        )));
    }
    match (&e.username, &e.password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some(RegistryAuth::Basic(u.clone(), p.clone()))),
        _ => Ok(None),
    }
}

/// Whether `pattern` (labels may be `*`, or start or end with `*`) matches `host`.
fn host_matches(pattern: &str, host: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let h: Vec<&str> = host.split('.').collect();
    p.len() == h.len()
        && p.iter().zip(&h).all(|(p, h)| {
            if *p == "*" {
                true
            } else if let Some(suffix) = p.strip_prefix('*') {
                h.ends_with(suffix)
            } else if let Some(prefix) = p.strip_suffix('*') {
                h.starts_with(prefix)
            } else {
                p == h
            }
        })
}

impl Keyring {
    /// The credentials of a pull Secret's data: `.dockerconfigjson`
    /// (`kubernetes.io/dockerconfigjson`) or `.dockercfg`
    /// (`kubernetes.io/dockercfg`). Other Secrets hold no credentials.
    pub fn from_secret(data: &BTreeMap<String, Vec<u8>>) -> Result<Keyring, OciError> {
        let mut keyring = Keyring::default();
        if let Some(json) = data.get(".dockerconfigjson") {
            keyring.add_config_json(json)?;
        } else if let Some(cfg) = data.get(".dockercfg") {
            keyring.add_dockercfg(cfg)?;
        }
        Ok(keyring)
    }

    /// Adds the `auths` of a docker `config.json`.
    pub fn add_config_json(&mut self, json: &[u8]) -> Result<(), OciError> {
        let config: DockerConfigJson = serde_json::from_slice(json)
            .map_err(|e| OciError::BadCredentials(format!("not a docker config.json: {e}")))?;
        self.add_entries(config.auths)
    }

    /// Adds a legacy `.dockercfg` (the `auths` map without its wrapper).
    pub fn add_dockercfg(&mut self, json: &[u8]) -> Result<(), OciError> {
        let entries: BTreeMap<String, DockerConfigEntry> = serde_json::from_slice(json)
            .map_err(|e| OciError::BadCredentials(format!("not a .dockercfg: {e}")))?;
        self.add_entries(entries)
    }

    fn add_entries(
        &mut self,
        entries: BTreeMap<String, DockerConfigEntry>,
    ) -> Result<(), OciError> {
        for (key, entry) in entries {
            let Some((host, port, path)) = parse_key(&key) else {
                continue;
            };
            if let Some(auth) = entry_auth(&key, &entry)? {
                self.entries.push(KeyringEntry {
                    host,
                    port,
                    path,
                    auth,
                });
            }
        }
        Ok(())
    }

    /// Adds another keyring's entries after this one's.
    pub fn extend(&mut self, other: Keyring) {
        self.entries.extend(other.entries);
    }

    /// Adds one credential for `registry` (`host[:port]`).
    pub fn insert(&mut self, registry: &str, auth: RegistryAuth) {
        if let Some((host, port, path)) = parse_key(registry) {
            self.entries.push(KeyringEntry {
                host,
                port,
                path,
                auth,
            });
        }
    }

    /// True when there are no credentials at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The credentials to try for `repository` on `registry`, the most
    /// specific entry first; without any, the pull is anonymous.
    pub fn lookup(&self, registry: &str, repository: &str) -> Vec<RegistryAuth> {
        let Some((host, port, _)) = parse_key(registry) else {
            return Vec::new();
        };
        let mut found: Vec<&KeyringEntry> = self
            .entries
            .iter()
            .filter(|e| {
                host_matches(&e.host, &host)
                    && e.port == port
                    && (e.path.is_empty()
                        || repository == e.path
                        || repository.starts_with(&format!("{}/", e.path)))
            })
            .collect();
        // Longest (most specific) key first; the sort is stable, so equal
        // keys keep the order the Secrets were listed in.
        found.sort_by_key(|e| std::cmp::Reverse(e.host.len() + e.path.len()));
        let mut out: Vec<RegistryAuth> = Vec::new();
        for e in found {
            if !out.contains(&e.auth) {
                out.push(e.auth.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::manifest::Platform;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn loopback_registries_are_recognised() {
        for r in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.3.2.1",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_loopback_registry(r), "{r}");
        }
        for r in [
            "ghcr.io",
            "10.0.0.1:5000",
            "registry.example.com:443",
            "localhost.example.com",
            "[2001:db8::1]:5000",
        ] {
            assert!(!is_loopback_registry(r), "{r}");
        }
    }

    #[test]
    fn dockerconfigjson_secrets_match_by_host_and_port() -> anyhow::Result<()> {
        let json = serde_json::json!({"auths": {
            "127.0.0.1:5000": {"auth": b64("alice:pw1")},
            "https://registry.example.com/v1/": {"username": "bob", "password": "pw2"},
            "registry.example.com/team": {"auth": b64("carol:pw3")},
            "*.corp.example": {"registrytoken": "tok"},
            "https://index.docker.io/v1/": {"auth": b64("dave:pw4")},
        }});
        let data = BTreeMap::from([(
            ".dockerconfigjson".to_string(),
            json.to_string().into_bytes(),
        )]);
        let k = Keyring::from_secret(&data)?;
        assert_eq!(
            k.lookup("127.0.0.1:5000", "hello"),
            [RegistryAuth::Basic("alice".into(), "pw1".into())]
        );
        assert!(
            k.lookup("127.0.0.1:5001", "hello").is_empty(),
            "ports must match"
        );
        assert_eq!(
            k.lookup("registry.example.com", "team/app"),
            [
                RegistryAuth::Basic("carol".into(), "pw3".into()),
                RegistryAuth::Basic("bob".into(), "pw2".into()),
            ],
            "the path-limited entry is more specific"
        );
        assert_eq!(
            k.lookup("registry.example.com", "other/app"),
            [RegistryAuth::Basic("bob".into(), "pw2".into())]
        );
        assert_eq!(
            k.lookup("r.corp.example", "x"),
            [RegistryAuth::Bearer("tok".into())]
        );
        assert!(
            k.lookup("a.b.corp.example", "x").is_empty(),
            "* is one label"
        );
        assert_eq!(
            k.lookup("docker.io", "library/x"),
            [RegistryAuth::Basic("dave".into(), "pw4".into())]
        );
        Ok(())
    }

    #[test]
    fn legacy_dockercfg_and_unrelated_secrets() -> anyhow::Result<()> {
        let cfg =
            serde_json::json!({"localhost:5000": {"auth": b64("u:p:with:colons"), "email": "x@y"}});
        let data = BTreeMap::from([(".dockercfg".to_string(), cfg.to_string().into_bytes())]);
        let k = Keyring::from_secret(&data)?;
        assert_eq!(
            k.lookup("localhost:5000", "a"),
            [RegistryAuth::Basic("u".into(), "p:with:colons".into())]
        );
        let opaque = BTreeMap::from([("password".to_string(), b"x".to_vec())]);
        assert!(Keyring::from_secret(&opaque)?.is_empty());
        let broken = BTreeMap::from([(".dockerconfigjson".to_string(), b"{".to_vec())]);
        assert!(matches!(
            Keyring::from_secret(&broken),
            Err(OciError::BadCredentials(_))
        ));
        let bad_auth = serde_json::json!({"auths": {"h:1": {"auth": "%%%"}}});
        let data = BTreeMap::from([(
            ".dockerconfigjson".to_string(),
            bad_auth.to_string().into_bytes(),
        )]);
        assert!(Keyring::from_secret(&data).is_err());
        Ok(())
    }

    fn layer(media_type: &str) -> OciDescriptor {
        OciDescriptor {
            media_type: media_type.into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
            size: 10,
            ..OciDescriptor::default()
        }
    }

    #[test]
    fn the_one_wasm_layer_is_chosen() {
        let mut m = OciImageManifest {
            layers: vec![layer(WASM_LAYER_MEDIA_TYPE)],
            ..OciImageManifest::default()
        };
        assert!(wasm_layer(&m).is_ok());
        for legacy in LEGACY_WASM_LAYER_MEDIA_TYPES {
            m.layers = vec![layer("application/vnd.example.readme"), layer(legacy)];
            assert_eq!(
                wasm_layer(&m).map(|l| l.media_type.as_str()).ok(),
                Some(legacy)
            );
        }
        m.layers = vec![layer("application/vnd.oci.image.layer.v1.tar+gzip")];
        let e = wasm_layer(&m)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("not a wasm module") && e.contains("tar+gzip"),
            "{e}"
        );
        m.layers = vec![layer(WASM_LAYER_MEDIA_TYPE), layer(WASM_LAYER_MEDIA_TYPE)];
        assert!(matches!(wasm_layer(&m), Err(OciError::NotWasm(_))));
    }

    fn entry(os: &str, arch: &str, digest: &str) -> ImageIndexEntry {
        ImageIndexEntry {
            media_type: OCI_IMAGE_MEDIA_TYPE.into(),
            digest: digest.into(),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: os.into(),
                os_version: None,
                os_features: None,
                variant: None,
                features: None,
            }),
            annotations: None,
            artifact_type: None,
        }
    }

    #[test]
    fn index_entries_for_wasi_are_preferred() {
        let entries = vec![
            entry("linux", "amd64", "linux"),
            entry("wasip2", "wasm", "p2"),
            entry("wasip1", "wasm", "p1"),
        ];
        assert_eq!(
            choose_wasm_entry(&entries).map(|e| e.digest.as_str()),
            Some("p1")
        );
        let entries = vec![
            entry("linux", "amd64", "linux"),
            entry("wasi", "wasm32", "w"),
        ];
        assert_eq!(
            choose_wasm_entry(&entries).map(|e| e.digest.as_str()),
            Some("w")
        );
        let entries = vec![entry("unknown", "wasm", "arch-only")];
        assert_eq!(
            choose_wasm_entry(&entries).map(|e| e.digest.as_str()),
            Some("arch-only")
        );
        assert!(choose_wasm_entry(&[entry("linux", "arm64", "x")]).is_none());
    }

    #[test]
    fn registry_errors_read_like_distribution_s() -> anyhow::Result<()> {
        let envelope: oci_client::errors::OciEnvelope = serde_json::from_str(
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"v9"}}]}"#,
        )?;
        let e = describe(
            OciDistributionError::RegistryError {
                envelope,
                url: "u".into(),
            },
            "r:1",
            &RegistryAuth::Anonymous,
            RegistryOperation::Pull,
        );
        assert_eq!(
            e,
            OciError::Registry("manifest unknown: manifest unknown".into())
        );
        let e = describe(
            OciDistributionError::UnauthorizedError { url: "u".into() },
            "r:1",
            &RegistryAuth::Anonymous,
            RegistryOperation::Pull,
        );
        assert!(
            e.to_string()
                .starts_with("unauthorized: authentication required"),
            "{e}"
        );
        assert!(e.to_string().contains("imagePullSecrets"), "{e}");
        Ok(())
    }

    #[test]
    fn pushed_manifests_follow_the_wasm_artifact_layout() -> anyhow::Result<()> {
        let digest = format!("sha256:{}", "cd".repeat(32));
        let config = wasm_config(&digest, jiff::Timestamp::UNIX_EPOCH);
        let manifest: OciManifest = serde_json::from_slice(&wasm_manifest(&digest, 42, &config))?;
        let OciManifest::Image(m) = manifest else {
            anyhow::bail!("not an image manifest");
        };
        assert_eq!(m.config.media_type, WASM_CONFIG_MEDIA_TYPE);
        let layer = wasm_layer(&m)?;
        assert_eq!(layer.digest, digest);
        assert_eq!(layer.size, 42);
        let config: serde_json::Value = serde_json::from_slice(&config)?;
        assert_eq!(config["architecture"], "wasm");
        assert_eq!(config["layerDigests"][0], digest.as_str());
        Ok(())
    }

    #[test]
    fn ca_bundles_split_into_certificates() {
        let one = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let bundle = format!("# comment\n{one}{one}");
        assert_eq!(pem_certificates(bundle.as_bytes()).map(|c| c.len()), Ok(2));
        assert!(pem_certificates(b"nothing").is_err());
    }
}
