//! The cluster's module store at scale: a 50 MB module pushed with
//! `wasmkube push` to a cluster on etcd (far over etcd's request limit, so
//! it is stored chunked) runs as a pod, is listed by `wasmkube modules`, and
//! its tag is removed by `wasmkube modules rm`.

use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use wasmkube_e2e::{Backend, Cluster, sample_wasm, stderr, stdout, wasmkube_bin};

/// Size of the module the acceptance criteria name.
const MODULE_BYTES: usize = 50 * 1000 * 1000;

/// `module` with a custom section appended so the whole is `total` bytes:
/// custom sections may follow any section and are ignored when the module
/// runs, so it behaves exactly like the sample.
fn padded(module: &[u8], total: usize) -> Result<Vec<u8>> {
    let name = b"padding";
    // Section id, a 5-byte LEB128 size, the name's length byte and the name.
    let overhead = 1 + 5 + 1 + name.len();
    let Some(payload) = total.checked_sub(module.len() + overhead) else {
        bail!("{total} bytes cannot hold the sample");
    };
    let content = u32::try_from(1 + name.len() + payload)?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(module);
    out.push(0);
    // Padded LEB128 (always 5 bytes), so the total comes out exact.
    for i in 0..5 {
        let byte = ((content >> (7 * i)) & 0x7f) as u8;
        out.push(if i < 4 { byte | 0x80 } else { byte });
    }
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    // Not all zeros: no layer gets to compress it away.
    out.extend((0..payload).map(|i| (i % 251) as u8));
    Ok(out)
}

fn wasmkube(cluster: &Cluster, args: &[&str]) -> Result<Output> {
    Ok(Command::new(wasmkube_bin())
        .args(args)
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .output()?)
}

fn wasmkube_ok(cluster: &Cluster, args: &[&str]) -> Result<String> {
    let out = wasmkube(cluster, args)?;
    if !out.status.success() {
        bail!(
            "wasmkube {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            stdout(&out),
            stderr(&out)
        );
    }
    Ok(stdout(&out))
}

#[test]
fn a_50_mb_module_pushed_to_a_cluster_on_etcd_runs() -> Result<()> {
    let cluster = Cluster::start_on(Backend::Etcd)?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("big-hello.wasm");
    let module = padded(&std::fs::read(sample_wasm("hello"))?, MODULE_BYTES)?;
    ensure!(module.len() == MODULE_BYTES);
    std::fs::write(&file, &module)?;

    let pushed = wasmkube_ok(
        &cluster,
        &["push", &file.display().to_string(), "big-hello:v1"],
    )?;
    ensure!(
        pushed.contains("big-hello:v1") && pushed.contains("sha256:"),
        "{pushed}"
    );

    cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"big-hello"},
            "spec":{"restartPolicy":"Never","containers":[{"name":"hello","image":"big-hello:v1",
            "args":["from","a","big","module"]}]}}"#,
    )?;
    cluster.wait_phase("big-hello", "Succeeded", Duration::from_secs(180))?;
    let status = cluster.kubectl_ok(&["get", "pod", "big-hello", "--no-headers"])?;
    ensure!(status.contains("Completed"), "{status}");
    let logs = cluster.kubectl_ok(&["logs", "big-hello"])?;
    ensure!(logs.contains("Hello, from a big module!"), "{logs}");
    let image_id = cluster.field(
        &["pod", "big-hello"],
        "{.status.containerStatuses[0].imageID}",
    )?;

    // NAME TAG DIGEST SIZE AGE, the size human-readable.
    let table = wasmkube_ok(&cluster, &["modules"])?;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    ensure!(
        header == ["NAME", "TAG", "DIGEST", "SIZE", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = lines
        .find(|l| l.starts_with("big-hello "))
        .unwrap_or("")
        .split_whitespace()
        .collect();
    ensure!(row.len() == 5, "{table}");
    ensure!(row[1] == "v1" && row[3] == "47.7MiB", "{table}");
    ensure!(
        row[2].starts_with("sha256:")
            && row[2].len() == "sha256:".len() + 12
            && image_id.contains(row[2]),
        "the digest column is the one the pod ran ({image_id}): {table}"
    );
    ensure!(
        row[4].ends_with('s') || row[4].ends_with('m'),
        "age like 40s or 2m: {table}"
    );

    // Removing the tag: gone from the list, and a second removal fails clearly.
    let removed = wasmkube_ok(&cluster, &["modules", "rm", "big-hello:v1"])?;
    ensure!(
        removed.contains("module \"big-hello:v1\" deleted"),
        "{removed}"
    );
    let out = wasmkube(&cluster, &["modules"])?;
    ensure!(
        out.status.success() && !stdout(&out).contains("big-hello"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let again = wasmkube(&cluster, &["modules", "rm", "big-hello:v1"])?;
    ensure!(
        !again.status.success() && stderr(&again).contains("module \"big-hello:v1\" not found"),
        "{}",
        stderr(&again)
    );
    Ok(())
}
