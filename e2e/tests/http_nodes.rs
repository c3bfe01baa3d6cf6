//! HTTP workloads behind Services across nodes (issue 7): one `wasmkube
//! server` with its built-in node `node-1` on 127.0.0.1 plus two `wasmkube
//! agent`s joined with a token, each on a loopback address of its own
//! (`--node-ip`; Linux routes all of 127/8 to lo, and every node binds its
//! NodePort listeners and proxy port on its node IP, so three nodes share
//! one host without clashing).
//!
//! - Three `http-echo` replicas, one per node, behind a NodePort Service
//!   answer on every node's NodePort and Host route, and a request arriving
//!   on one node is served by replicas on the other nodes too (the node
//!   proxy forwards to the owning node's proxy).
//! - The two-service example with its frontend and backend on different
//!   nodes: the frontend's call to `backend.default` reaches a backend pod
//!   on the other node; pointed at a host it does not list, it is refused.
//!
//! The scheduler only scores spreading (no topologySpreadConstraints, no pod
//! anti-affinity), so replicas are pinned to nodes with a nodeSelector on
//! `kubernetes.io/hostname`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use serde_json::Value;
use wasmkube_e2e::{Agent, AgentOptions, Cluster, sample_manifest, stderr, stdout, tail, wait_for};

const TIMEOUT: Duration = Duration::from_secs(90);
/// The request loop during the rolling update is bounded in count.
const MAX_LOOP_REQUESTS: usize = 5_000;
/// Requests sent to one node's port while looking for every replica; the
/// proxy picks round-robin, so three replicas show up within a few.
const SPREAD_REQUESTS: usize = 30;

/// A loopback address no node of these tests uses.
const UNUSED_IP: &str = "127.0.0.99";
/// The built-in node and the agents' names.
const NODE_1: &str = "node-1";
const NODE_2: &str = "node-2";
const NODE_3: &str = "node-3";

/// One node as the test reaches it.
#[derive(Debug, Clone)]
struct NodeAddr {
    name: String,
    ip: String,
    proxy_port: u16,
}

/// A server with its built-in node plus two agents.
struct ThreeNodes {
    // Agents first: they are dropped (killed) before the server.
    agents: Vec<Agent>,
    c: Cluster,
    nodes: Vec<NodeAddr>,
}

impl ThreeNodes {
    /// Starts the cluster; `agent_ips` are the agents' `--node-ip`s. Each
    /// test uses addresses of its own, so two clusters running at once
    /// cannot clash on a NodePort number that both happened to allocate.
    fn start(agent_ips: [&str; 2]) -> Result<ThreeNodes> {
        let c = Cluster::start()?;
        let token = c.create_join_token()?;
        // Spawned together, then waited for: the two joins overlap.
        let mut agents = Vec::new();
        for (name, ip) in [NODE_2, NODE_3].into_iter().zip(agent_ips) {
            let options = AgentOptions {
                extra_args: vec!["--node-ip".into(), ip.into()],
                ..AgentOptions::default()
            };
            agents.push(Agent::spawn(&c.url(), &token, name, options)?);
        }
        for a in &mut agents {
            a.wait_ready()?;
        }
        let mut cluster = ThreeNodes {
            agents,
            c,
            nodes: Vec::new(),
        };
        let expected = [
            (NODE_1, "127.0.0.1"),
            (NODE_2, agent_ips[0]),
            (NODE_3, agent_ips[1]),
        ];
        let nodes = wait_for("three Ready nodes on their own IPs", TIMEOUT, || {
            let mut nodes = Vec::new();
            for (name, ip) in expected {
                let ready = cluster.c.node_ready(name)?;
                ensure!(ready == "True", "node {name} Ready is {ready:?}");
                let node = node_addr(&cluster.c, name)?;
                ensure!(node.ip == ip, "node {name} has InternalIP {}", node.ip);
                nodes.push(node);
            }
            Ok(Some(nodes))
        });
        cluster.nodes = cluster.explain(nodes)?;
        Ok(cluster)
    }

    /// `r`, with the tails of every process's log added to an error.
    fn explain<T>(&self, r: Result<T>) -> Result<T> {
        r.map_err(|e| {
            let mut msg = format!(
                "{e:#}\n--- server log (tail) ---\n{}",
                tail(&self.c.server_log(), 60)
            );
            for a in &self.agents {
                msg += &format!(
                    "\n--- agent {} log (tail) ---\n{}",
                    a.name,
                    tail(&a.log(), 60)
                );
            }
            anyhow!(msg)
        })
    }

    /// `kubectl apply -f -` of `yaml`.
    fn apply(&self, yaml: &str) -> Result<()> {
        let out = self.c.kubectl_stdin(&["apply", "-f", "-"], yaml)?;
        ensure!(
            out.status.success(),
            "kubectl apply: {}{}",
            stdout(&out),
            stderr(&out)
        );
        Ok(())
    }

    fn rollout(&self, deploy: &str) -> Result<()> {
        self.c.kubectl_ok(&[
            "rollout",
            "status",
            &format!("deploy/{deploy}"),
            "--timeout=90s",
        ])?;
        Ok(())
    }

    /// pod name → node name of the pods matching `selector`.
    fn pod_nodes(&self, selector: &str) -> Result<BTreeMap<String, String>> {
        let out = self
            .c
            .kubectl_ok(&["get", "pods", "-l", selector, "-o", "json"])?;
        let list: Value = serde_json::from_str(&out)?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                (s(&p["metadata"]["name"]), s(&p["spec"]["nodeName"]))
            })
            .collect())
    }

    fn node_port(&self, svc: &str) -> Result<u16> {
        let port = self.c.field(&["svc", svc], "{.spec.ports[0].nodePort}")?;
        port.trim()
            .parse()
            .with_context(|| format!("nodePort of {svc}: {port:?}"))
    }
}

/// A node's InternalIP and proxy port, as it published them.
fn node_addr(c: &Cluster, name: &str) -> Result<NodeAddr> {
    let out = c.kubectl_ok(&["get", "node", name, "-o", "json"])?;
    let node: Value = serde_json::from_str(&out)?;
    let ip = node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .ok_or_else(|| anyhow!("node {name} has no InternalIP"))?
        .to_string();
    let port = node["metadata"]["annotations"]["wasmkube.io/proxy-port"]
        .as_str()
        .ok_or_else(|| anyhow!("node {name} has no proxy-port annotation"))?;
    Ok(NodeAddr {
        name: name.to_string(),
        ip,
        proxy_port: port
            .parse()
            .with_context(|| format!("proxy port {port:?}"))?,
    })
}

fn client() -> Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()?)
}

/// GET `url` (with `host` as the Host header when given) → (status,
/// x-served-by, body).
fn get(
    http: &reqwest::blocking::Client,
    url: &str,
    host: Option<&str>,
) -> Result<(u16, String, String)> {
    let mut req = http.get(url);
    if let Some(host) = host {
        req = req.header("Host", host);
    }
    let resp = req.send()?;
    let status = resp.status().as_u16();
    let served_by = wasmkube_e2e::served_by(&resp);
    Ok((status, served_by, resp.text()?))
}

/// Three single-replica Deployments of `http-echo`, one pinned to each
/// node (the scheduler has no hard spreading to do it for one Deployment),
/// with distinct selectors so no two Deployments adopt each other's pods,
/// and one NodePort Service over all three by their common `app` label.
fn echo_per_node_yaml() -> String {
    let mut yaml = String::new();
    for node in [NODE_1, NODE_2, NODE_3] {
        yaml += &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: http-echo-{node}
  labels:
    app: http-echo
spec:
  replicas: 1
  selector:
    matchLabels:
      app: http-echo
      pin: {node}
  template:
    metadata:
      labels:
        app: http-echo
        pin: {node}
    spec:
      terminationGracePeriodSeconds: 5
      nodeSelector:
        kubernetes.io/hostname: {node}
      containers:
        - name: echo
          image: http-echo:v1
          ports:
            - name: http
              containerPort: 8080
          env:
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
---"#
        );
    }
    yaml += r#"
apiVersion: v1
kind: Service
metadata:
  name: http-echo
spec:
  type: NodePort
  selector:
    app: http-echo
  ports:
    - name: http
      port: 80
      targetPort: http
"#;
    yaml
}

#[test]
fn echo_replicas_on_three_nodes_answer_on_every_nodes_port_and_spread_across_nodes() -> Result<()> {
    let k = ThreeNodes::start(["127.0.0.2", "127.0.0.3"])?;
    let r = echo_on_every_node(&k);
    k.explain(r)
}

fn echo_on_every_node(k: &ThreeNodes) -> Result<()> {
    k.c.push_sample("http-echo")?;
    k.apply(&echo_per_node_yaml())?;
    for node in [NODE_1, NODE_2, NODE_3] {
        k.rollout(&format!("http-echo-{node}"))?;
    }
    let pods = k.pod_nodes("app=http-echo")?;
    let placed: BTreeSet<&str> = pods.values().map(String::as_str).collect();
    ensure!(
        pods.len() == 3 && placed == BTreeSet::from([NODE_1, NODE_2, NODE_3]),
        "one replica per node: {pods:?}"
    );

    let http = client()?;
    let node_port = k.node_port("http-echo")?;
    // The listeners are the nodes' own: nothing answers the NodePort on a
    // loopback address no node has (a wildcard bind would).
    let stray = format!("http://{UNUSED_IP}:{node_port}/");
    ensure!(
        http.get(&stray).send().is_err_and(|e| e.is_connect()),
        "{stray} must not be served"
    );
    for node in &k.nodes {
        let url = format!("http://{}:{node_port}/hi?n=1", node.ip);
        // Each node's proxy learns the Service, the endpoints and the other
        // nodes from its own watches; until then its port may not answer.
        // Every replica must have answered through this node's port, and
        // every request is a 200, before this node counts.
        let seen = wait_for(
            &format!("every replica to answer on {}'s NodePort {url}", node.name),
            TIMEOUT,
            || {
                let mut seen = BTreeSet::new();
                for _ in 0..SPREAD_REQUESTS {
                    let (status, by, body) = get(&http, &url, None)?;
                    ensure!(status == 200, "status {status}: {body}");
                    seen.insert(by);
                    if seen.len() == pods.len() {
                        break;
                    }
                }
                ensure!(
                    seen.iter().eq(pods.keys()),
                    "served by {seen:?} of {pods:?}"
                );
                Ok(Some(seen))
            },
        )?;
        eprintln!("{} ({}:{node_port}) served by {seen:?}", node.name, node.ip);
        let other_nodes: BTreeSet<&str> = seen
            .iter()
            .filter_map(|p| pods.get(p))
            .map(String::as_str)
            .filter(|n| *n != node.name)
            .collect();
        ensure!(
            other_nodes.len() == 2,
            "{}'s port forwarded to replicas on both other nodes: {other_nodes:?}",
            node.name
        );

        // The same Service by Host header on the node's proxy port, and a
        // POST body through the forwarding (the echo returns it).
        let via_host = format!("http://{}:{}/via-host", node.ip, node.proxy_port);
        let (status, _, body) = get(&http, &via_host, Some("http-echo.default"))?;
        ensure!(status == 200, "{via_host}: {status} {body}");
        for _ in 0..pods.len() {
            let resp = http.post(&url).body("payload").send()?;
            let by = wasmkube_e2e::served_by(&resp);
            let body: Value = resp.error_for_status()?.json()?;
            ensure!(
                body["method"] == "POST" && body["path"] == "/hi?n=1" && body["body"] == "payload",
                "{} via {}: {body}",
                by,
                node.name
            );
            ensure!(body["pod"] == by.as_str(), "{body} from {by}");
        }
    }
    Ok(())
}

#[test]
fn a_rolling_update_under_requests_on_every_node_loses_none() -> Result<()> {
    let k = ThreeNodes::start(["127.0.0.6", "127.0.0.7"])?;
    let r = rolling_update_across_nodes(&k);
    k.explain(r)
}

/// Every replica is replaced (each Deployment surges a new pod on its
/// node, then deletes the old one) while requests keep entering on every
/// node in turn, so most of them are forwarded to another node: the old
/// replicas on the other nodes stop taking requests before every proxy has
/// seen their endpoints go, and none of those requests may be lost.
fn rolling_update_across_nodes(k: &ThreeNodes) -> Result<()> {
    k.c.push_sample("http-echo")?;
    k.apply(&echo_per_node_yaml())?;
    for node in [NODE_1, NODE_2, NODE_3] {
        k.rollout(&format!("http-echo-{node}"))?;
    }
    let before = k.pod_nodes("app=http-echo")?;
    ensure!(before.len() == 3, "three replicas: {before:?}");
    let http = client()?;
    let node_port = k.node_port("http-echo")?;
    let urls: Vec<String> = k
        .nodes
        .iter()
        .map(|n| format!("http://{}:{node_port}/roll", n.ip))
        .collect();
    for url in &urls {
        wait_for(&format!("{url} to answer"), TIMEOUT, || {
            let (status, _, body) = get(&http, url, None)?;
            ensure!(status == 200, "status {status}: {body}");
            Ok(Some(()))
        })?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let looper = {
        let stop = stop.clone();
        let http = http.clone();
        std::thread::spawn(move || {
            let mut results: Vec<(String, u16, String)> = Vec::new();
            while !stop.load(Ordering::Relaxed) && results.len() < MAX_LOOP_REQUESTS {
                let url = &urls[results.len() % urls.len()];
                // Every other request carries a body, which must reach a
                // replica whole even when the first pick is gone.
                let sent = if results.len().is_multiple_of(2) {
                    get(&http, url, None)
                } else {
                    post(&http, url, "payload")
                };
                results.push(match sent {
                    Ok((status, by, body)) => (url.clone(), status, by + " " + &body),
                    Err(e) => (url.clone(), 0, format!("{e:#}")),
                });
                std::thread::sleep(Duration::from_millis(10));
            }
            results
        })
    };
    k.c.kubectl_ok(&["rollout", "restart", "deploy", "-l", "app=http-echo"])?;
    for node in [NODE_1, NODE_2, NODE_3] {
        k.rollout(&format!("http-echo-{node}"))?;
    }
    // Keep asking until the old replicas are gone, so each of them
    // drained while requests were arriving.
    wait_for("the old replicas to be gone", TIMEOUT, || {
        let now = k.pod_nodes("app=http-echo")?;
        ensure!(
            !now.keys().any(|p| before.contains_key(p)),
            "replicas: {now:?}"
        );
        Ok(Some(()))
    })?;
    stop.store(true, Ordering::Relaxed);
    let results = looper
        .join()
        .map_err(|_| anyhow!("the request loop panicked"))?;
    let failed: Vec<_> = results.iter().filter(|(_, s, _)| *s != 200).collect();
    ensure!(
        failed.is_empty(),
        "{} of {} requests failed during the rolling update: {:?}",
        failed.len(),
        results.len(),
        &failed[..failed.len().min(10)]
    );
    let after = k.pod_nodes("app=http-echo")?;
    ensure!(
        results
            .iter()
            .any(|(_, _, by)| after.keys().any(|p| by.starts_with(p.as_str()))),
        "new replicas served during the loop"
    );
    eprintln!(
        "rolling update across nodes: {} requests, all 200",
        results.len()
    );
    Ok(())
}

/// POST `body` to `url` → (status, x-served-by, response body); a 200
/// must echo the body back.
fn post(http: &reqwest::blocking::Client, url: &str, body: &str) -> Result<(u16, String, String)> {
    let resp = http.post(url).body(body.to_string()).send()?;
    let status = resp.status().as_u16();
    let served_by = wasmkube_e2e::served_by(&resp);
    let text = resp.text()?;
    if status == 200 {
        let echoed: Value = serde_json::from_str(&text)?;
        ensure!(echoed["body"] == body, "the body came back: {text}");
    }
    Ok((status, served_by, text))
}

/// `wasm-samples/manifests/two-services.yaml` with the backend's pods
/// pinned to `backend_node` and the frontend's to `frontend_node`.
fn two_services_yaml(backend_node: &str, frontend_node: &str) -> Result<String> {
    let path = sample_manifest("two-services");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut docs = Vec::new();
    for doc in text.split("\n---\n") {
        let mut v: serde_yaml::Value = serde_yaml::from_str(doc)?;
        if v["kind"] == "Deployment" {
            let node = match v["metadata"]["name"].as_str() {
                Some("backend") => backend_node,
                Some("frontend") => frontend_node,
                other => bail!("unexpected Deployment {other:?} in two-services.yaml"),
            };
            let spec = v["spec"]["template"]["spec"]
                .as_mapping_mut()
                .context("the Deployment has a pod spec")?;
            let mut selector = serde_yaml::Mapping::new();
            selector.insert("kubernetes.io/hostname".into(), node.into());
            spec.insert("nodeSelector".into(), selector.into());
        }
        docs.push(serde_yaml::to_string(&v)?);
    }
    Ok(docs.join("---\n"))
}

#[test]
fn a_frontend_calls_its_backend_on_another_node_and_unlisted_hosts_are_refused() -> Result<()> {
    let k = ThreeNodes::start(["127.0.0.4", "127.0.0.5"])?;
    let r = two_services_across_nodes(&k);
    k.explain(r)
}

fn two_services_across_nodes(k: &ThreeNodes) -> Result<()> {
    k.c.push_sample("http-echo")?;
    k.c.push_sample("http-frontend")?;
    // Backend on one agent, frontend on the other; requests also enter on
    // node-1, which runs neither, so a call there crosses three nodes.
    k.apply(&two_services_yaml(NODE_2, NODE_3)?)?;
    k.rollout("backend")?;
    k.rollout("frontend")?;
    let backends = k.pod_nodes("app=backend")?;
    let frontends = k.pod_nodes("app=frontend")?;
    ensure!(
        !backends.is_empty() && backends.values().all(|n| n == NODE_2),
        "backends on {NODE_2}: {backends:?}"
    );
    ensure!(
        !frontends.is_empty() && frontends.values().all(|n| n == NODE_3),
        "frontends on {NODE_3}: {frontends:?}"
    );

    let http = client()?;
    let node_port = k.node_port("frontend")?;
    for node in &k.nodes {
        let url = format!("http://{}:{node_port}/hello?x=1", node.ip);
        let body: Value = wait_for(
            &format!("the frontend to answer with its backend's echo on {url}"),
            TIMEOUT,
            || {
                let (status, _, body) = get(&http, &url, None)?;
                ensure!(status == 200, "status {status}: {body}");
                let body: Value = serde_json::from_str(&body)?;
                ensure!(body["backend_status"] == 200, "{body}");
                Ok(Some(body))
            },
        )?;
        ensure!(body["backend"]["path"] == "/hello?x=1", "{body}");
        let backend = body["backend"]["pod"].as_str().unwrap_or_default();
        let frontend = body["frontend"].as_str().unwrap_or_default();
        ensure!(
            backends.get(backend).is_some_and(|n| n == NODE_2),
            "the backend pod {backend:?} is one on {NODE_2} ({backends:?}): {body}"
        );
        ensure!(
            frontends.get(frontend).is_some_and(|n| n == NODE_3),
            "the frontend pod {frontend:?} is one on {NODE_3} ({frontends:?}): {body}"
        );
        eprintln!("{} ({url}): {frontend} -> {backend}", node.name);
    }

    // Point the frontend at a host its allowed-outbound-hosts annotation
    // does not list: every call is refused, on every node.
    let old: BTreeSet<String> = frontends.into_keys().collect();
    k.c.kubectl_ok(&["set", "env", "deploy/frontend", "BACKEND=example.com"])?;
    k.rollout("frontend")?;
    wait_for("the old frontend pods to be gone", TIMEOUT, || {
        let now = k.pod_nodes("app=frontend")?;
        ensure!(
            !now.keys().any(|p| old.contains(p)),
            "frontend pods: {now:?}"
        );
        Ok(Some(()))
    })?;
    for node in &k.nodes {
        let url = format!("http://{}:{node_port}/hello", node.ip);
        wait_for(
            &format!("{url} to refuse the call to example.com"),
            TIMEOUT,
            || {
                let (status, _, text) = get(&http, &url, None)?;
                ensure!(status == 502, "status {status}: {text}");
                ensure!(
                    text.contains("denied") && text.contains("example.com"),
                    "the refusal says so: {text}"
                );
                Ok(Some(()))
            },
        )?;
    }
    Ok(())
}
