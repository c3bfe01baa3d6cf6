//! Agents: nodes that join a control plane over the network (`wasmkube
//! agent`), as separate processes on loopback. A control plane without a
//! node of its own (`--no-node`) and a short NotReady grace period; agents
//! whose `--server` goes through a [`TcpRelay`] the test cuts and heals to
//! simulate a partition.
//!
//! What each test proves is read from outside the agent under test: the API
//! (with the admin kubeconfig, or the node's own for the authorization
//! test) and, while the agent is cut off, the container log files in its
//! data dir — a line written there during the partition was written by the
//! instance the agent kept running.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::Value;
use wasmkube_e2e::{Agent, AgentOptions, Cluster, TcpRelay, stderr, stdout, tail, wait_for};

/// The control plane's NotReady grace period in these tests.
const GRACE: Duration = Duration::from_secs(6);
const POD_TIMEOUT: Duration = Duration::from_secs(60);
const DS_LABEL: &str = "app=counter-ds";

/// A DaemonSet of the `counter` sample (one line per second).
const COUNTER_DS: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: counter
spec:
  selector:
    matchLabels:
      app: counter-ds
  template:
    metadata:
      labels:
        app: counter-ds
    spec:
      terminationGracePeriodSeconds: 5
      containers:
        - name: counter
          image: counter:v1
"#;

/// A control plane alone, with the `counter` module pushed, and a join token.
fn control_plane(extra_args: &[&str]) -> Result<(Cluster, String)> {
    let mut args = vec!["--node-monitor-grace-period", "6s"];
    args.extend_from_slice(extra_args);
    let c = Cluster::start_without_node(&args)?;
    c.push_sample("counter")?;
    let token = c.create_join_token()?;
    Ok((c, token))
}

/// `r`, with the tails of the server's and the agents' logs added to an
/// error, so a failure shows what the processes said.
fn explain<T>(r: Result<T>, c: &Cluster, agents: &[&Agent]) -> Result<T> {
    r.map_err(|e| {
        let mut msg = format!(
            "{e:#}\n--- server log (tail) ---\n{}",
            tail(&c.server_log(), 60)
        );
        for a in agents {
            msg += &format!(
                "\n--- agent {} log (tail) ---\n{}",
                a.name,
                tail(&a.log(), 60)
            );
        }
        anyhow!(msg)
    })
}

/// What the tests look at in a pod.
#[derive(Debug, Clone, PartialEq)]
struct PodView {
    name: String,
    uid: String,
    node: String,
    phase: String,
    restarts: i64,
    deleting: bool,
}

impl PodView {
    fn of(p: &Value) -> PodView {
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        PodView {
            name: s(&p["metadata"]["name"]),
            uid: s(&p["metadata"]["uid"]),
            node: s(&p["spec"]["nodeName"]),
            phase: s(&p["status"]["phase"]),
            restarts: p["status"]["containerStatuses"][0]["restartCount"]
                .as_i64()
                .unwrap_or(0),
            deleting: !p["metadata"]["deletionTimestamp"].is_null(),
        }
    }
}

fn pods(c: &Cluster, selector: &str) -> Result<Vec<PodView>> {
    let out = c.kubectl_ok(&["get", "pods", "-l", selector, "-o", "json"])?;
    let list: Value = serde_json::from_str(&out)?;
    Ok(list["items"]
        .as_array()
        .map(|items| items.iter().map(PodView::of).collect())
        .unwrap_or_default())
}

/// The pod of one name, `None` once it is gone.
fn pod(c: &Cluster, name: &str) -> Result<Option<PodView>> {
    let out = c.kubectl(&["get", "pod", name, "-o", "json", "--ignore-not-found"])?;
    if !out.status.success() {
        bail!("kubectl get pod {name}: {}", stderr(&out));
    }
    let text = stdout(&out);
    if text.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(PodView::of(&serde_json::from_str(&text)?)))
}

/// Waits until the DaemonSet runs exactly one Running pod on each of
/// `nodes`; returns node → pod.
fn wait_daemon_pods(c: &Cluster, nodes: &[&str]) -> Result<BTreeMap<String, PodView>> {
    wait_for(
        &format!("one Running counter pod on each of {nodes:?}"),
        POD_TIMEOUT,
        || {
            let all = pods(c, DS_LABEL)?;
            let mut by_node = BTreeMap::new();
            for p in &all {
                if by_node.insert(p.node.clone(), p.clone()).is_some() {
                    bail!("two pods on {}: {all:?}", p.node);
                }
            }
            let placed = all.len() == nodes.len()
                && nodes
                    .iter()
                    .all(|n| by_node.get(*n).is_some_and(|p| p.phase == "Running"));
            if placed {
                Ok(Some(by_node))
            } else {
                bail!("pods: {all:?}")
            }
        },
    )
}

/// How many times the server logged a tunnel from `node` opening.
fn tunnel_opens(c: &Cluster, node: &str) -> usize {
    let quoted = format!("\"{node}\"");
    c.server_log()
        .lines()
        .filter(|l| l.contains("node tunnel opened") && l.contains(&quoted))
        .count()
}

/// Waits until the server has more than `seen` tunnels from `node` opened.
fn wait_tunnel(c: &Cluster, node: &str, seen: usize) -> Result<()> {
    wait_for(
        &format!("the server to hold a tunnel from {node}"),
        Duration::from_secs(30),
        || Ok((tunnel_opens(c, node) > seen).then_some(())),
    )
}

/// The highest count `kubectl logs` shows for a counter pod.
fn logged_count(c: &Cluster, pod: &str) -> Result<u64> {
    let out = c.kubectl(&["logs", pod])?;
    if !out.status.success() {
        bail!("kubectl logs {pod}: {}", stderr(&out));
    }
    Ok(stdout(&out)
        .lines()
        .filter_map(|l| l.strip_prefix("count ")?.parse().ok())
        .max()
        .unwrap_or(0))
}

/// The highest count in lines read from an agent's files.
fn max_count(lines: &[String]) -> u64 {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("count ")?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// Lines the counter printed, as the agent's log files hold them.
fn counts(lines: &[String]) -> usize {
    lines.iter().filter(|l| l.starts_with("count ")).count()
}

/// How many times the crash sample ran.
fn runs(lines: &[String]) -> usize {
    lines
        .iter()
        .filter(|l| l.starts_with("crash: started at"))
        .count()
}

/// How many times the counter started from the beginning.
fn starts(lines: &[String]) -> usize {
    lines.iter().filter(|l| l.as_str() == "count 1").count()
}

#[test]
fn three_agents_join_and_run_a_daemon_set_with_logs() -> Result<()> {
    let (c, token) = control_plane(&[])?;
    // Each agent advertises its own loopback address (all of 127/8 is
    // local) while its kubelet endpoint listens on 127.0.0.1 only: the
    // Node's address does not reach the kubelet, so logs can only come
    // through the tunnel.
    let mut agents = NAMES
        .iter()
        .zip(2..)
        .map(|(n, i)| {
            let options = AgentOptions {
                extra_args: vec!["--node-ip".into(), format!("127.0.0.{i}")],
                ..AgentOptions::default()
            };
            Agent::spawn(&c.url(), &token, n, options)
        })
        .collect::<Result<Vec<_>>>()?;
    let r = three_agents(&c, &mut agents);
    explain(r, &c, &agents.iter().collect::<Vec<_>>())
}

const NAMES: [&str; 3] = ["edge-a", "edge-b", "edge-c"];

fn three_agents(c: &Cluster, agents: &mut [Agent]) -> Result<()> {
    let names = NAMES;
    for a in agents.iter_mut() {
        a.wait_log(&format!("agent {} joined", a.name), Duration::from_secs(60))?;
        a.wait_ready()?;
        ensure!(
            a.kubeconfig().exists(),
            "no node kubeconfig at {}",
            a.kubeconfig().display()
        );
    }
    // The control plane has no node of its own: exactly the three agents.
    let nodes = c.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"])?;
    let mut nodes: Vec<&str> = nodes.split_whitespace().collect();
    nodes.sort_unstable();
    assert_eq!(nodes, names);
    for n in names {
        assert_eq!(c.node_ready(n)?, "True", "node {n}");
    }

    let out = c.kubectl_stdin(&["apply", "-f", "-"], COUNTER_DS)?;
    ensure!(out.status.success(), "apply: {}", stderr(&out));
    let placed = wait_daemon_pods(c, &names)?;

    // The API server reaches each agent's kubelet for the logs through the
    // tunnel the agent dialled out: the Node's address (127.0.0.2–4) has
    // no kubelet listening.
    for (node, p) in &placed {
        wait_tunnel(c, node, 0)?;
        wait_for(
            &format!("kubectl logs {} (on {node})", p.name),
            Duration::from_secs(30),
            || Ok((logged_count(c, &p.name)? >= 1).then_some(())),
        )?;
    }
    Ok(())
}

#[test]
fn a_partitioned_agent_keeps_its_pods_and_nothing_is_recreated_on_heal() -> Result<()> {
    // Pods without a toleration of their own are evicted 2 s after their
    // node becomes unreachable: the bystander below shows eviction is live,
    // so the daemon pod's survival is its toleration's doing.
    let (c, token) = control_plane(&["--default-unreachable-toleration-seconds", "2"])?;
    c.push_sample("crash")?;
    let relay = TcpRelay::start(c.port)?;
    // Quick crash-loop back-off, so the crasher below restarts a few times
    // while the node is cut off.
    let fast_restarts = AgentOptions {
        extra_args: [
            "--container-restart-initial-backoff",
            "1s",
            "--max-container-restart-period",
            "2s",
        ]
        .map(String::from)
        .to_vec(),
        ..AgentOptions::default()
    };
    let mut edge = Agent::start(&relay.url(), &token, "edge-p", fast_restarts)?;
    // A second agent, reaching the server directly, stays healthy.
    let other = Agent::start(&c.url(), &token, "edge-q", AgentOptions::default())?;
    let r = partitioned(&c, &relay, &mut edge);
    explain(r, &c, &[&edge, &other])
}

fn partitioned(c: &Cluster, relay: &TcpRelay, edge: &mut Agent) -> Result<()> {
    let out = c.kubectl_stdin(&["apply", "-f", "-"], COUNTER_DS)?;
    ensure!(out.status.success(), "apply: {}", stderr(&out));
    let bystander = r#"
apiVersion: v1
kind: Pod
metadata:
  name: bystander
spec:
  nodeName: edge-p
  terminationGracePeriodSeconds: 1
  containers:
    - name: counter
      image: counter:v1
"#;
    let out = c.kubectl_stdin(&["apply", "-f", "-"], bystander)?;
    ensure!(out.status.success(), "apply: {}", stderr(&out));
    // Tolerates the partition like a daemon pod, and exits every 300 ms:
    // the agent must restart it per its policy while offline.
    let crasher = r#"
apiVersion: v1
kind: Pod
metadata:
  name: crasher
spec:
  nodeName: edge-p
  terminationGracePeriodSeconds: 1
  tolerations:
    - key: node.kubernetes.io/unreachable
      operator: Exists
      effect: NoExecute
    - key: node.kubernetes.io/not-ready
      operator: Exists
      effect: NoExecute
  containers:
    - name: crash
      image: crash:v1
      env:
        - name: CRASH_AFTER_MS
          value: "300"
"#;
    let out = c.kubectl_stdin(&["apply", "-f", "-"], crasher)?;
    ensure!(out.status.success(), "apply: {}", stderr(&out));
    let placed = wait_daemon_pods(c, &["edge-p", "edge-q"])?;
    c.wait_phase("bystander", "Running", POD_TIMEOUT)?;
    let bystander_uid = pod(c, "bystander")?.context("bystander")?.uid;
    wait_for(
        "the agent to keep the bystander in its local state",
        Duration::from_secs(30),
        || Ok(edge.has_local_pod(&bystander_uid).then_some(())),
    )?;
    let daemon = placed["edge-p"].clone();
    wait_for(
        "the daemon pod's output in the agent's files",
        Duration::from_secs(30),
        || Ok((counts(&edge.container_log_lines(&daemon.uid)?) >= 1).then_some(())),
    )?;

    let crasher = pod(c, "crasher")?.context("crasher")?;
    wait_for(
        "the crasher to run on edge-p",
        Duration::from_secs(30),
        || Ok((runs(&edge.container_log_lines(&crasher.uid)?) >= 1).then_some(())),
    )?;
    wait_tunnel(c, "edge-p", 0)?;
    let opens_before_cut = tunnel_opens(c, "edge-p");
    relay.cut();
    let cut_at = std::time::Instant::now();
    let runs_at_cut = runs(&edge.container_log_lines(&crasher.uid)?);
    c.wait_node_ready_is("edge-p", "Unknown", GRACE + Duration::from_secs(30))?;
    let taints = c.field(&["node", "edge-p"], "{.spec.taints[*].key}")?;
    ensure!(
        taints.contains("node.kubernetes.io/unreachable"),
        "taints of the lost node: {taints:?}"
    );
    // Eviction is at work: the pod without its own toleration goes.
    wait_for(
        "the bystander pod to be evicted",
        Duration::from_secs(30),
        || {
            Ok(pod(c, "bystander")?
                .is_none_or(|p| p.deleting)
                .then_some(()))
        },
    )?;
    // Meanwhile the daemon pod keeps running on the lost node: its
    // container keeps writing, though no connection reaches the server.
    let seen = counts(&edge.container_log_lines(&daemon.uid)?);
    let printed_while_cut = max_count(&edge.container_log_lines(&daemon.uid)?);
    wait_for(
        "the daemon pod to keep printing while cut off",
        Duration::from_secs(20),
        || Ok((counts(&edge.container_log_lines(&daemon.uid)?) >= seen + 3).then_some(())),
    )?;
    // Containers are restarted per their policy while offline.
    wait_for(
        "the crasher to be restarted while cut off",
        Duration::from_secs(20),
        || Ok((runs(&edge.container_log_lines(&crasher.uid)?) >= runs_at_cut + 2).then_some(())),
    )?;
    ensure!(edge.is_running(), "the agent exited while cut off");
    assert_eq!(
        c.node_ready("edge-p")?,
        "Unknown",
        "still cut off, the node must still be lost"
    );
    assert!(cut_at.elapsed() > GRACE);
    // …and it is neither evicted nor replaced: same pod, not being deleted.
    let during = pod(c, &daemon.name)?.context("the daemon pod vanished while cut off")?;
    assert_eq!(during.uid, daemon.uid);
    assert!(
        !during.deleting,
        "the daemon pod is being deleted: {during:?}"
    );
    assert_eq!(pods(c, DS_LABEL)?.len(), 2, "no replacement pod");

    let runs_offline = runs(&edge.container_log_lines(&crasher.uid)?);
    relay.heal();
    c.wait_node_ready_is("edge-p", "True", Duration::from_secs(60))?;
    let after = wait_for(
        "the daemon pod to be reported Running again",
        Duration::from_secs(30),
        || {
            let p = pod(c, &daemon.name)?.context("the daemon pod is gone")?;
            Ok((p.phase == "Running").then_some(p))
        },
    )?;
    assert_eq!(after.uid, daemon.uid, "the pod was recreated");
    assert_eq!(after.node, "edge-p");
    assert_eq!(after.restarts, 0, "the container restarted: {after:?}");
    assert!(!after.deleting);
    assert_eq!(pods(c, DS_LABEL)?.len(), 2, "no replacement pod");
    // The one instance ran all along: the counter started exactly once.
    let lines = edge.container_log_lines(&daemon.uid)?;
    assert_eq!(starts(&lines), 1, "the counter started over: {lines:?}");
    // What happened offline is reported: the restarts are counted.
    wait_for(
        "the crasher's offline restarts to reach the API",
        Duration::from_secs(30),
        || {
            let p = pod(c, "crasher")?.context("the crasher is gone")?;
            ensure!(p.uid == crasher.uid, "the crasher was recreated");
            let want = i64::try_from(runs_offline)? - 1;
            if p.restarts >= want {
                Ok(Some(()))
            } else {
                bail!("restartCount {} < {want} runs offline", p.restarts)
            }
        },
    )?;
    // The pod deleted while the node was away is forgotten on reconnect;
    // the daemon pod is still kept.
    wait_for(
        "the agent to drop the evicted pod from its local state",
        Duration::from_secs(30),
        || Ok((!edge.has_local_pod(&bystander_uid)).then_some(())),
    )?;
    assert!(edge.has_local_pod(&daemon.uid));
    // The agent dialled its tunnel again: what the pod printed while cut
    // off is readable through the API.
    wait_tunnel(c, "edge-p", opens_before_cut)?;
    wait_for(
        "kubectl logs to show what was printed while cut off",
        Duration::from_secs(30),
        || Ok((logged_count(c, &daemon.name)? >= printed_while_cut).then_some(())),
    )?;
    // The taint is gone with the partition.
    wait_for(
        "the unreachable taint to be removed",
        Duration::from_secs(30),
        || {
            let taints = c.field(&["node", "edge-p"], "{.spec.taints[*].key}")?;
            Ok((!taints.contains("unreachable")).then_some(()))
        },
    )?;
    Ok(())
}

#[test]
fn an_agent_restarted_while_the_server_is_down_runs_its_pods_from_local_state() -> Result<()> {
    let (mut c, token) = control_plane(&[])?;
    let mut edge = Agent::start(&c.url(), &token, "edge-r", AgentOptions::default())?;
    let r = restarted_offline(&mut c, &mut edge);
    explain(r, &c, &[&edge])
}

fn restarted_offline(c: &mut Cluster, edge: &mut Agent) -> Result<()> {
    let out = c.kubectl_stdin(&["apply", "-f", "-"], COUNTER_DS)?;
    ensure!(out.status.success(), "apply: {}", stderr(&out));
    let daemon = wait_daemon_pods(c, &["edge-r"])?["edge-r"].clone();
    wait_for(
        "the daemon pod's output in the agent's files",
        Duration::from_secs(30),
        || Ok((counts(&edge.container_log_lines(&daemon.uid)?) >= 2).then_some(())),
    )?;

    // The server goes away, then the device reboots: the agent (and the
    // instances inside it) die.
    c.kill9()?;
    edge.kill9()?;
    let before = edge.container_log_lines(&daemon.uid)?;
    edge.respawn()?;
    // A fresh instance of the counter starts over at 1, without the server.
    let fresh = |lines: &[String]| {
        starts(lines) > starts(&before) || (!lines.starts_with(&before) && starts(lines) > 0)
    };
    wait_for(
        "the pod to run again from local state while the server is down",
        Duration::from_secs(60),
        || {
            if !edge.is_running() {
                bail!("the agent exited:\n{}", edge.current_log());
            }
            Ok(fresh(&edge.container_log_lines(&daemon.uid)?).then_some(()))
        },
    )
    .map_err(|e| anyhow::anyhow!("{e:#}\n--- agent log ---\n{}", edge.current_log()))?;
    let now = counts(&edge.container_log_lines(&daemon.uid)?);
    wait_for(
        "the restarted pod to keep printing",
        Duration::from_secs(20),
        || Ok((counts(&edge.container_log_lines(&daemon.uid)?) >= now + 2).then_some(())),
    )?;
    ensure!(!c.is_running(), "the server must still be down here");

    // The server comes back: the same pod, Running, on the same node.
    c.spawn()?;
    c.wait_ready()?;
    c.wait_node_ready_is("edge-r", "True", Duration::from_secs(60))?;
    let after = wait_for(
        "the pod to be reported Running after the server returned",
        Duration::from_secs(30),
        || {
            let p = pod(c, &daemon.name)?.context("the daemon pod is gone")?;
            Ok((p.phase == "Running" && !p.deleting).then_some(p))
        },
    )?;
    assert_eq!(after.uid, daemon.uid, "the pod was recreated");
    assert_eq!(after.node, "edge-r");
    assert_eq!(pods(c, DS_LABEL)?.len(), 1, "no replacement pod");
    // Output of the instance started offline reaches kubectl through the
    // new server's tunnel.
    let lines = edge.container_log_lines(&daemon.uid)?;
    let last_start = lines.iter().rposition(|l| l == "count 1").unwrap_or(0);
    let offline = max_count(&lines[last_start..]);
    wait_for(
        "kubectl logs to show the instance started offline",
        Duration::from_secs(30),
        || Ok((logged_count(c, &daemon.name)? >= offline).then_some(())),
    )?;
    Ok(())
}

#[test]
fn a_node_credential_cannot_touch_other_nodes_pods_or_unrelated_secrets() -> Result<()> {
    let (c, token) = control_plane(&[])?;
    let a = Agent::start(&c.url(), &token, "edge-x", AgentOptions::default())?;
    let b = Agent::start(&c.url(), &token, "edge-y", AgentOptions::default())?;
    let r = node_restriction(&c, &a);
    explain(r, &c, &[&a, &b])
}

fn node_restriction(c: &Cluster, a: &Agent) -> Result<()> {
    c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "unrelated",
        "--from-literal=password=hunter2",
    ])?;
    c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "for-x",
        "--from-literal=COUNT_FROM=100",
    ])?;
    // One pod on each node; edge-x's references the secret `for-x`.
    let manifest = |name: &str, node: &str, env: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
    - name: counter
      image: counter:v1
{env}"#
        )
    };
    let env = "      envFrom:\n        - secretRef:\n            name: for-x\n";
    for (name, node, env) in [("on-x", "edge-x", env), ("on-y", "edge-y", "")] {
        let out = c.kubectl_stdin(&["apply", "-f", "-"], &manifest(name, node, env))?;
        ensure!(out.status.success(), "apply {name}: {}", stderr(&out));
    }
    c.wait_phase("on-x", "Running", POD_TIMEOUT)?;
    c.wait_phase("on-y", "Running", POD_TIMEOUT)?;

    let forbidden = |args: &[&str]| -> Result<()> {
        let out = a.kubectl(args)?;
        let err = stderr(&out);
        ensure!(
            !out.status.success()
                && err.contains("Forbidden")
                && err.contains("system:node:edge-x"),
            "kubectl {} as edge-x should be Forbidden; got {}:\n{}{err}",
            args.join(" "),
            out.status,
            stdout(&out)
        );
        Ok(())
    };
    let allowed = |args: &[&str]| -> Result<String> {
        let out = a.kubectl(args)?;
        ensure!(
            out.status.success(),
            "kubectl {} as edge-x should be allowed; got {}:\n{}",
            args.join(" "),
            out.status,
            stderr(&out)
        );
        Ok(stdout(&out))
    };

    // What its pods need: its own pod and the secret that pod references.
    let own = allowed(&["get", "pod", "on-x", "-o", "jsonpath={.spec.nodeName}"])?;
    assert_eq!(own, "edge-x");
    allowed(&["get", "secret", "for-x"])?;
    // Its own pod's status it may write; another node's it may not.
    let status_patch = r#"{"status":{"message":"written by the node"}}"#;
    allowed(&[
        "patch",
        "pod",
        "on-x",
        "--subresource=status",
        "--type=merge",
        "-p",
        status_patch,
    ])?;
    forbidden(&[
        "patch",
        "pod",
        "on-y",
        "--subresource=status",
        "--type=merge",
        "-p",
        status_patch,
    ])?;
    forbidden(&["delete", "pod", "on-y", "--wait=false"])?;
    // Secrets: not one no pod of its references, and no listing.
    forbidden(&["get", "secret", "unrelated"])?;
    forbidden(&["get", "secrets"])?;
    // Another node's object.
    forbidden(&["label", "node", "edge-y", "stolen=true"])?;
    // Nothing was changed by the refused writes.
    assert_eq!(pod(c, "on-y")?.context("on-y is gone")?.phase, "Running");
    assert_eq!(
        c.field(&["node", "edge-y"], "{.metadata.labels.stolen}")?,
        ""
    );
    Ok(())
}

/// The relay itself: bytes flow both ways; `cut` ends open connections
/// and refuses new ones; `heal` relays again.
#[test]
fn the_tcp_relay_cuts_and_heals() -> Result<()> {
    use std::io::{Read, Write};
    let upstream = std::net::TcpListener::bind("127.0.0.1:0")?;
    let upstream_port = upstream.local_addr()?.port();
    // An echo server.
    std::thread::spawn(move || {
        for conn in upstream.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let relay = TcpRelay::start(upstream_port)?;
    let echo = |s: &mut std::net::TcpStream| -> Result<bool> {
        s.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        Ok(s.read_exact(&mut buf).is_ok() && &buf == b"ping")
    };
    let connect = || -> Result<std::net::TcpStream> {
        let s = std::net::TcpStream::connect(("127.0.0.1", relay.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(s)
    };

    let mut open = connect()?;
    assert!(echo(&mut open)?, "relayed echo");
    wait_for(
        "the relay to count the connection",
        Duration::from_secs(5),
        || Ok((relay.open_connections() == 1).then_some(())),
    )?;

    relay.cut();
    assert_eq!(relay.open_connections(), 0);
    // The open connection is closed: a read ends (EOF or reset).
    let mut buf = [0u8; 1];
    assert!(matches!(open.read(&mut buf), Ok(0) | Err(_)));
    // New ones are accepted and closed at once, never relayed.
    let mut refused = connect()?;
    assert!(!echo(&mut refused).unwrap_or(false), "relayed while cut");

    relay.heal();
    let mut again = connect()?;
    assert!(echo(&mut again)?, "relayed echo after heal");
    Ok(())
}
