//! The node proxy against a real in-process apiserver: its reflectors pick
//! up Services and EndpointSlices written through the API, and requests by
//! Host header follow them.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use wasmkube_runtime::http::{Body, EndpointKey, Handler, HttpPods};
use wasmkube_runtime::proxy::{self, Proxy, ProxyOptions};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A container answering with its pod's name.
struct Named(&'static str);

#[async_trait::async_trait]
impl Handler for Named {
    async fn handle(&self, _req: http::Request<Body>) -> http::Response<Body> {
        http::Response::new(Body::from(format!("hello from {}", self.0)))
    }
}

async fn client(kubeconfig: &std::path::Path) -> anyhow::Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// Polls GET `addr` with `host` until the answer is `(status, body)`.
async fn until_answer(
    addr: std::net::SocketAddr,
    host: &str,
    status: u16,
    body: &str,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        if let Ok(r) = http
            .get(format!("http://{addr}/"))
            .header("host", host)
            .send()
            .await
        {
            let got = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            if got == status && text == body {
                return Ok(());
            }
            last = format!("{got} {text:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("never answered {status} {body:?}; last {last}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_follows_services_and_slices_from_the_apiserver() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let running = wasmkube_apiserver::start(
        wasmkube_apiserver::Config {
            data_dir: dir.path().join("server"),
            bind_address: LOCALHOST,
            port: 0,
            ..Default::default()
        },
        shutdown.clone(),
    )
    .await?;
    let client = client(&running.kubeconfig_path).await?;

    let pods = HttpPods::new();
    let key = EndpointKey {
        namespace: "default".into(),
        pod: "web-0".into(),
        port: 8080,
    };
    let drain = CancellationToken::new();
    tokio::spawn({
        let pods = pods.clone();
        let (key, drain, stop) = (key.clone(), drain.clone(), shutdown.child_token());
        async move {
            pods.register(key, Arc::new(Named("web-0")), drain, stop)
                .await
        }
    });
    let proxy = Proxy::new(ProxyOptions::new("node-1", LOCALHOST), pods)?;
    let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await?;
    let running_proxy = proxy::start(proxy, client.clone(), listener, shutdown.clone())?;
    let addr = running_proxy.addr;

    until_answer(addr, "web.default", 404, "no service default/web\n").await?;

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": "web", "namespace": "default" },
        "spec": { "ports": [{ "port": 80, "targetPort": 8080, "protocol": "TCP" }] }
    }))?;
    services.create(&PostParams::default(), &service).await?;
    until_answer(
        addr,
        "web.default",
        503,
        "no ready endpoints for service default/web\n",
    )
    .await?;

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-manual",
            "namespace": "default",
            "labels": { "kubernetes.io/service-name": "web" }
        },
        "addressType": "IPv4",
        "endpoints": [{
            "addresses": ["127.0.0.1"],
            "nodeName": "node-1",
            "targetRef": { "kind": "Pod", "namespace": "default", "name": "web-0" },
            "conditions": { "ready": true, "serving": true, "terminating": false }
        }],
        "ports": [{ "port": 8080, "protocol": "TCP" }]
    }))?;
    slices.create(&PostParams::default(), &slice).await?;
    until_answer(addr, "web.default.svc", 200, "hello from web-0").await?;

    slices
        .delete("web-manual", &DeleteParams::default())
        .await?;
    until_answer(
        addr,
        "web.default",
        503,
        "no ready endpoints for service default/web\n",
    )
    .await?;

    shutdown.cancel();
    running_proxy.done.await??;
    Ok(())
}
