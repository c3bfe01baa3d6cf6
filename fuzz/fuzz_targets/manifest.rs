//! Manifests as POST/PUT bodies: JSON, YAML or Kubernetes protobuf through
//! the request decoder the handlers use, then the create and update steps
//! the registry runs on a decoded object before storing it (unknown-field
//! check, defaulting, create/update preparation, validation). Input: one
//! byte choosing the body type and, when the body names no kind served
//! here, the resource; then the body.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use wasmkube_api::{names, patch, resources, rules};
use wasmkube_apiserver::registry::object;
use wasmkube_apiserver::registry::request::{BodyType, decode_object};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let ty = match sel & 3 {
        0 => BodyType::Json,
        1 => BodyType::Yaml,
        _ => BodyType::ApplyPatch,
    };
    let Ok(decoded) = decode_object(body, ty) else {
        return;
    };
    let all = resources::all();
    let res = decoded
        .get("apiVersion")
        .and_then(Value::as_str)
        .zip(decoded.get("kind").and_then(Value::as_str))
        .and_then(|(v, k)| resources::by_kind(v, k))
        .unwrap_or(&all[usize::from(sel >> 2) % all.len()]);
    let kind = res.kind;

    // Create, in the registry's order.
    let mut obj = decoded.clone();
    let _ = rules::unknown_fields(kind, &obj);
    rules::defaults(kind, &mut obj);
    if kind == "Pod" {
        let qos = object::pod_qos_class(&obj);
        if let Some(o) = obj.as_object_mut() {
            o.insert(
                "status".into(),
                json!({ "phase": "Pending", "qosClass": qos }),
            );
        }
    }
    if object::name(&obj).is_empty() {
        object::set_meta(&mut obj, "name", json!("fuzz"));
    }
    object::set_meta(
        &mut obj,
        "uid",
        json!("00000000-0000-0000-0000-000000000001"),
    );
    rules::prepare_create(kind, &mut obj);
    if !valid(res, &obj) {
        return;
    }
    common::assert_round_trips(&obj);
    let _ = object::partial_metadata(&obj);
    let _ = object::labels(&obj);

    // The same body as an update of what was just created.
    let current = obj;
    let mut new = rules::prepare_update(kind, &current, &decoded);
    let _ = rules::prepare_status_update(kind, &current, &decoded);
    if !new.is_object() {
        return;
    }
    if let Some(o) = new.as_object_mut() {
        o.insert("kind".into(), json!(kind));
        o.insert("apiVersion".into(), json!(res.api_version()));
    }
    rules::defaults(kind, &mut new);
    let ok = valid(res, &new);
    let _ = rules::validate_update(kind, &current, &new);
    if ok {
        let _ = rules::spec_changed(kind, &current, &new);
        common::assert_round_trips(&new);
    }
});

/// The registry's `validate`: depth first (the per-kind rules walk the
/// object), then metadata and the kind's rules.
fn valid(res: &resources::ResourceInfo, obj: &Value) -> bool {
    if patch::deeper_than(obj, patch::MAX_DEPTH) {
        return false;
    }
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let causes = names::validate_object_meta(&meta, res.namespaced, res.kind);
    causes.is_empty() && rules::validate(res.kind, obj).is_empty()
}
