//! Secrets encrypted at rest, through a real server on both backends: the
//! bytes in the store (the redb file, etcd's keys) hold no plaintext, while
//! get, list and watch through the API return the data; a rotation plus a
//! rewrite moves every Secret to the new key; a store whose key is missing
//! answers 500 naming the storage key and the encryption key, and the
//! server still starts.
//!
//! The etcd test needs Debian's `etcd-server` (`etcd` on PATH): missing is a
//! failure, never a skip.

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasmkube_apiserver::storage::Store;
use wasmkube_apiserver::storage::encryption;
use wasmkube_apiserver::storage::etcd::EtcdStore;
use wasmkube_apiserver::{Config, Running, StoreBackend};

const DEADLINE: Duration = Duration::from_secs(30);
const SECRETS: &str = "/api/v1/namespaces/default/secrets";
/// The plaintext the tests look for in the raw store.
const MARKER: &str = "correct-horse-battery-staple-7f3a";

struct Server {
    running: Running,
    shutdown: CancellationToken,
    client: reqwest::Client,
}

impl Server {
    async fn start(config: Config) -> Result<Server> {
        let shutdown = CancellationToken::new();
        let running = wasmkube_apiserver::start(config, shutdown.clone()).await?;
        let client = common::https_client(&running.ca_pem)?.build()?;
        Ok(Server {
            running,
            shutdown,
            client,
        })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.running.url))
            .bearer_auth(&self.running.admin_token)
    }

    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut r = self.req(method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await?;
        let code = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.running.done).await??;
        Ok(())
    }
}

fn secret(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"password": MARKER},
    })
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Creates `name` and checks get, list and a watch return its data.
async fn create_and_read_back(s: &Server, name: &str) -> Result<()> {
    let watch = s
        .req(reqwest::Method::GET, &format!("{SECRETS}?watch=true"))
        .send()
        .await?;
    ensure!(watch.status() == 200, "watch: {}", watch.status());
    let mut events = watch.bytes_stream();

    let (code, created) = s
        .json(reqwest::Method::POST, SECRETS, Some(secret(name)))
        .await?;
    ensure!(code == 201, "create: {code} {created}");
    let want = b64(MARKER);
    let (code, got) = s
        .json(reqwest::Method::GET, &format!("{SECRETS}/{name}"), None)
        .await?;
    ensure!(
        code == 200 && got["data"]["password"] == want.as_str(),
        "get: {code} {got}"
    );
    let (code, list) = s.json(reqwest::Method::GET, SECRETS, None).await?;
    ensure!(code == 200, "list: {code} {list}");
    let listed = list["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["metadata"]["name"] == name))
        .cloned()
        .unwrap_or_default();
    ensure!(listed["data"]["password"] == want.as_str(), "list: {list}");

    // The watch's ADDED event carries the decrypted data.
    let mut seen = Vec::new();
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(chunk) = events.next().await {
            seen.extend_from_slice(&chunk?);
            for line in seen.split(|b| *b == b'\n') {
                let Ok(ev) = serde_json::from_slice::<Value>(line) else {
                    continue;
                };
                if ev["object"]["metadata"]["name"] == name {
                    return Ok::<Value, anyhow::Error>(ev);
                }
            }
        }
        bail!("the watch ended")
    })
    .await
    .context("no watch event for the secret")??;
    ensure!(
        found["type"] == "ADDED" && found["object"]["data"]["password"] == want.as_str(),
        "{found}"
    );
    Ok(())
}

/// Polls `check` until it holds or the deadline passes.
async fn eventually<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn embedded_store_holds_no_plaintext_and_rotation_moves_every_secret() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(common::server_config(dir.path())).await?;
    let key_file = encryption::default_key_file(dir.path());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file)?.permissions().mode() & 0o777;
        ensure!(mode == 0o600, "key file mode {mode:o}");
    }
    create_and_read_back(&s, "s1").await?;
    // A ConfigMap with the same text is stored in the clear: proves the
    // file scan below would see plaintext if it were there.
    let (code, cm) = s
        .json(
            reqwest::Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some(json!({"metadata": {"name": "c1"}, "data": {"v": format!("cm-{MARKER}")}})),
        )
        .await?;
    ensure!(code == 201, "{cm}");
    let redb = dir.path().join("store.redb");
    eventually("the ConfigMap is in the store file", || async {
        Ok(contains(&std::fs::read(&redb)?, &format!("cm-{MARKER}")))
    })
    .await?;
    let bytes = std::fs::read(&redb)?;
    ensure!(
        !contains(&bytes, &format!("\"{MARKER}")) && !contains(&bytes, &b64(MARKER)),
        "the Secret's data is in the store file in the clear"
    );
    ensure!(
        contains(&bytes, "k8s:enc:aesgcm:v1:key1:"),
        "no envelope in the store file"
    );

    // Rotate: a new first key in the file; rewrite moves s1 (and s2,
    // written before the server re-read the file) to it.
    create_and_read_back(&s, "s2").await?;
    let name = encryption::rotate_key(&key_file)?;
    ensure!(name == "key2", "{name}");
    let (code, report) = s
        .json(
            reqwest::Method::POST,
            "/wasmkube/v1/encryption/rewrite",
            Some(json!({})),
        )
        .await?;
    ensure!(
        code == 200 && report["rewritten"].as_u64() >= Some(2),
        "{code} {report}"
    );
    ensure!(report["failed"] == json!([]), "{report}");
    let (code, usage) = s
        .json(reqwest::Method::GET, "/wasmkube/v1/encryption", None)
        .await?;
    ensure!(code == 200, "{usage}");
    ensure!(usage["objectsByKey"]["key2"].as_u64() >= Some(2), "{usage}");
    ensure!(usage["objectsByKey"].get("key1").is_none(), "{usage}");
    ensure!(
        usage["writeKeys"]["/registry/secrets/"] == "key2",
        "{usage}"
    );
    // key1 is unused now: removing it leaves every Secret readable.
    encryption::remove_key(&key_file, "key1")?;
    for n in ["s1", "s2"] {
        let (code, got) = s
            .json(reqwest::Method::GET, &format!("{SECRETS}/{n}"), None)
            .await?;
        ensure!(
            code == 200 && got["data"]["password"] == b64(MARKER).as_str(),
            "{code} {got}"
        );
    }
    s.stop().await
}

#[tokio::test]
async fn a_missing_key_is_a_500_naming_it_and_the_server_still_starts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(common::server_config(dir.path())).await?;
    let (code, _) = s
        .json(reqwest::Method::POST, SECRETS, Some(secret("s1")))
        .await?;
    ensure!(code == 201);
    s.stop().await?;

    // Another key file: key1 is now a different key.
    let key_file = encryption::default_key_file(dir.path());
    let original = std::fs::read(&key_file)?;
    encryption::write_configuration(&key_file, &encryption::new_configuration())?;
    let s = Server::start(common::server_config(dir.path())).await?;
    let (code, status) = s
        .json(reqwest::Method::GET, &format!("{SECRETS}/s1"), None)
        .await?;
    let message = status["message"].as_str().unwrap_or_default();
    ensure!(
        code == 500 && status["reason"] == "InternalError",
        "{code} {status}"
    );
    ensure!(
        message.contains("/registry/secrets/default/s1") && message.contains("\"key1\""),
        "{message}"
    );
    ensure!(!message.contains(MARKER), "{message}");
    // Other resources are unaffected.
    let (code, _) = s
        .json(reqwest::Method::GET, "/api/v1/namespaces", None)
        .await?;
    ensure!(code == 200);

    // Only system:masters may look at the keys.
    let (code, _) = s
        .json(reqwest::Method::GET, "/wasmkube/v1/encryption", None)
        .await?;
    ensure!(code == 200);
    let other = s
        .running
        .tokens
        .iter()
        .find(|(user, _)| user.as_str() != wasmkube_apiserver::auth::ADMIN_USER)
        .map(|(_, t)| t.clone())
        .context("a second user in tokens.csv")?;
    let resp = s
        .client
        .get(format!("{}/wasmkube/v1/encryption", s.running.url))
        .bearer_auth(other)
        .send()
        .await?;
    ensure!(resp.status() == 403, "{}", resp.status());

    // The right key back in the file: the status call re-reads it.
    std::fs::write(&key_file, &original)?;
    let (code, _) = s
        .json(reqwest::Method::GET, "/wasmkube/v1/encryption", None)
        .await?;
    ensure!(code == 200);
    let (code, got) = s
        .json(reqwest::Method::GET, &format!("{SECRETS}/s1"), None)
        .await?;
    ensure!(
        code == 200 && got["data"]["password"] == b64(MARKER).as_str(),
        "{code} {got}"
    );
    s.stop().await
}

// ---------------------------------------------------------------------------
// etcd

#[tokio::test]
async fn etcd_holds_no_plaintext_and_the_api_decrypts() -> Result<()> {
    let etcd = common::etcd::Etcd::start().await?;
    let dir = tempfile::tempdir()?;
    let options = etcd.options("/wasmkube");
    let config = Config {
        store: StoreBackend::Etcd(options.clone()),
        ..common::server_config(dir.path())
    };
    let s = Server::start(config).await?;
    create_and_read_back(&s, "s1").await?;

    // etcd's own view of the key, through a plain (unencrypted) client.
    let raw: Arc<dyn Store> = Arc::new(EtcdStore::connect(options).await?);
    let kv = raw
        .get("/registry/secrets/default/s1")
        .await?
        .context("the secret is not in etcd")?;
    ensure!(
        kv.value.starts_with(b"k8s:enc:aesgcm:v1:key1:"),
        "{:?}",
        String::from_utf8_lossy(&kv.value[..kv.value.len().min(40)])
    );
    ensure!(!contains(&kv.value, MARKER) && !contains(&kv.value, &b64(MARKER)));
    let page = raw.range("/registry/secrets/", None, 0).await?;
    ensure!(!page.kvs.is_empty());
    for kv in &page.kvs {
        ensure!(
            kv.value.starts_with(b"k8s:enc:"),
            "{} is stored in the clear",
            kv.key
        );
    }
    s.stop().await?;
    // Nor anywhere in etcd's files (its WAL and snapshots).
    let mut stack = vec![etcd.data_dir().to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        } else if p.extension().is_none_or(|e| e != "log") {
            let bytes = std::fs::read(&p)?;
            ensure!(
                !contains(&bytes, MARKER) && !contains(&bytes, &b64(MARKER)),
                "{} holds the secret in the clear",
                p.display()
            );
        }
    }
    Ok(())
}

/// The store conformance suite passes unchanged through the encryption
/// layer, with every resource the suite writes encrypted.
#[tokio::test]
async fn the_encrypted_store_passes_the_store_conformance_suite() -> Result<()> {
    use wasmkube_apiserver::storage::conformance;
    let mut config = encryption::new_configuration();
    config.resources[0].resources = [
        "a",
        "configmaps",
        "events",
        "leases",
        "nodes",
        "pod",
        "pods",
        "podsx",
        "secrets",
        "seed",
        "services",
    ]
    .map(String::from)
    .to_vec();
    let dirs = std::sync::Mutex::new(Vec::new());
    conformance::run_all(|| async {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let raw = common::embedded_store(dir.path()).unwrap_or_else(|e| panic!("store: {e}"));
        if let Ok(mut d) = dirs.lock() {
            d.push(dir);
        }
        let store =
            encryption::EncryptedStore::new(raw, &config).unwrap_or_else(|e| panic!("keys: {e}"));
        Arc::new(store) as Arc<dyn Store>
    })
    .await;
    Ok(())
}
