#!/usr/bin/env python3
# Generates apiserver/src/protobuf/schema.rs: field numbers and wire types of the
# Kubernetes protobuf messages the API server decodes, read from the k8s-pb 0.9
# crate sources (Kubernetes 1.34), with JSON names from k8s-openapi 0.29.
# Both crates must be in ~/.cargo/registry (cargo fetch brings them).
# The generated file is not edited by hand: change ROOTS (the accepted kinds,
# which must match ROOTS in apiserver/src/protobuf.rs) or PTR (fields that are
# pointers in the Go types, reviewed against k8s.io/api's types.go) here, then
#   python3 scripts/gen-protobuf-schema.py            rewrite schema.rs
#   python3 scripts/gen-protobuf-schema.py --check    exit 1 if schema.rs is stale
#   python3 scripts/gen-protobuf-schema.py --report   also list names not found in
#       k8s-openapi and the optional non-string scalars (pointer candidates)
import os, re, sys, glob
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, 'apiserver', 'src', 'protobuf', 'schema.rs')
CHECK, REPORT = '--check' in sys.argv[1:], '--report' in sys.argv[1:]
PB = glob.glob(os.path.expanduser('~/.cargo/registry/src/*/k8s-pb-0.9.0/src'))[0]
OA = glob.glob(os.path.expanduser('~/.cargo/registry/src/*/k8s-openapi-0.29.0/src/v1_34'))[0]

def modname(path):  # 'api/core/v1' -> 'core.v1'
    p = path.split('/')
    if p[0] == 'api': p = p[1:]
    elif p[:2] == ['apimachinery','pkg']:
        p = p[2:]
        if p[:1] == ['apis']: p = p[1:]
        elif p[:1] in (['api'], ['util']): p = p[1:]
    return '.'.join(p)

structs = {}  # qualified name -> list of fields
for f in glob.glob(PB + '/**/mod.rs', recursive=True):
    rel = os.path.relpath(os.path.dirname(f), PB)
    if rel == '.': continue
    src = open(f).read()
    for m in re.finditer(r'pub struct (\w+) \{(.*?)\n\}', src, re.S):
        name, body = m.group(1), m.group(2)
        body = re.sub(r'^\s*///.*$', '', body, flags=re.M)
        fields = []
        for fm in re.finditer(r'#\[prost\((.*?)\)\]\s*pub (r#)?(\w+):\s*(.*?)(?=#\[prost|\Z)', body, re.S):
            attrs, fname, ty = fm.group(1), fm.group(3), re.sub(r'\s+', '', fm.group(4)).rstrip(',')
            tag = int(re.search(r'tag = "(\d+)"', attrs).group(1))
            kind = attrs.split(',')[0].strip()
            rep = 'repeated' in attrs
            fields.append(dict(tag=tag, rust=fname, kind=kind, attrs=attrs, ty=ty))
        structs[modname(rel) + '.' + name] = (rel, fields)

def resolve(cur_rel, ty):
    # innermost path type
    t = ty
    for w in ['::core::option::Option<', '::prost::alloc::vec::Vec<', '::prost::alloc::boxed::Box<']:
        while t.startswith(w): t = t[len(w):-1].rstrip(',')
    if t.startswith('::std::collections::BTreeMap<') or t.startswith('::prost::alloc::collections::BTreeMap<'):
        t = t[t.index('<')+1:-1].rstrip(',')
        t = t.split(',', 1)[1]
    segs = t.split('::')
    cur = cur_rel.split('/')
    while segs and segs[0] == 'super':
        segs.pop(0); cur = cur[:-1]
    path = cur + segs[:-1]
    return modname('/'.join(path)) + '.' + segs[-1]

# k8s-openapi json names and required-ness
oa = {}
for f in glob.glob(OA + '/**/*.rs', recursive=True):
    src = open(f).read()
    m = re.search(r'pub struct (\w+) \{(.*?)\n\}', src, re.S)
    if not m: continue
    rel = os.path.relpath(os.path.dirname(f), OA)
    q = (modname(rel) + '.' + m.group(1)).lower()
    req = {}
    for fm in re.finditer(r'^\s*pub (\w+): (.*?),\s*$', m.group(2), re.M):
        req[fm.group(1).replace('_','').lower()] = not fm.group(2).startswith('Option<')
    names = {}
    for fm in re.finditer(r'"([A-Za-z0-9$_\-]+)" => Field::Key_(\w+),', src):
        names[fm.group(2).replace('_','').lower()] = fm.group(1)
    oa[q] = (names, req)

SPECIAL = {'meta.v1.Time':'Time','meta.v1.MicroTime':'MicroTime','meta.v1.Duration':'Duration',
  'meta.v1.FieldsV1':'FieldsV1','resource.Quantity':'Quantity','intstr.IntOrString':'IntOrString',
  'runtime.RawExtension':'Raw'}
ROOTS = ['core.v1.Namespace','core.v1.Pod','core.v1.Node','core.v1.Event','core.v1.ConfigMap','core.v1.Secret',
  'core.v1.Binding','coordination.v1.Lease','meta.v1.DeleteOptions','policy.v1.Eviction',
  'apps.v1.Deployment','apps.v1.ReplicaSet','apps.v1.DaemonSet','batch.v1.Job','core.v1.Service',
  'rbac.v1.Role','rbac.v1.ClusterRole','rbac.v1.RoleBinding','rbac.v1.ClusterRoleBinding',
  'authorization.v1.SelfSubjectAccessReview','authorization.v1.SelfSubjectRulesReview',
  'authorization.v1.SubjectAccessReview','authorization.v1.LocalSubjectAccessReview',
  'core.v1.ServiceAccount','authentication.v1.TokenRequest',
  'core.v1.ResourceQuota','core.v1.LimitRange']

def camel(s):
    p = s.split('_'); return p[0] + ''.join(x[:1].upper() + x[1:] for x in p[1:])

out = {}
missing = []
todo = list(ROOTS)
while todo:
    q = todo.pop()
    if q in out or q in SPECIAL: continue
    rel, fields = structs[q]
    NAMES_FROM = {'core.v1.VolumeSource':'core.v1.Volume','core.v1.ProbeHandler':'core.v1.Probe','core.v1.EphemeralContainerCommon':'core.v1.EphemeralContainer'}
    names, req = oa.get(NAMES_FROM.get(q, q).lower(), ({}, {}))
    if q.lower() not in oa: missing.append(q)
    fl = []
    for f in fields:
        key = f['rust'].replace('_','').lower()
        js = names.get(key)
        inline = False
        if js is None:
            js = camel(f['rust'].rstrip('_'))
            if f['kind'] == 'message' and (resolve(rel, f['ty']) in NAMES_FROM or js == 'localObjectReference'):
                inline = True; missing.append('INLINE ' + q + '.' + js)
            else:
                missing.append(q + '.' + f['rust'] + '->' + js)
        kind, attrs = f['kind'], f['attrs']
        rep = 'repeated' in attrs
        if kind.startswith('btree_map'):
            v = re.search(r'"string, (\w+)"', attrs).group(1)
            if v == 'message':
                t = resolve(rel, f['ty']); todo.append(t); ty = 'MapMsg("%s")' % t
            else:
                ty = {'string':'MapStr','bytes':'MapBytes'}[v]
        elif kind == 'message':
            t = resolve(rel, f['ty']); todo.append(t); ty = 'Msg("%s")' % t
        else:
            ty = {'string':'Str','int32':'I32','int64':'I64','bool':'Bool','double':'F64','bytes = "vec"':'Bytes'}[kind]
        fl.append(dict(tag=f['tag'], json=js, ty=ty, rep=rep, req=req.get(key, False), inline=inline))
    out[q] = fl


PTR = set("""apps.v1.DaemonSetSpec.revisionHistoryLimit apps.v1.DaemonSetStatus.collisionCount
apps.v1.DeploymentSpec.replicas apps.v1.DeploymentSpec.revisionHistoryLimit apps.v1.DeploymentSpec.progressDeadlineSeconds
apps.v1.DeploymentStatus.terminatingReplicas apps.v1.DeploymentStatus.collisionCount
apps.v1.ReplicaSetSpec.replicas apps.v1.ReplicaSetStatus.terminatingReplicas
batch.v1.JobSpec.parallelism batch.v1.JobSpec.completions batch.v1.JobSpec.activeDeadlineSeconds batch.v1.JobSpec.backoffLimit
batch.v1.JobSpec.backoffLimitPerIndex batch.v1.JobSpec.maxFailedIndexes batch.v1.JobSpec.manualSelector
batch.v1.JobSpec.ttlSecondsAfterFinished batch.v1.JobSpec.completionMode batch.v1.JobSpec.suspend
batch.v1.JobSpec.podReplacementPolicy batch.v1.JobSpec.managedBy
batch.v1.JobStatus.terminating batch.v1.JobStatus.failedIndexes batch.v1.JobStatus.ready
batch.v1.PodFailurePolicyOnExitCodesRequirement.containerName
batch.v1.SuccessPolicyRule.succeededIndexes batch.v1.SuccessPolicyRule.succeededCount
coordination.v1.LeaseSpec.leaseDurationSeconds coordination.v1.LeaseSpec.leaseTransitions coordination.v1.LeaseSpec.holderIdentity
coordination.v1.LeaseSpec.strategy coordination.v1.LeaseSpec.preferredHolder
core.v1.CSIVolumeSource.readOnly core.v1.ClusterTrustBundleProjection.optional core.v1.ConfigMap.immutable core.v1.ConfigMapEnvSource.optional
core.v1.ConfigMapKeySelector.optional core.v1.ConfigMapProjection.optional core.v1.ConfigMapVolumeSource.defaultMode core.v1.ConfigMapVolumeSource.optional
core.v1.ContainerStatus.started core.v1.DownwardAPIVolumeFile.mode core.v1.DownwardAPIVolumeSource.defaultMode core.v1.FcVolumeSource.lun
core.v1.FileKeySelector.optional core.v1.KeyToPath.mode core.v1.NodeFeatures.supplementalGroupsPolicy core.v1.NodeRuntimeHandlerFeatures.recursiveReadOnlyMounts
core.v1.NodeRuntimeHandlerFeatures.userNamespaces core.v1.NodeSwapStatus.capacity core.v1.PodCertificateProjection.maxExpirationSeconds
core.v1.PodSecurityContext.runAsUser core.v1.PodSecurityContext.runAsGroup core.v1.PodSecurityContext.runAsNonRoot core.v1.PodSecurityContext.fsGroup
core.v1.PodSpec.terminationGracePeriodSeconds core.v1.PodSpec.activeDeadlineSeconds core.v1.PodSpec.automountServiceAccountToken
core.v1.PodSpec.shareProcessNamespace core.v1.PodSpec.priority core.v1.PodSpec.enableServiceLinks core.v1.PodSpec.setHostnameAsFQDN core.v1.PodSpec.hostUsers
core.v1.Probe.terminationGracePeriodSeconds core.v1.ProjectedVolumeSource.defaultMode core.v1.Secret.immutable core.v1.SecretEnvSource.optional
core.v1.SecretKeySelector.optional core.v1.SecretProjection.optional core.v1.SecretVolumeSource.defaultMode core.v1.SecretVolumeSource.optional
core.v1.SecurityContext.privileged core.v1.SecurityContext.runAsUser core.v1.SecurityContext.runAsGroup core.v1.SecurityContext.runAsNonRoot
core.v1.SecurityContext.readOnlyRootFilesystem core.v1.SecurityContext.allowPrivilegeEscalation core.v1.ServiceAccountTokenProjection.expirationSeconds
core.v1.ServiceSpec.ipFamilyPolicy core.v1.ServiceSpec.allocateLoadBalancerNodePorts core.v1.ServiceSpec.loadBalancerClass
core.v1.ServiceSpec.internalTrafficPolicy core.v1.ServiceSpec.trafficDistribution
core.v1.LoadBalancerIngress.ipMode core.v1.PortStatus.error core.v1.ClientIpConfig.timeoutSeconds
core.v1.Toleration.tolerationSeconds core.v1.TopologySpreadConstraint.minDomains core.v1.WindowsSecurityContextOptions.hostProcess
meta.v1.DeleteOptions.gracePeriodSeconds meta.v1.DeleteOptions.orphanDependents meta.v1.DeleteOptions.ignoreStoreReadErrorWithClusterBreakingPotential
meta.v1.DeleteOptions.propagationPolicy meta.v1.Preconditions.uid meta.v1.Preconditions.resourceVersion
meta.v1.ObjectMeta.deletionGracePeriodSeconds meta.v1.OwnerReference.controller meta.v1.OwnerReference.blockOwnerDeletion
authentication.v1.TokenRequestSpec.expirationSeconds core.v1.ServiceAccount.automountServiceAccountToken""".split())
for q in out:
    for f in out[q]:
        f['ptr'] = (q + '.' + f['json']) in PTR
        PTR.discard(q + '.' + f['json'])
if PTR:
    sys.exit('PTR names fields no accepted message has: %s' % ' '.join(sorted(PTR)))
if REPORT:
    print('\n'.join(missing), file=sys.stderr)
    print('%d messages, %d fields' % (len(out), sum(len(v) for v in out.values())), file=sys.stderr)
    # optional non-string scalars: the candidates for PTR
    for q in sorted(out):
        for f in out[q]:
            if f['ty'] in ('I32','I64','Bool','F64') and not f['rep'] and not f['req']:
                print('SCALAR', q, f['json'], f['ty'], 'ptr' if f['ptr'] else '', file=sys.stderr)

# ---- emit Rust
HEADER = """//! The protobuf layout of the Kubernetes messages wasmkube accepts as request
//! bodies: for each message its fields' tags, JSON names and types.
//!
//! GENERATED by `scripts/gen-protobuf-schema.py`; do not edit. Derived from
//! the `k8s-pb` 0.9 bindings (Kubernetes 1.34 `generated.proto`) for the field
//! tags and types, with JSON names and required fields taken from
//! `k8s-openapi`'s v1_34 types. `ptr` marks fields that are pointers in the Go
//! types (a list kept in the script): their zero value is meaningful, unlike
//! plain fields, which Go's marshaller always writes and its JSON encoder
//! drops when zero. `inline` marks embedded structs whose fields JSON
//! flattens into the parent. To accept another kind, add it to the script's
//! `ROOTS` (and to `ROOTS` in `protobuf.rs`), review its pointer fields, and
//! rerun the script; `schema_is_sorted_and_closed` checks order, unique tags
//! and that every reference resolves.

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
"""
b = lambda x: 'true' if x else 'false'
lines = []
for q in sorted(out):
    fs = []
    for f in sorted(out[q], key=lambda f: f['tag']):
        fs.append('            F { tag: %d, json: "%s", ty: %s, rep: %s, req: %s, ptr: %s, inline: %s },' % (
            f['tag'], f['json'], f['ty'], b(f['rep']), b(f['req']), b(f['ptr']), b(f['inline'])))
    lines.append('    M {\n        name: "%s",\n        fields: &[\n%s\n        ],\n    },' % (q, '\n'.join(fs)))
text = HEADER + '\n'.join(lines) + '\n];\n'
old = open(OUT).read() if os.path.exists(OUT) else None
if CHECK:
    if old != text:
        sys.exit('%s is stale: run python3 scripts/gen-protobuf-schema.py' % os.path.relpath(OUT, REPO))
elif old != text:
    open(OUT, 'w').write(text)
    print('wrote %s: %d messages' % (os.path.relpath(OUT, REPO), len(out)), file=sys.stderr)
