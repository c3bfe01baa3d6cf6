//! The cluster's certificates: a CA made on first start and a serving
//! certificate signed by it. Both live under `<data>/pki`; keys are written
//! with mode 0600. Later starts reuse the CA (clients keep trusting it) and
//! re-issue the serving certificate only when its names changed or it is
//! close to expiry.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use serde::{Deserialize, Serialize};

const CA_COMMON_NAME: &str = "wasmkube-ca";
const ORGANIZATION: &str = "wasmkube";
const CA_VALID_YEARS: i16 = 10;
const SERVING_VALID_DAYS: i64 = 365;
/// Re-issue the serving certificate when less than this is left.
const RENEW_BEFORE_DAYS: i64 = 30;

/// PKI errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The PEM files the server runs with.
#[derive(Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: String,
    /// The CA's private key: it signs node client certificates at join.
    pub ca_key_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Private keys never reach logs.
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// What the serving certificate was issued for (kept beside it, so we can
/// tell whether it must be re-issued without parsing X.509).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ServingMeta {
    sans: Vec<String>,
    not_after: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Create or reuse the CA and the serving certificate in `dir` for `sans`.
/// Blocking (file I/O and key generation): call it from `spawn_blocking`.
pub fn ensure(dir: &Path, sans: &[String]) -> Result<Pki, Error> {
    create_private_dir(dir)?;
    let ca_crt = dir.join("ca.crt");
    let ca_key_path = dir.join("ca.key");
    let (ca_pem, ca_key) = if ca_crt.exists() && ca_key_path.exists() {
        let pem = fs::read_to_string(&ca_crt).map_err(io_err(&ca_crt))?;
        let key_pem = fs::read_to_string(&ca_key_path).map_err(io_err(&ca_key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| Error::Invalid {
            path: ca_key_path.clone(),
            message: e.to_string(),
        })?;
        (pem, key)
    } else {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = ca_params(CA_VALID_YEARS)?.self_signed(&key)?;
        write_file(&ca_key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&ca_crt, cert.pem().as_bytes(), 0o644)?;
        // A new CA invalidates any serving certificate signed by an old one.
        let _ = fs::remove_file(dir.join("server.json"));
        (cert.pem(), key)
    };

    let ca_key_pem = ca_key.serialize_pem();
    let mut wanted: Vec<String> = sans.to_vec();
    wanted.sort();
    wanted.dedup();

    let server_crt = dir.join("server.crt");
    let server_key = dir.join("server.key");
    let meta_path = dir.join("server.json");
    if let Some(meta) = read_meta(&meta_path)
        && meta.sans == wanted
        && !expires_soon(&meta.not_after)
        && server_crt.exists()
        && server_key.exists()
    {
        return Ok(Pki {
            dir: dir.to_path_buf(),
            ca_pem,
            ca_key_pem,
            server_cert_pem: fs::read_to_string(&server_crt).map_err(io_err(&server_crt))?,
            server_key_pem: fs::read_to_string(&server_key).map_err(io_err(&server_key))?,
        });
    }

    let issuer = Issuer::new(ca_params(CA_VALID_YEARS)?, ca_key);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(wanted.clone())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "wasmkube-apiserver");
    dn.push(DnType::OrganizationName, ORGANIZATION);
    params.distinguished_name = dn;
    let now = jiff::Timestamp::now();
    let not_after = now + jiff::SignedDuration::from_hours(24 * SERVING_VALID_DAYS);
    params.not_before = {
        let (y, mo, d) = ymd(now - jiff::SignedDuration::from_hours(1));
        rcgen::date_time_ymd(y, mo, d)
    };
    params.not_after = {
        let (y, mo, d) = ymd(not_after);
        rcgen::date_time_ymd(y, mo, d)
    };
    params.serial_number = Some(random_serial());
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer)?;
    let cert_pem = cert.pem();
    let key_pem = key.serialize_pem();
    write_file(&server_key, key_pem.as_bytes(), 0o600)?;
    write_file(&server_crt, cert_pem.as_bytes(), 0o644)?;
    let meta = ServingMeta {
        sans: wanted,
        not_after: not_after.to_string(),
    };
    let meta_json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Invalid {
        path: meta_path.clone(),
        message: e.to_string(),
    })?;
    write_file(&meta_path, &meta_json, 0o644)?;
    Ok(Pki {
        dir: dir.to_path_buf(),
        ca_pem,
        ca_key_pem,
        server_cert_pem: cert_pem,
        server_key_pem: key_pem,
    })
}

/// How long a node client certificate issued at join is valid.
const NODE_CERT_VALID_DAYS: i64 = 365;

/// Why a node certificate could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The request's CSR is unusable: the caller's fault (400).
    #[error("invalid certificate signing request: {0}")]
    BadCsr(String),
    /// The node name cannot name a node (422).
    #[error("invalid node name {name:?}: {message}")]
    BadNodeName { name: String, message: String },
    /// Our CA could not sign: the server's fault (500).
    #[error("signing: {0}")]
    Signing(String),
}

/// The cluster CA with its key: what signs node client certificates.
#[derive(Clone)]
pub struct ClusterCa {
    ca_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// A CA from its certificate and key (PEM); both are checked here, so a
    /// broken pair fails at start rather than at the first join.
    pub fn new(ca_pem: &str, key_pem: &str) -> Result<ClusterCa, Error> {
        let invalid = |message: String| Error::Invalid {
            path: PathBuf::from("ca.crt"),
            message,
        };
        let key = KeyPair::from_pem(key_pem).map_err(|e| invalid(e.to_string()))?;
        Issuer::from_ca_cert_pem(ca_pem, key).map_err(|e| invalid(e.to_string()))?;
        Ok(ClusterCa {
            ca_pem: ca_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    /// The CA of a prepared [`Pki`].
    pub fn from_pki(pki: &Pki) -> Result<ClusterCa, Error> {
        ClusterCa::new(&pki.ca_pem, &pki.ca_key_pem)
    }

    /// The CA certificate (PEM) clients trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Issue a client certificate for node `node_name` for the key of
    /// `csr_pem`: CN `system:node:<node_name>`, O `system:nodes`, EKU
    /// clientAuth, valid [`NODE_CERT_VALID_DAYS`]. Everything the CSR asks
    /// for besides its key (subject, SANs, extensions) is ignored: the
    /// identity is the server's decision, the CSR only proves possession of
    /// the key (its self-signature must verify). Pure CPU work, no I/O.
    pub fn sign_node_client_cert(
        &self,
        csr_pem: &str,
        node_name: &str,
    ) -> Result<String, SignError> {
        if let Err(message) = wasmkube_api::names::is_dns1123_subdomain(node_name) {
            return Err(SignError::BadNodeName {
                name: node_name.to_string(),
                message,
            });
        }
        let public_key = csr_public_key(csr_pem)?;
        let key =
            KeyPair::from_pem(&self.key_pem).map_err(|e| SignError::Signing(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_pem, key)
            .map_err(|e| SignError::Signing(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("{}{node_name}", wasmkube_api::join::NODE_USER_PREFIX),
        );
        dn.push(DnType::OrganizationName, wasmkube_api::join::NODES_GROUP);
        params.distinguished_name = dn;
        let now = jiff::Timestamp::now();
        params.not_before = {
            let (y, mo, d) = ymd(now - jiff::SignedDuration::from_hours(1));
            rcgen::date_time_ymd(y, mo, d)
        };
        params.not_after = {
            let (y, mo, d) = ymd(now + jiff::SignedDuration::from_hours(24 * NODE_CERT_VALID_DAYS));
            rcgen::date_time_ymd(y, mo, d)
        };
        params.serial_number = Some(random_serial());
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&public_key, &issuer)
            .map_err(|e| SignError::Signing(e.to_string()))?;
        Ok(cert.pem())
    }
}

/// The subject public key of a PEM CSR whose self-signature verifies.
fn csr_public_key(csr_pem: &str) -> Result<rcgen::SubjectPublicKeyInfo, SignError> {
    use x509_parser::prelude::FromDer;
    let bad = |m: &str| SignError::BadCsr(m.to_string());
    let der = rustls_pemfile::csr(&mut csr_pem.as_bytes())
        .map_err(|e| SignError::BadCsr(format!("reading PEM: {e}")))?
        .ok_or_else(|| bad("no CERTIFICATE REQUEST block in the PEM"))?;
    let (rest, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
            .map_err(|_| bad("not a PKCS#10 certificate request"))?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes after the certificate request"));
    }
    csr.verify_signature()
        .map_err(|_| bad("the request's signature does not verify with its own key"))?;
    // The SPKI is copied as the CSR states it (algorithm and curve included),
    // rather than inferred from the signature algorithm.
    rcgen::SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
        .map_err(|e| SignError::BadCsr(format!("unsupported public key: {e}")))
}

/// The CA's parameters. Rebuilt identically on every start: the issuer name
/// and key identifier of certificates it signs derive from them and the key.
fn ca_params(years: i16) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, ORGANIZATION);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = jiff::Timestamp::now();
    params.not_before = {
        let (y, mo, d) = ymd(now - jiff::SignedDuration::from_hours(1));
        rcgen::date_time_ymd(y, mo, d)
    };
    let later = now
        .to_zoned(jiff::tz::TimeZone::UTC)
        .checked_add(jiff::Span::new().years(years))
        .map(|z| z.timestamp())
        .unwrap_or(now);
    params.not_after = {
        let (y, mo, d) = ymd(later);
        rcgen::date_time_ymd(y, mo, d)
    };
    params.serial_number = Some(random_serial());
    Ok(params)
}

/// The UTC calendar day of `ts` as rcgen wants it (certificate validity has
/// day granularity here; the hour before "now" covers clock skew).
fn ymd(ts: jiff::Timestamp) -> (i32, u8, u8) {
    let d = ts.to_zoned(jiff::tz::TimeZone::UTC).date();
    (
        i32::from(d.year()),
        d.month().unsigned_abs(),
        d.day().unsigned_abs(),
    )
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    // Serial numbers are positive integers: clear the sign bit.
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn read_meta(path: &Path) -> Option<ServingMeta> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn expires_soon(not_after: &str) -> bool {
    match not_after.parse::<jiff::Timestamp>() {
        Ok(t) => {
            t < jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * RENEW_BEFORE_DAYS)
        }
        Err(_) => true,
    }
}

/// Create `dir` (and parents) readable only by the owner. An existing
/// directory is left as it is: it may be one the user chose and shares.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), Error> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    set_mode(dir, 0o700)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<(), Error> {
    Ok(())
}

/// Write `bytes` to `path` atomically (temp file + rename) with `mode`, so a
/// crash never leaves a half-written key or kubeconfig behind.
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(mode);
        }
        let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    set_mode(&tmp, mode)?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_node_certificates_for_any_supported_key() -> Result<(), Box<dyn std::error::Error>> {
        use x509_parser::prelude::FromDer;
        let dir = tempfile::tempdir()?;
        let pki = ensure(dir.path(), &["localhost".to_string()])?;
        let ca = ClusterCa::from_pki(&pki)?;
        let ca_der = rustls_pemfile::certs(&mut pki.ca_pem.as_bytes())
            .next()
            .ok_or("no CA")??;
        let (_, ca_cert) = x509_parser::certificate::X509Certificate::from_der(ca_der.as_ref())?;
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let key = KeyPair::generate_for(alg)?;
            let csr = CertificateParams::default()
                .serialize_request(&key)?
                .pem()?;
            let pem = ca.sign_node_client_cert(&csr, "edge-1")?;
            let der = rustls_pemfile::certs(&mut pem.as_bytes())
                .next()
                .ok_or("no cert")??;
            let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der.as_ref())?;
            cert.verify_signature(Some(ca_cert.public_key()))?;
            assert_eq!(
                cert.public_key().raw,
                rcgen::PublicKeyData::subject_public_key_info(&key).as_slice(),
                "{alg:?}: the CSR's key, algorithm parameters included"
            );
            assert_eq!(cert.issuer(), ca_cert.subject());
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let csr = CertificateParams::default()
            .serialize_request(&key)?
            .pem()?;
        assert!(matches!(
            ca.sign_node_client_cert(&csr, "a/b"),
            Err(SignError::BadNodeName { .. })
        ));
        assert!(matches!(
            ca.sign_node_client_cert(&pki.server_key_pem, "edge-1"),
            Err(SignError::BadCsr(_))
        ));
        assert!(matches!(
            ca.sign_node_client_cert("", "edge-1"),
            Err(SignError::BadCsr(_))
        ));
        assert!(format!("{pki:?}").find("PRIVATE").is_none());
        Ok(())
    }

    #[test]
    fn reuses_ca_and_reissues_on_new_sans() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = ensure(dir.path(), &sans)?;
        let again = ensure(dir.path(), &sans)?;
        assert_eq!(first.ca_pem, again.ca_pem);
        assert_eq!(first.server_cert_pem, again.server_cert_pem);
        let more = vec!["localhost".to_string(), "example.test".to_string()];
        let changed = ensure(dir.path(), &more)?;
        assert_eq!(first.ca_pem, changed.ca_pem);
        assert_ne!(first.server_cert_pem, changed.server_cert_pem);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in ["ca.key", "server.key"] {
                let mode = fs::metadata(dir.path().join(key))?.permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{key}");
            }
        }
        Ok(())
    }
}
