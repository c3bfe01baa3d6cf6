//! `kubectl top` against the real binary: the API server serves
//! `metrics.k8s.io` from the kubelet's stats, so `top node` and `top pod`
//! (with `--containers`, `-A`, `-l`, or a name) show the node and the
//! running pods with plausible CPU and memory figures.

use std::time::Duration;

use anyhow::{Result, bail};
use wasmkube_e2e::{Cluster, sample_manifest, stderr, stdout, wait_for};

const POD_TIMEOUT: Duration = Duration::from_secs(90);
/// Figures need a sampling interval of history; allow for a busy machine.
const METRICS_TIMEOUT: Duration = Duration::from_secs(60);

fn manifest(name: &str) -> String {
    sample_manifest(name).display().to_string()
}

/// `kubectl top …` rows (header dropped), each split on whitespace; `None`
/// while kubectl reports that metrics are not available yet.
fn top(c: &Cluster, args: &[&str]) -> Result<Option<Vec<Vec<String>>>> {
    let mut full = vec!["top"];
    full.extend_from_slice(args);
    let out = c.kubectl(&full)?;
    if !out.status.success() {
        let err = stderr(&out);
        if err.contains("not available") || err.contains("not found") {
            return Ok(None);
        }
        bail!("kubectl {} failed: {err}", full.join(" "));
    }
    let text = stdout(&out);
    Ok(Some(
        text.lines()
            .skip(1)
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect(),
    ))
}

/// `123m` → 123 (millicores).
fn millicores(cell: &str) -> Result<u64> {
    match cell.strip_suffix('m') {
        Some(n) => Ok(n.parse()?),
        None => bail!("CPU cell {cell:?} is not in millicores"),
    }
}

/// `45Mi` → 45 (MiB).
fn mebibytes(cell: &str) -> Result<u64> {
    match cell.strip_suffix("Mi") {
        Some(n) => Ok(n.parse()?),
        None => bail!("memory cell {cell:?} is not in Mi"),
    }
}

/// Waits until `kubectl top pod <args>` has a row for every pod (and
/// container) in `want`, each with some memory, and returns the rows.
fn wait_pods(
    c: &Cluster,
    args: &[&str],
    key_cols: usize,
    want: &[&[&str]],
) -> Result<Vec<Vec<String>>> {
    wait_for(
        &format!("kubectl top pod {} to show {want:?}", args.join(" ")),
        METRICS_TIMEOUT,
        || {
            let Some(rows) = top(c, &[&["pod"][..], args].concat())? else {
                return Ok(None);
            };
            for w in want {
                let Some(row) = rows
                    .iter()
                    .find(|r| r.len() == key_cols + 2 && r[..key_cols] == **w)
                else {
                    bail!("no row for {w:?} in {rows:?}");
                };
                if mebibytes(&row[key_cols + 1])? == 0 {
                    bail!("no memory yet for {w:?}: {row:?}");
                }
            }
            Ok(Some(rows))
        },
    )
}

#[test]
fn kubectl_top_shows_nodes_pods_and_containers() -> Result<()> {
    let c = Cluster::start()?;
    c.push_sample("counter")?;
    c.push_sample("idle")?;
    c.kubectl_ok(&["apply", "-f", &manifest("counter")])?;
    c.kubectl_ok(&["apply", "-f", &manifest("idle")])?;
    c.kubectl_ok(&["create", "namespace", "tools"])?;
    c.kubectl_ok(&["apply", "-n", "tools", "-f", &manifest("idle")])?;
    for pod in ["counter", "idle"] {
        c.wait_phase(pod, "Running", POD_TIMEOUT)?;
    }

    // Nodes: NAME CPU(cores) CPU(%) MEMORY(bytes) MEMORY(%).
    let rows = wait_for("kubectl top node", METRICS_TIMEOUT, || top(&c, &["node"]))?;
    let [node] = rows.as_slice() else {
        bail!("one node expected: {rows:?}");
    };
    assert_eq!(node[0], "node-1", "{rows:?}");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    assert!(millicores(&node[1])? <= cores * 1000, "{node:?}");
    assert!(node[2].ends_with('%'), "{node:?}");
    assert!(mebibytes(&node[3])? > 0, "the host uses memory: {node:?}");
    assert!(node[4].ends_with('%'), "{node:?}");
    let named = wait_for("kubectl top node node-1", METRICS_TIMEOUT, || {
        top(&c, &["node", "node-1"])
    })?;
    assert_eq!(named.first().map(|r| r[0].as_str()), Some("node-1"));

    // Pods of the current namespace: NAME CPU(cores) MEMORY(bytes).
    let rows = wait_pods(&c, &[], 1, &[&["counter"], &["idle"]])?;
    for row in &rows {
        // counter is limited to 250m; idle sleeps.
        assert!(millicores(&row[1])? <= 1000 * cores, "{row:?}");
    }
    assert_eq!(rows.len(), 2, "only the default namespace: {rows:?}");

    // Per container: POD NAME CPU(cores) MEMORY(bytes).
    let rows = wait_pods(
        &c,
        &["--containers"],
        2,
        &[&["counter", "counter"], &["idle", "idle"]],
    )?;
    let counter = rows
        .iter()
        .find(|r| r[0] == "counter")
        .cloned()
        .unwrap_or_default();
    assert!(
        millicores(&counter[2])? <= 300,
        "counter is limited to 250m: {counter:?}"
    );
    // The sample's linear memory, well under its 64Mi limit.
    assert!(mebibytes(&counter[3])? <= 64, "{counter:?}");

    // All namespaces: NAMESPACE NAME CPU(cores) MEMORY(bytes).
    wait_pods(
        &c,
        &["-A"],
        2,
        &[
            &["default", "counter"],
            &["default", "idle"],
            &["tools", "idle"],
        ],
    )?;

    // A label selector and a single pod.
    let rows = wait_pods(&c, &["-l", "app=counter"], 1, &[&["counter"]])?;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let rows = wait_pods(
        &c,
        &["idle", "-n", "tools", "--containers"],
        2,
        &[&["idle", "idle"]],
    )?;
    assert_eq!(rows.len(), 1, "{rows:?}");

    // A pod that does not exist is reported as such.
    let out = c.kubectl(&["top", "pod", "nope"])?;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));

    // The same figures straight from the kubelet, through the node proxy.
    let raw = c.kubectl_ok(&["get", "--raw", "/api/v1/nodes/node-1/proxy/stats/summary"])?;
    let summary: serde_json::Value = serde_json::from_str(&raw)?;
    assert_eq!(summary["node"]["nodeName"], "node-1", "{raw}");
    let pods: Vec<(String, String)> = summary["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let r = &p["podRef"];
            (
                r["namespace"].as_str().unwrap_or("").to_string(),
                r["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for want in [("default", "counter"), ("tools", "idle")] {
        assert!(
            pods.iter().any(|(ns, n)| (ns.as_str(), n.as_str()) == want),
            "{want:?} in {pods:?}"
        );
    }
    let out = c.kubectl(&["get", "--raw", "/api/v1/nodes/nope/proxy/stats/summary"])?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nodes \"nope\" not found"),
        "{}",
        stderr(&out)
    );
    // `view` does not grant nodes/proxy (as in Kubernetes).
    c.kubectl_ok(&["create", "serviceaccount", "looker"])?;
    c.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "looker",
        "--clusterrole=view",
        "--serviceaccount=default:looker",
    ])?;
    let token = c.kubectl_ok(&["create", "token", "looker"])?;
    let out = c.kubectl(&[
        "--token",
        token.trim(),
        "get",
        "--raw",
        "/api/v1/nodes/node-1/proxy/stats/summary",
    ])?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Forbidden") || stderr(&out).contains("forbidden"),
        "{}",
        stderr(&out)
    );
    Ok(())
}
