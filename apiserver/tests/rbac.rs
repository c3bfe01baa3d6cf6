//! RBAC against the real server: the default policy, what users bound to
//! `view`, `edit` and `admin` may do, access reviews, impersonation,
//! ServiceAccount subjects, escalation prevention, and the components'
//! roles. Users come from a token file written before the server starts.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasmkube_apiserver::{Config, Running, start};

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";
const AUTHZ: &str = "/apis/authorization.k8s.io/v1";

/// Users of the token file: name → token.
const USERS: &[(&str, &str)] = &[
    ("viewer", "viewer-token-0123456789"),
    ("editor", "editor-token-0123456789"),
    ("nsadmin", "nsadmin-token-0123456789"),
    ("nobody", "nobody-token-0123456789"),
    ("escalator", "escalator-token-0123456789"),
];

struct Server {
    dir: tempfile::TempDir,
    running: Running,
    shutdown: CancellationToken,
    client: reqwest::Client,
}

fn write_tokens(dir: &Path) -> Result<()> {
    let mut text = String::new();
    for (user, token) in USERS {
        text.push_str(&format!("{token},{user},{user}-uid,\"team-members\"\n"));
    }
    std::fs::write(dir.join("tokens.csv"), text)?;
    Ok(())
}

async fn start_in(dir: &Path) -> Result<(Running, CancellationToken, reqwest::Client)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let shutdown = CancellationToken::new();
    let config = Config {
        data_dir: dir.to_path_buf(),
        port: 0,
        shutdown_grace: Duration::from_secs(2),
        ..Config::default()
    };
    let running = start(config, shutdown.clone()).await?;
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(running.ca_pem.as_bytes())?)
        .timeout(Duration::from_secs(30))
        .build()?;
    Ok((running, shutdown, client))
}

async fn server() -> Result<Server> {
    let dir = tempfile::tempdir()?;
    write_tokens(dir.path())?;
    let (running, shutdown, client) = start_in(dir.path()).await?;
    Ok(Server {
        dir,
        running,
        shutdown,
        client,
    })
}

impl Server {
    fn token(&self, user: &str) -> Result<String> {
        if user == "admin" {
            return Ok(self.running.admin_token.clone());
        }
        self.running
            .tokens
            .get(user)
            .cloned()
            .with_context(|| format!("no token for {user}"))
    }

    /// `method path` as `user` (`None`: no credentials) with a JSON body.
    async fn call(
        &self,
        user: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Value)> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.running.url));
        if let Some(u) = user {
            req = req.bearer_auth(self.token(u)?);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await?;
        let code = resp.status().as_u16();
        let text = resp.text().await?;
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((code, v))
    }

    async fn code(
        &self,
        user: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<u16> {
        Ok(self.call(Some(user), method, path, body, &[]).await?.0)
    }

    async fn admin_create(&self, path: &str, body: Value) -> Result<Value> {
        let (code, v) = self
            .call(Some("admin"), Method::POST, path, Some(&body), &[])
            .await?;
        ensure!(code == 201, "creating at {path}: {code} {v}");
        Ok(v)
    }

    async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        self.running.done.await?;
        Ok(())
    }
}

fn role_binding(name: &str, ns: &str, kind: &str, role: &str, subjects: Value) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": subjects,
    })
}

fn user_subject(name: &str) -> Value {
    json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name}])
}

fn config_map(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

fn secret(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"k": "v"}})
}

/// Namespaces `team` and `other`, each with a Secret; viewer, editor and
/// nsadmin bound (RoleBindings) to view, edit and admin in `team`.
async fn team(s: &Server) -> Result<()> {
    for ns in ["team", "other"] {
        s.admin_create(
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
        s.admin_create(&format!("/api/v1/namespaces/{ns}/secrets"), secret("s"))
            .await?;
    }
    for (user, role) in [("viewer", "view"), ("editor", "edit"), ("nsadmin", "admin")] {
        s.admin_create(
            &format!("{RBAC}/namespaces/team/rolebindings"),
            role_binding(user, "team", "ClusterRole", role, user_subject(user)),
        )
        .await?;
    }
    Ok(())
}

fn message(v: &Value) -> &str {
    v["message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn default_policy_is_created_and_reconciled_on_start() -> Result<()> {
    let s = server().await?;
    for name in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:discovery",
        "system:basic-user",
        "system:public-info-viewer",
        "system:kube-scheduler",
        "system:kube-controller-manager",
    ] {
        let (code, role) = s
            .call(
                Some("admin"),
                Method::GET,
                &format!("{RBAC}/clusterroles/{name}"),
                None,
                &[],
            )
            .await?;
        ensure!(code == 200, "{name}: {code} {role}");
        ensure!(
            role["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"]
                == "true",
            "{role}"
        );
    }
    let (code, bindings) = s
        .call(
            Some("admin"),
            Method::GET,
            &format!("{RBAC}/clusterrolebindings"),
            None,
            &[],
        )
        .await?;
    ensure!(code == 200, "{bindings}");
    let names: Vec<&str> = bindings["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b["metadata"]["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    for want in ["system:discovery", "system:basic-user", "cluster-admin"] {
        ensure!(names.contains(&want), "{names:?}");
    }

    // Damage `view` (autoupdate on) and a copy of it with autoupdate off.
    let mut view = s
        .call(
            Some("admin"),
            Method::GET,
            &format!("{RBAC}/clusterroles/view"),
            None,
            &[],
        )
        .await?
        .1;
    view["rules"] = json!([]);
    let (code, v) = s
        .call(
            Some("admin"),
            Method::PUT,
            &format!("{RBAC}/clusterroles/view"),
            Some(&view),
            &[],
        )
        .await?;
    ensure!(code == 200, "{v}");
    let mut edit = s
        .call(
            Some("admin"),
            Method::GET,
            &format!("{RBAC}/clusterroles/edit"),
            None,
            &[],
        )
        .await?
        .1;
    edit["rules"] = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]);
    edit["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] = json!("false");
    let (code, v) = s
        .call(
            Some("admin"),
            Method::PUT,
            &format!("{RBAC}/clusterroles/edit"),
            Some(&edit),
            &[],
        )
        .await?;
    ensure!(code == 200, "{v}");
    // Deleted objects come back too.
    let (code, v) = s
        .call(
            Some("admin"),
            Method::DELETE,
            &format!("{RBAC}/clusterrolebindings/system:basic-user"),
            None,
            &[],
        )
        .await?;
    ensure!(code == 200, "{v}");

    let dir = s.dir;
    s.shutdown.cancel();
    s.running.done.await?;
    let (running, shutdown, client) = start_in(dir.path()).await?;
    let s = Server {
        dir,
        running,
        shutdown,
        client,
    };
    let view = s
        .call(
            Some("admin"),
            Method::GET,
            &format!("{RBAC}/clusterroles/view"),
            None,
            &[],
        )
        .await?
        .1;
    ensure!(
        view["rules"].as_array().is_some_and(|r| r.len() > 3),
        "view was not reconciled: {view}"
    );
    let edit = s
        .call(
            Some("admin"),
            Method::GET,
            &format!("{RBAC}/clusterroles/edit"),
            None,
            &[],
        )
        .await?
        .1;
    ensure!(
        edit["rules"].as_array().map(Vec::len) == Some(1),
        "edit with autoupdate=false was overwritten: {edit}"
    );
    let (code, _) = s
        .call(
            Some("admin"),
            Method::GET,
            &format!("{RBAC}/clusterrolebindings/system:basic-user"),
            None,
            &[],
        )
        .await?;
    ensure!(code == 200, "system:basic-user binding not recreated");
    s.stop().await
}

#[tokio::test]
async fn roles_decide_what_users_may_do() -> Result<()> {
    let s = server().await?;
    team(&s).await?;
    let get = Method::GET;
    let post = Method::POST;

    // Unauthenticated and wrong credentials: 401 before any authorization.
    let (code, v) = s
        .call(None, get.clone(), "/api/v1/namespaces/team/pods", None, &[])
        .await?;
    ensure!(code == 401, "anonymous: {code} {v}");
    let r = s
        .client
        .get(format!("{}/api/v1/namespaces/team/pods", s.running.url))
        .bearer_auth("not-a-token")
        .send()
        .await?;
    ensure!(r.status() == 401, "wrong token: {}", r.status());

    // Every authenticated user may discover and ask about itself, nothing more.
    ensure!(s.code("nobody", get.clone(), "/api", None).await? == 200);
    ensure!(s.code("nobody", get.clone(), "/apis/apps/v1", None).await? == 200);
    ensure!(s.code("nobody", get.clone(), "/version", None).await? == 200);
    let (code, v) = s
        .call(
            Some("nobody"),
            get.clone(),
            "/api/v1/namespaces/team/pods",
            None,
            &[],
        )
        .await?;
    ensure!(code == 403, "{v}");
    ensure!(
        message(&v)
            == "pods is forbidden: User \"nobody\" cannot list resource \"pods\" in API group \"\" in the namespace \"team\"",
        "{v}"
    );
    ensure!(
        v["reason"] == "Forbidden" && v["details"]["kind"] == "pods",
        "{v}"
    );
    ensure!(s.code("nobody", get.clone(), "/metrics", None).await? == 403);

    // view: reads, never writes, never Secrets.
    ensure!(
        s.code("viewer", get.clone(), "/api/v1/namespaces/team/pods", None)
            .await?
            == 200
    );
    ensure!(
        s.code(
            "viewer",
            get.clone(),
            "/api/v1/namespaces/team/configmaps",
            None
        )
        .await?
            == 200
    );
    let (code, v) = s
        .call(
            Some("viewer"),
            post.clone(),
            "/api/v1/namespaces/team/configmaps",
            Some(&config_map("c")),
            &[],
        )
        .await?;
    ensure!(code == 403, "view wrote: {code} {v}");
    ensure!(
        message(&v).contains("User \"viewer\" cannot create resource \"configmaps\""),
        "{v}"
    );
    ensure!(
        s.code(
            "viewer",
            get.clone(),
            "/api/v1/namespaces/team/secrets/s",
            None
        )
        .await?
            == 403
    );
    ensure!(
        s.code("viewer", get.clone(), "/api/v1/namespaces/other/pods", None)
            .await?
            == 403
    );
    ensure!(s.code("viewer", get.clone(), "/api/v1/pods", None).await? == 403);

    // edit: writes in its namespace, reads Secrets there, not elsewhere.
    ensure!(
        s.code(
            "editor",
            post.clone(),
            "/api/v1/namespaces/team/configmaps",
            Some(&config_map("c"))
        )
        .await?
            == 201
    );
    ensure!(
        s.code(
            "editor",
            get.clone(),
            "/api/v1/namespaces/team/secrets/s",
            None
        )
        .await?
            == 200
    );
    let (code, v) = s
        .call(
            Some("editor"),
            get.clone(),
            "/api/v1/namespaces/other/secrets/s",
            None,
            &[],
        )
        .await?;
    ensure!(
        code == 403,
        "edit read another namespace's secret: {code} {v}"
    );
    ensure!(
        message(&v)
            == "secrets \"s\" is forbidden: User \"editor\" cannot get resource \"secrets\" in API group \"\" in the namespace \"other\"",
        "{v}"
    );
    ensure!(
        s.code(
            "editor",
            get.clone(),
            &format!("{RBAC}/namespaces/team/rolebindings"),
            None
        )
        .await?
            == 403
    );
    ensure!(
        s.code("editor", Method::DELETE, "/api/v1/namespaces/team", None)
            .await?
            == 403
    );

    // admin: roles and bindings of its namespace.
    ensure!(
        s.code(
            "nsadmin",
            get.clone(),
            &format!("{RBAC}/namespaces/team/rolebindings"),
            None
        )
        .await?
            == 200
    );
    ensure!(
        s.code("nsadmin", get, &format!("{RBAC}/clusterroles"), None)
            .await?
            == 403
    );
    s.stop().await
}

#[tokio::test]
async fn access_reviews_answer_for_the_caller_and_others() -> Result<()> {
    let s = server().await?;
    team(&s).await?;
    let ssar = |verb: &str, resource: &str, ns: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
               "spec": {"resourceAttributes": {"verb": verb, "resource": resource, "namespace": ns}}})
    };
    let path = format!("{AUTHZ}/selfsubjectaccessreviews");
    for (user, verb, resource, ns, want) in [
        ("viewer", "get", "pods", "team", true),
        ("viewer", "create", "pods", "team", false),
        ("viewer", "get", "secrets", "team", false),
        ("editor", "get", "secrets", "team", true),
        ("editor", "get", "secrets", "other", false),
        ("nobody", "list", "pods", "team", false),
        ("admin", "delete", "nodes", "", true),
    ] {
        let (code, v) = s
            .call(
                Some(user),
                Method::POST,
                &path,
                Some(&ssar(verb, resource, ns)),
                &[],
            )
            .await?;
        ensure!(code == 201, "{user}: {code} {v}");
        ensure!(v["kind"] == "SelfSubjectAccessReview", "{v}");
        ensure!(
            v["status"]["allowed"] == want,
            "{user} {verb} {resource} in {ns:?}: {v}"
        );
    }
    let non_resource = json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
        "spec": {"nonResourceAttributes": {"verb": "get", "path": "/apis"}}});
    let (_, v) = s
        .call(
            Some("nobody"),
            Method::POST,
            &path,
            Some(&non_resource),
            &[],
        )
        .await?;
    ensure!(v["status"]["allowed"] == true, "{v}");

    // The rules list (`kubectl auth can-i --list`).
    let rules = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
                       "spec": {"namespace": "team"}});
    let (code, v) = s
        .call(
            Some("viewer"),
            Method::POST,
            &format!("{AUTHZ}/selfsubjectrulesreviews"),
            Some(&rules),
            &[],
        )
        .await?;
    ensure!(code == 201, "{v}");
    let resource_rules = v["status"]["resourceRules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(
        resource_rules.iter().any(|r| {
            r["resources"]
                .as_array()
                .is_some_and(|x| x.contains(&json!("pods")))
                && r["verbs"]
                    .as_array()
                    .is_some_and(|x| x.contains(&json!("list")))
        }),
        "{v}"
    );
    ensure!(
        !resource_rules.iter().any(|r| {
            r["resources"]
                .as_array()
                .is_some_and(|x| x.contains(&json!("secrets")))
        }),
        "view lists secrets: {v}"
    );
    ensure!(v["status"]["incomplete"] == false, "{v}");
    ensure!(
        v["status"]["nonResourceRules"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "{v}"
    );

    // Asking about someone else needs the right to.
    let sar = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "editor", "groups": ["system:authenticated"],
                 "resourceAttributes": {"verb": "create", "resource": "secrets", "namespace": "team"}}});
    let sar_path = format!("{AUTHZ}/subjectaccessreviews");
    let (code, v) = s
        .call(Some("admin"), Method::POST, &sar_path, Some(&sar), &[])
        .await?;
    ensure!(code == 201 && v["status"]["allowed"] == true, "{code} {v}");
    ensure!(
        v["status"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("RoleBinding \"team/editor\" of ClusterRole \"edit\"")),
        "{v}"
    );
    let (code, _) = s
        .call(Some("viewer"), Method::POST, &sar_path, Some(&sar), &[])
        .await?;
    ensure!(code == 403);
    let local = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
        "spec": {"user": "viewer",
                 "resourceAttributes": {"verb": "list", "resource": "pods", "namespace": "team"}}});
    let (code, v) = s
        .call(
            Some("nsadmin"),
            Method::POST,
            &format!("{AUTHZ}/namespaces/team/localsubjectaccessreviews"),
            Some(&local),
            &[],
        )
        .await?;
    ensure!(code == 201 && v["status"]["allowed"] == true, "{code} {v}");
    s.stop().await
}

#[tokio::test]
async fn impersonation_and_service_account_subjects() -> Result<()> {
    let s = server().await?;
    team(&s).await?;
    // A ServiceAccount bound by its subject kind, and every ServiceAccount
    // of `other` bound by group.
    s.admin_create(
        &format!("{RBAC}/namespaces/team/rolebindings"),
        role_binding(
            "robot",
            "team",
            "ClusterRole",
            "edit",
            json!([{"kind": "ServiceAccount", "name": "robot"}]),
        ),
    )
    .await?;
    s.admin_create(
        &format!("{RBAC}/namespaces/team/rolebindings"),
        role_binding(
            "others",
            "team",
            "ClusterRole",
            "view",
            json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:serviceaccounts:other"}]),
        ),
    )
    .await?;
    let cm = "/api/v1/namespaces/team/configmaps";
    let robot = [("Impersonate-User", "system:serviceaccount:team:robot")];
    let (code, v) = s
        .call(
            Some("admin"),
            Method::POST,
            cm,
            Some(&config_map("by-robot")),
            &robot,
        )
        .await?;
    ensure!(code == 201, "robot: {code} {v}");
    let stranger = [("Impersonate-User", "system:serviceaccount:team:stranger")];
    let (code, v) = s
        .call(Some("admin"), Method::GET, cm, None, &stranger)
        .await?;
    ensure!(code == 403, "stranger: {code} {v}");
    ensure!(
        message(&v).contains("system:serviceaccount:team:stranger"),
        "{v}"
    );
    let other_sa = [("Impersonate-User", "system:serviceaccount:other:x")];
    ensure!(
        s.call(Some("admin"), Method::GET, cm, None, &other_sa)
            .await?
            .0
            == 200
    );
    ensure!(
        s.call(
            Some("admin"),
            Method::POST,
            cm,
            Some(&config_map("no")),
            &other_sa
        )
        .await?
        .0 == 403
    );

    // Impersonating a user: the request runs as that user.
    let as_viewer = [("Impersonate-User", "viewer")];
    ensure!(
        s.call(Some("admin"), Method::GET, cm, None, &as_viewer)
            .await?
            .0
            == 200
    );
    let (code, v) = s
        .call(
            Some("admin"),
            Method::POST,
            cm,
            Some(&config_map("no")),
            &as_viewer,
        )
        .await?;
    ensure!(
        code == 403 && message(&v).contains("User \"viewer\""),
        "{code} {v}"
    );
    let (code, v) = s
        .call(
            Some("admin"),
            Method::POST,
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            Some(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})),
            &[("Impersonate-User", "viewer"), ("Impersonate-Group", "g1")],
        )
        .await?;
    ensure!(code == 201, "{v}");
    ensure!(v["status"]["userInfo"]["username"] == "viewer", "{v}");
    ensure!(
        v["status"]["userInfo"]["groups"] == json!(["g1", "system:authenticated"]),
        "{v}"
    );
    // Without the impersonate verb (edit has it only for ServiceAccounts).
    let (code, v) = s
        .call(
            Some("editor"),
            Method::GET,
            cm,
            None,
            &[("Impersonate-User", "nsadmin")],
        )
        .await?;
    ensure!(code == 403, "{code} {v}");
    ensure!(
        message(&v).contains("User \"editor\" cannot impersonate resource \"users\""),
        "{v}"
    );
    let (code, v) = s
        .call(
            Some("editor"),
            Method::GET,
            cm,
            None,
            &[("Impersonate-User", "system:serviceaccount:team:robot")],
        )
        .await?;
    ensure!(
        code == 200,
        "edit may act as the namespace's ServiceAccounts: {code} {v}"
    );
    let (code, _) = s
        .call(
            Some("admin"),
            Method::GET,
            cm,
            None,
            &[("Impersonate-Group", "system:masters")],
        )
        .await?;
    ensure!(code == 400);
    s.stop().await
}

#[tokio::test]
async fn granting_more_than_one_holds_is_refused() -> Result<()> {
    let s = server().await?;
    team(&s).await?;
    let roles = format!("{RBAC}/namespaces/team/roles");
    let bindings = format!("{RBAC}/namespaces/team/rolebindings");
    let role = |name: &str, rules: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": name, "namespace": "team"}, "rules": rules})
    };
    // Within admin's own permissions: fine.
    let (code, v) = s
        .call(
            Some("nsadmin"),
            Method::POST,
            &roles,
            Some(&role(
                "secret-reader",
                json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]),
            )),
            &[],
        )
        .await?;
    ensure!(code == 201, "{code} {v}");
    // More than admin holds: refused, naming what is missing.
    let (code, v) = s
        .call(
            Some("nsadmin"),
            Method::POST,
            &roles,
            Some(&role(
                "node-reader",
                json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]),
            )),
            &[],
        )
        .await?;
    ensure!(code == 403, "{code} {v}");
    ensure!(
        message(&v).contains("is attempting to grant RBAC permissions not currently held")
            && message(&v).contains("nodes"),
        "{v}"
    );
    // Widening a role by patch is checked too.
    let (code, v) = s
        .call(
            Some("nsadmin"),
            Method::PATCH,
            &format!("{roles}/secret-reader"),
            Some(&json!({"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]})),
            &[("Content-Type", "application/merge-patch+json")],
        )
        .await?;
    ensure!(code == 403, "patch escalated: {code} {v}");
    // Binding a role one holds: fine; cluster-admin: refused.
    ensure!(
        s.code(
            "nsadmin",
            Method::POST,
            &bindings,
            Some(&role_binding(
                "nobody-edit",
                "team",
                "ClusterRole",
                "edit",
                user_subject("nobody")
            ))
        )
        .await?
            == 201
    );
    ensure!(
        s.code(
            "nobody",
            Method::GET,
            "/api/v1/namespaces/team/secrets/s",
            None
        )
        .await?
            == 200
    );
    let (code, v) = s
        .call(
            Some("nsadmin"),
            Method::POST,
            &bindings,
            Some(&role_binding(
                "nobody-root",
                "team",
                "ClusterRole",
                "cluster-admin",
                user_subject("nobody"),
            )),
            &[],
        )
        .await?;
    ensure!(code == 403, "{code} {v}");
    // The escalate and bind verbs lift the check, as in Kubernetes.
    s.admin_create(
        &format!("{RBAC}/clusterroles"),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": "role-manager"},
               "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"],
                          "verbs": ["create", "get", "escalate"]},
                         {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
                          "verbs": ["bind"], "resourceNames": ["view"]}]}),
    )
    .await?;
    s.admin_create(
        &bindings,
        role_binding(
            "escalator",
            "team",
            "ClusterRole",
            "role-manager",
            user_subject("escalator"),
        ),
    )
    .await?;
    ensure!(
        s.code(
            "escalator",
            Method::POST,
            &roles,
            Some(&role(
                "node-reader",
                json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}])
            ))
        )
        .await?
            == 201
    );
    ensure!(
        s.code(
            "escalator",
            Method::POST,
            &bindings,
            Some(&role_binding(
                "v",
                "team",
                "ClusterRole",
                "view",
                user_subject("nobody")
            ))
        )
        .await?
            == 201
    );
    ensure!(
        s.code(
            "escalator",
            Method::POST,
            &bindings,
            Some(&role_binding(
                "e",
                "team",
                "ClusterRole",
                "edit",
                user_subject("nobody")
            ))
        )
        .await?
            == 403
    );
    s.stop().await
}

#[tokio::test]
async fn components_have_what_they_need_and_no_more() -> Result<()> {
    let s = server().await?;
    for user in ["system:kube-scheduler", "system:kube-controller-manager"] {
        for path in [
            "/api/v1/pods",
            "/api/v1/nodes",
            "/apis/apps/v1/deployments",
            "/apis",
        ] {
            ensure!(
                s.code(user, Method::GET, path, None).await? == 200,
                "{user} {path}"
            );
        }
        let (code, v) = s
            .call(
                Some(user),
                Method::POST,
                &format!("{RBAC}/clusterrolebindings"),
                Some(&json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                    "metadata": {"name": "mine"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                    "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}]})),
                &[],
            )
            .await?;
        ensure!(code == 403, "{user}: {code} {v}");
    }
    ensure!(
        s.code(
            "system:kube-controller-manager",
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some(&config_map("cm"))
        )
        .await?
            == 201
    );
    ensure!(
        s.code(
            "system:kube-scheduler",
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some(&config_map("sched"))
        )
        .await?
            == 403
    );
    s.stop().await
}
