//! What the module store tests share: a store on either backend (etcd with
//! its default request limit, so chunking is what makes large modules fit),
//! and valid wasm modules of any size.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::time::Instant;
use wasmkube_apiserver::storage::Store;
use wasmkube_apiserver::storage::embedded::EmbeddedStore;
use wasmkube_apiserver::storage::etcd::{EtcdOptions, EtcdStore};

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Etcd,
}

/// A store and what keeps it alive (its directory, its etcd process).
pub struct TestStore {
    pub store: Arc<dyn Store>,
    pub dir: tempfile::TempDir,
    _etcd: Option<EtcdProcess>,
}

impl TestStore {
    pub async fn open(backend: Backend) -> Result<TestStore> {
        let dir = tempfile::tempdir()?;
        match backend {
            Backend::Embedded => {
                let store = EmbeddedStore::open(&dir.path().join("store.redb"))?;
                Ok(TestStore {
                    store: Arc::new(store),
                    dir,
                    _etcd: None,
                })
            }
            Backend::Etcd => {
                let etcd = EtcdProcess::start(&dir.path().join("etcd")).await?;
                let store = EtcdStore::connect(etcd.options("/wasmkube")).await?;
                Ok(TestStore {
                    store: Arc::new(store),
                    dir,
                    _etcd: Some(etcd),
                })
            }
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One etcd member with etcd's default limits (notably
/// `--max-request-bytes` of 1.5 MiB), killed on drop. A missing `etcd`
/// binary fails the test: scripts/setup.sh installs Debian's etcd-server.
pub struct EtcdProcess {
    child: Child,
    pub client_url: String,
    log: std::path::PathBuf,
}

impl EtcdProcess {
    pub async fn start(dir: &std::path::Path) -> Result<EtcdProcess> {
        std::fs::create_dir_all(dir)?;
        let mut last = String::new();
        // A port picked free can be taken before etcd binds it: retry.
        for attempt in 0..3 {
            let client_url = format!("http://127.0.0.1:{}", free_port()?);
            let peer_url = format!("http://127.0.0.1:{}", free_port()?);
            let log = dir.join(format!("etcd-{attempt}.log"));
            let out = std::fs::File::create(&log)?;
            let child = Command::new("etcd")
                .arg("--name")
                .arg("m0")
                .arg("--data-dir")
                .arg(dir.join(format!("data-{attempt}")))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("m0={peer_url}")])
                .args(["--log-level", "warn", "--logger", "zap"])
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .context(
                    "starting etcd: is etcd-server installed? (scripts/setup.sh installs it)",
                )?;
            let mut etcd = EtcdProcess {
                child,
                client_url,
                log,
            };
            match etcd.wait_ready().await {
                Ok(()) => return Ok(etcd),
                Err(e) => last = format!("{e:#}"),
            }
        }
        bail!("etcd did not start: {last}")
    }

    pub fn options(&self, prefix: &str) -> EtcdOptions {
        EtcdOptions {
            endpoints: vec![self.client_url.clone()],
            prefix: prefix.to_string(),
            tls: None,
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "etcd exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            let mut quick = self.options("/ready");
            quick.dial_timeout = Duration::from_secs(1);
            quick.request_timeout = Duration::from_secs(1);
            match EtcdStore::connect(quick).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => bail!("etcd not ready: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends a custom section of `payload` bytes (named `pad`) to a module:
/// custom sections may follow any section, so the result stays valid and
/// runs exactly like `module`.
pub fn with_custom_section(module: &[u8], payload: usize, fill: u8) -> Vec<u8> {
    let name = b"pad";
    let content = 1 + name.len() + payload;
    let mut out = Vec::with_capacity(module.len() + content + 6);
    out.extend_from_slice(module);
    out.push(0);
    leb128(content as u64, &mut out);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    // Varying bytes, so chunks differ from each other.
    out.extend((0..payload).map(|i| fill ^ (i % 251) as u8));
    out
}

fn leb128(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The smallest valid module: magic and version.
pub const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

/// A valid module of about `size` bytes.
pub fn module_of(size: usize, fill: u8) -> Vec<u8> {
    with_custom_section(EMPTY_MODULE, size.saturating_sub(16), fill)
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}
