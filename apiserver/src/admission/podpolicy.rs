//! The server's node-level pod policy: which host directories pods may
//! mount and how much memory and CPU one pod may be given. The kubelet
//! checks hostPath again on its node (after resolving symlinks, against its
//! own `--allow-host-path`); refusing here tells the user at `kubectl
//! apply` instead of in a pod event.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;
use wasmkube_api::resources::ResourceInfo;
use wasmkube_api::rules::quota::{self, CPU, MEMORY};

use super::Policy;

/// Every finding of the policy for a pod.
pub fn check_pod(policy: &Policy, pod: &Value) -> Vec<String> {
    match pod.get("spec") {
        Some(spec) => check_spec(policy, spec),
        None => Vec::new(),
    }
}

/// The pod template spec of a workload (Deployment, ReplicaSet,
/// DaemonSet, Job), whose pods the policy will judge.
pub fn template_spec<'a>(res: &ResourceInfo, obj: &'a Value) -> Option<&'a Value> {
    if !matches!(
        (res.group, res.kind),
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet") | ("batch", "Job")
    ) {
        return None;
    }
    obj.pointer("/spec/template/spec")
}

/// Every finding of the policy for a pod spec.
pub fn check_spec(policy: &Policy, spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for v in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(path) = v.pointer("/hostPath/path").and_then(Value::as_str) else {
            continue;
        };
        let volume = v.get("name").and_then(Value::as_str).unwrap_or("");
        if !host_path_allowed(&policy.allowed_host_paths, path) {
            let allowed = if policy.allowed_host_paths.is_empty() {
                "this server allows none; start it with --allow-host-path <dir> to allow a directory"
                    .to_string()
            } else {
                format!(
                    "allowed below: {}",
                    policy
                        .allowed_host_paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            out.push(format!(
                "hostPath volumes are not allowed by the server's policy: volume {volume:?} uses hostPath {path:?} ({allowed})"
            ));
        }
    }
    let res = quota::pod_spec_resources(spec);
    for (resource, max, flag) in [
        (
            MEMORY,
            policy.max_pod_memory.map(|b| i128::from(b) * 1000),
            "--max-pod-memory",
        ),
        (CPU, policy.max_pod_cpu.map(i128::from), "--max-pod-cpu"),
    ] {
        let Some(max) = max else { continue };
        let shown = quota::format_millis(resource, max);
        match res.limits.get(resource) {
            Some(limit) if *limit > max => out.push(format!(
                "maximum {resource} limit per pod is {shown} ({flag}), but the pod's limit is {}",
                quota::format_millis(resource, *limit)
            )),
            Some(_) => {}
            None => {
                let unlimited = res
                    .missing_limits
                    .get(resource)
                    .map(|c| c.join(", "))
                    .unwrap_or_default();
                out.push(format!(
                    "maximum {resource} limit per pod is {shown} ({flag}), but no {resource} limit is specified for: {unlimited}"
                ));
            }
        }
    }
    out
}

/// Whether `path` lies below one of `allowed`, judged on the normalized
/// path: a `..` anywhere is refused outright (the kubelet resolves
/// symlinks itself before mounting).
fn host_path_allowed(allowed: &[PathBuf], path: &str) -> bool {
    let p = Path::new(path);
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return false;
    }
    let normal: PathBuf = p.components().collect();
    allowed.iter().any(|a| {
        let a: PathBuf = a.components().collect();
        normal.starts_with(&a)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> Policy {
        Policy {
            allowed_host_paths: vec![PathBuf::from("/srv/data")],
            max_pod_memory: Some(256 * 1024 * 1024),
            max_pod_cpu: Some(1000),
            ..Policy::default()
        }
    }

    #[test]
    fn host_paths_are_allowed_only_below_the_configured_directories() {
        let allowed = &policy().allowed_host_paths;
        assert!(host_path_allowed(allowed, "/srv/data"));
        assert!(host_path_allowed(allowed, "/srv/data/a/"));
        assert!(!host_path_allowed(allowed, "/srv/database"));
        assert!(!host_path_allowed(allowed, "/srv/data/../../etc"));
        assert!(!host_path_allowed(allowed, "srv/data"));
        assert!(!host_path_allowed(&[], "/srv/data"));
    }

    #[test]
    fn pods_over_the_server_maximum_or_unbounded_are_refused() {
        let spec = json!({"containers": [
            {"name": "a", "resources": {"limits": {"memory": "512Mi", "cpu": "500m"}}},
            {"name": "b"}
        ], "volumes": [{"name": "etc", "hostPath": {"path": "/etc"}}]});
        let found = check_spec(&policy(), &spec);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found[0].contains(r#"volume "etc" uses hostPath "/etc""#),
            "{found:?}"
        );
        assert_eq!(
            found[1],
            "maximum memory limit per pod is 256Mi (--max-pod-memory), but no memory limit is specified for: b"
        );
        let spec = json!({"containers": [
            {"name": "a", "resources": {"limits": {"memory": "512Mi", "cpu": "500m"}}}
        ]});
        assert_eq!(
            check_spec(&policy(), &spec),
            [
                "maximum memory limit per pod is 256Mi (--max-pod-memory), but the pod's limit is 512Mi"
            ]
        );
        assert!(check_spec(&Policy::default(), &spec).is_empty());
    }
}
