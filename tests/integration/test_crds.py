"""CustomResourceDefinitions end to end: kubectl and raw HTTP against a real server, on both backends."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator

import pytest
import yaml
from cluster import Cluster, new_cluster

GROUP = "stable.example.com"
CRD_NAME = f"crontabs.{GROUP}"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"

CRONTAB_CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names:
    plural: crontabs
    kind: CronTab
    shortNames: [ct]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: The desired schedule of the cron tab.
            required: [cronSpec]
            properties:
              cronSpec:
                type: string
                description: The cron schedule, in cron format.
                pattern: '^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$'
              image:
                type: string
                maxLength: 40
              replicas:
                type: integer
                minimum: 0
                maximum: 10
                default: 1
              color:
                type: string
                enum: [red, green, blue]
              extra:
                type: object
                x-kubernetes-preserve-unknown-fields: true
          status:
            type: object
            properties:
              replicas:
                type: integer
              selector:
                type: string
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    selectableFields:
    - jsonPath: .spec.color
    additionalPrinterColumns:
    - name: Spec
      type: string
      jsonPath: .spec.cronSpec
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    - name: Image
      type: string
      priority: 1
      jsonPath: .spec.image
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"""


def crontab(name: str, cron: str = "* * * * */5", **spec: object) -> dict:
    return {"apiVersion": f"{GROUP}/v1", "kind": "CronTab", "metadata": {"name": name},
            "spec": {"cronSpec": cron, **spec}}


@pytest.fixture(scope="module")
def crd(cluster: Cluster) -> Iterator[Cluster]:
    """The CronTab CRD, applied with kubectl and established."""
    cluster.kubectl("apply", "-f", "-", input=CRONTAB_CRD)
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=10s")
    yield cluster
    cluster.kubectl("delete", "crd", CRD_NAME, "--ignore-not-found", "--timeout=30s")


@pytest.fixture
def ns(cluster: Cluster) -> str:
    name = f"crd-{uuid.uuid4().hex[:8]}"
    assert cluster.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}}).status == 201
    return name


def crs(ns: str, name: str = "", version: str = "v1") -> str:
    return f"/apis/{GROUP}/{version}/namespaces/{ns}/crontabs" + (f"/{name}" if name else "")


def test_crd_is_established_with_status_and_defaults(crd: Cluster) -> None:
    obj = crd.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}").json()
    assert obj["spec"]["names"]["singular"] == "crontab" and obj["spec"]["names"]["listKind"] == "CronTabList"
    assert obj["spec"]["conversion"] == {"strategy": "None"}
    status = obj["status"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["NamesAccepted"]["status"] == "True" and conditions["NamesAccepted"]["reason"] == "NoConflicts"
    assert conditions["Established"]["status"] == "True"
    assert conditions["Established"]["reason"] == "InitialNamesAccepted"
    assert status["acceptedNames"]["kind"] == "CronTab" and status["acceptedNames"]["shortNames"] == ["ct"]
    assert status["storedVersions"] == ["v1"]
    out = crd.kubectl("get", "crd", CRD_NAME).stdout
    assert out.split()[:3] == ["NAME", "CREATED", "AT"] and CRD_NAME in out


def test_discovery_lists_the_custom_resource(crd: Cluster) -> None:
    group = crd.request("GET", f"/apis/{GROUP}").json()
    assert group["preferredVersion"]["version"] == "v1"
    assert [v["version"] for v in group["versions"]] == ["v1", "v1beta1"]
    resources = {r["name"]: r for r in crd.request("GET", f"/apis/{GROUP}/v1").json()["resources"]}
    assert resources["crontabs"]["shortNames"] == ["ct"] and resources["crontabs"]["namespaced"] is True
    assert resources["crontabs"]["singularName"] == "crontab" and resources["crontabs"]["categories"] == ["all"]
    assert resources["crontabs/scale"]["kind"] == "Scale" and "crontabs/status" in resources
    aggregated = crd.request("GET", "/apis", headers={
        "Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"}).json()
    entry = next(i for i in aggregated["items"] if i["metadata"]["name"] == GROUP)
    assert [v["version"] for v in entry["versions"]] == ["v1", "v1beta1"]
    api_resources = crd.kubectl("api-resources", f"--api-group={GROUP}").stdout
    assert "crontabs" in api_resources and " ct " in api_resources and "CronTab" in api_resources


def test_kubectl_lifecycle_printer_columns_and_patches(crd: Cluster, ns: str) -> None:
    manifest = yaml.safe_dump(crontab("nightly", "0 3 * * *", image="backup:1"))
    crd.kubectl("apply", "-n", ns, "-f", "-", input=manifest)
    lines = crd.kubectl("get", "crontabs", "-n", ns).stdout.splitlines()
    assert lines[0].split() == ["NAME", "SPEC", "REPLICAS", "AGE"]
    assert lines[1].split()[:6] == ["nightly", "0", "3", "*", "*", "*"] and lines[1].split()[6] == "1"
    wide = crd.kubectl("get", "ct", "-n", ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "SPEC", "REPLICAS", "IMAGE", "AGE"] and "backup:1" in wide[1]
    obj = json.loads(crd.kubectl("get", "ct", "nightly", "-n", ns, "-o", "json").stdout)
    assert obj["spec"]["replicas"] == 1  # schema default
    assert obj["metadata"]["generation"] == 1
    # kubectl apply of a changed manifest: a JSON merge patch (no strategic merge patch for custom resources)
    crd.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(crontab("nightly", "0 4 * * *",
                                                                             image="backup:2")))
    obj = json.loads(crd.kubectl("get", "ct", "nightly", "-n", ns, "-o", "json").stdout)
    assert obj["spec"]["cronSpec"] == "0 4 * * *" and obj["metadata"]["generation"] == 2
    smp = crd.kubectl("patch", "ct", "nightly", "-n", ns, "-p", '{"spec":{"image":"x"}}', check=False)
    assert smp.returncode != 0
    assert ("application/strategic-merge-patch+json is not supported by stable.example.com/v1, Kind=CronTab: the "
            "body of the request was in an unknown format - accepted media types include: "
            "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml") in smp.stderr
    crd.kubectl("patch", "ct", "nightly", "-n", ns, "--type=merge", "-p", '{"spec":{"color":"red"}}')
    crd.kubectl("patch", "ct", "nightly", "-n", ns, "--type=json",
                "-p", '[{"op":"replace","path":"/spec/image","value":"backup:3"}]')
    obj = json.loads(crd.kubectl("get", "ct", "nightly", "-n", ns, "-o", "json").stdout)
    assert obj["spec"]["color"] == "red" and obj["spec"]["image"] == "backup:3"
    assert "nightly" in crd.kubectl("get", "all", "-n", ns).stdout  # the "all" category
    crd.kubectl("delete", "ct", "nightly", "-n", ns)
    assert crd.request("GET", crs(ns, "nightly")).status == 404


def test_validation_is_422_with_upstream_messages(crd: Cluster, ns: str) -> None:
    bad = crontab("bad", "nope", replicas="three", color="pink", image="x" * 41)
    resp = crd.request("POST", crs(ns), bad)
    assert resp.status == 422
    status = resp.json()
    assert status["reason"] == "Invalid" and status["details"]["kind"] == "CronTab"
    messages = {c["field"]: c["message"] for c in status["details"]["causes"]}
    assert messages["spec.replicas"] == ('Invalid value: "string": spec.replicas in body must be of type integer: '
                                         '"string"')
    assert messages["spec.color"] == 'Unsupported value: "pink": supported values: "red", "green", "blue"'
    assert messages["spec.image"] == "Too long: may not be more than 40 bytes"
    assert messages["spec.cronSpec"].startswith('Invalid value: "nope": spec.cronSpec in body should match ')
    assert status["message"].startswith('CronTab.stable.example.com "bad" is invalid: [')
    missing = crd.request("POST", crs(ns), {"apiVersion": f"{GROUP}/v1", "kind": "CronTab",
                                            "metadata": {"name": "empty"}, "spec": {"replicas": 11}})
    causes = {c["field"]: c for c in missing.json()["details"]["causes"]}
    assert causes["spec.cronSpec"]["reason"] == "FieldValueRequired"
    assert causes["spec.replicas"]["message"] == ("Invalid value: 11: spec.replicas in body should be less than or "
                                                  "equal to 10")
    # custom resources may carry unprefixed finalizers
    ok = crontab("fin")
    ok["metadata"]["finalizers"] = ["cleanup"]
    assert crd.request("POST", crs(ns), ok).status == 201
    assert crd.request("PATCH", crs(ns, "fin"), {"metadata": {"finalizers": None}},
                       content_type="application/merge-patch+json").status == 200


def test_pruning_and_field_validation(crd: Cluster, ns: str) -> None:
    body = crontab("pruned", extra={"anything": {"goes": [1]}}, unknown="x")
    body["metadata"]["bogus"] = 1
    body["top"] = True
    strict = crd.request("POST", crs(ns) + "?fieldValidation=Strict", body)
    assert strict.status == 400
    assert strict.json()["message"] == ('CronTab in version "v1" cannot be handled as a CronTab: strict decoding '
                                        'error: unknown field "metadata.bogus", unknown field "spec.unknown", '
                                        'unknown field "top"')
    warned = crd.request("POST", crs(ns) + "?fieldValidation=Warn", body)
    assert warned.status == 201
    assert 'unknown field \\"spec.unknown\\"' in " ".join(warned.headers.get_all("Warning") or [])
    obj = warned.json()
    assert "unknown" not in obj["spec"] and "top" not in obj and "bogus" not in obj["metadata"]
    assert obj["spec"]["extra"] == {"anything": {"goes": [1]}}  # x-kubernetes-preserve-unknown-fields
    # v1beta1 preserves everything and serves the same stored object with only apiVersion changed
    beta = crd.request("GET", crs(ns, "pruned", "v1beta1")).json()
    assert beta["apiVersion"] == f"{GROUP}/v1beta1" and beta["spec"] == obj["spec"]
    # Written through v1beta1, stored as v1: the conversion to the storage version prunes with v1's schema,
    # and reading from storage defaults with it (spec.replicas), whichever version serves the read.
    loose = {"apiVersion": f"{GROUP}/v1beta1", "kind": "CronTab", "metadata": {"name": "loose"},
             "spec": {"whatever": True}}
    created = crd.request("POST", crs(ns, version="v1beta1"), loose)
    assert created.status == 201 and created.json()["spec"] == {"replicas": 1}
    assert crd.request("GET", crs(ns, "loose")).json()["spec"] == {"replicas": 1}
    assert crd.request("GET", crs(ns, "loose", "v1beta1")).json()["spec"] == {"replicas": 1}


def _multi_version_crd(group: str, shape_default: str | None) -> dict:
    """v1 is stored and declares color; v1beta1 declares legacy; both declare size and shape, whose default
    (when given) only the storage version has."""
    def version(name: str, storage: bool, extra: str) -> dict:
        shape: dict = {"type": "string"}
        if storage and shape_default is not None:
            shape["default"] = shape_default
        return {"name": name, "served": True, "storage": storage, "schema": {"openAPIV3Schema": {
            "type": "object", "properties": {"spec": {"type": "object", "properties": {
                "size": {"type": "integer"}, extra: {"type": "string"}, "shape": shape}}}}}}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"gizmos.{group}"},
            "spec": {"group": group, "scope": "Namespaced", "names": {"plural": "gizmos", "kind": "Gizmo"},
                     "versions": [version("v1", True, "color"), version("v1beta1", False, "legacy")]}}


def _eventually(check: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the server did not get there in time"
        time.sleep(0.1)


def test_versions_convert_with_pruning_and_reads_default_with_the_storage_schema(cluster: Cluster, ns: str) -> None:
    group = f"conv{uuid.uuid4().hex[:6]}.example.com"
    crd_path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gizmos.{group}"
    cluster.kubectl("apply", "-f", "-", input=json.dumps(_multi_version_crd(group, None)))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/gizmos.{group}", "--timeout=10s")

    def url(version: str, name: str = "") -> str:
        return f"/apis/{group}/{version}/namespaces/{ns}/gizmos" + (f"/{name}" if name else "")

    def spec(version: str, name: str) -> dict:
        return cluster.request("GET", url(version, name)).json()["spec"]

    try:
        # through v1beta1: color is not v1beta1's (dropped on decoding), legacy is not v1's (dropped on the
        # way to storage), so only size is left in either version
        old = {"apiVersion": f"{group}/v1beta1", "kind": "Gizmo", "metadata": {"name": "old"},
               "spec": {"size": 1, "legacy": "l", "color": "red"}}
        created = cluster.request("POST", url("v1beta1"), old)
        assert created.status == 201 and created.json()["spec"] == {"size": 1}
        assert spec("v1", "old") == {"size": 1} and spec("v1beta1", "old") == {"size": 1}
        # through v1: color is stored, and served through v1 only; v1beta1 reads are pruned with its schema
        new = {"apiVersion": f"{group}/v1", "kind": "Gizmo", "metadata": {"name": "new"},
               "spec": {"size": 2, "color": "blue"}}
        start = cluster.request("POST", url("v1"), new).json()["metadata"]["resourceVersion"]
        assert spec("v1", "new") == {"size": 2, "color": "blue"}
        assert spec("v1beta1", "new") == {"size": 2}
        beta_items = cluster.request("GET", url("v1beta1")).json()["items"]
        assert [i["spec"] for i in beta_items] == [{"size": 2}, {"size": 1}]
        assert [i["apiVersion"] for i in beta_items] == [f"{group}/v1beta1"] * 2
        assert cluster.request("PATCH", url("v1", "new"), {"spec": {"size": 3}},
                               content_type="application/merge-patch+json").status == 200
        watch = cluster.request("GET", url("v1beta1") + f"?watch=1&resourceVersion={start}&timeoutSeconds=1")
        events = [json.loads(line) for line in watch.body.splitlines() if line.strip()]
        assert [(e["type"], e["object"]["spec"]) for e in events] == [("MODIFIED", {"size": 3})]

        # a default added to the storage version's schema shows on existing objects when they are read, in
        # every served version that declares the field (it is not written back to storage)
        current = cluster.request("GET", crd_path).json()
        updated = _multi_version_crd(group, "round")
        current["spec"]["versions"] = updated["spec"]["versions"]
        assert cluster.request("PUT", crd_path, current).status == 200
        _eventually(lambda: spec("v1", "old").get("shape") == "round")
        assert spec("v1beta1", "old") == {"size": 1, "shape": "round"}
        listed = cluster.request("GET", url("v1")).json()["items"]
        assert [i["spec"] for i in listed] == [{"size": 3, "color": "blue", "shape": "round"},
                                               {"size": 1, "shape": "round"}]
        cached = cluster.request("GET", url("v1") + "?resourceVersion=0").json()["items"]
        assert [i["spec"].get("shape") for i in cached] == ["round", "round"]
        paged = cluster.request("GET", url("v1beta1") + "?limit=1").json()["items"]  # read from storage
        assert paged[0]["spec"] == {"size": 3, "shape": "round"}
        fresh = cluster.request("POST", url("v1beta1"), {**old, "metadata": {"name": "fresh"}})
        assert fresh.json()["spec"] == {"size": 1, "shape": "round"}  # the create's answer is read back too

        # and goes again when the default is removed: it was never stored
        current = cluster.request("GET", crd_path).json()
        current["spec"]["versions"] = _multi_version_crd(group, None)["spec"]["versions"]
        assert cluster.request("PUT", crd_path, current).status == 200
        _eventually(lambda: "shape" not in spec("v1", "old"))
        assert spec("v1beta1", "old") == {"size": 1}
        assert [i["spec"] for i in cluster.request("GET", url("v1")).json()["items"]] == [
            {"size": 1}, {"size": 3, "color": "blue"}, {"size": 1}]
    finally:
        cluster.kubectl("delete", "crd", f"gizmos.{group}", "--ignore-not-found", "--timeout=30s")


def _proto_field(number: int, data: bytes) -> bytes:
    size, length = bytearray(), len(data)
    while True:
        size.append((length & 0x7F) | (0x80 if length > 0x7F else 0))
        length >>= 7
        if not length:
            break
    return bytes([number << 3 | 2]) + bytes(size) + data


def test_protobuf_bodies_are_refused_as_undecodable(crd: Cluster, ns: str) -> None:
    """Custom resources list protobuf among their media types (for the meta objects they serve), so a protobuf
    body is no 415: the protobuf serializer cannot decode into an unstructured object, a 400."""
    type_meta = _proto_field(1, f"{GROUP}/v1".encode()) + _proto_field(2, b"CronTab")
    body = b"k8s\x00" + _proto_field(1, type_meta) + _proto_field(2, b"\x0a\x02\x0a\x00")
    for method, path in (("POST", crs(ns)), ("PUT", crs(ns, "x"))):
        resp = crd.request(method, path, body, content_type="application/vnd.kubernetes.protobuf")
        assert resp.status == 400, resp.body
        assert resp.json()["message"] == ('CronTab in version "v1" cannot be handled as a CronTab: Object \'Kind\' '
                                          "is missing in 'object has no kind field '")
    junk = crd.request("POST", crs(ns), b"\x01\x02", content_type="application/vnd.kubernetes.protobuf")
    assert junk.status == 400 and junk.json()["message"] == (
        "the object provided is unrecognized (must be of type CronTab): provided data does not appear to be a "
        "protobuf message, expected prefix [107 56 115 0] (0102)")
    patch = crd.request("PATCH", crs(ns, "x"), body, content_type="application/vnd.kubernetes.protobuf")
    assert patch.status == 415


def test_lists_watch_and_selectors(crd: Cluster, ns: str) -> None:
    start = crd.request("GET", crs(ns)).json()["metadata"]["resourceVersion"]
    for name, color in (("a", "red"), ("b", "blue")):
        body = crontab(name, color=color)
        body["metadata"]["labels"] = {"team": name}
        assert crd.request("POST", crs(ns), body).status == 201
    assert crd.request("PATCH", crs(ns, "a"), {"spec": {"image": "i"}},
                       content_type="application/merge-patch+json").status == 200
    assert crd.request("DELETE", crs(ns, "b")).status == 200

    def names(query: str) -> list[str]:
        return [i["metadata"]["name"] for i in crd.request("GET", crs(ns) + query).json()["items"]]

    assert names("") == ["a"]
    assert names("?labelSelector=team%3Da") == ["a"] and names("?labelSelector=team%3Db") == []
    assert names("?fieldSelector=metadata.name%3Da") == ["a"]
    assert names("?fieldSelector=spec.color%3Dred") == ["a"] and names("?fieldSelector=spec.color%3Dblue") == []
    unsupported = crd.request("GET", crs(ns) + "?fieldSelector=spec.image%3Di")
    assert unsupported.status == 400
    listed = crd.request("GET", crs(ns)).json()
    assert listed["kind"] == "CronTabList" and listed["apiVersion"] == f"{GROUP}/v1"
    watch = crd.request("GET", crs(ns) + f"?watch=1&resourceVersion={start}&timeoutSeconds=1")
    events = [json.loads(line) for line in watch.body.splitlines() if line.strip()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    assert events[0]["object"]["kind"] == "CronTab"
    table = crd.request("GET", crs(ns), headers={"Accept": TABLE}).json()
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Spec", "Replicas", "Image", "Age"]
    assert table["rows"][0]["cells"][:3] == ["a", "* * * * */5", 1]
    beta_table = crd.request("GET", crs(ns, version="v1beta1"), headers={"Accept": TABLE}).json()
    assert [c["name"] for c in beta_table["columnDefinitions"]] == ["Name", "Age"]  # upstream's default column


def test_status_subresource_and_scale(crd: Cluster, ns: str) -> None:
    body = crontab("sc", replicas=2)
    body["status"] = {"replicas": 9}
    created = crd.request("POST", crs(ns), body).json()
    assert "status" not in created  # status is not writable on create
    obj = crd.request("GET", crs(ns, "sc")).json()
    obj["status"] = {"replicas": 5}
    obj["spec"]["image"] = "changed"
    updated = crd.request("PUT", crs(ns, "sc"), obj).json()
    assert "status" not in updated and updated["spec"]["image"] == "changed"
    assert updated["metadata"]["generation"] == 2
    status_put = {**updated, "status": {"replicas": 2, "selector": "app=sc"}, "spec": {"cronSpec": "1 1 1 1 1"}}
    result = crd.request("PUT", crs(ns, "sc") + "/status", status_put).json()
    assert result["status"] == {"replicas": 2, "selector": "app=sc"}
    assert result["spec"]["cronSpec"] == "* * * * */5"  # /status changes nothing else
    assert result["metadata"]["generation"] == 2
    bad_status = crd.request("PATCH", crs(ns, "sc") + "/status", {"status": {"replicas": "x"}},
                             content_type="application/merge-patch+json")
    assert bad_status.status == 422
    scale = crd.request("GET", crs(ns, "sc") + "/scale").json()
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": 2} and scale["status"] == {"replicas": 2, "selector": "app=sc"}
    crd.kubectl("scale", "-n", ns, "crontab/sc", "--replicas=4")
    assert crd.request("GET", crs(ns, "sc")).json()["spec"]["replicas"] == 4
    negative = crd.request("PUT", crs(ns, "sc") + "/scale", {**scale, "spec": {"replicas": -1}})
    assert negative.status == 422
    too_many = crd.request("PATCH", crs(ns, "sc") + "/scale", {"spec": {"replicas": 11}},
                           content_type="application/merge-patch+json")
    assert too_many.status == 422  # the schema's maximum still applies


def _managed(cluster: Cluster, path: str) -> dict[tuple[str, str, str], dict]:
    """managedFields by (manager, operation, subresource): the entry's apiVersion and fieldsV1."""
    entries = cluster.request("GET", path).json()["metadata"].get("managedFields") or []
    return {(m["manager"], m["operation"], m.get("subresource", "")): {"apiVersion": m["apiVersion"],
                                                                        "fieldsV1": m["fieldsV1"]} for m in entries}


def test_scale_writes_are_recorded_as_the_scale_subresource_and_take_apply(crd: Cluster, ns: str) -> None:
    assert crd.request("POST", crs(ns) + "?fieldManager=maker", crontab("sc", replicas=2)).status == 201
    crd.kubectl("scale", "-n", ns, "crontab/sc", "--replicas=4")
    managed = _managed(crd, crs(ns, "sc"))
    assert managed[("kubectl", "Update", "scale")] == {"apiVersion": f"{GROUP}/v1",
                                                       "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    assert "f:replicas" not in managed[("maker", "Update", "")]["fieldsV1"]["f:spec"]  # taken from the creator
    # server-side apply of a Scale: its owner of spec.replicas conflicts, then force takes it
    scale_path = crs(ns, "sc") + "/scale"
    applied = b"apiVersion: autoscaling/v1\nkind: Scale\nmetadata: {name: sc}\nspec: {replicas: 6}\n"
    refused = crd.request("PATCH", scale_path + "?fieldManager=autoscaler", applied,
                          content_type="application/apply-patch+yaml")
    assert refused.status == 409
    # the Scale's entries are the parent's, in autoscaling/v1 (ScaleHandler.ToSubresource), as the message says
    assert refused.json()["message"] == ('Apply failed with 1 conflict: conflict with "kubectl" with subresource '
                                         '"scale" using autoscaling/v1: .spec.replicas')
    forced = crd.request("PATCH", scale_path + "?fieldManager=autoscaler&force=true", applied,
                         content_type="application/apply-patch+yaml")
    assert forced.status == 200 and forced.json()["spec"] == {"replicas": 6} and forced.json()["kind"] == "Scale"
    managed = _managed(crd, crs(ns, "sc"))
    assert managed[("autoscaler", "Apply", "scale")] == {"apiVersion": f"{GROUP}/v1",
                                                         "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    assert ("kubectl", "Update", "scale") not in managed
    assert crd.request("GET", crs(ns, "sc")).json()["spec"]["replicas"] == 6
    wrong = crd.request("PATCH", scale_path + "?fieldManager=autoscaler", applied.replace(b"Scale", b"Scales"),
                        content_type="application/apply-patch+yaml")
    assert wrong.status == 400 and wrong.json()["message"] == "invalid object type: autoscaling/v1, Kind=Scales"
    # a JSON patch that does not apply reads as on the main resource; no strategic merge patch for a CR
    for path in (crs(ns, "sc"), scale_path):
        bad = crd.request("PATCH", path, [{"op": "replace", "path": "/spec/missing/x", "value": 1}],
                          content_type="application/json-patch+json")
        assert (bad.status, bad.json()["message"]) == (
            422, "the server rejected our request due to an error in our request")
    smp = crd.request("PATCH", scale_path, {"spec": {"replicas": 1}},
                      content_type="application/strategic-merge-patch+json")
    assert smp.status == 415 and smp.json()["message"].startswith(
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")


def test_server_side_apply_to_status_owns_only_status(crd: Cluster, ns: str) -> None:
    assert crd.request("POST", crs(ns), crontab("st", replicas=1)).status == 201
    manifest = {**crontab("st", "1 2 3 4 5", replicas=3), "status": {"replicas": 3, "selector": "app=st"}}
    manifest["metadata"]["namespace"] = ns
    out = crd.kubectl("apply", "--server-side", "--subresource=status", "--field-manager=status-writer", "-f", "-",
                      input=json.dumps(manifest))
    assert "serverside-applied" in out.stdout
    obj = crd.request("GET", crs(ns, "st")).json()
    assert obj["status"] == {"replicas": 3, "selector": "app=st"}
    assert obj["spec"]["cronSpec"] == "* * * * */5" and obj["spec"]["replicas"] == 1  # spec changes ignored
    entry = _managed(crd, crs(ns, "st"))[("status-writer", "Apply", "status")]
    assert entry == {"apiVersion": f"{GROUP}/v1", "fieldsV1": {"f:status": {"f:replicas": {}, "f:selector": {}}}}
    other = {**manifest, "status": {"replicas": 5}}
    clash = crd.kubectl("apply", "--server-side", "--subresource=status", "--field-manager=other", "-f", "-",
                        input=json.dumps(other), check=False)
    assert clash.returncode != 0
    assert 'conflict with "status-writer" with subresource "status": .status.replicas' in clash.stderr
    raw = crd.request("PATCH", crs(ns, "st") + "/status?fieldManager=other",
                      json.dumps({"apiVersion": f"{GROUP}/v1", "kind": "CronTab", "metadata": {"name": "st"},
                                  "status": {"replicas": 5}}).encode(),
                      content_type="application/apply-patch+yaml")
    assert raw.status == 409 and raw.json()["reason"] == "Conflict"
    assert raw.json()["details"]["causes"] == [{"reason": "FieldManagerConflict", "field": ".status.replicas",
                                                "message": 'conflict with "status-writer" with subresource "status"'}]
    assert crd.request("GET", crs(ns, "st")).json()["status"]["replicas"] == 3


def test_explain_and_openapi(crd: Cluster) -> None:
    explained = crd.kubectl("explain", "crontab.spec").stdout
    assert "KIND:       CronTab" in explained and "The desired schedule of the cron tab." in explained
    assert "cronSpec\t<string> -required-" in explained and "The cron schedule, in cron format." in explained
    index = crd.request("GET", "/openapi/v3").json()["paths"]
    doc = crd.request("GET", index[f"apis/{GROUP}/v1"]["serverRelativeURL"]).json()
    schema = doc["components"]["schemas"]["com.example.stable.v1.CronTab"]
    assert schema["x-kubernetes-group-version-kind"] == [{"group": GROUP, "kind": "CronTab", "version": "v1"}]
    assert schema["properties"]["spec"]["properties"]["replicas"]["default"] == 1
    patch = doc["paths"][f"/apis/{GROUP}/v1/namespaces/{{namespace}}/crontabs/{{name}}"]["patch"]
    assert "application/strategic-merge-patch+json" not in patch["requestBody"]["content"]
    v2 = crd.request("GET", "/openapi/v2").json()
    assert "com.example.stable.v1.CronTabList" in v2["definitions"]


def test_invalid_crds_are_refused(cluster: Cluster) -> None:
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"

    def refused(mutate: object) -> dict[str, str]:
        body = yaml.safe_load(CRONTAB_CRD.replace("crontabs", "gadgets").replace("CronTab", "Gadget")
                              .replace("shortNames: [ct]", "shortNames: [gd]"))
        mutate(body)  # type: ignore[operator]
        resp = cluster.request("POST", path, body)
        assert resp.status == 422, resp.body
        return {c["field"]: c["message"] for c in resp.json()["details"]["causes"]}

    causes = refused(lambda b: b["metadata"].update(name="wrong.stable.example.com"))
    assert causes["metadata.name"] == 'Invalid value: "wrong.stable.example.com": must be spec.names.plural+"."+spec.group'
    causes = refused(lambda b: b["spec"]["versions"][1].update(storage=True))
    assert causes["spec.versions"].endswith("must have exactly one version marked as storage version")
    causes = refused(lambda b: b["spec"]["versions"][0].pop("schema"))
    assert causes["spec.versions[0].schema.openAPIV3Schema"] == "Required value: schemas are required"
    causes = refused(lambda b: b["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
                     ["properties"]["image"].pop("type"))
    assert causes["spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[image].type"] == \
        "Required value: must not be empty for specified object fields"
    causes = refused(lambda b: b["spec"].pop("scope"))
    assert causes["spec.scope"] == "Required value"
    causes = refused(lambda b: b["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
                     ["properties"]["replicas"].update(default="one"))
    key = "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[replicas].default"
    assert causes[key].startswith('Invalid value: "string": ') and causes[key].endswith(
        'must be of type integer: "string"')


def test_deleting_the_crd_removes_its_objects_and_stops_serving(cluster: Cluster, ns: str) -> None:
    group = f"g{uuid.uuid4().hex[:6]}.example.com"
    manifest = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "widgets", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/widgets.{group}", "--timeout=10s")
    base = f"/apis/{group}/v1/namespaces/{ns}/widgets"
    for i in range(3):
        body = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": f"w{i}"}, "spec": {"n": i}}
        assert cluster.request("POST", base, body).status == 201
    assert len(cluster.request("GET", base).json()["items"]) == 3
    started = time.monotonic()
    cluster.kubectl("delete", "crd", f"widgets.{group}", "--timeout=20s")
    assert time.monotonic() - started < 10
    assert cluster.request("GET", base).status == 404
    assert cluster.request("GET", f"/apis/{group}").status == 404
    assert cluster.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.{group}"
                           ).status == 404
    # the objects are gone from storage too: a new CRD of the same name starts empty
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/widgets.{group}", "--timeout=10s")
    assert cluster.request("GET", base).json()["items"] == []
    cluster.kubectl("delete", "crd", f"widgets.{group}", "--timeout=20s")


def test_deleting_a_namespace_deletes_its_custom_objects(crd: Cluster) -> None:
    name = f"crd-{uuid.uuid4().hex[:8]}"
    assert crd.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}}).status == 201
    assert crd.request("POST", crs(name), crontab("doomed")).status == 201
    crd.kubectl("delete", "namespace", name, "--timeout=30s")
    assert crd.request("GET", f"/apis/{GROUP}/v1/crontabs?fieldSelector=metadata.namespace%3D{name}"
                       ).json()["items"] == []


def test_established_crds_are_served_right_after_restart() -> None:
    server = new_cluster()
    server.start()
    try:
        server.kubectl("apply", "-f", "-", input=CRONTAB_CRD)
        server.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=10s")
        assert server.request("POST", crs("default"), crontab("kept")).status == 201
        server.stop()
        server.start()  # returns once /readyz answers 200
        kept = server.request("GET", crs("default", "kept"))
        assert kept.status == 200 and kept.json()["spec"]["replicas"] == 1
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)
