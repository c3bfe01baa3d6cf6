//! ServiceAccounts with real kubectl: every namespace gets a `default`
//! account, `kubectl create token` issues a token that authenticates as the
//! account, and the server refuses a token meant for another audience, a
//! tampered one, and any token of a deleted account.

use std::time::Duration;

use anyhow::{Result, ensure};
use wasmkube_e2e::{Cluster, stderr, wait_for};

const TIMEOUT: Duration = Duration::from_secs(60);

/// `kubectl --token <token> auth whoami`: the user name, or kubectl's error.
fn whoami(c: &Cluster, token: &str) -> Result<std::result::Result<String, String>> {
    let out = c.kubectl(&[
        "--token",
        token,
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ])?;
    Ok(if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(stderr(&out))
    })
}

fn expect_unauthorized(c: &Cluster, token: &str, what: &str) -> Result<()> {
    match whoami(c, token)? {
        Ok(user) => anyhow::bail!("{what}: accepted as {user}"),
        Err(e) => ensure!(e.contains("Unauthorized"), "{what}: {e}"),
    }
    Ok(())
}

#[test]
fn service_account_tokens_from_kubectl() -> Result<()> {
    let c = Cluster::start_without_node(&[])?;

    // The controller gives every namespace, old and new, a `default` account.
    c.kubectl_ok(&["create", "namespace", "team"])?;
    for ns in ["default", "team"] {
        wait_for(&format!("serviceaccount default in {ns}"), TIMEOUT, || {
            let out = c.kubectl(&["get", "serviceaccount", "default", "-n", ns])?;
            Ok(out.status.success().then_some(()))
        })?;
    }

    let created = c.kubectl_ok(&["create", "sa", "robot"])?;
    ensure!(
        created.contains("serviceaccount/robot created"),
        "{created}"
    );
    let token = c.kubectl_ok(&["create", "token", "robot", "--duration", "10m"])?;
    let token = token.trim().to_string();
    ensure!(token.split('.').count() == 3, "not a JWT: {token}");
    ensure!(
        whoami(&c, &token)? == Ok("system:serviceaccount:default:robot".to_string()),
        "{:?}",
        whoami(&c, &token)?
    );

    // Too short a lifetime is Kubernetes' validation error.
    let short = c.kubectl(&["create", "token", "robot", "--duration", "5m"])?;
    ensure!(!short.status.success());
    ensure!(
        stderr(&short).contains("may not specify a duration less than 10 minutes"),
        "{}",
        stderr(&short)
    );

    // Signed by this server but for another audience.
    let other = c.kubectl_ok(&[
        "create",
        "token",
        "robot",
        "--audience",
        "https://vault.example",
    ])?;
    expect_unauthorized(&c, other.trim(), "token for another audience")?;

    // One character in the middle of the signature changed.
    let at = token.len() - 10;
    let swapped = if token.as_bytes()[at] == b'A' {
        "B"
    } else {
        "A"
    };
    let mut tampered = token.clone();
    tampered.replace_range(at..at + 1, swapped);
    expect_unauthorized(&c, &tampered, "tampered token")?;

    // Deleting the account revokes its tokens at once.
    c.kubectl_ok(&["delete", "sa", "robot"])?;
    expect_unauthorized(&c, &token, "token of a deleted account")?;
    Ok(())
}
