//! `http-frontend`: a wasi:http component (built for wasm32-wasip2) that
//! answers each request by calling its backend through the backend's Service
//! name and wrapping the answer, so a response shows both the frontend and
//! the backend replica that served it.
//!
//! The backend is `http://$BACKEND/<same path and query>` (`BACKEND` defaults
//! to `backend.default`, the Service `backend` in namespace `default`). The
//! pod must list that host in the annotation
//! `wasmkube.io/allowed-outbound-hosts`; outgoing HTTP is denied otherwise,
//! and the frontend then answers 502 naming the refusal.
//!
//!     $ curl -s http://<node>:<nodePort>/hello
//!     {"frontend":"frontend-…","backend_status":200,"backend":{"pod":"backend-…",…}}

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest,
    OutgoingResponse, ResponseOutparam, Scheme,
};
use wasi::io::streams::StreamError;

/// Request and backend bodies are held whole in guest memory; beyond this the
/// frontend refuses rather than grow without bound.
const MAX_BODY: usize = 1024 * 1024;

struct Frontend;

impl Guest for Frontend {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let pod = env_var("POD_NAME").unwrap_or_else(|| "unknown".to_string());
        let backend = env_var("BACKEND").unwrap_or_else(|| "backend.default".to_string());
        let path = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let method = request.method();
        let body = match request
            .consume()
            .map_err(|()| "body already consumed".to_string())
        {
            Ok(incoming) => read_all(incoming),
            Err(e) => Err(e),
        };
        let body = match body {
            Ok(body) => body,
            Err(e) => {
                let msg = format!("frontend {pod}: reading the request body failed: {e}\n");
                respond(response_out, 400, "text/plain", msg.as_bytes());
                return;
            }
        };

        match call_backend(&backend, &method, &path, &body) {
            Ok((status, content_type, answer)) => {
                let wrapped = if content_type.starts_with("application/json") {
                    // The echo backend answers JSON: embed it as is so the
                    // result stays one JSON document.
                    String::from_utf8_lossy(&answer).trim_end().to_string()
                } else {
                    json_string(&String::from_utf8_lossy(&answer))
                };
                let out = format!(
                    "{{\"frontend\":{},\"backend_status\":{status},\"backend\":{wrapped}}}\n",
                    json_string(&pod)
                );
                respond(response_out, 200, "application/json", out.as_bytes());
            }
            Err(e) => {
                let msg = format!("frontend {pod}: calling http://{backend}{path} failed: {e}\n");
                respond(response_out, 502, "text/plain", msg.as_bytes());
            }
        }
    }
}

wasi::http::proxy::export!(Frontend);

/// Sends the request to the backend and returns its status, content type and body.
fn call_backend(
    authority: &str,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Result<(u16, String, Vec<u8>), String> {
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_method(method)
        .map_err(|()| "invalid method".to_string())?;
    request
        .set_scheme(Some(&Scheme::Http))
        .map_err(|()| "invalid scheme".to_string())?;
    request
        .set_authority(Some(authority))
        .map_err(|()| format!("invalid authority {authority:?}"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| format!("invalid path {path:?}"))?;
    let outgoing = request
        .body()
        .map_err(|()| "request body unavailable".to_string())?;

    let future = outgoing_handler::handle(request, None).map_err(|e| describe(&e))?;

    // The body is written after handing the request over: the host may start
    // sending headers while the body streams.
    {
        let stream = outgoing
            .write()
            .map_err(|()| "request body stream unavailable".to_string())?;
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| format!("writing the request body: {e:?}"))?;
        }
    }
    OutgoingBody::finish(outgoing, None).map_err(|e| describe(&e))?;

    let response = loop {
        match future.get() {
            Some(Ok(Ok(response))) => break response,
            Some(Ok(Err(e))) => return Err(describe(&e)),
            Some(Err(())) => return Err("response already taken".to_string()),
            None => future.subscribe().block(),
        }
    };
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .first()
        .map(|v| String::from_utf8_lossy(v).to_string())
        .unwrap_or_default();
    let incoming = response
        .consume()
        .map_err(|()| "response body unavailable".to_string())?;
    let answer = read_all(incoming)?;
    Ok((status, content_type, answer))
}

fn describe(e: &ErrorCode) -> String {
    match e {
        ErrorCode::HttpRequestDenied => "outgoing request denied (host not allowed)".to_string(),
        other => format!("{other:?}"),
    }
}

fn read_all(body: IncomingBody) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let stream = body
            .stream()
            .map_err(|()| "body stream unavailable".to_string())?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    if out.len() + chunk.len() > MAX_BODY {
                        return Err(format!("body larger than {MAX_BODY} bytes"));
                    }
                    out.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => return Err(e.to_debug_string()),
            }
        }
    }
    // The stream is a child of the body and must be dropped before finishing it.
    drop(IncomingBody::finish(body));
    Ok(out)
}

/// Sends a complete response. Failures past this point cannot be reported to
/// the client any more (the status line is gone), so they end the response.
fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.append("content-type", content_type.as_bytes());
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
