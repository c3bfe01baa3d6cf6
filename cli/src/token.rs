//! `wasmkube token create|list|revoke`: the join tokens agents trade for
//! their node credential.
//!
//! Tokens are kubeadm's bootstrap tokens (Secrets `kube-system/
//! bootstrap-token-<id>`), written through the API with the admin
//! kubeconfig; the apiserver authenticates `Bearer <id>.<secret>` against
//! them. The printed join string also pins the cluster CA by its SHA-256, so
//! an agent can trust the server on first contact.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ListParams, PostParams};
use kube::config::KubeConfigOptions;
use sha2::{Digest as _, Sha256};
use wasmkube_api::join::{
    BOOTSTRAP_NAMESPACE, BOOTSTRAP_SECRET_TYPE, BootstrapToken, JoinToken, bootstrap_secret_name,
    is_token_id,
};

use crate::{ClientArgs, flags, kubeconfig};

pub const EXAMPLES: &str = "Examples:\n  \
    wasmkube token create\n  \
    wasmkube token create --ttl 2h --description \"edge boxes in hall 3\"\n  \
    wasmkube token create --ttl 0 --print-join-command\n  \
    wasmkube token list\n  \
    wasmkube token revoke abcdef\n\n\
    Then on the new node:\n  \
    wasmkube agent --server https://SERVER:6443 --token WK1…::abcdef.0123456789abcdef";

/// `wasmkube token …`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a join token and print its join string
    /// (`WK1<ca-hash>::<id>.<secret>`) for `wasmkube agent --token`.
    Create(CreateArgs),
    /// List the join tokens (their secrets are not shown).
    #[command(alias = "ls")]
    List(ListArgs),
    /// Delete a join token; agents that already joined keep their own
    /// credential.
    #[command(alias = "delete", alias = "rm")]
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// How long the token is valid (e.g. 24h, 30m, 1h30m); 0 never expires.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = flags::parse_duration)]
    ttl: Duration,

    /// A note shown by `wasmkube token list`.
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,

    /// Print the whole `wasmkube agent --server … --token …` command line
    /// instead of the join string alone.
    #[arg(long)]
    print_join_command: bool,

    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct RevokeArgs {
    /// The token's ID (the 6 characters before the dot), or the token itself.
    #[arg(value_name = "ID")]
    id: String,

    #[command(flatten)]
    client: ClientArgs,
}

/// The admin's connection: the client, the server URL and the CA pin.
struct Admin {
    client: kube::Client,
    server: String,
    ca_hash: Option<String>,
}

async fn connect(args: &ClientArgs) -> anyhow::Result<Admin> {
    let source = kubeconfig::from_process(args.kubeconfig.as_deref());
    let kc = kubeconfig::load(&source)?;
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &options)
        .await
        .context("using kubeconfig")?;
    // kube has already decoded certificate-authority(-data) to DER, the
    // bytes the pin is computed over.
    let ca_hash = config
        .root_cert
        .as_ref()
        .and_then(|certs| certs.first())
        .map(|der| hex::encode(Sha256::digest(der)));
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    let client = kube::Client::try_from(config).context("building the API client")?;
    Ok(Admin {
        client,
        server,
        ca_hash,
    })
}

/// Runs `wasmkube token …`; errors reaching the cluster say what to do next.
pub async fn run(args: TokenArgs) -> anyhow::Result<()> {
    tokens(args).await.map_err(crate::modules::with_advice)
}

async fn tokens(args: TokenArgs) -> anyhow::Result<()> {
    match args.command {
        TokenCommand::Create(c) => {
            let admin = connect(&c.client).await?;
            let line = create(&admin, &c).await?;
            println!("{line}");
        }
        TokenCommand::List(l) => {
            let admin = connect(&l.client).await?;
            let tokens = list(&admin.client).await?;
            print!("{}", format_table(&tokens, jiff::Timestamp::now()));
        }
        TokenCommand::Revoke(r) => {
            let admin = connect(&r.client).await?;
            let id = revoke(&admin.client, &r.id).await?;
            println!("token {id} revoked");
        }
    }
    Ok(())
}

/// The expiration a token created at `now` with `ttl` gets (none for 0).
fn expiration(now: jiff::Timestamp, ttl: Duration) -> anyhow::Result<Option<jiff::Timestamp>> {
    if ttl.is_zero() {
        return Ok(None);
    }
    let ttl = jiff::SignedDuration::try_from(ttl).context("--ttl is too long")?;
    // The Secret stores whole seconds; round up so a 1s TTL is not already over.
    let at = now
        .checked_add(ttl)
        .context("--ttl is too long")?
        .round(
            jiff::TimestampRound::new()
                .smallest(jiff::Unit::Second)
                .mode(jiff::RoundMode::Ceil),
        )
        .context("--ttl is too long")?;
    Ok(Some(at))
}

/// Maps an API failure of a token command to a message saying what to do.
fn api_error(e: kube::Error, what: &str) -> anyhow::Error {
    match e {
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => anyhow::anyhow!(
            "{what}: {} (HTTP {}); token commands need the admin kubeconfig the server wrote \
             (<data dir>/kubeconfig), pass it with --kubeconfig",
            status.message,
            status.code
        ),
        kube::Error::Api(status) => {
            anyhow::anyhow!("{what}: {} (HTTP {})", status.message, status.code)
        }
        other => anyhow::Error::new(other).context(format!(
            "{what} (is the server running and the kubeconfig right?)"
        )),
    }
}

async fn create(admin: &Admin, args: &CreateArgs) -> anyhow::Result<String> {
    let Some(ca_hash) = admin.ca_hash.clone() else {
        bail!(
            "the kubeconfig has no certificate-authority to pin in the token; use the admin \
             kubeconfig the server wrote (<data dir>/kubeconfig)"
        );
    };
    let expiration = expiration(jiff::Timestamp::now(), args.ttl)?;
    let secrets: Api<Secret> = Api::namespaced(admin.client.clone(), BOOTSTRAP_NAMESPACE);
    // A fresh id colliding with an existing token is unlikely (36^6) but
    // possible: the create then conflicts and another id is drawn.
    for _ in 0..5 {
        let generated = JoinToken::generate();
        let token = BootstrapToken {
            id: generated.id.clone(),
            secret: generated.secret.clone(),
            expiration,
            description: args.description.clone().filter(|d| !d.is_empty()),
            usages: vec!["authentication".to_string()],
            extra_groups: Vec::new(),
        };
        let secret: Secret =
            serde_json::from_value(token.to_secret()).context("building the token Secret")?;
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                let join = JoinToken {
                    ca_hash: Some(ca_hash),
                    ..generated
                };
                return Ok(if args.print_join_command {
                    format!("wasmkube agent --server {} --token {join}", admin.server)
                } else {
                    join.to_string()
                });
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(api_error(e, "creating the token")),
        }
    }
    bail!("could not find a free token id; try again")
}

/// Every well-formed bootstrap token, by id.
async fn list(client: &kube::Client) -> anyhow::Result<Vec<BootstrapToken>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), BOOTSTRAP_NAMESPACE);
    let listed = secrets
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error(e, "listing tokens"))?;
    let mut tokens = Vec::new();
    for secret in listed.items {
        if secret.type_.as_deref() != Some(BOOTSTRAP_SECRET_TYPE) {
            continue;
        }
        let name = secret.metadata.name.clone().unwrap_or_default();
        let value = serde_json::to_value(&secret).context("reading a token Secret")?;
        match BootstrapToken::from_secret(&value) {
            Ok(t) => tokens.push(t),
            // The apiserver ignores such a Secret too; say so rather than hide it.
            Err(e) => eprintln!("warning: skipping {BOOTSTRAP_NAMESPACE}/{name}: {e}"),
        }
    }
    tokens.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(tokens)
}

/// The token id in `input`: an id, `<id>.<secret>` or a join string.
fn token_id(input: &str) -> anyhow::Result<String> {
    let input = input.trim();
    if is_token_id(input) {
        return Ok(input.to_string());
    }
    match JoinToken::parse(input) {
        Ok(t) => Ok(t.id),
        Err(_) => bail!(
            "{input:?} is not a token ID (6 characters [a-z0-9], the part before the dot); \
             see `wasmkube token list`"
        ),
    }
}

async fn revoke(client: &kube::Client, input: &str) -> anyhow::Result<String> {
    let id = token_id(input)?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), BOOTSTRAP_NAMESPACE);
    match secrets
        .delete(&bootstrap_secret_name(&id), &Default::default())
        .await
    {
        Ok(_) => Ok(id),
        Err(kube::Error::Api(status)) if status.code == 404 => bail!(
            "there is no token with ID {id:?} (already revoked or expired and removed?); \
             see `wasmkube token list`"
        ),
        Err(e) => Err(api_error(e, &format!("revoking token {id}"))),
    }
}

/// `23h`, `59m`, `3d`: the remaining lifetime the way kubectl ages read.
fn short_duration(d: jiff::SignedDuration) -> String {
    let s = d.as_secs();
    match s {
        ..120 => format!("{s}s"),
        120..7_200 => format!("{}m", s / 60),
        7_200..172_800 => format!("{}h", s / 3_600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The `token list` table.
fn format_table(tokens: &[BootstrapToken], now: jiff::Timestamp) -> String {
    let header = ["ID", "TTL", "EXPIRES", "USAGES", "DESCRIPTION"].map(str::to_string);
    let mut rows = vec![header];
    for t in tokens {
        let (ttl, expires) = match t.expiration {
            None => ("<forever>".to_string(), "<never>".to_string()),
            Some(e) => {
                let left = e.duration_since(now);
                let ttl = if left.is_positive() {
                    short_duration(left)
                } else {
                    "<expired>".to_string()
                };
                (ttl, e.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            }
        };
        let usages = if t.usages.is_empty() {
            "<none>".to_string()
        } else {
            t.usages.join(",")
        };
        rows.push([
            t.id.clone(),
            ttl,
            expires,
            usages,
            t.description.clone().unwrap_or_default(),
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
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   "));
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

    fn at(s: &str) -> jiff::Timestamp {
        match s.parse() {
            Ok(t) => t,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn ttl_zero_never_expires_and_others_round_up_to_seconds() -> anyhow::Result<()> {
        let now = at("2026-11-25T20:00:00.250Z");
        assert_eq!(expiration(now, Duration::ZERO)?, None);
        assert_eq!(
            expiration(now, Duration::from_secs(24 * 3600))?,
            Some(at("2026-11-26T20:00:01Z"))
        );
        assert_eq!(
            expiration(at("2026-11-25T20:00:00Z"), Duration::from_secs(90))?,
            Some(at("2026-11-25T20:01:30Z"))
        );
        assert!(expiration(now, Duration::from_secs(u64::MAX / 2)).is_err());
        Ok(())
    }

    #[test]
    fn revoke_takes_an_id_a_token_or_a_join_string() -> anyhow::Result<()> {
        assert_eq!(token_id("abcdef")?, "abcdef");
        assert_eq!(token_id(" abcdef.0123456789abcdef ")?, "abcdef");
        let hash = "ab".repeat(32);
        assert_eq!(
            token_id(&format!("WK1{hash}::z9z9z9.0123456789abcdef"))?,
            "z9z9z9"
        );
        for bad in ["", "ABCDEF", "abcde", "abcdefg", "../etc"] {
            let err = token_id(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("token list"), "{bad:?}: {err}");
        }
        Ok(())
    }

    #[test]
    fn list_table_shows_ttl_expiry_usages_and_description() {
        let now = at("2026-11-25T20:00:00Z");
        let token = |id: &str, exp: Option<&str>, desc: Option<&str>| BootstrapToken {
            id: id.to_string(),
            secret: "0123456789abcdef".to_string(),
            expiration: exp.map(at),
            description: desc.map(str::to_string),
            usages: vec!["authentication".to_string()],
            extra_groups: Vec::new(),
        };
        let table = format_table(
            &[
                token("aaaaaa", Some("2026-11-26T19:00:00Z"), Some("edge boxes")),
                token("bbbbbb", None, None),
                token("cccccc", Some("2026-11-25T19:59:00Z"), None),
                token("dddddd", Some("2026-11-25T20:00:30Z"), None),
            ],
            now,
        );
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        let cols = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            cols(lines[0]),
            ["ID", "TTL", "EXPIRES", "USAGES", "DESCRIPTION"]
        );
        assert_eq!(
            cols(lines[1]),
            [
                "aaaaaa",
                "23h",
                "2026-11-26T19:00:00Z",
                "authentication",
                "edge",
                "boxes"
            ]
        );
        assert_eq!(
            cols(lines[2]),
            ["bbbbbb", "<forever>", "<never>", "authentication"]
        );
        assert_eq!(cols(lines[3])[1], "<expired>");
        assert_eq!(cols(lines[4])[1], "30s");
        assert!(!table.contains("0123456789abcdef"), "secrets stay hidden");
        // Columns line up: every DESCRIPTION starts where its header does.
        let desc_col = lines[0].find("DESCRIPTION");
        assert_eq!(lines[1].find("edge boxes"), desc_col);
    }

    #[derive(Debug, clap::Parser)]
    struct Cmd {
        #[command(subcommand)]
        command: TokenCommand,
    }

    fn parse(args: &[&str]) -> Result<TokenCommand, clap::Error> {
        use clap::Parser as _;
        let mut all = vec!["token"];
        all.extend(args);
        Cmd::try_parse_from(all).map(|c| c.command)
    }

    #[test]
    fn token_flags() -> anyhow::Result<()> {
        let TokenCommand::Create(c) = parse(&["create"])? else {
            anyhow::bail!("not create");
        };
        assert_eq!(c.ttl, Duration::from_secs(24 * 3600), "a day by default");
        assert_eq!(c.description, None);
        assert!(!c.print_join_command);
        let TokenCommand::Create(c) = parse(&[
            "create",
            "--ttl",
            "0",
            "--description",
            "hall 3",
            "--print-join-command",
            "--kubeconfig",
            "/k",
        ])?
        else {
            anyhow::bail!("not create");
        };
        assert_eq!(c.ttl, Duration::ZERO);
        assert_eq!(c.description.as_deref(), Some("hall 3"));
        assert!(c.print_join_command);
        assert_eq!(c.client.kubeconfig, Some("/k".into()));
        let TokenCommand::Create(c) = parse(&["create", "--ttl=1h30m"])? else {
            anyhow::bail!("not create");
        };
        assert_eq!(c.ttl, Duration::from_secs(5400));
        assert!(parse(&["create", "--ttl", "tomorrow"]).is_err());
        let TokenCommand::List(l) = parse(&["list", "--context", "admin"])? else {
            anyhow::bail!("not list");
        };
        assert_eq!(l.client.context.as_deref(), Some("admin"));
        assert!(matches!(parse(&["ls"])?, TokenCommand::List(_)));
        let TokenCommand::Revoke(r) = parse(&["revoke", "abcdef"])? else {
            anyhow::bail!("not revoke");
        };
        assert_eq!(r.id, "abcdef");
        assert!(matches!(
            parse(&["delete", "abcdef"])?,
            TokenCommand::Revoke(_)
        ));
        assert!(parse(&["revoke"]).is_err(), "revoke needs an ID");
        Ok(())
    }

    #[test]
    fn short_durations() {
        let s = jiff::SignedDuration::from_secs;
        assert_eq!(short_duration(s(5)), "5s");
        assert_eq!(short_duration(s(600)), "10m");
        assert_eq!(short_duration(s(23 * 3600 + 59 * 60)), "23h");
        assert_eq!(short_duration(s(10 * 86_400)), "10d");
    }
}
