//! The audit log of a real server: one `audit.k8s.io/v1` Event line per
//! mutating request with who, what, when and the result, its `auditID` in
//! the `Audit-Id` response header, refused credentials recorded too, and
//! never a request body or a token in the file.

mod common;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use base64::Engine as _;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wasmkube_apiserver::audit::{AuditConfig, Event};

const USER_AGENT: &str = "audit-test/1.0";
const SECRET_VALUE: &str = "hunter2-do-not-log-me";

struct Server {
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
    running: wasmkube_apiserver::Running,
    shutdown: CancellationToken,
    client: reqwest::Client,
}

async fn server(all_requests: bool) -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("audit").join("audit.log");
    let shutdown = CancellationToken::new();
    let mut config = common::server_config(dir.path());
    config.audit = AuditConfig {
        path: Some(log.clone()),
        all_requests,
        ..AuditConfig::default()
    };
    let running = wasmkube_apiserver::start(config, shutdown.clone()).await?;
    let client = common::https_client(&running.ca_pem)?
        .user_agent(USER_AGENT)
        .timeout(Duration::from_secs(30))
        .build()?;
    Ok(Server {
        _dir: dir,
        log,
        running,
        shutdown,
        client,
    })
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url)
    }

    /// Sends a request as admin; returns (code, Audit-Id header).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, String)> {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.running.admin_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let id = audit_id(&resp)?;
        let code = resp.status().as_u16();
        resp.bytes().await?;
        Ok((code, id))
    }

    /// Stops the server (which writes the last events) and reads the log.
    async fn stop_and_read(self) -> Result<(String, Vec<Event>)> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.running.done).await??;
        let text = std::fs::read_to_string(&self.log)
            .with_context(|| format!("reading {}", self.log.display()))?;
        let mut events = Vec::new();
        for line in text.lines() {
            events.push(
                serde_json::from_str::<Event>(line)
                    .with_context(|| format!("not an audit event: {line}"))?,
            );
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&self.log)?.permissions().mode() & 0o777;
            ensure!(mode == 0o600, "audit log mode {mode:o}");
        }
        Ok((text, events))
    }
}

fn audit_id(resp: &reqwest::Response) -> Result<String> {
    Ok(resp
        .headers()
        .get("audit-id")
        .context("no Audit-Id header")?
        .to_str()?
        .to_string())
}

fn find<'a>(events: &'a [Event], id: &str) -> Result<&'a Event> {
    let found: Vec<_> = events.iter().filter(|e| e.audit_id == id).collect();
    ensure!(
        found.len() == 1,
        "{} events for {id}: {found:?}",
        found.len()
    );
    Ok(found[0])
}

fn check_common(e: &Event, verb: &str, code: u16) -> Result<()> {
    ensure!(
        e.kind == "Event" && e.api_version == "audit.k8s.io/v1",
        "{e:?}"
    );
    ensure!(e.level == "Metadata", "{e:?}");
    ensure!(e.stage == "ResponseComplete", "{e:?}");
    ensure!(e.verb == verb, "verb {} != {verb}", e.verb);
    ensure!(
        e.response_status.as_ref().map(|s| s.code) == Some(code),
        "{e:?}"
    );
    ensure!(e.source_ips == vec!["127.0.0.1".to_string()], "{e:?}");
    ensure!(e.user_agent == USER_AGENT, "{e:?}");
    let received: jiff::Timestamp = e.request_received_timestamp.parse()?;
    let completed: jiff::Timestamp = e.stage_timestamp.parse()?;
    ensure!(received <= completed, "{e:?}");
    Ok(())
}

fn check_admin(e: &Event) -> Result<()> {
    ensure!(e.user.username == "admin", "{e:?}");
    ensure!(e.user.groups.iter().any(|g| g == "system:masters"), "{e:?}");
    Ok(())
}

#[tokio::test]
async fn mutating_requests_are_audited_without_bodies_or_tokens() -> Result<()> {
    let s = server(false).await?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(SECRET_VALUE);
    let (code, secret_id) = s
        .send(
            reqwest::Method::POST,
            "/api/v1/namespaces/default/secrets",
            Some(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "s1"},
                "data": {"password": encoded},
            })),
        )
        .await?;
    ensure!(code == 201, "secret create: {code}");
    let (code, cm_id) = s
        .send(
            reqwest::Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cm1"},
                "data": {"k": SECRET_VALUE},
            })),
        )
        .await?;
    ensure!(code == 201, "configmap create: {code}");
    let (code, get_id) = s
        .send(
            reqwest::Method::GET,
            "/api/v1/namespaces/default/secrets/s1",
            None,
        )
        .await?;
    ensure!(code == 200, "secret get: {code}");
    let (code, delete_id) = s
        .send(
            reqwest::Method::DELETE,
            "/api/v1/namespaces/default/configmaps/cm1",
            None,
        )
        .await?;
    ensure!(code == 200, "configmap delete: {code}");
    let (code, apps_id) = s
        .send(
            reqwest::Method::DELETE,
            "/apis/apps/v1/namespaces/default/deployments/missing",
            None,
        )
        .await?;
    ensure!(code == 404, "deployment delete: {code}");

    // A client-chosen audit ID is kept; a wrong token is recorded too.
    let resp = s
        .client
        .post(s.url("/api/v1/namespaces/default/configmaps"))
        .bearer_auth("not-a-token")
        .header("Audit-ID", "client-chosen-id-1")
        .json(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}))
        .send()
        .await?;
    ensure!(resp.status() == 401);
    ensure!(audit_id(&resp)? == "client-chosen-id-1");
    drop(resp);

    // Impersonation: the caller and who it ran as.
    let resp = s
        .client
        .post(s.url("/api/v1/namespaces/default/configmaps"))
        .bearer_auth(&s.running.admin_token)
        .header("Impersonate-User", "jane")
        .json(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "j"}}))
        .send()
        .await?;
    let impersonated_id = audit_id(&resp)?;
    drop(resp);

    let token = s.running.admin_token.clone();
    let (text, events) = s.stop_and_read().await?;

    let e = find(&events, &impersonated_id)?;
    check_admin(e)?;
    ensure!(
        e.impersonated_user.as_ref().map(|u| u.username.as_str()) == Some("jane"),
        "{e:?}"
    );

    let e = find(&events, &secret_id)?;
    check_common(e, "create", 201)?;
    check_admin(e)?;
    ensure!(
        e.request_uri == "/api/v1/namespaces/default/secrets",
        "{e:?}"
    );
    let r = e.object_ref.as_ref().context("no objectRef")?;
    ensure!(
        (
            r.resource.as_str(),
            r.namespace.as_str(),
            r.name.as_str(),
            r.api_version.as_str()
        ) == ("secrets", "default", "s1", "v1"),
        "{r:?}"
    );

    let e = find(&events, &cm_id)?;
    check_common(e, "create", 201)?;
    ensure!(e.object_ref.as_ref().map(|r| r.name.as_str()) == Some("cm1"));

    let e = find(&events, &delete_id)?;
    check_common(e, "delete", 200)?;
    check_admin(e)?;
    ensure!(e.object_ref.as_ref().map(|r| r.name.as_str()) == Some("cm1"));

    let e = find(&events, &apps_id)?;
    check_common(e, "delete", 404)?;
    let r = e.object_ref.as_ref().context("no objectRef")?;
    ensure!(
        r.api_group == "apps" && r.resource == "deployments",
        "{r:?}"
    );

    let e = find(&events, "client-chosen-id-1")?;
    check_common(e, "create", 401)?;
    ensure!(e.user.username.is_empty(), "{e:?}");

    // Reads are not audited by default.
    ensure!(
        !events.iter().any(|e| e.audit_id == get_id),
        "a get was audited"
    );
    ensure!(
        events
            .iter()
            .all(|e| !matches!(e.verb.as_str(), "get" | "list" | "watch")),
        "reads were audited"
    );

    // Neither bodies nor credentials.
    for needle in [
        SECRET_VALUE,
        encoded.as_str(),
        token.as_str(),
        "not-a-token",
    ] {
        ensure!(!text.contains(needle), "the audit log contains {needle:?}");
    }
    Ok(())
}

#[tokio::test]
async fn all_requests_mode_records_reads_and_watch_stages() -> Result<()> {
    let s = server(true).await?;
    let (code, list_id) = s
        .send(
            reqwest::Method::GET,
            "/api/v1/namespaces/default/configmaps",
            None,
        )
        .await?;
    ensure!(code == 200);
    let watch = s
        .client
        .get(s.url("/api/v1/namespaces/default/configmaps?watch=true"))
        .bearer_auth(&s.running.admin_token)
        .send()
        .await?;
    ensure!(watch.status() == 200);
    let watch_id = audit_id(&watch)?;
    drop(watch);
    let (_, events) = s.stop_and_read().await?;

    let e = find(&events, &list_id)?;
    check_common(e, "list", 200)?;
    let stages: Vec<_> = events
        .iter()
        .filter(|e| e.audit_id == watch_id)
        .map(|e| e.stage.as_str())
        .collect();
    ensure!(
        stages == ["ResponseStarted", "ResponseComplete"],
        "watch stages: {stages:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_unwritable_audit_path_fails_start() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"not a directory")?;
    let mut config = common::server_config(dir.path());
    config.audit = AuditConfig {
        path: Some(Path::new(&blocker).join("audit.log")),
        ..AuditConfig::default()
    };
    let shutdown = CancellationToken::new();
    let started = wasmkube_apiserver::start(config, shutdown.clone()).await;
    shutdown.cancel();
    let err = match started {
        Ok(_) => anyhow::bail!("the server started without its audit log"),
        Err(e) => e.to_string(),
    };
    ensure!(err.contains("audit log"), "{err}");
    Ok(())
}
