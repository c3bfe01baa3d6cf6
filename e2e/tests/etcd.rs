//! The control plane on a real etcd: a pod runs end to end with etcd as the
//! store, and a second API server on the same etcd serves the same cluster —
//! writes through either are seen through both, with the same
//! resourceVersions, and watches on one see writes made through the other.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Result;
use wasmkube_e2e::{Cluster, ClusterOptions, Etcd, LineReader, sample_manifest, wait_for};

#[test]
fn two_api_servers_on_one_etcd_serve_one_cluster() -> Result<()> {
    let etcd = Etcd::start()?;
    let on_etcd = vec!["--etcd-endpoints".to_string(), etcd.client_url.clone()];
    let a = Cluster::start_with(ClusterOptions {
        extra_args: on_etcd.clone(),
        ..Default::default()
    })?;
    assert!(
        a.server_log().contains("backend=\"etcd\""),
        "the store choice is logged"
    );
    let mut b_args = on_etcd;
    b_args.push("--no-node".into());
    let b = Cluster::start_with(ClusterOptions {
        extra_args: b_args,
        share_credentials_with: Some(a.data_dir()),
    })?;

    // A watch through B, then a write through A.
    let mut watch = b
        .kubectl_cmd(&["get", "pods", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = LineReader::new(watch.stdout.take().expect("piped stdout"));
    a.push_sample("hello")?;
    a.kubectl_ok(&[
        "apply",
        "-f",
        &sample_manifest("hello").display().to_string(),
    ])?;
    lines.wait_line(
        "B's watch to see the pod created through A",
        Duration::from_secs(60),
        |l| l == "pod/hello",
    )?;
    watch.kill()?;
    watch.wait()?;

    // The pod runs (node of A), and B reports the same object.
    b.wait_phase("hello", "Succeeded", Duration::from_secs(90))?;
    let rv_a = a.field(&["pod", "hello"], "{.metadata.resourceVersion}")?;
    let rv_b = b.field(&["pod", "hello"], "{.metadata.resourceVersion}")?;
    assert_eq!(
        rv_a, rv_b,
        "one resourceVersion for one object, whichever server answers"
    );
    let logs = b.kubectl_ok(&["logs", "hello"])?;
    assert!(logs.contains("Hello, from wasmkube!"), "{logs}");

    // A write through B is seen through A.
    b.kubectl_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"shared"},"data":{"k":"v"}}"#,
    )?;
    wait_for(
        "A to see the ConfigMap written through B",
        Duration::from_secs(30),
        || {
            Ok(a.kubectl(&["get", "configmap", "shared"])?
                .status
                .success()
                .then_some(()))
        },
    )?;
    Ok(())
}
