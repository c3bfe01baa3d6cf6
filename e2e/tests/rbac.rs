//! RBAC with real kubectl against the real binary: users from the token
//! file bound to `view`, `edit` and `admin` in one namespace; `kubectl auth
//! can-i` (single questions, `--list`, `--as`), refused writes and reads
//! with Kubernetes' messages, escalation through `kubectl create
//! rolebinding`, and unauthenticated callers.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use wasmkube_e2e::{Cluster, stderr, stdout};

const USERS: &[(&str, &str)] = &[
    ("viewer", "e2e-viewer-token-0123456789abcdef"),
    ("editor", "e2e-editor-token-0123456789abcdef"),
    ("nsadmin", "e2e-nsadmin-token-0123456789abcdef"),
];

fn token(user: &str) -> Result<&'static str> {
    USERS
        .iter()
        .find(|(u, _)| *u == user)
        .map(|(_, t)| *t)
        .with_context(|| format!("no user {user}"))
}

/// A control plane whose token file also holds [`USERS`] (added to the
/// file the first start wrote, then the server restarted to read it),
/// with namespaces `team` and `other` and the users bound in `team`.
fn cluster() -> Result<Cluster> {
    let mut c = Cluster::start_without_node(&[])?;
    c.kill9()?;
    let path = c.data_dir().join("tokens.csv");
    let mut text = std::fs::read_to_string(&path)?;
    for (user, token) in USERS {
        text.push_str(&format!("{token},{user},{user}-uid\n"));
    }
    std::fs::write(&path, text)?;
    c.spawn()?;
    c.wait_ready()?;
    for ns in ["team", "other"] {
        c.kubectl_ok(&["create", "namespace", ns])?;
        c.kubectl_ok(&[
            "create",
            "secret",
            "generic",
            "s",
            "-n",
            ns,
            "--from-literal=k=v",
        ])?;
    }
    for (user, role) in [("viewer", "view"), ("editor", "edit"), ("nsadmin", "admin")] {
        c.kubectl_ok(&[
            "create",
            "rolebinding",
            user,
            "-n",
            "team",
            &format!("--clusterrole={role}"),
            &format!("--user={user}"),
        ])?;
    }
    Ok(c)
}

/// kubectl as `user` (its token instead of the admin's).
fn as_user(c: &Cluster, user: &str, args: &[&str]) -> Result<std::process::Output> {
    let flag = format!("--token={}", token(user)?);
    let mut all = vec![flag.as_str()];
    all.extend_from_slice(args);
    c.kubectl(&all)
}

/// `kubectl auth can-i --list -n team` rows as (resource, verbs).
fn can_i_list(c: &Cluster, user: &str) -> Result<Vec<(String, String)>> {
    let out = as_user(c, user, &["auth", "can-i", "--list", "-n", "team"])?;
    ensure!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let resource = l.split_whitespace().next()?.to_string();
            let verbs = l.rfind('[').map(|i| l[i..].to_string())?;
            Some((resource, verbs))
        })
        .collect())
}

fn has(rows: &[(String, String)], resource: &str, verb: &str) -> bool {
    rows.iter()
        .any(|(r, v)| r == resource && (v.contains(verb) || v.contains('*')))
}

#[test]
fn can_i_list_answers_for_the_default_roles() -> Result<()> {
    let c = cluster()?;
    let view = can_i_list(&c, "viewer")?;
    ensure!(has(&view, "pods", "list"), "{view:?}");
    ensure!(has(&view, "deployments.apps", "watch"), "{view:?}");
    ensure!(!has(&view, "pods", "create"), "{view:?}");
    ensure!(
        !view.iter().any(|(r, _)| r == "secrets"),
        "view lists secrets: {view:?}"
    );
    ensure!(
        has(
            &view,
            "selfsubjectaccessreviews.authorization.k8s.io",
            "create"
        ),
        "{view:?}"
    );

    let edit = can_i_list(&c, "editor")?;
    ensure!(has(&edit, "pods", "create"), "{edit:?}");
    ensure!(has(&edit, "secrets", "get"), "{edit:?}");
    ensure!(
        !has(&edit, "rolebindings.rbac.authorization.k8s.io", "create"),
        "{edit:?}"
    );

    let admin = can_i_list(&c, "nsadmin")?;
    ensure!(
        has(&admin, "rolebindings.rbac.authorization.k8s.io", "create"),
        "{admin:?}"
    );
    ensure!(has(&admin, "secrets", "delete"), "{admin:?}");
    Ok(())
}

#[test]
fn can_i_answers_yes_and_no_also_with_as() -> Result<()> {
    let c = cluster()?;
    for (user, args, want) in [
        ("viewer", &["create", "pods", "-n", "team"][..], "no"),
        ("viewer", &["list", "pods", "-n", "team"][..], "yes"),
        ("viewer", &["get", "secrets", "-n", "team"][..], "no"),
        ("editor", &["create", "pods", "-n", "team"][..], "yes"),
        ("editor", &["get", "secrets", "-n", "other"][..], "no"),
        ("nsadmin", &["create", "roles", "-n", "team"][..], "yes"),
        ("nsadmin", &["list", "nodes"][..], "no"),
    ] {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        let out = as_user(&c, user, &all)?;
        let answer = stdout(&out);
        ensure!(
            answer.trim() == want,
            "{user} can-i {args:?}: {answer}{}",
            stderr(&out)
        );
        ensure!(
            out.status.success() == (want == "yes"),
            "exit status of {user} {args:?}"
        );
    }
    // The admin asks on behalf of others with --as (impersonation).
    let no = c.kubectl(&[
        "auth", "can-i", "create", "pods", "-n", "team", "--as", "viewer",
    ])?;
    ensure!(stdout(&no).trim() == "no", "{}{}", stdout(&no), stderr(&no));
    let yes = c.kubectl_ok(&[
        "auth", "can-i", "create", "pods", "-n", "team", "--as", "editor",
    ])?;
    ensure!(yes.trim() == "yes", "{yes}");
    let who = c.kubectl_ok(&[
        "auth",
        "whoami",
        "--as",
        "viewer",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ])?;
    ensure!(who == "viewer", "{who}");
    // A user without the impersonate verb cannot.
    let out = as_user(
        &c,
        "viewer",
        &["get", "pods", "-n", "team", "--as", "editor"],
    )?;
    ensure!(!out.status.success());
    ensure!(
        stderr(&out).contains("User \"viewer\" cannot impersonate resource \"users\""),
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[test]
fn refused_requests_get_kubernetes_messages() -> Result<()> {
    let c = cluster()?;
    // A view user writing.
    let out = as_user(
        &c,
        "viewer",
        &[
            "create",
            "configmap",
            "c",
            "-n",
            "team",
            "--from-literal=a=b",
        ],
    )?;
    ensure!(!out.status.success());
    ensure!(
        stderr(&out).contains(
            "configmaps is forbidden: User \"viewer\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"team\""
        ),
        "{}",
        stderr(&out)
    );
    // An edit user: its namespace's Secrets yes, another namespace's no.
    let ok = as_user(
        &c,
        "editor",
        &["get", "secret", "s", "-n", "team", "-o", "name"],
    )?;
    ensure!(ok.status.success(), "{}", stderr(&ok));
    let out = as_user(&c, "editor", &["get", "secret", "s", "-n", "other"])?;
    ensure!(!out.status.success());
    ensure!(
        stderr(&out).contains(
            "secrets \"s\" is forbidden: User \"editor\" cannot get resource \"secrets\" in API group \"\" in the namespace \"other\""
        ),
        "{}",
        stderr(&out)
    );
    // An admin of the namespace cannot hand out more than it has.
    let out = as_user(
        &c,
        "nsadmin",
        &[
            "create",
            "rolebinding",
            "root",
            "-n",
            "team",
            "--clusterrole=cluster-admin",
            "--user=viewer",
        ],
    )?;
    ensure!(!out.status.success());
    ensure!(
        stderr(&out).contains("is attempting to grant RBAC permissions not currently held"),
        "{}",
        stderr(&out)
    );
    let ok = as_user(
        &c,
        "nsadmin",
        &[
            "create",
            "rolebinding",
            "more-view",
            "-n",
            "team",
            "--clusterrole=view",
            "--user=viewer",
        ],
    )?;
    ensure!(ok.status.success(), "{}", stderr(&ok));
    Ok(())
}

#[test]
fn unauthenticated_and_wrong_tokens_get_401() -> Result<()> {
    let c = cluster()?;
    let http = c.http()?;
    let r = http
        .get(format!("{}/api/v1/namespaces/team/pods", c.url()))
        .send()?;
    ensure!(r.status() == 401, "anonymous: {}", r.status());
    let r = http
        .get(format!("{}/api/v1/namespaces/team/pods", c.url()))
        .bearer_auth("wrong")
        .send()?;
    ensure!(r.status() == 401, "wrong token: {}", r.status());
    let out = c.kubectl(&["--token=wrong", "get", "pods"])?;
    ensure!(!out.status.success());
    ensure!(
        stderr(&out).contains("You must be logged in to the server"),
        "{}",
        stderr(&out)
    );
    // Health stays anonymous.
    let r = http
        .get(format!("{}/readyz", c.url()))
        .timeout(Duration::from_secs(10))
        .send()?;
    ensure!(r.status() == 200);
    Ok(())
}
