//! One port-forward connection: SPDY/3.1 streams in pairs, each pair
//! serving HTTP/1.1 to the pod.
//!
//! kubectl opens, per local connection, an `error` stream and then a `data`
//! stream carrying the same `requestid` and `port` headers. A wasm pod has no
//! socket to splice the data stream into: it serves HTTP per request. So
//! the data stream's bytes are served by a hyper HTTP/1.1 server connection
//! right here, and each request it parses is forwarded to the pod through
//! its kubelet (`/pods/{ns}/{pod}/http/{port}/…`). The error stream carries
//! a message when a pair cannot be served, and is closed when the pair is
//! done, which is what kubectl waits for before it forgets the connection.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use wasmkube_api::hop_by_hop::strip_hop_by_hop;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures::{Sink, SinkExt, Stream, StreamExt};
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::spdy::{self, Decoder, Encoder, Frame, Headers};
use crate::tunnel::Tunnels;

/// Bytes from the client, in whatever pieces the transport delivers.
pub type Inbound = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;
/// Bytes to the client.
pub type Outbound = Pin<Box<dyn Sink<Bytes, Error = io::Error> + Send>>;

/// Stream pairs one connection may have open at once; kubectl opens one per
/// local connection, so this bounds what one client can make us hold.
const MAX_PAIRS: usize = 128;
/// Frames queued for the writer.
const OUT_QUEUE: usize = 256;
/// DATA frames queued per stream before the reader waits.
const STREAM_QUEUE: usize = 32;
/// Size of the in-memory pipe between a data stream and its HTTP server,
/// and of the DATA frames we send.
const PIPE: usize = 64 << 10;
const CHUNK: usize = 16 << 10;
/// How long the pod (through its kubelet) may take to answer with headers.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);

/// The pod being forwarded to, resolved before the upgrade.
#[derive(Debug)]
pub struct Target {
    pub namespace: String,
    pub pod: String,
    /// The pod's uid, quoted in error messages as the kubelet does.
    pub uid: String,
    /// The Node object the pod is bound to.
    pub node: Value,
    /// (port, container) of every HTTP container.
    pub http_ports: Vec<(u16, String)>,
    pub tunnels: Tunnels,
}

impl Target {
    /// Why `port` cannot be forwarded, if it cannot.
    pub fn refuse(&self, port: &str) -> Option<String> {
        let listed = super::describe_ports(&self.http_ports);
        match port.parse::<u16>() {
            Ok(p) if p > 0 && self.http_ports.iter().any(|(hp, _)| *hp == p) => None,
            Ok(p) if p > 0 => Some(format!(
                "port {p} is not an HTTP port of pod {}/{}: wasm pods serve HTTP per request \
                 and only their HTTP container ports can be forwarded ({listed})",
                self.namespace, self.pod
            )),
            _ => Some(format!("invalid port {port:?}")),
        }
    }
}

/// A stream's inbound side: where its DATA goes.
struct StreamIn {
    tx: Option<mpsc::Sender<Bytes>>,
}

/// Streams of one `requestid`, until both are there.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<(u32, mpsc::Receiver<Bytes>)>,
    port: String,
}

/// Runs one connection until the client goes away, sends GOAWAY or breaks
/// the protocol, or `cancel` fires.
pub async fn run(
    target: Arc<Target>,
    mut inbound: Inbound,
    outbound: Outbound,
    cancel: CancellationToken,
) {
    let cancel = cancel.child_token();
    let (out_tx, out_rx) = mpsc::channel::<Frame>(OUT_QUEUE);
    let writer = tokio::spawn(write_frames(outbound, out_rx, cancel.clone()));
    let mut decoder = Decoder::new();
    let mut streams: HashMap<u32, StreamIn> = HashMap::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut last_stream = 0u32;
    // Pairs report here when they are done, so their streams are forgotten.
    let (done_tx, mut done_rx) = mpsc::channel::<[u32; 2]>(MAX_PAIRS);
    let reason = 'conn: loop {
        let chunk = tokio::select! {
            () = cancel.cancelled() => break 'conn "cancelled".to_string(),
            Some(ids) = done_rx.recv() => {
                for id in ids {
                    streams.remove(&id);
                }
                continue;
            }
            c = inbound.next() => c,
        };
        let chunk = match chunk {
            None => break "client closed the connection".to_string(),
            Some(Err(e)) => break format!("reading: {e}"),
            Some(Ok(c)) => c,
        };
        decoder.push(&chunk);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    let _ = out_tx
                        .send(Frame::GoAway {
                            last_good_stream_id: last_stream,
                            status: spdy::rst::PROTOCOL_ERROR,
                        })
                        .await;
                    break 'conn format!("protocol error: {e}");
                }
            };
            let send = |f: Frame| {
                let out = out_tx.clone();
                async move { out.send(f).await.is_ok() }
            };
            match frame {
                Frame::SynStream {
                    stream_id, headers, ..
                } => {
                    // Client streams are odd and increasing (SPDY/3 2.3.2).
                    if stream_id % 2 == 0 || stream_id <= last_stream {
                        send(Frame::RstStream {
                            stream_id,
                            status: spdy::rst::PROTOCOL_ERROR,
                        })
                        .await;
                        continue;
                    }
                    last_stream = stream_id;
                    let conn = Conn {
                        target: &target,
                        out: &out_tx,
                        done: &done_tx,
                        cancel: &cancel,
                    };
                    if !open_stream(conn, stream_id, &headers, &mut streams, &mut pairs).await {
                        break 'conn "writer closed".to_string();
                    }
                }
                Frame::Data {
                    stream_id,
                    fin,
                    data,
                } => {
                    let Some(s) = streams.get_mut(&stream_id) else {
                        // Late data for a stream whose pair is done is
                        // dropped; a stream never opened is an error.
                        if stream_id > last_stream {
                            send(Frame::RstStream {
                                stream_id,
                                status: spdy::rst::INVALID_STREAM,
                            })
                            .await;
                        }
                        continue;
                    };
                    if !data.is_empty()
                        && let Some(tx) = &s.tx
                        && tx.send(data).await.is_err()
                    {
                        // The pair is done; what the client still sends is moot.
                        s.tx = None;
                    }
                    if fin {
                        s.tx = None;
                    }
                }
                Frame::RstStream { stream_id, status } => {
                    tracing::debug!(stream_id, status, "port-forward stream reset by the client");
                    streams.remove(&stream_id);
                }
                Frame::Ping { id } => {
                    // Echo the client's pings (odd ids); ours would be even.
                    if id % 2 == 1 && !send(Frame::Ping { id }).await {
                        break 'conn "writer closed".to_string();
                    }
                }
                Frame::GoAway { .. } => break 'conn "client sent GOAWAY".to_string(),
                Frame::SynReply { .. }
                | Frame::Headers { .. }
                | Frame::Settings { .. }
                | Frame::WindowUpdate { .. }
                | Frame::Unknown { .. } => {}
            }
        }
    };
    tracing::debug!(namespace = %target.namespace, pod = %target.pod, %reason, "port-forward connection ended");
    cancel.cancel();
    drop(out_tx);
    // A client that stopped reading cannot hold the connection open.
    if tokio::time::timeout(FINAL_FLUSH, writer).await.is_err() {
        tracing::debug!("port-forward: the client did not take the last frames");
    }
}

/// How long the last frames of a closing connection may take to be sent.
const FINAL_FLUSH: Duration = Duration::from_secs(5);

/// What a new pair needs from its connection.
struct Conn<'a> {
    target: &'a Arc<Target>,
    out: &'a mpsc::Sender<Frame>,
    done: &'a mpsc::Sender<[u32; 2]>,
    cancel: &'a CancellationToken,
}

/// Registers a new stream and, once its pair is complete, starts serving it.
/// False when the writer is gone.
async fn open_stream(
    conn: Conn<'_>,
    stream_id: u32,
    headers: &Headers,
    streams: &mut HashMap<u32, StreamIn>,
    pairs: &mut HashMap<String, Pair>,
) -> bool {
    let out = conn.out;
    let kind = Frame::header(headers, "streamtype").unwrap_or("");
    let port = Frame::header(headers, "port").unwrap_or("").to_string();
    // Clients before requestid paired streams by port alone.
    let request = Frame::header(headers, "requestid")
        .map(str::to_string)
        .unwrap_or_else(|| format!("port:{port}"));
    tracing::debug!(stream_id, kind, %port, %request, "port-forward stream opened");
    let known = kind == "error" || kind == "data";
    let room =
        pairs.contains_key(&request) || (pairs.len() < MAX_PAIRS && streams.len() < 2 * MAX_PAIRS);
    if !known || !room {
        let status = if known {
            spdy::rst::REFUSED_STREAM
        } else {
            spdy::rst::PROTOCOL_ERROR
        };
        return out
            .send(Frame::RstStream { stream_id, status })
            .await
            .is_ok();
    }
    if out
        .send(Frame::SynReply {
            stream_id,
            fin: false,
            headers: Vec::new(),
        })
        .await
        .is_err()
    {
        return false;
    }
    let pair = pairs.entry(request.clone()).or_default();
    pair.port = port;
    if kind == "error" {
        if pair.error.replace(stream_id).is_some() {
            return out
                .send(Frame::RstStream {
                    stream_id,
                    status: spdy::rst::STREAM_IN_USE,
                })
                .await
                .is_ok();
        }
        // kubectl writes nothing on the error stream; anything it does
        // send is read and dropped.
        streams.insert(stream_id, StreamIn { tx: None });
    } else {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        if pair.data.replace((stream_id, rx)).is_some() {
            return out
                .send(Frame::RstStream {
                    stream_id,
                    status: spdy::rst::STREAM_IN_USE,
                })
                .await
                .is_ok();
        }
        streams.insert(stream_id, StreamIn { tx: Some(tx) });
    }
    if pair.error.is_some()
        && pair.data.is_some()
        && let Some(Pair {
            error: Some(error),
            data: Some((data, rx)),
            port,
        }) = pairs.remove(&request)
    {
        let done = conn.done.clone();
        let pair = serve_pair(
            conn.target.clone(),
            port,
            error,
            data,
            rx,
            out.clone(),
            conn.cancel.clone(),
        );
        tokio::spawn(async move {
            pair.await;
            let _ = done.send([error, data]).await;
        });
    }
    true
}

/// Serves one (error, data) pair until either side is done.
async fn serve_pair(
    target: Arc<Target>,
    port: String,
    error_id: u32,
    data_id: u32,
    mut from_client: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Frame>,
    cancel: CancellationToken,
) {
    let fin = |stream_id| Frame::Data {
        stream_id,
        fin: true,
        data: Bytes::new(),
    };
    if let Some(why) = target.refuse(&port) {
        // The kubelet's wording, which kubectl prints after "an error
        // occurred forwarding L -> R: ".
        let msg = format!(
            "error forwarding port {port} to pod {}, uid {}: {why}",
            target.pod, target.uid
        );
        tracing::info!(namespace = %target.namespace, pod = %target.pod, %port, "port-forward refused: {why}");
        let _ = out
            .send(Frame::Data {
                stream_id: error_id,
                fin: false,
                data: Bytes::from(msg),
            })
            .await;
        let _ = out.send(fin(data_id)).await;
        let _ = out.send(fin(error_id)).await;
        return;
    }
    let Ok(port_num) = port.parse::<u16>() else {
        return;
    };
    let (pipe, server_side) = tokio::io::duplex(PIPE);
    let (mut pipe_rd, mut pipe_wr) = tokio::io::split(pipe);

    // Client → HTTP server.
    let feed_cancel = cancel.clone();
    let feed = async move {
        loop {
            let next = tokio::select! {
                () = feed_cancel.cancelled() => None,
                b = from_client.recv() => b,
            };
            let Some(bytes) = next else { break };
            if pipe_wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
        // The client half-closed: the HTTP server reads EOF.
        let _ = pipe_wr.shutdown().await;
    };

    // HTTP server → client.
    let drain_out = out.clone();
    let drain = async move {
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            buf.reserve(CHUNK);
            match pipe_rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let frame = Frame::Data {
                        stream_id: data_id,
                        fin: false,
                        data: buf.split().freeze(),
                    };
                    if drain_out.send(frame).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = drain_out.send(fin(data_id)).await;
    };

    let svc_target = target.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let t = svc_target.clone();
        async move { Ok::<_, Infallible>(forward(&t, port_num, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .half_close(true)
        .serve_connection(TokioIo::new(server_side), service);
    let serve_cancel = cancel.clone();
    let serve = async move {
        tokio::select! {
            r = conn => if let Err(e) = r {
                tracing::debug!(error = %e, "port-forward HTTP connection ended with an error");
            },
            () = serve_cancel.cancelled() => {}
        }
    };
    tokio::join!(feed, drain, serve);
    tracing::debug!(error_id, data_id, "port-forward pair done");
    // The pair is over: closing the error stream tells kubectl so.
    let _ = out.send(fin(error_id)).await;
}

/// The kubelet path of `path_and_query` on the pod's HTTP port.
pub fn kubelet_path(namespace: &str, pod: &str, port: u16, path_and_query: &str) -> String {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let rest = path_and_query.strip_prefix('/').unwrap_or(path_and_query);
    format!("/pods/{}/{}/http/{port}/{rest}", enc(namespace), enc(pod))
}

/// One request from the forwarded connection, answered by the pod.
async fn forward(target: &Target, port: u16, req: Request<Incoming>) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let path = kubelet_path(&target.namespace, &target.pod, port, &path_and_query);
    strip_hop_by_hop(&mut parts.headers);
    let mut builder = Request::builder().method(parts.method).uri(path);
    if let Some(h) = builder.headers_mut() {
        *h = parts.headers;
    }
    let upstream = match builder.body(Body::new(body)) {
        Ok(r) => r,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("invalid request: {e}\n")),
    };
    let node_name = target
        .node
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let sent = tokio::time::timeout(
        RESPONSE_TIMEOUT,
        target.tunnels.kubelet_request(&target.node, upstream),
    )
    .await;
    match sent {
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body)
        }
        Ok(Err(why)) => plain(
            StatusCode::BAD_GATEWAY,
            format!("unable to reach the kubelet of node {node_name:?}: {why}\n"),
        ),
        Err(_) => plain(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "pod {}/{} did not answer within {RESPONSE_TIMEOUT:?}\n",
                target.namespace, target.pod
            ),
        ),
    }
}

fn plain(code: StatusCode, text: String) -> Response<Body> {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Writes queued frames until the queue closes, the transport fails or
/// `cancel` fires (which also fires when writing fails).
async fn write_frames(
    mut sink: Outbound,
    mut rx: mpsc::Receiver<Frame>,
    cancel: CancellationToken,
) {
    let mut encoder = Encoder::new();
    let mut buf = BytesMut::new();
    loop {
        // Queued frames first: when the connection ends, what it queued
        // last (a GOAWAY, a pair's final error) still reaches the client.
        let frame = tokio::select! {
            biased;
            f = rx.recv() => f,
            () = cancel.cancelled() => break,
        };
        let Some(frame) = frame else { break };
        if let Err(e) = encoder.encode(&frame, &mut buf) {
            tracing::warn!(error = %e, "port-forward: cannot encode a frame");
            break;
        }
        // Batch what is already queued into one transport write.
        while buf.len() < PIPE {
            match rx.try_recv() {
                Ok(f) => {
                    if let Err(e) = encoder.encode(&f, &mut buf) {
                        tracing::warn!(error = %e, "port-forward: cannot encode a frame");
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        if let Err(e) = sink.send(buf.split().freeze()).await {
            tracing::debug!(error = %e, "port-forward: writing to the client failed");
            break;
        }
    }
    let _ = sink.close().await;
    cancel.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_kubelet_paths() {
        assert_eq!(
            kubelet_path("default", "echo", 8080, "/a/b?x=1"),
            "/pods/default/echo/http/8080/a/b?x=1"
        );
        assert_eq!(
            kubelet_path("default", "echo", 80, "/"),
            "/pods/default/echo/http/80/"
        );
    }
}

/// The session driven by a scripted client over in-memory transports, with
/// a stand-in kubelet on a loopback port serving the pod HTTP route.
#[cfg(test)]
mod session_tests {
    use super::*;
    use axum::extract::Path;
    use futures::channel::mpsc as fmpsc;
    use serde_json::json;

    struct Client {
        to_server: fmpsc::Sender<io::Result<Bytes>>,
        from_server: fmpsc::Receiver<Bytes>,
        enc: Encoder,
        dec: Decoder,
        done: tokio::task::JoinHandle<()>,
    }

    impl Client {
        async fn send(&mut self, f: Frame) {
            let mut b = BytesMut::new();
            assert!(self.enc.encode(&f, &mut b).is_ok());
            let _ = self.to_server.send(Ok(b.freeze())).await;
        }

        async fn send_raw(&mut self, b: &'static [u8]) {
            let _ = self.to_server.send(Ok(Bytes::from_static(b))).await;
        }

        /// The next frame from the server (None when it closed).
        async fn next(&mut self) -> Option<Frame> {
            loop {
                match self.dec.next_frame() {
                    Ok(Some(f)) => return Some(f),
                    Ok(None) => {}
                    Err(e) => panic!("server sent a bad frame: {e}"),
                }
                let chunk = tokio::time::timeout(Duration::from_secs(20), self.from_server.next())
                    .await
                    .ok()??;
                self.dec.push(&chunk);
            }
        }

        /// Frames until stream `id` is finished; returns its data and the
        /// other frames seen.
        async fn read_stream(&mut self, id: u32) -> (Vec<u8>, Vec<Frame>) {
            let mut data = Vec::new();
            let mut other = Vec::new();
            while let Some(f) = self.next().await {
                match f {
                    Frame::Data {
                        stream_id,
                        fin,
                        data: d,
                    } if stream_id == id => {
                        data.extend_from_slice(&d);
                        if fin {
                            break;
                        }
                    }
                    f => other.push(f),
                }
            }
            (data, other)
        }
    }

    fn syn(id: u32, kind: &str, port: &str, request: &str) -> Frame {
        Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            fin: false,
            unidirectional: false,
            headers: vec![
                ("streamtype".into(), kind.into()),
                ("port".into(), port.into()),
                ("requestid".into(), request.into()),
            ],
        }
    }

    fn data(id: u32, fin: bool, d: &'static [u8]) -> Frame {
        Frame::Data {
            stream_id: id,
            fin,
            data: Bytes::from_static(d),
        }
    }

    async fn kubelet() -> u16 {
        async fn echo(
            Path(p): Path<(String, String, u16, String)>,
            req: axum::extract::Request,
        ) -> String {
            let method = req.method().to_string();
            let query = req.uri().query().unwrap_or("").to_string();
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            format!(
                "{method} {}/{} port {} /{}?{query} body={}",
                p.0,
                p.1,
                p.2,
                p.3,
                String::from_utf8_lossy(&body)
            )
        }
        let app = axum::Router::new().route(
            "/pods/{ns}/{pod}/http/{port}/{*path}",
            axum::routing::any(echo),
        );
        let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
            panic!("bind");
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        port
    }

    async fn start() -> Client {
        let port = kubelet().await;
        let target = Arc::new(Target {
            namespace: "default".into(),
            pod: "echo".into(),
            uid: "uid-1".into(),
            node: json!({
                "metadata": {"name": "n1"},
                "status": {
                    "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
                },
            }),
            http_ports: vec![(8080, "web".into())],
            tunnels: Tunnels::default(),
        });
        let (to_server, inbound) = fmpsc::channel::<io::Result<Bytes>>(64);
        let (outbound, from_server) = fmpsc::channel::<Bytes>(64);
        let done = tokio::spawn(run(
            target,
            Box::pin(inbound),
            Box::pin(outbound.sink_map_err(io::Error::other)),
            CancellationToken::new(),
        ));
        Client {
            to_server,
            from_server,
            enc: Encoder::new(),
            dec: Decoder::new(),
            done,
        }
    }

    #[tokio::test]
    async fn serves_http_requests_on_a_forwarded_stream_pair() {
        let mut c = start().await;
        c.send(Frame::Ping { id: 1 }).await;
        c.send(syn(1, "error", "8080", "0")).await;
        c.send(data(1, true, b"")).await;
        c.send(syn(3, "data", "8080", "0")).await;
        // Two requests on one connection, the second with a body; then
        // the client half-closes, as kubectl does when its local side ends.
        c.send(data(3, false, b"GET /a/b?x=1 HTTP/1.1\r\nHost: l\r\n\r\n"))
            .await;
        c.send(data(
            3,
            true,
            b"POST /up HTTP/1.1\r\nHost: l\r\nContent-Length: 5\r\n\r\nhello",
        ))
        .await;
        let (bytes, other) = c.read_stream(3).await;
        let text = String::from_utf8_lossy(&bytes);
        assert!(other.contains(&Frame::Ping { id: 1 }), "{other:?}");
        for id in [1, 3] {
            assert!(
                other
                    .iter()
                    .any(|f| matches!(f, Frame::SynReply { stream_id, .. } if *stream_id == id)),
                "reply to {id}: {other:?}"
            );
        }
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
        assert!(
            text.contains("GET default/echo port 8080 /a/b?x=1 body="),
            "{text}"
        );
        assert!(
            text.contains("POST default/echo port 8080 /up? body=hello"),
            "{text}"
        );
        // The error stream closes, empty, once the pair is done.
        let (err, _) = c.read_stream(1).await;
        assert!(err.is_empty(), "{}", String::from_utf8_lossy(&err));
    }

    #[tokio::test]
    async fn a_port_that_is_not_http_gets_a_message_on_the_error_stream() {
        let mut c = start().await;
        c.send(syn(1, "error", "9999", "7")).await;
        c.send(syn(3, "data", "9999", "7")).await;
        let (err, _) = c.read_stream(1).await;
        let msg = String::from_utf8_lossy(&err);
        assert!(
            msg.starts_with(
                "error forwarding port 9999 to pod echo, uid uid-1: port 9999 is not an HTTP port"
            ) && msg.contains("8080 (container web)"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn garbage_ends_the_connection_with_goaway() {
        let mut c = start().await;
        c.send_raw(&[0x80, 0x07, 0, 1, 0, 0, 0, 0]).await;
        let mut saw_goaway = false;
        while let Some(f) = c.next().await {
            saw_goaway |= matches!(f, Frame::GoAway { .. });
        }
        assert!(saw_goaway);
        assert!(
            tokio::time::timeout(Duration::from_secs(20), &mut c.done)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn unknown_stream_types_are_reset() {
        let mut c = start().await;
        c.send(syn(1, "stdin", "8080", "0")).await;
        let f = c.next().await;
        assert_eq!(
            f,
            Some(Frame::RstStream {
                stream_id: 1,
                status: spdy::rst::PROTOCOL_ERROR
            })
        );
    }
}
