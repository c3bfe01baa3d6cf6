//! WAGI: a WASI preview 1 command module serving HTTP the CGI way.
//!
//! Per request a fresh instance from the module's cached `InstancePre`
//! runs `_start` with the CGI/1.1 variables (and `HTTP_<HEADER>` for the
//! request headers) in its environment after the container's own, the
//! path and the `&`-split query as argv, the request body on stdin, and
//! writes a CGI response to stdout: header lines (`Status:` sets the code,
//! a `Location:` without one answers 302), a blank line, the body. Its
//! stderr goes to the container log. WAGI modules have no outgoing HTTP.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use wasmtime::{Engine, InstancePre, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use super::{
    Body, Handler, HttpSpec, MAX_REQUEST_BODY, MAX_RESPONSE, MatchedRoute, RemoteAddr, text,
};
use crate::sandbox::{Host, MemoryLimit, new_store, timed};

/// Request headers not passed to the module (CGI leaves credentials and
/// hop-by-hop headers out).
const HIDDEN_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "connection",
    "upgrade",
];

/// Serves one WAGI container.
pub(crate) struct WagiHandler {
    engine: Engine,
    pre: InstancePre<Host<WasiP1Ctx>>,
    spec: Arc<HttpSpec>,
}

impl WagiHandler {
    pub(crate) fn new(
        engine: Engine,
        pre: InstancePre<Host<WasiP1Ctx>>,
        spec: Arc<HttpSpec>,
    ) -> WagiHandler {
        WagiHandler { engine, pre, spec }
    }

    async fn respond(&self, req: http::Request<Body>) -> http::Response<Body> {
        let spec = &self.spec;
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body is larger than {MAX_REQUEST_BODY} bytes"),
                );
            }
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body: {e}"),
                );
            }
        };
        let env = cgi_env(&parts, spec, body.len());
        let argv = argv(&parts.uri);
        let stdout = MemoryOutputPipe::new(MAX_RESPONSE);
        let mut builder = WasiCtxBuilder::new();
        builder
            .args(&argv)
            .envs(&env)
            .stdin(MemoryInputPipe::new(body))
            .stdout(stdout.clone())
            .stderr(spec.stderr.clone());
        for p in &spec.preopens {
            let perms = if p.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            if let Err(e) = builder.preopened_dir(&p.host, &p.guest, perms) {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("mounting {} at {}: {e}", p.host.display(), p.guest),
                );
            }
        }
        let host = Host {
            wasi: builder.build_p1(),
            // Each instance counts against its own limit; the container's
            // figure is the sum over the requests in flight.
            limits: MemoryLimit::sharing(spec.memory_limit, spec.usage.clone()),
        };
        let mut store = new_store(&self.engine, host, spec.cpu_limit_millis);
        let ran = timed(run(&self.pre, &mut store), spec.usage.clone()).await;
        let oom = store.data().limits.exceeded;
        drop(store);
        let failed = |message: String| {
            tracing::warn!(container = %spec.id, endpoint = %spec.key, "{message}");
            text(StatusCode::INTERNAL_SERVER_ERROR, message)
        };
        match ran {
            Ok(()) => {}
            Err(e) if oom => {
                return failed(format!(
                    "the module exceeded its memory limit of {} bytes: {e:#}",
                    spec.memory_limit
                ));
            }
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(I32Exit(0)) => {}
                Some(I32Exit(code)) => {
                    return failed(format!("the module exited with code {code}"));
                }
                None if format!("{e:#}").contains("write beyond capacity") => {
                    return bad_gateway(
                        spec,
                        format!("the module wrote more than {MAX_RESPONSE} bytes to stdout"),
                    );
                }
                None => return failed(format!("the module failed: {e:#}")),
            },
        }
        match parse_cgi(&stdout.contents()) {
            Ok(response) => response,
            Err(why) => bad_gateway(spec, why),
        }
    }
}

fn bad_gateway(spec: &HttpSpec, why: String) -> http::Response<Body> {
    tracing::warn!(container = %spec.id, endpoint = %spec.key, "bad CGI response: {why}");
    text(
        StatusCode::BAD_GATEWAY,
        format!("the WAGI module did not write a valid CGI response: {why}"),
    )
}

#[async_trait::async_trait]
impl Handler for WagiHandler {
    async fn handle(&self, req: http::Request<Body>) -> http::Response<Body> {
        let spec = &self.spec;
        let deadline = tokio::time::Instant::now() + spec.timeout;
        tokio::select! {
            biased;
            () = spec.stop.cancelled() => text(StatusCode::SERVICE_UNAVAILABLE, "the container is stopping"),
            r = tokio::time::timeout_at(deadline, self.respond(req)) => match r {
                Ok(response) => response,
                // Dropping the request's future dropped its store: the
                // instance is gone.
                Err(_) => {
                    tracing::warn!(container = %spec.id, endpoint = %spec.key, "request exceeded its deadline");
                    text(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("the request did not finish within its deadline of {:?}", spec.timeout),
                    )
                }
            },
        }
    }
}

/// Instantiates the module and calls `_start`.
async fn run(
    pre: &InstancePre<Host<WasiP1Ctx>>,
    store: &mut Store<Host<WasiP1Ctx>>,
) -> wasmtime::Result<()> {
    let instance = pre.instantiate_async(&mut *store).await?;
    let start = instance.get_typed_func::<(), ()>(&mut *store, "_start")?;
    start.call_async(&mut *store, ()).await
}

/// WAGI's argv: the path, then each `&`-separated query parameter.
pub fn argv(uri: &http::Uri) -> Vec<String> {
    let mut argv = vec![uri.path().to_string()];
    if let Some(q) = uri.query() {
        argv.extend(q.split('&').filter(|p| !p.is_empty()).map(str::to_string));
    }
    argv
}

/// The container's environment, then the CGI variables and request headers
/// (which replace container variables of the same name).
pub fn cgi_env(
    parts: &http::request::Parts,
    spec: &HttpSpec,
    body_len: usize,
) -> Vec<(String, String)> {
    let uri = &parts.uri;
    let prefix = parts
        .extensions
        .get::<MatchedRoute>()
        .map(|m| m.0.trim_end_matches('/').to_string())
        .unwrap_or_default();
    let remote = parts.extensions.get::<RemoteAddr>().map(|r| r.0);
    let header = |name: &http::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{}:{}", spec.server_name, spec.key.port));
    let query = uri.query().unwrap_or("").to_string();
    let path = uri.path().to_string();
    let full_url = format!(
        "http://{host}{prefix}{path}{}",
        if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        }
    );
    let mut cgi: Vec<(String, String)> = vec![
        ("AUTH_TYPE".into(), String::new()),
        ("CONTENT_LENGTH".into(), body_len.to_string()),
        ("CONTENT_TYPE".into(), header(&http::header::CONTENT_TYPE)),
        ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
        ("PATH_INFO".into(), percent_decode(&path)),
        ("PATH_TRANSLATED".into(), percent_decode(&path)),
        ("QUERY_STRING".into(), query),
        (
            "REMOTE_ADDR".into(),
            remote.map(|r| r.ip().to_string()).unwrap_or_default(),
        ),
        (
            "REMOTE_HOST".into(),
            remote.map(|r| r.ip().to_string()).unwrap_or_default(),
        ),
        ("REMOTE_USER".into(), String::new()),
        ("REQUEST_METHOD".into(), parts.method.as_str().to_string()),
        ("SCRIPT_NAME".into(), prefix.clone()),
        ("SERVER_NAME".into(), spec.server_name.clone()),
        ("SERVER_PORT".into(), spec.key.port.to_string()),
        ("SERVER_PROTOCOL".into(), format!("{:?}", parts.version)),
        ("SERVER_SOFTWARE".into(), "wasmkube-wagi/1".into()),
        ("X_FULL_URL".into(), full_url),
        ("X_MATCHED_ROUTE".into(), format!("{prefix}/...")),
        ("X_RAW_PATH_INFO".into(), path),
    ];
    for name in parts.headers.keys() {
        let lower = name.as_str();
        if HIDDEN_HEADERS.contains(&lower) || lower == "content-type" || lower == "content-length" {
            continue;
        }
        let values: Vec<&str> = parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if values.is_empty() {
            continue;
        }
        let var = format!("HTTP_{}", lower.to_ascii_uppercase().replace('-', "_"));
        cgi.push((var, values.join(", ")));
    }
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .filter(|(k, _)| !cgi.iter().any(|(c, _)| c == k))
        .cloned()
        .collect();
    env.extend(cgi);
    env
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads a CGI response: header lines, a blank line, the body. The error
/// says what is wrong, for the 502 and the log.
pub fn parse_cgi(out: &[u8]) -> Result<http::Response<Body>, String> {
    if out.is_empty() {
        return Err("it wrote nothing to stdout".into());
    }
    let crlf = find(out, b"\r\n\r\n").map(|i| (i, 4));
    let lf = find(out, b"\n\n").map(|i| (i, 2));
    let (end, sep) = match (crlf, lf) {
        (Some(a), Some(b)) => {
            if a.0 < b.0 {
                a
            } else {
                b
            }
        }
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => {
            return Err(
                "no blank line ends the headers (a CGI response starts with headers \
                 such as `Content-Type: text/plain`, then an empty line, then the body)"
                    .into(),
            );
        }
    };
    let head = std::str::from_utf8(&out[..end])
        .map_err(|_| "the headers are not valid UTF-8".to_string())?;
    let body = Bytes::copy_from_slice(&out[end + sep..]);
    let mut status = None;
    let mut location = false;
    let mut response = http::Response::new(Body::empty());
    for line in head.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("the header line {line:?} has no colon"));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("");
            let code = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| format!("the Status header {value:?} has no valid status code"))?;
            status = Some(code);
            continue;
        }
        if name.eq_ignore_ascii_case("location") {
            location = true;
        }
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{name:?} is not a valid header name"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("the value of header {name} is not valid"))?;
        response.headers_mut().append(name, value);
    }
    *response.status_mut() = status.unwrap_or(if location {
        StatusCode::FOUND
    } else {
        StatusCode::OK
    });
    *response.body_mut() = Body::from(body);
    Ok(response)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
