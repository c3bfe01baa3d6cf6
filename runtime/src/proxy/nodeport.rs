//! NodePort listeners: one per nodePort of the cluster's Services, on the
//! node's bind address, opened and closed as Services come and go.
//!
//! A listener only knows its port number; which Service port it serves is
//! looked up per request, so a Service edited to another port needs no new
//! listener. Closing a listener stops new connections and lets requests in
//! flight finish.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::table::NodePortTarget;
use super::{Entry, Proxy, serve};

/// The event source of the proxy's events.
const COMPONENT: &str = "wasmkube-proxy";

struct Open {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The node's NodePort listeners.
pub struct NodePorts {
    proxy: Proxy,
    events: Option<kube::Client>,
    open: BTreeMap<u16, Open>,
    /// Ports that could not be bound, and for which Service (reported
    /// once, retried on every change).
    failed: HashMap<u16, NodePortTarget>,
}

impl NodePorts {
    /// No listeners yet; Warning events go through `events` when given.
    pub fn new(proxy: Proxy, events: Option<kube::Client>) -> NodePorts {
        NodePorts {
            proxy,
            events,
            open: BTreeMap::new(),
            failed: HashMap::new(),
        }
    }

    /// The ports listened on.
    pub fn open_ports(&self) -> BTreeSet<u16> {
        self.open.keys().copied().collect()
    }

    /// Opens listeners for new nodePorts of the routing table and closes
    /// those no Service has any more.
    pub async fn reconcile(&mut self, shutdown: &CancellationToken) {
        let table = self.proxy.table();
        let wanted = table.node_ports();
        let gone: Vec<u16> = self
            .open
            .keys()
            .filter(|p| !wanted.contains_key(p))
            .copied()
            .collect();
        for port in gone {
            if let Some(open) = self.open.remove(&port) {
                tracing::info!(port, "closing node port");
                open.stop.cancel();
                // In-flight requests finish in the listener's task; it is
                // not awaited so a slow one does not hold up the others.
                drop(open.task);
            }
        }
        self.failed.retain(|p, _| wanted.contains_key(p));
        let bind = self.proxy.0.options.bind_address;
        for (port, target) in wanted {
            if self.open.contains_key(port) {
                continue;
            }
            match tokio::net::TcpListener::bind((bind, *port)).await {
                Ok(listener) => {
                    tracing::info!(
                        port,
                        service = %format!("{}/{}", target.namespace, target.service),
                        "listening on node port"
                    );
                    self.failed.remove(port);
                    let stop = shutdown.child_token();
                    let proxy = self.proxy.clone();
                    let token = stop.clone();
                    let node_port = *port;
                    let task = tokio::spawn(async move {
                        if let Err(e) =
                            serve(proxy, listener, Entry::NodePort(node_port), token).await
                        {
                            tracing::warn!(port = node_port, error = %e, "node port listener failed");
                        }
                    });
                    self.open.insert(*port, Open { stop, task });
                }
                Err(e) => {
                    if self.failed.get(port) == Some(target) {
                        continue;
                    }
                    let message = format!(
                        "node {} cannot listen on node port {port} ({bind}): {e}",
                        self.proxy.node_name()
                    );
                    tracing::warn!(
                        port,
                        service = %format!("{}/{}", target.namespace, target.service),
                        error = %e,
                        "cannot listen on node port"
                    );
                    self.failed.insert(*port, target.clone());
                    if let Some(client) = &self.events {
                        // Best effort, off this loop: the event is advice.
                        tokio::spawn(warn_service(
                            client.clone(),
                            self.proxy.node_name().to_string(),
                            target.clone(),
                            message,
                        ));
                    }
                }
            }
        }
    }

    /// Closes every listener and waits for their in-flight requests.
    pub async fn close_all(&mut self) {
        for (_, open) in std::mem::take(&mut self.open) {
            open.stop.cancel();
            if let Err(e) = open.task.await {
                tracing::warn!(error = %e, "node port listener task failed");
            }
        }
    }
}

/// Reconciles `node_ports` after every routing-table change until
/// `shutdown`.
pub async fn run(
    mut node_ports: NodePorts,
    mut changes: watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
        node_ports.reconcile(&shutdown).await;
    }
    node_ports.close_all().await;
}

/// Records a Warning event on the Service a nodePort belongs to.
async fn warn_service(client: kube::Client, node: String, target: NodePortTarget, message: String) {
    let now = jiff::Timestamp::now();
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                target.service,
                now.as_nanosecond().unsigned_abs()
            )),
            namespace: Some(target.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(target.namespace.clone()),
            name: Some(target.service.clone()),
            ..Default::default()
        },
        reason: Some("NodePortUnavailable".into()),
        message: Some(message),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: Some(node.clone()),
        }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(node),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client, &target.namespace);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::warn!(error = %e, "recording the node port event failed");
    }
}
