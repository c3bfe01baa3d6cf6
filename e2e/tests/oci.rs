//! Modules from OCI registries: a real registry (Debian's `docker-registry`,
//! distribution v2) on a free loopback port, modules pushed to it with
//! `wasmkube push`, pods running them by `image: 127.0.0.1:PORT/…`, pull
//! secrets for a registry with basic auth, pull policies when a tag moves,
//! and a corrupted blob refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use wasmkube_e2e::{Cluster, free_port, sample_wasm, stderr, stdout, tail, wait_for, wasmkube_bin};

/// The user and password of the registry with basic auth; the hash is
/// bcrypt (what distribution's htpasswd accepts), at a low cost because
/// the registry checks it on every request.
const USER: &str = "puller";
const PASSWORD: &str = "wasm-pull-s3cret";
const HTPASSWD: &str = "puller:$2b$05$p5Vy0Ugw37SCbpptD6CUv.Vqj..SuK8GENoJnpwTKvyFUJDAo.JbK";

/// A running `docker-registry serve` with its own storage; stopped on drop.
/// Fails — never skips — when the registry is not installed:
/// `scripts/setup.sh` installs it.
struct Registry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    host: String,
}

impl Registry {
    /// Starts a registry; with `auth`, every request needs [`USER`]'s password.
    fn start(auth: bool) -> Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("wasmkube-registry-")
            .tempdir()?;
        let host = format!("127.0.0.1:{}", free_port());
        let storage = dir.path().join("storage");
        let auth_section = if auth {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{HTPASSWD}\n"))?;
            format!(
                "auth:\n  htpasswd:\n    realm: wasmkube-e2e\n    path: {}\n",
                htpasswd.display()
            )
        } else {
            String::new()
        };
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {host}\n  secret: wasmkube-e2e-secret\n\
             {auth_section}",
            storage.display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry: is it installed? (scripts/setup.sh installs it)")?;
        let mut registry = Registry {
            child: Some(child),
            dir,
            host,
        };
        registry.wait_ready()?;
        Ok(registry)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let url = format!("http://{}/v2/", self.host);
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let result = wait_for(
            "the registry to answer /v2/",
            Duration::from_secs(30),
            || {
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    return Err(wasmkube_e2e::hopeless(format!(
                        "docker-registry exited early with {status}"
                    )));
                }
                // 401 is an answer too: the registry with auth is up.
                Ok(http
                    .get(&url)
                    .send()
                    .ok()
                    .filter(|r| r.status().is_success() || r.status().as_u16() == 401)
                    .map(|_| ()))
            },
        );
        result.map_err(|e| anyhow!("{e:#}\n--- registry log ---\n{}", self.log()))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Where the registry keeps a blob's bytes.
    fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| anyhow!("not a sha256 digest: {digest}"))?;
        Ok(self
            .dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- registry log (tail) ---\n{}", tail(&self.log(), 50));
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What `wasmkube push` printed for a registry push.
struct Pushed {
    manifest_digest: String,
    module_digest: String,
}

/// `wasmkube push <sample>.wasm <reference> [extra…]`.
fn push(sample: &str, reference: &str, extra: &[&str]) -> Result<Pushed> {
    push_with_input(sample, reference, extra, "")
}

/// [`push`] with `input` on its standard input.
fn push_with_input(sample: &str, reference: &str, extra: &[&str], input: &str) -> Result<Pushed> {
    use std::io::Write as _;
    let mut child = Command::new(wasmkube_bin())
        .arg("push")
        .arg(sample_wasm(sample))
        .arg(reference)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    let text = stdout(&out);
    if !out.status.success() {
        bail!(
            "wasmkube push {sample} {reference} failed: {text}{}",
            stderr(&out)
        );
    }
    // pushed REF sha256:<manifest> (module sha256:<module>, N bytes)
    let manifest_digest = text
        .split_whitespace()
        .nth(2)
        .filter(|d| d.starts_with("sha256:"))
        .ok_or_else(|| anyhow!("no manifest digest in {text:?}"))?
        .to_string();
    let module_digest = text
        .split("(module ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .filter(|d| d.starts_with("sha256:"))
        .ok_or_else(|| anyhow!("no module digest in {text:?}"))?
        .to_string();
    Ok(Pushed {
        manifest_digest,
        module_digest,
    })
}

fn apply(c: &Cluster, yaml: &str) -> Result<()> {
    let out = c.kubectl_stdin(&["apply", "-f", "-"], yaml)?;
    if !out.status.success() {
        bail!("kubectl apply failed: {}{}", stdout(&out), stderr(&out));
    }
    Ok(())
}

/// A one-container pod; `extra` is appended to the pod spec (indented).
fn pod_yaml(name: &str, image: &str, policy: Option<&str>, restart: &str, extra: &str) -> String {
    let policy = policy
        .map(|p| format!("\n      imagePullPolicy: {p}"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {restart}\n  \
         terminationGracePeriodSeconds: 0\n  containers:\n    - name: main\n      image: {image}{policy}\n{extra}"
    )
}

fn image_id(c: &Cluster, pod: &str) -> Result<String> {
    c.field(&["pod", pod], "{.status.containerStatuses[0].imageID}")
}

/// Waits until `pod`'s logs contain `text`.
fn wait_log(c: &Cluster, pod: &str, text: &str) -> Result<String> {
    wait_for(
        &format!("{pod}'s log to contain {text:?}"),
        Duration::from_secs(60),
        || {
            let out = c.kubectl(&["logs", pod])?;
            let log = stdout(&out);
            Ok(log.contains(text).then_some(log))
        },
    )
}

/// Waits for `pod`'s container to wait for a pull with `reason` in
/// (`ErrImagePull` or `ImagePullBackOff`); returns its message.
fn wait_pull_failure(c: &Cluster, pod: &str) -> Result<String> {
    wait_for(
        &format!("{pod} to fail pulling"),
        Duration::from_secs(60),
        || {
            let reason = c.field(
                &["pod", pod],
                "{.status.containerStatuses[0].state.waiting.reason}",
            )?;
            if reason == "ErrImagePull" || reason == "ImagePullBackOff" {
                let message = c.field(
                    &["pod", pod],
                    "{.status.containerStatuses[0].state.waiting.message}",
                )?;
                return Ok(Some(message));
            }
            bail!("waiting reason is {reason:?}")
        },
    )
}

/// Tags an OCI image index in `repo` whose `wasip1/wasm` entry is the
/// manifest `wasm_manifest` (already in `repo`), beside a `linux/amd64` one.
fn put_index(host: &str, repo: &str, tag: &str, wasm_manifest: &str) -> Result<()> {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let manifest = http
        .get(format!("http://{host}/v2/{repo}/manifests/{wasm_manifest}"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()?
        .error_for_status()?
        .bytes()?;
    let entry = |os: &str, arch: &str| {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": wasm_manifest,
            "size": manifest.len(),
            "platform": {"os": os, "architecture": arch},
        })
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry("linux", "amd64"), entry("wasip1", "wasm")],
    });
    let response = http
        .put(format!("http://{host}/v2/{repo}/manifests/{tag}"))
        .header("Content-Type", "application/vnd.oci.image.index.v1+json")
        .body(index.to_string())
        .send()?;
    if !response.status().is_success() {
        bail!(
            "putting the index: {} {}",
            response.status(),
            response.text().unwrap_or_default()
        );
    }
    Ok(())
}

fn corrupt(path: &Path) -> Result<()> {
    let mut bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    // Same length, different content: only the digest can tell.
    for b in bytes.iter_mut().skip(8) {
        *b ^= 0x5a;
    }
    std::fs::write(path, bytes)?;
    Ok(())
}

#[test]
fn modules_pulled_from_a_registry_run_by_tag_and_digest() -> Result<()> {
    let registry = Registry::start(false)?;
    let c = Cluster::start()?;
    let reg = &registry.host;

    let hello = push("hello", &format!("{reg}/hello:v1"), &[])?;
    apply(
        &c,
        &pod_yaml("hello", &format!("{reg}/hello:v1"), None, "Never", ""),
    )?;
    c.wait_phase("hello", "Succeeded", Duration::from_secs(90))?;
    assert!(c.kubectl_ok(&["logs", "hello"])?.contains("Hello, world!"));
    assert_eq!(
        image_id(&c, "hello")?,
        format!("wasmkube://{}", hello.module_digest)
    );
    let described = c.kubectl_ok(&["describe", "pod", "hello"])?;
    assert!(
        described.contains(&format!("Successfully pulled image \"{reg}/hello:v1\""))
            && described.contains("Image size:"),
        "{described}"
    );

    // Pinned by the manifest digest `wasmkube push` printed.
    let pinned = format!("{reg}/hello@{}", hello.manifest_digest);
    apply(&c, &pod_yaml("pinned", &pinned, None, "Never", ""))?;
    c.wait_phase("pinned", "Succeeded", Duration::from_secs(90))?;

    // A multi-platform index with a wasm entry among others.
    let base = push("hello", &format!("{reg}/multi:base"), &[])?;
    put_index(reg, "multi", "v1", &base.manifest_digest)?;
    apply(
        &c,
        &pod_yaml("multi", &format!("{reg}/multi:v1"), None, "Never", ""),
    )?;
    c.wait_phase("multi", "Succeeded", Duration::from_secs(90))?;
    assert_eq!(
        image_id(&c, "multi")?,
        format!("wasmkube://{}", base.module_digest)
    );

    // A tag the registry does not have: the registry's own words.
    apply(
        &c,
        &pod_yaml("missing", &format!("{reg}/hello:v9"), None, "Never", ""),
    )?;
    let message = wait_pull_failure(&c, "missing")?;
    assert!(message.contains("manifest unknown"), "{message}");

    // A tag moved to another module.
    push("hello", &format!("{reg}/app:v1"), &[])?;
    apply(
        &c,
        &pod_yaml("before", &format!("{reg}/app:v1"), None, "Never", ""),
    )?;
    c.wait_phase("before", "Succeeded", Duration::from_secs(90))?;
    let counter = push("counter", &format!("{reg}/app:v1"), &[])?;
    // IfNotPresent (the default for a tag) keeps what the node has.
    apply(
        &c,
        &pod_yaml("cached", &format!("{reg}/app:v1"), None, "Never", ""),
    )?;
    c.wait_phase("cached", "Succeeded", Duration::from_secs(90))?;
    assert!(c.kubectl_ok(&["logs", "cached"])?.contains("Hello, world!"));
    assert_eq!(
        image_id(&c, "cached")?,
        format!("wasmkube://{}", hello.module_digest)
    );
    let described = c.kubectl_ok(&["describe", "pod", "cached"])?;
    assert!(
        described.contains("already present on machine"),
        "{described}"
    );
    // Always asks the registry and runs the tag's new module.
    apply(
        &c,
        &pod_yaml(
            "always",
            &format!("{reg}/app:v1"),
            Some("Always"),
            "Never",
            "",
        ),
    )?;
    wait_log(&c, "always", "count 1")?;
    assert_eq!(
        image_id(&c, "always")?,
        format!("wasmkube://{}", counter.module_digest)
    );
    c.kubectl_ok(&["delete", "pod", "always", "--wait=false"])?;

    // A Deployment rollout picks the moved tag up.
    push("idle", &format!("{reg}/roll:v1"), &[])?;
    let deployment = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: roll\nspec:\n  replicas: 1\n  \
         selector:\n    matchLabels:\n      app: roll\n  template:\n    metadata:\n      labels:\n        app: roll\n    \
         spec:\n      terminationGracePeriodSeconds: 0\n      containers:\n        - name: main\n          \
         image: {reg}/roll:v1\n          imagePullPolicy: Always\n"
    );
    apply(&c, &deployment)?;
    c.kubectl_ok(&["rollout", "status", "deploy/roll", "--timeout=120s"])?;
    push("counter", &format!("{reg}/roll:v1"), &[])?;
    c.kubectl_ok(&["rollout", "restart", "deploy/roll"])?;
    c.kubectl_ok(&["rollout", "status", "deploy/roll", "--timeout=120s"])?;
    wait_for(
        "a pod of the restarted rollout to run the new module",
        Duration::from_secs(90),
        || {
            let names = c.kubectl_ok(&[
                "get",
                "pods",
                "-l",
                "app=roll",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.status.containerStatuses[0].imageID}{\"\\n\"}{end}",
            ])?;
            let want = format!("wasmkube://{}", counter.module_digest);
            for line in names.lines() {
                if let Some((name, id)) = line.split_once(' ')
                    && id == want
                    && stdout(&c.kubectl(&["logs", name])?).contains("count")
                {
                    return Ok(Some(()));
                }
            }
            bail!("pods: {names:?}")
        },
    )?;

    // A corrupted blob is refused.
    let bad = push("crash", &format!("{reg}/bad:v1"), &[])?;
    corrupt(&registry.blob_path(&bad.module_digest)?)?;
    apply(
        &c,
        &pod_yaml("corrupt", &format!("{reg}/bad:v1"), None, "Never", ""),
    )?;
    let message = wait_pull_failure(&c, "corrupt")?;
    assert!(
        message.contains("digest mismatch") && message.contains(&bad.module_digest),
        "{message}"
    );
    Ok(())
}

#[test]
fn a_registry_with_basic_auth_needs_the_pull_secret() -> Result<()> {
    let registry = Registry::start(true)?;
    let reg = &registry.host;
    let image = format!("{reg}/private:v1");

    let anonymous = push("hello", &image, &[]);
    let refused = anonymous
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(
        refused.contains("unauthorized"),
        "an anonymous push is refused: {refused:?}"
    );
    push_with_input(
        "hello",
        &image,
        &["--username", USER, "--password-stdin"],
        &format!("{PASSWORD}\n"),
    )?;

    let c = Cluster::start()?;
    apply(&c, &pod_yaml("nosecret", &image, None, "Never", ""))?;
    let message = wait_pull_failure(&c, "nosecret")?;
    assert!(
        message.contains("unauthorized: authentication required"),
        "{message}"
    );
    let described = c.kubectl_ok(&["describe", "pod", "nosecret"])?;
    assert!(
        described.contains("unauthorized: authentication required"),
        "{described}"
    );

    c.kubectl_ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={reg}"),
        &format!("--docker-username={USER}"),
        &format!("--docker-password={PASSWORD}"),
    ])?;
    apply(
        &c,
        &pod_yaml(
            "withsecret",
            &image,
            None,
            "Never",
            "  imagePullSecrets:\n    - name: regcred\n",
        ),
    )?;
    c.wait_phase("withsecret", "Succeeded", Duration::from_secs(90))?;
    assert!(
        c.kubectl_ok(&["logs", "withsecret"])?
            .contains("Hello, world!")
    );
    Ok(())
}
