//! Kubernetes protobuf request bodies, decoded into the JSON the registry
//! already handles.
//!
//! client-go's typed clients write with `Content-Type:
//! application/vnd.kubernetes.protobuf` and have no fallback on 415: kubectl's
//! generators (`create namespace|configmap|secret|deployment|job …`) and
//! drain's DELETE when eviction is not served depend on it. A body is the
//! 4-byte magic `k8s\0` followed by a `runtime.Unknown` envelope whose `raw`
//! holds the object's message. That message is walked field by field with the
//! layout in [`schema`] and written as the JSON the Go types would produce:
//! camelCase names, embedded structs inlined, `Time` as RFC 3339, `[]byte` as
//! base64, quantities and int-or-strings in their string/number forms, and the
//! zero values Go's marshaller always writes for plain fields dropped (pointer
//! fields keep them: `gracePeriodSeconds: 0` means "now", `replicas: 0` means
//! none). Only request bodies are protobuf; answers stay JSON, which every
//! client decodes.

mod schema;

use base64::Engine;
use serde_json::{Map, Number, Value};
use wasmkube_api::status;

use crate::error::ApiError;
use schema::{M, MESSAGES, Ty};

/// The protobuf media type client-go sends.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Bounds recursion on hostile input; real objects nest far less deeply.
const MAX_DEPTH: usize = 48;

/// `time.Time{}` as Unix seconds: Go writes the zero time this way, and its
/// JSON form is `null`, so it is dropped.
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// The kinds accepted as protobuf bodies: (apiVersion, kind, message).
/// DeleteOptions is accepted under any apiVersion, as every group registers it.
/// Must match `ROOTS` in `scripts/gen-protobuf-schema.py`, which generates
/// the layouts of these messages and everything they reach.
const ROOTS: &[(&str, &str, &str)] = &[
    ("v1", "Namespace", "core.v1.Namespace"),
    ("v1", "Pod", "core.v1.Pod"),
    ("v1", "Node", "core.v1.Node"),
    ("v1", "Event", "core.v1.Event"),
    ("v1", "ConfigMap", "core.v1.ConfigMap"),
    ("v1", "Secret", "core.v1.Secret"),
    ("v1", "Binding", "core.v1.Binding"),
    ("coordination.k8s.io/v1", "Lease", "coordination.v1.Lease"),
    ("policy/v1", "Eviction", "policy.v1.Eviction"),
    ("apps/v1", "Deployment", "apps.v1.Deployment"),
    ("apps/v1", "ReplicaSet", "apps.v1.ReplicaSet"),
    ("apps/v1", "DaemonSet", "apps.v1.DaemonSet"),
    ("batch/v1", "Job", "batch.v1.Job"),
    ("v1", "Service", "core.v1.Service"),
    ("v1", "ServiceAccount", "core.v1.ServiceAccount"),
    ("v1", "ResourceQuota", "core.v1.ResourceQuota"),
    ("v1", "LimitRange", "core.v1.LimitRange"),
    (
        "authentication.k8s.io/v1",
        "TokenRequest",
        "authentication.v1.TokenRequest",
    ),
    ("rbac.authorization.k8s.io/v1", "Role", "rbac.v1.Role"),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "rbac.v1.ClusterRole",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "rbac.v1.RoleBinding",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "rbac.v1.ClusterRoleBinding",
    ),
    (
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        "authorization.v1.SelfSubjectAccessReview",
    ),
    (
        "authorization.k8s.io/v1",
        "SelfSubjectRulesReview",
        "authorization.v1.SelfSubjectRulesReview",
    ),
    (
        "authorization.k8s.io/v1",
        "SubjectAccessReview",
        "authorization.v1.SubjectAccessReview",
    ),
    (
        "authorization.k8s.io/v1",
        "LocalSubjectAccessReview",
        "authorization.v1.LocalSubjectAccessReview",
    ),
];

/// Whether a body is a Kubernetes protobuf message. Neither JSON nor YAML can
/// start with these bytes (YAML forbids NUL), so sniffing is unambiguous.
pub fn is_protobuf(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Decodes a protobuf request body into the object's Kubernetes JSON, with
/// `apiVersion` and `kind` from the envelope. Malformed input is a 400;
/// a kind with no protobuf support here is a 415.
pub fn decode_body(bytes: &[u8]) -> Result<Value, ApiError> {
    let Some(body) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return Err(ApiError::bad_request(
            "provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]",
        ));
    };
    let unknown = Unknown::decode(body).map_err(bad_body)?;
    if !unknown.content_encoding.is_empty() {
        return Err(ApiError(status::failure(
            415,
            "UnsupportedMediaType",
            format!(
                "unsupported protobuf content encoding {:?}",
                unknown.content_encoding
            ),
        )));
    }
    let message = root_message(&unknown.api_version, &unknown.kind).ok_or_else(|| {
        ApiError(status::failure(
            415,
            "UnsupportedMediaType",
            format!(
                "protobuf bodies of kind {:?} (apiVersion {:?}) are not supported; send JSON",
                unknown.kind, unknown.api_version
            ),
        ))
    })?;
    let fields = decode_message(message, unknown.raw, 0).map_err(bad_body)?;
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), Value::String(unknown.api_version));
    obj.insert("kind".into(), Value::String(unknown.kind));
    obj.extend(fields);
    Ok(Value::Object(obj))
}

fn bad_body(e: DecodeError) -> ApiError {
    ApiError::bad_request(format!("unable to decode the protobuf body: {}", e.0))
}

fn root_message(api_version: &str, kind: &str) -> Option<&'static str> {
    if kind == "DeleteOptions" {
        return Some("meta.v1.DeleteOptions");
    }
    ROOTS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
        .map(|(_, _, m)| *m)
}

/// Why a body could not be decoded (becomes a 400's message).
#[derive(Debug)]
struct DecodeError(String);

impl DecodeError {
    fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

type DResult<T> = std::result::Result<T, DecodeError>;

/// One field value as it is on the wire.
#[derive(Debug, Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    /// No accepted field is 32-bit; only skipped.
    Fixed32,
}

/// A cursor over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn varint(&mut self) -> DResult<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some((&b, rest)) = self.buf.split_first() else {
                return Err(DecodeError::new("truncated varint"));
            };
            self.buf = rest;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::new("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> DResult<&'a [u8]> {
        if self.buf.len() < n {
            return Err(DecodeError::new("truncated field"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field's tag and value, `None` at the end of the message.
    fn next_field(&mut self) -> DResult<Option<(u32, Wire<'a>)>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3)
            .ok()
            .filter(|t| *t > 0)
            .ok_or_else(|| DecodeError::new(format!("invalid field tag {}", key >> 3)))?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Wire::Fixed64(u64::from_le_bytes(a))
            }
            2 => {
                let n = usize::try_from(self.varint()?)
                    .map_err(|_| DecodeError::new("length out of range"))?;
                Wire::Len(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            w => {
                return Err(DecodeError::new(format!(
                    "unsupported wire type {w} for field {tag}"
                )));
            }
        };
        Ok(Some((tag, wire)))
    }
}

/// `runtime.Unknown` with its `typeMeta` flattened.
struct Unknown<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
}

impl<'a> Unknown<'a> {
    fn decode(buf: &'a [u8]) -> DResult<Self> {
        let mut u = Unknown {
            api_version: String::new(),
            kind: String::new(),
            raw: &[],
            content_encoding: String::new(),
        };
        let mut r = Reader::new(buf);
        while let Some((tag, wire)) = r.next_field()? {
            match (tag, wire) {
                (1, Wire::Len(type_meta)) => {
                    let mut t = Reader::new(type_meta);
                    while let Some((tag, wire)) = t.next_field()? {
                        match (tag, wire) {
                            (1, Wire::Len(b)) => u.api_version = utf8(b)?,
                            (2, Wire::Len(b)) => u.kind = utf8(b)?,
                            _ => {}
                        }
                    }
                }
                (2, Wire::Len(b)) => u.raw = b,
                (3, Wire::Len(b)) => u.content_encoding = utf8(b)?,
                // contentType: always empty (the raw bytes are protobuf).
                (4, Wire::Len(_)) => {}
                (1..=4, _) => {
                    return Err(DecodeError::new(format!(
                        "wrong wire type for envelope field {tag}"
                    )));
                }
                _ => {}
            }
        }
        if u.kind.is_empty() {
            return Err(DecodeError::new("the envelope names no kind"));
        }
        Ok(u)
    }
}

fn utf8(b: &[u8]) -> DResult<String> {
    String::from_utf8(b.to_vec()).map_err(|_| DecodeError::new("a string is not valid UTF-8"))
}

fn lookup(name: &str) -> DResult<&'static M> {
    MESSAGES
        .binary_search_by(|m| m.name.cmp(name))
        .ok()
        .and_then(|i| MESSAGES.get(i))
        .ok_or_else(|| DecodeError::new(format!("no layout for message {name}")))
}

/// Decodes a message with a layout into its JSON fields.
fn decode_message(name: &str, buf: &[u8], depth: usize) -> DResult<Map<String, Value>> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::new("messages nested too deeply"));
    }
    let m = lookup(name)?;
    let mut out = Map::new();
    let mut r = Reader::new(buf);
    while let Some((tag, wire)) = r.next_field()? {
        // Fields this layout does not know come from newer API versions: skip.
        let Some(f) = m.fields.iter().find(|f| f.tag == tag) else {
            continue;
        };
        let wrong = || DecodeError::new(format!("wrong wire type for {}.{}", m.name, f.json));
        match f.ty {
            Ty::MapStr | Ty::MapBytes | Ty::MapMsg(_) => {
                let Wire::Len(entry) = wire else {
                    return Err(wrong());
                };
                let (k, v) = decode_map_entry(f.ty, entry, depth + 1)?;
                let slot = out
                    .entry(f.json)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = slot {
                    map.insert(k, v);
                }
            }
            Ty::Msg(inner) => {
                let Wire::Len(b) = wire else {
                    return Err(wrong());
                };
                if f.inline {
                    out.extend(decode_message(inner, b, depth + 1)?);
                    continue;
                }
                let v = decode_value(inner, b, depth + 1)?;
                if f.rep {
                    push(&mut out, f.json, v.unwrap_or(Value::Null));
                } else if let Some(v) = v {
                    out.insert(f.json.to_string(), v);
                } else {
                    out.remove(f.json);
                }
            }
            ty => {
                if f.rep {
                    for v in repeated_scalars(ty, wire).ok_or_else(wrong)? {
                        push(&mut out, f.json, v?);
                    }
                } else {
                    let v = scalar(ty, wire).ok_or_else(wrong)??;
                    if is_zero(&v) && !f.req && !f.ptr {
                        out.remove(f.json);
                    } else {
                        out.insert(f.json.to_string(), v);
                    }
                }
            }
        }
    }
    Ok(out)
}

fn push(out: &mut Map<String, Value>, key: &str, v: Value) {
    let slot = out.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(items) = slot {
        items.push(v);
    }
}

/// A nested message's JSON: the special apimachinery types by their JSON
/// form, everything else as an object. `None` for values Go writes as null.
fn decode_value(name: &str, buf: &[u8], depth: usize) -> DResult<Option<Value>> {
    match name {
        "meta.v1.Time" => time(buf, false),
        "meta.v1.MicroTime" => time(buf, true),
        "resource.Quantity" => {
            let mut s = None;
            let mut r = Reader::new(buf);
            while let Some((tag, wire)) = r.next_field()? {
                if let (1, Wire::Len(b)) = (tag, wire) {
                    s = Some(utf8(b)?);
                }
            }
            Ok(Some(Value::String(s.unwrap_or_else(|| "0".into()))))
        }
        "intstr.IntOrString" => {
            let (mut ty, mut int_val, mut str_val) = (0u64, 0i64, String::new());
            let mut r = Reader::new(buf);
            while let Some((tag, wire)) = r.next_field()? {
                match (tag, wire) {
                    (1, Wire::Varint(v)) => ty = v,
                    (2, Wire::Varint(v)) => int_val = i64::from(v as i32),
                    (3, Wire::Len(b)) => str_val = utf8(b)?,
                    _ => {}
                }
            }
            Ok(Some(if ty == 1 {
                Value::String(str_val)
            } else {
                Value::Number(int_val.into())
            }))
        }
        "meta.v1.FieldsV1" | "runtime.RawExtension" => {
            let mut raw: &[u8] = &[];
            let mut r = Reader::new(buf);
            while let Some((tag, wire)) = r.next_field()? {
                if let (1, Wire::Len(b)) = (tag, wire) {
                    raw = b;
                }
            }
            if raw.is_empty() {
                return Ok(None);
            }
            serde_json::from_slice(raw)
                .map(Some)
                .map_err(|e| DecodeError::new(format!("embedded JSON in {name}: {e}")))
        }
        _ => decode_message(name, buf, depth).map(|m| Some(Value::Object(m))),
    }
}

/// `metav1.Time` (seconds precision) or `MicroTime` (microseconds), RFC 3339 in UTC.
fn time(buf: &[u8], micro: bool) -> DResult<Option<Value>> {
    let (mut seconds, mut nanos) = (0i64, 0i32);
    let mut r = Reader::new(buf);
    while let Some((tag, wire)) = r.next_field()? {
        match (tag, wire) {
            (1, Wire::Varint(v)) => seconds = v as i64,
            (2, Wire::Varint(v)) => nanos = v as i32,
            _ => {}
        }
    }
    // Go writes an unset time as an empty message or as the zero time.
    if buf.is_empty() || (seconds == GO_ZERO_TIME_SECONDS && nanos == 0) {
        return Ok(None);
    }
    if !(0..1_000_000_000).contains(&nanos) {
        return Err(DecodeError::new(format!(
            "invalid time nanoseconds {nanos}"
        )));
    }
    let ts = jiff::Timestamp::from_second(seconds)
        .map_err(|e| DecodeError::new(format!("invalid time: {e}")))?;
    let base = ts.strftime("%Y-%m-%dT%H:%M:%S");
    Ok(Some(Value::String(if micro {
        format!("{base}.{:06}Z", nanos / 1000)
    } else {
        format!("{base}Z")
    })))
}

/// One `map<string, …>` entry: key at tag 1, value at tag 2.
fn decode_map_entry(ty: Ty, buf: &[u8], depth: usize) -> DResult<(String, Value)> {
    let mut key = String::new();
    let mut value = None;
    let mut r = Reader::new(buf);
    while let Some((tag, wire)) = r.next_field()? {
        match (tag, wire, ty) {
            (1, Wire::Len(b), _) => key = utf8(b)?,
            (2, Wire::Len(b), Ty::MapStr) => value = Some(Value::String(utf8(b)?)),
            (2, Wire::Len(b), Ty::MapBytes) => value = Some(base64_value(b)),
            (2, Wire::Len(b), Ty::MapMsg(inner)) => {
                value = Some(decode_value(inner, b, depth)?.unwrap_or(Value::Null));
            }
            (1 | 2, _, _) => return Err(DecodeError::new("wrong wire type in a map entry")),
            _ => {}
        }
    }
    let value = match (value, ty) {
        (Some(v), _) => v,
        (None, Ty::MapMsg(inner)) => decode_value(inner, &[], depth)?.unwrap_or(Value::Null),
        (None, _) => Value::String(String::new()),
    };
    Ok((key, value))
}

fn base64_value(b: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(b))
}

/// A singular scalar; `None` when the wire type does not fit.
fn scalar(ty: Ty, wire: Wire<'_>) -> Option<DResult<Value>> {
    Some(match (ty, wire) {
        (Ty::Str, Wire::Len(b)) => utf8(b).map(Value::String),
        (Ty::Bytes, Wire::Len(b)) => Ok(base64_value(b)),
        (Ty::Bool, Wire::Varint(v)) => Ok(Value::Bool(v != 0)),
        // int32 is sign-extended to 64 bits on the wire; truncation restores it.
        (Ty::I32, Wire::Varint(v)) => Ok(Value::Number(i64::from(v as i32).into())),
        (Ty::I64, Wire::Varint(v)) => Ok(Value::Number((v as i64).into())),
        (Ty::F64, Wire::Fixed64(v)) => Number::from_f64(f64::from_bits(v))
            .map(Value::Number)
            .ok_or_else(|| DecodeError::new("a double is not a finite number")),
        _ => return None,
    })
}

/// The elements of one occurrence of a repeated scalar: one value, or for
/// numbers possibly a packed run. `None` when the wire type does not fit.
fn repeated_scalars(ty: Ty, wire: Wire<'_>) -> Option<Vec<DResult<Value>>> {
    match (ty, wire) {
        (Ty::I32 | Ty::I64 | Ty::Bool, Wire::Len(b)) => {
            let mut r = Reader::new(b);
            let mut out = Vec::new();
            while !r.buf.is_empty() {
                match r.varint() {
                    Ok(v) => out.push(scalar(ty, Wire::Varint(v))?),
                    Err(e) => {
                        out.push(Err(e));
                        break;
                    }
                }
            }
            Some(out)
        }
        (Ty::F64, Wire::Len(b)) => {
            if b.len() % 8 != 0 {
                return Some(vec![Err(DecodeError::new("truncated packed doubles"))]);
            }
            b.chunks_exact(8)
                .map(|c| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(c);
                    scalar(ty, Wire::Fixed64(u64::from_le_bytes(a)))
                })
                .collect()
        }
        _ => scalar(ty, wire).map(|v| vec![v]),
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::api::apps::v1 as pb_apps;
    use k8s_pb::api::batch::v1 as pb_batch;
    use k8s_pb::api::coordination::v1 as pb_coord;
    use k8s_pb::api::core::v1 as pb;
    use k8s_pb::apimachinery::pkg::api::resource::Quantity;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb_meta;
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown as PbUnknown};
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
    use prost::Message;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let u = PbUnknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut out = MAGIC.to_vec();
        out.extend(u.encode_to_vec());
        out
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    fn meta(name: &str) -> pb_meta::ObjectMeta {
        pb_meta::ObjectMeta {
            name: s(name),
            ..Default::default()
        }
    }

    fn decode(bytes: &[u8]) -> Value {
        match decode_body(bytes) {
            Ok(v) => v,
            Err(e) => panic!("decode failed: {:?}", e.0),
        }
    }

    fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> T {
        match serde_json::from_value(v.clone()) {
            Ok(t) => t,
            Err(e) => panic!("not a valid k8s-openapi object: {e}: {v}"),
        }
    }

    /// What Go's gogo marshaller writes for an ObjectMeta with only a name:
    /// every plain field, zero or not, and the zero creation time.
    fn go_style_meta(name: &str) -> pb_meta::ObjectMeta {
        pb_meta::ObjectMeta {
            name: s(name),
            generate_name: s(""),
            namespace: s(""),
            self_link: s(""),
            uid: s(""),
            resource_version: s(""),
            generation: Some(0),
            creation_timestamp: Some(pb_meta::Time {
                seconds: Some(GO_ZERO_TIME_SECONDS),
                nanos: Some(0),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn namespace_as_kubectl_sends_it() {
        let ns = pb::Namespace {
            metadata: Some(go_style_meta("demo")),
            spec: Some(pb::NamespaceSpec::default()),
            status: Some(pb::NamespaceStatus {
                phase: s(""),
                conditions: vec![],
            }),
        };
        let v = decode(&envelope("v1", "Namespace", ns.encode_to_vec()));
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"},
                   "spec": {}, "status": {}})
        );
        let _: k8s_openapi::api::core::v1::Namespace = typed(&v);
    }

    #[test]
    fn configmap_data_and_binary_data() {
        let cm = pb::ConfigMap {
            metadata: Some(pb_meta::ObjectMeta {
                labels: BTreeMap::from([("app".into(), "web".into())]),
                namespace: s("default"),
                ..meta("cfg")
            }),
            data: BTreeMap::from([("a".into(), "b".into()), ("empty".into(), String::new())]),
            binary_data: BTreeMap::from([("bin".into(), vec![0u8, 1, 2, 255])]),
            immutable: None,
        };
        let v = decode(&envelope("v1", "ConfigMap", cm.encode_to_vec()));
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "cfg", "namespace": "default", "labels": {"app": "web"}},
                   "data": {"a": "b", "empty": ""}, "binaryData": {"bin": "AAEC/w=="}})
        );
        let cm: k8s_openapi::api::core::v1::ConfigMap = typed(&v);
        assert_eq!(
            cm.binary_data
                .and_then(|b| b.get("bin").map(|b| b.0.clone())),
            Some(vec![0u8, 1, 2, 255])
        );
    }

    #[test]
    fn secret_bytes_are_base64_and_immutable_false_is_kept() {
        let secret = pb::Secret {
            metadata: Some(meta("creds")),
            data: BTreeMap::from([("password".into(), b"s3cr3t".to_vec())]),
            string_data: BTreeMap::new(),
            r#type: s("Opaque"),
            immutable: Some(false),
        };
        let v = decode(&envelope("v1", "Secret", secret.encode_to_vec()));
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
                   "data": {"password": "czNjcjN0"}, "type": "Opaque", "immutable": false})
        );
        let _: k8s_openapi::api::core::v1::Secret = typed(&v);
    }

    #[test]
    fn pod_spec_with_inlined_structs_quantities_and_pointers() {
        let container = pb::Container {
            name: s("app"),
            image: s("hello:v1"),
            command: vec!["/app".into()],
            args: vec!["--port".into(), "8080".into()],
            env: vec![
                pb::EnvVar {
                    name: s("MODE"),
                    value: s("prod"),
                    value_from: None,
                },
                pb::EnvVar {
                    name: s("KEY"),
                    value: s(""),
                    value_from: Some(pb::EnvVarSource {
                        secret_key_ref: Some(pb::SecretKeySelector {
                            local_object_reference: Some(pb::LocalObjectReference {
                                name: s("creds"),
                            }),
                            key: s("password"),
                            optional: Some(false),
                        }),
                        ..Default::default()
                    }),
                },
            ],
            ports: vec![pb::ContainerPort {
                name: s("http"),
                host_port: Some(0),
                container_port: Some(8080),
                protocol: s("TCP"),
                host_ip: s(""),
            }],
            resources: Some(pb::ResourceRequirements {
                limits: BTreeMap::from([("memory".into(), Quantity { string: s("64Mi") })]),
                requests: BTreeMap::from([("cpu".into(), Quantity { string: s("100m") })]),
                claims: vec![],
            }),
            readiness_probe: Some(pb::Probe {
                handler: Some(pb::ProbeHandler {
                    http_get: Some(pb::HttpGetAction {
                        path: s("/healthz"),
                        port: Some(IntOrString {
                            r#type: Some(1),
                            int_val: Some(0),
                            str_val: s("http"),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                period_seconds: Some(5),
                ..Default::default()
            }),
            volume_mounts: vec![pb::VolumeMount {
                name: s("cfg"),
                mount_path: s("/etc/cfg"),
                read_only: Some(true),
                ..Default::default()
            }],
            security_context: Some(pb::SecurityContext {
                run_as_user: Some(0),
                privileged: Some(false),
                ..Default::default()
            }),
            tty: Some(false),
            ..Default::default()
        };
        let pod = pb::Pod {
            metadata: Some(pb_meta::ObjectMeta {
                namespace: s("default"),
                ..meta("web")
            }),
            spec: Some(pb::PodSpec {
                containers: vec![container],
                volumes: vec![pb::Volume {
                    name: s("cfg"),
                    volume_source: Some(pb::VolumeSource {
                        config_map: Some(pb::ConfigMapVolumeSource {
                            local_object_reference: Some(pb::LocalObjectReference {
                                name: s("cfg"),
                            }),
                            default_mode: Some(0o644),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                }],
                restart_policy: s("Never"),
                node_name: s("node-1"),
                termination_grace_period_seconds: Some(0),
                host_network: Some(false),
                tolerations: vec![pb::Toleration {
                    key: s("k"),
                    operator: s("Exists"),
                    toleration_seconds: Some(30),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(pb::PodStatus::default()),
        };
        let v = decode(&envelope("v1", "Pod", pod.encode_to_vec()));
        assert_eq!(
            v["spec"],
            json!({
                "containers": [{
                    "name": "app", "image": "hello:v1", "command": ["/app"], "args": ["--port", "8080"],
                    "env": [{"name": "MODE", "value": "prod"},
                            {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password", "optional": false}}}],
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "100m"}},
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5},
                    "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg", "readOnly": true}],
                    "securityContext": {"runAsUser": 0, "privileged": false}
                }],
                "volumes": [{"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420}}],
                "restartPolicy": "Never",
                "nodeName": "node-1",
                "terminationGracePeriodSeconds": 0,
                "tolerations": [{"key": "k", "operator": "Exists", "tolerationSeconds": 30}]
            })
        );
        assert_eq!(v["status"], json!({}));
        let pod: k8s_openapi::api::core::v1::Pod = typed(&v);
        let spec = pod.spec.unwrap_or_default();
        assert_eq!(spec.containers.len(), 1);
        assert_eq!(spec.termination_grace_period_seconds, Some(0));
    }

    #[test]
    fn int_or_string_number_form() {
        let probe = pb::Probe {
            handler: Some(pb::ProbeHandler {
                tcp_socket: Some(pb::TcpSocketAction {
                    port: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(8080),
                        str_val: s(""),
                    }),
                    host: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let fields = decode_message("core.v1.Probe", &probe.encode_to_vec(), 0).map_err(|e| e.0);
        assert_eq!(
            fields.map(Value::Object),
            Ok(json!({"tcpSocket": {"port": 8080}}))
        );
    }

    #[test]
    fn delete_options_keep_zero_grace_period() {
        let opts = pb_meta::DeleteOptions {
            grace_period_seconds: Some(0),
            preconditions: Some(pb_meta::Preconditions {
                uid: s("u-1"),
                resource_version: None,
            }),
            propagation_policy: s("Foreground"),
            dry_run: vec!["All".into()],
            ..Default::default()
        };
        let v = decode(&envelope("v1", "DeleteOptions", opts.encode_to_vec()));
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                   "preconditions": {"uid": "u-1"}, "propagationPolicy": "Foreground", "dryRun": ["All"]})
        );
        let _: k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions = typed(&v);
    }

    #[test]
    fn event_times_and_lease_micro_times() {
        let event = pb::Event {
            metadata: Some(pb_meta::ObjectMeta {
                namespace: s("default"),
                ..meta("web.1")
            }),
            involved_object: Some(pb::ObjectReference {
                kind: s("Pod"),
                name: s("web"),
                namespace: s("default"),
                ..Default::default()
            }),
            reason: s("Started"),
            message: s("Started container app"),
            source: Some(pb::EventSource {
                component: s("kubelet"),
                host: s("node-1"),
            }),
            first_timestamp: Some(pb_meta::Time {
                seconds: Some(1_700_000_000),
                nanos: Some(0),
            }),
            last_timestamp: Some(pb_meta::Time {
                seconds: Some(1_700_000_060),
                nanos: Some(0),
            }),
            count: Some(2),
            r#type: s("Normal"),
            event_time: Some(pb_meta::MicroTime {
                seconds: Some(GO_ZERO_TIME_SECONDS),
                nanos: Some(0),
            }),
            ..Default::default()
        };
        let v = decode(&envelope("v1", "Event", event.encode_to_vec()));
        assert_eq!(v["firstTimestamp"], json!("2023-11-14T22:13:20Z"));
        assert_eq!(v["lastTimestamp"], json!("2023-11-14T22:14:20Z"));
        assert_eq!(
            v["source"],
            json!({"component": "kubelet", "host": "node-1"})
        );
        assert_eq!(v["count"], json!(2));
        assert!(v.get("eventTime").is_none(), "{v}");
        let _: k8s_openapi::api::core::v1::Event = typed(&v);

        let lease = pb_coord::Lease {
            metadata: Some(pb_meta::ObjectMeta {
                namespace: s("kube-node-lease"),
                ..meta("node-1")
            }),
            spec: Some(pb_coord::LeaseSpec {
                holder_identity: s("node-1"),
                lease_duration_seconds: Some(40),
                renew_time: Some(pb_meta::MicroTime {
                    seconds: Some(1_700_000_000),
                    nanos: Some(123_456_789),
                }),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        let v = decode(&envelope(
            "coordination.k8s.io/v1",
            "Lease",
            lease.encode_to_vec(),
        ));
        assert_eq!(
            v["spec"],
            json!({"holderIdentity": "node-1", "leaseDurationSeconds": 40,
                   "renewTime": "2023-11-14T22:13:20.123456Z", "leaseTransitions": 0})
        );
        let _: k8s_openapi::api::coordination::v1::Lease = typed(&v);
    }

    #[test]
    fn node_basics() {
        let node = pb::Node {
            metadata: Some(pb_meta::ObjectMeta {
                labels: BTreeMap::from([("kubernetes.io/os".into(), "wasip1".into())]),
                ..meta("node-1")
            }),
            spec: Some(pb::NodeSpec {
                unschedulable: Some(true),
                taints: vec![pb::Taint {
                    key: s("k"),
                    value: s(""),
                    effect: s("NoSchedule"),
                    time_added: None,
                }],
                ..Default::default()
            }),
            status: Some(pb::NodeStatus {
                capacity: BTreeMap::from([("pods".into(), Quantity { string: s("110") })]),
                addresses: vec![pb::NodeAddress {
                    r#type: s("InternalIP"),
                    address: s("127.0.0.1"),
                }],
                daemon_endpoints: Some(pb::NodeDaemonEndpoints {
                    kubelet_endpoint: Some(pb::DaemonEndpoint { port: Some(10250) }),
                }),
                node_info: Some(pb::NodeSystemInfo {
                    kubelet_version: s("v1.33.0"),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let v = decode(&envelope("v1", "Node", node.encode_to_vec()));
        assert_eq!(
            v["spec"],
            json!({"unschedulable": true, "taints": [{"key": "k", "effect": "NoSchedule"}]})
        );
        assert_eq!(v["status"]["capacity"], json!({"pods": "110"}));
        assert_eq!(
            v["status"]["daemonEndpoints"],
            json!({"kubeletEndpoint": {"Port": 10250}})
        );
        assert_eq!(
            v["status"]["addresses"],
            json!([{"type": "InternalIP", "address": "127.0.0.1"}])
        );
        let _: k8s_openapi::api::core::v1::Node = typed(&v);
    }

    fn int_or_string(v: Result<i32, &str>) -> Option<IntOrString> {
        Some(match v {
            Ok(i) => IntOrString {
                r#type: Some(0),
                int_val: Some(i),
                str_val: s(""),
            },
            Err(st) => IntOrString {
                r#type: Some(1),
                int_val: Some(0),
                str_val: s(st),
            },
        })
    }

    /// The pod template kubectl's workload generators build: labels, one
    /// container, and Go's zero values for the plain fields.
    fn go_style_template(labels: &BTreeMap<String, String>, restart: &str) -> pb::PodTemplateSpec {
        pb::PodTemplateSpec {
            metadata: Some(pb_meta::ObjectMeta {
                labels: labels.clone(),
                ..go_style_meta("")
            }),
            spec: Some(pb::PodSpec {
                containers: vec![pb::Container {
                    name: s("hello"),
                    image: s("hello:v1"),
                    working_dir: s(""),
                    ports: vec![pb::ContainerPort {
                        name: s(""),
                        host_port: Some(0),
                        container_port: Some(8080),
                        protocol: s(""),
                        host_ip: s(""),
                    }],
                    resources: Some(pb::ResourceRequirements::default()),
                    termination_message_path: s(""),
                    image_pull_policy: s(""),
                    stdin: Some(false),
                    stdin_once: Some(false),
                    tty: Some(false),
                    ..Default::default()
                }],
                restart_policy: s(restart),
                dns_policy: s(""),
                service_account_name: s(""),
                node_name: s(""),
                host_network: Some(false),
                host_pid: Some(false),
                host_ipc: Some(false),
                hostname: s(""),
                subdomain: s(""),
                scheduler_name: s(""),
                ..Default::default()
            }),
        }
    }

    fn expected_template(restart: Option<&str>) -> Value {
        let mut spec = json!({
            "containers": [{"name": "hello", "image": "hello:v1",
                            "ports": [{"containerPort": 8080}], "resources": {}}]
        });
        if let (Some(r), Value::Object(m)) = (restart, &mut spec) {
            m.insert("restartPolicy".into(), json!(r));
        }
        json!({"metadata": {"labels": {"app": "web"}}, "spec": spec})
    }

    #[test]
    fn deployment_as_kubectl_create_deployment_sends_it() {
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let deploy = pb_apps::Deployment {
            metadata: Some(pb_meta::ObjectMeta {
                labels: labels.clone(),
                ..go_style_meta("web")
            }),
            spec: Some(pb_apps::DeploymentSpec {
                replicas: Some(2),
                selector: Some(pb_meta::LabelSelector {
                    match_labels: labels.clone(),
                    match_expressions: vec![],
                }),
                template: Some(go_style_template(&labels, "")),
                strategy: Some(pb_apps::DeploymentStrategy {
                    r#type: s(""),
                    rolling_update: None,
                }),
                min_ready_seconds: Some(0),
                revision_history_limit: None,
                paused: Some(false),
                progress_deadline_seconds: None,
            }),
            status: Some(pb_apps::DeploymentStatus {
                observed_generation: Some(0),
                replicas: Some(0),
                updated_replicas: Some(0),
                ready_replicas: Some(0),
                available_replicas: Some(0),
                unavailable_replicas: Some(0),
                terminating_replicas: None,
                conditions: vec![],
                collision_count: None,
            }),
        };
        let v = decode(&envelope("apps/v1", "Deployment", deploy.encode_to_vec()));
        assert_eq!(
            v,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "labels": {"app": "web"}},
                   "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                            "template": expected_template(None), "strategy": {}},
                   "status": {}})
        );
        let d: k8s_openapi::api::apps::v1::Deployment = typed(&v);
        let spec = d.spec.unwrap_or_default();
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.selector.match_labels, Some(labels.clone()),);
        assert_eq!(spec.template.metadata.and_then(|m| m.labels), Some(labels));
        let containers = spec.template.spec.map(|s| s.containers).unwrap_or_default();
        assert_eq!(
            containers.first().and_then(|c| c.image.as_deref()),
            Some("hello:v1")
        );
    }

    #[test]
    fn deployment_pointers_strategy_and_status() {
        let deploy = pb_apps::Deployment {
            metadata: Some(meta("web")),
            spec: Some(pb_apps::DeploymentSpec {
                replicas: Some(0),
                selector: Some(pb_meta::LabelSelector {
                    match_labels: BTreeMap::new(),
                    match_expressions: vec![pb_meta::LabelSelectorRequirement {
                        key: s("tier"),
                        operator: s("In"),
                        values: vec!["web".into(), "api".into()],
                    }],
                }),
                strategy: Some(pb_apps::DeploymentStrategy {
                    r#type: s("RollingUpdate"),
                    rolling_update: Some(pb_apps::RollingUpdateDeployment {
                        max_unavailable: int_or_string(Ok(0)),
                        max_surge: int_or_string(Err("25%")),
                    }),
                }),
                min_ready_seconds: Some(5),
                revision_history_limit: Some(0),
                paused: Some(true),
                progress_deadline_seconds: Some(600),
                ..Default::default()
            }),
            status: Some(pb_apps::DeploymentStatus {
                observed_generation: Some(3),
                replicas: Some(0),
                ready_replicas: Some(1),
                terminating_replicas: Some(0),
                conditions: vec![pb_apps::DeploymentCondition {
                    r#type: s("Available"),
                    status: s("True"),
                    last_update_time: Some(pb_meta::Time {
                        seconds: Some(1_700_000_000),
                        nanos: Some(0),
                    }),
                    reason: s("MinimumReplicasAvailable"),
                    ..Default::default()
                }],
                collision_count: Some(0),
                ..Default::default()
            }),
        };
        let v = decode(&envelope("apps/v1", "Deployment", deploy.encode_to_vec()));
        assert_eq!(
            v["spec"],
            json!({"replicas": 0,
                   "selector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}]},
                   "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
                   "minReadySeconds": 5, "revisionHistoryLimit": 0, "paused": true,
                   "progressDeadlineSeconds": 600})
        );
        assert_eq!(
            v["status"],
            json!({"observedGeneration": 3, "readyReplicas": 1, "terminatingReplicas": 0,
                   "conditions": [{"type": "Available", "status": "True",
                                   "lastUpdateTime": "2023-11-14T22:13:20Z",
                                   "reason": "MinimumReplicasAvailable"}],
                   "collisionCount": 0})
        );
        let d: k8s_openapi::api::apps::v1::Deployment = typed(&v);
        let spec = d.spec.unwrap_or_default();
        assert_eq!(spec.replicas, Some(0));
        assert_eq!(spec.revision_history_limit, Some(0));
        let ru = spec
            .strategy
            .and_then(|s| s.rolling_update)
            .unwrap_or_default();
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString as Ios;
        assert_eq!(ru.max_surge, Some(Ios::String("25%".into())));
        assert_eq!(ru.max_unavailable, Some(Ios::Int(0)));
    }

    #[test]
    fn replica_set_and_daemon_set() {
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let selector = Some(pb_meta::LabelSelector {
            match_labels: labels.clone(),
            match_expressions: vec![],
        });
        let rs = pb_apps::ReplicaSet {
            metadata: Some(go_style_meta("web-1")),
            spec: Some(pb_apps::ReplicaSetSpec {
                replicas: Some(3),
                min_ready_seconds: Some(0),
                selector: selector.clone(),
                template: Some(go_style_template(&labels, "Always")),
            }),
            status: Some(pb_apps::ReplicaSetStatus {
                replicas: Some(0),
                fully_labeled_replicas: Some(0),
                ready_replicas: Some(0),
                available_replicas: Some(0),
                terminating_replicas: None,
                observed_generation: Some(0),
                conditions: vec![],
            }),
        };
        let v = decode(&envelope("apps/v1", "ReplicaSet", rs.encode_to_vec()));
        assert_eq!(
            v["spec"],
            json!({"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                   "template": expected_template(Some("Always"))})
        );
        // `replicas` has no omitempty in Go: its zero is written.
        assert_eq!(v["status"], json!({"replicas": 0}));
        let rs: k8s_openapi::api::apps::v1::ReplicaSet = typed(&v);
        assert_eq!(rs.spec.and_then(|s| s.replicas), Some(3));

        let ds = pb_apps::DaemonSet {
            metadata: Some(go_style_meta("agent")),
            spec: Some(pb_apps::DaemonSetSpec {
                selector,
                template: Some(go_style_template(&labels, "Always")),
                update_strategy: Some(pb_apps::DaemonSetUpdateStrategy {
                    r#type: s("RollingUpdate"),
                    rolling_update: Some(pb_apps::RollingUpdateDaemonSet {
                        max_unavailable: int_or_string(Ok(1)),
                        max_surge: int_or_string(Ok(0)),
                    }),
                }),
                min_ready_seconds: Some(0),
                revision_history_limit: Some(0),
            }),
            status: Some(pb_apps::DaemonSetStatus {
                current_number_scheduled: Some(0),
                number_misscheduled: Some(0),
                desired_number_scheduled: Some(0),
                number_ready: Some(0),
                observed_generation: Some(0),
                updated_number_scheduled: Some(0),
                number_available: Some(0),
                number_unavailable: Some(0),
                collision_count: None,
                conditions: vec![],
            }),
        };
        let v = decode(&envelope("apps/v1", "DaemonSet", ds.encode_to_vec()));
        assert_eq!(
            v["spec"],
            json!({"selector": {"matchLabels": {"app": "web"}},
                   "template": expected_template(Some("Always")),
                   "updateStrategy": {"type": "RollingUpdate",
                                      "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
                   "revisionHistoryLimit": 0})
        );
        assert_eq!(
            v["status"],
            json!({"currentNumberScheduled": 0, "numberMisscheduled": 0,
                   "desiredNumberScheduled": 0, "numberReady": 0})
        );
        let ds: k8s_openapi::api::apps::v1::DaemonSet = typed(&v);
        assert_eq!(ds.spec.and_then(|s| s.revision_history_limit), Some(0));
    }

    #[test]
    fn job_as_kubectl_create_job_sends_it() {
        let labels = BTreeMap::new();
        let job = pb_batch::Job {
            metadata: Some(go_style_meta("j")),
            spec: Some(pb_batch::JobSpec {
                template: Some(go_style_template(&labels, "Never")),
                ..Default::default()
            }),
            status: Some(pb_batch::JobStatus {
                active: Some(0),
                succeeded: Some(0),
                failed: Some(0),
                completed_indexes: s(""),
                ..Default::default()
            }),
        };
        let v = decode(&envelope("batch/v1", "Job", job.encode_to_vec()));
        let mut template = expected_template(Some("Never"));
        if let Value::Object(t) = &mut template {
            t.insert("metadata".into(), json!({}));
        }
        assert_eq!(
            v,
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
                   "spec": {"template": template}, "status": {}})
        );
        let job: k8s_openapi::api::batch::v1::Job = typed(&v);
        let spec = job.spec.unwrap_or_default();
        assert_eq!(
            spec.template.spec.and_then(|s| s.restart_policy).as_deref(),
            Some("Never")
        );
    }

    #[test]
    fn job_pointers_policies_and_status() {
        let job = pb_batch::Job {
            metadata: Some(meta("indexed")),
            spec: Some(pb_batch::JobSpec {
                parallelism: Some(0),
                completions: Some(4),
                active_deadline_seconds: Some(0),
                pod_failure_policy: Some(pb_batch::PodFailurePolicy {
                    rules: vec![
                        pb_batch::PodFailurePolicyRule {
                            action: s("FailJob"),
                            on_exit_codes: Some(pb_batch::PodFailurePolicyOnExitCodesRequirement {
                                container_name: s(""),
                                operator: s("In"),
                                values: vec![1, 42],
                            }),
                            on_pod_conditions: vec![],
                        },
                        pb_batch::PodFailurePolicyRule {
                            action: s("Ignore"),
                            on_exit_codes: None,
                            on_pod_conditions: vec![
                                pb_batch::PodFailurePolicyOnPodConditionsPattern {
                                    r#type: s("DisruptionTarget"),
                                    status: s("True"),
                                },
                            ],
                        },
                    ],
                }),
                success_policy: Some(pb_batch::SuccessPolicy {
                    rules: vec![pb_batch::SuccessPolicyRule {
                        succeeded_indexes: s("0-1"),
                        succeeded_count: Some(0),
                    }],
                }),
                backoff_limit: Some(0),
                backoff_limit_per_index: Some(0),
                max_failed_indexes: Some(0),
                selector: None,
                manual_selector: Some(false),
                template: Some(pb::PodTemplateSpec {
                    metadata: Some(pb_meta::ObjectMeta::default()),
                    spec: Some(pb::PodSpec::default()),
                }),
                ttl_seconds_after_finished: Some(0),
                completion_mode: s("Indexed"),
                suspend: Some(false),
                pod_replacement_policy: s("Failed"),
                managed_by: s(""),
            }),
            status: Some(pb_batch::JobStatus {
                conditions: vec![pb_batch::JobCondition {
                    r#type: s("Complete"),
                    status: s("True"),
                    last_probe_time: Some(pb_meta::Time {
                        seconds: Some(GO_ZERO_TIME_SECONDS),
                        nanos: Some(0),
                    }),
                    last_transition_time: Some(pb_meta::Time {
                        seconds: Some(1_700_000_000),
                        nanos: Some(0),
                    }),
                    reason: s(""),
                    message: s(""),
                }],
                start_time: Some(pb_meta::Time {
                    seconds: Some(1_700_000_000),
                    nanos: Some(0),
                }),
                active: Some(0),
                succeeded: Some(4),
                failed: Some(0),
                terminating: Some(0),
                completed_indexes: s("0-3"),
                failed_indexes: s(""),
                uncounted_terminated_pods: Some(pb_batch::UncountedTerminatedPods {
                    succeeded: vec!["u-1".into()],
                    failed: vec![],
                }),
                ready: Some(0),
                ..Default::default()
            }),
        };
        let v = decode(&envelope("batch/v1", "Job", job.encode_to_vec()));
        // Every pointer keeps its zero; `containerName: ""` is a set pointer too.
        assert_eq!(
            v["spec"],
            json!({"parallelism": 0, "completions": 4, "activeDeadlineSeconds": 0,
                   "manualSelector": false, "template": {"metadata": {}, "spec": {}},
                   "backoffLimit": 0, "ttlSecondsAfterFinished": 0, "completionMode": "Indexed",
                   "suspend": false,
                   "podFailurePolicy": {"rules": [
                       {"action": "FailJob", "onExitCodes": {"containerName": "", "operator": "In", "values": [1, 42]}},
                       {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]},
                   "backoffLimitPerIndex": 0, "maxFailedIndexes": 0, "podReplacementPolicy": "Failed",
                   "managedBy": "",
                   "successPolicy": {"rules": [{"succeededIndexes": "0-1", "succeededCount": 0}]}})
        );
        assert_eq!(
            v["status"],
            json!({"conditions": [{"type": "Complete", "status": "True",
                                   "lastTransitionTime": "2023-11-14T22:13:20Z"}],
                   "startTime": "2023-11-14T22:13:20Z", "succeeded": 4, "terminating": 0,
                   "completedIndexes": "0-3", "failedIndexes": "",
                   "uncountedTerminatedPods": {"succeeded": ["u-1"]}, "ready": 0})
        );
        let job: k8s_openapi::api::batch::v1::Job = typed(&v);
        let spec = job.spec.unwrap_or_default();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.suspend, Some(false));
        assert_eq!(spec.parallelism, Some(0));
        assert_eq!(spec.ttl_seconds_after_finished, Some(0));
        let rules = spec.pod_failure_policy.map(|p| p.rules).unwrap_or_default();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules
                .first()
                .and_then(|r| r.on_exit_codes.as_ref())
                .map(|e| e.values.clone()),
            Some(vec![1, 42])
        );
    }

    #[test]
    fn packed_repeated_ints_decode_like_unpacked() {
        // `values` (tag 3) as one packed run, then as separate varints.
        let packed = [0x12, 0x02, b'I', b'n', 0x1a, 0x02, 0x01, 0x2a];
        let unpacked = [0x12, 0x02, b'I', b'n', 0x18, 0x01, 0x18, 0x2a];
        let name = "batch.v1.PodFailurePolicyOnExitCodesRequirement";
        let a = decode_message(name, &packed, 0).map_err(|e| e.0);
        let b = decode_message(name, &unpacked, 0).map_err(|e| e.0);
        assert_eq!(
            a.clone().map(Value::Object),
            Ok(json!({"operator": "In", "values": [1, 42]}))
        );
        assert_eq!(a, b);
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut raw = pb::Namespace {
            metadata: Some(meta("x")),
            ..Default::default()
        }
        .encode_to_vec();
        // Field 99, length-delimited, from some newer API version.
        raw.extend([0x9a, 0x06, 0x02, b'h', b'i']);
        let v = decode(&envelope("v1", "Namespace", raw));
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
        );
    }

    fn code(bytes: &[u8]) -> u16 {
        match decode_body(bytes) {
            Ok(v) => panic!("decoded garbage into {v}"),
            Err(e) => e.code(),
        }
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        assert_eq!(code(b"{\"kind\":\"Namespace\"}"), 400);
        assert_eq!(code(b"k8s\0"), 400, "no kind");
        assert_eq!(code(b"k8s\0\x0a\xff"), 400, "truncated length");
        assert_eq!(code(b"k8s\0\x0b"), 400, "group wire type");
        assert_eq!(code(b"k8s\0\x00"), 400, "tag 0");
        let mut bad_utf8 = envelope("v1", "Namespace", vec![0x0a, 0x03, 0x0a, 0x01, 0xff]);
        assert_eq!(code(&bad_utf8), 400);
        bad_utf8.truncate(bad_utf8.len() - 2);
        assert_eq!(code(&bad_utf8), 400, "truncated raw");
        // A varint where the name string should be.
        assert_eq!(
            code(&envelope("v1", "Namespace", vec![0x0a, 0x02, 0x08, 0x01])),
            400
        );
    }

    #[test]
    fn unsupported_kinds_are_415() {
        assert_eq!(code(&envelope("v1", "PersistentVolumeClaim", vec![])), 415);
        assert_eq!(code(&envelope("batch/v1", "CronJob", vec![])), 415);
        assert_eq!(code(&envelope("apps/v1", "StatefulSet", vec![])), 415);
        // The kind alone is not enough: the group version must be one decoded.
        assert_eq!(
            code(&envelope("extensions/v1beta1", "Deployment", vec![])),
            415
        );
    }

    #[test]
    fn nesting_depth_is_bounded() {
        // The accepted layouts are not recursive, so real input never gets
        // near the bound; the guard keeps a future recursive layout safe.
        assert!(decode_message("core.v1.Pod", &[], MAX_DEPTH + 1).is_err());
    }

    #[test]
    fn schema_is_sorted_and_closed() {
        let specials = [
            "meta.v1.Time",
            "meta.v1.MicroTime",
            "resource.Quantity",
            "intstr.IntOrString",
            "meta.v1.FieldsV1",
            "runtime.RawExtension",
        ];
        assert!(MESSAGES.windows(2).all(|w| w[0].name < w[1].name));
        for m in MESSAGES {
            let mut tags: Vec<u32> = m.fields.iter().map(|f| f.tag).collect();
            tags.sort_unstable();
            tags.dedup();
            assert_eq!(tags.len(), m.fields.len(), "duplicate tag in {}", m.name);
            for f in m.fields {
                if let Ty::Msg(n) | Ty::MapMsg(n) = f.ty {
                    assert!(
                        specials.contains(&n) || lookup(n).is_ok(),
                        "{}.{} -> {n}",
                        m.name,
                        f.json
                    );
                }
            }
        }
        for (_, _, root) in ROOTS {
            assert!(lookup(root).is_ok(), "{root}");
        }
        assert!(lookup("meta.v1.DeleteOptions").is_ok());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            for (api_version, kind, _) in ROOTS {
                let _ = decode_body(&envelope(api_version, kind, raw.clone()));
            }
            let mut direct = MAGIC.to_vec();
            direct.extend(raw);
            let _ = decode_body(&direct);
        }
    }
}
