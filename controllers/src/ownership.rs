//! Who controls what: ownerReferences, adoption and release.
//!
//! A controller owns the objects whose controller reference carries its uid.
//! Like Kubernetes' `ControllerRefManager`, it adopts orphans its selector
//! matches and releases owned objects that stopped matching, so relabelling
//! a pod takes it out of its ReplicaSet and a hand-made pod with the right
//! labels is counted instead of duplicated.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use wasmkube_api::selector::LabelSelector;

/// The controller reference of an object, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// A controller reference pointing at `owner`.
pub fn controller_ref(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// What a controller should do about one candidate object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Owned and matching: it counts.
    Keep,
    /// An orphan the selector matches: take it.
    Adopt,
    /// Owned but no longer matching: let it go.
    Release,
    /// Someone else's, or not ours to take.
    Ignore,
}

/// Pure claim rule (Kubernetes' `ClaimObject`). Objects being deleted are
/// never adopted, and an owner being deleted adopts nothing.
pub fn claim(
    owner_uid: &str,
    owner_deleting: bool,
    selector: &LabelSelector,
    dependent: &ObjectMeta,
) -> Claim {
    let empty = BTreeMap::new();
    let labels = dependent.labels.as_ref().unwrap_or(&empty);
    let matches = !selector.is_empty() && selector.matches(labels);
    match controller_of(dependent) {
        Some(r) if r.uid == owner_uid => {
            if matches {
                Claim::Keep
            } else if owner_deleting {
                // A deleting owner keeps what it has; the GC takes it.
                Claim::Keep
            } else {
                Claim::Release
            }
        }
        Some(_) => Claim::Ignore,
        None if matches && !owner_deleting && dependent.deletion_timestamp.is_none() => {
            Claim::Adopt
        }
        None => Claim::Ignore,
    }
}

/// `meta` with `reference` added as its controller.
pub fn with_owner(meta: &ObjectMeta, reference: OwnerReference) -> ObjectMeta {
    let mut meta = meta.clone();
    let refs = meta.owner_references.get_or_insert_with(Vec::new);
    refs.retain(|r| r.uid != reference.uid);
    refs.push(reference);
    meta
}

/// `meta` without any reference to `owner_uid`.
pub fn without_owner(meta: &ObjectMeta, owner_uid: &str) -> ObjectMeta {
    let mut meta = meta.clone();
    if let Some(refs) = meta.owner_references.as_mut() {
        refs.retain(|r| r.uid != owner_uid);
        if refs.is_empty() {
            meta.owner_references = None;
        }
    }
    meta
}

/// `namespace/name` of an object.
pub fn key_of(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or("")
    )
}

/// Splits `namespace/name`.
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("default", key))
}

/// True when a write failed only because someone else wrote first (409) or
/// the object is already gone (404): the watch brings the news, so the
/// reconcile is retried quietly instead of reported.
pub fn is_conflict_or_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(labels: &[(&str, &str)], owner: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some("p".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            owner_references: owner.map(|uid| {
                vec![OwnerReference {
                    uid: uid.into(),
                    controller: Some(true),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }
    }

    #[test]
    fn claim_adopts_orphans_releases_mismatches_and_leaves_others_alone() {
        let sel = LabelSelector::parse("app=web").unwrap_or_else(|_| LabelSelector::default());
        assert_eq!(
            claim("u", false, &sel, &meta(&[("app", "web")], Some("u"))),
            Claim::Keep
        );
        assert_eq!(
            claim("u", false, &sel, &meta(&[("app", "web")], None)),
            Claim::Adopt
        );
        assert_eq!(
            claim("u", true, &sel, &meta(&[("app", "web")], None)),
            Claim::Ignore
        );
        assert_eq!(
            claim("u", false, &sel, &meta(&[("app", "db")], Some("u"))),
            Claim::Release
        );
        assert_eq!(
            claim("u", false, &sel, &meta(&[("app", "web")], Some("x"))),
            Claim::Ignore
        );
        // An empty selector selects nothing here, never everything.
        let all = LabelSelector::default();
        assert_eq!(
            claim("u", false, &all, &meta(&[("app", "web")], None)),
            Claim::Ignore
        );
    }

    #[test]
    fn owner_refs_are_added_once_and_removed() {
        let owner = ObjectMeta {
            name: Some("rs".into()),
            uid: Some("u".into()),
            ..Default::default()
        };
        let r = controller_ref("apps/v1", "ReplicaSet", &owner);
        let m = with_owner(&with_owner(&ObjectMeta::default(), r.clone()), r);
        assert_eq!(m.owner_references.as_ref().map(Vec::len), Some(1));
        assert_eq!(without_owner(&m, "u").owner_references, None);
    }
}
