//! Shared proptest strategies: arbitrary JSON shaped like Kubernetes
//! objects, so robustness properties reach the code paths real field names
//! select (list merge keys, container statuses, timestamps).

use proptest::prelude::*;
use serde_json::Value;

/// Field names that steer the per-kind code, plus neutral ones.
const KEYS: &[&str] = &[
    "metadata",
    "spec",
    "status",
    "name",
    "namespace",
    "labels",
    "creationTimestamp",
    "deletionTimestamp",
    "containers",
    "initContainers",
    "image",
    "ports",
    "containerPort",
    "port",
    "env",
    "volumes",
    "volumeMounts",
    "mountPath",
    "conditions",
    "type",
    "finalizers",
    "state",
    "lastState",
    "terminated",
    "waiting",
    "running",
    "reason",
    "exitCode",
    "signal",
    "restartCount",
    "ready",
    "started",
    "finishedAt",
    "containerStatuses",
    "initContainerStatuses",
    "phase",
    "nodeName",
    "restartPolicy",
    "data",
    "a",
    "b",
    "$patch",
    "$setElementOrder/containers",
    "$retainKeys",
    "$deleteFromPrimitiveList/finalizers",
];

/// Scalars, including the directive values and timestamps the code parses.
pub fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i64..100).prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "x",
            "web",
            "delete",
            "replace",
            "merge",
            "True",
            "Always",
            "2026-01-01T00:00:00Z"
        ])
        .prop_map(Value::from),
    ]
}

/// Arbitrary JSON with Kubernetes-like keys.
pub fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(KEYS.to_vec()).prop_map(String::from),
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An arbitrary JSON object with Kubernetes-like keys.
pub fn object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        prop::sample::select(KEYS.to_vec()).prop_map(String::from),
        value(),
        0..5,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}
