//! RFC 6902 JSON patch (`application/json-patch+json`), decoded like the
//! PATCH handler does. Input: `original\0operations`.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use wasmkube_api::patch;
use wasmkube_apiserver::registry::request::{BodyType, decode};

fuzz_target!(|data: &[u8]| {
    let (orig, body) = common::split_nul(data);
    let Some(original) = common::original(orig) else {
        return;
    };
    let Ok(ops) = decode(body, BodyType::JsonPatch) else {
        return;
    };
    if let Ok(patched) = patch::json_patch(&original, &ops) {
        common::assert_round_trips(&patched);
    }
});
