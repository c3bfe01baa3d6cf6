//! The laptop commands on the real binary: `wasmkube up` in the background,
//! `run` of the HTTP sample and of a one-shot module, `status`,
//! `kubeconfig --merge` used by real kubectl, `completion`, and `down`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use wasmkube_e2e::{LineReader, free_port, sample_wasm, stderr, stdout, wait_for, wasmkube_bin};

/// A `wasmkube` command with a clean environment: a temporary HOME and no
/// KUBECONFIG, so only what the laptop commands find on their own is used.
fn wasmkube(home: &Path, data: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(wasmkube_bin());
    c.args(args)
        .env("HOME", home)
        .env("WASMKUBE_DATA_DIR", data)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null());
    c
}

fn ok(mut c: Command) -> Result<String> {
    let out: Output = c.output()?;
    ensure!(
        out.status.success(),
        "{c:?} failed: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    Ok(stdout(&out))
}

/// Stops the server when the test ends, however it ends.
struct Down {
    home: PathBuf,
    data: PathBuf,
}

impl Drop for Down {
    fn drop(&mut self) {
        let _ = wasmkube(&self.home, &self.data, &["down"]).output();
    }
}

fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()?;
    ensure!(out.status.success(), "kubectl {args:?}: {}", stderr(&out));
    Ok(stdout(&out))
}

#[test]
fn up_run_status_kubeconfig_down() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let home = tmp.path().join("home");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&home)?;
    let port = free_port().to_string();
    let kubelet_port = free_port().to_string();

    // Before any cluster exists, the commands that need one say how to start it.
    let hello = sample_wasm("hello");
    let hello_path = hello.to_str().context("path")?;
    for args in [
        &["status"][..],
        &["run", hello_path],
        &["push", hello_path, "hello:v1"],
    ] {
        let out = wasmkube(&home, &data, args).output()?;
        ensure!(
            !out.status.success(),
            "{args:?} succeeded without a cluster"
        );
        ensure!(
            stderr(&out).contains("`wasmkube up`"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // A missing or non-wasm file is refused before anything is sent.
    let missing = wasmkube(&home, &data, &["run", "no-such-module.wasm"]).output()?;
    ensure!(
        !missing.status.success() && stderr(&missing).contains("no-such-module.wasm: no such file"),
        "{}",
        stderr(&missing)
    );
    let text_file = tmp.path().join("notes.wasm");
    std::fs::write(&text_file, "not a module")?;
    let text_path = text_file.to_str().context("path")?;
    for args in [&["run", text_path][..], &["push", text_path, "notes:v1"]] {
        let out = wasmkube(&home, &data, args).output()?;
        ensure!(
            !out.status.success() && stderr(&out).contains("is not a WebAssembly file"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let bad_ref = wasmkube(&home, &data, &["push", hello_path, "hello"]).output()?;
    ensure!(
        !bad_ref.status.success() && stderr(&bad_ref).contains("expected NAME:TAG, e.g. hello:v1"),
        "{}",
        stderr(&bad_ref)
    );

    // A typo in the server flags fails at once, and nothing starts.
    let bad = wasmkube(&home, &data, &["up", "--", "--no-such-flag"]).output()?;
    ensure!(!bad.status.success(), "bad flags were accepted");
    ensure!(stderr(&bad).contains("--no-such-flag"), "{}", stderr(&bad));
    ensure!(!data.join("wasmkube.pid").exists());

    let up = ok(wasmkube(
        &home,
        &data,
        &[
            "up",
            "--",
            "--port",
            &port,
            "--kubelet-port",
            &kubelet_port,
            "--proxy-port",
            "0",
            "--node-name",
            "laptop",
        ],
    ))?;
    let _down = Down {
        home: home.clone(),
        data: data.clone(),
    };
    let kubeconfig = data.join("kubeconfig");
    ensure!(
        up.contains(&format!("export KUBECONFIG={}", kubeconfig.display())),
        "{up}"
    );
    let pid: u32 = std::fs::read_to_string(data.join("wasmkube.pid"))?
        .trim()
        .parse()?;
    ensure!(up.contains(&format!("pid {pid}")), "{up}");
    // Up again: says it runs, starts nothing new.
    let again = ok(wasmkube(&home, &data, &["up"]))?;
    ensure!(
        again.contains(&format!("already running (pid {pid})")),
        "{again}"
    );

    // The HTTP sample, detached: a Deployment and a NodePort Service.
    let echo = sample_wasm("http-echo");
    let out = wasmkube(
        &home,
        &data,
        &[
            "run",
            echo.to_str().context("path")?,
            "--port",
            "8080",
            "--replicas",
            "2",
            "-d",
        ],
    )
    .output()?;
    ensure!(out.status.success(), "run: {}", stderr(&out));
    let (run, said) = (stdout(&out), stderr(&out));
    let url = run
        .lines()
        .find_map(|l| l.split_whitespace().find(|w| w.starts_with("http://")))
        .with_context(|| format!("no URL in {run:?}"))?
        .to_string();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let body = wait_for("the service to answer", Duration::from_secs(30), || {
        let resp = http.post(format!("{url}hi")).body("ping").send()?;
        Ok((resp.status() == 200).then(|| resp.text()).transpose()?)
    })?;
    ensure!(
        body.contains("ping") && body.contains("http-echo-"),
        "{body}"
    );

    // Off a terminal `run` draws no progress line, only its summary.
    ensure!(
        !said.contains('\r') && !said.contains("waiting for"),
        "{said:?}"
    );
    ensure!(said.contains("http-echo is running (2/2 pods"), "{said}");
    // The module's first compile on this node (a fresh compile cache) is an
    // event with its time, after the pull's.
    let cache = tmp.path().join("kubectl-cache");
    let events = wait_for("the Compiled event", Duration::from_secs(30), || {
        let events = kubectl(
            &kubeconfig,
            &cache,
            &[
                "get",
                "events",
                "-o",
                "jsonpath={range .items[*]}{.reason} {.involvedObject.name}: {.message}{\"\\n\"}{end}",
            ],
        )?;
        Ok(events
            .lines()
            .any(|l| l.starts_with("Compiled http-echo-"))
            .then_some(events))
    })?;
    let compiled = events
        .lines()
        .find(|l| l.starts_with("Compiled http-echo-"))
        .unwrap_or_default();
    ensure!(
        compiled.contains("Compiled module of image \"http-echo:")
            && compiled.contains(" MiB) in "),
        "{events}"
    );
    ensure!(
        events
            .lines()
            .any(|l| l.starts_with("Pulled http-echo-") && l.contains("Image size:")),
        "{events}"
    );

    let status = ok(wasmkube(&home, &data, &["status"]))?;
    ensure!(status.contains("Nodes:   1/1 Ready"), "{status}");
    // Both replicas run: a pod that does not is listed by name (the
    // count also holds kube-system's component pods).
    ensure!(
        status.contains(" Running") && !status.contains("default/http-echo"),
        "{status}"
    );

    // A one-shot module: its output, its exit, and --rm cleans up.
    let once = ok(wasmkube(
        &home,
        &data,
        &["run", hello_path, "--once", "--rm"],
    ))?;
    ensure!(once.contains("Hello"), "{once}");

    // The merged kubeconfig works for kubectl beside another context.
    let merged = home.join(".kube").join("config");
    std::fs::create_dir_all(home.join(".kube"))?;
    std::fs::write(
        &merged,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster:\n    server: https://192.0.2.1\nusers:\n- name: admin\n  user:\n    token: other\ncontexts:\n- name: other\n  context:\n    cluster: other\n    user: admin\ncurrent-context: other\n",
    )?;
    let said = ok(wasmkube(&home, &data, &["kubeconfig", "--merge"]))?;
    ensure!(said.contains("made current"), "{said}");
    let deployments = kubectl(&merged, &cache, &["get", "deploy", "-o", "name"])?;
    ensure!(
        deployments.contains("deployment.apps/http-echo"),
        "{deployments}"
    );
    ensure!(!deployments.contains("hello"), "{deployments}");
    let contexts = kubectl(&merged, &cache, &["config", "get-contexts", "-o", "name"])?;
    ensure!(
        contexts.contains("other") && contexts.contains("wasmkube"),
        "{contexts}"
    );

    // Following logs: Ctrl-C (SIGINT) stops following and leaves it running.
    let counter = sample_wasm("counter");
    let mut follow = wasmkube(&home, &data, &["run", counter.to_str().context("path")?])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = LineReader::new(follow.stdout.take().context("stdout")?);
    lines.wait_line("a log line of the counter", Duration::from_secs(60), |l| {
        l.contains("count")
    })?;
    let sigint = Command::new("kill")
        .args(["-INT", &follow.id().to_string()])
        .status()?;
    ensure!(sigint.success());
    let code = wait_for("run to exit on Ctrl-C", Duration::from_secs(20), || {
        Ok(follow.try_wait()?)
    })?;
    ensure!(code.success(), "run exited with {code}");
    let still = kubectl(
        &kubeconfig,
        &cache,
        &["get", "deploy", "counter", "-o", "name"],
    )?;
    ensure!(still.contains("counter"), "{still}");

    let bash = ok(wasmkube(&home, &data, &["completion", "bash"]))?;
    ensure!(
        bash.contains("_wasmkube") && bash.contains("run"),
        "no completion script"
    );

    let down = ok(wasmkube(&home, &data, &["down"]))?;
    ensure!(down.contains(&format!("stopped (pid {pid})")), "{down}");
    ensure!(
        std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>()?)).is_err(),
        "the API port still answers"
    );
    ensure!(!data.join("wasmkube.pid").exists());
    let none = ok(wasmkube(&home, &data, &["down"]))?;
    ensure!(none.contains("not running"), "{none}");
    // Its kubeconfig remains, but nothing answers there: say what to do.
    let gone = wasmkube(&home, &data, &["status"]).output()?;
    ensure!(
        !gone.status.success() && stderr(&gone).contains("hint: no cluster answers"),
        "{}",
        stderr(&gone)
    );
    ensure!(stderr(&gone).contains("`wasmkube up`"), "{}", stderr(&gone));
    Ok(())
}
