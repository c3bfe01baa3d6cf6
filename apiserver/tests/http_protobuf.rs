//! Protobuf request bodies over HTTPS, as client-go's typed clients send them:
//! creates of every accepted kind answered in JSON, protobuf DeleteOptions,
//! 400/415 for what cannot be decoded, and real `kubectl create` generators
//! (which have no fallback to JSON), workloads included.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_pb::api::apps::v1 as pb_apps;
use k8s_pb::api::batch::v1 as pb_batch;
use k8s_pb::api::coordination::v1 as pb_coord;
use k8s_pb::api::core::v1 as pb;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb_meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr as pb_util;
use prost::Message;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use wasmkube_apiserver::{Config, Running, start};

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
/// What client-go's typed clients send as Accept alongside a protobuf body.
const ACCEPT: &str = "application/vnd.kubernetes.protobuf, */*";

struct Server {
    dir: tempfile::TempDir,
    running: Running,
    shutdown: CancellationToken,
    client: reqwest::Client,
}

async fn server() -> Result<Server> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        shutdown_grace: Duration::from_secs(2),
        ..Config::default()
    };
    let running = start(config, shutdown.clone()).await?;
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(running.ca_pem.as_bytes())?)
        .timeout(Duration::from_secs(60))
        .build()?;
    Ok(Server {
        dir,
        running,
        shutdown,
        client,
    })
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url)
    }

    async fn send_pb(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Value)> {
        let resp = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.running.admin_token)
            .header("Content-Type", PROTOBUF)
            .header("Accept", ACCEPT)
            .body(body)
            .send()
            .await?;
        let code = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        ensure!(
            ct.starts_with("application/json"),
            "answer content type {ct}"
        );
        Ok((code, resp.json().await.context("the answer is JSON")?))
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let resp = self
            .client
            .get(self.url(path))
            .bearer_auth(&self.running.admin_token)
            .send()
            .await?;
        ensure!(resp.status() == 200, "GET {path}: {}", resp.status());
        Ok(resp.json().await?)
    }

    async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.running.done).await??;
        drop(self.dir);
        Ok(())
    }
}

/// The Kubernetes protobuf envelope: magic, then `runtime.Unknown`.
fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = b"k8s\0".to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn meta(name: &str) -> Option<pb_meta::ObjectMeta> {
    Some(pb_meta::ObjectMeta {
        name: s(name),
        // Go writes its zero values for plain fields; the server must drop them.
        namespace: s(""),
        resource_version: s(""),
        generation: Some(0),
        ..Default::default()
    })
}

async fn created(srv: &Server, path: &str, body: Vec<u8>) -> Result<Value> {
    let (code, obj) = srv.send_pb(reqwest::Method::POST, path, body).await?;
    ensure!(code == 201, "POST {path}: {code} {obj}");
    Ok(obj)
}

#[tokio::test]
async fn protobuf_creates_are_stored_and_answered_in_json() -> Result<()> {
    let srv = server().await?;

    let ns = pb::Namespace {
        metadata: meta("pb-demo"),
        spec: Some(pb::NamespaceSpec::default()),
        status: Some(pb::NamespaceStatus::default()),
    };
    let obj = created(
        &srv,
        "/api/v1/namespaces",
        envelope("v1", "Namespace", ns.encode_to_vec()),
    )
    .await?;
    ensure!(
        obj["kind"] == "Namespace" && obj["metadata"]["name"] == "pb-demo",
        "{obj}"
    );
    ensure!(obj["metadata"]["uid"].is_string(), "{obj}");

    let cm = pb::ConfigMap {
        metadata: meta("cfg"),
        data: BTreeMap::from([("a".into(), "b".into())]),
        ..Default::default()
    };
    created(
        &srv,
        "/api/v1/namespaces/pb-demo/configmaps",
        envelope("v1", "ConfigMap", cm.encode_to_vec()),
    )
    .await?;
    let got = srv.get("/api/v1/namespaces/pb-demo/configmaps/cfg").await?;
    ensure!(got["data"] == serde_json::json!({"a": "b"}), "{got}");
    ensure!(got["metadata"]["namespace"] == "pb-demo", "{got}");

    let secret = pb::Secret {
        metadata: meta("creds"),
        data: BTreeMap::from([("a".into(), b"b".to_vec())]),
        r#type: s("Opaque"),
        ..Default::default()
    };
    created(
        &srv,
        "/api/v1/namespaces/pb-demo/secrets",
        envelope("v1", "Secret", secret.encode_to_vec()),
    )
    .await?;
    let got = srv.get("/api/v1/namespaces/pb-demo/secrets/creds").await?;
    ensure!(got["data"] == serde_json::json!({"a": "Yg=="}), "{got}");
    ensure!(got["type"] == "Opaque", "{got}");

    let pod = pb::Pod {
        metadata: meta("web"),
        spec: Some(pb::PodSpec {
            containers: vec![pb::Container {
                name: s("app"),
                image: s("hello:v1"),
                args: vec!["--greeting".into(), "hi".into()],
                ports: vec![pb::ContainerPort {
                    container_port: Some(8080),
                    protocol: s(""),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            termination_grace_period_seconds: Some(0),
            ..Default::default()
        }),
        status: Some(pb::PodStatus::default()),
    };
    let obj = created(
        &srv,
        "/api/v1/namespaces/pb-demo/pods",
        envelope("v1", "Pod", pod.encode_to_vec()),
    )
    .await?;
    let spec = &obj["spec"];
    ensure!(spec["containers"][0]["image"] == "hello:v1", "{obj}");
    ensure!(
        spec["containers"][0]["ports"][0]["protocol"] == "TCP",
        "defaults ran: {obj}"
    );
    ensure!(
        spec["terminationGracePeriodSeconds"] == 0,
        "pointer zero kept: {obj}"
    );
    ensure!(spec["restartPolicy"] == "Always", "{obj}");

    let lease = pb_coord::Lease {
        metadata: meta("holder"),
        spec: Some(pb_coord::LeaseSpec {
            holder_identity: s("me"),
            lease_duration_seconds: Some(15),
            renew_time: Some(pb_meta::MicroTime {
                seconds: Some(1_700_000_000),
                nanos: Some(5_000),
            }),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    };
    let obj = created(
        &srv,
        "/apis/coordination.k8s.io/v1/namespaces/pb-demo/leases",
        envelope("coordination.k8s.io/v1", "Lease", lease.encode_to_vec()),
    )
    .await?;
    ensure!(
        obj["spec"]["renewTime"] == "2023-11-14T22:13:20.000005Z",
        "{obj}"
    );
    ensure!(obj["spec"]["leaseTransitions"] == 0, "{obj}");

    srv.stop().await
}

#[tokio::test]
async fn protobuf_delete_options_are_honoured() -> Result<()> {
    let srv = server().await?;
    let cm = pb::ConfigMap {
        metadata: meta("doomed"),
        ..Default::default()
    };
    let obj = created(
        &srv,
        "/api/v1/namespaces/default/configmaps",
        envelope("v1", "ConfigMap", cm.encode_to_vec()),
    )
    .await?;
    let uid = obj["metadata"]["uid"].as_str().context("uid")?.to_string();
    let opts = |uid: &str| pb_meta::DeleteOptions {
        grace_period_seconds: Some(0),
        preconditions: Some(pb_meta::Preconditions {
            uid: s(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    let path = "/api/v1/namespaces/default/configmaps/doomed";
    // A precondition that does not hold proves the body was read.
    let (code, status) = srv
        .send_pb(
            reqwest::Method::DELETE,
            path,
            envelope("v1", "DeleteOptions", opts("not-the-uid").encode_to_vec()),
        )
        .await?;
    ensure!(
        code == 409 && status["reason"] == "Conflict",
        "{code} {status}"
    );
    let (code, obj) = srv
        .send_pb(
            reqwest::Method::DELETE,
            path,
            envelope("v1", "DeleteOptions", opts(&uid).encode_to_vec()),
        )
        .await?;
    ensure!(code == 200, "{code} {obj}");
    let resp = srv
        .client
        .get(srv.url(path))
        .bearer_auth(&srv.running.admin_token)
        .send()
        .await?;
    ensure!(resp.status() == 404, "still there: {}", resp.status());
    srv.stop().await
}

fn labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), app.to_string())])
}

fn selector(app: &str) -> Option<pb_meta::LabelSelector> {
    Some(pb_meta::LabelSelector {
        match_labels: labels(app),
        match_expressions: vec![],
    })
}

/// A pod template as kubectl's generators build it.
fn template(app: &str, restart: &str) -> Option<pb::PodTemplateSpec> {
    Some(pb::PodTemplateSpec {
        metadata: Some(pb_meta::ObjectMeta {
            labels: labels(app),
            ..meta("").unwrap_or_default()
        }),
        spec: Some(pb::PodSpec {
            containers: vec![pb::Container {
                name: s("hello"),
                image: s("hello:v1"),
                ports: vec![pb::ContainerPort {
                    container_port: Some(8080),
                    host_port: Some(0),
                    protocol: s(""),
                    ..Default::default()
                }],
                resources: Some(pb::ResourceRequirements::default()),
                stdin: Some(false),
                tty: Some(false),
                ..Default::default()
            }],
            restart_policy: s(restart),
            host_network: Some(false),
            ..Default::default()
        }),
    })
}

/// Whether the API server serves `plural` in `group_version`.
async fn served(srv: &Server, group_version: &str, plural: &str) -> Result<bool> {
    let resp = srv
        .client
        .get(srv.url(&format!("/apis/{group_version}")))
        .bearer_auth(&srv.running.admin_token)
        .send()
        .await?;
    if resp.status() != 200 {
        return Ok(false);
    }
    let list: Value = resp.json().await?;
    Ok(list["resources"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r["name"] == plural)))
}

#[tokio::test]
async fn protobuf_workloads_are_stored_with_their_specs() -> Result<()> {
    let srv = server().await?;
    let ns = "/apis/apps/v1/namespaces/default";

    let deploy = pb_apps::Deployment {
        metadata: meta("web"),
        spec: Some(pb_apps::DeploymentSpec {
            replicas: Some(0),
            selector: selector("web"),
            template: template("web", ""),
            strategy: Some(pb_apps::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(pb_apps::RollingUpdateDeployment {
                    max_unavailable: Some(pb_util::IntOrString {
                        r#type: Some(0),
                        int_val: Some(0),
                        str_val: s(""),
                    }),
                    max_surge: Some(pb_util::IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: s("50%"),
                    }),
                }),
            }),
            min_ready_seconds: Some(0),
            paused: Some(false),
            ..Default::default()
        }),
        status: Some(pb_apps::DeploymentStatus {
            replicas: Some(0),
            observed_generation: Some(0),
            ..Default::default()
        }),
    };
    created(
        &srv,
        &format!("{ns}/deployments"),
        envelope("apps/v1", "Deployment", deploy.encode_to_vec()),
    )
    .await?;
    let got = srv.get(&format!("{ns}/deployments/web")).await?;
    let spec = &got["spec"];
    ensure!(spec["replicas"] == 0, "an explicit zero is kept: {got}");
    ensure!(spec["selector"]["matchLabels"]["app"] == "web", "{got}");
    ensure!(
        spec["template"]["metadata"]["labels"]["app"] == "web",
        "{got}"
    );
    ensure!(
        spec["template"]["spec"]["containers"][0]["image"] == "hello:v1",
        "{got}"
    );
    ensure!(
        spec["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 8080,
        "{got}"
    );
    ensure!(
        spec["strategy"]["rollingUpdate"]["maxSurge"] == "50%"
            && spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0,
        "{got}"
    );
    ensure!(spec.get("paused").is_none(), "Go's zero dropped: {got}");

    let rs = pb_apps::ReplicaSet {
        metadata: meta("web-1"),
        spec: Some(pb_apps::ReplicaSetSpec {
            replicas: Some(3),
            min_ready_seconds: Some(0),
            selector: selector("web-1"),
            template: template("web-1", "Always"),
        }),
        status: Some(pb_apps::ReplicaSetStatus {
            replicas: Some(0),
            ..Default::default()
        }),
    };
    created(
        &srv,
        &format!("{ns}/replicasets"),
        envelope("apps/v1", "ReplicaSet", rs.encode_to_vec()),
    )
    .await?;
    let got = srv.get(&format!("{ns}/replicasets/web-1")).await?;
    ensure!(got["spec"]["replicas"] == 3, "{got}");
    ensure!(
        got["spec"]["template"]["spec"]["restartPolicy"] == "Always",
        "{got}"
    );

    let ds = pb_apps::DaemonSet {
        metadata: meta("agent"),
        spec: Some(pb_apps::DaemonSetSpec {
            selector: selector("agent"),
            template: template("agent", "Always"),
            update_strategy: Some(pb_apps::DaemonSetUpdateStrategy {
                r#type: s("OnDelete"),
                rolling_update: None,
            }),
            min_ready_seconds: Some(0),
            revision_history_limit: Some(0),
        }),
        status: Some(pb_apps::DaemonSetStatus::default()),
    };
    created(
        &srv,
        &format!("{ns}/daemonsets"),
        envelope("apps/v1", "DaemonSet", ds.encode_to_vec()),
    )
    .await?;
    let got = srv.get(&format!("{ns}/daemonsets/agent")).await?;
    ensure!(got["spec"]["updateStrategy"]["type"] == "OnDelete", "{got}");
    ensure!(got["spec"]["revisionHistoryLimit"] == 0, "{got}");

    if served(&srv, "batch/v1", "jobs").await? {
        let job = pb_batch::Job {
            metadata: meta("j"),
            spec: Some(pb_batch::JobSpec {
                template: template("j", "Never"),
                backoff_limit: Some(0),
                suspend: Some(false),
                ..Default::default()
            }),
            status: Some(pb_batch::JobStatus {
                active: Some(0),
                succeeded: Some(0),
                failed: Some(0),
                ..Default::default()
            }),
        };
        created(
            &srv,
            "/apis/batch/v1/namespaces/default/jobs",
            envelope("batch/v1", "Job", job.encode_to_vec()),
        )
        .await?;
        let got = srv.get("/apis/batch/v1/namespaces/default/jobs/j").await?;
        ensure!(got["spec"]["backoffLimit"] == 0, "{got}");
        ensure!(got["spec"]["suspend"] == false, "{got}");
        ensure!(
            got["spec"]["template"]["spec"]["containers"][0]["image"] == "hello:v1",
            "{got}"
        );
    } else {
        eprintln!("batch/v1 jobs not served; Job create skipped");
    }
    srv.stop().await
}

#[tokio::test]
async fn undecodable_protobuf_is_a_status_not_a_crash() -> Result<()> {
    let srv = server().await?;
    let path = "/api/v1/namespaces/default/configmaps";
    let (code, status) = srv
        .send_pb(reqwest::Method::POST, path, b"k8s\0\x0a\xff\xff".to_vec())
        .await?;
    ensure!(
        code == 400 && status["reason"] == "BadRequest",
        "{code} {status}"
    );
    let (code, status) = srv
        .send_pb(
            reqwest::Method::POST,
            path,
            envelope("v1", "ConfigMap", vec![0x0a, 0x05, 0x0a]),
        )
        .await?;
    ensure!(code == 400 && status["kind"] == "Status", "{code} {status}");
    let (code, status) = srv
        .send_pb(
            reqwest::Method::POST,
            path,
            envelope("batch/v1", "CronJob", vec![]),
        )
        .await?;
    ensure!(
        code == 415 && status["reason"] == "UnsupportedMediaType",
        "{code} {status}"
    );
    // Patches are JSON only, in Kubernetes too.
    let (code, status) = srv
        .send_pb(
            reqwest::Method::PATCH,
            "/api/v1/namespaces/default",
            envelope("v1", "Namespace", vec![]),
        )
        .await?;
    ensure!(code == 415, "{code} {status}");
    // The server still serves after all that.
    srv.get("/api/v1/namespaces/default").await?;
    srv.stop().await
}

fn kubectl_available() -> Result<bool> {
    let found = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found && std::env::var_os("CI").is_some() {
        bail!("kubectl is required in CI");
    }
    Ok(found)
}

async fn kubectl(srv: &Server, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&srv.running.kubeconfig_path)
        .arg("--cache-dir")
        .arg(srv.dir.path().join("kubectl-cache"))
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .context("kubectl timed out")??;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        out.status.success(),
        "kubectl {args:?}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_generators_send_protobuf_and_work() -> Result<()> {
    if !kubectl_available()? {
        eprintln!("kubectl not on PATH; skipping");
        return Ok(());
    }
    let srv = server().await?;
    let out = kubectl(&srv, &["create", "namespace", "demo"]).await?;
    ensure!(out.trim() == "namespace/demo created", "{out}");
    let out = kubectl(
        &srv,
        &[
            "-n",
            "demo",
            "create",
            "configmap",
            "cfg",
            "--from-literal=a=b",
        ],
    )
    .await?;
    ensure!(out.trim() == "configmap/cfg created", "{out}");
    let out = kubectl(
        &srv,
        &[
            "-n",
            "demo",
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=a=b",
        ],
    )
    .await?;
    ensure!(out.trim() == "secret/creds created", "{out}");

    let a = kubectl(
        &srv,
        &[
            "-n",
            "demo",
            "get",
            "configmap",
            "cfg",
            "-o",
            "jsonpath={.data.a}",
        ],
    )
    .await?;
    ensure!(a == "b", "{a}");
    let a = kubectl(
        &srv,
        &[
            "-n",
            "demo",
            "get",
            "secret",
            "creds",
            "-o",
            "jsonpath={.data.a}",
        ],
    )
    .await?;
    ensure!(a == "Yg==", "{a}");
    let phase = kubectl(
        &srv,
        &["get", "namespace", "demo", "-o", "jsonpath={.status.phase}"],
    )
    .await?;
    ensure!(phase == "Active", "{phase}");

    let out = kubectl(
        &srv,
        &[
            "-n",
            "demo",
            "create",
            "deployment",
            "web",
            "--image=hello:v1",
            "--replicas=2",
            "--port=8080",
        ],
    )
    .await?;
    ensure!(out.trim() == "deployment.apps/web created", "{out}");
    let got: Value = serde_json::from_str(
        &kubectl(
            &srv,
            &["-n", "demo", "get", "deployment", "web", "-o", "json"],
        )
        .await?,
    )?;
    let spec = &got["spec"];
    ensure!(spec["replicas"] == 2, "{got}");
    ensure!(
        spec["selector"] == serde_json::json!({"matchLabels": {"app": "web"}}),
        "{got}"
    );
    ensure!(
        spec["template"]["metadata"]["labels"]["app"] == "web",
        "{got}"
    );
    let container = &spec["template"]["spec"]["containers"][0];
    ensure!(
        container["name"] == "hello" && container["image"] == "hello:v1",
        "{got}"
    );
    ensure!(container["ports"][0]["containerPort"] == 8080, "{got}");

    let jobs = kubectl(&srv, &["api-resources", "--api-group=batch", "-o", "name"]).await?;
    if jobs.lines().any(|l| l == "jobs.batch") {
        let out = kubectl(
            &srv,
            &["-n", "demo", "create", "job", "j", "--image=hello:v1"],
        )
        .await?;
        ensure!(out.trim() == "job.batch/j created", "{out}");
        let got: Value = serde_json::from_str(
            &kubectl(&srv, &["-n", "demo", "get", "job", "j", "-o", "json"]).await?,
        )?;
        let pod = &got["spec"]["template"]["spec"];
        ensure!(pod["restartPolicy"] == "Never", "{got}");
        ensure!(pod["containers"][0]["image"] == "hello:v1", "{got}");
    } else {
        eprintln!("batch/v1 jobs not served; kubectl create job skipped");
    }
    srv.stop().await
}
