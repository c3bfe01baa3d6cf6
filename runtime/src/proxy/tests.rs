//! Tests of the proxy: requests through real listeners, local containers
//! registered in real `HttpPods`, and real axum servers standing in for
//! other nodes' proxies.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request as AxumRequest;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::table::fixtures::{State, node, service, slice};
use super::*;
use crate::http::Handler;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// An HTTP container that answers with its pod name, the path, the
/// headers it saw and the request body.
struct Echo {
    pod: String,
    /// When set, requests wait for it before answering.
    hold: Option<Arc<Hold>>,
}

/// Holds requests of an [`Echo`] until released.
#[derive(Default)]
struct Hold {
    arrived: std::sync::atomic::AtomicUsize,
    release: Notify,
}

#[async_trait::async_trait]
impl Handler for Echo {
    async fn handle(&self, req: Request<Body>) -> Response<Body> {
        if let Some(hold) = &self.hold {
            hold.arrived
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            hold.release.notified().await;
        }
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let mut headers: Vec<String> = parts
            .headers
            .iter()
            .map(|(k, v)| format!("{k}={}", v.to_str().unwrap_or("?")))
            .collect();
        headers.sort();
        let text = format!(
            "pod={} path={} headers={} body={}",
            self.pod,
            parts.uri,
            headers.join(";"),
            String::from_utf8_lossy(&body)
        );
        let mut response = Response::new(Body::from(text));
        response.headers_mut().insert(
            "x-pod",
            HeaderValue::from_str(&self.pod).unwrap_or(HeaderValue::from_static("?")),
        );
        // A hop-by-hop header the proxy must not pass on.
        response
            .headers_mut()
            .insert("keep-alive", HeaderValue::from_static("timeout=5"));
        response
    }
}

/// Registers an Echo container at `ns/pod:port` in `pods` and waits until
/// it takes requests; cancelling the returned token drains it.
async fn register(
    pods: &HttpPods,
    ns: &str,
    pod: &str,
    port: u16,
    hold: Option<Arc<Hold>>,
) -> anyhow::Result<CancellationToken> {
    let key = EndpointKey {
        namespace: ns.into(),
        pod: pod.into(),
        port,
    };
    let drain = CancellationToken::new();
    let stop = CancellationToken::new();
    let handler = Arc::new(Echo {
        pod: pod.into(),
        hold,
    });
    let registering = pods.clone();
    let (k, d) = (key.clone(), drain.clone());
    tokio::spawn(async move { registering.register(k, handler, d, stop).await });
    eventually(|| pods.contains(&key)).await?;
    Ok(drain)
}

/// Polls `cond` until it holds (10 s at most).
async fn eventually(mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("condition not met in time");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// A proxy for node `name` serving its proxy port on a free port.
async fn proxy_on(
    name: &str,
    pods: HttpPods,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Proxy, SocketAddr)> {
    let proxy = Proxy::new(ProxyOptions::new(name, LOCALHOST), pods)?;
    let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(
        proxy.clone(),
        listener,
        Entry::ProxyPort(addr.port()),
        shutdown.clone(),
    ));
    Ok((proxy, addr))
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()?)
}

async fn get(
    client: &reqwest::Client,
    addr: SocketAddr,
    host: &str,
) -> anyhow::Result<(StatusCode, String)> {
    let r = client
        .get(format!("http://{addr}/hello?x=1"))
        .header("host", host)
        .send()
        .await?;
    let status = r.status();
    Ok((status, r.text().await?))
}

fn pod_of(body: &str) -> &str {
    body.split_whitespace()
        .next()
        .and_then(|w| w.strip_prefix("pod="))
        .unwrap_or("")
}

#[test]
fn endpoint_headers_parse() {
    let key = parse_endpoint("default/web-1:8080").expect("key");
    assert_eq!(
        (key.namespace.as_str(), key.pod.as_str(), key.port),
        ("default", "web-1", 8080)
    );
    assert!(parse_endpoint("default/web-1").is_none());
    assert!(parse_endpoint("web-1:8080").is_none());
    assert!(parse_endpoint("default/:8080").is_none());
    assert!(parse_endpoint("default/web:0").is_none());
    assert!(parse_endpoint("default/web:99999").is_none());
}

#[test]
fn hop_by_hop_headers_are_removed() {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("connection", "keep-alive, x-secret"),
        ("keep-alive", "timeout=5"),
        ("x-secret", "1"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("proxy-authorization", "Basic x"),
        ("te", "trailers"),
        ("x-kept", "yes"),
        ("content-type", "text/plain"),
    ] {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    strip_hop_by_hop(&mut h);
    let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    left.sort();
    assert_eq!(left, ["content-type", "x-kept"]);

    add_forwarded_for(&mut h, LOCALHOST);
    add_forwarded_for(&mut h, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
    assert_eq!(
        h.get("x-forwarded-for").and_then(|v| v.to_str().ok()),
        Some("127.0.0.1, 10.0.0.2")
    );
}

#[tokio::test]
async fn host_routes_pick_service_ports_and_spread_over_local_endpoints() -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let pods = HttpPods::new();
    register(&pods, "default", "echo-a", 8080, None).await?;
    register(&pods, "default", "echo-b", 8080, None).await?;
    register(&pods, "default", "admin-0", 9090, None).await?;
    let (proxy, addr) = proxy_on("n1", pods, &shutdown).await?;
    proxy.update(
        &[
            service(
                "default",
                "echo",
                &[("http", 80, None), ("admin", 9000, None)],
            ),
            service("default", "empty", &[("", 80, None)]),
        ],
        &[
            slice(
                "default",
                "echo",
                "1",
                &[("http", 8080)],
                &[
                    ("echo-a", "n1", State::Ready),
                    ("echo-b", "n1", State::Ready),
                ],
            ),
            slice(
                "default",
                "echo",
                "2",
                &[("admin", 9090)],
                &[("admin-0", "n1", State::Ready)],
            ),
        ],
        &[],
    );
    let c = client()?;

    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for host in [
        "echo.default",
        "echo.default.svc",
        "echo.default.svc.cluster.local",
        "ECHO.default:80",
    ] {
        for _ in 0..2 {
            let (status, body) = get(&c, addr, host).await?;
            assert_eq!(status, StatusCode::OK, "{host}: {body}");
            assert!(body.contains("path=/hello?x=1"), "{body}");
            assert!(body.contains("x-forwarded-for=127.0.0.1"), "{body}");
            *seen.entry(pod_of(&body).to_string()).or_default() += 1;
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [("echo-a".to_string(), 4), ("echo-b".to_string(), 4)]
    );

    // A port number picks that Service port; the proxy's own port the first.
    let (status, body) = get(&c, addr, "echo.default:9000").await?;
    assert_eq!((status, pod_of(&body)), (StatusCode::OK, "admin-0"));
    let (status, body) = get(&c, addr, &format!("echo.default:{}", addr.port())).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(pod_of(&body).starts_with("echo-"), "{body}");

    let (status, body) = get(&c, addr, "echo.default:7777").await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, "service default/echo has no port 7777\n");
    let (status, body) = get(&c, addr, "nope.default").await?;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, "no service default/nope\n")
    );
    let (status, _) = get(&c, addr, "localhost").await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = get(&c, addr, "empty.default").await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "no ready endpoints for service default/empty\n");

    // The hop-by-hop header of the container's answer does not reach us.
    let r = c
        .get(format!("http://{addr}/"))
        .header("host", "echo.default")
        .send()
        .await?;
    assert!(r.headers().get("keep-alive").is_none());
    assert!(r.headers().get("x-pod").is_some());
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn endpoint_header_is_served_only_for_local_containers() -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let pods = HttpPods::new();
    register(&pods, "ns", "here", 8080, None).await?;
    let (_proxy, addr) = proxy_on("n1", pods, &shutdown).await?;
    let c = client()?;
    let send = |endpoint: &'static str| {
        c.post(format!("http://{addr}/p"))
            .header(ENDPOINT_HEADER, endpoint)
            .body("payload")
            .send()
    };
    let r = send("ns/here:8080").await?;
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await?;
    assert!(body.starts_with("pod=here path=/p"), "{body}");
    assert!(body.ends_with("body=payload"), "{body}");
    assert!(
        !body.contains(ENDPOINT_HEADER),
        "the header reached the container: {body}"
    );

    let r = send("ns/elsewhere:8080").await?;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = send("ns/here:9999").await?;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = send("garbage").await?;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    shutdown.cancel();
    Ok(())
}

/// What a stand-in remote proxy saw.
#[derive(Default, Clone)]
struct Seen(Arc<Mutex<Vec<(String, HeaderMap, String)>>>);

/// An axum server standing in for another node's proxy: echoes the body
/// and records what it received.
async fn fake_remote(seen: Seen, shutdown: &CancellationToken) -> anyhow::Result<SocketAddr> {
    let app = axum::Router::new().fallback(move |req: AxumRequest| {
        let seen = seen.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&body).to_string();
            if let Ok(mut s) = seen.0.lock() {
                s.push((parts.uri.to_string(), parts.headers, text.clone()));
            }
            (
                StatusCode::CREATED,
                [
                    ("x-remote", "yes"),
                    ("connection", "x-drop"),
                    ("x-drop", "1"),
                ],
                format!("remote got {text}"),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let token = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await
    });
    Ok(addr)
}

#[tokio::test]
async fn remote_endpoints_are_forwarded_to_their_nodes_proxy() -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let seen = Seen::default();
    let remote = fake_remote(seen.clone(), &shutdown).await?;
    let (proxy, addr) = proxy_on("n1", HttpPods::new(), &shutdown).await?;
    proxy.update(
        &[service("web", "api", &[("", 80, None)])],
        &[slice(
            "web",
            "api",
            "1",
            &[("", 8080)],
            &[("api-0", "n2", State::Ready)],
        )],
        &[node("n2", "127.0.0.1", remote.port())],
    );
    let c = client()?;
    // A streamed request body of unknown length.
    let chunks = futures::stream::iter(
        ["hello ", "from ", "a stream"]
            .map(|s| Ok::<_, std::io::Error>(bytes::Bytes::from_static(s.as_bytes()))),
    );
    let r = c
        .put(format!("http://{addr}/things/1?v=2"))
        .header("host", "api.web")
        .header("x-forwarded-for", "192.0.2.7")
        .header("connection", "x-private")
        .header("x-private", "secret")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        r.headers().get("x-remote").map(|v| v.as_bytes()),
        Some(&b"yes"[..])
    );
    assert!(
        r.headers().get("x-drop").is_none(),
        "hop-by-hop response header kept"
    );
    assert_eq!(r.text().await?, "remote got hello from a stream");

    let seen = seen.0.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(seen.len(), 1);
    let (uri, headers, body) = &seen[0];
    assert_eq!(uri, "/things/1?v=2");
    assert_eq!(body, "hello from a stream");
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    assert_eq!(h(ENDPOINT_HEADER).as_deref(), Some("web/api-0:8080"));
    assert_eq!(h("host").as_deref(), Some("api.web"));
    assert_eq!(
        h("x-forwarded-for").as_deref(),
        Some("192.0.2.7, 127.0.0.1")
    );
    assert_eq!(h("x-private"), None);
    assert_eq!(h("connection"), None);
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn requests_cross_two_real_proxies_to_the_owning_nodes_container() -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let n2_pods = HttpPods::new();
    register(&n2_pods, "shop", "cart-0", 8080, None).await?;
    let (p1, a1) = proxy_on("n1", HttpPods::new(), &shutdown).await?;
    let (p2, a2) = proxy_on("n2", n2_pods, &shutdown).await?;
    let services = [service("shop", "cart", &[("", 80, None)])];
    let slices = [slice(
        "shop",
        "cart",
        "1",
        &[("", 8080)],
        &[("cart-0", "n2", State::Ready)],
    )];
    let nodes = [
        node("n1", "127.0.0.1", a1.port()),
        node("n2", "127.0.0.1", a2.port()),
    ];
    p1.update(&services, &slices, &nodes);
    p2.update(&services, &slices, &nodes);
    let c = client()?;
    for addr in [a1, a2] {
        let r = c
            .post(format!("http://{addr}/add"))
            .header("host", "cart.shop")
            .body("apple")
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::OK);
        let body = r.text().await?;
        assert!(body.starts_with("pod=cart-0 path=/add"), "{body}");
        assert!(body.ends_with("body=apple"), "{body}");
        assert!(body.contains("host=cart.shop"), "{body}");
        assert!(
            body.contains("x-forwarded-for=127.0.0.1 body="),
            "one hop recorded: {body}"
        );
    }

    // wasi:http guests on n1 reach the Service the same way.
    let req = Request::post("http://cart.shop/add")
        .body(Body::from("pear"))
        .map_err(anyhow::Error::from)?;
    let r = ServiceRouter::route(&p1, "shop", "cart", None, req).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.into_body().collect().await?.to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.starts_with("pod=cart-0 path=/add"), "{body}");
    assert!(body.contains("host=cart.shop"), "{body}");
    let req = Request::get("/")
        .body(Body::empty())
        .map_err(anyhow::Error::from)?;
    let r = ServiceRouter::route(&p1, "shop", "cart", Some(81), req).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn unreachable_remote_proxies_answer_502() -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    // A port nothing listens on any more.
    let dead = tokio::net::TcpListener::bind((LOCALHOST, 0))
        .await?
        .local_addr()?;
    let (proxy, addr) = proxy_on("n1", HttpPods::new(), &shutdown).await?;
    proxy.update(
        &[
            service("ns", "s", &[("", 80, None)]),
            service("ns", "lost", &[("", 80, None)]),
        ],
        &[
            slice(
                "ns",
                "s",
                "1",
                &[("", 8080)],
                &[("s-0", "n2", State::Ready)],
            ),
            // Its node is unknown: the endpoint cannot be reached at all.
            slice(
                "ns",
                "lost",
                "1",
                &[("", 8080)],
                &[("l-0", "n9", State::Ready)],
            ),
        ],
        &[node("n2", "127.0.0.1", dead.port())],
    );
    let c = client()?;
    let (status, body) = get(&c, addr, "s.ns").await?;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("ns/s-0:8080"), "{body}");
    let (status, body) = get(&c, addr, "lost.ns").await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn terminating_endpoints_get_no_new_requests_but_finish_in_flight_ones() -> anyhow::Result<()>
{
    let shutdown = CancellationToken::new();
    let pods = HttpPods::new();
    let hold = Arc::new(Hold::default());
    let drain_old = register(&pods, "ns", "old", 8080, Some(hold.clone())).await?;
    register(&pods, "ns", "new", 8080, None).await?;
    let (proxy, addr) = proxy_on("n1", pods.clone(), &shutdown).await?;
    let services = [service("ns", "app", &[("", 80, None)])];
    proxy.update(
        &services,
        &[slice(
            "ns",
            "app",
            "1",
            &[("", 8080)],
            &[("old", "n1", State::Ready)],
        )],
        &[],
    );
    let c = client()?;
    // A request that the old pod holds.
    let in_flight = tokio::spawn({
        let c = c.clone();
        async move { get(&c, addr, "app.ns").await }
    });
    eventually(|| hold.arrived.load(std::sync::atomic::Ordering::SeqCst) == 1).await?;
    let old_key = EndpointKey {
        namespace: "ns".into(),
        pod: "old".into(),
        port: 8080,
    };
    // The old pod starts terminating: the slice says so, the kubelet
    // drains the container.
    proxy.update(
        &services,
        &[slice(
            "ns",
            "app",
            "1",
            &[("", 8080)],
            &[("old", "n1", State::Draining), ("new", "n1", State::Ready)],
        )],
        &[],
    );
    for _ in 0..4 {
        let (status, body) = get(&c, addr, "app.ns").await?;
        assert_eq!((status, pod_of(&body)), (StatusCode::OK, "new"));
    }
    // The slice still lists only the draining pod (the new one not yet
    // ready): it keeps serving as the fallback...
    proxy.update(
        &services,
        &[slice(
            "ns",
            "app",
            "1",
            &[("", 8080)],
            &[("old", "n1", State::Draining)],
        )],
        &[],
    );
    // ...until its container stops taking requests: then 503, not an error
    // from a container that is gone.
    drain_old.cancel();
    eventually(|| !pods.contains(&old_key)).await?;
    let (status, body) = get(&c, addr, "app.ns").await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(!in_flight.is_finished());
    hold.release.notify_one();
    let (status, body) = in_flight.await??;
    assert_eq!((status, pod_of(&body)), (StatusCode::OK, "old"));
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn node_port_listeners_open_and_close_with_services() -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let pods = HttpPods::new();
    register(&pods, "ns", "web-0", 8080, None).await?;
    let proxy = Proxy::new(ProxyOptions::new("n1", LOCALHOST), pods)?;
    // Free ports, released for the listeners to take.
    let free = |_| async {
        Ok::<_, std::io::Error>(
            tokio::net::TcpListener::bind((LOCALHOST, 0))
                .await?
                .local_addr()?
                .port(),
        )
    };
    let np = free(()).await?;
    let busy = tokio::net::TcpListener::bind((LOCALHOST, 0)).await?;
    let busy_port = busy.local_addr()?.port();
    let with_service = |ports: &[(&str, u16, Option<u16>)]| {
        proxy.update(
            &[service("ns", "web", ports)],
            &[slice(
                "ns",
                "web",
                "1",
                &[("", 8080)],
                &[("web-0", "n1", State::Ready)],
            )],
            &[],
        )
    };
    let mut node_ports = nodeport::NodePorts::new(proxy.clone(), None);
    with_service(&[("", 80, Some(np))]);
    node_ports.reconcile(&shutdown).await;
    assert_eq!(
        node_ports.open_ports().into_iter().collect::<Vec<_>>(),
        [np]
    );

    let c = client()?;
    let r = c
        .get(format!("http://127.0.0.1:{np}/x"))
        // Neither Host nor an endpoint header matters on a node port.
        .header(ENDPOINT_HEADER, "ns/elsewhere:1")
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await?.starts_with("pod=web-0 path=/x"));

    // A port taken by someone else is skipped (and retried later).
    with_service(&[("", 80, Some(np)), ("b", 81, Some(busy_port))]);
    node_ports.reconcile(&shutdown).await;
    assert_eq!(
        node_ports.open_ports().into_iter().collect::<Vec<_>>(),
        [np]
    );
    drop(busy);
    node_ports.reconcile(&shutdown).await;
    let mut expected = vec![np, busy_port];
    expected.sort();
    assert_eq!(
        node_ports.open_ports().into_iter().collect::<Vec<_>>(),
        expected
    );

    // The Service turns ClusterIP: its node ports close.
    with_service(&[("", 80, None)]);
    node_ports.reconcile(&shutdown).await;
    assert!(node_ports.open_ports().is_empty());
    let fresh = client()?;
    eventually_async(|| async {
        fresh
            .get(format!("http://127.0.0.1:{np}/"))
            .send()
            .await
            .is_err()
    })
    .await?;
    node_ports.close_all().await;
    shutdown.cancel();
    Ok(())
}

/// Polls an async `cond` until it holds (10 s at most).
async fn eventually_async<F, Fut>(mut cond: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond().await {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("condition not met in time");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// An HTTP container whose own answer carries the gone header, as if it
/// tried to make the proxy send its request elsewhere.
struct ClaimsGone;

#[async_trait::async_trait]
impl Handler for ClaimsGone {
    async fn handle(&self, _req: Request<Body>) -> Response<Body> {
        let mut response = Response::new(Body::from("mine"));
        response
            .headers_mut()
            .insert(ENDPOINT_GONE_HEADER, HeaderValue::from_static("1"));
        response
    }
}

#[tokio::test]
async fn endpoints_gone_on_their_node_are_skipped_for_the_next_one() -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    // n2 runs cart-1 only: cart-0's pod was deleted there, and n1 has not
    // seen its endpoint go yet (both still listed Ready).
    let n2_pods = HttpPods::new();
    register(&n2_pods, "shop", "cart-1", 8080, None).await?;
    let (p1, a1) = proxy_on("n1", HttpPods::new(), &shutdown).await?;
    let (p2, a2) = proxy_on("n2", n2_pods.clone(), &shutdown).await?;
    let services = [
        service("shop", "cart", &[("", 80, None)]),
        service("shop", "gone", &[("", 80, None)]),
        service("shop", "claims", &[("", 80, None)]),
    ];
    let slices = [
        slice(
            "shop",
            "cart",
            "1",
            &[("", 8080)],
            &[
                ("cart-0", "n2", State::Ready),
                ("cart-1", "n2", State::Ready),
            ],
        ),
        slice(
            "shop",
            "gone",
            "1",
            &[("", 8080)],
            &[("g-0", "n2", State::Ready), ("g-1", "n2", State::Ready)],
        ),
        slice(
            "shop",
            "claims",
            "1",
            &[("", 8080)],
            &[("c-0", "n2", State::Ready), ("c-1", "n2", State::Ready)],
        ),
    ];
    let nodes = [
        node("n1", "127.0.0.1", a1.port()),
        node("n2", "127.0.0.1", a2.port()),
    ];
    p1.update(&services, &slices, &nodes);
    p2.update(&services, &slices, &nodes);
    let c = client()?;
    // Round-robin starts at each endpoint in turn: every request, with a
    // body or without, lands on cart-1.
    for i in 0..4 {
        let (status, body) = get(&c, a1, "cart.shop").await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(pod_of(&body), "cart-1", "{body}");
        let r = c
            .post(format!("http://{a1}/add"))
            .header("host", "cart.shop")
            .body(format!("apple-{i}"))
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().get(ENDPOINT_GONE_HEADER).is_none());
        let body = r.text().await?;
        assert!(body.starts_with("pod=cart-1 "), "{body}");
        assert!(body.ends_with(&format!("body=apple-{i}")), "{body}");
    }
    // So do wasi:http guests' calls.
    let req = Request::post("http://cart.shop/add")
        .body(Body::from("pear"))
        .map_err(anyhow::Error::from)?;
    let r = ServiceRouter::route(&p1, "shop", "cart", None, req).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.into_body().collect().await?.to_bytes();
    assert!(body.starts_with(b"pod=cart-1 "), "{body:?}");

    // Every endpoint gone: the Service has none to offer.
    let (status, body) = get(&c, a1, "gone.shop").await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    // A container cannot claim to be gone: its answer is passed on as it
    // is, once, without the header.
    for pod in ["c-0", "c-1"] {
        let key = EndpointKey {
            namespace: "shop".into(),
            pod: pod.into(),
            port: 8080,
        };
        let pods = n2_pods.clone();
        let k = key.clone();
        tokio::spawn(async move {
            pods.register(
                k,
                Arc::new(ClaimsGone),
                CancellationToken::new(),
                CancellationToken::new(),
            )
            .await
        });
        eventually(|| n2_pods.contains(&key)).await?;
    }
    let r = c
        .get(format!("http://{a1}/"))
        .header("host", "claims.shop")
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get(ENDPOINT_GONE_HEADER).is_none());
    assert_eq!(r.text().await?, "mine");
    shutdown.cancel();
    Ok(())
}
