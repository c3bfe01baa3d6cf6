//! The resource registry: every kind the API serves, with what discovery,
//! the REST paths and kubectl need to know of it. Adding a kind to the API is
//! adding an entry here (plus its rules in [`crate::rules`] and its columns in
//! [`crate::table`]); handlers are generic.

/// A subresource of a resource (`pods/status`, `pods/log`, `deployments/scale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subresource {
    /// The path segment after the object's name: `status`, `log`.
    pub name: &'static str,
    /// Group/version/kind of what the subresource answers with.
    pub group: &'static str,
    /// Version of [`Self::group`].
    pub version: &'static str,
    /// Kind of the subresource's body.
    pub kind: &'static str,
    /// Verbs discovery lists for it.
    pub verbs: &'static [&'static str],
}

/// One resource served by the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; `""` for the core group.
    pub group: &'static str,
    /// API version within the group: `v1`.
    pub version: &'static str,
    /// Kind of one object: `Pod`.
    pub kind: &'static str,
    /// Kind of a list of them: `PodList`.
    pub list_kind: &'static str,
    /// Lower-case plural used in paths: `pods`.
    pub plural: &'static str,
    /// Lower-case singular kubectl accepts: `pod`.
    pub singular: &'static str,
    /// kubectl abbreviations: `po`.
    pub short_names: &'static [&'static str],
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Verbs discovery lists.
    pub verbs: &'static [&'static str],
    /// Groupings such as `all` (`kubectl get all`).
    pub categories: &'static [&'static str],
    /// Subresources (`pods/status`…).
    pub subresources: &'static [Subresource],
}

impl ResourceInfo {
    /// `v1` for the core group, `apps/v1` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The store key prefix of this resource: `/registry/pods/` (namespaced keys
    /// continue with `<namespace>/<name>`, cluster-scoped ones with `<name>`).
    pub fn key_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/registry/{}/", self.plural)
        } else {
            format!("/registry/{}/{}/", self.group, self.plural)
        }
    }

    /// The subresource called `name`, if this resource has it.
    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }
}

/// Verbs of an ordinary resource, as Kubernetes lists them in discovery.
const FULL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Namespaces cannot be deleted as a collection.
const NAMESPACE_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];
/// `autoscaling/v1` Scale of a workload (`kubectl scale`, HPA): replicas at
/// `spec.replicas`, selector from `spec.selector`.
pub const SCALE: Subresource = Subresource {
    name: "scale",
    group: "autoscaling",
    version: "v1",
    kind: "Scale",
    verbs: STATUS_VERBS,
};

const RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        list_kind: "ConfigMapList",
        plural: "configmaps",
        singular: "configmap",
        short_names: &["cm"],
        namespaced: true,
        verbs: FULL_VERBS,
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Endpoints",
        list_kind: "EndpointsList",
        plural: "endpoints",
        singular: "endpoints",
        short_names: &["ep"],
        namespaced: true,
        verbs: FULL_VERBS,
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Event",
        list_kind: "EventList",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        namespaced: true,
        verbs: FULL_VERBS,
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "LimitRange",
        list_kind: "LimitRangeList",
        plural: "limitranges",
        singular: "limitrange",
        short_names: &["limits"],
        namespaced: true,
        verbs: FULL_VERBS,
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Namespace",
        list_kind: "NamespaceList",
        plural: "namespaces",
        singular: "namespace",
        short_names: &["ns"],
        namespaced: false,
        verbs: NAMESPACE_VERBS,
        categories: &[],
        subresources: &[Subresource {
            name: "status",
            group: "",
            version: "v1",
            kind: "Namespace",
            verbs: STATUS_VERBS,
        }],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Node",
        list_kind: "NodeList",
        plural: "nodes",
        singular: "node",
        short_names: &["no"],
        namespaced: false,
        verbs: FULL_VERBS,
        categories: &[],
        subresources: &[
            // The kubelet through the API server (`nodes/{name}/proxy/…`).
            Subresource {
                name: "proxy",
                group: "",
                version: "v1",
                kind: "NodeProxyOptions",
                verbs: &["create", "delete", "get", "patch", "update"],
            },
            Subresource {
                name: "status",
                group: "",
                version: "v1",
                kind: "Node",
                verbs: STATUS_VERBS,
            },
        ],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Pod",
        list_kind: "PodList",
        plural: "pods",
        singular: "pod",
        short_names: &["po"],
        namespaced: true,
        verbs: FULL_VERBS,
        categories: &["all"],
        subresources: &[
            Subresource {
                name: "binding",
                group: "",
                version: "v1",
                kind: "Binding",
                verbs: &["create"],
            },
            // kubectl drain evicts through this when discovery lists it
            // (otherwise it falls back to a protobuf DELETE).
            Subresource {
                name: "eviction",
                group: "policy",
                version: "v1",
                kind: "Eviction",
                verbs: &["create"],
            },
            Subresource {
                name: "log",
                group: "",
                version: "v1",
                kind: "Pod",
                verbs: &["get"],
            },
            // Answered with a Status that says how to reach wasm pods instead.
            Subresource {
                name: "portforward",
                group: "",
                version: "v1",
                kind: "PodPortForwardOptions",
                verbs: &["create", "get"],
            },
            Subresource {
                name: "status",
                group: "",
                version: "v1",
                kind: "Pod",
                verbs: STATUS_VERBS,
            },
        ],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "ResourceQuota",
        list_kind: "ResourceQuotaList",
        plural: "resourcequotas",
        singular: "resourcequota",
        short_names: &["quota"],
        namespaced: true,
        verbs: FULL_VERBS,
        categories: &[],
        subresources: &[Subresource {
            name: "status",
            group: "",
            version: "v1",
            kind: "ResourceQuota",
            verbs: STATUS_VERBS,
        }],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Secret",
        list_kind: "SecretList",
        plural: "secrets",
        singular: "secret",
        short_names: &[],
        namespaced: true,
        verbs: FULL_VERBS,
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Service",
        list_kind: "ServiceList",
        plural: "services",
        singular: "service",
        short_names: &["svc"],
        namespaced: true,
        verbs: FULL_VERBS,
        categories: &["all"],
        subresources: &[Subresource {
            name: "status",
            group: "",
            version: "v1",
            kind: "Service",
            verbs: STATUS_VERBS,
        }],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        list_kind: "ServiceAccountList",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        short_names: &["sa"],
        namespaced: true,
        verbs: FULL_VERBS,
        categories: &[],
        // `kubectl create token`: an authentication.k8s.io/v1 TokenRequest
        // answered with a signed token for the account.
        subresources: &[Subresource {
            name: "token",
            group: "authentication.k8s.io",
            version: "v1",
            kind: "TokenRequest",
            verbs: &["create"],
        }],
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "DaemonSet",
        list_kind: "DaemonSetList",
        plural: "daemonsets",
        singular: "daemonset",
        short_names: &["ds"],
        namespaced: true,
        verbs: FULL_VERBS,
        categories: &["all"],
        subresources: &[Subresource {
            name: "status",
            group: "apps",
            version: "v1",
            kind: "DaemonSet",
            verbs: STATUS_VERBS,
        }],
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        list_kind: "DeploymentList",
        plural: "deployments",
        singular: "deployment",
        short_names: &["deploy"],
        namespaced: true,
        verbs: FULL_VERBS,
        categories: &["all"],
        subresources: &[
            SCALE,
            Subresource {
                name: "status",
                group: "apps",
                version: "v1",
                kind: "Deployment",
                verbs: STATUS_VERBS,
            },
        ],
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        list_kind: "ReplicaSetList",
        plural: "replicasets",
        singular: "replicaset",
        short_names: &["rs"],
        namespaced: true,
        verbs: FULL_VERBS,
        categories: &["all"],
        subresources: &[
            SCALE,
            Subresource {
                name: "status",
                group: "apps",
                version: "v1",
                kind: "ReplicaSet",
                verbs: STATUS_VERBS,
            },
        ],
    },
    ResourceInfo {
        group: "batch",
        version: "v1",
        kind: "Job",
        list_kind: "JobList",
        plural: "jobs",
        singular: "job",
        short_names: &[],
        namespaced: true,
        verbs: FULL_VERBS,
        categories: &["all"],
        subresources: &[Subresource {
            name: "status",
            group: "batch",
            version: "v1",
            kind: "Job",
            verbs: STATUS_VERBS,
        }],
    },
    ResourceInfo {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        list_kind: "LeaseList",
        plural: "leases",
        singular: "lease",
        short_names: &[],
        namespaced: true,
        verbs: FULL_VERBS,
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        list_kind: "EndpointSliceList",
        plural: "endpointslices",
        singular: "endpointslice",
        short_names: &[],
        namespaced: true,
        verbs: FULL_VERBS,
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRole",
        list_kind: "ClusterRoleList",
        plural: "clusterroles",
        singular: "clusterrole",
        short_names: &[],
        namespaced: false,
        verbs: FULL_VERBS,
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRoleBinding",
        list_kind: "ClusterRoleBindingList",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        short_names: &[],
        namespaced: false,
        verbs: FULL_VERBS,
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "Role",
        list_kind: "RoleList",
        plural: "roles",
        singular: "role",
        short_names: &[],
        namespaced: true,
        verbs: FULL_VERBS,
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "RoleBinding",
        list_kind: "RoleBindingList",
        plural: "rolebindings",
        singular: "rolebinding",
        short_names: &[],
        namespaced: true,
        verbs: FULL_VERBS,
        categories: &[],
        subresources: &[],
    },
];

/// Every resource served, in discovery order.
pub fn all() -> &'static [ResourceInfo] {
    RESOURCES
}

/// Look a resource up by group, version and plural (as in a URL path).
pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Look a resource up by apiVersion (`v1`, `apps/v1`) and kind (`Pod`).
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// Look a resource up by kind alone (kinds are unique in this API).
pub fn by_kind_name(kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_resources_have_kubernetes_short_names_and_scope() {
        let pods = by_plural("", "v1", "pods").expect("pods");
        assert_eq!(pods.short_names, &["po"]);
        assert_eq!(pods.categories, &["all"]);
        assert!(pods.namespaced);
        assert!(pods.subresource("status").is_some());
        assert!(pods.subresource("binding").is_some());
        assert!(pods.subresource("log").is_some());
        assert_eq!(
            pods.subresource("eviction")
                .map(|s| (s.group, s.version, s.kind)),
            Some(("policy", "v1", "Eviction"))
        );
        let nodes = by_plural("", "v1", "nodes").expect("nodes");
        assert!(!nodes.namespaced);
        assert_eq!(nodes.short_names, &["no"]);
        assert_eq!(
            by_plural("", "v1", "namespaces").map(|r| r.short_names),
            Some(&["ns"][..])
        );
        assert_eq!(
            by_plural("", "v1", "events").map(|r| r.short_names),
            Some(&["ev"][..])
        );
        assert_eq!(
            by_plural("", "v1", "configmaps").map(|r| r.short_names),
            Some(&["cm"][..])
        );
        assert!(by_plural("", "v1", "secrets").is_some());
        assert!(by_plural("", "v1", "deployments").is_none());
    }

    #[test]
    fn apps_workloads_are_served_like_kubernetes() {
        let deploy = by_plural("apps", "v1", "deployments").expect("deployments");
        assert_eq!(deploy.kind, "Deployment");
        assert_eq!(deploy.short_names, &["deploy"]);
        assert_eq!(deploy.categories, &["all"]);
        assert_eq!(deploy.api_version(), "apps/v1");
        assert_eq!(deploy.key_prefix(), "/registry/apps/deployments/");
        assert_eq!(
            deploy
                .subresource("scale")
                .map(|s| (s.group, s.version, s.kind, s.verbs)),
            Some((
                "autoscaling",
                "v1",
                "Scale",
                &["get", "patch", "update"][..]
            ))
        );
        assert!(deploy.subresource("status").is_some());
        let rs = by_kind("apps/v1", "ReplicaSet").expect("replicasets");
        assert_eq!(rs.short_names, &["rs"]);
        assert!(rs.subresource("scale").is_some());
        let ds = by_plural("apps", "v1", "daemonsets").expect("daemonsets");
        assert_eq!(ds.short_names, &["ds"]);
        assert!(ds.subresource("scale").is_none());
    }

    #[test]
    fn batch_jobs_are_served_like_kubernetes() {
        let jobs = by_plural("batch", "v1", "jobs").expect("jobs");
        assert_eq!(jobs.kind, "Job");
        assert!(jobs.short_names.is_empty());
        assert_eq!(jobs.categories, &["all"]);
        assert_eq!(jobs.api_version(), "batch/v1");
        assert_eq!(jobs.key_prefix(), "/registry/batch/jobs/");
        assert!(jobs.subresource("status").is_some());
        assert!(jobs.subresource("scale").is_none());
        assert_eq!(by_kind("batch/v1", "Job"), Some(jobs));
    }

    #[test]
    fn services_and_endpoints_are_served_like_kubernetes() {
        let svc = by_plural("", "v1", "services").expect("services");
        assert_eq!(svc.kind, "Service");
        assert_eq!(svc.short_names, &["svc"]);
        assert_eq!(svc.categories, &["all"]);
        assert!(svc.subresource("status").is_some());
        assert_eq!(svc.key_prefix(), "/registry/services/");
        let ep = by_plural("", "v1", "endpoints").expect("endpoints");
        assert_eq!((ep.kind, ep.singular), ("Endpoints", "endpoints"));
        assert_eq!(ep.short_names, &["ep"]);
        let slices = by_kind("discovery.k8s.io/v1", "EndpointSlice").expect("endpointslices");
        assert_eq!(slices.plural, "endpointslices");
        assert_eq!(
            slices.key_prefix(),
            "/registry/discovery.k8s.io/endpointslices/"
        );
        assert!(slices.namespaced);
    }

    #[test]
    fn api_version_and_key_prefix_follow_the_group() {
        let pods = by_kind("v1", "Pod").expect("pod");
        assert_eq!(pods.api_version(), "v1");
        assert_eq!(pods.key_prefix(), "/registry/pods/");
        let leases = by_kind("coordination.k8s.io/v1", "Lease").expect("lease");
        assert_eq!(leases.api_version(), "coordination.k8s.io/v1");
        assert_eq!(leases.key_prefix(), "/registry/coordination.k8s.io/leases/");
        assert!(by_kind("v1", "Lease").is_none());
        assert!(by_kind("apps/v1", "Pod").is_none());
    }

    #[test]
    fn every_resource_is_unique_and_self_consistent() {
        let mut seen = std::collections::BTreeSet::new();
        for r in all() {
            assert!(seen.insert((r.group, r.plural)), "duplicate {}", r.plural);
            assert_eq!(r.list_kind, format!("{}List", r.kind));
            assert_eq!(r.singular, r.kind.to_lowercase());
            assert!(r.verbs.contains(&"watch"));
            assert_eq!(by_kind(&r.api_version(), r.kind), Some(r));
        }
    }
}
