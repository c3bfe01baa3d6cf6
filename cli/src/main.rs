//! `wasmkube`: the one binary. It parses flags and calls the crates' `run`
//! functions; all behaviour lives in the library crates.

mod agent;
mod api_limit_args;
mod components;
mod flags;
mod kubeconfig;
mod kubeconfig_cmd;
mod kubelet_args;
mod modules;
mod progress;
mod push;
mod run;
mod secrets_key;
mod server;
mod token;
mod up;

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// A Kubernetes-style orchestrator whose pods are WebAssembly modules.
///
/// Start a single-machine cluster with `wasmkube server`, then use kubectl
/// with the kubeconfig it prints. Pods' container images name wasm modules:
/// upload them with `wasmkube push` and reference them as `NAME:TAG`.
#[derive(Debug, Parser)]
#[command(name = "wasmkube", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Log filter, e.g. `info`, `debug`, `wasmkube_scheduler=debug,info`.
    /// Defaults to `RUST_LOG`, else `info` for `server`, `agent`, `scheduler`
    /// and `controller-manager` and `warn` for the other commands.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,

    /// Log line format (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an all-in-one cluster: API server, scheduler, controllers and a
    /// node (kubelet) in one process.
    ///
    /// On first start it creates a CA, serving certificates, tokens and an
    /// admin kubeconfig in the data directory, and reuses them afterwards.
    /// It prints the kubeconfig path, then `wasmkube is ready` once the API
    /// answers and the node has reported Ready. Ctrl-C or SIGTERM stops it
    /// gracefully (exit status 0).
    #[command(after_long_help = "Examples:\n  \
        wasmkube server\n  \
        wasmkube server --data-dir /var/lib/wasmkube --bind-address 0.0.0.0 --tls-san edge.example.com\n  \
        wasmkube server --write-kubeconfig ~/.kube/config --node-name laptop\n\n\
        Then:\n  \
        export KUBECONFIG=~/.wasmkube/kubeconfig\n  \
        kubectl get nodes")]
    Server(Box<ServerArgs>),

    /// Upload a wasm module to the cluster's module store as NAME:TAG, or
    /// to an OCI registry as REGISTRY/NAME:TAG.
    ///
    /// Pods then run it with `image: NAME:TAG` (or the registry reference).
    /// The cluster is found like kubectl finds it: --kubeconfig, else
    /// KUBECONFIG, else ~/.kube/config. The server validates the module; the
    /// digest it stored is printed and checked against the file.
    ///
    /// A reference whose first part is a host (`localhost:5000/hello:v1`,
    /// `ghcr.io/team/hello:v1`) is pushed to that registry as a wasm OCI
    /// artifact (an `application/wasm` layer), over plain HTTP for loopback
    /// registries and HTTPS otherwise; the manifest digest is printed.
    #[command(after_long_help = "Examples:\n  \
        wasmkube push target/wasm32-wasip1/release/hello.wasm hello:v1\n  \
        kubectl run hello --image=hello:v1 --restart=Never\n  \
        wasmkube push hello.wasm 127.0.0.1:5000/hello:v1\n  \
        echo \"$TOKEN\" | wasmkube push hello.wasm registry.example.com/team/hello:v1 --username me --password-stdin")]
    Push(PushArgs),

    /// List the modules in the cluster's module store, or remove tags
    /// (`wasmkube modules rm NAME:TAG`).
    #[command(after_long_help = modules::EXAMPLES)]
    Modules(modules::ModulesArgs),

    /// Run a node that joins a cluster over the network (an edge device or
    /// another machine): the kubelet and the node proxy, no control plane.
    ///
    /// The first start exchanges the join token (`wasmkube token create`
    /// on the server) for the node's own client certificate, after checking
    /// the server's CA against the hash in the token; the credential is kept
    /// in DATA_DIR/agent/ and later starts need neither the token nor the
    /// network. Pods bound to the node keep running while the server is
    /// unreachable. Prints `agent NAME joined URL`, then
    /// `wasmkube agent is ready` once the Node reports Ready. Ctrl-C or
    /// SIGTERM stops it gracefully.
    #[command(after_long_help = agent::EXAMPLES)]
    Agent(agent::AgentArgs),

    /// Run the scheduler alone (kube-scheduler), for a server started with
    /// --disable-scheduler or several control-plane machines.
    ///
    /// Binds pending pods to nodes while holding the `wasmkube-scheduler`
    /// Lease in kube-system (the one the all-in-one server uses), so any
    /// number of copies run it once. Authenticates with the kubeconfig the
    /// server writes to DATA_DIR/scheduler.kubeconfig (user
    /// system:kube-scheduler). Ctrl-C or SIGTERM stops it gracefully and
    /// releases the Lease.
    #[command(after_long_help = components::SCHEDULER_EXAMPLES)]
    Scheduler(components::SchedulerArgs),

    /// Run the controllers alone (kube-controller-manager): Deployments,
    /// ReplicaSets, Jobs, Services' endpoints, node lifecycle, garbage
    /// collection and the rest, for a server started with
    /// --disable-controller-manager.
    ///
    /// Runs while holding the `wasmkube-controller-manager` Lease in
    /// kube-system. Authenticates with DATA_DIR/controller-manager.kubeconfig
    /// (user system:kube-controller-manager). Ctrl-C or SIGTERM stops it
    /// gracefully and releases the Lease.
    #[command(after_long_help = components::CONTROLLER_MANAGER_EXAMPLES)]
    ControllerManager(components::ControllerManagerArgs),

    /// Create, list and revoke the join tokens agents use to join
    /// (`wasmkube token create|list|revoke`). Needs the admin kubeconfig.
    #[command(after_long_help = token::EXAMPLES)]
    Token(token::TokenArgs),

    /// The keys that encrypt Secrets at rest: which are in use, rotate one,
    /// re-encrypt every Secret, drop an unused key
    /// (`wasmkube secrets [status|rewrite|rotate-key|remove-key]`).
    #[command(after_long_help = secrets_key::EXAMPLES)]
    Secrets(secrets_key::SecretsArgs),

    /// Start the all-in-one server in the background (logs and pid in the
    /// data directory) and print how to use it with kubectl.
    #[command(after_long_help = up::UP_EXAMPLES)]
    Up(up::UpArgs),

    /// Stop the server `wasmkube up` started.
    #[command(after_long_help = up::DOWN_EXAMPLES)]
    Down(up::DownArgs),

    /// Summarise the cluster: nodes, and pods by state (naming the ones that
    /// do not run).
    #[command(after_long_help = up::STATUS_EXAMPLES)]
    Status(up::StatusArgs),

    /// Push a module and run it: a Deployment (or a Job with --once, and a
    /// NodePort Service with --port); waits until it runs, prints where to
    /// reach it and follows its logs until Ctrl-C, which leaves it running
    /// (--rm removes it).
    #[command(after_long_help = run::EXAMPLES)]
    Run(run::RunArgs),

    /// Print the admin kubeconfig, or add it to ~/.kube/config as context
    /// `wasmkube` (--merge).
    #[command(after_long_help = kubeconfig_cmd::EXAMPLES)]
    Kubeconfig(kubeconfig_cmd::KubeconfigArgs),

    /// Print a shell completion script.
    #[command(after_long_help = "Examples:\n  \
        source <(wasmkube completion bash)\n  \
        wasmkube completion zsh > \"${fpath[1]}/_wasmkube\"\n  \
        wasmkube completion fish > ~/.config/fish/completions/wasmkube.fish")]
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },

    /// Print the wasmkube version.
    Version,
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// Directory for the store, certificates, tokens, kubeconfig and node
    /// data [default: ~/.wasmkube].
    #[arg(long, env = "WASMKUBE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Address the API server listens on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    bind_address: IpAddr,

    /// HTTPS port of the API server (0 picks a free one).
    #[arg(long, default_value_t = 6443)]
    port: u16,

    /// Also write the admin kubeconfig to this path (e.g. ~/.kube/config).
    #[arg(long, value_name = "PATH")]
    write_kubeconfig: Option<PathBuf>,

    /// Extra DNS name or IP for the serving certificate (repeatable), for
    /// clients that reach the server by another address.
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_sans: Vec<String>,

    /// Name of the built-in node (default: this machine's hostname).
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,

    /// Run only the control plane, without the built-in node.
    #[arg(long)]
    no_node: bool,

    /// Store objects in this etcd cluster instead of the embedded store
    /// (comma-separated client URLs, e.g. http://10.0.0.1:2379,http://10.0.0.2:2379).
    /// Several servers may share one etcd.
    #[arg(
        long,
        alias = "etcd-servers",
        value_delimiter = ',',
        value_name = "URL,..."
    )]
    etcd_endpoints: Vec<String>,

    /// Prefix of every key wasmkube writes in etcd.
    #[arg(
        long,
        default_value = "/wasmkube",
        value_name = "PREFIX",
        requires = "etcd_endpoints"
    )]
    etcd_prefix: String,

    /// CA bundle that signed etcd's serving certificates (https:// endpoints).
    #[arg(long, value_name = "FILE", requires = "etcd_endpoints")]
    etcd_cafile: Option<PathBuf>,

    /// Client certificate for etcd (with --etcd-keyfile).
    #[arg(long, value_name = "FILE", requires_all = ["etcd_cafile", "etcd_keyfile"])]
    etcd_certfile: Option<PathBuf>,

    /// Private key of --etcd-certfile.
    #[arg(long, value_name = "FILE", requires = "etcd_certfile")]
    etcd_keyfile: Option<PathBuf>,

    /// The key file that encrypts Secrets at rest (kube-apiserver's
    /// EncryptionConfiguration, aesgcm and identity providers) [default:
    /// DATA_DIR/pki/encryption-keys.yaml, created with a new key].
    #[arg(long, value_name = "FILE")]
    encryption_provider_config: Option<PathBuf>,

    /// How long a node may miss its heartbeats (Lease renewals and status
    /// updates) before it is marked NotReady/Unknown and tainted
    /// `node.kubernetes.io/unreachable` (Kubernetes'
    /// --node-monitor-grace-period).
    #[arg(long, value_name = "DURATION", default_value = "40s", value_parser = flags::parse_positive_duration)]
    node_monitor_grace_period: std::time::Duration,

    /// How long pods without a toleration of their own stay bound to an
    /// unreachable or not-ready node before they are evicted (Kubernetes'
    /// --default-unreachable-toleration-seconds). Raise it for edge nodes
    /// with flaky links.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    default_unreachable_toleration_seconds: u64,

    /// The issuer (`iss`) of ServiceAccount tokens (kube-apiserver's
    /// --service-account-issuer).
    #[arg(long, value_name = "URL", default_value = wasmkube_apiserver::serviceaccount::DEFAULT_ISSUER)]
    service_account_issuer: String,

    /// Audiences the API server accepts in ServiceAccount tokens
    /// (comma-separated; default: the issuer). Tokens requested without
    /// audiences get these.
    #[arg(long, value_delimiter = ',', value_name = "AUD,...")]
    api_audiences: Vec<String>,

    /// Longest lifetime of a requested ServiceAccount token; longer requests
    /// get this (kube-apiserver's --service-account-max-token-expiration).
    #[arg(long, value_name = "DURATION", default_value = "48h", value_parser = flags::parse_positive_duration)]
    service_account_max_token_expiration: std::time::Duration,

    /// Largest memory limit one pod may have (a quantity: 512Mi, 2Gi); a
    /// pod over it, or without a memory limit, is refused (403).
    #[arg(long, value_name = "QUANTITY", value_parser = wasmkube_apiserver::admission::parse_memory_flag)]
    max_pod_memory: Option<u64>,

    /// Largest CPU limit one pod may have (cores or millicores: 2, 500m); a
    /// pod over it, or without a CPU limit, is refused (403).
    #[arg(long, value_name = "QUANTITY", value_parser = wasmkube_apiserver::admission::parse_cpu_flag)]
    max_pod_cpu: Option<u64>,

    /// How often the store's old revision history is dropped
    /// (kube-apiserver's --etcd-compaction-interval; both backends).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = flags::parse_positive_duration)]
    etcd_compaction_interval: std::time::Duration,

    /// Revisions of history kept for watches resuming from an older
    /// resourceVersion; older ones get 410 Expired and the client relists.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(i64).range(1..))]
    compaction_keep_revisions: i64,

    /// Recent events of each resource the API server keeps in memory for
    /// watches that resume from an older resourceVersion (kube-apiserver's
    /// --default-watch-cache-size; none older than 150 s are kept). Older
    /// resumes replay from the store's history; one older than that too gets
    /// 410 Expired.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    default_watch_cache_size: u32,

    /// How long an Event is kept after its last update (kube-apiserver's
    /// --event-ttl); older ones are deleted, so a busy cluster's Events do
    /// not pile up in the store and in memory.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = flags::parse_positive_duration)]
    event_ttl: std::time::Duration,

    /// Settings of the built-in node (ignored with --no-node).
    #[command(flatten)]
    kubelet: kubelet_args::KubeletArgs,

    /// The API server's request limits and audit log.
    #[command(flatten)]
    api_limits: api_limit_args::ApiLimitArgs,

    /// Components run as separate processes instead (--disable-scheduler,
    /// --disable-controller-manager).
    #[command(flatten)]
    components: components::ServerComponentArgs,
}

impl ServerArgs {
    /// The storage backend these flags ask for.
    fn store(&self) -> wasmkube_apiserver::StoreBackend {
        use wasmkube_apiserver::storage::etcd::{EtcdOptions, EtcdTls};
        if self.etcd_endpoints.is_empty() {
            return wasmkube_apiserver::StoreBackend::Embedded;
        }
        wasmkube_apiserver::StoreBackend::Etcd(EtcdOptions {
            endpoints: self.etcd_endpoints.clone(),
            prefix: self.etcd_prefix.clone(),
            tls: self.etcd_cafile.clone().map(|ca_file| EtcdTls {
                ca_file,
                cert_file: self.etcd_certfile.clone(),
                key_file: self.etcd_keyfile.clone(),
            }),
            ..EtcdOptions::default()
        })
    }
}

#[derive(Debug, Args)]
struct ClientArgs {
    /// Path to the kubeconfig file (default: KUBECONFIG, else ~/.kube/config).
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use (default: its current-context).
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
}

#[derive(Debug, Args)]
struct PushArgs {
    /// The compiled module (a WASI preview1 command, `.wasm`).
    file: PathBuf,

    /// Name and tag to store it under, e.g. `hello:v1`, or a registry
    /// reference, e.g. `127.0.0.1:5000/hello:v1`.
    #[arg(value_name = "NAME:TAG")]
    reference: String,

    #[command(flatten)]
    client: ClientArgs,

    #[command(flatten)]
    registry: push::RegistryArgs,
}

/// The log filter when neither `--log-level` nor `RUST_LOG` says: the
/// long-running components log at info; the one-shot client commands
/// report failures in their own error line, so the client library's
/// retries and connection errors would only repeat it above.
fn default_filter(command: &Command) -> &'static str {
    match command {
        Command::Server(_)
        | Command::Agent(_)
        | Command::Scheduler(_)
        | Command::ControllerManager(_) => "info",
        _ => "warn,kube_client=off,kube_runtime=off",
    }
}

fn init_logging(level: Option<&str>, format: LogFormat, default: &str) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).with_context(|| format!("invalid --log-level {l:?}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
    };
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // The components' own logs (`kubectl logs -n kube-system …`) are fed
    // from the same events; inactive unless `server` or `agent` runs.
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let component_logs = wasmkube_runtime::component_logs::layer();
    let result = match format {
        LogFormat::Text => builder.finish().with(component_logs).try_init(),
        LogFormat::Json => builder.json().finish().with(component_logs).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default = default_filter(&cli.command);
    if let Err(e) = init_logging(cli.log_level.as_deref(), cli.log_format, default) {
        eprintln!("error: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    // kube and the apiserver both use rustls with ring; Err = already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Server(args) => server::run((*args).into()).await,
        Command::Push(args) => push::run(args).await,
        Command::Modules(args) => modules::run(args).await,
        Command::Agent(args) => agent::run(args).await,
        Command::Scheduler(args) => components::run_scheduler(args).await,
        Command::ControllerManager(args) => components::run_controller_manager(args).await,
        Command::Token(args) => token::run(args).await,
        Command::Secrets(args) => secrets_key::run(args).await,
        Command::Up(args) => up::up(args),
        Command::Down(args) => up::down(args),
        Command::Status(args) => up::status(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Kubeconfig(args) => kubeconfig_cmd::run(args),
        Command::Completion { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "wasmkube",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Version => {
            println!("wasmkube {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}

impl From<Box<ServerArgs>> for server::Options {
    fn from(a: Box<ServerArgs>) -> Self {
        (*a).into()
    }
}

impl From<ServerArgs> for server::Options {
    fn from(a: ServerArgs) -> Self {
        let k = &a.kubelet;
        server::Options {
            store: a.store(),
            encryption_provider_config: a.encryption_provider_config.clone(),
            kubelet_port: k.kubelet_port,
            proxy_port: k.proxy_port,
            restart_backoff: k.restart_backoff(),
            container_log_max_size: k.container_log_max_size,
            registry_ca: k.registry_ca.clone(),
            module_cache_max_size: k.module_cache_max_size,
            compiled_cache_max_size: k.compiled_cache_max_size,
            max_parallel_image_pulls: usize::from(k.max_parallel_image_pulls),
            max_pods: k.max_pods,
            allow_host_paths: k.allow_host_path.clone(),
            max_pod_memory: a.max_pod_memory,
            max_pod_cpu: a.max_pod_cpu,
            node_lease_duration: k.lease_duration(),
            node_monitor_grace_period: a.node_monitor_grace_period,
            service_account_issuer: a.service_account_issuer.clone(),
            api_audiences: a.api_audiences.clone(),
            service_account_max_token_expiration: a.service_account_max_token_expiration,
            pod_eviction_timeout: std::time::Duration::from_secs(
                a.default_unreachable_toleration_seconds,
            ),
            api_limits: a.api_limits.api_limits(),
            components: a.components.clone(),
            audit: a.api_limits.audit(),
            compaction_interval: a.etcd_compaction_interval,
            compaction_keep_revisions: a.compaction_keep_revisions,
            watch_cache_size: a.default_watch_cache_size as usize,
            event_ttl: a.event_ttl,
            data_dir: a.data_dir,
            bind_address: a.bind_address,
            port: a.port,
            write_kubeconfig: a.write_kubeconfig,
            tls_sans: a.tls_sans,
            node_name: a.node_name,
            no_node: a.no_node,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(args)
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn server_defaults() -> anyhow::Result<()> {
        let cli = parse(&["wasmkube", "server"])?;
        let Command::Server(a) = cli.command else {
            anyhow::bail!("not server");
        };
        assert_eq!(a.bind_address.to_string(), "127.0.0.1");
        assert_eq!(a.port, 6443);
        assert_eq!(a.kubelet.kubelet_port, 10250);
        assert_eq!(a.kubelet.proxy_port, 8080);
        assert!(!a.no_node);
        assert!(a.tls_sans.is_empty());
        assert!(matches!(
            a.store(),
            wasmkube_apiserver::StoreBackend::Embedded
        ));
        assert_eq!(cli.log_format, LogFormat::Text);
        Ok(())
    }

    #[test]
    fn etcd_flags_select_the_etcd_store() -> anyhow::Result<()> {
        let cli = parse(&[
            "wasmkube",
            "server",
            "--etcd-endpoints",
            "https://a:2379,https://b:2379",
            "--etcd-prefix",
            "/team",
            "--etcd-cafile",
            "/ca.pem",
        ])?;
        let Command::Server(a) = cli.command else {
            anyhow::bail!("not server");
        };
        let wasmkube_apiserver::StoreBackend::Etcd(o) = a.store() else {
            anyhow::bail!("expected the etcd store");
        };
        assert_eq!(o.endpoints, vec!["https://a:2379", "https://b:2379"]);
        assert_eq!(o.prefix, "/team");
        assert_eq!(o.tls.map(|t| t.ca_file), Some(PathBuf::from("/ca.pem")));
        Ok(())
    }

    #[test]
    fn etcd_options_need_endpoints() {
        assert!(parse(&["wasmkube", "server", "--etcd-prefix", "/x"]).is_err());
        assert!(parse(&["wasmkube", "server", "--etcd-certfile", "/c.pem"]).is_err());
    }

    #[test]
    fn server_flags() -> anyhow::Result<()> {
        let cli = parse(&[
            "wasmkube",
            "server",
            "--data-dir",
            "/tmp/d",
            "--bind-address",
            "0.0.0.0",
            "--port",
            "0",
            "--tls-san",
            "a.example",
            "--tls-san=10.0.0.1",
            "--node-name",
            "n1",
            "--no-node",
            "--kubelet-port",
            "11250",
            "--proxy-port",
            "0",
            "--write-kubeconfig",
            "/tmp/kc",
            "--log-format",
            "json",
            "--log-level",
            "debug",
        ])?;
        assert_eq!(cli.log_format, LogFormat::Json);
        assert_eq!(cli.log_level.as_deref(), Some("debug"));
        let Command::Server(a) = cli.command else {
            anyhow::bail!("not server");
        };
        assert_eq!(a.data_dir, Some(PathBuf::from("/tmp/d")));
        assert_eq!(a.port, 0);
        assert_eq!(a.tls_sans, vec!["a.example", "10.0.0.1"]);
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        assert!(a.no_node);
        assert_eq!(a.kubelet.kubelet_port, 11250);
        assert_eq!(a.kubelet.proxy_port, 0);
        assert_eq!(a.write_kubeconfig, Some(PathBuf::from("/tmp/kc")));
        Ok(())
    }

    #[test]
    fn client_commands_log_quietly_and_components_at_info() -> anyhow::Result<()> {
        let status = Cli::try_parse_from(["wasmkube", "status"])?;
        assert!(default_filter(&status.command).starts_with("warn"));
        let agent = Cli::try_parse_from(["wasmkube", "agent", "--server", "https://a:6443"])?;
        assert_eq!(default_filter(&agent.command), "info");
        Ok(())
    }
    #[test]
    fn bad_values_are_rejected() {
        assert!(parse(&["wasmkube", "server", "--port", "70000"]).is_err());
        assert!(parse(&["wasmkube", "server", "--bind-address", "nope"]).is_err());
        assert!(parse(&["wasmkube", "server", "--log-format", "xml"]).is_err());
        assert!(parse(&["wasmkube", "push", "only-file"]).is_err());
        assert!(parse(&["wasmkube"]).is_err());
    }

    #[test]
    fn kubelet_backoff_and_log_size_flags() -> anyhow::Result<()> {
        use std::time::Duration;
        let Command::Server(a) = parse(&["wasmkube", "server"])?.command else {
            anyhow::bail!("not server");
        };
        let o = server::Options::from(a);
        assert_eq!(
            o.restart_backoff,
            wasmkube_runtime::status::RestartBackoff::default()
        );
        assert_eq!(
            o.container_log_max_size,
            wasmkube_runtime::logs::DEFAULT_MAX_LOG_BYTES
        );
        let Command::Server(a) = parse(&[
            "wasmkube",
            "server",
            "--container-restart-initial-backoff",
            "500ms",
            "--max-container-restart-period=4s",
            "--container-log-max-size",
            "1Mi",
        ])?
        .command
        else {
            anyhow::bail!("not server");
        };
        let o = server::Options::from(a);
        assert_eq!(o.restart_backoff.initial, Duration::from_millis(500));
        assert_eq!(o.restart_backoff.max, Duration::from_secs(4));
        assert_eq!(o.restart_backoff.reset_after, Duration::from_secs(8));
        assert_eq!(o.container_log_max_size, 1 << 20);
        for bad in [
            ["--container-restart-initial-backoff", "0s"],
            ["--max-container-restart-period", "soon"],
            ["--container-log-max-size", "big"],
        ] {
            let mut args = vec!["wasmkube", "server"];
            args.extend(bad);
            assert!(parse(&args).is_err(), "{bad:?} is rejected");
        }
        Ok(())
    }

    #[test]
    fn host_paths_are_allowed_only_by_flag() -> anyhow::Result<()> {
        let Command::Server(a) = parse(&["wasmkube", "server"])?.command else {
            anyhow::bail!("not server");
        };
        assert!(server::Options::from(a).allow_host_paths.is_empty());
        let Command::Server(a) = parse(&[
            "wasmkube",
            "server",
            "--allow-host-path",
            "/srv/data",
            "--allow-host-path=/var/lib/shared",
        ])?
        .command
        else {
            anyhow::bail!("not server");
        };
        assert_eq!(
            server::Options::from(a).allow_host_paths,
            [PathBuf::from("/srv/data"), PathBuf::from("/var/lib/shared")]
        );
        Ok(())
    }

    #[test]
    fn image_pull_flags() -> anyhow::Result<()> {
        let Command::Server(a) = parse(&["wasmkube", "server"])?.command else {
            anyhow::bail!("not server");
        };
        let o = server::Options::from(a);
        assert_eq!(o.module_cache_max_size, 2 << 30);
        assert_eq!(o.max_parallel_image_pulls, 3);
        assert_eq!(o.registry_ca, None);
        let Command::Server(a) = parse(&[
            "wasmkube",
            "server",
            "--registry-ca",
            "/ca.pem",
            "--module-cache-max-size=512Mi",
            "--max-parallel-image-pulls",
            "1",
        ])?
        .command
        else {
            anyhow::bail!("not server");
        };
        let o = server::Options::from(a);
        assert_eq!(o.registry_ca, Some(PathBuf::from("/ca.pem")));
        assert_eq!(o.module_cache_max_size, 512 << 20);
        assert_eq!(o.max_parallel_image_pulls, 1);
        assert!(parse(&["wasmkube", "server", "--max-parallel-image-pulls", "0"]).is_err());
        let Command::Push(p) = parse(&[
            "wasmkube",
            "push",
            "m.wasm",
            "registry.example/m:v1",
            "--username",
            "u",
            "--password",
            "p",
            "--plain-http",
        ])?
        .command
        else {
            anyhow::bail!("not push");
        };
        assert_eq!(p.registry.username.as_deref(), Some("u"));
        assert!(p.registry.plain_http);
        assert!(
            parse(&["wasmkube", "push", "m.wasm", "r.io/m:v1", "--username", "u"]).is_err(),
            "a user needs a password"
        );
        let with_stdin = ["wasmkube", "push", "m", "r.io/m:v1", "--username", "u"];
        let Command::Push(p) = parse(&[&with_stdin[..], &["--password-stdin"]].concat())?.command
        else {
            anyhow::bail!("not push");
        };
        assert!(p.registry.password_stdin);
        assert!(
            parse(&[&with_stdin[..], &["--password-stdin", "--password", "p"]].concat()).is_err(),
            "one password source"
        );
        assert!(parse(&["wasmkube", "push", "m", "r.io/m:v1", "--password", "p"]).is_err());
        Ok(())
    }

    #[test]
    fn node_lifecycle_flags() -> anyhow::Result<()> {
        use std::time::Duration;
        let Command::Server(a) = parse(&["wasmkube", "server"])?.command else {
            anyhow::bail!("not server");
        };
        let o = server::Options::from(a);
        let defaults = wasmkube_controllers::ControllersConfig::default();
        assert_eq!(
            o.node_monitor_grace_period,
            defaults.node_monitor_grace_period
        );
        assert_eq!(o.pod_eviction_timeout, Duration::from_secs(300));
        assert_eq!(o.node_lease_duration, Duration::from_secs(40));
        let Command::Server(a) = parse(&[
            "wasmkube",
            "server",
            "--node-monitor-grace-period",
            "2m",
            "--default-unreachable-toleration-seconds",
            "3600",
            "--node-lease-duration-seconds=100",
        ])?
        .command
        else {
            anyhow::bail!("not server");
        };
        let o = server::Options::from(a);
        assert_eq!(o.node_monitor_grace_period, Duration::from_secs(120));
        assert_eq!(o.pod_eviction_timeout, Duration::from_secs(3600));
        assert_eq!(o.node_lease_duration, Duration::from_secs(100));
        for bad in [
            ["--node-monitor-grace-period", "0s"],
            ["--default-unreachable-toleration-seconds", "-1"],
            ["--node-lease-duration-seconds", "0"],
        ] {
            let mut args = vec!["wasmkube", "server"];
            args.extend(bad);
            assert!(parse(&args).is_err(), "{bad:?} is rejected");
        }
        Ok(())
    }

    #[test]
    fn agent_and_token_subcommands() -> anyhow::Result<()> {
        let Command::Agent(a) = parse(&[
            "wasmkube",
            "agent",
            "--server",
            "https://10.0.0.5:6443",
            "--token",
            "abcdef.0123456789abcdef",
            "--kubelet-port",
            "0",
        ])?
        .command
        else {
            anyhow::bail!("not agent");
        };
        assert_eq!(a.kubelet.kubelet_port, 0);
        assert!(matches!(
            parse(&["wasmkube", "token", "create"])?.command,
            Command::Token(_)
        ));
        assert!(
            parse(&["wasmkube", "token"]).is_err(),
            "token needs a subcommand"
        );
        Ok(())
    }

    #[test]
    fn compiled_cache_size_flag() -> anyhow::Result<()> {
        let Command::Server(a) = parse(&["wasmkube", "server"])?.command else {
            anyhow::bail!("not server");
        };
        assert_eq!(server::Options::from(a).compiled_cache_max_size, 1 << 30);
        let Command::Server(a) =
            parse(&["wasmkube", "server", "--compiled-cache-max-size", "512Mi"])?.command
        else {
            anyhow::bail!("not server");
        };
        assert_eq!(server::Options::from(a).compiled_cache_max_size, 512 << 20);
        assert!(parse(&["wasmkube", "server", "--compiled-cache-max-size", "lots"]).is_err());
        Ok(())
    }

    #[test]
    fn push_and_modules_take_kubeconfig_and_context() -> anyhow::Result<()> {
        let cli = parse(&[
            "wasmkube",
            "push",
            "hello.wasm",
            "hello:v1",
            "--kubeconfig",
            "/k",
            "--context",
            "c",
        ])?;
        let Command::Push(a) = cli.command else {
            anyhow::bail!("not push");
        };
        assert_eq!(a.file, PathBuf::from("hello.wasm"));
        assert_eq!(a.reference, "hello:v1");
        assert_eq!(a.client.kubeconfig, Some(PathBuf::from("/k")));
        assert_eq!(a.client.context.as_deref(), Some("c"));
        let cli = parse(&["wasmkube", "modules"])?;
        assert!(matches!(cli.command, Command::Modules(_)));
        assert!(matches!(
            parse(&["wasmkube", "version"])?.command,
            Command::Version
        ));
        Ok(())
    }
}
