//! `wasmkube agent`: a node that joins a cluster over the network.
//!
//! The first start trades a join token for the node's own client
//! certificate: the server's CA is fetched without verification and trusted
//! only if its SHA-256 matches the pin in the token (as kubeadm and k3s do),
//! then a fresh key's CSR is sent to `POST /wasmkube/v1/join` over TLS
//! verified with that CA, authenticated by the bootstrap token. The key,
//! certificate, CA and a kubeconfig are kept in `<data>/agent/`, so later
//! starts need neither the token nor the server. The node itself is the same
//! kubelet `wasmkube server` runs (`wasmkube_runtime`), with its files in
//! `<data>/node/`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio_util::sync::CancellationToken;
use wasmkube_api::join::{
    CACERTS_PATH, JOIN_PATH, JoinRequest, JoinResponse, JoinToken, NODE_USER_PREFIX, ca_cert_hash,
    parse_ca_cert_hash,
};

use crate::kubelet_args::KubeletArgs;
use crate::server;

pub const EXAMPLES: &str = "Examples:\n  \
    # on the server: wasmkube token create\n  \
    wasmkube agent --server https://10.0.0.5:6443 --token WK1…::abcdef.0123456789abcdef\n  \
    wasmkube agent --server https://10.0.0.5:6443 --token abcdef.0123456789abcdef \\\n      \
    --ca-cert-hash sha256:… --name edge-1 --data-dir /var/lib/wasmkube-agent\n  \
    # later starts reuse the saved credential (no token, no network needed):\n  \
    wasmkube agent --data-dir /var/lib/wasmkube-agent\n\n\
    Then, with the admin kubeconfig:\n  \
    kubectl get nodes";

/// How long stopping may take before the process exits anyway.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// Bounds on each HTTP exchange of the join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait between attempts to reach a server that is not up yet.
const MAX_JOIN_RETRY: Duration = Duration::from_secs(30);

/// `wasmkube agent` flags.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// URL of the API server, e.g. https://10.0.0.5:6443. Needed to join;
    /// later starts default to the URL they joined.
    #[arg(long, env = "WASMKUBE_SERVER", value_name = "URL")]
    pub server: Option<String>,

    /// The join token printed by `wasmkube token create`
    /// (`WK1<ca-hash>::<id>.<secret>`, or `<id>.<secret>` with
    /// --ca-cert-hash). Only the first start needs it.
    #[arg(
        long,
        env = "WASMKUBE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// The cluster CA's pin (`sha256:<hex>`), for a token given as
    /// `<id>.<secret>`.
    #[arg(long, value_name = "sha256:HEX")]
    pub ca_cert_hash: Option<String>,

    /// Name of this node (default: this machine's hostname, cleaned up).
    #[arg(long, alias = "node-name", value_name = "NAME")]
    pub name: Option<String>,

    /// Directory for the node credential (`agent/`) and the node's modules,
    /// logs, volumes and local state (`node/`) [default: ~/.wasmkube-agent].
    #[arg(long, env = "WASMKUBE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The node's address, where the server and other nodes reach its
    /// kubelet and proxy ports, and where they listen (default: 127.0.0.1
    /// for a server on loopback, else the local address that routes to the
    /// server).
    #[arg(long, value_name = "IP")]
    pub node_ip: Option<IpAddr>,

    #[command(flatten)]
    pub kubelet: KubeletArgs,
}

/// `~/.wasmkube-agent` unless given.
fn data_dir(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = explicit {
        return Ok(d);
    }
    let home = std::env::var_os("HOME")
        .context("HOME is not set; pass --data-dir or set WASMKUBE_DATA_DIR")?;
    Ok(PathBuf::from(home).join(".wasmkube-agent"))
}

/// A server URL checked and normalised (`https://host:port`, no path), and
/// its host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerUrl {
    url: String,
    host: String,
    port: u16,
}

fn parse_server_url(input: &str) -> anyhow::Result<ServerUrl> {
    let hint = "expected https://HOST:PORT, e.g. https://10.0.0.5:6443";
    let uri: http::Uri = input
        .trim()
        .parse()
        .with_context(|| format!("invalid --server {input:?}: {hint}"))?;
    if uri.scheme_str() != Some("https") {
        bail!("invalid --server {input:?}: the API server speaks HTTPS only; {hint}");
    }
    let Some(authority) = uri.authority() else {
        bail!("invalid --server {input:?}: {hint}");
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        bail!("invalid --server {input:?}: no path expected; {hint}");
    }
    if authority.as_str().contains('@') {
        bail!("invalid --server {input:?}: no user info expected; {hint}");
    }
    let port = authority.port_u16().unwrap_or(443);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        bail!("invalid --server {input:?}: {hint}");
    }
    let shown = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    Ok(ServerUrl {
        url: format!("https://{shown}:{port}"),
        host,
        port,
    })
}

/// Is the server on this machine's loopback?
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The node IP to advertise when none is given: loopback for a loopback
/// server, else the local address the kernel would use to reach the server
/// (a UDP "connect" sends nothing; it only picks the route).
async fn default_node_ip(server: &ServerUrl) -> std::io::Result<IpAddr> {
    if is_loopback_host(&server.host) {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let target = tokio::net::lookup_host((server.host.as_str(), server.port))
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{} has no address", server.host)))?;
    local_ip_towards(target)
}

fn local_ip_towards(target: SocketAddr) -> std::io::Result<IpAddr> {
    let any: IpAddr = match target {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = std::net::UdpSocket::bind((any, 0))?;
    socket.connect(target)?;
    Ok(socket.local_addr()?.ip())
}

/// A node's credential: who it is, which server, and how to prove it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// `https://host:port` the node joined.
    pub server: String,
    pub node_name: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key must not reach logs.
        f.debug_struct("Credential")
            .field("server", &self.server)
            .field("node_name", &self.node_name)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

const KEY_FILE: &str = "node.key";
const CERT_FILE: &str = "node.crt";
const CA_FILE: &str = "ca.crt";
const KUBECONFIG_FILE: &str = "kubeconfig";
const CLUSTER_NAME: &str = "wasmkube";

impl Credential {
    /// The user the certificate names (`system:node:<name>`).
    fn user(&self) -> String {
        format!("{NODE_USER_PREFIX}{}", self.node_name)
    }

    /// A kubeconfig for this node against `server`, everything inline so it
    /// works wherever it is copied (`kubectl --kubeconfig`).
    fn kubeconfig(&self, server: &str) -> serde_json::Value {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        let user = self.user();
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": CLUSTER_NAME, "cluster": {
                "server": server,
                "certificate-authority-data": b64(&self.ca_pem),
            }}],
            "users": [{"name": user, "user": {
                "client-certificate-data": b64(&self.cert_pem),
                "client-key-data": b64(&self.key_pem),
            }}],
            "contexts": [{"name": user, "context": {"cluster": CLUSTER_NAME, "user": user}}],
            "current-context": user,
        })
    }

    /// Writes the credential to `dir` as a whole: the files are written to
    /// a sibling directory first and renamed into place, so a crash never
    /// leaves half a credential that later starts would trust.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let staging = parent.join(format!(
            ".{}.partial",
            dir.file_name().and_then(|n| n.to_str()).unwrap_or("agent")
        ));
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .with_context(|| format!("removing {}", staging.display()))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .with_context(|| format!("creating {}", staging.display()))?;
        let kubeconfig = serde_yaml::to_string(&self.kubeconfig(&self.server))
            .context("writing the kubeconfig")?;
        let files = [
            (KEY_FILE, self.key_pem.as_str(), 0o600),
            (CERT_FILE, self.cert_pem.as_str(), 0o644),
            (CA_FILE, self.ca_pem.as_str(), 0o644),
            // It embeds the key.
            (KUBECONFIG_FILE, kubeconfig.as_str(), 0o600),
        ];
        for (name, body, mode) in files {
            let path = staging.join(name);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            file.write_all(body.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("replacing {}", dir.display()))?;
        }
        std::fs::rename(&staging, dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(())
    }

    /// Reads the credential saved in `dir`; `None` when there is none.
    pub fn load(dir: &Path) -> anyhow::Result<Option<Credential>> {
        let kubeconfig_path = dir.join(KUBECONFIG_FILE);
        if !dir.exists() {
            return Ok(None);
        }
        let redo = || {
            format!(
                "the node credential in {} is incomplete or damaged; remove that directory \
                 and join again with a new token (wasmkube token create)",
                dir.display()
            )
        };
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))
                .with_context(redo)
        };
        let kubeconfig: serde_yaml::Value = serde_yaml::from_str(&read(KUBECONFIG_FILE)?)
            .with_context(|| format!("parsing {}", kubeconfig_path.display()))
            .with_context(redo)?;
        let first = |list: &str, field: &str| -> Option<String> {
            kubeconfig
                .get(list)?
                .get(0)?
                .get(field)
                .and_then(serde_yaml::Value::as_str)
                .map(str::to_string)
        };
        let server = kubeconfig
            .get("clusters")
            .and_then(|c| c.get(0))
            .and_then(|c| c.get("cluster"))
            .and_then(|c| c.get("server"))
            .and_then(serde_yaml::Value::as_str)
            .map(str::to_string);
        let node_name = first("users", "name")
            .and_then(|u| u.strip_prefix(NODE_USER_PREFIX).map(str::to_string));
        let (Some(server), Some(node_name)) = (server, node_name) else {
            bail!(redo());
        };
        Ok(Some(Credential {
            server,
            node_name,
            ca_pem: read(CA_FILE)?,
            cert_pem: read(CERT_FILE)?,
            key_pem: read(KEY_FILE)?,
        }))
    }

    /// A client config authenticating with the node's certificate against
    /// `server`, trusting only the cluster CA.
    pub async fn client_config(&self, server: &str) -> anyhow::Result<kube::Config> {
        let kubeconfig: Kubeconfig = serde_json::from_value(self.kubeconfig(server))
            .context("building the node's kubeconfig")?;
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .context("using the node credential")
    }
}

/// The join token and CA pin to use, from `--token` and `--ca-cert-hash`.
fn join_token(token: &str, ca_cert_hash: Option<&str>) -> anyhow::Result<(JoinToken, String)> {
    let token = JoinToken::parse(token).context("invalid --token")?;
    let flag = ca_cert_hash
        .map(parse_ca_cert_hash)
        .transpose()
        .context("invalid --ca-cert-hash")?;
    let pin = match (&token.ca_hash, flag) {
        (Some(in_token), Some(flag)) if *in_token != flag => bail!(
            "--ca-cert-hash sha256:{flag} differs from the CA hash in the token \
             (sha256:{in_token}); drop one of them"
        ),
        (Some(in_token), _) => in_token.clone(),
        (None, Some(flag)) => flag,
        (None, None) => bail!(
            "the token carries no CA hash: pass the whole join string printed by \
             `wasmkube token create` (WK1…::<id>.<secret>), or add --ca-cert-hash sha256:<hex>"
        ),
    };
    Ok((token, pin))
}

/// Why a join attempt failed: worth retrying (the server is not reachable
/// yet), or not (a bad token or pin stays bad).
enum JoinError {
    Unreachable(anyhow::Error),
    Fatal(anyhow::Error),
}

fn unreachable(url: &str) -> impl FnOnce(reqwest::Error) -> JoinError + '_ {
    move |e| {
        JoinError::Unreachable(anyhow::Error::new(e).context(format!(
            "cannot reach {url}: check --server and that the server is running and reachable"
        )))
    }
}

/// The message of a Kubernetes Status body, else the body itself.
fn status_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.chars().take(300).collect())
}

/// Fetches the CA from `server` unverified and checks it against `pin`.
async fn fetch_ca(server: &str, pin: &str) -> Result<String, JoinError> {
    // The one request made without verifying the server: the answer is
    // only trusted once its hash matches the pin the token carries.
    let insecure = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(JOIN_TIMEOUT)
        .build()
        .map_err(|e| JoinError::Fatal(e.into()))?;
    let url = format!("{server}{CACERTS_PATH}");
    let response = insecure
        .get(&url)
        .send()
        .await
        .map_err(unreachable(server))?;
    let status = response.status();
    let body = response.text().await.map_err(unreachable(server))?;
    if !status.is_success() {
        return Err(JoinError::Fatal(anyhow::anyhow!(
            "GET {url} answered {status}: {}; is {server} a wasmkube server?",
            status_message(&body)
        )));
    }
    let got = ca_cert_hash(&body).map_err(|e| {
        JoinError::Fatal(anyhow::anyhow!(
            "{url} did not return a CA certificate ({e}); is {server} a wasmkube server?"
        ))
    })?;
    if got != pin {
        return Err(JoinError::Fatal(anyhow::anyhow!(
            "the server's CA certificate has hash sha256:{got}, but the token pins \
             sha256:{pin}: this is not the cluster the token was made for (or someone is in \
             between); check --server, or ask for a token from this server: \
             wasmkube token create"
        )));
    }
    Ok(body)
}

/// A fresh ECDSA P-256 key (PEM) and a CSR for it.
fn key_and_csr(node_name: &str) -> anyhow::Result<(String, String)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("generating the node key")?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .context("building the certificate request")?;
    // The server names the certificate itself; the subject is a courtesy.
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("{NODE_USER_PREFIX}{node_name}"),
    );
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .context("signing the certificate request")?;
    Ok((key.serialize_pem(), csr))
}

/// One join attempt: CA, pin check, CSR, certificate.
async fn join_once(
    server: &str,
    token: &JoinToken,
    pin: &str,
    node_name: &str,
) -> Result<Credential, JoinError> {
    let ca_pem = fetch_ca(server, pin).await?;
    let fatal = |e: anyhow::Error| JoinError::Fatal(e);
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .timeout(JOIN_TIMEOUT);
    let roots = reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes())
        .context("reading the cluster CA")
        .map_err(fatal)?;
    for root in roots {
        builder = builder.add_root_certificate(root);
    }
    let verified = builder.build().map_err(|e| fatal(e.into()))?;
    let (key_pem, csr) = key_and_csr(node_name).map_err(fatal)?;
    let request = JoinRequest {
        node_name: node_name.to_string(),
        csr,
    };
    let response = verified
        .post(format!("{server}{JOIN_PATH}"))
        .bearer_auth(token.bearer())
        .json(&request)
        .send()
        .await
        .map_err(unreachable(server))?;
    let status = response.status();
    let body = response.text().await.map_err(unreachable(server))?;
    let why = status_message(&body);
    let err = |msg: String| Err(JoinError::Fatal(anyhow::anyhow!(msg)));
    match status.as_u16() {
        200 | 201 => {}
        401 => {
            return err(format!(
                "the server refused the join token {} ({why}): it has expired, was revoked or \
                 is mistyped; ask for a new token: wasmkube token create",
                token.id
            ));
        }
        403 => {
            return err(format!(
                "the join token {} may not join nodes ({why}); ask for a new token: \
                 wasmkube token create",
                token.id
            ));
        }
        422 => {
            return err(format!(
                "the server refused the node name {node_name:?} ({why}); pass --name with a \
                 lowercase DNS name such as edge-1"
            ));
        }
        404 => {
            return err(format!(
                "{server} has no join endpoint; is it a wasmkube server?"
            ));
        }
        _ => return err(format!("joining failed: HTTP {status}: {why}")),
    }
    let joined: JoinResponse = serde_json::from_str(&body)
        .with_context(|| format!("unexpected join answer: {}", status_message(&body)))
        .map_err(fatal)?;
    if joined.node_name != node_name {
        return err(format!(
            "the server issued a credential for node {:?}, not {node_name:?}",
            joined.node_name
        ));
    }
    if ca_cert_hash(&joined.ca).ok().as_deref() != Some(pin) {
        return err("the join answer names a different CA than the server serves".to_string());
    }
    Ok(Credential {
        server: server.to_string(),
        node_name: node_name.to_string(),
        ca_pem,
        cert_pem: joined.certificate,
        key_pem,
    })
}

/// Joins, retrying while the server cannot be reached (it may still be
/// starting), until it answers or `shutdown`.
async fn join(
    server: &str,
    token: &JoinToken,
    pin: &str,
    node_name: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Credential>> {
    let mut delay = Duration::from_secs(1);
    loop {
        match join_once(server, token, pin, node_name).await {
            Ok(c) => return Ok(Some(c)),
            Err(JoinError::Fatal(e)) => return Err(e),
            Err(JoinError::Unreachable(e)) => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, "joining failed; retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_JOIN_RETRY);
    }
}

/// The node name: `--name`, else the saved one, else the hostname.
fn node_name(flag: Option<&str>, saved: Option<&str>) -> String {
    flag.map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .or_else(|| saved.map(str::to_string))
        .unwrap_or_else(server::hostname_or_default)
}

/// Checks that a saved credential fits the flags of this start.
fn check_saved(
    saved: &Credential,
    dir: &Path,
    name: Option<&str>,
    token: Option<&str>,
    pin_flag: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(name) = name.map(str::trim).filter(|n| !n.is_empty())
        && name != saved.node_name
    {
        bail!(
            "{} holds the credential of node {:?}, not {name:?}; drop --name, or use another \
             --data-dir for another node",
            dir.display(),
            saved.node_name
        );
    }
    let pinned = match (token.and_then(|t| JoinToken::parse(t).ok()), pin_flag) {
        (
            Some(JoinToken {
                ca_hash: Some(h), ..
            }),
            _,
        ) => Some(h),
        (_, Some(flag)) => parse_ca_cert_hash(flag).ok(),
        _ => None,
    };
    if let Some(pin) = pinned {
        let saved_hash = ca_cert_hash(&saved.ca_pem).unwrap_or_default();
        if pin != saved_hash {
            bail!(
                "{} holds a credential for another cluster (CA sha256:{saved_hash}) than the \
                 token's (sha256:{pin}); to join the new cluster remove {} and start again",
                dir.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// Runs the agent until SIGINT/SIGTERM.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let started = jiff::Timestamp::now();
    // This process's logs are the agent mirror pod's (`kubectl logs -n
    // kube-system wasmkube-agent-<node>`).
    wasmkube_runtime::component_logs::activate(wasmkube_runtime::mirror::AGENT);
    let data_dir = data_dir(args.data_dir.clone())?;
    let cred_dir = data_dir.join("agent");
    let shutdown = CancellationToken::new();
    server::cancel_on_signals(shutdown.clone())?;

    let flag_server = args.server.as_deref().map(parse_server_url).transpose()?;
    let saved = tokio::task::spawn_blocking({
        let dir = cred_dir.clone();
        move || Credential::load(&dir)
    })
    .await
    .context("reading the node credential")??;
    let credential = match saved {
        Some(saved) => {
            check_saved(
                &saved,
                &cred_dir,
                args.name.as_deref(),
                args.token.as_deref(),
                args.ca_cert_hash.as_deref(),
            )?;
            if args.token.is_some() {
                tracing::info!("this node has joined before; --token is not needed and is ignored");
            }
            saved
        }
        None => {
            let Some(server) = &flag_server else {
                bail!(
                    "this node has not joined a cluster yet: pass --server https://HOST:PORT and \
                     --token (from `wasmkube token create` on the server)"
                );
            };
            let Some(token) = args.token.as_deref() else {
                bail!(
                    "this node has not joined a cluster yet: pass --token (run \
                     `wasmkube token create` on the server to get one)"
                );
            };
            let (token, pin) = join_token(token, args.ca_cert_hash.as_deref())?;
            let name = node_name(args.name.as_deref(), None);
            if let Err(why) = wasmkube_api::names::is_dns1123_subdomain(&name) {
                bail!("invalid node name {name:?}: {why}; pass --name, e.g. --name edge-1");
            }
            let Some(credential) = join(&server.url, &token, &pin, &name, &shutdown).await? else {
                return Ok(());
            };
            let save = credential.clone();
            let dir = cred_dir.clone();
            tokio::task::spawn_blocking(move || save.save(&dir))
                .await
                .context("saving the node credential")??;
            tracing::info!(node = %name, credential = %cred_dir.display(), "joined");
            credential
        }
    };
    let server_url = match &flag_server {
        Some(s) => s.clone(),
        None => parse_server_url(&credential.server)?,
    };
    println!("agent {} joined {}", credential.node_name, server_url.url);
    println!("kubeconfig: {}", cred_dir.join(KUBECONFIG_FILE).display());

    let node_ip = match args.node_ip {
        Some(ip) => ip,
        None => match default_node_ip(&server_url).await {
            Ok(ip) => ip,
            Err(e) => {
                // Offline with a server named by DNS: loopback keeps the
                // pods running; pass --node-ip for a stable address.
                tracing::warn!(error = %e, server = %server_url.host, "cannot find the address towards the server; using 127.0.0.1 (pass --node-ip)");
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            }
        },
    };
    let client_config = credential.client_config(&server_url.url).await?;
    let client = kube::Client::try_from(client_config).context("building the node's client")?;

    let mut config =
        wasmkube_runtime::KubeletConfig::new(&credential.node_name, data_dir.join("node"));
    args.kubelet.configure(&mut config);
    config.node_ip = node_ip;
    config.bind_address = node_ip;
    // The kubelet endpoint (logs, stats) is unauthenticated; the API server
    // reaches it through the tunnel, so it stays off the network.
    config.kubelet_bind_address = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    tracing::info!(node = %credential.node_name, %node_ip, server = %server_url.url, "starting the node");

    let components = CancellationToken::new();
    let kubelet = wasmkube_runtime::start(config, client.clone(), components.clone())
        .await
        .context("starting the kubelet")?;
    tracing::info!(kubelet = %kubelet.addr, proxy = %kubelet.proxy_addr, "kubelet listening");
    let tunnel = spawn_tunnel(&credential, &server_url.url, &kubelet, components.clone());

    let ready = wait_ready(
        client,
        credential.node_name.clone(),
        started,
        shutdown.clone(),
    );
    let mut ready = std::pin::pin!(ready);
    let mut announced = false;
    let mut done = kubelet.done;
    let mut failure = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            ok = &mut ready, if !announced => {
                announced = true;
                if ok {
                    println!("wasmkube agent is ready");
                    tracing::info!(node = %credential.node_name, "wasmkube agent is ready");
                }
            }
            joined = &mut done => {
                failure = Some(match joined {
                    Ok(Ok(())) => anyhow::anyhow!("the kubelet stopped unexpectedly"),
                    Ok(Err(e)) => anyhow::Error::new(e).context("the kubelet failed"),
                    Err(e) => anyhow::anyhow!("the kubelet panicked: {e}"),
                });
                break;
            }
        }
    }

    components.cancel();
    let stop = async {
        if failure.is_none() {
            match done.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "kubelet stopped with an error"),
                Err(e) => tracing::warn!(error = %e, "kubelet task failed"),
                Ok(Ok(())) => tracing::info!("kubelet stopped"),
            }
        }
        if let Err(e) = tunnel.await {
            tracing::warn!(error = %e, "tunnel task failed");
        }
    };
    if tokio::time::timeout(STOP_GRACE, stop).await.is_err() {
        bail!("the node did not stop within {}s", STOP_GRACE.as_secs());
    }
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("wasmkube agent stopped");
            Ok(())
        }
    }
}

/// Dials the server's tunnel endpoint so `kubectl logs` and the like reach
/// this node's kubelet through the server (the node needs no inbound port
/// reachable from users); the tunnel redials with back-off until `shutdown`.
fn spawn_tunnel(
    credential: &Credential,
    server: &str,
    kubelet: &wasmkube_runtime::Kubelet,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    use wasmkube_runtime::tunnel;
    let config = tunnel::TunnelConfig {
        server_url: server.to_string(),
        ca_pem: credential.ca_pem.clone(),
        client_cert_pem: credential.cert_pem.clone(),
        client_key_pem: credential.key_pem.clone(),
        node_name: credential.node_name.clone(),
    };
    let router = kubelet.router.clone();
    tokio::spawn(async move {
        // Only an unusable configuration ends it early; the node's pods are
        // unaffected, so the agent keeps running and says what is lost.
        if let Err(e) = tunnel::run(config, router, shutdown).await {
            tracing::error!(error = %e, "cannot open the tunnel to the API server; `kubectl logs` reaches this node only if the server can connect to it");
        }
    })
}

/// Polls, as the node itself, until its Node reports Ready with a heartbeat
/// from this run; silent while the server is unreachable.
async fn wait_ready(
    client: kube::Client,
    name: String,
    since: jiff::Timestamp,
    shutdown: CancellationToken,
) -> bool {
    let nodes: Api<Node> = Api::all(client);
    let mut interval = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = interval.tick() => {}
        }
        if let Ok(Some(node)) = nodes.get_opt(&name).await
            && server::node_reports_since(&node, since)
        {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn parse(args: &[&str]) -> Result<AgentArgs, clap::Error> {
        let mut all = vec!["agent"];
        all.extend(args);
        Cmd::try_parse_from(all).map(|c| c.agent)
    }

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn server_urls_are_https_host_port() -> anyhow::Result<()> {
        let u = parse_server_url("https://10.0.0.5:6443/")?;
        assert_eq!(u.url, "https://10.0.0.5:6443");
        assert_eq!((u.host.as_str(), u.port), ("10.0.0.5", 6443));
        let u = parse_server_url("https://edge.example.com")?;
        assert_eq!(u.url, "https://edge.example.com:443");
        let u = parse_server_url("https://[::1]:7443")?;
        assert_eq!(
            (u.url.as_str(), u.host.as_str()),
            ("https://[::1]:7443", "::1")
        );
        for bad in [
            "http://10.0.0.5:6443",
            "10.0.0.5:6443",
            "https://10.0.0.5:6443/api",
            "https://u:p@10.0.0.5:6443",
            "https://",
            "",
        ] {
            assert!(parse_server_url(bad).is_err(), "{bad:?} is rejected");
        }
        Ok(())
    }

    #[tokio::test]
    async fn node_ip_defaults_to_loopback_for_a_loopback_server() -> anyhow::Result<()> {
        for server in [
            "https://127.0.0.1:6443",
            "https://localhost:6443",
            "https://[::1]:6443",
        ] {
            let ip = default_node_ip(&parse_server_url(server)?).await?;
            assert_eq!(ip, IpAddr::V4(Ipv4Addr::LOCALHOST), "{server}");
        }
        // Towards another address, the answer is a local address of the
        // route's family (no packet is sent).
        if let Ok(ip) = local_ip_towards("127.0.0.2:9".parse()?) {
            assert!(ip.is_loopback() && ip.is_ipv4(), "{ip}");
        }
        Ok(())
    }

    #[test]
    fn tokens_need_a_pin_and_pins_must_agree() -> anyhow::Result<()> {
        let full = format!("WK1{HASH}::abcdef.0123456789abcdef");
        let (t, pin) = join_token(&full, None)?;
        assert_eq!((t.id.as_str(), pin.as_str()), ("abcdef", HASH));
        let (_, pin) = join_token("abcdef.0123456789abcdef", Some(&format!("sha256:{HASH}")))?;
        assert_eq!(pin, HASH);
        let (_, pin) = join_token(&full, Some(&format!("sha256:{}", HASH.to_uppercase())))?;
        assert_eq!(pin, HASH, "the same pin in another case agrees");
        let err = |r: anyhow::Result<(JoinToken, String)>| {
            r.err().map(|e| format!("{e:#}")).unwrap_or_default()
        };
        assert!(err(join_token("abcdef.0123456789abcdef", None)).contains("--ca-cert-hash"));
        let other = "f".repeat(64);
        assert!(err(join_token(&full, Some(&other))).contains("differs"));
        assert!(err(join_token("nope", None)).contains("--token"));
        assert!(
            err(join_token("abcdef.0123456789abcdef", Some("md5:1"))).contains("--ca-cert-hash")
        );
        Ok(())
    }

    #[test]
    fn agent_flags() -> anyhow::Result<()> {
        let a = parse(&[
            "--server",
            "https://10.0.0.5:6443",
            "--token",
            "abcdef.0123456789abcdef",
            "--ca-cert-hash",
            "sha256:00",
            "--name",
            "edge-1",
            "--data-dir",
            "/tmp/agent",
            "--node-ip",
            "10.0.0.9",
            "--kubelet-port",
            "0",
            "--proxy-port",
            "0",
            "--node-lease-duration-seconds",
            "60",
            "--container-log-max-size",
            "1Mi",
            "--allow-host-path",
            "/srv",
        ])?;
        assert_eq!(a.server.as_deref(), Some("https://10.0.0.5:6443"));
        assert_eq!(a.name.as_deref(), Some("edge-1"));
        assert_eq!(a.data_dir, Some(PathBuf::from("/tmp/agent")));
        assert_eq!(a.node_ip, Some("10.0.0.9".parse()?));
        assert_eq!(a.kubelet.kubelet_port, 0);
        assert_eq!(a.kubelet.renew_interval(), Duration::from_secs(15));
        assert_eq!(a.kubelet.container_log_max_size, 1 << 20);
        assert_eq!(a.kubelet.allow_host_path, [PathBuf::from("/srv")]);
        assert_eq!(parse(&["--node-name", "n2"])?.name.as_deref(), Some("n2"));
        assert!(parse(&["--node-ip", "not-an-ip"]).is_err());
        assert!(parse(&["--node-lease-duration-seconds", "0"]).is_err());
        Ok(())
    }

    #[test]
    fn node_name_prefers_flag_then_saved_then_hostname() {
        assert_eq!(node_name(Some(" edge-1 "), Some("old")), "edge-1");
        assert_eq!(node_name(None, Some("old")), "old");
        assert_eq!(node_name(Some(""), Some("old")), "old");
        assert!(!node_name(None, None).is_empty());
    }

    fn credential() -> anyhow::Result<Credential> {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key)?;
        let (key_pem, _csr) = key_and_csr("edge-1")?;
        let key = rcgen::KeyPair::from_pem(&key_pem)?;
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:edge-1");
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Credential {
            server: "https://127.0.0.1:6443".to_string(),
            node_name: "edge-1".to_string(),
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    #[tokio::test]
    async fn credential_files_round_trip_with_a_private_key_file() -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("agent");
        assert_eq!(Credential::load(&dir)?, None, "nothing saved yet");
        let cred = credential()?;
        cred.save(&dir)?;
        assert_eq!(Credential::load(&dir)?, Some(cred.clone()));
        let mode = |name: &str| -> anyhow::Result<u32> {
            Ok(std::fs::metadata(dir.join(name))?.permissions().mode() & 0o777)
        };
        assert_eq!(mode(KEY_FILE)?, 0o600);
        assert_eq!(mode(KUBECONFIG_FILE)?, 0o600);
        assert_eq!(std::fs::read_to_string(dir.join(CERT_FILE))?, cred.cert_pem);
        assert!(
            !format!("{cred:?}").contains("PRIVATE KEY"),
            "Debug hides the key"
        );

        // The saved kubeconfig is a standalone client config for kube (and
        // kubectl): the CA and the client identity are inline.
        let kc = Kubeconfig::read_from(dir.join(KUBECONFIG_FILE))?;
        let config =
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(config.root_cert.map(|c| c.len()), Some(1));
        assert!(config.auth_info.client_key_data.is_some());
        kube::Client::try_from(cred.client_config("https://10.0.0.5:6443").await?)?;

        // Saving again replaces the whole credential, never mixing files.
        let newer = Credential {
            server: "https://10.0.0.5:6443".to_string(),
            ..credential()?
        };
        newer.save(&dir)?;
        assert_eq!(Credential::load(&dir)?, Some(newer));
        Ok(())
    }

    #[test]
    fn a_damaged_credential_says_how_to_recover() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("agent");
        credential()?.save(&dir)?;
        std::fs::remove_file(dir.join(KEY_FILE))?;
        let err = Credential::load(&dir)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains("join again"), "{err}");
        Ok(())
    }

    #[test]
    fn a_saved_credential_must_fit_the_flags() -> anyhow::Result<()> {
        let cred = credential()?;
        let dir = Path::new("/data/agent");
        check_saved(&cred, dir, None, None, None)?;
        check_saved(&cred, dir, Some("edge-1"), None, None)?;
        let err = |r: anyhow::Result<()>| r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(check_saved(&cred, dir, Some("edge-2"), None, None)).contains("edge-1"));
        let own = ca_cert_hash(&cred.ca_pem)?;
        let token = format!("WK1{own}::abcdef.0123456789abcdef");
        check_saved(&cred, dir, None, Some(&token), None)?;
        let other = format!("WK1{HASH}::abcdef.0123456789abcdef");
        assert!(err(check_saved(&cred, dir, None, Some(&other), None)).contains("another cluster"));
        assert!(
            err(check_saved(
                &cred,
                dir,
                None,
                None,
                Some(&format!("sha256:{HASH}"))
            ))
            .contains("another cluster")
        );
        Ok(())
    }

    #[test]
    fn csr_is_a_pem_certificate_request_with_a_p256_key() -> anyhow::Result<()> {
        let (key, csr) = key_and_csr("edge-1")?;
        assert!(
            key.contains("BEGIN PRIVATE KEY"),
            "PKCS#8, which kube reads"
        );
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let key = rcgen::KeyPair::from_pem(&key)?;
        assert!(std::ptr::eq(
            key.algorithm(),
            &rcgen::PKCS_ECDSA_P256_SHA256
        ));
        let (other, _) = key_and_csr("edge-1")?;
        assert_ne!(key.serialize_pem(), other, "every join gets a fresh key");
        Ok(())
    }
}
