//! The real server over HTTPS: authentication, version and health, discovery
//! and OpenAPI as kubectl reads them, the module store, body limits, restart
//! on the same data directory, and a Pod round trip.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use wasmkube_apiserver::{Config, Running, start};

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
const AGGREGATED_CT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
/// The smallest valid wasm module: magic and version.
const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

struct Server {
    _dir: Option<tempfile::TempDir>,
    running: Running,
    shutdown: CancellationToken,
    client: reqwest::Client,
}

fn config(dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        max_module_bytes: 1024 * 1024,
        shutdown_grace: Duration::from_secs(2),
        ..Config::default()
    }
}

fn client_for(ca_pem: &str) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes())?)
        .timeout(Duration::from_secs(60))
        .build()?)
}

async fn start_in(dir: &std::path::Path) -> Result<(Running, CancellationToken, reqwest::Client)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let shutdown = CancellationToken::new();
    let running = start(config(dir), shutdown.clone()).await?;
    let client = client_for(&running.ca_pem)?;
    Ok((running, shutdown, client))
}

async fn server() -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let (running, shutdown, client) = start_in(dir.path()).await?;
    Ok(Server {
        _dir: Some(dir),
        running,
        shutdown,
        client,
    })
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url)
    }
    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(self.url(path))
            .bearer_auth(&self.running.admin_token)
    }
    async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.running.done).await??;
        Ok(())
    }
}

fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn expect_status(resp: reqwest::Response, code: u16, reason: &str) -> Result<Value> {
    let got = resp.status().as_u16();
    let ct = content_type(&resp);
    let body: Value = resp.json().await.context("Status body is JSON")?;
    ensure!(got == code, "want {code}, got {got}: {body}");
    ensure!(ct.starts_with("application/json"), "content type {ct}");
    ensure!(
        body["kind"] == "Status" && body["code"] == code && body["reason"] == reason,
        "{body}"
    );
    Ok(body)
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401_status() -> Result<()> {
    let s = server().await?;
    let none = s.client.get(s.url("/api/v1/namespaces")).send().await?;
    expect_status(none, 401, "Unauthorized").await?;
    let wrong = s
        .client
        .get(s.url("/api"))
        .bearer_auth("not-a-token")
        .send()
        .await?;
    expect_status(wrong, 401, "Unauthorized").await?;
    let basic = s
        .client
        .get(s.url("/api"))
        .basic_auth("admin", Some("x"))
        .send()
        .await?;
    expect_status(basic, 401, "Unauthorized").await?;
    let ok = s.get("/api").send().await?;
    ensure!(ok.status() == 200, "admin token rejected: {}", ok.status());
    expect_status(
        s.client.get(s.url("/metrics")).send().await?,
        401,
        "Unauthorized",
    )
    .await?;
    let metrics = s.get("/metrics").send().await?.text().await?;
    ensure!(
        metrics.contains("apiserver_request_total{verb=\"GET\",code=\"401\"}"),
        "{metrics}"
    );
    ensure!(
        metrics.contains("apiserver_current_inflight_requests"),
        "{metrics}"
    );
    for user in ["system:kube-scheduler", "system:kube-controller-manager"] {
        let token = s.running.tokens.get(user).context("component token")?;
        let r = s
            .client
            .get(s.url("/apis"))
            .bearer_auth(token)
            .send()
            .await?;
        ensure!(r.status() == 200, "{user}: {}", r.status());
    }
    s.stop().await
}

#[tokio::test]
async fn version_and_health_are_anonymous() -> Result<()> {
    let s = server().await?;
    let v: Value = s
        .client
        .get(s.url("/version?timeout=5s"))
        .send()
        .await?
        .json()
        .await?;
    ensure!(v["major"] == "1" && v["minor"] == "33", "{v}");
    ensure!(v["gitVersion"] == "v1.33.0-wasmkube", "{v}");
    ensure!(
        v["platform"].as_str().is_some_and(|p| p.contains('/')),
        "{v}"
    );
    for path in ["/healthz", "/livez", "/readyz"] {
        let r = s.client.get(s.url(path)).send().await?;
        ensure!(r.status() == 200, "{path}: {}", r.status());
        ensure!(r.text().await? == "ok", "{path}");
    }
    let verbose = s
        .client
        .get(s.url("/readyz?verbose"))
        .send()
        .await?
        .text()
        .await?;
    ensure!(verbose.contains("readyz check passed"), "{verbose}");
    s.stop().await
}

#[tokio::test]
async fn alpn_offers_http2() -> Result<()> {
    let s = server().await?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut s.running.ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let addr = s.running.url.trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await?;
    let tls = connector
        .connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp)
        .await?;
    ensure!(
        tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice()),
        "h2 not negotiated"
    );
    drop(tls);
    // A client that fails the handshake must not disturb the server.
    let mut junk = tokio::net::TcpStream::connect(&addr).await?;
    tokio::io::AsyncWriteExt::write_all(&mut junk, b"GET / HTTP/1.1\r\n\r\n").await?;
    drop(junk);
    ensure!(s.get("/api").send().await?.status() == 200);
    s.stop().await
}

fn find<'a>(items: &'a [Value], key: &str, value: &str) -> Option<&'a Value> {
    items.iter().find(|i| i[key] == value)
}

#[tokio::test]
async fn aggregated_discovery_is_what_kubectl_reads() -> Result<()> {
    let s = server().await?;
    let r = s.get("/api").header("Accept", AGGREGATED).send().await?;
    ensure!(r.status() == 200);
    ensure!(
        content_type(&r) == AGGREGATED_CT,
        "content type {}",
        content_type(&r)
    );
    let core: Value = r.json().await?;
    ensure!(
        core["kind"] == "APIGroupDiscoveryList" && core["apiVersion"] == "apidiscovery.k8s.io/v2",
        "{core}"
    );
    let items = core["items"].as_array().context("items")?;
    ensure!(items.len() == 1, "core has one group");
    ensure!(
        items[0]["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "core group has an empty name"
    );
    let v1 = &items[0]["versions"][0];
    ensure!(
        v1["version"] == "v1" && v1["freshness"] == "Current",
        "{v1}"
    );
    let resources = v1["resources"].as_array().context("resources")?;
    let pods = find(resources, "resource", "pods").context("pods advertised")?;
    ensure!(
        pods["responseKind"] == json!({"group": "", "version": "v1", "kind": "Pod"}),
        "{pods}"
    );
    ensure!(
        pods["scope"] == "Namespaced" && pods["singularResource"] == "pod",
        "{pods}"
    );
    ensure!(pods["shortNames"] == json!(["po"]), "{pods}");
    ensure!(pods["categories"] == json!(["all"]), "{pods}");
    let subs = pods["subresources"]
        .as_array()
        .context("pod subresources")?;
    for sub in ["status", "log", "binding"] {
        ensure!(
            find(subs, "subresource", sub).is_some(),
            "pods/{sub} missing: {pods}"
        );
    }
    let nodes = find(resources, "resource", "nodes").context("nodes")?;
    ensure!(nodes["scope"] == "Cluster", "{nodes}");

    let r = s.get("/apis").header("Accept", AGGREGATED).send().await?;
    ensure!(content_type(&r) == AGGREGATED_CT);
    let etag = r.headers().get("etag").cloned();
    let groups: Value = r.json().await?;
    let items = groups["items"].as_array().context("items")?;
    let coordination = find(
        &items
            .iter()
            .map(|i| json!({"name": i["metadata"]["name"], "i": i}))
            .collect::<Vec<_>>(),
        "name",
        "coordination.k8s.io",
    )
    .map(|x| x["i"].clone())
    .context("coordination.k8s.io advertised")?;
    ensure!(
        coordination["versions"][0]["resources"][0]["resource"] == "leases",
        "{coordination}"
    );
    for item in items {
        for version in item["versions"].as_array().context("versions")? {
            let n = version["resources"].as_array().map_or(0, Vec::len);
            ensure!(n > 0, "empty group/version advertised: {item}");
        }
    }
    // kubectl revalidates with the ETag.
    if let Some(etag) = etag {
        let r = s
            .get("/apis")
            .header("Accept", AGGREGATED)
            .header("If-None-Match", etag)
            .send()
            .await?;
        ensure!(r.status() == 304, "{}", r.status());
    }
    s.stop().await
}

#[tokio::test]
async fn legacy_discovery_documents() -> Result<()> {
    let s = server().await?;
    let r = s
        .get("/api")
        .header("Accept", "application/json")
        .send()
        .await?;
    ensure!(content_type(&r) == "application/json");
    let api: Value = r.json().await?;
    ensure!(
        api["kind"] == "APIVersions" && api["versions"] == json!(["v1"]),
        "{api}"
    );

    let v1: Value = s.get("/api/v1").send().await?.json().await?;
    ensure!(
        v1["kind"] == "APIResourceList" && v1["groupVersion"] == "v1",
        "{v1}"
    );
    let list = v1["resources"].as_array().context("resources")?;
    let pods = find(list, "name", "pods").context("pods")?;
    ensure!(
        pods["kind"] == "Pod" && pods["namespaced"] == true && pods["singularName"] == "pod",
        "{pods}"
    );
    ensure!(
        pods["verbs"]
            .as_array()
            .is_some_and(|v| v.contains(&json!("watch"))),
        "{pods}"
    );
    for sub in ["pods/status", "pods/log", "pods/binding", "nodes/status"] {
        ensure!(find(list, "name", sub).is_some(), "{sub} missing");
    }
    ensure!(
        find(list, "name", "pods/binding").is_some_and(|b| b["kind"] == "Binding"),
        "binding kind"
    );

    let groups: Value = s.get("/apis").send().await?.json().await?;
    ensure!(groups["kind"] == "APIGroupList", "{groups}");
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .context("groups")?
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    ensure!(
        names.contains(&"coordination.k8s.io") && !names.contains(&""),
        "{names:?}"
    );

    let group: Value = s
        .get("/apis/coordination.k8s.io")
        .send()
        .await?
        .json()
        .await?;
    ensure!(group["kind"] == "APIGroup", "{group}");
    ensure!(
        group["preferredVersion"]["groupVersion"] == "coordination.k8s.io/v1",
        "{group}"
    );
    let gv: Value = s
        .get("/apis/coordination.k8s.io/v1")
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        find(
            gv["resources"].as_array().context("resources")?,
            "name",
            "leases"
        )
        .is_some(),
        "{gv}"
    );

    expect_status(
        s.get("/apis/nope.example.com/v1").send().await?,
        404,
        "NotFound",
    )
    .await?;
    expect_status(s.get("/api/v2").send().await?, 404, "NotFound").await?;
    expect_status(s.get("/no/such/path").send().await?, 404, "NotFound").await?;
    let post = s
        .client
        .post(s.url("/apis"))
        .bearer_auth(&s.running.admin_token)
        .send()
        .await?;
    expect_status(post, 405, "MethodNotAllowed").await?;
    s.stop().await
}

#[tokio::test]
async fn openapi_v3_supports_server_side_field_validation() -> Result<()> {
    let s = server().await?;
    let r = s.get("/openapi/v3").send().await?;
    ensure!(r.status() == 200);
    let index: Value = r.json().await?;
    let url = index["paths"]["api/v1"]["serverRelativeURL"]
        .as_str()
        .context("api/v1 entry")?
        .to_string();
    ensure!(url.starts_with("/openapi/v3/api/v1?hash="), "{url}");
    ensure!(
        index["paths"]["apis/coordination.k8s.io/v1"]["serverRelativeURL"].is_string(),
        "{index}"
    );

    let r = s.get(&url).send().await?;
    ensure!(r.status() == 200);
    let cc = r
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    ensure!(cc.contains("immutable"), "hashed URL cache-control: {cc}");
    let doc: Value = r.json().await?;
    let paths = doc["paths"].as_object().context("paths")?;
    let pod_item = &paths["/api/v1/namespaces/{namespace}/pods/{name}"];
    let patch = &pod_item["patch"];
    ensure!(
        patch["x-kubernetes-group-version-kind"]
            == json!({"group": "", "version": "v1", "kind": "Pod"}),
        "{patch}"
    );
    let params = patch["parameters"].as_array().context("parameters")?;
    ensure!(
        params
            .iter()
            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"),
        "fieldValidation missing"
    );
    // Every kind of the group/version has a PATCH operation kubectl can find.
    let kinds: Vec<String> = paths
        .values()
        .filter_map(|p| {
            p["patch"]["x-kubernetes-group-version-kind"]["kind"]
                .as_str()
                .map(String::from)
        })
        .collect();
    for kind in ["Pod", "Node", "Namespace", "ConfigMap"] {
        ensure!(kinds.iter().any(|k| k == kind), "{kind} has no PATCH path");
    }

    // Without the hash the document is served but must be revalidated.
    let r = s.get("/openapi/v3/api/v1").send().await?;
    let cc = r
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    ensure!(r.status() == 200 && !cc.contains("immutable"), "{cc}");

    expect_status(s.get("/openapi/v2").send().await?, 404, "NotFound").await?;
    expect_status(
        s.get("/openapi/v3/apis/nope/v1").send().await?,
        404,
        "NotFound",
    )
    .await?;
    s.stop().await
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[tokio::test]
async fn module_push_resolve_and_fetch() -> Result<()> {
    let s = server().await?;
    let push = s
        .client
        .put(s.url("/wasmkube/v1/modules/hello/v1"))
        .bearer_auth(&s.running.admin_token)
        .header("Content-Type", "application/wasm")
        .body(EMPTY_MODULE.to_vec())
        .send()
        .await?;
    ensure!(push.status() == 201, "push: {}", push.status());
    let info: Value = push.json().await?;
    let digest = sha256(EMPTY_MODULE);
    ensure!(
        info["name"] == "hello" && info["tag"] == "v1" && info["digest"] == digest.as_str(),
        "{info}"
    );
    ensure!(
        info["size"] == EMPTY_MODULE.len() && info["created"].is_string(),
        "{info}"
    );

    let resolved: Value = s
        .get("/wasmkube/v1/resolve?image=hello:v1")
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        resolved == json!({"digest": digest, "size": EMPTY_MODULE.len()}),
        "{resolved}"
    );
    let by_digest: Value = s
        .get(&format!("/wasmkube/v1/resolve?image=hello@{digest}"))
        .send()
        .await?
        .json()
        .await?;
    ensure!(by_digest["digest"] == digest.as_str(), "{by_digest}");

    let blob = s
        .get(&format!("/wasmkube/v1/blobs/{digest}"))
        .send()
        .await?;
    ensure!(blob.status() == 200 && content_type(&blob) == "application/wasm");
    let bytes = blob.bytes().await?;
    ensure!(sha256(&bytes) == digest, "blob digest mismatch");

    let list: Value = s.get("/wasmkube/v1/modules").send().await?.json().await?;
    ensure!(list["items"].as_array().map_or(0, Vec::len) == 1, "{list}");

    let missing = expect_status(
        s.get("/wasmkube/v1/resolve?image=hello:v9").send().await?,
        404,
        "NotFound",
    )
    .await?;
    ensure!(
        missing["message"] == "module \"hello:v9\" not found",
        "{missing}"
    );
    let absent = format!("sha256:{}", "0".repeat(64));
    expect_status(
        s.get(&format!("/wasmkube/v1/blobs/{absent}"))
            .send()
            .await?,
        404,
        "NotFound",
    )
    .await?;
    expect_status(
        s.get("/wasmkube/v1/blobs/sha256:xyz").send().await?,
        400,
        "BadRequest",
    )
    .await?;
    s.stop().await
}

#[tokio::test]
async fn invalid_wasm_is_422_and_stores_nothing() -> Result<()> {
    let s = server().await?;
    let bad = s
        .client
        .put(s.url("/wasmkube/v1/modules/broken/v1"))
        .bearer_auth(&s.running.admin_token)
        .header("Content-Type", "application/octet-stream")
        .body(b"\0asm\x01\0\0\0\x01\xff".to_vec())
        .send()
        .await?;
    let status = expect_status(bad, 422, "Invalid").await?;
    let msg = status["message"].as_str().unwrap_or("");
    ensure!(
        msg.starts_with("module \"broken:v1\" is invalid: "),
        "{msg}"
    );
    ensure!(!msg.contains('\n'), "one-line message: {msg}");

    // Bytes that are not wasm at all say so plainly.
    let not_wasm = s
        .client
        .put(s.url("/wasmkube/v1/modules/text/v1"))
        .bearer_auth(&s.running.admin_token)
        .header("Content-Type", "application/octet-stream")
        .body(b"not wasm".to_vec())
        .send()
        .await?;
    let status = expect_status(not_wasm, 422, "Invalid").await?;
    let msg = status["message"].as_str().unwrap_or("");
    ensure!(msg.contains("not a WebAssembly binary"), "{msg}");
    expect_status(
        s.get("/wasmkube/v1/resolve?image=broken:v1").send().await?,
        404,
        "NotFound",
    )
    .await?;
    let list: Value = s.get("/wasmkube/v1/modules").send().await?.json().await?;
    ensure!(list["items"] == json!([]), "{list}");

    let bad_name = s
        .client
        .put(s.url("/wasmkube/v1/modules/Bad_Name/v1"))
        .bearer_auth(&s.running.admin_token)
        .body(EMPTY_MODULE.to_vec())
        .send()
        .await?;
    expect_status(bad_name, 422, "Invalid").await?;
    s.stop().await
}

/// A body of `total` bytes sent in 64 KiB chunks with no Content-Length.
fn streamed_body(total: usize) -> reqwest::Body {
    let chunk = bytes::Bytes::from(vec![b' '; 64 * 1024]);
    let n = total.div_ceil(chunk.len());
    let stream = futures::stream::iter((0..n).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    reqwest::Body::wrap_stream(stream)
}

/// The 413 answer, or `None` when the server closed the connection before
/// the client finished sending (some clients report that as an error).
async fn send_oversized(req: reqwest::RequestBuilder) -> Result<Option<reqwest::Response>> {
    match req.send().await {
        Ok(r) => Ok(Some(r)),
        Err(e) if e.is_request() || e.is_body() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test]
async fn oversized_bodies_get_413_status_and_the_server_keeps_serving() -> Result<()> {
    let s = server().await?;
    let pods = s.url("/api/v1/namespaces/default/pods");
    // Declared length over the 3 MiB limit: refused before reading.
    let declared = s
        .client
        .post(&pods)
        .bearer_auth(&s.running.admin_token)
        .header("Content-Type", "application/json")
        .body(vec![b' '; 4 * 1024 * 1024])
        .send()
        .await?;
    expect_status(declared, 413, "RequestEntityTooLarge").await?;

    // 100 MB streamed without Content-Length: cut off at the limit.
    let streamed = s
        .client
        .post(&pods)
        .bearer_auth(&s.running.admin_token)
        .header("Content-Type", "application/json")
        .body(streamed_body(100 * 1024 * 1024));
    match send_oversized(streamed).await? {
        Some(r) => {
            expect_status(r, 413, "RequestEntityTooLarge").await?;
        }
        None => bail!("the streamed request failed without a 413 answer"),
    }

    // Module uploads have their own limit (1 MiB in this test).
    let module = s
        .client
        .put(s.url("/wasmkube/v1/modules/big/v1"))
        .bearer_auth(&s.running.admin_token)
        .body(streamed_body(2 * 1024 * 1024));
    match send_oversized(module).await? {
        Some(r) => {
            expect_status(r, 413, "RequestEntityTooLarge").await?;
        }
        None => bail!("the module upload failed without a 413 answer"),
    }

    ensure!(
        s.get("/api").send().await?.status() == 200,
        "server still serves"
    );
    let v: Value = s.client.get(s.url("/version")).send().await?.json().await?;
    ensure!(v["minor"] == "33");
    s.stop().await
}

#[tokio::test]
async fn restart_reuses_ca_tokens_and_kubeconfig() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (first, shutdown, client) = start_in(dir.path()).await?;
    ensure!(
        client
            .get(format!("{}/version", first.url))
            .send()
            .await?
            .status()
            == 200
    );
    let kubeconfig: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&first.kubeconfig_path)?)?;
    ensure!(kubeconfig["current-context"] == "wasmkube", "{kubeconfig}");
    ensure!(kubeconfig["users"][0]["user"]["token"] == first.admin_token.as_str());
    ensure!(kubeconfig["clusters"][0]["cluster"]["server"] == first.url.as_str());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["kubeconfig", "tokens.csv", "pki/ca.key", "pki/server.key"] {
            let mode = std::fs::metadata(dir.path().join(f))?.permissions().mode() & 0o777;
            ensure!(mode == 0o600, "{f} has mode {mode:o}");
        }
    }
    let (ca, token, tokens, ca_data) = (
        first.ca_pem.clone(),
        first.admin_token.clone(),
        first.tokens.clone(),
        kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"].clone(),
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), first.done).await??;

    let (second, shutdown, client) = start_in(dir.path()).await?;
    ensure!(second.ca_pem == ca, "CA regenerated");
    ensure!(
        second.admin_token == token && second.tokens == tokens,
        "tokens regenerated"
    );
    let kubeconfig: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&second.kubeconfig_path)?)?;
    ensure!(kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"] == ca_data);
    ensure!(kubeconfig["clusters"][0]["cluster"]["server"] == second.url.as_str());
    // The old CA still verifies the (possibly re-issued) serving certificate.
    let r = client
        .get(format!("{}/api", second.url))
        .bearer_auth(&token)
        .send()
        .await?;
    ensure!(r.status() == 200, "{}", r.status());
    // Default namespaces survive and are not duplicated.
    let r = client
        .get(format!("{}/api/v1/namespaces/kube-system", second.url))
        .bearer_auth(&token)
        .send()
        .await?;
    ensure!(r.status() == 200, "kube-system: {}", r.status());
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), second.done).await??;
    Ok(())
}

#[tokio::test]
async fn pod_create_and_get_over_https() -> Result<()> {
    let s = server().await?;
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hello", "namespace": "default"},
        "spec": {"containers": [{"name": "main", "image": "hello:v1"}]},
    });
    let created = s
        .client
        .post(s.url(
            "/api/v1/namespaces/default/pods?fieldManager=kubectl-create&fieldValidation=Strict",
        ))
        .bearer_auth(&s.running.admin_token)
        .json(&pod)
        .send()
        .await?;
    ensure!(created.status() == 201, "create: {}", created.status());
    let created: Value = created.json().await?;
    ensure!(created["metadata"]["uid"].is_string(), "{created}");
    let got: Value = s
        .get("/api/v1/namespaces/default/pods/hello")
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        got["metadata"]["name"] == "hello" && got["metadata"]["uid"] == created["metadata"]["uid"],
        "{got}"
    );
    expect_status(
        s.get("/api/v1/namespaces/default/pods/nope").send().await?,
        404,
        "NotFound",
    )
    .await?;
    s.stop().await
}

#[tokio::test]
async fn shutdown_ends_open_watches_and_releases_the_store() -> Result<()> {
    use futures::StreamExt;
    let dir = tempfile::tempdir()?;
    let (running, shutdown, client) = start_in(dir.path()).await?;
    let watch = client
        .get(format!(
            "{}/api/v1/namespaces/default/pods?watch=true",
            running.url
        ))
        .bearer_auth(&running.admin_token)
        .send()
        .await?;
    ensure!(watch.status() == 200, "{}", watch.status());
    let mut events = watch.bytes_stream();
    shutdown.cancel();
    // The watch stream ends (rather than hanging until the grace period)...
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = events.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    ensure!(drained.is_ok(), "the watch stayed open after shutdown");
    // ...the server finishes, and the data directory can be opened again.
    tokio::time::timeout(Duration::from_secs(30), running.done).await??;
    let (again, shutdown, _) = start_in(dir.path()).await?;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), again.done).await??;
    Ok(())
}
