"""pods/ephemeralcontainers through the real kubectl (`kubectl debug`) and raw requests: added containers are
defaulted and kept, the rest of the pod does not change, and upstream's refusals."""

from __future__ import annotations

import json

from cluster import Cluster


def _create_pod(cluster: Cluster, namespace: str, name: str = "app") -> dict:
    cluster.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": {"a": "b"}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}}))
    return _get(cluster, namespace, name)


def _get(cluster: Cluster, namespace: str, name: str) -> dict:
    return json.loads(cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout)


def _path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}/ephemeralcontainers"


def test_kubectl_debug_adds_an_ephemeral_container(cluster: Cluster, namespace: str) -> None:
    before = _create_pod(cluster, namespace)
    cluster.kubectl("debug", "app", "-n", namespace, "--image=busybox:1.36", "--container=debugger",
                    "--target=main", "--", "sleep", "5")
    pod = _get(cluster, namespace, "app")
    [added] = pod["spec"]["ephemeralContainers"]
    assert added["name"] == "debugger" and added["image"] == "busybox:1.36"
    assert added["targetContainerName"] == "main" and added["command"] == ["sleep", "5"]
    assert added["imagePullPolicy"] == "IfNotPresent" and added["terminationMessagePolicy"] == "File"
    assert pod["spec"]["containers"] == before["spec"]["containers"]
    assert pod["metadata"]["generation"] == before["metadata"]["generation"] + 1
    # The subresource answers with the whole pod, as upstream.
    got = cluster.request("GET", _path(namespace, "app")).json()
    assert got["kind"] == "Pod" and got["spec"]["ephemeralContainers"][0]["name"] == "debugger"


def test_only_ephemeral_containers_change_through_the_subresource(cluster: Cluster, namespace: str) -> None:
    pod = _create_pod(cluster, namespace)
    pod["metadata"]["labels"] = {"changed": "yes"}
    pod["spec"]["containers"][0]["image"] = "busybox:other"
    pod["spec"]["ephemeralContainers"] = [{"name": "dbg", "image": "busybox"}]
    resp = cluster.request("PUT", _path(namespace, "app"), pod)
    assert resp.status == 200, resp.body
    stored = _get(cluster, namespace, "app")
    assert stored["metadata"]["labels"] == {"a": "b"}
    assert stored["spec"]["containers"][0]["image"] == "busybox"
    assert [c["name"] for c in stored["spec"]["ephemeralContainers"]] == ["dbg"]


def _causes(resp) -> list[tuple[str, str]]:
    body = resp.json()
    return [(c["field"], c["message"]) for c in body["details"]["causes"]]


def test_refusals(cluster: Cluster, namespace: str) -> None:
    _create_pod(cluster, namespace)
    patch = {"spec": {"ephemeralContainers": [{"name": "dbg", "image": "busybox", "targetContainerName": "nope",
                                               "ports": [{"containerPort": 80}],
                                               "readinessProbe": {"exec": {"command": ["true"]}}}]}}
    resp = cluster.request("PATCH", _path(namespace, "app"), patch,
                           content_type="application/strategic-merge-patch+json")
    assert resp.status == 422, resp.body
    assert set(_causes(resp)) == {
        ("spec.ephemeralContainers[0].ports", "Forbidden: cannot be set for an Ephemeral Container"),
        ("spec.ephemeralContainers[0].readinessProbe", "Forbidden: cannot be set for an Ephemeral Container"),
        ("spec.ephemeralContainers[0].targetContainerName", 'Not found: "nope"'),
    }
    ok = {"spec": {"ephemeralContainers": [{"name": "dbg", "image": "busybox"}]}}
    assert cluster.request("PATCH", _path(namespace, "app"), ok,
                           content_type="application/strategic-merge-patch+json").status == 200
    clashing = {"spec": {"ephemeralContainers": [{"name": "main", "image": "busybox"}]}}
    resp = cluster.request("PATCH", _path(namespace, "app"), clashing,
                           content_type="application/strategic-merge-patch+json")
    # A strategic merge puts the patch's new items first (mergeSortedSlice), so the clash is item 0.
    assert resp.status == 422 and ("spec.ephemeralContainers[0].name", 'Duplicate value: "main"') in _causes(resp)
    changed = {"spec": {"ephemeralContainers": [{"name": "dbg", "image": "busybox:changed"}]}}
    resp = cluster.request("PATCH", _path(namespace, "app"), changed,
                           content_type="application/strategic-merge-patch+json")
    assert resp.status == 422
    assert _causes(resp) == [("spec.ephemeralContainers",
                              'Forbidden: existing ephemeral containers "dbg" may not be changed')]
    removed = {"spec": {"ephemeralContainers": []}}
    resp = cluster.request("PATCH", _path(namespace, "app"), removed, content_type="application/merge-patch+json")
    assert resp.status == 422
    assert _causes(resp) == [("spec.ephemeralContainers",
                              'Forbidden: existing ephemeral containers "dbg" may not be removed')]
    # Never on create, nor through the pod itself.
    created = cluster.request("POST", f"/api/v1/namespaces/{namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "direct"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}],
                 "ephemeralContainers": [{"name": "dbg", "image": "busybox"}]}})
    assert created.status == 422
    assert ("spec.ephemeralContainers", "Forbidden: cannot be set on create") in _causes(created)


def test_discovery_lists_the_subresource(cluster: Cluster) -> None:
    resources = cluster.request("GET", "/api/v1").json()["resources"]
    entry = next(r for r in resources if r["name"] == "pods/ephemeralcontainers")
    assert entry["kind"] == "Pod" and sorted(entry["verbs"]) == ["get", "patch", "update"]
