//! The load on every node, kept up to date pod by pod.
//!
//! kube-scheduler keeps a snapshot of per-node aggregates that pod events
//! update incrementally, so a scheduling cycle costs O(nodes), not
//! O(pods). [`UsageCache`] is that: for each pod that counts on a node (bound
//! there, or assumed there while its binding is in flight) it remembers
//! what the pod added and where, so a change of the pod — bound, finished,
//! deleted, resized — takes back exactly its old share before adding the
//! new one.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Node;

use crate::fit::{NodeInfo, NodeUsage, PodUsage};

/// Per-node load and each counted pod's share of it.
#[derive(Debug, Default)]
pub struct UsageCache {
    nodes: HashMap<String, NodeUsage>,
    /// Pod key → the node it counts on and what it adds there.
    pods: HashMap<String, (String, PodUsage)>,
}

impl UsageCache {
    /// Records that pod `key` now counts on `placed`'s node with its usage,
    /// or on no node (`None`: unbound and not assumed, finished, deleted).
    pub fn set(&mut self, key: &str, placed: Option<(String, PodUsage)>) {
        if self.pods.get(key) == placed.as_ref() {
            return;
        }
        if let Some((node, usage)) = self.pods.remove(key)
            && let Some(load) = self.nodes.get_mut(&node)
        {
            load.remove(&usage);
            if load.is_empty() {
                self.nodes.remove(&node);
            }
        }
        if let Some((node, usage)) = placed {
            self.nodes.entry(node.clone()).or_default().add(&usage);
            self.pods.insert(key.to_owned(), (node, usage));
        }
    }

    /// The load on `node` (`None`: nothing counts there).
    pub fn node(&self, node: &str) -> Option<&NodeUsage> {
        self.nodes.get(node)
    }

    /// One scheduling cycle's view of `nodes`: each with the load counted
    /// on it (none when nothing is).
    pub fn node_infos<'a>(
        &'a self,
        nodes: impl IntoIterator<Item = &'a Node>,
    ) -> Vec<NodeInfo<'a>> {
        nodes
            .into_iter()
            .map(
                |n| match self.node(n.metadata.name.as_deref().unwrap_or("")) {
                    Some(usage) => NodeInfo::with_usage(n, usage),
                    None => NodeInfo::new(n),
                },
            )
            .collect()
    }

    /// Forgets everything (before a rebuild from a fresh list).
    pub fn clear(&mut self) {
        self.nodes.clear();
        self.pods.clear();
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
}
