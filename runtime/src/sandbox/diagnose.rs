//! Why a binary cannot run as a container, in words a user can act on.
//!
//! Each message becomes the `CreateContainerError` message of the
//! container's waiting state and the text of a `Failed` event, so it names
//! what is wrong with the module itself (its first bytes, the invalid
//! instruction's offset, the missing export, every unsatisfied import) and
//! what this node accepts instead.

use std::collections::BTreeSet;

use wasmparser::{BinaryReaderError, Parser};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker as ComponentLinker};
use wasmtime::{Engine, ExternType, Module};
use wasmtime_environ::WasmError;

/// At most this many names are listed in one message.
const MAX_LISTED: usize = 20;

/// What WASI a component may import, as said in messages.
const P2_PROVIDED: &str =
    "WASI 0.2 (wasi:cli, wasi:clocks, wasi:filesystem, wasi:io, wasi:random, wasi:sockets)";

/// What a wasm binary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A core module: runs as a WASI preview 1 command (`_start`).
    Module,
    /// A component: runs as a WASI 0.2 command (`wasi:cli/run`).
    Component,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Module => "module",
            Kind::Component => "component",
        }
    }
}

/// The kind of `bytes`, from the 8-byte header alone; anything else is
/// explained.
pub(crate) fn kind(bytes: &[u8]) -> Result<Kind, String> {
    if Parser::is_core_wasm(bytes) {
        return Ok(Kind::Module);
    }
    if Parser::is_component(bytes) {
        return Ok(Kind::Component);
    }
    if bytes.starts_with(b"\0asm") {
        let header: Vec<String> = bytes
            .iter()
            .skip(4)
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect();
        return Err(format!(
            "the module is a WebAssembly binary of an unknown version (header bytes {}); \
             this node runs core modules (version 01 00 00 00) and components (0d 00 01 00)",
            header.join(" ")
        ));
    }
    Err(not_wasm(bytes))
}

/// Explains bytes that are not WebAssembly at all.
fn not_wasm(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "the module is empty (0 bytes), not a WebAssembly binary".into();
    }
    let what = describe(bytes);
    format!(
        "the module is not a WebAssembly binary (those start with \\0asm): {what}; \
         a container's image must be a WebAssembly module or component, \
         e.g. a program built for wasm32-wasip1 or wasm32-wasip2"
    )
}

/// What the first bytes of a file suggest it is.
fn describe(bytes: &[u8]) -> String {
    let magic: &[(&[u8], &str)] = &[
        (b"\x7fELF", "a native ELF executable or library"),
        (b"MZ", "a Windows executable"),
        (b"\xcf\xfa\xed\xfe", "a macOS (Mach-O) executable"),
        (b"\xce\xfa\xed\xfe", "a macOS (Mach-O) executable"),
        (
            b"\xca\xfe\xba\xbe",
            "a macOS universal binary or a Java class file",
        ),
        (
            b"\x1f\x8b",
            "gzip-compressed data (an archive or image layer, not the module itself)",
        ),
        (b"\x28\xb5\x2f\xfd", "zstd-compressed data"),
        (b"PK\x03\x04", "a zip archive"),
    ];
    let head = &bytes[..bytes.len().min(8)];
    if let Some((m, what)) = magic.iter().find(|(m, _)| bytes.starts_with(m)) {
        return format!("it starts with \"{}\", {what}", m.escape_ascii());
    }
    let Some(text) = printable_prefix(bytes) else {
        let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
        return format!("it starts with the bytes {}", hex.join(" "));
    };
    let trimmed = text.trim_start();
    if trimmed.starts_with("(module") || trimmed.starts_with("(component") {
        return "it is WebAssembly text (.wat); translate it to the binary format first, \
                e.g. with `wasm-tools parse`"
            .into();
    }
    let quoted: String = text
        .chars()
        .take(40)
        .collect::<String>()
        .escape_debug()
        .to_string();
    let what = if trimmed.starts_with("#!") {
        "a script"
    } else if trimmed.starts_with('{') {
        "JSON (an image manifest or config rather than the module?)"
    } else if trimmed.starts_with('<') {
        "HTML or XML (an error page?)"
    } else {
        "text"
    };
    format!("it looks like {what}: \"{quoted}\"")
}

/// The start of `bytes` as text, when it is text.
fn printable_prefix(bytes: &[u8]) -> Option<String> {
    let head = &bytes[..bytes.len().min(64)];
    // The cut may split a character: decode what is valid.
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        Err(e) if e.valid_up_to() > 0 && e.error_len().is_none() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).ok()?
        }
        Err(_) => return None,
    };
    let printable = text
        .chars()
        .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'));
    printable.then(|| text.to_string())
}

/// Explains a failed `Module::from_binary` / `Component::from_binary`:
/// invalid WebAssembly (with the validator's offset), a feature this node
/// does not enable, or a compiler failure.
pub(crate) fn compile_failed(kind: Kind, e: &wasmtime::Error) -> String {
    let noun = kind.noun();
    for cause in e.chain() {
        if let Some(invalid) = cause.downcast_ref::<BinaryReaderError>() {
            let feature = invalid.missing_wasm_feature().is_some();
            return invalid_message(noun, invalid.message(), invalid.offset(), feature);
        }
        match cause.downcast_ref::<WasmError>() {
            Some(WasmError::InvalidWebAssembly { message, offset }) => {
                return invalid_message(noun, message, *offset, false);
            }
            Some(WasmError::Unsupported(what)) => {
                return format!(
                    "the {noun} uses a WebAssembly feature this node does not support: {what}"
                );
            }
            _ => {}
        }
    }
    format!("compiling the {noun} failed: {e:#}")
}

fn invalid_message(noun: &str, message: &str, offset: usize, feature: bool) -> String {
    // A proposal the engine leaves off is a node limitation, not a broken
    // binary. Function bodies reach us as text only, where the validator
    // says "… support is not enabled" or "… are disabled".
    if feature || message.contains("not enabled") || message.contains("disabled") {
        return format!(
            "the {noun} uses a WebAssembly feature this node does not enable: {message} \
             (at byte offset {offset:#x})"
        );
    }
    format!("the {noun} is not valid WebAssembly: {message} (at byte offset {offset:#x})")
}

fn extern_kind(ty: &ExternType) -> &'static str {
    match ty {
        ExternType::Func(_) => "func",
        ExternType::Global(_) => "global",
        ExternType::Table(_) => "table",
        ExternType::Memory(_) => "memory",
        ExternType::Tag(_) => "tag",
    }
}

fn component_item_kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "func",
        ComponentItem::CoreFunc(_) => "core func",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "instance",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    }
}

/// `a, b, c` with at most [`MAX_LISTED`] entries.
fn list(items: &[String]) -> String {
    let mut out = items
        .iter()
        .take(MAX_LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > MAX_LISTED {
        out.push_str(&format!(" and {} more", items.len() - MAX_LISTED));
    }
    out
}

/// Why a core module is not a WASI command, or `None` when it is one.
pub(crate) fn module_not_command(module: &Module) -> Option<String> {
    match module.get_export("_start") {
        Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => None,
        Some(ExternType::Func(f)) => {
            let params: Vec<String> = f.params().map(|t| t.to_string()).collect();
            let results: Vec<String> = f.results().map(|t| t.to_string()).collect();
            Some(format!(
                "the module's `_start` function takes ({}) and returns ({}); a WASI \
                 command's `_start` takes no parameters and returns nothing",
                params.join(", "),
                results.join(", ")
            ))
        }
        Some(other) => Some(format!(
            "the module exports `_start` as a {}, not a function, so it is not a WASI command",
            extern_kind(&other)
        )),
        None => {
            let exports: Vec<String> = module
                .exports()
                .map(|e| format!("{} ({})", e.name(), extern_kind(&e.ty())))
                .collect();
            let listed = if exports.is_empty() {
                "it exports nothing".to_string()
            } else {
                format!("it exports {}", list(&exports))
            };
            let reactor = if module.get_export("_initialize").is_some() {
                "; with `_initialize` it is a WASI reactor (a library whose functions \
                 a host calls), which cannot run as a container"
            } else {
                ""
            };
            Some(format!(
                "the module has no `_start` function, so it is not a WASI command \
                 ({listed}){reactor}; build it as a program with a `main` \
                 (a command) for wasm32-wasip1"
            ))
        }
    }
}

/// Explains why a core module does not link: every import this node does
/// not provide, by name. `provided` holds the linker's `(module, name)`s.
pub(crate) fn module_imports(
    module: &Module,
    provided: &BTreeSet<(String, String)>,
    e: &wasmtime::Error,
) -> String {
    let missing: Vec<_> = module
        .imports()
        .filter(|i| !provided.contains(&(i.module().to_string(), i.name().to_string())))
        .collect();
    if missing.is_empty() {
        // Everything is there, but with another type.
        return format!("the module cannot be linked: {e:#}");
    }
    let names: Vec<String> = missing
        .iter()
        .map(|i| format!("{}::{} ({})", i.module(), i.name(), extern_kind(&i.ty())))
        .collect();
    let mut hints = Vec::new();
    if missing.iter().any(|i| i.module() == "wasi_unstable") {
        hints.push("wasi_unstable is the WASI preview 0 ABI: rebuild for wasm32-wasip1");
    }
    if missing.iter().any(|i| i.module().starts_with("wasi:")) {
        hints.push(
            "imports named wasi:… are WASI 0.2 interfaces: turn the module into a component \
             (e.g. `wasm-tools component new`) or build it for wasm32-wasip2",
        );
    }
    if missing.iter().any(|i| i.module() == "env") {
        hints.push("`env` imports are usually symbols left undefined when the module was linked");
    }
    let hints = if hints.is_empty() {
        String::new()
    } else {
        format!(" ({})", hints.join("; "))
    };
    format!(
        "the module imports {} this node does not provide: {}; modules can import only \
         WASI preview 1 (wasi_snapshot_preview1){hints}",
        if names.len() == 1 {
            "something"
        } else {
            "things"
        },
        list(&names)
    )
}

/// Whether a component exports `wasi:http/incoming-handler` 0.2: an HTTP
/// container, served one instance per request.
pub(crate) fn is_http_handler(engine: &Engine, component: &Component) -> bool {
    component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name.starts_with("wasi:http/incoming-handler@0.2."))
}

/// Why an HTTP component's `handle` cannot serve requests, or `None` when
/// it has the shape of wasi:http 0.2's `handle(incoming-request,
/// response-outparam)`. The bindings check the exact types only when an
/// instance is made; checked here, a wrong shape is refused when the
/// container is created rather than answered 500 on every request.
pub(crate) fn http_handler_mismatch(engine: &Engine, component: &Component) -> Option<String> {
    let ty = component.component_type();
    let (name, export) = ty
        .exports(engine)
        .find(|(name, _)| name.starts_with("wasi:http/incoming-handler@0.2."))?;
    let ComponentItem::ComponentInstance(instance) = &export.ty else {
        return Some(format!(
            "{name} is exported as a {}, not an instance",
            component_item_kind(&export.ty)
        ));
    };
    match instance.get_export(engine, "handle").map(|e| e.ty) {
        Some(ComponentItem::ComponentFunc(f))
            if f.params().len() == 2 && f.results().len() == 0 =>
        {
            None
        }
        Some(ComponentItem::ComponentFunc(f)) => Some(format!(
            "its `handle` takes {} parameters and returns {} results; wasi:http's takes \
             (incoming-request, response-outparam) and returns nothing",
            f.params().len(),
            f.results().len()
        )),
        Some(other) => Some(format!(
            "its `handle` is a {}, not a function",
            component_item_kind(&other)
        )),
        None => Some(format!("{name} has no `handle` function")),
    }
}

/// Why a component is not a WASI command, or `None` when it exports
/// `wasi:cli/run` (whose version the command bindings then check).
pub(crate) fn component_not_command(engine: &Engine, component: &Component) -> Option<String> {
    let ty = component.component_type();
    let exports: Vec<(String, &'static str)> = ty
        .exports(engine)
        .map(|(name, e)| (name.to_string(), component_item_kind(&e.ty)))
        .collect();
    if exports.iter().any(|(n, _)| n.starts_with("wasi:cli/run@")) {
        return None;
    }
    if let Some((http, _)) = exports
        .iter()
        .find(|(n, _)| n.starts_with("wasi:http/incoming-handler@"))
    {
        return Some(format!(
            "the component is a wasi:http component (it exports {http}, not wasi:cli/run); \
             serve it as an HTTP workload instead of running it as a command"
        ));
    }
    let names: Vec<String> = exports.iter().map(|(n, k)| format!("{n} ({k})")).collect();
    let listed = if names.is_empty() {
        "it exports nothing".to_string()
    } else {
        format!("it exports {}", list(&names))
    };
    Some(format!(
        "the component does not export wasi:cli/run, so it has nothing to run ({listed}); \
         a container must be a WASI command: a program with a `main` built for wasm32-wasip2, \
         or a component exporting wasi:cli/run@0.2"
    ))
}

/// Explains a `wasi:cli/run` export the WASI 0.2 command bindings refuse
/// (another major version, or another shape).
pub(crate) fn run_mismatch(engine: &Engine, component: &Component, e: &wasmtime::Error) -> String {
    let ty = component.component_type();
    let name = ty
        .exports(engine)
        .map(|(name, _)| name)
        .find(|name| name.starts_with("wasi:cli/run@"))
        .unwrap_or("wasi:cli/run");
    format!(
        "the component exports {name}, but this node runs WASI 0.2 commands \
         (wasi:cli/run@0.2.x): {e:#}"
    )
}

/// Explains why a component does not link: every import this node does
/// not provide, by name — a whole instance when none of its functions and
/// resources is provided, else each missing function or resource.
pub(crate) fn component_imports<T: 'static>(
    engine: &Engine,
    component: &Component,
    linker: &ComponentLinker<T>,
    e: &wasmtime::Error,
) -> String {
    let ty = component.component_type();
    let mut missing = Vec::new();
    for (name, import) in ty.imports(engine) {
        match &import.ty {
            ComponentItem::ComponentInstance(instance) => {
                let mut checked = 0;
                let mut absent = Vec::new();
                for (export, item) in instance.exports(engine) {
                    let Some(decl) = probe_decl(export, &item.ty) else {
                        continue;
                    };
                    checked += 1;
                    let probe = format!("(instance {decl})");
                    if is_missing(engine, linker, name, &probe) {
                        absent.push(format!(
                            "{name}#{export} ({})",
                            component_item_kind(&item.ty)
                        ));
                    }
                }
                if checked > 0 && absent.len() == checked {
                    missing.push(format!("{name} (instance)"));
                } else {
                    missing.extend(absent);
                }
            }
            // Named types are not provided by a linker.
            ComponentItem::Type(_) => {}
            other => {
                let provided = match probe_decl(name, other) {
                    Some(_) => {
                        let decl = match other {
                            ComponentItem::Resource(_) => "(type (sub resource))",
                            _ => "(func)",
                        };
                        !is_missing(engine, linker, name, decl)
                    }
                    None => false,
                };
                if !provided {
                    missing.push(format!("{name} ({})", component_item_kind(other)));
                }
            }
        }
    }
    if missing.is_empty() {
        // Everything is there, but some function or type differs.
        return format!("the component cannot be linked: {e:#}");
    }
    format!(
        "the component imports {} this node does not provide: {}; components can import {P2_PROVIDED}",
        if missing.len() == 1 {
            "something"
        } else {
            "things"
        },
        list(&missing)
    )
}

/// How a probe declares an item named `name` of `item`'s kind, for the
/// kinds a linker can provide.
fn probe_decl(name: &str, item: &ComponentItem) -> Option<String> {
    if name.contains(['"', '\\']) {
        return None;
    }
    match item {
        ComponentItem::ComponentFunc(_) => Some(format!("(export \"{name}\" (func))")),
        ComponentItem::Resource(_) => Some(format!("(export \"{name}\" (type (sub resource)))")),
        _ => None,
    }
}

/// Whether `linker` lacks the item a component importing `name` as `ty`
/// (wat) needs — judged with wasmtime's own linking rules, semver-compatible
/// versions included, by linking a component that imports only that. A
/// function is probed with the type `func()`: a different type means it is
/// there (the real import may still not match, which wasmtime's own error
/// then says), only "implementation is missing" means it is not. Only used
/// to explain a failure, so the small compiles are affordable.
fn is_missing<T: 'static>(
    engine: &Engine,
    linker: &ComponentLinker<T>,
    name: &str,
    ty: &str,
) -> bool {
    if name.contains(['"', '\\']) {
        return true;
    }
    let probe = format!("(component (import \"{name}\" {ty}))");
    let Ok(probe) = Component::new(engine, probe) else {
        return true;
    };
    match linker.instantiate_pre(&probe) {
        Ok(_) => false,
        Err(e) => e
            .root_cause()
            .to_string()
            .ends_with("implementation is missing"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_tell_modules_from_components() {
        assert_eq!(kind(b"\0asm\x01\0\0\0"), Ok(Kind::Module));
        assert_eq!(kind(b"\0asm\x0d\0\x01\0"), Ok(Kind::Component));
        let Err(m) = kind(b"\0asm\x02\0\0\0") else {
            panic!("an unknown version is not accepted");
        };
        assert!(
            m.contains("unknown version (header bytes 02 00 00 00)"),
            "{m}"
        );
    }

    #[test]
    fn non_wasm_files_are_described_by_their_first_bytes() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"\x7fELF\x02\x01\x01\0",
                "\\x7fELF\", a native ELF executable",
            ),
            (b"MZ\x90\0", "a Windows executable"),
            (b"\x1f\x8b\x08\0", "gzip-compressed data"),
            (
                b"#!/bin/sh\necho hi\n",
                "a script: \"#!/bin/sh\\necho hi\\n\"",
            ),
            (b"(module (func))", "WebAssembly text (.wat)"),
            (b"  (component)", "WebAssembly text (.wat)"),
            (b"{\"schemaVersion\":2}", "JSON"),
            (b"hello world", "it looks like text: \"hello world\""),
            (b"\x01\x02\x03\xff", "it starts with the bytes 01 02 03 ff"),
        ];
        for (bytes, expect) in cases {
            let Err(m) = kind(bytes) else {
                panic!("{bytes:?} was taken for wasm");
            };
            assert!(
                m.starts_with("the module is not a WebAssembly binary"),
                "{m}"
            );
            assert!(m.contains(expect), "{m} lacks {expect}");
        }
        assert_eq!(
            kind(b"").err().as_deref(),
            Some("the module is empty (0 bytes), not a WebAssembly binary")
        );
    }

    #[test]
    fn long_lists_are_cut() {
        let items: Vec<String> = (0..25).map(|i| i.to_string()).collect();
        let l = list(&items);
        assert!(l.ends_with("19 and 5 more"), "{l}");
    }
}
