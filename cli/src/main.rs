//! `wasmkube`: the one binary. It parses flags and calls the crates' `run`
//! functions; all behaviour lives in the library crates.

mod kubeconfig;
mod modules;
mod server;

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
    /// Defaults to `RUST_LOG`, else `info`.
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
    Server(ServerArgs),

    /// Upload a wasm module to the cluster's module store as NAME:TAG.
    ///
    /// Pods then run it with `image: NAME:TAG`. The cluster is found like
    /// kubectl finds it: --kubeconfig, else KUBECONFIG, else ~/.kube/config.
    /// The server validates the module; the digest it stored is printed and
    /// checked against the file.
    #[command(after_long_help = "Example:\n  \
        wasmkube push target/wasm32-wasip1/release/hello.wasm hello:v1\n  \
        kubectl run hello --image=hello:v1 --restart=Never")]
    Push(PushArgs),

    /// List the modules in the cluster's module store.
    Modules(ClientArgs),

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

    /// Port of the built-in kubelet's HTTP endpoint, used by `kubectl logs`
    /// (0 picks a free one).
    #[arg(long, default_value_t = 10250, value_name = "PORT")]
    kubelet_port: u16,

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

    /// Name and tag to store it under, e.g. `hello:v1`.
    #[arg(value_name = "NAME:TAG")]
    reference: String,

    #[command(flatten)]
    client: ClientArgs,
}

fn init_logging(level: Option<&str>, format: LogFormat) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).with_context(|| format!("invalid --log-level {l:?}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_level.as_deref(), cli.log_format) {
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
        Command::Server(args) => server::run(args.into()).await,
        Command::Push(args) => {
            let client = kubeconfig::client(
                args.client.kubeconfig.as_deref(),
                args.client.context.as_deref(),
            )
            .await?;
            let line = modules::push(&client, &args.file, &args.reference).await?;
            println!("{line}");
            Ok(())
        }
        Command::Modules(args) => {
            let client =
                kubeconfig::client(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
            let table = modules::list(&client).await?;
            if table.is_empty() {
                eprintln!("No modules found.");
            }
            print!("{table}");
            Ok(())
        }
        Command::Version => {
            println!("wasmkube {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}

impl From<ServerArgs> for server::Options {
    fn from(a: ServerArgs) -> Self {
        server::Options {
            store: a.store(),
            data_dir: a.data_dir,
            bind_address: a.bind_address,
            port: a.port,
            write_kubeconfig: a.write_kubeconfig,
            tls_sans: a.tls_sans,
            node_name: a.node_name,
            no_node: a.no_node,
            kubelet_port: a.kubelet_port,
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
        assert_eq!(a.kubelet_port, 10250);
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
        assert_eq!(a.kubelet_port, 11250);
        assert_eq!(a.write_kubeconfig, Some(PathBuf::from("/tmp/kc")));
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
        assert!(matches!(
            cli.command,
            Command::Modules(ClientArgs {
                kubeconfig: None,
                ..
            })
        ));
        assert!(matches!(
            parse(&["wasmkube", "version"])?.command,
            Command::Version
        ));
        Ok(())
    }
}
