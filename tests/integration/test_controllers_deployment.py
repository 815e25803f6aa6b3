"""Deployment controller (with the ReplicaSet controller) against a real API server and the real kubectl.

The test plays the kubelet: it reports pods Running and Ready through /status when it wants them ready.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import harness
import pytest
from cluster import Cluster
from harness import bare_server, connect, create_namespace, found, running

from pocketkube.api.kinds import ResourceCatalog
from pocketkube.client.rest import APIError, Client
from pocketkube.controllers.deployment import DeploymentController
from pocketkube.controllers.replicaset import ReplicaSetController

Obj = dict[str, Any]
CATALOG = ResourceCatalog()
PODS = CATALOG.resource("", "v1", "pods")
RS = CATALOG.resource("apps", "v1", "replicasets")
DEPLOY = CATALOG.resource("apps", "v1", "deployments")
EVENTS = CATALOG.resource("", "v1", "events")
REVISION = "deployment.kubernetes.io/revision"
_ns_counter = itertools.count()
# The checks return a value or None: a value, even an empty list, is the answer.
eventually = partial(harness.eventually, until=found)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    yield from bare_server()


class Env:
    def __init__(self, cluster: Cluster, client: Client, namespace: str) -> None:
        self.cluster = cluster
        self.client = client
        self.ns = namespace

    async def kubectl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """kubectl in a thread, so the controllers in this event loop keep running meanwhile."""
        return await asyncio.to_thread(self.cluster.kubectl, "-n", self.ns, *args, check=check, timeout=timeout)

    async def deployment(self) -> Obj:
        return await self.client.get(DEPLOY, "web", self.ns)

    async def replica_sets(self) -> list[Obj]:
        items = (await self.client.list(RS, self.ns))["items"]
        return sorted(items, key=lambda rs: int(rs["metadata"].get("annotations", {}).get(REVISION, "0")))

    async def pods(self) -> list[Obj]:
        items = (await self.client.list(PODS, self.ns))["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    async def mark_ready(self, pod: Obj) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            await self.client.patch(PODS, pod["metadata"]["name"], {"status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": stamp}]}}, self.ns,
                patch_type="strategic", subresource="status")
        except APIError as err:
            if not err.not_found:  # the controller may have deleted it meanwhile
                raise

    async def mark_all_ready(self) -> int:
        count = 0
        for pod in await self.pods():
            if not _ready(pod):
                await self.mark_ready(pod)
                count += 1
        return count

    async def kubelet_until(self, done: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
        """Mark every new pod ready until done()."""
        async def check() -> bool:
            await self.mark_all_ready()
            return await done()
        await eventually(check, timeout)

    async def complete(self) -> bool:
        d = await self.deployment()
        spec, status = d["spec"], d.get("status") or {}
        return (status.get("observedGeneration", 0) >= d["metadata"]["generation"]
                and status.get("updatedReplicas", 0) == spec["replicas"] == status.get("replicas", 0)
                == status.get("availableReplicas", 0))

    async def events(self, reason: str) -> list[str]:
        items = (await self.client.list(EVENTS, self.ns))["items"]
        return [e["message"] for e in sorted(items, key=lambda e: e["metadata"]["creationTimestamp"])
                if e["reason"] == reason]


@pytest.fixture
async def env(cluster: Cluster) -> AsyncIterator[Env]:
    async with connect(cluster) as client:
        namespace = await create_namespace(client, f"deploy-{next(_ns_counter)}")
        async with running(client, controllers=(DeploymentController, ReplicaSetController),
                           identity="test-deployment"):
            yield Env(cluster, client, namespace)


def _ready(pod: Obj) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def deployment(namespace: str, replicas: int, image: str = "nginx:1", strategy: Obj | None = None,
               **spec: Any) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": namespace, "annotations": {"kubernetes.io/change-cause": image}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "strategy": strategy or {"type": "RollingUpdate"}, **spec,
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}}}


async def set_image(env: Env, image: str) -> None:
    await env.client.patch(DEPLOY, "web", {"metadata": {"annotations": {"kubernetes.io/change-cause": image}},
                                           "spec": {"template": {"spec": {"containers": [
                                               {"name": "c", "image": image}]}}}}, env.ns, patch_type="strategic")


def condition(d: Obj, ctype: str) -> Obj | None:
    return next((c for c in (d.get("status") or {}).get("conditions") or [] if c["type"] == ctype), None)


def image_of(obj: Obj) -> str:
    """The image of a pod, or of a Deployment's or ReplicaSet's template."""
    spec = obj["spec"]["template"]["spec"] if "template" in obj["spec"] else obj["spec"]
    return spec["containers"][0]["image"]


async def test_create_names_labels_annotations_and_rollout_status(env: Env) -> None:
    d = await env.client.create(DEPLOY, deployment(env.ns, 3))
    rs_list = await eventually(lambda: _n_replica_sets(env, 1))
    rs = rs_list[0]
    pod_hash = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{pod_hash}"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": pod_hash}
    assert rs["spec"]["template"]["metadata"]["labels"] == {"app": "web", "pod-template-hash": pod_hash}
    assert rs["metadata"]["ownerReferences"][0]["uid"] == d["metadata"]["uid"]
    annotations = rs["metadata"]["annotations"]
    # 25% surge of 3 rounds up to 1.
    assert annotations[REVISION] == "1" and annotations["deployment.kubernetes.io/desired-replicas"] == "3"
    assert annotations["deployment.kubernetes.io/max-replicas"] == "4"
    assert annotations["kubernetes.io/change-cause"] == "nginx:1"

    status_cmd = asyncio.create_task(env.kubectl("rollout", "status", "deploy/web", "--timeout=40s", check=False))
    await eventually(lambda: _n_pods(env, 3))
    await asyncio.sleep(0.5)  # rollout status is watching and waiting
    assert not status_cmd.done()
    await env.kubelet_until(lambda: _bool(status_cmd.done()))
    result = await status_cmd
    assert result.returncode == 0, result.stderr
    assert 'deployment "web" successfully rolled out' in result.stdout

    d = await env.deployment()
    assert d["metadata"]["annotations"][REVISION] == "1"
    status = d["status"]
    assert (status["replicas"], status["updatedReplicas"], status["readyReplicas"],
            status["availableReplicas"], status["observedGeneration"]) == (3, 3, 3, 3, 1)
    assert "unavailableReplicas" not in status and status["terminatingReplicas"] == 0
    available, progressing = condition(d, "Available"), condition(d, "Progressing")
    assert available and (available["status"], available["reason"]) == ("True", "MinimumReplicasAvailable")
    assert available["message"] == "Deployment has minimum availability."
    assert progressing and (progressing["status"], progressing["reason"]) == ("True", "NewReplicaSetAvailable")
    assert progressing["message"] == f'ReplicaSet "{rs["metadata"]["name"]}" has successfully progressed.'
    assert f"Scaled up replica set {rs['metadata']['name']} from 0 to 3" in await env.events("ScalingReplicaSet")
    out = (await env.kubectl("get", "deploy", "web")).stdout.split("\n")[1].split()
    assert out[:4] == ["web", "3/3", "3", "3"]


async def _n_replica_sets(env: Env, n: int) -> list[Obj] | None:
    rs_list = await env.replica_sets()
    return rs_list if len(rs_list) == n else None


async def _n_pods(env: Env, n: int) -> list[Obj] | None:
    pods = await env.pods()
    return pods if len(pods) == n else None


async def _bool(value: bool) -> bool:
    return value


async def test_rolling_update_obeys_max_surge_and_max_unavailable(env: Env) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
    await env.client.create(DEPLOY, deployment(env.ns, 4, strategy=strategy))
    await env.kubelet_until(env.complete)
    await set_image(env, "nginx:2")
    steps = 0
    while not await env.complete():
        # Let the controllers settle, then check the fenceposts before making one more pod ready.
        await asyncio.sleep(0.3)
        pods = await env.pods()
        ready = [p for p in pods if _ready(p)]
        assert len(pods) <= 4 + 1, f"surge exceeded: {len(pods)} pods"
        assert len(ready) >= 4 - 1, f"too many unavailable: {len(ready)} ready"
        rs_list = await env.replica_sets()
        assert sum(rs["spec"]["replicas"] for rs in rs_list) <= 5
        waiting = [p for p in pods if not _ready(p)]
        if waiting:
            await env.mark_ready(waiting[0])
        steps += 1
        assert steps < 40, "rollout did not finish"
    assert steps >= 3  # four pods replaced within 1 surge + 1 unavailable takes several rounds
    old, new = await env.replica_sets()
    assert (old["spec"]["replicas"], new["spec"]["replicas"]) == (0, 4)
    assert new["metadata"]["annotations"][REVISION] == "2"
    assert all(image_of(p) == "nginx:2" for p in await env.pods())
    scaled = await env.events("ScalingReplicaSet")
    assert any(m.startswith(f"Scaled down replica set {old['metadata']['name']} from 4 to ") for m in scaled)
    d = await env.deployment()
    assert d["metadata"]["annotations"][REVISION] == "2"
    assert condition(d, "Progressing")["reason"] == "NewReplicaSetAvailable"


async def test_rolling_update_with_percentages_never_drops_below_desired(env: Env) -> None:
    # maxUnavailable 25% of 3 rounds down to 0; maxSurge 50% of 3 rounds up to 2.
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "50%", "maxUnavailable": "25%"}}
    await env.client.create(DEPLOY, deployment(env.ns, 3, strategy=strategy))
    await env.kubelet_until(env.complete)
    rs = (await env.replica_sets())[0]
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] == "5"
    await set_image(env, "nginx:2")
    new = await eventually(lambda: _new_rs_with(env, 2))
    assert new["spec"]["replicas"] == 2
    await asyncio.sleep(0.3)
    old = (await env.replica_sets())[0]
    assert old["spec"]["replicas"] == 3  # nothing may go while the new pods are not ready
    await env.kubelet_until(env.complete)
    assert [rs["spec"]["replicas"] for rs in await env.replica_sets()] == [0, 3]


async def _new_rs_with(env: Env, revision_count: int) -> Obj | None:
    rs_list = await env.replica_sets()
    return rs_list[-1] if len(rs_list) == revision_count else None


async def test_recreate_removes_old_pods_before_creating_new_ones(env: Env) -> None:
    await env.client.create(DEPLOY, deployment(env.ns, 3, strategy={"type": "Recreate"}))
    await env.kubelet_until(env.complete)
    old_rs = (await env.replica_sets())[0]
    await set_image(env, "nginx:2")
    overlap = False

    async def rolled() -> bool:
        nonlocal overlap
        pods = await env.pods()
        images = {image_of(p) for p in pods}
        overlap = overlap or images == {"nginx:1", "nginx:2"}
        await env.mark_all_ready()
        return await env.complete()

    await eventually(rolled, timeout=20)
    assert not overlap
    rs_list = await env.replica_sets()
    assert [rs["metadata"]["name"] for rs in rs_list][0] == old_rs["metadata"]["name"]
    assert [rs["spec"]["replicas"] for rs in rs_list] == [0, 3]
    scaled = await env.events("ScalingReplicaSet")
    assert f"Scaled down replica set {old_rs['metadata']['name']} from 3 to 0" in scaled
    assert f"Scaled up replica set {rs_list[1]['metadata']['name']} from 0 to 3" in scaled


async def test_rollout_history_and_undo(env: Env) -> None:
    created = deployment(env.ns, 2)
    # kubectl copies the old ReplicaSet's template back as its Go types encode it: an unset divisor as "0"
    created["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}}]
    await env.client.create(DEPLOY, created)
    await env.kubelet_until(env.complete)
    for image in ("nginx:2", "nginx:3"):
        await set_image(env, image)
        await env.kubelet_until(env.complete)
    history = (await env.kubectl("rollout", "history", "deploy/web")).stdout
    rows = [line.split() for line in history.strip().split("\n")[2:]]
    assert rows == [["1", "nginx:1"], ["2", "nginx:2"], ["3", "nginx:3"]]
    detail = (await env.kubectl("rollout", "history", "deploy/web", "--revision=2")).stdout
    assert "nginx:2" in detail

    out = (await env.kubectl("rollout", "undo", "deploy/web")).stdout
    assert "rolled back" in out
    await env.kubelet_until(env.complete)
    d = await env.deployment()
    assert image_of(d) == "nginx:2" and d["metadata"]["annotations"][REVISION] == "4"
    by_image = {image_of(rs): rs for rs in await env.replica_sets()}
    assert len(by_image) == 3  # the old ReplicaSet came back; no new one was made
    reused = by_image["nginx:2"]["metadata"]["annotations"]
    assert reused[REVISION] == "4" and reused["deployment.kubernetes.io/revision-history"] == "2"

    await env.kubectl("rollout", "undo", "deploy/web", "--to-revision=1")
    await env.kubelet_until(env.complete)
    d = await env.deployment()
    assert image_of(d) == "nginx:1" and d["metadata"]["annotations"][REVISION] == "5"
    assert all(image_of(p) == "nginx:1" for p in await env.pods())
    rows = [line.split()[0] for line in
            (await env.kubectl("rollout", "history", "deploy/web")).stdout.strip().split("\n")[2:]]
    assert rows == ["3", "4", "5"]


async def test_revision_history_limit_deletes_old_replica_sets(env: Env) -> None:
    await env.client.create(DEPLOY, deployment(env.ns, 1, revisionHistoryLimit=1))
    await env.kubelet_until(env.complete)
    for image in ("nginx:2", "nginx:3", "nginx:4"):
        await set_image(env, image)
        await env.kubelet_until(env.complete)
    rs_list = await eventually(lambda: _n_replica_sets(env, 2))
    assert [image_of(rs) for rs in rs_list] == ["nginx:3", "nginx:4"]


async def test_pause_scale_and_resume(env: Env) -> None:
    await env.client.create(DEPLOY, deployment(env.ns, 2))
    await env.kubelet_until(env.complete)
    await env.kubectl("rollout", "pause", "deploy/web")
    d = await eventually(lambda: _progressing_reason(env, "DeploymentPaused"))
    cond = condition(d, "Progressing")
    assert (cond["status"], cond["message"]) == ("Unknown", "Deployment is paused")
    await set_image(env, "nginx:2")
    await env.kubectl("scale", "deploy/web", "--replicas=3")
    await env.kubelet_until(lambda: _paused_scaled(env))
    assert len(await env.replica_sets()) == 1  # paused: the template change is not rolled out

    await env.kubectl("rollout", "resume", "deploy/web")
    await eventually(lambda: _n_replica_sets(env, 2))
    await env.kubelet_until(env.complete)
    assert {image_of(p) for p in await env.pods()} == {"nginx:2"}
    assert len(await env.pods()) == 3


async def _paused_scaled(env: Env) -> bool:
    d = await env.deployment()
    status = d.get("status") or {}
    return (status.get("observedGeneration") == d["metadata"]["generation"] and status.get("replicas") == 3
            and status.get("availableReplicas") == 3 and not status.get("updatedReplicas"))


async def _progressing_reason(env: Env, reason: str) -> Obj | None:
    d = await env.deployment()
    cond = condition(d, "Progressing")
    return d if cond is not None and cond["reason"] == reason else None


async def test_rollout_restart_makes_a_new_replica_set(env: Env) -> None:
    await env.client.create(DEPLOY, deployment(env.ns, 2))
    await env.kubelet_until(env.complete)
    await env.kubectl("rollout", "restart", "deploy/web")
    rs_list = await eventually(lambda: _n_replica_sets(env, 2))
    assert "kubectl.kubernetes.io/restartedAt" in rs_list[1]["spec"]["template"]["metadata"]["annotations"]
    await env.kubelet_until(env.complete)
    assert [rs["spec"]["replicas"] for rs in await env.replica_sets()] == [0, 2]


async def test_progress_deadline_exceeded(env: Env) -> None:
    await env.client.create(DEPLOY, deployment(env.ns, 2, progressDeadlineSeconds=1))
    d = await eventually(lambda: _progressing_reason(env, "ProgressDeadlineExceeded"), timeout=10)
    rs = (await env.replica_sets())[0]
    cond = condition(d, "Progressing")
    assert cond["status"] == "False"
    assert cond["message"] == f'ReplicaSet "{rs["metadata"]["name"]}" has timed out progressing.'
    available = condition(d, "Available")
    assert (available["status"], available["reason"]) == ("False", "MinimumReplicasUnavailable")
    assert d["status"]["unavailableReplicas"] == 2
    result = await env.kubectl("rollout", "status", "deploy/web", "--timeout=10s", check=False)
    assert result.returncode != 0
    assert 'deployment "web" exceeded its progress deadline' in result.stderr


async def test_scaling_mid_rollout_is_proportional(env: Env) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2, "maxUnavailable": 0}}
    await env.client.create(DEPLOY, deployment(env.ns, 4, strategy=strategy))
    await env.kubelet_until(env.complete)
    await set_image(env, "nginx:2")
    await eventually(lambda: _sizes(env, [4, 2]))
    # 6 of at most 6 replicas; scaling to 8 allows 10: the 4 extra split 4:2 as (6*10/6 ...) rounds.
    await env.kubectl("scale", "deploy/web", "--replicas=8")
    sizes = await eventually(lambda: _sizes_total(env, 10))
    assert sizes[0] > sizes[1] > 2  # both grew, the larger one more
    await env.kubelet_until(env.complete, timeout=30)
    assert [rs["spec"]["replicas"] for rs in await env.replica_sets()] == [0, 8]


async def _sizes(env: Env, want: list[int]) -> list[int] | None:
    sizes = [rs["spec"]["replicas"] for rs in await env.replica_sets()]
    return sizes if sizes == want else None


async def _sizes_total(env: Env, total: int) -> list[int] | None:
    sizes = [rs["spec"]["replicas"] for rs in await env.replica_sets()]
    return sizes if sum(sizes) == total else None
