//! `labelSelector` and `fieldSelector` query values. Besides not panicking:
//! a parsed selector printed and parsed again is the same selector (the
//! apiserver and the watch cache print selectors back into requests), and
//! matching never depends on which of the two forms is used.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use wasmkube_api::selector::{self, FieldSelector, LabelSelector};

/// Kinds with their own field labels, and one that has only the common ones.
const KINDS: &[&str] = &[
    "Pod",
    "Node",
    "Namespace",
    "Event",
    "Secret",
    "ReplicaSet",
    "Job",
    "ConfigMap",
];

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    label(s);
    field(s);
});

fn label(s: &str) {
    let Ok(sel) = LabelSelector::parse(s) else {
        return;
    };
    let printed = sel.to_string();
    let again = match LabelSelector::parse(&printed) {
        Ok(again) => again,
        Err(e) => panic!("{s:?} parsed, but its printed form {printed:?} does not: {e}"),
    };
    assert_eq!(
        sel, again,
        "{s:?} printed as {printed:?} parses differently"
    );
    // Labels that hit the selector's own keys and values, so that matching
    // takes every branch, not only the absent-label ones.
    let mut labels = BTreeMap::new();
    for (i, r) in sel.requirements.iter().enumerate() {
        if i % 3 != 2 {
            let v = r
                .values
                .get(i % 2)
                .or(r.values.first())
                .cloned()
                .unwrap_or_default();
            labels.insert(r.key.clone(), v);
        }
    }
    let obj = json!({ "metadata": { "labels": labels } });
    let m = sel.matches(&labels);
    assert_eq!(m, again.matches(&labels));
    assert_eq!(m, sel.matches_object(&obj));
    assert_eq!(selector::labels_of(&obj), labels);
}

fn field(s: &str) {
    let Ok(sel) = FieldSelector::parse(s) else {
        return;
    };
    let printed = sel.to_string();
    let again = match FieldSelector::parse(&printed) {
        Ok(again) => again,
        Err(e) => panic!("{s:?} parsed, but its printed form {printed:?} does not: {e}"),
    };
    // Terms are kept in the order of their escaped text, which printing may
    // change (`a==x` prints as `a=x`); the selector is a conjunction, so
    // compare the requirements as sets.
    let key = |r: &selector::FieldRequirement| {
        (
            r.field.clone(),
            format!("{:?}", r.operator),
            r.value.clone(),
        )
    };
    let mut a: Vec<_> = sel.requirements.iter().map(key).collect();
    let mut b: Vec<_> = again.requirements.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "{s:?} printed as {printed:?} parses differently");
    let mut obj = json!({ "metadata": {}, "spec": {}, "status": {} });
    for r in &sel.requirements {
        if let Some(p) = r.field.split('.').try_fold(String::new(), |p, s| {
            (!s.is_empty() && !s.contains('~')).then(|| format!("{p}/{s}"))
        }) {
            set_pointer(&mut obj, &p, json!(r.value));
        }
        let _ = sel.required_value(&r.field);
    }
    for kind in KINDS {
        let _ = sel.validate_for(kind);
        assert_eq!(sel.matches(kind, &obj), again.matches(kind, &obj));
        for f in selector::supported_fields(kind) {
            let _ = selector::field_value(kind, &obj, f);
        }
    }
}

/// Sets `obj[pointer] = v`, creating objects on the way; gives up on a
/// scalar in the way.
fn set_pointer(obj: &mut serde_json::Value, pointer: &str, v: serde_json::Value) {
    let mut cur = obj;
    let segs: Vec<&str> = pointer.split('/').skip(1).collect();
    for (i, seg) in segs.iter().enumerate() {
        let Some(map) = cur.as_object_mut() else {
            return;
        };
        if i + 1 == segs.len() {
            map.insert((*seg).to_string(), v);
            return;
        }
        cur = map.entry((*seg).to_string()).or_insert_with(|| json!({}));
    }
}
