//! `wasmkube up` / `down` / `status`: the all-in-one server in the
//! background, for a laptop.
//!
//! `up` starts `wasmkube server` as a detached process (its own process
//! group, so the terminal's Ctrl-C does not reach it) with its output in
//! `DATA_DIR/wasmkube.log` and its pid in `DATA_DIR/wasmkube.pid`, waits
//! until it says it is ready and prints how to point kubectl at it. `down`
//! sends it SIGTERM and waits until it is gone. `status` summarises nodes
//! and pods.

use std::fs::OpenOptions;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::ListParams;

/// How long `up` waits for the server to say it is ready. The first start
/// creates certificates and compiles nothing heavy; a slow machine still
/// fits comfortably.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `down` waits for a graceful stop (the server's own grace is 30 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(40);
/// What `wasmkube server` prints once the API answers and its node is Ready.
const READY_LINE: &str = "wasmkube is ready";

pub(crate) const UP_EXAMPLES: &str = "Examples:\n  \
    wasmkube up\n  \
    export KUBECONFIG=~/.wasmkube/kubeconfig\n  \
    kubectl get nodes\n  \
    wasmkube up --data-dir /tmp/wk -- --port 7443 --proxy-port 8081\n  \
    wasmkube down";

pub(crate) const DOWN_EXAMPLES: &str = "Examples:\n  \
    wasmkube down\n  \
    wasmkube down --data-dir /tmp/wk      # the server of `wasmkube up --data-dir /tmp/wk`\n\n\
    The data directory (certificates, store, modules) is kept: `wasmkube up` starts the\n\
    same cluster again. Remove the directory to start afresh.";

pub(crate) const STATUS_EXAMPLES: &str = "Examples:\n  \
    wasmkube status\n  \
    wasmkube status --kubeconfig ~/.kube/config --context wasmkube\n\n\
    Without --kubeconfig it uses KUBECONFIG, else the server `wasmkube up` started, else\n\
    ~/.kube/config. For more detail: kubectl get pods -A; kubectl describe pod NAME";

/// `wasmkube up`.
#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    /// Data directory of the server [default: ~/.wasmkube].
    #[arg(long, env = "WASMKUBE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Further `wasmkube server` flags, after `--` (see `wasmkube server --help`).
    #[arg(last = true, value_name = "SERVER FLAGS")]
    pub server_args: Vec<String>,
}

/// `wasmkube down`.
#[derive(Debug, clap::Args)]
pub(crate) struct DownArgs {
    /// Data directory of the server [default: ~/.wasmkube].
    #[arg(long, env = "WASMKUBE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `wasmkube status`.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// Data directory of a server started by `wasmkube up` [default: ~/.wasmkube].
    #[arg(long, env = "WASMKUBE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    #[command(flatten)]
    pub client: crate::ClientArgs,
}

/// The files `up` keeps in the data directory.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub data_dir: PathBuf,
    pub pid: PathBuf,
    pub log: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Paths {
    pub fn new(data_dir: Option<PathBuf>) -> anyhow::Result<Paths> {
        let data_dir = crate::server::data_dir(data_dir)?;
        Ok(Paths {
            pid: data_dir.join("wasmkube.pid"),
            log: data_dir.join("wasmkube.log"),
            kubeconfig: data_dir.join("kubeconfig"),
            data_dir,
        })
    }

    /// The pid of the server `up` started, if it still runs.
    pub fn running(&self) -> Option<u32> {
        let text = std::fs::read_to_string(&self.pid).ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        is_our_server(pid).then_some(pid)
    }
}

/// Whether `pid` is a live `wasmkube server` (not a recycled pid now used
/// by something else).
fn is_our_server(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let is_wasmkube = args
        .first()
        .is_some_and(|a| Path::new(std::str::from_utf8(a).unwrap_or("")).ends_with("wasmkube"));
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false);
    is_wasmkube && !zombie && args.get(1).is_some_and(|a| *a == b"server")
}

/// Writes `bytes` to `path` as a whole (a temporary file renamed over it),
/// readable by the owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("writing {}", path.display()))
}

/// The line that makes kubectl use this cluster.
fn export_line(kubeconfig: &Path) -> String {
    format!("export KUBECONFIG={}", kubeconfig.display())
}

pub(crate) fn up(args: UpArgs) -> anyhow::Result<()> {
    let paths = Paths::new(args.data_dir)?;
    if args
        .server_args
        .iter()
        .any(|a| a == "--data-dir" || a.starts_with("--data-dir="))
    {
        bail!("give the data directory to `wasmkube up --data-dir DIR`, not after `--`");
    }
    // Flags are checked here, so a typo fails now and not in the log.
    let mut check = vec!["wasmkube".to_string(), "server".to_string()];
    check.extend(args.server_args.iter().cloned());
    if let Err(e) = <crate::Cli as clap::Parser>::try_parse_from(&check) {
        bail!("invalid server flags after `--`:\n{e}");
    }
    if let Some(pid) = paths.running() {
        println!("wasmkube is already running (pid {pid})");
        print_how_to_use(&paths);
        return Ok(());
    }
    {
        use std::os::unix::fs::DirBuilderExt as _;
        // Private, as the server makes it: it holds keys and tokens.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&paths.data_dir)
            .with_context(|| format!("creating {}", paths.data_dir.display()))?;
    }
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.log)
        .with_context(|| format!("opening {}", paths.log.display()))?;
    let start = log.seek(SeekFrom::End(0))?;
    writeln!(
        log,
        "--- wasmkube up at {} ---",
        jiff::Timestamp::now().round(jiff::Unit::Second)?
    )?;
    let exe = std::env::current_exe().context("finding the wasmkube executable")?;
    let mut command = Command::new(exe);
    command
        .arg("server")
        .arg("--data-dir")
        .arg(&paths.data_dir)
        .args(&args.server_args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    {
        use std::os::unix::process::CommandExt as _;
        // Its own process group: Ctrl-C in this terminal stays here.
        command.process_group(0);
    }
    let mut child = command.spawn().context("starting wasmkube server")?;
    let pid = child.id();
    write_private(&paths.pid, format!("{pid}\n").as_bytes())?;

    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    let line = crate::progress::Line::new();
    loop {
        let since_start = read_from(&paths.log, start)?;
        if since_start.contains(READY_LINE) {
            break;
        }
        line.spin(&format!(
            "starting wasmkube (pid {pid}): {}",
            startup_step(&since_start)
        ));
        if let Some(status) = child.try_wait()? {
            let _ = std::fs::remove_file(&paths.pid);
            line.clear();
            bail!(
                "wasmkube server exited ({status}) before it was ready; its last lines ({}):\n{}{}",
                paths.log.display(),
                tail(&since_start, 15),
                startup_hint(&since_start)
            );
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "wasmkube server (pid {pid}) is not ready after {}s; it keeps running — see {} or stop it with `wasmkube down`",
                READY_TIMEOUT.as_secs(),
                paths.log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    line.clear();
    println!(
        "wasmkube is running (pid {pid}, ready in {}); logs: {}",
        crate::progress::elapsed_text(line.elapsed()),
        paths.log.display()
    );
    print_how_to_use(&paths);
    Ok(())
}

/// What to do about a server that failed to start, when its log says why.
fn startup_hint(log: &str) -> &'static str {
    if log.contains("Address already in use") || log.contains("address already in use") {
        "\nhint: another process (another wasmkube?) holds one of its ports: stop it, \
         or choose other ports: `wasmkube up -- --port 7443 --kubelet-port 10251 --proxy-port 0`"
    } else {
        ""
    }
}

/// What the starting server is doing, from what it has logged so far.
fn startup_step(log: &str) -> &'static str {
    // `wasmkube server` prints `API server: URL` once it listens.
    if log.contains("API server: ") {
        "API server up, waiting for the node to be Ready"
    } else {
        "starting the API server"
    }
}

fn print_how_to_use(paths: &Paths) {
    println!("kubeconfig: {}", paths.kubeconfig.display());
    if let Some(server) = kubeconfig_server(&paths.kubeconfig) {
        println!(
            "dashboard:  {server}/ui/ (log in with the kubeconfig's token: kubectl config view --raw -o jsonpath='{{.users[0].user.token}}')"
        );
    }
    println!();
    println!("  {}", export_line(&paths.kubeconfig));
    println!("  kubectl get nodes");
    println!();
    println!("Stop it with: wasmkube down");
}

/// The API server's URL in a kubeconfig written by the server.
fn kubeconfig_server(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
    doc["clusters"][0]["cluster"]["server"]
        .as_str()
        .map(|s| s.trim_end_matches('/').to_string())
}

/// The log from byte `offset` on (lossy: the server writes UTF-8 anyway).
fn read_from(path: &Path, offset: u64) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(crate) fn down(args: DownArgs) -> anyhow::Result<()> {
    let paths = Paths::new(args.data_dir)?;
    let Some(pid) = paths.running() else {
        let _ = std::fs::remove_file(&paths.pid);
        println!(
            "wasmkube is not running (no server started by `wasmkube up` in {})",
            paths.data_dir.display()
        );
        return Ok(());
    };
    signal(pid, "TERM")?;
    let deadline = std::time::Instant::now() + STOP_TIMEOUT;
    while is_our_server(pid) {
        if std::time::Instant::now() > deadline {
            bail!(
                "wasmkube server (pid {pid}) is still stopping after {}s; see {}",
                STOP_TIMEOUT.as_secs(),
                paths.log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(&paths.pid);
    println!("wasmkube stopped (pid {pid})");
    Ok(())
}

/// Sends a signal with kill(1): the one place the CLI signals a process,
/// not worth unsafe code.
fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{name} {pid} failed ({status})");
    }
    Ok(())
}

/// Runs `wasmkube status`; errors reaching the cluster say what to do next.
pub(crate) async fn status(args: StatusArgs) -> anyhow::Result<()> {
    summarise(args).await.map_err(crate::modules::with_advice)
}

async fn summarise(args: StatusArgs) -> anyhow::Result<()> {
    let paths = Paths::new(args.data_dir)?;
    let running = paths.running();
    let source = crate::kubeconfig::laptop_source(args.client.kubeconfig.as_deref(), &paths);
    let client = crate::kubeconfig::client_from(&source, args.client.context.as_deref()).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client);
    // What to do when this fails is added by `with_advice`.
    let unreachable = || {
        format!(
            "cannot list the cluster's nodes through {}",
            source_description(&source)
        )
    };
    let nodes = nodes
        .list(&ListParams::default())
        .await
        .map_err(crate::modules::api_error)
        .with_context(unreachable)?;
    let pods = pods
        .list(&ListParams::default())
        .await
        .context("listing pods")?;
    match running {
        Some(pid) => println!(
            "Server:  running (pid {pid}, started by `wasmkube up`; logs {})",
            paths.log.display()
        ),
        None => println!("Server:  reachable through {}", source_description(&source)),
    }
    print!("{}", render_status(&nodes.items, &pods.items));
    Ok(())
}

fn source_description(source: &crate::kubeconfig::Source) -> String {
    match source {
        crate::kubeconfig::Source::Explicit(p) => p.display().to_string(),
        crate::kubeconfig::Source::Merged(ps) => ps
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":"),
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The phase kubectl shows, with a waiting reason taking precedence
/// (`CrashLoopBackOff`, `CreateContainerError`, …).
fn pod_state(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    if pod.metadata.deletion_timestamp.is_some() {
        return "Terminating".into();
    }
    let waiting = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| {
            cs.iter().find_map(|c| {
                c.state
                    .as_ref()
                    .and_then(|st| st.waiting.as_ref())
                    .and_then(|w| w.reason.clone())
            })
        });
    waiting
        .or_else(|| status.and_then(|s| s.phase.clone()))
        .unwrap_or_else(|| "Unknown".into())
}

/// The summary `status` prints: each node with its readiness and pod count,
/// pods counted by state, and the pods that are neither running nor done.
fn render_status(nodes: &[Node], pods: &[Pod]) -> String {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;
    let mut out = String::new();
    let ready = nodes.iter().filter(|n| node_ready(n)).count();
    let _ = writeln!(out, "Nodes:   {ready}/{} Ready", nodes.len());
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for p in pods {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            *per_node.entry(n).or_default() += 1;
        }
    }
    for n in nodes {
        let name = n.metadata.name.as_deref().unwrap_or("");
        let _ = writeln!(
            out,
            "  {name:<24} {:<9} {} pods",
            if node_ready(n) { "Ready" } else { "NotReady" },
            per_node.get(name).copied().unwrap_or(0)
        );
    }
    let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
    for p in pods {
        *by_state.entry(pod_state(p)).or_default() += 1;
    }
    let counts: Vec<String> = by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let _ = writeln!(
        out,
        "Pods:    {}{}",
        pods.len(),
        if counts.is_empty() {
            String::new()
        } else {
            format!(" ({})", counts.join(", "))
        }
    );
    for p in pods {
        let state = pod_state(p);
        if matches!(state.as_str(), "Running" | "Succeeded") {
            continue;
        }
        let _ = writeln!(
            out,
            "  {}/{}: {state}",
            p.metadata.namespace.as_deref().unwrap_or(""),
            p.metadata.name.as_deref().unwrap_or("")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, phase: &str, waiting: Option<&str>) -> Pod {
        let mut v = serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c"}]},
            "status": {"phase": phase},
        });
        if let Some(reason) = waiting {
            v["status"]["containerStatuses"] = serde_json::json!([{
                "name": "c", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason}}
            }]);
        }
        serde_json::from_value(v).unwrap_or_default()
    }

    fn node(name: &str, ready: bool) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap_or_default()
    }

    #[test]
    fn status_counts_nodes_and_pods_and_names_the_stuck_ones() {
        let text = render_status(
            &[node("laptop", true), node("edge", false)],
            &[
                pod("a", "laptop", "Running", None),
                pod("b", "laptop", "Running", None),
                pod("c", "edge", "Pending", Some("CreateContainerError")),
                pod("d", "laptop", "Succeeded", None),
            ],
        );
        assert!(text.contains("Nodes:   1/2 Ready"), "{text}");
        assert!(
            text.contains("laptop                   Ready     3 pods"),
            "{text}"
        );
        assert!(
            text.contains("edge                     NotReady  1 pods"),
            "{text}"
        );
        assert!(
            text.contains("Pods:    4 (1 CreateContainerError, 2 Running, 1 Succeeded)"),
            "{text}"
        );
        assert!(text.contains("default/c: CreateContainerError"), "{text}");
        assert!(!text.contains("default/a:"), "{text}");
    }

    #[test]
    fn a_pid_that_is_not_a_wasmkube_server_is_not_running() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let paths = Paths::new(Some(dir.path().to_path_buf()))?;
        assert_eq!(paths.running(), None, "no pidfile");
        // This test process is not `wasmkube server`.
        std::fs::write(&paths.pid, format!("{}\n", std::process::id()))?;
        assert_eq!(paths.running(), None);
        std::fs::write(&paths.pid, "not a pid")?;
        assert_eq!(paths.running(), None);
        Ok(())
    }
}
