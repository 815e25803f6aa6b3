"""The HTTP surface as raw requests: authentication, discovery, errors as Status, tables, watch-list."""

from __future__ import annotations

import http.client
import json
import uuid

import pytest
from cluster import Cluster

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


@pytest.fixture
def ns(cluster: Cluster) -> str:
    name = f"h-{uuid.uuid4().hex[:8]}"
    assert cluster.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}}).status == 201
    return name


def status_of(resp) -> dict:
    body = resp.json()
    assert body["kind"] == "Status" and body["apiVersion"] == "v1"
    return body


def test_no_credentials_is_401_status(cluster: Cluster) -> None:
    resp = cluster.request("GET", "/api/v1/namespaces", auth=False)
    assert resp.status == 401
    assert status_of(resp)["reason"] == "Unauthorized"
    bad = cluster.request("GET", "/api/v1/namespaces", auth=False, headers={"Authorization": "Bearer nope"})
    assert bad.status == 401
    assert cluster.request("GET", "/readyz", auth=False).status == 200


def test_version_and_health(cluster: Cluster) -> None:
    version = cluster.request("GET", "/version").json()
    major, minor = int(version["major"]), int(version["minor"])
    assert (major, minor) >= (1, 30) and version["gitVersion"].endswith("+pocketkube")
    for path in ("/healthz", "/livez", "/readyz"):
        resp = cluster.request("GET", path)
        assert resp.status == 200 and resp.body == b"ok"
    verbose = cluster.request("GET", "/readyz?verbose&exclude=shutdown").body.decode().splitlines()
    assert verbose[:2] == ["[+]ping ok", "[+]etcd ok"] and "[+]informer-sync ok" in verbose
    assert "[+]shutdown excluded: ok" in verbose and verbose[-1] == "readyz check passed"
    assert cluster.request("GET", "/livez?verbose").body.decode().splitlines()[-1] == "livez check passed"
    single = cluster.request("GET", "/readyz/etcd", auth=False)
    assert single.status == 200 and single.body == b"ok"
    assert cluster.request("GET", "/livez/informer-sync").status == 404  # a check of /readyz only
    assert cluster.request("GET", "/healthz/no-such-check").status == 404


def test_legacy_discovery(cluster: Cluster) -> None:
    assert cluster.request("GET", "/api").json()["versions"] == ["v1"]
    core = cluster.request("GET", "/api/v1/").json()
    by_name = {r["name"]: r for r in core["resources"]}
    assert by_name["pods"]["shortNames"] == ["po"] and by_name["pods"]["categories"] == ["all"]
    assert by_name["pods/status"]["verbs"] == ["get", "patch", "update"]
    assert by_name["namespaces"]["namespaced"] is False
    groups = {g["name"]: g for g in cluster.request("GET", "/apis").json()["groups"]}
    assert groups["autoscaling"]["preferredVersion"]["version"] == "v2"
    assert {v["version"] for v in groups["autoscaling"]["versions"]} == {"v1", "v2"}
    apps = cluster.request("GET", "/apis/apps/v1").json()
    scale = next(r for r in apps["resources"] if r["name"] == "deployments/scale")
    assert scale["group"] == "autoscaling" and scale["kind"] == "Scale"
    assert cluster.request("GET", "/apis/apps").json()["kind"] == "APIGroup"
    assert cluster.request("GET", "/apis/nope/v1").status == 404


def test_aggregated_discovery(cluster: Cluster) -> None:
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    resp = cluster.request("GET", "/apis", headers={"Accept": accept})
    assert "as=APIGroupDiscoveryList" in resp.headers["Content-Type"]
    body = resp.json()
    assert body["kind"] == "APIGroupDiscoveryList"
    apps = next(i for i in body["items"] if i["metadata"]["name"] == "apps")
    deploy = next(r for r in apps["versions"][0]["resources"] if r["resource"] == "deployments")
    assert deploy["scope"] == "Namespaced" and deploy["responseKind"]["kind"] == "Deployment"
    legacy = cluster.request("GET", "/api", headers={"Accept": accept}).json()
    assert legacy["items"][0]["metadata"]["name"] == ""


def test_status_errors(cluster: Cluster, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    malformed = cluster.request("POST", base, b"{not json")
    assert malformed.status == 400 and status_of(malformed)["reason"] == "BadRequest"
    bad_yaml = cluster.request("POST", base, b"a: [unclosed", content_type="application/yaml")
    assert bad_yaml.status == 400
    missing = cluster.request("GET", f"{base}/nope")
    assert missing.status == 404 and status_of(missing)["details"]["name"] == "nope"
    assert status_of(missing)["message"] == 'configmaps "nope" not found'
    not_allowed = cluster.request("POST", f"{base}/nope", {})
    assert not_allowed.status == 405 and status_of(not_allowed)["reason"] == "MethodNotAllowed"
    huge = cluster.request("POST", base, {"metadata": {"name": "big"}, "data": {"x": "y" * (3 * 1024 * 1024)}})
    assert huge.status == 413
    garbled = cluster.request("POST", base, b"\x6b\x38\x73\x00\xff", content_type="application/vnd.kubernetes.protobuf")
    assert garbled.status == 400 and status_of(garbled)["reason"] == "BadRequest"
    unknown_type = cluster.request("POST", base, b"data", content_type="text/plain")
    assert unknown_type.status == 415 and status_of(unknown_type)["reason"] == "UnsupportedMediaType"
    invalid = cluster.request("POST", base, {"metadata": {"name": "UPPER", "labels": {"a/b/c": "x"}}})
    assert invalid.status == 422
    causes = status_of(invalid)["details"]["causes"]
    assert {c["field"] for c in causes} >= {"metadata.name", "metadata.labels"}
    assert cluster.request("POST", base, {"metadata": {"name": "ok"}}).status == 201
    dup = cluster.request("POST", base, {"metadata": {"name": "ok"}})
    assert dup.status == 409 and status_of(dup)["reason"] == "AlreadyExists"
    wrong_kind = cluster.request("POST", base, {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "x"}})
    assert wrong_kind.status == 400
    # Nothing partial was written by the refused requests.
    names = [i["metadata"]["name"] for i in cluster.request("GET", base).json()["items"]]
    assert [n for n in names if n != "kube-root-ca.crt"] == ["ok"]  # that one is the root CA publisher's


def test_field_validation_strict_warn_ignore(cluster: Cluster, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    body = {"metadata": {"name": "fv"}, "data": {"a": "b"}, "bogus": 1}
    strict = cluster.request("POST", base + "?fieldValidation=Strict", body)
    assert strict.status == 400 and 'unknown field "bogus"' in status_of(strict)["message"]
    warn = cluster.request("POST", base + "?fieldValidation=Warn", body)
    assert warn.status == 201 and 'unknown field \\"bogus\\"' in warn.headers["Warning"]
    assert "bogus" not in warn.json()
    ignore = cluster.request("POST", base + "?fieldValidation=Ignore", {**body, "metadata": {"name": "fv2"}})
    assert ignore.status == 201 and "Warning" not in ignore.headers


def test_dry_run_writes_nothing(cluster: Cluster, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    resp = cluster.request("POST", base + "?dryRun=All", {"metadata": {"name": "dry"}})
    assert resp.status == 201 and resp.json()["metadata"]["name"] == "dry"
    assert cluster.request("GET", base + "/dry").status == 404


def test_table_output(cluster: Cluster, ns: str) -> None:
    cluster.request("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "t"}, "data": {"a": "1"}})
    table = cluster.request("GET", f"/api/v1/namespaces/{ns}/configmaps", headers={"Accept": TABLE}).json()
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Data", "Age"]
    row = next(r for r in table["rows"] if r["cells"][0] == "t")
    assert row["cells"][:2] == ["t", 1]
    assert row["object"]["kind"] == "PartialObjectMetadata"


def test_field_selectors(cluster: Cluster, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    for name in ("one", "two"):
        cluster.request("POST", base, {"metadata": {"name": name}})
    items = cluster.request("GET", base + "?fieldSelector=metadata.name%3Dtwo").json()["items"]
    assert [i["metadata"]["name"] for i in items] == ["two"]
    items = cluster.request("GET", base + "?fieldSelector=metadata.name!%3Dtwo").json()["items"]
    assert [i["metadata"]["name"] for i in items if i["metadata"]["name"] != "kube-root-ca.crt"] == ["one"]
    bad = cluster.request("GET", base + "?fieldSelector=spec.nope%3Dx")
    assert bad.status == 400 and "field label not supported" in status_of(bad)["message"]


def test_watch_list_initial_events_end_with_bookmark(cluster: Cluster, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    for name in ("x1", "x2"):
        cluster.request("POST", base, {"metadata": {"name": name, "labels": {"watch": "list"}}})
    conn = http.client.HTTPSConnection("127.0.0.1", cluster.port, context=cluster.ssl_context(), timeout=10)
    conn.request("GET", base + "?watch=1&labelSelector=watch%3Dlist&sendInitialEvents=true&allowWatchBookmarks=true"
                 "&resourceVersionMatch=NotOlderThan&timeoutSeconds=2",
                 headers={"Authorization": f"Bearer {cluster.token}"})
    resp = conn.getresponse()
    assert resp.status == 200
    events = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
    conn.close()
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events[:2]] == [
        ("ADDED", "x1"), ("ADDED", "x2")]
    bookmark = events[2]
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_services_get_unique_cluster_ips_and_node_ports(cluster: Cluster, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/services"
    ips, ports = set(), set()
    for i in range(5):
        svc = cluster.request("POST", base, {"metadata": {"name": f"s{i}"}, "spec": {
            "type": "NodePort", "ports": [{"port": 80}]}}).json()
        ips.add(svc["spec"]["clusterIP"])
        ports.add(svc["spec"]["ports"][0]["nodePort"])
        assert svc["spec"]["ports"][0]["targetPort"] == 80
    assert len(ips) == 5 and len(ports) == 5
    assert all(30000 <= p <= 32767 for p in ports)
    taken = next(iter(ips))
    clash = cluster.request("POST", base, {"metadata": {"name": "clash"}, "spec": {
        "clusterIP": taken, "ports": [{"port": 80}]}})
    assert clash.status == 422
    # A deleted service's IP can be asked for again.
    victim = cluster.request("GET", base + "/s0").json()["spec"]["clusterIP"]
    assert cluster.request("DELETE", base + "/s0").status == 200
    again = cluster.request("POST", base, {"metadata": {"name": "again"}, "spec": {
        "clusterIP": victim, "ports": [{"port": 80}]}})
    assert again.status == 201


def test_watch_resumed_in_one_namespace_sees_only_that_namespace(cluster: Cluster, ns: str) -> None:
    other = f"o-{uuid.uuid4().hex[:8]}"
    assert cluster.request("POST", "/api/v1/namespaces", {"metadata": {"name": other}}).status == 201
    rv = cluster.request("GET", f"/api/v1/namespaces/{ns}/configmaps").json()["metadata"]["resourceVersion"]
    cluster.request("POST", f"/api/v1/namespaces/{other}/configmaps", {"metadata": {"name": "elsewhere"}})
    cluster.request("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "here"}})
    resp = cluster.request("GET", f"/api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersion={rv}"
                                  "&timeoutSeconds=1")
    names = [json.loads(line)["object"]["metadata"]["name"] for line in resp.body.splitlines() if line.strip()]
    assert [n for n in names if n != "kube-root-ca.crt"] == ["here"]  # the CA publisher may write meanwhile
