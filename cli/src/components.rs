//! `wasmkube scheduler` and `wasmkube controller-manager`: the control-plane
//! components of `wasmkube server` as processes of their own, for clusters
//! that outgrow one machine (or want to restart one part without the rest),
//! like Kubernetes' kube-scheduler and kube-controller-manager.
//!
//! Each runs the same crate's `run` as the all-in-one, under the same
//! leader-election Lease, so any number of them (and all-in-one servers)
//! may run at once: one leads, the others stand by. The server writes a
//! kubeconfig for each beside the admin one (`DATA_DIR/scheduler.kubeconfig`,
//! `DATA_DIR/controller-manager.kubeconfig`, like kubeadm's `scheduler.conf`
//! and `controller-manager.conf`) holding the token of the component's own
//! user, so RBAC sees the same `system:kube-scheduler` and
//! `system:kube-controller-manager` it sees in the all-in-one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio_util::sync::CancellationToken;
use wasmkube_client::leader_election::{self, LeaderConfig};

use crate::flags;

pub const SCHEDULER_USER: &str = "system:kube-scheduler";
pub const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";
/// The Leases (in `kube-system`) the all-in-one uses too: a separate
/// process and a server both running a component elect one of them.
pub const SCHEDULER_LEASE: &str = "wasmkube-scheduler";
pub const CONTROLLER_MANAGER_LEASE: &str = "wasmkube-controller-manager";

/// The component kubeconfigs the server writes into its data directory.
pub const SCHEDULER_KUBECONFIG: &str = "scheduler.kubeconfig";
pub const CONTROLLER_MANAGER_KUBECONFIG: &str = "controller-manager.kubeconfig";

pub const SCHEDULER_EXAMPLES: &str = "Examples:\n  \
    wasmkube server --disable-scheduler\n  \
    wasmkube scheduler --kubeconfig ~/.wasmkube/scheduler.kubeconfig\n  \
    wasmkube scheduler --kubeconfig /etc/wasmkube/scheduler.kubeconfig --identity sched-a\n  \
    wasmkube scheduler --kubeconfig ~/.wasmkube/scheduler.kubeconfig --leader-elect=false";

pub const CONTROLLER_MANAGER_EXAMPLES: &str = "Examples:\n  \
    wasmkube server --disable-controller-manager\n  \
    wasmkube controller-manager --kubeconfig ~/.wasmkube/controller-manager.kubeconfig\n  \
    wasmkube controller-manager --kubeconfig cm.kubeconfig --node-monitor-grace-period 2m";

/// Flags both components take.
#[derive(Debug, Clone, Args)]
pub struct ComponentArgs {
    /// Kubeconfig of the component's user (the server writes
    /// DATA_DIR/scheduler.kubeconfig and DATA_DIR/controller-manager.kubeconfig)
    /// [default: KUBECONFIG, else ~/.kube/config].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use (default: its current-context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,

    /// Run only while holding the component's Lease in kube-system, so
    /// several copies (and all-in-one servers) run it once. `false` runs at
    /// once and unconditionally: only when no other copy runs.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub leader_elect: bool,

    /// Who this process is in leader election [default: HOSTNAME_<random>].
    /// A fixed identity lets a restarted process lead again at once instead
    /// of waiting for its previous incarnation's Lease to expire; two running
    /// processes must never share one.
    #[arg(long, value_name = "NAME")]
    pub identity: Option<String>,
}

/// `wasmkube scheduler`.
#[derive(Debug, Clone, Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    pub component: ComponentArgs,

    /// Share of the nodes, in percent, a scheduling cycle filters before it
    /// picks among those that fit (kube-scheduler's percentageOfNodesToScore).
    /// 0 adapts it to the cluster: every node below 100 nodes, else 50 % less
    /// 1 % per 125 nodes (at least 5 % and 100 nodes); 100 filters every node.
    #[arg(long, value_name = "PERCENT", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub percentage_of_nodes_to_score: u32,
}

/// `wasmkube controller-manager`.
#[derive(Debug, Clone, Args)]
pub struct ControllerManagerArgs {
    #[command(flatten)]
    pub component: ComponentArgs,

    /// How long a node may miss its heartbeats before it is marked
    /// NotReady/Unknown (as `wasmkube server`'s flag).
    #[arg(long, value_name = "DURATION", default_value = "40s", value_parser = flags::parse_positive_duration)]
    pub node_monitor_grace_period: Duration,

    /// How long pods without a toleration of their own stay bound to an
    /// unreachable or not-ready node before they are evicted.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub default_unreachable_toleration_seconds: u64,
}

/// `wasmkube server` flags choosing which components run in-process.
#[derive(Debug, Clone, Default, Args)]
pub struct ServerComponentArgs {
    /// Do not run the scheduler in this process (run `wasmkube scheduler`
    /// instead, with DATA_DIR/scheduler.kubeconfig).
    #[arg(long)]
    pub disable_scheduler: bool,

    /// Do not run the controllers in this process (run `wasmkube
    /// controller-manager` instead, with DATA_DIR/controller-manager.kubeconfig).
    #[arg(long)]
    pub disable_controller_manager: bool,
}

/// A kubeconfig for `user` authenticating with `token`.
fn component_kubeconfig(
    url: &str,
    ca_pem: &str,
    user: &str,
    token: &str,
) -> anyhow::Result<String> {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "wasmkube", "cluster": {"server": url, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "wasmkube", "user": user}}],
        "current-context": user,
        "preferences": {},
    });
    serde_yaml::to_string(&doc).context("writing a component kubeconfig")
}

/// Writes `yaml` to `path` with mode 0600 (it holds a token), replacing the
/// file atomically so a component starting meanwhile never reads half.
fn write_private(path: &Path, yaml: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("kubeconfig.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(yaml.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Writes `DATA_DIR/scheduler.kubeconfig` and
/// `DATA_DIR/controller-manager.kubeconfig` for the separate components.
/// Returns the paths written.
pub async fn write_component_kubeconfigs(
    running: &wasmkube_apiserver::Running,
    data_dir: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for (user, file) in [
        (SCHEDULER_USER, SCHEDULER_KUBECONFIG),
        (CONTROLLER_MANAGER_USER, CONTROLLER_MANAGER_KUBECONFIG),
    ] {
        // A server started with other component users writes none for them.
        let Some(token) = running.tokens.get(user) else {
            continue;
        };
        let yaml = component_kubeconfig(&running.url, &running.ca_pem, user, token)?;
        files.push((data_dir.join(file), yaml));
    }
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    tokio::task::spawn_blocking(move || {
        files
            .iter()
            .try_for_each(|(path, yaml)| write_private(path, yaml))
    })
    .await
    .context("writing component kubeconfigs")??;
    Ok(paths)
}

/// The leader-election identity of a separate component process.
fn identity(args: &ComponentArgs) -> String {
    args.identity
        .clone()
        .map(|i| i.trim().to_string())
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| leader_election::identity(&crate::server::hostname_or_default()))
}

/// Runs `work` until SIGINT/SIGTERM: under the Lease `lease` unless
/// `--leader-elect=false`.
async fn run_component<F, Fut, E>(
    name: &'static str,
    args: &ComponentArgs,
    lease: &str,
    identity: String,
    client: kube::Client,
    mut work: F,
) -> anyhow::Result<()>
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let shutdown = CancellationToken::new();
    crate::server::cancel_on_signals(shutdown.clone())?;
    println!("{name} started as {identity}");
    let result = if args.leader_elect {
        tracing::info!(component = name, %identity, lease, "waiting to lead");
        let config = LeaderConfig::new(lease, identity);
        leader_election::run_while_leader(client, config, shutdown.clone(), work)
            .await
            .map_err(anyhow::Error::from)
    } else {
        tracing::info!(component = name, "running without leader election");
        work(shutdown.clone())
            .await
            .map_err(|e| anyhow::anyhow!(e.into()))
    };
    match result {
        Ok(()) if shutdown.is_cancelled() => {
            tracing::info!(component = name, "stopped");
            Ok(())
        }
        // The work returned without being asked to: a process supervisor
        // should restart us.
        Ok(()) => anyhow::bail!("{name} stopped unexpectedly"),
        Err(e) => Err(e.context(format!("{name} failed"))),
    }
}

/// `wasmkube scheduler`.
pub async fn run_scheduler(args: SchedulerArgs) -> anyhow::Result<()> {
    let percentage_of_nodes_to_score = args.percentage_of_nodes_to_score;
    let args = args.component;
    let client = crate::kubeconfig::client(args.kubeconfig.as_deref(), args.context.as_deref())
        .await
        .context("the scheduler's kubeconfig")?;
    let identity = identity(&args);
    let config = wasmkube_scheduler::SchedulerConfig {
        instance: identity.clone(),
        percentage_of_nodes_to_score,
        ..Default::default()
    };
    let work_client = client.clone();
    run_component(
        "scheduler",
        &args,
        SCHEDULER_LEASE,
        identity,
        client,
        |led| wasmkube_scheduler::run(work_client.clone(), config.clone(), led),
    )
    .await
}

/// `wasmkube controller-manager`.
pub async fn run_controller_manager(args: ControllerManagerArgs) -> anyhow::Result<()> {
    let component = args.component;
    let client = crate::kubeconfig::client(
        component.kubeconfig.as_deref(),
        component.context.as_deref(),
    )
    .await
    .context("the controller manager's kubeconfig")?;
    let identity = identity(&component);
    let config = wasmkube_controllers::ControllersConfig {
        node_monitor_grace_period: args.node_monitor_grace_period,
        pod_eviction_timeout: Duration::from_secs(args.default_unreachable_toleration_seconds),
        ..Default::default()
    };
    let work_client = client.clone();
    run_component(
        "controller-manager",
        &component,
        CONTROLLER_MANAGER_LEASE,
        identity,
        client,
        |led| wasmkube_controllers::run(work_client.clone(), config.clone(), led),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_kubeconfigs_name_their_user_and_token() -> anyhow::Result<()> {
        let yaml = component_kubeconfig(
            "https://127.0.0.1:6443",
            "-----BEGIN CERTIFICATE-----\n",
            SCHEDULER_USER,
            "tok",
        )?;
        let doc: serde_yaml::Value = serde_yaml::from_str(&yaml)?;
        assert_eq!(doc["current-context"].as_str(), Some(SCHEDULER_USER));
        assert_eq!(doc["users"][0]["name"].as_str(), Some(SCHEDULER_USER));
        assert_eq!(doc["users"][0]["user"]["token"].as_str(), Some("tok"));
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://127.0.0.1:6443")
        );
        Ok(())
    }

    #[test]
    fn kubeconfigs_are_private_and_replaced_whole() -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(SCHEDULER_KUBECONFIG);
        write_private(&path, "a: 1\n")?;
        write_private(&path, "b: 2\n")?;
        assert_eq!(std::fs::read_to_string(&path)?, "b: 2\n");
        assert_eq!(
            std::fs::metadata(&path)?.permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read_dir(dir.path())?.count(),
            1,
            "no temp file left"
        );
        Ok(())
    }

    #[test]
    fn subcommands_and_server_flags_parse() -> anyhow::Result<()> {
        use clap::Parser as _;
        let cli = crate::Cli::try_parse_from([
            "wasmkube",
            "scheduler",
            "--kubeconfig",
            "/d/scheduler.kubeconfig",
            "--leader-elect=false",
            "--identity",
            "s1",
        ])?;
        let crate::Command::Scheduler(a) = cli.command else {
            anyhow::bail!("not scheduler");
        };
        assert!(!a.component.leader_elect);
        assert_eq!(a.component.identity.as_deref(), Some("s1"));
        assert_eq!(
            a.component.kubeconfig,
            Some(PathBuf::from("/d/scheduler.kubeconfig"))
        );
        let cli = crate::Cli::try_parse_from([
            "wasmkube",
            "controller-manager",
            "--node-monitor-grace-period",
            "2m",
        ])?;
        let crate::Command::ControllerManager(a) = cli.command else {
            anyhow::bail!("not controller-manager");
        };
        assert!(a.component.leader_elect, "leader election is on by default");
        assert_eq!(a.node_monitor_grace_period, Duration::from_secs(120));
        let cli = crate::Cli::try_parse_from([
            "wasmkube",
            "server",
            "--disable-scheduler",
            "--disable-controller-manager",
        ])?;
        let crate::Command::Server(a) = cli.command else {
            anyhow::bail!("not server");
        };
        let o = crate::server::Options::from(a);
        assert!(o.components.disable_scheduler && o.components.disable_controller_manager);
        let crate::Command::Server(a) = crate::Cli::try_parse_from(["wasmkube", "server"])?.command
        else {
            anyhow::bail!("not server");
        };
        let o = crate::server::Options::from(a);
        assert!(!o.components.disable_scheduler && !o.components.disable_controller_manager);
        assert!(
            crate::Cli::try_parse_from(["wasmkube", "scheduler", "--leader-elect", "maybe"])
                .is_err()
        );
        Ok(())
    }

    #[test]
    fn explicit_identities_are_kept_and_default_ones_are_unique() {
        let mut args = ComponentArgs {
            kubeconfig: None,
            context: None,
            leader_elect: true,
            identity: Some(" sched-a ".into()),
        };
        assert_eq!(identity(&args), "sched-a");
        args.identity = None;
        assert_ne!(identity(&args), identity(&args));
    }
}
