//! HTTP pods served by the real sandbox: WAGI modules written in wat, the
//! `http-echo` and `http-frontend` sample components (built for
//! wasm32-wasip2 on first use), the registry's drain, and the kubelet route.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::BodyExt;
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::*;
use crate::logs::{ContainerLog, DEFAULT_MAX_LOG_BYTES, LogOptions, read_all, render_lines};
use crate::sandbox::{DEFAULT_MEMORY_LIMIT, SandboxConfig, WasmtimeSandbox};

struct Fixture {
    dir: tempfile::TempDir,
    sandbox: Arc<WasmtimeSandbox>,
    log: ContainerLog,
    log_path: PathBuf,
}

async fn fixture() -> anyhow::Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let sandbox = Arc::new(WasmtimeSandbox::new(&SandboxConfig {
        max_instances: 16,
        ..SandboxConfig::default()
    })?);
    let log_path = dir.path().join("c/0.log");
    let log = ContainerLog::create(&log_path, DEFAULT_MAX_LOG_BYTES).await?;
    Ok(Fixture {
        dir,
        sandbox,
        log,
        log_path,
    })
}

fn key(port: u16) -> EndpointKey {
    EndpointKey {
        namespace: "default".into(),
        pod: "web".into(),
        port,
    }
}

impl Fixture {
    /// Writes `bytes` as a module file and prepares it; its digest and path.
    async fn module(&self, bytes: &[u8]) -> anyhow::Result<(String, PathBuf)> {
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
        let path = self.dir.path().join(digest.replace(':', "-"));
        tokio::fs::write(&path, bytes).await?;
        self.sandbox.prepare(&digest, &path).await?;
        Ok((digest, path))
    }

    /// A spec for `bytes` with the defaults of a pod without annotations.
    async fn spec(&self, bytes: &[u8], wagi: bool) -> anyhow::Result<HttpSpec> {
        let (digest, module_path) = self.module(bytes).await?;
        Ok(HttpSpec {
            id: "wasm://test".into(),
            digest,
            module_path,
            wagi,
            env: vec![("GREETING".into(), "hi".into())],
            preopens: Vec::new(),
            memory_limit: DEFAULT_MEMORY_LIMIT,
            cpu_limit_millis: None,
            stdout: self.log.stdout(),
            stderr: self.log.stderr(),
            usage: Arc::default(),
            timeout: DEFAULT_REQUEST_TIMEOUT,
            allowed_hosts: AllowedHosts::default(),
            router: RouterSlot::default(),
            stop: CancellationToken::new(),
            key: key(8080),
            server_name: "10.0.0.7".into(),
        })
    }

    async fn handler(&self, spec: HttpSpec) -> anyhow::Result<Arc<dyn Handler>> {
        self.sandbox
            .http_handler(Arc::new(spec))
            .await?
            .ok_or_else(|| anyhow::anyhow!("not served as HTTP"))
    }

    /// The container log so far (waits for what was written to land).
    async fn log_text(self) -> anyhow::Result<String> {
        self.log.finish().await?;
        let data = read_all(&self.log_path).await?;
        Ok(render_lines(&data, &LogOptions::default())
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect())
    }
}

async fn call(
    handler: &dyn Handler,
    req: http::Request<Body>,
) -> anyhow::Result<(http::StatusCode, http::HeaderMap, String)> {
    let response = handler.handle(req).await;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// Every byte of `s` as a wat string escape.
fn wat_bytes(s: &[u8]) -> String {
    s.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// A WAGI module that writes `head` (the CGI headers and blank line), then
/// its argv and environment one per line, then copies stdin, and writes
/// `stderr` to stderr.
fn echo_module(head: &str, stderr: &str) -> String {
    format!(
        r#"
    (module
      (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes_get (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "environ_get" (func $env_get (param i32 i32) (result i32)))
      (memory (export "memory") 2)
      (data (i32.const 8) "\n")
      (data (i32.const 300) "{head}")
      (data (i32.const 700) "{err}")
      (func $write (param $fd i32) (param $p i32) (param $n i32)
        (i32.store (i32.const 0) (local.get $p))
        (i32.store (i32.const 4) (local.get $n))
        (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 12))))
      (func $strlen (param $p i32) (result i32) (local $n i32)
        (block $done (loop $l
          (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
          (local.set $n (i32.add (local.get $n) (i32.const 1)))
          (br $l)))
        (local.get $n))
      (func $lines (param $ptrs i32) (param $count i32) (local $i i32) (local $s i32)
        (block $done (loop $l
          (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
          (local.set $s (i32.load (i32.add (local.get $ptrs) (i32.mul (local.get $i) (i32.const 4)))))
          (call $write (i32.const 1) (local.get $s) (call $strlen (local.get $s)))
          (call $write (i32.const 1) (i32.const 8) (i32.const 1))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $l))))
      (func (export "_start")
        (call $write (i32.const 2) (i32.const 700) (i32.const {err_len}))
        (call $write (i32.const 1) (i32.const 300) (i32.const {head_len}))
        (drop (call $args_sizes_get (i32.const 100) (i32.const 104)))
        (drop (call $args_get (i32.const 1024) (i32.const 4096)))
        (call $lines (i32.const 1024) (i32.load (i32.const 100)))
        (drop (call $env_sizes_get (i32.const 100) (i32.const 104)))
        (drop (call $env_get (i32.const 2048) (i32.const 16384)))
        (call $lines (i32.const 2048) (i32.load (i32.const 100)))
        (block $eof (loop $copy
          (i32.store (i32.const 200) (i32.const 65536))
          (i32.store (i32.const 204) (i32.const 4096))
          (drop (call $fd_read (i32.const 0) (i32.const 200) (i32.const 1) (i32.const 208)))
          (br_if $eof (i32.eqz (i32.load (i32.const 208))))
          (call $write (i32.const 1) (i32.const 65536) (i32.load (i32.const 208)))
          (br $copy)))))
    "#,
        head = wat_bytes(head.as_bytes()),
        head_len = head.len(),
        err = wat_bytes(stderr.as_bytes()),
        err_len = stderr.len(),
    )
}

const SPIN: &str = r#"
    (module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))
"#;

const HOG: &str = r#"
    (module
      (memory (export "memory") 1)
      (func (export "_start")
        (loop $l
          (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))))
"#;

fn request(method: &str, uri: &str, body: &str) -> anyhow::Result<http::Request<Body>> {
    Ok(http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "web.example:8080")
        .header("x-test", "yes")
        .header("content-type", "text/plain")
        .header("authorization", "Bearer secret")
        .body(Body::from(body.to_string()))?)
}

#[tokio::test]
async fn wagi_gets_cgi_env_argv_and_body_and_sets_status_and_headers() -> anyhow::Result<()> {
    let f = fixture().await?;
    let wasm = wat::parse_str(echo_module(
        "Content-Type: text/plain\r\nStatus: 201 Created\r\nX-Custom: yes\r\n\r\n",
        "to the log\n",
    ))?;
    let handler = f.handler(f.spec(&wasm, true).await?).await?;
    let mut req = request("POST", "/hello/w%20rld?a=1&b=two", "the body")?;
    req.extensions_mut()
        .insert(RemoteAddr("192.0.2.9:5555".parse()?));
    let (status, headers, body) = call(handler.as_ref(), req).await?;
    assert_eq!(status, http::StatusCode::CREATED, "{body}");
    assert_eq!(
        headers.get("x-custom").map(|v| v.as_bytes()),
        Some(&b"yes"[..])
    );
    assert_eq!(
        headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/plain"[..])
    );
    let lines: Vec<&str> = body.lines().collect();
    // argv: the path, then the query parameters.
    assert_eq!(&lines[..3], ["/hello/w%20rld", "a=1", "b=two"], "{body}");
    for expected in [
        "GREETING=hi",
        "REQUEST_METHOD=POST",
        "PATH_INFO=/hello/w rld",
        "X_RAW_PATH_INFO=/hello/w%20rld",
        "QUERY_STRING=a=1&b=two",
        "CONTENT_LENGTH=8",
        "CONTENT_TYPE=text/plain",
        "SERVER_NAME=10.0.0.7",
        "SERVER_PORT=8080",
        "REMOTE_ADDR=192.0.2.9",
        "SCRIPT_NAME=",
        "X_MATCHED_ROUTE=/...",
        "X_FULL_URL=http://web.example:8080/hello/w%20rld?a=1&b=two",
        "HTTP_X_TEST=yes",
        "HTTP_HOST=web.example:8080",
        "GATEWAY_INTERFACE=CGI/1.1",
    ] {
        assert!(lines.contains(&expected), "{expected} missing from {body}");
    }
    assert!(!body.contains("secret"), "credentials leaked: {body}");
    assert!(body.ends_with("the body"), "{body}");
    drop(handler);
    let log = f.log_text().await?;
    assert!(log.contains("to the log"), "{log}");
    Ok(())
}

#[tokio::test]
async fn wagi_location_redirects_and_bad_output_is_502() -> anyhow::Result<()> {
    let f = fixture().await?;
    let redirect = wat::parse_str(echo_module("Location: /elsewhere\n\n", ""))?;
    let handler = f.handler(f.spec(&redirect, true).await?).await?;
    let (status, headers, _) = call(handler.as_ref(), request("GET", "/", "")?).await?;
    assert_eq!(status, http::StatusCode::FOUND);
    assert_eq!(
        headers.get("location").map(|v| v.as_bytes()),
        Some(&b"/elsewhere"[..])
    );

    // Headers never end: argv and env follow the line without a blank line.
    let bad = wat::parse_str(echo_module("this is not a header\n", ""))?;
    let handler = f.handler(f.spec(&bad, true).await?).await?;
    let (status, _, body) = call(handler.as_ref(), request("GET", "/", "")?).await?;
    assert_eq!(status, http::StatusCode::BAD_GATEWAY);
    assert!(
        body.contains("did not write a valid CGI response"),
        "{body}"
    );

    let bad_status = wat::parse_str(echo_module("Status: soon\n\n", ""))?;
    let handler = f.handler(f.spec(&bad_status, true).await?).await?;
    let (status, _, body) = call(handler.as_ref(), request("GET", "/", "")?).await?;
    assert_eq!(status, http::StatusCode::BAD_GATEWAY);
    assert!(body.contains("no valid status code"), "{body}");
    Ok(())
}

#[test]
fn cgi_responses_parse() -> anyhow::Result<()> {
    let r = wagi::parse_cgi(b"Content-Type: text/html\nStatus: 404 Not Found\n\n<p>gone")
        .map_err(anyhow::Error::msg)?;
    assert_eq!(r.status(), http::StatusCode::NOT_FOUND);
    let r = wagi::parse_cgi(b"Location: https://x/\r\nStatus: 301\r\n\r\n")
        .map_err(anyhow::Error::msg)?;
    assert_eq!(r.status(), http::StatusCode::MOVED_PERMANENTLY);
    for (bad, why) in [
        (&b""[..], "nothing"),
        (b"Content-Type: text/plain\n", "no blank line"),
        (b"no colon here\n\nbody", "no colon"),
        (b"Bad Name: x\n\n", "not a valid header name"),
    ] {
        let Err(e) = wagi::parse_cgi(bad) else {
            anyhow::bail!("{bad:?} was accepted");
        };
        assert!(e.contains(why), "{e}");
    }
    let uri: http::Uri = "/p?x=1&&y".parse()?;
    assert_eq!(wagi::argv(&uri), ["/p", "x=1", "y"]);
    Ok(())
}

#[test]
fn options_come_from_annotations_and_ports() -> anyhow::Result<()> {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "prod", "annotations": {
            "wasmkube.io/http": "WAGI",
            "wasmkube.io/request-timeout": "1500ms",
            "wasmkube.io/allowed-outbound-hosts": "api.example.com, *.svc.test:8080"
        }},
        "spec": {"containers": [{"name": "c", "image": "x",
            "ports": [{"containerPort": 9000, "protocol": "UDP"}, {"containerPort": 7000}, {"name": "http", "containerPort": 8081}]}]}
    }))?;
    let container = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no container"))?;
    let o = HttpOptions::of(&pod, &container, "10.0.0.1");
    assert_eq!(
        o.key,
        EndpointKey {
            namespace: "prod".into(),
            pod: "web".into(),
            port: 8081
        }
    );
    assert!(o.wagi);
    assert_eq!(o.timeout, Duration::from_millis(1500));
    assert!(o.allowed_hosts.permits("api.example.com", 443));
    assert!(o.allowed_hosts.permits("a.svc.test", 8080));
    let mut unnamed = container.clone();
    if let Some(ports) = unnamed.ports.as_mut() {
        ports.pop();
    }
    assert_eq!(container_port(&unnamed), 7000);
    unnamed.ports = None;
    assert_eq!(container_port(&unnamed), DEFAULT_PORT);
    assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
    assert_eq!(parse_duration("5"), Some(Duration::from_secs(5)));
    assert_eq!(parse_duration("0s"), None);
    assert_eq!(parse_duration("soon"), None);
    Ok(())
}

#[tokio::test]
async fn a_module_without_the_wagi_annotation_is_a_command() -> anyhow::Result<()> {
    let f = fixture().await?;
    let spec = f.spec(&wat::parse_str(SPIN)?, false).await?;
    assert!(f.sandbox.http_handler(Arc::new(spec)).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn a_request_past_its_deadline_is_504_and_its_instance_is_gone() -> anyhow::Result<()> {
    // A pool of one instance: a spinning instance left behind would make
    // the next request fail to instantiate.
    let dir = tempfile::tempdir()?;
    let sandbox = Arc::new(WasmtimeSandbox::new(&SandboxConfig {
        max_instances: 1,
        ..SandboxConfig::default()
    })?);
    let f = Fixture {
        log_path: dir.path().join("log"),
        log: ContainerLog::create(&dir.path().join("log"), DEFAULT_MAX_LOG_BYTES).await?,
        dir,
        sandbox,
    };
    let mut spec = f.spec(&wat::parse_str(SPIN)?, true).await?;
    spec.timeout = Duration::from_millis(200);
    let usage = spec.usage.clone();
    let handler = f.handler(spec).await?;
    for _ in 0..2 {
        let (status, _, body) = tokio::time::timeout(
            Duration::from_secs(30),
            call(handler.as_ref(), request("GET", "/", "")?),
        )
        .await??;
        assert_eq!(status, http::StatusCode::GATEWAY_TIMEOUT, "{body}");
        assert!(body.contains("deadline"), "{body}");
    }
    // The spinning was counted as the container's CPU time.
    assert!(usage.cpu_nanos.load(std::sync::atomic::Ordering::Relaxed) > 0);
    Ok(())
}

#[tokio::test]
async fn the_container_memory_is_that_of_its_requests_in_flight() -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    let f = fixture().await?;
    let mut spec = f.spec(&wat::parse_str(SPIN)?, true).await?;
    spec.timeout = Duration::from_secs(60);
    let usage = spec.usage.clone();
    let handler = f.handler(spec).await?;
    let memory = || usage.memory_bytes.load(Ordering::Relaxed);
    assert_eq!(memory(), 0, "no request, no instance");

    // Two spinning requests: each instance holds its one page.
    let first = tokio::spawn({
        let h = handler.clone();
        async move { call(h.as_ref(), request("GET", "/", "")?).await }
    });
    let second = tokio::spawn({
        let h = handler.clone();
        async move { call(h.as_ref(), request("GET", "/", "")?).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while memory() != 2 * 65536 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "memory stuck at {}",
            memory()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Ending the container's requests gives their memory back.
    first.abort();
    second.abort();
    let _ = first.await;
    let _ = second.await;
    while memory() != 0 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "memory left at {} after the requests ended",
            memory()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

#[tokio::test]
async fn each_request_has_the_memory_limit() -> anyhow::Result<()> {
    let f = fixture().await?;
    let mut spec = f.spec(&wat::parse_str(HOG)?, true).await?;
    spec.memory_limit = 8 << 20;
    let handler = f.handler(spec).await?;
    let (status, _, body) = call(handler.as_ref(), request("GET", "/", "")?).await?;
    assert_eq!(status, http::StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("memory limit of 8388608 bytes"), "{body}");
    Ok(())
}

/// A handler that holds each request until released.
struct Gate {
    entered: tokio::sync::Semaphore,
    release: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl Handler for Gate {
    async fn handle(&self, _req: http::Request<Body>) -> http::Response<Body> {
        self.entered.add_permits(1);
        if let Ok(p) = self.release.acquire().await {
            p.forget();
        }
        text(http::StatusCode::OK, "done")
    }
}

#[tokio::test]
async fn draining_refuses_new_requests_and_waits_for_in_flight_ones() -> anyhow::Result<()> {
    let pods = HttpPods::new();
    let gate = Arc::new(Gate {
        entered: tokio::sync::Semaphore::new(0),
        release: tokio::sync::Semaphore::new(0),
    });
    let drain = CancellationToken::new();
    let stop = CancellationToken::new();
    let registered = tokio::spawn({
        let pods = pods.clone();
        let (gate, drain, stop) = (gate.clone(), drain.clone(), stop.clone());
        async move { pods.register(key(80), gate, drain, stop).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !pods.contains(&key(80)) {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "never registered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(matches!(
        pods.serve(&key(81), request("GET", "/", "")?).await,
        Err(HttpError::NotFound(_))
    ));
    let in_flight = tokio::spawn({
        let pods = pods.clone();
        async move {
            pods.serve(&key(80), request("GET", "/", "")?)
                .await
                .map_err(anyhow::Error::from)
        }
    });
    gate.entered.acquire().await?.forget();
    drain.cancel();
    while pods.contains(&key(80)) {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "never unregistered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(matches!(
        pods.serve(&key(80), request("GET", "/", "")?).await,
        Err(HttpError::NotFound(_))
    ));
    assert!(!registered.is_finished(), "ended with a request in flight");
    gate.release.add_permits(1);
    assert_eq!(in_flight.await??.status(), http::StatusCode::OK);
    assert_eq!(registered.await?, ExitStatus::Exited(0));
    Ok(())
}

#[tokio::test]
async fn stopping_ends_the_registration_at_once() -> anyhow::Result<()> {
    let pods = HttpPods::new();
    let gate = Arc::new(Gate {
        entered: tokio::sync::Semaphore::new(0),
        release: tokio::sync::Semaphore::new(0),
    });
    let stop = CancellationToken::new();
    stop.cancel();
    let status = pods
        .register(key(80), gate, CancellationToken::new(), stop)
        .await;
    assert_eq!(status, ExitStatus::Killed);
    assert!(!pods.contains(&key(80)));
    Ok(())
}

#[tokio::test]
async fn the_kubelet_route_reaches_the_container_with_its_own_path() -> anyhow::Result<()> {
    let f = fixture().await?;
    let wasm = wat::parse_str(echo_module("Content-Type: text/plain\n\n", ""))?;
    let handler = f.handler(f.spec(&wasm, true).await?).await?;
    let pods = HttpPods::new();
    let drain = CancellationToken::new();
    let registered = tokio::spawn({
        let (pods, drain) = (pods.clone(), drain.clone());
        async move {
            pods.register(key(8080), handler, drain, CancellationToken::new())
                .await
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !pods.contains(&key(8080)) {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "never registered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let app = crate::server::pod_http_app(pods.clone());
    let response = app
        .clone()
        .oneshot(
            http::Request::builder()
                .method("PUT")
                .uri("/pods/default/web/http/8080/api/items?id=3")
                .body(Body::from("payload"))?,
        )
        .await?;
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = response.into_body().collect().await?.to_bytes();
    let body = String::from_utf8_lossy(&body);
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(&lines[..2], ["/api/items", "id=3"], "{body}");
    assert!(lines.contains(&"REQUEST_METHOD=PUT"), "{body}");
    assert!(
        lines.contains(&"SCRIPT_NAME=/pods/default/web/http/8080"),
        "{body}"
    );
    assert!(body.ends_with("payload"), "{body}");

    let response = app
        .clone()
        .oneshot(
            http::Request::builder()
                .uri("/pods/default/web/http/9999/")
                .body(Body::empty())?,
        )
        .await?;
    assert_eq!(response.status(), http::StatusCode::NOT_FOUND);
    drain.cancel();
    assert_eq!(registered.await?, ExitStatus::Exited(0));
    Ok(())
}

/// The sample components, built for wasm32-wasip2 once per test run (the
/// wasm-samples workspace, into a target directory of its own).
fn sample_component(name: &str) -> anyhow::Result<Vec<u8>> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| {
            let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wasm-samples");
            let target = std::env::temp_dir().join("wasmkube-runtime-http-samples");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = std::process::Command::new(cargo);
            cmd.args(["build", "--release", "--target", "wasm32-wasip2"])
                .args(["-p", "http-echo", "-p", "http-frontend"])
                .arg("--manifest-path")
                .arg(samples.join("Cargo.toml"))
                .arg("--target-dir")
                .arg(&target);
            for var in [
                "CARGO_ENCODED_RUSTFLAGS",
                "RUSTFLAGS",
                "CARGO_TARGET_DIR",
                "CARGO_BUILD_TARGET",
                "RUSTC_WORKSPACE_WRAPPER",
            ] {
                cmd.env_remove(var);
            }
            let out = cmd.output().map_err(|e| format!("running cargo: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "building the wasm32-wasip2 samples failed (is the target installed?): {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(target.join("wasm32-wasip2/release"))
        })
        .clone()
        .map_err(anyhow::Error::msg)?;
    Ok(std::fs::read(
        dir.join(format!("{}.wasm", name.replace('-', "_"))),
    )?)
}

async fn component(name: &'static str) -> anyhow::Result<Vec<u8>> {
    tokio::task::spawn_blocking(move || sample_component(name)).await?
}

#[tokio::test]
async fn a_wasi_http_component_echoes_the_request() -> anyhow::Result<()> {
    let f = fixture().await?;
    let mut spec = f.spec(&component("http-echo").await?, false).await?;
    spec.env = vec![("POD_NAME".into(), "web-1".into())];
    let usage = spec.usage.clone();
    let handler = f.handler(spec).await?;
    for _ in 0..2 {
        let (status, headers, body) =
            call(handler.as_ref(), request("POST", "/hi?x=1", "payload")?).await?;
        assert_eq!(status, http::StatusCode::OK, "{body}");
        assert_eq!(
            headers.get("x-served-by").map(|v| v.as_bytes()),
            Some(&b"web-1"[..])
        );
        let echoed: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(echoed["method"], "POST");
        assert_eq!(echoed["path"], "/hi?x=1");
        assert_eq!(echoed["body"], "payload");
        assert_eq!(echoed["pod"], "web-1");
    }
    assert!(usage.cpu_nanos.load(std::sync::atomic::Ordering::Relaxed) > 0);
    Ok(())
}

/// Answers every routed request, saying where it was sent.
struct FakeRouter;

#[async_trait::async_trait]
impl ServiceRouter for FakeRouter {
    async fn route(
        &self,
        namespace: &str,
        service: &str,
        port: Option<u16>,
        req: http::Request<Body>,
    ) -> http::Response<Body> {
        let mut response = http::Response::new(Body::from(format!(
            "{{\"routed\":\"{service}.{namespace}:{port:?}{}\"}}",
            req.uri().path()
        )));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        response
    }
}

#[tokio::test]
async fn outgoing_requests_are_denied_unless_listed_and_services_are_routed() -> anyhow::Result<()>
{
    let f = fixture().await?;
    let wasm = component("http-frontend").await?;

    // Not listed: refused, and the frontend says so.
    let router = RouterSlot::default();
    router.set(Some(Arc::new(FakeRouter)));
    let mut spec = f.spec(&wasm, false).await?;
    spec.env = vec![("BACKEND".into(), "backend.default".into())];
    spec.router = router.clone();
    spec.allowed_hosts = AllowedHosts::parse("other.default");
    let handler = f.handler(spec).await?;
    let (status, _, body) = call(handler.as_ref(), request("GET", "/x", "")?).await?;
    assert_eq!(status, http::StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("denied"), "{body}");

    // Listed: a Service host goes through the router.
    let mut spec = f.spec(&wasm, false).await?;
    spec.env = vec![("BACKEND".into(), "backend.default".into())];
    spec.router = router;
    spec.allowed_hosts = AllowedHosts::parse("backend.default");
    let handler = f.handler(spec).await?;
    let (status, _, body) = call(handler.as_ref(), request("GET", "/x", "")?).await?;
    assert_eq!(status, http::StatusCode::OK, "{body}");
    assert!(body.contains("backend.default:None/x"), "{body}");
    Ok(())
}

#[tokio::test]
async fn a_wasi_http_component_past_its_deadline_is_504() -> anyhow::Result<()> {
    // The frontend calls a listed external host that accepts the
    // connection and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let f = fixture().await?;
    let mut spec = f.spec(&component("http-frontend").await?, false).await?;
    spec.env = vec![("BACKEND".into(), addr.to_string())];
    spec.allowed_hosts = AllowedHosts::parse(&addr.to_string());
    spec.timeout = Duration::from_millis(300);
    let handler = f.handler(spec).await?;
    let (status, _, body) = tokio::time::timeout(
        Duration::from_secs(30),
        call(handler.as_ref(), request("GET", "/", "")?),
    )
    .await??;
    assert_eq!(status, http::StatusCode::GATEWAY_TIMEOUT, "{body}");
    Ok(())
}

// ---- an HTTP pod in a pod worker ------------------------------------------

mod in_a_pod {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::PodStatus;
    use tokio::sync::watch;

    use super::*;
    use crate::events::{EventSink, PodEvent};
    use crate::module_cache::{LocalModule, ModuleSource, PullError};
    use crate::pod_worker::{PodApi, WorkerContext, run_pod};

    struct OneModule {
        digest: String,
        path: PathBuf,
    }

    #[async_trait::async_trait]
    impl ModuleSource for OneModule {
        async fn pull(
            &self,
            _image: &str,
            _keyring: &crate::oci::Keyring,
        ) -> Result<LocalModule, PullError> {
            Ok(LocalModule {
                digest: self.digest.clone(),
                path: self.path.clone(),
                size: 1,
                cached: true,
                ..LocalModule::default()
            })
        }
    }

    #[derive(Default)]
    struct Api {
        statuses: std::sync::Mutex<Vec<PodStatus>>,
        deleted: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl PodApi for Api {
        async fn patch_status(&self, _: &str, _: &str, status: &PodStatus) -> Result<(), String> {
            self.statuses
                .lock()
                .map_err(|e| e.to_string())?
                .push(status.clone());
            Ok(())
        }
        async fn delete(&self, _: &str, _: &str, _: &str) -> Result<(), String> {
            self.deleted
                .store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
        async fn config_map(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<BTreeMap<String, String>>, String> {
            Ok(None)
        }
        async fn secret(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
            Ok(None)
        }
    }

    struct NoEvents;

    impl EventSink for NoEvents {
        fn record(&self, _event: PodEvent) {}
    }

    fn ready(s: &PodStatus) -> bool {
        s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    }

    #[tokio::test]
    async fn a_wagi_pod_runs_registered_passes_http_readiness_and_drains_on_delete()
    -> anyhow::Result<()> {
        let f = fixture().await?;
        let (digest, path) = f
            .module(&wat::parse_str(echo_module(
                "Content-Type: text/plain\n\n",
                "",
            ))?)
            .await?;
        let api = Arc::new(Api::default());
        let pods = HttpPods::new();
        let ctx = Arc::new(WorkerContext {
            node_name: "n1".into(),
            node_ip: "127.0.0.1".into(),
            pods_dir: f.dir.path().join("pods"),
            sandbox: f.sandbox.clone(),
            modules: Arc::new(OneModule { digest, path }),
            api: api.clone(),
            events: Arc::new(NoEvents),
            logs: Arc::new(crate::logs::LogRegistry::default()),
            volumes: Arc::new(crate::volumes::VolumeManager::new(
                crate::volumes::VolumeConfig {
                    node_name: "n1".into(),
                    allowed_host_paths: Vec::new(),
                    sync_interval: crate::volumes::DEFAULT_SYNC_INTERVAL,
                    memory_root: Some(f.dir.path().join("shm")),
                },
            )),
            stats: Arc::new(crate::stats::StatsRegistry::new(
                "n1",
                crate::stats::StatsOptions::default(),
            )),
            http: pods.clone(),
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            restart_backoff: crate::status::RestartBackoff::default(),
        });
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1",
                "annotations": {"wasmkube.io/http": "wagi"}},
            "spec": {"nodeName": "n1", "containers": [{
                "name": "c", "image": "web:v1",
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                    "periodSeconds": 1}
            }]}
        }))?;
        let (tx, rx) = watch::channel(Arc::new(pod.clone()));
        let worker = tokio::spawn(run_pod(
            ctx,
            rx,
            CancellationToken::new(),
            CancellationToken::new(),
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        // Running, registered, and ready by an httpGet served in-process
        // (nothing listens on 127.0.0.1:8080).
        loop {
            let last = api
                .statuses
                .lock()
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .last()
                .cloned();
            if last.as_ref().is_some_and(ready) && pods.contains(&key(8080)) {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "never ready: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let response = pods.serve(&key(8080), request("GET", "/x?y", "")?).await?;
        assert_eq!(response.status(), http::StatusCode::OK);

        // Deleting it drains it: nothing is in flight, so it is done at once.
        let mut deleting = pod;
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        deleting.metadata.deletion_grace_period_seconds = Some(600);
        tx.send(Arc::new(deleting))?;
        tokio::time::timeout(Duration::from_secs(30), worker).await??;
        assert!(!pods.contains(&key(8080)));
        assert!(api.deleted.load(std::sync::atomic::Ordering::SeqCst));
        let last = api
            .statuses
            .lock()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .last()
            .cloned()
            .unwrap_or_default();
        let state = last
            .container_statuses
            .and_then(|c| c.first().cloned())
            .and_then(|c| c.state)
            .and_then(|s| s.terminated);
        assert_eq!(state.map(|t| t.exit_code), Some(0));
        Ok(())
    }
}
