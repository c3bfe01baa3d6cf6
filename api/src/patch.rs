//! Patches: strategic merge (the subset kubectl sends), JSON merge patch
//! (RFC 7386), JSON patch (RFC 6902) and a simple server-side apply.
//!
//! Strategic merge follows apimachinery's `strategicpatch` package, with the
//! patch strategy of a list chosen by its field name instead of by Go struct
//! tags: that is enough for the built-in kinds served here, whose list field
//! names mean the same thing wherever they appear.

use serde_json::{Map, Value};

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document itself is malformed (400).
    #[error("invalid patch: {0}")]
    Invalid(String),
    /// A JSON patch `test` operation failed (422).
    #[error("the server rejected our request due to an error in our request: {0}")]
    JsonPatchTest(String),
    /// The patch is well formed but cannot be applied to this object (422).
    #[error("{0}")]
    Unprocessable(String),
}

type Result<T, E = PatchError> = std::result::Result<T, E>;

/// The deepest document a patch may produce or consume, counted in nested
/// objects and arrays. Well below serde_json's read limit (128) so that
/// whatever is stored can be decoded again, and small enough that the
/// recursive walks here (merges, clones, drops) stay shallow.
pub const MAX_DEPTH: usize = 100;

/// How many bytes (as encoded JSON, estimated) all the `copy` operations of one
/// JSON patch may duplicate together: evanphx/json-patch's
/// `AccumulatedCopySizeLimit`, which Kubernetes sets to its request body limit.
pub const MAX_COPY_BYTES: usize = 3 * 1024 * 1024;

/// The nesting depth of `v` (a scalar is 0, `{}` and `[]` are 1), counted
/// without recursion so that any document can be measured. Stops counting
/// once `limit` is exceeded and returns `limit + 1`.
pub fn depth_exceeding(v: &Value, limit: usize) -> usize {
    let mut stack = vec![(v, 0usize)];
    let mut max = 0;
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Object(m) => Box::new(m.values()),
            Value::Array(a) => Box::new(a.iter()),
            _ => continue,
        };
        let d = d + 1;
        if d > limit {
            return limit + 1;
        }
        max = max.max(d);
        stack.extend(children.map(|c| (c, d)));
    }
    max
}

/// Whether `v` nests deeper than `limit` levels.
pub fn deeper_than(v: &Value, limit: usize) -> bool {
    depth_exceeding(v, limit) > limit
}

/// An estimate of the encoded size of `v`, without recursion; stops counting
/// once `limit` is exceeded.
fn encoded_size_exceeding(v: &Value, limit: usize) -> usize {
    let mut stack = vec![v];
    let mut size = 0usize;
    while let Some(v) = stack.pop() {
        size = size.saturating_add(match v {
            Value::Null | Value::Bool(_) => 5,
            Value::Number(_) => 8,
            Value::String(s) => s.len() + 2,
            Value::Array(a) => {
                stack.extend(a.iter());
                2 + a.len()
            }
            Value::Object(m) => {
                stack.extend(m.values());
                2 + m.keys().map(|k| k.len() + 4).sum::<usize>()
            }
        });
        if size > limit {
            return size;
        }
    }
    size
}

fn too_deep() -> PatchError {
    PatchError::Unprocessable(format!(
        "the patched object would be nested more than {MAX_DEPTH} levels deep"
    ))
}

/// Rejects a patch document nested deeper than [`MAX_DEPTH`]: the merges
/// below recurse along it.
fn check_patch_depth(patch: &Value) -> Result<()> {
    if deeper_than(patch, MAX_DEPTH) {
        return Err(PatchError::Invalid(format!(
            "the patch is nested more than {MAX_DEPTH} levels deep"
        )));
    }
    Ok(())
}

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// How a list field is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListKind {
    /// Replaced whole.
    Atomic,
    /// A set of scalars (`finalizers`).
    Set,
    /// A list of objects merged by the value of a key.
    Keyed(&'static str),
}

/// The patch strategy of a list, by field name (Kubernetes'
/// `patchStrategy`/`patchMergeKey` of the built-in types).
fn list_kind(field: &str, original: &[Value], patch: &[Value]) -> ListKind {
    let kind = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => ListKind::Keyed("name"),
        "volumeMounts" => ListKind::Keyed("mountPath"),
        "volumeDevices" => ListKind::Keyed("devicePath"),
        "conditions" | "addresses" => ListKind::Keyed("type"),
        "ownerReferences" => ListKind::Keyed("uid"),
        "podIPs" | "hostIPs" | "hostAliases" => ListKind::Keyed("ip"),
        // Container ports merge by containerPort, service ports by port.
        "ports" => {
            let has = |k: &str| patch.iter().chain(original).any(|i| i.get(k).is_some());
            if has("containerPort") {
                ListKind::Keyed("containerPort")
            } else {
                ListKind::Keyed("port")
            }
        }
        "finalizers" => ListKind::Set,
        _ => ListKind::Atomic,
    };
    match kind {
        // A keyed list whose items are not objects cannot be merged by key.
        ListKind::Keyed(_) if !patch.iter().chain(original).all(Value::is_object) => {
            ListKind::Atomic
        }
        ListKind::Set
            if !patch
                .iter()
                .chain(original)
                .all(|v| !v.is_object() && !v.is_array()) =>
        {
            ListKind::Atomic
        }
        other => other,
    }
}

/// Applies a strategic merge patch (kubectl's `apply`, `edit`, `set image`,
/// `cordon`…). `$setElementOrder` directives are honoured and stripped.
pub fn strategic_merge(original: &Value, patch: &Value) -> Result<Value> {
    let Value::Object(p) = patch else {
        return Err(PatchError::Invalid(
            "a strategic merge patch must be a JSON object".into(),
        ));
    };
    check_patch_depth(patch)?;
    let base = original.as_object().cloned().unwrap_or_default();
    Ok(Value::Object(merge_map(base, p)?.unwrap_or_default()))
}

/// Merges `patch` into `original`; `None` when the patch deletes the map.
fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Option<Map<String, Value>>> {
    if let Some(d) = patch.get(DIRECTIVE) {
        match d.as_str() {
            Some("replace") => {
                let rest: Map<String, Value> = patch
                    .iter()
                    .filter(|(k, _)| *k != DIRECTIVE)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                return merge_map(Map::new(), &rest);
            }
            Some("delete") => return Ok(None),
            Some("merge") => {}
            _ => {
                return Err(PatchError::Invalid(format!(
                    "Unable to process the patch: unknown patch type: {d}"
                )));
            }
        }
    }
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let Some(keys) = retain.as_array() else {
            return Err(PatchError::Invalid(format!(
                "{RETAIN_KEYS} must be a list of field names"
            )));
        };
        let keys: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        original.retain(|k, _| keys.contains(&k.as_str()));
    }
    for (k, v) in patch {
        let Some(field) = k.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) else {
            continue;
        };
        let Some(doomed) = v.as_array() else {
            return Err(PatchError::Invalid(format!("{k} must be a list")));
        };
        if let Some(Value::Array(list)) = original.get_mut(field) {
            list.retain(|x| !doomed.contains(x));
        }
    }
    for (k, pv) in patch {
        if k.starts_with('$') {
            continue;
        }
        let order = set_element_order(patch, k)?;
        let current = original.remove(k);
        if let Some(v) = merge_value(k, current, pv, order)? {
            original.insert(k.clone(), v);
        }
    }
    // `$setElementOrder` for a list the patch does not otherwise touch.
    for (k, order) in patch {
        let Some(field) = k.strip_prefix(SET_ELEMENT_ORDER) else {
            continue;
        };
        if patch.contains_key(field) {
            continue;
        }
        let Some(order) = order.as_array() else {
            return Err(PatchError::Invalid(format!("{k} must be a list")));
        };
        if let Some(Value::Array(list)) = original.get_mut(field) {
            let kind = list_kind(field, list, order);
            if kind != ListKind::Atomic {
                let server = std::mem::take(list);
                *list = normalize_order(server.clone(), order, &server, kind);
            }
        }
    }
    Ok(Some(original))
}

fn set_element_order<'a>(
    patch: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a [Value]>> {
    match patch.get(&format!("{SET_ELEMENT_ORDER}{field}")) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a.as_slice())),
        Some(_) => Err(PatchError::Invalid(format!(
            "{SET_ELEMENT_ORDER}{field} must be a list"
        ))),
    }
}

/// The merged value of field `field`; `None` deletes it.
fn merge_value(
    field: &str,
    current: Option<Value>,
    pv: &Value,
    order: Option<&[Value]>,
) -> Result<Option<Value>> {
    match pv {
        Value::Null => Ok(None),
        Value::Object(p) => {
            let base = match current {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            Ok(merge_map(base, p)?.map(Value::Object))
        }
        Value::Array(p) => {
            let base = match current {
                Some(Value::Array(a)) => a,
                _ => Vec::new(),
            };
            Ok(Some(Value::Array(merge_list(field, base, p, order)?)))
        }
        scalar => Ok(Some(scalar.clone())),
    }
}

fn key_of(item: &Value, kind: ListKind) -> Option<Value> {
    match kind {
        ListKind::Keyed(k) => item.get(k).cloned(),
        _ => Some(item.clone()),
    }
}

fn merge_list(
    field: &str,
    original: Vec<Value>,
    patch: &[Value],
    order: Option<&[Value]>,
) -> Result<Vec<Value>> {
    let kind = list_kind(field, &original, patch);
    match kind {
        ListKind::Atomic => Ok(patch.to_vec()),
        ListKind::Set => {
            let mut merged = Vec::with_capacity(original.len() + patch.len());
            for v in original.iter().chain(patch) {
                if !merged.contains(v) {
                    merged.push(v.clone());
                }
            }
            Ok(normalize_order(
                merged,
                order.unwrap_or(patch),
                &original,
                kind,
            ))
        }
        ListKind::Keyed(key) => {
            let server_order = original.clone();
            let mut merged = original;
            let mut items = Vec::with_capacity(patch.len());
            for item in patch {
                let Some(obj) = item.as_object() else {
                    continue;
                };
                match obj.get(DIRECTIVE).map(|d| d.as_str()) {
                    None => items.push(obj),
                    Some(Some("replace")) => {
                        // The list is exactly the other patch items.
                        let rest: Vec<Value> = patch
                            .iter()
                            .filter(|i| i.get(DIRECTIVE).is_none())
                            .cloned()
                            .collect();
                        return merge_list(field, Vec::new(), &rest, order);
                    }
                    Some(Some("delete")) => {
                        let Some(k) = obj.get(key) else {
                            return Err(missing_key(item, key));
                        };
                        merged.retain(|m| m.get(key) != Some(k));
                    }
                    Some(Some("merge")) => {}
                    Some(_) => {
                        return Err(PatchError::Invalid(format!(
                            "Unable to process the patch: unknown patch type in list {field}: {}",
                            obj.get(DIRECTIVE).map(Value::to_string).unwrap_or_default()
                        )));
                    }
                }
            }
            let mut plain = Vec::with_capacity(items.len());
            for obj in items {
                let Some(k) = obj.get(key) else {
                    return Err(missing_key(&Value::Object(obj.clone()), key));
                };
                plain.push(Value::Object(obj.clone()));
                match merged.iter().position(|m| m.get(key) == Some(k)) {
                    Some(i) => {
                        let base = merged[i].as_object().cloned().unwrap_or_default();
                        match merge_map(base, obj)? {
                            Some(m) => merged[i] = Value::Object(m),
                            None => {
                                merged.remove(i);
                            }
                        }
                    }
                    None => {
                        if let Some(m) = merge_map(Map::new(), obj)? {
                            merged.push(Value::Object(m));
                        }
                    }
                }
            }
            Ok(normalize_order(
                merged,
                order.unwrap_or(&plain),
                &server_order,
                kind,
            ))
        }
    }
}

fn missing_key(item: &Value, key: &str) -> PatchError {
    PatchError::Invalid(format!(
        "map: {item} does not contain declared merge key: {key}"
    ))
}

fn index_in(list: &[Option<Value>], key: &Option<Value>) -> Option<usize> {
    key.as_ref()?;
    list.iter().position(|k| k == key)
}

/// apimachinery's `normalizeElementOrder`: items named by `order` come in that
/// order; items only on the server keep their place relative to the others,
/// as `mergeSortedSlice` interleaves them by their server index.
fn normalize_order(
    merged: Vec<Value>,
    order: &[Value],
    server: &[Value],
    kind: ListKind,
) -> Vec<Value> {
    let order_keys: Vec<Option<Value>> = order.iter().map(|v| key_of(v, kind)).collect();
    let server_keys: Vec<Option<Value>> = server.iter().map(|v| key_of(v, kind)).collect();
    let (mut patch_items, mut server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|v| index_in(&order_keys, &key_of(v, kind)).is_some());
    patch_items.sort_by_key(|v| index_in(&order_keys, &key_of(v, kind)));
    server_only.sort_by_key(|v| index_in(&server_keys, &key_of(v, kind)).map_or(-1, |i| i as i64));
    let mut out = Vec::with_capacity(patch_items.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patch_items.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => {
                let li = index_in(&server_keys, &key_of(l, kind));
                let ri = index_in(&server_keys, &key_of(r, kind));
                matches!((li, ri), (Some(a), Some(b)) if a < b)
            }
        };
        let next = if take_left { left.next() } else { right.next() };
        if let Some(v) = next {
            out.push(v);
        }
    }
    out
}

/// Applies an RFC 7386 JSON merge patch. The recursion follows the patch,
/// whose depth is bounded by the JSON decoder that read it; the result is no
/// deeper than the deeper of its inputs.
pub fn merge_patch(original: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut target = original.as_object().cloned().unwrap_or_default();
    for (k, v) in p {
        if v.is_null() {
            target.remove(k);
        } else {
            let current = target.remove(k).unwrap_or(Value::Null);
            target.insert(k.clone(), merge_patch(&current, v));
        }
    }
    Value::Object(target)
}

/// Splits an RFC 6901 pointer into unescaped tokens.
fn pointer_tokens(path: &str) -> Result<Vec<String>> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PatchError::Invalid(format!(
            "JSON pointer {path:?} must start with '/'"
        )));
    };
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn missing_path(path: &str) -> PatchError {
    PatchError::Unprocessable(format!("doc is missing path: {path:?}: missing value"))
}

fn array_index(token: &str, len: usize, allow_end: bool, path: &str) -> Result<usize> {
    if allow_end && token == "-" {
        return Ok(len);
    }
    let valid = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    let i: usize = if valid {
        token.parse().map_err(|_| missing_path(path))?
    } else {
        return Err(missing_path(path));
    };
    let limit = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    if i > limit || (!allow_end && len == 0) {
        return Err(PatchError::Unprocessable(format!(
            "unable to access invalid index: {i}: invalid index referenced"
        )));
    }
    Ok(i)
}

/// The parent container of `tokens` and the last token.
fn parent_mut<'a>(
    doc: &'a mut Value,
    tokens: &'a [String],
    path: &str,
) -> Result<(&'a mut Value, &'a str)> {
    let Some((last, parents)) = tokens.split_last() else {
        return Err(missing_path(path));
    };
    let mut cur = doc;
    for t in parents {
        cur = match cur {
            Value::Object(m) => m.get_mut(t).ok_or_else(|| missing_path(path))?,
            Value::Array(a) => {
                let i = array_index(t, a.len(), false, path)?;
                a.get_mut(i).ok_or_else(|| missing_path(path))?
            }
            _ => return Err(missing_path(path)),
        };
    }
    Ok((cur, last.as_str()))
}

fn get_at<'a>(doc: &'a Value, tokens: &[String], path: &str) -> Result<&'a Value> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get(t).ok_or_else(|| missing_path(path))?,
            Value::Array(a) => {
                let i = array_index(t, a.len(), false, path)?;
                a.get(i).ok_or_else(|| missing_path(path))?
            }
            _ => return Err(missing_path(path)),
        };
    }
    Ok(cur)
}

fn add_at(doc: &mut Value, tokens: &[String], value: Value, path: &str) -> Result<()> {
    if tokens.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = parent_mut(doc, tokens, path)?;
    match parent {
        Value::Object(m) => {
            m.insert(last.to_string(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = array_index(last, a.len(), true, path)?;
            a.insert(i, value);
            Ok(())
        }
        _ => Err(missing_path(path)),
    }
}

fn remove_at(doc: &mut Value, tokens: &[String], path: &str) -> Result<Value> {
    let (parent, last) = parent_mut(doc, tokens, path)?;
    match parent {
        Value::Object(m) => m.remove(last).ok_or_else(|| missing_path(path)),
        Value::Array(a) => {
            let i = array_index(last, a.len(), false, path)?;
            Ok(a.remove(i))
        }
        _ => Err(missing_path(path)),
    }
}

/// Applies an RFC 6902 JSON patch (`ops` is the array of operations).
/// A malformed operation is [`PatchError::Invalid`]; an operation that does
/// not fit the document is [`PatchError::Unprocessable`].
pub fn json_patch(original: &Value, ops: &Value) -> Result<Value> {
    let Some(ops) = ops.as_array() else {
        return Err(PatchError::Invalid(
            "a JSON patch must be a list of operations".into(),
        ));
    };
    let mut doc = original.clone();
    let mut copied = 0usize;
    // The document never gets deeper than this: every operation below that
    // adds a value checks the depth it lands at.
    let fits = |tokens: &[String], v: &Value| {
        let room = MAX_DEPTH.saturating_sub(tokens.len());
        if deeper_than(v, room) {
            Err(too_deep())
        } else {
            Ok(())
        }
    };
    for op in ops {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| PatchError::Invalid(format!("operation {op} has no \"op\"")))?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| PatchError::Invalid(format!("operation {op} has no \"path\"")))?;
        let tokens = pointer_tokens(path)?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| PatchError::Invalid(format!("operation {op} has no \"value\"")))
        };
        let from = || -> Result<(String, Vec<String>)> {
            let f = op
                .get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| PatchError::Invalid(format!("operation {op} has no \"from\"")))?;
            Ok((f.to_string(), pointer_tokens(f)?))
        };
        match name {
            "add" => {
                let v = value()?;
                fits(&tokens, &v)?;
                add_at(&mut doc, &tokens, v, path)?;
            }
            "remove" => {
                if tokens.is_empty() {
                    return Err(PatchError::Unprocessable(
                        "cannot remove the whole document".into(),
                    ));
                }
                remove_at(&mut doc, &tokens, path)?;
            }
            "replace" => {
                let v = value()?;
                fits(&tokens, &v)?;
                if tokens.is_empty() {
                    doc = v;
                } else {
                    get_at(&doc, &tokens, path)?;
                    remove_at(&mut doc, &tokens, path)?;
                    add_at(&mut doc, &tokens, v, path)?;
                }
            }
            "move" => {
                let (f, ftokens) = from()?;
                if tokens.len() > ftokens.len() && tokens.starts_with(&ftokens) {
                    return Err(PatchError::Unprocessable(format!(
                        "cannot move {f:?} into its own child {path:?}"
                    )));
                }
                if ftokens.is_empty() {
                    return Err(missing_path(&f));
                }
                if tokens.len() > ftokens.len() {
                    fits(&tokens, get_at(&doc, &ftokens, &f)?)?;
                }
                let v = remove_at(&mut doc, &ftokens, &f)?;
                add_at(&mut doc, &tokens, v, path)?;
            }
            "copy" => {
                let (f, ftokens) = from()?;
                let source = get_at(&doc, &ftokens, &f)?;
                // Each copy may double the document (or its depth): bound
                // what all of them duplicate before cloning anything.
                let budget = MAX_COPY_BYTES.saturating_sub(copied);
                let size = encoded_size_exceeding(source, budget);
                if size > budget {
                    return Err(PatchError::Unprocessable(format!(
                        "the JSON patch copies more than {MAX_COPY_BYTES} bytes in total"
                    )));
                }
                copied += size;
                fits(&tokens, source)?;
                let v = source.clone();
                add_at(&mut doc, &tokens, v, path)?;
            }
            "test" => {
                let expected = value()?;
                let actual = get_at(&doc, &tokens, path).ok();
                if actual != Some(&expected) {
                    return Err(PatchError::JsonPatchTest(format!(
                        "testing value {path} failed: test failed"
                    )));
                }
            }
            other => return Err(PatchError::Invalid(format!("Unexpected kind: {other}"))),
        }
    }
    Ok(doc)
}

/// Drops nulls and `$` directives: an applied configuration states values,
/// it does not delete or reorder.
fn applied_config(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), applied_config(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(applied_config).collect()),
        other => other.clone(),
    }
}

/// Server-side apply without managed fields: every field the applied
/// configuration names is set, lists merge by the same keys as strategic
/// merge, and fields the configuration does not name are kept. Nulls in the
/// configuration are ignored.
pub fn server_side_apply(live: Option<&Value>, applied: &Value) -> Result<Value> {
    if !applied.is_object() {
        return Err(PatchError::Invalid(
            "an applied configuration must be a JSON object".into(),
        ));
    }
    check_patch_depth(applied)?;
    let config = applied_config(applied);
    match live {
        None => Ok(config),
        Some(live) => strategic_merge(live, &config),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn smp(original: Value, patch: Value) -> Value {
        strategic_merge(&original, &patch).unwrap_or_else(|e| panic!("{e}"))
    }

    fn live_deployment() -> Value {
        json!({
            "metadata": {"name": "web", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}, "finalizers": ["a"]},
            "spec": {"replicas": 2, "template": {"spec": {
                "containers": [
                    {"name": "web", "image": "hello:v1", "imagePullPolicy": "IfNotPresent", "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                    {"name": "side", "image": "side:v1"},
                ],
                "tolerations": [{"key": "a", "operator": "Exists"}],
            }}},
            "status": {"replicas": 2},
        })
    }

    #[test]
    fn kubectl_apply_patch_updates_a_container_by_name_and_keeps_server_fields() {
        let patch = json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"new\":1}"}},
            "spec": {"replicas": 3, "template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
                "containers": [{"image": "hello:v2", "name": "web"}],
            }}},
        });
        let out = smp(live_deployment(), patch);
        assert_eq!(out["spec"]["replicas"], 3);
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0]["name"], "web");
        assert_eq!(cs[0]["image"], "hello:v2");
        assert_eq!(
            cs[0]["imagePullPolicy"], "IfNotPresent",
            "defaulted server fields survive"
        );
        assert_eq!(cs[0]["ports"][0]["protocol"], "TCP");
        assert_eq!(cs[1]["name"], "side");
        assert_eq!(
            out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            "{\"new\":1}"
        );
        assert_eq!(out["status"]["replicas"], 2);
        assert!(
            !out.to_string().contains("$setElementOrder"),
            "directives are stripped"
        );
    }

    #[test]
    fn applying_the_same_patch_twice_is_a_no_op() {
        let patch = json!({
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
                "containers": [{"image": "hello:v2", "name": "web"}],
            }}},
            "metadata": {"$setElementOrder/finalizers": ["a", "b"], "finalizers": ["b"]},
        });
        let once = smp(live_deployment(), patch.clone());
        let twice = smp(once.clone(), patch);
        assert_eq!(once, twice);
        assert_eq!(once["metadata"]["finalizers"], json!(["a", "b"]));
    }

    #[test]
    fn kubectl_apply_removing_a_container_and_an_env_var() {
        let live = json!({"spec": {"containers": [
            {"name": "web", "image": "w:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], "ports": [{"containerPort": 80, "protocol": "TCP"}]},
            {"name": "side", "image": "s:1"},
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "web"}],
            "containers": [
                {"name": "web", "$setElementOrder/env": [{"name": "A"}], "env": [{"$patch": "delete", "name": "B"}],
                 "$setElementOrder/ports": [{"containerPort": 8080}, {"containerPort": 80}], "ports": [{"containerPort": 8080}]},
                {"$patch": "delete", "name": "side"},
            ],
        }});
        let out = smp(live, patch);
        assert_eq!(
            out,
            json!({"spec": {"containers": [
                {"name": "web", "image": "w:1", "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 8080}, {"containerPort": 80, "protocol": "TCP"}]},
            ]}})
        );
    }

    #[test]
    fn set_element_order_reorders_containers() {
        let patch = json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "web"}]}}}});
        let out = smp(live_deployment(), patch);
        let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(names, vec!["side", "web"]);
    }

    #[test]
    fn new_items_are_placed_by_set_element_order() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "first"}, {"name": "web"}, {"name": "side"}],
            "containers": [{"name": "first", "image": "f:1"}],
        }}}});
        let out = smp(live_deployment(), patch);
        let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(names, vec!["first", "web", "side"]);
    }

    #[test]
    fn null_deletes_a_field() {
        let out = smp(
            json!({"spec": {"unschedulable": true, "podCIDR": "x"}}),
            json!({"spec": {"unschedulable": null}}),
        );
        assert_eq!(out, json!({"spec": {"podCIDR": "x"}}));
        let out = smp(json!({"spec": {}}), json!({"spec": {"missing": null}}));
        assert_eq!(
            out,
            json!({"spec": {}}),
            "a null for an absent field is dropped"
        );
    }

    #[test]
    fn patch_delete_directive_removes_a_list_item() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}});
        let out = smp(live_deployment(), patch);
        let cs = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0]["name"], "web");
    }

    #[test]
    fn patch_replace_directive_replaces_a_list_or_map() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "o:1"}]}}}});
        let out = smp(live_deployment(), patch);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only", "image": "o:1"}])
        );
        let out = smp(
            json!({"a": {"x": 1, "y": 2}}),
            json!({"a": {"$patch": "replace", "z": 3}}),
        );
        assert_eq!(out, json!({"a": {"z": 3}}));
        let out = smp(
            json!({"a": {"x": 1}, "b": 1}),
            json!({"a": {"$patch": "delete"}}),
        );
        assert_eq!(out, json!({"b": 1}));
    }

    #[test]
    fn retain_keys_drops_unlisted_fields() {
        let original =
            json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}});
        let patch = json!({"strategy": {"$retainKeys": ["type"], "type": "Recreate"}});
        assert_eq!(
            smp(original, patch),
            json!({"strategy": {"type": "Recreate"}})
        );
    }

    #[test]
    fn delete_from_primitive_list_removes_finalizers() {
        let original = json!({"metadata": {"finalizers": ["a", "b", "c"]}});
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}});
        assert_eq!(
            smp(original, patch),
            json!({"metadata": {"finalizers": ["a", "c"]}})
        );
    }

    #[test]
    fn finalizers_merge_as_a_set() {
        let out = smp(
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"finalizers": ["b", "c"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
    }

    #[test]
    fn unkeyed_lists_are_replaced() {
        let patch = json!({"spec": {"template": {"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}}});
        let out = smp(live_deployment(), patch);
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "b", "operator": "Exists"}])
        );
        let out = smp(json!({"args": ["a", "b"]}), json!({"args": ["c"]}));
        assert_eq!(out, json!({"args": ["c"]}));
    }

    #[test]
    fn keyed_lists_merge_by_their_kubernetes_keys() {
        let original = json!({
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "volumeMounts": [{"mountPath": "/a", "name": "x"}],
            "ports": [{"containerPort": 80, "name": "http"}],
            "conditions": [{"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}],
            "ownerReferences": [{"uid": "u1", "name": "a"}],
        });
        let patch = json!({
            "env": [{"name": "B", "value": "3"}],
            "volumeMounts": [{"mountPath": "/a", "readOnly": true}],
            "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "ownerReferences": [{"uid": "u1", "controller": true}],
        });
        let out = smp(original, patch);
        assert_eq!(
            out["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}])
        );
        assert_eq!(
            out["volumeMounts"],
            json!([{"mountPath": "/a", "name": "x", "readOnly": true}])
        );
        assert_eq!(
            out["ports"],
            json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}, {"containerPort": 443}])
        );
        assert_eq!(
            out["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}])
        );
        assert_eq!(
            out["ownerReferences"],
            json!([{"uid": "u1", "name": "a", "controller": true}])
        );
    }

    #[test]
    fn service_ports_merge_by_port() {
        let out = smp(
            json!({"ports": [{"port": 80, "name": "a"}]}),
            json!({"ports": [{"port": 80, "targetPort": 8080}]}),
        );
        assert_eq!(
            out,
            json!({"ports": [{"port": 80, "name": "a", "targetPort": 8080}]})
        );
    }

    #[test]
    fn keyed_item_without_its_key_is_rejected() {
        let err = strategic_merge(
            &live_deployment(),
            &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
        );
        assert!(
            matches!(err, Err(PatchError::Invalid(m)) if m.contains("does not contain declared merge key: name"))
        );
        assert!(strategic_merge(&json!({}), &json!([1])).is_err());
        assert!(strategic_merge(&json!({}), &json!({"a": {"$patch": "explode"}})).is_err());
    }

    #[test]
    fn directives_in_new_fields_are_processed_not_stored() {
        let out = smp(
            json!({}),
            json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X", "$patch": "delete"}]}], "$setElementOrder/containers": [{"name": "a"}]}}),
        );
        assert_eq!(
            out,
            json!({"spec": {"containers": [{"name": "a", "env": []}]}})
        );
    }

    #[test]
    fn cordon_and_uncordon() {
        let node = json!({"metadata": {"name": "n"}, "spec": {}});
        let cordoned = smp(node.clone(), json!({"spec": {"unschedulable": true}}));
        assert_eq!(cordoned["spec"]["unschedulable"], true);
        assert_eq!(
            smp(cordoned, json!({"spec": {"unschedulable": null}})),
            node
        );
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        // The RFC's own example.
        let target = json!({"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"}, "tags": ["example", "sample"], "content": "This will be unchanged"});
        let patch = json!({"title": "Hello!", "phoneNumber": "+01-123-456-7890", "author": {"familyName": null}, "tags": ["example"]});
        let expected = json!({"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"], "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"});
        assert_eq!(merge_patch(&target, &patch), expected);
        assert_eq!(merge_patch(&json!({"a": 1}), &json!("x")), json!("x"));
        assert_eq!(
            merge_patch(&json!("x"), &json!({"a": {"b": null}})),
            json!({"a": {}})
        );
        assert_eq!(
            merge_patch(
                &json!({"spec": {"replicas": 2}}),
                &json!({"spec": {"replicas": 4}})
            ),
            json!({"spec": {"replicas": 4}})
        );
    }

    #[test]
    fn json_patch_supports_every_operation() {
        let doc = json!({"a": {"b": [1, 2]}, "c": "x"});
        let ops = json!([
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "add", "path": "/a/b/0", "value": 0},
            {"op": "replace", "path": "/c", "value": "y"},
            {"op": "copy", "from": "/c", "path": "/d"},
            {"op": "move", "from": "/d", "path": "/e~1f"},
            {"op": "remove", "path": "/a/b/1"},
            {"op": "test", "path": "/e~1f", "value": "y"},
        ]);
        let out = json_patch(&doc, &ops).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out, json!({"a": {"b": [0, 2, 3]}, "c": "y", "e/f": "y"}));
    }

    #[test]
    fn json_patch_failures_are_classified() {
        let doc = json!({"a": 1});
        assert!(matches!(
            json_patch(&doc, &json!({"op": "add"})),
            Err(PatchError::Invalid(_))
        ));
        assert!(matches!(
            json_patch(&doc, &json!([{"op": "frob", "path": "/a"}])),
            Err(PatchError::Invalid(_))
        ));
        assert!(matches!(
            json_patch(&doc, &json!([{"op": "add", "path": "/a"}])),
            Err(PatchError::Invalid(_))
        ));
        assert!(matches!(
            json_patch(&doc, &json!([{"op": "remove", "path": "/b"}])),
            Err(PatchError::Unprocessable(_))
        ));
        assert!(matches!(
            json_patch(&doc, &json!([{"op": "replace", "path": "/b", "value": 1}])),
            Err(PatchError::Unprocessable(_))
        ));
        assert!(matches!(
            json_patch(&doc, &json!([{"op": "add", "path": "/x/y", "value": 1}])),
            Err(PatchError::Unprocessable(_))
        ));
        assert!(matches!(
            json_patch(
                &json!({"l": [1]}),
                &json!([{"op": "add", "path": "/l/5", "value": 1}])
            ),
            Err(PatchError::Unprocessable(_))
        ));
        assert!(matches!(
            json_patch(&doc, &json!([{"op": "test", "path": "/a", "value": 2}])),
            Err(PatchError::JsonPatchTest(_))
        ));
        assert!(matches!(
            json_patch(&doc, &json!([{"op": "move", "from": "", "path": "/a/b"}])),
            Err(PatchError::Unprocessable(_))
        ));
        assert_eq!(json_patch(&doc, &json!([])), Ok(doc));
    }

    #[test]
    fn json_patch_copy_doubling_depth_is_rejected_not_a_stack_overflow() {
        // Each copy of /a into /a/a/… doubles the depth: 14 of them would
        // build a document 16384 levels deep.
        let mut ops = Vec::new();
        let mut path = String::from("/a");
        for _ in 0..14 {
            path.push_str("/a");
            ops.push(json!({"op": "copy", "from": "/a", "path": path}));
        }
        let err = json_patch(&json!({"a": {}}), &Value::Array(ops));
        assert!(matches!(err, Err(PatchError::Unprocessable(m)) if m.contains("levels deep")));
    }

    #[test]
    fn json_patch_copy_doubling_size_is_rejected_not_an_oom() {
        let ops: Vec<Value> = (0..22)
            .map(|i| json!({"op": "copy", "from": "", "path": format!("/k{i}")}))
            .collect();
        let err = json_patch(&json!({"a": "x".repeat(64)}), &Value::Array(ops));
        assert!(matches!(err, Err(PatchError::Unprocessable(m)) if m.contains("copies more than")));
    }

    #[test]
    fn json_patch_add_and_move_cannot_exceed_the_depth_limit() {
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH {
            deep = json!([deep]);
        }
        assert!(matches!(
            json_patch(
                &json!({}),
                &json!([{"op": "add", "path": "/x", "value": deep}])
            ),
            Err(PatchError::Unprocessable(_))
        ));
        let mut ok = json!(1);
        for _ in 0..MAX_DEPTH - 2 {
            ok = json!([ok]);
        }
        let doc = json!({"x": ok, "y": {}});
        assert!(json_patch(&doc, &json!([{"op": "move", "from": "/x", "path": "/y/z"}])).is_ok());
        let doc = json!({"x": [ok], "y": {}});
        assert!(matches!(
            json_patch(&doc, &json!([{"op": "move", "from": "/x", "path": "/y/z"}])),
            Err(PatchError::Unprocessable(_))
        ));
    }

    #[test]
    fn patches_nested_deeper_than_the_limit_are_invalid() {
        let mut deep = json!({});
        for _ in 0..MAX_DEPTH {
            deep = json!({"a": deep});
        }
        assert!(matches!(
            strategic_merge(&json!({}), &deep),
            Err(PatchError::Invalid(_))
        ));
        assert!(matches!(
            server_side_apply(None, &deep),
            Err(PatchError::Invalid(_))
        ));
        assert_eq!(depth_exceeding(&deep, 1000), MAX_DEPTH + 1);
        assert_eq!(depth_exceeding(&deep, 10), 11);
        assert_eq!(depth_exceeding(&json!(1), 10), 0);
    }

    #[test]
    fn server_side_apply_creates_then_merges_without_dropping_other_fields() {
        let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "creationTimestamp": null}, "data": {"a": "1"}});
        let created = server_side_apply(None, &applied).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            created,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}})
        );
        let mut live = created.clone();
        live["metadata"]["uid"] = json!("u");
        live["data"]["b"] = json!("2");
        let applied2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "3"}});
        let out = server_side_apply(Some(&live), &applied2).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out["data"], json!({"a": "3", "b": "2"}));
        assert_eq!(out["metadata"]["uid"], "u");
        assert_eq!(
            server_side_apply(Some(&out), &applied2).ok(),
            Some(out.clone()),
            "re-applying is a no-op"
        );
    }

    #[test]
    fn server_side_apply_merges_containers_by_name() {
        let live = json!({"spec": {"containers": [{"name": "a", "image": "a:1", "imagePullPolicy": "IfNotPresent"}]}});
        let applied = json!({"spec": {"containers": [{"name": "a", "image": "a:2"}]}});
        let out = server_side_apply(Some(&live), &applied).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            out,
            json!({"spec": {"containers": [{"name": "a", "image": "a:2", "imagePullPolicy": "IfNotPresent"}]}})
        );
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (0i64..100).prop_map(Value::from),
            "[a-z]{0,4}".prop_map(Value::from),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-e]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn object() -> impl Strategy<Value = Value> {
        proptest::collection::btree_map("[a-e]", json_value(), 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    fn has_null(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Array(a) => a.iter().any(has_null),
            Value::Object(m) => m.values().any(has_null),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn merge_patch_is_idempotent(original in object(), patch in object()) {
            let once = merge_patch(&original, &patch);
            prop_assert_eq!(merge_patch(&once, &patch), once);
        }

        #[test]
        fn strategic_merge_without_keyed_fields_equals_merge_patch(original in object(), patch in object()) {
            // Field names a-e have no list strategy, so every list is atomic and
            // strategic merge must agree with RFC 7386.
            prop_assert_eq!(strategic_merge(&original, &patch).ok(), Some(merge_patch(&original, &patch)));
        }

        #[test]
        fn strategic_merge_is_idempotent(original in object(), patch in object()) {
            let once = strategic_merge(&original, &patch);
            prop_assert!(once.is_ok());
            let once = once.unwrap_or_default();
            prop_assert_eq!(strategic_merge(&once, &patch).ok(), Some(once));
        }

        #[test]
        fn an_empty_patch_changes_nothing(original in object()) {
            prop_assert_eq!(strategic_merge(&original, &json!({})).ok(), Some(original.clone()));
            prop_assert_eq!(merge_patch(&original, &json!({})), original);
        }

        #[test]
        fn container_merges_keep_every_name_once(
            live in proptest::collection::btree_set("[a-d]", 0..4),
            patched in proptest::collection::btree_set("[a-d]", 0..4),
        ) {
            let live_list: Vec<Value> = live.iter().map(|n| json!({"name": n, "image": "old"})).collect();
            let patch_list: Vec<Value> = patched.iter().map(|n| json!({"name": n, "image": "new"})).collect();
            let out = smp(json!({"containers": live_list}), json!({"containers": patch_list}));
            let names: Vec<String> = out["containers"].as_array().map(|a| a.iter().filter_map(|c| c["name"].as_str().map(String::from)).collect()).unwrap_or_default();
            let expected: std::collections::BTreeSet<String> = live.union(&patched).cloned().collect();
            prop_assert_eq!(names.len(), expected.len());
            prop_assert_eq!(names.into_iter().collect::<std::collections::BTreeSet<_>>(), expected);
            for c in out["containers"].as_array().cloned().unwrap_or_default() {
                let name = c["name"].as_str().unwrap_or_default().to_string();
                let want = if patched.contains(&name) { "new" } else { "old" };
                prop_assert_eq!(c["image"].as_str(), Some(want));
            }
        }

        #[test]
        fn server_side_apply_result_contains_the_applied_config(live in object(), applied in object()) {
            prop_assume!(!has_null(&applied));
            let out = server_side_apply(Some(&live), &applied);
            prop_assert!(out.is_ok());
            let out = out.unwrap_or_default();
            for (k, v) in applied.as_object().cloned().unwrap_or_default() {
                if !v.is_object() {
                    prop_assert_eq!(out.get(&k), Some(&v));
                }
            }
        }

        #[test]
        fn json_patch_never_panics(doc in json_value(), path in "(/[a-c0-9-]{0,2}){0,3}", op in "(add|remove|replace|move|copy|test)") {
            let ops = json!([{"op": op, "path": path, "from": "/a", "value": 1}]);
            let _ = json_patch(&doc, &ops);
        }
    }
}
