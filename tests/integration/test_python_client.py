"""The official `kubernetes` Python client against a real pocketkube server."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from cluster import Cluster, new_cluster, serving
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from etcd_fixture import running_etcd


def api_client(cluster: Cluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


@pytest.fixture
def core(cluster: Cluster) -> Iterator[client.CoreV1Api]:
    with api_client(cluster) as api:
        yield client.CoreV1Api(api)


@pytest.fixture
def namespace(core: client.CoreV1Api) -> str:
    name = f"py-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def test_configmap_crud(core: client.CoreV1Api, namespace: str) -> None:
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="conf", labels={"app": "x"}), data={"a": "1"})
    created = core.create_namespaced_config_map(namespace, body)
    assert created.metadata.uid and created.metadata.resource_version and created.metadata.creation_timestamp
    with pytest.raises(ApiException) as exists:
        core.create_namespaced_config_map(namespace, body)
    assert exists.value.status == 409 and '"reason":"AlreadyExists"' in exists.value.body.replace(" ", "")

    fetched = core.read_namespaced_config_map("conf", namespace)
    assert fetched.data == {"a": "1"}
    fetched.data["b"] = "2"
    replaced = core.replace_namespaced_config_map("conf", namespace, fetched)
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    stale = fetched
    stale.data["c"] = "3"
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_config_map("conf", namespace, stale)
    assert conflict.value.status == 409

    patched = core.patch_namespaced_config_map("conf", namespace, {"data": {"c": "3"}})
    assert patched.data == {"a": "1", "b": "2", "c": "3"}
    listed = core.list_namespaced_config_map(namespace, label_selector="app=x")
    assert [c.metadata.name for c in listed.items] == ["conf"]

    core.delete_namespaced_config_map("conf", namespace)
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("conf", namespace)
    assert missing.value.status == 404


def test_generate_name_and_missing_namespace(core: client.CoreV1Api, namespace: str) -> None:
    made = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="gen-")))
    assert made.metadata.name.startswith("gen-") and len(made.metadata.name) == len("gen-") + 5
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("no-such-namespace",
                                          client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x")))
    assert err.value.status == 404
    assert json.loads(err.value.body)["message"] == 'namespaces "no-such-namespace" not found'


def test_list_pagination(core: client.CoreV1Api, namespace: str) -> None:
    for i in range(25):
        core.create_namespaced_config_map(namespace, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=f"page-{i:02d}", labels={"paged": "yes"})))
    names: list[str] = []
    token = None
    pages = 0
    while True:
        page = core.list_namespaced_config_map(namespace, limit=10, _continue=token, label_selector="paged")
        pages += 1
        names += [c.metadata.name for c in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert pages == 3 and names == [f"page-{i:02d}" for i in range(25)]
    selected = core.list_namespaced_config_map(namespace, limit=10, label_selector="paged")
    assert selected.metadata._continue and selected.metadata.remaining_item_count is None  # a selector filters


def test_list_pages_count_the_items_left(core: client.CoreV1Api, namespace: str) -> None:
    """remainingItemCount: the items after the page at the list's revision, given only with a continue token."""
    for i in range(7):
        core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"r{i}")))
    first = core.list_namespaced_config_map(namespace, limit=3)
    rv = first.metadata.resource_version
    # the whole list at that revision (the root CA publisher may add its ConfigMap at any time)
    total = len(core.list_namespaced_config_map(namespace, resource_version=rv,
                                                resource_version_match="Exact").items)
    assert first.metadata._continue and first.metadata.remaining_item_count == total - 3
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="r9")))
    second = core.list_namespaced_config_map(namespace, limit=3, _continue=first.metadata._continue)
    assert second.metadata.resource_version == rv and second.metadata.remaining_item_count == total - 6
    last = core.list_namespaced_config_map(namespace, limit=total, _continue=second.metadata._continue)
    assert not last.metadata._continue and last.metadata.remaining_item_count is None
    everything = core.list_namespaced_config_map(namespace, limit=100)
    assert not everything.metadata._continue and everything.metadata.remaining_item_count is None


def test_pagination_is_a_consistent_snapshot(core: client.CoreV1Api, namespace: str) -> None:
    for i in range(6):
        core.create_namespaced_config_map(namespace, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=f"s{i}", labels={"snap": "yes"})))
    first = core.list_namespaced_config_map(namespace, limit=3, label_selector="snap")
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="s9", labels={"snap": "yes"})))
    second = core.list_namespaced_config_map(namespace, limit=10, _continue=first.metadata._continue,
                                             label_selector="snap")
    assert [c.metadata.name for c in second.items] == ["s3", "s4", "s5"]
    assert second.metadata.resource_version == first.metadata.resource_version


def test_watch_resumes_from_resource_version(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w1")))
    listed = core.list_namespaced_config_map(namespace)
    rv = listed.metadata.resource_version
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w2")))
    core.patch_namespaced_config_map("w1", namespace, {"data": {"x": "y"}})
    core.delete_namespaced_config_map("w2", namespace)
    seen = []
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, namespace, resource_version=rv, timeout_seconds=5):
        if event["object"].metadata.name == "kube-root-ca.crt":
            continue  # the root CA publisher writes into new namespaces meanwhile
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 3:
            w.stop()
    assert seen == [("ADDED", "w2"), ("MODIFIED", "w1"), ("DELETED", "w2")]


def test_watch_delivers_live_events(core: client.CoreV1Api, namespace: str) -> None:
    seen: list[tuple[str, str]] = []
    w = watch.Watch()

    def produce() -> None:
        time.sleep(0.5)
        core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="live")))

    thread = threading.Thread(target=produce)
    thread.start()
    for event in w.stream(core.list_namespaced_config_map, namespace, field_selector="metadata.name=live",
                          timeout_seconds=10):
        seen.append((event["type"], event["object"].metadata.name))
        w.stop()
    thread.join()
    assert seen == [("ADDED", "live")]


def test_deployment_defaults_and_status_isolation(cluster: Cluster, namespace: str) -> None:
    with api_client(cluster) as api:
        apps = client.AppsV1Api(api)
        body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                "spec": {"selector": {"matchLabels": {"a": "b"}},
                         "template": {"metadata": {"labels": {"a": "b"}},
                                      "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
                "status": {"replicas": 7}}
        created = apps.create_namespaced_deployment(namespace, body)
        assert created.spec.replicas == 1 and created.spec.revision_history_limit == 10
        assert created.spec.strategy.type == "RollingUpdate" and created.spec.progress_deadline_seconds == 600
        container = created.spec.template.spec.containers[0]
        assert container.image_pull_policy == "Always" and container.termination_message_path
        assert created.spec.template.spec.restart_policy == "Always"
        assert created.status is None or not created.status.replicas
        assert created.metadata.generation == 1
        # /status changes only status; the main endpoint ignores status. collisionCount is the
        # one status field the deployment controller (running meanwhile) carries over unchanged.
        status = apps.patch_namespaced_deployment_status("d", namespace, {"status": {"collisionCount": 5},
                                                                          "spec": {"replicas": 9}})
        assert status.status.collision_count == 5 and status.spec.replicas == 1
        main = apps.patch_namespaced_deployment("d", namespace, {"status": {"collisionCount": 1},
                                                                "metadata": {"labels": {"x": "y"}}})
        assert main.status.collision_count == 5 and main.metadata.labels == {"x": "y"}
        assert main.metadata.generation == 1  # no spec change
        scaled = apps.patch_namespaced_deployment_scale("d", namespace, {"spec": {"replicas": 4}})
        assert scaled.spec.replicas == 4 and scaled.status.selector == "a=b"
        assert apps.read_namespaced_deployment("d", namespace).metadata.generation == 2


def test_invalid_object_is_422_with_causes(core: client.CoreV1Api, namespace: str) -> None:
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(namespace, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="Bad_Name", labels={"k": "v" * 70})))
    assert err.value.status == 422
    assert "metadata.name" in err.value.body and "metadata.labels" in err.value.body


@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
def test_compaction_makes_old_watch_and_continue_410(backend: str) -> None:
    with contextlib.ExitStack() as stack:
        datastore = stack.enter_context(running_etcd()) if backend == "etcd" else ""
        cluster = stack.enter_context(contextlib.contextmanager(serving)(
            new_cluster(datastore, extra_args=["--compaction-interval", "1"])))
        with api_client(cluster) as api:
            core = client.CoreV1Api(api)
            core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="a")))
            core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="b")))
            page = core.list_namespaced_config_map("default", limit=1)
            old_rv = page.metadata.resource_version
            for i in range(5):
                core.patch_namespaced_config_map("a", "default", {"data": {"i": str(i)}})
            time.sleep(3.5)  # two compaction intervals: the first records, the second compacts
            with pytest.raises(ApiException) as expired:
                core.list_namespaced_config_map("default", limit=1, _continue=page.metadata._continue)
            assert expired.value.status == 410 and "Expired" in expired.value.body
            events = []
            w = watch.Watch()
            with pytest.raises(ApiException) as watch_err:
                for event in w.stream(core.list_namespaced_config_map, "default", resource_version=old_rv,
                                      timeout_seconds=5):
                    events.append(event)
            assert watch_err.value.status == 410 and events == []
            # an exact read at the compacted revision is gone too
            with pytest.raises(ApiException) as exact:
                core.list_namespaced_config_map("default", resource_version=old_rv,
                                                resource_version_match="Exact")
            assert exact.value.status == 410 and "Expired" in exact.value.body
