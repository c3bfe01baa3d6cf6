//! Authorization through the whole router (`app`, as `start` serves it):
//! node credentials get Kubernetes' Node authorizer + NodeRestriction
//! semantics, the admin is unaffected.

mod common;

use anyhow::{Result, ensure};
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use wasmkube_apiserver::{app, bootstrap};

struct Cluster {
    router: Router,
    admin: String,
    n1: String,
    n2: String,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn cluster() -> Result<Cluster> {
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let state = common::app_state(
        dir.path(),
        common::embedded_store(dir.path())?,
        &["system:node:n1", "system:node:n2"],
        &shutdown,
    )
    .await?;
    bootstrap::ensure_namespaces(&state.registry).await?;
    let token = |u: &str| common::token_of(&state.tokens, u);
    let (admin, n1, n2) = (
        token("admin")?,
        token("system:node:n1")?,
        token("system:node:n2")?,
    );
    let router = app(state);
    Ok(Cluster {
        router,
        admin,
        n1,
        n2,
        shutdown,
        _dir: dir,
    })
}

struct Answer {
    status: StatusCode,
    body: Value,
}

impl Cluster {
    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<String>,
    ) -> Result<Answer> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"));
        if body.is_some() {
            req = req.header("content-type", content_type);
        }
        let req = req.body(body.map(Body::from).unwrap_or_else(Body::empty))?;
        let resp = self.router.clone().oneshot(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }

    async fn get(&self, token: &str, path: &str) -> Result<Answer> {
        self.call(token, Method::GET, path, "", None).await
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> Result<Answer> {
        self.call(
            token,
            Method::POST,
            path,
            "application/json",
            Some(body.to_string()),
        )
        .await
    }

    async fn patch(&self, token: &str, path: &str, body: Value) -> Result<Answer> {
        self.call(
            token,
            Method::PATCH,
            path,
            "application/merge-patch+json",
            Some(body.to_string()),
        )
        .await
    }

    async fn delete(&self, token: &str, path: &str) -> Result<Answer> {
        self.call(token, Method::DELETE, path, "", None).await
    }

    /// Creates as the admin; anything but 201 fails the test.
    async fn seed(&self, path: &str, body: Value) -> Result<()> {
        let a = self.post(&self.admin, path, body).await?;
        ensure!(
            a.status == StatusCode::CREATED,
            "seeding {path}: {} {}",
            a.status,
            a.body
        );
        Ok(())
    }
}

fn expect(a: &Answer, want: StatusCode, what: &str) -> Result<()> {
    ensure!(a.status == want, "{what}: {} {}", a.status, a.body);
    Ok(())
}

/// A 403 in Kubernetes' shape whose message starts with `prefix`.
fn expect_forbidden(a: &Answer, prefix: &str) -> Result<()> {
    expect(a, StatusCode::FORBIDDEN, prefix)?;
    ensure!(a.body["kind"] == "Status", "{}", a.body);
    ensure!(a.body["reason"] == "Forbidden", "{}", a.body);
    ensure!(a.body["code"] == 403, "{}", a.body);
    let msg = a.body["message"].as_str().unwrap_or("");
    ensure!(
        msg.starts_with(prefix),
        "message {msg:?} should start with {prefix:?}"
    );
    Ok(())
}

fn pod(name: &str, node: &str, secret: &str, config_map: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "containers": [{
                "name": "app",
                "image": "hello:v1",
                "env": [{"name": "C", "valueFrom": {"configMapKeyRef": {"name": config_map, "key": "k"}}}]
            }],
            "volumes": [{"name": "s", "secret": {"secretName": secret}}]
        }
    })
}

fn secret(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {"k": "dg=="}})
}

fn config_map(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

fn node_object(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
}

fn lease(name: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40}
    })
}

const PODS: &str = "/api/v1/namespaces/default/pods";
const SECRETS: &str = "/api/v1/namespaces/default/secrets";
const CONFIG_MAPS: &str = "/api/v1/namespaces/default/configmaps";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";

async fn seeded() -> Result<Cluster> {
    let c = cluster().await?;
    for s in ["s1", "s2", "unused"] {
        c.seed(SECRETS, secret(s)).await?;
    }
    for m in ["cm1", "cm2", "cm-unused"] {
        c.seed(CONFIG_MAPS, config_map(m)).await?;
    }
    c.seed(PODS, pod("p1", "n1", "s1", "cm1")).await?;
    c.seed(PODS, pod("p2", "n2", "s2", "cm2")).await?;
    Ok(c)
}

#[tokio::test]
async fn nodes_write_status_only_of_their_own_pods() -> Result<()> {
    let c = seeded().await?;
    let status = json!({"status": {"phase": "Running"}});

    let a = c
        .patch(&c.n1, &format!("{PODS}/p2/status"), status.clone())
        .await?;
    expect_forbidden(
        &a,
        "pods \"p2\" is forbidden: User \"system:node:n1\" cannot patch resource \
         \"pods/status\" in API group \"\" in the namespace \"default\": node \"n1\" can only \
         update pod status for pods with spec.nodeName set to itself",
    )?;
    ensure!(a.body["details"]["kind"] == "pods", "{}", a.body);
    ensure!(a.body["details"]["name"] == "p2", "{}", a.body);
    // Refused means unchanged.
    let p2 = c.get(&c.admin, &format!("{PODS}/p2")).await?;
    ensure!(p2.body["status"]["phase"] != "Running", "{}", p2.body);

    let a = c
        .patch(&c.n1, &format!("{PODS}/p1/status"), status.clone())
        .await?;
    expect(&a, StatusCode::OK, "own pod status")?;
    ensure!(a.body["status"]["phase"] == "Running", "{}", a.body);

    // A pod that does not exist is not found, as Kubernetes answers.
    let a = c
        .patch(&c.n1, &format!("{PODS}/nope/status"), status.clone())
        .await?;
    expect(&a, StatusCode::NOT_FOUND, "missing pod")?;

    // Only status: the pod itself, creation, binding and eviction are not the node's.
    let a = c
        .patch(
            &c.n1,
            &format!("{PODS}/p1"),
            json!({"metadata": {"labels": {"a": "b"}}}),
        )
        .await?;
    expect_forbidden(&a, "pods \"p1\" is forbidden")?;
    let a = c.post(&c.n1, PODS, pod("p3", "n1", "s1", "cm1")).await?;
    expect_forbidden(
        &a,
        "pods is forbidden: User \"system:node:n1\" cannot create",
    )?;
    let a = c
        .post(
            &c.n1,
            &format!("{PODS}/p1/eviction"),
            json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p1"}}),
        )
        .await?;
    expect_forbidden(&a, "pods \"p1\" is forbidden")?;

    // The admin is unaffected.
    let a = c
        .patch(&c.admin, &format!("{PODS}/p2/status"), status)
        .await?;
    expect(&a, StatusCode::OK, "admin patches any pod status")?;
    Ok(())
}

#[tokio::test]
async fn nodes_delete_only_their_own_pods() -> Result<()> {
    let c = seeded().await?;
    let a = c.delete(&c.n1, &format!("{PODS}/p2")).await?;
    expect_forbidden(
        &a,
        "pods \"p2\" is forbidden: User \"system:node:n1\" cannot delete resource \"pods\"",
    )?;
    expect(
        &c.get(&c.admin, &format!("{PODS}/p2")).await?,
        StatusCode::OK,
        "p2 still there",
    )?;
    let a = c.delete(&c.n1, PODS).await?;
    expect_forbidden(
        &a,
        "pods is forbidden: User \"system:node:n1\" cannot deletecollection",
    )?;
    let a = c.delete(&c.n1, &format!("{PODS}/p1")).await?;
    expect(&a, StatusCode::OK, "own pod delete")?;
    Ok(())
}

#[tokio::test]
async fn nodes_read_only_secrets_and_config_maps_their_pods_reference() -> Result<()> {
    let c = seeded().await?;

    let a = c.get(&c.n1, &format!("{SECRETS}/unused")).await?;
    expect_forbidden(
        &a,
        "secrets \"unused\" is forbidden: User \"system:node:n1\" cannot get resource \
         \"secrets\" in API group \"\" in the namespace \"default\": no relationship found \
         between node 'n1' and this object",
    )?;
    // Referenced, but by another node's pod.
    expect_forbidden(
        &c.get(&c.n1, &format!("{SECRETS}/s2")).await?,
        "secrets \"s2\" is forbidden",
    )?;
    let a = c.get(&c.n1, &format!("{SECRETS}/s1")).await?;
    expect(&a, StatusCode::OK, "referenced secret")?;
    ensure!(a.body["data"]["k"] == "dg==", "{}", a.body);
    expect(
        &c.get(&c.n2, &format!("{SECRETS}/s2")).await?,
        StatusCode::OK,
        "n2's referenced secret",
    )?;

    expect(
        &c.get(&c.n1, &format!("{CONFIG_MAPS}/cm1")).await?,
        StatusCode::OK,
        "referenced config map",
    )?;
    expect_forbidden(
        &c.get(&c.n1, &format!("{CONFIG_MAPS}/cm2")).await?,
        "configmaps \"cm2\" is forbidden",
    )?;
    expect_forbidden(
        &c.get(&c.n1, &format!("{CONFIG_MAPS}/cm-unused")).await?,
        "configmaps \"cm-unused\" is forbidden",
    )?;

    // No lists or watches, not even of one name.
    expect_forbidden(
        &c.get(&c.n1, SECRETS).await?,
        "secrets is forbidden: User \"system:node:n1\" cannot list",
    )?;
    expect_forbidden(
        &c.get(&c.n1, "/api/v1/secrets?watch=true").await?,
        "secrets is forbidden: User \"system:node:n1\" cannot watch resource \"secrets\" in \
         API group \"\" at the cluster scope",
    )?;
    expect_forbidden(
        &c.get(
            &c.n1,
            &format!("{SECRETS}?fieldSelector=metadata.name%3Ds1"),
        )
        .await?,
        "secrets \"s1\" is forbidden: User \"system:node:n1\" cannot list",
    )?;

    // A newly bound pod makes its Secret readable; its deletion takes that back.
    c.seed(PODS, pod("p3", "n1", "s2", "cm2")).await?;
    expect(
        &c.get(&c.n1, &format!("{SECRETS}/s2")).await?,
        StatusCode::OK,
        "secret of a newly bound pod",
    )?;
    expect(
        &c.delete(&c.admin, &format!("{PODS}/p3?gracePeriodSeconds=0"))
            .await?,
        StatusCode::OK,
        "deleting p3",
    )?;
    expect_forbidden(
        &c.get(&c.n1, &format!("{SECRETS}/s2")).await?,
        "secrets \"s2\" is forbidden",
    )?;

    // The admin reads everything.
    expect(
        &c.get(&c.admin, &format!("{SECRETS}/unused")).await?,
        StatusCode::OK,
        "admin reads any secret",
    )?;
    expect(
        &c.get(&c.admin, SECRETS).await?,
        StatusCode::OK,
        "admin lists secrets",
    )?;
    Ok(())
}

#[tokio::test]
async fn nodes_register_and_update_only_themselves() -> Result<()> {
    let c = cluster().await?;

    // Create: the name comes from the body.
    let a = c.post(&c.n1, "/api/v1/nodes", node_object("n2")).await?;
    expect_forbidden(
        &a,
        "nodes \"n2\" is forbidden: User \"system:node:n1\" cannot create resource \"nodes\" \
         in API group \"\" at the cluster scope",
    )?;
    expect(
        &c.get(&c.admin, "/api/v1/nodes/n2").await?,
        StatusCode::NOT_FOUND,
        "n2 not created",
    )?;
    // The body is handed on unchanged once read (here as YAML).
    let yaml = "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n  labels:\n    zone: a\n";
    let a = c
        .call(
            &c.n1,
            Method::POST,
            "/api/v1/nodes",
            "application/yaml",
            Some(yaml.to_string()),
        )
        .await?;
    expect(&a, StatusCode::CREATED, "own node")?;
    ensure!(a.body["metadata"]["labels"]["zone"] == "a", "{}", a.body);
    c.seed("/api/v1/nodes", node_object("n2")).await?;

    let label = json!({"metadata": {"labels": {"x": "y"}}});
    let a = c.patch(&c.n1, "/api/v1/nodes/n2", label.clone()).await?;
    expect_forbidden(
        &a,
        "nodes \"n2\" is forbidden: User \"system:node:n1\" cannot patch resource \"nodes\" in \
         API group \"\" at the cluster scope: node \"n1\" is not allowed to modify node \"n2\"",
    )?;
    expect_forbidden(
        &c.patch(&c.n1, "/api/v1/nodes/n2/status", json!({"status": {}}))
            .await?,
        "nodes \"n2\" is forbidden",
    )?;
    expect_forbidden(
        &c.delete(&c.n1, "/api/v1/nodes/n2").await?,
        "nodes \"n2\" is forbidden",
    )?;
    let a = c.patch(&c.n1, "/api/v1/nodes/n1", label.clone()).await?;
    expect(&a, StatusCode::OK, "own node patch")?;
    ensure!(a.body["metadata"]["labels"]["x"] == "y", "{}", a.body);
    expect(
        &c.patch(
            &c.n1,
            "/api/v1/nodes/n1/status",
            json!({"status": {"phase": "Running"}}),
        )
        .await?,
        StatusCode::OK,
        "own node status",
    )?;
    // Reading any node is fine (the node proxy needs their addresses).
    expect(
        &c.get(&c.n1, "/api/v1/nodes/n2").await?,
        StatusCode::OK,
        "read n2",
    )?;
    expect(
        &c.get(&c.n1, "/api/v1/nodes").await?,
        StatusCode::OK,
        "list nodes",
    )?;

    // The admin is unaffected.
    expect(
        &c.patch(&c.admin, "/api/v1/nodes/n2", label).await?,
        StatusCode::OK,
        "admin patches n2",
    )?;
    Ok(())
}

#[tokio::test]
async fn nodes_hold_only_their_own_lease() -> Result<()> {
    let c = cluster().await?;
    let a = c.post(&c.n1, LEASES, lease("n2")).await?;
    expect_forbidden(
        &a,
        "leases.coordination.k8s.io \"n2\" is forbidden: User \"system:node:n1\" cannot create \
         resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \
         \"kube-node-lease\": can only access node lease with the same name as the requesting node",
    )?;
    expect(
        &c.post(&c.n1, LEASES, lease("n1")).await?,
        StatusCode::CREATED,
        "own lease",
    )?;
    expect(
        &c.post(&c.n2, LEASES, lease("n2")).await?,
        StatusCode::CREATED,
        "n2's lease",
    )?;

    let renew = json!({"spec": {"leaseDurationSeconds": 10}});
    expect_forbidden(
        &c.patch(&c.n1, &format!("{LEASES}/n2"), renew.clone())
            .await?,
        "leases.coordination.k8s.io \"n2\" is forbidden",
    )?;
    expect(
        &c.patch(&c.n1, &format!("{LEASES}/n1"), renew).await?,
        StatusCode::OK,
        "renew own lease",
    )?;
    expect(
        &c.get(&c.n1, LEASES).await?,
        StatusCode::OK,
        "list node leases",
    )?;
    // Leases elsewhere (leader election) are not the node's.
    expect_forbidden(
        &c.post(
            &c.n1,
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases",
            json!({"metadata": {"name": "n1"}, "spec": {}}),
        )
        .await?,
        "leases.coordination.k8s.io is forbidden",
    )?;
    Ok(())
}

#[tokio::test]
async fn nodes_reach_events_modules_and_discovery_but_not_the_rest() -> Result<()> {
    let c = seeded().await?;
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "p1.1", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "p1", "namespace": "default"},
        "reason": "Started",
        "message": "started",
        "type": "Normal"
    });
    expect(
        &c.post(&c.n1, "/api/v1/namespaces/default/events", event)
            .await?,
        StatusCode::CREATED,
        "event",
    )?;
    expect(
        &c.patch(
            &c.n1,
            "/api/v1/namespaces/default/events/p1.1",
            json!({"count": 2}),
        )
        .await?,
        StatusCode::OK,
        "event patch",
    )?;
    for path in [
        "/api",
        "/apis",
        "/api/v1",
        "/version",
        "/wasmkube/v1/modules",
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1",
        "/api/v1/services",
        "/apis/discovery.k8s.io/v1/endpointslices",
    ] {
        expect(&c.get(&c.n1, path).await?, StatusCode::OK, path)?;
    }
    expect_forbidden(
        &c.get(&c.n1, "/apis/apps/v1/deployments").await?,
        "deployments.apps is forbidden",
    )?;
    expect_forbidden(
        &c.get(&c.n1, "/metrics").await?,
        "forbidden: User \"system:node:n1\" cannot get path \"/metrics\"",
    )?;
    expect_forbidden(
        &c.call(
            &c.n1,
            Method::PUT,
            "/wasmkube/v1/modules/m/v1",
            "application/wasm",
            Some("\0asm".to_string()),
        )
        .await?,
        "forbidden: User \"system:node:n1\" cannot put path",
    )?;
    expect_forbidden(
        &c.delete(&c.n1, "/api/v1/namespaces/default/events/p1.1")
            .await?,
        "events \"p1.1\" is forbidden",
    )?;
    Ok(())
}
