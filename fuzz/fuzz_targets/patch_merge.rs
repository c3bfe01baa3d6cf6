//! RFC 7386 JSON merge patch (`application/merge-patch+json`), decoded like
//! the PATCH handler does. Input: `original\0patch`. Besides not panicking,
//! the result must round-trip through JSON and a merge patch is idempotent
//! (RFC 7386: applying it twice changes nothing more).

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
    let Ok(doc) = decode(body, BodyType::MergePatch) else {
        return;
    };
    let once = patch::merge_patch(&original, &doc);
    common::assert_round_trips(&once);
    let twice = patch::merge_patch(&once, &doc);
    assert_eq!(
        once, twice,
        "a merge patch applied twice changed the object again"
    );
});
