//! The request line and headers the REST handlers read before any body:
//! the path (`/api/v1/namespaces/ns/pods/name/status`), the query
//! parameters (selectors, limit, continue, resourceVersion, …) with the
//! list/watch filter built from them, and `Accept`/`Content-Type`.
//! Input: `path?query`, then optionally NUL and `Name: value` header lines.

#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use libfuzzer_sys::fuzz_target;
use wasmkube_apiserver::registry::request::{Params, body_type, negotiate, parse_path};

fuzz_target!(|data: &[u8]| {
    let (line, head) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let mut headers = HeaderMap::new();
    for l in head.split(|b| *b == b'\n') {
        let Some(colon) = l.iter().position(|b| *b == b':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&l[..colon]),
            HeaderValue::from_bytes(l[colon + 1..].trim_ascii()),
        ) {
            headers.append(n, v);
        }
    }
    let _ = negotiate(&headers);
    let _ = body_type(&headers);
    let Ok(uri) = Uri::try_from(line) else {
        return;
    };
    let target = parse_path(uri.path());
    let Ok(params) = Params::parse(&uri) else {
        return;
    };
    let _ = params.revision();
    let _ = params.list_from();
    if let Ok(t) = target {
        let _ = params.filter(t.res, t.namespace.as_deref());
    }
});
