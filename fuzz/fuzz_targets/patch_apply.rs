//! Server-side apply (`application/apply-patch+yaml`, JSON or YAML body):
//! decoded like the PATCH handler does, applied both to a stored object and
//! as a create (no live object). Input: `live\0applied`.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use wasmkube_api::patch;
use wasmkube_apiserver::registry::request::{BodyType, decode};

fuzz_target!(|data: &[u8]| {
    let (live, body) = common::split_nul(data);
    let Some(live) = common::original(live) else {
        return;
    };
    let Ok(doc) = decode(body, BodyType::ApplyPatch) else {
        return;
    };
    if let Ok(applied) = patch::server_side_apply(Some(&live), &doc) {
        common::assert_round_trips(&applied);
    }
    if let Ok(created) = patch::server_side_apply(None, &doc) {
        common::assert_round_trips(&created);
    }
});
