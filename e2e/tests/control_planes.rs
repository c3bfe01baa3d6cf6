//! Two control planes on one etcd run one scheduler and one controller
//! manager between them (leader election through Leases in `kube-system`):
//! every pod, whichever API server it was created through, is bound exactly
//! once; when the leading server dies, the other's scheduler takes over.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::{Value, json};
use wasmkube_e2e::{Cluster, ClusterOptions, Etcd, wait_for};

const LEASES: [&str; 2] = ["wasmkube-scheduler", "wasmkube-controller-manager"];
const PODS: usize = 1_000;
/// Nodes made up by the test, so that the pods fit (node-1 takes 110).
const EXTRA_NODES: usize = 2;

/// An HTTPS client for one API server, with the shared admin token.
struct Api {
    http: reqwest::blocking::Client,
    url: String,
    auth: String,
}

impl Api {
    fn of(c: &Cluster) -> Result<Api> {
        let (token, _) = c.credentials()?;
        Ok(Api {
            http: c.http()?,
            url: c.url(),
            auth: format!("Bearer {token}"),
        })
    }

    fn post(&self, path: &str, body: &Value) -> Result<()> {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("Authorization", &self.auth)
            .json(body)
            .send()?;
        if r.status().as_u16() != 201 {
            bail!("POST {path}: {} {}", r.status(), r.text()?);
        }
        Ok(())
    }

    fn patch_status(&self, path: &str, body: &Value) -> Result<()> {
        let r = self
            .http
            .patch(format!("{}{path}/status", self.url))
            .header("Authorization", &self.auth)
            .header("Content-Type", "application/merge-patch+json")
            .body(body.to_string())
            .send()?;
        if !r.status().is_success() {
            bail!("PATCH {path}/status: {} {}", r.status(), r.text()?);
        }
        Ok(())
    }

    fn list(&self, path: &str) -> Result<Vec<Value>> {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .header("Authorization", &self.auth)
            .send()?;
        if !r.status().is_success() {
            bail!("GET {path}: {}", r.status());
        }
        let list: Value = r.json()?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"test": "control-planes"}},
        // Never pulled on the made-up nodes, and absent on node-1: the pods
        // need scheduling, not wasm.
        "spec": {"containers": [{"name": "c", "image": "does-not-exist:v1"}]}})
}

/// Creates pods `names` in parallel, alternating between the API servers.
fn create_pods(apis: &[&Api], names: &[String]) -> Result<()> {
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                s.spawn(move || -> Result<()> {
                    for (i, name) in names.iter().enumerate().skip(w).step_by(4) {
                        apis[i % apis.len()].post("/api/v1/namespaces/default/pods", &pod(name))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a create thread panicked"))??;
        }
        Ok(())
    })
}

/// Waits until each of `names` has `spec.nodeName`; returns name → uid.
fn wait_bound(api: &Api, names: &[String], timeout: Duration) -> Result<HashMap<String, String>> {
    wait_for("every pod to be bound", timeout, || {
        let pods =
            api.list("/api/v1/namespaces/default/pods?labelSelector=test%3Dcontrol-planes")?;
        let bound: HashMap<String, String> = pods
            .iter()
            .filter(|p| {
                p["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty())
            })
            .filter_map(|p| {
                Some((
                    p["metadata"]["name"].as_str()?.to_string(),
                    p["metadata"]["uid"].as_str()?.to_string(),
                ))
            })
            .collect();
        let missing = names.iter().filter(|n| !bound.contains_key(*n)).count();
        if missing > 0 {
            bail!("{missing} of {} pods not bound yet", names.len());
        }
        Ok(Some(
            bound
                .into_iter()
                .filter(|(name, _)| names.contains(name))
                .collect(),
        ))
    })
}

/// Waits until each pod in `uids` has its `Scheduled` event, then checks
/// it has exactly one (no second scheduler bound it, or tried to). Returns
/// the `reportingInstance` of each event.
fn scheduled_once(api: &Api, uids: &HashMap<String, String>) -> Result<Vec<String>> {
    let events = wait_for(
        "a Scheduled event for every pod",
        Duration::from_secs(30),
        || {
            let events =
                api.list("/api/v1/namespaces/default/events?fieldSelector=reason%3DScheduled")?;
            let mut per_uid: HashMap<String, Vec<Value>> = HashMap::new();
            for e in events {
                if let Some(uid) = e["involvedObject"]["uid"].as_str() {
                    per_uid.entry(uid.to_string()).or_default().push(e);
                }
            }
            let missing = uids.values().filter(|u| !per_uid.contains_key(*u)).count();
            if missing > 0 {
                bail!("{missing} pods without a Scheduled event yet");
            }
            Ok(Some(per_uid))
        },
    )?;
    let mut instances = Vec::new();
    for (name, uid) in uids {
        let mine = &events[uid];
        let count: i64 = mine.iter().map(|e| e["count"].as_i64().unwrap_or(1)).sum();
        assert_eq!(
            (mine.len(), count),
            (1, 1),
            "pod {name} was scheduled more than once: {mine:#?}"
        );
        instances.push(
            mine[0]["reportingInstance"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    Ok(instances)
}

/// The leader election identity a server logged at start.
fn identity_of(c: &Cluster) -> Result<String> {
    let log = c.server_log();
    let line = log
        .lines()
        .find(|l| l.contains("leader election identity"))
        .ok_or_else(|| anyhow::anyhow!("no identity in the server log"))?;
    let (_, id) = line
        .split_once("identity=")
        .ok_or_else(|| anyhow::anyhow!("no identity= in {line:?}"))?;
    Ok(id.trim().to_string())
}

fn holder(c: &Cluster, lease: &str) -> Result<String> {
    Ok(c.field(
        &["lease", "-n", "kube-system", lease],
        "{.spec.holderIdentity}",
    )?
    .trim()
    .to_string())
}

#[test]
fn two_control_planes_bind_each_pod_once_and_the_survivor_takes_over() -> Result<()> {
    let etcd = Etcd::start()?;
    let on_etcd = vec!["--etcd-endpoints".to_string(), etcd.client_url.clone()];
    let mut a = Cluster::start_with(ClusterOptions {
        extra_args: on_etcd.clone(),
        ..Default::default()
    })?;
    let mut b_args = on_etcd;
    b_args.push("--no-node".into());
    let b = Cluster::start_with(ClusterOptions {
        extra_args: b_args,
        share_credentials_with: Some(a.data_dir()),
    })?;

    // A started first and leads both; B stands by. One holder per lease, and
    // only A ever acquired.
    let (a_identity, b_identity) = (identity_of(&a)?, identity_of(&b)?);
    assert_ne!(a_identity, b_identity);
    for lease in LEASES {
        wait_for(
            &format!("{lease} to be held by A"),
            Duration::from_secs(30),
            || Ok((holder(&b, lease)? == a_identity).then_some(())),
        )?;
    }
    wait_for(
        "B to stand by for both leases",
        Duration::from_secs(30),
        || {
            let log = b.server_log();
            Ok(LEASES
                .iter()
                .all(|l| {
                    log.lines().any(|line| {
                        line.contains(&format!("kube-system/{l}")) && line.contains("standing by")
                    })
                })
                .then_some(()))
        },
    )?;
    let acquired = |c: &Cluster| {
        c.server_log()
            .lines()
            .filter(|l| l.contains("acquired the lease"))
            .count()
    };
    assert_eq!(acquired(&a), 2, "A leads the scheduler and the controllers");
    assert_eq!(acquired(&b), 0, "B leads nothing");

    let (api_a, api_b) = (Api::of(&a)?, Api::of(&b)?);
    for i in 1..=EXTRA_NODES {
        let path = format!("/api/v1/nodes/capacity-{i}");
        let lots = json!({"pods": "600", "cpu": "64", "memory": "256Gi"});
        api_a.post(
            "/api/v1/nodes",
            &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("capacity-{i}")}}),
        )?;
        api_a.patch_status(
            &path,
            &json!({"status": {"capacity": lots, "allocatable": lots,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}),
        )?;
    }

    // Pods created through both servers are each bound exactly once.
    let names: Vec<String> = (0..PODS).map(|i| format!("p-{i}")).collect();
    create_pods(&[&api_a, &api_b], &names)?;
    let uids = wait_bound(&api_b, &names, Duration::from_secs(60))?;
    let instances = scheduled_once(&api_b, &uids)?;
    assert!(
        instances.iter().all(|i| *i == a_identity),
        "A's scheduler bound them all"
    );

    // A dies without releasing its leases: B's scheduler takes over once
    // they expire (15 s), while node-1's last heartbeat is still fresh.
    a.kill9()?;
    let later: Vec<String> = (0..20).map(|i| format!("after-{i}")).collect();
    create_pods(&[&api_b], &later)?;
    let uids = wait_bound(&api_b, &later, Duration::from_secs(40))?;
    assert_eq!(
        holder(&b, LEASES[0])?,
        b_identity,
        "B holds the scheduler lease"
    );
    let instances = scheduled_once(&api_b, &uids)?;
    assert!(
        instances.iter().all(|i| *i == b_identity),
        "B's scheduler bound the new pods: {instances:?}"
    );
    // B's controller manager started node-1's grace period afresh.
    assert_eq!(
        b.field(
            &["node", "node-1"],
            "{.status.conditions[?(@.type==\"Ready\")].status}"
        )?,
        "True"
    );
    wait_for(
        "B to take the controller-manager lease too",
        Duration::from_secs(30),
        || Ok((holder(&b, LEASES[1])? == b_identity).then_some(())),
    )?;
    Ok(())
}
