//! `wasmkube secrets [status|rewrite|rotate-key|remove-key]`: the keys that
//! encrypt Secrets at rest.
//!
//! `rotate-key` and `remove-key` edit the key file (`<data>/pki/
//! encryption-keys.yaml`, or `--encryption-provider-config`) on the server's
//! machine; `status` and `rewrite` ask the running server, which re-reads
//! the key file first, so a rotation needs no restart. Rotating is: add a
//! key (`rotate-key`), write every Secret again with it (`rewrite`), check
//! that the old key protects nothing (`status`), then drop it
//! (`remove-key`).

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use kube::config::KubeConfigOptions;
use wasmkube_apiserver::storage::encryption::{self, IDENTITY, KeyUsage, RewriteReport};

use crate::kubeconfig;

pub const EXAMPLES: &str = "Examples:\n  \
    wasmkube secrets                      # which keys protect how many Secrets\n  \
    wasmkube secrets rotate-key --data-dir /var/lib/wasmkube\n  \
    wasmkube secrets rewrite              # every Secret written again with the new key\n  \
    wasmkube secrets remove-key key1 --data-dir /var/lib/wasmkube";

/// `wasmkube secrets …`.
#[derive(Debug, Args)]
pub struct SecretsArgs {
    #[command(subcommand)]
    command: Option<SecretsCommand>,

    #[command(flatten)]
    client: KubeArgs,
}

/// How to reach the server (for `status` and `rewrite`).
#[derive(Debug, Args)]
struct KubeArgs {
    /// Path to the admin kubeconfig (default: KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use (default: its current-context).
    #[arg(long, global = true, value_name = "NAME")]
    context: Option<String>,
}

#[derive(Debug, Subcommand)]
enum SecretsCommand {
    /// Show the encryption keys and how many stored values each protects
    /// (the default).
    Status,
    /// Write every encrypted resource again so that it is stored with the
    /// current key (after `rotate-key`). Objects keep their content; their
    /// resourceVersion changes.
    Rewrite,
    /// Add a new random key in front of the key file: it encrypts from now
    /// on, the old keys still decrypt. Run on the server's machine.
    RotateKey(KeyFileArgs),
    /// Remove a key that no stored value uses any more (check with
    /// `wasmkube secrets` first: values under a removed key can no longer
    /// be read).
    RemoveKey(RemoveArgs),
}

#[derive(Debug, Args)]
struct KeyFileArgs {
    /// The server's data directory [default: ~/.wasmkube]; the key file is
    /// DIR/pki/encryption-keys.yaml.
    #[arg(long, env = "WASMKUBE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// The key file, when the server runs with --encryption-provider-config.
    #[arg(long, value_name = "FILE", conflicts_with = "data_dir")]
    encryption_provider_config: Option<PathBuf>,
}

impl KeyFileArgs {
    fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.encryption_provider_config {
            return Ok(p.clone());
        }
        let dir = match &self.data_dir {
            Some(d) => d.clone(),
            // The server's default data directory.
            None => PathBuf::from(
                std::env::var_os("HOME")
                    .context("HOME is not set; pass --data-dir or set WASMKUBE_DATA_DIR")?,
            )
            .join(".wasmkube"),
        };
        Ok(encryption::default_key_file(&dir))
    }
}

#[derive(Debug, Args)]
struct RemoveArgs {
    /// The key's name (as `wasmkube secrets` shows it).
    name: String,

    #[command(flatten)]
    file: KeyFileArgs,
}

/// Runs `wasmkube secrets …`.
pub async fn run(args: SecretsArgs) -> anyhow::Result<()> {
    match args.command.unwrap_or(SecretsCommand::Status) {
        SecretsCommand::Status => {
            let client = connect(&args.client).await?;
            let usage: KeyUsage = client
                .request(get("/wasmkube/v1/encryption")?)
                .await
                .context("asking the server which keys are in use")?;
            print!("{}", format_usage(&usage));
        }
        SecretsCommand::Rewrite => {
            let client = connect(&args.client).await?;
            let report: RewriteReport = client
                .request(post("/wasmkube/v1/encryption/rewrite")?)
                .await
                .context("rewriting the encrypted resources")?;
            print!("{}", format_report(&report));
            if !report.failed.is_empty() {
                bail!(
                    "{} stored values could not be decrypted (is a key missing from the key file?)",
                    report.failed.len()
                );
            }
        }
        SecretsCommand::RotateKey(f) => {
            let path = f.path()?;
            let name = tokio::task::spawn_blocking({
                let path = path.clone();
                move || encryption::rotate_key(&path)
            })
            .await??;
            println!(
                "key {name} added to {}; it encrypts from now on",
                path.display()
            );
            println!(
                "next: `wasmkube secrets rewrite` re-encrypts every Secret with it \
                 (the server re-reads the key file), then `wasmkube secrets` shows \
                 which old keys no value uses any more"
            );
        }
        SecretsCommand::RemoveKey(r) => {
            let path = r.file.path()?;
            let name = r.name.clone();
            tokio::task::spawn_blocking({
                let path = path.clone();
                move || encryption::remove_key(&path, &name)
            })
            .await??;
            println!("key {} removed from {}", r.name, path.display());
        }
    }
    Ok(())
}

async fn connect(args: &KubeArgs) -> anyhow::Result<kube::Client> {
    let source = kubeconfig::from_process(args.kubeconfig.as_deref());
    let kc = kubeconfig::load(&source)?;
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &options)
        .await
        .context("using kubeconfig")?;
    kube::Client::try_from(config).context("building the API client")
}

fn get(path: &str) -> anyhow::Result<http::Request<Vec<u8>>> {
    Ok(http::Request::get(path).body(Vec::new())?)
}

fn post(path: &str) -> anyhow::Result<http::Request<Vec<u8>>> {
    Ok(http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(b"{}".to_vec())?)
}

/// The status table: one row per key (configured or found in the store).
fn format_usage(u: &KeyUsage) -> String {
    let writing: std::collections::BTreeSet<&str> =
        u.write_keys.values().map(String::as_str).collect();
    let mut names: Vec<String> = u.configured_keys.clone();
    for n in u.objects_by_key.keys().chain(u.unknown_keys.iter()) {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    if !names.iter().any(|n| n == IDENTITY) {
        names.push(IDENTITY.to_string());
    }
    let width = names.iter().map(String::len).max().unwrap_or(0).max(3);
    let mut out = format!("{:width$}  {:>7}  STATE\n", "KEY", "OBJECTS");
    for n in &names {
        let count = u.objects_by_key.get(n).copied().unwrap_or(0);
        let state = if u.unknown_keys.contains(n) {
            "MISSING from the key file: these values cannot be read"
        } else if writing.contains(n.as_str()) && n == IDENTITY {
            "new writes are not encrypted"
        } else if writing.contains(n.as_str()) {
            "encrypts new writes"
        } else if n == IDENTITY && count > 0 {
            "not encrypted: run `wasmkube secrets rewrite`"
        } else if n == IDENTITY {
            "-"
        } else if count == 0 {
            "unused: may be removed"
        } else {
            "decrypts only: run `wasmkube secrets rewrite`"
        };
        out.push_str(&format!("{n:width$}  {count:>7}  {state}\n"));
    }
    out
}

fn format_report(r: &RewriteReport) -> String {
    let mut out = format!(
        "rewritten: {}, already current: {}, changed meanwhile: {}, failed: {}\n",
        r.rewritten,
        r.unchanged,
        r.raced,
        r.failed.len()
    );
    for f in &r.failed {
        out.push_str(&format!("  {f}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_names_each_keys_state() {
        let u = KeyUsage {
            write_keys: [("/registry/secrets/".to_string(), "key2".to_string())].into(),
            configured_keys: vec!["key1".into(), "key2".into(), "key3".into()],
            objects_by_key: [
                ("key2".to_string(), 3),
                ("key3".to_string(), 1),
                (IDENTITY.to_string(), 2),
                ("gone".to_string(), 1),
            ]
            .into(),
            unknown_keys: vec!["gone".into()],
        };
        let t = format_usage(&u);
        let row = |k: &str| {
            t.lines()
                .find(|l| l.split_whitespace().next() == Some(k))
                .unwrap_or_default()
                .to_string()
        };
        assert!(row("key2").contains("encrypts new writes"), "{t}");
        assert!(row("key2").contains(" 3 "), "{t}");
        assert!(row("key1").contains("unused: may be removed"), "{t}");
        assert!(row("key3").contains("decrypts only"), "{t}");
        assert!(row("identity").contains("not encrypted"), "{t}");
        assert!(row("gone").contains("MISSING"), "{t}");
    }
}
