//! Finding the cluster the way kubectl does.
//!
//! Order: `--kubeconfig PATH` (must exist), else every file in `KUBECONFIG`
//! (a `:`-separated list; missing files are skipped; the files are merged
//! with the first file to set a value winning, so the first file naming a
//! current context decides it), else `~/.kube/config`. The merged config is
//! handed to kube-rs, which honours `certificate-authority`,
//! `certificate-authority-data`, `insecure-skip-tls-verify`, `token` and
//! `tokenFile` like client-go.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Where the kubeconfig comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--kubeconfig`: exactly this file, which must exist.
    Explicit(PathBuf),
    /// `KUBECONFIG` or the default path: files merged in order, missing ones skipped.
    Merged(Vec<PathBuf>),
}

/// Resolves the kubeconfig source from the flag, the `KUBECONFIG` value and
/// the home directory (passed in so tests need no process environment).
pub fn resolve(flag: Option<&Path>, env: Option<&OsStr>, home: Option<&Path>) -> Source {
    if let Some(p) = flag.filter(|p| !p.as_os_str().is_empty()) {
        return Source::Explicit(p.to_path_buf());
    }
    if let Some(value) = env {
        let paths: Vec<PathBuf> = std::env::split_paths(value)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !paths.is_empty() {
            return Source::Merged(paths);
        }
    }
    Source::Merged(
        home.map(|h| h.join(".kube").join("config"))
            .into_iter()
            .collect(),
    )
}

/// Reads and merges the files of `source`.
pub fn load(source: &Source) -> anyhow::Result<Kubeconfig> {
    match source {
        Source::Explicit(path) => Kubeconfig::read_from(path)
            .with_context(|| format!("reading kubeconfig {}", path.display())),
        Source::Merged(paths) => {
            let mut merged: Option<Kubeconfig> = None;
            for path in paths {
                if !path.exists() {
                    continue;
                }
                let config = Kubeconfig::read_from(path)
                    .with_context(|| format!("reading kubeconfig {}", path.display()))?;
                merged = Some(match merged {
                    Some(m) => m
                        .merge(config)
                        .with_context(|| format!("merging kubeconfig {}", path.display()))?,
                    None => config,
                });
            }
            match merged {
                Some(m) => Ok(m),
                None => bail!(
                    "no kubeconfig found (looked in {}); pass --kubeconfig, set KUBECONFIG, \
                     or start a cluster with `wasmkube server`",
                    paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    }
}

/// The process's own kubeconfig source.
pub fn from_process(flag: Option<&Path>) -> Source {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    resolve(
        flag,
        std::env::var_os("KUBECONFIG").as_deref(),
        home.as_deref(),
    )
}

/// The kubeconfig of the laptop commands (`run`, `status`): like kubectl's
/// (`--kubeconfig`, then `KUBECONFIG`), except that a server started by
/// `wasmkube up` (`up_kubeconfig`) comes before `~/.kube/config`, and the
/// default data directory's kubeconfig is the last resort — so they work
/// right after `wasmkube up`, before anyone exported `KUBECONFIG`.
pub fn resolve_laptop(
    flag: Option<&Path>,
    env: Option<&OsStr>,
    home: Option<&Path>,
    up_kubeconfig: Option<&Path>,
    data_kubeconfig: &Path,
) -> Source {
    let kubectl = resolve(flag, env, home);
    let explicit = flag.is_some_and(|p| !p.as_os_str().is_empty())
        || env.is_some_and(|v| std::env::split_paths(v).any(|p| !p.as_os_str().is_empty()));
    if explicit {
        return kubectl;
    }
    if let Some(up) = up_kubeconfig.filter(|p| p.exists()) {
        return Source::Explicit(up.to_path_buf());
    }
    match &kubectl {
        Source::Merged(paths) if !paths.iter().any(|p| p.exists()) && data_kubeconfig.exists() => {
            Source::Explicit(data_kubeconfig.to_path_buf())
        }
        _ => kubectl,
    }
}

/// [`resolve_laptop`] for this process, with the files of `paths`.
pub fn laptop_source(flag: Option<&Path>, paths: &crate::up::Paths) -> Source {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let up = paths.running().map(|_| paths.kubeconfig.clone());
    resolve_laptop(
        flag,
        std::env::var_os("KUBECONFIG").as_deref(),
        home.as_deref(),
        up.as_deref(),
        &paths.kubeconfig,
    )
}

/// A kube client for the chosen kubeconfig and context.
pub async fn client(flag: Option<&Path>, context: Option<&str>) -> anyhow::Result<kube::Client> {
    client_from(&from_process(flag), context).await
}

/// A kube client for the kubeconfig of `source` and `context`.
pub async fn client_from(source: &Source, context: Option<&str>) -> anyhow::Result<kube::Client> {
    let kubeconfig = load(source)?;
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .context("using kubeconfig")?;
    kube::Client::try_from(config).context("building the API client")
}

/// A client config for `url`, trusting only `ca_pem`, authenticating with
/// `token` (how the built-in components reach the apiserver).
pub async fn component_config(
    url: &str,
    ca_pem: &str,
    token: &str,
) -> anyhow::Result<kube::Config> {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "wasmkube", "cluster": {"server": url, "certificate-authority-data": ca}}],
        "users": [{"name": "component", "user": {"token": token}}],
        "contexts": [{"name": "component", "context": {"cluster": "wasmkube", "user": "component"}}],
        "current-context": "component",
    });
    let kubeconfig: Kubeconfig = serde_json::from_value(doc).context("component kubeconfig")?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("component client config")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        if let Err(e) = std::fs::write(&p, body) {
            panic!("writing {}: {e}", p.display());
        }
        p
    }

    fn config(cluster: &str, server: &str, current: Option<&str>) -> String {
        let current = current
            .map(|c| format!("current-context: {c}\n"))
            .unwrap_or_default();
        format!(
            "apiVersion: v1\nkind: Config\n{current}clusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: {cluster}-user\n  user:\n    token: tok-{cluster}\ncontexts:\n- name: {cluster}\n  context:\n    cluster: {cluster}\n    user: {cluster}-user\n"
        )
    }

    #[test]
    fn laptop_commands_prefer_a_running_up_server_to_the_home_config() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let home = dir.path().join("home");
        let up = write(dir.path(), "up-kubeconfig", "x");
        let data = dir.path().join("data-kubeconfig");
        // Nothing explicit, `up` running: its kubeconfig.
        assert_eq!(
            resolve_laptop(None, None, Some(&home), Some(&up), &data),
            Source::Explicit(up.clone())
        );
        // KUBECONFIG and --kubeconfig still win, as for kubectl.
        let env = OsStr::new("/elsewhere/config");
        assert_eq!(
            resolve_laptop(None, Some(env), Some(&home), Some(&up), &data),
            Source::Merged(vec![PathBuf::from("/elsewhere/config")])
        );
        let flag = Path::new("/given");
        assert_eq!(
            resolve_laptop(Some(flag), Some(env), Some(&home), Some(&up), &data),
            Source::Explicit(flag.to_path_buf())
        );
        // Not running: ~/.kube/config when there is one…
        std::fs::create_dir_all(home.join(".kube"))?;
        let kube_home = write(&home.join(".kube"), "config", "x");
        assert_eq!(
            resolve_laptop(None, None, Some(&home), None, &data),
            Source::Merged(vec![kube_home.clone()])
        );
        // …else the data directory's kubeconfig.
        std::fs::remove_file(&kube_home)?;
        assert_eq!(
            resolve_laptop(None, None, Some(&home), None, &data),
            Source::Merged(vec![kube_home])
        );
        let data = write(dir.path(), "data-kubeconfig", "x");
        assert_eq!(
            resolve_laptop(None, None, Some(&home), None, &data),
            Source::Explicit(data)
        );
        Ok(())
    }

    #[test]
    fn flag_beats_env_beats_home() {
        let home = Path::new("/home/u");
        let env = OsString::from("/a:/b");
        assert_eq!(
            resolve(Some(Path::new("/x")), Some(&env), Some(home)),
            Source::Explicit("/x".into())
        );
        assert_eq!(
            resolve(None, Some(&env), Some(home)),
            Source::Merged(vec!["/a".into(), "/b".into()])
        );
        assert_eq!(
            resolve(None, Some(OsStr::new("")), Some(home)),
            Source::Merged(vec!["/home/u/.kube/config".into()])
        );
        assert_eq!(
            resolve(None, Some(OsStr::new("::/c:")), Some(home)),
            Source::Merged(vec!["/c".into()])
        );
        assert_eq!(resolve(None, None, None), Source::Merged(vec![]));
    }

    #[test]
    fn merged_files_skip_missing_and_first_current_context_wins() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let first = write(dir.path(), "one", &config("one", "https://one:6443", None));
        let second = write(
            dir.path(),
            "two",
            &config("two", "https://two:6443", Some("two")),
        );
        let third = write(
            dir.path(),
            "three",
            &config("three", "https://three:6443", Some("three")),
        );
        let missing = dir.path().join("missing");
        let merged = load(&Source::Merged(vec![missing, first, second, third]))?;
        assert_eq!(merged.current_context.as_deref(), Some("two"));
        assert_eq!(merged.clusters.len(), 3);
        Ok(())
    }

    #[test]
    fn explicit_file_must_exist_and_nothing_found_is_an_error() {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        let missing = dir.path().join("nope");
        assert!(load(&Source::Explicit(missing.clone())).is_err());
        let err = load(&Source::Merged(vec![missing]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no kubeconfig found"), "{err}");
    }

    #[tokio::test]
    async fn context_flag_selects_server_and_relative_paths_resolve() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let a = write(
            dir.path(),
            "a",
            &config("one", "https://one:6443", Some("one")),
        );
        let b = write(dir.path(), "b", &config("two", "https://two:7443", None));
        let kc = load(&Source::Merged(vec![a, b]))?;
        let options = KubeConfigOptions {
            context: Some("two".into()),
            ..Default::default()
        };
        let cfg = kube::Config::from_custom_kubeconfig(kc, &options).await?;
        assert_eq!(cfg.cluster_url.to_string(), "https://two:7443/");
        assert!(cfg.accept_invalid_certs);

        // certificate-authority and tokenFile relative to the kubeconfig's folder.
        std::fs::create_dir(dir.path().join("pki"))?;
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
        write(&dir.path().join("pki"), "ca.crt", &ca.cert.pem());
        write(dir.path(), "tok", "secret-token\n");
        let rel = write(
            dir.path(),
            "rel",
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority: pki/ca.crt\nusers:\n- name: u\n  user:\n    tokenFile: tok\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n",
        );
        let kc = load(&Source::Explicit(rel))?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        assert_eq!(cfg.root_cert.map(|c| c.len()), Some(1));
        let token_file = cfg.auth_info.token_file.unwrap_or_default();
        assert_eq!(Path::new(&token_file), dir.path().join("tok"));
        Ok(())
    }

    #[tokio::test]
    async fn component_config_trusts_the_given_ca() -> anyhow::Result<()> {
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
        let cfg = component_config("https://127.0.0.1:6443", &ca.cert.pem(), "t0k").await?;
        assert_eq!(cfg.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(cfg.root_cert.map(|c| c.len()), Some(1));
        assert!(!cfg.accept_invalid_certs);
        Ok(())
    }
}
