//! Request attributes as Kubernetes' `RequestInfoFactory` derives them from
//! the method, path and query: whether the request names a resource, and
//! then its verb, API group, version, resource, subresource, namespace and
//! name. Everything else is a non-resource request whose verb is the
//! lower-cased method.
//!
//! The parse is purely syntactic (it does not consult the served resources),
//! like Kubernetes', so the authorizer sees the same attributes for a path
//! whether or not anything serves it.

use axum::http::{Method, Uri};

/// The verbs of resource requests that only read.
pub const READ_VERBS: &[&str] = &["get", "list", "watch"];

/// What a request asks to do, in authorization terms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    /// The raw request path (as matched by the router).
    pub path: String,
    /// Whether the path names a resource (`/api/v1/...`, `/apis/g/v/...`
    /// below the discovery documents).
    pub resource_request: bool,
    /// Resource requests: get, list, watch, create, update, patch, delete,
    /// deletecollection (or `proxy`, or "" for an unknown method).
    /// Non-resource requests: the lower-cased method (`get` for HEAD).
    pub verb: String,
    /// "" for the core group.
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    /// "" for cluster-scoped requests. For `namespaces/<n>` it is `<n>`,
    /// as in Kubernetes.
    pub namespace: String,
    /// "" for collections (or the name required by a
    /// `fieldSelector=metadata.name=<n>` list or watch, as in Kubernetes).
    pub name: String,
}

impl Attributes {
    /// Whether the verb only reads.
    pub fn is_read(&self) -> bool {
        READ_VERBS.contains(&self.verb.as_str())
    }

    /// `resource` or `resource/subresource`, as messages name it.
    pub fn resource_path(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// Parses the attributes of a request.
    pub fn from_request(method: &Method, uri: &Uri) -> Attributes {
        parse(method, uri.path(), uri.query())
    }
}

/// Kubernetes' special first segments after the version: they set the verb.
const SPECIAL_VERBS: &[&str] = &["proxy", "watch"];
/// Subresources of a namespace: `namespaces/<n>/status` is not a resource
/// `status` inside namespace `<n>`.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// The attributes of `method` on `path` with `query` (the raw query string).
pub fn parse(method: &Method, path: &str, query: Option<&str>) -> Attributes {
    let non_resource = || Attributes {
        path: path.to_string(),
        resource_request: false,
        verb: if method == Method::HEAD {
            "get".to_string()
        } else {
            method.as_str().to_ascii_lowercase()
        },
        ..Attributes::default()
    };
    let trimmed = path.trim_matches('/');
    let mut parts: Vec<&str> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    };
    if parts.len() < 3 {
        return non_resource();
    }
    let mut attrs = Attributes {
        path: path.to_string(),
        resource_request: true,
        ..Attributes::default()
    };
    match parts[0] {
        "api" => {
            parts.remove(0);
        }
        "apis" => {
            // `/apis/<group>/<version>` is the group's discovery document.
            if parts.len() < 4 {
                return non_resource();
            }
            attrs.api_group = parts[1].to_string();
            parts.drain(..2);
        }
        _ => return non_resource(),
    }
    attrs.api_version = parts[0].to_string();
    parts.remove(0);

    if SPECIAL_VERBS.contains(&parts[0]) {
        attrs.verb = parts[0].to_string();
        parts.remove(0);
    } else {
        attrs.verb = match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_string();
    }

    if parts.first() == Some(&"namespaces") && parts.len() > 1 {
        attrs.namespace = parts[1].to_string();
        if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
            parts.drain(..2);
        }
    }

    if attrs.verb != "proxy"
        && let Some(sub) = parts.get(2)
    {
        attrs.subresource = sub.to_string();
    }
    if let Some(name) = parts.get(1) {
        attrs.name = name.to_string();
    }
    if let Some(resource) = parts.first() {
        attrs.resource = resource.to_string();
    }

    let query = Query::parse(query);
    if attrs.verb == "get" && query.watch {
        // A watch, of a collection or (our registry serves it) of one
        // named object: never a plain read.
        attrs.verb = "watch".to_string();
    }
    if attrs.name.is_empty() {
        match attrs.verb.as_str() {
            "get" => attrs.verb = "list".to_string(),
            "delete" => attrs.verb = "deletecollection".to_string(),
            _ => {}
        }
        if matches!(attrs.verb.as_str(), "list" | "watch")
            && let Some(name) = query.name_selector
        {
            attrs.name = name;
        }
    }
    attrs
}

/// The query parameters that change the attributes.
#[derive(Debug, Default)]
struct Query {
    watch: bool,
    /// `fieldSelector` requires exactly this `metadata.name`.
    name_selector: Option<String>,
}

impl Query {
    fn parse(query: Option<&str>) -> Query {
        let mut q = Query::default();
        let Some(query) = query else {
            return q;
        };
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "watch" => q.watch = matches!(v.as_ref(), "true" | "1" | "True" | "TRUE"),
                "fieldSelector" => q.name_selector = exact_name(&v),
                _ => {}
            }
        }
        q
    }
}

/// The name a field selector requires exactly (`metadata.name=x` or `==x`,
/// possibly among other terms), when it is a valid path segment.
fn exact_name(selector: &str) -> Option<String> {
    selector.split(',').find_map(|term| {
        let term = term.trim();
        if term.contains("!=") {
            return None;
        }
        let (field, value) = term.split_once("==").or_else(|| term.split_once('='))?;
        (field.trim() == "metadata.name")
            .then(|| value.trim().to_string())
            .filter(|v| !v.is_empty() && v != "." && v != ".." && !v.contains(['/', '%']))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(method: Method, path_and_query: &str) -> Attributes {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        parse(&method, path, query)
    }

    /// (verb, group, resource, subresource, namespace, name)
    type Summary<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str);

    fn summary(a: &Attributes) -> Summary<'_> {
        (
            &a.verb,
            &a.api_group,
            &a.resource,
            &a.subresource,
            &a.namespace,
            &a.name,
        )
    }

    #[test]
    fn verbs_follow_method_name_and_query() {
        let cases: &[(Method, &str, Summary)] = &[
            (
                Method::GET,
                "/api/v1/namespaces/ns/pods",
                ("list", "", "pods", "", "ns", ""),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/ns/pods?watch=true&resourceVersion=5",
                ("watch", "", "pods", "", "ns", ""),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/ns/pods?watch=1",
                ("watch", "", "pods", "", "ns", ""),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/ns/pods?watch=false",
                ("list", "", "pods", "", "ns", ""),
            ),
            (
                Method::GET,
                "/api/v1/watch/namespaces/ns/pods",
                ("watch", "", "pods", "", "ns", ""),
            ),
            (
                Method::GET,
                "/api/v1/watch/pods",
                ("watch", "", "pods", "", "", ""),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/ns/pods/p",
                ("get", "", "pods", "", "ns", "p"),
            ),
            (
                Method::HEAD,
                "/api/v1/namespaces/ns/pods/p",
                ("get", "", "pods", "", "ns", "p"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/ns/secrets/s?watch=true",
                ("watch", "", "secrets", "", "ns", "s"),
            ),
            (
                Method::GET,
                "/api/v1/watch/namespaces/ns/secrets/s",
                ("watch", "", "secrets", "", "ns", "s"),
            ),
            (
                Method::POST,
                "/api/v1/namespaces/ns/pods",
                ("create", "", "pods", "", "ns", ""),
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/ns/pods/p",
                ("update", "", "pods", "", "ns", "p"),
            ),
            (
                Method::PATCH,
                "/api/v1/namespaces/ns/pods/p/status",
                ("patch", "", "pods", "status", "ns", "p"),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/ns/pods/p",
                ("delete", "", "pods", "", "ns", "p"),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/ns/pods",
                ("deletecollection", "", "pods", "", "ns", ""),
            ),
            (
                Method::POST,
                "/api/v1/namespaces/ns/pods/p/binding",
                ("create", "", "pods", "binding", "ns", "p"),
            ),
            (
                Method::OPTIONS,
                "/api/v1/namespaces/ns/pods/p",
                ("", "", "pods", "", "ns", "p"),
            ),
        ];
        for (method, path, want) in cases {
            let a = at(method.clone(), path);
            assert!(a.resource_request, "{method} {path}");
            assert_eq!(summary(&a), *want, "{method} {path}");
        }
    }

    #[test]
    fn groups_scopes_and_namespaces() {
        let a = at(
            Method::GET,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1",
        );
        assert_eq!(
            summary(&a),
            (
                "get",
                "coordination.k8s.io",
                "leases",
                "",
                "kube-node-lease",
                "n1"
            )
        );
        assert_eq!(a.api_version, "v1");
        let a = at(Method::PATCH, "/api/v1/nodes/n1/status");
        assert_eq!(summary(&a), ("patch", "", "nodes", "status", "", "n1"));
        let a = at(
            Method::GET,
            "/apis/discovery.k8s.io/v1/endpointslices?watch=true",
        );
        assert_eq!(
            summary(&a),
            ("watch", "discovery.k8s.io", "endpointslices", "", "", "")
        );
        // A namespace is its own namespace; its subresources stay its own.
        let a = at(Method::GET, "/api/v1/namespaces/team");
        assert_eq!(summary(&a), ("get", "", "namespaces", "", "team", "team"));
        let a = at(Method::PUT, "/api/v1/namespaces/team/finalize");
        assert_eq!(
            summary(&a),
            ("update", "", "namespaces", "finalize", "team", "team")
        );
        let a = at(Method::GET, "/api/v1/namespaces");
        assert_eq!(summary(&a), ("list", "", "namespaces", "", "", ""));
        // One trailing slash changes nothing.
        let a = at(Method::GET, "/api/v1/namespaces/ns/secrets/");
        assert_eq!(summary(&a), ("list", "", "secrets", "", "ns", ""));
    }

    #[test]
    fn field_selector_on_name_names_the_object() {
        let a = at(
            Method::GET,
            "/api/v1/namespaces/ns/secrets?fieldSelector=metadata.name%3Ds1&watch=true",
        );
        assert_eq!(summary(&a), ("watch", "", "secrets", "", "ns", "s1"));
        let a = at(
            Method::GET,
            "/api/v1/namespaces/ns/secrets?fieldSelector=type%3Dx,metadata.name%3D%3Ds1",
        );
        assert_eq!(summary(&a), ("list", "", "secrets", "", "ns", "s1"));
        for q in [
            "metadata.name%21%3Ds1",
            "metadata.name%3D",
            "spec.nodeName%3Dn1",
        ] {
            let a = at(Method::GET, &format!("/api/v1/pods?fieldSelector={q}"));
            assert_eq!(a.name, "", "{q}");
        }
        // A named GET ignores the selector.
        let a = at(
            Method::GET,
            "/api/v1/namespaces/ns/secrets/a?fieldSelector=metadata.name%3Db",
        );
        assert_eq!(a.name, "a");
    }

    #[test]
    fn non_resource_paths() {
        for (method, path, verb) in [
            (Method::GET, "/api", "get"),
            (Method::GET, "/api/v1", "get"),
            (Method::GET, "/apis", "get"),
            (Method::GET, "/apis/apps", "get"),
            (Method::GET, "/apis/apps/v1", "get"),
            (Method::GET, "/apis/apps/v1/", "get"),
            (Method::GET, "/openapi/v3/api/v1", "get"),
            (Method::GET, "/healthz", "get"),
            (Method::HEAD, "/version", "get"),
            (Method::POST, "/wasmkube/v1/join", "post"),
            (Method::PUT, "/wasmkube/v1/modules/m/v1", "put"),
            (Method::GET, "/", "get"),
            (Method::GET, "", "get"),
        ] {
            let a = at(method.clone(), path);
            assert!(!a.resource_request, "{method} {path}");
            assert_eq!(a.verb, verb, "{method} {path}");
            assert_eq!(a.path, path);
            assert_eq!(a.resource, "");
        }
    }

    #[test]
    fn odd_paths_never_panic() {
        for path in [
            "/api/v1/watch",
            "/api/v1/proxy",
            "/api/v1/namespaces",
            "/api/v1/namespaces/",
            "/api/v1//namespaces//pods",
            "/apis/x/v1/watch/namespaces",
            "/api/v1/proxy/namespaces/ns/pods/p/a/b",
            "//////",
        ] {
            let a = at(Method::GET, path);
            assert_eq!(a.path, path);
        }
        let a = at(Method::GET, "/api/v1/proxy/namespaces/ns/pods/p/a/b");
        assert_eq!(summary(&a), ("proxy", "", "pods", "", "ns", "p"));
    }
}
