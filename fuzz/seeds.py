#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target from the repository's own
manifests (wasm-samples/manifests/*.yaml) plus the request shapes kubectl
sends: patches of each kind, selectors, request paths, protobuf bodies
(encoded with the layouts in apiserver/src/protobuf/schema.rs) and CGI
responses.

Usage: seeds.py <corpus-root>   (writes <corpus-root>/<target>/<sha1>)

Seeds are named by content hash, so rerunning adds nothing new and never
disturbs what the fuzzer has added to the same directories.
"""

import copy
import glob
import hashlib
import json
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def manifests():
    """Every object in the sample manifests, plus a few shapes the samples
    lack (kinds with fields of their own)."""
    objs = []
    for path in sorted(glob.glob(os.path.join(ROOT, "wasm-samples/manifests/*.yaml"))):
        with open(path) as f:
            objs.extend(d for d in yaml.safe_load_all(f) if isinstance(d, dict))
    objs += [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": "default", "labels": {"app": "web"}},
            "data": {"a": "1", "b": "two"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s", "annotations": {"note": "x"}},
            "type": "Opaque",
            "data": {"password": "c2VjcmV0"},
            "stringData": {"user": "admin"},
        },
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "node-a", "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": "node-a",
                "leaseDurationSeconds": 40,
                "renewTime": "2026-01-02T03:04:05.123456Z",
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "e1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Started",
            "message": "started",
            "type": "Normal",
            "count": 2,
            "firstTimestamp": "2026-01-02T03:04:05Z",
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "full",
                "namespace": "default",
                "labels": {"app": "web", "tier": "front"},
                "annotations": {"wasmkube.io/http": "wagi"},
                "finalizers": ["example.com/keep"],
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": True}
                ],
            },
            "spec": {
                "nodeName": "node-a",
                "restartPolicy": "Always",
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
                "nodeSelector": {"disk": "ssd"},
                "volumes": [
                    {"name": "data", "emptyDir": {}},
                    {"name": "cfg", "configMap": {"name": "cfg"}},
                ],
                "containers": [
                    {
                        "name": "app",
                        "image": "registry.example/app:v1",
                        "args": ["--port", "8080"],
                        "env": [{"name": "A", "value": "1"}],
                        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                        "resources": {
                            "limits": {"cpu": "500m", "memory": "64Mi"},
                            "requests": {"cpu": "100m", "memory": "16Mi"},
                        },
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 5},
                    },
                    {"name": "side", "image": "side:v1"},
                ],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "node-a", "labels": {"kubernetes.io/hostname": "node-a"}},
            "spec": {"unschedulable": True, "taints": [{"key": "k", "effect": "NoSchedule"}]},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "ds"},
            "spec": {
                "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["ds"]}]},
                "template": {
                    "metadata": {"labels": {"app": "ds"}},
                    "spec": {"containers": [{"name": "c", "image": "c:v1"}]},
                },
            },
        },
    ]
    return objs


# --- patches ---------------------------------------------------------------


def strategic_patches(obj):
    out = [
        {"metadata": {"labels": {"app": "other", "new": "x"}}},
        {"metadata": {"labels": {"app": None}, "annotations": {"a": "b"}}},
        {"metadata": {"finalizers": ["example.com/a"]}},
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/keep"]}},
        {"$patch": "replace", "metadata": {"name": "x"}},
        {"spec": {"$patch": "delete"}},
        {"spec": {"replicas": 5}},
        {"spec": {"unschedulable": True}},
        {"data": {"a": None, "c": "3"}},
    ]
    containers = None
    for path in (["spec"], ["spec", "template", "spec"]):
        cur = obj
        for p in path:
            cur = cur.get(p) if isinstance(cur, dict) else None
        if isinstance(cur, dict) and isinstance(cur.get("containers"), list):
            containers = (path, cur["containers"])
    if containers:
        path, cs = containers
        names = [c.get("name") for c in cs if isinstance(c, dict)]
        first = names[0] if names else "c"

        def wrap(inner):
            for p in reversed(path):
                inner = {p: inner}
            return inner

        out += [
            wrap({"containers": [{"name": first, "image": "new:v2"}]}),
            wrap(
                {
                    "$setElementOrder/containers": [{"name": n} for n in reversed(names)],
                    "containers": [{"name": first, "env": [{"name": "B", "value": "2"}]}],
                }
            ),
            wrap({"containers": [{"name": first, "$patch": "delete"}]}),
            wrap({"containers": [{"name": "added", "image": "a:v1", "ports": [{"containerPort": 80}]}]}),
            wrap({"containers": [{"name": first, "ports": [{"containerPort": 8080, "$patch": "delete"}]}]}),
            wrap({"volumes": [{"name": "data", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/x"}}]}),
            wrap({"containers": [{"$patch": "replace"}]}),
        ]
    return out


def merge_patches(obj):
    return [
        {"metadata": {"labels": {"app": None, "x": "y"}}},
        {"spec": None},
        {"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}},
        {"data": {"a": None}},
        {"a": {"b": {"c": {"d": None}}}},
        [],
        "scalar",
    ]


def json_patches(obj):
    ops = [
        [{"op": "add", "path": "/metadata/labels/new", "value": "x"}],
        [{"op": "replace", "path": "/metadata/name", "value": "y"}],
        [{"op": "remove", "path": "/metadata/labels"}],
        [{"op": "test", "path": "/kind", "value": obj.get("kind")}],
        [{"op": "test", "path": "/kind", "value": "Nope"}],
        [{"op": "copy", "from": "/metadata", "path": "/metadata2"}],
        [{"op": "move", "from": "/metadata/labels", "path": "/metadata/annotations"}],
        [{"op": "add", "path": "/spec/containers/-", "value": {"name": "n", "image": "i"}}],
        [{"op": "add", "path": "/spec/containers/0/args", "value": ["a"]}],
        [{"op": "remove", "path": "/spec/containers/1"}],
        [{"op": "replace", "path": "/spec/replicas", "value": 0}],
        [{"op": "add", "path": "/metadata/annotations/a~1b~0c", "value": "esc"}],
        [
            {"op": "copy", "from": "/spec", "path": "/s1"},
            {"op": "copy", "from": "/s1", "path": "/s2"},
            {"op": "copy", "from": "/s2", "path": "/s3"},
        ],
        [{"op": "bogus", "path": "/"}],
        [{"op": "add", "path": "", "value": {"apiVersion": "v1"}}],
    ]
    return ops


def apply_configs(obj):
    a = copy.deepcopy(obj)
    a.setdefault("metadata", {}).setdefault("labels", {})["applied"] = "yes"
    b = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": {"name": obj.get("metadata", {}).get("name")}}
    return [a, b, {"metadata": {"annotations": None}, "spec": {"containers": [{"name": "x", "image": "y"}]}}]


# --- protobuf ----------------------------------------------------------------


def load_schema():
    """The generated layouts: message name -> [(tag, json, ty, rep, inline)]."""
    path = os.path.join(ROOT, "apiserver/src/protobuf/schema.rs")
    with open(path) as f:
        text = f.read()
    msgs = {}
    for m in re.finditer(r'name: "([^"]+)",\s*fields: &\[(.*?)\n\s*\],', text, re.S):
        fields = []
        for f in re.finditer(
            r'F \{ tag: (\d+), json: "([^"]+)", ty: ([A-Za-z0-9]+(?:\("[^"]+"\))?), rep: (true|false), '
            r'req: (?:true|false), ptr: (?:true|false), inline: (true|false) \}',
            m.group(2),
        ):
            fields.append((int(f.group(1)), f.group(2), f.group(3), f.group(4) == "true", f.group(5) == "true"))
        msgs[m.group(1)] = fields
    return msgs


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(tag, wire):
    return varint(tag << 3 | wire)


def ld(tag, payload):
    return key(tag, 2) + varint(len(payload)) + payload


def rfc3339_seconds(s):
    import datetime

    s = s.rstrip("Z")
    frac = 0
    if "." in s:
        s, f = s.split(".")
        frac = int((f + "000000000")[:9])
    dt = datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return int(dt.timestamp()), frac


def encode_value(schema, ty, v):
    """One value of type `ty` as the payload of a length-delimited field, or
    (wire, bytes) for scalars."""
    inner = re.match(r'(Msg|MapMsg)\("([^"]+)"\)', ty)
    name = inner.group(2) if inner else None
    if name in ("meta.v1.Time", "meta.v1.MicroTime"):
        secs, nanos = rfc3339_seconds(str(v))
        return key(1, 0) + varint(secs) + (key(2, 0) + varint(nanos) if nanos else b"")
    if name == "resource.Quantity":
        return ld(1, str(v).encode())
    if name == "intstr.IntOrString":
        if isinstance(v, int):
            return key(1, 0) + varint(0) + key(2, 0) + varint(v)
        return key(1, 0) + varint(1) + ld(3, str(v).encode())
    if name in ("meta.v1.FieldsV1", "runtime.RawExtension"):
        return ld(1, json.dumps(v).encode())
    if name:
        return encode_message(schema, name, v if isinstance(v, dict) else {})
    raise ValueError(ty)


def scalar(tag, ty, v):
    if ty == "Str":
        return ld(tag, str(v).encode())
    if ty == "Bytes":
        import base64

        return ld(tag, base64.b64decode(v))
    if ty == "Bool":
        return key(tag, 0) + varint(1 if v else 0)
    if ty in ("I32", "I64"):
        return key(tag, 0) + varint(int(v))
    if ty == "F64":
        import struct

        return key(tag, 1) + struct.pack("<d", float(v))
    raise ValueError(ty)


def encode_message(schema, name, obj):
    out = b""
    for tag, jname, ty, rep, inline in schema.get(name, []):
        if inline:
            out += ld(tag, encode_value(schema, ty, obj))
            continue
        if jname not in obj or obj[jname] is None:
            continue
        v = obj[jname]
        if ty in ("MapStr", "MapBytes") or ty.startswith("MapMsg"):
            for k, val in (v or {}).items():
                if ty == "MapStr":
                    entry = ld(1, str(k).encode()) + ld(2, str(val).encode())
                elif ty == "MapBytes":
                    import base64

                    entry = ld(1, str(k).encode()) + ld(2, base64.b64decode(val))
                else:
                    entry = ld(1, str(k).encode()) + ld(2, encode_value(schema, ty, val))
                out += ld(tag, entry)
            continue
        items = v if rep and isinstance(v, list) else [v]
        for item in items:
            if ty.startswith("Msg"):
                out += ld(tag, encode_value(schema, ty, item))
            else:
                out += scalar(tag, ty, item)
    return out


ROOTS = {
    ("v1", "Namespace"): "core.v1.Namespace",
    ("v1", "Pod"): "core.v1.Pod",
    ("v1", "Node"): "core.v1.Node",
    ("v1", "Event"): "core.v1.Event",
    ("v1", "ConfigMap"): "core.v1.ConfigMap",
    ("v1", "Secret"): "core.v1.Secret",
    ("v1", "Binding"): "core.v1.Binding",
    ("coordination.k8s.io/v1", "Lease"): "coordination.v1.Lease",
    ("policy/v1", "Eviction"): "policy.v1.Eviction",
    ("apps/v1", "Deployment"): "apps.v1.Deployment",
    ("apps/v1", "ReplicaSet"): "apps.v1.ReplicaSet",
    ("apps/v1", "DaemonSet"): "apps.v1.DaemonSet",
    ("batch/v1", "Job"): "batch.v1.Job",
    ("v1", "Service"): "core.v1.Service",
}


def envelope(api_version, kind, raw, encoding=""):
    type_meta = ld(1, api_version.encode()) + ld(2, kind.encode())
    return ld(1, type_meta) + ld(2, raw) + ld(3, encoding.encode()) + ld(4, b"")


def protobuf_bodies(objs):
    """Bodies after the `k8s\\0` magic (the target adds it)."""
    schema = load_schema()
    out = []
    for o in objs + [
        {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "node-a"}},
        {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p", "namespace": "default"}},
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "mf",
                "creationTimestamp": "2026-01-02T03:04:05Z",
                "managedFields": [
                    {"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}
                ],
            },
        },
    ]:
        msg = ROOTS.get((o.get("apiVersion"), o.get("kind")))
        if msg:
            raw = encode_message(schema, msg, o)
            out.append(envelope(o["apiVersion"], o["kind"], raw))
    delete = encode_message(
        schema,
        "meta.v1.DeleteOptions",
        {"gracePeriodSeconds": 0, "propagationPolicy": "Foreground", "preconditions": {"uid": "u1"}, "dryRun": ["All"]},
    )
    out.append(envelope("v1", "DeleteOptions", delete))
    out.append(envelope("meta.k8s.io/v1", "DeleteOptions", b""))
    out.append(envelope("v1", "Pod", b"", "gzip"))
    out.append(envelope("v1", "Unknowable", b"\x0a\x00"))
    return out


# --- the rest ----------------------------------------------------------------

SELECTORS = [
    "",
    "app=web",
    "app==web,tier!=db",
    "env in (prod,staging),!legacy",
    "env notin (a,,b),x",
    "example.com/key=value_1.2-3",
    "k>5,k<10",
    "a in (),b notin (c,)",
    "metadata.name=x,spec.nodeName!=",
    "status.phase=Running,metadata.namespace==default",
    "involvedObject.name=a\\,b,reason=x\\=y",
    "type!=kubernetes.io/service-account-token",
    "spec.unschedulable=true",
    "a\\\\=b,!=c",
]

PATHS = [
    "/api/v1/pods?labelSelector=app%3Dweb&limit=500",
    "/api/v1/namespaces/default/pods/p?fieldSelector=metadata.name%3Dp&watch=true&resourceVersion=10",
    "/api/v1/namespaces/default/pods/p/status",
    "/api/v1/namespaces/default/pods/p/log?follow=true&tailLines=10&container=c",
    "/apis/apps/v1/namespaces/default/deployments/web/scale?dryRun=All&fieldValidation=Strict",
    "/apis/apps/v1/deployments?resourceVersion=0&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
    "/api/v1/watch/namespaces/default/configmaps?timeoutSeconds=30&sendInitialEvents=true",
    "/api/v1/nodes/node-a?gracePeriodSeconds=0&propagationPolicy=Foreground",
    "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n?continue=eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MywiLCJzdGFydCI6Ii9hIn0&limit=2",
    "/apis/batch/v1/jobs?resourceVersionMatch=Exact&resourceVersion=5&fieldManager=kubectl-client-side-apply",
    "/api/v1/namespaces/x/secrets?fieldSelector=type%3DOpaque\0Accept: application/json;as=Table;g=meta.k8s.io;v=v1\nContent-Type: application/strategic-merge-patch+json",
    "/api/v1/namespaces\0Accept: application/vnd.kubernetes.protobuf, */*\nContent-Type: application/vnd.kubernetes.protobuf",
    "/apis/apps/v1/replicasets\0Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
]

CGI = [
    b"Content-Type: text/plain\n\nhello\n",
    b"Content-Type: text/plain\r\nStatus: 404 Not Found\r\n\r\nmissing",
    b"Location: /elsewhere\n\n",
    b"Status: 201\nX-A: 1\nX-A: 2\n\n{}",
    b"Content-Type: text/html; charset=utf-8\r\n\r\n<html></html>",
    b"no blank line",
    b"Bad Header\n\nbody",
    b"/path/to?x=1&y=2&&z",
]


def spdy_frames():
    """Connections of SPDY/3.1 frames without header blocks (those need the
    SPDY zlib dictionary; the fuzzer finds its way there from these). The
    first byte is the chunk size the target pushes the bytes in."""
    import struct

    def control(ty, flags, payload):
        return struct.pack(">HHI", 0x8003, ty, flags << 24 | len(payload)) + payload

    def data(stream, flags, payload):
        return struct.pack(">II", stream, flags << 24 | len(payload)) + payload

    frames = [
        control(4, 0, struct.pack(">I", 1) + struct.pack(">II", 7 << 24 | 7, 65536)),
        control(6, 0, struct.pack(">I", 1)),
        control(3, 0, struct.pack(">II", 1, 5)),
        control(7, 0, struct.pack(">II", 3, 0)),
        control(9, 0, struct.pack(">II", 1, 4096)),
        control(1, 0, struct.pack(">IIBB", 1, 0, 0, 0) + b"\x78\xbb"),
        control(2, 1, struct.pack(">I", 1)),
        control(99, 0, b""),
        data(1, 0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        data(1, 1, b""),
    ]
    out = [bytes([n]) + b"".join(frames) for n in (1, 7, 64, 255)]
    out += [bytes([255]) + f for f in frames]
    return out


def write(root, target, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    objs = manifests()
    for o in objs:
        j = json.dumps(o).encode()
        y = yaml.safe_dump(o).encode()
        write(root, "manifest", b"\x00" + j)
        write(root, "manifest", b"\x01" + y)
        write(root, "manifest", b"\x02" + y)
        for p in strategic_patches(o):
            write(root, "patch_strategic", j + b"\0" + json.dumps(p).encode())
        for p in merge_patches(o):
            write(root, "patch_merge", j + b"\0" + json.dumps(p).encode())
        for p in json_patches(o):
            write(root, "patch_json", j + b"\0" + json.dumps(p).encode())
        for p in apply_configs(o):
            write(root, "patch_apply", j + b"\0" + yaml.safe_dump(p).encode())
            write(root, "patch_apply", b"\0" + json.dumps(p).encode())
        labels = (o.get("metadata") or {}).get("labels") or {}
        if labels:
            write(root, "selectors", ",".join(f"{k}={v}" for k, v in labels.items()))
    for b in protobuf_bodies(objs):
        write(root, "protobuf_body", b)
        write(root, "manifest", b"\x00k8s\x00" + b)
    for s in SELECTORS:
        write(root, "selectors", s)
    for p in PATHS:
        write(root, "request_query", p)
    for c in CGI:
        write(root, "wagi_cgi", c)
    for f in spdy_frames():
        write(root, "spdy_frames", f)


if __name__ == "__main__":
    main()
