//! Bad input gets the right Kubernetes Status, stores nothing, and the server
//! keeps serving — on both store backends. Raw HTTPS here: kubectl would refuse to send most of these.

use anyhow::Result;
use serde_json::Value;
use wasmkube_e2e::{Backend, Cluster};

fn status_of(resp: reqwest::blocking::Response) -> Result<(u16, Value)> {
    let code = resp.status().as_u16();
    let body: Value = serde_json::from_slice(&resp.bytes()?)?;
    Ok((code, body))
}

fn assert_status(got: (u16, Value), code: u16, reason: &str) {
    let (http, body) = got;
    assert_eq!(http, code, "HTTP code; body: {body}");
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a message: {body}"
    );
}

fn bad_requests_get_the_right_status_and_store_nothing(backend: Backend) -> Result<()> {
    let c = Cluster::start_on(backend)?;
    let (token, _) = c.credentials()?;
    let http = c.http()?;
    let pods = format!("{}/api/v1/namespaces/default/pods", c.url());
    let auth = format!("Bearer {token}");

    // No token, wrong token.
    assert_status(status_of(http.get(&pods).send()?)?, 401, "Unauthorized");
    assert_status(
        status_of(
            http.get(&pods)
                .header("Authorization", "Bearer nope")
                .send()?,
        )?,
        401,
        "Unauthorized",
    );

    // Malformed JSON and YAML.
    let bad_json = http
        .post(&pods)
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .body("{\"kind\":\"Pod\",")
        .send()?;
    assert_status(status_of(bad_json)?, 400, "BadRequest");
    let bad_yaml = http
        .post(&pods)
        .header("Authorization", &auth)
        .header("Content-Type", "application/yaml")
        .body("kind: Pod\nmetadata: [unclosed\n")
        .send()?;
    assert_status(status_of(bad_yaml)?, 400, "BadRequest");

    // An invalid name.
    let invalid = serde_json::json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"Not_A_Name"},
        "spec":{"containers":[{"name":"c","image":"hello:v1"}]}});
    let resp = http
        .post(&pods)
        .header("Authorization", &auth)
        .json(&invalid)
        .send()?;
    let got = status_of(resp)?;
    assert!(
        got.1["details"]["causes"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "causes: {}",
        got.1
    );
    assert_status(got, 422, "Invalid");

    // An unknown resource.
    let unknown = http
        .get(format!("{}/api/v1/namespaces/default/widgets", c.url()))
        .header("Authorization", &auth)
        .send()?;
    assert_status(status_of(unknown)?, 404, "NotFound");

    // A 100 MB body.
    let huge = vec![b' '; 100 * 1024 * 1024];
    let resp = http
        .post(&pods)
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .body(huge)
        .send();
    match resp {
        Ok(r) => assert_status(status_of(r)?, 413, "RequestEntityTooLarge"),
        // The server may answer 413 and close before the client finished
        // sending; then the client sees a broken pipe instead. Both refuse it.
        Err(e) => assert!(
            e.is_request() || e.is_body() || e.is_connect(),
            "unexpected error sending 100 MB: {e}"
        ),
    }

    // Invalid wasm bytes pushed as a module.
    let bad_module = http
        .put(format!("{}/wasmkube/v1/modules/broken/v1", c.url()))
        .header("Authorization", &auth)
        .header("Content-Type", "application/wasm")
        .body(b"\0asm\x01\0\0\0\x7fgarbage".to_vec())
        .send()?;
    assert_status(status_of(bad_module)?, 422, "Invalid");

    // Nothing was stored, and the server still serves.
    let list: Value = http
        .get(&pods)
        .header("Authorization", &auth)
        .send()?
        .json()?;
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(0),
        "no pod stored: {list}"
    );
    let modules: Value = http
        .get(format!("{}/wasmkube/v1/modules", c.url()))
        .header("Authorization", &auth)
        .send()?
        .json()?;
    assert_eq!(
        modules["items"].as_array().map(Vec::len),
        Some(0),
        "no module stored: {modules}"
    );
    let nodes = c.kubectl_ok(&["get", "nodes"])?;
    assert!(nodes.contains("node-1"), "{nodes}");
    Ok(())
}

fn kubectl_reports_errors_from_the_server(backend: Backend) -> Result<()> {
    let c = Cluster::start_on(backend)?;
    let missing = c.kubectl(&["get", "pod", "nope"])?;
    assert!(!missing.status.success());
    assert!(
        wasmkube_e2e::stderr(&missing).contains("pods \"nope\" not found"),
        "{}",
        wasmkube_e2e::stderr(&missing)
    );

    let dup = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"twice"},"spec":{"containers":[{"name":"c","image":"hello:v1"}]}}"#;
    let first = c.kubectl_stdin(&["create", "-f", "-"], dup)?;
    assert!(first.status.success(), "{}", wasmkube_e2e::stderr(&first));
    let second = c.kubectl_stdin(&["create", "-f", "-"], dup)?;
    assert!(!second.status.success());
    assert!(
        wasmkube_e2e::stderr(&second).contains("already exists"),
        "{}",
        wasmkube_e2e::stderr(&second)
    );

    // Strict field validation: kubectl asks for it; a typo is refused.
    let typo = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"typo"},"spec":{"containers":[{"name":"c","imagee":"hello:v1"}]}}"#;
    let out = c.kubectl_stdin(&["create", "-f", "-"], typo)?;
    assert!(!out.status.success(), "a typo'd field is refused");
    assert!(
        wasmkube_e2e::stderr(&out).contains("imagee"),
        "the error names the field: {}",
        wasmkube_e2e::stderr(&out)
    );
    Ok(())
}

wasmkube_e2e::both_stores!(
    bad_requests_get_the_right_status_and_store_nothing,
    kubectl_reports_errors_from_the_server,
);
