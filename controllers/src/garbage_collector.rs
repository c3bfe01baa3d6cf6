//! Garbage collector: deletes dependents whose owners are gone.
//!
//! Kubernetes' Background propagation: the owner is deleted at once and its
//! dependents follow. A dependent (a Pod or a ReplicaSet) is deleted when
//! every owner it names is gone; owners are looked up in the caches first
//! and, when missing there, confirmed with a live read — the caches fill in
//! no particular order, so an owner created a moment ago may not be cached
//! yet, and a same-named owner with another uid is a different object.
//! Owners of kinds this collector does not watch are assumed present.
//!
//! Orphan and Foreground propagation ride on finalizers, as in Kubernetes:
//! an owner being deleted that still carries `orphan` has its dependents'
//! references to it removed, then the finalizer; one carrying
//! `foregroundDeletion` has its dependents deleted and loses the finalizer
//! once none is left. (The apiserver does not yet turn a DELETE's
//! `propagationPolicy` into these finalizers, so today they apply when set
//! on the object itself.)

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::framework::{Action, Reconciler};
use crate::ownership;

/// Finalizer asking for dependents to be orphaned.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// Finalizer asking for dependents to be deleted before the owner.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// Errors from the garbage collector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{what} {key}: {source}")]
    Api {
        /// What was being done.
        what: &'static str,
        /// Dependent key.
        key: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

/// The kinds of dependents the collector tracks, as key prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependent {
    /// core/v1 Pod.
    Pod,
    /// apps/v1 ReplicaSet.
    ReplicaSet,
}

impl Dependent {
    fn prefix(self) -> &'static str {
        match self {
            Dependent::Pod => "pods",
            Dependent::ReplicaSet => "replicasets",
        }
    }

    /// `<plural>/<namespace>/<name>`.
    pub fn key(self, meta: &ObjectMeta) -> String {
        format!("{}/{}", self.prefix(), ownership::key_of(meta))
    }

    /// The key of the owner-side work for an owner of this dependent's
    /// owner kind: `owner/<owner plural>/<namespace>/<name>`.
    pub fn owner_key(self, namespace: &str, owner: &str) -> String {
        let plural = match self {
            Dependent::Pod => "replicasets",
            Dependent::ReplicaSet => "deployments",
        };
        format!("owner/{plural}/{namespace}/{owner}")
    }

    /// The owner kind (ReplicaSet for pods, Deployment for ReplicaSets).
    fn owner_kind(self) -> &'static str {
        match self {
            Dependent::Pod => "ReplicaSet",
            Dependent::ReplicaSet => "Deployment",
        }
    }

    /// Owner-side keys for the owners of `meta` this collector handles.
    pub fn owner_keys(self, meta: &ObjectMeta) -> Vec<String> {
        let ns = meta.namespace.as_deref().unwrap_or("default");
        meta.owner_references
            .iter()
            .flatten()
            .filter_map(|r| {
                if r.kind == self.owner_kind() {
                    Some(self.owner_key(ns, &r.name))
                } else if self == Dependent::Pod && r.kind == "Job" {
                    Some(job_owner_key(ns, &r.name))
                } else if self == Dependent::Pod && r.kind == "DaemonSet" {
                    Some(daemonset_owner_key(ns, &r.name))
                } else {
                    None
                }
            })
            .collect()
    }

    fn parse_owner(key: &str) -> Option<(Dependent, &str, &str)> {
        let rest = key.strip_prefix("owner/")?;
        let (plural, rest) = rest.split_once('/')?;
        let dependents = match plural {
            "replicasets" => Dependent::Pod,
            "deployments" => Dependent::ReplicaSet,
            _ => return None,
        };
        let (ns, name) = rest.split_once('/')?;
        Some((dependents, ns, name))
    }

    fn parse(key: &str) -> Option<(Dependent, &str, &str)> {
        let (prefix, rest) = key.split_once('/')?;
        let kind = match prefix {
            "pods" => Dependent::Pod,
            "replicasets" => Dependent::ReplicaSet,
            _ => return None,
        };
        let (ns, name) = rest.split_once('/')?;
        Some((kind, ns, name))
    }
}

/// The owner-side key of a Job (whose dependents are pods):
/// `owner/jobs/<namespace>/<name>`.
pub fn job_owner_key(namespace: &str, job: &str) -> String {
    format!("owner/jobs/{namespace}/{job}")
}

fn parse_job_owner(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix("owner/jobs/")?.split_once('/')
}

/// The owner-side key of a DaemonSet (whose dependents are pods):
/// `owner/daemonsets/<namespace>/<name>`.
pub fn daemonset_owner_key(namespace: &str, daemonset: &str) -> String {
    format!("owner/daemonsets/{namespace}/{daemonset}")
}

fn parse_daemonset_owner(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix("owner/daemonsets/")?.split_once('/')
}

/// Whether an owner still exists, as far as one source knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Present with the referenced uid.
    Present,
    /// Absent, or present with another uid.
    Absent,
    /// Not known to this source (not cached, or a kind not watched).
    Unknown,
}

/// True for an owner being deleted that waits on this collector.
pub fn owner_needs_work(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
        && meta
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == ORPHAN_FINALIZER || f == FOREGROUND_FINALIZER)
}

/// Pure rule: a dependent goes when it has owners and all are absent.
pub fn should_delete(owners: &[Owner]) -> bool {
    !owners.is_empty() && owners.iter().all(|o| *o == Owner::Absent)
}

/// Keys of the dependents in `items` that name `owner_uid`.
pub fn dependents_of<K: kube::Resource>(
    items: &[std::sync::Arc<K>],
    kind: Dependent,
    owner_uid: &str,
) -> Vec<String> {
    items
        .iter()
        .filter(|o| refers_to(o.meta(), owner_uid))
        .map(|o| kind.key(o.meta()))
        .collect()
}

/// The garbage collector (keys = `pods/ns/name`, `replicasets/ns/name`).
pub struct GarbageCollector {
    client: Client,
    pods: Store<Pod>,
    replicasets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
}

/// The cached objects in `ns` that name `owner_uid` among their owners.
fn cached_dependents<D>(cache: &Store<D>, ns: &str, owner_uid: &str) -> Vec<D>
where
    D: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    cache
        .state()
        .iter()
        .filter(|d| d.meta().namespace.as_deref() == Some(ns))
        .filter(|d| refers_to(d.meta(), owner_uid))
        .map(|d| (**d).clone())
        .collect()
}

impl GarbageCollector {
    /// A collector reading the given caches.
    pub fn new(
        client: Client,
        pods: Store<Pod>,
        replicasets: Store<ReplicaSet>,
        deployments: Store<Deployment>,
    ) -> Self {
        GarbageCollector {
            client,
            pods,
            replicasets,
            deployments,
        }
    }

    fn cached(&self, ns: &str, r: &OwnerReference) -> Owner {
        let uid = |m: &ObjectMeta| m.uid.clone();
        let found = match (r.api_version.as_str(), r.kind.as_str()) {
            ("apps/v1", "ReplicaSet") => self
                .replicasets
                .get(&ObjectRef::new(&r.name).within(ns))
                .map(|o| uid(&o.metadata)),
            ("apps/v1", "Deployment") => self
                .deployments
                .get(&ObjectRef::new(&r.name).within(ns))
                .map(|o| uid(&o.metadata)),
            // Not cached here: confirmed with a live read.
            ("apps/v1", "DaemonSet") | ("batch/v1", "Job") => None,
            _ => return Owner::Present,
        };
        match found {
            Some(u) if u.as_deref() == Some(r.uid.as_str()) => Owner::Present,
            _ => Owner::Unknown,
        }
    }

    async fn live(&self, ns: &str, r: &OwnerReference) -> Result<Owner, kube::Error> {
        let uid = match r.kind.as_str() {
            "ReplicaSet" => Api::<ReplicaSet>::namespaced(self.client.clone(), ns)
                .get_opt(&r.name)
                .await?
                .and_then(|o| o.metadata.uid),
            "Deployment" => Api::<Deployment>::namespaced(self.client.clone(), ns)
                .get_opt(&r.name)
                .await?
                .and_then(|o| o.metadata.uid),
            "DaemonSet" => Api::<DaemonSet>::namespaced(self.client.clone(), ns)
                .get_opt(&r.name)
                .await?
                .and_then(|o| o.metadata.uid),
            "Job" => Api::<Job>::namespaced(self.client.clone(), ns)
                .get_opt(&r.name)
                .await?
                .and_then(|o| o.metadata.uid),
            _ => return Ok(Owner::Present),
        };
        Ok(if uid.as_deref() == Some(r.uid.as_str()) {
            Owner::Present
        } else {
            Owner::Absent
        })
    }
}

impl Reconciler for GarbageCollector {
    type Error = Error;

    fn all_keys(&self) -> Vec<String> {
        let has_owner = |m: &ObjectMeta| m.owner_references.as_ref().is_some_and(|r| !r.is_empty());
        let pods = self
            .pods
            .state()
            .iter()
            .filter(|p| has_owner(&p.metadata))
            .map(|p| Dependent::Pod.key(&p.metadata))
            .collect::<Vec<_>>();
        let rss = self
            .replicasets
            .state()
            .iter()
            .filter(|r| has_owner(&r.metadata))
            .map(|r| Dependent::ReplicaSet.key(&r.metadata))
            .collect::<Vec<_>>();
        let owners = self
            .replicasets
            .state()
            .iter()
            .filter(|r| owner_needs_work(&r.metadata))
            .map(|r| Dependent::Pod.owner_key(namespace_of(&r.metadata), name_of(&r.metadata)))
            .chain(
                self.deployments
                    .state()
                    .iter()
                    .filter(|d| owner_needs_work(&d.metadata))
                    .map(|d| {
                        Dependent::ReplicaSet
                            .owner_key(namespace_of(&d.metadata), name_of(&d.metadata))
                    }),
            )
            .collect::<Vec<_>>();
        pods.into_iter().chain(rss).chain(owners).collect()
    }

    async fn reconcile(&mut self, key: &str) -> Result<Action, Error> {
        if let Some((ns, name)) = parse_job_owner(key) {
            return self
                .reconcile_live_pod_owner::<Job>(ns, name)
                .await
                .map_err(|source| Error::Api {
                    what: "finalizing",
                    key: key.to_string(),
                    source,
                });
        }
        if let Some((ns, name)) = parse_daemonset_owner(key) {
            return self
                .reconcile_live_pod_owner::<DaemonSet>(ns, name)
                .await
                .map_err(|source| Error::Api {
                    what: "finalizing",
                    key: key.to_string(),
                    source,
                });
        }
        if let Some((dependents, ns, name)) = Dependent::parse_owner(key) {
            return self
                .reconcile_owner(dependents, ns, name)
                .await
                .map_err(|source| Error::Api {
                    what: "finalizing",
                    key: key.to_string(),
                    source,
                });
        }
        let Some((kind, ns, name)) = Dependent::parse(key) else {
            return Ok(Action::AwaitChange);
        };
        let meta = match kind {
            Dependent::Pod => self
                .pods
                .get(&ObjectRef::new(name).within(ns))
                .map(|p| p.metadata.clone()),
            Dependent::ReplicaSet => self
                .replicasets
                .get(&ObjectRef::new(name).within(ns))
                .map(|r| r.metadata.clone()),
        };
        let Some(meta) = meta else {
            return Ok(Action::AwaitChange);
        };
        if meta.deletion_timestamp.is_some() {
            return Ok(Action::AwaitChange);
        }
        let refs = meta.owner_references.clone().unwrap_or_default();
        let mut owners = Vec::with_capacity(refs.len());
        for r in &refs {
            let mut o = self.cached(ns, r);
            if o == Owner::Unknown {
                o = self.live(ns, r).await.map_err(|source| Error::Api {
                    what: "looking up an owner of",
                    key: key.to_string(),
                    source,
                })?;
            }
            owners.push(o);
        }
        if !should_delete(&owners) {
            return Ok(Action::AwaitChange);
        }
        // The cached dependent may predate our own write stripping the
        // reference (an orphaning owner): delete only the version judged.
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: meta.uid.clone(),
                resource_version: meta.resource_version.clone(),
            }),
            ..DeleteParams::background()
        };
        let result = match kind {
            Dependent::Pod => Api::<Pod>::namespaced(self.client.clone(), ns)
                .delete(name, &dp)
                .await
                .map(|_| ()),
            Dependent::ReplicaSet => Api::<ReplicaSet>::namespaced(self.client.clone(), ns)
                .delete(name, &dp)
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => {
                tracing::info!(key, "deleted dependent whose owners are gone");
                Ok(Action::AwaitChange)
            }
            Err(e) if ownership::is_conflict_or_gone(&e) => {
                Ok(Action::Requeue(Duration::from_millis(200)))
            }
            Err(source) => Err(Error::Api {
                what: "deleting",
                key: key.to_string(),
                source,
            }),
        }
    }
}

fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

fn name_of(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

fn refers_to(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|r| r.uid == uid)
}

/// Writes `obj` back without its references to `owner_uid`.
async fn strip_owner<K>(api: &Api<K>, obj: &K, owner_uid: &str) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut updated = obj.clone();
    *updated.meta_mut() = ownership::without_owner(obj.meta(), owner_uid);
    api.replace(name_of(obj.meta()), &PostParams::default(), &updated)
        .await
        .map(|_| ())
}

/// Writes `obj` back without `finalizer` (which, on an object being
/// deleted, lets the API server finish the delete).
async fn drop_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut updated = obj.clone();
    if let Some(f) = updated.meta_mut().finalizers.as_mut() {
        f.retain(|x| x != finalizer);
    }
    api.replace(name_of(obj.meta()), &PostParams::default(), &updated)
        .await
        .map(|_| ())
}

/// Orphan or foreground work for one owner kind: `dependents` of `owner`.
async fn finalize_owner<O, D>(
    owner_api: Api<O>,
    owner: &O,
    dependent_api: Api<D>,
    dependents: Vec<D>,
) -> Result<Action, kube::Error>
where
    O: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    D: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let meta = owner.meta();
    let uid = meta.uid.clone().unwrap_or_default();
    let finalizers = meta.finalizers.clone().unwrap_or_default();
    let retry = Ok(Action::Requeue(Duration::from_millis(200)));
    if finalizers.iter().any(|f| f == ORPHAN_FINALIZER) {
        for d in &dependents {
            match strip_owner(&dependent_api, d, &uid).await {
                Ok(()) => {}
                Err(e) if ownership::is_conflict_or_gone(&e) => return retry,
                Err(e) => return Err(e),
            }
        }
        return match drop_finalizer(&owner_api, owner, ORPHAN_FINALIZER).await {
            Ok(()) => Ok(Action::AwaitChange),
            Err(e) if ownership::is_conflict_or_gone(&e) => retry,
            Err(e) => Err(e),
        };
    }
    if finalizers.iter().any(|f| f == FOREGROUND_FINALIZER) {
        if dependents.is_empty() {
            return match drop_finalizer(&owner_api, owner, FOREGROUND_FINALIZER).await {
                Ok(()) => Ok(Action::AwaitChange),
                Err(e) if ownership::is_conflict_or_gone(&e) => retry,
                Err(e) => Err(e),
            };
        }
        for d in dependents
            .iter()
            .filter(|d| d.meta().deletion_timestamp.is_none())
        {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: d.meta().uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::foreground()
            };
            match dependent_api.delete(name_of(d.meta()), &dp).await {
                Ok(_) => {}
                Err(e) if ownership::is_conflict_or_gone(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    // The dependents' deletion events bring this key back.
    Ok(Action::AwaitChange)
}

impl GarbageCollector {
    /// Orphan or foreground work for a pod owner of kind `O` being deleted
    /// (Jobs, DaemonSets), read live: these owners are not cached here.
    async fn reconcile_live_pod_owner<O>(&self, ns: &str, name: &str) -> Result<Action, kube::Error>
    where
        O: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api = Api::<O>::namespaced(self.client.clone(), ns);
        let Some(owner) = api
            .get_opt(name)
            .await?
            .filter(|o| owner_needs_work(o.meta()))
        else {
            return Ok(Action::AwaitChange);
        };
        let uid = owner.meta().uid.clone().unwrap_or_default();
        let deps: Vec<Pod> = cached_dependents(&self.pods, ns, &uid);
        finalize_owner(
            api,
            &owner,
            Api::<Pod>::namespaced(self.client.clone(), ns),
            deps,
        )
        .await
    }

    async fn reconcile_owner(
        &self,
        dependents: Dependent,
        ns: &str,
        name: &str,
    ) -> Result<Action, kube::Error> {
        match dependents {
            Dependent::Pod => {
                let Some(rs) = self
                    .replicasets
                    .get(&ObjectRef::new(name).within(ns))
                    .filter(|r| owner_needs_work(&r.metadata))
                else {
                    return Ok(Action::AwaitChange);
                };
                let uid = rs.metadata.uid.clone().unwrap_or_default();
                let deps: Vec<Pod> = cached_dependents(&self.pods, ns, &uid);
                finalize_owner(
                    Api::<ReplicaSet>::namespaced(self.client.clone(), ns),
                    rs.as_ref(),
                    Api::<Pod>::namespaced(self.client.clone(), ns),
                    deps,
                )
                .await
            }
            Dependent::ReplicaSet => {
                let Some(d) = self
                    .deployments
                    .get(&ObjectRef::new(name).within(ns))
                    .filter(|d| owner_needs_work(&d.metadata))
                else {
                    return Ok(Action::AwaitChange);
                };
                let uid = d.metadata.uid.clone().unwrap_or_default();
                let deps: Vec<ReplicaSet> = cached_dependents(&self.replicasets, ns, &uid);
                finalize_owner(
                    Api::<Deployment>::namespaced(self.client.clone(), ns),
                    d.as_ref(),
                    Api::<ReplicaSet>::namespaced(self.client.clone(), ns),
                    deps,
                )
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependents_go_only_when_every_owner_is_gone() {
        assert!(should_delete(&[Owner::Absent]));
        assert!(should_delete(&[Owner::Absent, Owner::Absent]));
        assert!(!should_delete(&[Owner::Absent, Owner::Present]));
        assert!(!should_delete(&[]));
    }

    #[test]
    fn keys_round_trip() {
        let meta = ObjectMeta {
            name: Some("web-1".into()),
            namespace: Some("prod".into()),
            ..Default::default()
        };
        let k = Dependent::ReplicaSet.key(&meta);
        assert_eq!(k, "replicasets/prod/web-1");
        assert_eq!(
            Dependent::parse(&k),
            Some((Dependent::ReplicaSet, "prod", "web-1"))
        );
        assert_eq!(Dependent::parse("nodes/x"), None);
        let owner = Dependent::Pod.owner_key("prod", "web-1");
        assert_eq!(owner, "owner/replicasets/prod/web-1");
        assert_eq!(
            Dependent::parse_owner(&owner),
            Some((Dependent::Pod, "prod", "web-1"))
        );
        assert_eq!(Dependent::parse(&owner), None);
        let job = job_owner_key("prod", "pi");
        assert_eq!(parse_job_owner(&job), Some(("prod", "pi")));
        assert_eq!(Dependent::parse_owner(&job), None);
        let pod = ObjectMeta {
            namespace: Some("prod".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name: "pi".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(Dependent::Pod.owner_keys(&pod), vec![job]);
    }

    #[test]
    fn only_deleting_owners_with_propagation_finalizers_need_work() {
        let mut meta = ObjectMeta {
            finalizers: Some(vec![ORPHAN_FINALIZER.into()]),
            ..Default::default()
        };
        assert!(!owner_needs_work(&meta));
        meta.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::UNIX_EPOCH,
        ));
        assert!(owner_needs_work(&meta));
        meta.finalizers = Some(vec!["example.com/other".into()]);
        assert!(!owner_needs_work(&meta));
    }
}
