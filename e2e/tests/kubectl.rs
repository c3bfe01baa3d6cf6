//! The user's path through the README, with real kubectl against the real
//! binary: push the samples, apply their manifests, watch them run, read
//! their logs, describe, delete, round-trip YAML and re-apply. Every test
//! runs twice: on the embedded store and on a real etcd.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Result;
use wasmkube_e2e::{Backend, Cluster, LineReader, sample_manifest, stderr, stdout, wait_for};

const POD_TIMEOUT: Duration = Duration::from_secs(90);

fn manifest(name: &str) -> String {
    sample_manifest(name).display().to_string()
}

fn hello_runs_to_completion_and_its_output_is_in_the_logs(backend: Backend) -> Result<()> {
    let c = Cluster::start_on(backend)?;
    let pushed = c.push_sample("hello")?;
    assert!(
        pushed.contains("sha256:"),
        "push prints the digest: {pushed}"
    );

    let out = c.kubectl_ok(&["apply", "-f", &manifest("hello")])?;
    assert!(out.contains("pod/hello created"), "{out}");
    c.wait_phase("hello", "Succeeded", POD_TIMEOUT)?;

    let table = c.kubectl_ok(&["get", "pods"])?;
    let header = table.lines().next().unwrap_or_default();
    for col in ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] {
        assert!(header.contains(col), "column {col} missing in:\n{table}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("hello "))
        .unwrap_or_default();
    assert!(row.contains("Completed"), "hello shows Completed:\n{table}");

    let wide = c.kubectl_ok(&["get", "pods", "-o", "wide"])?;
    assert!(
        wide.lines().next().unwrap_or_default().contains("NODE"),
        "{wide}"
    );
    assert!(wide.contains("node-1"), "-o wide shows the node:\n{wide}");

    let logs = c.kubectl_ok(&["logs", "hello"])?;
    assert!(logs.contains("Hello, from wasmkube!"), "logs: {logs:?}");

    let exit = c.field(
        &["pod", "hello"],
        "{.status.containerStatuses[0].state.terminated.exitCode}",
    )?;
    assert_eq!(exit, "0");
    let reason = c.field(
        &["pod", "hello"],
        "{.status.containerStatuses[0].state.terminated.reason}",
    )?;
    assert_eq!(reason, "Completed");

    let described = c.kubectl_ok(&["describe", "pod", "hello"])?;
    assert!(described.contains("Events:"), "{described}");
    assert!(
        described.contains("Scheduled"),
        "describe shows the Scheduled event:\n{described}"
    );
    assert!(
        described.contains("Started"),
        "describe shows the Started event:\n{described}"
    );
    Ok(())
}

fn nodes_are_listed_ready_with_wasm_labels(backend: Backend) -> Result<()> {
    let c = Cluster::start_on(backend)?;
    let nodes = c.kubectl_ok(&["get", "nodes"])?;
    let row = nodes
        .lines()
        .find(|l| l.starts_with("node-1"))
        .unwrap_or_default();
    assert!(
        row.contains("Ready") && !row.contains("NotReady"),
        "{nodes}"
    );
    let labels = c.kubectl_ok(&["get", "nodes", "--show-labels"])?;
    assert!(labels.contains("kubernetes.io/os=wasip1"), "{labels}");
    assert!(labels.contains("kubernetes.io/arch=wasm32"), "{labels}");
    let pods = c.field(&["node", "node-1"], "{.status.allocatable.pods}")?;
    assert!(
        pods.parse::<u32>().is_ok_and(|n| n > 0),
        "allocatable pods: {pods:?}"
    );
    Ok(())
}

fn counter_logs_follow_streams_new_lines(backend: Backend) -> Result<()> {
    let c = Cluster::start_on(backend)?;
    c.push_sample("counter")?;
    c.kubectl_ok(&["apply", "-f", &manifest("counter")])?;
    c.wait_phase("counter", "Running", POD_TIMEOUT)?;

    let mut follow = c
        .kubectl_cmd(&["logs", "-f", "counter"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = LineReader::new(follow.stdout.take().expect("piped stdout"));
    let first = lines.wait_line("a first count line", Duration::from_secs(30), |l| {
        l.starts_with("count ")
    })?;
    let n: u64 = first.trim_start_matches("count ").parse()?;
    // A line printed after the follow began proves it streams, not just dumps.
    lines.wait_line("a later count line", Duration::from_secs(30), |l| {
        l.trim_start_matches("count ")
            .parse::<u64>()
            .is_ok_and(|m| m >= n + 2)
    })?;
    follow.kill()?;
    follow.wait()?;
    Ok(())
}

fn crash_is_restarted_with_backoff(backend: Backend) -> Result<()> {
    let c = Cluster::start_on(backend)?;
    c.push_sample("crash")?;
    c.kubectl_ok(&["apply", "-f", &manifest("crash")])?;
    wait_for("crash to restart at least once", POD_TIMEOUT, || {
        let n = c.field(
            &["pod", "crash"],
            "{.status.containerStatuses[0].restartCount}",
        )?;
        Ok(n.parse::<u32>().is_ok_and(|n| n >= 1).then_some(()))
    })?;
    let last_exit = c.field(
        &["pod", "crash"],
        "{.status.containerStatuses[0].lastState.terminated.exitCode}",
    )?;
    assert_eq!(last_exit, "3", "lastState keeps the exit code");
    wait_for("crash to show CrashLoopBackOff", POD_TIMEOUT, || {
        let table = c.kubectl_ok(&["get", "pod", "crash"])?;
        Ok(table.contains("CrashLoopBackOff").then_some(()))
    })?;
    Ok(())
}

fn get_pods_watch_shows_the_transitions(backend: Backend) -> Result<()> {
    let c = Cluster::start_on(backend)?;
    c.push_sample("hello")?;
    let mut watch = c
        .kubectl_cmd(&["get", "pods", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = LineReader::new(watch.stdout.take().expect("piped stdout"));
    c.kubectl_ok(&["apply", "-f", &manifest("hello")])?;
    lines.wait_line("hello to appear Pending", POD_TIMEOUT, |l| {
        l.starts_with("hello ") && l.contains("Pending")
    })?;
    lines.wait_line("hello to reach Completed", POD_TIMEOUT, |l| {
        l.starts_with("hello ") && l.contains("Completed")
    })?;
    watch.kill()?;
    watch.wait()?;
    Ok(())
}

fn delete_pod_returns_once_the_pod_is_gone(backend: Backend) -> Result<()> {
    let c = Cluster::start_on(backend)?;
    c.push_sample("idle")?;
    c.kubectl_ok(&["apply", "-f", &manifest("idle")])?;
    c.wait_phase("idle", "Running", POD_TIMEOUT)?;
    let out = c.kubectl_ok(&["delete", "pod", "idle", "--timeout=60s"])?;
    assert!(out.contains("pod \"idle\" deleted"), "{out}");
    let gone = c.kubectl(&["get", "pod", "idle"])?;
    assert!(!gone.status.success());
    assert!(
        stderr(&gone).contains("NotFound") || stderr(&gone).contains("not found"),
        "{}",
        stderr(&gone)
    );
    Ok(())
}

fn yaml_round_trips_and_reapply_is_unchanged(backend: Backend) -> Result<()> {
    let c = Cluster::start_on(backend)?;
    c.push_sample("idle")?;
    c.kubectl_ok(&["apply", "-f", &manifest("idle")])?;
    let again = c.kubectl_ok(&["apply", "-f", &manifest("idle")])?;
    assert!(
        again.contains("pod/idle unchanged"),
        "second apply: {again}"
    );

    let yaml = c.kubectl_ok(&["get", "pod", "idle", "-o", "yaml"])?;
    let obj: serde_yaml::Value = serde_yaml::from_str(&yaml)?;
    assert_eq!(obj["kind"].as_str(), Some("Pod"));
    assert_eq!(obj["apiVersion"].as_str(), Some("v1"));
    assert_eq!(obj["metadata"]["name"].as_str(), Some("idle"));
    assert!(
        obj["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty())
    );
    assert_eq!(
        obj["spec"]["containers"][0]["image"].as_str(),
        Some("idle:v1")
    );
    // The YAML kubectl printed is a valid object for the server: replace it
    // unchanged, and the object (uid, spec) survives the round trip.
    let replaced = c.kubectl_stdin(&["replace", "-f", "-"], &yaml)?;
    assert!(
        replaced.status.success(),
        "replace: {}{}",
        stdout(&replaced),
        stderr(&replaced)
    );
    let yaml2 = c.kubectl_ok(&["get", "pod", "idle", "-o", "yaml"])?;
    let obj2: serde_yaml::Value = serde_yaml::from_str(&yaml2)?;
    assert_eq!(obj["metadata"]["uid"], obj2["metadata"]["uid"]);
    assert_eq!(obj["spec"], obj2["spec"]);
    Ok(())
}

fn unknown_image_reports_image_pull_errors(backend: Backend) -> Result<()> {
    let c = Cluster::start_on(backend)?;
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"ghost"},
        "spec":{"restartPolicy":"Never","containers":[{"name":"ghost","image":"ghost:v9"}]}}"#;
    let out = c.kubectl_stdin(&["apply", "-f", "-"], pod)?;
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("ghost to report an image pull error", POD_TIMEOUT, || {
        let reason = c.field(
            &["pod", "ghost"],
            "{.status.containerStatuses[0].state.waiting.reason}",
        )?;
        Ok(matches!(reason.as_str(), "ErrImagePull" | "ImagePullBackOff").then_some(()))
    })?;
    let message = c.field(
        &["pod", "ghost"],
        "{.status.containerStatuses[0].state.waiting.message}",
    )?;
    assert!(
        message.contains("ghost:v9"),
        "the message names the image: {message}"
    );
    // The rest of the cluster is unaffected.
    c.push_sample("hello")?;
    c.kubectl_ok(&["apply", "-f", &manifest("hello")])?;
    c.wait_phase("hello", "Succeeded", POD_TIMEOUT)?;
    Ok(())
}

wasmkube_e2e::both_stores!(
    hello_runs_to_completion_and_its_output_is_in_the_logs,
    nodes_are_listed_ready_with_wasm_labels,
    counter_logs_follow_streams_new_lines,
    crash_is_restarted_with_backoff,
    get_pods_watch_shows_the_transitions,
    delete_pod_returns_once_the_pod_is_gone,
    yaml_round_trips_and_reapply_is_unchanged,
    unknown_image_reports_image_pull_errors,
);
