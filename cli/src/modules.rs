//! `wasmkube push` and `wasmkube modules [ls|rm]`: the module store over HTTPS.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};
use wasmkube_api::wasm::{MODULE_API, ModuleInfo};

/// Splits `NAME:TAG`; the tag is required so a push never silently means `latest`.
pub fn parse_reference(reference: &str) -> anyhow::Result<(&str, &str)> {
    match reference.rsplit_once(':') {
        Some((name, tag)) if !name.is_empty() && !tag.is_empty() && !name.contains('/') => {
            Ok((name, tag))
        }
        _ => bail!("invalid module reference {reference:?}: expected NAME:TAG, e.g. hello:v1"),
    }
}

/// Turns an API failure into the message of its Status.
pub(crate) fn api_error(e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            anyhow::anyhow!("{message} (HTTP {})", status.code)
        }
        other => anyhow::Error::new(other),
    }
}

/// An error of a command that talks to the cluster, with what to do next
/// when its cause is a common one: no cluster listening, credentials from
/// an earlier or expired cluster, no kubeconfig at all.
pub(crate) fn with_advice(e: anyhow::Error) -> anyhow::Error {
    match advice(&format!("{e:#}")) {
        Some(hint) => anyhow::anyhow!("{e:#}\nhint: {hint}"),
        None => e,
    }
}

/// The advice for an error's text, if it is a recognised one.
fn advice(text: &str) -> Option<&'static str> {
    let lower = text.to_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    if has(&["hint: "]) {
        // Already advised (an inner command's error).
        None
    } else if has(&[
        "connection refused",
        "tcp connect error",
        "dns error",
        "no route to host",
        "connection reset",
    ]) {
        Some(
            "no cluster answers at the kubeconfig's address. Start one with `wasmkube up` \
             (or choose another with --kubeconfig / --context)",
        )
    } else if has(&["no kubeconfig found"]) {
        Some("start a cluster with `wasmkube up`; the commands find its kubeconfig on their own")
    } else if has(&[
        "(http 401)",
        "code: 401",
        "401 unauthorized",
        "\"unauthorized\"",
    ]) || lower.starts_with("unauthorized")
    {
        Some(
            "the cluster refused the kubeconfig's credentials: the token expired, was revoked, \
             or belongs to an earlier cluster. Use the current one: \
             `export KUBECONFIG=~/.wasmkube/kubeconfig`, or `wasmkube kubeconfig --merge` again",
        )
    } else if has(&[
        "invalid peer certificate",
        "unknownissuer",
        "certificate verify failed",
    ]) {
        Some(
            "the server's certificate is not signed by the CA in the kubeconfig: the cluster was \
             probably recreated. Use its current kubeconfig (`wasmkube kubeconfig --merge` again)",
        )
    } else if has(&[
        "failed to load current context",
        "failed to determine current context",
        "failed to load the cluster of context",
    ]) {
        Some(
            "the kubeconfig has no such context (or none is current): list them with \
             `kubectl config get-contexts`; `wasmkube kubeconfig --merge` adds `wasmkube`",
        )
    } else {
        None
    }
}

/// Refuses a module file that is missing or not wasm, reading only its
/// first bytes (a large module is read once, later).
pub(crate) async fn check_module(file: &Path) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt as _;
    let mut head = Vec::with_capacity(4);
    match tokio::fs::File::open(file).await {
        Ok(f) => {
            f.take(4)
                .read_to_end(&mut head)
                .await
                .with_context(|| format!("reading {}", file.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{}: no such file", file.display())
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    }
    not_wasm(file, &head)
}

fn not_wasm(file: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if !bytes.starts_with(b"\0asm") {
        bail!(
            "{} is not a WebAssembly file (no \\0asm header): build it for wasm32-wasip1 \
             or wasm32-wasip2, e.g. `cargo build --release --target wasm32-wasip1`",
            file.display()
        );
    }
    Ok(())
}

/// The bytes of a module file, refusing one that is missing or not wasm
/// with a message that says so (before anything is sent anywhere).
pub(crate) async fn read_module(file: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = match tokio::fs::read(file).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{}: no such file", file.display())
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    not_wasm(file, &bytes)?;
    Ok(bytes)
}

/// `sha256:<hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Uploads `file` as `name:tag`; returns the line to print.
pub async fn push(client: &kube::Client, file: &Path, reference: &str) -> anyhow::Result<String> {
    let (name, tag) = parse_reference(reference)?;
    let bytes = read_module(file).await?;
    let local_digest = digest_of(&bytes);
    let size = bytes.len();
    // The server hashes the body as it arrives and refuses it unless it is
    // what was read here.
    let request = http::Request::put(format!(
        "{MODULE_API}/modules/{name}/{tag}?digest={local_digest}"
    ))
    .header(http::header::CONTENT_TYPE, "application/wasm")
    .body(bytes)
    .context("building the request")?;
    let body = crate::progress::spinning(
        &format!("pushing {name}:{tag} ({})", human_size(size as u64)),
        client.request_text(request),
    )
    .await
    .map_err(api_error)?;
    let info: ModuleInfo = serde_json::from_str(&body)
        .with_context(|| format!("unexpected answer from the server: {body}"))?;
    if info.digest != local_digest {
        bail!(
            "the server stored digest {} but the file hashes to {local_digest}",
            info.digest
        );
    }
    Ok(format!(
        "pushed {}:{} {} ({size} bytes)",
        info.name, info.tag, info.digest
    ))
}

pub(crate) const EXAMPLES: &str = "Examples:\n  \
    wasmkube modules                     # NAME, TAG, DIGEST, SIZE, AGE\n  \
    wasmkube push hello.wasm hello:v2\n  \
    wasmkube modules rm hello:v1";

/// `wasmkube modules`: list the cluster's module store (the default) or
/// remove tags from it.
#[derive(Debug, clap::Args)]
pub(crate) struct ModulesArgs {
    #[command(subcommand)]
    command: Option<ModulesCommand>,

    #[command(flatten)]
    client: crate::ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ModulesCommand {
    /// List every NAME:TAG with its digest, size and age (the default).
    #[command(visible_alias = "list")]
    Ls {
        #[command(flatten)]
        client: crate::ClientArgs,
    },
    /// Remove tags. A module's bytes are deleted by the server's garbage
    /// collector once no tag, pod or pod template references its digest
    /// (and not before a grace period after its last push).
    #[command(
        visible_alias = "delete",
        after_long_help = "Example:\n  wasmkube modules rm hello:v1 hello:v2"
    )]
    Rm {
        /// The tags to remove, e.g. `hello:v1`.
        #[arg(value_name = "NAME:TAG", required = true)]
        references: Vec<String>,

        #[command(flatten)]
        client: crate::ClientArgs,
    },
}

/// Runs `wasmkube modules …`; errors reaching the cluster say what to do next.
pub(crate) async fn run(args: ModulesArgs) -> anyhow::Result<()> {
    modules(args).await.map_err(with_advice)
}

/// Flags given after the subcommand win over those given before it.
async fn modules(args: ModulesArgs) -> anyhow::Result<()> {
    let pick = |sub: crate::ClientArgs| crate::ClientArgs {
        kubeconfig: sub.kubeconfig.or_else(|| args.client.kubeconfig.clone()),
        context: sub.context.or_else(|| args.client.context.clone()),
    };
    let (client_args, remove) = match args.command {
        None => (
            pick(crate::ClientArgs {
                kubeconfig: None,
                context: None,
            }),
            None,
        ),
        Some(ModulesCommand::Ls { client }) => (pick(client), None),
        Some(ModulesCommand::Rm { references, client }) => (pick(client), Some(references)),
    };
    let client = crate::kubeconfig::client(
        client_args.kubeconfig.as_deref(),
        client_args.context.as_deref(),
    )
    .await?;
    let Some(references) = remove else {
        let table = list(&client).await?;
        if table.is_empty() {
            eprintln!("No modules found.");
        }
        print!("{table}");
        return Ok(());
    };
    // Like kubectl delete: every name is tried, failures are reported at the end.
    let mut failed = 0usize;
    for reference in &references {
        match remove_tag(&client, reference).await {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("error: {e:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} tags could not be removed", references.len());
    }
    Ok(())
}

/// Deletes the tag `reference` (NAME:TAG); returns the line to print.
pub async fn remove_tag(client: &kube::Client, reference: &str) -> anyhow::Result<String> {
    let (name, tag) = parse_reference(reference)?;
    let request = http::Request::delete(format!("{MODULE_API}/modules/{name}/{tag}"))
        .body(Vec::new())
        .context("building the request")?;
    let body = client.request_text(request).await.map_err(api_error)?;
    let info: ModuleInfo = serde_json::from_str(&body)
        .with_context(|| format!("unexpected answer from the server: {body}"))?;
    Ok(format!(
        "module \"{name}:{tag}\" deleted ({})",
        short_digest(&info.digest)
    ))
}

/// Like `docker images`: the algorithm and 12 hex digits identify a digest.
fn short_digest(digest: &str) -> String {
    digest.chars().take("sha256:".len() + 12).collect()
}

#[derive(serde::Deserialize)]
struct ModuleList {
    #[serde(default)]
    items: Vec<ModuleInfo>,
}

/// Lists the module store as a table (empty when there are no modules).
pub async fn list(client: &kube::Client) -> anyhow::Result<String> {
    let request = http::Request::get(format!("{MODULE_API}/modules"))
        .body(Vec::new())
        .context("building the request")?;
    let body = client.request_text(request).await.map_err(api_error)?;
    let list: ModuleList = serde_json::from_str(&body)
        .with_context(|| format!("unexpected answer from the server: {body}"))?;
    if list.items.is_empty() {
        return Ok(String::new());
    }
    Ok(render_table(&list.items, jiff::Timestamp::now()))
}

/// `1.5MiB`-style sizes.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    format!("{value:.1}{unit}")
}

/// Columns padded like kubectl (three spaces between columns).
pub fn render_table(items: &[ModuleInfo], now: jiff::Timestamp) -> String {
    let mut rows: Vec<[String; 5]> = vec![[
        "NAME".into(),
        "TAG".into(),
        "DIGEST".into(),
        "SIZE".into(),
        "AGE".into(),
    ]];
    let mut sorted: Vec<&ModuleInfo> = items.iter().collect();
    sorted.sort_by(|a, b| (&a.name, &a.tag).cmp(&(&b.name, &b.tag)));
    for m in sorted {
        let age = m
            .created
            .parse::<jiff::Timestamp>()
            .ok()
            .and_then(|t| Duration::try_from(now.duration_since(t)).ok())
            .map(wasmkube_api::table::human_duration)
            .unwrap_or_else(|| "<unknown>".to_string());
        let digest = short_digest(&m.digest);
        rows.push([
            m.name.clone(),
            m.tag.clone(),
            digest,
            human_size(m.size),
            age,
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_need_name_and_tag() {
        assert_eq!(parse_reference("hello:v1").ok(), Some(("hello", "v1")));
        assert!(parse_reference("hello").is_err());
        assert!(parse_reference(":v1").is_err());
        assert!(parse_reference("hello:").is_err());
        assert!(parse_reference("localhost:5000/hello:v1").is_err());
    }

    fn modules_args(args: &[&str]) -> anyhow::Result<ModulesArgs> {
        use clap::Parser as _;
        match crate::Cli::try_parse_from(args)?.command {
            crate::Command::Modules(m) => Ok(m),
            other => bail!("parsed as {other:?}"),
        }
    }

    #[test]
    fn modules_lists_by_default_and_removes_tags() -> anyhow::Result<()> {
        let m = modules_args(&["wasmkube", "modules", "--kubeconfig", "/k"])?;
        assert!(m.command.is_none());
        assert_eq!(m.client.kubeconfig, Some(std::path::PathBuf::from("/k")));
        let m = modules_args(&["wasmkube", "modules", "ls"])?;
        assert!(matches!(m.command, Some(ModulesCommand::Ls { .. })));
        let m = modules_args(&[
            "wasmkube",
            "modules",
            "rm",
            "a:v1",
            "b:v2",
            "--context",
            "c",
        ])?;
        let Some(ModulesCommand::Rm { references, client }) = m.command else {
            bail!("not rm");
        };
        assert_eq!(references, ["a:v1", "b:v2"]);
        assert_eq!(client.context.as_deref(), Some("c"));
        assert!(modules_args(&["wasmkube", "modules", "rm"]).is_err());
        Ok(())
    }

    #[test]
    fn common_failures_say_what_to_do_next() {
        let refused = "ServiceError: client error (Connect): tcp connect error: Connection refused (os error 111)";
        assert!(advice(refused).is_some_and(|a| a.contains("`wasmkube up`")));
        assert!(advice("Unauthorized (HTTP 401)").is_some_and(|a| a.contains("expired")));
        assert!(
            advice("using kubeconfig: failed to load current context: nope")
                .is_some_and(|a| a.contains("get-contexts"))
        );
        assert!(advice("no kubeconfig found (looked in /h/.kube/config)").is_some());
        assert!(advice("invalid module reference \"x\": expected NAME:TAG").is_none());
        let advised = with_advice(anyhow::anyhow!("{refused}"));
        assert!(with_advice(advised).to_string().matches("hint: ").count() == 1);
    }

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(
            digest_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(2048), "2.0KiB");
        assert_eq!(human_size(3 * 1024 * 1024 + 512 * 1024), "3.5MiB");
    }

    #[test]
    fn table_has_header_and_aligned_rows() {
        let items = vec![ModuleInfo {
            name: "hello".into(),
            tag: "v1".into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
            size: 2048,
            created: "not a time".into(),
        }];
        let table = render_table(&items, jiff::Timestamp::UNIX_EPOCH);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("NAME    TAG   DIGEST"), "{}", lines[0]);
        assert!(
            lines[1].starts_with("hello   v1    sha256:abababababab   2.0KiB   <unknown>"),
            "{}",
            lines[1]
        );
    }
}
