//! Services, Endpoints and EndpointSlices through the REST layer on a real
//! embedded store: defaults, ClusterIP and node port allocation (unique
//! across two registries on one store, released on delete and on failed
//! writes), update rules and kubectl's columns.

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
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

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
const SERVICES: &str = "/api/v1/namespaces/default/services";
const IP_KEYS: &str = "/registry/ranges/serviceips/";
const PORT_KEYS: &str = "/registry/ranges/servicenodeports/";

struct Server {
    router: Router,
    _registry: Arc<Registry>,
}

struct Api {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    servers: Vec<Server>,
    shutdown: CancellationToken,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// `n` API servers sharing one store, as several control planes share etcd.
async fn api(n: usize) -> Result<Api> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("store.redb"))?);
    let shutdown = CancellationToken::new();
    let mut servers = Vec::new();
    for _ in 0..n {
        let registry = Registry::start(store.clone(), shutdown.clone()).await?;
        servers.push(Server {
            router: registry::routes(registry.clone()),
            _registry: registry,
        });
    }
    let ns = resources::by_plural("", "v1", "namespaces").context("namespaces")?;
    servers[0]
        ._registry
        .create(
            ns,
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        )
        .await?;
    Ok(Api {
        _dir: dir,
        store,
        servers,
        shutdown,
    })
}

struct Reply {
    status: StatusCode,
    body: Value,
}

impl Api {
    async fn send_to(
        &self,
        server: usize,
        method: &str,
        uri: &str,
        content_type: &str,
        accept: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply> {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", content_type);
        if let Some(a) = accept {
            b = b.header("accept", a);
        }
        let body = match body {
            Some(v) => Body::from(serde_json::to_vec(v)?),
            None => Body::empty(),
        };
        let resp = self.servers[server]
            .router
            .clone()
            .oneshot(b.body(body)?)
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

    async fn post(&self, server: usize, uri: &str, body: &Value) -> Result<Reply> {
        self.send_to(server, "POST", uri, "application/json", None, Some(body))
            .await
    }

    async fn create(&self, body: &Value) -> Result<Value> {
        let r = self.post(0, SERVICES, body).await?;
        ensure!(
            r.status == StatusCode::CREATED,
            "create: {} {}",
            r.status,
            r.body
        );
        Ok(r.body)
    }

    async fn keys(&self, prefix: &str) -> Result<BTreeSet<String>> {
        let page = self.store.range(prefix, None, 0).await?;
        Ok(page
            .kvs
            .into_iter()
            .map(|kv| kv.key.trim_start_matches(prefix).to_string())
            .collect())
    }
}

fn service(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
}

fn web(name: &str) -> Value {
    service(
        name,
        json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}),
    )
}

fn message(r: &Reply) -> String {
    r.body["message"].as_str().unwrap_or("").to_string()
}

#[tokio::test]
async fn cluster_ips_are_allocated_in_range_with_kubernetes_defaults() -> Result<()> {
    let api = api(1).await?;
    let svc = api.create(&web("web")).await?;
    let spec = &svc["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(spec["ports"][0]["protocol"], "TCP");
    assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
    assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
    let ip: std::net::Ipv4Addr = spec["clusterIP"].as_str().context("clusterIP")?.parse()?;
    assert_eq!(spec["clusterIPs"], json!([ip.to_string()]));
    let octets = ip.octets();
    assert!(octets[0] == 10 && (96..=111).contains(&octets[1]), "{ip}");
    assert_eq!(api.keys(IP_KEYS).await?, BTreeSet::from([ip.to_string()]));
    // Defaults survive a read back.
    let got = api
        .send_to(
            0,
            "GET",
            &format!("{SERVICES}/web"),
            "application/json",
            None,
            None,
        )
        .await?;
    assert_eq!(got.body["spec"]["clusterIP"], ip.to_string());
    // A headless Service holds no address.
    let headless = api
        .create(&service(
            "db",
            json!({"clusterIP": "None", "selector": {"app": "db"}}),
        ))
        .await?;
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    assert_eq!(api.keys(IP_KEYS).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_taken_or_foreign_cluster_ip_is_refused_with_422() -> Result<()> {
    let api = api(1).await?;
    let mut first = web("a");
    first["spec"]["clusterIP"] = json!("10.96.0.50");
    assert_eq!(api.create(&first).await?["spec"]["clusterIP"], "10.96.0.50");
    let mut second = web("b");
    second["spec"]["clusterIP"] = json!("10.96.0.50");
    let r = api.post(0, SERVICES, &second).await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(
        message(&r).contains("provided IP is already allocated"),
        "{}",
        r.body
    );
    assert_eq!(r.body["details"]["causes"][0]["field"], "spec.clusterIPs");
    second["spec"]["clusterIP"] = json!("192.168.0.1");
    let r = api.post(0, SERVICES, &second).await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(message(&r).contains("not in the valid range"), "{}", r.body);
    // A create that fails after claiming (the name exists) frees its claim.
    let mut dup = web("a");
    dup["spec"]["clusterIP"] = json!("10.96.0.51");
    let r = api.post(0, SERVICES, &dup).await?;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        api.keys(IP_KEYS).await?,
        BTreeSet::from(["10.96.0.50".to_string()])
    );
    Ok(())
}

#[tokio::test]
async fn deleting_a_service_releases_its_ip_and_node_ports() -> Result<()> {
    let api = api(1).await?;
    let mut svc = web("web");
    svc["spec"]["type"] = json!("NodePort");
    svc["spec"]["clusterIP"] = json!("10.96.0.77");
    svc["spec"]["ports"][0]["nodePort"] = json!(30080);
    api.create(&svc).await?;
    assert_eq!(api.keys(PORT_KEYS).await?, BTreeSet::from(["30080".into()]));
    let r = api
        .send_to(
            0,
            "DELETE",
            &format!("{SERVICES}/web"),
            "application/json",
            None,
            None,
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(api.keys(IP_KEYS).await?.is_empty());
    assert!(api.keys(PORT_KEYS).await?.is_empty());
    // The same values can be had again.
    let again = api.create(&svc).await?;
    assert_eq!(again["spec"]["clusterIP"], "10.96.0.77");
    assert_eq!(again["spec"]["ports"][0]["nodePort"], 30080);
    Ok(())
}

#[tokio::test]
async fn node_ports_are_allocated_validated_and_follow_the_type() -> Result<()> {
    let api = api(1).await?;
    let np = api
        .create(&service(
            "web",
            json!({"type": "NodePort", "selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "admin", "port": 81, "nodePort": 31000}]}),
        ))
        .await?;
    let auto = np["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .context("nodePort")?;
    assert!((30000..=32767).contains(&auto), "{auto}");
    assert_eq!(np["spec"]["ports"][1]["nodePort"], 31000);
    assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
    let taken = api
        .post(
            0,
            SERVICES,
            &service(
                "other",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 31000}]}),
            ),
        )
        .await?;
    assert_eq!(taken.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        taken.body["details"]["causes"][0]["field"],
        "spec.ports[0].nodePort"
    );
    assert!(message(&taken).contains("provided port is already allocated"));
    let out_of_range = api
        .post(
            0,
            SERVICES,
            &service(
                "other",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 8080}]}),
            ),
        )
        .await?;
    assert_eq!(out_of_range.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(message(&out_of_range).contains("30000-32767"));
    // Back to ClusterIP (dropping the node ports, as kubectl would send it)
    // frees both ports; the ClusterIP stays.
    let ip = np["spec"]["clusterIP"].clone();
    let r = api
        .send_to(
            0,
            "PATCH",
            &format!("{SERVICES}/web"),
            "application/merge-patch+json",
            None,
            Some(
                &json!({"spec": {"type": "ClusterIP", "externalTrafficPolicy": null, "ports": [
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "admin", "port": 81}]}}),
            ),
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["spec"]["clusterIP"], ip);
    assert!(api.keys(PORT_KEYS).await?.is_empty());
    // And NodePort again allocates fresh ones.
    let r = api
        .send_to(
            0,
            "PATCH",
            &format!("{SERVICES}/web"),
            "application/merge-patch+json",
            None,
            Some(&json!({"spec": {"type": "NodePort"}})),
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(api.keys(PORT_KEYS).await?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn cluster_ip_is_immutable_but_kept_when_left_out() -> Result<()> {
    let api = api(1).await?;
    let created = api.create(&web("web")).await?;
    let ip = created["spec"]["clusterIP"]
        .as_str()
        .context("ip")?
        .to_string();
    let r = api
        .send_to(
            0,
            "PATCH",
            &format!("{SERVICES}/web"),
            "application/merge-patch+json",
            None,
            Some(&json!({"spec": {"clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"]}})),
        )
        .await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(
        message(&r).contains("may not change once set"),
        "{}",
        r.body
    );
    // A PUT of the manifest without the allocated fields keeps them.
    let mut replace = web("web");
    replace["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"].clone();
    replace["spec"]["ports"][0]["port"] = json!(81);
    let r = api
        .send_to(
            0,
            "PUT",
            &format!("{SERVICES}/web"),
            "application/json",
            None,
            Some(&replace),
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["spec"]["clusterIP"], ip);
    assert_eq!(r.body["spec"]["ports"][0]["port"], 81);
    assert_eq!(api.keys(IP_KEYS).await?, BTreeSet::from([ip]));
    Ok(())
}

#[tokio::test]
async fn two_api_servers_on_one_store_never_hand_out_the_same_value() -> Result<()> {
    let api = Arc::new(api(2).await?);
    // The same chosen IP and node port from both servers at once: one wins.
    let mut racing = Vec::new();
    for server in 0..2 {
        let api = api.clone();
        racing.push(tokio::spawn(async move {
            let svc = service(
                &format!("race-{server}"),
                json!({"type": "NodePort", "clusterIP": "10.100.0.1",
                    "ports": [{"port": 80, "nodePort": 32000}]}),
            );
            api.post(server, SERVICES, &svc).await.map(|r| r.status)
        }));
    }
    let mut statuses = Vec::new();
    for t in racing {
        statuses.push(t.await??);
    }
    statuses.sort();
    assert_eq!(
        statuses,
        vec![StatusCode::CREATED, StatusCode::UNPROCESSABLE_ENTITY]
    );
    // Many automatic allocations spread over both servers are all distinct.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let svc = service(
                &format!("svc-{i}"),
                json!({"type": "NodePort", "ports": [{"port": 80}]}),
            );
            let r = api.post(i % 2, SERVICES, &svc).await?;
            ensure!(r.status == StatusCode::CREATED, "{}", r.body);
            Ok::<_, anyhow::Error>((
                r.body["spec"]["clusterIP"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                r.body["spec"]["ports"][0]["nodePort"].as_i64().unwrap_or(0),
            ))
        }));
    }
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for t in tasks {
        let (ip, port) = t.await??;
        ips.insert(ip);
        ports.insert(port.to_string());
    }
    assert_eq!(ips.len(), 40);
    assert_eq!(ports.len(), 40);
    ips.insert("10.100.0.1".into());
    ports.insert("32000".into());
    assert_eq!(api.keys(IP_KEYS).await?, ips);
    assert_eq!(api.keys(PORT_KEYS).await?, ports);
    Ok(())
}

#[tokio::test]
async fn services_print_kubectl_columns_and_endpoints_are_served() -> Result<()> {
    let api = api(1).await?;
    let mut svc = web("web");
    svc["spec"]["type"] = json!("NodePort");
    svc["spec"]["ports"][0]["nodePort"] = json!(30080);
    svc["spec"]["clusterIP"] = json!("10.96.0.20");
    api.create(&svc).await?;
    let t = api
        .send_to(0, "GET", SERVICES, "application/json", Some(TABLE), None)
        .await?;
    assert_eq!(t.status, StatusCode::OK);
    let names: Vec<&str> = t.body["columnDefinitions"]
        .as_array()
        .context("columns")?
        .iter()
        .filter(|c| c["priority"] == 0)
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age"
        ]
    );
    assert_eq!(
        t.body["rows"][0]["cells"].as_array().context("cells")?[..5],
        [
            json!("web"),
            json!("NodePort"),
            json!("10.96.0.20"),
            json!("<none>"),
            json!("80:30080/TCP")
        ]
    );
    let ep = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
        "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 8080}]}]});
    let r = api
        .post(0, "/api/v1/namespaces/default/endpoints", &ep)
        .await?;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["subsets"][0]["ports"][0]["protocol"], "TCP");
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"generateName": "web-", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "", "port": 8080, "protocol": "TCP"}]});
    let r = api
        .post(
            0,
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            &slice,
        )
        .await?;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(
        r.body["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("web-"))
    );
    let bad = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "bad"}, "addressType": "IPv4", "endpoints": [{"addresses": ["nope"]}]});
    let r = api
        .post(
            0,
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            &bad,
        )
        .await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    Ok(())
}

#[tokio::test]
async fn invalid_services_are_refused_before_anything_is_claimed() -> Result<()> {
    let api = api(1).await?;
    let r = api
        .post(
            0,
            SERVICES,
            &service(
                "web",
                json!({"clusterIP": "10.96.0.5", "ports": [{"port": 80}, {"port": 81}]}),
            ),
        )
        .await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.body["details"]["causes"][0]["field"],
        "spec.ports[0].name"
    );
    assert!(api.keys(IP_KEYS).await?.is_empty());
    Ok(())
}

/// `kubectl create service nodeport web --tcp=80:8080` sends a protobuf
/// body (the generator subcommands use the typed client).
#[tokio::test]
async fn services_are_accepted_as_protobuf_bodies() -> Result<()> {
    use k8s_pb::api::core::v1 as pb;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb_meta;
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
    use prost::Message;

    let svc = pb::Service {
        metadata: Some(pb_meta::ObjectMeta {
            name: Some("web".into()),
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        }),
        spec: Some(pb::ServiceSpec {
            ports: vec![pb::ServicePort {
                name: Some("80-8080".into()),
                protocol: Some("TCP".into()),
                port: Some(80),
                target_port: Some(IntOrString {
                    r#type: Some(0),
                    int_val: Some(8080),
                    str_val: Some(String::new()),
                }),
                node_port: Some(0),
                ..Default::default()
            }],
            selector: [("app".to_string(), "web".to_string())].into(),
            cluster_ip: Some(String::new()),
            r#type: Some("NodePort".into()),
            ..Default::default()
        }),
        status: Some(pb::ServiceStatus::default()),
    };
    let envelope = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
        }),
        raw: Some(svc.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(envelope.encode_to_vec());
    let api = api(1).await?;
    let resp = api.servers[0]
        .router
        .clone()
        .oneshot(
            Request::builder()
                .method("POST")
                .uri(SERVICES)
                .header("content-type", "application/vnd.kubernetes.protobuf")
                .header("accept", "application/json")
                .body(Body::from(body))?,
        )
        .await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let created: Value = serde_json::from_slice(&bytes)?;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let port = &created["spec"]["ports"][0];
    assert_eq!(port["name"], "80-8080");
    assert_eq!(port["targetPort"], 8080);
    assert!(
        port["nodePort"]
            .as_i64()
            .is_some_and(|n| (30000..=32767).contains(&n))
    );
    assert_eq!(created["spec"]["type"], "NodePort");
    assert!(
        created["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10."))
    );
    Ok(())
}

/// A server that died between claiming and writing leaves a claim no
/// Service holds: the repair pass frees it once it is old enough, and
/// leaves held and young claims alone.
#[tokio::test]
async fn repair_frees_old_claims_no_service_holds() -> Result<()> {
    use wasmkube_apiserver::storage::Precondition;
    let api = api(1).await?;
    let mut held = web("web");
    held["spec"]["clusterIP"] = json!("10.96.0.30");
    let uid = api.create(&held).await?["metadata"]["uid"].clone();
    let claim = |name: &str, uid: &Value, at: i64| {
        bytes::Bytes::from(
            json!({"namespace": "default", "name": name, "uid": uid, "at": at}).to_string(),
        )
    };
    let now = jiff::Timestamp::now().as_second();
    for (key, value) in [
        // The Service never got written.
        (
            format!("{IP_KEYS}10.96.0.31"),
            claim("gone", &json!("u1"), 0),
        ),
        // A Service of that name exists but does not hold this value.
        (format!("{PORT_KEYS}30500"), claim("web", &uid, 0)),
        // Young: maybe a write in flight.
        (
            format!("{IP_KEYS}10.96.0.32"),
            claim("soon", &json!("u2"), now),
        ),
        // Old and held: stays.
        (format!("{IP_KEYS}10.96.0.30"), claim("web", &uid, 0)),
    ] {
        api.store.put(&key, value, Precondition::None).await?;
    }
    let freed = api.servers[0]
        ._registry
        .repair_service_allocations(std::time::Duration::from_secs(60))
        .await?;
    assert_eq!(freed, 2);
    assert_eq!(
        api.keys(IP_KEYS).await?,
        BTreeSet::from(["10.96.0.30".to_string(), "10.96.0.32".to_string()])
    );
    assert!(api.keys(PORT_KEYS).await?.is_empty());
    Ok(())
}
