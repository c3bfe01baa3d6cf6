//! The load on every node, kept up to date pod by pod.
//!
//! kube-scheduler keeps a snapshot of per-node aggregates that pod events
//! update incrementally, so a scheduling cycle costs O(nodes), not
//! O(pods). [`UsageCache`] is that: for each pod that counts on a node (bound
//! there, or assumed there while its binding is in flight) it remembers
//! what the pod added and where, so a change of the pod — bound, finished,
//! deleted, resized — takes back exactly its old share before adding the
//! new one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::fit::{self, NodeFacts, NodeInfo, NodeUsage, Placement, PodUsage};

/// The known nodes (each with its [`NodeFacts`], read once per update of
/// the node), the load on every node and each counted pod's share of it.
#[derive(Debug, Default)]
pub struct UsageCache {
    /// By node name, in name order: a scheduling cycle walks them in it.
    nodes: BTreeMap<String, NodeEntry>,
    /// Pod key → the node it counts on and what it adds there.
    pods: HashMap<String, (String, PodUsage)>,
}

/// One node name's entry: the node, if the watch has shown it, and the load
/// of the pods counted on that name (pods can name a node not seen yet).
#[derive(Debug, Default)]
struct NodeEntry {
    object: Option<(Arc<Node>, NodeFacts)>,
    load: NodeUsage,
}

impl NodeEntry {
    fn is_unused(&self) -> bool {
        self.object.is_none() && self.load.is_empty()
    }
}

impl UsageCache {
    /// Records that pod `key` now counts on `placed`'s node with its usage,
    /// or on no node (`None`: unbound and not assumed, finished, deleted).
    pub fn set(&mut self, key: &str, placed: Option<(String, PodUsage)>) {
        if self.pods.get(key) == placed.as_ref() {
            return;
        }
        if let Some((node, usage)) = self.pods.remove(key)
            && let Some(entry) = self.nodes.get_mut(&node)
        {
            entry.load.remove(&usage);
            if entry.is_unused() {
                self.nodes.remove(&node);
            }
        }
        if let Some((node, usage)) = placed {
            self.nodes.entry(node.clone()).or_default().load.add(&usage);
            self.pods.insert(key.to_owned(), (node, usage));
        }
    }

    /// The load on `node` (`None`: nothing counts there).
    pub fn node(&self, node: &str) -> Option<&NodeUsage> {
        self.nodes
            .get(node)
            .map(|e| &e.load)
            .filter(|load| !load.is_empty())
    }

    /// Adds or updates a node (its facts are read here, once).
    pub fn set_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let facts = NodeFacts::of(&node);
        self.nodes.entry(name).or_default().object = Some((node, facts));
    }

    /// Forgets a node; the load of pods still naming it stays.
    pub fn remove_node(&mut self, name: &str) {
        if let Some(entry) = self.nodes.get_mut(name) {
            entry.object = None;
            if entry.is_unused() {
                self.nodes.remove(name);
            }
        }
    }

    /// Replaces every node with `nodes` (after a fresh list).
    pub fn replace_nodes(&mut self, nodes: impl IntoIterator<Item = Arc<Node>>) {
        for entry in self.nodes.values_mut() {
            entry.object = None;
        }
        for node in nodes {
            self.set_node(node);
        }
        self.nodes.retain(|_, e| !e.is_unused());
    }

    /// How many nodes are known.
    pub fn node_count(&self) -> usize {
        self.nodes.values().filter(|e| e.object.is_some()).count()
    }

    /// One scheduling cycle's view of the known nodes, in name order: each
    /// with its facts and the load counted on it.
    pub fn node_infos(&self) -> Vec<NodeInfo<'_>> {
        self.nodes
            .values()
            .filter_map(|e| {
                let (node, facts) = e.object.as_ref()?;
                Some(NodeInfo::cached(node, *facts, Some(&e.load)))
            })
            .collect()
    }

    /// One scheduling cycle for `pod` over the known nodes: filters from
    /// `*next_start` on until the share `percentage_of_nodes_to_score` asks
    /// for fits (see [`fit::feasible_nodes_to_find`]), scores those, and
    /// moves `*next_start` past the nodes it filtered.
    pub fn place(
        &self,
        pod: &Pod,
        tie_seed: u64,
        percentage_of_nodes_to_score: u32,
        next_start: &mut usize,
    ) -> Placement {
        let infos = self.node_infos();
        let search = fit::Search {
            start: *next_start,
            feasible_to_find: fit::feasible_nodes_to_find(
                percentage_of_nodes_to_score,
                infos.len(),
            ),
        };
        let selection = fit::select_node_in(pod, &infos, tie_seed, search);
        *next_start = match infos.len() {
            0 => 0,
            n => (search.start % n + selection.examined) % n,
        };
        selection.placement
    }

    /// Forgets every pod's share (before counting them again from a fresh
    /// list); the nodes stay.
    pub fn clear_pods(&mut self) {
        self.pods.clear();
        for entry in self.nodes.values_mut() {
            entry.load = NodeUsage::default();
        }
        self.nodes.retain(|_, e| !e.is_unused());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::fit::NodeInfo;
    use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use proptest::prelude::*;

    fn pod(cpu_m: u32, owner: Option<u8>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                owner_references: owner.map(|o| {
                    vec![OwnerReference {
                        controller: Some(true),
                        uid: format!("owner-{o}"),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    resources: Some(ResourceRequirements {
                        requests: Some([("cpu".to_string(), Quantity(format!("{cpu_m}m")))].into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    proptest! {
        /// After any sequence of placements, moves and removals, each
        /// node's load equals the load computed from scratch from where the
        /// pods are now.
        #[test]
        fn incremental_load_equals_a_rebuild(
            ops in proptest::collection::vec(
                (0u8..12, proptest::option::of(0u8..4), 0u32..2000, proptest::option::of(0u8..3)),
                1..200,
            )
        ) {
            let mut cache = UsageCache::default();
            let mut truth: HashMap<String, (String, Pod)> = HashMap::new();
            for (p, node, cpu, owner) in ops {
                let key = format!("ns/p{p}");
                match node {
                    Some(n) => {
                        let pod = pod(cpu, owner);
                        let node = format!("n{n}");
                        cache.set(&key, Some((node.clone(), PodUsage::of(&pod))));
                        truth.insert(key, (node, pod));
                    }
                    None => {
                        cache.set(&key, None);
                        truth.remove(&key);
                    }
                }
            }
            for n in 0..4 {
                let name = format!("n{n}");
                let node = Node::default();
                let mut rebuilt = NodeInfo::new(&node);
                for (_, pod) in truth.values().filter(|(on, _)| *on == name) {
                    rebuilt.add_pod(pod);
                }
                let empty = NodeUsage::default();
                prop_assert_eq!(cache.node(&name).unwrap_or(&empty), rebuilt.usage.as_ref());
            }
        }
    }

    #[test]
    fn a_terminating_replica_stops_counting_for_spreading_but_keeps_its_resources() {
        let mut cache = UsageCache::default();
        let live = pod(100, Some(1));
        cache.set("ns/a", Some(("n".into(), PodUsage::of(&live))));
        assert_eq!(
            cache.node("n").unwrap().owner_counts.get("owner-1"),
            Some(&1)
        );
        let mut leaving = live.clone();
        leaving.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        cache.set("ns/a", Some(("n".into(), PodUsage::of(&leaving))));
        let load = cache.node("n").unwrap();
        assert_eq!(load.owner_counts.get("owner-1"), None);
        assert_eq!(load.requested.milli_cpu, 100);
        cache.set("ns/a", None);
        assert!(cache.node("n").is_none());
    }

    fn named(name: &str) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn names(cache: &UsageCache) -> Vec<String> {
        cache
            .node_infos()
            .iter()
            .map(|i| i.node.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn nodes_come_in_name_order_and_a_relist_replaces_them_while_loads_stay() {
        let mut cache = UsageCache::default();
        cache.set("ns/a", Some(("b".into(), PodUsage::of(&pod(100, None)))));
        for n in ["c", "a", "b"] {
            cache.set_node(named(n));
        }
        assert_eq!(names(&cache), ["a", "b", "c"]);
        assert_eq!(cache.node_count(), 3);
        // The load of the pod on b shows in b's view.
        let infos = cache.node_infos();
        assert_eq!(infos[1].usage.requested.milli_cpu, 100);
        assert_eq!(infos[0].usage.pod_count, 0);
        drop(infos);

        // A relist without b: b is no longer a node to schedule on, but the
        // pod still counts there should it come back.
        cache.replace_nodes([named("c"), named("a")]);
        assert_eq!(names(&cache), ["a", "c"]);
        assert_eq!(cache.node("b").map(|u| u.pod_count), Some(1));
        cache.set_node(named("b"));
        assert_eq!(cache.node_infos()[1].usage.pod_count, 1);

        cache.remove_node("a");
        assert_eq!(names(&cache), ["b", "c"]);
        // Counting the pods again from a fresh list keeps the nodes.
        cache.clear_pods();
        assert_eq!(names(&cache), ["b", "c"]);
        assert!(cache.node("b").is_none());
    }

    #[test]
    fn successive_cycles_filter_successive_shares_of_the_nodes() {
        let mut cache = UsageCache::default();
        for i in 0..250 {
            let mut node = (*named(&format!("n{i:03}"))).clone();
            node.status = Some(k8s_openapi::api::core::v1::NodeStatus {
                allocatable: Some(
                    [
                        ("cpu".to_string(), Quantity("4".into())),
                        ("memory".to_string(), Quantity("4Gi".into())),
                    ]
                    .into(),
                ),
                conditions: Some(vec![k8s_openapi::api::core::v1::NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            });
            cache.set_node(Arc::new(node));
        }
        // 250 nodes: the adaptive share is 48 %, 120 nodes.
        let mut next = 0;
        let first = cache.place(&pod(100, None), 0, 0, &mut next);
        assert!(matches!(first, crate::fit::Placement::Node(_)));
        assert_eq!(next, 120);
        cache.place(&pod(100, None), 0, 0, &mut next);
        assert_eq!(next, 240);
        cache.place(&pod(100, None), 0, 0, &mut next);
        assert_eq!(next, 110);
        // Every node, when asked to.
        cache.place(&pod(100, None), 0, 100, &mut next);
        assert_eq!(next, 110);
    }
}
