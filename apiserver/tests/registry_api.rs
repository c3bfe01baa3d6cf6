//! The generic REST layer driven in-process (`oneshot`, no socket) on a real
//! embedded store: CRUD, optimistic concurrency, patches, deletion rules,
//! binding, watch resourceVersion semantics, Tables and bad input.

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
use wasmkube_apiserver::registry::{self, Registry, RegistryOptions};
use wasmkube_apiserver::storage::Store;
use wasmkube_apiserver::storage::embedded::EmbeddedStore;
use wasmkube_apiserver::watch_cache::CacheOptions;

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
const PODS: &str = "/api/v1/namespaces/default/pods";

struct Api {
    _dir: tempfile::TempDir,
    registry: Arc<Registry>,
    store: Arc<dyn Store>,
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
    headers: axum::http::HeaderMap,
    body: Value,
}

async fn api_with(options: RegistryOptions) -> Result<Api> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("store.redb"))?);
    let shutdown = CancellationToken::new();
    let registry = Registry::start_with(store.clone(), options, shutdown.clone()).await?;
    let ns = resources::by_plural("", "v1", "namespaces").context("namespaces")?;
    registry
        .create(
            ns,
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        )
        .await?;
    let router = registry::routes(registry.clone());
    Ok(Api {
        _dir: dir,
        registry,
        store,
        router,
        shutdown,
    })
}

async fn api() -> Result<Api> {
    api_with(RegistryOptions::default()).await
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "hello:v1", "ports": [{"containerPort": 80}]}]}
    })
}

impl Api {
    async fn send(
        &self,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        accept: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Reply> {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        if let Some(a) = accept {
            b = b.header("accept", a);
        }
        let resp = self
            .router
            .clone()
            .oneshot(b.body(Body::from(body))?)
            .await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .with_context(|| String::from_utf8_lossy(&bytes).to_string())?
        };
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
    async fn get(&self, uri: &str) -> Result<Reply> {
        self.send("GET", uri, None, None, Vec::new()).await
    }
    async fn json(&self, method: &str, uri: &str, body: &Value) -> Result<Reply> {
        self.send(
            method,
            uri,
            Some("application/json"),
            None,
            serde_json::to_vec(body)?,
        )
        .await
    }
    async fn patch(&self, uri: &str, ct: &str, body: &Value) -> Result<Reply> {
        self.send("PATCH", uri, Some(ct), None, serde_json::to_vec(body)?)
            .await
    }
    async fn create_pod(&self, name: &str) -> Result<Value> {
        let r = self.json("POST", PODS, &pod(name)).await?;
        ensure!(
            r.status == StatusCode::CREATED,
            "create {name}: {} {}",
            r.status,
            r.body
        );
        Ok(r.body)
    }
    /// Opens a watch and returns its line reader.
    async fn watch(&self, uri: &str, accept: Option<&str>) -> Result<Lines> {
        let mut b = Request::builder().method("GET").uri(uri);
        if let Some(a) = accept {
            b = b.header("accept", a);
        }
        let resp = self.router.clone().oneshot(b.body(Body::empty())?).await?;
        ensure!(
            resp.status() == StatusCode::OK,
            "watch status {}",
            resp.status()
        );
        Ok(Lines {
            body: resp.into_body(),
            buf: Vec::new(),
        })
    }
}

fn rv(v: &Value) -> i64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(-1)
}

struct Lines {
    body: Body,
    buf: Vec<u8>,
}

impl Lines {
    /// The next event, or `None` when the stream ended. Waits at most 10 s.
    async fn next(&mut self) -> Result<Option<Value>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Ok(Some(serde_json::from_slice(&line)?));
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .context("no watch event within 10s")?;
            match frame {
                None => return Ok(None),
                Some(f) => {
                    if let Ok(data) = f?.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
    async fn expect(&mut self, ty: &str, name: &str) -> Result<Value> {
        let ev = self.next().await?.context("watch ended")?;
        if ev["type"] != ty || ev["object"]["metadata"]["name"] != name {
            bail!("expected {ty} {name}, got {ev}");
        }
        Ok(ev)
    }
}

#[tokio::test]
async fn create_get_list_round_trip() -> Result<()> {
    let api = api().await?;
    let created = api.create_pod("p1").await?;
    assert_eq!(created["kind"], "Pod");
    assert_eq!(created["apiVersion"], "v1");
    assert_eq!(created["metadata"]["namespace"], "default");
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(created["status"]["phase"], "Pending");
    assert_eq!(
        created["spec"]["containers"][0]["ports"][0]["protocol"],
        "TCP"
    );
    assert_eq!(created["status"]["qosClass"], "BestEffort");
    assert!(uuid::Uuid::parse_str(created["metadata"]["uid"].as_str().unwrap_or("")).is_ok());
    let ts = created["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap_or("");
    assert!(
        ts.parse::<jiff::Timestamp>().is_ok() && ts.ends_with('Z') && !ts.contains('.'),
        "{ts}"
    );
    assert!(rv(&created) > 0);

    let got = api.get(&format!("{PODS}/p1")).await?;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        got.body, created,
        "GET returns what POST returned, resourceVersion included"
    );

    let list = api.get(&format!("{PODS}?limit=500")).await?;
    assert_eq!(list.body["kind"], "PodList");
    assert_eq!(list.body["apiVersion"], "v1");
    assert!(rv(&list.body) >= rv(&created));
    assert_eq!(list.body["items"][0], created);
    let all = api.get("/api/v1/pods").await?;
    assert_eq!(all.body["items"].as_array().map(Vec::len), Some(1));

    let missing = api.get(&format!("{PODS}/nope")).await?;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body["message"], "pods \"nope\" not found");
    Ok(())
}

#[tokio::test]
async fn bad_input_is_rejected_and_nothing_is_stored() -> Result<()> {
    let api = api().await?;
    let r = api
        .send(
            "POST",
            PODS,
            Some("application/json"),
            None,
            b"{\"kind\": ".to_vec(),
        )
        .await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["kind"], "Status");

    let mut wrong = pod("p");
    wrong["kind"] = json!("Node");
    assert_eq!(
        api.json("POST", PODS, &wrong).await?.status,
        StatusCode::BAD_REQUEST
    );

    let mut other_ns = pod("p");
    other_ns["metadata"]["namespace"] = json!("kube-system");
    assert_eq!(
        api.json("POST", PODS, &other_ns).await?.status,
        StatusCode::BAD_REQUEST
    );

    let r = api.json("POST", PODS, &pod("Bad_Name")).await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["reason"], "Invalid");
    assert!(
        r.body["details"]["causes"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );

    let r = api
        .json("POST", "/api/v1/namespaces/nowhere/pods", &pod("p"))
        .await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["message"], "namespaces \"nowhere\" not found");

    let mut typo = pod("p");
    typo["spec"]["containers"][0]["imagee"] = json!("x");
    let r = api
        .json("POST", &format!("{PODS}?fieldValidation=Strict"), &typo)
        .await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("strict decoding error: unknown field \"spec.containers[0].imagee\""),
        "{}",
        r.body
    );

    let r = api
        .send(
            "POST",
            PODS,
            Some("application/vnd.kubernetes.protobuf"),
            None,
            b"k8s\0".to_vec(),
        )
        .await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let list = api.get(PODS).await?;
    assert_eq!(
        list.body["items"],
        json!([]),
        "failed creates store nothing"
    );

    let r = api
        .json("POST", &format!("{PODS}?fieldValidation=Warn"), &typo)
        .await?;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.headers.get("warning").is_some());
    Ok(())
}

#[tokio::test]
async fn yaml_generate_name_and_duplicates() -> Result<()> {
    let api = api().await?;
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: cfg-\ndata:\n  a: b\n";
    let r = api
        .send(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some("application/yaml"),
            None,
            yaml.into(),
        )
        .await?;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let name = r.body["metadata"]["name"].as_str().unwrap_or("");
    assert!(name.starts_with("cfg-") && name.len() == 9, "{name}");
    assert!(
        name[4..]
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
    );
    assert_eq!(r.body["data"]["a"], "b");

    api.create_pod("dup").await?;
    let r = api.json("POST", PODS, &pod("dup")).await?;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["reason"], "AlreadyExists");
    Ok(())
}

#[tokio::test]
async fn unknown_paths_and_methods() -> Result<()> {
    let api = api().await?;
    let r = api.get("/api/v1/namespaces/default/widgets").await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        r.body["message"],
        "the server could not find the requested resource"
    );
    assert_eq!(
        api.get("/apis/nope.io/v1/things").await?.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get("/api/v1/pods/x").await?.status,
        StatusCode::NOT_FOUND
    );
    let r = api.json("PUT", PODS, &pod("x")).await?;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.body["kind"], "Status");
    // Cluster-scoped: nodes and namespaces themselves.
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
    assert_eq!(
        api.json("POST", "/api/v1/nodes", &node).await?.status,
        StatusCode::CREATED
    );
    let n = api.get("/api/v1/nodes/n1").await?;
    assert_eq!(n.status, StatusCode::OK);
    assert!(n.body["metadata"].get("namespace").is_none());
    assert_eq!(
        api.get("/api/v1/namespaces/default").await?.body["metadata"]["name"],
        "default"
    );
    Ok(())
}

#[tokio::test]
async fn update_uses_optimistic_concurrency_and_keeps_status() -> Result<()> {
    let api = api().await?;
    let created = api.create_pod("p1").await?;
    let uri = format!("{PODS}/p1");

    let mut stale = created.clone();
    stale["metadata"]["resourceVersion"] = json!((rv(&created) - 1).to_string());
    let r = api.json("PUT", &uri, &stale).await?;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["reason"], "Conflict");

    let mut next = created.clone();
    next["metadata"]["labels"]["tier"] = json!("front");
    next["status"]["phase"] = json!("Running");
    next["metadata"]["uid"] = json!("forged");
    let r = api.json("PUT", &uri, &next).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(rv(&r.body) > rv(&created));
    assert_eq!(r.body["metadata"]["labels"]["tier"], "front");
    assert_eq!(
        r.body["status"]["phase"], "Pending",
        "main-resource writes keep status"
    );
    assert_eq!(r.body["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(
        r.body["metadata"]["generation"], 1,
        "metadata changes do not bump generation"
    );

    // Same object again: no write, same resourceVersion.
    let again = api.json("PUT", &uri, &r.body).await?;
    assert_eq!(rv(&again.body), rv(&r.body));

    let mut st = r.body.clone();
    st["status"]["phase"] = json!("Running");
    st["metadata"]["labels"]["ignored"] = json!("yes");
    let s = api.json("PUT", &format!("{uri}/status"), &st).await?;
    assert_eq!(s.status, StatusCode::OK, "{}", s.body);
    assert_eq!(s.body["status"]["phase"], "Running");
    assert!(s.body["metadata"]["labels"].get("ignored").is_none());

    // Unconditional update (no resourceVersion) with a spec change.
    let mut spec = s.body.clone();
    spec["metadata"]
        .as_object_mut()
        .map(|m| m.remove("resourceVersion"));
    spec["spec"]["containers"][0]["image"] = json!("hello:v2");
    let u = api.json("PUT", &uri, &spec).await?;
    assert_eq!(u.status, StatusCode::OK, "{}", u.body);
    assert_eq!(u.body["metadata"]["generation"], 2);
    Ok(())
}

#[tokio::test]
async fn patches_of_every_kind() -> Result<()> {
    let api = api().await?;
    let created = api.create_pod("p1").await?;
    let uri = format!("{PODS}/p1");

    let r = api
        .patch(&uri, "application/strategic-merge-patch+json", &json!({"metadata": {"labels": {"a": "1"}}, "spec": {"$setElementOrder/containers": [{"name": "c"}], "containers": [{"name": "c", "image": "hello:v2"}]}}))
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["metadata"]["labels"]["a"], "1");
    assert_eq!(r.body["spec"]["containers"][0]["image"], "hello:v2");
    assert_eq!(
        r.body["spec"]["containers"][0]["ports"][0]["containerPort"], 80,
        "SMP merges containers by name"
    );
    assert!(rv(&r.body) > rv(&created));

    let r = api
        .patch(
            &uri,
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"a": null, "b": "2"}}}),
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["metadata"]["labels"].get("a").is_none());
    assert_eq!(r.body["metadata"]["labels"]["b"], "2");

    let r = api
        .patch(
            &uri,
            "application/json-patch+json",
            &json!([{"op": "add", "path": "/metadata/annotations", "value": {"x": "y"}}]),
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["metadata"]["annotations"]["x"], "y");

    // A patch that changes nothing writes nothing.
    let before = rv(&r.body);
    let r = api
        .patch(
            &uri,
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"b": "2"}}}),
        )
        .await?;
    assert_eq!(rv(&r.body), before);

    // Stale resourceVersion in a patch is a precondition.
    let r = api
        .patch(
            &uri,
            "application/merge-patch+json",
            &json!({"metadata": {"resourceVersion": "1", "labels": {"c": "3"}}}),
        )
        .await?;
    assert_eq!(r.status, StatusCode::CONFLICT);

    let r = api
        .send("PATCH", &uri, Some("text/plain"), None, b"{}".to_vec())
        .await?;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        api.patch(
            &format!("{PODS}/nope"),
            "application/merge-patch+json",
            &json!({})
        )
        .await?
        .status,
        StatusCode::NOT_FOUND
    );

    // Status patch.
    let r = api
        .patch(
            &format!("{uri}/status"),
            "application/merge-patch+json",
            &json!({"status": {"phase": "Running"}}),
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"]["phase"], "Running");
    Ok(())
}

#[tokio::test]
async fn server_side_apply_creates_then_is_a_no_op() -> Result<()> {
    let api = api().await?;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"k": "v"}});
    let uri = "/api/v1/namespaces/default/configmaps/cfg?fieldManager=kubectl&fieldValidation=Strict&force=false";
    let r = api.patch(uri, "application/apply-patch+yaml", &cm).await?;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let first = rv(&r.body);
    let r = api.patch(uri, "application/apply-patch+yaml", &cm).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        rv(&r.body),
        first,
        "applying the same config twice writes nothing"
    );
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  k: w\n";
    let r = api
        .send(
            "PATCH",
            uri,
            Some("application/apply-patch+yaml"),
            None,
            yaml.into(),
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"]["k"], "w");
    Ok(())
}

#[tokio::test]
async fn delete_unbound_pod_is_immediate_bound_pod_is_graceful() -> Result<()> {
    let api = api().await?;
    api.create_pod("loose").await?;
    let r = api
        .json(
            "DELETE",
            &format!("{PODS}/loose"),
            &json!({"propagationPolicy": "Background"}),
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        api.get(&format!("{PODS}/loose")).await?.status,
        StatusCode::NOT_FOUND
    );

    api.create_pod("bound").await?;
    let b = api.json("POST", &format!("{PODS}/bound/binding"), &json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "bound"}, "target": {"kind": "Node", "name": "n1"}})).await?;
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.body);
    let r = api
        .send("DELETE", &format!("{PODS}/bound"), None, None, Vec::new())
        .await?;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["metadata"]["deletionGracePeriodSeconds"], 30);
    let got = api.get(&format!("{PODS}/bound")).await?;
    assert_eq!(
        got.status,
        StatusCode::OK,
        "graceful deletion keeps the pod until its kubelet confirms"
    );
    let at: jiff::Timestamp = got.body["metadata"]["deletionTimestamp"]
        .as_str()
        .unwrap_or("")
        .parse()?;
    assert!(at > jiff::Timestamp::now());

    // The kubelet's confirmation.
    let r = api
        .json(
            "DELETE",
            &format!("{PODS}/bound"),
            &json!({"gracePeriodSeconds": 0}),
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        api.get(&format!("{PODS}/bound")).await?.status,
        StatusCode::NOT_FOUND
    );

    // Preconditions.
    api.create_pod("pre").await?;
    let r = api
        .json(
            "DELETE",
            &format!("{PODS}/pre"),
            &json!({"preconditions": {"uid": "other"}}),
        )
        .await?;
    assert_eq!(r.status, StatusCode::CONFLICT);
    Ok(())
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() -> Result<()> {
    let api = api().await?;
    let uri = "/api/v1/namespaces/default/configmaps/held";
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "held", "finalizers": ["example.com/keep"]}});
    assert_eq!(
        api.json("POST", "/api/v1/namespaces/default/configmaps", &cm)
            .await?
            .status,
        StatusCode::CREATED
    );
    let r = api.send("DELETE", uri, None, None, Vec::new()).await?;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(api.get(uri).await?.status, StatusCode::OK);
    let r = api
        .patch(
            uri,
            "application/merge-patch+json",
            &json!({"metadata": {"finalizers": null}}),
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(api.get(uri).await?.status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn binding_assigns_a_node_once() -> Result<()> {
    let api = api().await?;
    api.create_pod("p").await?;
    let binding = |node: &str| json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": node}});
    let r = api
        .json("POST", &format!("{PODS}/p/binding"), &binding("n1"))
        .await?;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["status"], "Success");
    let got = api.get(&format!("{PODS}/p")).await?;
    assert_eq!(got.body["spec"]["nodeName"], "n1");
    let r = api
        .json("POST", &format!("{PODS}/p/binding"), &binding("n2"))
        .await?;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("pod p is already assigned to node \"n1\""),
        "{}",
        r.body
    );
    Ok(())
}

#[tokio::test]
async fn watch_from_zero_then_live() -> Result<()> {
    let api = api().await?;
    api.create_pod("a").await?;
    let mut w = api
        .watch(&format!("{PODS}?watch=true&resourceVersion=0"), None)
        .await?;
    w.expect("ADDED", "a").await?;
    let b = api.create_pod("b").await?;
    let ev = w.expect("ADDED", "b").await?;
    assert_eq!(ev["object"], b);
    api.patch(
        &format!("{PODS}/b"),
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"x": "1"}}}),
    )
    .await?;
    w.expect("MODIFIED", "b").await?;
    api.send("DELETE", &format!("{PODS}/b"), None, None, Vec::new())
        .await?;
    let del = w.expect("DELETED", "b").await?;
    assert!(rv(&del["object"]) > rv(&b));
    Ok(())
}

#[tokio::test]
async fn watch_from_list_revision_sends_only_later_events() -> Result<()> {
    let api = api().await?;
    api.create_pod("old").await?;
    let list = api.get(PODS).await?;
    api.create_pod("new").await?;
    let mut w = api
        .watch(
            &format!("{PODS}?watch=1&resourceVersion={}", rv(&list.body)),
            None,
        )
        .await?;
    w.expect("ADDED", "new").await?;
    api.create_pod("newer").await?;
    w.expect("ADDED", "newer").await?;
    Ok(())
}

#[tokio::test]
async fn watch_selectors_follow_transitions() -> Result<()> {
    let api = api().await?;
    let list = api.get(PODS).await?;
    let mut w = api
        .watch(
            &format!(
                "{PODS}?watch=true&labelSelector=tier%3Dfront&resourceVersion={}",
                rv(&list.body)
            ),
            None,
        )
        .await?;
    let mut byname = api
        .watch(
            &format!("{PODS}?watch=true&fieldSelector=metadata.name%3Dp&resourceVersion=0"),
            None,
        )
        .await?;
    api.create_pod("other").await?;
    api.create_pod("p").await?;
    byname.expect("ADDED", "p").await?;
    let uri = format!("{PODS}/p");
    api.patch(
        &uri,
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"tier": "front"}}}),
    )
    .await?;
    w.expect("ADDED", "p").await?;
    api.patch(
        &uri,
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"tier": "back"}}}),
    )
    .await?;
    let gone = w.expect("DELETED", "p").await?;
    assert_eq!(
        gone["object"]["metadata"]["labels"]["tier"], "front",
        "the last matching state is reported"
    );
    byname.expect("MODIFIED", "p").await?;
    byname.expect("MODIFIED", "p").await?;
    Ok(())
}

#[tokio::test]
async fn watch_too_old_is_410_and_timeout_ends_the_stream() -> Result<()> {
    let options = RegistryOptions {
        cache: CacheOptions {
            window: 2,
            ..CacheOptions::default()
        },
        ..RegistryOptions::default()
    };
    let api = api_with(options).await?;
    let first = api.create_pod("a").await?;
    for n in ["b", "c", "d"] {
        api.create_pod(n).await?;
    }
    // Older than the cache window but still in store history: replayed.
    let mut w = api
        .watch(
            &format!("{PODS}?watch=true&resourceVersion={}", rv(&first)),
            None,
        )
        .await?;
    w.expect("ADDED", "b").await?;
    let current = api.store.current_revision().await?;
    api.store.compact(current).await?;
    let mut w = api
        .watch(
            &format!("{PODS}?watch=true&resourceVersion={}", rv(&first)),
            None,
        )
        .await?;
    let ev = w.next().await?.context("error event")?;
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
    assert!(
        w.next().await?.is_none(),
        "the stream closes after the error"
    );

    let mut t = api
        .watch(
            &format!("{PODS}?watch=true&resourceVersion={current}&timeoutSeconds=1"),
            None,
        )
        .await?;
    assert!(t.next().await?.is_none(), "timeoutSeconds ends the watch");
    Ok(())
}

#[tokio::test]
async fn tables_for_get_list_and_watch() -> Result<()> {
    let api = api().await?;
    api.create_pod("a").await?;
    let r = api.send("GET", PODS, None, Some(TABLE), Vec::new()).await?;
    assert_eq!(r.body["kind"], "Table");
    assert_eq!(r.body["apiVersion"], "meta.k8s.io/v1");
    assert!(
        r.body["columnDefinitions"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );
    assert_eq!(r.body["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(
        r.body["rows"][0]["object"]["metadata"]["namespace"],
        "default"
    );
    assert_eq!(r.body["rows"][0]["cells"][0], "a");
    let one = api
        .send("GET", &format!("{PODS}/a"), None, Some(TABLE), Vec::new())
        .await?;
    assert_eq!(one.body["rows"].as_array().map(Vec::len), Some(1));
    let plain = api
        .send(
            "GET",
            &format!("{PODS}/a"),
            None,
            Some("application/vnd.kubernetes.protobuf,application/json"),
            Vec::new(),
        )
        .await?;
    assert_eq!(plain.body["kind"], "Pod");

    let mut w = api
        .watch(&format!("{PODS}?watch=true&resourceVersion=0"), Some(TABLE))
        .await?;
    let e1 = w.next().await?.context("first")?;
    assert_eq!(e1["type"], "ADDED");
    assert_eq!(e1["object"]["kind"], "Table");
    assert!(
        e1["object"]["columnDefinitions"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );
    assert_eq!(e1["object"]["rows"][0]["object"]["metadata"]["name"], "a");
    api.create_pod("b").await?;
    let e2 = w.next().await?.context("second")?;
    assert_eq!(e2["object"]["rows"][0]["object"]["metadata"]["name"], "b");
    assert!(
        e2["object"]["columnDefinitions"]
            .as_array()
            .is_none_or(|c| c.is_empty()),
        "columns only once"
    );
    Ok(())
}

#[tokio::test]
async fn list_limit_and_continue() -> Result<()> {
    let api = api().await?;
    for n in ["a", "b", "c"] {
        api.create_pod(n).await?;
    }
    let page1 = api.get(&format!("{PODS}?limit=2")).await?;
    assert_eq!(page1.body["items"].as_array().map(Vec::len), Some(2));
    let token = page1.body["metadata"]["continue"]
        .as_str()
        .context("continue token")?
        .to_string();
    let page2 = api.get(&format!("{PODS}?limit=2&continue={token}")).await?;
    assert_eq!(page2.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(page2.body["items"][0]["metadata"]["name"], "c");
    assert!(page2.body["metadata"].get("continue").is_none());
    let sel = api
        .get(&format!("{PODS}?labelSelector=app%3Dweb,tier%3Dnone"))
        .await?;
    assert_eq!(sel.body["items"], json!([]));
    let bad = api
        .get(&format!("{PODS}?fieldSelector=spec.bogus%3Dx"))
        .await?;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test]
async fn namespace_deletion_empties_then_removes_it() -> Result<()> {
    let api = api().await?;
    let ns = |n: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}});
    assert_eq!(
        api.json("POST", "/api/v1/namespaces", &ns("empty"))
            .await?
            .status,
        StatusCode::CREATED
    );
    api.send("DELETE", "/api/v1/namespaces/empty", None, None, Vec::new())
        .await?;
    assert_eq!(
        api.get("/api/v1/namespaces/empty").await?.status,
        StatusCode::NOT_FOUND
    );

    assert_eq!(
        api.json("POST", "/api/v1/namespaces", &ns("full"))
            .await?
            .status,
        StatusCode::CREATED
    );
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    assert_eq!(
        api.json("POST", "/api/v1/namespaces/full/configmaps", &cm)
            .await?
            .status,
        StatusCode::CREATED
    );
    let r = api
        .send("DELETE", "/api/v1/namespaces/full", None, None, Vec::new())
        .await?;
    assert_eq!(r.body["status"]["phase"], "Terminating");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while api.get("/api/v1/namespaces/full").await?.status != StatusCode::NOT_FOUND {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "namespace not removed"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(
        api.get("/api/v1/namespaces/full/configmaps/c")
            .await?
            .status,
        StatusCode::NOT_FOUND
    );
    drop(api.registry.clone());
    Ok(())
}

/// The namespace check of a create reads the watch cache: a namespace
/// created a moment ago takes objects at once, one being deleted refuses
/// them (403 while it terminates, 404 once gone), a missing one is 404.
#[tokio::test]
async fn creates_see_the_namespace_as_just_written() -> Result<()> {
    let api = api().await?;
    let cm = |n: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n}});
    for round in 0..20 {
        let ns = format!("fresh-{round}");
        let created = api
            .json(
                "POST",
                "/api/v1/namespaces",
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
            .await?;
        assert_eq!(created.status, StatusCode::CREATED);
        let path = format!("/api/v1/namespaces/{ns}/configmaps");
        assert_eq!(
            api.json("POST", &path, &cm("a")).await?.status,
            StatusCode::CREATED
        );
        api.send(
            "DELETE",
            &format!("/api/v1/namespaces/{ns}"),
            None,
            None,
            Vec::new(),
        )
        .await?;
        let late = api.json("POST", &path, &cm("b")).await?;
        assert!(
            late.status == StatusCode::FORBIDDEN || late.status == StatusCode::NOT_FOUND,
            "round {round}: a create after the namespace's delete answered {}: {}",
            late.status,
            late.body
        );
    }
    let missing = api
        .json("POST", "/api/v1/namespaces/nowhere/configmaps", &cm("c"))
        .await?;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn bookmarks_when_allowed() -> Result<()> {
    let cache = CacheOptions {
        progress_interval: Duration::from_millis(20),
        ..CacheOptions::default()
    };
    let api = api_with(RegistryOptions {
        cache,
        ..RegistryOptions::default()
    })
    .await?;
    let list = api.get(PODS).await?;
    let mut w = api
        .watch(
            &format!(
                "{PODS}?watch=true&allowWatchBookmarks=true&resourceVersion={}",
                rv(&list.body)
            ),
            None,
        )
        .await?;
    let created = api.create_pod("a").await?;
    w.expect("ADDED", "a").await?;
    let bm = w.next().await?.context("bookmark")?;
    assert_eq!(bm["type"], "BOOKMARK");
    assert_eq!(bm["object"]["kind"], "Pod");
    assert_eq!(rv(&bm["object"]), rv(&created));
    Ok(())
}

#[tokio::test]
async fn send_initial_events_ends_with_a_marked_bookmark() -> Result<()> {
    let api = api().await?;
    api.create_pod("a").await?;
    let mut w = api
        .watch(&format!("{PODS}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan"), None)
        .await?;
    w.expect("ADDED", "a").await?;
    let bm = w.next().await?.context("bookmark")?;
    assert_eq!(bm["type"], "BOOKMARK");
    assert_eq!(
        bm["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    Ok(())
}

#[tokio::test]
async fn dry_run_strict_patch_and_delete_collection() -> Result<()> {
    let api = api().await?;
    let r = api
        .json("POST", &format!("{PODS}?dryRun=All"), &pod("ghost"))
        .await?;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        api.get(&format!("{PODS}/ghost")).await?.status,
        StatusCode::NOT_FOUND,
        "dry run stores nothing"
    );

    api.create_pod("p").await?;
    let r = api
        .patch(
            &format!("{PODS}/p?fieldValidation=Strict"),
            "application/merge-patch+json",
            &json!({"spec": {"bogus": 1}}),
        )
        .await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("unknown field \"spec.bogus\""),
        "{}",
        r.body
    );

    let st = api.get(&format!("{PODS}/p/status")).await?;
    assert_eq!(st.body["kind"], "Pod");

    let partial = api
        .send(
            "GET",
            PODS,
            None,
            Some(
                "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json",
            ),
            Vec::new(),
        )
        .await?;
    assert_eq!(partial.body["kind"], "PartialObjectMetadataList");
    assert_eq!(partial.body["items"][0]["metadata"]["name"], "p");
    assert!(partial.body["items"][0].get("spec").is_none());

    api.create_pod("q").await?;
    let r = api
        .send(
            "DELETE",
            &format!("{PODS}?labelSelector=app%3Dweb"),
            None,
            None,
            Vec::new(),
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(api.get(PODS).await?.body["items"], json!([]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_all_land() -> Result<()> {
    let api = Arc::new(api().await?);
    api.create_pod("p").await?;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"metadata": {"labels": {format!("l{i}"): "x"}}});
            api.patch(
                &format!("{PODS}/p"),
                "application/strategic-merge-patch+json",
                &body,
            )
            .await
            .map(|r| r.status)
        }));
    }
    for t in tasks {
        assert_eq!(t.await??, StatusCode::OK);
    }
    let got = api.get(&format!("{PODS}/p")).await?;
    for i in 0..8 {
        assert_eq!(
            got.body["metadata"]["labels"][format!("l{i}")],
            "x",
            "{}",
            got.body
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_node_watch_sees_pods_bound_to_it() -> Result<()> {
    let api = api().await?;
    let mut w = api
        .watch(
            "/api/v1/pods?watch=true&fieldSelector=spec.nodeName%3Dn1&resourceVersion=0",
            None,
        )
        .await?;
    api.create_pod("p").await?;
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}});
    assert_eq!(
        api.json("POST", &format!("{PODS}/p/binding"), &binding)
            .await?
            .status,
        StatusCode::CREATED
    );
    let added = w.expect("ADDED", "p").await?;
    assert_eq!(added["object"]["spec"]["nodeName"], "n1");
    api.send("DELETE", &format!("{PODS}/p"), None, None, Vec::new())
        .await?;
    let marked = w.expect("MODIFIED", "p").await?;
    assert!(marked["object"]["metadata"]["deletionTimestamp"].is_string());
    api.json(
        "DELETE",
        &format!("{PODS}/p"),
        &json!({"gracePeriodSeconds": 0}),
    )
    .await?;
    w.expect("DELETED", "p").await?;
    Ok(())
}

#[tokio::test]
async fn eviction_deletes_like_delete() -> Result<()> {
    let api = api().await?;
    api.create_pod("p").await?;
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p", "namespace": "default"}, "deleteOptions": {"gracePeriodSeconds": 0}});
    let r = api
        .json("POST", &format!("{PODS}/p/eviction"), &eviction)
        .await?;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["status"], "Success");
    assert_eq!(
        api.get(&format!("{PODS}/p")).await?.status,
        StatusCode::NOT_FOUND
    );
    let r = api
        .json("POST", &format!("{PODS}/p/eviction"), &eviction)
        .await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    Ok(())
}

fn nested(levels: usize) -> Value {
    let mut v = json!({});
    for _ in 1..levels {
        v = json!({"x": v});
    }
    v
}

#[tokio::test]
async fn json_patch_copy_bombs_are_422_and_the_server_survives() -> Result<()> {
    let api = api().await?;
    api.create_pod("bomb").await?;
    let uri = format!("{PODS}/bomb?fieldValidation=Ignore");
    // Each copy of /x into /x/x/… doubles the depth.
    let mut path = String::from("/x");
    let mut ops = vec![json!({"op": "add", "path": "/x", "value": {}})];
    for _ in 0..14 {
        path.push_str("/x");
        ops.push(json!({"op": "copy", "from": "/x", "path": path}));
    }
    let r = api
        .patch(&uri, "application/json-patch+json", &Value::Array(ops))
        .await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("levels deep")),
        "{}",
        r.body
    );
    let ops: Vec<Value> = (0..22)
        .map(|i| json!({"op": "copy", "from": "", "path": format!("/k{i}")}))
        .collect();
    let r = api
        .patch(&uri, "application/json-patch+json", &Value::Array(ops))
        .await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("copies more than")),
        "{}",
        r.body
    );
    assert_eq!(r.body["kind"], "Status");
    assert_eq!(
        api.get(&format!("{PODS}/bomb")).await?.status,
        StatusCode::OK
    );
    Ok(())
}

#[tokio::test]
async fn objects_too_deep_to_read_back_are_never_stored() -> Result<()> {
    let api = api().await?;
    api.create_pod("deep").await?;
    let r = api
        .patch(
            &format!("{PODS}/deep?fieldValidation=Ignore"),
            "application/merge-patch+json",
            &json!({"spec": {"unknown": nested(120)}}),
        )
        .await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("levels deep")),
        "{}",
        r.body
    );
    let mut p = pod("deeper");
    p["spec"]["unknown"] = nested(120);
    let r = api
        .send(
            "POST",
            &format!("{PODS}?fieldValidation=Ignore"),
            Some("application/json"),
            None,
            serde_json::to_vec(&p)?,
        )
        .await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    // The kind stays readable.
    assert_eq!(
        api.get(&format!("{PODS}/deep")).await?.status,
        StatusCode::OK
    );
    assert_eq!(api.get(PODS).await?.status, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn watch_from_a_future_resource_version_is_504_too_large() -> Result<()> {
    let options = RegistryOptions {
        cache: CacheOptions {
            freshness_wait: Duration::from_millis(300),
            ..CacheOptions::default()
        },
        ..RegistryOptions::default()
    };
    let api = api_with(options).await?;
    let current = api.store.current_revision().await?;
    let mut w = api
        .watch(
            &format!("{PODS}?watch=true&resourceVersion={}", current + 1000),
            None,
        )
        .await?;
    let ev = w.next().await?.context("error event")?;
    assert_eq!(ev["type"], "ERROR", "{ev}");
    assert_eq!(ev["object"]["code"], 504);
    assert_eq!(ev["object"]["reason"], "Timeout");
    assert_eq!(
        ev["object"]["details"]["causes"][0]["reason"],
        "ResourceVersionTooLarge"
    );
    assert!(w.next().await?.is_none());

    // A revision the store reaches within the wait is served normally.
    let api = Arc::new(api_with(RegistryOptions::default()).await?);
    let next = api.store.current_revision().await? + 1;
    let writer = {
        let api = api.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            api.create_pod("soon").await
        })
    };
    let mut w = api
        .watch(&format!("{PODS}?watch=true&resourceVersion={next}"), None)
        .await?;
    writer.await??;
    api.create_pod("later").await?;
    w.expect("ADDED", "later").await?;
    Ok(())
}

#[tokio::test]
async fn continue_tokens_with_forged_resource_versions_are_rejected() -> Result<()> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let api = api().await?;
    for n in ["a", "b", "c"] {
        api.create_pod(n).await?;
    }
    let page1 = api.get(&format!("{PODS}?limit=1")).await?;
    let token = page1.body["metadata"]["continue"]
        .as_str()
        .context("continue token")?;
    let mut doc: Value = serde_json::from_slice(&b64.decode(token)?)?;
    let current = api.store.current_revision().await?;
    for rv in [0, -5, current + 1000] {
        doc["rv"] = json!(rv);
        let forged = b64.encode(doc.to_string());
        let r = api
            .get(&format!("{PODS}?limit=1&continue={forged}"))
            .await?;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "rv {rv}: {}", r.body);
    }
    // A genuine token still works, until its revision is compacted away.
    let r = api.get(&format!("{PODS}?limit=1&continue={token}")).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    api.create_pod("d").await?;
    let current = api.store.current_revision().await?;
    api.store.compact(current).await?;
    let r = api.get(&format!("{PODS}?limit=1&continue={token}")).await?;
    assert_eq!(r.status, StatusCode::GONE, "{}", r.body);
    assert_eq!(r.body["reason"], "Expired");
    Ok(())
}

#[tokio::test]
async fn negative_grace_period_on_a_bound_pod_is_one_second_not_a_force_delete() -> Result<()> {
    let api = api().await?;
    api.create_pod("bound").await?;
    let b = api.json("POST", &format!("{PODS}/bound/binding"), &json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "bound"}, "target": {"kind": "Node", "name": "n1"}})).await?;
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.body);
    let r = api
        .send(
            "DELETE",
            &format!("{PODS}/bound?gracePeriodSeconds=-1"),
            None,
            None,
            Vec::new(),
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["metadata"]["deletionGracePeriodSeconds"], 1);
    assert_eq!(
        api.get(&format!("{PODS}/bound")).await?.status,
        StatusCode::OK,
        "the kubelet still gets to stop the pod"
    );
    Ok(())
}

#[tokio::test]
async fn huge_grace_periods_are_refused_or_saturated_never_a_panic() -> Result<()> {
    let api = api().await?;
    let mut p = pod("forever");
    p["spec"]["terminationGracePeriodSeconds"] = json!(i64::MAX);
    let r = api.json("POST", PODS, &p).await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    api.create_pod("bound").await?;
    let b = api.json("POST", &format!("{PODS}/bound/binding"), &json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "bound"}, "target": {"kind": "Node", "name": "n1"}})).await?;
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.body);
    let r = api
        .send(
            "DELETE",
            &format!("{PODS}/bound?gracePeriodSeconds={}", i64::MAX),
            None,
            None,
            Vec::new(),
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    Ok(())
}
