//! `wasmkube run FILE.wasm`: from a module file to a running workload in one
//! command — push the module, apply a Deployment (or a Job with `--once`, and
//! a NodePort Service with `--port`), wait until it runs, say where to reach
//! it, and follow its logs until Ctrl-C (which leaves it running, as
//! `kubectl run` does; `--rm` removes it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::{AsyncBufReadExt as _, StreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::Api;
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PropagationPolicy};
use serde_json::{Value, json};

/// The field manager of what `run` applies.
const MANAGER: &str = "wasmkube-run";
/// The label that ties the objects and pods of one `run` together.
const NAME_LABEL: &str = "app.kubernetes.io/name";
/// How long to wait for the workload to run.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

pub(crate) const EXAMPLES: &str = "Examples:\n  \
    wasmkube run hello.wasm                          # a Deployment of one replica, logs followed\n  \
    wasmkube run counter.wasm --replicas 3 -- 100    # arguments after --\n  \
    wasmkube run http_echo.wasm --port 8080          # an HTTP workload and a NodePort Service\n  \
    wasmkube run hello.wasm --once --rm              # a Job: runs once, then removed\n  \
    wasmkube run app.wasm --env GREETING=hi --name greeter";

/// `wasmkube run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The module: a WASI command (wasm32-wasip1), or a component
    /// (wasm32-wasip2: wasi:cli/run, or wasi:http with --port).
    pub file: PathBuf,

    /// Name of the workload [default: the file's name].
    #[arg(long)]
    pub name: Option<String>,

    /// Namespace [default: the kubeconfig context's, else `default`].
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,

    /// Replicas of the Deployment.
    #[arg(long, default_value_t = 1, conflicts_with = "once")]
    pub replicas: u32,

    /// The module serves HTTP on this container port: it runs per request
    /// (a wasi:http component, or a WAGI command module), and a NodePort
    /// Service makes it reachable on every node.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,

    /// Run it once, as a Job, until it exits; `run` then exits with its code.
    #[arg(long)]
    pub once: bool,

    /// Remove what `run` created when it ends (Ctrl-C, or the Job's end).
    #[arg(long)]
    pub rm: bool,

    /// Environment variable for the module (repeatable).
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE")]
    pub env: Vec<String>,

    /// Do not follow the logs: return once it runs.
    #[arg(long, short = 'd')]
    pub detach: bool,

    /// Arguments for the module, after `--`.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,

    /// Data directory of a server started by `wasmkube up` [default: ~/.wasmkube].
    #[arg(long, env = "WASMKUBE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    #[command(flatten)]
    pub client: crate::ClientArgs,
}

/// A DNS-1123 label from a file name: `http_echo.wasm` → `http-echo`.
pub(crate) fn name_from_file(file: &Path) -> Option<String> {
    let stem = file.file_stem()?.to_str()?;
    let mut name: String = stem
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    name.truncate(63);
    let name = name.trim_matches('-').to_string();
    let mut collapsed = String::with_capacity(name.len());
    for c in name.chars() {
        if !(c == '-' && collapsed.ends_with('-')) {
            collapsed.push(c);
        }
    }
    (!collapsed.is_empty()).then_some(collapsed)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Whether the bytes are a component (the component-model layer) rather
/// than a core module: decides whether an HTTP port needs WAGI.
fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [0x01, 0x00]
}

/// What `run` applies, from its flags.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub name: String,
    pub namespace: String,
    pub image: String,
    pub replicas: u32,
    pub port: Option<u16>,
    pub wagi: bool,
    pub once: bool,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
}

impl Plan {
    fn labels(&self) -> Value {
        json!({ NAME_LABEL: self.name, "app.kubernetes.io/managed-by": MANAGER })
    }

    fn pod_template(&self) -> Value {
        // The pod's own name and namespace, as a Deployment author would
        // pass them through the downward API (http-echo reports its name).
        let mut env: Vec<Value> = ["POD_NAME:metadata.name", "POD_NAMESPACE:metadata.namespace"]
            .iter()
            .filter_map(|s| s.split_once(':'))
            .filter(|(name, _)| !self.env.iter().any(|(k, _)| k == name))
            .map(|(name, path)| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}))
            .collect();
        env.extend(self.env.iter().map(|(k, v)| json!({"name": k, "value": v})));
        let mut container = json!({ "name": self.name, "image": self.image, "env": env });
        if !self.args.is_empty() {
            container["args"] = json!(self.args);
        }
        if let Some(port) = self.port {
            container["ports"] = json!([{"name": "http", "containerPort": port}]);
        }
        let mut metadata = json!({ "labels": self.labels() });
        if self.wagi {
            metadata["annotations"] = json!({ "wasmkube.io/http": "wagi" });
        }
        let mut spec = json!({ "containers": [container], "terminationGracePeriodSeconds": 5 });
        if self.once {
            spec["restartPolicy"] = json!("Never");
        }
        json!({ "metadata": metadata, "spec": spec })
    }

    /// The Deployment, or the Job with `--once`.
    pub fn workload(&self) -> Value {
        let meta =
            json!({ "name": self.name, "namespace": self.namespace, "labels": self.labels() });
        if self.once {
            json!({
                "apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
                "spec": { "backoffLimit": 0, "template": self.pod_template() },
            })
        } else {
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
                "spec": {
                    "replicas": self.replicas,
                    "selector": { "matchLabels": { NAME_LABEL: self.name } },
                    "template": self.pod_template(),
                },
            })
        }
    }

    /// The NodePort Service with `--port`.
    pub fn service(&self) -> Option<Value> {
        self.port.map(|_| {
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": self.name, "namespace": self.namespace, "labels": self.labels() },
                "spec": {
                    "type": "NodePort",
                    "selector": { NAME_LABEL: self.name },
                    "ports": [{ "name": "http", "port": 80, "targetPort": "http" }],
                },
            })
        })
    }
}

fn parse_env(items: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--env {item:?}: expected NAME=VALUE"),
        })
        .collect()
}

/// Runs `wasmkube run`; errors reaching the cluster say what to do next.
pub(crate) async fn run(args: RunArgs) -> anyhow::Result<()> {
    run_workload(args)
        .await
        .map_err(crate::modules::with_advice)
}

async fn run_workload(args: RunArgs) -> anyhow::Result<()> {
    let name = match &args.name {
        Some(n) => n.clone(),
        None => name_from_file(&args.file).with_context(|| {
            format!(
                "cannot make a name from {}; pass --name",
                args.file.display()
            )
        })?,
    };
    if !valid_name(&name) {
        bail!(
            "--name {name:?}: must be lowercase letters, digits and '-', start and end with a letter or digit, at most 63 characters"
        );
    }
    let env = parse_env(&args.env)?;
    let bytes = crate::modules::read_module(&args.file).await?;

    let paths = crate::up::Paths::new(args.data_dir.clone())?;
    let source = crate::kubeconfig::laptop_source(args.client.kubeconfig.as_deref(), &paths);
    let client = crate::kubeconfig::client_from(&source, args.client.context.as_deref()).await?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());

    // A tag per content: running a changed file rolls the workload out.
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    let image = format!("{name}:{}", &digest[..12]);
    let pushed = crate::modules::push(&client, &args.file, &image).await?;
    eprintln!("{pushed}");

    let plan = Plan {
        name: name.clone(),
        namespace: namespace.clone(),
        image,
        replicas: args.replicas,
        port: args.port,
        wagi: args.port.is_some() && !is_component(&bytes),
        once: args.once,
        env,
        args: args.args.clone(),
    };
    apply(&client, &plan).await?;
    let kind = if plan.once { "job" } else { "deployment" };
    eprintln!("{kind}/{name} applied in namespace {namespace}");

    let stop = tokio_util::sync::CancellationToken::new();
    {
        // Ctrl-C (or SIGTERM) ends following quietly: it is how users leave.
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            stop.cancel();
        });
    }
    let outcome = async {
        let pods = wait_running(&client, &plan, &stop).await?;
        if let Some(port) = plan.port {
            for url in urls(&client, &plan).await? {
                println!("{name} serves HTTP on container port {port}: {url}");
            }
        }
        if args.detach {
            return Ok(None);
        }
        eprintln!(
            "following the logs (Ctrl-C stops following; it keeps running{})",
            if args.rm { " unless --rm" } else { "" }
        );
        follow_logs(&client, &plan, pods, &stop).await
    }
    .await;
    if args.rm {
        remove(&client, &plan).await?;
        eprintln!("{kind}/{name} removed");
    }
    match outcome? {
        Some(code) if code != 0 => {
            // Like `docker run` and `kubectl run -i --rm`: the module's own
            // exit code is ours.
            eprintln!("{name} exited with code {code}");
            std::process::exit(code.clamp(1, 255));
        }
        _ => Ok(()),
    }
}

async fn apply(client: &kube::Client, plan: &Plan) -> anyhow::Result<()> {
    let params = PatchParams::apply(MANAGER).force();
    let workload = plan.workload();
    if plan.once {
        let jobs: Api<Job> = Api::namespaced(client.clone(), &plan.namespace);
        // A Job's template cannot change: a new run replaces the old Job.
        if jobs.get_opt(&plan.name).await?.is_some() {
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Foreground),
                ..DeleteParams::default()
            };
            jobs.delete(&plan.name, &dp).await?;
            wait_gone(&jobs, &plan.name).await?;
        }
        jobs.patch(&plan.name, &params, &Patch::Apply(&workload))
            .await
            .context("creating the Job")?;
    } else {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &plan.namespace);
        deployments
            .patch(&plan.name, &params, &Patch::Apply(&workload))
            .await
            .context("applying the Deployment")?;
    }
    if let Some(svc) = plan.service() {
        let services: Api<Service> = Api::namespaced(client.clone(), &plan.namespace);
        services
            .patch(&plan.name, &params, &Patch::Apply(&svc))
            .await
            .context("applying the Service")?;
    }
    Ok(())
}

async fn wait_gone<K>(api: &Api<K>, name: &str) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + RUN_TIMEOUT;
    while api.get_opt(name).await?.is_some() {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{name} is still being deleted after {}s",
                RUN_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn remove(client: &kube::Client, plan: &Plan) -> anyhow::Result<()> {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    let ignore_missing = |r: Result<_, kube::Error>| match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    };
    if plan.once {
        let jobs: Api<Job> = Api::namespaced(client.clone(), &plan.namespace);
        ignore_missing(jobs.delete(&plan.name, &dp).await.map(|_| ()))?;
    } else {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &plan.namespace);
        ignore_missing(deployments.delete(&plan.name, &dp).await.map(|_| ()))?;
    }
    if plan.port.is_some() {
        let services: Api<Service> = Api::namespaced(client.clone(), &plan.namespace);
        ignore_missing(services.delete(&plan.name, &dp).await.map(|_| ()))?;
    }
    Ok(())
}

/// Why a pod is not running, when it has said: a waiting or terminated
/// container's reason and message.
fn pod_problem(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|c| {
        let state = c.state.as_ref()?;
        if let Some(w) = &state.waiting {
            let reason = w.reason.clone().unwrap_or_default();
            if reason == "ContainerCreating" || reason == "PodInitializing" {
                return None;
            }
            return Some(format!(
                "{reason}: {}",
                w.message.clone().unwrap_or_default()
            ));
        }
        None
    })
}

fn pod_running_or_done(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running" | "Succeeded" | "Failed")
    )
}

/// Waits until the workload's pods run (every replica of a Deployment, the
/// Job's pod running or finished); the pods' names. On a terminal a live
/// line says what the pods are doing; problems (a failed pull, a crash) are
/// printed as they appear, terminal or not.
async fn wait_running(
    client: &kube::Client,
    plan: &Plan,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Vec<String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &plan.namespace);
    let selector = format!("{NAME_LABEL}={}", plan.name);
    let deadline = tokio::time::Instant::now() + RUN_TIMEOUT;
    let line = crate::progress::Line::new();
    let mut last_problem = String::new();
    loop {
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .context("listing the pods")?;
        let current: Vec<&Pod> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                // Pods of this revision only: the image is this run's.
                p.spec.as_ref().is_some_and(|s| {
                    s.containers
                        .iter()
                        .any(|c| c.image.as_deref() == Some(&plan.image))
                })
            })
            .collect();
        let want = if plan.once { 1 } else { plan.replicas as usize };
        let running = current.iter().filter(|p| pod_running_or_done(p)).count();
        if running >= want {
            line.clear();
            eprintln!(
                "{} is running ({running}/{want} {}, {})",
                plan.name,
                if want == 1 { "pod" } else { "pods" },
                crate::progress::elapsed_text(line.elapsed())
            );
            return Ok(current
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect());
        }
        if let Some(problem) = current.iter().find_map(|p| pod_problem(p))
            && problem != last_problem
        {
            line.println(&format!("waiting: {problem}"));
            last_problem = problem;
        }
        line.spin(&waiting_text(&plan.name, running, want, &current));
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{}/{} pods of {} run after {}s{}; see `kubectl describe pods -l {selector}`",
                running,
                want,
                plan.name,
                RUN_TIMEOUT.as_secs(),
                if last_problem.is_empty() {
                    String::new()
                } else {
                    format!(" ({last_problem})")
                }
            );
        }
        tokio::select! {
            _ = stop.cancelled() => bail!(
                "interrupted while waiting for {} to run (it keeps starting; `kubectl get pods -l {selector}` shows it)",
                plan.name
            ),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// The live line while waiting: how many pods run, and what the first one
/// that does not is doing (`http-echo-…-x ContainerCreating: compiling
/// module (12.3MiB, not in the compile cache)`).
fn waiting_text(name: &str, running: usize, want: usize, pods: &[&Pod]) -> String {
    let head = format!("waiting for {name}: {running}/{want} running");
    let Some(pod) = pods.iter().find(|p| !pod_running_or_done(p)) else {
        return if pods.is_empty() {
            format!("{head} · no pods yet")
        } else {
            head
        };
    };
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    let status = pod.status.as_ref();
    let waiting = status.and_then(|s| {
        s.init_container_statuses
            .iter()
            .chain(&s.container_statuses)
            .flatten()
            .find_map(|c| c.state.as_ref()?.waiting.clone())
    });
    let doing = match waiting {
        Some(w) => match (w.reason, w.message.filter(|m| !m.is_empty())) {
            (Some(r), Some(m)) => format!("{r}: {m}"),
            (Some(r), None) => r,
            (None, Some(m)) => m,
            (None, None) => "Pending".into(),
        },
        None if pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_none() =>
        {
            "Pending: not scheduled yet".into()
        }
        None => status
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into()),
    };
    format!("{head} · {pod_name} {doing}")
}

/// `http://<node address>:<nodePort>/` for every node.
async fn urls(client: &kube::Client, plan: &Plan) -> anyhow::Result<Vec<String>> {
    let services: Api<Service> = Api::namespaced(client.clone(), &plan.namespace);
    let svc = services.get(&plan.name).await?;
    let node_port = svc
        .spec
        .and_then(|s| s.ports)
        .and_then(|p| p.first().and_then(|p| p.node_port))
        .context("the Service has no node port")?;
    let nodes: Api<Node> = Api::all(client.clone());
    let mut urls = Vec::new();
    for node in nodes.list(&ListParams::default()).await?.items {
        let addr = node
            .status
            .and_then(|s| s.addresses)
            .and_then(|a| a.into_iter().find(|a| a.type_ == "InternalIP"))
            .map(|a| a.address);
        if let Some(addr) = addr {
            let host = if addr.contains(':') {
                format!("[{addr}]")
            } else {
                addr
            };
            urls.push(format!("http://{host}:{node_port}/"));
        }
    }
    Ok(urls)
}

/// Follows the logs of the workload's pods (and of pods that replace them)
/// until `stop`; for a Job, until its pod ends — its exit code.
async fn follow_logs(
    client: &kube::Client,
    plan: &Plan,
    first: Vec<String>,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Option<i32>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &plan.namespace);
    let prefix = plan.replicas > 1;
    let mut followed: BTreeMap<String, tokio::task::JoinHandle<()>> = BTreeMap::new();
    let selector = format!("{NAME_LABEL}={}", plan.name);
    let mut names = first;
    loop {
        for pod in names.drain(..) {
            if followed.contains_key(&pod) {
                continue;
            }
            let api = pods.clone();
            let stop = stop.clone();
            let label = pod.clone();
            followed.insert(
                pod,
                tokio::spawn(async move {
                    let params = LogParams {
                        follow: true,
                        ..LogParams::default()
                    };
                    let Ok(stream) = api.log_stream(&label, &params).await else {
                        return;
                    };
                    let mut lines = stream.lines();
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            line = lines.next() => match line {
                                Some(Ok(line)) if prefix => println!("[{label}] {line}"),
                                Some(Ok(line)) => println!("{line}"),
                                _ => return,
                            },
                        }
                    }
                }),
            );
        }
        if plan.once {
            // The Job's pod: done when it ended and its log is drained.
            let list = pods.list(&ListParams::default().labels(&selector)).await?;
            if let Some(code) = list.items.iter().find_map(exit_code) {
                for (_, task) in std::mem::take(&mut followed) {
                    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
                }
                return Ok(Some(code));
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {
                for (_, task) in followed {
                    task.abort();
                }
                return Ok(None);
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        // New pods (a restart, a rollout, scaling up) are followed too.
        if let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await {
            names = list
                .items
                .iter()
                .filter(|p| pod_running_or_done(p))
                .filter_map(|p| p.metadata.name.clone())
                .collect();
        }
    }
}

/// The exit code of a pod whose container has terminated.
fn exit_code(pod: &Pod) -> Option<i32> {
    let status = pod.status.as_ref()?;
    if !matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    status
        .container_statuses
        .as_ref()?
        .iter()
        .find_map(|c| c.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            name: "http-echo".into(),
            namespace: "default".into(),
            image: "http-echo:0123456789ab".into(),
            replicas: 2,
            port: Some(8080),
            wagi: false,
            once: false,
            env: vec![("GREETING".into(), "hi".into())],
            args: vec!["--verbose".into()],
        }
    }

    #[test]
    fn names_come_from_file_names() {
        assert_eq!(
            name_from_file(Path::new("target/http_echo.wasm")).as_deref(),
            Some("http-echo")
        );
        assert_eq!(
            name_from_file(Path::new("My__App.wasm")).as_deref(),
            Some("my-app")
        );
        assert_eq!(name_from_file(Path::new("___.wasm")), None);
        assert!(valid_name("http-echo"));
        assert!(!valid_name("Http"));
        assert!(!valid_name("-a"));
    }

    #[test]
    fn components_and_core_modules_are_told_apart() {
        assert!(is_component(b"\0asm\x0d\x00\x01\x00"));
        assert!(!is_component(b"\0asm\x01\x00\x00\x00"));
        assert!(!is_component(b"\0asm"));
    }

    #[test]
    fn a_port_makes_an_http_deployment_and_a_node_port_service() {
        let p = plan();
        let d = p.workload();
        assert_eq!(d["kind"], "Deployment");
        assert_eq!(d["spec"]["replicas"], 2);
        assert_eq!(
            d["spec"]["selector"]["matchLabels"][NAME_LABEL],
            "http-echo"
        );
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "http-echo:0123456789ab");
        assert_eq!(c["ports"][0]["containerPort"], 8080);
        assert_eq!(c["args"][0], "--verbose");
        assert_eq!(c["env"][0]["name"], "POD_NAME");
        assert_eq!(
            c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        assert_eq!(c["env"][2]["name"], "GREETING");
        assert!(d["spec"]["template"]["metadata"]["annotations"].is_null());
        let s = p.service().unwrap_or_default();
        assert_eq!(s["spec"]["type"], "NodePort");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], "http");

        let wagi = Plan {
            wagi: true,
            ..plan()
        };
        assert_eq!(
            wagi.workload()["spec"]["template"]["metadata"]["annotations"]["wasmkube.io/http"],
            "wagi"
        );
    }

    #[test]
    fn once_makes_a_job_that_never_restarts() {
        let p = Plan {
            once: true,
            port: None,
            ..plan()
        };
        let j = p.workload();
        assert_eq!(j["kind"], "Job");
        assert_eq!(j["spec"]["backoffLimit"], 0);
        assert_eq!(j["spec"]["template"]["spec"]["restartPolicy"], "Never");
        assert!(p.service().is_none());
    }

    fn pod(name: &str, node: Option<&str>, phase: &str, waiting: Option<(&str, &str)>) -> Pod {
        let mut v = json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": phase},
        });
        if let Some(node) = node {
            v["spec"]["nodeName"] = json!(node);
        }
        if let Some((reason, message)) = waiting {
            v["status"]["containerStatuses"] = json!([{
                "name": "c", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": message}}
            }]);
        }
        serde_json::from_value(v).unwrap_or_default()
    }

    #[test]
    fn the_waiting_line_says_what_the_first_pending_pod_does() {
        let up = pod("http-echo-1", Some("laptop"), "Running", None);
        let compiling = pod(
            "http-echo-2",
            Some("laptop"),
            "Pending",
            Some((
                "ContainerCreating",
                "compiling module (12.3MiB, not in the compile cache)",
            )),
        );
        assert_eq!(
            waiting_text("http-echo", 1, 2, &[&up, &compiling]),
            "waiting for http-echo: 1/2 running · http-echo-2 ContainerCreating: compiling module (12.3MiB, not in the compile cache)"
        );
        let unscheduled = pod("http-echo-3", None, "Pending", None);
        assert_eq!(
            waiting_text("http-echo", 0, 1, &[&unscheduled]),
            "waiting for http-echo: 0/1 running · http-echo-3 Pending: not scheduled yet"
        );
        let creating = pod("a", Some("n"), "Pending", Some(("ContainerCreating", "")));
        assert!(waiting_text("a", 0, 1, &[&creating]).ends_with("· a ContainerCreating"));
        assert_eq!(
            waiting_text("a", 0, 1, &[]),
            "waiting for a: 0/1 running · no pods yet"
        );
    }

    #[test]
    fn env_flags_need_a_name() {
        assert!(parse_env(&["A=1".into(), "B==2".into()]).is_ok_and(|v| v[1].1 == "=2"));
        assert!(parse_env(&["=1".into()]).is_err());
        assert!(parse_env(&["A".into()]).is_err());
    }
}
