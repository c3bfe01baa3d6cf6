//! Admission driven in-process (`oneshot`) on a real embedded store:
//! ResourceQuota charging, its status and its safety under concurrent
//! creates, LimitRange defaults and bounds, the node pod policy (hostPath,
//! per-pod maximums), and strict field validation.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use wasmkube_api::resources;
use wasmkube_apiserver::admission::Policy;
use wasmkube_apiserver::registry::{self, Registry, RegistryOptions};
use wasmkube_apiserver::storage::Store;
use wasmkube_apiserver::storage::embedded::EmbeddedStore;

const NS: &str = "/api/v1/namespaces/default";

struct Api {
    _dir: tempfile::TempDir,
    router: Router,
    shutdown: CancellationToken,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

struct Reply {
    status: StatusCode,
    warnings: Vec<String>,
    body: Value,
}

impl Reply {
    fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }
}

async fn api_with(policy: Policy) -> Result<Api> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("store.redb"))?);
    let shutdown = CancellationToken::new();
    let options = RegistryOptions {
        admission: policy,
        ..RegistryOptions::default()
    };
    let registry = Registry::start_with(store, options, shutdown.clone()).await?;
    let ns = resources::by_plural("", "v1", "namespaces").context("namespaces")?;
    registry
        .create(
            ns,
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        )
        .await?;
    Ok(Api {
        _dir: dir,
        router: registry::routes(registry),
        shutdown,
    })
}

async fn api() -> Result<Api> {
    api_with(Policy::default()).await
}

impl Api {
    async fn send(&self, method: &str, uri: &str, body: Option<&Value>) -> Result<Reply> {
        let mut b = Request::builder().method(method).uri(uri);
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Body::from(serde_json::to_vec(v)?)
            }
            None => Body::empty(),
        };
        let resp = self.router.clone().oneshot(b.body(body)?).await?;
        let status = resp.status();
        let warnings = resp
            .headers()
            .get_all("warning")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .with_context(|| String::from_utf8_lossy(&bytes).to_string())?
        };
        Ok(Reply {
            status,
            warnings,
            body,
        })
    }

    async fn post(&self, collection: &str, obj: &Value) -> Result<Reply> {
        self.send("POST", &format!("{NS}/{collection}"), Some(obj))
            .await
    }

    async fn created(&self, collection: &str, obj: &Value) -> Result<Value> {
        let r = self.post(collection, obj).await?;
        ensure!(
            r.status == StatusCode::CREATED,
            "create in {collection}: {} {}",
            r.status,
            r.body
        );
        Ok(r.body)
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let r = self.send("GET", &format!("{NS}/{path}"), None).await?;
        ensure!(
            r.status == StatusCode::OK,
            "get {path}: {} {}",
            r.status,
            r.body
        );
        Ok(r.body)
    }

    /// Polls the quota until `status.used` equals `want`.
    async fn wait_used(&self, quota: &str, want: &Value) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let q = self.get(&format!("resourcequotas/{quota}")).await?;
            if &q["status"]["used"] == want {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("quota {quota} used is {}, want {want}", q["status"]["used"]);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn pod(name: &str, resources: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "hello:v1", "resources": resources}]}
    })
}

fn quota(name: &str, hard: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name}, "spec": {"hard": hard}})
}

fn config_map(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

#[tokio::test]
async fn a_pod_over_the_quota_is_forbidden_with_kubernetes_message() -> Result<()> {
    let api = api().await?;
    let q = api
        .created(
            "resourcequotas",
            &quota("compute", json!({"pods": "2", "requests.memory": "1Gi"})),
        )
        .await?;
    // The status is known from the start.
    ensure!(
        q["status"]
            == json!({"hard": {"pods": "2", "requests.memory": "1Gi"}, "used": {"pods": "0", "requests.memory": "0"}}),
        "{}",
        q["status"]
    );
    api.created(
        "pods",
        &pod("small", json!({"requests": {"memory": "512Mi"}})),
    )
    .await?;
    api.wait_used("compute", &json!({"pods": "1", "requests.memory": "512Mi"}))
        .await?;

    let r = api
        .post(
            "pods",
            &pod("big", json!({"requests": {"memory": "768Mi"}})),
        )
        .await?;
    ensure!(r.status == StatusCode::FORBIDDEN, "{} {}", r.status, r.body);
    ensure!(r.body["reason"] == "Forbidden", "{}", r.body);
    ensure!(
        r.message()
            == "pods \"big\" is forbidden: exceeded quota: compute, requested: requests.memory=768Mi, used: requests.memory=512Mi, limited: requests.memory=1Gi",
        "{}",
        r.message()
    );
    // A pod that does not say how much memory it requests cannot be measured.
    let r = api.post("pods", &pod("vague", json!({}))).await?;
    ensure!(r.status == StatusCode::FORBIDDEN, "{} {}", r.status, r.body);
    ensure!(
        r.message()
            == "pods \"vague\" is forbidden: failed quota: compute: must specify requests.memory for: app",
        "{}",
        r.message()
    );
    // A dry run is checked but not charged.
    let r = api
        .send(
            "POST",
            &format!("{NS}/pods?dryRun=All"),
            Some(&pod("dry", json!({"requests": {"memory": "256Mi"}}))),
        )
        .await?;
    ensure!(r.status == StatusCode::CREATED, "{} {}", r.status, r.body);
    api.wait_used("compute", &json!({"pods": "1", "requests.memory": "512Mi"}))
        .await?;

    // Deleting the pod gives its share back.
    let r = api
        .send("DELETE", &format!("{NS}/pods/small"), None)
        .await?;
    ensure!(r.status == StatusCode::OK, "{} {}", r.status, r.body);
    api.wait_used("compute", &json!({"pods": "0", "requests.memory": "0"}))
        .await?;
    api.created(
        "pods",
        &pod("big", json!({"requests": {"memory": "768Mi"}})),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn object_counts_are_limited_per_resource() -> Result<()> {
    let api = api().await?;
    api.created(
        "resourcequotas",
        &quota(
            "counts",
            json!({"count/configmaps": "1", "count/deployments.apps": "0", "secrets": "1"}),
        ),
    )
    .await?;
    api.created("configmaps", &config_map("one")).await?;
    let r = api.post("configmaps", &config_map("two")).await?;
    ensure!(r.status == StatusCode::FORBIDDEN, "{} {}", r.status, r.body);
    ensure!(
        r.message()
            == "configmaps \"two\" is forbidden: exceeded quota: counts, requested: count/configmaps=1, used: count/configmaps=1, limited: count/configmaps=1",
        "{}",
        r.message()
    );
    let deploy = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "hello:v1"}]}}}
    });
    let r = api
        .send(
            "POST",
            "/apis/apps/v1/namespaces/default/deployments",
            Some(&deploy),
        )
        .await?;
    ensure!(r.status == StatusCode::FORBIDDEN, "{} {}", r.status, r.body);
    ensure!(
        r.message().starts_with(
            "deployments.apps \"web\" is forbidden: exceeded quota: counts, requested: count/deployments.apps=1"
        ),
        "{}",
        r.message()
    );
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"}});
    api.created("secrets", &secret).await?;
    let r = api
        .post(
            "secrets",
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s2"}}),
        )
        .await?;
    ensure!(r.status == StatusCode::FORBIDDEN, "{} {}", r.status, r.body);
    api.wait_used(
        "counts",
        &json!({"count/configmaps": "1", "count/deployments.apps": "0", "secrets": "1"}),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn concurrent_creates_never_exceed_the_quota() -> Result<()> {
    let api = Arc::new(api().await?);
    api.created(
        "resourcequotas",
        &quota("three", json!({"count/configmaps": "3"})),
    )
    .await?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let api = api.clone();
        tasks.spawn(async move {
            api.post("configmaps", &config_map(&format!("cm-{i}")))
                .await
        });
    }
    let (mut created, mut forbidden) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let r = r??;
        match r.status {
            StatusCode::CREATED => created += 1,
            StatusCode::FORBIDDEN => forbidden += 1,
            other => bail!("unexpected {other}: {}", r.body),
        }
    }
    ensure!(
        created == 3 && forbidden == 13,
        "created {created}, forbidden {forbidden}"
    );
    let list = api.get("configmaps").await?;
    ensure!(list["items"].as_array().map(Vec::len) == Some(3), "{list}");
    api.wait_used("three", &json!({"count/configmaps": "3"}))
        .await?;
    Ok(())
}

#[tokio::test]
async fn limit_range_defaults_are_filled_in_and_bounds_enforced() -> Result<()> {
    let api = api().await?;
    let lr = api
        .created(
            "limitranges",
            &json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "defaults"},
                "spec": {"limits": [{"type": "Container",
                    "max": {"cpu": "1"},
                    "default": {"memory": "256Mi", "cpu": "500m"},
                    "defaultRequest": {"memory": "128Mi", "cpu": "100m"}}]}}),
        )
        .await?;
    ensure!(
        lr.pointer("/spec/limits/0/max") == Some(&json!({"cpu": "1"})),
        "{lr}"
    );
    let p = api.created("pods", &pod("plain", json!({}))).await?;
    let res = &p["spec"]["containers"][0]["resources"];
    ensure!(
        *res == json!({"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}}),
        "{res}"
    );
    ensure!(
        p["metadata"]["annotations"]["kubernetes.io/limit-ranger"]
            .as_str()
            .is_some_and(|s| s.starts_with("LimitRanger plugin set: ")),
        "{}",
        p["metadata"]
    );
    // Stored so, not only answered so.
    let stored = api.get("pods/plain").await?;
    ensure!(stored["spec"]["containers"][0]["resources"] == *res);

    let r = api
        .post("pods", &pod("greedy", json!({"limits": {"cpu": "2"}})))
        .await?;
    ensure!(r.status == StatusCode::FORBIDDEN, "{} {}", r.status, r.body);
    ensure!(
        r.message()
            == "pods \"greedy\" is forbidden: maximum cpu usage per Container is 1, but limit is 2",
        "{}",
        r.message()
    );
    // An invalid LimitRange is refused.
    let r = api
        .post(
            "limitranges",
            &json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "bad"},
                "spec": {"limits": [{"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}}]}}),
        )
        .await?;
    ensure!(
        r.status == StatusCode::UNPROCESSABLE_ENTITY,
        "{} {}",
        r.status,
        r.body
    );
    Ok(())
}

fn host_path_pod(name: &str, path: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "app", "image": "hello:v1",
                "volumeMounts": [{"name": "host", "mountPath": "/host"}]}],
            "volumes": [{"name": "host", "hostPath": {"path": path}}]
        }
    })
}

#[tokio::test]
async fn host_path_volumes_are_refused_unless_allowed() -> Result<()> {
    let api = api().await?;
    let r = api.post("pods", &host_path_pod("escape", "/etc")).await?;
    ensure!(r.status == StatusCode::FORBIDDEN, "{} {}", r.status, r.body);
    ensure!(
        r.message()
            == "pods \"escape\" is forbidden: hostPath volumes are not allowed by the server's policy: volume \"host\" uses hostPath \"/etc\" (this server allows none; start it with --allow-host-path <dir> to allow a directory)",
        "{}",
        r.message()
    );
    // A workload template gets a warning: its pods will be refused.
    let deploy = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": host_path_pod("x", "/etc")["spec"]}}
    });
    let r = api
        .send(
            "POST",
            "/apis/apps/v1/namespaces/default/deployments",
            Some(&deploy),
        )
        .await?;
    ensure!(r.status == StatusCode::CREATED, "{} {}", r.status, r.body);
    ensure!(
        r.warnings
            .iter()
            .any(|w| w.contains("pods created from this Deployment would be refused: hostPath")),
        "{:?}",
        r.warnings
    );

    let api = api_with(Policy {
        allowed_host_paths: vec![PathBuf::from("/srv/shared")],
        ..Policy::default()
    })
    .await?;
    api.created("pods", &host_path_pod("ok", "/srv/shared/data"))
        .await?;
    let r = api
        .post("pods", &host_path_pod("dotdot", "/srv/shared/../../etc"))
        .await?;
    ensure!(r.status == StatusCode::FORBIDDEN, "{} {}", r.status, r.body);
    Ok(())
}

#[tokio::test]
async fn pods_over_the_server_maximums_are_refused() -> Result<()> {
    let api = api_with(Policy {
        max_pod_memory: Some(256 * 1024 * 1024),
        max_pod_cpu: Some(1000),
        ..Policy::default()
    })
    .await?;
    let r = api
        .post(
            "pods",
            &pod("big", json!({"limits": {"memory": "1Gi", "cpu": "500m"}})),
        )
        .await?;
    ensure!(r.status == StatusCode::FORBIDDEN, "{} {}", r.status, r.body);
    ensure!(
        r.message()
            == "pods \"big\" is forbidden: maximum memory limit per pod is 256Mi (--max-pod-memory), but the pod's limit is 1Gi",
        "{}",
        r.message()
    );
    let r = api.post("pods", &pod("unbounded", json!({}))).await?;
    ensure!(r.status == StatusCode::FORBIDDEN, "{} {}", r.status, r.body);
    ensure!(r.message().contains("--max-pod-cpu"), "{}", r.message());
    api.created(
        "pods",
        &pod("fits", json!({"limits": {"memory": "128Mi", "cpu": "1"}})),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn strict_field_validation_names_the_unknown_field() -> Result<()> {
    let api = api().await?;
    let mut p = pod("typo", json!({}));
    p["spec"]["containers"][0]["imagePullPolicyy"] = json!("Always");
    let r = api
        .send(
            "POST",
            &format!("{NS}/pods?fieldValidation=Strict"),
            Some(&p),
        )
        .await?;
    ensure!(
        r.status == StatusCode::BAD_REQUEST,
        "{} {}",
        r.status,
        r.body
    );
    ensure!(
        r.message()
            == "strict decoding error: unknown field \"spec.containers[0].imagePullPolicyy\"",
        "{}",
        r.message()
    );
    Ok(())
}

#[tokio::test]
async fn names_labels_and_annotation_sizes_are_validated() -> Result<()> {
    let api = api().await?;
    let r = api.post("configmaps", &config_map("Not_A_Name")).await?;
    ensure!(
        r.status == StatusCode::UNPROCESSABLE_ENTITY,
        "{} {}",
        r.status,
        r.body
    );
    let mut cm = config_map("labelled");
    cm["metadata"]["labels"] = json!({"bad key!": "v"});
    let r = api.post("configmaps", &cm).await?;
    ensure!(
        r.status == StatusCode::UNPROCESSABLE_ENTITY,
        "{} {}",
        r.status,
        r.body
    );
    let mut cm = config_map("annotated");
    cm["metadata"]["annotations"] = json!({"big": "x".repeat(256 * 1024 + 1)});
    let r = api.post("configmaps", &cm).await?;
    ensure!(
        r.status == StatusCode::UNPROCESSABLE_ENTITY,
        "{} {}",
        r.status,
        r.body
    );
    ensure!(
        r.message()
            .contains("Too long: must have at most 262144 bytes"),
        "{}",
        r.message()
    );
    Ok(())
}
