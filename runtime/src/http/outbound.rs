//! Which hosts a wasi:http component may call, and which of them are
//! Services of the cluster.
//!
//! Outgoing HTTP is denied unless the pod lists the host in
//! `wasmkube.io/allowed-outbound-hosts`: comma-separated `host[:port]`
//! entries, where a leading `*` label matches any one or more labels
//! (`*.example.com`) and `*` alone matches every host.

/// The parsed `wasmkube.io/allowed-outbound-hosts` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Lowercase; `*` or `*.suffix` for wildcards.
    host: String,
    port: Option<u16>,
}

impl AllowedHosts {
    /// Parses the annotation's value; entries that cannot be read are
    /// skipped (they allow nothing).
    pub fn parse(list: &str) -> AllowedHosts {
        let entries = list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .filter_map(|e| {
                // A URL-like entry (`http://host:port/`) is read as its authority.
                let e = e.split_once("://").map_or(e, |(_, rest)| rest);
                let e = e.split('/').next().unwrap_or(e);
                let (host, port) = match e.rsplit_once(':') {
                    Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                        (h, Some(p.parse::<u16>().ok()?))
                    }
                    _ => (e, None),
                };
                let host = host.trim_start_matches('[').trim_end_matches(']');
                (!host.is_empty()).then(|| Entry {
                    host: host.to_ascii_lowercase(),
                    port,
                })
            })
            .collect();
        AllowedHosts { entries }
    }

    /// Whether nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a request to `host` on `port` is allowed.
    pub fn permits(&self, host: &str, port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        self.entries.iter().any(|e| {
            e.port.is_none_or(|p| p == port)
                && if e.host == "*" {
                    true
                } else if let Some(suffix) = e.host.strip_prefix("*.") {
                    host.len() > suffix.len() + 1
                        && host.ends_with(suffix)
                        && host[..host.len() - suffix.len()].ends_with('.')
                } else {
                    e.host == host
                }
        })
    }
}

/// `(service, namespace)` when `host` names a Service: `<svc>.<ns>`,
/// `<svc>.<ns>.svc` or `<svc>.<ns>.svc.cluster.local`.
pub fn service_of(host: &str) -> Option<(String, String)> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let base = host
        .strip_suffix(".svc.cluster.local")
        .or_else(|| host.strip_suffix(".svc"))
        .unwrap_or(&host);
    let (service, namespace) = base.split_once('.')?;
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
            // An IP address is not a service name.
            && !s.bytes().all(|b| b.is_ascii_digit())
    };
    (label(service) && label(namespace)).then(|| (service.to_string(), namespace.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_exactly_by_wildcard_and_port() {
        let allowed = AllowedHosts::parse(
            " api.example.com , *.internal.test:8080, backend.default,http://x.io:81/, bad:port",
        );
        assert!(allowed.permits("api.example.com", 443));
        assert!(allowed.permits("API.example.com.", 80));
        assert!(!allowed.permits("example.com", 443));
        assert!(!allowed.permits("evil-api.example.com", 443));
        assert!(allowed.permits("a.internal.test", 8080));
        assert!(allowed.permits("a.b.internal.test", 8080));
        assert!(!allowed.permits("a.internal.test", 80));
        assert!(!allowed.permits("internal.test", 8080));
        assert!(!allowed.permits("xinternal.test", 8080));
        assert!(allowed.permits("backend.default", 80));
        assert!(allowed.permits("x.io", 81));
        assert!(!allowed.permits("x.io", 80));
        assert!(!allowed.permits("bad", 80));
        assert!(AllowedHosts::parse("").is_empty());
        assert!(!AllowedHosts::parse("").permits("anything", 80));
        assert!(AllowedHosts::parse("*").permits("anything.at.all", 1));
    }

    #[test]
    fn service_hosts_are_recognised() {
        let s = |svc: &str, ns: &str| Some((svc.to_string(), ns.to_string()));
        assert_eq!(service_of("backend.default"), s("backend", "default"));
        assert_eq!(service_of("backend.default.svc"), s("backend", "default"));
        assert_eq!(
            service_of("backend.prod.svc.cluster.local"),
            s("backend", "prod")
        );
        assert_eq!(service_of("localhost"), None);
        assert_eq!(service_of("api.example.com"), None);
        assert_eq!(service_of("127.0.0.1"), None);
    }
}
