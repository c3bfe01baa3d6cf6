//! Server-side printing: `meta.k8s.io/v1` Tables with the columns kubectl
//! shows for each kind, rendered the way Kubernetes' own printers
//! (`pkg/printers/internalversion`) render them, so `kubectl get` output is
//! indistinguishable from a real cluster's.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Map, Value, json};

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// One column definition.
fn col(name: &str, type_: &str, format: &str, priority: i32, description: &str) -> Value {
    json!({"name": name, "type": type_, "format": format, "description": description, "priority": priority})
}

fn name_col() -> Value {
    col("Name", "string", "name", 0, NAME_DESC)
}

fn age_col() -> Value {
    col("Age", "string", "", 0, AGE_DESC)
}

/// Column definitions of `kind` (priority-1 columns are shown only by
/// `kubectl get -o wide`).
pub fn columns(kind: &str) -> Vec<Value> {
    match kind {
        "Pod" => vec![
            name_col(),
            col(
                "Ready",
                "string",
                "",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            col(
                "Status",
                "string",
                "",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            col(
                "Restarts",
                "string",
                "",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            age_col(),
            col(
                "IP",
                "string",
                "",
                1,
                "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
            ),
            col(
                "Node",
                "string",
                "",
                1,
                "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename",
            ),
            col(
                "Nominated Node",
                "string",
                "",
                1,
                "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.",
            ),
            col(
                "Readiness Gates",
                "string",
                "",
                1,
                "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates",
            ),
        ],
        "Node" => vec![
            name_col(),
            col("Status", "string", "", 0, "The status of the node"),
            col("Roles", "string", "", 0, "The roles of the node"),
            age_col(),
            col(
                "Version",
                "string",
                "",
                0,
                "Kubelet Version reported by the node.",
            ),
            col(
                "Internal-IP",
                "string",
                "",
                1,
                "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).",
            ),
            col(
                "External-IP",
                "string",
                "",
                1,
                "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).",
            ),
            col(
                "OS-Image",
                "string",
                "",
                1,
                "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
            ),
            col(
                "Kernel-Version",
                "string",
                "",
                1,
                "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
            ),
            col(
                "Container-Runtime",
                "string",
                "",
                1,
                "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
            ),
        ],
        "Namespace" => vec![
            name_col(),
            col("Status", "string", "", 0, "The status of the namespace"),
            age_col(),
        ],
        "Event" => vec![
            col(
                "Last Seen",
                "string",
                "",
                0,
                "The time at which the most recent occurrence of this event was recorded.",
            ),
            col(
                "Type",
                "string",
                "",
                0,
                "Type of this event (Normal, Warning), new types could be added in the future",
            ),
            col(
                "Reason",
                "string",
                "",
                0,
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            col(
                "Object",
                "string",
                "",
                0,
                "The object that this event is about.",
            ),
            col(
                "Subobject",
                "string",
                "",
                1,
                "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.",
            ),
            col(
                "Source",
                "string",
                "",
                1,
                "The component reporting this event. Should be a short machine understandable string.",
            ),
            col(
                "Message",
                "string",
                "",
                0,
                "A human-readable description of the status of this operation.",
            ),
            col(
                "First Seen",
                "string",
                "",
                1,
                "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
            ),
            col(
                "Count",
                "string",
                "",
                1,
                "The number of times this event has occurred.",
            ),
            col("Name", "string", "name", 1, NAME_DESC),
        ],
        "Lease" => vec![
            name_col(),
            col(
                "Holder",
                "string",
                "",
                0,
                "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.",
            ),
            age_col(),
        ],
        "ConfigMap" => vec![
            name_col(),
            col(
                "Data",
                "string",
                "",
                0,
                "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.",
            ),
            age_col(),
        ],
        "Secret" => vec![
            name_col(),
            col(
                "Type",
                "string",
                "",
                0,
                "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
            ),
            col(
                "Data",
                "string",
                "",
                0,
                "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4",
            ),
            age_col(),
        ],
        "Deployment" => {
            let mut c = vec![
                name_col(),
                col(
                    "Ready",
                    "string",
                    "",
                    0,
                    "Number of the pod with ready state",
                ),
                col(
                    "Up-to-date",
                    "string",
                    "",
                    0,
                    "Total number of non-terminating pods targeted by this deployment that have the desired template spec.",
                ),
                col(
                    "Available",
                    "string",
                    "",
                    0,
                    "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.",
                ),
                age_col(),
            ];
            c.extend(template_cols(SELECTOR_DESC_DEPLOYMENT));
            c
        }
        "ReplicaSet" => {
            let mut c = vec![
                name_col(),
                col(
                    "Desired",
                    "integer",
                    "",
                    0,
                    "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset/#how-a-replicaset-works",
                ),
                col(
                    "Current",
                    "integer",
                    "",
                    0,
                    "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset/#how-a-replicaset-works",
                ),
                col(
                    "Ready",
                    "integer",
                    "",
                    0,
                    "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.",
                ),
                age_col(),
            ];
            c.extend(template_cols(SELECTOR_DESC_REPLICASET));
            c
        }
        "DaemonSet" => {
            let mut c = vec![
                name_col(),
                col(
                    "Desired",
                    "integer",
                    "",
                    0,
                    "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
                ),
                col(
                    "Current",
                    "integer",
                    "",
                    0,
                    "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
                ),
                col(
                    "Ready",
                    "integer",
                    "",
                    0,
                    "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
                ),
                col(
                    "Up-to-date",
                    "integer",
                    "",
                    0,
                    "The total number of nodes that are running updated daemon pod",
                ),
                col(
                    "Available",
                    "integer",
                    "",
                    0,
                    "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
                ),
                col(
                    "Node Selector",
                    "string",
                    "",
                    0,
                    "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/",
                ),
                age_col(),
            ];
            c.extend(template_cols(SELECTOR_DESC_DAEMONSET));
            c
        }
        "Job" => {
            let mut c = vec![
                name_col(),
                col("Status", "string", "", 0, "Status of the job."),
                col(
                    "Completions",
                    "string",
                    "",
                    0,
                    "The number of pods which reached phase Succeeded. The value increases monotonically for a given spec. However, it may decrease in reaction to scale down of elastic indexed jobs.",
                ),
                col(
                    "Duration",
                    "string",
                    "",
                    0,
                    "Time required to complete the job.",
                ),
                age_col(),
            ];
            c.extend(template_cols(SELECTOR_DESC_JOB));
            c
        }
        "Service" => vec![
            name_col(),
            col("Type", "string", "", 0, "The type of the service."),
            col(
                "Cluster-IP",
                "string",
                "",
                0,
                "The cluster IP of the service.",
            ),
            col(
                "External-IP",
                "string",
                "",
                0,
                "The external IP of the service.",
            ),
            col(
                "Port(s)",
                "string",
                "",
                0,
                "The port (or ports) of the service.",
            ),
            age_col(),
            col(
                "Selector",
                "string",
                "",
                1,
                "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/",
            ),
        ],
        "Endpoints" => vec![
            name_col(),
            col(
                "Endpoints",
                "string",
                "",
                0,
                "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.",
            ),
            age_col(),
        ],
        "EndpointSlice" => vec![
            name_col(),
            col(
                "AddressType",
                "string",
                "",
                0,
                "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type.",
            ),
            col(
                "Ports",
                "string",
                "",
                0,
                "ports specifies the list of network ports exposed by each endpoint in this slice.",
            ),
            col(
                "Endpoints",
                "string",
                "",
                0,
                "endpoints is a list of unique endpoints in this slice.",
            ),
            age_col(),
        ],
        "ServiceAccount" => vec![
            name_col(),
            col(
                "Secrets",
                "string",
                "",
                0,
                "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
            ),
            age_col(),
        ],
        "RoleBinding" | "ClusterRoleBinding" => {
            let of = if kind == "RoleBinding" {
                "roleBinding"
            } else {
                "clusterRoleBinding"
            };
            vec![
                name_col(),
                col(
                    "Role",
                    "string",
                    "",
                    0,
                    "RoleRef can only reference a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. This field is immutable.",
                ),
                age_col(),
                col("Users", "string", "", 1, &format!("Users in the {of}")),
                col("Groups", "string", "", 1, &format!("Groups in the {of}")),
                col(
                    "ServiceAccounts",
                    "string",
                    "",
                    1,
                    &format!("ServiceAccounts in the {of}"),
                ),
            ]
        }
        "ResourceQuota" => vec![
            name_col(),
            age_col(),
            col(
                "Request",
                "string",
                "",
                0,
                "Request represents a minimum amount of cpu/memory that a container may consume.",
            ),
            col(
                "Limit",
                "string",
                "",
                0,
                "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
            ),
        ],
        // Kinds without a printer of their own get what kube-apiserver's
        // default table convertor gives them: the name and the creation
        // time as an RFC 3339 date (kubectl's `CREATED AT`).
        _ => vec![name_col(), col("Created At", "date", "", 0, AGE_DESC)],
    }
}

const SELECTOR_DESC_JOB: &str = "A label query over pods that should match the pod count. Normally, the system sets this field for you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const SELECTOR_DESC_DEPLOYMENT: &str = "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment. It must match the pod template's labels.";
const SELECTOR_DESC_REPLICASET: &str = "Selector is a label query over pods that should match the replica count. Label keys and values that must match in order to be controlled by this replica set. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const SELECTOR_DESC_DAEMONSET: &str = "A label query over pods that are managed by the daemon set. Must match in order to be controlled. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";

/// The wide columns every workload shares: its template's containers and
/// images, and its selector.
fn template_cols(selector_desc: &str) -> [Value; 3] {
    [
        col(
            "Containers",
            "string",
            "",
            1,
            "Names of each container in the template.",
        ),
        col(
            "Images",
            "string",
            "",
            1,
            "Images referenced by each container in the template.",
        ),
        col("Selector", "string", "", 1, selector_desc),
    ]
}

/// CONTAINERS, IMAGES and SELECTOR of a workload (kubectl's
/// `layoutContainerCells` and `LabelSelectorAsSelector(..).String()`).
fn template_cells(obj: &Value) -> [Value; 3] {
    let containers = arr(obj, "/spec/template/spec/containers");
    let names: Vec<&str> = containers.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| s(c, "/image")).collect();
    let selector = obj
        .pointer("/spec/selector")
        .filter(|v| !v.is_null())
        .and_then(|v| {
            serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>(
                v.clone(),
            )
            .ok()
        })
        .map(|sel| match crate::selector::LabelSelector::from_k8s(&sel) {
            Ok(sel) => sel.to_string(),
            Err(_) => "<error>".to_string(),
        })
        .unwrap_or_default();
    [
        Value::from(names.join(",")),
        Value::from(images.join(",")),
        Value::from(selector),
    ]
}

/// Labels as `labels.FormatLabels` prints them: sorted `k=v` pairs, or
/// `<none>`.
fn format_labels(v: Option<&Value>) -> String {
    let pairs: Vec<String> = v
        .and_then(Value::as_object)
        .map(|m| {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            keys.into_iter()
                .map(|k| format!("{k}={}", m.get(k).and_then(Value::as_str).unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        "<none>".into()
    } else {
        pairs.join(",")
    }
}

fn workload_cells(kind: &str, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let name = Value::from(s(obj, "/metadata/name"));
    let mut cells = match kind {
        "Deployment" => {
            // kubectl prints the desired count as is when spec.replicas is unset (0).
            let desired = int(obj, "/spec/replicas");
            vec![
                name,
                Value::from(format!("{}/{desired}", int(obj, "/status/readyReplicas"))),
                Value::from(int(obj, "/status/updatedReplicas")),
                Value::from(int(obj, "/status/availableReplicas")),
                Value::from(age(obj, now)),
            ]
        }
        "ReplicaSet" => vec![
            name,
            Value::from(int(obj, "/spec/replicas")),
            Value::from(int(obj, "/status/replicas")),
            Value::from(int(obj, "/status/readyReplicas")),
            Value::from(age(obj, now)),
        ],
        _ => vec![
            name,
            Value::from(int(obj, "/status/desiredNumberScheduled")),
            Value::from(int(obj, "/status/currentNumberScheduled")),
            Value::from(int(obj, "/status/numberReady")),
            Value::from(int(obj, "/status/updatedNumberScheduled")),
            Value::from(int(obj, "/status/numberAvailable")),
            Value::from(format_labels(
                obj.pointer("/spec/template/spec/nodeSelector"),
            )),
            Value::from(age(obj, now)),
        ],
    };
    cells.extend(template_cells(obj));
    cells
}

/// kubectl's `printJob`: STATUS from the conditions (Complete and Failed
/// first, then Terminating, Suspended…), COMPLETIONS as `succeeded/completions`
/// (`succeeded/1 of <parallelism>` for a work queue without completions),
/// DURATION from start to completion (or to now while it runs).
fn job_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let conditions = arr(obj, "/status/conditions");
    let status = if condition_true(conditions, "Complete") {
        "Complete"
    } else if condition_true(conditions, "Failed") {
        "Failed"
    } else if obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        "Terminating"
    } else if condition_true(conditions, "Suspended") {
        "Suspended"
    } else if condition_true(conditions, "FailureTarget") {
        "FailureTarget"
    } else if condition_true(conditions, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    let succeeded = int(obj, "/status/succeeded");
    let completions = match obj.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int(obj, "/spec/parallelism") {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let start = parse_time(s(obj, "/status/startTime"));
    let end = parse_time(s(obj, "/status/completionTime")).unwrap_or(now);
    let duration = start
        .map(|start| {
            let secs = (end.as_second() - start.as_second()).max(0);
            human_duration(Duration::from_secs(secs.unsigned_abs()))
        })
        .unwrap_or_default();
    let mut cells = vec![
        Value::from(s(obj, "/metadata/name")),
        Value::from(status),
        Value::from(completions),
        Value::from(duration),
        Value::from(age(obj, now)),
    ];
    let [names, images, selector] = template_cells(obj);
    let selector = if obj.pointer("/spec/selector").is_none_or(Value::is_null) {
        Value::from("<none>")
    } else {
        selector
    };
    cells.extend([names, images, selector]);
    cells
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn arr<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn parse_time(v: &str) -> Option<jiff::Timestamp> {
    if v.is_empty() { None } else { v.parse().ok() }
}

/// Kubernetes' `translateTimestampSince`: `<unknown>` for a missing time.
fn since(t: Option<jiff::Timestamp>, now: jiff::Timestamp) -> String {
    let Some(t) = t else {
        return "<unknown>".into();
    };
    let secs = now.as_second() - t.as_second();
    // HumanDuration tolerates up to two seconds of clock skew.
    if secs < -1 {
        "<invalid>".into()
    } else if secs < 0 {
        "0s".into()
    } else {
        human_duration(Duration::from_secs(secs.unsigned_abs()))
    }
}

fn age(obj: &Value, now: jiff::Timestamp) -> String {
    since(parse_time(s(obj, "/metadata/creationTimestamp")), now)
}

/// Kubernetes' `HumanDuration`: 5s, 3m2s, 15m, 5h, 7h30m, 2d3h, 100d, 3y20d,
/// 10y.
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The cells of one row for `obj` of `kind`, wide columns included (the
/// server always renders them; kubectl hides them without `-o wide`).
pub fn cells(kind: &str, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let name = Value::from(s(obj, "/metadata/name"));
    match kind {
        "Pod" => pod_cells(obj, now),
        "Node" => node_cells(obj, now),
        "Namespace" => vec![
            name,
            Value::from(s(obj, "/status/phase")),
            Value::from(age(obj, now)),
        ],
        "Event" => event_cells(obj, now),
        "Lease" => vec![
            name,
            Value::from(s(obj, "/spec/holderIdentity")),
            Value::from(age(obj, now)),
        ],
        "ConfigMap" => {
            let n = count_keys(obj, &["/data", "/binaryData"]);
            vec![name, Value::from(n), Value::from(age(obj, now))]
        }
        "Secret" => {
            let n = count_keys(obj, &["/data", "/stringData"]);
            vec![
                name,
                Value::from(s(obj, "/type")),
                Value::from(n),
                Value::from(age(obj, now)),
            ]
        }
        "Deployment" | "ReplicaSet" | "DaemonSet" => workload_cells(kind, obj, now),
        "Job" => job_cells(obj, now),
        "Service" => service_cells(obj, now),
        "Endpoints" => vec![
            name,
            Value::from(format_endpoints(obj)),
            Value::from(age(obj, now)),
        ],
        "EndpointSlice" => vec![
            name,
            Value::from(s(obj, "/addressType")),
            Value::from(format_slice_ports(obj)),
            Value::from(format_slice_endpoints(obj)),
            Value::from(age(obj, now)),
        ],
        "ServiceAccount" => vec![
            name,
            Value::from(arr(obj, "/secrets").len()),
            Value::from(age(obj, now)),
        ],
        "RoleBinding" | "ClusterRoleBinding" => {
            let role = format!("{}/{}", s(obj, "/roleRef/kind"), s(obj, "/roleRef/name"));
            let [users, groups, sas] = binding_subjects(obj);
            vec![
                name,
                Value::from(role),
                Value::from(age(obj, now)),
                Value::from(users),
                Value::from(groups),
                Value::from(sas),
            ]
        }
        "ResourceQuota" => {
            let [request, limit] = quota_usage(obj);
            vec![
                name,
                Value::from(age(obj, now)),
                Value::from(request),
                Value::from(limit),
            ]
        }
        _ => vec![name, Value::from(created_at(obj))],
    }
}

/// kube-apiserver's default table cell for the creation time: RFC 3339 in
/// UTC, whole seconds.
fn created_at(obj: &Value) -> String {
    match parse_time(s(obj, "/metadata/creationTimestamp")) {
        Some(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => String::new(),
    }
}

/// A binding's subjects as kubectl's wide columns show them: users, groups
/// and `namespace/name` service accounts, each list joined with `, `.
fn binding_subjects(obj: &Value) -> [String; 3] {
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for subject in arr(obj, "/subjects") {
        let name = s(subject, "/name");
        match s(subject, "/kind") {
            "User" => users.push(name.to_string()),
            "Group" => groups.push(name.to_string()),
            "ServiceAccount" => sas.push(format!("{}/{name}", s(subject, "/namespace"))),
            _ => {}
        }
    }
    [users.join(", "), groups.join(", "), sas.join(", ")]
}

/// A quota's `REQUEST` and `LIMIT` cells: `used/hard` per resource in name
/// order, `limits.*` in the second, everything else in the first.
fn quota_usage(obj: &Value) -> [String; 2] {
    let mut hard: Vec<(&String, &Value)> = obj
        .pointer("/status/hard")
        .and_then(Value::as_object)
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    hard.sort_by(|a, b| a.0.cmp(b.0));
    let (mut request, mut limit) = (Vec::new(), Vec::new());
    for (resource, quantity) in hard {
        let used = obj
            .pointer("/status/used")
            .and_then(|u| u.get(resource.as_str()))
            .and_then(Value::as_str)
            .unwrap_or("0");
        let cell = format!("{resource}: {used}/{}", quantity.as_str().unwrap_or("0"));
        if resource.split('.').next() == Some("limits") && resource.contains('.') {
            limit.push(cell);
        } else {
            request.push(cell);
        }
    }
    [request.join(", "), limit.join(", ")]
}

/// kubectl's service row: `80:30080/TCP` for node ports, `<none>` for
/// what is absent, `<pending>` for a load balancer without ingress.
fn service_cells(svc: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let ty = s(svc, "/spec/type");
    let cluster_ip = arr(svc, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .or_else(|| Some(s(svc, "/spec/clusterIP")).filter(|ip| !ip.is_empty()))
        .unwrap_or("<none>");
    let external: Vec<&str> = arr(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let ingress: Vec<&str> = arr(svc, "/status/loadBalancer/ingress")
        .iter()
        .filter_map(|i| {
            i.get("ip")
                .or_else(|| i.get("hostname"))
                .and_then(Value::as_str)
        })
        .collect();
    let external_ip = match ty {
        "ExternalName" => s(svc, "/spec/externalName").to_string(),
        "LoadBalancer" => {
            let all: Vec<&str> = ingress.iter().chain(external.iter()).copied().collect();
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        _ if !external.is_empty() => external.join(","),
        _ => "<none>".to_string(),
    };
    let ports: Vec<String> = arr(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("");
            match p
                .get("nodePort")
                .and_then(Value::as_i64)
                .filter(|n| *n != 0)
            {
                Some(np) => format!("{port}:{np}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    };
    let selector = svc
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
        .map(|m| {
            let mut pairs: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            pairs.sort();
            pairs.join(",")
        })
        .unwrap_or_else(|| "<none>".to_string());
    vec![
        Value::from(s(svc, "/metadata/name")),
        Value::from(ty),
        Value::from(cluster_ip),
        Value::from(external_ip),
        Value::from(ports),
        Value::from(age(svc, now)),
        Value::from(selector),
    ]
}

/// At most three entries, then `+ N more...` (kubectl's list shortening).
fn list_with_more(list: &[String], empty: &str) -> String {
    const MAX: usize = 3;
    if list.is_empty() {
        return empty.to_string();
    }
    let shown = list[..list.len().min(MAX)].join(",");
    if list.len() > MAX {
        format!("{shown} + {} more...", list.len() - MAX)
    } else {
        shown
    }
}

/// The ready `ip:port` pairs of an Endpoints object (`formatEndpoints`).
fn format_endpoints(ep: &Value) -> String {
    let subsets = arr(ep, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut list = Vec::new();
    for ss in subsets {
        let ips: Vec<&str> = arr(ss, "/addresses").iter().map(|a| s(a, "/ip")).collect();
        let ports = arr(ss, "/ports");
        if ports.is_empty() {
            list.extend(ips.iter().map(|ip| ip.to_string()));
            continue;
        }
        for p in ports {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            list.extend(ips.iter().map(|ip| format!("{ip}:{port}")));
        }
    }
    list_with_more(&list, "")
}

fn format_slice_ports(slice: &Value) -> String {
    let list: Vec<String> = arr(slice, "/ports")
        .iter()
        .map(|p| match p.get("port").and_then(Value::as_i64) {
            Some(n) => n.to_string(),
            None => p
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or("*")
                .to_string(),
        })
        .collect();
    list_with_more(&list, "<unset>")
}

fn format_slice_endpoints(slice: &Value) -> String {
    let list: Vec<String> = arr(slice, "/endpoints")
        .iter()
        .flat_map(|e| arr(e, "/addresses").iter())
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    list_with_more(&list, "<unset>")
}

/// Distinct keys across the maps at `pointers`.
fn count_keys(obj: &Value, pointers: &[&str]) -> u64 {
    let keys: BTreeSet<&String> = pointers
        .iter()
        .filter_map(|p| obj.pointer(p).and_then(Value::as_object))
        .flat_map(Map::keys)
        .collect();
    keys.len() as u64
}

fn condition_true(conditions: &[Value], type_: &str) -> bool {
    conditions
        .iter()
        .find(|c| s(c, "/type") == type_)
        .is_some_and(|c| s(c, "/status") == "True")
}

fn finished_at(status: &Value) -> Option<jiff::Timestamp> {
    parse_time(s(status, "/lastState/terminated/finishedAt"))
}

fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn terminated_reason(t: &Value, prefix: &str) -> String {
    let reason = s(t, "/reason");
    if !reason.is_empty() {
        format!("{prefix}{reason}")
    } else if int(t, "/signal") != 0 {
        format!("{prefix}Signal:{}", int(t, "/signal"))
    } else {
        format!("{prefix}ExitCode:{}", int(t, "/exitCode"))
    }
}

/// The READY, STATUS and RESTARTS of a pod: kubectl's `printPod`.
fn pod_cells(pod: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let conditions = arr(pod, "/status/conditions");
    let init_specs = arr(pod, "/spec/initContainers");
    let restartable_init = |name: &str| {
        init_specs
            .iter()
            .any(|c| s(c, "/name") == name && s(c, "/restartPolicy") == "Always")
    };
    let total = arr(pod, "/spec/containers").len()
        + init_specs
            .iter()
            .filter(|c| s(c, "/restartPolicy") == "Always")
            .count();
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut restartable_init_restarts = 0i64;
    let mut last_restart: Option<jiff::Timestamp> = None;
    let mut last_restartable_init_restart: Option<jiff::Timestamp> = None;
    let later = |a: Option<jiff::Timestamp>, b: Option<jiff::Timestamp>| match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };

    let phase = s(pod, "/status/phase");
    let mut reason = match s(pod, "/status/reason") {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    if conditions
        .iter()
        .any(|c| s(c, "/type") == "PodScheduled" && s(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }

    let init_statuses = arr(pod, "/status/initContainerStatuses");
    let mut initializing = false;
    for (i, c) in init_statuses.iter().enumerate() {
        let count = int(c, "/restartCount");
        restarts = restarts.saturating_add(count);
        last_restart = later(last_restart, finished_at(c));
        let name = s(c, "/name");
        if restartable_init(name) {
            restartable_init_restarts = restartable_init_restarts.saturating_add(count);
            last_restartable_init_restart = later(last_restartable_init_restart, finished_at(c));
        }
        let terminated = c.pointer("/state/terminated").filter(|t| t.is_object());
        let waiting_reason = s(c, "/state/waiting/reason");
        if terminated.is_some_and(|t| int(t, "/exitCode") == 0) {
            continue;
        }
        if restartable_init(name) && c.get("started").and_then(Value::as_bool) == Some(true) {
            if c.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        reason = match terminated {
            Some(t) => terminated_reason(t, "Init:"),
            None if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" => {
                format!("Init:{waiting_reason}")
            }
            None => format!("Init:{i}/{}", init_specs.len()),
        };
        initializing = true;
        break;
    }

    if !initializing || condition_true(conditions, "Initialized") {
        restarts = restartable_init_restarts;
        last_restart = last_restartable_init_restart;
        let mut has_running = false;
        let mut error_reason = String::new();
        for c in arr(pod, "/status/containerStatuses").iter().rev() {
            restarts = restarts.saturating_add(int(c, "/restartCount"));
            last_restart = later(last_restart, finished_at(c));
            let waiting_reason = s(c, "/state/waiting/reason");
            let terminated = c.pointer("/state/terminated").filter(|t| t.is_object());
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                reason = terminated_reason(t, "");
                if int(t, "/exitCode") != 0 {
                    error_reason = reason.clone();
                }
            } else if c.get("ready").and_then(Value::as_bool) == Some(true)
                && c.pointer("/state/running").is_some_and(Value::is_object)
            {
                has_running = true;
                ready += 1;
            }
        }
        // A completed container beside a running one: the pod is not done.
        if reason == "Completed" {
            if has_running && condition_true(conditions, "Ready") {
                reason = "Running".into();
            } else if !error_reason.is_empty() {
                reason = error_reason;
            } else if has_running {
                reason = "NotReady".into();
            }
        }
    }

    let deleting = pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null());
    if deleting && s(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(t), now)),
        _ => restarts.to_string(),
    };

    let none = |v: &str| {
        if v.is_empty() {
            "<none>".to_string()
        } else {
            v.to_string()
        }
    };
    let ip = match arr(pod, "/status/podIPs").first().map(|p| s(p, "/ip")) {
        Some(ip) if !ip.is_empty() => ip.to_string(),
        _ => s(pod, "/status/podIP").to_string(),
    };
    let gates = arr(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_count = gates
            .iter()
            .filter(|g| condition_true(conditions, s(g, "/conditionType")))
            .count();
        format!("{true_count}/{}", gates.len())
    };
    vec![
        Value::from(s(pod, "/metadata/name")),
        Value::from(format!("{ready}/{total}")),
        Value::from(reason),
        Value::from(restarts_cell),
        Value::from(age(pod, now)),
        Value::from(none(&ip)),
        Value::from(none(s(pod, "/spec/nodeName"))),
        Value::from(none(s(pod, "/status/nominatedNodeName"))),
        Value::from(readiness_gates),
    ]
}

fn node_cells(node: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let mut status: Vec<String> = Vec::new();
    if let Some(c) = arr(node, "/status/conditions")
        .iter()
        .rev()
        .find(|c| s(c, "/type") == "Ready")
    {
        status.push(if s(c, "/status") == "True" {
            "Ready".into()
        } else {
            "NotReady".into()
        });
    }
    if status.is_empty() {
        status.push("Unknown".into());
    }
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles = BTreeSet::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role"
                && let Some(v) = v.as_str().filter(|v| !v.is_empty())
            {
                roles.insert(v.to_string());
            }
        }
    }
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };
    let address = |type_: &str| {
        arr(node, "/status/addresses")
            .iter()
            .find(|a| s(a, "/type") == type_)
            .map(|a| s(a, "/address").to_string())
            .unwrap_or_else(|| "<none>".to_string())
    };
    let unknown = |v: &str| {
        if v.is_empty() {
            "<unknown>".to_string()
        } else {
            v.to_string()
        }
    };
    vec![
        Value::from(s(node, "/metadata/name")),
        Value::from(status.join(",")),
        Value::from(roles),
        Value::from(age(node, now)),
        Value::from(s(node, "/status/nodeInfo/kubeletVersion")),
        Value::from(address("InternalIP")),
        Value::from(address("ExternalIP")),
        Value::from(unknown(s(node, "/status/nodeInfo/osImage"))),
        Value::from(unknown(s(node, "/status/nodeInfo/kernelVersion"))),
        Value::from(unknown(s(node, "/status/nodeInfo/containerRuntimeVersion"))),
    ]
}

fn event_cells(ev: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let first_time =
        parse_time(s(ev, "/firstTimestamp")).or_else(|| parse_time(s(ev, "/eventTime")));
    let first = since(first_time, now);
    let mut last = match parse_time(s(ev, "/lastTimestamp")) {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = int(ev, "/count");
    if ev.get("series").is_some_and(Value::is_object) {
        last = since(parse_time(s(ev, "/series/lastObservedTime")), now);
        count = int(ev, "/series/count");
    } else if count == 0 {
        count = 1;
    }
    let kind = s(ev, "/involvedObject/kind").to_lowercase();
    let target = match s(ev, "/involvedObject/name") {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let first_non_empty = |a: &str, b: &str| {
        if a.is_empty() {
            b.to_string()
        } else {
            a.to_string()
        }
    };
    let component = first_non_empty(s(ev, "/source/component"), s(ev, "/reportingComponent"));
    let instance = first_non_empty(s(ev, "/source/host"), s(ev, "/reportingInstance"));
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    vec![
        Value::from(last),
        Value::from(s(ev, "/type")),
        Value::from(s(ev, "/reason")),
        Value::from(target),
        Value::from(s(ev, "/involvedObject/fieldPath")),
        Value::from(source),
        Value::from(s(ev, "/message").trim()),
        Value::from(first),
        Value::from(count),
        Value::from(s(ev, "/metadata/name")),
    ]
}

/// `row.object`: the object's metadata as a `PartialObjectMetadata`, which
/// kubectl needs for `-A` (NAMESPACE), `--show-labels` and `-L`.
fn partial_object_metadata(obj: &Value) -> Value {
    let mut meta = obj
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    meta.remove("managedFields");
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
}

/// A full Table for `objects` of `kind`; `with_columns` false leaves
/// `columnDefinitions` empty (watch events after the first).
pub fn table(
    kind: &str,
    objects: &[Value],
    list_meta: Value,
    with_columns: bool,
    now: jiff::Timestamp,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| json!({"cells": cells(kind, o, now), "object": partial_object_metadata(o)}))
        .collect();
    let meta = if list_meta.is_object() {
        list_meta
    } else {
        json!({})
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": if with_columns { columns(kind) } else { Vec::new() },
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2026-01-01T00:10:00Z"
            .parse()
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    fn pod(status: Value) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "hello:v1"}], "nodeName": "n1"},
            "status": status,
        })
    }

    fn status_of(p: &Value) -> String {
        cells("Pod", p, now())[2]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn service_rows_print_like_kubectl() {
        let mut svc = json!({"metadata": {"name": "web", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "selector": {"tier": "fe", "app": "web"},
                "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        let c = cells("Service", &svc, now());
        assert_eq!(c.len(), columns("Service").len());
        assert_eq!(
            c[..5],
            [
                json!("web"),
                json!("NodePort"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP")
            ]
        );
        assert_eq!(c[6], json!("app=web,tier=fe"));
        svc["spec"] = json!({"type": "ClusterIP", "clusterIP": "None"});
        let c = cells("Service", &svc, now());
        assert_eq!(c[2..5], [json!("None"), json!("<none>"), json!("<none>")]);
        assert_eq!(c[6], json!("<none>"));
        svc["spec"] = json!({"type": "LoadBalancer", "clusterIP": "10.96.0.3", "ports": [{"port": 443, "protocol": "TCP"}]});
        assert_eq!(cells("Service", &svc, now())[3], json!("<pending>"));
    }

    #[test]
    fn endpoints_and_slices_list_three_then_count_the_rest() {
        let ep = json!({"metadata": {"name": "web"}, "subsets": [{
            "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "10.0.0.4"}],
            "notReadyAddresses": [{"ip": "10.0.0.9"}],
            "ports": [{"port": 8080}]}]});
        assert_eq!(
            cells("Endpoints", &ep, now())[1],
            json!("10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080 + 1 more...")
        );
        assert_eq!(
            cells("Endpoints", &json!({"metadata": {"name": "x"}}), now())[1],
            json!("<none>")
        );
        let slice = json!({"metadata": {"name": "web-abcde"}, "addressType": "IPv4",
            "ports": [{"port": 8080, "name": "http"}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]});
        let c = cells("EndpointSlice", &slice, now());
        assert_eq!(c.len(), columns("EndpointSlice").len());
        assert_eq!(
            c[..4],
            [
                json!("web-abcde"),
                json!("IPv4"),
                json!("8080"),
                json!("10.0.0.1,10.0.0.2")
            ]
        );
        let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv4"});
        assert_eq!(
            cells("EndpointSlice", &empty, now())[2..4],
            [json!("<unset>"), json!("<unset>")]
        );
    }

    #[test]
    fn human_duration_matches_kubernetes() {
        let cases = [
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (182, "3m2s"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600, "3h"),
            (7 * 3600 + 30 * 60, "7h30m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (51 * 3600, "2d3h"),
            (8 * 86400, "8d"),
            (100 * 86400, "100d"),
            (730 * 86400, "2y"),
            (3 * 365 * 86400 + 20 * 86400, "3y20d"),
            (10 * 365 * 86400, "10y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(Duration::from_secs(secs)), want, "{secs}s");
        }
    }

    #[test]
    fn pod_row_has_kubectl_columns() {
        let p = pod(
            json!({"phase": "Running", "podIP": "10.0.0.5", "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}}}]}),
        );
        let c = cells("Pod", &p, now());
        assert_eq!(
            c,
            vec![
                json!("web"),
                json!("1/1"),
                json!("Running"),
                json!("0"),
                json!("10m"),
                json!("10.0.0.5"),
                json!("n1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        assert_eq!(columns("Pod").len(), c.len());
    }

    #[test]
    fn pending_pod_without_statuses_shows_its_phase() {
        let mut p = pod(json!({"phase": "Pending"}));
        p["spec"]["nodeName"] = Value::Null;
        let c = cells("Pod", &p, now());
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], "Pending");
        assert_eq!(c[5], "<none>");
        assert_eq!(c[6], "<none>");
    }

    #[test]
    fn waiting_reason_wins() {
        for reason in [
            "ContainerCreating",
            "ErrImagePull",
            "ImagePullBackOff",
            "CrashLoopBackOff",
        ] {
            let p = pod(
                json!({"phase": "Pending", "containerStatuses": [{"name": "web", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": reason}}}]}),
            );
            assert_eq!(status_of(&p), reason);
        }
    }

    #[test]
    fn terminated_containers_show_reason_signal_or_exit_code() {
        let term = |t: Value| {
            pod(
                json!({"phase": "Failed", "containerStatuses": [{"name": "web", "restartCount": 0, "state": {"terminated": t}}]}),
            )
        };
        assert_eq!(
            status_of(&term(json!({"exitCode": 1, "reason": "Error"}))),
            "Error"
        );
        assert_eq!(
            status_of(&term(json!({"exitCode": 137, "reason": "OOMKilled"}))),
            "OOMKilled"
        );
        assert_eq!(
            status_of(&term(json!({"exitCode": 137, "signal": 9}))),
            "Signal:9"
        );
        assert_eq!(status_of(&term(json!({"exitCode": 3}))), "ExitCode:3");
    }

    #[test]
    fn succeeded_pod_shows_completed() {
        let p = pod(
            json!({"phase": "Succeeded", "containerStatuses": [{"name": "web", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        );
        assert_eq!(status_of(&p), "Completed");
    }

    #[test]
    fn completed_beside_running_is_running_or_not_ready() {
        let mut p = pod(
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            ]}),
        );
        p["spec"]["containers"] = json!([{"name": "a"}, {"name": "b"}]);
        assert_eq!(status_of(&p), "Running");
        p["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
        assert_eq!(status_of(&p), "NotReady");
        assert_eq!(cells("Pod", &p, now())[1], "1/2");
    }

    #[test]
    fn init_containers_show_progress_and_failures() {
        let mut p = pod(json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "i1", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "i2", "restartCount": 0, "state": {"running": {}}},
        ]}));
        p["spec"]["initContainers"] = json!([{"name": "i1"}, {"name": "i2"}]);
        assert_eq!(status_of(&p), "Init:1/2");
        p["status"]["initContainerStatuses"][1]["state"] =
            json!({"waiting": {"reason": "CrashLoopBackOff"}});
        assert_eq!(status_of(&p), "Init:CrashLoopBackOff");
        p["status"]["initContainerStatuses"][1]["state"] =
            json!({"waiting": {"reason": "PodInitializing"}});
        assert_eq!(status_of(&p), "Init:1/2");
        p["status"]["initContainerStatuses"][1]["state"] = json!({"terminated": {"exitCode": 2}});
        assert_eq!(status_of(&p), "Init:ExitCode:2");
        p["status"]["initContainerStatuses"][1]["state"] =
            json!({"terminated": {"exitCode": 1, "reason": "Error"}});
        assert_eq!(status_of(&p), "Init:Error");
    }

    #[test]
    fn deletion_shows_terminating_or_unknown_when_node_lost() {
        let mut p = pod(json!({"phase": "Running"}));
        p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:09:00Z");
        assert_eq!(status_of(&p), "Terminating");
        p["status"]["reason"] = json!("NodeLost");
        assert_eq!(status_of(&p), "Unknown");
        let mut done = pod(
            json!({"phase": "Succeeded", "containerStatuses": [{"name": "web", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        );
        done["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:09:00Z");
        assert_eq!(
            status_of(&done),
            "Completed",
            "finished pods are not shown as terminating"
        );
    }

    #[test]
    fn restarts_show_time_since_last_termination() {
        let p = pod(
            json!({"phase": "Running", "containerStatuses": [{"name": "web", "ready": true, "restartCount": 3,
            "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-01-01T00:09:55Z"}}}]}),
        );
        assert_eq!(cells("Pod", &p, now())[3], "3 (5s ago)");
        let p = pod(
            json!({"phase": "Running", "containerStatuses": [{"name": "web", "ready": true, "restartCount": 2, "state": {"running": {}}}]}),
        );
        assert_eq!(cells("Pod", &p, now())[3], "2");
    }

    #[test]
    fn restart_count_sum_saturates_instead_of_overflowing() {
        let p = pod(json!({"phase": "Running",
            "initContainerStatuses": [{"name": "i", "restartCount": i64::MAX, "state": {"terminated": {"exitCode": 0}}}],
            "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": i64::MAX, "state": {"running": {}}},
                {"name": "b", "ready": true, "restartCount": i64::MAX, "state": {"running": {}}}]}));
        assert_eq!(cells("Pod", &p, now())[3], i64::MAX.to_string());
    }

    #[test]
    fn bindings_show_their_role_and_subjects_in_wide_columns() {
        let b = json!({
            "metadata": {"name": "viewers", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [
                {"kind": "User", "name": "alice"}, {"kind": "User", "name": "bob"},
                {"kind": "Group", "name": "devs"},
                {"kind": "ServiceAccount", "name": "ci", "namespace": "team"}],
        });
        let c = cells("RoleBinding", &b, now());
        assert_eq!(
            c,
            vec![
                json!("viewers"),
                json!("ClusterRole/view"),
                json!("10m"),
                json!("alice, bob"),
                json!("devs"),
                json!("team/ci")
            ]
        );
        let names: Vec<_> = columns("ClusterRoleBinding")
            .iter()
            .map(|c| (c["name"].clone(), c["priority"].clone()))
            .collect();
        assert_eq!(names[1], (json!("Role"), json!(0)));
        assert_eq!(names[5], (json!("ServiceAccounts"), json!(1)));
    }

    #[test]
    fn quotas_split_requests_and_limits_in_name_order() {
        let q = json!({
            "metadata": {"name": "q", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {
                "hard": {"pods": "10", "limits.memory": "1Gi", "requests.cpu": "2", "count/configmaps": "5", "limits.cpu": "4"},
                "used": {"pods": "3", "limits.memory": "256Mi", "requests.cpu": "500m"}},
        });
        assert_eq!(
            cells("ResourceQuota", &q, now()),
            vec![
                json!("q"),
                json!("10m"),
                json!("count/configmaps: 0/5, pods: 3/10, requests.cpu: 500m/2"),
                json!("limits.cpu: 0/4, limits.memory: 256Mi/1Gi")
            ]
        );
    }

    #[test]
    fn kinds_without_a_printer_show_their_creation_date() {
        let role = json!({"metadata": {"name": "r", "creationTimestamp": "2026-01-01T00:00:00Z"}});
        assert_eq!(
            cells("Role", &role, now()),
            vec![json!("r"), json!("2026-01-01T00:00:00Z")]
        );
        assert_eq!(columns("ClusterRole")[1]["name"], "Created At");
        assert_eq!(columns("ClusterRole")[1]["type"], "date");
        let sa =
            json!({"metadata": {"name": "default", "creationTimestamp": "2026-01-01T00:00:00Z"}});
        assert_eq!(
            cells("ServiceAccount", &sa, now()),
            vec![json!("default"), json!(0), json!("10m")]
        );
    }

    #[test]
    fn scheduling_gated_pods_say_so() {
        let p = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
        );
        assert_eq!(status_of(&p), "SchedulingGated");
    }

    #[test]
    fn node_row_reports_readiness_roles_and_wide_fields() {
        let node = json!({
            "metadata": {"name": "n1", "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                       "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "wasip1", "kernelVersion": "", "containerRuntimeVersion": "wasmtime://48"}},
        });
        let c = cells("Node", &node, now());
        assert_eq!(
            c,
            vec![
                json!("n1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane"),
                json!("10m"),
                json!("v1.33.0"),
                json!("127.0.0.1"),
                json!("<none>"),
                json!("wasip1"),
                json!("<unknown>"),
                json!("wasmtime://48")
            ]
        );
        let bare = json!({"metadata": {"name": "n2"}});
        let c = cells("Node", &bare, now());
        assert_eq!(c[1], "Unknown");
        assert_eq!(c[2], "<none>");
        assert_eq!(c[3], "<unknown>");
        let not_ready = json!({"metadata": {"name": "n3"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(cells("Node", &not_ready, now())[1], "NotReady");
    }

    #[test]
    fn event_row_names_the_object() {
        let ev = json!({"metadata": {"name": "web.1"}, "involvedObject": {"kind": "Pod", "name": "web"}, "type": "Normal", "reason": "Scheduled",
            "message": " Successfully assigned default/web to n1 ", "firstTimestamp": "2026-01-01T00:05:00Z", "lastTimestamp": "2026-01-01T00:09:00Z",
            "count": 2, "source": {"component": "default-scheduler"}});
        let c = cells("Event", &ev, now());
        assert_eq!(
            c,
            vec![
                json!("60s"),
                json!("Normal"),
                json!("Scheduled"),
                json!("pod/web"),
                json!(""),
                json!("default-scheduler"),
                json!("Successfully assigned default/web to n1"),
                json!("5m"),
                json!(2),
                json!("web.1")
            ]
        );
        assert_eq!(columns("Event").len(), c.len());
        let fresh = json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Node"}, "eventTime": "2026-01-01T00:09:58.000000Z", "reportingComponent": "kubelet", "reportingInstance": "n1"});
        let c = cells("Event", &fresh, now());
        assert_eq!(c[0], "2s");
        assert_eq!(c[3], "node");
        assert_eq!(c[5], "kubelet, n1");
        assert_eq!(c[8], 1);
    }

    #[test]
    fn simple_kinds_have_their_columns() {
        let ns = json!({"metadata": {"name": "default", "creationTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": "Active"}});
        assert_eq!(
            cells("Namespace", &ns, now()),
            vec![json!("default"), json!("Active"), json!("10m")]
        );
        let cm = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(cells("ConfigMap", &cm, now())[1], 3);
        let secret = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "AA=="}});
        assert_eq!(
            cells("Secret", &secret, now()),
            vec![json!("s"), json!("Opaque"), json!(1), json!("<unknown>")]
        );
        let lease = json!({"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1"}});
        assert_eq!(cells("Lease", &lease, now())[1], "n1");
        assert_eq!(cells("Widget", &lease, now()), vec![json!("n1"), json!("")]);
        for kind in [
            "Namespace",
            "ConfigMap",
            "Secret",
            "Lease",
            "Widget",
            "Node",
            "Deployment",
            "ReplicaSet",
            "DaemonSet",
            "Job",
        ] {
            assert_eq!(
                columns(kind).len(),
                cells(kind, &lease, now()).len(),
                "{kind}"
            );
        }
    }

    fn deployment() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web", "tier": "fe"}},
                "template": {"metadata": {"labels": {"app": "web", "tier": "fe"}},
                    "spec": {"containers": [{"name": "web", "image": "hello:v1"}, {"name": "side", "image": "log:v2"}]}},
            },
            "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
        })
    }

    #[test]
    fn deployment_row_has_kubectl_columns() {
        let names: Vec<Value> = columns("Deployment")
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(
            names,
            vec![
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let priorities: Vec<i64> = columns("Deployment")
            .iter()
            .map(|c| c["priority"].as_i64().unwrap_or(-1))
            .collect();
        assert_eq!(priorities, vec![0, 0, 0, 0, 0, 1, 1, 1]);
        assert_eq!(
            cells("Deployment", &deployment(), now()),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("10m"),
                json!("web,side"),
                json!("hello:v1,log:v2"),
                json!("app=web,tier=fe"),
            ]
        );
        // A new deployment without status: zeros, not blanks.
        let mut fresh = deployment();
        fresh["status"] = json!({});
        let row = cells("Deployment", &fresh, now());
        assert_eq!(row[1], "0/3");
        assert_eq!(row[2], 0);
    }

    #[test]
    fn replica_set_row_has_kubectl_columns() {
        let mut rs = deployment();
        rs["metadata"]["name"] = json!("web-5d9c8f7b6");
        rs["spec"]["selector"] = json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "pod-template-hash", "operator": "In", "values": ["5d9c8f7b6"]}]});
        let names: Vec<Value> = columns("ReplicaSet")
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(
            names,
            vec![
                "Name",
                "Desired",
                "Current",
                "Ready",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        assert_eq!(
            cells("ReplicaSet", &rs, now()),
            vec![
                json!("web-5d9c8f7b6"),
                json!(3),
                json!(3),
                json!(2),
                json!("10m"),
                json!("web,side"),
                json!("hello:v1,log:v2"),
                json!("app=web,pod-template-hash in (5d9c8f7b6)"),
            ]
        );
    }

    #[test]
    fn daemon_set_row_shows_node_selector() {
        let ds = json!({"metadata": {"name": "agent"}, "spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "wasip1"}, "containers": [{"name": "a", "image": "a:v1"}]}}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1}});
        let row = cells("DaemonSet", &ds, now());
        assert_eq!(row.len(), columns("DaemonSet").len());
        assert_eq!(
            row[..7],
            [
                json!("agent"),
                json!(3),
                json!(3),
                json!(1),
                json!(2),
                json!(1),
                json!("kubernetes.io/os=wasip1")
            ]
        );
        assert_eq!(row[10], "app=a");
    }

    #[test]
    fn future_timestamps_are_tolerated_within_skew() {
        let mut p = json!({"metadata": {"name": "x", "creationTimestamp": "2026-01-01T00:10:01Z"}});
        assert_eq!(cells("ConfigMap", &p, now())[2], "0s");
        p["metadata"]["creationTimestamp"] = json!("2026-01-01T01:00:00Z");
        assert_eq!(cells("ConfigMap", &p, now())[2], "<invalid>");
    }

    #[test]
    fn table_rows_carry_partial_object_metadata() {
        let p = pod(json!({"phase": "Pending"}));
        let t = table(
            "Pod",
            std::slice::from_ref(&p),
            json!({"resourceVersion": "149"}),
            true,
            now(),
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["metadata"]["resourceVersion"], "149");
        assert_eq!(t["columnDefinitions"][0]["name"], "Name");
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
        let row = &t["rows"][0];
        assert_eq!(row["cells"][0], "web");
        assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(row["object"]["metadata"]["namespace"], "default");
        assert_eq!(row["object"]["metadata"]["labels"]["app"], "web");
        let t = table("Pod", &[p], json!({}), false, now());
        assert_eq!(t["columnDefinitions"], json!([]));
    }

    fn job() -> Value {
        json!({
            "metadata": {"name": "pi", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {
                "completions": 5,
                "parallelism": 2,
                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
                "template": {"metadata": {"labels": {"batch.kubernetes.io/controller-uid": "u1"}},
                    "spec": {"containers": [{"name": "pi", "image": "hello:v1"}]}},
            },
            "status": {"succeeded": 3, "active": 2, "startTime": "2026-01-01T00:01:00Z"},
        })
    }

    #[test]
    fn job_row_has_kubectl_columns() {
        let names: Vec<Value> = columns("Job").iter().map(|c| c["name"].clone()).collect();
        assert_eq!(
            names,
            vec![
                "Name",
                "Status",
                "Completions",
                "Duration",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        assert_eq!(
            cells("Job", &job(), now()),
            vec![
                json!("pi"),
                json!("Running"),
                json!("3/5"),
                json!("9m"),
                json!("10m"),
                json!("pi"),
                json!("hello:v1"),
                json!("batch.kubernetes.io/controller-uid=u1"),
            ]
        );
        let mut done = job();
        done["status"]["completionTime"] = json!("2026-01-01T00:01:42Z");
        done["status"]["succeeded"] = json!(5);
        done["status"]["conditions"] = json!([
            {"type": "SuccessCriteriaMet", "status": "True"},
            {"type": "Complete", "status": "True"},
        ]);
        let row = cells("Job", &done, now());
        assert_eq!(row[1..4], [json!("Complete"), json!("5/5"), json!("42s")]);
        let mut failed = job();
        failed["status"]["conditions"] =
            json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]);
        assert_eq!(cells("Job", &failed, now())[1], "Failed");
        let mut suspended = job();
        suspended["status"] = json!({"conditions": [{"type": "Suspended", "status": "True"}]});
        let row = cells("Job", &suspended, now());
        assert_eq!(row[1..4], [json!("Suspended"), json!("0/5"), json!("")]);
        let mut queue = job();
        queue["spec"]
            .as_object_mut()
            .map(|s| s.remove("completions"));
        assert_eq!(cells("Job", &queue, now())[2], "3/1 of 2");
    }
}
