"""Decoding the protobuf bodies the real kubectl sends, checked against kubectl's own JSON of the same object.

A small recording server stands in for the API server: it serves discovery, stores each POST body and
answers in JSON (which kubectl accepts although it sent protobuf). Every command gets its own URL prefix
so the commands can run in parallel and their captures stay apart.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from pocketkube.api.kinds import ResourceCatalog
from pocketkube.apiserver import discovery
from pocketkube.apiserver.protobuf import (
    MAGIC,
    decode_k8s_protobuf,
    encode_k8s_protobuf,
    go_duration,
    message_name,
    parse_go_duration,
    schema_sources,
)

KUBECTL = str(Path(__file__).resolve().parents[2] / ".venv/bin/kubectl")
PROTOBUF = "application/vnd.kubernetes.protobuf"

# Typed `kubectl create` generators: each sends its object as protobuf.
CREATE_COMMANDS: dict[str, list[str]] = {
    "namespace": ["create", "namespace", "team-a"],
    "configmap": ["create", "configmap", "settings", "--from-literal=mode=fast", "--from-literal=empty="],
    "secret": ["create", "secret", "generic", "creds", "--from-literal=user=admin", "--type=Opaque"],
    "secret-binary": ["create", "secret", "generic", "blob", "--from-file=blob.bin={blob}"],
    "docker-registry": ["create", "secret", "docker-registry", "regcred", "--docker-server=r.example",
                        "--docker-username=u", "--docker-password=p"],
    "deployment": ["create", "deployment", "web", "--image=nginx:1.27", "--replicas=3", "--port=8080"],
    "job": ["create", "job", "once", "--image=busybox", "--", "echo", "hi"],
    "cronjob": ["create", "cronjob", "tick", "--image=busybox", "--schedule=*/5 * * * *", "--", "date"],
    "service": ["create", "service", "clusterip", "api", "--tcp=80:8080", "--tcp=443"],
    "service-nodeport": ["create", "service", "nodeport", "np", "--tcp=80:http", "--node-port=30080"],
    "service-external": ["create", "service", "externalname", "ext", "--external-name=db.example.com"],
    "serviceaccount": ["create", "serviceaccount", "robot"],
    "role": ["create", "role", "reader", "--verb=get,list", "--resource=pods,deployments.apps",
             "--resource-name=x"],
    "clusterrole": ["create", "clusterrole", "agg", "--aggregation-rule=team=a"],
    "rolebinding": ["create", "rolebinding", "read", "--role=reader", "--user=alice",
                    "--serviceaccount=default:robot", "--group=devs"],
    "clusterrolebinding": ["create", "clusterrolebinding", "admins", "--clusterrole=admin", "--user=bob"],
    "quota": ["create", "quota", "limits", "--hard=cpu=2,memory=1Gi,pods=10", "--scopes=NotTerminating"],
    "priorityclass": ["create", "priorityclass", "high", "--value=1000", "--description=important",
                      "--preemption-policy=Never"],
    "pdb": ["create", "poddisruptionbudget", "web", "--selector=app=web", "--min-available=50%"],
    "ingress": ["create", "ingress", "site", "--rule=foo.com/bar*=svc:8080,tls=secret"],
}


@dataclass
class Capture:
    method: str
    path: str
    content_type: str
    accept: str
    body: bytes


@dataclass
class Recorder:
    port: int = 0
    captures: dict[str, list[Capture]] = field(default_factory=dict)
    _catalog: ResourceCatalog = field(default_factory=ResourceCatalog)

    async def handle(self, request: web.Request) -> web.Response:
        prefix, _, rest = request.path.lstrip("/").partition("/")
        parts = rest.split("/")
        body = await request.read()
        if request.method == "GET":
            doc = None
            if rest == "api":
                doc = discovery.api_versions("127.0.0.1")
            elif rest == "apis":
                doc = discovery.api_group_list(self._catalog)
            elif parts[0] == "api" and len(parts) == 2:
                doc = discovery.api_resource_list(self._catalog, "", parts[1])
            elif parts[0] == "apis" and len(parts) == 3:
                doc = discovery.api_resource_list(self._catalog, parts[1], parts[2])
            if doc is None:
                return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                          "reason": "NotFound", "code": 404}, status=404)
            return web.json_response(doc)
        self.captures.setdefault(prefix, []).append(Capture(
            request.method, "/" + rest, request.headers.get("Content-Type", ""),
            request.headers.get("Accept", ""), body))
        if request.headers.get("Content-Type") != PROTOBUF:
            return web.json_response(orjson.loads(body), status=201)
        # Answer in JSON, as the server will: kubectl must accept it for its protobuf request.
        obj, _, kind = decode_k8s_protobuf(body)
        if kind == "TokenRequest":
            obj["status"] = {"token": "tok", "expirationTimestamp": "2030-01-01T00:00:00Z"}
        elif kind == "SelfSubjectAccessReview":
            obj["status"] = {"allowed": True}
        elif kind == "SelfSubjectReview":
            obj["status"] = {"userInfo": {"username": "alice", "groups": ["devs"]}}
        obj.setdefault("metadata", {}).setdefault("name", "generated")
        return web.json_response(obj, status=201)


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def start() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", rec.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        rec.port = runner.addresses[0][1]
        runner_box.append(runner)
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    assert started.wait(10)
    yield rec
    asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def _kubectl(rec: Recorder, prefix: str, args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp), "KUBECONFIG": str(tmp / "none")}
    cmd = [KUBECTL, f"--server=http://127.0.0.1:{rec.port}/{prefix}", f"--cache-dir={tmp / 'cache' / prefix}",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30, check=False)


@pytest.fixture(scope="module")
def kubectl_runs(recorder: Recorder, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """Each create command run for real and with --dry-run=client -o json (the oracle)."""
    tmp = tmp_path_factory.mktemp("kubectl")
    blob = tmp / "blob.bin"
    blob.write_bytes(bytes(range(256)) + b"\x00\xff")
    jobs: dict[str, tuple[str, list[str]]] = {}
    for name, args in CREATE_COMMANDS.items():
        args = [a.replace("{blob}", str(blob)) for a in args]
        # Flags must come before a "--" that starts the container's command.
        cut = args.index("--") if "--" in args else len(args)
        head, tail = args[:cut], args[cut:]
        validate = ["--validate=false"] if head[0] == "create" else []  # kubectl run has no such flag
        jobs[name] = (name, [*head, *validate, *tail])
        jobs[f"dry-{name}"] = (f"dry-{name}", [*head, "--dry-run=client", "-o", "json", *tail])
    jobs["can-i"] = ("can-i", ["auth", "can-i", "list", "secrets", "-n", "kube-system", "--subresource=x"])
    jobs["whoami"] = ("whoami", ["auth", "whoami", "-o", "json"])
    jobs["token"] = ("token", ["create", "token", "robot", "--audience=api", "--audience=vault",
                               "--duration=10m", "--bound-object-kind=Pod", "--bound-object-name=p1",
                               "--bound-object-uid=123"])
    with ThreadPoolExecutor(4) as pool:
        futures = {key: pool.submit(_kubectl, recorder, prefix, args, tmp) for key, (prefix, args) in jobs.items()}
        return {key: (future.result(), recorder.captures.get(jobs[key][0], [])) for key, future in futures.items()}


def _only_post(captures: list[Capture]) -> Capture:
    posts = [c for c in captures if c.method == "POST"]
    assert len(posts) == 1, captures
    return posts[0]


@pytest.mark.parametrize("name", sorted(CREATE_COMMANDS))
def test_kubectl_create_body_decodes_to_kubectl_json(kubectl_runs: dict[str, tuple], name: str) -> None:
    result, captures = kubectl_runs[name]
    assert result.returncode == 0, result.stderr
    capture = _only_post(captures)
    # kubectl sends protobuf but takes JSON answers: the echo below is what made the command succeed.
    assert capture.content_type == PROTOBUF
    assert capture.accept == f"{PROTOBUF},application/json"
    assert capture.body.startswith(MAGIC)
    assert " created" in result.stdout

    dry_result, dry_captures = kubectl_runs[f"dry-{name}"]
    assert dry_result.returncode == 0, dry_result.stderr
    assert not [c for c in dry_captures if c.method == "POST"]
    expected = json.loads(dry_result.stdout)

    obj, api_version, kind = decode_k8s_protobuf(capture.body)
    assert (api_version, kind) == (expected["apiVersion"], expected["kind"])
    assert obj == expected


def test_secret_bytes_round_to_base64(kubectl_runs: dict[str, tuple]) -> None:
    obj, _, _ = decode_k8s_protobuf(_only_post(kubectl_runs["secret-binary"][1]).body)
    assert base64.b64decode(obj["data"]["blob.bin"]) == bytes(range(256)) + b"\x00\xff"


def test_deployment_fields(kubectl_runs: dict[str, tuple]) -> None:
    obj, _, _ = decode_k8s_protobuf(_only_post(kubectl_runs["deployment"][1]).body)
    container = obj["spec"]["template"]["spec"]["containers"][0]
    assert obj["spec"]["replicas"] == 3
    assert container["ports"] == [{"containerPort": 8080}]
    assert container["resources"] == {}  # a non-pointer struct: Go's JSON keeps it
    assert obj["status"] == {}
    assert "creationTimestamp" not in obj["metadata"]  # omitzero


def test_auth_can_i_self_subject_access_review(kubectl_runs: dict[str, tuple]) -> None:
    result, captures = kubectl_runs["can-i"]
    assert result.stdout.strip() == "yes"  # read from our JSON answer
    capture = _only_post(captures)
    assert capture.path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    obj, _, _ = decode_k8s_protobuf(capture.body)
    assert obj == {
        "kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "metadata": {},
        "spec": {"resourceAttributes": {"namespace": "kube-system", "verb": "list", "resource": "secrets",
                                        "subresource": "x"}},
        "status": {"allowed": False},
    }


def test_auth_whoami_self_subject_review(kubectl_runs: dict[str, tuple]) -> None:
    result, captures = kubectl_runs["whoami"]
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"]["userInfo"]["username"] == "alice"
    obj, _, _ = decode_k8s_protobuf(_only_post(captures).body)
    assert obj == {"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1", "metadata": {},
                   "status": {"userInfo": {}}}


def test_create_token_request(kubectl_runs: dict[str, tuple]) -> None:
    result, captures = kubectl_runs["token"]
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tok"
    capture = _only_post(captures)
    assert capture.path == "/api/v1/namespaces/default/serviceaccounts/robot/token"
    obj, api_version, kind = decode_k8s_protobuf(capture.body)
    assert (api_version, kind) == ("authentication.k8s.io/v1", "TokenRequest")
    # TokenRequestSpec's and TokenRequestStatus's fields have no omitempty: Go's JSON writes them all.
    assert obj == {
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1", "metadata": {},
        "spec": {"audiences": ["api", "vault"], "expirationSeconds": 600,
                 "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p1", "uid": "123"}},
        "status": {"token": "", "expirationTimestamp": None},
    }


# --- hand-built bodies for the value types kubectl's generators never send ---------------------------------

def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _bytes_field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = _bytes_field(1, api_version.encode()) + _bytes_field(2, kind.encode())
    return MAGIC + _bytes_field(1, type_meta) + _bytes_field(2, raw)


def test_value_types_in_an_event() -> None:
    time = _int_field(1, 1_700_000_000)
    micro = _int_field(1, 1_700_000_000) + _int_field(2, 123_456_789)
    metadata = (_bytes_field(1, b"e1") + _bytes_field(9, time) + _int_field(10, 30)
                + _bytes_field(11, _bytes_field(1, b"k") + _bytes_field(2, b"v")))
    raw = (_bytes_field(1, metadata) + _bytes_field(2, micro) + _bytes_field(7, b"Started")
           + _int_field(15, 3))
    obj, _, _ = decode_k8s_protobuf(_envelope("events.k8s.io/v1", "Event", raw))
    assert obj == {
        "kind": "Event", "apiVersion": "events.k8s.io/v1",
        "metadata": {"name": "e1", "deletionTimestamp": "2023-11-14T22:13:20Z", "deletionGracePeriodSeconds": 30,
                     "labels": {"k": "v"}},
        "eventTime": "2023-11-14T22:13:20.123456Z",
        "reason": "Started",
        "regarding": {},  # a non-pointer struct with omitempty is still written by Go
        "deprecatedSource": {},
        "deprecatedFirstTimestamp": None,
        "deprecatedLastTimestamp": None,
        "deprecatedCount": 3,
    }


def test_int_or_string_quantity_negative_and_packed() -> None:
    port = _bytes_field(1, b"http") + _int_field(3, 80) + _bytes_field(4, _int_field(1, 1) + _bytes_field(3, b"web"))
    port2 = _int_field(3, 81) + _bytes_field(4, _int_field(2, 9090))
    spec = _bytes_field(1, port) + _bytes_field(1, port2)
    obj, _, _ = decode_k8s_protobuf(_envelope("v1", "Service", _bytes_field(2, spec)))
    assert obj["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "web"},
                                    {"port": 81, "targetPort": 9090}]
    assert obj["status"] == {"loadBalancer": {}}

    quantity = _bytes_field(1, b"cpu") + _bytes_field(2, _bytes_field(1, b"500m"))
    hard = _bytes_field(1, quantity)  # one map entry of spec.hard
    obj, _, _ = decode_k8s_protobuf(_envelope("v1", "ResourceQuota", _bytes_field(2, hard)))
    assert obj["spec"] == {"hard": {"cpu": "500m"}}

    # int32 -1 is a ten-byte varint; PriorityClass.value has no omitempty.
    obj, _, _ = decode_k8s_protobuf(_envelope("scheduling.k8s.io/v1", "PriorityClass", _int_field(2, -1)))
    assert obj == {"kind": "PriorityClass", "apiVersion": "scheduling.k8s.io/v1", "metadata": {}, "value": -1}

    # A repeated int64 sent packed and unpacked (HPA behavior has none, so use a Job's podFailurePolicy).
    values = _varint(1) + _varint(300)
    requirement = _bytes_field(2, b"In") + _bytes_field(3, values) + _int_field(3, 7)
    rule = _bytes_field(1, b"FailJob") + _bytes_field(2, requirement)
    spec = _bytes_field(11, _bytes_field(1, rule))
    obj, _, _ = decode_k8s_protobuf(_envelope("batch/v1", "Job", _bytes_field(2, spec)))
    assert obj["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"] == {"operator": "In", "values": [1, 300, 7]}


def test_delete_options_and_raw_extension() -> None:
    raw = _int_field(1, 0) + _bytes_field(4, b"Foreground") + _bytes_field(5, b"All")
    obj, api_version, kind = decode_k8s_protobuf(_envelope("apps/v1", "DeleteOptions", raw))
    assert (api_version, kind) == ("apps/v1", "DeleteOptions")
    assert obj == {"kind": "DeleteOptions", "apiVersion": "apps/v1", "gracePeriodSeconds": 0,
                   "propagationPolicy": "Foreground", "dryRun": ["All"]}

    data = _bytes_field(1, b'{"spec":{"x":1}}')
    obj, _, _ = decode_k8s_protobuf(_envelope("apps/v1", "ControllerRevision",
                                              _bytes_field(2, data) + _int_field(3, 4)))
    assert obj["data"] == {"spec": {"x": 1}} and obj["revision"] == 4


def test_message_names() -> None:
    assert message_name("v1", "Pod") == "k8s.io.api.core.v1.Pod"
    assert message_name("rbac.authorization.k8s.io/v1", "Role") == "k8s.io.api.rbac.v1.Role"
    assert message_name("policy/v1", "Eviction") == "k8s.io.api.policy.v1.Eviction"
    assert message_name("v1", "Status") == "k8s.io.apimachinery.pkg.apis.meta.v1.Status"
    assert message_name("example.com/v1", "Widget") is None
    assert set(schema_sources()) == {"k8s.io/api", "k8s.io/apimachinery"}


# k8s.io/api kinds; apiextensions and apiregistration (kube-aggregator) types live in other modules the field
# table does not cover yet.
_K8S_API_KINDS = [i for i in ResourceCatalog().all()
                  if i.group not in ("apiextensions.k8s.io", "apiregistration.k8s.io")]


@pytest.mark.parametrize("info", _K8S_API_KINDS, ids=lambda i: f"{i.group_version}/{i.kind}")
def test_every_served_kind_has_a_message(info) -> None:
    name = message_name(info.group_version, info.kind)
    assert name is not None
    obj, _, _ = decode_k8s_protobuf(_envelope(info.group_version, info.kind, b""))
    assert obj["kind"] == info.kind and obj["apiVersion"] == info.group_version


@pytest.mark.parametrize(("nanos", "text"), [
    (0, "0s"), (1, "1ns"), (1_500, "1.5µs"), (2_000_000, "2ms"), (1_500_000_000, "1.5s"),
    (90 * 60 * 10**9, "1h30m0s"), (61 * 10**9, "1m1s"), (-5 * 10**9, "-5s"),
])
def test_go_duration(nanos: int, text: str) -> None:
    assert go_duration(nanos) == text


@pytest.mark.parametrize(("body", "message"), [
    (b"", "magic"),
    (b"{}", "magic"),
    (MAGIC + b"\x0a\x05\x0a\x02v1", "truncated"),
    (MAGIC + _bytes_field(1, _bytes_field(1, b"v1")), "no apiVersion or kind"),
    (_envelope("v1", "Widget", b""), "no protobuf message"),
    (_envelope("v1", "ConfigMap", b"\x0a\xff"), "truncated"),
    (_envelope("v1", "ConfigMap", _int_field(1, 5)), "wire type"),
    (_envelope("v1", "ConfigMap", b"\x0b"), "wire type"),
    (_envelope("v1", "ConfigMap", b"\x80" * 11), "varint"),
    (MAGIC + _bytes_field(1, _bytes_field(1, b"v1") + _bytes_field(2, b"ConfigMap")) + _bytes_field(3, b"gzip"),
     "content encoding"),
    (_envelope("apps/v1", "ControllerRevision", _bytes_field(2, _bytes_field(1, b"{nope"))), "not JSON"),
])
def test_malformed_bodies_raise_value_error(body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_k8s_protobuf(body)



# --- encoding ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CREATE_COMMANDS))
def test_encoding_reproduces_kubectl_bytes(kubectl_runs: dict[str, tuple], name: str) -> None:
    """Go's marshaller is deterministic: re-encoding the decoded object must give kubectl's exact body."""
    body = _only_post(kubectl_runs[name][1]).body
    assert encode_k8s_protobuf(decode_k8s_protobuf(body)[0]) == body


@pytest.mark.parametrize("key", ["can-i", "whoami", "token"])
def test_encoding_reproduces_auth_bodies(kubectl_runs: dict[str, tuple], key: str) -> None:
    body = _only_post(kubectl_runs[key][1]).body
    assert encode_k8s_protobuf(decode_k8s_protobuf(body)[0]) == body


def test_encoding_round_trips_stored_objects() -> None:
    pod = {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": "p", "namespace": "default", "uid": "u-1", "resourceVersion": "7",
                     "creationTimestamp": "2024-05-01T10:00:00Z", "labels": {"b": "2", "a": "1"},
                     "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                                        "time": "2024-05-01T10:00:00Z", "fieldsType": "FieldsV1",
                                        "fieldsV1": {"f:metadata": {"f:labels": {}}}}]},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"limits": {"cpu": "500m"}},
                                 "livenessProbe": {"httpGet": {"path": "/", "port": "http"},
                                                   "periodSeconds": 5}}],
                 "volumes": [{"name": "v", "emptyDir": {"sizeLimit": "1Gi"}}],
                 "terminationGracePeriodSeconds": -1, "restartPolicy": "Always"},
        "status": {"phase": "Running", "startTime": "2024-05-01T10:00:01Z",
                   "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": None,
                                   "lastTransitionTime": "2024-05-01T10:00:02Z"}]},
    }
    body = encode_k8s_protobuf(pod)
    assert decode_k8s_protobuf(body)[0] == pod
    assert encode_k8s_protobuf(decode_k8s_protobuf(body)[0]) == body

    event = {"kind": "Event", "apiVersion": "events.k8s.io/v1", "metadata": {"name": "e"},
             "eventTime": "2024-05-01T10:00:00.123456Z", "regarding": {}, "deprecatedSource": {},
             "deprecatedFirstTimestamp": None, "deprecatedLastTimestamp": None}
    assert decode_k8s_protobuf(encode_k8s_protobuf(event))[0] == event

    lease = {"kind": "Lease", "apiVersion": "coordination.k8s.io/v1", "metadata": {"name": "l"},
             "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15,
                      "renewTime": "2024-05-01T10:00:00.000001Z"}}
    assert decode_k8s_protobuf(encode_k8s_protobuf(lease))[0] == lease

    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": 'configmaps "x" not found', "reason": "NotFound",
              "details": {"name": "x", "kind": "configmaps"}, "code": 404}
    assert decode_k8s_protobuf(encode_k8s_protobuf(status))[0] == status

    listed = {"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {"resourceVersion": "9"},
              "items": [{"metadata": {"name": "a"}, "data": {"k": "v"}}, {"metadata": {"name": "b"}}]}
    assert decode_k8s_protobuf(encode_k8s_protobuf(listed))[0] == listed


@pytest.mark.parametrize(("obj", "message"), [
    ({"kind": "Widget", "apiVersion": "v1"}, "no protobuf message"),
    ({"kind": "ConfigMap", "apiVersion": "v1", "data": ["x"]}, "not an object"),
    ({"kind": "ConfigMap", "apiVersion": "v1", "immutable": "yes"}, "bool"),
    ({"kind": "Secret", "apiVersion": "v1", "data": {"k": "not base64!"}}, "bytes"),
    ({"kind": "PriorityClass", "apiVersion": "scheduling.k8s.io/v1", "value": "1"}, "int32"),
    ({"kind": "Pod", "apiVersion": "v1", "status": {"startTime": "yesterday"}}, "RFC 3339"),
    ({"kind": "Pod", "apiVersion": "v1", "metadata": {"finalizers": "x"}}, "not a list"),
])
def test_encoding_rejects_bad_values(obj: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_k8s_protobuf(obj)


@pytest.mark.parametrize(("text", "nanos"), [
    ("0", 0), ("1h30m", 90 * 60 * 10**9), ("1.5s", 1_500_000_000), ("300ms", 300_000_000), ("2µs", 2_000),
    ("-1m0.5s", -60_500_000_000), ("10ns", 10),
])
def test_parse_go_duration(text: str, nanos: int) -> None:
    assert parse_go_duration(text) == nanos
    assert parse_go_duration(go_duration(nanos)) == nanos


@pytest.mark.parametrize("text", ["", "5", "1x", "s", "1h 2m"])
def test_parse_go_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)
