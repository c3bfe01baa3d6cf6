//! Pure placement logic: which nodes can take a pod (filter), which of those
//! is best (score), and the `FailedScheduling` message when none can.
//!
//! Everything here is a function of the objects passed in, so the cache, the
//! queue and the API calls stay in `lib.rs` and this file is tested alone.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

use crate::quantity::{cpu_millis, units};

/// Scoring pretends a container without requests asks for this much CPU, as
/// Kubernetes does, so best-effort pods still spread over nodes.
const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Scoring default for memory, see [`DEFAULT_MILLI_CPU_REQUEST`].
const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;
/// Best score a node can get from one scoring plugin.
const MAX_NODE_SCORE: i64 = 100;
/// Weight of the owner-spreading score: larger than the best resource
/// [`score`] (200), so for a pod with a controller owner spreading decides
/// and the resource score only breaks ties between equally spread nodes.
const SPREAD_WEIGHT: i64 = 2 * MAX_NODE_SCORE + 1;

/// CPU and memory amounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
}

impl Resources {
    fn add(&mut self, other: Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
    }

    fn sub(&mut self, other: Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(other.milli_cpu);
        self.memory = self.memory.saturating_sub(other.memory);
    }

    fn max(self, other: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.max(other.milli_cpu),
            memory: self.memory.max(other.memory),
        }
    }
}

fn resource_amount(list: Option<&BTreeMap<String, K8sQuantity>>, name: &str) -> Option<i64> {
    let q = list?.get(name)?;
    let parsed = if name == "cpu" {
        cpu_millis(&q.0)
    } else {
        units(&q.0)
    };
    // Validation rejects negative quantities; never let one free capacity.
    parsed.map(|v| v.max(0))
}

/// One container's requests, falling back per resource to its limits (the
/// apiserver defaults requests to limits; the scheduler does not rely on it).
fn container_requests(c: &k8s_openapi::api::core::v1::Container) -> Resources {
    let res = c.resources.as_ref();
    let requests = res.and_then(|r| r.requests.as_ref());
    let limits = res.and_then(|r| r.limits.as_ref());
    let pick = |name: &str| {
        resource_amount(requests, name)
            .or_else(|| resource_amount(limits, name))
            .unwrap_or(0)
    };
    Resources {
        milli_cpu: pick("cpu"),
        memory: pick("memory"),
    }
}

/// What a pod reserves on its node: the sum of its containers' requests or
/// the largest init container's, whichever is larger, plus pod overhead.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(container_requests(c));
    }
    let mut total = spec
        .init_containers
        .iter()
        .flatten()
        .map(container_requests)
        .fold(sum, Resources::max);
    total.add(Resources {
        milli_cpu: resource_amount(spec.overhead.as_ref(), "cpu").unwrap_or(0),
        memory: resource_amount(spec.overhead.as_ref(), "memory").unwrap_or(0),
    });
    total
}

/// Requests used for scoring only: a container that asks for nothing counts
/// as the Kubernetes defaults so empty nodes still look emptier.
fn pod_score_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let mut sum = Resources::default();
    for c in &spec.containers {
        let mut r = container_requests(c);
        if r.milli_cpu == 0 {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if r.memory == 0 {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
        sum.add(r);
    }
    sum
}

/// What one pod adds to its node's load (see [`NodeUsage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodUsage {
    requests: Resources,
    score_requests: Resources,
    /// Its controller owner's uid, unless the pod is terminating: a
    /// terminating replica is on its way out (drained or scaled down) and,
    /// as in Kubernetes' spreading, does not count.
    owner: Option<String>,
}

impl PodUsage {
    /// The load `pod` puts on the node it is (or will be) bound to.
    pub fn of(pod: &Pod) -> Self {
        PodUsage {
            requests: pod_requests(pod),
            score_requests: pod_score_requests(pod),
            owner: pod
                .metadata
                .deletion_timestamp
                .is_none()
                .then(|| controller_uid(pod).map(str::to_owned))
                .flatten(),
        }
    }
}

/// The load placed on one node: the sums of its pods' [`PodUsage`]. The
/// scheduler keeps one per node up to date from its pod watch, so a
/// scheduling cycle reads it instead of walking every pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeUsage {
    /// Sum of [`pod_requests`] of the pods bound (or assumed bound) to it.
    pub requested: Resources,
    /// Same pods, with scoring defaults for empty requests.
    pub score_requested: Resources,
    /// Number of pods bound to it.
    pub pod_count: i64,
    /// Live (not terminating) pods on it per controller owner uid, for
    /// spreading the replicas of one owner.
    pub owner_counts: HashMap<String, i64>,
}

impl NodeUsage {
    /// Accounts a pod placed on this node.
    pub fn add(&mut self, pod: &PodUsage) {
        self.requested.add(pod.requests);
        self.score_requested.add(pod.score_requests);
        self.pod_count += 1;
        if let Some(uid) = &pod.owner {
            *self.owner_counts.entry(uid.clone()).or_default() += 1;
        }
    }

    /// Takes back what [`add`](Self::add) accounted for the same pod.
    pub fn remove(&mut self, pod: &PodUsage) {
        self.requested.sub(pod.requests);
        self.score_requested.sub(pod.score_requests);
        self.pod_count -= 1;
        if let Some(uid) = &pod.owner
            && let Some(count) = self.owner_counts.get_mut(uid)
        {
            *count -= 1;
            if *count <= 0 {
                self.owner_counts.remove(uid);
            }
        }
    }

    /// Nothing placed here.
    pub fn is_empty(&self) -> bool {
        self.pod_count == 0
    }
}

/// What a node offers, read from its object once per update of the node
/// rather than parsed again for every pod that considers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeFacts {
    /// Allocatable CPU and memory (capacity when allocatable is missing).
    pub allocatable: Resources,
    /// Allocatable `pods`; Kubernetes' default of 110 when the node reports none.
    pub max_pods: i64,
    /// Its Ready condition is True.
    pub ready: bool,
}

impl NodeFacts {
    /// Reads the facts of `node`.
    pub fn of(node: &Node) -> Self {
        let amount = |name: &str| {
            node.status.as_ref().and_then(|status| {
                resource_amount(status.allocatable.as_ref(), name)
                    .or_else(|| resource_amount(status.capacity.as_ref(), name))
            })
        };
        NodeFacts {
            allocatable: Resources {
                milli_cpu: amount("cpu").unwrap_or(0),
                memory: amount("memory").unwrap_or(0),
            },
            max_pods: amount("pods").unwrap_or(110),
            ready: is_ready(node),
        }
    }
}

/// A node with the load already placed on it.
#[derive(Debug, Clone)]
pub struct NodeInfo<'a> {
    /// The node.
    pub node: &'a Node,
    /// What it offers ([`NodeFacts::of`] the node).
    pub facts: NodeFacts,
    /// Its load: borrowed from the scheduler's cache, or built here.
    pub usage: std::borrow::Cow<'a, NodeUsage>,
}

impl<'a> NodeInfo<'a> {
    /// An empty node.
    pub fn new(node: &'a Node) -> Self {
        NodeInfo {
            node,
            facts: NodeFacts::of(node),
            usage: std::borrow::Cow::Owned(NodeUsage::default()),
        }
    }

    /// A node whose facts were read before, with the load `usage` on it
    /// (none when `None`).
    pub fn cached(node: &'a Node, facts: NodeFacts, usage: Option<&'a NodeUsage>) -> Self {
        NodeInfo {
            node,
            facts,
            usage: match usage {
                Some(u) => std::borrow::Cow::Borrowed(u),
                None => std::borrow::Cow::Owned(NodeUsage::default()),
            },
        }
    }

    /// Accounts a pod placed on this node.
    pub fn add_pod(&mut self, pod: &Pod) {
        self.usage.to_mut().add(&PodUsage::of(pod));
    }

    /// Live pods of the controller `uid` on this node.
    pub fn owner_count(&self, uid: &str) -> i64 {
        self.usage.owner_counts.get(uid).copied().unwrap_or(0)
    }

    fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }
}

/// The uid of the pod's controller owner (the ownerReference with
/// `controller: true`), if any.
pub fn controller_uid(pod: &Pod) -> Option<&str> {
    pod.metadata
        .owner_references
        .as_deref()?
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
        .filter(|u| !u.is_empty())
}

/// Kubernetes' default spreading (SelectorSpread / the default
/// PodTopologySpread over `kubernetes.io/hostname`), 0..=100: a node with
/// `count` pods of the owner scores `100 * (max - count) / max`, where
/// `max` is the largest count among the feasible nodes; all nodes score 100
/// when none has any.
pub fn spread_score(count: i64, max_count: i64) -> i64 {
    if max_count <= 0 {
        return MAX_NODE_SCORE;
    }
    let count = count.clamp(0, max_count);
    MAX_NODE_SCORE.saturating_mul(max_count - count) / max_count
}

/// Does this pod count against its node's capacity? Finished pods do not.
pub fn occupies_node(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Why a node cannot take a pod; `Display` is the Kubernetes wording used in
/// `0/N nodes are available: …`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unfit {
    /// Ready condition missing, False or Unknown.
    NotReady,
    /// `spec.unschedulable`.
    Unschedulable,
    /// A NoSchedule/NoExecute taint the pod does not tolerate.
    UntoleratedTaint {
        /// Taint key.
        key: String,
        /// Taint value (empty when none).
        value: String,
    },
    /// nodeSelector or required node affinity does not match.
    NodeAffinity,
    /// Pod count reached allocatable `pods`.
    TooManyPods,
    /// Not enough CPU left.
    InsufficientCpu,
    /// Not enough memory left.
    InsufficientMemory,
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unfit::NotReady => f.write_str("node(s) were not ready"),
            Unfit::Unschedulable => f.write_str("node(s) were unschedulable"),
            Unfit::UntoleratedTaint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            Unfit::NodeAffinity => f.write_str("node(s) didn't match Pod's node affinity/selector"),
            Unfit::TooManyPods => f.write_str("Too many pods"),
            Unfit::InsufficientCpu => f.write_str("Insufficient cpu"),
            Unfit::InsufficientMemory => f.write_str("Insufficient memory"),
        }
    }
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Kubernetes' `Toleration.ToleratesTaint` (shared with the controllers).
pub use wasmkube_api::scheduling::tolerates;

/// nodeSelector (every pair must match the node's labels) and
/// requiredDuringSchedulingIgnoredDuringExecution (any term; within a term
/// every expression and field requirement).
pub fn matches_node_affinity(pod: &Pod, node: &Node) -> bool {
    pod.spec
        .as_ref()
        .is_none_or(|spec| wasmkube_api::scheduling::matches_node(spec, node))
}

/// Every reason `node` cannot take `pod`; empty means it fits.
pub fn filter(pod: &Pod, info: &NodeInfo<'_>) -> Vec<Unfit> {
    filter_demand(pod, &PodUsage::of(pod), info)
}

/// [`filter`] with the pod's requests read once per cycle, not per node.
fn filter_demand(pod: &Pod, demand: &PodUsage, info: &NodeInfo<'_>) -> Vec<Unfit> {
    let node = info.node;
    let mut reasons = Vec::new();
    if !info.facts.ready {
        reasons.push(Unfit::NotReady);
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        reasons.push(Unfit::Unschedulable);
    }
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[]);
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[]);
    if let Some(taint) = taints.iter().find(|t| {
        matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
            && !tolerations.iter().any(|tol| tolerates(tol, t))
    }) {
        reasons.push(Unfit::UntoleratedTaint {
            key: taint.key.clone(),
            value: taint.value.clone().unwrap_or_default(),
        });
    }
    if !matches_node_affinity(pod, node) {
        reasons.push(Unfit::NodeAffinity);
    }
    if info.usage.pod_count + 1 > info.facts.max_pods {
        reasons.push(Unfit::TooManyPods);
    }
    let want = demand.requests;
    let have = info.facts.allocatable;
    if want.milli_cpu > 0
        && info
            .usage
            .requested
            .milli_cpu
            .saturating_add(want.milli_cpu)
            > have.milli_cpu
    {
        reasons.push(Unfit::InsufficientCpu);
    }
    if want.memory > 0 && info.usage.requested.memory.saturating_add(want.memory) > have.memory {
        reasons.push(Unfit::InsufficientMemory);
    }
    reasons
}

fn fraction_free_score(requested: i64, allocatable: i64) -> i64 {
    if allocatable <= 0 || requested > allocatable {
        return 0;
    }
    (allocatable - requested).saturating_mul(MAX_NODE_SCORE) / allocatable
}

/// Higher is better, 0..=200: least-allocated (free share of CPU and memory
/// after placing the pod, averaged) plus balanced-allocation (how close the
/// CPU and memory fractions stay to each other).
pub fn score(pod: &Pod, info: &NodeInfo<'_>) -> i64 {
    score_demand(&PodUsage::of(pod), info)
}

/// [`score`] with the pod's requests read once per cycle.
fn score_demand(demand: &PodUsage, info: &NodeInfo<'_>) -> i64 {
    let want = demand.score_requests;
    let cpu_alloc = info.facts.allocatable.milli_cpu;
    let mem_alloc = info.facts.allocatable.memory;
    let cpu_req = info
        .usage
        .score_requested
        .milli_cpu
        .saturating_add(want.milli_cpu);
    let mem_req = info
        .usage
        .score_requested
        .memory
        .saturating_add(want.memory);
    let least =
        (fraction_free_score(cpu_req, cpu_alloc) + fraction_free_score(mem_req, mem_alloc)) / 2;
    let fraction = |req: i64, alloc: i64| {
        if alloc <= 0 {
            1.0
        } else {
            (req as f64 / alloc as f64).min(1.0)
        }
    };
    let diff = (fraction(cpu_req, cpu_alloc) - fraction(mem_req, mem_alloc)).abs();
    let balanced = ((1.0 - diff) * MAX_NODE_SCORE as f64) as i64;
    least + balanced
}

/// The outcome of one scheduling attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Bind to this node.
    Node(String),
    /// No node fits; the `FailedScheduling` message.
    Unschedulable(String),
}

/// Which nodes a scheduling cycle looks at: kube-scheduler's
/// `percentageOfNodesToScore`. Filtering starts at `start` (wrapping round)
/// and stops once `feasible_to_find` nodes fit, so a cycle in a large
/// cluster costs a share of the nodes rather than all of them; the next
/// cycle starts where this one stopped, so every node gets its turn. When
/// fewer nodes fit, every node is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Search {
    /// Index of the first node to filter.
    pub start: usize,
    /// Stop filtering once this many nodes fit.
    pub feasible_to_find: usize,
}

impl Search {
    /// Every node, from the first.
    pub const ALL: Search = Search {
        start: 0,
        feasible_to_find: usize::MAX,
    };
}

/// Below this many nodes every node is scored (kube-scheduler's
/// `minFeasibleNodesToFind`).
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never goes below this
/// (`minFeasibleNodesPercentageToFind`).
const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;

/// How many feasible nodes a cycle looks for among `all_nodes`, as
/// kube-scheduler's `numFeasibleNodesToFind`: all of them below 100 nodes;
/// otherwise `percentage` of them (0 = adaptive: 50 % less 1 % per 125
/// nodes, at least 5 %), and never fewer than 100.
pub fn feasible_nodes_to_find(percentage: u32, all_nodes: usize) -> usize {
    if all_nodes < MIN_FEASIBLE_NODES_TO_FIND || percentage >= 100 {
        return all_nodes;
    }
    let percentage = match usize::try_from(percentage).unwrap_or(100) {
        0 => 50usize
            .saturating_sub(all_nodes / 125)
            .max(MIN_FEASIBLE_NODES_PERCENTAGE),
        p => p,
    };
    (all_nodes.saturating_mul(percentage) / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// What [`select_node_in`] decided and how many nodes it filtered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The decision.
    pub placement: Placement,
    /// Nodes filtered, from [`Search::start`] on; the next cycle starts
    /// this many nodes further.
    pub examined: usize,
}

/// Filters and scores every node and picks one; see [`select_node_in`].
pub fn select_node(pod: &Pod, nodes: &[NodeInfo<'_>], tie_seed: u64) -> Placement {
    select_node_in(pod, nodes, tie_seed, Search::ALL).placement
}

/// Filters the nodes `search` names and picks the best that fits. For a pod
/// with a controller owner, the feasible nodes with the fewest live pods of
/// that owner win ([`spread_score`], weighted above the resource [`score`],
/// which then breaks ties); other pods go by the resource score alone.
/// Remaining ties go to the one `tie_seed` (e.g. a hash of the pod's uid)
/// picks in the order the nodes were filtered, so equal nodes share a burst.
pub fn select_node_in(
    pod: &Pod,
    nodes: &[NodeInfo<'_>],
    tie_seed: u64,
    search: Search,
) -> Selection {
    let demand = PodUsage::of(pod);
    let mut feasible: Vec<&NodeInfo<'_>> = Vec::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let start = if nodes.is_empty() {
        0
    } else {
        search.start % nodes.len()
    };
    let mut examined = 0;
    for info in nodes[start..].iter().chain(&nodes[..start]) {
        if feasible.len() >= search.feasible_to_find {
            break;
        }
        examined += 1;
        let unfit = filter_demand(pod, &demand, info);
        if unfit.is_empty() {
            feasible.push(info);
            continue;
        }
        for r in unfit {
            *reasons.entry(r.to_string()).or_default() += 1;
        }
    }
    if feasible.is_empty() {
        return Selection {
            placement: Placement::Unschedulable(failure_message(nodes.len(), &reasons)),
            examined,
        };
    }
    let owner = demand.owner.as_deref();
    let max_count = owner
        .map(|uid| {
            feasible
                .iter()
                .map(|i| i.owner_count(uid))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    let mut best: Vec<&NodeInfo<'_>> = Vec::new();
    let mut best_score = i64::MIN;
    for info in feasible {
        let spread = owner.map_or(0, |uid| spread_score(info.owner_count(uid), max_count));
        let s = spread
            .saturating_mul(SPREAD_WEIGHT)
            .saturating_add(score_demand(&demand, info));
        if s > best_score {
            best_score = s;
            best.clear();
        }
        if s == best_score {
            best.push(info);
        }
    }
    let idx = usize::try_from(tie_seed % best.len() as u64).unwrap_or(0);
    Selection {
        placement: Placement::Node(best[idx].name().to_string()),
        examined,
    }
}

/// `0/3 nodes are available: 1 Insufficient memory, 2 node(s) were unschedulable.`
/// Reasons are counted per node and sorted as text, like the Kubernetes scheduler.
pub fn failure_message(node_count: usize, reasons: &BTreeMap<String, usize>) -> String {
    if node_count == 0 {
        return "no nodes available to schedule pods".to_string();
    }
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    format!("0/{node_count} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Affinity, Container, NodeAffinity, NodeCondition, NodeSelector, NodeSelectorTerm, NodeSpec,
        NodeStatus, PodSpec, PodStatus, ResourceRequirements,
    };
    use k8s_openapi::api::core::v1::{NodeSelectorRequirement, Taint, Toleration};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn q(s: &str) -> K8sQuantity {
        K8sQuantity(s.to_string())
    }

    fn node(name: &str, cpu: &str, mem: &str, pods: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([
                    ("kubernetes.io/os".to_string(), "wasip1".to_string()),
                    ("kubernetes.io/hostname".to_string(), name.to_string()),
                ])),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(BTreeMap::from([
                    ("cpu".to_string(), q(cpu)),
                    ("memory".to_string(), q(mem)),
                    ("pods".to_string(), q(pods)),
                ])),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn pod(cpu: Option<&str>, mem: Option<&str>) -> Pod {
        let mut requests = BTreeMap::new();
        if let Some(c) = cpu {
            requests.insert("cpu".to_string(), q(c));
        }
        if let Some(m) = mem {
            requests.insert("memory".to_string(), q(m));
        }
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(requests),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    fn spec_mut(p: &mut Pod) -> &mut PodSpec {
        p.spec.get_or_insert_with(Default::default)
    }

    #[test]
    fn requests_default_to_limits_and_init_containers_take_the_max() {
        let mut p = pod(Some("100m"), None);
        spec_mut(&mut p).containers[0].resources = Some(ResourceRequirements {
            requests: Some(BTreeMap::from([("cpu".to_string(), q("100m"))])),
            limits: Some(BTreeMap::from([
                ("cpu".to_string(), q("1")),
                ("memory".to_string(), q("64Mi")),
            ])),
            ..Default::default()
        });
        assert_eq!(
            pod_requests(&p),
            Resources {
                milli_cpu: 100,
                memory: 64 << 20
            }
        );
        spec_mut(&mut p).init_containers = Some(vec![Container {
            name: "init".into(),
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([("cpu".to_string(), q("2"))])),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        spec_mut(&mut p).overhead = Some(BTreeMap::from([("memory".to_string(), q("1Mi"))]));
        assert_eq!(
            pod_requests(&p),
            Resources {
                milli_cpu: 2000,
                memory: (64 << 20) + (1 << 20)
            }
        );
    }

    #[test]
    fn insufficient_memory_message_matches_kubernetes() {
        let n = node("node1", "4", "128Mi", "110");
        let p = pod(None, Some("1Gi"));
        let placement = select_node(&p, &[NodeInfo::new(&n)], 0);
        assert_eq!(
            placement,
            Placement::Unschedulable("0/1 nodes are available: 1 Insufficient memory.".into())
        );
    }

    #[test]
    fn already_placed_pods_consume_capacity() {
        let n = node("node1", "1", "1Gi", "110");
        let mut info = NodeInfo::new(&n);
        let p = pod(Some("600m"), None);
        assert!(filter(&p, &info).is_empty());
        info.add_pod(&p);
        assert_eq!(filter(&p, &info), vec![Unfit::InsufficientCpu]);
    }

    #[test]
    fn pod_count_limit() {
        let n = node("node1", "1", "1Gi", "1");
        let mut info = NodeInfo::new(&n);
        let p = pod(None, None);
        assert!(filter(&p, &info).is_empty());
        info.add_pod(&p);
        assert_eq!(filter(&p, &info), vec![Unfit::TooManyPods]);
    }

    #[test]
    fn not_ready_and_unschedulable_nodes_are_filtered() {
        let mut n = node("node1", "1", "1Gi", "10");
        if let Some(c) = n
            .status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .and_then(|c| c.first_mut())
        {
            c.status = "Unknown".into();
        }
        n.spec = Some(NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        assert_eq!(
            filter(&pod(None, None), &NodeInfo::new(&n)),
            vec![Unfit::NotReady, Unfit::Unschedulable]
        );
    }

    #[test]
    fn taints_need_tolerations() {
        let mut n = node("node1", "1", "1Gi", "10");
        n.spec = Some(NodeSpec {
            taints: Some(vec![
                Taint {
                    key: "node.kubernetes.io/unreachable".into(),
                    effect: "NoSchedule".into(),
                    ..Default::default()
                },
                Taint {
                    key: "soft".into(),
                    effect: "PreferNoSchedule".into(),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        });
        let mut p = pod(None, None);
        assert_eq!(
            select_node(&p, &[NodeInfo::new(&n)], 0),
            Placement::Unschedulable(
                "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }."
                    .into()
            )
        );
        spec_mut(&mut p).tolerations = Some(vec![Toleration {
            key: Some("node.kubernetes.io/unreachable".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }]);
        assert!(filter(&p, &NodeInfo::new(&n)).is_empty());
    }

    #[test]
    fn toleration_semantics() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoExecute".into(),
            ..Default::default()
        };
        let tol = |key: Option<&str>,
                   op: Option<&str>,
                   value: Option<&str>,
                   effect: Option<&str>| Toleration {
            key: key.map(Into::into),
            operator: op.map(Into::into),
            value: value.map(Into::into),
            effect: effect.map(Into::into),
            ..Default::default()
        };
        assert!(tolerates(&tol(Some("k"), None, Some("v"), None), &taint));
        assert!(tolerates(
            &tol(Some("k"), Some("Equal"), Some("v"), Some("NoExecute")),
            &taint
        ));
        assert!(!tolerates(
            &tol(Some("k"), Some("Equal"), Some("w"), None),
            &taint
        ));
        assert!(!tolerates(
            &tol(Some("k"), None, Some("v"), Some("NoSchedule")),
            &taint
        ));
        assert!(tolerates(&tol(None, Some("Exists"), None, None), &taint));
        assert!(tolerates(
            &tol(Some("k"), Some("Exists"), None, None),
            &taint
        ));
        assert!(!tolerates(
            &tol(Some("x"), Some("Exists"), None, None),
            &taint
        ));
        assert!(!tolerates(
            &tol(None, Some("Equal"), Some("v"), None),
            &taint
        ));
    }

    #[test]
    fn node_selector_and_required_affinity() {
        let n = node("node1", "1", "1Gi", "10");
        let mut p = pod(None, None);
        spec_mut(&mut p).node_selector = Some(BTreeMap::from([(
            "kubernetes.io/os".to_string(),
            "linux".to_string(),
        )]));
        assert_eq!(filter(&p, &NodeInfo::new(&n)), vec![Unfit::NodeAffinity]);
        spec_mut(&mut p).node_selector = Some(BTreeMap::from([(
            "kubernetes.io/os".to_string(),
            "wasip1".to_string(),
        )]));
        assert!(filter(&p, &NodeInfo::new(&n)).is_empty());

        let req = |key: &str, op: &str, values: &[&str]| NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
        };
        let with_terms = |terms: Vec<NodeSelectorTerm>| {
            let mut p = pod(None, None);
            spec_mut(&mut p).affinity = Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: terms,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
            p
        };
        let term = |exprs: Vec<NodeSelectorRequirement>, fields: Vec<NodeSelectorRequirement>| {
            NodeSelectorTerm {
                match_expressions: Some(exprs),
                match_fields: Some(fields),
            }
        };
        let yes = with_terms(vec![term(
            vec![req("kubernetes.io/os", "In", &["wasip1", "x"])],
            vec![],
        )]);
        assert!(matches_node_affinity(&yes, &n));
        let no = with_terms(vec![term(
            vec![req("kubernetes.io/os", "NotIn", &["wasip1"])],
            vec![],
        )]);
        assert!(!matches_node_affinity(&no, &n));
        let any_term = with_terms(vec![
            term(vec![req("missing", "Exists", &[])], vec![]),
            term(vec![], vec![req("metadata.name", "In", &["node1"])]),
        ]);
        assert!(matches_node_affinity(&any_term, &n));
        let absent = with_terms(vec![term(
            vec![req("missing", "DoesNotExist", &[])],
            vec![],
        )]);
        assert!(matches_node_affinity(&absent, &n));
        let empty_term = with_terms(vec![term(vec![], vec![])]);
        assert!(!matches_node_affinity(&empty_term, &n));
    }

    #[test]
    fn least_allocated_node_wins() {
        let busy = node("a-busy", "2", "2Gi", "110");
        let idle = node("b-idle", "2", "2Gi", "110");
        let mut busy_info = NodeInfo::new(&busy);
        busy_info.add_pod(&pod(Some("1"), Some("1Gi")));
        let nodes = [busy_info, NodeInfo::new(&idle)];
        let p = pod(Some("100m"), Some("100Mi"));
        for seed in 0..4 {
            assert_eq!(
                select_node(&p, &nodes, seed),
                Placement::Node("b-idle".into())
            );
        }
    }

    #[test]
    fn balanced_allocation_breaks_least_allocated_ties() {
        // Both nodes end up half free on average; "even" keeps cpu and memory level.
        let even = node("even", "2", "2Gi", "110");
        let skewed = node("skewed", "2", "2Gi", "110");
        let mut even_info = NodeInfo::new(&even);
        even_info.add_pod(&pod(Some("500m"), Some("512Mi")));
        let mut skewed_info = NodeInfo::new(&skewed);
        skewed_info.add_pod(&pod(Some("1"), Some("1Mi")));
        let p = pod(Some("500m"), Some("512Mi"));
        assert!(score(&p, &even_info) > score(&p, &skewed_info));
    }

    #[test]
    fn equal_nodes_split_by_seed() {
        let a = node("a", "1", "1Gi", "110");
        let b = node("b", "1", "1Gi", "110");
        let nodes = [NodeInfo::new(&a), NodeInfo::new(&b)];
        let p = pod(None, None);
        assert_eq!(select_node(&p, &nodes, 0), Placement::Node("a".into()));
        assert_eq!(select_node(&p, &nodes, 1), Placement::Node("b".into()));
    }

    #[test]
    fn failure_message_counts_and_sorts_reasons() {
        let small = node("small", "100m", "64Mi", "110");
        let mut cordoned = node("cordoned", "8", "8Gi", "110");
        cordoned.spec = Some(NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        let small2 = node("small2", "100m", "64Mi", "110");
        let p = pod(Some("1"), Some("128Mi"));
        let nodes = [
            NodeInfo::new(&small),
            NodeInfo::new(&cordoned),
            NodeInfo::new(&small2),
        ];
        assert_eq!(
            select_node(&p, &nodes, 0),
            Placement::Unschedulable(
                "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu, 2 Insufficient memory."
                    .into()
            )
        );
        assert_eq!(
            select_node(&p, &[], 0),
            Placement::Unschedulable("no nodes available to schedule pods".into())
        );
    }

    #[test]
    fn finished_pods_free_their_node() {
        let mut p = pod(None, None);
        assert!(occupies_node(&p));
        p.status = Some(PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        assert!(!occupies_node(&p));
    }

    fn owned(mut p: Pod, uid: &str, name: &str) -> Pod {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        p.metadata.name = Some(name.into());
        p.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "web-abc".into(),
            uid: uid.into(),
            controller: Some(true),
            ..Default::default()
        }]);
        p
    }

    /// Schedules `replicas` pods of owner `uid` one after another, each
    /// accounted on its node before the next (as the scheduler's assumed
    /// pods are), and returns how many landed on each node.
    fn place_replicas(
        infos: &mut [NodeInfo<'_>],
        uid: &str,
        replicas: u64,
        template: &Pod,
    ) -> BTreeMap<String, usize> {
        let mut placed = BTreeMap::new();
        for i in 0..replicas {
            let p = owned(template.clone(), uid, &format!("web-{i}"));
            let Placement::Node(name) = select_node(&p, infos, i.wrapping_mul(7919)) else {
                panic!("replica {i} did not fit");
            };
            *placed.entry(name.clone()).or_default() += 1;
            let Some(info) = infos.iter_mut().find(|n| n.name() == name) else {
                panic!("unknown node {name}");
            };
            info.add_pod(&p);
        }
        placed
    }

    #[test]
    fn spread_score_prefers_fewer_replicas() {
        assert_eq!(spread_score(0, 0), 100);
        assert_eq!(spread_score(0, 2), 100);
        assert_eq!(spread_score(1, 2), 50);
        assert_eq!(spread_score(2, 2), 0);
        assert_eq!(spread_score(5, 2), 0);
    }

    #[test]
    fn replicas_of_one_owner_spread_evenly() {
        // "big" would win every time on free resources alone.
        let big = node("big", "16", "64Gi", "110");
        let small1 = node("small1", "2", "2Gi", "110");
        let small2 = node("small2", "2", "2Gi", "110");
        let mut infos = [
            NodeInfo::new(&big),
            NodeInfo::new(&small1),
            NodeInfo::new(&small2),
        ];
        // Another owner's pods do not count against spreading.
        for i in 0..3 {
            let other = owned(pod(Some("100m"), None), "other-uid", &format!("o{i}"));
            infos[1].add_pod(&other);
        }
        let placed = place_replicas(&mut infos, "web-uid", 6, &pod(Some("100m"), Some("64Mi")));
        assert_eq!(
            placed,
            BTreeMap::from([
                ("big".to_string(), 2),
                ("small1".to_string(), 2),
                ("small2".to_string(), 2),
            ])
        );
        // Without an owner the resource score alone decides.
        let lone = pod(Some("100m"), Some("64Mi"));
        assert_eq!(select_node(&lone, &infos, 0), Placement::Node("big".into()));
    }

    #[test]
    fn spreading_never_picks_a_node_that_does_not_fit() {
        let a = node("a", "2", "2Gi", "110");
        let b = node("b", "2", "2Gi", "110");
        let full = node("full", "2", "2Gi", "1");
        let mut infos = [NodeInfo::new(&a), NodeInfo::new(&b), NodeInfo::new(&full)];
        // "full" holds no replica of the owner, so spreading alone would pick it.
        infos[2].add_pod(&pod(None, None));
        let placed = place_replicas(&mut infos, "web-uid", 6, &pod(None, None));
        assert_eq!(
            placed,
            BTreeMap::from([("a".to_string(), 3), ("b".to_string(), 3)])
        );
        // Nor one that is cordoned.
        let mut cordoned = node("cordoned", "8", "8Gi", "110");
        cordoned.spec = Some(NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        let mut infos = [NodeInfo::new(&a), NodeInfo::new(&cordoned)];
        let placed = place_replicas(&mut infos, "web-uid", 2, &pod(None, None));
        assert_eq!(placed, BTreeMap::from([("a".to_string(), 2)]));
    }

    #[test]
    fn terminating_replicas_do_not_count_for_spreading() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let a = node("a", "2", "2Gi", "110");
        let b = node("b", "2", "2Gi", "110");
        let mut infos = [NodeInfo::new(&a), NodeInfo::new(&b)];
        let mut leaving = owned(pod(None, None), "web-uid", "old");
        leaving.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        infos[0].add_pod(&leaving);
        infos[1].add_pod(&owned(pod(None, None), "web-uid", "live"));
        assert_eq!(infos[0].owner_count("web-uid"), 0);
        assert_eq!(infos[1].owner_count("web-uid"), 1);
        let p = owned(pod(None, None), "web-uid", "new");
        for seed in 0..4 {
            assert_eq!(select_node(&p, &infos, seed), Placement::Node("a".into()));
        }
    }

    /// kube-scheduler's `numFeasibleNodesToFind` table.
    #[test]
    fn feasible_nodes_to_find_follows_kube_scheduler() {
        assert_eq!(feasible_nodes_to_find(0, 10), 10);
        assert_eq!(feasible_nodes_to_find(40, 10), 10);
        assert_eq!(feasible_nodes_to_find(0, 99), 99);
        assert_eq!(feasible_nodes_to_find(0, 1000), 420);
        assert_eq!(feasible_nodes_to_find(40, 1000), 400);
        assert_eq!(feasible_nodes_to_find(0, 6000), 300);
        assert_eq!(feasible_nodes_to_find(40, 6000), 2400);
        assert_eq!(feasible_nodes_to_find(1, 1000), 100);
        assert_eq!(feasible_nodes_to_find(100, 1000), 1000);
        assert_eq!(feasible_nodes_to_find(250, 1000), 1000);
        assert_eq!(feasible_nodes_to_find(0, 0), 0);
    }

    fn many_nodes(n: usize) -> Vec<Node> {
        (0..n)
            .map(|i| node(&format!("n{i:04}"), "8", "8Gi", "110"))
            .collect()
    }

    #[test]
    fn a_search_stops_once_enough_nodes_fit_and_the_next_starts_after_it() {
        let nodes = many_nodes(10);
        let mut infos: Vec<NodeInfo<'_>> = nodes.iter().map(NodeInfo::new).collect();
        // n0001 is the best node, but outside the share looked at.
        for (i, info) in infos.iter_mut().enumerate() {
            if i != 1 {
                info.add_pod(&pod(Some("1"), Some("1Gi")));
            }
        }
        let p = pod(Some("100m"), Some("64Mi"));
        let search = Search {
            start: 7,
            feasible_to_find: 3,
        };
        let got = select_node_in(&p, &infos, 0, search);
        assert_eq!(got.examined, 3);
        let Placement::Node(name) = &got.placement else {
            panic!("{:?}", got.placement);
        };
        assert!(
            ["n0007", "n0008", "n0009"].contains(&name.as_str()),
            "{name}"
        );
        // Wrapping round, the next share holds the best node.
        let next = Search {
            start: 0,
            feasible_to_find: 3,
        };
        assert_eq!(
            select_node_in(&p, &infos, 0, next).placement,
            Placement::Node("n0001".into())
        );
        // Looking at every node finds it from anywhere.
        assert_eq!(select_node(&p, &infos, 0), Placement::Node("n0001".into()));
    }

    #[test]
    fn unfit_nodes_do_not_count_towards_the_share_and_a_miss_reports_every_node() {
        let nodes = many_nodes(6);
        let mut infos: Vec<NodeInfo<'_>> = nodes.iter().map(NodeInfo::new).collect();
        let p = pod(Some("4"), None);
        // Only the last node has room; filtering from the first must reach it.
        for info in &mut infos[..5] {
            info.add_pod(&pod(Some("6"), None));
        }
        let search = Search {
            start: 0,
            feasible_to_find: 2,
        };
        let got = select_node_in(&p, &infos, 0, search);
        assert_eq!(got.placement, Placement::Node("n0005".into()));
        assert_eq!(got.examined, 6);
        // Full everywhere: every node is looked at and counted in the message.
        infos[5].add_pod(&pod(Some("6"), None));
        let got = select_node_in(&p, &infos, 0, Search { start: 3, ..search });
        assert_eq!(got.examined, 6);
        assert_eq!(
            got.placement,
            Placement::Unschedulable("0/6 nodes are available: 6 Insufficient cpu.".into())
        );
    }

    #[test]
    fn node_facts_are_read_from_allocatable_then_capacity() {
        let mut n = node("a", "1500m", "2Gi", "30");
        assert_eq!(
            NodeFacts::of(&n),
            NodeFacts {
                allocatable: Resources {
                    milli_cpu: 1500,
                    memory: 2 << 30,
                },
                max_pods: 30,
                ready: true,
            }
        );
        if let Some(status) = n.status.as_mut() {
            status.capacity = status.allocatable.take();
            status.conditions = None;
        }
        let facts = NodeFacts::of(&n);
        assert_eq!(facts.allocatable.milli_cpu, 1500);
        assert!(!facts.ready);
        n.status = None;
        assert_eq!(NodeFacts::of(&n).max_pods, 110);
        assert_eq!(NodeFacts::of(&n).allocatable, Resources::default());
    }
}
