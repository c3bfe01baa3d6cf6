//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`):
//! the `k8s\0` magic, a `runtime.Unknown` envelope and the object's message,
//! decoded into JSON. The input is the body after the magic, which the
//! target adds so that no run is spent on rejected prefixes.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use wasmkube_api::patch;
use wasmkube_apiserver::protobuf::{MAGIC, decode_body};
use wasmkube_apiserver::registry::request::{BodyType, decode, delete_body};

fuzz_target!(|data: &[u8]| {
    let mut body = Vec::with_capacity(MAGIC.len() + data.len());
    body.extend_from_slice(MAGIC);
    body.extend_from_slice(data);
    let direct = decode_body(&body);
    if let Ok(v) = &direct {
        assert!(v.is_object(), "a protobuf body decoded to a non-object");
        // Embedded JSON (managedFields, RawExtension) may nest deeper than
        // JSON can be read back; the registry refuses such objects before
        // storing them (its depth check), so only shallower ones must
        // round-trip.
        if !patch::deeper_than(v, patch::MAX_DEPTH) {
            common::assert_round_trips(v);
        }
    }
    // The same bytes through the handlers' entry points.
    let via = decode(&body, BodyType::Json);
    assert_eq!(direct.is_ok(), via.is_ok());
    let _ = delete_body(body.into());
});
