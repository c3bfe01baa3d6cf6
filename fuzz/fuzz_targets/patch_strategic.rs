//! Strategic merge patch (`application/strategic-merge-patch+json`): the
//! body goes through the request decoder the PATCH handler uses, then is
//! applied to a stored object. Input: `original\0patch`.

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
    let Ok(doc) = decode(body, BodyType::StrategicMerge) else {
        return;
    };
    if let Ok(patched) = patch::strategic_merge(&original, &doc) {
        common::assert_round_trips(&patched);
    }
});
