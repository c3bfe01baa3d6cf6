//! The protobuf layout of the Kubernetes messages wasmkube accepts as request
//! bodies: for each message its fields' tags, JSON names and types.
//!
//! Derived from the `k8s-pb` 0.9 bindings (Kubernetes 1.34 `generated.proto`)
//! for the field tags and types, with JSON names and required fields taken from
//! `k8s-openapi`'s v1_34 types. `ptr` marks fields that are pointers in the Go
//! types: their zero value is meaningful, unlike plain fields, which Go's
//! marshaller always writes and its JSON encoder drops when zero. `inline`
//! marks embedded structs whose fields JSON flattens into the parent.
//! To accept another kind, add its message and every message it reaches
//! (tags and types from `k8s-pb`, names from `k8s-openapi`, pointer-ness from
//! the Go types), keeping the list sorted; `schema_is_sorted_and_closed`
//! checks order, unique tags and that every reference resolves.

/// A field's protobuf type.
// `Bytes` and `F64` occur only in kinds not accepted yet; the decoder
// handles them so that adding a kind is only a table change.
#[allow(dead_code)]
#[derive(Debug, Clone, Copy)]
pub(super) enum Ty {
    Str,
    Bytes,
    Bool,
    I32,
    I64,
    F64,
    /// A nested message, by qualified name (see [`MESSAGES`]).
    Msg(&'static str),
    /// `map<string, string>`.
    MapStr,
    /// `map<string, bytes>` (JSON: base64 values).
    MapBytes,
    /// `map<string, message>`.
    MapMsg(&'static str),
}

/// One field of a message.
#[derive(Debug, Clone, Copy)]
pub(super) struct F {
    pub tag: u32,
    pub json: &'static str,
    pub ty: Ty,
    pub rep: bool,
    pub req: bool,
    pub ptr: bool,
    pub inline: bool,
}

/// One message.
#[derive(Debug)]
pub(super) struct M {
    pub name: &'static str,
    pub fields: &'static [F],
}

use Ty::*;

/// Every message reachable from the accepted kinds, sorted by name.
#[rustfmt::skip]
pub(super) static MESSAGES: &[M] = &[
    M {
        name: "coordination.v1.Lease",
        fields: &[
            F { tag: 1, json: "metadata", ty: Msg("meta.v1.ObjectMeta"), rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "spec", ty: Msg("coordination.v1.LeaseSpec"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "coordination.v1.LeaseSpec",
        fields: &[
            F { tag: 1, json: "holderIdentity", ty: Str, rep: false, req: false, ptr: true, inline: false },
            F { tag: 2, json: "leaseDurationSeconds", ty: I32, rep: false, req: false, ptr: true, inline: false },
            F { tag: 3, json: "acquireTime", ty: Msg("meta.v1.MicroTime"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "renewTime", ty: Msg("meta.v1.MicroTime"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "leaseTransitions", ty: I32, rep: false, req: false, ptr: true, inline: false },
            F { tag: 6, json: "strategy", ty: Str, rep: false, req: false, ptr: true, inline: false },
            F { tag: 7, json: "preferredHolder", ty: Str, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.Affinity",
        fields: &[
            F { tag: 1, json: "nodeAffinity", ty: Msg("core.v1.NodeAffinity"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "podAffinity", ty: Msg("core.v1.PodAffinity"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "podAntiAffinity", ty: Msg("core.v1.PodAntiAffinity"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.AppArmorProfile",
        fields: &[
            F { tag: 1, json: "type", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "localhostProfile", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.AttachedVolume",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "devicePath", ty: Str, rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.AwsElasticBlockStoreVolumeSource",
        fields: &[
            F { tag: 1, json: "volumeID", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "fsType", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "partition", ty: I32, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "readOnly", ty: Bool, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.AzureDiskVolumeSource",
        fields: &[
            F { tag: 1, json: "diskName", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "diskURI", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "cachingMode", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "fsType", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "readOnly", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "kind", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.AzureFileVolumeSource",
        fields: &[
            F { tag: 1, json: "secretName", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "shareName", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "readOnly", ty: Bool, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.Binding",
        fields: &[
            F { tag: 1, json: "metadata", ty: Msg("meta.v1.ObjectMeta"), rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "target", ty: Msg("core.v1.ObjectReference"), rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.CSIVolumeSource",
        fields: &[
            F { tag: 1, json: "driver", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "readOnly", ty: Bool, rep: false, req: false, ptr: true, inline: false },
            F { tag: 3, json: "fsType", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "volumeAttributes", ty: MapStr, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "nodePublishSecretRef", ty: Msg("core.v1.LocalObjectReference"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.Capabilities",
        fields: &[
            F { tag: 1, json: "add", ty: Str, rep: true, req: false, ptr: false, inline: false },
            F { tag: 2, json: "drop", ty: Str, rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.CephFsVolumeSource",
        fields: &[
            F { tag: 1, json: "monitors", ty: Str, rep: true, req: true, ptr: false, inline: false },
            F { tag: 2, json: "path", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "user", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "secretFile", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "secretRef", ty: Msg("core.v1.LocalObjectReference"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "readOnly", ty: Bool, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.CinderVolumeSource",
        fields: &[
            F { tag: 1, json: "volumeID", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "fsType", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "readOnly", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "secretRef", ty: Msg("core.v1.LocalObjectReference"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ClusterTrustBundleProjection",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "signerName", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "labelSelector", ty: Msg("meta.v1.LabelSelector"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "path", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 5, json: "optional", ty: Bool, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.ConfigMap",
        fields: &[
            F { tag: 1, json: "metadata", ty: Msg("meta.v1.ObjectMeta"), rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "data", ty: MapStr, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "binaryData", ty: MapBytes, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "immutable", ty: Bool, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.ConfigMapEnvSource",
        fields: &[
            F { tag: 1, json: "localObjectReference", ty: Msg("core.v1.LocalObjectReference"), rep: false, req: false, ptr: false, inline: true },
            F { tag: 2, json: "optional", ty: Bool, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.ConfigMapKeySelector",
        fields: &[
            F { tag: 1, json: "localObjectReference", ty: Msg("core.v1.LocalObjectReference"), rep: false, req: false, ptr: false, inline: true },
            F { tag: 2, json: "key", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "optional", ty: Bool, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.ConfigMapNodeConfigSource",
        fields: &[
            F { tag: 1, json: "namespace", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "uid", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "resourceVersion", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "kubeletConfigKey", ty: Str, rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ConfigMapProjection",
        fields: &[
            F { tag: 1, json: "localObjectReference", ty: Msg("core.v1.LocalObjectReference"), rep: false, req: false, ptr: false, inline: true },
            F { tag: 2, json: "items", ty: Msg("core.v1.KeyToPath"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 4, json: "optional", ty: Bool, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.ConfigMapVolumeSource",
        fields: &[
            F { tag: 1, json: "localObjectReference", ty: Msg("core.v1.LocalObjectReference"), rep: false, req: false, ptr: false, inline: true },
            F { tag: 2, json: "items", ty: Msg("core.v1.KeyToPath"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 3, json: "defaultMode", ty: I32, rep: false, req: false, ptr: true, inline: false },
            F { tag: 4, json: "optional", ty: Bool, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.Container",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "image", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "command", ty: Str, rep: true, req: false, ptr: false, inline: false },
            F { tag: 4, json: "args", ty: Str, rep: true, req: false, ptr: false, inline: false },
            F { tag: 5, json: "workingDir", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "ports", ty: Msg("core.v1.ContainerPort"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 7, json: "env", ty: Msg("core.v1.EnvVar"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 8, json: "resources", ty: Msg("core.v1.ResourceRequirements"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 9, json: "volumeMounts", ty: Msg("core.v1.VolumeMount"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 10, json: "livenessProbe", ty: Msg("core.v1.Probe"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 11, json: "readinessProbe", ty: Msg("core.v1.Probe"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 12, json: "lifecycle", ty: Msg("core.v1.Lifecycle"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 13, json: "terminationMessagePath", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 14, json: "imagePullPolicy", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 15, json: "securityContext", ty: Msg("core.v1.SecurityContext"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 16, json: "stdin", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 17, json: "stdinOnce", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 18, json: "tty", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 19, json: "envFrom", ty: Msg("core.v1.EnvFromSource"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 20, json: "terminationMessagePolicy", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 21, json: "volumeDevices", ty: Msg("core.v1.VolumeDevice"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 22, json: "startupProbe", ty: Msg("core.v1.Probe"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 23, json: "resizePolicy", ty: Msg("core.v1.ContainerResizePolicy"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 24, json: "restartPolicy", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 25, json: "restartPolicyRules", ty: Msg("core.v1.ContainerRestartRule"), rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ContainerExtendedResourceRequest",
        fields: &[
            F { tag: 1, json: "containerName", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "resourceName", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "requestName", ty: Str, rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ContainerImage",
        fields: &[
            F { tag: 1, json: "names", ty: Str, rep: true, req: false, ptr: false, inline: false },
            F { tag: 2, json: "sizeBytes", ty: I64, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ContainerPort",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "hostPort", ty: I32, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "containerPort", ty: I32, rep: false, req: true, ptr: false, inline: false },
            F { tag: 4, json: "protocol", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "hostIP", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ContainerResizePolicy",
        fields: &[
            F { tag: 1, json: "resourceName", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "restartPolicy", ty: Str, rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ContainerRestartRule",
        fields: &[
            F { tag: 1, json: "action", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "exitCodes", ty: Msg("core.v1.ContainerRestartRuleOnExitCodes"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ContainerRestartRuleOnExitCodes",
        fields: &[
            F { tag: 1, json: "operator", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "values", ty: I32, rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ContainerState",
        fields: &[
            F { tag: 1, json: "waiting", ty: Msg("core.v1.ContainerStateWaiting"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "running", ty: Msg("core.v1.ContainerStateRunning"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "terminated", ty: Msg("core.v1.ContainerStateTerminated"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ContainerStateRunning",
        fields: &[
            F { tag: 1, json: "startedAt", ty: Msg("meta.v1.Time"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ContainerStateTerminated",
        fields: &[
            F { tag: 1, json: "exitCode", ty: I32, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "signal", ty: I32, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "reason", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "message", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "startedAt", ty: Msg("meta.v1.Time"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "finishedAt", ty: Msg("meta.v1.Time"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 7, json: "containerID", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ContainerStateWaiting",
        fields: &[
            F { tag: 1, json: "reason", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "message", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ContainerStatus",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "state", ty: Msg("core.v1.ContainerState"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "lastState", ty: Msg("core.v1.ContainerState"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "ready", ty: Bool, rep: false, req: true, ptr: false, inline: false },
            F { tag: 5, json: "restartCount", ty: I32, rep: false, req: true, ptr: false, inline: false },
            F { tag: 6, json: "image", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 7, json: "imageID", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 8, json: "containerID", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 9, json: "started", ty: Bool, rep: false, req: false, ptr: true, inline: false },
            F { tag: 10, json: "allocatedResources", ty: MapMsg("resource.Quantity"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 11, json: "resources", ty: Msg("core.v1.ResourceRequirements"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 12, json: "volumeMounts", ty: Msg("core.v1.VolumeMountStatus"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 13, json: "user", ty: Msg("core.v1.ContainerUser"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 14, json: "allocatedResourcesStatus", ty: Msg("core.v1.ResourceStatus"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 15, json: "stopSignal", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ContainerUser",
        fields: &[
            F { tag: 1, json: "linux", ty: Msg("core.v1.LinuxContainerUser"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.DaemonEndpoint",
        fields: &[
            F { tag: 1, json: "Port", ty: I32, rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.DownwardAPIProjection",
        fields: &[
            F { tag: 1, json: "items", ty: Msg("core.v1.DownwardAPIVolumeFile"), rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.DownwardAPIVolumeFile",
        fields: &[
            F { tag: 1, json: "path", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "fieldRef", ty: Msg("core.v1.ObjectFieldSelector"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "resourceFieldRef", ty: Msg("core.v1.ResourceFieldSelector"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "mode", ty: I32, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.DownwardAPIVolumeSource",
        fields: &[
            F { tag: 1, json: "items", ty: Msg("core.v1.DownwardAPIVolumeFile"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 2, json: "defaultMode", ty: I32, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.EmptyDirVolumeSource",
        fields: &[
            F { tag: 1, json: "medium", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "sizeLimit", ty: Msg("resource.Quantity"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.EnvFromSource",
        fields: &[
            F { tag: 1, json: "prefix", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "configMapRef", ty: Msg("core.v1.ConfigMapEnvSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "secretRef", ty: Msg("core.v1.SecretEnvSource"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.EnvVar",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "value", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "valueFrom", ty: Msg("core.v1.EnvVarSource"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.EnvVarSource",
        fields: &[
            F { tag: 1, json: "fieldRef", ty: Msg("core.v1.ObjectFieldSelector"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "resourceFieldRef", ty: Msg("core.v1.ResourceFieldSelector"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "configMapKeyRef", ty: Msg("core.v1.ConfigMapKeySelector"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "secretKeyRef", ty: Msg("core.v1.SecretKeySelector"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "fileKeyRef", ty: Msg("core.v1.FileKeySelector"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.EphemeralContainer",
        fields: &[
            F { tag: 1, json: "ephemeralContainerCommon", ty: Msg("core.v1.EphemeralContainerCommon"), rep: false, req: false, ptr: false, inline: true },
            F { tag: 2, json: "targetContainerName", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.EphemeralContainerCommon",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "image", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "command", ty: Str, rep: true, req: false, ptr: false, inline: false },
            F { tag: 4, json: "args", ty: Str, rep: true, req: false, ptr: false, inline: false },
            F { tag: 5, json: "workingDir", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "ports", ty: Msg("core.v1.ContainerPort"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 7, json: "env", ty: Msg("core.v1.EnvVar"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 8, json: "resources", ty: Msg("core.v1.ResourceRequirements"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 9, json: "volumeMounts", ty: Msg("core.v1.VolumeMount"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 10, json: "livenessProbe", ty: Msg("core.v1.Probe"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 11, json: "readinessProbe", ty: Msg("core.v1.Probe"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 12, json: "lifecycle", ty: Msg("core.v1.Lifecycle"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 13, json: "terminationMessagePath", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 14, json: "imagePullPolicy", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 15, json: "securityContext", ty: Msg("core.v1.SecurityContext"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 16, json: "stdin", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 17, json: "stdinOnce", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 18, json: "tty", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 19, json: "envFrom", ty: Msg("core.v1.EnvFromSource"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 20, json: "terminationMessagePolicy", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 21, json: "volumeDevices", ty: Msg("core.v1.VolumeDevice"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 22, json: "startupProbe", ty: Msg("core.v1.Probe"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 23, json: "resizePolicy", ty: Msg("core.v1.ContainerResizePolicy"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 24, json: "restartPolicy", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 25, json: "restartPolicyRules", ty: Msg("core.v1.ContainerRestartRule"), rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.EphemeralVolumeSource",
        fields: &[
            F { tag: 1, json: "volumeClaimTemplate", ty: Msg("core.v1.PersistentVolumeClaimTemplate"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.Event",
        fields: &[
            F { tag: 1, json: "metadata", ty: Msg("meta.v1.ObjectMeta"), rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "involvedObject", ty: Msg("core.v1.ObjectReference"), rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "reason", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "message", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "source", ty: Msg("core.v1.EventSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "firstTimestamp", ty: Msg("meta.v1.Time"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 7, json: "lastTimestamp", ty: Msg("meta.v1.Time"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 8, json: "count", ty: I32, rep: false, req: false, ptr: false, inline: false },
            F { tag: 9, json: "type", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 10, json: "eventTime", ty: Msg("meta.v1.MicroTime"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 11, json: "series", ty: Msg("core.v1.EventSeries"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 12, json: "action", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 13, json: "related", ty: Msg("core.v1.ObjectReference"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 14, json: "reportingComponent", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 15, json: "reportingInstance", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.EventSeries",
        fields: &[
            F { tag: 1, json: "count", ty: I32, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "lastObservedTime", ty: Msg("meta.v1.MicroTime"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.EventSource",
        fields: &[
            F { tag: 1, json: "component", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "host", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ExecAction",
        fields: &[
            F { tag: 1, json: "command", ty: Str, rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.FcVolumeSource",
        fields: &[
            F { tag: 1, json: "targetWWNs", ty: Str, rep: true, req: false, ptr: false, inline: false },
            F { tag: 2, json: "lun", ty: I32, rep: false, req: false, ptr: true, inline: false },
            F { tag: 3, json: "fsType", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "readOnly", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "wwids", ty: Str, rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.FileKeySelector",
        fields: &[
            F { tag: 1, json: "volumeName", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "path", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "key", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 4, json: "optional", ty: Bool, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.FlexVolumeSource",
        fields: &[
            F { tag: 1, json: "driver", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "fsType", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "secretRef", ty: Msg("core.v1.LocalObjectReference"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "readOnly", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "options", ty: MapStr, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.FlockerVolumeSource",
        fields: &[
            F { tag: 1, json: "datasetName", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "datasetUUID", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.GcePersistentDiskVolumeSource",
        fields: &[
            F { tag: 1, json: "pdName", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "fsType", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "partition", ty: I32, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "readOnly", ty: Bool, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.GitRepoVolumeSource",
        fields: &[
            F { tag: 1, json: "repository", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "revision", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "directory", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.GlusterfsVolumeSource",
        fields: &[
            F { tag: 1, json: "endpoints", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "path", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "readOnly", ty: Bool, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.GrpcAction",
        fields: &[
            F { tag: 1, json: "port", ty: I32, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "service", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.HostAlias",
        fields: &[
            F { tag: 1, json: "ip", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "hostnames", ty: Str, rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.HostIp",
        fields: &[
            F { tag: 1, json: "ip", ty: Str, rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.HostPathVolumeSource",
        fields: &[
            F { tag: 1, json: "path", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "type", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.HttpGetAction",
        fields: &[
            F { tag: 1, json: "path", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "port", ty: Msg("intstr.IntOrString"), rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "host", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "scheme", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "httpHeaders", ty: Msg("core.v1.HttpHeader"), rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.HttpHeader",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "value", ty: Str, rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ImageVolumeSource",
        fields: &[
            F { tag: 1, json: "reference", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "pullPolicy", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.IscsiVolumeSource",
        fields: &[
            F { tag: 1, json: "targetPortal", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "iqn", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "lun", ty: I32, rep: false, req: true, ptr: false, inline: false },
            F { tag: 4, json: "iscsiInterface", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "fsType", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "readOnly", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 7, json: "portals", ty: Str, rep: true, req: false, ptr: false, inline: false },
            F { tag: 8, json: "chapAuthDiscovery", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 10, json: "secretRef", ty: Msg("core.v1.LocalObjectReference"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 11, json: "chapAuthSession", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 12, json: "initiatorName", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.KeyToPath",
        fields: &[
            F { tag: 1, json: "key", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "path", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "mode", ty: I32, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.Lifecycle",
        fields: &[
            F { tag: 1, json: "postStart", ty: Msg("core.v1.LifecycleHandler"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "preStop", ty: Msg("core.v1.LifecycleHandler"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "stopSignal", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.LifecycleHandler",
        fields: &[
            F { tag: 1, json: "exec", ty: Msg("core.v1.ExecAction"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "httpGet", ty: Msg("core.v1.HttpGetAction"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "tcpSocket", ty: Msg("core.v1.TcpSocketAction"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "sleep", ty: Msg("core.v1.SleepAction"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.LinuxContainerUser",
        fields: &[
            F { tag: 1, json: "uid", ty: I64, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "gid", ty: I64, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "supplementalGroups", ty: I64, rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.LocalObjectReference",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.Namespace",
        fields: &[
            F { tag: 1, json: "metadata", ty: Msg("meta.v1.ObjectMeta"), rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "spec", ty: Msg("core.v1.NamespaceSpec"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "status", ty: Msg("core.v1.NamespaceStatus"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.NamespaceCondition",
        fields: &[
            F { tag: 1, json: "type", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "status", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 4, json: "lastTransitionTime", ty: Msg("meta.v1.Time"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "reason", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "message", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.NamespaceSpec",
        fields: &[
            F { tag: 1, json: "finalizers", ty: Str, rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.NamespaceStatus",
        fields: &[
            F { tag: 1, json: "phase", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "conditions", ty: Msg("core.v1.NamespaceCondition"), rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.NfsVolumeSource",
        fields: &[
            F { tag: 1, json: "server", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "path", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "readOnly", ty: Bool, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.Node",
        fields: &[
            F { tag: 1, json: "metadata", ty: Msg("meta.v1.ObjectMeta"), rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "spec", ty: Msg("core.v1.NodeSpec"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "status", ty: Msg("core.v1.NodeStatus"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.NodeAddress",
        fields: &[
            F { tag: 1, json: "type", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "address", ty: Str, rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.NodeAffinity",
        fields: &[
            F { tag: 1, json: "requiredDuringSchedulingIgnoredDuringExecution", ty: Msg("core.v1.NodeSelector"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "preferredDuringSchedulingIgnoredDuringExecution", ty: Msg("core.v1.PreferredSchedulingTerm"), rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.NodeCondition",
        fields: &[
            F { tag: 1, json: "type", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "status", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "lastHeartbeatTime", ty: Msg("meta.v1.Time"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "lastTransitionTime", ty: Msg("meta.v1.Time"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "reason", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "message", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.NodeConfigSource",
        fields: &[
            F { tag: 2, json: "configMap", ty: Msg("core.v1.ConfigMapNodeConfigSource"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.NodeConfigStatus",
        fields: &[
            F { tag: 1, json: "assigned", ty: Msg("core.v1.NodeConfigSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "active", ty: Msg("core.v1.NodeConfigSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "lastKnownGood", ty: Msg("core.v1.NodeConfigSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "error", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.NodeDaemonEndpoints",
        fields: &[
            F { tag: 1, json: "kubeletEndpoint", ty: Msg("core.v1.DaemonEndpoint"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.NodeFeatures",
        fields: &[
            F { tag: 1, json: "supplementalGroupsPolicy", ty: Bool, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.NodeRuntimeHandler",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "features", ty: Msg("core.v1.NodeRuntimeHandlerFeatures"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.NodeRuntimeHandlerFeatures",
        fields: &[
            F { tag: 1, json: "recursiveReadOnlyMounts", ty: Bool, rep: false, req: false, ptr: true, inline: false },
            F { tag: 2, json: "userNamespaces", ty: Bool, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.NodeSelector",
        fields: &[
            F { tag: 1, json: "nodeSelectorTerms", ty: Msg("core.v1.NodeSelectorTerm"), rep: true, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.NodeSelectorRequirement",
        fields: &[
            F { tag: 1, json: "key", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "operator", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "values", ty: Str, rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.NodeSelectorTerm",
        fields: &[
            F { tag: 1, json: "matchExpressions", ty: Msg("core.v1.NodeSelectorRequirement"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 2, json: "matchFields", ty: Msg("core.v1.NodeSelectorRequirement"), rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.NodeSpec",
        fields: &[
            F { tag: 1, json: "podCIDR", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "externalID", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "providerID", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "unschedulable", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "taints", ty: Msg("core.v1.Taint"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 6, json: "configSource", ty: Msg("core.v1.NodeConfigSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 7, json: "podCIDRs", ty: Str, rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.NodeStatus",
        fields: &[
            F { tag: 1, json: "capacity", ty: MapMsg("resource.Quantity"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "allocatable", ty: MapMsg("resource.Quantity"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "phase", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "conditions", ty: Msg("core.v1.NodeCondition"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 5, json: "addresses", ty: Msg("core.v1.NodeAddress"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 6, json: "daemonEndpoints", ty: Msg("core.v1.NodeDaemonEndpoints"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 7, json: "nodeInfo", ty: Msg("core.v1.NodeSystemInfo"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 8, json: "images", ty: Msg("core.v1.ContainerImage"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 9, json: "volumesInUse", ty: Str, rep: true, req: false, ptr: false, inline: false },
            F { tag: 10, json: "volumesAttached", ty: Msg("core.v1.AttachedVolume"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 11, json: "config", ty: Msg("core.v1.NodeConfigStatus"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 12, json: "runtimeHandlers", ty: Msg("core.v1.NodeRuntimeHandler"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 13, json: "features", ty: Msg("core.v1.NodeFeatures"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 14, json: "declaredFeatures", ty: Str, rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.NodeSwapStatus",
        fields: &[
            F { tag: 1, json: "capacity", ty: I64, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.NodeSystemInfo",
        fields: &[
            F { tag: 1, json: "machineID", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "systemUUID", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "bootID", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 4, json: "kernelVersion", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 5, json: "osImage", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 6, json: "containerRuntimeVersion", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 7, json: "kubeletVersion", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 8, json: "kubeProxyVersion", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 9, json: "operatingSystem", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 10, json: "architecture", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 11, json: "swap", ty: Msg("core.v1.NodeSwapStatus"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ObjectFieldSelector",
        fields: &[
            F { tag: 1, json: "apiVersion", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "fieldPath", ty: Str, rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ObjectReference",
        fields: &[
            F { tag: 1, json: "kind", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "namespace", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "name", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "uid", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "apiVersion", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "resourceVersion", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 7, json: "fieldPath", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PersistentVolumeClaimSpec",
        fields: &[
            F { tag: 1, json: "accessModes", ty: Str, rep: true, req: false, ptr: false, inline: false },
            F { tag: 2, json: "resources", ty: Msg("core.v1.VolumeResourceRequirements"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "volumeName", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "selector", ty: Msg("meta.v1.LabelSelector"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "storageClassName", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "volumeMode", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 7, json: "dataSource", ty: Msg("core.v1.TypedLocalObjectReference"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 8, json: "dataSourceRef", ty: Msg("core.v1.TypedObjectReference"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 9, json: "volumeAttributesClassName", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PersistentVolumeClaimTemplate",
        fields: &[
            F { tag: 1, json: "metadata", ty: Msg("meta.v1.ObjectMeta"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "spec", ty: Msg("core.v1.PersistentVolumeClaimSpec"), rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PersistentVolumeClaimVolumeSource",
        fields: &[
            F { tag: 1, json: "claimName", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "readOnly", ty: Bool, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PhotonPersistentDiskVolumeSource",
        fields: &[
            F { tag: 1, json: "pdID", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "fsType", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.Pod",
        fields: &[
            F { tag: 1, json: "metadata", ty: Msg("meta.v1.ObjectMeta"), rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "spec", ty: Msg("core.v1.PodSpec"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "status", ty: Msg("core.v1.PodStatus"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PodAffinity",
        fields: &[
            F { tag: 1, json: "requiredDuringSchedulingIgnoredDuringExecution", ty: Msg("core.v1.PodAffinityTerm"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 2, json: "preferredDuringSchedulingIgnoredDuringExecution", ty: Msg("core.v1.WeightedPodAffinityTerm"), rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PodAffinityTerm",
        fields: &[
            F { tag: 1, json: "labelSelector", ty: Msg("meta.v1.LabelSelector"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "namespaces", ty: Str, rep: true, req: false, ptr: false, inline: false },
            F { tag: 3, json: "topologyKey", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 4, json: "namespaceSelector", ty: Msg("meta.v1.LabelSelector"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "matchLabelKeys", ty: Str, rep: true, req: false, ptr: false, inline: false },
            F { tag: 6, json: "mismatchLabelKeys", ty: Str, rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PodAntiAffinity",
        fields: &[
            F { tag: 1, json: "requiredDuringSchedulingIgnoredDuringExecution", ty: Msg("core.v1.PodAffinityTerm"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 2, json: "preferredDuringSchedulingIgnoredDuringExecution", ty: Msg("core.v1.WeightedPodAffinityTerm"), rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PodCertificateProjection",
        fields: &[
            F { tag: 1, json: "signerName", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "keyType", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "maxExpirationSeconds", ty: I32, rep: false, req: false, ptr: true, inline: false },
            F { tag: 4, json: "credentialBundlePath", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "keyPath", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "certificateChainPath", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 7, json: "userAnnotations", ty: MapStr, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PodCondition",
        fields: &[
            F { tag: 1, json: "type", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "status", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "lastProbeTime", ty: Msg("meta.v1.Time"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "lastTransitionTime", ty: Msg("meta.v1.Time"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "reason", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "message", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 7, json: "observedGeneration", ty: I64, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PodDnsConfig",
        fields: &[
            F { tag: 1, json: "nameservers", ty: Str, rep: true, req: false, ptr: false, inline: false },
            F { tag: 2, json: "searches", ty: Str, rep: true, req: false, ptr: false, inline: false },
            F { tag: 3, json: "options", ty: Msg("core.v1.PodDnsConfigOption"), rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PodDnsConfigOption",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "value", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PodExtendedResourceClaimStatus",
        fields: &[
            F { tag: 1, json: "requestMappings", ty: Msg("core.v1.ContainerExtendedResourceRequest"), rep: true, req: true, ptr: false, inline: false },
            F { tag: 2, json: "resourceClaimName", ty: Str, rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PodIp",
        fields: &[
            F { tag: 1, json: "ip", ty: Str, rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PodOs",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PodReadinessGate",
        fields: &[
            F { tag: 1, json: "conditionType", ty: Str, rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PodResourceClaim",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "resourceClaimName", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "resourceClaimTemplateName", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PodResourceClaimStatus",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "resourceClaimName", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PodSchedulingGate",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PodSecurityContext",
        fields: &[
            F { tag: 1, json: "seLinuxOptions", ty: Msg("core.v1.SeLinuxOptions"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "runAsUser", ty: I64, rep: false, req: false, ptr: true, inline: false },
            F { tag: 3, json: "runAsNonRoot", ty: Bool, rep: false, req: false, ptr: true, inline: false },
            F { tag: 4, json: "supplementalGroups", ty: I64, rep: true, req: false, ptr: false, inline: false },
            F { tag: 5, json: "fsGroup", ty: I64, rep: false, req: false, ptr: true, inline: false },
            F { tag: 6, json: "runAsGroup", ty: I64, rep: false, req: false, ptr: true, inline: false },
            F { tag: 7, json: "sysctls", ty: Msg("core.v1.Sysctl"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 8, json: "windowsOptions", ty: Msg("core.v1.WindowsSecurityContextOptions"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 9, json: "fsGroupChangePolicy", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 10, json: "seccompProfile", ty: Msg("core.v1.SeccompProfile"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 11, json: "appArmorProfile", ty: Msg("core.v1.AppArmorProfile"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 12, json: "supplementalGroupsPolicy", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 13, json: "seLinuxChangePolicy", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PodSpec",
        fields: &[
            F { tag: 1, json: "volumes", ty: Msg("core.v1.Volume"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 2, json: "containers", ty: Msg("core.v1.Container"), rep: true, req: true, ptr: false, inline: false },
            F { tag: 3, json: "restartPolicy", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "terminationGracePeriodSeconds", ty: I64, rep: false, req: false, ptr: true, inline: false },
            F { tag: 5, json: "activeDeadlineSeconds", ty: I64, rep: false, req: false, ptr: true, inline: false },
            F { tag: 6, json: "dnsPolicy", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 7, json: "nodeSelector", ty: MapStr, rep: false, req: false, ptr: false, inline: false },
            F { tag: 8, json: "serviceAccountName", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 9, json: "serviceAccount", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 10, json: "nodeName", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 11, json: "hostNetwork", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 12, json: "hostPID", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 13, json: "hostIPC", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 14, json: "securityContext", ty: Msg("core.v1.PodSecurityContext"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 15, json: "imagePullSecrets", ty: Msg("core.v1.LocalObjectReference"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 16, json: "hostname", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 17, json: "subdomain", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 18, json: "affinity", ty: Msg("core.v1.Affinity"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 19, json: "schedulerName", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 20, json: "initContainers", ty: Msg("core.v1.Container"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 21, json: "automountServiceAccountToken", ty: Bool, rep: false, req: false, ptr: true, inline: false },
            F { tag: 22, json: "tolerations", ty: Msg("core.v1.Toleration"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 23, json: "hostAliases", ty: Msg("core.v1.HostAlias"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 24, json: "priorityClassName", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 25, json: "priority", ty: I32, rep: false, req: false, ptr: true, inline: false },
            F { tag: 26, json: "dnsConfig", ty: Msg("core.v1.PodDnsConfig"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 27, json: "shareProcessNamespace", ty: Bool, rep: false, req: false, ptr: true, inline: false },
            F { tag: 28, json: "readinessGates", ty: Msg("core.v1.PodReadinessGate"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 29, json: "runtimeClassName", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 30, json: "enableServiceLinks", ty: Bool, rep: false, req: false, ptr: true, inline: false },
            F { tag: 31, json: "preemptionPolicy", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 32, json: "overhead", ty: MapMsg("resource.Quantity"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 33, json: "topologySpreadConstraints", ty: Msg("core.v1.TopologySpreadConstraint"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 34, json: "ephemeralContainers", ty: Msg("core.v1.EphemeralContainer"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 35, json: "setHostnameAsFQDN", ty: Bool, rep: false, req: false, ptr: true, inline: false },
            F { tag: 36, json: "os", ty: Msg("core.v1.PodOs"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 37, json: "hostUsers", ty: Bool, rep: false, req: false, ptr: true, inline: false },
            F { tag: 38, json: "schedulingGates", ty: Msg("core.v1.PodSchedulingGate"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 39, json: "resourceClaims", ty: Msg("core.v1.PodResourceClaim"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 40, json: "resources", ty: Msg("core.v1.ResourceRequirements"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 41, json: "hostnameOverride", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 42, json: "workloadRef", ty: Msg("core.v1.WorkloadReference"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PodStatus",
        fields: &[
            F { tag: 1, json: "phase", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "conditions", ty: Msg("core.v1.PodCondition"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 3, json: "message", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "reason", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "hostIP", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "podIP", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 7, json: "startTime", ty: Msg("meta.v1.Time"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 8, json: "containerStatuses", ty: Msg("core.v1.ContainerStatus"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 9, json: "qosClass", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 10, json: "initContainerStatuses", ty: Msg("core.v1.ContainerStatus"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 11, json: "nominatedNodeName", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 12, json: "podIPs", ty: Msg("core.v1.PodIp"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 13, json: "ephemeralContainerStatuses", ty: Msg("core.v1.ContainerStatus"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 14, json: "resize", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 15, json: "resourceClaimStatuses", ty: Msg("core.v1.PodResourceClaimStatus"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 16, json: "hostIPs", ty: Msg("core.v1.HostIp"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 17, json: "observedGeneration", ty: I64, rep: false, req: false, ptr: false, inline: false },
            F { tag: 18, json: "extendedResourceClaimStatus", ty: Msg("core.v1.PodExtendedResourceClaimStatus"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 19, json: "allocatedResources", ty: MapMsg("resource.Quantity"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 20, json: "resources", ty: Msg("core.v1.ResourceRequirements"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PortworxVolumeSource",
        fields: &[
            F { tag: 1, json: "volumeID", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "fsType", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "readOnly", ty: Bool, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.PreferredSchedulingTerm",
        fields: &[
            F { tag: 1, json: "weight", ty: I32, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "preference", ty: Msg("core.v1.NodeSelectorTerm"), rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.Probe",
        fields: &[
            F { tag: 1, json: "handler", ty: Msg("core.v1.ProbeHandler"), rep: false, req: false, ptr: false, inline: true },
            F { tag: 2, json: "initialDelaySeconds", ty: I32, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "timeoutSeconds", ty: I32, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "periodSeconds", ty: I32, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "successThreshold", ty: I32, rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "failureThreshold", ty: I32, rep: false, req: false, ptr: false, inline: false },
            F { tag: 7, json: "terminationGracePeriodSeconds", ty: I64, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.ProbeHandler",
        fields: &[
            F { tag: 1, json: "exec", ty: Msg("core.v1.ExecAction"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "httpGet", ty: Msg("core.v1.HttpGetAction"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "tcpSocket", ty: Msg("core.v1.TcpSocketAction"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "grpc", ty: Msg("core.v1.GrpcAction"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ProjectedVolumeSource",
        fields: &[
            F { tag: 1, json: "sources", ty: Msg("core.v1.VolumeProjection"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 2, json: "defaultMode", ty: I32, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.QuobyteVolumeSource",
        fields: &[
            F { tag: 1, json: "registry", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "volume", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "readOnly", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "user", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "group", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "tenant", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.RbdVolumeSource",
        fields: &[
            F { tag: 1, json: "monitors", ty: Str, rep: true, req: true, ptr: false, inline: false },
            F { tag: 2, json: "image", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "fsType", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "pool", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "user", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "keyring", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 7, json: "secretRef", ty: Msg("core.v1.LocalObjectReference"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 8, json: "readOnly", ty: Bool, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ResourceClaim",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "request", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ResourceFieldSelector",
        fields: &[
            F { tag: 1, json: "containerName", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "resource", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "divisor", ty: Msg("resource.Quantity"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ResourceHealth",
        fields: &[
            F { tag: 1, json: "resourceID", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "health", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ResourceRequirements",
        fields: &[
            F { tag: 1, json: "limits", ty: MapMsg("resource.Quantity"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "requests", ty: MapMsg("resource.Quantity"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "claims", ty: Msg("core.v1.ResourceClaim"), rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ResourceStatus",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "resources", ty: Msg("core.v1.ResourceHealth"), rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ScaleIoVolumeSource",
        fields: &[
            F { tag: 1, json: "gateway", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "system", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "secretRef", ty: Msg("core.v1.LocalObjectReference"), rep: false, req: true, ptr: false, inline: false },
            F { tag: 4, json: "sslEnabled", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "protectionDomain", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "storagePool", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 7, json: "storageMode", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 8, json: "volumeName", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 9, json: "fsType", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 10, json: "readOnly", ty: Bool, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.SeLinuxOptions",
        fields: &[
            F { tag: 1, json: "user", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "role", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "type", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "level", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.SeccompProfile",
        fields: &[
            F { tag: 1, json: "type", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "localhostProfile", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.Secret",
        fields: &[
            F { tag: 1, json: "metadata", ty: Msg("meta.v1.ObjectMeta"), rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "data", ty: MapBytes, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "type", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "stringData", ty: MapStr, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "immutable", ty: Bool, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.SecretEnvSource",
        fields: &[
            F { tag: 1, json: "localObjectReference", ty: Msg("core.v1.LocalObjectReference"), rep: false, req: false, ptr: false, inline: true },
            F { tag: 2, json: "optional", ty: Bool, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.SecretKeySelector",
        fields: &[
            F { tag: 1, json: "localObjectReference", ty: Msg("core.v1.LocalObjectReference"), rep: false, req: false, ptr: false, inline: true },
            F { tag: 2, json: "key", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "optional", ty: Bool, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.SecretProjection",
        fields: &[
            F { tag: 1, json: "localObjectReference", ty: Msg("core.v1.LocalObjectReference"), rep: false, req: false, ptr: false, inline: true },
            F { tag: 2, json: "items", ty: Msg("core.v1.KeyToPath"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 4, json: "optional", ty: Bool, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.SecretVolumeSource",
        fields: &[
            F { tag: 1, json: "secretName", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "items", ty: Msg("core.v1.KeyToPath"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 3, json: "defaultMode", ty: I32, rep: false, req: false, ptr: true, inline: false },
            F { tag: 4, json: "optional", ty: Bool, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.SecurityContext",
        fields: &[
            F { tag: 1, json: "capabilities", ty: Msg("core.v1.Capabilities"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "privileged", ty: Bool, rep: false, req: false, ptr: true, inline: false },
            F { tag: 3, json: "seLinuxOptions", ty: Msg("core.v1.SeLinuxOptions"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "runAsUser", ty: I64, rep: false, req: false, ptr: true, inline: false },
            F { tag: 5, json: "runAsNonRoot", ty: Bool, rep: false, req: false, ptr: true, inline: false },
            F { tag: 6, json: "readOnlyRootFilesystem", ty: Bool, rep: false, req: false, ptr: true, inline: false },
            F { tag: 7, json: "allowPrivilegeEscalation", ty: Bool, rep: false, req: false, ptr: true, inline: false },
            F { tag: 8, json: "runAsGroup", ty: I64, rep: false, req: false, ptr: true, inline: false },
            F { tag: 9, json: "procMount", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 10, json: "windowsOptions", ty: Msg("core.v1.WindowsSecurityContextOptions"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 11, json: "seccompProfile", ty: Msg("core.v1.SeccompProfile"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 12, json: "appArmorProfile", ty: Msg("core.v1.AppArmorProfile"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.ServiceAccountTokenProjection",
        fields: &[
            F { tag: 1, json: "audience", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "expirationSeconds", ty: I64, rep: false, req: false, ptr: true, inline: false },
            F { tag: 3, json: "path", ty: Str, rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.SleepAction",
        fields: &[
            F { tag: 1, json: "seconds", ty: I64, rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.StorageOsVolumeSource",
        fields: &[
            F { tag: 1, json: "volumeName", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "volumeNamespace", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "fsType", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "readOnly", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "secretRef", ty: Msg("core.v1.LocalObjectReference"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.Sysctl",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "value", ty: Str, rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.Taint",
        fields: &[
            F { tag: 1, json: "key", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "value", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "effect", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 4, json: "timeAdded", ty: Msg("meta.v1.Time"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.TcpSocketAction",
        fields: &[
            F { tag: 1, json: "port", ty: Msg("intstr.IntOrString"), rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "host", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.Toleration",
        fields: &[
            F { tag: 1, json: "key", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "operator", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "value", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "effect", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "tolerationSeconds", ty: I64, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.TopologySpreadConstraint",
        fields: &[
            F { tag: 1, json: "maxSkew", ty: I32, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "topologyKey", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "whenUnsatisfiable", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 4, json: "labelSelector", ty: Msg("meta.v1.LabelSelector"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "minDomains", ty: I32, rep: false, req: false, ptr: true, inline: false },
            F { tag: 6, json: "nodeAffinityPolicy", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 7, json: "nodeTaintsPolicy", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 8, json: "matchLabelKeys", ty: Str, rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.TypedLocalObjectReference",
        fields: &[
            F { tag: 1, json: "apiGroup", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "kind", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.TypedObjectReference",
        fields: &[
            F { tag: 1, json: "apiGroup", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "kind", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 4, json: "namespace", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.Volume",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "volumeSource", ty: Msg("core.v1.VolumeSource"), rep: false, req: false, ptr: false, inline: true },
        ],
    },
    M {
        name: "core.v1.VolumeDevice",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "devicePath", ty: Str, rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.VolumeMount",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "readOnly", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "mountPath", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 4, json: "subPath", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "mountPropagation", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "subPathExpr", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 7, json: "recursiveReadOnly", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.VolumeMountStatus",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "mountPath", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "readOnly", ty: Bool, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "recursiveReadOnly", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.VolumeProjection",
        fields: &[
            F { tag: 1, json: "secret", ty: Msg("core.v1.SecretProjection"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "downwardAPI", ty: Msg("core.v1.DownwardAPIProjection"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "configMap", ty: Msg("core.v1.ConfigMapProjection"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "serviceAccountToken", ty: Msg("core.v1.ServiceAccountTokenProjection"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "clusterTrustBundle", ty: Msg("core.v1.ClusterTrustBundleProjection"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "podCertificate", ty: Msg("core.v1.PodCertificateProjection"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.VolumeResourceRequirements",
        fields: &[
            F { tag: 1, json: "limits", ty: MapMsg("resource.Quantity"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "requests", ty: MapMsg("resource.Quantity"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.VolumeSource",
        fields: &[
            F { tag: 1, json: "hostPath", ty: Msg("core.v1.HostPathVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "emptyDir", ty: Msg("core.v1.EmptyDirVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "gcePersistentDisk", ty: Msg("core.v1.GcePersistentDiskVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "awsElasticBlockStore", ty: Msg("core.v1.AwsElasticBlockStoreVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "gitRepo", ty: Msg("core.v1.GitRepoVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "secret", ty: Msg("core.v1.SecretVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 7, json: "nfs", ty: Msg("core.v1.NfsVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 8, json: "iscsi", ty: Msg("core.v1.IscsiVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 9, json: "glusterfs", ty: Msg("core.v1.GlusterfsVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 10, json: "persistentVolumeClaim", ty: Msg("core.v1.PersistentVolumeClaimVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 11, json: "rbd", ty: Msg("core.v1.RbdVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 12, json: "flexVolume", ty: Msg("core.v1.FlexVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 13, json: "cinder", ty: Msg("core.v1.CinderVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 14, json: "cephfs", ty: Msg("core.v1.CephFsVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 15, json: "flocker", ty: Msg("core.v1.FlockerVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 16, json: "downwardAPI", ty: Msg("core.v1.DownwardAPIVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 17, json: "fc", ty: Msg("core.v1.FcVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 18, json: "azureFile", ty: Msg("core.v1.AzureFileVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 19, json: "configMap", ty: Msg("core.v1.ConfigMapVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 20, json: "vsphereVolume", ty: Msg("core.v1.VsphereVirtualDiskVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 21, json: "quobyte", ty: Msg("core.v1.QuobyteVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 22, json: "azureDisk", ty: Msg("core.v1.AzureDiskVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 23, json: "photonPersistentDisk", ty: Msg("core.v1.PhotonPersistentDiskVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 24, json: "portworxVolume", ty: Msg("core.v1.PortworxVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 25, json: "scaleIO", ty: Msg("core.v1.ScaleIoVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 26, json: "projected", ty: Msg("core.v1.ProjectedVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 27, json: "storageos", ty: Msg("core.v1.StorageOsVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 28, json: "csi", ty: Msg("core.v1.CSIVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 29, json: "ephemeral", ty: Msg("core.v1.EphemeralVolumeSource"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 30, json: "image", ty: Msg("core.v1.ImageVolumeSource"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.VsphereVirtualDiskVolumeSource",
        fields: &[
            F { tag: 1, json: "volumePath", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "fsType", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "storagePolicyName", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "storagePolicyID", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.WeightedPodAffinityTerm",
        fields: &[
            F { tag: 1, json: "weight", ty: I32, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "podAffinityTerm", ty: Msg("core.v1.PodAffinityTerm"), rep: false, req: true, ptr: false, inline: false },
        ],
    },
    M {
        name: "core.v1.WindowsSecurityContextOptions",
        fields: &[
            F { tag: 1, json: "gmsaCredentialSpecName", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "gmsaCredentialSpec", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "runAsUserName", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "hostProcess", ty: Bool, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "core.v1.WorkloadReference",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "podGroup", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "podGroupReplicaKey", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "meta.v1.DeleteOptions",
        fields: &[
            F { tag: 1, json: "gracePeriodSeconds", ty: I64, rep: false, req: false, ptr: true, inline: false },
            F { tag: 2, json: "preconditions", ty: Msg("meta.v1.Preconditions"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "orphanDependents", ty: Bool, rep: false, req: false, ptr: true, inline: false },
            F { tag: 4, json: "propagationPolicy", ty: Str, rep: false, req: false, ptr: true, inline: false },
            F { tag: 5, json: "dryRun", ty: Str, rep: true, req: false, ptr: false, inline: false },
            F { tag: 6, json: "ignoreStoreReadErrorWithClusterBreakingPotential", ty: Bool, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "meta.v1.LabelSelector",
        fields: &[
            F { tag: 1, json: "matchLabels", ty: MapStr, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "matchExpressions", ty: Msg("meta.v1.LabelSelectorRequirement"), rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "meta.v1.LabelSelectorRequirement",
        fields: &[
            F { tag: 1, json: "key", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "operator", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "values", ty: Str, rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "meta.v1.ManagedFieldsEntry",
        fields: &[
            F { tag: 1, json: "manager", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "operation", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "apiVersion", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "time", ty: Msg("meta.v1.Time"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "fieldsType", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 7, json: "fieldsV1", ty: Msg("meta.v1.FieldsV1"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 8, json: "subresource", ty: Str, rep: false, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "meta.v1.ObjectMeta",
        fields: &[
            F { tag: 1, json: "name", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 2, json: "generateName", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 3, json: "namespace", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 4, json: "selfLink", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 5, json: "uid", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 6, json: "resourceVersion", ty: Str, rep: false, req: false, ptr: false, inline: false },
            F { tag: 7, json: "generation", ty: I64, rep: false, req: false, ptr: false, inline: false },
            F { tag: 8, json: "creationTimestamp", ty: Msg("meta.v1.Time"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 9, json: "deletionTimestamp", ty: Msg("meta.v1.Time"), rep: false, req: false, ptr: false, inline: false },
            F { tag: 10, json: "deletionGracePeriodSeconds", ty: I64, rep: false, req: false, ptr: true, inline: false },
            F { tag: 11, json: "labels", ty: MapStr, rep: false, req: false, ptr: false, inline: false },
            F { tag: 12, json: "annotations", ty: MapStr, rep: false, req: false, ptr: false, inline: false },
            F { tag: 13, json: "ownerReferences", ty: Msg("meta.v1.OwnerReference"), rep: true, req: false, ptr: false, inline: false },
            F { tag: 14, json: "finalizers", ty: Str, rep: true, req: false, ptr: false, inline: false },
            F { tag: 17, json: "managedFields", ty: Msg("meta.v1.ManagedFieldsEntry"), rep: true, req: false, ptr: false, inline: false },
        ],
    },
    M {
        name: "meta.v1.OwnerReference",
        fields: &[
            F { tag: 1, json: "kind", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 3, json: "name", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 4, json: "uid", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 5, json: "apiVersion", ty: Str, rep: false, req: true, ptr: false, inline: false },
            F { tag: 6, json: "controller", ty: Bool, rep: false, req: false, ptr: true, inline: false },
            F { tag: 7, json: "blockOwnerDeletion", ty: Bool, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "meta.v1.Preconditions",
        fields: &[
            F { tag: 1, json: "uid", ty: Str, rep: false, req: false, ptr: true, inline: false },
            F { tag: 2, json: "resourceVersion", ty: Str, rep: false, req: false, ptr: true, inline: false },
        ],
    },
    M {
        name: "policy.v1.Eviction",
        fields: &[
            F { tag: 1, json: "metadata", ty: Msg("meta.v1.ObjectMeta"), rep: false, req: true, ptr: false, inline: false },
            F { tag: 2, json: "deleteOptions", ty: Msg("meta.v1.DeleteOptions"), rep: false, req: false, ptr: false, inline: false },
        ],
    },
];
