//! Deployments through real kubectl: rollout, scale, a rolling update that
//! keeps availability within its bounds, history, undo, restart, and
//! deletion with and without cascading.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Result, bail};
use wasmkube_e2e::{Cluster, LineReader, sample_manifest, wait_for};

const TIMEOUT: Duration = Duration::from_secs(120);

/// A Deployment with an explicit rolling-update budget: at most one pod
/// unavailable and one pod over the desired count at any time.
fn web(replicas: u32) -> String {
    format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"web","labels":{{"app":"web"}}}},
  "spec":{{"replicas":{replicas},"selector":{{"matchLabels":{{"app":"web"}}}},
    "strategy":{{"type":"RollingUpdate","rollingUpdate":{{"maxUnavailable":1,"maxSurge":1}}}},
    "template":{{"metadata":{{"labels":{{"app":"web"}}}},
      "spec":{{"terminationGracePeriodSeconds":1,"containers":[{{"name":"web","image":"idle:v1"}}]}}}}}}}}"#
    )
}

fn rollout_status(c: &Cluster, name: &str) -> Result<()> {
    let out = c.kubectl_ok(&[
        "rollout",
        "status",
        &format!("deploy/{name}"),
        "--timeout=120s",
    ])?;
    if !out.contains("successfully rolled out") {
        bail!("rollout status: {out}");
    }
    Ok(())
}

/// Pods of `app=web` that are not being deleted. One list, so a pod that
/// goes away between two reads cannot be counted in one and not the other.
fn live_pods(c: &Cluster) -> Result<usize> {
    let rows = c.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}{\" \"}{.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ])?;
    Ok(rows
        .lines()
        .filter(|row| {
            let mut fields = row.split_whitespace();
            fields.next().is_some() && fields.next().is_none()
        })
        .count())
}

#[test]
fn deployment_rolls_out_scales_updates_and_rolls_back() -> Result<()> {
    let c = Cluster::start()?;
    c.push_sample("idle")?;
    // A second tag of the same module: a new image reference, as a new version would be.
    let wasm = wasmkube_e2e::sample_wasm("idle");
    let out = std::process::Command::new(wasmkube_e2e::wasmkube_bin())
        .arg("push")
        .arg(&wasm)
        .arg("idle:v2")
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .output()?;
    assert!(
        out.status.success(),
        "push idle:v2: {}",
        wasmkube_e2e::stderr(&out)
    );

    let created = c.kubectl_stdin(&["apply", "-f", "-"], &web(3))?;
    assert!(
        created.status.success(),
        "{}",
        wasmkube_e2e::stderr(&created)
    );
    rollout_status(&c, "web")?;
    assert_eq!(
        c.field(&["deploy", "web"], "{.status.availableReplicas}")?,
        "3"
    );
    let rs = c.kubectl_ok(&["get", "rs", "-l", "app=web", "-o", "name"])?;
    assert_eq!(rs.lines().count(), 1, "one ReplicaSet: {rs}");

    c.kubectl_ok(&["scale", "deploy/web", "--replicas=5"])?;
    rollout_status(&c, "web")?;
    assert_eq!(c.field(&["deploy", "web"], "{.status.readyReplicas}")?, "5");
    c.kubectl_ok(&["scale", "deploy/web", "--replicas=1"])?;
    wait_for("web to scale down to one pod", TIMEOUT, || {
        Ok((live_pods(&c)? == 1).then_some(()))
    })?;
    c.kubectl_ok(&["scale", "deploy/web", "--replicas=3"])?;
    rollout_status(&c, "web")?;

    // Watch the Deployment's status through the rolling update: with
    // maxUnavailable 1, at least 2 of 3 stay available at every step, and
    // with maxSurge 1 there are never more than 4 pods.
    let mut watch = c
        .kubectl_cmd(&[
            "get",
            "deploy",
            "web",
            "-w",
            "-o",
            "jsonpath={.metadata.generation} {.status.observedGeneration} {.status.availableReplicas} {.status.replicas}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = LineReader::new(watch.stdout.take().expect("piped stdout"));
    lines.wait_line("the watch to start", Duration::from_secs(30), |_| true)?;
    c.kubectl_ok(&["set", "image", "deploy/web", "web=idle:v2"])?;
    rollout_status(&c, "web")?;
    // The completed rollout's last status reaches the watch too.
    lines.wait_line("the rollout's final status", Duration::from_secs(30), |l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.len() == 4 && f[0] == f[1] && f[2] == "3" && f[3] == "3"
    })?;
    watch.kill()?;
    watch.wait()?;
    for line in &lines.seen {
        let f: Vec<u32> = line.split(' ').filter_map(|x| x.parse().ok()).collect();
        if let [_, _, available, total] = f[..] {
            assert!(
                available >= 2,
                "availability dropped below the bound: {line:?} in {:?}",
                lines.seen
            );
            assert!(
                total <= 4,
                "more pods than maxSurge allows: {line:?} in {:?}",
                lines.seen
            );
        }
    }
    assert_eq!(
        c.field(
            &["deploy", "web"],
            "{.spec.template.spec.containers[0].image}"
        )?,
        "idle:v2"
    );
    let images = c.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].spec.containers[0].image}",
    ])?;
    wait_for("only idle:v2 pods to remain", TIMEOUT, || {
        let images = c.kubectl_ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.spec.containers[0].image}{\" \"}{end}",
        ])?;
        Ok(images
            .split_whitespace()
            .all(|i| i == "idle:v2")
            .then_some(()))
    })
    .map_err(|e| e.context(images))?;

    let history = c.kubectl_ok(&["rollout", "history", "deploy/web"])?;
    assert!(
        history.contains('1') && history.contains('2'),
        "two revisions: {history}"
    );
    c.kubectl_ok(&["rollout", "undo", "deploy/web"])?;
    rollout_status(&c, "web")?;
    assert_eq!(
        c.field(
            &["deploy", "web"],
            "{.spec.template.spec.containers[0].image}"
        )?,
        "idle:v1"
    );

    c.kubectl_ok(&["rollout", "restart", "deploy/web"])?;
    rollout_status(&c, "web")?;
    let restarted = c.field(&["deploy", "web"], "{.spec.template.metadata.annotations}")?;
    assert!(
        restarted.contains("kubectl.kubernetes.io/restartedAt"),
        "{restarted}"
    );
    Ok(())
}

#[test]
fn deleting_a_deployment_cascades_unless_orphaned() -> Result<()> {
    let c = Cluster::start()?;
    c.push_sample("idle")?;
    c.kubectl_ok(&[
        "apply",
        "-f",
        &sample_manifest("deployment").display().to_string(),
    ])?;
    rollout_status(&c, "web")?;

    // --cascade=orphan: the Deployment goes, its ReplicaSet and pods stay.
    c.kubectl_ok(&["delete", "deploy/web", "--cascade=orphan"])?;
    wait_for("the deployment to be gone", TIMEOUT, || {
        Ok((!c.kubectl(&["get", "deploy", "web"])?.status.success()).then_some(()))
    })?;
    let rs = c.kubectl_ok(&["get", "rs", "-l", "app=web", "-o", "name"])?;
    assert_eq!(
        rs.lines().count(),
        1,
        "the ReplicaSet is orphaned, not deleted: {rs}"
    );
    assert_eq!(live_pods(&c)?, 3);
    let owners = c.kubectl_ok(&[
        "get",
        "rs",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.ownerReferences}",
    ])?;
    assert!(owners.is_empty(), "no owner left: {owners}");

    // Re-applying adopts that ReplicaSet; a plain delete then removes everything.
    c.kubectl_ok(&[
        "apply",
        "-f",
        &sample_manifest("deployment").display().to_string(),
    ])?;
    rollout_status(&c, "web")?;
    c.kubectl_ok(&["delete", "deploy/web"])?;
    wait_for("the ReplicaSets and pods to be collected", TIMEOUT, || {
        let rs = c.kubectl_ok(&["get", "rs", "-l", "app=web", "-o", "name"])?;
        let pods = c.kubectl_ok(&["get", "pods", "-l", "app=web", "-o", "name"])?;
        Ok((rs.trim().is_empty() && pods.trim().is_empty()).then_some(()))
    })?;
    Ok(())
}
