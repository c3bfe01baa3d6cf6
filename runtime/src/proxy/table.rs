//! The routing table: which endpoints serve which Service port, built from
//! Services, EndpointSlices and Nodes (pure, no I/O).
//!
//! Like kube-proxy, only ready endpoints take traffic; when a Service port
//! has none, endpoints that are still serving while terminating do (so a
//! rolling update down to its last old pod keeps answering). Endpoints are
//! picked round-robin per Service port; the counters survive rebuilds so a
//! stream of watch events does not reset the spread to the first endpoint.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The Node annotation with the port of that node's proxy.
pub const PROXY_PORT_ANNOTATION: &str = "wasmkube.io/proxy-port";

/// One endpoint of a Service port: a container port of a pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// The node running the pod (from the slice's `nodeName`).
    pub node: Option<String>,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name (the endpoint's `targetRef`).
    pub pod: String,
    /// The container port (the slice port).
    pub port: u16,
}

/// One port of a Service and its endpoints.
#[derive(Debug)]
pub struct PortRoute {
    /// The Service port's name (`""` when unnamed).
    pub name: String,
    /// The Service port.
    pub port: u16,
    /// Its nodePort, for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    /// Ready endpoints.
    pub ready: Vec<Target>,
    /// Endpoints serving while terminating: used only when none is ready.
    pub terminating: Vec<Target>,
    next: Arc<AtomicUsize>,
}

impl PortRoute {
    /// The endpoints new requests may go to: the ready ones, else the
    /// serving terminating ones.
    pub fn candidates(&self) -> &[Target] {
        if self.ready.is_empty() {
            &self.terminating
        } else {
            &self.ready
        }
    }

    /// The next endpoint in round-robin order, if any; `skip` rejects
    /// endpoints known not to take requests (then the following one is
    /// tried, each endpoint at most once).
    pub fn pick(&self, skip: impl Fn(&Target) -> bool) -> Option<&Target> {
        let candidates = self.candidates();
        if candidates.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..candidates.len())
            .map(|i| &candidates[start.wrapping_add(i) % candidates.len()])
            .find(|t| !skip(t))
    }
}

/// One Service.
#[derive(Debug)]
pub struct ServiceRoute {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// TCP ports in spec order.
    pub ports: Vec<PortRoute>,
}

impl ServiceRoute {
    /// The port numbered `port`, or the first port when `None`.
    pub fn port(&self, port: Option<u16>) -> Option<&PortRoute> {
        match port {
            None => self.ports.first(),
            Some(p) => self.ports.iter().find(|r| r.port == p),
        }
    }
}

/// Which Service port a nodePort serves.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodePortTarget {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub service: String,
    /// The Service port.
    pub port: u16,
}

/// Everything the proxy routes by, rebuilt whenever Services, slices or
/// Nodes change.
#[derive(Debug, Default)]
pub struct RoutingTable {
    services: HashMap<(String, String), ServiceRoute>,
    node_ports: BTreeMap<u16, NodePortTarget>,
    /// Node name → that node's proxy address.
    nodes: HashMap<String, SocketAddr>,
}

fn port_u16(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p > 0)
}

/// What the endpoints of a slice port are, keyed by the slice port name.
type PortEndpoints = HashMap<String, (Vec<Target>, Vec<Target>)>;

/// The endpoints of one Service by slice port name, from its slices.
fn endpoints_of(slices: &[&EndpointSlice]) -> PortEndpoints {
    let mut by_port: PortEndpoints = HashMap::new();
    let mut seen: HashSet<(String, u16, String)> = HashSet::new();
    for slice in slices {
        let namespace = slice.metadata.namespace.clone().unwrap_or_default();
        for slice_port in slice.ports.iter().flatten() {
            if slice_port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                continue;
            }
            let Some(port) = slice_port.port.and_then(port_u16) else {
                continue;
            };
            let name = slice_port.name.clone().unwrap_or_default();
            for endpoint in &slice.endpoints {
                // Without a pod name the endpoint can be neither served
                // locally nor named to another node's proxy.
                let Some(pod) = endpoint
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref().is_none_or(|k| k == "Pod"))
                    .and_then(|r| r.name.clone())
                else {
                    continue;
                };
                if !seen.insert((name.clone(), port, pod.clone())) {
                    continue;
                }
                let conditions = endpoint.conditions.clone().unwrap_or_default();
                // EndpointSlice semantics: ready unset means ready, serving
                // unset means "as ready", terminating unset means not.
                let ready = conditions.ready.unwrap_or(true);
                let serving = conditions.serving.unwrap_or(ready);
                let terminating = conditions.terminating.unwrap_or(false);
                let target = Target {
                    node: endpoint.node_name.clone(),
                    namespace: endpoint
                        .target_ref
                        .as_ref()
                        .and_then(|r| r.namespace.clone())
                        .unwrap_or_else(|| namespace.clone()),
                    pod,
                    port,
                };
                let entry = by_port.entry(name.clone()).or_default();
                if ready && !terminating {
                    entry.0.push(target);
                } else if serving && terminating {
                    entry.1.push(target);
                }
            }
        }
    }
    for (ready, terminating) in by_port.values_mut() {
        ready.sort();
        terminating.sort();
    }
    by_port
}

/// A node's proxy address: its InternalIP and its proxy port annotation.
pub fn node_proxy_address(node: &Node) -> Option<SocketAddr> {
    let port: u16 = node
        .metadata
        .annotations
        .as_ref()?
        .get(PROXY_PORT_ANNOTATION)?
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)?;
    let addresses = node.status.as_ref()?.addresses.as_ref()?;
    let ip: IpAddr = addresses
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse().ok())?;
    Some(SocketAddr::new(ip, port))
}

impl RoutingTable {
    /// Builds the table; round-robin positions are carried over from
    /// `previous` for ports that still exist.
    pub fn build(
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
        nodes: &[Arc<Node>],
        previous: &RoutingTable,
    ) -> RoutingTable {
        let mut slices_by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let Some(service) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            let namespace = slice.metadata.namespace.clone().unwrap_or_default();
            slices_by_service
                .entry((namespace, service.clone()))
                .or_default()
                .push(slice);
        }

        let mut table = RoutingTable::default();
        let mut sorted: Vec<&Service> = services.iter().map(AsRef::as_ref).collect();
        // Oldest first by name so a (refused) nodePort clash resolves the
        // same way on every rebuild.
        sorted.sort_by_key(|s| (s.metadata.namespace.clone(), s.metadata.name.clone()));
        for service in sorted {
            let (Some(namespace), Some(name)) = (
                service.metadata.namespace.clone(),
                service.metadata.name.clone(),
            ) else {
                continue;
            };
            let Some(spec) = service.spec.as_ref() else {
                continue;
            };
            if spec.type_.as_deref() == Some("ExternalName") {
                continue;
            }
            let key = (namespace.clone(), name.clone());
            let endpoints = endpoints_of(
                slices_by_service
                    .get(&key)
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
            );
            let node_ports_apply = matches!(
                spec.type_.as_deref(),
                Some("NodePort") | Some("LoadBalancer")
            );
            let mut ports = Vec::new();
            for sp in spec.ports.iter().flatten() {
                if sp.protocol.as_deref().is_some_and(|p| p != "TCP") {
                    continue;
                }
                let Some(port) = port_u16(sp.port) else {
                    continue;
                };
                let port_name = sp.name.clone().unwrap_or_default();
                let node_port = sp.node_port.and_then(port_u16).filter(|_| node_ports_apply);
                if let Some(np) = node_port {
                    table
                        .node_ports
                        .entry(np)
                        .or_insert_with(|| NodePortTarget {
                            namespace: namespace.clone(),
                            service: name.clone(),
                            port,
                        });
                }
                let (ready, terminating) = endpoints.get(&port_name).cloned().unwrap_or_default();
                let next = previous
                    .services
                    .get(&key)
                    .and_then(|s| s.ports.iter().find(|p| p.name == port_name))
                    .map(|p| p.next.clone())
                    .unwrap_or_default();
                ports.push(PortRoute {
                    name: port_name,
                    port,
                    node_port,
                    ready,
                    terminating,
                    next,
                });
            }
            table.services.insert(
                key,
                ServiceRoute {
                    namespace,
                    name,
                    ports,
                },
            );
        }
        for node in nodes {
            if let (Some(name), Some(addr)) = (node.metadata.name.clone(), node_proxy_address(node))
            {
                table.nodes.insert(name, addr);
            }
        }
        table
    }

    /// The Service `namespace/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServiceRoute> {
        self.services
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// Every nodePort and the Service port it serves.
    pub fn node_ports(&self) -> &BTreeMap<u16, NodePortTarget> {
        &self.node_ports
    }

    /// The proxy address of node `name`.
    pub fn node(&self, name: &str) -> Option<SocketAddr> {
        self.nodes.get(name).copied()
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! In-memory Services, EndpointSlices and Nodes for tests.

    use std::collections::BTreeMap;
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{
        Node, NodeAddress, NodeStatus, ObjectReference, Service, ServicePort, ServiceSpec,
    };
    use k8s_openapi::api::discovery::v1::{
        Endpoint, EndpointConditions, EndpointPort, EndpointSlice,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::{PROXY_PORT_ANNOTATION, SERVICE_NAME_LABEL};

    /// A Service with `(name, port, nodePort)` ports.
    pub fn service(ns: &str, name: &str, ports: &[(&str, u16, Option<u16>)]) -> Arc<Service> {
        let node_port = ports.iter().any(|p| p.2.is_some());
        Arc::new(Service {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(if node_port { "NodePort" } else { "ClusterIP" }.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, np)| ServicePort {
                            name: (!n.is_empty()).then(|| n.to_string()),
                            port: i32::from(*p),
                            node_port: np.map(i32::from),
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        })
    }

    /// An endpoint's state.
    #[derive(Clone, Copy, Debug)]
    pub enum State {
        Ready,
        NotReady,
        /// Serving while terminating.
        Draining,
        /// Terminating and no longer serving.
        Gone,
    }

    /// A slice of Service `svc` with `(port name, target port)` ports and
    /// `(pod, node, state)` endpoints.
    pub fn slice(
        ns: &str,
        svc: &str,
        suffix: &str,
        ports: &[(&str, u16)],
        endpoints: &[(&str, &str, State)],
    ) -> Arc<EndpointSlice> {
        Arc::new(EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(format!("{svc}-{suffix}")),
                labels: Some(BTreeMap::from([(
                    SERVICE_NAME_LABEL.to_string(),
                    svc.to_string(),
                )])),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: endpoints
                .iter()
                .map(|(pod, node, state)| {
                    let (ready, serving, terminating) = match state {
                        State::Ready => (true, true, false),
                        State::NotReady => (false, false, false),
                        State::Draining => (false, true, true),
                        State::Gone => (false, false, true),
                    };
                    Endpoint {
                        addresses: vec!["127.0.0.1".into()],
                        node_name: Some(node.to_string()),
                        target_ref: Some(ObjectReference {
                            kind: Some("Pod".into()),
                            namespace: Some(ns.into()),
                            name: Some(pod.to_string()),
                            ..Default::default()
                        }),
                        conditions: Some(EndpointConditions {
                            ready: Some(ready),
                            serving: Some(serving),
                            terminating: Some(terminating),
                        }),
                        ..Default::default()
                    }
                })
                .collect(),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: (!n.is_empty()).then(|| n.to_string()),
                        port: Some(i32::from(*p)),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        })
    }

    /// A Node at `ip` whose proxy listens on `proxy_port`.
    pub fn node(name: &str, ip: &str, proxy_port: u16) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: Some(BTreeMap::from([(
                    PROXY_PORT_ANNOTATION.to_string(),
                    proxy_port.to_string(),
                )])),
                ..Default::default()
            },
            spec: None,
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                }]),
                ..Default::default()
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{State, node, service, slice};
    use super::*;

    fn pods(targets: &[Target]) -> Vec<&str> {
        targets.iter().map(|t| t.pod.as_str()).collect()
    }

    #[test]
    fn ports_are_chosen_by_number_or_first() {
        let table = RoutingTable::build(
            &[service(
                "default",
                "web",
                &[("http", 80, None), ("admin", 9000, None)],
            )],
            &[slice(
                "default",
                "web",
                "a",
                &[("http", 8080), ("admin", 9090)],
                &[("p1", "n1", State::Ready)],
            )],
            &[],
            &RoutingTable::default(),
        );
        let svc = table.service("default", "web").expect("service");
        assert_eq!(svc.port(None).map(|p| p.port), Some(80));
        assert_eq!(svc.port(Some(9000)).map(|p| p.name.as_str()), Some("admin"));
        assert!(
            svc.port(Some(8080)).is_none(),
            "target ports are not service ports"
        );
        // Slice ports are matched to Service ports by name.
        let admin = svc.port(Some(9000)).expect("admin");
        assert_eq!(admin.ready[0].port, 9090);
        assert_eq!(svc.port(None).expect("http").ready[0].port, 8080);
        assert!(table.service("default", "other").is_none());
        assert!(table.service("other", "web").is_none());
    }

    #[test]
    fn round_robin_spreads_evenly_and_survives_rebuilds() {
        let services = [service("ns", "echo", &[("", 80, None)])];
        let slices = [slice(
            "ns",
            "echo",
            "a",
            &[("", 8080)],
            &[
                ("p1", "n1", State::Ready),
                ("p2", "n2", State::Ready),
                ("p3", "n1", State::Ready),
            ],
        )];
        let table = RoutingTable::build(&services, &slices, &[], &RoutingTable::default());
        let port = table
            .service("ns", "echo")
            .and_then(|s| s.port(None))
            .expect("port");
        let mut counts: HashMap<String, usize> = HashMap::new();
        for _ in 0..30 {
            let t = port.pick(|_| false).expect("endpoint");
            *counts.entry(t.pod.clone()).or_default() += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|c| *c == 10), "{counts:?}");

        let first = port.pick(|_| false).expect("endpoint").pod.clone();
        let rebuilt = RoutingTable::build(&services, &slices, &[], &table);
        let after = rebuilt
            .service("ns", "echo")
            .and_then(|s| s.port(None))
            .and_then(|p| p.pick(|_| false))
            .expect("endpoint");
        assert_ne!(after.pod, first, "the rebuild restarted the rotation");
    }

    #[test]
    fn skipped_endpoints_are_passed_over() {
        let table = RoutingTable::build(
            &[service("ns", "echo", &[("", 80, None)])],
            &[slice(
                "ns",
                "echo",
                "a",
                &[("", 8080)],
                &[("p1", "n1", State::Ready), ("p2", "n1", State::Ready)],
            )],
            &[],
            &RoutingTable::default(),
        );
        let port = table
            .service("ns", "echo")
            .and_then(|s| s.port(None))
            .expect("port");
        for _ in 0..4 {
            assert_eq!(
                port.pick(|t| t.pod == "p1").map(|t| t.pod.as_str()),
                Some("p2")
            );
        }
        assert!(port.pick(|_| true).is_none());
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready() {
        let services = [service("ns", "echo", &[("", 80, None)])];
        let mixed = RoutingTable::build(
            &services,
            &[slice(
                "ns",
                "echo",
                "a",
                &[("", 8080)],
                &[
                    ("old", "n1", State::Draining),
                    ("new", "n2", State::Ready),
                    ("gone", "n1", State::Gone),
                    ("starting", "n1", State::NotReady),
                ],
            )],
            &[],
            &RoutingTable::default(),
        );
        let port = mixed
            .service("ns", "echo")
            .and_then(|s| s.port(None))
            .expect("port");
        assert_eq!(pods(port.candidates()), ["new"]);
        for _ in 0..5 {
            assert_eq!(port.pick(|_| false).map(|t| t.pod.as_str()), Some("new"));
        }

        let draining_only = RoutingTable::build(
            &services,
            &[slice(
                "ns",
                "echo",
                "a",
                &[("", 8080)],
                &[
                    ("old", "n1", State::Draining),
                    ("gone", "n1", State::Gone),
                    ("starting", "n1", State::NotReady),
                ],
            )],
            &[],
            &RoutingTable::default(),
        );
        let port = draining_only
            .service("ns", "echo")
            .and_then(|s| s.port(None))
            .expect("port");
        assert_eq!(pods(port.candidates()), ["old"]);

        let none = RoutingTable::build(&services, &[], &[], &RoutingTable::default());
        let port = none
            .service("ns", "echo")
            .and_then(|s| s.port(None))
            .expect("port");
        assert!(port.pick(|_| false).is_none());
    }

    #[test]
    fn endpoints_merge_across_slices_without_duplicates() {
        let table = RoutingTable::build(
            &[service("ns", "echo", &[("", 80, None)])],
            &[
                slice(
                    "ns",
                    "echo",
                    "a",
                    &[("", 8080)],
                    &[("p1", "n1", State::Ready)],
                ),
                slice(
                    "ns",
                    "echo",
                    "b",
                    &[("", 8080)],
                    &[("p2", "n1", State::Ready), ("p1", "n1", State::Ready)],
                ),
                // Same Service name in another namespace: not ours.
                slice(
                    "other",
                    "echo",
                    "c",
                    &[("", 8080)],
                    &[("p9", "n1", State::Ready)],
                ),
            ],
            &[],
            &RoutingTable::default(),
        );
        let port = table
            .service("ns", "echo")
            .and_then(|s| s.port(None))
            .expect("port");
        assert_eq!(pods(port.candidates()), ["p1", "p2"]);
    }

    #[test]
    fn node_ports_and_node_addresses_are_listed() {
        let table = RoutingTable::build(
            &[
                service("ns", "a", &[("", 80, Some(30080)), ("x", 81, Some(30081))]),
                service("ns", "b", &[("", 80, None)]),
            ],
            &[],
            &[node("n1", "10.0.0.1", 8080), node("n2", "not-an-ip", 8080)],
            &RoutingTable::default(),
        );
        let ports: Vec<(u16, u16)> = table
            .node_ports()
            .iter()
            .map(|(np, t)| (*np, t.port))
            .collect();
        assert_eq!(ports, [(30080, 80), (30081, 81)]);
        assert_eq!(
            table.node("n1"),
            Some(SocketAddr::from(([10, 0, 0, 1], 8080)))
        );
        assert_eq!(table.node("n2"), None);
        assert_eq!(table.node("n3"), None);
    }
}
