//! Secrets at rest with the real binary and kubectl, on both backends: a
//! Secret made with `kubectl create secret` reads back through kubectl but
//! is nowhere in the clear in the store (the data directory's files, or
//! every key of etcd through its JSON gateway); `wasmkube secrets
//! rotate-key`, `rewrite`, `status` and `remove-key` move it to a new key
//! with the server running.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use wasmkube_e2e::{Cluster, Etcd, stderr, stdout, wasmkube_bin};

const MARKER: &str = "tr0ub4dor-and-3-e2e-9c1d";

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// `wasmkube secrets <args>` against `c`; stdout, failing on a non-zero exit.
fn secrets(c: &Cluster, args: &[&str]) -> Result<String> {
    let out = Command::new(wasmkube_bin())
        .arg("secrets")
        .args(args)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .output()
        .context("running wasmkube secrets")?;
    if !out.status.success() {
        bail!(
            "wasmkube secrets {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            stdout(&out),
            stderr(&out)
        );
    }
    Ok(stdout(&out))
}

/// `wasmkube secrets rotate-key|remove-key … --data-dir <dir>`.
fn key_file_command(c: &Cluster, args: &[&str]) -> Result<String> {
    let out = Command::new(wasmkube_bin())
        .arg("secrets")
        .args(args)
        .arg("--data-dir")
        .arg(c.data_dir())
        .output()?;
    ensure!(
        out.status.success(),
        "wasmkube secrets {}: {}{}",
        args.join(" "),
        stdout(&out),
        stderr(&out)
    );
    Ok(stdout(&out))
}

/// The status table's row for `key`.
fn row(table: &str, key: &str) -> String {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(key))
        .unwrap_or_default()
        .to_string()
}

/// Every file under `dir`, read whole.
fn files_under(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        } else if p.is_file() {
            out.push((p.display().to_string(), std::fs::read(&p)?));
        }
    }
    Ok(out)
}

/// Every key and value in etcd, through its v3 JSON gateway.
fn etcd_all(client_url: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let b = base64::engine::general_purpose::STANDARD;
    let resp: serde_json::Value = reqwest::blocking::Client::new()
        .post(format!("{client_url}/v3/kv/range"))
        .json(&serde_json::json!({"key": b.encode([0u8]), "range_end": b.encode([0u8])}))
        .send()?
        .error_for_status()?
        .json()?;
    let mut out = Vec::new();
    for kv in resp["kvs"].as_array().cloned().unwrap_or_default() {
        let key = b.decode(kv["key"].as_str().unwrap_or_default())?;
        let value = b.decode(kv["value"].as_str().unwrap_or_default())?;
        out.push((String::from_utf8_lossy(&key).into_owned(), value));
    }
    Ok(out)
}

/// What the store holds: `(key or file, bytes)`.
fn raw_store(c: &Cluster, etcd: Option<&Etcd>) -> Result<Vec<(String, Vec<u8>)>> {
    match etcd {
        Some(e) => etcd_all(&e.client_url),
        None => files_under(&c.data_dir()),
    }
}

fn no_plaintext(raw: &[(String, Vec<u8>)]) -> Result<()> {
    for (what, bytes) in raw {
        ensure!(
            !contains(bytes, MARKER) && !contains(bytes, &b64(MARKER.as_bytes())),
            "{what} holds the Secret's data in the clear"
        );
    }
    Ok(())
}

fn secret_stored_with(raw: &[(String, Vec<u8>)], key_name: &str) -> bool {
    let envelope = format!("k8s:enc:aesgcm:v1:{key_name}:");
    raw.iter().any(|(what, bytes)| {
        (what.contains("/registry/secrets/default/s1") || what.ends_with("store.redb"))
            && contains(bytes, &envelope)
    })
}

fn secrets_encrypted_and_rotated(on_etcd: bool) -> Result<()> {
    let etcd = if on_etcd { Some(Etcd::start()?) } else { None };
    let mut args: Vec<String> = Vec::new();
    if let Some(e) = &etcd {
        args.push("--etcd-endpoints".into());
        args.push(e.client_url.clone());
    }
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let c = Cluster::start_without_node(&arg_refs)?;
    c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        &format!("--from-literal=password={MARKER}"),
    ])?;
    let got = c.kubectl_ok(&["get", "secret", "s1", "-o", "jsonpath={.data.password}"])?;
    ensure!(got.trim() == b64(MARKER.as_bytes()), "{got}");

    let raw = raw_store(&c, etcd.as_ref())?;
    no_plaintext(&raw)?;
    ensure!(
        secret_stored_with(&raw, "key1"),
        "the Secret is not stored under key1"
    );

    let status = secrets(&c, &[])?;
    ensure!(
        row(&status, "key1").contains("encrypts new writes"),
        "{status}"
    );

    let rotated = key_file_command(&c, &["rotate-key"])?;
    ensure!(rotated.contains("key key2 added"), "{rotated}");
    let report = secrets(&c, &["rewrite"])?;
    ensure!(
        report.contains("failed: 0") && !report.contains("rewritten: 0"),
        "{report}"
    );
    let status = secrets(&c, &["status"])?;
    ensure!(
        row(&status, "key2").contains("encrypts new writes"),
        "{status}"
    );
    ensure!(
        row(&status, "key1").contains("unused: may be removed"),
        "{status}"
    );
    key_file_command(&c, &["remove-key", "key1"])?;

    let got = c.kubectl_ok(&["get", "secret", "s1", "-o", "jsonpath={.data.password}"])?;
    ensure!(got.trim() == b64(MARKER.as_bytes()), "{got}");
    let raw = raw_store(&c, etcd.as_ref())?;
    no_plaintext(&raw)?;
    ensure!(
        secret_stored_with(&raw, "key2"),
        "the Secret was not rewritten with key2"
    );
    // Removing the key that encrypts is refused.
    let out = Command::new(wasmkube_bin())
        .args(["secrets", "remove-key", "key2", "--data-dir"])
        .arg(c.data_dir())
        .output()?;
    ensure!(
        !out.status.success() && stderr(&out).contains("encrypts new writes"),
        "{}",
        stderr(&out)
    );
    drop(c);
    Ok(())
}

#[test]
fn secrets_are_encrypted_and_rotated_on_the_embedded_store() -> Result<()> {
    secrets_encrypted_and_rotated(false)
}

#[test]
fn secrets_are_encrypted_and_rotated_on_etcd() -> Result<()> {
    secrets_encrypted_and_rotated(true)
}
