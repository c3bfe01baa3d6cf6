//! The strategies of core/v1 Services and Endpoints and discovery.k8s.io/v1
//! EndpointSlices: defaults, validation, what an update may change, and the
//! service address ranges (ClusterIPs from [`SERVICE_CIDR`], node ports
//! from [`NODE_PORTS`]) the API server allocates from.
//!
//! Allocation itself needs the store, so it is the API server's; this
//! module only says which values a Service needs and whether a value is in
//! range.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use serde_json::{Map, Value};

use super::{
    array_of, default_enum, default_key, duplicate, not_supported, object_entry, port_name_errors,
    str_of,
};
use crate::names::{self, invalid};
use crate::status::FieldCause;

/// The service ClusterIP range (`--service-cluster-ip-range`), as the
/// network address and prefix length.
pub const SERVICE_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 96, 0, 0), 12);
/// The node port range (`--service-node-port-range`).
pub const NODE_PORTS: RangeInclusive<i64> = 30000..=32767;
/// The CIDR as users see it in messages.
pub const SERVICE_CIDR_TEXT: &str = "10.96.0.0/12";

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const SESSION_AFFINITIES: &[&str] = &["ClientIP", "None"];
const TRAFFIC_POLICIES: &[&str] = &["Cluster", "Local"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const ADDRESS_TYPES: &[&str] = &["IPv4", "IPv6", "FQDN"];
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";

/// The usable addresses of [`SERVICE_CIDR`] as integers: the network and
/// broadcast addresses are never handed out.
pub fn cluster_ip_range() -> RangeInclusive<u32> {
    let (net, bits) = SERVICE_CIDR;
    let base = u32::from(net);
    let size = 1u32 << (32 - u32::from(bits));
    (base + 1)..=(base + size - 2)
}

/// Whether `ip` is an address the allocator may hand out.
pub fn in_cluster_ip_range(ip: Ipv4Addr) -> bool {
    cluster_ip_range().contains(&u32::from(ip))
}

/// `spec.type`, defaulted.
pub fn service_type(svc: &Value) -> &str {
    svc.pointer("/spec/type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .unwrap_or("ClusterIP")
}

/// `spec.clusterIP` when it is set to an address (not empty, not `None`).
pub fn cluster_ip(svc: &Value) -> Option<&str> {
    svc.pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && *s != "None")
}

/// Whether the Service is headless (`clusterIP: None`).
pub fn is_headless(svc: &Value) -> bool {
    svc.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None")
}

/// Whether the Service gets a ClusterIP: every type but ExternalName,
/// unless headless.
pub fn wants_cluster_ip(svc: &Value) -> bool {
    service_type(svc) != "ExternalName" && !is_headless(svc)
}

/// Whether the Service's ports get node ports.
pub fn wants_node_ports(svc: &Value) -> bool {
    matches!(service_type(svc), "NodePort" | "LoadBalancer")
}

/// The `nodePort` of `port`, when set (0 counts as unset, as in Go).
pub fn node_port_of(port: &Value) -> Option<i64> {
    port.get("nodePort")
        .and_then(Value::as_i64)
        .filter(|n| *n != 0)
}

/// core/v1 `SetDefaults_Service`.
pub(super) fn default_service(obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else {
        return;
    };
    let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    default_enum(spec, "type", "ClusterIP");
    default_enum(spec, "sessionAffinity", "None");
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        let has_timeout = spec
            .get("sessionAffinityConfig")
            .and_then(|c| c.pointer("/clientIP/timeoutSeconds"))
            .is_some_and(|v| !v.is_null());
        if !has_timeout
            && let Some(cfg) = object_entry(spec, "sessionAffinityConfig")
            && let Some(client) = object_entry(cfg, "clientIP")
        {
            client.insert("timeoutSeconds".into(), Value::from(10800));
        }
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default_enum(p, "protocol", "TCP");
            let unset = match p.get("targetPort") {
                None | Some(Value::Null) => true,
                Some(Value::Number(n)) => n.as_i64() == Some(0),
                Some(Value::String(s)) => s.is_empty(),
                Some(_) => false,
            };
            if unset && let Some(port) = p.get("port").filter(|v| v.is_i64()).cloned() {
                p.insert("targetPort".into(), port);
            }
        }
    }
    if matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
        default_enum(spec, "externalTrafficPolicy", "Cluster");
    }
    if matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        default_enum(spec, "internalTrafficPolicy", "Cluster");
    }
    if ty == "LoadBalancer" {
        default_key(spec, "allocateLoadBalancerNodePorts", Value::from(true));
    }
    if let Some(status) = object_entry(o, "status") {
        default_key(status, "loadBalancer", Value::Object(Map::new()));
    }
}

/// `ports[].protocol` of Endpoints subsets and EndpointSlices default to TCP.
pub(super) fn default_endpoints(obj: &mut Value) {
    if let Some(subsets) = obj.get_mut("subsets").and_then(Value::as_array_mut) {
        for s in subsets {
            default_port_protocols(s);
        }
    }
}

pub(super) fn default_endpoint_slice(obj: &mut Value) {
    default_port_protocols(obj);
}

fn default_port_protocols(obj: &mut Value) {
    if let Some(ports) = obj.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default_enum(p, "protocol", "TCP");
        }
    }
}

fn dns1035_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.last().is_some_and(|c| *c != b'-');
    if !ok {
        errs.push(format!(
            "{DNS1035_LABEL_ERR} (e.g. 'my-name',  or 'abc-123', regex used for validation is '{DNS1035_LABEL_FMT}')"
        ));
    }
    errs
}

fn port_range_cause(field: String, n: i64) -> Option<FieldCause> {
    (!(1..=65535).contains(&n)).then(|| {
        invalid(
            field,
            &Value::from(n),
            "must be between 1 and 65535, inclusive",
        )
    })
}

/// core/v1 `ValidateService`, the parts that concern a single-stack IPv4
/// cluster without load balancers of its own.
pub(super) fn validate_service(svc: &Value, causes: &mut Vec<FieldCause>) {
    if let Some(name) = svc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        for msg in dns1035_label_errors(name) {
            causes.push(invalid("metadata.name", &Value::from(name), &msg));
        }
    }
    let Some(spec) = svc.get("spec").filter(|s| s.is_object()) else {
        causes.push(FieldCause::required("spec"));
        return;
    };
    let ty = service_type(svc);
    if !SERVICE_TYPES.contains(&ty) {
        causes.push(not_supported("spec.type", &Value::from(ty), SERVICE_TYPES));
    }
    if let Some(a) = spec.get("sessionAffinity").filter(|v| !v.is_null())
        && !a.as_str().is_some_and(|s| SESSION_AFFINITIES.contains(&s))
    {
        causes.push(not_supported("spec.sessionAffinity", a, SESSION_AFFINITIES));
    }
    for key in ["externalTrafficPolicy", "internalTrafficPolicy"] {
        if let Some(p) = spec.get(key).filter(|v| !v.is_null())
            && !p.as_str().is_some_and(|s| TRAFFIC_POLICIES.contains(&s))
        {
            causes.push(not_supported(format!("spec.{key}"), p, TRAFFIC_POLICIES));
        }
    }
    let ports = array_of(spec, "ports");
    if ty == "ExternalName" {
        match str_of(spec, "externalName") {
            None | Some("") => causes.push(FieldCause::required("spec.externalName")),
            Some(n) => {
                for msg in names::dns1123_subdomain_errors(n.trim_end_matches('.')) {
                    causes.push(invalid("spec.externalName", &Value::from(n), &msg));
                }
            }
        }
        if let Some(ip) = str_of(spec, "clusterIP").filter(|s| !s.is_empty()) {
            causes.push(FieldCause::forbidden(
                "spec.clusterIP",
                format!(
                    "Forbidden: may not be set for ExternalName services (was {})",
                    Value::from(ip)
                ),
            ));
        }
    } else if ports.is_empty() && !is_headless(svc) {
        causes.push(FieldCause::required("spec.ports"));
    }
    validate_cluster_ip(spec, ty, causes);
    let mut names_seen = BTreeSet::new();
    let mut pairs_seen = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let base = format!("spec.ports[{i}]");
        match str_of(p, "name").filter(|n| !n.is_empty()) {
            None if ports.len() > 1 => causes.push(FieldCause::required(format!("{base}.name"))),
            None => {}
            Some(n) => {
                for msg in names::dns1123_label_errors(n) {
                    causes.push(invalid(format!("{base}.name"), &Value::from(n), &msg));
                }
                if !names_seen.insert(n.to_string()) {
                    causes.push(duplicate(format!("{base}.name"), &Value::from(n)));
                }
            }
        }
        let port = p.get("port").and_then(Value::as_i64);
        match port {
            None => causes.push(FieldCause::required(format!("{base}.port"))),
            Some(n) => causes.extend(port_range_cause(format!("{base}.port"), n)),
        }
        let proto = p.get("protocol").filter(|v| !v.is_null());
        if let Some(proto) = proto
            && !proto.as_str().is_some_and(|s| PROTOCOLS.contains(&s))
        {
            causes.push(not_supported(format!("{base}.protocol"), proto, PROTOCOLS));
        }
        if let Some(n) = port {
            let proto = proto.and_then(Value::as_str).unwrap_or("TCP").to_string();
            if !pairs_seen.insert((n, proto)) {
                causes.push(duplicate(base.clone(), p));
            }
        }
        match p.get("targetPort") {
            Some(Value::Number(n)) => match n.as_i64() {
                Some(n) => causes.extend(port_range_cause(format!("{base}.targetPort"), n)),
                None => causes.push(invalid(
                    format!("{base}.targetPort"),
                    &Value::Number(n.clone()),
                    "must be between 1 and 65535, inclusive",
                )),
            },
            Some(Value::String(s)) => {
                for msg in port_name_errors(s) {
                    causes.push(invalid(
                        format!("{base}.targetPort"),
                        &Value::from(s.as_str()),
                        &msg,
                    ));
                }
            }
            _ => {}
        }
        if node_port_of(p).is_some() && !wants_node_ports(svc) {
            causes.push(FieldCause::forbidden(
                format!("{base}.nodePort"),
                format!("Forbidden: may not be used when `type` is '{ty}'"),
            ));
        }
        if let Some(np) = node_port_of(p) {
            causes.extend(port_range_cause(format!("{base}.nodePort"), np));
        }
    }
    if let Some(sel) = spec.get("selector").and_then(Value::as_object) {
        for (k, v) in sel {
            for msg in names::qualified_name_errors(k) {
                causes.push(invalid("spec.selector", &Value::from(k.as_str()), &msg));
            }
            match v.as_str() {
                Some(v) => {
                    for msg in names::label_value_errors(v) {
                        causes.push(invalid("spec.selector", &Value::from(v), &msg));
                    }
                }
                None => causes.push(invalid("spec.selector", v, "must be a string")),
            }
        }
    }
}

fn validate_cluster_ip(spec: &Value, ty: &str, causes: &mut Vec<FieldCause>) {
    let ip = str_of(spec, "clusterIP").unwrap_or("");
    let ips: Vec<&str> = array_of(spec, "clusterIPs")
        .iter()
        .map(|v| v.as_str().unwrap_or(""))
        .collect();
    if !ip.is_empty() && ip != "None" && ip.parse::<Ipv4Addr>().is_err() {
        causes.push(invalid(
            "spec.clusterIPs[0]",
            &Value::from(ip),
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
    if let Some(first) = ips.first()
        && !ip.is_empty()
        && *first != ip
    {
        causes.push(invalid(
            "spec.clusterIPs[0]",
            &Value::from(*first),
            "must match `spec.clusterIP`",
        ));
    }
    if ips.len() > 1 {
        causes.push(invalid(
            "spec.clusterIPs",
            &Value::from(ips.join(",")),
            "may specify no more than one IP for each IP family (this cluster is IPv4 only)",
        ));
    }
    if ip == "None" && matches!(ty, "NodePort" | "LoadBalancer") {
        causes.push(invalid(
            "spec.clusterIPs[0]",
            &Value::from("None"),
            &format!("may not be set to 'None' for {ty} services"),
        ));
    }
    for (i, fam) in array_of(spec, "ipFamilies").iter().enumerate() {
        if fam.as_str() != Some("IPv4") {
            causes.push(not_supported(
                format!("spec.ipFamilies[{i}]"),
                fam,
                &["IPv4"],
            ));
        }
    }
}

/// What a Service update may not change: an assigned ClusterIP (Kubernetes
/// lets it go only when the type becomes ExternalName).
pub(super) fn validate_service_update(old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
    let old_ip = old
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("");
    let new_ip = new
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("");
    let to_external = service_type(new) == "ExternalName" && new_ip.is_empty();
    if !old_ip.is_empty() && old_ip != new_ip && !to_external {
        causes.push(invalid(
            "spec.clusterIPs[0]",
            &Value::from(new_ip),
            "may not change once set",
        ));
    }
}

/// What a Service update keeps of the stored object when the writer left it
/// out (Kubernetes' `patchAllocatedValues`): the allocated ClusterIP, its
/// families and the node ports of ports that are still there, so a
/// `kubectl replace` of a manifest without them does not reallocate.
pub(super) fn carry_allocated_values(old: &Value, new: &mut Value) {
    let Some(old_spec) = old.get("spec").and_then(Value::as_object) else {
        return;
    };
    let keep_ip = wants_cluster_ip(new) || is_headless(new);
    let needs_ports = wants_node_ports(new) && wants_node_ports(old);
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if keep_ip {
        let new_ip = spec.get("clusterIP").and_then(Value::as_str).unwrap_or("");
        let old_ip = old_spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("");
        if new_ip.is_empty() && !old_ip.is_empty() {
            spec.insert("clusterIP".into(), Value::from(old_ip));
        }
        let ips_empty = spec
            .get("clusterIPs")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        let same_ip = spec.get("clusterIP") == old_spec.get("clusterIP");
        if ips_empty && same_ip {
            for key in ["clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                if let Some(v) = old_spec.get(key) {
                    spec.entry(key.to_string()).or_insert_with(|| v.clone());
                }
            }
        }
    }
    if needs_ports {
        let old_ports = old_spec
            .get("ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut() {
                if node_port_of(p).is_some() {
                    continue;
                }
                let proto = |v: &Value| str_of(v, "protocol").unwrap_or("TCP").to_string();
                let found = old_ports
                    .iter()
                    .find(|o| o.get("port") == p.get("port") && proto(o) == proto(p));
                if let (Some(np), Some(o)) = (found.and_then(node_port_of), p.as_object_mut()) {
                    o.insert("nodePort".into(), Value::from(np));
                }
            }
        }
    }
}

fn validate_ports_list(ports: &[Value], base: &str, causes: &mut Vec<FieldCause>) {
    let mut seen = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let field = format!("{base}[{i}]");
        if let Some(n) = p.get("port").and_then(Value::as_i64) {
            causes.extend(port_range_cause(format!("{field}.port"), n));
        }
        if let Some(proto) = p.get("protocol").filter(|v| !v.is_null())
            && !proto.as_str().is_some_and(|s| PROTOCOLS.contains(&s))
        {
            causes.push(not_supported(format!("{field}.protocol"), proto, PROTOCOLS));
        }
        if let Some(n) = str_of(p, "name").filter(|n| !n.is_empty()) {
            for msg in names::dns1123_label_errors(n) {
                causes.push(invalid(format!("{field}.name"), &Value::from(n), &msg));
            }
            if !seen.insert(n.to_string()) {
                causes.push(duplicate(format!("{field}.name"), &Value::from(n)));
            }
        }
    }
}

/// core/v1 Endpoints: addresses must be IPs, ports in range.
pub(super) fn validate_endpoints(ep: &Value, causes: &mut Vec<FieldCause>) {
    for (i, s) in array_of(ep, "subsets").iter().enumerate() {
        for list in ["addresses", "notReadyAddresses"] {
            for (j, a) in array_of(s, list).iter().enumerate() {
                let field = format!("subsets[{i}].{list}[{j}].ip");
                match str_of(a, "ip") {
                    None | Some("") => causes.push(FieldCause::required(field)),
                    Some(ip) if ip.parse::<std::net::IpAddr>().is_err() => causes.push(invalid(
                        field,
                        &Value::from(ip),
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    )),
                    Some(_) => {}
                }
            }
        }
        validate_ports_list(array_of(s, "ports"), &format!("subsets[{i}].ports"), causes);
    }
}

/// discovery/v1 EndpointSlice: an address type, 1–100 addresses per
/// endpoint of that type, ports in range.
pub(super) fn validate_endpoint_slice(slice: &Value, causes: &mut Vec<FieldCause>) {
    let address_type = match slice.get("addressType") {
        None | Some(Value::Null) => {
            causes.push(FieldCause::required("addressType"));
            ""
        }
        Some(v) => match v.as_str().filter(|s| ADDRESS_TYPES.contains(s)) {
            Some(s) => s,
            None => {
                causes.push(not_supported("addressType", v, ADDRESS_TYPES));
                ""
            }
        },
    };
    for (i, e) in array_of(slice, "endpoints").iter().enumerate() {
        let addrs = array_of(e, "addresses");
        let field = format!("endpoints[{i}].addresses");
        if addrs.is_empty() {
            causes.push(FieldCause::required(field.clone()));
        } else if addrs.len() > 100 {
            causes.push(FieldCause::new(
                "FieldValueTooMany",
                field.clone(),
                format!("Too many: {}: must have at most 100 items", addrs.len()),
            ));
        }
        for (j, a) in addrs.iter().enumerate() {
            let text = a.as_str().unwrap_or("");
            let ok = match address_type {
                "IPv4" => text.parse::<Ipv4Addr>().is_ok(),
                "IPv6" => text.parse::<std::net::Ipv6Addr>().is_ok(),
                "FQDN" => names::dns1123_subdomain_errors(text).is_empty(),
                _ => true,
            };
            if !ok {
                causes.push(invalid(
                    format!("{field}[{j}]"),
                    a,
                    &format!("must be a valid {address_type} address"),
                ));
            }
        }
    }
    validate_ports_list(array_of(slice, "ports"), "ports", causes);
}

/// An EndpointSlice's address type is fixed at creation.
pub(super) fn validate_endpoint_slice_update(
    old: &Value,
    new: &Value,
    causes: &mut Vec<FieldCause>,
) {
    if old.get("addressType") != new.get("addressType") {
        causes.push(invalid(
            "addressType",
            new.get("addressType").unwrap_or(&Value::Null),
            "field is immutable",
        ));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{defaults, prepare_update, validate, validate_update};
    use super::*;

    fn svc(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    fn defaulted(spec: Value) -> Value {
        let mut s = svc(spec);
        defaults("Service", &mut s);
        s
    }

    fn fields(causes: &[FieldCause]) -> Vec<&str> {
        causes.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn service_defaults_match_kubernetes() {
        let s = defaulted(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["sessionAffinity"], "None");
        assert_eq!(s["spec"]["internalTrafficPolicy"], "Cluster");
        assert!(s["spec"].get("externalTrafficPolicy").is_none());
        assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["status"], json!({"loadBalancer": {}}));
        let n = defaulted(
            json!({"type": "NodePort", "ports": [{"port": 80, "targetPort": "http", "protocol": "UDP"}]}),
        );
        assert_eq!(n["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(n["spec"]["ports"][0]["targetPort"], "http");
        assert_eq!(n["spec"]["ports"][0]["protocol"], "UDP");
        let c = defaulted(
            json!({"sessionAffinity": "ClientIP", "ports": [{"port": 80, "targetPort": 0}]}),
        );
        assert_eq!(
            c["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            10800
        );
        assert_eq!(c["spec"]["ports"][0]["targetPort"], 80);
    }

    #[test]
    fn a_plain_service_is_valid_and_selector_is_optional() {
        let s = defaulted(json!({"ports": [{"port": 80}]}));
        assert_eq!(validate("Service", &s), vec![]);
        let h = defaulted(json!({"clusterIP": "None", "selector": {"app": "db"}}));
        assert_eq!(validate("Service", &h), vec![]);
    }

    #[test]
    fn service_ports_are_checked_like_kubernetes() {
        let s = defaulted(json!({"ports": [
            {"port": 80},
            {"name": "b", "port": 0},
            {"name": "b", "port": 70000, "targetPort": 99999},
            {"name": "Bad_Name", "port": 81, "protocol": "ICMP", "targetPort": "not_a_name"}
        ]}));
        let causes = validate("Service", &s);
        let f = fields(&causes);
        assert!(f.contains(&"spec.ports[0].name"), "{causes:?}");
        assert!(f.contains(&"spec.ports[1].port"));
        assert!(f.contains(&"spec.ports[2].name"));
        assert!(f.contains(&"spec.ports[2].port"));
        assert!(f.contains(&"spec.ports[2].targetPort"));
        assert!(f.contains(&"spec.ports[3].name"));
        assert!(f.contains(&"spec.ports[3].protocol"));
        assert!(f.contains(&"spec.ports[3].targetPort"));
        let dup = causes
            .iter()
            .find(|c| c.field == "spec.ports[2].name")
            .expect("duplicate name");
        assert_eq!(dup.message, "Duplicate value: \"b\"");
        let range = causes
            .iter()
            .find(|c| c.field == "spec.ports[1].port")
            .expect("port range");
        assert_eq!(
            range.message,
            "Invalid value: 0: must be between 1 and 65535, inclusive"
        );
    }

    #[test]
    fn ports_are_required_unless_headless() {
        let causes = validate("Service", &defaulted(json!({})));
        assert_eq!(fields(&causes), vec!["spec.ports"]);
    }

    #[test]
    fn types_cluster_ips_and_node_ports_are_checked() {
        let bad_type = defaulted(json!({"type": "Magic", "ports": [{"port": 80}]}));
        assert_eq!(fields(&validate("Service", &bad_type)), vec!["spec.type"]);
        let np_on_cluster_ip = defaulted(json!({"ports": [{"port": 80, "nodePort": 30080}]}));
        let causes = validate("Service", &np_on_cluster_ip);
        assert_eq!(causes.len(), 1);
        assert_eq!(
            causes[0].message,
            "Forbidden: may not be used when `type` is 'ClusterIP'"
        );
        let headless_np =
            defaulted(json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}));
        assert_eq!(
            fields(&validate("Service", &headless_np)),
            vec!["spec.clusterIPs[0]"]
        );
        let bad_ip = defaulted(json!({"clusterIP": "10.96.0.300", "ports": [{"port": 80}]}));
        assert_eq!(
            fields(&validate("Service", &bad_ip)),
            vec!["spec.clusterIPs[0]"]
        );
        let ext = defaulted(json!({"type": "ExternalName"}));
        assert_eq!(
            fields(&validate("Service", &ext)),
            vec!["spec.externalName"]
        );
        let bad_name = {
            let mut s = defaulted(json!({"ports": [{"port": 80}]}));
            s["metadata"]["name"] = json!("1web");
            s
        };
        assert_eq!(
            fields(&validate("Service", &bad_name)),
            vec!["metadata.name"]
        );
    }

    #[test]
    fn cluster_ip_is_immutable_and_carried_over() {
        let old = defaulted(
            json!({"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "ports": [{"port": 80, "nodePort": 30080}]}),
        );
        // A replace without the allocated values keeps them.
        let mut bare = defaulted(
            json!({"type": "NodePort", "ports": [{"port": 80}, {"name": "x", "port": 81}]}),
        );
        bare["spec"]["ports"][0]["name"] = json!("a");
        let kept = prepare_update("Service", &old, &bare);
        assert_eq!(kept["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(kept["spec"]["clusterIPs"], json!(["10.96.0.10"]));
        assert_eq!(kept["spec"]["ports"][0]["nodePort"], 30080);
        assert!(kept["spec"]["ports"][1].get("nodePort").is_none());
        assert_eq!(validate_update("Service", &old, &kept), vec![]);
        // Changing it is refused.
        let mut moved = old.clone();
        moved["spec"]["clusterIP"] = json!("10.96.0.11");
        moved["spec"]["clusterIPs"] = json!(["10.96.0.11"]);
        let causes = validate_update("Service", &old, &moved);
        assert_eq!(fields(&causes), vec!["spec.clusterIPs[0]"]);
        assert_eq!(
            causes[0].message,
            "Invalid value: \"10.96.0.11\": may not change once set"
        );
        // ClusterIP services do not inherit node ports.
        let to_cluster_ip = prepare_update(
            "Service",
            &old,
            &defaulted(json!({"type": "ClusterIP", "ports": [{"port": 80}]})),
        );
        assert!(to_cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
    }

    #[test]
    fn ranges_and_wants() {
        let r = cluster_ip_range();
        assert_eq!(Ipv4Addr::from(*r.start()), Ipv4Addr::new(10, 96, 0, 1));
        assert_eq!(Ipv4Addr::from(*r.end()), Ipv4Addr::new(10, 111, 255, 254));
        assert!(in_cluster_ip_range(Ipv4Addr::new(10, 100, 1, 2)));
        assert!(!in_cluster_ip_range(Ipv4Addr::new(10, 112, 0, 1)));
        assert!(!in_cluster_ip_range(Ipv4Addr::new(10, 96, 0, 0)));
        let headless = defaulted(json!({"clusterIP": "None"}));
        assert!(!wants_cluster_ip(&headless));
        assert!(wants_cluster_ip(&defaulted(json!({}))));
        assert!(wants_node_ports(&defaulted(json!({"type": "NodePort"}))));
        assert!(!wants_cluster_ip(&defaulted(
            json!({"type": "ExternalName"})
        )));
    }

    #[test]
    fn endpoint_slices_need_typed_addresses() {
        let mut ok = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abc", "namespace": "default"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}],
            "ports": [{"name": "", "port": 8080}]});
        defaults("EndpointSlice", &mut ok);
        assert_eq!(ok["ports"][0]["protocol"], "TCP");
        assert_eq!(validate("EndpointSlice", &ok), vec![]);
        let bad = json!({"metadata": {"name": "x"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["nope"]}, {"addresses": []}]});
        assert_eq!(
            fields(&validate("EndpointSlice", &bad)),
            vec!["endpoints[0].addresses[0]", "endpoints[1].addresses"]
        );
        let untyped = json!({"metadata": {"name": "x"}});
        assert_eq!(
            fields(&validate("EndpointSlice", &untyped)),
            vec!["addressType"]
        );
        let mut fqdn = ok.clone();
        fqdn["addressType"] = json!("FQDN");
        assert_eq!(
            fields(&validate_update("EndpointSlice", &ok, &fqdn)),
            vec!["addressType"]
        );
    }

    #[test]
    fn endpoints_addresses_must_be_ips() {
        let mut ep = json!({"metadata": {"name": "web"}, "subsets": [{
            "addresses": [{"ip": "10.0.0.1"}], "notReadyAddresses": [{"ip": "x"}],
            "ports": [{"port": 80}]}]});
        defaults("Endpoints", &mut ep);
        assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(
            fields(&validate("Endpoints", &ep)),
            vec!["subsets[0].notReadyAddresses[0].ip"]
        );
    }
}
