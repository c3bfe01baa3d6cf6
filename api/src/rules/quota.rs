//! `ResourceQuota` and `LimitRange`: their defaults and validation, and the
//! pure arithmetic the API server's admission chain applies with them
//! (what an object costs against a quota, what a LimitRange fills into or
//! refuses in a pod).
//!
//! Quantities are handled as exact integers of milli-units (`i128`), which
//! holds every value Kubernetes accepts (up to `8Ei` times a thousand)
//! without rounding, and rounds fractions of a milli-unit up like
//! `resource.Quantity.MilliValue()`, so a request is never under-counted.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::names;
use crate::status::FieldCause;

/// Amounts per resource name (`requests.cpu`, `count/configmaps`), in
/// milli-units.
pub type Usage = BTreeMap<String, i128>;

/// The compute resources quotas and LimitRanges know of.
pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";

/// Largest magnitude accepted (Kubernetes' quantities stop at 2^63-1 of a
/// unit): keeps every sum of a few thousand values far from overflow.
const MAX_MILLIS: i128 = (i64::MAX as i128) * 1000;

/// Parses a Kubernetes quantity (`100m`, `1.5`, `128Mi`, `1e3`) into
/// milli-units, rounding up. `None` when it is not a quantity.
pub fn parse_millis(input: &str) -> Option<i128> {
    let s = input.trim();
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    let (negative, rest) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return None;
    }
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 30 {
        return None;
    }
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    // value = mantissa * 10^exp10 * 2^exp2
    let mut exp10: i32 = -i32::try_from(frac_part.len()).ok()?;
    let mut exp2: u32 = 0;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        other => {
            let exp = other.strip_prefix(['e', 'E'])?;
            let e: i32 = exp.parse().ok()?;
            if !(-40..=40).contains(&e) {
                return None;
            }
            exp10 += e;
        }
    }
    // Milli-units: one more factor of a thousand.
    exp10 += 3;
    let mut numerator = mantissa.checked_mul(1i128.checked_shl(exp2)?)?;
    let mut denominator: i128 = 1;
    if exp10 >= 0 {
        numerator = numerator.checked_mul(10i128.checked_pow(u32::try_from(exp10).ok()?)?)?;
    } else {
        denominator = 10i128.checked_pow(u32::try_from(-exp10).ok()?)?;
    }
    let magnitude = numerator / denominator + i128::from(numerator % denominator != 0);
    if magnitude > MAX_MILLIS {
        return None;
    }
    Some(if negative { -magnitude } else { magnitude })
}

/// Formats milli-units of `resource` the way Kubernetes prints such
/// quantities: CPU as cores or millicores, memory and counts with the
/// largest binary (`Mi`) or decimal (`k`) suffix that is exact.
pub fn format_millis(resource: &str, millis: i128) -> String {
    if millis % 1000 != 0 {
        return format!("{millis}m");
    }
    let units = millis / 1000;
    if units == 0 || resource_kind(resource) == CPU {
        return units.to_string();
    }
    const BINARY: &[&str] = &["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    const DECIMAL: &[&str] = &["k", "M", "G", "T", "P", "E"];
    if units % 1024 == 0 {
        let mut v = units;
        let mut i = 0;
        while v % 1024 == 0 && i < BINARY.len() {
            v /= 1024;
            i += 1;
        }
        return format!("{v}{}", BINARY[i - 1]);
    }
    if units % 1000 == 0 {
        let mut v = units;
        let mut i = 0;
        while v % 1000 == 0 && i < DECIMAL.len() {
            v /= 1000;
            i += 1;
        }
        return format!("{v}{}", DECIMAL[i - 1]);
    }
    units.to_string()
}

/// `cpu` or `memory` for the compute resource names (`limits.cpu`,
/// `requests.memory`, `cpu`), the name itself otherwise.
fn resource_kind(resource: &str) -> &str {
    resource
        .strip_prefix("requests.")
        .or_else(|| resource.strip_prefix("limits."))
        .unwrap_or(resource)
}

/// The object-count resource name of a resource: `count/pods`,
/// `count/deployments.apps`.
pub fn count_name(group: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }
}

/// Core resources that quotas also count under their bare plural, as
/// Kubernetes did before `count/…`.
const LEGACY_COUNTED: &[&str] = &[
    "pods",
    "services",
    "configmaps",
    "secrets",
    "resourcequotas",
    "replicationcontrollers",
    "persistentvolumeclaims",
];

/// Quota resource names this server tracks besides `count/<resource>`.
pub const COMPUTE_NAMES: &[&str] = &[
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// Which resource (group, plural) a quota's resource name counts objects
/// of; `None` for names that are not object counts.
pub fn counted_resource(name: &str) -> Option<(String, String)> {
    if let Some(rest) = name.strip_prefix("count/") {
        return Some(match rest.split_once('.') {
            Some((plural, group)) => (group.to_string(), plural.to_string()),
            None => (String::new(), rest.to_string()),
        });
    }
    if LEGACY_COUNTED.contains(&name) {
        return Some((String::new(), name.to_string()));
    }
    if name.starts_with("services.") {
        return Some((String::new(), "services".to_string()));
    }
    if COMPUTE_NAMES.contains(&name) {
        return Some((String::new(), "pods".to_string()));
    }
    None
}

/// A pod ends its use of quota once it has finished.
pub fn pod_is_terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// What one object costs against quotas: one of its count, and for pods
/// their compute requests and limits (none once terminal), for Services
/// their node ports and load balancers.
pub fn usage(group: &str, plural: &str, kind: &str, obj: &Value) -> Usage {
    let mut u = Usage::new();
    if kind == "Pod" && group.is_empty() && pod_is_terminal(obj) {
        return u;
    }
    u.insert(count_name(group, plural), 1000);
    if group.is_empty() && LEGACY_COUNTED.contains(&plural) {
        u.insert(plural.to_string(), 1000);
    }
    if group.is_empty() && kind == "Pod" {
        let r = pod_resources(obj);
        for (res, v) in &r.requests {
            u.insert(format!("requests.{res}"), *v);
            u.insert(res.clone(), *v);
        }
        for (res, v) in &r.limits {
            u.insert(format!("limits.{res}"), *v);
        }
    }
    if group.is_empty() && kind == "Service" {
        let type_ = obj
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        let ports = obj
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let ports = i128::try_from(ports).unwrap_or(0);
        if matches!(type_, "NodePort" | "LoadBalancer") {
            u.insert("services.nodeports".into(), ports * 1000);
        }
        if type_ == "LoadBalancer" {
            u.insert("services.loadbalancers".into(), 1000);
        }
    }
    u
}

/// The compute resources of a pod as the scheduler and quotas see them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodResources {
    /// Effective requests per resource (`cpu`, `memory`): the larger of the
    /// containers' sum and any one init container.
    pub requests: BTreeMap<String, i128>,
    /// Effective limits, the same way; a resource is absent when any
    /// container has no limit for it (the pod is then unbounded).
    pub limits: BTreeMap<String, i128>,
    /// Per resource, the containers without a request for it.
    pub missing_requests: BTreeMap<String, Vec<String>>,
    /// Per resource, the containers without a limit for it.
    pub missing_limits: BTreeMap<String, Vec<String>>,
}

fn containers(pod_spec: &Value, key: &str) -> Vec<Value> {
    pod_spec
        .get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn container_amount(c: &Value, section: &str, res: &str) -> Option<i128> {
    c.get("resources")
        .and_then(|r| r.get(section))
        .and_then(|m| m.get(res))
        .and_then(|q| match q {
            Value::String(s) => parse_millis(s),
            Value::Number(n) => n.as_f64().and_then(|f| parse_millis(&f.to_string())),
            _ => None,
        })
}

/// A container's request: its `requests`, else its limit (Kubernetes
/// defaults a missing request to the limit).
fn container_request(c: &Value, res: &str) -> Option<i128> {
    container_amount(c, "requests", res).or_else(|| container_amount(c, "limits", res))
}

fn container_name(c: &Value) -> String {
    c.get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// [`PodResources`] of a pod (or of a pod template's `spec`'s parent).
pub fn pod_resources(pod: &Value) -> PodResources {
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    pod_spec_resources(&spec)
}

/// [`PodResources`] of a pod spec.
pub fn pod_spec_resources(spec: &Value) -> PodResources {
    let regular = containers(spec, "containers");
    let init = containers(spec, "initContainers");
    let mut out = PodResources::default();
    for res in [CPU, MEMORY] {
        let mut req_sum: i128 = 0;
        let mut lim_sum: Option<i128> = Some(0);
        for c in &regular {
            match container_request(c, res) {
                Some(v) => req_sum = req_sum.saturating_add(v),
                None => out
                    .missing_requests
                    .entry(res.to_string())
                    .or_default()
                    .push(container_name(c)),
            }
            match container_amount(c, "limits", res) {
                Some(v) => lim_sum = lim_sum.map(|s| s.saturating_add(v)),
                None => {
                    lim_sum = None;
                    out.missing_limits
                        .entry(res.to_string())
                        .or_default()
                        .push(container_name(c));
                }
            }
        }
        for c in &init {
            match container_request(c, res) {
                Some(v) => req_sum = req_sum.max(v),
                None => out
                    .missing_requests
                    .entry(res.to_string())
                    .or_default()
                    .push(container_name(c)),
            }
            match container_amount(c, "limits", res) {
                Some(v) => lim_sum = lim_sum.map(|s| s.max(v)),
                None => {
                    lim_sum = None;
                    out.missing_limits
                        .entry(res.to_string())
                        .or_default()
                        .push(container_name(c));
                }
            }
        }
        if req_sum > 0 {
            out.requests.insert(res.to_string(), req_sum);
        }
        if let Some(l) = lim_sum.filter(|_| !regular.is_empty() || !init.is_empty()) {
            out.limits.insert(res.to_string(), l);
        }
    }
    out
}

/// The amounts of a `hard`/`used` map (`{"pods": "10", "requests.cpu": "2"}`);
/// values that are not quantities are skipped (validation refuses them).
pub fn parse_usage(map: Option<&Value>) -> Usage {
    map.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), parse_millis(v.as_str()?)?)))
                .collect()
        })
        .unwrap_or_default()
}

/// A usage map as a quota's `status.used` holds it.
pub fn usage_to_json(usage: &Usage) -> Value {
    Value::Object(
        usage
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(format_millis(k, *v))))
            .collect(),
    )
}

/// Why an object may not be charged to a quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaDenial {
    /// Kubernetes' `exceeded quota: q, requested: …, used: …, limited: …`.
    Exceeded(String),
    /// Kubernetes' `failed quota: q: must specify limits.cpu for: app`.
    MustSpecify(String),
}

impl std::fmt::Display for QuotaDenial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuotaDenial::Exceeded(m) | QuotaDenial::MustSpecify(m) => f.write_str(m),
        }
    }
}

/// The part of `delta` a quota with `hard` constrains.
pub fn constrained(hard: &Usage, delta: &Usage) -> Usage {
    delta
        .iter()
        .filter(|(k, v)| **v != 0 && hard.contains_key(*k))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// Compute resources a pod must declare because the quota tracks them
/// (Kubernetes' pod evaluator refuses a pod it cannot measure).
pub fn must_specify(quota: &str, hard: &Usage, pod: &Value) -> Option<QuotaDenial> {
    let r = pod_resources(pod);
    let mut parts = Vec::new();
    for name in hard.keys() {
        let (section, res) = match name.as_str() {
            "cpu" | "requests.cpu" => ("requests", CPU),
            "memory" | "requests.memory" => ("requests", MEMORY),
            "limits.cpu" => ("limits", CPU),
            "limits.memory" => ("limits", MEMORY),
            _ => continue,
        };
        let missing = if section == "requests" {
            r.missing_requests.get(res)
        } else {
            r.missing_limits.get(res)
        };
        if let Some(m) = missing.filter(|m| !m.is_empty()) {
            parts.push(format!("{name} for: {}", m.join(",")));
        }
    }
    (!parts.is_empty()).then(|| {
        QuotaDenial::MustSpecify(format!(
            "failed quota: {quota}: must specify {}",
            parts.join("; ")
        ))
    })
}

/// Checks `delta` against one quota: the new `used` when it fits,
/// Kubernetes' message otherwise. Only increases are checked (a decrease
/// always fits).
pub fn charge(
    quota: &str,
    hard: &Usage,
    used: &Usage,
    delta: &Usage,
) -> Result<Usage, QuotaDenial> {
    let mut new_used = used.clone();
    let mut exceeded = Vec::new();
    for (k, d) in constrained(hard, delta) {
        let current = used.get(&k).copied().unwrap_or(0);
        let next = current.saturating_add(d).max(0);
        let limit = hard.get(&k).copied().unwrap_or(0);
        if d > 0 && next > limit {
            exceeded.push((k.clone(), d, current, limit));
        }
        new_used.insert(k, next);
    }
    for k in hard.keys() {
        new_used.entry(k.clone()).or_insert(0);
    }
    if exceeded.is_empty() {
        return Ok(new_used);
    }
    // Columns of `exceeded`: 1 requested, 2 used, 3 limited.
    let list = |column: usize| {
        exceeded
            .iter()
            .map(|(k, d, u, l)| {
                let v = [*d, *u, *l][column - 1];
                format!("{k}={}", format_millis(k, v))
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    Err(QuotaDenial::Exceeded(format!(
        "exceeded quota: {quota}, requested: {}, used: {}, limited: {}",
        list(1),
        list(2),
        list(3),
    )))
}

/// Adds `b` to `a`.
pub fn add(a: &mut Usage, b: &Usage) {
    for (k, v) in b {
        let e = a.entry(k.clone()).or_insert(0);
        *e = e.saturating_add(*v);
    }
}

/// `new - old` per resource (what an update adds).
pub fn difference(new: &Usage, old: &Usage) -> Usage {
    let mut out = Usage::new();
    for k in new.keys().chain(old.keys()) {
        let d = new
            .get(k)
            .copied()
            .unwrap_or(0)
            .saturating_sub(old.get(k).copied().unwrap_or(0));
        if d != 0 {
            out.insert(k.clone(), d);
        }
    }
    out
}

// --- ResourceQuota --------------------------------------------------------

fn quantity_causes(map: Option<&Value>, field: &str, causes: &mut Vec<FieldCause>) {
    let Some(map) = map else { return };
    let Some(m) = map.as_object() else {
        causes.push(FieldCause::invalid(field, "Invalid value: must be a map"));
        return;
    };
    for (k, v) in m {
        let path = format!("{field}[{k}]");
        let msgs = names::qualified_name_errors(k);
        if !msgs.is_empty() && !k.starts_with("count/") {
            causes.push(names::invalid(
                &path,
                &Value::from(k.as_str()),
                &msgs.join("; "),
            ));
        }
        match v.as_str().and_then(parse_millis) {
            Some(q) if q < 0 => causes.push(names::invalid(
                &path,
                v,
                "must be greater than or equal to 0",
            )),
            Some(_) => {}
            None => causes.push(names::invalid(
                &path,
                v,
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            )),
        }
    }
}

/// Validates a ResourceQuota: quantities in `spec.hard` and `status`;
/// scopes are not supported by this server and refused rather than
/// silently ignored.
pub fn validate_resource_quota(obj: &Value, causes: &mut Vec<FieldCause>) {
    quantity_causes(obj.pointer("/spec/hard"), "spec.hard", causes);
    quantity_causes(obj.pointer("/status/hard"), "status.hard", causes);
    quantity_causes(obj.pointer("/status/used"), "status.used", causes);
    for field in ["scopes", "scopeSelector"] {
        if obj
            .pointer(&format!("/spec/{field}"))
            .is_some_and(|v| !v.is_null() && v != &Value::Array(vec![]))
        {
            causes.push(FieldCause::forbidden(
                format!("spec.{field}"),
                "Forbidden: quota scopes are not supported by this server",
            ));
        }
    }
}

// --- LimitRange -----------------------------------------------------------

const LIMIT_TYPES: &[&str] = &["Pod", "Container", "PersistentVolumeClaim"];
const LIMIT_SECTIONS: &[&str] = &[
    "max",
    "min",
    "default",
    "defaultRequest",
    "maxLimitRequestRatio",
];

/// Kubernetes' LimitRange defaults: a Container item's `default` falls back
/// to its `max`, and `defaultRequest` to `default`, then `min`.
pub fn default_limit_range(obj: &mut Value) {
    let Some(items) = obj
        .pointer_mut("/spec/limits")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for item in items.iter_mut().filter_map(Value::as_object_mut) {
        if item.get("type").and_then(Value::as_str) != Some("Container") {
            continue;
        }
        let max = item.get("max").and_then(Value::as_object).cloned();
        let min = item.get("min").and_then(Value::as_object).cloned();
        fill_from(item, "default", max.as_ref());
        let default = item.get("default").and_then(Value::as_object).cloned();
        fill_from(item, "defaultRequest", default.as_ref());
        fill_from(item, "defaultRequest", min.as_ref());
    }
}

fn fill_from(item: &mut Map<String, Value>, section: &str, from: Option<&Map<String, Value>>) {
    let Some(from) = from.filter(|m| !m.is_empty()) else {
        return;
    };
    let entry = item
        .entry(section)
        .or_insert_with(|| Value::Object(Map::new()));
    if entry.is_null() {
        *entry = Value::Object(Map::new());
    }
    if let Some(target) = entry.as_object_mut() {
        for (k, v) in from {
            target.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

/// Validates a LimitRange as Kubernetes' `ValidateLimitRange` does:
/// known types, quantities, `min ≤ defaultRequest ≤ default ≤ max`, ratios
/// of at least 1, no defaults on Pod items.
pub fn validate_limit_range(obj: &Value, causes: &mut Vec<FieldCause>) {
    let Some(items) = obj.pointer("/spec/limits").and_then(Value::as_array) else {
        causes.push(FieldCause::required("spec.limits"));
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let base = format!("spec.limits[{i}]");
        let type_ = item.get("type").and_then(Value::as_str).unwrap_or("");
        if !LIMIT_TYPES.contains(&type_) {
            causes.push(FieldCause::unsupported(
                format!("{base}.type"),
                format!(
                    "Unsupported value: {}: supported values: \"Container\", \"PersistentVolumeClaim\", \"Pod\"",
                    Value::from(type_)
                ),
            ));
        }
        let mut parsed: BTreeMap<&str, Usage> = BTreeMap::new();
        for section in LIMIT_SECTIONS {
            let v = item.get(*section);
            let before = causes.len();
            quantity_causes(v, &format!("{base}.{section}"), causes);
            if causes.len() == before {
                parsed.insert(section, parse_usage(v));
            }
        }
        if type_ == "Pod" {
            for section in ["default", "defaultRequest"] {
                if parsed.get(section).is_some_and(|m| !m.is_empty()) {
                    causes.push(FieldCause::forbidden(
                        format!("{base}.{section}"),
                        "Forbidden: may not be specified when `type` is 'Pod'",
                    ));
                }
            }
        }
        let get = |section: &str, res: &str| parsed.get(section).and_then(|m| m.get(res)).copied();
        let mut resources: Vec<&String> = parsed.values().flat_map(|m| m.keys()).collect();
        resources.sort();
        resources.dedup();
        for res in resources {
            let show = |v: i128| format_millis(res, v);
            let (min, max) = (get("min", res), get("max", res));
            let (default, request) = (get("default", res), get("defaultRequest", res));
            let mut order = |lower: Option<i128>,
                             lname: &str,
                             upper: Option<i128>,
                             uname: &str,
                             field: &str| {
                if let (Some(l), Some(u)) = (lower, upper)
                    && l > u
                {
                    causes.push(FieldCause::invalid(
                        format!("{base}.{field}[{res}]"),
                        format!(
                            "Invalid value: {}: {lname} value {} is greater than {uname} value {}",
                            Value::from(show(l)),
                            show(l),
                            show(u)
                        ),
                    ));
                }
            };
            order(min, "min", max, "max", "min");
            order(request, "default request", max, "max", "defaultRequest");
            order(min, "min", request, "default request", "defaultRequest");
            order(default, "default", max, "max", "default");
            order(min, "min", default, "default", "default");
            order(
                request,
                "default request",
                default,
                "default",
                "defaultRequest",
            );
            if let Some(r) = get("maxLimitRequestRatio", res)
                && r < 1000
            {
                causes.push(FieldCause::invalid(
                    format!("{base}.maxLimitRequestRatio[{res}]"),
                    format!(
                        "Invalid value: {}: ratio {} is less than 1",
                        Value::from(show(r)),
                        show(r)
                    ),
                ));
            }
        }
    }
}

/// One LimitRange as admission reads it: its name and items.
#[derive(Debug, Clone, Default)]
pub struct LimitItems {
    pub name: String,
    pub items: Vec<Value>,
}

impl LimitItems {
    /// The items of a stored LimitRange.
    pub fn of(obj: &Value) -> LimitItems {
        LimitItems {
            name: obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            items: obj
                .pointer("/spec/limits")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        }
    }
}

fn section_usage(item: &Value, section: &str) -> Usage {
    parse_usage(item.get(section))
}

/// Fills a new pod's containers with the `default` limits and
/// `defaultRequest` requests of Container items, where the container names
/// none, and records what was set in the `kubernetes.io/limit-ranger`
/// annotation as Kubernetes' LimitRanger does.
pub fn apply_limit_defaults(pod: &mut Value, ranges: &[LimitItems]) {
    let mut defaults: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for r in ranges {
        for item in &r.items {
            if item.get("type").and_then(Value::as_str) != Some("Container") {
                continue;
            }
            for section in ["default", "defaultRequest"] {
                if let Some(m) = item.get(section).and_then(Value::as_object) {
                    let target = defaults.entry(section).or_default();
                    for (k, v) in m {
                        target.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
            }
        }
    }
    if defaults.is_empty() {
        return;
    }
    let mut notes = Vec::new();
    for key in ["initContainers", "containers"] {
        let Some(list) = pod
            .pointer_mut(&format!("/spec/{key}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in list.iter_mut().filter_map(Value::as_object_mut) {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let resources = c
                .entry("resources")
                .or_insert_with(|| Value::Object(Map::new()));
            if !resources.is_object() {
                *resources = Value::Object(Map::new());
            }
            let Some(resources) = resources.as_object_mut() else {
                continue;
            };
            let own_limits = resources
                .get("limits")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for (section, field, what) in [
                ("defaultRequest", "requests", "request"),
                ("default", "limits", "limit"),
            ] {
                let Some(d) = defaults.get(section) else {
                    continue;
                };
                let target = resources
                    .entry(field)
                    .or_insert_with(|| Value::Object(Map::new()));
                if !target.is_object() {
                    *target = Value::Object(Map::new());
                }
                let Some(target) = target.as_object_mut() else {
                    continue;
                };
                let mut set = Vec::new();
                for (k, v) in d {
                    if !target.contains_key(k) {
                        // A container with a limit but no request gets
                        // the limit as request (Kubernetes' pod
                        // defaulting), not the namespace default.
                        let value = match own_limits.get(k) {
                            Some(limit) if field == "requests" => limit.clone(),
                            _ => v.clone(),
                        };
                        target.insert(k.clone(), value);
                        set.push(k.clone());
                    }
                }
                if !set.is_empty() {
                    notes.push(format!(
                        "{} {what} for {} {name}",
                        set.join(", "),
                        container_word(key)
                    ));
                }
            }
            // Requests filled from defaults may not exceed a limit the
            // user set: Kubernetes takes the limit as request then.
            let limits = resources.get("limits").and_then(Value::as_object).cloned();
            if let (Some(limits), Some(requests)) = (
                limits,
                resources.get_mut("requests").and_then(Value::as_object_mut),
            ) {
                for (k, l) in &limits {
                    if let (Some(lv), Some(rv)) = (
                        l.as_str().and_then(parse_millis),
                        requests
                            .get(k)
                            .and_then(Value::as_str)
                            .and_then(parse_millis),
                    ) && rv > lv
                    {
                        requests.insert(k.clone(), l.clone());
                    }
                }
            }
        }
    }
    if notes.is_empty() {
        return;
    }
    if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !annotations.is_object() {
            *annotations = Value::Object(Map::new());
        }
        if let Some(a) = annotations.as_object_mut() {
            a.insert(
                "kubernetes.io/limit-ranger".into(),
                Value::from(format!("LimitRanger plugin set: {}", notes.join("; "))),
            );
        }
    }
}

fn container_word(key: &str) -> &'static str {
    if key == "initContainers" {
        "init container"
    } else {
        "container"
    }
}

/// Every way a pod breaks the `min`, `max` and `maxLimitRequestRatio` of
/// the LimitRanges, in Kubernetes' words (`maximum cpu usage per Container
/// is 1, but limit is 2`).
pub fn limit_violations(pod: &Value, ranges: &[LimitItems]) -> Vec<String> {
    let mut out = Vec::new();
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    let mut all = containers(&spec, "initContainers");
    all.extend(containers(&spec, "containers"));
    let pod_res = pod_spec_resources(&spec);
    for r in ranges {
        for item in &r.items {
            match item.get("type").and_then(Value::as_str) {
                Some("Container") => {
                    for c in &all {
                        let requests = |res: &str| container_request(c, res);
                        let limits = |res: &str| container_amount(c, "limits", res);
                        check_item(item, "Container", &requests, &limits, &mut out);
                    }
                }
                Some("Pod") => {
                    let requests = |res: &str| pod_res.requests.get(res).copied();
                    let limits = |res: &str| pod_res.limits.get(res).copied();
                    check_item(item, "Pod", &requests, &limits, &mut out);
                }
                _ => {}
            }
        }
    }
    out.dedup();
    out
}

fn check_item(
    item: &Value,
    scope: &str,
    requests: &dyn Fn(&str) -> Option<i128>,
    limits: &dyn Fn(&str) -> Option<i128>,
    out: &mut Vec<String>,
) {
    for (res, min) in section_usage(item, "min") {
        let show = |v: i128| format_millis(&res, v);
        match requests(&res) {
            None => out.push(format!(
                "minimum {res} usage per {scope} is {}.  No request is specified",
                show(min)
            )),
            Some(v) if v < min => out.push(format!(
                "minimum {res} usage per {scope} is {}, but request is {}",
                show(min),
                show(v)
            )),
            Some(_) => {}
        }
    }
    for (res, max) in section_usage(item, "max") {
        let show = |v: i128| format_millis(&res, v);
        match limits(&res) {
            None => out.push(format!(
                "maximum {res} usage per {scope} is {}.  No limit is specified",
                show(max)
            )),
            Some(v) if v > max => out.push(format!(
                "maximum {res} usage per {scope} is {}, but limit is {}",
                show(max),
                show(v)
            )),
            Some(_) => {}
        }
    }
    for (res, ratio) in section_usage(item, "maxLimitRequestRatio") {
        let (Some(l), Some(r)) = (limits(&res), requests(&res)) else {
            let missing = if limits(&res).is_none() {
                "limit"
            } else {
                "request"
            };
            out.push(format!(
                "{res} max limit to request ratio per {scope} is {}, but no {missing} is specified",
                format_millis("", ratio)
            ));
            continue;
        };
        // l / r > ratio / 1000, in integers.
        if r > 0 && l.saturating_mul(1000) > ratio.saturating_mul(r) {
            #[allow(clippy::cast_precision_loss)]
            let provided = l as f64 / r as f64;
            out.push(format!(
                "{res} max limit to request ratio per {scope} is {}, but provided ratio is {provided:.6}",
                format_millis("", ratio)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        // Everything here runs on objects from the network.
        #[test]
        fn admission_arithmetic_never_panics(
            pod in crate::testing::object(),
            lr in crate::testing::object(),
            q in crate::testing::object(),
            text in "[-+]?[0-9.]{0,45}([eE][-+]?[0-9]{0,4}|[numkMGTPE]i?)?",
        ) {
            let _ = parse_millis(&text);
            if let Some(v) = parse_millis(&text) {
                let _ = format_millis("memory", v);
                let _ = format_millis("cpu", v);
            }
            let mut lr = lr;
            default_limit_range(&mut lr);
            let ranges = [LimitItems::of(&lr)];
            let mut p = pod;
            apply_limit_defaults(&mut p, &ranges);
            let _ = limit_violations(&p, &ranges);
            let cost = usage("", "pods", "Pod", &p);
            let hard = parse_usage(q.pointer("/spec/hard"));
            let _ = must_specify("q", &hard, &p);
            let _ = charge("q", &hard, &cost, &cost);
            let _ = difference(&cost, &hard);
            let mut causes = Vec::new();
            validate_limit_range(&lr, &mut causes);
            validate_resource_quota(&q, &mut causes);
        }
    }

    #[test]
    fn quantities_parse_to_millis_and_print_back() {
        assert_eq!(parse_millis("100m"), Some(100));
        assert_eq!(parse_millis("1.5"), Some(1500));
        assert_eq!(parse_millis("128Mi"), Some(128 * 1024 * 1024 * 1000));
        assert_eq!(parse_millis("1e3"), Some(1_000_000));
        assert_eq!(parse_millis("1G"), Some(1_000_000_000_000));
        assert_eq!(parse_millis("0.1m"), Some(1), "rounded up");
        assert_eq!(parse_millis("-2"), Some(-2000));
        for bad in [
            "",
            "abc",
            "1.2.3",
            "1Xi",
            "1e999",
            ".",
            "9999999999999999999999999999999999Ei",
        ] {
            assert_eq!(parse_millis(bad), None, "{bad}");
        }
        assert_eq!(format_millis("requests.cpu", 500), "500m");
        assert_eq!(format_millis("limits.cpu", 2000), "2");
        assert_eq!(format_millis("memory", 1024 * 1024 * 1024 * 1000), "1Gi");
        assert_eq!(format_millis("requests.memory", 500_000_000_000), "500M");
        assert_eq!(format_millis("pods", 3000), "3");
        assert_eq!(format_millis("pods", 0), "0");
    }

    #[test]
    fn a_pod_costs_its_requests_limits_and_one_count() {
        let pod = json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1", "memory": "64Mi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}
            ],
            "initContainers": [{"name": "i", "resources": {"limits": {"cpu": "2", "memory": "1Mi"}}}]
        }});
        let u = usage("", "pods", "Pod", &pod);
        assert_eq!(u["pods"], 1000);
        assert_eq!(u["count/pods"], 1000);
        // requests: max(100m + 500m, 2) = 2 (b's request is its limit).
        assert_eq!(u["requests.cpu"], 2000);
        assert_eq!(u["cpu"], 2000);
        assert_eq!(u["limits.cpu"], 2000);
        assert_eq!(u["limits.memory"], 128 * 1024 * 1024 * 1000);
        let done = json!({"spec": pod["spec"], "status": {"phase": "Succeeded"}});
        assert!(usage("", "pods", "Pod", &done).is_empty());
        let d = usage("apps", "deployments", "Deployment", &json!({}));
        assert_eq!(d.keys().collect::<Vec<_>>(), ["count/deployments.apps"]);
    }

    #[test]
    fn charging_over_the_hard_limit_gives_kubernetes_message() {
        let hard = parse_usage(Some(&json!({"pods": "2", "requests.memory": "1Gi"})));
        let used = parse_usage(Some(&json!({"pods": "1", "requests.memory": "512Mi"})));
        let mut delta = Usage::new();
        delta.insert("pods".into(), 1000);
        delta.insert("requests.memory".into(), 1024 * 1024 * 1024 * 1000);
        delta.insert("count/pods".into(), 1000);
        let err = charge("compute", &hard, &used, &delta).expect_err("over");
        assert_eq!(
            err.to_string(),
            "exceeded quota: compute, requested: requests.memory=1Gi, used: requests.memory=512Mi, limited: requests.memory=1Gi"
        );
        delta.insert("requests.memory".into(), 1000);
        let ok = charge("compute", &hard, &used, &delta).expect("fits");
        assert_eq!(ok["pods"], 2000);
        assert!(!ok.contains_key("count/pods"), "only what the quota tracks");
    }

    #[test]
    fn pods_without_the_tracked_resources_must_specify_them() {
        let hard = parse_usage(Some(&json!({"limits.cpu": "2", "pods": "5"})));
        let pod = json!({"spec": {"containers": [{"name": "app"}]}});
        assert_eq!(
            must_specify("q", &hard, &pod).map(|d| d.to_string()),
            Some("failed quota: q: must specify limits.cpu for: app".into())
        );
    }

    #[test]
    fn limit_range_defaults_fill_containers_and_annotate() {
        let mut lr = json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "default": {"memory": "256Mi"}, "defaultRequest": {"memory": "128Mi"}}]}});
        default_limit_range(&mut lr);
        assert_eq!(lr.pointer("/spec/limits/0/default/cpu"), Some(&json!("2")));
        assert_eq!(
            lr.pointer("/spec/limits/0/defaultRequest/cpu"),
            Some(&json!("2"))
        );
        let mut again = lr.clone();
        default_limit_range(&mut again);
        assert_eq!(again, lr);
        let ranges = [LimitItems::of(&lr)];
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "app", "resources": {"limits": {"cpu": "500m"}}}
        ]}});
        apply_limit_defaults(&mut pod, &ranges);
        let c = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(c["limits"], json!({"cpu": "500m", "memory": "256Mi"}));
        // The request of cpu is capped by the container's own limit.
        assert_eq!(c["requests"], json!({"cpu": "500m", "memory": "128Mi"}));
        assert!(
            pod.pointer("/metadata/annotations/kubernetes.io~1limit-ranger")
                .and_then(Value::as_str)
                .is_some_and(|s| s.starts_with("LimitRanger plugin set:"))
        );
        assert!(limit_violations(&pod, &ranges).is_empty());
    }

    #[test]
    fn limit_range_min_max_and_ratio_are_enforced() {
        let lr = json!({"spec": {"limits": [
            {"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "64Mi"}, "maxLimitRequestRatio": {"cpu": "2"}},
            {"type": "Pod", "max": {"memory": "1Gi"}}
        ]}});
        let ranges = [LimitItems::of(&lr)];
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "32Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}}}
        ]}});
        let v = limit_violations(&pod, &ranges);
        assert!(
            v.contains(&"maximum cpu usage per Container is 1, but limit is 2".to_string()),
            "{v:?}"
        );
        assert!(
            v.contains(
                &"minimum memory usage per Container is 64Mi, but request is 32Mi".to_string()
            ),
            "{v:?}"
        );
        assert!(v.contains(&"cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000".to_string()), "{v:?}");
        assert!(
            v.contains(&"maximum memory usage per Pod is 1Gi, but limit is 2Gi".to_string()),
            "{v:?}"
        );
        let unlimited = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"memory": "64Mi", "cpu": "1"}}}]}});
        let v = limit_violations(&unlimited, &ranges);
        assert!(
            v.contains(&"maximum cpu usage per Container is 1.  No limit is specified".to_string()),
            "{v:?}"
        );
    }

    #[test]
    fn invalid_quotas_and_limit_ranges_are_refused() {
        let mut causes = Vec::new();
        validate_resource_quota(
            &json!({"spec": {"hard": {"pods": "x", "cpu": "-1"}, "scopes": ["BestEffort"]}}),
            &mut causes,
        );
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.hard[cpu]", "spec.hard[pods]", "spec.scopes"]);
        let mut causes = Vec::new();
        validate_limit_range(
            &json!({"spec": {"limits": [
                {"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}},
                {"type": "Pod", "default": {"cpu": "1"}},
                {"type": "Volume"},
                {"type": "Container", "maxLimitRequestRatio": {"cpu": "0.5"}}
            ]}}),
            &mut causes,
        );
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert!(fields.contains(&"spec.limits[0].min[cpu]"), "{fields:?}");
        assert!(fields.contains(&"spec.limits[1].default"), "{fields:?}");
        assert!(fields.contains(&"spec.limits[2].type"), "{fields:?}");
        assert!(
            fields.contains(&"spec.limits[3].maxLimitRequestRatio[cpu]"),
            "{fields:?}"
        );
    }
}
