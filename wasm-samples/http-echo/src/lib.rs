//! `http-echo`: a wasi:http component (built for wasm32-wasip2) that answers
//! every request with what it received: method, path with query, headers and
//! body, plus the name of the pod that answered (`POD_NAME`, set from the
//! downward API), so requests spread over replicas are visible in responses.
//!
//! The answer is JSON (`application/json`), or plain text when the query has
//! `format=text`. Each response also carries `x-served-by: <pod>`, and each
//! request is logged as one line on stdout (`POST /hi 200 (5 bytes in)`).
//!
//!     $ curl -s 'http://<node>:<nodePort>/hi?x=1' -d payload
//!     {"pod":"echo-6f9c-abcde","method":"POST","path":"/hi?x=1",...}

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::StreamError;

/// Bodies larger than this are refused with 413: the echo keeps the whole body
/// in guest memory, whose size the pod's memory limit bounds.
const MAX_BODY: usize = 1024 * 1024;

struct Echo;

impl Guest for Echo {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let pod = env_var("POD_NAME").unwrap_or_else(|| "unknown".to_string());
        let method = method_name(&request.method());
        let path = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let headers = request.headers().entries();
        let body = match read_body(&request) {
            Ok(body) => body,
            Err(e) => {
                access_log(&method, &path, e.status(), 0);
                respond(
                    response_out,
                    e.status(),
                    &pod,
                    "text/plain",
                    e.message().as_bytes(),
                );
                return;
            }
        };

        let (content_type, text) = if query_has(&path, "format=text") {
            let mut out = format!("pod: {pod}\n{method} {path}\n");
            for (name, value) in &headers {
                out.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value)));
            }
            out.push('\n');
            out.push_str(&String::from_utf8_lossy(&body));
            ("text/plain; charset=utf-8", out)
        } else {
            let headers_json: Vec<String> = headers
                .iter()
                .map(|(name, value)| {
                    format!(
                        "[{},{}]",
                        json_string(name),
                        json_string(&String::from_utf8_lossy(value))
                    )
                })
                .collect();
            let out = format!(
                "{{\"pod\":{},\"method\":{},\"path\":{},\"headers\":[{}],\"body\":{}}}\n",
                json_string(&pod),
                json_string(&method),
                json_string(&path),
                headers_json.join(","),
                json_string(&String::from_utf8_lossy(&body)),
            );
            ("application/json", out)
        };
        access_log(&method, &path, 200, body.len());
        respond(response_out, 200, &pod, content_type, text.as_bytes());
    }
}

/// One line per request on stdout, which the kubelet keeps as the
/// container's log (`kubectl logs`, `wasmkube run` follows it).
fn access_log(method: &str, path: &str, status: u16, body_len: usize) {
    println!("{method} {path} {status} ({body_len} bytes in)");
}

wasi::http::proxy::export!(Echo);

/// Why a request body could not be read.
enum BodyError {
    TooLarge,
    Broken(String),
}

impl BodyError {
    fn status(&self) -> u16 {
        match self {
            BodyError::TooLarge => 413,
            BodyError::Broken(_) => 400,
        }
    }

    fn message(&self) -> String {
        match self {
            BodyError::TooLarge => format!("body larger than {MAX_BODY} bytes\n"),
            BodyError::Broken(e) => format!("reading the request body failed: {e}\n"),
        }
    }
}

fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, BodyError> {
    let body = request
        .consume()
        .map_err(|()| BodyError::Broken("body already consumed".to_string()))?;
    let stream = body
        .stream()
        .map_err(|()| BodyError::Broken("body stream unavailable".to_string()))?;
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                if out.len() + chunk.len() > MAX_BODY {
                    return Err(BodyError::TooLarge);
                }
                out.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(BodyError::Broken(e.to_debug_string()));
            }
        }
    }
    Ok(out)
}

/// Sends a complete response. Failures past this point cannot be reported to
/// the client any more (the status line is gone), so they end the response.
fn respond(out: ResponseOutparam, status: u16, pod: &str, content_type: &str, body: &[u8]) {
    let headers = Fields::new();
    // Values built here are valid header values; a refusal would only drop a header.
    let _ = headers.append("content-type", content_type.as_bytes());
    let _ = headers.append("x-served-by", pod.as_bytes());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    let Ok(stream) = outgoing.write() else {
        return;
    };
    // blocking-write-and-flush accepts at most 4096 bytes per call.
    for chunk in body.chunks(4096) {
        if stream.blocking_write_and_flush(chunk).is_err() {
            return;
        }
    }
    drop(stream);
    let _ = OutgoingBody::finish(outgoing, None);
}

fn env_var(name: &str) -> Option<String> {
    wasi::cli::environment::get_environment()
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".to_string(),
        Method::Head => "HEAD".to_string(),
        Method::Post => "POST".to_string(),
        Method::Put => "PUT".to_string(),
        Method::Delete => "DELETE".to_string(),
        Method::Connect => "CONNECT".to_string(),
        Method::Options => "OPTIONS".to_string(),
        Method::Trace => "TRACE".to_string(),
        Method::Patch => "PATCH".to_string(),
        Method::Other(other) => other.clone(),
    }
}

fn query_has(path: &str, pair: &str) -> bool {
    path.split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|p| p == pair))
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
