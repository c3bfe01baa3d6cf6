//! Admission through real kubectl against the real binary: LimitRange
//! defaults visible in `kubectl get pod -o yaml`, a pod over the quota gets
//! Kubernetes' message, the node pod policy (`--max-pod-memory`, hostPath)
//! refuses with a 403 naming the limit, and `--validate=strict` names an
//! unknown field. Admission needs no node: a control plane is enough.

use anyhow::{Result, ensure};
use wasmkube_e2e::{Cluster, stderr, stdout};

fn pod_yaml(name: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
  - name: app
    image: hello:v1
    resources: {resources}
"
    )
}

/// Applies `yaml` and returns kubectl's stderr, failing if it succeeded.
fn refused(c: &Cluster, yaml: &str) -> Result<String> {
    let out = c.kubectl_stdin(&["apply", "-f", "-"], yaml)?;
    ensure!(
        !out.status.success(),
        "kubectl apply succeeded: {}",
        stdout(&out)
    );
    Ok(stderr(&out))
}

fn applied(c: &Cluster, yaml: &str) -> Result<()> {
    let out = c.kubectl_stdin(&["apply", "-f", "-"], yaml)?;
    ensure!(
        out.status.success(),
        "kubectl apply failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    Ok(())
}

#[test]
fn kubectl_sees_limit_range_defaults_quota_and_pod_policy() -> Result<()> {
    let c = Cluster::start_without_node(&["--max-pod-memory", "256Mi"])?;

    applied(
        &c,
        "apiVersion: v1
kind: LimitRange
metadata:
  name: defaults
spec:
  limits:
  - type: Container
    default:
      memory: 128Mi
    defaultRequest:
      memory: 64Mi
",
    )?;
    c.kubectl_ok(&[
        "create",
        "quota",
        "compute",
        "--hard=pods=5,requests.memory=100Mi",
    ])?;

    // Defaults from the LimitRange, visible to the user.
    applied(&c, &pod_yaml("first", "{}"))?;
    let yaml = c.kubectl_ok(&["get", "pod", "first", "-o", "yaml"])?;
    ensure!(yaml.contains("memory: 128Mi"), "{yaml}");
    ensure!(yaml.contains("memory: 64Mi"), "{yaml}");
    ensure!(
        yaml.contains("kubernetes.io/limit-ranger: 'LimitRanger plugin set:"),
        "{yaml}"
    );
    let used = c.kubectl_ok(&[
        "get",
        "quota",
        "compute",
        "-o",
        "jsonpath={.status.used.requests\\.memory}",
    ])?;
    ensure!(used.trim() == "64Mi", "used {used}");

    // Over the quota: Kubernetes' message, nothing stored.
    let err = refused(&c, &pod_yaml("second", "{}"))?;
    ensure!(
        err.contains(
            "pods \"second\" is forbidden: exceeded quota: compute, requested: requests.memory=64Mi, used: requests.memory=64Mi, limited: requests.memory=100Mi"
        ),
        "{err}"
    );
    ensure!(err.contains("Forbidden"), "{err}");
    let out = c.kubectl(&["get", "pod", "second"])?;
    ensure!(!out.status.success(), "second was stored");

    // Over the server's per-pod maximum.
    let err = refused(
        &c,
        &pod_yaml("big", "{limits: {memory: 1Gi}, requests: {memory: 1Mi}}"),
    )?;
    ensure!(
        err.contains(
            "maximum memory limit per pod is 256Mi (--max-pod-memory), but the pod's limit is 1Gi"
        ),
        "{err}"
    );

    // hostPath is off unless the server allows a directory.
    let err = refused(
        &c,
        "apiVersion: v1
kind: Pod
metadata:
  name: escape
spec:
  containers:
  - name: app
    image: hello:v1
    volumeMounts:
    - {name: host, mountPath: /host}
  volumes:
  - name: host
    hostPath: {path: /etc}
",
    )?;
    ensure!(
        err.contains("hostPath volumes are not allowed by the server's policy: volume \"host\" uses hostPath \"/etc\""),
        "{err}"
    );

    // Strict validation names the unknown field.
    let out = c.kubectl_stdin(
        &["apply", "--validate=strict", "-f", "-"],
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: typo
data: {a: b}
dataa: {c: d}
",
    )?;
    ensure!(!out.status.success(), "{}", stdout(&out));
    ensure!(
        stderr(&out).contains("unknown field \"dataa\""),
        "{}",
        stderr(&out)
    );
    Ok(())
}
