//! wasmkube's own components as mirror pods in `kube-system`, the way
//! kubeadm's control plane shows: `kubectl get pods -n kube-system` lists
//! the apiserver, scheduler, controller manager, datastore and each node's
//! agent, Running and Ready from their health checks, and `kubectl logs`
//! shows what each component logged. Real binary, real kubectl.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde_json::Value;
use wasmkube_e2e::{Agent, AgentOptions, Cluster, stderr, stdout, tail, wait_for};

const TIMEOUT: Duration = Duration::from_secs(60);

const NGINX_LIKE: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: hello-once
spec:
  restartPolicy: Never
  containers:
    - name: hello
      image: hello:v1
"#;

/// `r`, with the server's log tail added to an error.
fn explain<T>(r: Result<T>, c: &Cluster) -> Result<T> {
    r.map_err(|e| {
        anyhow!(
            "{e:#}\n--- server log (tail) ---\n{}",
            tail(&c.server_log(), 80)
        )
    })
}

/// The `kube-system` pods as JSON items.
fn system_pods(c: &Cluster) -> Result<Vec<Value>> {
    let out = c.kubectl_ok(&["get", "pods", "-n", "kube-system", "-o", "json"])?;
    let list: Value = serde_json::from_str(&out)?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

fn named<'a>(pods: &'a [Value], name: &str) -> Option<&'a Value> {
    pods.iter().find(|p| p["metadata"]["name"] == name)
}

/// Running, with its one container ready.
fn running_and_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["containerStatuses"][0]["ready"] == true
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Waits until `names` are all Running and Ready, returning the pods.
fn wait_running(c: &Cluster, names: &[String]) -> Result<Vec<Value>> {
    wait_for("the mirror pods to be Running and Ready", TIMEOUT, || {
        let pods = system_pods(c)?;
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !named(&pods, n).is_some_and(running_and_ready))
            .collect();
        if missing.is_empty() {
            Ok(Some(pods))
        } else {
            Err(anyhow!("not running yet: {missing:?}"))
        }
    })
}

#[test]
fn the_all_in_one_shows_its_components_as_running_mirror_pods() -> Result<()> {
    let c = Cluster::start()?;
    explain(all_in_one(&c), &c)
}

fn all_in_one(c: &Cluster) -> Result<()> {
    let names: Vec<String> = [
        "apiserver",
        "datastore",
        "scheduler",
        "controller-manager",
        "agent",
    ]
    .iter()
    .map(|n| format!("wasmkube-{n}-node-1"))
    .collect();
    let pods = wait_running(c, &names)?;

    // kubeadm's shape: labels, the mirror annotation, owned by the Node.
    let scheduler = named(&pods, "wasmkube-scheduler-node-1").context("no scheduler pod")?;
    assert_eq!(
        scheduler["metadata"]["labels"]["component"],
        "wasmkube-scheduler"
    );
    assert_eq!(scheduler["metadata"]["labels"]["tier"], "control-plane");
    assert!(
        scheduler["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string(),
        "{scheduler}"
    );
    assert_eq!(scheduler["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(scheduler["spec"]["nodeName"], "node-1");
    assert_eq!(
        scheduler["spec"]["containers"][0]["name"],
        "wasmkube-scheduler"
    );
    // The single all-in-one leads.
    let ready = scheduler["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap_or_default();
    assert_eq!(ready["message"], "leading", "{ready}");

    // The table kubectl prints: every component 1/1 Running.
    let table = c.kubectl_ok(&["get", "pods", "-n", "kube-system"])?;
    for name in &names {
        let row = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .with_context(|| format!("{name} missing from\n{table}"))?;
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cols[1..3], ["1/1", "Running"], "{table}");
    }

    // The scheduler's own log line about a pod it just placed.
    c.push_sample("hello")?;
    let out = c.kubectl_stdin(&["apply", "-f", "-"], NGINX_LIKE)?;
    anyhow::ensure!(out.status.success(), "apply: {}", stderr(&out));
    let scheduler_log = wait_for("the scheduler's log to show the binding", TIMEOUT, || {
        let log = c.kubectl_ok(&["logs", "-n", "kube-system", "wasmkube-scheduler-node-1"])?;
        Ok(log
            .lines()
            .any(|l| l.contains("bound") && l.contains("default/hello-once"))
            .then_some(log))
    })?;
    // Only the scheduler's lines are in it.
    assert!(
        scheduler_log
            .lines()
            .all(|l| l.contains("wasmkube_scheduler")),
        "{scheduler_log}"
    );
    // The apiserver's log has the apiserver's lines (its start).
    let apiserver_log =
        c.kubectl_ok(&["logs", "-n", "kube-system", "wasmkube-apiserver-node-1"])?;
    assert!(!apiserver_log.is_empty());
    assert!(
        !apiserver_log.contains("wasmkube_scheduler"),
        "{apiserver_log}"
    );
    // The kubelet's lines are the agent's.
    wait_for("the agent's log to show the kubelet", TIMEOUT, || {
        let log = c.kubectl_ok(&["logs", "-n", "kube-system", "wasmkube-agent-node-1"])?;
        Ok(log.contains("wasmkube_runtime").then_some(()))
    })?;

    // --tail and --timestamps work as for any container.
    let last = c.kubectl_ok(&[
        "logs",
        "-n",
        "kube-system",
        "wasmkube-scheduler-node-1",
        "--tail=1",
        "--timestamps",
    ])?;
    let lines: Vec<&str> = last.lines().collect();
    assert_eq!(lines.len(), 1, "{last}");
    assert!(
        lines[0]
            .split(' ')
            .next()
            .is_some_and(|t| t.contains('T') && t.ends_with('Z')),
        "{last}"
    );

    // A deleted mirror pod comes back (a new object, same component).
    let before = named(&pods, "wasmkube-apiserver-node-1")
        .and_then(|p| p["metadata"]["uid"].as_str())
        .map(str::to_string)
        .context("no apiserver uid")?;
    c.kubectl_ok(&[
        "delete",
        "pod",
        "-n",
        "kube-system",
        "wasmkube-apiserver-node-1",
    ])?;
    wait_for("the apiserver mirror pod to come back", TIMEOUT, || {
        let pods = system_pods(c)?;
        Ok(named(&pods, "wasmkube-apiserver-node-1")
            .filter(|p| p["metadata"]["uid"] != before.as_str() && running_and_ready(p))
            .map(|_| ()))
    })?;
    // And its logs are still served under the new object.
    let log = c.kubectl_ok(&[
        "logs",
        "-n",
        "kube-system",
        "wasmkube-apiserver-node-1",
        "--tail=5",
    ])?;
    assert!(!log.is_empty());

    // The kubelet never tried to run a mirror pod: no pull, start or
    // failure events about them, and the node's pod stays the only one run.
    let out = c.kubectl_ok(&["get", "events", "-n", "kube-system", "-o", "json"])?;
    let events: Value = serde_json::from_str(&out)?;
    let about_mirrors: Vec<&Value> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["involvedObject"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("wasmkube-"))
        })
        .collect();
    assert!(about_mirrors.is_empty(), "{about_mirrors:?}");
    let log = c.server_log();
    for line in log.lines().filter(|l| l.contains("kube-system/wasmkube-")) {
        assert!(
            !line.contains("ERROR") && !line.contains("pull"),
            "the kubelet handled a mirror pod: {line}"
        );
    }
    Ok(())
}

#[test]
fn an_agent_publishes_its_own_mirror_pod_with_its_logs() -> Result<()> {
    let c = Cluster::start()?;
    let token = c.create_join_token()?;
    let agent = Agent::start(&c.url(), &token, "edge-1", AgentOptions::default())?;
    let r = (|| {
        wait_running(&c, &["wasmkube-agent-edge-1".to_string()])?;
        let pods = system_pods(&c)?;
        let pod = named(&pods, "wasmkube-agent-edge-1").context("no agent pod")?;
        assert_eq!(pod["metadata"]["labels"]["tier"], "node");
        assert_eq!(pod["spec"]["nodeName"], "edge-1");
        // Only the all-in-one runs a control plane.
        assert!(named(&pods, "wasmkube-apiserver-edge-1").is_none());
        // Its logs come from the agent process, through its tunnel.
        wait_for("the agent's log", TIMEOUT, || {
            let out = c.kubectl(&["logs", "-n", "kube-system", "wasmkube-agent-edge-1"])?;
            let log = stdout(&out);
            Ok((out.status.success() && log.contains("kubelet")).then_some(()))
        })
    })();
    r.map_err(|e| {
        anyhow!(
            "{e:#}\n--- server log ---\n{}\n--- agent log ---\n{}",
            tail(&c.server_log(), 60),
            tail(&agent.log(), 60)
        )
    })
}
