//! `wasmkube kubeconfig [--merge]`: print the admin kubeconfig of a data
//! directory, or add it as the `wasmkube` context of another kubeconfig
//! (normally `~/.kube/config`) without touching the other entries.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_yaml::{Mapping, Value};

/// The names the merged entries get: the cluster and context `wasmkube`,
/// and a user that cannot clash with another cluster's `admin`.
const CONTEXT: &str = "wasmkube";
const MERGED_USER: &str = "wasmkube-admin";

pub(crate) const EXAMPLES: &str = "Examples:\n  \
    wasmkube kubeconfig > wasmkube.yaml\n  \
    wasmkube kubeconfig --merge                 # adds the wasmkube context to ~/.kube/config and uses it\n  \
    wasmkube kubeconfig --merge --no-switch     # adds it, keeps the current context\n  \
    kubectl config use-context wasmkube";

/// `wasmkube kubeconfig`.
#[derive(Debug, clap::Args)]
pub(crate) struct KubeconfigArgs {
    /// Data directory of the server [default: ~/.wasmkube].
    #[arg(long, env = "WASMKUBE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Add the cluster as context `wasmkube` to a kubeconfig file (default:
    /// the first file of KUBECONFIG, else ~/.kube/config) instead of
    /// printing it. Other clusters, users and contexts are kept as they are.
    #[arg(long)]
    pub merge: bool,

    /// The kubeconfig file to merge into.
    #[arg(long, value_name = "PATH", requires = "merge")]
    pub into: Option<PathBuf>,

    /// With --merge: leave the current context as it is.
    #[arg(long, requires = "merge")]
    pub no_switch: bool,
}

pub(crate) fn run(args: KubeconfigArgs) -> anyhow::Result<()> {
    let data_dir = crate::server::data_dir(args.data_dir)?;
    let source = data_dir.join("kubeconfig");
    let text = match std::fs::read_to_string(&source) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} does not exist: start the cluster first (`wasmkube up` or `wasmkube server`{})",
            source.display(),
            if data_dir_is_default(&data_dir) {
                String::new()
            } else {
                format!(" with --data-dir {}", data_dir.display())
            }
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", source.display())),
    };
    if !args.merge {
        print!("{text}");
        return Ok(());
    }
    let target = match args.into {
        Some(p) => p,
        None => default_target()?,
    };
    let existing = match std::fs::read_to_string(&target) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", target.display())),
    };
    let merged = merge(existing.as_deref(), &text, !args.no_switch)
        .with_context(|| format!("merging into {}", target.display()))?;
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    crate::up::write_private(&target, merged.as_bytes())?;
    println!(
        "context {CONTEXT:?} added to {}{}",
        target.display(),
        if args.no_switch {
            format!(" (use it: kubectl config use-context {CONTEXT})")
        } else {
            " and made current".to_string()
        }
    );
    Ok(())
}

fn data_dir_is_default(dir: &Path) -> bool {
    std::env::var_os("HOME").is_some_and(|h| PathBuf::from(h).join(".wasmkube") == dir)
}

/// Where `--merge` writes by default: where kubectl reads first.
fn default_target() -> anyhow::Result<PathBuf> {
    if let Some(first) = std::env::var_os("KUBECONFIG")
        .as_deref()
        .and_then(|v| std::env::split_paths(v).find(|p| !p.as_os_str().is_empty()))
    {
        return Ok(first);
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --into PATH")?;
    Ok(PathBuf::from(home).join(".kube").join("config"))
}

/// `ours` (the data directory's kubeconfig) added to `existing` as context
/// `wasmkube`: entries of the same names are replaced, every other entry
/// and field is kept. `switch` makes it the current context.
pub(crate) fn merge(existing: Option<&str>, ours: &str, switch: bool) -> anyhow::Result<String> {
    let ours: Value = serde_yaml::from_str(ours).context("the cluster's kubeconfig")?;
    let named = |list: &str| -> anyhow::Result<Value> {
        ours.get(list)
            .and_then(Value::as_sequence)
            .and_then(|s| s.first())
            .cloned()
            .with_context(|| format!("the cluster's kubeconfig has no {list}"))
    };
    let mut cluster = named("clusters")?;
    let mut user = named("users")?;
    let mut context = named("contexts")?;
    cluster["name"] = CONTEXT.into();
    user["name"] = MERGED_USER.into();
    context["name"] = CONTEXT.into();
    context["context"]["cluster"] = CONTEXT.into();
    context["context"]["user"] = MERGED_USER.into();

    let mut doc: Value = match existing {
        Some(text) if !text.trim().is_empty() => {
            serde_yaml::from_str(text).context("the existing kubeconfig is not YAML")?
        }
        _ => serde_yaml::from_str("apiVersion: v1\nkind: Config\npreferences: {}\n")?,
    };
    let Some(map) = doc.as_mapping_mut() else {
        bail!("the existing kubeconfig is not a YAML mapping");
    };
    replace_named(map, "clusters", cluster)?;
    replace_named(map, "users", user)?;
    replace_named(map, "contexts", context)?;
    let current = map
        .get("current-context")
        .and_then(Value::as_str)
        .unwrap_or("");
    if switch || current.is_empty() {
        map.insert("current-context".into(), CONTEXT.into());
    }
    Ok(serde_yaml::to_string(&doc)?)
}

/// Puts `entry` into the list `key` of `map`, replacing the entry with the
/// same name.
fn replace_named(map: &mut Mapping, key: &str, entry: Value) -> anyhow::Result<()> {
    let list = map
        .entry(key.into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if list.is_null() {
        *list = Value::Sequence(Vec::new());
    }
    let Some(items) = list.as_sequence_mut() else {
        bail!("{key} in the existing kubeconfig is not a list");
    };
    let name = entry.get("name").cloned();
    items.retain(|e| e.get("name") != name.as_ref());
    items.push(entry);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: wasmkube\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: Q0E=\nusers:\n- name: admin\n  user:\n    token: secret\ncontexts:\n- name: wasmkube\n  context:\n    cluster: wasmkube\n    user: admin\n    namespace: default\ncurrent-context: wasmkube\n";

    const THEIRS: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n    server: https://prod:443\nusers:\n- name: admin\n  user:\n    token: prod-token\ncontexts:\n- name: prod\n  context:\n    cluster: prod\n    user: admin\ncurrent-context: prod\n";

    #[test]
    fn merging_keeps_other_clusters_and_their_admin_user() -> anyhow::Result<()> {
        let merged: Value = serde_yaml::from_str(&merge(Some(THEIRS), OURS, true)?)?;
        let names = |list: &str| -> Vec<String> {
            merged[list]
                .as_sequence()
                .map(|s| {
                    s.iter()
                        .filter_map(|e| e["name"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(names("clusters"), ["prod", "wasmkube"]);
        assert_eq!(names("users"), ["admin", "wasmkube-admin"]);
        assert_eq!(names("contexts"), ["prod", "wasmkube"]);
        // The other cluster's `admin` is untouched.
        assert_eq!(merged["users"][0]["user"]["token"], "prod-token");
        assert_eq!(merged["users"][1]["user"]["token"], "secret");
        assert_eq!(merged["contexts"][1]["context"]["user"], "wasmkube-admin");
        assert_eq!(merged["contexts"][1]["context"]["namespace"], "default");
        assert_eq!(merged["current-context"], "wasmkube");
        Ok(())
    }

    #[test]
    fn merging_again_replaces_and_no_switch_keeps_the_context() -> anyhow::Result<()> {
        let once = merge(Some(THEIRS), OURS, false)?;
        let newer = OURS.replace("6443", "7443");
        let twice: Value = serde_yaml::from_str(&merge(Some(&once), &newer, false)?)?;
        let clusters = twice["clusters"].as_sequence().cloned().unwrap_or_default();
        assert_eq!(clusters.len(), 2);
        assert_eq!(clusters[1]["cluster"]["server"], "https://127.0.0.1:7443");
        assert_eq!(twice["current-context"], "prod");
        Ok(())
    }

    #[test]
    fn merging_into_nothing_makes_a_whole_kubeconfig() -> anyhow::Result<()> {
        let merged: Value = serde_yaml::from_str(&merge(None, OURS, false)?)?;
        assert_eq!(merged["kind"], "Config");
        assert_eq!(merged["current-context"], "wasmkube");
        assert!(merge(Some("- a list"), OURS, true).is_err());
        Ok(())
    }
}
