//! EndpointSlice and Endpoints controller: for every Service with a
//! selector, the addresses of the pods it selects.
//!
//! Each reconcile computes, from the caches, the endpoints of one Service
//! (pods with an IP and a node, not finished; ready, serving and
//! terminating conditions; ports resolved per pod, named target ports
//! looked up in its containers) and brings two views in line: the
//! discovery.k8s.io/v1 EndpointSlices labelled
//! `kubernetes.io/service-name` and owned by the Service (one per distinct
//! port mapping, at most [`MAX_ENDPOINTS_PER_SLICE`] endpoints each, one
//! empty placeholder when nothing is selected), and the core/v1 Endpoints
//! object named like the Service (ready addresses and not-ready ones), as
//! Kubernetes' endpointslice and endpoints controllers do. Objects are
//! written only when their content changes; a Service that is gone takes
//! its slices and Endpoints with it.
//!
//! Slices are created with `generateName`, so a cache that lags behind our
//! own creations would make a second reconcile create them again: created
//! names are remembered until the cache shows them (as the ReplicaSet
//! controller's expectations do).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CoreEndpointPort, EndpointSubset, Endpoints, ObjectReference,
    Pod, Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::time::Instant;

use crate::framework::{Action, Reconciler};
use crate::ownership;

/// Label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Label Kubernetes puts on the slices and Endpoints of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Kubernetes' `--max-endpoints-per-slice` default.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// How long a created slice is waited for before the cache is believed.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);
/// How soon to look again after losing a write race.
const RETRY_SOON: Duration = Duration::from_millis(200);

/// Errors from the EndpointSlice controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{what} {key}: {source}")]
    Api {
        /// What was being done.
        what: &'static str,
        /// Service key.
        key: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

/// The selector of a Service, when it has a non-empty one (Services without
/// one have their endpoints managed by someone else).
pub fn selector_of(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// Whether `labels` carry every key/value of `selector`.
fn selects(selector: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn is_pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ip(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .filter(|ip| !ip.is_empty())
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Whether a selected pod has an endpoint at all (`ShouldPodBeInEndpoints`):
/// it has an address and a node and has not finished.
pub fn has_endpoint(pod: &Pod) -> bool {
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    !finished && pod_ip(pod).is_some() && node_name(pod).is_some()
}

/// The port a Service port reaches on `pod` (`podutil.FindPort`): a number
/// as is, a name looked up among the pod's container ports of the same
/// protocol; `None` when the name is not there.
pub fn resolve_target_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    match port.target_port.as_ref() {
        None => Some(port.port),
        Some(IntOrString::Int(n)) if *n == 0 => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

fn service_ports(svc: &Service) -> &[ServicePort] {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or(&[])
}

/// The slice ports of `pod` for `svc`: one per Service port that resolves.
fn slice_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    service_ports(svc)
        .iter()
        .filter_map(|sp| {
            resolve_target_port(pod, sp).map(|port| EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

fn publishes_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// The endpoint of `pod` (which [`has_endpoint`]): `serving` follows the
/// pod's Ready condition, `ready` too but never while terminating, unless
/// the Service publishes not-ready addresses (then always).
fn endpoint(svc: &Service, pod: &Pod) -> Endpoint {
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let serving = is_pod_ready(pod);
    let ready = publishes_not_ready(svc) || (serving && !terminating);
    Endpoint {
        addresses: vec![pod_ip(pod).unwrap_or_default().to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        node_name: node_name(pod).map(str::to_string),
        target_ref: Some(target_ref(pod)),
        ..Default::default()
    }
}

/// The pods of `svc`'s namespace its selector picks that have an endpoint,
/// by name.
fn selected_pods<'a>(svc: &Service, pods: &'a [&'a Pod]) -> Vec<&'a Pod> {
    let Some(selector) = selector_of(svc) else {
        return Vec::new();
    };
    let ns = svc.metadata.namespace.as_deref();
    let mut out: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| p.metadata.namespace.as_deref() == ns)
        .filter(|p| selects(selector, p.metadata.labels.as_ref()))
        .filter(|p| has_endpoint(p))
        .collect();
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out
}

/// What the slices of `svc` should hold: (ports, endpoints) groups, one
/// per distinct port mapping, each at most [`MAX_ENDPOINTS_PER_SLICE`]
/// long; one empty group when no pod is selected.
pub fn desired_slices(svc: &Service, pods: &[&Pod]) -> Vec<(Vec<EndpointPort>, Vec<Endpoint>)> {
    let mut groups: Vec<(Vec<EndpointPort>, Vec<Endpoint>)> = Vec::new();
    for pod in selected_pods(svc, pods) {
        let ports = slice_ports(svc, pod);
        match groups.iter_mut().find(|(p, _)| *p == ports) {
            Some((_, eps)) => eps.push(endpoint(svc, pod)),
            None => groups.push((ports, vec![endpoint(svc, pod)])),
        }
    }
    let mut out = Vec::new();
    for (ports, eps) in groups {
        for chunk in eps.chunks(MAX_ENDPOINTS_PER_SLICE) {
            out.push((ports.clone(), chunk.to_vec()));
        }
    }
    if out.is_empty() {
        out.push((Vec::new(), Vec::new()));
    }
    out
}

/// The core/v1 subsets of `svc` (the endpoints controller's view): pods
/// grouped by their resolved ports, ready ones as `addresses`, the others
/// as `notReadyAddresses`. Terminating pods are left out unless the
/// Service publishes not-ready addresses.
pub fn desired_subsets(svc: &Service, pods: &[&Pod]) -> Vec<EndpointSubset> {
    let publish_not_ready = publishes_not_ready(svc);
    let mut subsets: Vec<EndpointSubset> = Vec::new();
    for pod in selected_pods(svc, pods) {
        if pod.metadata.deletion_timestamp.is_some() && !publish_not_ready {
            continue;
        }
        let ports: Vec<CoreEndpointPort> = service_ports(svc)
            .iter()
            .filter_map(|sp| {
                resolve_target_port(pod, sp).map(|port| CoreEndpointPort {
                    name: sp.name.clone().filter(|n| !n.is_empty()),
                    port,
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        // A Service with ports reaches a pod only through a port that resolves.
        if ports.is_empty() && !service_ports(svc).is_empty() {
            continue;
        }
        let address = EndpointAddress {
            ip: pod_ip(pod).unwrap_or_default().to_string(),
            node_name: node_name(pod).map(str::to_string),
            target_ref: Some(target_ref(pod)),
            ..Default::default()
        };
        let ready = is_pod_ready(pod) || publish_not_ready;
        let ports = (!ports.is_empty()).then_some(ports);
        let subset = match subsets.iter_mut().find(|s| s.ports == ports) {
            Some(s) => s,
            None => {
                subsets.push(EndpointSubset {
                    ports,
                    ..Default::default()
                });
                let last = subsets.len() - 1;
                &mut subsets[last]
            }
        };
        let list = if ready {
            subset.addresses.get_or_insert_with(Vec::new)
        } else {
            subset.not_ready_addresses.get_or_insert_with(Vec::new)
        };
        list.push(address);
    }
    // Kubernetes orders addresses by IP, then by pod uid.
    let order = |a: &EndpointAddress, b: &EndpointAddress| {
        a.ip.cmp(&b.ip).then_with(|| {
            let uid = |x: &EndpointAddress| x.target_ref.as_ref().and_then(|r| r.uid.clone());
            uid(a).cmp(&uid(b))
        })
    };
    for s in &mut subsets {
        for list in [&mut s.addresses, &mut s.not_ready_addresses]
            .into_iter()
            .flatten()
        {
            list.sort_by(order);
        }
    }
    subsets
}

/// Labels of the slices and Endpoints of `svc`: the Service's own, the
/// service name, and whether it is headless.
fn derived_labels(svc: &Service, slice: bool) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    if slice {
        labels.insert(
            SERVICE_NAME_LABEL.into(),
            svc.metadata.name.clone().unwrap_or_default(),
        );
        labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    }
    let headless = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    if headless {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// Whether a cached slice is one of this controller's for `svc_name` in `ns`.
fn is_managed_slice(slice: &EndpointSlice, ns: &str, svc_name: &str) -> bool {
    let labels = slice.metadata.labels.as_ref();
    slice.metadata.namespace.as_deref() == Some(ns)
        && labels
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .map(String::as_str)
            == Some(svc_name)
        && labels
            .and_then(|l| l.get(MANAGED_BY_LABEL))
            .map(String::as_str)
            == Some(MANAGED_BY)
}

/// Keys of the Services a pod event concerns: those in its namespace that
/// select it now, and those whose slices list it (it may have stopped
/// matching).
pub fn keys_for_pod(
    pod: &Pod,
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
) -> Vec<String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let mut keys: Vec<String> = services
        .state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
        .filter(|s| selector_of(s).is_some_and(|sel| selects(sel, pod.metadata.labels.as_ref())))
        .map(|s| ownership::key_of(&s.metadata))
        .collect();
    for slice in slices.state().iter() {
        if slice.metadata.namespace.as_deref() != Some(ns) {
            continue;
        }
        let lists_pod = slice.endpoints.iter().any(|e| {
            e.target_ref
                .as_ref()
                .is_some_and(|r| r.name.as_deref() == Some(name))
        });
        if let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .filter(|_| lists_pod)
        {
            let key = format!("{ns}/{svc}");
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    keys
}

/// The Service key a slice event concerns.
pub fn key_for_slice(slice: &EndpointSlice) -> Option<String> {
    let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(format!(
        "{}/{svc}",
        slice.metadata.namespace.as_deref().unwrap_or("default")
    ))
}

/// The EndpointSlice reconciler (key = Service `namespace/name`).
pub struct EndpointSliceController {
    client: Client,
    services: Store<Service>,
    pods: Store<Pod>,
    slices: Store<EndpointSlice>,
    endpoints: Store<Endpoints>,
    /// Slice names created per Service key, not yet seen in the cache.
    created: HashMap<String, (HashSet<String>, Instant)>,
}

impl EndpointSliceController {
    /// A reconciler reading the given caches.
    pub fn new(
        client: Client,
        services: Store<Service>,
        pods: Store<Pod>,
        slices: Store<EndpointSlice>,
        endpoints: Store<Endpoints>,
    ) -> Self {
        EndpointSliceController {
            client,
            services,
            pods,
            slices,
            endpoints,
            created: HashMap::new(),
        }
    }

    /// `Some(wait)` while slices this controller created for `key` are not
    /// in the cache yet.
    fn unmet_creations(&mut self, key: &str, cached: &[&EndpointSlice]) -> Option<Duration> {
        let (names, since) = self.created.get_mut(key)?;
        names.retain(|n| !cached.iter().any(|s| s.metadata.name.as_deref() == Some(n)));
        let age = since.elapsed();
        if names.is_empty() || age >= EXPECTATION_TTL {
            self.created.remove(key);
            return None;
        }
        Some(RETRY_SOON.min(EXPECTATION_TTL - age))
    }

    async fn sync_slices(
        &mut self,
        key: &str,
        svc: &Service,
        cached: Vec<EndpointSlice>,
        pods: &[&Pod],
    ) -> Result<bool, Error> {
        let (ns, name) = ownership::split_key(key);
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let err = |what: &'static str| {
            let key = key.to_string();
            move |source| Error::Api { what, key, source }
        };
        let uid = svc.metadata.uid.clone().unwrap_or_default();
        let owner = ownership::controller_ref("v1", "Service", &svc.metadata);
        let labels = derived_labels(svc, true);
        let mut raced = false;
        // Slices of an earlier Service of the same name go.
        let (mut mine, stale): (Vec<EndpointSlice>, Vec<EndpointSlice>) =
            cached.into_iter().partition(|s| {
                s.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == uid)
            });
        let mut doomed = stale;
        let mut to_write: Vec<(Option<EndpointSlice>, Vec<EndpointPort>, Vec<Endpoint>)> =
            Vec::new();
        for (ports, eps) in desired_slices(svc, pods) {
            // Prefer a slice with the same ports (the usual case: only
            // endpoints change), else reuse any left over.
            let pos = mine
                .iter()
                .position(|s| s.ports.as_deref().unwrap_or(&[]) == ports.as_slice())
                .or(if mine.is_empty() { None } else { Some(0) });
            let existing = pos.map(|i| mine.remove(i));
            to_write.push((existing, ports, eps));
        }
        doomed.extend(mine);
        for (existing, ports, eps) in to_write {
            let ports = (!ports.is_empty()).then_some(ports);
            match existing {
                Some(slice) => {
                    let unchanged = slice.endpoints == eps
                        && slice.ports == ports
                        && slice.address_type == "IPv4"
                        && slice.metadata.labels.as_ref() == Some(&labels)
                        && slice.metadata.owner_references.as_ref() == Some(&vec![owner.clone()]);
                    if unchanged {
                        continue;
                    }
                    let mut updated = slice.clone();
                    updated.endpoints = eps;
                    updated.ports = ports;
                    updated.metadata.labels = Some(labels.clone());
                    updated.metadata.owner_references = Some(vec![owner.clone()]);
                    let slice_name = slice.metadata.name.clone().unwrap_or_default();
                    match api
                        .replace(&slice_name, &PostParams::default(), &updated)
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if ownership::is_conflict_or_gone(&e) => raced = true,
                        Err(e) => return Err(err("updating endpointslice of")(e)),
                    }
                }
                None => {
                    let slice = EndpointSlice {
                        metadata: ObjectMeta {
                            generate_name: Some(format!("{name}-")),
                            namespace: Some(ns.to_string()),
                            labels: Some(labels.clone()),
                            owner_references: Some(vec![owner.clone()]),
                            ..Default::default()
                        },
                        address_type: "IPv4".into(),
                        endpoints: eps,
                        ports,
                    };
                    let created = api
                        .create(&PostParams::default(), &slice)
                        .await
                        .map_err(err("creating endpointslice for"))?;
                    let entry = self
                        .created
                        .entry(key.to_string())
                        .or_insert_with(|| (HashSet::new(), Instant::now()));
                    entry.0.insert(created.metadata.name.unwrap_or_default());
                    entry.1 = Instant::now();
                }
            }
        }
        for slice in doomed {
            raced |= delete_slice(&api, &slice)
                .await
                .map_err(err("deleting endpointslice of"))?;
        }
        Ok(raced)
    }

    async fn sync_endpoints(&self, key: &str, svc: &Service, pods: &[&Pod]) -> Result<bool, Error> {
        let (ns, name) = ownership::split_key(key);
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
        let err = |what: &'static str| {
            let key = key.to_string();
            move |source| Error::Api { what, key, source }
        };
        let subsets = desired_subsets(svc, pods);
        let subsets = (!subsets.is_empty()).then_some(subsets);
        let labels = derived_labels(svc, false);
        let labels = (!labels.is_empty()).then_some(labels);
        let current = self.endpoints.get(&ObjectRef::new(name).within(ns));
        let result = match current {
            Some(ep) if ep.subsets == subsets && ep.metadata.labels == labels => return Ok(false),
            Some(ep) => {
                let mut updated = (*ep).clone();
                updated.subsets = subsets;
                updated.metadata.labels = labels;
                api.replace(name, &PostParams::default(), &updated)
                    .await
                    .map(|_| ())
            }
            None => {
                let ep = Endpoints {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        namespace: Some(ns.to_string()),
                        labels,
                        ..Default::default()
                    },
                    subsets,
                };
                api.create(&PostParams::default(), &ep).await.map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(false),
            // Someone wrote first (or our cache lags): look again.
            Err(e) if ownership::is_conflict_or_gone(&e) => Ok(true),
            Err(e) => Err(err("writing endpoints of")(e)),
        }
    }

    /// The Service is gone: its slices and Endpoints go too.
    async fn clean_up(&mut self, key: &str, slices: Vec<EndpointSlice>) -> Result<(), Error> {
        let (ns, name) = ownership::split_key(key);
        self.created.remove(key);
        let err = |what: &'static str| {
            let key = key.to_string();
            move |source| Error::Api { what, key, source }
        };
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        for slice in slices {
            delete_slice(&api, &slice)
                .await
                .map_err(err("deleting endpointslice of"))?;
        }
        if let Some(ep) = self.endpoints.get(&ObjectRef::new(name).within(ns)) {
            let api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: ep.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match api.delete(name, &dp).await {
                Ok(_) => {}
                Err(e) if ownership::is_conflict_or_gone(&e) => {}
                Err(e) => return Err(err("deleting endpoints of")(e)),
            }
        }
        Ok(())
    }
}

/// Deletes one slice (by uid); `Ok(true)` when it had changed or gone.
async fn delete_slice(
    api: &Api<EndpointSlice>,
    slice: &EndpointSlice,
) -> Result<bool, kube::Error> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: slice.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api
        .delete(slice.metadata.name.as_deref().unwrap_or(""), &dp)
        .await
    {
        Ok(_) => Ok(false),
        Err(e) if ownership::is_conflict_or_gone(&e) => Ok(true),
        Err(e) => Err(e),
    }
}

impl Reconciler for EndpointSliceController {
    type Error = Error;

    fn all_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .services
            .state()
            .iter()
            .map(|s| ownership::key_of(&s.metadata))
            .collect();
        // Slices whose Service went while we were not watching.
        for slice in self.slices.state().iter() {
            if slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(MANAGED_BY_LABEL))
                == Some(&MANAGED_BY.to_string())
                && let Some(k) = key_for_slice(slice)
                && !keys.contains(&k)
            {
                keys.push(k);
            }
        }
        keys
    }

    async fn reconcile(&mut self, key: &str) -> Result<Action, Error> {
        let (ns, name) = ownership::split_key(key);
        let cached: Vec<EndpointSlice> = self
            .slices
            .state()
            .iter()
            .filter(|s| is_managed_slice(s, ns, name))
            .map(|s| (**s).clone())
            .collect();
        let Some(svc) = self.services.get(&ObjectRef::new(name).within(ns)) else {
            self.clean_up(key, cached).await?;
            return Ok(Action::AwaitChange);
        };
        if selector_of(&svc).is_none() {
            // Endpoints of selector-less Services are the user's; slices we
            // made while it had a selector go.
            self.created.remove(key);
            let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
            for slice in cached {
                delete_slice(&api, &slice)
                    .await
                    .map_err(|source| Error::Api {
                        what: "deleting endpointslice of",
                        key: key.to_string(),
                        source,
                    })?;
            }
            return Ok(Action::AwaitChange);
        }
        if svc.metadata.deletion_timestamp.is_some() {
            return Ok(Action::AwaitChange);
        }
        let refs: Vec<&EndpointSlice> = cached.iter().collect();
        if let Some(wait) = self.unmet_creations(key, &refs) {
            return Ok(Action::Requeue(wait));
        }
        let all_pods = self.pods.state();
        let pods: Vec<&Pod> = all_pods
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
            .collect();
        let raced_slices = self.sync_slices(key, &svc, cached, &pods).await?;
        let raced_endpoints = self.sync_endpoints(key, &svc, &pods).await?;
        if raced_slices || raced_endpoints {
            return Ok(Action::Requeue(RETRY_SOON));
        }
        Ok(Action::AwaitChange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn svc(target: IntOrString) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("svc-uid".into()),
                labels: Some([("tier".to_string(), "fe".to_string())].into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(target),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pod(name: &str, ip: &str, ready: bool, container_port: i32) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn numbered_and_named_target_ports_resolve_per_pod() {
        let p = pod("a", "10.0.0.1", true, 8080);
        let named = svc(IntOrString::String("http".into()));
        assert_eq!(
            resolve_target_port(&p, &service_ports(&named)[0]),
            Some(8080)
        );
        let numbered = svc(IntOrString::Int(9090));
        assert_eq!(
            resolve_target_port(&p, &service_ports(&numbered)[0]),
            Some(9090)
        );
        let missing = svc(IntOrString::String("admin".into()));
        assert_eq!(resolve_target_port(&p, &service_ports(&missing)[0]), None);
        let mut udp = service_ports(&named)[0].clone();
        udp.protocol = Some("UDP".into());
        assert_eq!(resolve_target_port(&p, &udp), None, "protocols must match");
    }

    #[test]
    fn slices_carry_conditions_targets_and_group_by_port_mapping() {
        let s = svc(IntOrString::String("http".into()));
        let a = pod("a", "10.0.0.1", true, 8080);
        let b = pod("b", "10.0.0.2", false, 8080);
        let mut c = pod("c", "10.0.0.3", true, 9090);
        c.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let mut done = pod("d", "10.0.0.4", true, 8080);
        if let Some(st) = done.status.as_mut() {
            st.phase = Some("Succeeded".into());
        }
        let mut no_ip = pod("e", "", true, 8080);
        if let Some(st) = no_ip.status.as_mut() {
            st.pod_ip = None;
        }
        let mut other = pod("f", "10.0.0.6", true, 8080);
        other.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
        let pods = [&a, &b, &c, &done, &no_ip, &other];
        let slices = desired_slices(&s, &pods);
        assert_eq!(slices.len(), 2, "{slices:?}");
        let (ports, eps) = &slices[0];
        assert_eq!(ports[0].port, Some(8080));
        assert_eq!(ports[0].name.as_deref(), Some("http"));
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].addresses, vec!["10.0.0.1"]);
        assert_eq!(eps[0].node_name.as_deref(), Some("node-1"));
        let target = eps[0].target_ref.as_ref().expect("targetRef");
        assert_eq!(
            (
                target.kind.as_deref(),
                target.name.as_deref(),
                target.uid.as_deref()
            ),
            (Some("Pod"), Some("a"), Some("uid-a"))
        );
        let cond = |e: &Endpoint| {
            let c = e.conditions.clone().unwrap_or_default();
            (c.ready, c.serving, c.terminating)
        };
        assert_eq!(cond(&eps[0]), (Some(true), Some(true), Some(false)));
        assert_eq!(cond(&eps[1]), (Some(false), Some(false), Some(false)));
        let (ports, eps) = &slices[1];
        assert_eq!(ports[0].port, Some(9090));
        assert_eq!(cond(&eps[0]), (Some(false), Some(true), Some(true)));
        // Nothing selected: one placeholder without ports or endpoints.
        assert_eq!(desired_slices(&s, &[&other]), vec![(vec![], vec![])]);
    }

    #[test]
    fn endpoints_split_ready_and_not_ready_and_skip_terminating() {
        let s = svc(IntOrString::Int(8080));
        let a = pod("a", "10.0.0.2", true, 8080);
        let b = pod("b", "10.0.0.1", false, 8080);
        let mut c = pod("c", "10.0.0.3", true, 8080);
        c.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let subsets = desired_subsets(&s, &[&a, &b, &c]);
        assert_eq!(subsets.len(), 1);
        let ips = |l: &Option<Vec<EndpointAddress>>| -> Vec<String> {
            l.iter().flatten().map(|a| a.ip.clone()).collect()
        };
        assert_eq!(ips(&subsets[0].addresses), vec!["10.0.0.2"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), vec!["10.0.0.1"]);
        let port = &subsets[0].ports.as_ref().expect("ports")[0];
        assert_eq!((port.port, port.name.as_deref()), (8080, Some("http")));
        assert!(desired_subsets(&s, &[]).is_empty());
    }

    #[test]
    fn publishing_not_ready_addresses_makes_every_endpoint_ready() {
        let mut s = svc(IntOrString::Int(8080));
        if let Some(spec) = s.spec.as_mut() {
            spec.publish_not_ready_addresses = Some(true);
        }
        let b = pod("b", "10.0.0.1", false, 8080);
        let slices = desired_slices(&s, &[&b]);
        let c = slices[0].1[0].conditions.clone().unwrap_or_default();
        assert_eq!((c.ready, c.serving), (Some(true), Some(false)));
        let subsets = desired_subsets(&s, &[&b]);
        assert_eq!(subsets[0].addresses.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn slices_hold_at_most_a_hundred_endpoints() {
        let s = svc(IntOrString::Int(8080));
        let pods: Vec<Pod> = (0..250)
            .map(|i| pod(&format!("p{i:03}"), "10.0.0.1", true, 8080))
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let sizes: Vec<usize> = desired_slices(&s, &refs)
            .iter()
            .map(|(_, e)| e.len())
            .collect();
        assert_eq!(sizes, vec![100, 100, 50]);
    }

    #[test]
    fn selectorless_and_external_name_services_are_not_managed() {
        let mut s = svc(IntOrString::Int(80));
        assert!(selector_of(&s).is_some());
        if let Some(spec) = s.spec.as_mut() {
            spec.type_ = Some("ExternalName".into());
        }
        assert!(selector_of(&s).is_none());
        let mut s = svc(IntOrString::Int(80));
        if let Some(spec) = s.spec.as_mut() {
            spec.selector = Some(BTreeMap::new());
        }
        assert!(selector_of(&s).is_none());
        let labels = derived_labels(&svc(IntOrString::Int(80)), true);
        assert_eq!(
            labels.get(SERVICE_NAME_LABEL).map(String::as_str),
            Some("web")
        );
        assert_eq!(
            labels.get(MANAGED_BY_LABEL).map(String::as_str),
            Some(MANAGED_BY)
        );
        assert_eq!(labels.get("tier").map(String::as_str), Some("fe"));
    }
}
