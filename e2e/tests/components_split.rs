//! The control plane split into processes, as on a cluster that outgrew one
//! machine: `wasmkube server --no-node --disable-scheduler
//! --disable-controller-manager`, a `wasmkube scheduler` and a `wasmkube
//! controller-manager` with the kubeconfigs the server wrote for them, and
//! a node (`wasmkube agent`). A Deployment rolls out; while the scheduler is
//! killed (`kill -9`) new pods stay Pending and are bound once it is back;
//! while the controller manager is killed a scale-up waits, and happens once
//! it is back.

use std::time::Duration;

use anyhow::{Result, bail};
use wasmkube_e2e::{Agent, AgentOptions, Cluster, Component, wait_for};

const TIMEOUT: Duration = Duration::from_secs(120);

fn deployment(replicas: u32) -> String {
    format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"web","labels":{{"app":"web"}}}},
  "spec":{{"replicas":{replicas},"selector":{{"matchLabels":{{"app":"web"}}}},
    "template":{{"metadata":{{"labels":{{"app":"web"}}}},
      "spec":{{"terminationGracePeriodSeconds":1,"containers":[{{"name":"web","image":"idle:v1"}}]}}}}}}}}"#
    )
}

fn bare_pod(name: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},
  "spec":{{"terminationGracePeriodSeconds":1,"containers":[{{"name":"c","image":"idle:v1"}}]}}}}"#
    )
}

/// `name nodeName phase` of every live `app=web` pod.
fn web_pods(c: &Cluster) -> Result<Vec<(String, String, String)>> {
    let rows = c.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}{\"|\"}{.spec.nodeName}{\"|\"}{.status.phase}{\"|\"}{.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ])?;
    Ok(rows
        .lines()
        .filter_map(|row| {
            let f: Vec<&str> = row.split('|').collect();
            (f.len() == 4 && f[3].is_empty())
                .then(|| (f[0].to_string(), f[1].to_string(), f[2].to_string()))
        })
        .collect())
}

fn available(c: &Cluster) -> Result<u32> {
    let v = c.field(&["deploy", "web"], "{.status.availableReplicas}")?;
    Ok(v.trim().parse().unwrap_or(0))
}

fn wait_available(c: &Cluster, want: u32) -> Result<()> {
    wait_for(&format!("{want} available web replicas"), TIMEOUT, || {
        let got = available(c)?;
        let running = web_pods(c)?
            .iter()
            .filter(|(_, node, phase)| node == "node-1" && phase == "Running")
            .count();
        Ok((got == want && running == want as usize).then_some(()))
    })
}

#[test]
fn split_scheduler_and_controller_manager_survive_kill_9() -> Result<()> {
    let c = Cluster::start_without_node(&["--disable-scheduler", "--disable-controller-manager"])?;
    let data = c.data_dir();
    let mut scheduler = Component::spawn("scheduler", &data.join("scheduler.kubeconfig"), &[])?;
    let mut cm = Component::spawn(
        "controller-manager",
        &data.join("controller-manager.kubeconfig"),
        &[],
    )?;
    scheduler.wait_leading()?;
    cm.wait_leading()?;
    let token = c.create_join_token()?;
    let _agent = Agent::start(&c.url(), &token, "node-1", AgentOptions::default())?;
    c.push_sample("idle")?;

    // The components act as their own users, not as admin.
    let holders = c.kubectl_ok(&[
        "get",
        "leases",
        "-n",
        "kube-system",
        "-o",
        "jsonpath={.items[*].spec.holderIdentity}",
    ])?;
    assert_eq!(holders.split_whitespace().count(), 2, "{holders}");
    let kc = std::fs::read_to_string(data.join("scheduler.kubeconfig"))?;
    assert!(kc.contains("system:kube-scheduler"), "{kc}");

    let out = c.kubectl_stdin(&["apply", "-f", "-"], &deployment(2))?;
    assert!(out.status.success(), "{}", wasmkube_e2e::stderr(&out));
    wait_available(&c, 2)?;

    // Scheduler down: the controllers still create pods, nobody binds them.
    scheduler.kill9()?;
    c.kubectl_ok(&["scale", "deploy/web", "--replicas=3"])?;
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &bare_pod("lonely"))?;
    assert!(out.status.success(), "{}", wasmkube_e2e::stderr(&out));
    wait_for("the controllers to create the third pod", TIMEOUT, || {
        Ok((web_pods(&c)?.len() == 3).then_some(()))
    })?;
    let unbound: Vec<_> = web_pods(&c)?
        .into_iter()
        .filter(|(_, node, _)| node.is_empty())
        .collect();
    assert_eq!(unbound.len(), 1, "one new pod, not bound: {unbound:?}");
    assert_eq!(unbound[0].2, "Pending");
    assert_eq!(c.field(&["pod", "lonely"], "{.spec.nodeName}")?, "");
    assert_eq!(c.field(&["pod", "lonely"], "{.status.phase}")?, "Pending");

    // Back: a new process (a new identity) takes the Lease once the killed
    // one's expires, and binds both.
    scheduler.respawn()?;
    scheduler.wait_leading()?;
    wait_available(&c, 3)?;
    c.wait_phase("lonely", "Running", TIMEOUT)?;

    // Controller manager down: the scale-up is recorded but nobody acts on
    // it, while the scheduler and the node keep working (a new bare pod
    // runs meanwhile, so the check below comes after real progress).
    cm.kill9()?;
    c.kubectl_ok(&["scale", "deploy/web", "--replicas=4"])?;
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &bare_pod("meanwhile"))?;
    assert!(out.status.success(), "{}", wasmkube_e2e::stderr(&out));
    c.wait_phase("meanwhile", "Running", TIMEOUT)?;
    let pods = web_pods(&c)?;
    assert_eq!(
        pods.len(),
        3,
        "no scale-up without the controllers: {pods:?}"
    );
    if available(&c)? > 3 {
        bail!("the Deployment's status moved without its controller");
    }

    cm.respawn()?;
    cm.wait_leading()?;
    wait_available(&c, 4)?;
    Ok(())
}
