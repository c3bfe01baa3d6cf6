//! First-start bootstrap: the admin kubeconfig and the namespaces every
//! cluster has. Nothing is printed here; callers get paths back.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::json;
use wasmkube_api::resources;

use crate::registry::Registry;

/// Namespaces Kubernetes always has.
pub const DEFAULT_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];
/// Cluster, context and user names in the kubeconfig.
pub const CLUSTER_NAME: &str = "wasmkube";

/// Bootstrap errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating namespace {name}: {source}")]
    Namespace {
        name: String,
        #[source]
        source: Box<crate::error::ApiError>,
    },
    #[error("namespaces are not a served resource")]
    NoNamespaces,
    #[error("rendering the kubeconfig: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: crate::pki::Error,
    },
    #[error("creating {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Create the default namespaces unless they exist.
pub async fn ensure_namespaces(registry: &Registry) -> Result<(), Error> {
    let res = resources::by_plural("", "v1", "namespaces").ok_or(Error::NoNamespaces)?;
    for name in DEFAULT_NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match registry.create(res, None, obj).await {
            Ok(_) => {}
            Err(e) if e.code() == 409 => {}
            Err(e) => {
                return Err(Error::Namespace {
                    name: name.to_string(),
                    source: Box::new(e),
                });
            }
        }
    }
    Ok(())
}

/// The admin kubeconfig (YAML) for a server at `url` with CA `ca_pem`.
pub fn kubeconfig(url: &str, ca_pem: &str, token: &str) -> Result<String, Error> {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER_NAME, "cluster": {"server": url, "certificate-authority-data": ca}}],
        "users": [{"name": crate::auth::ADMIN_USER, "user": {"token": token}}],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": crate::auth::ADMIN_USER, "namespace": "default"}}],
        "current-context": CLUSTER_NAME,
        "preferences": {},
    });
    Ok(serde_yaml::to_string(&doc)?)
}

/// Where the kubeconfig goes: `<data>/kubeconfig` first, then `extra`.
pub fn kubeconfig_paths(data_dir: &Path, extra: Option<&Path>) -> Vec<PathBuf> {
    let mut paths = vec![data_dir.join("kubeconfig")];
    if let Some(p) = extra.filter(|p| *p != paths[0].as_path()) {
        paths.push(p.to_path_buf());
    }
    paths
}

/// Write `yaml` (mode 0600: it holds the admin token) to every path.
/// Blocking: call from `spawn_blocking`.
pub fn write_kubeconfigs(paths: &[PathBuf], yaml: &str) -> Result<(), Error> {
    for path in paths {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        crate::pki::write_file(path, yaml.as_bytes(), 0o600).map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_is_what_kubectl_reads() -> Result<(), Box<dyn std::error::Error>> {
        let yaml = kubeconfig("https://127.0.0.1:6443", "PEM", "tok")?;
        let v: serde_json::Value = serde_yaml::from_str(&yaml)?;
        assert_eq!(v["current-context"], "wasmkube");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            "UEVN"
        );
        assert_eq!(v["users"][0]["user"]["token"], "tok");
        assert_eq!(v["contexts"][0]["context"]["user"], "admin");
        Ok(())
    }
}
