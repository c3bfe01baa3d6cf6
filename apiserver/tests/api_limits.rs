//! The API's request limits: in-flight caps answered with 429 and
//! `Retry-After` (system:masters exempt), the per-user watch cap, the
//! request deadline (504), the request body read timeout, and the
//! connection limits of the real listener (slow headers, idle connections,
//! HTTP/2 streams per connection).

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt as _;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use wasmkube_apiserver::app;
use wasmkube_apiserver::audit::AuditLog;
use wasmkube_apiserver::auth::UserInfo;
use wasmkube_apiserver::limits::{self, ApiLimits, RequestGuard};

const CONTROLLERS: &str = "system:kube-controller-manager";
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

fn limits_with(f: impl FnOnce(&mut ApiLimits)) -> ApiLimits {
    let mut l = ApiLimits::default();
    f(&mut l);
    l
}

/// The whole API behind the request limits, over a temporary store, with
/// tokens for admin (system:masters) and the controller manager.
struct Api {
    _dir: tempfile::TempDir,
    router: Router,
    guard: RequestGuard,
    admin: String,
    user: String,
    shutdown: CancellationToken,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn api(limits: ApiLimits) -> Result<Api> {
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let store = common::embedded_store(dir.path())?;
    let state = common::app_state(dir.path(), store, &[CONTROLLERS], &shutdown).await?;
    let admin = common::token_of(&state.tokens, "admin")?;
    let user = common::token_of(&state.tokens, CONTROLLERS)?;
    let guard = RequestGuard::new(&limits, AuditLog::disabled());
    let router = limits::protect(app(state), guard.clone());
    Ok(Api {
        _dir: dir,
        router,
        guard,
        admin,
        user,
        shutdown,
    })
}

impl Api {
    async fn send(&self, method: &str, path: &str, token: &str, body: &str) -> Result<Response> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))?;
        Ok(self.router.clone().oneshot(req).await?)
    }
}

fn configmap(name: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"k": "v"},
    })
    .to_string()
}

async fn json_of(resp: Response) -> Result<Value> {
    let bytes = resp.into_body().collect().await?.to_bytes();
    serde_json::from_slice(&bytes).with_context(|| String::from_utf8_lossy(&bytes).into_owned())
}

/// Asserts Kubernetes' 429: `Status` TooManyRequests, `Retry-After: 1`,
/// `details.retryAfterSeconds: 1`; returns the message.
async fn expect_429(resp: Response) -> Result<String> {
    ensure!(
        resp.status() == StatusCode::TOO_MANY_REQUESTS,
        "expected 429, got {}",
        resp.status()
    );
    let retry = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    ensure!(retry.as_deref() == Some("1"), "Retry-After: {retry:?}");
    let v = json_of(resp).await?;
    ensure!(v["kind"] == "Status", "{v}");
    ensure!(v["reason"] == "TooManyRequests", "{v}");
    ensure!(v["code"] == 429, "{v}");
    ensure!(v["details"]["retryAfterSeconds"] == 1, "{v}");
    Ok(v["message"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
async fn a_full_inflight_pool_answers_429_with_retry_after() -> Result<()> {
    let api = api(limits_with(|l| {
        l.max_requests_inflight = 1;
        l.max_mutating_requests_inflight = 1;
    }))
    .await?;

    // A response whose body has not been sent holds its slot.
    let held = api.send("GET", CONFIGMAPS, &api.user, "").await?;
    ensure!(held.status() != StatusCode::TOO_MANY_REQUESTS);
    let refused = api.send("GET", CONFIGMAPS, &api.user, "").await?;
    let message = expect_429(refused).await?;
    ensure!(
        message == "Too many requests, please try again later.",
        "{message}"
    );

    // Mutating requests have their own pool.
    let created = api
        .send("POST", CONFIGMAPS, &api.user, &configmap("a"))
        .await?;
    ensure!(
        created.status() != StatusCode::TOO_MANY_REQUESTS,
        "{}",
        created.status()
    );
    let held_write = created;
    let refused = api
        .send("POST", CONFIGMAPS, &api.user, &configmap("b"))
        .await?;
    expect_429(refused).await?;

    // system:masters always gets an answer, as in Kubernetes.
    let admin = api.send("GET", CONFIGMAPS, &api.admin, "").await?;
    ensure!(admin.status() == StatusCode::OK, "{}", admin.status());
    let admin = api
        .send("POST", CONFIGMAPS, &api.admin, &configmap("c"))
        .await?;
    // (404: the bare router has no namespaces; what matters is the answer.)
    ensure!(
        admin.status() != StatusCode::TOO_MANY_REQUESTS,
        "{}",
        admin.status()
    );

    // Sending the held responses frees their slots.
    held.into_body().collect().await?;
    drop(held_write);
    let again = api.send("GET", CONFIGMAPS, &api.user, "").await?;
    ensure!(
        again.status() != StatusCode::TOO_MANY_REQUESTS,
        "{}",
        again.status()
    );
    drop(again);
    let again = api
        .send("POST", CONFIGMAPS, &api.user, &configmap("d"))
        .await?;
    ensure!(again.status() != StatusCode::TOO_MANY_REQUESTS);
    Ok(())
}

/// Authenticates every request as the user named in `X-User` (group
/// `system:masters` when `X-Masters` is set), standing in for the real
/// authenticator in routers built for one test.
async fn fake_authn(mut req: Request, next: Next) -> Response {
    let name = req
        .headers()
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let masters = req.headers().contains_key("x-masters");
    if let Some(name) = name {
        let mut groups = vec!["system:authenticated".to_string()];
        if masters {
            groups.push("system:masters".to_string());
        }
        req.extensions_mut().insert(UserInfo {
            uid: name.clone(),
            name,
            groups,
        });
    }
    next.run(req).await
}

/// `routes` behind [`limits::admit`] (inside authentication) and
/// [`limits::protect`], as `start` layers the real API.
fn layered(routes: Router, limits: &ApiLimits) -> (Router, RequestGuard) {
    let guard = RequestGuard::new(limits, AuditLog::disabled());
    let router = routes
        .layer(axum::middleware::from_fn(limits::admit))
        .layer(axum::middleware::from_fn(fake_authn));
    (limits::protect(router, guard.clone()), guard)
}

fn request(path: &str, user: &str) -> Result<Request> {
    Ok(Request::get(path)
        .header("x-user", user)
        .body(Body::empty())?)
}

#[tokio::test]
async fn a_request_in_its_handler_holds_its_slot_until_it_answers() -> Result<()> {
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (e, r) = (entered.clone(), release.clone());
    let routes = Router::new().route(
        CONFIGMAPS,
        get(move || {
            let (e, r) = (e.clone(), r.clone());
            async move {
                e.notify_one();
                r.notified().await;
                "done"
            }
        }),
    );
    let (router, _) = layered(
        routes,
        &limits_with(|l| {
            l.max_requests_inflight = 1;
        }),
    );
    let first = tokio::spawn(router.clone().oneshot(request(CONFIGMAPS, "alice")?));
    tokio::time::timeout(Duration::from_secs(10), entered.notified())
        .await
        .context("the first request never reached its handler")?;

    let second = router.clone().oneshot(request(CONFIGMAPS, "bob")?).await?;
    expect_429(second).await?;

    release.notify_one();
    let first = tokio::time::timeout(Duration::from_secs(10), first).await???;
    ensure!(first.status() == StatusCode::OK, "{}", first.status());
    drop(first);

    let (e2, r2) = (entered.clone(), release.clone());
    let third = tokio::spawn(router.clone().oneshot(request(CONFIGMAPS, "bob")?));
    tokio::time::timeout(Duration::from_secs(10), e2.notified())
        .await
        .context("the slot was not freed")?;
    r2.notify_one();
    let third = tokio::time::timeout(Duration::from_secs(10), third).await???;
    ensure!(third.status() == StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn watches_are_capped_per_user_and_not_counted_in_flight() -> Result<()> {
    let api = api(limits_with(|l| {
        l.max_requests_inflight = 1;
        l.max_watches_per_user = 2;
    }))
    .await?;
    // Pods: what the controller manager watches anyway. Whether RBAC lets
    // it is beside the point: any answer past authentication holds a place.
    let pods = "/api/v1/namespaces/default/pods";
    let watch = format!("{pods}?watch=true");

    let w1 = api.send("GET", &watch, &api.user, "").await?;
    let w2 = api.send("GET", &watch, &api.user, "").await?;
    ensure!(w1.status() != StatusCode::TOO_MANY_REQUESTS);
    ensure!(w2.status() != StatusCode::TOO_MANY_REQUESTS);
    ensure!(api.guard.open_watches(CONTROLLERS) == 2);

    let refused = api.send("GET", &watch, &api.user, "").await?;
    let message = expect_429(refused).await?;
    ensure!(
        message.contains("too many watches") && message.contains(CONTROLLERS),
        "{message}"
    );

    // Open watches do not take the (single) in-flight slot.
    let list = api.send("GET", pods, &api.user, "").await?;
    ensure!(
        list.status() != StatusCode::TOO_MANY_REQUESTS,
        "{}",
        list.status()
    );
    drop(list);

    // Another user, and system:masters, are not affected.
    let admin = api.send("GET", &watch, &api.admin, "").await?;
    ensure!(admin.status() == StatusCode::OK, "{}", admin.status());

    // A watch that ends frees its place.
    drop(w1);
    ensure!(api.guard.open_watches(CONTROLLERS) == 1);
    let w3 = api.send("GET", &watch, &api.user, "").await?;
    ensure!(w3.status() != StatusCode::TOO_MANY_REQUESTS);
    drop((w2, w3));
    ensure!(api.guard.open_watches(CONTROLLERS) == 0);
    Ok(())
}

#[tokio::test]
async fn requests_past_their_deadline_get_504_but_watches_do_not() -> Result<()> {
    let routes = Router::new().route(
        CONFIGMAPS,
        get(|req: Request| async move {
            if req.uri().query().is_some_and(|q| q.contains("watch=true")) {
                // A watch answers late and must not be cut off.
                tokio::time::sleep(Duration::from_millis(300)).await;
                return "watching".into_response();
            }
            std::future::pending::<()>().await;
            "never".into_response()
        }),
    );
    let (router, _) = layered(
        routes,
        &limits_with(|l| {
            l.request_timeout = Duration::from_millis(100);
        }),
    );
    let resp = router
        .clone()
        .oneshot(request(CONFIGMAPS, "alice")?)
        .await?;
    ensure!(
        resp.status() == StatusCode::GATEWAY_TIMEOUT,
        "{}",
        resp.status()
    );
    let v = json_of(resp).await?;
    ensure!(v["kind"] == "Status" && v["reason"] == "Timeout", "{v}");
    ensure!(v["code"] == 504, "{v}");
    ensure!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not complete within requested timeout")),
        "{v}"
    );

    let watch = router
        .clone()
        .oneshot(request(&format!("{CONFIGMAPS}?watch=true"), "alice")?)
        .await?;
    ensure!(watch.status() == StatusCode::OK, "{}", watch.status());

    // The client's shorter `timeout` wins over the server's.
    let (router, _) = layered(
        Router::new().route(
            CONFIGMAPS,
            get(|| async {
                std::future::pending::<()>().await;
                "never"
            }),
        ),
        &limits_with(|l| {
            l.request_timeout = Duration::from_secs(3600);
        }),
    );
    let resp = tokio::time::timeout(
        Duration::from_secs(30),
        router
            .clone()
            .oneshot(request(&format!("{CONFIGMAPS}?timeout=100ms"), "alice")?),
    )
    .await
    .context("the client's timeout was ignored")??;
    ensure!(resp.status() == StatusCode::GATEWAY_TIMEOUT);
    Ok(())
}

#[tokio::test]
async fn a_stalled_request_body_fails_instead_of_holding_its_slot() -> Result<()> {
    let routes = Router::new().route(
        CONFIGMAPS,
        axum::routing::post(|body: Body| async move {
            match axum::body::to_bytes(body, usize::MAX).await {
                Ok(b) => (StatusCode::OK, b.len().to_string()),
                Err(e) => (StatusCode::BAD_REQUEST, e.to_string()),
            }
        }),
    );
    let (router, _) = layered(
        routes,
        &limits_with(|l| {
            l.body_read_timeout = Duration::from_millis(100);
        }),
    );
    // One chunk, then nothing, forever.
    let stalled = futures::stream::once(async {
        Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"{\"kind\":"))
    })
    .chain(futures::stream::pending());
    let req = Request::post(CONFIGMAPS)
        .header("x-user", "alice")
        .body(Body::from_stream(stalled))?;
    let resp = tokio::time::timeout(Duration::from_secs(30), router.clone().oneshot(req))
        .await
        .context("a stalled body was waited for without end")??;
    ensure!(
        resp.status() == StatusCode::BAD_REQUEST,
        "{}",
        resp.status()
    );
    let text = String::from_utf8_lossy(&resp.into_body().collect().await?.to_bytes()).into_owned();
    ensure!(
        text.contains("timed out reading the request body"),
        "{text}"
    );

    // A body that keeps coming is read in full.
    let req = Request::post(CONFIGMAPS)
        .header("x-user", "alice")
        .body(Body::from("0123456789"))?;
    let resp = router.oneshot(req).await?;
    ensure!(resp.status() == StatusCode::OK);
    Ok(())
}

// ---------------------------------------------------------------------------
// The real listener.

struct Server {
    _dir: tempfile::TempDir,
    running: wasmkube_apiserver::Running,
    shutdown: CancellationToken,
}

impl Server {
    async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.running.done).await??;
        Ok(())
    }

    fn addr(&self) -> Result<std::net::SocketAddr> {
        let hostport = self
            .running
            .url
            .strip_prefix("https://")
            .context("not an https URL")?;
        Ok(hostport.parse()?)
    }

    /// A TLS connection to the server offering `alpn`.
    async fn tls(
        &self,
        alpn: &[u8],
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut self.running.ca_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(self.addr()?).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
        Ok(connector.connect(name, tcp).await?)
    }
}

async fn server(limits: ApiLimits) -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let mut config = common::server_config(dir.path());
    config.api_limits = limits;
    let running = wasmkube_apiserver::start(config, shutdown.clone()).await?;
    Ok(Server {
        _dir: dir,
        running,
        shutdown,
    })
}

/// Waits (bounded) until the server closes `stream`, sending `trickle`
/// every 50 ms meanwhile; `Ok(what it answered)` once closed.
async fn closed_by_server(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    trickle: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut answered = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if tokio::time::Instant::now() >= deadline {
            bail!("the server kept the connection open");
        }
        tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(0) | Err(_) => return Ok(answered),
                Ok(n) => answered.extend_from_slice(&buf[..n]),
            },
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                if let Some(bytes) = trickle
                    && (stream.write_all(bytes).await.is_err() || stream.flush().await.is_err())
                {
                    return Ok(answered);
                }
            }
        }
    }
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed() -> Result<()> {
    let server = server(limits_with(|l| {
        l.header_read_timeout = Duration::from_millis(300);
        l.idle_connection_timeout = Duration::from_millis(500);
    }))
    .await?;

    // A whole request on a fresh connection is served.
    let mut ok = server.tls(b"http/1.1").await?;
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let answer = closed_by_server(&mut ok, None).await?;
    ensure!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // Slowloris: headers that never end, one line at a time.
    let mut slow = server.tls(b"http/1.1").await?;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await?;
    let answer = closed_by_server(&mut slow, Some(b"X-Slow: 1\r\n")).await?;
    ensure!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "an unfinished request was served"
    );

    // A connection that never sends a request (HTTP/1 and HTTP/2).
    let mut silent = server.tls(b"http/1.1").await?;
    closed_by_server(&mut silent, None).await?;
    let mut silent = server.tls(b"h2").await?;
    closed_by_server(&mut silent, None).await?;

    server.stop().await
}

#[tokio::test]
async fn http2_connections_advertise_the_stream_limit() -> Result<()> {
    let server = server(limits_with(|l| {
        l.http2_max_streams_per_connection = 7;
    }))
    .await?;
    let tls = server.tls(b"h2").await?;
    let (mut client, mut conn) = h2::client::handshake(tls).await?;
    let req = http::Request::get(format!("{}/healthz", server.running.url)).body(())?;
    let (response, _) = client.send_request(req, true)?;
    let resp = tokio::select! {
        r = response => r?,
        c = &mut conn => bail!("the connection ended first: {c:?}"),
    };
    ensure!(resp.status() == StatusCode::OK);
    ensure!(
        conn.max_concurrent_send_streams() == 7,
        "the server allows {} streams",
        conn.max_concurrent_send_streams()
    );
    drop(client);
    drop(conn);
    server.stop().await
}
