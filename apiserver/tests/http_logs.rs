//! `pods/log` through the real server: the apiserver finds the pod's node and
//! streams a (fake) kubelet's answer through unchanged, as it arrives.

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use axum::extract::{Path, RawQuery};
use axum::response::IntoResponse;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Notify;
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
    ) -> Result<reqwest::Response> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        Ok(req.send().await?)
    }
    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let r = self.send(method, path, body).await?;
        let code = r.status();
        let v: Value = r.json().await?;
        ensure!(code.is_success(), "{path}: {code} {v}");
        Ok(v)
    }
}

/// A kubelet that answers `/containerLogs`: plain logs echo the path and
/// query; `follow=true` sends one line, waits for `release`, then another.
async fn fake_kubelet(release: Arc<Notify>) -> Result<u16> {
    let app = axum::Router::new().route(
        "/containerLogs/{ns}/{pod}/{container}",
        axum::routing::get(move |Path((ns, pod, container)): Path<(String, String, String)>, RawQuery(q): RawQuery| {
            let release = release.clone();
            async move {
                let q = q.unwrap_or_default();
                if q.contains("follow=true") {
                    let first = futures::stream::once(async { Ok::<_, std::io::Error>(bytes::Bytes::from("first\n")) });
                    let second = futures::stream::once(async move {
                        release.notified().await;
                        Ok::<_, std::io::Error>(bytes::Bytes::from("second\n"))
                    });
                    return axum::body::Body::from_stream(first.chain(second)).into_response();
                }
                if container == "missing" {
                    return (
                        axum::http::StatusCode::NOT_FOUND,
                        [("content-type", "application/json")],
                        r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":404,"reason":"NotFound"}"#,
                    )
                        .into_response();
                }
                format!("{ns}/{pod}/{container}?{q}\n").into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(port)
}

async fn add_node(api: &Api, name: &str, port: u16) -> Result<()> {
    api.json(
        reqwest::Method::POST,
        "/api/v1/nodes",
        Some(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})),
    )
    .await?;
    let mut node = api
        .json(reqwest::Method::GET, &format!("/api/v1/nodes/{name}"), None)
        .await?;
    node["status"] = json!({
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
    });
    api.json(
        reqwest::Method::PUT,
        &format!("/api/v1/nodes/{name}/status"),
        Some(node),
    )
    .await?;
    Ok(())
}

async fn add_pod(api: &Api, name: &str, node: Option<&str>, containers: &[&str]) -> Result<()> {
    let mut spec = json!({"containers": containers.iter().map(|c| json!({"name": c, "image": "hello:v1"})).collect::<Vec<_>>()});
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    api.json(
        reqwest::Method::POST,
        "/api/v1/namespaces/default/pods",
        Some(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})),
    )
    .await?;
    Ok(())
}

async fn status_of(r: reqwest::Response) -> Result<(u16, Value)> {
    let code = r.status().as_u16();
    Ok((code, r.json().await?))
}

#[tokio::test]
async fn pod_logs_are_proxied_from_the_kubelet() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let running = common::start_server(dir.path(), &shutdown).await?;
    let api = Api {
        base: running.url.clone(),
        token: running.admin_token.clone(),
        client: common::https_client(&running.ca_pem)?.build()?,
    };
    let release = Arc::new(Notify::new());
    let port = fake_kubelet(release.clone()).await?;
    add_node(&api, "n1", port).await?;
    add_pod(&api, "web", Some("n1"), &["main"]).await?;

    let r = api
        .send(
            reqwest::Method::GET,
            "/api/v1/namespaces/default/pods/web/log?tailLines=5&timestamps=true",
            None,
        )
        .await?;
    ensure!(r.status() == 200, "{}", r.status());
    ensure!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/plain"))
    );
    ensure!(r.text().await? == "default/web/main?timestamps=true&tailLines=5\n");

    // Follow: the first line arrives before the kubelet sends the second.
    let r = api
        .send(
            reqwest::Method::GET,
            "/api/v1/namespaces/default/pods/web/log?follow=true",
            None,
        )
        .await?;
    ensure!(r.status() == 200);
    let mut body = r.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await?
        .context("stream ended")??;
    ensure!(first.as_ref() == b"first\n", "{first:?}");
    release.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), body.next()).await? {
        rest.extend_from_slice(&chunk?);
    }
    ensure!(rest == b"second\n", "{rest:?}");

    // The kubelet's errors pass through unchanged.
    add_pod(&api, "two", Some("n1"), &["a", "missing"]).await?;
    let (code, _) = status_of(
        api.send(
            reqwest::Method::GET,
            "/api/v1/namespaces/default/pods/two/log?container=missing",
            None,
        )
        .await?,
    )
    .await?;
    ensure!(code == 404);
    let (code, s) = status_of(
        api.send(
            reqwest::Method::GET,
            "/api/v1/namespaces/default/pods/two/log",
            None,
        )
        .await?,
    )
    .await?;
    ensure!(code == 400, "{s}");
    ensure!(
        s["message"]
            == "a container name must be specified for pod two, choose one of: [a missing]",
        "{s}"
    );
    let (code, s) = status_of(
        api.send(
            reqwest::Method::GET,
            "/api/v1/namespaces/default/pods/two/log?container=zz",
            None,
        )
        .await?,
    )
    .await?;
    ensure!(code == 400, "{s}");

    add_pod(&api, "pending", None, &["main"]).await?;
    let (code, s) = status_of(
        api.send(
            reqwest::Method::GET,
            "/api/v1/namespaces/default/pods/pending/log",
            None,
        )
        .await?,
    )
    .await?;
    ensure!(
        code == 400 && s["message"] == "pod pending does not have a host assigned",
        "{s}"
    );

    let (code, s) = status_of(
        api.send(
            reqwest::Method::GET,
            "/api/v1/namespaces/default/pods/nope/log",
            None,
        )
        .await?,
    )
    .await?;
    ensure!(code == 404 && s["reason"] == "NotFound", "{s}");

    // A kubelet that does not answer: 503 naming the node.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let dead_port = closed.local_addr()?.port();
    drop(closed);
    add_node(&api, "n2", dead_port).await?;
    add_pod(&api, "lost", Some("n2"), &["main"]).await?;
    let (code, s) = status_of(
        api.send(
            reqwest::Method::GET,
            "/api/v1/namespaces/default/pods/lost/log",
            None,
        )
        .await?,
    )
    .await?;
    ensure!(code == 503, "{s}");
    ensure!(
        s["message"].as_str().is_some_and(|m| m.contains("\"n2\"")),
        "{s}"
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), running.done).await??;
    Ok(())
}
