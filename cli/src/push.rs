//! `wasmkube push FILE REF`: a module to the cluster's module store
//! (`hello:v1`), or to an OCI registry as a wasm artifact when REF names a
//! registry host (`127.0.0.1:5000/hello:v1`, `ghcr.io/team/hello:v1`).
//!
//! Registry credentials come from `--username`/`--password`, else from the
//! docker config (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`), else the push is anonymous. Loopback registries
//! are spoken to over plain HTTP, others over HTTPS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use wasmkube_api::image::ImageRef;
use wasmkube_runtime::oci::{self, Keyring, RegistryAuth, RegistryOptions};

/// How `wasmkube push` reaches an OCI registry.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct RegistryArgs {
    /// Registry user (with --password or --password-stdin). Without it,
    /// the credentials of the docker config ($DOCKER_CONFIG/config.json,
    /// else ~/.docker/config.json) for the registry are used.
    #[arg(long, value_name = "NAME", requires = "secret")]
    pub username: Option<String>,

    /// Registry password or access token (with --username).
    #[arg(long, value_name = "PASSWORD", requires = "username", group = "secret")]
    pub password: Option<String>,

    /// Read the registry password or token from standard input (with
    /// --username), so it shows in no process list.
    #[arg(long, requires = "username", group = "secret")]
    pub password_stdin: bool,

    /// Speak plain HTTP to the registry (implied for localhost, 127.0.0.0/8
    /// and ::1).
    #[arg(long)]
    pub plain_http: bool,

    /// PEM bundle of extra CAs to trust for the registry's certificate.
    #[arg(long, value_name = "FILE")]
    pub registry_ca: Option<PathBuf>,
}

impl RegistryArgs {
    fn any(&self) -> bool {
        self.username.is_some() || self.plain_http || self.registry_ca.is_some()
    }
}

/// What kind of push a reference asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// The cluster's module store (`NAME:TAG`).
    Store,
    /// An OCI registry.
    Registry(ImageRef),
}

/// Decides where `reference` goes. A registry push needs an explicit tag,
/// like a store push: it never silently means `latest`.
pub(crate) fn target(reference: &str) -> anyhow::Result<Target> {
    let Ok(image) = ImageRef::parse(reference) else {
        // The module store's own parser says what is wrong with it.
        return Ok(Target::Store);
    };
    if image.is_local() {
        return Ok(Target::Store);
    }
    let last = reference.rsplit('/').next().unwrap_or_default();
    if image.digest().is_some() || !last.contains(':') {
        bail!(
            "invalid registry reference {reference:?}: expected REGISTRY/NAME:TAG, e.g. {}/{}:v1",
            image.registry.as_deref().unwrap_or_default(),
            image.repository
        );
    }
    Ok(Target::Registry(image))
}

/// Runs `wasmkube push`; errors reaching the cluster say what to do next.
pub(crate) async fn run(args: crate::PushArgs) -> anyhow::Result<()> {
    push(args).await.map_err(crate::modules::with_advice)
}

async fn push(mut args: crate::PushArgs) -> anyhow::Result<()> {
    if args.registry.password_stdin {
        let mut password = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut password)
            .context("reading the password from standard input")?;
        args.registry.password = Some(password.trim_end_matches(['\r', '\n']).to_string());
    }
    let line = match target(&args.reference)? {
        Target::Registry(image) => push_to_registry(&args.file, &image, &args.registry).await?,
        Target::Store => {
            if args.registry.any() {
                bail!(
                    "--username, --plain-http and --registry-ca are for registry references (REGISTRY/NAME:TAG); {:?} goes to the cluster's module store",
                    args.reference
                );
            }
            // Mistakes in the arguments are said before the cluster is asked.
            crate::modules::parse_reference(&args.reference)?;
            crate::modules::check_module(&args.file).await?;
            let client = crate::kubeconfig::client(
                args.client.kubeconfig.as_deref(),
                args.client.context.as_deref(),
            )
            .await?;
            crate::modules::push(&client, &args.file, &args.reference).await?
        }
    };
    println!("{line}");
    Ok(())
}

/// The docker config `docker login` writes.
fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

/// The credentials to push to `image`'s registry with: the flags', else
/// those the docker config at `docker_config` has for the registry.
fn credentials(
    image: &ImageRef,
    args: &RegistryArgs,
    docker_config: Option<PathBuf>,
) -> anyhow::Result<RegistryAuth> {
    if let (Some(user), Some(password)) = (&args.username, &args.password) {
        return Ok(RegistryAuth::Basic(user.clone(), password.clone()));
    }
    let Some(path) = docker_config else {
        return Ok(RegistryAuth::Anonymous);
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistryAuth::Anonymous),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut keyring = Keyring::default();
    keyring
        .add_config_json(&bytes)
        .with_context(|| format!("loading the docker config {}", path.display()))?;
    let registry = image.registry.as_deref().unwrap_or_default();
    Ok(keyring
        .lookup(registry, &image.repository)
        .into_iter()
        .next()
        .unwrap_or(RegistryAuth::Anonymous))
}

async fn push_to_registry(
    file: &Path,
    image: &ImageRef,
    args: &RegistryArgs,
) -> anyhow::Result<String> {
    let bytes = crate::modules::read_module(file).await?;
    let auth = credentials(image, args, docker_config_path())?;
    let extra_ca_pem = match &args.registry_ca {
        Some(path) => Some(Arc::new(
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )),
        None => None,
    };
    let options = RegistryOptions {
        extra_ca_pem,
        plain_http: args.plain_http,
    };
    let size = bytes.len() as u64;
    let progress = Arc::new(crate::progress::Bar::new(size));
    let report = progress.clone();
    let pushed = oci::push_module(&options, image, auth, bytes.into(), move |sent| {
        report.update(sent)
    })
    .await;
    progress.finish();
    let pushed = pushed.with_context(|| format!("pushing to {image}"))?;
    Ok(format!(
        "pushed {image} {} (module {}, {} bytes)",
        pushed.manifest_digest, pushed.module_digest, pushed.size
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_with_a_host_go_to_the_registry() -> anyhow::Result<()> {
        assert_eq!(target("hello:v1")?, Target::Store);
        assert_eq!(target("Bad:v1")?, Target::Store, "the store reports it");
        let Target::Registry(r) = target("127.0.0.1:5000/team/hello:v1")? else {
            anyhow::bail!("expected a registry push");
        };
        assert_eq!(r.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(r.repository, "team/hello");
        assert!(matches!(target("ghcr.io/a/b:1")?, Target::Registry(_)));
        assert!(target("127.0.0.1:5000/hello").is_err(), "no tag");
        let pinned = format!("localhost:5000/hello@sha256:{}", "ab".repeat(32));
        assert!(target(&pinned).is_err(), "a digest is not a push target");
        Ok(())
    }

    #[test]
    fn docker_config_credentials_are_used_unless_flags_say_otherwise() -> anyhow::Result<()> {
        let image = ImageRef::parse("127.0.0.1:5000/hello:v1")?;
        let flags = RegistryArgs {
            username: Some("u".into()),
            password: Some("p".into()),
            ..RegistryArgs::default()
        };
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("config.json");
        std::fs::write(
            &config,
            r#"{"auths":{"127.0.0.1:5000":{"auth":"YWxpY2U6czNjcmV0"}},"credsStore":"desktop"}"#,
        )?;
        assert_eq!(
            credentials(&image, &flags, Some(config.clone()))?,
            RegistryAuth::Basic("u".into(), "p".into())
        );
        let none = RegistryArgs::default();
        assert_eq!(
            credentials(&image, &none, Some(config.clone()))?,
            RegistryAuth::Basic("alice".into(), "s3cret".into())
        );
        let other = ImageRef::parse("127.0.0.1:5001/hello:v1")?;
        assert_eq!(
            credentials(&other, &none, Some(config.clone()))?,
            RegistryAuth::Anonymous
        );
        assert_eq!(
            credentials(&image, &none, Some(dir.path().join("absent.json")))?,
            RegistryAuth::Anonymous
        );
        std::fs::write(&config, "{not json")?;
        assert!(credentials(&image, &none, Some(config)).is_err());
        Ok(())
    }
}
