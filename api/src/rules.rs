//! Per-kind strategy, pure: defaults on write, validation, unknown fields for
//! `fieldValidation=Strict`, and what a main-resource or status write may
//! change (Kubernetes' `rest.RESTCreateStrategy`/`RESTUpdateStrategy`).
//!
//! Metadata rules common to every kind live in
//! [`crate::names::validate_object_meta`]; this module only adds what is
//! particular to a kind.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::image::{ImageRef, Reference};
use crate::names::{self, invalid};
use crate::resources;
use crate::status::FieldCause;

pub mod quota;
pub mod rbac;
pub mod service;

/// Fills in defaulted fields of an object of `kind`. Only fills what is
/// missing, so it is safe to run on every write (Kubernetes defaults on every
/// decode, updates included).
pub fn defaults(kind: &str, obj: &mut Value) {
    match kind {
        "Pod" => {
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                default_pod_spec(spec);
                // Pod-only defaults (`SetDefaults_Pod` and the Priority admission
                // plugin), which pod templates do not get.
                default_key(spec, "enableServiceLinks", Value::from(true));
                default_key(spec, "priority", Value::from(0));
            }
        }
        "Deployment" => default_deployment(obj),
        "ReplicaSet" => {
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                default_key(spec, "replicas", Value::from(1));
                default_template(spec);
            }
        }
        "DaemonSet" => default_daemon_set(obj),
        "Job" => default_job(obj),
        "Service" => service::default_service(obj),
        "Endpoints" => service::default_endpoints(obj),
        "EndpointSlice" => service::default_endpoint_slice(obj),
        "LimitRange" => quota::default_limit_range(obj),
        "Namespace" => {
            set_default(obj, &["status", "phase"], Value::from("Active"));
        }
        "Secret" => {
            if let Some(o) = obj.as_object_mut() {
                let missing = o
                    .get("type")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty);
                if missing {
                    o.insert("type".into(), Value::from("Opaque"));
                }
                fold_string_data(o);
            }
        }
        _ => {}
    }
}

/// Sets `path` to `value` when absent (or null), creating objects on the way.
fn set_default(obj: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for p in parents {
        let Some(o) = cur.as_object_mut() else {
            return;
        };
        let child = o
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if child.is_null() {
            *child = Value::Object(Map::new());
        }
        cur = child;
    }
    if let Some(o) = cur.as_object_mut() {
        let slot = o.entry(last.to_string()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

/// `stringData` is write-only: Kubernetes folds it into `data` (base64, and
/// winning over `data` on the same key) and never stores it.
fn fold_string_data(secret: &mut Map<String, Value>) {
    let Some(Value::Object(string_data)) = secret.remove("stringData") else {
        return;
    };
    if string_data.is_empty() {
        return;
    }
    let data = secret
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()));
    if !data.is_object() {
        *data = Value::Object(Map::new());
    }
    if let Some(data) = data.as_object_mut() {
        for (k, v) in string_data {
            if let Some(text) = v.as_str() {
                data.insert(k, Value::from(base64_encode(text.as_bytes())));
            }
        }
    }
}

/// Standard base64 with padding (RFC 4648 §4), as `data` values are.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn default_key(o: &mut Map<String, Value>, key: &str, value: Value) {
    let slot = o.entry(key.to_string()).or_insert(Value::Null);
    if slot.is_null() {
        *slot = value;
    }
}

fn default_pod_spec(spec: &mut Map<String, Value>) {
    default_key(spec, "restartPolicy", Value::from("Always"));
    default_key(spec, "terminationGracePeriodSeconds", Value::from(30));
    default_key(spec, "dnsPolicy", Value::from("ClusterFirst"));
    default_key(spec, "schedulerName", Value::from("default-scheduler"));
    default_key(spec, "securityContext", Value::Object(Map::new()));
    for list in ["containers", "initContainers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in containers.iter_mut().filter_map(Value::as_object_mut) {
                default_container(c);
            }
        }
    }
}

/// `spec.template.spec` of a workload gets the pod spec defaults
/// (`SetDefaults_PodSpec`), as Kubernetes defaults every embedded PodSpec.
fn default_template(spec: &mut Map<String, Value>) {
    if let Some(pod_spec) = spec
        .get_mut("template")
        .and_then(|t| t.get_mut("spec"))
        .and_then(Value::as_object_mut)
    {
        default_pod_spec(pod_spec);
    }
}

/// The object at `o[key]`, created (or replacing a null) when missing;
/// `None` when it holds something else.
fn object_entry<'a>(
    o: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    let slot = o
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

/// Sets `o[key]` when it is missing, null or an empty string (Go's zero
/// value for a string enum).
fn default_enum(o: &mut Map<String, Value>, key: &str, value: &str) {
    let missing = o
        .get(key)
        .is_none_or(|v| v.is_null() || v.as_str() == Some(""));
    if missing {
        o.insert(key.to_string(), Value::from(value));
    }
}

/// apps/v1 `SetDefaults_Deployment`.
fn default_deployment(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    default_key(spec, "replicas", Value::from(1));
    default_key(spec, "revisionHistoryLimit", Value::from(10));
    default_key(spec, "progressDeadlineSeconds", Value::from(600));
    if let Some(strategy) = object_entry(spec, "strategy") {
        default_enum(strategy, "type", "RollingUpdate");
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
            && let Some(ru) = object_entry(strategy, "rollingUpdate")
        {
            default_key(ru, "maxUnavailable", Value::from("25%"));
            default_key(ru, "maxSurge", Value::from("25%"));
        }
    }
    default_template(spec);
}

/// apps/v1 `SetDefaults_DaemonSet`.
fn default_daemon_set(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    default_key(spec, "revisionHistoryLimit", Value::from(10));
    if let Some(strategy) = object_entry(spec, "updateStrategy") {
        default_enum(strategy, "type", "RollingUpdate");
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
            && let Some(ru) = object_entry(strategy, "rollingUpdate")
        {
            default_key(ru, "maxUnavailable", Value::from(1));
            default_key(ru, "maxSurge", Value::from(0));
        }
    }
    default_template(spec);
}

/// Label of a Job's pods and selector naming the Job's uid.
pub const JOB_CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The pre-1.27 spelling of [`JOB_CONTROLLER_UID_LABEL`], still set.
pub const LEGACY_JOB_CONTROLLER_UID_LABEL: &str = "controller-uid";
/// Label of a Job's pods naming the Job.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// The pre-1.27 spelling of [`JOB_NAME_LABEL`], still set.
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";

/// batch/v1 `SetDefaults_Job`.
fn default_job(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let unset = |spec: &Map<String, Value>, key: &str| spec.get(key).is_none_or(Value::is_null);
    // A non-parallel Job may leave both unset; only then is completions 1.
    // A parallelism alone makes a work queue with no completion count.
    if unset(spec, "completions") && unset(spec, "parallelism") {
        spec.insert("completions".into(), Value::from(1));
    }
    default_key(spec, "parallelism", Value::from(1));
    let backoff = if unset(spec, "backoffLimitPerIndex") {
        6
    } else {
        i32::MAX
    };
    default_key(spec, "backoffLimit", Value::from(backoff));
    default_enum(spec, "completionMode", "NonIndexed");
    default_key(spec, "suspend", Value::from(false));
    default_key(spec, "manualSelector", Value::from(false));
    let replacement = if unset(spec, "podFailurePolicy") {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    default_enum(spec, "podReplacementPolicy", replacement);
    default_template(spec);
    job_labels_from_template(obj);
}

/// A Job without labels of its own takes its template's (`SetDefaults_Job`).
fn job_labels_from_template(obj: &mut Value) {
    let Some(labels) = obj
        .pointer("/spec/template/metadata/labels")
        .filter(|v| v.is_object())
        .cloned()
    else {
        return;
    };
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let missing = match meta.get("labels") {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(_) => false,
    };
    if missing {
        meta.insert("labels".into(), labels);
    }
}

/// Kubernetes' job strategy `generateSelector`: the pods get the Job's name
/// and uid as labels (both spellings), and the selector picks the uid, so a
/// Job's pods are only ever its own. Labels the user set are kept (a wrong
/// value then fails validation).
fn generate_job_selector(obj: &mut Value) {
    let meta_str = |key: &str| {
        obj.pointer(&format!("/metadata/{key}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (name, uid) = (meta_str("name"), meta_str("uid"));
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(labels) = object_entry(spec, "template")
        .and_then(|t| object_entry(t, "metadata"))
        .and_then(|m| object_entry(m, "labels"))
    {
        for key in [LEGACY_JOB_NAME_LABEL, JOB_NAME_LABEL] {
            labels
                .entry(key)
                .or_insert_with(|| Value::from(name.as_str()));
        }
        for key in [LEGACY_JOB_CONTROLLER_UID_LABEL, JOB_CONTROLLER_UID_LABEL] {
            labels
                .entry(key)
                .or_insert_with(|| Value::from(uid.as_str()));
        }
    }
    if let Some(match_labels) =
        object_entry(spec, "selector").and_then(|s| object_entry(s, "matchLabels"))
    {
        match_labels
            .entry(JOB_CONTROLLER_UID_LABEL)
            .or_insert_with(|| Value::from(uid.as_str()));
    }
}

/// What a kind's create strategy does once the server has named the object
/// and given it its uid, before validation (Kubernetes' `PrepareForCreate`):
/// a new Job starts with an empty status and, unless `manualSelector`, gets
/// its selector and pod labels generated from its uid.
pub fn prepare_create(kind: &str, obj: &mut Value) {
    if kind != "Job" {
        return;
    }
    if let Some(o) = obj.as_object_mut() {
        o.insert("status".into(), Value::Object(Map::new()));
    }
    if obj.pointer("/spec/manualSelector").and_then(Value::as_bool) != Some(true) {
        generate_job_selector(obj);
    }
    job_labels_from_template(obj);
}

/// Kubernetes pulls `:latest` (or untagged) images every time and others
/// only when absent.
pub fn default_pull_policy(image: &str) -> &'static str {
    match ImageRef::parse(image) {
        Ok(r) if r.reference == Reference::Tag("latest".into()) => "Always",
        _ => "IfNotPresent",
    }
}

fn default_container(c: &mut Map<String, Value>) {
    let policy = c
        .get("image")
        .and_then(Value::as_str)
        .map(default_pull_policy)
        .unwrap_or("IfNotPresent");
    default_key(c, "imagePullPolicy", Value::from(policy));
    default_key(
        c,
        "terminationMessagePath",
        Value::from("/dev/termination-log"),
    );
    default_key(c, "terminationMessagePolicy", Value::from("File"));
    default_key(c, "resources", Value::Object(Map::new()));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default_key(p, "protocol", Value::from("TCP"));
        }
    }
}

/// Where a typed decode failed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DecodeError {
    path: String,
    message: String,
}

/// Decodes `obj` as `T`. With `unknown`, every key `T` does not know is
/// reported there by its path segments (the decode runs through
/// `serde_ignored`); without, the plain decode runs, and only a failure is
/// decoded again to find where.
fn decode_as<T: DeserializeOwned>(
    obj: &Value,
    unknown: Option<&mut Vec<Vec<Segment>>>,
) -> Result<(), DecodeError> {
    let plain = match unknown {
        Some(out) => {
            serde_ignored::deserialize::<_, _, T>(obj, |path| out.push(segments(&path))).map(drop)
        }
        None => T::deserialize(obj).map(drop),
    };
    if plain.is_ok() {
        return Ok(());
    }
    match serde_path_to_error::deserialize::<_, T>(obj) {
        Ok(_) => Ok(()),
        Err(e) => {
            let path = e.path().to_string();
            Err(DecodeError {
                path: if path == "." { String::new() } else { path },
                message: e.inner().to_string(),
            })
        }
    }
}

/// One step of a path into a JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn segments(path: &serde_ignored::Path<'_>) -> Vec<Segment> {
    use serde_ignored::Path;
    let (parent, own) = match path {
        Path::Root => return Vec::new(),
        Path::Seq { parent, index } => (*parent, Some(Segment::Index(*index))),
        Path::Map { parent, key } => (*parent, Some(Segment::Key(key.clone()))),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => (*parent, None),
    };
    let mut out = segments(parent);
    out.extend(own);
    out
}

/// `spec.containers[0].image`.
fn display_path(segments: &[Segment]) -> String {
    let mut out = String::new();
    for s in segments {
        match s {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn value_at_segments<'v>(obj: &'v Value, segments: &[Segment]) -> Option<&'v Value> {
    segments.iter().try_fold(obj, |v, s| match s {
        Segment::Key(k) => v.get(k),
        Segment::Index(i) => v.get(*i),
    })
}

/// Decodes `obj` into the k8s-openapi type of `kind` (see [`decode_as`]);
/// `None` when `kind` has no typed schema here.
fn typed_decode(
    kind: &str,
    obj: &Value,
    unknown: Option<&mut Vec<Vec<Segment>>>,
) -> Option<Result<(), DecodeError>> {
    use k8s_openapi::api::apps::v1 as apps;
    use k8s_openapi::api::batch::v1 as batch;
    use k8s_openapi::api::coordination::v1 as coordination;
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::api::discovery::v1 as discovery;
    use k8s_openapi::api::rbac::v1 as rbac;
    // apiVersion and kind are implied by the URL; the types insist on them.
    let completed;
    let obj = match (obj.as_object(), resources::by_kind_name(kind)) {
        (Some(o), Some(res)) if !o.contains_key("apiVersion") || !o.contains_key("kind") => {
            let mut o = o.clone();
            o.entry("apiVersion")
                .or_insert_with(|| Value::from(res.api_version()));
            o.entry("kind").or_insert_with(|| Value::from(res.kind));
            completed = Value::Object(o);
            &completed
        }
        _ => obj,
    };
    Some(match kind {
        "Pod" => decode_as::<core::Pod>(obj, unknown),
        "Node" => decode_as::<core::Node>(obj, unknown),
        "Namespace" => decode_as::<core::Namespace>(obj, unknown),
        "Event" => decode_as::<core::Event>(obj, unknown),
        "ConfigMap" => decode_as::<core::ConfigMap>(obj, unknown),
        "Secret" => decode_as::<core::Secret>(obj, unknown),
        "Lease" => decode_as::<coordination::Lease>(obj, unknown),
        "Deployment" => decode_as::<apps::Deployment>(obj, unknown),
        "ReplicaSet" => decode_as::<apps::ReplicaSet>(obj, unknown),
        "DaemonSet" => decode_as::<apps::DaemonSet>(obj, unknown),
        "Job" => decode_as::<batch::Job>(obj, unknown),
        "Service" => decode_as::<core::Service>(obj, unknown),
        "ServiceAccount" => decode_as::<core::ServiceAccount>(obj, unknown),
        "Endpoints" => decode_as::<core::Endpoints>(obj, unknown),
        "EndpointSlice" => decode_as::<discovery::EndpointSlice>(obj, unknown),
        "ResourceQuota" => decode_as::<core::ResourceQuota>(obj, unknown),
        "LimitRange" => decode_as::<core::LimitRange>(obj, unknown),
        "Role" => decode_as::<rbac::Role>(obj, unknown),
        "ClusterRole" => decode_as::<rbac::ClusterRole>(obj, unknown),
        "RoleBinding" => decode_as::<rbac::RoleBinding>(obj, unknown),
        "ClusterRoleBinding" => decode_as::<rbac::ClusterRoleBinding>(obj, unknown),
        _ => return None,
    })
}

/// Validates an object of `kind` (create and update): the typed decode, then
/// the kind's own rules. Metadata is [`names::validate_object_meta`]'s job.
pub fn validate(kind: &str, obj: &Value) -> Vec<FieldCause> {
    if !obj.is_object() {
        return vec![FieldCause::invalid(
            "",
            "Invalid value: the object must be a JSON object",
        )];
    }
    if let Some(Err(e)) = typed_decode(kind, obj, None) {
        let shown = value_at(obj, &e.path)
            .map(|v| format!("{}: ", short(v)))
            .unwrap_or_default();
        return vec![FieldCause::invalid(
            e.path,
            format!("Invalid value: {shown}{}", e.message),
        )];
    }
    let mut causes = Vec::new();
    match kind {
        "Pod" => validate_pod(obj, &mut causes),
        "ConfigMap" => validate_config_map(obj, &mut causes),
        "Secret" => validate_secret(obj, &mut causes),
        "Event" => validate_event(obj, &mut causes),
        "Lease" => validate_lease(obj, &mut causes),
        "Deployment" | "ReplicaSet" | "DaemonSet" => validate_workload(kind, obj, &mut causes),
        "Job" => validate_job(obj, &mut causes),
        "Service" => service::validate_service(obj, &mut causes),
        "Endpoints" => service::validate_endpoints(obj, &mut causes),
        "EndpointSlice" => service::validate_endpoint_slice(obj, &mut causes),
        "ResourceQuota" => quota::validate_resource_quota(obj, &mut causes),
        "LimitRange" => quota::validate_limit_range(obj, &mut causes),
        k if rbac::is_rbac_kind(k) => rbac::validate(k, obj, &mut causes),
        _ => {}
    }
    causes
}

/// The value at a `a.b[0].c` path, for messages.
fn value_at<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return None;
    }
    let mut cur = obj;
    for part in path.split('.') {
        let (name, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        for idx in indexes.split('[').filter(|s| !s.is_empty()) {
            let i: usize = idx.trim_end_matches(']').parse().ok()?;
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

/// A value for a message: scalars in full, compound values by their kind.
fn short(v: &Value) -> String {
    match v {
        Value::Object(_) => "object".into(),
        Value::Array(_) => "array".into(),
        other => other.to_string(),
    }
}

fn quote(s: &str) -> String {
    Value::from(s).to_string()
}

fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> FieldCause {
    let list = supported
        .iter()
        .map(|s| quote(s))
        .collect::<Vec<_>>()
        .join(", ");
    FieldCause::unsupported(
        field,
        format!(
            "Unsupported value: {}: supported values: {list}",
            short(value)
        ),
    )
}

fn duplicate(field: impl Into<String>, value: &Value) -> FieldCause {
    FieldCause::new(
        "FieldValueDuplicate",
        field,
        format!("Duplicate value: {}", short(value)),
    )
}

fn not_found(field: impl Into<String>, value: &Value) -> FieldCause {
    FieldCause::new(
        "FieldValueNotFound",
        field,
        format!("Not found: {}", short(value)),
    )
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn array_of<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

fn validate_pod(pod: &Value, causes: &mut Vec<FieldCause>) {
    let Some(spec) = pod.get("spec").filter(|s| s.is_object()) else {
        causes.push(FieldCause::required("spec"));
        return;
    };
    let mut volume_names = BTreeSet::new();
    for (i, v) in array_of(spec, "volumes").iter().enumerate() {
        let field = format!("spec.volumes[{i}].name");
        match str_of(v, "name") {
            None | Some("") => causes.push(FieldCause::required(field)),
            Some(n) => {
                for msg in names::dns1123_label_errors(n) {
                    causes.push(invalid(field.clone(), &Value::from(n), &msg));
                }
                if !volume_names.insert(n.to_string()) {
                    causes.push(duplicate(field, &Value::from(n)));
                }
            }
        }
    }
    let containers = array_of(spec, "containers");
    if containers.is_empty() {
        causes.push(FieldCause::required("spec.containers"));
    }
    let mut container_names = BTreeSet::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in array_of(spec, list).iter().enumerate() {
            validate_container(
                &format!("spec.{list}[{i}]"),
                c,
                &volume_names,
                &mut container_names,
                causes,
            );
        }
    }
    if let Some(p) = spec.get("restartPolicy").filter(|v| !v.is_null())
        && !p.as_str().is_some_and(|s| RESTART_POLICIES.contains(&s))
    {
        causes.push(not_supported("spec.restartPolicy", p, RESTART_POLICIES));
    }
    if let Some(p) = spec.get("dnsPolicy").filter(|v| !v.is_null())
        && !p.as_str().is_some_and(|s| DNS_POLICIES.contains(&s))
    {
        causes.push(not_supported("spec.dnsPolicy", p, DNS_POLICIES));
    }
    if let Some(n) = str_of(spec, "nodeName").filter(|n| !n.is_empty()) {
        for msg in names::dns1123_subdomain_errors(n) {
            causes.push(invalid("spec.nodeName", &Value::from(n), &msg));
        }
    }
    if let Some(d) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64)
        && !(1..=i64::from(i32::MAX)).contains(&d)
    {
        causes.push(invalid(
            "spec.activeDeadlineSeconds",
            &Value::from(d),
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    if let Some(t) = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        && t < 0
    {
        causes.push(invalid(
            "spec.terminationGracePeriodSeconds",
            &Value::from(t),
            "must be greater than or equal to 0",
        ));
    }
    // Kubernetes only asks for a non-negative int64 here; beyond int32 (68
    // years) no grace is meaningful, and the kubelet's deadline arithmetic
    // must not be fed i64::MAX.
    if let Some(t) = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        && t > i64::from(i32::MAX)
    {
        causes.push(invalid(
            "spec.terminationGracePeriodSeconds",
            &Value::from(t),
            "must be less than or equal to 2147483647",
        ));
    }
    // restartCount is an int32 counter the kubelet reports; table rendering
    // sums it.
    for list in [
        "initContainerStatuses",
        "containerStatuses",
        "ephemeralContainerStatuses",
    ] {
        let statuses = pod
            .pointer(&format!("/status/{list}"))
            .and_then(Value::as_array);
        for (i, c) in statuses.into_iter().flatten().enumerate() {
            if let Some(n) = c.get("restartCount").and_then(Value::as_i64)
                && !(0..=i64::from(i32::MAX)).contains(&n)
            {
                causes.push(invalid(
                    format!("status.{list}[{i}].restartCount"),
                    &Value::from(n),
                    "must be between 0 and 2147483647, inclusive",
                ));
            }
        }
    }
}

fn validate_container(
    path: &str,
    c: &Value,
    volumes: &BTreeSet<String>,
    seen_names: &mut BTreeSet<String>,
    causes: &mut Vec<FieldCause>,
) {
    match str_of(c, "name") {
        None | Some("") => causes.push(FieldCause::required(format!("{path}.name"))),
        Some(n) => {
            for msg in names::dns1123_label_errors(n) {
                causes.push(invalid(format!("{path}.name"), &Value::from(n), &msg));
            }
            if !seen_names.insert(n.to_string()) {
                causes.push(duplicate(format!("{path}.name"), &Value::from(n)));
            }
        }
    }
    match str_of(c, "image") {
        None | Some("") => causes.push(FieldCause::required(format!("{path}.image"))),
        Some(img) if img.trim() != img => causes.push(invalid(
            format!("{path}.image"),
            &Value::from(img),
            "must not have leading or trailing whitespace",
        )),
        Some(_) => {}
    }
    if let Some(p) = c.get("imagePullPolicy").filter(|v| !v.is_null())
        && !p.as_str().is_some_and(|s| PULL_POLICIES.contains(&s))
    {
        causes.push(not_supported(
            format!("{path}.imagePullPolicy"),
            p,
            PULL_POLICIES,
        ));
    }
    let mut port_names = BTreeSet::new();
    for (i, p) in array_of(c, "ports").iter().enumerate() {
        let base = format!("{path}.ports[{i}]");
        match p.get("containerPort").and_then(Value::as_i64) {
            None => causes.push(FieldCause::required(format!("{base}.containerPort"))),
            Some(n) if !(1..=65535).contains(&n) => causes.push(invalid(
                format!("{base}.containerPort"),
                &Value::from(n),
                "must be between 1 and 65535, inclusive",
            )),
            Some(_) => {}
        }
        if let Some(n) = p.get("hostPort").and_then(Value::as_i64)
            && n != 0
            && !(1..=65535).contains(&n)
        {
            causes.push(invalid(
                format!("{base}.hostPort"),
                &Value::from(n),
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(proto) = p.get("protocol").filter(|v| !v.is_null())
            && !proto.as_str().is_some_and(|s| PROTOCOLS.contains(&s))
        {
            causes.push(not_supported(format!("{base}.protocol"), proto, PROTOCOLS));
        }
        if let Some(name) = str_of(p, "name").filter(|n| !n.is_empty()) {
            for msg in port_name_errors(name) {
                causes.push(invalid(format!("{base}.name"), &Value::from(name), &msg));
            }
            if !port_names.insert(name.to_string()) {
                causes.push(duplicate(format!("{base}.name"), &Value::from(name)));
            }
        }
    }
    for (i, e) in array_of(c, "env").iter().enumerate() {
        let field = format!("{path}.env[{i}].name");
        match str_of(e, "name") {
            None | Some("") => causes.push(FieldCause::required(field)),
            Some(n) => {
                if !n.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'=') {
                    causes.push(invalid(
                        field,
                        &Value::from(n),
                        "a valid environment variable name must consist only of printable ASCII characters other than '='",
                    ));
                }
            }
        }
    }
    let mut mount_paths = BTreeSet::new();
    for (i, m) in array_of(c, "volumeMounts").iter().enumerate() {
        let base = format!("{path}.volumeMounts[{i}]");
        match str_of(m, "name") {
            None | Some("") => causes.push(FieldCause::required(format!("{base}.name"))),
            Some(n) if !volumes.contains(n) => {
                causes.push(not_found(format!("{base}.name"), &Value::from(n)))
            }
            Some(_) => {}
        }
        match str_of(m, "mountPath") {
            None | Some("") => causes.push(FieldCause::required(format!("{base}.mountPath"))),
            Some(p) => {
                if !mount_paths.insert(p.to_string()) {
                    causes.push(invalid(
                        format!("{base}.mountPath"),
                        &Value::from(p),
                        "must be unique",
                    ));
                }
            }
        }
    }
}

/// apimachinery's `IsValidPortName` (IANA service names).
fn port_name_errors(port: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if port.len() > 15 {
        errs.push("must be no more than 15 characters".to_string());
    }
    if !port
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if !port.bytes().any(|b| b.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if port.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if port.starts_with('-') || port.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

/// apimachinery's `IsConfigMapKey`.
fn config_key_errors(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if key.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        errs.push("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".to_string());
    }
    if key == "." {
        errs.push("must not be '.'".to_string());
    } else if key == ".." {
        errs.push("must not be '..'".to_string());
    } else if key.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

/// Kubernetes' limit on the data of a ConfigMap or Secret.
const MAX_DATA_BYTES: usize = 1024 * 1024;

fn validate_data_keys(
    obj: &Value,
    maps: &[&str],
    size_of: impl Fn(&str, &Value) -> usize,
    causes: &mut Vec<FieldCause>,
) -> usize {
    let mut total = 0usize;
    let mut seen = BTreeSet::new();
    for map in maps {
        let Some(m) = obj.get(*map).and_then(Value::as_object) else {
            continue;
        };
        for (k, v) in m {
            for msg in config_key_errors(k) {
                causes.push(invalid(
                    format!("{map}[{k}]"),
                    &Value::from(k.as_str()),
                    &msg,
                ));
            }
            if !seen.insert(k.clone()) {
                causes.push(invalid(
                    format!("{map}[{k}]"),
                    &Value::from(k.as_str()),
                    "duplicate of key present in data",
                ));
            }
            total = total.saturating_add(size_of(map, v));
        }
    }
    total
}

fn validate_config_map(cm: &Value, causes: &mut Vec<FieldCause>) {
    let total = validate_data_keys(
        cm,
        &["data", "binaryData"],
        |map, v| {
            let s = v.as_str().map_or(0, str::len);
            // binaryData is base64 on the wire; the limit is on the bytes.
            if map == "binaryData" { s / 4 * 3 } else { s }
        },
        causes,
    );
    if total > MAX_DATA_BYTES {
        causes.push(FieldCause::new(
            "FieldValueTooLong",
            "",
            format!("Too long: must have at most {MAX_DATA_BYTES} bytes"),
        ));
    }
}

fn validate_secret(secret: &Value, causes: &mut Vec<FieldCause>) {
    let total = validate_data_keys(
        secret,
        &["data", "stringData"],
        |map, v| {
            let s = v.as_str().map_or(0, str::len);
            if map == "data" { s / 4 * 3 } else { s }
        },
        causes,
    );
    if total > MAX_DATA_BYTES {
        causes.push(FieldCause::new(
            "FieldValueTooLong",
            "data",
            format!("Too long: must have at most {MAX_DATA_BYTES} bytes"),
        ));
    }
}

fn validate_event(ev: &Value, causes: &mut Vec<FieldCause>) {
    let ns = ev
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let involved_ns = ev
        .pointer("/involvedObject/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !involved_ns.is_empty() && involved_ns != ns {
        causes.push(invalid(
            "involvedObject.namespace",
            &Value::from(involved_ns),
            "does not match event.namespace",
        ));
    }
}

fn validate_lease(lease: &Value, causes: &mut Vec<FieldCause>) {
    if let Some(d) = lease
        .pointer("/spec/leaseDurationSeconds")
        .and_then(Value::as_i64)
        && d <= 0
    {
        causes.push(invalid(
            "spec.leaseDurationSeconds",
            &Value::from(d),
            "must be greater than 0",
        ));
    }
    if let Some(t) = lease
        .pointer("/spec/leaseTransitions")
        .and_then(Value::as_i64)
        && t < 0
    {
        causes.push(invalid(
            "spec.leaseTransitions",
            &Value::from(t),
            "must be greater than or equal to 0",
        ));
    }
}

/// `field` of `obj`, when present, must be an integer ≥ 0.
fn non_negative(obj: &Value, key: &str, field: &str, causes: &mut Vec<FieldCause>) {
    if let Some(n) = obj.get(key).and_then(Value::as_i64)
        && n < 0
    {
        causes.push(invalid(
            field,
            &Value::from(n),
            "must be greater than or equal to 0",
        ));
    }
}

/// A label map as Go's `%#v` prints it, which is how Kubernetes shows
/// template labels in the selector mismatch message.
fn go_string_map(labels: Option<&Value>) -> String {
    let Some(m) = labels.and_then(Value::as_object).filter(|m| !m.is_empty()) else {
        return "map[string]string(nil)".into();
    };
    let mut entries: Vec<(&String, &Value)> = m.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let body = entries
        .iter()
        .map(|(k, v)| {
            let v = v.as_str().map(quote).unwrap_or_else(|| v.to_string());
            format!("{}:{v}", quote(k))
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("map[string]string{{{body}}}")
}

/// A `metav1.LabelSelector` as Go's `%#v` prints it, which is how
/// Kubernetes shows a selector in the "field is immutable" message.
fn go_selector(sel: &Value) -> String {
    let go_strings = |v: Option<&Value>| -> String {
        match v.and_then(Value::as_array) {
            Some(a) if !a.is_empty() => format!(
                "[]string{{{}}}",
                a.iter()
                    .map(|x| x.as_str().map(quote).unwrap_or_else(|| x.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => "[]string(nil)".into(),
        }
    };
    let expressions = match sel.get("matchExpressions").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => format!(
            "[]v1.LabelSelectorRequirement{{{}}}",
            a.iter()
                .map(|e| format!(
                    "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                    quote(str_of(e, "key").unwrap_or("")),
                    quote(str_of(e, "operator").unwrap_or("")),
                    go_strings(e.get("values"))
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => "[]v1.LabelSelectorRequirement(nil)".into(),
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{expressions}}}",
        go_string_map(sel.get("matchLabels"))
    )
}

/// `spec.selector` of a workload: required, valid, non-empty.
fn workload_selector(
    kind: &str,
    spec: &Value,
    causes: &mut Vec<FieldCause>,
) -> Option<crate::selector::LabelSelector> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sSelector;
    let raw = spec.get("selector").filter(|v| !v.is_null());
    let Some(raw) = raw else {
        causes.push(FieldCause::required("spec.selector"));
        return None;
    };
    let typed: K8sSelector = match serde_json::from_value(raw.clone()) {
        Ok(t) => t,
        Err(e) => {
            causes.push(invalid("spec.selector", raw, &e.to_string()));
            return None;
        }
    };
    for (k, v) in typed.match_labels.iter().flatten() {
        for msg in names::qualified_name_errors(k) {
            causes.push(invalid(
                "spec.selector.matchLabels",
                &Value::from(k.as_str()),
                &msg,
            ));
        }
        for msg in names::label_value_errors(v) {
            causes.push(invalid(
                "spec.selector.matchLabels",
                &Value::from(v.as_str()),
                &msg,
            ));
        }
    }
    match crate::selector::LabelSelector::from_k8s(&typed) {
        Err(e) => {
            causes.push(invalid("spec.selector", raw, &e.to_string()));
            None
        }
        Ok(sel) if sel.is_empty() => {
            // Kubernetes says "deployment" for ReplicaSets too.
            let what = match kind {
                "DaemonSet" => "daemonset",
                "Job" => "job",
                _ => "deployment",
            };
            causes.push(invalid(
                "spec.selector",
                raw,
                &format!("empty selector is invalid for {what}"),
            ));
            None
        }
        Ok(sel) => Some(sel),
    }
}

/// An int-or-percent field of a rolling update; returns its value as an
/// integer or percentage, `None` when invalid (a cause is recorded).
fn int_or_percent(
    v: Option<&Value>,
    field: &str,
    causes: &mut Vec<FieldCause>,
) -> Option<(i64, bool)> {
    let v = v.filter(|v| !v.is_null())?;
    if let Some(n) = v.as_i64() {
        if n < 0 {
            causes.push(invalid(field, v, "must be greater than or equal to 0"));
            return None;
        }
        return Some((n, false));
    }
    let s = v.as_str().unwrap_or("");
    let digits = s.strip_suffix('%').unwrap_or("");
    match digits.parse::<i64>() {
        Ok(n) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            Some((n, true))
        }
        _ => {
            causes.push(invalid(
                field,
                v,
                "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            ));
            None
        }
    }
}

/// `maxUnavailable`/`maxSurge` of a rolling update at `base`.
fn validate_rolling_update(ru: &Value, base: &str, causes: &mut Vec<FieldCause>) {
    let unavailable_field = format!("{base}.maxUnavailable");
    let surge_field = format!("{base}.maxSurge");
    let unavailable = int_or_percent(ru.get("maxUnavailable"), &unavailable_field, causes);
    let surge = int_or_percent(ru.get("maxSurge"), &surge_field, causes);
    if let Some((n, true)) = unavailable
        && n > 100
    {
        causes.push(invalid(
            unavailable_field.clone(),
            ru.get("maxUnavailable").unwrap_or(&Value::Null),
            "must not be greater than 100%",
        ));
    }
    if unavailable.is_some_and(|(n, _)| n == 0) && surge.is_none_or(|(n, _)| n == 0) {
        causes.push(invalid(
            unavailable_field,
            ru.get("maxUnavailable").unwrap_or(&Value::Null),
            "may not be 0 when `maxSurge` is 0",
        ));
    }
}

fn validate_deployment_strategy(spec: &Value, causes: &mut Vec<FieldCause>) {
    let Some(strategy) = spec.get("strategy").filter(|v| v.is_object()) else {
        return;
    };
    let ru = strategy.get("rollingUpdate").filter(|v| !v.is_null());
    match strategy.get("type").and_then(Value::as_str).unwrap_or("") {
        "Recreate" => {
            if ru.is_some() {
                causes.push(FieldCause::forbidden(
                    "spec.strategy.rollingUpdate",
                    "Forbidden: may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => match ru {
            Some(ru) => validate_rolling_update(ru, "spec.strategy.rollingUpdate", causes),
            None => causes.push(FieldCause::new(
                "FieldValueRequired",
                "spec.strategy.rollingUpdate",
                "Required value: this should be defaulted and never be nil",
            )),
        },
        _ => causes.push(not_supported(
            "spec.strategy.type",
            strategy.get("type").unwrap_or(&Value::Null),
            &["Recreate", "RollingUpdate"],
        )),
    }
}

fn validate_daemon_set_strategy(spec: &Value, causes: &mut Vec<FieldCause>) {
    let Some(strategy) = spec.get("updateStrategy").filter(|v| v.is_object()) else {
        return;
    };
    match strategy.get("type").and_then(Value::as_str).unwrap_or("") {
        "OnDelete" => {}
        "RollingUpdate" => {
            if let Some(ru) = strategy.get("rollingUpdate").filter(|v| !v.is_null()) {
                validate_rolling_update(ru, "spec.updateStrategy.rollingUpdate", causes);
            }
        }
        _ => causes.push(not_supported(
            "spec.updateStrategy.type",
            strategy.get("type").unwrap_or(&Value::Null),
            &["OnDelete", "RollingUpdate"],
        )),
    }
}

/// Deployments, ReplicaSets and DaemonSets (`ValidateDeploymentSpec`,
/// `ValidateReplicaSetSpec`, `ValidateDaemonSetSpec`): counts, strategy,
/// the selector and the pod template, whose spec follows the pod rules with
/// paths under `spec.template.spec`.
fn validate_workload(kind: &str, obj: &Value, causes: &mut Vec<FieldCause>) {
    let empty = Value::Object(Map::new());
    let spec = obj.get("spec").filter(|s| s.is_object()).unwrap_or(&empty);
    if kind != "DaemonSet" {
        non_negative(spec, "replicas", "spec.replicas", causes);
    }
    non_negative(spec, "minReadySeconds", "spec.minReadySeconds", causes);
    if kind != "ReplicaSet" {
        non_negative(
            spec,
            "revisionHistoryLimit",
            "spec.revisionHistoryLimit",
            causes,
        );
    }
    match kind {
        "Deployment" => {
            validate_deployment_strategy(spec, causes);
            if let Some(p) = spec.get("progressDeadlineSeconds").and_then(Value::as_i64) {
                let min_ready = spec
                    .get("minReadySeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if p < 0 {
                    non_negative(
                        spec,
                        "progressDeadlineSeconds",
                        "spec.progressDeadlineSeconds",
                        causes,
                    );
                } else if p <= min_ready {
                    causes.push(invalid(
                        "spec.progressDeadlineSeconds",
                        &Value::from(p),
                        "must be greater than minReadySeconds",
                    ));
                }
            }
        }
        "DaemonSet" => validate_daemon_set_strategy(spec, causes),
        _ => {}
    }
    let selector = workload_selector(kind, spec, causes);
    let pod_spec = validate_pod_template(spec, selector.as_ref(), causes);
    if let Some(p) = pod_spec.get("restartPolicy").filter(|v| !v.is_null())
        && p.as_str() != Some("Always")
    {
        causes.push(not_supported(
            "spec.template.spec.restartPolicy",
            p,
            &["Always"],
        ));
    }
    if pod_spec
        .get("activeDeadlineSeconds")
        .is_some_and(|v| !v.is_null())
    {
        let v = &pod_spec["activeDeadlineSeconds"];
        causes.push(if kind == "DaemonSet" {
            invalid(
                "spec.template.spec.activeDeadlineSeconds",
                v,
                "activeDeadlineSeconds must be nil for daemon set",
            )
        } else {
            FieldCause::forbidden(
                "spec.template.spec.activeDeadlineSeconds",
                "Forbidden: activeDeadlineSeconds in ReplicaSet is not Supported",
            )
        });
    }
}

/// The pod template at `spec.template` of a workload: its label syntax, the
/// selector matching its labels, and the pod rules with paths under
/// `spec.template.spec` — all but the restart policy, which each kind
/// restricts its own way. Returns the template's pod spec.
fn validate_pod_template(
    spec: &Value,
    selector: Option<&crate::selector::LabelSelector>,
    causes: &mut Vec<FieldCause>,
) -> Value {
    let empty = Value::Object(Map::new());
    let template = spec
        .get("template")
        .filter(|t| t.is_object())
        .unwrap_or(&empty);
    let labels = template.pointer("/metadata/labels");
    if let Some(m) = labels.and_then(Value::as_object) {
        for (k, v) in m {
            for msg in names::qualified_name_errors(k) {
                causes.push(invalid(
                    "spec.template.metadata.labels",
                    &Value::from(k.as_str()),
                    &msg,
                ));
            }
            if let Some(v) = v.as_str() {
                for msg in names::label_value_errors(v) {
                    causes.push(invalid(
                        "spec.template.metadata.labels",
                        &Value::from(v),
                        &msg,
                    ));
                }
            }
        }
    }
    if let Some(sel) = selector
        && !sel.matches(&crate::selector::labels_of(template))
    {
        causes.push(FieldCause::invalid(
            "spec.template.metadata.labels",
            format!(
                "Invalid value: {}: `selector` does not match template `labels`",
                go_string_map(labels)
            ),
        ));
    }
    // The template's spec is a pod spec: reuse the pod rules, moving their
    // paths under spec.template.
    let pod = serde_json::json!({ "spec": template.get("spec").cloned().unwrap_or_else(|| Value::Object(Map::new())) });
    let mut pod_causes = Vec::new();
    validate_pod(&pod, &mut pod_causes);
    for mut c in pod_causes {
        if c.field == "spec.restartPolicy" {
            continue;
        }
        c.field = format!("spec.template.{}", c.field);
        causes.push(c);
    }
    pod["spec"].clone()
}

const JOB_RESTART_POLICIES: &[&str] = &["OnFailure", "Never"];

/// batch/v1 `ValidateJob`: counts, completion mode, the selector (generated
/// from the uid unless `manualSelector`) and the pod template, whose pods
/// must not restart `Always`.
fn validate_job(obj: &Value, causes: &mut Vec<FieldCause>) {
    let empty = Value::Object(Map::new());
    let spec = obj.get("spec").filter(|s| s.is_object()).unwrap_or(&empty);
    for key in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        non_negative(spec, key, &format!("spec.{key}"), causes);
    }
    match spec.get("completionMode") {
        None | Some(Value::Null) => {}
        Some(m) if m.as_str() == Some("NonIndexed") => {}
        // Indexed Jobs are valid in Kubernetes, but this controller does not
        // run them: refusing beats running them wrong.
        Some(m) => causes.push(not_supported("spec.completionMode", m, &["NonIndexed"])),
    }
    let selector = workload_selector("Job", spec, causes);
    let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty());
    if !manual && let (Some(uid), Some(sel)) = (uid, selector.as_ref()) {
        let expected: std::collections::BTreeMap<String, String> = [
            (JOB_CONTROLLER_UID_LABEL.to_string(), uid.to_string()),
            (LEGACY_JOB_CONTROLLER_UID_LABEL.to_string(), uid.to_string()),
        ]
        .into();
        if !sel.matches(&expected) {
            causes.push(FieldCause::invalid(
                "spec.selector",
                format!(
                    "Invalid value: {}: `selector` not auto-generated",
                    go_selector(spec.get("selector").unwrap_or(&Value::Null))
                ),
            ));
        }
    }
    let pod_spec = validate_pod_template(spec, selector.as_ref(), causes);
    match pod_spec.get("restartPolicy") {
        Some(p)
            if p.as_str()
                .is_some_and(|p| JOB_RESTART_POLICIES.contains(&p)) => {}
        p => causes.push(not_supported(
            "spec.template.spec.restartPolicy",
            p.unwrap_or(&Value::from("")),
            JOB_RESTART_POLICIES,
        )),
    }
}

const POD_UPDATE_FORBIDDEN: &str = "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Validates what an update may change (on top of [`validate`] of the new
/// object).
pub fn validate_update(kind: &str, old: &Value, new: &Value) -> Vec<FieldCause> {
    let mut causes = Vec::new();
    for key in ["name", "namespace"] {
        let o = old
            .pointer(&format!("/metadata/{key}"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let n = new
            .pointer(&format!("/metadata/{key}"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if o != n {
            causes.push(invalid(
                format!("metadata.{key}"),
                &Value::from(n),
                "field is immutable",
            ));
        }
    }
    match kind {
        "Pod" => {
            if let Some(c) = pod_spec_update_cause(old.get("spec"), new.get("spec")) {
                causes.push(c);
            }
        }
        "ConfigMap" | "Secret" => immutable_data_update(kind, old, new, &mut causes),
        // apps/v1 selectors are immutable: changing one would orphan the
        // pods the old one selected.
        "Deployment" | "ReplicaSet" | "DaemonSet" | "Job" => {
            let o = normalized_selector(old.pointer("/spec/selector"));
            let n = normalized_selector(new.pointer("/spec/selector"));
            if o != n {
                causes.push(FieldCause::invalid(
                    "spec.selector",
                    format!("Invalid value: {}: field is immutable", go_selector(&n)),
                ));
            }
            if kind == "Job" {
                job_spec_update(old, new, &mut causes);
            }
        }
        "Service" => service::validate_service_update(old, new, &mut causes),
        "EndpointSlice" => service::validate_endpoint_slice_update(old, new, &mut causes),
        k if rbac::is_rbac_kind(k) => rbac::validate_update(k, old, new, &mut causes),
        _ => {}
    }
    causes
}

/// What a Job update may not change besides its selector: the template,
/// completions and the completion mode (`ValidateJobSpecUpdate`).
/// Parallelism, suspend, the deadline, the backoff limit and the TTL stay
/// mutable.
fn job_spec_update(old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
    for key in ["completions", "completionMode", "template"] {
        let pointer = format!("/spec/{key}");
        let (o, n) = (old.pointer(&pointer), new.pointer(&pointer));
        if o.filter(|v| !v.is_null()) != n.filter(|v| !v.is_null()) {
            let shown = n.map(short).unwrap_or_else(|| "null".into());
            causes.push(FieldCause::invalid(
                format!("spec.{key}"),
                format!("Invalid value: {shown}: field is immutable"),
            ));
        }
    }
}

/// A label selector with empty maps and lists dropped, for the semantic
/// comparison Kubernetes makes (`matchLabels: {}` equals no `matchLabels`).
fn normalized_selector(sel: Option<&Value>) -> Value {
    let mut out = Map::new();
    if let Some(o) = sel.and_then(Value::as_object) {
        for (k, v) in o {
            let empty = match v {
                Value::Null => true,
                Value::Object(m) => m.is_empty(),
                Value::Array(a) => a.is_empty(),
                _ => false,
            };
            if !empty {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// The pod spec with everything an update may change made equal to `old`'s,
/// so any remaining difference is forbidden.
fn pod_spec_update_cause(old: Option<&Value>, new: Option<&Value>) -> Option<FieldCause> {
    let old = old.cloned().unwrap_or(Value::Null);
    let mut masked = new.cloned().unwrap_or(Value::Null);
    if let (Some(o), Some(m)) = (old.as_object(), masked.as_object_mut()) {
        for list in ["containers", "initContainers"] {
            let old_list = o.get(list).and_then(Value::as_array);
            if let (Some(old_list), Some(new_list)) =
                (old_list, m.get_mut(list).and_then(Value::as_array_mut))
                && old_list.len() == new_list.len()
            {
                for (n, o) in new_list.iter_mut().zip(old_list) {
                    if let (Some(n), Some(img)) = (n.as_object_mut(), o.get("image")) {
                        n.insert("image".into(), img.clone());
                    }
                }
            }
        }
        // activeDeadlineSeconds may be set or lowered, never removed or raised.
        let old_deadline = o.get("activeDeadlineSeconds").and_then(Value::as_i64);
        let new_deadline = m.get("activeDeadlineSeconds").and_then(Value::as_i64);
        let deadline_ok = match (old_deadline, new_deadline) {
            (None, _) => true,
            (Some(a), Some(b)) => b <= a,
            (Some(_), None) => false,
        };
        if deadline_ok {
            copy_key(o, m, "activeDeadlineSeconds");
        }
        // Tolerations may only be added to.
        let old_tol = array_of(&old, "tolerations");
        let new_tol = m
            .get("tolerations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if old_tol.iter().all(|t| new_tol.contains(t)) {
            copy_key(o, m, "tolerations");
        }
        // The scheduler's binding sets nodeName once.
        let old_node = o.get("nodeName").and_then(Value::as_str).unwrap_or("");
        if old_node.is_empty() {
            copy_key(o, m, "nodeName");
        }
        // A negative grace period may be raised to 1.
        let old_grace = o
            .get("terminationGracePeriodSeconds")
            .and_then(Value::as_i64);
        let new_grace = m
            .get("terminationGracePeriodSeconds")
            .and_then(Value::as_i64);
        if old_grace.is_some_and(|g| g < 0) && new_grace == Some(1) {
            copy_key(o, m, "terminationGracePeriodSeconds");
        }
    }
    if masked == old {
        None
    } else {
        Some(FieldCause::forbidden("spec", POD_UPDATE_FORBIDDEN))
    }
}

/// Makes `to[key]` what `from[key]` is (present or absent).
fn copy_key(from: &Map<String, Value>, to: &mut Map<String, Value>, key: &str) {
    match from.get(key) {
        Some(v) => {
            to.insert(key.to_string(), v.clone());
        }
        None => {
            to.remove(key);
        }
    }
}

fn immutable_data_update(kind: &str, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
    let was_immutable = old
        .get("immutable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if was_immutable {
        if new.get("immutable").and_then(Value::as_bool) != Some(true) {
            causes.push(FieldCause::forbidden(
                "immutable",
                "Forbidden: field is immutable when `immutable` is set",
            ));
        }
        let maps: &[&str] = if kind == "Secret" {
            &["data"]
        } else {
            &["data", "binaryData"]
        };
        for m in maps {
            if old.get(*m) != new.get(*m) {
                causes.push(FieldCause::forbidden(
                    *m,
                    "Forbidden: field is immutable when `immutable` is set",
                ));
            }
        }
    }
    if kind == "Secret" {
        let o = str_of(old, "type").unwrap_or("Opaque");
        let n = str_of(new, "type").unwrap_or("Opaque");
        if o != n {
            causes.push(invalid("type", &Value::from(n), "field is immutable"));
        }
    }
}

/// Paths (`spec.containers[0].imagee`) of fields the typed schema of `kind`
/// does not know: the keys the k8s-openapi type's decode skips. Null values
/// are not reported: the types read them as absent. Empty when the object
/// does not decode (see [`validate`]) or the kind has no schema here.
pub fn unknown_fields(kind: &str, obj: &Value) -> Vec<String> {
    let mut skipped = Vec::new();
    let Some(Ok(())) = typed_decode(kind, obj, Some(&mut skipped)) else {
        return Vec::new();
    };
    skipped
        .iter()
        .filter(|path| !value_at_segments(obj, path).is_some_and(Value::is_null))
        .map(|path| display_path(path))
        .collect()
}

/// Whether objects of `kind` own dependents that the garbage collector
/// tracks (Deployments own ReplicaSets, ReplicaSets, DaemonSets and Jobs own Pods), so that an
/// Orphan or Foreground deletion of one needs the collector's finalizer.
pub fn owns_dependents(kind: &str) -> bool {
    matches!(kind, "Deployment" | "ReplicaSet" | "DaemonSet" | "Job")
}

/// Whether `kind` has a `status` subresource.
pub fn has_status_subresource(kind: &str) -> bool {
    resources::by_kind_name(kind).is_some_and(|r| r.subresource("status").is_some())
}

/// The object a main-resource update stores: `new`, except that kinds with a
/// status subresource keep `old`'s status (status is written through
/// `/status` only), and a Service keeps the ClusterIP and node ports it was
/// allocated when the writer left them out.
pub fn prepare_update(kind: &str, old: &Value, new: &Value) -> Value {
    let mut out = new.clone();
    if kind == "Service" {
        service::carry_allocated_values(old, &mut out);
    }
    if has_status_subresource(kind)
        && let Some(o) = out.as_object_mut()
    {
        match old.get("status") {
            Some(s) => {
                o.insert("status".into(), s.clone());
            }
            None => {
                o.remove("status");
            }
        }
    }
    out
}

/// The object a status update stores: `old` with `new`'s status. Metadata
/// stays `old`'s (labels, annotations, finalizers, owners), except the
/// `resourceVersion` the writer sent, which is its precondition, and, for
/// the apps workloads, the annotations.
pub fn prepare_status_update(kind: &str, old: &Value, new: &Value) -> Value {
    let mut out = old.clone();
    if let Some(o) = out.as_object_mut() {
        // The apps status strategies keep only the spec (and labels): their
        // controllers record annotations such as
        // `deployment.kubernetes.io/revision` with the status, which must not
        // bump the generation as a main-resource write would.
        if matches!(kind, "Deployment" | "ReplicaSet" | "DaemonSet")
            && let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut)
        {
            match new.pointer("/metadata/annotations") {
                Some(a) if !a.is_null() => {
                    meta.insert("annotations".into(), a.clone());
                }
                _ => {
                    meta.remove("annotations");
                }
            }
        }
        match new.get("status") {
            Some(s) => {
                o.insert("status".into(), s.clone());
            }
            None => {
                o.remove("status");
            }
        }
        if let Some(rv) = new
            .pointer("/metadata/resourceVersion")
            .filter(|v| v.is_string())
            && let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.insert("resourceVersion".into(), rv.clone());
        }
    }
    out
}

/// Whether anything but `metadata`, `status`, `apiVersion` and `kind`
/// changed: what bumps `metadata.generation`. Deployments also count
/// annotation changes, as Kubernetes' deployment strategy does, because the
/// controller copies annotations to the ReplicaSets.
pub fn spec_changed(kind: &str, old: &Value, new: &Value) -> bool {
    if kind == "Deployment" {
        let annotations = |v: &Value| {
            v.pointer("/metadata/annotations")
                .and_then(Value::as_object)
                .filter(|m| !m.is_empty())
                .cloned()
        };
        if annotations(old) != annotations(new) {
            return true;
        }
    }
    let strip = |v: &Value| -> Map<String, Value> {
        let mut m = v.as_object().cloned().unwrap_or_default();
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
        m
    };
    strip(old) != strip(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "web", "image": "hello:v1", "ports": [{"containerPort": 80}]}]},
        })
    }

    fn defaulted_pod() -> Value {
        let mut p = pod();
        defaults("Pod", &mut p);
        p
    }

    #[test]
    fn pod_defaults_match_kubernetes() {
        let p = defaulted_pod();
        let spec = &p["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["enableServiceLinks"], true);
        assert_eq!(spec["priority"], 0);
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn latest_or_untagged_images_are_always_pulled() {
        assert_eq!(default_pull_policy("hello"), "Always");
        assert_eq!(default_pull_policy("hello:latest"), "Always");
        assert_eq!(default_pull_policy("hello:v1"), "IfNotPresent");
        assert_eq!(
            default_pull_policy(
                "hello@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
            ),
            "IfNotPresent"
        );
    }

    #[test]
    fn defaults_never_override_what_the_user_set() {
        let mut p = pod();
        p["spec"]["restartPolicy"] = json!("Never");
        p["spec"]["containers"][0]["imagePullPolicy"] = json!("Never");
        defaults("Pod", &mut p);
        assert_eq!(p["spec"]["restartPolicy"], "Never");
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Never");
        let again = {
            let mut q = p.clone();
            defaults("Pod", &mut q);
            q
        };
        assert_eq!(again, p, "defaulting is idempotent");
    }

    #[test]
    fn namespace_and_secret_defaults() {
        let mut ns = json!({"metadata": {"name": "x"}});
        defaults("Namespace", &mut ns);
        assert_eq!(ns["status"]["phase"], "Active");
        let mut s = json!({"metadata": {"name": "x"}});
        defaults("Secret", &mut s);
        assert_eq!(s["type"], "Opaque");
        let mut s = json!({"metadata": {"name": "x"}, "data": {"a": "eA==", "b": "eQ=="}, "stringData": {"b": "hello", "c": ""}});
        defaults("Secret", &mut s);
        assert_eq!(
            s["data"],
            json!({"a": "eA==", "b": "aGVsbG8=", "c": ""}),
            "stringData folds into data"
        );
        assert!(s.get("stringData").is_none());
        assert_eq!(base64_encode(b"ab"), "YWI=");
        assert_eq!(base64_encode(b"abc"), "YWJj");
        assert_eq!(base64_encode(b"a"), "YQ==");
        let mut s = json!({"metadata": {"name": "x"}, "type": "kubernetes.io/tls"});
        defaults("Secret", &mut s);
        assert_eq!(s["type"], "kubernetes.io/tls");
    }

    #[test]
    fn a_valid_pod_has_no_causes() {
        assert_eq!(validate("Pod", &defaulted_pod()), vec![]);
    }

    #[test]
    fn pod_without_containers_is_invalid() {
        let mut p = pod();
        p["spec"]["containers"] = json!([]);
        assert_eq!(
            validate("Pod", &p),
            vec![FieldCause::required("spec.containers")]
        );
    }

    #[test]
    fn container_names_must_be_unique_labels_and_images_present() {
        let mut p = pod();
        p["spec"]["containers"] = json!([
            {"name": "web", "image": "a"},
            {"name": "web", "image": ""},
            {"name": "Bad_Name", "image": "a"},
        ]);
        let causes = validate("Pod", &p);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.containers[1].name",
                "spec.containers[1].image",
                "spec.containers[2].name"
            ]
        );
        assert_eq!(causes[0].reason, "FieldValueDuplicate");
        assert_eq!(causes[0].message, "Duplicate value: \"web\"");
        assert_eq!(causes[1].message, "Required value");
    }

    #[test]
    fn restart_policy_must_be_supported() {
        let mut p = pod();
        p["spec"]["restartPolicy"] = json!("Sometimes");
        let causes = validate("Pod", &p);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].reason, "FieldValueNotSupported");
        assert_eq!(
            causes[0].message,
            "Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
        );
    }

    #[test]
    fn container_ports_must_be_in_range() {
        let mut p = pod();
        p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 0}, {"containerPort": 70000}, {"containerPort": 8080, "protocol": "HTTP"}]);
        let causes = validate("Pod", &p);
        assert_eq!(causes.len(), 3);
        assert_eq!(
            causes[0].message,
            "Invalid value: 0: must be between 1 and 65535, inclusive"
        );
        assert_eq!(causes[2].field, "spec.containers[0].ports[2].protocol");
    }

    #[test]
    fn volume_mounts_must_name_a_volume() {
        let mut p = pod();
        p["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "data", "mountPath": "/data"}]);
        let causes = validate("Pod", &p);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].reason, "FieldValueNotFound");
        p["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
        assert_eq!(validate("Pod", &p), vec![]);
    }

    #[test]
    fn values_of_the_wrong_type_are_invalid_with_their_path() {
        let mut p = pod();
        p["spec"]["containers"][0]["ports"][0]["containerPort"] = json!("eighty");
        let causes = validate("Pod", &p);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.containers[0].ports[0].containerPort");
        assert!(
            causes[0]
                .message
                .starts_with("Invalid value: \"eighty\": invalid type"),
            "{}",
            causes[0].message
        );
    }

    #[test]
    fn config_keys_are_checked() {
        let cm = json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"ok.key": "1", "bad key": "2"}});
        let causes = validate("ConfigMap", &cm);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "data[bad key]");
        let s = json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"..x": "eA=="}});
        assert_eq!(validate("Secret", &s).len(), 1);
        let s = json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"x": "not base64!"}});
        assert_eq!(
            validate("Secret", &s).len(),
            1,
            "secret data must be base64"
        );
    }

    #[test]
    fn grace_periods_and_restart_counts_beyond_int32_are_invalid() {
        let mut p = defaulted_pod();
        p["spec"]["terminationGracePeriodSeconds"] = json!(i64::MAX);
        p["spec"]["activeDeadlineSeconds"] = json!(i64::MAX);
        let fields: Vec<String> = validate("Pod", &p).into_iter().map(|c| c.field).collect();
        assert!(
            fields.contains(&"spec.terminationGracePeriodSeconds".to_string()),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"spec.activeDeadlineSeconds".to_string()),
            "{fields:?}"
        );
        let mut p = defaulted_pod();
        p["status"] = json!({"containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": -1}]});
        let fields: Vec<String> = validate("Pod", &p).into_iter().map(|c| c.field).collect();
        assert_eq!(
            fields,
            vec!["status.containerStatuses[0].restartCount".to_string()]
        );
        p["status"]["containerStatuses"][0]["restartCount"] = json!(i64::MAX);
        assert!(!validate("Pod", &p).is_empty());
    }

    #[test]
    fn lease_durations_must_be_positive() {
        let l = json!({"metadata": {"name": "n", "namespace": "kube-node-lease"}, "spec": {"leaseDurationSeconds": 0}});
        assert_eq!(validate("Lease", &l).len(), 1);
    }

    #[test]
    fn unknown_fields_are_reported_with_their_paths() {
        let mut p = pod();
        p["spec"]["containers"][0]["imagee"] = json!("x");
        p["spec"]["bogus"] = json!({"a": 1});
        p["metadata"]["labelz"] = json!({});
        // Unknown but null: read as absent, as the types do.
        p["spec"]["containers"][0]["nothing"] = json!(null);
        p["status"] = json!({"conditions": [{"type": "Ready", "status": "True", "why": "x"}]});
        let mut got = unknown_fields("Pod", &p);
        got.sort();
        assert_eq!(
            got,
            vec![
                "metadata.labelz",
                "spec.bogus",
                "spec.containers[0].imagee",
                "status.conditions[0].why"
            ]
        );
    }

    #[test]
    fn known_fields_with_empty_or_null_values_are_not_unknown() {
        let mut p = defaulted_pod();
        p["metadata"]["labels"] = json!({});
        p["metadata"]["annotations"] = json!(null);
        p["metadata"]["creationTimestamp"] = json!(null);
        p["spec"]["nodeName"] = json!(null);
        p["spec"]["volumes"] = json!([]);
        p["spec"]["containers"][0]["resources"] = json!({});
        p["spec"]["containers"][0]["env"] = json!([{"name": "A", "value": ""}]);
        p["status"] = json!({});
        assert_eq!(unknown_fields("Pod", &p), Vec::<String>::new());
        let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {}, "stringData": {"a": "b"}, "type": "Opaque"});
        assert_eq!(unknown_fields("Secret", &s), Vec::<String>::new());
        let n = json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}, "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}], "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}, "capacity": {"cpu": "2"}}});
        assert_eq!(unknown_fields("Node", &n), Vec::<String>::new());
    }

    #[test]
    fn rich_manifests_have_no_false_unknown_fields() {
        let p = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "uid": "u", "resourceVersion": "5", "generation": 1,
                "creationTimestamp": "2026-01-01T00:00:00Z", "deletionTimestamp": "2026-01-01T00:00:01Z", "deletionGracePeriodSeconds": 30,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u2", "controller": true, "blockOwnerDeletion": true}],
                "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1", "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}],
                "finalizers": ["x/y"], "annotations": {"a": "b"}},
            "spec": {
                "containers": [{"name": "web", "image": "hello:v1", "args": ["--x"], "command": ["/app"],
                    "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}],
                    "env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": 1}},
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5},
                    "livenessProbe": {"tcpSocket": {"port": 80}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}],
                    "securityContext": {"runAsUser": 1000, "capabilities": {"drop": ["ALL"]}}}],
                "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cm", "configMap": {"name": "c", "items": [{"key": "k", "path": "p"}]}}],
                "nodeSelector": {"kubernetes.io/os": "wasip1"},
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "In", "values": ["b"]}]}]}}},
                "readinessGates": [{"conditionType": "x"}],
            },
            "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}], "hostIP": "127.0.0.1", "qosClass": "Burstable",
                "startTime": "2026-01-01T00:00:00Z",
                "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "containerStatuses": [{"name": "web", "image": "hello:v1", "imageID": "sha256:x", "containerID": "wasm://1", "ready": true, "started": true, "restartCount": 1,
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:00Z"}}}]},
        });
        assert_eq!(unknown_fields("Pod", &p), Vec::<String>::new());
        let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default", "uid": "u", "apiVersion": "v1", "fieldPath": "spec.containers{web}"},
            "reason": "Pulled", "message": "m", "type": "Normal", "count": 1, "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
            "eventTime": null, "source": {"component": "kubelet", "host": "n1"}, "reportingComponent": "kubelet", "reportingInstance": "n1"});
        assert_eq!(unknown_fields("Event", &ev), Vec::<String>::new());
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n1", "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40, "renewTime": "2026-01-01T00:00:00.000000Z"}});
        assert_eq!(unknown_fields("Lease", &lease), Vec::<String>::new());
        assert_eq!(
            unknown_fields("Lease", &json!({"spec": {"holder": "x"}})),
            vec!["spec.holder"]
        );
    }

    #[test]
    fn pod_spec_is_immutable_except_images() {
        let old = defaulted_pod();
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("hello:v2");
        new["spec"]["activeDeadlineSeconds"] = json!(30);
        new["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists"}]);
        new["metadata"]["labels"] = json!({"a": "b"});
        assert_eq!(validate_update("Pod", &old, &new), vec![]);
        new["spec"]["restartPolicy"] = json!("Never");
        let causes = validate_update("Pod", &old, &new);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec");
        assert_eq!(causes[0].reason, "FieldValueForbidden");
        assert!(
            causes[0]
                .message
                .contains("pod updates may not change fields other than")
        );
    }

    #[test]
    fn node_name_is_immutable_once_set() {
        let old = defaulted_pod();
        let mut bound = old.clone();
        bound["spec"]["nodeName"] = json!("n1");
        assert_eq!(validate_update("Pod", &old, &bound), vec![]);
        let mut moved = bound.clone();
        moved["spec"]["nodeName"] = json!("n2");
        assert_eq!(validate_update("Pod", &bound, &moved).len(), 1);
    }

    #[test]
    fn tolerations_may_only_be_added() {
        let mut old = defaulted_pod();
        old["spec"]["tolerations"] = json!([{"key": "a", "operator": "Exists"}]);
        let mut new = old.clone();
        new["spec"]["tolerations"] = json!([]);
        assert_eq!(validate_update("Pod", &old, &new).len(), 1);
    }

    #[test]
    fn names_are_immutable() {
        let old = defaulted_pod();
        let mut new = old.clone();
        new["metadata"]["name"] = json!("other");
        assert_eq!(validate_update("Pod", &old, &new)[0].field, "metadata.name");
    }

    #[test]
    fn immutable_config_maps_keep_their_data() {
        let old = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "1"}});
        let mut new = old.clone();
        new["data"]["a"] = json!("2");
        assert_eq!(validate_update("ConfigMap", &old, &new).len(), 1);
        let mut new = old.clone();
        new["immutable"] = json!(false);
        assert_eq!(validate_update("ConfigMap", &old, &new).len(), 1);
        let secret = json!({"metadata": {"name": "s"}, "type": "Opaque"});
        let mut changed = secret.clone();
        changed["type"] = json!("kubernetes.io/tls");
        assert_eq!(validate_update("Secret", &secret, &changed).len(), 1);
    }

    #[test]
    fn main_writes_keep_the_old_status() {
        let mut old = defaulted_pod();
        old["status"] = json!({"phase": "Running"});
        let mut new = old.clone();
        new["status"] = json!({"phase": "Failed"});
        new["spec"]["containers"][0]["image"] = json!("hello:v2");
        let out = prepare_update("Pod", &old, &new);
        assert_eq!(out["status"]["phase"], "Running");
        assert_eq!(out["spec"]["containers"][0]["image"], "hello:v2");
        // ConfigMaps have no status subresource: the write is taken whole.
        let out = prepare_update(
            "ConfigMap",
            &json!({"data": {}}),
            &json!({"data": {"a": "b"}}),
        );
        assert_eq!(out["data"]["a"], "b");
    }

    #[test]
    fn status_writes_take_only_the_status() {
        let mut old = defaulted_pod();
        old["metadata"]["labels"] = json!({"app": "web"});
        old["metadata"]["resourceVersion"] = json!("5");
        let mut new = old.clone();
        new["status"] = json!({"phase": "Running"});
        new["spec"]["restartPolicy"] = json!("Never");
        new["metadata"]["labels"] = json!({"app": "hacked"});
        let out = prepare_status_update("Pod", &old, &new);
        assert_eq!(out["status"]["phase"], "Running");
        assert_eq!(out["spec"]["restartPolicy"], "Always");
        assert_eq!(out["metadata"]["labels"]["app"], "web");
        assert_eq!(out["metadata"]["resourceVersion"], "5");
    }

    #[test]
    fn generation_tracks_only_spec_changes() {
        let old = defaulted_pod();
        let mut new = old.clone();
        new["metadata"]["labels"] = json!({"a": "b"});
        new["status"] = json!({"phase": "Running"});
        assert!(!spec_changed("Pod", &old, &new));
        new["spec"]["containers"][0]["image"] = json!("hello:v2");
        assert!(spec_changed("Pod", &old, &new));
        assert!(spec_changed(
            "ConfigMap",
            &json!({"data": {}}),
            &json!({"data": {"a": "b"}})
        ));
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "hello:v1", "ports": [{"containerPort": 80}]}]},
                },
            },
        })
    }

    fn defaulted_deployment() -> Value {
        let mut d = deployment();
        defaults("Deployment", &mut d);
        d
    }

    #[test]
    fn deployment_defaults_match_kubernetes() {
        let d = defaulted_deployment();
        let spec = &d["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["dnsPolicy"], "ClusterFirst");
        assert_eq!(pod["terminationGracePeriodSeconds"], 30);
        assert_eq!(pod["schedulerName"], "default-scheduler");
        assert_eq!(pod["securityContext"], json!({}));
        // Pod-only defaults stay off templates, as in Kubernetes.
        assert!(pod.get("enableServiceLinks").is_none());
        assert!(pod.get("priority").is_none());
        let c = &pod["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(validate("Deployment", &d), vec![]);
        assert_eq!(unknown_fields("Deployment", &d), Vec::<String>::new());
    }

    #[test]
    fn recreate_deployments_get_no_rolling_update() {
        let mut d = deployment();
        d["spec"]["strategy"] = json!({"type": "Recreate"});
        d["spec"]["replicas"] = json!(0);
        defaults("Deployment", &mut d);
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(d["spec"]["replicas"], 0, "an explicit zero is kept");
        assert_eq!(validate("Deployment", &d), vec![]);
        d["spec"]["strategy"]["rollingUpdate"] = json!({"maxSurge": 1});
        let causes = validate("Deployment", &d);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.strategy.rollingUpdate");
        assert_eq!(causes[0].reason, "FieldValueForbidden");
    }

    #[test]
    fn replica_set_and_daemon_set_defaults() {
        let mut rs = deployment();
        rs["kind"] = json!("ReplicaSet");
        defaults("ReplicaSet", &mut rs);
        assert_eq!(rs["spec"]["replicas"], 1);
        assert!(rs["spec"].get("strategy").is_none());
        assert_eq!(rs["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(validate("ReplicaSet", &rs), vec![]);
        let mut ds = deployment();
        ds["kind"] = json!("DaemonSet");
        defaults("DaemonSet", &mut ds);
        assert!(ds["spec"].get("replicas").is_none());
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(validate("DaemonSet", &ds), vec![]);
    }

    #[test]
    fn selector_must_match_template_labels() {
        let mut d = defaulted_deployment();
        d["spec"]["template"]["metadata"]["labels"] = json!({"app": "other", "x": "y"});
        let causes = validate("Deployment", &d);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
        assert_eq!(
            causes[0].message,
            "Invalid value: map[string]string{\"app\":\"other\", \"x\":\"y\"}: `selector` does not match template `labels`"
        );
        assert_eq!(causes[0].reason, "FieldValueInvalid");
    }

    #[test]
    fn selector_is_required_and_not_empty() {
        let mut d = defaulted_deployment();
        d["spec"].as_object_mut().map(|s| s.remove("selector"));
        assert_eq!(
            validate("Deployment", &d),
            vec![FieldCause::required("spec.selector")]
        );
        d["spec"]["selector"] = json!({});
        let causes = validate("Deployment", &d);
        assert_eq!(causes.len(), 1);
        assert!(
            causes[0]
                .message
                .ends_with("empty selector is invalid for deployment"),
            "{}",
            causes[0].message
        );
        d["spec"]["selector"] =
            json!({"matchExpressions": [{"key": "app", "operator": "Near", "values": ["web"]}]});
        assert_eq!(validate("Deployment", &d)[0].field, "spec.selector");
    }

    #[test]
    fn workload_counts_and_strategy_are_checked() {
        let mut d = defaulted_deployment();
        d["spec"]["replicas"] = json!(-1);
        d["spec"]["strategy"]["rollingUpdate"] = json!({"maxUnavailable": 0, "maxSurge": "0%"});
        d["spec"]["minReadySeconds"] = json!(700);
        let causes = validate("Deployment", &d);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.replicas",
                "spec.strategy.rollingUpdate.maxUnavailable",
                "spec.progressDeadlineSeconds"
            ]
        );
        assert_eq!(
            causes[0].message,
            "Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(
            causes[1].message,
            "Invalid value: 0: may not be 0 when `maxSurge` is 0"
        );
        let mut d = defaulted_deployment();
        d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = json!("150%");
        d["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = json!("lots");
        let causes = validate("Deployment", &d);
        assert_eq!(causes.len(), 2, "{causes:?}");
        let mut d = defaulted_deployment();
        d["spec"]["strategy"]["type"] = json!("BlueGreen");
        assert_eq!(
            validate("Deployment", &d)[0].reason,
            "FieldValueNotSupported"
        );
    }

    #[test]
    fn template_pod_spec_follows_pod_rules_under_its_path() {
        let mut d = defaulted_deployment();
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("");
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        d["spec"]["template"]["spec"]["activeDeadlineSeconds"] = json!(5);
        let causes = validate("Deployment", &d);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.template.spec.containers[0].image",
                "spec.template.spec.restartPolicy",
                "spec.template.spec.activeDeadlineSeconds"
            ]
        );
        assert_eq!(
            causes[1].message,
            "Unsupported value: \"Never\": supported values: \"Always\""
        );
        let mut d = defaulted_deployment();
        d["spec"]["template"]["spec"]["containers"] = json!([]);
        assert_eq!(
            validate("Deployment", &d),
            vec![FieldCause::required("spec.template.spec.containers")]
        );
        let mut d = defaulted_deployment();
        d["spec"]["template"]["spec"]["containers"][0]["imagee"] = json!("x");
        assert_eq!(
            unknown_fields("Deployment", &d),
            vec!["spec.template.spec.containers[0].imagee"]
        );
    }

    #[test]
    fn workload_selectors_are_immutable() {
        let old = defaulted_deployment();
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(5);
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("hello:v2");
        new["spec"]["selector"]["matchExpressions"] = json!([]);
        assert_eq!(validate_update("Deployment", &old, &new), vec![]);
        new["spec"]["selector"] = json!({"matchLabels": {"app": "web2"}});
        let causes = validate_update("Deployment", &old, &new);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.selector");
        assert!(causes[0].message.ends_with("field is immutable"));
        assert_eq!(validate_update("ReplicaSet", &old, &new).len(), 1);
    }

    #[test]
    fn immutable_selector_message_prints_the_go_value() {
        let old = defaulted_deployment();
        let mut new = old.clone();
        new["spec"]["selector"] = json!({"matchLabels": {"run": "x", "app": "y"}});
        assert_eq!(
            validate_update("Deployment", &old, &new)[0].message,
            "Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"y\", \"run\":\"x\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
        );
        new["spec"]["selector"] =
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": ["b", "c"]}]});
        assert_eq!(
            validate_update("Deployment", &old, &new)[0].message,
            "Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:\"a\", Operator:\"In\", Values:[]string{\"b\", \"c\"}}}}: field is immutable"
        );
    }

    #[test]
    fn workload_status_writes_carry_annotations_but_not_labels() {
        let mut old = defaulted_deployment();
        old["metadata"]["labels"] = json!({"app": "web"});
        let mut new = old.clone();
        new["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "1"});
        new["metadata"]["labels"] = json!({"app": "hacked"});
        new["spec"]["replicas"] = json!(9);
        new["status"] = json!({"replicas": 1});
        let out = prepare_status_update("Deployment", &old, &new);
        assert_eq!(
            out["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
            "1"
        );
        assert_eq!(out["metadata"]["labels"]["app"], "web");
        assert_eq!(out["spec"]["replicas"], 1);
        assert_eq!(out["status"]["replicas"], 1);
        // Pods keep the old annotations on a status write.
        let pod_out = prepare_status_update("Pod", &defaulted_pod(), &new);
        assert!(pod_out["metadata"].get("annotations").is_none());
    }

    #[test]
    fn deployment_generation_follows_spec_and_annotations() {
        let old = defaulted_deployment();
        let mut new = old.clone();
        new["metadata"]["labels"] = json!({"a": "b"});
        new["status"] = json!({"replicas": 1});
        assert!(!spec_changed("Deployment", &old, &new));
        new["spec"]["replicas"] = json!(3);
        assert!(spec_changed("Deployment", &old, &new));
        let mut annotated = old.clone();
        annotated["metadata"]["annotations"] = json!({"kubernetes.io/change-cause": "x"});
        assert!(spec_changed("Deployment", &old, &annotated));
        assert!(!spec_changed("ReplicaSet", &old, &annotated));
    }

    fn job() -> Value {
        json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "pi", "namespace": "default"},
            "spec": {
                "template": {
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "hello:v1"}]},
                },
            },
        })
    }

    /// A Job as the server stores it: defaulted, named, with uid and generated selector.
    fn created_job() -> Value {
        let mut j = job();
        defaults("Job", &mut j);
        j["metadata"]["uid"] = json!("u-1");
        prepare_create("Job", &mut j);
        j
    }

    #[test]
    fn job_defaults_match_kubernetes() {
        let j = created_job();
        let spec = &j["spec"];
        assert_eq!(spec["completions"], 1);
        assert_eq!(spec["parallelism"], 1);
        assert_eq!(spec["backoffLimit"], 6);
        assert_eq!(spec["completionMode"], "NonIndexed");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["manualSelector"], false);
        assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(spec["template"]["spec"]["dnsPolicy"], "ClusterFirst");
        assert_eq!(j["status"], json!({}));
        assert_eq!(validate("Job", &j), vec![]);
        assert_eq!(unknown_fields("Job", &j), Vec::<String>::new());
        // Parallelism alone leaves completions unset (a work queue).
        let mut queue = job();
        queue["spec"]["parallelism"] = json!(3);
        defaults("Job", &mut queue);
        assert!(queue["spec"].get("completions").is_none());
        assert_eq!(queue["spec"]["parallelism"], 3);
        // Completions alone: parallelism 1.
        let mut fixed = job();
        fixed["spec"]["completions"] = json!(5);
        defaults("Job", &mut fixed);
        assert_eq!(
            (&fixed["spec"]["completions"], &fixed["spec"]["parallelism"]),
            (&json!(5), &json!(1))
        );
    }

    #[test]
    fn job_selector_and_labels_are_generated_from_the_uid() {
        let j = created_job();
        assert_eq!(
            j["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        let labels = json!({
            "batch.kubernetes.io/controller-uid": "u-1",
            "batch.kubernetes.io/job-name": "pi",
            "controller-uid": "u-1",
            "job-name": "pi",
        });
        assert_eq!(j["spec"]["template"]["metadata"]["labels"], labels);
        assert_eq!(
            j["metadata"]["labels"], labels,
            "the Job takes its pods' labels"
        );
        // A user's own labels stay theirs.
        let mut own = job();
        own["metadata"]["labels"] = json!({"team": "a"});
        own["metadata"]["uid"] = json!("u-2");
        defaults("Job", &mut own);
        prepare_create("Job", &mut own);
        assert_eq!(own["metadata"]["labels"], json!({"team": "a"}));
        // A selector naming another uid is rejected.
        let mut wrong = job();
        wrong["spec"]["selector"] =
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "other"}});
        wrong["metadata"]["uid"] = json!("u-3");
        defaults("Job", &mut wrong);
        prepare_create("Job", &mut wrong);
        let fields: Vec<String> = validate("Job", &wrong)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert!(fields.contains(&"spec.selector".to_string()), "{fields:?}");
        // manualSelector: the user's selector is used as is.
        let mut manual = job();
        manual["spec"]["manualSelector"] = json!(true);
        manual["spec"]["selector"] = json!({"matchLabels": {"app": "pi"}});
        manual["spec"]["template"]["metadata"] = json!({"labels": {"app": "pi"}});
        manual["metadata"]["uid"] = json!("u-4");
        defaults("Job", &mut manual);
        prepare_create("Job", &mut manual);
        assert_eq!(
            manual["spec"]["selector"],
            json!({"matchLabels": {"app": "pi"}})
        );
        assert_eq!(validate("Job", &manual), vec![]);
    }

    #[test]
    fn job_pods_must_not_restart_always() {
        let mut j = job();
        j["spec"]["template"]["spec"]
            .as_object_mut()
            .map(|s| s.remove("restartPolicy"));
        defaults("Job", &mut j);
        j["metadata"]["uid"] = json!("u-1");
        prepare_create("Job", &mut j);
        let causes = validate("Job", &j);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.template.spec.restartPolicy");
        assert_eq!(
            causes[0].message,
            "Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
        );
        let mut on_failure = created_job();
        on_failure["spec"]["template"]["spec"]["restartPolicy"] = json!("OnFailure");
        on_failure["spec"]["template"]["spec"]["activeDeadlineSeconds"] = json!(30);
        assert_eq!(validate("Job", &on_failure), vec![]);
    }

    #[test]
    fn job_counts_must_not_be_negative() {
        let mut j = created_job();
        j["spec"]["backoffLimit"] = json!(-1);
        j["spec"]["parallelism"] = json!(-2);
        j["spec"]["ttlSecondsAfterFinished"] = json!(-3);
        j["spec"]["completionMode"] = json!("Sometimes");
        let fields: Vec<String> = validate("Job", &j).into_iter().map(|c| c.field).collect();
        assert_eq!(
            fields,
            vec![
                "spec.parallelism",
                "spec.backoffLimit",
                "spec.ttlSecondsAfterFinished",
                "spec.completionMode"
            ]
        );
    }

    #[test]
    fn job_template_selector_and_completions_are_immutable() {
        let old = created_job();
        let mut new = old.clone();
        new["spec"]["parallelism"] = json!(4);
        new["spec"]["suspend"] = json!(true);
        new["spec"]["activeDeadlineSeconds"] = json!(60);
        new["spec"]["backoffLimit"] = json!(1);
        new["spec"]["ttlSecondsAfterFinished"] = json!(10);
        assert_eq!(validate_update("Job", &old, &new), vec![]);
        new["spec"]["completions"] = json!(3);
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("hello:v2");
        new["spec"]["selector"] = json!({"matchLabels": {"a": "b"}});
        let fields: Vec<String> = validate_update("Job", &old, &new)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(
            fields,
            vec!["spec.selector", "spec.completions", "spec.template"]
        );
        assert_eq!(
            validate_update("Job", &old, &{
                let mut n = old.clone();
                n["spec"]["completions"] = json!(3);
                n
            })[0]
                .message,
            "Invalid value: 3: field is immutable"
        );
    }

    #[test]
    fn jobs_own_pods_for_the_garbage_collector() {
        assert!(owns_dependents("Job"));
        assert!(has_status_subresource("Job"));
        assert!(!owns_dependents("Pod"));
    }

    #[test]
    fn status_subresource_kinds() {
        assert!(has_status_subresource("Deployment"));
        assert!(has_status_subresource("ReplicaSet"));
        assert!(has_status_subresource("DaemonSet"));
        assert!(has_status_subresource("Pod"));
        assert!(has_status_subresource("Node"));
        assert!(has_status_subresource("Namespace"));
        assert!(!has_status_subresource("ConfigMap"));
        assert!(!has_status_subresource("Nope"));
    }
}
