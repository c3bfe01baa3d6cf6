//! The HTTP samples are built in the shape the runtime tells apart: the WAGI
//! sample is a preview 1 command module, the wasi:http samples are components
//! exporting `wasi:http/incoming-handler@0.2.x` and importing nothing outside
//! WASI 0.2 (which the runtime links for HTTP components). No cluster: these
//! read the files the build script produced.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use wasmkube_e2e::{P2_SAMPLES, sample_manifest, sample_wasm, sample_wasm_p2};
use wasmparser::{Parser, Payload, Validator, WasmFeatures};

/// Top-level imports and exports of a component (nested core modules and
/// components are skipped: their names are internal wiring).
struct Interface {
    imports: Vec<String>,
    exports: Vec<String>,
}

fn read_valid(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Validator::new_with_features(WasmFeatures::all())
        .validate_all(&bytes)
        .with_context(|| format!("{} does not validate", path.display()))?;
    Ok(bytes)
}

fn component_interface(path: &Path) -> Result<Interface> {
    let bytes = read_valid(path)?;
    ensure!(
        Parser::is_component(&bytes),
        "{} is not a component",
        path.display()
    );
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(&bytes) {
        match payload? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    imports.push(import?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    exports.push(export?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(Interface { imports, exports })
}

/// Interfaces the runtime links for HTTP components: WASI 0.2 and wasi:http.
fn is_wasi_02(name: &str) -> bool {
    let Some((_, version)) = name.split_once('@') else {
        return false;
    };
    version.starts_with("0.2.")
        && [
            "wasi:http/",
            "wasi:io/",
            "wasi:cli/",
            "wasi:clocks/",
            "wasi:random/",
        ]
        .iter()
        .any(|p| name.starts_with(p))
}

fn exports_incoming_handler(i: &Interface) -> bool {
    i.exports
        .iter()
        .any(|e| e.starts_with("wasi:http/incoming-handler@0.2."))
}

#[test]
fn http_echo_is_a_wasi_http_component() -> Result<()> {
    let i = component_interface(&sample_wasm_p2("http-echo"))?;
    ensure!(exports_incoming_handler(&i), "exports: {:?}", i.exports);
    ensure!(
        i.imports.iter().all(|n| is_wasi_02(n)),
        "imports: {:?}",
        i.imports
    );
    // POD_NAME comes from the environment; the echo makes no outgoing calls.
    ensure!(
        i.imports
            .iter()
            .any(|n| n.starts_with("wasi:cli/environment@")),
        "imports: {:?}",
        i.imports
    );
    ensure!(
        !i.imports
            .iter()
            .any(|n| n.starts_with("wasi:http/outgoing-handler@")),
        "imports: {:?}",
        i.imports
    );
    Ok(())
}

#[test]
fn http_frontend_is_a_wasi_http_component_calling_out() -> Result<()> {
    let i = component_interface(&sample_wasm_p2("http-frontend"))?;
    ensure!(exports_incoming_handler(&i), "exports: {:?}", i.exports);
    ensure!(
        i.imports.iter().all(|n| is_wasi_02(n)),
        "imports: {:?}",
        i.imports
    );
    ensure!(
        i.imports
            .iter()
            .any(|n| n.starts_with("wasi:http/outgoing-handler@0.2.")),
        "imports: {:?}",
        i.imports
    );
    Ok(())
}

#[test]
fn http_hello_is_a_preview1_command_module() -> Result<()> {
    let path = sample_wasm("http-hello");
    let bytes = read_valid(&path)?;
    ensure!(
        !Parser::is_component(&bytes),
        "{} is a component",
        path.display()
    );
    let mut start = false;
    let mut modules = Vec::new();
    for payload in Parser::new(0).parse_all(&bytes) {
        match payload? {
            Payload::ExportSection(reader) => {
                for export in reader {
                    start |= export?.name == "_start";
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    modules.push(import?.module.to_string());
                }
            }
            _ => {}
        }
    }
    ensure!(start, "http-hello exports no _start");
    ensure!(
        modules.iter().all(|m| m == "wasi_snapshot_preview1"),
        "imports from {modules:?}"
    );
    Ok(())
}

#[test]
fn sample_wasm_knows_which_samples_are_components() -> Result<()> {
    for name in P2_SAMPLES {
        let bytes = std::fs::read(sample_wasm(name))?;
        ensure!(Parser::is_component(&bytes), "{name} is not a component");
    }
    for name in ["hello", "idle", "http-hello"] {
        let bytes = std::fs::read(sample_wasm(name))?;
        ensure!(Parser::is_core_wasm(&bytes), "{name} is not a core module");
    }
    Ok(())
}

/// The HTTP manifests name the images the README's push commands create and
/// the annotations the runtime reads.
#[test]
fn http_manifests_carry_the_annotations_the_runtime_reads() -> Result<()> {
    let docs = |name: &str| -> Result<Vec<serde_yaml::Value>> {
        let text = std::fs::read_to_string(sample_manifest(name))?;
        let mut out = Vec::new();
        for doc in text.split("\n---") {
            let value: serde_yaml::Value = serde_yaml::from_str(doc)?;
            if !value.is_null() {
                out.push(value);
            }
        }
        Ok(out)
    };
    let annotation = |obj: &serde_yaml::Value, key: &str| -> Option<String> {
        let meta = match obj["kind"].as_str() {
            Some("Pod") => &obj["metadata"],
            _ => &obj["spec"]["template"]["metadata"],
        };
        meta["annotations"][key].as_str().map(str::to_string)
    };

    let hello = docs("http-hello")?;
    let pod = hello
        .iter()
        .find(|d| d["kind"] == "Pod")
        .context("http-hello.yaml has no Pod")?;
    ensure!(annotation(pod, "wasmkube.io/http").as_deref() == Some("wagi"));
    ensure!(pod["spec"]["containers"][0]["ports"][0]["name"] == "http");

    let echo = docs("http-echo")?;
    let deploy = echo
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .context("http-echo.yaml has no Deployment")?;
    ensure!(deploy["spec"]["replicas"] == 3);
    let env = &deploy["spec"]["template"]["spec"]["containers"][0]["env"];
    ensure!(
        env.as_sequence()
            .is_some_and(|e| e.iter().any(|v| v["name"] == "POD_NAME"
                && v["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name")),
        "http-echo has no POD_NAME from the downward API: {env:?}"
    );
    ensure!(
        echo.iter()
            .any(|d| d["kind"] == "Service" && d["spec"]["type"] == "NodePort")
    );

    let two = docs("two-services")?;
    let frontend = two
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "frontend")
        .context("two-services.yaml has no frontend Deployment")?;
    let Some(hosts) = annotation(frontend, "wasmkube.io/allowed-outbound-hosts") else {
        bail!("the frontend lists no allowed outbound hosts");
    };
    ensure!(
        hosts.split(',').any(|h| h.trim() == "backend.default"),
        "{hosts}"
    );
    ensure!(
        two.iter()
            .any(|d| d["kind"] == "Service" && d["metadata"]["name"] == "backend")
    );
    Ok(())
}
