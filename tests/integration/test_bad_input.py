"""Bad input of every sort against a real server: always a 4xx Status, never a crash, never a partial write.

A table of malformed patches, bodies and query parameters is sent to several kinds (namespaced and
cluster-scoped built-ins, a custom resource). Each answer must be a metav1.Status whose code matches the
HTTP status. The only 5xx answer allowed is 504 ResourceVersionTooLarge for a resourceVersion the server
has not reached. (Upstream answers the strategic merge patch library's errors, and an apply configuration
with a field its schema does not declare, with a reason-less 500; pocketkube answers them 400 BadRequest with
the same message.)
"""

from __future__ import annotations

import http.client
import json
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cluster import Cluster

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
SMP = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"

GROUP = "badinput.example.com"
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": f"gizmos.{GROUP}"},
    "spec": {"group": GROUP, "scope": "Namespaced", "names": {"plural": "gizmos", "kind": "Gizmo"},
             "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                               "spec": {"type": "object", "properties": {
                                   "size": {"type": "integer", "minimum": 0},
                                   "tags": {"type": "array", "items": {"type": "string"}},
                                   "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}},
                               "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}}}}]}}


class Session:
    """One kept-alive HTTPS connection: thousands of small requests without a TLS handshake each."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.conn: http.client.HTTPSConnection | None = None
        self.log_offset = cluster.log_path.stat().st_size  # where this module's server log starts

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json") -> tuple[int, Any]:
        headers = {"Accept": "application/json", "Authorization": f"Bearer {self.cluster.token}"}
        if body is not None:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection("127.0.0.1", self.cluster.port,
                                                        context=self.cluster.ssl_context(), timeout=30)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # the server may close an idle keep-alive connection; a second failure is a real one
                self.close()
                if attempt == 2:
                    raise
        try:
            return resp.status, json.loads(data)
        except ValueError:
            return resp.status, data

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@pytest.fixture(scope="module")
def session(cluster: Cluster) -> Iterator[Session]:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(CRD))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/gizmos.{GROUP}", "--timeout=10s")
    s = Session(cluster)
    yield s
    s.close()
    cluster.kubectl("delete", "crd", f"gizmos.{GROUP}", "--ignore-not-found", "--wait=false")


@pytest.fixture
def ns(session: Session) -> str:
    name = f"bad-{uuid.uuid4().hex[:8]}"
    assert session.request("POST", "/api/v1/namespaces", _json({"metadata": {"name": name}}))[0] == 201
    return name


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def targets(ns: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Collection path and a valid object, per kind, all labelled so that a change would show."""
    meta = {"name": "x", "labels": {"keep": "me"}, "annotations": {"note": "n"}}
    node_name = f"{ns}-node"
    return {
        "configmap": (f"/api/v1/namespaces/{ns}/configmaps", {"metadata": meta, "data": {"a": "1"}}),
        "deployment": (f"/apis/apps/v1/namespaces/{ns}/deployments", {"metadata": meta, "spec": {
            "replicas": 2, "selector": {"matchLabels": {"app": "x"}}, "template": {
                "metadata": {"labels": {"app": "x"}}, "spec": {"containers": [
                    {"name": "c", "image": "i", "env": [{"name": "E", "value": "1"}],
                     "ports": [{"containerPort": 80}]}]}}}}),
        "service": (f"/api/v1/namespaces/{ns}/services", {"metadata": meta, "spec": {
            "ports": [{"port": 80}], "selector": {"app": "x"}}}),
        "node": ("/api/v1/nodes", {"metadata": {**meta, "name": node_name}, "spec": {"podCIDR": "10.0.0.0/24"}}),
        "gizmo": (f"/apis/{GROUP}/v1/namespaces/{ns}/gizmos", {
            "apiVersion": f"{GROUP}/v1", "kind": "Gizmo", "metadata": meta,
            "spec": {"size": 1, "tags": ["a"], "extra": {"deep": {"x": 1}}}}),
    }


def create_all(session: Session, ns: str) -> dict[str, str]:
    paths = {}
    for kind, (base, obj) in targets(ns).items():
        status, body = session.request("POST", base, _json(obj))
        assert status == 201, (kind, body)
        paths[kind] = f"{base}/{obj['metadata']['name']}"
    return paths


def essence(obj: dict[str, Any]) -> Any:
    """What a refused write must leave alone (controllers may still write status and taints)."""
    meta = obj["metadata"]
    spec = dict(obj.get("spec") or {})
    spec.pop("taints", None)
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith("deployment.")}
    return (meta.get("name"), meta.get("labels"), annotations, meta.get("finalizers"), meta.get("generation"),
            meta.get("ownerReferences"), spec, obj.get("data"))


def assert_refused(desc: str, status: int, body: Any, content_type: str = "") -> None:
    if status < 300:  # junk that is a no-op for this kind (an unknown field dropped) is not an error
        assert isinstance(body, dict) and body.get("kind") not in ("Status", None), (desc, status, body)
        return
    assert isinstance(body, dict) and body.get("kind") == "Status", (desc, status, body)
    assert body["status"] == "Failure" and body["code"] == status, (desc, body)
    assert 400 <= status < 500 or (status == 504 and body.get("reason") == "Timeout"), (desc, status, body)
    assert body.get("reason") or status == 400, (desc, body)


JSON_PATCHES: list[Any] = [
    {}, [{}], [1, 2], ["op"], [[]], [None], "x", 5,
    [{"op": "bogus", "path": "/a"}], [{"op": "add"}], [{"op": 5, "path": "/a"}], [{"op": "add", "path": 5}],
    [{"op": "add", "path": "nope", "value": 1}], [{"op": "add", "path": "/metadata/labels/x"}],
    [{"op": "remove", "path": "/spec/nothing/here"}], [{"op": "replace", "path": "/metadata/name", "value": 5}],
    [{"op": "replace", "path": "/metadata", "value": []}], [{"op": "move", "from": "/nope", "path": "/a"}],
    [{"op": "copy", "from": "/metadata/missing", "path": "/metadata/x"}],
    [{"op": "add", "path": "/metadata/labels", "value": {"a": 1}}],
    [{"op": "add", "path": "/metadata/labels/~2", "value": "v"}],
    [{"op": "add", "path": "/spec/template/spec/containers/9", "value": {}}],
    [{"op": "add", "path": "/metadata/finalizers/-1", "value": "x"}], [{"op": "test", "path": "/", "value": None}],
    [{"op": "test", "path": "/metadata/name", "value": "other"}], [{"op": "replace", "path": "", "value": []}],
    [{"op": "replace", "path": "", "value": 5}], [{"op": "add", "path": "/kind", "value": "Other"}],
    [{"op": "add", "path": "/apiVersion", "value": 5}], [{"op": "remove", "path": "/metadata"}],
    [{"op": "add", "path": "/metadata/creationTimestamp", "value": "not a time"}],
    [{"op": "add", "path": "/metadata/managedFields", "value": "x"}],
    [{"op": "add", "path": "/metadata/ownerReferences", "value": [{}]}],
    [{"op": "add", "path": "/metadata/finalizers", "value": [1]}],
    [{"op": "add", "path": "/metadata/annotations/a", "value": 1e400}],
    [{"op": "add", "path": "/metadata/labels/a", "value": "ok"}, {"op": "test", "path": "/metadata/labels/a",
                                                                  "value": "not ok"}],
    [{"op": "add", "path": "/metadata/labels/a", "value": "ok"}, {"op": "remove", "path": "/nope"}],
]

MERGE_PATCHES: list[bytes] = [
    b"[]", b"5", b'"x"', b"{", b"", b'{"metadata":5}', b'{"metadata":{"name":5}}', b'{"metadata":{"labels":[1]}}',
    b'{"metadata":{"labels":{"a":true}}}', b'{"metadata":{"labels":{"":"x"}}}', b'{"metadata":{"annotations":{"b":5}}}',
    b'{"metadata":{"managedFields":5}}', b'{"metadata":{"managedFields":[5]}}', b'{"metadata":{"resourceVersion":5}}',
    b'{"metadata":{"resourceVersion":"abc"}}', b'{"metadata":{"uid":"nope"}}', b'{"kind":"Secret"}',
    b'{"apiVersion":"v2"}', b'{"metadata":{"creationTimestamp":"yesterday"}}', b'{"metadata":{"ownerReferences":"x"}}',
    b'{"metadata":{"ownerReferences":[{"apiVersion":5}]}}', b'{"metadata":{"generation":"x"}}',
    b'{"metadata":{"name":"other"}}', b'{"metadata":{"namespace":"other"}}', b'{"metadata":{"finalizers":"x"}}',
    b'{"metadata":{"labels":{"keep":"me"}},"spec":{"replicas":"x"}}', b'{"spec":"x"}', b'{"spec":[]}',
    b'{"spec":{"replicas":1.5}}', b'{"spec":{"replicas":1e400}}', b'{"spec":{"replicas":123456789012345678901234567890}}',
    b'{"spec":{"replicas":-1}}', b'{"spec":{"template":{"spec":{"containers":[{"name":5}]}}}}',
    b'{"spec":{"template":{"spec":{"containers":{"a":1}}}}}', b'{"spec":{"ports":[{"port":"x"}]}}',
    b'{"spec":{"ports":5}}', b'{"spec":{"podCIDR":5}}', b'{"spec":{"size":"big"}}', b'{"spec":{"size":-1}}',
    b'{"spec":{"tags":[1]}}', b'{"spec":{"tags":"a"}}', b'{"data":{"a":1}}', b'{"data":[1]}',
    b'{"data":{"bad key":"x"}}', b'\xff\xfe{"a"', b'{"data":{"a":"\xff"}}', b'{"data":{"\xc3\x28":"a"}}',
    b'{"a":' * 3000 + b"1" + b"}" * 3000, b"[" * 100000 + b"]" * 100000, b'{"spec":{"extra":' + b"[" * 900 + b"]" * 900
    + b"}}", b'{"spec":{"extra":' + b'{"a":' * 400 + b"1" + b"}" * 400 + b"}}",
]

SMP_PATCHES: list[Any] = [
    {"$patch": "bogus"}, {"$patch": "delete"}, {"$patch": 5}, {"metadata": {"$patch": "bogus"}},
    {"metadata": {"labels": {"$patch": "bogus"}}}, {"metadata": {"labels": {"$patch": "merge", "a": "b"}}},
    {"spec": {"template": {"spec": {"containers": [{"$patch": "bogus", "name": "c"}]}}}},
    {"spec": {"template": {"spec": {"containers": [{"$patch": "delete"}]}}}},
    {"spec": {"template": {"spec": {"containers": [{"$patch": "merge"}]}}}},
    {"spec": {"template": {"spec": {"$setElementOrder/containers": 5}}}},
    {"spec": {"template": {"spec": {"$setElementOrder/containers": [5]}}}},
    {"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "c"}],
                                    "containers": [{"name": "d", "image": "i"}]}}}},
    {"metadata": {"$setElementOrder/labels": [{"a": 1}]}}, {"metadata": {"$setElementOrder/name": ["x"]}},
    {"$setElementOrder/metadata": [1]}, {"metadata": {"$setElementOrder/finalizers": 5}},
    {"metadata": {"$deleteFromPrimitiveList/finalizers": 5}},
    {"metadata": {"$deleteFromPrimitiveList/finalizers": [{"a": 1}]}},
    {"metadata": {"$deleteFromPrimitiveList/labels": ["a"]}}, {"$retainKeys": 5}, {"spec": {"$retainKeys": "podCIDR"}},
    {"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 1}}}},
    {"spec": {"template": {"spec": {"containers": [{"name": "c", "env": [{"value": "x"}]}]}}}},
    {"spec": {"template": {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": "x"}]}]}}}},
    {"spec": {"template": {"spec": {"containers": [{"name": "c", "command": [[1]]}]}}}},
    {"spec": {"template": {"spec": {"containers": [{"name": {"a": 1}}]}}}},
    {"spec": {"template": {"spec": {"containers": [None]}}}}, {"spec": {"template": {"spec": {"containers": [[]]}}}},
    {"spec": {"ports": [{"$patch": "delete"}]}}, {"spec": {"ports": [1, 2]}}, {"spec": {"ports": [[1]]}},
    {"spec": {"taints": [{"effect": "NoSchedule"}]}}, {"metadata": {"finalizers": [{"a": 1}]}},
    {"metadata": {"finalizers": [[1]]}}, {"metadata": {"finalizers": [1, "a"]}},
    {"metadata": {"ownerReferences": [{"name": "x"}]}}, {"status": {"conditions": [{"status": "True"}]}},
    {"metadata": {"labels": {"keep": None, "new": 5}}}, [1], "x",
]

BODIES: list[bytes] = [
    b"", b"null", b"[]", b"5", b'"s"', b"{", b"\xff", b'{"metadata":5}', b'{"metadata":{"name":["x"]}}',
    b'{"metadata":{"name":"y","labels":5}}', b'{"metadata":{"name":"y"},"spec":5}', b'{"kind":5}', b'{"apiVersion":[]}',
    b'{"metadata":{"name":"y"},"spec":{"replicas":"x","template":5}}', b'{"metadata":{"name":"y"},"data":{"a":{"b":1}}}',
    b'{"metadata":{"name":"y","creationTimestamp":5}}', b'{"metadata":{"generateName":5}}',
    b'{"metadata":{"name":"y"},"spec":{"ports":[{"port":1e30}]}}',
    b'{"metadata":{"name":"y"},"spec":{"ports":[{"port":80,"targetPort":{"a":1}}]}}',
    b'{"metadata":{"name":"y"},"spec":{"replicas":9999999999999999999999}}', b'{"metadata":{"name":"\\u0000"}}',
    b'{"metadata":{"name":"' + b"a" * 100000 + b'"}}', b'{"metadata":{"name":"y","labels":{"' + b"a" * 1000 + b'":"b"}}}',
    b'{"a":' * 5000 + b"1" + b"}" * 5000, b"[" * 200000, b'{"metadata":{"name":"y"},"spec":' + b"[" * 5000 + b"]" * 5000
    + b"}", b'{"metadata":{"name":"y","managedFields":5}}', b'{"metadata":{"name":"y","managedFields":[5]}}',
    b'{"metadata":{"name":"y","managedFields":[{"manager":"m","operation":"Apply","fieldsType":"FieldsV1",'
    b'"fieldsV1":{"k:{bad":{}}}]}}',
    b'{"metadata":{"name":"y","ownerReferences":[{"apiVersion":"v1","kind":"X","name":"n","uid":"u",'
    b'"controller":"yes"}]}}',
    b'{"metadata":{"name":"y","creationTimestamp":"2020-13-45T99:00:00Z"}}',
    b'{"metadata":{"name":"x","resourceVersion":"abc"},"data":{"a":"2"},"spec":{"size":2}}',
    b'{"metadata":{"name":"x","resourceVersion":"1"},"data":{"a":"2"},"spec":{"size":2}}',
]
YAML_BODIES: list[bytes] = [
    b"a: [", b"- 1\n- 2\n", b"!!python/object/apply:os.system [ls]", b"a: &a [*a]", b"a: *undefined",
    b"a: 1\n---\nb: 2\n", b"x: " + b"[" * 5000 + b"]" * 5000, b"[" * 200000, b"? [a]\n: b\n", b"{1: 2}",
    b"a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    b"f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\n",
    b"metadata:\n" + b"".join(b" " * i + b"a:\n" for i in range(1, 1500)),
]


def protobuf_bodies() -> list[bytes]:
    fixed = [b"k8s\x00", b"k8s\x00\x0a", b"k8s\x00" + bytes(range(256)), b"\x00" * 10, b"k8s\x00\x12\x03abc",
             b"k8s\x00\x0a\x05\x0a\x01v\x12\x00\x12\xff\xff\xff\xff\x0f",
             b"k8s\x00\x0a\x0c\x0a\x02v1\x12\x06Foobar\x12\x04\x0a\x02\x0a\x00",
             b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12\x05\x0a\x03\x0a\x01\xff",
             b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12\x08\x0a\x06\x0a\x04\xff\xff\xff\xff",
             b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12\x04\x0a\x02\x0b\x00"]
    rnd = random.Random(4)
    return fixed + [b"k8s\x00" + rnd.randbytes(rnd.randint(0, 48)) for _ in range(40)]


def test_malformed_patches_are_refused_and_write_nothing(session: Session, ns: str) -> None:
    paths = create_all(session, ns)
    before = {kind: essence(session.request("GET", path)[1]) for kind, path in paths.items()}
    for kind, path in paths.items():
        for sub in ("", "/status"):
            if kind == "configmap" and sub:
                continue
            for patch in JSON_PATCHES:
                status, body = session.request("PATCH", path + sub, _json(patch), JSON_PATCH)
                assert_refused(f"{kind}{sub} json {patch}", status, body, JSON_PATCH)
            for raw in MERGE_PATCHES:
                status, body = session.request("PATCH", path + sub, raw, MERGE_PATCH)
                assert_refused(f"{kind}{sub} merge {raw[:60]!r}", status, body, MERGE_PATCH)
            for patch in SMP_PATCHES:
                status, body = session.request("PATCH", path + sub, _json(patch), SMP)
                assert_refused(f"{kind}{sub} smp {patch}", status, body, SMP)
                if kind == "gizmo":  # custom resources have no strategic merge patch
                    assert status == 415 and body["reason"] == "UnsupportedMediaType"
    after = {kind: essence(session.request("GET", path)[1]) for kind, path in paths.items()}
    assert after == before


def test_patch_errors_carry_upstream_codes_and_wording(session: Session, ns: str) -> None:
    paths = create_all(session, ns)
    deploy = paths["deployment"]
    status, body = session.request("PATCH", deploy, _json({"op": "add"}), JSON_PATCH)
    assert (status, body["reason"]) == (400, "BadRequest")
    assert body["message"] == "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
    status, body = session.request("PATCH", deploy, _json([1]), JSON_PATCH)
    assert body["message"] == "json: cannot unmarshal number into Go value of type jsonpatch.Operation"
    for ops in ([{"op": "test", "path": "/spec/replicas", "value": 3}], [{"op": "bogus", "path": "/spec"}],
                [{"op": "add", "path": "nope", "value": 1}], [{"op": "remove", "path": "/spec/nothing"}]):
        status, body = session.request("PATCH", deploy, _json(ops), JSON_PATCH)
        assert (status, body["reason"]) == (422, "Invalid"), (ops, body)
        assert body["message"] == "the server rejected our request due to an error in our request"
    status, body = session.request("PATCH", deploy, _json([{"op": "test", "path": "/a", "value": 1}] * 10001),
                                   JSON_PATCH)
    assert (status, body["reason"]) == (413, "RequestEntityTooLarge")
    assert body["message"] == "The allowed maximum operations in a JSON patch is 10000, got 10001"
    # Wrong types inside a patch are the typed decoder's 400.
    status, body = session.request("PATCH", deploy, b'{"spec":{"replicas":"x"}}', MERGE_PATCH)
    assert (status, body["reason"]) == (400, "BadRequest")
    assert body["message"] == ('Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal '
                               'string into Go struct field DeploymentSpec.spec.replicas of type int32')
    # Strategic merge patch: the library's errors are 400 with its message (upstream: a reason-less 500).
    status, body = session.request("PATCH", deploy, _json({"spec": {"strategy": {"$retainKeys": 5}}}), SMP)
    assert (status, body["reason"], body["message"]) == (400, "BadRequest", "invalid patch format of retainKeys")
    status, body = session.request("PATCH", deploy, _json({"$patch": "bogus"}), SMP)
    assert (status, body["reason"]) == (400, "BadRequest")
    assert body["message"] == "unknown patch type: bogus in map: map[$patch:bogus]"
    status, body = session.request("PATCH", deploy, _json(
        {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}), SMP)
    assert (status, body["message"]) == (400, "map: map[image:x] does not contain declared merge key: name")
    status, body = session.request("PATCH", paths["gizmo"], _json({"spec": {"size": 2}}), SMP)
    assert status == 415 and body["message"].startswith(
        f"the body of the request was in an unknown format - accepted media types include: {JSON_PATCH}, "
        f"{MERGE_PATCH}, {APPLY}")
    # Schema validation of a custom resource after a merge patch.
    status, body = session.request("PATCH", paths["gizmo"], b'{"spec":{"size":-1}}', MERGE_PATCH)
    assert (status, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "spec.size"
    status, body = session.request("PATCH", deploy, b"x", "text/plain")
    assert (status, body["reason"]) == (415, "UnsupportedMediaType")


def test_bad_apply_requests(session: Session, ns: str) -> None:
    paths = create_all(session, ns)
    before = {kind: essence(session.request("GET", path)[1]) for kind, path in paths.items()}
    cm = paths["configmap"]
    config = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: '2'}\n"
    status, body = session.request("PATCH", cm, config, APPLY)
    assert (status, body["reason"]) == (422, "Invalid")
    assert body["message"] == ('PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required '
                               'for apply patch')
    status, body = session.request("PATCH", cm + "?fieldManager=m&force=true", b'{"data":{"a":"2"}}', MERGE_PATCH)
    assert status == 422 and body["details"]["causes"][0]["field"] == "force"
    status, body = session.request("PATCH", cm + "?fieldManager=%01bad", config, APPLY)
    assert status == 422 and body["details"]["causes"][0]["field"] == "fieldManager"
    status, body = session.request("PATCH", cm + "?fieldManager=" + "m" * 129, config, APPLY)
    assert status == 422 and "Too long: may not be more than 128 bytes" in body["message"]
    wrong_kind = b"apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n"
    status, body = session.request("PATCH", cm + "?fieldManager=m", wrong_kind, APPLY)
    assert status == 400 and body["reason"] == "BadRequest"
    managed = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, managedFields: [{manager: m}]}\n"
    status, body = session.request("PATCH", cm + "?fieldManager=m", managed, APPLY)
    assert (status, body["message"]) == (400, "metadata.managedFields must be nil")

    documents = [b"", b"-", b"[]", b"5", b"{", b"a: [", b"kind: ConfigMap\n", b"apiVersion: v1\nkind: ConfigMap\n",
                 b"apiVersion: v9\nkind: ConfigMap\nmetadata: {name: x}\n",
                 b"apiVersion: v1\nkind: ConfigMap\nmetadata: 5\n",
                 b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n",
                 b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: 5\n",
                 b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: [1]}\n",
                 b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, labels: {keep: [1]}}\n",
                 b"---\n---\n", b"a: 1\n---\nb: 2\n", b"\xff\xfe", *YAML_BODIES]
    api_versions = {"deployment": "apps/v1", "node": "v1", "service": "v1", "gizmo": f"{GROUP}/v1"}
    kinds = {"deployment": "Deployment", "node": "Node", "service": "Service", "gizmo": "Gizmo"}
    for kind, path in paths.items():
        for doc in documents:
            if kind != "configmap":
                doc = doc.replace(b"apiVersion: v1", f"apiVersion: {api_versions[kind]}".encode()).replace(
                    b"ConfigMap", kinds[kind].encode())
            for query in ("?fieldManager=m", "?fieldManager=m&force=true"):
                status, body = session.request("PATCH", path + query, doc, APPLY)
                assert_refused(f"{kind} apply {query} {doc[:60]!r}", status, body, APPLY)
    after = {kind: essence(session.request("GET", path)[1]) for kind, path in paths.items()}
    assert after == before


def test_malformed_bodies_never_crash_or_write(session: Session, ns: str) -> None:
    paths = create_all(session, ns)
    before = {kind: essence(session.request("GET", path)[1]) for kind, path in paths.items()}
    names_before = {kind: _names(session, path) for kind, path in paths.items()}
    cases = ([(raw, "application/json") for raw in BODIES] + [(raw, "application/yaml") for raw in BODIES]
             + [(raw, "application/yaml") for raw in YAML_BODIES] + [(raw, PROTOBUF) for raw in protobuf_bodies()])
    for kind, path in paths.items():
        collection = path.rsplit("/", 1)[0]
        for raw, content_type in cases:
            for method, target in (("POST", collection), ("PUT", path)):
                status, body = session.request(method, target, raw, content_type)
                assert_refused(f"{kind} {method} {content_type} {raw[:60]!r}", status, body)
                if method == "POST" and status == 201:  # a valid object once unknown fields are dropped
                    assert session.request("DELETE", f"{collection}/{body['metadata']['name']}")[0] == 200
    after = {kind: essence(session.request("GET", path)[1]) for kind, path in paths.items()}
    assert after == before
    assert {kind: _names(session, path) for kind, path in paths.items()} == names_before
    # The server is still healthy after all of it.
    assert session.request("GET", "/readyz")[0] == 200


def _names(session: Session, path: str) -> list[str]:
    status, body = session.request("GET", path.rsplit("/", 1)[0])
    assert status == 200
    return sorted(item["metadata"]["name"] for item in body["items"])


def test_bad_delete_options(session: Session, ns: str) -> None:
    paths = create_all(session, ns)
    for kind, path in paths.items():
        for raw in (b"[]", b"{", b"5", b'{"gracePeriodSeconds":"x"}', b'{"preconditions":5}',
                    b'{"preconditions":{"uid":5}}', b'{"propagationPolicy":5}', b'{"dryRun":5}',
                    b'{"gracePeriodSeconds":1e400}', b'{"orphanDependents":"x"}',
                    b'{"gracePeriodSeconds":99999999999999999999999}', b'{"preconditions":{"resourceVersion":["x"]}}',
                    b'{"propagationPolicy":"Sideways"}', b'{"propagationPolicy":"Orphan","orphanDependents":true}',
                    b'{"preconditions":{"uid":"not-the-uid"}}', b'{"preconditions":{"resourceVersion":"1"}}'):
            status, body = session.request("DELETE", path, raw)
            assert_refused(f"{kind} DELETE {raw!r}", status, body)
        for query in ("gracePeriodSeconds=x", "propagationPolicy=Bogus", "dryRun=x",
                      "gracePeriodSeconds=99999999999999999999999"):
            status, body = session.request("DELETE", f"{path}?{query}")
            assert_refused(f"{kind} DELETE ?{query}", status, body)
        assert session.request("GET", path)[0] == 200
    status, body = session.request("DELETE", paths["configmap"], b'{"preconditions":5}')
    assert body["message"] == ('DeleteOptions in version "v1" cannot be handled as a DeleteOptions: json: cannot '
                               'unmarshal number into Go struct field DeleteOptions.preconditions of type '
                               'v1.Preconditions')
    status, body = session.request("DELETE", paths["configmap"], b'{"preconditions":{"uid":"other"}}')
    assert (status, body["reason"]) == (409, "Conflict")


BAD_QUERIES = [
    "limit=x", "limit=1e3", "limit=%201", "limit=1_0", "limit=99999999999999999999999", "resourceVersion=abc",
    "resourceVersion=-1", "resourceVersion=1e5", "resourceVersion=0x10", "resourceVersion=%20",
    "resourceVersion=99999999999999999999999999", "resourceVersion=" + "9" * 5000, "limit=" + "9" * 5000,
    "limit=5&resourceVersion=abc", "resourceVersionMatch=Bogus", "resourceVersionMatch=Exact",
    "resourceVersion=0&resourceVersionMatch=Exact", "resourceVersion=abc&resourceVersionMatch=Exact",
    "resourceVersion=abc&resourceVersionMatch=NotOlderThan", "sendInitialEvents=true", "timeoutSeconds=x",
    "labelSelector=%25%25%25", "labelSelector=a%20in%20(", "labelSelector=a==b==c", "labelSelector=!!a",
    "labelSelector=a%20in%20()", "labelSelector=a%3E5x", "labelSelector=a,,b", "labelSelector=%00",
    "labelSelector=a%3D" + "x" * 100, "fieldSelector=junk", "fieldSelector=a%3D%3D%3Db", "fieldSelector=spec.nothing%3Dx",
    "fieldSelector=metadata.name%20in%20(a)", "fieldSelector=%00", "includeObject=bogus", "dryRun=bogus",
    "continue=junk", "continue=eyJ2IjoxfQ", "continue=W10", "continue=bnVsbA", "continue=%FF%FF%FF%FF",
    "continue=eyJydiI6LTEsInN0YXJ0IjoieCJ9", "continue=eyJydiI6MWU5OSwic3RhcnQiOiJ4In0",
    "continue=eyJydiI6MSwic3RhcnQiOjV9", "continue=x&resourceVersion=5", "continue=x&resourceVersionMatch=Exact",
]
BAD_WATCH_QUERIES = [
    "watch=1&timeoutSeconds=x", "watch=1&resourceVersion=abc", "watch=1&resourceVersion=-5",
    "watch=1&timeoutSeconds=99999999999999999999999999999", "watch=1&labelSelector=a%20in%20(",
    "watch=1&fieldSelector=junk", "watch=1&sendInitialEvents=true", "watch=1&resourceVersionMatch=Exact",
    "watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
    "watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion=abc",
]


def test_odd_query_parameters(session: Session, ns: str) -> None:
    paths = create_all(session, ns)
    for kind, path in paths.items():
        collection = path.rsplit("/", 1)[0]
        for query in BAD_QUERIES + BAD_WATCH_QUERIES:
            for target in (collection, path):
                if target == path and query.startswith(("continue", "limit", "resourceVersionMatch",
                                                         "sendInitialEvents", "labelSelector", "fieldSelector")):
                    continue  # list-only options: a GET of one object ignores them, as upstream
                status, body = session.request("GET", f"{target}?{query}")
                assert_refused(f"{kind} GET {target}?{query}", status, body)
    collection = paths["configmap"].rsplit("/", 1)[0]
    status, body = session.request("GET", collection + "?resourceVersionMatch=Bogus&resourceVersion=1")
    assert (status, body["reason"]) == (422, "Invalid")
    assert body["message"] == ('ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Unsupported value: '
                               '"Bogus": supported values: "Exact", "NotOlderThan", ""')
    status, body = session.request("GET", collection + "?continue=junk")
    assert body["message"].startswith("continue key is not valid")
    status, body = session.request("GET", collection + "?labelSelector=a%20in%20(")
    assert (status, body["reason"]) == (400, "BadRequest") and "unable to parse requirement" in body["message"]
    # A negative limit means no limit, as upstream; a resourceVersion not reached yet is upstream's 504.
    status, body = session.request("GET", collection + "?limit=-1")
    assert status == 200 and "continue" not in body["metadata"]
    status, body = session.request("GET", collection + "?resourceVersion=99999999999")
    assert (status, body["reason"]) == (504, "Timeout")
    assert body["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"


def test_crd_with_invalid_schema_is_refused_with_causes(session: Session) -> None:
    bad = json.loads(json.dumps(CRD))
    bad["metadata"]["name"] = f"widgets.{GROUP}"
    bad["spec"]["names"] = {"plural": "widgets", "kind": "Widget"}
    props = bad["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    props["size"] = {"type": "integer", "minimum": "zero", "default": "big"}
    props["tags"] = {"type": "array"}  # items are required
    props["odd"] = {"type": "strange"}
    status, body = session.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", _json(bad))
    assert status in (400, 422), body
    if status == 422:
        fields = {c["field"] for c in body["details"]["causes"]}
        assert any("properties[tags]" in f for f in fields) and any("properties[odd]" in f for f in fields)
    assert session.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.{GROUP}")[0] == 404


def test_no_internal_error_was_logged(session: Session) -> None:
    with open(session.cluster.log_path, "rb") as log:
        log.seek(session.log_offset)
        text = log.read().decode(errors="replace")
    assert "internal error serving" not in text
