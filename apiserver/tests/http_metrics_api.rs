//! `metrics.k8s.io/v1beta1` through the real server with fake kubelets:
//! discovery advertises it the way `kubectl top` looks for it, NodeMetrics
//! and PodMetrics come from each Ready node's `/stats/summary`, selectors
//! apply, a kubelet that does not answer leaves its node out, and missing
//! metrics are a 404 Status.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await?;
        let code = r.status().as_u16();
        Ok((code, r.json().await?))
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let (code, v) = self.send(method, path, body).await?;
        ensure!((200..300).contains(&code), "{path}: {code} {v}");
        Ok(v)
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.ok(reqwest::Method::GET, path, None).await
    }
}

/// A kubelet whose `/stats/summary` reports `summary`.
async fn fake_kubelet(summary: Value) -> Result<u16> {
    let app = axum::Router::new().route(
        "/stats/summary",
        axum::routing::get(move || {
            let summary = summary.clone();
            async move { axum::Json(summary) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(port)
}

/// A kubelet that accepts connections and never answers.
async fn silent_kubelet() -> Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    Ok(port)
}

async fn add_node(api: &Api, name: &str, port: u16, ready: &str, labels: Value) -> Result<()> {
    api.ok(
        reqwest::Method::POST,
        "/api/v1/nodes",
        Some(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}})),
    )
    .await?;
    let mut node = api.get(&format!("/api/v1/nodes/{name}")).await?;
    node["status"] = json!({
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "conditions": [{"type": "Ready", "status": ready}],
    });
    api.ok(
        reqwest::Method::PUT,
        &format!("/api/v1/nodes/{name}/status"),
        Some(node),
    )
    .await?;
    Ok(())
}

async fn add_pod(api: &Api, ns: &str, name: &str, node: &str, labels: Value) -> Result<String> {
    if ns != "default" {
        let _ = api
            .send(
                reqwest::Method::POST,
                "/api/v1/namespaces",
                Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})),
            )
            .await?;
    }
    let pod = api
        .ok(
            reqwest::Method::POST,
            &format!("/api/v1/namespaces/{ns}/pods"),
            Some(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": labels},
                "spec": {"nodeName": node, "containers": [{"name": "main", "image": "idle:v1"}]},
            })),
        )
        .await?;
    Ok(pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

fn pod_stats(ns: &str, name: &str, uid: &str, containers: Value) -> Value {
    json!({
        "podRef": {"name": name, "namespace": ns, "uid": uid},
        "startTime": "2024-01-01T00:00:00Z",
        "containers": containers,
    })
}

fn container(name: &str, nano_cores: Option<u64>, memory: u64) -> Value {
    let mut cpu = json!({"time": "2024-01-02T00:00:00Z", "usageCoreNanoSeconds": 5});
    if let Some(n) = nano_cores {
        cpu["usageNanoCores"] = json!(n);
    }
    json!({
        "name": name,
        "startTime": "2024-01-01T00:00:00Z",
        "cpu": cpu,
        "memory": {"time": "2024-01-02T00:00:00Z", "workingSetBytes": memory},
    })
}

fn node_stats(name: &str, nano_cores: u64, memory: u64) -> Value {
    json!({
        "nodeName": name,
        "cpu": {"time": "2024-01-02T00:00:00Z", "usageNanoCores": nano_cores},
        "memory": {"time": "2024-01-02T00:00:00Z", "workingSetBytes": memory},
    })
}

fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    let m = &i["metadata"];
                    match m["namespace"].as_str() {
                        Some(ns) => format!("{ns}/{}", m["name"].as_str().unwrap_or("")),
                        None => m["name"].as_str().unwrap_or("").to_string(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn metrics_api_serves_kubelet_figures() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let running = common::start_server(dir.path(), &shutdown).await?;
    let api = Api {
        base: running.url.clone(),
        token: running.admin_token.clone(),
        client: common::https_client(&running.ca_pem)?.build()?,
    };

    // Discovery, as kubectl's `SupportedMetricsAPIVersionAvailable` reads it.
    let groups = api.get("/apis").await?;
    let metrics_group = groups["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == "metrics.k8s.io"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        metrics_group["preferredVersion"]["groupVersion"],
        "metrics.k8s.io/v1beta1"
    );
    let aggregated: Value = api
        .client
        .get(format!("{}/apis", api.base))
        .bearer_auth(&api.token)
        .header(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )
        .send()
        .await?
        .json()
        .await?;
    let group = aggregated["items"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["metadata"]["name"] == "metrics.k8s.io"))
        .cloned()
        .unwrap_or_default();
    let resources: Vec<(String, String, String)> = group["versions"][0]["resources"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    (
                        r["resource"].as_str().unwrap_or("").to_string(),
                        r["responseKind"]["kind"].as_str().unwrap_or("").to_string(),
                        r["scope"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        resources,
        [
            ("nodes".into(), "NodeMetrics".into(), "Cluster".into()),
            ("pods".into(), "PodMetrics".into(), "Namespaced".into()),
        ],
        "{group}"
    );
    let legacy = api.get("/apis/metrics.k8s.io/v1beta1").await?;
    assert_eq!(legacy["groupVersion"], "metrics.k8s.io/v1beta1");

    // n1 answers, n2 never answers, n3 is not Ready, n4's kubelet is gone.
    add_node(&api, "n1", 0, "True", json!({"zone": "a"})).await?;
    let web_uid = add_pod(&api, "default", "web", "n1", json!({"app": "web"})).await?;
    let db_uid = add_pod(&api, "default", "db", "n1", json!({"app": "db"})).await?;
    let young_uid = add_pod(&api, "default", "young", "n1", json!({"app": "young"})).await?;
    let sys_uid = add_pod(&api, "kube-system", "dns", "n1", json!({"app": "dns"})).await?;
    add_pod(&api, "remote", "far", "n2", json!({"app": "far"})).await?;
    let summary = json!({
        "node": node_stats("n1", 1_500_000_000, 3 << 30),
        "pods": [
            pod_stats("default", "web", &web_uid, json!([
                container("app", Some(250_000_000), 16 << 20),
                container("side", Some(1_500_000), 13208 * 1024),
            ])),
            pod_stats("default", "db", &db_uid, json!([container("db", Some(12345), 1 << 20)])),
            // Started too recently for a rate: left out, like metrics-server.
            pod_stats("default", "young", &young_uid, json!([container("c", None, 1 << 16)])),
            pod_stats("kube-system", "dns", &sys_uid, json!([container("dns", Some(1_000_000), 1 << 20)])),
        ],
    });
    let port = fake_kubelet(summary).await?;
    let mut n1 = api.get("/api/v1/nodes/n1").await?;
    n1["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] = json!(port);
    api.ok(reqwest::Method::PUT, "/api/v1/nodes/n1/status", Some(n1))
        .await?;
    add_node(
        &api,
        "n2",
        silent_kubelet().await?,
        "True",
        json!({"zone": "b"}),
    )
    .await?;
    let also_answers =
        fake_kubelet(json!({"node": node_stats("n3", 1, 1 << 20), "pods": []})).await?;
    add_node(&api, "n3", also_answers, "Unknown", json!({"zone": "b"})).await?;
    let gone = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        l.local_addr()?.port()
    };
    add_node(&api, "n4", gone, "True", json!({"zone": "b"})).await?;

    // Nodes: only the one that answered.
    let nodes = api.get("/apis/metrics.k8s.io/v1beta1/nodes").await?;
    assert_eq!(nodes["kind"], "NodeMetricsList");
    assert_eq!(nodes["apiVersion"], "metrics.k8s.io/v1beta1");
    assert_eq!(names(&nodes), ["n1"], "{nodes}");
    let n1 = &nodes["items"][0];
    assert_eq!(n1["usage"], json!({"cpu": "1500m", "memory": "3Gi"}));
    assert_eq!(n1["timestamp"], "2024-01-02T00:00:00Z");
    assert_eq!(n1["window"], "10s");
    assert_eq!(n1["metadata"]["labels"]["zone"], "a");
    let one = api.get("/apis/metrics.k8s.io/v1beta1/nodes/n1").await?;
    assert_eq!(one["kind"], "NodeMetrics");
    assert_eq!(one["usage"]["cpu"], "1500m");
    let zone_b = api
        .get("/apis/metrics.k8s.io/v1beta1/nodes?labelSelector=zone%3Db")
        .await?;
    assert_eq!(names(&zone_b), Vec::<String>::new());
    for (path, message) in [
        (
            "/apis/metrics.k8s.io/v1beta1/nodes/n2",
            "nodemetrics.metrics.k8s.io \"n2\" not found",
        ),
        (
            "/apis/metrics.k8s.io/v1beta1/nodes/nope",
            "nodes \"nope\" not found",
        ),
        (
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/young",
            "podmetrics.metrics.k8s.io \"default/young\" not found",
        ),
        (
            "/apis/metrics.k8s.io/v1beta1/namespaces/remote/pods/far",
            "podmetrics.metrics.k8s.io \"remote/far\" not found",
        ),
        (
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope",
            "pods \"nope\" not found",
        ),
    ] {
        let (code, body) = api.send(reqwest::Method::GET, path, None).await?;
        assert_eq!(code, 404, "{path}: {body}");
        assert_eq!(body["kind"], "Status", "{body}");
        assert_eq!(body["reason"], "NotFound", "{body}");
        assert_eq!(body["message"], message, "{body}");
    }

    // Pods: one namespace, all of them, by label, by field, by name.
    let default = api
        .get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods")
        .await?;
    assert_eq!(default["kind"], "PodMetricsList");
    assert_eq!(names(&default), ["default/db", "default/web"], "{default}");
    let web = default["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["metadata"]["name"] == "web"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        web["containers"],
        json!([
            {"name": "app", "usage": {"cpu": "250m", "memory": "16Mi"}},
            {"name": "side", "usage": {"cpu": "1500u", "memory": "13208Ki"}},
        ])
    );
    assert_eq!(web["metadata"]["labels"]["app"], "web");
    assert_eq!(web["window"], "10s");
    let all = api.get("/apis/metrics.k8s.io/v1beta1/pods").await?;
    assert_eq!(
        names(&all),
        ["default/db", "default/web", "kube-system/dns"],
        "{all}"
    );
    let by_label = api
        .get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%20in%20(db)")
        .await?;
    assert_eq!(names(&by_label), ["default/db"]);
    let by_field = api
        .get("/apis/metrics.k8s.io/v1beta1/pods?fieldSelector=metadata.namespace%3Dkube-system")
        .await?;
    assert_eq!(names(&by_field), ["kube-system/dns"]);
    let db = api
        .get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/db")
        .await?;
    assert_eq!(db["kind"], "PodMetrics");
    assert_eq!(db["apiVersion"], "metrics.k8s.io/v1beta1");
    assert_eq!(
        db["containers"],
        json!([{"name": "db", "usage": {"cpu": "12345n", "memory": "1Mi"}}])
    );

    // Bad requests.
    let (code, body) = api
        .send(
            reqwest::Method::GET,
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=a%20in",
            None,
        )
        .await?;
    assert_eq!(code, 400, "{body}");
    let (code, _) = api
        .send(
            reqwest::Method::GET,
            "/apis/metrics.k8s.io/v1beta1/widgets",
            None,
        )
        .await?;
    assert_eq!(code, 404);
    let (code, _) = api
        .send(
            reqwest::Method::GET,
            "/apis/metrics.k8s.io/v1beta1/pods?watch=true",
            None,
        )
        .await?;
    assert_eq!(code, 405);
    let (code, _) = api
        .send(
            reqwest::Method::DELETE,
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web",
            None,
        )
        .await?;
    assert_eq!(code, 405);
    let (code, _) = api
        .send(reqwest::Method::GET, "/apis/metrics.k8s.io/v1/nodes", None)
        .await?;
    assert_eq!(code, 404);

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), running.done).await;
    Ok(())
}
