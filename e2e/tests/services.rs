//! Services through real kubectl: `expose` a Deployment as a NodePort
//! Service, `create service nodeport` (a protobuf body), the kubectl
//! columns of `get svc,ep,endpointslices`, `describe svc` with its
//! endpoints, a taken node port refused, and cleanup on delete.

use std::time::Duration;

use anyhow::{Result, bail};
use wasmkube_e2e::{Cluster, stderr, wait_for};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Two `idle` replicas labelled `app=web` that name their port `http`.
const WEB: &str = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","labels":{"app":"web"}},
  "spec":{"replicas":2,"selector":{"matchLabels":{"app":"web"}},
    "template":{"metadata":{"labels":{"app":"web"}},
      "spec":{"terminationGracePeriodSeconds":1,"containers":[{"name":"web","image":"idle:v1",
        "ports":[{"name":"http","containerPort":8080}]}]}}}}"#;

#[test]
fn services_expose_deployments_with_endpoints_kubectl_can_show() -> Result<()> {
    let c = Cluster::start()?;
    c.push_sample("idle")?;
    let applied = c.kubectl_stdin(&["apply", "-f", "-"], WEB)?;
    assert!(applied.status.success(), "{}", stderr(&applied));
    let out = c.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=120s"])?;
    assert!(out.contains("successfully rolled out"), "{out}");

    let out = c.kubectl_ok(&[
        "expose",
        "deployment",
        "web",
        "--port",
        "80",
        "--target-port",
        "8080",
        "--type",
        "NodePort",
    ])?;
    assert!(out.contains("service/web exposed"), "{out}");
    let node_port = c.field(&["svc", "web"], "{.spec.ports[0].nodePort}")?;
    let np: u16 = node_port.parse()?;
    assert!((30000..=32767).contains(&np), "{np}");
    let cluster_ip = c.field(&["svc", "web"], "{.spec.clusterIP}")?;
    assert!(cluster_ip.starts_with("10."), "{cluster_ip}");

    let table = c.kubectl_ok(&["get", "svc", "web"])?;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..5],
        [
            "web",
            "NodePort",
            cluster_ip.as_str(),
            "<none>",
            format!("80:{np}/TCP").as_str()
        ]
    );

    // Both replicas become endpoints once running and ready.
    wait_for("two ready endpoints", TIMEOUT, || {
        let ips = c.field(&["endpoints", "web"], "{.subsets[*].addresses[*].ip}")?;
        let n = ips.split_whitespace().count();
        if n == 2 {
            Ok(Some(()))
        } else {
            bail!("{n} ready addresses: {ips:?}")
        }
    })?;
    let slice_eps = c.kubectl_ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "jsonpath={.items[*].endpoints[*].conditions.ready}",
    ])?;
    assert_eq!(
        slice_eps.split_whitespace().collect::<Vec<_>>(),
        ["true", "true"]
    );

    let all = c.kubectl_ok(&["get", "svc,ep,endpointslices"])?;
    for want in [
        "service/web",
        "endpoints/web",
        "endpointslice.discovery.k8s.io/web-",
    ] {
        assert!(all.contains(want), "{want} missing from:\n{all}");
    }
    assert!(all.contains(":8080"), "{all}");

    let described = c.kubectl_ok(&["describe", "svc", "web"])?;
    for want in [
        "Type:",
        "NodePort",
        "IP:",
        &cluster_ip,
        "TargetPort:",
        "8080/TCP",
        &format!("{np}/TCP"),
        "Endpoints:",
        ":8080",
    ] {
        assert!(
            described.contains(want),
            "{want:?} missing from:\n{described}"
        );
    }
    assert!(
        !described.contains("Endpoints:                <none>"),
        "{described}"
    );

    // The generator subcommand sends a protobuf body.
    let out = c.kubectl_ok(&[
        "create",
        "service",
        "nodeport",
        "api",
        "--tcp=80:8080",
        "--node-port=30123",
    ])?;
    assert!(out.contains("service/api created"), "{out}");
    assert_eq!(
        c.field(&["svc", "api"], "{.spec.ports[0].nodePort}")?,
        "30123"
    );
    let taken = c.kubectl(&[
        "create",
        "service",
        "nodeport",
        "api2",
        "--tcp=81:8080",
        "--node-port=30123",
    ])?;
    assert!(!taken.status.success());
    assert!(
        stderr(&taken).contains("provided port is already allocated"),
        "{}",
        stderr(&taken)
    );

    // Deleting the Service takes its endpoints with it.
    c.kubectl_ok(&["delete", "svc", "web"])?;
    wait_for("the slices and Endpoints of web to go", TIMEOUT, || {
        let slices = c.kubectl_ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "name",
        ])?;
        let ep = c.kubectl(&["get", "endpoints", "web"])?;
        if slices.trim().is_empty() && !ep.status.success() {
            Ok(Some(()))
        } else {
            bail!("left: {slices:?}")
        }
    })?;
    Ok(())
}
