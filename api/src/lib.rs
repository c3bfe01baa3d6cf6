//! wasmkube-api: the types and wire shapes every wasmkube component shares.
//!
//! Resource types are k8s-openapi's, re-exported. This crate adds what the
//! Kubernetes API machinery adds on top of them: the resource registry
//! (kinds, plurals, verbs), `Status` errors, watch events, label and field
//! selectors, strategic-merge and merge patches, Table rendering, name
//! validation, per-kind defaults and validation, and wasm conventions
//! (image references, node labels).
//!
//! It does no I/O: no tokio, no axum, no wasmtime. Everything here is a pure
//! function of its inputs, so the apiserver, the controllers and the kubelet
//! agree on the rules by construction.

pub use k8s_openapi;

pub mod hop_by_hop;
pub mod image;
pub mod join;
pub mod names;
pub mod patch;
pub mod resources;
pub mod rules;
pub mod scheduling;
pub mod selector;
pub mod status;
pub mod table;
#[cfg(test)]
mod testing;
pub mod wasm;
pub mod watch;

#[cfg(test)]
mod robustness {
    //! Every function here takes network input: none may panic on any JSON.

    use crate::testing;
    use proptest::prelude::*;

    const KINDS: &[&str] = &[
        "Pod",
        "Node",
        "Namespace",
        "Event",
        "ConfigMap",
        "Secret",
        "Lease",
        "Deployment",
        "ReplicaSet",
        "DaemonSet",
        "Job",
        "Service",
        "Endpoints",
        "EndpointSlice",
        "Role",
        "ClusterRole",
        "RoleBinding",
        "ClusterRoleBinding",
        "ResourceQuota",
        "LimitRange",
        "Widget",
    ];

    proptest! {
        #[test]
        fn per_kind_rules_never_panic(kind in prop::sample::select(KINDS), old in testing::object(), new in testing::object()) {
            let mut defaulted = new.clone();
            crate::rules::defaults(kind, &mut defaulted);
            let _ = crate::rules::validate(kind, &defaulted);
            let _ = crate::rules::validate_update(kind, &old, &defaulted);
            let _ = crate::rules::unknown_fields(kind, &new);
            let _ = crate::rules::prepare_update(kind, &old, &new);
            let _ = crate::rules::prepare_status_update(kind, &old, &new);
            let _ = crate::rules::spec_changed(kind, &old, &new);
            let meta = new.get("metadata").cloned().unwrap_or_default();
            let _ = crate::names::validate_object_meta(&meta, true, kind);
        }

        #[test]
        fn defaults_are_idempotent(kind in prop::sample::select(KINDS), obj in testing::object()) {
            let mut once = obj;
            crate::rules::defaults(kind, &mut once);
            let mut twice = once.clone();
            crate::rules::defaults(kind, &mut twice);
            prop_assert_eq!(once, twice);
        }

        #[test]
        fn printing_never_panics_and_matches_the_columns(kind in prop::sample::select(KINDS), obj in testing::object()) {
            let now = jiff::Timestamp::UNIX_EPOCH;
            let cells = crate::table::cells(kind, &obj, now);
            prop_assert_eq!(cells.len(), crate::table::columns(kind).len());
            let _ = crate::table::table(kind, &[obj], serde_json::Value::Null, true, now);
        }

        #[test]
        fn patches_never_panic(original in testing::object(), patch in testing::value()) {
            let _ = crate::patch::strategic_merge(&original, &patch);
            let _ = crate::patch::merge_patch(&original, &patch);
            let _ = crate::patch::json_patch(&original, &patch);
            let _ = crate::patch::server_side_apply(Some(&original), &patch);
        }

        #[test]
        fn field_selection_never_panics(kind in prop::sample::select(KINDS), obj in testing::value(), field in prop::sample::select(crate::selector::supported_fields("Event"))) {
            let _ = crate::selector::field_value(kind, &obj, field);
            let _ = crate::selector::LabelSelector::default().matches_object(&obj);
        }
    }
}
