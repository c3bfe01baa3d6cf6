//! One real etcd member (Debian's `etcd-server`) on free loopback ports with
//! a temporary data dir, killed on drop. A missing `etcd` binary fails the
//! test that asks for it (install `etcd-server`, or run scripts/setup.sh);
//! it never skips.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use wasmkube_apiserver::storage::etcd::{EtcdOptions, EtcdStore};

const START_DEADLINE: Duration = Duration::from_secs(30);

fn etcd_binary() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("etcd"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "etcd is not on PATH: install Debian's etcd-server (`apt-get install etcd-server`, \
                 or run scripts/setup.sh) to run the etcd tests"
            )
        })
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A running single-member etcd.
pub struct Etcd {
    dir: tempfile::TempDir,
    child: Child,
    pub endpoint: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Etcd {
    /// Starts etcd and waits until a client connects.
    pub async fn start() -> Result<Etcd> {
        let binary = etcd_binary();
        let mut last = String::new();
        // A port picked free can be taken before etcd binds it: retry.
        for _ in 0..3 {
            let dir = tempfile::tempdir()?;
            let client = format!("http://127.0.0.1:{}", free_port()?);
            let peer = format!("http://127.0.0.1:{}", free_port()?);
            let log = std::fs::File::create(dir.path().join("etcd.log"))?;
            let child = Command::new(&binary)
                .args(["--name", "m0", "--log-level", "warn"])
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .arg("--initial-cluster")
                .arg(format!("m0={peer}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("spawn etcd")?;
            let mut etcd = Etcd {
                dir,
                child,
                endpoint: client,
            };
            let deadline = tokio::time::Instant::now() + START_DEADLINE;
            loop {
                if let Some(status) = etcd.child.try_wait()? {
                    last = format!("etcd exited with {status}");
                    break;
                }
                match EtcdStore::connect(etcd.options("/ready")).await {
                    Ok(_) => return Ok(etcd),
                    Err(e) if tokio::time::Instant::now() > deadline => {
                        last = e.to_string();
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
        bail!("etcd did not start: {last}")
    }

    /// Client options for keys under `prefix`.
    pub fn options(&self, prefix: &str) -> EtcdOptions {
        EtcdOptions {
            endpoints: vec![self.endpoint.clone()],
            prefix: prefix.to_owned(),
            dial_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            ..EtcdOptions::default()
        }
    }

    /// Where etcd keeps its files (WAL, snapshots) and its log.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}
