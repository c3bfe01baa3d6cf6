//! wasmkube-controllers: the controller manager.
//!
//! Each controller is an API client like any other: it watches the objects
//! it cares about into caches, turns events into keys on a de-duplicated
//! queue, and reconciles one key at a time from the cache, writing back
//! through the API with resourceVersion preconditions (a conflict is a
//! requeue). [`framework`] holds that loop; each controller is a module.
//! Controllers now: [`node_lifecycle`] (nodes whose kubelet went silent
//! become `Unknown` and tainted unreachable, their pods evicted),
//! [`replicaset`] (pods per ReplicaSet), [`deployment`] (rollouts through
//! ReplicaSets), [`daemonset`] (one pod per eligible node), [`job`]
//! (pods run to completion), [`endpointslice`] (the endpoints of
//! Services), [`serviceaccount`] (a `default` ServiceAccount per
//! namespace) and
//! [`garbage_collector`] (dependents of deleted owners). [`ownership`] holds
//! the adoption rules they share, [`events`] the Event recorder.

pub mod daemonset;
pub mod deployment;
pub mod endpointslice;
pub mod events;
pub mod framework;
pub mod garbage_collector;
pub mod job;
pub mod node_lifecycle;
pub mod ownership;
pub mod replicaset;
pub mod serviceaccount;

use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

/// Controller manager errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A controller task panicked or was aborted.
    #[error("controller {0} stopped unexpectedly")]
    ControllerStopped(&'static str),
}

/// Controller manager settings.
#[derive(Debug, Clone)]
pub struct ControllersConfig {
    /// How long a node may go without a heartbeat before it is marked
    /// `Unknown` (Kubernetes' `--node-monitor-grace-period`).
    pub node_monitor_grace_period: Duration,
    /// Namespace holding node Leases.
    pub lease_namespace: String,
    /// Every key is reconciled at least this often.
    pub resync_period: Duration,
    /// How long pods stay on a not-ready or unreachable node when they
    /// carry no toleration of their own (Kubernetes'
    /// `--default-not-ready-toleration-seconds`, 300 s).
    pub pod_eviction_timeout: Duration,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        ControllersConfig {
            node_monitor_grace_period: Duration::from_secs(40),
            lease_namespace: "kube-node-lease".to_string(),
            resync_period: Duration::from_secs(300),
            pod_eviction_timeout: Duration::from_secs(300),
        }
    }
}

/// Runs every controller until `shutdown` is cancelled.
pub async fn run(
    client: Client,
    config: ControllersConfig,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let resync = config.resync_period;
    let tasks = [
        (
            "node-lifecycle",
            tokio::spawn(run_node_lifecycle(client.clone(), config, shutdown.clone())),
        ),
        (
            "replicaset",
            tokio::spawn(run_replicaset(client.clone(), resync, shutdown.clone())),
        ),
        (
            "deployment",
            tokio::spawn(run_deployment(client.clone(), resync, shutdown.clone())),
        ),
        (
            "daemonset",
            tokio::spawn(run_daemonset(client.clone(), resync, shutdown.clone())),
        ),
        (
            "job",
            tokio::spawn(run_job(client.clone(), resync, shutdown.clone())),
        ),
        (
            "endpointslice",
            tokio::spawn(run_endpointslice(client.clone(), resync, shutdown.clone())),
        ),
        (
            "serviceaccount",
            tokio::spawn(run_serviceaccount(client.clone(), resync, shutdown.clone())),
        ),
        (
            "garbage-collector",
            tokio::spawn(run_garbage_collector(client, resync, shutdown.clone())),
        ),
    ];
    let mut result = Ok(());
    for (name, task) in tasks {
        if task.await.is_err() && result.is_ok() {
            // Stop the others too: a controller manager missing one
            // controller would silently stop doing its job.
            shutdown.cancel();
            result = Err(Error::ControllerStopped(name));
        }
    }
    result
}

/// A watch event reduced to what key mapping needs: the object and whether
/// it was deleted.
type Touched<K> = (K, bool);

/// A reflector-backed cache of every `K` in the cluster, plus the stream
/// that fills it (it must be polled for the cache to move).
fn cache<K>(client: &Client) -> (reflector::Store<K>, BoxStream<'static, Touched<K>>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = Api::all(client.clone());
    let (store, writer) = reflector::store::<K>();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default().any_semantic()),
    )
    .default_backoff()
    .filter_map(|r| async move {
        match r {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => Some((o, false)),
            Ok(watcher::Event::Delete(o)) => Some((o, true)),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => {
                tracing::warn!(error = %e, kind = %K::kind(&()), "watch failed; retrying");
                None
            }
        }
    })
    .boxed();
    (store, stream)
}

/// Flattens per-event key lists into one key stream.
fn keys(streams: Vec<BoxStream<'static, Vec<String>>>) -> impl Stream<Item = String> + Send {
    futures::stream::select_all(streams).flat_map(futures::stream::iter)
}

/// Completes once every listed cache holds its initial list.
async fn all_ready(stores: Vec<Box<dyn FnOnce() -> BoxStream<'static, ()> + Send>>) {
    for s in stores {
        // An end without an item means the writer is gone, i.e. shutdown.
        let _ = s().next().await;
    }
}

fn ready_of<K>(store: &reflector::Store<K>) -> Box<dyn FnOnce() -> BoxStream<'static, ()> + Send>
where
    K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let store = store.clone();
    Box::new(move || {
        futures::stream::once(async move {
            let _ = store.wait_until_ready().await;
        })
        .boxed()
    })
}

async fn run_replicaset(client: Client, resync: Duration, shutdown: CancellationToken) {
    let (rs_store, rs_events) = cache::<ReplicaSet>(&client);
    let (pod_store, pod_events) = cache::<Pod>(&client);
    let rs_keys = rs_events
        .map(|(rs, _)| vec![ownership::key_of(&rs.metadata)])
        .boxed();
    let pod_keys = {
        let rs_store = rs_store.clone();
        pod_events
            .map(move |(pod, _)| replicaset::keys_for_pod(&pod, &rs_store))
            .boxed()
    };
    let ready = all_ready(vec![ready_of(&rs_store), ready_of(&pod_store)]);
    let reconciler = replicaset::ReplicaSetController::new(client, rs_store, pod_store);
    framework::run(
        "replicaset",
        reconciler,
        keys(vec![rs_keys, pod_keys]),
        ready,
        resync,
        shutdown,
    )
    .await;
}

async fn run_deployment(client: Client, resync: Duration, shutdown: CancellationToken) {
    let (d_store, d_events) = cache::<Deployment>(&client);
    let (rs_store, rs_events) = cache::<ReplicaSet>(&client);
    let d_keys = d_events
        .map(|(d, _)| vec![ownership::key_of(&d.metadata)])
        .boxed();
    let rs_keys = {
        let d_store = d_store.clone();
        rs_events
            .map(move |(rs, _)| deployment::keys_for_replicaset(&rs, &d_store))
            .boxed()
    };
    let ready = all_ready(vec![ready_of(&d_store), ready_of(&rs_store)]);
    let reconciler = deployment::DeploymentController::new(client, d_store, rs_store);
    framework::run(
        "deployment",
        reconciler,
        keys(vec![d_keys, rs_keys]),
        ready,
        resync,
        shutdown,
    )
    .await;
}

async fn run_daemonset(client: Client, resync: Duration, shutdown: CancellationToken) {
    let (ds_store, ds_events) = cache::<DaemonSet>(&client);
    let (pod_store, pod_events) = cache::<Pod>(&client);
    let (node_store, node_events) = cache::<Node>(&client);
    let ds_keys = ds_events
        .map(|(ds, _)| vec![ownership::key_of(&ds.metadata)])
        .boxed();
    let pod_keys = {
        let ds_store = ds_store.clone();
        pod_events
            .map(move |(pod, _)| daemonset::keys_for_pod(&pod, &ds_store))
            .boxed()
    };
    // Any node change may change where every DaemonSet runs.
    let node_keys = {
        let ds_store = ds_store.clone();
        node_events
            .map(move |_| {
                ds_store
                    .state()
                    .iter()
                    .map(|ds| ownership::key_of(&ds.metadata))
                    .collect()
            })
            .boxed()
    };
    let ready = all_ready(vec![
        ready_of(&ds_store),
        ready_of(&pod_store),
        ready_of(&node_store),
    ]);
    let reconciler = daemonset::DaemonSetController::new(client, ds_store, pod_store, node_store);
    framework::run(
        "daemonset",
        reconciler,
        keys(vec![ds_keys, pod_keys, node_keys]),
        ready,
        resync,
        shutdown,
    )
    .await;
}

async fn run_job(client: Client, resync: Duration, shutdown: CancellationToken) {
    let (job_store, job_events) = cache::<Job>(&client);
    let (pod_store, pod_events) = cache::<Pod>(&client);
    let job_keys = job_events
        .map(|(job, _)| vec![ownership::key_of(&job.metadata)])
        .boxed();
    let pod_keys = pod_events.map(|(pod, _)| job::keys_for_pod(&pod)).boxed();
    let ready = all_ready(vec![ready_of(&job_store), ready_of(&pod_store)]);
    let reconciler = job::JobController::new(client, job_store, pod_store);
    framework::run(
        "job",
        reconciler,
        keys(vec![job_keys, pod_keys]),
        ready,
        resync,
        shutdown,
    )
    .await;
}

async fn run_endpointslice(client: Client, resync: Duration, shutdown: CancellationToken) {
    let (svc_store, svc_events) = cache::<Service>(&client);
    let (pod_store, pod_events) = cache::<Pod>(&client);
    let (slice_store, slice_events) = cache::<EndpointSlice>(&client);
    let (ep_store, ep_events) = cache::<Endpoints>(&client);
    let svc_keys = svc_events
        .map(|(svc, _)| vec![ownership::key_of(&svc.metadata)])
        .boxed();
    let pod_keys = {
        let (services, slices) = (svc_store.clone(), slice_store.clone());
        pod_events
            .map(move |(pod, _)| endpointslice::keys_for_pod(&pod, &services, &slices))
            .boxed()
    };
    // Slices and Endpoints changed by anyone else are put back.
    let slice_keys = slice_events
        .map(|(slice, _)| endpointslice::key_for_slice(&slice).into_iter().collect())
        .boxed();
    let ep_keys = ep_events
        .map(|(ep, _)| vec![ownership::key_of(&ep.metadata)])
        .boxed();
    let ready = all_ready(vec![
        ready_of(&svc_store),
        ready_of(&pod_store),
        ready_of(&slice_store),
        ready_of(&ep_store),
    ]);
    let reconciler = endpointslice::EndpointSliceController::new(
        client,
        svc_store,
        pod_store,
        slice_store,
        ep_store,
    );
    framework::run(
        "endpointslice",
        reconciler,
        keys(vec![svc_keys, pod_keys, slice_keys, ep_keys]),
        ready,
        resync,
        shutdown,
    )
    .await;
}

async fn run_garbage_collector(client: Client, resync: Duration, shutdown: CancellationToken) {
    use garbage_collector::{Dependent, dependents_of, owner_needs_work};
    let (pod_store, pod_events) = cache::<Pod>(&client);
    let (rs_store, rs_events) = cache::<ReplicaSet>(&client);
    let (d_store, d_events) = cache::<Deployment>(&client);
    let (job_store, job_events) = cache::<Job>(&client);
    let (ds_store, ds_events) = cache::<DaemonSet>(&client);
    let owned = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.owner_references.as_ref().is_some_and(|r| !r.is_empty())
    };
    // A dependent that goes away may be what a foreground owner waits for.
    let pod_keys = pod_events
        .map(move |(pod, deleted)| {
            if deleted {
                Dependent::Pod.owner_keys(&pod.metadata)
            } else if owned(&pod.metadata) {
                vec![Dependent::Pod.key(&pod.metadata)]
            } else {
                Vec::new()
            }
        })
        .boxed();
    let rs_keys = {
        let pods = pod_store.clone();
        rs_events
            .map(move |(rs, deleted)| {
                let mut keys = Vec::new();
                if deleted {
                    let uid = rs.metadata.uid.clone().unwrap_or_default();
                    keys.extend(dependents_of(&pods.state(), Dependent::Pod, &uid));
                    keys.extend(Dependent::ReplicaSet.owner_keys(&rs.metadata));
                } else {
                    if owned(&rs.metadata) {
                        keys.push(Dependent::ReplicaSet.key(&rs.metadata));
                    }
                    if owner_needs_work(&rs.metadata) {
                        keys.push(Dependent::Pod.owner_key(
                            rs.metadata.namespace.as_deref().unwrap_or("default"),
                            rs.metadata.name.as_deref().unwrap_or(""),
                        ));
                    }
                }
                keys
            })
            .boxed()
    };
    let d_keys = {
        let rss = rs_store.clone();
        d_events
            .map(move |(d, deleted)| {
                if deleted {
                    let uid = d.metadata.uid.clone().unwrap_or_default();
                    dependents_of(&rss.state(), Dependent::ReplicaSet, &uid)
                } else if owner_needs_work(&d.metadata) {
                    vec![Dependent::ReplicaSet.owner_key(
                        d.metadata.namespace.as_deref().unwrap_or("default"),
                        d.metadata.name.as_deref().unwrap_or(""),
                    )]
                } else {
                    Vec::new()
                }
            })
            .boxed()
    };
    // Jobs own pods: a vanished Job's pods go, one being deleted with a
    // propagation finalizer needs owner-side work.
    let job_keys = {
        let pods = pod_store.clone();
        job_events
            .map(move |(job, deleted)| {
                let meta = &job.metadata;
                if deleted {
                    let uid = meta.uid.clone().unwrap_or_default();
                    dependents_of(&pods.state(), Dependent::Pod, &uid)
                } else if owner_needs_work(meta) {
                    vec![garbage_collector::job_owner_key(
                        meta.namespace.as_deref().unwrap_or("default"),
                        meta.name.as_deref().unwrap_or(""),
                    )]
                } else {
                    Vec::new()
                }
            })
            .boxed()
    };
    // DaemonSets own pods too, the same way.
    let ds_keys = {
        let pods = pod_store.clone();
        ds_events
            .map(move |(ds, deleted)| {
                let meta = &ds.metadata;
                if deleted {
                    let uid = meta.uid.clone().unwrap_or_default();
                    dependents_of(&pods.state(), Dependent::Pod, &uid)
                } else if owner_needs_work(meta) {
                    vec![garbage_collector::daemonset_owner_key(
                        meta.namespace.as_deref().unwrap_or("default"),
                        meta.name.as_deref().unwrap_or(""),
                    )]
                } else {
                    Vec::new()
                }
            })
            .boxed()
    };
    let ready = all_ready(vec![
        ready_of(&ds_store),
        ready_of(&job_store),
        ready_of(&pod_store),
        ready_of(&rs_store),
        ready_of(&d_store),
    ]);
    let reconciler = garbage_collector::GarbageCollector::new(client, pod_store, rs_store, d_store);
    framework::run(
        "garbage-collector",
        reconciler,
        keys(vec![pod_keys, rs_keys, d_keys, job_keys, ds_keys]),
        ready,
        resync,
        shutdown,
    )
    .await;
}

async fn run_serviceaccount(client: Client, resync: Duration, shutdown: CancellationToken) {
    let (ns_store, ns_events) = cache::<Namespace>(&client);
    let (sa_store, sa_events) = cache::<ServiceAccount>(&client);
    let ns_keys = ns_events
        .map(|(ns, _)| ns.metadata.name.into_iter().collect())
        .boxed();
    let sa_keys = sa_events
        .map(|(sa, _)| {
            serviceaccount::key_for_service_account(&sa)
                .into_iter()
                .collect()
        })
        .boxed();
    let ready = all_ready(vec![ready_of(&ns_store), ready_of(&sa_store)]);
    let reconciler = serviceaccount::ServiceAccountController::new(client, ns_store, sa_store);
    framework::run(
        "serviceaccount",
        reconciler,
        keys(vec![ns_keys, sa_keys]),
        ready,
        resync,
        shutdown,
    )
    .await;
}

async fn run_node_lifecycle(
    client: Client,
    config: ControllersConfig,
    shutdown: CancellationToken,
) {
    let nodes_api: Api<Node> = Api::all(client.clone());
    let leases_api: Api<Lease> = Api::namespaced(client.clone(), &config.lease_namespace);
    let (pod_store, pod_events) = cache::<Pod>(&client);
    // Evictions are per node: a pod event concerns the node it is bound to.
    let pod_keys =
        pod_events.flat_map(|(pod, _)| futures::stream::iter(node_lifecycle::keys_for_pod(&pod)));
    let (node_store, node_writer) = reflector::store::<Node>();
    let (lease_store, lease_writer) = reflector::store::<Lease>();
    let node_keys = reflector::reflector(
        node_writer,
        watcher::watcher(nodes_api.clone(), watcher::Config::default().any_semantic()),
    )
    .default_backoff()
    .touched_objects()
    .filter_map(|r| async move { key_or_log(r, "node") });
    // A Lease is named after its node.
    let lease_keys = reflector::reflector(
        lease_writer,
        watcher::watcher(leases_api, watcher::Config::default().any_semantic()),
    )
    .default_backoff()
    .touched_objects()
    .filter_map(|r| async move { key_or_log(r, "lease") });
    let triggers =
        futures::stream::select(futures::stream::select(node_keys, lease_keys), pod_keys);
    let ready = {
        let (nodes, leases, pods) = (node_store.clone(), lease_store.clone(), pod_store.clone());
        async move {
            // Err only means the writer is gone, i.e. we are shutting down.
            let _ = nodes.wait_until_ready().await;
            let _ = leases.wait_until_ready().await;
            let _ = pods.wait_until_ready().await;
        }
    };
    let reconciler = node_lifecycle::NodeLifecycle::new(
        client,
        node_store,
        lease_store,
        pod_store,
        &config.lease_namespace,
        node_lifecycle::Timing {
            grace: config.node_monitor_grace_period,
            pod_eviction_timeout: config.pod_eviction_timeout,
        },
    );
    framework::run(
        "node-lifecycle",
        reconciler,
        triggers,
        ready,
        config.resync_period,
        shutdown,
    )
    .await;
}

fn key_or_log<K: kube::Resource>(
    r: Result<K, watcher::Error>,
    what: &'static str,
) -> Option<String> {
    match r {
        Ok(obj) => Some(obj.name_any()),
        Err(e) => {
            tracing::warn!(error = %e, "{what} watch failed; retrying");
            None
        }
    }
}
