//! apps/v1 Deployments and ReplicaSets through the generic REST layer
//! (`oneshot`, no socket) on a real embedded store: defaults, generation,
//! the status and scale subresources, validation, selector immutability,
//! watch and Tables — what `kubectl apply/scale/rollout/get` rely on.

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
use wasmkube_apiserver::registry::{self, Registry};
use wasmkube_apiserver::storage::Store;
use wasmkube_apiserver::storage::embedded::EmbeddedStore;

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";
const RSS: &str = "/apis/apps/v1/namespaces/default/replicasets";
const MERGE: &str = "application/merge-patch+json";
const SMP: &str = "application/strategic-merge-patch+json";

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
    body: Value,
}

async fn api() -> Result<Api> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("store.redb"))?);
    let shutdown = CancellationToken::new();
    let registry = Registry::start(store, shutdown.clone()).await?;
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

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "hello:v1", "ports": [{"containerPort": 8080}]}]},
            },
        },
    })
}

fn generation(v: &Value) -> i64 {
    v["metadata"]["generation"].as_i64().unwrap_or(-1)
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
        let bytes = resp.into_body().collect().await?.to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .with_context(|| String::from_utf8_lossy(&bytes).to_string())?
        };
        Ok(Reply { status, body })
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
    async fn ok(&self, r: Reply, what: &str) -> Result<Value> {
        ensure!(r.status.is_success(), "{what}: {} {}", r.status, r.body);
        Ok(r.body)
    }
    async fn create(&self, collection: &str, obj: &Value) -> Result<Value> {
        let r = self.json("POST", collection, obj).await?;
        ensure!(
            r.status == StatusCode::CREATED,
            "create: {} {}",
            r.status,
            r.body
        );
        Ok(r.body)
    }
}

#[tokio::test]
async fn deployment_is_created_with_kubernetes_defaults() -> Result<()> {
    let api = api().await?;
    let mut d = deployment("web");
    d["status"] = json!({"replicas": 9, "readyReplicas": 9});
    let created = api.create(DEPLOYS, &d).await?;
    assert_eq!(created["kind"], "Deployment");
    assert_eq!(created["apiVersion"], "apps/v1");
    assert_eq!(generation(&created), 1);
    assert_eq!(
        created["status"],
        json!({}),
        "a client cannot set the status on create"
    );
    let spec = &created["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(pod["containers"][0]["ports"][0]["protocol"], "TCP");
    // The stored object reads back the same.
    let got = api
        .ok(api.get(&format!("{DEPLOYS}/web")).await?, "get")
        .await?;
    assert_eq!(got, created);

    let rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-abc", "labels": {"app": "web", "pod-template-hash": "abc"}},
        "spec": {"selector": {"matchLabels": {"app": "web", "pod-template-hash": "abc"}},
            "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}},
                "spec": {"containers": [{"name": "web", "image": "hello:v1"}]}}},
    });
    let rs = api.create(RSS, &rs).await?;
    assert_eq!(rs["spec"]["replicas"], 1);
    assert_eq!(generation(&rs), 1);
    // Field selectors on metadata.name work for workloads too.
    let list = api
        .ok(
            api.get(&format!("{RSS}?fieldSelector=metadata.name%3Dweb-abc"))
                .await?,
            "list",
        )
        .await?;
    assert_eq!(list["kind"], "ReplicaSetList");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    Ok(())
}

#[tokio::test]
async fn generation_moves_only_with_the_spec() -> Result<()> {
    let api = api().await?;
    let created = api.create(DEPLOYS, &deployment("web")).await?;
    assert_eq!(generation(&created), 1);
    let uri = format!("{DEPLOYS}/web");

    // Labels are metadata: no bump.
    let labelled = api
        .ok(
            api.patch(
                &uri,
                MERGE,
                &json!({"metadata": {"labels": {"tier": "fe"}}}),
            )
            .await?,
            "label",
        )
        .await?;
    assert_eq!(generation(&labelled), 1);

    // `kubectl set image`: a strategic merge of the template bumps it.
    let patched = api
        .ok(
            api.patch(
                &uri,
                SMP,
                &json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "hello:v2"}]}}}}),
            )
            .await?,
            "set image",
        )
        .await?;
    assert_eq!(generation(&patched), 2);
    assert_eq!(
        patched["spec"]["template"]["spec"]["containers"][0]["image"],
        "hello:v2"
    );
    assert_eq!(
        patched["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"], 8080,
        "the container is merged by name"
    );

    // The same patch again changes nothing: no write, no bump.
    let again = api
        .ok(
            api.patch(
                &uri,
                SMP,
                &json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "hello:v2"}]}}}}),
            )
            .await?,
            "again",
        )
        .await?;
    assert_eq!(generation(&again), 2);
    assert_eq!(
        again["metadata"]["resourceVersion"],
        patched["metadata"]["resourceVersion"]
    );

    // A status write (the controller) never bumps it, and a main-resource
    // write cannot change the status.
    let mut with_status = again.clone();
    with_status["status"] = json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1,
        "readyReplicas": 1, "availableReplicas": 1,
        "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]});
    let status = api
        .ok(
            api.json("PUT", &format!("{uri}/status"), &with_status)
                .await?,
            "status",
        )
        .await?;
    assert_eq!(generation(&status), 2);
    assert_eq!(status["status"]["observedGeneration"], 2);

    // The controller records its revision annotation with the status (as
    // Kubernetes' does): no generation bump. Through the main resource an
    // annotation change bumps it, because annotations are copied to the
    // ReplicaSets.
    let mut annotated = status.clone();
    annotated["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "1"});
    let annotated = api
        .ok(
            api.json("PUT", &format!("{uri}/status"), &annotated)
                .await?,
            "status annotation",
        )
        .await?;
    assert_eq!(generation(&annotated), 2);
    assert_eq!(
        annotated["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let main_annotated = api
        .ok(
            api.patch(
                &uri,
                MERGE,
                &json!({"metadata": {"annotations": {"kubernetes.io/change-cause": "x"}}}),
            )
            .await?,
            "main annotation",
        )
        .await?;
    assert_eq!(generation(&main_annotated), 3);
    let hijack = api
        .ok(
            api.patch(&uri, MERGE, &json!({"status": {"replicas": 7}}))
                .await?,
            "main status",
        )
        .await?;
    assert_eq!(hijack["status"]["replicas"], 1);
    assert_eq!(generation(&hijack), 3);

    // `kubectl rollout restart`: an annotation in the template is spec.
    let restarted = api
        .ok(
            api.patch(
                &uri,
                SMP,
                &json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}}),
            )
            .await?,
            "restart",
        )
        .await?;
    assert_eq!(generation(&restarted), 4);
    assert_eq!(restarted["status"]["replicas"], 1);
    Ok(())
}

#[tokio::test]
async fn scale_subresource_reads_and_writes_spec_replicas() -> Result<()> {
    let api = api().await?;
    let created = api.create(DEPLOYS, &deployment("web")).await?;
    let scale_uri = format!("{DEPLOYS}/web/scale");
    let scale = api.ok(api.get(&scale_uri).await?, "get scale").await?;
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["metadata"]["name"], "web");
    assert_eq!(scale["metadata"]["namespace"], "default");
    assert_eq!(scale["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(
        scale["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );
    assert_eq!(scale["spec"], json!({"replicas": 1}));
    assert_eq!(
        scale["status"],
        json!({"replicas": 0, "selector": "app=web"})
    );

    // `kubectl scale --replicas=4`.
    let scaled = api
        .ok(
            api.patch(&scale_uri, MERGE, &json!({"spec": {"replicas": 4}}))
                .await?,
            "scale",
        )
        .await?;
    assert_eq!(scaled["spec"]["replicas"], 4);
    let d = api
        .ok(api.get(&format!("{DEPLOYS}/web")).await?, "get")
        .await?;
    assert_eq!(d["spec"]["replicas"], 4);
    assert_eq!(generation(&d), 2);
    assert_eq!(
        d["metadata"]["resourceVersion"],
        scaled["metadata"]["resourceVersion"]
    );

    // PUT with a stale resourceVersion is a conflict; with the current one it works.
    let stale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": "web", "namespace": "default", "resourceVersion": created["metadata"]["resourceVersion"]},
        "spec": {"replicas": 2}});
    let r = api.json("PUT", &scale_uri, &stale).await?;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let mut fresh = stale.clone();
    fresh["metadata"]["resourceVersion"] = scaled["metadata"]["resourceVersion"].clone();
    let put = api
        .ok(api.json("PUT", &scale_uri, &fresh).await?, "put scale")
        .await?;
    assert_eq!(put["spec"]["replicas"], 2);

    // JSON patch and strategic merge work on the Scale too.
    let jp = api
        .ok(
            api.patch(
                &scale_uri,
                "application/json-patch+json",
                &json!([{"op": "replace", "path": "/spec/replicas", "value": 0}]),
            )
            .await?,
            "json patch",
        )
        .await?;
    assert_eq!(jp["spec"]["replicas"], 0);
    let smp = api
        .ok(
            api.patch(&scale_uri, SMP, &json!({"spec": {"replicas": 3}}))
                .await?,
            "smp",
        )
        .await?;
    assert_eq!(smp["spec"]["replicas"], 3);

    // Negative replicas are a 422 about the Scale.
    let r = api
        .patch(&scale_uri, MERGE, &json!({"spec": {"replicas": -1}}))
        .await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["details"]["kind"], "Scale");
    assert_eq!(r.body["details"]["causes"][0]["field"], "spec.replicas");

    // The scale of a missing object is a 404; resources without scale have none.
    let r = api.get(&format!("{DEPLOYS}/nope/scale")).await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api.get("/api/v1/namespaces/default/pods/x/scale").await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api
        .send(
            "PATCH",
            &scale_uri,
            Some("text/plain"),
            None,
            b"{}".to_vec(),
        )
        .await?;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // ReplicaSets scale the same way.
    let rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-abc"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "pod-template-hash", "operator": "In", "values": ["abc"]}]},
            "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}},
                "spec": {"containers": [{"name": "web", "image": "hello:v1"}]}}},
    });
    api.create(RSS, &rs).await?;
    let rs_scale = api
        .ok(api.get(&format!("{RSS}/web-abc/scale")).await?, "rs scale")
        .await?;
    assert_eq!(rs_scale["spec"]["replicas"], 2);
    assert_eq!(
        rs_scale["status"]["selector"],
        "app=web,pod-template-hash in (abc)"
    );
    Ok(())
}

#[tokio::test]
async fn invalid_workloads_are_rejected() -> Result<()> {
    let api = api().await?;
    let mut d = deployment("web");
    d["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    let r = api.json("POST", DEPLOYS, &d).await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["reason"], "Invalid");
    assert_eq!(r.body["details"]["kind"], "Deployment");
    assert_eq!(r.body["details"]["group"], "apps");
    let msg = r.body["message"].as_str().unwrap_or("");
    assert!(
        msg.starts_with("Deployment.apps \"web\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`"),
        "{msg}"
    );

    let mut d = deployment("web");
    d["spec"]["replicas"] = json!(-2);
    d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("");
    let r = api.json("POST", DEPLOYS, &d).await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = r.body["details"]["causes"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["field"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        fields,
        vec!["spec.replicas", "spec.template.spec.containers[0].image"]
    );

    let mut d = deployment("web");
    d["spec"]
        .as_object_mut()
        .context("spec")?
        .remove("selector");
    let r = api.json("POST", DEPLOYS, &d).await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["details"]["causes"][0]["field"], "spec.selector");

    // Strict field validation names unknown template fields.
    let mut d = deployment("web");
    d["spec"]["template"]["spec"]["containers"][0]["imagee"] = json!("x");
    let r = api
        .json("POST", &format!("{DEPLOYS}?fieldValidation=Strict"), &d)
        .await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("unknown field \"spec.template.spec.containers[0].imagee\""),
        "{}",
        r.body
    );

    // Nothing was stored.
    let r = api.get(&format!("{DEPLOYS}/web")).await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn selectors_are_immutable() -> Result<()> {
    let api = api().await?;
    api.create(DEPLOYS, &deployment("web")).await?;
    let uri = format!("{DEPLOYS}/web");
    let r = api
        .patch(
            &uri,
            MERGE,
            &json!({"spec": {"selector": {"matchLabels": {"app": "web", "v": "2"}},
                "template": {"metadata": {"labels": {"app": "web", "v": "2"}}}}}),
        )
        .await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let causes = r.body["details"]["causes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(
        causes.iter().any(|c| c["field"] == "spec.selector"
            && c["message"]
                .as_str()
                .is_some_and(|m| m.ends_with("field is immutable"))),
        "{}",
        r.body
    );
    // Template labels may still change while the selector matches.
    let ok = api
        .patch(
            &uri,
            MERGE,
            &json!({"spec": {"template": {"metadata": {"labels": {"app": "web", "v": "2"}}}}}),
        )
        .await?;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    Ok(())
}

#[tokio::test]
async fn tables_show_workload_columns() -> Result<()> {
    let api = api().await?;
    let mut d = deployment("web");
    d["spec"]["replicas"] = json!(3);
    api.create(DEPLOYS, &d).await?;
    let r = api
        .send("GET", DEPLOYS, None, Some(TABLE), Vec::new())
        .await?;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["kind"], "Table");
    let cols: Vec<&str> = r.body["columnDefinitions"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        cols,
        vec![
            "Name",
            "Ready",
            "Up-to-date",
            "Available",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    let cells = &r.body["rows"][0]["cells"];
    assert_eq!(cells[0], "web");
    assert_eq!(cells[1], "0/3");
    assert_eq!(cells[2], 0);
    assert_eq!(cells[3], 0);
    assert_eq!(cells[5], "web");
    assert_eq!(cells[6], "hello:v1");
    assert_eq!(cells[7], "app=web");
    assert_eq!(
        r.body["rows"][0]["object"]["metadata"]["labels"]["app"],
        "web"
    );

    let rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-abc"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "hello:v1"}]}}},
    });
    api.create(RSS, &rs).await?;
    let r = api
        .send(
            "GET",
            &format!("{RSS}/web-abc"),
            None,
            Some(TABLE),
            Vec::new(),
        )
        .await?;
    let cols: Vec<&str> = r.body["columnDefinitions"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        cols,
        vec![
            "Name",
            "Desired",
            "Current",
            "Ready",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    let cells = &r.body["rows"][0]["cells"];
    if cells[0] != "web-abc" || cells[1] != 3 || cells[2] != 0 || cells[3] != 0 {
        bail!("unexpected ReplicaSet row {cells}");
    }
    Ok(())
}

#[tokio::test]
async fn rollout_status_watch_sees_status_updates() -> Result<()> {
    // `kubectl rollout status`: list by name at RV 0, then watch from the list RV.
    let api = api().await?;
    api.create(DEPLOYS, &deployment("web")).await?;
    let list = api
        .ok(
            api.get(&format!(
                "{DEPLOYS}?fieldSelector=metadata.name%3Dweb&resourceVersion=0"
            ))
            .await?,
            "list",
        )
        .await?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .context("list rv")?
        .to_string();
    let req = Request::builder().uri(format!(
        "{DEPLOYS}?fieldSelector=metadata.name%3Dweb&resourceVersion={rv}&watch=true&timeoutSeconds=10"
    ));
    let resp = api.router.clone().oneshot(req.body(Body::empty())?).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();

    let mut d = list["items"][0].clone();
    d["status"] = json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1});
    api.ok(
        api.json("PUT", &format!("{DEPLOYS}/web/status"), &d)
            .await?,
        "status",
    )
    .await?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut buf = Vec::new();
    let event: Value = loop {
        if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            break serde_json::from_slice(&line)?;
        }
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .context("no watch event within 10s")?
            .context("watch ended")??;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
    };
    assert_eq!(event["type"], "MODIFIED");
    assert_eq!(event["object"]["status"]["updatedReplicas"], 1);
    assert_eq!(event["object"]["metadata"]["generation"], 1);
    Ok(())
}
