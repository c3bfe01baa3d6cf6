//! The web dashboard in headless Chromium (Debian `chromium` and
//! `chromium-driver`, driven over WebDriver): log in with a token, see a
//! Running pod appear without a reload after `kubectl apply`, stream its
//! logs, see its memory charted, scale its Deployment from the page, delete
//! a pod. Screenshots of
//! those states are written under `target/tmp/dashboard/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine as _;
use serde_json::{Value, json};
use wasmkube_e2e::{Cluster, free_port, wait_for};

/// A chromedriver process and one browser session through it.
struct Browser {
    driver: Child,
    http: reqwest::blocking::Client,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Result<Browser> {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "starting chromedriver (Debian: chromium-driver; scripts/setup.sh installs it)",
            )?;
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let base = format!("http://127.0.0.1:{port}");
        wait_for("chromedriver to listen", Duration::from_secs(20), || {
            Ok(http
                .get(format!("{base}/status"))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ()))
        })?;
        let profile = tempfile::tempdir()?;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    // The cluster's own CA is not in the browser's store.
                    "--ignore-certificate-errors",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let mut browser = Browser {
            driver,
            http,
            base,
            session: String::new(),
            _profile: profile,
        };
        let created = browser.call("POST", "/session", caps)?;
        browser.session = created["sessionId"]
            .as_str()
            .context("no session id")?
            .to_string();
        Ok(browser)
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Result<Value> {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).json(&body),
        };
        let resp = req.send()?;
        let status = resp.status();
        let v: Value = resp.json()?;
        if !status.is_success() {
            bail!("webdriver {method} {path}: {status} {}", v["value"]);
        }
        Ok(v["value"].clone())
    }

    fn goto(&self, url: &str) -> Result<()> {
        self.call("POST", "/url", json!({ "url": url }))?;
        Ok(())
    }

    /// Runs `script` in the page; its return value.
    fn js(&self, script: &str) -> Result<Value> {
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
    }

    fn element(&self, css: &str) -> Result<String> {
        let v = self.call(
            "POST",
            "/element",
            json!({ "using": "css selector", "value": css }),
        )?;
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .map(String::from)
            .with_context(|| format!("no element id for {css}"))
    }

    fn click(&self, css: &str) -> Result<()> {
        let id = self.element(css)?;
        self.call("POST", &format!("/element/{id}/click"), json!({}))?;
        Ok(())
    }

    fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let id = self.element(css)?;
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        )?;
        Ok(())
    }

    /// The text of the first element matching `css`, "" when there is none.
    fn text(&self, css: &str) -> Result<String> {
        let css = serde_json::to_string(css)?;
        let v = self.js(&format!(
            "const e = document.querySelector({css}); return e ? e.textContent : '';"
        ))?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    fn screenshot(&self, path: &Path) -> Result<()> {
        let v = self.call("GET", "/screenshot", Value::Null)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().context("screenshot is not base64 text")?)?;
        ensure!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", "", Value::Null);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn screenshots_dir() -> Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

const COUNTER: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ticker
spec:
  replicas: 1
  selector:
    matchLabels: {app: ticker}
  template:
    metadata:
      labels: {app: ticker}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: ticker
        image: counter:v1
"#;

#[test]
fn dashboard_shows_live_pods_streams_logs_and_scales() -> Result<()> {
    let cluster = Cluster::start()?;
    cluster.push_sample("counter")?;
    let (token, _) = cluster.credentials()?;
    let shots = screenshots_dir()?;
    let browser = Browser::start()?;

    // Without a token the page asks for one.
    browser.goto(&format!("{}/ui/", cluster.url()))?;
    wait_for("the login form", Duration::from_secs(20), || {
        Ok(browser
            .js("return !document.querySelector('#login-view').hidden")?
            .as_bool()
            .filter(|v| *v))
    })?;
    browser.type_into("#token", "wrong-token")?;
    browser.click("#login")?;
    wait_for(
        "a refused token to be said so",
        Duration::from_secs(20),
        || {
            let msg = browser.text("#login-error")?;
            Ok(msg.contains("401").then_some(()))
        },
    )?;
    browser.type_into("#token", &token)?;
    browser.click("#login")?;
    wait_for("the node in the page", Duration::from_secs(30), || {
        let status = browser.text("#nodes tr[data-node='node-1'] td.status")?;
        Ok((status == "Ready").then_some(()))
    })?;
    ensure!(
        browser.text("#who")?.contains("admin"),
        "{}",
        browser.text("#who")?
    );
    browser.screenshot(&shots.join("1-logged-in.png"))?;

    // A Deployment applied with kubectl shows up Running, without a reload.
    browser.js("window.__noReload = true; return true")?;
    let applied = cluster.kubectl_stdin(&["apply", "-f", "-"], COUNTER)?;
    ensure!(
        applied.status.success(),
        "{}",
        wasmkube_e2e::stderr(&applied)
    );
    let pod = wait_for(
        "a Running ticker pod in the page",
        Duration::from_secs(60),
        || {
            let v = browser.js(
            "const r = [...document.querySelectorAll('#pods tr[data-pod^=\"default/ticker-\"]')]
               .find(r => r.querySelector('td.phase').textContent === 'Running');
             return r ? r.getAttribute('data-pod') : null;",
        )?;
            Ok(v.as_str().map(String::from))
        },
    )?;
    ensure!(
        browser.js("return window.__noReload === true")? == json!(true),
        "the page was reloaded"
    );
    browser.screenshot(&shots.join("2-pod-running.png"))?;

    // Its logs stream into the page.
    browser.click(&format!("#pods tr[data-pod='{pod}'] button.logs"))?;
    wait_for("log lines of the pod", Duration::from_secs(30), || {
        let logs = browser.text("#logs")?;
        Ok(logs.contains("count 2").then_some(()))
    })?;
    // Its usage arrives from the metrics API and is charted.
    wait_for(
        "the pod's memory in the page",
        Duration::from_secs(60),
        || {
            let mem = browser.text(&format!("#pods tr[data-pod='{pod}'] td.mem"))?;
            Ok((!mem.trim().is_empty() && !mem.contains('–')).then_some(mem))
        },
    )?;
    browser.screenshot(&shots.join("3-logs.png"))?;

    // Scaling from the page reaches the API and the page follows.
    browser.click("#deployments tr[data-deploy='default/ticker'] button.scale-up")?;
    wait_for("two replicas in the API", Duration::from_secs(30), || {
        let n =
            cluster.kubectl_ok(&["get", "deploy", "ticker", "-o", "jsonpath={.spec.replicas}"])?;
        Ok((n.trim() == "2").then_some(()))
    })?;
    wait_for("2/2 ready in the page", Duration::from_secs(60), || {
        let ready = browser.text("#deployments tr[data-deploy='default/ticker'] td.ready")?;
        Ok((ready == "2/2").then_some(()))
    })?;
    browser.screenshot(&shots.join("4-scaled.png"))?;

    // Deleting a pod takes two clicks; the Deployment replaces it.
    let delete = format!("#pods tr[data-pod='{pod}'] button.delete");
    browser.click(&delete)?;
    ensure!(browser.text(&delete)? == "Confirm delete");
    browser.click(&delete)?;
    let name = pod.trim_start_matches("default/");
    wait_for("the pod to be gone", Duration::from_secs(60), || {
        let out = cluster.kubectl(&["get", "pod", name, "-o", "name"])?;
        Ok((!out.status.success()).then_some(()))
    })?;
    wait_for("the page to drop it", Duration::from_secs(30), || {
        Ok(browser
            .text(&format!("#pods tr[data-pod='{pod}']"))?
            .is_empty()
            .then_some(()))
    })?;
    browser.screenshot(&shots.join("5-deleted.png"))?;
    eprintln!("dashboard screenshots: {}", shots.display());
    Ok(())
}
