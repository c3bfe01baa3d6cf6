//! Which Secrets and ConfigMaps a pod references: what a node may read for
//! the pods bound to it (the edges of Kubernetes' node authorizer graph,
//! `VisitPodSecretNames` / `VisitPodConfigmapNames`).

use serde_json::Value;

/// The kinds of object a pod can reference by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    Secret,
    ConfigMap,
}

impl RefKind {
    /// The kind of a core resource (plural), if pods reference it.
    pub fn of_resource(resource: &str) -> Option<RefKind> {
        match resource {
            "secrets" => Some(RefKind::Secret),
            "configmaps" => Some(RefKind::ConfigMap),
            _ => None,
        }
    }
}

/// `spec.nodeName` of a pod ("" when unscheduled).
pub fn node_name(pod: &Value) -> &str {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Whether `pod` (in its own namespace) references the `kind` object `name`
/// through a volume (secret, configMap, projected, or a volume plugin's
/// secretRef), an env `valueFrom`, an `envFrom`, or `imagePullSecrets`.
pub fn references(pod: &Value, kind: RefKind, name: &str) -> bool {
    let mut found = false;
    visit(pod, kind, &mut |n| found |= n == name);
    found
}

/// Every name of `kind` that `pod` references (duplicates possible).
pub fn referenced_names(pod: &Value, kind: RefKind) -> Vec<String> {
    let mut names = Vec::new();
    visit(pod, kind, &mut |n| names.push(n.to_string()));
    names
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn array<'a>(v: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Volume plugins whose credentials are a `secretRef` (Kubernetes'
/// `VisitPodSecretNames` list).
const SECRET_REF_VOLUMES: &[&str] = &[
    "cephfs",
    "cinder",
    "flexVolume",
    "iscsi",
    "rbd",
    "scaleIO",
    "storageos",
];

fn visit(pod: &Value, kind: RefKind, f: &mut dyn FnMut(&str)) {
    let Some(spec) = pod.get("spec") else {
        return;
    };
    if kind == RefKind::Secret {
        for s in array(spec, "/imagePullSecrets") {
            if let Some(n) = str_at(s, "/name") {
                f(n);
            }
        }
    }
    for vol in array(spec, "/volumes") {
        match kind {
            RefKind::Secret => {
                if let Some(n) = str_at(vol, "/secret/secretName") {
                    f(n);
                }
                for plugin in SECRET_REF_VOLUMES {
                    if let Some(n) = vol.get(*plugin).and_then(|p| str_at(p, "/secretRef/name")) {
                        f(n);
                    }
                }
                if let Some(n) = str_at(vol, "/azureFile/secretName") {
                    f(n);
                }
                if let Some(n) = str_at(vol, "/csi/nodePublishSecretRef/name") {
                    f(n);
                }
            }
            RefKind::ConfigMap => {
                if let Some(n) = str_at(vol, "/configMap/name") {
                    f(n);
                }
            }
        }
        let source = match kind {
            RefKind::Secret => "/secret/name",
            RefKind::ConfigMap => "/configMap/name",
        };
        for s in array(vol, "/projected/sources") {
            if let Some(n) = str_at(s, source) {
                f(n);
            }
        }
    }
    let (key_ref, env_from_ref) = match kind {
        RefKind::Secret => ("/valueFrom/secretKeyRef/name", "/secretRef/name"),
        RefKind::ConfigMap => ("/valueFrom/configMapKeyRef/name", "/configMapRef/name"),
    };
    for list in ["/containers", "/initContainers", "/ephemeralContainers"] {
        for c in array(spec, list) {
            for e in array(c, "/env") {
                if let Some(n) = str_at(e, key_ref) {
                    f(n);
                }
            }
            for e in array(c, "/envFrom") {
                if let Some(n) = str_at(e, env_from_ref) {
                    f(n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "nodeName": "n1",
                "imagePullSecrets": [{"name": "pull"}],
                "volumes": [
                    {"name": "a", "secret": {"secretName": "vol-secret"}},
                    {"name": "b", "configMap": {"name": "vol-cm"}},
                    {"name": "c", "projected": {"sources": [
                        {"secret": {"name": "proj-secret"}},
                        {"configMap": {"name": "proj-cm"}},
                        {"downwardAPI": {"items": []}}
                    ]}},
                    {"name": "d", "csi": {"driver": "x", "nodePublishSecretRef": {"name": "csi-secret"}}},
                    {"name": "e", "rbd": {"secretRef": {"name": "rbd-secret"}}},
                    {"name": "f", "azureFile": {"secretName": "az-secret"}},
                    {"name": "g", "emptyDir": {}}
                ],
                "containers": [{
                    "name": "c",
                    "env": [
                        {"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                        {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
                        {"name": "C", "value": "plain"}
                    ],
                    "envFrom": [
                        {"secretRef": {"name": "from-secret"}},
                        {"configMapRef": {"name": "from-cm"}}
                    ]
                }],
                "initContainers": [{
                    "name": "i",
                    "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "init-secret", "key": "k"}}}]
                }],
                "ephemeralContainers": [{
                    "name": "e",
                    "envFrom": [{"configMapRef": {"name": "eph-cm"}}]
                }]
            }
        })
    }

    #[test]
    fn finds_every_kind_of_reference() {
        let p = pod();
        let mut secrets = referenced_names(&p, RefKind::Secret);
        secrets.sort();
        assert_eq!(
            secrets,
            [
                "az-secret",
                "csi-secret",
                "env-secret",
                "from-secret",
                "init-secret",
                "proj-secret",
                "pull",
                "rbd-secret",
                "vol-secret"
            ]
        );
        let mut cms = referenced_names(&p, RefKind::ConfigMap);
        cms.sort();
        assert_eq!(cms, ["env-cm", "eph-cm", "from-cm", "proj-cm", "vol-cm"]);
        assert!(references(&p, RefKind::Secret, "vol-secret"));
        // The kinds do not mix.
        assert!(!references(&p, RefKind::Secret, "vol-cm"));
        assert!(!references(&p, RefKind::ConfigMap, "vol-secret"));
        assert!(!references(&p, RefKind::Secret, "other"));
        assert!(!references(&p, RefKind::Secret, ""));
    }

    #[test]
    fn tolerates_odd_shapes() {
        for p in [
            json!(null),
            json!({}),
            json!({"spec": null}),
            json!({"spec": {"volumes": "x", "containers": [1, null, {"env": {}}]}}),
            json!({"spec": {"imagePullSecrets": [{"name": 3}], "volumes": [{"secret": {"secretName": ""}}]}}),
        ] {
            assert!(referenced_names(&p, RefKind::Secret).is_empty(), "{p}");
            assert!(referenced_names(&p, RefKind::ConfigMap).is_empty(), "{p}");
        }
        assert_eq!(node_name(&pod()), "n1");
        assert_eq!(node_name(&json!({"spec": {}})), "");
    }
}
