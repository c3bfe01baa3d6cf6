//! A WAGI guest's stdout parsed as a CGI response (headers, a blank line, the
//! body): the guest is untrusted, so any bytes must give a response or an
//! error, never a panic. Also WAGI's argv from a request URI.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmkube_runtime::http::wagi::{argv, parse_cgi};

fuzz_target!(|data: &[u8]| {
    if let Ok(resp) = parse_cgi(data) {
        // Headers the guest wrote end up in a real response.
        for (name, value) in resp.headers() {
            let _ = (name.as_str(), value.as_bytes());
        }
    }
    if let Ok(uri) = http::Uri::try_from(data) {
        let args = argv(&uri);
        assert_eq!(args.first().map(String::as_str), Some(uri.path()));
    }
});
