//! `kubectl port-forward` to HTTP pods on the real binary (issue 7): to a
//! pod and to a Service, over kubectl's WebSocket transport and over the
//! SPDY fallback, with several GETs and a POST with a body through the local
//! port; kubectl stops cleanly on SIGINT; a port that is not an HTTP port of
//! the pod is refused with a message naming the HTTP ports.

use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use wasmkube_e2e::{Cluster, LineReader, sample_manifest, stderr, stdout, wait_for};

const TIMEOUT: Duration = Duration::from_secs(90);

fn client() -> Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .build()?)
}

/// A running `kubectl port-forward` and the local port it listens on.
struct Forward {
    child: Child,
    port: u16,
    /// Kept open: kubectl prints a line per connection, and a closed
    /// stdout would kill it with SIGPIPE.
    stdout: LineReader,
    stderr: LineReader,
}

impl Forward {
    /// Starts `kubectl port-forward <what> :<remote>` and waits for its
    /// `Forwarding from 127.0.0.1:N -> pod_port` line (a Service's port is
    /// mapped to its pods' target port by kubectl).
    fn start(
        c: &Cluster,
        what: &str,
        remote: u16,
        pod_port: u16,
        websockets: bool,
    ) -> Result<Forward> {
        let mut cmd = c.kubectl_cmd(&[
            "port-forward",
            "--address=127.0.0.1",
            what,
            &format!(":{remote}"),
        ]);
        // kubectl's switch between the WebSocket transport (default since
        // 1.31) and the SPDY upgrade it falls back to.
        cmd.env(
            "KUBECTL_PORT_FORWARD_WEBSOCKETS",
            if websockets { "true" } else { "false" },
        );
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting kubectl port-forward")?;
        let out = child.stdout.take().context("kubectl stdout")?;
        let err = child.stderr.take().context("kubectl stderr")?;
        let mut lines = LineReader::new(out);
        let stderr = LineReader::new(err);
        let line = match lines.wait_line("the Forwarding line", TIMEOUT, |l| {
            l.starts_with("Forwarding from 127.0.0.1:")
        }) {
            Ok(l) => l,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let port = line
            .trim_start_matches("Forwarding from 127.0.0.1:")
            .split(' ')
            .next()
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("local port in {line:?}"))?;
        ensure!(
            line.ends_with(&format!("-> {pod_port}")),
            "forwards to {pod_port}: {line}"
        );
        Ok(Forward {
            child,
            port,
            stdout: lines,
            stderr,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `r`, with kubectl's messages and the server's log added to an error.
    fn explain(&mut self, r: Result<()>, what: &str, c: &Cluster) -> Result<()> {
        let Err(e) = r else { return Ok(()) };
        // Collects what kubectl printed so far (nothing matches).
        let _ = self
            .stdout
            .wait_line("kubectl's output", Duration::from_millis(200), |_| false);
        let _ = self
            .stderr
            .wait_line("kubectl's messages", Duration::from_secs(2), |_| false);
        Err(e.context(format!(
            "{what}\n--- kubectl stdout ---\n{}\n--- kubectl stderr ---\n{}\n--- server log (tail) ---\n{}",
            self.stdout.seen.join("\n"),
            self.stderr.seen.join("\n"),
            wasmkube_e2e::tail(&c.server_log(), 40)
        )))
    }

    /// SIGINT, as Ctrl-C: kubectl closes its streams and exits 0.
    fn interrupt(mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()?;
        ensure!(sent.success(), "kill -INT {pid}");
        let status = wait_for("kubectl port-forward to exit", TIMEOUT, || {
            Ok(self.child.try_wait()?)
        })?;
        ensure!(
            status.success(),
            "kubectl exits cleanly on SIGINT: {status}"
        );
        Ok(())
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Several GETs and a POST with a body, each answered by the echo pod.
fn exercise(http: &reqwest::blocking::Client, f: &Forward, pods: &[String]) -> Result<()> {
    for i in 0..5 {
        let resp = http.get(f.url(&format!("/hi?n={i}"))).send()?;
        ensure!(resp.status().as_u16() == 200, "GET {i}: {}", resp.status());
        let by = wasmkube_e2e::served_by(&resp);
        ensure!(
            pods.contains(&by),
            "served by an echo pod: {by:?} not in {pods:?}"
        );
        let body: Value = resp.json()?;
        assert_eq!(body["method"], "GET");
        assert_eq!(body["path"], format!("/hi?n={i}"));
    }
    let payload = "x".repeat(100_000);
    let body: Value = http
        .post(f.url("/upload"))
        .header("content-type", "text/plain")
        .body(payload.clone())
        .send()?
        .error_for_status()?
        .json()?;
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/upload");
    assert_eq!(body["body"].as_str().map(str::len), Some(payload.len()));
    // A fresh connection per request works too (kubectl opens a stream pair
    // per local connection).
    for _ in 0..3 {
        let fresh = client()?;
        let resp = fresh
            .get(f.url("/again"))
            .header("connection", "close")
            .send()?;
        ensure!(
            resp.status().as_u16() == 200,
            "fresh connection: {}",
            resp.status()
        );
    }
    Ok(())
}

fn echo_cluster() -> Result<(Cluster, Vec<String>)> {
    let c = Cluster::start()?;
    c.push_sample("http-echo")?;
    let path = sample_manifest("http-echo");
    let out = c.kubectl(&["apply", "-f", path.to_str().context("UTF-8 path")?])?;
    ensure!(
        out.status.success(),
        "apply: {}{}",
        stdout(&out),
        stderr(&out)
    );
    c.kubectl_ok(&["rollout", "status", "deploy/http-echo", "--timeout=90s"])?;
    let pods: Vec<String> = c
        .kubectl_ok(&["get", "pods", "-l", "app=http-echo", "-o", "name"])?
        .lines()
        .map(|l| l.trim_start_matches("pod/").to_string())
        .collect();
    ensure!(!pods.is_empty(), "echo pods");
    for p in &pods {
        c.wait_phase(p, "Running", TIMEOUT)?;
    }
    Ok((c, pods))
}

#[test]
fn port_forward_to_an_http_pod_and_service_over_both_transports() -> Result<()> {
    let (c, pods) = echo_cluster()?;
    let http = client()?;
    let pod = format!("pod/{}", pods[0]);

    for websockets in [true, false] {
        let mut f = Forward::start(&c, &pod, 8080, 8080, websockets)?;
        let r = exercise(&http, &f, &pods[..1]);
        f.explain(r, &format!("pod, websockets={websockets}"), &c)?;
        f.interrupt()?;
    }

    // A Service: kubectl picks a pod and maps port 80 to targetPort `http`.
    let mut f = Forward::start(&c, "svc/http-echo", 80, 8080, true)?;
    let r = exercise(&http, &f, &pods);
    f.explain(r, "service", &c)?;
    f.interrupt()?;
    Ok(())
}

#[test]
fn port_forward_refuses_what_it_cannot_serve() -> Result<()> {
    let (c, pods) = echo_cluster()?;
    let pod = format!("pod/{}", pods[0]);

    // A port that is not the pod's HTTP port: kubectl starts listening (it
    // cannot know), and the first connection gets the refusal on the error
    // stream, which kubectl prints.
    let mut f = Forward::start(&c, &pod, 9999, 9999, true)?;
    let http = client()?;
    // The connection is closed without an HTTP answer.
    ensure!(
        http.get(f.url("/")).send().is_err(),
        "nothing answers on a refused port"
    );
    let line = f.stderr.wait_line("kubectl's error line", TIMEOUT, |l| {
        l.contains("an error occurred forwarding")
    })?;
    assert!(
        line.contains("-> 9999")
            && line.contains("port 9999 is not an HTTP port of pod default/")
            && line.contains("its HTTP ports: 8080 (container echo)"),
        "kubectl shows why: {line}"
    );
    drop(f);

    // A pod that does not exist.
    let out = c.kubectl(&["port-forward", "pod/nope", ":8080"])?;
    ensure!(!out.status.success(), "no such pod");
    let err = stderr(&out);
    assert!(err.contains(r#"pods "nope" not found"#), "{err}");

    // The server's own checks, before any upgrade, as kubectl would meet
    // them without its client-side checks: a plain POST without an upgrade,
    // and a `ports` query naming a non-HTTP port.
    let (server, api) = (c.url(), c.http()?);
    let (token, _) = c.credentials()?;
    let base = format!(
        "{server}/api/v1/namespaces/default/pods/{}/portforward",
        pods[0]
    );
    let resp = api.post(&base).bearer_auth(&token).send()?;
    assert_eq!(resp.status().as_u16(), 400);
    let s: Value = resp.json()?;
    assert!(
        s["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Upgrade request required"),
        "{s}"
    );
    let resp = api
        .post(format!("{base}?ports=9090"))
        .bearer_auth(&token)
        .send()?;
    assert_eq!(resp.status().as_u16(), 400);
    let s: Value = resp.json()?;
    assert!(
        s["message"]
            .as_str()
            .unwrap_or_default()
            .contains("its HTTP ports: 8080 (container echo)"),
        "{s}"
    );
    let resp = api
        .post(format!(
            "{server}/api/v1/namespaces/default/pods/nope/portforward"
        ))
        .bearer_auth(&token)
        .send()?;
    assert_eq!(resp.status().as_u16(), 404);
    Ok(())
}
