//! Who controls what: ownerReferences, adoption and release.
//!
//! A controller owns the objects whose controller reference carries its uid.
//! Like Kubernetes' `ControllerRefManager`, it adopts orphans its selector
//! matches and releases owned objects that stopped matching, so relabelling
//! a pod takes it out of its ReplicaSet and a hand-made pod with the right
//! labels is counted instead of duplicated.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as K8sLabelSelector, ObjectMeta, OwnerReference,
};
use kube::Resource;
use kube::runtime::reflector::Store;
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

/// Keys (`namespace/name`) of the owners of kind `owner_kind` that an event
/// about a dependent concerns: its controller if that is an `owner_kind`,
/// else every owner in its namespace whose selector matches its labels
/// (a candidate for adoption). `selector` reads an owner's label selector.
pub fn owner_keys_for<K>(
    dependent: &ObjectMeta,
    owner_kind: &str,
    owners: &Store<K>,
    selector: impl Fn(&K) -> Option<&K8sLabelSelector>,
) -> Vec<String>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let ns = dependent.namespace.as_deref().unwrap_or("default");
    if let Some(r) = controller_of(dependent) {
        return if r.kind == owner_kind {
            vec![format!("{ns}/{}", r.name)]
        } else {
            Vec::new()
        };
    }
    let labels = dependent.labels.clone().unwrap_or_default();
    owners
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(ns))
        .filter(|o| {
            selector(o)
                .and_then(|s| LabelSelector::from_k8s(s).ok())
                .is_some_and(|sel| !sel.is_empty() && sel.matches(&labels))
        })
        .map(|o| key_of(o.meta()))
        .collect()
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

    #[test]
    fn events_of_a_dependent_reach_its_controller_or_matching_owners() {
        use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
        use kube::runtime::watcher::Event;
        let rs = |name: &str, ns: &str, app: &str| ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                selector: K8sLabelSelector {
                    match_labels: Some([("app".to_string(), app.to_string())].into()),
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        let (store, mut writer) = kube::runtime::reflector::store::<ReplicaSet>();
        for r in [
            rs("web", "default", "web"),
            rs("api", "default", "api"),
            rs("web", "other", "web"),
        ] {
            writer.apply_watcher_event(&Event::Apply(r));
        }
        fn selector(o: &ReplicaSet) -> Option<&K8sLabelSelector> {
            o.spec.as_ref().map(|s| &s.selector)
        }
        let mut orphan = meta(&[("app", "web")], None);
        orphan.namespace = Some("default".into());
        assert_eq!(
            owner_keys_for(&orphan, "ReplicaSet", &store, selector),
            vec!["default/web".to_string()],
            "an orphan concerns the owners in its namespace whose selector matches"
        );
        // A pod controlled by ReplicaSet `api` concerns that one only, even
        // though its labels would match `web` too.
        let mut owned = meta(&[("app", "web")], Some("uid-1"));
        owned.namespace = Some("default".into());
        if let Some(r) = owned.owner_references.as_mut().and_then(|o| o.first_mut()) {
            r.kind = "ReplicaSet".into();
            r.name = "api".into();
        }
        assert_eq!(
            owner_keys_for(&owned, "ReplicaSet", &store, selector),
            vec!["default/api".to_string()]
        );
        assert!(
            owner_keys_for(&owned, "Deployment", &store, |_: &ReplicaSet| None).is_empty(),
            "a dependent controlled by another kind concerns no owner of this kind"
        );
    }
}
