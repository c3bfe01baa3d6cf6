//! The agent's dial-out tunnel: how the API server reaches this kubelet when
//! nothing can connect to it (NAT, firewalls, edge networks).
//!
//! The agent opens a TLS connection to the API server (ALPN `http/1.1`,
//! authenticated with the node's client certificate), asks
//! `GET /wasmkube/v1/nodes/{node}/tunnel` with `Upgrade: wasmkube-tunnel/1`,
//! and once the server answers `101 Switching Protocols` serves the kubelet
//! router as an HTTP/2 *server* over that same connection: the server is the
//! HTTP/2 client and sends `pods/log`, stats scrapes and the like through it.
//!
//! The tunnel is redialled whenever it ends, with capped exponential back-off
//! (and jitter, so a restarted server is not hit by every agent at once).
//! HTTP/2 pings detect a silently dead connection (a partition that leaves
//! the TCP connection half-open). State changes are logged: established,
//! lost, first failure of a series (later ones at debug level, so an agent
//! offline for hours does not fill its log).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::probes::error_chain;

/// The `Upgrade` protocol token of a tunnel (the API server's
/// `tunnel::PROTOCOL`).
pub const PROTOCOL: &str = "wasmkube-tunnel/1";
/// How much of a refusal's body is read for the log message.
const MAX_ERROR_BODY: usize = 4096;
/// A tunnel that stayed up this long resets the back-off: its loss is a
/// new incident, not another failure of a series.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How long in-flight requests get to finish when the agent shuts down
/// (following log streams never finish by themselves).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where the tunnel goes and the node credential it presents.
#[derive(Clone)]
pub struct TunnelConfig {
    /// `https://HOST:PORT` of the API server.
    pub server_url: String,
    /// The cluster CA (PEM) the server's certificate must chain to.
    pub ca_pem: String,
    /// The node's client certificate (PEM), CN `system:node:<node_name>`.
    /// May be empty when [`TunnelOptions::bearer_token`] authenticates.
    pub client_cert_pem: String,
    /// Its private key (PEM).
    pub client_key_pem: String,
    /// This node's name.
    pub node_name: String,
}

impl std::fmt::Debug for TunnelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a credential: never in logs.
        f.debug_struct("TunnelConfig")
            .field("server_url", &self.server_url)
            .field("node_name", &self.node_name)
            .field("client_cert", &!self.client_cert_pem.is_empty())
            .finish_non_exhaustive()
    }
}

/// Tuning of [`run_with`]; [`run`] uses the defaults.
#[derive(Clone)]
pub struct TunnelOptions {
    /// Sent as `Authorization: Bearer`, for a node authenticated by token
    /// rather than (or besides) its client certificate.
    pub bearer_token: Option<String>,
    /// The first wait after a failure; doubled after each further failure…
    pub initial_backoff: Duration,
    /// …up to this. Kept short: while the tunnel is down `kubectl logs`
    /// cannot reach the node, and one TLS dial every few seconds costs a
    /// device nothing.
    pub max_backoff: Duration,
    /// Bounds the TCP connect, the TLS handshake and the upgrade answer, each.
    pub connect_timeout: Duration,
    /// HTTP/2 ping interval on the tunnel, and how long a ping may go
    /// unanswered before the tunnel counts as dead.
    pub keep_alive_interval: Duration,
    pub keep_alive_timeout: Duration,
}

impl Default for TunnelOptions {
    fn default() -> Self {
        Self {
            bearer_token: None,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(20),
            keep_alive_timeout: Duration::from_secs(20),
        }
    }
}

impl std::fmt::Debug for TunnelOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelOptions")
            .field("bearer_token", &self.bearer_token.is_some())
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("connect_timeout", &self.connect_timeout)
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field("keep_alive_timeout", &self.keep_alive_timeout)
            .finish()
    }
}

/// Configuration the tunnel cannot work with (retrying would not help).
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("invalid API server URL {url:?}: {why}")]
    Url { url: String, why: String },
    #[error("the cluster CA: {0}")]
    Ca(String),
    #[error("the node's client certificate: {0}")]
    ClientCert(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Why one attempt to open the tunnel failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("connecting: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS handshake: {0}")]
    Tls(#[source] std::io::Error),
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] http::Error),
    #[error("the server refused the tunnel: HTTP {code}: {message}")]
    Refused { code: u16, message: String },
}

/// Where to connect, parsed from the server URL.
struct Target {
    /// What `TcpStream::connect` takes (an IPv6 address without brackets).
    connect_host: String,
    port: u16,
    /// The `Host` header value.
    authority: String,
    server_name: rustls::pki_types::ServerName<'static>,
}

impl Target {
    fn parse(url: &str) -> Result<Target, TunnelError> {
        let bad = |why: &str| TunnelError::Url {
            url: url.to_string(),
            why: why.to_string(),
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if parsed.scheme() != "https" {
            return Err(bad("the scheme must be https"));
        }
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| bad("no port"))?;
        let (connect_host, server_name) = match parsed.host() {
            Some(url::Host::Domain(d)) => (
                d.to_string(),
                rustls::pki_types::ServerName::try_from(d.to_string())
                    .map_err(|e| bad(&e.to_string()))?,
            ),
            Some(url::Host::Ipv4(ip)) => (
                ip.to_string(),
                rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::V4(ip).into()),
            ),
            Some(url::Host::Ipv6(ip)) => (
                ip.to_string(),
                rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::V6(ip).into()),
            ),
            None => return Err(bad("no host")),
        };
        let host = parsed.host_str().unwrap_or_default();
        Ok(Target {
            connect_host,
            port,
            authority: format!("{host}:{port}"),
            server_name,
        })
    }
}

fn client_tls(config: &TunnelConfig) -> Result<rustls::ClientConfig, TunnelError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut config.ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| TunnelError::Ca(e.to_string()))?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(TunnelError::Ca("no certificate in the PEM".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut tls = if config.client_cert_pem.trim().is_empty() {
        builder.with_no_client_auth()
    } else {
        let certs = rustls_pemfile::certs(&mut config.client_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TunnelError::ClientCert(e.to_string()))?;
        if certs.is_empty() {
            return Err(TunnelError::ClientCert("no certificate in the PEM".into()));
        }
        let key = rustls_pemfile::private_key(&mut config.client_key_pem.as_bytes())
            .map_err(|e| TunnelError::ClientCert(e.to_string()))?
            .ok_or_else(|| TunnelError::ClientCert("no private key in the PEM".into()))?;
        builder.with_client_auth_cert(certs, key)?
    };
    // An HTTP/1.1 upgrade is what turns the connection around; h2 has none.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// Keeps a tunnel to the API server open until `shutdown`, serving `router`
/// (the kubelet's, `server::router`) over it. Returns early only for a
/// configuration that cannot work (bad URL, CA or client certificate).
pub async fn run(
    config: TunnelConfig,
    router: axum::Router,
    shutdown: CancellationToken,
) -> Result<(), TunnelError> {
    run_with(config, TunnelOptions::default(), router, shutdown).await
}

/// [`run`] with explicit options.
pub async fn run_with(
    config: TunnelConfig,
    options: TunnelOptions,
    router: axum::Router,
    shutdown: CancellationToken,
) -> Result<(), TunnelError> {
    let target = Target::parse(&config.server_url)?;
    let connector = TlsConnector::from(Arc::new(client_tls(&config)?));
    let server = config.server_url.as_str();
    let node = config.node_name.as_str();
    let mut backoff = options.initial_backoff;
    let mut failures = 0u32;
    loop {
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = open(&target, &connector, &config, &options) => r,
        };
        match attempt {
            Ok(io) => {
                if failures > 0 {
                    tracing::info!(
                        node,
                        server,
                        failures,
                        "tunnel to the API server established after failures"
                    );
                } else {
                    tracing::info!(node, server, "tunnel to the API server established");
                }
                failures = 0;
                let started = tokio::time::Instant::now();
                let why = serve(io, router.clone(), &options, &shutdown).await;
                if shutdown.is_cancelled() {
                    tracing::info!(node, "tunnel closed: shutting down");
                    return Ok(());
                }
                if started.elapsed() >= STABLE_AFTER {
                    backoff = options.initial_backoff;
                }
                tracing::warn!(node, server, reason = %why, "tunnel to the API server lost; reconnecting");
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(node, server, error = %e, "cannot open the tunnel to the API server; retrying with back-off");
                } else {
                    tracing::debug!(node, server, failures, error = %e, "tunnel attempt failed");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(jitter(backoff)) => {}
        }
        backoff = backoff.saturating_mul(2).min(options.max_backoff);
    }
}

/// `d` ± 20%, so agents cut off together do not redial in lockstep.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    // 0.8 ..= 1.2 in thousandths.
    let factor = 800 + u64::from(nanos % 401);
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(ms.saturating_mul(factor) / 1000)
}

/// One attempt: connect, TLS, ask for the upgrade, and hand back the
/// upgraded connection.
async fn open(
    target: &Target,
    connector: &TlsConnector,
    config: &TunnelConfig,
    options: &TunnelOptions,
) -> Result<hyper::upgrade::Upgraded, AttemptError> {
    let limit = options.connect_timeout;
    let tcp = tokio::time::timeout(
        limit,
        tokio::net::TcpStream::connect((target.connect_host.as_str(), target.port)),
    )
    .await
    .map_err(|_| AttemptError::Timeout("connecting"))?
    .map_err(AttemptError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio::time::timeout(limit, connector.connect(target.server_name.clone(), tcp))
        .await
        .map_err(|_| AttemptError::Timeout("the TLS handshake"))?
        .map_err(AttemptError::Tls)?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tls)).await?;
    // Drives the connection until it is handed over by the upgrade (or
    // ends, when the server refuses).
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "tunnel connection ended before the upgrade");
        }
    });
    let mut req = http::Request::get(format!("/wasmkube/v1/nodes/{}/tunnel", config.node_name))
        .header(header::HOST, target.authority.as_str())
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, PROTOCOL)
        .header(header::USER_AGENT, "wasmkube-agent")
        .body(Empty::<Bytes>::new())?;
    if let Some(token) = &options.bearer_token {
        let value = header::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            AttemptError::Refused {
                code: 0,
                message: "the bearer token is not a valid header value".into(),
            }
        })?;
        req.headers_mut().insert(header::AUTHORIZATION, value);
    }
    let resp = tokio::time::timeout(limit, sender.send_request(req))
        .await
        .map_err(|_| AttemptError::Timeout("waiting for the upgrade answer"))??;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let code = resp.status().as_u16();
        let body = tokio::time::timeout(
            limit,
            Limited::new(resp.into_body(), MAX_ERROR_BODY).collect(),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .map(|c| c.to_bytes())
        .unwrap_or_default();
        return Err(AttemptError::Refused {
            code,
            message: refusal_message(&body),
        });
    }
    Ok(tokio::time::timeout(limit, hyper::upgrade::on(resp))
        .await
        .map_err(|_| AttemptError::Timeout("the upgrade"))??)
}

/// The `message` of a Kubernetes Status body, else the body as text.
fn refusal_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

/// Serves `router` as HTTP/2 on the upgraded connection until it ends or
/// `shutdown`; says why it ended.
async fn serve(
    io: hyper::upgrade::Upgraded,
    router: axum::Router,
    options: &TunnelOptions,
    shutdown: &CancellationToken,
) -> String {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(options.keep_alive_interval))
        .keep_alive_timeout(options.keep_alive_timeout);
    let conn = builder.serve_connection(io, TowerToHyperService::new(router));
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => match res {
            Ok(()) => "the server closed it".to_string(),
            Err(e) => error_chain(&e),
        },
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
            "shutting down".to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_urls() -> Result<(), TunnelError> {
        let t = Target::parse("https://127.0.0.1:6443")?;
        assert_eq!((t.connect_host.as_str(), t.port), ("127.0.0.1", 6443));
        assert_eq!(t.authority, "127.0.0.1:6443");
        let t = Target::parse("https://[::1]:6443/")?;
        assert_eq!((t.connect_host.as_str(), t.port), ("::1", 6443));
        assert_eq!(t.authority, "[::1]:6443");
        let t = Target::parse("https://api.example")?;
        assert_eq!((t.connect_host.as_str(), t.port), ("api.example", 443));
        assert!(Target::parse("http://127.0.0.1:6443").is_err());
        assert!(Target::parse("not a url").is_err());
        Ok(())
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(10));
            assert!(
                j >= Duration::from_secs(8) && j <= Duration::from_secs(12),
                "{j:?}"
            );
        }
    }

    #[test]
    fn refusals_show_the_status_message() {
        assert_eq!(
            refusal_message(br#"{"kind":"Status","message":"nodes \"a\" is forbidden"}"#),
            "nodes \"a\" is forbidden"
        );
        assert_eq!(refusal_message(b" plain \n"), "plain");
    }

    #[test]
    fn a_bad_ca_or_client_certificate_is_a_configuration_error() {
        let config = TunnelConfig {
            server_url: "https://127.0.0.1:1".into(),
            ca_pem: "nothing".into(),
            client_cert_pem: String::new(),
            client_key_pem: String::new(),
            node_name: "n1".into(),
        };
        assert!(matches!(client_tls(&config), Err(TunnelError::Ca(_))));
    }
}
