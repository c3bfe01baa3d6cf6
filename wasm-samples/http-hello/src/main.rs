//! `http-hello`: a WAGI handler (a preview 1 command module run once per
//! request). WAGI passes the request as CGI: the method, path and query in
//! `REQUEST_METHOD`, `PATH_INFO` and `QUERY_STRING`, each request header as
//! `HTTP_<NAME>`, the query parameters as arguments and the body on stdin; the
//! module answers on stdout with CGI headers, a blank line and the body.
//!
//! Answers `Hello from <pod> at <path>` (the pod is `POD_NAME`, else
//! `HOSTNAME`), then the method, the query, the request headers it was given
//! and the body size. `/status/<code>` answers with that status, to show the
//! CGI `Status` header.
//!
//!     $ curl -s 'http://<node>:<port>/greet?name=wasm'
//!     Hello from http-hello at /greet?name=wasm

use std::io::{Read, Write};

fn main() {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let who = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "wasmkube".to_string());
    let method = var("REQUEST_METHOD");
    let path = var("PATH_INFO");
    let query = var("QUERY_STRING");

    let mut body = Vec::new();
    // A missing or unreadable stdin is an empty body: the greeting does not need it.
    let _ = std::io::stdin().read_to_end(&mut body);

    let mut headers: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("HTTP_"))
        .collect();
    headers.sort();

    let status = path
        .strip_prefix("/status/")
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (200..=599).contains(code))
        .unwrap_or(200);

    let target = if query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{query}")
    };
    let mut out = String::new();
    out.push_str("Content-Type: text/plain; charset=utf-8\n");
    if status != 200 {
        out.push_str(&format!("Status: {status}\n"));
    }
    out.push('\n');
    out.push_str(&format!("Hello from {who} at {target}\n"));
    out.push_str(&format!("method: {method}\n"));
    out.push_str(&format!("query: {query}\n"));
    let args: Vec<String> = std::env::args().skip(1).collect();
    out.push_str(&format!("args: {args:?}\n"));
    for (k, v) in &headers {
        out.push_str(&format!("{k}: {v}\n"));
    }
    out.push_str(&format!("body: {} bytes\n", body.len()));

    // The client may be gone; there is nobody left to tell.
    let _ = std::io::stdout().write_all(out.as_bytes());
}
