//! The sandbox guarantees of issue 9, each pinned by a guest that tries to
//! break it, run by a real kubelet against an in-process API server: the
//! pod status (reason, exit code, message) and the host's files are what
//! is asserted, never only what the guest says about itself.
//!
//! Guests: `wasm-samples/hostile` (one attack per mode, see its docs),
//! `escape` and `flood` from the same workspace, built here for
//! wasm32-wasip1 (and `hostile` also as a wasm32-wasip2 component, which
//! has wasi:sockets), and small WAT modules for what only raw wasm can do
//! (grow memory and tables without end, recurse without end, spin without
//! a host call, declare a shared memory).

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::{client, wait_for};
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Node, Pod};
use kube::api::{DeleteParams, LogParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasmkube_runtime::KubeletConfig;

const NODE: &str = "hostile-node";
const POD_TIMEOUT: Duration = Duration::from_secs(90);

/// The sample guests, built once per test run into a target directory of
/// their own: `(wasm32-wasip1 dir, wasm32-wasip2 dir)`.
fn samples() -> Result<(PathBuf, PathBuf)> {
    static BUILT: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wasm-samples");
            let target = std::env::temp_dir().join("wasmkube-runtime-hostile-samples");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            for (triple, packages) in [
                ("wasm32-wasip1", &["hostile", "escape", "flood"][..]),
                ("wasm32-wasip2", &["hostile"][..]),
            ] {
                let mut cmd = std::process::Command::new(&cargo);
                cmd.args(["build", "--release", "--target", triple])
                    .arg("--manifest-path")
                    .arg(samples.join("Cargo.toml"))
                    .arg("--target-dir")
                    .arg(&target);
                for p in packages {
                    cmd.args(["-p", p]);
                }
                // Flags meant for the host build must not reach the wasm one.
                for var in [
                    "CARGO_ENCODED_RUSTFLAGS",
                    "RUSTFLAGS",
                    "CARGO_TARGET_DIR",
                    "CARGO_BUILD_TARGET",
                    "RUSTC_WORKSPACE_WRAPPER",
                ] {
                    cmd.env_remove(var);
                }
                let out = cmd.output().map_err(|e| format!("running cargo: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "building the {triple} samples failed (is the target installed?): {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
            Ok((
                target.join("wasm32-wasip1/release"),
                target.join("wasm32-wasip2/release"),
            ))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// A sample's bytes: `name` from the wasm32-wasip1 build, or the
/// wasm32-wasip2 component when `component`.
async fn sample(name: &'static str, component: bool) -> Result<Vec<u8>> {
    let (p1, p2) = tokio::task::spawn_blocking(samples).await??;
    let dir = if component { p2 } else { p1 };
    Ok(tokio::fs::read(dir.join(format!("{name}.wasm"))).await?)
}

/// An API server and one kubelet, both in a temporary directory.
struct Cluster {
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    client: Client,
    pods: Api<Pod>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Cluster {
    async fn start(tweak: impl FnOnce(&mut KubeletConfig)) -> Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let shutdown = CancellationToken::new();
        let running = common::start_apiserver(dir.path(), &shutdown).await?;
        let client = client(&running.kubeconfig_path).await?;
        let mut config = KubeletConfig::new(NODE, dir.path().join("kubelet"));
        config.port = 0;
        config.proxy_port = 0;
        config.max_pods = 16;
        tweak(&mut config);
        wasmkube_runtime::start(config, client.clone(), shutdown.clone()).await?;
        let pods = Api::namespaced(client.clone(), "default");
        Ok(Cluster {
            dir,
            shutdown,
            client,
            pods,
        })
    }

    /// The kubelet's data directory.
    fn kubelet_dir(&self) -> PathBuf {
        self.dir.path().join("kubelet")
    }

    /// Pushes `bytes` as the module `<name>:v1`.
    async fn push(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        let req = http::Request::put(format!("/wasmkube/v1/modules/{name}/v1"))
            .header("content-type", "application/wasm")
            .body(bytes)?;
        self.client
            .request_text(req)
            .await
            .with_context(|| format!("pushing {name}"))?;
        Ok(())
    }

    async fn push_wat(&self, name: &str, wat: &str) -> Result<()> {
        self.push(name, wat::parse_str(wat)?).await
    }

    /// Creates a pod bound to the node from the `spec` fields given
    /// (`restartPolicy: Never` and no grace period unless `spec` says).
    async fn create(&self, name: &str, spec: Value) -> Result<Pod> {
        let mut full = json!({
            "nodeName": NODE,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
        });
        if let (Some(full), Some(spec)) = (full.as_object_mut(), spec.as_object()) {
            for (k, v) in spec {
                full.insert(k.clone(), v.clone());
            }
        }
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": name, "namespace": "default" },
            "spec": full,
        }))?;
        Ok(self.pods.create(&PostParams::default(), &pod).await?)
    }

    /// A one-container pod running `image` with `args` and optional
    /// `resources.limits.memory`.
    async fn run(
        &self,
        name: &str,
        image: &str,
        args: &[&str],
        memory: Option<&str>,
    ) -> Result<Pod> {
        let mut container = json!({ "name": "main", "image": image, "args": args });
        if let Some(memory) = memory {
            container["resources"] = json!({ "limits": { "memory": memory } });
        }
        self.create(name, json!({ "containers": [container] }))
            .await
    }

    /// Waits until the pod's first container has terminated.
    async fn terminated(&self, name: &str) -> Result<ContainerStateTerminated> {
        wait_for(&format!("{name} to terminate"), POD_TIMEOUT, async || {
            let pod = self.pods.get(name).await?;
            Ok(first_state(&pod).and_then(|s| s.terminated))
        })
        .await
    }

    /// Waits until the pod is Running.
    async fn running(&self, name: &str) -> Result<()> {
        wait_for(&format!("{name} to run"), POD_TIMEOUT, async || {
            let pod = self.pods.get(name).await?;
            Ok((phase(&pod) == "Running").then_some(()))
        })
        .await
    }

    async fn log(&self, name: &str) -> Result<String> {
        Ok(self.pods.logs(name, &LogParams::default()).await?)
    }

    /// Waits until the pod's log has a line starting with `prefix`.
    async fn log_line(&self, name: &str, prefix: &str) -> Result<String> {
        wait_for(
            &format!("{name} to print {prefix:?}"),
            POD_TIMEOUT,
            async || {
                let log = self.pods.logs(name, &LogParams::default()).await;
                Ok(log
                    .ok()
                    .and_then(|l| l.lines().find(|l| l.starts_with(prefix)).map(String::from)))
            },
        )
        .await
    }

    /// The host directory of a pod's volume.
    fn volume_dir(&self, pod: &Pod, volume: &str) -> PathBuf {
        self.kubelet_dir()
            .join("pods")
            .join(pod.metadata.uid.as_deref().unwrap_or_default())
            .join("volumes")
            .join(volume)
    }

    /// The node is Ready and a fresh pod still runs to completion: what
    /// "the node is fine" means after a hostile guest.
    async fn still_fine(&self, after: &str) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = nodes.get(NODE).await?;
        let ready = node
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status);
        ensure!(
            ready.as_deref() == Some("True"),
            "node Ready after {after}: {ready:?}"
        );
        self.push_wat("hello", HELLO).await?;
        let name = format!("fine-after-{after}");
        self.run(&name, "hello:v1", &[], None).await?;
        let t = self.terminated(&name).await?;
        ensure!(
            t.exit_code == 0 && t.reason.as_deref() == Some("Completed"),
            "a pod after {after} completes: {t:?}"
        );
        ensure!(self.log(&name).await? == "hello from wasm\n");
        Ok(())
    }
}

fn first_state(pod: &Pod) -> Option<k8s_openapi::api::core::v1::ContainerState> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .clone()
}

fn phase(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

/// A log's `OPENED …` lines (attempts that got through).
fn opened(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.starts_with("OPENED")).collect()
}

/// Asserts a hostile mode ran its attempts and every one was denied.
fn all_denied(log: &str, mode: &str, t: &ContainerStateTerminated) {
    assert!(opened(log).is_empty(), "attempts got through:\n{log}");
    assert!(
        log.contains(&format!("hostile {mode}: all ")),
        "the run finished its attempts:\n{log}"
    );
    assert_eq!(
        (t.exit_code, t.reason.as_deref()),
        (0, Some("Completed")),
        "{log}"
    );
}

const HELLO: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "hello from wasm\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 20)))))
"#;

/// Text planted outside every volume, for guests to hunt.
const CANARY: &str = "CANARY-host-secret-3f9a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_files_outside_volumes_stay_out_of_reach() -> Result<()> {
    let c = Cluster::start(|_| {}).await?;
    c.push("escape", sample("escape", false).await?).await?;
    c.push("hostile", sample("hostile", false).await?).await?;
    // Outside every volume, next to the node's pod directories.
    let canary = c.kubelet_dir().join("canary.txt");
    tokio::fs::write(&canary, CANARY).await?;
    let volume = json!([{ "name": "data", "emptyDir": {} }]);
    let mount = json!([{ "name": "data", "mountPath": "/data" }]);

    // Absolute paths and `..`.
    c.create(
        "escape",
        json!({
            "volumes": volume,
            "containers": [{ "name": "main", "image": "escape:v1", "args": ["/data"], "volumeMounts": mount }],
        }),
    )
    .await?;
    // Symlinks made inside the volume, pointing out of it. From
    // `<kubelet>/pods/<uid>/volumes/data`, four `..` reach `<kubelet>`.
    let pod = c
        .create(
            "symlink",
            json!({
                "volumes": volume,
                "containers": [{
                    "name": "main", "image": "hostile:v1",
                    "args": ["symlink", "/data", "../../../../canary.txt", canary.display().to_string()],
                    "volumeMounts": mount,
                }],
            }),
        )
        .await?;

    let t = c.terminated("escape").await?;
    let log = c.log("escape").await?;
    assert!(!log.contains("OPENED"), "{log}");
    assert!(log.contains("ok /data/escape-probe"), "{log}");
    assert!(log.contains("escape: all "), "{log}");
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));

    let t = c.terminated("symlink").await?;
    let log = c.log("symlink").await?;
    all_denied(&log, "symlink", &t);
    assert!(!log.contains(CANARY), "the canary leaked:\n{log}");
    for attempt in [
        "read /data/abs-passwd",
        "read /data/up-passwd",
        "read /data/parent/../../etc/passwd",
        "read /data/abs-root/etc/passwd",
        "read /data/secret-0",
        "write /data/secret-0",
        "read /data/../../../../canary.txt",
        "create /data/parent/hostile-created",
    ] {
        assert!(
            log.lines()
                .any(|l| l.starts_with(&format!("denied {attempt}:"))),
            "{attempt} was tried and denied:\n{log}"
        );
    }
    // On the host: the canary is untouched and nothing was created
    // outside the volume.
    assert_eq!(tokio::fs::read_to_string(&canary).await?, CANARY);
    let volume_dir = c.volume_dir(&pod, "data");
    assert_eq!(
        tokio::fs::read_to_string(volume_dir.join("hostile-probe")).await?,
        "inside",
        "the guest's own writes land in its volume"
    );
    let parent = volume_dir.parent().context("volumes dir")?;
    assert!(!parent.join("hostile-created").exists());
    let mut entries = tokio::fs::read_dir(parent).await?;
    while let Some(e) = entries.next_entry().await? {
        assert_eq!(
            e.file_name(),
            "data",
            "only the volume is in {}",
            parent.display()
        );
    }
    c.still_fine("escapes").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_mounts_cannot_be_written_linked_or_renamed() -> Result<()> {
    let c = Cluster::start(|_| {}).await?;
    c.push("hostile", sample("hostile", false).await?).await?;
    // One emptyDir mounted twice: read-write at /rw, read-only at /ro.
    let pod = c
        .create(
            "readonly",
            json!({
                "volumes": [{ "name": "data", "emptyDir": {} }],
                "containers": [{
                    "name": "main", "image": "hostile:v1",
                    "args": ["readonly", "/ro", "/rw"],
                    "volumeMounts": [
                        { "name": "data", "mountPath": "/rw" },
                        { "name": "data", "mountPath": "/ro", "readOnly": true },
                    ],
                }],
            }),
        )
        .await?;
    let t = c.terminated("readonly").await?;
    let log = c.log("readonly").await?;
    all_denied(&log, "readonly", &t);
    for attempt in [
        "write /ro/hostile-probe",
        "create /ro/new",
        "hard link /ro/hostile-probe -> /rw/linked",
        "rename /ro/hostile-probe -> /rw/moved",
    ] {
        assert!(
            log.lines()
                .any(|l| l.starts_with(&format!("denied {attempt}:"))),
            "{attempt} was tried and denied:\n{log}"
        );
    }
    let dir = c.volume_dir(&pod, "data");
    assert_eq!(
        tokio::fs::read_to_string(dir.join("hostile-probe")).await?,
        "inside"
    );
    for name in ["new", "linked", "moved"] {
        assert!(!dir.join(name).exists(), "{name} was not created");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_cannot_read_another_pods_volume_or_env() -> Result<()> {
    let c = Cluster::start(|_| {}).await?;
    c.push("hostile", sample("hostile", false).await?).await?;
    const FILE_SECRET: &str = "neighbour-file-secret-71c2";
    const ENV_SECRET: &str = "neighbour-env-secret-9d04";
    let volume = json!([{ "name": "data", "emptyDir": {} }]);
    let mount = json!([{ "name": "data", "mountPath": "/data" }]);
    let victim = c
        .create(
            "victim",
            json!({
                "volumes": volume,
                "containers": [{
                    "name": "main", "image": "hostile:v1",
                    "args": ["plant", "/data/secret.txt", FILE_SECRET],
                    "env": [{ "name": "NEIGHBOUR_TOKEN", "value": ENV_SECRET }],
                    "volumeMounts": mount,
                }],
            }),
        )
        .await?;
    c.log_line("victim", "planted").await?;
    let victim_file = c.volume_dir(&victim, "data").join("secret.txt");
    assert_eq!(
        tokio::fs::read_to_string(&victim_file).await?,
        FILE_SECRET,
        "the victim's file is on the host where the thief will look"
    );
    let victim_uid = victim.metadata.uid.clone().unwrap_or_default();

    // The thief has a volume of the same name, and knows where the
    // victim's lives: by a `..` path from its own (`volumes/data` →
    // `<uid>` → `pods`), and by the host's absolute path.
    let thief = c
        .create(
            "thief",
            json!({
                "volumes": volume,
                "containers": [{
                    "name": "main", "image": "hostile:v1",
                    "args": [
                        "symlink", "/data",
                        format!("../../../{victim_uid}/volumes/data/secret.txt"),
                        victim_file.display().to_string(),
                    ],
                    "volumeMounts": mount,
                }],
            }),
        )
        .await?;
    let t = c.terminated("thief").await?;
    let log = c.log("thief").await?;
    all_denied(&log, "symlink", &t);
    assert!(!log.contains(FILE_SECRET), "{log}");
    // Its own volume of the same name is its own: the victim's file is not in it.
    let thief_dir = c.volume_dir(&thief, "data");
    assert_ne!(thief_dir, c.volume_dir(&victim, "data"));
    assert!(!thief_dir.join("secret.txt").exists());
    assert_eq!(tokio::fs::read_to_string(&victim_file).await?, FILE_SECRET);

    // The environment: a pod sees its own variables, never a neighbour's.
    c.create(
        "env",
        json!({
            "containers": [{
                "name": "main", "image": "hostile:v1", "args": ["env"],
                "env": [{ "name": "OWN", "value": "mine" }],
            }],
        }),
    )
    .await?;
    let t = c.terminated("env").await?;
    let log = c.log("env").await?;
    assert_eq!(t.exit_code, 0, "{log}");
    assert!(log.lines().any(|l| l == "env OWN=mine"), "{log}");
    assert!(
        !log.contains(ENV_SECRET) && !log.contains("NEIGHBOUR_TOKEN"),
        "{log}"
    );
    // Nor the kubelet's own (the host process's) environment.
    if let Some((key, _)) = std::env::vars().find(|(k, _)| k == "PATH" || k == "HOME") {
        assert!(
            !log.contains(&format!("env {key}=")),
            "host {key} leaked:\n{log}"
        );
    }
    c.pods.delete("victim", &DeleteParams::default()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_are_refused_to_modules_and_components() -> Result<()> {
    let c = Cluster::start(|_| {}).await?;
    c.push("hostile", sample("hostile", false).await?).await?;
    c.push("hostile-p2", sample("hostile", true).await?).await?;
    // Something to reach on the host: a TCP listener and a UDP socket on
    // the same loopback port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let udp = tokio::net::UdpSocket::bind(addr).await?;
    let target = addr.to_string();
    c.run("net-p1", "hostile:v1", &["net", &target], None)
        .await?;
    c.run("net-p2", "hostile-p2:v1", &["net", &target], None)
        .await?;
    for pod in ["net-p1", "net-p2"] {
        let t = c.terminated(pod).await?;
        let log = c.log(pod).await?;
        eprintln!("{pod}:\n{log}");
        all_denied(&log, "net", &t);
        // A component has the calls and is refused them by the node's
        // policy; a module has no call that makes a socket.
        let why = if pod == "net-p2" {
            "Permission denied"
        } else {
            "not supported"
        };
        assert!(
            log.lines().any(
                |l| l.starts_with(&format!("denied tcp connect {target}: ")) && l.contains(why)
            ),
            "{pod}: refused with {why:?}:\n{log}"
        );
        for attempt in [
            format!("tcp connect {target}"),
            format!("udp send {target}"),
            "tcp listen 0.0.0.0:0".into(),
            "udp bind 0.0.0.0:0".into(),
            "dns localhost".into(),
        ] {
            assert!(
                log.lines()
                    .any(|l| l.starts_with(&format!("denied {attempt}:"))),
                "{pod}: {attempt} was tried and denied:\n{log}"
            );
        }
    }
    // Nothing arrived on the host.
    let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(accepted.is_err(), "a guest connected: {accepted:?}");
    let mut buf = [0u8; 64];
    let received = tokio::time::timeout(Duration::from_millis(200), udp.recv_from(&mut buf)).await;
    assert!(received.is_err(), "a guest sent a datagram: {received:?}");
    Ok(())
}

/// Grows its memory 1 MiB at a time for as long as it is allowed to.
const MEMORY_BOMB: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))))
"#;

/// Grows a table 100 000 elements at a time; exits 3 if the table stops
/// growing without the guest being stopped.
const TABLE_BOMB: &str = r#"
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (table $t 1 funcref)
  (func (export "_start")
    (loop $l (br_if $l (i32.ne (table.grow $t (ref.null func) (i32.const 100000)) (i32.const -1))))
    (call $exit (i32.const 3))))
"#;

/// Asks for ten million table elements up front.
const HUGE_INITIAL_TABLE: &str = r#"
(module (memory (export "memory") 1) (table 10000000 funcref) (func (export "_start")))
"#;

/// Asks for the whole 4 GiB address space up front.
const HUGE_INITIAL_MEMORY: &str = r#"
(module (memory (export "memory") 65536) (func (export "_start")))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_table_bombs_are_oom_killed_and_the_node_stays_up() -> Result<()> {
    let c = Cluster::start(|_| {}).await?;
    c.push_wat("memory-bomb", MEMORY_BOMB).await?;
    c.push_wat("table-bomb", TABLE_BOMB).await?;
    c.push_wat("huge-memory", HUGE_INITIAL_MEMORY).await?;
    c.push_wat("huge-table", HUGE_INITIAL_TABLE).await?;
    c.run("memory-bomb", "memory-bomb:v1", &[], Some("16Mi"))
        .await?;
    c.run("table-bomb", "table-bomb:v1", &[], Some("4Mi"))
        .await?;
    c.run("huge-memory", "huge-memory:v1", &[], Some("64Mi"))
        .await?;
    c.run("huge-table", "huge-table:v1", &[], Some("4Mi"))
        .await?;
    // Without a limit of its own a bomb still stops at the node's default
    // cap for a container.
    c.run("unlimited-bomb", "memory-bomb:v1", &[], None).await?;
    for pod in ["memory-bomb", "huge-memory", "unlimited-bomb"] {
        let t = c.terminated(pod).await?;
        assert_eq!(
            (t.reason.as_deref(), t.exit_code),
            (Some("OOMKilled"), 137),
            "{pod}: {t:?}"
        );
        let p = c.pods.get(pod).await?;
        assert_eq!(phase(&p), "Failed", "{pod}");
    }
    // A table stops growing at whichever comes first: the memory limit
    // (elements are charged at pointer size: OOMKilled) or the node's cap
    // on one table's elements (the grow fails as past a declared maximum,
    // the guest sees -1 and exits 3). Either way it is bounded.
    let t = c.terminated("table-bomb").await?;
    assert!(
        matches!(
            (t.reason.as_deref(), t.exit_code),
            (Some("OOMKilled"), 137) | (Some("Error"), 3)
        ),
        "table-bomb: {t:?}"
    );
    // A table too large to start with never runs.
    let (reason, message) = not_started("huge-table", &c).await?;
    eprintln!("huge initial table: {reason}: {message}");
    assert!(
        reason == "OOMKilled" || (reason == "CreateContainerError" && message.contains("table")),
        "{reason}: {message}"
    );
    c.still_fine("memory-bombs").await
}

/// Recurses forever in wasm frames.
const RECURSE: &str = r#"
(module
  (memory (export "memory") 1)
  (func $dive (param i32) (result i32)
    (i32.add (call $dive (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
  (func (export "_start") (drop (call $dive (i32.const 0)))))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_overflow_is_trapped_with_a_clear_reason() -> Result<()> {
    let c = Cluster::start(|_| {}).await?;
    c.push_wat("recurse", RECURSE).await?;
    c.push("hostile", sample("hostile", false).await?).await?;
    c.run("recurse", "recurse:v1", &[], None).await?;
    c.run("rust-stack", "hostile:v1", &["stack"], None).await?;
    for pod in ["recurse", "rust-stack"] {
        let t = c.terminated(pod).await?;
        assert_eq!(
            (t.reason.as_deref(), t.exit_code),
            (Some("Error"), 1),
            "{pod}: {t:?}"
        );
        let message = t.message.unwrap_or_default();
        assert!(
            message.contains("call stack exhausted"),
            "{pod}: the message says why: {message:?}"
        );
    }
    assert!(c.log("rust-stack").await?.contains("stack: diving"));
    c.still_fine("stack-overflow").await
}

/// A loop without a single host call.
const SPIN: &str = r#"
(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_loops_share_the_node_and_stop_when_deleted() -> Result<()> {
    let c = Cluster::start(|_| {}).await?;
    c.push_wat("spin", SPIN).await?;
    // More busy loops than the test's runtime has worker threads: without
    // epoch interruption they would hold every thread for good.
    for i in 0..3 {
        c.run(&format!("spin-{i}"), "spin:v1", &[], None).await?;
    }
    for i in 0..3 {
        c.running(&format!("spin-{i}")).await?;
    }
    // Others still get to run while they spin.
    c.still_fine("busy-loops-running").await?;
    // Deleting a spinning pod stops its guest: the pod goes away.
    for i in 0..3 {
        c.pods
            .delete(&format!("spin-{i}"), &DeleteParams::default())
            .await?;
    }
    for i in 0..3 {
        let name = format!("spin-{i}");
        wait_for(&format!("{name} to be gone"), POD_TIMEOUT, async || {
            Ok(c.pods.get_opt(&name).await?.is_none().then_some(()))
        })
        .await?;
    }
    c.still_fine("busy-loops-deleted").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_loop_is_stopped_at_its_active_deadline() -> Result<()> {
    let c = Cluster::start(|_| {}).await?;
    c.push_wat("spin", SPIN).await?;
    // restartPolicy Always: only the deadline can end it.
    c.create(
        "deadline",
        json!({
            "restartPolicy": "Always",
            "activeDeadlineSeconds": 2,
            "containers": [{ "name": "main", "image": "spin:v1" }],
        }),
    )
    .await?;
    let pod = wait_for("deadline to fail", POD_TIMEOUT, async || {
        let pod = c.pods.get("deadline").await?;
        // Failed comes first; the stopped container's state follows.
        let stopped = first_state(&pod).is_some_and(|s| s.terminated.is_some());
        Ok((phase(&pod) == "Failed" && stopped).then_some(pod))
    })
    .await?;
    let status = pod.status.clone().unwrap_or_default();
    assert_eq!(
        status.reason.as_deref(),
        Some("DeadlineExceeded"),
        "{status:?}"
    );
    assert_eq!(
        status.message.as_deref(),
        Some("Pod was active on the node longer than the specified deadline")
    );
    let t = first_state(&pod)
        .and_then(|s| s.terminated)
        .context("the container was stopped")?;
    let restarts = status
        .container_statuses
        .as_ref()
        .and_then(|c| c.first())
        .map(|c| c.restart_count);
    eprintln!("deadline: {t:?}, restarts {restarts:?}");
    assert_eq!(restarts, Some(0), "stopped for good, not restarted");
    c.still_fine("deadline").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clocks_and_randomness_work() -> Result<()> {
    let c = Cluster::start(|_| {}).await?;
    c.push("hostile", sample("hostile", false).await?).await?;
    c.push("hostile-p2", sample("hostile", true).await?).await?;
    let mut draws = Vec::new();
    for (pod, image) in [("clock-p1", "hostile:v1"), ("clock-p2", "hostile-p2:v1")] {
        c.run(pod, image, &["clock"], None).await?;
        let t = c.terminated(pod).await?;
        let log = c.log(pod).await?;
        assert_eq!(
            (t.exit_code, t.reason.as_deref()),
            (0, Some("Completed")),
            "{log}"
        );
        assert!(log.contains("clock: ok"), "{log}");
        let wall: i128 = log
            .lines()
            .find_map(|l| l.strip_prefix("wall "))
            .and_then(|n| n.parse().ok())
            .context("the wall clock line")?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as i128;
        // The guest read the clock within the last few minutes: the host's.
        assert!(
            (now - wall).abs() < 300 * 1_000_000_000,
            "guest wall clock {wall} vs host {now}"
        );
        draws.extend(
            log.lines()
                .filter_map(|l| l.strip_prefix("random "))
                .map(String::from),
        );
    }
    assert_eq!(draws.len(), 4, "{draws:?}");
    let distinct: std::collections::BTreeSet<_> = draws.iter().collect();
    assert_eq!(distinct.len(), 4, "every draw differs: {draws:?}");
    Ok(())
}

/// The size of every file under `dir`, recursively.
fn files_under(dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            out.extend(files_under(&entry.path())?);
        } else {
            out.push((entry.path(), meta.len()));
        }
    }
    Ok(out)
}

/// The log cap the flood runs under.
const LOG_CAP: u64 = 256 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_flood_stays_bounded_on_disk() -> Result<()> {
    let c = Cluster::start(|config| config.max_log_bytes = LOG_CAP).await?;
    c.push("flood", sample("flood", false).await?).await?;
    // Long lines (64 MiB), and the shortest lines there are (4 MiB of
    // `x\n`: each costs a timestamped record on disk).
    let long = c.run("flood-long", "flood:v1", &["67108864"], None).await?;
    let short = c
        .run("flood-short", "flood:v1", &["4194304", "2"], None)
        .await?;
    for (pod, written) in [(&long, 67_108_864u64), (&short, 4_194_304)] {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let t = c.terminated(&name).await?;
        assert_eq!(
            (t.exit_code, t.reason.as_deref()),
            (0, Some("Completed")),
            "{name}: {t:?}"
        );
        let dir = c
            .kubelet_dir()
            .join("pods")
            .join(pod.metadata.uid.as_deref().unwrap_or_default())
            .join("main");
        let files = files_under(&dir)?;
        let total: u64 = files.iter().map(|(_, n)| n).sum();
        eprintln!("{name}: {files:?}, {total} bytes on disk for {written} written");
        // The current file and one rotated file, each at most the cap plus
        // one write batch (64 KiB of output, which for one-byte lines is
        // about 21 times as much on disk as each line carries a timestamp).
        let bound = 2 * (LOG_CAP + 21 * (64 << 10) + (64 << 10));
        assert!(files.len() <= 2, "{name}: {files:?}");
        assert!(total <= bound, "{name}: {total} bytes on disk > {bound}");
        // The end of the flood is what is kept.
        let log = c.log(&name).await?;
        assert!(
            log.ends_with(&format!("flood: done, wrote {written} bytes\n")),
            "{name}: …{}",
            &log[log.len().saturating_sub(200)..]
        );
    }
    c.still_fine("log-flood").await
}

/// The reason and message of a container that did not start normally: a
/// waiting reason other than `ContainerCreating`, or how it terminated.
async fn not_started(name: &str, c: &Cluster) -> Result<(String, String)> {
    wait_for(&format!("{name} to be refused"), POD_TIMEOUT, async || {
        let pod = c.pods.get(name).await?;
        Ok(match first_state(&pod) {
            Some(s)
                if s.waiting
                    .as_ref()
                    .is_some_and(|w| w.reason.as_deref() != Some("ContainerCreating")) =>
            {
                let w = s.waiting.unwrap_or_default();
                Some((w.reason.unwrap_or_default(), w.message.unwrap_or_default()))
            }
            Some(s) if s.terminated.is_some() => {
                let t = s.terminated.unwrap_or_default();
                Some((t.reason.unwrap_or_default(), t.message.unwrap_or_default()))
            }
            _ => None,
        })
    })
    .await
}

/// A module declaring a shared memory: wasmtime's shared memories are not
/// charged to the store's limiter, so the node must refuse them.
const SHARED_MEMORY: &str = r#"
(module (memory (export "memory") 1 65536 shared) (func (export "_start")))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_memory_that_would_escape_the_limit_is_refused() -> Result<()> {
    let c = Cluster::start(|_| {}).await?;
    c.push_wat("shared", SHARED_MEMORY).await?;
    c.run("shared", "shared:v1", &[], Some("16Mi")).await?;
    let (reason, message) = not_started("shared", &c).await?;
    eprintln!("shared memory: {reason}: {message}");
    if reason == "Completed" {
        bail!("a module with a shared memory ran: {message}");
    }
    assert_eq!(reason, "CreateContainerError", "{message}");
    assert!(message.contains("shared memories"), "{reason}: {message}");
    c.still_fine("shared-memory").await
}
