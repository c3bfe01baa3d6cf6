//! The HTTPS listener: TLS (rustls, ALPN `h2` + `http/1.1`), one task per
//! connection serving the axum router with hyper's HTTP/1.1 + HTTP/2 auto
//! builder, a semaphore capping concurrent connections, and graceful
//! shutdown: on cancellation the listener stops accepting, in-flight requests
//! get `grace` to finish, then remaining connections are closed.
//!
//! Slow or idle clients cannot hold connections: the TLS handshake and an
//! HTTP/1 request's headers have deadlines, a connection without a request
//! for the idle timeout is closed (HTTP/2 with GOAWAY), and an HTTP/2
//! connection carries a bounded number of streams.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::pki::Pki;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The address a request came from, in its extensions (for the audit log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// TLS setup errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading PEM: {0}")]
    Pem(#[source] std::io::Error),
    #[error("no private key in server.key")]
    NoKey,
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client certificate verification: {0}")]
    ClientAuth(#[from] rustls::server::VerifierBuilderError),
}

/// The rustls server configuration for `pki` (ring provider, TLS 1.2 + 1.3,
/// ALPN h2 then http/1.1 so kubectl gets HTTP/2). Clients are asked for a
/// certificate signed by the cluster CA but may present none (token users);
/// a presented certificate that does not verify fails the handshake.
pub fn tls_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, Error> {
    let certs = rustls_pemfile::certs(&mut pki.server_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::Pem)?;
    let key = rustls_pemfile::private_key(&mut pki.server_key_pem.as_bytes())
        .map_err(Error::Pem)?
        .ok_or(Error::NoKey)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut pki.ca_pem.as_bytes()) {
        roots.add(ca.map_err(Error::Pem)?)?;
    }
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Limits of the accept loop and of each connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    /// Deadline for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Deadline for an HTTP/1 request's headers, from when the server
    /// starts reading them (also bounds an idle keep-alive connection).
    pub header_read_timeout: Duration,
    /// A connection without a request in progress for this long is closed.
    pub idle_timeout: Duration,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub http2_max_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self::from(&crate::limits::ApiLimits::default())
    }
}

impl From<&crate::limits::ApiLimits> for Limits {
    fn from(l: &crate::limits::ApiLimits) -> Self {
        Self {
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(5),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            header_read_timeout: l.header_read_timeout,
            idle_timeout: l.idle_connection_timeout,
            http2_max_streams: l.http2_max_streams_per_connection,
        }
    }
}

/// Requests in progress on one connection, and when the last one ended.
struct Activity {
    active: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            active: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        })
    }

    fn begin(self: &Arc<Self>) -> ActiveRequest {
        self.active.fetch_add(1, Ordering::SeqCst);
        ActiveRequest(self.clone())
    }

    /// How long the connection has had no request in progress.
    fn idle_for(&self) -> Duration {
        if self.active.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        self.last
            .lock()
            .map(|l| l.elapsed())
            .unwrap_or(Duration::ZERO)
    }

    /// Resolves once the connection has been idle for `limit`.
    async fn idle(&self, limit: Duration) {
        let tick = (limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
        loop {
            tokio::time::sleep(tick).await;
            if self.idle_for() >= limit {
                return;
            }
        }
    }
}

/// One request in progress, from its arrival until its response body is
/// sent (or abandoned).
struct ActiveRequest(Arc<Activity>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        if let Ok(mut last) = self.0.last.lock() {
            *last = Instant::now();
        }
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The router as one connection's service: every request carries the
/// connection's peer (address and verified client chain) and counts as
/// activity until its response is done.
#[derive(Clone)]
struct ConnService {
    app: Router,
    peer: PeerAddr,
    chain: Option<crate::authn::PeerCertificates>,
    activity: Arc<Activity>,
}

impl tower::Service<http::Request<hyper::body::Incoming>> for ConnService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let active = self.activity.begin();
        req.extensions_mut().insert(self.peer);
        if let Some(chain) = &self.chain {
            req.extensions_mut().insert(chain.clone());
        }
        let call = tower::ServiceExt::oneshot(self.app.clone(), req);
        Box::pin(async move {
            let resp = call.await?;
            Ok(crate::limits::hold(resp, active))
        })
    }
}

/// Serve `app` over TLS on `listener` until `shutdown` is cancelled and
/// connections have drained (or `grace` has passed).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let tracker = TaskTracker::new();
    // Cancelled once the grace period is over: connections still open then are dropped.
    let hard_stop = CancellationToken::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams.max(1))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);

    loop {
        // Wait for capacity first, so at the cap new clients queue in the
        // kernel's backlog rather than in our memory.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let hard_stop = hard_stop.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            // The verified client chain (if any) rides on every request of
            // this connection for the authentication middleware.
            let client_chain = stream
                .get_ref()
                .1
                .peer_certificates()
                .filter(|c| !c.is_empty())
                .map(|c| {
                    crate::authn::PeerCertificates(Arc::new(
                        c.iter().map(|c| c.clone().into_owned()).collect(),
                    ))
                });
            let activity = Activity::new();
            let service = TowerToHyperService::new(ConnService {
                app,
                peer: PeerAddr(peer),
                chain: client_chain,
                activity: activity.clone(),
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let idle = activity.idle(limits.idle_timeout);
            tokio::pin!(idle);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = shutdown.cancelled() => {}
                _ = &mut idle => {
                    tracing::debug!(%peer, "closing an idle connection");
                }
            }
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = hard_stop.cancelled() => {
                    tracing::debug!(%peer, "closing a connection still busy after the shutdown grace period");
                }
                // Only an idle connection can get here without shutdown:
                // a client ignoring GOAWAY gets the grace period, no more.
                _ = tokio::time::sleep(limits.shutdown_grace), if !shutdown.is_cancelled() => {}
            }
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(limits.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        hard_stop.cancel();
        tracker.wait().await;
    }
}
