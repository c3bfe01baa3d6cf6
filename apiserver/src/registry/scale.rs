//! The `scale` subresource (`autoscaling/v1` Scale) of any resource whose
//! [`ResourceInfo`] lists it: a view of the parent's `spec.replicas`, its
//! `status.replicas` and its `spec.selector` as a selector string. Writes
//! (PUT, or a patch applied to the current Scale, as Kubernetes applies it)
//! change only `spec.replicas` of the parent, through the same guaranteed
//! update as every write, so validation and the generation bump follow.

use serde_json::{Value, json};
use wasmkube_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sSelector;
use wasmkube_api::resources::ResourceInfo;
use wasmkube_api::selector::LabelSelector;
use wasmkube_api::status::{self, FieldCause};
use wasmkube_api::{names, patch};

use super::Registry;
use super::object;
use super::ops::{Part, WriteOptions, invalid_kind};
use super::request::BodyType;
use crate::error::{ApiError, Result};

/// How a write changes the Scale.
#[derive(Debug, Clone)]
pub enum ScaleChange {
    /// PUT of a whole Scale.
    Replace(Value),
    /// PATCH of the given type applied to the current Scale.
    Patch(BodyType, Value),
}

const CONFLICT: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// The selector of `spec.selector` as `kubectl` and the HPA read it
/// (`LabelSelectorAsSelector(..).String()`); empty when absent or invalid.
fn selector_string(obj: &Value) -> String {
    obj.pointer("/spec/selector")
        .filter(|v| !v.is_null())
        .and_then(|v| serde_json::from_value::<K8sSelector>(v.clone()).ok())
        .and_then(|s| LabelSelector::from_k8s(&s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// The Scale of a stored object (which carries its resourceVersion).
pub fn scale_of(obj: &Value) -> Value {
    let mut meta = serde_json::Map::new();
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = object::meta(obj).and_then(|m| m.get(f)) {
            meta.insert(f.to_string(), v.clone());
        }
    }
    let replicas = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let current = obj
        .pointer("/status/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": {"replicas": replicas},
        "status": {"replicas": current, "selector": selector_string(obj)},
    })
}

fn scale_invalid(name: &str, causes: Vec<FieldCause>) -> ApiError {
    invalid_kind("autoscaling", "Scale", name, causes)
}

/// `ValidateScale`: the desired replicas of a written Scale.
fn desired_replicas(name: &str, scale: &Value) -> Result<i64> {
    let Some(spec) = scale.get("spec").filter(|v| !v.is_null()) else {
        return Ok(0);
    };
    if !spec.is_object() {
        return Err(scale_invalid(
            name,
            vec![names::invalid("spec", spec, "must be an object")],
        ));
    }
    match spec.get("replicas") {
        None | Some(Value::Null) => Ok(0),
        Some(v) => match v.as_i64() {
            Some(n) if n < 0 => Err(scale_invalid(
                name,
                vec![names::invalid(
                    "spec.replicas",
                    v,
                    "must be greater than or equal to 0",
                )],
            )),
            Some(n) if n > i64::from(i32::MAX) => Err(scale_invalid(
                name,
                vec![names::invalid(
                    "spec.replicas",
                    v,
                    "must be less than or equal to 2147483647",
                )],
            )),
            Some(n) => Ok(n),
            None => Err(scale_invalid(
                name,
                vec![names::invalid("spec.replicas", v, "must be an integer")],
            )),
        },
    }
}

/// Checks a written Scale's kind and name against the URL.
fn check_scale(name: &str, scale: &Value) -> Result<()> {
    if !scale.is_object() {
        return Err(ApiError::bad_request("the Scale must be a JSON object"));
    }
    let kind = scale.get("kind").and_then(Value::as_str).unwrap_or("Scale");
    let av = scale
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("autoscaling/v1");
    if kind != "Scale" || av != "autoscaling/v1" {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version (autoscaling/v1) \
             or the kind in the data ({kind}) does not match the expected kind (Scale)"
        )));
    }
    let body_name = object::name(scale);
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    Ok(())
}

fn patch_error(e: patch::PatchError) -> ApiError {
    match e {
        patch::PatchError::Invalid(m) => ApiError::bad_request(m),
        other => ApiError(status::failure(422, "Invalid", other.to_string())),
    }
}

impl Registry {
    /// GET `…/{name}/scale`.
    pub(crate) async fn get_scale(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value> {
        Ok(scale_of(&self.get(res, namespace, name).await?))
    }

    /// PUT or PATCH of `…/{name}/scale`: sets the parent's `spec.replicas`
    /// and answers the new Scale. A `resourceVersion` in the written Scale is
    /// a precondition on the parent.
    pub(crate) async fn update_scale(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        change: ScaleChange,
        opts: &WriteOptions,
    ) -> Result<Value> {
        if let ScaleChange::Patch(BodyType::Json | BodyType::Yaml, _) = change {
            return Err(ApiError(status::unsupported_media_type("application/json")));
        }
        let updated = self
            .guaranteed_update(res, namespace, name, Part::Main, opts, |current, rev| {
                let before = scale_of(current);
                let written = match &change {
                    ScaleChange::Replace(s) => s.clone(),
                    ScaleChange::Patch(ty, doc) => match ty {
                        BodyType::MergePatch => patch::merge_patch(&before, doc),
                        // A Scale has no keyed lists: strategic merge is a merge.
                        BodyType::StrategicMerge => {
                            patch::strategic_merge(&before, doc).map_err(patch_error)?
                        }
                        BodyType::JsonPatch => {
                            patch::json_patch(&before, doc).map_err(patch_error)?
                        }
                        BodyType::ApplyPatch => {
                            patch::server_side_apply(Some(&before), doc).map_err(patch_error)?
                        }
                        BodyType::Json | BodyType::Yaml => {
                            return Err(ApiError(status::unsupported_media_type(
                                "application/json",
                            )));
                        }
                    },
                };
                check_scale(name, &written)?;
                if let Some(rv) =
                    object::meta_str(&written, "resourceVersion").filter(|s| !s.is_empty())
                    && rv != rev.to_string()
                {
                    return Err(ApiError(status::conflict(
                        res.group, res.plural, name, CONFLICT,
                    )));
                }
                let replicas = desired_replicas(name, &written)?;
                let mut next = current.clone();
                object::set_path(&mut next, &["spec", "replicas"], json!(replicas));
                Ok(next)
            })
            .await?;
        Ok(scale_of(&updated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_reflects_the_parent() {
        let d = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u", "resourceVersion": "7",
                "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"a": "b"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 2},
        });
        assert_eq!(
            scale_of(&d),
            json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": "web", "namespace": "default", "uid": "u", "resourceVersion": "7",
                    "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"replicas": 3}, "status": {"replicas": 2, "selector": "app=web"}})
        );
        let empty = scale_of(&json!({"metadata": {"name": "x"}}));
        assert_eq!(empty["spec"]["replicas"], 0);
        assert_eq!(empty["status"]["selector"], "");
    }

    #[test]
    fn written_replicas_are_validated() {
        assert_eq!(
            desired_replicas("w", &json!({"spec": {"replicas": 4}})).ok(),
            Some(4)
        );
        assert_eq!(desired_replicas("w", &json!({})).ok(), Some(0));
        let err = desired_replicas("w", &json!({"spec": {"replicas": -1}}))
            .err()
            .map(|e| e.code());
        assert_eq!(err, Some(422));
        assert!(desired_replicas("w", &json!({"spec": {"replicas": "x"}})).is_err());
        assert!(check_scale("w", &json!({"kind": "Deployment"})).is_err());
        assert!(check_scale("w", &json!({"metadata": {"name": "v"}})).is_err());
        assert!(check_scale("w", &json!({"kind": "Scale", "metadata": {"name": "w"}})).is_ok());
    }
}
